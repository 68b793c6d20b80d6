//! warden's own memory, sized from measured need with stated margins that are checked at boot
//! (issue 16: warden in a board's small hypervisor region).
//!
//! The parts (see `docs/bench.md`, *Footprint*): code and read-only data, data and BSS (the
//! EL2 stacks are most of it), and the pool: a heap carved from its front and page-table frames
//! for the rest. What the boot itself takes is known once it is done; what the run time may
//! still take is bounded here, and the boot stops with a fatal error saying by how much the
//! region is too small rather than leaving a handoff to fail later for lack of frames. The heap's
//! size and what must be left of it after the boot are per board, with the linker's pool
//! minimum ([`super::link_layout`]).

use super::link_layout::LinkLayout;
use super::range::{MemRange, PAGE_SIZE};
use crate::handoff::reserve::{map_pages_bound, transfer_bound};

/// The deepest walk warden builds (a 48-bit IPA or VA space starts at level 0): the bounds
/// below hold for every table layout the boot can choose.
const DEEPEST_START_LEVEL: u8 = 0;

/// Table frames a stage-2 needs to map `range` page by page when nothing of it is mapped yet:
/// one last-level table per 2 MiB the range touches, one per 1 GiB above that, one per 512 GiB
/// above that (an upper bound for 3- and 4-level tables; the root exists already).
pub fn page_table_frames_for(range: MemRange) -> usize {
    map_pages_bound(range, DEEPEST_START_LEVEL)
}

/// Tables the host's stage 2 can still need for `range` of a carveout, which it maps since
/// boot: a last-level table per 2 MiB (a block split on demand) and a level-2 table per 1 GiB
/// (a 1 GiB block wholly inside). The level-1 table above exists already: the boot mapped the
/// range, and the tables a root entry points to are never freed.
pub fn host_split_frames(range: MemRange) -> usize {
    if range.is_empty() {
        return 0;
    }
    let spans = |shift: u32| ((range.end - 1) >> shift) - (range.start >> shift) + 1;
    (spans(21) + spans(30)) as usize
}

/// The most table frames the handoffs of `carveout` can leave in the stage 2s: the host's and
/// the peer's each split page by page where ownership is fragmented (a host handing over every
/// other page, or one page of every 2 MiB: both stage 2s then need a last-level table below
/// every 2 MiB block): [`host_split_frames`] and [`page_table_frames_for`] (the peer's stage 2
/// starts empty). Whole-block transfers take far less (a 256 MiB carveout handed over whole: a
/// few tables), but a host can always fragment it, so this is what must stay free.
pub fn carveout_table_frames(carveout: MemRange) -> usize {
    host_split_frames(carveout) + page_table_frames_for(carveout)
}

/// The reserve a transfer within `carveout` takes up front ([`transfer_bound`]: its splits, its
/// peer map and warden's clean window, and its rollback's).
pub fn carveout_transfer_frames(carveout: MemRange) -> usize {
    transfer_bound(carveout, DEEPEST_START_LEVEL, DEEPEST_START_LEVEL)
}

/// [`carveout_table_frames`] plus one transfer in flight ([`carveout_transfer_frames`]): the most
/// frames the handoffs of `carveout` can hold at once, spares aside.
pub fn carveout_frames(carveout: MemRange) -> usize {
    carveout_table_frames(carveout) + carveout_transfer_frames(carveout)
}

/// Frames to keep free after boot, for `layout`'s board: every carveout handed over at once, as
/// fragmented as it can be ([`carveout_table_frames`]), the reserves of the transfers in flight
/// and the spares they keep between them, and `layout.runtime_frames` (the shadow structures).
///
/// Transfers within one carveout are serialized (its lock), so each carveout has at most one in
/// flight, and a transfer takes its reserve from the spares first: with a single carveout, the
/// spares and that transfer's reserve together never exceed the larger of the two (`s` spares,
/// a reserve of `t`: `min(s, t)` from the spares, the rest from the pool, `max(s, t)` in all;
/// at its end at most `spare_frames` are kept). With several, transfers in flight on other
/// carveouts may hold their reserves while one refills the spares: the sum.
pub fn runtime_frame_reserve(
    layout: &LinkLayout,
    carveouts: impl IntoIterator<Item = MemRange>,
) -> usize {
    let (mut count, mut tables, mut in_flight) = (0, 0, 0);
    for carveout in carveouts {
        count += 1;
        tables += carveout_table_frames(carveout);
        in_flight += carveout_transfer_frames(carveout);
    }
    let reserves_and_spares = if count <= 1 {
        in_flight.max(layout.spare_frames)
    } else {
        in_flight + layout.spare_frames
    };
    tables + reserves_and_spares + layout.runtime_frames
}

/// Tables the host stage 2's boot split of one carveout can take: the blocks straddling each
/// of its two edges, one table per level below the root.
pub const EDGE_SPLIT_FRAMES: usize = 2 * 3;

/// The fewest frames a pool must have for `carveouts` before anything else: the host stage 2's
/// split at every carveout's edges ([`EDGE_SPLIT_FRAMES`]) and the run-time reserve
/// ([`runtime_frame_reserve`]). (The rest of the boot's tables, a few dozen, are checked after
/// the boot with [`PoolAfterBoot`].)
pub fn least_frames_for(
    layout: &LinkLayout,
    carveouts: impl IntoIterator<Item = MemRange>,
) -> usize {
    let mut edges = 0;
    let reserve = runtime_frame_reserve(
        layout,
        carveouts.into_iter().inspect(|_| edges += EDGE_SPLIT_FRAMES),
    );
    reserve + edges
}

/// `Err(units short)` when `capacity - used` is less than `margin`.
pub fn check_headroom(capacity: usize, used: usize, margin: usize) -> Result<(), usize> {
    let needed = used.saturating_add(margin);
    if needed > capacity { Err(needed - capacity) } else { Ok(()) }
}

/// What the pool has left after boot and what the run time needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolAfterBoot {
    pub frames_total: usize,
    pub frames_used: usize,
    pub frames_reserve: usize,
    pub heap_total: usize,
    pub heap_used: usize,
    pub heap_reserve: usize,
}

/// By how much the pool is too small, in bytes (frames and heap together: both come from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShortfall {
    pub frames: usize,
    pub heap: usize,
}

impl PoolShortfall {
    pub fn bytes(&self) -> u64 {
        self.frames as u64 * PAGE_SIZE + self.heap as u64
    }
}

impl PoolAfterBoot {
    /// `Err` with the shortfall when the frames or the heap left are below their reserve.
    pub fn check(&self) -> Result<(), PoolShortfall> {
        let frames = check_headroom(self.frames_total, self.frames_used, self.frames_reserve).err();
        let heap = check_headroom(self.heap_total, self.heap_used, self.heap_reserve).err();
        if frames.is_none() && heap.is_none() {
            return Ok(());
        }
        Err(PoolShortfall { frames: frames.unwrap_or(0), heap: heap.unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn tables_for_a_range() {
        assert_eq!(page_table_frames_for(MemRange::new(0, 0)), 0);
        // One page: one L3, one L2, one L1.
        assert_eq!(page_table_frames_for(MemRange::new(0x4000_0000, 0x4000_1000)), 3);
        // 256 MiB inside one GiB: 128 L3 + 1 + 1.
        let r = MemRange::new(0x5000_0000, 0x5000_0000 + 256 * MIB);
        assert_eq!(page_table_frames_for(r), 130);
        // Across a GiB boundary and not 2 MiB aligned: 2 MiB + 4 KiB touches two 2 MiB blocks
        // on either side of 0x8000_0000.
        let r = MemRange::new(0x7fff_f000, 0x8020_0000);
        assert_eq!(page_table_frames_for(r), 2 + 2 + 1);
    }

    #[test]
    fn reserve_covers_every_carveout_fragmented_and_in_flight() {
        let two = MemRange::new(0x5000_0000, 0x5020_0000);
        let four = MemRange::new(0x6000_0000, 0x6040_0000);
        // Fragmented: a last-level table per 2 MiB in both stage 2s, plus a transfer's reserve.
        assert_eq!(host_split_frames(two), 1 + 1);
        assert_eq!(host_split_frames(MemRange::new(0, 0)), 0);
        assert_eq!(carveout_frames(two), 2 + 3 + transfer_bound(two, 0, 0));
        assert_eq!(carveout_frames(four), 3 + 4 + transfer_bound(four, 0, 0));
        let qemu = crate::mm::link_layout::link_layout("qemu-virt").unwrap();
        let fixed = qemu.spare_frames + qemu.runtime_frames;
        assert_eq!(
            runtime_frame_reserve(&qemu, [two, four]),
            carveout_frames(two) + carveout_frames(four) + fixed
        );
        assert_eq!(runtime_frame_reserve(&qemu, []), fixed);
        assert_eq!(
            least_frames_for(&qemu, [two, four]),
            runtime_frame_reserve(&qemu, [two, four]) + 2 * EDGE_SPLIT_FRAMES
        );
        // One carveout: its transfer's reserve comes out of the spares, so the larger of the
        // two is counted, not their sum.
        let one = LinkLayout { spare_frames: 23, runtime_frames: 0, ..qemu };
        let tables = carveout_table_frames(two);
        assert_eq!(runtime_frame_reserve(&one, [two]), tables + 23.max(transfer_bound(two, 0, 0)));
        let many = LinkLayout { spare_frames: 64, ..one };
        assert_eq!(runtime_frame_reserve(&many, [two]), tables + 64);
        assert_eq!(
            runtime_frame_reserve(&many, [two, four]),
            carveout_frames(two) + carveout_frames(four) + 64
        );
        // The bench's 256 MiB carveout: a whole-carveout DONATE reserved 268 frames before
        // transfers went by blocks, which the reserve then counted as 194; now its worst case,
        // fragmented, is counted.
        let bench = MemRange::new(0x5000_0000, 0x6000_0000);
        assert_eq!(carveout_frames(bench), 129 + 130 + transfer_bound(bench, 0, 0));
    }

    #[test]
    fn one_transfer_frames_is_the_largest_transfer_bound() {
        use crate::mm::link_layout::ONE_TRANSFER_FRAMES;
        // Both edges straddle 2 MiB and 1 GiB boundaries, inside one 512 GiB region.
        let worst = MemRange::new(0x3fff_f000, 0x8020_1000);
        assert_eq!(transfer_bound(worst, 0, 0), ONE_TRANSFER_FRAMES);
        assert_eq!(carveout_transfer_frames(worst), ONE_TRANSFER_FRAMES);
    }

    #[test]
    fn headroom_says_how_much_is_missing() {
        assert_eq!(check_headroom(100, 60, 40), Ok(()));
        assert_eq!(check_headroom(100, 61, 40), Err(1));
        assert_eq!(check_headroom(100, 200, 40), Err(140));
        assert_eq!(check_headroom(0, usize::MAX, 1), Err(usize::MAX));
    }

    #[test]
    fn pool_check_sums_both_shortfalls() {
        let ok = PoolAfterBoot {
            frames_total: 512,
            frames_used: 200,
            frames_reserve: 312,
            heap_total: 256 * 1024,
            heap_used: 30 * 1024,
            heap_reserve: 64 * 1024,
        };
        assert_eq!(ok.check(), Ok(()));
        let short = PoolAfterBoot { frames_used: 210, heap_used: 200 * 1024, ..ok };
        let err = short.check().unwrap_err();
        assert_eq!(err, PoolShortfall { frames: 10, heap: 8 * 1024 });
        assert_eq!(err.bytes(), 10 * 4096 + 8 * 1024);
    }
}
