//! The SMMU's hardware interface behind one narrow trait: its registers, the memory it reads
//! and writes (stream table, queues), and the barrier that orders the two. Host tests use
//! [`super::fake::FakeSmmu`]; on the target, [`MmioSmmu`].

use crate::mm::MemRange;

use super::regs::REGS_SIZE;

/// Register accesses, memory shared with the SMMU, and ordering.
pub trait SmmuIo {
    /// 32-bit register read at `offset` from the register base (page 1 is `0x1_0000` up).
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
    /// 64-bit register access (the `*_BASE` registers).
    fn read64(&self, offset: u32) -> u64;
    fn write64(&self, offset: u32, value: u64);
    /// A single-copy-atomic 64-bit write to memory the SMMU reads (STEs, L1 descriptors,
    /// commands), at its physical address (warden's memory is identity-mapped).
    fn mem_write64(&self, pa: u64, value: u64);
    /// A 64-bit read of memory the SMMU writes (event records) or warden wrote.
    fn mem_read64(&self, pa: u64) -> u64;
    /// Orders every earlier memory and register access before every later one, as seen by the
    /// SMMU (`DSB SY`): used between filling a structure and publishing it.
    fn barrier(&self);
}

/// A shared reference drives the same SMMU (lets tests keep the fake after handing it over).
impl<T: SmmuIo + ?Sized> SmmuIo for &T {
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
    fn mem_write64(&self, pa: u64, value: u64) {
        (**self).mem_write64(pa, value)
    }
    fn mem_read64(&self, pa: u64) -> u64 {
        (**self).mem_read64(pa)
    }
    fn barrier(&self) {
        (**self).barrier()
    }
}

/// The real SMMU: volatile accesses to its register frames, which warden's EL2 stage-1 maps as
/// Device-nGnRE (and the host's stage-2 leaves unmapped).
#[derive(Debug)]
pub struct MmioSmmu {
    base: u64,
}

/// The SMMU's DT `reg` is smaller than the two 64 KiB register pages the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegsTooSmall(pub MemRange);

impl core::fmt::Display for RegsTooSmall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SMMU registers {} are not two 64 KiB-aligned 64 KiB pages", self.0)
    }
}

impl MmioSmmu {
    /// # Safety
    /// `regs` is an SMMUv3's register frames, identity-mapped as device memory at EL2 for as
    /// long as the value lives, and nothing else drives this SMMU.
    pub unsafe fn new(regs: MemRange) -> Result<Self, RegsTooSmall> {
        if regs.size() < REGS_SIZE || !regs.start.is_multiple_of(REGS_SIZE / 2) {
            return Err(RegsTooSmall(regs));
        }
        Ok(Self { base: regs.start })
    }

    fn reg(&self, offset: u32) -> u64 {
        // Offsets are the driver's constants, all below REGS_SIZE (checked in `new`).
        debug_assert!(u64::from(offset) < REGS_SIZE);
        self.base + u64::from(offset)
    }
}

impl SmmuIo for MmioSmmu {
    fn read32(&self, offset: u32) -> u32 {
        // SAFETY: inside the register frames `new`'s contract makes mapped and ours.
        unsafe { core::ptr::read_volatile(self.reg(offset) as *const u32) }
    }
    fn write32(&self, offset: u32, value: u32) {
        // SAFETY: as in read32.
        unsafe { core::ptr::write_volatile(self.reg(offset) as *mut u32, value) }
    }
    fn read64(&self, offset: u32) -> u64 {
        // SAFETY: as in read32; the 64-bit registers are 8-byte aligned.
        unsafe { core::ptr::read_volatile(self.reg(offset) as *const u64) }
    }
    fn write64(&self, offset: u32, value: u64) {
        // SAFETY: as in read64.
        unsafe { core::ptr::write_volatile(self.reg(offset) as *mut u64, value) }
    }
    fn mem_write64(&self, pa: u64, value: u64) {
        // SAFETY: the driver only passes addresses inside the frames it allocated for the
        // stream table and queues (warden memory, identity-mapped RW, 8-byte aligned).
        unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
    }
    fn mem_read64(&self, pa: u64) -> u64 {
        // SAFETY: as in mem_write64.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }
    fn barrier(&self) {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a barrier has no memory-safety effect.
        unsafe {
            core::arch::asm!("dsb sy", options(nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "aarch64"))]
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}
