//! tz-probe: the EL2 program the `tz-sim` scenario puts where the hyp image goes, to check
//! tz-sim from where warden sits (a test program, not part of the chain).
//!
//! It prints `ok NAME` or `FAILED NAME: reason` per check, then `tz-probe: done`, and powers
//! the machine off with `SYSTEM_OFF`:
//! - `hyp_entry`: entered at EL2 with x0 = the next stage's entry and x1 = 2;
//! - `psci_version`: PSCI 1.0, SMCCC 1.1;
//! - `psci_features`: yes to what tz-sim implements, `NOT_SUPPORTED` to the rest and to an
//!   unknown function;
//! - `cpu_on_cycle`: every other CPU powered on (a second `CPU_ON` while it comes up is
//!   `ON_PENDING` or `ALREADY_ON`), entering this image at EL2 with x0 = the entry `CPU_ON`
//!   named and x1 = 2, then `CPU_OFF` and `AFFINITY_INFO` = OFF; twice per CPU;
//! - `cpu_on_errors`: an absent CPU and affinity bits out of range (`INVALID_PARAMETERS`), the
//!   calling CPU (`ALREADY_ON`), entries outside RAM or misaligned (`INVALID_ADDRESS`), an
//!   affinity level above 0 (`INVALID_PARAMETERS`);
//! - `gic_group1`: an SGI the non-secure side enables and sends itself is delivered as a
//!   group 1 interrupt, which it is only if tz-sim made it non-secure group 1 (and, GICv3,
//!   woke the redistributor and opened the system registers).
//!
//! Then Qualcomm SCM, as warden forwards it from EL2 (`src/scm_checks.rs`):
//! - `scm_is_call_avail`: Linux's convention detection and IS_CALL_AVAIL (1 for assign_mem and
//!   the PAS calls, 0 for another call), an unknown SiP call `NOT_SUPPORTED`;
//! - `scm_assign_errors`: assign_mem refusals through real SMCs (arginfo, an argument buffer in
//!   secure memory, ranges outside RAM or unaligned, an unknown VM, permission 0, a source
//!   listed twice, a source that does not own the range, overlapping ranges);
//! - `xpu_witness_stage2`: with the probe's own stage 2 (VTTBR_EL2, VTCR_EL2, HCR_EL2.VM), an
//!   assign_mem HLOS -> MSS_MSA of pages or of part of a block it still maps is refused
//!   (ERROR, `XPU: violation`); unmapped and TLB-invalidated, it passes; with stage 2 off it
//!   is refused too;
//! - `xpu_witness_smmu`: the real SMMU disabled with global bypass, a stream whose stage 2 maps
//!   the range and a bypass stream are each refused; with that stream invalid, it passes;
//! - `xpu_witness_hostile`: VTTBR_EL2 in secure memory or flash, a reserved granule, a
//!   misaligned root and a fan-out of tables beyond the walk budget are refused, and tz-sim
//!   keeps answering;
//! - `pas_sequence`: is_supported, init_image, mem_setup, auth_and_reset refused while the
//!   probe maps the region and accepted once unmapped, shutdown;
//! - `pas_out_of_order`: each call out of order and with bad arguments, with its error.
#![no_std]
#![no_main]
// Failure reasons are formatted into a fixed buffer (no heap) and returned once per check.
#![allow(clippy::result_large_err)]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use tz_sim::layout::{GICC, GICD, GICR, HYP_ENTRY_AARCH64, NEXT_STAGE, UART};
use warden_abi::psci;
use warden_abi::smccc::SMCCC_VERSION;

/// The entry `CPU_ON` names for the secondaries: valid RAM, never executed (tz-sim enters the
/// hyp image, which tells it from the boot CPU's x0).
const SECONDARY_ENTRY: u64 = 0x4100_0000;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    mov     x19, x0
    mov     x20, x1
    ldr     x2, ={next_stage}
    cmp     x0, x2
    b.ne    2f
    adrp    x3, __primary_stack_top
    add     x3, x3, :lo12:__primary_stack_top
    mov     sp, x3
    bl      {primary}
2:  adrp    x3, __secondary_stack_top
    add     x3, x3, :lo12:__secondary_stack_top
    mov     sp, x3
    bl      {secondary}
3:  wfe
    b       3b
"#,
    next_stage = const NEXT_STAGE,
    primary = sym primary_main,
    secondary = sym secondary_main,
);

struct Uart;
impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: the PL011's DR and FR (device memory, MMU off).
            unsafe {
                while core::ptr::read_volatile((UART + 0x18) as *const u32) & (1 << 5) != 0 {}
                core::ptr::write_volatile(UART as *mut u32, u32::from(b));
            }
        }
        Ok(())
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{ let _ = writeln!(Uart, $($arg)*); }};
}

fn smc(x0: u32, x1: u64, x2: u64, x3: u64) -> i64 {
    let mut r0 = u64::from(x0);
    // SAFETY: an SMCCC call to tz-sim; x0..x3 may change, x4..x17 are preserved (SMCCC 1.1),
    // declared clobbered anyway.
    unsafe {
        asm!("smc #0", inout("x0") r0, inout("x1") x1 => _, inout("x2") x2 => _,
            inout("x3") x3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack))
    };
    r0 as i64
}

fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the counter has no side effects.
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Waits up to `ms` milliseconds for `done`.
fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let freq: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack)) };
    let end = counter() + freq / 1000 * ms;
    while counter() < end {
        if done() {
            return true;
        }
    }
    done()
}

fn current_el() -> u64 {
    let v: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) v, options(nomem, nostack)) };
    (v >> 2) & 3
}

fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack)) };
    v & 0xff_00ff_ffff
}

/// What the secondary saw at its hyp entry; `ARRIVED` written last.
static SEEN_X0: AtomicU64 = AtomicU64::new(0);
static SEEN_X1: AtomicU64 = AtomicU64::new(0);
static SEEN_MPIDR: AtomicU64 = AtomicU64::new(0);
static SEEN_EL: AtomicU64 = AtomicU64::new(0);
static ARRIVED: AtomicU64 = AtomicU64::new(0);
/// Set by the boot CPU once it has made its checks of a pending CPU: the secondary powers off
/// only then, or on a loaded host it can be off again before the boot CPU's second `CPU_ON`
/// (which then rightly succeeds).
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// CPU_OFF returned (it must not), with this status + 1.
static OFF_RETURNED: AtomicU64 = AtomicU64::new(0);

extern "C" fn secondary_main(x0: u64, x1: u64) -> ! {
    SEEN_X0.store(x0, Ordering::Relaxed);
    SEEN_X1.store(x1, Ordering::Relaxed);
    SEEN_MPIDR.store(mpidr(), Ordering::Relaxed);
    SEEN_EL.store(current_el(), Ordering::Relaxed);
    ARRIVED.store(1, Ordering::Release);
    while RELEASED.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    let status = smc(psci::CPU_OFF, 0, 0, 0);
    OFF_RETURNED.store(status as u64 + 1, Ordering::Release);
    loop {
        // SAFETY: WFE only waits.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

fn report(name: &str, outcome: Result<(), heapless_reason::Reason>) {
    match outcome {
        Ok(()) => println!("ok {name}"),
        Err(why) => println!("FAILED {name}: {}", why.as_str()),
    }
}

/// A failure reason formatted into a fixed buffer (no heap here).
mod heapless_reason {
    use core::fmt::{self, Write};

    pub struct Reason {
        buf: [u8; 160],
        len: usize,
    }

    impl Reason {
        pub fn new(args: fmt::Arguments<'_>) -> Self {
            let mut r = Reason { buf: [0; 160], len: 0 };
            let _ = r.write_fmt(args);
            r
        }
        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("(unprintable)")
        }
    }

    impl Write for Reason {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                if self.len < self.buf.len() {
                    self.buf[self.len] = b;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }
}

use heapless_reason::Reason;

macro_rules! fail {
    ($($arg:tt)*) => { return Err(Reason::new(format_args!($($arg)*))) };
}

mod scm_checks;

fn hyp_entry(x0: u64, x1: u64) -> Result<(), Reason> {
    if current_el() != 2 {
        fail!("running at EL{}", current_el());
    }
    if x0 != NEXT_STAGE || x1 != HYP_ENTRY_AARCH64 {
        fail!("x0 {x0:#x} x1 {x1:#x}, expected {NEXT_STAGE:#x} and {HYP_ENTRY_AARCH64}");
    }
    Ok(())
}

fn psci_version() -> Result<(), Reason> {
    let v = smc(psci::PSCI_VERSION, 0, 0, 0);
    if v != 0x1_0000 {
        fail!("PSCI_VERSION {v:#x}");
    }
    let v = smc(SMCCC_VERSION, 0, 0, 0);
    if v != 0x1_0001 {
        fail!("SMCCC_VERSION {v:#x}");
    }
    Ok(())
}

fn psci_features() -> Result<(), Reason> {
    for f in [psci::CPU_ON_64, psci::CPU_OFF, psci::AFFINITY_INFO_64, psci::SYSTEM_OFF] {
        let r = smc(psci::PSCI_FEATURES, u64::from(f), 0, 0);
        if r != psci::SUCCESS {
            fail!("PSCI_FEATURES({f:#x}) = {r}");
        }
    }
    for f in [psci::SYSTEM_RESET2_64, 0x8400_00ff] {
        let r = smc(psci::PSCI_FEATURES, u64::from(f), 0, 0);
        if r != psci::NOT_SUPPORTED {
            fail!("PSCI_FEATURES({f:#x}) = {r}, expected -1");
        }
    }
    let r = smc(0x8400_00ff, 0, 0, 0);
    if r != psci::NOT_SUPPORTED {
        fail!("unknown function 0x840000ff returned {r}");
    }
    Ok(())
}

/// The other CPUs: those AFFINITY_INFO knows (MPIDR 1, 2, ... until one is absent).
fn other_cpus() -> impl Iterator<Item = u64> {
    (1..16u64).take_while(|&m| smc(psci::AFFINITY_INFO_64, m, 0, 0) != psci::INVALID_PARAMETERS)
}

fn cpu_on_cycle() -> Result<(), Reason> {
    let mut cycles = 0;
    for target in other_cpus() {
        for round in 1..=2 {
            let outcome = one_cpu_on_cycle(target, round);
            // Whatever happened, a CPU that arrived may power off now.
            RELEASED.store(1, Ordering::Release);
            outcome?;
            cycles += 1;
        }
    }
    if cycles == 0 {
        fail!("no other CPU");
    }
    println!("tz-probe: note cpu_on_cycle: {cycles} CPU_ON/CPU_OFF cycles");
    Ok(())
}

/// `CPU_ON` of `target`, a second `CPU_ON` while it is pending or on (the CPU waits at its
/// entry until released, so it cannot be off again in between), its arrival, then its
/// `CPU_OFF` once released.
fn one_cpu_on_cycle(target: u64, round: u32) -> Result<(), Reason> {
    ARRIVED.store(0, Ordering::Release);
    RELEASED.store(0, Ordering::Release);
    let r = smc(psci::CPU_ON_64, target, SECONDARY_ENTRY, 0x1234);
    if r != psci::SUCCESS {
        fail!("CPU {target:#x} round {round}: CPU_ON = {r}");
    }
    let again = smc(psci::CPU_ON_64, target, SECONDARY_ENTRY, 0);
    if again != psci::ON_PENDING && again != psci::ALREADY_ON {
        fail!("CPU {target:#x}: a second CPU_ON = {again}");
    }
    if !wait_until(2000, || ARRIVED.load(Ordering::Acquire) == 1) {
        fail!("CPU {target:#x} round {round}: never reached the hyp entry");
    }
    RELEASED.store(1, Ordering::Release);
    let (x0, x1) = (SEEN_X0.load(Ordering::Relaxed), SEEN_X1.load(Ordering::Relaxed));
    let (m, el) = (SEEN_MPIDR.load(Ordering::Relaxed), SEEN_EL.load(Ordering::Relaxed));
    if x0 != SECONDARY_ENTRY || x1 != HYP_ENTRY_AARCH64 || m != target || el != 2 {
        fail!("CPU {target:#x}: entered with x0 {x0:#x} x1 {x1:#x} MPIDR {m:#x} EL{el}");
    }
    let off = wait_until(2000, || smc(psci::AFFINITY_INFO_64, target, 0, 0) == psci::AFFINITY_OFF);
    if !off {
        fail!(
            "CPU {target:#x}: not OFF after CPU_OFF (it returned {})",
            OFF_RETURNED.load(Ordering::Acquire) as i64 - 1
        );
    }
    Ok(())
}

fn cpu_on_errors() -> Result<(), Reason> {
    let cases: [(u64, u64, i64); 6] = [
        (0xff, SECONDARY_ENTRY, psci::INVALID_PARAMETERS),
        (1 << 31 | 1, SECONDARY_ENTRY, psci::INVALID_PARAMETERS),
        (mpidr(), SECONDARY_ENTRY, psci::ALREADY_ON),
        (1, 0x1000, psci::INVALID_ADDRESS),
        (1, SECONDARY_ENTRY + 2, psci::INVALID_ADDRESS),
        (1, 0x0e00_0000, psci::INVALID_ADDRESS),
    ];
    for (target, entry, want) in cases {
        let r = smc(psci::CPU_ON_64, target, entry, 0);
        if r != want {
            fail!("CPU_ON({target:#x}, {entry:#x}) = {r}, expected {want}");
        }
    }
    let r = smc(psci::AFFINITY_INFO_64, 1, 1, 0);
    if r != psci::INVALID_PARAMETERS {
        fail!("AFFINITY_INFO(1, level 1) = {r}, expected -2");
    }
    if smc(psci::AFFINITY_INFO_64, 1, 0, 0) != psci::AFFINITY_OFF {
        fail!("CPU 1 is not OFF after the refused calls");
    }
    Ok(())
}

fn r32(pa: u64) -> u32 {
    // SAFETY: a GIC register (device memory, MMU off).
    unsafe { core::ptr::read_volatile(pa as *const u32) }
}
fn w32(pa: u64, v: u32) {
    // SAFETY: as for r32.
    unsafe { core::ptr::write_volatile(pa as *mut u32, v) }
}

const SGI: u32 = 5;

fn gic_group1() -> Result<(), Reason> {
    let pfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    let got = if (pfr0 >> 24) & 0xf != 0 {
        // GICv3: system registers at EL2 (ICC_SRE_EL2.SRE; EL3 must allow it), group 1 on,
        // the SGI enabled in this CPU's redistributor (CPU 0: the first frame pair).
        // SAFETY: GICv3 CPU interface registers; no memory effects.
        unsafe {
            asm!("msr S3_4_C12_C9_5, {}", "isb", in(reg) 0xfu64, options(nostack));
            asm!("msr S3_0_C4_C6_0, {}", in(reg) 0xffu64, options(nostack)); // ICC_PMR_EL1
            asm!("msr S3_0_C12_C12_7, {}", "isb", in(reg) 1u64, options(nostack)); // IGRPEN1
        }
        w32(GICD, r32(GICD) | (1 << 1) | (1 << 4)); // EnableGrp1A, ARE_NS
        w32(GICR + 0x1_0000 + 0x100, 1 << SGI); // GICR_ISENABLER0
        // ICC_SGI1R_EL1: INTID, target list = Aff0 0 (this CPU).
        let sgi1r = (u64::from(SGI) << 24) | 1;
        // SAFETY: as above.
        unsafe { asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) sgi1r, options(nostack)) };
        let mut intid = 1023;
        wait_until(500, || {
            // SAFETY: acknowledging a group 1 interrupt (ICC_IAR1_EL1).
            unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) intid, options(nostack)) };
            intid != 1023
        });
        if intid != 1023 {
            // SAFETY: ICC_EOIR1_EL1 for the interrupt just acknowledged.
            unsafe { asm!("msr S3_0_C12_C12_1, {}", in(reg) intid, options(nostack)) };
        }
        intid
    } else {
        // GICv2 (non-secure view): group 1 on in the distributor and the CPU interface.
        w32(GICD, 1);
        w32(GICC, 1);
        w32(GICC + 0x4, 0xff); // GICC_PMR
        w32(GICD + 0x100, 1 << SGI); // GICD_ISENABLER0
        w32(GICD + 0xf00, (0b10 << 24) | SGI); // GICD_SGIR: to this CPU
        let mut iar = 1023;
        wait_until(500, || {
            iar = r32(GICC + 0xc); // GICC_IAR
            iar & 0x3ff != 1023
        });
        if iar & 0x3ff != 1023 {
            w32(GICC + 0x10, iar); // GICC_EOIR
        }
        u64::from(iar & 0x3ff)
    };
    if got != u64::from(SGI) {
        fail!("acknowledged INTID {got} for SGI {SGI} (1023: none pending in group 1)");
    }
    Ok(())
}

extern "C" fn primary_main(x0: u64, x1: u64) -> ! {
    println!("tz-probe: at EL{} (x0 = {x0:#x}, x1 = {x1:#x})", current_el());
    report("hyp_entry", hyp_entry(x0, x1));
    report("psci_version", psci_version());
    report("psci_features", psci_features());
    report("cpu_on_cycle", cpu_on_cycle());
    report("cpu_on_errors", cpu_on_errors());
    report("gic_group1", gic_group1());
    report("scm_is_call_avail", scm_checks::is_call_avail());
    report("scm_assign_errors", scm_checks::assign_errors());
    report("xpu_witness_stage2", scm_checks::witness_stage2());
    report("xpu_witness_smmu", scm_checks::witness_smmu());
    report("xpu_witness_hostile", scm_checks::witness_hostile());
    report("pas_sequence", scm_checks::pas_sequence());
    report("pas_out_of_order", scm_checks::pas_out_of_order());
    println!("tz-probe: done");
    smc(psci::SYSTEM_OFF, 0, 0, 0);
    println!("FAILED system_off: SYSTEM_OFF returned");
    loop {
        // SAFETY: WFE only waits.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("FAILED probe_panic: {info}");
    loop {
        // SAFETY: WFE only waits.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}
