//! Qualcomm RB3 Gen 2 (QCS6490, SC7280 family): Linux's `qcom/qcs6490-rb3gen2.dtb`.
//!
//! warden is a test-signed ELF in `uefi_a`, loaded at [`LOAD_BASE`] and started at EL1 under
//! Gunyah; the Gunyah-exit SMC continues it at EL2 (`EntryConvention::UefiUnderGunyah`). GENI
//! debug UART, GICv3 with an ITS, MMU-500 apps SMMU, TrustZone with SCM below. See README.md.

use crate::boards::{
    Board, EntryConvention, Firmware, Iommu, RamSource, UartKind, ViolationPolicy,
};
use crate::gic::GicVersion;
use crate::mm::MemRange;

/// Where the UEFI loader puts the `uefi_a` image (the address U-Boot's RB3 Gen 2 notes use).
pub const LOAD_BASE: u64 = 0x9fc0_0000;
/// warden's region: 4 MiB from [`LOAD_BASE`], free RAM in the board's DT (between the
/// `mpss` carveout's end at 0x9ae0_0000 and 0xc000_0000). The OS's DT must reserve it `no-map`
/// (the boot-stage check refuses to start otherwise).
pub const REGION_SIZE: u64 = 4 << 20;

/// SMEM: `/reserved-memory/smem@80900000` (2 MiB, `no-map`; `/smem`'s `memory-region`).
pub const SMEM: MemRange = MemRange::new(0x8090_0000, 0x80b0_0000);

pub const BOARD: Board = Board {
    name: "qcs6490-rb3gen2",
    entry: EntryConvention::UefiUnderGunyah { base: LOAD_BASE, region_size: REGION_SIZE },
    // UEFI fills `/memory` only in the DT it hands Linux: SMEM's table (docs/boards/ram.md).
    ram_source: RamSource::QcomSmem { smem: SMEM },
    // `/soc@0/geniqup@9c0000/serial@994000`, the DT's `stdout-path`.
    early_uart: 0x0099_4000,
    console: UartKind::QcomGeniDebug,
    iommu: Iommu::ArmMmu500,
    // Every carveout has a meaningful node name (`mpss@`, `adsp@`, `cdsp@`, `wpss@`).
    named_regions: &[],
    firmware: Firmware::Smccc,
    violation_policy: ViolationPolicy::Contain,
    sim_peer: false,
    // No page the DT gives to no device has been picked yet.
    control_page: None,
    scm_firmware: true,
    interrupt_controllers: &[GicVersion::V3],
    // 1 x A78 + 3 x A78 + 4 x A55.
    max_cpus: 8,
};
