//! The call fast path: the SMCCC calls whose answer is a constant, answered from the registers
//! the vector saved first, with no [`super::TrapFrame`] (issue 16).
//!
//! The lower-EL synchronous vector (`arch/aarch64/vectors.S`) sends an HVC or SMC64 to a short
//! body that saves only what a Rust call may clobber: x0–x18 (the SMCCC arguments and results
//! and the AAPCS64 temporaries; Rust preserves x19–x29) and x30, into the slots the full frame
//! gives them ([`CallRegs`] is the frame's first 19 words). The integration's `lower_call`
//! looks the call up here; when it is not a [`FastCall`] (or warden cannot answer it there: a
//! panic, the simulated peer's CPU) the vector saves the rest of the frame and runs the full
//! path ([`super::TrapHandler::handle_lower_sync`]), which still takes every call that needs
//! the whole frame, the caller or the platform: PSCI (`CPU_ON` and the power calls), warden's
//! carveout, violation, peer and statistics calls (logged, checked against the caller), the
//! Arm architecture calls (`SMCCC_VERSION` and `SMCCC_ARCH_FEATURES` are refused to a peer),
//! SCM, and any call with an immediate other than 0.
//!
//! What is fast is the vendor hypervisor service's own queries (`ABI_VERSION`, `CALL_COUNT`,
//! `CALL_UID`, `REVISION`): the same answer for every caller, from [`super::smccc::route`]'s
//! own function, so the two paths cannot disagree (`fast_and_full_paths_answer_alike`).

use warden_abi::hyp;

use super::esr::{Esr, ExceptionClass};
use super::smccc::{self, SmcccReturn};

/// The registers the fast path saved: x0..x18, in the [`super::TrapFrame`]'s first words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRegs {
    pub x: [u64; 19],
}

const _: () = assert!(core::mem::offset_of!(super::TrapFrame, x) == 0);

/// A call the fast path answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastCall {
    function_id: u32,
    /// A trapped SMC returns past the `SMC` (its preferred return address is the SMC itself);
    /// an HVC's ELR already points past it.
    pub skips_instruction: bool,
}

/// The dispatch table: function IDs answered on the fast path. Each is a constant query of
/// the vendor hypervisor service that any caller may make.
pub const FAST_FUNCTION_IDS: [u32; 4] =
    [hyp::ABI_VERSION, hyp::CALL_COUNT, hyp::CALL_UID, hyp::REVISION];

impl FastCall {
    /// The fast call `esr` and the function ID in x0 make, if it is one: an HVC64 or trapped
    /// SMC64 with immediate 0 whose w0 is in [`FAST_FUNCTION_IDS`].
    #[inline(always)]
    pub fn lookup(esr: Esr, x0: u64) -> Option<FastCall> {
        let skips_instruction = match esr.class() {
            ExceptionClass::Hvc64 => false,
            ExceptionClass::Smc64 => true,
            _ => return None,
        };
        // SMCCC calls use immediate 0; the function ID is w0 (the full path reads it so too).
        let function_id = x0 as u32;
        if esr.imm16() != 0 || !FAST_FUNCTION_IDS.contains(&function_id) {
            return None;
        }
        Some(FastCall { function_id, skips_instruction })
    }

    /// Writes the answer into the call's result registers (x0.., as the full path would).
    #[inline(always)]
    pub fn answer(self, regs: &mut CallRegs) {
        let result: SmcccReturn = smccc::hyp_query(self.function_id);
        result.apply(&mut regs.x);
    }
}

#[cfg(test)]
mod tests {
    use super::super::TrapHandler;
    use super::super::fake::{FakeEl3, FakePlatform};
    use super::super::frame::TrapFrame;
    use super::super::psci::Psci;
    use super::*;
    use alloc::sync::Arc;
    use warden_abi::handoff::Caller;
    use warden_abi::{psci as psci_abi, smccc as smccc_abi};

    const HVC: Esr = Esr(0x5a00_0000);
    const SMC: Esr = Esr(0x5e00_0000);

    fn frame(esr: Esr, x0: u64) -> TrapFrame {
        let mut f = TrapFrame { esr: esr.0, elr: 0x8000_1000, ..TrapFrame::default() };
        for (i, x) in f.x.iter_mut().enumerate() {
            *x = 0x1111 * (i as u64 + 1);
        }
        f.x[0] = x0;
        f
    }

    fn regs_of(f: &TrapFrame) -> CallRegs {
        let mut r = CallRegs::default();
        r.x.copy_from_slice(&f.x[..19]);
        r
    }

    /// Every fast call, as HVC and SMC, from the host and from a peer: the fast path leaves in
    /// x0..x18 exactly what the full path leaves, and moves ELR as it does.
    #[test]
    fn fast_and_full_paths_answer_alike() {
        let el3 = Arc::new(FakeEl3::qemu());
        let handler = TrapHandler::new(Psci::new(&[0, 1], 0).unwrap());
        for caller in [Caller::Host, Caller::Peer(warden_abi::handoff::PeerId::MODEM)] {
            let mut p = FakePlatform::new(0, el3.clone());
            p.caller = caller;
            for fid in FAST_FUNCTION_IDS {
                for esr in [HVC, SMC] {
                    let mut full = frame(esr, u64::from(fid));
                    let mut fast = regs_of(&full);
                    let call = FastCall::lookup(esr, fast.x[0]).expect("a fast call");
                    call.answer(&mut fast);
                    handler.handle_lower_sync(&mut full, &mut p);
                    assert_eq!(fast.x[..], full.x[..19], "fid {fid:#x} esr {esr:?}");
                    let skipped = if call.skips_instruction { 4 } else { 0 };
                    assert_eq!(0x8000_1000 + skipped, full.elr, "fid {fid:#x} esr {esr:?}");
                }
            }
            assert!(p.el1_writes.is_empty());
        }
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn the_answers_are_the_hypervisor_services() {
        let mut r = regs_of(&frame(HVC, u64::from(hyp::ABI_VERSION)));
        FastCall::lookup(HVC, r.x[0]).unwrap().answer(&mut r);
        assert_eq!(r.x[0], hyp::packed_version());
        assert_eq!(r.x[1], 0x2222, "ABI_VERSION answers in x0 only");
        let mut r = regs_of(&frame(HVC, u64::from(hyp::CALL_UID)));
        FastCall::lookup(HVC, r.x[0]).unwrap().answer(&mut r);
        assert_eq!(r.x[..4], hyp::UID.map(u64::from));
        assert_eq!(r.x[4..], regs_of(&frame(HVC, 0)).x[4..]);
    }

    /// Calls that need the frame, the caller or the platform never take the fast path.
    #[test]
    fn everything_else_takes_the_full_path() {
        let full_path = [
            psci_abi::CPU_ON_64,
            psci_abi::PSCI_VERSION,
            psci_abi::SYSTEM_OFF,
            smccc_abi::SMCCC_VERSION,
            smccc_abi::SMCCC_ARCH_FEATURES,
            hyp::ABI_VERSION ^ smccc_abi::CONV_64,
            0xC600_7777,
            0,
        ];
        for fid in full_path.into_iter().chain(
            warden_abi::calls::WardenCall::ALL
                .iter()
                .map(|c| c.function_id())
                .filter(|f| *f != hyp::ABI_VERSION),
        ) {
            assert_eq!(FastCall::lookup(HVC, u64::from(fid)), None, "fid {fid:#x}");
            assert_eq!(FastCall::lookup(SMC, u64::from(fid)), None, "fid {fid:#x}");
        }
        // An immediate other than 0 is not an SMCCC call.
        assert_eq!(FastCall::lookup(Esr(HVC.0 | 1), u64::from(hyp::ABI_VERSION)), None);
        assert_eq!(FastCall::lookup(Esr(SMC.0 | 0x8000), u64::from(hyp::ABI_VERSION)), None);
        // Neither is any other exception class (a data abort whose x0 happens to match).
        for ec in [0x24u64, 0x20, 0x13, 0x17 ^ 0x20, 0x01] {
            assert_eq!(FastCall::lookup(Esr(ec << 26), u64::from(hyp::ABI_VERSION)), None);
        }
        // The ID is w0: upper bits of x0 do not hide a fast call, nor make one.
        let x0 = (0xdead_u64 << 32) | u64::from(hyp::ABI_VERSION);
        assert!(FastCall::lookup(HVC, x0).is_some());
    }
}
