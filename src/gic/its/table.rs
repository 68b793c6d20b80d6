//! The memory the real ITS reads and writes, all of it warden's: its command queue (the shadow
//! of the host's) and its device and collection tables.
//!
//! The device table is two-level when the ITS supports it (GITS_BASER.Indirect sticks): one
//! level-1 page, and a level-2 page allocated from warden's frame pool the first time a MAPD
//! names a DeviceID it covers, up to a quota; with 4 KiB ITS pages and 8-byte entries one
//! level-2 page covers 512 DeviceIDs (a PCI bus and a half), so qemu-virt needs one. An ITS
//! without two-level tables gets a flat table of [`FLAT_DEVICE_TABLE_BYTES`], and the host is
//! told only about the DeviceIDs it covers. The collection table is flat, one ITS page.

use alloc::vec;
use alloc::vec::Vec;

use super::ItsIo;
use super::cmd::COMMAND_BYTES;
use crate::gic::regs::*;
use crate::mm::{FrameAllocator, MemRange, PAGE_SIZE};

/// Size of a flat device table when the ITS has no two-level tables.
pub const FLAT_DEVICE_TABLE_BYTES: u64 = 0x1_0000;
/// Level-1 entries: Valid in bit 63, the level-2 page's address below.
const L1_VALID: u64 = 1 << 63;
/// Shadow command queue: one 4 KiB page (GITS_CBASER.Size = 0), 128 commands.
pub const SHADOW_QUEUE_BYTES: u64 = PAGE_SIZE;
pub const SHADOW_QUEUE_ENTRIES: u32 = (SHADOW_QUEUE_BYTES / COMMAND_BYTES) as u32;

/// Why the real tables could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    OutOfFrames {
        what: &'static str,
    },
    /// GITS_BASER<n> did not keep what warden wrote (read back shown).
    DidNotStick {
        index: usize,
        wrote: u64,
        read: u64,
    },
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::OutOfFrames { what } => write!(f, "no frames for the ITS {what}"),
            TableError::DidNotStick { index, wrote, read } => write!(
                f,
                "GITS_BASER{index} did not keep warden's table: wrote {wrote:#x}, read {read:#x}"
            ),
        }
    }
}

/// One warden-owned ITS table (device or collection).
#[derive(Debug)]
pub struct ItsTable {
    /// The BASER index it is programmed in.
    pub index: usize,
    /// Level-1 table (two-level) or the table (flat).
    pub base: u64,
    pub bytes: u64,
    /// ITS page size in bytes.
    pub page: u64,
    /// Entry size in bytes.
    pub entry: u64,
    pub indirect: bool,
    /// IDs the table covers.
    pub ids: u64,
    /// Level-2 pages by level-1 index (two-level only).
    l2: Vec<Option<u64>>,
    /// Level-2 pages still allowed.
    quota: usize,
    /// The ITS does not snoop caches (the BASER's shareability read back as non-shareable):
    /// every table write is cleaned to PoC.
    pub clean: bool,
}

fn alloc_bytes<F: FrameAllocator + ?Sized>(
    frames: &mut F,
    bytes: u64,
    what: &'static str,
) -> Result<u64, TableError> {
    let pages = usize::try_from(bytes.div_ceil(PAGE_SIZE)).unwrap_or(usize::MAX);
    frames.alloc_zeroed(pages).ok_or(TableError::OutOfFrames { what })
}

fn ilog2(v: u64) -> u32 {
    63 - v.max(1).leading_zeros()
}

impl ItsTable {
    /// Programs GITS_BASER<`index`> (keeping its read-only TYPE and entry size) with a table
    /// of warden's covering at most `want_ids` IDs: 4 KiB pages if the ITS takes them (else
    /// the page size it keeps), two-level if `try_indirect` and the ITS supports it, else flat
    /// and at most `max_flat_bytes` (at least one ITS page). The value written is read back
    /// and must stick.
    pub fn program<I: ItsIo + ?Sized, F: FrameAllocator + ?Sized>(
        io: &I,
        frames: &mut F,
        index: usize,
        want_ids: u64,
        try_indirect: bool,
        max_flat_bytes: u64,
        l2_quota: usize,
    ) -> Result<Self, TableError> {
        let offset = GITS_BASER + 8 * index as u32;
        let current = io.read64(offset);
        let fixed = current & (mask(GITS_BASER_F::TYPE) | mask(GITS_BASER_F::ENTRY_SIZE));
        let entry = GITS_BASER_F::ENTRY_SIZE.read(current) + 1;
        let attrs = GITS_BASER_F::INNER_CACHE.val(CACHE_RAWAWB).value
            | GITS_BASER_F::SHAREABILITY.val(SHAREABILITY_INNER).value;
        // Probe: 4 KiB pages, Indirect as wanted, not valid.
        let probe = fixed
            | attrs
            | GITS_BASER_F::PAGE_SIZE::Size4K.value
            | if try_indirect { GITS_BASER_F::INDIRECT::SET.value } else { 0 };
        io.write64(offset, probe);
        let seen = io.read64(offset);
        let page_field = GITS_BASER_F::PAGE_SIZE.read(seen);
        let page = its_page_bytes(page_field);
        let indirect = try_indirect && GITS_BASER_F::INDIRECT.is_set(seen);
        let clean = GITS_BASER_F::SHAREABILITY.read(seen) == 0;
        let attrs = if clean { 0 } else { attrs };
        let (bytes, ids) = if indirect {
            // One ITS page of level-1 entries, each naming one ITS page of entries.
            (page, (page / 8) * (page / entry))
        } else {
            let bytes = want_ids.saturating_mul(entry).clamp(page, max_flat_bytes.max(page));
            let bytes = bytes.div_ceil(page) * page;
            (bytes, bytes / entry)
        };
        let ids = ids.min(want_ids);
        let base = alloc_bytes(frames, bytes, "table")?;
        let pages = bytes / page;
        let address = if page == 0x1_0000 {
            GITS_BASER_F::PHYSICAL_ADDRESS.val((base >> 12) | ((base >> 48) & 0xf)).value
        } else {
            GITS_BASER_F::PHYSICAL_ADDRESS.val(base >> 12).value
        };
        let value = fixed
            | attrs
            | GITS_BASER_F::PAGE_SIZE.val(page_field).value
            | address
            | GITS_BASER_F::SIZE.val(pages - 1).value
            | if indirect { GITS_BASER_F::INDIRECT::SET.value } else { 0 }
            | GITS_BASER_F::VALID::SET.value;
        io.publish(MemRange::new(base, base + bytes), clean);
        io.write64(offset, value);
        let read = io.read64(offset);
        let significant = !(mask(GITS_BASER_F::INNER_CACHE) | mask(GITS_BASER_F::OUTER_CACHE));
        if read & significant != value & significant {
            frames.free(base, usize::try_from(bytes / PAGE_SIZE).unwrap_or(0));
            io.write64(offset, fixed);
            return Err(TableError::DidNotStick { index, wrote: value, read });
        }
        let l1_entries = if indirect { usize::try_from(page / 8).unwrap_or(0) } else { 0 };
        Ok(ItsTable {
            index,
            base,
            bytes,
            page,
            entry,
            indirect,
            ids,
            l2: vec![None; l1_entries],
            quota: l2_quota,
            clean,
        })
    }

    /// IDs covered, as a field value: bits minus one (the largest power of two covered).
    pub fn id_bits_minus_one(&self) -> u64 {
        u64::from(ilog2(self.ids).saturating_sub(1))
    }

    /// Whether the ITS can find an entry for `id` (a two-level table: its level-2 page exists).
    pub fn has_entry(&self, id: u64) -> bool {
        if id >= self.ids {
            return false;
        }
        if !self.indirect {
            return true;
        }
        let per_page = self.page / self.entry;
        usize::try_from(id / per_page)
            .ok()
            .and_then(|l1| self.l2.get(l1))
            .is_some_and(|page| page.is_some())
    }

    /// Level-2 pages allocated so far.
    pub fn l2_pages(&self) -> usize {
        self.l2.iter().filter(|p| p.is_some()).count()
    }

    /// Makes sure the entry for `id` exists: a two-level table gets the level-2 page covering
    /// it (zeroed, made visible to the ITS, then named by a valid level-1 entry) the first
    /// time. `false` if `id` is beyond the table or no page can be had.
    pub fn ensure<I: ItsIo + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        io: &I,
        frames: &mut F,
        id: u64,
    ) -> bool {
        if id >= self.ids {
            return false;
        }
        if !self.indirect {
            return true;
        }
        let per_page = self.page / self.entry;
        let Ok(l1) = usize::try_from(id / per_page) else { return false };
        let Some(slot) = self.l2.get_mut(l1) else { return false };
        if slot.is_some() {
            return true;
        }
        if self.quota == 0 {
            return false;
        }
        let Ok(page) = alloc_bytes(frames, self.page, "device table level-2 page") else {
            return false;
        };
        self.quota -= 1;
        *slot = Some(page);
        // The zeroed page first, then the level-1 entry naming it.
        io.publish(MemRange::new(page, page + self.page), self.clean);
        let l1_entry = self.base + 8 * l1 as u64;
        io.mem_write64(l1_entry, page | L1_VALID);
        io.publish(MemRange::new(l1_entry, l1_entry + 8), self.clean);
        true
    }

    /// Every range of warden memory this table uses.
    pub fn ranges(&self) -> Vec<MemRange> {
        let mut out = vec![MemRange::new(self.base, self.base + self.bytes)];
        out.extend(self.l2.iter().flatten().map(|&p| MemRange::new(p, p + self.page)));
        out
    }
}

/// The real command queue: warden's page, written only with validated commands.
#[derive(Debug)]
pub struct ShadowQueue {
    pub base: u64,
    /// Index of the next free slot (GITS_CWRITER / 32).
    pub write: u32,
    /// Slots written since the last kick.
    pending: u32,
    pub clean: bool,
}

/// What a bounded wait for the ITS found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// GITS_CREADR reached GITS_CWRITER.
    Drained,
    /// Still going when the poll budget ran out.
    Busy,
    /// GITS_CREADR.Stalled: a command failed.
    Stalled,
}

impl ShadowQueue {
    /// Programs GITS_CBASER with a fresh page and GITS_CWRITER = 0 (the ITS must be disabled:
    /// GITS_CBASER then also resets GITS_CREADR).
    pub fn program<I: ItsIo + ?Sized, F: FrameAllocator + ?Sized>(
        io: &I,
        frames: &mut F,
    ) -> Result<Self, TableError> {
        let base = alloc_bytes(frames, SHADOW_QUEUE_BYTES, "command queue")?;
        let value = GITS_CBASER_F::VALID::SET.value
            | GITS_CBASER_F::INNER_CACHE.val(CACHE_RAWAWB).value
            | GITS_CBASER_F::SHAREABILITY.val(SHAREABILITY_INNER).value
            | GITS_CBASER_F::PHYSICAL_ADDRESS.val(base >> 12).value;
        io.publish(MemRange::new(base, base + SHADOW_QUEUE_BYTES), true);
        io.write64(GITS_CBASER, value);
        let mut read = io.read64(GITS_CBASER);
        let mut clean = false;
        if GITS_CBASER_F::SHAREABILITY.read(read) == 0 {
            // Not coherent: ask for non-cacheable and clean every command to PoC.
            let value = value
                & !(mask(GITS_CBASER_F::SHAREABILITY) | mask(GITS_CBASER_F::INNER_CACHE))
                | GITS_CBASER_F::INNER_CACHE.val(1).value;
            io.write64(GITS_CBASER, value);
            read = io.read64(GITS_CBASER);
            clean = true;
        }
        let address = mask(GITS_CBASER_F::PHYSICAL_ADDRESS) | mask(GITS_CBASER_F::VALID);
        if read & address != value & address {
            frames.free(base, 1);
            return Err(TableError::DidNotStick { index: usize::MAX, wrote: value, read });
        }
        io.write64(GITS_CWRITER, 0);
        Ok(ShadowQueue { base, write: 0, pending: 0, clean })
    }

    /// Room for more commands before the next kick (one slot stays empty: full and empty
    /// must differ).
    pub fn room(&self) -> u32 {
        SHADOW_QUEUE_ENTRIES - 1 - self.pending
    }

    /// Writes one command into the next slot (not yet visible to the ITS).
    pub fn push<I: ItsIo + ?Sized>(&mut self, io: &I, packet: [u64; 4]) {
        let slot = self.base + u64::from(self.write) * COMMAND_BYTES;
        for (i, word) in packet.iter().enumerate() {
            io.mem_write64(slot + 8 * i as u64, *word);
        }
        self.write = (self.write + 1) % SHADOW_QUEUE_ENTRIES;
        self.pending += 1;
    }

    /// Makes the pushed commands visible and tells the ITS (GITS_CWRITER).
    pub fn kick<I: ItsIo + ?Sized>(&mut self, io: &I) {
        if self.pending == 0 {
            return;
        }
        io.publish(MemRange::new(self.base, self.base + SHADOW_QUEUE_BYTES), self.clean);
        io.write64(GITS_CWRITER, u64::from(self.write) * COMMAND_BYTES);
        self.pending = 0;
    }

    /// Polls GITS_CREADR at most `polls` times for the queue to drain.
    pub fn wait<I: ItsIo + ?Sized>(&self, io: &I, polls: u32) -> QueueState {
        let target = u64::from(self.write) * COMMAND_BYTES;
        for _ in 0..polls.max(1) {
            let creadr = io.read64(GITS_CREADR);
            if GITS_CQ_OFFSET_F::RETRY_OR_STALLED.is_set(creadr) {
                return QueueState::Stalled;
            }
            if creadr & mask(GITS_CQ_OFFSET_F::OFFSET) == target {
                return QueueState::Drained;
            }
            core::hint::spin_loop();
        }
        QueueState::Busy
    }

    pub fn range(&self) -> MemRange {
        MemRange::new(self.base, self.base + SHADOW_QUEUE_BYTES)
    }
}
