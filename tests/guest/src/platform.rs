//! What the guest needs from the DT warden (or QEMU) passed in x0. The DT is input from
//! outside: every missing or malformed piece becomes a value the scenarios report, never a
//! panic here.

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::devicetree;
use crate::entry::MAX_CPUS;
use crate::pci::{self, PcieHost};
use crate::smccc::Conduit;

/// A fixed-capacity list (no heap in the guest).
#[derive(Clone, Copy, Debug)]
pub struct FixedList<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
    /// Entries dropped because the list was full.
    pub overflowed: bool,
}

impl<T: Copy + Default, const N: usize> FixedList<T, N> {
    fn new() -> Self {
        Self { items: [T::default(); N], len: 0, overflowed: false }
    }

    fn push(&mut self, item: T) {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    pub fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or_default()
    }
}

/// A `/reserved-memory/warden*` region.
#[derive(Clone, Copy, Debug, Default)]
pub struct WardenRegion {
    pub base: u64,
    pub size: u64,
    pub no_map: bool,
}

const MAX_WARDEN_REGIONS: usize = 4;

#[derive(Debug)]
pub struct Platform {
    /// MPIDR affinity values of the CPUs, in DT order.
    pub cpus: Result<FixedList<u64, MAX_CPUS>, &'static str>,
    /// PSCI conduit (`method` of the PSCI node).
    pub psci: Result<Conduit, &'static str>,
    /// warden's own memory, as it announces it to the host.
    pub warden_regions: Result<FixedList<WardenRegion, MAX_WARDEN_REGIONS>, &'static str>,
    /// The PCIe host bridge (ECAM and 32-bit memory window).
    pub pcie: Result<PcieHost, &'static str>,
    /// `warden.bench` (or `warden.bench=quick`) on the command line: measure instead of test.
    pub bench: Option<BenchMode>,
    /// `warden.scenarios=handoff` on the command line: only the carveout handoff scenarios.
    pub handoff_only: bool,
    /// `warden.scenarios=platform` on the command line: the board checks (every CPU on and
    /// off, the GICv2's frames when there is one), then the carveout handoff scenarios.
    pub platform_checks: bool,
    /// The GICv2 node (`arm,cortex-a15-gic`), if the DT has one.
    pub gicv2: Option<GicV2Node>,
    /// `warden.stress[=CYCLES]` on the command line: run only the handoff stress scenario, with
    /// that many donate/reclaim cycles (`cargo xtask test --only handoff-stress` gives none:
    /// [`crate::handoff_stress::DEFAULT_CYCLES`]; `cargo xtask soak` 100 000). `Err`: a
    /// `CYCLES` that is not a positive number.
    pub stress: Option<Result<u64, &'static str>>,
    /// The console UART's base, if the DT names one.
    pub console: Option<u64>,
    /// The SMMUv3's register base (warden's virtual SMMU), if the DT has one.
    pub smmu: Option<u64>,
    /// The MMU-500 register window (`arm,mmu-500`): warden's Snapdragon persona.
    pub mmu500: Option<u64>,
    /// The GICv3 ITS's register base (its control frame), if the DT has one.
    pub its: Option<u64>,
    /// The GICv3's first redistributor region (base, size): its second `reg` entry.
    pub gicr: Option<(u64, u64)>,
    /// Where the board put its two carveouts (inside whatever RAM the machine has).
    pub carveouts: Result<BoardCarveouts, &'static str>,
}

/// A GICv2 node as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicV2Node {
    /// GICC (its second `reg` entry).
    pub cpu_interface: u64,
    /// How many `reg` entries it has (QEMU lists 4 with EL2: GICD, GICC, GICH, GICV).
    pub reg_entries: usize,
    /// Whether it has an `interrupts` property (the GICH maintenance interrupt).
    pub maintenance_interrupt: bool,
}

/// The board's carveouts as the DT names them: (base, size) of `/reserved-memory/modem@*` and
/// of `/reserved-memory/dsp@*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardCarveouts {
    pub modem: (u64, u64),
    pub dsp: (u64, u64),
}

/// How much `cargo xtask bench` wants measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// Every row, repeated.
    Full,
    /// Every row once (a smoke test of the harness).
    Quick,
    /// The trap rows only, repeated (`cargo xtask bench`'s run on the Snapdragon persona, for
    /// the MMU-500 rows).
    Traps,
    /// Only [`crate::bench::PROFILE_CYCLES`] donate/reclaim cycles of this many bytes (64 KiB
    /// for `warden.bench=profile`, 1 MiB for `warden.bench=profile-1m`), for warden's per-phase
    /// profile (logged at power-down).
    Profile(u64),
    /// The handoff rows only, repeated (`cargo xtask bench --handoffs`).
    Handoffs,
}

fn find_handoff_only(fdt: &Fdt<'_>) -> bool {
    has_word(fdt, "warden.scenarios=handoff")
}

fn has_word(fdt: &Fdt<'_>, word: &str) -> bool {
    fdt.chosen().bootargs().is_some_and(|args| args.split_ascii_whitespace().any(|w| w == word))
}

fn find_gicv2(fdt: &Fdt<'_>) -> Option<GicV2Node> {
    let node = fdt.find_compatible(&["arm,cortex-a15-gic"])?;
    let cpu = node.reg()?.nth(1)?;
    Some(GicV2Node {
        cpu_interface: u64::try_from(cpu.starting_address as usize).ok()?,
        reg_entries: node.reg()?.count(),
        maintenance_interrupt: node.property("interrupts").is_some(),
    })
}

/// `warden.stress` → the default cycle count; `warden.stress=N` → N (a positive decimal
/// number, else `Err`); absent → `None`.
fn find_stress(fdt: &Fdt<'_>) -> Option<Result<u64, &'static str>> {
    let bootargs = fdt.chosen().bootargs()?;
    bootargs.split_ascii_whitespace().find_map(|word| {
        if word == "warden.stress" {
            return Some(Ok(crate::handoff_stress::DEFAULT_CYCLES));
        }
        let cycles = word.strip_prefix("warden.stress=")?;
        Some(match cycles.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err("warden.stress=CYCLES: CYCLES must be a positive decimal number"),
        })
    })
}

fn find_bench_mode(fdt: &Fdt<'_>) -> Option<BenchMode> {
    let bootargs = fdt.chosen().bootargs()?;
    bootargs.split_ascii_whitespace().find_map(|word| match word {
        "warden.bench" => Some(BenchMode::Full),
        "warden.bench=quick" => Some(BenchMode::Quick),
        "warden.bench=profile" => Some(BenchMode::Profile(64 << 10)),
        "warden.bench=profile-1m" => Some(BenchMode::Profile(1 << 20)),
        "warden.bench=handoffs" => Some(BenchMode::Handoffs),
        "warden.bench=traps" => Some(BenchMode::Traps),
        _ => None,
    })
}

impl Platform {
    /// Reads the DT at physical address `dt_address`.
    pub fn from_dt(dt_address: u64) -> Result<Self, &'static str> {
        if dt_address == 0 || !dt_address.is_multiple_of(8) {
            return Err("DT address is 0 or not 8-byte aligned");
        }
        // SAFETY: x0 at entry is the DT's physical address by the boot protocol, with the MMU
        // off physical memory is directly addressable, nothing writes the DT during the run,
        // and this runs once on the primary CPU before any other starts.
        let blob = unsafe { devicetree::load(dt_address) }?;
        let fdt = Fdt::new(blob).map_err(|_| "the DT header is not valid")?;
        // The console (`/chosen/stdout-path`, else the first `arm,pl011`) is switched on as
        // soon as it is known, so that a parser panic below is reported.
        let console = find_console(&fdt);
        if let Some(base) = console {
            crate::console::init(base);
        }
        Ok(Self {
            bench: find_bench_mode(&fdt),
            handoff_only: find_handoff_only(&fdt),
            platform_checks: has_word(&fdt, "warden.scenarios=platform"),
            gicv2: find_gicv2(&fdt),
            stress: find_stress(&fdt),
            console,
            cpus: find_cpus(&fdt),
            psci: find_psci(&fdt),
            warden_regions: find_warden_regions(&fdt),
            pcie: pci::find_host(&fdt),
            smmu: fdt.find_compatible(&["arm,smmu-v3"]).and_then(first_reg_address),
            mmu500: fdt.find_compatible(&["arm,mmu-500"]).and_then(first_reg_address),
            its: fdt.find_compatible(&["arm,gic-v3-its"]).and_then(first_reg_address),
            gicr: fdt.find_compatible(&["arm,gic-v3"]).and_then(redistributor_region),
            carveouts: find_board_carveouts(&fdt),
        })
    }
}

fn first_reg_address(node: FdtNode<'_, '_>) -> Option<u64> {
    let region = node.reg()?.next()?;
    u64::try_from(region.starting_address as usize).ok()
}

/// The second `reg` entry of a GICv3 node: its first redistributor region.
fn redistributor_region(node: FdtNode<'_, '_>) -> Option<(u64, u64)> {
    let region = node.reg()?.nth(1)?;
    let base = u64::try_from(region.starting_address as usize).ok()?;
    let size = u64::try_from(region.size?).ok()?;
    Some((base, size))
}

fn is_pl011(node: FdtNode<'_, '_>) -> bool {
    node.compatible().is_some_and(|compatible| compatible.all().any(|c| c == "arm,pl011"))
}

fn find_console(fdt: &Fdt<'_>) -> Option<u64> {
    let from_stdout_path = fdt
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("stdout-path"))
        .and_then(|property| property.as_str())
        .and_then(|path| {
            // "path-or-alias[:options]"
            let path = path.split(':').next().unwrap_or(path);
            if path.starts_with('/') {
                fdt.find_node(path)
            } else {
                fdt.aliases().and_then(|aliases| aliases.resolve_node(path))
            }
        })
        .filter(|node| is_pl011(*node))
        .and_then(first_reg_address);
    from_stdout_path.or_else(|| fdt.find_compatible(&["arm,pl011"]).and_then(first_reg_address))
}

/// `#address-cells` of `node`, read without the parser's panicking helper.
fn address_cells(node: FdtNode<'_, '_>) -> Option<usize> {
    let value = node.property("#address-cells")?.value;
    let bytes: [u8; 4] = value.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

fn find_cpus(fdt: &Fdt<'_>) -> Result<FixedList<u64, MAX_CPUS>, &'static str> {
    let cpus_node = fdt.find_node("/cpus").ok_or("no /cpus node")?;
    let cells = address_cells(cpus_node).ok_or("/cpus has no valid #address-cells")?;
    let mut cpus = FixedList::new();
    for node in cpus_node.children() {
        let is_cpu = node.name.split('@').next() == Some("cpu")
            && node.property("device_type").and_then(|p| p.as_str()) == Some("cpu");
        if !is_cpu {
            continue;
        }
        let reg = node.property("reg").ok_or("a cpu node has no reg")?.value;
        let mpidr = match cells {
            1 => reg
                .get(..4)
                .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                .map(|bytes| u64::from(u32::from_be_bytes(bytes))),
            2 => reg.get(..8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_be_bytes),
            _ => None,
        };
        cpus.push(mpidr.ok_or("a cpu node has a malformed reg")?);
    }
    if cpus.as_slice().is_empty() {
        return Err("no cpu nodes under /cpus");
    }
    Ok(cpus)
}

fn find_psci(fdt: &Fdt<'_>) -> Result<Conduit, &'static str> {
    let node = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .or_else(|| fdt.find_node("/psci"))
        .ok_or("no PSCI node in the DT")?;
    match node.property("method").and_then(|p| p.as_str()) {
        Some("hvc") => Ok(Conduit::Hvc),
        Some("smc") => Ok(Conduit::Smc),
        Some(_) => Err("PSCI method is neither \"hvc\" nor \"smc\""),
        None => Err("PSCI node has no method"),
    }
}

/// The first region of `/reserved-memory/<name>@*`.
fn reserved_region(fdt: &Fdt<'_>, name: &str) -> Option<(u64, u64)> {
    let reserved = fdt.find_node("/reserved-memory")?;
    let node = reserved.children().find(|node| node.name.split('@').next() == Some(name))?;
    let region = node.reg()?.next()?;
    let base = u64::try_from(region.starting_address as usize).ok()?;
    let size = region.size.and_then(|size| u64::try_from(size).ok())?;
    (size != 0).then_some((base, size))
}

fn find_board_carveouts(fdt: &Fdt<'_>) -> Result<BoardCarveouts, &'static str> {
    Ok(BoardCarveouts {
        modem: reserved_region(fdt, "modem").ok_or("no /reserved-memory/modem@* in the DT")?,
        dsp: reserved_region(fdt, "dsp").ok_or("no /reserved-memory/dsp@* in the DT")?,
    })
}

fn find_warden_regions(
    fdt: &Fdt<'_>,
) -> Result<FixedList<WardenRegion, MAX_WARDEN_REGIONS>, &'static str> {
    let reserved = fdt.find_node("/reserved-memory").ok_or("no /reserved-memory node")?;
    let mut regions = FixedList::new();
    for node in reserved.children().filter(|node| node.name.starts_with("warden")) {
        let no_map = node.property("no-map").is_some();
        for region in node.reg().ok_or("a warden reserved-memory node has no usable reg")? {
            let base = u64::try_from(region.starting_address as usize).unwrap_or(0);
            let size = region.size.and_then(|size| u64::try_from(size).ok()).unwrap_or(0);
            if size == 0 {
                return Err("a warden reserved-memory region has no size");
            }
            regions.push(WardenRegion { base, size, no_map });
        }
    }
    if regions.as_slice().is_empty() {
        return Err("no /reserved-memory/warden* node in the DT (not running under warden?)");
    }
    Ok(regions)
}
