//! The virtual MMU-500 the host sees on the Snapdragon persona (SMMU architecture version 2,
//! Arm IHI 0062; Qualcomm's apps SMMU programming model), over the same back end as the
//! virtual SMMUv3 ([`crate::smmu::backend`]).
//!
//! The host's MMU-500 register window (global spaces 0 and 1, then one 4 KiB page per context
//! bank, [`regs::WINDOW`] bytes) is absent from its stage 2; every access traps and lands in
//! [`VirtMmu500::mmio_read`] / [`VirtMmu500::mmio_write`]. Nothing here touches hardware.
//!
//! **What is offered** (sIDR0..2, 7): stage 1 only (S1TS; no S2TS, no NTS), stream matching
//! with [`regs::NUM_SMRG`] groups of 15-bit IDs and masks, [`regs::NUM_CB`] context banks (none
//! stage-2 capable), AArch64 tables with the 4 KiB granule only (no AArch32 formats), no ATOS,
//! coherent table walks, no broadcast TLB maintenance, 8-bit VMIDs, IAS = OAS = the host's IPA
//! size, a 48-bit upstream bus; sIDR7 says MMU-500 r2p0.
//!
//! **How a host stream maps onto the back end**, derived from the *committed* configuration
//! (below) for every stream ID of the host's devices:
//! - no valid SMR matches: unidentified stream. sCR0.USFCFG reads 1 whatever is written (a
//!   request for bypass of unmatched streams is refused and counted), so the back end gets an
//!   invalid STE and each transaction is reported as sGFSR.USF;
//! - two or more valid SMRs match: stream match conflict, each transaction reported as
//!   sGFSR.SMCF (as hardware does at transaction time);
//! - S2CR type fault: a silent abort; bypass: warden's stage 2 alone (never real bypass);
//! - S2CR type translation to context bank *n*: *n* beyond NUMCB, or a CBAR type other than
//!   "stage 1, stage 2 bypass" (the stage-2 and nested types need features the SMMU does not
//!   have; "stage 2 fault" is refused with them): sGFSR.ICF for each transaction;
//!   SCTLR.M = 0: stage 1 is off, so warden's stage 2 alone; SCTLR.M = 1: the bank's TCR,
//!   TCR2, TTBR0/1 and MAIR0/1 become an SMMUv3 context descriptor that goes through the same
//!   validation and shadowing as a host CD on the SMMUv3 face (`cd::validate`, a real ASID
//!   warden allocates, nested over warden's stage 2). A bank the validation refuses (AArch32
//!   via CBA2R.VA64 = 0, big-endian via SCTLR.E, a granule other than 4 KiB, a TxSZ or table
//!   beyond what is offered, TCR2.HA/HD) gets a V = 0 shadow and its transactions are
//!   reported as translation faults (FSR.TF) of the bank.
//!
//! **When configuration takes effect.** Linux writes a bank's registers one by one (CBA2R,
//! CBAR, TCR2, TCR, TTBR0/1, MAIR0/1, SCTLR last) and then points streams at it (S2CR, SMR).
//! Re-deriving after every single write would install half-written contexts (and burn real
//! ASIDs on them). warden therefore *commits* a bank's registers at a write to its SCTLR, at
//! any TLB maintenance or sync through the bank or the global space, and at writes to
//! sCR0, SMRs and S2CRs (which commit every bank); the back end then follows at once and the
//! change is completed (back-end sync) before the trap returns, as a register write is on
//! hardware. Until then the previous, validated configuration stays in force.
//!
//! **G3 on this face.** A bank's context (its ASID and tables) that a stream stops using
//! releases its real ASID; once that switch is complete the real ASID is *retiring*, and it is
//! free again only when the host's TLBIASID (or TLBIALL, TLBIVMID, TLBIALLNSNH) for it was
//! issued after that and a TLBSYNC or TLBGSYNC completed. A new context with the same host
//! ASID while the old one's real ASID is still retiring (the FastRPC seed: a session released
//! and a new one created at once on the same bank and ASID with other tables) makes warden
//! invalidate and sync it first, counted in `SMMU_STATS` (`forced_flushes`) and logged
//! (`vMMU-500 G3: ...`). With the test-only G3 switch off the retiring real ASID is reused as
//! it is, and the new session can read through the old one's TLB entries.
//!
//! **Faults.** Back-end events of host streams become what the architecture reports: for a
//! stream translated by bank *n* (SCTLR.CFRE = 1), FSR (TF, AFF, PF, ASF, TLBMCF; a fault of
//! warden's stage 2 below the bank, a carveout or warden's memory, is an external abort, EF,
//! with FSYNR0.PTWF when it hit the bank's table walk), FAR (the input address), FSYNR0 (WNR,
//! PTWF), CBFRSYNRAn (the stream ID), and the bank's context interrupt when SCTLR.CFIE = 1; a
//! second fault while FSR holds one only sets FSR.MULTI. Global faults (USF, SMCF, ICF) go to
//! sGFSR/sGFAR/sGFSYNR0..1 and the global interrupt (sCR0.GFRE / GFIE). Faults of streams in
//! bypass or abort are not recorded by an SMMU; warden counts them.
//!
//! **Hostile host.** Registers outside the map, accesses other than 32 bits (or 64 bits to a
//! 64-bit register), unaligned ones: RAZ/WI, counted. sCR0.CLIENTPD = 1 and USFCFG = 0 (bypass
//! for every or for unmatched streams): refused, the bits read back as enforced, counted and
//! logged. TLBSYNC/TLBGSYNC floods: each write completes at most one back-end sync (none if
//! nothing was issued since the last one); a sync the back end did not complete leaves
//! TLBSTATUS.SACTIVE / sTLBGSTATUS.GSACTIVE set and is retried on the next status read.
//! Pointing a stream at warden's memory or a carveout (bypass, or a bank's tables or
//! mappings there) gets warden's stage 2: the access faults as above.

pub mod regs;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use tock_registers::fields::Field;

use crate::smmu::backend::{
    BackendError, BackendEvent, ContextPlan, Installed, NestedBackend, NestedStreams, RealSte,
};
use crate::smmu::event::{EventKind, FaultClass};
pub use crate::smmu::mmu500::StreamMatch;
use crate::smmu::virt::CdArena;
use crate::smmu::virt::asid::{AsidStats, RealAsids};
use crate::smmu::virt::cd::{self, CD_WORDS};
use crate::smmu::virt::regs::Advertised;

use regs::*;

/// How the virtual MMU-500 is set up.
#[derive(Clone, Debug)]
pub struct Mmu500Config {
    /// The VMID of the host's stage 2 on the back end.
    pub host_vmid: u16,
    /// The host's streams: on QEMU the stream IDs of the boot's PCI scan (each exact), on a
    /// board the DT's `iommus` streams warden kept for the host, as `mmu500::host_streams`
    /// merged them (canonical, none overlapping another). Each is one stream of the engine,
    /// named by its canonical ID, and follows one route: an SMR of the host's matches it only
    /// if it matches all of its IDs.
    pub host_streams: Vec<StreamMatch>,
    /// Streams that are not the host's and that a host SMR must not name (on a board: the
    /// firmware's peers' streams the back end kept as found). A host SMR write matching any of
    /// their IDs is refused: stored with VALID clear, counted and logged.
    pub peer_streams: Vec<StreamMatch>,
    /// The real STE every host stream has when the face is made (what the back end installed
    /// at boot), until the host's first configuration write commits the face's state.
    pub initial: RealSte,
    /// Two shadow CD slots per host stream, in `host_streams` order.
    pub arena: CdArena,
    /// The IAS/OAS encoding offered (the SMMUv3 IDR5.OAS encoding of the host's IPA size;
    /// 0..=5 mean the same sizes in sIDR2).
    pub oas_field: u32,
    /// The back end has 16-bit ASIDs.
    pub asid16: bool,
    /// G3 on (the default); off only in the test that shows what it prevents.
    pub g3_enabled: bool,
}

/// Interrupts the caller must raise towards the host after a trap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub global_irq: bool,
    /// Bit `n`: context bank `n`'s interrupt.
    pub context_irqs: u32,
}

/// Counters for logs and the `SMMU_STATS` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mmu500Stats {
    /// Accesses outside the register map, of a wrong size or unaligned (RAZ/WI).
    pub bad_accesses: u64,
    /// sCR0 writes asking for bypass (CLIENTPD = 1 or USFCFG = 0), refused.
    pub bypass_refusals: u64,
    /// Context banks whose configuration was refused at a commit.
    pub cb_refusals: u64,
    /// Host TLB maintenance writes (TLBI*) and syncs (TLBSYNC, TLBGSYNC).
    pub tlb_invalidations: u64,
    pub tlb_syncs: u64,
    /// Syncs the back end did not complete (left active, retried on the status read).
    pub sync_retries: u64,
    pub global_faults: u64,
    pub context_faults: u64,
    /// Back-end faults of streams in bypass or abort (not recorded by an SMMU).
    pub unreported_faults: u64,
    /// SMR writes refused because they would match a peer's stream.
    pub peer_smr_refusals: u64,
    /// Back-end syncs issued / skipped as nothing was pending.
    pub real_syncs: u64,
    pub skipped_syncs: u64,
    pub asids: AsidStats,
}

/// What a context bank's registers say, as committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BankConfig {
    cbar: u32,
    cba2r: u32,
    sctlr: u32,
    tcr: u32,
    tcr2: u32,
    ttbr0: u64,
    ttbr1: u64,
    mair0: u32,
    mair1: u32,
}

/// One context bank: its registers as the host wrote them, and the committed copy.
#[derive(Clone, Copy, Debug)]
struct Bank {
    live: BankConfig,
    committed: BankConfig,
    actlr: u32,
    contextidr: u32,
    fsr: u32,
    far: u64,
    fsynr0: u32,
    fsynr1: u32,
    cbfrsynra: u32,
    /// A TLBSYNC the back end did not complete.
    sync_active: bool,
}

impl Bank {
    const RESET: Bank = Bank {
        live: BankConfig {
            cbar: 0,
            cba2r: 0,
            sctlr: 0,
            tcr: 0,
            tcr2: 0,
            ttbr0: 0,
            ttbr1: 0,
            mair0: 0,
            mair1: 0,
        },
        committed: BankConfig {
            cbar: 0,
            cba2r: 0,
            sctlr: 0,
            tcr: 0,
            tcr2: 0,
            ttbr0: 0,
            ttbr1: 0,
            mair0: 0,
            mair1: 0,
        },
        actlr: ACTLR_RESET,
        contextidr: 0,
        fsr: 0,
        far: 0,
        fsynr0: 0,
        fsynr1: 0,
        cbfrsynra: 0,
        sync_active: false,
    };
}

/// Where a host stream goes, per the committed configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// No valid SMR matches (sGFSR.USF).
    Unidentified,
    /// More than one valid SMR matches (sGFSR.SMCF).
    Conflict,
    /// S2CR points at a bank that does not exist or has a type not offered (sGFSR.ICF).
    InvalidContext,
    /// S2CR type fault (or the reserved type): silent abort.
    Abort,
    /// S2CR type bypass, or a bank with SCTLR.M = 0: warden's stage 2 alone.
    Bypass { bank: Option<u8> },
    /// Translated by this bank (a refused bank gets a V = 0 shadow).
    Bank(u8),
}

/// The fields of sCR0 that read back as stored (the rest are RES0 here, or enforced).
const SCR0_STORED: u32 = mask32(SCR0_F::GFRE)
    | mask32(SCR0_F::GFIE)
    | mask32(SCR0_F::GCFGFRE)
    | mask32(SCR0_F::GCFGFIE)
    | mask32(SCR0_F::TRANSIENTCFG)
    | mask32(SCR0_F::STALLD)
    | mask32(SCR0_F::GSE)
    | mask32(SCR0_F::VMIDPNE)
    | mask32(SCR0_F::PTM)
    | mask32(SCR0_F::FB)
    | mask32(SCR0_F::BSU)
    | mask32(SCR0_F::MEMATTR)
    | mask32(SCR0_F::MTCFG)
    | mask32(SCR0_F::SMCFCFG)
    | mask32(SCR0_F::SHCFG)
    | mask32(SCR0_F::RACFG)
    | mask32(SCR0_F::WACFG)
    | mask32(SCR0_F::NSCFG);
const SMR_STORED: u32 = mask32(SMR_F::ID) | mask32(SMR_F::MASK) | mask32(SMR_F::VALID);
/// S2CR: every architected field but EXIDVALID (no extended IDs); bits 10 and 30..31 RES0.
const S2CR_STORED: u32 = mask32(S2CR_F::CBNDX)
    | mask32(S2CR_F::SHCFG)
    | mask32(S2CR_F::MTCFG)
    | mask32(S2CR_F::MEMATTR)
    | mask32(S2CR_F::TYPE)
    | mask32(S2CR_F::NSCFG)
    | mask32(S2CR_F::RACFG)
    | mask32(S2CR_F::WACFG)
    | mask32(S2CR_F::PRIVCFG)
    | mask32(S2CR_F::INSTCFG)
    | mask32(S2CR_F::TRANSIENTCFG);
/// CBA2R: VA64 and MONC; VMID16 is RES0 without sIDR2.VMID16.
const CBA2R_STORED: u32 = mask32(CBA2R_F::VA64) | mask32(CBA2R_F::MONC);
/// SCTLR: CFCFG (stall) is RAZ/WI: faulting transactions are always terminated.
const SCTLR_STORED: u32 = !mask32(SCTLR_F::CFCFG);
/// FSR bits that record faults (write-1-to-clear).
const FSR_FAULTS: u32 = mask32(FSR_F::TF)
    | mask32(FSR_F::AFF)
    | mask32(FSR_F::PF)
    | mask32(FSR_F::EF)
    | mask32(FSR_F::TLBMCF)
    | mask32(FSR_F::TLBLKF)
    | mask32(FSR_F::ASF)
    | mask32(FSR_F::UUT)
    | mask32(FSR_F::SS)
    | mask32(FSR_F::MULTI);
const SGFSR_FAULTS: u32 = mask32(SGFSR_F::ICF)
    | mask32(SGFSR_F::USF)
    | mask32(SGFSR_F::SMCF)
    | mask32(SGFSR_F::UCBF)
    | mask32(SGFSR_F::UCIF)
    | mask32(SGFSR_F::CAF)
    | mask32(SGFSR_F::EF)
    | mask32(SGFSR_F::PF)
    | mask32(SGFSR_F::UUT)
    | mask32(SGFSR_F::MULTI);
/// sCR0 at reset as warden's firmware leaves it: unmatched streams fault, client port on.
const SCR0_RESET: u32 = mask32(SCR0_F::USFCFG);

/// What a 32- or 64-bit access addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Global(u32),
    Gr1(u32),
    Bank(u8, u32),
}

/// The virtual MMU-500.
pub struct VirtMmu500 {
    config: Mmu500Config,
    adv: Advertised,
    engine: NestedStreams,
    scr0: u32,
    sacr: u32,
    gfar: u64,
    gfsr: u32,
    gfsynr0: u32,
    gfsynr1: u32,
    gfsynr2: u32,
    gsync_active: bool,
    smr: [u32; NUM_SMRG],
    s2cr: [u32; NUM_SMRG],
    banks: [Bank; NUM_CB],
    routes: BTreeMap<u32, Route>,
    stats: Mmu500Stats,
}

/// S2CR at reset: type fault (IHI 0062: S2CR resets to fault, so nothing flows before the
/// host has set a stream up).
const S2CR_RESET: u32 = 2 << 16;

impl VirtMmu500 {
    pub fn new(config: Mmu500Config) -> Self {
        let sids: Vec<u32> = config.host_streams.iter().map(|s| s.canonical().id).collect();
        let engine = NestedStreams::new(
            "vMMU-500",
            config.host_vmid,
            &sids,
            config.initial,
            config.arena,
            config.asid16,
            config.g3_enabled,
        );
        let adv = Advertised {
            sid_bits: NUMSIDB,
            oas_field: config.oas_field.min(5),
            asid16: config.asid16,
            cmdq_log2: 0,
            evtq_log2: 0,
        };
        // Until the first commit the streams are where the boot put them.
        let initial = match config.initial {
            RealSte::Stage2Only => Route::Bypass { bank: None },
            RealSte::Abort => Route::Abort,
            _ => Route::Unidentified,
        };
        let routes = sids.iter().map(|&s| (s, initial)).collect();
        Self {
            config,
            adv,
            engine,
            scr0: SCR0_RESET,
            sacr: SACR_CACHE_LOCK,
            gfar: 0,
            gfsr: 0,
            gfsynr0: 0,
            gfsynr1: 0,
            gfsynr2: 0,
            gsync_active: false,
            smr: [0; NUM_SMRG],
            s2cr: [S2CR_RESET; NUM_SMRG],
            banks: [Bank::RESET; NUM_CB],
            routes,
            stats: Mmu500Stats::default(),
        }
    }

    pub fn set_g3_enabled(&mut self, enabled: bool) {
        self.config.g3_enabled = enabled;
        self.engine.set_g3_enabled(enabled);
    }

    pub fn g3_enabled(&self) -> bool {
        self.engine.g3_enabled()
    }

    pub fn asids(&self) -> &RealAsids {
        self.engine.asids()
    }

    /// Where a host stream goes now (`sid`: any stream ID of it).
    pub fn route(&self, sid: u32) -> Option<Route> {
        self.routes.get(&self.stream_of(sid)?.id).copied()
    }

    /// The host stream (canonical) that stream ID `sid` belongs to.
    fn stream_of(&self, sid: u32) -> Option<StreamMatch> {
        self.config.host_streams.iter().find(|s| s.matches(sid)).map(|s| s.canonical())
    }

    /// The real STE installed for a host stream.
    pub fn installed(&self, sid: u32) -> Option<RealSte> {
        self.engine.installed(sid)
    }

    /// The real ASID a host stream's shadow carries.
    pub fn real_asid(&self, sid: u32) -> Option<u16> {
        self.engine.real_asid(sid)
    }

    pub fn stats(&self) -> Mmu500Stats {
        let engine = self.engine.stats();
        Mmu500Stats {
            real_syncs: engine.real_syncs,
            skipped_syncs: engine.skipped_syncs,
            asids: self.engine.asid_stats(),
            ..self.stats
        }
    }

    // --- ID registers.

    fn sidr0(&self) -> u32 {
        (SIDR0_F::S1TS::SET
            + SIDR0_F::SMS::SET
            + SIDR0_F::ATOSNS::SET
            + SIDR0_F::PTFS_NO_AARCH32::SET
            + SIDR0_F::PTFS_NO_AARCH32S::SET
            + SIDR0_F::CTTW::SET
            + SIDR0_F::NUMIRPT.val(NUM_CB as u32)
            + SIDR0_F::NUMSIDB.val(NUMSIDB)
            + SIDR0_F::NUMSMRG.val(NUM_SMRG as u32))
        .value
    }

    fn sidr1(&self) -> u32 {
        (SIDR1_F::NUMPAGENDXB.val(NUMPAGENDXB)
            + SIDR1_F::NUMS2CB.val(0)
            + SIDR1_F::NUMCB.val(NUM_CB as u32))
        .value
    }

    fn sidr2(&self) -> u32 {
        (SIDR2_F::IAS.val(self.adv.oas_field)
            + SIDR2_F::OAS.val(self.adv.oas_field)
            + SIDR2_F::UBS.val(5)
            + SIDR2_F::PTFS_4K::SET)
            .value
    }

    fn sidr7(&self) -> u32 {
        (SIDR7_F::MAJOR.val(2) + SIDR7_F::MINOR.val(0)).value
    }

    // --- Access decoding.

    /// The register an access names, if the access is one the map has (32 bits anywhere on a
    /// 4-byte boundary; 64 bits only at a 64-bit register).
    fn decode(&self, offset: u32, size: u8) -> Option<Reg> {
        if offset >= WINDOW || !matches!(size, 4 | 8) || !offset.is_multiple_of(u32::from(size)) {
            return None;
        }
        let page = offset / PAGE;
        let within = offset % PAGE;
        let reg = if offset >= CB_BASE {
            let bank = ((offset - CB_BASE) / PAGE) as usize;
            if bank >= NUM_CB {
                return None;
            }
            Reg::Bank(bank as u8, within)
        } else if page == 0 {
            Reg::Global(within)
        } else if page == 1 {
            Reg::Gr1(within)
        } else {
            return None;
        };
        if size == 8 && !is_64bit(reg) {
            return None;
        }
        Some(reg)
    }

    /// A trapped read. Reading a sync status retries a sync the back end did not complete.
    pub fn mmio_read<B: NestedBackend + ?Sized>(
        &mut self,
        offset: u32,
        size: u8,
        backend: &mut B,
    ) -> u64 {
        #[cfg(any(test, feature = "test-switches"))]
        if offset == test_switch::G3_OFFSET && size == 4 {
            return u64::from(test_switch::KEY | u32::from(self.g3_enabled()));
        }
        let Some(reg) = self.decode(offset, size) else {
            self.stats.bad_accesses += 1;
            return 0;
        };
        // 64-bit registers: the value of the whole register, then the half asked for.
        let base = offset & !7;
        let (reg64, shift) = match reg {
            Reg::Global(o) if size == 4 && is_64bit(Reg::Global(o & !7)) => {
                (Reg::Global(o & !7), (offset - base) * 8)
            }
            Reg::Bank(b, o) if size == 4 && is_64bit(Reg::Bank(b, o & !7)) => {
                (Reg::Bank(b, o & !7), (offset - base) * 8)
            }
            r => (r, 0),
        };
        let value = self.read_reg(reg64, backend);
        let value = value >> shift;
        if size == 4 { value & 0xffff_ffff } else { value }
    }

    fn read_reg<B: NestedBackend + ?Sized>(&mut self, reg: Reg, backend: &mut B) -> u64 {
        match reg {
            Reg::Global(o) => u64::from(match o {
                SCR0 => self.scr0,
                SACR => self.sacr,
                SIDR0 => self.sidr0(),
                SIDR1 => self.sidr1(),
                SIDR2 => self.sidr2(),
                SIDR7 => self.sidr7(),
                SGFAR => return self.gfar,
                SGFSR => self.gfsr,
                SGFSYNR0 => self.gfsynr0,
                SGFSYNR1 => self.gfsynr1,
                SGFSYNR2 => self.gfsynr2,
                STLBGSTATUS => {
                    if self.gsync_active {
                        self.gsync_active = self.sync(backend).is_err();
                    }
                    u32::from(self.gsync_active)
                }
                o if (SMR_BASE..SMR_BASE + 4 * NUM_SMRG as u32).contains(&o) => {
                    self.smr[((o - SMR_BASE) / 4) as usize]
                }
                o if (S2CR_BASE..S2CR_BASE + 4 * NUM_SMRG as u32).contains(&o) => {
                    self.s2cr[((o - S2CR_BASE) / 4) as usize]
                }
                // sCR1/sCR2, sIDR3..6, sGFSRRESTORE and the TLB maintenance registers
                // (write-only), NSCR0 and the IMPLEMENTATION DEFINED rest.
                o => {
                    if !is_known_global(o) {
                        self.stats.bad_accesses += 1;
                    }
                    0
                }
            }),
            Reg::Gr1(o) => u64::from(match gr1_index(o) {
                Some((CBAR_BASE, n)) => self.banks[n].live.cbar,
                Some((CBFRSYNRA_BASE, n)) => self.banks[n].cbfrsynra,
                Some((_, n)) => self.banks[n].live.cba2r,
                None => {
                    self.stats.bad_accesses += 1;
                    0
                }
            }),
            Reg::Bank(b, o) => {
                let n = usize::from(b);
                let bank = &self.banks[n];
                u64::from(match o {
                    CB_SCTLR => bank.live.sctlr,
                    CB_ACTLR => bank.actlr,
                    CB_TCR2 => bank.live.tcr2,
                    CB_TTBR0 => return bank.live.ttbr0,
                    CB_TTBR1 => return bank.live.ttbr1,
                    CB_TCR => bank.live.tcr,
                    CB_CONTEXTIDR => bank.contextidr,
                    CB_MAIR0 => bank.live.mair0,
                    CB_MAIR1 => bank.live.mair1,
                    CB_FSR => bank.fsr,
                    CB_FAR => return bank.far,
                    CB_FSYNR0 => bank.fsynr0,
                    CB_FSYNR1 => bank.fsynr1,
                    CB_TLBSTATUS => {
                        if self.banks[n].sync_active {
                            let failed = self.sync(backend).is_err();
                            self.banks[n].sync_active = failed;
                        }
                        u32::from(self.banks[n].sync_active)
                    }
                    o => {
                        if !is_known_bank(o) {
                            self.stats.bad_accesses += 1;
                        }
                        0
                    }
                })
            }
        }
    }

    /// A trapped write.
    pub fn mmio_write<B: NestedBackend + ?Sized>(
        &mut self,
        offset: u32,
        size: u8,
        value: u64,
        backend: &mut B,
    ) -> Notify {
        #[cfg(any(test, feature = "test-switches"))]
        if offset == test_switch::G3_OFFSET && size == 4 {
            if value & !u64::from(test_switch::ON) == u64::from(test_switch::KEY) {
                let enabled = value & u64::from(test_switch::ON) != 0;
                self.set_g3_enabled(enabled);
                log::warn!(
                    "vMMU-500: G3 (ASID retirement flushes) switched {} by the host (test switch)",
                    if enabled { "on" } else { "off" }
                );
            }
            return Notify::default();
        }
        let Some(reg) = self.decode(offset, size) else {
            self.stats.bad_accesses += 1;
            return Notify::default();
        };
        let v32 = value as u32;
        match reg {
            Reg::Global(o) => self.write_global(o, size, value, backend),
            Reg::Gr1(o) => {
                match gr1_index(o) {
                    Some((CBAR_BASE, n)) => self.banks[n].live.cbar = v32,
                    Some((CBFRSYNRA_BASE, n)) => self.banks[n].cbfrsynra = v32 & 0xffff,
                    Some((_, n)) => self.banks[n].live.cba2r = v32 & CBA2R_STORED,
                    None => self.stats.bad_accesses += 1,
                }
                Notify::default()
            }
            Reg::Bank(b, o) => self.write_bank(b, o, size, value, backend),
        }
    }

    fn write_global<B: NestedBackend + ?Sized>(
        &mut self,
        o: u32,
        size: u8,
        value: u64,
        backend: &mut B,
    ) -> Notify {
        let v32 = value as u32;
        match o {
            SCR0 => {
                if SCR0_F::CLIENTPD.read(v32) != 0 || SCR0_F::USFCFG.read(v32) == 0 {
                    self.stats.bypass_refusals += 1;
                    log::warn!(
                        "vMMU-500: host asked for bypass (sCR0 {v32:#x}: CLIENTPD = 1 or \
                         USFCFG = 0); refused, unmatched streams keep faulting"
                    );
                }
                self.scr0 = (v32 & SCR0_STORED) | SCR0_RESET;
                self.commit_all(backend);
            }
            SACR => self.sacr = v32,
            SGFAR => self.gfar = merge64(self.gfar, o, size, value, SGFAR),
            o if o == SGFAR + 4 => self.gfar = merge64(self.gfar, o, size, value, SGFAR),
            SGFSR => self.gfsr &= !(v32 & SGFSR_FAULTS),
            SGFSRRESTORE => self.gfsr = v32 & SGFSR_FAULTS,
            SGFSYNR0 => self.gfsynr0 = v32,
            SGFSYNR1 => self.gfsynr1 = v32,
            SGFSYNR2 => self.gfsynr2 = v32,
            // The host's "all non-secure non-hyp" entries and its VMIDs' entries are all its
            // own: every stage-1 entry of the host VMID (TLBI_S12_VMALL for NSNH).
            TLBIALLNSNH | TLBIVMID => {
                self.stats.tlb_invalidations += 1;
                self.commit_all(backend);
                if self.engine.invalidate_all(backend, o == TLBIALLNSNH).is_err() {
                    log::error!("vMMU-500: back end refused a global invalidation");
                }
            }
            // Hypervisor and Secure entries: the host has none.
            TLBIALLH | TLBIVAH | STLBIALL => self.stats.tlb_invalidations += 1,
            STLBGSYNC => {
                self.stats.tlb_syncs += 1;
                self.commit_all(backend);
                self.gsync_active = self.sync(backend).is_err();
            }
            o if (SMR_BASE..SMR_BASE + 4 * NUM_SMRG as u32).contains(&o) => {
                let group = ((o - SMR_BASE) / 4) as usize;
                self.smr[group] = self.checked_smr(group, v32 & SMR_STORED);
                self.commit_all(backend);
            }
            o if (S2CR_BASE..S2CR_BASE + 4 * NUM_SMRG as u32).contains(&o) => {
                self.s2cr[((o - S2CR_BASE) / 4) as usize] = v32 & S2CR_STORED;
                self.commit_all(backend);
            }
            o => {
                if !is_known_global(o) {
                    self.stats.bad_accesses += 1;
                }
            }
        }
        Notify::default()
    }

    fn write_bank<B: NestedBackend + ?Sized>(
        &mut self,
        b: u8,
        o: u32,
        size: u8,
        value: u64,
        backend: &mut B,
    ) -> Notify {
        let n = usize::from(b);
        let v32 = value as u32;
        let locked = self.sacr & SACR_CACHE_LOCK != 0;
        if o == CB_SCTLR {
            self.banks[n].live.sctlr = v32 & SCTLR_STORED;
            self.commit(n, backend);
            return Notify::default();
        }
        if is_bank_tlb_op(o) {
            return self.bank_tlb_op(n, o, size, value, backend);
        }
        let bank = &mut self.banks[n];
        match o {
            CB_ACTLR => {
                if !locked {
                    bank.actlr = v32;
                }
            }
            CB_TCR2 => bank.live.tcr2 = v32,
            CB_TCR => bank.live.tcr = v32,
            CB_TTBR0 | 0x24 => bank.live.ttbr0 = merge64(bank.live.ttbr0, o, size, value, CB_TTBR0),
            CB_TTBR1 | 0x2c => bank.live.ttbr1 = merge64(bank.live.ttbr1, o, size, value, CB_TTBR1),
            CB_CONTEXTIDR => bank.contextidr = v32,
            CB_MAIR0 => bank.live.mair0 = v32,
            CB_MAIR1 => bank.live.mair1 = v32,
            CB_FSR => bank.fsr &= !(v32 & FSR_FAULTS),
            CB_FSRRESTORE => bank.fsr = v32 & FSR_FAULTS,
            CB_FAR | 0x64 => bank.far = merge64(bank.far, o, size, value, CB_FAR),
            CB_FSYNR0 => bank.fsynr0 = v32,
            CB_FSYNR1 => bank.fsynr1 = v32,
            // RESUME: nothing ever stalls. PAR, ATOS: not offered.
            o => {
                if !is_known_bank(o) {
                    self.stats.bad_accesses += 1;
                }
            }
        }
        Notify::default()
    }

    /// TLB maintenance and sync through bank `n`.
    fn bank_tlb_op<B: NestedBackend + ?Sized>(
        &mut self,
        n: usize,
        o: u32,
        size: u8,
        value: u64,
        backend: &mut B,
    ) -> Notify {
        match o {
            CB_TLBIASID | CB_TLBIALL | CB_TLBIVA | CB_TLBIVAL | CB_TLBIVAA | CB_TLBIVAAL => {
                self.stats.tlb_invalidations += 1;
                self.commit(n, backend);
                if self.bank_tlbi(n, o, size, value, backend).is_err() {
                    log::error!("vMMU-500: back end refused an invalidation for bank {n}");
                }
            }
            // Stage-2 invalidation through a stage-1 bank has nothing to invalidate.
            CB_TLBIIPAS2 | CB_TLBIIPAS2L => self.stats.tlb_invalidations += 1,
            CB_TLBSYNC => {
                self.stats.tlb_syncs += 1;
                self.commit(n, backend);
                let failed = self.sync(backend).is_err();
                self.banks[n].sync_active = failed;
            }
            _ => {}
        }
        Notify::default()
    }

    /// The host's TLB maintenance through bank `n`, on the real ASIDs of its host ASIDs.
    fn bank_tlbi<B: NestedBackend + ?Sized>(
        &mut self,
        n: usize,
        o: u32,
        size: u8,
        value: u64,
        backend: &mut B,
    ) -> Result<(), BackendError> {
        let asid_mask: u64 =
            if TCR2_F::AS.read(self.banks[n].committed.tcr2) != 0 { 0xffff } else { 0xff };
        let bank_asid = bank_asid(&self.banks[n].committed);
        match o {
            CB_TLBIASID => self.engine.invalidate_host_asid(backend, (value & asid_mask) as u16),
            // Every entry of the bank: its ASID (and any other a previous context of it used is
            // covered by TLBIASID of that one, or here by all of them): the host VMID's
            // stage-1 entries.
            CB_TLBIALL => self.engine.invalidate_all(backend, false),
            CB_TLBIVA | CB_TLBIVAL if size == 8 => {
                let asid = ((value >> 48) & asid_mask) as u16;
                let addr = (value & ((1 << 44) - 1)) << 12;
                self.engine.invalidate_host_va(backend, asid, addr, o == CB_TLBIVAL)
            }
            // A 32-bit TLBIVA carries no usable ASID for an AArch64 bank: the bank's whole ASID.
            CB_TLBIVA | CB_TLBIVAL => self.engine.invalidate_host_asid(backend, bank_asid),
            _ => {
                let addr = (value & ((1 << 44) - 1)) << 12;
                self.engine.invalidate_va_all_asids(backend, addr, o == CB_TLBIVAAL)
            }
        }
    }

    /// A host TLBSYNC / TLBGSYNC: completes everything issued so far on the back end.
    fn sync<B: NestedBackend + ?Sized>(&mut self, backend: &mut B) -> Result<(), BackendError> {
        let r = self.engine.sync(backend);
        if r.is_err() {
            self.stats.sync_retries += 1;
        }
        r
    }

    /// An SMR value as stored: one matching a peer's stream loses VALID (counted, logged).
    fn checked_smr(&mut self, group: usize, smr: u32) -> u32 {
        if SMR_F::VALID.read(smr) == 0 {
            return smr;
        }
        let named = smr_match(smr);
        let Some(peer) = self.config.peer_streams.iter().find(|p| p.overlaps(&named)) else {
            return smr;
        };
        self.stats.peer_smr_refusals += 1;
        log::warn!(
            "vMMU-500: SMR{group} ({smr:#010x}) would match stream {peer}, which is not the \
             host's; stored invalid ({} refused so far)",
            self.stats.peer_smr_refusals
        );
        smr & !mask32(SMR_F::VALID)
    }

    // --- Commit and derivation.

    fn commit<B: NestedBackend + ?Sized>(&mut self, n: usize, backend: &mut B) {
        self.banks[n].committed = self.banks[n].live;
        self.apply(backend);
    }

    fn commit_all<B: NestedBackend + ?Sized>(&mut self, backend: &mut B) {
        for bank in &mut self.banks {
            bank.committed = bank.live;
        }
        self.apply(backend);
    }

    /// Where host stream `stream` goes per the committed configuration. An SMR matching only
    /// some of its IDs makes it a conflict (the back end has one route per stream).
    fn derive_route(&self, stream: StreamMatch) -> Route {
        if (stream.id | stream.mask) & !SID_MASK != 0 {
            return Route::Unidentified;
        }
        let valid = |smr: &&u32| SMR_F::VALID.read(**smr) != 0;
        let smrs = || self.smr.iter().filter(valid).map(|smr| smr_match(*smr));
        if smrs().any(|smr| smr.overlaps(&stream) && !smr.covers(&stream)) {
            return Route::Conflict;
        }
        let mut matched = self
            .smr
            .iter()
            .enumerate()
            .filter(|(_, smr)| valid(smr) && smr_match(**smr).covers(&stream));
        let Some((group, _)) = matched.next() else {
            return Route::Unidentified;
        };
        if matched.next().is_some() {
            return Route::Conflict;
        }
        let s2cr = self.s2cr[group];
        match S2CR_F::TYPE.read(s2cr) {
            0 => {
                let n = S2CR_F::CBNDX.read(s2cr) as usize;
                let Some(bank) = self.banks.get(n) else {
                    return Route::InvalidContext;
                };
                if CBAR_F::TYPE.read(bank.committed.cbar) != 1 {
                    return Route::InvalidContext;
                }
                if SCTLR_F::M.read(bank.committed.sctlr) == 0 {
                    return Route::Bypass { bank: Some(n as u8) };
                }
                Route::Bank(n as u8)
            }
            1 => Route::Bypass { bank: None },
            _ => Route::Abort,
        }
    }

    /// Bank `n`'s committed context as a validated SMMUv3 CD, or why it is refused.
    fn bank_plan(&self, n: usize) -> Result<ContextPlan, &'static str> {
        let c = &self.banks[n].committed;
        if CBA2R_F::VA64.read(c.cba2r) == 0 {
            return Err("AArch32 context (CBA2R.VA64 = 0): only AArch64 tables are offered");
        }
        if TCR2_F::HA.read(c.tcr2) != 0 || TCR2_F::HD.read(c.tcr2) != 0 {
            return Err("hardware access/dirty updates (TCR2.HA/HD) are not offered");
        }
        let words = bank_cd(c);
        match cd::validate(&words, &self.adv) {
            Ok(Some(valid)) => Ok(ContextPlan::Valid(valid)),
            Ok(None) => Ok(ContextPlan::Invalid),
            Err(why) => {
                log::warn!("vMMU-500: context bank {n} refused: {why}");
                Err("configuration refused")
            }
        }
    }

    /// Makes every host stream follow the committed configuration, then completes it on the
    /// back end (a register write is in force once it completes).
    fn apply<B: NestedBackend + ?Sized>(&mut self, backend: &mut B) {
        let changes = self.engine.changes();
        let mut plans: [Option<ContextPlan>; NUM_CB] = [None; NUM_CB];
        for i in 0..self.config.host_streams.len() {
            let stream = self.config.host_streams[i].canonical();
            let sid = stream.id;
            let route = self.derive_route(stream);
            let result = match route {
                Route::Unidentified | Route::Conflict | Route::InvalidContext => {
                    self.engine.install_plain(backend, sid, RealSte::Invalid)
                }
                Route::Abort => self.engine.install_plain(backend, sid, RealSte::Abort),
                Route::Bypass { .. } => {
                    self.engine.install_plain(backend, sid, RealSte::Stage2Only)
                }
                Route::Bank(n) => {
                    let n = usize::from(n);
                    let plan = match plans[n] {
                        Some(p) => p,
                        None => {
                            let p = self.bank_plan(n).unwrap_or_else(|why| {
                                self.stats.cb_refusals += 1;
                                log::warn!("vMMU-500: context bank {n}: {why}; V = 0 shadow");
                                ContextPlan::Invalid
                            });
                            plans[n] = Some(p);
                            p
                        }
                    };
                    match self.engine.install_context(backend, sid, plan) {
                        Ok(Installed::Done) => Ok(()),
                        Ok(Installed::NoAsid) => {
                            self.stats.cb_refusals += 1;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if result.is_err() {
                log::error!("vMMU-500: back end failed while installing stream {sid:#x}");
            }
            self.routes.insert(sid, route);
        }
        if self.engine.changes() != changes && self.engine.sync(backend).is_err() {
            log::error!("vMMU-500: back-end sync failed after a configuration change");
        }
    }

    // --- Faults.

    /// A back-end fault of a host stream, reported as the architecture does (see the module
    /// documentation). Events of other streams are warden's own.
    pub fn forward_event(&mut self, event: &BackendEvent) -> Notify {
        let Some(route) = self.route(event.sid) else {
            return Notify::default();
        };
        let write = !event.read;
        match route {
            Route::Unidentified => self.global_fault(SGFSR_F::USF, event, write),
            Route::Conflict => self.global_fault(SGFSR_F::SMCF, event, write),
            Route::InvalidContext => self.global_fault(SGFSR_F::ICF, event, write),
            Route::Bank(n) => self.context_fault(usize::from(n), event, write),
            Route::Abort | Route::Bypass { .. } => {
                self.stats.unreported_faults += 1;
                log::info!("vMMU-500: {event} (stream in bypass or abort: not recorded)");
                Notify::default()
            }
        }
    }

    fn global_fault(
        &mut self,
        kind: Field<u32, SGFSR_F::Register>,
        event: &BackendEvent,
        write: bool,
    ) -> Notify {
        self.stats.global_faults += 1;
        if SCR0_F::GFRE.read(self.scr0) == 0 {
            return Notify::default();
        }
        if self.gfsr & SGFSR_FAULTS & !mask32(SGFSR_F::MULTI) != 0 {
            self.gfsr |= mask32(SGFSR_F::MULTI);
        } else {
            self.gfsr |= mask32(kind);
            self.gfar = event.input_addr;
            self.gfsynr0 = SGFSYNR0_F::WNR.val(u32::from(write)).value;
            self.gfsynr1 = event.sid & 0xffff;
            self.gfsynr2 = 0;
        }
        Notify { global_irq: SCR0_F::GFIE.read(self.scr0) != 0, context_irqs: 0 }
    }

    fn context_fault(&mut self, n: usize, event: &BackendEvent, write: bool) -> Notify {
        self.stats.context_faults += 1;
        let bank = &mut self.banks[n];
        let sctlr = bank.committed.sctlr;
        if SCTLR_F::CFRE.read(sctlr) == 0 {
            return Notify::default();
        }
        let walk = event.class == FaultClass::TranslationTable;
        let (kind, ptwf) = match event.kind {
            _ if event.stage2 => (FSR_F::EF, walk),
            EventKind::WalkExternalAbort => (FSR_F::EF, true),
            EventKind::Translation | EventKind::BadCd => (FSR_F::TF, false),
            EventKind::AddressSize => (FSR_F::ASF, false),
            EventKind::Access => (FSR_F::AFF, false),
            EventKind::Permission => (FSR_F::PF, false),
            EventKind::TlbConflict => (FSR_F::TLBMCF, false),
            _ => (FSR_F::EF, false),
        };
        if bank.fsr & FSR_FAULTS & !mask32(FSR_F::MULTI) != 0 {
            bank.fsr |= mask32(FSR_F::MULTI);
        } else {
            bank.fsr |= mask32(kind);
            bank.far = event.input_addr;
            bank.fsynr0 =
                (FSYNR0_F::WNR.val(u32::from(write)) + FSYNR0_F::PTWF.val(u32::from(ptwf))).value;
            bank.fsynr1 = 0;
            bank.cbfrsynra = event.sid & 0xffff;
        }
        let irq = SCTLR_F::CFIE.read(sctlr) != 0;
        Notify { global_irq: false, context_irqs: if irq { 1 << n } else { 0 } }
    }
}

/// The test-only G3 switch (cargo feature `test-switches`), as on the SMMUv3 face: a 32-bit
/// register in the IMPLEMENTATION DEFINED part of global space 0 (page 0, offset 0xE00, which
/// the MMU-500 leaves unused in the Non-secure view). Reading gives `KEY | G3-on`; writing
/// `KEY | 1` turns G3 on, `KEY | 0` off; anything else is ignored. Without the feature the
/// offset is RAZ/WI (counted as a bad access).
#[cfg(any(test, feature = "test-switches"))]
pub mod test_switch {
    pub use crate::smmu::virt::test_switch::{KEY, ON};
    pub const G3_OFFSET: u32 = 0xe00;
}

/// The SMMUv3 CD that says what bank registers `c` say (validated by `cd::validate` after).
fn bank_cd(c: &BankConfig) -> [u64; CD_WORDS] {
    let f = |field: Field<u32, TCR_F::Register>| u64::from(field.read(c.tcr));
    let asid = u64::from(bank_asid(c));
    let tbi = u64::from(TCR2_F::TBI0.read(c.tcr2)) | (u64::from(TCR2_F::TBI1.read(c.tcr2)) << 1);
    let big_endian = SCTLR_F::E.read(c.sctlr) != 0;
    let w0 = f(TCR_F::T0SZ)
        | (f(TCR_F::TG0) << 6)
        | (f(TCR_F::IRGN0) << 8)
        | (f(TCR_F::ORGN0) << 10)
        | (f(TCR_F::SH0) << 12)
        | (f(TCR_F::EPD0) << 14)
        | (u64::from(big_endian) << 15)
        | (f(TCR_F::T1SZ) << 16)
        | (f(TCR_F::TG1) << 22)
        | (f(TCR_F::IRGN1) << 24)
        | (f(TCR_F::ORGN1) << 26)
        | (f(TCR_F::SH1) << 28)
        | (f(TCR_F::EPD1) << 30)
        | (1 << 31) // V
        | (u64::from(TCR2_F::PASIZE.read(c.tcr2)) << 32)
        | (tbi << 38)
        | (1 << 41) // AA64
        | (1 << 45) // R: record faults
        | (1 << 46) // A: abort faulting transactions
        | (asid << 48);
    let baddr = |ttbr: u64| TTBR_F::BADDR.read(ttbr) << 4;
    [
        w0,
        baddr(c.ttbr0),
        baddr(c.ttbr1),
        u64::from(c.mair0) | (u64::from(c.mair1) << 32),
        0,
        0,
        0,
        0,
    ]
}

/// The stream IDs an SMR value names.
fn smr_match(smr: u32) -> StreamMatch {
    StreamMatch { id: SMR_F::ID.read(smr) & SID_MASK, mask: SMR_F::MASK.read(smr) & SID_MASK }
}

/// The ASID of bank config `c`: TTBR1's when TCR.A1, else TTBR0's; 8 bits unless TCR2.AS.
fn bank_asid(c: &BankConfig) -> u16 {
    let ttbr = if TCR_F::A1.read(c.tcr) != 0 { c.ttbr1 } else { c.ttbr0 };
    let asid = TTBR_F::ASID.read(ttbr) as u16;
    if TCR2_F::AS.read(c.tcr2) != 0 { asid } else { asid & 0xff }
}

/// TLB maintenance and sync registers of a bank.
fn is_bank_tlb_op(o: u32) -> bool {
    matches!(
        o,
        CB_TLBIASID
            | CB_TLBIALL
            | CB_TLBIVA
            | CB_TLBIVAL
            | CB_TLBIVAA
            | CB_TLBIVAAL
            | CB_TLBIIPAS2
            | CB_TLBIIPAS2L
            | CB_TLBSYNC
    )
}

/// 64-bit registers (a 64-bit access is allowed only there).
fn is_64bit(reg: Reg) -> bool {
    matches!(
        reg,
        Reg::Global(SGFAR)
            | Reg::Bank(
                _,
                CB_TTBR0
                    | CB_TTBR1
                    | CB_PAR
                    | CB_FAR
                    | CB_TLBIVA
                    | CB_TLBIVAA
                    | CB_TLBIVAL
                    | CB_TLBIVAAL
                    | CB_TLBIIPAS2
                    | CB_TLBIIPAS2L
            )
    )
}

/// Global space 0 offsets the map has (including the write-only and RAZ/WI ones).
fn is_known_global(o: u32) -> bool {
    matches!(o, SCR0..=TLBIVAH | NSCR0)
        || (SMR_BASE..SMR_BASE + 4 * NUM_SMRG as u32).contains(&o)
        || (S2CR_BASE..S2CR_BASE + 4 * NUM_SMRG as u32).contains(&o)
}

/// Context bank offsets the map has.
fn is_known_bank(o: u32) -> bool {
    matches!(o, CB_SCTLR..=0x07c | CB_TLBIVA..=0x63c | CB_TLBSYNC | CB_TLBSTATUS)
}

/// (register array base, bank index) of a global space 1 offset.
fn gr1_index(o: u32) -> Option<(u32, usize)> {
    [CBAR_BASE, CBFRSYNRA_BASE, CBA2R_BASE].into_iter().find_map(|base| {
        let n = o.checked_sub(base)? / 4;
        (o >= base && (n as usize) < NUM_CB).then_some((base, n as usize))
    })
}

/// A 64-bit register after a 32- or 64-bit write at `offset` (`reg`: its low word's offset).
fn merge64(old: u64, offset: u32, size: u8, value: u64, reg: u32) -> u64 {
    match (size, offset - reg) {
        (8, _) => value,
        (_, 0) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
        _ => (old & 0xffff_ffff) | ((value & 0xffff_ffff) << 32),
    }
}
