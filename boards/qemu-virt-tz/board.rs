//! QEMU `virt` under tz-sim (`boards/qemu-virt/tz-sim`): warden as a real boot stage.
//!
//! `-machine virt,secure=on,virtualization=on,iommu=smmuv3 -bios tz-sim.bin` with warden's
//! `warden-hyp.bin` loaded at [`HYP_BASE`] (`-device loader`). tz-sim enters warden there at EL2
//! on every CPU power-up (the hyp entry convention, `docs/tz-sim.md`); the boot CPU's x0 is the
//! next stage at `NEXT_STAGE` (U-Boot, or the test guest). The machine is QEMU virt: the same
//! pieces as `qemu-virt` but the entry convention and the firmware below.

use crate::boards::{
    Board, EntryConvention, Firmware, Iommu, RamSource, UartKind, ViolationPolicy,
};
use crate::gic::GicVersion;

/// Where tz-sim enters the hyp image (`tz_sim::layout::HYP_BASE`, a fixed fact of the chain).
pub const HYP_BASE: u64 = 0x7e00_0000;
/// warden's region: 32 MiB from `HYP_BASE` (the top 32 MiB of the first GiB of RAM). The OS's
/// DT reserves it `no-map`; the board's carveouts go at the top of RAM (`carveouts::for_ram`).
pub const HYP_REGION_SIZE: u64 = 32 << 20;

pub const BOARD: Board = Board {
    name: "qemu-virt-tz",
    entry: EntryConvention::Hyp { base: HYP_BASE, region_size: HYP_REGION_SIZE, rpm_release: None },
    // The chain's DT is made from QEMU's, whose `/memory` is real.
    ram_source: RamSource::Dt,
    early_uart: 0x0900_0000,
    console: UartKind::Pl011,
    iommu: Iommu::SmmuV3,
    named_regions: &[],
    // tz-sim: SMCCC (unknown calls answer NOT_SUPPORTED) and Qualcomm's SCM.
    firmware: Firmware::Smccc,
    violation_policy: ViolationPolicy::Contain,
    // The peer's CPU would have to be in the OS's DT for warden to find it and out of it for
    // the host not to: not with a DT warden does not patch (docs/architecture.md).
    sim_peer: false,
    control_page: Some(0x090c_0000),
    scm_firmware: true,
    interrupt_controllers: &[GicVersion::V3, GicVersion::V2],
    max_cpus: 16,
};
