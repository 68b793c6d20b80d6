//! The XPU witness: before the firmware takes a range away from HLOS, it checks from outside
//! that nothing the host controls can still reach a byte of it: neither the host's CPUs through
//! the hypervisor's stage 2 (the tables VTTBR_EL2 points at on the calling CPU, walked with
//! VTCR_EL2's fields), nor the host's devices through the SMMU (every valid stream table entry:
//! bypass or stage 1 alone reach everything; a stage-2 one is walked from its S2TTB with its
//! own VTCR fields). A hypervisor that forgot an unmap cannot hide it here: tz-sim reads the
//! hardware's own configuration and tables, by physical address.
//!
//! The walk searches by *output* address, so it visits every valid descriptor of the tables.
//! Tables are hostile input: each table address is checked to be RAM before it is read
//! ([`PhysMem`]), the whole check reads at most [`READ_BUDGET`] words (tables that point at
//! each other fan out without end otherwise), and anything the walker cannot follow (a
//! granule or start level it does not know, a misaligned root, a table outside RAM, the budget
//! spent) counts as a violation: the witness only says "ok" when it has proved the range
//! unreachable.
//!
//! Supported: the VMSAv8-64 stage-2 format with 4 KiB, 16 KiB and 64 KiB granules, 48-bit
//! output addresses (no FEAT_LPA2: VTCR_EL2.DS = 1 is refused as unwalkable), concatenated
//! start tables; SMMUv3 linear and two-level stream tables.

use core::fmt;

use crate::mem::{OutsideRam, PhysMem};

/// Words the whole check may read (stage-2 descriptors, STE words, L1 descriptors).
pub const READ_BUDGET: u64 = 1 << 21;

/// HCR_EL2.VM: stage 2 enabled for EL1&0.
pub const HCR_VM: u64 = 1 << 0;
/// VTTBR_EL2.BADDR [47:1] (bit 0 is CnP).
const VTTBR_BADDR: u64 = 0x0000_ffff_ffff_fffe;
const VTCR_DS: u64 = 1 << 32;
/// Output address bits [47:12] of a descriptor (granule bits below are cleared per granule).
const DESC_OA: u64 = 0x0000_ffff_ffff_f000;

/// A stage-2 translation regime: VTCR fields and the root table's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2 {
    pub vtcr: u64,
    pub root: u64,
}

/// A stage-2 descriptor that gives access to part of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub ipa: u64,
    pub pa: u64,
    pub size: u64,
    pub level: u8,
}

/// Why a walk could not be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The granule (TG0 = 0b11), start level (SL0), input size (T0SZ) or DS combination is
    /// not one the walker follows.
    Config { vtcr: u64 },
    /// The root table is not aligned to its size.
    MisalignedRoot(u64),
    /// A table (or the stream table) lies outside RAM.
    OutsideRam(u64),
    /// The walk read more than [`READ_BUDGET`] words.
    Budget,
}

/// Where a violation was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// HCR_EL2.VM = 0: the host's EL1&0 run without stage 2 and reach every byte.
    Stage2Off {
        hcr: u64,
    },
    /// The host's stage 2 maps part of the range.
    HostStage2 {
        vttbr: u64,
        mapping: Mapping,
    },
    /// The host's stage 2 cannot be walked.
    HostStage2Unwalkable {
        vttbr: u64,
        why: WalkError,
    },
    /// The SMMU is disabled and lets transactions bypass it (SMMU_GBPA.ABORT = 0).
    SmmuGlobalBypass {
        gbpa: u32,
    },
    /// A stream table entry bypasses translation (Config bypass, or stage 1 alone: tables the
    /// host writes itself).
    SteReachesAll {
        sid: u32,
        config: u8,
    },
    /// A stream's stage 2 maps part of the range.
    SteStage2 {
        sid: u32,
        mapping: Mapping,
    },
    /// A stream's stage 2 (or the stream table itself) cannot be walked.
    SteUnwalkable {
        sid: u32,
        why: WalkError,
    },
    StreamTableUnwalkable {
        why: WalkError,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Config { vtcr } => write!(f, "VTCR fields {vtcr:#x} not walkable"),
            WalkError::MisalignedRoot(a) => write!(f, "root table {a:#x} misaligned"),
            WalkError::OutsideRam(a) => write!(f, "table at {a:#x} is not RAM"),
            WalkError::Budget => write!(f, "more than {READ_BUDGET} table words"),
        }
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.level == 3 { "page" } else { "block" };
        write!(
            f,
            "IPA {:#x}..{:#x} -> PA {:#x}..{:#x} (level {} {kind})",
            self.ipa,
            self.ipa + self.size,
            self.pa,
            self.pa + self.size,
            self.level
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Stage2Off { hcr } => {
                write!(f, "host stage 2 off (HCR_EL2 {hcr:#x}): the host reaches every byte")
            }
            Violation::HostStage2 { vttbr, mapping } => {
                write!(f, "host stage 2 (VTTBR_EL2 {vttbr:#x}) maps {mapping}")
            }
            Violation::HostStage2Unwalkable { vttbr, why } => {
                write!(f, "host stage 2 (VTTBR_EL2 {vttbr:#x}) unwalkable: {why}")
            }
            Violation::SmmuGlobalBypass { gbpa } => {
                write!(f, "SMMU disabled with global bypass (SMMU_GBPA {gbpa:#x})")
            }
            Violation::SteReachesAll { sid, config } => {
                write!(f, "SMMU stream {sid:#x} reaches every byte (STE.Config {config:#05b})")
            }
            Violation::SteStage2 { sid, mapping } => {
                write!(f, "SMMU stream {sid:#x}'s stage 2 maps {mapping}")
            }
            Violation::SteUnwalkable { sid, why } => {
                write!(f, "SMMU stream {sid:#x}'s stage 2 unwalkable: {why}")
            }
            Violation::StreamTableUnwalkable { why } => {
                write!(f, "SMMU stream table unwalkable: {why}")
            }
        }
    }
}

/// The granule and start of a stage-2 walk, from VTCR's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    /// log2 of the granule (12, 14, 16).
    shift: u32,
    start_level: u8,
    /// Descriptors in the (possibly concatenated) start table.
    root_entries: u64,
}

impl Geometry {
    fn of(vtcr: u64) -> Result<Self, WalkError> {
        let bad = WalkError::Config { vtcr };
        if vtcr & VTCR_DS != 0 {
            return Err(bad);
        }
        let t0sz = (vtcr & 0x3f) as u32;
        let sl0 = ((vtcr >> 6) & 3) as usize;
        let (shift, levels): (u32, [Option<u8>; 4]) = match (vtcr >> 14) & 3 {
            0 => (12, [Some(2), Some(1), Some(0), Some(3)]),
            1 => (16, [Some(3), Some(2), Some(1), None]),
            2 => (14, [Some(3), Some(2), Some(1), Some(0)]),
            _ => return Err(bad),
        };
        let start_level = levels[sl0].ok_or(bad)?;
        let ia_bits = 64u32.saturating_sub(t0sz);
        if !(25..=48).contains(&ia_bits) {
            return Err(bad);
        }
        let per_level = shift - 3;
        let below = shift + per_level * (3 - u32::from(start_level));
        // The start level resolves the remaining bits: one table, or up to 16 concatenated.
        let top =
            ia_bits.checked_sub(below).filter(|&t| t >= 1 && t <= per_level + 4).ok_or(bad)?;
        Ok(Self { shift, start_level, root_entries: 1 << top })
    }

    fn entry_size(&self, level: u8) -> u64 {
        1 << (self.shift + (self.shift - 3) * (3 - u32::from(level)))
    }
}

/// Counts the words a check reads.
struct Budget(u64);

impl Budget {
    fn read(&mut self, mem: &dyn PhysMem, pa: u64) -> Result<u64, WalkError> {
        if self.0 == 0 {
            return Err(WalkError::Budget);
        }
        self.0 -= 1;
        mem.read_u64(pa).map_err(|OutsideRam(a)| WalkError::OutsideRam(a))
    }
}

/// The first descriptor of `s2` that maps any byte of PA `[base, end)`, if any.
fn walk_stage2(
    mem: &dyn PhysMem,
    s2: Stage2,
    base: u64,
    end: u64,
    budget: &mut Budget,
) -> Result<Option<Mapping>, WalkError> {
    let geo = Geometry::of(s2.vtcr)?;
    let root_bytes = geo.root_entries * 8;
    if !s2.root.is_multiple_of(root_bytes.max(64)) {
        return Err(WalkError::MisalignedRoot(s2.root));
    }
    walk_table(mem, &geo, s2.root, geo.root_entries, geo.start_level, 0, base, end, budget)
}

#[allow(clippy::too_many_arguments)]
fn walk_table(
    mem: &dyn PhysMem,
    geo: &Geometry,
    table: u64,
    entries: u64,
    level: u8,
    ipa: u64,
    base: u64,
    end: u64,
    budget: &mut Budget,
) -> Result<Option<Mapping>, WalkError> {
    if !mem.ram().contains(table, entries * 8) {
        return Err(WalkError::OutsideRam(table));
    }
    let size = geo.entry_size(level);
    let oa_mask = DESC_OA & !((1u64 << geo.shift) - 1);
    for i in 0..entries {
        let desc = budget.read(mem, table + 8 * i)?;
        if desc & 1 == 0 {
            continue;
        }
        let at = ipa + i * size;
        let table_desc = desc & 2 != 0;
        if level < 3 && table_desc {
            let next = desc & oa_mask;
            let child = 1u64 << (geo.shift - 3);
            if let Some(m) = walk_table(mem, geo, next, child, level + 1, at, base, end, budget)? {
                return Ok(Some(m));
            }
            continue;
        }
        // A block (levels < 3) or a page (level 3, bits 0b11). A level-3 0b01 is reserved
        // (a fault): still counted, the witness errs towards "reachable". Blocks at levels
        // the granule does not allow are counted too, for the same reason.
        let pa = desc & oa_mask & !(size - 1);
        if pa < end && base < pa.saturating_add(size) {
            return Ok(Some(Mapping { ipa: at, pa, size, level }));
        }
    }
    Ok(None)
}

/// The SMMU's non-secure registers the witness reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmmuRegs {
    /// SMMU_IDR1 (SIDSIZE).
    pub idr1: u32,
    /// SMMU_CR0ACK (SMMUEN in effect).
    pub cr0ack: u32,
    pub gbpa: u32,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
}

const CR0_SMMUEN: u32 = 1;
const GBPA_ABORT: u32 = 1 << 20;
const STRTAB_ADDR: u64 = 0x000f_ffff_ffff_ffc0;
const STE_BYTES: u64 = 64;
/// L1 stream table descriptor L2Ptr [51:6].
const L1_L2PTR: u64 = 0x000f_ffff_ffff_ffc0;

/// What the witness reads of the calling CPU and the SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardware {
    pub hcr: u64,
    pub vtcr: u64,
    pub vttbr: u64,
    /// `None`: the board has no SMMU.
    pub smmu: Option<SmmuRegs>,
}

/// Checks that nothing the host controls reaches a byte of PA `[base, end)`.
pub fn check(hw: &Hardware, mem: &dyn PhysMem, base: u64, end: u64) -> Result<(), Violation> {
    let mut budget = Budget(READ_BUDGET);
    if hw.hcr & HCR_VM == 0 {
        return Err(Violation::Stage2Off { hcr: hw.hcr });
    }
    let host = Stage2 { vtcr: hw.vtcr, root: hw.vttbr & VTTBR_BADDR };
    match walk_stage2(mem, host, base, end, &mut budget) {
        Ok(None) => {}
        Ok(Some(mapping)) => return Err(Violation::HostStage2 { vttbr: hw.vttbr, mapping }),
        Err(why) => return Err(Violation::HostStage2Unwalkable { vttbr: hw.vttbr, why }),
    }
    match hw.smmu {
        Some(smmu) => check_smmu(&smmu, mem, base, end, &mut budget),
        None => Ok(()),
    }
}

/// Stage-2 regimes already walked clean in this check (host devices usually share one).
struct Clean {
    seen: [Option<Stage2>; 8],
    next: usize,
}

impl Clean {
    fn contains(&self, s2: Stage2) -> bool {
        self.seen.contains(&Some(s2))
    }
    fn add(&mut self, s2: Stage2) {
        self.seen[self.next % self.seen.len()] = Some(s2);
        self.next += 1;
    }
}

fn check_smmu(
    smmu: &SmmuRegs,
    mem: &dyn PhysMem,
    base: u64,
    end: u64,
    budget: &mut Budget,
) -> Result<(), Violation> {
    if smmu.cr0ack & CR0_SMMUEN == 0 {
        return if smmu.gbpa & GBPA_ABORT != 0 {
            Ok(())
        } else {
            Err(Violation::SmmuGlobalBypass { gbpa: smmu.gbpa })
        };
    }
    let table = smmu.strtab_base & STRTAB_ADDR;
    let cfg = smmu.strtab_base_cfg;
    let sid_bits = (cfg & 0x3f).min(smmu.idr1 & 0x3f).min(32);
    let split = (cfg >> 6) & 0x1f;
    let unwalkable = |why| Violation::StreamTableUnwalkable { why };
    let mut clean = Clean { seen: [None; 8], next: 0 };
    match (cfg >> 16) & 3 {
        0 => {
            let count = 1u64 << sid_bits;
            if !mem.ram().contains(table, count * STE_BYTES) {
                return Err(unwalkable(WalkError::OutsideRam(table)));
            }
            for sid in 0..count {
                check_ste(mem, table + sid * STE_BYTES, sid as u32, base, end, budget, &mut clean)?;
            }
        }
        1 => {
            if split > sid_bits || split > 16 {
                return Err(unwalkable(WalkError::Config { vtcr: u64::from(cfg) }));
            }
            let l1_count = 1u64 << (sid_bits - split);
            if !mem.ram().contains(table, l1_count * 8) {
                return Err(unwalkable(WalkError::OutsideRam(table)));
            }
            for l1 in 0..l1_count {
                let desc = budget.read(mem, table + 8 * l1).map_err(unwalkable)?;
                let span = (desc & 0x1f) as u32;
                if span == 0 {
                    continue;
                }
                if span > split + 1 {
                    return Err(unwalkable(WalkError::Config { vtcr: desc }));
                }
                let l2 = desc & L1_L2PTR;
                let count = 1u64 << (span - 1);
                if !mem.ram().contains(l2, count * STE_BYTES) {
                    return Err(unwalkable(WalkError::OutsideRam(l2)));
                }
                for i in 0..count {
                    let sid = ((l1 << split) | i) as u32;
                    check_ste(mem, l2 + i * STE_BYTES, sid, base, end, budget, &mut clean)?;
                }
            }
        }
        _ => return Err(unwalkable(WalkError::Config { vtcr: u64::from(cfg) })),
    }
    Ok(())
}

const STE_CONFIG_BYPASS: u8 = 0b100;
const STE_CONFIG_S1: u8 = 0b101;
const STE_CONFIG_S2: u8 = 0b110;
const STE_CONFIG_NESTED: u8 = 0b111;
const STE2_S2AA64: u64 = 1 << 51;
const STE3_S2TTB: u64 = 0x000f_ffff_ffff_fff0;

fn check_ste(
    mem: &dyn PhysMem,
    ste: u64,
    sid: u32,
    base: u64,
    end: u64,
    budget: &mut Budget,
    clean: &mut Clean,
) -> Result<(), Violation> {
    let unwalkable = |why| Violation::SteUnwalkable { sid, why };
    let w0 = budget.read(mem, ste).map_err(unwalkable)?;
    if w0 & 1 == 0 {
        return Ok(()); // V = 0: the stream's transactions abort.
    }
    let config = ((w0 >> 1) & 7) as u8;
    match config {
        STE_CONFIG_BYPASS | STE_CONFIG_S1 => Err(Violation::SteReachesAll { sid, config }),
        STE_CONFIG_S2 | STE_CONFIG_NESTED => {
            let w2 = budget.read(mem, ste + 16).map_err(unwalkable)?;
            let w3 = budget.read(mem, ste + 24).map_err(unwalkable)?;
            // S2T0SZ..S2PS are VTCR_EL2 [18:0] at STE bits [50:32].
            let vtcr = (w2 >> 32) & 0x7_ffff;
            if w2 & STE2_S2AA64 == 0 {
                return Err(unwalkable(WalkError::Config { vtcr }));
            }
            let s2 = Stage2 { vtcr, root: w3 & STE3_S2TTB };
            if clean.contains(s2) {
                return Ok(());
            }
            match walk_stage2(mem, s2, base, end, budget) {
                Ok(None) => {
                    clean.add(s2);
                    Ok(())
                }
                Ok(Some(mapping)) => Err(Violation::SteStage2 { sid, mapping }),
                Err(why) => Err(unwalkable(why)),
            }
        }
        // Abort, and the reserved encodings (C_BAD_STE): the stream reaches nothing.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::fake::FakeRam;

    const RAM: u64 = 0x4000_0000;
    const RAM_SIZE: usize = 64 << 20;
    /// 4 KiB granule, T0SZ = 24 (40-bit IPA), SL0 = 1 (start at level 1: two concatenated
    /// tables), PS = 40 bits.
    const VTCR_4K_L1: u64 = 24 | (1 << 6) | (2 << 16);
    const TABLES: u64 = RAM + 0x10_0000;
    const ROOT: u64 = TABLES; // 8 KiB, two concatenated level-1 tables
    const L2: u64 = TABLES + 0x2000;
    const L3: u64 = TABLES + 0x3000;
    const VALID_TABLE: u64 = 0b11;
    const BLOCK: u64 = 0b01 | (1 << 10);
    const PAGE: u64 = 0b11 | (1 << 10);

    /// A host stage 2: IPA 1 GiB..2 GiB through L2; L2[0] -> L3 (pages of the first 2 MiB
    /// identity-mapped), L2[1] a 2 MiB block at 0x4020_0000.
    fn stage2() -> FakeRam {
        let mut ram = FakeRam::new(RAM, RAM_SIZE);
        ram.write_u64(ROOT + 8, L2 | VALID_TABLE);
        ram.write_u64(L2, L3 | VALID_TABLE);
        ram.write_u64(L2 + 8, 0x4020_0000 | BLOCK);
        for i in 0..512 {
            ram.write_u64(L3 + 8 * i, (RAM + i * 0x1000) | PAGE);
        }
        ram
    }

    fn hw() -> Hardware {
        Hardware { hcr: HCR_VM, vtcr: VTCR_4K_L1, vttbr: ROOT | (5 << 48), smmu: None }
    }

    #[test]
    fn geometry_follows_vtcr() {
        let g = Geometry::of(VTCR_4K_L1).unwrap();
        assert_eq!((g.shift, g.start_level, g.root_entries), (12, 1, 1024));
        // 4 KiB, T0SZ 16 (48 bits), SL0 = 2: level 0, 512 entries.
        let g = Geometry::of(16 | (2 << 6)).unwrap();
        assert_eq!((g.start_level, g.root_entries), (0, 512));
        // 64 KiB (TG0 = 1), T0SZ 22 (42 bits), SL0 = 1: level 2, 8192 entries.
        let g = Geometry::of(22 | (1 << 6) | (1 << 14)).unwrap();
        assert_eq!((g.shift, g.start_level, g.root_entries), (16, 2, 8192));
        // 16 KiB (TG0 = 2), T0SZ 28 (36 bits), SL0 = 1: level 2, 2048 entries.
        let g = Geometry::of(28 | (1 << 6) | (2 << 14)).unwrap();
        assert_eq!((g.shift, g.start_level, g.root_entries), (14, 2, 2048));
        assert_eq!(g.entry_size(2), 32 << 20);
        for bad in [
            VTCR_4K_L1 | (3 << 14),    // TG0 reserved
            VTCR_4K_L1 | VTCR_DS,      // LPA2 descriptors
            22 | (3 << 6) | (1 << 14), // 64 KiB SL0 = 3
            16 | (1 << 6),             // 48 bits from level 1: 64 tables
            63,                        // 1-bit IPA
        ] {
            assert_eq!(Geometry::of(bad), Err(WalkError::Config { vtcr: bad }), "{bad:#x}");
        }
    }

    #[test]
    fn finds_pages_and_blocks_by_output_address() {
        let ram = stage2();
        let hit = |b: u64, e: u64| check(&hw(), &ram, b, e);
        assert_eq!(
            hit(RAM + 0x5000, RAM + 0x6000),
            Err(Violation::HostStage2 {
                vttbr: ROOT | (5 << 48),
                mapping: Mapping { ipa: RAM + 0x5000, pa: RAM + 0x5000, size: 0x1000, level: 3 }
            })
        );
        let Err(Violation::HostStage2 { mapping, .. }) = hit(0x4030_0000, 0x4030_1000) else {
            panic!()
        };
        assert_eq!(mapping, Mapping { ipa: 0x4020_0000, pa: 0x4020_0000, size: 2 << 20, level: 2 });
        // Beyond both: unmapped.
        assert_eq!(hit(0x4040_0000, 0x4080_0000), Ok(()));
        // One byte of overlap is enough.
        assert!(hit(0x4040_0000 - 0x1000, 0x4080_0000).is_err());
    }

    #[test]
    fn unmapping_and_aliases() {
        let mut ram = stage2();
        for i in 16..32 {
            ram.write_u64(L3 + 8 * i, 0);
        }
        assert_eq!(check(&hw(), &ram, RAM + 0x1_0000, RAM + 0x2_0000), Ok(()));
        // An alias elsewhere in IPA space still counts: IPA 0x4000_f000 -> PA 0x4001_8000.
        ram.write_u64(L3 + 8 * 15, (RAM + 0x1_8000) | PAGE);
        let Err(Violation::HostStage2 { mapping, .. }) =
            check(&hw(), &ram, RAM + 0x1_0000, RAM + 0x2_0000)
        else {
            panic!()
        };
        assert_eq!((mapping.ipa, mapping.pa), (RAM + 0xf000, RAM + 0x1_8000));
    }

    #[test]
    fn stage2_off_and_hostile_tables() {
        let mut ram = stage2();
        let range = (RAM + 0x80_0000, RAM + 0x80_1000);
        assert_eq!(
            check(&Hardware { hcr: 0, ..hw() }, &ram, range.0, range.1),
            Err(Violation::Stage2Off { hcr: 0 })
        );
        let unwalkable = |h: Hardware, ram: &FakeRam| match check(&h, ram, range.0, range.1) {
            Err(Violation::HostStage2Unwalkable { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        // Root outside RAM (the secure SRAM), misaligned, a table pointer out of RAM.
        assert_eq!(
            unwalkable(Hardware { vttbr: 0x0e00_0000, ..hw() }, &ram),
            WalkError::OutsideRam(0x0e00_0000)
        );
        assert_eq!(
            unwalkable(Hardware { vttbr: ROOT + 0x1000, ..hw() }, &ram),
            WalkError::MisalignedRoot(ROOT + 0x1000)
        );
        ram.write_u64(L2 + 16, 0x1000 | VALID_TABLE);
        assert_eq!(unwalkable(hw(), &ram), WalkError::OutsideRam(0x1000));
        // A table just past RAM's end.
        ram.write_u64(L2 + 16, (RAM + RAM_SIZE as u64) | VALID_TABLE);
        assert_eq!(unwalkable(hw(), &ram), WalkError::OutsideRam(RAM + RAM_SIZE as u64));
        ram.write_u64(L2 + 16, 0);
        // Fan-out: every root entry -> one L2 whose every entry -> one table of invalid
        // entries: 1024 * 512 * 512 reads, stopped by the budget.
        let mut fan = FakeRam::new(RAM, RAM_SIZE);
        for i in 0..1024 {
            fan.write_u64(ROOT + 8 * i, L2 | VALID_TABLE);
        }
        for i in 0..512 {
            fan.write_u64(L2 + 8 * i, L3 | VALID_TABLE);
        }
        assert_eq!(unwalkable(hw(), &fan), WalkError::Budget);
        // A table pointing at itself is bounded by the levels: L2[5] -> L2 read as level 3,
        // where its table descriptors are pages mapping the tables' own memory.
        ram.write_u64(L2 + 40, L2 | VALID_TABLE);
        let Err(Violation::HostStage2 { mapping, .. }) = check(&hw(), &ram, L3, L3 + 0x1000) else {
            panic!()
        };
        assert_eq!((mapping.pa, mapping.level), (L3, 3));
    }

    const SMMU_TABLE: u64 = RAM + 0x20_0000;

    fn ste(ram: &mut FakeRam, at: u64, w0: u64, vtcr: u64, root: u64) {
        ram.write_u64(at, w0);
        ram.write_u64(at + 16, (vtcr << 32) | STE2_S2AA64);
        ram.write_u64(at + 24, root);
    }

    fn smmu_linear(log2: u32) -> SmmuRegs {
        SmmuRegs {
            idr1: 16,
            cr0ack: CR0_SMMUEN,
            gbpa: GBPA_ABORT,
            strtab_base: SMMU_TABLE,
            strtab_base_cfg: log2,
        }
    }

    #[test]
    fn smmu_disabled_follows_gbpa() {
        let ram = stage2();
        let range = (RAM + 0x80_0000, RAM + 0x80_1000);
        let with = |smmu| Hardware { smmu: Some(smmu), ..hw() };
        let off = SmmuRegs { cr0ack: 0, gbpa: GBPA_ABORT, ..SmmuRegs::default() };
        assert_eq!(check(&with(off), &ram, range.0, range.1), Ok(()));
        let bypass = SmmuRegs { gbpa: 0x1000, ..off };
        assert_eq!(
            check(&with(bypass), &ram, range.0, range.1),
            Err(Violation::SmmuGlobalBypass { gbpa: 0x1000 })
        );
    }

    #[test]
    fn smmu_stream_entries() {
        let mut ram = stage2();
        let range = (RAM + 0x80_0000, RAM + 0x80_1000);
        let with = |smmu| Hardware { smmu: Some(smmu), ..hw() };
        // Four streams: invalid, abort, stage 2 over the host's tables (clean for the range),
        // nested over the same.
        ste(&mut ram, SMMU_TABLE + 64, 1, 0, 0);
        ste(&mut ram, SMMU_TABLE + 128, 1 | (0b110 << 1), VTCR_4K_L1, ROOT);
        ste(&mut ram, SMMU_TABLE + 192, 1 | (0b111 << 1), VTCR_4K_L1, ROOT);
        assert_eq!(check(&with(smmu_linear(2)), &ram, range.0, range.1), Ok(()));
        // Stream 2's tables map the range: a second stage 2 with L2[4] a block there.
        let other_root = RAM + 0x30_0000;
        let other_l2 = RAM + 0x30_2000;
        ram.write_u64(other_root + 8, other_l2 | VALID_TABLE);
        ram.write_u64(other_l2 + 32, (RAM + 0x80_0000) | BLOCK);
        ste(&mut ram, SMMU_TABLE + 128, 1 | (0b110 << 1), VTCR_4K_L1, other_root);
        assert!(matches!(
            check(&with(smmu_linear(2)), &ram, range.0, range.1),
            Err(Violation::SteStage2 { sid: 2, mapping: Mapping { level: 2, .. } })
        ));
        // Bypass and stage 1 alone reach everything.
        for config in [0b100u64, 0b101] {
            ste(&mut ram, SMMU_TABLE + 128, 1 | (config << 1), 0, 0);
            assert_eq!(
                check(&with(smmu_linear(2)), &ram, range.0, range.1),
                Err(Violation::SteReachesAll { sid: 2, config: config as u8 })
            );
        }
        // Only the table's size counts: stream 2 lies beyond a 2-entry table.
        assert_eq!(check(&with(smmu_linear(1)), &ram, range.0, range.1), Ok(()));
        // ...and IDR1.SIDSIZE caps LOG2SIZE.
        let capped = SmmuRegs { idr1: 1, ..smmu_linear(2) };
        assert_eq!(check(&with(capped), &ram, range.0, range.1), Ok(()));
        // A stream table outside RAM; an STE stage 2 outside RAM; an AArch32 stage 2.
        let outside = SmmuRegs { strtab_base: 0x0e00_0000, ..smmu_linear(2) };
        assert_eq!(
            check(&with(outside), &ram, range.0, range.1),
            Err(Violation::StreamTableUnwalkable { why: WalkError::OutsideRam(0x0e00_0000) })
        );
        ste(&mut ram, SMMU_TABLE + 128, 1 | (0b110 << 1), VTCR_4K_L1, 0x1_0000);
        assert_eq!(
            check(&with(smmu_linear(2)), &ram, range.0, range.1),
            Err(Violation::SteUnwalkable { sid: 2, why: WalkError::OutsideRam(0x1_0000) })
        );
        ram.write_u64(SMMU_TABLE + 128 + 16, VTCR_4K_L1 << 32);
        assert!(matches!(
            check(&with(smmu_linear(2)), &ram, range.0, range.1),
            Err(Violation::SteUnwalkable { sid: 2, why: WalkError::Config { .. } })
        ));
    }

    #[test]
    fn smmu_two_level_stream_table() {
        let mut ram = stage2();
        let range = (RAM + 0x80_0000, RAM + 0x80_1000);
        // 8-bit stream IDs, SPLIT = 6: four L1 descriptors; L1[2] spans 4 STEs (Span 3).
        let l2 = RAM + 0x21_0000;
        let cfg = 8 | (6 << 6) | (1 << 16);
        let smmu = SmmuRegs { strtab_base_cfg: cfg, ..smmu_linear(0) };
        let with = Hardware { smmu: Some(smmu), ..hw() };
        ram.write_u64(SMMU_TABLE + 16, l2 | 3);
        ste(&mut ram, l2 + 64 * 3, 1 | (0b110 << 1), VTCR_4K_L1, ROOT);
        assert_eq!(check(&with, &ram, range.0, range.1), Ok(()));
        ste(&mut ram, l2 + 64 * 3, 1 | (0b100 << 1), 0, 0);
        assert_eq!(
            check(&with, &ram, range.0, range.1),
            Err(Violation::SteReachesAll { sid: (2 << 6) | 3, config: 0b100 })
        );
        // A span larger than SPLIT + 1 is not followed.
        ram.write_u64(SMMU_TABLE + 16, l2 | 9);
        assert!(matches!(
            check(&with, &ram, range.0, range.1),
            Err(Violation::StreamTableUnwalkable { .. })
        ));
        // Span 0: no L2 table.
        ram.write_u64(SMMU_TABLE + 16, l2);
        assert_eq!(check(&with, &ram, range.0, range.1), Ok(()));
    }

    #[test]
    fn many_streams_sharing_clean_tables_stay_within_budget() {
        let mut ram = stage2();
        let range = (RAM + 0x80_0000, RAM + 0x80_1000);
        // 2^12 streams all over the host's tables: walked once.
        for sid in 0..4096u64 {
            ste(&mut ram, SMMU_TABLE + 64 * sid, 1 | (0b110 << 1), VTCR_4K_L1, ROOT);
        }
        let with = Hardware { smmu: Some(smmu_linear(12)), ..hw() };
        assert_eq!(check(&with, &ram, range.0, range.1), Ok(()));
    }
}
