//! Which level of the host's own stage-1 table walk hit memory stage 2 refuses.
//!
//! When the host's stage-1 walk reads (or, with hardware AF/dirty updates, writes) a descriptor
//! in a page stage 2 refuses, EL2 gets a stage-2 fault with ESR_EL2.S1PTW set. To the host this
//! must look as it would without EL2: a *synchronous external abort on translation table walk*,
//! whose FSC (`0b0101LL`, `0b010011` for level -1) names the stage-1 level of the descriptor
//! (Arm ARM, ISS encoding for an exception from a Data/Instruction Abort). ESR_EL2's own level is
//! the *stage-2* walk's, and nothing in the syndrome gives the stage-1 one, so warden finds it
//! the way the walker did: it walks the host's stage-1 tables for the faulting VA (TCR_EL1,
//! TTBR0/1_EL1 as the host left them) until a descriptor's address falls in the faulting page
//! (HPFAR_EL2).
//!
//! The tables are the host's and it may change them at any time: every descriptor is read
//! through a reader that only returns host-owned memory, nothing is trusted beyond the walk's
//! own arithmetic, and when the walk does not reach the faulting page (the tables changed, or
//! the registers say no walk happens) the answer is the walk's first level, so the host still
//! gets a walk abort, at a level its tables allow.

use super::esr::{AbortReport, Level};

/// The host's EL1&0 translation registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Regime {
    pub tcr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
}

/// One half of the VA space as TCR_EL1 configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Half {
    /// log2 of the granule: 12, 14 or 16.
    granule: u32,
    /// Input address bits (64 - TnSZ).
    input_bits: u32,
    /// 52-bit output addresses in descriptors and TTBR (FEAT_LPA2 `DS`, or 64 KiB with
    /// FEAT_LPA and IPS = 52 bits).
    wide: bool,
    table: u64,
}

const GRANULE_4K: u32 = 12;
const GRANULE_16K: u32 = 14;
const GRANULE_64K: u32 = 16;
const TCR_DS: u64 = 1 << 59;
const IPS_52: u64 = 0b110;
/// TnSZ bounds: 12 (52-bit VAs) to 48 (FEAT_TTST); values outside are clamped, as an
/// implementation may.
const MIN_TNSZ: u64 = 12;
const MAX_TNSZ: u64 = 48;

impl El1Regime {
    fn half(&self, va: u64) -> Half {
        let tcr = self.tcr;
        // VA[55] selects the half in the EL1&0 regime, whatever the top byte holds.
        let (tnsz, granule, ttbr) = if (va >> 55) & 1 == 1 {
            let granule = match (tcr >> 30) & 3 {
                0b01 => GRANULE_16K,
                0b11 => GRANULE_64K,
                _ => GRANULE_4K,
            };
            ((tcr >> 16) & 0x3f, granule, self.ttbr1)
        } else {
            let granule = match (tcr >> 14) & 3 {
                0b01 => GRANULE_64K,
                0b10 => GRANULE_16K,
                _ => GRANULE_4K,
            };
            (tcr & 0x3f, granule, self.ttbr0)
        };
        let wide =
            if granule == GRANULE_64K { (tcr >> 32) & 0b111 == IPS_52 } else { tcr & TCR_DS != 0 };
        let input_bits = (64 - tnsz.clamp(MIN_TNSZ, MAX_TNSZ) as u32).max(granule + 1);
        // TTBR_EL1.BADDR; with 52-bit addresses its bits [5:2] hold address bits [51:48].
        let table = if wide {
            (ttbr & 0x0000_ffff_ffff_ffc0) | ((ttbr >> 2) & 0xf) << 48
        } else {
            ttbr & 0x0000_ffff_ffff_fffe
        };
        Half { granule, input_bits, wide, table }
    }
}

impl Half {
    fn stride(&self) -> u32 {
        self.granule - 3
    }

    /// The first level of the walk: 4 minus the number of levels the input bits need.
    fn start_level(&self) -> Level {
        let levels = (self.input_bits - self.granule).div_ceil(self.stride());
        4 - levels as Level
    }

    /// The next table's address in a table descriptor.
    fn next_table(&self, desc: u64) -> u64 {
        let low = desc & 0x0000_ffff_ffff_ffff & !((1u64 << self.granule) - 1);
        match (self.wide, self.granule) {
            (false, _) => low,
            // 64 KiB with FEAT_LPA: OA[51:48] in bits [15:12].
            (true, GRANULE_64K) => low | ((desc >> 12) & 0xf) << 48,
            // FEAT_LPA2: OA[49:48] in place, OA[51:50] in bits [9:8].
            (true, _) => {
                (desc & 0x0003_ffff_ffff_ffff & !((1u64 << self.granule) - 1))
                    | ((desc >> 8) & 3) << 50
            }
        }
    }
}

/// For an abort on the host's own stage-1 walk (S1PTW, with FAR and HPFAR valid): the
/// stage-1 level of the walk that hit the refused page ([`faulting_level`]). `None` for any
/// other abort.
pub fn walk_level(
    report: &AbortReport,
    regime: &El1Regime,
    read: impl FnMut(u64) -> Option<u64>,
) -> Option<Level> {
    let on_walk = match (report.esr.data_abort(), report.esr.instruction_abort()) {
        (Some(d), _) => d.s1ptw(),
        (None, Some(i)) => i.s1ptw(),
        (None, None) => false,
    };
    let va = report.va().filter(|_| on_walk)?;
    Some(faulting_level(regime, va, report.ipa()?, read))
}

/// The stage-1 level whose descriptor lies in `fault_page` (an IPA; only its 4 KiB page counts)
/// on the walk for `va`; `read` returns the 64-bit descriptor at an IPA if the host owns it.
/// If the walk does not get there, its first level.
pub fn faulting_level(
    regime: &El1Regime,
    va: u64,
    fault_page: u64,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Level {
    let half = regime.half(va);
    let start = half.start_level();
    let page = |addr: u64| addr >> 12;
    let mut table = half.table;
    let mut level = start;
    loop {
        let shift = half.granule + half.stride() * (3 - level) as u32;
        let bits = if level == start { half.input_bits - shift } else { half.stride() };
        let index = (va >> shift) & ((1u64 << bits) - 1);
        // A table is aligned to its size (the bits below are RES0 in TTBR and descriptors).
        let base = table & !((8u64 << bits) - 1);
        let desc_addr = base + index * 8;
        if page(desc_addr) == page(fault_page) {
            return level;
        }
        if level >= 3 {
            return start;
        }
        // Only a valid table descriptor leads further down.
        match read(desc_addr) {
            Some(desc) if desc & 0b11 == 0b11 => table = half.next_table(desc),
            _ => return start,
        }
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    /// Host memory: descriptors by address.
    #[derive(Default)]
    struct Tables(BTreeMap<u64, u64>);

    /// The address of `va`'s descriptor at `level` in `table`.
    fn desc_addr(half: &Half, table: u64, level: Level, va: u64) -> u64 {
        let shift = half.granule + half.stride() * (3 - level) as u32;
        let bits =
            if level == half.start_level() { half.input_bits - shift } else { half.stride() };
        table + ((va >> shift) & ((1u64 << bits) - 1)) * 8
    }

    /// Builds the walk for `va` through `tables` (one per level from the first, each linked from
    /// the one before with `encode(next) | 0b11`); returns the memory and, per level, the
    /// descriptor's address (what HPFAR_EL2 names when that level's read is refused).
    fn walk(
        regime: &El1Regime,
        va: u64,
        tables: &[u64],
        encode: impl Fn(u64) -> u64,
    ) -> (Tables, Vec<u64>) {
        let half = regime.half(va);
        assert_eq!(half.table, tables[0], "the root comes from TTBR");
        let start = half.start_level();
        let mut mem = Tables::default();
        let mut descs = Vec::new();
        for (i, &table) in tables.iter().enumerate() {
            let at = desc_addr(&half, table, start + i as Level, va);
            descs.push(at);
            if let Some(&next) = tables.get(i + 1) {
                mem.0.insert(at, encode(next) | 0b11);
            }
        }
        (mem, descs)
    }

    fn level_of(regime: &El1Regime, va: u64, fault: u64, mem: &Tables) -> Level {
        faulting_level(regime, va, fault, |a| mem.0.get(&a).copied())
    }

    /// Every level of the walk is found from its descriptor's page.
    fn every_level(regime: &El1Regime, va: u64, tables: &[u64], encode: impl Fn(u64) -> u64) {
        let (mem, descs) = walk(regime, va, tables, encode);
        let start = regime.half(va).start_level();
        assert_eq!(descs.len() as Level, 4 - start, "one table per level");
        for (i, &at) in descs.iter().enumerate() {
            let want = start + i as Level;
            // HPFAR names the 4 KiB page; FAR's low bits are the VA's, not the descriptor's.
            assert_eq!(level_of(regime, va, at & !0xfff, &mem), want, "descriptor at {at:#x}");
        }
    }

    const VA_LOW: u64 = 0x0000_0012_3456_7000;
    const VA_HIGH: u64 = 0xffff_8000_1234_5000;

    #[test]
    fn four_k_48_bit_every_level() {
        // T0SZ = 16, TG0 = 4 KiB: levels 0..3.
        let regime = El1Regime { tcr: 16, ttbr0: 0x4100_0000, ttbr1: 0 };
        let tables = [0x4100_0000, 0x4200_0000, 0x4300_0000, 0x4400_0000];
        every_level(&regime, VA_LOW, &tables, |t| t);
        let (mem, descs) = walk(&regime, VA_LOW, &tables, |t| t);
        // A page the walk never touches: the first level.
        assert_eq!(level_of(&regime, VA_LOW, 0x5000_0000, &mem), 0);
        // The walk changed under us (a block where a table was): the first level.
        let mut broken = Tables(mem.0.clone());
        broken.0.insert(descs[1], 0x4300_0001);
        assert_eq!(level_of(&regime, VA_LOW, descs[3], &broken), 0);
        // Unreadable (not host memory): the first level.
        assert_eq!(faulting_level(&regime, VA_LOW, descs[3], |_| None), 0);
    }

    #[test]
    fn upper_half_uses_ttbr1_and_tg1() {
        // T1SZ = 25 (39-bit), TG1 = 4 KiB (0b10): levels 1..3; TTBR1 with an ASID and CnP.
        let tcr = (25 << 16) | (0b10 << 30) | 16;
        let regime = El1Regime { tcr, ttbr0: 0xdead_0000, ttbr1: (7 << 48) | 0x4800_0000 | 1 };
        every_level(&regime, VA_HIGH, &[0x4800_0000, 0x4900_0000, 0x4a00_0000], |t| t);
    }

    #[test]
    fn sixteen_and_sixty_four_k_granules() {
        // 16 KiB, T0SZ = 17 (47-bit): levels 1..3, 11 bits each.
        let regime = El1Regime { tcr: 17 | (0b10 << 14), ttbr0: 0x4100_0000, ttbr1: 0 };
        assert_eq!(regime.half(VA_LOW).start_level(), 1);
        every_level(&regime, VA_LOW, &[0x4100_0000, 0x4200_4000, 0x4300_8000], |t| t);
        // 64 KiB, T0SZ = 22 (42-bit): levels 2..3.
        let regime = El1Regime { tcr: 22 | (0b01 << 14), ttbr0: 0x4101_0000, ttbr1: 0 };
        assert_eq!(regime.half(VA_LOW).start_level(), 2);
        every_level(&regime, VA_LOW, &[0x4101_0000, 0x4202_0000], |t| t);
    }

    #[test]
    fn fifty_two_bit_addresses() {
        // FEAT_LPA2: 4 KiB, T0SZ = 12, DS: levels -1..3; a level-0 table above 2^48 (address
        // bits [51:50] in descriptor bits [9:8], TTBR bits [5:2] = address bits [51:48]).
        let root = (0x3 << 48) | 0x4100_0000;
        let ttbr0 = 0x4100_0000 | (0x3 << 2);
        let regime = El1Regime { tcr: 12 | TCR_DS, ttbr0, ttbr1: 0 };
        assert_eq!(regime.half(VA_LOW).table, root);
        assert_eq!(regime.half(VA_LOW).start_level(), -1);
        let tables = [root, (0b10 << 50) | 0x4200_0000, 0x4300_0000, 0x4400_0000, 0x4500_0000];
        every_level(&regime, VA_LOW, &tables, |t| {
            (t & 0x0003_ffff_ffff_f000) | ((t >> 50) & 3) << 8
        });
        // 64 KiB with FEAT_LPA (IPS = 52 bits): address bits [51:48] in descriptor bits [15:12].
        let tcr = 12 | (0b01 << 14) | (IPS_52 << 32);
        let regime = El1Regime { tcr, ttbr0: 0x4101_0000, ttbr1: 0 };
        assert_eq!(regime.half(VA_LOW).start_level(), 1);
        let tables = [0x4101_0000, (0x5 << 48) | 0x4202_0000, 0x4303_0000];
        every_level(&regime, VA_LOW, &tables, |t| {
            (t & 0x0000_ffff_ffff_0000) | ((t >> 48) & 0xf) << 12
        });
    }

    /// Through the trap handler: the host's level-3 table lies in warden's memory; its load
    /// from EL1 trapped with S1PTW (a stage-2 translation fault, at stage-2 level 2); the host
    /// gets a synchronous external abort on translation table walk, level 3, at its VA.
    #[test]
    fn a_refused_walk_reaches_the_host_as_a_walk_abort() {
        use crate::trap::fake::{FakeEl3, FakePlatform};
        use crate::trap::inject::spsr;
        use crate::trap::psci::Psci;
        use crate::trap::{TrapFrame, TrapHandler};

        // 4 KiB, T0SZ = 25: levels 1..3; the last table in warden's memory.
        let regime = El1Regime { tcr: 25, ttbr0: 0x4100_0000, ttbr1: 0 };
        let va = 0x12_3456_7000;
        let last = FakePlatform::WARDEN_BASE + 0x3000;
        let (mem, descs) = walk(&regime, va, &[0x4100_0000, 0x4200_0000, last], |t| t);
        let handler = TrapHandler::new(Psci::new(&[0, 1], 0).unwrap());
        let mut p = FakePlatform::new(0, alloc::sync::Arc::new(FakeEl3::qemu()));
        p.host_words = mem.0;
        p.host_el1.regime = regime;
        let mut frame = TrapFrame {
            // DABT_LOW, IL, S1PTW, DFSC = translation fault level 2 (of stage 2).
            esr: (0x24 << 26) | (1 << 25) | (1 << 7) | 0x06,
            elr: 0xffff_8000_1000_0000,
            spsr: spsr::M_EL1H,
            far: va + 0x18,
            hpfar: (descs[2] >> 12) << 4,
            ..TrapFrame::default()
        };
        handler.handle_lower_sync(&mut frame, &mut p);
        assert_eq!(p.el1_writes.len(), 1);
        assert_eq!(p.el1_writes[0].esr, 0x9600_0017, "{:#x}", p.el1_writes[0].esr);
        assert_eq!(p.el1_writes[0].far, Some(va + 0x18));
        assert_eq!(handler.violation_count(), 1, "recorded like any refused access");
    }

    proptest::proptest! {
        /// Whatever the registers and memory hold, the answer is a level a walk can have.
        #[test]
        fn any_registers_give_a_walk_level(
            tcr in proptest::prelude::any::<u64>(),
            ttbr0 in proptest::prelude::any::<u64>(),
            ttbr1 in proptest::prelude::any::<u64>(),
            va in proptest::prelude::any::<u64>(),
            fault in proptest::prelude::any::<u64>(),
            fill in proptest::prelude::any::<u64>(),
        ) {
            let regime = El1Regime { tcr, ttbr0, ttbr1 };
            let level = faulting_level(&regime, va, fault, |a| Some(fill ^ a));
            proptest::prop_assert!((-1..=3).contains(&level));
        }
    }
}
