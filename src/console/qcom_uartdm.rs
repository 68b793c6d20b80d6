//! Polled transmit on Qualcomm's UARTDM v1.4 (`qcom,msm-uartdm-v1.4`: MSM8916's BLSP UARTs,
//! the DragonBoard 410c's console).
//!
//! Written from the public description of the block (Linux's `msm_serial.c`, U-Boot's
//! `serial_msm.c`); no code taken from them. Checked **only against the register model in the
//! tests below**, not on a board.
//!
//! Earlier stages own the setup (clock, baud rate, data-mover mode off). warden queues bytes:
//! it waits until the previous transfer is over (`SR.TXEMT`, or `ISR.TX_READY`: the count of
//! the last `NCF_TX` has been taken), resets `TX_READY` through `CR`, writes the number of
//! characters to `NCF_TX`, then feeds the TX FIFO one word (four characters, first in the low
//! byte) whenever `SR.TXRDY` says there is room. A transfer of the host's that does not end in
//! time makes warden drop its output rather than interfere.

use core::mem::offset_of;

use tock_registers::registers::{ReadOnly, WriteOnly};
use tock_registers::{LocalRegisterCopy, register_bitfields, register_structs};

use super::mmio::{Regs32, TxError, poll};

register_bitfields![u32,
    pub UARTDM_SR [
        /// Room in the TX FIFO.
        TXRDY OFFSET(2) NUMBITS(1) [],
        /// Transmitter empty: FIFO and shift register.
        TXEMT OFFSET(3) NUMBITS(1) []
    ],
    pub UARTDM_CR [
        /// Channel command.
        CMD OFFSET(4) NUMBITS(4) [],
        /// General command.
        GCMD OFFSET(8) NUMBITS(3) [
            ResetTxReady = 3
        ]
    ],
    pub UARTDM_ISR [
        /// Every character of the last `NCF_TX` count has been taken.
        TX_READY OFFSET(7) NUMBITS(1) []
    ],
    pub UARTDM_NCF_TX [
        COUNT OFFSET(0) NUMBITS(16) []
    ]
];

register_structs! {
    /// The part of a UARTDM v1.4 register block warden touches.
    pub UartdmRegisters {
        (0x000 => _reserved0),
        (0x040 => pub ncf_tx: WriteOnly<u32, UARTDM_NCF_TX::Register>),
        (0x044 => _reserved1),
        (0x0a4 => pub sr: ReadOnly<u32, UARTDM_SR::Register>),
        (0x0a8 => pub cr: WriteOnly<u32, UARTDM_CR::Register>),
        (0x0ac => _reserved2),
        (0x0b4 => pub isr: ReadOnly<u32, UARTDM_ISR::Register>),
        (0x0b8 => _reserved3),
        (0x100 => pub tf: WriteOnly<u32>),
        (0x104 => @END),
    }
}

pub const NCF_TX: usize = offset_of!(UartdmRegisters, ncf_tx);
pub const SR: usize = offset_of!(UartdmRegisters, sr);
pub const CR: usize = offset_of!(UartdmRegisters, cr);
pub const ISR: usize = offset_of!(UartdmRegisters, isr);
pub const TF: usize = offset_of!(UartdmRegisters, tf);

/// Characters per `NCF_TX` count warden issues.
pub const MAX_CHUNK: usize = 256;

/// A UARTDM v1.4 transmitter.
#[derive(Debug)]
pub struct UartdmUart<R: Regs32> {
    regs: R,
}

impl<R: Regs32> UartdmUart<R> {
    pub const fn new(regs: R) -> Self {
        Self { regs }
    }

    fn sr(&self) -> LocalRegisterCopy<u32, UARTDM_SR::Register> {
        LocalRegisterCopy::new(self.regs.read(SR))
    }

    fn idle(&self) -> bool {
        let isr = LocalRegisterCopy::<u32, UARTDM_ISR::Register>::new(self.regs.read(ISR));
        self.sr().is_set(UARTDM_SR::TXEMT) || isr.is_set(UARTDM_ISR::TX_READY)
    }

    /// Sends `bytes`, [`MAX_CHUNK`] per count.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), TxError> {
        bytes.chunks(MAX_CHUNK).try_for_each(|chunk| self.send_chunk(chunk))
    }

    fn send_chunk(&self, chunk: &[u8]) -> Result<(), TxError> {
        if !poll(|| self.idle()) {
            return Err(TxError::Busy);
        }
        self.regs.write(CR, UARTDM_CR::GCMD::ResetTxReady.value);
        self.regs.write(NCF_TX, UARTDM_NCF_TX::COUNT.val(chunk.len() as u32).value);
        for word in chunk.chunks(4) {
            if !poll(|| self.sr().is_set(UARTDM_SR::TXRDY)) {
                return Err(TxError::Stalled);
            }
            let mut packed = [0u8; 4];
            packed[..word.len()].copy_from_slice(word);
            self.regs.write(TF, u32::from_le_bytes(packed));
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod model {
    use super::*;
    use core::cell::RefCell;
    use std::vec::Vec;

    /// A UARTDM v1.4 as the public description has it, as far as TX goes: `NCF_TX` sets how
    /// many characters the next FIFO words carry; `ISR.TX_READY` rises once all of them were
    /// taken and falls on `CR`'s RESET_TX_READY; a FIFO of `depth` words drains one word per
    /// `drain_every` reads; `SR.TXEMT` when nothing is queued or on the line. It records the
    /// line and every access the block would not accept.
    pub struct UartdmModel {
        pub s: RefCell<State>,
    }

    #[derive(Default)]
    pub struct State {
        /// Characters of the current count not yet in the FIFO; `None`: no count.
        pub to_queue: Option<u32>,
        pub tx_ready: bool,
        pub fifo: Vec<(u32, u32)>,
        pub line: Vec<u8>,
        pub violations: Vec<&'static str>,
        pub reads: u32,
        pub drain_every: u32,
        pub depth: usize,
    }

    impl UartdmModel {
        pub fn new(drain_every: u32) -> Self {
            // Out of reset the transmitter is empty and TX_READY is set.
            let s = State { drain_every, depth: 16, tx_ready: true, ..State::default() };
            Self { s: RefCell::new(s) }
        }
    }

    impl State {
        fn tick(&mut self) {
            self.reads += 1;
            if self.drain_every != 0
                && self.reads.is_multiple_of(self.drain_every)
                && !self.fifo.is_empty()
            {
                let (word, n) = self.fifo.remove(0);
                self.line.extend_from_slice(&word.to_le_bytes()[..n as usize]);
            }
        }
    }

    impl Regs32 for UartdmModel {
        fn read(&self, offset: usize) -> u32 {
            let mut s = self.s.borrow_mut();
            s.tick();
            match offset {
                SR => {
                    let txrdy = (s.fifo.len() < s.depth) as u32;
                    let txemt = (s.fifo.is_empty() && s.to_queue.is_none_or(|n| n == 0)) as u32;
                    (txrdy << 2) | (txemt << 3)
                }
                ISR => (s.tx_ready as u32) << 7,
                _ => {
                    s.violations.push("read of a register the driver has no business with");
                    0
                }
            }
        }

        fn write(&self, offset: usize, value: u32) {
            let mut s = self.s.borrow_mut();
            match offset {
                CR if value == 3 << 8 => s.tx_ready = false,
                CR => s.violations.push("a CR command other than RESET_TX_READY"),
                NCF_TX if s.to_queue.is_some_and(|n| n > 0) => {
                    s.violations.push("NCF_TX before the previous count was sent")
                }
                NCF_TX => s.to_queue = Some(value & 0xffff),
                TF => match s.to_queue {
                    None | Some(0) => s.violations.push("TF write beyond the count"),
                    Some(_) if s.fifo.len() >= s.depth => s.violations.push("TX FIFO overflow"),
                    Some(left) => {
                        let n = left.min(4);
                        s.to_queue = Some(left - n);
                        s.fifo.push((value, n));
                        if left == n {
                            s.tx_ready = true;
                        }
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

    use super::model::UartdmModel;
    use super::*;

    #[test]
    fn layout_matches_the_public_offsets() {
        assert_eq!([NCF_TX, SR, CR, ISR, TF], [0x40, 0xa4, 0xa8, 0xb4, 0x100]);
        assert_eq!(UARTDM_CR::GCMD::ResetTxReady.value, 0x300);
    }

    #[test]
    fn sends_every_byte_in_order() {
        let text: Vec<u8> = (0..600u32).map(|i| b'A' + (i % 26) as u8).collect();
        for len in [1, 2, 4, 7, 256, 257, 600] {
            let uart = UartdmUart::new(UartdmModel::new(2));
            uart.write_bytes(&text[..len]).unwrap();
            // Let the line drain what is still queued.
            for _ in 0..1000 {
                uart.regs.read(SR);
            }
            let s = uart.regs.s.borrow();
            assert_eq!(s.violations, Vec::<&str>::new(), "len {len}");
            assert_eq!(s.line, &text[..len], "len {len}");
        }
    }

    #[test]
    fn waits_for_a_pending_transfer_and_does_not_touch_it() {
        let uart = UartdmUart::new(UartdmModel::new(0));
        {
            // The host's count of 8, one word queued, the line stuck.
            let mut s = uart.regs.s.borrow_mut();
            s.tx_ready = false;
            s.to_queue = Some(4);
            s.fifo.push((0x6463_6261, 4));
        }
        assert_eq!(uart.write_bytes(b"x"), Err(TxError::Busy));
        let s = uart.regs.s.borrow();
        assert!(s.violations.is_empty() && s.to_queue == Some(4) && s.fifo.len() == 1);
    }

    #[test]
    fn a_stalled_fifo_does_not_hang_warden() {
        let uart = UartdmUart::new(UartdmModel::new(0));
        uart.regs.s.borrow_mut().depth = 2;
        assert_eq!(uart.write_bytes(&[b'z'; 40]), Err(TxError::Stalled));
        assert!(uart.regs.s.borrow().violations.is_empty());
    }
}
