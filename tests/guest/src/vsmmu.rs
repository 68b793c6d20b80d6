//! A minimal driver for the SMMUv3 the guest sees (warden's virtual SMMU): a linear stream
//! table and a small command queue in guest RAM, STEs written here, CFGI_STE + CMD_SYNC issued
//! and waited for. Enough to put edu's stream in bypass (warden turns that into its stage 2
//! only) or behind a stage-1 context.

use core::cell::UnsafeCell;

use crate::cpu;
use crate::report::Reason;

const CR0: u64 = 0x20;
const CR0ACK: u64 = 0x24;
const STRTAB_BASE: u64 = 0x80;
const STRTAB_BASE_CFG: u64 = 0x88;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9c;
const CR0_SMMUEN: u32 = 1 << 0;
const CR0_CMDQEN: u32 = 1 << 3;

/// Stream IDs below 2^8 (one PCI bus): 256 STEs of 64 bytes.
const STRTAB_LOG2: u32 = 8;
const STE_WORDS: usize = 8;
/// 2^4 commands of 16 bytes.
const CMDQ_LOG2: u32 = 4;
const CMDQ_ENTRIES: u32 = 1 << CMDQ_LOG2;

const OP_CFGI_STE: u64 = 0x03;
const OP_CMD_SYNC: u64 = 0x46;
const STE0_V: u64 = 1;
const STE0_CONFIG_BYPASS: u64 = 0b100 << 1;

const TIMEOUT_MS: u64 = 1000;

#[repr(C, align(16384))]
struct StreamTable(UnsafeCell<[u64; (1 << STRTAB_LOG2) * STE_WORDS]>);
#[repr(C, align(4096))]
struct CommandQueue(UnsafeCell<[u64; 2 * CMDQ_ENTRIES as usize]>);

// SAFETY: only the primary CPU uses these, through volatile raw-pointer accesses.
unsafe impl Sync for StreamTable {}
// SAFETY: as above.
unsafe impl Sync for CommandQueue {}

static STRTAB: StreamTable = StreamTable(UnsafeCell::new([0; (1 << STRTAB_LOG2) * STE_WORDS]));
static CMDQ: CommandQueue = CommandQueue(UnsafeCell::new([0; 2 * CMDQ_ENTRIES as usize]));

/// The SMMU at `base`, programmed by [`Smmu::enable`].
#[derive(Debug)]
pub struct Smmu {
    base: u64,
    prod: u32,
}

impl Smmu {
    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `base` is the SMMU from the DT; warden emulates its registers (every access
        // traps), `offset` is a 4-byte aligned register of page 0.
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
        let mut smmu = Self { base, prod: 0 };
        smmu.set_cr0(0)?;
        for sid in 0..1u32 << STRTAB_LOG2 {
            smmu.write_ste(sid, [0; STE_WORDS]);
        }
        let strtab = STRTAB.0.get() as usize as u64;
        let cmdq = CMDQ.0.get() as usize as u64;
        smmu.write64(STRTAB_BASE, strtab);
        smmu.write32(STRTAB_BASE_CFG, STRTAB_LOG2);
        smmu.write64(CMDQ_BASE, cmdq | u64::from(CMDQ_LOG2));
        smmu.write32(CMDQ_PROD, 0);
        smmu.write32(CMDQ_CONS, 0);
        smmu.prod = 0;
        smmu.set_cr0(CR0_CMDQEN)?;
        smmu.set_cr0(CR0_CMDQEN | CR0_SMMUEN)?;
        Ok(smmu)
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
        self.write_ste(sid, [STE0_V | STE0_CONFIG_BYPASS, 0, 0, 0, 0, 0, 0, 0]);
        self.command([OP_CFGI_STE | (u64::from(sid) << 32), 1])?;
        self.sync()
    }

    fn command(&mut self, words: [u64; 2]) -> Result<(), Reason> {
        let index = (self.prod % CMDQ_ENTRIES) as usize;
        let queue = CMDQ.0.get().cast::<u64>();
        // SAFETY: `index` < CMDQ_ENTRIES, two words each.
        unsafe {
            queue.add(2 * index).write_volatile(words[0]);
            queue.add(2 * index + 1).write_volatile(words[1]);
        }
        // Index and wrap bit.
        self.prod = (self.prod + 1) % (2 * CMDQ_ENTRIES);
        cpu::dsb_sy();
        self.write32(CMDQ_PROD, self.prod);
        Ok(())
    }

    /// CMD_SYNC, then CONS polled until it reaches PROD (no error).
    pub fn sync(&mut self) -> Result<(), Reason> {
        self.command([OP_CMD_SYNC, 0])?;
        let prod = self.prod;
        let mut cons = 0;
        let done = cpu::wait_until(TIMEOUT_MS, || {
            cons = self.read32(CMDQ_CONS);
            cons & 0x7fff_ffff == prod
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
