//! Tests against the QEMU virt fixture, hostile variants of it, and edit round trips.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use dtoolkit::memreserve::MemoryReservation;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use proptest::prelude::*;

use super::blob::{Blob, walk};
use super::*;

const FIXTURE: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt.dtb");
const MEMORY: &str = "/memory@40000000";

fn r(start: u64, end: u64) -> MemRange {
    MemRange::new(start, end)
}

fn edited(edit: DtEdit) -> Vec<u8> {
    apply(FIXTURE, &edit).expect("edit applies")
}

/// The fixture with a change made directly in the `dtoolkit` model (for shapes `DtEdit` does
/// not offer: nodes under arbitrary parents, `/memreserve/` entries).
fn with_tree(change: impl FnOnce(&mut DeviceTree)) -> Vec<u8> {
    let blob = &FIXTURE[..blob_size(FIXTURE).unwrap()];
    let mut tree = DeviceTree::from_fdt(&dtoolkit::fdt::Fdt::new(blob).unwrap());
    change(&mut tree);
    tree.to_dtb()
}

fn node(name: &str, props: &[(&str, &[u8])]) -> DeviceTreeNode {
    let mut node = DeviceTreeNode::new(name).unwrap();
    for (prop, value) in props {
        node.add_property(DeviceTreeProperty::new(*prop, *value).unwrap());
    }
    node
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn parse_err(blob: &[u8]) -> DtError {
    parse(blob).expect_err("hostile DT must be rejected")
}

/// The fixture cut to the bytes it uses (QEMU pads it to 1 MiB), totalsize patched.
fn compact_fixture() -> Vec<u8> {
    let be = |o: usize| u32::from_be_bytes(FIXTURE[o..o + 4].try_into().unwrap()) as usize;
    let used = be(12) + be(32);
    let mut blob = FIXTURE[..used].to_vec();
    blob[4..8].copy_from_slice(&(used as u32).to_be_bytes());
    blob
}

#[test]
fn qemu_fixture() {
    let info = parse(FIXTURE).unwrap();
    assert_eq!(info.memory.as_slice(), &[r(0x4000_0000, 0x8000_0000)]);
    assert!(info.reserved.is_empty());
    let mpidrs: Vec<u64> = info.cpus.iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 1]);
    assert!(info.cpus.iter().all(|c| c.enable_method == CpuEnableMethod::Psci));
    assert_eq!(info.psci, Some(PsciConduit::Smc));
    assert_eq!(
        info.console.map(|c| (c.kind, c.regs)),
        Some((UartKind::Pl011, r(0x0900_0000, 0x0900_1000)))
    );
    let smmu = info.smmu().unwrap();
    assert_eq!(smmu.regs, r(0x0905_0000, 0x0907_0000));
    assert_eq!(smmu.phandle, Some(0x8005));
    assert_eq!(smmu.path.as_str(), "/smmuv3@9050000");
    assert_eq!(info.smmus.len(), 1);
    // interrupts = <0 74 1  0 75 1  0 76 1  0 77 1>: eventq, priq, cmdq-sync, gerror.
    assert_eq!(smmu.irqs, SmmuIrqs { eventq: Some(106), gerror: Some(109), cmdq_sync: Some(108) });
    assert_eq!(info.gic_dist, Some(r(0x0800_0000, 0x0801_0000)));

    assert_eq!(info.pcie.len(), 1);
    let pcie = &info.pcie[0];
    assert_eq!(pcie.path.as_str(), "/pcie@10000000");
    assert_eq!(pcie.ecam, r(0x40_1000_0000, 0x40_2000_0000));
    let window = |space, pci_addr, cpu| PcieWindow { space, prefetchable: false, pci_addr, cpu };
    assert_eq!(
        pcie.windows.as_slice(),
        &[
            window(PciSpace::Io, 0, r(0x3eff_0000, 0x3f00_0000)),
            window(PciSpace::Mem32, 0x1000_0000, r(0x1000_0000, 0x3eff_0000)),
            window(PciSpace::Mem64, 0x80_0000_0000, r(0x80_0000_0000, 0x100_0000_0000)),
        ]
    );
    assert_eq!(
        pcie.iommu_map.as_slice(),
        &[IommuMapEntry { rid_base: 0, iommu_phandle: 0x8005, sid_base: 0, length: 0x10000 }]
    );

    let mapped = |start: u64, size: u64| {
        info.devices.iter().any(|d| d.contains_range(&r(start, start + size)))
    };
    // Flash banks, GIC distributor, ITS (through the GIC's empty `ranges`), redistributors,
    // pl011, pl031, pl061, ECAM and all PCIe windows (behind the SMMU).
    for (start, size) in [
        (0, 0x800_0000),
        (0x800_0000, 0x1_0000),
        (0x808_0000, 0x2_0000),
        (0x80a_0000, 0xf6_0000),
        (0x900_0000, 0x1000),
        (0x901_0000, 0x1000),
        (0x903_0000, 0x1000),
        (0x40_1000_0000, 0x1000_0000),
        (0x3eff_0000, 0x1_0000),
        (0x1000_0000, 0x2eff_0000),
        (0x80_0000_0000, 0x80_0000_0000),
    ] {
        assert!(mapped(start, size), "device {start:#x}+{size:#x} missing: {:?}", info.devices);
    }
    for device in &info.devices {
        assert!(device.is_page_aligned());
        assert!(!device.overlaps(&smmu.regs), "SMMU mapped: {device:?}");
        assert!(!device.overlaps(&info.memory[0]), "RAM mapped as device: {device:?}");
    }
    assert!(info.devices.windows(2).all(|p| p[0].end < p[1].start), "sorted, merged");
    // Withheld: fw-cfg (DMA), the 32 virtio-mmio transports, the dynamic sysbus.
    for (start, size) in [(0x902_0000, 0x18), (0xa00_0000, 0x4000)] {
        assert!(!info.devices.iter().any(|d| d.overlaps(&r(start, start + size))));
    }
    let withheld: Vec<(&str, &Withheld)> =
        info.withheld.iter().map(|w| (w.path.as_str(), &w.why)).collect();
    assert_eq!(withheld.len(), 34, "{withheld:?}");
    assert_eq!(withheld[0], ("/platform-bus@c000000", &Withheld::DynamicSysbus));
    assert_eq!(withheld[1], ("/fw-cfg@9020000", &Withheld::FwCfgDma));
    assert!(
        withheld[2..]
            .iter()
            .all(|(p, w)| p.starts_with("/virtio_mmio@a00") && **w == Withheld::VirtioMmio)
    );
    assert_eq!(info.withheld[1].regs, Some(r(0x902_0000, 0x902_1000)));
    // The GICv3: distributor, one redistributor region, the ITS.
    let gic = info.gicv3.as_ref().unwrap();
    assert_eq!(gic.path.as_str(), "/intc@8000000");
    assert_eq!(gic.dist, r(0x800_0000, 0x801_0000));
    assert_eq!(gic.redist_regions.as_slice(), &[r(0x80a_0000, 0x900_0000)]);
    assert_eq!(gic.redist_stride, None);
    assert_eq!(info.gic_its.as_slice(), &[r(0x808_0000, 0x80a_0000)]);
    assert_eq!(info.bootargs, None);
    assert_eq!(info.initrd, None);
    let size = core::mem::size_of::<PlatformInfo>();
    // 192 withheld devices (a Snapdragon DT has up to 159) at about 200 bytes each; the
    // firmware parses into a static, a host test's stack holds it once.
    assert!(size < 56 * 1024, "PlatformInfo is {size} bytes");
}

/// QEMU 10.0.2's DT for `-machine virt,virtualization=on,gic-version=2,iommu=smmuv3 -cpu max
/// -smp 2 -m 1G`, compacted with dtc.
const GICV2_FIXTURE: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt-gicv2.dtb");

/// The GICv2 node's four frames: GICD and GICC (and the GICv2m frame under it) are the host's,
/// GICH and GICV are in no device range the host's stage 2 maps.
#[test]
fn qemu_gicv2_fixture() {
    let info = parse(GICV2_FIXTURE).unwrap();
    assert_eq!(info.gicv3, None);
    assert!(info.gic_its.is_empty());
    let gic = info.gicv2.as_ref().expect("a GICv2");
    assert_eq!(gic.path.as_str(), "/intc@8000000");
    assert_eq!(gic.dist, r(0x800_0000, 0x801_0000));
    assert_eq!(gic.cpu, r(0x801_0000, 0x802_0000));
    assert_eq!(gic.hyp, Some(r(0x803_0000, 0x804_0000)));
    assert_eq!(gic.vcpu, Some(r(0x804_0000, 0x805_0000)));
    assert_eq!(info.gic_dist, Some(gic.dist));
    // <0 0x8000000 0 0x10000  0 0x8010000 0 0x10000>: two entries of 2 + 2 cells.
    assert_eq!(
        gic.host_reg.as_slice(),
        &cells(&[0, 0x800_0000, 0, 0x1_0000, 0, 0x801_0000, 0, 0x1_0000])[..]
    );
    let covers = |range: MemRange| info.devices.iter().any(|d| d.contains_range(&range));
    let touches = |range: MemRange| info.devices.iter().any(|d| d.overlaps(&range));
    assert!(covers(gic.dist) && covers(gic.cpu));
    assert!(covers(r(0x802_0000, 0x802_1000)), "the GICv2m frame is the host's");
    assert!(
        !touches(r(0x803_0000, 0x805_0000)),
        "GICH/GICV mapped for the host: {:x?}",
        info.devices
    );
    assert!(info.withheld.iter().all(|w| w.path.as_str() != "/intc@8000000"));
}

/// `parse_into` (the firmware's path, into its static) gives what `parse` gives whatever the
/// target held before: a second parse into the same storage keeps nothing of the first, and a
/// failed parse followed by a good one neither.
/// QEMU's timer: the usual PPIs, and the EL2 virtual timer's (12) listed fifth; the
/// interrupts must be 3-cell GIC PPIs or none are kept.
#[test]
fn arch_timer_ppis() {
    let timer = parse(FIXTURE).unwrap().timer.unwrap();
    assert_eq!(timer.ppis.as_slice(), [13, 14, 11, 10, 12]);
    assert_eq!(timer.collides(WARDEN_PPIS), None);
    assert_eq!(timer.collides(&[9, 12]), Some(12));
    let path = "/timer";
    let spi = cells(&[1, 13, 4, 0, 14, 4]);
    let two_cell = cells(&[1, 13, 1, 14]);
    let too_big = cells(&[1, 16, 4]);
    for bad in [&spi[..], &two_cell[..], &too_big[..], &[][..]] {
        let blob = edited(DtEdit::new().set_property(path, "interrupts", bad));
        assert_eq!(parse(&blob).unwrap().timer.unwrap().ppis.as_slice(), [], "{bad:x?}");
    }
    let disabled = edited(DtEdit::new().set_property(path, "status", b"disabled\0"));
    assert_eq!(parse(&disabled).unwrap().timer, None);
}

#[test]
fn parse_into_reused_storage_equals_a_fresh_parse() {
    let mut info = PlatformInfo::new();
    assert_eq!(info, PlatformInfo::default());
    parse_into(GICV2_FIXTURE, &mut info).unwrap();
    assert_eq!(info, parse(GICV2_FIXTURE).unwrap());
    parse_into(FIXTURE, &mut info).unwrap();
    let fresh = parse(FIXTURE).unwrap();
    assert_eq!(info, fresh);
    assert!(info.gicv2.is_none() && info.gicv3.is_some());
    let no_memory = edited(DtEdit::new().remove_node(MEMORY));
    assert_eq!(parse_into(&no_memory, &mut info), Err(DtError::NoMemory));
    parse_into(FIXTURE, &mut info).unwrap();
    assert_eq!(info, fresh);
    info.clear();
    assert_eq!(info, PlatformInfo::new());
}

/// The host's view of the GICv2 node: GICD and GICC, no maintenance interrupt; everything else
/// the host gets is unchanged.
#[test]
fn gicv2_host_view_drops_the_virtualization_frames() {
    let before = parse(GICV2_FIXTURE).unwrap();
    let gic = before.gicv2.clone().unwrap();
    let blob = apply(GICV2_FIXTURE, &gic.host_view(DtEdit::new())).unwrap();
    let after = parse(&blob).unwrap();
    let seen = after.gicv2.as_ref().unwrap();
    assert_eq!((seen.dist, seen.cpu, seen.hyp, seen.vcpu), (gic.dist, gic.cpu, None, None));
    assert_eq!(after.devices, before.devices);
    // The independent `fdt` crate.
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let node = fdt.find_node("/intc@8000000").unwrap();
    assert!(node.property("interrupts").is_none(), "maintenance interrupt left in");
    let regs: Vec<(u64, Option<usize>)> =
        node.reg().unwrap().map(|r| (r.starting_address as u64, r.size)).collect();
    assert_eq!(regs, [(0x800_0000, Some(0x1_0000)), (0x801_0000, Some(0x1_0000))]);
    assert!(node.property("interrupt-controller").is_some());
    // Without GICH/GICV there is nothing to change.
    let plain = GicV2Info { hyp: None, vcpu: None, ..gic };
    assert_eq!(
        apply(GICV2_FIXTURE, &plain.host_view(DtEdit::new())).unwrap(),
        apply(GICV2_FIXTURE, &DtEdit::new()).unwrap()
    );
}

/// A GICv2 node must list GICD and GICC.
#[test]
fn gicv2_without_its_cpu_interface_is_refused() {
    let blob = &GICV2_FIXTURE[..blob_size(GICV2_FIXTURE).unwrap()];
    let mut tree = DeviceTree::from_fdt(&dtoolkit::fdt::Fdt::new(blob).unwrap());
    let gic = tree.find_node_mut("/intc@8000000").unwrap();
    gic.add_property(DeviceTreeProperty::new("reg", cells(&[0, 0x800_0000, 0, 0x1_0000])).unwrap());
    let err = parse_err(&tree.to_dtb());
    assert!(
        matches!(
            err,
            DtError::BadProperty { property: "reg", what: "a GICv2 needs GICD and GICC", .. }
        ),
        "{err:?}"
    );
}

#[test]
fn blob_size_reads_header() {
    assert_eq!(blob_size(&FIXTURE[..40]), Ok(0x10_0000));
    assert_eq!(blob_size(&FIXTURE[..20]), Err(DtError::HeaderTruncated { available: 20 }));
    let mut v16 = FIXTURE[..40].to_vec();
    v16[20..24].copy_from_slice(&16u32.to_be_bytes());
    assert_eq!(
        blob_size(&v16),
        Err(DtError::UnsupportedVersion { version: 16, last_comp_version: 16 })
    );
}

#[test]
fn truncated_blob() {
    let err = parse_err(&FIXTURE[..4096]);
    assert_eq!(err, DtError::Truncated { header_says: 1_048_576, available: 4096 });
    assert_eq!(
        err.to_string(),
        "DT: blob truncated: header says 1048576 bytes, only 4096 available"
    );
    // totalsize larger than the buffer, with all real content present.
    let mut blob = compact_fixture();
    let len = blob.len();
    blob[4..8].copy_from_slice(&(len as u32 + 1).to_be_bytes());
    assert_eq!(parse_err(&blob), DtError::Truncated { header_says: len + 1, available: len });
    // The compact fixture itself is fine.
    assert_eq!(parse(&compact_fixture()).unwrap(), parse(FIXTURE).unwrap());
    // Content cut off before the structure block ends.
    let mut cut = compact_fixture();
    cut.truncate(0x1000);
    cut[4..8].copy_from_slice(&0x1000u32.to_be_bytes());
    assert!(matches!(parse_err(&cut), DtError::BadHeader { .. }));
}

#[test]
fn bad_magic() {
    let mut blob = FIXTURE.to_vec();
    blob[0..4].copy_from_slice(&0x7f45_4c46u32.to_be_bytes());
    let err = parse_err(&blob);
    assert_eq!(err, DtError::BadMagic { found: 0x7f45_4c46 });
    assert_eq!(err.to_string(), "DT: bad magic 0x7f454c46 (not a flattened device tree?)");
}

#[test]
fn no_memory_node() {
    let err = parse_err(&edited(DtEdit::new().remove_node(MEMORY)));
    assert_eq!(err, DtError::NoMemory);
    assert_eq!(
        err.to_string(),
        "DT: no /memory node with device_type = \"memory\" and a non-empty reg (a boot loader fills in zero-sized banks)"
    );
    // A memory node without device_type = "memory" does not count.
    let blob = edited(DtEdit::new().remove_property(MEMORY, "device_type"));
    assert_eq!(parse_err(&blob), DtError::NoMemory);
}

#[test]
fn overlapping_reserved_regions() {
    let blob = edited(
        DtEdit::new()
            .reserve_no_map("foo", r(0x4800_0000, 0x4820_0000))
            .reserve_no_map("bar", r(0x4810_0000, 0x4830_0000)),
    );
    let err = parse_err(&blob);
    assert!(matches!(err, DtError::ReservedOverlap { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "DT: /reserved-memory/foo@48000000 [0x48000000..0x48200000) overlaps \
         /reserved-memory/bar@48100000 [0x48100000..0x48300000)"
    );
    // A /memreserve/ entry overlapping a reserved-memory node is an overlap too.
    let blob = with_tree(|tree| {
        tree.memory_reservations.push(MemoryReservation::new(0x4810_0000, 0x1000));
    });
    let blob =
        apply(&blob, &DtEdit::new().reserve_no_map("foo", r(0x4800_0000, 0x4820_0000))).unwrap();
    let err = parse_err(&blob);
    assert!(err.to_string().contains("/memreserve/ entry"), "{err}");
}

/// A reserved region (carveout or not) outside RAM, or reaching past it, is no reason to halt:
/// it stays a reserved region (the planner avoids the part that is RAM); a carveout there is
/// set aside, to be reported and left unmanaged (`docs/architecture.md`).
#[test]
fn reserved_outside_memory_is_kept_and_carveouts_set_aside() {
    for range in [r(0x8000_0000, 0x8010_0000), r(0x7ff0_0000, 0x8010_0000), r(0x1000, 0x2000)] {
        let blob = edited(DtEdit::new().reserve_no_map("fw", range));
        let info = parse(&blob).unwrap();
        assert!(info.reserved.iter().any(|res| res.range == range && res.no_map), "{range:?}");
        let path = alloc::format!("/reserved-memory/mpss@{:x}", range.start);
        let blob = edited(
            DtEdit::new()
                .reserve_no_map("mpss", range)
                .reserve_no_map("dsp", r(0x7000_0000, 0x7010_0000)),
        );
        let info = parse(&blob).unwrap();
        assert_eq!(info.carveouts.len(), 1, "{path}: only the one in RAM is a carveout");
        assert_eq!(info.carveouts[0].range, r(0x7000_0000, 0x7010_0000));
        let kept = info.reserved.iter().find(|res| res.range == range);
        assert!(kept.is_some_and(|res| res.carveout && res.no_map), "{path} still reserved");
    }
}

#[test]
fn reserved_regions_and_memreserve_parse() {
    let blob = with_tree(|tree| {
        tree.memory_reservations.push(MemoryReservation::new(0x7000_0000, 0x1000));
    });
    let blob = apply(
        &blob,
        &DtEdit::new().reserve_no_map("warden", r(0x4800_0000, 0x4820_0000)).set_property(
            "/reserved-memory",
            "x",
            b"",
        ),
    )
    .unwrap();
    // A second region without no-map, and a disabled one that must be ignored.
    let blob = with_blob_tree(&blob, |tree| {
        let rmem = tree.find_node_mut("/reserved-memory").unwrap();
        rmem.add_child(node("shm@50000000", &[("reg", &cells(&[0, 0x5000_0000, 0, 0x10_0000]))]));
        rmem.add_child(node(
            "off@60000000",
            &[("reg", &cells(&[0, 0x6000_0000, 0, 0x1000])), ("status", b"disabled\0")],
        ));
        rmem.add_child(node("dyn", &[("size", &cells(&[0, 0x1000]))]));
    });
    let info = parse(&blob).unwrap();
    let got: Vec<(&str, MemRange, bool)> =
        info.reserved.iter().map(|r| (r.name.as_str(), r.range, r.no_map)).collect();
    assert_eq!(
        got,
        [
            ("warden@48000000", r(0x4800_0000, 0x4820_0000), true),
            ("shm@50000000", r(0x5000_0000, 0x5010_0000), false),
            (MEMRESERVE_NAME, r(0x7000_0000, 0x7000_1000), false),
        ]
    );
}

fn with_blob_tree(blob: &[u8], change: impl FnOnce(&mut DeviceTree)) -> Vec<u8> {
    let mut tree = DeviceTree::from_fdt(&dtoolkit::fdt::Fdt::new(blob).unwrap());
    change(&mut tree);
    tree.to_dtb()
}

#[test]
fn huge_address_cells() {
    let blob = edited(DtEdit::new().set_property("/", "#address-cells", &cells(&[64])));
    let err = parse_err(&blob);
    assert_eq!(
        err,
        DtError::BadCells {
            path: NodePath::from("/").unwrap(),
            property: "#address-cells",
            value: Some(64)
        }
    );
    assert_eq!(err.to_string(), "DT: /: #address-cells = <64> is not supported (at most 3)");
    let blob = edited(DtEdit::new().set_property("/cpus", "#size-cells", &[0, 0]));
    assert!(matches!(parse_err(&blob), DtError::BadCells { value: None, .. }));
}

#[test]
fn zero_size_memory() {
    // A zero-sized bank is the boot loader's placeholder (Qualcomm board DTs): skipped, as
    // Linux does; with nothing else there is no RAM at all.
    let blob = edited(DtEdit::new().set_property(MEMORY, "reg", &cells(&[0, 0x4000_0000, 0, 0])));
    assert_eq!(parse_err(&blob), DtError::NoMemory);
    let reg = cells(&[0, 0x4000_0000, 0, 0, 0, 0x8000_0000, 0, 0x1000_0000]);
    let blob = edited(DtEdit::new().set_property(MEMORY, "reg", &reg));
    assert_eq!(parse(&blob).unwrap().memory.as_slice(), [r(0x8000_0000, 0x9000_0000)]);
    let blob =
        with_tree(|tree| tree.memory_reservations.push(MemoryReservation::new(0x4000_0000, 0)));
    assert!(matches!(parse_err(&blob), DtError::ZeroSize { .. }));
}

#[test]
fn address_overflow() {
    let reg = cells(&[0xffff_ffff, 0xffff_f000, 0, 0x2000]);
    let blob = edited(DtEdit::new().set_property(MEMORY, "reg", &reg));
    assert_eq!(
        parse_err(&blob),
        DtError::AddressOverflow { path: NodePath::from(MEMORY).unwrap() }
    );
    // A device whose page-aligned end wraps.
    let blob = edited(DtEdit::new().set_property("/pl031@9010000", "reg", &reg));
    assert!(matches!(parse_err(&blob), DtError::AddressOverflow { .. }));
    // 3-cell values beyond 64 bits.
    let blob =
        edited(DtEdit::new().set_property("/", "#address-cells", &cells(&[3])).set_property(
            MEMORY,
            "reg",
            &cells(&[1, 0, 0x4000_0000, 0, 0x1000]),
        ));
    assert!(matches!(parse_err(&blob), DtError::AddressOverflow { .. }));
}

#[test]
fn capacity_limits() {
    let reg: Vec<u32> = (0..=MAX_MEMORY_RANGES as u32)
        .flat_map(|i| [0, 0x4000_0000 + i * 0x10_0000, 0, 0x10_0000])
        .collect();
    let blob = edited(DtEdit::new().set_property(MEMORY, "reg", &cells(&reg)));
    let err = parse_err(&blob);
    assert_eq!(err, DtError::TooMany { what: "memory ranges (MAX_MEMORY_RANGES)", limit: 16 });
    assert_eq!(
        err.to_string(),
        "DT: more than 16 memory ranges (MAX_MEMORY_RANGES); raise the limit in src/dt"
    );
    // Exactly at the limit is fine.
    let reg: Vec<u32> = (0..MAX_MEMORY_RANGES as u32)
        .flat_map(|i| [0, 0x4000_0000 + i * 0x10_0000, 0, 0x10_0000])
        .collect();
    let info = parse(&edited(DtEdit::new().set_property(MEMORY, "reg", &cells(&reg)))).unwrap();
    assert_eq!(info.memory.len(), MAX_MEMORY_RANGES);

    // Device ranges: more separate pages than MAX_DEVICES after merging.
    let reg: Vec<u32> =
        (0..MAX_DEVICES as u32).flat_map(|i| [0x1, i * 0x2000, 0, 0x1000]).collect();
    let blob = edited(DtEdit::new().set_property("/pl031@9010000", "reg", &cells(&reg)));
    assert!(matches!(parse_err(&blob), DtError::TooMany { limit: MAX_DEVICES, .. }));
    // Many touching ranges merge into one and fit.
    let reg: Vec<u32> = (0..1000u32).flat_map(|i| [0x1, i * 0x200, 0, 0x200]).collect();
    let info =
        parse(&edited(DtEdit::new().set_property("/pl031@9010000", "reg", &cells(&reg)))).unwrap();
    assert!(info.devices.contains(&r(0x1_0000_0000, 0x1_0000_0000 + 1000 * 0x200)));
}

#[test]
fn cpu_errors() {
    let blob = edited(DtEdit::new().remove_node("/cpus/cpu@0").remove_node("/cpus/cpu@1"));
    assert_eq!(parse_err(&blob), DtError::NoCpus);
    let blob = edited(DtEdit::new().set_property("/cpus/cpu@1", "reg", &cells(&[0])));
    assert_eq!(parse_err(&blob), DtError::DuplicateCpu { mpidr: 0 });
    let blob = edited(DtEdit::new().set_property("/cpus/cpu@1", "reg", &cells(&[0xff00_0000])));
    assert!(matches!(parse_err(&blob), DtError::BadProperty { property: "reg", .. }));
    let blob = edited(DtEdit::new().remove_property("/cpus/cpu@1", "enable-method"));
    assert_eq!(parse(&blob).unwrap().cpus[1].enable_method, CpuEnableMethod::Absent);
    // Two-cell MPIDRs with Aff3.
    let blob = edited(
        DtEdit::new()
            .set_property("/cpus", "#address-cells", &cells(&[2]))
            .set_property("/cpus/cpu@0", "reg", &cells(&[0, 0]))
            .set_property("/cpus/cpu@1", "reg", &cells(&[0x1, 0x100])),
    );
    let mpidrs: Vec<u64> = parse(&blob).unwrap().cpus.iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 0x1_0000_0100]);
}

#[test]
fn psci_method() {
    let blob = edited(DtEdit::new().set_property("/psci", "method", b"hvc\0"));
    assert_eq!(parse(&blob).unwrap().psci, Some(PsciConduit::Hvc));
    let blob = edited(DtEdit::new().set_property("/psci", "method", b"svc\0"));
    assert_eq!(parse_err(&blob), DtError::BadPsciMethod { path: NodePath::from("/psci").unwrap() });
    let blob = edited(DtEdit::new().remove_node("/psci"));
    assert_eq!(parse(&blob).unwrap().psci, None);
}

#[test]
fn uart_from_stdout_path() {
    // A second PL011, named by stdout-path through an alias with options.
    let blob = with_tree(|tree| {
        let pl011 = [
            ("compatible", &b"arm,pl011\0arm,primecell\0"[..]),
            ("reg", &cells(&[0, 0x0904_0000, 0, 0x1000])[..]),
        ];
        tree.root.add_child(node("pl011@9040000", &pl011));
    });
    let blob = apply(
        &blob,
        &DtEdit::new().set_property("/aliases", "serial1", b"/pl011@9040000\0").set_property(
            "/chosen",
            "stdout-path",
            b"serial1:115200n8\0",
        ),
    )
    .unwrap();
    let regs = |blob: &[u8]| parse(blob).unwrap().console.map(|c| c.regs);
    assert_eq!(regs(&blob), Some(r(0x0904_0000, 0x0904_1000)));
    // A path without unit address matches too; an unknown one falls back to the first PL011.
    let by_name =
        apply(&blob, &DtEdit::new().set_property("/chosen", "stdout-path", b"/pl011\0")).unwrap();
    assert_eq!(regs(&by_name), Some(r(0x0900_0000, 0x0900_1000)));
    let unknown =
        apply(&blob, &DtEdit::new().set_property("/chosen", "stdout-path", b"serial9\0")).unwrap();
    assert_eq!(regs(&unknown), Some(r(0x0900_0000, 0x0900_1000)));
}

#[test]
fn address_translation() {
    let bus_props: [(&str, &[u8]); 4] = [
        ("compatible", b"simple-bus\0"),
        ("#address-cells", &[0, 0, 0, 1]),
        ("#size-cells", &[0, 0, 0, 1]),
        ("ranges", &[0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0x02, 0, 0, 0]),
    ];
    let blob = with_tree(|tree| {
        let mut bus = node("soc@c000000", &bus_props);
        let gpio = |name: &str, reg: &[u32]| {
            node(name, &[("compatible", b"arm,pl061\0"), ("reg", &cells(reg))])
        };
        bus.add_child(gpio("gpio@1000", &[0x1000, 0x100]));
        // Outside the bus's ranges: not translatable, not mapped.
        bus.add_child(gpio("gpio@3000000", &[0x300_0000, 0x100]));
        tree.root.add_child(bus);
        // Under /chosen (no ranges): not mapped.
        let chosen = tree.find_node_mut("/chosen").unwrap();
        chosen.add_property(DeviceTreeProperty::new("#size-cells", 2u32).unwrap());
        chosen.add_child(node(
            "framebuffer@48000000",
            &[("reg", &cells(&[0, 0x4800_0000, 0, 0x1000]))],
        ));
        // /gpio-keys (default 2 + 1 cells) has no ranges: not mapped.
        let poweroff = tree.find_node_mut("/gpio-keys/poweroff").unwrap();
        poweroff.add_property(
            DeviceTreeProperty::new("reg", cells(&[0, 0x7000_0000, 0x1000])).unwrap(),
        );
        // Under the withheld dynamic sysbus: withheld with it, never mapped.
        let platform = tree.find_node_mut("/platform-bus@c000000").unwrap();
        platform.add_child(gpio("gpio@100000", &[0x10_0000, 0x100]));
    });
    let info = parse(&blob).unwrap();
    assert!(info.devices.iter().any(|d| d.contains_range(&r(0xc00_1000, 0xc00_1100))));
    assert!(!info.devices.iter().any(|d| d.overlaps(&r(0xf00_0000, 0xf00_0100))));
    assert_eq!(info.devices.len(), parse(FIXTURE).unwrap().devices.len() + 1);
    assert!(!info.devices.iter().any(|d| d.overlaps(&r(0x4800_0000, 0x4800_1000))));
    assert!(!info.devices.iter().any(|d| d.overlaps(&r(0x7000_0000, 0x7000_1000))));
    assert!(!info.devices.iter().any(|d| d.overlaps(&r(0xc10_0000, 0xc10_0100))));
    assert_eq!(info.withheld.len(), parse(FIXTURE).unwrap().withheld.len());

    // A malformed ranges on the way is an error naming the bus.
    let blob =
        apply(&blob, &DtEdit::new().set_property("/soc@c000000", "ranges", &[0; 12])).unwrap();
    let err = parse_err(&blob);
    assert!(
        matches!(&err, DtError::BadProperty { path, property: "ranges", .. } if path.as_str() == "/soc@c000000"),
        "{err:?}"
    );
}

#[test]
fn dma_policy() {
    let with = |change: &dyn Fn(&mut DeviceTree)| parse(&with_tree(|t| change(t))).unwrap();
    let withheld = |info: &PlatformInfo, path: &str| {
        info.withheld.iter().find(|w| w.path.as_str() == path).map(|w| w.why)
    };
    // An unknown kind (a display controller, a DMA master) is withheld, a known one kept.
    let info = with(&|t| {
        t.root.add_child(node(
            "clcd@9100000",
            &[
                ("compatible", b"arm,pl111\0arm,primecell\0"),
                ("reg", &cells(&[0, 0x910_0000, 0, 0x1000])),
            ],
        ));
        t.root.add_child(node(
            "watchdog@9110000",
            &[("compatible", b"arm,sbsa-gwdt\0"), ("reg", &cells(&[0, 0x911_0000, 0, 0x1000]))],
        ));
    });
    let mut kind = arrayvec::ArrayString::new();
    kind.push_str("arm,pl111");
    assert_eq!(withheld(&info, "/clcd@9100000"), Some(Withheld::Unknown(kind)));
    assert!(!info.devices.iter().any(|d| d.contains(0x910_0000)));
    assert!(info.devices.iter().any(|d| d.contains(0x911_0000)));
    // Behind warden's SMMU through `iommus`: kept; behind another IOMMU: withheld.
    let info = with(&|t| {
        t.root.add_child(node(
            "dma@9120000",
            &[
                ("compatible", b"vendor,dma\0"),
                ("reg", &cells(&[0, 0x912_0000, 0, 0x1000])),
                ("iommus", &cells(&[0x8005, 0x40, 0x8005, 0x41])),
            ],
        ));
        t.root.add_child(node(
            "dma@9130000",
            &[
                ("compatible", b"vendor,dma\0"),
                ("reg", &cells(&[0, 0x913_0000, 0, 0x1000])),
                ("iommus", &cells(&[0x8005, 0x40, 0x1234, 0x41])),
            ],
        ));
    });
    assert!(info.devices.iter().any(|d| d.contains(0x912_0000)));
    assert_eq!(withheld(&info, "/dma@9130000"), Some(Withheld::OtherIommu));
    // A page shared by a kept and a withheld device: left out.
    let info = with(&|t| {
        t.root.add_child(node(
            "virtio_mmio@9031800",
            &[("compatible", b"virtio,mmio\0"), ("reg", &cells(&[0, 0x903_1800, 0, 0x200]))],
        ));
        let gpio = t.find_node_mut("/pl061@9030000").unwrap();
        gpio.add_property(
            DeviceTreeProperty::new("reg", cells(&[0, 0x903_0000, 0, 0x2000])).unwrap(),
        );
    });
    assert!(info.devices.iter().any(|d| d.contains_range(&r(0x903_0000, 0x903_1000))));
    assert!(!info.devices.iter().any(|d| d.contains(0x903_1000)));
    // PCIe: an iommu-map to another IOMMU, or one that leaves buses out.
    let info = parse(&edited(DtEdit::new().set_property(
        "/pcie@10000000",
        "iommu-map",
        &cells(&[0, 0x8005, 0, 0x100]),
    )))
    .unwrap();
    assert_eq!(withheld(&info, "/pcie@10000000"), Some(Withheld::PcieOutsideSmmu));
    assert!(info.pcie.is_empty());
    assert!(!info.devices.iter().any(|d| d.contains(0x40_1000_0000)));
    let info = parse(&edited(
        DtEdit::new()
            .set_property("/pcie@10000000", "iommu-map", &cells(&[0, 0x8005, 0, 0x100]))
            .set_property("/pcie@10000000", "bus-range", &cells(&[0, 0])),
    ))
    .unwrap();
    assert_eq!(info.pcie.len(), 1, "bus 0 only, and bus 0 is covered");
    let info = parse(&edited(DtEdit::new().remove_node("/smmuv3@9050000"))).unwrap();
    assert_eq!(withheld(&info, "/pcie@10000000"), Some(Withheld::PcieOutsideSmmu));
    // A disabled ITS is neither trapped nor mapped.
    let info = parse(&edited(DtEdit::new().set_property(
        "/intc@8000000/its@8080000",
        "status",
        b"disabled\0",
    )))
    .unwrap();
    assert!(info.gic_its.is_empty());
    assert_eq!(withheld(&info, "/intc@8000000/its@8080000"), Some(Withheld::DisabledGic));
    assert!(!info.devices.iter().any(|d| d.contains(0x808_0000)));
    for why in [
        Withheld::FwCfgDma,
        Withheld::VirtioMmio,
        Withheld::DynamicSysbus,
        Withheld::PcieOutsideSmmu,
        Withheld::OtherIommu,
        Withheld::Unknown(kind),
        Withheld::DisabledGic,
    ] {
        assert!(!alloc::format!("{why}").is_empty());
    }
}

#[test]
fn device_touching_smmu_is_an_error() {
    let blob = edited(DtEdit::new().set_property(
        "/pl031@9010000",
        "reg",
        &cells(&[0, 0x0906_f800, 0, 0x100]),
    ));
    assert!(matches!(parse_err(&blob), DtError::DeviceOverlapsSmmu { .. }));
}

#[test]
fn chosen_properties() {
    let blob = edited(
        DtEdit::new()
            .set_chosen_bootargs("console=ttyAMA0 earlycon")
            .set_chosen_initrd(r(0x4400_0000, 0x4480_0000)),
    );
    let info = parse(&blob).unwrap();
    assert_eq!(info.bootargs.as_deref(), Some("console=ttyAMA0 earlycon"));
    assert_eq!(info.initrd, Some(r(0x4400_0000, 0x4480_0000)));
    let long = "x".repeat(MAX_BOOTARGS + 1);
    let blob = edited(DtEdit::new().set_chosen_bootargs(&long));
    assert_eq!(parse_err(&blob), DtError::BootargsTooLong { len: MAX_BOOTARGS + 1 });
    let blob = edited(DtEdit::new().set_property("/chosen", "linux,initrd-start", &cells(&[1])));
    assert!(matches!(
        parse_err(&blob),
        DtError::BadProperty { property: "linux,initrd-start", .. }
    ));
}

#[test]
fn edit_errors() {
    let e = |edit: DtEdit| apply(FIXTURE, &edit).unwrap_err();
    assert!(matches!(e(DtEdit::new().remove_node("/nope")), DtError::NoSuchNode { .. }));
    assert!(matches!(e(DtEdit::new().remove_node("/")), DtError::NoSuchNode { .. }));
    assert!(matches!(
        e(DtEdit::new().remove_property("/chosen", "bootargs")),
        DtError::NoSuchProperty { .. }
    ));
    assert!(matches!(
        e(DtEdit::new().set_property("/chosen", "bad name", b"")),
        DtError::InvalidName { .. }
    ));
    let twice = DtEdit::new()
        .reserve_no_map("a", r(0x4800_0000, 0x4800_1000))
        .reserve_no_map("a", r(0x4800_0000, 0x4800_1000));
    assert!(matches!(e(twice), DtError::NodeExists { .. }));
    assert!(matches!(
        e(DtEdit::new().reserve_no_map("a b", r(0x4800_0000, 0x4800_1000))),
        DtError::InvalidName { .. }
    ));
    assert!(matches!(parse_err(&FIXTURE[..8]), DtError::HeaderTruncated { available: 8 }));
    assert_eq!(
        apply(&FIXTURE[..100], &DtEdit::new()).unwrap_err(),
        DtError::Truncated { header_says: 0x10_0000, available: 100 }
    );
}

/// (path, [(property name, value)]) for every node, in DT order.
type CanonicalTree = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// Every node (by path, in order) with its properties (in order), read by warden's walker.
fn canonical_walk(blob: &[u8]) -> CanonicalTree {
    let blob = Blob::new(blob).unwrap();
    let mut out = Vec::new();
    walk(&blob, |v| {
        let props = v.node.props().map(|p| (p.name.to_string(), p.value.to_vec())).collect();
        out.push((v.path.to_string(), props));
        Ok(())
    })
    .unwrap();
    out
}

/// The same canonical form, read by the independent `fdt` crate.
fn canonical_walk_fdt(blob: &[u8]) -> CanonicalTree {
    fn visit(node: fdt::node::FdtNode<'_, '_>, path: String, out: &mut CanonicalTree) {
        let props = node.properties().map(|p| (p.name.to_string(), p.value.to_vec())).collect();
        out.push((path.clone(), props));
        for child in node.children() {
            let child_path = if path == "/" {
                alloc::format!("/{}", child.name)
            } else {
                alloc::format!("{path}/{}", child.name)
            };
            visit(child, child_path, out);
        }
    }
    let fdt = fdt::Fdt::new(blob).unwrap();
    let mut out = Vec::new();
    visit(fdt.find_node("/").unwrap(), "/".to_string(), &mut out);
    out
}

#[test]
fn patch_round_trip() {
    let warden = r(0x7e00_0000, 0x8000_0000);
    let shm = r(0x4800_0000, 0x4810_0000);
    let initrd = r(0x4400_0000, 0x4480_0000);
    let edit = DtEdit::new()
        .reserve_no_map("warden", warden)
        .reserve_no_map("shm", shm)
        .set_chosen_bootargs("console=ttyAMA0")
        .set_chosen_initrd(initrd)
        .remove_node("/smmuv3@9050000")
        .remove_property("/pcie@10000000", "iommu-map");
    let out = apply(FIXTURE, &edit).unwrap();

    // The header: version 17, totalsize = length, memreserve block kept (empty here).
    assert_eq!(blob_size(&out), Ok(out.len()));
    assert_eq!(&out[20..24], &17u32.to_be_bytes());

    // Warden's parser.
    let info = parse(&out).unwrap();
    let reserved: Vec<(&str, MemRange, bool)> =
        info.reserved.iter().map(|r| (r.name.as_str(), r.range, r.no_map)).collect();
    assert_eq!(reserved, [("shm@48000000", shm, true), ("warden@7e000000", warden, true)]);
    assert_eq!(info.bootargs.as_deref(), Some("console=ttyAMA0"));
    assert_eq!(info.initrd, Some(initrd));
    assert!(info.smmus.is_empty());
    // Without an SMMU in it, this DT's PCIe is not behind one: a parser applying the DMA
    // policy to it withholds the bridge.
    assert!(info.pcie.is_empty());
    assert!(
        info.withheld
            .iter()
            .any(|w| w.path.as_str() == "/pcie@10000000" && w.why == Withheld::PcieOutsideSmmu)
    );
    let original = parse(FIXTURE).unwrap();
    assert_eq!(info.memory, original.memory);
    assert_eq!(info.cpus, original.cpus);
    assert!(info.devices.iter().all(|d| original.devices.iter().any(|o| o.contains_range(d))));

    // The independent `fdt` crate.
    let fdt = fdt::Fdt::new(&out).unwrap();
    assert!(fdt.all_nodes().all(|n| n.name != "smmuv3@9050000"));
    let node = fdt.find_node("/reserved-memory/warden@7e000000").unwrap();
    assert!(node.property("no-map").is_some_and(|p| p.value.is_empty()));
    let mut reg = node.reg().unwrap();
    let first = reg.next().unwrap();
    assert_eq!((first.starting_address as u64, first.size), (0x7e00_0000, Some(0x200_0000)));
    let rmem = fdt.find_node("/reserved-memory").unwrap();
    assert_eq!(rmem.property("#address-cells").unwrap().value, cells(&[2]));
    assert_eq!(rmem.property("#size-cells").unwrap().value, cells(&[2]));
    assert!(rmem.property("ranges").unwrap().value.is_empty());
    let chosen = fdt.find_node("/chosen").unwrap();
    assert_eq!(chosen.property("bootargs").unwrap().value, b"console=ttyAMA0\0");
    assert_eq!(chosen.property("linux,initrd-start").unwrap().value, 0x4400_0000u64.to_be_bytes());
    assert_eq!(chosen.property("linux,initrd-end").unwrap().value, 0x4480_0000u64.to_be_bytes());

    // Everything else unchanged: build the expected canonical tree from the original.
    let mut expected = canonical_walk(FIXTURE);
    expected.retain(|(path, _)| path != "/smmuv3@9050000");
    for (path, props) in &mut expected {
        match path.as_str() {
            "/pcie@10000000" => props.retain(|(name, _)| name != "iommu-map"),
            "/chosen" => {
                props.push(("bootargs".to_string(), b"console=ttyAMA0\0".to_vec()));
                props.push((
                    "linux,initrd-start".to_string(),
                    0x4400_0000u64.to_be_bytes().to_vec(),
                ));
                props.push(("linux,initrd-end".to_string(), 0x4480_0000u64.to_be_bytes().to_vec()));
            }
            _ => {}
        }
    }
    let reg = |range: MemRange| {
        let mut v = range.start.to_be_bytes().to_vec();
        v.extend(range.size().to_be_bytes());
        v
    };
    let reserved_node = |name: &str, range| {
        (
            alloc::format!("/reserved-memory/{name}"),
            alloc::vec![("reg".to_string(), reg(range)), ("no-map".to_string(), Vec::new()),],
        )
    };
    expected.push((
        "/reserved-memory".to_string(),
        alloc::vec![
            ("#address-cells".to_string(), cells(&[2])),
            ("#size-cells".to_string(), cells(&[2])),
            ("ranges".to_string(), Vec::new()),
        ],
    ));
    expected.push(reserved_node("warden@7e000000", warden));
    expected.push(reserved_node("shm@48000000", shm));
    assert_eq!(canonical_walk(&out), expected);
    assert_eq!(canonical_walk_fdt(&out), expected, "the fdt crate reads the same tree");

    // An empty edit reproduces the tree exactly (and keeps /memreserve/ and boot_cpuid_phys).
    let mut with_rsv = with_tree(|tree| {
        tree.memory_reservations.push(MemoryReservation::new(0x4100_0000, 0x2000));
    });
    with_rsv[28..32].copy_from_slice(&1u32.to_be_bytes());
    let copy = apply(&with_rsv, &DtEdit::new()).unwrap();
    assert_eq!(copy, with_rsv);
    assert_eq!(canonical_walk(&apply(FIXTURE, &DtEdit::new()).unwrap()), canonical_walk(FIXTURE));
    assert_eq!(parse(&copy).unwrap().boot_cpuid_phys, 1);
}

#[test]
fn edit_creates_missing_nodes() {
    let bare = edited(DtEdit::new().remove_node("/chosen"));
    let out = apply(
        &bare,
        &DtEdit::new()
            .set_chosen_bootargs("quiet")
            .reserve_no_map("w", r(0x4000_0000, 0x4000_1000)),
    )
    .unwrap();
    let info = parse(&out).unwrap();
    assert_eq!(info.bootargs.as_deref(), Some("quiet"));
    assert_eq!(info.reserved[0].name.as_str(), "w@40000000");
    // With a 1-cell /reserved-memory, addresses above 4 GiB cannot be encoded.
    let one_cell = with_tree(|tree| {
        tree.root.add_child(node(
            "reserved-memory",
            &[("#address-cells", &cells(&[1])), ("#size-cells", &cells(&[1])), ("ranges", b"")],
        ));
    });
    let err =
        apply(&one_cell, &DtEdit::new().reserve_no_map("hi", r(0x1_0000_0000, 0x1_0000_1000)))
            .unwrap_err();
    assert!(matches!(err, DtError::Unencodable { .. }));
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
}

fn mutation(len: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0..len, any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        4 => (0..len, 0..8u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        1 => (0..len).prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Corrupted blobs give a result or an error, never a panic, in both the parser and the
    /// rewriter (whose validated input goes to `dtoolkit`).
    #[test]
    fn corrupted_blobs_never_panic(mutations in proptest::collection::vec(mutation(compact_fixture().len()), 1..6)) {
        let mut blob = compact_fixture();
        for m in mutations {
            match m {
                Mutation::Set(at, byte) => if let Some(b) = blob.get_mut(at) { *b = byte },
                Mutation::Flip(at, bit) => if let Some(b) = blob.get_mut(at) { *b ^= 1 << bit },
                Mutation::Truncate(len) => blob.truncate(len),
            }
        }
        let parsed = parse(&blob);
        let rewritten = apply(&blob, &DtEdit::new().set_chosen_bootargs("x"));
        if let Ok(out) = rewritten {
            // Whatever the writer produced must be readable again.
            prop_assert!(Blob::new(&out).is_ok());
        }
        if let Err(e) = parsed {
            prop_assert!(e.to_string().starts_with("DT: "));
        }
    }

    /// Header fields are the most dangerous bytes: hammer them specifically.
    #[test]
    fn corrupted_headers_never_panic(field in 0..10usize, value in any::<u32>()) {
        let mut blob = compact_fixture();
        blob[field * 4..field * 4 + 4].copy_from_slice(&value.to_be_bytes());
        let _ = parse(&blob);
        let _ = apply(&blob, &DtEdit::new());
    }
}

mod carveouts {
    use super::*;
    use crate::boards::carveouts as board;

    const AT: u64 = 0x7c00_0000;
    const NODE: &str = "/reserved-memory/region@7c000000";

    type Prop<'a> = (&'a str, &'a [u8]);

    fn s(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// The fixture with `/reserved-memory/region@7c000000` (16 MiB, no-map) and `props` on it.
    fn region(props: &[(&str, &[u8])]) -> Vec<u8> {
        let edit = DtEdit::new().reserve_no_map("region", r(AT, AT + 0x100_0000));
        let edit = props.iter().fold(edit, |e, (name, value)| e.set_property(NODE, name, value));
        edited(edit)
    }

    fn bad_property(blob: &[u8]) -> (&'static str, &'static str) {
        match parse_err(blob) {
            DtError::BadProperty { path, property, what } => {
                assert_eq!(path.as_str(), NODE);
                (property, what)
            }
            other => panic!("expected BadProperty, got {other:?}"),
        }
    }

    #[test]
    fn qemu_fixture_has_none() {
        assert!(parse(FIXTURE).unwrap().carveouts.is_empty());
    }

    /// The board's carveouts for the fixture's 1 GiB of RAM.
    fn board_1g() -> [board::CarveoutSpec; 2] {
        board::for_ram(&[r(0x4000_0000, 0x8000_0000)]).unwrap()
    }

    #[test]
    fn board_recipe() {
        let blob = edited(board::add_to(DtEdit::new(), &board_1g()));
        let info = parse(&blob).unwrap();
        assert_eq!(info.carveouts.len(), 2);
        let [modem, dsp] = [info.carveouts[0], info.carveouts[1]];
        assert_eq!(modem.name.as_str(), "modem@7c000000");
        assert_eq!(modem.range, r(0x7c00_0000, 0x7d00_0000));
        assert_eq!((modem.peer, modem.policy), (PeerId::MODEM, Policy::Donate));
        assert!(!modem.clear_on_reclaim);
        assert_eq!(dsp.range, r(0x7d00_0000, 0x7e00_0000));
        assert_eq!((dsp.peer, dsp.policy), (PeerId::DSP, Policy::Lend));
        assert!(dsp.clear_on_reclaim);
        assert!(info.carveouts.iter().all(|c| c.source == CarveoutSource::Binding));
        // They are reserved (no-map) regions too, so the host never gets them as RAM.
        for c in &info.carveouts {
            assert!(info.reserved.iter().any(|res| res.range == c.range && res.no_map));
        }
        assert_eq!(board_1g()[0].node_path(), "/reserved-memory/modem@7c000000");
    }

    #[test]
    fn binding_properties() {
        let c = parse(&region(&[("warden,peer-id", &cells(&[2]))])).unwrap().carveouts[0];
        assert_eq!((c.peer, c.policy, c.clear_on_reclaim), (PeerId::DSP, Policy::Donate, false));
        let c = parse(&region(&[
            ("warden,peer", &s("modem")),
            ("warden,policy", &s("lend")),
            ("warden,clear-on-reclaim", &[]),
        ]))
        .unwrap()
        .carveouts[0];
        assert_eq!((c.peer, c.policy, c.clear_on_reclaim), (PeerId::MODEM, Policy::Lend, true));
        // Without any warden property and with an ordinary name: reserved, not a carveout.
        let info = parse(&region(&[])).unwrap();
        assert!(info.carveouts.is_empty());
        assert_eq!(info.reserved.len(), 1);
    }

    #[test]
    fn qualcomm_names() {
        for (name, peer) in [
            ("mpss", PeerId::MODEM),
            ("modem", PeerId::MODEM),
            ("mpss_mem", PeerId::MODEM),
            ("adsp", PeerId::DSP),
            ("cdsp", PeerId::DSP),
            ("slpi", PeerId::DSP),
            ("dsp", PeerId::DSP),
        ] {
            let blob = edited(DtEdit::new().reserve_no_map(name, r(AT, AT + 0x80_0000)));
            let c = parse(&blob).unwrap().carveouts[0];
            assert_eq!((c.peer, c.source), (peer, CarveoutSource::QcomName), "{name}");
            assert_eq!(c.policy, Policy::Donate);
        }
        // The binding overrides the name.
        let blob =
            edited(DtEdit::new().reserve_no_map("mpss", r(AT, AT + 0x80_0000)).set_property(
                "/reserved-memory/mpss@7c000000",
                "warden,peer",
                &s("dsp"),
            ));
        let c = parse(&blob).unwrap().carveouts[0];
        assert_eq!((c.peer, c.source), (PeerId::DSP, CarveoutSource::Binding));
    }

    #[test]
    fn hostile_values() {
        let cases: [(&[Prop<'_>], &str); 11] = [
            (&[("warden,peer", &s("gpu"))], "warden,peer"),
            (&[("warden,peer", b"modem")], "warden,peer"),
            (&[("warden,peer", b"mo\0dem\0")], "warden,peer"),
            (&[("warden,peer", &[])], "warden,peer"),
            (&[("warden,peer-id", &cells(&[0]))], "warden,peer-id"),
            (&[("warden,peer-id", &cells(&[64]))], "warden,peer-id"),
            (&[("warden,peer-id", &cells(&[1, 1]))], "warden,peer-id"),
            (&[("warden,peer", &s("modem")), ("warden,peer-id", &cells(&[1]))], "warden,peer-id"),
            (&[("warden,peer", &s("modem")), ("warden,policy", &s("share"))], "warden,policy"),
            (
                &[("warden,peer", &s("modem")), ("warden,clear-on-reclaim", &[1])],
                "warden,clear-on-reclaim",
            ),
            (&[("warden,policy", &s("lend"))], "warden,policy"),
        ];
        for (props, property) in cases {
            assert_eq!(bad_property(&region(props)).0, property, "{props:?}");
        }
    }

    #[test]
    fn carveout_without_no_map_is_refused() {
        let blob = region(&[("warden,peer", &s("modem"))]);
        let blob = apply(&blob, &DtEdit::new().remove_property(NODE, "no-map")).unwrap();
        let (property, what) = bad_property(&blob);
        assert_eq!(property, "no-map");
        assert!(what.contains("kernel would map it"), "{what}");
        let message = alloc::format!("{}", parse_err(&blob));
        assert!(message.contains(NODE) && message.contains("no-map"), "{message}");
        // A Qualcomm-named region too.
        let blob = edited(DtEdit::new().reserve_no_map("mpss", r(AT, AT + 0x80_0000)));
        let blob = apply(
            &blob,
            &DtEdit::new().remove_property("/reserved-memory/mpss@7c000000", "no-map"),
        )
        .unwrap();
        assert!(matches!(parse_err(&blob), DtError::BadProperty { property: "no-map", .. }));
    }

    #[test]
    fn carveout_shapes() {
        let peer = s("modem");
        // Not page-aligned.
        let blob = edited(DtEdit::new().reserve_no_map("region", r(AT, AT + 0x800)).set_property(
            "/reserved-memory/region@7c000000",
            "warden,peer",
            &peer,
        ));
        assert_eq!(bad_property(&blob).0, "reg");
        // Two reg entries.
        let two = cells(&[0, 0x7c00_0000, 0, 0x1000, 0, 0x7c01_0000, 0, 0x1000]);
        let blob = region(&[("warden,peer", &peer), ("reg", &two)]);
        assert_eq!(bad_property(&blob), ("reg", "a warden carveout has exactly one reg entry"));
        // No reg at all (a dynamic reservation).
        let blob =
            apply(&region(&[("warden,peer", &peer)]), &DtEdit::new().remove_property(NODE, "reg"))
                .unwrap();
        assert_eq!(bad_property(&blob).0, "reg");
        // Disabled: ignored entirely, even with bad values.
        let blob = region(&[("warden,peer", &s("gpu")), ("status", &s("disabled"))]);
        assert!(parse(&blob).unwrap().carveouts.is_empty());
    }

    #[test]
    fn existing_reserved_checks_apply() {
        let peer = s("modem");
        // Outside /memory: set aside, not managed, not an error.
        let blob = edited(
            DtEdit::new().reserve_no_map("region", r(0x8000_0000, 0x8100_0000)).set_property(
                "/reserved-memory/region@80000000",
                "warden,peer",
                &peer,
            ),
        );
        let info = parse(&blob).unwrap();
        assert!(info.carveouts.is_empty());
        assert_eq!(info.reserved[0].range, r(0x8000_0000, 0x8100_0000));
        // Overlapping another reserved region.
        let blob = edited(
            board::add_to(DtEdit::new(), &board_1g())
                .reserve_no_map("fw", r(0x7cff_0000, 0x7d01_0000)),
        );
        assert!(matches!(parse_err(&blob), DtError::ReservedOverlap { .. }));
    }

    #[test]
    fn too_many() {
        let edit = (0..=MAX_CARVEOUTS as u64).fold(DtEdit::new(), |e, n| {
            let at = 0x6000_0000 + n * 0x10_0000;
            e.reserve_no_map("mpss", r(at, at + 0x1000))
        });
        assert!(matches!(parse_err(&edited(edit)), DtError::TooMany { limit: MAX_CARVEOUTS, .. }));
    }
}

/// Every `cpu` phandle in `/cpus/cpu-map`, and every CPU node's phandle.
fn cpu_phandles(blob: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use dtoolkit::{Node, Property};
    fn walk(node: &dtoolkit::model::DeviceTreeNode, out: &mut Vec<Vec<u8>>) {
        if let Some(p) = node.property("cpu") {
            out.push(p.value().to_vec());
        }
        for child in node.children() {
            walk(child, out);
        }
    }
    let fdt = dtoolkit::fdt::Fdt::new(blob).unwrap();
    let mut tree = dtoolkit::model::DeviceTree::from_fdt(&fdt);
    let mut map = Vec::new();
    if let Some(node) = tree.find_node_mut("/cpus/cpu-map") {
        walk(node, &mut map);
    }
    let cpus = tree.find_node_mut("/cpus").unwrap();
    let nodes =
        cpus.children().filter_map(|c| c.property("phandle").map(|p| p.value().to_vec())).collect();
    (map, nodes)
}

#[test]
fn remove_cpu_drops_its_topology_entry() {
    let (map, nodes) = cpu_phandles(FIXTURE);
    assert_eq!((map.len(), nodes.len()), (2, 2));
    let blob = apply(FIXTURE, &DtEdit::new().remove_cpu(1)).unwrap();
    let info = parse(&blob).unwrap();
    assert_eq!(info.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(), [0]);
    let (map, nodes) = cpu_phandles(&blob);
    assert_eq!(map, nodes, "cpu-map names exactly the CPUs left");
    assert!(matches!(
        apply(FIXTURE, &DtEdit::new().remove_cpu(7)),
        Err(DtError::NoSuchNode { .. })
    ));
}

/// QEMU names CPU nodes by index in decimal (`cpu@11` has `reg = <0xb>`): the node is found by
/// its `reg`, whatever its name.
#[test]
fn remove_cpu_finds_the_node_by_reg_not_by_name() {
    let blob = with_tree(|tree| {
        let cpus = tree.find_node_mut("/cpus").unwrap();
        cpus.add_child(node(
            "cpu@11",
            &[
                ("device_type", b"cpu\0"),
                ("compatible", b"arm,cortex-a57\0"),
                ("enable-method", b"psci\0"),
                ("reg", &cells(&[0xb])),
            ],
        ));
    });
    let mpidrs =
        |blob: &[u8]| parse(blob).unwrap().cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>();
    assert_eq!(mpidrs(&blob), [0, 1, 0xb]);
    let out = apply(&blob, &DtEdit::new().remove_cpu(0xb)).unwrap();
    assert_eq!(mpidrs(&out), [0, 1]);
    assert!(matches!(
        apply(&blob, &DtEdit::new().remove_cpu(0x11)),
        Err(DtError::NoSuchNode { .. })
    ));
}

#[test]
fn add_device_node() {
    let range = r(0x090c_0000, 0x090c_1000);
    let edit = DtEdit::new().add_device("warden-control", "warden,control-v1", range);
    let blob = apply(FIXTURE, &edit).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let node = fdt.find_node("/warden-control@90c0000").expect("node added");
    assert_eq!(node.compatible().unwrap().first(), "warden,control-v1");
    let reg = node.reg().unwrap().next().unwrap();
    assert_eq!((reg.starting_address as u64, reg.size), (0x090c_0000, Some(0x1000)));
    assert!(matches!(apply(&blob, &edit), Err(DtError::NodeExists { .. })));
    let empty = DtEdit::new().add_device("x", "y", r(0x1000, 0x1000));
    assert!(matches!(apply(FIXTURE, &empty), Err(DtError::Unencodable { .. })));
}

#[test]
fn add_firmware_node() {
    let edit = DtEdit::new().add_firmware("scm", "qcom,scm");
    let blob = apply(FIXTURE, &edit).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let node = fdt.find_node("/firmware/scm").expect("node added");
    assert_eq!(node.compatible().unwrap().first(), "qcom,scm");
    assert!(matches!(apply(&blob, &edit), Err(DtError::NodeExists { .. })));
    // A second firmware node goes next to it.
    let blob = apply(&blob, &DtEdit::new().add_firmware("psci-ish", "x,y")).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    assert!(
        fdt.find_node("/firmware/scm").is_some() && fdt.find_node("/firmware/psci-ish").is_some()
    );
}

#[test]
fn withheld_nodes_leave_the_host_dt() {
    let original = parse(FIXTURE).unwrap();
    let edit = original.withheld.iter().fold(DtEdit::new(), |e, w| e.remove_node(&w.path));
    let host = parse(&apply(FIXTURE, &edit).unwrap()).unwrap();
    assert!(host.withheld.is_empty(), "{:?}", host.withheld);
    assert_eq!(host.devices, original.devices, "what was kept is all the host DT describes");
    let fdt_host = apply(FIXTURE, &edit).unwrap();
    let fdt = fdt::Fdt::new(&fdt_host).unwrap();
    assert!(fdt.find_compatible(&["qemu,fw-cfg-mmio", "virtio,mmio", "qemu,platform"]).is_none());
    assert!(fdt.find_compatible(&["arm,gic-v3-its"]).is_some());
}

#[test]
fn console_kinds_and_the_pl011_only_uart() {
    // stdout-path names a GENI debug UART inside a withheld wrapper (as on SC7280): it is the
    // console, and `uart` (the PL011 the boot path drives) is not set.
    let blob = with_tree(|tree| {
        let mut qup = node(
            "geniqup@9c0000",
            &[
                ("compatible", &b"qcom,geni-se-qup\0"[..]),
                ("reg", &cells(&[0, 0x009c_0000, 0, 0x2000])[..]),
                ("#address-cells", &cells(&[2])[..]),
                ("#size-cells", &cells(&[2])[..]),
                ("ranges", &[][..]),
            ],
        );
        let geni = [
            ("compatible", &b"qcom,geni-debug-uart\0"[..]),
            ("reg", &cells(&[0, 0x0099_4000, 0, 0x4000])[..]),
        ];
        qup.add_child(node("serial@994000", &geni));
        let disabled = [
            ("compatible", &b"qcom,msm-uartdm-v1.4\0qcom,msm-uartdm\0"[..]),
            ("reg", &cells(&[0, 0x078b_0000, 0, 0x200])[..]),
            ("status", &b"disabled\0"[..]),
        ];
        tree.root.add_child(qup);
        tree.root.add_child(node("serial@78b0000", &disabled));
    });
    let geni = apply(
        &blob,
        &DtEdit::new().set_property("/chosen", "stdout-path", b"/geniqup@9c0000/serial@994000\0"),
    )
    .unwrap();
    let info = parse(&geni).unwrap();
    let console = ConsoleInfo { kind: UartKind::QcomGeniDebug, regs: r(0x99_4000, 0x99_8000) };
    assert_eq!(info.console, Some(console), "{:?}", info.withheld);
    // A disabled UART is never the console, even when stdout-path names it.
    let uartdm =
        apply(&blob, &DtEdit::new().set_property("/chosen", "stdout-path", b"/serial@78b0000\0"))
            .unwrap();
    let info = parse(&uartdm).unwrap();
    let pl011 = ConsoleInfo { kind: UartKind::Pl011, regs: r(0x0900_0000, 0x0900_1000) };
    assert_eq!(info.console, Some(pl011));
}

#[test]
fn mmu500_and_msm_iommu_are_found_and_withheld() {
    let blob = with_tree(|tree| {
        let mmu500 = [
            ("compatible", &b"qcom,sc7280-smmu-500\0arm,mmu-500\0"[..]),
            ("reg", &cells(&[0, 0x1500_0000, 0, 0x10_0000])[..]),
            ("phandle", &cells(&[0x77])[..]),
        ];
        let msm = [
            ("compatible", &b"qcom,msm8916-iommu\0qcom,msm-iommu-v1\0"[..]),
            ("reg", &cells(&[0, 0x01ef_0000, 0, 0x3000])[..]),
        ];
        let off = [
            ("compatible", &b"arm,mmu-500\0"[..]),
            ("reg", &cells(&[0, 0x03da_0000, 0, 0x1_0000])[..]),
            ("status", &b"disabled\0"[..]),
        ];
        tree.root.add_child(node("iommu@15000000", &mmu500));
        tree.root.add_child(node("iommu@1ef0000", &msm));
        tree.root.add_child(node("iommu@3da0000", &off));
    });
    let info = parse(&blob).unwrap();
    let found: Vec<(OtherIommuKind, MemRange, Option<u32>)> =
        info.other_iommus.iter().map(|i| (i.kind, i.regs, i.phandle)).collect();
    assert_eq!(
        found,
        [
            (OtherIommuKind::ArmMmu500, r(0x1500_0000, 0x1510_0000), Some(0x77)),
            (OtherIommuKind::QcomMsmIommuV1, r(0x01ef_0000, 0x01ef_3000), None),
        ]
    );
    for iommu in &info.other_iommus {
        assert!(!info.devices.iter().any(|d| d.overlaps(&iommu.regs)), "{}", iommu.path);
        assert!(info.withheld.iter().any(|w| w.regs == Some(iommu.regs)), "{:?}", info.withheld);
    }
    // QEMU's SMMUv3 is still the one warden drives.
    assert_eq!(info.smmus.len(), 1);
}

#[test]
fn memory_written_in_place() {
    let mut blob = FIXTURE[..blob_size(FIXTURE).unwrap()].to_vec();
    let before = blob.len();
    set_memory_in_place(&mut blob, &[r(0x8000_0000, 0x2_8000_0000)]).unwrap();
    assert_eq!(blob.len(), before);
    assert_eq!(parse(&blob).unwrap().memory.as_slice(), [r(0x8000_0000, 0x2_8000_0000)]);
    // Only as many banks as the property has entries.
    let two = [r(0x8000_0000, 0x9000_0000), r(0xa000_0000, 0xb000_0000)];
    let err = set_memory_in_place(&mut blob, &two).unwrap_err();
    assert!(matches!(err, DtError::BadProperty { property: "reg", .. }), "{err}");
    assert_eq!(parse(&blob).unwrap().memory.as_slice(), [r(0x8000_0000, 0x2_8000_0000)]);
    // No memory node at all.
    let none = edited(DtEdit::new().remove_node(MEMORY));
    let mut none = none[..blob_size(&none).unwrap()].to_vec();
    assert_eq!(set_memory_in_place(&mut none, &two[..1]), Err(DtError::NoMemory));
}

/// RAM learnt elsewhere (SMEM) replaces the DT's `/memory` for the parse, checked as the DT's
/// would be; the carveouts are kept or set aside against it.
#[test]
fn ram_given_replaces_the_dts_memory() {
    let banks = [r(0x4000_0000, 0x6000_0000), r(0x1_0000_0000, 0x1_4000_0000)];
    let mut info = PlatformInfo::new();
    parse_into_with_ram(FIXTURE, &mut info, &banks).unwrap();
    assert_eq!(info.memory.as_slice(), banks);
    assert_eq!(parse(FIXTURE).unwrap().memory.as_slice(), [r(0x4000_0000, 0x8000_0000)]);
    // Given out of order: sorted. Overlapping, empty or too many: refused as the DT's would be.
    parse_into_with_ram(FIXTURE, &mut info, &[banks[1], banks[0]]).unwrap();
    assert_eq!(info.memory.as_slice(), banks);
    let overlap = [r(0x4000_0000, 0x6000_0000), r(0x5000_0000, 0x7000_0000)];
    let err = parse_into_with_ram(FIXTURE, &mut info, &overlap).unwrap_err();
    assert!(matches!(err, DtError::MemoryOverlap { .. }), "{err}");
    assert_eq!(parse_into_with_ram(FIXTURE, &mut info, &[]), Err(DtError::NoMemory));
    let many: Vec<MemRange> =
        (0..=MAX_MEMORY_RANGES as u64).map(|i| r(i << 32, (i << 32) + 0x1000)).collect();
    let err = parse_into_with_ram(FIXTURE, &mut info, &many).unwrap_err();
    assert!(matches!(err, DtError::TooMany { .. }), "{err}");
    // A placeholder `/memory` (zero-sized) parses with the RAM given.
    let mut placeholder = FIXTURE[..blob_size(FIXTURE).unwrap()].to_vec();
    set_memory_in_place(&mut placeholder, &[r(0x4000_0000, 0x4000_0000)]).unwrap();
    assert_eq!(parse(&placeholder), Err(DtError::NoMemory));
    parse_into_with_ram(&placeholder, &mut info, &banks).unwrap();
    assert_eq!(info.memory.as_slice(), banks);
}

/// The next stage's DT gets the RAM warden learnt: `reg` of the memory node, in the root's
/// cells, every bank; a DT without a memory node is refused.
#[test]
fn set_memory_fills_the_memory_node() {
    let banks = [r(0x8000_0000, 0x1_0000_0000), r(0x1_0000_0000, 0x2_8000_0000)];
    let out = edited(DtEdit::new().set_memory(&banks));
    assert_eq!(parse(&out).unwrap().memory.as_slice(), banks);
    let none = edited(DtEdit::new().remove_node(MEMORY));
    assert_eq!(apply(&none, &DtEdit::new().set_memory(&banks)), Err(DtError::NoMemory));
}
