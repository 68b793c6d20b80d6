//! warden's carveout calls: a decoded ABI [`Request`] from the host or a peer becomes a query of
//! the tracker or one of the handoff sequences, and the outcome becomes the `x0..x7` reply.
//!
//! Everything the ABI promises about errors is decided here, before any sequence runs, so a
//! refused request never reaches the tables: which peer may call what (`DENIED`), malformed or
//! unknown targets (`INVALID_PARAMETERS`), ranges touching warden (`DENIED`), the carveout's
//! policy (`DENIED`), transfers in flight (`BUSY`). The sequences' own errors map onto the ABI
//! codes in [`abi_error`].

use warden_abi::AbiError;
use warden_abi::handoff::{
    Caller, CarveoutCount, CarveoutInfo, CarveoutState, Owner as AbiOwner, Policy, RangeInfo,
    RangeState, Request, Target, TransferDone,
};

use super::{DmaStage2, HandoffCpu, HandoffCtx, HandoffError, TransferFlags};
use crate::mm::ownership::{OwnershipTracker, PageState, PeerId, TransferKind};
use crate::mm::{FrameAllocator, MemRange, PAGE_SIZE};

/// A carveout as the ABI describes it (from the DT binding), in `CARVEOUT_INFO` index order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarveoutDesc {
    pub range: MemRange,
    pub peer: PeerId,
    /// The one transfer kind it accepts.
    pub policy: Policy,
    /// Every reclaim scrubs, CLEAR or not.
    pub clear_on_reclaim: bool,
}

impl CarveoutDesc {
    /// The handoff library's view (range and peer).
    pub fn carveout(&self) -> super::Carveout {
        super::Carveout { range: self.range, peer: self.peer }
    }
}

/// The ABI state of pages in `state`. `None` for warden's own pages (never in a carveout).
pub fn range_state(state: PageState) -> Option<RangeState> {
    Some(match state {
        PageState::Host => RangeState::Host,
        PageState::Warden => return None,
        PageState::HandingOff { to, kind: TransferKind::Donate } => RangeState::Donating(to),
        PageState::HandingOff { to, kind: TransferKind::Lend } => RangeState::Lending(to),
        PageState::Donated { peer, released: false } => RangeState::Donated(peer),
        PageState::Lent { peer, released: false } => RangeState::Lent(peer),
        PageState::Donated { peer, released: true } | PageState::Lent { peer, released: true } => {
            RangeState::PeerReleased(peer)
        }
        PageState::Reclaiming { from, .. } => RangeState::Reclaiming(from),
        PageState::Shared { peer } => RangeState::Shared(peer),
        PageState::Sharing { peer } => RangeState::Sharing(peer),
        PageState::Unsharing { peer } => RangeState::Unsharing(peer),
    })
}

/// Who owns the page at `addr`, for a violation record. Untracked addresses are `Unknown`.
pub fn owner_at(tracker: &OwnershipTracker, addr: u64) -> AbiOwner {
    let Some(page) = MemRange::from_base_size(addr & !(PAGE_SIZE - 1), PAGE_SIZE) else {
        return AbiOwner::Unknown;
    };
    match tracker.state_of(page).map(|s| s.owner()) {
        Ok(crate::mm::ownership::Owner::Host) => AbiOwner::Host,
        Ok(crate::mm::ownership::Owner::Warden) => AbiOwner::Warden,
        Ok(crate::mm::ownership::Owner::Peer(p)) => AbiOwner::Peer(p),
        Err(_) => AbiOwner::Unknown,
    }
}

/// The ABI code for a sequence's error (see `docs/abi.md`).
pub fn abi_error(e: HandoffError) -> AbiError {
    match e {
        HandoffError::ZeroSize
        | HandoffError::Unaligned
        | HandoffError::Overflow
        | HandoffError::NotInCarveout
        | HandoffError::UnknownPeer
        | HandoffError::NotHeldByPeer => AbiError::InvalidParameters,
        HandoffError::WrongPeer | HandoffError::NotHostOwned => AbiError::Denied,
        HandoffError::PeerStillHolds => AbiError::PeerHolds,
        HandoffError::OutOfFrames => AbiError::NoMemory,
        // warden's own ABI tells no firmware (`NoFirmware`): a refusal is an abort like any.
        HandoffError::Stage2(_)
        | HandoffError::DmaSync(_)
        | HandoffError::Internal(_)
        | HandoffError::FirmwareRefused(_) => AbiError::Aborted,
    }
}

/// What a transfer call acts on, resolved and checked against the carveouts.
struct Resolved {
    range: MemRange,
    carveout: CarveoutDesc,
}

fn resolve(
    carveouts: &[CarveoutDesc],
    tracker: &OwnershipTracker,
    target: Target,
) -> Result<Resolved, AbiError> {
    let range = match target {
        Target::Carveout(index) => {
            let c = carveouts.get(index as usize).ok_or(AbiError::InvalidParameters)?;
            return Ok(Resolved { range: c.range, carveout: *c });
        }
        Target::Range { base, size } => {
            MemRange::from_base_size(base, size).ok_or(AbiError::InvalidParameters)?
        }
    };
    // A range reaching into warden's own memory is refused as such, not as a bad range.
    if tracker.extents_in(range).any(|e| e.state == PageState::Warden) {
        return Err(AbiError::Denied);
    }
    let carveout = carveouts
        .iter()
        .find(|c| c.range.contains_range(&range))
        .ok_or(AbiError::InvalidParameters)?;
    Ok(Resolved { range, carveout: *carveout })
}

/// The state of every page of `range`: one state, `Mixed` (`None`) otherwise.
fn uniform_state(tracker: &OwnershipTracker, range: MemRange) -> Option<PageState> {
    tracker.state_of(range).ok()
}

/// Answers one carveout request from `caller`. Violation queries are not this module's (the
/// trap handler owns the ring): they get `NOT_SUPPORTED` here.
pub fn handle<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    carveouts: &[CarveoutDesc],
    caller: Caller,
    request: &Request,
) -> Result<[u64; 8], AbiError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    request.allowed_for(caller)?;
    match *request {
        Request::CarveoutCount => {
            let count = u32::try_from(carveouts.len()).unwrap_or(u32::MAX);
            Ok(CarveoutCount { count }.encode())
        }
        Request::CarveoutInfo { index } => {
            let c = carveouts.get(index as usize).ok_or(AbiError::NoData)?;
            let tracker = ctx.state.tracker();
            let state = match uniform_state(&tracker, c.range).and_then(range_state) {
                Some(s) => CarveoutState::Uniform(s),
                None => CarveoutState::Mixed,
            };
            Ok(CarveoutInfo {
                base: c.range.start,
                size: c.range.size(),
                peer: c.peer,
                policy: c.policy,
                clear_on_reclaim: c.clear_on_reclaim,
                state,
            }
            .encode())
        }
        Request::RangeQuery { addr } => {
            let (index, c) = carveouts
                .iter()
                .enumerate()
                .find(|(_, c)| c.range.contains(addr))
                .ok_or(AbiError::InvalidParameters)?;
            let tracker = ctx.state.tracker();
            let extent = tracker
                .extents_in(c.range)
                .find(|e| e.range.contains(addr))
                .ok_or(AbiError::Aborted)?;
            let state = range_state(extent.state).ok_or(AbiError::Aborted)?;
            Ok(RangeInfo {
                base: extent.range.start,
                size: extent.range.size(),
                state,
                carveout: index as u32,
            }
            .encode())
        }
        Request::Donate(t) | Request::Lend(t) => {
            let kind = match request {
                Request::Donate(_) => TransferKind::Donate,
                _ => TransferKind::Lend,
            };
            if !carveouts.iter().any(|c| c.peer == t.peer) {
                return Err(AbiError::InvalidParameters);
            }
            let r = {
                let tracker = ctx.state.tracker();
                let r = resolve(carveouts, &tracker, t.target)?;
                if r.carveout.peer != t.peer {
                    return Err(AbiError::Denied);
                }
                let allowed = matches!(
                    (r.carveout.policy, kind),
                    (Policy::Donate, TransferKind::Donate) | (Policy::Lend, TransferKind::Lend)
                );
                if !allowed {
                    return Err(AbiError::Denied);
                }
                if tracker.extents_in(r.range).any(|e| e.state.is_transient()) {
                    return Err(AbiError::Busy);
                }
                r
            };
            let flags = TransferFlags { clear: t.clear };
            let (base, size) = (r.range.start, r.range.size());
            let done = match kind {
                TransferKind::Donate => super::donate(ctx, base, size, t.peer, flags),
                TransferKind::Lend => super::lend(ctx, base, size, t.peer, flags),
            };
            done.map_err(abi_error)?;
            Ok(TransferDone { base, size }.encode())
        }
        Request::Reclaim(back) => {
            let (r, holder) = {
                let tracker = ctx.state.tracker();
                let r = resolve(carveouts, &tracker, back.target)?;
                let holder = match uniform_state(&tracker, r.range) {
                    Some(s) if s.is_transient() => return Err(AbiError::Busy),
                    Some(PageState::Donated { peer, .. } | PageState::Lent { peer, .. }) => peer,
                    _ if tracker.extents_in(r.range).any(|e| e.state.is_transient()) => {
                        return Err(AbiError::Busy);
                    }
                    _ => return Err(AbiError::InvalidParameters),
                };
                (r, holder)
            };
            let flags = TransferFlags { clear: back.clear || r.carveout.clear_on_reclaim };
            let (base, size) = (r.range.start, r.range.size());
            super::reclaim(ctx, base, size, holder, flags).map_err(abi_error)?;
            Ok(TransferDone { base, size }.encode())
        }
        Request::Release(back) => {
            let Caller::Peer(peer) = caller else { return Err(AbiError::Denied) };
            let r = {
                let tracker = ctx.state.tracker();
                let r = resolve(carveouts, &tracker, back.target)?;
                if r.carveout.peer != peer {
                    return Err(AbiError::Denied);
                }
                if tracker.extents_in(r.range).any(|e| e.state.is_transient()) {
                    return Err(AbiError::Busy);
                }
                r
            };
            let flags = TransferFlags { clear: back.clear };
            let (base, size) = (r.range.start, r.range.size());
            super::release(ctx, base, size, peer, flags).map_err(abi_error)?;
            Ok(TransferDone { base, size }.encode())
        }
        Request::ViolationCount | Request::ViolationInfo { .. } => Err(AbiError::NotSupported),
    }
}
