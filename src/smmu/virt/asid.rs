//! G3: real ASIDs allocated by warden, and ASID (and VMID) retirement serialized against TLB
//! invalidation.
//!
//! **Real ASIDs.** The host's CDs never reach the real SMMU: warden installs validated copies
//! (shadow CDs, see [`super::cd`]) carrying ASIDs it allocates itself ([`RealAsids`]). A
//! *host context* is what a host CD names: its ASID and the translation tables it walks
//! ([`ContextKey`]). Streams whose CDs name the same context share one real ASID (reference
//! counted); two contexts never share one, whatever ASIDs the host gives them, so two host
//! streams with the same host ASID and different tables cannot see each other's TLB entries.
//! A new context gets the real ASID equal to its host ASID when that one is free (so traces
//! and logs of a well-behaved host show its own numbers), else the highest free one (hosts
//! allocate from the bottom).
//!
//! **Retirement.** A real ASID whose last user's configuration change has been completed by a
//! CMD_SYNC is *retiring*; it is *free* again only when a TLB invalidation covering it was
//! issued **after** that (so no DMA can refill an entry after it) **and** a CMD_SYNC issued
//! after the invalidation has completed. The host's TLBI_NH_ASID(N) invalidates every live or
//! retiring real ASID of host ASID N; TLBI_NH_ALL / TLBI_NSNH_ALL all of them. When the host
//! makes a new context with host ASID N while an old context's real ASID of N is retiring
//! (the FastRPC seed's race: ASID reused before its invalidation completed), warden invalidates
//! it and syncs first (a *forced flush*), which frees it. With the test-only G3 switch off,
//! warden instead reuses that retiring real ASID as it is, reproducing the stale read G3
//! exists to prevent. With every real ASID live or retiring, or [`RETIRING_LIMIT`] of them
//! retiring, warden invalidates them all (TLBI_NH_ALL + CMD_SYNC) to free the retiring ones.
//!
//! [`RetireTracker`] is the same retirement rule for identifiers warden hands out by number
//! (VMIDs), with no allocation.
//!
//! Both are pure bookkeeping: callers record what they issued (`invalidated`,
//! `sync_completed`), or run warden's own flushes through a callback that issues them.
//!
//! Concurrency: every entry point is called with the virtual SMMU's lock held (one trap at a
//! time), so retirement is linearizable; the exhaustive 2-CPU model in the tests checks the
//! guarantee over every interleaving of two CPUs' operations.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Where a retiring identifier stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdState {
    /// Used by this many contexts.
    Live(u32),
    /// No user; `invalidated`: a covering TLBI was issued since retirement (a completed sync
    /// frees it).
    Retiring { invalidated: bool },
}

/// Counters, exposed by hypercall and log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetireStats {
    /// Identifiers that left service.
    pub retired: u64,
    /// Retiring identifiers freed by a TLBI + completed sync.
    pub freed: u64,
    /// Reuses of a retiring identifier that needed warden's own TLBI + sync first.
    pub forced_flushes: u64,
    /// Reuses while retiring that were let through because G3 is switched off (tests only).
    pub unprotected_reuses: u64,
}

/// Retirement state of one identifier space (the host's ASIDs, or warden's VMIDs).
#[derive(Clone, Debug)]
pub struct RetireTracker {
    ids: BTreeMap<u16, IdState>,
    enabled: bool,
    stats: RetireStats,
}

impl Default for RetireTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl RetireTracker {
    pub fn new() -> Self {
        Self { ids: BTreeMap::new(), enabled: true, stats: RetireStats::default() }
    }

    /// Test-only switch: with G3 off, reuse of a retiring identifier is let through (and
    /// counted as unprotected), which the stale-ASID test uses to show what G3 prevents.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn state(&self, id: u16) -> Option<IdState> {
        self.ids.get(&id).copied()
    }

    pub fn stats(&self) -> RetireStats {
        self.stats
    }

    /// Whether making `id` live now requires warden to invalidate it and sync first.
    pub fn needs_flush(&self, id: u16) -> bool {
        self.enabled && matches!(self.ids.get(&id), Some(IdState::Retiring { .. }))
    }

    /// Records warden's own flush of `id` (its TLBI and completed sync were just issued).
    pub fn note_forced_flush(&mut self) {
        self.stats.forced_flushes += 1;
    }

    /// One more context uses `id`. Callers flush first when [`Self::needs_flush`] says so.
    pub fn acquire(&mut self, id: u16) {
        match self.ids.get_mut(&id) {
            Some(IdState::Live(n)) => *n = n.saturating_add(1),
            Some(state @ IdState::Retiring { .. }) => {
                // Reached only with G3 off, or if the caller skipped the flush.
                self.stats.unprotected_reuses += 1;
                *state = IdState::Live(1);
            }
            None => {
                self.ids.insert(id, IdState::Live(1));
            }
        }
    }

    /// One context stopped using `id`; the last one makes it retiring.
    pub fn release(&mut self, id: u16) {
        if let Some(IdState::Live(n)) = self.ids.get_mut(&id) {
            if *n > 1 {
                *n -= 1;
            } else {
                self.ids.insert(id, IdState::Retiring { invalidated: false });
                self.stats.retired += 1;
            }
        }
    }

    /// A TLBI covering `id` was issued (to the real SMMU).
    pub fn invalidated(&mut self, id: u16) {
        if let Some(IdState::Retiring { invalidated }) = self.ids.get_mut(&id) {
            *invalidated = true;
        }
    }

    /// A TLBI covering every identifier was issued.
    pub fn invalidated_all(&mut self) {
        for state in self.ids.values_mut() {
            if let IdState::Retiring { invalidated } = state {
                *invalidated = true;
            }
        }
    }

    /// A CMD_SYNC issued after every TLBI recorded so far has completed.
    pub fn sync_completed(&mut self) {
        let before = self.ids.len();
        self.ids.retain(|_, s| !matches!(s, IdState::Retiring { invalidated: true }));
        self.stats.freed += (before - self.ids.len()) as u64;
    }

    /// Identifiers still retiring (for logs and tests).
    pub fn retiring(&self) -> impl Iterator<Item = u16> + '_ {
        self.ids.iter().filter_map(|(id, s)| matches!(s, IdState::Retiring { .. }).then_some(*id))
    }
}

/// A host context: the ASID a host CD gives and the tables it walks (`None`: that half of
/// the address space is disabled by EPDx, so its TTB is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextKey {
    pub host_asid: u16,
    pub ttb0: Option<u64>,
    pub ttb1: Option<u64>,
}

/// Retiring real ASIDs warden keeps at most: a host that changes contexts without ever
/// invalidating their ASIDs makes warden invalidate them all (TLBI_NH_ALL + CMD_SYNC) once this
/// many are retiring, so its bookkeeping (heap) stays bounded whatever the host does.
pub const RETIRING_LIMIT: usize = 256;

/// What a real ASID is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealState {
    /// Named by `users` stream references to `key` (releases not yet completed included).
    Live { key: ContextKey, users: u32 },
    /// Out of service since a completed sync; `invalidated`: a covering TLBI was issued since
    /// (the next completed sync frees it).
    Retiring { host_asid: u16, invalidated: bool },
}

/// warden's own invalidation, issued through [`RealAsids::acquire`]'s callback: the TLBIs,
/// then one CMD_SYNC that must complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flush {
    /// TLBI_NH_ASID for each of these real ASIDs.
    Asids(Vec<u16>),
    /// TLBI_NH_ALL (the host VMID).
    All,
}

/// Why no real ASID could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError<E> {
    /// warden's flush failed (nothing changed; retry later).
    Flush(E),
    /// Every real ASID is live: more host contexts than the SMMU has ASIDs.
    Exhausted,
}

/// Counters, exposed by hypercall (`SMMU_STATS`) and log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsidStats {
    /// Real ASIDs that went out of service (their context's last user completed a change).
    pub retired: u64,
    /// Retiring real ASIDs freed by a TLBI + completed sync.
    pub freed: u64,
    /// Retiring real ASIDs warden invalidated itself because the host reused their host ASID
    /// for a new context first.
    pub forced_flushes: u64,
    /// Retiring real ASIDs reused without that flush (only with the test-only G3 switch off).
    pub unprotected_reuses: u64,
    /// TLBI_NH_ALL + CMD_SYNC issued by warden because no real ASID was free.
    pub exhaustion_flushes: u64,
}

/// What [`RealAsids::acquire`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acquired {
    pub real: u16,
    /// Retiring real ASIDs warden flushed first (forced flushes).
    pub flushed: Vec<u16>,
    /// A retiring real ASID reused unflushed (G3 off).
    pub unprotected: bool,
    /// warden issued TLBI_NH_ALL because none was free.
    pub exhaustion_flush: bool,
}

/// warden's real ASIDs (see the module documentation).
#[derive(Clone, Debug)]
pub struct RealAsids {
    /// The highest real ASID (255 or 65535).
    max: u16,
    by_key: BTreeMap<ContextKey, u16>,
    by_real: BTreeMap<u16, RealState>,
    /// Releases that take effect at the next completed sync.
    pending: Vec<ContextKey>,
    enabled: bool,
    stats: AsidStats,
}

impl RealAsids {
    /// `asid16`: the real SMMU has 16-bit ASIDs (else 8).
    pub fn new(asid16: bool) -> Self {
        Self {
            max: if asid16 { u16::MAX } else { u8::MAX.into() },
            by_key: BTreeMap::new(),
            by_real: BTreeMap::new(),
            pending: Vec::new(),
            enabled: true,
            stats: AsidStats::default(),
        }
    }

    /// Test-only switch: with G3 off a new context reuses a retiring real ASID of its host
    /// ASID without the forced flush (see the module documentation).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn stats(&self) -> AsidStats {
        self.stats
    }

    pub fn state(&self, real: u16) -> Option<RealState> {
        self.by_real.get(&real).copied()
    }

    /// The real ASID of a live context.
    pub fn real_of(&self, key: &ContextKey) -> Option<u16> {
        self.by_key.get(key).copied()
    }

    /// Real ASIDs retiring now.
    pub fn retiring(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_real
            .iter()
            .filter_map(|(r, s)| matches!(s, RealState::Retiring { .. }).then_some(*r))
    }

    /// Live real ASIDs of host ASID `host_asid` (what a host TLBI_NH_VA must reach). An
    /// iterator, not a list: Linux's every DMA unmap sends one TLBI_NH_VA, and a heap list per
    /// command cost an allocation and a free on that trap (issue 16).
    pub fn live_of(&self, host_asid: u16) -> impl Iterator<Item = u16> + '_ {
        self.by_key.iter().filter(move |(k, _)| k.host_asid == host_asid).map(|(_, r)| *r)
    }

    /// Live and retiring real ASIDs of host ASID `host_asid` (what a host TLBI_NH_ASID must
    /// reach), in ascending order.
    pub fn associated(&self, host_asid: u16) -> Vec<u16> {
        self.by_real
            .iter()
            .filter(|(_, s)| match s {
                RealState::Live { key, .. } => key.host_asid == host_asid,
                RealState::Retiring { host_asid: h, .. } => *h == host_asid,
            })
            .map(|(r, _)| *r)
            .collect()
    }

    fn retiring_of(&self, host_asid: u16) -> Vec<u16> {
        self.by_real
            .iter()
            .filter(
                |(_, s)| matches!(s, RealState::Retiring { host_asid: h, .. } if *h == host_asid),
            )
            .map(|(r, _)| *r)
            .collect()
    }

    /// A free real ASID: `preferred` if free, else the highest free one.
    fn free(&self, preferred: u16) -> Option<u16> {
        if preferred <= self.max && !self.by_real.contains_key(&preferred) {
            return Some(preferred);
        }
        (0..=self.max).rev().find(|r| !self.by_real.contains_key(r))
    }

    /// One more stream reference to `key`; returns its real ASID. A context already live keeps
    /// its real ASID. A new one first has retiring real ASIDs of its host ASID flushed through
    /// `flush` (G3; with G3 off one of them is reused as it is), then takes a free real ASID,
    /// after a flush of everything if none is free. On error nothing changed.
    pub fn acquire<E>(
        &mut self,
        key: ContextKey,
        mut flush: impl FnMut(Flush) -> Result<(), E>,
    ) -> Result<Acquired, AcquireError<E>> {
        if let Some(&real) = self.by_key.get(&key) {
            if let Some(RealState::Live { users, .. }) = self.by_real.get_mut(&real) {
                *users = users.saturating_add(1);
            }
            return Ok(Acquired { real, ..Acquired::default() });
        }
        let mut done = Acquired::default();
        let stale = self.retiring_of(key.host_asid);
        if let Some(&oldest) = stale.first() {
            if !self.enabled {
                self.stats.unprotected_reuses += 1;
                self.make_live(oldest, key);
                return Ok(Acquired { real: oldest, unprotected: true, ..done });
            }
            flush(Flush::Asids(stale.clone())).map_err(AcquireError::Flush)?;
            for &r in &stale {
                self.invalidated(r);
            }
            self.sync_completed();
            self.stats.forced_flushes += stale.len() as u64;
            done.flushed = stale;
        }
        let free = self.free(key.host_asid).filter(|_| self.retiring().count() < RETIRING_LIMIT);
        let real = match free {
            Some(r) => r,
            None => {
                if self.retiring().next().is_none() {
                    return Err(AcquireError::Exhausted);
                }
                flush(Flush::All).map_err(AcquireError::Flush)?;
                self.invalidated_all();
                self.sync_completed();
                self.stats.exhaustion_flushes += 1;
                done.exhaustion_flush = true;
                self.free(key.host_asid).ok_or(AcquireError::Exhausted)?
            }
        };
        self.make_live(real, key);
        done.real = real;
        Ok(done)
    }

    fn make_live(&mut self, real: u16, key: ContextKey) {
        self.by_real.insert(real, RealState::Live { key, users: 1 });
        self.by_key.insert(key, real);
    }

    /// One stream reference to `key` goes, once the configuration change that removed it has
    /// been completed by a CMD_SYNC: it takes effect at the next [`Self::sync_completed`].
    pub fn release(&mut self, key: ContextKey) {
        if self.by_key.contains_key(&key) {
            self.pending.push(key);
        }
    }

    /// A TLBI covering real ASID `real` was issued.
    pub fn invalidated(&mut self, real: u16) {
        if let Some(RealState::Retiring { invalidated, .. }) = self.by_real.get_mut(&real) {
            *invalidated = true;
        }
    }

    /// A TLBI covering every real ASID (of the host VMID) was issued.
    pub fn invalidated_all(&mut self) {
        for state in self.by_real.values_mut() {
            if let RealState::Retiring { invalidated, .. } = state {
                *invalidated = true;
            }
        }
    }

    /// A CMD_SYNC issued after everything recorded so far has completed: retiring real ASIDs
    /// invalidated since their retirement are free; then the pending releases take effect
    /// (a real ASID that loses its last user starts retiring, not yet invalidated: a TLBI
    /// issued before this sync may have run before the configuration change it follows).
    pub fn sync_completed(&mut self) {
        let before = self.by_real.len();
        self.by_real.retain(|_, s| !matches!(s, RealState::Retiring { invalidated: true, .. }));
        self.stats.freed += (before - self.by_real.len()) as u64;
        for key in core::mem::take(&mut self.pending) {
            let Some(&real) = self.by_key.get(&key) else { continue };
            let Some(RealState::Live { users, .. }) = self.by_real.get_mut(&real) else {
                continue;
            };
            if *users > 1 {
                *users -= 1;
                continue;
            }
            self.by_key.remove(&key);
            self.by_real
                .insert(real, RealState::Retiring { host_asid: key.host_asid, invalidated: false });
            self.stats.retired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn retire_then_tlbi_then_sync_frees() {
        let mut t = RetireTracker::new();
        t.acquire(5);
        t.acquire(5);
        assert_eq!(t.state(5), Some(IdState::Live(2)));
        t.release(5);
        assert_eq!(t.state(5), Some(IdState::Live(1)));
        assert!(!t.needs_flush(5));
        t.release(5);
        assert_eq!(t.state(5), Some(IdState::Retiring { invalidated: false }));
        assert!(t.needs_flush(5));
        t.sync_completed();
        assert!(t.needs_flush(5), "a sync without a TLBI frees nothing");
        t.invalidated(5);
        assert!(t.needs_flush(5), "a TLBI without a completed sync frees nothing");
        t.sync_completed();
        assert_eq!(t.state(5), None);
        assert!(!t.needs_flush(5));
        assert_eq!(t.stats(), RetireStats { retired: 1, freed: 1, ..RetireStats::default() });
    }

    #[test]
    fn tlbi_before_retirement_does_not_count() {
        let mut t = RetireTracker::new();
        t.acquire(7);
        t.invalidated(7); // while live: entries may be re-created afterwards
        t.invalidated_all();
        t.release(7);
        t.sync_completed();
        assert_eq!(t.state(7), Some(IdState::Retiring { invalidated: false }));
        t.invalidated_all();
        t.sync_completed();
        assert_eq!(t.state(7), None);
    }

    #[test]
    fn reuse_while_retiring_and_the_switch() {
        let mut t = RetireTracker::new();
        t.acquire(1);
        t.release(1);
        assert!(t.needs_flush(1));
        // The caller flushes: TLBI + sync, then acquires.
        t.invalidated(1);
        t.sync_completed();
        t.note_forced_flush();
        t.acquire(1);
        assert_eq!(t.state(1), Some(IdState::Live(1)));
        assert_eq!(t.stats().forced_flushes, 1);
        assert_eq!(t.stats().unprotected_reuses, 0);
        // G3 off: no flush requested, reuse counted as unprotected.
        t.set_enabled(false);
        t.release(1);
        assert!(!t.needs_flush(1));
        t.acquire(1);
        assert_eq!(t.stats().unprotected_reuses, 1);
        // Releasing an unknown or retiring id is harmless.
        t.release(99);
        t.release(1);
        t.release(1);
        assert_eq!(t.retiring().collect::<Vec<_>>(), vec![1]);
    }

    fn key(host_asid: u16, ttb0: u64) -> ContextKey {
        ContextKey { host_asid, ttb0: Some(ttb0), ttb1: None }
    }

    /// Runs `acquire` with a flush that records what it was asked to do and succeeds.
    fn take(a: &mut RealAsids, k: ContextKey, log: &mut Vec<Flush>) -> Acquired {
        a.acquire(k, |f| {
            log.push(f);
            Ok::<(), ()>(())
        })
        .unwrap()
    }

    #[test]
    fn contexts_get_their_host_asid_if_free_else_the_highest_free() {
        let mut a = RealAsids::new(true);
        let mut log = Vec::new();
        assert_eq!(take(&mut a, key(5, 0x1000), &mut log).real, 5);
        // Same host ASID, other tables: another context, never the same real ASID.
        assert_eq!(take(&mut a, key(5, 0x2000), &mut log).real, 0xffff);
        assert_eq!(take(&mut a, key(0xffff, 0x3000), &mut log).real, 0xfffe, "its own is taken");
        // The same context from another stream shares its real ASID.
        assert_eq!(take(&mut a, key(5, 0x2000), &mut log).real, 0xffff);
        assert_eq!(a.state(0xffff), Some(RealState::Live { key: key(5, 0x2000), users: 2 }));
        assert_eq!(a.associated(5), vec![5, 0xffff]);
        assert_eq!(a.live_of(5).collect::<Vec<_>>(), vec![5, 0xffff]);
        assert!(log.is_empty(), "nothing to flush");
        // EPD: a disabled half is not part of the context.
        let k = ContextKey { host_asid: 9, ttb0: Some(0x1000), ttb1: None };
        let k2 = ContextKey { ttb1: Some(0x1000), ..k };
        assert_ne!(take(&mut a, k, &mut log).real, take(&mut a, k2, &mut log).real);
    }

    #[test]
    fn retirement_waits_for_the_sync_then_a_later_tlbi_and_sync() {
        let mut a = RealAsids::new(true);
        let mut log = Vec::new();
        let k = key(7, 0x1000);
        take(&mut a, k, &mut log);
        take(&mut a, k, &mut log);
        a.release(k);
        a.release(k);
        // Until a sync completes the configuration change, DMA may still use the context.
        assert_eq!(a.state(7), Some(RealState::Live { key: k, users: 2 }));
        a.invalidated(7);
        a.invalidated_all();
        a.sync_completed();
        assert_eq!(
            a.state(7),
            Some(RealState::Retiring { host_asid: 7, invalidated: false }),
            "a TLBI before the change was synced does not count"
        );
        assert_eq!(a.real_of(&k), None);
        a.sync_completed();
        assert_eq!(a.state(7), Some(RealState::Retiring { host_asid: 7, invalidated: false }));
        a.invalidated(7);
        assert_eq!(a.retiring().collect::<Vec<_>>(), vec![7]);
        a.sync_completed();
        assert_eq!(a.state(7), None, "free");
        assert_eq!(a.stats(), AsidStats { retired: 1, freed: 1, ..AsidStats::default() });
        // Releasing what is not live is harmless.
        a.release(k);
        a.sync_completed();
        assert_eq!(a.stats().retired, 1);
    }

    #[test]
    fn new_context_of_a_retiring_host_asid_flushes_it_first() {
        let mut a = RealAsids::new(true);
        let mut log = Vec::new();
        let old = key(0x2a, 0x1000);
        take(&mut a, old, &mut log);
        a.release(old);
        a.sync_completed();
        // Another host ASID's new context does not care.
        assert_eq!(take(&mut a, key(0x2b, 0x3000), &mut log).flushed, Vec::<u16>::new());
        let new = take(&mut a, key(0x2a, 0x2000), &mut log);
        assert_eq!(log, vec![Flush::Asids(vec![0x2a])]);
        assert_eq!(new, Acquired { real: 0x2a, flushed: vec![0x2a], ..Acquired::default() });
        assert_eq!(a.stats().forced_flushes, 1);
        // A failed flush changes nothing: still retiring, flushed again on the retry.
        a.release(key(0x2a, 0x2000));
        a.sync_completed();
        assert_eq!(
            a.acquire(key(0x2a, 0x4000), |_| Err("timeout")),
            Err(AcquireError::Flush("timeout"))
        );
        assert_eq!(a.retiring().collect::<Vec<_>>(), vec![0x2a]);
        assert_eq!(take(&mut a, key(0x2a, 0x4000), &mut log).flushed, vec![0x2a]);
        assert_eq!(a.stats().forced_flushes, 2);
    }

    #[test]
    fn with_g3_off_the_retiring_real_asid_is_reused_unflushed() {
        let mut a = RealAsids::new(true);
        a.set_enabled(false);
        let mut log = Vec::new();
        take(&mut a, key(0x2b, 0x1000), &mut log);
        a.release(key(0x2b, 0x1000));
        a.sync_completed();
        let new = take(&mut a, key(0x2b, 0x2000), &mut log);
        assert_eq!(new, Acquired { real: 0x2b, unprotected: true, ..Acquired::default() });
        assert!(log.is_empty());
        assert_eq!(a.stats().unprotected_reuses, 1);
        assert_eq!(a.state(0x2b), Some(RealState::Live { key: key(0x2b, 0x2000), users: 1 }));
    }

    #[test]
    fn exhaustion_flushes_everything_once() {
        let mut a = RealAsids::new(false);
        let mut log = Vec::new();
        for i in 0..256u64 {
            let want = match i {
                0 => 1,
                255 => 0,
                _ => (256 - i) as u16,
            };
            assert_eq!(take(&mut a, key(1, i << 12), &mut log).real, want);
        }
        assert!(log.is_empty());
        assert_eq!(
            a.acquire(key(2, 0x9000), |_| Ok::<(), ()>(())),
            Err(AcquireError::Exhausted),
            "every real ASID live"
        );
        for i in 0..10u64 {
            a.release(key(1, i << 12));
        }
        a.sync_completed();
        let got = take(&mut a, key(2, 0x9000), &mut log);
        assert_eq!(log, vec![Flush::All]);
        assert!(got.exhaustion_flush);
        assert_eq!(a.stats().exhaustion_flushes, 1);
        assert_eq!(a.stats().freed, 10);
        assert_eq!(got.real, 255, "the highest of the freed");
    }

    #[test]
    fn retiring_real_asids_are_bounded() {
        let mut a = RealAsids::new(true);
        let mut log = Vec::new();
        // A host that keeps changing contexts and never invalidates anything.
        for i in 0..RETIRING_LIMIT as u64 {
            let k = key(1000 + i as u16, i << 12);
            take(&mut a, k, &mut log);
            a.release(k);
            a.sync_completed();
        }
        assert_eq!(a.retiring().count(), RETIRING_LIMIT);
        assert!(log.is_empty());
        let got = take(&mut a, key(7, 0x1000), &mut log);
        assert_eq!(log, vec![Flush::All]);
        assert!(got.exhaustion_flush);
        assert_eq!(a.retiring().count(), 0);
        assert_eq!(a.stats().freed, RETIRING_LIMIT as u64);
    }

    // ---- Exhaustive 2-CPU model ----
    //
    // Two host CPUs each run a short program against the virtual SMMU; every operation is one
    // trap, atomic under the vSMMU lock, and uses `RealAsids` exactly as `VirtSmmu` does: a
    // new context is acquired (warden's flushes run on the model SMMU at once), the stream
    // switches to it, and the old one is released, which takes effect at the next completed
    // sync; until then DMA may still use the old context (the SMMU's cached configuration).
    // The model IOTLB holds (real ASID, context generation) entries; TLBIs take effect only
    // when a later sync completes (the weakest behaviour the architecture allows). The
    // guarantee: a DMA never hits an entry another context filled, even when the host gives
    // two live contexts the same ASID.

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// Stream `sid` gets a new CD with host ASID `asid` (CFGI_CD): the context of another
        /// stream with that ASID if `share`, else new tables.
        Attach { sid: u32, asid: u16, share: bool },
        /// Stream `sid`'s CD goes invalid (CFGI_CD).
        Detach { sid: u32 },
        /// CMD_TLBI_NH_ASID from the host.
        Tlbi { asid: u16 },
        /// CMD_TLBI_NH_ALL from the host.
        TlbiAll,
        /// CMD_SYNC from the host.
        Sync,
        /// The device behind `sid` does a DMA, through the configuration it had before its
        /// last unsynced change if `previous`.
        Dma { sid: u32, previous: bool },
    }

    /// A context as a stream uses it: its key, real ASID and table generation.
    type Ctx = (ContextKey, u16, u64);

    #[derive(Clone)]
    struct Model {
        asids: RealAsids,
        tlb: Vec<(u16, u64)>,
        pending: Vec<u16>,
        streams: [(Option<Ctx>, Option<Ctx>); 2],
        next_gen: u64,
    }

    impl Model {
        fn new(g3: bool, asid16: bool) -> Self {
            let mut asids = RealAsids::new(asid16);
            asids.set_enabled(g3);
            Self {
                asids,
                tlb: Vec::new(),
                pending: Vec::new(),
                streams: [(None, None); 2],
                next_gen: 0,
            }
        }

        fn sync(&mut self) {
            let done = core::mem::take(&mut self.pending);
            self.tlb.retain(|(r, _)| !done.contains(r));
            self.asids.sync_completed();
            for s in &mut self.streams {
                s.1 = None;
            }
        }

        fn set(&mut self, sid: u32, new: Option<(ContextKey, u64)>) {
            let i = sid as usize;
            if self.streams[i].1.is_some() {
                // warden never rewrites a CD slot the SMMU may still use: it syncs first.
                self.sync();
            }
            let old = self.streams[i].0;
            if old.map(|o| o.0) == new.map(|n| n.0) {
                return;
            }
            let current = new.map(|(k, generation)| {
                let Model { asids, tlb, pending, streams, .. } = self;
                let got = asids.acquire(k, |f| {
                    match f {
                        Flush::Asids(list) => pending.extend(list),
                        Flush::All => pending.extend(tlb.iter().map(|e| e.0)),
                    }
                    let done = core::mem::take(pending);
                    tlb.retain(|(r, _)| !done.contains(r));
                    for s in streams.iter_mut() {
                        s.1 = None;
                    }
                    Ok::<(), ()>(())
                });
                (k, got.unwrap().real, generation)
            });
            self.streams[i] = (current, old);
            if let Some((k, ..)) = old {
                self.asids.release(k);
            }
        }

        /// Returns false if the DMA hit an entry another context filled.
        fn step(&mut self, op: Op) -> bool {
            match op {
                Op::Attach { sid, asid, share } => {
                    let other = self.streams[(sid as usize + 1) % 2].0;
                    let joined = other.filter(|o| share && o.0.host_asid == asid);
                    let new = joined.map(|(k, _, g)| (k, g)).unwrap_or_else(|| {
                        self.next_gen += 1;
                        (key(asid, self.next_gen << 12), self.next_gen)
                    });
                    self.set(sid, Some(new));
                }
                Op::Detach { sid } => self.set(sid, None),
                Op::Tlbi { asid } => {
                    for r in self.asids.associated(asid) {
                        self.pending.push(r);
                        self.asids.invalidated(r);
                    }
                }
                Op::TlbiAll => {
                    self.pending.extend(self.tlb.iter().map(|e| e.0));
                    self.asids.invalidated_all();
                }
                Op::Sync => self.sync(),
                Op::Dma { sid, previous } => {
                    let (current, before) = self.streams[sid as usize];
                    let used = if previous { before.or(current) } else { current };
                    if let Some((_, real, generation)) = used {
                        if self.tlb.iter().any(|&(r, g)| r == real && g != generation) {
                            return false;
                        }
                        if !self.tlb.contains(&(real, generation)) {
                            self.tlb.push((real, generation));
                        }
                    }
                }
            }
            true
        }
    }

    /// Runs every interleaving of `a` and `b`; returns (runs, runs that hit a stale entry).
    fn explore(a: &[Op], b: &[Op], g3: bool) -> (usize, usize) {
        fn go(m: &Model, a: &[Op], b: &[Op], runs: &mut usize, bad: &mut usize) {
            if a.is_empty() && b.is_empty() {
                *runs += 1;
                return;
            }
            for (first, rest_a, rest_b) in [
                a.split_first().map(|(op, r)| (*op, r, b)),
                b.split_first().map(|(op, r)| (*op, a, r)),
            ]
            .into_iter()
            .flatten()
            {
                let mut next = m.clone();
                if next.step(first) {
                    go(&next, rest_a, rest_b, runs, bad);
                } else {
                    *runs += 1;
                    *bad += 1;
                }
            }
        }
        let (mut runs, mut bad) = (0, 0);
        go(&Model::new(g3, true), a, b, &mut runs, &mut bad);
        (runs, bad)
    }

    /// CPU 0 tears a context down without any TLBI; CPU 1 brings up a new context that
    /// reuses the ASID (the FastRPC pattern), with DMAs on both sides.
    fn fastrpc_programs() -> (Vec<Op>, Vec<Op>) {
        (
            vec![
                Op::Attach { sid: 0, asid: 7, share: false },
                Op::Dma { sid: 0, previous: false },
                Op::Detach { sid: 0 },
                Op::Sync,
            ],
            vec![
                Op::Dma { sid: 1, previous: false },
                Op::Attach { sid: 1, asid: 7, share: false },
                Op::Dma { sid: 1, previous: false },
                Op::Sync,
            ],
        )
    }

    #[test]
    fn two_cpu_model_exhaustive_with_g3() {
        let (a, b) = fastrpc_programs();
        let (runs, bad) = explore(&a, &b, true);
        assert_eq!(runs, 70, "C(8, 4) interleavings");
        assert_eq!(bad, 0);
    }

    #[test]
    fn two_cpu_model_finds_the_bug_without_g3() {
        let (a, b) = fastrpc_programs();
        let (_, bad) = explore(&a, &b, false);
        assert!(bad > 0, "the model must be able to see a stale hit");
    }

    #[test]
    fn two_cpu_model_host_tlbi_paths() {
        // CPU 0 retires ASID 3 and invalidates it properly; CPU 1 reuses it at any point.
        let a = vec![
            Op::Attach { sid: 0, asid: 3, share: false },
            Op::Dma { sid: 0, previous: false },
            Op::Detach { sid: 0 },
            Op::Sync,
            Op::Tlbi { asid: 3 },
            Op::Sync,
        ];
        let b = vec![
            Op::Attach { sid: 1, asid: 3, share: false },
            Op::Dma { sid: 1, previous: false },
            Op::Detach { sid: 1 },
        ];
        assert_eq!(explore(&a, &b, true).1, 0);
        // The host rewrites a CD in place (same ASID, new tables) while the device keeps
        // DMAing through the configuration the SMMU still holds: the old context's entries
        // can be refilled until the switch is synced, and must not be seen by the new one.
        let a = vec![
            Op::Attach { sid: 0, asid: 1, share: false },
            Op::Dma { sid: 0, previous: false },
            Op::Attach { sid: 0, asid: 1, share: false },
            Op::Dma { sid: 0, previous: false },
            Op::Tlbi { asid: 1 },
            Op::Sync,
            Op::Attach { sid: 0, asid: 1, share: false },
            Op::Dma { sid: 0, previous: false },
        ];
        let b =
            vec![Op::Dma { sid: 0, previous: true }, Op::Dma { sid: 0, previous: true }, Op::Sync];
        assert_eq!(explore(&a, &b, true).1, 0);
    }

    #[test]
    fn two_cpu_model_same_host_asid_on_two_streams() {
        // Issue 11 §6 (a): two streams whose CDs share a host ASID but not tables, each
        // DMAing: with host ASIDs used as real ones they would hit each other's entries.
        let a = vec![
            Op::Attach { sid: 0, asid: 4, share: false },
            Op::Dma { sid: 0, previous: false },
            Op::Dma { sid: 0, previous: false },
        ];
        let b = vec![
            Op::Attach { sid: 1, asid: 4, share: false },
            Op::Dma { sid: 1, previous: false },
            Op::Dma { sid: 1, previous: false },
        ];
        assert_eq!(explore(&a, &b, true).1, 0);
        assert_eq!(explore(&a, &b, false).1, 0, "not a retirement question: G3 off too");
        // Sharing the context (the same tables) is sharing the real ASID.
        let mut m = Model::new(true, true);
        m.step(Op::Attach { sid: 0, asid: 4, share: false });
        m.step(Op::Attach { sid: 1, asid: 4, share: true });
        assert_eq!(m.streams[0].0.map(|c| c.1), m.streams[1].0.map(|c| c.1));
    }

    proptest::proptest! {
        /// Random programs on two streams and three host ASIDs (8-bit real ASIDs, so the
        /// allocator wraps around), run in random order: with G3 no DMA ever hits an entry
        /// another context filled, and the counters add up.
        #[test]
        fn random_programs_never_hit_stale_entries(
            ops in proptest::collection::vec((0u8..7, 0u32..2, 0u16..3, proptest::bool::ANY), 0..80)
        ) {
            let mut m = Model::new(true, false);
            for (kind, sid, asid, flag) in ops {
                let op = match kind {
                    0 => Op::Attach { sid, asid, share: flag },
                    1 => Op::Detach { sid },
                    2 => Op::Tlbi { asid },
                    3 => Op::TlbiAll,
                    4 => Op::Sync,
                    _ => Op::Dma { sid, previous: flag },
                };
                proptest::prop_assert!(m.step(op), "stale hit at {:?}", op);
            }
            let s = m.asids.stats();
            proptest::prop_assert_eq!(s.unprotected_reuses, 0);
            let retiring = m.asids.retiring().count() as u64;
            proptest::prop_assert_eq!(s.freed + retiring, s.retired);
        }
    }
}
