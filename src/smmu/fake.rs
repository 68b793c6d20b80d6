//! A model of an SMMUv3 for host tests: enough behaviour to drive the driver through reset,
//! command submission, errors and events, with a log of everything the driver did in order.
//!
//! Modelled on QEMU's SMMU: commands are consumed synchronously when CMDQ_PROD, CR0 or GERRORN
//! is written; CONS advances past each consumed command; a command error stops consumption,
//! sets CMDQ_CONS.ERR and toggles GERROR.CMDQ_ERR until GERRORN acknowledges it.
//! Memory addresses handed to the model (queue and table bases) must be live test memory
//! (e.g. from `HeapFrames`): the model reads commands and writes events through them.

use alloc::vec::Vec;
use core::cell::RefCell;

use super::io::SmmuIo;
use super::queue::QueueShape;
use super::regs::*;

/// One driver action, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeOp {
    Write32 {
        offset: u32,
        value: u32,
    },
    Write64 {
        offset: u32,
        value: u64,
    },
    MemWrite {
        pa: u64,
        value: u64,
    },
    Barrier,
    /// A command the model consumed (opcode in bits [7:0] of the first word).
    Command([u64; 2]),
}

/// Failure modes to inject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeFaults {
    /// CONS never advances (commands are never consumed).
    pub stuck_cons: bool,
    /// CR0ACK never follows CR0.
    pub stuck_cr0ack: bool,
    /// GBPA.UPDATE never clears.
    pub stuck_gbpa: bool,
    /// The next command with this opcode fails with CERROR_ILL (one shot).
    pub fail_opcode: Option<u8>,
}

#[derive(Default)]
struct State {
    idr: [u32; 6],
    cr0: u32,
    cr0ack: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerror: u32,
    gerrorn: u32,
    strtab_base: u64,
    strtab_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    evtq_base: u64,
    evtq_prod: u32,
    evtq_cons: u32,
    faults: FakeFaults,
    log: Vec<FakeOp>,
}

/// The model.
pub struct FakeSmmu {
    st: RefCell<State>,
}

/// Opcodes QEMU's SMMU accepts; anything else is CERROR_ILL.
const KNOWN_OPCODES: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x18, 0x1a, 0x20, 0x21, 0x22, 0x23,
    0x28, 0x2a, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46,
];

impl FakeSmmu {
    /// An SMMU with these ID registers, in its reset state (GBPA = 0: bypass, all disabled).
    pub fn new(idr0: u32, idr1: u32, idr5: u32) -> Self {
        let mut st = State::default();
        st.idr[0] = idr0;
        st.idr[1] = idr1;
        st.idr[5] = idr5;
        Self { st: RefCell::new(st) }
    }

    /// QEMU virt's SMMU in nested mode: S1P+S2P, AArch64 tables, COHACC, ASID16, VMID16,
    /// little-endian, 2-level stream tables, SIDSIZE 16, CMDQS = EVTQS = 19, OAS 44 bits,
    /// 4K/16K/64K granules, no stalls, no HYP, no BTM, no MSI.
    pub const QEMU_IDR0: u32 = 0b11
        | (0b10 << 2)
        | (1 << 4)
        | (1 << 12)
        | (1 << 18)
        | (0b10 << 21)
        | (1 << 24)
        | (1 << 27);
    pub const QEMU_IDR1: u32 = 16 | (19 << 16) | (19 << 21);
    pub const QEMU_IDR5: u32 = 4 | (1 << 4) | (1 << 5) | (1 << 6);

    pub fn qemu() -> Self {
        Self::new(Self::QEMU_IDR0, Self::QEMU_IDR1, Self::QEMU_IDR5)
    }

    /// What the driver decodes from [`Self::qemu`]'s ID registers.
    pub fn qemu_features() -> Features {
        Features::decode(Self::QEMU_IDR0, Self::QEMU_IDR1, Self::QEMU_IDR5)
    }

    pub fn set_faults(&self, faults: FakeFaults) {
        self.st.borrow_mut().faults = faults;
    }

    pub fn faults(&self) -> FakeFaults {
        self.st.borrow().faults
    }

    /// Puts CR0 as if firmware had left the SMMU enabled.
    pub fn preset_enabled(&self, cr0: u32) {
        let mut st = self.st.borrow_mut();
        st.cr0 = cr0;
        st.cr0ack = cr0;
    }

    /// Activates global error bits as the hardware would (toggling GERROR).
    pub fn raise_gerror(&self, bits: u32) {
        self.st.borrow_mut().gerror ^= bits;
    }

    pub fn log(&self) -> Vec<FakeOp> {
        self.st.borrow().log.clone()
    }

    pub fn take_log(&self) -> Vec<FakeOp> {
        core::mem::take(&mut self.st.borrow_mut().log)
    }

    /// Every command consumed so far, in order.
    pub fn commands(&self) -> Vec<[u64; 2]> {
        self.st
            .borrow()
            .log
            .iter()
            .filter_map(|op| match op {
                FakeOp::Command(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Current value of a register as the driver would read it.
    pub fn reg(&self, offset: u32) -> u64 {
        let st = self.st.borrow();
        Self::read_reg(&st, offset)
    }

    pub fn strtab_base(&self) -> u64 {
        self.st.borrow().strtab_base
    }

    /// Writes an event record at EVTQ_PROD as the SMMU would. Returns false (and sets the
    /// overflow flag) when the queue is full, or false when the event queue is disabled.
    pub fn push_event(&self, record: [u64; 4]) -> bool {
        let mut st = self.st.borrow_mut();
        if st.cr0ack & CR0_EVTQEN == 0 {
            return false;
        }
        let q = QueueShape::new((st.evtq_base & 0x1f) as u32);
        if q.is_full(st.evtq_prod, st.evtq_cons) {
            st.evtq_prod ^= Q_OVERFLOW_FLAG;
            return false;
        }
        let base = st.evtq_base & Q_BASE_ADDR_MASK;
        let entry = base + u64::from(q.index(st.evtq_prod)) * 32;
        for (i, w) in record.iter().enumerate() {
            // SAFETY: the event queue base is test memory the driver allocated (module docs).
            unsafe { core::ptr::write_volatile((entry + 8 * i as u64) as *mut u64, *w) };
        }
        st.evtq_prod = q.next(st.evtq_prod) | (st.evtq_prod & Q_OVERFLOW_FLAG);
        true
    }

    fn read_reg(st: &State, offset: u32) -> u64 {
        let v = match offset {
            IDR0..=0x14 => st.idr[(offset / 4) as usize],
            CR0 => st.cr0,
            CR0ACK => st.cr0ack,
            CR1 => st.cr1,
            CR2 => st.cr2,
            GBPA => st.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => st.irq_ctrl,
            GERROR => st.gerror,
            GERRORN => st.gerrorn,
            STRTAB_BASE => return st.strtab_base,
            STRTAB_BASE_CFG => st.strtab_cfg,
            CMDQ_BASE => return st.cmdq_base,
            CMDQ_PROD => st.cmdq_prod,
            CMDQ_CONS => st.cmdq_cons,
            EVTQ_BASE => return st.evtq_base,
            EVTQ_PROD => st.evtq_prod,
            EVTQ_CONS => st.evtq_cons,
            _ => 0,
        };
        u64::from(v)
    }

    fn consume(st: &mut State) {
        if st.cr0ack & CR0_CMDQEN == 0 || st.faults.stuck_cons {
            return;
        }
        let q = QueueShape::new((st.cmdq_base & 0x1f) as u32);
        let base = st.cmdq_base & Q_BASE_ADDR_MASK;
        // Bounded by one lap: the producer can never be further ahead.
        for _ in 0..q.entries() {
            if q.is_empty(st.cmdq_prod, st.cmdq_cons)
                || (st.gerror ^ st.gerrorn) & GERROR_CMDQ_ERR != 0
            {
                return;
            }
            let entry = base + u64::from(q.index(st.cmdq_cons)) * 16;
            // SAFETY: the command queue base is test memory the driver allocated (module docs).
            let cmd = unsafe {
                [
                    core::ptr::read_volatile(entry as *const u64),
                    core::ptr::read_volatile((entry + 8) as *const u64),
                ]
            };
            let op = (cmd[0] & 0xff) as u8;
            if st.faults.fail_opcode == Some(op) || !KNOWN_OPCODES.contains(&op) {
                if st.faults.fail_opcode == Some(op) {
                    st.faults.fail_opcode = None;
                }
                st.cmdq_cons = q.pointer(st.cmdq_cons) | (1 << CMDQ_CONS_ERR_SHIFT);
                st.gerror ^= GERROR_CMDQ_ERR;
                return;
            }
            st.log.push(FakeOp::Command(cmd));
            st.cmdq_cons = q.next(st.cmdq_cons);
        }
    }
}

impl SmmuIo for FakeSmmu {
    fn read32(&self, offset: u32) -> u32 {
        self.reg(offset) as u32
    }

    fn write32(&self, offset: u32, value: u32) {
        let mut st = self.st.borrow_mut();
        st.log.push(FakeOp::Write32 { offset, value });
        match offset {
            CR0 => {
                st.cr0 = value;
                if !st.faults.stuck_cr0ack {
                    st.cr0ack = value;
                }
                Self::consume(&mut st);
            }
            CR1 => st.cr1 = value,
            CR2 => st.cr2 = value,
            // Writes without UPDATE are ignored (SMMUv3.2 and later).
            GBPA if value & GBPA_UPDATE != 0 => {
                st.gbpa = if st.faults.stuck_gbpa { value } else { value & !GBPA_UPDATE };
            }
            IRQ_CTRL => st.irq_ctrl = value,
            GERRORN => {
                st.gerrorn = value;
                Self::consume(&mut st);
            }
            STRTAB_BASE_CFG => st.strtab_cfg = value,
            CMDQ_PROD => {
                st.cmdq_prod = value;
                Self::consume(&mut st);
            }
            CMDQ_CONS => st.cmdq_cons = value,
            EVTQ_PROD => st.evtq_prod = value,
            EVTQ_CONS => st.evtq_cons = value,
            _ => {}
        }
    }

    fn read64(&self, offset: u32) -> u64 {
        self.reg(offset)
    }

    fn write64(&self, offset: u32, value: u64) {
        let mut st = self.st.borrow_mut();
        st.log.push(FakeOp::Write64 { offset, value });
        match offset {
            STRTAB_BASE => st.strtab_base = value,
            CMDQ_BASE => st.cmdq_base = value,
            EVTQ_BASE => st.evtq_base = value,
            _ => {}
        }
    }

    fn mem_write64(&self, pa: u64, value: u64) {
        self.st.borrow_mut().log.push(FakeOp::MemWrite { pa, value });
        // SAFETY: the driver writes only into frames it allocated from test memory.
        unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
    }

    fn mem_read64(&self, pa: u64) -> u64 {
        // SAFETY: as in mem_write64.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }

    fn barrier(&self) {
        self.st.borrow_mut().log.push(FakeOp::Barrier);
    }
}
