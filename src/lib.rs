//! warden: a bare-metal EL2 mediation layer for AArch64.
//!
//! The library holds everything that is logic (page-table construction, device-tree handling,
//! trap decoding, SMCCC routing, PSCI mediation, boot layout planning) and compiles and
//! unit-tests on the build host. Hardware effects go through the narrow traits in [`arch`];
//! the aarch64 implementations live in `arch::aarch64` and are the only target-gated code.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod arch;
pub mod boards;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod boot;
pub mod boot_stage;
pub mod console;
pub mod dt;
pub mod gic;
pub mod handoff;
pub mod host_dt;
pub mod mm;
pub mod payload;
pub mod persona;
pub mod sim_peer;
pub mod smmu;
pub mod trap;
