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
//!
//! **The virtual SMMU's fast path** ([`fast_mmio`], used by the integration's `lower_sync`
//! before the full handler): a data abort on the virtual SMMU's register pages is recognised by
//! one range check on HPFAR_EL2's page, then its syndrome is decoded once, straight from the
//! ESR bits, into the same [`MmioAccess`] that [`super::mmio::decode`] gives, and only for the
//! plain case: an A64 32- or 64-bit load or store with a valid syndrome (ISV = 1), no sign
//! extension, a stage-2 translation fault with HPFAR valid. Everything else (ISV = 0, other
//! sizes, sign extension, cache maintenance, S1PTW, AArch32, other fault kinds) returns
//! `None` and takes the full path, which decodes and refuses it as before
//! (`fast_mmio_agrees_with_the_full_decode` checks the two decoders on every syndrome shape).

use warden_abi::hyp;

use super::TrapFrame;
use super::esr::{Esr, ExceptionClass, dabt, fault_ipa};
use super::inject::spsr;
use super::mmio::MmioAccess;
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

/// ESR_EL2 bits the fast MMIO path requires as they are: EC = DABT_LOW, IL = 1, ISV = 1,
/// and SSE, VNCR, FnV, CM, S1PTW all 0.
const FAST_DABT_MASK: u64 = (0x3f << 26)
    | (1 << 25)
    | (dabt::ISV | dabt::SSE | dabt::VNCR | dabt::FNV | dabt::CM | dabt::S1PTW) as u64;
const FAST_DABT_VALUE: u64 = (0x24 << 26) | (1 << 25) | dabt::ISV as u64;
/// DFSC 0b0001xx: translation fault, level 0 to 3 (HPFAR_EL2 holds the IPA).
const DFSC_TRANSLATION_MASK: u64 = 0x3c;
const DFSC_TRANSLATION: u64 = 0x04;

/// The page of the IPA a stage-2 abort reports in HPFAR_EL2 (valid only for the aborts
/// [`fast_mmio`] accepts; the caller's range check on it is a filter, not a proof).
#[inline(always)]
pub const fn hpfar_page(hpfar: u64) -> u64 {
    fault_ipa(hpfar, 0)
}

/// The 32- or 64-bit access a plain trapped load or store in `frame` makes, or `None` for
/// anything the full path must decode (see the module documentation). What it returns is
/// exactly what [`super::mmio::decode`] returns for the same frame.
#[inline(always)]
pub fn fast_mmio(frame: &TrapFrame) -> Option<MmioAccess> {
    let esr = frame.esr;
    if esr & FAST_DABT_MASK != FAST_DABT_VALUE
        || esr & DFSC_TRANSLATION_MASK != DFSC_TRANSLATION
        || frame.spsr & spsr::M_AARCH32 != 0
    {
        return None;
    }
    let sas = (esr >> dabt::SAS_SHIFT) & 3;
    let reg_64 = esr & u64::from(dabt::SF) != 0;
    // SAS 2 (4 bytes, into Wn) or 3 (8 bytes, into Xn); a 4-byte access with SF = 1 needs
    // sign extension (excluded above), so it is left to the full decoder too.
    let size: u8 = match (sas, reg_64) {
        (2, false) => 4,
        (3, true) => 8,
        _ => return None,
    };
    let write = esr & u64::from(dabt::WNR) != 0;
    let srt = ((esr >> dabt::SRT_SHIFT) & 0x1f) as u8;
    let value = if write {
        let data = frame.x.get(usize::from(srt)).copied().unwrap_or(0);
        if size == 8 { data } else { data & 0xffff_ffff }
    } else {
        0
    };
    Some(MmioAccess {
        ipa: fault_ipa(frame.hpfar, frame.far),
        size,
        write,
        value,
        srt,
        sign_extend: false,
        reg_64,
    })
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

    /// Every syndrome shape a data abort can have (the ISS bits the decoders look at, both
    /// sizes of register, AArch64 and AArch32, every fault code): when the fast decoder accepts
    /// one, the full decoder gives the same access, a 32- or 64-bit one; when it refuses one,
    /// the full path decides (nothing is lost: the fast path only saves work).
    #[test]
    fn fast_mmio_agrees_with_the_full_decode() {
        let mut accepted = 0;
        let flags = [
            dabt::ISV,
            dabt::SSE,
            dabt::SF,
            dabt::VNCR,
            dabt::FNV,
            dabt::CM,
            dabt::S1PTW,
            dabt::WNR,
        ];
        for ec in [0x24u64, 0x25, 0x20, 0x16] {
            for il in [false, true] {
                for bits in 0u32..(1 << flags.len()) {
                    let mut iss = 0u32;
                    for (n, flag) in flags.iter().enumerate() {
                        if bits & (1 << n) != 0 {
                            iss |= flag;
                        }
                    }
                    for sas in 0..4u32 {
                        for dfsc in [0x04u32, 0x05, 0x06, 0x07, 0x09, 0x0d, 0x10, 0x21, 0x2b] {
                            for aarch32 in [false, true] {
                                let srt = (bits * 7 + sas) % 32;
                                let iss = iss
                                    | (sas << dabt::SAS_SHIFT)
                                    | (srt << dabt::SRT_SHIFT)
                                    | dfsc;
                                let mut f = TrapFrame {
                                    esr: (ec << 26) | (u64::from(il) << 25) | u64::from(iss),
                                    far: 0xffff_0000_1234_5678,
                                    hpfar: (0x0905_0000u64 >> 12) << 4,
                                    spsr: if aarch32 { spsr::M_AARCH32 } else { 0x3c5 },
                                    ..TrapFrame::default()
                                };
                                for (i, x) in f.x.iter_mut().enumerate() {
                                    *x = 0x8877_6655_4433_2211 ^ (i as u64 * 0x0101);
                                }
                                let full = super::super::mmio::decode(&f);
                                match fast_mmio(&f) {
                                    Some(access) => {
                                        accepted += 1;
                                        assert_eq!(full, Ok(access), "ESR {:#x}", f.esr);
                                        assert!(access.size == 4 || access.size == 8);
                                        assert_eq!(access.ipa, 0x0905_0678);
                                    }
                                    None => {
                                        // Refused by the fast decoder: the full one either
                                        // refuses it or it is an access the fast path leaves
                                        // to it on purpose (not a translation fault, 1 or 2
                                        // bytes, sign extension).
                                        if let Ok(a) = full {
                                            let translation = dfsc & 0x3c == 0x04;
                                            assert!(
                                                !translation
                                                    || a.size < 4
                                                    || a.sign_extend
                                                    || (a.size == 4 && a.reg_64),
                                                "ESR {:#x}: {a}",
                                                f.esr
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Loads and stores of W and X registers at four translation levels.
        assert_eq!(accepted, 2 * 2 * 4, "the plain accesses are accepted");
    }

    /// The syndromes QEMU gives for Linux's and the test guest's accesses to the SMMU.
    #[test]
    fn fast_mmio_literal_syndromes() {
        let frame = |esr: u64, far: u64| {
            let mut f = TrapFrame {
                esr,
                far,
                hpfar: (0x0905_0000u64 >> 12) << 4,
                spsr: 0x3c5,
                ..TrapFrame::default()
            };
            f.x[1] = 0xdead_beef_c600_0020;
            f
        };
        // `str x1, [x0, #0x40]`: 8-byte store from x1.
        let a = fast_mmio(&frame(0x93c1_8047, 0x40)).unwrap();
        assert_eq!(
            (a.ipa, a.size, a.write, a.value, a.srt),
            (0x0905_0040, 8, true, 0xdead_beef_c600_0020, 1)
        );
        // `str w1, [x0, #0x98]` (CMDQ_PROD): the W register's low half only.
        let a = fast_mmio(&frame(0x9381_0047, 0x98)).unwrap();
        assert_eq!((a.size, a.write, a.value, a.reg_64), (4, true, 0xc600_0020, false));
        // `ldr w3, [x0]` (IDR0).
        let a = fast_mmio(&frame(0x9383_0007, 0)).unwrap();
        assert_eq!((a.size, a.write, a.srt, a.value), (4, false, 3, 0));
        // ISV = 0 (`ldp`), a byte load, an AArch32 host: the full path.
        assert_eq!(fast_mmio(&frame(0x9200_0007, 0)), None);
        assert_eq!(fast_mmio(&frame(0x9303_0007, 0)), None);
        let mut f = frame(0x9383_0007, 0);
        f.spsr = spsr::M_AARCH32 | 0x13;
        assert_eq!(fast_mmio(&f), None);
        // A permission fault (a mapped page) is not the absent SMMU window: the full path.
        assert_eq!(fast_mmio(&frame(0x9383_000f, 0)), None);
        assert_eq!(hpfar_page((0x0905_1000u64 >> 12) << 4), 0x0905_1000);
    }
}
