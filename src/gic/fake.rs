//! Models of the GIC pieces for host tests: an ITS that behaves like QEMU's
//! (`hw/intc/arm_gicv3_its.c`: commands run synchronously on a GITS_CWRITER write while
//! enabled, device-table entries found through two-level tables, entries and ITEs written to
//! memory, GITS_BASERn/GITS_CBASER read-only while enabled), a redistributor register file,
//! and host memory with forbidden ranges.
//!
//! The models write memory only inside ranges the test registered as live ([`FakeIts::new`]'s
//! `backing`); any other write the real device would have made is recorded as
//! [`ItsOp::WildWrite`] and not performed, so a warden bug shows as a failed assertion, not as
//! memory corruption in the test process.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec::Vec;
use core::cell::RefCell;

use super::its::ItsIo;
use super::its::cmd::*;
use super::redist::RegisterFrame;
use super::regs::*;
use super::{HostMemory, Refused};
use crate::mm::MemRange;

/// One thing the ITS model saw or did, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsOp {
    Write32 {
        offset: u32,
        value: u32,
    },
    Write64 {
        offset: u32,
        value: u64,
    },
    /// warden wrote its memory (queue, tables).
    MemWrite {
        pa: u64,
        value: u64,
    },
    Publish {
        range: MemRange,
        clean: bool,
    },
    /// A command the ITS executed.
    Command([u64; 4]),
    /// The ITS wrote `len` bytes of memory at `pa` (a DTE, CTE or ITE).
    DeviceWrite {
        pa: u64,
        len: u64,
    },
    /// The ITS would have written outside every live range (not performed).
    WildWrite {
        pa: u64,
        len: u64,
    },
}

/// Failure modes and options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItsFaults {
    /// GITS_BASER.Indirect reads back 0.
    pub no_indirect: bool,
    /// GITS_CTLR.Quiescent never comes up.
    pub never_quiescent: bool,
    /// Commands run only after this many GITS_CREADR reads following each GITS_CWRITER write.
    pub busy_polls: u32,
    /// GITS_CREADR never advances.
    pub stuck: bool,
    /// The next command with this opcode stalls the queue (one shot).
    pub stall_op: Option<u8>,
    /// GITS_BASER/GITS_CBASER shareability reads back 0 (non-coherent ITS).
    pub non_shareable: bool,
}

struct ItsState {
    ctlr: u32,
    typer: u64,
    baser: [u64; GITS_BASER_COUNT],
    cbaser: u64,
    cwriter: u64,
    creadr: u64,
    faults: ItsFaults,
    busy_left: u32,
    backing: Vec<MemRange>,
    log: Vec<ItsOp>,
}

/// The ITS model.
pub struct FakeIts {
    st: RefCell<ItsState>,
}

const L1_VALID: u64 = 1 << 63;
const ITE_BYTES: u64 = 12;

impl FakeIts {
    /// QEMU 10.0's ITS (gic-version=3): physical LPIs, 12-byte ITEs, 16-bit EventIDs,
    /// DeviceIDs and collection IDs (CIL), BASER0 = devices and BASER1 = collections with
    /// 8-byte entries and 64 KiB pages, disabled and quiescent. `backing`: memory the model
    /// may read and write (test buffers standing in for RAM).
    pub fn qemu(backing: Vec<MemRange>) -> Self {
        let typer = GITS_TYPER_F::PHYSICAL::SET.value
            | GITS_TYPER_F::ITT_ENTRY_SIZE.val(ITE_BYTES - 1).value
            | GITS_TYPER_F::ID_BITS.val(15).value
            | GITS_TYPER_F::DEVBITS.val(15).value
            | GITS_TYPER_F::CIL::SET.value
            | GITS_TYPER_F::CIDBITS.val(15).value;
        let table = |kind: u64| {
            GITS_BASER_F::TYPE.val(kind).value
                | GITS_BASER_F::ENTRY_SIZE.val(7).value
                | GITS_BASER_F::PAGE_SIZE::Size64K.value
        };
        let mut baser = [0; GITS_BASER_COUNT];
        baser[0] = table(1);
        baser[1] = table(4);
        Self {
            st: RefCell::new(ItsState {
                ctlr: GITS_CTLR_F::QUIESCENT::SET.value,
                typer,
                baser,
                cbaser: 0,
                cwriter: 0,
                creadr: 0,
                faults: ItsFaults::default(),
                busy_left: 0,
                backing,
                log: Vec::new(),
            }),
        }
    }

    /// Same, with extra bits in GITS_TYPER (GICv4's Virtual, VMOVP...) and a vPE table in
    /// BASER2.
    pub fn gicv4(backing: Vec<MemRange>) -> Self {
        let its = Self::qemu(backing);
        {
            let mut st = its.st.borrow_mut();
            st.typer |=
                GITS_TYPER_F::VIRTUAL::SET.value | (1 << 37) | GITS_TYPER_F::SEIS::SET.value;
            st.baser[2] = GITS_BASER_F::TYPE.val(2).value | GITS_BASER_F::ENTRY_SIZE.val(7).value;
        }
        its
    }

    pub fn set_faults(&self, faults: ItsFaults) {
        self.st.borrow_mut().faults = faults;
    }

    pub fn set_typer(&self, typer: u64) {
        self.st.borrow_mut().typer = typer;
    }

    /// Pretends firmware left the ITS enabled.
    pub fn preset_enabled(&self) {
        self.st.borrow_mut().ctlr = GITS_CTLR_F::ENABLED::SET.value;
    }

    pub fn log(&self) -> Vec<ItsOp> {
        self.st.borrow().log.clone()
    }

    pub fn take_log(&self) -> Vec<ItsOp> {
        core::mem::take(&mut self.st.borrow_mut().log)
    }

    /// Commands executed so far.
    pub fn commands(&self) -> Vec<[u64; 4]> {
        self.log()
            .into_iter()
            .filter_map(|op| if let ItsOp::Command(c) = op { Some(c) } else { None })
            .collect()
    }

    /// Memory the ITS wrote (performed or not).
    pub fn device_writes(&self) -> Vec<ItsOp> {
        self.log()
            .into_iter()
            .filter(|op| matches!(op, ItsOp::DeviceWrite { .. } | ItsOp::WildWrite { .. }))
            .collect()
    }

    pub fn reg(&self, offset: u32) -> u64 {
        let st = self.st.borrow();
        Self::read_reg(&st, offset)
    }

    fn read_reg(st: &ItsState, offset: u32) -> u64 {
        match offset {
            GITS_CTLR => u64::from(st.ctlr),
            GITS_IIDR => 0x0100_043b,
            GITS_TYPER => st.typer,
            GITS_CBASER => st.cbaser,
            GITS_CWRITER => st.cwriter,
            GITS_CREADR => st.creadr,
            o if (GITS_BASER..GITS_BASER + 64).contains(&o) && o % 8 == 0 => {
                st.baser[((o - GITS_BASER) / 8) as usize]
            }
            0xffe8 => 0x3b,
            _ => 0,
        }
    }

    fn enabled(st: &ItsState) -> bool {
        GITS_CTLR_F::ENABLED.is_set(st.ctlr)
    }

    fn live(st: &ItsState, pa: u64, len: u64) -> bool {
        MemRange::from_base_size(pa, len)
            .is_some_and(|r| st.backing.iter().any(|b| b.contains_range(&r)))
    }

    fn read_mem(st: &ItsState, pa: u64) -> Option<u64> {
        // SAFETY: `live` says the 8 bytes lie in a buffer the test keeps alive for the model.
        Self::live(st, pa, 8).then(|| unsafe { core::ptr::read_unaligned(pa as *const u64) })
    }

    fn device_write(st: &mut ItsState, pa: u64, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if Self::live(st, pa, len) {
            // SAFETY: `live` says the range lies in a buffer the test keeps alive for the model.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
            st.log.push(ItsOp::DeviceWrite { pa, len });
        } else {
            st.log.push(ItsOp::WildWrite { pa, len });
        }
    }

    /// Where table `n`'s entry `id` is (QEMU's `table_entry_addr`), if reachable.
    fn entry_addr(st: &ItsState, kind: u64, id: u64) -> Option<u64> {
        let value = *st.baser.iter().find(|b| GITS_BASER_F::TYPE.read(**b) == kind)?;
        if !GITS_BASER_F::VALID.is_set(value) {
            return None;
        }
        let page = its_page_bytes(GITS_BASER_F::PAGE_SIZE.read(value));
        let entry = GITS_BASER_F::ENTRY_SIZE.read(value) + 1;
        let pages = GITS_BASER_F::SIZE.read(value) + 1;
        let base = its_baser_address(value);
        if !GITS_BASER_F::INDIRECT.is_set(value) {
            return (id < pages * page / entry).then_some(base + id * entry);
        }
        let l1 = id / (page / entry);
        if l1 >= pages * page / 8 {
            return None;
        }
        let l2 = Self::read_mem(st, base + 8 * l1)?;
        (l2 & L1_VALID != 0).then(|| (l2 & ((1 << 52) - 1)) + (id % (page / entry)) * entry)
    }

    fn execute(st: &mut ItsState, cmd: [u64; 4]) -> bool {
        st.log.push(ItsOp::Command(cmd));
        let op = (cmd[0] & 0xff) as u8;
        if st.faults.stall_op == Some(op) {
            st.faults.stall_op = None;
            return false;
        }
        let device = cmd[0] >> 32;
        let event = cmd[1] & 0xffff_ffff;
        match op {
            OP_MAPD => {
                let valid = cmd[2] >> 63 == 1;
                let itt = cmd[2] & ((1 << 52) - 1) & !0xff;
                let dte = if valid { 1 | ((cmd[1] & 0x1f) << 1) | ((itt >> 8) << 6) } else { 0 };
                if let Some(pa) = Self::entry_addr(st, 1, device) {
                    Self::device_write(st, pa, &dte.to_le_bytes());
                }
            }
            OP_MAPC => {
                let valid = cmd[2] >> 63 == 1;
                let icid = cmd[2] & 0xffff;
                let cte = if valid { 1 | (((cmd[2] >> 16) & 0xffff) << 1) } else { 0 };
                if let Some(pa) = Self::entry_addr(st, 4, icid) {
                    Self::device_write(st, pa, &cte.to_le_bytes());
                }
            }
            OP_MAPTI | OP_MAPI | OP_DISCARD => {
                let Some(dte) =
                    Self::entry_addr(st, 1, device).and_then(|pa| Self::read_mem(st, pa))
                else {
                    return true;
                };
                if dte & 1 == 0 {
                    return true;
                }
                let itt = ((dte >> 6) & ((1 << 44) - 1)) << 8;
                let mut ite = [0u8; ITE_BYTES as usize];
                if op != OP_DISCARD {
                    let intid = if op == OP_MAPTI { cmd[1] >> 32 } else { event };
                    let low = 1 | 2 | ((intid & 0xff_ffff) << 2) | ((cmd[2] & 0xffff) << 32);
                    ite[..8].copy_from_slice(&low.to_le_bytes());
                }
                Self::device_write(st, itt + event * ITE_BYTES, &ite);
            }
            _ => {}
        }
        true
    }

    /// QEMU's `process_cmdq`.
    fn process(st: &mut ItsState) {
        if !Self::enabled(st) || st.faults.stuck || st.creadr & 1 != 0 {
            return;
        }
        if !GITS_CBASER_F::VALID.is_set(st.cbaser) {
            return;
        }
        let base = GITS_CBASER_F::PHYSICAL_ADDRESS.read(st.cbaser) << 12;
        let bytes = (GITS_CBASER_F::SIZE.read(st.cbaser) + 1) * 0x1000;
        while st.creadr != st.cwriter {
            let at = base + st.creadr;
            let mut cmd = [0u64; 4];
            for (i, word) in cmd.iter_mut().enumerate() {
                match Self::read_mem(st, at + 8 * i as u64) {
                    Some(v) => *word = v,
                    None => {
                        st.creadr |= 1;
                        return;
                    }
                }
            }
            if !Self::execute(st, cmd) {
                st.creadr |= 1;
                return;
            }
            st.creadr = (st.creadr + COMMAND_BYTES) % bytes;
        }
    }
}

impl ItsIo for FakeIts {
    fn read32(&self, offset: u32) -> u32 {
        let st = self.st.borrow();
        match offset {
            GITS_CTLR | GITS_IIDR => Self::read_reg(&st, offset) as u32,
            o if o >= GITS_IDREGS => Self::read_reg(&st, o) as u32,
            o => {
                let value = Self::read_reg(&st, o & !7);
                (if o & 4 != 0 { value >> 32 } else { value }) as u32
            }
        }
    }

    fn write32(&self, offset: u32, value: u32) {
        let mut st = self.st.borrow_mut();
        st.log.push(ItsOp::Write32 { offset, value });
        if offset == GITS_CTLR {
            if GITS_CTLR_F::ENABLED.is_set(value) {
                st.ctlr = GITS_CTLR_F::ENABLED::SET.value;
                Self::process(&mut st);
            } else {
                st.ctlr =
                    if st.faults.never_quiescent { 0 } else { GITS_CTLR_F::QUIESCENT::SET.value };
            }
        }
    }

    fn read64(&self, offset: u32) -> u64 {
        let mut st = self.st.borrow_mut();
        if offset == GITS_CREADR && st.busy_left > 0 {
            st.busy_left -= 1;
            if st.busy_left == 0 {
                Self::process(&mut st);
            }
        }
        Self::read_reg(&st, offset)
    }

    fn write64(&self, offset: u32, value: u64) {
        let mut st = self.st.borrow_mut();
        st.log.push(ItsOp::Write64 { offset, value });
        let enabled = Self::enabled(&st);
        match offset {
            GITS_CBASER if !enabled => {
                st.cbaser = if st.faults.non_shareable {
                    value & !mask(GITS_CBASER_F::SHAREABILITY)
                } else {
                    value
                };
                st.creadr = 0;
            }
            GITS_CWRITER => {
                st.cwriter = value & mask(GITS_CQ_OFFSET_F::OFFSET);
                if value & 1 != 0 {
                    st.creadr &= !1;
                }
                if st.faults.busy_polls > 0 {
                    st.busy_left = st.faults.busy_polls;
                } else {
                    Self::process(&mut st);
                }
            }
            o if (GITS_BASER..GITS_BASER + 64).contains(&o) && o % 8 == 0 && !enabled => {
                let n = ((o - GITS_BASER) / 8) as usize;
                let fixed = mask(GITS_BASER_F::TYPE) | mask(GITS_BASER_F::ENTRY_SIZE);
                if st.baser[n] == 0 {
                    return;
                }
                let mut new = (st.baser[n] & fixed) | (value & !fixed);
                if st.faults.no_indirect {
                    new &= !mask(GITS_BASER_F::INDIRECT);
                }
                if st.faults.non_shareable {
                    new &= !mask(GITS_BASER_F::SHAREABILITY);
                }
                st.baser[n] = new;
            }
            _ => {}
        }
    }

    fn mem_write64(&self, pa: u64, value: u64) {
        let mut st = self.st.borrow_mut();
        st.log.push(ItsOp::MemWrite { pa, value });
        assert!(Self::live(&st, pa, 8), "warden wrote {pa:#x}, outside every live buffer");
        // SAFETY: checked just above to lie in a live test buffer.
        unsafe { core::ptr::write_unaligned(pa as *mut u64, value) };
    }

    fn publish(&self, range: MemRange, clean: bool) {
        self.st.borrow_mut().log.push(ItsOp::Publish { range, clean });
    }
}

/// A redistributor's RD_base register file.
pub struct FakeRedist {
    st: RefCell<RedistState>,
}

struct RedistState {
    ctlr: u32,
    typer: u64,
    propbaser: u64,
    pendbaser: u64,
    /// Address bits the table registers keep (bits above read as 0).
    address_bits: u32,
    /// EnableLPIs cannot be cleared once set.
    lpis_sticky: bool,
    other: Vec<(u32, u8, u64)>,
}

impl FakeRedist {
    /// A QEMU redistributor: physical LPIs, processor `n`, `last` ends the region.
    pub fn qemu(n: u16, last: bool) -> Self {
        let typer = GICR_TYPER_F::PLPIS::SET.value
            | GICR_TYPER_F::PROCESSOR_NUMBER.val(u64::from(n)).value
            | GICR_TYPER_F::AFFINITY.val(u64::from(n)).value
            | if last { GICR_TYPER_F::LAST::SET.value } else { 0 };
        Self {
            st: RefCell::new(RedistState {
                ctlr: 0,
                typer,
                propbaser: 0,
                pendbaser: 0,
                address_bits: 52,
                lpis_sticky: false,
                other: Vec::new(),
            }),
        }
    }

    pub fn set_typer(&self, typer: u64) {
        self.st.borrow_mut().typer = typer;
    }

    pub fn set_address_bits(&self, bits: u32) {
        self.st.borrow_mut().address_bits = bits;
    }

    pub fn set_lpis_sticky(&self, sticky: bool) {
        self.st.borrow_mut().lpis_sticky = sticky;
    }

    pub fn preset_ctlr(&self, ctlr: u32) {
        self.st.borrow_mut().ctlr = ctlr;
    }

    pub fn ctlr(&self) -> u32 {
        self.st.borrow().ctlr
    }

    pub fn propbaser(&self) -> u64 {
        self.st.borrow().propbaser
    }

    pub fn pendbaser(&self) -> u64 {
        self.st.borrow().pendbaser
    }

    /// Writes to other registers: (offset, size, value).
    pub fn other_writes(&self) -> Vec<(u32, u8, u64)> {
        self.st.borrow().other.clone()
    }

    fn read(&self, offset: u32) -> u64 {
        let st = self.st.borrow();
        match offset {
            GICR_CTLR => u64::from(st.ctlr),
            GICR_TYPER => st.typer,
            GICR_PROPBASER => st.propbaser,
            GICR_PENDBASER => st.pendbaser,
            GICR_PIDR2 => 0x3b,
            _ => 0,
        }
    }

    fn write(&self, offset: u32, size: u8, value: u64) {
        let mut st = self.st.borrow_mut();
        let keep = if st.address_bits >= 64 { u64::MAX } else { (1u64 << st.address_bits) - 1 };
        match offset {
            GICR_CTLR => {
                let sticky = st.lpis_sticky && st.ctlr & 1 != 0;
                st.ctlr = value as u32 | u32::from(sticky);
            }
            GICR_PROPBASER => {
                st.propbaser = value & (keep | !mask(GICR_PROPBASER_F::PHYSICAL_ADDRESS))
            }
            GICR_PENDBASER => {
                st.pendbaser = value & (keep | !mask(GICR_PENDBASER_F::PHYSICAL_ADDRESS))
            }
            o => st.other.push((o, size, value)),
        }
    }
}

impl RegisterFrame for FakeRedist {
    fn read32(&self, offset: u32) -> u32 {
        let value = self.read(offset & !7);
        (if offset & 4 != 0 { value >> 32 } else { value }) as u32
    }
    fn write32(&self, offset: u32, value: u32) {
        self.write(offset, 4, u64::from(value))
    }
    fn read64(&self, offset: u32) -> u64 {
        self.read(offset)
    }
    fn write64(&self, offset: u32, value: u64) {
        self.write(offset, 8, value)
    }
}

/// Host RAM for tests: a 64 KiB-aligned heap buffer whose addresses stand in for physical
/// ones, minus `forbidden` ranges (warden's memory, carveouts) inside it.
pub struct FakeHostMemory {
    pub range: MemRange,
    pub forbidden: Vec<MemRange>,
    base: *mut u8,
    layout: Layout,
}

impl FakeHostMemory {
    pub fn new(bytes: usize) -> Self {
        let layout =
            Layout::from_size_align(bytes.max(0x1_0000), 0x1_0000).unwrap_or(Layout::new::<u64>());
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "test allocation failed");
        let start = base as u64;
        Self {
            range: MemRange::new(start, start + layout.size() as u64),
            forbidden: Vec::new(),
            base,
            layout,
        }
    }

    /// Address `offset` bytes into the buffer.
    pub fn at(&self, offset: u64) -> u64 {
        self.range.start + offset
    }

    /// Writes words at `pa` (inside the buffer; panics otherwise).
    pub fn write_words(&self, pa: u64, words: &[u64]) {
        let end = pa + 8 * words.len() as u64;
        assert!(self.range.contains_range(&MemRange::new(pa, end)), "outside the test buffer");
        for (i, w) in words.iter().enumerate() {
            // SAFETY: inside the live buffer (checked above).
            unsafe { core::ptr::write_unaligned((pa + 8 * i as u64) as *mut u64, *w) };
        }
    }

    pub fn read_word(&self, pa: u64) -> u64 {
        assert!(self.range.contains_range(&MemRange::new(pa, pa + 8)), "outside the test buffer");
        // SAFETY: inside the live buffer (checked above).
        unsafe { core::ptr::read_unaligned(pa as *const u64) }
    }
}

impl Drop for FakeHostMemory {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(layout)` and is released once.
        unsafe { dealloc(self.base, self.layout) }
    }
}

impl HostMemory for FakeHostMemory {
    fn is_host_memory(&self, range: MemRange) -> bool {
        !range.is_empty()
            && self.range.contains_range(&range)
            && !self.forbidden.iter().any(|f| f.overlaps(&range))
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), Refused> {
        let range = MemRange::from_base_size(pa, buf.len() as u64).ok_or(Refused)?;
        if !self.is_host_memory(range) {
            return Err(Refused);
        }
        // SAFETY: the range lies in the live buffer (checked by is_host_memory).
        unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}
