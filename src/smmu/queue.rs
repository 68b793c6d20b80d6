//! Circular-queue index arithmetic (Arm IHI 0070, 3.5): a PROD or CONS value holds the entry
//! index in its low `log2` bits and a wrap bit just above, which flips on every lap. Equal index
//! and wrap: empty; equal index, different wrap: full.

/// A queue of `1 << log2` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueShape {
    log2: u32,
}

impl QueueShape {
    /// `log2` entries (0..=19, the architectural maximum).
    pub const fn new(log2: u32) -> Self {
        Self { log2: if log2 > 19 { 19 } else { log2 } }
    }

    pub const fn log2(&self) -> u32 {
        self.log2
    }

    pub const fn entries(&self) -> u32 {
        1 << self.log2
    }

    /// The index-and-wrap bits of a register value (drops ERR, OVFLG and anything else).
    pub const fn pointer(&self, reg: u32) -> u32 {
        reg & ((2 << self.log2) - 1)
    }

    pub const fn index(&self, ptr: u32) -> u32 {
        ptr & (self.entries() - 1)
    }

    pub const fn wrap(&self, ptr: u32) -> bool {
        ptr & self.entries() != 0
    }

    /// The next pointer (index + 1, flipping the wrap bit after the last entry).
    pub const fn next(&self, ptr: u32) -> u32 {
        self.pointer(ptr.wrapping_add(1))
    }

    pub const fn is_empty(&self, prod: u32, cons: u32) -> bool {
        self.pointer(prod) == self.pointer(cons)
    }

    pub const fn is_full(&self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) != self.wrap(cons)
    }

    /// Entries between `cons` and `prod` (what the consumer still has to read).
    pub const fn used(&self, prod: u32, cons: u32) -> u32 {
        let p = self.pointer(prod);
        let c = self.pointer(cons);
        p.wrapping_sub(c) & ((2 << self.log2) - 1)
    }

    /// Whether the entry at pointer `target` has been consumed once the consumer is at `cons`,
    /// given the producer is at `prod` (`target` must lie in `[old cons, prod)`).
    pub const fn consumed(&self, prod: u32, cons: u32, target: u32) -> bool {
        // target is consumed when it is no longer between cons and prod.
        self.used(prod, cons) <= self.used(prod, target).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_arithmetic() {
        let q = QueueShape::new(2); // 4 entries, wrap bit 4
        assert_eq!(q.entries(), 4);
        assert_eq!(q.next(0b011), 0b100, "index 3 -> index 0 with the wrap bit set");
        assert_eq!(q.next(0b111), 0b000, "and back");
        assert!(q.is_empty(0b101, 0b101));
        assert!(!q.is_empty(0b101, 0b001));
        assert!(q.is_full(0b101, 0b001));
        assert!(!q.is_full(0b100, 0b001));
        assert_eq!(q.used(0b101, 0b001), 4);
        assert_eq!(q.used(0b001, 0b110), 3, "prod wrapped back, cons on the other lap");
        assert_eq!(q.used(0b010, 0b010), 0);
        assert_eq!(q.pointer(0x8100_0005), 0b101, "ERR and OVFLG bits are ignored");
        assert_eq!(QueueShape::new(25).log2(), 19);
    }

    #[test]
    fn consumed_tracks_target_across_wrap() {
        let q = QueueShape::new(2);
        // Commands at pointers 0b011 and 0b100 (the second after the wrap); prod = 0b101.
        let prod = 0b101;
        let target = 0b100;
        assert!(!q.consumed(prod, 0b011, target));
        assert!(!q.consumed(prod, 0b100, target));
        assert!(q.consumed(prod, 0b101, target));
    }

    #[test]
    fn walk_every_pointer_of_two_laps() {
        let q = QueueShape::new(3);
        let mut p = 0;
        for i in 0..32u32 {
            assert_eq!(q.index(p), i % 8);
            assert_eq!(q.wrap(p), (i / 8) % 2 == 1);
            p = q.next(p);
        }
        assert_eq!(p, 0);
    }

    proptest::proptest! {
        /// Against a model with plain counters: any interleaving of produce and consume steps
        /// that never overfills or underflows keeps used/empty/full consistent.
        #[test]
        fn matches_counter_model(log2 in 0u32..6, steps in proptest::collection::vec(proptest::bool::ANY, 0..400)) {
            let q = QueueShape::new(log2);
            let (mut prod, mut cons) = (0u32, 0u32);
            let (mut produced, mut consumed) = (0u64, 0u64);
            for produce in steps {
                let used = (produced - consumed) as u32;
                if produce && used < q.entries() {
                    prod = q.next(prod);
                    produced += 1;
                } else if !produce && used > 0 {
                    cons = q.next(cons);
                    consumed += 1;
                }
                let used = (produced - consumed) as u32;
                proptest::prop_assert_eq!(q.used(prod, cons), used);
                proptest::prop_assert_eq!(q.is_empty(prod, cons), used == 0);
                proptest::prop_assert_eq!(q.is_full(prod, cons), used == q.entries());
                proptest::prop_assert_eq!(q.index(prod) as u64, produced % u64::from(q.entries()));
            }
        }
    }
}
