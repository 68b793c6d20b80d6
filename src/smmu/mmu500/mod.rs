//! warden's back end on a real MMU-500 (Snapdragon's apps SMMU; Arm IHI 0062, SMMU
//! architecture version 2): the [`NestedBackend`] both host-facing faces (the virtual MMU-500
//! and the virtual SMMUv3) sit on, in place of the SMMUv3 driver on QEMU.
//!
//! **At boot** ([`Mmu500Backend::init`]) warden reads what the firmware left: every valid SMR
//! and its S2CR, and every context bank that is enabled or that such a stream translates
//! through. A firmware stream that matches none of the host's stream IDs belongs to a peer
//! (a DSP, the modem, TrustZone's own masters): its SMR, S2CR and bank stay exactly as found
//! and warden never writes them or hands them to the host; a host stream that would match
//! some of a peer's translated stream (S2CR translation to a firmware bank) is refused
//! ([`Mmu500Error::PeerStream`]). A firmware stream (bypass or fault) whose IDs are all the
//! host's (the bootloader's display splash, left in bypass) is taken over: its
//! S2CR goes to fault, its SMR is invalidated, and the host's streams get warden's own
//! entries. A firmware SMR matching host and other IDs at once, or a firmware bank tagged with
//! the host's VMID, is refused ([`Mmu500Error`]): either would let the host share a peer's
//! translation. warden then programs one **stage-2 context bank** over warden's host stage 2
//! (the same tables the CPU uses, through the SMMU's view of them: VTCR's walk fields in the
//! bank's TCR, the view's root in TTBR0, the host VMID in CBAR), invalidates the host VMID
//! (TLBIVMID + completed TLBGSYNC) before any stream can use it, gives every host stream an
//! SMR (its ID and mask as the DT's `iommus` gives them, merged and checked by
//! [`host_streams`]) and an S2CR for the initial [`RealSte`], and only then clears sCR0.CLIENTPD with
//! USFCFG (unmatched streams fault) and SMCFCFG (conflicting matches fault).
//!
//! **A host stream's [`RealSte`]** is its S2CR, one 32-bit store (so switching a stream between
//! contexts is hitless, as the SMMUv3's one-word CD switch):
//! - `Invalid`, `Abort`: S2CR type fault (the MMU-500 records nothing per stream for it; the
//!   faces count these themselves);
//! - `Stage2Only`: translation through the stage-2 bank (never S2CR bypass: warden's stage 2
//!   is always below the host's devices);
//! - `Nested { cd_ipa }`: the shadow CD [`NestedBackend::write_cd`] stored for that slot,
//!   turned into a **nested context bank** (CBAR type "stage 1 with stage 2", CBAR.CBNDX = the
//!   stage-2 bank): TCR, TCR2 (IPS, 16-bit ASIDs, TBI), TTBR0/1 with warden's real ASID, MAIR,
//!   SCTLR (M, TRE, AFE, CFRE, AFFD/WXN/UWXN from the CD). Streams whose shadow CDs are equal
//!   share one bank; a V = 0 shadow or the arena's unmapped page (the host's CD was
//!   unreadable) is S2CR fault. No free bank: the install fails ([`BackendError`], logged),
//!   the engine keeps the stream stale and retries.
//!
//! **TLB maintenance** ([`NestedBackend::submit`], always the host's VMID): TLBI_NH_ASID →
//! TLBIASID, TLBI_NH_VA → TLBIVA(L), TLBI_NH_VAA → TLBIVAA(L), each written to a nested bank
//! of the host (with SCTLR.ASIDPNE = 0 the ASID namespace is the VMID's, so any of its banks
//! names every context with that ASID); with no nested bank, TLBIVMID (a superset).
//! TLBI_NH_ALL and TLBI_S12_VMALL → TLBIVMID. CFGI_CD is nothing: a bank's registers *are* its
//! configuration and are written before the S2CR that points at them. [`NestedBackend::sync`]
//! issues TLBSYNC on every bank that received maintenance and TLBGSYNC after global maintenance,
//! and polls TLBSTATUS.SACTIVE / sTLBGSTATUS.GSACTIVE at most `poll_limit` times each: a sync
//! still active then is an error, logged with the bank, never an endless wait.
//!
//! **G3 for banks**: a nested bank whose last stream left is free, but remembers its ASID;
//! before it is given another context warden writes TLBIASID of that ASID to it and waits for
//! its TLBSYNC, so no walk-cache or TLB entry of the old context can serve the new one even
//! if the engine's own ASID retirement were bypassed. The host VMID is invalidated at boot
//! before first use.
//!
//! **Qualcomm specifics** (what Linux's `arm-smmu-qcom.c` handles): warden never writes S2CR
//! type bypass, so the firmware quirk that turns it into fault changes nothing; the boot
//! survey is what `qcom_smmu_cfg_probe` does for the splash streams, with the opposite
//! outcome for the host's (warden's stage 2, not bypass); sACR.CACHE_LOCK is cleared on r2+
//! and the banks warden programs get ACTLR.CPRE cleared (errata 841119/826419, as
//! `arm_mmu500_reset`); the Non-secure view's sIDR0.NUMSMRG/sIDR1.NUMCB already exclude what
//! Secure software keeps, and nothing beyond them is touched. No SCM call is needed.
//!
//! Checked only against `model::Mmu500Model`, a register model written from the public
//! documents, never against silicon (docs/smmu-500.md, *Back end*).

pub mod io;
#[cfg(any(test, feature = "fakes"))]
pub mod model;
pub mod regs;
#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use super::backend::{BackendError, BackendEvent, NestedBackend, RealCommand, RealSte};
use super::ste::S2Config;
use super::virt::CdArena;
use super::virt::cd::{CD_BYTES, CD_WORDS};
use io::Mmu500Io;
use regs::*;

/// One host stream as a DT `iommus` specifier gives it (`#iommu-cells = <2>`: stream ID and
/// SMR mask, as Linux's arm-smmu reads them; `<1>`: the ID alone, mask 0). It matches every
/// stream ID equal to `id` outside the bits of `mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamMatch {
    pub id: u32,
    pub mask: u32,
}

impl StreamMatch {
    /// Exactly one stream ID.
    pub const fn exact(id: u32) -> Self {
        Self { id, mask: 0 }
    }

    /// The same match with the ID's masked bits cleared (what the faces and the engine key the
    /// stream by: `0x596/0x11` and `0x586/0x11` are one stream set).
    pub const fn canonical(self) -> Self {
        Self { id: self.id & !self.mask, mask: self.mask }
    }

    /// Whether some stream ID matches both.
    pub const fn overlaps(&self, other: &Self) -> bool {
        (self.id ^ other.id) & !(self.mask | other.mask) == 0
    }

    /// Whether every stream ID `inner` matches, `self` matches too.
    pub const fn covers(&self, inner: &Self) -> bool {
        inner.mask & !self.mask == 0 && (self.id ^ inner.id) & !self.mask == 0
    }

    /// Whether `id` matches.
    pub const fn matches(&self, id: u32) -> bool {
        (self.id ^ id) & !self.mask == 0
    }

    /// The SMR that matches exactly this (valid).
    fn smr(&self) -> u32 {
        mask32(SMR_F::VALID) | self.id | (self.mask << SMR_F::MASK.shift)
    }
}

impl fmt::Display for StreamMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}/{:#x}", self.id, self.mask)
    }
}

/// The host's streams from the DT's specifiers, as warden programs them: each canonical
/// ([`StreamMatch::canonical`]), duplicates and entries another one covers dropped (Linux's
/// `arm_smmu_find_sme` reuses the covering entry the same way), sorted. Two entries that share
/// some stream IDs but neither covers the other are refused: no SMR pair can match them
/// without a conflict (Linux refuses them too, with -EINVAL).
pub fn host_streams(entries: &[StreamMatch]) -> Result<Vec<StreamMatch>, Mmu500Error> {
    let mut out: Vec<StreamMatch> = entries.iter().map(|e| e.canonical()).collect();
    out.sort_unstable();
    out.dedup();
    let all = out.clone();
    out.retain(|e| !all.iter().any(|o| o != e && o.covers(e)));
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[i + 1..].iter().find(|b| a.overlaps(b)) {
            return Err(Mmu500Error::OverlappingStreams { first: *a, second: *b });
        }
    }
    Ok(out)
}

/// Whether the stream IDs `f` matches are all matched by `hosts` (splitting `f` on its mask
/// bits where no single host entry covers it; bounded by the mask's width).
fn covered_by(f: StreamMatch, hosts: &[StreamMatch]) -> bool {
    if hosts.iter().any(|h| h.covers(&f)) {
        return true;
    }
    if f.mask == 0 || !hosts.iter().any(|h| h.overlaps(&f)) {
        return false;
    }
    let bit = f.mask & f.mask.wrapping_neg();
    let half = StreamMatch { id: f.id & !bit, mask: f.mask & !bit };
    covered_by(half, hosts) && covered_by(StreamMatch { id: half.id | bit, ..half }, hosts)
}

/// What the back end is given.
#[derive(Clone, Debug)]
pub struct Mmu500Config {
    /// The streams of the host's devices behind this SMMU (validated by [`host_streams`] in
    /// [`Mmu500Backend::init`]; the faces and the engine name each by its canonical ID).
    pub host_streams: Vec<StreamMatch>,
    /// warden's host stage 2 as the SMMU walks it (the SMMU view's root, VTCR, host VMID).
    pub s2: S2Config,
    /// Where the faces' shadow CDs are addressed (their slots are the keys of `write_cd`).
    pub arena: CdArena,
    /// What every host stream gets at boot.
    pub initial: RealSte,
    /// Status reads per TLBSYNC/TLBGSYNC before giving up.
    pub poll_limit: u32,
}

/// Why warden will not drive this MMU-500 (it then stays as the firmware left it, and the
/// host gets none of the devices behind it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmu500Error {
    /// A feature warden needs is absent (stream matching, stage 2, nesting, 4 KiB granule).
    Missing(&'static str),
    /// The host VMID does not fit CBAR.VMID (warden does not use 16-bit VMIDs here).
    VmidTooWide(u16),
    /// A host stream's ID or mask is wider than sIDR0.NUMSIDB.
    SidTooWide(u32),
    /// Two host streams share stream IDs and neither covers the other.
    OverlappingStreams { first: StreamMatch, second: StreamMatch },
    /// Firmware's SMR `index` translates a peer's streams (its S2CR points at a firmware
    /// context bank) and a host stream would match some of them.
    PeerStream { index: usize, smr: u32 },
    /// warden's stage 2 is not one the bank can walk (4 KiB granule only).
    Stage2(&'static str),
    /// Firmware's SMR `index` matches host stream IDs and others too.
    SharedStream { index: usize, smr: u32 },
    /// Firmware's bank `bank` is tagged with the host VMID.
    VmidInUse { bank: u8 },
    /// No free context bank for warden's stage 2.
    NoBank,
    /// No free SMR for host stream `sid`.
    NoSmr { sid: u32 },
    /// The boot-time TLBGSYNC did not complete within `poll_limit` reads.
    SyncTimeout,
}

impl fmt::Display for Mmu500Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(what) => write!(f, "the MMU-500 lacks {what}"),
            Self::VmidTooWide(v) => write!(f, "host VMID {v} does not fit an 8-bit CBAR.VMID"),
            Self::SidTooWide(s) => write!(f, "host stream {s:#x} is wider than sIDR0.NUMSIDB"),
            Self::OverlappingStreams { first, second } => write!(
                f,
                "host streams {first} and {second} share stream IDs and neither covers the other"
            ),
            Self::PeerStream { index, smr } => write!(
                f,
                "firmware's SMR{index} ({smr:#010x}) translates a peer's streams: refusing a \
                 host stream matching them"
            ),
            Self::Stage2(why) => write!(f, "warden's stage 2 cannot be walked by a bank: {why}"),
            Self::SharedStream { index, smr } => write!(
                f,
                "firmware's SMR{index} ({smr:#010x}) matches host streams and others: refusing \
                 to share it"
            ),
            Self::VmidInUse { bank } => {
                write!(f, "firmware's context bank {bank} uses the host's VMID")
            }
            Self::NoBank => write!(f, "no free context bank for warden's stage 2"),
            Self::NoSmr { sid } => write!(f, "no free stream match register for stream {sid:#x}"),
            Self::SyncTimeout => write!(f, "TLBGSYNC did not complete"),
        }
    }
}

/// A firmware stream as warden found it at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareStream {
    pub index: usize,
    pub smr: u32,
    pub s2cr: u32,
    /// It matched only host streams, so warden took it over.
    pub taken_over: bool,
}

impl FirmwareStream {
    /// The stream IDs its SMR matches.
    pub fn matched(&self) -> StreamMatch {
        StreamMatch { id: field(self.smr, SMR_F::ID), mask: field(self.smr, SMR_F::MASK) }
    }
}

/// A nested context bank's registers, from a shadow CD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S1Bank {
    pub tcr: u32,
    pub tcr2: u32,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub mair0: u32,
    pub mair1: u32,
    pub sctlr: u32,
    pub asid: u16,
}

// Shadow CD fields (IHI 0070, 5.4), as `virt::cd` builds them.
const CD_V: u64 = 1 << 31;
const CD_AA64: u64 = 1 << 41;
const CD_EPD0: u64 = 1 << 14;
const CD_EPD1: u64 = 1 << 30;
const CD_AFFD: u64 = 1 << 35;
const CD_WXN: u64 = 1 << 36;
const CD_UWXN: u64 = 1 << 37;
const CD_R: u64 = 1 << 45;
const CD_TTB: u64 = 0x000f_ffff_ffff_fff0;

impl S1Bank {
    /// The bank for a shadow CD; `None` for a V = 0 (or non-AArch64) one.
    pub fn from_cd(words: &[u64; CD_WORDS]) -> Option<Self> {
        let w0 = words[0];
        if w0 & CD_V == 0 || w0 & CD_AA64 == 0 {
            return None;
        }
        let field = |shift: u32, bits: u32| ((w0 >> shift) & ((1 << bits) - 1)) as u32;
        let walk = |base: u32| {
            // TxSZ, TGx and IRx/ORx/SHx of one walk, in TCR's layout for walk 0.
            field(base, 6)
                | (field(base + 8, 6) << TCR_F::IRGN0.shift)
                | (field(base + 6, 2) << TCR_F::TG0.shift)
        };
        let tcr = walk(0)
            | (walk(16) << TCR_F::T1SZ.shift)
            | if w0 & CD_EPD0 != 0 { mask32(TCR_F::EPD0) } else { 0 }
            | if w0 & CD_EPD1 != 0 { mask32(TCR_F::EPD1) } else { 0 };
        let tbi = field(38, 2);
        let tcr2 = field(32, 3)
            | mask32(TCR2_F::AS)
            | (tbi << TCR2_F::TBI0.shift)
            | (TCR2_SEP_UPSTREAM << TCR2_F::SEP.shift);
        let flag = |cd: u64, bit: u32| if w0 & cd != 0 { bit } else { 0 };
        let sctlr = mask32(SCTLR_F::M)
            | mask32(SCTLR_F::TRE)
            | mask32(SCTLR_F::AFE)
            | flag(CD_R, mask32(SCTLR_F::CFRE))
            | flag(CD_AFFD, mask32(SCTLR_F::AFFD))
            | flag(CD_WXN, mask32(SCTLR_F::WXN))
            | flag(CD_UWXN, mask32(SCTLR_F::UWXN));
        let asid = (w0 >> 48) as u16;
        let tag = u64::from(asid) << TTBR_F::ASID.shift;
        Some(Self {
            tcr,
            tcr2,
            ttbr0: (words[1] & CD_TTB) | tag,
            ttbr1: (words[2] & CD_TTB) | tag,
            mair0: words[3] as u32,
            mair1: (words[3] >> 32) as u32,
            sctlr,
            asid,
        })
    }
}

/// What a context bank is to warden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bank {
    /// The firmware's: never written.
    Firmware,
    /// Unused; `last_asid`: the host ASID it last held, to invalidate before reuse.
    Free { last_asid: Option<u16> },
    /// warden's stage 2 for the host.
    Stage2,
    /// A host context nested over the stage-2 bank, used by `users` streams.
    Nested { config: S1Bank, users: u32 },
}

/// Where a host stream's S2CR points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Fault,
    Stage2,
    Nested(u8),
}

/// Counters (for the log and the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mmu500Stats {
    pub s2cr_writes: u64,
    pub banks_programmed: u64,
    /// Bank reuses that needed TLBIASID + TLBSYNC first.
    pub bank_reuse_invalidations: u64,
    pub bank_syncs: u64,
    pub global_syncs: u64,
    /// CFGI commands (nothing to do on this SMMU).
    pub config_invalidations: u64,
}

/// The MMU-500 back end (see the module documentation).
pub struct Mmu500Backend<I: Mmu500Io> {
    io: I,
    layout: Layout,
    host_vmid: u16,
    s2_bank: u8,
    /// Banks `0..nums2cb` cannot hold a stage-1 context.
    nums2cb: u8,
    banks: Vec<Bank>,
    /// Host stream → (its SMR group, its S2CR's target).
    streams: BTreeMap<u32, (usize, Target)>,
    firmware: Vec<FirmwareStream>,
    arena: CdArena,
    cds: BTreeMap<u64, [u64; CD_WORDS]>,
    pending_banks: BTreeSet<u8>,
    pending_global: bool,
    poll_limit: u32,
    stats: Mmu500Stats,
}

/// FSR's fault bits (TF, AFF, PF, EF, TLBMCF, TLBLKF, ASF, UUT).
const FSR_FAULTS: u32 = 0x1fe;

/// A bank's recorded fault as an SMMUv3 event record (IHI 0070, 7.3), so that both faces can
/// forward it: the SMMUv3 face as it is, the MMU-500 face from its decoded fields.
fn fault_event(fsr: u32, far: u64, fsynr0: u32, sid: u32, stage2: bool) -> BackendEvent {
    let walk = fsynr0 & mask32(FSYNR0_F::PTWF) != 0;
    let has = |f| fsr & mask32(f) != 0;
    let id: u64 = if has(FSR_F::TF) {
        0x10
    } else if has(FSR_F::ASF) {
        0x11
    } else if has(FSR_F::AFF) {
        0x12
    } else if has(FSR_F::PF) {
        0x13
    } else if has(FSR_F::TLBMCF) || has(FSR_F::TLBLKF) {
        0x20
    } else if has(FSR_F::UUT) {
        0x01
    } else {
        // EF: an external abort on a table walk.
        0x0b
    };
    let write = fsynr0 & mask32(FSYNR0_F::WNR) != 0;
    let class: u64 = if walk { 1 } else { 2 };
    let word1 = (u64::from(!write) << 35) | (u64::from(stage2) << 39) | (class << 40);
    let ipa = if stage2 { far & 0x000f_ffff_ffff_f000 } else { 0 };
    BackendEvent::decode([id | (u64::from(sid) << 32), word1, far, ipa])
}

fn field(
    value: u32,
    f: tock_registers::fields::Field<u32, impl tock_registers::RegisterLongName>,
) -> u32 {
    (value >> f.shift) & f.mask
}

impl<I: Mmu500Io> Mmu500Backend<I> {
    /// Takes the MMU-500 over (see the module documentation for the order of the steps).
    pub fn init(io: I, config: Mmu500Config) -> Result<Self, Mmu500Error> {
        let sidr0 = io.read32(SIDR0);
        let sidr1 = io.read32(SIDR1);
        let sidr2 = io.read32(SIDR2);
        let sidr7 = io.read32(SIDR7);
        for (bit, what) in [
            (SIDR0_F::SMS, "stream matching (sIDR0.SMS)"),
            (SIDR0_F::S2TS, "stage 2 (sIDR0.S2TS)"),
            (SIDR0_F::NTS, "nested translation (sIDR0.NTS)"),
        ] {
            if sidr0 & mask32(bit) == 0 {
                return Err(Mmu500Error::Missing(what));
            }
        }
        if sidr2 & mask32(SIDR2_F::PTFS_4K) == 0 {
            return Err(Mmu500Error::Missing("the AArch64 4 KiB granule (sIDR2.PTFSv8_4kB)"));
        }
        let layout = Layout::from_sidr1(sidr1);
        let numsmrg = (field(sidr0, SIDR0_F::NUMSMRG) as usize).min(MAX_SMRG);
        let numsidb = field(sidr0, SIDR0_F::NUMSIDB);
        let numcb = (field(sidr1, SIDR1_F::NUMCB) as usize).min(MAX_CB);
        let nums2cb = field(sidr1, SIDR1_F::NUMS2CB).min(numcb as u32) as u8;
        let host_vmid = config.s2.vmid;
        if host_vmid > CBAR_F::VMID.mask as u16 {
            return Err(Mmu500Error::VmidTooWide(host_vmid));
        }
        let host_sids = host_streams(&config.host_streams)?;
        if let Some(s) = host_sids.iter().find(|s| (s.id | s.mask) >> numsidb != 0) {
            return Err(Mmu500Error::SidTooWide(s.id));
        }
        if (config.s2.vtcr >> S2TCR_F::TG0.shift) & u64::from(S2TCR_F::TG0.mask) != 0 {
            return Err(Mmu500Error::Stage2("not the 4 KiB granule"));
        }
        let sid_mask = (1u32 << numsidb) - 1;

        // What the firmware left.
        let mut banks = Vec::with_capacity(numcb);
        for b in 0..numcb as u8 {
            let in_use = io.read32(layout.cb(b, CB_SCTLR)) & mask32(SCTLR_F::M) != 0;
            banks.push(if in_use { Bank::Firmware } else { Bank::Free { last_asid: None } });
        }
        let mut firmware = Vec::new();
        let mut free_smrs = Vec::new();
        for index in 0..numsmrg {
            let smr = io.read32(layout.gr0(SMR_BASE + 4 * index as u32));
            if smr & mask32(SMR_F::VALID) == 0 {
                free_smrs.push(index);
                continue;
            }
            let s2cr = io.read32(layout.gr0(S2CR_BASE + 4 * index as u32));
            if field(s2cr, S2CR_F::TYPE) == S2CR_TYPE_TRANSLATION
                && let Some(bank) = banks.get_mut(field(s2cr, S2CR_F::CBNDX) as usize)
            {
                *bank = Bank::Firmware;
            }
            let found =
                StreamMatch { id: smr & sid_mask, mask: field(smr, SMR_F::MASK) & sid_mask };
            let taken_over = host_sids.iter().any(|h| h.overlaps(&found));
            if taken_over && field(s2cr, S2CR_F::TYPE) == S2CR_TYPE_TRANSLATION {
                // A peer's translation: never the host's, whatever the DT claims.
                return Err(Mmu500Error::PeerStream { index, smr });
            }
            if taken_over && !covered_by(found, &host_sids) {
                return Err(Mmu500Error::SharedStream { index, smr });
            }
            firmware.push(FirmwareStream { index, smr, s2cr, taken_over });
        }
        for (b, bank) in banks.iter().enumerate() {
            if *bank != Bank::Firmware {
                continue;
            }
            let cbar = io.read32(layout.gr1(CBAR_BASE + 4 * b as u32));
            let nested = field(cbar, CBAR_F::TYPE) == CBAR_TYPE_NESTED;
            if !nested && field(cbar, CBAR_F::VMID) as u16 == host_vmid {
                return Err(Mmu500Error::VmidInUse { bank: b as u8 });
            }
        }
        let pick = |banks: &[Bank], from: usize| {
            (from..banks.len()).find(|&b| matches!(banks[b], Bank::Free { .. }))
        };
        // A stage-2-only bank if there are any, so the stage-1-capable ones stay for contexts.
        let s2_bank = pick(&banks[..usize::from(nums2cb)], 0)
            .or_else(|| pick(&banks, usize::from(nums2cb)))
            .ok_or(Mmu500Error::NoBank)? as u8;
        banks[usize::from(s2_bank)] = Bank::Stage2;

        let mut me = Self {
            io,
            layout,
            host_vmid,
            s2_bank,
            nums2cb,
            banks,
            streams: BTreeMap::new(),
            firmware,
            arena: config.arena,
            cds: BTreeMap::new(),
            pending_banks: BTreeSet::new(),
            pending_global: false,
            poll_limit: config.poll_limit,
            stats: Mmu500Stats::default(),
        };
        if field(sidr7, SIDR7_F::MAJOR) >= 2 {
            // r2+: ACTLRs are read-only until CACHE_LOCK is cleared (`arm_mmu500_reset`).
            let sacr = me.io.read32(SACR);
            me.io.write32(SACR, sacr & !SACR_CACHE_LOCK);
        }
        me.program_stage2_bank(&config.s2);
        // Nothing the host VMID tagged before warden (a previous hypervisor's) may survive.
        me.io.write32(me.layout.gr0(TLBIVMID), u32::from(host_vmid));
        me.pending_global = true;
        me.complete_syncs().map_err(|()| Mmu500Error::SyncTimeout)?;

        // Firmware streams that are the host's: fault first, then the match goes.
        let taken: Vec<usize> =
            me.firmware.iter().filter(|f| f.taken_over).map(|f| f.index).collect();
        for index in taken {
            me.io.write32(
                me.layout.gr0(S2CR_BASE + 4 * index as u32),
                S2CR_TYPE_FAULT << S2CR_F::TYPE.shift,
            );
            me.io.write32(me.layout.gr0(SMR_BASE + 4 * index as u32), 0);
            free_smrs.push(index);
        }
        free_smrs.sort_unstable();
        free_smrs.reverse();
        let initial = me.target_of(config.initial)?;
        for stream in &host_sids {
            let index = free_smrs.pop().ok_or(Mmu500Error::NoSmr { sid: stream.id })?;
            // The S2CR before the SMR that makes it match.
            me.write_s2cr(index, initial);
            me.io.write32(me.layout.gr0(SMR_BASE + 4 * index as u32), stream.smr());
            me.streams.insert(stream.id, (index, initial));
        }
        let sgfsr = me.io.read32(SGFSR);
        me.io.write32(SGFSR, sgfsr);
        let scr0 = me.io.read32(SCR0);
        let scr0 = (scr0 & !mask32(SCR0_F::CLIENTPD))
            | mask32(SCR0_F::USFCFG)
            | mask32(SCR0_F::SMCFCFG)
            | mask32(SCR0_F::GFRE);
        me.io.write32(SCR0, scr0);
        for f in me.firmware.iter() {
            if f.taken_over {
                log::info!(
                    "MMU-500: SMR{} ({:#010x}, S2CR {:#010x}) left by firmware for host streams: \
                     taken over",
                    f.index,
                    f.smr,
                    f.s2cr
                );
            } else {
                log::info!(
                    "MMU-500: SMR{} ({:#010x}, S2CR {:#010x}) is firmware's: kept as found",
                    f.index,
                    f.smr,
                    f.s2cr
                );
            }
        }
        log::info!(
            "MMU-500: {} host streams on stage-2 bank {} (VMID {}), {numsmrg} SMRs, {numcb} banks",
            me.streams.len(),
            s2_bank,
            host_vmid
        );
        Ok(me)
    }

    pub fn io(&self) -> &I {
        &self.io
    }

    pub fn stats(&self) -> Mmu500Stats {
        self.stats
    }

    /// The firmware streams found at boot.
    pub fn firmware_streams(&self) -> &[FirmwareStream] {
        &self.firmware
    }

    /// The host's virtual MMU-500 on this back end, as `boot::mmu500::take` makes it: the
    /// streams `config` gave [`Self::init`] (merged as they were programmed), the firmware's
    /// streams warden kept as the ones a host SMR must not name, the boot's real STE, the
    /// shadow-CD keys, IAS = OAS = the largest size within warden's stage-2 input (the host's
    /// stage-1 output is its input), the back end's 16-bit ASIDs, G3 on.
    pub fn face_config(
        &self,
        config: &Mmu500Config,
    ) -> Result<crate::smmu::v2::Mmu500Config, Mmu500Error> {
        let ipa_bits = 64 - (config.s2.vtcr & 0x3f) as u32;
        let oas_field = (0..=5u32)
            .rev()
            .find(|&f| {
                crate::mm::tcr::address_size_bits(u64::from(f)).is_some_and(|b| b <= ipa_bits)
            })
            .unwrap_or(0);
        Ok(crate::smmu::v2::Mmu500Config {
            host_vmid: self.host_vmid,
            host_streams: host_streams(&config.host_streams)?,
            peer_streams: self
                .firmware
                .iter()
                .filter(|f| !f.taken_over)
                .map(FirmwareStream::matched)
                .collect(),
            initial: config.initial,
            arena: config.arena,
            oas_field,
            asid16: true,
            g3_enabled: true,
        })
    }

    pub fn stage2_bank(&self) -> u8 {
        self.s2_bank
    }

    /// The bank a host stream translates through (`None`: fault, or not a host stream).
    pub fn bank_of(&self, sid: u32) -> Option<u8> {
        match self.streams.get(&sid)?.1 {
            Target::Fault => None,
            Target::Stage2 => Some(self.s2_bank),
            Target::Nested(b) => Some(b),
        }
    }

    /// Faults the host's banks recorded since the last call (a bank records them with
    /// SCTLR.CFRE, which warden sets), as the events the faces forward
    /// (`forward_event`); each bank's FSR is cleared once read. A fault of the stage-2 bank is
    /// a stage-2 fault whose address is the IPA (the MMU-500 records no VA for it). The
    /// firmware's banks are never read. Global faults (sGFSR: a stream with no or several
    /// matching SMRs, which no host stream is) are logged and cleared, not returned.
    pub fn poll_faults(&mut self) -> Vec<BackendEvent> {
        let l = self.layout;
        let mut events = Vec::new();
        for b in 0..self.banks.len() as u8 {
            let stage2 = match self.banks[usize::from(b)] {
                Bank::Stage2 => true,
                Bank::Nested { .. } => false,
                Bank::Firmware | Bank::Free { .. } => continue,
            };
            let fsr = self.io.read32(l.cb(b, CB_FSR));
            if fsr & FSR_FAULTS == 0 {
                continue;
            }
            let far = self.io.read64(l.cb(b, CB_FAR));
            let fsynr0 = self.io.read32(l.cb(b, CB_FSYNR0));
            let sid = self.io.read32(l.gr1(CBFRSYNRA_BASE + 4 * u32::from(b))) & 0xffff;
            self.io.write32(l.cb(b, CB_FSR), fsr);
            if fsr & mask32(FSR_F::MULTI) != 0 {
                log::warn!("MMU-500: context bank {b}: further faults were not recorded (MULTI)");
            }
            events.push(fault_event(fsr, far, fsynr0, sid, stage2));
        }
        let sgfsr = self.io.read32(SGFSR);
        if sgfsr != 0 {
            log::warn!("MMU-500: global fault sGFSR {sgfsr:#x} (not a host stream's)");
            self.io.write32(SGFSR, sgfsr);
        }
        events
    }

    /// The host stage 2 changed (a handoff took pages away): every entry of the host VMID,
    /// completed before this returns.
    pub fn invalidate_host_stage2(&mut self) -> Result<(), BackendError> {
        self.io.write32(self.layout.gr0(TLBIVMID), u32::from(self.host_vmid));
        self.pending_global = true;
        self.sync()
    }

    fn program_stage2_bank(&mut self, s2: &S2Config) {
        let b = self.s2_bank;
        let cbar = (CBAR_TYPE_S2 << CBAR_F::TYPE.shift) | u32::from(self.host_vmid);
        let tcr = (s2.vtcr & 0x7_ffff) as u32 | mask32(S2TCR_F::RES1);
        let sctlr = mask32(SCTLR_F::M)
            | mask32(SCTLR_F::TRE)
            | mask32(SCTLR_F::AFE)
            | mask32(SCTLR_F::CFRE);
        self.program_bank(
            b,
            cbar,
            |io, l| {
                io.write32(l.cb(b, CB_TCR), tcr);
                io.write64(l.cb(b, CB_TTBR0), s2.root_pa);
            },
            sctlr,
        );
    }

    /// A bank's registers, disabled first and enabled last; the ACTLR prefetcher off.
    fn program_bank(&mut self, b: u8, cbar: u32, regs: impl FnOnce(&I, &Layout), sctlr: u32) {
        let l = self.layout;
        self.io.write32(l.cb(b, CB_SCTLR), 0);
        self.io.write32(l.gr1(CBA2R_BASE + 4 * u32::from(b)), mask32(CBA2R_F::VA64));
        self.io.write32(l.gr1(CBAR_BASE + 4 * u32::from(b)), cbar);
        regs(&self.io, &l);
        let actlr = self.io.read32(l.cb(b, CB_ACTLR));
        self.io.write32(l.cb(b, CB_ACTLR), actlr & !mask32(ACTLR_F::CPRE));
        self.io.write32(l.cb(b, CB_FSR), u32::MAX);
        self.io.write32(l.cb(b, CB_SCTLR), sctlr);
        self.stats.banks_programmed += 1;
    }

    fn write_s2cr(&mut self, index: usize, target: Target) {
        let value = match target {
            Target::Fault => S2CR_TYPE_FAULT << S2CR_F::TYPE.shift,
            Target::Stage2 => u32::from(self.s2_bank),
            Target::Nested(b) => u32::from(b),
        };
        self.io.write32(self.layout.gr0(S2CR_BASE + 4 * index as u32), value);
        self.stats.s2cr_writes += 1;
    }

    /// What `ste` makes a stream's S2CR point at (a nested one gets its bank here).
    fn target_of(&mut self, ste: RealSte) -> Result<Target, Mmu500Error> {
        Ok(match ste {
            RealSte::Invalid | RealSte::Abort => Target::Fault,
            RealSte::Stage2Only => Target::Stage2,
            RealSte::Nested { cd_ipa } => match self.cds.get(&cd_ipa).and_then(S1Bank::from_cd) {
                None => Target::Fault,
                Some(config) => Target::Nested(self.bank_for(config).ok_or(Mmu500Error::NoBank)?),
            },
        })
    }

    /// A nested bank holding `config`: one already does (shared), or a free one, invalidated
    /// first if it held another context.
    fn bank_for(&mut self, config: S1Bank) -> Option<u8> {
        if let Some(b) = self
            .banks
            .iter()
            .position(|bank| matches!(bank, Bank::Nested { config: c, .. } if *c == config))
        {
            if let Bank::Nested { users, .. } = &mut self.banks[b] {
                *users += 1;
            }
            return Some(b as u8);
        }
        let b = (usize::from(self.nums2cb)..self.banks.len())
            .find(|&b| matches!(self.banks[b], Bank::Free { .. }))? as u8;
        if let Bank::Free { last_asid: Some(asid) } = self.banks[usize::from(b)] {
            // G3: the bank's old context goes, completed, before the bank holds another.
            self.io.write32(self.layout.cb(b, CB_TLBIASID), u32::from(asid));
            self.pending_banks.insert(b);
            self.stats.bank_reuse_invalidations += 1;
            if self.complete_syncs().is_err() {
                return None;
            }
        }
        let cbar = (CBAR_TYPE_NESTED << CBAR_NESTED_F::TYPE.shift)
            | (u32::from(self.s2_bank) << CBAR_NESTED_F::CBNDX.shift);
        self.program_bank(
            b,
            cbar,
            |io, l| {
                io.write32(l.cb(b, CB_TCR2), config.tcr2);
                io.write32(l.cb(b, CB_TCR), config.tcr);
                io.write64(l.cb(b, CB_TTBR0), config.ttbr0);
                io.write64(l.cb(b, CB_TTBR1), config.ttbr1);
                io.write32(l.cb(b, CB_MAIR0), config.mair0);
                io.write32(l.cb(b, CB_MAIR1), config.mair1);
            },
            config.sctlr,
        );
        self.banks[usize::from(b)] = Bank::Nested { config, users: 1 };
        Some(b)
    }

    fn release(&mut self, target: Target) {
        let Target::Nested(b) = target else { return };
        if let Some(Bank::Nested { config, users }) = self.banks.get_mut(usize::from(b)) {
            *users -= 1;
            if *users == 0 {
                let asid = config.asid;
                // Nothing points at it any more: off, and remembered for the next user.
                self.io.write32(self.layout.cb(b, CB_SCTLR), 0);
                self.banks[usize::from(b)] = Bank::Free { last_asid: Some(asid) };
            }
        }
    }

    /// A host nested bank to address per-ASID maintenance to.
    fn maintenance_bank(&self) -> Option<u8> {
        self.banks.iter().position(|b| matches!(b, Bank::Nested { .. })).map(|b| b as u8)
    }

    /// Polls `status` until its bit 0 clears, at most `poll_limit` reads.
    fn poll(&self, status: u32) -> bool {
        (0..self.poll_limit.max(1)).any(|_| self.io.read32(status) & 1 == 0)
    }

    /// TLBSYNC on every bank with maintenance outstanding, TLBGSYNC after global maintenance.
    fn complete_syncs(&mut self) -> Result<(), ()> {
        let banks = core::mem::take(&mut self.pending_banks);
        for b in banks {
            self.io.write32(self.layout.cb(b, CB_TLBSYNC), 0);
            self.stats.bank_syncs += 1;
            if !self.poll(self.layout.cb(b, CB_TLBSTATUS)) {
                log::error!(
                    "MMU-500: TLBSYNC of context bank {b} still active after {} polls",
                    self.poll_limit
                );
                self.pending_banks.insert(b);
                return Err(());
            }
        }
        if self.pending_global {
            self.io.write32(self.layout.gr0(STLBGSYNC), 0);
            self.stats.global_syncs += 1;
            if !self.poll(self.layout.gr0(STLBGSTATUS)) {
                log::error!("MMU-500: TLBGSYNC still active after {} polls", self.poll_limit);
                return Err(());
            }
            self.pending_global = false;
        }
        Ok(())
    }

    fn check_vmid(&self, vmid: u16) -> Result<(), BackendError> {
        if vmid == self.host_vmid {
            Ok(())
        } else {
            log::error!("MMU-500: maintenance for VMID {vmid}, not the host's");
            Err(BackendError)
        }
    }

    fn global_vmid_invalidation(&mut self) {
        self.io.write32(self.layout.gr0(TLBIVMID), u32::from(self.host_vmid));
        self.pending_global = true;
    }
}

/// The handoff sequences' SMMU step (G1: after the host stage-2 unmap and the CPU's TLBI,
/// before the clean): every host stream translates through warden's stage 2 (the stage-2 bank,
/// or nested over it), so the host VMID's entries go: TLBIVMID + TLBGSYNC, completed. The
/// MMU-500 has a per-IPA stage-2 invalidation (TLBIIPAS2 on the bank) but a handoff removes
/// whole carveouts, and TLBIVMID is one write for any size.
impl<I: Mmu500Io> crate::handoff::DmaStage2 for Mmu500Backend<I> {
    fn invalidate_ipa_range(
        &mut self,
        vmid: u16,
        range: crate::mm::MemRange,
    ) -> Result<(), crate::smmu::SmmuError> {
        if vmid != self.host_vmid {
            // Only the host's streams are warden's here; a peer's VMID is not on this SMMU.
            log::error!("MMU-500: stage-2 invalidation of {range} for VMID {vmid}, not the host's");
            return Err(crate::smmu::SmmuError::Mmu500Sync);
        }
        self.invalidate_host_stage2().map_err(|BackendError| crate::smmu::SmmuError::Mmu500Sync)
    }
}

impl Mmu500Config {
    /// What the boot gives the back end on a board: the host's streams from the DT (the
    /// `iommus` of every kept device naming the apps MMU-500), warden's host stage 2 as the
    /// CPU walks it, every stream on it alone (`Stage2Only`, until the host's face configures
    /// it: a next stage that never drives the SMMU, a bootloader's DMA, keeps working with
    /// IPA = PA), and the shadow-CD keys of the face's engine ([`cd_keys`]).
    pub fn for_board(p: &crate::dt::PlatformInfo, s2: S2Config) -> Self {
        Self {
            host_streams: p.mmu500_streams.to_vec(),
            s2,
            arena: cd_keys(p.mmu500_streams.len()),
            initial: RealSte::Stage2Only,
            poll_limit: crate::smmu::DEFAULT_POLL_LIMIT,
        }
    }
}

/// The shadow-CD "arena" of a face's engine on this back end, for `streams` host streams: the
/// slots are only the keys [`NestedBackend::write_cd`] stores shadows under (a bank's
/// registers are its configuration; no CD memory exists and none is mapped), and
/// `unmapped_ipa` is no slot (a stream pointed at it gets S2CR fault).
pub const fn cd_keys(streams: usize) -> CdArena {
    CdArena { ipa: 0, slots: CdArena::slots_for(streams), unmapped_ipa: !0xfff }
}

impl<I: Mmu500Io> NestedBackend for Mmu500Backend<I> {
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), BackendError> {
        let Some(&(index, old)) = self.streams.get(&sid) else {
            log::error!("MMU-500: stream {sid:#x} is not the host's");
            return Err(BackendError);
        };
        let target = self.target_of(ste).map_err(|e| {
            log::error!("MMU-500: stream {sid:#x}: {e}");
            BackendError
        })?;
        if target != old {
            self.write_s2cr(index, target);
        }
        self.streams.insert(sid, (index, target));
        // After the S2CR: a stream that stayed on its bank took a second reference first.
        self.release(old);
        Ok(())
    }

    fn write_cd(&mut self, ipa: u64, words: &[u64; CD_WORDS]) -> Result<(), BackendError> {
        let offset = ipa.wrapping_sub(self.arena.ipa);
        if ipa < self.arena.ipa
            || !offset.is_multiple_of(CD_BYTES)
            || offset / CD_BYTES >= u64::from(self.arena.slots)
        {
            log::error!("MMU-500: shadow CD at {ipa:#x} is not an arena slot");
            return Err(BackendError);
        }
        self.cds.insert(ipa, *words);
        Ok(())
    }

    fn submit(&mut self, cmd: RealCommand) -> Result<(), BackendError> {
        let l = self.layout;
        match cmd {
            RealCommand::CfgiCd { .. } | RealCommand::CfgiCdAll { .. } => {
                self.stats.config_invalidations += 1;
            }
            RealCommand::TlbiNhAll { vmid } | RealCommand::TlbiS12Vmall { vmid } => {
                self.check_vmid(vmid)?;
                self.global_vmid_invalidation();
            }
            RealCommand::TlbiNhAsid { vmid, asid } => {
                self.check_vmid(vmid)?;
                match self.maintenance_bank() {
                    Some(b) => {
                        self.io.write32(l.cb(b, CB_TLBIASID), u32::from(asid));
                        self.pending_banks.insert(b);
                    }
                    None => self.global_vmid_invalidation(),
                }
            }
            RealCommand::TlbiNhVa { vmid, asid, addr, leaf } => {
                self.check_vmid(vmid)?;
                match self.maintenance_bank() {
                    Some(b) => {
                        let reg = if leaf { CB_TLBIVAL } else { CB_TLBIVA };
                        self.io.write64(l.cb(b, reg), tlbiva_value(addr, asid));
                        self.pending_banks.insert(b);
                    }
                    None => self.global_vmid_invalidation(),
                }
            }
            RealCommand::TlbiNhVaa { vmid, addr, leaf } => {
                self.check_vmid(vmid)?;
                match self.maintenance_bank() {
                    Some(b) => {
                        let reg = if leaf { CB_TLBIVAAL } else { CB_TLBIVAA };
                        self.io.write64(l.cb(b, reg), tlbiva_value(addr, 0));
                        self.pending_banks.insert(b);
                    }
                    None => self.global_vmid_invalidation(),
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        self.complete_syncs().map_err(|()| BackendError)
    }
}
