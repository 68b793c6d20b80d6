//! EL3 system registers: what the lower ELs may use, and the way down to EL2.

use core::arch::asm;

use tz_sim::layout::SECURE_GPIO;

macro_rules! read {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an ID or EL3 register has no side effects.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

macro_rules! write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: EL3 controls for the lower ELs, written before they run on this CPU.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub fn mpidr() -> u64 {
    read!("mpidr_el1") & 0xff_00ff_ffff
}
pub fn esr_el3() -> u64 {
    read!("esr_el3")
}
pub fn elr_el3() -> u64 {
    read!("elr_el3")
}
pub fn far_el3() -> u64 {
    read!("far_el3")
}
pub fn spsr_el3() -> u64 {
    read!("spsr_el3")
}

fn field(reg: u64, shift: u32) -> u64 {
    (reg >> shift) & 0xf
}

/// SCR_EL3 bits.
mod scr {
    pub const NS: u64 = 1 << 0;
    pub const HCE: u64 = 1 << 8;
    pub const RW: u64 = 1 << 10;
    pub const APK: u64 = 1 << 16;
    pub const API: u64 = 1 << 17;
    pub const ENSCXT: u64 = 1 << 25;
    pub const ATA: u64 = 1 << 26;
    pub const FGTEN: u64 = 1 << 27;
    pub const ECVEN: u64 = 1 << 28;
    pub const HXEN: u64 = 1 << 38;
    pub const GCSEN: u64 = 1 << 39;
    pub const ENTP2: u64 = 1 << 41;
    pub const TCR2EN: u64 = 1 << 43;
    pub const SCTLR2EN: u64 = 1 << 44;
    pub const PIEN: u64 = 1 << 45;
}

/// The lower ELs get every feature the CPU has and the non-secure side can use without EL3's
/// help (as TF-A enables them from the ID registers): without its SCR_EL3/CPTR_EL3 enable, a
/// register of such a feature traps to EL3, which would stop the CPU here. Then EL2 is reset
/// to a known state for the hyp image: MMU off, no traps from HCR_EL2, no virtual offset.
pub fn prepare_lower_els() {
    let pfr0 = read!("id_aa64pfr0_el1");
    let pfr1 = read!("id_aa64pfr1_el1");
    let mmfr0 = read!("id_aa64mmfr0_el1");
    let mmfr1 = read!("id_aa64mmfr1_el1");
    let mmfr3 = read!("S3_0_C0_C7_3");
    let isar1 = read!("id_aa64isar1_el1");
    let isar2 = read!("S3_0_C0_C6_2");
    let sve = field(pfr0, 32) != 0;
    let sme = field(pfr1, 24) != 0;
    let pauth = field(isar1, 4) != 0
        || field(isar1, 8) != 0
        || field(isar1, 24) != 0
        || field(isar1, 28) != 0
        || field(isar2, 12) != 0
        || field(isar2, 8) != 0;
    let mut scr = scr::NS | scr::HCE | scr::RW;
    let mut enable = |present: bool, bit: u64| {
        if present {
            scr |= bit;
        }
    };
    enable(pauth, scr::APK | scr::API);
    enable(field(pfr0, 56) >= 2, scr::ENSCXT);
    enable(field(pfr1, 8) >= 2, scr::ATA);
    enable(field(mmfr0, 56) != 0, scr::FGTEN);
    enable(field(mmfr0, 60) >= 2, scr::ECVEN);
    enable(field(mmfr1, 40) != 0, scr::HXEN);
    enable(field(pfr1, 44) != 0, scr::GCSEN);
    enable(sme, scr::ENTP2);
    enable(field(mmfr3, 0) != 0, scr::TCR2EN);
    enable(field(mmfr3, 4) != 0, scr::SCTLR2EN);
    enable(field(mmfr3, 8) != 0 || field(mmfr3, 16) != 0, scr::PIEN);
    write!("scr_el3", scr);
    // CPTR_EL3: FP/SIMD untrapped (TFP = 0); SVE (EZ) and SME (ESM) usable where present.
    write!("cptr_el3", (u64::from(sve) << 8) | (u64::from(sme) << 12));
    // SAFETY: ISB only synchronises the CPTR_EL3 write before the vector-length registers.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
    if sve {
        write!("S3_6_C1_C2_0", 0x1ff); // ZCR_EL3: the largest vector length
    }
    if sme {
        write!("S3_6_C1_C2_6", 0x1ff | (1 << 31) | (1 << 30)); // SMCR_EL3: FA64, EZT0, LEN max
    }
    write!("mdcr_el3", 0);
    write!("sctlr_el2", 0x30c5_0830); // RES1 bits only: MMU and caches off, little endian
    write!("hcr_el2", 0);
    write!("cntvoff_el2", 0);
    // SAFETY: ISB only synchronises the writes above.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Enters the hyp image at `pc`, EL2h with DAIF masked, x0 = `x0`, x1 = `x1`, x2..x3 zero.
///
/// # Safety
/// `pc` must hold the hyp image; [`prepare_lower_els`] must have run on this CPU.
pub unsafe fn eret_to_el2(pc: u64, x0: u64, x1: u64) -> ! {
    const SPSR_EL2H_DAIF: u64 = 0x3c9;
    // SAFETY: the caller vouches for the image; ERET leaves EL3 for good (the next SMC comes
    // back through the vectors on this CPU's stack).
    unsafe {
        asm!(
            "msr elr_el3, {pc}",
            "msr spsr_el3, {spsr}",
            "mov x2, xzr",
            "mov x3, xzr",
            "isb",
            "eret",
            pc = in(reg) pc,
            spsr = in(reg) SPSR_EL2H_DAIF,
            in("x0") x0,
            in("x1") x1,
            options(noreturn, nostack),
        )
    }
}

pub fn wait_for_event() {
    // SAFETY: WFE only waits.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

pub fn send_event() {
    // SAFETY: DSB makes the pen's entry visible before SEV wakes its CPU.
    unsafe { asm!("dsb sy", "sev", options(nostack, preserves_flags)) };
}

pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits (an interrupt wakes the CPU even while masked).
    unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
}

/// Raises a pin of the secure PL061 (QEMU's gpio-pwr acts on the rising level).
pub fn gpio_pulse(pin: u32) -> u64 {
    const GPIODIR: u64 = 0x400;
    let bit = 1u32 << pin;
    // SAFETY: SECURE_GPIO is the secure PL061's frame; GPIODIR and the data register masked
    // by the pin's address bits only touch that pin.
    unsafe {
        let dir = (SECURE_GPIO + GPIODIR) as *mut u32;
        core::ptr::write_volatile(dir, core::ptr::read_volatile(dir) | bit);
        core::ptr::write_volatile((SECURE_GPIO + (u64::from(bit) << 2)) as *mut u32, bit);
    }
    halt()
}

pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting keeps the CPU here.
        unsafe { asm!("msr daifset, #0xf", "wfe", options(nostack)) };
    }
}
