//! The register frame the EL2 vectors save on entry and restore on exit.
//!
//! The layout is fixed: `arch/aarch64/vectors.S` stores into it by offset. The Rust handler may
//! modify any field; `elr` and `spsr` are written back to ELR_EL2/SPSR_EL2 before `ERET`, so
//! changing them redirects the host (exception injection, skipping a trapped SMC).

/// Saved host state at an exception taken to EL2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL2: where the host resumes.
    pub elr: u64,
    /// SPSR_EL2: the host's PSTATE at the exception, restored on `ERET`.
    pub spsr: u64,
    /// ESR_EL2 (read-only meaning: the syndrome of this exception).
    pub esr: u64,
    /// FAR_EL2.
    pub far: u64,
    /// HPFAR_EL2.
    pub hpfar: u64,
}

/// Byte size of [`TrapFrame`], used by the assembly.
pub const TRAP_FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();

const _: () = assert!(TRAP_FRAME_SIZE == 36 * 8);
const _: () = assert!(TRAP_FRAME_SIZE.is_multiple_of(16));
