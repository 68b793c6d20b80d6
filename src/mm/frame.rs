//! Physical frame allocation for page tables and other warden-owned structures.
//!
//! Frames are 4 KiB pages of memory that warden owns and reaches identity-mapped (VA == PA), so
//! a frame's physical address is also a pointer to it.

use super::range::{MemRange, PAGE_SIZE};

const _: () = assert!(usize::BITS == 64, "warden assumes 64-bit addresses fit in usize");

/// Hands out zero-filled, naturally aligned blocks of 4 KiB frames.
///
/// # Safety
/// Implementers guarantee that every address returned by `alloc_zeroed(pages)` starts a block
/// of `pages` frames that is aligned to `pages.next_power_of_two()` frames, zero-filled,
/// writable through its physical address (identity-mapped, or plain host memory in tests), and
/// used by nobody else until it is passed back to `free`. Page-table code writes descriptors
/// through these addresses relying on this contract.
pub unsafe trait FrameAllocator {
    /// A block of `pages` zeroed frames aligned to `pages.next_power_of_two()` frames; `None`
    /// when `pages` is 0 or no such block is left.
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64>;
    /// Returns a block obtained from `alloc_zeroed(pages)` with the same `pages`. Addresses that
    /// cannot come from this allocator (outside its range, misaligned) are ignored.
    fn free(&mut self, pa: u64, pages: usize);
}

/// Errors constructing an allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The range is empty, inverted or not page aligned.
    BadRange(MemRange),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::BadRange(r) => write!(f, "frame range {r:?} is empty or not page aligned"),
        }
    }
}

fn check_range(range: MemRange) -> Result<(), FrameError> {
    if range.is_empty() || !range.is_page_aligned() {
        return Err(FrameError::BadRange(range));
    }
    Ok(())
}

/// Bytes in `pages` frames, `None` on overflow.
fn pages_to_bytes(pages: usize) -> Option<u64> {
    u64::try_from(pages).ok()?.checked_mul(PAGE_SIZE)
}

/// Zero-fills `[pa, pa + bytes)`.
///
/// # Safety
/// The range must be writable memory owned by the caller, reachable at address `pa`.
unsafe fn zero_frames(pa: u64, bytes: u64) {
    // SAFETY: the caller guarantees `[pa, pa + bytes)` is owned, writable memory; `pa` and
    // `bytes` fit in usize on 64-bit targets (asserted at the top of this module).
    unsafe { core::ptr::write_bytes(pa as usize as *mut u8, 0, bytes as usize) }
}

/// A buddy allocator over one physical range: blocks are naturally aligned, freed blocks merge
/// with their buddies. Its free lists live on the heap (`alloc`), so it is usable once warden's
/// heap exists; use [`BumpFrames`] before that.
pub struct PoolFrames {
    buddy: buddy_system_allocator::FrameAllocator<33>,
    range: MemRange,
    allocated_pages: usize,
    /// The most frames ever handed out at once (for sizing the pool from measured need).
    peak_pages: usize,
}

impl PoolFrames {
    /// Manages `range` (page aligned, non-empty).
    ///
    /// # Safety
    /// `range` is memory that the caller hands over exclusively to this allocator for its whole
    /// life: writable through its physical addresses and not used by anything else.
    pub unsafe fn new(range: MemRange) -> Result<Self, FrameError> {
        check_range(range)?;
        let mut buddy = buddy_system_allocator::FrameAllocator::<33>::new();
        buddy.add_frame((range.start / PAGE_SIZE) as usize, (range.end / PAGE_SIZE) as usize);
        Ok(Self { buddy, range, allocated_pages: 0, peak_pages: 0 })
    }

    /// The managed range.
    pub fn range(&self) -> MemRange {
        self.range
    }

    /// Frames currently handed out (each block counts `pages.next_power_of_two()`).
    pub fn allocated_pages(&self) -> usize {
        self.allocated_pages
    }

    /// The most frames handed out at once since [`Self::new`] (blocks counted as in
    /// [`Self::allocated_pages`]).
    pub fn peak_pages(&self) -> usize {
        self.peak_pages
    }

    /// Frames in the managed range.
    pub fn total_pages(&self) -> usize {
        (self.range.size() / PAGE_SIZE) as usize
    }
}

// SAFETY: blocks come from the buddy allocator over `range`, which `new`'s contract makes ours
// exclusively; the buddy system returns blocks aligned to their power-of-two size in frame
// numbers, i.e. in physical addresses; every block is zeroed before it is returned and handed
// out at most once until freed.
unsafe impl FrameAllocator for PoolFrames {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        if pages == 0 {
            return None;
        }
        let block = pages.checked_next_power_of_two()?;
        let bytes = pages_to_bytes(pages)?;
        let frame = self.buddy.alloc(pages)?;
        let pa = (frame as u64).checked_mul(PAGE_SIZE)?;
        // SAFETY: the block lies inside `range`, which `new`'s contract makes ours, and the
        // buddy allocator handed it to nobody else.
        unsafe { zero_frames(pa, bytes) };
        self.allocated_pages += block;
        self.peak_pages = self.peak_pages.max(self.allocated_pages);
        Some(pa)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        let Some(block) = pages.checked_next_power_of_two() else { return };
        let Some(bytes) = pages_to_bytes(block) else { return };
        let Some(end) = pa.checked_add(bytes) else { return };
        // Reject what cannot be one of our blocks; also keeps the buddy's own counter from
        // underflowing (it would panic) on a bogus free.
        if pages == 0
            || !self.range.contains_range(&MemRange::new(pa, end))
            || !(pa / PAGE_SIZE).is_multiple_of(block as u64)
            || !pa.is_multiple_of(PAGE_SIZE)
            || self.allocated_pages < block
        {
            return;
        }
        self.buddy.dealloc((pa / PAGE_SIZE) as usize, pages);
        self.allocated_pages -= block;
    }
}

/// A bump allocator over a caller-provided range, for warden's early boot tables (before the
/// heap exists).
///
/// `free` is honest but limited: freeing the most recent allocation rolls the bump pointer back
/// (its alignment padding included); any other freed block cannot be reused and is counted in
/// [`BumpFrames::stranded_pages`] so the loss is visible.
pub struct BumpFrames {
    range: MemRange,
    next: u64,
    last: Option<LastAlloc>,
    stranded_pages: usize,
}

#[derive(Clone, Copy)]
struct LastAlloc {
    pa: u64,
    pages: usize,
    next_before: u64,
}

impl BumpFrames {
    /// Hands out frames from `range` (page aligned, non-empty), lowest first.
    ///
    /// # Safety
    /// `range` is memory that the caller hands over exclusively to this allocator for its whole
    /// life: writable through its physical addresses and not used by anything else.
    pub unsafe fn new(range: MemRange) -> Result<Self, FrameError> {
        check_range(range)?;
        Ok(Self { range, next: range.start, last: None, stranded_pages: 0 })
    }

    /// The whole range given at construction.
    pub fn range(&self) -> MemRange {
        self.range
    }

    /// `[range.start, next)`: everything handed out so far (including padding).
    pub fn used(&self) -> MemRange {
        MemRange::new(self.range.start, self.next)
    }

    /// Frames freed out of order, which a bump allocator cannot reuse.
    pub fn stranded_pages(&self) -> usize {
        self.stranded_pages
    }
}

// SAFETY: blocks are carved from `range` (owned per `new`'s contract) by a pointer that only
// moves forward, except when the most recent block is returned; blocks are aligned to their
// power-of-two size and zeroed before being returned.
unsafe impl FrameAllocator for BumpFrames {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        if pages == 0 {
            return None;
        }
        let align = pages_to_bytes(pages.checked_next_power_of_two()?)?;
        let bytes = pages_to_bytes(pages)?;
        let pa = super::range::align_up(self.next, align)?;
        let end = pa.checked_add(bytes)?;
        if end > self.range.end {
            return None;
        }
        // SAFETY: `[pa, end)` lies inside `range` (owned per `new`'s contract) and above every
        // block handed out so far.
        unsafe { zero_frames(pa, bytes) };
        self.last = Some(LastAlloc { pa, pages, next_before: self.next });
        self.next = end;
        Some(pa)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        match self.last {
            Some(last) if last.pa == pa && last.pages == pages => {
                self.next = last.next_before;
                self.last = None;
            }
            _ => {
                let Some(bytes) = pages_to_bytes(pages) else { return };
                let Some(end) = pa.checked_add(bytes) else { return };
                if pages != 0
                    && MemRange::new(self.range.start, self.next)
                        .contains_range(&MemRange::new(pa, end))
                {
                    self.stranded_pages = self.stranded_pages.saturating_add(pages);
                }
            }
        }
    }
}

/// Host-test support: frames carved from an aligned heap buffer, whose addresses stand in for
/// physical addresses.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::alloc::{Layout, alloc_zeroed, dealloc};

    /// A [`PoolFrames`] over a 2 MiB-aligned heap buffer freed on drop.
    pub struct HeapFrames {
        pub pool: PoolFrames,
        base: *mut u8,
        layout: Layout,
    }

    impl HeapFrames {
        pub fn new(pages: usize) -> Self {
            let layout = Layout::from_size_align(pages * PAGE_SIZE as usize, 2 << 20).unwrap();
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { alloc_zeroed(layout) };
            assert!(!base.is_null());
            let start = base as u64;
            // SAFETY: the buffer was just allocated and is only reached through this pool
            // until `drop` releases it.
            let pool =
                unsafe { PoolFrames::new(MemRange::new(start, start + layout.size() as u64)) }
                    .unwrap();
            Self { pool, base, layout }
        }
    }

    impl Drop for HeapFrames {
        fn drop(&mut self) {
            // SAFETY: `base` came from `alloc_zeroed(layout)` and is released once.
            unsafe { dealloc(self.base, self.layout) }
        }
    }

    // SAFETY: delegates to `PoolFrames`, whose range is the owned buffer.
    unsafe impl FrameAllocator for HeapFrames {
        fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
            self.pool.alloc_zeroed(pages)
        }
        fn free(&mut self, pa: u64, pages: usize) {
            self.pool.free(pa, pages)
        }
    }

    /// A heap buffer for `BumpFrames` tests.
    pub struct HeapBuffer {
        pub range: MemRange,
        base: *mut u8,
        layout: Layout,
    }

    impl HeapBuffer {
        pub fn new(pages: usize) -> Self {
            let layout = Layout::from_size_align(pages * PAGE_SIZE as usize, 1 << 16).unwrap();
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { alloc_zeroed(layout) };
            assert!(!base.is_null());
            let start = base as u64;
            Self { range: MemRange::new(start, start + layout.size() as u64), base, layout }
        }
    }

    impl Drop for HeapBuffer {
        fn drop(&mut self) {
            // SAFETY: `base` came from `alloc_zeroed(layout)` and is released once.
            unsafe { dealloc(self.base, self.layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{HeapBuffer, HeapFrames};
    use super::*;

    fn read_u64(pa: u64) -> u64 {
        // SAFETY: test reads inside a live heap buffer.
        unsafe { core::ptr::read_volatile(pa as usize as *const u64) }
    }

    fn write_u64(pa: u64, v: u64) {
        // SAFETY: test writes inside a live heap buffer.
        unsafe { core::ptr::write_volatile(pa as usize as *mut u64, v) }
    }

    #[test]
    fn pool_aligns_zeroes_and_reuses() {
        let mut frames = HeapFrames::new(64);
        let a = frames.alloc_zeroed(1).unwrap();
        write_u64(a, 0xdead_beef);
        frames.free(a, 1);
        let b = frames.alloc_zeroed(1).unwrap();
        assert_eq!(read_u64(b), 0, "reused frame must come back zeroed");
        let c = frames.alloc_zeroed(3).unwrap();
        assert_eq!(c % (4 * PAGE_SIZE), 0, "3 pages are aligned to 4");
        let d = frames.alloc_zeroed(16).unwrap();
        assert_eq!(d % (16 * PAGE_SIZE), 0);
        assert_eq!(frames.pool.allocated_pages(), 1 + 4 + 16);
        frames.free(c, 3);
        frames.free(d, 16);
        frames.free(b, 1);
        assert_eq!(frames.pool.allocated_pages(), 0);
        assert_eq!(frames.pool.peak_pages(), 1 + 4 + 16, "the peak outlives the frees");
        assert_eq!(frames.alloc_zeroed(0), None);
        assert_eq!(frames.alloc_zeroed(128), None, "bigger than the pool");
    }

    #[test]
    fn pool_ignores_bogus_frees() {
        let mut frames = HeapFrames::new(16);
        let a = frames.alloc_zeroed(1).unwrap();
        frames.free(0x1000, 1); // outside
        frames.free(a + 1, 1); // misaligned
        frames.free(a, 0);
        frames.free(!0xfff, 1);
        frames.free(frames.pool.range().start, 8); // would underflow the counter
        assert_eq!(frames.pool.allocated_pages(), 1);
        frames.free(a, 1);
        assert_eq!(frames.pool.allocated_pages(), 0);
        frames.free(a, 1); // would underflow
        assert_eq!(frames.pool.allocated_pages(), 0);
    }

    #[test]
    fn pool_rejects_bad_ranges() {
        // SAFETY: construction fails before any memory is touched.
        let r = unsafe { PoolFrames::new(MemRange::new(0x1000, 0x1800)) };
        assert!(matches!(r, Err(FrameError::BadRange(_))));
        // SAFETY: as above.
        let r = unsafe { PoolFrames::new(MemRange::new(0x2000, 0x1000)) };
        assert!(r.is_err());
    }

    #[test]
    fn bump_aligns_rolls_back_last_and_counts_stranded() {
        let buf = HeapBuffer::new(32);
        // SAFETY: the buffer is owned by this test and outlives the allocator.
        let mut bump = unsafe { BumpFrames::new(buf.range) }.unwrap();
        let a = bump.alloc_zeroed(1).unwrap();
        assert_eq!(a, buf.range.start);
        write_u64(a, 7);
        let b = bump.alloc_zeroed(4).unwrap();
        assert_eq!(b % (4 * PAGE_SIZE), 0);
        assert!(b > a);
        bump.free(b, 4);
        assert_eq!(bump.used(), MemRange::new(a, a + PAGE_SIZE), "padding reclaimed too");
        bump.free(a, 1); // no longer the last allocation: stranded
        assert_eq!(bump.stranded_pages(), 1);
        assert_eq!(read_u64(a), 7, "stranded frame is not reused or touched");
        bump.free(0x1000, 1); // not ours: ignored
        assert_eq!(bump.stranded_pages(), 1);
        assert_eq!(bump.alloc_zeroed(64), None);
        let c = bump.alloc_zeroed(2).unwrap();
        assert_eq!(read_u64(c), 0);
    }
}
