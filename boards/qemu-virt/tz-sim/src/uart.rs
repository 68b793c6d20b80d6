//! The shared PL011 console (QEMU has it ready: no set-up needed to transmit).

use core::fmt::{self, Write};

use tz_sim::layout::UART;

const DR: u64 = 0x00;
const FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

struct Pl011;

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: UART is the PL011's MMIO frame (device memory with the MMU off); FR is
            // read-only and DR takes one byte per write.
            unsafe {
                while core::ptr::read_volatile((UART + FR) as *const u32) & FR_TXFF != 0 {}
                core::ptr::write_volatile((UART + DR) as *mut u32, u32::from(b));
            }
        }
        Ok(())
    }
}

/// Prints to the console (lines from different CPUs may interleave).
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Pl011.write_fmt(args);
}
