//! Where a Snapdragon boot stage learns its RAM: Qualcomm's shared memory (SMEM) and the RAM
//! partition table the boot loader writes into it (item 402, `SMEM_USABLE_RAM_PARTITION_TABLE`).
//!
//! The board DTs Linux ships for these boards carry a zero-sized `/memory` that the boot loader
//! fills in (ABL/LK/UEFI), and warden on the `hyp` partition (RB5, DB410c) or right after the
//! Gunyah exit (RB3 Gen 2) runs before, or without, that loader. The RAM the firmware itself
//! trusts is in SMEM: SBL/XBL initialises SMEM (Linux's `qcom_smem` refuses an SMEM whose
//! header is "not initialized by SBL") and writes the RAM partition table before TrustZone
//! runs; every later stage reads it without writing it (LK's `smem_ram_ptable_init` on
//! MSM8916, which runs after the `hyp` image; edk2's `RamPartitionTableLib`; U-Boot's
//! `mach-snapdragon` falls back to it when its own DT's `/memory` is empty, which is the case
//! of a U-Boot flashed where warden goes). docs/boards/ram.md has the evidence.
//!
//! # Format (written from the public descriptions, not copied)
//! Linux's `drivers/soc/qcom/smem.c` (header, partitions, item lookup) and U-Boot's
//! `arch/arm/mach-snapdragon/rampart.h` / LK's `smem.h` (the RAM partition table):
//!
//! - SMEM header at the region's start: `version[7] >> 16` (the SBL's) is 11 (global heap:
//!   a table of contents of 512 16-byte entries at 0xd0, `allocated, offset, size, aux_base`)
//!   or 12 (global partition); `initialized` (0xc0) must be 1 and `reserved` (0xcc) 0.
//! - Version 12: the partition table `$TOC` in the region's last 4 KiB (version 1, 32-byte
//!   header, 48-byte entries `offset, size, flags, host0:16, host1:16, cacheline`, then an
//!   optional `SIII` info block with the highest item number). The global partition is the
//!   entry whose hosts are both 0xfffe; it starts with a `$PRT` header (hosts, size, free
//!   uncached and cached offsets). Items are 16-byte headers (canary 0xa5a5, item, size
//!   including padding, data and header padding) walked up from the header (uncached) and down
//!   from the end (cached, headers after their data, `cacheline`-aligned).
//! - Item 402: magics 0x9da5e0a8, 0xaf9ec4e2, version, reserved, count; entries from byte 20
//!   (version 0: 56 bytes, 32-bit start and length) or 24 (1: 64 bytes, 2 and 3: 72 bytes,
//!   64-bit start and length); RAM is `category` 14 (SDRAM) and `type` 1 (system memory).
//!
//! # Hostile input
//! SMEM is firmware's, but a wrong board description or a different firmware can put anything
//! there: every offset is bounds-checked against the region before it is read, every read is
//! an aligned 32-bit one (the boot path reads with the MMU off: Device memory, where an
//! unaligned access faults), walks advance strictly, the item's entries are copied once into a
//! fixed buffer and parsed from the copy, and the banks must be 4 KiB aligned, not wrap, lie
//! below 2^48, and not overlap. Nothing panics; each refusal is a [`SmemError`] the boot path
//! prints as FATAL. Nothing is written to SMEM (the test model records any write).
//!
//! Checked only against the model in the tests below, built from the same public
//! descriptions: **no board's real SMEM was read**.

use core::fmt;

use arrayvec::ArrayVec;

use super::qcom_hyp::BootMmio;
use crate::dt::MAX_MEMORY_RANGES;
use crate::mm::{MemRange, PAGE_SIZE};

/// `SMEM_USABLE_RAM_PARTITION_TABLE`.
pub const RAM_PARTITION_TABLE_ITEM: u32 = 402;

const HEADER_VERSIONS: u64 = 0x40;
const SBL_VERSION_INDEX: u64 = 7;
const HEADER_INITIALIZED: u64 = 0xc0;
const HEADER_RESERVED: u64 = 0xcc;
const HEADER_TOC: u64 = 0xd0;
const TOC_ENTRY: u64 = 16;
const TOC_ITEMS: u32 = 512;
const AUX_BASE_MASK: u32 = !3;
const GLOBAL_HEAP_VERSION: u32 = 11;
const GLOBAL_PART_VERSION: u32 = 12;

/// The partition table lives in the region's last 4 KiB.
const PTABLE_SPAN: u64 = 0x1000;
const PTABLE_MAGIC: u32 = u32::from_le_bytes(*b"$TOC");
const PTABLE_HEADER: u64 = 32;
const PTABLE_ENTRY: u64 = 48;
const INFO_MAGIC: u32 = u32::from_le_bytes(*b"SIII");
const INFO_SIZE: u64 = 20;
const PART_MAGIC: u32 = u32::from_le_bytes(*b"$PRT");
const PART_HEADER: u64 = 32;
const PRIVATE_ENTRY: u64 = 16;
const CANARY: u32 = 0xa5a5;
const GLOBAL_HOST: u32 = 0xfffe;

const RAM_MAGIC1: u32 = 0x9da5_e0a8;
const RAM_MAGIC2: u32 = 0xaf9e_c4e2;
const RAM_MAX_ENTRIES: u32 = 32;
const RAM_CATEGORY_SDRAM: u32 = 14;
const RAM_TYPE_SYS_MEMORY: u32 = 1;
/// The largest table: version 3's 24-byte header and 32 entries of 72 bytes.
const RAM_TABLE_MAX: usize = 24 + 32 * 72;
/// Physical addresses warden's stage 2 can describe at most.
const PA_LIMIT: u64 = 1 << 48;

/// Why warden refuses the RAM SMEM describes (the boot stops, printing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmemError {
    /// The board's SMEM region is not 4 KiB aligned, smaller than 8 KiB or over 4 GiB.
    Region { region: MemRange },
    /// A header field is not what the format allows.
    Header { what: &'static str, value: u64 },
    /// A structure or item lies (partly) outside where it must be, or is misaligned.
    Bounds { what: &'static str, offset: u64 },
    /// SMEM has no RAM partition table (item 402).
    ItemMissing,
    /// The RAM partition table's header is not one warden reads.
    RamTable { what: &'static str, value: u64 },
    /// A RAM bank (SDRAM, system memory) is unusable as it is.
    Bank { what: &'static str, start: u64, length: u64 },
    /// More RAM banks than [`MAX_MEMORY_RANGES`].
    TooManyBanks,
    /// The table lists no system-memory SDRAM.
    NoRam,
}

impl fmt::Display for SmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SMEM: ")?;
        match self {
            Self::Region { region } => write!(
                f,
                "the board's SMEM region {region} is not 4 KiB aligned, 8 KiB to 4 GiB large"
            ),
            Self::Header { what, value } => write!(f, "{what} ({value:#x})"),
            Self::Bounds { what, offset } => {
                write!(f, "{what} at offset {offset:#x} is outside its bounds or misaligned")
            }
            Self::ItemMissing => write!(
                f,
                "no RAM partition table (item {RAM_PARTITION_TABLE_ITEM}): the boot loader did not write one"
            ),
            Self::RamTable { what, value } => write!(f, "RAM partition table: {what} ({value:#x})"),
            Self::Bank { what, start, length } => {
                write!(f, "RAM bank {start:#x} + {length:#x}: {what}")
            }
            Self::TooManyBanks => {
                write!(f, "more RAM banks than warden keeps ({MAX_MEMORY_RANGES})")
            }
            Self::NoRam => f.write_str("the RAM partition table lists no system memory"),
        }
    }
}

/// SMEM as the parser sees it: aligned 32-bit little-endian reads at offsets checked against
/// the region first.
struct Window<'a, M: BootMmio> {
    mmio: &'a mut M,
    region: MemRange,
}

impl<M: BootMmio> Window<'_, M> {
    fn size(&self) -> u64 {
        self.region.size()
    }

    fn u32(&mut self, offset: u64, what: &'static str) -> Result<u32, SmemError> {
        let end = offset.checked_add(4).ok_or(SmemError::Bounds { what, offset })?;
        if !offset.is_multiple_of(4) || end > self.size() {
            return Err(SmemError::Bounds { what, offset });
        }
        Ok(self.mmio.read32(self.region.start + offset))
    }

    /// `[offset, offset + len)` lies in `[low, high)`.
    fn within(
        offset: u64,
        len: u64,
        low: u64,
        high: u64,
        what: &'static str,
    ) -> Result<(), SmemError> {
        match offset.checked_add(len) {
            Some(end) if offset >= low && end <= high => Ok(()),
            _ => Err(SmemError::Bounds { what, offset }),
        }
    }
}

/// Finds `item` in SMEM: its offset in the region and its length.
fn find_item<M: BootMmio>(w: &mut Window<'_, M>, item: u32) -> Result<(u64, u64), SmemError> {
    let initialized = w.u32(HEADER_INITIALIZED, "header")?;
    let reserved = w.u32(HEADER_RESERVED, "header")?;
    if initialized != 1 || reserved != 0 {
        return Err(SmemError::Header {
            what: "not initialised by the boot loader (initialized != 1 or reserved != 0)",
            value: u64::from(initialized),
        });
    }
    let version = w.u32(HEADER_VERSIONS + 4 * SBL_VERSION_INDEX, "header")? >> 16;
    match version {
        GLOBAL_HEAP_VERSION => global_heap_item(w, item),
        GLOBAL_PART_VERSION => global_partition_item(w, item),
        other => Err(SmemError::Header {
            what: "SBL's SMEM version is neither 11 (global heap) nor 12 (global partition)",
            value: u64::from(other),
        }),
    }
}

fn global_heap_item<M: BootMmio>(
    w: &mut Window<'_, M>,
    item: u32,
) -> Result<(u64, u64), SmemError> {
    if item >= TOC_ITEMS {
        return Err(SmemError::ItemMissing);
    }
    let toc = HEADER_TOC + u64::from(item) * TOC_ENTRY;
    let allocated = w.u32(toc, "table of contents")?;
    let offset = u64::from(w.u32(toc + 4, "table of contents")?);
    let size = u64::from(w.u32(toc + 8, "table of contents")?);
    let aux_base = w.u32(toc + 12, "table of contents")? & AUX_BASE_MASK;
    if allocated == 0 {
        return Err(SmemError::ItemMissing);
    }
    // 0, or the main region's own base: an item in another region (RPM message RAM) is not
    // where RAM tables go.
    if aux_base != 0 && u64::from(aux_base) != w.region.start {
        return Err(SmemError::Header {
            what: "the RAM partition table is in another SMEM region",
            value: u64::from(aux_base),
        });
    }
    Window::<M>::within(offset, size, HEADER_TOC, w.size(), "item")?;
    Ok((offset, size))
}

fn global_partition_item<M: BootMmio>(
    w: &mut Window<'_, M>,
    item: u32,
) -> Result<(u64, u64), SmemError> {
    let ptable = w.size() - PTABLE_SPAN;
    let magic = w.u32(ptable, "partition table")?;
    if magic != PTABLE_MAGIC {
        return Err(SmemError::Header { what: "no $TOC partition table", value: magic.into() });
    }
    let version = w.u32(ptable + 4, "partition table")?;
    if version != 1 {
        return Err(SmemError::Header { what: "partition table version", value: version.into() });
    }
    let entries = u64::from(w.u32(ptable + 8, "partition table")?);
    let table_end = PTABLE_HEADER + entries * PTABLE_ENTRY;
    if table_end > PTABLE_SPAN {
        return Err(SmemError::Header { what: "partition table entries", value: entries });
    }
    // The optional info block after the entries bounds the item numbers.
    let info = ptable + table_end;
    if info + INFO_SIZE <= w.size() && w.u32(info, "info")? == INFO_MAGIC {
        let items = w.u32(info + 16, "info")? & 0xffff;
        if item >= items {
            return Err(SmemError::ItemMissing);
        }
    }
    let mut global = None;
    for i in 0..entries {
        let e = ptable + PTABLE_HEADER + i * PTABLE_ENTRY;
        let offset = u64::from(w.u32(e, "partition table entry")?);
        let size = u64::from(w.u32(e + 4, "partition table entry")?);
        let hosts = w.u32(e + 12, "partition table entry")?;
        let cacheline = u64::from(w.u32(e + 16, "partition table entry")?);
        if offset != 0 && size != 0 && hosts == GLOBAL_HOST | (GLOBAL_HOST << 16) {
            global = Some((offset, size, cacheline));
            break;
        }
    }
    let Some((part, size, cacheline)) = global else {
        return Err(SmemError::Header {
            what: "no global partition (hosts 0xfffe)",
            value: entries,
        });
    };
    // Between the header's first page and the partition table.
    Window::<M>::within(part, size, PTABLE_SPAN, ptable, "global partition")?;
    if size < PART_HEADER {
        return Err(SmemError::Header { what: "global partition size", value: size });
    }
    let magic = w.u32(part, "partition header")?;
    let hosts = w.u32(part + 4, "partition header")?;
    let header_size = u64::from(w.u32(part + 8, "partition header")?);
    let free_uncached = u64::from(w.u32(part + 12, "partition header")?);
    let free_cached = u64::from(w.u32(part + 16, "partition header")?);
    if magic != PART_MAGIC || hosts != GLOBAL_HOST | (GLOBAL_HOST << 16) || header_size != size {
        return Err(SmemError::Header {
            what: "global partition header ($PRT, hosts 0xfffe, the table's size)",
            value: magic.into(),
        });
    }
    if !(PART_HEADER <= free_uncached && free_uncached <= free_cached && free_cached <= size) {
        return Err(SmemError::Header {
            what: "global partition free offsets",
            value: free_uncached,
        });
    }
    let item_len = |w: &mut Window<'_, M>, e: u64| -> Result<(u32, u64, u64, u64), SmemError> {
        let head = w.u32(e, "item header")?;
        if head & 0xffff != CANARY {
            return Err(SmemError::Bounds { what: "item canary", offset: e });
        }
        let e_size = u64::from(w.u32(e + 4, "item header")?);
        let padding = w.u32(e + 8, "item header")?;
        let (padding_data, padding_hdr) = (u64::from(padding & 0xffff), u64::from(padding >> 16));
        Ok((head >> 16, e_size, padding_data, padding_hdr))
    };
    // Uncached items, up from the header.
    let uncached_end = part + free_uncached;
    let mut e = part + PART_HEADER;
    while e + PRIVATE_ENTRY <= uncached_end {
        let (id, e_size, padding_data, padding_hdr) = item_len(w, e)?;
        if id == item {
            if e_size >= size || padding_data >= e_size {
                return Err(SmemError::Bounds { what: "item size", offset: e });
            }
            let data = e + PRIVATE_ENTRY + padding_hdr;
            let len = e_size - padding_data;
            Window::<M>::within(data, len, e, uncached_end, "item")?;
            return Ok((data, len));
        }
        // Strictly forward: at least the header's 16 bytes (u32 sizes: no overflow in u64).
        e += PRIVATE_ENTRY + padding_hdr + e_size;
    }
    // Cached items, down from the end, each header after its data.
    if free_cached == size {
        return Err(SmemError::ItemMissing);
    }
    if !cacheline.is_power_of_two() || cacheline > PTABLE_SPAN {
        return Err(SmemError::Header { what: "global partition cacheline", value: cacheline });
    }
    let header = PRIVATE_ENTRY.next_multiple_of(cacheline);
    let cached_end = part + free_cached;
    let Some(mut e) = (part + size).checked_sub(header).filter(|&e| e >= cached_end) else {
        return Err(SmemError::Bounds { what: "cached items", offset: part + size });
    };
    while e > cached_end {
        let (id, e_size, padding_data, _) = item_len(w, e)?;
        if id == item {
            if e_size >= size || padding_data >= e_size {
                return Err(SmemError::Bounds { what: "item size", offset: e });
            }
            let data =
                e.checked_sub(e_size).ok_or(SmemError::Bounds { what: "item", offset: e })?;
            Window::<M>::within(data, e_size - padding_data, cached_end, e, "item")?;
            return Ok((data, e_size - padding_data));
        }
        // Strictly backward, never below the partition.
        e = match e.checked_sub(e_size + header) {
            Some(next) if next >= part => next,
            _ => return Err(SmemError::Bounds { what: "cached item", offset: e }),
        };
    }
    Err(SmemError::ItemMissing)
}

/// Reads the RAM partition table at `offset` (`len` bytes) and returns its system-memory SDRAM
/// banks, sorted and validated.
fn ram_banks_from_table<M: BootMmio>(
    w: &mut Window<'_, M>,
    offset: u64,
    len: u64,
) -> Result<ArrayVec<MemRange, MAX_MEMORY_RANGES>, SmemError> {
    if len < 20 {
        return Err(SmemError::RamTable { what: "item shorter than its header", value: len });
    }
    let magic1 = w.u32(offset, "RAM partition table")?;
    let magic2 = w.u32(offset + 4, "RAM partition table")?;
    let version = w.u32(offset + 8, "RAM partition table")?;
    let count = w.u32(offset + 16, "RAM partition table")?;
    if magic1 != RAM_MAGIC1 || magic2 != RAM_MAGIC2 {
        return Err(SmemError::RamTable { what: "magic", value: u64::from(magic1) });
    }
    // (where the entries start, entry size, 64-bit start and length)
    let (first, entry, wide) = match version {
        0 => (20u64, 56u64, false),
        1 => (24, 64, true),
        2 | 3 => (24, 72, true),
        v => return Err(SmemError::RamTable { what: "unknown version", value: u64::from(v) }),
    };
    if count > RAM_MAX_ENTRIES {
        return Err(SmemError::RamTable { what: "more than 32 entries", value: u64::from(count) });
    }
    let need = u64::from(count) * entry;
    if first + need > len {
        return Err(SmemError::RamTable { what: "item shorter than its entries", value: len });
    }
    // One copy of the entries; everything below reads the copy.
    let mut copy = [0u32; RAM_TABLE_MAX / 4];
    let words = (need / 4) as usize;
    for (i, word) in copy.iter_mut().take(words).enumerate() {
        *word = w.u32(offset + first + 4 * i as u64, "RAM partition table entry")?;
    }
    let mut banks = ArrayVec::<MemRange, MAX_MEMORY_RANGES>::new();
    for index in 0..count as usize {
        let at = index * entry as usize / 4;
        let word = |n: usize| copy.get(at + n).copied().unwrap_or(0);
        let (start, length, category, kind) = if wide {
            let start = u64::from(word(4)) | (u64::from(word(5)) << 32);
            let length = u64::from(word(6)) | (u64::from(word(7)) << 32);
            (start, length, word(9), word(11))
        } else {
            (u64::from(word(4)), u64::from(word(5)), word(7), word(9))
        };
        if category != RAM_CATEGORY_SDRAM || kind != RAM_TYPE_SYS_MEMORY {
            continue;
        }
        // The loaders stop at an all-zero entry; a zero-length one is no RAM.
        if start == 0 && length == 0 {
            break;
        }
        if length == 0 {
            continue;
        }
        let bank = |what| SmemError::Bank { what, start, length };
        if !start.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) {
            return Err(bank("not 4 KiB aligned"));
        }
        let end = start.checked_add(length).ok_or(bank("wraps around"))?;
        if end > PA_LIMIT {
            return Err(bank("ends beyond 2^48"));
        }
        banks.try_push(MemRange::new(start, end)).map_err(|_| SmemError::TooManyBanks)?;
    }
    banks.sort_unstable();
    for pair in banks.windows(2) {
        if let [a, b] = pair
            && a.overlaps(b)
        {
            return Err(SmemError::Bank {
                what: "overlaps another",
                start: b.start,
                length: b.size(),
            });
        }
    }
    if banks.is_empty() {
        return Err(SmemError::NoRam);
    }
    Ok(banks)
}

/// The system RAM SMEM at `region` (the board's, cross-checked against the DT by the caller)
/// describes: the SDRAM banks of the RAM partition table, sorted, 4 KiB aligned, disjoint.
/// Reads only inside `region`, with aligned 32-bit reads, and writes nothing.
pub fn ram_banks(
    mmio: &mut impl BootMmio,
    region: MemRange,
) -> Result<ArrayVec<MemRange, MAX_MEMORY_RANGES>, SmemError> {
    let size = region.size();
    if !region.start.is_multiple_of(PAGE_SIZE)
        || !size.is_multiple_of(PAGE_SIZE)
        || !(2 * PTABLE_SPAN..=1 << 32).contains(&size)
    {
        return Err(SmemError::Region { region });
    }
    let mut w = Window { mmio, region };
    let (offset, len) = find_item(&mut w, RAM_PARTITION_TABLE_ITEM)?;
    ram_banks_from_table(&mut w, offset, len)
}

/// A model of SMEM as the boot loader leaves it, written from the same public descriptions
/// (not from a board): the tests build one per board layout.
#[cfg(test)]
pub mod model {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// SMEM bytes at `base`; a write is recorded (SMEM is read-only for warden).
    pub struct SmemModel {
        pub base: u64,
        pub bytes: Vec<u8>,
        pub writes: usize,
        pub reads: usize,
    }

    impl BootMmio for SmemModel {
        fn read32(&mut self, pa: u64) -> u32 {
            self.reads += 1;
            let at = pa.wrapping_sub(self.base) as usize;
            assert!(pa.is_multiple_of(4), "unaligned read {pa:#x}");
            let b = self.bytes.get(at..at + 4).expect("read outside the model");
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        fn write32(&mut self, _pa: u64, _value: u32) {
            self.writes += 1;
        }
    }

    /// How the model lays out SMEM and the table.
    #[derive(Clone, Copy, Debug)]
    pub enum Layout {
        /// SMEM version 11 (MSM8916), the item in the table of contents.
        GlobalHeap,
        /// SMEM version 12 (SM8250, SC7280), the item uncached in the global partition.
        GlobalPartition,
        /// Version 12, the item in the partition's cached list.
        GlobalPartitionCached,
    }

    /// One RAM partition table entry.
    #[derive(Clone, Copy, Debug)]
    pub struct Entry {
        pub start: u64,
        pub length: u64,
        pub category: u32,
        pub kind: u32,
    }

    /// System-memory SDRAM.
    pub const fn ddr(start: u64, length: u64) -> Entry {
        Entry { start, length, category: RAM_CATEGORY_SDRAM, kind: RAM_TYPE_SYS_MEMORY }
    }

    /// The table's bytes, `version` 0 to 3.
    pub fn ram_table(version: u32, entries: &[Entry]) -> Vec<u8> {
        let (first, size) = match version {
            0 => (20, 56),
            1 => (24, 64),
            _ => (24, 72),
        };
        let mut t = vec![0u8; first + RAM_MAX_ENTRIES as usize * size];
        put(&mut t, 0, RAM_MAGIC1);
        put(&mut t, 4, RAM_MAGIC2);
        put(&mut t, 8, version);
        put(&mut t, 16, entries.len() as u32);
        for (i, e) in entries.iter().enumerate() {
            let at = first + i * size;
            t[at..at + 4].copy_from_slice(b"DDR\0");
            if version == 0 {
                put(&mut t, at + 16, e.start as u32);
                put(&mut t, at + 20, e.length as u32);
                put(&mut t, at + 24, 1);
                put(&mut t, at + 28, e.category);
                put(&mut t, at + 36, e.kind);
            } else {
                put64(&mut t, at + 16, e.start);
                put64(&mut t, at + 24, e.length);
                put(&mut t, at + 32, 1);
                put(&mut t, at + 36, e.category);
                put(&mut t, at + 44, e.kind);
            }
        }
        t
    }

    pub fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Offset of the global partition in the model (version 12).
    pub const PARTITION: usize = 0x2000;
    /// Offset of the item in the model's global heap (version 11).
    pub const HEAP_ITEM: usize = 0x4000;

    impl SmemModel {
        /// SMEM of `size` bytes at `base` with `table` as item 402, a few other items around
        /// it (so the walks have something to skip).
        pub fn new(base: u64, size: usize, layout: Layout, table: &[u8]) -> Self {
            let mut b = vec![0u8; size];
            put(&mut b, HEADER_INITIALIZED as usize, 1);
            let version = match layout {
                Layout::GlobalHeap => GLOBAL_HEAP_VERSION,
                _ => GLOBAL_PART_VERSION,
            };
            put(&mut b, (HEADER_VERSIONS + 4 * SBL_VERSION_INDEX) as usize, version << 16);
            match layout {
                Layout::GlobalHeap => {
                    let toc = |item: usize| HEADER_TOC as usize + item * TOC_ENTRY as usize;
                    // Item 3 before it, allocated.
                    put(&mut b, toc(3), 1);
                    put(&mut b, toc(3) + 4, 0x3000);
                    put(&mut b, toc(3) + 8, 0x100);
                    let t = toc(RAM_PARTITION_TABLE_ITEM as usize);
                    put(&mut b, t, 1);
                    put(&mut b, t + 4, HEAP_ITEM as u32);
                    put(&mut b, t + 8, table.len() as u32);
                    b[HEAP_ITEM..HEAP_ITEM + table.len()].copy_from_slice(table);
                }
                Layout::GlobalPartition | Layout::GlobalPartitionCached => {
                    let ptable = size - PTABLE_SPAN as usize;
                    let part_size = size - PTABLE_SPAN as usize - PARTITION;
                    b[ptable..ptable + 4].copy_from_slice(b"$TOC");
                    put(&mut b, ptable + 4, 1);
                    put(&mut b, ptable + 8, 2);
                    // Entry 0: a private partition (apps <-> modem), entry 1: the global one.
                    let e0 = ptable + PTABLE_HEADER as usize;
                    put(&mut b, e0, 0x1000);
                    put(&mut b, e0 + 4, 0x800);
                    put(&mut b, e0 + 12, 1 << 16);
                    let e1 = e0 + PTABLE_ENTRY as usize;
                    put(&mut b, e1, PARTITION as u32);
                    put(&mut b, e1 + 4, part_size as u32);
                    put(&mut b, e1 + 12, GLOBAL_HOST | (GLOBAL_HOST << 16));
                    put(&mut b, e1 + 16, 64);
                    let info = e1 + PTABLE_ENTRY as usize;
                    b[info..info + 4].copy_from_slice(b"SIII");
                    put(&mut b, info + 16, 512);
                    let p = PARTITION;
                    b[p..p + 4].copy_from_slice(b"$PRT");
                    put(&mut b, p + 4, GLOBAL_HOST | (GLOBAL_HOST << 16));
                    put(&mut b, p + 8, part_size as u32);
                    let len = table.len().next_multiple_of(8);
                    let entry = |b: &mut [u8], at: usize, item: u32, size: usize, pad: usize| {
                        put(b, at, CANARY | (item << 16));
                        put(b, at + 4, size as u32);
                        put(b, at + 8, pad as u32);
                    };
                    // Uncached: item 14 (0x40 bytes), then the table unless cached.
                    let mut e = p + PART_HEADER as usize;
                    entry(&mut b, e, 14, 0x40, 0);
                    e += PRIVATE_ENTRY as usize + 0x40;
                    let mut cached = part_size;
                    if let Layout::GlobalPartition = layout {
                        entry(&mut b, e, RAM_PARTITION_TABLE_ITEM, len, len - table.len());
                        let data = e + PRIVATE_ENTRY as usize;
                        b[data..data + table.len()].copy_from_slice(table);
                        e = data + len;
                    } else {
                        // Cached: one other item at the end, then the table below it.
                        let header = 64;
                        let mut at = p + part_size - header;
                        entry(&mut b, at, 20, 0x80, 0);
                        at -= 0x80 + header;
                        entry(&mut b, at, RAM_PARTITION_TABLE_ITEM, len, len - table.len());
                        let data = at - len;
                        b[data..data + table.len()].copy_from_slice(table);
                        cached = data - p;
                    }
                    put(&mut b, p + 12, (e - p) as u32);
                    put(&mut b, p + 16, cached as u32);
                }
            }
            Self { base, bytes: b, writes: 0, reads: 0 }
        }

        pub fn region(&self) -> MemRange {
            MemRange::from_base_size(self.base, self.bytes.len() as u64).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::model::{Entry, Layout, PARTITION, SmemModel, ddr, put, ram_table};
    use super::*;

    const BASE: u64 = 0x8090_0000;
    const SIZE: usize = 0x20_0000;

    fn r(start: u64, end: u64) -> MemRange {
        MemRange::new(start, end)
    }

    fn read(m: &mut SmemModel) -> Result<Vec<MemRange>, SmemError> {
        let region = m.region();
        ram_banks(m, region).map(|b| b.to_vec())
    }

    const EIGHT_GIB: [Entry; 2] =
        [ddr(0x1_0000_0000, 0x1_8000_0000), ddr(0x8000_0000, 0x8000_0000)];

    #[test]
    fn every_layout_and_version_gives_the_banks_sorted() {
        let other = Entry { start: 0x0c10_0000, length: 0x2_0000, category: 5, kind: 1 };
        let boot = Entry { kind: 2, ..ddr(0x8500_0000, 0x10_0000) };
        let entries = [EIGHT_GIB[0], other, boot, EIGHT_GIB[1]];
        for layout in [Layout::GlobalHeap, Layout::GlobalPartition, Layout::GlobalPartitionCached] {
            for version in 1..=3 {
                let mut m = SmemModel::new(BASE, SIZE, layout, &ram_table(version, &entries));
                assert_eq!(
                    read(&mut m),
                    Ok(std::vec![r(0x8000_0000, 0x1_0000_0000), r(0x1_0000_0000, 0x2_8000_0000)]),
                    "{layout:?} v{version}"
                );
                assert_eq!(m.writes, 0, "SMEM is never written");
            }
        }
        let v0 = ram_table(0, &[ddr(0x8000_0000, 0x4000_0000)]);
        let mut m = SmemModel::new(0x8630_0000, 0x10_0000, Layout::GlobalHeap, &v0);
        assert_eq!(read(&mut m), Ok(std::vec![r(0x8000_0000, 0xc000_0000)]));
    }

    #[test]
    fn the_table_ends_at_an_all_zero_entry_and_skips_empty_banks() {
        let entries = [
            ddr(0x8000_0000, 0x4000_0000),
            ddr(0xc000_0000, 0),
            ddr(0, 0),
            ddr(0x1_0000_0000, 0x1000),
        ];
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &entries));
        assert_eq!(read(&mut m), Ok(std::vec![r(0x8000_0000, 0xc000_0000)]));
    }

    #[test]
    fn refuses_bad_banks() {
        let cases: [(Entry, &str); 3] = [
            (ddr(0x8000_0800, 0x1000), "not 4 KiB aligned"),
            (ddr(0xffff_ffff_ffff_f000, 0x2000), "wraps around"),
            (ddr(0xffff_8000_0000, 0x1_0000_0000), "ends beyond 2^48"),
        ];
        for (entry, what) in cases {
            let mut m =
                SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &[entry]));
            assert_eq!(
                read(&mut m),
                Err(SmemError::Bank { what, start: entry.start, length: entry.length })
            );
        }
        let overlap = [ddr(0x8000_0000, 0x4000_0000), ddr(0xa000_0000, 0x4000_0000)];
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &overlap));
        assert!(matches!(read(&mut m), Err(SmemError::Bank { what: "overlaps another", .. })));
        let many: Vec<Entry> =
            (0..17).map(|i| ddr(0x8000_0000 + i * 0x1000_0000, 0x1000_0000)).collect();
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &many));
        assert_eq!(read(&mut m), Err(SmemError::TooManyBanks));
        let none = [Entry { kind: 2, ..ddr(0x8000_0000, 0x1000) }];
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &none));
        assert_eq!(read(&mut m), Err(SmemError::NoRam));
    }

    #[test]
    fn refuses_a_bad_table_header() {
        let good = ram_table(3, &EIGHT_GIB);
        let with = |at: usize, v: u32| {
            let mut t = good.clone();
            put(&mut t, at, v);
            let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
            read(&mut m)
        };
        assert!(matches!(with(0, 0), Err(SmemError::RamTable { what: "magic", .. })));
        assert!(matches!(with(8, 4), Err(SmemError::RamTable { what: "unknown version", .. })));
        assert!(matches!(
            with(16, 33),
            Err(SmemError::RamTable { what: "more than 32 entries", .. })
        ));
        // An item shorter than its count says.
        let short = &good[..24 + 72];
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, short);
        assert!(m.bytes.len() == SIZE);
        assert_eq!(
            read(&mut m).unwrap_err(),
            SmemError::RamTable { what: "item shorter than its entries", value: 96 }
        );
    }

    #[test]
    fn refuses_smem_not_initialised_or_of_another_version() {
        let t = ram_table(3, &EIGHT_GIB);
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, HEADER_INITIALIZED as usize, 0);
        assert!(matches!(read(&mut m), Err(SmemError::Header { .. })));
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, (HEADER_VERSIONS + 4 * SBL_VERSION_INDEX) as usize, 13 << 16);
        assert_eq!(
            read(&mut m).unwrap_err(),
            SmemError::Header {
                what: "SBL's SMEM version is neither 11 (global heap) nor 12 (global partition)",
                value: 13
            }
        );
    }

    #[test]
    fn refuses_a_missing_item_or_partition() {
        let t = ram_table(3, &EIGHT_GIB);
        // Global heap: not allocated.
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalHeap, &t);
        put(&mut m.bytes, HEADER_TOC as usize + 402 * 16, 0);
        assert_eq!(read(&mut m), Err(SmemError::ItemMissing));
        // Global heap: beyond the region, or in another region.
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalHeap, &t);
        put(&mut m.bytes, HEADER_TOC as usize + 402 * 16 + 4, SIZE as u32 - 8);
        assert!(matches!(read(&mut m), Err(SmemError::Bounds { what: "item", .. })));
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalHeap, &t);
        put(&mut m.bytes, HEADER_TOC as usize + 402 * 16 + 12, 0x6_0000);
        assert!(matches!(read(&mut m), Err(SmemError::Header { .. })));
        // Global partition: no $TOC, the item renamed, no global partition, a bad canary.
        let ptable = SIZE - 0x1000;
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, ptable, 0);
        assert!(matches!(
            read(&mut m),
            Err(SmemError::Header { what: "no $TOC partition table", .. })
        ));
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        let second = PARTITION + 32 + 16 + 0x40;
        put(&mut m.bytes, second, 0xa5a5 | (403 << 16));
        assert_eq!(read(&mut m), Err(SmemError::ItemMissing));
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, ptable + 32 + 48 + 12, 0xfffe);
        assert!(matches!(read(&mut m), Err(SmemError::Header { .. })));
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, second, 0x5a5a | (402 << 16));
        assert_eq!(
            read(&mut m),
            Err(SmemError::Bounds { what: "item canary", offset: second as u64 })
        );
        // An item past the free offset is not found.
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, PARTITION + 12, (second - PARTITION) as u32);
        assert_eq!(read(&mut m), Err(SmemError::ItemMissing));
        // The info block bounds item numbers.
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &t);
        put(&mut m.bytes, ptable + 32 + 2 * 48 + 16, 400);
        assert_eq!(read(&mut m), Err(SmemError::ItemMissing));
    }

    #[test]
    fn refuses_a_bad_region() {
        let mut m = SmemModel::new(BASE, SIZE, Layout::GlobalPartition, &ram_table(3, &EIGHT_GIB));
        for region in [r(BASE + 4, BASE + 0x20_0004), r(BASE, BASE + 0x1000)] {
            assert_eq!(ram_banks(&mut m, region), Err(SmemError::Region { region }));
        }
    }

    proptest! {
        /// Any corruption of the header, the partition table, the partition's headers or the
        /// item is refused or read, never a panic, never a read outside the region or a write.
        #[test]
        fn corrupted_smem_never_panics(
            layout in 0usize..3,
            flips in proptest::collection::vec((0usize..7, 0usize..0x200, any::<u32>()), 1..8),
        ) {
            let layout = [Layout::GlobalHeap, Layout::GlobalPartition, Layout::GlobalPartitionCached][layout];
            let mut m = SmemModel::new(BASE, SIZE, layout, &ram_table(3, &EIGHT_GIB));
            // The header, the item's table-of-contents entry, the heap's item, the partition
            // table, the partition's header and uncached items, its cached items.
            let areas = [0, 0x1900, 0x4000, SIZE - 0x1000, PARTITION, PARTITION + 0x40, SIZE - 0x1c00];
            for (area, at, value) in flips {
                let at = (areas[area] + at) & !3;
                if at + 4 <= SIZE {
                    put(&mut m.bytes, at, value);
                }
            }
            let _ = read(&mut m);
            prop_assert_eq!(m.writes, 0);
        }
    }
}
