//! Which host memory warden itself may touch: read a host queue or table, write the host's
//! event queue, or accept as a table address the host gives a device that warden lets DMA
//! (the GIC's ITS and redistributor tables). One predicate, used by every such path.
//!
//! A range qualifies when all of these hold:
//! - every page of it is tracked as the host's ([`PageState::Host`]) by the ownership
//!   tracker, which excludes warden's own region and anything handed to a peer or in flight;
//! - it overlaps no carveout, whatever its state: only carveout pages ever change owner, so a
//!   range that passes can never be donated or lent while warden or a device uses it (this is
//!   what "pinned against DONATE/LEND" means here; nothing else needs to be recorded);
//! - it overlaps no `no-map` reserved region (firmware, TrustZone, other masters' memory):
//!   warden never maps those at EL2, so reading one would fault, and on hardware even a
//!   speculative read can trip a protection unit.
//!
//! warden's own EL2 stage-1 maps exactly such ranges of RAM (plus its own region and device
//! frames), see [`super::el2`]; carveouts appear there only for warden's own clean/zero step.
//!
//! After a positive check on a host-supplied address, pass the address through
//! [`crate::arch::select_nospec`] before using it, so that a mispredicted check cannot lead a
//! speculative access to the address (a Spectre-v1 gadget).

use super::ownership::{OwnershipTracker, PageState};
use super::range::MemRange;

/// Whether warden may touch `range` as host memory (see the module documentation). `excluded`
/// lists every carveout and every `no-map` reserved region (any order). An empty range, or one
/// whose page-aligned cover wraps, is refused.
pub fn warden_may_touch(
    tracker: &OwnershipTracker,
    excluded: &[MemRange],
    range: MemRange,
) -> bool {
    let Some(pages) = range.page_aligned_outward() else { return false };
    !range.is_empty()
        && range.end >= range.start
        && !excluded.iter().any(|x| x.overlaps(&pages))
        && tracker.state_of(pages) == Ok(PageState::Host)
}

/// The last range one hold of the tracker lock allowed ([`warden_may_touch`]), so that the
/// ranges inside it need no second tracker walk (issue 16: the command queue's consumer checks
/// the whole queue once, then reads each slot and writes a `CMD_SYNC`'s MSI word, which Linux
/// points at the sync's own slot, inside it).
///
/// Sound because the predicate is monotone and stable under the lock: a non-empty range inside
/// an allowed one has a page cover inside the allowed range's cover, so it too is all host
/// pages of one extent and overlaps no excluded region; and no page changes state while the
/// tracker lock is held (every transition takes it; the excluded regions never change). The
/// owner of an `AllowedRange` must therefore not outlive that hold of the lock: in
/// `boot::vsmmu` it lives in the per-trap `TrackedHostMemory`, built after the lock is taken and
/// dropped before it is released. To keep one beyond that hold, wrap it in a
/// [`RememberedRange`], which is forgotten at the tracker's next change: a queue donated between
/// two `CMDQ_PROD` writes is refused at the second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowedRange {
    last: Option<MemRange>,
}

impl AllowedRange {
    /// Whether `range` is allowed: `true` at once if it lies inside the last range `check`
    /// allowed, else `check(range)`, remembered when it allows.
    pub fn allows(&mut self, range: MemRange, check: impl FnOnce(MemRange) -> bool) -> bool {
        if !range.is_empty() && self.last.is_some_and(|last| last.contains_range(&range)) {
            return true;
        }
        let allowed = check(range);
        if allowed {
            self.last = Some(range);
        }
        allowed
    }
}

/// An [`AllowedRange`] kept from one hold of the tracker lock to the next (issue 16: the
/// command queue checked once, not at every `CMDQ_PROD` write), valid only while the tracker's
/// generation is the one it was allowed under. Every change of the tracker's map bumps the
/// generation (`OwnershipTracker::extents_mut`; and a change of the excluded regions, which
/// happens only at boot, bumps it too), so after a DONATE, LEND, RELEASE, RECLAIM, share, SCM
/// assign or any other transition (even one that is later rolled back) the remembered range is
/// forgotten and the next check walks the tracker again. Read and written only under the
/// tracker lock, so the generation it is compared with cannot change during the hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RememberedRange {
    generation: u64,
    allowed: AllowedRange,
}

impl RememberedRange {
    /// What was remembered, if the tracker is still at the generation it was allowed under;
    /// else nothing.
    pub fn recall(&self, generation: u64) -> AllowedRange {
        if self.generation == generation { self.allowed } else { AllowedRange::default() }
    }

    /// Remembers what this hold of the lock, at `generation`, allowed.
    pub fn remember(&mut self, generation: u64, allowed: AllowedRange) {
        *self = Self { generation, allowed };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::ownership::PeerId;

    const RAM: MemRange = MemRange::new(0x4000_0000, 0x8000_0000);
    const WARDEN: MemRange = MemRange::new(0x4020_0000, 0x4040_0000);
    const CARVEOUT: MemRange = MemRange::new(0x7c00_0000, 0x7d00_0000);
    const FIRMWARE: MemRange = MemRange::new(0x7f00_0000, 0x7f10_0000);

    fn tracker() -> OwnershipTracker {
        let mut t = OwnershipTracker::new();
        t.add(MemRange::new(RAM.start, WARDEN.start), PageState::Host).unwrap();
        t.add(WARDEN, PageState::Warden).unwrap();
        t.add(MemRange::new(WARDEN.end, RAM.end), PageState::Host).unwrap();
        t
    }

    #[test]
    fn only_host_ram_outside_carveouts_and_no_map_regions() {
        let mut t = tracker();
        let excluded = [FIRMWARE, CARVEOUT];
        let ok = |t: &OwnershipTracker, start: u64, size: u64| {
            warden_may_touch(t, &excluded, MemRange::from_base_size(start, size).unwrap())
        };
        assert!(ok(&t, 0x4100_0010, 0x40), "host RAM, unaligned inside a page");
        assert!(ok(&t, WARDEN.end, 0x1000));
        assert!(!ok(&t, WARDEN.start - 8, 16), "touches warden");
        assert!(!ok(&t, WARDEN.start + 0x1000, 8), "warden");
        assert!(!ok(&t, CARVEOUT.start + 0x1000, 8), "a carveout still the host's");
        assert!(!ok(&t, CARVEOUT.start - 8, 16), "straddles a carveout's edge");
        assert!(!ok(&t, FIRMWARE.start + 0x10, 8), "no-map region, tracked as host RAM");
        assert!(!ok(&t, RAM.end - 8, 16), "beyond RAM");
        assert!(!ok(&t, 0x1000, 8), "not RAM");
        assert!(!ok(&t, 0x4100_0000, 0), "empty");
        let wraps = MemRange::new(u64::MAX - 15, u64::MAX - 7);
        assert!(!warden_may_touch(&t, &excluded, wraps), "page cover wraps");
        // A page of RAM outside every carveout that is somehow not the host's.
        let page = MemRange::new(0x4100_0000, 0x4100_1000);
        t.transition(
            page,
            PageState::Host,
            PageState::Donated { peer: PeerId::MODEM, released: false },
        )
        .unwrap();
        assert!(!ok(&t, 0x4100_0ff8, 16));
    }

    #[test]
    fn ranges_inside_an_allowed_range_need_no_second_walk() {
        let t = tracker();
        let excluded = [FIRMWARE, CARVEOUT];
        let walks = core::cell::Cell::new(0);
        let walk = |r: MemRange| {
            walks.set(walks.get() + 1);
            warden_may_touch(&t, &excluded, r)
        };
        let mut allowed = AllowedRange::default();
        // A command queue of 256 slots, then its slots and an MSI word in one of them.
        let queue = MemRange::from_base_size(0x4100_0000, 256 * 16).unwrap();
        assert!(allowed.allows(queue, walk));
        assert_eq!(walks.get(), 1);
        for slot in 0..256 {
            let r = MemRange::from_base_size(queue.start + slot * 16, 16).unwrap();
            assert!(allowed.allows(r, walk));
        }
        assert!(allowed.allows(MemRange::from_base_size(queue.start + 0x40, 4).unwrap(), walk));
        assert_eq!(walks.get(), 1, "one walk for the queue, none for what is inside it");
        // Past the queue, or an empty range: walked (and refused ones are not remembered).
        assert!(allowed.allows(MemRange::from_base_size(queue.end - 8, 16).unwrap(), walk));
        assert_eq!(walks.get(), 2);
        assert!(!allowed.allows(MemRange::new(queue.start + 8, queue.start + 8), walk));
        assert_eq!(walks.get(), 3);
        let warden_word = MemRange::from_base_size(WARDEN.start, 8).unwrap();
        assert!(!allowed.allows(warden_word, walk));
        assert!(!allowed.allows(warden_word, walk));
        assert_eq!(walks.get(), 5);
    }

    #[test]
    fn a_new_hold_of_the_lock_walks_again() {
        // Trap 1 checks the queue; between the traps the range changes owner; trap 2 (a new
        // `AllowedRange`, as every trap builds) must see it.
        let mut t = tracker();
        let excluded = [FIRMWARE, CARVEOUT];
        let queue = MemRange::new(0x4100_0000, 0x4100_1000);
        let mut trap1 = AllowedRange::default();
        assert!(trap1.allows(queue, |r| warden_may_touch(&t, &excluded, r)));
        t.transition(
            queue,
            PageState::Host,
            PageState::Donated { peer: PeerId::MODEM, released: false },
        )
        .unwrap();
        let mut trap2 = AllowedRange::default();
        assert!(!trap2.allows(queue, |r| warden_may_touch(&t, &excluded, r)));
        let slot = MemRange::from_base_size(queue.start, 16).unwrap();
        assert!(!trap2.allows(slot, |r| warden_may_touch(&t, &excluded, r)));
    }

    #[test]
    fn a_remembered_range_is_forgotten_at_any_change_of_the_tracker() {
        let mut t = tracker();
        let excluded = [FIRMWARE, CARVEOUT];
        let queue = MemRange::new(0x4100_0000, 0x4100_1000);
        let slot = MemRange::from_base_size(queue.start + 0x20, 16).unwrap();
        let walks = core::cell::Cell::new(0);
        let check = |t: &OwnershipTracker, r: MemRange| {
            walks.set(walks.get() + 1);
            warden_may_touch(t, &excluded, r)
        };
        let mut kept = RememberedRange::default();
        // Trap 1 walks for the queue and remembers it.
        let mut trap = kept.recall(t.generation());
        assert!(trap.allows(queue, |r| check(&t, r)));
        kept.remember(t.generation(), trap);
        // Trap 2, nothing changed: no walk at all.
        let mut trap = kept.recall(t.generation());
        assert!(trap.allows(queue, |r| check(&t, r)));
        assert!(trap.allows(slot, |r| check(&t, r)));
        assert_eq!(walks.get(), 1);
        kept.remember(t.generation(), trap);
        // A change elsewhere (and back) still forgets it: a walk, which allows again.
        let elsewhere = MemRange::new(0x4200_0000, 0x4200_1000);
        let donated = PageState::Donated { peer: PeerId::MODEM, released: false };
        t.transition(elsewhere, PageState::Host, donated).unwrap();
        t.transition(elsewhere, donated, PageState::Host).unwrap();
        let mut trap = kept.recall(t.generation());
        assert!(trap.allows(queue, |r| check(&t, r)));
        assert_eq!(walks.get(), 2);
        kept.remember(t.generation(), trap);
        // The queue donated between two traps: refused at the next, slot and all.
        t.transition(queue, PageState::Host, donated).unwrap();
        let mut trap = kept.recall(t.generation());
        assert!(!trap.allows(queue, |r| check(&t, r)));
        assert!(!trap.allows(slot, |r| check(&t, r)));
        // A boot-time change of the excluded regions forgets it too.
        let mut t = tracker();
        let mut trap = AllowedRange::default();
        assert!(trap.allows(queue, |r| warden_may_touch(&t, &excluded, r)));
        kept.remember(t.generation(), trap);
        t.bump_generation();
        assert_eq!(kept.recall(t.generation()), AllowedRange::default());
    }
}
