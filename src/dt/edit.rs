//! Rewriting the DT warden hands to the host (needs the heap).
//!
//! Built on Google's `dtoolkit` model (see the module documentation of [`super`] for why).
//! The input is first checked by warden's own validating walker, so `dtoolkit` only ever sees
//! structurally sound blobs.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};

use super::blob::{Blob, walk};
use super::error::{DtError, name_lossy, path_lossy};
use crate::mm::MemRange;

#[derive(Clone, Debug, PartialEq, Eq)]
enum EditOp {
    ReserveNoMap { name: String, range: MemRange },
    SetBootargs(String),
    SetInitrd(MemRange),
    RemoveNode(String),
    RemoveProperty { path: String, name: String },
    SetProperty { path: String, name: String, value: Vec<u8> },
    RemoveCpu(u64),
    AddDevice { name: String, compatible: String, range: MemRange },
    AddFirmware { name: String, compatible: String },
    AddPsci { method: String },
    SetMemory(Vec<MemRange>),
}

/// A list of changes to a DT, applied in the order they were added by [`apply`].
///
/// ```
/// use warden::dt::DtEdit;
/// use warden::mm::MemRange;
/// let edit = DtEdit::new()
///     .reserve_no_map("warden", MemRange::new(0x4800_0000, 0x4820_0000))
///     .set_chosen_bootargs("console=ttyAMA0")
///     .remove_node("/smmuv3@9050000");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtEdit {
    ops: Vec<EditOp>,
}

impl DtEdit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `/reserved-memory/<name>@<start in hex> { reg = <start size>; no-map; }`, encoded
    /// with `/reserved-memory`'s cell sizes. Creates `/reserved-memory` if missing, with the
    /// root's `#address-cells`/`#size-cells` and an empty `ranges`.
    pub fn reserve_no_map(mut self, name: &str, range: MemRange) -> Self {
        self.ops.push(EditOp::ReserveNoMap { name: name.to_string(), range });
        self
    }

    /// Sets `/chosen/bootargs` (NUL-terminated); creates `/chosen` if missing.
    pub fn set_chosen_bootargs(mut self, bootargs: &str) -> Self {
        self.ops.push(EditOp::SetBootargs(bootargs.to_string()));
        self
    }

    /// Sets `/chosen/linux,initrd-start` and `linux,initrd-end` as 64-bit values; creates
    /// `/chosen` if missing.
    pub fn set_chosen_initrd(mut self, initrd: MemRange) -> Self {
        self.ops.push(EditOp::SetInitrd(initrd));
        self
    }

    /// Removes the node at `path` (exact names, e.g. `/cpus/cpu@1`) and its subtree. References
    /// to it elsewhere (a `cpu-map` entry's `cpu` phandle, an `iommu-map`) are left alone:
    /// remove or rewrite those with [`Self::remove_node`]/[`Self::remove_property`] as needed.
    pub fn remove_node(mut self, path: &str) -> Self {
        self.ops.push(EditOp::RemoveNode(path.to_string()));
        self
    }

    /// Removes property `name` of the node at `path`; an error at [`apply`] if absent.
    pub fn remove_property(mut self, path: &str, name: &str) -> Self {
        self.ops.push(EditOp::RemoveProperty { path: path.to_string(), name: name.to_string() });
        self
    }

    /// Sets (adds or replaces) property `name` of the existing node at `path` to raw `value`.
    pub fn set_property(mut self, path: &str, name: &str, value: &[u8]) -> Self {
        self.ops.push(EditOp::SetProperty {
            path: path.to_string(),
            name: name.to_string(),
            value: value.to_vec(),
        });
        self
    }

    /// Removes the `/cpus` CPU node whose `reg` is `mpidr` and every `/cpus/cpu-map` entry
    /// whose `cpu` phandle points at it, so the OS neither sees the CPU nor trips over a
    /// dangling topology reference. Found by `reg`, not by name: unit addresses are a
    /// convention DTs do not all keep (QEMU names its CPUs `cpu@<index in decimal>`, so
    /// `cpu@11` has `reg = <0xb>`).
    pub fn remove_cpu(mut self, mpidr: u64) -> Self {
        self.ops.push(EditOp::RemoveCpu(mpidr));
        self
    }

    /// Adds `/<name>@<start in hex> { compatible = "<compatible>"; reg = <start size>; }` at the
    /// root, encoded with the root's cell sizes.
    pub fn add_device(mut self, name: &str, compatible: &str, range: MemRange) -> Self {
        self.ops.push(EditOp::AddDevice {
            name: name.to_string(),
            compatible: compatible.to_string(),
            range,
        });
        self
    }

    /// Adds `/firmware/<name> { compatible = "<compatible>"; }` (a firmware interface such as
    /// Qualcomm's `qcom,scm`); creates `/firmware` if missing.
    pub fn add_firmware(mut self, name: &str, compatible: &str) -> Self {
        self.ops.push(EditOp::AddFirmware {
            name: name.to_string(),
            compatible: compatible.to_string(),
        });
        self
    }

    /// Adds `/psci { compatible = "arm,psci-1.0", "arm,psci-0.2"; method = "<method>"; }` and
    /// `enable-method = "psci"` on every CPU node: what firmware implementing PSCI adds to a DT
    /// that has none (QEMU's for `secure=on`, where the `-bios` image is the PSCI firmware).
    /// Fails if `/psci` exists.
    pub fn add_psci(mut self, method: &str) -> Self {
        self.ops.push(EditOp::AddPsci { method: method.to_string() });
        self
    }

    /// Sets the `reg` of the first top-level `device_type = "memory"` node to `banks`, in the
    /// root's cell sizes: the RAM a boot stage learnt elsewhere (SMEM) for the DT it hands on,
    /// as a boot loader fills the placeholder in. Fails if there is no such node.
    pub fn set_memory(mut self, banks: &[MemRange]) -> Self {
        self.ops.push(EditOp::SetMemory(banks.to_vec()));
        self
    }

    fn payload_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                EditOp::ReserveNoMap { name, .. } => name.len() + 64,
                EditOp::SetBootargs(s) => s.len() + 32,
                EditOp::SetInitrd(_) => 64,
                EditOp::RemoveNode(_) | EditOp::RemoveProperty { .. } => 0,
                EditOp::SetProperty { name, value, .. } => name.len() + value.len() + 16,
                EditOp::RemoveCpu(_) => 0,
                EditOp::AddDevice { name, compatible, .. } => name.len() + compatible.len() + 96,
                EditOp::AddFirmware { name, compatible } => name.len() + compatible.len() + 96,
                // The node, and `enable-method` on up to a few hundred CPUs.
                EditOp::AddPsci { method } => method.len() + 128 + 512 * 24,
                EditOp::SetMemory(banks) => banks.len() * 16 + 16,
            })
            .fold(0usize, usize::saturating_add)
    }
}

/// Applies `edit` to `blob` (whose `totalsize` must fit in it) and returns a new version-17
/// blob: `/memreserve/` entries and `boot_cpuid_phys` preserved, strings deduplicated, every
/// node and property not named by the edit unchanged and in the same order.
pub fn apply(blob: &[u8], edit: &DtEdit) -> Result<Vec<u8>, DtError> {
    let checked = Blob::new(blob)?;
    walk(&checked, |_| Ok(()))?;
    checked.for_each_memreserve(|_, _| Ok(()))?;
    let totalsize = super::blob::header_totalsize(blob)?;
    let data = blob
        .get(..totalsize)
        .ok_or(DtError::Truncated { header_says: totalsize, available: blob.len() })?;
    // dtoolkit panics if a block size exceeds u32; refuse before that can happen.
    if totalsize.saturating_add(edit.payload_bytes()) >= u32::MAX as usize / 2 {
        return Err(DtError::TooLarge);
    }
    let fdt = dtoolkit::fdt::Fdt::new(data).map_err(|_| DtError::BadStructure {
        offset: 0,
        what: "rejected by the DT writer (names outside the DT spec's character set?)",
    })?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    for op in &edit.ops {
        apply_op(&mut tree, op)?;
    }
    let mut out = tree.to_dtb();
    if let Some(field) = out.get_mut(28..32) {
        field.copy_from_slice(&checked.boot_cpuid_phys.to_be_bytes());
    }
    Ok(out)
}

fn apply_op(tree: &mut DeviceTree, op: &EditOp) -> Result<(), DtError> {
    match op {
        EditOp::ReserveNoMap { name, range } => reserve_no_map(tree, name, *range),
        EditOp::SetBootargs(bootargs) => {
            let chosen = child_or_create(&mut tree.root, "chosen")?;
            chosen.add_property(DeviceTreeProperty::new_unchecked("bootargs", bootargs.as_str()));
            Ok(())
        }
        EditOp::SetInitrd(initrd) => {
            let chosen = child_or_create(&mut tree.root, "chosen")?;
            chosen.add_property(DeviceTreeProperty::new_unchecked(
                "linux,initrd-start",
                initrd.start,
            ));
            chosen.add_property(DeviceTreeProperty::new_unchecked("linux,initrd-end", initrd.end));
            Ok(())
        }
        EditOp::RemoveNode(path) => {
            let (parent, child) = split_path(path)?;
            let parent = node_mut(tree, parent)?;
            parent
                .remove_child(child)
                .map(|_| ())
                .ok_or(DtError::NoSuchNode { path: path_lossy(path) })
        }
        EditOp::RemoveProperty { path, name } => node_mut(tree, path)?
            .remove_property(name)
            .map(|_| ())
            .ok_or(DtError::NoSuchProperty { path: path_lossy(path), property: name_lossy(name) }),
        EditOp::SetProperty { path, name, value } => {
            let property = DeviceTreeProperty::new(name.as_str(), value.as_slice())
                .map_err(|_| DtError::InvalidName { name: name_lossy(name) })?;
            node_mut(tree, path)?.add_property(property);
            Ok(())
        }
        EditOp::RemoveCpu(mpidr) => remove_cpu(tree, *mpidr),
        EditOp::AddDevice { name, compatible, range } => add_device(tree, name, compatible, *range),
        EditOp::AddFirmware { name, compatible } => add_firmware(tree, name, compatible),
        EditOp::AddPsci { method } => add_psci(tree, method),
        EditOp::SetMemory(banks) => set_memory(tree, banks),
    }
}

fn set_memory(tree: &mut DeviceTree, banks: &[MemRange]) -> Result<(), DtError> {
    let address_cells = cells(&tree.root, "#address-cells", 2);
    let size_cells = cells(&tree.root, "#size-cells", 1);
    let is_memory =
        |n: &DeviceTreeNode| n.property("device_type").is_some_and(|p| p.value() == b"memory\0");
    let node = tree.root.children_mut().find(|n| is_memory(n));
    let Some(node) = node else { return Err(DtError::NoMemory) };
    let unencodable = |what| DtError::Unencodable { path: path_lossy("/memory"), what };
    let mut reg = Vec::new();
    for bank in banks {
        reg.extend(
            encode_cells(bank.start, address_cells)
                .ok_or(unencodable("a bank's address does not fit #address-cells"))?,
        );
        reg.extend(
            encode_cells(bank.size(), size_cells)
                .ok_or(unencodable("a bank's size does not fit #size-cells"))?,
        );
    }
    node.add_property(DeviceTreeProperty::new_unchecked("reg", reg));
    Ok(())
}

fn add_psci(tree: &mut DeviceTree, method: &str) -> Result<(), DtError> {
    if tree.root.child_mut("psci").is_some() {
        return Err(DtError::NodeExists { path: path_lossy("/psci") });
    }
    let mut node = DeviceTreeNode::new_unchecked("psci");
    node.add_property(DeviceTreeProperty::new_unchecked(
        "compatible",
        b"arm,psci-1.0\0arm,psci-0.2\0".to_vec(),
    ));
    let mut method_z = method.as_bytes().to_vec();
    method_z.push(0);
    node.add_property(DeviceTreeProperty::new_unchecked("method", method_z));
    tree.root.add_child(node);
    if let Some(cpus) = tree.find_node_mut("/cpus") {
        for cpu in cpus.children_mut() {
            let is_cpu = match cpu.property("device_type") {
                Some(p) => p.value() == b"cpu\0",
                None => cpu.name().split('@').next() == Some("cpu"),
            };
            if is_cpu {
                cpu.add_property(DeviceTreeProperty::new_unchecked(
                    "enable-method",
                    b"psci\0".to_vec(),
                ));
            }
        }
    }
    Ok(())
}

fn add_firmware(tree: &mut DeviceTree, name: &str, compatible: &str) -> Result<(), DtError> {
    let parent = match tree.root.child_mut("firmware") {
        Some(node) => node,
        None => tree.root.add_child_mut(DeviceTreeNode::new_unchecked("firmware")),
    };
    if parent.child_mut(name).is_some() {
        return Err(DtError::NodeExists { path: path_lossy(&alloc::format!("/firmware/{name}")) });
    }
    let mut node =
        DeviceTreeNode::new(name).map_err(|_| DtError::InvalidName { name: name_lossy(name) })?;
    let mut compatible_z = compatible.as_bytes().to_vec();
    compatible_z.push(0);
    node.add_property(DeviceTreeProperty::new_unchecked("compatible", compatible_z));
    parent.add_child(node);
    Ok(())
}

fn remove_cpu(tree: &mut DeviceTree, mpidr: u64) -> Result<(), DtError> {
    let missing =
        || DtError::NoSuchNode { path: path_lossy(&alloc::format!("/cpus/<reg {mpidr:#x}>")) };
    let cpus = tree.find_node_mut("/cpus").ok_or_else(missing)?;
    let cells = cpus
        .property("#address-cells")
        .and_then(|p| <[u8; 4]>::try_from(p.value()).ok())
        .map_or(2, u32::from_be_bytes);
    let reg: Vec<u8> = match cells {
        1 => u32::try_from(mpidr).map_err(|_| missing())?.to_be_bytes().to_vec(),
        2 => mpidr.to_be_bytes().to_vec(),
        _ => return Err(missing()),
    };
    // A CPU node as the parser counts one (`parse::is_cpu`): `device_type = "cpu"`, or no
    // `device_type` and the name `cpu[@...]`.
    let is_cpu = |c: &DeviceTreeNode| {
        let kind_ok = match c.property("device_type") {
            Some(p) => p.value() == b"cpu\0",
            None => c.name().split('@').next() == Some("cpu"),
        };
        kind_ok && c.property("reg").is_some_and(|p| p.value() == reg.as_slice())
    };
    let name =
        cpus.children().find(|c| is_cpu(c)).map(|c| c.name().to_string()).ok_or_else(missing)?;
    let removed = cpus.remove_child(&name).ok_or_else(missing)?;
    let phandle = removed.property("phandle").map(|p| p.value().to_vec());
    if let (Some(phandle), Some(map)) = (phandle, tree.find_node_mut("/cpus/cpu-map")) {
        remove_cpu_map_entries(map, &phandle);
    }
    Ok(())
}

/// Removes, below `node`, every node whose `cpu` property equals `phandle`.
fn remove_cpu_map_entries(node: &mut DeviceTreeNode, phandle: &[u8]) {
    let doomed: Vec<String> = node
        .children()
        .filter(|c| c.property("cpu").is_some_and(|p| p.value() == phandle))
        .map(|c| c.name().to_string())
        .collect();
    for name in doomed {
        node.remove_child(&name);
    }
    for child in node.children_mut() {
        remove_cpu_map_entries(child, phandle);
    }
}

fn add_device(
    tree: &mut DeviceTree,
    name: &str,
    compatible: &str,
    range: MemRange,
) -> Result<(), DtError> {
    let address_cells = cells(&tree.root, "#address-cells", 2);
    let size_cells = cells(&tree.root, "#size-cells", 1);
    let node_name = alloc::format!("{name}@{:x}", range.start);
    let path = || path_lossy(&alloc::format!("/{node_name}"));
    let unencodable = |what| DtError::Unencodable { path: path(), what };
    if range.is_empty() {
        return Err(unencodable("empty range"));
    }
    let mut reg = encode_cells(range.start, address_cells)
        .ok_or(unencodable("address does not fit the root's #address-cells"))?;
    reg.extend(
        encode_cells(range.size(), size_cells)
            .ok_or(unencodable("size does not fit the root's #size-cells"))?,
    );
    if tree.root.child_mut(&node_name).is_some() {
        return Err(DtError::NodeExists { path: path() });
    }
    let mut node = DeviceTreeNode::new(node_name.as_str())
        .map_err(|_| DtError::InvalidName { name: name_lossy(name) })?;
    let mut compatible_z = compatible.as_bytes().to_vec();
    compatible_z.push(0);
    node.add_property(DeviceTreeProperty::new_unchecked("compatible", compatible_z));
    node.add_property(DeviceTreeProperty::new_unchecked("reg", reg));
    tree.root.add_child(node);
    Ok(())
}

fn reserve_no_map(tree: &mut DeviceTree, name: &str, range: MemRange) -> Result<(), DtError> {
    let root_address_cells = cells(&tree.root, "#address-cells", 2);
    let root_size_cells = cells(&tree.root, "#size-cells", 1);
    let parent = match tree.root.child_mut("reserved-memory") {
        Some(node) => node,
        None => {
            let mut node = DeviceTreeNode::new_unchecked("reserved-memory");
            node.add_property(DeviceTreeProperty::new_unchecked(
                "#address-cells",
                root_address_cells,
            ));
            node.add_property(DeviceTreeProperty::new_unchecked("#size-cells", root_size_cells));
            node.add_property(DeviceTreeProperty::new_unchecked("ranges", &[] as &[u8]));
            tree.root.add_child_mut(node)
        }
    };
    let address_cells = cells(parent, "#address-cells", 2);
    let size_cells = cells(parent, "#size-cells", 1);
    let node_name = alloc::format!("{name}@{:x}", range.start);
    let path = || path_lossy(&alloc::format!("/reserved-memory/{node_name}"));
    let unencodable = |what| DtError::Unencodable { path: path(), what };
    if range.is_empty() {
        return Err(unencodable("empty range"));
    }
    let mut reg = encode_cells(range.start, address_cells)
        .ok_or(unencodable("address does not fit /reserved-memory #address-cells"))?;
    reg.extend(
        encode_cells(range.size(), size_cells)
            .ok_or(unencodable("size does not fit /reserved-memory #size-cells"))?,
    );
    if parent.child_mut(&node_name).is_some() {
        return Err(DtError::NodeExists { path: path() });
    }
    let mut node = DeviceTreeNode::new(node_name.as_str())
        .map_err(|_| DtError::InvalidName { name: name_lossy(name) })?;
    node.add_property(DeviceTreeProperty::new_unchecked("reg", reg));
    node.add_property(DeviceTreeProperty::new_unchecked("no-map", &[] as &[u8]));
    parent.add_child(node);
    Ok(())
}

/// A `#address-cells`-style property of `node`, or `default` if absent or malformed.
fn cells(node: &DeviceTreeNode, name: &str, default: u32) -> u32 {
    node.property(name)
        .and_then(|p| <[u8; 4]>::try_from(p.value()).ok())
        .map_or(default, u32::from_be_bytes)
}

/// `value` as `cells` big-endian cells, if it fits.
fn encode_cells(value: u64, cells: u32) -> Option<Vec<u8>> {
    match cells {
        1 => u32::try_from(value).ok().map(|v| v.to_be_bytes().to_vec()),
        2 => Some(value.to_be_bytes().to_vec()),
        3 => {
            let mut out = alloc::vec![0u8; 4];
            out.extend_from_slice(&value.to_be_bytes());
            Some(out)
        }
        _ => None,
    }
}

fn child_or_create<'t>(
    parent: &'t mut DeviceTreeNode,
    name: &str,
) -> Result<&'t mut DeviceTreeNode, DtError> {
    let node =
        DeviceTreeNode::new(name).map_err(|_| DtError::InvalidName { name: name_lossy(name) })?;
    Ok(parent.add_child_mut(node))
}

fn node_mut<'t>(tree: &'t mut DeviceTree, path: &str) -> Result<&'t mut DeviceTreeNode, DtError> {
    tree.find_node_mut(path).ok_or(DtError::NoSuchNode { path: path_lossy(path) })
}

/// `/a/b/c` into (`/a/b`, `c`); the root cannot be removed.
fn split_path(path: &str) -> Result<(&str, &str), DtError> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, child)) if path.starts_with('/') && !child.is_empty() => {
            Ok((if parent.is_empty() { "/" } else { parent }, child))
        }
        _ => Err(DtError::NoSuchNode { path: path_lossy(path) }),
    }
}
