//! The simulated peer's program (`boards/qemu-virt/peer`), embedded by `cargo xtask build`
//! through `WARDEN_SIM_PEER`.

pub static PROGRAM: &[u8] = include_bytes!(env!("WARDEN_SIM_PEER"));
