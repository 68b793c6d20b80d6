//! Minimal flattened-device-tree editing for hostile-DT scenarios: appending a subtree to the
//! root node of a blob that QEMU dumped (`-machine ...,dumpdtb=`).
//!
//! QEMU's `-dtb` path replaces every `/memory` node with its own, so a DT without memory cannot
//! reach the firmware under QEMU; QEMU does pass `/reserved-memory` through untouched, which is
//! where the scenario plants its hostile content.

use anyhow::{Context, Result, bail, ensure};

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_SIZE: usize = 40;

fn be32(blob: &[u8], at: usize) -> Result<u32> {
    let bytes = blob.get(at..at + 4).with_context(|| format!("DT truncated at {at:#x}"))?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn c_string(blob: &[u8], at: usize) -> Result<&[u8]> {
    let rest = blob.get(at..).with_context(|| format!("DT string at {at:#x} out of bounds"))?;
    let len = rest.iter().position(|&b| b == 0).context("unterminated DT string")?;
    Ok(&rest[..len])
}

/// A node to add: name, properties (name, raw value) and children.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

/// Big-endian cells, the encoding of `reg`, `#address-cells` and friends.
pub fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

struct Blob<'a> {
    bytes: &'a [u8],
    struct_off: usize,
    struct_size: usize,
    strings_off: usize,
    strings_size: usize,
    rsvmap_off: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Blob<'_>> {
    ensure!(be32(bytes, 0)? == FDT_MAGIC, "not a flattened device tree (bad magic)");
    let total = be32(bytes, 4)? as usize;
    ensure!(total <= bytes.len(), "DT header says {total:#x} bytes, blob has {:#x}", bytes.len());
    let blob = Blob {
        bytes: &bytes[..total],
        struct_off: be32(bytes, 8)? as usize,
        strings_off: be32(bytes, 12)? as usize,
        rsvmap_off: be32(bytes, 16)? as usize,
        strings_size: be32(bytes, 32)? as usize,
        struct_size: be32(bytes, 36)? as usize,
    };
    ensure!(
        blob.struct_off.checked_add(blob.struct_size).is_some_and(|e| e <= total)
            && blob.strings_off.checked_add(blob.strings_size).is_some_and(|e| e <= total)
            && blob.rsvmap_off >= HEADER_SIZE
            && blob.rsvmap_off < total,
        "DT header blocks lie outside the blob"
    );
    Ok(blob)
}

/// Offset (inside the structure block) of the root node's END_NODE token.
fn root_end(blob: &Blob<'_>) -> Result<usize> {
    let bytes = &blob.bytes[blob.struct_off..blob.struct_off + blob.struct_size];
    let mut depth = 0usize;
    let mut at = 0;
    loop {
        let token = be32(bytes, at)?;
        match token {
            FDT_BEGIN_NODE => {
                depth += 1;
                at = (at + 4 + c_string(bytes, at + 4)?.len() + 1).next_multiple_of(4);
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).context("DT has an unbalanced END_NODE")?;
                if depth == 0 {
                    return Ok(at);
                }
                at += 4;
            }
            FDT_PROP => {
                let len = be32(bytes, at + 4)? as usize;
                at = (at + 12 + len).next_multiple_of(4);
            }
            FDT_NOP => at += 4,
            FDT_END => bail!("DT ends before its root node does"),
            other => bail!("unknown DT token {other:#x} at {at:#x}"),
        }
    }
}

fn encode_node(node: &Node, structure: &mut Vec<u8>, strings: &mut Vec<u8>) {
    structure.extend(FDT_BEGIN_NODE.to_be_bytes());
    structure.extend(node.name.as_bytes());
    structure.push(0);
    structure.resize(structure.len().next_multiple_of(4), 0);
    for (name, value) in &node.props {
        let name_off = strings.len() as u32;
        strings.extend(name.as_bytes());
        strings.push(0);
        structure.extend(FDT_PROP.to_be_bytes());
        structure.extend((value.len() as u32).to_be_bytes());
        structure.extend(name_off.to_be_bytes());
        structure.extend(value);
        structure.resize(structure.len().next_multiple_of(4), 0);
    }
    for child in &node.children {
        encode_node(child, structure, strings);
    }
    structure.extend(FDT_END_NODE.to_be_bytes());
}

/// Returns a new blob with `node` added as the last child of the root node.
pub fn add_root_child(original: &[u8], node: &Node) -> Result<Vec<u8>> {
    let blob = parse_header(original)?;
    let insert_at = root_end(&blob)?;
    let old_struct = &blob.bytes[blob.struct_off..blob.struct_off + blob.struct_size];
    let mut strings = blob.bytes[blob.strings_off..blob.strings_off + blob.strings_size].to_vec();
    let mut added = Vec::new();
    encode_node(node, &mut added, &mut strings);
    let mut structure = old_struct[..insert_at].to_vec();
    structure.extend(&added);
    structure.extend(&old_struct[insert_at..]);

    // Reserved-memory map: 16-byte entries up to and including the (0, 0) terminator.
    let mut rsvmap_end = blob.rsvmap_off;
    loop {
        let entry = blob.bytes.get(rsvmap_end..rsvmap_end + 16).context("DT rsvmap truncated")?;
        rsvmap_end += 16;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
    }
    let rsvmap = &blob.bytes[blob.rsvmap_off..rsvmap_end];

    let rsvmap_off = HEADER_SIZE.next_multiple_of(8);
    let struct_off = rsvmap_off + rsvmap.len();
    let strings_off = struct_off + structure.len();
    let total = strings_off + strings.len();
    let mut out = vec![0u8; total];
    out[..HEADER_SIZE].copy_from_slice(&blob.bytes[..HEADER_SIZE]);
    for (field, value) in [
        (4, total),
        (8, struct_off),
        (12, strings_off),
        (16, rsvmap_off),
        (32, strings.len()),
        (36, structure.len()),
    ] {
        out[field..field + 4].copy_from_slice(&(value as u32).to_be_bytes());
    }
    out[rsvmap_off..struct_off].copy_from_slice(rsvmap);
    out[struct_off..strings_off].copy_from_slice(&structure);
    out[strings_off..].copy_from_slice(&strings);
    Ok(out)
}

/// `/reserved-memory` with two `no-map` regions that overlap by 1 MiB, placed high in the
/// 1 GiB of RAM at 0x4000_0000 (away from where QEMU puts the image and the DT).
pub fn overlapping_reserved_memory() -> Node {
    let region = |name: &str, base: u32| Node {
        name: format!("{name}@{base:x}"),
        props: vec![("reg".into(), cells(&[0, base, 0, 0x20_0000])), ("no-map".into(), Vec::new())],
        children: Vec::new(),
    };
    Node {
        name: "reserved-memory".into(),
        props: vec![
            ("#address-cells".into(), cells(&[2])),
            ("#size-cells".into(), cells(&[2])),
            ("ranges".into(), Vec::new()),
        ],
        children: vec![region("hostile-a", 0x7000_0000), region("hostile-b", 0x7010_0000)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node path and its properties (name, value).
    type WalkedNode = (String, Vec<(String, Vec<u8>)>);

    /// Walks a blob and returns (node path, props) in order, checking every bound.
    fn walk(bytes: &[u8]) -> Vec<WalkedNode> {
        let blob = parse_header(bytes).unwrap();
        let s = &blob.bytes[blob.struct_off..blob.struct_off + blob.struct_size];
        let strings = &blob.bytes[blob.strings_off..blob.strings_off + blob.strings_size];
        let mut path: Vec<String> = Vec::new();
        let mut nodes: Vec<WalkedNode> = Vec::new();
        let mut at = 0;
        loop {
            match be32(s, at).unwrap() {
                FDT_BEGIN_NODE => {
                    let name = String::from_utf8(c_string(s, at + 4).unwrap().to_vec()).unwrap();
                    at = (at + 4 + name.len() + 1).next_multiple_of(4);
                    path.push(name);
                    nodes.push((path.join("/"), Vec::new()));
                }
                FDT_END_NODE => {
                    path.pop();
                    at += 4;
                }
                FDT_PROP => {
                    let len = be32(s, at + 4).unwrap() as usize;
                    let name = c_string(strings, be32(s, at + 8).unwrap() as usize).unwrap();
                    let value = s[at + 12..at + 12 + len].to_vec();
                    nodes.last_mut().unwrap().1.push((String::from_utf8_lossy(name).into(), value));
                    at = (at + 12 + len).next_multiple_of(4);
                }
                FDT_NOP => at += 4,
                FDT_END => break,
                t => panic!("token {t}"),
            }
        }
        assert!(path.is_empty());
        nodes
    }

    fn fixture() -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../boards/qemu-virt/qemu-virt.dtb");
        std::fs::read(path).unwrap()
    }

    #[test]
    fn adds_reserved_memory_to_qemu_fixture() {
        let original = fixture();
        let edited = add_root_child(&original, &overlapping_reserved_memory()).unwrap();
        let before = walk(&original);
        let after = walk(&edited);
        // Every original node and property is still there, in order.
        assert_eq!(&after[..before.len()], &before[..]);
        let added: Vec<_> = after[before.len()..].iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            added,
            [
                "/reserved-memory",
                "/reserved-memory/hostile-a@70000000",
                "/reserved-memory/hostile-b@70100000"
            ]
        );
        let (_, a_props) = &after[before.len() + 1];
        assert_eq!(a_props[0], ("reg".to_owned(), cells(&[0, 0x7000_0000, 0, 0x20_0000])));
        assert_eq!(a_props[1], ("no-map".to_owned(), Vec::new()));
        // Header fields agree with the new layout.
        assert_eq!(be32(&edited, 4).unwrap() as usize, edited.len());
        assert_eq!(be32(&edited, 20).unwrap(), be32(&original, 20).unwrap(), "version kept");
    }

    #[test]
    fn rejects_hostile_blobs_without_panicking() {
        let original = fixture();
        let node = overlapping_reserved_memory();
        assert!(add_root_child(&[], &node).is_err());
        assert!(add_root_child(&[0u8; 64], &node).is_err());
        for cut in [8, 40, 100, original.len() / 2, original.len() - 1] {
            assert!(add_root_child(&original[..cut], &node).is_err(), "cut at {cut}");
        }
        let mut bad = original.clone();
        bad[36..40].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(add_root_child(&bad, &node).is_err());
        let mut no_root_end = original.clone();
        let blob = parse_header(&original).unwrap();
        let end = blob.struct_off + root_end(&blob).unwrap();
        no_root_end[end..end + 4].copy_from_slice(&FDT_END.to_be_bytes());
        assert!(add_root_child(&no_root_end, &node).is_err());
    }
}
