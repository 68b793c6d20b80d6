//! Status codes of warden's own calls (owner 6), returned sign-extended in `x0`.
//!
//! The first three match PSCI and FF-A (`NOT_SUPPORTED`, `INVALID_PARAMETERS`) and PSCI
//! (`DENIED`), so a host that already handles PSCI results reads them the same way. The rest
//! are warden's; `docs/abi.md` lists which bad request returns which code.

use core::fmt;

/// `x0` of a successful call.
pub const SUCCESS: i64 = 0;

/// Why warden refused or failed a call. Codes are stable: never renumbered or reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiError {
    /// -1: unknown function ID, or the wrong calling convention (SMC32 twin of an SMC64 call).
    NotSupported,
    /// -2: malformed request: reserved bits or registers not zero, zero or unaligned size,
    /// address overflow, unknown peer, a transfer's carveout index out of range, a range that
    /// is not inside exactly one carveout, nothing transferred there (reclaim/release of host
    /// memory).
    InvalidParameters,
    /// -3: the caller may not do this: a host-only call from a peer (or the reverse), a range
    /// touching warden's memory, a peer other than the carveout's, a transfer kind the
    /// carveout's policy forbids, a range already donated or lent (donating twice).
    Denied,
    /// -4: another transfer of (part of) this range is in flight; nothing changed, try again.
    Busy,
    /// -5: warden could not allocate page tables for the new mappings; nothing changed.
    NoMemory,
    /// -6: the transfer failed part-way (e.g. an SMMU sync timed out) and was rolled back.
    Aborted,
    /// -7: the peer cannot take the range now (not running, mailbox busy); nothing changed.
    Retry,
    /// -8: no entry: a violation sequence number no longer (or not yet) in the ring, or a
    /// `CARVEOUT_INFO` index at or above the count.
    NoData,
    /// -9: reclaim of a range the peer still holds (it has not released it).
    PeerHolds,
    /// -10: the simulated peer faulted while running a `PEER_COMMAND` (it touched memory not
    /// handed to it); the access is recorded in the violation ring.
    PeerFault,
    /// A negative `x0` this ABI version does not define (only when decoding responses; warden
    /// never returns one).
    Unknown(i64),
}

impl AbiError {
    /// The value warden puts in `x0`.
    pub const fn code(self) -> i64 {
        match self {
            Self::NotSupported => -1,
            Self::InvalidParameters => -2,
            Self::Denied => -3,
            Self::Busy => -4,
            Self::NoMemory => -5,
            Self::Aborted => -6,
            Self::Retry => -7,
            Self::NoData => -8,
            Self::PeerHolds => -9,
            Self::PeerFault => -10,
            Self::Unknown(code) => code,
        }
    }

    /// The error a negative `x0` stands for; `None` for `SUCCESS` and positive values.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::Busy,
            -5 => Self::NoMemory,
            -6 => Self::Aborted,
            -7 => Self::Retry,
            -8 => Self::NoData,
            -9 => Self::PeerHolds,
            -10 => Self::PeerFault,
            c if c < 0 => Self::Unknown(c),
            _ => return None,
        })
    }

    /// The code as the register value (sign-extended).
    pub const fn register(self) -> u64 {
        self.code() as u64
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotSupported => "NOT_SUPPORTED",
            Self::InvalidParameters => "INVALID_PARAMETERS",
            Self::Denied => "DENIED",
            Self::Busy => "BUSY",
            Self::NoMemory => "NO_MEMORY",
            Self::Aborted => "ABORTED",
            Self::Retry => "RETRY",
            Self::NoData => "NO_DATA",
            Self::PeerHolds => "PEER_HOLDS",
            Self::PeerFault => "PEER_FAULT",
            Self::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_stable() {
        let all = [
            (AbiError::NotSupported, -1),
            (AbiError::InvalidParameters, -2),
            (AbiError::Denied, -3),
            (AbiError::Busy, -4),
            (AbiError::NoMemory, -5),
            (AbiError::Aborted, -6),
            (AbiError::Retry, -7),
            (AbiError::NoData, -8),
            (AbiError::PeerHolds, -9),
            (AbiError::PeerFault, -10),
        ];
        for (error, code) in all {
            assert_eq!(error.code(), code);
            assert_eq!(AbiError::from_code(code), Some(error));
            assert_eq!(error.register(), code as u64);
        }
        assert_eq!(AbiError::from_code(0), None);
        assert_eq!(AbiError::from_code(5), None);
        assert_eq!(AbiError::from_code(-77), Some(AbiError::Unknown(-77)));
        assert_eq!(AbiError::Unknown(-77).code(), -77);
        // Same numbers as PSCI where the meaning is shared.
        assert_eq!(AbiError::NotSupported.code(), crate::psci::NOT_SUPPORTED);
        assert_eq!(AbiError::InvalidParameters.code(), crate::psci::INVALID_PARAMETERS);
        assert_eq!(AbiError::Denied.code(), crate::psci::DENIED);
    }
}
