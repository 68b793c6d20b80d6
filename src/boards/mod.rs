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

/// How warden is entered, and so where its platform description comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryConvention {
    /// Loaded like a Linux kernel (arm64 `Image` header) with the host packed behind it
    /// (`payload`): entered once, at EL2, with x0 = the DT, which warden patches for the host
    /// (`docs/image-format.md`).
    LinuxImage,
    /// Flashed as the `hyp` boot stage: TrustZone enters warden at `base` at EL2 on the boot CPU
    /// and again on every CPU power-up, with x0 = the next stage's (or the `CPU_ON`) entry,
    /// x1 = 2 (AArch64) and no DT. warden runs in place in `[base, base + region_size)`, reads
    /// the platform from the DT linked into its image (the OS's DT: [`linked_dt`]), refuses to
    /// start unless that DT reserves its region and every carveout `no-map`, and enters the
    /// next stage at EL1 (`docs/architecture.md`, *Boot-stage mode*).
    Hyp { base: u64, region_size: u64 },
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
    /// How warden is entered: packed Linux Image, or TrustZone's hyp entry.
    pub entry: EntryConvention,
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

// The descriptions are plain data, always compiled (xtask builds the chain's DT from
// `qemu_virt_tz`'s); a `board-*` feature picks the one warden is built for.
#[path = "../../boards/qemu-virt/board.rs"]
pub mod qemu_virt;

#[path = "../../boards/qemu-virt-tz/board.rs"]
pub mod qemu_virt_tz;

#[cfg(all(feature = "board-qemu-virt", feature = "board-qemu-virt-tz"))]
compile_error!(
    "pick one board: features `board-qemu-virt` and `board-qemu-virt-tz` exclude each other"
);

#[cfg(feature = "board-qemu-virt")]
pub use qemu_virt::BOARD as CURRENT;

#[cfg(feature = "board-qemu-virt-tz")]
pub use qemu_virt_tz::BOARD as CURRENT;

/// The QEMU boards' carveouts (`/reserved-memory` nodes added to the host DT; both QEMU boards
/// have the same).
#[cfg(any(feature = "board-qemu-virt", feature = "board-qemu-virt-tz"))]
#[path = "../../boards/qemu-virt/carveouts.rs"]
pub mod carveouts;

/// The simulated peer program warden runs on the CPU it keeps (qemu-virt firmware only).
#[cfg(all(feature = "board-qemu-virt", feature = "firmware"))]
#[path = "../../boards/qemu-virt/sim_peer.rs"]
pub mod sim_peer;

/// The DT linked into a hyp-entry board's image ([`EntryConvention::Hyp`]): the OS's DT, made
/// by `cargo xtask build` before warden is linked (`xtask/src/chain.rs`).
#[cfg(all(feature = "board-qemu-virt-tz", feature = "firmware"))]
#[path = "../../boards/qemu-virt-tz/linked_dt.rs"]
mod linked;

/// The DT linked into the image (hyp-entry boards), or `None`.
pub fn linked_dt() -> Option<&'static [u8]> {
    #[cfg(all(feature = "board-qemu-virt-tz", feature = "firmware"))]
    return Some(linked::DT);
    #[cfg(not(all(feature = "board-qemu-virt-tz", feature = "firmware")))]
    None
}
