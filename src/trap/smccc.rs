//! The SMCCC router for HVC and trapped SMC from the host.
//!
//! warden answers its own calls (owner 6) and the SMCCC architecture queries, mediates PSCI
//! (see [`super::psci`]) and forwards the Arm workaround calls only to firmware that implements
//! SMCCC. Every other function ID gets `NOT_SUPPORTED` (-1) in x0 and nothing else changes: the
//! SMCCC defines only x0 for that result.

use warden_abi::{hyp, smccc};

use super::Platform;
use super::psci::Psci;
use crate::boards::Firmware;

/// SMCCC_ARCH_WORKAROUND_1 (CVE-2017-5715, branch predictor invalidation).
pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
/// SMCCC_ARCH_WORKAROUND_2 (CVE-2018-3639, speculative store bypass).
pub const ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
/// SMCCC_ARCH_WORKAROUND_3 (CVE-2022-23960, branch history).
pub const ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;

const ARCH_WORKAROUNDS: [u32; 3] = [ARCH_WORKAROUND_1, ARCH_WORKAROUND_2, ARCH_WORKAROUND_3];

/// A call as the host made it: the function ID from w0 and x1..x3 (and x0..x7 as they were,
/// for warden's own calls, whose decoders check every register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmcccCall {
    pub function_id: u32,
    /// x1..x3; for SMC32/HVC32 calls the upper 32 bits are cleared (the SMCCC says the callee
    /// must ignore them).
    pub args: [u64; 3],
    /// x0..x7 untouched.
    pub regs: [u64; 8],
}

impl SmcccCall {
    /// Reads a call from the host's registers.
    pub fn from_regs(x: &[u64; 31]) -> Self {
        let function_id = x[0] as u32;
        let mut args = [x[1], x[2], x[3]];
        if !smccc::is_64(function_id) {
            for arg in &mut args {
                *arg &= 0xffff_ffff;
            }
        }
        let regs = [x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]];
        SmcccCall { function_id, args, regs }
    }
}

/// The registers a call returns in: `values[..count]` go to x0..; the others are untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmcccReturn {
    values: [u64; 8],
    count: usize,
}

impl SmcccReturn {
    /// Only x0, a signed status or value (stored sign-extended, as SMCCC callers compare it).
    pub const fn x0(value: i64) -> Self {
        SmcccReturn { values: [value as u64, 0, 0, 0, 0, 0, 0, 0], count: 1 }
    }

    pub const fn x0_x1(x0: u64, x1: u64) -> Self {
        SmcccReturn { values: [x0, x1, 0, 0, 0, 0, 0, 0], count: 2 }
    }

    pub const fn x0_to_x3(values: [u64; 4]) -> Self {
        let [a, b, c, d] = values;
        SmcccReturn { values: [a, b, c, d, 0, 0, 0, 0], count: 4 }
    }

    /// All of x0..x7 (warden's carveout and peer calls: unused registers are written as zero).
    pub const fn x0_to_x7(values: [u64; 8]) -> Self {
        SmcccReturn { values, count: 8 }
    }

    /// A warden call's error: the code in x0, x1..x7 zeroed.
    pub const fn abi_error(error: warden_abi::AbiError) -> Self {
        Self::x0_to_x7(warden_abi::handoff::encode_error(error))
    }

    pub const fn not_supported() -> Self {
        Self::x0(smccc::NOT_SUPPORTED)
    }

    /// The values written, in register order.
    pub fn values(&self) -> &[u64] {
        self.values.get(..self.count).unwrap_or(&[])
    }

    /// Writes the result into the host's x0.. registers (a full frame's, or the fast path's
    /// x0..x18).
    #[inline(always)]
    pub fn apply(&self, x: &mut [u64]) {
        for (reg, value) in x.iter_mut().zip(self.values()) {
            *reg = *value;
        }
    }
}

/// Routes one call. Does not touch ELR (the conduit decides that).
pub fn route<P: Platform + ?Sized>(call: &SmcccCall, psci: &Psci, platform: &mut P) -> SmcccReturn {
    let fid = call.function_id;
    let [a1, ..] = call.args;
    match smccc::owner(fid) {
        smccc::OWNER_VENDOR_HYP => hyp_query(fid),
        smccc::OWNER_STANDARD if fid & smccc::FAST_CALL != 0 && is_psci_range(fid) => {
            SmcccReturn::x0(psci.handle(fid, call.args, platform))
        }
        smccc::OWNER_ARCH => match fid {
            smccc::SMCCC_VERSION => SmcccReturn::x0(smccc::SMCCC_VERSION_1_1 as i64),
            smccc::SMCCC_ARCH_FEATURES => arch_features(a1 as u32, platform),
            w if ARCH_WORKAROUNDS.contains(&w) => {
                forward_smccc(platform, [u64::from(fid), a1, 0, 0])
            }
            _ => SmcccReturn::not_supported(),
        },
        // The Snapdragon persona, or a board whose firmware is Qualcomm's TZ: the host reaches
        // it through warden's SCM dispatcher (assign_mem mediated and forwarded).
        super::scm::OWNER_SIP if platform.persona().has_scm() || platform.board().scm_firmware => {
            match super::scm::ScmCall::decode(call) {
                Some(scm) => super::scm::dispatch(&scm, platform).to_return(),
                None => SmcccReturn::not_supported(),
            }
        }
        _ => SmcccReturn::not_supported(),
    }
}

/// PSCI owns function numbers 0x00..=0x1f of the standard service range.
fn is_psci_range(fid: u32) -> bool {
    smccc::number(fid) <= 0x1f
}

/// The vendor hypervisor service's queries (the same answer for every caller; the call fast
/// path, [`super::fast`], answers them with this too).
#[inline(always)]
pub fn hyp_query(fid: u32) -> SmcccReturn {
    match fid {
        hyp::ABI_VERSION => SmcccReturn::x0(hyp::packed_version() as i64),
        hyp::CALL_COUNT => SmcccReturn::x0(hyp::IMPLEMENTED_CALLS as i64),
        hyp::CALL_UID => SmcccReturn::x0_to_x3(hyp::UID.map(u64::from)),
        hyp::REVISION => SmcccReturn::x0_x1(hyp::ABI_MAJOR, hyp::ABI_MINOR),
        _ => SmcccReturn::not_supported(),
    }
}

fn arch_features<P: Platform + ?Sized>(queried: u32, platform: &mut P) -> SmcccReturn {
    match queried {
        smccc::SMCCC_VERSION | smccc::SMCCC_ARCH_FEATURES => SmcccReturn::x0(0),
        w if ARCH_WORKAROUNDS.contains(&w) => forward_smccc(
            platform,
            [u64::from(smccc::SMCCC_ARCH_FEATURES), u64::from(queried), 0, 0],
        ),
        _ => SmcccReturn::not_supported(),
    }
}

/// Forwards a non-PSCI call to EL3, only when the firmware implements SMCCC (QEMU's built-in
/// PSCI treats any other SMC from EL2 as UNDEFINED, which would fault warden itself).
fn forward_smccc<P: Platform + ?Sized>(platform: &mut P, args: [u64; 4]) -> SmcccReturn {
    match platform.board().firmware {
        Firmware::Smccc => SmcccReturn::x0(platform.smc_to_el3(args)[0] as i64),
        Firmware::QemuBuiltinPsci => SmcccReturn::not_supported(),
    }
}

/// Whether a function ID belongs to PSCI (owner 4, fast call, numbers 0..=0x1f): the only IDs
/// warden forwards to QEMU's built-in PSCI.
pub fn is_psci_id(fid: u32) -> bool {
    smccc::owner(fid) == smccc::OWNER_STANDARD && fid & smccc::FAST_CALL != 0 && is_psci_range(fid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::{Board, ViolationPolicy};
    use crate::trap::fake::{FakeEl3, FakePlatform};
    use alloc::sync::Arc;
    use alloc::vec;
    use warden_abi::psci;

    fn setup(firmware: Firmware) -> (Psci, Arc<FakeEl3>, FakePlatform) {
        let el3 = Arc::new(FakeEl3::qemu());
        let mut p = FakePlatform::new(0, el3.clone());
        p.board = Board {
            name: "test",
            entry: crate::boards::EntryConvention::LinuxImage,
            ram_source: crate::boards::RamSource::Dt,
            early_uart: 0,
            console: crate::boards::UartKind::Pl011,
            iommu: crate::boards::Iommu::SmmuV3,
            named_regions: &[],
            firmware,
            violation_policy: ViolationPolicy::Contain,
            sim_peer: false,
            control_page: None,
            scm_firmware: false,
            interrupt_controllers: &[crate::gic::GicVersion::V3],
            max_cpus: 8,
        };
        (Psci::new(&[0, 1], 0).unwrap(), el3, p)
    }

    fn regs(fid: u64, a: [u64; 3]) -> [u64; 31] {
        let mut x = [0xdead_0000u64; 31];
        x[0] = fid;
        x[1..4].copy_from_slice(&a);
        x
    }

    fn call(fid: u64, a: [u64; 3], psci: &Psci, p: &mut FakePlatform) -> [u64; 31] {
        let mut x = regs(fid, a);
        route(&SmcccCall::from_regs(&x), psci, p).apply(&mut x);
        x
    }

    /// SiP calls reach the SCM dispatcher on the Snapdragon persona or on a board whose
    /// firmware is Qualcomm's TZ (the chain's `qemu-virt-tz`, virt persona); elsewhere they are
    /// NOT_SUPPORTED. IS_CALL_AVAIL about itself answers 1 only from the dispatcher.
    #[test]
    fn sip_calls_reach_scm_with_a_persona_or_scm_firmware() {
        let avail = 0xc200_0601;
        let (psci, _, mut p) = setup(Firmware::Smccc);
        assert_eq!(call(avail, [1, 0x0200_0601, 0], &psci, &mut p)[0], u64::MAX, "virt");
        p.board.scm_firmware = true;
        assert_eq!(call(avail, [1, 0x0200_0601, 0], &psci, &mut p)[..2], [0, 1], "TZ below");
        p.board.scm_firmware = false;
        p.persona = crate::persona::Persona::Snapdragon;
        assert_eq!(call(avail, [1, 0x0200_0601, 0], &psci, &mut p)[..2], [0, 1], "snapdragon");
    }

    #[test]
    fn warden_calls() {
        let (psci, el3, mut p) = setup(Firmware::QemuBuiltinPsci);
        let x = call(u64::from(hyp::ABI_VERSION), [1, 2, 3], &psci, &mut p);
        assert_eq!(x[..4], [2, 1, 2, 3], "0.2");
        let x = call(u64::from(hyp::CALL_COUNT), [1, 2, 3], &psci, &mut p);
        assert_eq!(x[..4], [14, 1, 2, 3]);
        let x = call(u64::from(hyp::CALL_UID), [1, 2, 3], &psci, &mut p);
        assert_eq!(x[..4], [0x5761_7264, 0x656e_4c32, 0x8f1d_4e0b, 0x9c3a_7d21]);
        let x = call(u64::from(hyp::REVISION), [1, 2, 3], &psci, &mut p);
        assert_eq!(x[..4], [0, 2, 2, 3]);
        // The 64-bit-convention twin of a warden call is not a warden call.
        let x = call(u64::from(hyp::ABI_VERSION | smccc::CONV_64), [1, 2, 3], &psci, &mut p);
        assert_eq!(x[..4], [u64::MAX, 1, 2, 3]);
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn smccc_version_and_features() {
        let (psci, el3, mut p) = setup(Firmware::QemuBuiltinPsci);
        assert_eq!(call(0x8000_0000, [0; 3], &psci, &mut p)[0], 0x1_0001);
        let features = u64::from(smccc::SMCCC_ARCH_FEATURES);
        assert_eq!(call(features, [0x8000_0000, 0, 0], &psci, &mut p)[0], 0);
        assert_eq!(call(features, [features, 0, 0], &psci, &mut p)[0], 0);
        // Workarounds: QEMU's PSCI cannot answer, so NOT_SUPPORTED and nothing forwarded.
        for w in ARCH_WORKAROUNDS {
            assert_eq!(call(features, [u64::from(w), 0, 0], &psci, &mut p)[0], u64::MAX);
            assert_eq!(call(u64::from(w), [1, 0, 0], &psci, &mut p)[0], u64::MAX);
        }
        assert!(el3.calls().is_empty());
        // Unknown arch-features query.
        assert_eq!(call(features, [0x8000_0002, 0, 0], &psci, &mut p)[0], u64::MAX);
    }

    #[test]
    fn workarounds_forwarded_to_smccc_firmware() {
        let (psci, el3, mut p) = setup(Firmware::Smccc);
        let features = u64::from(smccc::SMCCC_ARCH_FEATURES);
        // Upper bits of the W-register argument are dropped before forwarding.
        let x = call(features, [0xffff_0000_8000_8000, 0, 0], &psci, &mut p);
        assert_eq!(x[0], 0);
        let x = call(u64::from(ARCH_WORKAROUND_2), [1, 5, 6], &psci, &mut p);
        assert_eq!(x[..4], [0, 1, 5, 6]);
        assert_eq!(
            el3.calls(),
            vec![[features, 0x8000_8000, 0, 0], [u64::from(ARCH_WORKAROUND_2), 1, 0, 0]]
        );
        // Other IDs are still not forwarded, even to SMCCC firmware.
        assert_eq!(call(0xC200_0001, [0; 3], &psci, &mut p)[0], u64::MAX);
        assert_eq!(el3.calls().len(), 2);
    }

    #[test]
    fn unknown_ids_leave_x1_to_x3() {
        let (psci, el3, mut p) = setup(Firmware::Smccc);
        for fid in [0xC600_1234u64, 0x8200_0000, 0xC300_0001, 0x0400_0003, 0x8400_0040, 0xBF00_0000]
        {
            let x = call(fid, [0x11, 0x22, 0x33], &psci, &mut p);
            assert_eq!(x[0], u64::MAX, "fid {fid:#x}");
            assert_eq!(x[1..4], [0x11, 0x22, 0x33]);
            assert_eq!(x[4], 0xdead_0000);
        }
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let call = SmcccCall::from_regs(&regs(
            0xffff_ffff_8400_0003,
            [0xabcd_0000_0000_0001, 0x1234_0000_4008_0000, 0xffff_ffff_ffff_ffff],
        ));
        assert_eq!(call.function_id, psci::CPU_ON_32);
        assert_eq!(call.args, [1, 0x4008_0000, 0xffff_ffff]);
        // SMC64 keeps all 64 bits.
        let call = SmcccCall::from_regs(&regs(0xC400_0003, [0x1_0000_0000, 2, 3]));
        assert_eq!(call.args, [0x1_0000_0000, 2, 3]);
        // End to end: CPU_ON_32 with garbage upper halves reaches EL3 clean.
        let (psci, el3, mut p) = setup(Firmware::QemuBuiltinPsci);
        let x = regs(u64::from(psci::CPU_ON_32), [0xabcd_0000_0000_0001, 0x1234_0000_4008_0000, 7]);
        let ret = route(&SmcccCall::from_regs(&x), &psci, &mut p);
        assert_eq!(ret.values(), [0]);
        assert_eq!(el3.calls()[0][..2], [u64::from(psci::CPU_ON_64), 1]);
    }

    #[test]
    fn psci_errors_are_sign_extended() {
        let (psci, _el3, mut p) = setup(Firmware::QemuBuiltinPsci);
        let x = call(u64::from(psci::CPU_ON_64), [7, 0x4008_0000, 0], &psci, &mut p);
        assert_eq!(x[0] as i64, psci::INVALID_PARAMETERS);
        assert_eq!(x[1..4], [7, 0x4008_0000, 0]);
    }

    #[test]
    fn psci_id_predicate() {
        assert!(is_psci_id(psci::CPU_ON_64));
        assert!(is_psci_id(psci::SYSTEM_RESET2_32));
        assert!(!is_psci_id(0x8400_0020));
        assert!(!is_psci_id(0x0400_0003));
        assert!(!is_psci_id(hyp::ABI_VERSION));
        assert!(!is_psci_id(ARCH_WORKAROUND_1));
    }
}
