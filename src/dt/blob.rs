//! Heap-free, panic-free reading of a flattened device tree blob.
//!
//! [`Blob::new`] checks the header (magic, version, block offsets, sizes and alignment) and
//! [`walk`] checks the structure block while it walks it (token stream, name termination,
//! property bounds, string offsets, nesting depth). Every read is bounds-checked, so any byte
//! sequence gives either a result or a [`DtError`].

use arrayvec::ArrayVec;

use super::error::{DtError, NodePath, path_lossy};
use super::{MAX_DEPTH, MAX_PATH_LEN};

pub(crate) const FDT_MAGIC: u32 = 0xd00d_feed;
pub(crate) const HEADER_LEN: usize = 40;
/// The layout version warden reads and writes. Version 16 blobs lack `size_dt_struct`.
pub(crate) const FDT_VERSION: u32 = 17;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Big-endian u32 at `offset`, if all four bytes are inside `bytes`.
pub(crate) fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let b = bytes.get(offset..end)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Big-endian u64 at `offset`.
pub(crate) fn be64(bytes: &[u8], offset: usize) -> Option<u64> {
    let hi = be32(bytes, offset)?;
    let lo = be32(bytes, offset.checked_add(4)?)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

fn align4(offset: usize) -> Option<usize> {
    Some(offset.checked_add(3)? & !3)
}

/// The NUL-terminated UTF-8 string starting at `offset` in `bytes`.
fn cstr_at(bytes: &[u8], offset: usize) -> Option<&str> {
    let tail = bytes.get(offset..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    core::str::from_utf8(tail.get(..len)?).ok()
}

/// Reads `totalsize` from a header after checking magic and version.
pub(crate) fn header_totalsize(header: &[u8]) -> Result<usize, DtError> {
    if header.len() < HEADER_LEN {
        return Err(DtError::HeaderTruncated { available: header.len() });
    }
    let field = |offset| be32(header, offset).ok_or(DtError::HeaderTruncated { available: 0 });
    let magic = field(0)?;
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic { found: magic });
    }
    let version = field(20)?;
    let last_comp_version = field(24)?;
    if version < FDT_VERSION || last_comp_version > FDT_VERSION {
        return Err(DtError::UnsupportedVersion { version, last_comp_version });
    }
    let totalsize = field(4)? as usize;
    if totalsize < HEADER_LEN {
        return Err(DtError::BadHeader { what: "totalsize is smaller than the header" });
    }
    Ok(totalsize)
}

/// A blob whose header has been validated; `data` is cut to `totalsize`.
#[derive(Clone, Copy)]
pub(crate) struct Blob<'a> {
    data: &'a [u8],
    structs: &'a [u8],
    strings: &'a [u8],
    off_mem_rsvmap: usize,
    pub(crate) boot_cpuid_phys: u32,
}

impl<'a> Blob<'a> {
    pub(crate) fn new(blob: &'a [u8]) -> Result<Self, DtError> {
        let totalsize = header_totalsize(blob)?;
        let data = blob
            .get(..totalsize)
            .ok_or(DtError::Truncated { header_says: totalsize, available: blob.len() })?;
        let field = |offset| be32(data, offset).map(|v| v as usize).unwrap_or(0);
        let off_dt_struct = field(8);
        let off_dt_strings = field(12);
        let off_mem_rsvmap = field(16);
        let size_dt_strings = field(32);
        let size_dt_struct = field(36);

        if off_mem_rsvmap < HEADER_LEN || !off_mem_rsvmap.is_multiple_of(8) {
            return Err(DtError::BadHeader {
                what: "memory reservation block offset is inside the header or not 8-byte aligned",
            });
        }
        if off_dt_struct < HEADER_LEN || !off_dt_struct.is_multiple_of(4) {
            return Err(DtError::BadHeader {
                what: "structure block offset is inside the header or not 4-byte aligned",
            });
        }
        if off_dt_strings < HEADER_LEN {
            return Err(DtError::BadHeader { what: "strings block offset is inside the header" });
        }
        let structs = off_dt_struct
            .checked_add(size_dt_struct)
            .and_then(|end| data.get(off_dt_struct..end))
            .ok_or(DtError::BadHeader { what: "structure block extends past totalsize" })?;
        let strings = off_dt_strings
            .checked_add(size_dt_strings)
            .and_then(|end| data.get(off_dt_strings..end))
            .ok_or(DtError::BadHeader { what: "strings block extends past totalsize" })?;
        let boot_cpuid_phys = be32(data, 28).unwrap_or(0);
        Ok(Self { data, structs, strings, off_mem_rsvmap, boot_cpuid_phys })
    }

    /// Calls `f(address, size)` for each `/memreserve/` entry, up to the (0, 0) terminator.
    pub(crate) fn for_each_memreserve(
        &self,
        mut f: impl FnMut(u64, u64) -> Result<(), DtError>,
    ) -> Result<(), DtError> {
        let mut offset = self.off_mem_rsvmap;
        loop {
            let (Some(address), Some(size)) =
                (be64(self.data, offset), offset.checked_add(8).and_then(|o| be64(self.data, o)))
            else {
                return Err(DtError::BadHeader {
                    what: "memory reservation block is not terminated before totalsize",
                });
            };
            if address == 0 && size == 0 {
                return Ok(());
            }
            f(address, size)?;
            offset += 16;
        }
    }

    /// The token at `offset` in the structure block and the offset of the next token.
    fn token(&self, offset: usize) -> Result<(Token<'a>, usize), DtError> {
        let bad = |what| DtError::BadStructure { offset, what };
        let tag = be32(self.structs, offset).ok_or(bad("token past the end of the block"))?;
        let body = offset + 4;
        match tag {
            FDT_BEGIN_NODE => {
                let name = cstr_at(self.structs, body)
                    .ok_or(bad("node name is not NUL-terminated UTF-8 inside the block"))?;
                let next = align4(body + name.len() + 1).ok_or(bad("node name overflows"))?;
                Ok((Token::BeginNode(name), next))
            }
            FDT_END_NODE => Ok((Token::EndNode, body)),
            FDT_PROP => {
                let len = be32(self.structs, body).ok_or(bad("property header truncated"))?;
                let nameoff =
                    be32(self.structs, body + 4).ok_or(bad("property header truncated"))?;
                let value_start = body + 8;
                let value = value_start
                    .checked_add(len as usize)
                    .and_then(|end| self.structs.get(value_start..end))
                    .ok_or(bad("property value extends past the structure block"))?;
                let name = cstr_at(self.strings, nameoff as usize)
                    .ok_or(bad("property name offset is outside the strings block"))?;
                let next = align4(value_start + value.len()).ok_or(bad("property overflows"))?;
                Ok((Token::Prop(Prop { name, value }), next))
            }
            FDT_NOP => Ok((Token::Nop, body)),
            FDT_END => Ok((Token::End, body)),
            _ => Err(bad("unknown token")),
        }
    }
}

enum Token<'a> {
    BeginNode(&'a str),
    EndNode,
    Prop(Prop<'a>),
    Nop,
    End,
}

/// One property: its name (from the strings block) and raw value.
#[derive(Clone, Copy)]
pub(crate) struct Prop<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a [u8],
}

/// A node's name and its validated property tokens.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    pub(crate) name: &'a str,
    blob: Blob<'a>,
    /// Structure-block offsets of the node's property tokens: `[props_start, props_end)`.
    props_start: usize,
    props_end: usize,
}

impl<'a> Node<'a> {
    pub(crate) fn props(&self) -> impl Iterator<Item = Prop<'a>> + 'a {
        let blob = self.blob;
        let end = self.props_end;
        let mut offset = self.props_start;
        core::iter::from_fn(move || {
            while offset < end {
                // The walker validated these tokens; a failure here just ends the iteration.
                let (token, next) = blob.token(offset).ok()?;
                offset = next;
                match token {
                    Token::Prop(p) => return Some(p),
                    Token::Nop => {}
                    _ => return None,
                }
            }
            None
        })
    }

    pub(crate) fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props().find(|p| p.name == name).map(|p| p.value)
    }

    pub(crate) fn has_prop(&self, name: &str) -> bool {
        self.prop(name).is_some()
    }

    /// The property as a string (up to the first NUL), if it is valid UTF-8.
    pub(crate) fn prop_str(&self, name: &str) -> Option<&'a str> {
        let value = self.prop(name)?;
        let len = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        core::str::from_utf8(value.get(..len)?).ok()
    }

    /// Whether the NUL-separated string list property `name` contains `wanted`.
    pub(crate) fn prop_list_contains(&self, name: &str, wanted: &str) -> bool {
        self.prop(name)
            .is_some_and(|value| value.split(|&b| b == 0).any(|s| s == wanted.as_bytes()))
    }

    pub(crate) fn is_compatible(&self, compatible: &str) -> bool {
        self.prop_list_contains("compatible", compatible)
    }

    /// The name without its `@unit-address`.
    pub(crate) fn base_name(&self) -> &'a str {
        self.name.split('@').next().unwrap_or(self.name)
    }
}

/// Per-level state of the walk: the node and the cell sizes it imposes on its children.
#[derive(Clone, Copy)]
pub(crate) struct Level<'a> {
    pub(crate) node: Node<'a>,
    pub(crate) address_cells: u32,
    pub(crate) size_cells: u32,
    /// Length of this node's path in the walk's path buffer (0 for the root).
    path_end: usize,
    /// Length to cut the path buffer back to when this node ends (its parent's `path_end`).
    cut_at: usize,
}

/// What the visitor sees for each node: the node, its ancestors (root first) and its path.
pub(crate) struct Visit<'v, 'a> {
    pub(crate) node: Node<'a>,
    pub(crate) ancestors: &'v [Level<'a>],
    pub(crate) path: &'v str,
    /// This node's own levels entry (its `#address-cells`/`#size-cells`).
    pub(crate) level: &'v Level<'a>,
}

impl Visit<'_, '_> {
    pub(crate) fn depth(&self) -> usize {
        self.ancestors.len()
    }

    pub(crate) fn path(&self) -> NodePath {
        path_lossy(self.path)
    }
}

impl<'a> Level<'a> {
    pub(crate) fn path<'p>(&self, full: &'p str) -> &'p str {
        match full.get(..self.path_end) {
            Some("") => "/",
            Some(p) => p,
            None => full,
        }
    }
}

/// `#address-cells` / `#size-cells` of `node`, defaulting to 2 / 1 (the DT spec defaults).
fn cells(node: &Node<'_>, name: &'static str, default: u32, path: &str) -> Result<u32, DtError> {
    let Some(value) = node.prop(name) else { return Ok(default) };
    let cells = if value.len() == 4 { be32(value, 0) } else { None };
    match cells {
        Some(c) if c <= 3 => Ok(c),
        _ => Err(DtError::BadCells { path: path_lossy(path), property: name, value: cells }),
    }
}

/// Walks the structure block depth-first, calling `visit` once per node (root first), after
/// the node's properties and before its children. Validates the token stream as it goes.
pub(crate) fn walk<'a>(
    blob: &Blob<'a>,
    mut visit: impl FnMut(&Visit<'_, 'a>) -> Result<(), DtError>,
) -> Result<(), DtError> {
    let mut stack: ArrayVec<Level<'a>, MAX_DEPTH> = ArrayVec::new();
    let mut path: arrayvec::ArrayString<MAX_PATH_LEN> = arrayvec::ArrayString::new();
    let mut offset = 0usize;
    loop {
        let (token, next) = blob.token(offset)?;
        match token {
            Token::BeginNode(name) => {
                if stack.is_empty() {
                    if !name.is_empty() {
                        return Err(DtError::BadStructure { offset, what: "root node has a name" });
                    }
                } else if name.is_empty() || name.contains('/') {
                    return Err(DtError::BadStructure { offset, what: "invalid node name" });
                }
                let path_len = path.len();
                if !stack.is_empty() {
                    if path.len() + 1 + name.len() > path.capacity() {
                        return Err(DtError::PathTooLong { prefix: path_lossy(&path) });
                    }
                    path.push('/');
                    path.push_str(name);
                }
                // Properties come before subnodes: collect them now so the node is complete.
                let props_start = next;
                let mut props_end = next;
                loop {
                    let (t, after) = blob.token(props_end)?;
                    match t {
                        Token::Prop(_) | Token::Nop => props_end = after,
                        _ => break,
                    }
                }
                let node = Node { name, blob: *blob, props_start, props_end };
                let shown_path = if path.is_empty() { "/" } else { path.as_str() };
                let level = Level {
                    node,
                    address_cells: cells(&node, "#address-cells", 2, shown_path)?,
                    size_cells: cells(&node, "#size-cells", 1, shown_path)?,
                    path_end: path.len(),
                    cut_at: path_len,
                };
                visit(&Visit { node, ancestors: &stack, path: shown_path, level: &level })?;
                stack
                    .try_push(level)
                    .map_err(|_| DtError::TooDeep { path: path_lossy(shown_path) })?;
                offset = props_end;
            }
            Token::EndNode => {
                let top = stack.pop().ok_or(DtError::BadStructure {
                    offset,
                    what: "END_NODE without a matching BEGIN_NODE",
                })?;
                path.truncate(top.cut_at);
                offset = next;
                if stack.is_empty() {
                    return expect_end(blob, offset);
                }
            }
            Token::Prop(_) => {
                return Err(DtError::BadStructure {
                    offset,
                    what: "property after a subnode (properties must come first)",
                });
            }
            Token::Nop => offset = next,
            Token::End => {
                return Err(DtError::BadStructure {
                    offset,
                    what: "END before the root node closed",
                });
            }
        }
    }
}

fn expect_end(blob: &Blob<'_>, mut offset: usize) -> Result<(), DtError> {
    loop {
        let (token, next) = blob.token(offset)?;
        match token {
            Token::Nop => offset = next,
            Token::End => return Ok(()),
            _ => {
                return Err(DtError::BadStructure { offset, what: "data after the root node" });
            }
        }
    }
}
