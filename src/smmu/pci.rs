//! Which PCI functions exist at boot, and their stream IDs.
//!
//! QEMU virt's `iommu-map = <0 &smmu 0 0x10000>` maps every requester ID to the same stream ID.
//! Installing 64Ki STEs would cost 4 MiB, so warden scans the ECAM at boot and installs STEs for
//! the functions present then. Functions that appear later (hot-plug, or behind bridges that
//! firmware left unconfigured and the host numbers later) have no STE: their DMA aborts with a
//! C_BAD_STE / C_BAD_STREAMID event until a later issue handles them.

use alloc::vec::Vec;
use arrayvec::ArrayVec;

use crate::dt::{IommuMapEntry, MAX_PCIE, PcieHost};
use crate::mm::MemRange;

/// ECAM: 4 KiB of configuration space per function, 1 MiB per bus.
const FUNCTION_SHIFT: u32 = 12;
const BUS_SHIFT: u32 = 20;
const VENDOR_NONE: u16 = 0xffff;
const HEADER_TYPE_OFFSET: u64 = 0x0c; // dword holding header type in bits [23:16]
const HEADER_MULTI_FUNCTION: u32 = 0x80;
const HEADER_TYPE_BRIDGE: u32 = 0x01;
const BRIDGE_BUS_NUMBERS: u64 = 0x18; // primary [7:0], secondary [15:8], subordinate [23:16]

/// 32-bit reads of configuration space at a physical address inside the ECAM window.
pub trait ConfigRead {
    fn read_config32(&self, pa: u64) -> u32;
}

/// The real ECAM windows: volatile reads, which must be mapped as device memory at EL2.
#[derive(Debug)]
pub struct MmioEcam {
    windows: ArrayVec<MemRange, MAX_PCIE>,
}

impl MmioEcam {
    /// Reads inside any of `windows` (at most [`MAX_PCIE`]; extra ones are ignored); reads
    /// elsewhere return all-ones, like an absent function.
    ///
    /// # Safety
    /// Every window is a PCIe ECAM region identity-mapped as device memory at EL2 while this
    /// value lives.
    pub unsafe fn new(windows: &[MemRange]) -> Self {
        Self { windows: windows.iter().copied().take(MAX_PCIE).collect() }
    }
}

impl ConfigRead for MmioEcam {
    fn read_config32(&self, pa: u64) -> u32 {
        let inside = self.windows.iter().any(|w| w.contains(pa) && w.contains(pa + 3));
        if !inside || !pa.is_multiple_of(4) {
            return u32::MAX;
        }
        // SAFETY: inside a mapped ECAM window (checked above), 4-byte aligned.
        unsafe { core::ptr::read_volatile(pa as *const u32) }
    }
}

/// Stream IDs on SMMU `smmu_phandle` of every PCI function present now under `hosts` (each
/// host's whole ECAM window scanned from bus 0, see [`scan_functions`]), through each host's
/// `iommu-map`; sorted, deduplicated. Hosts without an `iommu-map` are not behind an SMMU.
pub fn host_stream_ids<C: ConfigRead + ?Sized>(
    hosts: &[PcieHost],
    smmu_phandle: Option<u32>,
    cfg: &C,
) -> Vec<u32> {
    let mut sids = Vec::new();
    for host in hosts {
        if host.iommu_map.is_empty() {
            continue;
        }
        let Some(buses) = BusRange::from_ecam(host.ecam) else { continue };
        let rids = scan_functions(host.ecam, buses, cfg);
        sids.extend(stream_ids(&rids, &host.iommu_map, smmu_phandle));
    }
    sids.sort_unstable();
    sids.dedup();
    sids
}

/// Bus numbers `[start, end]` of a host bridge; the ECAM window starts at bus `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange {
    pub start: u8,
    pub end: u8,
}

impl BusRange {
    /// Every bus the window covers, from bus 0 (for DTs without `bus-range`).
    pub fn from_ecam(ecam: MemRange) -> Option<Self> {
        let buses = ecam.size() >> BUS_SHIFT;
        (buses > 0).then(|| BusRange { start: 0, end: (buses - 1).min(255) as u8 })
    }
}

/// Requester IDs (bus << 8 | device << 3 | function) of every function present, sorted.
/// Starts at `buses.start` and follows bridges whose secondary bus is already set (above their
/// own bus and inside `buses`); each bus is scanned at most once, so the scan is bounded by
/// 256 x 32 x 8 reads of vendor IDs. Buses beyond the window are not read.
pub fn scan_functions<C: ConfigRead + ?Sized>(
    ecam: MemRange,
    buses: BusRange,
    cfg: &C,
) -> Vec<u16> {
    let window_buses = ecam.size() >> BUS_SHIFT;
    let mut visited = [false; 256];
    let mut todo: Vec<u8> = alloc::vec![buses.start];
    let mut rids = Vec::new();
    while let Some(bus) = todo.pop() {
        let rel = u64::from(bus.wrapping_sub(buses.start));
        if bus < buses.start || bus > buses.end || rel >= window_buses || visited[bus as usize] {
            continue;
        }
        visited[bus as usize] = true;
        for device in 0..32u64 {
            let functions = match read_function(ecam, rel, device, 0, cfg) {
                Some(header) if header & HEADER_MULTI_FUNCTION != 0 => 8,
                Some(_) => 1,
                None => continue,
            };
            for function in 0..functions {
                let Some(header) = read_function(ecam, rel, device, function, cfg) else {
                    continue;
                };
                rids.push((u16::from(bus) << 8) | ((device as u16) << 3) | function as u16);
                if header & 0x7f == HEADER_TYPE_BRIDGE {
                    let base = function_base(ecam, rel, device, function);
                    let numbers = cfg.read_config32(base + BRIDGE_BUS_NUMBERS);
                    let secondary = ((numbers >> 8) & 0xff) as u8;
                    if secondary > bus {
                        todo.push(secondary);
                    }
                }
            }
        }
    }
    rids.sort_unstable();
    rids.dedup();
    rids
}

fn function_base(ecam: MemRange, rel_bus: u64, device: u64, function: u64) -> u64 {
    ecam.start + (rel_bus << BUS_SHIFT) + (((device << 3) | function) << FUNCTION_SHIFT)
}

/// The header type byte of a present function, `None` when its vendor ID says absent.
fn read_function<C: ConfigRead + ?Sized>(
    ecam: MemRange,
    rel_bus: u64,
    device: u64,
    function: u64,
    cfg: &C,
) -> Option<u32> {
    let base = function_base(ecam, rel_bus, device, function);
    let vendor = (cfg.read_config32(base) & 0xffff) as u16;
    if vendor == VENDOR_NONE || vendor == 0 {
        return None;
    }
    Some((cfg.read_config32(base + HEADER_TYPE_OFFSET) >> 16) & 0xff)
}

/// The stream ID of requester `rid` on the SMMU with phandle `smmu`, through `iommu-map`
/// (`None`: not translated by that SMMU). Entries referring to other IOMMUs are skipped;
/// `smmu = None` accepts any (a DT whose SMMU has no phandle cannot be referenced anyway).
pub fn rid_to_sid(map: &[IommuMapEntry], smmu: Option<u32>, rid: u16) -> Option<u32> {
    let rid = u32::from(rid);
    map.iter().find_map(|e| {
        if smmu.is_some_and(|p| p != e.iommu_phandle) {
            return None;
        }
        let offset = rid.checked_sub(e.rid_base)?;
        (offset < e.length).then(|| e.sid_base.checked_add(offset)).flatten()
    })
}

/// Stream IDs, sorted and deduplicated, of the `rids` that `map` sends to SMMU `smmu`.
pub fn stream_ids(rids: &[u16], map: &[IommuMapEntry], smmu: Option<u32>) -> Vec<u32> {
    let mut sids: Vec<u32> = rids.iter().filter_map(|&r| rid_to_sid(map, smmu, r)).collect();
    sids.sort_unstable();
    sids.dedup();
    sids
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// Configuration space as a map of dwords; anything absent reads as all-ones.
    struct FakeConfig {
        dwords: BTreeMap<u64, u32>,
        reads: core::cell::Cell<usize>,
    }

    const ECAM: MemRange = MemRange::new(0x40_1000_0000, 0x40_2000_0000); // 256 buses

    impl FakeConfig {
        fn new() -> Self {
            Self { dwords: BTreeMap::new(), reads: core::cell::Cell::new(0) }
        }
        fn function(&mut self, bus: u64, dev: u64, func: u64, header: u32) {
            let base = ECAM.start + (bus << 20) + (((dev << 3) | func) << 12);
            self.dwords.insert(base, 0x1234_1af4);
            self.dwords.insert(base + 0x0c, header << 16);
        }
        fn bridge(&mut self, bus: u64, dev: u64, secondary: u32) {
            self.function(bus, dev, 0, 1);
            let base = ECAM.start + (bus << 20) + ((dev << 3) << 12);
            self.dwords.insert(base + 0x18, (secondary << 8) | bus as u32 | (0xff << 16));
        }
    }

    impl ConfigRead for FakeConfig {
        fn read_config32(&self, pa: u64) -> u32 {
            self.reads.set(self.reads.get() + 1);
            assert!(ECAM.contains(pa), "read outside the window: {pa:#x}");
            *self.dwords.get(&pa).unwrap_or(&u32::MAX)
        }
    }

    #[test]
    fn qemu_like_bus_zero() {
        let mut cfg = FakeConfig::new();
        cfg.function(0, 0, 0, 0); // host bridge
        cfg.function(0, 2, 0, 0); // virtio-blk
        cfg.function(0, 3, 0, 0); // virtio-net
        cfg.function(0, 4, 0, 0x80); // multi-function: functions 0 and 2
        cfg.function(0, 4, 2, 0);
        cfg.function(0, 5, 1, 0); // function 1 without function 0: not scanned
        let rids = scan_functions(ECAM, BusRange::from_ecam(ECAM).unwrap(), &cfg);
        assert_eq!(rids, vec![0x00, 0x10, 0x18, 0x20, 0x22]);
        assert!(cfg.reads.get() < 32 * 2 + 8 * 2, "only bus 0 is read: {}", cfg.reads.get());
    }

    #[test]
    fn follows_configured_bridges_once() {
        let mut cfg = FakeConfig::new();
        cfg.bridge(0, 1, 1);
        cfg.function(1, 0, 0, 0);
        cfg.bridge(1, 1, 1); // points back at its own bus: ignored
        cfg.bridge(1, 2, 0); // unconfigured (secondary 0): not followed
        cfg.bridge(0, 2, 1); // second bridge to bus 1: scanned once
        let rids = scan_functions(ECAM, BusRange { start: 0, end: 255 }, &cfg);
        assert_eq!(rids, vec![0x08, 0x10, 0x100, 0x108, 0x110]);
    }

    #[test]
    fn stays_inside_window_and_bus_range() {
        let small = MemRange::new(ECAM.start, ECAM.start + (2 << 20)); // 2 buses
        let mut cfg = FakeConfig::new();
        cfg.bridge(0, 0, 5); // beyond the window
        cfg.bridge(0, 1, 1);
        cfg.function(1, 3, 0, 0);
        assert_eq!(scan_functions(small, BusRange { start: 0, end: 255 }, &cfg), vec![0, 8, 0x118]);
        assert_eq!(scan_functions(small, BusRange { start: 0, end: 0 }, &cfg), vec![0, 8]);
        assert_eq!(BusRange::from_ecam(MemRange::new(0, 0x1000)), None);
        assert_eq!(BusRange::from_ecam(small), Some(BusRange { start: 0, end: 1 }));
        let empty = FakeConfig::new();
        assert!(scan_functions(ECAM, BusRange { start: 0, end: 255 }, &empty).is_empty());
    }

    #[test]
    fn window_with_nonzero_first_bus() {
        // bus-range <0x10 0x11>: the window's first MiB is bus 0x10.
        let mut cfg = FakeConfig::new();
        cfg.function(0, 1, 0, 0); // at relative bus 0 = bus 0x10
        let rids = scan_functions(ECAM, BusRange { start: 0x10, end: 0x11 }, &cfg);
        assert_eq!(rids, vec![0x1008]);
    }

    #[test]
    fn host_stream_ids_from_platform() {
        let mut cfg = FakeConfig::new();
        cfg.function(0, 2, 0, 0);
        cfg.function(0, 3, 0, 0);
        let mut host = PcieHost {
            path: Default::default(),
            ecam: ECAM,
            windows: ArrayVec::new(),
            iommu_map: ArrayVec::new(),
        };
        assert!(host_stream_ids(core::slice::from_ref(&host), Some(7), &cfg).is_empty());
        host.iommu_map.push(IommuMapEntry {
            rid_base: 0,
            iommu_phandle: 7,
            sid_base: 0,
            length: 0x10000,
        });
        assert_eq!(host_stream_ids(&[host.clone()], Some(7), &cfg), vec![0x10, 0x18]);
        assert!(host_stream_ids(&[host], Some(8), &cfg).is_empty());
    }

    #[test]
    fn iommu_map_translation() {
        let map = [
            IommuMapEntry { rid_base: 0, iommu_phandle: 7, sid_base: 0, length: 0x100 },
            IommuMapEntry { rid_base: 0x100, iommu_phandle: 9, sid_base: 0x4000, length: 0x100 },
            IommuMapEntry { rid_base: 0x200, iommu_phandle: 7, sid_base: 0x8000, length: 0x10 },
            IommuMapEntry { rid_base: 0x300, iommu_phandle: 7, sid_base: u32::MAX, length: 8 },
        ];
        assert_eq!(rid_to_sid(&map, Some(7), 0x18), Some(0x18));
        assert_eq!(rid_to_sid(&map, Some(7), 0x118), None, "other IOMMU");
        assert_eq!(rid_to_sid(&map, None, 0x118), Some(0x4018));
        assert_eq!(rid_to_sid(&map, Some(7), 0x20f), Some(0x800f));
        assert_eq!(rid_to_sid(&map, Some(7), 0x210), None, "past the entry's length");
        assert_eq!(rid_to_sid(&map, Some(7), 0x300), Some(u32::MAX));
        assert_eq!(rid_to_sid(&map, Some(7), 0x301), None, "SID overflow");
        assert_eq!(rid_to_sid(&[], Some(7), 0), None);
        assert_eq!(stream_ids(&[0x18, 0x10, 0x18, 0x118], &map, Some(7)), vec![0x10, 0x18]);
    }
}
