//! Gets the DT into a form the `fdt` crate (0.1.5) reads reliably.
//!
//! That parser's `find_node` stops at an `FDT_NOP` token between sibling nodes, and its node
//! skipping asserts on NOPs elsewhere. Editors leave NOPs behind when they delete or shrink
//! something (QEMU does with `-dtb`: nodes after the NOPs then seem to be missing). So a DT that
//! contains NOPs is copied into a buffer without them; one without NOPs is read in place.

use core::cell::UnsafeCell;

use crate::shared::SharedU64;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

const HEADER_LEN: usize = 40;
const OFF_TOTALSIZE: usize = 4;
const OFF_DT_STRUCT: usize = 8;
const OFF_SIZE_DT_STRUCT: usize = 36;

/// Room for the copy; QEMU's virt DT is about 36 KiB.
const COPY_CAPACITY: usize = 256 * 1024;

struct CopyBuffer(UnsafeCell<[u8; COPY_CAPACITY]>);

// SAFETY: the buffer is handed out at most once (guarded by COPY_TAKEN) and only by the primary
// CPU before any other CPU runs.
unsafe impl Sync for CopyBuffer {}

static COPY: CopyBuffer = CopyBuffer(UnsafeCell::new([0; COPY_CAPACITY]));
static COPY_TAKEN: SharedU64 = SharedU64::new(0);

fn read_be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn write_be32(bytes: &mut [u8], offset: usize, value: u32) -> Option<()> {
    bytes.get_mut(offset..offset.checked_add(4)?)?.copy_from_slice(&value.to_be_bytes());
    Some(())
}

fn align4(value: usize) -> Option<usize> {
    Some(value.checked_add(3)? & !3)
}

/// Returns the DT at `address` as a byte slice the parser can use: in place if it has no NOPs,
/// else a NOP-free copy.
///
/// # Safety
/// `address` must point to readable memory holding a DT header and, if the header is valid,
/// `totalsize` bytes that stay unchanged for the rest of the run. Called once, by the primary
/// CPU, before any other CPU starts.
pub unsafe fn load(address: u64) -> Result<&'static [u8], &'static str> {
    let header_ptr = address as *const u8;
    // SAFETY: the caller guarantees a readable header at `address`.
    let header = unsafe { core::slice::from_raw_parts(header_ptr, HEADER_LEN) };
    if read_be32(header, 0) != Some(FDT_MAGIC) {
        return Err("no flattened device tree (bad magic) at the address in x0");
    }
    let total_size = read_be32(header, OFF_TOTALSIZE)
        .and_then(|size| usize::try_from(size).ok())
        .filter(|&size| size >= HEADER_LEN)
        .ok_or("DT totalsize is smaller than its header")?;
    // SAFETY: the caller guarantees `totalsize` readable, unchanging bytes behind a valid header.
    let blob = unsafe { core::slice::from_raw_parts(header_ptr, total_size) };
    if !has_nops(blob)? {
        return Ok(blob);
    }
    if COPY_TAKEN.load() != 0 {
        return Err("the DT copy buffer is already in use");
    }
    COPY_TAKEN.store(1);
    // SAFETY: COPY_TAKEN makes this the only reference ever created to the buffer, and no other
    // CPU runs yet (see the function's contract).
    let buffer = unsafe { &mut *COPY.0.get() };
    let copy = buffer.get_mut(..total_size).ok_or("DT with NOPs is too large to copy")?;
    copy.copy_from_slice(blob);
    remove_nops(copy)?;
    Ok(copy)
}

/// The structure block's bounds, validated against the blob.
fn struct_block(blob: &[u8]) -> Result<(usize, usize), &'static str> {
    let start = read_be32(blob, OFF_DT_STRUCT).and_then(|v| usize::try_from(v).ok());
    let size = read_be32(blob, OFF_SIZE_DT_STRUCT).and_then(|v| usize::try_from(v).ok());
    match (start, size) {
        (Some(start), Some(size)) => match start.checked_add(size) {
            Some(end) if end <= blob.len() && start.is_multiple_of(4) => Ok((start, end)),
            _ => Err("DT structure block lies outside the blob"),
        },
        _ => Err("DT header is truncated"),
    }
}

/// Length of the token at `at` (including its payload), and whether it ends the block.
fn token_len(blob: &[u8], at: usize, end: usize) -> Result<(u32, usize), &'static str> {
    const MALFORMED: &str = "malformed DT structure block";
    let token = read_be32(blob, at).ok_or(MALFORMED)?;
    let len = match token {
        FDT_BEGIN_NODE => {
            let name_start = at + 4;
            let name = blob.get(name_start..end).ok_or(MALFORMED)?;
            let name_len = name.iter().position(|&b| b == 0).ok_or(MALFORMED)?;
            4 + align4(name_len + 1).ok_or(MALFORMED)?
        }
        FDT_PROP => {
            let value_len = read_be32(blob, at + 4).ok_or(MALFORMED)?;
            let value_len = usize::try_from(value_len).map_err(|_| MALFORMED)?;
            12 + align4(value_len).ok_or(MALFORMED)?
        }
        FDT_END_NODE | FDT_NOP | FDT_END => 4,
        _ => return Err(MALFORMED),
    };
    match at.checked_add(len) {
        Some(next) if next <= end => Ok((token, len)),
        _ => Err(MALFORMED),
    }
}

fn has_nops(blob: &[u8]) -> Result<bool, &'static str> {
    let (mut at, end) = struct_block(blob)?;
    while at < end {
        let (token, len) = token_len(blob, at, end)?;
        match token {
            FDT_NOP => return Ok(true),
            FDT_END => return Ok(false),
            _ => at += len,
        }
    }
    Err("DT structure block has no FDT_END")
}

/// Compacts the structure block in place, dropping NOPs, and shrinks `size_dt_struct`.
fn remove_nops(blob: &mut [u8]) -> Result<(), &'static str> {
    let (start, end) = struct_block(blob)?;
    let (mut read, mut write) = (start, start);
    while read < end {
        let (token, len) = token_len(blob, read, end)?;
        if token != FDT_NOP {
            blob.copy_within(read..read + len, write);
            write += len;
        }
        read += len;
        if token == FDT_END {
            let size = u32::try_from(write - start).map_err(|_| "DT too large")?;
            write_be32(blob, OFF_SIZE_DT_STRUCT, size).ok_or("DT header is truncated")?;
            return Ok(());
        }
    }
    Err("DT structure block has no FDT_END")
}
