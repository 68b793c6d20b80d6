//! QEMU `virt` as tz-sim sees it (QEMU >= 10.0, `secure=on,virtualization=on`), and where the
//! stages of the chain go. tz-sim reads no DT: like a vendor TZ it is built for one board.

/// `-bios` lands in the secure flash at 0, where every CPU starts at EL3. tz-sim runs from
/// there (read-only: it has no `.data`).
pub const FLASH_BASE: u64 = 0;
/// The secure SRAM (`secram@e000000`, 16 MiB), where tz-sim keeps its BSS and stacks.
pub const SECURE_SRAM: u64 = 0x0e00_0000;
pub const SECURE_SRAM_SIZE: u64 = 0x0100_0000;
/// The non-secure console (`pl011@9000000`), shared with the later stages.
pub const UART: u64 = 0x0900_0000;
/// The secure PL061 (`pl061@90b0000`) and its pins: 0 drives `gpio-poweroff`, 1
/// `gpio-restart`.
pub const SECURE_GPIO: u64 = 0x090b_0000;
pub const GPIO_POWEROFF_PIN: u32 = 0;
pub const GPIO_RESTART_PIN: u32 = 1;

/// GIC distributor (both versions).
pub const GICD: u64 = 0x0800_0000;
/// GICv2 CPU interface.
pub const GICC: u64 = 0x0801_0000;
/// GICv3 redistributors: one 128 KiB pair of frames (RD_base, SGI_base) per CPU.
pub const GICR: u64 = 0x080a_0000;
pub const GICR_FRAME_PAIR: u64 = 0x2_0000;

/// Non-secure RAM starts here; `CPU_ON` entry points must lie in `[RAM_BASE, RAM_LIMIT)`.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The highest address virt's RAM can reach (its 40-bit PA space).
pub const RAM_LIMIT: u64 = 1 << 40;

/// Where the hyp image (warden) is loaded (`-device loader`) and entered, on every CPU: below
/// the top 32 MiB of a 1 GiB machine, after the board's carveouts (0x7c00_0000..0x7e00_0000).
/// The OS's DT must reserve it `no-map`.
pub const HYP_BASE: u64 = 0x7e00_0000;
/// The next stage's entry (the boot CPU's x0 at hyp entry): where the bootloader is loaded,
/// as TF-A's QEMU port loads its BL33.
pub const NEXT_STAGE: u64 = 0x6000_0000;
/// x1 at hyp entry: the next stage runs in AArch64.
pub const HYP_ENTRY_AARCH64: u64 = 2;

/// CPUs tz-sim has a stack and a power state for. QEMU virt numbers CPUs in clusters (Aff1) of
/// up to 16 (Aff0); [`cpu_slot`] folds the two.
pub const MAX_CPUS: usize = 32;
/// Per-CPU EL3 stack (an SCM call copies its lists and a copy of the ownership table there).
pub const STACK_SIZE: usize = 16 * 1024;

/// Where QEMU leaves its DT for a `-bios` boot (the base of RAM); tz-sim reads the RAM and the
/// SMMU's place from it once at boot, as a vendor TZ knows its DDR and its SoC.
pub const BOOT_DT: u64 = RAM_BASE;
/// The largest DT tz-sim reads.
pub const BOOT_DT_MAX: usize = 2 << 20;

/// The slot of the CPU with MPIDR affinity `mpidr` (Aff0 + 16 × Aff1), if tz-sim has one.
pub const fn cpu_slot(mpidr: u64) -> Option<usize> {
    let aff0 = (mpidr & 0xff) as usize;
    let aff1 = ((mpidr >> 8) & 0xff) as usize;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let slot = aff0 + 16 * aff1;
    if aff0 < 16 && aff2 == 0 && aff3 == 0 && slot < MAX_CPUS { Some(slot) } else { None }
}

// The stages do not overlap; the stacks leave room for BSS in the secure SRAM.
const _: () = assert!(RAM_BASE <= NEXT_STAGE && NEXT_STAGE < HYP_BASE);
const _: () = assert!(SECURE_SRAM_SIZE >= (MAX_CPUS * STACK_SIZE) as u64 * 2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_qemu_virt_clusters() {
        assert_eq!(cpu_slot(0), Some(0));
        assert_eq!(cpu_slot(0xb), Some(11));
        assert_eq!(cpu_slot(0x103), Some(19));
        // The MT and U bits of a raw MPIDR_EL1 are not affinity.
        assert_eq!(cpu_slot(0x8000_0000 | 0x0100_0000 | 2), Some(2));
        assert_eq!(cpu_slot(0x10), None);
        assert_eq!(cpu_slot(0x200), None);
        assert_eq!(cpu_slot(0x1_0000), None);
        assert_eq!(cpu_slot(0x1_0000_0000), None);
    }
}
