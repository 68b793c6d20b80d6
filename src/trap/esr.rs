//! ESR_EL2 decoding: exception class, instruction length, and the ISS of data and instruction
//! aborts, plus the faulting IPA from HPFAR_EL2.
//!
//! Field positions follow the Arm ARM (DDI 0487, "ESR_EL2"). Every decoder here is total: any
//! 64-bit value decodes to something (unknown encodings become `Other`), because the value
//! describes what the host did and must never make warden panic.

use core::fmt;

/// Exception class (ESR_ELx.EC, bits `[31:26]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (also what an UNDEFINED instruction reports).
    Unknown,
    /// 0x01: trapped WFI/WFE/WFIT/WFET.
    Wfx,
    /// 0x07: trapped SVE/SIMD/FP access.
    FpAccess,
    /// 0x0e: illegal execution state.
    IllegalState,
    /// 0x11: SVC from AArch32.
    Svc32,
    /// 0x12: HVC from AArch32.
    Hvc32,
    /// 0x13: trapped SMC from AArch32.
    Smc32,
    /// 0x15: SVC from AArch64.
    Svc64,
    /// 0x16: HVC from AArch64.
    Hvc64,
    /// 0x17: trapped SMC from AArch64.
    Smc64,
    /// 0x18: trapped MSR/MRS/system instruction.
    SysReg,
    /// 0x19: trapped SVE access.
    Sve,
    /// 0x1c: pointer authentication failure.
    PacFail,
    /// 0x20: instruction abort from a lower EL.
    IabtLow,
    /// 0x21: instruction abort from the same EL.
    IabtCur,
    /// 0x22: PC alignment fault.
    PcAlign,
    /// 0x24: data abort from a lower EL.
    DabtLow,
    /// 0x25: data abort from the same EL.
    DabtCur,
    /// 0x26: SP alignment fault.
    SpAlign,
    /// 0x2c: trapped floating-point exception (AArch64).
    Fp64,
    /// 0x2f: SError.
    SError,
    /// 0x30: breakpoint from a lower EL.
    BreakpointLow,
    /// 0x31: breakpoint from the same EL.
    BreakpointCur,
    /// 0x32: software step from a lower EL.
    SoftStepLow,
    /// 0x33: software step from the same EL.
    SoftStepCur,
    /// 0x34: watchpoint from a lower EL.
    WatchpointLow,
    /// 0x35: watchpoint from the same EL.
    WatchpointCur,
    /// 0x3c: BRK instruction (AArch64).
    Brk64,
    /// Any other value (6 bits).
    Other(u8),
}

impl ExceptionClass {
    /// Decodes the 6-bit EC value.
    #[inline(always)]
    pub const fn from_bits(ec: u8) -> Self {
        match ec & 0x3f {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x07 => Self::FpAccess,
            0x0e => Self::IllegalState,
            0x11 => Self::Svc32,
            0x12 => Self::Hvc32,
            0x13 => Self::Smc32,
            0x15 => Self::Svc64,
            0x16 => Self::Hvc64,
            0x17 => Self::Smc64,
            0x18 => Self::SysReg,
            0x19 => Self::Sve,
            0x1c => Self::PacFail,
            0x20 => Self::IabtLow,
            0x21 => Self::IabtCur,
            0x22 => Self::PcAlign,
            0x24 => Self::DabtLow,
            0x25 => Self::DabtCur,
            0x26 => Self::SpAlign,
            0x2c => Self::Fp64,
            0x2f => Self::SError,
            0x30 => Self::BreakpointLow,
            0x31 => Self::BreakpointCur,
            0x32 => Self::SoftStepLow,
            0x33 => Self::SoftStepCur,
            0x34 => Self::WatchpointLow,
            0x35 => Self::WatchpointCur,
            0x3c => Self::Brk64,
            other => Self::Other(other),
        }
    }

    /// The 6-bit EC value.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Unknown => 0x00,
            Self::Wfx => 0x01,
            Self::FpAccess => 0x07,
            Self::IllegalState => 0x0e,
            Self::Svc32 => 0x11,
            Self::Hvc32 => 0x12,
            Self::Smc32 => 0x13,
            Self::Svc64 => 0x15,
            Self::Hvc64 => 0x16,
            Self::Smc64 => 0x17,
            Self::SysReg => 0x18,
            Self::Sve => 0x19,
            Self::PacFail => 0x1c,
            Self::IabtLow => 0x20,
            Self::IabtCur => 0x21,
            Self::PcAlign => 0x22,
            Self::DabtLow => 0x24,
            Self::DabtCur => 0x25,
            Self::SpAlign => 0x26,
            Self::Fp64 => 0x2c,
            Self::SError => 0x2f,
            Self::BreakpointLow => 0x30,
            Self::BreakpointCur => 0x31,
            Self::SoftStepLow => 0x32,
            Self::SoftStepCur => 0x33,
            Self::WatchpointLow => 0x34,
            Self::WatchpointCur => 0x35,
            Self::Brk64 => 0x3c,
            Self::Other(v) => v & 0x3f,
        }
    }

    /// Short name used in log lines.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Wfx => "WFx",
            Self::FpAccess => "FP_ACCESS",
            Self::IllegalState => "ILLEGAL_STATE",
            Self::Svc32 => "SVC32",
            Self::Hvc32 => "HVC32",
            Self::Smc32 => "SMC32",
            Self::Svc64 => "SVC64",
            Self::Hvc64 => "HVC64",
            Self::Smc64 => "SMC64",
            Self::SysReg => "SYSREG",
            Self::Sve => "SVE",
            Self::PacFail => "PAC_FAIL",
            Self::IabtLow => "IABT_LOW",
            Self::IabtCur => "IABT_CUR",
            Self::PcAlign => "PC_ALIGN",
            Self::DabtLow => "DABT_LOW",
            Self::DabtCur => "DABT_CUR",
            Self::SpAlign => "SP_ALIGN",
            Self::Fp64 => "FP64",
            Self::SError => "SERROR",
            Self::BreakpointLow => "BKPT_LOW",
            Self::BreakpointCur => "BKPT_CUR",
            Self::SoftStepLow => "SSTEP_LOW",
            Self::SoftStepCur => "SSTEP_CUR",
            Self::WatchpointLow => "WPT_LOW",
            Self::WatchpointCur => "WPT_CUR",
            Self::Brk64 => "BRK64",
            Self::Other(_) => "EC",
        }
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(v) => write!(f, "EC_{v:#04x}"),
            known => f.write_str(known.name()),
        }
    }
}

/// Bit positions of the common ESR fields.
pub const ESR_EC_SHIFT: u32 = 26;
pub const ESR_IL: u64 = 1 << 25;
pub const ESR_ISS_MASK: u64 = (1 << 25) - 1;

/// A raw ESR_ELx value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Esr(pub u64);

impl Esr {
    /// Builds an ESR from its fields (ISS2 zero).
    pub const fn from_parts(ec: ExceptionClass, il32: bool, iss: u32) -> Self {
        let il = if il32 { ESR_IL } else { 0 };
        Esr(((ec.bits() as u64) << ESR_EC_SHIFT) | il | (iss as u64 & ESR_ISS_MASK))
    }

    #[inline(always)]
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_bits(((self.0 >> ESR_EC_SHIFT) & 0x3f) as u8)
    }

    /// IL: the trapped instruction was 32 bits long (RES1 for most classes on AArch64).
    pub const fn il32(self) -> bool {
        self.0 & ESR_IL != 0
    }

    /// ISS, bits `[24:0]`.
    pub const fn iss(self) -> u32 {
        (self.0 & ESR_ISS_MASK) as u32
    }

    /// ISS2, bits `[55:32]` (FEAT_LS64, FEAT_GCS, ...).
    pub const fn iss2(self) -> u32 {
        ((self.0 >> 32) & 0xff_ffff) as u32
    }

    /// The immediate of an HVC/SMC/SVC/BRK (`ISS[15:0]`).
    pub const fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The data-abort view of the ISS, if this is a data abort.
    pub const fn data_abort(self) -> Option<DataAbortIss> {
        match self.class() {
            ExceptionClass::DabtLow | ExceptionClass::DabtCur => Some(DataAbortIss(self.iss())),
            _ => None,
        }
    }

    /// The instruction-abort view of the ISS, if this is an instruction abort.
    pub const fn instruction_abort(self) -> Option<InstructionAbortIss> {
        match self.class() {
            ExceptionClass::IabtLow | ExceptionClass::IabtCur => {
                Some(InstructionAbortIss(self.iss()))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Esr {
    /// `EC il32 ISS` plus the abort decode when there is one; no addresses (see [`AbortReport`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ESR {:#x})", self.class(), self.0)?;
        if let Some(d) = self.data_abort() {
            write!(f, " {d}")?;
        } else if let Some(i) = self.instruction_abort() {
            write!(f, " {i}")?;
        }
        Ok(())
    }
}

/// Fault level of a translation-related fault: -1 (FEAT_LPA2) to 3.
pub type Level = i8;

/// Decoded DFSC/IFSC (`ISS[5:0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    AddressSize(Level),
    Translation(Level),
    AccessFlag(Level),
    Permission(Level),
    /// Synchronous external abort, not on a translation table walk.
    SyncExternal,
    /// Synchronous tag check fault (FEAT_MTE2).
    TagCheck,
    /// Synchronous external abort on a translation table walk.
    SyncExternalOnWalk(Level),
    /// Synchronous parity or ECC error, not on a walk.
    SyncParity,
    /// Synchronous parity or ECC error on a translation table walk.
    SyncParityOnWalk(Level),
    Alignment,
    /// Granule protection fault on a translation table walk (FEAT_RME).
    GranuleProtectionOnWalk(Level),
    /// Granule protection fault, not on a walk (FEAT_RME).
    GranuleProtection,
    TlbConflict,
    /// Unsupported atomic hardware update of a descriptor (FEAT_HAFDBS).
    UnsupportedAtomicUpdate,
    /// IMPLEMENTATION DEFINED: lockdown.
    ImpDefLockdown,
    /// IMPLEMENTATION DEFINED: unsupported exclusive or atomic access.
    ImpDefExclusive,
    Other(u8),
}

/// The synchronous external abort FSC (0b010000).
pub const FSC_SYNC_EXTERNAL: u8 = 0x10;

impl FaultStatus {
    pub const fn from_bits(fsc: u8) -> Self {
        let fsc = fsc & 0x3f;
        let level = (fsc & 3) as Level;
        match fsc {
            0x00..=0x03 => Self::AddressSize(level),
            0x29 => Self::AddressSize(-1),
            0x04..=0x07 => Self::Translation(level),
            0x2b => Self::Translation(-1),
            // 0b001000 is access flag level 0 (FEAT_LPA2 added level 0 to the old range).
            0x08..=0x0b => Self::AccessFlag(level),
            0x0c..=0x0f => Self::Permission(level),
            0x10 => Self::SyncExternal,
            0x11 => Self::TagCheck,
            0x13 => Self::SyncExternalOnWalk(-1),
            0x14..=0x17 => Self::SyncExternalOnWalk(level),
            0x18 => Self::SyncParity,
            0x1b => Self::SyncParityOnWalk(-1),
            0x1c..=0x1f => Self::SyncParityOnWalk(level),
            0x21 => Self::Alignment,
            0x23 => Self::GranuleProtectionOnWalk(-1),
            0x24..=0x27 => Self::GranuleProtectionOnWalk(level),
            0x28 => Self::GranuleProtection,
            0x30 => Self::TlbConflict,
            0x31 => Self::UnsupportedAtomicUpdate,
            0x34 => Self::ImpDefLockdown,
            0x35 => Self::ImpDefExclusive,
            other => Self::Other(other),
        }
    }

    /// The fault level, for the kinds that have one.
    pub const fn level(self) -> Option<Level> {
        match self {
            Self::AddressSize(l)
            | Self::Translation(l)
            | Self::AccessFlag(l)
            | Self::Permission(l)
            | Self::SyncExternalOnWalk(l)
            | Self::SyncParityOnWalk(l)
            | Self::GranuleProtectionOnWalk(l) => Some(l),
            _ => None,
        }
    }

    /// Whether HPFAR_EL2 holds the faulting IPA for a stage-2 fault of this kind (the Arm ARM
    /// defines HPFAR_EL2 for translation, access flag, permission and address size faults, and
    /// for any fault on a stage-1 walk, which [`DataAbortIss::s1ptw`] reports separately).
    pub const fn reports_ipa(self) -> bool {
        matches!(
            self,
            Self::AddressSize(_) | Self::Translation(_) | Self::AccessFlag(_) | Self::Permission(_)
        )
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AddressSize(l) => write!(f, "address size fault L{l}"),
            Self::Translation(l) => write!(f, "translation fault L{l}"),
            Self::AccessFlag(l) => write!(f, "access flag fault L{l}"),
            Self::Permission(l) => write!(f, "permission fault L{l}"),
            Self::SyncExternal => f.write_str("synchronous external abort"),
            Self::TagCheck => f.write_str("tag check fault"),
            Self::SyncExternalOnWalk(l) => write!(f, "synchronous external abort on walk L{l}"),
            Self::SyncParity => f.write_str("synchronous parity/ECC error"),
            Self::SyncParityOnWalk(l) => write!(f, "synchronous parity/ECC error on walk L{l}"),
            Self::Alignment => f.write_str("alignment fault"),
            Self::GranuleProtectionOnWalk(l) => write!(f, "granule protection fault on walk L{l}"),
            Self::GranuleProtection => f.write_str("granule protection fault"),
            Self::TlbConflict => f.write_str("TLB conflict abort"),
            Self::UnsupportedAtomicUpdate => f.write_str("unsupported atomic hardware update"),
            Self::ImpDefLockdown => f.write_str("IMPLEMENTATION DEFINED lockdown abort"),
            Self::ImpDefExclusive => f.write_str("IMPLEMENTATION DEFINED exclusive/atomic abort"),
            Self::Other(v) => write!(f, "fault status {v:#04x}"),
        }
    }
}

/// Data-abort ISS bits.
pub mod dabt {
    pub const ISV: u32 = 1 << 24;
    pub const SAS_SHIFT: u32 = 22;
    pub const SSE: u32 = 1 << 21;
    pub const SRT_SHIFT: u32 = 16;
    pub const SF: u32 = 1 << 15;
    pub const AR: u32 = 1 << 14;
    pub const VNCR: u32 = 1 << 13;
    pub const SET_SHIFT: u32 = 11;
    pub const FNV: u32 = 1 << 10;
    pub const EA: u32 = 1 << 9;
    pub const CM: u32 = 1 << 8;
    pub const S1PTW: u32 = 1 << 7;
    pub const WNR: u32 = 1 << 6;
    pub const FSC_MASK: u32 = 0x3f;
}

/// ISS of a data abort (EC 0x24/0x25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbortIss(pub u32);

impl DataAbortIss {
    /// ISV: SAS, SSE, SRT, SF and AR are valid.
    pub const fn isv(self) -> bool {
        self.0 & dabt::ISV != 0
    }
    /// Access size in bytes (1, 2, 4, 8), meaningful only with ISV.
    pub const fn access_size(self) -> u8 {
        1 << ((self.0 >> dabt::SAS_SHIFT) & 3)
    }
    /// SSE: the load sign-extends.
    pub const fn sign_extend(self) -> bool {
        self.0 & dabt::SSE != 0
    }
    /// SRT: the transfer register number (31 = XZR/WZR).
    pub const fn srt(self) -> u8 {
        ((self.0 >> dabt::SRT_SHIFT) & 0x1f) as u8
    }
    /// SF: the register is 64 bits wide.
    pub const fn sixty_four(self) -> bool {
        self.0 & dabt::SF != 0
    }
    /// AR: acquire/release semantics.
    pub const fn acquire_release(self) -> bool {
        self.0 & dabt::AR != 0
    }
    /// VNCR: the fault came from a VNCR_EL2-relative access (FEAT_NV2).
    pub const fn vncr(self) -> bool {
        self.0 & dabt::VNCR != 0
    }
    /// SET: synchronous error type (FEAT_RAS), valid for external aborts.
    pub const fn set(self) -> u8 {
        ((self.0 >> dabt::SET_SHIFT) & 3) as u8
    }
    /// FnV: FAR is not valid.
    pub const fn far_not_valid(self) -> bool {
        self.0 & dabt::FNV != 0
    }
    /// EA: external abort type (IMPLEMENTATION DEFINED classification).
    pub const fn external(self) -> bool {
        self.0 & dabt::EA != 0
    }
    /// CM: the abort came from a cache maintenance or address translation instruction.
    pub const fn cache_maintenance(self) -> bool {
        self.0 & dabt::CM != 0
    }
    /// S1PTW: stage-2 fault on a stage-1 translation table walk.
    pub const fn s1ptw(self) -> bool {
        self.0 & dabt::S1PTW != 0
    }
    /// WnR: the access was a write.
    pub const fn write(self) -> bool {
        self.0 & dabt::WNR != 0
    }
    /// DFSC, raw.
    pub const fn dfsc(self) -> u8 {
        (self.0 & dabt::FSC_MASK) as u8
    }
    pub const fn fault(self) -> FaultStatus {
        FaultStatus::from_bits(self.dfsc())
    }
}

impl DataAbortIss {
    /// `read 4B w3 sext acq/rel CM S1PTW`: the access, without the fault.
    fn fmt_access(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.write() { "write" } else { "read" })?;
        if self.isv() {
            write!(f, " {}B ", self.access_size())?;
            let width = if self.sixty_four() { 'x' } else { 'w' };
            match self.srt() {
                31 => write!(f, "{width}zr")?,
                n => write!(f, "{width}{n}")?,
            }
            if self.sign_extend() {
                f.write_str(" sext")?;
            }
            if self.acquire_release() {
                f.write_str(" acq/rel")?;
            }
        } else {
            f.write_str(" (no syndrome)")?;
        }
        if self.cache_maintenance() {
            f.write_str(" CM")?;
        }
        if self.s1ptw() {
            f.write_str(" S1PTW")?;
        }
        if self.external() {
            f.write_str(" EA")?;
        }
        if self.vncr() {
            f.write_str(" VNCR")?;
        }
        Ok(())
    }
}

impl fmt::Display for DataAbortIss {
    /// `read 4B w3` / `write 8B x1 acq/rel` / `write (no syndrome)`, flags, then `: <fault>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_access(f)?;
        if self.far_not_valid() {
            f.write_str(" FnV")?;
        }
        write!(f, ": {}", self.fault())
    }
}

/// ISS of an instruction abort (EC 0x20/0x21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionAbortIss(pub u32);

impl InstructionAbortIss {
    pub const fn set(self) -> u8 {
        ((self.0 >> dabt::SET_SHIFT) & 3) as u8
    }
    pub const fn far_not_valid(self) -> bool {
        self.0 & dabt::FNV != 0
    }
    pub const fn external(self) -> bool {
        self.0 & dabt::EA != 0
    }
    pub const fn s1ptw(self) -> bool {
        self.0 & dabt::S1PTW != 0
    }
    pub const fn ifsc(self) -> u8 {
        (self.0 & dabt::FSC_MASK) as u8
    }
    pub const fn fault(self) -> FaultStatus {
        FaultStatus::from_bits(self.ifsc())
    }
}

impl InstructionAbortIss {
    /// `fetch S1PTW EA`: the access, without the fault.
    fn fmt_access(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fetch")?;
        if self.s1ptw() {
            f.write_str(" S1PTW")?;
        }
        if self.external() {
            f.write_str(" EA")?;
        }
        Ok(())
    }
}

impl fmt::Display for InstructionAbortIss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_access(f)?;
        if self.far_not_valid() {
            f.write_str(" FnV")?;
        }
        write!(f, ": {}", self.fault())
    }
}

/// HPFAR_EL2.FIPA: bits `[47:4]` hold `IPA[55:12]` (bits `[47:44]` are RES0 without FEAT_D128).
const HPFAR_FIPA_SHIFT: u32 = 4;
const HPFAR_FIPA_MASK: u64 = (1 << 44) - 1;

/// The faulting IPA: the page from HPFAR_EL2.FIPA, the offset within it from `FAR_EL2[11:0]`.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    (((hpfar >> HPFAR_FIPA_SHIFT) & HPFAR_FIPA_MASK) << 12) | (far & 0xfff)
}

/// An abort with its addresses, for one log line:
/// `DABT_LOW write 4B x1 at VA 0xffff000012345678 IPA 0x40200678: translation fault L3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortReport {
    pub esr: Esr,
    pub far: u64,
    pub hpfar: u64,
}

impl AbortReport {
    /// The faulting IPA when the syndrome says HPFAR_EL2 holds it.
    pub const fn ipa(&self) -> Option<u64> {
        let (fault, s1ptw, fnv) = match (self.esr.data_abort(), self.esr.instruction_abort()) {
            (Some(d), _) => (d.fault(), d.s1ptw(), d.far_not_valid()),
            (None, Some(i)) => (i.fault(), i.s1ptw(), i.far_not_valid()),
            (None, None) => return None,
        };
        if (fault.reports_ipa() || s1ptw) && !fnv {
            Some(fault_ipa(self.hpfar, self.far))
        } else {
            None
        }
    }

    /// The faulting VA, unless the syndrome says FAR is not valid.
    pub const fn va(&self) -> Option<u64> {
        let fnv = match (self.esr.data_abort(), self.esr.instruction_abort()) {
            (Some(d), _) => d.far_not_valid(),
            (None, Some(i)) => i.far_not_valid(),
            (None, None) => return None,
        };
        if fnv { None } else { Some(self.far) }
    }
}

impl fmt::Display for AbortReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fault = if let Some(d) = self.esr.data_abort() {
            write!(f, "{} ", self.esr.class())?;
            d.fmt_access(f)?;
            d.fault()
        } else if let Some(i) = self.esr.instruction_abort() {
            write!(f, "{} ", self.esr.class())?;
            i.fmt_access(f)?;
            i.fault()
        } else {
            return write!(f, "{}", self.esr);
        };
        match self.va() {
            Some(va) => write!(f, " at VA {va:#x}")?,
            None => f.write_str(" at VA ?")?,
        }
        match self.ipa() {
            Some(ipa) => write!(f, " IPA {ipa:#x}")?,
            None => f.write_str(" IPA ?")?,
        }
        write!(f, ": {fault} (ESR {:#x})", self.esr.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn dabt(isv: bool, sas: u32, srt: u32, sf: bool, wnr: bool, dfsc: u32) -> Esr {
        let mut iss = dfsc;
        if isv {
            iss |= dabt::ISV | (sas << dabt::SAS_SHIFT) | (srt << dabt::SRT_SHIFT);
            if sf {
                iss |= dabt::SF;
            }
        }
        if wnr {
            iss |= dabt::WNR;
        }
        Esr::from_parts(ExceptionClass::DabtLow, true, iss)
    }

    #[test]
    fn exception_classes_round_trip() {
        for ec in 0u8..64 {
            assert_eq!(ExceptionClass::from_bits(ec).bits(), ec);
        }
        assert_eq!(ExceptionClass::from_bits(0x16), ExceptionClass::Hvc64);
        assert_eq!(ExceptionClass::from_bits(0x17), ExceptionClass::Smc64);
        assert_eq!(ExceptionClass::from_bits(0x24), ExceptionClass::DabtLow);
        assert_eq!(ExceptionClass::from_bits(0x20), ExceptionClass::IabtLow);
        assert_eq!(ExceptionClass::from_bits(0x2f), ExceptionClass::SError);
        assert_eq!(ExceptionClass::from_bits(0x3c), ExceptionClass::Brk64);
        assert_eq!(ExceptionClass::from_bits(0x3f), ExceptionClass::Other(0x3f));
        assert_eq!(format!("{}", ExceptionClass::Other(0x3f)), "EC_0x3f");
    }

    #[test]
    fn data_abort_fields_bit_by_bit() {
        // LDR w3, [x0] faulting at stage 2, translation fault level 2.
        let esr = dabt(true, 2, 3, false, false, 0x06);
        let d = esr.data_abort().unwrap();
        assert!(d.isv());
        assert_eq!(d.access_size(), 4);
        assert_eq!(d.srt(), 3);
        assert!(!d.sixty_four());
        assert!(!d.write());
        assert_eq!(d.fault(), FaultStatus::Translation(2));
        assert!(esr.instruction_abort().is_none());

        // Every single-bit flag decodes to its own accessor and nothing else.
        let all = [
            (dabt::SSE, "sse"),
            (dabt::AR, "ar"),
            (dabt::VNCR, "vncr"),
            (dabt::FNV, "fnv"),
            (dabt::EA, "ea"),
            (dabt::CM, "cm"),
            (dabt::S1PTW, "s1ptw"),
            (dabt::WNR, "wnr"),
            (dabt::SF, "sf"),
        ];
        for (bit, name) in all {
            let d = DataAbortIss(bit);
            let got = [
                (d.sign_extend(), "sse"),
                (d.acquire_release(), "ar"),
                (d.vncr(), "vncr"),
                (d.far_not_valid(), "fnv"),
                (d.external(), "ea"),
                (d.cache_maintenance(), "cm"),
                (d.s1ptw(), "s1ptw"),
                (d.write(), "wnr"),
                (d.sixty_four(), "sf"),
            ];
            for (value, which) in got {
                assert_eq!(value, which == name, "bit {name} read through {which}");
            }
        }
        for sas in 0..4 {
            assert_eq!(DataAbortIss(sas << dabt::SAS_SHIFT).access_size(), 1 << sas);
        }
        assert_eq!(DataAbortIss(3 << dabt::SET_SHIFT).set(), 3);
        assert_eq!(DataAbortIss(31 << dabt::SRT_SHIFT).srt(), 31);
    }

    #[test]
    fn literal_syndromes() {
        // QEMU, host `str x1, [x0]` into an unmapped IPA: DABT_LOW, IL, ISV, SAS=3 (8 bytes),
        // SRT=1, SF, WnR, DFSC=0b000111 (translation fault level 3).
        let esr = Esr(0x93c1_8047);
        assert_eq!(esr.class(), ExceptionClass::DabtLow);
        assert!(esr.il32());
        let d = esr.data_abort().unwrap();
        assert!(d.isv() && d.write() && d.sixty_four());
        assert_eq!((d.access_size(), d.srt()), (8, 1));
        assert_eq!(d.fault(), FaultStatus::Translation(3));

        // `ldr w2, [x5]` with a 4-byte access, translation fault L2: 0x93820006.
        let d = Esr(0x9382_0006).data_abort().unwrap();
        assert!(d.isv() && !d.write() && !d.sixty_four());
        assert_eq!((d.access_size(), d.srt(), d.fault()), (4, 2, FaultStatus::Translation(2)));

        // LDP/vector access: no syndrome (ISV=0), read, permission fault L3: 0x9200000f.
        let d = Esr(0x9200_000f).data_abort().unwrap();
        assert!(!d.isv() && !d.write());
        assert_eq!(d.fault(), FaultStatus::Permission(3));

        // Stage-2 fault during the host's stage-1 walk (S1PTW), translation fault L1:
        // 0x92000085 (S1PTW and DFSC=0b000101).
        let d = Esr(0x9200_0085).data_abort().unwrap();
        assert!(d.s1ptw());
        assert_eq!(d.fault(), FaultStatus::Translation(1));

        // Instruction fetch from a stage-2 unmapped page: IABT_LOW, IL, IFSC translation L3.
        let esr = Esr(0x8200_0007);
        assert_eq!(esr.class(), ExceptionClass::IabtLow);
        let i = esr.instruction_abort().unwrap();
        assert_eq!(i.fault(), FaultStatus::Translation(3));
        assert!(!i.s1ptw() && !i.far_not_valid());

        // HVC #0 from AArch64 EL1 and a trapped SMC #0.
        assert_eq!(Esr(0x5a00_0000).class(), ExceptionClass::Hvc64);
        assert_eq!(Esr(0x5e00_0000).class(), ExceptionClass::Smc64);
        assert_eq!(Esr(0x5a00_1234).imm16(), 0x1234);
    }

    #[test]
    fn fault_status_table() {
        let cases: &[(u8, FaultStatus)] = &[
            (0x00, FaultStatus::AddressSize(0)),
            (0x03, FaultStatus::AddressSize(3)),
            (0x29, FaultStatus::AddressSize(-1)),
            (0x04, FaultStatus::Translation(0)),
            (0x07, FaultStatus::Translation(3)),
            (0x2b, FaultStatus::Translation(-1)),
            (0x08, FaultStatus::AccessFlag(0)),
            (0x09, FaultStatus::AccessFlag(1)),
            (0x0b, FaultStatus::AccessFlag(3)),
            (0x0c, FaultStatus::Permission(0)),
            (0x0d, FaultStatus::Permission(1)),
            (0x0f, FaultStatus::Permission(3)),
            (0x10, FaultStatus::SyncExternal),
            (0x11, FaultStatus::TagCheck),
            (0x13, FaultStatus::SyncExternalOnWalk(-1)),
            (0x14, FaultStatus::SyncExternalOnWalk(0)),
            (0x17, FaultStatus::SyncExternalOnWalk(3)),
            (0x18, FaultStatus::SyncParity),
            (0x1b, FaultStatus::SyncParityOnWalk(-1)),
            (0x1d, FaultStatus::SyncParityOnWalk(1)),
            (0x21, FaultStatus::Alignment),
            (0x23, FaultStatus::GranuleProtectionOnWalk(-1)),
            (0x26, FaultStatus::GranuleProtectionOnWalk(2)),
            (0x28, FaultStatus::GranuleProtection),
            (0x30, FaultStatus::TlbConflict),
            (0x31, FaultStatus::UnsupportedAtomicUpdate),
            (0x34, FaultStatus::ImpDefLockdown),
            (0x35, FaultStatus::ImpDefExclusive),
            (0x12, FaultStatus::Other(0x12)),
            (0x3f, FaultStatus::Other(0x3f)),
        ];
        for &(fsc, want) in cases {
            assert_eq!(FaultStatus::from_bits(fsc), want, "fsc {fsc:#x}");
        }
        // Only the low 6 bits are the FSC.
        assert_eq!(FaultStatus::from_bits(0xc7), FaultStatus::Translation(3));
        assert_eq!(FaultStatus::Permission(2).level(), Some(2));
        assert_eq!(FaultStatus::Alignment.level(), None);
    }

    #[test]
    fn ipa_from_hpfar_and_far() {
        // IPA 0x4020_0678: HPFAR.FIPA = IPA >> 12 placed at bit 4.
        let hpfar = (0x4020_0678u64 >> 12) << 4;
        assert_eq!(fault_ipa(hpfar, 0xffff_0000_1234_5678), 0x4020_0678);
        // 52-bit IPA: FIPA bits reach bit 43 of HPFAR; NS (bit 63) and RES0 bits are ignored.
        let big = 0x000f_ffff_ffff_f000u64;
        assert_eq!(fault_ipa(((big >> 12) << 4) | (1 << 63) | 0xf, 0xabc), big | 0xabc);
        // 56-bit IPA (FEAT_D128): FIPA extends to bit 47.
        let huge = 0x00ff_ffff_ffff_f000u64;
        assert_eq!(fault_ipa((huge >> 12) << 4, 0), huge);
    }

    #[test]
    fn report_one_line() {
        let esr = dabt(true, 3, 1, true, true, 0x07);
        let report =
            AbortReport { esr, far: 0xffff_0000_1234_5678, hpfar: (0x4020_0000u64 >> 12) << 4 };
        assert_eq!(
            format!("{report}"),
            "DABT_LOW write 8B x1 at VA 0xffff000012345678 IPA 0x40200678: \
             translation fault L3 (ESR 0x93c18047)"
        );
        let esr = dabt(true, 2, 3, false, false, 0x06);
        let report = AbortReport { esr, far: 0xffff_8000_0000_0010, hpfar: 0x4020_0000 >> 8 };
        assert_eq!(
            format!("{report}"),
            "DABT_LOW read 4B w3 at VA 0xffff800000000010 IPA 0x40200010: \
             translation fault L2 (ESR 0x93830006)"
        );
        // External abort with FnV: neither address is trusted.
        let esr = Esr::from_parts(ExceptionClass::DabtLow, true, dabt::FNV | 0x10);
        let report = AbortReport { esr, far: 0x1234, hpfar: 0x5670 };
        assert_eq!(report.va(), None);
        assert_eq!(report.ipa(), None);
        assert!(format!("{report}").contains("at VA ? IPA ?: synchronous external abort"));
        // Instruction abort.
        let report = AbortReport { esr: Esr(0x8200_0007), far: 0x8000_0000, hpfar: 0x80_0000 };
        assert_eq!(
            format!("{report}"),
            "IABT_LOW fetch at VA 0x80000000 IPA 0x80000000: translation fault L3 \
             (ESR 0x82000007)"
        );
        // ISS Display of Esr itself.
        assert_eq!(
            format!("{}", Esr(0x93c1_8047)),
            "DABT_LOW (ESR 0x93c18047) write 8B x1: translation fault L3"
        );
        assert_eq!(format!("{}", Esr(0x5a00_0000)), "HVC64 (ESR 0x5a000000)");
    }

    proptest::proptest! {
        /// Every 64-bit value decodes and prints without panicking.
        #[test]
        fn any_syndrome_decodes(esr in proptest::prelude::any::<u64>(),
                                far in proptest::prelude::any::<u64>(),
                                hpfar in proptest::prelude::any::<u64>()) {
            let e = Esr(esr);
            proptest::prop_assert_eq!(e.class().bits() as u64, (esr >> 26) & 0x3f);
            let line = format!("{}", AbortReport { esr: e, far, hpfar });
            let class = format!("{}", e.class());
            proptest::prop_assert!(line.starts_with(&class));
            if let Some(ipa) = (AbortReport { esr: e, far, hpfar }).ipa() {
                proptest::prop_assert!(ipa < 1 << 56);
            }
        }
    }
}
