//! Physical address ranges.

use core::fmt;

/// 4 KiB: the translation granule warden uses everywhere.
pub const PAGE_SIZE: u64 = 4096;
pub const SZ_2M: u64 = 2 << 20;
pub const SZ_1G: u64 = 1 << 30;

/// A half-open physical range `[start, end)`. `end > start` unless empty.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemRange {
    pub start: u64,
    pub end: u64,
}

impl MemRange {
    /// `[start, start + size)`, or `None` if it wraps the address space.
    pub const fn from_base_size(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    pub const fn contains_range(&self, other: &MemRange) -> bool {
        other.start >= self.start && other.end <= self.end
    }

    pub const fn overlaps(&self, other: &MemRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn intersection(&self, other: &MemRange) -> Option<MemRange> {
        let r = MemRange::new(self.start.max(other.start), self.end.min(other.end));
        (!r.is_empty()).then_some(r)
    }

    /// Widened to page boundaries (start down, end up). `None` on overflow.
    pub fn page_aligned_outward(&self) -> Option<MemRange> {
        Some(MemRange::new(align_down(self.start, PAGE_SIZE), align_up(self.end, PAGE_SIZE)?))
    }

    pub const fn is_page_aligned(&self) -> bool {
        self.start.is_multiple_of(PAGE_SIZE) && self.end.is_multiple_of(PAGE_SIZE)
    }
}

impl fmt::Debug for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..{:#x})", self.start, self.end)
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#012x}..{:#012x} ({})", self.start, self.end, HumanSize(self.size()))
    }
}

/// Formats a byte count as KiB/MiB/GiB for logs.
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s >= SZ_1G && s.is_multiple_of(SZ_1G) {
            write!(f, "{} GiB", s / SZ_1G)
        } else if s >= (1 << 20) && s.is_multiple_of(1 << 20) {
            write!(f, "{} MiB", s >> 20)
        } else if s >= 1024 && s.is_multiple_of(1024) {
            write!(f, "{} KiB", s >> 10)
        } else {
            write!(f, "{s} B")
        }
    }
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_basics() {
        let r = MemRange::new(0x1000, 0x3000);
        assert_eq!(r.size(), 0x2000);
        assert!(r.contains(0x1000) && !r.contains(0x3000));
        assert!(r.overlaps(&MemRange::new(0x2fff, 0x4000)));
        assert!(!r.overlaps(&MemRange::new(0x3000, 0x4000)));
        assert_eq!(MemRange::from_base_size(u64::MAX, 2), None);
        assert_eq!(align_up(u64::MAX, 4096), None);
        assert_eq!(
            MemRange::new(0x1001, 0x1fff).page_aligned_outward(),
            Some(MemRange::new(0x1000, 0x2000))
        );
        assert_eq!(format!("{}", HumanSize(2 << 20)), "2 MiB");
    }
}
