//! QEMU `virt` (QEMU >= 10.0) with `virtualization=on`, GICv3 or GICv2 and `iommu=smmuv3`.
//!
//! Memory, devices, CPUs and the SMMU all come from the DT QEMU generates; see
//! `boards/qemu-virt/README.md` for the facts this board relies on.

use crate::boards::{
    Board, EntryConvention, Firmware, Iommu, RamSource, UartKind, ViolationPolicy,
};
use crate::gic::GicVersion;

pub const BOARD: Board = Board {
    name: "qemu-virt",
    // QEMU `-kernel` loads the packed image like a Linux kernel, with the DT in x0.
    entry: EntryConvention::LinuxImage,
    // QEMU's DT has the real `/memory` (QEMU has no SMEM).
    ram_source: RamSource::Dt,
    // virt's first PL011; also what the DT's stdout-path names.
    early_uart: 0x0900_0000,
    console: UartKind::Pl011,
    iommu: Iommu::SmmuV3,
    named_regions: &[],
    // No EL3 image: QEMU's built-in PSCI answers SMCs from EL2 (conduit "smc").
    firmware: Firmware::QemuBuiltinPsci,
    violation_policy: ViolationPolicy::Contain,
    // QEMU runs with one CPU more than the host gets (`-smp 3` for 2 host CPUs).
    sim_peer: true,
    // A hole in virt's memory map: after the secure GPIO (0x090b_0000), before virtio-mmio
    // (0x0a00_0000).
    control_page: Some(0x090c_0000),
    scm_firmware: false,
    // `-machine virt,gic-version=3` (the default here) or `gic-version=2` (as on DB410c).
    interrupt_controllers: &[GicVersion::V3, GicVersion::V2],
    // virt takes up to 512 CPUs with a GICv3 (8 with a GICv2); 16 covers the 12-core
    // Snapdragon X1E the boards issue targets, plus room, at 136 KiB of BSS per CPU.
    max_cpus: 16,
};
