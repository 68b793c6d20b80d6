//! The Snapdragon board descriptions against their real DTs (Linux's, from the Debian arm64
//! kernel package `cargo xtask` pins; `xtask/src/board_dtbs.rs` copies them, sha256-checked,
//! to `target/warden/board-dtbs/`, or where `WARDEN_BOARD_DTBS` says). Without the files these
//! tests say so and pass, unless `WARDEN_REQUIRE_BOARD_DTBS` is set (`cargo xtask test` sets
//! it, after providing them).

use std::string::String;
use std::vec::Vec;

use super::*;
use crate::arch::fake::Recorder;
use crate::boot_stage::smem::model::{Entry, Layout, SmemModel, ddr, ram_table};
use crate::boot_stage::{
    BootStageDtError, PlatformError, check_boot_stage_dt, check_entry, parse_platform,
};
use crate::dt::{
    CarveoutSource, Mmu500Info, OtherIommuKind, PeerId, PlatformInfo, UartKind, parse,
    set_memory_in_place,
};
use crate::mm::frame::test_support::HeapFrames;
use crate::mm::host_plan::{host_stage2_holes, host_stage2_split};
use crate::mm::{HostStage2Spec, MemRange, PAGE_SIZE, build_host_stage2};

fn r(start: u64, end: u64) -> MemRange {
    MemRange::new(start, end)
}

/// The board's DTB, or `None` (and a note) when it is absent and not required.
fn board_dtb(board: &Board) -> Option<Vec<u8>> {
    let dir = std::env::var("WARDEN_BOARD_DTBS").unwrap_or_else(|_| {
        String::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/warden/board-dtbs"))
    });
    let path = std::format!("{dir}/{}.dtb", board.name);
    match std::fs::read(&path) {
        Ok(blob) => Some(blob),
        Err(e) if std::env::var_os("WARDEN_REQUIRE_BOARD_DTBS").is_some() => {
            panic!("{path}: {e} (WARDEN_REQUIRE_BOARD_DTBS is set)")
        }
        Err(e) => {
            std::eprintln!(
                "SKIPPED: {path}: {e}; `cargo xtask board-dtbs` provides it (`cargo xtask test` \
                 does so and requires it)"
            );
            None
        }
    }
}

/// The board's SMEM region (`RamSource::QcomSmem`).
fn smem_region(board: &Board) -> MemRange {
    match board.ram_source {
        RamSource::QcomSmem { smem } => smem,
        RamSource::Dt => panic!("{}: a Snapdragon board reads its RAM from SMEM", board.name),
    }
}

/// A model of the board's SMEM as its boot loader leaves it (`boot_stage::smem::model`, from
/// the public format descriptions, not from a board): MSM8916's SMEM version 11 (global heap)
/// with a version-1 RAM partition table, SM8250's and SC7280's version 12 (global partition)
/// with a version-3 table, the table listing `banks` as system-memory SDRAM plus an IMEM entry
/// that is not RAM.
fn board_smem(board: &Board, banks: &[MemRange]) -> SmemModel {
    let imem = Entry { start: 0x1468_0000, length: 0x2_c000, category: 5, kind: 1 };
    let mut entries: Vec<Entry> = banks.iter().map(|b| ddr(b.start, b.size())).collect();
    entries.insert(1.min(entries.len()), imem);
    let smem = smem_region(board);
    let (layout, version) = match board.name {
        "apq8016-sbc" => (Layout::GlobalHeap, 1),
        _ => (Layout::GlobalPartition, 3),
    };
    SmemModel::new(smem.start, smem.size() as usize, layout, &ram_table(version, &entries))
}

/// The board's DT as warden reads it at boot: its `/memory` is the zero-sized placeholder a
/// later boot loader fills, so the RAM (`banks`, a layout of the board's DRAM: the real banks
/// are the board firmware's) comes from a modelled SMEM ([`board_smem`]) through the boot's own
/// [`crate::boot_stage::parse_platform`]; then the board's names are applied.
fn platform(board: &Board, banks: &[MemRange]) -> Option<PlatformInfo> {
    let blob = board_dtb(board)?;
    let unfilled = parse(&blob).expect_err("Qualcomm board DTs ship /memory zero-sized");
    assert_eq!(unfilled, crate::dt::DtError::NoMemory);
    let mut smem = board_smem(board, banks);
    let mut p = PlatformInfo::new();
    let read = parse_platform(board, &blob, &mut p, &mut smem).unwrap();
    assert_eq!(read, Some(banks.len()));
    assert_eq!(p.memory.as_slice(), banks);
    assert_eq!(smem.writes, 0, "SMEM is read only");
    std::eprintln!(
        "{}: {} withheld, {} device ranges, PlatformInfo {} bytes",
        board.name,
        p.withheld.len(),
        p.devices.len(),
        core::mem::size_of::<PlatformInfo>()
    );
    apply_named_regions(board, &mut p).unwrap();
    Some(p)
}

/// A node name without its `@unit`.
fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

fn carveouts(p: &PlatformInfo) -> Vec<(&str, MemRange, PeerId, CarveoutSource)> {
    p.carveouts.iter().map(|c| (base_name(&c.name), c.range, c.peer, c.source)).collect()
}

/// What every board shares: the console and CPUs match the description, its IOMMU is withheld
/// along with its registers, and the host's stage 2 built from the plan leaves warden's region
/// and the IOMMU out and maps carveouts as pages, the rest of RAM as RAM.
fn check_common(board: &Board, p: &PlatformInfo, warden: MemRange, iommu: MemRange) {
    let console = p.console.expect("stdout-path names a UART warden knows");
    assert_eq!((console.kind, console.regs.start), (board.console, board.early_uart));
    // The DT's console is the one warden selects, and its transmitter's registers are one
    // page warden maps as device memory.
    let early = board.early_console();
    assert_eq!(crate::console::select(early, p.console), (early, None));
    assert_eq!(early.pages().map(|pg| pg.size()), Some(crate::mm::PAGE_SIZE));
    assert!(console.regs.contains_range(&MemRange::new(
        early.base,
        early.base + crate::console::register_span(early.kind)
    )));
    assert!(!p.cpus.is_empty() && p.cpus.len() <= board.max_cpus, "{}", p.cpus.len());
    assert!(board.max_cpus.is_power_of_two());
    assert_eq!(p.psci, Some(crate::dt::PsciConduit::Smc));
    assert!(p.smmus.is_empty());
    match board.iommu {
        // warden's apps SMMU: neither a host device nor withheld (the host reaches its
        // registers only through warden's face), its pages out of the host's stage 2.
        Iommu::ArmMmu500 => {
            let apps = p.mmu500.as_ref().expect("the apps MMU-500");
            assert_eq!(apps.regs, iommu);
            assert!(!p.other_iommus.iter().any(|i| i.regs == iommu));
            assert!(!p.withheld.iter().any(|w| w.regs == Some(iommu)));
            // The GPU's own MMU-500 (`qcom,adreno-smmu`) is not warden's: still withheld.
            assert!(p.other_iommus.iter().all(|i| i.kind == OtherIommuKind::ArmMmu500));
        }
        // No back end: the IOMMU is withheld.
        Iommu::QcomMsmIommuV1 => {
            let apps = p.other_iommus.iter().find(|i| i.regs.start == iommu.start).unwrap();
            assert_eq!((apps.kind, apps.regs), (OtherIommuKind::QcomMsmIommuV1, iommu));
            assert!(p.mmu500.is_none() && p.mmu500_streams.is_empty());
            assert!(p.withheld.iter().any(|w| w.regs == Some(iommu)));
        }
        Iommu::SmmuV3 => unreachable!("no Snapdragon board has one"),
    }
    // The console (a GENI serial engine or UARTDM, not a kind known free of DMA) stays
    // withheld: warden's own. Neither it nor the IOMMU has a page of the host's.
    assert!(p.withheld.iter().any(|w| w.regs.is_some_and(|r| r.contains(console.regs.start))));
    for withheld in [iommu.start, console.regs.start] {
        assert!(!p.devices.iter().any(|d| d.contains(withheld)), "{withheld:#x}");
    }
    assert!(!p.devices.iter().any(|d| d.overlaps(&warden)));

    let holes = host_stage2_holes(p, warden, board.control_page, &p.gic_its);
    let split = host_stage2_split(p);
    let spec = HostStage2Spec {
        ram: &p.memory,
        devices: &p.devices,
        holes: &holes,
        split: &split,
        pa_range_bits: 40,
        vmid16: true,
    };
    let mut frames = HeapFrames::new(2048);
    let s2 = build_host_stage2(&spec, &mut frames, &Recorder::new(64)).unwrap();
    for hole in [warden.start, warden.end - PAGE_SIZE, iommu.start, console.regs.start] {
        assert!(s2.table.translate(hole).is_none(), "{hole:#x} must not be the host's");
    }
    for its in &p.gic_its {
        assert!(s2.table.translate(its.start).is_none());
    }
    // Each carveout's edges are entry boundaries: no leaf maps both carveout and other memory.
    let leaves = s2.table.mappings();
    for c in &p.carveouts {
        for addr in [c.range.start, c.range.end - PAGE_SIZE] {
            assert_eq!(s2.table.translate(addr).unwrap().pa, addr, "{} {addr:#x}", c.name);
        }
        for edge in [c.range.start, c.range.end] {
            let straddles = leaves.iter().find(|m| m.va < edge && edge < m.va + m.size);
            assert!(straddles.is_none(), "{}: {straddles:?} straddles {edge:#x}", c.name);
        }
    }
    // SMEM, reserved `no-map` in RAM, is the host's: its OS talks to the remote processors
    // through it.
    let smem = smem_region(board);
    for addr in [smem.start, smem.end - PAGE_SIZE] {
        assert_eq!(s2.table.translate(addr).map(|t| t.pa), Some(addr), "SMEM {addr:#x}");
    }
    // RAM around warden is the host's.
    let below = warden.start - PAGE_SIZE;
    if p.memory.iter().any(|b| b.contains(below)) {
        assert_eq!(s2.table.translate(below).unwrap().pa, below);
    }
}

#[test]
fn qcs6490_rb3gen2() {
    let board = &qcs6490_rb3gen2::BOARD;
    let Some(p) = platform(board, &RB3GEN2_6G) else { return };
    use CarveoutSource::QcomName;
    assert_eq!(
        carveouts(&p),
        [
            ("wpss", r(0x8480_0000, 0x8610_0000), PeerId::WLAN, QcomName),
            ("adsp", r(0x8610_0000, 0x8890_0000), PeerId::DSP, QcomName),
            ("cdsp", r(0x8890_0000, 0x8a70_0000), PeerId::DSP, QcomName),
            ("mpss", r(0x8b80_0000, 0x9ae0_0000), PeerId::MODEM, QcomName),
        ]
    );
    // Gunyah's own region, the secure heap next to the CDSP's (not a carveout: its name is
    // not `cdsp`), TrustZone's.
    for (name, start) in
        [("hyp", 0x8000_0000), ("cdsp-secure-heap", 0x8180_0000), ("qtee", 0xc130_0000)]
    {
        let res = p.reserved.iter().find(|res| base_name(&res.name) == name).unwrap();
        assert_eq!((res.range.start, res.no_map, res.carveout), (start, true, false), "{name}");
    }
    let gic = p.gicv3.as_ref().unwrap();
    assert_eq!(
        (gic.dist, gic.redist_regions.as_slice()),
        (r(0x17a0_0000, 0x17a1_0000), &[r(0x17a6_0000, 0x17b6_0000)][..])
    );
    // The ITS node is `status = "disabled"` in Linux's DT.
    assert!(p.gic_its.is_empty());
    assert_eq!(p.cpus.len(), 8);
    let warden = board.entry.region().unwrap();
    assert_eq!(warden, r(0x9fc0_0000, 0xa000_0000));
    assert!(p.reserved.iter().all(|res| !res.range.overlaps(&warden)), "free RAM in the DT");
    // The DT as Linux ships it does not reserve warden's region: the boot-stage check refuses
    // it until the boot loader's overlay (docs/boards/qcs6490-rb3gen2.md) does.
    assert_eq!(check_boot_stage_dt(&p, warden), Err(BootStageDtError::WardenNotNoMap { warden }));
    check_common(board, &p, warden, r(0x1500_0000, 0x1510_0000));
}

#[test]
fn qrb5165_rb5() {
    let board = &qrb5165_rb5::BOARD;
    let Some(p) = platform(board, &RB5_8G) else { return };
    use CarveoutSource::Board as ByBoard;
    assert_eq!(
        carveouts(&p),
        [
            ("cdsp_mem", r(0x8780_0000, 0x88c0_0000), PeerId::DSP, ByBoard),
            ("slpi_mem", r(0x88c0_0000, 0x8a10_0000), PeerId::DSP, ByBoard),
            ("adsp_mem", r(0x8a10_0000, 0x8be0_0000), PeerId::DSP, ByBoard),
        ]
    );
    let hyp = p.reserved.iter().find(|res| base_name(&res.name) == "hyp_mem").unwrap();
    assert_eq!((hyp.range, hyp.no_map), (r(0x8000_0000, 0x8060_0000), true));
    let warden = board.entry.region().unwrap();
    assert_eq!(warden, hyp.range);
    check_boot_stage_dt(&p, warden).unwrap();
    // TrustZone enters the image at hyp_mem's base; the next stage is RAM outside reserved.
    let image = r(warden.start, warden.start + (1 << 20));
    assert_eq!(check_entry(&p, warden.start, warden.size(), image, 2, 0xa000_0000), Ok(warden));
    assert!(check_entry(&p, warden.start, warden.size(), image, 2, 0x8a10_0000).is_err());
    let gic = p.gicv3.as_ref().unwrap();
    assert_eq!(gic.dist, r(0x17a0_0000, 0x17a1_0000));
    assert!(p.gic_its.is_empty(), "sm8250's DT has no ITS node");
    assert_eq!(p.cpus.len(), 8);
    check_common(board, &p, warden, r(0x1500_0000, 0x1510_0000));
}

#[test]
fn apq8016_sbc() {
    let board = &apq8016_sbc::BOARD;
    let Some(p) = platform(board, &DB410C_1G) else { return };
    assert_eq!(
        carveouts(&p),
        [("mpss", r(0x8680_0000, 0x8930_0000), PeerId::MODEM, CarveoutSource::QcomName)]
    );
    let warden = board.entry.region().unwrap();
    assert_eq!(warden, r(0x8640_0000, 0x8650_0000));
    let hyp = p.reserved.iter().find(|res| base_name(&res.name) == "hypervisor").unwrap();
    assert_eq!((hyp.range, hyp.no_map), (warden, true));
    check_boot_stage_dt(&p, warden).unwrap();
    let image = r(warden.start, warden.start + (512 << 10));
    assert_eq!(check_entry(&p, warden.start, warden.size(), image, 2, 0x8f60_0000), Ok(warden));
    let too_big = r(warden.start, warden.end + PAGE_SIZE);
    assert!(check_entry(&p, warden.start, warden.size(), too_big, 2, 0x8f60_0000).is_err());
    let gic = p.gicv2.as_ref().unwrap();
    assert_eq!((gic.dist, gic.cpu), (r(0x0b00_0000, 0x0b00_1000), r(0x0b00_2000, 0x0b00_4000)));
    assert_eq!(
        (gic.hyp, gic.vcpu),
        (Some(r(0x0b00_1000, 0x0b00_2000)), Some(r(0x0b00_4000, 0x0b00_6000)))
    );
    assert!(p.gicv3.is_none());
    assert_eq!(p.cpus.len(), 4);
    check_common(board, &p, warden, r(0x01ef_0000, 0x01ef_3000));
}

/// Every board's named regions must exist in its DT; a wrong base is caught.
#[test]
fn named_regions_must_match_the_dt() {
    let board = &qrb5165_rb5::BOARD;
    let Some(p) = platform(board, &RB5_8G) else { return };
    const MOVED: [NamedRegion; 1] =
        [NamedRegion { base: 0x8a20_0000, name: "adsp_mem", peer: Some(PeerId::DSP) }];
    let wrong = Board { named_regions: &MOVED, ..*board };
    let mut q = p.clone();
    assert_eq!(
        apply_named_regions(&wrong, &mut q),
        Err(NamedRegionError::Missing { name: "adsp_mem", base: 0x8a20_0000 })
    );
    // The board's carveouts are exactly the remote processors' `memory-region`s in the DT
    // (checked by hand from `qcom,sm8250-{adsp,cdsp,slpi}-pas`): three, all DSPs.
    assert_eq!(p.carveouts.iter().filter(|c| c.peer == PeerId::DSP).count(), 3);
}

#[test]
fn descriptions_are_consistent() {
    for board in SNAPDRAGON {
        let region = board.entry.region().unwrap();
        assert!(region.start.is_multiple_of(2 << 20) || region.size() <= 2 << 20, "{}", board.name);
        assert!(board.scm_firmware && board.firmware == Firmware::Smccc, "{}", board.name);
        assert!(!board.sim_peer && board.max_cpus.is_power_of_two());
        assert_ne!(board.console, UartKind::Pl011);
    }
}

/// RB3 Gen 2, 6 GiB of LPDDR4X from 0x8000_0000 (the 8 GiB variant: [`RB3GEN2_8G`]), as SMEM
/// tables list DDR: split at 4 GiB. Modelled, not read from a board.
const RB3GEN2_6G: [MemRange; 2] =
    [MemRange::new(0x8000_0000, 0x1_0000_0000), MemRange::new(0x1_0000_0000, 0x2_0000_0000)];
const RB3GEN2_8G: [MemRange; 2] =
    [MemRange::new(0x8000_0000, 0x1_0000_0000), MemRange::new(0x1_0000_0000, 0x2_8000_0000)];
/// RB5, 8 GiB of LPDDR5 from 0x8000_0000. Modelled.
const RB5_8G: [MemRange; 2] = RB3GEN2_8G;
/// DB410c, 1 GiB of LPDDR3 from 0x8000_0000. Modelled.
const DB410C_1G: [MemRange; 1] = [MemRange::new(0x8000_0000, 0xc000_0000)];

/// Each board with its RAM from a modelled SMEM.
fn every_board() -> Vec<(&'static Board, PlatformInfo)> {
    [
        (&qcs6490_rb3gen2::BOARD, &RB3GEN2_6G[..]),
        (&qrb5165_rb5::BOARD, &RB5_8G[..]),
        (&apq8016_sbc::BOARD, &DB410C_1G[..]),
    ]
    .into_iter()
    .filter_map(|(board, ram)| Some((board, platform(board, ram)?)))
    .collect()
}

/// The architected timer's PPIs as each real DT gives them (secure, non-secure, virtual,
/// hypervisor physical). Linux 6.12's sm8250 and sc7280 DTs use the usual 13, 14, 11, 10 (the
/// sdm845 DT's 1, 2, 3, 0 is not theirs); msm8916's are 2, 3, 4, 1. None is a PPI warden
/// takes, and a warden that took the hypervisor timer's usual PPI 10 would collide on RB5 and
/// RB3 Gen 2 but not on DB410c, whose hypervisor timer is PPI 1.
#[test]
fn timer_ppis_on_the_real_dts() {
    for (board, p) in every_board() {
        let timer = p.timer.as_ref().expect("an arm,armv8-timer node");
        let expected: &[u8] =
            if board.name == "apq8016-sbc" { &[2, 3, 4, 1] } else { &[13, 14, 11, 10] };
        assert_eq!(timer.ppis.as_slice(), expected, "{}", board.name);
        assert_eq!(timer.collides(crate::dt::WARDEN_PPIS), None, "{}", board.name);
        let hyp_timer = expected[3];
        assert_eq!(timer.collides(&[10]), (hyp_timer == 10).then_some(10), "{}", board.name);
        assert_eq!(timer.collides(&[9, hyp_timer]), Some(hyp_timer), "{}", board.name);
    }
}

/// The register DB410c's RPM release writes (`boot_stage::qcom_hyp`) is GCC's, as the DT
/// describes it, and GCC is not the host's directly (withheld with the rest of `/soc`).
#[test]
fn db410c_rpm_release_register_is_in_gcc() {
    let Some((_, p)) = every_board().into_iter().find(|(b, _)| b.name == "apq8016-sbc") else {
        return;
    };
    let EntryConvention::Hyp { rpm_release: Some(rpm), .. } = apq8016_sbc::BOARD.entry else {
        panic!("DB410c releases the RPM");
    };
    let gcc = p.withheld.iter().find(|w| w.regs.is_some_and(|g| g.contains(rpm.register)));
    let gcc = gcc.expect("a withheld node covers GCC_APSS_MISC");
    assert!(gcc.path.as_str().contains("clock-controller@1800000"), "{}", gcc.path.as_str());
    for other in [qcs6490_rb3gen2::BOARD, qrb5165_rb5::BOARD] {
        assert!(!matches!(other.entry, EntryConvention::Hyp { rpm_release: Some(_), .. }));
    }
}

/// dtoolkit 0.4.1, the newest on crates.io, refuses every Snapdragon DT: its property-name
/// check allows 31 characters and the CoreSight nodes carry
/// `arm,coresight-loses-context-with-cpu` (36). warden's own reader takes them, and no path
/// for these boards rewrites a DT: boot-stage warden never patches the OS's DT, and the tests
/// fill `/memory` in place (`dt::set_memory_in_place`). When a dtoolkit release lifts the
/// limit this test fails: then `dt::apply` works on these DTs and the docs can say so.
#[test]
fn dtoolkit_refuses_the_snapdragon_dts_warden_reads_them() {
    const LONG: &str = "arm,coresight-loses-context-with-cpu";
    for board in SNAPDRAGON {
        let Some(blob) = board_dtb(board) else { continue };
        let long = LONG.as_bytes();
        assert!(blob.windows(long.len()).any(|w| w == long), "{}", board.name);
        assert!(LONG.len() > 31);
        let mut filled = blob.clone();
        set_memory_in_place(&mut filled, &[r(0x8000_0000, 0xc000_0000)]).unwrap();
        assert!(parse(&filled).is_ok(), "{}", board.name);
        let refused = crate::dt::apply(&filled, &crate::dt::DtEdit::new());
        assert!(refused.is_err(), "{}: dtoolkit now accepts it", board.name);
    }
}

/// The boot loader's reservation (boards/qcs6490-rb3gen2/README.md: `warden@9fc00000`, 4 MiB,
/// `no-map`) is what the boot-stage check needs on RB3 Gen 2; a shorter or mapped one is not.
#[test]
fn rb3gen2_reserved_by_the_recipe_passes_the_check() {
    let board = &qcs6490_rb3gen2::BOARD;
    let Some(p) = platform(board, &RB3GEN2_6G) else { return };
    let warden = board.entry.region().unwrap();
    let with = |range: MemRange, no_map: bool| {
        let mut q = p.clone();
        let name = crate::dt::NodeName::from("warden@9fc00000").unwrap();
        q.reserved.push(crate::dt::ReservedRegion { name, range, no_map, carveout: false });
        q.reserved.sort_unstable_by_key(|res| res.range.start);
        check_boot_stage_dt(&q, warden)
    };
    assert_eq!(with(r(0x9fc0_0000, 0xa000_0000), true), Ok(()));
    let refused = Err(BootStageDtError::WardenNotNoMap { warden });
    assert_eq!(with(r(0x9fc0_0000, 0x9ff0_0000), true), refused);
    assert_eq!(with(r(0x9fc0_0000, 0xa000_0000), false), refused);
}

#[test]
fn snapdragon_mmu500_boards_select_the_mmu500_back_end() {
    assert_eq!(qrb5165_rb5::BOARD.iommu.back_end(), Some(IommuBackEnd::Mmu500));
    assert_eq!(qcs6490_rb3gen2::BOARD.iommu.back_end(), Some(IommuBackEnd::Mmu500));
    assert_eq!(apq8016_sbc::BOARD.iommu.back_end(), None, "msm-iommu-v1 has none");
    assert_eq!(qemu_virt::BOARD.iommu.back_end(), Some(IommuBackEnd::SmmuV3));
    assert_eq!(qemu_virt_tz::BOARD.iommu.back_end(), Some(IommuBackEnd::SmmuV3));
}

/// What the boot finds on the real DTs for the apps MMU-500 (`qcom,*-smmu-500`, `arm,mmu-500`
/// at 0x1500_0000, not the GPU's `qcom,adreno-smmu`): its interrupts, and the host streams of
/// every kept device naming it, which `smmu::mmu500::host_streams` accepts (masked entries
/// merged as Linux merges them). The devices behind it are the host's; DB410c keeps its
/// documented limit (nothing behind `msm-iommu-v1` is).
#[test]
fn apps_mmu500_and_its_host_streams_from_the_real_dts() {
    use crate::smmu::mmu500::{StreamMatch, host_streams};
    let m = |id, mask| StreamMatch { id, mask };
    for (board, p) in every_board() {
        let Some(apps) = p.mmu500.as_ref() else {
            assert_eq!(board.iommu, Iommu::QcomMsmIommuV1, "{}", board.name);
            assert!(
                p.withheld.iter().filter(|w| w.why == crate::dt::Withheld::OtherIommu).count() > 0
            );
            continue;
        };
        assert_eq!(board.iommu.back_end(), Some(IommuBackEnd::Mmu500), "{}", board.name);
        let Mmu500Info { regs, iommu_cells, global_irqs, global_irq, context_irqs, .. } = apps;
        assert_eq!((*regs, *iommu_cells), (r(0x1500_0000, 0x1510_0000), 2), "{}", board.name);
        let streams = host_streams(&p.mmu500_streams).unwrap();
        // Each kept device with `iommus` is a path the host has: as many streams as
        // specifiers, less the merged ones.
        let kept = |path: &str| !p.withheld.iter().any(|w| path.starts_with(w.path.as_str()));
        match board.name {
            "qrb5165-rb5" => {
                assert_eq!((*global_irqs, *global_irq), (2, Some(32 + 0x40)));
                assert_eq!(context_irqs.first(), Some(&(32 + 0x61)));
                // UFS, the crypto engine's set (0x586/0x11 = 0x596/0x11), SD, the display,
                // the video codec.
                for s in [
                    m(0xe0, 0),
                    m(0x4e0, 0),
                    m(0x586, 0x11),
                    m(0x592, 0),
                    m(0x4a0, 0),
                    m(0x820, 0x402),
                    m(0x2100, 0x400),
                ] {
                    assert!(streams.contains(&s), "{s}");
                }
                assert!(!streams.contains(&m(0x596, 0x11)), "merged");
                assert_eq!(streams.len(), 13);
                // USB's core sits in its withheld `qcom,*-dwc3` glue node: not the host's.
                assert!(!streams.iter().any(|s| s.matches(0x0) || s.matches(0x20)));
            }
            "qcs6490-rb3gen2" => {
                assert_eq!((*global_irqs, *global_irq), (1, Some(32 + 0x41)));
                assert_eq!(context_irqs.first(), Some(&(32 + 0x60)));
                // A QUP wrapper, UFS, the crypto engine, the trace router, the display.
                for s in [m(0x43, 0), m(0x80, 0), m(0x4e4, 0x11), m(0x4c0, 0), m(0x900, 0x402)] {
                    assert!(streams.contains(&s), "{s}");
                }
                // Disabled in this DT (the SD slot), or inside a withheld glue node (USB's
                // `qcom,*-dwc3` wrapper has no `iommus` of its own): not the host's.
                assert!(!streams.contains(&m(0xc0, 0)) && !streams.contains(&m(0xe0, 0)));
            }
            other => panic!("{other}"),
        }
        assert!(context_irqs.len() >= crate::smmu::v2::regs::NUM_CB);
        // The GPU's streams (on its own SMMU) and the DSPs' FastRPC sessions (under their
        // withheld remoteproc nodes) are not the host's.
        assert!(!streams.iter().any(|s| s.matches(0x1001) || s.matches(0x1803)), "{}", board.name);
        assert!(kept("/soc@0/ufshc@1d84000") || kept("/soc@0/ufs@1d84000"));
        // Nothing is withheld for being behind the apps SMMU any more (only the GPU's, behind
        // its own SMMU).
        for w in p.withheld.iter().filter(|w| w.why == crate::dt::Withheld::OtherIommu) {
            assert!(
                w.path.as_str().contains("gpu") || w.path.as_str().contains("gmu"),
                "{}",
                w.path
            );
        }
    }
}

/// The boot's MMU-500 step (`boot::mmu500::take`: `Mmu500Config::for_board` into
/// `Mmu500Backend::init`) over the real RB5 / RB3 Gen 2 DTs, on the register model as the
/// firmware leaves it (a DSP's FastRPC stream translated by a firmware bank, the display's
/// splash stream in bypass): which SMRs, S2CRs and banks end up programmed, the host VMID
/// invalidated before any host stream matches, a handoff's invalidation (the handoff
/// sequences' `DmaStage2` step) completed on the model, and hostile `iommus` refused with a
/// defined error and nothing enabled. The boot runs this before the host's first instruction
/// (`boot::primary_main`: `take_smmu`, then this, long before `enter_host_on_this_cpu`).
#[test]
fn the_boot_takes_the_apps_mmu500_of_the_real_dts_on_the_model() {
    use crate::handoff::DmaStage2;
    use crate::smmu::S2Config;
    use crate::smmu::mmu500::model::{Access, Mmu500Model, ModelConfig, Route};
    use crate::smmu::mmu500::regs::*;
    use crate::smmu::mmu500::{
        Mmu500Backend, Mmu500Config, Mmu500Error, StreamMatch, host_streams,
    };
    const ROOT: u64 = 0x8_1234_0000;
    const VTCR: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16);
    const FASTRPC_SID: u32 = 0x1803;
    let s2 = S2Config { vtcr: VTCR, root_pa: ROOT, vmid: 1 };
    let valid = |s: StreamMatch| mask32(SMR_F::VALID) | s.id | (s.mask << 16);
    let firmware = |splash: StreamMatch| {
        let m = Mmu500Model::new(ModelConfig::QCOM);
        m.preset_bank(0, 5, mask32(SCTLR_F::M), 0x9_0000_0000);
        m.preset_stream(0, valid(StreamMatch::exact(FASTRPC_SID)), 0);
        m.preset_stream(1, valid(splash), S2CR_TYPE_BYPASS << 16);
        m
    };
    let mut boards = 0;
    for (board, p) in every_board() {
        if p.mmu500.is_none() {
            continue;
        }
        boards += 1;
        let streams = host_streams(&p.mmu500_streams).unwrap();
        let display = *streams.iter().find(|s| s.mask == 0x402).unwrap();
        let m = firmware(display);
        assert_eq!(
            m.route(display.id),
            Route::GlobalBypass,
            "before warden: CLIENTPD, as after the Gunyah exit"
        );
        let mut b = Mmu500Backend::init(&m, Mmu500Config::for_board(&p, s2)).unwrap();
        let bank = b.stage2_bank();
        assert_ne!(bank, 0, "{}: the firmware's bank is never taken", board.name);
        let stage2 = Route::Translate { bank, s1_ttbr0: None, s2_root: Some(ROOT), vmid: 1 };
        for s in &streams {
            // Every ID of every host stream (the first and last of its set) on warden's
            // stage 2, none in bypass.
            for sid in [s.id, s.id | s.mask] {
                assert_eq!(m.route(sid), stage2, "{}: {sid:#x} of {s}", board.name);
            }
        }
        // The peer's stream and bank as found; anything else faults.
        assert_eq!(
            m.route(FASTRPC_SID),
            Route::Translate { bank: 0, s1_ttbr0: None, s2_root: Some(0x9_0000_0000), vmid: 5 }
        );
        assert_eq!(m.route(0x7fff), Route::Unmatched { fault: true });
        // Programmed: one SMR per host stream with its mask (the splash's SMR reused), the
        // peer's untouched.
        let smrs: Vec<u32> =
            (0..32).map(|i| m.smr(i)).filter(|smr| smr & mask32(SMR_F::VALID) != 0).collect();
        assert_eq!(smrs.len(), streams.len() + 1, "{}", board.name);
        for s in &streams {
            assert!(smrs.contains(&valid(*s)), "{}: {s}", board.name);
        }
        assert_eq!((m.smr(0), m.s2cr(0)), (valid(StreamMatch::exact(FASTRPC_SID)), 0));
        assert_eq!(m.cbar(bank), 1, "stage-2 bank, host VMID");
        assert_eq!(m.bad_accesses(), 0);
        // The host VMID invalidated and synced before the first host SMR matches.
        let log = m.take_log();
        let at = |what: &dyn Fn(&Access) -> bool| log.iter().position(what).unwrap();
        let layout = m.layout();
        let is_write = |a: &Access, off: u32| matches!(a, Access::Write { at, .. } if *at == layout.decode(off));
        let tlbivmid = at(&|a| is_write(a, TLBIVMID));
        let gsync = at(&|a| is_write(a, STLBGSYNC));
        let first_smr = at(
            &|a| matches!(a, Access::Write { at: Space::Gr0(o), value } if (SMR_BASE..SMR_BASE + 0x80).contains(o) && *value as u32 & mask32(SMR_F::VALID) != 0),
        );
        let scr0 = at(&|a| is_write(a, SCR0));
        assert!(tlbivmid < gsync && gsync < first_smr && first_smr < scr0, "{}", board.name);

        // A handoff's SMMU step: TLBIVMID of the host, TLBGSYNC, polled to completion.
        let before = m.syncs_completed();
        let carveout = p.carveouts[0].range;
        assert_eq!(b.invalidate_ipa_range(1, carveout), Ok(()));
        let log = m.take_log();
        let tlbi = log
            .iter()
            .position(|a| matches!(a, Access::Write { value: 1, .. }) && is_write(a, TLBIVMID));
        let sync = log.iter().position(|a| is_write(a, STLBGSYNC));
        assert!(tlbi.unwrap() < sync.unwrap(), "{}", board.name);
        assert_eq!(m.syncs_completed(), before + 1, "completed before the handoff goes on");
        assert!(b.invalidate_ipa_range(2, carveout).is_err(), "only the host's VMID");

        // Hostile `iommus`: a SID beyond NUMSIDB, a mask sharing part of a host stream, the
        // peer's stream. Refused, with the firmware's configuration left as it was.
        // The display's set (mask 0x402) and one sharing only its first ID (mask 0x4000).
        let partial = StreamMatch { id: display.id, mask: 0x4000 };
        for (extra, err) in [
            (StreamMatch::exact(0x8000), Mmu500Error::SidTooWide(0x8000)),
            (partial, Mmu500Error::OverlappingStreams { first: display, second: partial }),
            (
                StreamMatch::exact(FASTRPC_SID),
                Mmu500Error::PeerStream { index: 0, smr: valid(StreamMatch::exact(FASTRPC_SID)) },
            ),
        ] {
            let mut q = p.clone();
            q.mmu500_streams.push(extra);
            let m = firmware(display);
            let refused = Mmu500Backend::init(&m, Mmu500Config::for_board(&q, s2)).err();
            assert_eq!(refused, Some(err), "{}: {extra}", board.name);
            assert_eq!(m.scr0() & mask32(SCR0_F::CLIENTPD), 1, "nothing enabled");
            assert_eq!(m.route(display.id), Route::GlobalBypass, "as the firmware left it");
        }
    }
    if board_dtb(&qrb5165_rb5::BOARD).is_some() {
        assert_eq!(boards, 2);
    }
}

/// The host's face on the real MMU-500 back end, over the real RB5 / RB3 Gen 2 DTs and the
/// register model as the firmware leaves it (`boot::mmu500::take`: `Mmu500Backend::init`, then
/// `face_config`): Linux's arm-smmu probe, reset and attach of a stage-1 domain (sCR0,
/// SMR/S2CR, CBAR/CBA2R/TCR/TTBR/MAIR/SCTLR, TLBIASID + TLBSYNC) end in the model as a nested
/// bank over warden's stage-2 bank with a real ASID warden allocated, for every ID of the DT's
/// masked streams; a hostile host (bypass, a stage-2 bank, a peer's stream, tables in a
/// carveout) gets the face's documented answers and the peer's stream and bank stay as found;
/// a fault the model records on the nested bank reaches the face's FSR/FAR/FSYNR0/CBFRSYNRA;
/// the face's interrupts are the DT's.
#[test]
fn the_hosts_mmu500_face_drives_nested_banks_on_the_real_dts() {
    use crate::host_dt::Mmu500Irqs;
    use crate::smmu::backend::RealSte;
    use crate::smmu::mmu500::model::{Access, Mmu500Model, ModelConfig, Route};
    use crate::smmu::mmu500::regs::*;
    use crate::smmu::mmu500::{Mmu500Backend, Mmu500Config, StreamMatch, host_streams};
    use crate::smmu::v2::regs as face;
    use crate::smmu::v2::{Route as FaceRoute, VirtMmu500};
    const ROOT: u64 = 0x8_1234_0000;
    const VTCR: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16);
    const FASTRPC_SID: u32 = 0x1803;
    const T1: u64 = 0x9_4100_0000;
    let s2 = crate::smmu::S2Config { vtcr: VTCR, root_pa: ROOT, vmid: 1 };
    let valid = |s: StreamMatch| mask32(SMR_F::VALID) | s.id | (s.mask << 16);
    let mut boards = 0;
    for (board, p) in every_board() {
        let Some(info) = p.mmu500.as_ref() else { continue };
        boards += 1;
        let name = board.name;
        let irqs = Mmu500Irqs::from_dt(info).unwrap();
        assert_eq!(irqs.global, info.global_irq.unwrap());
        assert_eq!(irqs.contexts[..], info.context_irqs[..face::NUM_CB], "{name}");
        let m = Mmu500Model::new(ModelConfig::QCOM);
        m.preset_bank(0, 5, mask32(SCTLR_F::M), 0x9_0000_0000);
        m.preset_stream(0, valid(StreamMatch::exact(FASTRPC_SID)), 0);
        let config = Mmu500Config::for_board(&p, s2);
        let mut b = Mmu500Backend::init(&m, config.clone()).unwrap();
        let s2_bank = b.stage2_bank();
        let face_config = b.face_config(&config).unwrap();
        assert_eq!(face_config.host_streams, host_streams(&p.mmu500_streams).unwrap());
        assert_eq!(face_config.peer_streams, [StreamMatch::exact(FASTRPC_SID)]);
        assert_eq!(face_config.initial, RealSte::Stage2Only);
        assert_eq!(face_config.oas_field, 2, "{name}: IAS = OAS = warden's 40-bit IPA space");
        let streams = face_config.host_streams.clone();
        let mut v = VirtMmu500::new(face_config);
        let stage2 =
            Route::Translate { bank: s2_bank, s1_ttbr0: None, s2_root: Some(ROOT), vmid: 1 };
        let peer = m.route(FASTRPC_SID);
        // Before the host configures anything: warden's stage 2, as the boot left it.
        assert_eq!(m.route(streams[0].id), stage2);
        let w = |v: &mut VirtMmu500, b: &mut Mmu500Backend<&Mmu500Model>, off: u32, val: u64| {
            let size =
                if matches!(off & 0xfff, 0x20 | 0x28) && off >= face::CB_BASE { 8 } else { 4 };
            v.mmio_write(off, size, val, b)
        };
        let cb = |n: u32, reg: u32| face::CB_BASE + n * face::PAGE + reg;

        // arm_smmu_device_cfg_probe: the IDs (a face of 16 groups, 8 banks, stage 1).
        let id0 = v.mmio_read(face::SIDR0, 4, &mut b) as u32;
        assert_eq!(id0 & (3 << 28), 0, "no stage 2, no nesting offered");
        assert_eq!(v.mmio_read(face::SIDR1, 4, &mut b) as u32 & 0xff, face::NUM_CB as u32);
        // arm_smmu_device_reset (+ arm_mmu500_reset): every group fault, banks off, TLBs.
        let gfsr = v.mmio_read(face::SGFSR, 4, &mut b);
        w(&mut v, &mut b, face::SGFSR, gfsr);
        for i in 0..face::NUM_SMRG as u32 {
            w(&mut v, &mut b, face::S2CR_BASE + 4 * i, 2 << 16);
            w(&mut v, &mut b, face::SMR_BASE + 4 * i, 0);
        }
        for n in 0..face::NUM_CB as u32 {
            w(&mut v, &mut b, cb(n, face::CB_SCTLR), 0);
            w(&mut v, &mut b, cb(n, face::CB_FSR), 0xffff_ffff);
        }
        w(&mut v, &mut b, face::TLBIALLNSNH, 0);
        w(&mut v, &mut b, face::SACR, 0);
        w(&mut v, &mut b, face::STLBGSYNC, 0);
        assert_eq!(v.mmio_read(face::STLBGSTATUS, 4, &mut b), 0);
        w(&mut v, &mut b, face::SCR0, (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 10));
        for s in &streams {
            assert_eq!(m.route(s.id), Route::Fault, "{name}: {s} faults after the host's reset");
        }
        assert_eq!(m.route(FASTRPC_SID), peer);

        // Attach a stage-1 domain: bank 0, ASID 3, for the first stream and the display's
        // masked set (groups 0 and 1 as arm_smmu_write_sme writes them: S2CR, then SMR).
        let display = *streams.iter().find(|s| s.mask == 0x402).unwrap();
        let ufs = streams[0];
        let write_bank = |v: &mut VirtMmu500, b: &mut Mmu500Backend<&Mmu500Model>, ttb: u64| {
            w(v, b, face::PAGE + face::CBA2R_BASE, 1);
            w(v, b, face::PAGE + face::CBAR_BASE, (1 << 16) | (3 << 8) | (0xf << 12));
            w(v, b, cb(0, face::CB_TCR2), (7 << 15) | (1 << 4) | 2);
            w(v, b, cb(0, face::CB_TCR), 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23));
            w(v, b, cb(0, face::CB_TTBR0), ttb | (3 << 48));
            w(v, b, cb(0, face::CB_TTBR1), 3 << 48);
            w(v, b, cb(0, face::CB_MAIR0), 0x0004_04ff);
            w(v, b, cb(0, face::CB_SCTLR), (1 << 6) | (1 << 5) | (1 << 2) | (1 << 1) | 1)
        };
        write_bank(&mut v, &mut b, T1);
        for (group, s) in [ufs, display].iter().enumerate() {
            w(&mut v, &mut b, face::S2CR_BASE + 4 * group as u32, 0);
            w(&mut v, &mut b, face::SMR_BASE + 4 * group as u32, u64::from(valid(*s)));
        }
        m.take_log();
        // arm_smmu_tlb_inv_context_s1: TLBIASID, TLBSYNC, TLBSTATUS polled.
        w(&mut v, &mut b, cb(0, face::CB_TLBIASID), 3);
        w(&mut v, &mut b, cb(0, face::CB_TLBSYNC), 0);
        assert_eq!(v.mmio_read(cb(0, face::CB_TLBSTATUS), 4, &mut b), 0);
        let real = v.real_asid(ufs.id).unwrap();
        let nested = b.bank_of(ufs.id).unwrap();
        assert_ne!(nested, s2_bank);
        assert_ne!(nested, 0, "{name}: the firmware's bank is never the host's");
        let translated = Route::Translate {
            bank: nested,
            s1_ttbr0: Some(T1 | (u64::from(real) << 48)),
            s2_root: Some(ROOT),
            vmid: 1,
        };
        for sid in [ufs.id, ufs.id | ufs.mask, display.id, display.id | display.mask] {
            assert_eq!(m.route(sid), translated, "{name}: {sid:#x} nested over warden's stage 2");
        }
        assert_eq!(
            m.cbar(nested),
            (CBAR_TYPE_NESTED << CBAR_NESTED_F::TYPE.shift)
                | (u32::from(s2_bank) << CBAR_NESTED_F::CBNDX.shift),
            "{name}: stage 1 with stage 2, over warden's stage-2 bank"
        );
        let log: Vec<Space> = m
            .take_log()
            .into_iter()
            .filter_map(|a| match a {
                Access::Write { at, .. } => Some(at),
                Access::Read { .. } => None,
            })
            .collect();
        let tlbi = log.iter().position(|a| *a == Space::Cb(nested, CB_TLBIASID)).unwrap();
        let sync = log.iter().position(|a| *a == Space::Cb(nested, CB_TLBSYNC)).unwrap();
        assert!(tlbi < sync, "{name}: the host's TLBIASID, then its TLBSYNC, on the real bank");
        let (_, stale) = m.dma(ufs.id);
        assert!(!stale);

        // Tables in a carveout: the bank is still nested over warden's stage 2, which leaves
        // the carveout out, so the walk faults; the fault reaches the face as an external
        // abort on the walk, with the stream ID, and raises bank 0's interrupt (CFIE).
        let carveout = p.carveouts[0].range.start;
        write_bank(&mut v, &mut b, carveout);
        let nested = b.bank_of(ufs.id).unwrap();
        let real = u64::from(v.real_asid(ufs.id).unwrap());
        let in_carveout = Route::Translate {
            bank: nested,
            s1_ttbr0: Some(carveout | (real << 48)),
            s2_root: Some(ROOT),
            vmid: 1,
        };
        assert_eq!(m.route(ufs.id), in_carveout, "{name}: nested over warden's stage 2");
        let walk_abort = mask32(FSR_F::EF);
        m.record_fault(nested, walk_abort, 0x1000, mask32(FSYNR0_F::PTWF), display.id | 2);
        let events = b.poll_faults();
        assert_eq!(events.len(), 1);
        let notify = v.forward_event(&events[0]);
        assert_eq!(notify.context_irqs, 1, "{name}: bank 0's interrupt");
        assert_eq!(v.mmio_read(cb(0, face::CB_FSR), 4, &mut b) as u32, walk_abort);
        assert_eq!(v.mmio_read(cb(0, face::CB_FAR), 8, &mut b), 0x1000);
        assert_ne!(
            v.mmio_read(cb(0, face::CB_FSYNR0), 4, &mut b) as u32 & mask32(FSYNR0_F::PTWF),
            0
        );
        let synra = v.mmio_read(face::PAGE + face::CBFRSYNRA_BASE, 4, &mut b) as u32;
        assert_eq!(synra, display.id | 2, "{name}: the stream ID as the SMMU saw it");

        // Hostile: bypass for everything, a stream in bypass, a stage-2 bank, a peer's stream.
        w(&mut v, &mut b, face::SCR0, 1 | (1 << 10));
        assert_eq!(v.stats().bypass_refusals, 1);
        assert_eq!(m.scr0() & mask32(SCR0_F::CLIENTPD), 0, "{name}: never real bypass");
        w(&mut v, &mut b, face::S2CR_BASE, 1 << 16);
        assert_eq!(m.route(ufs.id), stage2, "{name}: S2CR bypass is warden's stage 2 alone");
        w(&mut v, &mut b, face::PAGE + face::CBAR_BASE + 4, 0);
        w(&mut v, &mut b, face::S2CR_BASE, 1);
        assert_eq!(v.route(ufs.id), Some(FaceRoute::InvalidContext));
        assert_eq!(m.route(ufs.id), Route::Fault, "{name}: a stage-2 bank is refused (ICF)");
        let smr_before = (m.smr(0), m.s2cr(0), m.cbar(0));
        for smr in
            [valid(StreamMatch::exact(FASTRPC_SID)), valid(StreamMatch { id: 0, mask: 0x7fff })]
        {
            w(&mut v, &mut b, face::SMR_BASE + 4 * 5, u64::from(smr));
            assert_eq!(
                v.mmio_read(face::SMR_BASE + 4 * 5, 4, &mut b) as u32,
                smr & !mask32(SMR_F::VALID),
                "{name}: {smr:#x} is stored invalid"
            );
        }
        assert_eq!(v.stats().peer_smr_refusals, 2);
        assert_eq!((m.smr(0), m.s2cr(0), m.cbar(0)), smr_before, "{name}: the peer's, as found");
        assert_eq!(m.route(FASTRPC_SID), peer);
        assert_eq!(m.route(display.id), in_carveout, "{name}: the display's stream unaffected");
        assert_eq!(m.bad_accesses(), 0);
    }
    if board_dtb(&qrb5165_rb5::BOARD).is_some() {
        assert_eq!(boards, 2);
    }
}

/// The host stage 2 warden builds for `p` (as `crate::boot::host_stage2` does), for counting
/// its table pages.
fn host_stage2_table_pages(board: &Board, p: &PlatformInfo, warden: MemRange) -> usize {
    let holes = host_stage2_holes(p, warden, board.control_page, &p.gic_its);
    let split = host_stage2_split(p);
    let spec = HostStage2Spec {
        ram: &p.memory,
        devices: &p.devices,
        holes: &holes,
        split: &split,
        pa_range_bits: 40,
        vmid16: true,
    };
    let mut frames = HeapFrames::new(4096);
    build_host_stage2(&spec, &mut frames, &Recorder::new(64)).unwrap().stats.table_pages
}

/// Each Snapdragon board's pool (`crate::mm::link_layout`: what the linker gives it at least,
/// less the heap) holds what the boot's checks ask of it on the board's real DT: before the
/// host stage 2, `least_frames_for` the carveouts; after it, the host stage 2's tables plus the
/// run-time reserve. A board whose layout falls short would stop at boot with a fatal error.
#[test]
fn each_board_pool_covers_what_its_dt_needs() {
    use crate::mm::footprint::{least_frames_for, runtime_frame_reserve};
    use crate::mm::link_layout::link_layout;
    let mut short = Vec::new();
    for (board, p) in every_board() {
        let layout = link_layout(board.name).unwrap();
        let frames = ((layout.pool_min - layout.heap) / PAGE_SIZE) as usize;
        let warden = board.entry.region().unwrap();
        let carveouts = || p.carveouts.iter().map(|c| c.range);
        let least = least_frames_for(&layout, carveouts());
        let host = host_stage2_table_pages(board, &p, warden);
        let after_boot = host + runtime_frame_reserve(&layout, carveouts());
        std::eprintln!(
            "{}: pool {} KiB (heap {} KiB, {frames} frames); least {least} frames before the host \
             stage 2, {host} host stage-2 tables + reserve = {after_boot} after it",
            board.name,
            layout.pool_min / 1024,
            layout.heap / 1024
        );
        if least.max(after_boot) > frames {
            short.push(board.name);
        }
    }
    assert!(short.is_empty(), "pools short of their DT's need: {short:?}");
}

/// warden's own EL2 stage-1 on each Snapdragon board's real DT (its image in its region, the
/// region's RAM around it, every carveout and `no-map` region left out, the console and GIC
/// distributor mapped as `crate::boot::build_el2_tables` maps them) fits the BSS pages
/// reserved for it (its `link_layout` entry) with [`EL2_TABLE_MARGIN`] to spare.
#[test]
fn el2_boot_tables_fit_on_every_board() {
    use crate::mm::el2::{El2Plan, WardenImage, warden_regions};
    use crate::mm::link_layout::{EL2_TABLE_MARGIN, link_layout};
    use crate::mm::{build_el2_identity_map, ipa_bits_for};
    let mut short = Vec::new();
    for (board, p) in every_board() {
        let warden = board.entry.region().unwrap();
        // About the image's shape: the code, rodata and data lines fall inside 2 MiB blocks'
        // worth of pages either way; four stack guards among the data.
        let image = WardenImage {
            start: warden.start,
            text_end: warden.start + (384 << 10),
            rodata_end: warden.start + (464 << 10),
            end: warden.end,
        };
        let guards: Vec<MemRange> = (0..board.max_cpus as u64)
            .map(|cpu| {
                let start = image.rodata_end + (64 << 10) + cpu * (32 << 10);
                r(start, start + PAGE_SIZE)
            })
            .collect();
        let mut excluded: Vec<MemRange> = p.carveouts.iter().map(|c| c.range).collect();
        excluded.extend(p.reserved.iter().filter(|res| res.no_map).map(|res| res.range));
        let console = p.console.unwrap().regs.start;
        let mut devices = std::vec![r(console, console + PAGE_SIZE)];
        devices.extend(p.gic_dist.and_then(|g| g.page_aligned_outward()));
        let plan = El2Plan {
            image,
            guards: &guards,
            ram: &p.memory,
            excluded: &excluded,
            devices: &devices,
        };
        let mut regions = Vec::new();
        warden_regions(&plan, |range, attrs| regions.push((range, attrs)));
        let max_end = regions.iter().map(|(range, _)| range.end).max().unwrap();
        let mut frames = HeapFrames::new(256);
        let map = build_el2_identity_map(
            &regions,
            ipa_bits_for(max_end).unwrap(),
            40,
            &mut frames,
            &Recorder::new(64),
        )
        .unwrap();
        std::eprintln!("{}: EL2 stage-1 {} table pages", board.name, map.stats.table_pages);
        if map.stats.table_pages + EL2_TABLE_MARGIN > link_layout(board.name).unwrap().el2_tables {
            short.push(board.name);
        }
    }
    assert!(short.is_empty(), "EL2 tables short: {short:?}");
}

/// SMEM is where each board's DT reserves it (`no-map`, exactly the board's region), inside
/// the RAM its table gives.
#[test]
fn smem_is_where_each_dt_reserves_it() {
    for (board, p) in every_board() {
        let smem = smem_region(board);
        let res = p.reserved.iter().find(|res| res.range == smem).expect("SMEM reserved");
        assert!(res.no_map, "{}", board.name);
        assert!(
            base_name(&res.name) == "smem" || base_name(&res.name) == "smem_mem",
            "{}",
            res.name
        );
        assert!(crate::dt::ram_covers(&p.memory, &smem));
    }
}

/// RB3 Gen 2's 8 GiB variant: the same DT, more RAM from SMEM, the host's stage 2 built on it.
#[test]
fn rb3gen2_8gib_variant() {
    let board = &qcs6490_rb3gen2::BOARD;
    let Some(p) = platform(board, &RB3GEN2_8G) else { return };
    let warden = board.entry.region().unwrap();
    check_common(board, &p, warden, r(0x1500_0000, 0x1510_0000));
}

/// What the boot refuses, on the real DTs: a board description whose SMEM the DT does not
/// reserve, RAM that does not hold SMEM, SMEM without a RAM table.
#[test]
fn boot_refuses_ram_smem_cannot_vouch_for() {
    let board = &qrb5165_rb5::BOARD;
    let Some(blob) = board_dtb(board) else { return };
    let mut p = PlatformInfo::new();
    // The board's SMEM moved 1 MiB: the DT reserves no such region.
    let moved = MemRange::new(0x80a0_0000, 0x80c0_0000);
    let wrong = Board { ram_source: RamSource::QcomSmem { smem: moved }, ..*board };
    let entries = [ddr(0x8000_0000, 0x8000_0000)];
    let mut smem =
        SmemModel::new(moved.start, 0x20_0000, Layout::GlobalPartition, &ram_table(3, &entries));
    let err = parse_platform(&wrong, &blob, &mut p, &mut smem).unwrap_err();
    assert!(matches!(err, PlatformError::SmemNotReserved { smem } if smem == moved), "{err}");
    // RAM that does not hold SMEM (at 0x8090_0000).
    let mut smem = board_smem(board, &[r(0x1_0000_0000, 0x2_8000_0000)]);
    let err = parse_platform(board, &blob, &mut p, &mut smem).unwrap_err();
    assert!(matches!(err, PlatformError::SmemOutsideRam { .. }), "{err}");
    // SMEM not initialised: the boot stops, saying why.
    let mut smem = board_smem(board, &RB5_8G);
    smem.bytes[0xc0] = 0;
    let err = parse_platform(board, &blob, &mut p, &mut smem).unwrap_err();
    assert!(matches!(err, PlatformError::Smem(_)), "{err}");
    let msg = std::format!("{err}");
    assert!(msg.contains("SMEM") && msg.contains("refusing to start"), "{msg}");
    // The QEMU boards never read SMEM: their DT's `/memory` is real.
    for qemu in [&qemu_virt::BOARD, &qemu_virt_tz::BOARD] {
        assert_eq!(qemu.ram_source, RamSource::Dt);
    }
    for board in SNAPDRAGON {
        assert!(matches!(board.ram_source, RamSource::QcomSmem { .. }), "{}", board.name);
    }
}

/// Each board's run-time frames and spares (`crate::mm::link_layout`) cover what it can need:
/// a board with a virtual SMMU (the SMMUv3 back end), a GICv3 (the ITS's shadow tables) or the
/// simulated peer reserves [`RUNTIME_FRAMES_WITH_SHADOWS`] for them (DB410c has none: 0); one
/// transfer's reserve within any carveout of a Snapdragon board's real DT fits
/// [`ONE_TRANSFER_FRAMES`], so spares of that many serve every transfer; and its DT's withheld
/// devices leave an eighth of `max_withheld` to spare (RB3 Gen 2 withholds 159 of 192).
///
/// [`RUNTIME_FRAMES_WITH_SHADOWS`]: crate::mm::link_layout::RUNTIME_FRAMES_WITH_SHADOWS
/// [`ONE_TRANSFER_FRAMES`]: crate::mm::link_layout::ONE_TRANSFER_FRAMES
#[test]
fn each_board_reserves_what_it_can_need_at_run_time() {
    use crate::gic::GicVersion;
    use crate::mm::footprint::carveout_transfer_frames;
    use crate::mm::link_layout::{ONE_TRANSFER_FRAMES, RUNTIME_FRAMES_WITH_SHADOWS, link_layout};
    let all: [&Board; 5] = [
        &qemu_virt::BOARD,
        &qemu_virt_tz::BOARD,
        &qcs6490_rb3gen2::BOARD,
        &qrb5165_rb5::BOARD,
        &apq8016_sbc::BOARD,
    ];
    for board in all {
        let layout = link_layout(board.name).unwrap();
        let shadows = board.iommu.back_end() == Some(IommuBackEnd::SmmuV3)
            || board.interrupt_controllers.contains(&GicVersion::V3)
            || board.sim_peer;
        if shadows {
            assert!(layout.runtime_frames >= RUNTIME_FRAMES_WITH_SHADOWS, "{}", board.name);
        }
        assert!(layout.spare_frames >= ONE_TRANSFER_FRAMES, "{}", board.name);
    }
    let db410c = link_layout(apq8016_sbc::BOARD.name).unwrap();
    assert_eq!((db410c.runtime_frames, db410c.spare_frames), (0, ONE_TRANSFER_FRAMES));
    for (board, p) in every_board() {
        let layout = link_layout(board.name).unwrap();
        for c in &p.carveouts {
            assert!(carveout_transfer_frames(c.range) <= ONE_TRANSFER_FRAMES, "{}", board.name);
        }
        std::eprintln!(
            "{}: {} withheld of {} (max_withheld)",
            board.name,
            p.withheld.len(),
            layout.max_withheld
        );
        assert!(8 * p.withheld.len() <= 7 * layout.max_withheld, "{}", board.name);
    }
}
