//! Which DT devices the host is given: no device that can write memory unless something
//! confines it.
//!
//! A device that masters memory (DMA) reaches physical memory directly unless an IOMMU
//! translates its accesses; warden's stage 2 does not apply to it. So every node with a `reg`
//! is classified:
//! - **kept, behind warden's SMMU**: a PCIe host bridge whose `iommu-map` sends every
//!   requester ID of its bus range to the SMMU warden drives, or a device whose `iommus`
//!   entries all name that SMMU — the first SMMUv3, or on a Snapdragon board the apps MMU-500
//!   (`#iommu-cells` 1 or 2) — (its DMA is translated by warden's stage 2, stray stream IDs
//!   abort or fault);
//! - **kept, trapped**: the GICv3 and its ITSes, whose memory-writing registers warden
//!   emulates (`crate::gic`), and GICv2 / GICv2m, which have none (a GICv2's virtualization
//!   frames, GICH and GICV, are cut: `parse`);
//! - **kept, known not to master memory**: the compatibles in [`NON_DMA_COMPATIBLES`]
//!   (UART, RTC, GPIO, NOR flash, watchdogs, syscon, memory-mapped timer, warden's own
//!   control page);
//! - **withheld**, everything else: removed from the host's DT and left out of its stage 2,
//!   each logged by name at boot. Known DMA masters get a precise reason: QEMU's fw_cfg (its
//!   DMA interface writes wherever its descriptor says), virtio-mmio transports (DMA
//!   untranslated), QEMU's dynamic sysbus (`qemu,platform`: whatever is plugged there is not
//!   behind an SMMU), a PCIe host bridge not wholly behind warden's SMMU, a device behind
//!   another IOMMU; any other kind is withheld as unknown (default-deny: a board adds a kind
//!   to the list once it is known not to master memory).
//!
//! Nodes without `reg` (PSCI, timers, PMU, `gpio-keys`, clocks) have no MMIO to map and stay.
//! A withheld node's subtree goes with it. A page shared by a kept and a withheld device is
//! left out: the withheld device wins (tested in `dt::tests`).

use arrayvec::ArrayString;
use core::fmt;

use super::blob::{Node, be32};

/// Device kinds that never master memory, kept without an IOMMU.
pub const NON_DMA_COMPATIBLES: [&str; 21] = [
    // PL011 UART (and SBSA's generic UART): registers only.
    "arm,pl011",
    "arm,sbsa-uart",
    // PL031 / PL030 RTC.
    "arm,pl031",
    "arm,pl030",
    // PL061 GPIO (QEMU virt's power button).
    "arm,pl061",
    // CFI / memory-mapped NOR flash (QEMU virt's pflash): a memory the CPU reads, no master.
    "cfi-flash",
    // Interrupt controllers: GICv2 / GICv2m hold no memory tables; GICv3 and its ITS do, and
    // warden traps those registers (crate::gic).
    "arm,gic-v3",
    "arm,gic-v3-its",
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
    "qcom,msm-qgic2",
    "arm,gic-v2m-frame",
    // Watchdogs.
    "arm,sbsa-gwdt",
    "arm,sp805",
    // Memory-mapped generic timer frames.
    "arm,armv7-timer-mem",
    // System controller register blocks and the power-off / reboot drivers built on them.
    "syscon",
    "syscon-poweroff",
    "syscon-reboot",
    // warden's own control page, in a DT made for a boot-stage warden (which parses the OS's
    // DT): no device behind it, and every access to it traps (a hole in the host's stage 2).
    warden_abi::control::COMPATIBLE,
];

/// Why a device is withheld from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// `qemu,fw-cfg-mmio`: its DMA interface writes guest-physical memory.
    FwCfgDma,
    /// `virtio,mmio`: a virtio transport whose device DMAs untranslated.
    VirtioMmio,
    /// `qemu,platform`: QEMU's dynamic sysbus; devices plugged there are not behind an SMMU.
    DynamicSysbus,
    /// A PCIe host bridge some of whose requester IDs do not go to warden's SMMU.
    PcieOutsideSmmu,
    /// `iommus` names an IOMMU warden does not drive.
    OtherIommu,
    /// A kind not known to be free of DMA (its first compatible, or its name).
    Unknown(ArrayString<32>),
    /// `status` is not "okay" for a GIC part warden would have to trap.
    DisabledGic,
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::FwCfgDma => f.write_str(
                "QEMU fw_cfg: its DMA interface writes wherever its descriptor says, no SMMU in the path",
            ),
            Withheld::VirtioMmio => {
                f.write_str("virtio-mmio transport: its device DMAs untranslated (not behind an SMMU)")
            }
            Withheld::DynamicSysbus => f.write_str(
                "QEMU dynamic sysbus: devices plugged into it are not behind an SMMU",
            ),
            Withheld::PcieOutsideSmmu => f.write_str(
                "PCIe host bridge whose iommu-map does not send every requester ID to warden's SMMU",
            ),
            Withheld::OtherIommu => f.write_str("behind an IOMMU warden does not drive"),
            Withheld::Unknown(kind) => write!(
                f,
                "`{kind}` is not a device kind known not to master memory (dt::policy)"
            ),
            Withheld::DisabledGic => {
                f.write_str("a disabled GIC part: warden neither traps nor maps it")
            }
        }
    }
}

/// The verdict on one node with MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    Withhold(Withheld),
}

/// Classifies a non-PCIe node with `reg`. `warden_iommu`: the phandle and `#iommu-cells` of
/// the IOMMU warden drives (the first SMMUv3, cells 1; else the apps MMU-500), if any.
pub(super) fn classify(
    node: &Node<'_>,
    warden_iommu: Option<(u32, u32)>,
    available: bool,
) -> Verdict {
    if node.is_compatible("qemu,fw-cfg-mmio") {
        return Verdict::Withhold(Withheld::FwCfgDma);
    }
    if node.is_compatible("virtio,mmio") {
        return Verdict::Withhold(Withheld::VirtioMmio);
    }
    if node.is_compatible("qemu,platform") {
        return Verdict::Withhold(Withheld::DynamicSysbus);
    }
    let gic_trapped = node.is_compatible("arm,gic-v3") || node.is_compatible("arm,gic-v3-its");
    if gic_trapped && !available {
        return Verdict::Withhold(Withheld::DisabledGic);
    }
    if NON_DMA_COMPATIBLES.iter().any(|c| node.is_compatible(c)) {
        return Verdict::Keep;
    }
    if let Some(iommus) = node.prop("iommus") {
        // Specifiers are <phandle cells...>: <phandle stream-id> on an SMMUv3, <phandle id
        // mask> on an MMU-500 with #iommu-cells = <2>. Every one must name warden's IOMMU.
        let all_warden = warden_iommu.is_some_and(|(phandle, cells)| {
            let width = 4 * (1 + cells as usize);
            !iommus.is_empty()
                && iommus.len().is_multiple_of(width)
                && (0..iommus.len() / width).all(|i| be32(iommus, i * width) == Some(phandle))
        });
        return if all_warden { Verdict::Keep } else { Verdict::Withhold(Withheld::OtherIommu) };
    }
    Verdict::Withhold(Withheld::Unknown(kind_of(node)))
}

/// A node's first compatible (or its name), cut to fit.
fn kind_of(node: &Node<'_>) -> ArrayString<32> {
    let text = node
        .prop("compatible")
        .and_then(|c| c.split(|&b| b == 0).next())
        .and_then(|c| core::str::from_utf8(c).ok())
        .filter(|c| !c.is_empty())
        .unwrap_or(node.name);
    let mut out = ArrayString::new();
    for ch in text.chars() {
        if out.try_push(ch).is_err() {
            break;
        }
    }
    out
}

/// Whether requester IDs `[first, end)` all go to `smmu` through `map` (rid_base, phandle,
/// length entries).
pub(super) fn rids_covered(
    map: impl Iterator<Item = (u32, u32, u32)> + Clone,
    smmu: u32,
    first: u32,
    end: u32,
) -> bool {
    // Every entry must name warden's SMMU, and the entries must leave no hole in the range.
    if map.clone().any(|(_, phandle, _)| phandle != smmu) {
        return false;
    }
    let mut cursor = first;
    // At most one pass per entry moves the cursor; entries may come in any order.
    for _ in 0..map.clone().count() + 1 {
        if cursor >= end {
            return true;
        }
        let next = map
            .clone()
            .filter(|&(base, _, len)| base <= cursor && cursor < base.saturating_add(len))
            .map(|(base, _, len)| base.saturating_add(len))
            .max();
        match next {
            Some(n) => cursor = n,
            None => return false,
        }
    }
    cursor >= end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_coverage() {
        let smmu = 0x8005;
        let one = [(0, smmu, 0x1_0000)];
        assert!(rids_covered(one.iter().copied(), smmu, 0, 0x1_0000));
        let split = [(0x100, smmu, 0xff00), (0, smmu, 0x100)];
        assert!(rids_covered(split.iter().copied(), smmu, 0, 0x1_0000));
        let hole = [(0, smmu, 0x100), (0x200, smmu, 0xfe00)];
        assert!(!rids_covered(hole.iter().copied(), smmu, 0, 0x1_0000));
        assert!(rids_covered(hole.iter().copied(), smmu, 0, 0x100), "bus 0 only");
        let other = [(0, smmu, 0x8000), (0x8000, 0x1234, 0x8000)];
        assert!(!rids_covered(other.iter().copied(), smmu, 0, 0x100));
        assert!(!rids_covered(core::iter::empty(), smmu, 0, 0x100));
    }
}
