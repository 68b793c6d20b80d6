//! aarch64 implementations: entry code, EL2 vectors, system registers, TLB and cache
//! maintenance, MMU enable and SMC forwarding. The only target-specific code in warden.

pub mod sysreg;

use core::arch::{asm, global_asm};

use super::{CacheMaintenance, TlbMaintenance};
use crate::trap::frame::TRAP_FRAME_SIZE;

/// Most CPUs warden supports: the board's (stacks and per-CPU state are sized by this).
pub const MAX_CPUS: usize = crate::boards::CURRENT.max_cpus;
/// The boot CPU's EL2 stack, including its guard page, per board (`crate::mm::link_layout`,
/// `boot_stack`: 128 KiB, DB410c 64). The boot itself is its deepest use (35 KiB in
/// `guest-boot` and `guest-chain`; logged at power-down, `footprint peak:`), checked when
/// warden enters the host against [`BOOT_STACK_MARGIN`].
pub const BOOT_STACK_SIZE: usize = crate::mm::LAYOUT.boot_stack;
/// Every other CPU's EL2 stack, including its guard page. These CPUs only handle traps and
/// `CPU_ON`'s entry: their deepest use in every test scenario and the Linux boots is at most
/// 6 KiB (`footprint peak:` at power-down, `EL2 stack other CPUs`), so 16 KiB leaves them
/// 12 KiB, twice that (an overflow hits the guard page: a fatal exception, not corruption).
pub const SECONDARY_STACK_SIZE: usize = 16 * 1024;
/// Headroom the boot CPU's stack must still have when warden enters the host (checked there:
/// a fatal error otherwise, so a boot that grew deeper is caught on the machine that grew it,
/// not by a guard-page fault on some later, deeper trap). Trap handling runs on the boot
/// CPU's stack too, and goes no deeper than on the others.
pub const BOOT_STACK_MARGIN: usize = 16 * 1024;
/// The lowest page of each stack is left unmapped, so an overflow faults instead of silently
/// overwriting the neighbouring CPU's stack or warden's data.
pub const STACK_GUARD_SIZE: usize = 4096;
/// Stack the fatal-exception vectors switch to (an overflowed SP cannot take a frame).
pub const EMERGENCY_STACK_SHIFT: u32 = 13;
pub const EMERGENCY_STACK_SIZE: usize = 1 << EMERGENCY_STACK_SHIFT;

/// BSS each CPU after the first costs: its EL2 stack and its emergency stack.
pub const PER_CPU_BSS: usize = SECONDARY_STACK_SIZE + EMERGENCY_STACK_SIZE;

const _: () = assert!(MAX_CPUS.is_power_of_two());
const _: () = assert!(BOOT_STACK_SIZE.is_multiple_of(4096));
const _: () = assert!(SECONDARY_STACK_SIZE.is_multiple_of(4096));
const _: () = assert!(BOOT_STACK_MARGIN < BOOT_STACK_SIZE - STACK_GUARD_SIZE);

#[repr(C, align(4096))]
pub struct Stacks<const N: usize>(pub [[u8; N]; MAX_CPUS]);

/// The EL2 stacks: the boot CPU's (warden CPU 0), then one per other CPU.
#[repr(C, align(4096))]
pub struct El2Stacks {
    pub boot: [u8; BOOT_STACK_SIZE],
    pub others: [[u8; SECONDARY_STACK_SIZE]; MAX_CPUS - 1],
}

/// EL2 stacks, one per CPU (index = warden's logical CPU index).
#[unsafe(no_mangle)]
pub static mut WARDEN_STACKS: El2Stacks =
    El2Stacks { boot: [0; BOOT_STACK_SIZE], others: [[0; SECONDARY_STACK_SIZE]; MAX_CPUS - 1] };

/// Per-CPU stacks for reporting a fatal EL2 exception.
#[unsafe(no_mangle)]
pub static mut WARDEN_EMERGENCY_STACKS: Stacks<EMERGENCY_STACK_SIZE> =
    Stacks([[0; EMERGENCY_STACK_SIZE]; MAX_CPUS]);

/// What a secondary CPU needs to turn its MMU on and find its stack; handed to EL3 as the
/// CPU_ON context and read by `secondary_entry` with the MMU and caches off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SecondaryBoot {
    pub stack_top: u64,
    pub mair: u64,
    pub tcr: u64,
    pub ttbr: u64,
    pub sctlr: u64,
    pub vbar: u64,
    pub cpu_index: u64,
    /// The CPU's MPIDR affinity | [`SB_TAG_VALID`]: how a hyp-entry board's entry code finds
    /// the block of a CPU TrustZone entered (no context id comes with the hyp entry).
    pub mpidr_tag: u64,
}

/// Marks [`SecondaryBoot::mpidr_tag`] as written (affinity 0 is a real CPU's).
pub const SB_TAG_VALID: u64 = 1 << 63;

/// The value of `warden_boot_flag` once the boot CPU is past the one-time setup ("WRDNBOOT").
pub const BOOT_FLAG: u64 = u64::from_le_bytes(*b"WRDNBOOT");

/// Whether TrustZone enters warden as the hyp image on every CPU power-up (`entry.S` then
/// checks `warden_boot_flag` first).
const HYP_ENTRY: u32 =
    matches!(crate::boards::CURRENT.entry, crate::boards::EntryConvention::Hyp { .. }) as u32;

/// Whether the entry code leaves Gunyah first (`entry.S`, `crate::boot_stage::gunyah`).
const GUNYAH_EXIT: u32 =
    matches!(crate::boards::CURRENT.entry, crate::boards::EntryConvention::UefiUnderGunyah { .. })
        as u32;

const R_AARCH64_RELATIVE: u64 = 1027;

global_asm!(
    include_str!("entry.S"),
    R_AARCH64_RELATIVE = const R_AARCH64_RELATIVE,
    STACKS = sym WARDEN_STACKS,
    STACK_SIZE = const BOOT_STACK_SIZE,
    PRIMARY_MAIN = sym crate::boot::primary_main,
    SECONDARY_MAIN = sym crate::boot::secondary_main,
    SB_STACK_TOP = const core::mem::offset_of!(SecondaryBoot, stack_top),
    SB_MAIR = const core::mem::offset_of!(SecondaryBoot, mair),
    SB_TCR = const core::mem::offset_of!(SecondaryBoot, tcr),
    SB_TTBR = const core::mem::offset_of!(SecondaryBoot, ttbr),
    SB_SCTLR = const core::mem::offset_of!(SecondaryBoot, sctlr),
    SB_VBAR = const core::mem::offset_of!(SecondaryBoot, vbar),
    SB_MPIDR_TAG = const core::mem::offset_of!(SecondaryBoot, mpidr_tag),
    SB_SIZE = const core::mem::size_of::<SecondaryBoot>(),
    SB_TAG_VALID = const SB_TAG_VALID,
    SECONDARY_BOOT = sym crate::boot::SECONDARY_BOOT,
    MAX_CPUS = const MAX_CPUS,
    MPIDR_MASK = const crate::trap::psci::MPIDR_AFFINITY_MASK,
    HYP_ENTRY = const HYP_ENTRY,
    BOOT_FLAG = const BOOT_FLAG,
    GUNYAH_EXIT = const GUNYAH_EXIT,
    GUNYAH_W0 = const crate::boards::GUNYAH_EXIT_SMC[0],
    GUNYAH_W1 = const crate::boards::GUNYAH_EXIT_SMC[1],
    GUNYAH_W4 = const crate::boards::GUNYAH_EXIT_SMC[4],
);

// entry.S loads only w0, w1 and w4 of the exit SMC (x2 and x3 are zeroed): the rest must be 0.
const _: () =
    assert!(crate::boards::GUNYAH_EXIT_SMC[2] == 0 && crate::boards::GUNYAH_EXIT_SMC[3] == 0);

// warden's memcpy (why: see the file's header); only in the bare-metal image, never over a
// host libc's.
#[cfg(target_os = "none")]
global_asm!(include_str!("memcpy.S"));

global_asm!(
    include_str!("vectors.S"),
    FRAME_SIZE = const TRAP_FRAME_SIZE,
    EL2_FAULT = sym crate::boot::el2_exception,
    EMERGENCY_STACKS = sym WARDEN_EMERGENCY_STACKS,
    EMERGENCY_SHIFT = const EMERGENCY_STACK_SHIFT,
    CPU_MASK = const MAX_CPUS - 1,
    LOWER_SYNC = sym crate::boot::lower_sync,
    LOWER_CALL = sym crate::boot::lower_call,
    ESR_EC_SHIFT = const crate::trap::esr::ESR_EC_SHIFT,
    EC_HVC64 = const crate::trap::esr::ExceptionClass::Hvc64.bits(),
    EC_SMC64 = const crate::trap::esr::ExceptionClass::Smc64.bits(),
    LOWER_OTHER = sym crate::boot::lower_other,
);

unsafe extern "C" {
    static mut warden_boot_flag: u64;
    static warden_payload_descriptor: [u8; crate::payload::DESCRIPTOR_SIZE];
    static el2_vectors: u8;
    static secondary_entry: u8;
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __bss_end: u8;
    static __pool_start: u8;
    static __pool_end: u8;
    static __image_end: u8;
}

/// Addresses of warden's own sections at run time (identity mapped: VA = PA).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub bss_end: u64,
    pub pool_start: u64,
    pub pool_end: u64,
    pub end: u64,
}

/// Where the linker put warden's sections (after self-relocation).
pub fn image_layout() -> ImageLayout {
    // Taking the address of a linker symbol reads nothing.
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        bss_end: core::ptr::addr_of!(__bss_end) as u64,
        pool_start: core::ptr::addr_of!(__pool_start) as u64,
        pool_end: core::ptr::addr_of!(__pool_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    }
}

/// The 64 payload-descriptor bytes the packer wrote at offset 0x40 of the image.
pub fn payload_descriptor_bytes() -> [u8; crate::payload::DESCRIPTOR_SIZE] {
    // SAFETY: the symbol is 64 bytes inside warden's image, mapped for its whole life; the
    // volatile read stops the compiler from assuming the assembler's initial zeroes.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(warden_payload_descriptor)) }
}

/// Sets `warden_boot_flag` (the entry code set it already, with the MMU off) and cleans it to
/// PoC, where the entry code reads it with the MMU off on every later hyp entry.
pub fn mark_booted() {
    let flag = core::ptr::addr_of_mut!(warden_boot_flag);
    // SAFETY: the flag is a word of warden's own .data, written only by the boot CPU (here and
    // in the entry code), read by the entry code of CPUs that enter later.
    unsafe { flag.write_volatile(BOOT_FLAG) };
    crate::arch::dcache_range(&Hw, crate::arch::CacheOp::Clean, flag as u64, 8);
}

pub fn vectors_address() -> u64 {
    core::ptr::addr_of!(el2_vectors) as u64
}

pub fn secondary_entry_address() -> u64 {
    core::ptr::addr_of!(secondary_entry) as u64
}

/// Size of `cpu`'s EL2 stack (its guard page included).
pub const fn stack_size(cpu: usize) -> usize {
    if cpu == 0 { BOOT_STACK_SIZE } else { SECONDARY_STACK_SIZE }
}

/// Lowest address of the EL2 stack of `cpu` (clamped to the last CPU), its guard page.
fn stack_bottom(cpu: usize) -> u64 {
    let base = core::ptr::addr_of!(WARDEN_STACKS) as u64;
    match cpu.min(MAX_CPUS - 1) {
        0 => base,
        cpu => base + (BOOT_STACK_SIZE + (cpu - 1) * SECONDARY_STACK_SIZE) as u64,
    }
}

/// Top of the EL2 stack of `cpu` (which must be < MAX_CPUS).
pub fn stack_top(cpu: usize) -> u64 {
    let cpu = cpu.min(MAX_CPUS - 1);
    stack_bottom(cpu) + stack_size(cpu) as u64
}

/// The guard pages at the bottom of every CPU's stack (left out of warden's own mapping).
pub fn stack_guards() -> impl Iterator<Item = crate::mm::MemRange> {
    (0..MAX_CPUS).map(|cpu| {
        let start = stack_bottom(cpu);
        crate::mm::MemRange::new(start, start + STACK_GUARD_SIZE as u64)
    })
}

/// Bytes of `cpu`'s stack that have ever been written (stacks start zeroed in BSS, so the
/// lowest non-zero word marks the deepest use). For the boot log and stack sizing.
pub fn stack_high_water(cpu: usize) -> usize {
    let top = stack_top(cpu);
    let bottom = stack_bottom(cpu) + STACK_GUARD_SIZE as u64;
    let mut addr = bottom;
    // SAFETY: [bottom, top) is this CPU's stack inside WARDEN_STACKS, mapped RW; reading a
    // word that another frame is using is harmless (volatile, no references formed).
    while addr < top && unsafe { core::ptr::read_volatile(addr as *const u64) } == 0 {
        addr += 8;
    }
    (top - addr) as usize
}

/// The real barrier, TLB and cache instructions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hw;

impl TlbMaintenance for Hw {
    fn dsb_ishst(&self) {
        // SAFETY: a barrier has no memory-safety effect.
        unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) }
    }
    fn dsb_ish(&self) {
        // SAFETY: as above.
        unsafe { asm!("dsb ish", options(nostack, preserves_flags)) }
    }
    fn isb(&self) {
        // SAFETY: as above.
        unsafe { asm!("isb", options(nostack, preserves_flags)) }
    }
    fn tlbi_ipas2e1is(&self, ipa: u64) {
        // SAFETY: invalidating TLB entries only makes later walks re-read the tables.
        unsafe { asm!("tlbi ipas2e1is, {}", in(reg) ipa >> 12, options(nostack, preserves_flags)) }
    }
    fn tlbi_vmalle1is(&self) {
        // SAFETY: as above.
        unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) }
    }
    fn tlbi_vmalls12e1is(&self) {
        // SAFETY: as above.
        unsafe { asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) }
    }
    fn tlbi_alle2is(&self) {
        // SAFETY: as above.
        unsafe { asm!("tlbi alle2is", options(nostack, preserves_flags)) }
    }
    fn tlbi_vae2is(&self, va: u64) {
        // SAFETY: as above.
        unsafe { asm!("tlbi vae2is, {}", in(reg) va >> 12, options(nostack, preserves_flags)) }
    }
}

impl CacheMaintenance for Hw {
    fn dcache_line_size(&self) -> u64 {
        let ctr = sysreg::read_ctr_el0();
        4 << ((ctr >> 16) & 0xf)
    }
    fn dc_civac(&self, va: u64) {
        // SAFETY: clean+invalidate writes dirty data back; memory contents are unchanged.
        unsafe { asm!("dc civac, {}", in(reg) va, options(nostack, preserves_flags)) }
    }
    fn dc_cvac(&self, va: u64) {
        // SAFETY: cleaning writes dirty data back; memory contents are unchanged.
        unsafe { asm!("dc cvac, {}", in(reg) va, options(nostack, preserves_flags)) }
    }
    fn dc_ivac(&self, va: u64) {
        // SAFETY: callers only invalidate lines of memory written with caches off, whose cached
        // copies (if any) are stale, so nothing current is discarded.
        unsafe { asm!("dc ivac, {}", in(reg) va, options(nostack, preserves_flags)) }
    }
    fn dsb_sy(&self) {
        // SAFETY: a barrier has no memory-safety effect.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) }
    }
}

/// [`crate::arch::select_nospec`]: `CMP; CSEL; CSDB`. The conditional select uses the real
/// flags, never predicted ones, once CSDB has executed (Arm ARM, "Consumption of Speculative
/// Data Barrier"); the caller's later accesses depend on the result as data.
#[inline(always)]
pub fn select_nospec(ok: bool, value: u64) -> u64 {
    let out: u64;
    // SAFETY: register-only arithmetic and a hint-space barrier; no memory is accessed.
    unsafe {
        asm!(
            "cmp {ok:w}, #0",
            "csel {out}, {value}, xzr, ne",
            "csdb",
            ok = in(reg) u32::from(ok),
            value = in(reg) value,
            out = lateout(reg) out,
            options(nomem, nostack),
        )
    }
    out
}

/// Turns on warden's EL2 stage-1 MMU and caches.
///
/// # Safety
/// `ttbr` must point to valid tables that identity-map all code, data and stack in use, with
/// `mair`/`tcr` matching them; this CPU's data caches must not hold stale lines for memory
/// written with caches off.
pub unsafe fn enable_el2_mmu(mair: u64, tcr: u64, ttbr: u64, sctlr: u64) {
    // SAFETY: the caller guarantees the tables identity-map everything in use, so execution
    // continues at the same addresses once translation is on.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            "tlbi alle2",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr = in(reg) ttbr,
            sctlr = in(reg) sctlr,
            options(nostack),
        )
    }
}

/// Issues `SMC #0` to EL3 with x0..x7 and returns x0..x3 (SMCCC v1.1: x4..x17 preserved).
pub fn smc(args: [u64; 8]) -> [u64; 4] {
    let (mut r0, mut r1, mut r2, mut r3) = (args[0], args[1], args[2], args[3]);
    // SAFETY: an SMCCC call to EL3 firmware; per SMCCC v1.1 it clobbers only x0..x3 (declared)
    // and x4..x17 are preserved, but we declare x4..x7 as inputs that may be clobbered to stay
    // safe with SMCCC v1.0 firmware, and x8..x17 likewise.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
            inout("x4") args[4] => _, inout("x5") args[5] => _,
            inout("x6") args[6] => _, inout("x7") args[7] => _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack),
        )
    }
    [r0, r1, r2, r3]
}

/// Parks this CPU for good (after a fatal error has been reported).
pub fn park() -> ! {
    loop {
        // SAFETY: WFE only waits; masking interrupts keeps the CPU here.
        unsafe { asm!("msr daifset, #0xf", "wfe", options(nostack)) }
    }
}
