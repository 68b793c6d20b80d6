//! Driver tests against the fake SMMU model.

use alloc::vec::Vec;

use super::fake::{FakeFaults, FakeOp, FakeSmmu};
use super::regs::*;
use super::*;
use crate::mm::Stage2Config;
use crate::mm::frame::test_support::HeapFrames;

fn config() -> SmmuConfig {
    SmmuConfig { poll_limit: 1000, ..SmmuConfig::new(16, 40) }
}

fn host_s2() -> S2Config {
    let cfg = Stage2Config::new(40, 48, true).unwrap();
    S2Config::from_vtcr_vttbr(cfg.vtcr(), cfg.vttbr(0x4100_0000, 1).unwrap())
}

fn op(c: &[u64; 2]) -> u8 {
    (c[0] & 0xff) as u8
}

fn position(log: &[FakeOp], want: FakeOp) -> usize {
    log.iter().position(|o| *o == want).unwrap_or_else(|| panic!("{want:?} not in log"))
}

fn w32(offset: u32, value: u32) -> FakeOp {
    FakeOp::Write32 { offset, value }
}

#[test]
fn reset_sequence_order() {
    let mut frames = HeapFrames::new(64);
    let smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    let fake = smmu.io();
    let log = fake.log();
    assert_eq!(log[0], w32(GBPA, GBPA_ABORT | GBPA_UPDATE), "GBPA = abort before anything");
    let disable = position(&log, w32(CR0, 0));
    let cr1 = log.iter().position(|o| matches!(o, FakeOp::Write32 { offset: CR1, .. })).unwrap();
    let strtab =
        log.iter().position(|o| matches!(o, FakeOp::Write64 { offset: STRTAB_BASE, .. })).unwrap();
    let cmdq =
        log.iter().position(|o| matches!(o, FakeOp::Write64 { offset: CMDQ_BASE, .. })).unwrap();
    let evtq =
        log.iter().position(|o| matches!(o, FakeOp::Write64 { offset: EVTQ_BASE, .. })).unwrap();
    let cmdq_on = position(&log, w32(CR0, CR0_CMDQEN));
    let first_cmd = log.iter().position(|o| matches!(o, FakeOp::Command(_))).unwrap();
    let last_cmd = log.iter().rposition(|o| matches!(o, FakeOp::Command(_))).unwrap();
    let evtq_on = position(&log, w32(CR0, CR0_CMDQEN | CR0_EVTQEN));
    let smmu_on = position(&log, w32(CR0, CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
    assert!(0 < disable && disable < cr1 && cr1 < strtab && strtab < cmdq && cmdq < evtq);
    assert!(evtq < cmdq_on && cmdq_on < first_cmd && last_cmd < evtq_on && evtq_on < smmu_on);
    assert_eq!(smmu_on, log.len() - 1, "SMMUEN is the last write");
    let cmds: Vec<u8> = fake.commands().iter().map(op).collect();
    assert_eq!(cmds, vec![cmd::OP_CFGI_STE_RANGE, cmd::OP_TLBI_NSNH_ALL, cmd::OP_CMD_SYNC]);
    assert_eq!(fake.commands()[0], [0x04, 31], "CFGI_ALL");
    assert_eq!(fake.reg(GBPA) as u32, GBPA_ABORT);
    assert_eq!(fake.reg(CR1), 0b11_01_01_11_01_01, "WB, inner shareable tables and queues");
    assert_eq!(fake.reg(CR2) as u32, CR2_PTM | CR2_RECINVSID);
    assert_eq!(fake.reg(STRTAB_BASE_CFG), (1 << 16) | (8 << 6) | 16, "2-level, split 8");
    let mem = smmu.memory();
    assert_eq!(fake.reg(STRTAB_BASE), STRTAB_BASE_RA | mem.strtab.start);
    assert_eq!(fake.reg(CMDQ_BASE), Q_BASE_RWA | mem.cmdq.start | 8);
    assert_eq!(fake.reg(EVTQ_BASE), Q_BASE_RWA | mem.evtq.start | 7);
    assert_eq!((mem.cmdq.size(), mem.evtq.size(), mem.strtab.size()), (4096, 4096, 4096));
    assert_eq!(frames.pool.allocated_pages(), 3);
    // No STE exists yet: the L1 table is all zero (every stream ID aborts with an event).
    assert!((0..256).all(|i| fake.mem_read64(mem.strtab.start + 8 * i) == 0));
}

#[test]
fn hyp_smmu_also_gets_tlbi_el2_all() {
    let mut frames = HeapFrames::new(64);
    let fake =
        FakeSmmu::new(FakeSmmu::QEMU_IDR0 | IDR0_HYP, FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
    let smmu = Smmu::init(fake, config(), &mut frames).unwrap();
    let cmds: Vec<u8> = smmu.io().commands().iter().map(op).collect();
    assert_eq!(cmds, vec![0x04, 0x20, 0x30, 0x46]);
}

#[test]
fn firmware_left_enabled_is_aborted_then_disabled() {
    let mut frames = HeapFrames::new(64);
    let fake = FakeSmmu::qemu();
    fake.preset_enabled(CR0_SMMUEN | CR0_CMDQEN);
    fake.raise_gerror(GERROR_EVTQ_ABT_ERR);
    let smmu = Smmu::init(fake, config(), &mut frames).unwrap();
    let log = smmu.io().log();
    assert_eq!(log[0], w32(GBPA, GBPA_ABORT | GBPA_UPDATE));
    assert_eq!(log[1], w32(CR0, 0));
    assert!(log.contains(&w32(GERRORN, GERROR_EVTQ_ABT_ERR)), "stale error acknowledged");
}

#[test]
fn missing_features_are_named() {
    let q0 = FakeSmmu::QEMU_IDR0;
    let q1 = FakeSmmu::QEMU_IDR1;
    let q5 = FakeSmmu::QEMU_IDR5;
    let cases = [
        (q0 & !IDR0_S2P, q1, q5, Missing::Stage2),
        (q0 & !(0b11 << 2) | (0b01 << 2), q1, q5, Missing::AArch64Tables),
        (q0 | (0b11 << 21), q1, q5, Missing::LittleEndianWalks),
        (q0 & !IDR0_COHACC, q1, q5, Missing::Coherency),
        (q0, q1, q5 & !IDR5_GRAN4K, Missing::Granule4K),
        (q0, q1 | IDR1_TABLES_PRESET, q5, Missing::ProgrammableBases),
        (q0, (q1 & !0x3f) | 12, q5, Missing::StreamIdBits { have: 12, need: 16 }),
        (q0, q1, (q5 & !7) | 1, Missing::OutputAddressBits { have: Some(36), need: 40 }),
        (q0, q1, q5 | 7, Missing::OutputAddressBits { have: None, need: 40 }),
    ];
    for (idr0, idr1, idr5, missing) in cases {
        let mut frames = HeapFrames::new(16);
        let fake = FakeSmmu::new(idr0, idr1, idr5);
        let err = Smmu::init(fake, config(), &mut frames).err().unwrap();
        assert_eq!(err, SmmuError::Unsupported(missing));
        assert_eq!(frames.pool.allocated_pages(), 0, "nothing allocated for {missing:?}");
    }
    let msg = alloc::format!("{}", SmmuError::Unsupported(Missing::Stage2));
    assert_eq!(msg, "SMMU lacks stage-2 translation (IDR0.S2P)");
    let mut frames = HeapFrames::new(16);
    let bad = SmmuConfig { sid_bits: 0, ..config() };
    assert_eq!(Smmu::init(FakeSmmu::qemu(), bad, &mut frames).err(), Some(SmmuError::BadConfig));
}

#[test]
fn failed_init_leaves_smmu_disabled_and_aborting() {
    let mut frames = HeapFrames::new(64);
    let fake = FakeSmmu::new(0, FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
    fake.preset_enabled(CR0_SMMUEN);
    assert!(Smmu::init(&fake, config(), &mut frames).is_err());
    assert_eq!((fake.reg(CR0), fake.reg(CR0ACK)), (0, 0));
    assert_eq!(fake.reg(GBPA) as u32, GBPA_ABORT);
    // A failure after the SMMU was given its memory disables it again.
    let fake = FakeSmmu::qemu();
    fake.set_faults(FakeFaults { stuck_cons: true, ..FakeFaults::default() });
    assert!(Smmu::init(&fake, config(), &mut frames).is_err());
    assert_eq!(fake.log().last(), Some(&w32(CR0, 0)));
    assert_eq!(fake.reg(GBPA) as u32, GBPA_ABORT);
}

#[test]
fn sync_timeout_with_stuck_queue() {
    let mut frames = HeapFrames::new(64);
    let fake = FakeSmmu::qemu();
    fake.set_faults(FakeFaults { stuck_cons: true, ..FakeFaults::default() });
    let err = Smmu::init(fake, config(), &mut frames).err().unwrap();
    assert!(matches!(err, SmmuError::SyncTimeout { prod: 3, cons: 0 }), "{err:?}");
}

#[test]
fn sync_timeout_after_init_and_recovery() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().set_faults(FakeFaults { stuck_cons: true, ..FakeFaults::default() });
    assert!(matches!(smmu.invalidate_vmid(1), Err(SmmuError::SyncTimeout { .. })));
    smmu.io().set_faults(FakeFaults::default());
    // The next write of PROD lets the model consume everything still queued.
    smmu.invalidate_vmid(1).unwrap();
    let cmds = smmu.io().commands();
    assert_eq!(cmds[cmds.len() - 4..].iter().map(op).collect::<Vec<_>>(), [0x28, 0x46, 0x28, 0x46]);
}

#[test]
fn cr0ack_and_gbpa_timeouts() {
    let mut frames = HeapFrames::new(64);
    let fake = FakeSmmu::qemu();
    fake.set_faults(FakeFaults { stuck_cr0ack: true, ..FakeFaults::default() });
    fake.preset_enabled(CR0_SMMUEN);
    let err = Smmu::init(fake, config(), &mut frames).err();
    assert_eq!(err, Some(SmmuError::Timeout(WaitFor::Cr0Ack(0))));
    let fake = FakeSmmu::qemu();
    fake.set_faults(FakeFaults { stuck_gbpa: true, ..FakeFaults::default() });
    let err = Smmu::init(fake, config(), &mut frames).err();
    assert_eq!(err, Some(SmmuError::Timeout(WaitFor::GbpaUpdate)));
    assert_eq!(frames.pool.allocated_pages(), 0);
}

#[test]
fn command_error_is_reported_skipped_and_acknowledged() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().set_faults(FakeFaults { fail_opcode: Some(0x2a), ..FakeFaults::default() });
    let before = smmu.io().commands().len();
    let err = smmu.invalidate_s2_ipa_range(1, MemRange::new(0x4000_0000, 0x4000_2000)).err();
    let Some(SmmuError::Command { code, index, command }) = err else { panic!("{err:?}") };
    assert_eq!(code, CommandErrorCode(1));
    assert_eq!(command, Command::TlbiS2Ipa { vmid: 1, ipa: 0x4000_0000, leaf: false }.encode());
    assert_eq!(index, 3, "after the 3 reset commands");
    let fake = smmu.io();
    let after: Vec<[u64; 2]> = fake.commands()[before..].to_vec();
    // The failed command became a CMD_SYNC; the rest ran.
    assert_eq!(
        after,
        vec![
            Command::Sync.encode(),
            Command::TlbiS2Ipa { vmid: 1, ipa: 0x4000_1000, leaf: false }.encode(),
            Command::Sync.encode()
        ]
    );
    assert_eq!(fake.reg(GERROR), fake.reg(GERRORN), "acknowledged");
    let msg = alloc::format!("{}", SmmuError::Command { code, index, command });
    assert!(msg.starts_with("SMMU command CMD_TLBI_S2_IPA at queue index 3 failed: CERROR_ILL"));
    smmu.invalidate_vmid(1).unwrap();
}

#[test]
fn other_global_errors_are_returned_and_acknowledged() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().raise_gerror(GERROR_EVTQ_ABT_ERR);
    assert_eq!(smmu.check_global_errors(), Err(SmmuError::Global { active: GERROR_EVTQ_ABT_ERR }));
    assert_eq!(smmu.check_global_errors(), Ok(()));
    smmu.io().raise_gerror(GERROR_SFM_ERR);
    assert!(smmu.invalidate_vmid(1).is_err());
    assert!(smmu.check_global_errors().is_err(), "SFM cannot be acknowledged");
}

/// An event-queue write abort (QEMU raises it when a faulting device fills the queue) does not
/// fail a sync: the invalidation completes, the error is acknowledged and reported by the next
/// drain. Before, any such error failed every sync in flight, so a DMA fault flood could make
/// handoffs fail.
#[test]
fn event_queue_abort_does_not_fail_a_sync() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().raise_gerror(GERROR_EVTQ_ABT_ERR);
    assert_eq!(smmu.invalidate_vmid(1), Ok(()));
    assert_eq!(smmu.io().reg(GERROR), smmu.io().reg(GERRORN), "acknowledged");
    let drain = smmu.drain_events(|_| {});
    assert_eq!(drain.global_errors, GERROR_EVTQ_ABT_ERR);
    assert_eq!(smmu.drain_events(|_| {}).global_errors, 0, "reported once");
    smmu.io().raise_gerror(GERROR_SFM_ERR);
    assert!(smmu.invalidate_vmid(1).is_err(), "service failure still fails it");
}

#[test]
fn ste_install_writes_v_last_then_cfgi_and_sync() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().take_log();
    smmu.install_stage2_only(&[0x18, 0x10], &host_s2(), &mut frames).unwrap();
    let log = smmu.io().log();
    let StreamTable::TwoLevel { l1, l2, .. } = smmu.stream_table().clone() else { panic!() };
    let l2_0 = l2[0].unwrap();
    assert!(l2[1..].iter().all(Option::is_none), "only bus 0 has a level-2 table");
    assert_eq!(frames.pool.allocated_pages(), 3 + 4);
    let expected = Ste::stage2_only(&host_s2(), smmu.features()).unwrap();
    // L1 descriptor published after a barrier, before any STE.
    let l1_write = position(&log, FakeOp::MemWrite { pa: l1, value: l2_0 | 9 });
    assert_eq!(log[l1_write - 1], FakeOp::Barrier);
    for sid in [0x18u64, 0x10] {
        let ste = l2_0 + sid * 64;
        let words: Vec<usize> = (0..8)
            .map(|i| {
                position(&log, FakeOp::MemWrite { pa: ste + 8 * i, value: expected.0[i as usize] })
            })
            .collect();
        assert!(l1_write < words[1]);
        for i in 2..8 {
            assert!(words[i - 1] < words[i]);
        }
        assert_eq!(log[words[0] - 1], FakeOp::Barrier, "barrier before V");
        assert!(words[7] < words[0], "word 0 (V) last");
        let cfgi = position(&log, FakeOp::Command(Command::CfgiSte { sid: sid as u32 }.encode()));
        assert!(cfgi > words[0]);
        for i in 0..8 {
            assert_eq!(smmu.io().mem_read64(ste + 8 * i), expected.0[i as usize]);
        }
    }
    let cmds: Vec<[u64; 2]> = smmu.io().commands();
    assert_eq!(
        cmds,
        vec![
            Command::CfgiSteRange { sid: 0, range: 7 }.encode(),
            Command::CfgiSte { sid: 0x18 }.encode(),
            Command::CfgiSte { sid: 0x10 }.encode(),
            Command::Sync.encode()
        ]
    );
    // Stray stream IDs: invalid STE in the same table, no table (Span 0) elsewhere.
    assert_eq!(smmu.io().mem_read64(l2_0 + 0x11 * 64), 0);
    assert_eq!(smmu.io().mem_read64(l1 + 8), 0);
    let ranges = smmu.memory_ranges();
    assert_eq!(ranges.len(), 4);
    assert_eq!(ranges[3], MemRange::new(l2_0, l2_0 + 16384));
}

#[test]
fn reinstall_breaks_before_make() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.install_abort(&[0x18], &mut frames).unwrap();
    smmu.io().take_log();
    smmu.install_stage2_only(&[0x18], &host_s2(), &mut frames).unwrap();
    let StreamTable::TwoLevel { l2, .. } = smmu.stream_table().clone() else { panic!() };
    let ste = l2[0].unwrap() + 0x18 * 64;
    let log = smmu.io().log();
    assert_eq!(log[0], FakeOp::MemWrite { pa: ste, value: 0 }, "invalidate first");
    let cmds: Vec<u8> = smmu.io().commands().iter().map(op).collect();
    assert_eq!(cmds, vec![0x03, 0x46, 0x03, 0x46]);
    smmu.remove(&[0x18]).unwrap();
    assert_eq!(smmu.io().mem_read64(ste), 0);
    assert_eq!(frames.pool.allocated_pages(), 3 + 4, "no second level-2 table");
}

#[test]
fn stream_ids_outside_the_table_are_refused() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    let err = smmu.install_stage2_only(&[0x10, 0x1_0000], &host_s2(), &mut frames);
    assert_eq!(err, Err(SmmuError::StreamId { sid: 0x1_0000, sid_bits: 16 }));
    assert_eq!(frames.pool.allocated_pages(), 3, "checked before anything is written");
    let bad = S2Config { vmid: 1, vtcr: host_s2().vtcr | (1 << 14), root_pa: 0x4100_0000 };
    assert_eq!(
        smmu.install_stage2_only(&[0x10], &bad, &mut frames),
        Err(SmmuError::Stage2(S2ConfigError::Granule))
    );
}

#[test]
fn linear_table_without_two_level_support() {
    let mut frames = HeapFrames::new(64);
    let fake =
        FakeSmmu::new(FakeSmmu::QEMU_IDR0 & !(3 << 27), FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
    let cfg = SmmuConfig { sid_bits: 8, ..config() };
    let mut smmu = Smmu::init(fake, cfg, &mut frames).unwrap();
    assert_eq!(smmu.io().reg(STRTAB_BASE_CFG), 8, "linear, LOG2SIZE 8");
    assert_eq!(smmu.memory().strtab.size(), 256 * 64);
    smmu.install_stage2_only(&[0x18], &host_s2(), &mut frames).unwrap();
    let base = smmu.memory().strtab.start;
    assert_eq!(smmu.io().mem_read64(base + 0x18 * 64) & 0xf, 0b1101);
    assert!(smmu.install_abort(&[0x100], &mut frames).is_err());
    // 2-level SMMU with few stream ID bits also uses a linear table.
    let mut frames = HeapFrames::new(64);
    let smmu = Smmu::init(FakeSmmu::qemu(), cfg, &mut frames).unwrap();
    assert!(matches!(smmu.stream_table(), StreamTable::Linear { sid_bits: 8, .. }));
}

#[test]
fn out_of_frames_frees_partial_allocations() {
    let mut frames = HeapFrames::new(2);
    let err = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).err();
    assert_eq!(err, Some(SmmuError::OutOfFrames { what: "stream table", pages: 1 }));
    assert_eq!(frames.pool.allocated_pages(), 0);
    let fake =
        FakeSmmu::new(FakeSmmu::QEMU_IDR0 & !(3 << 27), FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
    let mut frames = HeapFrames::new(64);
    let err = Smmu::init(fake, config(), &mut frames).err();
    assert_eq!(err, Some(SmmuError::OutOfFrames { what: "stream table", pages: 1024 }));
}

#[test]
fn invalidation_commands() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().take_log();
    smmu.invalidate_s2_ipa_range(1, MemRange::new(0x4000_0800, 0x4000_1800)).unwrap();
    smmu.invalidate_s2_ipa_range(1, MemRange::new(0x4000_0000, 0x4000_0000)).unwrap();
    smmu.invalidate_s2_ipa_range(1, MemRange::new(0x4000_0000, 0x8000_0000)).unwrap();
    smmu.invalidate_vmid(7).unwrap();
    assert_eq!(
        smmu.io().commands(),
        vec![
            Command::TlbiS2Ipa { vmid: 1, ipa: 0x4000_0000, leaf: false }.encode(),
            Command::TlbiS2Ipa { vmid: 1, ipa: 0x4000_1000, leaf: false }.encode(),
            Command::Sync.encode(),
            Command::TlbiS12Vmall { vmid: 1 }.encode(),
            Command::Sync.encode(),
            Command::TlbiS12Vmall { vmid: 7 }.encode(),
            Command::Sync.encode(),
        ]
    );
}

/// A nested STE over the host's stage 2 with its stage-1 context descriptor at `cd`.
fn nested_ste(smmu: &Smmu<FakeSmmu>, cd: u64) -> Ste {
    let mut ste = Ste::stage2_only(&host_s2(), smmu.features()).unwrap();
    ste.0[0] = 1 | (0b111 << 1) | cd;
    ste
}

#[test]
fn nested_streams_make_ipa_invalidation_cover_combined_entries() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    let page = MemRange::new(0x7c00_0000, 0x7c00_1000);
    smmu.install_stage2_only(&[0x10], &host_s2(), &mut frames).unwrap();
    smmu.io().take_log();
    smmu.invalidate_s2_ipa_range(1, page).unwrap();
    assert_eq!(
        smmu.io().commands(),
        vec![
            Command::TlbiS2Ipa { vmid: 1, ipa: 0x7c00_0000, leaf: false }.encode(),
            Command::Sync.encode()
        ],
        "stage 2 only: by IPA"
    );
    assert!(!smmu.may_hold_combined_entries(1));
    // A nested stream: its TLB entries combine both stages, which TLBI_S2_IPA need not touch.
    let ste = nested_ste(&smmu, 0x7f_c000_0000);
    smmu.install(&[0x18], &ste, &mut frames).unwrap();
    assert!(smmu.may_hold_combined_entries(1));
    assert!(!smmu.may_hold_combined_entries(2), "per VMID");
    smmu.io().take_log();
    smmu.invalidate_s2_ipa_range(1, page).unwrap();
    smmu.invalidate_s2_ipa_range(2, page).unwrap();
    assert_eq!(
        smmu.io().commands(),
        vec![
            Command::TlbiS12Vmall { vmid: 1 }.encode(),
            Command::Sync.encode(),
            Command::TlbiS2Ipa { vmid: 2, ipa: 0x7c00_0000, leaf: false }.encode(),
            Command::Sync.encode(),
        ]
    );
    // The nested STE goes: its combined entries stay until a complete invalidation.
    smmu.install_stage2_only(&[0x18], &host_s2(), &mut frames).unwrap();
    assert!(smmu.may_hold_combined_entries(1), "entries outlive the STE");
    smmu.io().take_log();
    smmu.invalidate_s2_ipa_range(1, page).unwrap();
    assert_eq!(
        smmu.io().commands(),
        vec![Command::TlbiS12Vmall { vmid: 1 }.encode(), Command::Sync.encode()]
    );
    assert!(!smmu.may_hold_combined_entries(1), "gone after TLBI_S12_VMALL + CMD_SYNC");
    smmu.io().take_log();
    smmu.invalidate_s2_ipa_range(1, page).unwrap();
    assert_eq!(op(&smmu.io().commands()[0]), cmd::OP_TLBI_S2_IPA);
    // Removing the STE and a failed sync: still marked.
    smmu.install(&[0x18], &ste, &mut frames).unwrap();
    smmu.remove(&[0x18]).unwrap();
    smmu.io().set_faults(FakeFaults { stuck_cons: true, ..FakeFaults::default() });
    assert!(smmu.invalidate_vmid(1).is_err());
    assert!(smmu.may_hold_combined_entries(1), "not known to be complete");
}

#[test]
fn nested_context_pointer_change_is_hitless() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    let a = nested_ste(&smmu, 0x7f_c000_0000);
    let b = nested_ste(&smmu, 0x7f_c000_0040);
    smmu.install(&[0x18], &a, &mut frames).unwrap();
    let StreamTable::TwoLevel { l2, .. } = smmu.stream_table().clone() else { panic!() };
    let addr = l2[0].unwrap() + 0x18 * 64;
    smmu.io().take_log();
    smmu.install(&[0x18], &b, &mut frames).unwrap();
    let log = smmu.io().log();
    let writes: Vec<&FakeOp> = log
        .iter()
        .filter(|o| matches!(o, FakeOp::MemWrite { pa, .. } if (addr..addr + 64).contains(pa)))
        .collect();
    assert_eq!(
        writes,
        vec![&FakeOp::MemWrite { pa: addr, value: b.0[0] }],
        "one store, never V = 0"
    );
    assert_eq!(
        log[position(&log, FakeOp::MemWrite { pa: addr, value: b.0[0] }) - 1],
        FakeOp::Barrier
    );
    let cmds: Vec<u8> = smmu.io().commands().iter().map(op).collect();
    assert_eq!(cmds, vec![cmd::OP_CFGI_STE, cmd::OP_CMD_SYNC]);
    assert_eq!(smmu.read_ste(0x18), Some(b));
    // Anything else that changes (here the VMID) breaks before making.
    let mut c = b;
    c.0[2] ^= 1;
    smmu.io().take_log();
    smmu.install(&[0x18], &c, &mut frames).unwrap();
    assert_eq!(smmu.io().log()[0], FakeOp::MemWrite { pa: addr, value: 0 });
    let cmds: Vec<u8> = smmu.io().commands().iter().map(op).collect();
    assert_eq!(cmds, vec![0x03, 0x46, 0x03, 0x46]);
    // And so does nested -> stage 2 only.
    smmu.io().take_log();
    smmu.install_stage2_only(&[0x18], &host_s2(), &mut frames).unwrap();
    assert_eq!(smmu.io().log()[0], FakeOp::MemWrite { pa: addr, value: 0 });
}

#[test]
fn command_queue_wraps_many_times() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    for i in 0..300u64 {
        smmu.invalidate_s2_ipa_range(1, MemRange::new(i << 12, (i + 100) << 12)).unwrap();
    }
    assert_eq!(smmu.io().commands().len(), 3 + 300 * 101);
    // 30303 commands in a 256-entry queue: PROD has wrapped, with the wrap bit consistent.
    let prod = smmu.io().reg(CMDQ_PROD) as u32;
    assert_eq!(prod, smmu.io().reg(CMDQ_CONS) as u32);
    assert_eq!(prod & 0xff, (30303 % 256) as u32);
    assert_eq!(prod & 0x100 != 0, (30303 / 256) % 2 == 1);
}

#[test]
fn events_are_drained_decoded_and_wrap() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    let mut seen = Vec::new();
    assert_eq!(
        smmu.drain_events(|e| seen.push(e)),
        EventDrain { events: 0, overflowed: false, global_errors: 0 }
    );
    let mut next = 0u64;
    for round in 0..5 {
        let n = 50 + round * 10;
        for _ in 0..n {
            assert!(smmu.io().push_event([
                (next << 32) | 0x10,
                (1 << 39) | (2 << 40),
                next << 12,
                0
            ]));
            next += 1;
        }
        let drain = smmu.drain_events(|e| seen.push(e));
        assert_eq!(drain, EventDrain { events: n as u32, overflowed: false, global_errors: 0 });
    }
    assert_eq!(seen.len() as u64, next);
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(
            (e.kind, e.sid, e.input_addr),
            (EventKind::Translation, i as u32, (i as u64) << 12)
        );
    }
    assert_eq!(
        alloc::format!("{}", seen[0x18]),
        "SMMU event F_TRANSLATION sid 0x18 IPA 0x18000 write (stage 2)"
    );
    let cons = smmu.io().reg(EVTQ_CONS) as u32;
    assert_eq!(cons, smmu.io().reg(EVTQ_PROD) as u32);
    assert_eq!(cons & 0x7f, (next % 128) as u32);
}

#[test]
fn an_empty_event_queue_costs_one_register_read() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    smmu.io().take_log();
    assert_eq!(smmu.drain_events(|_| panic!("no event")), EventDrain::default());
    assert_eq!(smmu.io().take_log(), vec![], "no barrier, no EVTQ_CONS write");
    // An event after that is still drained, and acknowledged through EVTQ_CONS.
    assert!(smmu.io().push_event([0x04, 0, 0, 0]));
    assert_eq!(smmu.drain_events(|_| {}).events, 1);
    let log = smmu.io().take_log();
    assert!(
        log.iter().any(|op| matches!(op, FakeOp::Write32 { offset: EVTQ_CONS, .. })),
        "{log:?}"
    );
    assert_eq!(smmu.drain_events(|_| {}), EventDrain::default());
    assert_eq!(smmu.io().take_log(), vec![]);
}

#[test]
fn event_overflow_is_reported_and_acknowledged() {
    let mut frames = HeapFrames::new(64);
    let mut smmu = Smmu::init(FakeSmmu::qemu(), config(), &mut frames).unwrap();
    for i in 0..128u64 {
        assert!(smmu.io().push_event([(i << 32) | 0x04, 0, 0, 0]));
    }
    assert!(!smmu.io().push_event([0x04, 0, 0, 0]), "full: overflow");
    let mut n = 0;
    let drain = smmu.drain_events(|e| {
        assert_eq!(e.kind, EventKind::BadSte);
        n += 1
    });
    assert_eq!(drain, EventDrain { events: 128, overflowed: true, global_errors: 0 });
    assert_eq!(n, 128);
    assert_eq!(smmu.io().reg(EVTQ_CONS) as u32 & Q_OVERFLOW_FLAG, Q_OVERFLOW_FLAG, "acknowledged");
    assert!(smmu.io().push_event([0x04, 0, 0, 0]));
    assert_eq!(
        smmu.drain_events(|_| {}),
        EventDrain { events: 1, overflowed: false, global_errors: 0 }
    );
}
