//! QEMU's `edu` PCI device (hw/misc/edu.c), used for its DMA engine: a host device whose DMA
//! goes through the SMMU, so the guest can try to DMA into warden's memory.
//!
//! BAR0 registers: 0x00 identification (0x010000ed: version 1.0, low byte 0xed), 0x80 DMA
//! source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start, bit 1 direction: 0 = RAM to
//! device, 1 = device to RAM; bit 2 raise an interrupt). The device's 4 KiB buffer sits at
//! device address 0x40000. A DMA runs from a timer about 100 ms of virtual time after the
//! command is written, then clears the start bit; that bit is polled with a bound.
//!
//! edu masks DMA addresses with its `dma_mask` property, 28 bits by default: RAM at 1 GiB and
//! warden's memory are out of reach unless QEMU runs it as `-device edu,dma_mask=0xffffffffff`.
//! edu does not check the count against its buffer (it only logs), so every transfer is
//! bounds-checked here.

use core::cell::UnsafeCell;

use crate::console::println;
use crate::cpu;
use crate::exceptions;
use crate::pci::{self, Function};
use crate::platform::Platform;
use crate::report::{Outcome, Reason};

pub const VENDOR_QEMU: u16 = 0x1234;
pub const DEVICE_EDU: u16 = 0x11e8;
/// What a guest run needs on QEMU's command line.
pub const QEMU_DEVICE_OPTION: &str = "-device edu,dma_mask=0xffffffffff";
/// edu's default `dma_mask`.
pub const DEFAULT_DMA_MASK: u64 = (1 << 28) - 1;

const REG_IDENTIFICATION: u64 = 0x00;
const REG_DMA_SOURCE: u64 = 0x80;
const REG_DMA_DESTINATION: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_COMMAND: u64 = 0x98;

const IDENTIFICATION_MAGIC: u32 = 0xed;
const COMMAND_START: u64 = 1 << 0;
const COMMAND_DEVICE_TO_RAM: u64 = 1 << 1;

/// Device address of edu's internal DMA buffer, and its size.
const BUFFER_ADDRESS: u64 = 0x40000;
pub const BUFFER_SIZE: u64 = 4096;
/// BAR0 must reach past the buffer's registers (edu's BAR0 is 1 MiB).
const MIN_BAR0_SIZE: u64 = 0x1000;
/// Where the n-th edu's BAR0 goes in the 32-bit window: n x 16 MiB (room for edu's 1 MiB).
const BAR_SPACING: u64 = 16 << 20;

/// One DMA takes ~100 ms of virtual time; QEMU TCG on a loaded host can stretch that.
const DMA_TIMEOUT_MS: u64 = 3000;

/// An edu device with BAR0 placed and bus mastering on.
#[derive(Clone, Copy, Debug)]
pub struct Edu {
    pub function: Function,
    /// CPU address of BAR0.
    registers: u64,
}

impl Edu {
    /// Finds edu on the PCIe host's root bus and enables it. Prints a note line with the
    /// stream ID the SMMU will see, for matching warden's event log.
    pub fn set_up(platform: &Platform) -> Result<Self, Reason> {
        Self::set_up_nth(platform, 0)
    }

    /// [`Edu::set_up`] for the second edu (QEMU runs the guest with two, see
    /// `xtask/src/qemu.rs`), with BAR0 clear of the first one's.
    pub fn set_up_second(platform: &Platform) -> Result<Self, Reason> {
        Self::set_up_nth(platform, 1)
    }

    fn set_up_nth(platform: &Platform, nth: usize) -> Result<Self, Reason> {
        let host = platform.pcie.map_err(|why| Reason::new(format_args!("{why}")))?;
        let function = match pci::find_nth_function(&host.ecam, VENDOR_QEMU, DEVICE_EDU, nth) {
            Ok(Some(function)) => function,
            Ok(None) => {
                return Err(Reason::new(format_args!(
                    "no edu device number {} on bus {}: run QEMU with {QEMU_DEVICE_OPTION} ({} \
                     times)",
                    nth + 1,
                    host.ecam.first_bus,
                    nth + 1
                )));
            }
            Err(why) => return Err(Reason::new(format_args!("{why}"))),
        };
        let (registers, size) =
            pci::enable_bar0_above(&function, &host.window32, nth as u64 * BAR_SPACING)
                .map_err(|why| Reason::new(format_args!("edu at {function}: {why}")))?;
        if size < MIN_BAR0_SIZE {
            return Err(Reason::new(format_args!(
                "edu at {function}: BAR0 is only {size:#x} bytes"
            )));
        }
        let edu = Self { function, registers };
        let (identification, caught) = exceptions::catch(|| edu.read32(REG_IDENTIFICATION));
        if let Some(caught) = caught {
            return Err(Reason::new(format_args!(
                "edu at {function}: reading BAR0 at {registers:#x} aborted (ESR {:#x})",
                caught.esr
            )));
        }
        if identification & 0xff != IDENTIFICATION_MAGIC {
            return Err(Reason::new(format_args!(
                "edu at {function}: identification register reads {identification:#x}, expected \
                 0x...ed"
            )));
        }
        println!(
            "guest: note edu at {function}: stream ID {:#x} (its requester ID), BAR0 at \
             {registers:#x} (+{size:#x})",
            function.requester_id()
        );
        // Under warden the SMMU is its virtual one, and every stream aborts until the guest
        // configures it: edu's stream goes to bypass, i.e. warden's stage 2 alone.
        if let Some(base) = platform.smmu {
            let mut smmu = crate::vsmmu::Smmu::enable(base)?;
            smmu.bypass(u32::from(function.requester_id()))?;
            println!(
                "guest: note SMMU at {base:#x}: stream {:#x} in bypass (warden: stage 2 only)",
                function.requester_id()
            );
        }
        Ok(edu)
    }

    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `registers` is edu's BAR0, placed and enabled by `set_up`, at least
        // MIN_BAR0_SIZE long; `offset` is a 4-byte aligned register below that.
        unsafe { ((self.registers + offset) as *const u32).read_volatile() }
    }

    fn read64(&self, offset: u64) -> u64 {
        // SAFETY: as for `read32`; the DMA registers take 8-byte accesses.
        unsafe { ((self.registers + offset) as *const u64).read_volatile() }
    }

    fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as for `read64`. Writing a DMA register starts no transfer by itself; the
        // command register starts one only to or from buffers the caller names.
        unsafe { ((self.registers + offset) as *mut u64).write_volatile(value) }
    }

    fn is_busy(&self) -> bool {
        self.read64(REG_DMA_COMMAND) & COMMAND_START != 0
    }

    /// One DMA between RAM at bus address `ram` and edu's buffer at `buffer_offset`, `count`
    /// bytes, waited for. The caller orders its own RAM accesses around it (`cpu::dsb_sy`).
    fn transfer(
        &self,
        ram: u64,
        buffer_offset: u64,
        count: u64,
        device_to_ram: bool,
    ) -> Result<(), Reason> {
        let in_buffer = buffer_offset.checked_add(count).is_some_and(|end| end <= BUFFER_SIZE);
        if count == 0 || !in_buffer {
            return Err(Reason::new(format_args!(
                "edu DMA of {count:#x} bytes at buffer offset {buffer_offset:#x} does not fit \
                 its {BUFFER_SIZE:#x}-byte buffer"
            )));
        }
        // edu ignores DMA register writes while a transfer runs.
        if !cpu::wait_until(DMA_TIMEOUT_MS, || !self.is_busy()) {
            return Err(Reason::new(format_args!(
                "edu DMA engine still busy after {DMA_TIMEOUT_MS} ms"
            )));
        }
        let device = BUFFER_ADDRESS + buffer_offset;
        let (source, destination, command) = if device_to_ram {
            (device, ram, COMMAND_START | COMMAND_DEVICE_TO_RAM)
        } else {
            (ram, device, COMMAND_START)
        };
        self.write64(REG_DMA_SOURCE, source);
        self.write64(REG_DMA_DESTINATION, destination);
        self.write64(REG_DMA_COUNT, count);
        // The buffers' contents reach memory before the device is told to read them.
        cpu::dsb_sy();
        self.write64(REG_DMA_COMMAND, command);
        let done = cpu::wait_until(DMA_TIMEOUT_MS, || !self.is_busy());
        // The device's writes are read only after it said it is done.
        cpu::dsb_sy();
        if !done {
            let direction = if device_to_ram { "to" } else { "from" };
            return Err(Reason::new(format_args!(
                "edu DMA {direction} {ram:#x} ({count:#x} bytes) did not complete within \
                 {DMA_TIMEOUT_MS} ms"
            )));
        }
        Ok(())
    }

    /// DMA of `count` bytes from RAM at `source` into edu's buffer at `buffer_offset`.
    pub fn dma_to_device(&self, source: u64, buffer_offset: u64, count: u64) -> Outcome {
        self.transfer(source, buffer_offset, count, false)
    }

    /// DMA of `count` bytes from edu's buffer at `buffer_offset` to RAM at `destination`.
    pub fn dma_to_ram(&self, buffer_offset: u64, destination: u64, count: u64) -> Outcome {
        self.transfer(destination, buffer_offset, count, true)
    }
}

const PAGE_WORDS: usize = 512;

/// A page of guest RAM that edu reads and writes. Only the primary CPU uses these pages, and
/// only through volatile accesses by raw pointer (no reference to the contents ever exists), so
/// the device changing them behind the compiler's back is fine.
#[repr(C, align(4096))]
pub struct DmaPage(UnsafeCell<[u64; PAGE_WORDS]>);

// SAFETY: see the type's documentation: the primary CPU is the only user.
unsafe impl Sync for DmaPage {}

impl DmaPage {
    pub const WORDS: usize = PAGE_WORDS;

    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; PAGE_WORDS]))
    }

    /// Bus address of the page: with the MMU off, and identity maps at stage 2 and in the
    /// SMMU, the pointer is the physical, the intermediate physical and the DMA address.
    pub fn address(&self) -> u64 {
        self.0.get() as usize as u64
    }

    pub fn write(&self, index: usize, value: u64) {
        if index < PAGE_WORDS {
            // SAFETY: in bounds of the page (checked); a volatile store through the raw
            // pointer, see the type's documentation.
            unsafe { self.0.get().cast::<u64>().add(index).write_volatile(value) }
        }
    }

    pub fn read(&self, index: usize) -> Option<u64> {
        // SAFETY: in bounds of the page (checked); a volatile load through the raw pointer.
        (index < PAGE_WORDS)
            .then(|| unsafe { self.0.get().cast::<u64>().add(index).read_volatile() })
    }
}

/// What a scenario DMAs from.
pub static SOURCE_PAGE: DmaPage = DmaPage::new();
/// Where a scenario has edu DMA to.
pub static RESULT_PAGE: DmaPage = DmaPage::new();
