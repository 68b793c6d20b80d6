//! assign_mem to the SCM firmware below, on a board whose TrustZone implements SCM
//! ([`crate::boards::Board::scm_firmware`]): a Qualcomm TZ programs its XPUs from it, so it
//! must hear of every change of holders warden makes (`docs/qcom-scm.md`).
//!
//! warden never passes the host's registers or buffers down: another host CPU could rewrite
//! the lists between warden's copy and the firmware's read (TOCTOU). It passes its own
//! validated copy ([`ForwardedAssign`]), written in Linux's layout into a buffer in warden's
//! memory ([`AssignLists`], out of the host's reach), cleaned to the point of coherency before
//! the SMC (the firmware may read with its MMU off or through a non-cacheable mapping).
//!
//! [`TzAssign`] is the [`Firmware`] the handoff sequences tell at their step
//! ([`crate::handoff::assign`]): `agree` makes the call forward, `undo` the reverse call after
//! one of warden's own later steps failed. The hardware is behind [`ScmConduit`] (real: `DC
//! CVAC` + `DSB SY`, `SMC #0`), so host tests check the buffer, the registers and the order.

use warden_abi::qcom_scm::{
    self, ASSIGN_ARGINFO, DEST_ENTRY, DestEntry, MEM_ENTRY, MP_ASSIGN, MemEntry, SRC_ENTRY, perm,
    svc,
};

use crate::handoff::Firmware;
use crate::mm::MemRange;

/// Destinations warden passes down: the host and at most one peer.
pub const MAX_FORWARDED: usize = 2;

/// An assign_mem as warden tells it to the firmware: the range and VM lists it validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardedAssign {
    pub range: MemRange,
    /// Source VM IDs (bit n: VM n): the range's holders now, as the host named them.
    pub sources: u64,
    /// `(VM ID, permissions)` of each destination, as the host asked (checked non-empty
    /// subsets of RWX), in increasing VM ID order.
    pub destinations: [(u32, u32); MAX_FORWARDED],
    pub destination_count: usize,
}

impl ForwardedAssign {
    pub fn destinations(&self) -> &[(u32, u32)] {
        &self.destinations[..self.destination_count]
    }

    /// The call that puts the holders back: the destinations give the range back to the
    /// sources, each with RWX (what warden's own mappings of a holder allow at most).
    pub fn reverse(&self) -> ForwardedAssign {
        let mut back = ForwardedAssign {
            range: self.range,
            sources: self.destinations().iter().fold(0, |m, &(vm, _)| m | 1 << vm),
            destinations: [(0, 0); MAX_FORWARDED],
            destination_count: 0,
        };
        for vm in vm_ids(self.sources).take(MAX_FORWARDED) {
            back.destinations[back.destination_count] = (vm, perm::RWX);
            back.destination_count += 1;
        }
        back
    }
}

/// The VM IDs of a bitmap, in increasing order.
fn vm_ids(bitmap: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |vm| bitmap & (1 << vm) != 0)
}

/// The lists of one forwarded assign_mem, laid out as Linux lays out its own (64-byte aligned
/// pieces): source list, memory entry, destination list, then arguments 4..7 (x5's buffer).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct AssignLists {
    bytes: [u8; AssignLists::SIZE],
}

impl Default for AssignLists {
    fn default() -> Self {
        Self::new()
    }
}

impl AssignLists {
    pub const SIZE: usize = 256;
    pub const SRC: usize = 0;
    pub const MEM: usize = 64;
    pub const DEST: usize = 128;
    pub const EXT: usize = 192;

    pub const fn new() -> Self {
        AssignLists { bytes: [0; Self::SIZE] }
    }

    pub fn bytes(&self) -> &[u8; Self::SIZE] {
        &self.bytes
    }

    /// Writes `call` and returns x0..x7 of the SMC, the lists at physical address `pa` (this
    /// buffer's).
    pub fn fill(&mut self, call: &ForwardedAssign, pa: u64) -> [u64; 8] {
        self.bytes = [0; Self::SIZE];
        let mut src_size = 0;
        for (i, vm) in vm_ids(call.sources).take(MAX_FORWARDED).enumerate() {
            let at = Self::SRC + SRC_ENTRY * i;
            self.bytes[at..at + SRC_ENTRY].copy_from_slice(&vm.to_le_bytes());
            src_size += SRC_ENTRY;
        }
        let mem = MemEntry { base: call.range.start, size: call.range.size() };
        self.bytes[Self::MEM..Self::MEM + MEM_ENTRY].copy_from_slice(&mem.encode());
        for (i, &(vmid, perm)) in call.destinations().iter().enumerate() {
            let at = Self::DEST + DEST_ENTRY * i;
            let entry = DestEntry { vmid, perm, ctx: 0, ctx_size: 0 };
            self.bytes[at..at + DEST_ENTRY].copy_from_slice(&entry.encode());
        }
        let dest_size = DEST_ENTRY * call.destination_count;
        let ext = [src_size as u64, pa + Self::DEST as u64, dest_size as u64, 0];
        for (i, w) in ext.into_iter().enumerate() {
            let at = Self::EXT + 8 * i;
            self.bytes[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        [
            u64::from(qcom_scm::function_id(svc::MP, MP_ASSIGN, true, false)),
            u64::from(ASSIGN_ARGINFO),
            pa + Self::MEM as u64,
            MEM_ENTRY as u64,
            pa + Self::SRC as u64,
            pa + Self::EXT as u64,
            0,
            0,
        ]
    }
}

/// The hardware a forwarded call needs.
pub trait ScmConduit {
    /// Cleans `[addr, addr + len)` of warden's memory to the point of coherency and waits for
    /// it (`DC CVAC` per line, `DSB SY`).
    fn clean_to_poc(&mut self, addr: u64, len: u64);
    /// `SMC #0` with x0..x7; x0..x3 of the answer.
    fn smc(&mut self, regs: [u64; 8]) -> [u64; 4];
}

/// The firmware's part in one assign_mem (see the module documentation).
pub struct TzAssign<'a, C: ScmConduit + ?Sized> {
    conduit: &'a mut C,
    lists: &'a mut AssignLists,
    lists_pa: u64,
    call: ForwardedAssign,
    /// The firmware's status when it refused (for the log).
    pub refused: Option<i64>,
}

impl<'a, C: ScmConduit + ?Sized> TzAssign<'a, C> {
    /// `lists_pa` is the physical address of `lists` (warden's EL2 map is the identity).
    pub fn new(
        conduit: &'a mut C,
        lists: &'a mut AssignLists,
        lists_pa: u64,
        call: ForwardedAssign,
    ) -> Self {
        TzAssign { conduit, lists, lists_pa, call, refused: None }
    }

    /// Makes `call`: success is x0 = 0 and x1 = 0 (Linux returns x1 as the result); a
    /// negative x0 is the firmware's refusal, anything else (a resumable INTERRUPTED or
    /// WAITQ_SLEEP warden does not resume, x1 ≠ 0) counts as ERROR.
    fn make(&mut self, call: ForwardedAssign) -> Result<(), i64> {
        let regs = self.lists.fill(&call, self.lists_pa);
        self.conduit.clean_to_poc(self.lists_pa, AssignLists::SIZE as u64);
        match self.conduit.smc(regs) {
            [0, 0, ..] => Ok(()),
            [x0, ..] if (x0 as i64) < 0 => Err(x0 as i64),
            _ => Err(qcom_scm::status::ERROR),
        }
    }
}

impl<C: ScmConduit + ?Sized> Firmware for TzAssign<'_, C> {
    fn agree(&mut self) -> Result<(), i64> {
        let result = self.make(self.call);
        self.refused = result.err();
        result
    }

    fn undo(&mut self) {
        let back = self.call.reverse();
        if let Err(status) = self.make(back) {
            log::error!(
                "SCM assign_mem {}: the firmware refused ({status}) to undo its part after \
                 warden's own step failed; it and warden's tracker now disagree",
                self.call.range
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use warden_abi::qcom_scm::vmid::{HLOS, MSS_MSA};

    /// Records cleans and SMCs in one ordered log, answering each SMC from `answers`.
    #[derive(Default)]
    pub struct FakeConduit {
        pub log: Vec<ConduitOp>,
        pub answers: Vec<[u64; 4]>,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ConduitOp {
        Clean { addr: u64, len: u64 },
        Smc([u64; 8]),
    }

    impl ScmConduit for FakeConduit {
        fn clean_to_poc(&mut self, addr: u64, len: u64) {
            self.log.push(ConduitOp::Clean { addr, len });
        }
        fn smc(&mut self, regs: [u64; 8]) -> [u64; 4] {
            self.log.push(ConduitOp::Smc(regs));
            if self.answers.is_empty() { [0; 4] } else { self.answers.remove(0) }
        }
    }

    const PA: u64 = 0x7e10_0000;

    fn to_modem() -> ForwardedAssign {
        ForwardedAssign {
            range: MemRange::new(0x1_3c00_0000, 0x1_3c00_4000),
            sources: 1 << HLOS,
            destinations: [(MSS_MSA, perm::RWX), (0, 0)],
            destination_count: 1,
        }
    }

    /// The buffer holds warden's copy in Linux's layout, and the registers point into it.
    #[test]
    fn lists_are_linuxs_layout_in_wardens_buffer() {
        let mut lists = AssignLists::new();
        let regs = lists.fill(&to_modem(), PA);
        assert_eq!(regs, [0x4200_0c16, 0x1117, PA + 64, 16, PA, PA + 192, 0, 0]);
        let b = lists.bytes();
        assert_eq!(qcom_scm::le32(b, 0), HLOS);
        assert_eq!(qcom_scm::le64(b, 64), 0x1_3c00_0000);
        assert_eq!(qcom_scm::le64(b, 72), 0x4000);
        let dest: &[u8; 24] = b[128..152].try_into().unwrap();
        let want = DestEntry { vmid: MSS_MSA, perm: perm::RWX, ctx: 0, ctx_size: 0 };
        assert_eq!(DestEntry::decode(dest), want);
        let ext: Vec<u64> = (0..4).map(|i| qcom_scm::le64(b, 192 + 8 * i)).collect();
        assert_eq!(ext, [4, PA + 128, 24, 0]);
        // A share: two destinations, HLOS first.
        let share = ForwardedAssign {
            destinations: [(HLOS, perm::RW), (MSS_MSA, perm::RW)],
            destination_count: 2,
            ..to_modem()
        };
        lists.fill(&share, PA);
        assert_eq!(qcom_scm::le64(lists.bytes(), 192 + 16), 48);
        assert_eq!(qcom_scm::le32(lists.bytes(), 128 + 24), MSS_MSA);
    }

    /// Cleaned to the point of coherency, then the SMC; refusals and odd answers.
    #[test]
    fn agree_cleans_then_calls_and_reports_refusals() {
        let mut conduit = FakeConduit::default();
        let mut lists = AssignLists::new();
        let mut tz = TzAssign::new(&mut conduit, &mut lists, PA, to_modem());
        assert_eq!(tz.agree(), Ok(()));
        assert_eq!(conduit.log.len(), 2);
        assert_eq!(conduit.log[0], ConduitOp::Clean { addr: PA, len: 256 });
        assert!(matches!(conduit.log[1], ConduitOp::Smc(r) if r[2] == PA + 64 && r[5] == PA + 192));
        for (answer, want) in [
            ([(-1i64) as u64, 0, 0, 0], Err(-1)),
            ([(-12i64) as u64, 0, 0, 0], Err(-12)),
            ([1, 0, 0, 0], Err(-1)),
            ([0, 5, 0, 0], Err(-1)),
        ] {
            let mut conduit = FakeConduit { answers: vec![answer], ..Default::default() };
            let mut tz = TzAssign::new(&mut conduit, &mut lists, PA, to_modem());
            assert_eq!(tz.agree(), want, "{answer:?}");
            assert_eq!(tz.refused, want.err());
        }
    }

    /// Undo gives the range back to the sources (RWX) from the destinations.
    #[test]
    fn undo_is_the_reverse_call() {
        let mut conduit = FakeConduit::default();
        let mut lists = AssignLists::new();
        let mut tz = TzAssign::new(&mut conduit, &mut lists, PA, to_modem());
        tz.undo();
        assert_eq!(qcom_scm::le32(lists.bytes(), 0), MSS_MSA, "source: the modem");
        let dest: &[u8; 24] = lists.bytes()[128..152].try_into().unwrap();
        assert_eq!(DestEntry::decode(dest).vmid, HLOS);
        assert_eq!(DestEntry::decode(dest).perm, perm::RWX);
        assert_eq!(to_modem().reverse().reverse().sources, 1 << HLOS);
    }
}
