//! What the host sees of the platform through its DT: the edits warden makes to the DT it was
//! given (packed-image boards: `boot::patch_host_dt`) are the edits `cargo xtask build` makes
//! to QEMU's DT for a boot-stage board (`xtask/src/chain.rs`), so the host gets the same view
//! whether warden patched its DT at boot or the DT was made for it beforehand. Host-compiled
//! and host-tested.

use alloc::vec::Vec;

use crate::dt::{self, DtEdit, PlatformInfo};
use crate::mm::{MemRange, PAGE_SIZE};

/// The MMU-500 face's interrupts as GIC INTIDs: the global one, then one per context bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmu500Irqs {
    pub global: u16,
    pub contexts: [u16; crate::smmu::v2::regs::NUM_CB],
}

/// The SPIs the MMU-500 face uses on QEMU's virt board (free there with a GICv3: the GICv2m
/// range 48..111 is unused without GICv2, the platform bus starts at 112): SPI 100 global,
/// 101..=108 the context banks. The host DT names them (`#global-interrupts = <1>`).
pub const MMU500_FIRST_SPI: u16 = 100;

impl Mmu500Irqs {
    /// A board's apps MMU-500 as its DT gives them: the first global interrupt and the first
    /// [`crate::smmu::v2::regs::NUM_CB`] context interrupts (the face's banks); `None` if the
    /// DT has fewer (Linux's arm-smmu then refuses to probe the node anyway).
    pub fn from_dt(info: &dt::Mmu500Info) -> Option<Self> {
        let contexts = info.context_irqs.get(..crate::smmu::v2::regs::NUM_CB)?;
        Some(Mmu500Irqs { global: info.global_irq?, contexts: contexts.try_into().ok()? })
    }

    pub fn qemu_virt() -> Self {
        let mut contexts = [0; crate::smmu::v2::regs::NUM_CB];
        for (i, c) in contexts.iter_mut().enumerate() {
            *c = 32 + MMU500_FIRST_SPI + 1 + i as u16;
        }
        Mmu500Irqs { global: 32 + MMU500_FIRST_SPI, contexts }
    }
}

/// The rmtfs client ID Linux's `qcom_rmtfs_mem` names its device after (`/dev/qcom_rmtfs_mem1`).
pub const RMTFS_CLIENT_ID: u32 = 1;

/// Everything the host's view depends on besides the platform's own DT.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// warden's region: reserved `no-map` (`/reserved-memory/warden`).
    pub warden: MemRange,
    /// The CPU warden keeps for the simulated peer, removed from `/cpus`.
    pub peer_cpu: Option<u64>,
    /// warden's control page (`warden-control` node), if the board offers one.
    pub control_page: Option<u64>,
    /// The GICv2 (when the boot uses one), whose virtualization frames go.
    pub gicv2: Option<&'a dt::GicV2Info>,
    /// The first SMMU stays (the host drives it through the virtual SMMU).
    pub keep_smmu: bool,
    /// ... as an MMU-500 with these interrupts (the Snapdragon persona).
    pub mmu500: Option<Mmu500Irqs>,
    /// `/firmware/scm` (`qcom,scm`) is added.
    pub scm: bool,
    /// The `/reserved-memory` child made Qualcomm's rmtfs region ([`rmtfs_host_dt`]).
    pub rmtfs: Option<dt::NodeName>,
    /// The redistributors are 256 KiB apart (GICv4) but the host is shown no VLPIS.
    pub vlpi_stride: bool,
}

/// The edits that turn the platform's DT (parsed as `p`) into the host's: warden's memory
/// reserved `no-map`, the devices the DMA policy withholds removed, the peer's CPU removed,
/// the control page added, the SMMUs warden does not emulate and the PCIe `iommu-map`s that
/// point at them removed, the persona's nodes; everything else passed through. The caller
/// adds what belongs to one boot (`/chosen` bootargs and initrd) and applies it.
pub fn host_view(p: &PlatformInfo, v: &HostView<'_>) -> DtEdit {
    let mut edit = DtEdit::new().reserve_no_map("warden", v.warden);
    edit = withhold_in_host_dt(edit, p, v.vlpi_stride);
    if let Some(gic) = v.gicv2 {
        edit = gic.host_view(edit);
    }
    if let Some(mpidr) = v.peer_cpu {
        edit = edit.remove_cpu(mpidr);
    }
    if let Some(range) = v.control_page.and_then(|pa| MemRange::from_base_size(pa, PAGE_SIZE)) {
        edit = edit.add_device("warden-control", warden_abi::control::COMPATIBLE, range);
    }
    // The first SMMU stays when the host drives it through the virtual SMMU; the others
    // (and the first one without a virtual SMMU) are warden's or nobody's.
    let kept = if v.keep_smmu { p.smmu().map(|s| s.phandle) } else { None };
    for (i, smmu) in p.smmus.iter().enumerate() {
        if !(v.keep_smmu && i == 0) {
            edit = edit.remove_node(&smmu.path);
        }
    }
    for pcie in p.pcie.iter() {
        let points_elsewhere = pcie.iommu_map.iter().any(|m| Some(Some(m.iommu_phandle)) != kept);
        if points_elsewhere {
            edit = edit.remove_property(&pcie.path, "iommu-map");
        }
    }
    if let (Some(irqs), Some(smmu)) = (v.mmu500, p.smmu().filter(|_| v.keep_smmu)) {
        let named = smmu.irqs != dt::SmmuIrqs::default();
        edit = mmu500_host_dt(edit, &smmu.path, &irqs, named);
    }
    if v.scm {
        edit = edit.add_firmware("scm", "qcom,scm");
    }
    if let Some(name) = v.rmtfs {
        edit = rmtfs_host_dt(edit, &alloc::format!("/reserved-memory/{name}"));
    }
    edit
}

/// The DMA policy's side of the host DT (`dt::policy`): withheld devices removed; and when the
/// redistributors are GICv4 ones (256 KiB apart) while the host is shown no VLPIS, the stride
/// is given explicitly so the host still finds every frame.
fn withhold_in_host_dt(mut edit: DtEdit, p: &PlatformInfo, vlpi_stride: bool) -> DtEdit {
    for w in p.withheld.iter() {
        edit = edit.remove_node(&w.path);
    }
    if let Some(g) = p.gicv3.as_ref().filter(|g| vlpi_stride && g.redist_stride.is_none()) {
        edit = edit.set_property(&g.path, "redistributor-stride", &0x4_0000u64.to_be_bytes());
    }
    edit
}

/// The first SMMU's node as the Snapdragon persona shows it: Qualcomm's apps SMMU, an
/// MMU-500 (`qcom,sc7280-smmu-500`: `arm-smmu-qcom`'s impl for it needs no clocks,
/// interconnects or SCM calls, only `qcom_scm` probed), one global interrupt then one per
/// context bank (level-high SPIs), same `reg`, `#iommu-cells`, `dma-coherent` and phandle (so
/// the PCIe `iommu-map` keeps pointing at it).
/// `named`: the node has `interrupt-names` (the SMMUv3 ones), which go.
pub fn mmu500_host_dt(edit: DtEdit, path: &str, irqs: &Mmu500Irqs, named: bool) -> DtEdit {
    const COMPATIBLE: &[u8] = b"qcom,sc7280-smmu-500\0qcom,smmu-500\0arm,mmu-500\0";
    // GIC binding: <type (0: SPI), number, flags (4: level high)>.
    let mut interrupts = Vec::new();
    for intid in core::iter::once(irqs.global).chain(irqs.contexts.iter().copied()) {
        for cell in [0u32, u32::from(intid) - 32, 4] {
            interrupts.extend_from_slice(&cell.to_be_bytes());
        }
    }
    let edit = edit
        .set_property(path, "compatible", COMPATIBLE)
        .set_property(path, "#global-interrupts", &1u32.to_be_bytes())
        .set_property(path, "interrupts", &interrupts);
    if named { edit.remove_property(path, "interrupt-names") } else { edit }
}

/// Makes the carveout node at `path` Qualcomm's rmtfs region as upstream Snapdragon DTs
/// describe it: `compatible = "qcom,rmtfs-mem"`, `qcom,client-id`, and `qcom,vmid` = the
/// modem's MSA VM, so Linux's `qcom_rmtfs_mem` probes, shares the region with the modem by
/// `assign_mem` (HLOS → HLOS + MSS_MSA) and gives it back on remove. The node keeps `reg`,
/// `no-map` and the `warden,*` properties: the region is the whole carveout, so it is inside a
/// carveout warden knows by construction, and no second reserved region overlaps it.
pub fn rmtfs_host_dt(edit: DtEdit, path: &str) -> DtEdit {
    edit.set_property(path, "compatible", b"qcom,rmtfs-mem\0")
        .set_property(path, "qcom,client-id", &RMTFS_CLIENT_ID.to_be_bytes())
        .set_property(path, "qcom,vmid", &crate::trap::scm::vmid::MSS_MSA.to_be_bytes())
}
