//! The Gunyah exit (`boards::EntryConvention::UefiUnderGunyah`, RB3 Gen 2): the loader starts
//! warden at EL1 under Gunyah, Qualcomm's hypervisor; one SMC to TrustZone, w0 = 0x02000121,
//! w1 = 0x23, w2 = w3 = 0, w4 = 1 ([`crate::boards::GUNYAH_EXIT_SMC`]), tears Gunyah down and
//! continues the caller at EL2 with the SMMU in bypass (the call edk2-platforms' RB3 Gen 2 port
//! and U-Boot's `QCOM_EL2_GUNYAH_EXIT_SUPPORT` make; read, not copied). From there the boot is
//! warden's ordinary EL2 boot.
//!
//! The SMC is made by the entry code (`arch/aarch64/entry.S`, its register contract there),
//! before anything is written to memory and before a stack is used: the call is made at EL1 on
//! SP_EL1 and continues at EL2 on SP_EL2, whose value TrustZone does not document, and SMCCC
//! keeps only x18..x30 across it. The entry code reads CurrentEL, makes the SMC only at EL1
//! (after cleaning warden's loaded image to the Point of Coherency: EL2 starts with its MMU
//! and caches off), reads CurrentEL again, and hands the three values to `primary_main`
//! ([`ExitRecord::from_entry`]). What the entry code decided is checked here, by
//! [`check_exit`]; refused, with a message and no further step: an exception level other than
//! 1 or 2 at entry, the SMC answering anything but 0, still EL1 after an SMC that answered 0.
//! Entered at EL2 already (firmware without Gunyah), no SMC is made.
//!
//! Checked only against the records in the tests below: no RB3 Gen 2 has run this code, and
//! what TZ returns in x0 on failure (and whether a failed exit returns at all) is not
//! documented; any non-zero x0 is taken as a failure (warden then reports it at EL1, on the
//! stack the entry code set up there, through the loader's mapping of the UART).

use core::fmt;

use crate::boards::GUNYAH_EXIT_SMC;

/// What the entry code recorded around the exit (entry.S's `x23`..`x25`, `primary_main`'s
/// last three arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// CurrentEL's EL field when warden was entered.
    pub el_at_entry: u8,
    /// The SMC, if the entry code made it: its x0 and CurrentEL's EL field after it.
    pub smc: Option<SmcOutcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmcOutcome {
    pub x0: u64,
    pub el_after: u8,
}

impl ExitRecord {
    /// From the raw registers: CurrentEL at entry, the SMC's x0, CurrentEL after the SMC (0
    /// when no SMC was made: CurrentEL reads at least EL1's 0b0100 where the code runs).
    pub fn from_entry(current_el_at_entry: u64, smc_x0: u64, current_el_after: u64) -> Self {
        let el = |raw: u64| ((raw >> 2) & 3) as u8;
        let smc = match current_el_after {
            0 => None,
            raw => Some(SmcOutcome { x0: smc_x0, el_after: el(raw) }),
        };
        Self { el_at_entry: el(current_el_at_entry), smc }
    }
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
    /// The record does not match what the entry code does (an SMC made at another EL than 1,
    /// or none made at EL1): entry.S and this check disagree.
    Inconsistent { record: ExitRecord },
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
            Self::Inconsistent { record } => {
                write!(f, "the entry code's record of the Gunyah exit is inconsistent: {record:?}")
            }
        }
    }
}

/// Checks what the entry code did (see the module documentation).
pub fn check_exit(record: ExitRecord) -> Result<GunyahExitDone, GunyahExitError> {
    match (record.el_at_entry, record.smc) {
        (2, None) => Ok(GunyahExitDone::AlreadyEl2),
        (1, Some(SmcOutcome { x0, .. })) if x0 != 0 => Err(GunyahExitError::SmcFailed { x0 }),
        (1, Some(SmcOutcome { el_after: 2, .. })) => Ok(GunyahExitDone::Exited),
        (1, Some(SmcOutcome { el_after, .. })) => Err(GunyahExitError::NotAtEl2 { el: el_after }),
        (el @ (0 | 3), None) => Err(GunyahExitError::UnexpectedEl { el }),
        _ => Err(GunyahExitError::Inconsistent { record }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EL1: u64 = 1 << 2;
    const EL2: u64 = 2 << 2;

    /// The record entry.S leaves for a CPU at `el` whose SMC (made only at EL1) answers
    /// `answer` and moves it to `el_after`: the entry decision, as the assembly takes it.
    fn entry(el: u8, answer: u64, el_after: u8) -> ExitRecord {
        let raw = |el: u8| u64::from(el) << 2;
        if el == 1 {
            ExitRecord::from_entry(raw(1), answer, raw(el_after))
        } else {
            ExitRecord::from_entry(raw(el), 0, 0)
        }
    }

    #[test]
    fn decoding_the_entry_registers() {
        assert_eq!(
            ExitRecord::from_entry(EL1, 0, EL2),
            ExitRecord { el_at_entry: 1, smc: Some(SmcOutcome { x0: 0, el_after: 2 }) }
        );
        assert_eq!(ExitRecord::from_entry(EL2, 0, 0), ExitRecord { el_at_entry: 2, smc: None });
        // Only CurrentEL's EL field counts.
        assert_eq!(ExitRecord::from_entry(EL2 | 0xf3, 7, 0).el_at_entry, 2);
    }

    #[test]
    fn at_el1_one_smc_then_el2() {
        assert_eq!(check_exit(entry(1, 0, 2)), Ok(GunyahExitDone::Exited));
    }

    #[test]
    fn at_el2_already_no_smc() {
        assert_eq!(entry(2, 0, 2).smc, None);
        assert_eq!(check_exit(entry(2, 0, 2)), Ok(GunyahExitDone::AlreadyEl2));
    }

    #[test]
    fn refusals() {
        for el in [0, 3] {
            assert_eq!(entry(el, 0, 2).smc, None, "no SMC from EL{el}");
            assert_eq!(check_exit(entry(el, 0, 2)), Err(GunyahExitError::UnexpectedEl { el }));
        }
        // SMCCC NOT_SUPPORTED, and another failure: refused whatever the EL after.
        for x0 in [u64::MAX, 5] {
            for el_after in [1, 2] {
                let r = check_exit(entry(1, x0, el_after));
                assert_eq!(r, Err(GunyahExitError::SmcFailed { x0 }));
            }
        }
        assert_eq!(check_exit(entry(1, 0, 1)), Err(GunyahExitError::NotAtEl2 { el: 1 }));
        let msg = alloc::format!("{}", GunyahExitError::SmcFailed { x0: u64::MAX });
        assert!(msg.contains("0x2000121") && msg.contains("0xffffffffffffffff"), "{msg}");
    }

    #[test]
    fn records_the_entry_code_cannot_make_are_refused() {
        let no_smc_at_el1 = ExitRecord { el_at_entry: 1, smc: None };
        let smc_at_el2 =
            ExitRecord { el_at_entry: 2, smc: Some(SmcOutcome { x0: 0, el_after: 2 }) };
        for record in [no_smc_at_el1, smc_at_el2] {
            assert_eq!(check_exit(record), Err(GunyahExitError::Inconsistent { record }));
        }
    }
}
