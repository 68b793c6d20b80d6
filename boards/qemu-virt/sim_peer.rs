//! The simulated peer program (crate `warden-sim-peer`, `boards/qemu-virt/peer/`), embedded as
//! its flat image: linked at `warden_abi::peer::PROGRAM_IPA`, entered at its first byte, at most
//! `warden_abi::peer::PROGRAM_SIZE` bytes including BSS and stack. `cargo xtask build` builds it
//! first and names the file in `WARDEN_SIM_PEER` (checked by the root `build.rs`).

/// The peer program image, copied to the peer's `PROGRAM_IPA` window before it runs.
pub static PROGRAM: &[u8] = include_bytes!(env!("WARDEN_SIM_PEER"));
