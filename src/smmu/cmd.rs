//! Command queue entries (Arm IHI 0070, chapter 4): 16 bytes, two little-endian u64 words,
//! opcode in bits `[7:0]` of the first.

use core::fmt;

pub const OP_CFGI_STE: u8 = 0x03;
/// CMD_CFGI_STE_RANGE; CMD_CFGI_ALL is this opcode with Range = 31.
pub const OP_CFGI_STE_RANGE: u8 = 0x04;
pub const OP_PREFETCH_CONFIG: u8 = 0x01;
pub const OP_PREFETCH_ADDR: u8 = 0x02;
pub const OP_CFGI_CD: u8 = 0x05;
pub const OP_CFGI_CD_ALL: u8 = 0x06;
pub const OP_TLBI_NH_ALL: u8 = 0x10;
pub const OP_TLBI_NH_ASID: u8 = 0x11;
pub const OP_TLBI_NH_VA: u8 = 0x12;
pub const OP_TLBI_NH_VAA: u8 = 0x13;
pub const OP_TLBI_EL2_ALL: u8 = 0x20;
pub const OP_TLBI_S12_VMALL: u8 = 0x28;
pub const OP_TLBI_S2_IPA: u8 = 0x2a;
pub const OP_TLBI_NSNH_ALL: u8 = 0x30;
pub const OP_CMD_SYNC: u8 = 0x46;

const SID_SHIFT: u32 = 32;
const VMID_SHIFT: u32 = 32;
const CFGI_RANGE_ALL: u64 = 31;
const TLBI_IPA_MASK: u64 = 0x000f_ffff_ffff_f000; // [51:12]
const TLBI_LEAF: u64 = 1;
/// CMD_SYNC.CS[13:12]: 0b00 = no completion signal; completion is seen as CONS passing it.
const SYNC_CS_NONE: u64 = 0 << 12;

/// The commands warden issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Invalidate cached copies of one STE (and its L1 descriptor).
    CfgiSte { sid: u32 },
    /// Invalidate the STEs of the aligned block of `2^(range + 1)` stream IDs containing `sid`.
    CfgiSteRange { sid: u32, range: u8 },
    /// Invalidate every cached configuration structure.
    CfgiAll,
    /// Every non-secure, non-hyp TLB entry (all VMIDs and ASIDs).
    TlbiNsnhAll,
    /// Every EL2 TLB entry (only on SMMUs with IDR0.HYP).
    TlbiEl2All,
    /// Every stage-1 and stage-2 entry of a VMID.
    TlbiS12Vmall { vmid: u16 },
    /// Stage-2 entries for one IPA page of a VMID; `leaf` = only last-level entries.
    TlbiS2Ipa { vmid: u16, ipa: u64, leaf: bool },
    /// Completes once every earlier command has completed (CS = none: poll CONS).
    Sync,
}

impl Command {
    pub fn encode(&self) -> [u64; 2] {
        match *self {
            Command::CfgiSte { sid } => {
                [u64::from(OP_CFGI_STE) | (u64::from(sid) << SID_SHIFT), TLBI_LEAF]
            }
            Command::CfgiSteRange { sid, range } => [
                u64::from(OP_CFGI_STE_RANGE) | (u64::from(sid) << SID_SHIFT),
                u64::from(range) & 0x1f,
            ],
            Command::CfgiAll => [u64::from(OP_CFGI_STE_RANGE), CFGI_RANGE_ALL],
            Command::TlbiNsnhAll => [u64::from(OP_TLBI_NSNH_ALL), 0],
            Command::TlbiEl2All => [u64::from(OP_TLBI_EL2_ALL), 0],
            Command::TlbiS12Vmall { vmid } => {
                [u64::from(OP_TLBI_S12_VMALL) | (u64::from(vmid) << VMID_SHIFT), 0]
            }
            Command::TlbiS2Ipa { vmid, ipa, leaf } => [
                u64::from(OP_TLBI_S2_IPA) | (u64::from(vmid) << VMID_SHIFT),
                (ipa & TLBI_IPA_MASK) | if leaf { TLBI_LEAF } else { 0 },
            ],
            Command::Sync => [u64::from(OP_CMD_SYNC) | SYNC_CS_NONE, 0],
        }
    }
}

/// The name of a command opcode, for error messages.
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        0x01 => "CMD_PREFETCH_CONFIG",
        0x02 => "CMD_PREFETCH_ADDR",
        OP_CFGI_STE => "CMD_CFGI_STE",
        OP_CFGI_STE_RANGE => "CMD_CFGI_STE_RANGE",
        0x05 => "CMD_CFGI_CD",
        0x06 => "CMD_CFGI_CD_ALL",
        0x10 => "CMD_TLBI_NH_ALL",
        0x11 => "CMD_TLBI_NH_ASID",
        0x12 => "CMD_TLBI_NH_VA",
        0x13 => "CMD_TLBI_NH_VAA",
        OP_TLBI_EL2_ALL => "CMD_TLBI_EL2_ALL",
        OP_TLBI_S12_VMALL => "CMD_TLBI_S12_VMALL",
        OP_TLBI_S2_IPA => "CMD_TLBI_S2_IPA",
        OP_TLBI_NSNH_ALL => "CMD_TLBI_NSNH_ALL",
        OP_CMD_SYNC => "CMD_SYNC",
        _ => "unknown command",
    }
}

/// CMDQ_CONS.ERR codes.
pub const CERROR_NONE: u8 = 0;
pub const CERROR_ILL: u8 = 1;
pub const CERROR_ABT: u8 = 2;

/// A CMDQ_CONS.ERR reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandErrorCode(pub u8);

impl fmt::Display for CommandErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => write!(f, "CERROR_NONE"),
            1 => write!(f, "CERROR_ILL (illegal command)"),
            2 => write!(f, "CERROR_ABT (abort on command fetch)"),
            3 => write!(f, "CERROR_ATC_INV_SYNC"),
            c => write!(f, "error code {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(Command::CfgiSte { sid: 0x18 }.encode(), [0x18_0000_0003, 1]);
        assert_eq!(Command::CfgiSteRange { sid: 0x100, range: 7 }.encode(), [0x100_0000_0004, 7]);
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
        assert_eq!(Command::TlbiEl2All.encode(), [0x20, 0]);
        assert_eq!(Command::TlbiS12Vmall { vmid: 1 }.encode(), [0x1_0000_0028, 0]);
        assert_eq!(
            Command::TlbiS2Ipa { vmid: 0xabcd, ipa: 0xfff0_4020_0fff, leaf: false }.encode(),
            [0xabcd_0000_002a, 0xfff0_4020_0000]
        );
        assert_eq!(
            Command::TlbiS2Ipa { vmid: 1, ipa: 0x4000_0000, leaf: true }.encode()[1],
            0x4000_0001
        );
        assert_eq!(Command::Sync.encode(), [0x46, 0], "CS = none, no MSI");
    }

    #[test]
    fn names() {
        assert_eq!(opcode_name(0x2a), "CMD_TLBI_S2_IPA");
        assert_eq!(opcode_name(0xee), "unknown command");
        assert_eq!(alloc::format!("{}", CommandErrorCode(1)), "CERROR_ILL (illegal command)");
    }
}
