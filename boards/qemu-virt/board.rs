//! QEMU `virt` (QEMU >= 10.0) with `virtualization=on`, GICv3 and `iommu=smmuv3`.
//!
//! Memory, devices, CPUs and the SMMU all come from the DT QEMU generates; see
//! `boards/qemu-virt/README.md` for the facts this board relies on.

use crate::boards::{Board, Firmware, ViolationPolicy};

pub const BOARD: Board = Board {
    name: "qemu-virt",
    // virt's first PL011; also what the DT's stdout-path names.
    early_uart: 0x0900_0000,
    // No EL3 image: QEMU's built-in PSCI answers SMCs from EL2 (conduit "smc").
    firmware: Firmware::QemuBuiltinPsci,
    violation_policy: ViolationPolicy::Contain,
};
