//! Who owns each page of physical memory: the single source of truth from which the host's
//! stage-2 (CPU and SMMU), each peer's stage-2 and warden's own mappings are derived.
//!
//! The tracker is a sorted list of disjoint, page-aligned extents; adjacent extents with the
//! same state are always merged, so the list stays as short as the ownership picture allows.
//! Memory that was never [`OwnershipTracker::add`]ed is untracked and no transition touches it.
//!
//! Transfer semantics follow FF-A:
//! - **donated**: the peer becomes the owner; the host has no claim until the peer releases it
//!   and the host reclaims it.
//! - **lent**: the host stays the owner, but only the peer may access the range until the peer
//!   releases it and the host reclaims it.
//!
//! In both cases `released` records that the peer has let go (FF-A "relinquish"); a reclaim is
//! refused before that.

use alloc::vec::Vec;
use core::fmt;

use super::range::{MemRange, PAGE_SIZE};

/// Peers are numbered once, in the ABI crate (1 modem, 2 DSP, up to 63).
pub use warden_abi::handoff::PeerId;

/// FF-A transfer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    Donate,
    Lend,
}

/// State of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Owned and accessible by the host.
    Host,
    /// warden's own memory: nobody else's stage-2 ever maps it.
    Warden,
    /// Owned by the peer (accessible to it only).
    Donated { peer: PeerId, released: bool },
    /// Owned by the host, accessible to the peer only.
    Lent { peer: PeerId, released: bool },
    /// Moving from the host to `to`: the host's mapping is being removed, the peer's added.
    HandingOff { to: PeerId, kind: TransferKind },
    /// Moving from `from` back to the host. The host's own RECLAIM starts here only after the
    /// peer's RELEASE; a Qualcomm `assign_mem` back to the host alone (`crate::trap::scm`)
    /// starts here while the peer still has it mapped and removes that mapping first.
    Reclaiming { from: PeerId, kind: TransferKind },
    /// Owned by the host, accessible to the host *and* the peer (Qualcomm's `assign_mem` to
    /// HLOS plus one peer VM): both stage-2s map it.
    Shared { peer: PeerId },
    /// Moving from `Host` to `Shared { peer }`: the host keeps its mapping, the peer's is added.
    Sharing { peer: PeerId },
    /// Moving from `Shared { peer }` back to `Host`: the peer's mapping is removed.
    Unsharing { peer: PeerId },
}

/// Who owns a page (lent pages stay the host's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Host,
    Warden,
    Peer(PeerId),
}

/// An agent whose stage-2 may map a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accessor {
    Host,
    Peer(PeerId),
}

impl PageState {
    /// The owner in FF-A terms. A transfer in flight belongs to its source until it completes.
    pub fn owner(&self) -> Owner {
        match *self {
            PageState::Host | PageState::Lent { .. } => Owner::Host,
            PageState::Warden => Owner::Warden,
            PageState::Donated { peer, .. } => Owner::Peer(peer),
            PageState::HandingOff { .. } => Owner::Host,
            PageState::Reclaiming { from, kind: TransferKind::Donate } => Owner::Peer(from),
            PageState::Reclaiming { kind: TransferKind::Lend, .. } => Owner::Host,
            PageState::Shared { .. } | PageState::Sharing { .. } | PageState::Unsharing { .. } => {
                Owner::Host
            }
        }
    }

    /// Whether `who` is allowed to have the page mapped once no transfer is in flight: the
    /// host its own pages, a peer what was donated or lent to it and not released, both what
    /// is shared between them. A page its peer has released is nobody's to access until the
    /// host reclaims it.
    pub fn accessible_by(&self, who: Accessor) -> bool {
        match *self {
            PageState::Host => who == Accessor::Host,
            PageState::Donated { peer, released: false }
            | PageState::Lent { peer, released: false } => who == Accessor::Peer(peer),
            PageState::Shared { peer } => who == Accessor::Host || who == Accessor::Peer(peer),
            PageState::Donated { released: true, .. }
            | PageState::Lent { released: true, .. }
            | PageState::Warden
            | PageState::HandingOff { .. }
            | PageState::Reclaiming { .. }
            | PageState::Sharing { .. }
            | PageState::Unsharing { .. } => false,
        }
    }

    /// Whether `who` may have the page mapped right now. While a transfer is in flight the
    /// source loses its mapping before the destination gains one, but concurrent observers may
    /// still see either side's mapping (a reclaim's source has none after its RELEASE, and
    /// loses it first when the host takes the range back by `assign_mem`).
    pub fn may_be_mapped_by(&self, who: Accessor) -> bool {
        match *self {
            PageState::HandingOff { to: peer, .. }
            | PageState::Reclaiming { from: peer, .. }
            | PageState::Sharing { peer }
            | PageState::Unsharing { peer } => who == Accessor::Host || who == Accessor::Peer(peer),
            _ => self.accessible_by(who),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PageState::HandingOff { .. }
                | PageState::Reclaiming { .. }
                | PageState::Sharing { .. }
                | PageState::Unsharing { .. }
        )
    }
}

/// A maximal run of pages in one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub range: MemRange,
    pub state: PageState,
}

/// Why a query or transition was refused. A refused call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnershipError {
    /// Empty, inverted or not 4 KiB aligned.
    BadRange(MemRange),
    /// Some page of the range is not tracked (the first such address).
    Untracked { addr: u64 },
    /// `add` of a range overlapping tracked memory.
    AlreadyTracked(MemRange),
    /// The range holds pages in more than one state.
    Mixed,
    /// A page is not in the expected state (the first offending extent's state).
    UnexpectedState { expected: PageState, found: PageState },
}

impl fmt::Display for OwnershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnershipError::BadRange(r) => write!(f, "range {r:?} is empty or not page aligned"),
            OwnershipError::Untracked { addr } => write!(f, "{addr:#x} is not tracked memory"),
            OwnershipError::AlreadyTracked(r) => write!(f, "{r:?} overlaps tracked memory"),
            OwnershipError::Mixed => write!(f, "range holds pages in different states"),
            OwnershipError::UnexpectedState { expected, found } => {
                write!(f, "expected {expected:?}, found {found:?}")
            }
        }
    }
}

/// A broken tracker invariant (reported by [`OwnershipTracker::check_invariants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantViolation {
    /// An extent is empty or not page aligned.
    BadExtent(Extent),
    /// Extents out of order or overlapping.
    Unsorted { left: MemRange, right: MemRange },
    /// Two touching extents with the same state were not merged.
    Unmerged { left: MemRange, right: MemRange },
}

/// The ownership map. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct OwnershipTracker {
    extents: Vec<Extent>,
    /// Bumped by every change of `extents` (all of them go through [`Self::extents_mut`]), so
    /// an answer derived from the map under one hold of its lock can be reused under a later
    /// one while the generation is unchanged (`mm::host_memory::RememberedRange`).
    generation: u64,
}

/// Two trackers are equal when they map the same extents, whatever their generations.
impl PartialEq for OwnershipTracker {
    fn eq(&self, other: &Self) -> bool {
        self.extents == other.extents
    }
}

impl Eq for OwnershipTracker {}

fn check_range(range: MemRange) -> Result<(), OwnershipError> {
    if range.is_empty() || !range.is_page_aligned() {
        return Err(OwnershipError::BadRange(range));
    }
    Ok(())
}

impl OwnershipTracker {
    /// Tracks nothing yet.
    pub const fn new() -> Self {
        Self { extents: Vec::new(), generation: 0 }
    }

    /// Changes with every change of the map (never repeats: 64 bits do not wrap).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bumps the generation: for a change of what the map's answers mean to its users that is
    /// not in the map itself (the ranges host memory excludes).
    pub fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// The extents for a change: the only way to write them, so no change can leave the
    /// generation as it was.
    fn extents_mut(&mut self) -> &mut Vec<Extent> {
        self.bump_generation();
        &mut self.extents
    }

    /// Starts tracking `range` in `state`. Refused if the range is not page aligned or overlaps
    /// memory already tracked.
    pub fn add(&mut self, range: MemRange, state: PageState) -> Result<(), OwnershipError> {
        check_range(range)?;
        let at = self.extents.partition_point(|e| e.range.end <= range.start);
        if self.extents.get(at).is_some_and(|e| e.range.overlaps(&range)) {
            return Err(OwnershipError::AlreadyTracked(range));
        }
        self.extents_mut().insert(at, Extent { range, state });
        self.merge();
        Ok(())
    }

    /// Index range `[first, last)` of the extents covering `range` entirely and contiguously.
    fn covering(&self, range: MemRange) -> Result<(usize, usize), OwnershipError> {
        check_range(range)?;
        let first = self.extents.partition_point(|e| e.range.end <= range.start);
        let mut cursor = range.start;
        let mut i = first;
        while cursor < range.end {
            match self.extents.get(i) {
                Some(e) if e.range.start <= cursor => cursor = e.range.end,
                _ => return Err(OwnershipError::Untracked { addr: cursor }),
            }
            i += 1;
        }
        Ok((first, i))
    }

    /// The state of every page of `range`, if they all share one.
    pub fn state_of(&self, range: MemRange) -> Result<PageState, OwnershipError> {
        let (first, last) = self.covering(range)?;
        // Extents are merged, so more than one covering extent means more than one state.
        match &self.extents[first..last] {
            [only] => Ok(only.state),
            _ => Err(OwnershipError::Mixed),
        }
    }

    /// Moves every page of `range` from `from` to `to`. Refused, with nothing changed, if any
    /// page is untracked or not in `from`.
    pub fn transition(
        &mut self,
        range: MemRange,
        from: PageState,
        to: PageState,
    ) -> Result<(), OwnershipError> {
        let (first, last) = self.covering(range)?;
        let covering = &self.extents[first..last];
        if let Some(bad) = covering.iter().find(|e| e.state != from) {
            return Err(OwnershipError::UnexpectedState { expected: from, found: bad.state });
        }
        let mut replacement: Vec<Extent> = Vec::with_capacity(3);
        if let Some(head) = covering.first().filter(|e| e.range.start < range.start) {
            replacement
                .push(Extent { range: MemRange::new(head.range.start, range.start), state: from });
        }
        replacement.push(Extent { range, state: to });
        if let Some(tail) = covering.last().filter(|e| e.range.end > range.end) {
            replacement
                .push(Extent { range: MemRange::new(range.end, tail.range.end), state: from });
        }
        self.extents_mut().splice(first..last, replacement);
        self.merge();
        Ok(())
    }

    fn merge(&mut self) {
        self.extents_mut().dedup_by(|next, prev| {
            if prev.range.end == next.range.start && prev.state == next.state {
                prev.range.end = next.range.end;
                true
            } else {
                false
            }
        });
    }

    /// All extents in address order (for deriving page tables).
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The extents intersecting `range`, clipped to it, in address order.
    pub fn extents_in(&self, range: MemRange) -> impl Iterator<Item = Extent> + '_ {
        let first = self.extents.partition_point(|e| e.range.end <= range.start);
        self.extents[first..]
            .iter()
            .take_while(move |e| e.range.start < range.end)
            .filter_map(move |e| e.range.intersection(&range).map(|r| Extent { range: r, ..*e }))
    }

    /// G1's oracle for tests and fuzzing: the leaves of `who`'s stage-2 (`mappings`) are
    /// identity-mapped and cover only memory tracked in a state whose accessor is `who`, and
    /// they cover all of it (no page lost, none mapped twice).
    #[cfg(any(test, feature = "fakes"))]
    pub fn check_mapped_exactly(
        &self,
        who: Accessor,
        mappings: &[super::pgtable::Mapping],
    ) -> Result<(), alloc::string::String> {
        use alloc::format;
        let mut mapped = 0;
        for m in mappings {
            let r = MemRange::new(m.va, m.va + m.size);
            if m.pa != m.va {
                return Err(format!("{who:?}: {r} not identity"));
            }
            let mut covered = 0;
            for e in self.extents_in(r) {
                if !e.state.accessible_by(who) {
                    return Err(format!("{who:?} maps {} in state {:?}", e.range, e.state));
                }
                covered += e.range.size();
            }
            if covered != m.size {
                return Err(format!("{who:?} maps untracked memory in {r}"));
            }
            mapped += m.size;
        }
        let owed: u64 = self
            .extents
            .iter()
            .filter(|e| e.state.accessible_by(who))
            .map(|e| e.range.size())
            .sum();
        if owed != mapped {
            return Err(format!("{who:?} maps {mapped:#x} bytes, owed {owed:#x}"));
        }
        Ok(())
    }

    /// Bytes tracked (constant across transitions).
    pub fn tracked_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.range.size()).sum()
    }

    /// Sorted, disjoint, merged, page-aligned non-empty extents.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        for e in &self.extents {
            if e.range.is_empty() || !e.range.is_page_aligned() {
                return Err(InvariantViolation::BadExtent(*e));
            }
        }
        for pair in self.extents.windows(2) {
            let (l, r) = (pair[0], pair[1]);
            if l.range.end > r.range.start {
                return Err(InvariantViolation::Unsorted { left: l.range, right: r.range });
            }
            if l.range.end == r.range.start && l.state == r.state {
                return Err(InvariantViolation::Unmerged { left: l.range, right: r.range });
            }
        }
        Ok(())
    }

    /// Pages tracked in `state`.
    pub fn pages_in(&self, state: PageState) -> u64 {
        self.extents.iter().filter(|e| e.state == state).map(|e| e.range.size() / PAGE_SIZE).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_the_map_bumps_the_generation() {
        let mut t = OwnershipTracker::new();
        let mut seen = alloc::vec![t.generation()];
        let mut changed = |t: &OwnershipTracker| {
            assert!(!seen.contains(&t.generation()), "generation {} repeated", t.generation());
            seen.push(t.generation());
        };
        let ram = MemRange::new(0x4000_0000, 0x4010_0000);
        t.add(ram, PageState::Host).unwrap();
        changed(&t);
        let page = MemRange::new(0x4000_1000, 0x4000_2000);
        let donated = PageState::Donated { peer: PeerId::MODEM, released: false };
        t.transition(page, PageState::Host, donated).unwrap();
        changed(&t);
        t.transition(page, donated, PageState::Host).unwrap();
        changed(&t);
        assert_eq!(
            t,
            {
                let mut u = OwnershipTracker::new();
                u.add(ram, PageState::Host).unwrap();
                u
            },
            "equal maps compare equal whatever their generations"
        );
        // Queries change nothing.
        let g = t.generation();
        let _ = t.state_of(page);
        let _ = t.extents_in(ram).count();
        assert_eq!(t.generation(), g);
    }

    const MODEM: PeerId = PeerId::MODEM;

    fn r(start: u64, end: u64) -> MemRange {
        MemRange::new(start, end)
    }

    fn tracker() -> OwnershipTracker {
        let mut t = OwnershipTracker::new();
        t.add(r(0x4000_0000, 0x4020_0000), PageState::Warden).unwrap();
        t.add(r(0x4020_0000, 0x4100_0000), PageState::Host).unwrap();
        t.add(r(0x5000_0000, 0x5000_4000), PageState::Host).unwrap();
        t
    }

    #[test]
    fn add_refuses_overlap_and_bad_ranges() {
        let mut t = tracker();
        let before = t.clone();
        assert_eq!(
            t.add(r(0x40ff_f000, 0x4100_1000), PageState::Host),
            Err(OwnershipError::AlreadyTracked(r(0x40ff_f000, 0x4100_1000)))
        );
        assert!(matches!(
            t.add(r(0x6000_0000, 0x6000_0800), PageState::Host),
            Err(OwnershipError::BadRange(_))
        ));
        assert!(matches!(
            t.add(r(0x6000_0000, 0x6000_0000), PageState::Host),
            Err(OwnershipError::BadRange(_))
        ));
        assert_eq!(t, before);
        // Touching an existing Host extent merges.
        t.add(r(0x4100_0000, 0x4100_1000), PageState::Host).unwrap();
        assert_eq!(t.extents().len(), 3);
        assert_eq!(t.state_of(r(0x4020_0000, 0x4100_1000)), Ok(PageState::Host));
        t.check_invariants().unwrap();
    }

    #[test]
    fn transition_splits_merges_and_refuses_atomically() {
        let mut t = tracker();
        let lent = PageState::Lent { peer: MODEM, released: false };
        let piece = r(0x4030_0000, 0x4031_0000);
        t.transition(piece, PageState::Host, lent).unwrap();
        assert_eq!(t.extents().len(), 5);
        assert_eq!(t.state_of(piece), Ok(lent));
        assert_eq!(t.state_of(r(0x4020_0000, 0x4031_0000)), Err(OwnershipError::Mixed));
        t.check_invariants().unwrap();

        // Any page in the wrong state refuses the whole transition.
        let before = t.clone();
        assert_eq!(
            t.transition(r(0x402f_f000, 0x4030_1000), PageState::Host, PageState::Warden),
            Err(OwnershipError::UnexpectedState { expected: PageState::Host, found: lent })
        );
        assert_eq!(
            t.transition(r(0x40ff_f000, 0x4100_1000), PageState::Host, PageState::Warden),
            Err(OwnershipError::Untracked { addr: 0x4100_0000 })
        );
        assert_eq!(
            t.transition(r(0x1000, 0x2000), PageState::Host, PageState::Warden),
            Err(OwnershipError::Untracked { addr: 0x1000 })
        );
        assert_eq!(t.state_of(r(0x1000, 0x2000)), Err(OwnershipError::Untracked { addr: 0x1000 }));
        assert_eq!(t, before);

        // Giving it back merges to the original picture.
        t.transition(piece, lent, PageState::Host).unwrap();
        assert_eq!(t, tracker());
        // A transition at an extent's edge, and one covering several extents.
        t.transition(r(0x4020_0000, 0x4020_1000), PageState::Host, lent).unwrap();
        t.transition(r(0x40ff_f000, 0x4100_0000), PageState::Host, lent).unwrap();
        assert_eq!(t.extents_in(r(0x401f_f000, 0x4020_2000)).count(), 3);
        assert_eq!(t.pages_in(lent), 2);
        assert_eq!(t.tracked_bytes(), tracker().tracked_bytes());
        t.check_invariants().unwrap();
    }

    #[test]
    fn owner_and_accessor_follow_ffa() {
        let donated = PageState::Donated { peer: MODEM, released: false };
        let lent = PageState::Lent { peer: MODEM, released: true };
        assert_eq!(donated.owner(), Owner::Peer(MODEM));
        assert_eq!(lent.owner(), Owner::Host);
        for who in [Accessor::Host, Accessor::Peer(MODEM)] {
            assert!(!lent.accessible_by(who), "released: nobody's");
            assert!(!PageState::Warden.accessible_by(who));
        }
        assert!(donated.accessible_by(Accessor::Peer(MODEM)));
        assert!(!donated.accessible_by(Accessor::Host));
        let back = PageState::Reclaiming { from: MODEM, kind: TransferKind::Lend };
        assert!(back.may_be_mapped_by(Accessor::Host));
        assert!(back.may_be_mapped_by(Accessor::Peer(MODEM)), "assign_mem back: peer unmaps first");
        assert!(!back.may_be_mapped_by(Accessor::Peer(PeerId::DSP)));
        let shared = PageState::Shared { peer: MODEM };
        assert_eq!(shared.owner(), Owner::Host);
        assert!(
            shared.accessible_by(Accessor::Host) && shared.accessible_by(Accessor::Peer(MODEM))
        );
        assert!(!shared.accessible_by(Accessor::Peer(PeerId::DSP)) && !shared.is_transient());
        for moving in [PageState::Sharing { peer: MODEM }, PageState::Unsharing { peer: MODEM }] {
            assert!(moving.is_transient() && !moving.accessible_by(Accessor::Host));
            assert!(moving.may_be_mapped_by(Accessor::Host));
            assert!(moving.may_be_mapped_by(Accessor::Peer(MODEM)));
            assert!(!moving.may_be_mapped_by(Accessor::Peer(PeerId::DSP)));
        }
        let moving = PageState::HandingOff { to: MODEM, kind: TransferKind::Donate };
        assert!(moving.is_transient() && moving.may_be_mapped_by(Accessor::Host));
        assert!(!moving.may_be_mapped_by(Accessor::Peer(PeerId::DSP)));
        assert!(!donated.may_be_mapped_by(Accessor::Host));
    }

    #[test]
    fn invariant_checker_catches_corruption() {
        let mut t = tracker();
        t.extents.swap(0, 1);
        assert!(matches!(t.check_invariants(), Err(InvariantViolation::Unsorted { .. })));
        let mut t = tracker();
        t.extents.insert(2, Extent { range: r(0x4100_0000, 0x4100_1000), state: PageState::Host });
        assert!(matches!(t.check_invariants(), Err(InvariantViolation::Unmerged { .. })));
        let mut t = tracker();
        t.extents[0].range.end += 1;
        assert!(matches!(t.check_invariants(), Err(InvariantViolation::BadExtent(_))));
    }
}
