//! Which VMs own each range of RAM, as the firmware that programs the XPUs keeps it.
//!
//! Every byte starts owned by HLOS alone; `assign_mem` (and PAS's `auth_and_reset` /
//! `shutdown`) move ranges between VM sets. The table holds only the ranges whose owners are
//! not HLOS alone: sorted, disjoint, neighbours with the same owners merged, at most
//! [`MAX_RANGES`] of them (a change that would need more is refused before anything changes).

use crate::scm::vmid;

/// Ranges with owners other than HLOS alone that tz-sim can remember.
pub const MAX_RANGES: usize = 64;

/// The owners of RAM nobody assigned: HLOS alone.
pub const HLOS_ONLY: u64 = 1 << vmid::HLOS;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    base: u64,
    /// Exclusive.
    end: u64,
    /// Bitmap of VM IDs.
    owners: u64,
}

/// The ownership table (all zeroes is a valid, empty table: it can live in BSS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    entries: [Entry; MAX_RANGES],
    len: usize,
}

impl Default for Ownership {
    fn default() -> Self {
        Self::new()
    }
}

/// The table is full: the change would need more than [`MAX_RANGES`] ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl Ownership {
    pub const fn new() -> Self {
        Self { entries: [Entry { base: 0, end: 0, owners: 0 }; MAX_RANGES], len: 0 }
    }

    fn live(&self) -> &[Entry] {
        &self.entries[..self.len]
    }

    /// The owners of every byte of `[base, end)` if they are the same for all of them; `None`
    /// when the range is empty or its parts have different owners.
    pub fn owners(&self, base: u64, end: u64) -> Option<u64> {
        if base >= end {
            return None;
        }
        let mut owners = None;
        let mut at = base;
        for e in self.live().iter().filter(|e| e.end > base && e.base < end) {
            // A gap before this entry is HLOS's.
            if e.base > at {
                owners = merge(owners, HLOS_ONLY)?;
            }
            owners = merge(owners, e.owners)?;
            at = e.end;
        }
        if at < end {
            owners = merge(owners, HLOS_ONLY)?;
        }
        owners
    }

    /// How many entries the table would hold after [`Self::set`]`(base, end, owners)`.
    fn len_after(&self, base: u64, end: u64, owners: u64) -> usize {
        let mut n = 0;
        for e in self.live() {
            if e.end <= base || e.base >= end {
                n += 1;
            } else {
                // The parts left of and right of the range survive.
                n += usize::from(e.base < base) + usize::from(e.end > end);
            }
        }
        n + usize::from(owners != HLOS_ONLY)
    }

    /// Makes `owners` the owners of `[base, end)`; refused (nothing changed) if the table would
    /// overflow. Neighbours with the same owners are merged afterwards.
    pub fn set(&mut self, base: u64, end: u64, owners: u64) -> Result<(), TableFull> {
        if base >= end {
            return Ok(());
        }
        if self.len_after(base, end, owners) > MAX_RANGES {
            return Err(TableFull);
        }
        let old = self.clone();
        self.len = 0;
        let mut inserted = owners == HLOS_ONLY;
        for e in old.live() {
            if e.end <= base || e.base >= end {
                if !inserted && e.base >= end {
                    self.push(Entry { base, end, owners });
                    inserted = true;
                }
                self.push(*e);
                continue;
            }
            if e.base < base {
                self.push(Entry { base: e.base, end: base, owners: e.owners });
            }
            if !inserted {
                self.push(Entry { base, end, owners });
                inserted = true;
            }
            if e.end > end {
                self.push(Entry { base: end, end: e.end, owners: e.owners });
            }
        }
        if !inserted {
            self.push(Entry { base, end, owners });
        }
        self.merge_neighbours();
        Ok(())
    }

    fn push(&mut self, e: Entry) {
        // `len_after` bounded the count; the merge below only shrinks it.
        self.entries[self.len] = e;
        self.len += 1;
    }

    fn merge_neighbours(&mut self) {
        let mut out = 0;
        for i in 0..self.len {
            let e = self.entries[i];
            if out > 0 {
                let last = &mut self.entries[out - 1];
                if last.end == e.base && last.owners == e.owners {
                    last.end = e.end;
                    continue;
                }
            }
            self.entries[out] = e;
            out += 1;
        }
        self.len = out;
    }

    /// Ranges not owned by HLOS alone (for tests and the log).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.live().iter().map(|e| (e.base, e.end, e.owners))
    }
}

fn merge(owners: Option<u64>, next: u64) -> Option<Option<u64>> {
    match owners {
        Some(o) if o != next => None,
        _ => Some(Some(next)),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const MSS: u64 = 1 << vmid::MSS_MSA;
    const ADSP: u64 = 1 << vmid::ADSP_Q6;

    fn ranges(t: &Ownership) -> Vec<(u64, u64, u64)> {
        t.ranges().collect()
    }

    #[test]
    fn everything_starts_with_hlos() {
        let t = Ownership::new();
        assert_eq!(t.owners(0x4000_0000, 0x8000_0000), Some(HLOS_ONLY));
        assert_eq!(t.owners(5, 5), None);
    }

    #[test]
    fn set_splits_merges_and_returns() {
        let mut t = Ownership::new();
        t.set(0x1000, 0x5000, MSS).unwrap();
        assert_eq!(t.owners(0x1000, 0x5000), Some(MSS));
        assert_eq!(t.owners(0x2000, 0x3000), Some(MSS));
        assert_eq!(t.owners(0x0, 0x2000), None, "straddles HLOS and MSS");
        assert_eq!(t.owners(0x5000, 0x6000), Some(HLOS_ONLY));
        // The middle back to HLOS: two MSS pieces remain.
        t.set(0x2000, 0x3000, HLOS_ONLY).unwrap();
        assert_eq!(ranges(&t), [(0x1000, 0x2000, MSS), (0x3000, 0x5000, MSS)]);
        // Shared with HLOS on the right; ADSP on a separate range before.
        t.set(0x4000, 0x6000, MSS | HLOS_ONLY).unwrap();
        t.set(0x0, 0x1000, ADSP).unwrap();
        assert_eq!(
            ranges(&t),
            [
                (0x0, 0x1000, ADSP),
                (0x1000, 0x2000, MSS),
                (0x3000, 0x4000, MSS),
                (0x4000, 0x6000, MSS | HLOS_ONLY)
            ]
        );
        // Neighbours with equal owners merge.
        t.set(0x2000, 0x3000, MSS).unwrap();
        t.set(0x4000, 0x6000, MSS).unwrap();
        assert_eq!(ranges(&t), [(0x0, 0x1000, ADSP), (0x1000, 0x6000, MSS)]);
        t.set(0x0, 0x10_0000, HLOS_ONLY).unwrap();
        assert_eq!(ranges(&t), []);
    }

    #[test]
    fn a_full_table_refuses_and_changes_nothing() {
        let mut t = Ownership::new();
        for i in 0..MAX_RANGES as u64 {
            t.set(i * 0x2000, i * 0x2000 + 0x1000, MSS).unwrap();
        }
        let before = t.clone();
        assert_eq!(t.set(0x1000_0000, 0x1000_1000, ADSP), Err(TableFull));
        // Splitting one entry in two also needs one more.
        assert_eq!(t.set(0x400, 0x800, HLOS_ONLY), Err(TableFull));
        assert_eq!(t, before);
        // Removing a whole entry needs none.
        assert_eq!(t.set(0x2000 * 3, 0x2000 * 3 + 0x1000, HLOS_ONLY), Ok(()));
        t.set(0x2000 * 3, 0x2000 * 3 + 0x1000, MSS).unwrap();
        assert_eq!(t, before);
        // Covering several entries frees room.
        t.set(0, 0x2000 * 4, ADSP).unwrap();
        assert_eq!(t.ranges().count(), MAX_RANGES - 3);
    }
}
