//! DragonBoard 410c (APQ8016, MSM8916): Linux's `qcom/apq8016-sbc.dtb`.
//!
//! warden replaces the `hyp` partition (firmware secure boot is off on the DB410c) and runs in
//! place in `hypervisor@86400000` (1 MiB, `no-map`): TrustZone enters it at EL2 on first boot
//! and on every CPU power-up (`EntryConvention::Hyp`, the convention msm8916-mainline's
//! qhypstub documents). UARTDM v1.4, GICv2 (`qcom,msm-qgic2`), `qcom,msm-iommu-v1`, TrustZone
//! with SCM below. See README.md.

use crate::boards::{
    Board, EntryConvention, Firmware, Iommu, RamSource, UartKind, ViolationPolicy,
};
use crate::boot_stage::qcom_hyp::MSM8916_RPM_RELEASE;
use crate::gic::GicVersion;
use crate::mm::MemRange;

/// `/reserved-memory/hypervisor@86400000`.
pub const HYP_BASE: u64 = 0x8640_0000;
pub const HYP_REGION_SIZE: u64 = 1 << 20;

/// SMEM: `/reserved-memory/smem@86300000` (1 MiB, `no-map`, `qcom,smem`).
pub const SMEM: MemRange = MemRange::new(0x8630_0000, 0x8640_0000);

pub const BOARD: Board = Board {
    name: "apq8016-sbc",
    // The hyp image takes the RPM out of reset at first boot (qhypstub; warden does it too).
    entry: EntryConvention::Hyp {
        base: HYP_BASE,
        region_size: HYP_REGION_SIZE,
        rpm_release: Some(MSM8916_RPM_RELEASE),
    },
    // LK fills `/memory` after warden: SMEM's table, where SBL1 wrote it (docs/boards/ram.md).
    ram_source: RamSource::QcomSmem { smem: SMEM },
    // `/soc@0/serial@78b0000` (BLSP1 UART2, the low-speed expansion header), `serial0`.
    early_uart: 0x078b_0000,
    console: UartKind::QcomUartdm,
    iommu: Iommu::QcomMsmIommuV1,
    // `mpss@86800000` is named in the DT; `wcnss`, `venus` and `mba` are allocated by Linux
    // (no `reg`): not carveouts warden can know at boot.
    named_regions: &[],
    firmware: Firmware::Smccc,
    violation_policy: ViolationPolicy::Contain,
    sim_peer: false,
    control_page: None,
    scm_firmware: true,
    interrupt_controllers: &[GicVersion::V2],
    // 4 x A53.
    max_cpus: 4,
};
