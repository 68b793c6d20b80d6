//! Every warden call (owner 6) by function ID, who may make it, and the first two steps of the
//! order in which warden checks a call (`docs/abi.md`, "Checks run in this order"):
//!
//! 1. function ID and convention: [`WardenCall::identify`] (`NOT_SUPPORTED` for the other
//!    convention's twin of a call; a call this board does not offer is the integrator's
//!    `NOT_SUPPORTED`, also before anything else);
//! 2. caller: [`WardenCall::allowed_for`] (`DENIED`);
//! 3. only then the arguments: [`crate::handoff::Request::decode`],
//!    [`crate::peer::PeerCommand::decode`], [`reserved_zero`] (`INVALID_PARAMETERS`).
//!
//! So a call the caller may not make is `DENIED` however malformed its arguments are, and a
//! malformed call is never passed on.

use crate::error::AbiError;
use crate::handoff::{self, Caller};
use crate::smccc::CONV_64;
use crate::{hyp, peer, stats};

/// One of warden's own calls (not the service-range queries `CALL_COUNT`, `CALL_UID`,
/// `REVISION`, which every SMCCC service answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WardenCall {
    AbiVersion,
    CarveoutCount,
    CarveoutInfo,
    RangeQuery,
    Donate,
    Lend,
    Reclaim,
    Release,
    ViolationCount,
    ViolationInfo,
    PeerCommand,
    PeerDone,
    TrapStats,
    SmmuStats,
}

/// Who may make a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callers {
    Host,
    Peer,
    Both,
}

impl WardenCall {
    /// Every warden call; `CALL_COUNT` answers its length.
    pub const ALL: [WardenCall; 14] = [
        Self::AbiVersion,
        Self::CarveoutCount,
        Self::CarveoutInfo,
        Self::RangeQuery,
        Self::Donate,
        Self::Lend,
        Self::Reclaim,
        Self::Release,
        Self::ViolationCount,
        Self::ViolationInfo,
        Self::PeerCommand,
        Self::PeerDone,
        Self::TrapStats,
        Self::SmmuStats,
    ];

    pub const fn function_id(self) -> u32 {
        match self {
            Self::AbiVersion => hyp::ABI_VERSION,
            Self::CarveoutCount => handoff::CARVEOUT_COUNT,
            Self::CarveoutInfo => handoff::CARVEOUT_INFO,
            Self::RangeQuery => handoff::RANGE_QUERY,
            Self::Donate => handoff::DONATE,
            Self::Lend => handoff::LEND,
            Self::Reclaim => handoff::RECLAIM,
            Self::Release => handoff::RELEASE,
            Self::ViolationCount => handoff::VIOLATION_COUNT,
            Self::ViolationInfo => handoff::VIOLATION_INFO,
            Self::PeerCommand => peer::PEER_COMMAND,
            Self::PeerDone => peer::PEER_DONE,
            Self::TrapStats => stats::TRAP_STATS,
            Self::SmmuStats => stats::SMMU_STATS,
        }
    }

    /// Step 1: which call `fid` (w0) is. `Ok(None)`: not a warden call (another owner, or a
    /// number warden does not define); `Err(NOT_SUPPORTED)`: the SMC32 twin of an SMC64 call
    /// or the reverse.
    pub fn identify(fid: u32) -> Result<Option<Self>, AbiError> {
        for call in Self::ALL {
            let known = call.function_id();
            if known == fid {
                return Ok(Some(call));
            }
            if known | CONV_64 == fid | CONV_64 {
                return Err(AbiError::NotSupported);
            }
        }
        Ok(None)
    }

    /// Who may make the call (the "Caller" column of `docs/abi.md`).
    pub const fn callers(self) -> Callers {
        match self {
            Self::Donate | Self::Lend | Self::Reclaim | Self::PeerCommand => Callers::Host,
            Self::Release | Self::PeerDone => Callers::Peer,
            _ => Callers::Both,
        }
    }

    /// Step 2: `DENIED` unless `caller` may make the call.
    pub const fn allowed_for(self, caller: Caller) -> Result<(), AbiError> {
        let allowed = match (self.callers(), caller) {
            (Callers::Both, _)
            | (Callers::Host, Caller::Host)
            | (Callers::Peer, Caller::Peer(_)) => true,
            (Callers::Host, Caller::Peer(_)) | (Callers::Peer, Caller::Host) => false,
        };
        if allowed { Ok(()) } else { Err(AbiError::Denied) }
    }

    /// The calls [`handoff::Request`] decodes.
    pub const fn is_handoff(self) -> bool {
        matches!(
            self,
            Self::CarveoutCount
                | Self::CarveoutInfo
                | Self::RangeQuery
                | Self::Donate
                | Self::Lend
                | Self::Reclaim
                | Self::Release
                | Self::ViolationCount
                | Self::ViolationInfo
        )
    }
}

/// Step 3 for a call without arguments (`PEER_DONE`, `TRAP_STATS`, `SMMU_STATS`): `x1..x7`
/// must be zero, else `INVALID_PARAMETERS`.
pub fn reserved_zero(regs: &[u64; 8]) -> Result<(), AbiError> {
    if regs[1..].iter().all(|&r| r == 0) { Ok(()) } else { Err(AbiError::InvalidParameters) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::PeerId;
    use crate::smccc::{OWNER_VENDOR_HYP, owner};

    #[test]
    fn every_call_is_identified_and_its_twin_refused() {
        for call in WardenCall::ALL {
            let fid = call.function_id();
            assert_eq!(owner(fid), OWNER_VENDOR_HYP);
            assert_eq!(WardenCall::identify(fid), Ok(Some(call)));
            assert_eq!(WardenCall::identify(fid ^ CONV_64), Err(AbiError::NotSupported));
        }
        for fid in [hyp::CALL_COUNT, hyp::CALL_UID, hyp::REVISION, 0xC600_0024, 0x8400_0000] {
            assert_eq!(WardenCall::identify(fid), Ok(None), "{fid:#x}");
        }
        assert_eq!(hyp::IMPLEMENTED_CALLS, 14);
    }

    #[test]
    fn callers_follow_the_table() {
        let (host, peer) = (Caller::Host, Caller::Peer(PeerId::DSP));
        for call in WardenCall::ALL {
            let got = (call.allowed_for(host).is_ok(), call.allowed_for(peer).is_ok());
            let want = match call {
                WardenCall::Donate
                | WardenCall::Lend
                | WardenCall::Reclaim
                | WardenCall::PeerCommand => (true, false),
                WardenCall::Release | WardenCall::PeerDone => (false, true),
                _ => (true, true),
            };
            assert_eq!(got, want, "{call:?}");
        }
    }
}
