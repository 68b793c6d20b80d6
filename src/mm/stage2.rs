//! The host's stage-2 translation: VTCR_EL2/VTTBR_EL2 values and the identity map of host RAM
//! and devices, minus the holes the host must not reach (warden's memory, SMMU registers, and
//! later carveouts).

use core::fmt;

use super::frame::FrameAllocator;
use super::pgtable::{Attrs, MapError, PageTable, Perms, Stage2, TableLayout, TableStats};
use super::range::{MemRange, PAGE_SIZE, align_down, align_up};
use super::tcr::{self, ConfigError};
use crate::arch::TlbMaintenance;

/// Smallest IPA size warden configures.
pub const MIN_IPA_BITS: u32 = 32;
/// Largest IPA size with 4 KiB granule and no FEAT_LPA2.
pub const MAX_IPA_BITS: u32 = 48;

/// VTCR_EL2 bit 31 is RES1.
const VTCR_RES1: u64 = 1 << 31;
/// VTCR_EL2.SL0[7:6] for the 4 KiB granule: 0b00 = level 2, 0b01 = level 1, 0b10 = level 0.
const VTCR_SL0_SHIFT: u32 = 6;
/// VTCR_EL2.VS[19]: 16-bit VMID.
const VTCR_VS_16BIT: u64 = 1 << 19;
/// `VTTBR_EL2.VMID[63:48]` (only `[55:48]` with 8-bit VMIDs).
const VTTBR_VMID_SHIFT: u32 = 48;
/// VTTBR_EL2.BADDR: bits [47:1]; CnP (bit 0) left clear.
const VTTBR_BADDR_MASK: u64 = 0x0000_ffff_ffff_fffe;

/// Stage-2 translation parameters for one IPA size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    ipa_bits: u32,
    pa_range_bits: u32,
    vmid16: bool,
    layout: TableLayout,
    vtcr: u64,
}

impl Stage2Config {
    /// `ipa_bits` (32..=48) of IPA space on a CPU whose ID_AA64MMFR0.PARange is
    /// `pa_range_bits`; `vmid16` when ID_AA64MMFR1.VMIDBits reports 16-bit VMIDs.
    ///
    /// Walks start at level 1 up to 42 bits (2^(ipa_bits-39) concatenated level-1 tables above
    /// 39 bits, at most 8) and at level 0 for 43..=48 bits. PS is the CPU's PA range (capped
    /// at 48 bits, see [`tcr::pa_range_bits_from_mmfr0`]), which must cover the IPA space.
    pub fn new(ipa_bits: u32, pa_range_bits: u32, vmid16: bool) -> Result<Self, ConfigError> {
        if !(MIN_IPA_BITS..=MAX_IPA_BITS).contains(&ipa_bits) {
            return Err(ConfigError::UnsupportedInputBits(ipa_bits));
        }
        let (ps, ps_bits) = tcr::ps_field(pa_range_bits)?;
        if ipa_bits > ps_bits {
            return Err(ConfigError::InputExceedsPaRange { input_bits: ipa_bits, pa_range_bits });
        }
        let (start_level, root_tables) =
            if ipa_bits <= 42 { (1, 1usize << ipa_bits.saturating_sub(39)) } else { (0, 1) };
        let layout = TableLayout::new(ipa_bits, start_level, root_tables)
            .map_err(|_| ConfigError::UnsupportedInputBits(ipa_bits))?;
        let sl0: u64 = match start_level {
            0 => 0b10,
            _ => 0b01,
        };
        let mut vtcr = VTCR_RES1 | tcr::common_fields(ipa_bits) | (sl0 << VTCR_SL0_SHIFT) | ps;
        if vmid16 {
            vtcr |= VTCR_VS_16BIT;
        }
        Ok(Self { ipa_bits, pa_range_bits, vmid16, layout, vtcr })
    }

    pub fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }
    pub fn pa_range_bits(&self) -> u32 {
        self.pa_range_bits
    }
    pub fn vmid16(&self) -> bool {
        self.vmid16
    }
    pub fn start_level(&self) -> u8 {
        self.layout.start_level()
    }
    pub fn root_tables(&self) -> usize {
        self.layout.root_tables()
    }
    /// The table layout to build with [`PageTable::new`].
    pub fn layout(&self) -> TableLayout {
        self.layout
    }
    /// The VTCR_EL2 value.
    pub fn vtcr(&self) -> u64 {
        self.vtcr
    }

    /// VTTBR_EL2 for a root built with this config, checking the VMID width and that the root
    /// is aligned to its concatenated size.
    pub fn vttbr(&self, root_pa: u64, vmid: u16) -> Result<u64, ConfigError> {
        if !self.vmid16 && vmid > u16::from(u8::MAX) {
            return Err(ConfigError::VmidTooWide { vmid, vmid16: false });
        }
        let root_bytes = self.root_tables() as u64 * PAGE_SIZE;
        if !root_pa.is_multiple_of(root_bytes) || root_pa & !VTTBR_BADDR_MASK != 0 {
            return Err(ConfigError::MisalignedRoot { root_pa });
        }
        Ok(vttbr(root_pa, vmid))
    }
}

/// VTTBR_EL2 = `VMID[63:48]` | BADDR (CnP clear). No checks: see [`Stage2Config::vttbr`].
pub fn vttbr(root_pa: u64, vmid: u16) -> u64 {
    (u64::from(vmid) << VTTBR_VMID_SHIFT) | (root_pa & VTTBR_BADDR_MASK)
}

/// The smallest IPA size (at least 32 bits; one of 32, 36, 40, 42, 44, 48, matching the PS
/// encodings) whose space contains every address below `max_end`, or `None` above 48 bits.
pub fn ipa_bits_for(max_end: u64) -> Option<u32> {
    [32u32, 36, 40, 42, 44, 48].into_iter().find(|&bits| max_end <= 1u64 << bits)
}

/// What the host may reach: identity-mapped RAM and devices, minus holes.
#[derive(Clone, Copy, Debug)]
pub struct HostStage2Spec<'a> {
    /// Host RAM: mapped Normal RWX. Shrunk inward to page boundaries.
    pub ram: &'a [MemRange],
    /// Device regions: mapped Device-nGnRE RW, execute-never. Widened outward to pages.
    pub devices: &'a [MemRange],
    /// Never mapped (warden's memory, SMMU register frames, the control page). Widened
    /// outward.
    pub holes: &'a [MemRange],
    /// Ranges whose edges are entry boundaries at every level (the carveouts): the 2 MiB and
    /// 1 GiB blocks straddling an edge are split (as far as needed), blocks wholly inside or
    /// outside stay. A handoff inside a carveout then never breaks an entry that maps the
    /// host's other memory. Widened outward.
    pub split: &'a [MemRange],
    /// ID_AA64MMFR0_EL1.PARange in bits.
    pub pa_range_bits: u32,
    /// ID_AA64MMFR1_EL1.VMIDBits says 16.
    pub vmid16: bool,
}

/// Why the host stage-2 could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStage2Error {
    /// No RAM range is at least one page after alignment.
    NoRam,
    /// A range ends before it starts.
    InvalidRange(MemRange),
    /// A range reaches beyond the largest supported IPA size.
    TooLarge(MemRange),
    /// RAM and a device region overlap.
    RamDeviceOverlap {
        ram: MemRange,
        device: MemRange,
    },
    Config(ConfigError),
    Map(MapError),
}

impl fmt::Display for HostStage2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostStage2Error::NoRam => write!(f, "no host RAM to map"),
            HostStage2Error::InvalidRange(r) => write!(f, "invalid range {r:?}"),
            HostStage2Error::TooLarge(r) => write!(f, "range {r:?} is beyond 48-bit IPA space"),
            HostStage2Error::RamDeviceOverlap { ram, device } => {
                write!(f, "RAM {ram:?} overlaps device region {device:?}")
            }
            HostStage2Error::Config(e) => write!(f, "stage-2 config: {e}"),
            HostStage2Error::Map(e) => write!(f, "stage-2 map: {e}"),
        }
    }
}

impl From<ConfigError> for HostStage2Error {
    fn from(e: ConfigError) -> Self {
        HostStage2Error::Config(e)
    }
}

impl From<MapError> for HostStage2Error {
    fn from(e: MapError) -> Self {
        HostStage2Error::Map(e)
    }
}

/// The built host stage-2.
#[derive(Debug)]
pub struct HostStage2 {
    pub table: PageTable<Stage2>,
    pub config: Stage2Config,
    pub stats: TableStats,
}

impl HostStage2 {
    /// VTCR_EL2 to program.
    pub fn vtcr(&self) -> u64 {
        self.config.vtcr()
    }
    /// VTTBR_EL2 to program for the host's `vmid`.
    pub fn vttbr(&self, vmid: u16) -> Result<u64, ConfigError> {
        self.config.vttbr(self.table.root_pa(), vmid)
    }
}

/// Host RAM: Normal, cacheable, full access (the host's stage 1 decides the rest).
pub const HOST_RAM_ATTRS: Attrs = Attrs::normal(Perms::RWX);
/// Host devices: Device-nGnRE, read/write, never executable.
pub const HOST_DEVICE_ATTRS: Attrs = Attrs::device(Perms::RW);

fn ram_pages(r: MemRange) -> Result<Option<MemRange>, HostStage2Error> {
    if r.end < r.start {
        return Err(HostStage2Error::InvalidRange(r));
    }
    let start = align_up(r.start, PAGE_SIZE).ok_or(HostStage2Error::TooLarge(r))?;
    let aligned = MemRange::new(start, align_down(r.end, PAGE_SIZE));
    Ok((!aligned.is_empty()).then_some(aligned))
}

fn outward_pages(r: MemRange) -> Result<Option<MemRange>, HostStage2Error> {
    if r.end < r.start {
        return Err(HostStage2Error::InvalidRange(r));
    }
    let aligned = r.page_aligned_outward().ok_or(HostStage2Error::TooLarge(r))?;
    Ok((!r.is_empty()).then_some(aligned))
}

/// Calls `f` for each piece of `range` not covered by any (page-aligned) hole, in order.
fn for_each_piece(
    range: MemRange,
    holes: &[MemRange],
    mut f: impl FnMut(MemRange) -> Result<(), HostStage2Error>,
) -> Result<(), HostStage2Error> {
    let mut cursor = range.start;
    while cursor < range.end {
        let rest = MemRange::new(cursor, range.end);
        // The lowest-starting hole still overlapping what is left.
        let mut next_hole: Option<MemRange> = None;
        for hole in holes {
            if let Some(h) = outward_pages(*hole)?
                && h.overlaps(&rest)
                && next_hole.is_none_or(|n| h.start < n.start)
            {
                next_hole = Some(h);
            }
        }
        match next_hole {
            None => return f(rest),
            Some(h) => {
                if h.start > cursor {
                    f(MemRange::new(cursor, h.start))?;
                }
                cursor = cursor.max(h.end);
            }
        }
    }
    Ok(())
}

/// Builds the host's identity stage-2: every page of `spec.ram` minus holes as
/// [`HOST_RAM_ATTRS`], every page of `spec.devices` minus holes as [`HOST_DEVICE_ATTRS`],
/// with the largest blocks that fit, then splits the blocks straddling an edge of a
/// `spec.split` range. The IPA size is the
/// smallest covering all of them. On error the partly built tables are freed.
pub fn build_host_stage2<A, T>(
    spec: &HostStage2Spec<'_>,
    frames: &mut A,
    tlb: &T,
) -> Result<HostStage2, HostStage2Error>
where
    A: FrameAllocator + ?Sized,
    T: TlbMaintenance + ?Sized,
{
    let mut max_end = 0u64;
    let mut any_ram = false;
    for ram in spec.ram {
        if let Some(r) = ram_pages(*ram)? {
            any_ram = true;
            max_end = max_end.max(r.end);
            for dev in spec.devices {
                if let Some(d) = outward_pages(*dev)?
                    && d.overlaps(&r)
                {
                    return Err(HostStage2Error::RamDeviceOverlap { ram: *ram, device: *dev });
                }
            }
        }
    }
    if !any_ram {
        return Err(HostStage2Error::NoRam);
    }
    for dev in spec.devices {
        if let Some(d) = outward_pages(*dev)? {
            max_end = max_end.max(d.end);
        }
    }
    for hole in spec.holes.iter().chain(spec.split) {
        outward_pages(*hole)?;
    }
    let ipa_bits =
        ipa_bits_for(max_end).ok_or(HostStage2Error::TooLarge(MemRange::new(0, max_end)))?;
    let config = Stage2Config::new(ipa_bits, spec.pa_range_bits, spec.vmid16)?;
    let mut table = PageTable::<Stage2>::new(config.layout(), frames)?;

    let mut result = Ok(());
    'outer: for (ranges, attrs, inward) in
        [(spec.ram, HOST_RAM_ATTRS, true), (spec.devices, HOST_DEVICE_ATTRS, false)]
    {
        for range in ranges {
            let aligned = if inward { ram_pages(*range) } else { outward_pages(*range) };
            let aligned = match aligned {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    result = Err(e);
                    break 'outer;
                }
            };
            result = for_each_piece(aligned, spec.holes, |piece| {
                table.map(piece, piece.start, attrs, frames, tlb).map_err(HostStage2Error::Map)
            });
            if result.is_err() {
                break 'outer;
            }
        }
    }
    if result.is_ok() {
        for range in spec.split {
            let Ok(Some(pages)) = outward_pages(*range) else { continue };
            // Beyond the IPA space nothing is mapped, so nothing is to split.
            let limit = config.layout().va_limit();
            if pages.start >= limit {
                continue;
            }
            // Only the blocks straddling an edge: a block wholly inside stays one entry (a
            // handoff of all of it changes that entry alone), one wholly outside is the host's
            // other memory, which no handoff of the carveout ever breaks.
            result = [pages.start, pages.end.min(limit)]
                .into_iter()
                .try_for_each(|edge| table.split_at(edge, frames, tlb))
                .map_err(HostStage2Error::Map);
            if result.is_err() {
                break;
            }
        }
    }
    if let Err(e) = result {
        // SAFETY: the table was built here and never installed in VTTBR_EL2, so no walker or
        // TLB can refer to it.
        unsafe { table.destroy(frames) };
        return Err(e);
    }
    let stats = table.stats();
    Ok(HostStage2 { table, config, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::fake::Recorder;
    use crate::mm::frame::test_support::HeapFrames;
    use crate::mm::pgtable::MemKind;

    const SZ_2M: u64 = 2 << 20;
    const SZ_1G: u64 = 1 << 30;
    const WARDEN: MemRange = MemRange::new(0x4020_0000, 0x40c0_0000);
    const SMMU: MemRange = MemRange::new(0x0905_0000, 0x0907_0000);
    const DEVICES: MemRange = MemRange::new(0x0800_0000, 0x0a00_0000);

    fn spec<'a>(
        ram: &'a [MemRange],
        devices: &'a [MemRange],
        holes: &'a [MemRange],
    ) -> HostStage2Spec<'a> {
        HostStage2Spec { ram, devices, holes, split: &[], pa_range_bits: 48, vmid16: false }
    }

    #[test]
    fn qemu_like_host_map() {
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(64);
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        let s2 =
            build_host_stage2(&spec(&ram, &[DEVICES], &[WARDEN, SMMU]), &mut frames, &rec).unwrap();
        assert_eq!(s2.config.ipa_bits(), 32);
        assert_eq!((s2.config.start_level(), s2.config.root_tables()), (1, 1));
        // RAM: 1 block below the hole, 506 above; devices: 8 + 7 blocks, 80 + 400 pages
        // around the SMMU frames, all in one level-3 table.
        assert_eq!(
            s2.stats,
            TableStats { blocks_1g: 0, blocks_2m: 507 + 15, pages_4k: 480, table_pages: 4 }
        );
        assert_eq!(s2.stats.table_pages, frames.pool.allocated_pages());
        let maps = s2.table.mappings();
        for m in &maps {
            assert_eq!(m.va, m.pa, "identity");
            if ram[0].contains(m.va) {
                assert_eq!((m.size, m.attrs), (SZ_2M, HOST_RAM_ATTRS));
                assert!(!WARDEN.overlaps(&MemRange::new(m.va, m.va + m.size)));
            } else {
                assert!(DEVICES.contains(m.va));
                assert_eq!(m.attrs, HOST_DEVICE_ATTRS);
                assert!(!SMMU.overlaps(&MemRange::new(m.va, m.va + m.size)));
                if m.size == PAGE_SIZE {
                    assert!(MemRange::new(0x0900_0000, 0x0920_0000).contains(m.va));
                }
            }
        }
        let mapped: u64 = maps.iter().map(|m| m.size).sum();
        assert_eq!(mapped, (SZ_1G - WARDEN.size()) + (DEVICES.size() - SMMU.size()));

        for hole in [WARDEN.start, WARDEN.end - 1, SMMU.start, SMMU.end - 1, 0x0a00_0000, 0] {
            assert_eq!(s2.table.translate(hole), None, "{hole:#x}");
        }
        let ram_t = s2.table.translate(WARDEN.start - 8).unwrap();
        assert_eq!(
            (ram_t.pa, ram_t.level, ram_t.attrs.kind),
            (WARDEN.start - 8, 2, MemKind::Normal)
        );
        assert!(ram_t.attrs.perms.exec && ram_t.attrs.perms.write);
        assert_eq!(s2.table.translate(WARDEN.end).unwrap().pa, WARDEN.end);
        let uart = s2.table.translate(0x0900_0000).unwrap();
        assert_eq!((uart.level, uart.attrs), (3, Attrs::device(Perms::RW)));
        assert!(!uart.attrs.perms.exec, "devices are XN");
        assert_eq!(s2.table.translate(SMMU.end).unwrap().level, 3);
        assert_eq!(s2.table.translate(0x0800_0000).unwrap().level, 2);
        assert_eq!(s2.vtcr(), s2.config.vtcr());
        assert_eq!(s2.vttbr(1).unwrap(), (1 << 48) | s2.table.root_pa());
    }

    #[test]
    fn carveouts_split_only_where_a_block_straddles_an_edge() {
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(64);
        let ram = [MemRange::new(0x4000_0000, 0x1_4000_0000)];
        // One carveout inside a 1 GiB block, its edges inside 2 MiB blocks; one 2 MiB aligned,
        // starting on a GiB boundary.
        let odd = MemRange::new(0x8010_0000, 0x8030_0000);
        let aligned = MemRange::new(0xc000_0000, 0xc040_0000);
        let spec = HostStage2Spec { split: &[odd, aligned], ..spec(&ram, &[], &[WARDEN]) };
        let s2 = build_host_stage2(&spec, &mut frames, &rec).unwrap();
        let level = |addr: u64| s2.table.translate(addr).unwrap().level;
        // The 2 MiB blocks around `odd`'s edges became pages, the rest of its GiB 2 MiB blocks.
        for addr in (0x8000_0000..0x8040_0000).step_by(PAGE_SIZE as usize) {
            let t = s2.table.translate(addr).unwrap();
            assert_eq!((t.pa, t.level, t.attrs), (addr, 3, HOST_RAM_ATTRS), "{addr:#x}");
        }
        assert_eq!(level(0x8040_0000), 2);
        assert_eq!(level(0xbfff_f000), 2);
        // `aligned`: its end splits the GiB into 2 MiB blocks, and no page anywhere: a handoff
        // of all of it changes two block entries.
        for addr in (0xc000_0000..0xc040_0000).step_by(PAGE_SIZE as usize) {
            let t = s2.table.translate(addr).unwrap();
            assert_eq!((t.pa, t.level, t.attrs), (addr, 2, HOST_RAM_ATTRS), "{addr:#x}");
        }
        assert_eq!(level(0xc040_0000), 2);
        assert_eq!(level(0x1_0000_0000), 1);
        // No leaf straddles an edge.
        for m in s2.table.mappings() {
            let leaf = MemRange::new(m.va, m.va + m.size);
            for edge in [odd.start, odd.end, aligned.start, aligned.end] {
                assert!(!(leaf.start < edge && edge < leaf.end), "{leaf:?} straddles {edge:#x}");
            }
        }
        // Nothing else changed: the same memory mapped the same way.
        let plain = build_host_stage2(&spec_of(&ram, &[WARDEN]), &mut frames, &rec).unwrap();
        let regions = |t: &PageTable<Stage2>| {
            let mut v = Vec::new();
            t.for_each_region(|m| v.push((m.va, m.pa, m.size, m.attrs)));
            v
        };
        assert_eq!(regions(&s2.table), regions(&plain.table));
        assert_eq!(
            (s2.stats.blocks_1g, s2.stats.blocks_2m, s2.stats.pages_4k),
            (1, 507 + 510 + 512, 1024)
        );
        // Tables: the root, the first GiB's (warden's hole), two for `odd`'s GiB and its two
        // edge blocks, one for `aligned`'s GiB.
        assert_eq!(s2.stats.table_pages, 1 + 1 + (1 + 2) + 1);
        // A carveout beyond the IPA space (not in RAM): nothing to split, no error.
        let far = [MemRange::new(0x100_0000_0000, 0x100_0010_0000)];
        let spec = HostStage2Spec { split: &far, ..spec_of(&ram, &[WARDEN]) };
        assert!(build_host_stage2(&spec, &mut frames, &rec).is_ok());
    }

    fn spec_of<'a>(ram: &'a [MemRange], holes: &'a [MemRange]) -> HostStage2Spec<'a> {
        spec(ram, &[], holes)
    }

    #[test]
    fn four_gib_ram_uses_1g_blocks() {
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(64);
        let ram = [MemRange::new(0x4000_0000, 0x1_4000_0000)];
        let s2 = build_host_stage2(&spec(&ram, &[DEVICES], &[]), &mut frames, &rec).unwrap();
        assert_eq!(s2.config.ipa_bits(), 36);
        assert_eq!((s2.stats.blocks_1g, s2.stats.blocks_2m, s2.stats.pages_4k), (4, 16, 0));
        assert_eq!(s2.table.translate(0x1_3fff_ffff).unwrap().level, 1);
        // With warden's hole the first GiB splits into 2 MiB blocks, the other three stay.
        let s2 = build_host_stage2(&spec(&ram, &[], &[WARDEN]), &mut frames, &rec).unwrap();
        assert_eq!((s2.stats.blocks_1g, s2.stats.blocks_2m, s2.stats.pages_4k), (3, 507, 0));
    }

    #[test]
    fn one_tib_ipa_space_concatenates_two_level1_tables() {
        assert_eq!(ipa_bits_for(0x100_0000_0000), Some(40));
        let c = Stage2Config::new(40, 40, false).unwrap();
        assert_eq!((c.start_level(), c.root_tables()), (1, 2));
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(64);
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        // QEMU virt's high PCIe MMIO window: 512 GiB at 512 GiB.
        let devices = [DEVICES, MemRange::new(0x80_0000_0000, 0x100_0000_0000)];
        let mut sp = spec(&ram, &devices, &[WARDEN, SMMU]);
        sp.pa_range_bits = 40;
        let s2 = build_host_stage2(&sp, &mut frames, &rec).unwrap();
        assert_eq!((s2.config.ipa_bits(), s2.config.root_tables()), (40, 2));
        assert_eq!(s2.table.root_pa() % (2 * PAGE_SIZE), 0);
        assert_eq!(s2.stats.blocks_1g, 512);
        let t = s2.table.translate(0xff_ffff_f000).unwrap();
        assert_eq!((t.pa, t.level, t.attrs), (0xff_ffff_f000, 1, HOST_DEVICE_ATTRS));
        assert_eq!(s2.stats.table_pages, frames.pool.allocated_pages());
        // A CPU with a 36-bit PA range cannot hold that IPA space.
        sp.pa_range_bits = 36;
        let before = frames.pool.allocated_pages();
        assert_eq!(
            build_host_stage2(&sp, &mut frames, &rec).unwrap_err(),
            HostStage2Error::Config(ConfigError::InputExceedsPaRange {
                input_bits: 40,
                pa_range_bits: 36
            })
        );
        assert_eq!(frames.pool.allocated_pages(), before);
    }

    #[test]
    fn hostile_specs_are_errors() {
        let mut frames = HeapFrames::new(4);
        let rec = Recorder::new(64);
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        let overlapping = [MemRange::new(0x7fff_f000, 0x8000_1000)];
        assert!(matches!(
            build_host_stage2(&spec(&ram, &overlapping, &[]), &mut frames, &rec),
            Err(HostStage2Error::RamDeviceOverlap { .. })
        ));
        assert_eq!(
            build_host_stage2(&spec(&[], &[DEVICES], &[]), &mut frames, &rec).unwrap_err(),
            HostStage2Error::NoRam
        );
        let tiny = [MemRange::new(0x4000_0001, 0x4000_0fff)];
        assert_eq!(
            build_host_stage2(&spec(&tiny, &[], &[]), &mut frames, &rec).unwrap_err(),
            HostStage2Error::NoRam
        );
        let inverted = [MemRange::new(0x5000, 0x4000)];
        assert!(matches!(
            build_host_stage2(&spec(&ram, &[], &inverted), &mut frames, &rec),
            Err(HostStage2Error::InvalidRange(_))
        ));
        let huge = [MemRange::new(0, 1 << 49)];
        assert!(matches!(
            build_host_stage2(&spec(&huge, &[], &[]), &mut frames, &rec),
            Err(HostStage2Error::TooLarge(_))
        ));
        let wrapping = [MemRange::new(u64::MAX - 5, u64::MAX)];
        assert!(matches!(
            build_host_stage2(&spec(&ram, &wrapping, &[]), &mut frames, &rec),
            Err(HostStage2Error::TooLarge(_))
        ));
        let mut sp = spec(&ram, &[], &[]);
        sp.pa_range_bits = 39;
        assert_eq!(
            build_host_stage2(&sp, &mut frames, &rec).unwrap_err(),
            HostStage2Error::Config(ConfigError::UnsupportedPaRange(39))
        );
        // Out of frames half-way: the error is reported and nothing leaks.
        let spread =
            [MemRange::new(0x4000_1000, 0x4000_2000), MemRange::new(0x7000_1000, 0x7000_2000)];
        let mut one_l3 = HeapFrames::new(3);
        assert_eq!(
            build_host_stage2(&spec(&spread, &[], &[]), &mut one_l3, &rec).unwrap_err(),
            HostStage2Error::Map(MapError::OutOfFrames)
        );
        assert_eq!(one_l3.pool.allocated_pages(), 0);
        assert_eq!(frames.pool.allocated_pages(), 0);
        assert!(format!("{}", HostStage2Error::NoRam).contains("RAM"));
    }

    #[test]
    fn holes_split_ranges_in_any_order() {
        let mut pieces = Vec::new();
        let holes = [
            MemRange::new(0x9000, 0xa000),
            MemRange::new(0x2800, 0x3001), // widened to [0x2000, 0x4000)
            MemRange::new(0, 0x1000),
            MemRange::new(0x8000, 0x9800),
        ];
        for_each_piece(MemRange::new(0x1000, 0xc000), &holes, |p| {
            pieces.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            pieces,
            vec![
                MemRange::new(0x1000, 0x2000),
                MemRange::new(0x4000, 0x8000),
                MemRange::new(0xa000, 0xc000)
            ]
        );
    }

    #[test]
    fn vtcr_encodings() {
        // T0SZ | SL0 | IRGN0=01 | ORGN0=01 | SH0=11 | TG0=4K | PS | VS | RES1 bit 31.
        let cases = [
            (32, 40, false, 0x8002_3560, 1, 1),
            (40, 40, false, 0x8002_3558, 1, 2),
            (42, 44, false, 0x8004_3556, 1, 8),
            (44, 44, false, 0x8004_3594, 0, 1),
            (48, 48, true, 0x800d_3590, 0, 1),
            (48, 52, false, 0x8005_3590, 0, 1),
        ];
        for (ipa, pa, vmid16, vtcr, level, roots) in cases {
            let c = Stage2Config::new(ipa, pa, vmid16).unwrap();
            assert_eq!(c.vtcr(), vtcr, "ipa {ipa} pa {pa}: {:#x}", c.vtcr());
            assert_eq!((c.start_level(), c.root_tables()), (level, roots));
            assert_eq!(c.vtcr() & 0x3f, u64::from(64 - ipa));
        }
        assert_eq!(Stage2Config::new(31, 48, false), Err(ConfigError::UnsupportedInputBits(31)));
        assert_eq!(Stage2Config::new(49, 52, false), Err(ConfigError::UnsupportedInputBits(49)));
        assert!(matches!(
            Stage2Config::new(44, 42, false),
            Err(ConfigError::InputExceedsPaRange { .. })
        ));
    }

    #[test]
    fn vttbr_values() {
        assert_eq!(vttbr(0x4010_0000, 0x12), 0x0012_0000_4010_0000);
        let c8 = Stage2Config::new(40, 40, false).unwrap();
        assert_eq!(c8.vttbr(0x4010_0000, 0xff), Ok(0x00ff_0000_4010_0000));
        assert_eq!(
            c8.vttbr(0x4010_0000, 0x100),
            Err(ConfigError::VmidTooWide { vmid: 0x100, vmid16: false })
        );
        assert_eq!(
            c8.vttbr(0x4010_1000, 1),
            Err(ConfigError::MisalignedRoot { root_pa: 0x4010_1000 }),
            "2 concatenated tables need 8 KiB alignment"
        );
        let c16 = Stage2Config::new(40, 40, true).unwrap();
        assert_eq!(c16.vttbr(0x4010_0000, 0xabcd), Ok(0xabcd_0000_4010_0000));
    }

    #[test]
    fn ipa_bits_cover_the_end() {
        assert_eq!(ipa_bits_for(0), Some(32));
        assert_eq!(ipa_bits_for(1 << 32), Some(32));
        assert_eq!(ipa_bits_for((1 << 32) + 1), Some(36));
        assert_eq!(ipa_bits_for(0x80_0000_0000 + 1), Some(40));
        assert_eq!(ipa_bits_for((1 << 40) + 1), Some(42));
        assert_eq!(ipa_bits_for(1 << 48), Some(48));
        assert_eq!(ipa_bits_for((1 << 48) + 1), None);
    }
}
