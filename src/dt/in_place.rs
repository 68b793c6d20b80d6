//! Edits that keep every byte where it is: what a boot loader does to a board's DT before the
//! OS boots with it, for DTs [`super::apply`] cannot rewrite.
//!
//! Qualcomm board DTs ship `/memory` with a zero-sized `reg` that the boot loader (ABL, LK,
//! U-Boot) fills with the RAM it found. [`apply`](super::apply) goes through `dtoolkit`, which
//! refuses property names over the DT spec's 31 characters, and every Snapdragon DT in Linux
//! has one (`arm,coresight-loses-context-with-cpu`); overwriting the value in place needs no
//! rewriting, so it works on any DT warden can [`parse`](super::parse).

use super::blob::{Blob, walk};
use super::*;

/// Writes `banks` into the `reg` of the first `device_type = "memory"` node, in place: the
/// property must already have exactly `banks.len()` entries (of the parent's cell sizes, at
/// most 2 + 2), whatever their values. Each bank must fit its cells.
pub fn set_memory_in_place(blob: &mut [u8], banks: &[MemRange]) -> Result<(), DtError> {
    let base = blob.as_ptr() as usize;
    let mut found: Option<(usize, usize, u32, u32, NodePath)> = None;
    {
        let parsed = Blob::new(blob)?;
        walk(&parsed, |v| {
            if found.is_some() || v.node.prop_str("device_type") != Some("memory") {
                return Ok(());
            }
            let (Some(parent), Some(reg)) = (v.ancestors.last(), v.node.prop("reg")) else {
                return Ok(());
            };
            let offset = reg.as_ptr() as usize - base;
            found = Some((offset, reg.len(), parent.address_cells, parent.size_cells, v.path()));
            Ok(())
        })?;
    }
    let (offset, len, address_cells, size_cells, path) = found.ok_or(DtError::NoMemory)?;
    let bad = |what| DtError::BadProperty { path, property: "reg", what };
    if !(1..=2).contains(&address_cells) || !(1..=2).contains(&size_cells) {
        return Err(bad("cell sizes other than 1 or 2 are not written in place"));
    }
    let entry = (address_cells + size_cells) as usize * 4;
    if len != entry * banks.len() {
        return Err(bad("has not as many entries as banks to write in place"));
    }
    let mut at = offset;
    for bank in banks {
        for (value, cells) in [(bank.start, address_cells), (bank.size(), size_cells)] {
            if cells == 1 && value > u64::from(u32::MAX) {
                return Err(bad("a bank does not fit the parent's cell sizes"));
            }
            let bytes = value.to_be_bytes();
            let width = cells as usize * 4;
            let dest = blob.get_mut(at..at + width).ok_or(bad("ends beyond the blob"))?;
            dest.copy_from_slice(&bytes[8 - width..]);
            at += width;
        }
    }
    Ok(())
}
