//! The host's command queue: decoding and validating each host command, the real commands
//! warden issues in its place, and the bounded consumer that copies commands out of host
//! memory (once each) and advances CMDQ_CONS.
//!
//! Validation (IHI 0070, 4.1.3 and 4.1.5): reserved opcodes, commands for features this SMMU
//! does not advertise (stage 2, HYP, ATS, PRI, stall, VMS, Secure/EL3), SSec = 1, CMD_SYNC
//! with CS = 0b11, and non-zero RES0 bits are CERROR_ILL, which stops the queue with
//! CONS.RD at the command, CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR toggled. Two fields are
//! deliberately not checked: the VMID of CMD_TLBI_NH_* (RES0 without stage 2, "not required
//! to be checked"; warden substitutes the host VMID anyway) and the w1 of CMD_PREFETCH_ADDR
//! (a hint warden drops). A fetch from outside host memory is CERROR_ABT.

use crate::mm::MemRange;
use crate::smmu::cmd::*;
use crate::smmu::regs::IDR0_ASID16;

use super::GuestMemory;
use super::regs::{Advertised, RegisterFile};

/// Bytes per command.
pub const CMD_BYTES: u64 = 16;

/// How a CMD_SYNC signals completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSignal {
    /// SIG_NONE, and SIG_SEV (no SEV on this SMMU: equivalent to none).
    None,
    /// SIG_IRQ with MSIAddress 0: the wired CMD_SYNC interrupt.
    Irq,
    /// SIG_IRQ with an MSIAddress: on completion the 32-bit MSIData is written there (Linux
    /// points it at the CMD_SYNC's own slot with data 0 and waits for the slot's first word to
    /// turn 0). Written only to host memory warden may touch; otherwise GERROR.MSI_CMDQ_ABT_ERR.
    Msi { address: u64, data: u32 },
}

/// A validated host command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCommand {
    Prefetch {
        sid: u32,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// The aligned block of `2^(range + 1)` stream IDs around `sid` (range 31: all).
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    TlbiNhAll,
    TlbiNhAsid {
        asid: u16,
    },
    TlbiNhVa {
        asid: u16,
        addr: u64,
        leaf: bool,
    },
    TlbiNhVaa {
        addr: u64,
        leaf: bool,
    },
    TlbiNsnhAll,
    Sync(SyncSignal),
}

/// Why a command is CERROR_ILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Illegal {
    /// A reserved opcode, or one for a feature this SMMU does not have.
    Opcode(u8),
    /// SSec = 1 on the Non-secure queue.
    SecureStream,
    /// Non-zero RES0 bits (the offending bits of words 0 and 1).
    Reserved([u64; 2]),
    /// CMD_SYNC with CS = 0b11.
    SyncSignal,
}

impl core::fmt::Display for Illegal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Illegal::Opcode(op) => write!(f, "{} ({op:#04x}) is not supported", opcode_name(*op)),
            Illegal::SecureStream => write!(f, "SSec = 1 on the Non-secure queue"),
            Illegal::Reserved([a, b]) => write!(f, "RES0 bits set: {a:#x} {b:#x}"),
            Illegal::SyncSignal => write!(f, "CMD_SYNC CS = 0b11 is reserved"),
        }
    }
}

const OP: u64 = 0xff;
const SSEC: u64 = 1 << 10;
const SSV: u64 = 1 << 11;
const SSID: u64 = 0xf_ffff << 12;
const SID: u64 = 0xffff_ffff << 32;
const LEAF: u64 = 1;
const CFGI_RANGE: u64 = 0x1f;
const TLBI_VMID: u64 = 0xffff << 32;
const TLBI_ASID_SHIFT: u32 = 48;
const TLBI_ASID: u64 = 0xffff << TLBI_ASID_SHIFT;
const TLBI_VA: u64 = !0xfff;
const SYNC_CS_SHIFT: u32 = 12;
const SYNC_CS: u64 = 3 << SYNC_CS_SHIFT;
const SYNC_MSH: u64 = 3 << 22;
const SYNC_MSIATTR: u64 = 0xf << 24;
const SYNC_MSIDATA: u64 = 0xffff_ffff << 32;
const SYNC_MSIADDR: u64 = 0x00ff_ffff_ffff_fffc; // [55:2]

fn check(words: [u64; 2], allowed0: u64, allowed1: u64) -> Result<(), Illegal> {
    let extra = [words[0] & !allowed0, words[1] & !allowed1];
    if extra != [0, 0] {
        return Err(Illegal::Reserved(extra));
    }
    if words[0] & SSEC != 0 {
        return Err(Illegal::SecureStream);
    }
    Ok(())
}

fn sid(w0: u64) -> u32 {
    (w0 >> 32) as u32
}

/// Decodes and validates one host command.
pub fn decode(words: [u64; 2], adv: &Advertised) -> Result<HostCommand, Illegal> {
    let [w0, w1] = words;
    let op = (w0 & OP) as u8;
    // With 8-bit ASIDs the upper byte of an ASID field is RES0.
    let asid_field =
        if adv.idr0() & IDR0_ASID16 != 0 { TLBI_ASID } else { 0xff << TLBI_ASID_SHIFT };
    let asid = ((w0 >> TLBI_ASID_SHIFT) & 0xffff) as u16;
    match op {
        OP_PREFETCH_CONFIG => {
            check(words, OP | SSEC | SSV | SSID | SID, 0)?;
            Ok(HostCommand::Prefetch { sid: sid(w0) })
        }
        OP_PREFETCH_ADDR => {
            check(words, OP | SSEC | SSV | SSID | SID, u64::MAX)?;
            Ok(HostCommand::Prefetch { sid: sid(w0) })
        }
        OP_CFGI_STE => {
            check(words, OP | SSEC | SID, LEAF)?;
            Ok(HostCommand::CfgiSte { sid: sid(w0), leaf: w1 & LEAF != 0 })
        }
        OP_CFGI_STE_RANGE => {
            check(words, OP | SSEC | SID, CFGI_RANGE)?;
            Ok(HostCommand::CfgiSteRange { sid: sid(w0), range: (w1 & CFGI_RANGE) as u8 })
        }
        OP_CFGI_CD => {
            check(words, OP | SSEC | SSID | SID, LEAF)?;
            Ok(HostCommand::CfgiCd {
                sid: sid(w0),
                ssid: ((w0 & SSID) >> 12) as u32,
                leaf: w1 & LEAF != 0,
            })
        }
        OP_CFGI_CD_ALL => {
            check(words, OP | SSEC | SID, 0)?;
            Ok(HostCommand::CfgiCdAll { sid: sid(w0) })
        }
        OP_TLBI_NH_ALL => {
            check(words, OP | TLBI_VMID, 0)?;
            Ok(HostCommand::TlbiNhAll)
        }
        OP_TLBI_NH_ASID => {
            check(words, OP | TLBI_VMID | asid_field, 0)?;
            Ok(HostCommand::TlbiNhAsid { asid })
        }
        // No range invalidation (IDR3.RIL = 0): NUM, SCALE, TG, TTL are RES0.
        OP_TLBI_NH_VA => {
            check(words, OP | TLBI_VMID | asid_field, LEAF | TLBI_VA)?;
            Ok(HostCommand::TlbiNhVa { asid, addr: w1 & TLBI_VA, leaf: w1 & LEAF != 0 })
        }
        OP_TLBI_NH_VAA => {
            check(words, OP | TLBI_VMID, LEAF | TLBI_VA)?;
            Ok(HostCommand::TlbiNhVaa { addr: w1 & TLBI_VA, leaf: w1 & LEAF != 0 })
        }
        OP_TLBI_NSNH_ALL => {
            check(words, OP, 0)?;
            Ok(HostCommand::TlbiNsnhAll)
        }
        OP_CMD_SYNC => {
            check(words, OP | SYNC_CS | SYNC_MSH | SYNC_MSIATTR | SYNC_MSIDATA, SYNC_MSIADDR)?;
            match (w0 & SYNC_CS) >> SYNC_CS_SHIFT {
                0b00 | 0b10 => Ok(HostCommand::Sync(SyncSignal::None)),
                0b01 => Ok(HostCommand::Sync(match w1 & SYNC_MSIADDR {
                    0 => SyncSignal::Irq,
                    address => SyncSignal::Msi { address, data: (w0 >> 32) as u32 },
                })),
                _ => Err(Illegal::SyncSignal),
            }
        }
        // Everything else: reserved opcodes; CFGI_VMS_PIDM (no VMS); TLBI_EL2_*/EL3_* (no HYP,
        // Non-secure queue); TLBI_S12_VMALL/S2_IPA (no stage 2); ATC_INV/PRI_RESP (no ATS, no
        // PRI); RESUME/STALL_TERM (no stall); Secure and DPT commands; IMPLEMENTATION DEFINED.
        _ => Err(Illegal::Opcode(op)),
    }
}

/// The commands warden issues to the real SMMU on the host's behalf (the host's VMID, never
/// the host's own VMID field, selects the host's TLB entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealCommand {
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        addr: u64,
        leaf: bool,
    },
    TlbiNhVaa {
        vmid: u16,
        addr: u64,
        leaf: bool,
    },
    /// Every stage-1 and stage-2 entry of a VMID (the host's TLBI_NSNH_ALL, VMID retirement).
    TlbiS12Vmall {
        vmid: u16,
    },
}

impl RealCommand {
    /// The two command words.
    pub fn encode(&self) -> [u64; 2] {
        let vmid = |v: u16| u64::from(v) << 32;
        let asid = |a: u16| u64::from(a) << TLBI_ASID_SHIFT;
        match *self {
            RealCommand::CfgiCd { sid, ssid, leaf } => [
                u64::from(OP_CFGI_CD) | ((u64::from(ssid) << 12) & SSID) | (u64::from(sid) << 32),
                u64::from(leaf),
            ],
            RealCommand::CfgiCdAll { sid } => {
                [u64::from(OP_CFGI_CD_ALL) | (u64::from(sid) << 32), 0]
            }
            RealCommand::TlbiNhAll { vmid: v } => [u64::from(OP_TLBI_NH_ALL) | vmid(v), 0],
            RealCommand::TlbiNhAsid { vmid: v, asid: a } => {
                [u64::from(OP_TLBI_NH_ASID) | vmid(v) | asid(a), 0]
            }
            RealCommand::TlbiNhVa { vmid: v, asid: a, addr, leaf } => {
                [u64::from(OP_TLBI_NH_VA) | vmid(v) | asid(a), (addr & TLBI_VA) | u64::from(leaf)]
            }
            RealCommand::TlbiNhVaa { vmid: v, addr, leaf } => {
                [u64::from(OP_TLBI_NH_VAA) | vmid(v), (addr & TLBI_VA) | u64::from(leaf)]
            }
            RealCommand::TlbiS12Vmall { vmid: v } => [u64::from(OP_TLBI_S12_VMALL) | vmid(v), 0],
        }
    }
}

/// What the handler did with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Consumed: CONS moves past it.
    Done,
    /// Not complete (the real SMMU did not finish): CONS stays at it; retried on the next trap.
    Retry,
}

/// Why consumption stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// CONS reached PROD.
    Empty,
    /// The per-call budget ran out; the rest waits for the next trap.
    Budget,
    /// CMDQEN = 0.
    Disabled,
    /// A command error is active (GERROR.CMDQ_ERR != GERRORN.CMDQ_ERR).
    ErrorActive,
    /// This call raised a command error with this CONS.ERR code.
    Error { code: u8, illegal: Option<Illegal> },
    /// The handler asked to retry the command at CONS later.
    Retry,
}

/// The result of one consumer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub commands: u32,
    pub stop: Stop,
    /// GERROR changed with GERROR_IRQEN set.
    pub gerror_irq: bool,
}

/// What owns the register file the consumer works on: the register file itself, or the
/// virtual SMMU around it, which its command handler needs whole (so the consumer borrows the
/// registers only between commands and never moves them out).
pub trait CommandQueue {
    fn registers(&mut self) -> &mut RegisterFile;
}

impl CommandQueue for RegisterFile {
    fn registers(&mut self) -> &mut RegisterFile {
        self
    }
}

/// Consumes at most `budget` commands: each is read once from host memory (the whole queue
/// must be host memory), decoded, handed to `handle`, and consumed. A PROD that claims more
/// entries than the queue holds is CERROR_ILL at CONS (no command is trusted then).
pub fn consume<Q, M, H>(queue_owner: &mut Q, mem: &mut M, budget: u32, mut handle: H) -> Consumed
where
    Q: CommandQueue + ?Sized,
    M: GuestMemory + ?Sized,
    H: FnMut(&mut Q, &mut M, HostCommand) -> Outcome,
{
    let mut done = Consumed { commands: 0, stop: Stop::Empty, gerror_irq: false };
    let regs = queue_owner.registers();
    if !regs.cmdq_enabled() {
        done.stop = Stop::Disabled;
        return done;
    }
    if regs.cmdq_error_active() {
        done.stop = Stop::ErrorActive;
        return done;
    }
    let adv = *regs.advertised();
    let (shape, base) = regs.cmdq_geometry();
    let prod = shape.pointer(regs.cmdq_prod());
    let mut cons = shape.pointer(regs.cmdq_cons());
    let fail = |regs: &mut RegisterFile, code: u8, illegal: Option<Illegal>| {
        let irq = regs.raise_cmdq_error(code);
        (Stop::Error { code, illegal }, irq)
    };
    if shape.is_empty(prod, cons) {
        return done;
    }
    if shape.used(prod, cons) > shape.entries() {
        (done.stop, done.gerror_irq) = fail(regs, CERROR_ILL, None);
        return done;
    }
    let queue = MemRange::from_base_size(base, u64::from(shape.entries()) * CMD_BYTES);
    if !queue.is_some_and(|q| mem.is_host_owned(q)) {
        (done.stop, done.gerror_irq) = fail(regs, CERROR_ABT, None);
        return done;
    }
    while done.commands < budget {
        if shape.is_empty(prod, cons) {
            done.stop = Stop::Empty;
            return done;
        }
        let slot = base + u64::from(shape.index(cons)) * CMD_BYTES;
        let Ok(words) = mem.read_words(slot) else {
            (done.stop, done.gerror_irq) = fail(queue_owner.registers(), CERROR_ABT, None);
            return done;
        };
        let cmd = match decode(words, &adv) {
            Ok(cmd) => cmd,
            Err(illegal) => {
                (done.stop, done.gerror_irq) =
                    fail(queue_owner.registers(), CERROR_ILL, Some(illegal));
                return done;
            }
        };
        match handle(queue_owner, mem, cmd) {
            Outcome::Done => {
                cons = shape.next(cons);
                queue_owner.registers().set_cmdq_cons(cons);
                done.commands += 1;
            }
            Outcome::Retry => {
                done.stop = Stop::Retry;
                return done;
            }
        }
    }
    done.stop = if shape.is_empty(prod, cons) { Stop::Empty } else { Stop::Budget };
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::*;
    use crate::smmu::virt::fake::FakeMemory;
    use alloc::vec::Vec;

    fn adv() -> Advertised {
        Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 }
    }

    fn ill(words: [u64; 2]) -> bool {
        decode(words, &adv()).is_err()
    }

    #[test]
    fn decode_every_supported_opcode() {
        let a = adv();
        let d = |w0, w1| decode([w0, w1], &a);
        assert_eq!(d(0x18_0000_0001, 0), Ok(HostCommand::Prefetch { sid: 0x18 }));
        assert_eq!(d(0x18_0000_0002, 0xffff_f01f), Ok(HostCommand::Prefetch { sid: 0x18 }));
        assert_eq!(d(0x18_0000_0003, 1), Ok(HostCommand::CfgiSte { sid: 0x18, leaf: true }));
        assert_eq!(d(0x100_0000_0004, 7), Ok(HostCommand::CfgiSteRange { sid: 0x100, range: 7 }));
        assert_eq!(d(0x04, 31), Ok(HostCommand::CfgiSteRange { sid: 0, range: 31 }), "CFGI_ALL");
        assert_eq!(
            d(0x18_0000_5005, 1),
            Ok(HostCommand::CfgiCd { sid: 0x18, ssid: 5, leaf: true })
        );
        assert_eq!(d(0x18_0000_0006, 0), Ok(HostCommand::CfgiCdAll { sid: 0x18 }));
        assert_eq!(d(0x10, 0), Ok(HostCommand::TlbiNhAll));
        assert_eq!(d(0x1234_0000_0000_0011, 0), Ok(HostCommand::TlbiNhAsid { asid: 0x1234 }));
        assert_eq!(
            d(0x0042_0000_0000_0012, 0xffff_0000_1234_5001),
            Ok(HostCommand::TlbiNhVa { asid: 0x42, addr: 0xffff_0000_1234_5000, leaf: true })
        );
        assert_eq!(d(0x13, 0x5000), Ok(HostCommand::TlbiNhVaa { addr: 0x5000, leaf: false }));
        assert_eq!(d(0x30, 0), Ok(HostCommand::TlbiNsnhAll));
        assert_eq!(d(0x46, 0), Ok(HostCommand::Sync(SyncSignal::None)));
        assert_eq!(d(0x46 | (1 << 12), 0), Ok(HostCommand::Sync(SyncSignal::Irq)));
        // Linux without MSI polling: CS = SEV, MSH = inner, MSIATTR = OIWB.
        assert_eq!(
            d(0x46 | (2 << 12) | (3 << 22) | (0xf << 24), 0),
            Ok(HostCommand::Sync(SyncSignal::None))
        );
        // Linux with MSI polling: CS = SIG_IRQ with MSIADDR (the sync's own slot) and MSIDATA.
        assert_eq!(
            d(0x46 | (1 << 12) | (0xabcd << 32), 0x4000_1234),
            Ok(HostCommand::Sync(SyncSignal::Msi { address: 0x4000_1234, data: 0xabcd }))
        );
        // The VMID of TLBI_NH_* is not checked (RES0 without stage 2; replaced anyway).
        assert_eq!(d(0x7_0000_0010, 0), Ok(HostCommand::TlbiNhAll));
    }

    #[test]
    fn unsupported_and_reserved_opcodes_are_illegal() {
        let supported = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x30, 0x46];
        for op in 0..=0xffu64 {
            let r = decode([op, 0], &adv());
            if supported.contains(&(op as u8)) {
                assert!(r.is_ok(), "{op:#x}");
            } else {
                assert_eq!(r, Err(Illegal::Opcode(op as u8)), "{op:#x}");
            }
        }
    }

    #[test]
    fn reserved_fields_and_ssec_are_illegal() {
        assert_eq!(decode([0x3 | (1 << 10), 0], &adv()), Err(Illegal::SecureStream));
        assert_eq!(decode([0x5 | (1 << 10), 0], &adv()), Err(Illegal::SecureStream));
        assert_eq!(decode([0x3, 2], &adv()), Err(Illegal::Reserved([0, 2])));
        assert!(ill([0x3 | (1 << 11), 0]), "SSV on CFGI_STE");
        assert!(ill([0x3 | (1 << 12), 0]), "SSID on CFGI_STE");
        assert!(ill([0x4, 0x20]), "range beyond 5 bits");
        assert!(ill([0x6 | (1 << 12), 0]), "SSID on CFGI_CD_ALL");
        assert!(ill([0x6, 1]), "leaf on CFGI_CD_ALL");
        assert!(ill([0x10 | (1 << 48), 0]), "ASID on NH_ALL");
        assert!(ill([0x11, 1]));
        assert!(ill([0x12 | (1 << 12), 0]), "NUM without RIL");
        assert!(ill([0x12 | (1 << 20), 0]), "SCALE without RIL");
        assert!(ill([0x12, 1 << 8]), "TTL without RIL");
        assert!(ill([0x12, 1 << 10]), "TG without RIL");
        assert!(ill([0x13 | (1 << 48), 0]), "ASID on NH_VAA");
        assert!(ill([0x30 | (1 << 32), 0]), "VMID on NSNH_ALL");
        assert!(ill([0x01, 1]), "w1 of PREFETCH_CONFIG");
        assert_eq!(decode([0x46 | (3 << 12), 0], &adv()), Err(Illegal::SyncSignal));
        assert!(ill([0x46 | (1 << 14), 0]));
        assert!(ill([0x46, 1]), "MSIADDR[1:0]");
        assert!(ill([0x46, 1 << 56]), "MSIADDR above 55");
        // 8-bit ASIDs: the upper byte is RES0.
        let a8 = Advertised { asid16: false, ..adv() };
        assert_eq!(
            decode([0x42_0000_0000_0011, 0], &a8),
            Ok(HostCommand::TlbiNhAsid { asid: 0x42 })
        );
        assert!(decode([0x142_0000_0000_0011, 0], &a8).is_err());
        assert!(decode([0x142_0000_0000_0012, 0], &a8).is_err());
    }

    #[test]
    fn real_command_encodings() {
        assert_eq!(
            RealCommand::CfgiCd { sid: 0x18, ssid: 0, leaf: true }.encode(),
            [0x18_0000_0005, 1]
        );
        assert_eq!(RealCommand::CfgiCdAll { sid: 0x18 }.encode(), [0x18_0000_0006, 0]);
        assert_eq!(RealCommand::TlbiNhAll { vmid: 1 }.encode(), [0x1_0000_0010, 0]);
        assert_eq!(
            RealCommand::TlbiNhAsid { vmid: 1, asid: 0x1234 }.encode(),
            [0x1234_0001_0000_0011, 0]
        );
        assert_eq!(
            RealCommand::TlbiNhVa { vmid: 1, asid: 2, addr: 0x1234_5fff, leaf: true }.encode(),
            [0x0002_0001_0000_0012, 0x1234_5001]
        );
        assert_eq!(
            RealCommand::TlbiNhVaa { vmid: 3, addr: 0x5000, leaf: false }.encode(),
            [0x3_0000_0013, 0x5000]
        );
        assert_eq!(RealCommand::TlbiS12Vmall { vmid: 2 }.encode(), [0x2_0000_0028, 0]);
        // Every encoding decodes back as what the host would have sent (modulo the VMID).
        let a = adv();
        assert_eq!(
            decode(RealCommand::TlbiNhAsid { vmid: 0, asid: 9 }.encode(), &a),
            Ok(HostCommand::TlbiNhAsid { asid: 9 })
        );
    }

    const Q: u64 = 0x4000_0000;

    fn queue(log2: u64) -> (RegisterFile, FakeMemory) {
        let mut regs = RegisterFile::new(adv());
        regs.write(CMDQ_BASE, 8, Q | log2);
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        regs.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_GERROR_IRQEN));
        (regs, FakeMemory::new(&[MemRange::new(Q, Q + 0x10_0000)]))
    }

    fn put(mem: &mut FakeMemory, log2: u32, ptr: u32, words: [u64; 2]) {
        let idx = u64::from(ptr & ((1 << log2) - 1));
        mem.write_u64(Q + idx * 16, words[0]);
        mem.write_u64(Q + idx * 16 + 8, words[1]);
    }

    fn run(
        regs: &mut RegisterFile,
        mem: &mut FakeMemory,
        budget: u32,
    ) -> (Consumed, Vec<HostCommand>) {
        let mut seen = Vec::new();
        let c = consume(regs, mem, budget, |_, _, cmd| {
            seen.push(cmd);
            Outcome::Done
        });
        (c, seen)
    }

    #[test]
    fn consumes_up_to_prod_across_the_wrap() {
        let (mut regs, mut mem) = queue(2); // 4 entries
        // Start at index 3 of lap 0 so the batch wraps.
        regs.write(CR0, 4, 0);
        regs.write(CMDQ_CONS, 4, 3);
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        for (i, ptr) in [3u32, 4, 5].into_iter().enumerate() {
            put(&mut mem, 2, ptr, [0x18_0000_0003 + ((i as u64) << 32), 0]);
        }
        regs.write(CMDQ_PROD, 4, 0b110); // index 2, wrap 1
        let (c, seen) = run(&mut regs, &mut mem, 64);
        assert_eq!(c, Consumed { commands: 3, stop: Stop::Empty, gerror_irq: false });
        assert_eq!(regs.read(CMDQ_CONS, 4), 0b110);
        assert_eq!(seen, [0x18, 0x19, 0x1a].map(|sid| HostCommand::CfgiSte { sid, leaf: false }));
        // Nothing more to do.
        assert_eq!(run(&mut regs, &mut mem, 64).0.commands, 0);
    }

    #[test]
    fn full_queue_is_consumed_whole() {
        let (mut regs, mut mem) = queue(2);
        for p in 0..4 {
            put(&mut mem, 2, p, [0x46, 0]);
        }
        regs.write(CMDQ_PROD, 4, 0b100); // full: index 0, other lap
        let (c, _) = run(&mut regs, &mut mem, 64);
        assert_eq!((c.commands, c.stop), (4, Stop::Empty));
        assert_eq!(regs.read(CMDQ_CONS, 4), 0b100);
    }

    #[test]
    fn illegal_command_stops_at_cons_until_acknowledged() {
        let (mut regs, mut mem) = queue(3);
        put(&mut mem, 3, 0, [0x46, 0]);
        put(&mut mem, 3, 1, [0x28, 0]); // TLBI_S12_VMALL: no stage 2
        put(&mut mem, 3, 2, [0x46, 0]);
        regs.write(CMDQ_PROD, 4, 3);
        let (c, seen) = run(&mut regs, &mut mem, 64);
        assert_eq!(c.commands, 1);
        assert_eq!(c.stop, Stop::Error { code: CERROR_ILL, illegal: Some(Illegal::Opcode(0x28)) });
        assert!(c.gerror_irq);
        assert_eq!(seen.len(), 1);
        assert_eq!(regs.read(CMDQ_CONS, 4), (1 << 24) | 1, "RD at the bad command, ERR = ILL");
        assert_eq!(regs.read(GERROR, 4) & 1, 1);
        // Until acknowledged, nothing moves.
        assert_eq!(run(&mut regs, &mut mem, 64).0.stop, Stop::ErrorActive);
        // Linux's recovery: replace it with CMD_SYNC, then ack through GERRORN.
        put(&mut mem, 3, 1, [0x46, 0]);
        let gerror = regs.read(GERROR, 4);
        assert!(regs.write(GERRORN, 4, gerror).cmdq_kick);
        let (c, _) = run(&mut regs, &mut mem, 64);
        assert_eq!((c.commands, c.stop), (2, Stop::Empty));
        assert_eq!(regs.read(CMDQ_CONS, 4) & 0xfffff, 3);
    }

    #[test]
    fn queue_outside_host_memory_is_an_abort() {
        let (mut regs, mut mem) = queue(3);
        regs.write(CR0, 4, 0);
        regs.write(CMDQ_BASE, 8, 0x5000_0000 | 3); // warden memory, say
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        regs.write(CMDQ_PROD, 4, 1);
        let (c, seen) = run(&mut regs, &mut mem, 64);
        assert_eq!(c.stop, Stop::Error { code: CERROR_ABT, illegal: None });
        assert!(seen.is_empty());
        assert_eq!(regs.read(CMDQ_CONS, 4), 2 << 24);
        // A queue straddling the end of host memory, too (even if CONS's slot is inside).
        let mut short = FakeMemory::new(&[MemRange::new(Q, Q + 0x40)]);
        let (mut regs, _) = queue(3); // 8 x 16 = 128 bytes
        regs.write(CMDQ_PROD, 4, 1);
        assert_eq!(
            run(&mut regs, &mut short, 64).0.stop,
            Stop::Error { code: CERROR_ABT, illegal: None }
        );
        // An empty queue is never fetched, wherever it is.
        let (mut regs, _) = queue(3);
        regs.write(CR0, 4, 0);
        regs.write(CMDQ_BASE, 8, 0x5000_0000 | 3);
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        assert_eq!(run(&mut regs, &mut mem, 64).0.stop, Stop::Empty);
    }

    #[test]
    fn prod_beyond_the_queue() {
        let (mut regs, mut mem) = queue(2);
        // Bits above the wrap bit are ignored (RES0 "might be stored but has no effect").
        put(&mut mem, 2, 0, [0x46, 0]);
        regs.write(CMDQ_PROD, 4, 0xf_fff1);
        let (c, _) = run(&mut regs, &mut mem, 64);
        assert_eq!((c.commands, c.stop), (1, Stop::Empty));
        // PROD claiming more than a full queue ahead of CONS: refused, nothing executed.
        let (mut regs, mut mem) = queue(2);
        regs.write(CR0, 4, 0);
        regs.write(CMDQ_CONS, 4, 2);
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        regs.write(CMDQ_PROD, 4, 0b111); // 5 entries ahead of a 4-entry queue
        let (c, seen) = run(&mut regs, &mut mem, 64);
        assert_eq!(c.stop, Stop::Error { code: CERROR_ILL, illegal: None });
        assert!(seen.is_empty());
    }

    #[test]
    fn sync_flood_is_bounded_per_call() {
        // 64K entries of CMD_SYNC (1 MiB of queue), 100 commands per trap.
        let adv16 = Advertised { cmdq_log2: 16, ..adv() };
        let mut regs = RegisterFile::new(adv16);
        let mut mem = FakeMemory::new(&[MemRange::new(Q, Q + 0x10_0000)]);
        regs.write(CMDQ_BASE, 8, Q | 16);
        regs.write(CR0, 4, u64::from(CR0_CMDQEN));
        for i in 0..(1u64 << 16) {
            mem.write_u64(Q + i * 16, 0x46);
        }
        regs.write(CMDQ_PROD, 4, 1 << 16); // full
        let mut calls = 0;
        let mut total = 0;
        loop {
            let c = consume(&mut regs, &mut mem, 100, |_, _, _| Outcome::Done);
            assert!(c.commands <= 100);
            total += c.commands;
            calls += 1;
            if c.stop == Stop::Empty {
                break;
            }
            assert_eq!(c.stop, Stop::Budget);
        }
        assert_eq!(total, 1 << 16);
        assert_eq!(calls, 656);
        assert_eq!(regs.read(CMDQ_CONS, 4), 1 << 16);
    }

    #[test]
    fn retry_leaves_cons_and_disabled_queue_does_nothing() {
        let (mut regs, mut mem) = queue(3);
        put(&mut mem, 3, 0, [0x46, 0]);
        put(&mut mem, 3, 1, [0x46, 0]);
        regs.write(CMDQ_PROD, 4, 2);
        let mut n = 0;
        let c = consume(&mut regs, &mut mem, 64, |_, _, _| {
            n += 1;
            if n == 2 { Outcome::Retry } else { Outcome::Done }
        });
        assert_eq!((c.commands, c.stop), (1, Stop::Retry));
        assert_eq!(regs.read(CMDQ_CONS, 4), 1);
        regs.write(CR0, 4, 0);
        assert_eq!(run(&mut regs, &mut mem, 64).0.stop, Stop::Disabled);
    }

    #[test]
    fn commands_are_read_once() {
        let (mut regs, mut mem) = queue(3);
        put(&mut mem, 3, 0, [0x18_0000_0003, 0]);
        regs.write(CMDQ_PROD, 4, 1);
        let reads_before = mem.reads();
        // The handler rewrites the slot (a racing host CPU); what was decoded is what runs.
        let c = consume(&mut regs, &mut mem, 64, |_, m, cmd| {
            m.write_u64(Q, 0x28);
            assert_eq!(cmd, HostCommand::CfgiSte { sid: 0x18, leaf: false });
            Outcome::Done
        });
        assert_eq!(c.commands, 1);
        assert_eq!(mem.reads() - reads_before, 1, "one 16-byte read per command");
    }
}
