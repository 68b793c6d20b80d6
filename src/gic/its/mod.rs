//! The host's ITS: its control frame is a hole in the host's stage 2, every access traps and
//! lands in [`VirtIts::mmio_read`] / [`VirtIts::mmio_write`] (GITS_TRANSLATER's frame stays
//! mapped: devices' MSI writes never trap).
//!
//! What the host programs is virtual; the real ITS only ever sees warden's memory:
//! - **Command queue**: the host's GITS_CBASER is a register warden keeps (the queue must be
//!   host memory, rule 1). On a GITS_CWRITER write, each new command is copied once from the
//!   host's queue, decoded, validated and re-encoded into warden's shadow queue
//!   ([`table::ShadowQueue`]); the real ITS is kicked and waited for (bounded), then the
//!   virtual GITS_CREADR moves past the batch. At most [`ItsParams::cmd_budget`] commands per
//!   trap: the host polls GITS_CREADR, and each read traps and continues.
//! - **Device and collection tables**: warden's ([`table::ItsTable`]); the host's GITS_BASERn
//!   are virtual registers, checked (a valid table must be host memory, rule 1) and otherwise
//!   unused. The ITS reads device-table entries, which hold ITT addresses, at translation
//!   time: had the host's table been used, any DTE the host wrote would be a DMA target.
//! - **Commands**: MAPD's ITT must be host memory (rule 1), sized from MAPD.Size and the ITT
//!   entry size; RDbase targets must name a redistributor; ICIDs, DeviceIDs and EventIDs must
//!   be in the advertised ranges; MAPTI/MAPI INTIDs must be LPIs the pending tables cover;
//!   GICv4 commands and unknown opcodes are dropped ([`cmd::Refusal`]), logged and counted.
//! - **GITS_TYPER**: physical LPIs only (no Virtual, VMOVP, VSGI, MPAM, UMSI; SEIS = 0,
//!   HCC = 0), DeviceIDs and collections capped at what warden's tables cover.
//!
//! Writes to GITS_BASERn and GITS_CBASER while the ITS is enabled are ignored (the
//! architecture leaves them UNPREDICTABLE; QEMU ignores them too).

pub mod cmd;
pub mod table;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use super::HostMemory;
use super::regs::*;
use crate::mm::{FrameAllocator, MemRange};
use crate::trap::should_log;
use cmd::{COMMAND_BYTES, Command, Refusal};
use table::{FLAT_DEVICE_TABLE_BYTES, ItsTable, QueueState, SHADOW_QUEUE_ENTRIES, ShadowQueue};

/// The real ITS's control frame and the warden memory it reads.
pub trait ItsIo {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
    fn read64(&self, offset: u32) -> u64;
    fn write64(&self, offset: u32, value: u64);
    /// A single-copy-atomic 64-bit write to warden memory the ITS reads (queue, tables), by
    /// physical address (warden's memory is identity-mapped).
    fn mem_write64(&self, pa: u64, value: u64);
    /// Makes every earlier write to warden memory visible to the ITS before any later
    /// register access (`DSB`); with `clean`, `range` is first cleaned to PoC (an ITS that
    /// does not snoop caches).
    fn publish(&self, range: MemRange, clean: bool);
}

/// A redistributor as a command's RDbase names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdTarget {
    /// Physical address of its RD_base frame (what RDbase holds when GITS_TYPER.PTA = 1).
    pub rd_base: u64,
    /// GICR_TYPER.Processor_Number (what RDbase holds when PTA = 0).
    pub processor: u16,
}

/// How the emulation is set up.
#[derive(Clone, Debug)]
pub struct ItsParams {
    pub targets: Vec<RdTarget>,
    /// INTIDs below `1 << lpi_id_bits` are what the redistributors' pending tables cover
    /// (GICD_TYPER.IDbits + 1).
    pub lpi_id_bits: u32,
    /// Commands consumed per trap at most (below the shadow queue's 127 free slots).
    pub cmd_budget: u32,
    /// GITS_CREADR polls per wait (and GITS_CTLR polls for quiescence at setup).
    pub poll_limit: u32,
    /// Device-table level-2 pages warden will allocate at most.
    pub l2_quota: usize,
}

impl ItsParams {
    pub const DEFAULT_CMD_BUDGET: u32 = 64;
    pub const DEFAULT_POLL_LIMIT: u32 = 1 << 20;
    /// 32 pages of 512 DeviceIDs each: 16 384 DeviceIDs (64 PCI buses), 128 KiB at most.
    pub const DEFAULT_L2_QUOTA: usize = 32;
}

/// Why an ITS cannot be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsInitError {
    /// GITS_CTLR.Quiescent did not come up after disabling it.
    NotQuiescent,
    /// GITS_TYPER.Physical = 0.
    NoPhysicalLpis,
    /// No GITS_BASERn of type Devices.
    NoDeviceTable,
    /// Neither a collection table nor hardware collections (GITS_TYPER.HCC).
    NoCollections,
    Table(table::TableError),
}

impl core::fmt::Display for ItsInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ItsInitError::NotQuiescent => {
                write!(f, "the ITS did not become quiescent once disabled (GITS_CTLR)")
            }
            ItsInitError::NoPhysicalLpis => write!(f, "GITS_TYPER.Physical is 0"),
            ItsInitError::NoDeviceTable => write!(f, "no GITS_BASERn holds a device table"),
            ItsInitError::NoCollections => write!(f, "no collection table and GITS_TYPER.HCC 0"),
            ItsInitError::Table(e) => write!(f, "{e}"),
        }
    }
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItsStats {
    /// Host commands consumed (forwarded or dropped).
    pub commands: u64,
    pub forwarded: u64,
    /// Dropped: GICv4 or unknown opcodes.
    pub dropped_unsupported: u64,
    /// Dropped: fields out of range, an ITT that is not host memory, no table page.
    pub dropped_invalid: u64,
    /// GITS_BASERn / GITS_CBASER writes ignored because the table is not host memory.
    pub table_refusals: u64,
    /// Commands the host's queue could not be read for (not host memory): queue stalled.
    pub queue_read_aborts: u64,
    /// Waits that ran out of polls (the batch finishes on a later trap).
    pub real_busy: u64,
    /// The real ITS stalled on a command warden passed (it then takes no more).
    pub real_stalls: u64,
    /// Accesses the architecture does not define: RAZ/WI.
    pub bad_accesses: u64,
}

/// Why the host's queue stopped (GITS_CREADR.Stalled = 1 until GITS_CWRITER.Retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    /// The command at GITS_CREADR could not be read from host memory.
    HostQueue,
    /// The real ITS stalled; the host's Retry retries it there.
    Real,
}

/// Writable bits of the virtual GITS_BASERn (TYPE and ENTRY_SIZE are read-only).
const BASER_WRITABLE: u64 = mask(GITS_BASER_F::VALID)
    | mask(GITS_BASER_F::INDIRECT)
    | mask(GITS_BASER_F::INNER_CACHE)
    | mask(GITS_BASER_F::OUTER_CACHE)
    | mask(GITS_BASER_F::PHYSICAL_ADDRESS)
    | mask(GITS_BASER_F::SHAREABILITY)
    | mask(GITS_BASER_F::PAGE_SIZE)
    | mask(GITS_BASER_F::SIZE);
const BASER_FIXED: u64 = mask(GITS_BASER_F::TYPE) | mask(GITS_BASER_F::ENTRY_SIZE);
const CBASER_WRITABLE: u64 = mask(GITS_CBASER_F::VALID)
    | mask(GITS_CBASER_F::INNER_CACHE)
    | mask(GITS_CBASER_F::OUTER_CACHE)
    | mask(GITS_CBASER_F::PHYSICAL_ADDRESS)
    | mask(GITS_CBASER_F::SHAREABILITY)
    | mask(GITS_CBASER_F::SIZE);
const QUEUE_PAGE: u64 = 0x1000;
/// GITS_BASER.Type values.
const BASER_TYPE_DEVICES: u64 = 1;
const BASER_TYPE_COLLECTIONS: u64 = 4;

/// The emulated ITS.
pub struct VirtIts {
    params: ItsParams,
    /// What GITS_TYPER shows the host.
    typer: u64,
    iidr: u32,
    pta: bool,
    /// The real ITS's own GITS_TYPER.ID_bits (EventIDs).
    event_id_bits: u32,
    itt_entry_bytes: u64,
    /// Collections the host may name (the collection table's, or hardware collections).
    collections: u64,
    // --- virtual registers
    enabled: bool,
    cbaser: u64,
    /// Byte offsets into the host's queue.
    cwriter: u64,
    creadr: u64,
    stall: Option<Stall>,
    baser: [u64; GITS_BASER_COUNT],
    // --- the real side
    queue: ShadowQueue,
    devices: ItsTable,
    collection_table: Option<ItsTable>,
    /// A batch the real ITS has not finished: GITS_CREADR moves to this host offset when it
    /// has.
    batch_end: Option<u64>,
    /// The real ITS stalled and nothing was retried yet: no more commands go to it.
    failed: bool,
    stats: ItsStats,
}

impl core::fmt::Debug for VirtIts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtIts").field("typer", &self.typer).field("stats", &self.stats).finish()
    }
}

/// Polls `done` up to `limit` times.
fn poll(limit: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit.max(1) {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

impl VirtIts {
    /// Takes the real ITS: disabled and quiescent, warden's device table, collection table and
    /// command queue programmed, every other GITS_BASERn invalid. It stays disabled until the
    /// host enables its virtual one.
    pub fn new<I: ItsIo + ?Sized, F: FrameAllocator + ?Sized>(
        io: &I,
        frames: &mut F,
        params: ItsParams,
    ) -> Result<Self, ItsInitError> {
        let ctlr = io.read32(GITS_CTLR);
        if GITS_CTLR_F::ENABLED.is_set(ctlr) {
            io.write32(GITS_CTLR, ctlr & !GITS_CTLR_F::ENABLED::SET.value);
        }
        if !poll(params.poll_limit, || GITS_CTLR_F::QUIESCENT.is_set(io.read32(GITS_CTLR))) {
            return Err(ItsInitError::NotQuiescent);
        }
        let typer = io.read64(GITS_TYPER);
        if !GITS_TYPER_F::PHYSICAL.is_set(typer) {
            return Err(ItsInitError::NoPhysicalLpis);
        }
        let device_ids = 1u64 << (GITS_TYPER_F::DEVBITS.read(typer) + 1).min(32);
        let collection_ids = if GITS_TYPER_F::CIL.is_set(typer) {
            1u64 << (GITS_TYPER_F::CIDBITS.read(typer) + 1)
        } else {
            1 << 16
        };
        let mut devices = None;
        let mut collection_table = None;
        let mut baser = [0u64; GITS_BASER_COUNT];
        for (n, virt) in baser.iter_mut().enumerate() {
            let offset = GITS_BASER + 8 * n as u32;
            let current = io.read64(offset);
            let fixed = current & BASER_FIXED;
            let kind = GITS_BASER_F::TYPE.read(current);
            if kind == BASER_TYPE_DEVICES && devices.is_none() {
                let table = ItsTable::program(
                    io,
                    frames,
                    n,
                    device_ids,
                    true,
                    FLAT_DEVICE_TABLE_BYTES,
                    params.l2_quota,
                )
                .map_err(ItsInitError::Table)?;
                devices = Some(table);
            } else if kind == BASER_TYPE_COLLECTIONS && collection_table.is_none() {
                let table = ItsTable::program(io, frames, n, collection_ids, false, 0, 0)
                    .map_err(ItsInitError::Table)?;
                collection_table = Some(table);
            } else {
                // vPE tables and anything else: never valid (GICv4 is hidden).
                if kind != 0 {
                    io.write64(offset, fixed);
                }
                continue;
            }
            *virt = fixed | GITS_BASER_F::PAGE_SIZE::Size64K.value;
        }
        let devices = devices.ok_or(ItsInitError::NoDeviceTable)?;
        let hcc = GITS_TYPER_F::HCC.read(typer);
        let collections = match &collection_table {
            Some(t) => t.ids.min(collection_ids),
            None if hcc > 0 => hcc,
            None => return Err(ItsInitError::NoCollections),
        };
        let queue = ShadowQueue::program(io, frames).map_err(ItsInitError::Table)?;
        let cid_bits_minus_one = u64::from(63 - collections.leading_zeros()).saturating_sub(1);
        let advertised = GITS_TYPER_F::PHYSICAL::SET.value
            | (typer & mask(GITS_TYPER_F::ITT_ENTRY_SIZE))
            | (typer & mask(GITS_TYPER_F::ID_BITS))
            | GITS_TYPER_F::DEVBITS.val(devices.id_bits_minus_one()).value
            | (typer & mask(GITS_TYPER_F::PTA))
            | GITS_TYPER_F::CIL::SET.value
            | GITS_TYPER_F::CIDBITS.val(cid_bits_minus_one).value;
        Ok(VirtIts {
            typer: advertised,
            iidr: io.read32(GITS_IIDR),
            pta: GITS_TYPER_F::PTA.is_set(typer),
            event_id_bits: (GITS_TYPER_F::ID_BITS.read(typer) + 1) as u32,
            itt_entry_bytes: GITS_TYPER_F::ITT_ENTRY_SIZE.read(typer) + 1,
            collections: 1 << (cid_bits_minus_one + 1),
            params,
            enabled: false,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stall: None,
            baser,
            queue,
            devices,
            collection_table,
            batch_end: None,
            failed: false,
            stats: ItsStats::default(),
        })
    }

    pub fn stats(&self) -> ItsStats {
        self.stats
    }

    /// What GITS_TYPER shows the host.
    pub fn typer(&self) -> u64 {
        self.typer
    }

    /// The warden memory the real ITS uses (queue, tables), for checks and the footprint.
    pub fn memory(&self) -> Vec<MemRange> {
        let mut out = alloc::vec![self.queue.range()];
        out.extend(self.devices.ranges());
        out.extend(self.collection_table.iter().flat_map(|t| t.ranges()));
        out
    }

    /// DeviceIDs the host may name.
    fn device_ids(&self) -> u64 {
        1 << (GITS_TYPER_F::DEVBITS.read(self.typer) + 1)
    }

    fn host_queue_bytes(&self) -> Option<u64> {
        GITS_CBASER_F::VALID
            .is_set(self.cbaser)
            .then(|| (GITS_CBASER_F::SIZE.read(self.cbaser) + 1) * QUEUE_PAGE)
    }

    fn host_queue_base(&self) -> u64 {
        GITS_CBASER_F::PHYSICAL_ADDRESS.read(self.cbaser) << 12
    }

    fn creadr_value(&self) -> u64 {
        self.creadr | if self.stall.is_some() { 1 } else { 0 }
    }

    fn bad_access(&mut self, offset: u32, size: u8, write: bool) {
        self.stats.bad_accesses += 1;
        if should_log(self.stats.bad_accesses) {
            log::warn!(
                "ITS: {} {size}B at {offset:#x} is not a register access warden emulates: RAZ/WI (#{})",
                if write { "write" } else { "read" },
                self.stats.bad_accesses
            );
        }
    }

    /// A trapped 4- or 8-byte load at `offset` in the control frame.
    pub fn mmio_read<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        offset: u32,
        size: u8,
        io: &I,
        host: &H,
        frames: &mut F,
    ) -> u64 {
        let part = |value: u64, reg: u32| read_part(value, offset - reg, size);
        let value = match offset {
            GITS_CTLR if size == 4 => {
                let quiescent = io.read32(GITS_CTLR) & GITS_CTLR_F::QUIESCENT::SET.value;
                Some(u64::from(quiescent) | u64::from(self.enabled))
            }
            GITS_IIDR if size == 4 => Some(u64::from(self.iidr)),
            o if (GITS_TYPER..GITS_TYPER + 8).contains(&o) => part(self.typer, GITS_TYPER),
            o if (GITS_CBASER..GITS_CBASER + 8).contains(&o) => part(self.cbaser, GITS_CBASER),
            o if (GITS_CWRITER..GITS_CWRITER + 8).contains(&o) => part(self.cwriter, GITS_CWRITER),
            o if (GITS_CREADR..GITS_CREADR + 8).contains(&o) => {
                // The host polls GITS_CREADR for progress: consume more first.
                self.process(io, host, frames);
                part(self.creadr_value(), GITS_CREADR)
            }
            o if (GITS_BASER..GITS_BASER + 8 * GITS_BASER_COUNT as u32).contains(&o) => {
                let n = ((o - GITS_BASER) / 8) as usize;
                self.baser.get(n).and_then(|&v| part(v, GITS_BASER + 8 * n as u32))
            }
            o if o >= GITS_IDREGS && size == 4 && o.is_multiple_of(4) => {
                Some(u64::from(io.read32(o)))
            }
            _ => None,
        };
        value.unwrap_or_else(|| {
            self.bad_access(offset, size, false);
            0
        })
    }

    /// A trapped 4- or 8-byte store of `value` at `offset` in the control frame.
    pub fn mmio_write<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        offset: u32,
        size: u8,
        value: u64,
        io: &I,
        host: &H,
        frames: &mut F,
    ) {
        let handled = match offset {
            GITS_CTLR if size == 4 => {
                self.write_ctlr(value, io, host, frames);
                true
            }
            o if (GITS_CBASER..GITS_CBASER + 8).contains(&o) => {
                match merge_write(self.cbaser, o - GITS_CBASER, size, value) {
                    Some(new) => {
                        self.write_cbaser(new, host);
                        true
                    }
                    None => false,
                }
            }
            o if (GITS_CWRITER..GITS_CWRITER + 8).contains(&o) => {
                match merge_write(self.cwriter, o - GITS_CWRITER, size, value) {
                    // The upper half is RES0: a write to it alone changes nothing.
                    Some(_) if o != GITS_CWRITER => true,
                    Some(new) => {
                        self.write_cwriter(new, io, host, frames);
                        true
                    }
                    None => false,
                }
            }
            o if (GITS_BASER..GITS_BASER + 8 * GITS_BASER_COUNT as u32).contains(&o) => {
                let n = ((o - GITS_BASER) / 8) as usize;
                let reg = GITS_BASER + 8 * n as u32;
                let old = self.baser.get(n).copied().unwrap_or(0);
                match merge_write(old, o - reg, size, value) {
                    Some(new) => {
                        self.write_baser(n, new, host);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if !handled {
            self.bad_access(offset, size, true);
        }
    }

    fn write_ctlr<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        value: u64,
        io: &I,
        host: &H,
        frames: &mut F,
    ) {
        let enable = value & u64::from(GITS_CTLR_F::ENABLED::SET.value) != 0;
        if enable == self.enabled {
            return;
        }
        self.enabled = enable;
        if enable {
            io.write32(GITS_CTLR, GITS_CTLR_F::ENABLED::SET.value);
            self.process(io, host, frames);
        } else {
            io.write32(GITS_CTLR, 0);
        }
    }

    fn refuse_table(&mut self, what: core::fmt::Arguments<'_>, range: Option<MemRange>) {
        self.stats.table_refusals += 1;
        if should_log(self.stats.table_refusals) {
            match range {
                Some(r) => log::warn!(
                    "ITS: host {what} at {r} is not host memory (warden's, a carveout or no-map reserved): write ignored (#{})",
                    self.stats.table_refusals
                ),
                None => log::warn!(
                    "ITS: host {what}: size out of range, write ignored (#{})",
                    self.stats.table_refusals
                ),
            }
        }
    }

    fn write_cbaser<H: HostMemory + ?Sized>(&mut self, new: u64, host: &H) {
        if self.enabled {
            return;
        }
        let new = new & CBASER_WRITABLE;
        if GITS_CBASER_F::VALID.is_set(new) {
            let base = GITS_CBASER_F::PHYSICAL_ADDRESS.read(new) << 12;
            let bytes = (GITS_CBASER_F::SIZE.read(new) + 1) * QUEUE_PAGE;
            let range = MemRange::from_base_size(base, bytes);
            if !range.is_some_and(|r| host.is_host_memory(r)) {
                self.refuse_table(format_args!("command queue (GITS_CBASER)"), range);
                return;
            }
        }
        self.cbaser = new;
        // Writing GITS_CBASER resets GITS_CREADR; a batch still in the real queue finishes
        // into the new offset 0.
        self.creadr = 0;
        self.stall = None;
        if self.batch_end.is_some() {
            self.batch_end = Some(0);
        }
    }

    fn write_cwriter<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        new: u64,
        io: &I,
        host: &H,
        frames: &mut F,
    ) {
        let offset = new & mask(GITS_CQ_OFFSET_F::OFFSET);
        if self.host_queue_bytes().is_some_and(|bytes| offset >= bytes) {
            // Beyond the queue: UNPREDICTABLE; ignored.
            self.bad_access(GITS_CWRITER, 8, true);
            return;
        }
        self.cwriter = offset;
        if GITS_CQ_OFFSET_F::RETRY_OR_STALLED.is_set(new) {
            match self.stall.take() {
                Some(Stall::Real) => {
                    self.failed = false;
                    io.write64(GITS_CWRITER, io.read64(GITS_CWRITER) | 1);
                }
                Some(Stall::HostQueue) | None => {}
            }
        }
        self.process(io, host, frames);
    }

    fn write_baser<H: HostMemory + ?Sized>(&mut self, n: usize, new: u64, host: &H) {
        let Some(&old) = self.baser.get(n) else { return };
        if old == 0 || self.enabled {
            // Unimplemented (RAZ/WI), or ignored while the ITS is enabled.
            return;
        }
        let new = (new & BASER_WRITABLE) | (old & BASER_FIXED);
        if GITS_BASER_F::VALID.is_set(new) {
            let page = its_page_bytes(GITS_BASER_F::PAGE_SIZE.read(new));
            let bytes = (GITS_BASER_F::SIZE.read(new) + 1) * page;
            let range = MemRange::from_base_size(its_baser_address(new), bytes);
            if !range.is_some_and(|r| host.is_host_memory(r)) {
                self.refuse_table(format_args!("table (GITS_BASER{n})"), range);
                return;
            }
        }
        if let Some(slot) = self.baser.get_mut(n) {
            *slot = new;
        }
    }

    /// Consumes host commands from GITS_CREADR towards GITS_CWRITER: at most the budget, one
    /// batch in the real queue at a time.
    fn process<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        io: &I,
        host: &H,
        frames: &mut F,
    ) {
        if !self.enabled || self.failed {
            return;
        }
        // An earlier batch first: nothing moves until the real ITS finished it.
        if let Some(end) = self.batch_end
            && !self.finish_batch(io, end)
        {
            return;
        }
        let Some(queue_bytes) = self.host_queue_bytes() else { return };
        if self.stall.is_some() {
            return;
        }
        let base = self.host_queue_base();
        let budget = self.params.cmd_budget.clamp(1, self.queue.room());
        let mut cursor = self.creadr;
        let mut pushed = 0u32;
        for _ in 0..budget {
            if cursor == self.cwriter {
                break;
            }
            let mut packet = [0u8; COMMAND_BYTES as usize];
            if host.read(base + cursor, &mut packet).is_err() {
                self.stats.queue_read_aborts += 1;
                if should_log(self.stats.queue_read_aborts) {
                    log::warn!(
                        "ITS: host command at {:#x} is not in host memory: queue stalled (#{})",
                        base + cursor,
                        self.stats.queue_read_aborts
                    );
                }
                self.stall = Some(Stall::HostQueue);
                break;
            }
            let mut words = [0u64; 4];
            for (word, bytes) in words.iter_mut().zip(packet.chunks_exact(8)) {
                *word = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            }
            self.stats.commands += 1;
            match Command::decode(words).and_then(|c| self.admit(c, io, host, frames)) {
                Ok(command) => {
                    self.queue.push(io, command.encode());
                    self.stats.forwarded += 1;
                    pushed += 1;
                }
                Err(refusal) => self.drop_command(refusal, words),
            }
            cursor = (cursor + COMMAND_BYTES) % queue_bytes;
        }
        if pushed == 0 {
            self.creadr = cursor;
            return;
        }
        self.queue.kick(io);
        self.finish_batch(io, cursor);
    }

    /// Waits (bounded) for the real queue to drain; then GITS_CREADR moves to `end`.
    fn finish_batch<I: ItsIo + ?Sized>(&mut self, io: &I, end: u64) -> bool {
        match self.queue.wait(io, self.params.poll_limit) {
            QueueState::Drained => {
                self.creadr = end;
                self.batch_end = None;
                true
            }
            QueueState::Busy => {
                self.stats.real_busy += 1;
                self.batch_end = Some(end);
                false
            }
            QueueState::Stalled => {
                self.stats.real_stalls += 1;
                log::error!(
                    "ITS: the real ITS stalled on a command warden passed (GITS_CREADR {:#x}): no more commands go to it until the host retries",
                    io.read64(GITS_CREADR)
                );
                self.failed = true;
                self.stall = Some(Stall::Real);
                self.batch_end = Some(end);
                false
            }
        }
    }

    fn drop_command(&mut self, refusal: Refusal, words: [u64; 4]) {
        let count = match refusal {
            Refusal::GicV4(_) | Refusal::Unknown(_) => &mut self.stats.dropped_unsupported,
            _ => &mut self.stats.dropped_invalid,
        };
        *count += 1;
        let n = self.stats.dropped_unsupported + self.stats.dropped_invalid;
        if should_log(n) {
            log::warn!(
                "ITS: host command {:#x} {:#x} {:#x} {:#x} dropped: {refusal} (#{n})",
                words[0],
                words[1],
                words[2],
                words[3]
            );
        }
    }

    fn check_device(&self, device: u32) -> Result<(), Refusal> {
        if u64::from(device) < self.device_ids() { Ok(()) } else { Err(Refusal::DeviceId(device)) }
    }

    /// A command about an existing mapping: its DeviceID must have a device-table page (else
    /// nothing can be mapped there, and the ITS would find no entry).
    fn check_mapped_device(&self, device: u32) -> Result<(), Refusal> {
        self.check_device(device)?;
        if self.devices.has_entry(u64::from(device)) {
            Ok(())
        } else {
            Err(Refusal::DeviceId(device))
        }
    }

    fn check_event(&self, event: u32) -> Result<(), Refusal> {
        if u64::from(event) < 1u64 << self.event_id_bits {
            Ok(())
        } else {
            Err(Refusal::EventId(event))
        }
    }

    fn check_icid(&self, icid: u16) -> Result<(), Refusal> {
        if u64::from(icid) < self.collections { Ok(()) } else { Err(Refusal::Icid(icid)) }
    }

    fn check_target(&self, target: u64) -> Result<(), Refusal> {
        let known = self.params.targets.iter().any(|t| {
            if self.pta { t.rd_base == target << 16 } else { u64::from(t.processor) == target }
        });
        if known { Ok(()) } else { Err(Refusal::Target(target)) }
    }

    fn check_lpi(&self, intid: u32) -> Result<(), Refusal> {
        let intid64 = u64::from(intid);
        if intid64 >= LPI_FIRST_INTID && intid64 < 1u64 << self.params.lpi_id_bits.min(32) {
            Ok(())
        } else {
            Err(Refusal::Intid(intid))
        }
    }

    /// Validates one decoded command against the ITS and host memory; a MAPD of a new
    /// DeviceID gets its device-table page here, before the ITS can look for it.
    fn admit<I: ItsIo + ?Sized, H: HostMemory + ?Sized, F: FrameAllocator + ?Sized>(
        &mut self,
        command: Command,
        io: &I,
        host: &H,
        frames: &mut F,
    ) -> Result<Command, Refusal> {
        match command {
            Command::Movi { device, event, icid } => {
                self.check_mapped_device(device)?;
                self.check_event(event)?;
                self.check_icid(icid)?;
            }
            Command::Int { device, event }
            | Command::Clear { device, event }
            | Command::Inv { device, event }
            | Command::Discard { device, event } => {
                self.check_mapped_device(device)?;
                self.check_event(event)?;
            }
            Command::Sync { target } => self.check_target(target)?,
            Command::Mapd { device, size, itt, valid } => {
                self.check_device(device)?;
                if u32::from(size) >= self.event_id_bits {
                    return Err(Refusal::IttSize(size));
                }
                if valid {
                    let bytes = (2u64 << size) * self.itt_entry_bytes;
                    let range = MemRange::from_base_size(itt, bytes);
                    if !range.is_some_and(|r| host.is_host_memory(r)) {
                        return Err(Refusal::IttNotHostMemory { itt, bytes });
                    }
                    if !self.devices.ensure(io, frames, u64::from(device)) {
                        return Err(Refusal::NoTableMemory(device));
                    }
                } else if !self.devices.has_entry(u64::from(device)) {
                    // Unmapping a DeviceID that was never mapped: nothing to do.
                    return Err(Refusal::DeviceId(device));
                }
            }
            Command::Mapc { icid, target, valid } => {
                self.check_icid(icid)?;
                if valid {
                    self.check_target(target)?;
                } else {
                    return Ok(Command::Mapc { icid, target: 0, valid: false });
                }
            }
            Command::Mapti { device, event, intid, icid } => {
                self.check_mapped_device(device)?;
                self.check_event(event)?;
                self.check_lpi(intid)?;
                self.check_icid(icid)?;
            }
            Command::Mapi { device, event, icid } => {
                self.check_mapped_device(device)?;
                self.check_event(event)?;
                self.check_lpi(event)?;
                self.check_icid(icid)?;
            }
            Command::Invall { icid } => self.check_icid(icid)?,
            Command::Movall { from, to } => {
                self.check_target(from)?;
                self.check_target(to)?;
            }
        }
        Ok(command)
    }
}

/// Command queue indices for tests and diagnostics.
impl VirtIts {
    /// The virtual GITS_CREADR and GITS_CWRITER offsets.
    pub fn host_offsets(&self) -> (u64, u64) {
        (self.creadr, self.cwriter)
    }

    /// The shadow queue's next slot.
    pub fn shadow_write_index(&self) -> u32 {
        self.queue.write
    }

    pub fn shadow_entries() -> u32 {
        SHADOW_QUEUE_ENTRIES
    }

    pub fn device_table(&self) -> &ItsTable {
        &self.devices
    }
}
