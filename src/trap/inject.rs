//! Delivering a synchronous exception to the host's EL1, computed the way the architecture's
//! exception entry (`AArch64.TakeException` in the Arm ARM) would do it.
//!
//! Everything here is pure: the inputs are the trapped syndrome and PSTATE plus the host's
//! VBAR_EL1/SCTLR_EL1 and the features its CPU implements; the output is the set of EL1
//! registers to write and the new ELR_EL2/SPSR_EL2 to `ERET` with. The caller writes them.

use core::fmt;

use super::esr::{ESR_IL, Esr, ExceptionClass, FSC_SYNC_EXTERNAL, Level, dabt};
use super::s1walk::El1Regime;

/// SPSR_ELx / PSTATE bits (AArch64 layout).
pub mod spsr {
    pub const N: u64 = 1 << 31;
    pub const Z: u64 = 1 << 30;
    pub const C: u64 = 1 << 29;
    pub const V: u64 = 1 << 28;
    pub const NZCV: u64 = N | Z | C | V;
    pub const TCO: u64 = 1 << 25;
    pub const DIT: u64 = 1 << 24;
    pub const UAO: u64 = 1 << 23;
    pub const PAN: u64 = 1 << 22;
    pub const SS: u64 = 1 << 21;
    pub const IL: u64 = 1 << 20;
    pub const ALLINT: u64 = 1 << 13;
    pub const SSBS: u64 = 1 << 12;
    pub const BTYPE: u64 = 3 << 10;
    pub const D: u64 = 1 << 9;
    pub const A: u64 = 1 << 8;
    pub const I: u64 = 1 << 7;
    pub const F: u64 = 1 << 6;
    pub const DAIF: u64 = D | A | I | F;
    /// `M[4]`: the interrupted state was AArch32.
    pub const M_AARCH32: u64 = 1 << 4;
    pub const M_MASK: u64 = 0x1f;
    pub const M_EL0T: u64 = 0b0000;
    pub const M_EL1T: u64 = 0b0100;
    pub const M_EL1H: u64 = 0b0101;
}

/// SCTLR_EL1 bits that exception entry reads.
pub mod sctlr {
    /// SPAN: 0 = set PSTATE.PAN on exception entry to EL1.
    pub const SPAN: u64 = 1 << 23;
    /// DSSBS: value of PSTATE.SSBS on exception entry.
    pub const DSSBS: u64 = 1 << 44;
    /// SPINTMASK: ALLINT is set to NOT SPINTMASK on exception entry (FEAT_NMI).
    pub const SPINTMASK: u64 = 1 << 62;
}

/// Vector offsets from VBAR_EL1 for a synchronous exception.
pub const VECTOR_CURRENT_SP0: u64 = 0x000;
pub const VECTOR_CURRENT_SPX: u64 = 0x200;
pub const VECTOR_LOWER_AARCH64: u64 = 0x400;

/// Which optional PSTATE features the host's CPU implements (from its ID registers); each
/// changes what exception entry does to PSTATE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Features {
    /// FEAT_PAN (ID_AA64MMFR1_EL1.PAN != 0).
    pub pan: bool,
    /// FEAT_SSBS (ID_AA64PFR1_EL1.SSBS != 0).
    pub ssbs: bool,
    /// FEAT_MTE (ID_AA64PFR1_EL1.MTE != 0): PSTATE.TCO is set on entry.
    pub mte: bool,
    /// FEAT_NMI (ID_AA64PFR1_EL1.NMI != 0): PSTATE.ALLINT = NOT SCTLR_EL1.SPINTMASK on entry.
    pub nmi: bool,
}

impl El1Features {
    /// Reads the features from ID_AA64MMFR1_EL1 and ID_AA64PFR1_EL1.
    pub const fn from_id_regs(id_aa64mmfr1: u64, id_aa64pfr1: u64) -> Self {
        El1Features {
            pan: (id_aa64mmfr1 >> 20) & 0xf != 0,
            ssbs: (id_aa64pfr1 >> 4) & 0xf != 0,
            mte: (id_aa64pfr1 >> 8) & 0xf != 0,
            nmi: (id_aa64pfr1 >> 36) & 0xf != 0,
        }
    }
}

/// The host's EL1 state that decides where and how an exception is delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostEl1 {
    pub vbar: u64,
    pub sctlr: u64,
    pub features: El1Features,
    /// Its translation registers (for the level of an abort on its own table walk).
    pub regime: El1Regime,
}

/// What the trap handler saved: the syndrome and where the host was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrappedState {
    /// ESR_EL2.
    pub esr: Esr,
    /// SPSR_EL2: the host's PSTATE when it trapped.
    pub spsr: u64,
    /// ELR_EL2: the preferred return address (for aborts: the faulting instruction).
    pub elr: u64,
    /// FAR_EL2.
    pub far: u64,
    /// For a fault on the host's own stage-1 walk (ESR_EL2.S1PTW): the stage-1 level of the
    /// descriptor ([`super::s1walk::faulting_level`]); `None` is reported as level 0.
    pub s1_walk_level: Option<Level>,
}

/// The EL1 registers an exception entry writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct El1ExceptionRegs {
    pub esr: u64,
    /// `None`: FAR_EL1 is UNKNOWN for this exception and is left as it is.
    pub far: Option<u64>,
    pub elr: u64,
    pub spsr: u64,
}

/// A computed exception entry: EL1 registers to write, then `ERET` with these ELR/SPSR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub el1: El1ExceptionRegs,
    /// Vector address the host resumes at.
    pub elr_el2: u64,
    /// The PSTATE the host's handler starts with.
    pub spsr_el2: u64,
}

/// Why an exception cannot be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The host was executing in AArch32 (only possible at EL0); warden runs AArch64 hosts only
    /// and does not model AArch32 exception entry.
    Aarch32Source,
    /// SPSR_EL2.M names a mode a lower-EL exception cannot come from (EL2, EL3, reserved).
    InvalidSourceMode(u8),
    /// `inject_sea` was given a syndrome that is not a data or instruction abort.
    NotAnAbort(ExceptionClass),
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aarch32Source => f.write_str("host was in AArch32 state"),
            Self::InvalidSourceMode(m) => write!(f, "invalid source mode M={m:#07b}"),
            Self::NotAnAbort(ec) => write!(f, "{ec} is not an abort"),
        }
    }
}

/// Where the exception came from, as far as vector selection and EC are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    El0,
    El1Sp0,
    El1Spx,
}

fn source_of(spsr_el2: u64) -> Result<Source, InjectError> {
    if spsr_el2 & spsr::M_AARCH32 != 0 {
        return Err(InjectError::Aarch32Source);
    }
    match spsr_el2 & spsr::M_MASK {
        spsr::M_EL0T => Ok(Source::El0),
        spsr::M_EL1T => Ok(Source::El1Sp0),
        spsr::M_EL1H => Ok(Source::El1Spx),
        m => Err(InjectError::InvalidSourceMode(m as u8)),
    }
}

/// PSTATE after an exception entry to EL1 (AArch64), given the interrupted PSTATE.
///
/// Kept: N, Z, C, V, DIT, and PAN unless SCTLR_EL1.SPAN == 0 sets it. Set from SCTLR_EL1:
/// SSBS (DSSBS), ALLINT (NOT SPINTMASK). Set: D, A, I, F, TCO (with MTE), M = EL1h. Cleared:
/// UAO, SS, IL, BTYPE and everything else.
pub fn el1_entry_pstate(old: u64, host: &HostEl1) -> u64 {
    let features = host.features;
    let mut new = old & (spsr::NZCV | spsr::DIT);
    if features.pan {
        new |= old & spsr::PAN;
        if host.sctlr & sctlr::SPAN == 0 {
            new |= spsr::PAN;
        }
    }
    if features.mte {
        new |= spsr::TCO;
    }
    if features.ssbs && host.sctlr & sctlr::DSSBS != 0 {
        new |= spsr::SSBS;
    }
    if features.nmi && host.sctlr & sctlr::SPINTMASK == 0 {
        new |= spsr::ALLINT;
    }
    new | spsr::DAIF | spsr::M_EL1H
}

fn enter_el1(
    trapped: &TrappedState,
    host: &HostEl1,
    esr_el1: u64,
    far: Option<u64>,
) -> Result<Injection, InjectError> {
    let offset = match source_of(trapped.spsr)? {
        Source::El0 => VECTOR_LOWER_AARCH64,
        Source::El1Sp0 => VECTOR_CURRENT_SP0,
        Source::El1Spx => VECTOR_CURRENT_SPX,
    };
    Ok(Injection {
        el1: El1ExceptionRegs { esr: esr_el1, far, elr: trapped.elr, spsr: trapped.spsr },
        // VBAR_EL1[10:0] are RES0: the table is 2 KiB aligned.
        elr_el2: (host.vbar & !0x7ff).wrapping_add(offset),
        spsr_el2: el1_entry_pstate(trapped.spsr, host),
    })
}

/// The FSC of a synchronous external abort on a translation table walk at `level`: 0b0101LL
/// for levels 0..=3, 0b010011 for level -1 (FEAT_LPA2).
pub const fn fsc_sea_on_walk(level: Level) -> u32 {
    match level {
        -1 => 0b01_0011,
        l => 0b01_0100 | (l as u32 & 3),
    }
}

/// A synchronous external abort for the data or instruction abort that trapped to EL2.
///
/// ESR_EL1: EC = DABT/IABT from the current EL (host kernel) or a lower EL (host EL0); IL = 1
/// (the Arm ARM makes IL RES1 for instruction aborts and for data aborts with ISV = 0, which
/// is what this reports; an AArch64 trap has IL = 1 anyway); FSC = 0b010000, or, when stage 2
/// refused the host's own stage-1 walk (ESR_EL2.S1PTW), the walk's "synchronous external abort
/// on translation table walk" at the stage-1 level of the descriptor
/// ([`TrappedState::s1_walk_level`], [`fsc_sea_on_walk`]): what the host would see if that
/// memory answered its walk with an external abort. For data aborts WnR and CM are kept (they
/// describe the access, which the architecture reports for any data abort); FnV is kept, and
/// then FAR_EL1 is UNKNOWN (written as 0, so nothing about warden's view leaks). ISV, SAS,
/// SRT, S1PTW (RES0 at EL1) and the rest are 0.
pub fn inject_sea(trapped: &TrappedState, host: &HostEl1) -> Result<Injection, InjectError> {
    let class = trapped.esr.class();
    let (is_data, iss) = match class {
        ExceptionClass::DabtLow | ExceptionClass::DabtCur => (true, trapped.esr.iss()),
        ExceptionClass::IabtLow | ExceptionClass::IabtCur => (false, trapped.esr.iss()),
        other => return Err(InjectError::NotAnAbort(other)),
    };
    let from_el0 = source_of(trapped.spsr)? == Source::El0;
    let ec = match (is_data, from_el0) {
        (true, true) => ExceptionClass::DabtLow,
        (true, false) => ExceptionClass::DabtCur,
        (false, true) => ExceptionClass::IabtLow,
        (false, false) => ExceptionClass::IabtCur,
    };
    let on_walk = iss & dabt::S1PTW != 0;
    let mut new_iss = if on_walk {
        fsc_sea_on_walk(trapped.s1_walk_level.unwrap_or(0))
    } else {
        u32::from(FSC_SYNC_EXTERNAL)
    };
    if is_data {
        new_iss |= iss & (dabt::WNR | dabt::CM);
    }
    let far_valid = iss & dabt::FNV == 0;
    if !far_valid {
        new_iss |= dabt::FNV;
    }
    let esr = Esr::from_parts(ec, true, new_iss).0;
    let far = if far_valid { trapped.far } else { 0 };
    enter_el1(trapped, host, esr, Some(far))
}

/// An UNDEFINED instruction exception (EC 0x00) for the instruction that trapped, for traps
/// warden does not handle. IL is taken from the trap; ELR_EL1 is the trapped instruction.
pub fn inject_undefined(trapped: &TrappedState, host: &HostEl1) -> Result<Injection, InjectError> {
    let esr = trapped.esr.0 & ESR_IL;
    enter_el1(trapped, host, esr, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::esr::{DataAbortIss, FaultStatus};

    const VBAR: u64 = 0xffff_8000_1001_0800;
    const ALL_FEATURES: El1Features = El1Features { pan: true, ssbs: true, mte: true, nmi: true };

    fn host(sctlr: u64, features: El1Features) -> HostEl1 {
        HostEl1 { vbar: VBAR, sctlr, features, regime: El1Regime::default() }
    }

    /// `str x1, [x0]` at stage 2: translation fault L3, ISV, SAS=8, WnR.
    const DABT_WRITE: Esr = Esr(0x93c1_8047);
    /// Instruction fetch, translation fault L3.
    const IABT: Esr = Esr(0x8200_0007);

    fn trapped(esr: Esr, spsr: u64) -> TrappedState {
        TrappedState {
            esr,
            spsr,
            elr: 0xffff_8000_1234_5670,
            far: 0xffff_0000_dead_b000,
            s1_walk_level: None,
        }
    }

    #[test]
    fn data_abort_from_el1h() {
        // Interrupted kernel: EL1h, Z and C set, interrupts enabled, PAN clear, SSBS set.
        let old = spsr::Z | spsr::C | spsr::SSBS | spsr::M_EL1H;
        let sctlr_span1 = sctlr::SPAN;
        let inj = inject_sea(&trapped(DABT_WRITE, old), &host(sctlr_span1, ALL_FEATURES)).unwrap();
        // EC=0x25, IL, FSC=0x10, WnR kept, no ISV/SRT/SAS.
        assert_eq!(inj.el1.esr, 0x9600_0050);
        let iss = DataAbortIss((inj.el1.esr & 0x1ff_ffff) as u32);
        assert!(!iss.isv() && iss.write());
        assert_eq!(inj.el1.far, Some(0xffff_0000_dead_b000));
        assert_eq!(inj.el1.elr, 0xffff_8000_1234_5670);
        assert_eq!(inj.el1.spsr, old);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0a00);
        // NZCV kept; SPAN=1 keeps PAN clear; DSSBS=0 clears SSBS; MTE sets TCO; SPINTMASK=0
        // sets ALLINT; DAIF set; EL1h.
        assert_eq!(
            inj.spsr_el2,
            spsr::Z | spsr::C | spsr::TCO | spsr::ALLINT | spsr::DAIF | spsr::M_EL1H
        );
    }

    #[test]
    fn pan_follows_span() {
        let old = spsr::M_EL1H;
        let t = trapped(DABT_WRITE, old);
        // SPAN = 0: PAN set on entry.
        let inj = inject_sea(&t, &host(0, ALL_FEATURES)).unwrap();
        assert_ne!(inj.spsr_el2 & spsr::PAN, 0);
        // SPAN = 1: PAN unchanged (clear here, set if it was set).
        let inj = inject_sea(&t, &host(sctlr::SPAN, ALL_FEATURES)).unwrap();
        assert_eq!(inj.spsr_el2 & spsr::PAN, 0);
        let t = trapped(DABT_WRITE, old | spsr::PAN);
        let inj = inject_sea(&t, &host(sctlr::SPAN, ALL_FEATURES)).unwrap();
        assert_ne!(inj.spsr_el2 & spsr::PAN, 0);
        // Without FEAT_PAN there is no PSTATE.PAN, whatever SCTLR says.
        let none = El1Features::default();
        let inj = inject_sea(&trapped(DABT_WRITE, old), &host(0, none)).unwrap();
        assert_eq!(inj.spsr_el2, spsr::DAIF | spsr::M_EL1H);
    }

    #[test]
    fn ssbs_and_allint_come_from_sctlr() {
        let t = trapped(DABT_WRITE, spsr::M_EL1H | spsr::ALLINT);
        let inj =
            inject_sea(&t, &host(sctlr::SPAN | sctlr::DSSBS | sctlr::SPINTMASK, ALL_FEATURES))
                .unwrap();
        assert_ne!(inj.spsr_el2 & spsr::SSBS, 0);
        assert_eq!(inj.spsr_el2 & spsr::ALLINT, 0);
        let no_ssbs = El1Features { ssbs: false, ..ALL_FEATURES };
        let inj = inject_sea(&t, &host(sctlr::DSSBS, no_ssbs)).unwrap();
        assert_eq!(inj.spsr_el2 & spsr::SSBS, 0);
    }

    #[test]
    fn cleared_fields() {
        // Everything that exception entry zeroes: UAO, SS, IL, BTYPE; DIT is kept.
        let old =
            spsr::UAO | spsr::SS | spsr::IL | spsr::BTYPE | spsr::DIT | spsr::V | spsr::M_EL1H;
        let inj = inject_sea(&trapped(DABT_WRITE, old), &host(sctlr::SPAN, El1Features::default()))
            .unwrap();
        assert_eq!(inj.spsr_el2, spsr::DIT | spsr::V | spsr::DAIF | spsr::M_EL1H);
        assert_eq!(inj.el1.spsr, old);
    }

    #[test]
    fn data_abort_from_el1t_and_el0() {
        let h = host(sctlr::SPAN, El1Features::default());
        let inj = inject_sea(&trapped(DABT_WRITE, spsr::M_EL1T), &h).unwrap();
        assert_eq!(inj.elr_el2, VBAR);
        assert_eq!(inj.el1.esr >> 26, 0x25);
        assert_eq!(inj.spsr_el2 & spsr::M_MASK, spsr::M_EL1H);

        // Host user space (EL0t, interrupts unmasked): lower-EL vector, EC = DABT_LOW.
        let old = spsr::N | spsr::M_EL0T;
        let inj = inject_sea(&trapped(DABT_WRITE, old), &h).unwrap();
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0c00);
        assert_eq!(inj.el1.esr, 0x9200_0050);
        assert_eq!(inj.el1.spsr, old);
        assert_eq!(inj.spsr_el2, spsr::N | spsr::DAIF | spsr::M_EL1H);

        // A read keeps WnR clear; CM is kept (DC CIVAC to a forbidden page).
        let read_cm = Esr::from_parts(ExceptionClass::DabtLow, true, dabt::CM | dabt::WNR | 0x7);
        let inj = inject_sea(&trapped(read_cm, spsr::M_EL0T), &h).unwrap();
        assert_eq!(inj.el1.esr, 0x9200_0150);
        let read = Esr(0x9382_0006);
        let inj = inject_sea(&trapped(read, spsr::M_EL1H), &h).unwrap();
        assert_eq!(inj.el1.esr, 0x9600_0010);
    }

    #[test]
    fn instruction_abort_from_each_mode() {
        let h = host(sctlr::SPAN, El1Features::default());
        let cases = [
            (spsr::M_EL1H, 0x8600_0010u64, 0xffff_8000_1001_0a00u64),
            (spsr::M_EL1T, 0x8600_0010, 0xffff_8000_1001_0800),
            (spsr::M_EL0T, 0x8200_0010, 0xffff_8000_1001_0c00),
        ];
        for (mode, esr, vector) in cases {
            let inj = inject_sea(&trapped(IABT, mode), &h).unwrap();
            assert_eq!(inj.el1.esr, esr, "mode {mode:#x}");
            assert_eq!(inj.elr_el2, vector);
            assert_eq!(inj.el1.elr, 0xffff_8000_1234_5670);
            assert_eq!(inj.el1.far, Some(0xffff_0000_dead_b000));
            assert_eq!(inj.spsr_el2, spsr::DAIF | spsr::M_EL1H);
        }
    }

    /// Stage 2 refused the host's own stage-1 walk (S1PTW): the host sees a synchronous external
    /// abort *on translation table walk* at the stage-1 level of the descriptor, not a plain
    /// one, and not at ESR_EL2's (stage-2) level.
    #[test]
    fn abort_on_the_hosts_table_walk_reports_the_walk_fsc() {
        let h = host(sctlr::SPAN, El1Features::default());
        // Data abort from EL1 whose stage-1 walk hit a stage-2 translation fault at stage-2
        // level 3: ESR_EL2 0x9600_0087 (S1PTW, DFSC 0b000111).
        let dabt = Esr::from_parts(ExceptionClass::DabtLow, true, dabt::S1PTW | 0x07);
        for (level, fsc) in [(-1, 0x13), (0, 0x14), (1, 0x15), (2, 0x16), (3, 0x17)] {
            let t = TrappedState { s1_walk_level: Some(level), ..trapped(dabt, spsr::M_EL1H) };
            let inj = inject_sea(&t, &h).unwrap();
            assert_eq!(inj.el1.esr, 0x9600_0000 | fsc, "level {level}");
            assert_eq!(FaultStatus::from_bits(fsc as u8), FaultStatus::SyncExternalOnWalk(level));
        }
        // A hardware AF update (the walk's write) from EL0 keeps WnR; S1PTW itself is RES0 at
        // EL1 and not passed on.
        let write = Esr::from_parts(ExceptionClass::DabtLow, true, dabt::S1PTW | dabt::WNR | 0x0f);
        let t = TrappedState { s1_walk_level: Some(3), ..trapped(write, spsr::M_EL0T) };
        assert_eq!(inject_sea(&t, &h).unwrap().el1.esr, 0x9200_0057);
        // An instruction fetch whose walk faulted, level unknown: level 0.
        let iabt = Esr::from_parts(ExceptionClass::IabtLow, true, dabt::S1PTW | 0x06);
        let inj = inject_sea(&trapped(iabt, spsr::M_EL1H), &h).unwrap();
        assert_eq!(inj.el1.esr, 0x8600_0014);
        // Not a walk: the plain FSC, whatever level was passed.
        let t = TrappedState { s1_walk_level: Some(2), ..trapped(DABT_WRITE, spsr::M_EL1H) };
        assert_eq!(inject_sea(&t, &h).unwrap().el1.esr & 0x3f, 0x10);
    }

    #[test]
    fn far_not_valid_is_propagated_without_the_address() {
        let h = host(sctlr::SPAN, El1Features::default());
        let esr = Esr::from_parts(ExceptionClass::DabtLow, true, dabt::FNV | 0x10);
        let inj = inject_sea(&trapped(esr, spsr::M_EL1H), &h).unwrap();
        assert_eq!(inj.el1.esr, 0x9600_0410);
        assert_eq!(inj.el1.far, Some(0));
    }

    #[test]
    fn rejected_sources() {
        let h = host(0, ALL_FEATURES);
        // AArch32 EL0 (M = 0b10000 usr).
        assert_eq!(inject_sea(&trapped(DABT_WRITE, 0x10), &h), Err(InjectError::Aarch32Source));
        assert_eq!(inject_undefined(&trapped(Esr(0), 0x10), &h), Err(InjectError::Aarch32Source));
        // EL2h, EL3h and a reserved encoding cannot be a lower-EL source.
        for m in [0b1001u64, 0b1101, 0b0001] {
            assert_eq!(
                inject_sea(&trapped(DABT_WRITE, m), &h),
                Err(InjectError::InvalidSourceMode(m as u8))
            );
        }
        assert_eq!(
            inject_sea(&trapped(Esr(0x5a00_0000), spsr::M_EL1H), &h),
            Err(InjectError::NotAnAbort(ExceptionClass::Hvc64))
        );
    }

    #[test]
    fn undefined_instruction() {
        let h = host(sctlr::SPAN, El1Features::default());
        // Trapped MSR from EL1h (EC 0x18, IL=1).
        let sysreg = Esr::from_parts(ExceptionClass::SysReg, true, 0x30_c001);
        let inj = inject_undefined(&trapped(sysreg, spsr::M_EL1H | spsr::C), &h).unwrap();
        assert_eq!(inj.el1.esr, 0x0200_0000);
        assert_eq!(inj.el1.far, None);
        assert_eq!(inj.el1.elr, 0xffff_8000_1234_5670);
        assert_eq!(inj.el1.spsr, spsr::M_EL1H | spsr::C);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0a00);
        assert_eq!(inj.spsr_el2, spsr::C | spsr::DAIF | spsr::M_EL1H);
        // IL comes from the trap.
        let il16 = Esr::from_parts(ExceptionClass::Wfx, false, 0);
        let inj = inject_undefined(&trapped(il16, spsr::M_EL0T), &h).unwrap();
        assert_eq!(inj.el1.esr, 0);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0c00);
    }

    #[test]
    fn vbar_low_bits_are_ignored_and_features_decode() {
        let h = HostEl1 {
            vbar: 0x4000_07ff,
            sctlr: sctlr::SPAN,
            features: El1Features::default(),
            regime: El1Regime::default(),
        };
        let inj = inject_sea(&trapped(DABT_WRITE, spsr::M_EL1H), &h).unwrap();
        assert_eq!(inj.elr_el2, 0x4000_0200);
        let f = El1Features::from_id_regs(1 << 20, (1 << 4) | (2 << 8) | (1 << 36));
        assert_eq!(f, ALL_FEATURES);
        assert_eq!(El1Features::from_id_regs(0, 0), El1Features::default());
    }

    proptest::proptest! {
        /// Whatever the host's syndrome and PSTATE, injection never panics, and a delivered
        /// exception always lands on one of the three AArch64 sync vectors in EL1h with DAIF
        /// masked and with the interrupted PSTATE saved unchanged.
        #[test]
        fn any_trap_is_delivered_or_refused(
            esr in proptest::prelude::any::<u64>(),
            spsr_el2 in proptest::prelude::any::<u64>(),
            sctlr_el1 in proptest::prelude::any::<u64>(),
            vbar in proptest::prelude::any::<u64>(),
        ) {
            let t = TrappedState {
                esr: Esr(esr),
                spsr: spsr_el2,
                elr: 0x1000,
                far: 0x2000,
                s1_walk_level: Some(-1),
            };
            let h = HostEl1 {
                vbar,
                sctlr: sctlr_el1,
                features: ALL_FEATURES,
                regime: El1Regime::default(),
            };
            for inj in [inject_sea(&t, &h), inject_undefined(&t, &h)].into_iter().flatten() {
                let offset = inj.elr_el2.wrapping_sub(vbar & !0x7ff);
                proptest::prop_assert!([0, 0x200, 0x400].contains(&offset));
                proptest::prop_assert_eq!(inj.spsr_el2 & spsr::M_MASK, spsr::M_EL1H);
                proptest::prop_assert_eq!(inj.spsr_el2 & spsr::DAIF, spsr::DAIF);
                let cleared = spsr::SS | spsr::IL | spsr::BTYPE;
                proptest::prop_assert_eq!(inj.spsr_el2 & cleared, 0);
                proptest::prop_assert_eq!(inj.el1.spsr, spsr_el2);
                proptest::prop_assert_eq!(inj.el1.elr, 0x1000);
            }
        }
    }
}
