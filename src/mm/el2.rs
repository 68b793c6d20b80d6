//! warden's own EL2 stage-1 translation (TTBR0_EL2, HCR_EL2.E2H=0): TCR_EL2, MAIR_EL2,
//! SCTLR_EL2 values and the identity map of what warden needs.

use core::fmt;

use super::frame::FrameAllocator;
use super::pgtable::{Attrs, El2Stage1, MapError, PageTable, Perms, TableLayout, TableStats};
use super::range::MemRange;
use super::tcr::{self, ConfigError};
use crate::arch::TlbMaintenance;

pub use super::pgtable::MAIR_EL2_VALUE;

/// TCR_EL2 (E2H=0) bits 31 and 23 are RES1.
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);

/// SCTLR_EL2.M: stage-1 MMU on.
pub const SCTLR_EL2_M: u64 = 1 << 0;
/// SCTLR_EL2.C: data accesses cacheable.
pub const SCTLR_EL2_C: u64 = 1 << 2;
/// SCTLR_EL2.SA: SP alignment check.
pub const SCTLR_EL2_SA: u64 = 1 << 3;
/// SCTLR_EL2.I: instruction fetches cacheable.
pub const SCTLR_EL2_I: u64 = 1 << 12;
/// SCTLR_EL2.WXN: writable implies execute-never.
pub const SCTLR_EL2_WXN: u64 = 1 << 19;
/// SCTLR_EL2 RES1 bits with HCR_EL2.E2H=0: 4, 5, 11 (EOS), 16, 18, 22 (EIS), 23, 28, 29.
/// EOS/EIS at 1 keep exception entry and return context-synchronizing where FEAT_ExS exists.
/// EE (bit 25) stays 0: little-endian; A (bit 1) stays 0: unaligned accesses allowed to
/// Normal memory.
pub const SCTLR_EL2_RES1: u64 = (1 << 4)
    | (1 << 5)
    | (1 << 11)
    | (1 << 16)
    | (1 << 18)
    | (1 << 22)
    | (1 << 23)
    | (1 << 28)
    | (1 << 29);
/// SCTLR_EL2 with the MMU and both caches on, SP alignment checks and W^X enforced.
pub const SCTLR_EL2_MMU_ON: u64 =
    SCTLR_EL2_RES1 | SCTLR_EL2_M | SCTLR_EL2_C | SCTLR_EL2_SA | SCTLR_EL2_I | SCTLR_EL2_WXN;

/// TCR_EL2 for a `va_bits` (25..=48) VA space on a CPU with a `pa_range_bits` physical range:
/// T0SZ, walks inner/outer WBWA inner shareable, 4 KiB granule, PS from the PA range (52 is
/// capped to 48), TBI clear, RES1 bits 31 and 23.
pub fn el2_tcr(va_bits: u32, pa_range_bits: u32) -> Result<u64, ConfigError> {
    if !(super::pgtable::MIN_VA_BITS..=super::pgtable::MAX_VA_BITS).contains(&va_bits) {
        return Err(ConfigError::UnsupportedInputBits(va_bits));
    }
    let (ps, _) = tcr::ps_field(pa_range_bits)?;
    Ok(TCR_EL2_RES1 | tcr::common_fields(va_bits) | ps)
}

/// warden's EL2 page table.
pub type El2PageTable = PageTable<El2Stage1>;

/// Everything the boot code programs to turn the EL2 MMU on.
#[derive(Debug)]
pub struct El2Map {
    pub table: El2PageTable,
    /// TCR_EL2.
    pub tcr: u64,
    /// MAIR_EL2 ([`MAIR_EL2_VALUE`]).
    pub mair: u64,
    /// SCTLR_EL2 ([`SCTLR_EL2_MMU_ON`]).
    pub sctlr: u64,
    /// TTBR0_EL2: the root's address (CnP clear; no ASID with E2H=0).
    pub ttbr0: u64,
    pub stats: TableStats,
}

/// Why warden's own map could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum El2MapError {
    Config(ConfigError),
    /// Mapping `range` failed.
    Map {
        range: MemRange,
        error: MapError,
    },
}

impl fmt::Display for El2MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            El2MapError::Config(e) => write!(f, "EL2 translation config: {e}"),
            El2MapError::Map { range, error } => write!(f, "EL2 map of {range:?}: {error}"),
        }
    }
}

/// Builds warden's identity map (VA == PA) of `regions` (each page aligned, attributes per
/// [`El2Stage1`]: readable, not both writable and executable) with a `va_bits` VA space, and
/// computes the control register values. On error the partly built tables are freed.
///
/// Meant to run with the EL2 MMU and data cache off; `tlb` maintenance is still issued for the
/// unlikely case of overlapping regions (later ones win). Tables written with the data cache
/// off go straight to memory, while the walker (TCR: WBWA walks) may read through the cache:
/// invalidate the table frames' cache lines (`arch::dcache_range(.., CacheOp::Invalidate, ..)`
/// over the frames the allocator handed out) before setting SCTLR_EL2.M.
pub fn build_el2_identity_map<A, T>(
    regions: &[(MemRange, Attrs)],
    va_bits: u32,
    pa_range_bits: u32,
    frames: &mut A,
    tlb: &T,
) -> Result<El2Map, El2MapError>
where
    A: FrameAllocator + ?Sized,
    T: TlbMaintenance + ?Sized,
{
    let tcr = el2_tcr(va_bits, pa_range_bits).map_err(El2MapError::Config)?;
    let layout = TableLayout::stage1(va_bits)
        .map_err(|_| El2MapError::Config(ConfigError::UnsupportedInputBits(va_bits)))?;
    let mut table = El2PageTable::new(layout, frames)
        .map_err(|error| El2MapError::Map { range: MemRange::default(), error })?;
    for &(range, attrs) in regions {
        if let Err(error) = table.map(range, range.start, attrs, frames, tlb) {
            // SAFETY: the table was built here and never installed in TTBR0_EL2.
            unsafe { table.destroy(frames) };
            return Err(El2MapError::Map { range, error });
        }
    }
    let ttbr0 = table.root_pa();
    let stats = table.stats();
    Ok(El2Map { table, tcr, mair: MAIR_EL2_VALUE, sctlr: SCTLR_EL2_MMU_ON, ttbr0, stats })
}

/// What warden's own EL2 stage-1 maps, identity, for its whole life (see
/// [`warden_regions`]).
#[derive(Clone, Copy, Debug)]
pub struct El2Plan<'a> {
    /// warden's image: `[start, text_end)` code, `[text_end, rodata_end)` read-only data,
    /// `[rodata_end, end)` data, BSS, stacks and pool.
    pub image: WardenImage,
    /// Pages of the image left unmapped (each CPU stack's guard page).
    pub guards: &'a [MemRange],
    /// RAM banks.
    pub ram: &'a [MemRange],
    /// Never mapped (beyond warden's own region): every carveout and every `no-map` reserved
    /// region. Carveouts are mapped only for the moment of warden's own clean/zero step, by
    /// the handoff sequence.
    pub excluded: &'a [MemRange],
    /// Device frames warden drives (page aligned): console, SMMUs, PCIe config space, GIC.
    pub devices: &'a [MemRange],
}

/// warden's image in memory (all page aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WardenImage {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
}

impl WardenImage {
    pub const fn range(&self) -> MemRange {
        MemRange::new(self.start, self.end)
    }
}

/// The regions of warden's EL2 identity map, in order: code RX, read-only data R, the rest of
/// its image RW (minus `guards`), RAM RW-XN minus warden's image and minus `excluded`, then the
/// devices (Device-nGnRE RW). Nothing the host does not own, and no `no-map` region, is ever
/// mapped: a speculative read by warden can only reach its own memory and host RAM (rule 2 of
/// the design: `docs/architecture.md`, *warden's own mappings*). Empty pieces are skipped.
pub fn warden_regions(plan: &El2Plan<'_>, mut push: impl FnMut(MemRange, Attrs)) {
    let mut push = |r: MemRange, a: Attrs| {
        if !r.is_empty() {
            push(r, a)
        }
    };
    let image = plan.image;
    push(MemRange::new(image.start, image.text_end), Attrs::normal(Perms::RX));
    push(MemRange::new(image.text_end, image.rodata_end), Attrs::normal(Perms::R));
    for_each_piece_outside(MemRange::new(image.rodata_end, image.end), plan.guards, |r| {
        push(r, Attrs::normal(Perms::RW))
    });
    for bank in plan.ram {
        for_each_piece_outside(*bank, &[image.range()], |piece| {
            for_each_piece_outside(piece, plan.excluded, |r| push(r, Attrs::normal(Perms::RW)))
        });
    }
    for dev in plan.devices {
        push(*dev, Attrs::device(Perms::RW));
    }
}

/// Calls `f` for each piece of `range` outside every one of `holes` (any order; each widened
/// to whole pages), lowest first.
fn for_each_piece_outside(range: MemRange, holes: &[MemRange], mut f: impl FnMut(MemRange)) {
    let mut cursor = range.start;
    while cursor < range.end {
        let rest = MemRange::new(cursor, range.end);
        let next_hole = holes
            .iter()
            .filter_map(|h| h.page_aligned_outward())
            .filter(|h| h.overlaps(&rest))
            .min_by_key(|h| h.start);
        match next_hole {
            None => return f(rest),
            Some(h) => {
                if h.start > cursor {
                    f(MemRange::new(cursor, h.start));
                }
                cursor = cursor.max(h.end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::fake::Recorder;
    use crate::mm::frame::test_support::HeapFrames;
    use crate::mm::pgtable::Perms;

    #[test]
    fn tcr_encodings() {
        // T0SZ | IRGN0=01 | ORGN0=01 | SH0=11 | TG0=4K | PS | RES1 bits 31, 23.
        for (va, pa, tcr) in [
            (32, 32, 0x8080_3520),
            (39, 48, 0x8085_3519),
            (40, 40, 0x8082_3518),
            (44, 44, 0x8084_3514),
            (48, 40, 0x8082_3510),
            (48, 52, 0x8085_3510),
        ] {
            assert_eq!(el2_tcr(va, pa), Ok(tcr), "va {va} pa {pa}");
        }
        assert_eq!(el2_tcr(49, 48), Err(ConfigError::UnsupportedInputBits(49)));
        assert_eq!(el2_tcr(24, 48), Err(ConfigError::UnsupportedInputBits(24)));
        assert_eq!(el2_tcr(39, 50), Err(ConfigError::UnsupportedPaRange(50)));
    }

    #[test]
    fn sctlr_value() {
        assert_eq!(SCTLR_EL2_RES1, 0x30c5_0830);
        assert_eq!(SCTLR_EL2_MMU_ON, 0x30cd_183d);
        assert_eq!(SCTLR_EL2_MMU_ON & (1 << 25), 0, "little-endian");
    }

    #[test]
    fn builds_warden_identity_map() {
        let mut frames = HeapFrames::new(16);
        let rec = Recorder::new(64);
        let code = MemRange::new(0x4020_0000, 0x4028_0000);
        let data = MemRange::new(0x4028_0000, 0x40c0_0000);
        let uart = MemRange::new(0x0900_0000, 0x0900_1000);
        let regions = [
            (code, Attrs::normal(Perms::RX)),
            (data, Attrs::normal(Perms::RW)),
            (uart, Attrs::device(Perms::RW)),
        ];
        let m = build_el2_identity_map(&regions, 39, 48, &mut frames, &rec).unwrap();
        assert_eq!(m.tcr, 0x8085_3519);
        assert_eq!(m.mair, 0x44_04ff);
        assert_eq!(m.sctlr, SCTLR_EL2_MMU_ON);
        assert_eq!(m.ttbr0, m.table.root_pa());
        assert_eq!(m.table.layout().start_level(), 1);
        let t = m.table.translate(0x4020_1234).unwrap();
        assert_eq!((t.pa, t.attrs), (0x4020_1234, Attrs::normal(Perms::RX)));
        assert_eq!(m.table.translate(0x40bf_ffff).unwrap().attrs, Attrs::normal(Perms::RW));
        assert_eq!(m.table.translate(0x40c0_0000), None);
        assert_eq!(m.table.translate(0x0900_0000).unwrap().attrs, Attrs::device(Perms::RW));
        assert_eq!(m.table.translate(0x0900_1000), None);
        // data: 0x4028_0000..0x4040_0000 pages, then 4 blocks of 2 MiB.
        assert_eq!((m.stats.blocks_2m, m.stats.pages_4k), (4, 128 + 384 + 1));
        assert_eq!(m.stats.table_pages, frames.pool.allocated_pages());
    }

    #[test]
    fn refuses_writable_code_and_frees_tables() {
        let mut frames = HeapFrames::new(16);
        let rec = Recorder::new(64);
        let r = MemRange::new(0x4000_0000, 0x4000_1000);
        let ok = MemRange::new(0x5000_0000, 0x5000_1000);
        let regions = [(ok, Attrs::normal(Perms::R)), (r, Attrs::normal(Perms::RWX))];
        assert_eq!(
            build_el2_identity_map(&regions, 39, 48, &mut frames, &rec).unwrap_err(),
            El2MapError::Map {
                range: r,
                error: MapError::UnsupportedAttrs(Attrs::normal(Perms::RWX))
            }
        );
        assert_eq!(frames.pool.allocated_pages(), 0);
        let unaligned = [(MemRange::new(0x4000_0800, 0x4000_1000), Attrs::normal(Perms::R))];
        assert!(matches!(
            build_el2_identity_map(&unaligned, 39, 48, &mut frames, &rec),
            Err(El2MapError::Map { error: MapError::Unaligned { .. }, .. })
        ));
        assert!(matches!(
            build_el2_identity_map(&[], 20, 48, &mut frames, &rec),
            Err(El2MapError::Config(ConfigError::UnsupportedInputBits(20)))
        ));
        assert_eq!(frames.pool.allocated_pages(), 0);
    }

    #[test]
    fn warden_regions_leave_out_carveouts_no_map_regions_and_guards() {
        let ram =
            [MemRange::new(0x4000_0000, 0x8000_0000), MemRange::new(0x1_0000_0000, 0x1_0010_0000)];
        let image = WardenImage {
            start: 0x4020_0000,
            text_end: 0x4024_0000,
            rodata_end: 0x4026_0000,
            end: 0x4040_0000,
        };
        let guards = [MemRange::new(0x4030_0000, 0x4030_1000)];
        let modem = MemRange::new(0x7c00_0000, 0x7d00_0000);
        let dsp = MemRange::new(0x7d00_0000, 0x7e00_0000);
        // A no-map region not page aligned: widened to whole pages.
        let firmware = MemRange::new(0x7f00_0800, 0x7f00_1800);
        let uart = MemRange::new(0x0900_0000, 0x0900_1000);
        let plan = El2Plan {
            image,
            guards: &guards,
            ram: &ram,
            excluded: &[dsp, firmware, modem],
            devices: &[uart],
        };
        let mut got = alloc::vec::Vec::new();
        warden_regions(&plan, |r, a| got.push((r, a)));
        let rw = Attrs::normal(Perms::RW);
        assert_eq!(
            got,
            [
                (MemRange::new(0x4020_0000, 0x4024_0000), Attrs::normal(Perms::RX)),
                (MemRange::new(0x4024_0000, 0x4026_0000), Attrs::normal(Perms::R)),
                (MemRange::new(0x4026_0000, 0x4030_0000), rw),
                (MemRange::new(0x4030_1000, 0x4040_0000), rw),
                (MemRange::new(0x4000_0000, 0x4020_0000), rw),
                (MemRange::new(0x4040_0000, 0x7c00_0000), rw),
                (MemRange::new(0x7e00_0000, 0x7f00_0000), rw),
                (MemRange::new(0x7f00_2000, 0x8000_0000), rw),
                (ram[1], rw),
                (uart, Attrs::device(Perms::RW)),
            ]
        );
        assert!(got.iter().all(|(r, a)| a.kind != crate::mm::MemKind::NormalNonCacheable
            && !r.overlaps(&modem)
            && !r.overlaps(&dsp)
            && !r.overlaps(&firmware)));
    }
}
