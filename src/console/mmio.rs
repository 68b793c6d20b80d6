//! 32-bit register access by byte offset: volatile MMIO on hardware, register models in tests.
//!
//! The register *layouts* are `tock-registers` `register_structs!` (offsets checked at compile
//! time) and their fields `register_bitfields!`; the drivers reach the registers through this
//! trait (offsets taken with `offset_of!` from those layouts) rather than through a `&` to the
//! struct, so a test can stand a model with behaviour (FIFOs that drain, commands that finish)
//! behind the same driver code.

/// A device's 32-bit registers.
pub trait Regs32 {
    fn read(&self, offset: usize) -> u32;
    fn write(&self, offset: usize, value: u32);
}

/// A borrowed device is the device (the tests drive a model through a reference and then look
/// at what it recorded).
impl<T: Regs32 + ?Sized> Regs32 for &T {
    fn read(&self, offset: usize) -> u32 {
        (**self).read(offset)
    }
    fn write(&self, offset: usize, value: u32) {
        (**self).write(offset, value)
    }
}

/// The registers at a fixed physical (identity-mapped) address.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// # Safety
    /// `base` must be the device's register block, mapped as device memory (or the MMU off),
    /// covering every offset the driver using it touches.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }
}

impl Regs32 for Mmio {
    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: an aligned register of the mapped block.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: `new`'s contract: an aligned register of the mapped block.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

/// Upper bound on polling one condition, so a wedged or clock-gated UART cannot hang warden.
pub const SPIN_LIMIT: u32 = 1_000_000;

/// Polls `done` up to [`SPIN_LIMIT`] times; whether it became true.
pub fn poll(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Why a console write gave up (the bytes not yet queued are dropped: a lost line beats a hung
/// CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// Someone else's transfer (the host's driver) did not finish in time; warden did not
    /// touch the engine.
    Busy,
    /// The engine stopped taking data mid-transfer.
    Stalled,
}
