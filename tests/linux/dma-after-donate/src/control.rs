//! warden's control page (`warden_abi::control`, docs/abi.md "Control page") mapped from
//! `/dev/mem`: warden's calls made with plain 64-bit loads and stores, as busybox `devmem`
//! makes them for the shell scripts. The page is absent from the host's stage 2, so each access
//! traps to warden, which decodes it from the syndrome: every access here is one
//! single-register `LDR`/`STR` of a 64-bit register with no writeback (ESR_EL2.ISV = 1), issued
//! with inline assembly so the compiler cannot pair or split it.

use core::arch::asm;

use warden_abi::control::{self, MAGIC, REG_CALL, REG_MAGIC};

use crate::sys::{Errno, Fd, MAP_SHARED, Mapping, O_RDWR, O_SYNC, PROT_READ, PROT_WRITE};

/// The mapped page.
#[derive(Debug)]
pub struct ControlPage {
    page: Mapping,
}

/// Why the page cannot be used.
#[derive(Clone, Copy, Debug)]
pub enum ControlError {
    Sys(&'static str, Errno),
    BadMagic(u64),
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sys(what, e) => write!(f, "{what}: {e}"),
            Self::BadMagic(v) => {
                write!(f, "MAGIC reads {v:#x}, not warden's {MAGIC:#x} in the low word")
            }
        }
    }
}

/// Maps `size` bytes of physical memory at `phys` (page aligned) from `/dev/mem`, uncached.
pub fn map_physical(phys: u64, size: usize) -> Result<Mapping, Errno> {
    let mem = Fd::open(c"/dev/mem", O_RDWR | O_SYNC)?;
    // The mapping stays valid after the descriptor is closed.
    Mapping::new(size, PROT_READ | PROT_WRITE, MAP_SHARED, Some(&mem), phys)
}

impl ControlPage {
    pub fn open(phys: u64) -> Result<Self, ControlError> {
        let page = map_physical(phys, control::SIZE as usize)
            .map_err(|e| ControlError::Sys("mmap of the control page through /dev/mem", e))?;
        let cp = Self { page };
        let magic = cp.read(REG_MAGIC);
        if magic as u32 != MAGIC {
            return Err(ControlError::BadMagic(magic));
        }
        Ok(cp)
    }

    fn reg(&self, offset: u64) -> *mut u64 {
        // In bounds: every offset used is a register of the 4 KiB page.
        self.page.base().wrapping_add(offset as usize).cast::<u64>()
    }

    fn read(&self, offset: u64) -> u64 {
        let value: u64;
        // SAFETY: an aligned 64-bit load from the mapped control page (warden emulates it).
        unsafe {
            asm!("ldr {v}, [{p}]", v = out(reg) value, p = in(reg) self.reg(offset), options(nostack))
        };
        value
    }

    fn write(&self, offset: u64, value: u64) {
        // SAFETY: an aligned 64-bit store to the mapped control page (warden emulates it).
        unsafe {
            asm!("str {v}, [{p}]", v = in(reg) value, p = in(reg) self.reg(offset), options(nostack))
        };
    }

    /// Makes the call `regs[0]` with `x1..x7 = regs[1..]` and returns `x0..x7`.
    pub fn call(&self, regs: [u64; 8]) -> [u64; 8] {
        for (n, &value) in regs.iter().enumerate().skip(1) {
            self.write(control::arg(n), value);
        }
        self.write(REG_CALL, regs[0]);
        core::array::from_fn(|n| self.read(control::ret(n)))
    }
}
