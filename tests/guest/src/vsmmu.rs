//! A minimal driver for the SMMUv3 the guest sees (warden's virtual SMMU): a linear stream
//! table, a small command queue and an event queue in guest RAM, STEs and context descriptors
//! written here, commands (CFGI_STE, CFGI_CD, TLBI_NH_ASID, CMD_SYNC) issued and waited for.
//! Enough to put edu's stream in bypass (warden turns that into its stage 2 only) or behind a
//! stage-1 context: a CD with an ASID over 4 KiB-granule tables built here (the guest's own MMU
//! stays off; the tables are only for the SMMU), and to read the events warden forwards.

use core::cell::UnsafeCell;

use crate::cpu;
use crate::report::Reason;

const IDR1: u64 = 0x04;
const CR0: u64 = 0x20;
const CR0ACK: u64 = 0x24;
const STRTAB_BASE: u64 = 0x80;
const STRTAB_BASE_CFG: u64 = 0x88;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9c;
const EVTQ_BASE: u64 = 0xa0;
/// In page 1 (the second 64 KiB frame).
const EVTQ_PROD: u64 = 0x1_00a8;
const EVTQ_CONS: u64 = 0x1_00ac;
const GERROR: u64 = 0x60;
const GERRORN: u64 = 0x64;
const GBPA: u64 = 0x44;
/// GBPA.UPDATE (bit 31) and GBPA.ABORT (bit 20).
pub const GBPA_UPDATE: u32 = 1 << 31;
pub const GBPA_ABORT: u32 = 1 << 20;
/// GBPA at reset under warden: bypass, SHCFG = use incoming (QEMU's `SMMU_GBPA_RESET_VAL`).
pub const GBPA_RESET: u32 = 1 << 12;
/// IDR1.CMDQS: log2 of the largest command queue (bits 25:21).
const IDR1_CMDQS_SHIFT: u32 = 21;
const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
/// Queue pointers: index and wrap bit below this, overflow flag at bit 31.
const Q_OVERFLOW: u32 = 1 << 31;
/// warden's test-only G3 switch (`test-switches` builds only; RAZ/WI otherwise): see
/// docs/smmu.md.
const TEST_G3_SWITCH: u64 = 0xe00;
const TEST_G3_KEY: u32 = 0x4733_0000;

/// Stream IDs below 2^8 (one PCI bus): 256 STEs of 64 bytes.
const STRTAB_LOG2: u32 = 8;
const STE_WORDS: usize = 8;
/// 2^4 commands of 16 bytes: what every scenario uses...
const CMDQ_LOG2: u32 = 4;
/// ...but the static queue has room for 2^8 (one page), for [`Smmu::enable_large_queue`].
const CMDQ_MAX_LOG2: u32 = 8;
const CMDQ_MAX_ENTRIES: u32 = 1 << CMDQ_MAX_LOG2;
/// 2^4 event records of 32 bytes.
const EVTQ_LOG2: u32 = 4;
const EVTQ_ENTRIES: u32 = 1 << EVTQ_LOG2;
const EVENT_WORDS: usize = 4;

const OP_CFGI_STE: u64 = 0x03;
const OP_CFGI_CD: u64 = 0x05;
const OP_TLBI_NH_ASID: u64 = 0x11;
const OP_CMD_SYNC: u64 = 0x46;
/// IDR0.MSI: MSIs, and MSI-signalled CMD_SYNC completion.
const IDR0_MSI: u32 = 1 << 13;
/// CMD_SYNC with CS = SIG_NONE (completion seen by polling CMDQ_CONS), as [`Smmu::sync`] issues
/// it.
pub const CMD_SYNC: [u64; 2] = [OP_CMD_SYNC, 0];
pub const STE0_V: u64 = 1;
const STE0_CONFIG_BYPASS: u64 = 0b100 << 1;
pub const STE0_CONFIG_S1: u64 = 0b101 << 1;
/// Stage 2 only and stage 1 + stage 2: not advertised by warden (IDR0.S2P = 0).
pub const STE0_CONFIG_S2: u64 = 0b110 << 1;
pub const STE0_CONFIG_NESTED: u64 = 0b111 << 1;
/// S1DSS = substream 0, S1CIR/S1COR write-back, S1CSH inner shareable (as Linux writes it).
const STE1_S1: u64 = 2 | (1 << 2) | (1 << 4) | (3 << 6);

/// CD word 0 (IHI 0070 5.4): T0SZ 25 (a 39-bit IOVA space: the walk starts at level 1), TG0
/// 4 KiB, IRGN0/ORGN0 write-back, SH0 inner, EPD1 (no TTB1), V, IPS 40 bits, AA64, R (record
/// faults), A (abort them), ASET (not shared with the CPU); the ASID is in bits 63:48.
const CD_T0SZ: u64 = 25;
const CD0_BASE: u64 = CD_T0SZ
    | (1 << 8)
    | (1 << 10)
    | (3 << 12)
    | (1 << 30)
    | CD0_V
    | (2 << 32)
    | (1 << 41)
    | (1 << 45)
    | (1 << 46)
    | (1 << 47);
const CD0_V: u64 = 1 << 31;
/// CD word 0 bit 44: S, stall faulting transactions (warden advertises no stalls).
pub const CD0_S: u64 = 1 << 44;
/// MAIR attribute 0: normal memory, write-back.
const CD_MAIR: u64 = 0xff;
const CD_WORDS: usize = 8;
/// Context descriptors the guest can point STEs at.
pub const CD_SLOTS: usize = 4;

/// IOVAs below 2^39 (T0SZ 25).
pub const IOVA_LIMIT: u64 = 1 << (64 - CD_T0SZ);
const TABLE_ENTRIES: usize = 512;
/// Page tables in the pool: enough for a few address spaces of a few pages each.
const POOL_TABLES: usize = 16;
const DESC_VALID_TABLE: u64 = 0b11;
/// Level-3 page: valid, page, AttrIndx 0, AP = read/write, SH inner, AF, nG (ASID-tagged).
const DESC_PAGE: u64 = 0b11 | (1 << 6) | (3 << 8) | (1 << 10) | (1 << 11);
const DESC_ADDRESS: u64 = 0x0000_ffff_ffff_f000;
const PAGE_SIZE: u64 = 4096;

const TIMEOUT_MS: u64 = 1000;

#[repr(C, align(16384))]
struct StreamTable(UnsafeCell<[u64; (1 << STRTAB_LOG2) * STE_WORDS]>);
#[repr(C, align(4096))]
struct CommandQueue(UnsafeCell<[u64; 2 * CMDQ_MAX_ENTRIES as usize]>);
#[repr(C, align(4096))]
struct EventQueue(UnsafeCell<[u64; EVENT_WORDS * EVTQ_ENTRIES as usize]>);
#[repr(C, align(4096))]
struct ContextDescriptors(UnsafeCell<[u64; CD_WORDS * CD_SLOTS]>);
#[repr(C, align(4096))]
struct TablePool(UnsafeCell<[u64; TABLE_ENTRIES * POOL_TABLES]>);

// SAFETY: only the primary CPU uses these, through volatile raw-pointer accesses.
unsafe impl Sync for StreamTable {}
// SAFETY: as above.
unsafe impl Sync for CommandQueue {}
// SAFETY: as above.
unsafe impl Sync for EventQueue {}
// SAFETY: as above.
unsafe impl Sync for ContextDescriptors {}
// SAFETY: as above.
unsafe impl Sync for TablePool {}

static STRTAB: StreamTable = StreamTable(UnsafeCell::new([0; (1 << STRTAB_LOG2) * STE_WORDS]));
static CMDQ: CommandQueue = CommandQueue(UnsafeCell::new([0; 2 * CMDQ_MAX_ENTRIES as usize]));
static EVTQ: EventQueue = EventQueue(UnsafeCell::new([0; EVENT_WORDS * EVTQ_ENTRIES as usize]));
static CDS: ContextDescriptors = ContextDescriptors(UnsafeCell::new([0; CD_WORDS * CD_SLOTS]));
static TABLES: TablePool = TablePool(UnsafeCell::new([0; TABLE_ENTRIES * POOL_TABLES]));

/// The SMMU at `base`, programmed by [`Smmu::enable`].
#[derive(Debug)]
pub struct Smmu {
    base: u64,
    /// log2 of the command queue's entries (at most CMDQ_MAX_LOG2).
    cmdq_log2: u32,
    prod: u32,
    /// The guest's event queue read pointer (index and wrap bit).
    evtq_cons: u32,
}

/// One event record as the SMMU (warden) wrote it into the guest's event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event(pub [u64; EVENT_WORDS]);

impl Event {
    /// Event type (bits 7:0).
    pub fn kind(&self) -> u8 {
        self.0[0] as u8
    }

    pub fn stream_id(&self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    /// S2: the fault happened at stage 2 (translation faults and their kin).
    pub fn stage2(&self) -> bool {
        self.0[1] & (1 << 39) != 0
    }

    /// CLASS (word 1 bits 41:40): what the faulting access was for.
    pub fn class(&self) -> u8 {
        ((self.0[1] >> 40) & 3) as u8
    }

    /// The input address (the IOVA).
    pub fn input_address(&self) -> u64 {
        self.0[2]
    }

    /// The IPA of a stage-2 fault (bits 51:12).
    pub fn ipa(&self) -> u64 {
        self.0[3] & 0x000f_ffff_ffff_f000
    }
}

impl core::fmt::Display for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "[{a:#x} {b:#x} {c:#x} {d:#x}]")
    }
}

/// The address of CD slot `slot`.
pub fn cd_address(slot: usize) -> u64 {
    CDS.0.get() as usize as u64 + (slot % CD_SLOTS * CD_WORDS * 8) as u64
}

/// Writes a CD slot: word 0 (with V) last, so the SMMU never sees half an entry.
pub fn write_cd_words(slot: usize, words: [u64; CD_WORDS]) {
    let first = cd_address(slot) as *mut u64;
    for (i, word) in words.iter().enumerate().rev() {
        // SAFETY: `first` is slot `slot % CD_SLOTS` of CDS, CD_WORDS words long.
        unsafe { first.add(i).write_volatile(*word) };
    }
    cpu::dsb_sy();
}

/// The words of a stage-1 CD: `asid` over the tables rooted at `ttb0`.
pub fn cd_words(asid: u16, ttb0: u64) -> [u64; CD_WORDS] {
    let w0 = CD0_BASE | (u64::from(asid) << 48);
    [w0, ttb0 & DESC_ADDRESS, 0, CD_MAIR, 0, 0, 0, 0]
}

/// Makes CD slot `slot` a stage-1 context: `asid` over the tables rooted at `ttb0`.
pub fn write_cd(slot: usize, asid: u16, ttb0: u64) {
    write_cd_words(slot, cd_words(asid, ttb0));
}

/// The STE words of a stage-1 stream whose CD is at `cd_address`.
pub fn stage1_ste(cd_address: u64) -> [u64; STE_WORDS] {
    [STE0_V | STE0_CONFIG_S1 | (cd_address & 0x00ff_ffff_ffff_ffc0), STE1_S1, 0, 0, 0, 0, 0, 0]
}

/// Invalidates CD slot `slot` (V = 0; the rest cleared too).
pub fn clear_cd(slot: usize) {
    let first = cd_address(slot) as *mut u64;
    // SAFETY: as in `write_cd_words`. V goes first, so no half-cleared valid CD is seen.
    unsafe { first.write_volatile(0) };
    write_cd_words(slot, [0; CD_WORDS]);
}

/// Stage-1 page tables for the SMMU (4 KiB granule, 39-bit IOVAs: levels 1 to 3), allocated
/// from one static pool. [`Stage1Pool::take`] empties the pool, so one scenario at a time
/// builds its address spaces from it.
#[derive(Debug)]
pub struct Stage1Pool {
    used: usize,
}

/// An address space in a [`Stage1Pool`]: its level-1 table.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    root: usize,
}

fn table_address(table: usize) -> u64 {
    TABLES.0.get() as usize as u64 + (table * TABLE_ENTRIES * 8) as u64
}

fn read_entry(table: usize, index: usize) -> u64 {
    let entry = (table_address(table % POOL_TABLES) as *const u64).wrapping_add(index % 512);
    // SAFETY: table < POOL_TABLES and index < TABLE_ENTRIES (reduced): inside TABLES.
    unsafe { entry.read_volatile() }
}

fn write_entry(table: usize, index: usize, value: u64) {
    let entry = (table_address(table % POOL_TABLES) as *mut u64).wrapping_add(index % 512);
    // SAFETY: as in `read_entry`.
    unsafe { entry.write_volatile(value) }
}

impl Stage1Pool {
    /// The pool, emptied (every table zeroed).
    pub fn take() -> Self {
        for table in 0..POOL_TABLES {
            for index in 0..TABLE_ENTRIES {
                write_entry(table, index, 0);
            }
        }
        Self { used: 0 }
    }

    fn allocate(&mut self) -> Result<usize, Reason> {
        if self.used >= POOL_TABLES {
            return Err(Reason::new(format_args!("stage-1 table pool ({POOL_TABLES}) exhausted")));
        }
        self.used += 1;
        Ok(self.used - 1)
    }

    /// A new, empty address space.
    pub fn space(&mut self) -> Result<Space, Reason> {
        Ok(Space { root: self.allocate()? })
    }

    /// TTB0 of `space`.
    pub fn root(&self, space: Space) -> u64 {
        table_address(space.root)
    }

    /// Maps the 4 KiB page at `iova` to `pa` in `space` (read/write, ASID-tagged).
    pub fn map(&mut self, space: Space, iova: u64, pa: u64) -> Result<(), Reason> {
        if iova >= IOVA_LIMIT || !iova.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) {
            return Err(Reason::new(format_args!(
                "stage-1 map {iova:#x} -> {pa:#x}: not page aligned or beyond 2^39"
            )));
        }
        let index = |level: u32| ((iova >> (12 + 9 * (3 - level))) & 0x1ff) as usize;
        let mut table = space.root;
        for level in 1..3 {
            let entry = read_entry(table, index(level));
            table = if entry & DESC_VALID_TABLE == DESC_VALID_TABLE {
                let address = entry & DESC_ADDRESS;
                ((address - table_address(0)) / (TABLE_ENTRIES as u64 * 8)) as usize
            } else {
                let next = self.allocate()?;
                write_entry(table, index(level), table_address(next) | DESC_VALID_TABLE);
                next
            };
        }
        write_entry(table, index(3), (pa & DESC_ADDRESS) | DESC_PAGE);
        cpu::dsb_sy();
        Ok(())
    }
}

impl Smmu {
    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `base` is the SMMU from the DT; warden emulates its registers (every access
        // traps), `offset` is a 4-byte aligned register of page 0 or 1.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }

    fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as for `read32`; the base registers take 64-bit accesses.
        unsafe { ((self.base + offset) as *mut u64).write_volatile(value) }
    }

    fn set_cr0(&self, value: u32) -> Result<(), Reason> {
        self.write32(CR0, value);
        if cpu::wait_until(TIMEOUT_MS, || self.read32(CR0ACK) == value) {
            Ok(())
        } else {
            Err(Reason::new(format_args!("SMMU CR0ACK did not follow CR0 = {value:#x}")))
        }
    }

    /// Disables the SMMU, points it at the (all-invalid) stream table and the command queue,
    /// and enables the queue and translation.
    pub fn enable(base: u64) -> Result<Self, Reason> {
        Self::enable_with(base, None, None)
    }

    /// [`Smmu::enable`] with the stream table or the command queue at another address (the
    /// hostile-host scenario points them at memory the guest does not own; nothing is written
    /// there).
    pub fn enable_with(base: u64, strtab: Option<u64>, cmdq: Option<u64>) -> Result<Self, Reason> {
        Self::set_up(base, strtab, cmdq, CMDQ_LOG2)
    }

    /// [`Smmu::enable`] with the largest command queue both the static buffer (2^8 entries)
    /// and the SMMU (IDR1.CMDQS) allow.
    pub fn enable_large_queue(base: u64) -> Result<Self, Reason> {
        let probe = Self { base, cmdq_log2: CMDQ_LOG2, prod: 0, evtq_cons: 0 };
        let cmdqs = (probe.read32(IDR1) >> IDR1_CMDQS_SHIFT) & 0x1f;
        Self::set_up(base, None, None, cmdqs.min(CMDQ_MAX_LOG2))
    }

    fn set_up(
        base: u64,
        strtab: Option<u64>,
        cmdq: Option<u64>,
        cmdq_log2: u32,
    ) -> Result<Self, Reason> {
        let mut smmu =
            Self { base, cmdq_log2: cmdq_log2.min(CMDQ_MAX_LOG2), prod: 0, evtq_cons: 0 };
        smmu.set_cr0(0)?;
        // A global error left active (a stopped command queue) would keep the queue stopped.
        smmu.ack_errors();
        if strtab.is_none() {
            for sid in 0..1u32 << STRTAB_LOG2 {
                smmu.write_ste(sid, [0; STE_WORDS]);
            }
        }
        let strtab = strtab.unwrap_or(STRTAB.0.get() as usize as u64);
        let cmdq = cmdq.unwrap_or(CMDQ.0.get() as usize as u64);
        smmu.write64(STRTAB_BASE, strtab);
        smmu.write32(STRTAB_BASE_CFG, STRTAB_LOG2);
        smmu.write64(CMDQ_BASE, cmdq | u64::from(smmu.cmdq_log2));
        smmu.write32(CMDQ_PROD, 0);
        smmu.write32(CMDQ_CONS, 0);
        smmu.prod = 0;
        let evtq = EVTQ.0.get() as usize as u64;
        smmu.write64(EVTQ_BASE, evtq | u64::from(EVTQ_LOG2));
        smmu.write32(EVTQ_PROD, 0);
        smmu.write32(EVTQ_CONS, 0);
        smmu.evtq_cons = 0;
        smmu.set_cr0(CR0_CMDQEN | CR0_EVTQEN)?;
        smmu.set_cr0(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN)?;
        Ok(smmu)
    }

    /// CMDQ_CONS as the SMMU reports it (ERR in bits 30:24).
    pub fn cmdq_cons(&self) -> u32 {
        self.read32(CMDQ_CONS)
    }

    /// GERROR ^ GERRORN: the global errors active now.
    pub fn active_errors(&self) -> u32 {
        self.read32(GERROR) ^ self.read32(GERRORN)
    }

    /// Acknowledges every active global error (GERRORN := GERROR).
    pub fn ack_errors(&self) {
        self.write32(GERRORN, self.read32(GERROR));
    }

    /// Entries in the command queue.
    pub fn cmdq_entries(&self) -> u32 {
        1 << self.cmdq_log2
    }

    /// PROD as the guest last wrote it (index and wrap bit).
    pub fn cmdq_prod(&self) -> u32 {
        self.prod
    }

    /// PROD + `n` (index and wrap bit, wrapped).
    pub fn advanced(&self, pointer: u32, n: u32) -> u32 {
        pointer.wrapping_add(n) % (2 * self.cmdq_entries())
    }

    /// Publishes one more command slot (PROD + 1) without writing the slot: for a queue that
    /// is not in guest memory.
    pub fn publish_one(&mut self) {
        self.write_cmdq_prod(self.advanced(self.prod, 1));
    }

    /// Writes `value` to CMDQ_PROD as it is (the hostile-host scenarios write values no
    /// driver would); the driver's PROD becomes its index and wrap bit.
    pub fn write_cmdq_prod(&mut self, value: u32) {
        self.prod = value % (2 * self.cmdq_entries());
        self.write32(CMDQ_PROD, value);
    }

    /// Writes command slot `pointer` (index and wrap bit; the index is used) without
    /// publishing it.
    pub fn write_command_slot(&self, pointer: u32, words: [u64; 2]) {
        let index = (pointer % self.cmdq_entries()) as usize;
        let queue = CMDQ.0.get().cast::<u64>();
        // SAFETY: `index` < cmdq_entries <= CMDQ_MAX_ENTRIES, two words each.
        unsafe {
            queue.add(2 * index).write_volatile(words[0]);
            queue.add(2 * index + 1).write_volatile(words[1]);
        }
    }

    /// GBPA as the SMMU reports it.
    pub fn gbpa(&self) -> u32 {
        self.read32(GBPA)
    }

    /// Writes GBPA (only a write with UPDATE = 1 changes it).
    pub fn write_gbpa(&self, value: u32) {
        self.write32(GBPA, value);
    }

    /// Turns translation (CR0.SMMUEN) off or on, the queues staying enabled.
    pub fn set_translation(&self, enabled: bool) -> Result<(), Reason> {
        let queues = CR0_CMDQEN | CR0_EVTQEN;
        self.set_cr0(if enabled { queues | CR0_SMMUEN } else { queues })
    }

    /// CFGI_STE for `sid`, queued: complete at the next [`Smmu::sync`].
    pub fn cfgi_ste(&mut self, sid: u32) -> Result<(), Reason> {
        self.command([OP_CFGI_STE | (u64::from(sid) << 32), 1])
    }

    fn write_ste(&self, sid: u32, words: [u64; STE_WORDS]) {
        let table = STRTAB.0.get().cast::<u64>();
        let first = (sid as usize % (1 << STRTAB_LOG2)) * STE_WORDS;
        // Word 0 (with V) last, so the SMMU never sees half an entry.
        for (i, word) in words.iter().enumerate().rev() {
            // SAFETY: `first + i` is inside the table (sid reduced modulo its size).
            unsafe { table.add(first + i).write_volatile(*word) };
        }
    }

    /// Makes `sid` bypass (warden gives it its stage 2 alone) and waits for the SMMU to use it.
    pub fn bypass(&mut self, sid: u32) -> Result<(), Reason> {
        self.install_ste(sid, [STE0_V | STE0_CONFIG_BYPASS, 0, 0, 0, 0, 0, 0, 0])
    }

    /// Points `sid` at CD slot `cd_slot` (stage-1 translation) and waits for the SMMU to use it.
    pub fn stage1(&mut self, sid: u32, cd_slot: usize) -> Result<(), Reason> {
        self.install_ste(sid, stage1_ste(cd_address(cd_slot)))
    }

    /// Writes `sid`'s STE as given (whatever it asks for), CFGI_STE, and waits for the SMMU
    /// to use it.
    pub fn install_ste(&mut self, sid: u32, words: [u64; STE_WORDS]) -> Result<(), Reason> {
        self.write_ste(sid, words);
        cpu::dsb_sy();
        self.command([OP_CFGI_STE | (u64::from(sid) << 32), 1])?;
        self.sync()
    }

    /// CFGI_CD for `sid` (substream 0), queued: complete at the next [`Smmu::sync`].
    pub fn cfgi_cd(&mut self, sid: u32) -> Result<(), Reason> {
        self.command([OP_CFGI_CD | (u64::from(sid) << 32), 1])
    }

    /// TLBI_NH_ASID, queued: complete at the next [`Smmu::sync`].
    pub fn tlbi_asid(&mut self, asid: u16) -> Result<(), Reason> {
        self.command([OP_TLBI_NH_ASID | (u64::from(asid) << 48), 0])
    }

    /// The next record in the guest's event queue, if warden wrote one (each EVTQ_PROD read
    /// traps to warden, which forwards the real SMMU's events first).
    pub fn next_event(&mut self) -> Option<Event> {
        let prod = self.read32(EVTQ_PROD);
        // An overflow (OVFLG != OVACKFLG) is acknowledged with the next CONS write.
        let overflow = prod & Q_OVERFLOW;
        if prod & !Q_OVERFLOW == self.evtq_cons & !Q_OVERFLOW {
            if overflow != self.evtq_cons & Q_OVERFLOW {
                self.evtq_cons = (self.evtq_cons & !Q_OVERFLOW) | overflow;
                self.write32(EVTQ_CONS, self.evtq_cons);
            }
            return None;
        }
        let index = (self.evtq_cons % EVTQ_ENTRIES) as usize;
        let queue = EVTQ.0.get().cast::<u64>();
        let mut record = [0; EVENT_WORDS];
        for (i, word) in record.iter_mut().enumerate() {
            // SAFETY: `index` < EVTQ_ENTRIES, EVENT_WORDS words each.
            *word = unsafe { queue.add(EVENT_WORDS * index + i).read_volatile() };
        }
        self.evtq_cons = overflow | (((self.evtq_cons & !Q_OVERFLOW) + 1) % (2 * EVTQ_ENTRIES));
        self.write32(EVTQ_CONS, self.evtq_cons);
        Some(Event(record))
    }

    /// Drops every queued event; returns how many there were.
    pub fn drain_events(&mut self) -> u32 {
        let mut n = 0;
        while self.next_event().is_some() && n < 4 * EVTQ_ENTRIES {
            n += 1;
        }
        n
    }

    /// Polls (bounded) for an event `wanted` accepts; the others are skipped. Returns the
    /// match, or every record skipped (up to 4) for the failure message.
    pub fn wait_event(
        &mut self,
        timeout_ms: u64,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, [Option<Event>; 4]> {
        let mut skipped = [None; 4];
        let mut n = 0;
        let mut found = None;
        cpu::wait_until(timeout_ms, || {
            while let Some(event) = self.next_event() {
                if wanted(&event) {
                    found = Some(event);
                    return true;
                }
                if let Some(slot) = skipped.get_mut(n) {
                    *slot = Some(event);
                }
                n += 1;
            }
            false
        });
        found.ok_or(skipped)
    }

    /// The state of warden's test-only G3 switch: `None` if this warden has none (it was built
    /// without `test-switches`).
    pub fn g3_switch(&self) -> Option<bool> {
        let value = self.read32(TEST_G3_SWITCH);
        (value & !1 == TEST_G3_KEY).then_some(value & 1 != 0)
    }

    /// Turns warden's G3 on or off through the test switch; fails if there is none or it did
    /// not take.
    pub fn set_g3(&mut self, enabled: bool) -> Result<(), Reason> {
        self.write32(TEST_G3_SWITCH, TEST_G3_KEY | u32::from(enabled));
        match self.g3_switch() {
            Some(state) if state == enabled => Ok(()),
            Some(_) => Err(Reason::new(format_args!("warden's G3 switch did not take"))),
            None => Err(Reason::new(format_args!(
                "warden has no G3 test switch (built without the test-switches feature)"
            ))),
        }
    }

    fn command(&mut self, words: [u64; 2]) -> Result<(), Reason> {
        self.write_command_slot(self.prod, words);
        cpu::dsb_sy();
        self.write_cmdq_prod(self.advanced(self.prod, 1));
        Ok(())
    }

    /// Whether the SMMU advertises MSIs (IDR0.MSI), and so MSI-signalled CMD_SYNC completion.
    pub fn has_msi(&self) -> bool {
        self.read32(0) & IDR0_MSI != 0
    }

    /// CMD_SYNC as Linux issues it with IDR0.MSI (ARM_SMMU_OPT_MSIPOLL): CS = SIG_IRQ,
    /// MSIData 0, MSIAddress = the command's own slot; then the slot's first word is polled in
    /// memory until it turns 0 (no CMDQ_CONS read).
    pub fn sync_msi(&mut self) -> Result<(), Reason> {
        let index = (self.prod % self.cmdq_entries()) as usize;
        // SAFETY: `index` < cmdq_entries <= CMDQ_MAX_ENTRIES; the queue is identity-mapped
        // guest memory, so this address is the IPA warden writes.
        let slot = unsafe { CMDQ.0.get().cast::<u64>().add(2 * index) };
        let cs_irq = 1 << 12;
        let (msh_inner, msiattr_oiwb) = (3 << 22, 0xf << 24);
        self.command([OP_CMD_SYNC | cs_irq | msh_inner | msiattr_oiwb, slot as u64])?;
        let word = slot.cast::<u32>();
        // SAFETY: the slot written above; warden writes its first word when the sync is done.
        let done = cpu::wait_until(TIMEOUT_MS, || unsafe { word.read_volatile() } == 0);
        if done {
            Ok(())
        } else {
            Err(Reason::new(format_args!(
                "SMMU CMD_SYNC (MSI): slot {index} not written; CMDQ_CONS {:#x}, GERROR {:#x}",
                self.cmdq_cons(),
                self.active_errors()
            )))
        }
    }

    /// CMD_SYNC, then CONS polled until it reaches PROD (no error).
    pub fn sync(&mut self) -> Result<(), Reason> {
        self.command(CMD_SYNC)?;
        let prod = self.prod;
        let mut cons = 0;
        // RD and its wrap bit only: CONS.ERR keeps the last error's code after it was
        // acknowledged.
        let done = cpu::wait_until(TIMEOUT_MS, || {
            cons = self.read32(CMDQ_CONS);
            cons % (2 * self.cmdq_entries()) == prod
        });
        if done {
            Ok(())
        } else {
            Err(Reason::new(format_args!(
                "SMMU CMD_SYNC: CMDQ_CONS {cons:#x} did not reach PROD {prod:#x}"
            )))
        }
    }
}
