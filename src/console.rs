//! The console: the board's UART, shared with the host, behind the `log` crate.
//!
//! warden writes characters only; it never reprograms the UART (baud rate, FIFOs, packing,
//! interrupts stay as the boot loader and the host set them), so the host's console keeps
//! working. Three transmitters, one per [`UartKind`], each over [`mmio::Regs32`]: [`pl011`]
//! (QEMU virt), [`qcom_geni`] (the GENI debug UART of RB3 Gen 2 and RB5) and [`qcom_uartdm`]
//! (UARTDM v1.4, DB410c). [`Uart`] is the one dispatch over them (an enum: the kind is known
//! only at run time, after the DT is parsed, and no `dyn` is needed), used by the early boot
//! path, the logger and the panic path alike. The Qualcomm ones are checked only against their
//! register models.
//!
//! Which UART: the board's ([`crate::boards::Board::early_console`]) from the first message
//! on; once the DT is parsed, its `stdout-path` console if it is of the board's kind and
//! usable ([`select`]).

pub mod mmio;
pub mod pl011;
pub mod qcom_geni;
pub mod qcom_uartdm;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::dt::{ConsoleInfo, UartKind};
use crate::mm::MemRange;
use mmio::{Mmio, Regs32, TxError};
use pl011::Pl011;
use qcom_geni::GeniUart;
use qcom_uartdm::UartdmUart;

/// Bytes of register block each transmitter touches from its base (the last register's end):
/// what the DT's `reg` must cover and warden's stage 1 maps.
pub const fn register_span(kind: UartKind) -> u64 {
    match kind {
        UartKind::Pl011 => pl011::FR as u64 + 4,
        UartKind::QcomGeniDebug => qcom_geni::TX_FIFO_STATUS as u64 + 4,
        UartKind::QcomUartdm => qcom_uartdm::TF as u64 + 4,
    }
}

/// A console UART: its kind and the physical address of its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    pub kind: UartKind,
    pub base: u64,
}

/// Physical addresses are below this (the packed form of [`CONSOLE`] keeps the kind above).
const ADDRESS_LIMIT: u64 = 1 << 52;
const KIND_SHIFT: u32 = 60;

impl Console {
    /// The pages warden maps as device memory for it (its stage 1).
    pub fn pages(&self) -> Option<MemRange> {
        MemRange::from_base_size(self.base, register_span(self.kind))?.page_aligned_outward()
    }

    fn pack(self) -> u64 {
        let tag: u64 = match self.kind {
            UartKind::Pl011 => 1,
            UartKind::QcomGeniDebug => 2,
            UartKind::QcomUartdm => 3,
        };
        (tag << KIND_SHIFT) | (self.base & (ADDRESS_LIMIT - 1))
    }

    fn unpack(packed: u64) -> Option<Self> {
        let kind = match packed >> KIND_SHIFT {
            1 => UartKind::Pl011,
            2 => UartKind::QcomGeniDebug,
            3 => UartKind::QcomUartdm,
            _ => return None,
        };
        Some(Self { kind, base: packed & (ADDRESS_LIMIT - 1) })
    }
}

/// Why the DT's console is not used (the board's early UART stays the console).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtConsoleRefused {
    /// The DT names no UART warden has a driver for.
    None,
    /// It is of another kind than the board's UART (a DT for another board, or an edited one).
    OtherKind { dt: ConsoleInfo, board: UartKind },
    /// Its `reg` does not cover the registers the transmitter touches.
    TooSmall { dt: ConsoleInfo, needed: u64 },
    /// Its base is not 4-byte aligned or not a physical address.
    BadBase { dt: ConsoleInfo },
}

impl fmt::Display for DtConsoleRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "the DT names no console warden drives"),
            Self::OtherKind { dt, board } => write!(
                f,
                "the DT's console at {:#x} is {:?}, the board's UART is {board:?}",
                dt.regs.start, dt.kind
            ),
            Self::TooSmall { dt, needed } => write!(
                f,
                "the DT's console {:?} is smaller than the {needed:#x} bytes of registers its \
                 transmitter uses",
                dt.regs
            ),
            Self::BadBase { dt } => {
                write!(
                    f,
                    "the DT's console at {:#x} is not an aligned physical address",
                    dt.regs.start
                )
            }
        }
    }
}

/// The console once the DT is parsed: the DT's (`/chosen` `stdout-path`, else its first UART
/// warden knows: [`crate::dt::PlatformInfo::console`]) when it is of the board's kind, covers
/// the transmitter's registers and is aligned; otherwise the board's early UART, with why.
pub fn select(early: Console, dt: Option<ConsoleInfo>) -> (Console, Option<DtConsoleRefused>) {
    let Some(dt) = dt else { return (early, Some(DtConsoleRefused::None)) };
    let needed = register_span(dt.kind);
    let refused = if dt.kind != early.kind {
        DtConsoleRefused::OtherKind { dt, board: early.kind }
    } else if dt.regs.size() < needed {
        DtConsoleRefused::TooSmall { dt, needed }
    } else if !dt.regs.start.is_multiple_of(4) || dt.regs.start >= ADDRESS_LIMIT {
        DtConsoleRefused::BadBase { dt }
    } else {
        return (Console { kind: dt.kind, base: dt.regs.start }, None);
    };
    (early, Some(refused))
}

/// A console transmitter of any kind warden knows.
#[derive(Debug)]
pub enum Uart<R: Regs32> {
    Pl011(Pl011<R>),
    Geni(GeniUart<R>),
    Uartdm(UartdmUart<R>),
}

impl<R: Regs32> Uart<R> {
    pub const fn new(kind: UartKind, regs: R) -> Self {
        match kind {
            UartKind::Pl011 => Self::Pl011(Pl011::new(regs)),
            UartKind::QcomGeniDebug => Self::Geni(GeniUart::new(regs)),
            UartKind::QcomUartdm => Self::Uartdm(UartdmUart::new(regs)),
        }
    }

    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), TxError> {
        match self {
            Self::Pl011(u) => u.write_bytes(bytes),
            Self::Geni(u) => u.write_bytes(bytes),
            Self::Uartdm(u) => u.write_bytes(bytes),
        }
    }
}

/// Text with `\n` sent as `\r\n`. A transmitter that gives up ends the formatting of the
/// message (`fmt::Error`): the rest of it is dropped rather than waited for again.
impl<R: Regs32> Write for Uart<R> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut lines = s.as_bytes().split(|&b| b == b'\n');
        if let Some(first) = lines.next() {
            self.write_bytes(first).map_err(|_| fmt::Error)?;
        }
        for line in lines {
            self.write_bytes(b"\r\n").map_err(|_| fmt::Error)?;
            self.write_bytes(line).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

/// The console's transmitter on the hardware.
pub type MmioUart = Uart<Mmio>;

impl MmioUart {
    /// # Safety
    /// `console` must be a UART of its kind whose [`Console::pages`] are mapped as device
    /// memory (or the MMU off) for as long as the transmitter is used.
    pub const unsafe fn at(console: Console) -> Self {
        // SAFETY: the caller's contract covers every register the transmitter touches.
        Self::new(console.kind, unsafe { Mmio::new(console.base as usize) })
    }
}

/// The console, packed ([`Console::pack`]; 0 until set): one word, so a CPU never sees a kind
/// and a base from two different settings.
static CONSOLE: AtomicU64 = AtomicU64::new(0);

/// Serialises whole lines across CPUs (a lock, not a `spin::Mutex`, so a panicking CPU can take
/// it over instead of deadlocking on a holder that will never return).
static OWNER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the UART the logger and panics print to.
///
/// # Safety
/// `console` must be a UART of its kind whose [`Console::pages`] stay mapped as device memory
/// for as long as warden runs.
pub unsafe fn set_console(console: Console) {
    CONSOLE.store(console.pack(), Ordering::Release);
}

/// The console set by [`set_console`], if any.
pub fn console() -> Option<Console> {
    Console::unpack(CONSOLE.load(Ordering::Acquire))
}

fn uart() -> Option<MmioUart> {
    // SAFETY: only `set_console` stores a console, under its contract.
    console().map(|c| unsafe { MmioUart::at(c) })
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

/// Prints without taking the line lock (panic path: the holder may never return).
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "warden v0 on a board\nsecond line\n";
    const ON_THE_LINE: &[u8] = b"warden v0 on a board\r\nsecond line\r\n";

    #[test]
    fn pl011_through_the_dispatch() {
        let model = pl011::model::Pl011Model::new(2);
        let mut uart = Uart::new(UartKind::Pl011, &model);
        assert!(matches!(uart, Uart::Pl011(_)));
        uart.write_str(TEXT).unwrap();
        model.drain();
        let s = model.s.borrow();
        assert_eq!((s.violations.as_slice(), s.line.as_slice()), (&[][..], ON_THE_LINE));
    }

    #[test]
    fn geni_through_the_dispatch() {
        let model = qcom_geni::model::GeniModel::new(3);
        let mut uart = Uart::new(UartKind::QcomGeniDebug, &model);
        assert!(matches!(uart, Uart::Geni(_)));
        write!(uart, "{}", TEXT).unwrap();
        let s = model.s.borrow();
        assert_eq!((s.violations.as_slice(), s.line.as_slice()), (&[][..], ON_THE_LINE));
    }

    #[test]
    fn uartdm_through_the_dispatch() {
        let model = qcom_uartdm::model::UartdmModel::new(2);
        let mut uart = Uart::new(UartKind::QcomUartdm, &model);
        assert!(matches!(uart, Uart::Uartdm(_)));
        uart.write_str(TEXT).unwrap();
        for _ in 0..1000 {
            model.read(qcom_uartdm::SR);
        }
        let s = model.s.borrow();
        assert_eq!((s.violations.as_slice(), s.line.as_slice()), (&[][..], ON_THE_LINE));
    }

    #[test]
    fn a_stalled_transmitter_ends_the_message() {
        let model = pl011::model::Pl011Model::new(0);
        let mut uart = Uart::new(UartKind::Pl011, &model);
        assert_eq!(
            uart.write_fmt(format_args!("{}{}", "x".repeat(40), "never sent")),
            Err(fmt::Error)
        );
        assert_eq!(model.s.borrow().fifo.len(), 32);
    }

    #[test]
    fn packing_keeps_kind_and_base() {
        for kind in [UartKind::Pl011, UartKind::QcomGeniDebug, UartKind::QcomUartdm] {
            for base in [0x0900_0000, 0x0099_4000, 0x078b_0000, ADDRESS_LIMIT - 4] {
                let c = Console { kind, base };
                assert_eq!(Console::unpack(c.pack()), Some(c));
            }
        }
        assert_eq!(Console::unpack(0), None);
    }

    fn info(kind: UartKind, start: u64, size: u64) -> ConsoleInfo {
        ConsoleInfo { kind, regs: MemRange::from_base_size(start, size).unwrap() }
    }

    #[test]
    fn the_dts_console_wins_when_it_fits_the_board() {
        let early = Console { kind: UartKind::QcomGeniDebug, base: 0x99_4000 };
        let dt = info(UartKind::QcomGeniDebug, 0xa8_4000, 0x4000);
        assert_eq!(select(early, Some(dt)), (Console { kind: dt.kind, base: 0xa8_4000 }, None));
        assert_eq!(select(early, None), (early, Some(DtConsoleRefused::None)));
        let other = info(UartKind::Pl011, 0x900_0000, 0x1000);
        assert_eq!(
            select(early, Some(other)),
            (early, Some(DtConsoleRefused::OtherKind { dt: other, board: early.kind }))
        );
        let small = info(UartKind::QcomGeniDebug, 0xa8_4000, 0x800);
        assert_eq!(
            select(early, Some(small)),
            (early, Some(DtConsoleRefused::TooSmall { dt: small, needed: 0x804 }))
        );
        let odd = info(UartKind::QcomGeniDebug, 0xa8_4002, 0x4000);
        assert_eq!(select(early, Some(odd)), (early, Some(DtConsoleRefused::BadBase { dt: odd })));
        let msg = std::format!("{}", DtConsoleRefused::OtherKind { dt: other, board: early.kind });
        assert!(msg.contains("0x9000000") && msg.contains("QcomGeniDebug"), "{msg}");
    }

    #[test]
    fn pages_cover_the_transmitters_registers() {
        let geni = Console { kind: UartKind::QcomGeniDebug, base: 0x99_4000 };
        assert_eq!(geni.pages(), Some(MemRange::new(0x99_4000, 0x99_5000)));
        let uartdm = Console { kind: UartKind::QcomUartdm, base: 0x78b_0000 };
        assert_eq!(uartdm.pages(), Some(MemRange::new(0x78b_0000, 0x78b_1000)));
        let straddling = Console { kind: UartKind::QcomGeniDebug, base: 0x99_4c00 };
        assert_eq!(straddling.pages(), Some(MemRange::new(0x99_4000, 0x99_6000)));
    }
}
