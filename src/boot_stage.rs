//! Boot-stage mode (`boards::EntryConvention::Hyp`): the checks warden makes when TrustZone
//! enters it as the `hyp` image, before it trusts anything it was handed. Host-compiled and
//! host-tested; `boot` calls them and refuses to start on the first failure, with the message.
//!
//! - [`check_entry`]: the registers TZ entered with and where warden runs: x1 = 2 (the next
//!   stage is AArch64), warden at the board's base and inside its region, the next stage's
//!   entry in RAM the host may run from (not warden's, not a carveout, not `no-map`).
//! - [`check_boot_stage_dt`]: warden cannot patch the DT the OS boots with, so that DT must
//!   already reserve warden's region and every carveout `no-map`.
//! - [`parse_platform`]: the platform from the DT, with the RAM from where the board says
//!   (`boards::RamSource`): the DT's `/memory`, or the firmware's SMEM table ([`smem`]).

pub mod gunyah;
pub mod qcom_hyp;
pub mod smem;

use core::fmt;

use crate::dt::{self, PlatformInfo};
use crate::mm::MemRange;

/// x1 at hyp entry for an AArch64 next stage (the convention qhypstub documents).
pub const HYP_ENTRY_AARCH64: u64 = 2;

/// Why warden refuses how it was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypEntryError {
    /// x1 is not 2: the next stage is not AArch64 (warden runs the host in AArch64 only).
    NotAarch64 { x1: u64 },
    /// warden was loaded and entered somewhere else than the board's base.
    WrongBase { entered: u64, base: u64 },
    /// warden's image is larger than its region.
    ImageTooLarge { image_end: u64, region: MemRange },
    /// The next stage's entry is not 4-byte aligned RAM the host owns.
    BadNextStage { entry: u64 },
}

impl fmt::Display for HypEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAarch64 { x1 } => write!(
                f,
                "entered with x1 = {x1:#x}: the next stage must be AArch64 (x1 = {HYP_ENTRY_AARCH64})"
            ),
            Self::WrongBase { entered, base } => write!(
                f,
                "entered at {entered:#x}, but this board's hyp image runs in place at {base:#x}"
            ),
            Self::ImageTooLarge { image_end, region } => {
                write!(f, "warden's image ends at {image_end:#x}, beyond its region {region}")
            }
            Self::BadNextStage { entry } => write!(
                f,
                "the next stage's entry {entry:#x} (x0) is not 4-byte aligned RAM outside warden's \
                 region, the carveouts and no-map memory"
            ),
        }
    }
}

/// Checks the hyp entry: `x1`, warden's place (`image` = its first byte to the end of its pool)
/// against the board's `base` and `region_size`, and `next_stage` against the platform's RAM.
/// Returns warden's region.
pub fn check_entry(
    p: &PlatformInfo,
    base: u64,
    region_size: u64,
    image: MemRange,
    x1: u64,
    next_stage: u64,
) -> Result<MemRange, HypEntryError> {
    if x1 != HYP_ENTRY_AARCH64 {
        return Err(HypEntryError::NotAarch64 { x1 });
    }
    if image.start != base {
        return Err(HypEntryError::WrongBase { entered: image.start, base });
    }
    let region = MemRange::from_base_size(base, region_size)
        .ok_or(HypEntryError::WrongBase { entered: image.start, base })?;
    if !region.contains_range(&image) {
        return Err(HypEntryError::ImageTooLarge { image_end: image.end, region });
    }
    let in_ram = p.memory.iter().any(|bank| bank.contains(next_stage));
    let forbidden = region.contains(next_stage)
        || p.carveouts.iter().any(|c| c.range.contains(next_stage))
        || p.reserved.iter().any(|r| r.no_map && r.range.contains(next_stage));
    if !next_stage.is_multiple_of(4) || !in_ram || forbidden {
        return Err(HypEntryError::BadNextStage { entry: next_stage });
    }
    Ok(region)
}

/// Why the platform (DT and RAM) cannot be read.
#[derive(Debug)]
pub enum PlatformError {
    Dt(dt::DtError),
    Smem(smem::SmemError),
    /// SMEM's region (the board's) is not exactly a `no-map` region of the DT's
    /// `/reserved-memory`: the board description and the DT disagree on where SMEM is.
    SmemNotReserved {
        smem: MemRange,
    },
    /// SMEM's region is not inside the RAM its own table describes.
    SmemOutsideRam {
        smem: MemRange,
    },
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dt(e) => write!(f, "{e}"),
            Self::Smem(e) => write!(f, "{e}; cannot learn the RAM, refusing to start"),
            Self::SmemNotReserved { smem } => write!(
                f,
                "SMEM {smem} (the board's) is not a no-map /reserved-memory region of the DT: \
                 board description and DT disagree"
            ),
            Self::SmemOutsideRam { smem } => {
                write!(f, "SMEM {smem} lies outside the RAM its own table describes")
            }
        }
    }
}

/// Reads the platform from `dt_blob` into `info`, with the RAM from `board.ram_source`: the
/// DT's `/memory`, or SMEM's RAM partition table (read through `mmio`, MMU off at boot), which
/// then replaces the DT's placeholder `/memory` and is cross-checked: SMEM's region must be a
/// `no-map` region of the DT's `/reserved-memory` and lie in that RAM. Returns how many banks
/// SMEM gave (`None`: the DT's RAM).
// `DtError` carries paths inline: no heap exists yet (see `dt`); built once, on the way to a halt.
#[allow(clippy::result_large_err)]
pub fn parse_platform(
    board: &crate::boards::Board,
    dt_blob: &[u8],
    info: &mut PlatformInfo,
    mmio: &mut impl qcom_hyp::BootMmio,
) -> Result<Option<usize>, PlatformError> {
    let crate::boards::RamSource::QcomSmem { smem } = board.ram_source else {
        return dt::parse_into(dt_blob, info).map(|()| None).map_err(PlatformError::Dt);
    };
    let banks = smem::ram_banks(mmio, smem).map_err(PlatformError::Smem)?;
    dt::parse_into_with_ram(dt_blob, info, &banks).map_err(PlatformError::Dt)?;
    if !info.reserved.iter().any(|r| r.no_map && r.range == smem) {
        return Err(PlatformError::SmemNotReserved { smem });
    }
    if !dt::ram_covers(&info.memory, &smem) {
        return Err(PlatformError::SmemOutsideRam { smem });
    }
    Ok(Some(banks.len()))
}

/// Why a boot-stage warden refuses the DT it was built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootStageDtError {
    /// warden's own region is not inside one `no-map` reserved region.
    WardenNotNoMap { warden: MemRange },
    /// A carveout is not inside one `no-map` reserved region.
    CarveoutNotNoMap { name: dt::NodeName, range: MemRange },
    /// A reserved region named after a carveout overlaps warden's region.
    CarveoutOverlapsWarden { name: dt::NodeName, range: MemRange },
}

impl fmt::Display for BootStageDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WardenNotNoMap { warden } => write!(
                f,
                "warden's region {warden} is not reserved no-map in the OS's DT: the OS would use \
                 warden's memory as RAM. Add /reserved-memory/warden@{:x} {{ reg = <{:#x} {:#x}>; \
                 no-map; }} (cargo xtask build makes the chain's DT with it)",
                warden.start,
                warden.start,
                warden.size()
            ),
            Self::CarveoutNotNoMap { name, range } => write!(
                f,
                "carveout {name} {range} is not reserved no-map in the OS's DT: the OS's linear map \
                 would cover it"
            ),
            Self::CarveoutOverlapsWarden { name, range } => {
                write!(f, "carveout {name} {range} overlaps warden's region")
            }
        }
    }
}

/// The boot-stage check: warden cannot patch the DT the OS boots with, so that DT must already
/// reserve warden's region and every carveout `no-map` (each inside one `no-map` region of
/// `/reserved-memory`), or the OS would map them, cacheably, in its linear map. The first
/// failure is returned.
pub fn check_boot_stage_dt(p: &PlatformInfo, warden: MemRange) -> Result<(), BootStageDtError> {
    let no_map_covers =
        |r: &MemRange| p.reserved.iter().any(|res| res.no_map && res.range.contains_range(r));
    if !no_map_covers(&warden) {
        return Err(BootStageDtError::WardenNotNoMap { warden });
    }
    for c in p.carveouts.iter() {
        if c.range.overlaps(&warden) {
            return Err(BootStageDtError::CarveoutOverlapsWarden { name: c.name, range: c.range });
        }
        if !no_map_covers(&c.range) {
            return Err(BootStageDtError::CarveoutNotNoMap { name: c.name, range: c.range });
        }
    }
    // Carveouts outside RAM are only in `reserved` (flagged): the same rule.
    for r in p.reserved.iter().filter(|r| r.carveout) {
        if !no_map_covers(&r.range) {
            return Err(BootStageDtError::CarveoutNotNoMap { name: r.name, range: r.range });
        }
    }
    Ok(())
}

/// Why the OS's DT for a hyp-entry board cannot be made.
#[derive(Debug)]
pub enum OsDtError {
    /// The board is not a hyp-entry board.
    NotHyp,
    /// The board keeps a CPU for the simulated peer, which a DT shared with the OS cannot hide
    /// from the host and show to warden.
    SimPeer,
    Dt(alloc::boxed::Box<dt::DtError>),
    /// The result fails the check warden makes at boot (a bug in the edits).
    Check(BootStageDtError),
}

impl fmt::Display for OsDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHyp => f.write_str("the board is not entered as a hyp image"),
            Self::SimPeer => {
                f.write_str("a hyp-entry board cannot keep a CPU for the simulated peer")
            }
            Self::Dt(e) => write!(f, "{e}"),
            Self::Check(e) => write!(f, "{e}"),
        }
    }
}

/// The OS's DT for hyp-entry `board` (the DT warden links and the OS boots with): the
/// platform's own DT (`platform_dt`, QEMU's `dumpdtb`), the board's carveouts (`carveouts`, the
/// `/reserved-memory` nodes to add), then the host's view exactly as a packed-image warden
/// gives it at boot (`crate::host_dt::host_view`: warden's region reserved `no-map`, withheld
/// devices removed, the control page, the SMMU kept for the virtual SMMU, a GICv2's
/// virtualization frames removed), with the persona's defaults (no SCM node: the OS's DT is
/// the virt persona's), and `/psci` (method `smc`, every CPU's `enable-method`) when the
/// platform's DT has none: the firmware below is PSCI's. The result passes
/// [`check_boot_stage_dt`].
pub fn os_dt(
    platform_dt: &[u8],
    board: &crate::boards::Board,
    carveouts: &dt::DtEdit,
) -> Result<alloc::vec::Vec<u8>, OsDtError> {
    let crate::boards::EntryConvention::Hyp { base, region_size, .. } = board.entry else {
        return Err(OsDtError::NotHyp);
    };
    if board.sim_peer {
        return Err(OsDtError::SimPeer);
    }
    let warden = MemRange::from_base_size(base, region_size).ok_or(OsDtError::NotHyp)?;
    let mut firmware = carveouts.clone();
    // The firmware below implements PSCI over SMC (tz-sim, a TZ): a DT without `/psci` (QEMU's
    // for `secure=on`) gets it, as TF-A adds it to QEMU's DT for its BL33.
    let has_psci = dt::parse(platform_dt).map_err(|e| OsDtError::Dt(e.into()))?.psci.is_some();
    if !has_psci && board.firmware == crate::boards::Firmware::Smccc {
        firmware = firmware.add_psci("smc");
    }
    let with_carveouts = dt::apply(platform_dt, &firmware).map_err(|e| OsDtError::Dt(e.into()))?;
    let p = dt::parse(&with_carveouts).map_err(|e| OsDtError::Dt(e.into()))?;
    let view = crate::host_dt::HostView {
        warden,
        peer_cpu: None,
        control_page: board.control_page,
        // Only a GICv2 machine's DT has a GICv2 and no GICv3.
        gicv2: p.gicv2.as_ref().filter(|_| p.gicv3.is_none()),
        keep_smmu: p.smmu().is_some(),
        mmu500: None,
        scm: false,
        rmtfs: None,
        vlpi_stride: false,
    };
    let os = dt::apply(&with_carveouts, &crate::host_dt::host_view(&p, &view))
        .map_err(|e| OsDtError::Dt(e.into()))?;
    let parsed = dt::parse(&os).map_err(|e| OsDtError::Dt(e.into()))?;
    check_boot_stage_dt(&parsed, warden).map_err(OsDtError::Check)?;
    Ok(os)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::carveouts;
    use crate::boards::qemu_virt_tz::{BOARD, HYP_BASE, HYP_REGION_SIZE};
    use crate::dt::DtEdit;

    /// QEMU 10.0.2's virt DT (1 GiB, GICv3, SMMUv3), the fixture the DT tests use.
    const QEMU_DT: &[u8] = include_bytes!("../boards/qemu-virt/qemu-virt.dtb");
    const QEMU_DT_GICV2: &[u8] = include_bytes!("../boards/qemu-virt/qemu-virt-gicv2.dtb");
    const REGION: MemRange = MemRange::new(HYP_BASE, HYP_BASE + HYP_REGION_SIZE);
    const WARDEN_NODE: &str = "/reserved-memory/warden@7e000000";

    fn board_carveouts() -> DtEdit {
        let specs = carveouts::for_ram(&[MemRange::new(0x4000_0000, 0x8000_0000)]).unwrap();
        carveouts::add_to(DtEdit::new(), &specs)
    }

    fn os_dt_for(platform: &[u8]) -> alloc::vec::Vec<u8> {
        os_dt(platform, &BOARD, &board_carveouts()).unwrap()
    }

    #[test]
    fn the_chains_os_dt_passes_the_check_and_shows_what_plain_mode_shows() {
        let os = os_dt_for(QEMU_DT);
        let p = dt::parse(&os).unwrap();
        assert_eq!(check_boot_stage_dt(&p, REGION), Ok(()));
        let warden = p.reserved.iter().find(|r| r.name.as_str() == "warden@7e000000").unwrap();
        assert_eq!((warden.range, warden.no_map), (REGION, true));
        assert_eq!(p.carveouts.len(), 2);
        // What plain mode's patch also does: the control page is a device node, the devices
        // the DMA policy withholds are gone, the SMMU stays for the virtual SMMU.
        let compatible = warden_abi::control::COMPATIBLE.as_bytes();
        assert!(os.windows(compatible.len()).any(|w| w == compatible));
        assert!(!QEMU_DT.windows(compatible.len()).any(|w| w == compatible));
        assert!(p.withheld.is_empty(), "{:?}", p.withheld);
        assert!(!dt::parse(QEMU_DT).unwrap().withheld.is_empty());
        assert_eq!(p.smmus.len(), 1);
        // The same edits as plain mode's patch, on the same input, give the same bytes.
        let with_carveouts = dt::apply(QEMU_DT, &board_carveouts()).unwrap();
        let plain = dt::parse(&with_carveouts).unwrap();
        let view = crate::host_dt::HostView {
            warden: REGION,
            peer_cpu: None,
            control_page: BOARD.control_page,
            gicv2: None,
            keep_smmu: true,
            mmu500: None,
            scm: false,
            rmtfs: None,
            vlpi_stride: false,
        };
        let patched =
            dt::apply(&with_carveouts, &crate::host_dt::host_view(&plain, &view)).unwrap();
        assert_eq!(patched, os);
    }

    /// QEMU's `secure=on` DT lists the secure SRAM as a disabled memory node: not RAM for
    /// warden (its stage 2, its own map and the host memory it reads are RAM only).
    #[test]
    fn a_disabled_memory_node_is_not_ram() {
        let secram = "/secram@e000000";
        let edit = DtEdit::new()
            .add_device("secram", "none", MemRange::new(0x0e00_0000, 0x0f00_0000))
            .set_property(secram, "device_type", b"memory\0");
        let with_secram = dt::apply(QEMU_DT, &edit).unwrap();
        let okay = dt::parse(&with_secram).unwrap();
        assert_eq!(okay.memory.len(), 2);
        let disabled =
            dt::apply(&with_secram, &DtEdit::new().set_property(secram, "status", b"disabled\0"))
                .unwrap();
        let p = dt::parse(&disabled).unwrap();
        assert_eq!(p.memory.as_slice(), &[MemRange::new(0x4000_0000, 0x8000_0000)]);
    }

    /// QEMU's DT for `secure=on` has no `/psci` (the `-bios` image is the PSCI firmware) and no
    /// CPU `enable-method`: the OS's DT gets both, for SMC, as the firmware's own DT edit would.
    #[test]
    fn a_dt_without_psci_gets_it_for_the_firmware_below() {
        let fixture = dt::parse(QEMU_DT).unwrap();
        let mut strip = DtEdit::new().remove_node("/psci");
        for i in 0..fixture.cpus.len() {
            strip = strip.remove_property(&alloc::format!("/cpus/cpu@{i}"), "enable-method");
        }
        let secure_like = dt::apply(QEMU_DT, &strip).unwrap();
        let stripped = dt::parse(&secure_like).unwrap();
        assert_eq!(stripped.psci, None);
        assert!(stripped.cpus.iter().all(|c| c.enable_method == dt::CpuEnableMethod::Absent));
        let p = dt::parse(&os_dt_for(&secure_like)).unwrap();
        assert_eq!(p.psci, Some(dt::PsciConduit::Smc));
        assert_eq!(p.cpus.len(), fixture.cpus.len());
        assert!(p.cpus.iter().all(|c| c.enable_method == dt::CpuEnableMethod::Psci));
        // A DT that has one keeps it as it is (the non-secure fixture's).
        assert_eq!(dt::parse(&os_dt_for(QEMU_DT)).unwrap().psci, fixture.psci);
        let twice = dt::apply(QEMU_DT, &DtEdit::new().add_psci("smc"));
        assert!(matches!(twice, Err(dt::DtError::NodeExists { .. })), "{twice:?}");
    }

    #[test]
    fn a_gicv2_machine_gets_the_gicv2_host_view() {
        let p = dt::parse(&os_dt_for(QEMU_DT_GICV2)).unwrap();
        let gic = p.gicv2.as_ref().unwrap();
        assert_eq!((gic.hyp, gic.vcpu), (None, None), "GICH and GICV are warden's");
        assert_eq!(check_boot_stage_dt(&p, REGION), Ok(()));
    }

    #[test]
    fn refuses_a_dt_without_warden_reserved() {
        let blob = dt::apply(QEMU_DT, &board_carveouts()).unwrap();
        let p = dt::parse(&blob).unwrap();
        let err = check_boot_stage_dt(&p, REGION).unwrap_err();
        assert_eq!(err, BootStageDtError::WardenNotNoMap { warden: REGION });
        let msg = alloc::format!("{err}");
        assert!(msg.contains("is not reserved no-map in the OS's DT"), "{msg}");
    }

    #[test]
    fn refuses_warden_reserved_without_no_map() {
        let os = os_dt_for(QEMU_DT);
        let edited = dt::apply(&os, &DtEdit::new().remove_property(WARDEN_NODE, "no-map")).unwrap();
        let p = dt::parse(&edited).unwrap();
        let warden = p.reserved.iter().find(|r| r.range == REGION).unwrap();
        assert!(!warden.no_map);
        assert_eq!(
            check_boot_stage_dt(&p, REGION),
            Err(BootStageDtError::WardenNotNoMap { warden: REGION })
        );
    }

    #[test]
    fn refuses_a_region_reserved_too_small() {
        let blob = dt::apply(QEMU_DT, &board_carveouts()).unwrap();
        let short = MemRange::new(HYP_BASE, HYP_BASE + HYP_REGION_SIZE - 0x1000);
        let blob = dt::apply(&blob, &DtEdit::new().reserve_no_map("warden", short)).unwrap();
        let p = dt::parse(&blob).unwrap();
        assert_eq!(
            check_boot_stage_dt(&p, REGION),
            Err(BootStageDtError::WardenNotNoMap { warden: REGION })
        );
    }

    #[test]
    fn refuses_a_carveout_not_no_map_or_over_warden() {
        let mut p = dt::parse(&os_dt_for(QEMU_DT)).unwrap();
        // The parser already refuses a carveout node without no-map (with its own message):
        let os = os_dt_for(QEMU_DT);
        let node = "/reserved-memory/modem@7c000000";
        let edited = dt::apply(&os, &DtEdit::new().remove_property(node, "no-map")).unwrap();
        let msg = alloc::format!("{}", dt::parse(&edited).unwrap_err());
        assert!(msg.contains("no-map"), "{msg}");
        // ... and the check refuses one whatever the parser let through.
        let modem = p.carveouts[0];
        for r in p.reserved.iter_mut().filter(|r| r.range == modem.range) {
            r.no_map = false;
        }
        assert_eq!(
            check_boot_stage_dt(&p, REGION),
            Err(BootStageDtError::CarveoutNotNoMap { name: modem.name, range: modem.range })
        );
        let mut p = dt::parse(&os_dt_for(QEMU_DT)).unwrap();
        p.carveouts[1].range = MemRange::new(HYP_BASE - 0x1000, HYP_BASE + 0x1000);
        assert!(matches!(
            check_boot_stage_dt(&p, REGION),
            Err(BootStageDtError::CarveoutOverlapsWarden { .. })
        ));
    }

    #[test]
    fn os_dt_needs_a_hyp_board_without_a_peer() {
        let plain = crate::boards::qemu_virt::BOARD;
        assert!(matches!(os_dt(QEMU_DT, &plain, &board_carveouts()), Err(OsDtError::NotHyp)));
        let with_peer = crate::boards::Board { sim_peer: true, ..BOARD };
        assert!(matches!(os_dt(QEMU_DT, &with_peer, &board_carveouts()), Err(OsDtError::SimPeer)));
    }

    #[test]
    fn entry_checks() {
        let p = dt::parse(&os_dt_for(QEMU_DT)).unwrap();
        let image = MemRange::new(HYP_BASE, HYP_BASE + (12 << 20));
        let check = |image: MemRange, x1: u64, next: u64| {
            check_entry(&p, HYP_BASE, HYP_REGION_SIZE, image, x1, next)
        };
        assert_eq!(check(image, 2, 0x6000_0000), Ok(REGION));
        assert_eq!(check(image, 1, 0x6000_0000), Err(HypEntryError::NotAarch64 { x1: 1 }));
        let moved = MemRange::new(HYP_BASE + 0x20_0000, HYP_BASE + (14 << 20));
        assert_eq!(
            check(moved, 2, 0x6000_0000),
            Err(HypEntryError::WrongBase { entered: moved.start, base: HYP_BASE })
        );
        let huge = MemRange::new(HYP_BASE, HYP_BASE + HYP_REGION_SIZE + 0x1000);
        assert!(matches!(check(huge, 2, 0x6000_0000), Err(HypEntryError::ImageTooLarge { .. })));
        // The next stage: in RAM, aligned, not warden's, not a carveout.
        for bad in [0x6000_0002, 0x1000_0000, HYP_BASE + 0x1000, 0x7c00_0000, 0x7d80_0000] {
            assert_eq!(check(image, 2, bad), Err(HypEntryError::BadNextStage { entry: bad }));
        }
        let msg = alloc::format!("{}", check(image, 2, 0x7c00_0000).unwrap_err());
        assert!(msg.contains("0x7c000000"), "{msg}");
    }
}
