//! End-to-end tests of the virtual SMMU: a host driving it the way Linux's arm-smmu-v3 does,
//! and hostile hosts.

use alloc::vec;
use alloc::vec::Vec;

use super::asid::{IdState, RealState, RetireTracker};
use super::cd::CD_WORDS;
use super::cmdq::RealCommand;
use super::fake::{FakeMemory, RealOp, RecordingSmmu};
use super::regs::Advertised;
use super::ste::RealSte;
use super::*;
use crate::mm::MemRange;
use crate::smmu::regs::*;

const HOST: MemRange = MemRange::new(0x4000_0000, 0x4800_0000);
/// Memory the host does not own (warden's, or a peer's carveout).
const WARDEN: u64 = 0x4800_0000;
const STRTAB: u64 = 0x4010_0000; // L1: 256 descriptors (16-bit SIDs, SPLIT 8)
const L2_BUS0: u64 = 0x4011_0000;
const CMDQ: u64 = 0x4020_0000; // 256 x 16
const EVTQ: u64 = 0x4021_0000; // 128 x 32
const CD_A: u64 = 0x4030_0000;
const CD_B: u64 = 0x4030_0040;
const HOST_VMID: u16 = 1;
const SID_NET: u32 = 0x08;
const SID_BLK: u32 = 0x10;
/// The shadow CD arena: slots 0/1 for SID_NET, 2/3 for SID_BLK.
const ARENA: u64 = 0x7f_c000_0000;
const UNMAPPED: u64 = ARENA + 0x3fff_f000;
const T1: u64 = 0x4100_0000;
const T2: u64 = 0x4200_0000;

struct Host {
    smmu: VirtSmmu,
    mem: FakeMemory,
    real: RecordingSmmu,
    prod: u32,
}

fn adv() -> Advertised {
    Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 }
}

fn config(g3: bool) -> VirtConfig {
    VirtConfig {
        advertised: adv(),
        host_vmid: HOST_VMID,
        host_sids: vec![SID_NET, SID_BLK],
        cmd_budget: 64,
        g3_enabled: g3,
        arena: CdArena { ipa: ARENA, slots: 4, unmapped_ipa: UNMAPPED },
    }
}

/// Shadow slot `slot` (0 or 1) of host stream number `stream` (0: SID_NET, 1: SID_BLK).
fn slot(stream: u64, slot: u64) -> u64 {
    ARENA + (2 * stream + slot) * 64
}

fn nested(cd_ipa: u64) -> RealSte {
    RealSte::Nested { cd_ipa }
}

/// Linux's CD: T0SZ, TG0, IRGN/ORGN/SH, EPD1, V, IPS, AA64, R, A, ASET, ASID.
fn cd_words(asid: u16, ttb0: u64) -> [u64; CD_WORDS] {
    let w0 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 30) | (1 << 31) | (2 << 32);
    let w0 = w0 | (1 << 41) | (1 << 45) | (1 << 46) | (1 << 47) | (u64::from(asid) << 48);
    [w0, ttb0, 0, 0xff, 0, 0, 0, 0]
}

/// The shadow warden builds from `cd_words(asid, ttb0)` with real ASID `real`.
fn shadow(asid: u16, ttb0: u64, real: u16) -> [u64; CD_WORDS] {
    cd::validate(&cd_words(asid, ttb0), &adv()).unwrap().unwrap().shadow(real)
}

/// What installing a shadow CD looks like on the real SMMU.
fn shadow_install(sid: u32, ipa: u64, words: [u64; CD_WORDS]) -> Vec<RealOp> {
    vec![
        RealOp::WriteCd(ipa, words),
        RealOp::Install(sid, nested(ipa)),
        RealOp::Command(RealCommand::CfgiCdAll { sid }),
    ]
}

impl Host {
    fn new(g3: bool) -> Self {
        Self {
            smmu: VirtSmmu::new(config(g3)),
            mem: FakeMemory::new(&[HOST]),
            real: RecordingSmmu::default(),
            prod: 0,
        }
    }

    /// A trapped read as warden's trap path makes it: the register file alone unless the
    /// read needs the back end.
    fn read(&mut self, offset: u32) -> u64 {
        if !self.smmu.read_needs_backend(offset, 4) {
            return self.smmu.read_register(offset, 4);
        }
        self.smmu.mmio_read(offset, 4, &mut self.mem, &mut self.real).0
    }

    /// A trapped write as warden's trap path makes it: the back end only for what is left.
    fn write(&mut self, offset: u32, size: u8, value: u64) -> Notify {
        let pending = self.smmu.write_register(offset, size, value);
        if pending.is_empty() {
            return Notify::default();
        }
        self.smmu.finish_write(pending, &mut self.mem, &mut self.real)
    }

    /// Commands written at PROD, not yet published.
    fn queue(&mut self, cmds: &[[u64; 2]]) {
        for c in cmds {
            let idx = u64::from(self.prod & 0xff);
            self.mem.write_words(CMDQ + idx * 16, c);
            self.prod = (self.prod + 1) & 0x1ff;
        }
    }

    /// Linux's arm_smmu_device_reset, abridged: disable, GBPA, tables, queues, enable queues,
    /// invalidate everything, enable the SMMU.
    fn linux_reset(&mut self) {
        assert_eq!(self.read(CR0) & 1, 0);
        self.write(CR0, 4, 0);
        assert_eq!(self.read(CR0ACK), 0);
        self.write(CR1, 4, 0xd75);
        self.write(CR2, 4, u64::from(CR2_PTM | CR2_RECINVSID));
        // 2-level stream table: only bus 0 populated, with a 256-entry L2.
        self.mem.write_u64(STRTAB, L2_BUS0 | 9);
        self.write(STRTAB_BASE, 8, STRTAB | STRTAB_BASE_RA);
        self.write(STRTAB_BASE_CFG, 4, (1 << 16) | (8 << 6) | 16);
        self.write(CMDQ_BASE, 8, CMDQ | Q_BASE_RWA | 8);
        self.write(CMDQ_PROD, 4, 0);
        self.write(CMDQ_CONS, 4, 0);
        self.write(EVTQ_BASE, 8, EVTQ | Q_BASE_RWA | 7);
        self.write(EVTQ_PROD, 4, 0);
        self.write(EVTQ_CONS, 4, 0);
        self.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN));
        self.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN));
        assert_eq!(self.read(IRQ_CTRLACK), u64::from(IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN));
        self.submit(&[[0x04, 31], [0x46 | (2 << 12), 0]]); // CFGI_ALL, SYNC
        self.submit(&[[0x30, 0], [0x46 | (2 << 12), 0]]); // TLBI_NSNH_ALL, SYNC
        self.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
        assert_eq!(self.read(CR0ACK), u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
    }

    fn ste_addr(sid: u32) -> u64 {
        L2_BUS0 + u64::from(sid) * 64
    }

    fn set_ste(&mut self, sid: u32, words: [u64; 8]) {
        self.mem.write_words(Self::ste_addr(sid), &words);
    }

    fn set_cd(&mut self, addr: u64, asid: u16, ttb0: u64) {
        self.mem.write_words(addr, &cd_words(asid, ttb0));
    }

    fn clear_cd(&mut self, addr: u64) {
        self.mem.write_words(addr, &[0; 8]);
    }

    /// Writes commands at PROD, publishes them, and polls CONS (each poll is a trap) until the
    /// queue drains or errors. Returns the number of CONS polls.
    fn submit(&mut self, cmds: &[[u64; 2]]) -> u32 {
        self.queue(cmds);
        self.write(CMDQ_PROD, 4, u64::from(self.prod));
        let mut polls = 0;
        loop {
            polls += 1;
            let cons = self.read(CMDQ_CONS) as u32;
            if cons & 0x1ff == self.prod || self.read(GERROR) & 1 != self.read(GERRORN) & 1 {
                return polls;
            }
            assert!(polls < 10_000, "no progress");
        }
    }

    fn event(&self, index: u64) -> [u64; 4] {
        let a = EVTQ + index * 32;
        [0, 8, 16, 24].map(|o| self.mem.read_u64(a + o))
    }
}

fn stage1_ste(cd: u64) -> [u64; 8] {
    // Linux's stage-1 STE: V, Config S1, CD pointer, S1DSS SSID0, CIR/COR WBRA, CSH inner.
    [1 | (0b101 << 1) | cd, 2 | (1 << 2) | (1 << 4) | (3 << 6), 0, 0, 0, 0, 0, 0]
}

fn bypass_ste() -> [u64; 8] {
    [1 | (0b100 << 1), 1 << 44, 0, 0, 0, 0, 0, 0]
}

const SYNC: [u64; 2] = [0x46 | (2 << 12), 0];

fn cfgi_ste(sid: u32) -> [u64; 2] {
    [0x03 | (u64::from(sid) << 32), 1]
}

fn cfgi_cd(sid: u32) -> [u64; 2] {
    [0x05 | (u64::from(sid) << 32), 1]
}

fn tlbi_asid(asid: u16) -> [u64; 2] {
    [0x11 | (u64::from(asid) << 48), 0]
}

#[test]
fn linux_probe_and_reset() {
    let mut h = Host::new(true);
    // Reset: disabled, GBPA bypass: every host stream on warden's stage 2 alone.
    assert_eq!(h.smmu.reset_ste(), RealSte::Stage2Only);
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Stage2Only));
    // GBPA: Linux only clears ABORT when it wants bypass; already bypass, nothing to install.
    h.write(GBPA, 4, u64::from(GBPA_UPDATE));
    assert_eq!(h.read(GBPA), 0);
    assert!(h.real.take().is_empty());
    // Host STEs before enabling: bus 0 initialised to abort by Linux.
    for sid in [SID_NET, SID_BLK] {
        h.set_ste(sid, [1, 0, 0, 0, 0, 0, 0, 0]);
    }
    h.linux_reset();
    // CFGI_ALL with SMMUEN = 0: both streams follow GBPA (stage 2 alone), as they did since
    // boot: nothing to install; NSNH_ALL -> S12_VMALL(host). Then SMMUEN = 1: the host's
    // abort STEs, completed by a sync before CR0ACK shows SMMUEN.
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Command(RealCommand::TlbiS12Vmall { vmid: HOST_VMID }),
            RealOp::Sync,
            RealOp::Install(SID_NET, RealSte::Abort),
            RealOp::Install(SID_BLK, RealSte::Abort),
            RealOp::Sync
        ]
    );
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Abort));
    assert_eq!(h.read(GERROR), 0);
    let s = h.smmu.stats();
    assert_eq!(s.commands, 4);
    assert_eq!(s.bypass_requests, 1);
    assert_eq!(s.illegal_commands, 0);
}

#[test]
fn stage1_domain_is_nested_over_a_shadow_cd_and_bypass_is_stage2_only() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.set_cd(CD_A, 5, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.set_ste(SID_BLK, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), cfgi_ste(SID_BLK), SYNC]);
    let mut want = shadow_install(SID_NET, slot(0, 0), shadow(5, T1, 5));
    want.extend([RealOp::Install(SID_BLK, RealSte::Stage2Only), RealOp::Sync]);
    assert_eq!(h.real.take(), want, "the real SMMU reads warden's copy, never CD_A");
    assert_eq!(h.smmu.real_asid(SID_NET), Some(5), "the host's ASID, free");
    let key = asid::ContextKey { host_asid: 5, ttb0: Some(T1), ttb1: None };
    assert_eq!(h.smmu.asids().state(5), Some(RealState::Live { key, users: 1 }));
    // The same STE again: the CD is not re-read (only CFGI_CD does that), nothing changes.
    h.set_cd(CD_A, 6, T2);
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    assert!(h.real.take().is_empty());
    // A stream the host does not own (not in the DT) is not touched.
    h.set_ste(0x20, bypass_ste());
    h.submit(&[cfgi_ste(0x20), SYNC]);
    assert!(h.real.take().is_empty(), "nothing issued, the sync skipped");
    assert_eq!(h.smmu.stats().skipped_syncs, 3, "and the reset's first one");
}

#[test]
fn cd_rewritten_without_cfgi_cd_changes_nothing_until_cfgi_cd() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 5, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    h.real.take();
    // A stall-enabled CD written over it, then other commands (and a DMA could happen here:
    // the real SMMU only ever reads the shadow, which still holds the validated copy).
    let mut stall = cd_words(5, T2);
    stall[0] |= 1 << 44;
    h.mem.write_words(CD_A, &stall);
    h.submit(&[tlbi_asid(9), [0x10, 0], SYNC]);
    assert_eq!(
        h.real.take(),
        vec![RealOp::Command(RealCommand::TlbiNhAll { vmid: HOST_VMID }), RealOp::Sync]
    );
    assert_eq!(
        h.smmu.stream_cd(SID_NET).map(|c| matches!(c, StreamCd::Shadow { slot: 0, .. })),
        Some(true)
    );
    // CFGI_CD: now it is read, and refused.
    h.submit(&[cfgi_cd(SID_NET), SYNC]);
    assert_eq!(h.event(0), [0x8_0000_000a, 0, 0, 0], "C_BAD_CD");
    let mut want = shadow_install(SID_NET, slot(0, 1), [0; CD_WORDS]);
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want, "a V = 0 shadow: every DMA of the stream is C_BAD_CD");
    assert_eq!(h.smmu.real_asid(SID_NET), None);
    assert_eq!(h.smmu.stats().cd_refusals, 1);
    assert_eq!(h.smmu.asids().retiring().collect::<Vec<_>>(), vec![5]);
    // A valid CD again, and CFGI_CD: the other slot.
    h.set_cd(CD_A, 5, T2);
    h.submit(&[cfgi_cd(SID_NET), SYNC]);
    let log = h.real.take();
    assert_eq!(
        log[..2],
        [RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 5 }), RealOp::Sync],
        "host ASID 5 reused while its old real ASID retires: flushed first"
    );
    assert_eq!(log[2..5], shadow_install(SID_NET, slot(0, 0), shadow(5, T2, 5))[..]);
}

#[test]
fn same_host_asid_different_tables_get_different_real_asids() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 4, T1);
    h.set_cd(CD_B, 4, T2);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.real.take();
    h.submit(&[cfgi_ste(SID_NET), cfgi_ste(SID_BLK), SYNC]);
    let mut want = shadow_install(SID_NET, slot(0, 0), shadow(4, T1, 4));
    want.extend(shadow_install(SID_BLK, slot(1, 0), shadow(4, T2, 0xffff)));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want);
    // The host's TLBI_NH_ASID(4) and TLBI_NH_VA reach both.
    h.submit(&[tlbi_asid(4), [0x12 | (4 << 48), 0x5000], SYNC]);
    let tlbi = |asid| RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid });
    let va = |asid| {
        RealOp::Command(RealCommand::TlbiNhVa { vmid: HOST_VMID, asid, addr: 0x5000, leaf: false })
    };
    assert_eq!(h.real.take(), vec![tlbi(4), tlbi(0xffff), va(4), va(0xffff), RealOp::Sync]);
    // The same tables on both: one context, one real ASID.
    h.set_cd(CD_B, 4, T1);
    h.submit(&[cfgi_cd(SID_BLK), SYNC]);
    assert_eq!(h.smmu.real_asid(SID_BLK), Some(4));
    let key = asid::ContextKey { host_asid: 4, ttb0: Some(T1), ttb1: None };
    assert_eq!(h.smmu.asids().state(4), Some(RealState::Live { key, users: 2 }));
    assert_eq!(h.smmu.asids().retiring().collect::<Vec<_>>(), vec![0xffff]);
}

#[test]
fn tlbis_are_translated_to_real_asids_with_the_host_vmid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 9, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    h.real.take();
    h.submit(&[
        [0x10 | (7 << 32), 0],
        tlbi_asid(9),
        [0x12 | (9 << 48), 0x1234_5001],
        [0x13, 0x6000],
        tlbi_asid(0x33),
        [0x12 | (0x33 << 48), 0x1000],
        [0x18_0000_5005, 0],
        [0x18_0000_0006, 0],
        [0x01 | (0x8 << 32), 0],
        cfgi_cd(SID_NET),
        SYNC,
    ]);
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Command(RealCommand::TlbiNhAll { vmid: HOST_VMID }),
            RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 9 }),
            RealOp::Command(RealCommand::TlbiNhVa {
                vmid: HOST_VMID,
                asid: 9,
                addr: 0x1234_5000,
                leaf: true
            }),
            RealOp::Command(RealCommand::TlbiNhVaa { vmid: HOST_VMID, addr: 0x6000, leaf: false }),
            // ASID 0x33 names no context: nothing of it can be cached. CFGI_CD for stream
            // 0x18 (not the host's): dropped; prefetch: dropped; CFGI_CD of an unchanged CD:
            // nothing to do.
            RealOp::Sync,
        ]
    );
}

/// The FastRPC pattern: a context is torn down without any TLBI and its ASID reused at once.
fn stale_asid_sequence(h: &mut Host) {
    h.linux_reset();
    h.set_cd(CD_A, 7, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Release: the CD goes invalid (Linux clears V, then CFGI_CD + SYNC) - no TLBI.
    h.clear_cd(CD_A);
    h.submit(&[cfgi_cd(SID_NET), SYNC]);
    h.real.take();
    // A new context (new tables) reuses ASID 7 on the other device.
    h.set_cd(CD_B, 7, T2);
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
}

#[test]
fn reusing_a_retiring_asid_forces_tlbi_and_sync_first() {
    let mut h = Host::new(true);
    stale_asid_sequence(&mut h);
    let mut want =
        vec![RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 7 }), RealOp::Sync];
    want.extend(shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7)));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want, "the invalidation completes before the new context exists");
    let s = h.smmu.stats().asids;
    assert_eq!((s.retired, s.freed, s.forced_flushes, s.unprotected_reuses), (1, 1, 1, 0));
}

#[test]
fn retirement_order_is_config_sync_then_tlbi_then_sync() {
    // Issue 11 §6 (b): the old context's real ASID may only be invalidated for reuse once the
    // switch away from it has completed; a TLBI issued before that (even in the same batch)
    // does not free it.
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 7, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    h.real.take();
    h.clear_cd(CD_A);
    h.submit(&[cfgi_cd(SID_NET), tlbi_asid(7), SYNC]);
    let mut want = shadow_install(SID_NET, slot(0, 1), [0; CD_WORDS]);
    want.extend([
        RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 7 }),
        RealOp::Sync,
    ]);
    assert_eq!(h.real.take(), want);
    assert_eq!(
        h.smmu.asids().state(7),
        Some(RealState::Retiring { host_asid: 7, invalidated: false }),
        "the TLBI may have run before the switch: not counted"
    );
    // A new context of host ASID 7 now: the config change is synced, so warden's own TLBI +
    // sync come after that sync and before the new context is installed.
    h.set_cd(CD_B, 7, T2);
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
    let mut want =
        vec![RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 7 }), RealOp::Sync];
    want.extend(shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7)));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want);
    // In-place rewrite (same host ASID, new tables) without any sync between: the new context
    // gets another real ASID while the old one is still live, so there is nothing to flush
    // early; the host's TLBI + SYNC after the switch's sync then free the old one.
    h.set_cd(CD_B, 7, T1);
    h.submit(&[cfgi_cd(SID_BLK)]);
    assert_eq!(h.real.take(), shadow_install(SID_BLK, slot(1, 1), shadow(7, T1, 0xffff)));
    h.submit(&[SYNC, tlbi_asid(7), SYNC]);
    let tlbi = |asid| RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid });
    assert_eq!(h.real.take(), vec![RealOp::Sync, tlbi(7), tlbi(0xffff), RealOp::Sync]);
    assert_eq!(h.smmu.asids().state(7), None, "freed");
    // Two CD changes without a sync: the second waits for the first to complete before it
    // reuses the slot the SMMU may still be reading.
    h.set_cd(CD_B, 7, T2);
    h.submit(&[cfgi_cd(SID_BLK)]);
    h.set_cd(CD_B, 8, T2);
    h.submit(&[cfgi_cd(SID_BLK), SYNC]);
    let log = h.real.take();
    assert_eq!(log[..3], shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7))[..]);
    assert_eq!(log[3], RealOp::Sync, "slot 1 is rewritten only after this");
    assert_eq!(log[4..7], shadow_install(SID_BLK, slot(1, 1), shadow(8, T2, 8))[..]);
}

#[test]
fn with_g3_off_the_reuse_goes_through_unflushed() {
    let mut h = Host::new(false);
    stale_asid_sequence(&mut h);
    let mut want = shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want, "the retiring real ASID 7, unflushed: stale entries stay");
    let s = h.smmu.stats().asids;
    assert_eq!((s.forced_flushes, s.unprotected_reuses), (0, 1));
}

#[test]
fn host_tlbi_and_sync_free_the_asid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 7, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Detach by switching the STE to bypass (domain teardown), with a proper TLBI + SYNC.
    h.set_ste(SID_NET, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), SYNC, tlbi_asid(7)]);
    assert_eq!(
        h.smmu.asids().state(7),
        Some(RealState::Retiring { host_asid: 7, invalidated: true }),
        "TLBI issued, not yet synced"
    );
    h.submit(&[SYNC]);
    assert_eq!(h.smmu.asids().state(7), None, "free");
    h.real.take();
    h.set_cd(CD_B, 7, T2);
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
    let mut want = shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want);
    assert_eq!(h.smmu.stats().asids.forced_flushes, 0);
}

#[test]
fn hostile_stes_are_refused_with_events() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    // Stage 2 requested.
    let mut s2 = stage1_ste(CD_A);
    s2[0] |= 0b010 << 1; // Config 0b111
    h.set_ste(SID_NET, s2);
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Invalid));
    assert_eq!(h.event(0), [0x8_0000_0004, 0, 0, 0], "C_BAD_STE");
    assert_eq!(h.read(EVTQ_PROD), 1);
    // Stall requested.
    let mut stall = stage1_ste(CD_A);
    stall[1] |= 1 << 27;
    h.set_ste(SID_BLK, stall);
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
    assert_eq!(h.smmu.installed(SID_BLK), Some(RealSte::Invalid));
    assert_eq!(h.event(1)[0], 0x10_0000_0004);
    // The L2 table moved into warden memory: F_STE_FETCH with the address.
    h.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN));
    h.mem.write_u64(STRTAB, WARDEN | 9);
    h.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
    assert_eq!(h.event(2), [0x8_0000_0003, 0, 0, WARDEN + 0x200]);
    assert_eq!(h.event(3), [0x10_0000_0003, 0, 0, WARDEN + 0x400]);
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Invalid));
    let s = h.smmu.stats();
    assert_eq!(s.ste_refusals, 2);
    assert_eq!(s.events_written, 4);
    assert_eq!(h.read(GERROR), 0, "STE problems are events, not global errors");
}

#[test]
fn cd_pointer_outside_host_memory_faults_at_stage_2_naming_the_host_cd() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.set_ste(SID_NET, stage1_ste(WARDEN + 0x40));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // The real STE points at the arena's unmapped page: the real SMMU's CD fetch faults at
    // stage 2, as it would for the host's CD, and nothing of warden's is ever read as a CD.
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Install(SID_NET, nested(UNMAPPED)),
            RealOp::Command(RealCommand::CfgiCdAll { sid: SID_NET }),
            RealOp::Sync
        ]
    );
    assert_eq!(h.smmu.stream_cd(SID_NET), Some(StreamCd::Unreadable { host_ptr: WARDEN + 0x40 }));
    assert_eq!(h.smmu.real_asid(SID_NET), None);
    assert_eq!(h.smmu.stats().cd_unreadable, 1);
    // The fault names the host's CD when forwarded.
    let fault = [(u64::from(SID_NET) << 32) | 0x10, (1 << 39) | (1 << 35), 0x1000, UNMAPPED];
    h.smmu.forward_event(&fault, &mut h.mem);
    assert_eq!(h.event(0)[3], WARDEN);
}

#[test]
fn queue_in_warden_memory_is_an_abort_error() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.write(CR0, 4, u64::from(CR0_EVTQEN | CR0_SMMUEN));
    h.write(CMDQ_BASE, 8, WARDEN | 8);
    h.write(CMDQ_PROD, 4, 0);
    h.write(CMDQ_CONS, 4, 0);
    h.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
    let n = h.write(CMDQ_PROD, 4, 1);
    assert!(n.gerror_irq);
    assert_eq!(h.read(CMDQ_CONS) >> 24, 2, "CERROR_ABT");
    assert_eq!(h.read(GERROR) & 1, 1);
    assert_eq!(h.smmu.stats().fetch_aborts, 1);
}

#[test]
fn illegal_command_runs_linux_recovery() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    let start = h.prod;
    h.submit(&[[0x2a, 0], SYNC]); // TLBI_S2_IPA: no stage 2
    assert_eq!(h.read(CMDQ_CONS), (1 << 24) | u64::from(start));
    assert_eq!(h.smmu.stats().illegal_commands, 1);
    // arm_smmu_cmdq_skip_err: overwrite with CMD_SYNC, then acknowledge.
    h.mem.write_words(CMDQ + u64::from(start) * 16, &SYNC);
    let gerror = h.read(GERROR);
    h.write(GERRORN, 4, gerror);
    assert_eq!(h.read(CMDQ_CONS) & 0x1ff, u64::from(h.prod), "drained");
}

#[test]
fn sync_flood_is_bounded_and_polling_makes_progress() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    // Fill the queue with 256 CMD_SYNCs: the PROD write consumes 64, each CONS poll 64 more.
    let cmds = vec![SYNC; 256];
    let polls = h.submit(&cmds);
    assert_eq!(polls, 3);
    assert!(h.real.take().is_empty(), "nothing to complete: no real syncs");
    assert_eq!(h.smmu.stats().skipped_syncs, 256 + 1, "and the reset's first one");
}

#[test]
fn a_sync_completes_at_the_prod_write_and_its_poll_needs_no_back_end() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    // Register writes that leave nothing for the back end.
    assert!(h.smmu.write_register(IRQ_CTRL, 4, 0).is_empty());
    assert!(h.smmu.write_register(EVTQ_CONS, 4, 0).is_empty());
    assert!(!h.smmu.read_needs_backend(IDR0, 4));
    // TLBI + SYNC: the CMDQ_PROD write consumes both and completes the sync.
    h.queue(&[[0x10, 0], SYNC]);
    let pending = h.smmu.write_register(CMDQ_PROD, 4, u64::from(h.prod));
    assert_eq!(pending, PendingWrite { cmdq_kick: true, ..PendingWrite::default() });
    h.smmu.finish_write(pending, &mut h.mem, &mut h.real);
    assert_eq!(
        h.real.take(),
        vec![RealOp::Command(RealCommand::TlbiNhAll { vmid: 1 }), RealOp::Sync]
    );
    assert!(!h.smmu.read_needs_backend(CMDQ_CONS, 4), "nothing left: CONS from the registers");
    assert_eq!(h.smmu.read_register(CMDQ_CONS, 4) as u32 & 0x1ff, h.prod, "the sync is done");
    // More than one budget: the first poll needs the back end, and consumes the rest.
    h.queue(&vec![SYNC; 65]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert!(h.smmu.read_needs_backend(CMDQ_CONS, 4));
    assert_eq!(h.smmu.mmio_read(CMDQ_CONS, 4, &mut h.mem, &mut h.real).0 as u32 & 0x1ff, h.prod);
    assert!(!h.smmu.read_needs_backend(CMDQ_CONS, 4));
    // A stopped queue (an illegal command) is not consumed until GERRORN acknowledges it.
    h.queue(&[[0x7f, 0], SYNC]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert_ne!(h.read(GERROR) & 1, h.read(GERRORN) & 1, "CMDQ_ERR active");
    assert!(!h.smmu.read_needs_backend(CMDQ_CONS, 4), "error active: nothing to consume");
}

#[test]
fn real_sync_failure_keeps_cons_and_retries() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.real.fail_syncs = 2;
    h.submit(&[[0x10, 0], SYNC]);
    assert_eq!(
        h.real.take(),
        vec![RealOp::Command(RealCommand::TlbiNhAll { vmid: 1 }), RealOp::Sync]
    );
    assert_eq!(h.smmu.stats().retries, 2);
}

#[test]
fn disabling_the_smmu_with_gbpa_abort_aborts_every_host_stream() {
    let mut h = Host::new(true);
    h.linux_reset();
    // Linux's arm_smmu_update_gbpa(smmu, GBPA_ABORT, 0): while enabled it changes no stream.
    h.real.take();
    h.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT));
    assert!(h.real.take().is_empty(), "GBPA does not apply while SMMUEN = 1");
    h.set_cd(CD_A, 5, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.set_ste(SID_BLK, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), cfgi_ste(SID_BLK), SYNC]);
    h.real.take();
    h.write(CR0, 4, 0);
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Install(SID_NET, RealSte::Abort),
            RealOp::Install(SID_BLK, RealSte::Abort),
            RealOp::Sync
        ]
    );
    assert_eq!(
        h.smmu.asids().state(5),
        Some(RealState::Retiring { host_asid: 5, invalidated: false })
    );
    // Re-enabling re-reads the host's STEs and CDs.
    h.write(CR0, 4, u64::from(CR0_SMMUEN));
    assert_eq!(h.smmu.installed(SID_NET), Some(nested(slot(0, 0))));
    assert_eq!(h.smmu.installed(SID_BLK), Some(RealSte::Stage2Only));
    assert_eq!(h.smmu.stats().asids.forced_flushes, 1, "ASID 5 came back while retiring");
}

#[test]
fn real_events_are_forwarded_for_host_streams_only() {
    let mut h = Host::new(true);
    h.linux_reset();
    let fault = [(u64::from(SID_NET) << 32) | 0x10, 1 << 39, 0x4800_0000, 0];
    assert!(h.smmu.forward_event(&fault, &mut h.mem).evtq_irq);
    assert_eq!(h.event(0), fault);
    let foreign = [(0x99u64 << 32) | 0x10, 0, 0, 0];
    assert_eq!(h.smmu.forward_event(&foreign, &mut h.mem), Notify::default());
    assert_eq!(h.read(EVTQ_PROD), 1);
    // With the host's event queue disabled the record is discarded, and counted as such.
    h.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_SMMUEN));
    assert_eq!(h.smmu.forward_event(&fault, &mut h.mem), Notify::default());
    assert_eq!(h.read(EVTQ_PROD), 1);
    let s = h.smmu.stats();
    assert_eq!(
        (s.events_written, s.events_lost_disabled, s.events_lost_overflow, s.events_lost_abort),
        (1, 1, 0, 0)
    );
}

#[test]
fn vmid_reuse_is_flushed_while_retiring() {
    let mut vmids = RetireTracker::new();
    let mut real = RecordingSmmu::default();
    assert_eq!(reuse_vmid(&mut vmids, 3, &mut real), Ok(false));
    vmids.release(3);
    assert_eq!(reuse_vmid(&mut vmids, 3, &mut real), Ok(true));
    assert_eq!(
        real.take(),
        vec![RealOp::Command(RealCommand::TlbiS12Vmall { vmid: 3 }), RealOp::Sync]
    );
    assert_eq!(vmids.state(3), Some(IdState::Live(1)));
    real.fail_syncs = 1;
    vmids.release(3);
    assert_eq!(reuse_vmid(&mut vmids, 3, &mut real), Err(BackendError));
    assert!(vmids.needs_flush(3), "still retiring after a failed flush");
    let _: Vec<RealOp> = real.take();
}

#[test]
fn g3_test_switch_turns_forced_flushes_off_and_on() {
    use super::test_switch::{G3_OFFSET, KEY, ON};
    let mut h = Host::new(true);
    assert_eq!(h.read(G3_OFFSET), u64::from(KEY | ON));
    // Without the key, or as a 64-bit access, nothing changes.
    h.write(G3_OFFSET, 4, 0);
    h.write(G3_OFFSET, 4, u64::from(0x1234_0000u32));
    h.write(G3_OFFSET, 8, u64::from(KEY));
    assert!(h.smmu.g3_enabled());
    assert_eq!(h.smmu.registers().bad_accesses(), 1, "only the 64-bit access is a bad one");
    h.write(G3_OFFSET, 4, u64::from(KEY));
    assert!(!h.smmu.g3_enabled());
    assert_eq!(h.read(G3_OFFSET), u64::from(KEY));
    stale_asid_sequence(&mut h);
    let mut want = shadow_install(SID_BLK, slot(1, 0), shadow(7, T2, 7));
    want.push(RealOp::Sync);
    assert_eq!(h.real.take(), want);
    assert_eq!(h.smmu.stats().asids.unprotected_reuses, 1);
    // Back on: the same sequence is flushed again.
    let mut h2 = Host::new(false);
    h2.write(G3_OFFSET, 4, u64::from(KEY | ON));
    assert!(h2.smmu.g3_enabled());
    stale_asid_sequence(&mut h2);
    assert_eq!(h2.smmu.stats().asids.forced_flushes, 1);
}

#[test]
fn a_disabled_smmu_in_bypass_gives_every_host_stream_stage_2_alone() {
    let mut h = Host::new(true);
    // A bootloader that never touches the SMMU: its DMA goes through warden's stage 2 (which
    // leaves out warden, the carveouts and donated pages), never real bypass.
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Stage2Only));
    assert_eq!(h.smmu.installed(SID_BLK), Some(RealSte::Stage2Only));
    // GBPA.ABORT = 1 while disabled: every stream aborts, synced before the update completes.
    h.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT));
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Install(SID_NET, RealSte::Abort),
            RealOp::Install(SID_BLK, RealSte::Abort),
            RealOp::Sync
        ]
    );
    // An update keeping ABORT changes nothing.
    h.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT | (1 << 12)));
    assert!(h.real.take().is_empty());
    // Bypass again: stage 2 alone.
    h.write(GBPA, 4, u64::from(GBPA_UPDATE));
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Install(SID_NET, RealSte::Stage2Only),
            RealOp::Install(SID_BLK, RealSte::Stage2Only),
            RealOp::Sync
        ]
    );
    assert_eq!(h.smmu.stats().bypass_requests, 1);
    // Linux takes over: enabled, the host's STEs rule (stage 1 nested, bypass stage 2 alone).
    h.linux_reset();
    h.set_cd(CD_A, 5, T1);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.set_ste(SID_BLK, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), cfgi_ste(SID_BLK), SYNC]);
    assert_eq!(h.smmu.installed(SID_NET), Some(nested(slot(0, 0))));
    h.real.take();
    // Linux's shutdown (arm_smmu_device_disable) with GBPA still bypass: back to stage 2
    // alone; the stage-1 context is released and its real ASID retires.
    h.write(CR0, 4, 0);
    assert_eq!(
        h.real.take(),
        vec![RealOp::Install(SID_NET, RealSte::Stage2Only), RealOp::Sync],
        "SID_BLK was stage 2 alone already"
    );
    assert_eq!(
        h.smmu.asids().state(5),
        Some(RealState::Retiring { host_asid: 5, invalidated: false })
    );
    // A real event while disabled is not forwarded: a disabled SMMU records none.
    let fault = [(u64::from(SID_BLK) << 32) | 0x10, 1 << 39, WARDEN, 0];
    h.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN));
    assert_eq!(h.smmu.forward_event(&fault, &mut h.mem), Notify::default());
    assert_eq!(h.read(EVTQ_PROD), 0);
    assert_eq!(h.smmu.stats().events_lost_disabled, 1);
}

/// Linux's MSI-signalled CMD_SYNC (`arm_smmu_cmdq_build_sync_cmd` with ARM_SMMU_OPT_MSIPOLL):
/// CS = SIG_IRQ, MSH = inner, MSIATTR = OIWB, MSIData 0, MSIAddress = the command's own slot.
fn msi_sync(slot_index: u32) -> [u64; 2] {
    [0x46 | (1 << 12) | (3 << 22) | (0xf << 24), CMDQ + u64::from(slot_index & 0xff) * 16]
}

#[test]
fn idr0_advertises_msi_and_linux_waits_on_the_sync_slot() {
    let mut h = Host::new(true);
    assert_ne!(h.read(IDR0) as u32 & IDR0_MSI, 0, "IDR0.MSI");
    h.linux_reset();
    h.real.take();
    // Linux clears the MSI address registers before it falls back to wired interrupts.
    h.write(GERROR_IRQ_CFG0, 8, 0);
    h.write(EVTQ_IRQ_CFG0, 8, 0);
    let sync_slot = h.prod + 1;
    h.queue(&[tlbi_asid(7), msi_sync(sync_slot)]);
    let word = CMDQ + u64::from(sync_slot & 0xff) * 16;
    assert_ne!(h.mem.read_u64(word) as u32, 0);
    // The PROD write completes the sync and writes MSIData (0) over the slot's first word;
    // the host never reads CMDQ_CONS.
    let notify = h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert_eq!(h.mem.read_u64(word) as u32, 0, "the completion word");
    assert_eq!(h.mem.read_u64(word) >> 32, 0, "MSIData 0 in the low word; the rest is 0 too");
    assert_eq!(h.mem.read_u64(word + 8), word, "word 1 untouched");
    assert_eq!(notify, Notify::default(), "no wired interrupt for an MSI");
    assert_eq!(h.smmu.registers().cmdq_cons(), h.prod);
    assert_eq!(h.read(GERROR), 0);
    let s = h.smmu.stats();
    assert_eq!((s.msi_writes, s.msi_refusals), (1, 0));
    // Data other than 0 is written as given (32 bits, little-endian).
    let slot = h.prod;
    let mut cmd = msi_sync(slot);
    cmd[0] |= 0x1234_5678 << 32;
    cmd[1] = 0x4050_0004;
    h.mem.write_u64(0x4050_0000, u64::MAX);
    h.queue(&[cmd]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert_eq!(h.mem.read_u64(0x4050_0000), 0x1234_5678_ffff_ffff);
}

/// G1: the completion word is written only into host memory warden may touch. A donated page,
/// warden's memory and an MMIO address are refused with the architecture's error for an
/// aborted MSI (GERROR.MSI_CMDQ_ABT_ERR, its interrupt raised), and nothing is written there;
/// the sync still completes (CONS moves past it).
#[test]
fn an_msi_outside_host_memory_is_refused_with_gerror() {
    const DONATED: u64 = 0x4060_0000;
    const MMIO: u64 = 0x0900_0000;
    for (address, what) in [(DONATED, "donated"), (WARDEN, "warden"), (MMIO, "MMIO")] {
        let mut h = Host::new(true);
        h.linux_reset();
        h.mem.write_u64(DONATED, u64::MAX);
        h.mem.take_from_host(MemRange::new(DONATED, DONATED + 0x1000));
        h.mem.write_u64(address & !7, u64::MAX);
        let mut cmd = msi_sync(h.prod);
        cmd[1] = address & !3;
        h.queue(&[cmd]);
        let notify = h.write(CMDQ_PROD, 4, u64::from(h.prod));
        assert_eq!(h.mem.read_u64(address & !7), u64::MAX, "{what}: nothing written");
        assert_eq!(
            h.read(GERROR) as u32 & GERROR_MSI_CMDQ_ABT_ERR,
            GERROR_MSI_CMDQ_ABT_ERR,
            "{what}"
        );
        assert!(notify.gerror_irq, "{what}: GERROR's interrupt");
        assert_eq!(h.smmu.registers().cmdq_cons(), h.prod, "{what}: the sync completed");
        assert!(!h.smmu.registers().cmdq_error_active(), "{what}: the queue keeps running");
        assert_eq!(h.smmu.stats().msi_refusals, 1, "{what}");
        // Acknowledged, the next sync to a good address works.
        let gerror = h.read(GERROR);
        h.write(GERRORN, 4, gerror);
        let slot = h.prod;
        h.queue(&[msi_sync(slot)]);
        h.write(CMDQ_PROD, 4, u64::from(h.prod));
        assert_eq!(h.mem.read_u64(CMDQ + u64::from(slot & 0xff) * 16) as u32, 0, "{what}");
        assert_eq!(h.read(GERROR), gerror, "{what}: no new error");
    }
}

/// A host that waits on memory never polls CMDQ_CONS: once it has used an MSI sync, one PROD
/// write consumes the whole queue (Linux's batch of 64 commands and its sync is 65), while a
/// host that polls keeps the per-trap budget.
#[test]
fn a_host_waiting_on_memory_gets_its_whole_batch_consumed() {
    let mut h = Host::new(true);
    h.linux_reset();
    let slot = h.prod;
    h.queue(&[msi_sync(slot)]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    let mut batch = vec![tlbi_asid(3); 64];
    batch.push(msi_sync(h.prod + 64));
    let word = CMDQ + u64::from((h.prod + 64) & 0xff) * 16;
    h.queue(&batch);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert_eq!(h.smmu.registers().cmdq_cons(), h.prod, "all 65 at the PROD write");
    assert_eq!(h.mem.read_u64(word) as u32, 0);
    // Another host that polls CMDQ_CONS: the budget per trap, as before.
    let mut h = Host::new(true);
    h.linux_reset();
    h.queue(&vec![SYNC; 100]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert_eq!(h.smmu.registers().cmdq_cons(), (h.prod + 512 - 36) & 0x1ff, "64 of 100");
}

/// The event queue's and GERROR's MSIs: written where the host configured them (registers
/// guarded by their IRQEN), refused outside host memory with MSI_EVTQ_ABT_ERR /
/// MSI_GERROR_ABT_ERR; an address of 0 keeps the wired interrupt.
#[test]
fn event_and_gerror_msis_go_to_host_memory_only() {
    const EVTQ_MSI: u64 = 0x4070_0000;
    const GERROR_MSI: u64 = 0x4070_0040;
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_ste(SID_NET, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Guarded: ignored while the interrupts are enabled (linux_reset enabled both).
    h.write(EVTQ_IRQ_CFG0, 8, EVTQ_MSI);
    assert_eq!(h.read(EVTQ_IRQ_CFG0), 0);
    h.write(IRQ_CTRL, 4, 0);
    h.write(EVTQ_IRQ_CFG0, 8, EVTQ_MSI | 3);
    h.write(EVTQ_IRQ_CFG1, 4, 0xe0);
    h.write(EVTQ_IRQ_CFG2, 4, 0xff);
    h.write(GERROR_IRQ_CFG0, 8, GERROR_MSI);
    h.write(GERROR_IRQ_CFG1, 4, 0x6e);
    assert_eq!((h.read(EVTQ_IRQ_CFG0), h.read(EVTQ_IRQ_CFG2)), (EVTQ_MSI, 0x3f));
    h.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN));
    let record = [(u64::from(SID_NET) << 32) | 0x10, 0, 0x1000, 0x1000];
    let notify = h.smmu.forward_event(&record, &mut h.mem);
    assert_eq!(notify, Notify::default(), "an MSI, not the wired line");
    assert_eq!(h.mem.read_u64(EVTQ_MSI) as u32, 0xe0);
    assert_eq!(h.event(0)[0] >> 32, u64::from(SID_NET));
    // The event MSI's address taken from the host (donated): MSI_EVTQ_ABT_ERR, whose GERROR
    // interrupt is itself an MSI.
    h.mem.take_from_host(MemRange::new(EVTQ_MSI, EVTQ_MSI + 0x40));
    let notify = h.smmu.forward_event(&record, &mut h.mem);
    assert_eq!(notify, Notify::default());
    assert_eq!(h.read(GERROR) as u32 & GERROR_MSI_EVTQ_ABT_ERR, GERROR_MSI_EVTQ_ABT_ERR);
    assert_eq!(h.mem.read_u64(GERROR_MSI) as u32, 0x6e);
    // GERROR's MSI refused too: recorded in GERROR, no interrupt at all.
    h.mem.take_from_host(MemRange::new(GERROR_MSI, GERROR_MSI + 0x40));
    let gerror = h.read(GERROR);
    h.write(GERRORN, 4, gerror);
    let notify = h.smmu.forward_event(&record, &mut h.mem);
    assert_eq!(notify, Notify::default());
    let active = (h.read(GERROR) ^ h.read(GERRORN)) as u32;
    assert_eq!(active, GERROR_MSI_EVTQ_ABT_ERR | GERROR_MSI_GERROR_ABT_ERR);
    let s = h.smmu.stats();
    assert_eq!((s.msi_writes, s.msi_refusals), (2, 3));
    // Address 0: the wired interrupt again.
    h.write(IRQ_CTRL, 4, 0);
    h.write(EVTQ_IRQ_CFG0, 8, 0);
    h.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_EVTQ_IRQEN));
    let notify = h.smmu.forward_event(&record, &mut h.mem);
    assert!(notify.evtq_irq);
}

/// Issue 16's fast CMD_SYNC: a sync with nothing issued since the last one asks nothing of the
/// real SMMU (so warden's trap path never takes its lock or the frame pool's), and the queue's
/// ownership is checked again at every PROD write: a queue donated between two writes is
/// CERROR_ABT at the second, with nothing executed and no MSI written.
#[test]
fn an_idle_sync_needs_no_real_smmu_and_a_queue_donated_between_writes_is_refused() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    let slot = h.prod;
    h.queue(&[msi_sync(slot)]);
    h.write(CMDQ_PROD, 4, u64::from(h.prod));
    let word = CMDQ + u64::from(slot & 0xff) * 16;
    assert_eq!(h.mem.read_u64(word) as u32, 0, "completed");
    assert!(h.real.take().is_empty(), "nothing issued: no real SMMU operation");
    // The queue's page changes owner (a DONATE) before the next PROD write.
    let slot = h.prod;
    h.queue(&[tlbi_asid(3), msi_sync(slot + 1)]);
    let word = CMDQ + u64::from((slot + 1) & 0xff) * 16;
    h.mem.take_from_host(MemRange::new(CMDQ, CMDQ + 0x1000));
    let notify = h.write(CMDQ_PROD, 4, u64::from(h.prod));
    assert!(notify.gerror_irq);
    assert_eq!(h.read(CMDQ_CONS), (2 << 24) | u64::from(slot), "CERROR_ABT at the first");
    assert!(h.real.take().is_empty(), "nothing executed");
    assert_ne!(h.mem.read_u64(word) as u32, 0, "no completion written");
    assert_eq!(h.smmu.stats().fetch_aborts, 1);
}
