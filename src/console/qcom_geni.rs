//! Polled transmit on a Qualcomm GENI serial engine in UART mode (`qcom,geni-debug-uart`: the
//! debug UART of SC7280 / SM8250 boards).
//!
//! Written from the public description of the engine (Linux's `qcom_geni_serial.c` and
//! `linux/soc/qcom/geni-se.h`, U-Boot's `serial_msm_geni.c`); no code taken from them. Checked
//! **only against the register model in the tests below**, not on a board.
//!
//! Earlier stages (the boot loader, the host's driver) own the engine's setup: clocks, FIFO
//! mode, packing, baud rate. warden only queues bytes: one `UART_START_TX` command per write,
//! `SE_UART_TX_TRANS_LEN` bytes long, fed one FIFO word (four bytes, first byte in the low
//! byte) at a time whenever the TX FIFO is empty, then waits for the command's `CMD_DONE` and
//! acknowledges it. Waiting for an empty FIFO rather than a watermark interrupt keeps warden
//! independent of the watermark the host programmed; the line, not the FIFO, limits the rate.
//! If a command is already active (the host's own transfer), warden waits for it, bounded,
//! and drops its output rather than interfere.

use core::mem::offset_of;

use tock_registers::fields::FieldValue;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{LocalRegisterCopy, register_bitfields, register_structs};

use super::mmio::{Regs32, TxError, poll};

register_bitfields![u32,
    pub SE_GENI_STATUS [
        /// The main sequencer is running a command.
        M_GENI_CMD_ACTIVE OFFSET(0) NUMBITS(1) []
    ],
    pub SE_UART_TX_TRANS_LEN [
        LEN OFFSET(0) NUMBITS(24) []
    ],
    pub SE_GENI_M_CMD0 [
        OPCODE OFFSET(27) NUMBITS(5) [
            UartStartTx = 1
        ]
    ],
    pub SE_GENI_M_IRQ [
        CMD_DONE OFFSET(0) NUMBITS(1) [],
        TX_FIFO_WATERMARK OFFSET(30) NUMBITS(1) []
    ],
    pub SE_GENI_TX_FIFO_STATUS [
        /// Words in the TX FIFO.
        TX_FIFO_WC OFFSET(0) NUMBITS(28) []
    ]
];

register_structs! {
    /// The part of a GENI serial engine's register block warden touches.
    pub GeniRegisters {
        (0x000 => _reserved0),
        (0x040 => pub status: ReadOnly<u32, SE_GENI_STATUS::Register>),
        (0x044 => _reserved1),
        (0x270 => pub tx_trans_len: ReadWrite<u32, SE_UART_TX_TRANS_LEN::Register>),
        (0x274 => _reserved2),
        (0x600 => pub m_cmd0: ReadWrite<u32, SE_GENI_M_CMD0::Register>),
        (0x604 => _reserved3),
        (0x610 => pub m_irq_status: ReadOnly<u32, SE_GENI_M_IRQ::Register>),
        (0x614 => pub m_irq_en: ReadWrite<u32, SE_GENI_M_IRQ::Register>),
        (0x618 => pub m_irq_clear: WriteOnly<u32, SE_GENI_M_IRQ::Register>),
        (0x61c => _reserved4),
        (0x700 => pub tx_fifo: WriteOnly<u32>),
        (0x704 => _reserved5),
        (0x800 => pub tx_fifo_status: ReadOnly<u32, SE_GENI_TX_FIFO_STATUS::Register>),
        (0x804 => @END),
    }
}

pub const STATUS: usize = offset_of!(GeniRegisters, status);
pub const TX_TRANS_LEN: usize = offset_of!(GeniRegisters, tx_trans_len);
pub const M_CMD0: usize = offset_of!(GeniRegisters, m_cmd0);
pub const M_IRQ_STATUS: usize = offset_of!(GeniRegisters, m_irq_status);
pub const M_IRQ_CLEAR: usize = offset_of!(GeniRegisters, m_irq_clear);
pub const TX_FIFO: usize = offset_of!(GeniRegisters, tx_fifo);
pub const TX_FIFO_STATUS: usize = offset_of!(GeniRegisters, tx_fifo_status);

/// Bytes per `UART_START_TX` command warden issues (a line of log at most; the field is 24
/// bits wide).
pub const MAX_CHUNK: usize = 256;

fn value<R: tock_registers::RegisterLongName>(f: FieldValue<u32, R>) -> u32 {
    f.value
}

/// A GENI debug UART's transmitter.
#[derive(Debug)]
pub struct GeniUart<R: Regs32> {
    regs: R,
}

impl<R: Regs32> GeniUart<R> {
    pub const fn new(regs: R) -> Self {
        Self { regs }
    }

    fn status(&self) -> LocalRegisterCopy<u32, SE_GENI_STATUS::Register> {
        LocalRegisterCopy::new(self.regs.read(STATUS))
    }

    fn irq(&self) -> LocalRegisterCopy<u32, SE_GENI_M_IRQ::Register> {
        LocalRegisterCopy::new(self.regs.read(M_IRQ_STATUS))
    }

    fn fifo_empty(&self) -> bool {
        LocalRegisterCopy::<u32, SE_GENI_TX_FIFO_STATUS::Register>::new(
            self.regs.read(TX_FIFO_STATUS),
        )
        .read(SE_GENI_TX_FIFO_STATUS::TX_FIFO_WC)
            == 0
    }

    /// Sends `bytes`, [`MAX_CHUNK`] per command.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), TxError> {
        bytes.chunks(MAX_CHUNK).try_for_each(|chunk| self.send_chunk(chunk))
    }

    fn send_chunk(&self, chunk: &[u8]) -> Result<(), TxError> {
        if !poll(|| !self.status().is_set(SE_GENI_STATUS::M_GENI_CMD_ACTIVE)) {
            return Err(TxError::Busy);
        }
        // A finished command of the host's may have left CMD_DONE set: acknowledge it so the
        // wait below sees ours.
        self.regs.write(M_IRQ_CLEAR, value(SE_GENI_M_IRQ::CMD_DONE::SET));
        self.regs.write(TX_TRANS_LEN, value(SE_UART_TX_TRANS_LEN::LEN.val(chunk.len() as u32)));
        self.regs.write(M_CMD0, value(SE_GENI_M_CMD0::OPCODE::UartStartTx));
        for word in chunk.chunks(4) {
            if !poll(|| self.fifo_empty()) {
                return Err(TxError::Stalled);
            }
            let mut packed = [0u8; 4];
            packed[..word.len()].copy_from_slice(word);
            self.regs.write(TX_FIFO, u32::from_le_bytes(packed));
        }
        if !poll(|| self.irq().is_set(SE_GENI_M_IRQ::CMD_DONE)) {
            return Err(TxError::Stalled);
        }
        self.regs.write(M_IRQ_CLEAR, value(SE_GENI_M_IRQ::CMD_DONE::SET));
        Ok(())
    }
}

#[cfg(test)]
pub mod model {
    use super::*;
    use core::cell::RefCell;
    use std::vec::Vec;

    /// A GENI serial engine as the public description has it, as far as TX goes: a command
    /// register that starts a transfer of `TX_TRANS_LEN` bytes, a FIFO of `depth` words that
    /// the line drains one word per `drain_every` status reads, `CMD_DONE` once the last byte
    /// has gone, cleared by writing it to `M_IRQ_CLEAR`. It records what went out on the line
    /// and every access the engine would not accept.
    pub struct GeniModel {
        pub s: RefCell<State>,
    }

    #[derive(Default)]
    pub struct State {
        pub trans_len: u32,
        /// Bytes of the active command not yet written to the FIFO; `None`: no command.
        pub to_queue: Option<u32>,
        pub fifo: Vec<u32>,
        /// Bytes of queued words still to go out, per word.
        pub fifo_bytes: Vec<u32>,
        pub cmd_done: bool,
        pub line: Vec<u8>,
        pub violations: Vec<&'static str>,
        pub reads: u32,
        /// The line drains a word every this many reads (0: never: a stalled engine).
        pub drain_every: u32,
        pub depth: usize,
        /// Someone else's command is active and never ends.
        pub foreign_active: bool,
    }

    impl GeniModel {
        pub fn new(drain_every: u32) -> Self {
            let s = State { drain_every, depth: 16, ..State::default() };
            Self { s: RefCell::new(s) }
        }
    }

    impl State {
        fn tick(&mut self) {
            self.reads += 1;
            if self.drain_every == 0 || !self.reads.is_multiple_of(self.drain_every) {
                return;
            }
            if !self.fifo.is_empty() {
                let word = self.fifo.remove(0);
                let n = self.fifo_bytes.remove(0) as usize;
                self.line.extend_from_slice(&word.to_le_bytes()[..n]);
                if self.fifo.is_empty() && self.to_queue == Some(0) {
                    self.to_queue = None;
                    self.cmd_done = true;
                }
            }
        }
        fn active(&self) -> bool {
            self.foreign_active || self.to_queue.is_some()
        }
    }

    impl Regs32 for GeniModel {
        fn read(&self, offset: usize) -> u32 {
            let mut s = self.s.borrow_mut();
            s.tick();
            match offset {
                STATUS => s.active() as u32,
                M_IRQ_STATUS => s.cmd_done as u32,
                TX_FIFO_STATUS => s.fifo.len() as u32,
                TX_TRANS_LEN => s.trans_len,
                _ => {
                    s.violations.push("read of a register the driver has no business with");
                    0
                }
            }
        }

        fn write(&self, offset: usize, value: u32) {
            let mut s = self.s.borrow_mut();
            match offset {
                TX_TRANS_LEN if s.active() => s.violations.push("TX_TRANS_LEN during a command"),
                TX_TRANS_LEN => s.trans_len = value & 0xff_ffff,
                M_CMD0 if s.active() => s.violations.push("M_CMD0 during a command"),
                M_CMD0 if value >> 27 != 1 => s.violations.push("M_CMD0 not UART_START_TX"),
                M_CMD0 if s.trans_len == 0 => s.violations.push("UART_START_TX of 0 bytes"),
                M_CMD0 => s.to_queue = Some(s.trans_len),
                M_IRQ_CLEAR => {
                    if value & 1 != 0 {
                        s.cmd_done = false;
                    }
                }
                TX_FIFO => match s.to_queue {
                    None | Some(0) => s.violations.push("TX FIFO write beyond the command"),
                    Some(_) if s.fifo.len() >= s.depth => s.violations.push("TX FIFO overflow"),
                    Some(left) => {
                        let n = left.min(4);
                        s.to_queue = Some(left - n);
                        s.fifo.push(value);
                        s.fifo_bytes.push(n);
                    }
                },
                _ => s.violations.push("write to a register the driver has no business with"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::model::GeniModel;
    use super::*;

    #[test]
    fn layout_matches_the_public_offsets() {
        assert_eq!(
            [STATUS, TX_TRANS_LEN, M_CMD0, M_IRQ_STATUS, M_IRQ_CLEAR, TX_FIFO, TX_FIFO_STATUS],
            [0x40, 0x270, 0x600, 0x610, 0x618, 0x700, 0x800]
        );
        assert_eq!(value(SE_GENI_M_CMD0::OPCODE::UartStartTx), 1 << 27);
        assert_eq!(value(SE_GENI_M_IRQ::TX_FIFO_WATERMARK::SET), 1 << 30);
    }

    #[test]
    fn sends_every_byte_in_order() {
        let text: Vec<u8> = (0..700u32).map(|i| b'a' + (i % 26) as u8).collect();
        for len in [1, 3, 4, 5, 255, 256, 257, 700] {
            let uart = GeniUart::new(GeniModel::new(3));
            uart.write_bytes(&text[..len]).unwrap();
            let s = uart.regs.s.borrow();
            assert_eq!(s.violations, Vec::<&str>::new(), "len {len}");
            assert_eq!(s.line, &text[..len], "len {len}");
            assert!(!s.cmd_done, "CMD_DONE acknowledged");
        }
    }

    #[test]
    fn waits_for_the_hosts_command_and_does_not_touch_it() {
        let uart = GeniUart::new(GeniModel::new(3));
        uart.regs.s.borrow_mut().foreign_active = true;
        assert_eq!(uart.write_bytes(b"hello"), Err(TxError::Busy));
        let s = uart.regs.s.borrow();
        assert!(s.violations.is_empty() && s.line.is_empty() && s.trans_len == 0);
    }

    #[test]
    fn a_stalled_engine_does_not_hang_warden() {
        let uart = GeniUart::new(GeniModel::new(0));
        assert_eq!(uart.write_bytes(b"hello world"), Err(TxError::Stalled));
        assert!(uart.regs.s.borrow().violations.is_empty());
    }
}
