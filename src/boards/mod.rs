//! Board descriptions. Each board lives in its own folder under `boards/` at the top of the
//! repository (memory map facts, console, policy); the one selected by a `board-*` feature is
//! compiled in as [`CURRENT`]. Everything the DT can tell is read from the DT; a board only
//! supplies what the DT cannot (the console to use before the DT is parsed, firmware quirks,
//! policy).

use crate::gic::GicVersion;

/// What the EL3 firmware below warden implements for SMC calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's built-in PSCI (no EL3 code): it answers PSCI function IDs only; any other SMC
    /// from EL2 is UNDEFINED and would fault warden itself, so warden must never forward one.
    QemuBuiltinPsci,
    /// Trusted Firmware-A or a vendor EL3 monitor implementing SMCCC: unknown IDs return -1,
    /// so SMCs that are not warden's business may be forwarded.
    Smccc,
}

/// What warden does when the host touches memory it may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationPolicy {
    /// Log and inject a synchronous external abort into the host; the host continues (G0).
    Contain,
    /// Log and stop (board bring-up, to catch the first violation with the machine frozen).
    Panic,
}

/// Static facts about a board.
///
/// Each field picks one of the pieces warden is built from; the boot sequence (`crate::boot`)
/// runs over what the board picked and what the DT says.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    pub name: &'static str,
    /// PL011 used for messages before the DT has been parsed (the DT's `stdout-path` wins after).
    pub early_uart: u64,
    pub firmware: Firmware,
    pub violation_policy: ViolationPolicy,
    /// Keep the last CPU of `/cpus` from the host and run the simulated peer program on it
    /// (qemu-virt: stands in for the modem and DSP, see `docs/abi.md`).
    pub sim_peer: bool,
    /// IPA of the warden control page (`warden_abi::control`), if the board offers one. Must be
    /// an address the DT gives to no device.
    pub control_page: Option<u64>,
    /// The EL3 firmware implements Qualcomm's SCM (a Snapdragon board's TrustZone): SiP calls
    /// warden does not answer itself, and the PAS calls once warden's checks pass, are
    /// forwarded to it (`docs/qcom-scm.md`). Only with [`Firmware::Smccc`].
    pub scm_firmware: bool,
    /// The interrupt controllers the board may have; the DT says which one it has
    /// (`crate::gic::select`).
    pub interrupt_controllers: &'static [GicVersion],
    /// Most CPUs the board has (the simulated peer's included). warden's per-CPU state is
    /// static, sized by this: each CPU costs an EL2 stack and an emergency stack in BSS
    /// (`crate::arch::aarch64::PER_CPU_BSS`). A power of two (the exception vectors mask the
    /// CPU index with it).
    pub max_cpus: usize,
}

#[cfg(feature = "board-qemu-virt")]
#[path = "../../boards/qemu-virt/board.rs"]
mod qemu_virt;

#[cfg(feature = "board-qemu-virt")]
pub use qemu_virt::BOARD as CURRENT;

/// The current board's carveouts (`/reserved-memory` nodes it adds to the host DT).
#[cfg(feature = "board-qemu-virt")]
#[path = "../../boards/qemu-virt/carveouts.rs"]
pub mod carveouts;

/// The simulated peer program warden runs on the CPU it keeps (qemu-virt firmware only).
#[cfg(all(feature = "board-qemu-virt", feature = "firmware"))]
#[path = "../../boards/qemu-virt/sim_peer.rs"]
pub mod sim_peer;
