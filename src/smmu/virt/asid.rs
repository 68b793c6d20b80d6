//! G3: ASID (and VMID) retirement serialized against TLB invalidation.
//!
//! An identifier is *live* while some context uses it, *retiring* once the last user is gone,
//! and *free* (forgotten) only when a TLB invalidation covering it was issued **after** it
//! started retiring **and** a CMD_SYNC issued after that invalidation has completed. Until
//! then TLB entries tagged with it may survive in the SMMU. If a retiring identifier is made
//! live again early, the caller must first issue the missing invalidation and a sync
//! ([`RetireTracker::needs_flush`]); the tracker counts these forced flushes.
//!
//! The tracker is pure bookkeeping: callers record what they issued ([`invalidated`],
//! [`sync_completed`]). [`AsidBook`] keeps, per stream, the context (ASID and table roots)
//! its CD makes live, and turns CD changes into tracker transitions.
//!
//! Concurrency: every entry point is called with the virtual SMMU's lock held (one trap at a
//! time), so retirement is linearizable; the exhaustive 2-CPU model in the tests checks the
//! guarantee over every interleaving of two CPUs' operations.
//!
//! [`invalidated`]: RetireTracker::invalidated
//! [`sync_completed`]: RetireTracker::sync_completed

use alloc::collections::BTreeMap;

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

use super::ste::CdContext;

/// Per-stream live contexts of the host's CDs, over a [`RetireTracker`] of ASIDs.
#[derive(Clone, Debug, Default)]
pub struct AsidBook {
    streams: BTreeMap<u32, CdContext>,
    tracker: RetireTracker,
}

impl AsidBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tracker(&self) -> &RetireTracker {
        &self.tracker
    }

    pub fn tracker_mut(&mut self) -> &mut RetireTracker {
        &mut self.tracker
    }

    pub fn context(&self, sid: u32) -> Option<CdContext> {
        self.streams.get(&sid).copied()
    }

    /// Makes `sid` use `new` (or nothing). The old context is released first (its ASID may
    /// retire); if `new`'s ASID is then retiring, `flush(asid)` must issue a TLBI for it and a
    /// sync that completes, before the stream is recorded as using it. A context with the
    /// same ASID but other tables is a new use of that ASID: when the stream was its only
    /// user, the change itself retires it, so it is flushed too.
    ///
    /// On a flush error the stream is left with no live context and the error returned: the
    /// caller retries the whole update later (which flushes again).
    pub fn update<E>(
        &mut self,
        sid: u32,
        new: Option<CdContext>,
        mut flush: impl FnMut(u16) -> Result<(), E>,
    ) -> Result<Update, E> {
        let old = self.streams.get(&sid).copied();
        let mut update = Update::default();
        if old == new {
            return Ok(update);
        }
        if let Some(o) = self.streams.remove(&sid) {
            self.tracker.release(o.asid);
            if matches!(self.tracker.state(o.asid), Some(IdState::Retiring { .. })) {
                update.retired = Some(o.asid);
            }
        }
        if let Some(n) = new {
            if self.tracker.needs_flush(n.asid) {
                flush(n.asid)?;
                self.tracker.invalidated(n.asid);
                self.tracker.sync_completed();
                self.tracker.note_forced_flush();
                update.flushed = Some(n.asid);
            }
            self.tracker.acquire(n.asid);
            self.streams.insert(sid, n);
        }
        Ok(update)
    }

    /// Streams with a live context.
    pub fn streams(&self) -> impl Iterator<Item = (u32, CdContext)> + '_ {
        self.streams.iter().map(|(s, c)| (*s, *c))
    }
}

/// What an [`AsidBook::update`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// The stream's old ASID, now retiring.
    pub retired: Option<u16>,
    /// The ASID warden had to invalidate and sync itself before reuse.
    pub flushed: Option<u16>,
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

    fn ctx(asid: u16, ttb0: u64) -> Option<CdContext> {
        Some(CdContext { asid, ttb0, ttb1: 0 })
    }

    #[test]
    fn book_tracks_shared_and_changed_contexts() {
        let mut b = AsidBook::new();
        let mut flushes = Vec::new();
        let mut up = |b: &mut AsidBook, sid, new| {
            b.update(sid, new, |a| {
                flushes.push(a);
                Ok::<(), ()>(())
            })
            .unwrap()
        };
        assert_eq!(up(&mut b, 1, ctx(3, 0x1000)), Update::default());
        assert_eq!(up(&mut b, 2, ctx(3, 0x1000)), Update::default(), "shared by two streams");
        assert_eq!(up(&mut b, 1, None), Update::default(), "still used by stream 2");
        assert_eq!(up(&mut b, 2, ctx(4, 0x2000)).retired, Some(3));
        assert_eq!(
            up(&mut b, 1, ctx(3, 0x3000)),
            Update { retired: None, flushed: Some(3) },
            "reuse while retiring"
        );
        // Same ASID, new tables, sole user: the change retires it and flushes it.
        assert_eq!(up(&mut b, 2, ctx(4, 0x9000)), Update { retired: Some(4), flushed: Some(4) });
        assert_eq!(up(&mut b, 2, ctx(4, 0x9000)), Update::default(), "unchanged");
        // Same ASID, new tables, shared: not retired, no flush (a host bug, not warden's).
        up(&mut b, 5, ctx(4, 0x9000));
        assert_eq!(up(&mut b, 2, ctx(4, 0xa000)), Update::default());
        assert_eq!(b.context(2), ctx(4, 0xa000));
        assert_eq!(flushes, vec![3, 4]);
        assert_eq!(b.tracker().stats().forced_flushes, 2);
        assert_eq!(b.tracker().stats().unprotected_reuses, 0);
        assert_eq!(b.streams().count(), 3);
    }

    #[test]
    fn book_flush_failure_leaves_the_stream_without_context() {
        let mut b = AsidBook::new();
        let ok = |_| Ok::<(), &str>(());
        b.update(1, ctx(3, 0x1000), ok).unwrap();
        b.update(1, None, ok).unwrap();
        assert_eq!(b.update(1, ctx(3, 0x2000), |_| Err("timeout")), Err("timeout"));
        assert_eq!(b.context(1), None);
        assert!(b.tracker().needs_flush(3), "still retiring: the retry flushes again");
        assert_eq!(b.update(1, ctx(3, 0x2000), ok).unwrap().flushed, Some(3));
    }

    // ---- Exhaustive 2-CPU model ----
    //
    // Two host CPUs each run a short program against the virtual SMMU; every operation is one
    // trap, atomic under the vSMMU lock. The model SMMU has an IOTLB keyed by ASID that
    // remembers which context generation filled an entry; TLBIs take effect only when a later
    // sync completes (the weakest behaviour the architecture allows). The guarantee: a DMA
    // through a live context never hits an entry filled by a context that is no longer live.
    // (Two live contexts sharing an ASID is the host's own conflict, outside G3.)

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// The host points stream `sid`'s CD at a new context with `asid` (CFGI_CD).
        Attach { sid: u32, asid: u16 },
        /// The host invalidates stream `sid`'s CD (CFGI_CD).
        Detach { sid: u32 },
        /// CMD_TLBI_NH_ASID from the host.
        Tlbi { asid: u16 },
        /// CMD_SYNC from the host.
        Sync,
        /// The device behind `sid` does a DMA.
        Dma { sid: u32 },
    }

    #[derive(Default)]
    struct Model {
        book: AsidBook,
        /// (asid, generation) entries in the IOTLB.
        tlb: Vec<(u16, u64)>,
        /// TLBIs issued but not yet completed by a sync.
        pending: Vec<u16>,
        next_gen: u64,
    }

    impl Model {
        fn tlbi(&mut self, asid: u16) {
            self.pending.push(asid);
            self.book.tracker_mut().invalidated(asid);
        }

        fn sync(&mut self) {
            let pending = core::mem::take(&mut self.pending);
            self.tlb.retain(|(a, _)| !pending.contains(a));
            self.book.tracker_mut().sync_completed();
        }

        fn set(&mut self, sid: u32, new: Option<CdContext>) {
            // Warden's flush goes to the same model SMMU: the TLBI then a completed sync.
            let Model { book, tlb, pending, .. } = self;
            let flushed = book.update(sid, new, |asid| {
                pending.push(asid);
                let done = core::mem::take(pending);
                tlb.retain(|(a, _)| !done.contains(a));
                Ok::<(), ()>(())
            });
            assert!(flushed.is_ok());
        }

        /// Returns false if the DMA hit a stale entry.
        fn step(&mut self, op: Op) -> bool {
            match op {
                Op::Attach { sid, asid } => {
                    // Like Linux, one ASID names one domain: attaching to an ASID another
                    // stream uses joins that domain; otherwise it is a new address space.
                    let shared = self
                        .book
                        .streams()
                        .find(|&(s, c)| s != sid && c.asid == asid)
                        .map(|(_, c)| c.ttb0 >> 12);
                    let generation = shared.unwrap_or_else(|| {
                        self.next_gen += 1;
                        self.next_gen
                    });
                    self.set(sid, ctx(asid, generation << 12));
                }
                Op::Detach { sid } => self.set(sid, None),
                Op::Tlbi { asid } => self.tlbi(asid),
                Op::Sync => self.sync(),
                Op::Dma { sid } => {
                    if let Some(c) = self.book.context(sid) {
                        let generation = c.ttb0 >> 12;
                        let live: Vec<u64> =
                            self.book.streams().map(|(_, c)| c.ttb0 >> 12).collect();
                        if self
                            .tlb
                            .iter()
                            .any(|&(a, g)| a == c.asid && g != generation && !live.contains(&g))
                        {
                            return false;
                        }
                        if !self.tlb.contains(&(c.asid, generation)) {
                            self.tlb.push((c.asid, generation));
                        }
                    }
                }
            }
            true
        }
    }

    /// Runs every interleaving of `a` and `b`; returns how many hit a stale entry.
    fn explore(a: &[Op], b: &[Op], g3: bool) -> (usize, usize) {
        fn go(m: &Model, a: &[Op], b: &[Op], g3: bool, runs: &mut usize, bad: &mut usize) {
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
                let mut next = Model {
                    book: m.book.clone(),
                    tlb: m.tlb.clone(),
                    pending: m.pending.clone(),
                    next_gen: m.next_gen,
                };
                next.book.tracker_mut().set_enabled(g3);
                if next.step(first) {
                    go(&next, rest_a, rest_b, g3, runs, bad);
                } else {
                    *runs += 1;
                    *bad += 1;
                }
            }
        }
        let (mut runs, mut bad) = (0, 0);
        go(&Model::default(), a, b, g3, &mut runs, &mut bad);
        (runs, bad)
    }

    /// CPU 0 tears a context down without any TLBI; CPU 1 brings up a new context that
    /// reuses the ASID (the FastRPC pattern), with DMAs on both sides.
    fn fastrpc_programs() -> (Vec<Op>, Vec<Op>) {
        (
            vec![
                Op::Attach { sid: 0, asid: 7 },
                Op::Dma { sid: 0 },
                Op::Detach { sid: 0 },
                Op::Sync,
            ],
            vec![Op::Dma { sid: 1 }, Op::Attach { sid: 1, asid: 7 }, Op::Dma { sid: 1 }, Op::Sync],
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
            Op::Attach { sid: 0, asid: 3 },
            Op::Dma { sid: 0 },
            Op::Detach { sid: 0 },
            Op::Tlbi { asid: 3 },
            Op::Sync,
        ];
        let b = vec![Op::Attach { sid: 1, asid: 3 }, Op::Dma { sid: 1 }, Op::Detach { sid: 1 }];
        assert_eq!(explore(&a, &b, true).1, 0);
        // Same ASID on both streams at once, new tables each time.
        let a = vec![
            Op::Attach { sid: 0, asid: 1 },
            Op::Dma { sid: 0 },
            Op::Attach { sid: 0, asid: 1 },
            Op::Dma { sid: 0 },
        ];
        let b = vec![Op::Dma { sid: 0 }, Op::Tlbi { asid: 1 }, Op::Sync];
        assert_eq!(explore(&a, &b, true).1, 0);
    }

    proptest::proptest! {
        /// Random programs on two streams and three ASIDs, run in random order: with G3 no DMA
        /// ever hits a stale entry, and every retiring ASID is either freed by a TLBI + sync
        /// or still recorded as retiring.
        #[test]
        fn random_programs_never_hit_stale_entries(
            ops in proptest::collection::vec((0u8..5, 0u32..2, 0u16..3), 0..60)
        ) {
            let mut m = Model::default();
            for (kind, sid, asid) in ops {
                let op = match kind {
                    0 => Op::Attach { sid, asid },
                    1 => Op::Detach { sid },
                    2 => Op::Tlbi { asid },
                    3 => Op::Sync,
                    _ => Op::Dma { sid },
                };
                proptest::prop_assert!(m.step(op), "stale hit at {:?}", op);
            }
            let s = m.book.tracker().stats();
            proptest::prop_assert_eq!(s.unprotected_reuses, 0);
            let retiring = m.book.tracker().retiring().count() as u64;
            proptest::prop_assert!(s.freed + retiring <= s.retired);
        }
    }
}
