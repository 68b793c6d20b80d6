//! VMSAv8-64 translation tables, 4 KiB granule, for two regimes: the stage-2 tables warden
//! builds for the host (VTTBR_EL2) and warden's own EL2 stage-1 tables (TTBR0_EL2, E2H=0).
//!
//! Tables live in frames from a [`FrameAllocator`]; warden reaches them identity-mapped, so a
//! table's physical address is also a pointer to it. Output addresses are never dereferenced.
//!
//! Every change to a live entry follows break-before-make through [`TlbMaintenance`]:
//! write invalid, `DSB ISHST`, TLBI for the entry (and for every leaf below it when a table is
//! replaced), then the regime's completion sequence, and only then the new entry. Filling
//! invalid entries needs no TLBI: `map` ends with `DSB ISHST; ISB`. `unmap` issues a TLBI per
//! removed leaf and one completion sequence at the end (for more than [`BULK_TLBI_PAGES`] pages:
//! one invalidation of the whole regime instead).
//!
//! A stage-2 table can have a **root mirror** ([`PageTable::add_root_mirror`]): a second root
//! whose descriptors are kept equal to the table's own root descriptors (every root-level
//! write goes to both), so both roots share every lower-level table and any change below the
//! root applies to both at once. The mirror can own exactly one root entry the table itself
//! leaves invalid ([`PageTable::graft_into_mirror`]); that input slot is then reserved: `map`
//! and `unmap` refuse ranges touching it. warden gives the SMMU such a mirror of the host's
//! stage 2, with one extra slot for memory only the SMMU may read (`docs/smmu.md`).
//!
//! Consequence for fault handling: while an entry is broken, an access through it faults even
//! though the memory stays mapped before and after. A stage-2 abort handler must therefore
//! re-check (ownership, or [`PageTable::translate`] under the table's lock) and simply retry
//! when the access is allowed, instead of injecting an abort.

use core::fmt;
use core::marker::PhantomData;

use super::frame::FrameAllocator;
use super::range::{MemRange, PAGE_SIZE};
use crate::arch::TlbMaintenance;

/// Descriptors per 4 KiB table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Output addresses must fit in the 48-bit descriptor field (no FEAT_LPA/LPA2).
pub const MAX_OA_BITS: u32 = 48;
/// Largest input address size with a 4 KiB granule and no FEAT_LPA2.
pub const MAX_VA_BITS: u32 = 48;
/// Smallest input address size accepted (T0SZ <= 39).
pub const MIN_VA_BITS: u32 = 25;

const DESC_VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3); clear with bit 0 set means block.
const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
const DESC_TYPE_MASK: u64 = 0b11;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Everything in a leaf that is neither type nor output address.
const LEAF_ATTR_MASK: u64 = !(OA_MASK | DESC_TYPE_MASK);

/// Lower/upper attribute fields common to both regimes.
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;

/// Stage-2 MemAttr[5:2]: Normal, outer and inner Write-Back cacheable.
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// Stage-2 MemAttr[5:2]: Normal, outer and inner Non-cacheable.
const S2_MEMATTR_NORMAL_NC: u64 = 0b0101 << 2;
/// Stage-2 MemAttr[5:2]: Device-nGnRE.
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const S2_MEMATTR_MASK: u64 = 0b1111 << 2;
/// S2AP[0] (bit 6): read allowed; S2AP[1] (bit 7): write allowed.
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
/// Stage-2 XN[1:0] (bits 54:53) = 0b10: no execution at EL1 nor EL0. Without FEAT_XNX bit 53
/// is RES0 and bit 54 alone is XN, so the same encoding works everywhere.
const S2_XN: u64 = 0b10 << 53;
const S2_XN_MASK: u64 = 0b11 << 53;

/// MAIR_EL2 attribute index 0: Normal, inner/outer Write-Back, read- and write-allocate.
pub const MAIR_IDX_NORMAL: u64 = 0;
/// MAIR_EL2 attribute index 1: Device-nGnRE.
pub const MAIR_IDX_DEVICE: u64 = 1;
/// MAIR_EL2 attribute index 2: Normal, inner/outer Non-cacheable.
pub const MAIR_IDX_NORMAL_NC: u64 = 2;
/// MAIR_EL2 value matching [`El2Stage1`]'s AttrIndx use: Attr0 = 0xff, Attr1 = 0x04,
/// Attr2 = 0x44.
pub const MAIR_EL2_VALUE: u64 = 0xff | (0x04 << 8) | (0x44 << 16);
const S1_ATTRINDX_SHIFT: u32 = 2;
const S1_ATTRINDX_MASK: u64 = 0b111 << S1_ATTRINDX_SHIFT;
/// AP[2] (bit 7): read-only.
const S1_AP_READ_ONLY: u64 = 1 << 7;
/// AP[1] (bit 6): in a regime with one Exception level (EL2 with HCR_EL2.E2H=0) there is no
/// unprivileged access and the Arm ARM makes AP[1] RES1 (D8.4 "Memory access control"); Linux's
/// nVHE hyp tables set it too (KVM_PTE_LEAF_ATTR_LO_S1_AP_RW = 0b01).
const S1_AP_RES1: u64 = 1 << 6;
/// XN (bit 54) in a single-Exception-level regime.
const S1_XN: u64 = 1 << 54;

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// Normal memory, Write-Back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
    /// Normal memory, Non-cacheable: warden's view of carveouts, so that no cache line of
    /// theirs is ever allocated by EL2 (not even speculatively).
    NormalNonCacheable,
}

/// Access permissions of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const NONE: Perms = Perms { read: false, write: false, exec: false };
    pub const R: Perms = Perms { read: true, write: false, exec: false };
    pub const RW: Perms = Perms { read: true, write: true, exec: false };
    pub const RX: Perms = Perms { read: true, write: false, exec: true };
    pub const RWX: Perms = Perms { read: true, write: true, exec: true };
}

/// Memory type plus permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    pub kind: MemKind,
    pub perms: Perms,
}

impl Attrs {
    pub const fn normal(perms: Perms) -> Self {
        Self { kind: MemKind::Normal, perms }
    }
    pub const fn device(perms: Perms) -> Self {
        Self { kind: MemKind::Device, perms }
    }
    pub const fn normal_non_cacheable(perms: Perms) -> Self {
        Self { kind: MemKind::NormalNonCacheable, perms }
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            MemKind::Normal => "normal",
            MemKind::Device => "device",
            MemKind::NormalNonCacheable => "normal-nc",
        };
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "{kind} {}{}{}",
            flag(self.perms.read, 'r'),
            flag(self.perms.write, 'w'),
            flag(self.perms.exec, 'x')
        )
    }
}

/// Why a table operation was refused or could not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not a multiple of 4 KiB.
    Unaligned { addr: u64 },
    /// `end < start`.
    InvalidRange(MemRange),
    /// The input range goes beyond the table's `2^va_bits` input space.
    OutOfRange { end: u64, limit: u64 },
    /// The output range wraps or exceeds the 48-bit output address space.
    Overflow,
    /// No frame left for a table. The operation stopped part-way; the tables stay consistent.
    OutOfFrames,
    /// The allocator returned a frame that cannot hold a table (misaligned or above 2^48).
    BadFrame { pa: u64 },
    /// The regime cannot express these attributes (see the format's docs).
    UnsupportedAttrs(Attrs),
    /// Inconsistent (va_bits, start level, concatenated roots) for this regime.
    BadLayout { va_bits: u32, start_level: u8, root_tables: usize },
    /// The range touches the input slot reserved for the root mirror's own entry, or a graft
    /// was asked for a slot that is not one free root entry (or of a differently shaped table).
    MirrorSlot(MemRange),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Unaligned { addr } => write!(f, "{addr:#x} is not 4 KiB aligned"),
            MapError::InvalidRange(r) => write!(f, "range {r:?} ends before it starts"),
            MapError::OutOfRange { end, limit } => {
                write!(f, "input range end {end:#x} is beyond the table's limit {limit:#x}")
            }
            MapError::Overflow => write!(f, "output range wraps or exceeds 48 bits"),
            MapError::OutOfFrames => write!(f, "out of frames for page tables"),
            MapError::BadFrame { pa } => write!(f, "allocator returned unusable frame {pa:#x}"),
            MapError::UnsupportedAttrs(a) => write!(f, "attributes {a} unsupported here"),
            MapError::BadLayout { va_bits, start_level, root_tables } => write!(
                f,
                "bad table layout: {va_bits} input bits, start level {start_level}, \
                 {root_tables} root tables"
            ),
            MapError::MirrorSlot(r) => {
                write!(f, "range {r:?} is (or needs) the root mirror's reserved slot")
            }
        }
    }
}

/// A translation regime's descriptor format and TLB maintenance.
pub trait Format {
    /// Whether the root may be several concatenated tables (stage 2 only).
    const CONCATENATION: bool;
    /// All leaf bits except type and output address, for `attrs`.
    fn encode_attrs(attrs: Attrs) -> Result<u64, MapError>;
    /// Inverse of [`Format::encode_attrs`] on a leaf descriptor.
    fn decode_attrs(desc: u64) -> Attrs;
    /// TLBI for the entry translating `va` (after `DSB ISHST`).
    fn tlbi_entry<T: TlbMaintenance + ?Sized>(tlb: &T, va: u64);
    /// Completes earlier TLBIs so that no CPU can still use the removed entries.
    fn tlbi_complete<T: TlbMaintenance + ?Sized>(tlb: &T);
    /// Invalidates every entry of the regime (after `DSB ISHST`) and completes: what a large
    /// unmap issues instead of one TLBI per entry ([`BULK_TLBI_PAGES`]).
    fn tlbi_all_complete<T: TlbMaintenance + ?Sized>(tlb: &T);
}

/// An unmap of more pages than this invalidates the whole regime (the current VMID's stage 1
/// and 2, or all of EL2) once at the end instead of one TLBI per removed entry: thousands of
/// broadcast TLBIs cost more than refilling the TLBs (Linux's arm64 `MAX_TLBI_OPS` makes the
/// same choice at the same size).
pub const BULK_TLBI_PAGES: u64 = 512;

/// Stage-2 descriptors (VTTBR_EL2 / VTCR_EL2 regime).
///
/// Normal: MemAttr 0b1111 (WB inner+outer), inner shareable. Device: MemAttr 0b0001
/// (Device-nGnRE); SH is written inner shareable but the architecture treats Device as outer
/// shareable regardless. S2AP expresses any read/write combination; exec clear sets XN = 0b10.
/// Executable Device memory is refused (speculative instruction fetch from devices).
#[derive(Debug)]
pub enum Stage2 {}

impl Format for Stage2 {
    const CONCATENATION: bool = true;

    fn encode_attrs(attrs: Attrs) -> Result<u64, MapError> {
        let memattr = match attrs.kind {
            MemKind::Normal => S2_MEMATTR_NORMAL_WB,
            MemKind::NormalNonCacheable => S2_MEMATTR_NORMAL_NC,
            MemKind::Device if attrs.perms.exec => return Err(MapError::UnsupportedAttrs(attrs)),
            MemKind::Device => S2_MEMATTR_DEVICE_NGNRE,
        };
        let mut bits = memattr | SH_INNER | AF;
        if attrs.perms.read {
            bits |= S2AP_READ;
        }
        if attrs.perms.write {
            bits |= S2AP_WRITE;
        }
        if !attrs.perms.exec {
            bits |= S2_XN;
        }
        Ok(bits)
    }

    fn decode_attrs(desc: u64) -> Attrs {
        // MemAttr[3:2] == 0b00 is Device (any subtype); Normal NC is exactly 0b0101; anything
        // else is Normal (cacheable in at least one level, which warden never writes).
        let kind = match desc & S2_MEMATTR_MASK {
            m if m & (0b1100 << 2) == 0 => MemKind::Device,
            S2_MEMATTR_NORMAL_NC => MemKind::NormalNonCacheable,
            _ => MemKind::Normal,
        };
        Attrs {
            kind,
            perms: Perms {
                read: desc & S2AP_READ != 0,
                write: desc & S2AP_WRITE != 0,
                exec: desc & S2_XN_MASK == 0,
            },
        }
    }

    fn tlbi_entry<T: TlbMaintenance + ?Sized>(tlb: &T, ipa: u64) {
        tlb.tlbi_ipas2e1is(ipa);
    }

    fn tlbi_complete<T: TlbMaintenance + ?Sized>(tlb: &T) {
        // Stage-2-only entries were removed by IPA; combined stage 1+2 entries cached for the
        // VMID can only be removed by VA, which warden does not know, hence VMALLE1IS.
        tlb.dsb_ish();
        tlb.tlbi_vmalle1is();
        tlb.dsb_ish();
        tlb.isb();
    }

    fn tlbi_all_complete<T: TlbMaintenance + ?Sized>(tlb: &T) {
        tlb.tlbi_vmalls12e1is();
        tlb.dsb_ish();
        tlb.isb();
    }
}

/// EL2 stage-1 descriptors (TTBR0_EL2 with HCR_EL2.E2H=0: one VA range, one privilege level).
///
/// AttrIndx selects [`MAIR_EL2_VALUE`]'s entries. Every mapping is readable (`AP[2:1]` = 0b01 RW
/// or 0b11 RO); write-only and no-access mappings are refused. Writable+executable is refused
/// because warden runs with SCTLR_EL2.WXN set, which would silently make it non-executable.
/// Executable Device memory is refused.
#[derive(Debug)]
pub enum El2Stage1 {}

impl Format for El2Stage1 {
    const CONCATENATION: bool = false;

    fn encode_attrs(attrs: Attrs) -> Result<u64, MapError> {
        let p = attrs.perms;
        if !p.read || (p.write && p.exec) || (attrs.kind == MemKind::Device && p.exec) {
            return Err(MapError::UnsupportedAttrs(attrs));
        }
        let index = match attrs.kind {
            MemKind::Normal => MAIR_IDX_NORMAL,
            MemKind::Device => MAIR_IDX_DEVICE,
            MemKind::NormalNonCacheable => MAIR_IDX_NORMAL_NC,
        };
        let mut bits = (index << S1_ATTRINDX_SHIFT) | S1_AP_RES1 | SH_INNER | AF;
        if !p.write {
            bits |= S1_AP_READ_ONLY;
        }
        if !p.exec {
            bits |= S1_XN;
        }
        Ok(bits)
    }

    fn decode_attrs(desc: u64) -> Attrs {
        let kind = match (desc & S1_ATTRINDX_MASK) >> S1_ATTRINDX_SHIFT {
            MAIR_IDX_DEVICE => MemKind::Device,
            MAIR_IDX_NORMAL_NC => MemKind::NormalNonCacheable,
            _ => MemKind::Normal,
        };
        Attrs {
            kind,
            perms: Perms {
                read: true,
                write: desc & S1_AP_READ_ONLY == 0,
                exec: desc & S1_XN == 0,
            },
        }
    }

    fn tlbi_entry<T: TlbMaintenance + ?Sized>(tlb: &T, va: u64) {
        tlb.tlbi_vae2is(va);
    }

    fn tlbi_complete<T: TlbMaintenance + ?Sized>(tlb: &T) {
        tlb.dsb_ish();
        tlb.isb();
    }

    fn tlbi_all_complete<T: TlbMaintenance + ?Sized>(tlb: &T) {
        tlb.tlbi_alle2is();
        tlb.dsb_ish();
        tlb.isb();
    }
}

/// Bit position of the input address bits resolved at `level` (level 3 -> 12).
const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Size of the region one entry at `level` covers.
const fn entry_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Levels where a leaf may appear with a 4 KiB granule (no 512 GiB blocks without LPA2).
const fn leaf_allowed(level: u8) -> bool {
    level >= 1 && level <= 3
}

/// Shape of a translation table: input size, first level, concatenated root tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    va_bits: u32,
    start_level: u8,
    root_tables: usize,
}

impl TableLayout {
    /// Checks that `start_level` (0, 1 or 2) is the architecturally valid first level for
    /// `va_bits` input bits, and that `root_tables` is exactly the number of concatenated
    /// tables needed (1 unless `va_bits` exceeds what one table at that level resolves, at
    /// most 16).
    pub fn new(va_bits: u32, start_level: u8, root_tables: usize) -> Result<Self, MapError> {
        let bad = MapError::BadLayout { va_bits, start_level, root_tables };
        if start_level > 2 || !(MIN_VA_BITS..=MAX_VA_BITS).contains(&va_bits) {
            return Err(bad);
        }
        let one_table_bits = level_shift(start_level) + 9;
        // Starting lower than needed is not a valid configuration: the level above would do.
        if va_bits <= one_table_bits - 9 {
            return Err(bad);
        }
        let needed = if va_bits > one_table_bits {
            let extra = va_bits - one_table_bits;
            if extra > 4 {
                return Err(bad);
            }
            1usize << extra
        } else {
            1
        };
        if root_tables != needed {
            return Err(bad);
        }
        Ok(Self { va_bits, start_level, root_tables })
    }

    /// The stage-1 layout for `va_bits` (no concatenation): start level 0 for 40..=48 bits,
    /// 1 for 31..=39, 2 for 25..=30.
    pub fn stage1(va_bits: u32) -> Result<Self, MapError> {
        let start_level = match va_bits {
            40..=48 => 0,
            31..=39 => 1,
            _ => 2,
        };
        Self::new(va_bits, start_level, 1)
    }

    pub fn va_bits(&self) -> u32 {
        self.va_bits
    }
    pub fn start_level(&self) -> u8 {
        self.start_level
    }
    pub fn root_tables(&self) -> usize {
        self.root_tables
    }
    /// One past the highest input address.
    pub fn va_limit(&self) -> u64 {
        1 << self.va_bits
    }
    /// Descriptors in the (possibly concatenated) root.
    fn root_entries(&self) -> usize {
        1 << (self.va_bits - level_shift(self.start_level))
    }
}

/// A table page reachable from a root: only built from the root or from a table descriptor
/// warden wrote, both of which point at frames obtained from a [`FrameAllocator`].
#[derive(Clone, Copy)]
struct Table {
    pa: u64,
    /// A power of two: 512, or the root's entry count.
    entries: usize,
    /// The root mirror every write also goes to (0: none; only ever set on a root).
    mirror: u64,
}

impl Table {
    fn index(&self, va: u64, level: u8) -> usize {
        ((va >> level_shift(level)) as usize) & (self.entries - 1)
    }

    fn read(&self, idx: usize) -> u64 {
        let idx = idx & (self.entries - 1);
        // SAFETY: `pa` is a table frame from a `FrameAllocator` (its unsafe contract: owned,
        // writable, reachable at its physical address) sized for `entries` descriptors, and
        // `idx` is masked below `entries`.
        unsafe { core::ptr::read_volatile((self.pa as usize as *const u64).add(idx)) }
    }

    /// A single 64-bit store, so a walker never sees a torn descriptor; on a mirrored root the
    /// same store to the mirror follows (both before the caller's barrier or TLBI).
    fn write(&self, idx: usize, desc: u64) {
        let idx = idx & (self.entries - 1);
        // SAFETY: as in `read`; the table belongs to this `PageTable`, reached only via
        // `&mut self` methods.
        unsafe { core::ptr::write_volatile((self.pa as usize as *mut u64).add(idx), desc) }
        if self.mirror != 0 {
            // SAFETY: a root mirror is a frame run from a `FrameAllocator` of the root's size
            // (`add_root_mirror`), owned by the same `PageTable`; `idx` is masked as above.
            unsafe { core::ptr::write_volatile((self.mirror as usize as *mut u64).add(idx), desc) }
        }
    }

    /// No valid entry.
    fn is_empty(&self) -> bool {
        !self.any_valid(0, self.entries)
    }

    /// No valid entry, this table (at `level`) having just had `piece` unmapped: at the last
    /// level the piece's own entries are invalid now, so only the others are read (a host
    /// table whose neighbouring pages are mapped answers at the first one).
    fn is_empty_after_unmap(&self, level: u8, piece: MemRange) -> bool {
        if level != 3 {
            return self.is_empty();
        }
        let first = self.index(piece.start, 3);
        let last = first + (piece.size() / PAGE_SIZE) as usize;
        !(self.any_valid(last, self.entries) || self.any_valid(0, first))
    }

    /// Some entry in `[from, to)` (`to <= entries`) is valid. Eight descriptors ORed per step
    /// where the group is whole: an unmap that empties a table scans all its entries, and one
    /// compare per entry was a good part of a small unmap's cost.
    fn any_valid(&self, from: usize, to: usize) -> bool {
        let to = to.min(self.entries);
        let mut idx = from;
        while idx < to && !idx.is_multiple_of(8) {
            if self.read_raw(idx) & DESC_VALID != 0 {
                return true;
            }
            idx += 1;
        }
        while to - idx >= 8 {
            let any = (0..8).fold(0, |acc, i| acc | self.read_raw(idx + i));
            if any & DESC_VALID != 0 {
                return true;
            }
            idx += 8;
        }
        (idx..to).any(|i| self.read_raw(i) & DESC_VALID != 0)
    }

    /// [`Self::read`] for `idx < entries`, without the mask.
    #[inline(always)]
    fn read_raw(&self, idx: usize) -> u64 {
        debug_assert!(idx < self.entries);
        // SAFETY: as in `read`; every caller passes `idx < entries`.
        unsafe { core::ptr::read_volatile((self.pa as usize as *const u64).add(idx)) }
    }
}

enum Entry {
    Invalid,
    Table(Table),
    /// A block or page: output address and leaf attribute bits.
    Leaf {
        oa: u64,
        attr_bits: u64,
    },
}

fn decode(desc: u64, level: u8) -> Entry {
    if desc & DESC_VALID == 0 {
        return Entry::Invalid;
    }
    let is_table_or_page = desc & DESC_TABLE_OR_PAGE != 0;
    if level < 3 && is_table_or_page {
        Entry::Table(Table { pa: desc & OA_MASK, entries: ENTRIES_PER_TABLE, mirror: 0 })
    } else if level == 3 && !is_table_or_page {
        // 0b01 at level 3 is reserved: treated as invalid by the walker.
        Entry::Invalid
    } else {
        Entry::Leaf {
            oa: desc & OA_MASK & !(entry_size(level) - 1),
            attr_bits: desc & LEAF_ATTR_MASK,
        }
    }
}

fn leaf_desc(level: u8, oa: u64, attr_bits: u64) -> u64 {
    let kind = if level == 3 { DESC_TABLE_OR_PAGE | DESC_VALID } else { DESC_VALID };
    (oa & OA_MASK) | attr_bits | kind
}

fn table_desc(table_pa: u64) -> u64 {
    (table_pa & OA_MASK) | DESC_TABLE_OR_PAGE | DESC_VALID
}

/// The entries of `table` (at `level`) that a range touches, in increasing VA order: how
/// every range walker (`map_in`, `unmap_in`, `split_in`) steps through one table.
struct Chunks {
    table: Table,
    level: u8,
    /// What is left of the range: starts at the next chunk.
    range: MemRange,
}

/// One entry of a [`Chunks`] walk: `table[idx]` covers `[base, base + entry_size(level))`, of
/// which `[start, end)` lies in the range.
#[derive(Clone, Copy)]
struct Chunk {
    idx: usize,
    base: u64,
    start: u64,
    end: u64,
    /// The range covers the whole entry.
    whole: bool,
}

impl Chunk {
    /// The part of the range under this entry.
    fn piece(&self) -> MemRange {
        MemRange::new(self.start, self.end)
    }
}

impl Chunks {
    fn new(table: Table, level: u8, range: MemRange) -> Self {
        Self { table, level, range }
    }
}

impl Iterator for Chunks {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let va = self.range.start;
        if va >= self.range.end {
            return None;
        }
        let size = entry_size(self.level);
        let idx = self.table.index(va, self.level);
        let base = va & !(size - 1);
        // No overflow: va < 2^48.
        let next = base + size;
        let end = self.range.end.min(next);
        self.range.start = end;
        Some(Chunk { idx, base, start: va, end, whole: va == base && end == next })
    }
}

/// Result of [`PageTable::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    pub attrs: Attrs,
    /// Level of the leaf: 1 (1 GiB block), 2 (2 MiB block) or 3 (4 KiB page).
    pub level: u8,
}

/// One leaf descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    pub attrs: Attrs,
}

/// Leaf and table counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub blocks_1g: usize,
    pub blocks_2m: usize,
    pub pages_4k: usize,
    /// Table frames reachable from the root, the root's frames included.
    pub table_pages: usize,
}

/// State shared by one `map`/`unmap` call.
struct Op<'a, A: ?Sized, T: ?Sized> {
    frames: &'a mut A,
    tlb: &'a T,
    /// Some descriptor was written (needs `DSB ISHST` before walkers may rely on it).
    wrote: bool,
    /// TLBIs issued since the last completion sequence.
    tlbi_pending: bool,
    /// `map` writes 4 KiB pages only, never blocks ([`PageTable::map_pages`]).
    pages_only: bool,
    /// `unmap` of more than [`BULK_TLBI_PAGES`]: removed leaves get no TLBI of their own, the
    /// whole regime is invalidated at the end instead.
    bulk: bool,
    /// Leaves removed in bulk mode, not invalidated yet.
    bulk_pending: bool,
}

impl<'a, A: ?Sized, T: ?Sized> Op<'a, A, T> {
    fn new(frames: &'a mut A, tlb: &'a T) -> Self {
        Self {
            frames,
            tlb,
            wrote: false,
            tlbi_pending: false,
            pages_only: false,
            bulk: false,
            bulk_pending: false,
        }
    }
}

impl<A: ?Sized, T: TlbMaintenance + ?Sized> Op<'_, A, T> {
    /// Ends a `map`/`unmap`/`split_to_pages` call in regime `F`: leaves removed in bulk get
    /// the whole-regime invalidation, outstanding TLBIs their completion sequence, and other
    /// descriptor writes `DSB ISHST; ISB`. Only `unmap` leaves TLBIs pending (`break_entry`
    /// completes its own), so `map` and `split_to_pages` end with the last case or nothing.
    fn finish<F: Format>(&self) {
        if self.bulk_pending {
            self.tlb.dsb_ishst();
            F::tlbi_all_complete(self.tlb);
        } else if self.tlbi_pending {
            F::tlbi_complete(self.tlb);
        } else if self.wrote {
            self.tlb.dsb_ishst();
            self.tlb.isb();
        }
    }
}

/// A translation table of format `F`.
///
/// The table does not own its frame allocator: each mutating call takes the allocator and the
/// TLB maintenance implementation, so the same code runs at boot (bump frames) and later
/// (pool frames). Dropping a `PageTable` leaks its frames on purpose (hardware may still walk
/// them); see [`PageTable::destroy`].
pub struct PageTable<F: Format> {
    root_pa: u64,
    layout: TableLayout,
    mirror: Option<RootMirror>,
    _format: PhantomData<F>,
}

/// See the module documentation.
#[derive(Clone, Copy, Debug)]
struct RootMirror {
    pa: u64,
    /// The root index whose entry belongs to the mirror alone.
    private: Option<usize>,
}

impl<F: Format> fmt::Debug for PageTable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("root_pa", &format_args!("{:#x}", self.root_pa))
            .field("layout", &self.layout)
            .finish()
    }
}

impl<F: Format> PageTable<F> {
    /// An empty table; the root (`root_tables` frames) is aligned to its total size.
    pub fn new<A: FrameAllocator + ?Sized>(
        layout: TableLayout,
        frames: &mut A,
    ) -> Result<Self, MapError> {
        if layout.root_tables > 1 && !F::CONCATENATION {
            return Err(MapError::BadLayout {
                va_bits: layout.va_bits,
                start_level: layout.start_level,
                root_tables: layout.root_tables,
            });
        }
        let pages = layout.root_tables;
        let root_pa = frames.alloc_zeroed(pages).ok_or(MapError::OutOfFrames)?;
        let align = pages as u64 * PAGE_SIZE;
        if !root_pa.is_multiple_of(align)
            || root_pa.checked_add(align).is_none_or(|e| e > 1 << MAX_OA_BITS)
        {
            frames.free(root_pa, pages);
            return Err(MapError::BadFrame { pa: root_pa });
        }
        Ok(Self { root_pa, layout, mirror: None, _format: PhantomData })
    }

    /// Physical address of the root (for TTBR0_EL2 / VTTBR_EL2.BADDR).
    pub fn root_pa(&self) -> u64 {
        self.root_pa
    }

    pub fn layout(&self) -> TableLayout {
        self.layout
    }

    fn root(&self) -> Table {
        Table {
            pa: self.root_pa,
            entries: self.layout.root_entries(),
            mirror: self.mirror.map_or(0, |m| m.pa),
        }
    }

    /// Input bytes one root entry covers.
    pub fn root_entry_size(&self) -> u64 {
        entry_size(self.layout.start_level)
    }

    /// Gives the table a root mirror (see the module documentation): a new root, aligned like
    /// the table's own, holding a copy of every root descriptor, kept equal from now on.
    /// Returns its physical address; a table has at most one (a second call returns it).
    pub fn add_root_mirror<A: FrameAllocator + ?Sized>(
        &mut self,
        frames: &mut A,
    ) -> Result<u64, MapError> {
        if let Some(m) = self.mirror {
            return Ok(m.pa);
        }
        let pages = self.layout.root_tables;
        let pa = frames.alloc_zeroed(pages).ok_or(MapError::OutOfFrames)?;
        let align = pages as u64 * PAGE_SIZE;
        if !pa.is_multiple_of(align) || pa.checked_add(align).is_none_or(|e| e > 1 << MAX_OA_BITS) {
            frames.free(pa, pages);
            return Err(MapError::BadFrame { pa });
        }
        let root = self.root();
        let copy = Table { pa, entries: root.entries, mirror: 0 };
        for idx in 0..root.entries {
            copy.write(idx, root.read(idx));
        }
        self.mirror = Some(RootMirror { pa, private: None });
        Ok(pa)
    }

    /// The root mirror's physical address, if the table has one.
    pub fn mirror_root_pa(&self) -> Option<u64> {
        self.mirror.map(|m| m.pa)
    }

    /// The highest root-entry-sized input slot below the input limit that the table leaves
    /// entirely unmapped (its root entry invalid) and that is not the mirror's.
    pub fn highest_free_root_slot(&self) -> Option<MemRange> {
        let root = self.root();
        let private = self.mirror.and_then(|m| m.private);
        (0..root.entries)
            .rev()
            .find(|&idx| root.read(idx) & DESC_VALID == 0 && Some(idx) != private)
            .map(|idx| {
                let size = self.root_entry_size();
                MemRange::new(idx as u64 * size, (idx as u64 + 1) * size)
            })
    }

    /// Makes `donor`'s root entry for `slot` (exactly one root entry's input range, invalid in
    /// this table's own root) the mirror's entry for it, and reserves the slot: this table will
    /// never map it. `donor` must have this table's layout; its tables below that entry are
    /// shared from now on, so it must not change them again (its root may go: it is not
    /// referenced).
    pub fn graft_into_mirror(
        &mut self,
        slot: MemRange,
        donor: &PageTable<F>,
    ) -> Result<(), MapError> {
        let Some(mirror) = self.mirror else { return Err(MapError::MirrorSlot(slot)) };
        let size = self.root_entry_size();
        let root = self.root();
        let idx = (slot.start / size) as usize;
        let fits = slot.start.is_multiple_of(size)
            && slot.size() == size
            && slot.end <= self.layout.va_limit()
            && donor.layout == self.layout
            && root.read(idx) & DESC_VALID == 0
            && mirror.private.is_none_or(|p| p == idx);
        if !fits {
            return Err(MapError::MirrorSlot(slot));
        }
        let desc = donor.root().read(idx);
        let only_mirror = Table { pa: mirror.pa, entries: root.entries, mirror: 0 };
        only_mirror.write(idx, desc);
        self.mirror = Some(RootMirror { pa: mirror.pa, private: Some(idx) });
        Ok(())
    }

    fn check_input(&self, va: MemRange) -> Result<(), MapError> {
        if va.end < va.start {
            return Err(MapError::InvalidRange(va));
        }
        for addr in [va.start, va.end] {
            if !addr.is_multiple_of(PAGE_SIZE) {
                return Err(MapError::Unaligned { addr });
            }
        }
        let limit = self.layout.va_limit();
        if va.end > limit {
            return Err(MapError::OutOfRange { end: va.end, limit });
        }
        if let Some(idx) = self.mirror.and_then(|m| m.private) {
            let size = self.root_entry_size();
            let slot = MemRange::new(idx as u64 * size, (idx as u64 + 1) * size);
            if va.overlaps(&slot) {
                return Err(MapError::MirrorSlot(va));
            }
        }
        Ok(())
    }

    /// Maps `va` to `[pa, pa + va.size())` with `attrs`, using the largest block that fits the
    /// alignment of both addresses and the remaining size at each step (1 GiB, 2 MiB, 4 KiB).
    /// Existing mappings in the range are replaced with break-before-make; blocks partly
    /// covered are split first. An empty range is a no-op.
    ///
    /// On `OutOfFrames` part of the range may be mapped; the tables stay consistent.
    pub fn map<A, T>(
        &mut self,
        va: MemRange,
        pa: u64,
        attrs: Attrs,
        frames: &mut A,
        tlb: &T,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.map_with(va, pa, attrs, false, frames, tlb)
    }

    /// Like [`Self::map`], but every leaf written is a 4 KiB page, never a block (a block met
    /// in the range is split, its other pages kept): a range split to pages
    /// ([`Self::split_to_pages`]) stays split, so a later unmap of part of it only clears
    /// leaves and never breaks a block that also maps memory outside the range.
    pub fn map_pages<A, T>(
        &mut self,
        va: MemRange,
        pa: u64,
        attrs: Attrs,
        frames: &mut A,
        tlb: &T,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.map_with(va, pa, attrs, true, frames, tlb)
    }

    fn map_with<A, T>(
        &mut self,
        va: MemRange,
        pa: u64,
        attrs: Attrs,
        pages_only: bool,
        frames: &mut A,
        tlb: &T,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.check_input(va)?;
        if !pa.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Unaligned { addr: pa });
        }
        let attr_bits = F::encode_attrs(attrs)?;
        if va.is_empty() {
            return Ok(());
        }
        match pa.checked_add(va.size()) {
            Some(end) if end <= 1 << MAX_OA_BITS => {}
            _ => return Err(MapError::Overflow),
        }
        // pa_of(v) = v + offset, in wrapping arithmetic (both ranges are checked above).
        let offset = pa.wrapping_sub(va.start);
        let mut op = Op::new(frames, tlb);
        op.pages_only = pages_only;
        let result =
            self.map_in(self.root(), self.layout.start_level, va, offset, attr_bits, &mut op);
        op.finish::<F>();
        result
    }

    fn map_in<A, T>(
        &mut self,
        table: Table,
        level: u8,
        range: MemRange,
        offset: u64,
        attr_bits: u64,
        op: &mut Op<'_, A, T>,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        if level == 3 {
            return self.map_pages_of_table(table, range, offset, attr_bits, op);
        }
        for chunk @ Chunk { idx, base, start: va, .. } in Chunks::new(table, level, range) {
            let pa = va.wrapping_add(offset);
            let desc = table.read(idx);
            let entry = decode(desc, level);
            // Level 3 never gets here (`map_pages_of_table`).
            let leaf_here = leaf_allowed(level) && !op.pages_only;
            if chunk.whole && pa.is_multiple_of(entry_size(level)) && leaf_here {
                let new = leaf_desc(level, pa, attr_bits);
                if desc != new {
                    if !matches!(entry, Entry::Invalid) {
                        self.break_entry(table, idx, &entry, level, base, op);
                    }
                    table.write(idx, new);
                    op.wrote = true;
                    if let Entry::Table(old) = entry {
                        // Unreachable and flushed from the TLBs by break_entry.
                        free_subtree(old, level + 1, op.frames);
                    }
                }
            } else {
                let child = match entry {
                    Entry::Table(child) => child,
                    Entry::Invalid => {
                        let child = alloc_table(op.frames)?;
                        table.write(idx, table_desc(child.pa));
                        op.wrote = true;
                        child
                    }
                    Entry::Leaf { oa, attr_bits: old_bits } => {
                        if old_bits == attr_bits
                            && oa.wrapping_add(va - base) == pa
                            && !op.pages_only
                        {
                            // The block already maps this piece exactly as asked.
                            continue;
                        }
                        self.split(table, idx, oa, old_bits, level, base, op)?
                    }
                };
                self.map_in(child, level + 1, chunk.piece(), offset, attr_bits, op)?;
            }
        }
        Ok(())
    }

    /// [`Self::map_in`] at the last level: `range` lies in the one last-level `table`, and every
    /// entry is a whole page, so the leaves are written in one loop over the indices (no chunk
    /// arithmetic or descriptor decoding per page: this loop is most of a sub-block handoff's
    /// table work). A valid page that maps something else is replaced with break-before-make.
    fn map_pages_of_table<A, T>(
        &mut self,
        table: Table,
        range: MemRange,
        offset: u64,
        attr_bits: u64,
        op: &mut Op<'_, A, T>,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        let first = table.index(range.start, 3);
        let count = (range.size() / PAGE_SIZE) as usize;
        let mut va = range.start;
        for idx in first..first + count {
            let desc = table.read(idx);
            let new = leaf_desc(3, va.wrapping_add(offset), attr_bits);
            if desc != new {
                let entry = decode(desc, 3);
                if !matches!(entry, Entry::Invalid) {
                    self.break_entry(table, idx, &entry, 3, va, op);
                }
                table.write(idx, new);
                op.wrote = true;
            }
            va += PAGE_SIZE;
        }
        Ok(())
    }

    /// [`Self::unmap_in`] at the last level: `range` lies in the one last-level `table`. Every
    /// page is cleared in one loop, then one `DSB ISHST` and a TLBI per cleared page (the
    /// barrier needs only to order every clear before every TLBI, not one pair at a time); in
    /// bulk mode no TLBI here (the whole regime is invalidated at the end).
    fn unmap_pages_of_table<A, T>(&self, table: Table, range: MemRange, op: &mut Op<'_, A, T>)
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        let first = table.index(range.start, 3);
        let count = (range.size() / PAGE_SIZE) as usize;
        // Which of the range's pages were cleared (at most a table's worth).
        let mut cleared = [0u64; ENTRIES_PER_TABLE / 64];
        let mut any = false;
        for i in 0..count {
            let idx = first + i;
            if matches!(decode(table.read(idx), 3), Entry::Leaf { .. }) {
                table.write(idx, 0);
                cleared[i / 64] |= 1 << (i % 64);
                any = true;
            }
        }
        if !any {
            return;
        }
        op.wrote = true;
        if op.bulk {
            op.bulk_pending = true;
            return;
        }
        op.tlb.dsb_ishst();
        for (word_index, mut word) in cleared.into_iter().enumerate() {
            while word != 0 {
                let i = word_index * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                F::tlbi_entry(op.tlb, range.start + i as u64 * PAGE_SIZE);
            }
        }
        op.tlbi_pending = true;
    }

    /// Removes every mapping in `va` (page aligned). Blocks straddling the edges are split
    /// (break-before-make); each removed leaf gets a TLBI (above [`BULK_TLBI_PAGES`], one
    /// invalidation of the whole regime at the end instead); tables left empty are unlinked,
    /// flushed and freed (to `frames`: an allocator that must not hand them out again while
    /// another walker, e.g. an SMMU sharing these tables, may still hold them), except the
    /// tables the root points to: a root entry that points to a table keeps pointing to it,
    /// so root entries only change when a table is built or [`Self::map`] puts a block there.
    /// Ends with the regime's TLB completion sequence.
    ///
    /// On `OutOfFrames` (a split needed a table) part of the range may remain mapped.
    pub fn unmap<A, T>(&mut self, va: MemRange, frames: &mut A, tlb: &T) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.check_input(va)?;
        if va.is_empty() {
            return Ok(());
        }
        let mut op = Op::new(frames, tlb);
        op.bulk = va.size() / PAGE_SIZE > BULK_TLBI_PAGES;
        let result = self.unmap_in(self.root(), self.layout.start_level, va, &mut op);
        op.finish::<F>();
        result
    }

    fn unmap_in<A, T>(
        &mut self,
        table: Table,
        level: u8,
        range: MemRange,
        op: &mut Op<'_, A, T>,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        if level == 3 {
            self.unmap_pages_of_table(table, range, op);
            return Ok(());
        }
        for chunk @ Chunk { idx, base, .. } in Chunks::new(table, level, range) {
            match decode(table.read(idx), level) {
                Entry::Invalid => {}
                Entry::Leaf { .. } if chunk.whole => {
                    table.write(idx, 0);
                    if op.bulk {
                        op.bulk_pending = true;
                    } else {
                        op.tlb.dsb_ishst();
                        F::tlbi_entry(op.tlb, base);
                        op.tlbi_pending = true;
                    }
                    op.wrote = true;
                }
                Entry::Leaf { oa, attr_bits } => {
                    let child = self.split(table, idx, oa, attr_bits, level, base, op)?;
                    self.unmap_in(child, level + 1, chunk.piece(), op)?;
                }
                Entry::Table(child) => {
                    let piece = chunk.piece();
                    self.unmap_in(child, level + 1, piece, op)?;
                    if level > self.layout.start_level
                        && child.is_empty_after_unmap(level + 1, piece)
                    {
                        table.write(idx, 0);
                        op.tlb.dsb_ishst();
                        F::tlbi_entry(op.tlb, base);
                        // The frame may only be reused once no walker can reach it.
                        F::tlbi_complete(op.tlb);
                        op.wrote = true;
                        op.tlbi_pending = false;
                        op.frames.free(child.pa, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Splits every block overlapping `va` (page aligned) down to 4 KiB pages, each with
    /// break-before-make; translations stay as they were. Afterwards a change to pages inside
    /// `va` never has to break an entry that also maps memory outside `va` (keep it so with
    /// [`Self::map_pages`]). Invalid entries stay invalid. Ends with `DSB ISHST; ISB` when
    /// something changed.
    ///
    /// On `OutOfFrames` part of the range may still be blocks; the tables stay consistent.
    pub fn split_to_pages<A, T>(
        &mut self,
        va: MemRange,
        frames: &mut A,
        tlb: &T,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.check_input(va)?;
        if va.is_empty() {
            return Ok(());
        }
        let mut op = Op::new(frames, tlb);
        let result = self.split_in(self.root(), self.layout.start_level, va, &mut op);
        op.finish::<F>();
        result
    }

    fn split_in<A, T>(
        &mut self,
        table: Table,
        level: u8,
        range: MemRange,
        op: &mut Op<'_, A, T>,
    ) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        for chunk @ Chunk { idx, base, .. } in Chunks::new(table, level, range) {
            let piece = chunk.piece();
            match decode(table.read(idx), level) {
                Entry::Leaf { oa, attr_bits } if level < 3 => {
                    let child = self.split(table, idx, oa, attr_bits, level, base, op)?;
                    self.split_in(child, level + 1, piece, op)?;
                }
                Entry::Table(child) if level < 3 => self.split_in(child, level + 1, piece, op)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes `va` (page aligned) an entry boundary at every level: each block that maps `va`
    /// without starting there (the 1 GiB and 2 MiB blocks straddling it) is split, with
    /// break-before-make, one level at a time and only as far as needed (a 1 GiB block around
    /// a 2 MiB-aligned `va` becomes 2 MiB blocks, not pages). Afterwards a change on one side
    /// of `va` never breaks an entry that maps the other side. Translations stay as they
    /// were; at most one new table per level below the root. `va` at the input limit is a
    /// boundary already. Ends with `DSB ISHST; ISB` when something changed.
    pub fn split_at<A, T>(&mut self, va: u64, frames: &mut A, tlb: &T) -> Result<(), MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        self.check_input(MemRange::new(va, va))?;
        let mut op = Op::new(frames, tlb);
        let mut table = self.root();
        let mut level = self.layout.start_level;
        let result = loop {
            let size = entry_size(level);
            if va.is_multiple_of(size) || va >= self.layout.va_limit() {
                break Ok(());
            }
            let idx = table.index(va, level);
            let base = va & !(size - 1);
            match decode(table.read(idx), level) {
                Entry::Invalid => break Ok(()),
                Entry::Table(child) => table = child,
                Entry::Leaf { oa, attr_bits } => {
                    match self.split(table, idx, oa, attr_bits, level, base, &mut op) {
                        Ok(child) => table = child,
                        Err(e) => break Err(e),
                    }
                }
            }
            level += 1;
        };
        op.finish::<F>();
        result
    }

    /// Replaces the block at `table[idx]` by a table holding the equivalent next-level
    /// mappings, with break-before-make. Returns the new table.
    #[allow(clippy::too_many_arguments)]
    fn split<A, T>(
        &mut self,
        table: Table,
        idx: usize,
        oa: u64,
        attr_bits: u64,
        level: u8,
        base: u64,
        op: &mut Op<'_, A, T>,
    ) -> Result<Table, MapError>
    where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        let child = alloc_table(op.frames)?;
        let child_size = entry_size(level + 1);
        for i in 0..ENTRIES_PER_TABLE {
            child.write(i, leaf_desc(level + 1, oa + i as u64 * child_size, attr_bits));
        }
        self.break_entry(table, idx, &Entry::Leaf { oa, attr_bits }, level, base, op);
        table.write(idx, table_desc(child.pa));
        op.wrote = true;
        Ok(child)
    }

    /// The "break" of break-before-make: invalidates `table[idx]` (currently `entry`, covering
    /// `[base, base + entry_size(level))`), invalidates the TLB entries it (and every leaf below
    /// it, for a table) may have produced, and waits for completion.
    fn break_entry<A, T>(
        &self,
        table: Table,
        idx: usize,
        entry: &Entry,
        level: u8,
        base: u64,
        op: &mut Op<'_, A, T>,
    ) where
        A: FrameAllocator + ?Sized,
        T: TlbMaintenance + ?Sized,
    {
        table.write(idx, 0);
        op.tlb.dsb_ishst();
        if let Entry::Table(child) = entry {
            visit_leaves(*child, level + 1, base, &mut |va, _, _, _| F::tlbi_entry(op.tlb, va));
        }
        F::tlbi_entry(op.tlb, base);
        F::tlbi_complete(op.tlb);
        op.tlbi_pending = false;
    }

    /// Walks the tables for `va`; `None` if unmapped or outside the input range.
    pub fn translate(&self, va: u64) -> Option<Translation> {
        if va >= self.layout.va_limit() {
            return None;
        }
        let mut table = self.root();
        let mut level = self.layout.start_level;
        loop {
            match decode(table.read(table.index(va, level)), level) {
                Entry::Invalid => return None,
                Entry::Table(child) => {
                    table = child;
                    level += 1;
                    if level > 3 {
                        return None;
                    }
                }
                Entry::Leaf { oa, attr_bits } => {
                    return Some(Translation {
                        pa: oa + (va & (entry_size(level) - 1)),
                        attrs: F::decode_attrs(attr_bits),
                        level,
                    });
                }
            }
        }
    }

    /// Calls `f` for every leaf, in increasing VA order.
    pub fn for_each_mapping(&self, mut f: impl FnMut(Mapping)) {
        let mut visit = |va, oa, level, attr_bits| {
            f(Mapping { va, pa: oa, size: entry_size(level), attrs: F::decode_attrs(attr_bits) })
        };
        visit_leaves(self.root(), self.layout.start_level, 0, &mut visit);
    }

    /// All leaves, in increasing VA order.
    pub fn mappings(&self) -> alloc::vec::Vec<Mapping> {
        let mut out = alloc::vec::Vec::new();
        self.for_each_mapping(|m| out.push(m));
        out
    }

    /// Calls `f` for maximal runs of leaves that are contiguous in VA and PA with equal
    /// attributes (for printing a memory map).
    pub fn for_each_region(&self, mut f: impl FnMut(Mapping)) {
        let mut run: Option<Mapping> = None;
        self.for_each_mapping(|m| {
            if let Some(r) = run.as_mut() {
                if r.va + r.size == m.va && r.pa.wrapping_add(r.size) == m.pa && r.attrs == m.attrs
                {
                    r.size += m.size;
                    return;
                }
                f(*r);
            }
            run = Some(m);
        });
        if let Some(r) = run {
            f(r);
        }
    }

    /// Calls `f` with the physical address of every table frame reachable from the root, the
    /// root's own frames first.
    pub fn for_each_table_frame(&self, mut f: impl FnMut(u64)) {
        for i in 0..self.layout.root_tables {
            f(self.root_pa + i as u64 * PAGE_SIZE);
        }
        visit_tables(self.root(), self.layout.start_level, &mut f);
    }

    /// Counts leaves by size and reachable table frames.
    pub fn stats(&self) -> TableStats {
        let mut stats =
            TableStats { table_pages: self.layout.root_tables, ..TableStats::default() };
        count(self.root(), self.layout.start_level, &mut stats);
        stats
    }

    /// Frees every table frame, root included.
    ///
    /// # Safety
    /// No translation base register may point at this table, and no TLB may hold entries
    /// derived from it (never installed, or removed and invalidated), since its frames can be
    /// reused for anything.
    pub unsafe fn destroy<A: FrameAllocator + ?Sized>(self, frames: &mut A) {
        let root = self.root();
        for idx in 0..root.entries {
            if let Entry::Table(child) = decode(root.read(idx), self.layout.start_level) {
                free_subtree(child, self.layout.start_level + 1, frames);
            }
        }
        frames.free(self.root_pa, self.layout.root_tables);
        if let Some(mirror) = self.mirror {
            // The grafted entry's tables belong to the donor.
            frames.free(mirror.pa, self.layout.root_tables);
        }
    }
}

fn alloc_table<A: FrameAllocator + ?Sized>(frames: &mut A) -> Result<Table, MapError> {
    let pa = frames.alloc_zeroed(1).ok_or(MapError::OutOfFrames)?;
    if !pa.is_multiple_of(PAGE_SIZE) || pa >= 1 << MAX_OA_BITS {
        frames.free(pa, 1);
        return Err(MapError::BadFrame { pa });
    }
    Ok(Table { pa, entries: ENTRIES_PER_TABLE, mirror: 0 })
}

/// Frees `table` (at `level`) and every table below it.
fn free_subtree<A: FrameAllocator + ?Sized>(table: Table, level: u8, frames: &mut A) {
    if level < 3 {
        for idx in 0..table.entries {
            if let Entry::Table(child) = decode(table.read(idx), level) {
                free_subtree(child, level + 1, frames);
            }
        }
    }
    frames.free(table.pa, 1);
}

/// Calls `f(va, oa, level, attr_bits)` for each leaf under `table`, whose first entry maps
/// `base`.
fn visit_leaves(table: Table, level: u8, base: u64, f: &mut dyn FnMut(u64, u64, u8, u64)) {
    for idx in 0..table.entries {
        let va = base + idx as u64 * entry_size(level);
        match decode(table.read(idx), level) {
            Entry::Invalid => {}
            Entry::Table(child) if level < 3 => visit_leaves(child, level + 1, va, f),
            Entry::Table(_) => {}
            Entry::Leaf { oa, attr_bits } => f(va, oa, level, attr_bits),
        }
    }
}

fn visit_tables(table: Table, level: u8, f: &mut dyn FnMut(u64)) {
    for idx in 0..table.entries {
        if let Entry::Table(child) = decode(table.read(idx), level)
            && level < 3
        {
            f(child.pa);
            visit_tables(child, level + 1, f);
        }
    }
}

fn count(table: Table, level: u8, stats: &mut TableStats) {
    for idx in 0..table.entries {
        match decode(table.read(idx), level) {
            Entry::Invalid => {}
            Entry::Table(child) if level < 3 => {
                stats.table_pages += 1;
                count(child, level + 1, stats);
            }
            Entry::Table(_) => {}
            Entry::Leaf { .. } => match level {
                1 => stats.blocks_1g += 1,
                2 => stats.blocks_2m += 1,
                _ => stats.pages_4k += 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::fake::{HwOp, NoOpCpu, Recorder};
    use crate::mm::frame::test_support::HeapFrames;
    use core::cell::RefCell;
    use proptest::prelude::*;

    const SZ_2M: u64 = 2 << 20;
    const SZ_1G: u64 = 1 << 30;

    fn s2_layout_32() -> TableLayout {
        TableLayout::new(32, 1, 1).unwrap()
    }

    fn range(start: u64, size: u64) -> MemRange {
        MemRange::new(start, start + size)
    }

    /// TLB maintenance that also snapshots one descriptor at every operation, to check what a
    /// walker could see while the operation is issued.
    struct Watch {
        rec: Recorder,
        entry_pa: u64,
        seen: RefCell<Vec<u64>>,
    }

    impl Watch {
        fn snap(&self) {
            // SAFETY: `entry_pa` is a descriptor inside a live test table.
            let v = unsafe { core::ptr::read_volatile(self.entry_pa as usize as *const u64) };
            self.seen.borrow_mut().push(v);
        }
    }

    impl TlbMaintenance for Watch {
        fn dsb_ishst(&self) {
            self.snap();
            self.rec.dsb_ishst()
        }
        fn dsb_ish(&self) {
            self.snap();
            self.rec.dsb_ish()
        }
        fn isb(&self) {
            self.snap();
            self.rec.isb()
        }
        fn tlbi_ipas2e1is(&self, ipa: u64) {
            self.snap();
            self.rec.tlbi_ipas2e1is(ipa)
        }
        fn tlbi_vmalle1is(&self) {
            self.snap();
            self.rec.tlbi_vmalle1is()
        }
        fn tlbi_vmalls12e1is(&self) {
            self.snap();
            self.rec.tlbi_vmalls12e1is()
        }
        fn tlbi_alle2is(&self) {
            self.snap();
            self.rec.tlbi_alle2is()
        }
        fn tlbi_vae2is(&self, va: u64) {
            self.snap();
            self.rec.tlbi_vae2is(va)
        }
    }

    const STAGE2_COMPLETE: [HwOp; 4] = [HwOp::DsbIsh, HwOp::TlbiVmalle1is, HwOp::DsbIsh, HwOp::Isb];

    #[test]
    fn layouts_are_validated() {
        assert!(TableLayout::new(32, 1, 1).is_ok());
        assert!(TableLayout::new(39, 1, 1).is_ok());
        assert!(TableLayout::new(40, 1, 2).is_ok());
        assert!(TableLayout::new(42, 1, 8).is_ok());
        assert!(TableLayout::new(43, 1, 16).is_ok());
        assert!(TableLayout::new(44, 1, 32).is_err(), "more than 16 concatenated");
        assert!(TableLayout::new(40, 1, 1).is_err(), "root count must match");
        assert!(TableLayout::new(48, 0, 1).is_ok());
        assert!(TableLayout::new(39, 0, 1).is_err(), "level 0 would be a single entry");
        assert!(TableLayout::new(30, 1, 1).is_err());
        assert!(TableLayout::new(30, 2, 1).is_ok());
        assert!(TableLayout::new(34, 2, 16).is_ok());
        assert!(TableLayout::new(32, 3, 1).is_err());
        assert!(TableLayout::new(49, 0, 2).is_err());
        assert!(TableLayout::new(24, 2, 1).is_err());
        assert_eq!(TableLayout::stage1(48).unwrap().start_level(), 0);
        assert_eq!(TableLayout::stage1(39).unwrap().start_level(), 1);
        assert_eq!(TableLayout::stage1(30).unwrap().start_level(), 2);
        assert!(TableLayout::stage1(20).is_err());
        let mut frames = HeapFrames::new(16);
        let concat = TableLayout::new(40, 1, 2).unwrap();
        assert!(matches!(
            PageTable::<El2Stage1>::new(concat, &mut frames),
            Err(MapError::BadLayout { .. })
        ));
        assert_eq!(frames.pool.allocated_pages(), 0);
    }

    #[test]
    fn largest_blocks_are_chosen() {
        let mut frames = HeapFrames::new(32);
        let rec = Recorder::new(64);
        let layout = TableLayout::new(40, 1, 2).unwrap();
        let mut pt = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
        assert_eq!(pt.root_pa() % (2 * PAGE_SIZE), 0, "concatenated root aligned to its size");
        let attrs = Attrs::normal(Perms::RWX);
        // 2 MiB + 1 GiB + 2 MiB + 4 KiB, identity.
        let va = MemRange::new(SZ_1G - SZ_2M, 2 * SZ_1G + SZ_2M + PAGE_SIZE);
        pt.map(va, va.start, attrs, &mut frames, &rec).unwrap();
        assert_eq!(rec.take(), vec![HwOp::DsbIshst, HwOp::Isb], "no TLBI over invalid entries");
        let sizes: Vec<(u64, u64)> = pt.mappings().iter().map(|m| (m.va, m.size)).collect();
        assert_eq!(
            sizes,
            vec![
                (SZ_1G - SZ_2M, SZ_2M),
                (SZ_1G, SZ_1G),
                (2 * SZ_1G, SZ_2M),
                (2 * SZ_1G + SZ_2M, PAGE_SIZE)
            ]
        );
        // Same VA, PA only 2 MiB aligned: no 1 GiB block possible.
        let pa = 0x80_0000_0000 + SZ_2M;
        pt.map(range(0x80_0000_0000 + SZ_1G, SZ_1G), pa, attrs, &mut frames, &rec).unwrap();
        let t = pt.translate(0x80_0000_0000 + SZ_1G + 0x1234).unwrap();
        assert_eq!((t.pa, t.level), (pa + 0x1234, 2));
        // Highest IPA of the second concatenated root table.
        pt.map(range((1 << 40) - PAGE_SIZE, PAGE_SIZE), 0x1000, attrs, &mut frames, &rec).unwrap();
        assert_eq!(pt.translate((1 << 40) - 1).unwrap().pa, 0x1fff);
        assert_eq!(pt.translate(1 << 40), None);
        let stats = pt.stats();
        assert_eq!((stats.blocks_1g, stats.blocks_2m, stats.pages_4k), (1, 2 + 512, 2));
        assert_eq!(stats.table_pages, frames.pool.allocated_pages());
        let mut regions = Vec::new();
        pt.for_each_region(|m| regions.push((m.va, m.size)));
        assert_eq!(regions[0], (SZ_1G - SZ_2M, SZ_1G + 2 * SZ_2M + PAGE_SIZE));
    }

    /// The root descriptors of `pt` and of its mirror (index, own, mirror) that differ.
    fn mirror_differences(pt: &PageTable<Stage2>) -> Vec<(usize, u64, u64)> {
        let mirror = pt.mirror_root_pa().unwrap();
        let root = pt.root();
        (0..root.entries)
            .filter_map(|i| {
                // SAFETY: the mirror is a live root of `root.entries` descriptors.
                let m = unsafe { core::ptr::read_volatile((mirror as *const u64).add(i)) };
                (root.read(i) != m).then_some((i, root.read(i), m))
            })
            .collect()
    }

    #[test]
    fn root_mirror_follows_every_root_write_and_owns_its_slot() {
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(256);
        let layout = TableLayout::new(40, 1, 2).unwrap();
        let mut pt = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
        let attrs = Attrs::normal(Perms::RW);
        // Mapped before the mirror exists: copied.
        pt.map(range(SZ_1G, SZ_1G + SZ_2M), SZ_1G, attrs, &mut frames, &rec).unwrap();
        let mirror = pt.add_root_mirror(&mut frames).unwrap();
        assert_eq!(mirror % (2 * PAGE_SIZE), 0, "aligned like the concatenated root");
        assert_ne!(mirror, pt.root_pa());
        assert_eq!(pt.add_root_mirror(&mut frames), Ok(mirror), "one mirror");
        assert!(mirror_differences(&pt).is_empty());
        // New root-level tables, 1 GiB blocks (root-level leaves), a block split (BBM at the
        // root), and an unmap that empties a root-level table (which stays linked: root
        // entries do not change on unmap): every step mirrored.
        pt.map(range(5 * SZ_1G + SZ_2M, PAGE_SIZE), 0x9000_0000, attrs, &mut frames, &rec).unwrap();
        assert!(mirror_differences(&pt).is_empty());
        pt.map(range(8 * SZ_1G, 2 * SZ_1G), 8 * SZ_1G, attrs, &mut frames, &rec).unwrap();
        assert!(mirror_differences(&pt).is_empty());
        pt.unmap(range(8 * SZ_1G + SZ_2M, PAGE_SIZE), &mut frames, &rec).unwrap();
        assert!(mirror_differences(&pt).is_empty());
        let tables = frames.pool.allocated_pages();
        pt.unmap(range(5 * SZ_1G, SZ_1G), &mut frames, &rec).unwrap();
        assert_eq!(frames.pool.allocated_pages(), tables - 1, "L3 freed, the root's L2 kept");
        assert!(mirror_differences(&pt).is_empty());
        // Changes below the root are the same tables: nothing to mirror, nothing differs.
        pt.unmap(range(SZ_1G, PAGE_SIZE), &mut frames, &rec).unwrap();
        assert!(mirror_differences(&pt).is_empty());

        // The highest free slot, grafted from a donor table of the same shape.
        let slot = pt.highest_free_root_slot().unwrap();
        assert_eq!(slot, range((1 << 40) - SZ_1G, SZ_1G));
        let mut donor = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
        donor
            .map(
                range(slot.start, PAGE_SIZE),
                0x4000_0000,
                Attrs::normal(Perms::R),
                &mut frames,
                &rec,
            )
            .unwrap();
        let other =
            PageTable::<Stage2>::new(TableLayout::new(39, 1, 1).unwrap(), &mut frames).unwrap();
        assert_eq!(pt.graft_into_mirror(slot, &other), Err(MapError::MirrorSlot(slot)), "shape");
        let half = range(slot.start, SZ_2M);
        assert_eq!(pt.graft_into_mirror(half, &donor), Err(MapError::MirrorSlot(half)));
        let used = range(SZ_1G, SZ_1G);
        assert_eq!(pt.graft_into_mirror(used, &donor), Err(MapError::MirrorSlot(used)), "mapped");
        pt.graft_into_mirror(slot, &donor).unwrap();
        let idx = (slot.start / SZ_1G) as usize;
        assert_eq!(mirror_differences(&pt), vec![(idx, 0, donor.root().read(idx))]);
        assert_eq!(pt.translate(slot.start), None, "the table itself does not map it");
        assert_eq!(donor.translate(slot.start + 8).unwrap().pa, 0x4000_0008);
        // The slot is reserved: no map or unmap touching it, and it is not free any more.
        let touching = range(slot.start - PAGE_SIZE, 2 * PAGE_SIZE);
        assert_eq!(
            pt.map(touching, 0, attrs, &mut frames, &rec),
            Err(MapError::MirrorSlot(touching))
        );
        assert_eq!(pt.unmap(slot, &mut frames, &rec), Err(MapError::MirrorSlot(slot)));
        assert_eq!(pt.highest_free_root_slot(), Some(range(slot.start - SZ_1G, SZ_1G)));
        // Root writes elsewhere still reach the mirror, which keeps its own entry.
        pt.map(range(100 * SZ_1G, SZ_1G), 100 * SZ_1G, attrs, &mut frames, &rec).unwrap();
        assert_eq!(mirror_differences(&pt), vec![(idx, 0, donor.root().read(idx))]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut frames = HeapFrames::new(3);
        let rec = Recorder::new(64);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let a = Attrs::normal(Perms::RW);
        let m = |pt: &mut PageTable<Stage2>, f: &mut HeapFrames, va, pa, at| {
            pt.map(va, pa, at, f, &rec)
        };
        assert_eq!(
            m(&mut pt, &mut frames, MemRange::new(0x1001, 0x2000), 0, a),
            Err(MapError::Unaligned { addr: 0x1001 })
        );
        assert_eq!(
            m(&mut pt, &mut frames, range(0x1000, 0x1000), 0x10, a),
            Err(MapError::Unaligned { addr: 0x10 })
        );
        assert!(matches!(
            m(&mut pt, &mut frames, MemRange::new(0x3000, 0x1000), 0, a),
            Err(MapError::InvalidRange(_))
        ));
        assert_eq!(
            m(&mut pt, &mut frames, range(0xffff_f000, 0x2000), 0, a),
            Err(MapError::OutOfRange { end: 0x1_0000_1000, limit: 1 << 32 })
        );
        assert_eq!(m(&mut pt, &mut frames, range(0, 0x2000), !0xfff, a), Err(MapError::Overflow));
        assert_eq!(
            m(&mut pt, &mut frames, range(0, 0x2000), (1 << 48) - 0x1000, a),
            Err(MapError::Overflow)
        );
        let dev_x = Attrs::device(Perms::RWX);
        assert_eq!(
            m(&mut pt, &mut frames, range(0, 0x1000), 0, dev_x),
            Err(MapError::UnsupportedAttrs(dev_x))
        );
        assert_eq!(m(&mut pt, &mut frames, range(0x5000, 0), 0, a), Ok(()));
        assert!(matches!(
            pt.unmap(MemRange::new(0x1000, 0x1800), &mut frames, &rec),
            Err(MapError::Unaligned { .. })
        ));
        assert!(matches!(
            pt.unmap(range(0, 1 << 33), &mut frames, &rec),
            Err(MapError::OutOfRange { .. })
        ));
        assert!(rec.take().is_empty(), "refused calls touch nothing");
        // 3 frames: root + L2 + L3 fit, a second L3 does not.
        m(&mut pt, &mut frames, range(0x1000, 0x1000), 0x1000, a).unwrap();
        assert_eq!(
            m(&mut pt, &mut frames, range(SZ_2M + 0x1000, 0x1000), 0, a),
            Err(MapError::OutOfFrames)
        );
        assert_eq!(pt.translate(0x1000).map(|t| t.pa), Some(0x1000));
        assert_eq!(pt.stats().table_pages, frames.pool.allocated_pages());
        assert_eq!(pt.translate(u64::MAX), None);
        assert!(format!("{}", MapError::OutOfFrames).contains("frames"));
    }

    #[test]
    fn stage2_attributes_round_trip_and_encode() {
        for bits in 0..8u8 {
            let perms = Perms { read: bits & 1 != 0, write: bits & 2 != 0, exec: bits & 4 != 0 };
            let n = Attrs::normal(perms);
            assert_eq!(Stage2::decode_attrs(Stage2::encode_attrs(n).unwrap()), n);
            let nc = Attrs::normal_non_cacheable(perms);
            assert_eq!(Stage2::decode_attrs(Stage2::encode_attrs(nc).unwrap()), nc);
            let d = Attrs::device(perms);
            match Stage2::encode_attrs(d) {
                Ok(b) => assert_eq!(Stage2::decode_attrs(b), d),
                Err(e) => assert!(perms.exec && e == MapError::UnsupportedAttrs(d)),
            }
        }
        let normal = Stage2::encode_attrs(Attrs::normal(Perms::RWX)).unwrap();
        assert_eq!(normal, (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10));
        let dev = Stage2::encode_attrs(Attrs::device(Perms::RW)).unwrap();
        assert_eq!(dev, (0b0001 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10) | (1 << 54));
        assert_eq!(leaf_desc(2, 0x4020_0000, normal) & 0b11, 0b01, "block");
        assert_eq!(leaf_desc(3, 0x4020_0000, normal) & 0b11, 0b11, "page");
    }

    #[test]
    fn el2_stage1_attributes() {
        let rx = El2Stage1::encode_attrs(Attrs::normal(Perms::RX)).unwrap();
        assert_eq!(rx, (1 << 7) | (1 << 6) | (0b11 << 8) | (1 << 10), "AttrIndx 0, RO, exec");
        let rw = El2Stage1::encode_attrs(Attrs::normal(Perms::RW)).unwrap();
        assert_eq!(rw, (1 << 6) | (0b11 << 8) | (1 << 10) | (1 << 54));
        let dev = El2Stage1::encode_attrs(Attrs::device(Perms::RW)).unwrap();
        assert_eq!(dev, (1 << 2) | (1 << 6) | (0b11 << 8) | (1 << 10) | (1 << 54));
        let ro = El2Stage1::encode_attrs(Attrs::normal(Perms::R)).unwrap();
        let nc = El2Stage1::encode_attrs(Attrs::normal_non_cacheable(Perms::RW)).unwrap();
        assert_eq!(nc, (2 << 2) | (1 << 6) | (0b11 << 8) | (1 << 10) | (1 << 54), "AttrIndx 2");
        for (bits, attrs) in [
            (nc, Attrs::normal_non_cacheable(Perms::RW)),
            (rx, Attrs::normal(Perms::RX)),
            (rw, Attrs::normal(Perms::RW)),
            (dev, Attrs::device(Perms::RW)),
            (ro, Attrs::normal(Perms::R)),
        ] {
            assert_eq!(El2Stage1::decode_attrs(bits), attrs);
        }
        for bad in [
            Attrs::normal(Perms::RWX),
            Attrs::normal(Perms::NONE),
            Attrs::normal(Perms { read: false, write: true, exec: false }),
            Attrs::device(Perms::RX),
        ] {
            assert_eq!(El2Stage1::encode_attrs(bad), Err(MapError::UnsupportedAttrs(bad)));
        }
        assert_eq!(MAIR_EL2_VALUE, 0x44_04ff);
    }

    #[test]
    fn el2_stage1_bbm_uses_vae2is() {
        let mut frames = HeapFrames::new(8);
        let rec = Recorder::new(64);
        let mut pt =
            PageTable::<El2Stage1>::new(TableLayout::stage1(39).unwrap(), &mut frames).unwrap();
        pt.map(range(0x4000_0000, SZ_2M), 0x4000_0000, Attrs::normal(Perms::RW), &mut frames, &rec)
            .unwrap();
        rec.take();
        pt.map(range(0x4000_0000, SZ_2M), 0x4000_0000, Attrs::normal(Perms::R), &mut frames, &rec)
            .unwrap();
        assert_eq!(
            rec.take(),
            vec![
                HwOp::DsbIshst,
                HwOp::TlbiVae2is(0x4000_0000),
                HwOp::DsbIsh,
                HwOp::Isb,
                HwOp::DsbIshst,
                HwOp::Isb
            ]
        );
        // Same mapping again: nothing to do, no maintenance.
        pt.map(range(0x4000_0000, SZ_2M), 0x4000_0000, Attrs::normal(Perms::R), &mut frames, &rec)
            .unwrap();
        assert!(rec.take().is_empty());
        pt.unmap(range(0x4000_0000, PAGE_SIZE), &mut frames, &rec).unwrap();
        assert_eq!(rec.ops().last(), Some(&HwOp::Isb));
        assert!(rec.take().contains(&HwOp::TlbiVae2is(0x4000_0000)));
        assert_eq!(pt.translate(0x4000_0000), None);
        assert_eq!(pt.translate(0x4000_1000).unwrap().attrs, Attrs::normal(Perms::R));
    }

    #[test]
    fn last_level_unmap_clears_then_one_barrier_then_a_tlbi_per_cleared_page() {
        let mut frames = HeapFrames::new(8);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let attrs = Attrs::normal(Perms::RWX);
        let base = 0x4020_0000;
        let rec = Recorder::new(64);
        // Pages 0..40 mapped except 7 and 33, so the unmap of 0..40 clears 38 of them.
        pt.map_pages(range(base, 40 * PAGE_SIZE), base, attrs, &mut frames, &rec).unwrap();
        for hole in [7, 33] {
            pt.unmap(range(base + hole * PAGE_SIZE, PAGE_SIZE), &mut frames, &rec).unwrap();
        }
        // A neighbour stays mapped, so the table stays.
        pt.map_pages(range(base + SZ_2M - PAGE_SIZE, PAGE_SIZE), base, attrs, &mut frames, &rec)
            .unwrap();
        rec.take();
        pt.unmap(range(base, 40 * PAGE_SIZE), &mut frames, &rec).unwrap();
        let mut expected = vec![HwOp::DsbIshst];
        expected.extend(
            (0..40)
                .filter(|p| ![7, 33].contains(p))
                .map(|p| HwOp::TlbiIpas2e1is(base + p * PAGE_SIZE)),
        );
        expected.extend(STAGE2_COMPLETE);
        assert_eq!(rec.take(), expected, "every cleared page invalidated, after the barrier");
        assert!((0..40).all(|p| pt.translate(base + p * PAGE_SIZE).is_none()));
        assert!(pt.translate(base + SZ_2M - PAGE_SIZE).is_some());
        // The last page goes: the table is empty and freed (its entry broken and flushed).
        let before = frames.pool.allocated_pages();
        pt.unmap(range(base + SZ_2M - PAGE_SIZE, PAGE_SIZE), &mut frames, &rec).unwrap();
        assert_eq!(frames.pool.allocated_pages(), before - 1);
        assert!(pt.mappings().is_empty());
    }

    #[test]
    fn emptiness_checks_see_a_valid_entry_anywhere() {
        let mut frames = HeapFrames::new(4);
        let table = alloc_table(&mut frames).unwrap();
        assert!(table.is_empty());
        for idx in [0, 5, 8, 9, 255, 503, 504, 511] {
            table.write(idx, leaf_desc(3, 0x4000_0000, 0));
            assert!(!table.is_empty(), "{idx}");
            assert!(!table.any_valid(0, idx));
            assert!(table.any_valid(idx, idx + 1) && table.any_valid(idx.saturating_sub(3), 512));
            let piece = range(idx as u64 * PAGE_SIZE, PAGE_SIZE);
            assert!(
                table.is_empty_after_unmap(3, piece),
                "only {idx} was valid, and it is skipped"
            );
            let other = range(((idx + 1) % 512) as u64 * PAGE_SIZE, PAGE_SIZE);
            assert!(!table.is_empty_after_unmap(3, other));
            table.write(idx, 0);
        }
    }

    #[test]
    fn unmap_page_in_block_breaks_before_make() {
        let mut frames = HeapFrames::new(8);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let attrs = Attrs::normal(Perms::RWX);
        let block = 0x4020_0000;
        pt.map(range(block, SZ_2M), block, attrs, &mut frames, &Recorder::new(64)).unwrap();
        let root = pt.root();
        let Entry::Table(l2) = decode(root.read(root.index(block, 1)), 1) else {
            panic!("no level-2 table")
        };
        let idx = l2.index(block, 2);
        let watch = Watch {
            rec: Recorder::new(64),
            entry_pa: l2.pa + idx as u64 * 8,
            seen: RefCell::default(),
        };
        let page = block + 0x10_0000;
        pt.unmap(range(page, PAGE_SIZE), &mut frames, &watch).unwrap();

        let mut expected = vec![HwOp::DsbIshst, HwOp::TlbiIpas2e1is(block)];
        expected.extend(STAGE2_COMPLETE);
        expected.extend([HwOp::DsbIshst, HwOp::TlbiIpas2e1is(page)]);
        expected.extend(STAGE2_COMPLETE);
        assert_eq!(watch.rec.take(), expected);
        let seen = watch.seen.take();
        assert!(seen[..6].iter().all(|&d| d == 0), "entry invalid throughout the break: {seen:x?}");
        let installed = seen[6];
        assert!(seen[6..].iter().all(|&d| d == installed));
        let Entry::Table(l3) = decode(installed, 2) else { panic!("table not installed") };
        // The new table was complete when installed (only the unmapped page is gone).
        assert!(decode(l3.read(0), 3).is_leaf_at(block));
        assert_eq!(l3.read(l3.index(page, 3)), 0);
        assert_eq!(pt.translate(page), None);
        assert_eq!(pt.translate(page - PAGE_SIZE).unwrap().level, 3);
        assert_eq!(pt.translate(page + PAGE_SIZE).unwrap().pa, page + PAGE_SIZE);
        assert_eq!(pt.translate(block + SZ_2M - 1).unwrap().attrs, attrs);
        assert_eq!(pt.stats().pages_4k, 511);
    }

    impl Entry {
        fn is_leaf_at(&self, pa: u64) -> bool {
            matches!(self, Entry::Leaf { oa, .. } if *oa == pa)
        }
    }

    #[test]
    fn remapping_a_block_over_pages_frees_the_table() {
        let mut frames = HeapFrames::new(8);
        let rec = Recorder::new(64);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let rw = Attrs::normal(Perms::RW);
        pt.map(range(SZ_2M, 2 * PAGE_SIZE), SZ_2M, rw, &mut frames, &rec).unwrap();
        assert_eq!(frames.pool.allocated_pages(), 3);
        rec.take();
        pt.map(range(SZ_2M, SZ_2M), 0x8000_0000, rw, &mut frames, &rec).unwrap();
        let mut expected = vec![
            HwOp::DsbIshst,
            HwOp::TlbiIpas2e1is(SZ_2M),
            HwOp::TlbiIpas2e1is(SZ_2M + PAGE_SIZE),
            HwOp::TlbiIpas2e1is(SZ_2M),
        ];
        expected.extend(STAGE2_COMPLETE);
        expected.extend([HwOp::DsbIshst, HwOp::Isb]);
        assert_eq!(rec.take(), expected, "every old leaf flushed before the block appears");
        assert_eq!(frames.pool.allocated_pages(), 2);
        assert_eq!(pt.translate(SZ_2M + 5).unwrap().pa, 0x8000_0005);
        // Unmapping everything leaves the root and the (now empty) level-2 table it points to:
        // root entries do not change.
        let root_entry = pt.root().read(0);
        pt.unmap(range(0, 1 << 32), &mut frames, &rec).unwrap();
        assert_eq!(pt.root().read(0), root_entry);
        assert_eq!(frames.pool.allocated_pages(), 2);
        assert_eq!(pt.stats(), TableStats { table_pages: 2, ..TableStats::default() });
        // SAFETY: never installed in hardware.
        unsafe { pt.destroy(&mut frames) };
        assert_eq!(frames.pool.allocated_pages(), 0);
    }

    #[test]
    fn split_to_pages_keeps_translations_and_later_unmaps_touch_only_leaves() {
        let mut frames = HeapFrames::new(16);
        let rec = Recorder::new(64);
        let mut pt =
            PageTable::<Stage2>::new(TableLayout::new(40, 1, 2).unwrap(), &mut frames).unwrap();
        let attrs = Attrs::normal(Perms::RWX);
        // A 1 GiB block, then 2 MiB blocks.
        pt.map(range(SZ_1G, SZ_1G + 4 * SZ_2M), SZ_1G, attrs, &mut frames, &rec).unwrap();
        let before = pt.mappings();
        rec.take();
        // Straddles a 2 MiB boundary inside the 1 GiB block.
        let carveout = range(SZ_1G + SZ_2M - 2 * PAGE_SIZE, 4 * PAGE_SIZE);
        pt.split_to_pages(carveout, &mut frames, &rec).unwrap();
        let mut want = vec![HwOp::DsbIshst, HwOp::TlbiIpas2e1is(SZ_1G)];
        want.extend(STAGE2_COMPLETE);
        for block in [SZ_1G, SZ_1G + SZ_2M] {
            want.extend([HwOp::DsbIshst, HwOp::TlbiIpas2e1is(block)]);
            want.extend(STAGE2_COMPLETE);
        }
        want.extend([HwOp::DsbIshst, HwOp::Isb]);
        assert_eq!(rec.take(), want, "one break per block, outermost first");
        // Same translations everywhere; pages exactly in the two 2 MiB blocks it touches.
        let mut regions = Vec::new();
        pt.for_each_region(|m| regions.push((m.va, m.pa, m.size, m.attrs)));
        assert_eq!(regions, [(SZ_1G, SZ_1G, SZ_1G + 4 * SZ_2M, attrs)]);
        assert_eq!(before.iter().map(|m| m.size).sum::<u64>(), SZ_1G + 4 * SZ_2M);
        let stats = pt.stats();
        assert_eq!((stats.blocks_1g, stats.blocks_2m, stats.pages_4k), (0, 510 + 4, 1024));
        assert_eq!(pt.translate(carveout.start).unwrap().level, 3);
        assert_eq!(pt.translate(SZ_1G + 2 * SZ_2M).unwrap().level, 2);
        // Already pages: nothing to do.
        pt.split_to_pages(carveout, &mut frames, &rec).unwrap();
        assert!(rec.take().is_empty());
        // Unmapping and mapping back pages of it only touches their own leaves.
        let page = range(carveout.start + PAGE_SIZE, 2 * PAGE_SIZE);
        pt.unmap(page, &mut frames, &rec).unwrap();
        let mut want = vec![
            HwOp::DsbIshst,
            HwOp::TlbiIpas2e1is(page.start),
            HwOp::DsbIshst,
            HwOp::TlbiIpas2e1is(page.start + PAGE_SIZE),
        ];
        want.extend(STAGE2_COMPLETE);
        assert_eq!(rec.take(), want);
        pt.map_pages(page, page.start, attrs, &mut frames, &rec).unwrap();
        assert_eq!(rec.take(), [HwOp::DsbIshst, HwOp::Isb], "no break to map pages back");
        assert_eq!(pt.stats(), stats, "still split: nothing merged back into a block");
        assert_eq!(pt.stats().table_pages, frames.pool.allocated_pages());
    }

    #[test]
    fn split_at_breaks_only_the_blocks_straddling_the_edge() {
        let mut frames = HeapFrames::new(16);
        let rec = Recorder::new(64);
        let mut pt =
            PageTable::<Stage2>::new(TableLayout::new(40, 1, 2).unwrap(), &mut frames).unwrap();
        let attrs = Attrs::normal(Perms::RWX);
        pt.map(range(SZ_1G, SZ_1G), SZ_1G, attrs, &mut frames, &rec).unwrap();
        let before = pt.mappings();
        rec.take();
        // 2 MiB aligned inside the 1 GiB block: that block becomes 2 MiB blocks, no pages.
        let edge = SZ_1G + 6 * SZ_2M;
        pt.split_at(edge, &mut frames, &rec).unwrap();
        let mut want = vec![HwOp::DsbIshst, HwOp::TlbiIpas2e1is(SZ_1G)];
        want.extend(STAGE2_COMPLETE);
        want.extend([HwOp::DsbIshst, HwOp::Isb]);
        assert_eq!(rec.take(), want, "one break-before-make of the 1 GiB block");
        let stats = pt.stats();
        assert_eq!((stats.blocks_1g, stats.blocks_2m, stats.pages_4k), (0, 512, 0));
        // A page edge inside a 2 MiB block: only that block becomes pages.
        let page_edge = edge + 5 * PAGE_SIZE;
        pt.split_at(page_edge, &mut frames, &rec).unwrap();
        let mut want = vec![HwOp::DsbIshst, HwOp::TlbiIpas2e1is(edge)];
        want.extend(STAGE2_COMPLETE);
        want.extend([HwOp::DsbIshst, HwOp::Isb]);
        assert_eq!(rec.take(), want);
        let stats = pt.stats();
        assert_eq!((stats.blocks_1g, stats.blocks_2m, stats.pages_4k), (0, 511, 512));
        assert_eq!(stats.table_pages, 2 + 1 + 1);
        // Already boundaries (and an aligned edge, and the input limit): nothing to do.
        for va in [edge, page_edge, SZ_1G, 2 * SZ_1G, 1 << 40] {
            pt.split_at(va, &mut frames, &rec).unwrap();
        }
        assert!(rec.take().is_empty());
        // Unmapped: nothing to split.
        pt.split_at(3 * SZ_1G + PAGE_SIZE, &mut frames, &rec).unwrap();
        assert!(rec.take().is_empty());
        let mut regions = Vec::new();
        pt.for_each_region(|m| regions.push((m.va, m.pa, m.size, m.attrs)));
        assert_eq!(regions, [(SZ_1G, SZ_1G, SZ_1G, attrs)]);
        assert_eq!(before.len(), 1);
        assert_eq!(
            pt.split_at(edge + 1, &mut frames, &rec),
            Err(MapError::Unaligned { addr: edge + 1 })
        );
        // Out of frames: an error, the tables unchanged.
        let mut none = HeapFrames::new(1);
        none.alloc_zeroed(1).unwrap();
        assert_eq!(
            pt.split_at(SZ_1G + 9 * SZ_2M + PAGE_SIZE, &mut none, &rec),
            Err(MapError::OutOfFrames)
        );
        assert_eq!(pt.stats(), stats);
    }

    #[test]
    fn a_large_unmap_invalidates_the_regime_once() {
        let mut frames = HeapFrames::new(16);
        let rec = Recorder::new(64);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let rw = Attrs::normal(Perms::RW);
        let big = range(SZ_2M, (BULK_TLBI_PAGES + 1) * PAGE_SIZE);
        pt.map_pages(big, big.start, rw, &mut frames, &rec).unwrap();
        rec.take();
        pt.unmap(big, &mut frames, &rec).unwrap();
        let ops = rec.take();
        // The two emptied level-3 tables are unlinked with their own breaks (they are freed
        // at once); the leaves get no TLBI of their own; one VMALLS12E1IS at the end.
        let mut want = Vec::new();
        for table in [SZ_2M, 2 * SZ_2M] {
            want.extend([HwOp::DsbIshst, HwOp::TlbiIpas2e1is(table)]);
            want.extend(STAGE2_COMPLETE);
        }
        want.extend([HwOp::DsbIshst, HwOp::TlbiVmalls12e1is, HwOp::DsbIsh, HwOp::Isb]);
        assert_eq!(ops, want);
        assert!(pt.mappings().is_empty());
        // At the threshold: one TLBI per page, as before.
        let small = range(SZ_2M, BULK_TLBI_PAGES * PAGE_SIZE);
        pt.map_pages(small, small.start, rw, &mut frames, &rec).unwrap();
        rec.take();
        pt.unmap(small, &mut frames, &rec).unwrap();
        let per_page = rec.take().iter().filter(|op| matches!(op, HwOp::TlbiIpas2e1is(_))).count();
        assert_eq!(per_page as u64, BULK_TLBI_PAGES + 1, "each page, and the emptied table");
    }

    #[test]
    fn map_pages_never_writes_blocks() {
        let mut frames = HeapFrames::new(8);
        let rec = Recorder::new(64);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        let rw = Attrs::normal(Perms::RW);
        pt.map_pages(range(2 * SZ_2M, SZ_2M), 2 * SZ_2M, rw, &mut frames, &rec).unwrap();
        let stats = pt.stats();
        assert_eq!((stats.blocks_2m, stats.pages_4k), (0, 512));
        // Over an existing block with the same mapping: split to pages all the same.
        pt.map(range(4 * SZ_2M, SZ_2M), 4 * SZ_2M, rw, &mut frames, &rec).unwrap();
        pt.map_pages(range(4 * SZ_2M, PAGE_SIZE), 4 * SZ_2M, rw, &mut frames, &rec).unwrap();
        let stats = pt.stats();
        assert_eq!((stats.blocks_2m, stats.pages_4k), (0, 1024));
        assert_eq!(pt.translate(5 * SZ_2M - 8).unwrap().pa, 5 * SZ_2M - 8);
        assert!(matches!(
            pt.split_to_pages(MemRange::new(0x1000, 0x1800), &mut frames, &rec),
            Err(MapError::Unaligned { .. })
        ));
    }

    #[test]
    fn table_frames_are_listed() {
        let mut frames = HeapFrames::new(8);
        let rec = Recorder::new(64);
        let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
        pt.map(range(0x1000, 0x1000), 0x1000, Attrs::normal(Perms::RW), &mut frames, &rec).unwrap();
        let mut seen = Vec::new();
        pt.for_each_table_frame(|pa| seen.push(pa));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], pt.root_pa());
        assert!(seen.iter().all(|pa| frames.pool.range().contains(*pa)));
    }

    #[derive(Clone, Debug)]
    enum Step {
        Map {
            first: usize,
            pages: usize,
            pa_page: u64,
            attrs: u8,
        },
        Unmap {
            first: usize,
            pages: usize,
        },
        /// `split_at` the window's page `at` (`WINDOW_PAGES`: its end).
        SplitAt {
            at: usize,
        },
    }

    /// 8 MiB window straddling the 1 GiB boundary: two level-2 tables, four 2 MiB slots.
    const WINDOW_VA: u64 = SZ_1G - 2 * SZ_2M;
    const WINDOW_PAGES: usize = 2048;

    fn attrs_of(i: u8) -> Attrs {
        [
            Attrs::normal(Perms::RWX),
            Attrs::normal(Perms::RW),
            Attrs::device(Perms::RW),
            Attrs::normal(Perms::NONE),
        ][usize::from(i % 4)]
    }

    fn page_index() -> impl Strategy<Value = usize> {
        // Half of the starts on 2 MiB boundaries so blocks appear.
        prop_oneof![(0..4usize).prop_map(|i| i * 512), 0..WINDOW_PAGES]
    }

    fn step() -> impl Strategy<Value = Step> {
        let len = prop_oneof![Just(512usize), Just(1024), 1..600usize];
        // PA: the identity, a 2 MiB-aligned shift, or any page.
        let pa = prop_oneof![Just(0u64), (1..64u64).prop_map(|n| n * 512), 0..(1u64 << 20)];
        prop_oneof![
            (page_index(), len.clone(), pa, 0..4u8).prop_map(|(first, pages, pa_page, attrs)| {
                Step::Map { first, pages, pa_page, attrs }
            }),
            (page_index(), len).prop_map(|(first, pages)| Step::Unmap { first, pages }),
            prop_oneof![page_index(), Just(WINDOW_PAGES)].prop_map(|at| Step::SplitAt { at }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn map_unmap_agree_with_a_model(steps in prop::collection::vec(step(), 1..8)) {
            let mut frames = HeapFrames::new(32);
            let mut pt = PageTable::<Stage2>::new(s2_layout_32(), &mut frames).unwrap();
            let mut model: Vec<Option<(u64, Attrs)>> = vec![None; WINDOW_PAGES];
            for s in &steps {
                match *s {
                    Step::Map { first, pages, pa_page, attrs } => {
                        let pages = pages.min(WINDOW_PAGES - first);
                        let va = range(WINDOW_VA + first as u64 * PAGE_SIZE, pages as u64 * PAGE_SIZE);
                        // Identity (0) or pa_page pages away from the VA.
                        let pa = if pa_page == 0 { va.start } else { 0x1_0000_0000 + pa_page * PAGE_SIZE };
                        pt.map(va, pa, attrs_of(attrs), &mut frames, &NoOpCpu).unwrap();
                        for i in 0..pages {
                            model[first + i] = Some((pa + i as u64 * PAGE_SIZE, attrs_of(attrs)));
                        }
                    }
                    Step::Unmap { first, pages } => {
                        let pages = pages.min(WINDOW_PAGES - first);
                        let va = range(WINDOW_VA + first as u64 * PAGE_SIZE, pages as u64 * PAGE_SIZE);
                        pt.unmap(va, &mut frames, &NoOpCpu).unwrap();
                        for slot in &mut model[first..first + pages] {
                            *slot = None;
                        }
                    }
                    Step::SplitAt { at } => {
                        // The model is unchanged; no leaf may straddle the boundary any more.
                        let edge = WINDOW_VA + at as u64 * PAGE_SIZE;
                        pt.split_at(edge, &mut frames, &NoOpCpu).unwrap();
                        for m in pt.mappings() {
                            prop_assert!(!(m.va < edge && edge < m.va + m.size), "{:?} straddles {:#x}", m, edge);
                        }
                    }
                }
                for (i, want) in model.iter().enumerate().step_by(7) {
                    let va = WINDOW_VA + i as u64 * PAGE_SIZE + 0x18;
                    let got = pt.translate(va).map(|t| (t.pa - 0x18, t.attrs));
                    prop_assert_eq!(got, *want, "page {}", i);
                }
                let mapped: u64 = pt.mappings().iter().map(|m| m.size).sum();
                prop_assert_eq!(mapped, model.iter().flatten().count() as u64 * PAGE_SIZE);
                prop_assert_eq!(pt.stats().table_pages, frames.pool.allocated_pages());
            }
            let root_entries: Vec<u64> = (0..4).map(|i| pt.root().read(i)).collect();
            pt.unmap(range(WINDOW_VA, WINDOW_PAGES as u64 * PAGE_SIZE), &mut frames, &NoOpCpu).unwrap();
            // Only the root and the tables it points to remain; root entries are unchanged.
            let linked = root_entries.iter().filter(|&&d| d & DESC_VALID != 0).count();
            prop_assert_eq!(frames.pool.allocated_pages(), 1 + linked);
            prop_assert_eq!(root_entries, (0..4).map(|i| pt.root().read(i)).collect::<Vec<u64>>());
            prop_assert!(pt.mappings().is_empty());
        }
    }
}
