//! PL011 console (transmit only). The primary CPU prints; secondaries never do, so no lock is
//! needed. Before the DT names a UART, output is dropped.

use core::fmt::{self, Write};

use crate::shared::SharedU64;

/// Physical address of the PL011 (0: none known yet).
static CONSOLE_BASE: SharedU64 = SharedU64::new(0);

const UARTDR: u64 = 0x00;
const UARTFR: u64 = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;
/// Bound on waiting for FIFO space: a stuck UART drops characters instead of hanging the run.
const TX_WAIT_POLLS: u32 = 1_000_000;

/// Uses the PL011 at `base` (from the DT; the firmware has configured it, as for Linux's
/// earlycon).
pub fn init(base: u64) {
    CONSOLE_BASE.store(base);
}

struct Pl011 {
    base: u64,
}

impl Pl011 {
    fn put(&self, byte: u8) {
        let fr = (self.base + UARTFR) as *const u32;
        let dr = (self.base + UARTDR) as *mut u32;
        for _ in 0..TX_WAIT_POLLS {
            // SAFETY: `base` is the PL011 register frame named by the DT; UARTFR is a
            // read-only 32-bit register without side effects.
            if unsafe { fr.read_volatile() } & UARTFR_TXFF == 0 {
                // SAFETY: as above; writing UARTDR queues one character.
                unsafe { dr.write_volatile(u32::from(byte)) };
                return;
            }
        }
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
        Ok(())
    }
}

/// Writes formatted text to the console, if there is one.
pub fn print(args: fmt::Arguments) {
    let base = CONSOLE_BASE.load();
    if base != 0 {
        // Pl011::write_str never fails.
        let _ = Pl011 { base }.write_fmt(args);
    }
}

/// `println!` for the console: one line, terminated by CR LF.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use println;
