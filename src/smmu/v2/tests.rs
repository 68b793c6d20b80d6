//! The virtual MMU-500 against the recording back end: what Linux's `arm-smmu` +
//! `arm-smmu-qcom` probe and attach do, the routes of host streams, faults, G3 (the FastRPC
//! race) and the hostile-host answers.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::smmu::event::Event;
use crate::smmu::virt::asid::RealState;
use crate::smmu::virt::cmdq::RealCommand;
use crate::smmu::virt::fake::{RealOp, RecordingSmmu};

const VMID: u16 = 1;
/// Two PCI functions: 00:01.0 and 00:02.0.
const SID_A: u32 = 0x08;
const SID_B: u32 = 0x10;
/// A stream no SMR names until a test says so.
const SID_C: u32 = 0x18;
const ARENA: u64 = 0x7f_c000_0000;
const UNMAPPED: u64 = ARENA + 0x3fff_f000;

const T1: u64 = 0x4100_0000;
const T2: u64 = 0x4200_0000;

fn config(g3: bool) -> Mmu500Config {
    Mmu500Config {
        host_vmid: VMID,
        host_streams: [SID_A, SID_B, SID_C].map(StreamMatch::exact).to_vec(),
        peer_streams: vec![],
        initial: RealSte::Abort,
        arena: CdArena { ipa: ARENA, slots: 6, unmapped_ipa: UNMAPPED },
        oas_field: 2,
        asid16: true,
        g3_enabled: g3,
    }
}

fn slot(stream: u64, slot: u64) -> u64 {
    ARENA + (2 * stream + slot) * 64
}

struct Host {
    smmu: VirtMmu500,
    real: RecordingSmmu,
}

impl Host {
    fn new(g3: bool) -> Self {
        Host { smmu: VirtMmu500::new(config(g3)), real: RecordingSmmu::default() }
    }
    fn r(&mut self, offset: u32) -> u32 {
        self.smmu.mmio_read(offset, 4, &mut self.real) as u32
    }
    fn r64(&mut self, offset: u32) -> u64 {
        self.smmu.mmio_read(offset, 8, &mut self.real)
    }
    fn w(&mut self, offset: u32, value: u32) -> Notify {
        self.smmu.mmio_write(offset, 4, u64::from(value), &mut self.real)
    }
    fn w64(&mut self, offset: u32, value: u64) -> Notify {
        self.smmu.mmio_write(offset, 8, value, &mut self.real)
    }
    fn cb(n: u32, reg: u32) -> u32 {
        CB_BASE + n * PAGE + reg
    }

    /// Linux's `arm_smmu_device_reset` with the MMU-500 impl (Debian: bypass disabled).
    fn linux_reset(&mut self) {
        let gfsr = self.r(SGFSR);
        self.w(SGFSR, gfsr);
        for i in 0..NUM_SMRG as u32 {
            self.w(S2CR_BASE + 4 * i, 2 << 16);
            self.w(SMR_BASE + 4 * i, 0);
        }
        for n in 0..NUM_CB as u32 {
            self.w(Self::cb(n, CB_SCTLR), 0);
            self.w(Self::cb(n, CB_FSR), FSR_FAULTS);
        }
        self.w(TLBIALLH, 0xffff_ffff);
        self.w(TLBIALLNSNH, 0xffff_ffff);
        // arm_mmu500_reset: CACHE_LOCK off (r2+), then the prefetcher off in every bank.
        let acr = self.r(SACR) & !SACR_CACHE_LOCK;
        self.w(SACR, acr | (1 << 8) | (1 << 10));
        for n in 0..NUM_CB as u32 {
            let actlr = self.r(Self::cb(n, CB_ACTLR)) & !2;
            self.w(Self::cb(n, CB_ACTLR), actlr);
            assert_eq!(self.r(Self::cb(n, CB_ACTLR)) & 2, 0, "CPRE cleared");
        }
        // qcom_smmu_tlb_sync: write anything, poll GSACTIVE.
        self.w(STLBGSYNC, 0xffff_ffff);
        assert_eq!(self.r(STLBGSTATUS), 0);
        let scr0 = self.r(SCR0);
        let scr0 = (scr0 | (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 11) | (1 << 12))
            & !1
            & !(1 << 13)
            & !(3 << 14);
        self.w(SCR0, scr0 | (1 << 10));
    }

    /// `arm_smmu_write_context_bank` for a stage-1 AArch64 domain: bank `n`, ASID `asid`,
    /// tables at `ttb` (T0SZ 25, 4 KiB, write-back inner shareable; EPD1).
    fn linux_write_bank(&mut self, n: u32, asid: u16, ttb: u64) {
        self.w(CBA2R_BASE + PAGE + 4 * n, 1);
        self.w(PAGE + CBAR_BASE + 4 * n, (1 << 16) | (3 << 8) | (0xf << 12));
        self.w(Self::cb(n, CB_TCR2), (7 << 15) | (1 << 4) | 2);
        self.w(Self::cb(n, CB_TCR), 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23));
        self.w64(Self::cb(n, CB_TTBR0), ttb | (u64::from(asid) << 48));
        self.w64(Self::cb(n, CB_TTBR1), u64::from(asid) << 48);
        self.w(Self::cb(n, CB_MAIR0), 0x0004_04ff);
        self.w(Self::cb(n, CB_MAIR1), 0);
        // CFIE | CFRE | AFE | TRE | M | ASIDPNE
        self.w(Self::cb(n, CB_SCTLR), (1 << 6) | (1 << 5) | (1 << 2) | (1 << 1) | 1 | (1 << 12));
    }

    /// `arm_smmu_write_sme`: S2CR, then SMR (valid, exact ID).
    fn linux_map_stream(&mut self, group: u32, sid: u32, s2cr: u32) {
        self.w(S2CR_BASE + 4 * group, s2cr);
        self.w(SMR_BASE + 4 * group, (1 << 31) | sid);
    }

    /// Context bank teardown: SCTLR = 0 (`arm_smmu_destroy_domain_context`).
    fn linux_disable_bank(&mut self, n: u32) {
        self.w(Self::cb(n, CB_SCTLR), 0);
    }
}

fn translate_to(n: u32) -> u32 {
    n
}

const S2CR_BYPASS: u32 = 1 << 16;
const S2CR_FAULT: u32 = 2 << 16;

fn fault(kind: u8, sid: u32, addr: u64, write: bool, stage2: bool, class: u64) -> Event {
    let mut w1 = class << 40;
    if !write {
        w1 |= 1 << 35;
    }
    if stage2 {
        w1 |= 1 << 39;
    }
    Event::decode([u64::from(kind) | (u64::from(sid) << 32), w1, addr, addr & !0xfff])
}

const F_TRANSLATION: u8 = 0x10;
const F_PERMISSION: u8 = 0x13;
const C_BAD_STE: u8 = 0x04;
const CLASS_TT: u64 = 1;
const CLASS_IN: u64 = 2;

#[test]
fn linux_probe_reads_an_mmu500_with_stage1_and_stream_matching() {
    let mut h = Host::new(true);
    let id0 = h.r(SIDR0);
    assert_ne!(id0 & (1 << 30), 0, "S1TS");
    assert_eq!(id0 & ((1 << 29) | (1 << 28)), 0, "no S2TS, no NTS");
    assert_ne!(id0 & (1 << 27), 0, "SMS");
    assert_ne!(id0 & (1 << 26), 0, "ATOSNS: no ATOS");
    assert_eq!(id0 & (3 << 24), 3 << 24, "no AArch32 formats");
    assert_eq!((id0 >> 9) & 0xf, 15, "NUMSIDB");
    assert_eq!(id0 & (1 << 8), 0, "no EXIDS");
    assert_eq!(id0 & 0xff, NUM_SMRG as u32);
    let id1 = h.r(SIDR1);
    assert_eq!(id1 >> 31, 0, "4 KiB pages");
    // Linux: 2 * (1 << (NUMPAGENDXB + 1)) << 12 must be the DT's size.
    assert_eq!((2 * (1u32 << (((id1 >> 28) & 7) + 1))) << 12, WINDOW);
    assert_eq!(WINDOW, 0x2_0000);
    assert_eq!(id1 & 0xff, NUM_CB as u32);
    assert_eq!((id1 >> 16) & 0xff, 0, "no stage-2 banks");
    let id2 = h.r(SIDR2);
    assert_eq!(id2 & 0xf, 2, "IAS 40 bits");
    assert_eq!((id2 >> 4) & 0xf, 2, "OAS 40 bits");
    assert_eq!((id2 >> 8) & 0xf, 5, "UBS 48 bits");
    assert_eq!(id2 & (7 << 12), 1 << 12, "4 KiB granule only");
    assert_eq!(id2 & (1 << 15), 0, "8-bit VMIDs");
    assert_eq!((h.r(SIDR7) >> 4) & 0xf, 2, "MMU-500 r2");
    // Reset values.
    assert_eq!(h.r(SCR0), 1 << 10, "USFCFG, client port enabled");
    assert_eq!(h.r(S2CR_BASE), S2CR_FAULT);
    assert_eq!(h.r(SMR_BASE), 0);
    assert_eq!(h.r(SACR), SACR_CACHE_LOCK);
    assert_eq!(h.r(Host::cb(3, CB_ACTLR)), ACTLR_RESET);
    assert_eq!(h.r(Host::cb(3, CB_SCTLR)), 0);
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 0);
    assert_eq!(h.r(SGFSR), 0);
    assert_eq!(h.smmu.stats().bad_accesses, 0);
    assert!(h.real.take().is_empty(), "reading IDs touches nothing");
}

#[test]
fn actlr_is_locked_until_sacr_cache_lock_is_cleared() {
    let mut h = Host::new(true);
    h.w(Host::cb(0, CB_ACTLR), 0);
    assert_eq!(h.r(Host::cb(0, CB_ACTLR)), ACTLR_RESET, "locked at reset");
    h.w(SACR, 0);
    h.w(Host::cb(0, CB_ACTLR), 1);
    assert_eq!(h.r(Host::cb(0, CB_ACTLR)), 1);
}

#[test]
fn linux_reset_leaves_every_stream_faulting() {
    let mut h = Host::new(true);
    h.linux_reset();
    assert_eq!(h.smmu.stats().bypass_refusals, 0, "Linux asks for no bypass");
    for sid in [SID_A, SID_B, SID_C] {
        assert_eq!(h.smmu.route(sid), Some(Route::Unidentified));
        assert_eq!(h.smmu.installed(sid), Some(RealSte::Invalid));
    }
    let ops = h.real.take();
    assert!(ops.iter().all(|op| matches!(
        op,
        RealOp::Install(_, RealSte::Invalid)
            | RealOp::Sync
            | RealOp::Command(RealCommand::TlbiS12Vmall { .. })
    )));
}

#[test]
fn qcom_bypass_probe_reads_back_bypass_and_smr_masks_probe() {
    let mut h = Host::new(true);
    let last = S2CR_BASE + 4 * (NUM_SMRG as u32 - 1);
    // qcom_smmu_cfg_probe: BYPASS, CBNDX 0xff, PRIVCFG default.
    h.w(last, S2CR_BYPASS | 0xff);
    assert_eq!((h.r(last) >> 16) & 3, 1, "bypass reads back: no S2CR quirk");
    // arm_smmu_test_smr_masks.
    h.w(SMR_BASE, 0x7fff);
    assert_eq!(h.r(SMR_BASE) & 0xffff, 0x7fff);
    h.w(SMR_BASE, 0x7fff << 16);
    assert_eq!((h.r(SMR_BASE) >> 16) & 0xffff, 0x7fff);
    h.w(SMR_BASE, 0xffff);
    assert_eq!(h.r(SMR_BASE), 0x7fff, "bit 15 is RES0");
}

#[test]
fn stage1_domain_becomes_a_shadow_cd_nested_over_warden_stage2() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.real.take();
    h.linux_write_bank(2, 2, T1);
    assert!(h.real.take().is_empty(), "no stream uses bank 2 yet: the back end is untouched");
    h.linux_map_stream(0, SID_A, translate_to(2));
    assert_eq!(h.smmu.route(SID_A), Some(Route::Bank(2)));
    assert_eq!(h.smmu.real_asid(SID_A), Some(2), "the host ASID when free");
    let ops = h.real.take();
    let cd_at = slot(0, 0);
    let RealOp::WriteCd(ipa, words) = ops[0] else { panic!("{ops:?}") };
    assert_eq!(ipa, cd_at);
    assert_eq!(words[0] & 0x3f, 25, "T0SZ");
    assert_ne!(words[0] & (1 << 30), 0, "EPD1");
    assert_ne!(words[0] & (1 << 31), 0, "V");
    assert_ne!(words[0] & (1 << 41), 0, "AA64");
    assert_eq!(words[0] >> 48, 2, "real ASID");
    assert_eq!((words[0] >> 32) & 7, 2, "IPS from TCR2.PASIZE");
    assert_eq!(words[1], T1, "TTB0 without the ASID");
    assert_eq!(words[3], 0x0004_04ff);
    assert_eq!(
        &ops[1..],
        &[
            RealOp::Install(SID_A, RealSte::Nested { cd_ipa: cd_at }),
            RealOp::Command(RealCommand::CfgiCdAll { sid: SID_A }),
            RealOp::Sync,
        ]
    );
    // The SMR write after the S2CR found nothing new to do for the other streams.
    assert_eq!(h.smmu.installed(SID_B), Some(RealSte::Invalid));
}

#[test]
fn identity_domain_and_disabled_bank_are_warden_stage2_alone() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_map_stream(0, SID_A, S2CR_BYPASS);
    assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Stage2Only));
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(1, SID_B, translate_to(1));
    assert!(matches!(h.smmu.installed(SID_B), Some(RealSte::Nested { .. })));
    h.linux_disable_bank(1);
    assert_eq!(h.smmu.route(SID_B), Some(Route::Bypass { bank: Some(1) }));
    assert_eq!(h.smmu.installed(SID_B), Some(RealSte::Stage2Only));
    h.w(S2CR_BASE + 4, S2CR_FAULT);
    assert_eq!(h.smmu.installed(SID_B), Some(RealSte::Abort));
}

#[test]
fn unmatched_streams_fault_as_usf_and_bypass_requests_are_refused() {
    let mut h = Host::new(true);
    h.linux_reset();
    // CLIENTPD = 1 and USFCFG = 0: both refused.
    h.w(SCR0, 1 | (1 << 1) | (1 << 2));
    let scr0 = h.r(SCR0);
    assert_eq!(scr0 & 1, 0, "CLIENTPD reads 0");
    assert_ne!(scr0 & (1 << 10), 0, "USFCFG reads 1");
    assert_eq!(h.smmu.stats().bypass_refusals, 1);
    assert_eq!(h.smmu.installed(SID_C), Some(RealSte::Invalid), "never real bypass");
    let n = h.smmu.forward_event(&fault(C_BAD_STE, SID_C, 0, true, false, 0));
    assert!(n.global_irq);
    assert_eq!(h.r(SGFSR), 1 << 1, "USF");
    assert_eq!(h.r(SGFSYNR1), SID_C);
    assert_eq!(h.r(SGFSYNR0) & 2, 2, "WNR");
    // A second one: MULTI; W1C clears.
    h.smmu.forward_event(&fault(C_BAD_STE, SID_C, 0, false, false, 0));
    assert_eq!(h.r(SGFSR), (1 << 1) | (1 << 31));
    h.w(SGFSR, (1 << 1) | (1 << 31));
    assert_eq!(h.r(SGFSR), 0);
    // GFRE = 0: not recorded.
    h.w(SCR0, 1 << 10);
    assert_eq!(
        h.smmu.forward_event(&fault(C_BAD_STE, SID_C, 0, true, false, 0)),
        Notify::default()
    );
    assert_eq!(h.r(SGFSR), 0);
}

#[test]
fn overlapping_valid_smrs_are_a_stream_match_conflict() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_map_stream(0, SID_A, S2CR_BYPASS);
    assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Stage2Only));
    // Group 1 matches 0x00..=0x0f (mask 0xf) and so SID_A too.
    h.w(S2CR_BASE + 4, S2CR_BYPASS);
    h.w(SMR_BASE + 4, (1 << 31) | (0xf << 16));
    assert_eq!(h.smmu.route(SID_A), Some(Route::Conflict));
    assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Invalid));
    h.smmu.forward_event(&fault(C_BAD_STE, SID_A, 0, false, false, 0));
    assert_eq!(h.r(SGFSR), 1 << 2, "SMCF");
    assert_eq!(h.r(SGFSYNR1), SID_A);
    // Invalidating one group resolves it.
    h.w(SMR_BASE + 4, 0xf << 16);
    assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Stage2Only));
}

#[test]
fn stage2_and_nested_bank_types_and_missing_banks_are_invalid_contexts() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(0, 5, T1);
    for cbar_type in [0u32, 2, 3] {
        h.w(PAGE + CBAR_BASE, cbar_type << 16);
        h.linux_map_stream(0, SID_A, translate_to(0));
        assert_eq!(h.smmu.route(SID_A), Some(Route::InvalidContext), "type {cbar_type}");
        assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Invalid));
    }
    h.linux_map_stream(0, SID_A, translate_to(NUM_CB as u32));
    assert_eq!(h.smmu.route(SID_A), Some(Route::InvalidContext));
    h.smmu.forward_event(&fault(C_BAD_STE, SID_A, 0, false, false, 0));
    assert_eq!(h.r(SGFSR), 1, "ICF");
}

#[test]
fn refused_bank_configurations_get_a_v0_shadow() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(0, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(0));
    assert!(h.smmu.real_asid(SID_A).is_some());
    // AArch32 context.
    h.w(CBA2R_BASE + PAGE, 0);
    h.w(Host::cb(0, CB_SCTLR), 1 | (1 << 5));
    assert_eq!(h.smmu.real_asid(SID_A), None);
    assert!(matches!(
        h.smmu.engine.stream_cd(SID_A),
        Some(crate::smmu::backend::StreamCd::Shadow { context: None, .. })
    ));
    assert_eq!(h.smmu.stats().cb_refusals, 1);
    // 64 KiB granule.
    h.w(CBA2R_BASE + PAGE, 1);
    h.w(Host::cb(0, CB_TCR), 25 | (1 << 14) | (1 << 23));
    h.w(Host::cb(0, CB_SCTLR), 1 | (1 << 5));
    assert_eq!(h.smmu.real_asid(SID_A), None);
    assert_eq!(h.smmu.stats().cb_refusals, 2);
    // Its transactions are the bank's translation faults.
    h.smmu.forward_event(&fault(0x0a, SID_A, 0, false, false, 0));
    assert_eq!(h.r(Host::cb(0, CB_FSR)), 1 << 1);
}

#[test]
fn context_faults_fill_fsr_far_fsynr_and_raise_the_bank_interrupt() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(3, 3, T1);
    h.linux_map_stream(0, SID_B, translate_to(3));
    let n = h.smmu.forward_event(&fault(F_TRANSLATION, SID_B, 0x1234_5000, true, false, CLASS_IN));
    assert_eq!(n, Notify { global_irq: false, context_irqs: 1 << 3 });
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 1 << 1, "TF");
    assert_eq!(h.r64(Host::cb(3, CB_FAR)), 0x1234_5000);
    assert_eq!(h.r(Host::cb(3, CB_FAR)), 0x1234_5000, "low half");
    assert_eq!(h.r(Host::cb(3, CB_FAR + 4)), 0, "high half");
    assert_eq!(h.r(Host::cb(3, CB_FSYNR0)), 1 << 4, "WNR");
    assert_eq!(h.r(PAGE + CBFRSYNRA_BASE + 4 * 3), SID_B);
    h.smmu.forward_event(&fault(F_PERMISSION, SID_B, 0x9000, false, false, CLASS_IN));
    assert_eq!(h.r(Host::cb(3, CB_FSR)), (1 << 1) | (1 << 31), "MULTI, first fault kept");
    assert_eq!(h.r64(Host::cb(3, CB_FAR)), 0x1234_5000);
    h.w(Host::cb(3, CB_FSR), FSR_FAULTS);
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 0);
    // warden's stage 2 refusing the access (a carveout page): an external abort.
    h.smmu.forward_event(&fault(F_TRANSLATION, SID_B, 0x5000, true, true, CLASS_IN));
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 1 << 4, "EF");
    assert_eq!(h.r(Host::cb(3, CB_FSYNR0)) & (1 << 10), 0);
    h.w(Host::cb(3, CB_FSR), FSR_FAULTS);
    // ... or the bank's table walk (TTBR in a carveout): EF with PTWF.
    h.smmu.forward_event(&fault(F_TRANSLATION, SID_B, 0x6000, false, true, CLASS_TT));
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 1 << 4);
    assert_ne!(h.r(Host::cb(3, CB_FSYNR0)) & (1 << 10), 0, "PTWF");
    h.w(Host::cb(3, CB_FSR), FSR_FAULTS);
    // CFRE = 0: nothing recorded, no interrupt.
    h.w(Host::cb(3, CB_SCTLR), 1);
    let n = h.smmu.forward_event(&fault(F_TRANSLATION, SID_B, 0x7000, true, false, CLASS_IN));
    assert_eq!(n, Notify::default());
    assert_eq!(h.r(Host::cb(3, CB_FSR)), 0);
    // Bypass streams' faults are not recorded by an SMMU (counted).
    h.linux_map_stream(1, SID_A, S2CR_BYPASS);
    let before = h.smmu.stats().unreported_faults;
    assert_eq!(
        h.smmu.forward_event(&fault(F_TRANSLATION, SID_A, 0x5000, true, true, CLASS_IN)),
        Notify::default()
    );
    assert_eq!(h.smmu.stats().unreported_faults, before + 1);
    // Events of streams that are not the host's are ignored.
    assert_eq!(
        h.smmu.forward_event(&fault(F_TRANSLATION, 0x999, 0, true, false, CLASS_IN)),
        Notify::default()
    );
}

/// The FastRPC session cycle on bank 1, host ASID 1: tables T1, released (SCTLR = 0 and a
/// TLBSYNC, but no TLBIASID), then at once a new session on the same bank and ASID with T2.
fn fastrpc_cycle(h: &mut Host) -> Vec<RealOp> {
    h.linux_reset();
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(1));
    assert_eq!(h.smmu.real_asid(SID_A), Some(1));
    // INIT_RELEASE: the session's bank goes; the host syncs but forgets TLBIASID.
    h.linux_disable_bank(1);
    h.w(Host::cb(1, CB_TLBSYNC), 0xffff_ffff);
    assert_eq!(
        h.smmu.asids().state(1),
        Some(RealState::Retiring { host_asid: 1, invalidated: false })
    );
    h.real.take();
    // INIT_CREATE at once: same bank, same ASID, other tables.
    h.linux_write_bank(1, 1, T2);
    h.real.take()
}

#[test]
fn fastrpc_race_g3_invalidates_the_reused_asid_first() {
    let mut h = Host::new(true);
    let ops = fastrpc_cycle(&mut h);
    let vmid = VMID;
    let flush =
        ops.iter().position(|o| *o == RealOp::Command(RealCommand::TlbiNhAsid { vmid, asid: 1 }));
    let cd = ops.iter().position(|o| matches!(o, RealOp::WriteCd(_, w) if w[1] == T2));
    let (Some(flush), Some(cd)) = (flush, cd) else { panic!("{ops:?}") };
    assert!(flush < cd, "TLBI before the new context: {ops:?}");
    assert_eq!(ops[flush + 1], RealOp::Sync, "and its sync completed first");
    assert_eq!(h.smmu.stats().asids.forced_flushes, 1);
    assert_eq!(h.smmu.real_asid(SID_A), Some(1), "the same real ASID, now clean");
}

#[test]
fn fastrpc_race_with_g3_off_reuses_the_asid_unflushed() {
    let mut h = Host::new(true);
    h.w(test_switch::G3_OFFSET, test_switch::KEY);
    assert_eq!(h.r(test_switch::G3_OFFSET), test_switch::KEY, "G3 off");
    let ops = fastrpc_cycle(&mut h);
    assert!(
        !ops.iter().any(|o| matches!(o, RealOp::Command(RealCommand::TlbiNhAsid { .. }))),
        "{ops:?}"
    );
    let stats = h.smmu.stats().asids;
    assert_eq!((stats.forced_flushes, stats.unprotected_reuses), (0, 1));
    assert_eq!(h.smmu.real_asid(SID_A), Some(1), "stale entries of ASID 1 are reachable");
}

#[test]
fn host_tlbiasid_and_tlbsync_free_the_asid_so_no_forced_flush() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(1));
    h.linux_disable_bank(1);
    // arm_smmu_tlb_inv_context_s1: TLBIASID + TLBSYNC.
    h.w(Host::cb(1, CB_TLBIASID), 1);
    h.w(Host::cb(1, CB_TLBSYNC), 0xffff_ffff);
    assert_eq!(h.smmu.asids().state(1), None, "free");
    h.linux_write_bank(1, 1, T2);
    assert_eq!(h.smmu.stats().asids.forced_flushes, 0);
    assert_eq!(h.smmu.stats().asids.freed, 1);
}

#[test]
fn a_reprogrammed_live_bank_takes_effect_at_its_tlb_maintenance() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(1));
    h.real.take();
    // New tables and ASID while M = 1: nothing changes on the back end yet.
    h.w64(Host::cb(1, CB_TTBR0), T2 | (7 << 48));
    assert!(h.real.take().is_empty());
    assert_eq!(h.smmu.real_asid(SID_A), Some(1));
    // TLBIASID(7) commits it first; the old real ASID 1 retires (not covered by it).
    h.w(Host::cb(1, CB_TLBIASID), 7);
    assert_eq!(h.smmu.real_asid(SID_A), Some(7));
    assert_eq!(
        h.smmu.asids().state(1),
        Some(RealState::Retiring { host_asid: 1, invalidated: false })
    );
}

#[test]
fn tlb_maintenance_goes_to_the_real_asids_with_the_host_vmid() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(1));
    h.real.take();
    // arm_smmu_tlb_inv_range_s1 (AArch64): VA >> 12 | ASID << 48, 64-bit.
    h.w64(Host::cb(1, CB_TLBIVAL), (0x8000_1000 >> 12) | (1 << 48));
    h.w64(Host::cb(1, CB_TLBIVAA), 0x8000_2000 >> 12);
    h.w(Host::cb(1, CB_TLBIALL), 0);
    h.w(TLBIALLNSNH, 0);
    h.w(TLBIVMID, 0);
    h.w(Host::cb(1, CB_TLBSYNC), 0);
    let vmid = VMID;
    assert_eq!(
        h.real.take(),
        vec![
            RealOp::Command(RealCommand::TlbiNhVa { vmid, asid: 1, addr: 0x8000_1000, leaf: true }),
            RealOp::Command(RealCommand::TlbiNhVaa { vmid, addr: 0x8000_2000, leaf: false }),
            RealOp::Command(RealCommand::TlbiNhAll { vmid }),
            RealOp::Command(RealCommand::TlbiS12Vmall { vmid }),
            RealOp::Command(RealCommand::TlbiNhAll { vmid }),
            RealOp::Sync,
        ]
    );
    assert_eq!(h.smmu.stats().tlb_invalidations, 5 + 2, "TLBIALLH and TLBIALLNSNH of the reset");
}

#[test]
fn tlbsync_floods_cost_at_most_one_back_end_sync_each() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_write_bank(1, 1, T1);
    h.linux_map_stream(0, SID_A, translate_to(1));
    h.real.take();
    for _ in 0..10_000 {
        h.w(Host::cb(1, CB_TLBSYNC), 0);
        h.w(STLBGSYNC, 0);
    }
    assert!(h.real.take().is_empty(), "nothing pending: no back-end sync");
    for _ in 0..100 {
        h.w(Host::cb(1, CB_TLBIASID), 1);
        h.w(Host::cb(1, CB_TLBSYNC), 0);
    }
    let ops = h.real.take();
    assert_eq!(ops.iter().filter(|o| **o == RealOp::Sync).count(), 100);
    // A sync the back end does not complete: SACTIVE stays set and the status read retries.
    h.w(Host::cb(1, CB_TLBIASID), 1);
    h.real.fail_syncs = 1;
    h.w(Host::cb(1, CB_TLBSYNC), 0);
    assert_eq!(h.r(Host::cb(1, CB_TLBSTATUS)), 0, "retried on the read, completed");
    h.real.fail_syncs = 2;
    h.w(Host::cb(1, CB_TLBIASID), 1);
    h.w(STLBGSYNC, 0);
    assert_eq!(h.r(STLBGSTATUS), 1, "still active");
    assert_eq!(h.r(STLBGSTATUS), 0, "completed on the next poll");
    assert_eq!(h.smmu.stats().sync_retries, 3);
}

#[test]
fn accesses_outside_the_map_are_raz_wi_and_counted() {
    let mut h = Host::new(true);
    h.linux_reset();
    h.linux_map_stream(0, SID_A, S2CR_BYPASS);
    let before = h.smmu.stats().bad_accesses;
    h.real.take();
    let mut bad = 0;
    for (offset, size) in [
        (SCR0, 2u8),       // 16 bits
        (SCR0, 1),         // 8 bits
        (SCR0 + 2, 4),     // unaligned
        (SCR0, 8),         // 64 bits at a 32-bit register
        (WINDOW, 4),       // beyond the window
        (0xffff_fff0, 4),  // far beyond
        (2 * PAGE, 4),     // global pages 2.. are not offered
        (PAGE + 0xc00, 4), // global space 1 beyond its arrays
        (PAGE + CBAR_BASE + 4 * NUM_CB as u32, 4),
        (CB_BASE + NUM_CB as u32 * PAGE, 4), // a bank beyond NUMCB
        (Host::cb(0, 0x900), 4),             // bank offset not in the map
        (0x100, 4),                          // page 0 hole
    ] {
        assert_eq!(h.smmu.mmio_read(offset, size, &mut h.real), 0, "{offset:#x}/{size}");
        h.smmu.mmio_write(offset, size, u64::MAX, &mut h.real);
        bad += 2;
    }
    assert_eq!(h.smmu.stats().bad_accesses, before + bad);
    assert!(h.real.take().is_empty(), "nothing reached the back end");
    assert_eq!(h.smmu.installed(SID_A), Some(RealSte::Stage2Only));
    assert_eq!(h.r(SCR0) & 1, 0);
    // NSCR0 and sCR1/2: RAZ/WI without counting (in the map).
    h.w(NSCR0, 0xffff_ffff);
    assert_eq!(h.r(NSCR0), 0);
    assert_eq!(h.smmu.stats().bad_accesses, before + bad);
}

#[test]
fn sixty_four_bit_registers_take_halves() {
    let mut h = Host::new(true);
    h.w(Host::cb(0, CB_TTBR0), 0x1234_5000);
    h.w(Host::cb(0, CB_TTBR0 + 4), 0x0003_0000);
    assert_eq!(h.r64(Host::cb(0, CB_TTBR0)), 0x0003_0000_1234_5000);
    h.w64(SGFAR, 0xdead_beef_0000_1000);
    assert_eq!(h.r(SGFAR + 4), 0xdead_beef);
    assert_eq!(h.smmu.stats().bad_accesses, 0);
}

/// A board's face: masked host streams (one route for every ID of each) and a peer's stream a
/// host SMR must not name.
#[test]
fn masked_streams_follow_one_route_and_a_peers_stream_is_refused() {
    const PEER: u32 = 0x1803;
    let display = StreamMatch { id: 0x800, mask: 0x402 };
    let mut h = Host::new(true);
    h.smmu = VirtMmu500::new(Mmu500Config {
        host_streams: vec![display, StreamMatch::exact(SID_A)],
        peer_streams: vec![StreamMatch::exact(PEER)],
        initial: RealSte::Stage2Only,
        ..config(true)
    });
    assert_eq!(h.smmu.route(0xc02), Some(Route::Bypass { bank: None }), "as the boot left it");
    h.linux_reset();
    assert_eq!(h.smmu.installed(0x800), Some(RealSte::Invalid));
    // An SMR covering the whole set: every ID of it follows the bank.
    h.linux_write_bank(0, 3, T1);
    h.w(S2CR_BASE, translate_to(0));
    h.w(SMR_BASE, (1 << 31) | 0x800 | (0x402 << 16));
    for sid in [0x800, 0x802, 0xc00, 0xc02] {
        assert_eq!(h.smmu.route(sid), Some(Route::Bank(0)), "{sid:#x}");
    }
    assert!(matches!(h.smmu.installed(0x800), Some(RealSte::Nested { .. })));
    // An SMR matching only part of it: a conflict, never half of the set translated.
    h.w(SMR_BASE, (1 << 31) | 0x800);
    assert_eq!(h.smmu.route(0x802), Some(Route::Conflict));
    assert_eq!(h.smmu.installed(0x800), Some(RealSte::Invalid));
    // The peer's stream, exactly or under a mask: stored invalid, counted.
    for smr in [(1 << 31) | PEER, (1 << 31) | (0x7fff << 16)] {
        h.w(SMR_BASE + 4, smr);
        assert_eq!(h.r(SMR_BASE + 4), smr & !(1 << 31));
    }
    assert_eq!(h.smmu.stats().peer_smr_refusals, 2);
    assert_eq!(h.smmu.route(SID_A), Some(Route::Unidentified), "the refused SMR matches nothing");
}
