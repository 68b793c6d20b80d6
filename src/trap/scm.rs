//! The Qualcomm SCM dispatcher: the one place where the host's SiP-service SMCCC calls (owner
//! 2, trapped by HCR_EL2.TSC, or HVC) are decoded and answered, on the Snapdragon persona.
//!
//! Qualcomm's "ARM SMC" convention (Linux `drivers/firmware/qcom/qcom_scm-smc.c`): the function
//! ID is an SMCCC SiP ID whose number is `svc << 8 | cmd`, fast (atomic calls) or yielding
//! (the others), SMC32 or SMC64; x1 is `arginfo` (argument count in bits [3:0], argument types
//! above it), x2..x5 the first four arguments (x5 points at a buffer holding the rest when
//! there are more than four). The answer: x0 a status (0 success, negative errors, 1
//! INTERRUPTED, 2 WAITQ_SLEEP), x1..x3 results.
//!
//! What Linux's `qcom_scm` probe and `arm-smmu-qcom` need on the persona:
//! - **convention detection** (`__get_convention`): INFO / IS_CALL_AVAIL (svc 0x06, cmd 0x01) as
//!   a fast SMC64 call, asking about itself. Answered: success, 1 — so Linux settles on
//!   "smc arm 64" (and never tries the SMC32 or the legacy convention);
//! - **IS_CALL_AVAIL** for any call: answered truthfully, 1 exactly for the calls this
//!   dispatcher implements ([`ScmFunction::ALL`]), 0 for everything else;
//! - `arm-smmu-qcom` on `qcom,sc7280-smmu-500` only checks `qcom_scm_is_available()` (no SMC).
//!
//! Every other SiP call gets QCOM_SCM_EOPNOTSUPP (-4, Linux's -EOPNOTSUPP) on QEMU, where no
//! firmware below implements SCM. The SCM issue adds assign_mem (MP 0x0C / 0x16) and the PAS
//! calls (PIL 0x02) as further [`ScmFunction`]s with their handlers in [`dispatch`] (and makes
//! IS_CALL_AVAIL say so, since it reads the same list), and forwards the rest to a board's
//! firmware when it has SCM.

use warden_abi::smccc;

use super::smccc::{SmcccCall, SmcccReturn};

/// SMCCC owner of the SiP service range (Qualcomm's SCM).
pub const OWNER_SIP: u32 = 2;

/// SCM services (Linux `qcom_scm.h`).
pub mod svc {
    pub const BOOT: u8 = 0x01;
    pub const PIL: u8 = 0x02;
    pub const INFO: u8 = 0x06;
    pub const MP: u8 = 0x0c;
}

/// INFO commands.
pub const INFO_IS_CALL_AVAIL: u8 = 0x01;

/// SCM status codes in x0 (Linux `qcom_scm.h`; negative ones are sign-extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum ScmStatus {
    Success = 0,
    Error = -1,
    InvalidArgument = -2,
    InvalidAddress = -3,
    NotSupported = -4,
    NoMemory = -5,
    Busy = -12,
    Interrupted = 1,
    WaitQueueSleep = 2,
}

/// One decoded SCM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScmCall {
    pub svc: u8,
    pub cmd: u8,
    pub smc64: bool,
    pub fast: bool,
    /// x1: argument count in bits [3:0], then two bits of type per argument.
    pub arginfo: u32,
    /// x2..x5.
    pub args: [u64; 4],
}

impl ScmCall {
    /// The call, if `call` is a SiP-service call in Qualcomm's ARM SMC convention (function
    /// number bits [15:0], bits [23:16] zero).
    pub fn decode(call: &SmcccCall) -> Option<Self> {
        let fid = call.function_id;
        if smccc::owner(fid) != OWNER_SIP || fid & 0x00ff_0000 != 0 {
            return None;
        }
        let smc64 = smccc::is_64(fid);
        let narrow = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
        let r = &call.regs;
        Some(ScmCall {
            svc: (fid >> 8) as u8,
            cmd: fid as u8,
            smc64,
            fast: fid & smccc::FAST_CALL != 0,
            arginfo: r[1] as u32,
            args: [narrow(r[2]), narrow(r[3]), narrow(r[4]), narrow(r[5])],
        })
    }

    /// Number of arguments arginfo announces.
    pub fn arg_count(&self) -> u32 {
        self.arginfo & 0xf
    }
}

/// The SCM calls warden implements (IS_CALL_AVAIL answers 1 for exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScmFunction {
    IsCallAvailable,
}

impl ScmFunction {
    pub const ALL: &'static [ScmFunction] = &[ScmFunction::IsCallAvailable];

    pub const fn ids(self) -> (u8, u8) {
        match self {
            ScmFunction::IsCallAvailable => (svc::INFO, INFO_IS_CALL_AVAIL),
        }
    }

    pub fn from_ids(svc: u8, cmd: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.ids() == (svc, cmd))
    }
}

/// The answer to an SCM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScmResult {
    pub status: ScmStatus,
    pub results: [u64; 3],
}

impl ScmResult {
    pub const fn ok(results: [u64; 3]) -> Self {
        ScmResult { status: ScmStatus::Success, results }
    }

    pub const fn status(status: ScmStatus) -> Self {
        ScmResult { status, results: [0; 3] }
    }

    /// x0..x3 as the host reads them.
    pub fn to_return(self) -> SmcccReturn {
        let [a, b, c] = self.results;
        SmcccReturn::x0_to_x3([self.status as i64 as u64, a, b, c])
    }
}

/// Answers one SCM call (see the module documentation).
pub fn dispatch(call: &ScmCall) -> ScmResult {
    match ScmFunction::from_ids(call.svc, call.cmd) {
        Some(ScmFunction::IsCallAvailable) => is_call_available(call),
        None => {
            log::debug!(
                "SCM: svc {:#04x} cmd {:#04x} not implemented (EOPNOTSUPP)",
                call.svc,
                call.cmd
            );
            ScmResult::status(ScmStatus::NotSupported)
        }
    }
}

/// IS_CALL_AVAIL(fnid): `fnid` is `owner << 24 | svc << 8 | cmd` (the ARM SMC conventions;
/// the legacy one never gets here, as convention detection picks SMC64).
fn is_call_available(call: &ScmCall) -> ScmResult {
    if call.arg_count() != 1 {
        return ScmResult::status(ScmStatus::InvalidArgument);
    }
    let fnid = call.args[0];
    let owner = (fnid >> 24) & 0x3f;
    let known = owner == u64::from(OWNER_SIP)
        && fnid & !0x3f00_ffff == 0
        && ScmFunction::from_ids((fnid >> 8) as u8, fnid as u8).is_some();
    ScmResult::ok([u64::from(known), 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(fid: u32, x: [u64; 5]) -> SmcccCall {
        let mut regs = [0u64; 31];
        regs[0] = u64::from(fid);
        regs[1..6].copy_from_slice(&x);
        SmcccCall::from_regs(&regs)
    }

    fn answer(fid: u32, x: [u64; 5]) -> Option<[u64; 4]> {
        let c = ScmCall::decode(&call(fid, x))?;
        let mut regs = [0xaau64; 31];
        dispatch(&c).to_return().apply(&mut regs);
        Some([regs[0], regs[1], regs[2], regs[3]])
    }

    /// Linux's `__get_convention`: fast SMC64 IS_CALL_AVAIL about itself, arginfo 1.
    #[test]
    fn convention_detection_finds_smc64() {
        let itself = 0x0200_0601;
        assert_eq!(answer(0xc200_0601, [1, itself, 0, 0, 0]), Some([0, 1, 0, 0]));
    }

    #[test]
    fn is_call_available_is_truthful() {
        // Yielding (non-atomic) calls, as qcom_scm_call makes them.
        let ask =
            |svc: u64, cmd: u64| answer(0x4200_0601, [1, (2 << 24) | (svc << 8) | cmd, 0, 0, 0]);
        assert_eq!(ask(0x06, 0x01), Some([0, 1, 0, 0]));
        // assign_mem, PAS init_image, download mode, wait-for-safe toggle: not (yet) ours.
        for (svc, cmd) in [(0x0c, 0x16), (0x02, 0x01), (0x01, 0x10), (0x0c, 0x17)] {
            assert_eq!(ask(svc, cmd), Some([0, 0, 0, 0]), "{svc:#x}/{cmd:#x}");
        }
        // Another owner's function, or reserved bits: not available.
        assert_eq!(answer(0x4200_0601, [1, (3 << 24) | 0x601, 0, 0, 0]), Some([0, 0, 0, 0]));
        assert_eq!(
            answer(0x4200_0601, [1, (2 << 24) | (1 << 16) | 0x601, 0, 0, 0]),
            Some([0, 0, 0, 0])
        );
        // Wrong argument count.
        assert_eq!(answer(0x4200_0601, [2, 0x0200_0601, 0, 0, 0]), Some([(-2i64) as u64, 0, 0, 0]));
    }

    #[test]
    fn unimplemented_calls_are_eopnotsupp_and_smc32_args_are_narrowed() {
        assert_eq!(answer(0x4200_0c16, [7, 1, 2, 3, 4]), Some([(-4i64) as u64, 0, 0, 0]));
        let c = ScmCall::decode(&call(0x8200_0601, [1, 0xffff_ffff_0200_0601, 0, 0, 0])).unwrap();
        assert!(!c.smc64 && c.fast);
        assert_eq!(c.args[0], 0x0200_0601);
        assert_eq!(dispatch(&c).results[0], 1);
    }

    #[test]
    fn only_sip_calls_in_the_arm_smc_convention_decode() {
        for fid in [0xc600_0601u32, 0x8400_0000, 0xc201_0601, 0xf200_0603] {
            assert_eq!(ScmCall::decode(&call(fid, [0; 5])), None, "{fid:#x}");
        }
    }
}
