//! Device-tree errors, worded for whoever brings up a board.

use core::fmt;

use arrayvec::ArrayString;

use super::{MAX_NAME_LEN, MAX_PATH_LEN};
use crate::mm::MemRange;

/// A node path such as `/reserved-memory/warden@48000000`.
pub type NodePath = ArrayString<MAX_PATH_LEN>;
/// A node name such as `warden@48000000`.
pub type NodeName = ArrayString<MAX_NAME_LEN>;

/// Why a device tree was rejected or could not be rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Fewer bytes than a header.
    HeaderTruncated {
        available: usize,
    },
    BadMagic {
        found: u32,
    },
    UnsupportedVersion {
        version: u32,
        last_comp_version: u32,
    },
    /// The header's `totalsize` does not fit in the bytes the caller has.
    Truncated {
        header_says: usize,
        available: usize,
    },
    BadHeader {
        what: &'static str,
    },
    /// Malformed structure block; `offset` is relative to the structure block.
    BadStructure {
        offset: usize,
        what: &'static str,
    },
    /// Nesting deeper than [`super::MAX_DEPTH`].
    TooDeep {
        path: NodePath,
    },
    /// A node path longer than [`super::MAX_PATH_LEN`]; `prefix` is the part that fit.
    PathTooLong {
        prefix: NodePath,
    },
    /// A node name longer than [`super::MAX_NAME_LEN`] where warden must keep it.
    NameTooLong {
        path: NodePath,
    },
    /// `#address-cells`/`#size-cells` not a single cell of at most 3.
    BadCells {
        path: NodePath,
        property: &'static str,
        value: Option<u32>,
    },
    /// A property with the wrong length or an unusable value.
    BadProperty {
        path: NodePath,
        property: &'static str,
        what: &'static str,
    },
    /// An address or size that does not fit in 64 bits or wraps the address space.
    AddressOverflow {
        path: NodePath,
    },
    /// A `reg` or `/memreserve/` entry of size zero.
    ZeroSize {
        path: NodePath,
    },
    NoMemory,
    MemoryOverlap {
        first: MemRange,
        second: MemRange,
    },
    ReservedOverlap {
        first: NodeName,
        first_range: MemRange,
        second: NodeName,
        second_range: MemRange,
    },
    NoCpus,
    DuplicateCpu {
        mpidr: u64,
    },
    BadPsciMethod {
        path: NodePath,
    },
    /// A node warden must locate (SMMU, PCIe ECAM) whose `reg` cannot be translated to a CPU
    /// address (a parent without `ranges`, or no `ranges` entry covers it).
    Untranslatable {
        path: NodePath,
    },
    /// A device range (after page alignment) overlaps SMMU registers that must stay hidden.
    DeviceOverlapsSmmu {
        device: MemRange,
        smmu: MemRange,
    },
    /// More entries than a fixed-capacity list holds (`limit` is the constant named in `what`).
    TooMany {
        what: &'static str,
        limit: usize,
    },
    /// `/chosen/bootargs` longer than [`super::MAX_BOOTARGS`].
    BootargsTooLong {
        len: usize,
    },
    /// Editing: no node at this path.
    NoSuchNode {
        path: NodePath,
    },
    /// Editing: the node exists but has no such property.
    NoSuchProperty {
        path: NodePath,
        property: NodeName,
    },
    /// Editing: a node with this path already exists.
    NodeExists {
        path: NodePath,
    },
    /// Editing: a node or property name the DT spec does not allow.
    InvalidName {
        name: NodeName,
    },
    /// Editing: a value that cannot be encoded with the parent's cell sizes.
    Unencodable {
        path: NodePath,
        what: &'static str,
    },
    /// Editing: the rewritten blob would exceed the 4 GiB an FDT header can describe.
    TooLarge,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderTruncated { available } => write!(
                f,
                "DT: blob truncated: a header needs {} bytes, only {available} available",
                super::blob::HEADER_LEN
            ),
            Self::BadMagic { found } => {
                write!(f, "DT: bad magic {found:#010x} (not a flattened device tree?)")
            }
            Self::UnsupportedVersion { version, last_comp_version } => write!(
                f,
                "DT: unsupported blob version {version} (last compatible {last_comp_version}); \
                 warden reads version 17"
            ),
            Self::Truncated { header_says, available } => write!(
                f,
                "DT: blob truncated: header says {header_says} bytes, only {available} available"
            ),
            Self::BadHeader { what } => write!(f, "DT: bad header: {what}"),
            Self::BadStructure { offset, what } => {
                write!(f, "DT: corrupt structure block at offset {offset:#x}: {what}")
            }
            Self::TooDeep { path } => write!(
                f,
                "DT: {path}: nodes nested deeper than {} levels (MAX_DEPTH)",
                super::MAX_DEPTH
            ),
            Self::PathTooLong { prefix } => write!(
                f,
                "DT: a node path under {prefix} is longer than {} bytes (MAX_PATH_LEN)",
                super::MAX_PATH_LEN
            ),
            Self::NameTooLong { path } => write!(
                f,
                "DT: {path}: node name longer than {} bytes (MAX_NAME_LEN)",
                super::MAX_NAME_LEN
            ),
            Self::BadCells { path, property, value: Some(v) } => {
                write!(f, "DT: {path}: {property} = <{v}> is not supported (at most 3)")
            }
            Self::BadCells { path, property, value: None } => {
                write!(f, "DT: {path}: {property} is not a single 32-bit cell")
            }
            Self::BadProperty { path, property, what } => {
                write!(f, "DT: {path}: property {property}: {what}")
            }
            Self::AddressOverflow { path } => write!(
                f,
                "DT: {path}: address or size does not fit in 64 bits or wraps the address space"
            ),
            Self::ZeroSize { path } => write!(f, "DT: {path}: region of size zero"),
            Self::NoMemory => write!(
                f,
                "DT: no /memory node with device_type = \"memory\" and a non-empty reg (a boot loader fills in zero-sized banks)"
            ),
            Self::MemoryOverlap { first, second } => {
                write!(f, "DT: memory ranges {first:?} and {second:?} overlap")
            }
            Self::ReservedOverlap { first, first_range, second, second_range } => write!(
                f,
                "DT: {} {first_range:?} overlaps {} {second_range:?}",
                ReservedLabel(first),
                ReservedLabel(second)
            ),
            Self::NoCpus => write!(f, "DT: no CPU nodes (/cpus/cpu@* with device_type = \"cpu\")"),
            Self::DuplicateCpu { mpidr } => {
                write!(f, "DT: two CPU nodes have the same reg (MPIDR {mpidr:#x})")
            }
            Self::BadPsciMethod { path } => {
                write!(f, "DT: {path}: method must be \"smc\" or \"hvc\"")
            }
            Self::Untranslatable { path } => write!(
                f,
                "DT: {path}: reg cannot be translated to a CPU address (missing or non-matching \
                 ranges in a parent)"
            ),
            Self::DeviceOverlapsSmmu { device, smmu } => write!(
                f,
                "DT: device range {device:?} overlaps SMMU registers {smmu:?} (the SMMU must stay \
                 hidden from the host)"
            ),
            Self::TooMany { what, limit } => {
                write!(f, "DT: more than {limit} {what}; raise the limit in src/dt")
            }
            Self::BootargsTooLong { len } => write!(
                f,
                "DT: /chosen/bootargs is {len} bytes, more than {} (MAX_BOOTARGS)",
                super::MAX_BOOTARGS
            ),
            Self::NoSuchNode { path } => write!(f, "DT edit: no node {path}"),
            Self::NoSuchProperty { path, property } => {
                write!(f, "DT edit: {path} has no property {property}")
            }
            Self::NodeExists { path } => write!(f, "DT edit: node {path} already exists"),
            Self::InvalidName { name } => {
                write!(f, "DT edit: invalid node or property name {name:?}")
            }
            Self::Unencodable { path, what } => write!(f, "DT edit: {path}: {what}"),
            Self::TooLarge => write!(f, "DT edit: the rewritten blob would exceed 4 GiB"),
        }
    }
}

/// `/reserved-memory/<name>` or `/memreserve/ entry` for a [`super::ReservedRegion`] name.
struct ReservedLabel<'a>(&'a NodeName);

impl fmt::Display for ReservedLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_str() == super::MEMRESERVE_NAME {
            write!(f, "/memreserve/ entry")
        } else {
            write!(f, "/reserved-memory/{}", self.0)
        }
    }
}

/// `s` in a fixed-capacity string, cut with a trailing `...` if it does not fit.
fn truncated<const N: usize>(s: &str) -> ArrayString<N> {
    if let Ok(out) = ArrayString::from(s) {
        return out;
    }
    let mut out = ArrayString::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() + 3 > out.capacity() {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

/// `s` as a path for error messages, cut with a trailing `...` if it does not fit.
pub(crate) fn path_lossy(s: &str) -> NodePath {
    truncated(s)
}

/// `s` as a name for error messages, cut with a trailing `...` if it does not fit.
pub(crate) fn name_lossy(s: &str) -> NodeName {
    truncated(s)
}
