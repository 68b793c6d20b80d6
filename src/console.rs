//! The console: a PL011 UART shared with the host, behind the `log` crate.
//!
//! warden writes characters only; it never reprograms the UART (baud rate, FIFOs, interrupts
//! stay as the boot loader and the host set them), so the host's console keeps working. That is
//! also why this is a dozen lines rather than the `arm-pl011-uart` crate, whose driver model
//! owns and initialises the device.
//!
//! The Snapdragon boards' UARTs have their transmitters in [`qcom_geni`] (GENI debug UART) and
//! [`qcom_uartdm`] (UARTDM v1.4), over [`mmio::Regs32`]; checked only against register models.

pub mod mmio;
pub mod qcom_geni;
pub mod qcom_uartdm;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// PL011 data register.
const UARTDR: u64 = 0x00;
/// PL011 flag register and its TX-FIFO-full bit.
const UARTFR: u64 = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;
/// Upper bound on polling a full FIFO, so a wedged UART cannot hang warden forever.
const TX_SPIN_LIMIT: u32 = 1_000_000;

/// A PL011 transmitter at a fixed address. Writes are unsynchronised: use [`CONSOLE`] once
/// the MMU is on (it serialises CPUs), and `RawUart` only before that or in a panic.
#[derive(Clone, Copy, Debug)]
pub struct RawUart {
    base: u64,
}

impl RawUart {
    /// # Safety
    /// `base` must be the address of a PL011 mapped as device memory (or the MMU off).
    pub const unsafe fn new(base: u64) -> Self {
        Self { base }
    }

    fn put(&self, byte: u8) {
        let mut spins = 0;
        // SAFETY: `new`'s contract: base is a PL011, so these are its FR and DR registers.
        unsafe {
            while core::ptr::read_volatile((self.base + UARTFR) as *const u32) & UARTFR_TXFF != 0
                && spins < TX_SPIN_LIMIT
            {
                spins += 1;
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((self.base + UARTDR) as *mut u32, byte as u32);
        }
    }
}

impl Write for RawUart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

/// Address of the console UART (0 until set).
static UART_BASE: AtomicU64 = AtomicU64::new(0);

/// Serialises whole lines across CPUs (a lock, not a `spin::Mutex`, so a panicking CPU can take
/// it over instead of deadlocking on a holder that will never return).
static OWNER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the UART the logger and panics print to.
///
/// # Safety
/// `base` must be a PL011 mapped as device memory for as long as warden runs.
pub unsafe fn set_uart(base: u64) {
    UART_BASE.store(base, Ordering::Release);
}

fn uart() -> Option<RawUart> {
    let base = UART_BASE.load(Ordering::Acquire);
    // SAFETY: only `set_uart` stores a non-zero base, under its contract.
    (base != 0).then(|| unsafe { RawUart::new(base) })
}

/// Prints one line atomically with respect to other CPUs (bounded wait, then proceeds anyway:
/// a garbled line beats a hung CPU).
pub fn print_line(cpu: usize, args: fmt::Arguments<'_>) {
    let Some(mut u) = uart() else { return };
    let mut spins = 0u32;
    while OWNER.compare_exchange(usize::MAX, cpu, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if spins > 10_000_000 {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = u.write_fmt(args);
    let _ = u.write_str("\n");
    let _ = OWNER.compare_exchange(cpu, usize::MAX, Ordering::Release, Ordering::Relaxed);
}

/// Prints without taking the line lock (panic path).
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    if let Some(mut u) = uart() {
        let _ = u.write_fmt(args);
    }
}

/// `log` backend: `warden: cpuN: LEVEL message`.
pub struct Logger {
    pub cpu_index: fn() -> usize,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let cpu = (self.cpu_index)();
        match record.level() {
            log::Level::Info => {
                print_line(cpu, format_args!("warden: cpu{cpu}: {}", record.args()))
            }
            level => print_line(cpu, format_args!("warden: cpu{cpu}: {level}: {}", record.args())),
        }
    }

    fn flush(&self) {}
}
