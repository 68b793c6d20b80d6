//! Qualcomm's `assign_mem` on warden's tracker: a request to move a range from one set of
//! holders (the host and/or one peer) to another becomes one of the handoff sequences — the
//! very functions warden's own ABI calls ([`super::donate`], [`super::lend`]) or their
//! siblings for what that ABI has no call for ([`super::share`], [`super::unshare`],
//! [`super::take_back`]). The SCM dispatcher (`crate::trap::scm`) decodes and copies the
//! host's lists and turns VMIDs into [`Holders`]; everything about carveouts, peers and the
//! tracker's state is decided here, before any sequence runs, so a refused request changes
//! nothing.
//!
//! | Holders now → asked for | Sequence | End state |
//! |---|---|---|
//! | host → host + p | [`super::share`] | `Shared(p)` |
//! | host → p | [`super::donate`] or [`super::lend`], the carveout's policy | `Donated(p)` / `Lent(p)` |
//! | host + p → host | [`super::unshare`] | `Host` |
//! | p → host | [`super::take_back`], scrubbed if the carveout donates or has clear-on-reclaim | `Host` |
//! | the same holders | none | unchanged |
//!
//! Anything else (host + p → p, p → host + p, p → q) is [`AssignError::Unmediated`].
//!
//! On a board whose firmware implements SCM, the firmware is told too ([`Firmware`], the SCM
//! dispatcher's forwarded assign_mem): host → peer once the host can no longer reach the
//! range (after the unmap, TLBIs and SMMU sync, before the clean and the peer's map); share,
//! unshare and take-back first. A refusal rolls the sequence back
//! ([`AssignError::FirmwareRefused`]).

use warden_abi::handoff::Policy;

use super::service::CarveoutDesc;
use super::{DmaStage2, Firmware, HandoffCpu, HandoffCtx, HandoffError, TransferFlags};
use crate::mm::ownership::{PageState, PeerId, TransferKind};
use crate::mm::{FrameAllocator, MemRange};

/// Who may access a range: the host (Qualcomm's HLOS VM) and at most one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holders {
    pub host: bool,
    pub peer: Option<PeerId>,
}

impl Holders {
    pub const HOST: Holders = Holders { host: true, peer: None };

    pub const fn peer(peer: PeerId) -> Holders {
        Holders { host: false, peer: Some(peer) }
    }

    pub const fn shared(peer: PeerId) -> Holders {
        Holders { host: true, peer: Some(peer) }
    }

    /// The holders of pages in `state`, `None` while a transfer is in flight or for warden's
    /// pages. A range its peer has released is still the peer's until the host takes it back.
    pub fn of(state: PageState) -> Option<Holders> {
        match state {
            PageState::Host => Some(Holders::HOST),
            PageState::Shared { peer } => Some(Holders::shared(peer)),
            PageState::Donated { peer, .. } | PageState::Lent { peer, .. } => {
                Some(Holders::peer(peer))
            }
            PageState::Warden
            | PageState::HandingOff { .. }
            | PageState::Reclaiming { .. }
            | PageState::Sharing { .. }
            | PageState::Unsharing { .. } => None,
        }
    }
}

/// What a successful assignment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignOutcome {
    /// Host → host + peer.
    Shared(PeerId),
    /// Host → peer alone, by the carveout's transfer kind.
    Exclusive(PeerId, TransferKind),
    /// Host + peer → host.
    Unshared(PeerId),
    /// Peer → host (`scrubbed`: zeroed before the host saw it again).
    TakenBack { from: PeerId, scrubbed: bool },
    /// Asked for the holders it already had.
    Unchanged,
}

/// Why an assignment was refused or failed; every one leaves tracker and tables as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// Empty, not 4 KiB aligned, or wrapping.
    BadRange,
    /// Touches warden's own memory.
    TouchesWarden,
    /// Not inside exactly one carveout.
    NotInCarveout,
    /// A peer this board has no carveout for.
    UnknownPeer,
    /// A peer other than the carveout's.
    WrongPeer,
    /// Part of the range is in flight.
    Busy,
    /// The source holders are not the range's holders now (or the range is in several states).
    SourceMismatch,
    /// A change of holders warden does not mediate.
    Unmediated,
    /// No page-table frames for the sequence.
    NoMemory,
    /// The sequence failed part-way and was rolled back.
    Aborted,
    /// The firmware below refused (its status); the sequence was rolled back.
    FirmwareRefused(i64),
}

/// The carveout holding all of `range` and the range's holders now, checked as [`assign`]
/// checks them (checks 7-11 of `docs/qcom-scm.md`): each peer in `peers` must have a carveout
/// and be the carveout's.
fn resolve<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    carveouts: &[CarveoutDesc],
    range: MemRange,
    peers: [Option<PeerId>; 2],
) -> Result<(CarveoutDesc, Holders), AssignError>
where
    H: ?Sized,
    D: ?Sized,
    A: ?Sized,
{
    if range.is_empty() || !range.is_page_aligned() {
        return Err(AssignError::BadRange);
    }
    let tracker = ctx.state.tracker();
    if tracker.extents_in(range).any(|e| e.state == PageState::Warden) {
        return Err(AssignError::TouchesWarden);
    }
    let carveout = *carveouts
        .iter()
        .find(|c| c.range.contains_range(&range))
        .ok_or(AssignError::NotInCarveout)?;
    for p in peers.into_iter().flatten() {
        if !carveouts.iter().any(|c| c.peer == p) {
            return Err(AssignError::UnknownPeer);
        }
        if p != carveout.peer {
            return Err(AssignError::WrongPeer);
        }
    }
    if tracker.extents_in(range).any(|e| e.state.is_transient()) {
        return Err(AssignError::Busy);
    }
    let now =
        tracker.state_of(range).ok().and_then(Holders::of).ok_or(AssignError::SourceMismatch)?;
    Ok((carveout, now))
}

/// Who holds `range` now, which must lie in a carveout of `peer` (the PAS calls' check,
/// `docs/qcom-scm.md`).
pub fn holders<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    carveouts: &[CarveoutDesc],
    range: MemRange,
    peer: PeerId,
) -> Result<Holders, AssignError>
where
    H: ?Sized,
    D: ?Sized,
    A: ?Sized,
{
    resolve(ctx, carveouts, range, [Some(peer), None]).map(|(_, now)| now)
}

/// Moves `range` from `from` to `to` (see the module documentation), telling `firmware` at
/// the step each sequence tells it.
pub fn assign<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    carveouts: &[CarveoutDesc],
    range: MemRange,
    from: Holders,
    to: Holders,
    firmware: &mut dyn Firmware,
) -> Result<AssignOutcome, AssignError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    let (carveout, now) = resolve(ctx, carveouts, range, [from.peer, to.peer])?;
    if now != from {
        return Err(AssignError::SourceMismatch);
    }
    let (base, size) = (range.start, range.size());
    let done = match (from, to) {
        _ if from == to => return Ok(AssignOutcome::Unchanged),
        (Holders { host: true, peer: None }, Holders { host: true, peer: Some(p) }) => {
            super::share(ctx, base, size, p, firmware).map(|()| AssignOutcome::Shared(p))
        }
        (Holders { host: true, peer: None }, Holders { host: false, peer: Some(p) }) => {
            let flags = TransferFlags { clear: false };
            let kind = match carveout.policy {
                Policy::Donate => TransferKind::Donate,
                Policy::Lend => TransferKind::Lend,
            };
            super::transfer(ctx, base, size, p, kind, flags, firmware)
                .map(|()| AssignOutcome::Exclusive(p, kind))
        }
        (Holders { host: true, peer: Some(p) }, Holders { host: true, peer: None }) => {
            super::unshare(ctx, base, size, p, firmware).map(|()| AssignOutcome::Unshared(p))
        }
        (Holders { host: false, peer: Some(p) }, Holders { host: true, peer: None }) => {
            // The peer owned what it holds (donate), or the carveout asks for it: its data
            // never reaches the host.
            let clear = carveout.clear_on_reclaim || carveout.policy == Policy::Donate;
            super::take_back(ctx, base, size, p, TransferFlags { clear }, firmware)
                .map(|()| AssignOutcome::TakenBack { from: p, scrubbed: clear })
        }
        _ => return Err(AssignError::Unmediated),
    };
    done.map_err(|e| match e {
        HandoffError::OutOfFrames => AssignError::NoMemory,
        // Checked above under the tracker's lock; another CPU changed the range since.
        HandoffError::NotHostOwned | HandoffError::NotHeldByPeer | HandoffError::PeerStillHolds => {
            AssignError::SourceMismatch
        }
        HandoffError::ZeroSize | HandoffError::Unaligned | HandoffError::Overflow => {
            AssignError::BadRange
        }
        HandoffError::NotInCarveout => AssignError::NotInCarveout,
        HandoffError::UnknownPeer => AssignError::UnknownPeer,
        HandoffError::WrongPeer => AssignError::WrongPeer,
        HandoffError::Stage2(_) | HandoffError::DmaSync(_) | HandoffError::Internal(_) => {
            AssignError::Aborted
        }
        HandoffError::FirmwareRefused(status) => AssignError::FirmwareRefused(status),
    })
}
