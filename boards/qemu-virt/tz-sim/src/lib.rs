//! tz-sim: a small EL3 firmware for QEMU's `virt` board (`secure=on,virtualization=on`) that
//! plays Qualcomm's TrustZone as far as warden can tell.
//!
//! What it does, on every CPU (`src/main.rs`):
//! - **GIC secure initialisation**: every interrupt non-secure group 1 (GICv3: distributor with
//!   affinity routing for both states, each redistributor woken, ICC_SRE_EL3 opening the
//!   system registers to EL2 and EL1; GICv2: every IGROUPR bit set, both groups enabled);
//! - **the hyp entry convention**: the hyp image ([`layout::HYP_BASE`]) entered at EL2, MMU
//!   off, DAIF masked, with x0 = the entry point the next stage asked for and x1 = 2
//!   (AArch64), and no DT: on the boot CPU x0 is the next stage's entry
//!   ([`layout::NEXT_STAGE`]); on a CPU powered up by `CPU_ON`, the entry `CPU_ON` named (the
//!   context id is not passed: the hyp image, which forwarded the call, keeps it);
//! - **PSCI 1.0 over SMC** ([`psci`]): `PSCI_VERSION`, `PSCI_FEATURES`, `CPU_ON`, `CPU_OFF`,
//!   `AFFINITY_INFO`, `CPU_SUSPEND` (standby only), `MIGRATE_INFO_TYPE`, `SYSTEM_OFF`,
//!   `SYSTEM_RESET`, and SMCCC's `SMCCC_VERSION` / `SMCCC_ARCH_FEATURES`; everything else is
//!   `NOT_SUPPORTED` (-1), as SMCCC says of an unknown function;
//! - **Qualcomm SCM over SMC** ([`scm`], [`pas`]): IS_CALL_AVAIL, `assign_mem` with the
//!   ownership of every range ([`ownership`]) and PAS's per-peripheral state machine;
//! - **the XPU witness** ([`witness`]): before a range leaves HLOS, the calling CPU's stage 2
//!   and the SMMU's stream table are walked by physical address ([`mem`]) and the call is
//!   refused if the host can still reach a byte of it.
//!
//! This library is what can be tested on the build host: the decoding and the state machines,
//! the table walker over RAM in a buffer, and the board's memory map ([`layout`]).
//! `src/main.rs` is the EL3 program around it (`src/board.rs` its RAM, registers and console);
//! `src/probe.rs` an EL2 program that checks it from where warden sits.
#![no_std]

pub mod layout;
pub mod mem;
pub mod ownership;
pub mod pas;
pub mod psci;
pub mod scm;
pub mod witness;
