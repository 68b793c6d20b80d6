//! The simulated peer (qemu-virt): the host's `PEER_COMMAND` call, the mailbox page warden
//! shares with the peer program, the peer's own calls, and the checksum both sides compute.
//!
//! On qemu-virt warden keeps the last CPU from the host and runs a small EL1 program on it, once
//! per command, under the peer's own VMID (see `docs/abi.md`, "Simulated peer"). The program
//! finds its command in the mailbox at [`MAILBOX_IPA`], does it on memory handed to that peer,
//! writes the result back and calls [`PEER_DONE`]; warden then powers the CPU off again.

use crate::error::AbiError;
use crate::handoff::{PA_LIMIT, PeerId, check_range};
use crate::smccc::{OWNER_VENDOR_HYP, fast_call};

/// `PEER_COMMAND(peer, op, a1, a2, a3)`: host only. Runs one command on the peer and waits for
/// it (bounded): `x1` = the command's result. Errors: `INVALID_PARAMETERS` (unknown peer or op,
/// bad range, reserved bits), `NOT_SUPPORTED` (no simulated peer on this board), `DENIED` (a
/// CHECKSUM or FILL range the peer does not hold: not wholly donated or lent to it, or
/// released), `RETRY` (the peer CPU is busy with another command, or still being stopped),
/// `ABORTED` (no answer in time: warden stopped the peer's CPU), `PEER_FAULT` (the peer touched
/// memory not handed to it; the access is in the violation ring).
pub const PEER_COMMAND: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0040);
/// `PEER_DONE()`: peer only. The command in the mailbox is finished (status and result are in
/// the mailbox). Does not return to the peer.
pub const PEER_DONE: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0041);

/// Where the peer sees its mailbox page (a page of warden's memory, private to this peer;
/// read-write, never executable).
pub const MAILBOX_IPA: u64 = 0x1010_0000;
/// Where the peer program is linked and loaded (IPA; warden maps its private copy there
/// read-only and executable: the peer cannot change its own program).
pub const PROGRAM_IPA: u64 = 0x1000_0000;
/// Largest peer program (code, read-only data, GOT; no writable data).
pub const PROGRAM_SIZE: u64 = 64 * 1024;
/// The peer program's BSS and stack: private pages right after the program, read-write and
/// never executable, zeroed by the program's entry code on every run.
pub const DATA_IPA: u64 = PROGRAM_IPA + PROGRAM_SIZE;
/// Size of the [`DATA_IPA`] window.
pub const DATA_SIZE: u64 = 16 * 1024;

/// What a command asks the peer to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`checksum`] of `[base, base + size)`: x1 = the checksum.
    Checksum { base: u64, size: u64 },
    /// Fill `[base, base + size)` with `pattern` (64-bit words); x1 = 0.
    Fill { base: u64, size: u64, pattern: u64 },
    /// `RELEASE(base, size, flags)` from the peer; x1 = warden's answer to it (`x0` of the
    /// RELEASE: 0 or a negative error code).
    Release { base: u64, size: u64, clear: bool },
    /// Read the 64-bit word at `addr` (8-byte aligned); x1 = its value. Used to show that an
    /// access outside what the peer was given is contained.
    Touch { addr: u64 },
    /// Spin forever without touching memory: never answers. Used to show that warden stops a
    /// peer that does not finish (the command ends `ABORTED`, later commands work).
    Spin,
}

impl core::fmt::Display for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Checksum { base, size } => write!(f, "CHECKSUM {base:#x}+{size:#x}"),
            Self::Fill { base, size, pattern } => {
                write!(f, "FILL {base:#x}+{size:#x} with {pattern:#x}")
            }
            Self::Release { base, size, clear } => {
                write!(f, "RELEASE {base:#x}+{size:#x}{}", if clear { " CLEAR" } else { "" })
            }
            Self::Touch { addr } => write!(f, "TOUCH {addr:#x}"),
            Self::Spin => f.write_str("SPIN"),
        }
    }
}

const OP_CHECKSUM: u64 = 1;
const OP_FILL: u64 = 2;
const OP_RELEASE: u64 = 3;
const OP_TOUCH: u64 = 4;
const OP_SPIN: u64 = 5;

impl Op {
    /// `(op, a1, a2, a3)` as in `x2..x5` of `PEER_COMMAND` and in the mailbox.
    pub const fn encode(self) -> [u64; 4] {
        match self {
            Self::Checksum { base, size } => [OP_CHECKSUM, base, size, 0],
            Self::Fill { base, size, pattern } => [OP_FILL, base, size, pattern],
            Self::Release { base, size, clear } => {
                [OP_RELEASE, base, size, if clear { crate::handoff::FLAG_CLEAR } else { 0 }]
            }
            Self::Touch { addr } => [OP_TOUCH, addr, 0, 0],
            Self::Spin => [OP_SPIN, 0, 0, 0],
        }
    }

    /// Validates `(op, a1, a2, a3)`: every unused argument zero, ranges page aligned.
    pub fn decode(words: [u64; 4]) -> Result<Self, AbiError> {
        let [op, a1, a2, a3] = words;
        let bad = AbiError::InvalidParameters;
        Ok(match op {
            OP_CHECKSUM if a3 == 0 => {
                check_range(a1, a2)?;
                Self::Checksum { base: a1, size: a2 }
            }
            OP_FILL => {
                check_range(a1, a2)?;
                Self::Fill { base: a1, size: a2, pattern: a3 }
            }
            OP_RELEASE if a3 & !crate::handoff::FLAG_CLEAR == 0 => {
                check_range(a1, a2)?;
                Self::Release { base: a1, size: a2, clear: a3 != 0 }
            }
            // An address the peer cannot even form (at or beyond 2^52, the largest PA space)
            // would fault in its own stage 1, unseen by warden: refused like any bad range.
            OP_TOUCH if a2 == 0 && a3 == 0 && a1.is_multiple_of(8) && a1 < PA_LIMIT => {
                Self::Touch { addr: a1 }
            }
            OP_SPIN if a1 == 0 && a2 == 0 && a3 == 0 => Self::Spin,
            _ => return Err(bad),
        })
    }
}

/// A decoded `PEER_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCommand {
    pub peer: PeerId,
    pub op: Op,
}

impl PeerCommand {
    /// `x0..x7` of the call; `x6`, `x7` zero.
    pub const fn encode(&self) -> [u64; 8] {
        let [op, a1, a2, a3] = self.op.encode();
        [PEER_COMMAND as u64, self.peer.get() as u64, op, a1, a2, a3, 0, 0]
    }

    /// Decodes `x0..x7` of a call known to be `PEER_COMMAND`.
    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        if regs[6] != 0 || regs[7] != 0 {
            return Err(AbiError::InvalidParameters);
        }
        let peer =
            u8::try_from(regs[1]).ok().and_then(PeerId::new).ok_or(AbiError::InvalidParameters)?;
        let op = Op::decode([regs[2], regs[3], regs[4], regs[5]])?;
        Ok(Self { peer, op })
    }
}

/// Reply of a successful `PEER_COMMAND`: `x1` = result, the rest zero.
pub const fn encode_result(result: u64) -> [u64; 8] {
    [0, result, 0, 0, 0, 0, 0, 0]
}

/// Status the peer writes in [`Mailbox::status`].
pub const STATUS_OK: u64 = 0;
/// The command was malformed (the peer re-validates what it reads).
pub const STATUS_BAD_COMMAND: u64 = 1;
/// The peer took a synchronous external abort (warden contained an access); `fault_addr` says
/// where.
pub const STATUS_FAULT: u64 = 2;

/// The mailbox page, as both sides see it. warden writes `command` and then `seq`; the peer
/// answers with `status`, `result`, `fault_addr` and then `done_seq = seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Bumped by warden for every command.
    pub seq: u64,
    /// [`Op::encode`] of the command.
    pub command: [u64; 4],
    /// Written by the peer last: equal to `seq` once the command is finished.
    pub done_seq: u64,
    pub status: u64,
    pub result: u64,
    /// With [`STATUS_FAULT`]: the faulting address (FAR_EL1).
    pub fault_addr: u64,
    /// The peer's own id (written by warden), so one program can serve several peers.
    pub peer: u64,
}

/// Checksum both the peer and the host compute over a range: FNV-1a over the little-endian
/// 64-bit words. Fold words in with [`Checksum::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum(u64);

impl Checksum {
    pub const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub const fn add(self, word: u64) -> Self {
        Self((self.0 ^ word).wrapping_mul(0x0000_0100_0000_01b3))
    }

    pub const fn value(self) -> u64 {
        self.0
    }
}

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable() {
        assert_eq!(PEER_COMMAND, 0xC600_0040);
        assert_eq!(PEER_DONE, 0xC600_0041);
    }

    #[test]
    fn commands_round_trip() {
        let ops = [
            Op::Checksum { base: 0x7c00_0000, size: 0x1000 },
            Op::Fill { base: 0x7c00_0000, size: 0x2000, pattern: 0xdead_beef },
            Op::Release { base: 0x7d00_0000, size: 0x10_0000, clear: true },
            Op::Release { base: 0x7d00_0000, size: 0x10_0000, clear: false },
            Op::Touch { addr: 0x4000_0008 },
            Op::Spin,
        ];
        for op in ops {
            let cmd = PeerCommand { peer: PeerId::DSP, op };
            assert_eq!(PeerCommand::decode(&cmd.encode()), Ok(cmd));
        }
    }

    #[test]
    fn bad_commands_are_refused() {
        let ok = PeerCommand { peer: PeerId::MODEM, op: Op::Touch { addr: 8 } }.encode();
        let bad = |f: &dyn Fn(&mut [u64; 8])| {
            let mut r = ok;
            f(&mut r);
            assert_eq!(PeerCommand::decode(&r), Err(AbiError::InvalidParameters), "{r:x?}");
        };
        bad(&|r| r[1] = 0);
        bad(&|r| r[1] = 64);
        bad(&|r| r[1] = 0x101);
        bad(&|r| r[2] = 0);
        bad(&|r| r[2] = 9);
        bad(&|r| r[3] = 4);
        bad(&|r| r[4] = 1);
        bad(&|r| r[6] = 1);
        bad(&|r| r[7] = 1);
        assert!(Op::decode([OP_CHECKSUM, 0x1000, 0, 0]).is_err());
        assert!(Op::decode([OP_CHECKSUM, 0x1001, 0x1000, 0]).is_err());
        assert!(Op::decode([OP_CHECKSUM, !0xfff, 0x2000, 0]).is_err());
        assert!(Op::decode([OP_RELEASE, 0x1000, 0x1000, 2]).is_err());
        assert!(Op::decode([OP_TOUCH, PA_LIMIT, 0, 0]).is_err());
        assert!(Op::decode([OP_TOUCH, PA_LIMIT - 8, 0, 0]).is_ok());
        assert!(Op::decode([OP_SPIN, 0, 0, 1]).is_err());
        assert_eq!(Op::decode([OP_SPIN, 0, 0, 0]), Ok(Op::Spin));
    }

    #[test]
    fn checksum_is_fnv1a_over_words() {
        assert_eq!(Checksum::new().value(), 0xcbf2_9ce4_8422_2325);
        let one = Checksum::new().add(0);
        assert_eq!(one.value(), 0xcbf2_9ce4_8422_2325u64.wrapping_mul(0x100_0000_01b3));
        assert_ne!(Checksum::new().add(1).add(2), Checksum::new().add(2).add(1));
    }
}
