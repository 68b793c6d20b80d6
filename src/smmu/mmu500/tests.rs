//! The MMU-500 back end against the register model: boot survey, stream routes (G1), nested
//! banks from shadow CDs, TLB maintenance and bounded syncs, bank reuse (G3), and the engine
//! ([`NestedStreams`]) on top.

use alloc::vec::Vec;

use super::model::{Access, Mmu500Model, ModelConfig, Route};
use super::regs::*;
use super::*;

const ROOT: u64 = 0x8_1234_0000;
const HOST_VMID: u16 = 1;
/// VTCR of a 40-bit IPA space, 4 KiB granule, start level 1, WBWA inner shareable, PS 40 bits.
const VTCR: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16);
const ARENA: CdArena = CdArena { ipa: 0x7f_c000_0000, slots: 16, unmapped_ipa: 0x7f_ffff_f000 };
/// A peer's stream (translated by the firmware's bank 0), a peer's stream in bypass, and the
/// bootloader's display splash on a host stream.
const PEER_SID: u32 = 0x400;
const PEER_BYPASS_SID: u32 = 0x800;
const SPLASH_SID: u32 = 0x1c00;
const HOST_SIDS: [u32; 3] = [SPLASH_SID, 0x10, 0x11];

fn config(initial: RealSte) -> Mmu500Config {
    Mmu500Config {
        host_streams: HOST_SIDS.iter().map(|&s| StreamMatch::exact(s)).collect(),
        s2: S2Config { vtcr: VTCR, root_pa: ROOT, vmid: HOST_VMID },
        arena: ARENA,
        initial,
        poll_limit: 8,
    }
}

fn valid(sid: u32) -> u32 {
    mask32(SMR_F::VALID) | sid
}

/// The Qualcomm model as a board's firmware leaves it.
fn firmware_model(cfg: ModelConfig) -> Mmu500Model {
    let m = Mmu500Model::new(cfg);
    m.preset_bank(0, 5, mask32(SCTLR_F::M), 0x9_0000_0000);
    m.preset_stream(0, valid(PEER_SID), 0);
    m.preset_stream(1, valid(PEER_BYPASS_SID), S2CR_TYPE_BYPASS << 16);
    m.preset_stream(2, valid(SPLASH_SID), S2CR_TYPE_BYPASS << 16);
    m
}

fn s2_route(bank: u8) -> Route {
    Route::Translate { bank, s1_ttbr0: None, s2_root: Some(ROOT), vmid: HOST_VMID }
}

fn writes(log: &[Access]) -> Vec<(Space, u64)> {
    log.iter()
        .filter_map(|a| match *a {
            Access::Write { at, value } => Some((at, value)),
            Access::Read { .. } => None,
        })
        .collect()
}

fn position(log: &[(Space, u64)], at: Space) -> Option<usize> {
    log.iter().position(|(a, _)| *a == at)
}

fn is_s2cr(at: &Space) -> bool {
    matches!(at, Space::Gr0(o) if (S2CR_BASE..S2CR_BASE + 0x200).contains(o))
}

#[test]
fn boot_keeps_the_peers_streams_and_gives_every_host_stream_wardens_stage2() {
    let m = firmware_model(ModelConfig::QCOM);
    assert_eq!(m.route(SPLASH_SID), Route::GlobalBypass, "Gunyah's exit leaves bypass");
    let b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    let s2 = b.stage2_bank();
    assert_ne!(s2, 0, "the firmware's bank is never taken");
    // G1: every host stream through warden's stage 2, nothing in bypass.
    for sid in HOST_SIDS {
        assert_eq!(m.route(sid), s2_route(s2), "stream {sid:#x}");
    }
    // The peers' streams exactly as found.
    assert_eq!(
        m.route(PEER_SID),
        Route::Translate { bank: 0, s1_ttbr0: None, s2_root: Some(0x9_0000_0000), vmid: 5 }
    );
    assert_eq!(m.route(PEER_BYPASS_SID), Route::Bypass);
    assert_eq!((m.smr(0), m.s2cr(0)), (valid(PEER_SID), 0));
    assert_eq!((m.smr(1), m.s2cr(1)), (valid(PEER_BYPASS_SID), S2CR_TYPE_BYPASS << 16));
    let fw = b.firmware_streams();
    assert_eq!(
        fw.iter().map(|f| (f.index, f.taken_over)).collect::<Vec<_>>(),
        [(0, false), (1, false), (2, true)]
    );
    // Unmatched streams fault; CLIENTPD is off.
    assert_eq!(m.route(0x77), Route::Unmatched { fault: true });
    assert_eq!(m.scr0() & mask32(SCR0_F::CLIENTPD), 0);
    // The stage-2 bank walks warden's tables with the host VMID.
    assert_eq!(m.bank_reg(s2, CB_TCR) as u32, VTCR as u32 | (1 << 31));
    assert_eq!(m.cbar(s2), u32::from(HOST_VMID));
    assert_eq!(m.bank_reg(s2, CB_ACTLR) & u64::from(mask32(ACTLR_F::CPRE)), 0);
    assert_eq!(m.sacr() & SACR_CACHE_LOCK, 0);
    assert_eq!(m.bad_accesses(), 0, "nothing beyond the Non-secure view");

    let log = writes(&m.take_log());
    // Nothing written to the firmware's SMRs 0/1 or its bank 0.
    assert!(!log.iter().any(|(a, _)| matches!(a, Space::Gr0(o) if *o == SMR_BASE || *o == SMR_BASE + 4 || *o == S2CR_BASE || *o == S2CR_BASE + 4)));
    assert!(!log.iter().any(|(a, _)| matches!(a, Space::Cb(0, _)) || *a == Space::Gr1(CBAR_BASE)));
    // Order: the bank enabled, the host VMID invalidated and synced, then the streams, then
    // the SMMU; the splash stream faults before its match goes.
    let bank_on = log.iter().rposition(|(a, _)| *a == Space::Cb(s2, CB_SCTLR)).unwrap();
    let tlbivmid = position(&log, Space::Gr0(TLBIVMID)).unwrap();
    let gsync = position(&log, Space::Gr0(STLBGSYNC)).unwrap();
    let first_s2cr = log.iter().position(|(a, _)| is_s2cr(a)).unwrap();
    let scr0 = position(&log, Space::Gr0(SCR0)).unwrap();
    assert!(bank_on < tlbivmid && tlbivmid < gsync && gsync < first_s2cr && first_s2cr < scr0);
    let splash_fault = position(&log, Space::Gr0(S2CR_BASE + 8)).unwrap();
    let splash_smr = position(&log, Space::Gr0(SMR_BASE + 8)).unwrap();
    assert_eq!(log[splash_fault].1, u64::from(S2CR_TYPE_FAULT << 16));
    assert!(splash_fault < splash_smr);
    let cache_unlock = position(&log, Space::Gr0(SACR)).unwrap();
    let actlr = position(&log, Space::Cb(s2, CB_ACTLR)).unwrap();
    assert!(cache_unlock < actlr, "ACTLR is read-only while CACHE_LOCK is set");
    assert_eq!(m.syncs_completed(), 1);
}

#[test]
fn boot_refuses_shared_streams_foreign_vmids_and_too_few_resources() {
    // A firmware SMR matching host stream 0x10 and peer stream 0x12 (mask 0x2).
    let m = Mmu500Model::new(ModelConfig::QCOM);
    m.preset_stream(4, valid(0x10) | (0x2 << 16), S2CR_TYPE_BYPASS << 16);
    assert_eq!(
        Mmu500Backend::init(&m, config(RealSte::Stage2Only)).err(),
        Some(Mmu500Error::SharedStream { index: 4, smr: valid(0x10) | (0x2 << 16) })
    );
    assert_eq!(m.scr0() & mask32(SCR0_F::CLIENTPD), 1, "nothing enabled");
    // The same mask over host streams only (0x10 and 0x11) is the host's: taken over.
    let m = Mmu500Model::new(ModelConfig::QCOM);
    m.preset_stream(4, valid(0x10) | (0x1 << 16), S2CR_TYPE_BYPASS << 16);
    let b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    assert!(b.firmware_streams()[0].taken_over);
    assert_eq!(m.route(0x11), s2_route(b.stage2_bank()));
    // A firmware bank with the host's VMID.
    let m = Mmu500Model::new(ModelConfig::QCOM);
    m.preset_bank(3, u32::from(HOST_VMID), mask32(SCTLR_F::M), 0x9_0000_0000);
    assert_eq!(
        Mmu500Backend::init(&m, config(RealSte::Stage2Only)).err(),
        Some(Mmu500Error::VmidInUse { bank: 3 })
    );
    // Two SMRs for three host streams.
    let m = Mmu500Model::new(ModelConfig { numsmrg: 2, ..ModelConfig::QCOM });
    assert_eq!(
        Mmu500Backend::init(&m, config(RealSte::Stage2Only)).err(),
        Some(Mmu500Error::NoSmr { sid: SPLASH_SID })
    );
    // No nesting.
    let m = Mmu500Model::new(ModelConfig { nested: false, ..ModelConfig::QCOM });
    assert!(matches!(
        Mmu500Backend::init(&m, config(RealSte::Stage2Only)).err(),
        Some(Mmu500Error::Missing(_))
    ));
}

/// Streams as the real DTs give them (`#iommu-cells = <2>`): masked SMRs, entries that name
/// one stream set twice or one inside another, merged as Linux merges them; entries that
/// share only some IDs, IDs beyond NUMSIDB and a peer's translated stream are refused.
#[test]
fn masked_host_streams_are_merged_programmed_and_checked() {
    let m = |id, mask| StreamMatch { id, mask };
    // RB5's crypto engine: 0x586/0x11 and 0x596/0x11 are one set; 0x592/0 lies in neither.
    let merged = host_streams(&[m(0x596, 0x11), m(0x592, 0), m(0x586, 0x11), m(0x587, 0)]);
    assert_eq!(merged, Ok(vec![m(0x586, 0x11), m(0x592, 0)]));
    let partial = host_streams(&[m(0x10, 0x1), m(0x11, 0x2)]);
    assert_eq!(
        partial,
        Err(Mmu500Error::OverlappingStreams { first: m(0x10, 0x1), second: m(0x11, 0x2) })
    );
    assert!(
        m(0x1000, 0x460).covers(&m(0x1040, 0x400)) && !m(0x1040, 0x400).covers(&m(0x1000, 0x460))
    );

    let with = |streams: Vec<StreamMatch>| Mmu500Config {
        host_streams: streams,
        ..config(RealSte::Stage2Only)
    };
    // Programmed with their masks: every ID of the set goes through warden's stage 2.
    let model = firmware_model(ModelConfig::QCOM);
    let b = Mmu500Backend::init(&model, with(vec![m(0x1001, 0x460), m(0x596, 0x11)])).unwrap();
    for sid in [0x1001, 0x1041, 0x1401, 0x1461, 0x586, 0x587, 0x596, 0x597] {
        assert_eq!(model.route(sid), s2_route(b.stage2_bank()), "{sid:#x}");
    }
    assert_eq!(model.route(0x1002), Route::Unmatched { fault: true });
    assert_eq!(b.bank_of(0x586), Some(b.stage2_bank()), "named by the canonical ID");
    assert_eq!(b.bank_of(0x596), None);

    // Hostile specifiers: nothing is enabled.
    for (streams, err) in [
        (
            vec![m(0x10, 0x1), m(0x11, 0x2)],
            Mmu500Error::OverlappingStreams { first: m(0x10, 0x1), second: m(0x11, 0x2) },
        ),
        (vec![m(0x8000, 0)], Mmu500Error::SidTooWide(0x8000)),
        (vec![m(0x10, 0x8000)], Mmu500Error::SidTooWide(0x10)),
        (vec![m(PEER_SID, 0)], Mmu500Error::PeerStream { index: 0, smr: valid(PEER_SID) }),
        (vec![m(PEER_SID & !0xf, 0xf)], Mmu500Error::PeerStream { index: 0, smr: valid(PEER_SID) }),
    ] {
        let model = firmware_model(ModelConfig::QCOM);
        assert_eq!(
            Mmu500Backend::init(&model, with(streams.clone())).err(),
            Some(err),
            "{streams:?}"
        );
        assert_eq!(model.scr0() & mask32(SCR0_F::CLIENTPD), 1, "nothing enabled");
        assert_eq!(model.smr(0), valid(PEER_SID), "the peer's stream as found");
    }
    // A peer's bypass stream claimed by the host: the host's only if the host covers it all
    // (then it is the bootloader's leftover, taken over); sharing part of it is refused.
    let model = firmware_model(ModelConfig::QCOM);
    let b = Mmu500Backend::init(&model, with(vec![m(PEER_BYPASS_SID, 0x3)])).unwrap();
    assert!(b.firmware_streams()[1].taken_over);
    let model = firmware_model(ModelConfig::QCOM);
    model.preset_stream(3, valid(0x40) | (0x3 << 16), S2CR_TYPE_BYPASS << 16);
    assert_eq!(
        Mmu500Backend::init(&model, with(vec![m(0x40, 0x1)])).err(),
        Some(Mmu500Error::SharedStream { index: 3, smr: valid(0x40) | (0x3 << 16) })
    );
}

#[test]
fn a_sync_that_never_completes_is_a_bounded_error() {
    let m = Mmu500Model::new(ModelConfig { sync_polls: u32::MAX, ..ModelConfig::QCOM });
    assert_eq!(
        Mmu500Backend::init(&m, config(RealSte::Stage2Only)).err(),
        Some(Mmu500Error::SyncTimeout)
    );
    let polls = m
        .take_log()
        .iter()
        .filter(|a| matches!(a, Access::Read { at: Space::Gr0(STLBGSTATUS), .. }))
        .count();
    assert_eq!(polls, 8, "poll_limit reads, then the error");
    assert_eq!(m.scr0() & mask32(SCR0_F::CLIENTPD), 1, "no host stream was enabled");
}

/// A shadow CD: 40-bit IPS, T0SZ 25 (39-bit VA), 4 KiB, WBWA inner shareable, TTB1 walk off,
/// with the real ASID in [63:48].
fn cd(ttb0: u64, asid: u16) -> [u64; CD_WORDS] {
    let w0 = 25
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (1 << 30)
        | (1 << 31)
        | (2 << 32)
        | (1 << 41)
        | (1 << 45)
        | (1 << 46)
        | (u64::from(asid) << 48);
    [w0, ttb0, 0, 0x0044_ff04, 0, 0, 0, 0]
}

fn slot(i: u64) -> u64 {
    ARENA.ipa + 64 * i
}

fn nested(m: &Mmu500Model, b: &Mmu500Backend<&Mmu500Model>, sid: u32, ttb0: u64, asid: u16) {
    let bank = b.bank_of(sid).unwrap();
    assert_eq!(
        m.route(sid),
        Route::Translate {
            bank,
            s1_ttbr0: Some(ttb0 | (u64::from(asid) << 48)),
            s2_root: Some(ROOT),
            vmid: HOST_VMID
        }
    );
}

#[test]
fn a_nested_stream_gets_a_bank_from_its_shadow_cd_over_wardens_stage2() {
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    m.take_log();
    b.write_cd(slot(0), &cd(0x4000_0000, 1)).unwrap();
    b.install_ste(0x10, RealSte::Nested { cd_ipa: slot(0) }).unwrap();
    let bank = b.bank_of(0x10).unwrap();
    assert!(bank != 0 && bank != b.stage2_bank());
    nested(&m, &b, 0x10, 0x4000_0000, 1);
    assert_eq!(m.cbar(bank), (3 << 16) | (u32::from(b.stage2_bank()) << 8), "nested over warden's");
    assert_eq!(m.bank_reg(bank, CB_TCR), 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23));
    assert_eq!(m.bank_reg(bank, CB_TCR2), 2 | (1 << 4) | (7 << 15), "PASIZE, AS, SEP");
    assert_eq!(m.bank_reg(bank, CB_MAIR0), 0x0044_ff04);
    assert_eq!(m.bank_reg(bank, CB_SCTLR) as u32 & mask32(SCTLR_F::CFRE), mask32(SCTLR_F::CFRE));
    // The bank is complete and on before the S2CR points at it.
    let log = writes(&m.take_log());
    let bank_on = log.iter().rposition(|(a, _)| *a == Space::Cb(bank, CB_SCTLR)).unwrap();
    let s2cr = log.iter().position(|(a, _)| is_s2cr(a)).unwrap();
    assert!(bank_on < s2cr);
    // The same context on another stream shares the bank; another context gets its own.
    b.install_ste(0x11, RealSte::Nested { cd_ipa: slot(0) }).unwrap();
    assert_eq!(b.bank_of(0x11), Some(bank));
    b.write_cd(slot(2), &cd(0x5000_0000, 2)).unwrap();
    b.install_ste(SPLASH_SID, RealSte::Nested { cd_ipa: slot(2) }).unwrap();
    assert_ne!(b.bank_of(SPLASH_SID), Some(bank));
    nested(&m, &b, SPLASH_SID, 0x5000_0000, 2);
    // V = 0 shadow, the unreadable CD's page, abort: S2CR fault.
    b.write_cd(slot(1), &[0; CD_WORDS]).unwrap();
    b.install_ste(0x10, RealSte::Nested { cd_ipa: slot(1) }).unwrap();
    assert_eq!(m.route(0x10), Route::Fault);
    b.install_ste(0x11, RealSte::Nested { cd_ipa: ARENA.unmapped_ipa }).unwrap();
    assert_eq!(m.route(0x11), Route::Fault);
    // Streams that are not the host's, and CD slots outside the arena, are refused.
    assert_eq!(b.install_ste(PEER_SID, RealSte::Stage2Only), Err(BackendError));
    assert_eq!(
        m.route(PEER_SID),
        Route::Translate { bank: 0, s1_ttbr0: None, s2_root: Some(0x9_0000_0000), vmid: 5 }
    );
    assert_eq!(b.write_cd(ARENA.ipa + 8, &cd(0, 1)), Err(BackendError));
    assert_eq!(b.write_cd(ARENA.ipa - 64, &cd(0, 1)), Err(BackendError));
    assert_eq!(b.write_cd(slot(16), &cd(0, 1)), Err(BackendError));
    assert_eq!(m.bad_accesses(), 0);
}

#[test]
fn no_host_stream_ever_escapes_wardens_stage2() {
    // G1 over every kind of install, including the firmware quirk that turns bypass into
    // fault (warden never asks for bypass, so it changes nothing).
    for quirk in [false, true] {
        let m = firmware_model(ModelConfig { bypass_becomes_fault: quirk, ..ModelConfig::QCOM });
        let mut b = Mmu500Backend::init(&m, config(RealSte::Abort)).unwrap();
        for sid in HOST_SIDS {
            assert_eq!(m.route(sid), Route::Fault);
        }
        b.write_cd(slot(0), &cd(0x4000_0000, 3)).unwrap();
        let installs = [
            RealSte::Stage2Only,
            RealSte::Nested { cd_ipa: slot(0) },
            RealSte::Invalid,
            RealSte::Nested { cd_ipa: ARENA.unmapped_ipa },
            RealSte::Stage2Only,
        ];
        for ste in installs {
            for sid in HOST_SIDS {
                b.install_ste(sid, ste).unwrap();
                match m.route(sid) {
                    Route::Fault => {}
                    Route::Translate { s2_root, vmid, .. } => {
                        assert_eq!((s2_root, vmid), (Some(ROOT), HOST_VMID), "{ste:?}")
                    }
                    other => panic!("{ste:?}: host stream {sid:#x} routed {other:?}"),
                }
            }
        }
        let log = writes(&m.take_log());
        assert!(
            !log.iter().any(|(a, v)| is_s2cr(a) && (*v >> 16) & 3 == u64::from(S2CR_TYPE_BYPASS)),
            "never S2CR bypass"
        );
    }
}

#[test]
fn tlb_maintenance_goes_to_a_host_bank_or_the_vmid_and_syncs_are_polled() {
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    m.take_log();
    // No nested bank yet: per-ASID maintenance becomes TLBIVMID, synced globally.
    b.submit(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 4 }).unwrap();
    b.sync().unwrap();
    let log = writes(&m.take_log());
    assert_eq!(log[0], (Space::Gr0(TLBIVMID), u64::from(HOST_VMID)));
    assert_eq!(log[1].0, Space::Gr0(STLBGSYNC));
    b.write_cd(slot(0), &cd(0x4000_0000, 4)).unwrap();
    b.install_ste(0x10, RealSte::Nested { cd_ipa: slot(0) }).unwrap();
    let bank = b.bank_of(0x10).unwrap();
    m.take_log();
    b.submit(RealCommand::CfgiCdAll { sid: 0x10 }).unwrap();
    b.submit(RealCommand::TlbiNhAsid { vmid: HOST_VMID, asid: 4 }).unwrap();
    b.submit(RealCommand::TlbiNhVa { vmid: HOST_VMID, asid: 4, addr: 0x1234_5000, leaf: true })
        .unwrap();
    b.submit(RealCommand::TlbiNhVaa { vmid: HOST_VMID, addr: 0x2000, leaf: false }).unwrap();
    b.submit(RealCommand::TlbiS12Vmall { vmid: HOST_VMID }).unwrap();
    b.sync().unwrap();
    let log = m.take_log();
    let w = writes(&log);
    assert_eq!(
        w,
        [
            (Space::Cb(bank, CB_TLBIASID), 4),
            (Space::Cb(bank, CB_TLBIVAL), tlbiva_value(0x1234_5000, 4)),
            (Space::Cb(bank, CB_TLBIVAA), 2),
            (Space::Gr0(TLBIVMID), u64::from(HOST_VMID)),
            (Space::Cb(bank, CB_TLBSYNC), 0),
            (Space::Gr0(STLBGSYNC), 0),
        ]
    );
    // Each sync polled until its status cleared (two reads each in this model).
    let polls =
        |at| log.iter().filter(|a| matches!(a, Access::Read { at: x, .. } if *x == at)).count();
    assert_eq!(polls(Space::Cb(bank, CB_TLBSTATUS)), 2);
    assert_eq!(polls(Space::Gr0(STLBGSTATUS)), 2);
    // Nothing outstanding: a sync touches nothing.
    b.sync().unwrap();
    assert!(m.take_log().is_empty());
    // Another VMID is not the host's to invalidate.
    assert_eq!(b.submit(RealCommand::TlbiNhAll { vmid: 9 }), Err(BackendError));
}

#[test]
fn a_bank_is_invalidated_and_synced_before_it_holds_another_context() {
    // G3: stream 0x10's context (ASID 1) leaves its bank; the bank's next context reuses the
    // same ASID with other tables (as a host whose own invalidation warden's engine skipped
    // would): the old translation must not serve it.
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    b.write_cd(slot(0), &cd(0x4000_0000, 1)).unwrap();
    b.install_ste(0x10, RealSte::Nested { cd_ipa: slot(0) }).unwrap();
    let bank = b.bank_of(0x10).unwrap();
    assert_eq!(m.dma(0x10), (m.route(0x10), false), "walk fills the TLB");
    b.install_ste(0x10, RealSte::Stage2Only).unwrap();
    assert_eq!(m.bank_reg(bank, CB_SCTLR), 0, "an unused bank is off");
    m.take_log();
    b.write_cd(slot(1), &cd(0x6000_0000, 1)).unwrap();
    b.install_ste(0x11, RealSte::Nested { cd_ipa: slot(1) }).unwrap();
    assert_eq!(b.bank_of(0x11), Some(bank), "the bank is reused");
    let log = m.take_log();
    let w = writes(&log);
    let tlbi = position(&w, Space::Cb(bank, CB_TLBIASID)).unwrap();
    let sync = position(&w, Space::Cb(bank, CB_TLBSYNC)).unwrap();
    let ttbr = position(&w, Space::Cb(bank, CB_TTBR0)).unwrap();
    assert!(tlbi < sync && sync < ttbr, "invalidate, sync, then the new context");
    assert_eq!(w[tlbi].1, 1);
    // The sync completed (status read as 0) before the bank was reprogrammed.
    let done = log
        .iter()
        .position(|a| matches!(a, Access::Read { at: Space::Cb(b2, CB_TLBSTATUS), value: 0 } if *b2 == bank))
        .unwrap();
    let ttbr_at = log
        .iter()
        .position(|a| matches!(a, Access::Write { at: Space::Cb(b2, CB_TTBR0), .. } if *b2 == bank))
        .unwrap();
    assert!(done < ttbr_at);
    let (route, stale) = m.dma(0x11);
    assert!(matches!(route, Route::Translate { .. }));
    assert!(!stale, "no translation of the old context served the new one");
    assert_eq!(b.stats().bank_reuse_invalidations, 1);
}

#[test]
fn the_engine_runs_on_the_mmu500_back_end() {
    use crate::smmu::backend::{ContextPlan, Installed, NestedStreams};
    use crate::smmu::virt::cd;
    use crate::smmu::virt::regs::Advertised;
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    let mut engine =
        NestedStreams::new("test", HOST_VMID, &HOST_SIDS, RealSte::Stage2Only, ARENA, true, true);
    let adv = Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 };
    let host_cd = cd(0x4000_0000, 7);
    let plan =
        |words: &[u64; CD_WORDS]| ContextPlan::Valid(cd::validate(words, &adv).unwrap().unwrap());
    assert_eq!(engine.install_context(&mut b, 0x10, plan(&host_cd)).unwrap(), Installed::Done);
    engine.sync(&mut b).unwrap();
    let real = engine.real_asid(0x10).unwrap();
    nested(&m, &b, 0x10, 0x4000_0000, real);
    // The host's TLBIASID of its ASID 7 reaches the real ASID on a host bank.
    m.take_log();
    engine.invalidate_host_asid(&mut b, 7).unwrap();
    engine.sync(&mut b).unwrap();
    let w = writes(&m.take_log());
    let bank = b.bank_of(0x10).unwrap();
    assert_eq!(w[0], (Space::Cb(bank, CB_TLBIASID), u64::from(real)));
    assert_eq!(w[1].0, Space::Cb(bank, CB_TLBSYNC));
    // Back to stage 2 only.
    engine.install_plain(&mut b, 0x10, RealSte::Stage2Only).unwrap();
    engine.sync(&mut b).unwrap();
    assert_eq!(m.route(0x10), s2_route(b.stage2_bank()));
}

#[test]
fn faults_of_host_banks_become_events_and_the_firmwares_are_left_alone() {
    use crate::smmu::{EventKind, FaultClass};
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Stage2Only)).unwrap();
    b.write_cd(slot(0), &cd(0x4000_0000, 1)).unwrap();
    b.install_ste(0x10, RealSte::Nested { cd_ipa: slot(0) }).unwrap();
    let nested_bank = b.bank_of(0x10).unwrap();
    let s2 = b.stage2_bank();
    assert!(b.poll_faults().is_empty());
    // A stage-1 translation fault on a write; a stage-2 permission fault of a table walk; a
    // fault in the firmware's bank 0 (a peer's).
    m.record_fault(nested_bank, mask32(FSR_F::TF), 0x1234_5678, mask32(FSYNR0_F::WNR), 0x10);
    m.record_fault(s2, mask32(FSR_F::PF), 0x8_0000_1000, mask32(FSYNR0_F::PTWF), 0x11);
    m.record_fault(0, mask32(FSR_F::TF), 0xdead_0000, 0, PEER_SID);
    m.record_global_fault(2);
    m.take_log();
    let events = b.poll_faults();
    assert_eq!(events.len(), 2);
    let s2_event = events.iter().find(|e| e.stage2).unwrap();
    let s1_event = events.iter().find(|e| !e.stage2).unwrap();
    assert_eq!(
        (s1_event.kind, s1_event.sid, s1_event.input_addr, s1_event.read, s1_event.class),
        (EventKind::Translation, 0x10, 0x1234_5678, false, FaultClass::Input)
    );
    assert_eq!(
        (s2_event.kind, s2_event.sid, s2_event.input_addr, s2_event.ipa, s2_event.read),
        (EventKind::Permission, 0x11, 0x8_0000_1000, 0x8_0000_1000, true)
    );
    assert_eq!(s2_event.class, FaultClass::TranslationTable);
    assert_eq!((m.fsr(nested_bank), m.fsr(s2), m.sgfsr()), (0, 0, 0), "cleared once read");
    assert_eq!(m.fsr(0), mask32(FSR_F::TF), "the peer's fault is the peer's");
    assert!(!m.take_log().iter().any(|a| matches!(
        a,
        Access::Read { at: Space::Cb(0, _), .. } | Access::Write { at: Space::Cb(0, _), .. }
    )));
    assert!(b.poll_faults().is_empty());
}

#[test]
fn the_virtual_mmu500_face_runs_on_the_real_mmu500_back_end() {
    // What Linux's arm-smmu does through warden's MMU-500 face, down to the model's registers:
    // a stage-1 bank nested over warden's stage 2, then the domain freed (bank off, TLBIASID,
    // TLBSYNC polled).
    use crate::smmu::v2::regs as face;
    use crate::smmu::v2::{Mmu500Config as FaceConfig, VirtMmu500};
    let m = firmware_model(ModelConfig::QCOM);
    let mut b = Mmu500Backend::init(&m, config(RealSte::Abort)).unwrap();
    let mut v = VirtMmu500::new(FaceConfig {
        host_vmid: HOST_VMID,
        host_streams: HOST_SIDS.map(StreamMatch::exact).to_vec(),
        peer_streams: vec![],
        initial: RealSte::Abort,
        arena: ARENA,
        oas_field: 2,
        asid16: true,
        g3_enabled: true,
    });
    let cb = |reg: u32| face::CB_BASE + 2 * face::PAGE + reg;
    let t1: u64 = 0x4100_0000;
    let w =
        |v: &mut VirtMmu500, b: &mut Mmu500Backend<&Mmu500Model>, off: u32, val: u64, size: u8| {
            v.mmio_write(off, size, val, b);
        };
    w(&mut v, &mut b, face::PAGE + face::CBA2R_BASE + 8, 1, 4);
    w(&mut v, &mut b, face::PAGE + face::CBAR_BASE + 8, (1 << 16) | (3 << 8) | (0xf << 12), 4);
    w(&mut v, &mut b, cb(face::CB_TCR2), (7 << 15) | (1 << 4) | 2, 4);
    w(&mut v, &mut b, cb(face::CB_TCR), 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23), 4);
    w(&mut v, &mut b, cb(face::CB_TTBR0), t1 | (2 << 48), 8);
    w(&mut v, &mut b, cb(face::CB_TTBR1), 2 << 48, 8);
    w(&mut v, &mut b, cb(face::CB_MAIR0), 0x0004_04ff, 4);
    w(&mut v, &mut b, cb(face::CB_SCTLR), (1 << 5) | (1 << 2) | (1 << 1) | 1, 4);
    w(&mut v, &mut b, face::S2CR_BASE, 2, 4);
    w(&mut v, &mut b, face::SMR_BASE, u64::from(valid(0x10)), 4);
    let real = v.real_asid(0x10).unwrap();
    nested(&m, &b, 0x10, t1, real);
    assert_eq!(m.route(0x11), Route::Fault, "no SMR of the host's names it");
    // Domain freed: bank off, TLBIASID, TLBSYNC, TLBSTATUS polled.
    m.take_log();
    w(&mut v, &mut b, cb(face::CB_SCTLR), 0, 4);
    w(&mut v, &mut b, cb(face::CB_TLBIASID), 2, 4);
    w(&mut v, &mut b, cb(face::CB_TLBSYNC), 0, 4);
    assert_eq!(v.mmio_read(cb(face::CB_TLBSTATUS), 4, &mut b), 0);
    assert_eq!(m.route(0x10), s2_route(b.stage2_bank()), "stage 1 off: warden's stage 2 alone");
    let log = writes(&m.take_log());
    // The host's TLBIASID reached the retiring real ASID: no nested bank is left to address
    // it to, so as TLBIVMID of the host, completed by TLBGSYNC.
    let tlbi = position(&log, Space::Gr0(TLBIVMID)).expect("the host's TLBIASID went nowhere");
    assert_eq!(log[tlbi].1, u64::from(HOST_VMID));
    assert!(position(&log, Space::Gr0(STLBGSYNC)).unwrap() > tlbi);
    assert_eq!(m.bad_accesses(), 0);
}
