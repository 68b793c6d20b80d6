//! QEMU's `edu` PCI device (hw/misc/edu.c) driven from user space through its VFIO-mapped BAR0:
//! a DMA engine whose transactions carry edu's stream ID through the SMMU, so its addresses are
//! IOVAs of the VFIO container's IOMMU domain.
//!
//! BAR0 registers: 0x00 identification (`0x010000ed`: version 1.0, low byte 0xed), 0x80 DMA
//! source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start, bit 1 direction: 0 = RAM to
//! device, 1 = device to RAM; bit 2 would raise an interrupt, never used here). The device's
//! 4 KiB buffer is at device address 0x40000. A transfer runs from a timer ~100 ms (virtual
//! time) after the command is written and then clears the start bit, which is polled. A
//! transfer the IOMMU refuses fails silently on edu's side (QEMU drops it); the SMMU records an
//! event. edu masks DMA addresses with its `dma_mask` (28 bits by default), so IOVAs stay low.

use core::arch::asm;

use crate::sys::{self, Mapping};

const REG_IDENTIFICATION: usize = 0x00;
const REG_DMA_SOURCE: usize = 0x80;
const REG_DMA_DESTINATION: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_COMMAND: usize = 0x98;
const IDENTIFICATION_LOW_BYTE: u32 = 0xed;
const COMMAND_START: u64 = 1 << 0;
const COMMAND_DEVICE_TO_RAM: u64 = 1 << 1;

/// Device address of edu's DMA buffer, and its size.
pub const BUFFER_ADDRESS: u64 = 0x40000;
pub const BUFFER_SIZE: u64 = 4096;
/// Bytes of BAR0 the registers need.
const MIN_BAR0_SIZE: usize = 0x100;
/// One transfer takes ~100 ms of virtual time; TCG on a loaded machine stretches that.
const DMA_TIMEOUT_MS: u64 = 5000;

/// edu with its BAR0 mapped.
#[derive(Debug)]
pub struct Edu {
    bar0: Mapping,
}

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// IOVA → edu's buffer (a DMA read of memory).
    ToDevice,
    /// edu's buffer → IOVA (a DMA write of memory).
    ToMemory,
}

impl Edu {
    /// Checks the identification register of the mapped BAR0 (`bar0_size` bytes).
    pub fn new(bar0: Mapping, bar0_size: u64) -> Result<Self, u32> {
        if (bar0_size as usize) < MIN_BAR0_SIZE {
            return Err(0);
        }
        let edu = Self { bar0 };
        let id = edu.read32(REG_IDENTIFICATION);
        if id & 0xff != IDENTIFICATION_LOW_BYTE {
            return Err(id);
        }
        Ok(edu)
    }

    fn reg(&self, offset: usize) -> *mut u8 {
        // In bounds: offsets are registers below MIN_BAR0_SIZE, checked in `new`.
        self.bar0.base().wrapping_add(offset)
    }

    fn read32(&self, offset: usize) -> u32 {
        let value: u32;
        // SAFETY: an aligned 32-bit load from edu's mapped BAR0.
        unsafe {
            asm!("ldr {v:w}, [{p}]", v = out(reg) value, p = in(reg) self.reg(offset), options(nostack))
        };
        value
    }

    fn read64(&self, offset: usize) -> u64 {
        let value: u64;
        // SAFETY: an aligned 64-bit load from edu's mapped BAR0 (edu answers 8-byte accesses
        // from 0x80 on).
        unsafe {
            asm!("ldr {v}, [{p}]", v = out(reg) value, p = in(reg) self.reg(offset), options(nostack))
        };
        value
    }

    fn write64(&self, offset: usize, value: u64) {
        // SAFETY: an aligned 64-bit store to edu's mapped BAR0 (see `read64`).
        unsafe {
            asm!("str {v}, [{p}]", v = in(reg) value, p = in(reg) self.reg(offset), options(nostack))
        };
    }

    /// Runs one transfer of `len` bytes between `iova` and the start of edu's buffer and waits
    /// for edu to report it finished (it does whether or not the IOMMU let it through).
    pub fn dma(&self, direction: Direction, iova: u64, len: u64) -> Result<(), &'static str> {
        if len == 0 || len > BUFFER_SIZE {
            return Err("transfer size outside edu's 4 KiB buffer");
        }
        if self.read64(REG_DMA_COMMAND) & COMMAND_START != 0 {
            return Err("edu is still busy with an earlier transfer");
        }
        let (source, destination, command) = match direction {
            Direction::ToDevice => (iova, BUFFER_ADDRESS, COMMAND_START),
            Direction::ToMemory => (BUFFER_ADDRESS, iova, COMMAND_START | COMMAND_DEVICE_TO_RAM),
        };
        self.write64(REG_DMA_SOURCE, source);
        self.write64(REG_DMA_DESTINATION, destination);
        self.write64(REG_DMA_COUNT, len);
        self.write64(REG_DMA_COMMAND, command);
        let start = sys::now_ms();
        while self.read64(REG_DMA_COMMAND) & COMMAND_START != 0 {
            if sys::now_ms().saturating_sub(start) > DMA_TIMEOUT_MS {
                return Err("edu did not finish the transfer within 5 s");
            }
            sys::sleep_ms(10);
        }
        Ok(())
    }
}
