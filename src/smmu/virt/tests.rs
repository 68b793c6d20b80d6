//! End-to-end tests of the virtual SMMU: a host driving it the way Linux's arm-smmu-v3 does,
//! and hostile hosts.

use alloc::vec;
use alloc::vec::Vec;

use super::asid::{IdState, RetireTracker};
use super::cmdq::RealCommand;
use super::fake::{FakeMemory, RealOp, RecordingSmmu};
use super::regs::Advertised;
use super::ste::{RealSte, Stage1Context};
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

struct Host {
    smmu: VirtSmmu,
    mem: FakeMemory,
    real: RecordingSmmu,
    prod: u32,
}

fn config(g3: bool) -> VirtConfig {
    VirtConfig {
        advertised: Advertised {
            sid_bits: 16,
            oas_field: 2,
            asid16: true,
            cmdq_log2: 8,
            evtq_log2: 7,
        },
        host_vmid: HOST_VMID,
        host_sids: vec![SID_NET, SID_BLK],
        cmd_budget: 64,
        g3_enabled: g3,
    }
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

    fn read(&mut self, offset: u32) -> u64 {
        self.smmu.mmio_read(offset, 4, &mut self.mem, &mut self.real).0
    }

    fn write(&mut self, offset: u32, size: u8, value: u64) -> Notify {
        self.smmu.mmio_write(offset, size, value, &mut self.mem, &mut self.real)
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
        // Linux's CD: T0SZ, TG0, IRGN/ORGN/SH, EPD1, V, IPS, AA64, R, A, ASET, ASID.
        let w0 = 16 | (1 << 30) | (1 << 31) | (2 << 32) | (1 << 41) | (1 << 45) | (1 << 46);
        self.mem.write_words(addr, &[w0 | (u64::from(asid) << 48), ttb0, 0, 0, 0, 0, 0, 0]);
    }

    fn clear_cd(&mut self, addr: u64) {
        self.mem.write_words(addr, &[0; 8]);
    }

    /// Writes commands at PROD, publishes them, and polls CONS (each poll is a trap) until the
    /// queue drains or errors. Returns the number of CONS polls.
    fn submit(&mut self, cmds: &[[u64; 2]]) -> u32 {
        for c in cmds {
            let idx = u64::from(self.prod & 0xff);
            self.mem.write_words(CMDQ + idx * 16, c);
            self.prod = (self.prod + 1) & 0x1ff;
        }
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

fn nested(cd: u64) -> RealSte {
    RealSte::Nested(Stage1Context { ctx_ptr: cd, cir: 1, cor: 1, csh: 3 })
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
    // GBPA: Linux only clears ABORT when it wants bypass; refused.
    h.write(GBPA, 4, u64::from(GBPA_UPDATE));
    assert_eq!(h.read(GBPA), u64::from(GBPA_ABORT));
    // Host STEs before enabling: bus 0 initialised to abort by Linux.
    for sid in [SID_NET, SID_BLK] {
        h.set_ste(sid, [1, 0, 0, 0, 0, 0, 0, 0]);
    }
    h.linux_reset();
    let log = h.real.take();
    // CFGI_ALL with SMMUEN = 0: both streams abort (GBPA); NSNH_ALL -> S12_VMALL(host).
    assert!(log.contains(&RealOp::Install(SID_NET, RealSte::Abort)));
    assert!(log.contains(&RealOp::Command(RealCommand::TlbiS12Vmall { vmid: HOST_VMID })));
    assert!(log.contains(&RealOp::Sync));
    assert_eq!(h.smmu.installed(SID_NET), Some(RealSte::Abort));
    assert_eq!(h.read(GERROR), 0);
    let s = h.smmu.stats();
    assert_eq!(s.commands, 4);
    assert_eq!(s.bypass_refusals, 1);
    assert_eq!(s.illegal_commands, 0);
}

#[test]
fn stage1_domain_is_nested_and_bypass_is_stage2_only() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.set_cd(CD_A, 5, 0x4100_0000);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.set_ste(SID_BLK, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), cfgi_ste(SID_BLK), SYNC]);
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Install(SID_NET, nested(CD_A)),
            RealOp::Install(SID_BLK, RealSte::Stage2Only),
            RealOp::Sync
        ]
    );
    assert_eq!(h.smmu.asids().context(SID_NET).map(|c| c.asid), Some(5));
    assert_eq!(h.smmu.asids().tracker().state(5), Some(IdState::Live(1)));
    // A stream the host does not own (not in the DT) is not touched.
    h.set_ste(0x20, bypass_ste());
    h.submit(&[cfgi_ste(0x20), SYNC]);
    assert!(h.real.take().is_empty(), "nothing issued, the sync skipped");
    assert_eq!(h.smmu.stats().skipped_syncs, 1);
}

#[test]
fn tlbis_are_forwarded_with_the_host_vmid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.submit(&[
        [0x10 | (7 << 32), 0],
        tlbi_asid(9),
        [0x12 | (9 << 48), 0x1234_5001],
        [0x13, 0x6000],
        [0x18_0000_5005, 0],
        [0x18_0000_0006, 0],
        [0x01 | (0x8 << 32), 0],
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
            // CFGI_CD for stream 0x18 (not the host's): dropped; prefetch: dropped.
            RealOp::Sync,
        ]
    );
    // CFGI_CD for a host stream is forwarded (SSID forced to 0: no substreams).
    h.submit(&[[0x05 | (u64::from(SID_NET) << 32) | (3 << 12), 1], SYNC]);
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Command(RealCommand::CfgiCd { sid: SID_NET, ssid: 0, leaf: true }),
            RealOp::Sync
        ]
    );
}

/// The FastRPC pattern: a context is torn down without any TLBI and its ASID reused at once.
fn stale_asid_sequence(h: &mut Host) {
    h.linux_reset();
    h.set_cd(CD_A, 7, 0x4100_0000);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Release: the CD goes invalid (Linux clears V, then CFGI_CD + SYNC) - no TLBI.
    h.clear_cd(CD_A);
    h.submit(&[cfgi_cd(SID_NET), SYNC]);
    h.real.take();
    // A new context (new tables) reuses ASID 7 on the other device.
    h.set_cd(CD_B, 7, 0x4200_0000);
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
}

#[test]
fn reusing_a_retiring_asid_forces_tlbi_and_sync_first() {
    let mut h = Host::new(true);
    stale_asid_sequence(&mut h);
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Command(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 7 }),
            RealOp::Sync,
            RealOp::Install(SID_BLK, nested(CD_B)),
            RealOp::Sync,
        ],
        "the invalidation completes before the new context is installed"
    );
    let s = h.smmu.stats().asids;
    assert_eq!((s.retired, s.forced_flushes, s.unprotected_reuses), (1, 1, 0));
}

#[test]
fn with_g3_off_the_reuse_goes_through_unflushed() {
    let mut h = Host::new(false);
    stale_asid_sequence(&mut h);
    assert_eq!(h.real.take(), vec![RealOp::Install(SID_BLK, nested(CD_B)), RealOp::Sync]);
    let s = h.smmu.stats().asids;
    assert_eq!((s.forced_flushes, s.unprotected_reuses), (0, 1));
}

#[test]
fn host_tlbi_and_sync_free_the_asid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 7, 0x4100_0000);
    h.set_ste(SID_NET, stage1_ste(CD_A));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Detach by switching the STE to bypass (domain teardown), with a proper TLBI + SYNC.
    h.set_ste(SID_NET, bypass_ste());
    h.submit(&[cfgi_ste(SID_NET), SYNC, tlbi_asid(7)]);
    assert_eq!(
        h.smmu.asids().tracker().state(7),
        Some(IdState::Retiring { invalidated: true }),
        "TLBI issued, not yet synced"
    );
    h.submit(&[SYNC]);
    assert_eq!(h.smmu.asids().tracker().state(7), None, "free");
    h.real.take();
    h.set_cd(CD_B, 7, 0x4200_0000);
    h.set_ste(SID_BLK, stage1_ste(CD_B));
    h.submit(&[cfgi_ste(SID_BLK), SYNC]);
    assert_eq!(h.real.take(), vec![RealOp::Install(SID_BLK, nested(CD_B)), RealOp::Sync]);
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
fn cd_pointer_outside_host_memory_leaves_no_live_asid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_ste(SID_NET, stage1_ste(WARDEN));
    h.submit(&[cfgi_ste(SID_NET), SYNC]);
    // Installed nested: the real SMMU's CD fetch goes through warden's stage 2 and faults.
    assert_eq!(h.smmu.installed(SID_NET), Some(nested(WARDEN)));
    assert_eq!(h.smmu.asids().context(SID_NET), None);
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
    assert_eq!(h.smmu.stats().skipped_syncs, 256);
}

#[test]
fn real_sync_failure_keeps_cons_and_retries() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.real.fail_syncs = 2;
    h.submit(&[tlbi_asid(3), SYNC]);
    assert_eq!(
        h.real.take(),
        vec![RealOp::Command(RealCommand::TlbiNhAsid { vmid: 1, asid: 3 }), RealOp::Sync]
    );
    assert_eq!(h.smmu.stats().retries, 2);
}

#[test]
fn disabling_the_smmu_aborts_every_host_stream() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.set_cd(CD_A, 5, 0x4100_0000);
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
    assert_eq!(h.smmu.asids().tracker().state(5), Some(IdState::Retiring { invalidated: false }));
    // Re-enabling re-reads the host's STEs.
    h.write(CR0, 4, u64::from(CR0_SMMUEN));
    assert_eq!(h.smmu.installed(SID_NET), Some(nested(CD_A)));
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
    assert_eq!(reuse_vmid(&mut vmids, 3, &mut real), Err(RealSmmuError));
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
    assert_eq!(h.real.take(), vec![RealOp::Install(SID_BLK, nested(CD_B)), RealOp::Sync]);
    assert_eq!(h.smmu.stats().asids.unprotected_reuses, 1);
    // Back on: the same sequence is flushed again.
    let mut h2 = Host::new(false);
    h2.write(G3_OFFSET, 4, u64::from(KEY | ON));
    assert!(h2.smmu.g3_enabled());
    stale_asid_sequence(&mut h2);
    assert_eq!(h2.smmu.stats().asids.forced_flushes, 1);
}
