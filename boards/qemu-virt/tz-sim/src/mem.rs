//! Non-secure RAM as tz-sim sees it: where it is (learnt once at boot, as a vendor TZ knows its
//! DDR), and reads of it by physical address that refuse anything outside it.
//!
//! Every address a caller hands tz-sim (an SCM buffer, a translation table, a stream table) is
//! checked against [`RamMap`] before it is read: with the MMU off at EL3 a read of an address
//! nothing decodes is an external abort, which would stop the CPU in EL3.

/// Up to this many RAM regions (QEMU virt has one).
pub const MAX_RAM_REGIONS: usize = 4;

/// The physical RAM regions, `[base, base + size)` each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamMap {
    regions: [(u64, u64); MAX_RAM_REGIONS],
    count: usize,
}

impl RamMap {
    pub const fn empty() -> Self {
        Self { regions: [(0, 0); MAX_RAM_REGIONS], count: 0 }
    }

    /// Adds a region (ignored when empty, wrapping or beyond [`MAX_RAM_REGIONS`]).
    pub fn add(&mut self, base: u64, size: u64) -> bool {
        if size == 0 || base.checked_add(size).is_none() || self.count == MAX_RAM_REGIONS {
            return false;
        }
        self.regions[self.count] = (base, size);
        self.count += 1;
        true
    }

    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions[..self.count]
    }

    /// Whether every byte of `[base, base + size)` is RAM (inside one region); an empty or
    /// wrapping range is not.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        let Some(end) = base.checked_add(size) else { return false };
        size != 0 && self.regions().iter().any(|&(b, s)| base >= b && end <= b + s)
    }
}

/// A physical address that is not RAM (or a range reaching out of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam(pub u64);

/// Reads of non-secure RAM by physical address.
pub trait PhysMem {
    fn ram(&self) -> &RamMap;

    /// Copies `buf.len()` bytes at `pa`; refused (nothing read) unless every byte is RAM.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), OutsideRam>;

    /// The little-endian u64 at `pa` (8-byte aligned), if it is RAM.
    fn read_u64(&self, pa: u64) -> Result<u64, OutsideRam> {
        if !pa.is_multiple_of(8) {
            return Err(OutsideRam(pa));
        }
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
pub mod fake {
    //! RAM in a host buffer, for the unit tests.
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// One RAM region backed by a byte vector.
    pub struct FakeRam {
        pub map: RamMap,
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl FakeRam {
        pub fn new(base: u64, size: usize) -> Self {
            let mut map = RamMap::empty();
            map.add(base, size as u64);
            Self { map, base, bytes: std::vec![0; size] }
        }

        pub fn write(&mut self, pa: u64, data: &[u8]) {
            let at = (pa - self.base) as usize;
            self.bytes[at..at + data.len()].copy_from_slice(data);
        }

        pub fn write_u64(&mut self, pa: u64, v: u64) {
            self.write(pa, &v.to_le_bytes());
        }

        pub fn write_u32(&mut self, pa: u64, v: u32) {
            self.write(pa, &v.to_le_bytes());
        }
    }

    impl PhysMem for FakeRam {
        fn ram(&self) -> &RamMap {
            &self.map
        }
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
            if !self.map.contains(pa, buf.len() as u64) {
                return Err(OutsideRam(pa));
            }
            let at = (pa - self.base) as usize;
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_map_contains_whole_ranges_only() {
        let mut m = RamMap::empty();
        assert!(!m.contains(0x4000_0000, 8));
        assert!(m.add(0x4000_0000, 0x4000_0000));
        assert!(!m.add(0x1000, 0));
        assert!(!m.add(u64::MAX - 1, 4));
        assert!(m.contains(0x4000_0000, 0x4000_0000));
        assert!(m.contains(0x7fff_fff8, 8));
        assert!(!m.contains(0x7fff_fff8, 9));
        assert!(!m.contains(0x3fff_fff8, 16));
        assert!(!m.contains(0x4000_0000, 0));
        assert!(!m.contains(u64::MAX - 4, 8));
        for _ in 0..3 {
            assert!(m.add(0x1_0000_0000, 0x1000));
        }
        assert!(!m.add(0x2_0000_0000, 0x1000), "four regions at most");
    }
}
