//! Board descriptions. Each board lives in its own folder under `boards/` at the top of the
//! repository (memory map facts, console, policy); the one selected by a `board-*` feature is
//! compiled in as [`CURRENT`]. Everything the DT can tell is read from the DT; a board only
//! supplies what the DT cannot (the console to use before the DT is parsed, firmware quirks,
//! policy).

use crate::gic::GicVersion;

/// What the EL3 firmware below warden implements for SMC calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's built-in PSCI (no EL3 code): it answers PSCI function IDs only; any other SMC
    /// from EL2 is UNDEFINED and would fault warden itself, so warden must never forward one.
    QemuBuiltinPsci,
    /// Trusted Firmware-A or a vendor EL3 monitor implementing SMCCC: unknown IDs return -1,
    /// so SMCs that are not warden's business may be forwarded.
    Smccc,
}

/// How warden is entered, and so where its platform description comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryConvention {
    /// Loaded like a Linux kernel (arm64 `Image` header) with the host packed behind it
    /// (`payload`): entered once, at EL2, with x0 = the DT, which warden patches for the host
    /// (`docs/image-format.md`).
    LinuxImage,
    /// Flashed as the `hyp` boot stage: TrustZone enters warden at `base` at EL2 on the boot CPU
    /// and again on every CPU power-up, with x0 = the next stage's (or the `CPU_ON`) entry,
    /// x1 = 2 (AArch64) and no DT. warden runs in place in `[base, base + region_size)`, reads
    /// the platform from the DT linked into its image (the OS's DT: [`linked_dt`]), refuses to
    /// start unless that DT reserves its region and every carveout `no-map`, and enters the
    /// next stage at EL1 (`docs/architecture.md`, *Boot-stage mode*). `rpm_release`: the
    /// register bit a `hyp` image clears once at first boot to take the RPM out of reset
    /// (MSM8916: `crate::boot_stage::qcom_hyp`).
    Hyp {
        base: u64,
        region_size: u64,
        rpm_release: Option<crate::boot_stage::qcom_hyp::RpmRelease>,
    },
    /// Loaded by the UEFI boot loader from `uefi_a` at `base` and started at EL1 under Gunyah
    /// (Qualcomm's hypervisor on SC7280 boards); the Gunyah-exit SMC ([`GUNYAH_EXIT_SMC`])
    /// continues it at EL2 with the SMMU in bypass, after which TrustZone's PSCI enters warden
    /// like any EL2 caller's entry, and warden chainloads the next stage at EL1: packed behind
    /// it like a packed host (`cargo xtask image --next`), entered with the linked DT, patched,
    /// in x0. The exit SMC is made by the entry code (`crate::boot_stage::gunyah`). Runs in
    /// place in `[base, base + region_size)` (docs/boards/qcs6490-rb3gen2.md).
    UefiUnderGunyah { base: u64, region_size: u64 },
}

/// The SMC that leaves Gunyah for EL2 on RB3 Gen 2: w0..w4 (U-Boot's and Linux's notes on the
/// board document it).
pub const GUNYAH_EXIT_SMC: [u32; 5] = [0x0200_0121, 0x23, 0, 0, 1];

impl EntryConvention {
    /// warden's region, for the boot stages that run in place.
    pub fn region(&self) -> Option<crate::mm::MemRange> {
        match *self {
            Self::LinuxImage => None,
            Self::Hyp { base, region_size, .. } | Self::UefiUnderGunyah { base, region_size } => {
                crate::mm::MemRange::from_base_size(base, region_size)
            }
        }
    }
}

/// Where warden learns the machine's RAM (`crate::boot_stage::parse_platform`, the one place
/// the boot reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamSource {
    /// The DT's `/memory` (QEMU's DT, a boot loader's that filled it in).
    Dt,
    /// Qualcomm SMEM's RAM partition table (`crate::boot_stage::smem`): the board's DT ships a
    /// zero-sized `/memory` for a boot loader that runs after warden. `smem` is SMEM's region,
    /// which the DT must reserve `no-map` exactly (checked at boot).
    QcomSmem { smem: crate::mm::MemRange },
}

/// The UART the board's console is, before the DT is parsed.
pub use crate::dt::UartKind;

/// The IOMMU in front of the host's DMA masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iommu {
    /// Arm SMMUv3: warden's back end (`crate::smmu`).
    SmmuV3,
    /// Arm MMU-500 (SMMUv2 architecture), Snapdragon's apps SMMU: back end
    /// [`crate::smmu::mmu500::Mmu500Backend`] (checked against its register model only). The
    /// boot path does not start it yet, so the DT's node and every device behind it are still
    /// withheld from the host (`dt::policy`).
    ArmMmu500,
    /// Qualcomm `msm-iommu-v1` (MSM8916): no back end (docs/smmu-500.md, *DB410c*); withheld
    /// the same way.
    QcomMsmIommuV1,
}

/// The SMMU driver warden would drive an [`Iommu`] with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuBackEnd {
    /// `crate::smmu::Smmu` under `crate::smmu::virt::real::SmmuBackend`.
    SmmuV3,
    /// `crate::smmu::mmu500::Mmu500Backend`.
    Mmu500,
}

impl Iommu {
    /// The back end for this IOMMU, `None` if warden has none (its devices stay withheld).
    pub const fn back_end(self) -> Option<IommuBackEnd> {
        match self {
            Iommu::SmmuV3 => Some(IommuBackEnd::SmmuV3),
            Iommu::ArmMmu500 => Some(IommuBackEnd::Mmu500),
            Iommu::QcomMsmIommuV1 => None,
        }
    }
}

/// A `/reserved-memory` region the board's DT names only `memory@...` (the label that says what
/// it is does not survive compilation): the board names it, and says which peer it belongs to
/// if it is a carveout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedRegion {
    pub base: u64,
    pub name: &'static str,
    pub peer: Option<crate::dt::PeerId>,
}

/// What warden does when the host touches memory it may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationPolicy {
    /// Log and inject a synchronous external abort into the host; the host continues (G0).
    Contain,
    /// Log and stop (board bring-up, to catch the first violation with the machine frozen).
    Panic,
}

/// Static facts about a board.
///
/// Each field picks one of the pieces warden is built from; the boot sequence (`crate::boot`)
/// runs over what the board picked and what the DT says.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    pub name: &'static str,
    /// How warden is entered: packed Linux Image, or TrustZone's hyp entry.
    pub entry: EntryConvention,
    /// Where the RAM comes from: the DT, or the firmware's SMEM table.
    pub ram_source: RamSource,
    /// UART used for messages before the DT has been parsed (the DT's `stdout-path` wins after).
    pub early_uart: u64,
    /// What kind of UART `early_uart` is.
    pub console: UartKind,
    /// The IOMMU the board has.
    pub iommu: Iommu,
    /// Regions of the board's DT that the DT cannot name ([`NamedRegion`]).
    pub named_regions: &'static [NamedRegion],
    pub firmware: Firmware,
    pub violation_policy: ViolationPolicy,
    /// Keep the last CPU of `/cpus` from the host and run the simulated peer program on it
    /// (qemu-virt: stands in for the modem and DSP, see `docs/abi.md`).
    pub sim_peer: bool,
    /// IPA of the warden control page (`warden_abi::control`), if the board offers one. Must be
    /// an address the DT gives to no device.
    pub control_page: Option<u64>,
    /// The EL3 firmware implements Qualcomm's SCM (a Snapdragon board's TrustZone): SiP calls
    /// warden does not answer itself, and the PAS calls once warden's checks pass, are
    /// forwarded to it (`docs/qcom-scm.md`). Only with [`Firmware::Smccc`].
    pub scm_firmware: bool,
    /// The interrupt controllers the board may have; the DT says which one it has
    /// (`crate::gic::select`).
    pub interrupt_controllers: &'static [GicVersion],
    /// Most CPUs the board has (the simulated peer's included). warden's per-CPU state is
    /// static, sized by this: each CPU costs an EL2 stack and an emergency stack in BSS
    /// (`crate::arch::aarch64::PER_CPU_BSS`). A power of two (the exception vectors mask the
    /// CPU index with it).
    pub max_cpus: usize,
}

impl Board {
    /// The console from the first message on, until the DT's replaces it
    /// (`crate::console::select`).
    pub const fn early_console(&self) -> crate::console::Console {
        crate::console::Console { kind: self.console, base: self.early_uart }
    }
}

// The descriptions are plain data, always compiled (xtask builds the chain's DT from
// `qemu_virt_tz`'s); a `board-*` feature picks the one warden is built for.
#[path = "../../boards/qemu-virt/board.rs"]
pub mod qemu_virt;

#[path = "../../boards/qemu-virt-tz/board.rs"]
pub mod qemu_virt_tz;

#[path = "../../boards/qcs6490-rb3gen2/board.rs"]
pub mod qcs6490_rb3gen2;

#[path = "../../boards/qrb5165-rb5/board.rs"]
pub mod qrb5165_rb5;

#[path = "../../boards/apq8016-sbc/board.rs"]
pub mod apq8016_sbc;

/// Whether the board this build is for (`CURRENT`) has warden's SMMUv3 back end and the
/// virtual SMMU in front of it, the MMU-500 back end, a GICv3 (with its ITS emulation) and the
/// simulated peer. The boot and the run-time paths test these constants before they reach the
/// piece, so a board without it leaves its code out of the image (DB410c's 1 MiB region,
/// docs/boards/apq8016-sbc.md); each one names what the board can have, so no path that can
/// run is cut.
pub const HAS_SMMUV3: bool = matches!(CURRENT.iommu.back_end(), Some(IommuBackEnd::SmmuV3));
/// See [`HAS_SMMUV3`].
pub const HAS_MMU500: bool = matches!(CURRENT.iommu.back_end(), Some(IommuBackEnd::Mmu500));
/// See [`HAS_SMMUV3`].
pub const HAS_GICV3: bool = {
    let gics = CURRENT.interrupt_controllers;
    let mut i = 0;
    let mut found = false;
    while i < gics.len() {
        found |= matches!(gics[i], crate::gic::GicVersion::V3);
        i += 1;
    }
    found
};
/// See [`HAS_SMMUV3`].
pub const HAS_SIM_PEER: bool = CURRENT.sim_peer;

/// The Snapdragon boards, described from their real DTs (`boards/*/README.md`).
pub const SNAPDRAGON: [&Board; 3] =
    [&qcs6490_rb3gen2::BOARD, &qrb5165_rb5::BOARD, &apq8016_sbc::BOARD];

#[cfg(test)]
mod tests;

/// How many `board-*` features are on: at most one (`CURRENT` names it).
const BOARD_FEATURES: usize = cfg!(feature = "board-qemu-virt") as usize
    + cfg!(feature = "board-qemu-virt-tz") as usize
    + cfg!(feature = "board-qcs6490-rb3gen2") as usize
    + cfg!(feature = "board-qrb5165-rb5") as usize
    + cfg!(feature = "board-apq8016-sbc") as usize;
const _: () = assert!(
    BOARD_FEATURES <= 1,
    "pick one board: the `board-*` features exclude each other (use --no-default-features)"
);

#[cfg(feature = "board-qemu-virt")]
pub use qemu_virt::BOARD as CURRENT;

#[cfg(feature = "board-qemu-virt-tz")]
pub use qemu_virt_tz::BOARD as CURRENT;

#[cfg(feature = "board-qcs6490-rb3gen2")]
pub use qcs6490_rb3gen2::BOARD as CURRENT;

#[cfg(feature = "board-qrb5165-rb5")]
pub use qrb5165_rb5::BOARD as CURRENT;

#[cfg(feature = "board-apq8016-sbc")]
pub use apq8016_sbc::BOARD as CURRENT;

/// The QEMU boards' carveouts (`/reserved-memory` nodes added to the host DT; both QEMU boards
/// have the same).
#[cfg(any(feature = "board-qemu-virt", feature = "board-qemu-virt-tz"))]
#[path = "../../boards/qemu-virt/carveouts.rs"]
pub mod carveouts;

/// The simulated peer program warden runs on the CPU it keeps (qemu-virt firmware only).
#[cfg(all(feature = "board-qemu-virt", feature = "firmware"))]
#[path = "../../boards/qemu-virt/sim_peer.rs"]
pub mod sim_peer;

/// The DT linked into a boot-stage board's image ([`EntryConvention::Hyp`],
/// [`EntryConvention::UefiUnderGunyah`]): the OS's DT, which xtask names in `WARDEN_HYP_DT`
/// before warden is linked (qemu-virt-tz: made by `cargo xtask build`, `xtask/src/chain.rs`; a
/// Snapdragon board: its pinned DT, `cargo xtask image`, `xtask/src/image.rs`). `build.rs` sets
/// `warden_links_dt` for the firmware of those boards.
#[cfg(warden_links_dt)]
#[path = "../../boards/qemu-virt-tz/linked_dt.rs"]
mod linked;

/// The DT linked into the image (boot-stage boards), or `None`.
pub fn linked_dt() -> Option<&'static [u8]> {
    #[cfg(warden_links_dt)]
    return Some(linked::DT);
    #[cfg(not(warden_links_dt))]
    None
}

/// Why a board's [`NamedRegion`]s do not fit its DT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedRegionError {
    /// No `/reserved-memory` region starts at the named base.
    Missing { name: &'static str, base: u64 },
    /// A region named as a carveout is not `no-map` (the OS would map it).
    NotNoMap { name: &'static str, base: u64 },
    /// More carveouts than [`crate::dt::MAX_CARVEOUTS`].
    TooMany { name: &'static str },
}

impl core::fmt::Display for NamedRegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Missing { name, base } => write!(
                f,
                "the board names {name} at {base:#x}, but the DT reserves no region starting there"
            ),
            Self::NotNoMap { name, base } => {
                write!(f, "carveout {name} at {base:#x} is not reserved no-map in the DT")
            }
            Self::TooMany { name } => {
                write!(f, "carveout {name}: more carveouts than warden keeps (MAX_CARVEOUTS)")
            }
        }
    }
}

/// Gives the DT's `/reserved-memory` regions the names `board` knows them by, and makes those
/// with a peer carveouts ([`crate::dt::CarveoutSource::Board`]): in RAM, they join
/// [`crate::dt::PlatformInfo::carveouts`] in address order; outside RAM they are only flagged,
/// as `dt::parse` does. A region the DT already made a carveout keeps its binding.
pub fn apply_named_regions(
    board: &Board,
    p: &mut crate::dt::PlatformInfo,
) -> Result<(), NamedRegionError> {
    use crate::dt::{Carveout, CarveoutSource, NodeName, Policy};
    for named in board.named_regions {
        let (name, base) = (named.name, named.base);
        let region = p
            .reserved
            .iter_mut()
            .find(|r| r.range.start == base)
            .ok_or(NamedRegionError::Missing { name, base })?;
        let node_name = NodeName::from(name).unwrap_or_default();
        region.name = node_name;
        let Some(peer) = named.peer else { continue };
        if !region.no_map {
            return Err(NamedRegionError::NotNoMap { name, base });
        }
        let range = region.range;
        if let Some(c) = p.carveouts.iter_mut().find(|c| c.range == range) {
            c.name = node_name;
            continue;
        }
        region.carveout = true;
        if !crate::dt::ram_covers(&p.memory, &range) {
            continue;
        }
        let carveout = Carveout {
            name: node_name,
            range,
            peer,
            policy: Policy::Donate,
            clear_on_reclaim: false,
            source: CarveoutSource::Board,
        };
        let at = p.carveouts.iter().position(|c| c.range.start > base).unwrap_or(p.carveouts.len());
        p.carveouts.try_insert(at, carveout).map_err(|_| NamedRegionError::TooMany { name })?;
    }
    Ok(())
}
