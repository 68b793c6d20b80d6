//! Qualcomm RB5 (QRB5165, SM8250): Linux's `qcom/qrb5165-rb5.dtb`.
//!
//! warden replaces the stock image in the `hyp` partition and runs in place in `hyp_mem`
//! (`EntryConvention::Hyp`). GENI debug UART, GICv3 (no ITS node), MMU-500 apps SMMU,
//! TrustZone with SCM below. See README.md.

use crate::boards::{
    Board, EntryConvention, Firmware, Iommu, NamedRegion, RamSource, UartKind, ViolationPolicy,
};
use crate::dt::PeerId;
use crate::gic::GicVersion;
use crate::mm::MemRange;

/// `hyp_mem` (`/reserved-memory/memory@80000000`, 6 MiB, `no-map`): where the stock hyp image
/// lives and TrustZone enters it.
pub const HYP_BASE: u64 = 0x8000_0000;
pub const HYP_REGION_SIZE: u64 = 6 << 20;

/// SMEM: `smem_mem` (`/reserved-memory/memory@80900000`, 2 MiB, `no-map`; `qcom,smem`'s
/// `memory-region`).
pub const SMEM: MemRange = MemRange::new(0x8090_0000, 0x80b0_0000);

/// sm8250's `/reserved-memory` children are all `memory@...`: the names are `sm8250.dtsi`'s
/// labels. The three remote processors' (`memory-region` of `qcom,sm8250-{adsp,cdsp,slpi}-pas`,
/// checked against the DT by `boards::tests`) are carveouts; the rest are named for the log.
pub const NAMED_REGIONS: [NamedRegion; 8] = [
    NamedRegion { base: 0x8000_0000, name: "hyp_mem", peer: None },
    NamedRegion { base: 0x8090_0000, name: "smem_mem", peer: None },
    NamedRegion { base: 0x8681_a000, name: "gpu_mem", peer: None },
    NamedRegion { base: 0x86e0_0000, name: "video_mem", peer: None },
    NamedRegion { base: 0x8780_0000, name: "cdsp_mem", peer: Some(PeerId::DSP) },
    NamedRegion { base: 0x88c0_0000, name: "slpi_mem", peer: Some(PeerId::DSP) },
    NamedRegion { base: 0x8a10_0000, name: "adsp_mem", peer: Some(PeerId::DSP) },
    NamedRegion { base: 0x8bf0_0000, name: "cdsp_secure_heap", peer: None },
];

pub const BOARD: Board = Board {
    name: "qrb5165-rb5",
    entry: EntryConvention::Hyp { base: HYP_BASE, region_size: HYP_REGION_SIZE, rpm_release: None },
    // ABL fills `/memory` after warden: SMEM's table, where XBL wrote it (docs/boards/ram.md).
    ram_source: RamSource::QcomSmem { smem: SMEM },
    // `/soc@0/geniqup@ac0000/serial@a90000`, the DT's `stdout-path`.
    early_uart: 0x00a9_0000,
    console: UartKind::QcomGeniDebug,
    iommu: Iommu::ArmMmu500,
    named_regions: &NAMED_REGIONS,
    firmware: Firmware::Smccc,
    violation_policy: ViolationPolicy::Contain,
    sim_peer: false,
    control_page: None,
    scm_firmware: true,
    interrupt_controllers: &[GicVersion::V3],
    // 1 x A77 + 3 x A77 + 4 x A55.
    max_cpus: 8,
};
