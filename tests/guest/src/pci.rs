//! Just enough PCI for the guest to drive one endpoint: the host bridge's ECAM and 32-bit
//! memory window from the DT (`pci-host-ecam-generic`), a scan of the root bus, and BAR0
//! placement. No firmware configured PCI: the guest is the OS here.
//!
//! Config space is reached through ECAM at `base + (bus - first_bus) << 20 | dev << 15 |
//! fn << 12`. With the MMU off every access is Device-nGnRnE, as config space needs.

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::exceptions;

/// `ranges` space code (phys.hi bits 25:24) of 32-bit memory space.
const SPACE_MEMORY_32: u32 = 0b10;
const RANGES_PREFETCHABLE: u32 = 1 << 30;
/// Config space of one bus under ECAM.
const ECAM_BUS_SIZE: u64 = 1 << 20;
const DEVICES_PER_BUS: u8 = 32;
const FUNCTIONS_PER_DEVICE: u8 = 8;

/// Type 0 config header offsets.
const CFG_VENDOR_DEVICE: u64 = 0x00;
const CFG_COMMAND: u64 = 0x04;
const CFG_HEADER_TYPE_WORD: u64 = 0x0c;
const CFG_BAR0: u64 = 0x10;
const CFG_BAR1: u64 = 0x14;

const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
const COMMAND_INTX_DISABLE: u16 = 1 << 10;

const HEADER_TYPE_MASK: u32 = 0x7f;
const HEADER_MULTI_FUNCTION: u32 = 0x80;

const BAR_IO_SPACE: u32 = 1 << 0;
const BAR_TYPE_MASK: u32 = 0b11 << 1;
const BAR_TYPE_64: u32 = 0b10 << 1;
const BAR_ADDRESS_MASK: u32 = !0xf;

/// The ECAM region of a host bridge.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    /// CPU address of the config space of `first_bus`.
    pub base: u64,
    pub size: u64,
    pub first_bus: u8,
}

/// A memory window: CPU addresses `cpu..cpu + size` reach PCI bus addresses `pci..pci + size`.
#[derive(Clone, Copy, Debug)]
pub struct MemoryWindow {
    pub cpu: u64,
    pub pci: u64,
    pub size: u64,
}

/// A `pci-host-ecam-generic` host bridge, as the DT describes it.
#[derive(Clone, Copy, Debug)]
pub struct PcieHost {
    pub ecam: Ecam,
    /// Where BARs below 4 GiB can go.
    pub window32: MemoryWindow,
}

/// One big-endian 32-bit cell of a property, or `None` if the property is missing or short.
fn u32_property(node: FdtNode<'_, '_>, name: &str) -> Option<u32> {
    let bytes = node.property(name)?.value.get(..4)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// `cells` big-endian cells (1 or 2) from the front of `bytes`; advances `bytes`.
fn take_cells(bytes: &mut &[u8], cells: usize) -> Option<u64> {
    let len = cells.checked_mul(4)?;
    let (head, tail) = (bytes.get(..len)?, bytes.get(len..)?);
    *bytes = tail;
    match cells {
        1 => Some(u64::from(u32::from_be_bytes(head.try_into().ok()?))),
        2 => Some(u64::from_be_bytes(head.try_into().ok()?)),
        _ => None,
    }
}

/// Finds the first `pci-host-ecam-generic` node and reads its ECAM (`reg`), first bus
/// (`bus-range`) and 32-bit memory window (`ranges`; a non-prefetchable one if there is one).
pub fn find_host(fdt: &Fdt<'_>) -> Result<PcieHost, &'static str> {
    let node = fdt
        .find_compatible(&["pci-host-ecam-generic"])
        .ok_or("no pci-host-ecam-generic node in the DT")?;
    // The parser knows the parent's cell counts: the raw `reg` entry's address length says how
    // many cells a CPU address has in `ranges` as well.
    let parent_address_cells = node
        .raw_reg()
        .and_then(|mut reg| reg.next())
        .map(|reg| reg.address.len() / 4)
        .ok_or("the PCIe host node has no reg")?;
    let region =
        node.reg().and_then(|mut reg| reg.next()).ok_or("the PCIe host has no usable reg")?;
    let ecam_base = region.starting_address as usize as u64;
    let ecam_size = region.size.map_or(0, |size| size as u64);
    if ecam_size < ECAM_BUS_SIZE || ecam_base.checked_add(ecam_size).is_none() {
        return Err("the PCIe host's ECAM reg is smaller than one bus or wraps");
    }
    let first_bus = match node.property("bus-range") {
        Some(_) => u32_property(node, "bus-range")
            .and_then(|bus| u8::try_from(bus).ok())
            .ok_or("the PCIe host's bus-range is malformed")?,
        None => 0,
    };
    if u32_property(node, "#address-cells") != Some(3) {
        return Err("the PCIe host's #address-cells is not 3");
    }
    let size_cells = u32_property(node, "#size-cells")
        .and_then(|cells| usize::try_from(cells).ok())
        .filter(|cells| matches!(cells, 1 | 2))
        .ok_or("the PCIe host's #size-cells is not 1 or 2")?;
    let window32 = find_window32(
        node.property("ranges").ok_or("the PCIe host has no ranges")?.value,
        parent_address_cells,
        size_cells,
    )?;
    Ok(PcieHost { ecam: Ecam { base: ecam_base, size: ecam_size, first_bus }, window32 })
}

/// The 32-bit memory window in a PCI `ranges` value (3 child address cells).
fn find_window32(
    mut ranges: &[u8],
    parent_address_cells: usize,
    size_cells: usize,
) -> Result<MemoryWindow, &'static str> {
    const MALFORMED: &str = "the PCIe host's ranges is malformed";
    let mut best: Option<(bool, MemoryWindow)> = None;
    while !ranges.is_empty() {
        let phys_hi = take_cells(&mut ranges, 1).ok_or(MALFORMED)?;
        let pci = take_cells(&mut ranges, 2).ok_or(MALFORMED)?;
        let cpu = take_cells(&mut ranges, parent_address_cells).ok_or(MALFORMED)?;
        let size = take_cells(&mut ranges, size_cells).ok_or(MALFORMED)?;
        let phys_hi = u32::try_from(phys_hi).map_err(|_| MALFORMED)?;
        if (phys_hi >> 24) & 0b11 != SPACE_MEMORY_32 || size == 0 {
            continue;
        }
        let fits = pci.checked_add(size).is_some_and(|end| end <= 1 << 32)
            && cpu.checked_add(size).is_some();
        if !fits {
            return Err("the PCIe host's 32-bit memory window wraps or exceeds 4 GiB");
        }
        let prefetchable = phys_hi & RANGES_PREFETCHABLE != 0;
        let window = MemoryWindow { cpu, pci, size };
        // A non-prefetchable window suits any BAR; keep the first one, else the first at all.
        match best {
            Some((false, _)) => {}
            Some((true, _)) if prefetchable => {}
            _ => best = Some((prefetchable, window)),
        }
    }
    best.map(|(_, window)| window).ok_or("the PCIe host's ranges has no 32-bit memory window")
}

/// A PCI function found on the root bus.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    /// CPU address of its 4 KiB config space.
    config: u64,
}

impl Function {
    /// Requester ID: what the SMMU sees as the stream ID under an identity `iommu-map`.
    pub fn requester_id(&self) -> u16 {
        u16::from(self.bus) << 8 | u16::from(self.device) << 3 | u16::from(self.function)
    }

    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `config` is this function's config space inside the DT's ECAM region (checked
        // in `find_nth_function`), `offset` is a register of the type 0 header, 4-byte aligned.
        unsafe { ((self.config + offset) as *const u32).read_volatile() }
    }

    fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as for `read32`; the registers written (BARs) only change where the function
        // decodes, and decoding is off while they change.
        unsafe { ((self.config + offset) as *mut u32).write_volatile(value) }
    }

    fn write_command(&self, value: u16) {
        // SAFETY: as for `read32`; a 16-bit write leaves the status register (upper half,
        // write-one-to-clear) alone.
        unsafe { ((self.config + CFG_COMMAND) as *mut u16).write_volatile(value) }
    }

    fn command(&self) -> u16 {
        // SAFETY: as for `read32`, 2-byte aligned.
        unsafe { ((self.config + CFG_COMMAND) as *const u16).read_volatile() }
    }
}

impl core::fmt::Display for Function {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

fn config_address(ecam: &Ecam, device: u8, function: u8) -> Option<u64> {
    let offset = u64::from(device) << 15 | u64::from(function) << 12;
    (offset + 0x1000 <= ecam.size).then(|| ecam.base + offset)
}

/// Scans the ECAM's first bus for the `nth` (from 0, in bus order) `vendor:device`.
/// `Ok(None)`: not there. An abort on the very first config read (ECAM not mapped for the
/// guest) becomes an error, not a fatal exception.
pub fn find_nth_function(
    ecam: &Ecam,
    vendor: u16,
    device_id: u16,
    nth: usize,
) -> Result<Option<Function>, &'static str> {
    let mut skip = nth;
    let wanted = u32::from(device_id) << 16 | u32::from(vendor);
    let first = Function { bus: ecam.first_bus, device: 0, function: 0, config: ecam.base };
    let (_, caught) = exceptions::catch(|| first.read32(CFG_VENDOR_DEVICE));
    if caught.is_some() {
        return Err("reading the PCIe host's ECAM aborted (not mapped for the guest?)");
    }
    for device in 0..DEVICES_PER_BUS {
        for function in 0..FUNCTIONS_PER_DEVICE {
            let Some(config) = config_address(ecam, device, function) else {
                return Ok(None);
            };
            let candidate = Function { bus: ecam.first_bus, device, function, config };
            let ids = candidate.read32(CFG_VENDOR_DEVICE);
            if ids & 0xffff == 0xffff {
                // No function 0 means no device; no other function is looked at.
                if function == 0 {
                    break;
                }
                continue;
            }
            if ids == wanted {
                if skip == 0 {
                    return Ok(Some(candidate));
                }
                skip -= 1;
            }
            let header_type = candidate.read32(CFG_HEADER_TYPE_WORD) >> 16;
            if function == 0 && header_type & HEADER_MULTI_FUNCTION == 0 {
                break;
            }
        }
    }
    Ok(None)
}

/// Sizes `function`'s BAR0 (a memory BAR), places it at the lowest suitably aligned address at
/// least `offset` bytes into `window` (so a second device's BAR stays clear of the first's),
/// and enables memory decoding and bus mastering. Returns BAR0's CPU address and size.
pub fn enable_bar0_above(
    function: &Function,
    window: &MemoryWindow,
    offset: u64,
) -> Result<(u64, u64), &'static str> {
    let Some(window) = window.size.checked_sub(offset).map(|size| MemoryWindow {
        cpu: window.cpu + offset,
        pci: window.pci + offset,
        size,
    }) else {
        return Err("the offset is beyond the 32-bit memory window");
    };
    let window = &window;
    if function.read32(CFG_HEADER_TYPE_WORD) >> 16 & HEADER_TYPE_MASK != 0 {
        return Err("the function's header is not type 0 (an endpoint)");
    }
    let command = function.command() & !(COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER);
    function.write_command(command);
    let original = function.read32(CFG_BAR0);
    if original & BAR_IO_SPACE != 0 {
        return Err("BAR0 is an I/O BAR");
    }
    let is_64 = original & BAR_TYPE_MASK == BAR_TYPE_64;
    function.write32(CFG_BAR0, u32::MAX);
    let low = function.read32(CFG_BAR0) & BAR_ADDRESS_MASK;
    let high = if is_64 {
        function.write32(CFG_BAR1, u32::MAX);
        function.read32(CFG_BAR1)
    } else {
        u32::MAX
    };
    let mask = u64::from(high) << 32 | u64::from(low);
    if low == 0 {
        return Err("BAR0 reads back 0 after writing all-ones: not implemented");
    }
    let size = (!mask).wrapping_add(1);
    if !size.is_power_of_two() {
        return Err("BAR0's size mask is not contiguous");
    }
    // Natural alignment: the BAR's size is its alignment.
    let pci = window.pci.checked_add(size - 1).map(|end| end & !(size - 1));
    let fits =
        |pci: &u64| (pci - window.pci).checked_add(size).is_some_and(|used| used <= window.size);
    let Some(pci) = pci.filter(fits) else {
        return Err("BAR0 does not fit in the 32-bit memory window");
    };
    // `pci` is below 4 GiB (the window is), so the high half is 0.
    function.write32(CFG_BAR0, pci as u32);
    if is_64 {
        function.write32(CFG_BAR1, 0);
    }
    if u64::from(function.read32(CFG_BAR0) & BAR_ADDRESS_MASK) != pci {
        return Err("BAR0 did not keep the address written to it");
    }
    function
        .write_command(command | COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE);
    Ok((window.cpu + (pci - window.pci), size))
}
