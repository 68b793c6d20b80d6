//! The machine as the SCM calls see it at EL3: non-secure RAM read by physical address (MMU
//! off: every access is Device-nGnRnE, so reads are aligned volatile loads), the calling CPU's
//! EL2 translation registers and the SMMU's non-secure registers for the XPU witness, and the
//! console.
//!
//! Where RAM and the SMMU are is read once at boot from the DT QEMU leaves at the base of RAM
//! for a `-bios` boot (`layout::BOOT_DT`), with the `fdt` crate. No DT there: no RAM is known,
//! and every SCM call naming memory is refused (EINVAL_ADDR).
//!
//! Caches: tz-sim's reads do not look in the caches (MMU off). On QEMU, which models none,
//! that is coherent with what EL2 and EL1 wrote through cacheable mappings; a TZ on hardware
//! would have to clean or map the tables cacheable first.

use core::arch::asm;
use core::fmt;

use tz_sim::layout::{BOOT_DT, BOOT_DT_MAX};
use tz_sim::mem::{OutsideRam, PhysMem, RamMap};
use tz_sim::scm::Platform;
use tz_sim::witness::{self, Hardware, SmmuRegs, Violation};

use crate::uart;

/// What the boot CPU learnt from the DT.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    pub ram: RamMap,
    /// The SMMUv3's register frame (its non-secure page 0), if the board has one.
    pub smmu: Option<u64>,
}

impl Board {
    /// Reads the DT at `BOOT_DT`.
    pub fn from_boot_dt() -> Self {
        let mut board = Board { ram: RamMap::empty(), smmu: None };
        // SAFETY: BOOT_DT is the base of RAM, which QEMU's virt board always has (at least
        // 128 MiB, more than BOOT_DT_MAX); nothing else runs while the boot CPU reads it.
        let header = unsafe { core::ptr::read_volatile(BOOT_DT as *const [u32; 2]) };
        let (magic, size) = (u32::from_be(header[0]), u32::from_be(header[1]) as usize);
        if magic != 0xd00d_feed || size > BOOT_DT_MAX {
            return board;
        }
        // SAFETY: as above; the slice lies inside RAM and nobody writes it during the parse.
        let bytes = unsafe { core::slice::from_raw_parts(BOOT_DT as *const u8, size) };
        let Ok(dt) = fdt::Fdt::new(bytes) else { return board };
        // Not `Fdt::memory()`: it panics without a `/memory` node, and fdt 0.1.5's path lookup
        // stops at FDT_NOP tokens between the root's properties and its first child, which QEMU
        // leaves when it replaces a `-dtb` file's memory node. Every enabled node of
        // device_type "memory" is RAM (QEMU's secure SRAM is one, disabled for the normal world).
        let is_ram = |n: &fdt::node::FdtNode<'_, '_>| {
            let prop = |name: &str| n.property(name).and_then(|p| p.as_str());
            prop("device_type") == Some("memory") && matches!(prop("status"), None | Some("okay"))
        };
        for node in dt.all_nodes().filter(is_ram) {
            for region in node.reg().into_iter().flatten() {
                board.ram.add(region.starting_address as u64, region.size.unwrap_or(0) as u64);
            }
        }
        board.smmu = dt
            .find_compatible(&["arm,smmu-v3"])
            .and_then(|n| n.reg())
            .and_then(|mut r| r.next())
            .map(|r| r.starting_address as u64);
        board
    }

    fn smmu_regs(&self) -> Option<SmmuRegs> {
        let base = self.smmu?;
        // SAFETY: the SMMU's register frame as the DT gives it; these registers have no read
        // side effects.
        let r32 = |off: u64| unsafe { core::ptr::read_volatile((base + off) as *const u32) };
        // SAFETY: as above (STRTAB_BASE is a 64-bit register).
        let r64 = |off: u64| unsafe { core::ptr::read_volatile((base + off) as *const u64) };
        Some(SmmuRegs {
            idr1: r32(0x04),
            cr0ack: r32(0x24),
            gbpa: r32(0x44),
            strtab_base: r64(0x80),
            strtab_base_cfg: r32(0x88),
        })
    }
}

macro_rules! read_sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an EL2 register from EL3 has no side effects.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

impl PhysMem for Board {
    fn ram(&self) -> &RamMap {
        &self.ram
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        if !self.ram.contains(pa, buf.len() as u64) {
            return Err(OutsideRam(pa));
        }
        if pa.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
                // SAFETY: inside non-secure RAM (checked above), 8-byte aligned.
                let w = unsafe { core::ptr::read_volatile((pa + 8 * i as u64) as *const u64) };
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        } else {
            for (i, b) in buf.iter_mut().enumerate() {
                // SAFETY: inside non-secure RAM (checked above); byte loads are always aligned.
                *b = unsafe { core::ptr::read_volatile((pa + i as u64) as *const u8) };
            }
        }
        Ok(())
    }
}

impl Platform for Board {
    fn witness(&self, base: u64, end: u64) -> Result<(), Violation> {
        let hw = Hardware {
            hcr: read_sysreg!("hcr_el2"),
            vtcr: read_sysreg!("vtcr_el2"),
            vttbr: read_sysreg!("vttbr_el2"),
            smmu: self.smmu_regs(),
        };
        witness::check(&hw, self, base, end)
    }

    fn log(&self, args: fmt::Arguments<'_>) {
        uart::print(args);
    }
}
