//! Building [`PlatformInfo`] from a validated blob, without a heap.

use arrayvec::{ArrayString, ArrayVec};

use super::blob::{Blob, Level, Node, Visit, be32, be64, walk};
use super::error::{DtError, NodeName, path_lossy};
use super::*;
use crate::mm::MemRange;

/// Parses and validates `blob` (whose length is the caller's bound: the header's `totalsize`
/// must fit in it). Allocates nothing; the result is returned by value (about 40 KiB): the
/// firmware parses into a static with [`parse_into`] instead.
pub fn parse(blob: &[u8]) -> Result<PlatformInfo, DtError> {
    let mut info = PlatformInfo::new();
    parse_into(blob, &mut info)?;
    Ok(info)
}

/// [`parse`] into `info`, which is cleared first and written in place: no copy of
/// [`PlatformInfo`] is made on the stack. On an error `info` holds whatever was read before it
/// (use none of it).
pub fn parse_into(blob: &[u8], info: &mut PlatformInfo) -> Result<(), DtError> {
    parse_into_inner(blob, info, None)
}

/// [`parse_into`] with the RAM given (`ram`, e.g. a Snapdragon boot stage's, read from SMEM:
/// `boot_stage::smem`): the DT's `/memory` nodes are not read, `ram` is checked as theirs would
/// be (not empty, no overlap, at most [`MAX_MEMORY_RANGES`]) and the rest of the DT against
/// it (carveouts in RAM).
pub fn parse_into_with_ram(
    blob: &[u8],
    info: &mut PlatformInfo,
    ram: &[MemRange],
) -> Result<(), DtError> {
    parse_into_inner(blob, info, Some(ram))
}

fn parse_into_inner(
    blob: &[u8],
    info: &mut PlatformInfo,
    ram: Option<&[MemRange]>,
) -> Result<(), DtError> {
    let blob = Blob::new(blob)?;
    info.clear();
    info.boot_cpuid_phys = blob.boot_cpuid_phys;
    for bank in ram.unwrap_or_default() {
        push(&mut info.memory, *bank, "memory ranges (MAX_MEMORY_RANGES)")?;
    }

    // First pass: /chosen and /aliases, to know which node stdout-path means. It also validates
    // the whole structure block before anything is interpreted.
    let mut chosen: Option<Node<'_>> = None;
    let mut aliases: Option<Node<'_>> = None;
    // The SMMU warden drives is the first SMMUv3 in DT order: the DMA policy needs its
    // phandle before devices that point at it are met.
    let mut first_smmu: Option<Option<u32>> = None;
    // Without an SMMUv3, the apps MMU-500 ([`Mmu500Info`]): its phandle and specifier cells.
    let mut apps_mmu500: Option<(Option<u32>, u32)> = None;
    walk(&blob, |v| {
        if apps_mmu500.is_none() && is_apps_mmu500(&v.node) {
            let cells = v.node.prop("#iommu-cells").and_then(|c| be32(c, 0)).unwrap_or(1);
            apps_mmu500 = Some((phandle(&v.node), cells));
        }
        if v.depth() == 1 {
            match v.node.name {
                "chosen" if chosen.is_none() => chosen = Some(v.node),
                "aliases" if aliases.is_none() => aliases = Some(v.node),
                _ => {}
            }
        }
        if first_smmu.is_none() && v.node.is_compatible("arm,smmu-v3") {
            first_smmu = Some(phandle(&v.node));
        }
        Ok(())
    })?;
    let stdout_path = chosen.and_then(|c| stdout_target(&c, aliases.as_ref()));

    let mut state = State {
        info,
        stdout_path,
        stdout_uart: None,
        first_uart: None,
        warden_smmu: first_smmu.flatten(),
        warden_mmu500: match (first_smmu, apps_mmu500) {
            (None, Some((Some(phandle), cells))) => Some((phandle, cells)),
            _ => None,
        },
        withheld_ranges: ArrayVec::new(),
        ram_given: ram.is_some(),
    };
    walk(&blob, |v| state.visit(v))?;

    blob.for_each_memreserve(|address, size| {
        let path = path_lossy("/memreserve/");
        if size == 0 {
            return Err(DtError::ZeroSize { path });
        }
        let range = MemRange::from_base_size(address, size)
            .filter(|r| r.end != 0)
            .ok_or(DtError::AddressOverflow { path })?;
        let name = NodeName::from(MEMRESERVE_NAME).unwrap_or_default();
        let region = ReservedRegion { name, range, no_map: false, carveout: false };
        push(&mut state.info.reserved, region, RESERVED)
    })?;

    state.finish()
}

const RESERVED: &str = "reserved regions (MAX_RESERVED)";

fn push<T, const N: usize>(
    list: &mut ArrayVec<T, N>,
    item: T,
    what: &'static str,
) -> Result<(), DtError> {
    list.try_push(item).map_err(|_| DtError::TooMany { what, limit: N })
}

/// The path `/chosen` `stdout-path` names: options after `:` stripped, an alias resolved.
fn stdout_target<'a>(chosen: &Node<'a>, aliases: Option<&Node<'a>>) -> Option<&'a str> {
    let raw = chosen.prop_str("stdout-path").or_else(|| chosen.prop_str("linux,stdout-path"))?;
    let target = raw.split(':').next().unwrap_or(raw);
    if target.starts_with('/') {
        Some(target)
    } else {
        aliases?.prop_str(target).filter(|p| p.starts_with('/'))
    }
}

/// Whether `node_path` is what `target` names; a target component without `@unit` matches a
/// node name with one, as Linux's path lookup does.
fn path_matches(node_path: &str, target: &str) -> bool {
    let mut nodes = node_path.split('/').filter(|c| !c.is_empty());
    let mut wanted = target.split('/').filter(|c| !c.is_empty());
    loop {
        match (nodes.next(), wanted.next()) {
            (None, None) => return true,
            (Some(n), Some(t)) => {
                let same = n == t || (!t.contains('@') && n.split('@').next() == Some(t));
                if !same {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Big-endian cells as one number (at most 3 cells, so it fits).
fn read_cells(bytes: &[u8]) -> u128 {
    bytes.chunks_exact(4).fold(0u128, |acc, c| {
        (acc << 32) | u128::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    })
}

/// Splits `value` into entries of `cells` cells each; `None` if the length does not divide.
fn entries(value: &[u8], cells: &[u32]) -> Option<impl Iterator<Item = [u128; 3]>> {
    let widths: ArrayVec<usize, 3> = cells.iter().map(|&c| c as usize * 4).collect();
    let entry: usize = widths.iter().sum();
    if entry == 0 || !value.len().is_multiple_of(entry) {
        return None;
    }
    Some(value.chunks_exact(entry).map(move |chunk| {
        let mut out = [0u128; 3];
        let mut at = 0;
        for (slot, &w) in out.iter_mut().zip(widths.iter()) {
            *slot = read_cells(chunk.get(at..at + w).unwrap_or(&[]));
            at += w;
        }
        out
    }))
}

/// Translates `addr` (in the address space of the last ancestor's children) to a CPU address
/// through every ancestor's `ranges`. `Ok(None)` if some bus has no `ranges` or no entry covers
/// `addr`.
fn translate(ancestors: &[Level<'_>], path: &str, mut addr: u128) -> Result<Option<u128>, DtError> {
    for pair in ancestors.windows(2).rev() {
        let [up, bus] = pair else { return Ok(None) };
        let Some(ranges) = bus.node.prop("ranges") else { return Ok(None) };
        if ranges.is_empty() {
            continue;
        }
        let cells = [bus.address_cells, up.address_cells, bus.size_cells];
        let bad = || DtError::BadProperty {
            path: path_lossy(bus.path(path)),
            property: "ranges",
            what: "length is not a multiple of (child + parent address + size) cells",
        };
        let mut translated = None;
        for [child, parent, size] in entries(ranges, &cells).ok_or_else(bad)? {
            if addr >= child && addr - child < size {
                translated = Some(parent + (addr - child));
                break;
            }
        }
        match translated {
            Some(a) => addr = a,
            None => return Ok(None),
        }
    }
    Ok(Some(addr))
}

/// One decoded `reg` entry: CPU address (`None` if untranslatable) and size.
struct RegEntry {
    cpu: Option<u64>,
    size: u64,
}

/// Calls `f` for each `reg` entry of the visited node. Does nothing if the node has no `reg` or
/// its parent bus is not memory-mapped (`#size-cells = <0>` or `#address-cells = <0>`).
fn for_each_reg(
    v: &Visit<'_, '_>,
    mut f: impl FnMut(RegEntry) -> Result<(), DtError>,
) -> Result<(), DtError> {
    let (Some(parent), Some(reg)) = (v.ancestors.last(), v.node.prop("reg")) else {
        return Ok(());
    };
    if parent.size_cells == 0 || parent.address_cells == 0 {
        return Ok(());
    }
    let cells = [parent.address_cells, parent.size_cells];
    let list = entries(reg, &cells).ok_or(DtError::BadProperty {
        path: v.path(),
        property: "reg",
        what: "length is not a multiple of (#address-cells + #size-cells) of the parent",
    })?;
    for [addr, size, _] in list {
        let overflow = || DtError::AddressOverflow { path: v.path() };
        let size = u64::try_from(size).map_err(|_| overflow())?;
        let cpu = match translate(v.ancestors, v.path, addr)? {
            Some(a) => Some(u64::try_from(a).map_err(|_| overflow())?),
            None => None,
        };
        f(RegEntry { cpu, size })?;
    }
    Ok(())
}

/// `[cpu, cpu + size)` for a region that must exist: translated, non-empty, not wrapping.
/// The node's first `reg` entry as a [`required_range`], if it has one (the rest are not read).
fn first_required_reg(v: &Visit<'_, '_>) -> Result<Option<MemRange>, DtError> {
    let mut first = None;
    for_each_reg(v, |entry| {
        if first.is_none() {
            first = Some(required_range(v, &entry)?);
        }
        Ok(())
    })?;
    Ok(first)
}

fn required_range(v: &Visit<'_, '_>, entry: &RegEntry) -> Result<MemRange, DtError> {
    let cpu = entry.cpu.ok_or(DtError::Untranslatable { path: v.path() })?;
    if entry.size == 0 {
        return Err(DtError::ZeroSize { path: v.path() });
    }
    MemRange::from_base_size(cpu, entry.size)
        .filter(|r| r.end != 0)
        .ok_or(DtError::AddressOverflow { path: v.path() })
}

/// Inserts `range` into the sorted list of disjoint, non-touching ranges, merging as needed.
fn insert_merged<const N: usize>(
    list: &mut ArrayVec<MemRange, N>,
    range: MemRange,
) -> Result<(), DtError> {
    let mut merged = range;
    let mut i = 0;
    while let Some(existing) = list.get(i).copied() {
        if existing.start <= merged.end && merged.start <= existing.end {
            merged = MemRange::new(merged.start.min(existing.start), merged.end.max(existing.end));
            list.remove(i);
        } else {
            i += 1;
        }
    }
    let at = list.iter().position(|e| e.start > merged.start).unwrap_or(list.len());
    list.try_insert(at, merged)
        .map_err(|_| DtError::TooMany { what: "device ranges (MAX_DEVICES)", limit: N })
}

/// Removes `cut` from the sorted, disjoint `list`, splitting ranges it falls inside.
fn subtract<const N: usize>(
    list: &mut ArrayVec<MemRange, N>,
    cut: MemRange,
) -> Result<(), DtError> {
    let mut i = 0;
    while let Some(range) = list.get(i).copied() {
        if !range.overlaps(&cut) {
            i += 1;
            continue;
        }
        list.remove(i);
        let below = MemRange::new(range.start, cut.start.clamp(range.start, range.end));
        let above = MemRange::new(cut.end.clamp(range.start, range.end), range.end);
        for piece in [below, above].into_iter().filter(|p| !p.is_empty()) {
            list.try_insert(i, piece)
                .map_err(|_| DtError::TooMany { what: "device ranges (MAX_DEVICES)", limit: N })?;
            i += 1;
        }
    }
    Ok(())
}

/// GIC nodes whose first `reg` entry is the distributor.
const GIC_COMPATIBLES: [&str; 6] = [
    "arm,gic-v3",
    GICV2_COMPATIBLES[0],
    GICV2_COMPATIBLES[1],
    GICV2_COMPATIBLES[2],
    GICV2_COMPATIBLES[3],
    GICV2_COMPATIBLES[4],
];

/// GICv2 nodes (`reg`: GICD, GICC, then optionally GICH and GICV), as Linux's `irq-gic`
/// matches them (QEMU virt's `gic-version=2` is `arm,cortex-a15-gic`, msm8916's
/// `qcom,msm-qgic2`).
pub const GICV2_COMPATIBLES: [&str; 5] = [
    "arm,cortex-a15-gic",
    "arm,gic-400",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
    "qcom,msm-qgic2",
];

/// The SMMU's `interrupts` (3-cell GIC specifiers) matched with `interrupt-names`; only SPIs
/// (type 0) are kept, as INTIDs. Malformed or missing properties give no interrupts.
fn smmu_irqs(node: &Node<'_>) -> SmmuIrqs {
    let mut irqs = SmmuIrqs::default();
    let (Some(cells), Some(names)) = (node.prop("interrupts"), node.prop("interrupt-names")) else {
        return irqs;
    };
    if cells.len() % 12 != 0 {
        return irqs;
    }
    let names = names.split(|&b| b == 0).filter(|n| !n.is_empty());
    for (i, name) in names.enumerate() {
        let (Some(kind), Some(number)) = (be32(cells, i * 12), be32(cells, i * 12 + 4)) else {
            break;
        };
        // SPIs 0..987 are INTIDs 32..1019.
        let intid = (kind == 0 && number < 988).then_some(32 + number as u16);
        match name {
            b"eventq" => irqs.eventq = intid,
            b"gerror" => irqs.gerror = intid,
            b"cmdq-sync" => irqs.cmdq_sync = intid,
            _ => {}
        }
    }
    irqs
}

/// The architected timer's `interrupts`, as PPI numbers in the binding's order (secure
/// physical, non-secure physical, virtual, hypervisor physical, then the hypervisor virtual
/// timer where listed): 3-cell GIC specifiers of type 1 (PPI), numbers 0..=15. A property of
/// another shape, or any entry that is not a PPI, gives no PPIs (warden takes none of them; the
/// list is for [`super::ArchTimer::collides`]).
fn arch_timer(node: &Node<'_>) -> ArchTimer {
    let mut ppis = ArrayVec::new();
    let Some(cells) = node.prop("interrupts").filter(|c| c.len() % 12 == 0) else {
        return ArchTimer { ppis };
    };
    for entry in cells.chunks_exact(12) {
        match (be32(entry, 0), be32(entry, 4)) {
            (Some(1), Some(number)) if number < 16 && ppis.try_push(number as u8).is_ok() => {}
            _ => return ArchTimer { ppis: ArrayVec::new() },
        }
    }
    ArchTimer { ppis }
}

/// An apps SMMU warden can drive: an enabled `arm,mmu-500` that is not a GPU's own
/// (`qcom,adreno-smmu`, which Linux's GPU driver programs itself).
fn is_apps_mmu500(node: &Node<'_>) -> bool {
    node.is_compatible("arm,mmu-500")
        && !node.is_compatible("qcom,adreno-smmu")
        && is_available(node)
}

fn phandle(node: &Node<'_>) -> Option<u32> {
    node.prop("phandle")
        .or_else(|| node.prop("linux,phandle"))
        .filter(|v| v.len() == 4)
        .and_then(|v| be32(v, 0))
}

/// A 32- or 64-bit number property.
fn number(v: &Visit<'_, '_>, name: &'static str) -> Result<Option<u64>, DtError> {
    let Some(value) = v.node.prop(name) else { return Ok(None) };
    let number = match value.len() {
        4 => be32(value, 0).map(u64::from),
        8 => be64(value, 0),
        _ => None,
    };
    number.map(Some).ok_or(DtError::BadProperty {
        path: v.path(),
        property: name,
        what: "must be one or two cells",
    })
}

struct State<'a, 'i> {
    info: &'i mut PlatformInfo,
    stdout_path: Option<&'a str>,
    stdout_uart: Option<ConsoleInfo>,
    first_uart: Option<ConsoleInfo>,
    /// The phandle of the SMMU warden drives (the first SMMUv3).
    warden_smmu: Option<u32>,
    /// Without an SMMUv3: the apps MMU-500's phandle and `#iommu-cells`.
    warden_mmu500: Option<(u32, u32)>,
    /// Pages of withheld devices: left out of `devices` at the end, even where a kept device
    /// shares them.
    withheld_ranges: ArrayVec<MemRange, MAX_WITHHELD_RANGES>,
    /// The RAM came from elsewhere ([`parse_into_with_ram`]): `/memory` nodes are skipped.
    ram_given: bool,
}

/// Whether `path` is strictly inside the subtree at `root`.
fn is_under(path: &str, root: &str) -> bool {
    path.len() > root.len() && path.starts_with(root) && path.as_bytes()[root.len()] == b'/'
}

impl State<'_, '_> {
    fn visit(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let node = &v.node;
        let depth = v.depth();
        if depth == 0 {
            return Ok(());
        }
        let top = v.ancestors.get(1).map_or(node.name, |l| l.node.name);
        if depth == 1 && node.name == "chosen" {
            self.chosen(v)?;
        }
        if depth == 1
            && self.info.psci.is_none()
            && (node.base_name() == "psci"
                || ["arm,psci", "arm,psci-0.2", "arm,psci-1.0"]
                    .iter()
                    .any(|c| node.is_compatible(c)))
        {
            self.psci(v)?;
        }
        if top == "cpus" {
            if depth == 2 && is_cpu(node) {
                self.cpu(v)?;
            }
            return Ok(());
        }
        if top == "reserved-memory" {
            if depth == 2 {
                self.reserved(v)?;
            }
            return Ok(());
        }
        if node.prop_str("device_type") == Some("memory") {
            // A disabled memory node is not the OS's RAM (QEMU's `secure=on` DT lists the
            // secure SRAM so, `secure-status = "okay"`): the non-secure side cannot reach it.
            if !is_available(node) || self.ram_given {
                return Ok(());
            }
            return for_each_reg(v, |entry| {
                // A zero-sized bank is a placeholder the boot loader fills in (every Qualcomm
                // board DT ships `reg = <0 0x80000000 0 0>`); Linux skips it, so does warden.
                if entry.size == 0 {
                    return Ok(());
                }
                let range = required_range(v, &entry)?;
                push(&mut self.info.memory, range, "memory ranges (MAX_MEMORY_RANGES)")
            });
        }
        // Children of a PCI bus are addressed in PCI config space: ECAM and windows cover them.
        if v.ancestors.iter().skip(1).any(|l| l.node.prop_str("device_type") == Some("pci")) {
            return Ok(());
        }
        // warden's own console and the IOMMUs are found even inside a withheld subtree (a
        // Qualcomm GENI UART sits under its withheld QUP wrapper).
        if let Some(&(_, kind)) = UartKind::COMPATIBLES.iter().find(|(c, _)| node.is_compatible(c))
            && is_available(node)
        {
            self.uart(v, kind)?;
        }
        if is_available(node)
            && self.warden_mmu500.is_some_and(|(p, _)| phandle(node) == Some(p))
            && is_apps_mmu500(node)
        {
            return self.mmu500(v);
        }
        if is_available(node) {
            let iommu = if node.is_compatible("arm,mmu-500") {
                Some(OtherIommuKind::ArmMmu500)
            } else if node.is_compatible("qcom,msm-iommu-v1") {
                Some(OtherIommuKind::QcomMsmIommuV1)
            } else {
                None
            };
            if let Some(kind) = iommu {
                self.other_iommu(v, kind)?;
            }
        }
        if self.info.timer.is_none()
            && is_available(node)
            && ["arm,armv8-timer", "arm,armv7-timer"].iter().any(|c| node.is_compatible(c))
        {
            self.info.timer = Some(arch_timer(node));
        }
        // A withheld node's subtree goes with it.
        if self.info.withheld.iter().any(|w| is_under(v.path, &w.path)) {
            return Ok(());
        }
        if node.is_compatible("qemu,platform") {
            return self.withhold(v, policy::Withheld::DynamicSysbus, None);
        }
        if node.is_compatible("arm,smmu-v3") {
            return self.smmu(v);
        }
        if node.is_compatible("pci-host-ecam-generic") {
            return self.pcie(v);
        }
        if self.info.gic_dist.is_none() && GIC_COMPATIBLES.iter().any(|c| node.is_compatible(c)) {
            let first = first_required_reg(v)?;
            self.info.gic_dist = first;
        }
        let available = is_available(node);
        if available && self.info.gicv3.is_none() && node.is_compatible("arm,gic-v3") {
            self.gicv3(v)?;
        }
        if available
            && self.info.gicv2.is_none()
            && GICV2_COMPATIBLES.iter().any(|c| node.is_compatible(c))
        {
            self.gicv2(v)?;
        }
        if available && node.is_compatible("arm,gic-v3-its") {
            let first = first_required_reg(v)?;
            if let Some(regs) = first {
                push(&mut self.info.gic_its, regs, "GICv3 ITSes (MAX_ITS)")?;
            }
        }
        // The node's MMIO, page aligned: first to know whether it is a device at all, then
        // into the list the policy picks.
        let page_range = |entry: &RegEntry| -> Result<Option<MemRange>, DtError> {
            let Some(cpu) = entry.cpu else { return Ok(None) };
            if entry.size == 0 {
                return Ok(None);
            }
            MemRange::from_base_size(cpu, entry.size)
                .and_then(|r| r.page_aligned_outward())
                .filter(|r| r.end != 0)
                .map(Some)
                .ok_or(DtError::AddressOverflow { path: v.path() })
        };
        let mut first = None;
        for_each_reg(v, |entry| {
            if first.is_none() {
                first = page_range(&entry)?;
            }
            Ok(())
        })?;
        if first.is_none() {
            return Ok(());
        }
        let warden_iommu = self.warden_smmu.map(|p| (p, 1)).or(self.warden_mmu500);
        let verdict = policy::classify(node, warden_iommu, available);
        if verdict == policy::Verdict::Keep && available {
            self.mmu500_streams(v)?;
        }
        let (devices, withheld) = (&mut self.info.devices, &mut self.withheld_ranges);
        for_each_reg(v, |entry| match (page_range(&entry)?, verdict) {
            (Some(range), policy::Verdict::Keep) => insert_merged(devices, range),
            (Some(range), policy::Verdict::Withhold(_)) => insert_merged(withheld, range),
            (None, _) => Ok(()),
        })?;
        match verdict {
            policy::Verdict::Keep => Ok(()),
            policy::Verdict::Withhold(why) => {
                let device = WithheldDevice { path: v.path(), why, regs: first };
                push(&mut self.info.withheld, device, "withheld devices (MAX_WITHHELD)")
            }
        }
    }

    /// Records a withheld device: listed for the log and the DT patch, its pages kept out.
    fn withhold(
        &mut self,
        v: &Visit<'_, '_>,
        why: policy::Withheld,
        ranges: Option<&[MemRange]>,
    ) -> Result<(), DtError> {
        let ranges = ranges.unwrap_or(&[]);
        for range in ranges {
            insert_merged(&mut self.withheld_ranges, *range)?;
        }
        let device = WithheldDevice { path: v.path(), why, regs: ranges.first().copied() };
        push(&mut self.info.withheld, device, "withheld devices (MAX_WITHHELD)")
    }

    /// The `arm,gic-v3` node: distributor, redistributor regions, stride.
    fn gicv3(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let bad = |what| DtError::BadProperty { path: v.path(), property: "reg", what };
        let regions = match number(v, "#redistributor-regions")? {
            None => 1,
            Some(n) if (1..=MAX_REDIST_REGIONS as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(DtError::BadProperty {
                    path: v.path(),
                    property: "#redistributor-regions",
                    what: "must be 1..=MAX_REDIST_REGIONS",
                });
            }
        };
        let mut dist = None;
        let mut redist_regions = ArrayVec::new();
        for_each_reg(v, |entry| {
            let range = required_range(v, &entry)?;
            if dist.is_none() {
                dist = Some(range);
            } else if redist_regions.len() < regions {
                redist_regions.push(range);
            }
            Ok(())
        })?;
        let dist = dist.ok_or(bad("missing (the distributor)"))?;
        if redist_regions.len() < regions {
            return Err(bad("fewer redistributor regions than #redistributor-regions"));
        }
        let redist_stride = number(v, "redistributor-stride")?;
        self.info.gicv3 = Some(GicV3Info { path: v.path(), dist, redist_regions, redist_stride });
        Ok(())
    }

    /// A GICv2 node: GICD and GICC (required), GICH and GICV (optional). GICH and GICV are
    /// cut from the host's devices (`withheld_ranges`, so no other node's range can bring them
    /// back): the host runs at EL1 and has no use for a hypervisor's interface.
    fn gicv2(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let bad = |what| DtError::BadProperty { path: v.path(), property: "reg", what };
        let mut frames: ArrayVec<MemRange, 4> = ArrayVec::new();
        for_each_reg(v, |entry| {
            let range = required_range(v, &entry)?;
            // Entries past GICV (none in the binding) are ignored like Linux does.
            let _ = frames.try_push(range);
            Ok(())
        })?;
        let (Some(&dist), Some(&cpu)) = (frames.first(), frames.get(1)) else {
            return Err(bad("a GICv2 needs GICD and GICC"));
        };
        let (hyp, vcpu) = (frames.get(2).copied(), frames.get(3).copied());
        let parent = v.ancestors.last().ok_or(bad("no parent node"))?;
        let entry_bytes = (parent.address_cells as usize + parent.size_cells as usize) * 4;
        let raw = v.node.prop("reg").unwrap_or(&[]);
        let mut host_reg = ArrayVec::new();
        host_reg
            .try_extend_from_slice(raw.get(..2 * entry_bytes).ok_or(bad("too short"))?)
            .map_err(|_| bad("entries wider than 2 address + 2 size cells"))?;
        for frame in hyp.iter().chain(vcpu.iter()) {
            let cut =
                frame.page_aligned_outward().ok_or(DtError::AddressOverflow { path: v.path() })?;
            insert_merged(&mut self.withheld_ranges, cut)?;
        }
        self.info.gicv2 = Some(GicV2Info { path: v.path(), dist, cpu, hyp, vcpu, host_reg });
        Ok(())
    }

    fn chosen(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        if let Some(args) = v.node.prop_str("bootargs") {
            let stored = ArrayString::from(args)
                .map_err(|_| DtError::BootargsTooLong { len: args.len() })?;
            self.info.bootargs = Some(stored);
        }
        let start = number(v, "linux,initrd-start")?;
        let end = number(v, "linux,initrd-end")?;
        let bad = |property, what| DtError::BadProperty { path: v.path(), property, what };
        self.info.initrd = match (start, end) {
            (None, None) => None,
            (Some(s), Some(e)) if e >= s => Some(MemRange::new(s, e)),
            (Some(_), Some(_)) => {
                return Err(bad("linux,initrd-end", "is below linux,initrd-start"));
            }
            (Some(_), None) => {
                return Err(bad("linux,initrd-start", "present without linux,initrd-end"));
            }
            (None, Some(_)) => {
                return Err(bad("linux,initrd-end", "present without linux,initrd-start"));
            }
        };
        Ok(())
    }

    fn psci(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        self.info.psci = match v.node.prop_str("method") {
            Some("smc") => Some(PsciConduit::Smc),
            Some("hvc") => Some(PsciConduit::Hvc),
            _ => return Err(DtError::BadPsciMethod { path: v.path() }),
        };
        Ok(())
    }

    fn cpu(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let cells = v.ancestors.last().map_or(0, |l| l.address_cells);
        let bad = |what| DtError::BadProperty { path: v.path(), property: "reg", what };
        if !(1..=2).contains(&cells) {
            return Err(bad("/cpus #address-cells must be 1 or 2"));
        }
        let width = cells as usize * 4;
        let reg = v.node.prop("reg").ok_or(bad("missing"))?;
        if reg.is_empty() || !reg.len().is_multiple_of(width) {
            return Err(bad("length is not a multiple of /cpus #address-cells"));
        }
        let mpidr = u64::try_from(read_cells(reg.get(..width).unwrap_or(&[])))
            .map_err(|_| bad("does not fit in 64 bits"))?;
        // MPIDR_EL1 affinity fields: Aff3 [39:32], Aff2..Aff0 [23:0].
        if mpidr & !0xff_00ff_ffff != 0 {
            return Err(bad("has bits outside the MPIDR affinity fields"));
        }
        if self.info.cpus.iter().any(|c| c.mpidr == mpidr) {
            return Err(DtError::DuplicateCpu { mpidr });
        }
        let enable_method = match v.node.prop_str("enable-method") {
            Some("psci") => CpuEnableMethod::Psci,
            Some("spin-table") => CpuEnableMethod::SpinTable,
            Some(_) => CpuEnableMethod::Other,
            None => CpuEnableMethod::Absent,
        };
        push(&mut self.info.cpus, CpuInfo { mpidr, enable_method }, "CPUs (MAX_CPUS)")
    }

    fn reserved(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        if !is_available(&v.node) {
            return Ok(());
        }
        let name =
            NodeName::from(v.node.name).map_err(|_| DtError::NameTooLong { path: v.path() })?;
        let no_map = v.node.has_prop("no-map");
        let carveout = carveout_binding(v)?;
        let mut regs = 0usize;
        for_each_reg(v, |entry| {
            let range = required_range(v, &entry)?;
            regs += 1;
            if let Some((peer, policy, clear_on_reclaim, source)) = carveout {
                let bad = |property, what| DtError::BadProperty { path: v.path(), property, what };
                if !no_map {
                    return Err(bad(
                        "no-map",
                        "missing on a warden carveout: the kernel would map it (add no-map;)",
                    ));
                }
                if regs > 1 {
                    return Err(bad("reg", "a warden carveout has exactly one reg entry"));
                }
                if !range.is_page_aligned() {
                    return Err(bad(
                        "reg",
                        "a warden carveout must be 4 KiB aligned in base and size",
                    ));
                }
                let carveout = Carveout { name, range, peer, policy, clear_on_reclaim, source };
                push(&mut self.info.carveouts, carveout, "carveouts (MAX_CARVEOUTS)")?;
            }
            let region = ReservedRegion { name, range, no_map, carveout: carveout.is_some() };
            push(&mut self.info.reserved, region, RESERVED)
        })?;
        if carveout.is_some() && regs == 0 {
            return Err(DtError::BadProperty {
                path: v.path(),
                property: "reg",
                what: "missing on a warden carveout (dynamic reserved memory cannot be one)",
            });
        }
        Ok(())
    }

    fn smmu(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let mut regs: Option<MemRange> = None;
        for_each_reg(v, |entry| {
            if regs.is_some() {
                return Err(DtError::BadProperty {
                    path: v.path(),
                    property: "reg",
                    what: "an SMMUv3 has exactly one register range",
                });
            }
            regs = Some(required_range(v, &entry)?);
            Ok(())
        })?;
        let regs = regs.ok_or(DtError::BadProperty {
            path: v.path(),
            property: "reg",
            what: "missing (the SMMU registers must be known to hide them)",
        })?;
        let smmu =
            SmmuInfo { regs, phandle: phandle(&v.node), path: v.path(), irqs: smmu_irqs(&v.node) };
        push(&mut self.info.smmus, smmu, "SMMUv3 nodes (MAX_SMMUS)")
    }

    fn pcie(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let bad = |property, what| DtError::BadProperty { path: v.path(), property, what };
        if v.level.address_cells != 3 {
            return Err(bad("#address-cells", "a PCI host bridge needs 3"));
        }
        let mut ecam: Option<MemRange> = None;
        for_each_reg(v, |entry| {
            if ecam.is_none() {
                ecam = Some(required_range(v, &entry)?);
            }
            Ok(())
        })?;
        let ecam = ecam.ok_or(bad("reg", "missing (the ECAM range)"))?;
        let mut host =
            PcieHost { path: v.path(), ecam, windows: ArrayVec::new(), iommu_map: ArrayVec::new() };

        let parent_cells = v.ancestors.last().map_or(2, |l| l.address_cells);
        if let Some(ranges) = v.node.prop("ranges") {
            let cells = [3, parent_cells, v.level.size_cells];
            let list = entries(ranges, &cells)
                .ok_or(bad("ranges", "length is not a multiple of (3 + parent + size) cells"))?;
            for [pci, parent_addr, size] in list {
                let overflow = || DtError::AddressOverflow { path: v.path() };
                let phys_hi = (pci >> 64) as u32;
                let space = match (phys_hi >> 24) & 3 {
                    0 => PciSpace::Config,
                    1 => PciSpace::Io,
                    2 => PciSpace::Mem32,
                    _ => PciSpace::Mem64,
                };
                let cpu = translate(v.ancestors, v.path, parent_addr)?
                    .ok_or(DtError::Untranslatable { path: v.path() })?;
                let cpu = u64::try_from(cpu).map_err(|_| overflow())?;
                let size = u64::try_from(size).map_err(|_| overflow())?;
                if size == 0 {
                    return Err(DtError::ZeroSize { path: v.path() });
                }
                let cpu = MemRange::from_base_size(cpu, size)
                    .filter(|r| r.end != 0)
                    .ok_or_else(overflow)?;
                let window = PcieWindow {
                    space,
                    prefetchable: phys_hi & 0x4000_0000 != 0,
                    pci_addr: pci as u64,
                    cpu,
                };
                push(&mut host.windows, window, "PCIe windows (MAX_PCIE_WINDOWS)")?;
            }
        }

        if let Some(map) = v.node.prop("iommu-map") {
            let list =
                entries(map, &[2, 2]).ok_or(bad("iommu-map", "length is not 4-cell entries"))?;
            for [first, second, _] in list {
                let entry = IommuMapEntry {
                    rid_base: (first >> 32) as u32,
                    iommu_phandle: first as u32,
                    sid_base: (second >> 32) as u32,
                    length: second as u32,
                };
                push(&mut host.iommu_map, entry, "iommu-map entries (MAX_IOMMU_MAP)")?;
            }
        }

        let mut ranges: ArrayVec<MemRange, { MAX_PCIE_WINDOWS + 1 }> = ArrayVec::new();
        for range in core::iter::once(host.ecam).chain(host.windows.iter().map(|w| w.cpu)) {
            let aligned =
                range.page_aligned_outward().ok_or(DtError::AddressOverflow { path: v.path() })?;
            ranges.push(aligned);
        }
        // Behind warden's SMMU only if every requester ID of its buses goes there.
        let (first_bus, last_bus) = match v.node.prop("bus-range") {
            Some(value) => match (be32(value, 0), be32(value, 4)) {
                (Some(first), Some(last)) if value.len() == 8 && first <= last && last < 256 => {
                    (first, last)
                }
                _ => return Err(bad("bus-range", "must be two cells, first <= last < 256")),
            },
            None => (0, 255),
        };
        let behind = self.warden_smmu.is_some_and(|smmu| {
            let map = host.iommu_map.iter().map(|m| (m.rid_base, m.iommu_phandle, m.length));
            policy::rids_covered(map, smmu, first_bus << 8, (last_bus + 1) << 8)
        });
        if !behind {
            return self.withhold(v, policy::Withheld::PcieOutsideSmmu, Some(&ranges));
        }
        for range in ranges {
            insert_merged(&mut self.info.devices, range)?;
        }
        push(&mut self.info.pcie, host, "PCIe host bridges (MAX_PCIE)")
    }

    /// warden's apps MMU-500 ([`Mmu500Info`]): not a host device (the host reaches it only
    /// through warden's face, if at all), so neither kept nor withheld.
    fn mmu500(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let bad = |property, what| DtError::BadProperty { path: v.path(), property, what };
        let first = first_required_reg(v)?;
        let regs =
            first.ok_or(bad("reg", "missing (the SMMU registers must be known to hide them)"))?;
        let iommu_cells = match v.node.prop("#iommu-cells").map(|c| (c.len(), be32(c, 0))) {
            Some((4, Some(n @ (1 | 2)))) => n,
            _ => return Err(bad("#iommu-cells", "must be 1 or 2 on an MMU-500")),
        };
        let global_irqs = match v.node.prop("#global-interrupts").map(|c| (c.len(), be32(c, 0))) {
            Some((4, Some(n))) if n >= 1 => n,
            _ => return Err(bad("#global-interrupts", "must be one cell, at least 1")),
        };
        let mut spis: ArrayVec<u16, { MAX_MMU500_CONTEXT_IRQS + 8 }> = ArrayVec::new();
        let mut all_spis = true;
        if let Some(cells) = v.node.prop("interrupts").filter(|c| c.len() % 12 == 0) {
            for entry in cells.chunks_exact(12) {
                match (be32(entry, 0), be32(entry, 4)) {
                    // SPIs 0..987 are INTIDs 32..1019.
                    (Some(0), Some(n)) if n < 988 => {
                        let _ = spis.try_push(32 + n as u16);
                    }
                    _ => all_spis = false,
                }
            }
        }
        let (global_irq, context_irqs) = if all_spis && spis.len() > global_irqs as usize {
            (
                spis.first().copied(),
                spis.iter()
                    .skip(global_irqs as usize)
                    .take(MAX_MMU500_CONTEXT_IRQS)
                    .copied()
                    .collect(),
            )
        } else {
            (None, ArrayVec::new())
        };
        self.info.mmu500 = Some(Mmu500Info {
            path: v.path(),
            regs,
            phandle: phandle(&v.node),
            iommu_cells,
            global_irqs,
            global_irq,
            context_irqs,
        });
        Ok(())
    }

    /// A kept device's `iommus` specifiers naming warden's MMU-500, as host streams (the
    /// policy kept the device only if every specifier names it).
    fn mmu500_streams(&mut self, v: &Visit<'_, '_>) -> Result<(), DtError> {
        let (Some((mmu500, cells)), Some(iommus)) = (self.warden_mmu500, v.node.prop("iommus"))
        else {
            return Ok(());
        };
        let width = 4 * (1 + cells as usize);
        for entry in iommus.chunks_exact(width) {
            if be32(entry, 0) != Some(mmu500) {
                continue;
            }
            let id = be32(entry, 4).unwrap_or(0);
            let mask = if cells >= 2 { be32(entry, 8).unwrap_or(0) } else { 0 };
            let stream = crate::smmu::mmu500::StreamMatch { id, mask };
            push(
                &mut self.info.mmu500_streams,
                stream,
                "MMU-500 host streams (MAX_MMU500_STREAMS)",
            )?;
        }
        Ok(())
    }

    fn other_iommu(&mut self, v: &Visit<'_, '_>, kind: OtherIommuKind) -> Result<(), DtError> {
        let first = first_required_reg(v)?;
        let Some(regs) = first else { return Ok(()) };
        let iommu = OtherIommu { kind, path: v.path(), regs, phandle: phandle(&v.node) };
        push(&mut self.info.other_iommus, iommu, "IOMMUs other than SMMUv3 (MAX_SMMUS)")
    }

    fn uart(&mut self, v: &Visit<'_, '_>, kind: UartKind) -> Result<(), DtError> {
        let mut first: Option<MemRange> = None;
        for_each_reg(v, |entry| {
            if first.is_none() {
                first = entry.cpu.and_then(|cpu| MemRange::from_base_size(cpu, entry.size));
            }
            Ok(())
        })?;
        let Some(regs) = first.filter(|r| !r.is_empty()) else { return Ok(()) };
        let console = ConsoleInfo { kind, regs };
        if self.first_uart.is_none() {
            self.first_uart = Some(console);
        }
        if self.stdout_uart.is_none() && self.stdout_path.is_some_and(|t| path_matches(v.path, t)) {
            self.stdout_uart = Some(console);
        }
        Ok(())
    }

    fn finish(self) -> Result<(), DtError> {
        let info = self.info;
        info.console = self.stdout_uart.or(self.first_uart);
        if info.memory.is_empty() {
            return Err(DtError::NoMemory);
        }
        if info.cpus.is_empty() {
            return Err(DtError::NoCpus);
        }
        info.memory.sort_unstable();
        for pair in info.memory.windows(2) {
            if let [first, second] = pair
                && first.overlaps(second)
            {
                return Err(DtError::MemoryOverlap { first: *first, second: *second });
            }
        }
        info.reserved.sort_unstable_by_key(|r| (r.range.start, r.range.end));
        for pair in info.reserved.windows(2) {
            if let [first, second] = pair
                && first.range.overlaps(&second.range)
            {
                return Err(DtError::ReservedOverlap {
                    first: first.name,
                    first_range: first.range,
                    second: second.name,
                    second_range: second.range,
                });
            }
        }
        info.carveouts.sort_unstable_by_key(|c| c.range.start);
        // A carveout outside RAM cannot be managed (warden tracks and hands over RAM only):
        // set aside to be reported, not refused. Other reserved regions outside RAM are as
        // harmless as they are pointless.
        let memory = info.memory.clone();
        info.carveouts.retain(|c| covered(&memory, &c.range));
        let iommus = info.smmus.iter().map(|s| s.regs).chain(info.mmu500.as_ref().map(|m| m.regs));
        for regs in iommus {
            if let Some(device) = info.devices.iter().find(|d| d.overlaps(&regs)) {
                return Err(DtError::DeviceOverlapsSmmu { device: *device, smmu: regs });
            }
        }
        // A page a withheld device shares with a kept one is left out: the withheld wins.
        for cut in &self.withheld_ranges {
            subtract(&mut info.devices, *cut)?;
        }
        Ok(())
    }
}

/// Whether the sorted, disjoint `memory` ranges cover all of `range`.
pub fn covered(memory: &[MemRange], range: &MemRange) -> bool {
    let mut cursor = range.start;
    for m in memory {
        if m.contains(cursor) {
            cursor = m.end;
            if cursor >= range.end {
                return true;
            }
        }
    }
    false
}

/// Qualcomm `/reserved-memory` node names (without `@unit`) that are carveouts by default,
/// and their peer. Older Qualcomm DTs name the regions this way (`mpss@8e000000`); newer ones
/// use `memory@...` with labels that do not survive compilation, and need `warden,peer`.
pub const QCOM_CARVEOUT_NAMES: [(&str, PeerId); 14] = [
    ("mpss", PeerId::MODEM),
    ("mpss-mem", PeerId::MODEM),
    ("mpss_mem", PeerId::MODEM),
    ("modem", PeerId::MODEM),
    ("modem_mem", PeerId::MODEM),
    ("adsp", PeerId::DSP),
    ("adsp_mem", PeerId::DSP),
    ("cdsp", PeerId::DSP),
    ("cdsp_mem", PeerId::DSP),
    ("slpi", PeerId::DSP),
    ("slpi_mem", PeerId::DSP),
    ("dsp", PeerId::DSP),
    ("wpss", PeerId::WLAN),
    ("wpss_mem", PeerId::WLAN),
];

/// The carveout binding of a `/reserved-memory` child: `None` if it is not a carveout, else
/// (peer, policy, clear-on-reclaim, why). See `docs/carveouts.md`.
fn carveout_binding(
    v: &Visit<'_, '_>,
) -> Result<Option<(PeerId, Policy, bool, CarveoutSource)>, DtError> {
    let node = &v.node;
    let bad = |property, what| DtError::BadProperty { path: v.path(), property, what };
    let by_name = node.prop("warden,peer").map(|value| {
        string_value(value)
            .and_then(PeerId::from_name)
            .ok_or(bad("warden,peer", "unknown peer (known: \"modem\", \"dsp\", \"wlan\")"))
    });
    let by_id = node.prop("warden,peer-id").map(|value| {
        <[u8; 4]>::try_from(value)
            .ok()
            .and_then(|cell| u8::try_from(u32::from_be_bytes(cell)).ok())
            .and_then(PeerId::new)
            .ok_or(bad("warden,peer-id", "must be one cell, 1..=63"))
    });
    let (peer, source) = match (by_name, by_id) {
        (Some(_), Some(_)) => {
            return Err(bad("warden,peer-id", "give warden,peer or warden,peer-id, not both"));
        }
        (Some(peer), None) | (None, Some(peer)) => (peer?, CarveoutSource::Binding),
        (None, None) => {
            let Some(&(_, peer)) =
                QCOM_CARVEOUT_NAMES.iter().find(|(name, _)| *name == node.base_name())
            else {
                for property in ["warden,policy", "warden,clear-on-reclaim"] {
                    if node.has_prop(property) {
                        return Err(bad(property, "given without warden,peer"));
                    }
                }
                return Ok(None);
            };
            (peer, CarveoutSource::QcomName)
        }
    };
    let policy = match node.prop("warden,policy") {
        None => Policy::Donate,
        Some(value) => string_value(value)
            .and_then(Policy::from_name)
            .ok_or(bad("warden,policy", "must be \"donate\" or \"lend\""))?,
    };
    let clear_on_reclaim = match node.prop("warden,clear-on-reclaim") {
        None => false,
        Some([]) => true,
        Some(_) => return Err(bad("warden,clear-on-reclaim", "is a flag: it takes no value")),
    };
    Ok(Some((peer, policy, clear_on_reclaim, source)))
}

/// A property holding exactly one NUL-terminated UTF-8 string.
fn string_value(value: &[u8]) -> Option<&str> {
    let (&last, text) = value.split_last()?;
    if last != 0 || text.contains(&0) {
        return None;
    }
    core::str::from_utf8(text).ok()
}

fn is_cpu(node: &Node<'_>) -> bool {
    match node.prop_str("device_type") {
        Some(t) => t == "cpu",
        None => node.base_name() == "cpu",
    }
}

fn is_available(node: &Node<'_>) -> bool {
    matches!(node.prop_str("status"), None | Some("okay") | Some("ok"))
}
