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

use super::range::{MemRange, PAGE_SIZE};

/// Frames the run time may allocate beyond the carveouts' peer tables: the virtual SMMU's and
/// the ITS's shadow structures, the EL2 windows a clean maps, a split block. The scenarios of
/// `cargo xtask test` (the Linux boots included) took at most 38 after boot, 20 of them the
/// two carveouts' peer tables (`footprint peak:` at power-down against `footprint:` at boot);
/// 64 is over three times the other 18.
pub const RUNTIME_SPARE_FRAMES: usize = 64;

/// Table frames a stage-2 needs to map `range` page by page when nothing of it is mapped yet:
/// one last-level table per 2 MiB the range touches, one per 1 GiB above that, one per 512 GiB
/// above that (an upper bound for 3- and 4-level tables; the root exists already).
pub fn page_table_frames_for(range: MemRange) -> usize {
    if range.is_empty() {
        return 0;
    }
    let spans = |shift: u32| ((range.end - 1) >> shift) - (range.start >> shift) + 1;
    (spans(21) + spans(30) + spans(39)) as usize
}

/// Frames to keep free after boot: every carveout handed to a peer at once (each peer stage-2
/// maps its carveouts page by page), plus [`RUNTIME_SPARE_FRAMES`].
pub fn runtime_frame_reserve(carveouts: impl IntoIterator<Item = MemRange>) -> usize {
    carveouts.into_iter().map(page_table_frames_for).sum::<usize>() + RUNTIME_SPARE_FRAMES
}

/// The fewest frames a pool must have for `carveouts` before anything else: the host stage-2
/// splits each to pages at boot and a peer's stage-2 maps each page by page when it is handed
/// over, so twice [`page_table_frames_for`] each, plus [`RUNTIME_SPARE_FRAMES`]. (The rest of
/// the boot's tables, a few dozen, are checked after the boot with [`PoolAfterBoot`].)
pub fn least_frames_for(carveouts: impl IntoIterator<Item = MemRange>) -> usize {
    carveouts.into_iter().map(|r| 2 * page_table_frames_for(r)).sum::<usize>()
        + RUNTIME_SPARE_FRAMES
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
    fn reserve_covers_every_carveout_and_the_spare() {
        let carveouts =
            [MemRange::new(0x5000_0000, 0x5020_0000), MemRange::new(0x6000_0000, 0x6040_0000)];
        assert_eq!(runtime_frame_reserve(carveouts), 3 + 4 + RUNTIME_SPARE_FRAMES);
        assert_eq!(runtime_frame_reserve([]), RUNTIME_SPARE_FRAMES);
        assert_eq!(least_frames_for(carveouts), 2 * (3 + 4) + RUNTIME_SPARE_FRAMES);
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
