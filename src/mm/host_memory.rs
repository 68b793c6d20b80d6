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
}
