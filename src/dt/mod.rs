//! Device-tree reading ([`parse`]) and host-DT rewriting ([`apply`]).
//!
//! # Reading: heap-free, panic-free
//! [`parse`] runs before warden has a heap (and possibly with the MMU off), so it allocates
//! nothing: every list in [`PlatformInfo`] is a fixed-capacity [`ArrayVec`] whose limit is one
//! of the `MAX_*` constants below, and exceeding a limit is an error ([`DtError::TooMany`]),
//! never a silent truncation. The blob is read by a small validating walker (`blob.rs`) rather
//! than the `fdt` crate: `fdt` 0.1.5 `unwrap`s/`expect`s/`panic!`s on malformed structure blocks
//! (unterminated names, bad tokens, short `#address-cells`), which hostile input must never
//! reach. The walker checks header offsets, sizes and alignment, the token stream, name
//! termination, property bounds, string offsets and nesting depth, and reports each with a
//! message a board bring-up engineer can act on. A proptest feeds thousands of corrupted
//! copies of the QEMU fixture to [`parse`] and [`apply`].
//!
//! `PlatformInfo` is about 40 KiB (mostly [`PlatformInfo::withheld`]): the firmware parses into a
//! `static` with [`parse_into`]; [`parse`] returns one by value, for host code and tests.
//!
//! # Rewriting: `alloc`, via Google's `dtoolkit`
//! [`apply`] runs after the heap exists. It validates the input with the same walker, then uses
//! `dtoolkit` (feature `write`): it is `no_std` + `alloc`, builds for
//! `aarch64-unknown-none-softfloat` with the Debian toolchain and `-Zbuild-std=core,alloc`,
//! round-trips the QEMU fixture to a byte-identical `dtc` decompilation, keeps node and property
//! order, preserves the `/memreserve/` block and writes version 17 with deduplicated strings.
//! The only header field it does not carry over, `boot_cpuid_phys`, is restored by [`apply`].
//!
//! # What counts as a device
//! [`PlatformInfo::devices`] is every MMIO range the host may be given: the translated `reg` of
//! every node that has one and that the DMA policy keeps ([`policy`]: devices behind warden's
//! SMMU, the trapped GIC, kinds known not to master memory; the others are listed in
//! [`PlatformInfo::withheld`] and their pages left out), plus PCIe ECAM and windows of host
//! bridges behind warden's SMMU, EXCEPT `/memory` nodes
//! (`device_type = "memory"`), the `/reserved-memory` and `/cpus` subtrees, SMMUv3 nodes,
//! children of PCI buses (their `reg` is PCI config addressing, covered by ECAM and windows),
//! and nodes whose `reg` cannot be translated: a parent without `ranges` (e.g. `/chosen`, an
//! I2C bus) or with `#size-cells = <0>` is not a memory-mapped bus. Translation follows Linux:
//! an empty `ranges` is identity, and an address is translated by the first `ranges` entry that
//! contains its start. Ranges are widened to 4 KiB pages, sorted and merged (touching ranges
//! too). Devices are not checked against `/memory`: if a DT describes MMIO inside RAM, the
//! stage-2 builder decides which wins. Any device page overlapping an SMMU register range is
//! an error, because the SMMU must stay unmapped.

// `DtError` carries node paths inline (about 270 bytes) because parsing runs before any heap
// exists, so it cannot be boxed; errors are built once, on the way to a halt.
#![allow(clippy::result_large_err)]

mod blob;
mod edit;
mod error;
mod in_place;
mod parse;
pub mod policy;
#[cfg(test)]
mod tests;

use arrayvec::{ArrayString, ArrayVec};

pub use edit::{DtEdit, apply};
pub use error::{DtError, NodeName, NodePath};
pub use in_place::set_memory_in_place;
pub use parse::{covered as ram_covers, parse, parse_into, parse_into_with_ram};
pub use policy::Withheld;

use crate::mm::MemRange;
pub use warden_abi::handoff::{PeerId, Policy};

/// `/memory` `reg` entries.
pub const MAX_MEMORY_RANGES: usize = 16;
/// `/reserved-memory` children with `reg` entries plus `/memreserve/` entries.
pub const MAX_RESERVED: usize = 32;
/// CPU nodes under `/cpus`.
pub const MAX_CPUS: usize = 64;
/// `arm,smmu-v3` nodes.
pub const MAX_SMMUS: usize = 8;
/// `pci-host-ecam-generic` host bridges.
pub const MAX_PCIE: usize = 4;
/// `ranges` entries (windows) of one PCIe host bridge.
pub const MAX_PCIE_WINDOWS: usize = 8;
/// `iommu-map` entries of one PCIe host bridge.
pub const MAX_IOMMU_MAP: usize = 8;
/// Carveouts (`/reserved-memory` children handed to peers; see `docs/carveouts.md`).
pub const MAX_CARVEOUTS: usize = 16;
/// Device ranges after page alignment and merging.
pub const MAX_DEVICES: usize = 128;
/// Withheld devices' ranges after page alignment and merging, while parsing (a Snapdragon DT
/// has over a hundred). Part of the parser's state (on the stack while parsing: 4 KiB).
pub const MAX_WITHHELD_RANGES: usize = 256;
/// Node nesting depth, the root being level 1.
pub const MAX_DEPTH: usize = 16;
/// Bytes in a node path such as `/soc/bus@30000000/serial@30860000`.
pub const MAX_PATH_LEN: usize = 128;
/// Bytes in a node name kept by warden (reserved-memory children).
pub const MAX_NAME_LEN: usize = 64;
/// Bytes of `/chosen/bootargs`.
pub const MAX_BOOTARGS: usize = 1024;
/// Devices withheld from the host (`dt::policy`); QEMU virt has 34, a Snapdragon DT over a
/// hundred: with the apps MMU-500 vouching for the wrappers that name it, their children
/// without `iommus` of their own (GENI serial engines, ...) are classified one by one, so
/// RB3 Gen 2 has 159 and RB5 145 (`boards::tests`). Each costs about 200 bytes of
/// [`PlatformInfo`], which is why the firmware parses into a static (`boot::BOOT_PLATFORM`,
/// with [`parse_into`]), never onto the boot stack. Per board (`crate::mm::link_layout`,
/// `max_withheld`): 192 but on DB410c, whose DT withholds far fewer.
pub const MAX_WITHHELD: usize = crate::mm::LAYOUT.max_withheld;
/// GICv3 redistributor regions (`#redistributor-regions`).
pub const MAX_REDIST_REGIONS: usize = 8;
/// GICv3 ITSes.
pub const MAX_ITS: usize = 4;
/// Host streams (`iommus` specifiers of kept devices) behind warden's MMU-500.
pub const MAX_MMU500_STREAMS: usize = 96;
/// Context interrupts of warden's MMU-500 kept (the face raises the first few).
pub const MAX_MMU500_CONTEXT_IRQS: usize = 16;

/// The [`ReservedRegion::name`] of `/memreserve/` entries.
pub const MEMRESERVE_NAME: &str = "memreserve";

/// Memory the host OS must not use as ordinary RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedRegion {
    /// The `/reserved-memory` child's node name, or [`MEMRESERVE_NAME`].
    pub name: NodeName,
    pub range: MemRange,
    /// `no-map`: the OS must not even map it (these become carveouts).
    pub no_map: bool,
    /// A warden carveout by its binding or name (a carveout outside RAM is only here, not in
    /// [`PlatformInfo::carveouts`]).
    pub carveout: bool,
}

/// Why a `/reserved-memory` child is a carveout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarveoutSource {
    /// It has `warden,peer` or `warden,peer-id`.
    Binding,
    /// Its node name is a Qualcomm region name warden recognises (`mpss`, `adsp`, ...).
    QcomName,
    /// The board names it (`boards::NamedRegion`: the DT calls it only `memory@...`).
    Board,
}

/// Memory a peer processor may be given (binding: `docs/carveouts.md`). Always `no-map` and
/// page-aligned; also listed in [`PlatformInfo::reserved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carveout {
    /// The `/reserved-memory` child's node name.
    pub name: NodeName,
    pub range: MemRange,
    pub peer: PeerId,
    /// The transfer kind it accepts (`warden,policy`, default donate).
    pub policy: Policy,
    /// `warden,clear-on-reclaim`: every reclaim scrubs, CLEAR or not.
    pub clear_on_reclaim: bool,
    pub source: CarveoutSource,
}

/// How a secondary CPU is started, from its `enable-method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuEnableMethod {
    Psci,
    SpinTable,
    /// Some other method warden does not implement.
    Other,
    /// No `enable-method` property (usual for the boot CPU of spin-table systems).
    Absent,
}

/// One `/cpus/cpu@*` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    /// The MPIDR affinity fields from `reg` (1 or 2 cells). The node is `/cpus/cpu@<reg>` by
    /// convention.
    pub mpidr: u64,
    pub enable_method: CpuEnableMethod,
}

/// How PSCI is called (`/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    Smc,
    Hvc,
}

/// One SMMUv3 (`compatible = "arm,smmu-v3"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuInfo {
    /// Register frames (translated `reg`).
    pub regs: MemRange,
    /// `phandle` (or `linux,phandle`): what `iommu-map` entries refer to.
    pub phandle: Option<u32>,
    /// Node path, e.g. for [`DtEdit::remove_node`].
    pub path: NodePath,
    /// Its wired interrupts (GIC SPIs, as INTIDs), by `interrupt-names`.
    pub irqs: SmmuIrqs,
}

/// An SMMUv3's wired interrupts as GIC INTIDs (32 + SPI number). Only SPIs in the 3-cell GIC
/// binding are understood; anything else is `None` (that interrupt is not raised).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmmuIrqs {
    pub eventq: Option<u16>,
    pub gerror: Option<u16>,
    pub cmdq_sync: Option<u16>,
}

/// The apps MMU-500 warden drives on a Snapdragon board: the first enabled `arm,mmu-500` node
/// that is not a GPU's own SMMU (`qcom,adreno-smmu`), when the DT has no SMMUv3. Its devices
/// (`iommus` naming it) are kept; their stream IDs are [`PlatformInfo::mmu500_streams`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mmu500Info {
    pub path: NodePath,
    /// The first `reg` entry: the whole register window.
    pub regs: MemRange,
    pub phandle: Option<u32>,
    /// `#iommu-cells`: 1 (stream ID; the mask is `stream-match-mask`, or 0) or 2 (ID, mask).
    pub iommu_cells: u32,
    /// `#global-interrupts`: how many of `interrupts` come before the context banks'.
    pub global_irqs: u32,
    /// The first global interrupt, as an INTID (SPIs of the 3-cell GIC binding only).
    pub global_irq: Option<u16>,
    /// The context banks' interrupts in DT order, as INTIDs (the first
    /// [`MAX_MMU500_CONTEXT_IRQS`]; none if any entry is not a 3-cell SPI).
    pub context_irqs: ArrayVec<u16, MAX_MMU500_CONTEXT_IRQS>,
}

/// PCI address space of a host-bridge window (`phys.hi` bits 24..25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mem32,
    Mem64,
}

/// One PCIe `ranges` entry: a CPU-side window onto PCI space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    /// Start address on the PCI side.
    pub pci_addr: u64,
    /// The window as the CPU sees it (translated).
    pub cpu: MemRange,
}

/// One `iommu-map` entry: requester IDs `[rid_base, rid_base + length)` map to stream IDs
/// `[sid_base, ..)` of the IOMMU with phandle `iommu_phandle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMapEntry {
    pub rid_base: u32,
    pub iommu_phandle: u32,
    pub sid_base: u32,
    pub length: u32,
}

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcieHost {
    pub path: NodePath,
    /// Configuration space (translated `reg`).
    pub ecam: MemRange,
    pub windows: ArrayVec<PcieWindow, MAX_PCIE_WINDOWS>,
    pub iommu_map: ArrayVec<IommuMapEntry, MAX_IOMMU_MAP>,
}

/// A GICv3 (`arm,gic-v3`): what warden traps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GicV3Info {
    pub path: NodePath,
    /// The distributor (first `reg` entry).
    pub dist: MemRange,
    /// The redistributor regions (the next `#redistributor-regions` entries, default 1).
    pub redist_regions: ArrayVec<MemRange, MAX_REDIST_REGIONS>,
    /// `redistributor-stride`, if given.
    pub redist_stride: Option<u64>,
}

/// A GICv2 (`arm,cortex-a15-gic`, `arm,gic-400`, ...): distributor and CPU interface, which the
/// host drives directly, and the virtualization extension's frames, which are nobody's under
/// warden (GICH is the hypervisor's control interface, GICV the CPU interface a hypervisor maps
/// for its guests): left out of the host's stage 2 and cut from the node the host sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GicV2Info {
    pub path: NodePath,
    /// GICD (`reg` entry 0).
    pub dist: MemRange,
    /// GICC (`reg` entry 1).
    pub cpu: MemRange,
    /// GICH (`reg` entry 2), if listed.
    pub hyp: Option<MemRange>,
    /// GICV (`reg` entry 3), if listed.
    pub vcpu: Option<MemRange>,
    /// The `reg` property's first two entries as they are encoded (GICD, GICC): the node's
    /// `reg` in the host's DT.
    pub host_reg: ArrayVec<u8, GICV2_HOST_REG_MAX>,
}

impl GicV2Info {
    /// The node as the host sees it: GICD and GICC only. GICH and GICV (left out of the
    /// host's stage 2) and the maintenance interrupt that goes with them are a hypervisor's; a
    /// host at EL1 has no use for them (Linux looks for them only to offer KVM).
    pub fn host_view(&self, edit: DtEdit) -> DtEdit {
        if self.hyp.is_none() && self.vcpu.is_none() {
            return edit;
        }
        edit.set_property(&self.path, "reg", &self.host_reg)
            .remove_property(&self.path, "interrupts")
    }
}

/// Bytes of two `reg` entries at the largest cell counts warden accepts (2 + 2 cells each).
pub const GICV2_HOST_REG_MAX: usize = 2 * 4 * 4;

/// The UARTs warden knows, by compatible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// `arm,pl011` (QEMU virt).
    Pl011,
    /// `qcom,geni-debug-uart`: a Qualcomm GENI serial engine in UART mode (SC7280, SM8250).
    QcomGeniDebug,
    /// `qcom,msm-uartdm-v1.4` / `qcom,msm-uartdm`: Qualcomm's UARTDM (MSM8916).
    QcomUartdm,
}

impl UartKind {
    /// Compatibles and the kind each means, in match order.
    pub const COMPATIBLES: [(&'static str, UartKind); 4] = [
        ("arm,pl011", UartKind::Pl011),
        ("qcom,geni-debug-uart", UartKind::QcomGeniDebug),
        ("qcom,msm-uartdm-v1.4", UartKind::QcomUartdm),
        ("qcom,msm-uartdm", UartKind::QcomUartdm),
    ];
}

/// The console UART: its kind and first register range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleInfo {
    pub kind: UartKind,
    pub regs: MemRange,
}

/// Kinds of IOMMU other than SMMUv3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherIommuKind {
    /// `arm,mmu-500`: ARM's SMMUv2-architecture MMU-500 (Snapdragon's apps SMMU).
    ArmMmu500,
    /// `qcom,msm-iommu-v1`: MSM8916's IOMMU, context banks programmed by Linux's `qcom_iommu`,
    /// the secure ones owned by TrustZone.
    QcomMsmIommuV1,
}

/// An IOMMU warden has no back end for yet ([`PlatformInfo::other_iommus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherIommu {
    pub kind: OtherIommuKind,
    pub path: NodePath,
    /// The first `reg` entry (for `qcom,msm-iommu-v1`, the global registers; its context
    /// banks are child nodes).
    pub regs: MemRange,
    pub phandle: Option<u32>,
}

/// A device withheld from the host (see [`policy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithheldDevice {
    pub path: NodePath,
    pub why: Withheld,
    /// Its first MMIO range, if it has one (for the log).
    pub regs: Option<MemRange>,
}

/// What warden needs to know about the platform, read from the DT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformInfo {
    /// All `/memory` `reg` entries, sorted, non-overlapping, non-empty.
    pub memory: ArrayVec<MemRange, MAX_MEMORY_RANGES>,
    /// `/reserved-memory` children with `reg` (status not "disabled") and `/memreserve/`
    /// entries; sorted by address, non-overlapping. Usually inside `memory`; one outside is
    /// kept (the layout planner avoids whatever part of it is RAM).
    pub reserved: ArrayVec<ReservedRegion, MAX_RESERVED>,
    /// The reserved regions that are carveouts wholly inside RAM, sorted by address (their
    /// order is the carveout index of the hypercall ABI). A carveout outside RAM is only in
    /// `reserved`: boot reports it and leaves it unmanaged (the host's stage-2 maps only RAM
    /// and devices, so the host never reaches it as memory anyway).
    pub carveouts: ArrayVec<Carveout, MAX_CARVEOUTS>,
    /// CPUs in DT order (at least one).
    pub cpus: ArrayVec<CpuInfo, MAX_CPUS>,
    pub psci: Option<PsciConduit>,
    /// The UART named by `/chosen` `stdout-path` (aliases resolved, `:options` stripped), else
    /// the first UART of a kind warden has a driver for ([`UartKind`]).
    pub console: Option<ConsoleInfo>,
    /// Every enabled ARM SMMUv2-architecture IOMMU (the MMU-500 of Snapdragon SoCs) and
    /// Qualcomm `msm-iommu-v1`, in DT order. No back end drives them yet: they are withheld
    /// from the host like any unknown device, and so is every device whose `iommus` names one.
    pub other_iommus: ArrayVec<OtherIommu, MAX_SMMUS>,
    /// All SMMUv3 instances in DT order; [`PlatformInfo::smmu`] is the first.
    pub smmus: ArrayVec<SmmuInfo, MAX_SMMUS>,
    /// The apps MMU-500 warden drives ([`Mmu500Info`]); not in `other_iommus`.
    pub mmu500: Option<Mmu500Info>,
    /// The `iommus` specifiers naming [`PlatformInfo::mmu500`] of every kept, enabled device,
    /// in DT order as given (unvalidated: `smmu::mmu500::host_streams` merges and checks them).
    pub mmu500_streams: ArrayVec<crate::smmu::mmu500::StreamMatch, MAX_MMU500_STREAMS>,
    pub pcie: ArrayVec<PcieHost, MAX_PCIE>,
    /// MMIO the host may access (see the module documentation), page-aligned, sorted, merged.
    pub devices: ArrayVec<MemRange, MAX_DEVICES>,
    pub bootargs: Option<ArrayString<MAX_BOOTARGS>>,
    /// `[linux,initrd-start, linux,initrd-end)`.
    pub initrd: Option<MemRange>,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// The GIC distributor (first `reg` of the `arm,gic-v3` / GICv2 node), if any.
    pub gic_dist: Option<MemRange>,
    /// The GICv3, if the GIC is one.
    pub gicv3: Option<GicV3Info>,
    /// The GICv2, if the GIC is one.
    pub gicv2: Option<GicV2Info>,
    /// Every enabled `arm,gic-v3-its` node's register frames (control, then translater).
    pub gic_its: ArrayVec<MemRange, MAX_ITS>,
    /// Devices the host is not given ([`policy`]), in DT order: not in `devices`, removed
    /// from the host's DT.
    pub withheld: ArrayVec<WithheldDevice, MAX_WITHHELD>,
    /// The first enabled `arm,armv8-timer` (or `armv7-timer`) node's PPIs.
    pub timer: Option<ArchTimer>,
}

/// The architected timer's interrupts as the DT gives them. The binding's order is secure
/// physical, non-secure physical, virtual, hypervisor physical (and hypervisor virtual); the
/// PPI numbers are the SoC's: the usual 13, 14, 11, 10 on QEMU and in Linux 6.12's SM8250
/// and SC7280 DTs, 1, 2, 3, 0 in SDM845's, 2, 3, 4, 1 in MSM8916's (`boards::tests` checks the
/// three boards' real DTs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchTimer {
    /// PPI numbers (INTID - 16), in DT order; empty when the property is not the 3-cell GIC
    /// PPI form.
    pub ppis: ArrayVec<u8, 5>,
}

impl ArchTimer {
    /// The first PPI of `used` (PPIs warden itself takes: an EL2 timer, a GIC maintenance
    /// interrupt) that the timer also uses.
    pub fn collides(&self, used: &[u8]) -> Option<u8> {
        used.iter().copied().find(|ppi| self.ppis.contains(ppi))
    }
}

/// The PPIs warden takes for itself: none (it runs no EL2 timer and does not virtualize the
/// GIC CPU interface, so it has no maintenance interrupt). The board tests check every real
/// DT's timer against this list, so a PPI added here cannot silently collide on those boards.
pub const WARDEN_PPIS: &[u8] = &[];

impl Default for PlatformInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl PlatformInfo {
    /// An empty `PlatformInfo` (no memory, no CPUs: what [`parse_into`] starts from). `const`,
    /// so the firmware's static is built at compile time (its initial value in `.data`), never
    /// on a stack.
    pub const fn new() -> Self {
        Self {
            memory: ArrayVec::new_const(),
            reserved: ArrayVec::new_const(),
            carveouts: ArrayVec::new_const(),
            cpus: ArrayVec::new_const(),
            psci: None,
            console: None,
            other_iommus: ArrayVec::new_const(),
            smmus: ArrayVec::new_const(),
            mmu500: None,
            mmu500_streams: ArrayVec::new_const(),
            pcie: ArrayVec::new_const(),
            devices: ArrayVec::new_const(),
            bootargs: None,
            initrd: None,
            boot_cpuid_phys: 0,
            gic_dist: None,
            gicv3: None,
            gicv2: None,
            gic_its: ArrayVec::new_const(),
            withheld: ArrayVec::new_const(),
            timer: None,
        }
    }

    /// Back to [`PlatformInfo::new`], in place (assigning a new value would build the whole
    /// struct on the stack first). The destructuring names every field, so a new field does
    /// not compile until it is cleared here too.
    pub fn clear(&mut self) {
        let Self {
            memory,
            reserved,
            carveouts,
            cpus,
            psci,
            console,
            other_iommus,
            smmus,
            mmu500,
            mmu500_streams,
            pcie,
            devices,
            bootargs,
            initrd,
            boot_cpuid_phys,
            gic_dist,
            gicv3,
            gicv2,
            gic_its,
            withheld,
            timer,
        } = self;
        memory.clear();
        reserved.clear();
        carveouts.clear();
        cpus.clear();
        *psci = None;
        *console = None;
        other_iommus.clear();
        smmus.clear();
        *mmu500 = None;
        mmu500_streams.clear();
        pcie.clear();
        devices.clear();
        *bootargs = None;
        *initrd = None;
        *boot_cpuid_phys = 0;
        *gic_dist = None;
        *gicv3 = None;
        *gicv2 = None;
        gic_its.clear();
        withheld.clear();
        *timer = None;
    }

    /// The first SMMUv3, if any.
    pub fn smmu(&self) -> Option<&SmmuInfo> {
        self.smmus.first()
    }
}

/// The blob's `totalsize` after checking magic and version; `header` needs at least the
/// 40 header bytes. Use it to learn how much to map or copy before [`parse`].
pub fn blob_size(header: &[u8]) -> Result<usize, DtError> {
    blob::header_totalsize(header)
}
