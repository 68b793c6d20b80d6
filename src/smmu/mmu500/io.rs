//! The MMU-500's register window behind one narrow trait: host tests drive
//! `super::model::Mmu500Model`, the target [`MmioMmu500`].

use crate::mm::MemRange;

/// 32- and 64-bit accesses at offsets from the window's base. Register accesses to one device
/// are seen by it in program order (Device-nGnRE), so no barrier is part of the trait.
pub trait Mmu500Io {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
    /// The 64-bit registers (TTBRn, the TLBIVA family, FAR).
    fn read64(&self, offset: u32) -> u64;
    fn write64(&self, offset: u32, value: u64);
}

/// A shared reference drives the same SMMU (lets tests keep the model after handing it over).
impl<T: Mmu500Io + ?Sized> Mmu500Io for &T {
    fn read32(&self, offset: u32) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: u32, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: u32) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: u32, value: u64) {
        (**self).write64(offset, value)
    }
}

/// The real MMU-500: volatile accesses to its window, which warden's EL2 stage 1 maps as
/// Device-nGnRE and the host's stage 2 leaves unmapped.
#[derive(Debug)]
pub struct MmioMmu500 {
    window: MemRange,
}

impl MmioMmu500 {
    /// # Safety
    /// `window` is an MMU-500's whole register window (the DT's `reg`), identity-mapped as
    /// device memory at EL2 for as long as the value lives, and nothing else at EL2 drives it.
    pub unsafe fn new(window: MemRange) -> Self {
        Self { window }
    }

    /// The address of `offset`, or `None` outside the window (the back end sizes every offset
    /// from sIDR1, so this only catches a DT `reg` smaller than the SMMU says it is).
    fn reg(&self, offset: u32, bytes: u64) -> Option<u64> {
        let at = self.window.start.checked_add(u64::from(offset))?;
        (at.checked_add(bytes)? <= self.window.end && at.is_multiple_of(bytes)).then_some(at)
    }
}

impl Mmu500Io for MmioMmu500 {
    fn read32(&self, offset: u32) -> u32 {
        match self.reg(offset, 4) {
            // SAFETY: inside the window `new`'s contract makes mapped device memory, aligned.
            Some(at) => unsafe { core::ptr::read_volatile(at as *const u32) },
            None => {
                log::error!("MMU-500: read of {offset:#x} outside the DT's window");
                0
            }
        }
    }
    fn write32(&self, offset: u32, value: u32) {
        match self.reg(offset, 4) {
            // SAFETY: as in read32.
            Some(at) => unsafe { core::ptr::write_volatile(at as *mut u32, value) },
            None => log::error!("MMU-500: write of {offset:#x} outside the DT's window"),
        }
    }
    fn read64(&self, offset: u32) -> u64 {
        match self.reg(offset, 8) {
            // SAFETY: as in read32; 8-byte aligned.
            Some(at) => unsafe { core::ptr::read_volatile(at as *const u64) },
            None => {
                log::error!("MMU-500: read of {offset:#x} outside the DT's window");
                0
            }
        }
    }
    fn write64(&self, offset: u32, value: u64) {
        match self.reg(offset, 8) {
            // SAFETY: as in read32; 8-byte aligned.
            Some(at) => unsafe { core::ptr::write_volatile(at as *mut u64, value) },
            None => log::error!("MMU-500: write of {offset:#x} outside the DT's window"),
        }
    }
}
