//! A register model of an MMU-500 for host tests, written from IHI 0062 and the MMU-500 TRM
//! (and what Linux's `arm-smmu` / `arm-smmu-qcom` expect of it), implementing what the back
//! end touches: ID registers, sCR0, sACR, SMR/S2CR stream matching, CBAR/CBA2R, the context
//! banks' registers, TLB maintenance whose effect is only guaranteed once a TLBSYNC/TLBGSYNC
//! has *completed* (status polled to 0), FSR/sGFSR write-1-to-clear, and a small TLB so that
//! tests can see a stale translation survive a missing invalidation.
//!
//! Qualcomm's quirks it can show (each a [`ModelConfig`] knob or a preset):
//! - streams the firmware configured before warden: valid SMRs with bypass S2CRs (the
//!   bootloader's display splash), or translating through banks the firmware programmed
//!   (the peers' streams): [`Mmu500Model::preset_stream`], [`Mmu500Model::preset_bank`];
//! - S2CR type bypass that reads back as fault (what `qcom_smmu_cfg_probe` detects under
//!   Qualcomm's hypervisor): [`ModelConfig::bypass_becomes_fault`];
//! - Secure software keeping the top SMRs and banks (sCR1.NSNUMSMRGO/NSNUMCBO): the
//!   Non-secure view's sIDR0/sIDR1 count only the rest, and beyond them is RAZ/WI here,
//!   counted in [`Mmu500Model::bad_accesses`];
//! - sACR.CACHE_LOCK (MMU-500 r2+) making ACTLRs read-only until it is cleared;
//! - syncs that take several status reads, or never complete ([`ModelConfig::sync_polls`]).
//!
//! It is a model, not the silicon: nothing here was checked against a board.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::io::Mmu500Io;
use super::regs::*;

/// One access the back end made, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read { at: Space, value: u32 },
    Write { at: Space, value: u64 },
}

/// The model's shape and quirks.
#[derive(Clone, Copy, Debug)]
pub struct ModelConfig {
    /// SMR groups and context banks the Non-secure view has (sIDR0.NUMSMRG, sIDR1.NUMCB).
    pub numsmrg: u8,
    pub numcb: u8,
    /// Banks `0..nums2cb` are stage-2 only (sIDR1.NUMS2CB).
    pub nums2cb: u8,
    /// sIDR0.NTS (nested translation).
    pub nested: bool,
    /// Status reads a sync stays active for; `u32::MAX`: it never completes.
    pub sync_polls: u32,
    pub bypass_becomes_fault: bool,
    /// sIDR7.MAJOR (2: r2, sACR.CACHE_LOCK at reset).
    pub major: u8,
}

impl ModelConfig {
    /// An SM8250/SC7280-like apps SMMU as Linux reports it: 4 KiB pages, 16 global pages.
    pub const QCOM: Self = Self {
        numsmrg: 32,
        numcb: 16,
        nums2cb: 0,
        nested: true,
        sync_polls: 2,
        bypass_becomes_fault: false,
        major: 2,
    };
}

/// Where a stream's transactions go, as the model resolves them now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// sCR0.CLIENTPD: the SMMU lets everything through.
    GlobalBypass,
    /// No SMR matches: sCR0.USFCFG says fault (`true`) or bypass.
    Unmatched {
        fault: bool,
    },
    /// More than one SMR matches.
    Conflict,
    /// S2CR bypass, or a bank with translation off at every stage.
    Bypass,
    Fault,
    /// S2CR names a bank beyond NUMCB or a reserved configuration.
    Invalid,
    /// Translated by `bank`: stage 1 from `s1_ttbr0` (with its ASID), stage 2 from `s2_root`
    /// with `vmid`; `None` is a stage that is bypassed.
    Translate {
        bank: u8,
        s1_ttbr0: Option<u64>,
        s2_root: Option<u64>,
        vmid: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TlbEntry {
    vmid: u16,
    asid: Option<u16>,
    /// The tables the entry was walked from.
    tables: (Option<u64>, Option<u64>),
}

struct State {
    cfg: ModelConfig,
    layout: Layout,
    scr0: u32,
    sacr: u32,
    sgfsr: u32,
    smr: [u32; MAX_SMRG],
    s2cr: [u32; MAX_SMRG],
    cbar: [u32; MAX_CB],
    cba2r: [u32; MAX_CB],
    cbfrsynra: [u32; MAX_CB],
    /// (bank, offset) -> value
    cb: BTreeMap<(u8, u32), u64>,
    gsync_left: u32,
    cb_sync_left: BTreeMap<u8, u32>,
    tlb: Vec<TlbEntry>,
    /// Invalidated, but still usable until a sync completes.
    dying: Vec<TlbEntry>,
    log: Vec<Access>,
    bad: u32,
    syncs_completed: u32,
}

/// The model (interior mutability: [`Mmu500Io`] takes `&self`, like MMIO).
pub struct Mmu500Model {
    s: RefCell<State>,
}

const SID_BITS: u32 = 15;
const SID_MASK: u32 = (1 << SID_BITS) - 1;

impl Mmu500Model {
    pub fn new(cfg: ModelConfig) -> Self {
        let sacr = if cfg.major >= 2 { SACR_CACHE_LOCK } else { 0 };
        Self {
            s: RefCell::new(State {
                cfg,
                layout: Layout { page: 0x1000, numpage: 16 },
                // Reset: CLIENTPD (bypass) as a previous stage may leave it (Gunyah's exit
                // on RB3 Gen 2 leaves the SMMU in bypass).
                scr0: mask32(SCR0_F::CLIENTPD),
                sacr,
                sgfsr: 0,
                smr: [0; MAX_SMRG],
                s2cr: [S2CR_TYPE_FAULT << S2CR_F::TYPE.shift; MAX_SMRG],
                cbar: [0; MAX_CB],
                cba2r: [0; MAX_CB],
                cbfrsynra: [0; MAX_CB],
                cb: BTreeMap::new(),
                gsync_left: 0,
                cb_sync_left: BTreeMap::new(),
                tlb: Vec::new(),
                dying: Vec::new(),
                log: Vec::new(),
                bad: 0,
                syncs_completed: 0,
            }),
        }
    }

    pub fn layout(&self) -> Layout {
        self.s.borrow().layout
    }

    /// Firmware left SMR/S2CR group `index` so (not logged).
    pub fn preset_stream(&self, index: usize, smr: u32, s2cr: u32) {
        let mut s = self.s.borrow_mut();
        s.smr[index] = smr;
        s.s2cr[index] = s2cr;
    }

    /// Firmware left bank `bank` so (not logged): CBAR, and SCTLR/TTBR0.
    pub fn preset_bank(&self, bank: u8, cbar: u32, sctlr: u32, ttbr0: u64) {
        let mut s = self.s.borrow_mut();
        s.cbar[usize::from(bank)] = cbar;
        s.cb.insert((bank, CB_SCTLR), u64::from(sctlr));
        s.cb.insert((bank, CB_TTBR0), ttbr0);
    }

    /// Bank `bank` records a fault (what the hardware does when SCTLR.CFRE is set): FSR,
    /// FAR, FSYNR0 and CBFRSYNRA (the stream ID). Not logged.
    pub fn record_fault(&self, bank: u8, fsr: u32, far: u64, fsynr0: u32, sid: u32) {
        let mut s = self.s.borrow_mut();
        s.cb.insert((bank, CB_FSR), u64::from(fsr));
        s.cb.insert((bank, CB_FAR), far);
        s.cb.insert((bank, CB_FSYNR0), u64::from(fsynr0));
        s.cbfrsynra[usize::from(bank)] = sid;
    }

    /// A global fault (sGFSR), e.g. an unidentified stream. Not logged.
    pub fn record_global_fault(&self, sgfsr: u32) {
        self.s.borrow_mut().sgfsr = sgfsr;
    }

    pub fn fsr(&self, bank: u8) -> u32 {
        self.bank_reg(bank, CB_FSR) as u32
    }

    pub fn sgfsr(&self) -> u32 {
        self.s.borrow().sgfsr
    }

    /// sCR0 as a previous stage left it (not logged).
    pub fn preset_scr0(&self, value: u32) {
        self.s.borrow_mut().scr0 = value;
    }

    pub fn smr(&self, index: usize) -> u32 {
        self.s.borrow().smr[index]
    }

    pub fn s2cr(&self, index: usize) -> u32 {
        self.s.borrow().s2cr[index]
    }

    pub fn cbar(&self, bank: u8) -> u32 {
        self.s.borrow().cbar[usize::from(bank)]
    }

    pub fn bank_reg(&self, bank: u8, offset: u32) -> u64 {
        self.s.borrow().cb.get(&(bank, offset)).copied().unwrap_or(0)
    }

    pub fn scr0(&self) -> u32 {
        self.s.borrow().scr0
    }

    pub fn sacr(&self) -> u32 {
        self.s.borrow().sacr
    }

    /// Every access so far, and forget them.
    pub fn take_log(&self) -> Vec<Access> {
        core::mem::take(&mut self.s.borrow_mut().log)
    }

    /// Accesses outside the Non-secure view's arrays or the map.
    pub fn bad_accesses(&self) -> u32 {
        self.s.borrow().bad
    }

    /// TLB entries tagged with `vmid`, live or invalidated but not yet synced away (either
    /// can still serve a translation).
    pub fn cached(&self, vmid: u16) -> usize {
        let s = self.s.borrow();
        s.tlb.iter().chain(s.dying.iter()).filter(|e| e.vmid == vmid).count()
    }

    pub fn syncs_completed(&self) -> u32 {
        self.s.borrow().syncs_completed
    }

    /// Where stream `sid`'s transactions go now.
    pub fn route(&self, sid: u32) -> Route {
        self.s.borrow().route(sid)
    }

    /// A transaction of `sid`: returns its route and, when it translates, whether the TLB
    /// served it from an entry walked from *other* tables than the bank has now (a stale
    /// translation: what G3 forbids); otherwise the walk fills the TLB.
    pub fn dma(&self, sid: u32) -> (Route, bool) {
        let mut s = self.s.borrow_mut();
        let route = s.route(sid);
        let Route::Translate { s1_ttbr0, s2_root, vmid, .. } = route else {
            return (route, false);
        };
        let asid = s1_ttbr0.map(|t| (t >> 48) as u16);
        let tables = (s1_ttbr0.map(|t| t & !(0xffff << 48)), s2_root);
        let hit =
            s.tlb.iter().chain(s.dying.iter()).find(|e| e.vmid == vmid && e.asid == asid).copied();
        match hit {
            Some(e) => (route, e.tables != tables),
            None => {
                s.tlb.push(TlbEntry { vmid, asid, tables });
                (route, false)
            }
        }
    }
}

impl State {
    fn bank_vmid(&self, bank: u8) -> u16 {
        (self.cbar[usize::from(bank)] & CBAR_F::VMID.mask) as u16
    }

    fn reg(&self, bank: u8, offset: u32) -> u64 {
        self.cb.get(&(bank, offset)).copied().unwrap_or(0)
    }

    fn enabled(&self, bank: u8) -> bool {
        self.reg(bank, CB_SCTLR) & u64::from(mask32(SCTLR_F::M)) != 0
    }

    fn route(&self, sid: u32) -> Route {
        if self.scr0 & mask32(SCR0_F::CLIENTPD) != 0 {
            return Route::GlobalBypass;
        }
        let n = usize::from(self.cfg.numsmrg);
        let mut matched = (0..n).filter(|&i| {
            let smr = self.smr[i];
            let id = smr & SID_MASK;
            let mask = (smr >> SMR_F::MASK.shift) & SID_MASK;
            smr & mask32(SMR_F::VALID) != 0 && ((sid ^ id) & !mask & SID_MASK) == 0
        });
        let Some(i) = matched.next() else {
            return Route::Unmatched { fault: self.scr0 & mask32(SCR0_F::USFCFG) != 0 };
        };
        if matched.next().is_some() {
            return Route::Conflict;
        }
        let s2cr = self.s2cr[i];
        let bank = (s2cr & S2CR_F::CBNDX.mask) as u8;
        match (s2cr >> S2CR_F::TYPE.shift) & 3 {
            S2CR_TYPE_BYPASS => return Route::Bypass,
            S2CR_TYPE_TRANSLATION => {}
            _ => return Route::Fault,
        }
        if bank >= self.cfg.numcb {
            return Route::Invalid;
        }
        let cbar = self.cbar[usize::from(bank)];
        let s2_of = |b: u8| self.enabled(b).then(|| self.reg(b, CB_TTBR0));
        let (s1, s2, vmid) = match (cbar >> CBAR_F::TYPE.shift) & 3 {
            CBAR_TYPE_S2 => (None, s2_of(bank), self.bank_vmid(bank)),
            CBAR_TYPE_S1_S2_BYPASS => {
                (self.enabled(bank).then(|| self.reg(bank, CB_TTBR0)), None, 0)
            }
            CBAR_TYPE_NESTED => {
                let s2 = ((cbar >> CBAR_NESTED_F::CBNDX.shift) & CBAR_NESTED_F::CBNDX.mask) as u8;
                if s2 >= self.cfg.numcb
                    || (self.cbar[usize::from(s2)] >> CBAR_F::TYPE.shift) & 3 != CBAR_TYPE_S2
                {
                    return Route::Invalid;
                }
                (
                    self.enabled(bank).then(|| self.reg(bank, CB_TTBR0)),
                    s2_of(s2),
                    self.bank_vmid(s2),
                )
            }
            _ => return Route::Fault,
        };
        if s1.is_none() && s2.is_none() {
            return Route::Bypass;
        }
        Route::Translate { bank, s1_ttbr0: s1, s2_root: s2, vmid }
    }

    fn invalidate(&mut self, pred: impl Fn(&TlbEntry) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.tlb.iter().partition(|e| pred(e));
        self.tlb = kept;
        self.dying.extend(gone);
    }

    fn complete_sync(&mut self) {
        self.dying.clear();
        self.syncs_completed += 1;
    }

    fn read(&mut self, at: Space) -> u32 {
        let cfg = self.cfg;
        match at {
            Space::Gr0(SCR0) => self.scr0,
            Space::Gr0(SACR) => self.sacr,
            Space::Gr0(SIDR0) => {
                mask32(SIDR0_F::SMS)
                    | mask32(SIDR0_F::S1TS)
                    | mask32(SIDR0_F::S2TS)
                    | if cfg.nested { mask32(SIDR0_F::NTS) } else { 0 }
                    | mask32(SIDR0_F::CTTW)
                    | (SID_BITS << SIDR0_F::NUMSIDB.shift)
                    | u32::from(cfg.numsmrg)
            }
            Space::Gr0(SIDR1) => {
                (3 << SIDR1_F::NUMPAGENDXB.shift)
                    | (u32::from(cfg.nums2cb) << SIDR1_F::NUMS2CB.shift)
                    | u32::from(cfg.numcb)
            }
            // IAS = OAS = 40 bits (2), UBS 48 bits (5), 4 KiB granule.
            Space::Gr0(SIDR2) => 2 | (2 << 4) | (5 << 8) | mask32(SIDR2_F::PTFS_4K),
            Space::Gr0(SIDR7) => u32::from(cfg.major) << SIDR7_F::MAJOR.shift,
            Space::Gr0(SGFSR) => self.sgfsr,
            Space::Gr0(STLBGSTATUS) => {
                if self.gsync_left == 0 {
                    return 0;
                }
                if self.gsync_left != u32::MAX {
                    self.gsync_left -= 1;
                    if self.gsync_left == 0 {
                        self.complete_sync();
                        return 0;
                    }
                }
                1
            }
            Space::Gr0(o) if (SMR_BASE..SMR_BASE + 4 * MAX_SMRG as u32).contains(&o) => {
                self.array(o - SMR_BASE, cfg.numsmrg).map_or(0, |i| self.smr[i])
            }
            Space::Gr0(o) if (S2CR_BASE..S2CR_BASE + 4 * MAX_SMRG as u32).contains(&o) => {
                self.array(o - S2CR_BASE, cfg.numsmrg).map_or(0, |i| self.s2cr[i])
            }
            Space::Gr1(o) if o < 4 * MAX_CB as u32 => {
                self.array(o - CBAR_BASE, cfg.numcb).map_or(0, |i| self.cbar[i])
            }
            Space::Gr1(o) if (CBA2R_BASE..CBA2R_BASE + 4 * MAX_CB as u32).contains(&o) => {
                self.array(o - CBA2R_BASE, cfg.numcb).map_or(0, |i| self.cba2r[i])
            }
            Space::Gr1(o) if (CBFRSYNRA_BASE..CBFRSYNRA_BASE + 4 * MAX_CB as u32).contains(&o) => {
                self.array(o - CBFRSYNRA_BASE, cfg.numcb).map_or(0, |i| self.cbfrsynra[i])
            }
            Space::Cb(b, _) if b >= cfg.numcb => {
                self.bad += 1;
                0
            }
            Space::Cb(b, CB_TLBSTATUS) => {
                let left = self.cb_sync_left.get(&b).copied().unwrap_or(0);
                match left {
                    0 => 0,
                    u32::MAX => 1,
                    1 => {
                        self.cb_sync_left.remove(&b);
                        self.complete_sync();
                        0
                    }
                    n => {
                        self.cb_sync_left.insert(b, n - 1);
                        1
                    }
                }
            }
            Space::Cb(b, o) => self.reg(b, o) as u32,
            _ => {
                self.bad += 1;
                0
            }
        }
    }

    /// Index of a 4-byte array element, or `None` (counted) beyond `n`.
    fn array(&mut self, byte: u32, n: u8) -> Option<usize> {
        let i = (byte / 4) as usize;
        if i < usize::from(n) {
            Some(i)
        } else {
            self.bad += 1;
            None
        }
    }

    fn start_gsync(&mut self) {
        match self.cfg.sync_polls {
            0 => self.complete_sync(),
            n => self.gsync_left = n,
        }
    }

    fn write(&mut self, at: Space, value: u64) {
        let cfg = self.cfg;
        let v32 = value as u32;
        match at {
            Space::Gr0(SCR0) => self.scr0 = v32,
            Space::Gr0(SACR) => self.sacr = v32,
            Space::Gr0(SGFSR) => self.sgfsr &= !v32,
            Space::Gr0(TLBIVMID) => {
                let vmid = (v32 & TLBIVMID_F::VMID.mask) as u16;
                self.invalidate(|e| e.vmid == vmid);
            }
            Space::Gr0(TLBIALLNSNH) => self.invalidate(|_| true),
            Space::Gr0(STLBGSYNC) => self.start_gsync(),
            Space::Gr0(o) if (SMR_BASE..SMR_BASE + 4 * MAX_SMRG as u32).contains(&o) => {
                if let Some(i) = self.array(o - SMR_BASE, cfg.numsmrg) {
                    self.smr[i] = v32;
                }
            }
            Space::Gr0(o) if (S2CR_BASE..S2CR_BASE + 4 * MAX_SMRG as u32).contains(&o) => {
                if let Some(i) = self.array(o - S2CR_BASE, cfg.numsmrg) {
                    let ty = (v32 >> S2CR_F::TYPE.shift) & 3;
                    self.s2cr[i] = if cfg.bypass_becomes_fault && ty == S2CR_TYPE_BYPASS {
                        (v32 & !mask32(S2CR_F::TYPE)) | (S2CR_TYPE_FAULT << S2CR_F::TYPE.shift)
                    } else {
                        v32
                    };
                }
            }
            Space::Gr1(o) if o < 4 * MAX_CB as u32 => {
                if let Some(i) = self.array(o - CBAR_BASE, cfg.numcb) {
                    self.cbar[i] = v32;
                }
            }
            Space::Gr1(o) if (CBA2R_BASE..CBA2R_BASE + 4 * MAX_CB as u32).contains(&o) => {
                if let Some(i) = self.array(o - CBA2R_BASE, cfg.numcb) {
                    self.cba2r[i] = v32;
                }
            }
            Space::Cb(b, _) if b >= cfg.numcb => self.bad += 1,
            Space::Cb(b, CB_ACTLR) => {
                if self.sacr & SACR_CACHE_LOCK == 0 {
                    self.cb.insert((b, CB_ACTLR), value);
                }
            }
            Space::Cb(b, CB_FSR) => {
                let old = self.reg(b, CB_FSR);
                self.cb.insert((b, CB_FSR), old & !value);
            }
            Space::Cb(b, CB_TLBIASID) => {
                let vmid = self.vmid_of_bank(b);
                let asid = (v32 & TLBIASID_F::ASID.mask) as u16;
                self.invalidate(|e| e.vmid == vmid && e.asid == Some(asid));
            }
            Space::Cb(b, CB_TLBIVA | CB_TLBIVAL) => {
                // Per page is not modelled: the whole ASID goes (a superset, never less).
                let vmid = self.vmid_of_bank(b);
                let asid = (value >> 48) as u16;
                self.invalidate(|e| e.vmid == vmid && e.asid == Some(asid));
            }
            Space::Cb(b, CB_TLBIVAA | CB_TLBIVAAL) => {
                let vmid = self.vmid_of_bank(b);
                self.invalidate(|e| e.vmid == vmid && e.asid.is_some());
            }
            Space::Cb(b, CB_TLBSYNC) => match cfg.sync_polls {
                0 => self.complete_sync(),
                n => {
                    self.cb_sync_left.insert(b, n);
                }
            },
            Space::Cb(b, o) => {
                self.cb.insert((b, o), value);
            }
            _ => self.bad += 1,
        }
    }

    /// The VMID a bank's TLB maintenance applies to (a nested bank's is its stage-2 bank's).
    fn vmid_of_bank(&self, bank: u8) -> u16 {
        let cbar = self.cbar[usize::from(bank)];
        if (cbar >> CBAR_F::TYPE.shift) & 3 == CBAR_TYPE_NESTED {
            let s2 = ((cbar >> CBAR_NESTED_F::CBNDX.shift) & CBAR_NESTED_F::CBNDX.mask) as usize;
            return (self.cbar.get(s2).copied().unwrap_or(0) & CBAR_F::VMID.mask) as u16;
        }
        self.bank_vmid(bank)
    }
}

impl Mmu500Io for Mmu500Model {
    fn read32(&self, offset: u32) -> u32 {
        let mut s = self.s.borrow_mut();
        let at = s.layout.decode(offset);
        let value = s.read(at);
        s.log.push(Access::Read { at, value });
        value
    }

    fn write32(&self, offset: u32, value: u32) {
        let mut s = self.s.borrow_mut();
        let at = s.layout.decode(offset);
        s.log.push(Access::Write { at, value: u64::from(value) });
        s.write(at, u64::from(value));
    }

    fn read64(&self, offset: u32) -> u64 {
        let mut s = self.s.borrow_mut();
        let at = s.layout.decode(offset);
        let value = match at {
            Space::Cb(b, o) if b < s.cfg.numcb => s.reg(b, o),
            _ => {
                s.bad += 1;
                0
            }
        };
        s.log.push(Access::Read { at, value: value as u32 });
        value
    }

    fn write64(&self, offset: u32, value: u64) {
        let mut s = self.s.borrow_mut();
        let at = s.layout.decode(offset);
        s.log.push(Access::Write { at, value });
        s.write(at, value);
    }
}
