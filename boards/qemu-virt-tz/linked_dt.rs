//! The OS's DT for the chain, linked into warden's image: `cargo xtask build` writes it
//! (`target/warden/qemu-virt-tz.dtb`, `xtask/src/chain.rs`) and names it in `WARDEN_HYP_DT`
//! (checked by the root `build.rs`) before warden is built.

/// 8-byte alignment for the blob (a flattened DT's structure block is 4-byte aligned data).
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("WARDEN_HYP_DT")));

/// The blob.
pub static DT: &[u8] = &BLOB.0;
