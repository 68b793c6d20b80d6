//! The Gunyah exit (`boards::EntryConvention::UefiUnderGunyah`, RB3 Gen 2): the loader starts
//! warden at EL1 under Gunyah, Qualcomm's hypervisor; one SMC to TrustZone, w0 = 0x02000121,
//! w1 = 0x23, w2 = w3 = 0, w4 = 1 ([`crate::boards::GUNYAH_EXIT_SMC`]), tears Gunyah down and
//! continues the caller at EL2 with the SMMU in bypass (the call edk2-platforms' RB3 Gen 2 port
//! and U-Boot's `QCOM_EL2_GUNYAH_EXIT_SUPPORT` make; read, not copied). From there the boot is
//! warden's ordinary EL2 boot.
//!
//! The part that runs at EL1 is [`exit_gunyah`] and nothing else: read CurrentEL, clean
//! warden's image to PoC, make the SMC, read CurrentEL again. Its effects go through [`GunyahExit`] (the aarch64 implementation
//! is in `crate::boot`; the tests record the calls). Refused, with a message and no further
//! step: an exception level other than 1 or 2, the SMC answering anything but 0, still EL1
//! after an SMC that answered 0. Entered at EL2 already (firmware without Gunyah), no SMC is
//! made.
//!
//! Checked only against the recording fake: no RB3 Gen 2 has run this code, and what TZ
//! returns in x0 on failure (and whether a failed exit returns at all) is not documented; any
//! non-zero x0 is taken as a failure.
//!
//! Open on hardware: the exit runs from Rust on the EL1 stack (SP_EL1) and continues at EL2
//! on SP_EL2. Unless TrustZone returns with SP_EL2 equal to the caller's SP (not documented),
//! the call must move into the entry assembly, before the stack is set up, with only the
//! CurrentEL checks left here; the same holds for the caller's other registers beyond x0..x3.

use core::fmt;

use crate::boards::GUNYAH_EXIT_SMC;

/// What the exit needs of the CPU.
pub trait GunyahExit {
    /// CurrentEL's EL field (0..=3).
    fn current_el(&mut self) -> u8;
    /// Cleans warden's image to the Point of Coherency: what the EL1 code wrote through
    /// Gunyah's cacheable mapping (relocations, BSS) must be in memory for EL2, which starts
    /// with its MMU and caches off.
    fn clean_image_to_poc(&mut self);
    /// `smc #0` with x0..x4 as given (x5.. zero); returns x0.
    fn smc(&mut self, x: [u64; 5]) -> u64;
}

/// How warden got to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GunyahExitDone {
    /// It was started at EL1 and the SMC took it to EL2.
    Exited,
    /// It was started at EL2 (no Gunyah below): nothing done.
    AlreadyEl2,
}

/// Why the exit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GunyahExitError {
    /// Started at an exception level the convention does not have.
    UnexpectedEl { el: u8 },
    /// The SMC answered non-zero in x0.
    SmcFailed { x0: u64 },
    /// The SMC answered 0 but warden still runs at `el`.
    NotAtEl2 { el: u8 },
}

impl fmt::Display for GunyahExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEl { el } => {
                write!(f, "started at EL{el}: the UEFI loader starts warden at EL1 (under Gunyah)")
            }
            Self::SmcFailed { x0 } => write!(
                f,
                "the Gunyah-exit SMC (w0 = {:#x}) answered x0 = {x0:#x}: this TrustZone does not \
                 hand EL2 over",
                GUNYAH_EXIT_SMC[0]
            ),
            Self::NotAtEl2 { el } => {
                write!(f, "the Gunyah-exit SMC answered 0 but warden still runs at EL{el}")
            }
        }
    }
}

/// Leaves Gunyah for EL2 (see the module documentation). At EL1 this is the only code warden
/// runs before the SMC.
pub fn exit_gunyah(cpu: &mut impl GunyahExit) -> Result<GunyahExitDone, GunyahExitError> {
    match cpu.current_el() {
        2 => return Ok(GunyahExitDone::AlreadyEl2),
        1 => {}
        el => return Err(GunyahExitError::UnexpectedEl { el }),
    }
    cpu.clean_image_to_poc();
    let x0 = cpu.smc(GUNYAH_EXIT_SMC.map(u64::from));
    if x0 != 0 {
        return Err(GunyahExitError::SmcFailed { x0 });
    }
    match cpu.current_el() {
        2 => Ok(GunyahExitDone::Exited),
        el => Err(GunyahExitError::NotAtEl2 { el }),
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Call {
        CurrentEl,
        Clean,
        Smc([u64; 5]),
    }

    /// A CPU at `el`; the SMC answers `answer` and moves it to `el_after`.
    struct FakeCpu {
        el: u8,
        answer: u64,
        el_after: u8,
        calls: Vec<Call>,
    }

    impl GunyahExit for FakeCpu {
        fn current_el(&mut self) -> u8 {
            self.calls.push(Call::CurrentEl);
            self.el
        }
        fn clean_image_to_poc(&mut self) {
            self.calls.push(Call::Clean);
        }
        fn smc(&mut self, x: [u64; 5]) -> u64 {
            self.calls.push(Call::Smc(x));
            self.el = self.el_after;
            self.answer
        }
    }

    fn run(
        el: u8,
        answer: u64,
        el_after: u8,
    ) -> (Result<GunyahExitDone, GunyahExitError>, Vec<Call>) {
        let mut cpu = FakeCpu { el, answer, el_after, calls: Vec::new() };
        (exit_gunyah(&mut cpu), cpu.calls)
    }

    const SMC: Call = Call::Smc([0x0200_0121, 0x23, 0, 0, 1]);

    #[test]
    fn at_el1_one_smc_then_el2() {
        let (result, calls) = run(1, 0, 2);
        assert_eq!(result, Ok(GunyahExitDone::Exited));
        assert_eq!(calls, [Call::CurrentEl, Call::Clean, SMC, Call::CurrentEl]);
    }

    #[test]
    fn at_el2_already_no_smc() {
        let (result, calls) = run(2, 0, 2);
        assert_eq!(result, Ok(GunyahExitDone::AlreadyEl2));
        assert_eq!(calls, [Call::CurrentEl]);
    }

    #[test]
    fn refusals() {
        for el in [0, 3] {
            let (result, calls) = run(el, 0, 2);
            assert_eq!(result, Err(GunyahExitError::UnexpectedEl { el }));
            assert_eq!(calls, [Call::CurrentEl], "no SMC from EL{el}");
        }
        // SMCCC NOT_SUPPORTED, and another failure: no second look, no further step.
        for x0 in [u64::MAX, 5] {
            let (result, calls) = run(1, x0, 1);
            assert_eq!(result, Err(GunyahExitError::SmcFailed { x0 }));
            assert_eq!(calls, [Call::CurrentEl, Call::Clean, SMC]);
        }
        let (result, calls) = run(1, 0, 1);
        assert_eq!(result, Err(GunyahExitError::NotAtEl2 { el: 1 }));
        assert_eq!(calls, [Call::CurrentEl, Call::Clean, SMC, Call::CurrentEl]);
        let msg = alloc::format!("{}", GunyahExitError::SmcFailed { x0: u64::MAX });
        assert!(msg.contains("0x2000121") && msg.contains("0xffffffffffffffff"), "{msg}");
    }
}
