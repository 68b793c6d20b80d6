//! The warden control page: warden's calls made with plain loads and stores, for hosts that
//! cannot issue `HVC` from user space (busybox `devmem` on an unmodified Linux).
//!
//! The page is not mapped in the host's stage-2: every access traps to warden, which emulates
//! it. It is advertised in the host DT as `/warden-control@<addr>` (compatible
//! [`COMPATIBLE`]). Registers are 64-bit; each may be accessed as a whole (8 bytes at its
//! offset) or as two 32-bit halves (low at the offset, high at offset + 4). Other sizes or
//! misaligned accesses get a synchronous external abort.
//!
//! | offset        | register  | access | meaning |
//! |---------------|-----------|--------|---------|
//! | 0x000         | `MAGIC`   | RO     | [`MAGIC`] in the low word, ABI version (`major << 16 \| minor`) in the high word |
//! | 0x008 + 8·(n-1) | `ARG1..ARG7` | RW | `x1..x7` of the next call |
//! | 0x040         | `CALL`    | WO     | writing a function ID makes the call (as the host, like an `HVC #0`), then clears `ARG1..ARG7` |
//! | 0x080 + 8·n   | `RET0..RET7` | RO  | `x0..x7` of the last call |
//!
//! A 32-bit write to the low half of an `ARG` register clears its high half (so a 32-bit value
//! needs one write); a write to the high half leaves the low half. Writes to read-only
//! registers and reads of `CALL` are ignored/read zero. The page has one set of registers for
//! the whole machine: concurrent users must serialize (it is meant for scripts and bring-up).

/// `compatible` of the DT node.
pub const COMPATIBLE: &str = "warden,control-v1";
/// "WRDN" read as a little-endian u32.
pub const MAGIC: u32 = 0x4e44_5257;
/// Size of the page.
pub const SIZE: u64 = 0x1000;

pub const REG_MAGIC: u64 = 0x000;
/// `ARGn` (n = 1..=7) is at `REG_ARG1 + 8 * (n - 1)`.
pub const REG_ARG1: u64 = 0x008;
pub const REG_CALL: u64 = 0x040;
/// `RETn` (n = 0..=7) is at `REG_RET0 + 8 * n`.
pub const REG_RET0: u64 = 0x080;

/// Offset of `ARGn`, n = 1..=7.
pub const fn arg(n: usize) -> u64 {
    REG_ARG1 + 8 * (n as u64 - 1)
}

/// Offset of `RETn`, n = 0..=7.
pub const fn ret(n: usize) -> u64 {
    REG_RET0 + 8 * n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(arg(1), 0x08);
        assert_eq!(arg(7), 0x38);
        assert!(arg(7) < REG_CALL);
        assert_eq!(ret(0), 0x80);
        assert_eq!(ret(7), 0xb8);
        assert_eq!(&MAGIC.to_le_bytes(), b"WRDN");
    }
}
