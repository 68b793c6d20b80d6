//! Page-table frames reserved before a transfer starts, so that no table operation inside the
//! sequence (nor its rollback) can fail for lack of frames, and the shared allocator's lock is
//! held only to take and return the reserve.
//!
//! Frames freed by an edit of the host's stage-2 (through [`FrameReserve::shared_with_dma`])
//! are not handed out again until [`FrameReserve::dma_synced`]: host devices walk the same
//! tables through the SMMU, whose TLB and walk caches may still hold a freed table until the
//! transfer's SMMU invalidation and CMD_SYNC have completed; reusing the frame earlier (for a
//! peer's table, say) would let a device walk it. Frames whose sync never completed are never
//! handed out again (the reserve forgets them; the caller counts them).

use alloc::vec::Vec;

use crate::mm::{FrameAllocator, MemRange, PAGE_SIZE};

/// Levels below `start_level` a map or unmap may need a new table at.
fn entry_size(level: u8) -> u64 {
    1 << (12 + 9 * (3 - u32::from(level.min(3))))
}

/// Upper bound on new tables `PageTable::map` needs for the identity map of `range` in a table
/// whose walk starts at `start_level`: below levels where blocks exist (1 and 2) only the
/// entries at the two edges of the range can need a table; below level 0 every 512 GiB region
/// touched can.
pub fn map_bound(range: MemRange, start_level: u8) -> usize {
    if range.is_empty() {
        return 0;
    }
    (start_level..3)
        .map(|level| {
            let size = entry_size(level);
            let touched = ((range.end - 1) / size - range.start / size + 1) as usize;
            if level == 0 { touched } else { touched.min(2) }
        })
        .sum()
}

/// Upper bound on new tables `PageTable::map_pages` needs for the identity map of `range` in a
/// table whose walk starts at `start_level`: one table below every entry the range touches at
/// each level above the pages. Also the most tables a stage-2 can ever need for `range` when
/// handoffs fragment it page by page (`crate::mm::footprint`).
pub fn map_pages_bound(range: MemRange, start_level: u8) -> usize {
    if range.is_empty() {
        return 0;
    }
    (start_level..3)
        .map(|level| {
            let size = entry_size(level);
            ((range.end - 1) / size - range.start / size + 1) as usize
        })
        .sum()
}

/// Upper bound on new tables `PageTable::unmap` needs: splitting the 1 GiB and 2 MiB blocks at
/// each edge of the range.
pub const UNMAP_BOUND: usize = 4;

/// Frames a transfer of `range` reserves up front, stage-2 tables starting at `stage2_level`
/// and warden's EL2 stage-1 at `el2_level`: forward, one stage-2 unmap (the splits at its
/// edges) and one stage-2 map (blocks where whole: tables at the edges only), and the window
/// (the same; closing it needs no frame); a rollback at most one more unmap and map. Every
/// sequence (donate, lend, release, reclaim, share, unshare, take-back) stays within it.
pub fn transfer_bound(range: MemRange, stage2_level: u8, el2_level: u8) -> usize {
    if range.is_empty() {
        return 0;
    }
    2 * (UNMAP_BOUND + map_bound(range, stage2_level)) + map_bound(range, el2_level)
}

/// A stash of zeroed frames; frees go back into the stash (they came from the reserve or from
/// the tables this operation edits, which the shared allocator gave out earlier), those freed
/// through [`Self::shared_with_dma`] only once the DMA side has synced.
pub struct FrameReserve {
    frames: Vec<u64>,
    /// Freed from tables an SMMU walks too; reusable after [`Self::dma_synced`].
    awaiting_dma_sync: Vec<u64>,
}

impl FrameReserve {
    /// Takes `count` single frames from `alloc`; `None` (with nothing taken) if it has fewer.
    pub fn take<A: FrameAllocator + ?Sized>(alloc: &mut A, count: usize) -> Option<Self> {
        let mut frames = Vec::with_capacity(count);
        for _ in 0..count {
            match alloc.alloc_zeroed(1) {
                Some(pa) => frames.push(pa),
                None => {
                    for pa in frames {
                        alloc.free(pa, 1);
                    }
                    return None;
                }
            }
        }
        Some(Self { frames, awaiting_dma_sync: Vec::new() })
    }

    /// Gives every frame still held back to `alloc`.
    /// Like [`Self::take`], but first from `spares` (frames kept from earlier transfers: they
    /// are zeroed when handed out, so their content does not matter) and only the rest from
    /// `alloc`, which zeroes what it gives. On failure everything taken goes back.
    pub fn take_with_spares<A: FrameAllocator + ?Sized>(
        spares: &mut Vec<u64>,
        alloc: &mut A,
        count: usize,
    ) -> Option<Self> {
        let from_spares = count.min(spares.len());
        let mut frames = spares.split_off(spares.len() - from_spares);
        match Self::take(alloc, count - from_spares) {
            Some(mut rest) => {
                frames.append(&mut rest.frames);
                Some(Self { frames, awaiting_dma_sync: Vec::new() })
            }
            None => {
                spares.append(&mut frames);
                None
            }
        }
    }

    /// Keeps up to `cap` frames in `spares` for the next transfer and gives the rest back to
    /// `alloc`: in the steady state a transfer then costs no allocation and no zeroing of
    /// frames it does not use. Frames still awaiting a DMA sync are not given to anyone.
    pub fn release_keeping<A: FrameAllocator + ?Sized>(
        mut self,
        spares: &mut Vec<u64>,
        cap: usize,
        alloc: &mut A,
    ) {
        let keep = cap.saturating_sub(spares.len()).min(self.frames.len());
        let rest = self.frames.split_off(keep);
        spares.append(&mut self.frames);
        Self { frames: rest, awaiting_dma_sync: Vec::new() }.release(alloc);
    }

    /// Gives every reusable frame back to `alloc` (not those awaiting a DMA sync).
    pub fn release<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        for pa in self.frames {
            alloc.free(pa, 1);
        }
    }

    /// This reserve as the allocator for edits of a table that DMA walks too: it hands out
    /// frames as usual, but frames freed through it wait for [`Self::dma_synced`].
    pub fn shared_with_dma(&mut self) -> SharedWithDma<'_> {
        SharedWithDma(self)
    }

    /// The DMA side's invalidation covering every table edited so far has completed: frames
    /// freed from those tables may be reused.
    pub fn dma_synced(&mut self) {
        self.frames.append(&mut self.awaiting_dma_sync);
    }

    /// Frames freed from DMA-walked tables whose sync has not completed (yet).
    pub fn awaiting_dma_sync(&self) -> usize {
        self.awaiting_dma_sync.len()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

// SAFETY: every frame in the stash is a single frame obtained from a `FrameAllocator`
// (`take`) or returned by page-table code that got it from this reserve or, earlier, from the
// same shared allocator; either way it is owned by nobody else while stashed. Frames are zeroed
// before they are handed out again, and only single-frame requests are served.
unsafe impl FrameAllocator for FrameReserve {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        if pages != 1 {
            return None;
        }
        let pa = self.frames.pop()?;
        // SAFETY: `pa` is a whole frame owned by this reserve (see above), reachable at its
        // physical address per the allocator contract it came under; transfers run with
        // warden's MMU on, where its frames are Normal memory.
        unsafe { crate::arch::zero_normal_pages(pa, PAGE_SIZE) };
        Some(pa)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        if pages == 1 && pa.is_multiple_of(PAGE_SIZE) {
            self.frames.push(pa);
        }
    }
}

/// [`FrameReserve::shared_with_dma`].
pub struct SharedWithDma<'a>(&'a mut FrameReserve);

// SAFETY: hands out the reserve's own frames (see `FrameReserve`'s implementation); frees are
// only stashed, never handed out before `dma_synced`.
unsafe impl FrameAllocator for SharedWithDma<'_> {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        self.0.alloc_zeroed(pages)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        if pages == 1 && pa.is_multiple_of(PAGE_SIZE) {
            self.0.awaiting_dma_sync.push(pa);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::frame::test_support::HeapFrames;

    #[test]
    fn bounds() {
        let sz_2m = 2 << 20;
        assert_eq!(map_bound(MemRange::new(0, 0), 1), 0);
        // One page: one level-2 table and one level-3 table below a level-1 root.
        assert_eq!(map_bound(MemRange::new(0x4030_0000, 0x4030_1000), 1), 2);
        assert_eq!(map_bound(MemRange::new(0x4030_0000, 0x4030_1000), 0), 3);
        // Straddling 2 MiB and 1 GiB boundaries: two tables per level.
        assert_eq!(map_bound(MemRange::new((1 << 30) - sz_2m - 0x1000, (1 << 30) + 0x1000), 1), 4);
        // Pages only: one level-3 table per 2 MiB touched.
        let sixteen = MemRange::new(0x7c00_0000, 0x7d00_0000);
        assert_eq!(map_pages_bound(sixteen, 1), 1 + 8);
        assert_eq!(map_pages_bound(sixteen, 0), 1 + 1 + 8);
        assert_eq!(map_pages_bound(MemRange::new(0x4030_0000, 0x4030_1000), 1), 2);
        assert_eq!(map_pages_bound(MemRange::new(0, 0), 1), 0);
        // A transfer: the same few tables at any size (256 MiB, 2 MiB aligned, in one GiB).
        let big = MemRange::new(0x5000_0000, 0x6000_0000);
        assert_eq!(map_bound(big, 1), 1 + 2);
        assert_eq!(transfer_bound(big, 1, 0), 2 * (UNMAP_BOUND + 3) + 4);
        assert_eq!(transfer_bound(MemRange::new(0, 0), 1, 0), 0);
    }

    #[test]
    fn spares_are_used_first_and_kept_up_to_the_cap() {
        let mut frames = HeapFrames::new(8);
        let mut spares = Vec::new();
        let reserve = FrameReserve::take_with_spares(&mut spares, &mut frames, 3).unwrap();
        assert_eq!(frames.pool.allocated_pages(), 3);
        reserve.release_keeping(&mut spares, 2, &mut frames);
        assert_eq!((spares.len(), frames.pool.allocated_pages()), (2, 2));
        // Two from the spares, one new; a failure gives the spares back.
        let reserve = FrameReserve::take_with_spares(&mut spares, &mut frames, 3).unwrap();
        assert_eq!((spares.len(), frames.pool.allocated_pages()), (0, 3));
        reserve.release_keeping(&mut spares, 2, &mut frames);
        assert!(FrameReserve::take_with_spares(&mut spares, &mut frames, 9).is_none());
        assert_eq!((spares.len(), frames.pool.allocated_pages()), (2, 2));
        for pa in spares.drain(..) {
            frames.free(pa, 1);
        }
        assert_eq!(frames.pool.allocated_pages(), 0);
    }

    #[test]
    fn frames_freed_from_dma_walked_tables_wait_for_the_sync() {
        let mut frames = HeapFrames::new(4);
        let mut reserve = FrameReserve::take(&mut frames, 2).unwrap();
        let table = reserve.alloc_zeroed(1).unwrap();
        reserve.shared_with_dma().free(table, 1);
        assert_eq!(reserve.awaiting_dma_sync(), 1);
        // Only the other frame can be handed out, through either view.
        let other = reserve.shared_with_dma().alloc_zeroed(1).unwrap();
        assert_ne!(other, table);
        assert_eq!(reserve.alloc_zeroed(1), None);
        reserve.free(other, 1);
        reserve.dma_synced();
        assert_eq!(reserve.awaiting_dma_sync(), 0);
        assert_eq!(reserve.len(), 2);
        // Never synced: the frame is not given back to anyone.
        let table = reserve.alloc_zeroed(1).unwrap();
        reserve.shared_with_dma().free(table, 1);
        let mut spares = Vec::new();
        reserve.release_keeping(&mut spares, 0, &mut frames);
        assert!(spares.is_empty());
        assert_eq!(frames.pool.allocated_pages(), 1, "the unsynced frame stays out of the pool");
    }

    #[test]
    fn reserve_is_all_or_nothing_and_returns_everything() {
        let mut frames = HeapFrames::new(4);
        assert!(FrameReserve::take(&mut frames, 5).is_none());
        assert_eq!(frames.pool.allocated_pages(), 0);
        let mut reserve = FrameReserve::take(&mut frames, 3).unwrap();
        assert_eq!(frames.pool.allocated_pages(), 3);
        assert_eq!(reserve.alloc_zeroed(2), None);
        let pa = reserve.alloc_zeroed(1).unwrap();
        // SAFETY: `pa` is a live frame of the test pool, handed to this test.
        unsafe { core::ptr::write_volatile(pa as usize as *mut u64, 7) };
        reserve.free(pa, 1);
        let again = reserve.alloc_zeroed(1).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { core::ptr::read_volatile(again as usize as *const u64) }, 0);
        reserve.free(again, 1);
        assert_eq!(reserve.len(), 3);
        reserve.release(&mut frames);
        assert_eq!(frames.pool.allocated_pages(), 0);
    }
}
