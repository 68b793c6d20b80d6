//! Polled transmit on an Arm PL011 (`arm,pl011`: QEMU virt's console).
//!
//! warden writes characters only; it never reprograms the UART (baud rate, FIFOs, interrupts
//! stay as the boot loader and the host set them), so the host's console keeps working. That is
//! also why this is a dozen lines rather than the `arm-pl011-uart` crate, whose driver model
//! owns and initialises the device.

use core::mem::offset_of;

use tock_registers::registers::{ReadOnly, WriteOnly};
use tock_registers::{LocalRegisterCopy, register_bitfields, register_structs};

use super::mmio::{Regs32, TxError, poll};

register_bitfields![u32,
    pub UARTFR [
        /// The TX FIFO is full.
        TXFF OFFSET(5) NUMBITS(1) []
    ]
];

register_structs! {
    /// The part of a PL011's register block warden touches.
    pub Pl011Registers {
        (0x000 => pub dr: WriteOnly<u32>),
        (0x004 => _reserved0),
        (0x018 => pub fr: ReadOnly<u32, UARTFR::Register>),
        (0x01c => @END),
    }
}

pub const DR: usize = offset_of!(Pl011Registers, dr);
pub const FR: usize = offset_of!(Pl011Registers, fr);

/// A PL011's transmitter.
#[derive(Debug)]
pub struct Pl011<R: Regs32> {
    regs: R,
}

impl<R: Regs32> Pl011<R> {
    pub const fn new(regs: R) -> Self {
        Self { regs }
    }

    /// Sends `bytes`, each once the TX FIFO has room.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), TxError> {
        for &byte in bytes {
            let room = || {
                !LocalRegisterCopy::<u32, UARTFR::Register>::new(self.regs.read(FR))
                    .is_set(UARTFR::TXFF)
            };
            if !poll(room) {
                return Err(TxError::Stalled);
            }
            self.regs.write(DR, byte.into());
        }
        Ok(())
    }
}

/// A PL011 model for the tests: a FIFO of `depth` characters the line drains one per
/// `drain_every` reads; the line and every access the driver has no business making recorded.
#[cfg(test)]
pub mod model {
    use core::cell::RefCell;
    use std::vec::Vec;

    use super::{DR, FR, Regs32};

    #[derive(Default)]
    pub struct State {
        pub fifo: Vec<u8>,
        pub line: Vec<u8>,
        pub violations: Vec<&'static str>,
        reads: u32,
        /// 0: the line never drains (a stalled UART).
        pub drain_every: u32,
        pub depth: usize,
    }

    pub struct Pl011Model {
        pub s: RefCell<State>,
    }

    impl Pl011Model {
        pub fn new(drain_every: u32) -> Self {
            Self { s: RefCell::new(State { drain_every, depth: 32, ..State::default() }) }
        }

        /// Lets the line send everything queued.
        pub fn drain(&self) {
            let mut s = self.s.borrow_mut();
            let queued = core::mem::take(&mut s.fifo);
            s.line.extend(queued);
        }
    }

    impl Regs32 for Pl011Model {
        fn read(&self, offset: usize) -> u32 {
            let mut s = self.s.borrow_mut();
            s.reads += 1;
            if s.drain_every != 0 && s.reads.is_multiple_of(s.drain_every) && !s.fifo.is_empty() {
                let c = s.fifo.remove(0);
                s.line.push(c);
            }
            match offset {
                FR => ((s.fifo.len() >= s.depth) as u32) << 5,
                _ => {
                    s.violations.push("read of a register the driver has no business with");
                    0
                }
            }
        }

        fn write(&self, offset: usize, value: u32) {
            let mut s = self.s.borrow_mut();
            match offset {
                DR if s.fifo.len() >= s.depth => s.violations.push("TX FIFO overflow"),
                DR if value > 0xff => s.violations.push("DR write wider than a character"),
                DR => s.fifo.push(value as u8),
                _ => s.violations.push("write to a register the driver has no business with"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::model::Pl011Model;
    use super::*;

    #[test]
    fn layout_matches_the_public_offsets() {
        assert_eq!([DR, FR], [0x00, 0x18]);
    }

    #[test]
    fn sends_every_byte_in_order_without_overflowing() {
        let text: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        let uart = Pl011::new(Pl011Model::new(3));
        uart.write_bytes(&text).unwrap();
        uart.regs.drain();
        let s = uart.regs.s.borrow();
        assert_eq!(s.violations, Vec::<&str>::new());
        assert_eq!(s.line, text);
    }

    #[test]
    fn a_stalled_uart_does_not_hang_warden() {
        let uart = Pl011::new(Pl011Model::new(0));
        assert_eq!(uart.write_bytes(&[b'x'; 40]), Err(TxError::Stalled));
        let s = uart.regs.s.borrow();
        assert!(s.violations.is_empty() && s.fifo.len() == 32);
    }
}
