//! warden's host-visible ABI, defined once and shared by warden, the test guest and the peer.
//!
//! Calls follow the Arm SMC Calling Convention (SMCCC, DEN0028): the host issues `HVC #0`, or
//! `SMC #0` which warden intercepts (HCR_EL2.TSC), with the function ID in `x0` and arguments in
//! `x1..x17`; results come back in `x0..x3`. warden's own calls live in the *Vendor Specific
//! Hypervisor Service* range (owner 6). PSCI (owner 4) is mediated and forwarded to EL3.
//! Every ID and error code here is stable: see `docs/abi.md`.
#![no_std]

pub mod calls;
pub mod control;
pub mod error;
pub mod handoff;
pub mod peer;
pub mod qcom_scm;
pub mod stats;

pub use error::AbiError;

/// SMCCC function ID fields.
pub mod smccc {
    /// Bit 31: fast call (all calls warden handles are fast calls).
    pub const FAST_CALL: u32 = 1 << 31;
    /// Bit 30: SMC64/HVC64 calling convention.
    pub const CONV_64: u32 = 1 << 30;
    /// Owning entity numbers (bits 29:24).
    pub const OWNER_ARCH: u32 = 0;
    pub const OWNER_STANDARD: u32 = 4;
    pub const OWNER_VENDOR_HYP: u32 = 6;

    /// `SMCCC_VERSION`: answered by warden.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// `SMCCC_ARCH_FEATURES`.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// Version warden implements: SMCCC v1.1.
    pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;

    /// Generic SMCCC return value for an unknown function ID (-1).
    pub const NOT_SUPPORTED: i64 = -1;

    /// Owner field of a function ID.
    pub const fn owner(function_id: u32) -> u32 {
        (function_id >> 24) & 0x3f
    }

    /// Function number (bits 15:0).
    pub const fn number(function_id: u32) -> u32 {
        function_id & 0xffff
    }

    /// Whether the ID uses the 64-bit convention.
    pub const fn is_64(function_id: u32) -> bool {
        function_id & CONV_64 != 0
    }

    /// Builds a fast-call function ID.
    pub const fn fast_call(conv64: bool, owner: u32, number: u32) -> u32 {
        FAST_CALL | if conv64 { CONV_64 } else { 0 } | ((owner & 0x3f) << 24) | (number & 0xffff)
    }
}

/// PSCI (DEN0022) function IDs and return codes that warden mediates.
pub mod psci {
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_32: u32 = 0x8400_0003;
    pub const CPU_ON_64: u32 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
    pub const SYSTEM_RESET2_32: u32 = 0x8400_0012;
    pub const SYSTEM_RESET2_64: u32 = 0xC400_0012;

    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INTERNAL_FAILURE: i64 = -6;
    pub const NOT_PRESENT: i64 = -7;
    pub const DISABLED: i64 = -8;
    pub const INVALID_ADDRESS: i64 = -9;

    /// AFFINITY_INFO results.
    pub const AFFINITY_ON: i64 = 0;
    pub const AFFINITY_OFF: i64 = 1;
    pub const AFFINITY_ON_PENDING: i64 = 2;
}

/// warden's own calls (Vendor Specific Hypervisor Service, owner 6).
pub mod hyp {
    use super::smccc::{OWNER_VENDOR_HYP, fast_call};

    /// Standard "call count" query of the service range.
    pub const CALL_COUNT: u32 = fast_call(false, OWNER_VENDOR_HYP, 0xFF00);
    /// Standard "call UID" query: returns [`UID`] in x0..x3.
    pub const CALL_UID: u32 = fast_call(false, OWNER_VENDOR_HYP, 0xFF01);
    /// Standard "revision" query: returns (major, minor) of the ABI in x0, x1.
    pub const REVISION: u32 = fast_call(false, OWNER_VENDOR_HYP, 0xFF03);

    /// `WARDEN_ABI_VERSION`: x0 = (major << 16) | minor.
    pub const ABI_VERSION: u32 = fast_call(false, OWNER_VENDOR_HYP, 0x0001);

    pub const ABI_MAJOR: u64 = 0;
    pub const ABI_MINOR: u64 = 2;

    /// UUID identifying warden's service (x0..x3, each carrying 32 bits, as SMCCC specifies).
    /// 5761_7264 "Ward", 656e "en"... chosen once; never change it.
    pub const UID: [u32; 4] = [0x5761_7264, 0x656e_4c32, 0x8f1d_4e0b, 0x9c3a_7d21];

    /// Number of warden calls implemented in this ABI version (answer to [`CALL_COUNT`]): every
    /// call of [`crate::calls::WardenCall::ALL`] (`ABI_VERSION`, the nine carveout/violation
    /// calls of [`crate::handoff::CALLS`], `PEER_COMMAND`, `PEER_DONE`, `TRAP_STATS` and
    /// `SMMU_STATS`), not the service-range queries themselves.
    pub const IMPLEMENTED_CALLS: u64 = crate::calls::WardenCall::ALL.len() as u64;

    /// Packed ABI version as returned by [`ABI_VERSION`].
    pub const fn packed_version() -> u64 {
        (ABI_MAJOR << 16) | ABI_MINOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_id_fields_round_trip() {
        assert_eq!(hyp::ABI_VERSION, 0x8600_0001);
        assert_eq!(smccc::owner(hyp::ABI_VERSION), smccc::OWNER_VENDOR_HYP);
        assert_eq!(smccc::owner(psci::CPU_ON_64), smccc::OWNER_STANDARD);
        assert!(smccc::is_64(psci::CPU_ON_64));
        assert!(!smccc::is_64(psci::CPU_ON_32));
        assert_eq!(smccc::number(hyp::CALL_UID), 0xFF01);
        assert_eq!(smccc::fast_call(true, 4, 3), psci::CPU_ON_64);
    }
}
