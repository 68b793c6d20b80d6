//! The one interface between a host-facing SMMU *face* and the SMMU warden really drives (the
//! *back end*), and the per-stream shadowing engine both faces share.
//!
//! Faces: the virtual SMMUv3 ([`super::virt`]) and the virtual MMU-500 ([`super::v2`]). Back
//! ends: the real SMMUv3 ([`super::virt::real::SmmuBackend`]) on QEMU, and the real MMU-500
//! of Snapdragon boards ([`super::mmu500::Mmu500Backend`]). A face never talks to hardware: it
//! decides, per host stream, one [`RealSte`] (abort, invalid, warden's stage 2 alone, or the
//! host's stage 1 as a shadow context descriptor nested over warden's stage 2) and the
//! invalidations and syncs that go with it, and hands them to a [`NestedBackend`]:
//!
//! - **nested install**: [`NestedBackend::install_ste`] and [`NestedBackend::write_cd`];
//! - **invalidate**: [`NestedBackend::submit`] of a [`RealCommand`] (configuration and TLB
//!   invalidations, always tagged with the host's VMID and warden's real ASIDs);
//! - **sync**: [`NestedBackend::sync`], which completes everything submitted before it;
//! - **events**: the back end reports faults of host streams as [`BackendEvent`]s (decoded,
//!   with the raw record kept: the SMMUv3 face forwards the record as it is, the MMU-500 face
//!   turns the decoded fields into FSR/FAR/FSYNR of a context bank or a global fault).
//!
//! [`NestedStreams`] is the engine both faces use on top of it: per host stream, the real STE,
//! the double-buffered shadow CD slot, the real ASID (from [`RealAsids`]) and the G3 protocol
//! (an old context is released only once a completed sync has made the switch away from it
//! visible; a retiring real ASID is reused only after a TLBI + completed sync, which warden
//! inserts itself if the host forgot). Keeping this in one place means the G3 rules are
//! written, and tested, once.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub use super::event::Event as BackendEvent;
pub use super::virt::cmdq::RealCommand;
pub use super::virt::ste::RealSte;

use super::virt::CdArena;
use super::virt::asid::{AcquireError, AsidStats, ContextKey, Flush, RealAsids};
use super::virt::cd::{CD_WORDS, ValidCd};

/// The back end failed a request (it logs the details); the face retries or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendError;

/// What a face asks of the SMMU warden drives.
pub trait NestedBackend {
    /// Makes `sid`'s real STE this one (written safely: break-before-make, or one store when
    /// only a nested STE's CD pointer changes; then the configuration invalidation for it);
    /// complete at the next successful [`NestedBackend::sync`].
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), BackendError>;
    /// Writes a shadow CD into the arena slot at `ipa` (see [`CdArena`]), visible to the real
    /// SMMU before anything written after it.
    fn write_cd(&mut self, ipa: u64, words: &[u64; CD_WORDS]) -> Result<(), BackendError>;
    /// Queues one invalidation.
    fn submit(&mut self, cmd: RealCommand) -> Result<(), BackendError>;
    /// Completes everything submitted so far, waiting (bounded) for it.
    fn sync(&mut self) -> Result<(), BackendError>;
}

/// A host stream's stage-1 context as a face derived it (an SMMUv3 CD, or an MMU-500 context
/// bank turned into one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextPlan {
    /// Validated: the shadow gets a real ASID.
    Valid(ValidCd),
    /// A V = 0 shadow (every transaction of the stream is C_BAD_CD on the back end).
    Invalid,
    /// The host's CD at `host_ptr` could not be read: the real STE points at the arena's
    /// unmapped page, so the back end reports the CD fetch as a stage-2 fault.
    Unreadable { host_ptr: u64 },
}

/// What a host stream's real STE points its stage 1 at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCd {
    /// No stage 1.
    None,
    /// The shadow CD in `slot` (0 or 1 of the stream's pair); `context`: what it makes live
    /// (`None`: a V = 0 shadow).
    Shadow { slot: u8, words: [u64; CD_WORDS], context: Option<ContextKey> },
    /// The host's CD at `host_ptr` could not be read.
    Unreadable { host_ptr: u64 },
}

/// One host stream on the back end.
#[derive(Clone, Copy, Debug)]
struct Stream {
    /// Its position among the host's streams: shadow slots `2 index` and `2 index + 1`.
    index: u32,
    real: RealSte,
    cd: StreamCd,
    /// The real STE or CD changed since the last completed sync: the back end may still use
    /// the previous configuration (and the idle slot).
    unsynced: bool,
    /// A back-end failure left the installation incomplete: redo it even if nothing changed.
    stale: bool,
}

impl Stream {
    fn context(&self) -> Option<ContextKey> {
        match self.cd {
            StreamCd::Shadow { context, .. } => context,
            _ => None,
        }
    }
}

/// Counters of the engine (merged into each face's statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Back-end syncs issued (skipped when nothing was issued since the last one).
    pub real_syncs: u64,
    pub skipped_syncs: u64,
    /// Contexts refused because every real ASID is live.
    pub asid_exhausted: u64,
}

/// Whether [`NestedStreams::install_context`] gave the stream its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The shadow is in place (or was already).
    Done,
    /// Every real ASID is live: the stream got a V = 0 shadow; the face reports it.
    NoAsid,
}

/// The per-stream shadowing engine (see the module documentation).
pub struct NestedStreams {
    /// Log prefix of the face ("vSMMU", "vMMU-500").
    face: &'static str,
    host_vmid: u16,
    arena: CdArena,
    streams: BTreeMap<u32, Stream>,
    asids: RealAsids,
    /// Commands were issued since the last completed sync.
    dirty: bool,
    /// Stream installations made so far (a face can tell whether a pass changed anything).
    changes: u64,
    stats: EngineStats,
}

impl NestedStreams {
    /// Every stream of `sids` starts with the real STE `initial` (what warden installed at boot).
    pub fn new(
        face: &'static str,
        host_vmid: u16,
        sids: &[u32],
        initial: RealSte,
        arena: CdArena,
        asid16: bool,
        g3_enabled: bool,
    ) -> Self {
        let mut asids = RealAsids::new(asid16);
        asids.set_enabled(g3_enabled);
        let streams = sids
            .iter()
            .enumerate()
            .map(|(index, &sid)| {
                let stream = Stream {
                    index: index as u32,
                    real: initial,
                    cd: StreamCd::None,
                    unsynced: false,
                    stale: false,
                };
                (sid, stream)
            })
            .collect();
        Self {
            face,
            host_vmid,
            arena,
            streams,
            asids,
            dirty: false,
            changes: 0,
            stats: EngineStats::default(),
        }
    }

    pub fn set_g3_enabled(&mut self, enabled: bool) {
        self.asids.set_enabled(enabled);
    }

    pub fn g3_enabled(&self) -> bool {
        self.asids.enabled()
    }

    pub fn asids(&self) -> &RealAsids {
        &self.asids
    }

    pub fn asid_stats(&self) -> AsidStats {
        self.asids.stats()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn host_vmid(&self) -> u16 {
        self.host_vmid
    }

    pub fn arena(&self) -> CdArena {
        self.arena
    }

    /// The host's streams, in order.
    pub fn sids(&self) -> Vec<u32> {
        self.streams.keys().copied().collect()
    }

    pub fn contains(&self, sid: u32) -> bool {
        self.streams.contains_key(&sid)
    }

    /// The real STE installed for a host stream.
    pub fn installed(&self, sid: u32) -> Option<RealSte> {
        self.streams.get(&sid).map(|s| s.real)
    }

    pub fn stream_cd(&self, sid: u32) -> Option<StreamCd> {
        self.streams.get(&sid).map(|s| s.cd)
    }

    /// A back-end failure left the stream's installation incomplete.
    pub fn is_stale(&self, sid: u32) -> bool {
        self.streams.get(&sid).is_some_and(|s| s.stale)
    }

    /// The context a host stream's shadow makes live.
    pub fn context(&self, sid: u32) -> Option<ContextKey> {
        self.streams.get(&sid).and_then(Stream::context)
    }

    /// The real ASID a host stream's shadow CD carries.
    pub fn real_asid(&self, sid: u32) -> Option<u16> {
        self.context(sid).and_then(|k| self.asids.real_of(&k))
    }

    /// A real STE without stage 1. The stream's old context (if any) is released.
    pub fn install_plain<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        sid: u32,
        ste: RealSte,
    ) -> Result<(), BackendError> {
        let Some(stream) = self.streams.get(&sid).copied() else {
            return Ok(());
        };
        if stream.real == ste && !stream.stale {
            return Ok(());
        }
        self.dirty = true;
        if let Err(e) = backend.install_ste(sid, ste) {
            self.mark_stale(sid);
            return Err(e);
        }
        self.switched(sid, ste, StreamCd::None);
        Ok(())
    }

    /// Whether installing `plan` on `sid` would change nothing.
    pub fn unchanged(&self, sid: u32, plan: &ContextPlan) -> bool {
        let Some(stream) = self.streams.get(&sid) else {
            return true;
        };
        let nested = matches!(stream.real, RealSte::Nested { .. }) && !stream.stale;
        nested
            && match (plan, stream.cd) {
                (ContextPlan::Valid(v), StreamCd::Shadow { words, context: Some(k), .. }) => {
                    v.key == k && self.asids.real_of(&k).map(|r| v.shadow(r)) == Some(words)
                }
                (ContextPlan::Invalid, StreamCd::Shadow { context: None, .. }) => true,
                (ContextPlan::Unreadable { host_ptr }, StreamCd::Unreadable { host_ptr: p }) => {
                    *host_ptr == p
                }
                _ => false,
            }
    }

    /// A nested real STE whose stage 1 is `plan`: the shadow CD into the idle slot, the STE's
    /// CD pointer switched to it, then the CD configuration invalidation. The old context is
    /// released (it retires once a sync completes the switch). With no free real ASID the
    /// stream gets a V = 0 shadow and [`Installed::NoAsid`].
    pub fn install_context<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        sid: u32,
        plan: ContextPlan,
    ) -> Result<Installed, BackendError> {
        let Some(stream) = self.streams.get(&sid).copied() else {
            return Ok(Installed::Done);
        };
        if self.unchanged(sid, &plan) {
            return Ok(Installed::Done);
        }
        // The idle slot may still be in use until the last switch away from it is synced.
        if stream.unsynced {
            self.sync(backend)?;
        }
        self.dirty = true;
        let slot = match stream.cd {
            StreamCd::Shadow { slot, .. } => slot ^ 1,
            _ => 0,
        };
        let arena = self.arena;
        let Some(slot_ipa) = arena.slot_ipa(stream.index, slot) else {
            log::error!("{}: no shadow CD slot for stream {sid:#x}", self.face);
            return Err(BackendError);
        };
        let mut outcome = Installed::Done;
        let (cd_ipa, cd, acquired) = match plan {
            ContextPlan::Unreadable { host_ptr } => {
                (arena.unmapped_ipa, StreamCd::Unreadable { host_ptr }, None)
            }
            ContextPlan::Valid(v) => match self.acquire(backend, sid, v.key)? {
                Some(r) => {
                    let words = v.shadow(r);
                    (slot_ipa, StreamCd::Shadow { slot, words, context: Some(v.key) }, Some(v.key))
                }
                None => {
                    outcome = Installed::NoAsid;
                    let words = [0; CD_WORDS];
                    (slot_ipa, StreamCd::Shadow { slot, words, context: None }, None)
                }
            },
            ContextPlan::Invalid => {
                let words = [0; CD_WORDS];
                (slot_ipa, StreamCd::Shadow { slot, words, context: None }, None)
            }
        };
        // (Set again: a forced flush in `acquire` completed a sync.)
        self.dirty = true;
        let written = match cd {
            StreamCd::Shadow { words, .. } => backend.write_cd(cd_ipa, &words),
            _ => Ok(()),
        };
        let ste = RealSte::Nested { cd_ipa };
        if let Err(e) = written.and_then(|()| backend.install_ste(sid, ste)) {
            if let Some(key) = acquired {
                self.asids.release(key);
            }
            self.mark_stale(sid);
            return Err(e);
        }
        self.switched(sid, ste, cd);
        // CDs are cached by stream: the old one must go with the STE that pointed at it.
        if let Err(e) = backend.submit(RealCommand::CfgiCdAll { sid }) {
            self.mark_stale(sid);
            return Err(e);
        }
        Ok(outcome)
    }

    fn mark_stale(&mut self, sid: u32) {
        if let Some(st) = self.streams.get_mut(&sid) {
            st.stale = true;
        }
    }

    /// The stream's real STE is now `ste`: its old context is released.
    fn switched(&mut self, sid: u32, ste: RealSte, cd: StreamCd) {
        let Some(st) = self.streams.get_mut(&sid) else { return };
        self.changes += 1;
        let old = st.context();
        *st = Stream { real: ste, cd, unsynced: true, stale: false, ..*st };
        if let Some(key) = old {
            self.asids.release(key);
        }
    }

    /// A real ASID for `key` (see [`RealAsids`]): warden's own flushes go to the back end
    /// here. `None`: every real ASID is live.
    fn acquire<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        sid: u32,
        key: ContextKey,
    ) -> Result<Option<u16>, BackendError> {
        let vmid = self.host_vmid;
        let mut synced = false;
        let got = self.asids.acquire(key, |flush| {
            match flush {
                Flush::Asids(list) => {
                    for asid in list {
                        backend.submit(RealCommand::TlbiNhAsid { vmid, asid })?;
                    }
                }
                Flush::All => backend.submit(RealCommand::TlbiNhAll { vmid })?,
            }
            backend.sync()?;
            synced = true;
            Ok(())
        });
        if synced {
            self.stats.real_syncs += 1;
            self.synced();
        }
        let face = self.face;
        match got {
            Ok(done) => {
                let forced = self.asids.stats().forced_flushes;
                for old in &done.flushed {
                    log::info!(
                        "{face} G3: stream {sid:#x} reuses retiring ASID {} (host) before its \
                         TLBI + sync (real ASID {old} still retiring); warden invalidated it \
                         first ({forced} so far)",
                        key.host_asid
                    );
                }
                if done.unprotected {
                    log::warn!(
                        "{face}: G3 off: stream {sid:#x} reuses retiring real ASID {} of host \
                         ASID {} without invalidating it",
                        done.real,
                        key.host_asid
                    );
                }
                if done.exhaustion_flush {
                    log::info!("{face}: no free real ASID: warden invalidated every retiring one");
                }
                Ok(Some(done.real))
            }
            Err(AcquireError::Flush(e)) => Err(e),
            Err(AcquireError::Exhausted) => {
                log::error!(
                    "{face}: stream {sid:#x}: every real ASID is in use by a live context; \
                     context refused"
                );
                self.stats.asid_exhausted += 1;
                Ok(None)
            }
        }
    }

    /// Queues an invalidation (the next [`Self::sync`] completes it).
    pub fn submit<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        cmd: RealCommand,
    ) -> Result<(), BackendError> {
        self.dirty = true;
        backend.submit(cmd)
    }

    /// The host invalidated everything its ASID `host_asid` names: every live or retiring
    /// real ASID of it (TLBI_NH_ASID each).
    pub fn invalidate_host_asid<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        host_asid: u16,
    ) -> Result<(), BackendError> {
        let vmid = self.host_vmid;
        self.asids.associated(host_asid).into_iter().try_for_each(|r| {
            self.submit(backend, RealCommand::TlbiNhAsid { vmid, asid: r })?;
            self.asids.invalidated(r);
            Ok(())
        })
    }

    /// The host invalidated one VA of its ASID `host_asid`: only live contexts can use a VA
    /// (a retiring real ASID is invalidated whole before its next use anyway).
    pub fn invalidate_host_va<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        host_asid: u16,
        addr: u64,
        leaf: bool,
    ) -> Result<(), BackendError> {
        let vmid = self.host_vmid;
        // `submit`, with the iteration borrowing only `asids`.
        for r in self.asids.live_of(host_asid) {
            self.dirty = true;
            backend.submit(RealCommand::TlbiNhVa { vmid, asid: r, addr, leaf })?;
        }
        Ok(())
    }

    /// One VA of every ASID of the host.
    pub fn invalidate_va_all_asids<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        addr: u64,
        leaf: bool,
    ) -> Result<(), BackendError> {
        let vmid = self.host_vmid;
        self.submit(backend, RealCommand::TlbiNhVaa { vmid, addr, leaf })
    }

    /// Every stage-1 entry of the host (TLBI_NH_ALL of its VMID), or with `stage2` every entry
    /// of its VMID (TLBI_S12_VMALL).
    pub fn invalidate_all<B: NestedBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        stage2: bool,
    ) -> Result<(), BackendError> {
        let vmid = self.host_vmid;
        let cmd = if stage2 {
            RealCommand::TlbiS12Vmall { vmid }
        } else {
            RealCommand::TlbiNhAll { vmid }
        };
        self.submit(backend, cmd)?;
        self.asids.invalidated_all();
        Ok(())
    }

    /// A back-end sync, skipped when nothing was issued since the last completed one.
    pub fn sync<B: NestedBackend + ?Sized>(&mut self, backend: &mut B) -> Result<(), BackendError> {
        if !self.dirty {
            self.stats.skipped_syncs += 1;
            return Ok(());
        }
        backend.sync()?;
        self.stats.real_syncs += 1;
        self.synced();
        self.asids.sync_completed();
        Ok(())
    }

    /// Stream installations made so far (real STE or shadow CD changes).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether commands were issued since the last completed sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A sync completed: every configuration change so far is in force.
    fn synced(&mut self) {
        self.dirty = false;
        for stream in self.streams.values_mut() {
            stream.unsynced = false;
        }
    }
}
