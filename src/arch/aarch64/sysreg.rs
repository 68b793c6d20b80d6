//! System-register access. Registers `aarch64-cpu` knows are read and written through it; the
//! few it lacks (newer EL2 controls) use `mrs`/`msr` with their architectural encodings.

use aarch64_cpu::registers::{self as r, Readable, Writeable};
use core::arch::asm;

use crate::arch::host_el2::{CpuFeatures, HostEl2Controls};

/// Reads a system register by name or `S<op0>_<op1>_C<n>_C<m>_<op2>` encoding.
macro_rules! read_raw {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an ID or control register has no side effects.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Writes a system register by name or encoding.
macro_rules! write_raw {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: callers only write EL2 controls with values computed for the host's
        // configuration; none of these registers affect warden's own memory safety.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub fn read_ctr_el0() -> u64 {
    read_raw!("ctr_el0")
}

pub fn mpidr() -> u64 {
    r::MPIDR_EL1.get()
}

pub fn counter() -> u64 {
    r::CNTPCT_EL0.get()
}

pub fn counter_frequency() -> u64 {
    r::CNTFRQ_EL0.get()
}

pub fn id_aa64mmfr0() -> u64 {
    r::ID_AA64MMFR0_EL1.get()
}

pub fn id_aa64mmfr1() -> u64 {
    r::ID_AA64MMFR1_EL1.get()
}

/// The ID register fields that decide how EL2 is set up for the host.
pub fn cpu_features() -> CpuFeatures {
    CpuFeatures {
        id_aa64pfr0: r::ID_AA64PFR0_EL1.get(),
        id_aa64pfr1: r::ID_AA64PFR1_EL1.get(),
        id_aa64dfr0: r::ID_AA64DFR0_EL1.get(),
        id_aa64mmfr1: r::ID_AA64MMFR1_EL1.get(),
        id_aa64mmfr3: read_raw!("S3_0_C0_C7_3"),
        id_aa64isar2: read_raw!("S3_0_C0_C6_2"),
        pmcr_n: (read_raw!("pmcr_el0") >> 11) & 0x1f,
    }
}

/// Programs the EL2 controls that shape the host's EL1 environment (this CPU only).
pub fn write_host_controls(c: &HostEl2Controls) {
    r::HCR_EL2.set(c.hcr);
    if let Some(hcrx) = c.hcrx {
        write_raw!("S3_4_C1_C2_2", hcrx);
    }
    r::CPTR_EL2.set(c.cptr);
    r::CNTHCTL_EL2.set(c.cnthctl);
    r::CNTVOFF_EL2.set(0);
    r::MDCR_EL2.set(c.mdcr);
    // What EL1 may profile, trace and record: never EL2 (`host_el2`'s module documentation).
    if let Some(pmscr) = c.pmscr {
        write_raw!("S3_4_C9_C9_0", pmscr); // PMSCR_EL2
    }
    if let Some(trfcr) = c.trfcr {
        write_raw!("S3_4_C1_C2_1", trfcr); // TRFCR_EL2
    }
    if let Some(brbcr) = c.brbcr {
        write_raw!("S2_4_C9_C0_0", brbcr); // BRBCR_EL2
    }
    write_raw!("hstr_el2", 0);
    // EL1 reads of MIDR/MPIDR return these: show the host the real values.
    write_raw!("vpidr_el2", read_raw!("midr_el1"));
    r::VMPIDR_EL2.set(r::MPIDR_EL1.get());
    // GICv3 only: let EL1 use the system-register interface (ICC_SRE_EL2.{SRE,Enable}).
    // Without a GICv3 CPU interface the register is UNDEFINED (`host_el2`).
    if let Some(set) = c.icc_sre_set {
        write_raw!("S3_4_C12_C9_5", read_raw!("S3_4_C12_C9_5") | set);
    }
    if let Some(zcr) = c.zcr {
        write_raw!("S3_4_C1_C2_0", zcr);
    }
    if let Some(smcr) = c.smcr {
        write_raw!("S3_4_C1_C2_6", smcr);
    }
    // SAFETY: ISB only synchronises the context changes above.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Programs the host's stage-2: VTCR_EL2 and VTTBR_EL2, then drops stale stage-1+2 TLB entries
/// for the VMID on this CPU.
pub fn write_stage2(vtcr: u64, vttbr: u64) {
    r::VTCR_EL2.set(vtcr);
    r::VTTBR_EL2.set(vttbr);
    // SAFETY: synchronise, then invalidate this VMID's entries locally; no memory effects.
    unsafe { asm!("isb", "tlbi vmalls12e1", "dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// Makes another stage-2 current on this CPU (VTTBR_EL2 only; VTCR is shared), for TLB
/// maintenance by VMID while warden edits that stage-2's tables.
pub fn set_vttbr(vttbr: u64) {
    r::VTTBR_EL2.set(vttbr);
    // SAFETY: ISB only synchronises the register write.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Bytes `DC ZVA` zeroes (DCZID_EL0.BS, at most 2 KiB by the architecture), or `None` when it
/// is prohibited (DCZID_EL0.DZP).
pub fn dc_zva_block_size() -> Option<u64> {
    let dczid = read_raw!("dczid_el0");
    (dczid & (1 << 4) == 0).then(|| 4u64 << (dczid & 0xf))
}

/// `DC ZVA`: zeroes the block containing `va`.
///
/// # Safety
/// The block must be warden-mapped Normal memory nobody else relies on keeping.
pub unsafe fn dc_zva(va: u64) {
    // SAFETY: the caller vouches for the block.
    unsafe { asm!("dc zva, {}", in(reg) va, options(nostack, preserves_flags)) };
}

/// The host's EL1 registers an exception injection reads.
pub fn el1_vbar() -> u64 {
    r::VBAR_EL1.get()
}

pub fn el1_sctlr() -> u64 {
    r::SCTLR_EL1.get()
}

/// The host's EL1&0 translation registers (TCR_EL1, TTBR0_EL1, TTBR1_EL1).
pub fn el1_translation() -> (u64, u64, u64) {
    (r::TCR_EL1.get(), r::TTBR0_EL1.get(), r::TTBR1_EL1.get())
}

/// Writes the EL1 exception registers for an injected exception (FAR_EL1 only when defined).
pub fn write_el1_exception(esr: u64, far: Option<u64>, elr: u64, spsr: u64) {
    r::ESR_EL1.set(esr);
    if let Some(far) = far {
        r::FAR_EL1.set(far);
    }
    r::ELR_EL1.set(elr);
    r::SPSR_EL1.set(spsr);
}

/// ESR_EL2: the syndrome of the exception being handled.
#[inline(always)]
pub fn esr_el2() -> u64 {
    r::ESR_EL2.get()
}

/// Moves the host's return address past the trapped 32-bit instruction (a trapped SMC's
/// preferred return address is the SMC itself). Only on the call fast path, which keeps ELR_EL2
/// in the register instead of the frame: nothing between the exception and `ERET` changes it
/// (warden takes no exception of its own there).
#[inline(always)]
pub fn skip_trapped_instruction() {
    r::ELR_EL2.set(r::ELR_EL2.get().wrapping_add(4));
}

pub fn set_tpidr_el2(v: u64) {
    r::TPIDR_EL2.set(v);
}

pub fn tpidr_el2() -> u64 {
    r::TPIDR_EL2.get()
}

/// Leaves EL2 for the host: ERET to `entry` at EL1h with all exceptions masked and x0 = `arg`
/// (the arm64 boot protocol's register state: x1..x3 zero, MMU off at EL1).
///
/// # Safety
/// Stage 2 and the host EL2 controls must be programmed; `entry` must be host code.
pub unsafe fn enter_host(entry: u64, arg: u64) -> ! {
    // SPSR: EL1h (0b0101) with D, A, I, F masked.
    const SPSR_EL1H_DAIF: u64 = 0x3c5;
    // A clean EL1: MMU and caches off, little endian (RES1 bits per SCTLR_EL1 reset shape).
    const SCTLR_EL1_MMU_OFF: u64 =
        (1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11);
    // SAFETY: the caller guarantees the host's translation regime is ready; ERET leaves warden.
    unsafe {
        asm!(
            "msr sctlr_el1, {sctlr}",
            "msr elr_el2, {entry}",
            "msr spsr_el2, {spsr}",
            "mov x1, xzr",
            "mov x2, xzr",
            "mov x3, xzr",
            "isb",
            "eret",
            sctlr = in(reg) SCTLR_EL1_MMU_OFF,
            entry = in(reg) entry,
            spsr = in(reg) SPSR_EL1H_DAIF,
            in("x0") arg,
            options(noreturn, nostack),
        )
    }
}
