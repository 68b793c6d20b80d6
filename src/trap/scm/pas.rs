//! Qualcomm's PAS calls (service PIL 0x02: load, authenticate, start and stop a peripheral's
//! firmware), decided call by call before anything reaches the firmware (`docs/qcom-scm.md`):
//!
//! - `init_image(peripheral, metadata)`: the metadata buffer must be host memory warden may
//!   touch (the firmware reads it there); forwarded.
//! - `mem_setup(peripheral, addr, size)`: for a peripheral warden plays a peer for, the range
//!   must lie in that peer's carveout and be held by the host alone or the peer alone (not
//!   shared, not in flight); it is recorded as the peer's PAS region once the firmware accepts
//!   it. For any other peripheral the range must be firmware's own (a `no-map` reserved region
//!   that is no carveout): firmware locks a PAS region away, which must never hit memory warden
//!   reads for the host (the seed's XPU resets) or a carveout.
//! - `auth_and_reset(peripheral)`: the peer's PAS region must be out of the host's reach when
//!   the peer starts. Held by the host alone, warden hands it to the peer first (the carveout's
//!   DONATE or LEND, without CLEAR: the image the host loaded must survive); held by the peer
//!   alone, nothing to do; shared or with no region recorded, refused. If the firmware then
//!   refuses (a negative status), warden takes the range back (so the request changed
//!   nothing the host can see but the scrub a donate carveout gets).
//! - `shutdown(peripheral)`: forwarded; once the firmware says it stopped the peer, the peer's
//!   PAS region returns to the host through take-back (the RECLAIM path, scrubbed per the
//!   carveout) and the record is dropped.
//! - `is_supported`, `mss_reset`: forwarded unchanged (no memory changes hands).
//!
//! `INTERRUPTED` and `WAITQ_SLEEP` answers are passed through unchanged (the call is still
//! running in the firmware: nothing is handed back). On QEMU there is no firmware to forward
//! to: a call that passes warden's checks is answered QCOM_SCM_EOPNOTSUPP with nothing changed
//! (and IS_CALL_AVAIL says 0 for every PAS call, so Linux's remoteproc sees PAS unsupported).

use super::{ScmCall, ScmHost, ScmResult, ScmStatus, assign_status, forward_or_unsupported};
use crate::handoff::assign::Holders;
use crate::mm::ownership::PeerId;
use crate::mm::{MemRange, PAGE_SIZE};

/// PAS peripheral IDs ([`warden_abi::qcom_scm::pas_id`]).
pub use warden_abi::qcom_scm::pas_id as peripheral;
/// PIL commands ([`warden_abi::qcom_scm::pil`]).
pub use warden_abi::qcom_scm::pil as cmd;
pub use warden_abi::qcom_scm::pil::expected_arginfo;

/// The peer warden plays for a PAS peripheral: the modem for MPSS, the DSP for the ADSP.
pub fn peer_of_peripheral(id: u64) -> Option<PeerId> {
    match id {
        peripheral::MPSS => Some(PeerId::MODEM),
        peripheral::ADSP => Some(PeerId::DSP),
        _ => None,
    }
}

/// Answers one PAS call (see the module documentation).
pub fn dispatch<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> ScmResult {
    let Some(expected) = expected_arginfo(call.cmd) else {
        return forward_or_unsupported(call, host);
    };
    if call.arginfo != expected {
        return ScmResult::status(ScmStatus::InvalidArgument);
    }
    let peer = peer_of_peripheral(call.args[0]);
    let decided = match call.cmd {
        cmd::INIT_IMAGE => init_image(call, host),
        cmd::MEM_SETUP => mem_setup(call, peer, host),
        cmd::AUTH_AND_RESET => match peer {
            Some(p) => auth_and_reset(call, p, host),
            None => Ok(forward_or_unsupported(call, host)),
        },
        cmd::SHUTDOWN => match peer {
            Some(p) => shutdown(call, p, host),
            None => Ok(forward_or_unsupported(call, host)),
        },
        _ => Ok(forward_or_unsupported(call, host)),
    };
    decided.unwrap_or_else(|status| {
        log::info!(
            "SCM PAS cmd {:#04x} peripheral {}: refused ({status:?})",
            call.cmd,
            call.args[0]
        );
        ScmResult::status(status)
    })
}

fn init_image<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> Result<ScmResult, ScmStatus> {
    // The metadata's size is not an argument; its first page at least must be the host's.
    let mut probe = [0u8; 8];
    host.read_host(call.args[1], &mut probe).map_err(|_| ScmStatus::InvalidAddress)?;
    Ok(forward_or_unsupported(call, host))
}

fn mem_setup<S: ScmHost + ?Sized>(
    call: &ScmCall,
    peer: Option<PeerId>,
    host: &mut S,
) -> Result<ScmResult, ScmStatus> {
    let (base, size) = (call.args[1], call.args[2]);
    let aligned = base.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE);
    let range = MemRange::from_base_size(base, size)
        .filter(|r| aligned && !r.is_empty())
        .ok_or(ScmStatus::InvalidArgument)?;
    let Some(p) = peer else {
        if !host.firmware_may_take(range) {
            return Err(ScmStatus::InvalidAddress);
        }
        return Ok(forward_or_unsupported(call, host));
    };
    let now = host.holders(range, p).map_err(assign_status)?;
    if now != Holders::HOST && now != Holders::peer(p) {
        return Err(ScmStatus::InvalidArgument);
    }
    let answer = forward_or_unsupported(call, host);
    if answer.is_success() {
        host.set_pas_region(p, Some(range));
        log::info!("SCM PAS mem_setup: {range} is peer {}'s PAS region", p.get());
    }
    Ok(answer)
}

fn auth_and_reset<S: ScmHost + ?Sized>(
    call: &ScmCall,
    peer: PeerId,
    host: &mut S,
) -> Result<ScmResult, ScmStatus> {
    let region = host.pas_region(peer).ok_or(ScmStatus::InvalidArgument)?;
    let now = host.holders(region, peer).map_err(assign_status)?;
    let hand_over = if now == Holders::HOST {
        true
    } else if now == Holders::peer(peer) {
        false
    } else {
        return Err(ScmStatus::InvalidArgument);
    };
    if !host.can_forward() {
        // Nothing below could start the peer: answer as for any call without firmware, having
        // changed nothing.
        return Ok(ScmResult::status(ScmStatus::NotSupported));
    }
    if hand_over {
        host.assign(region, Holders::HOST, Holders::peer(peer), None).map_err(assign_status)?;
        log::info!("SCM PAS auth_and_reset: {region} handed to peer {} first", peer.get());
    }
    let answer = forward_or_unsupported(call, host);
    if answer.status < 0
        && hand_over
        && let Err(e) = host.assign(region, Holders::peer(peer), Holders::HOST, None)
    {
        log::error!("SCM PAS auth_and_reset refused by the firmware; {region} not back: {e:?}");
        return Err(ScmStatus::Error);
    }
    Ok(answer)
}

fn shutdown<S: ScmHost + ?Sized>(
    call: &ScmCall,
    peer: PeerId,
    host: &mut S,
) -> Result<ScmResult, ScmStatus> {
    let answer = forward_or_unsupported(call, host);
    if !answer.is_success() {
        return Ok(answer);
    }
    if let Some(region) = host.pas_region(peer) {
        if host.holders(region, peer) == Ok(Holders::peer(peer)) {
            if let Err(e) = host.assign(region, Holders::peer(peer), Holders::HOST, None) {
                // The peer is stopped but its memory is not the host's again: say so.
                log::error!("SCM PAS shutdown: taking {region} back failed: {e:?}");
                return Err(ScmStatus::Error);
            }
            log::info!("SCM PAS shutdown: {region} back to the host");
        }
        host.set_pas_region(peer, None);
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{FakeScm, answer_with};
    use super::*;
    use crate::handoff::assign::{AssignError, AssignOutcome};
    use crate::mm::ownership::TransferKind;
    use alloc::vec;

    const MODEM: PeerId = PeerId::MODEM;
    const REGION: MemRange = MemRange::new(0x7c00_0000, 0x7c10_0000);
    const FIRMWARE_RAM: MemRange = MemRange::new(0x7f00_0000, 0x7f20_0000);
    const EINVAL_ARG: u64 = -2i64 as u64;
    const EINVAL_ADDR: u64 = -3i64 as u64;
    const EOPNOTSUPP: u64 = -4i64 as u64;

    fn fid(command: u8) -> u32 {
        0x4200_0200 | u32::from(command)
    }

    fn pas(host: &mut FakeScm, command: u8, args: [u64; 3]) -> [u64; 4] {
        let info = u64::from(expected_arginfo(command).unwrap());
        answer_with(host, fid(command), [info, args[0], args[1], args[2], 0]).unwrap()
    }

    /// A board with SCM firmware that accepts everything; the modem's carveout is the host's.
    fn board() -> FakeScm {
        FakeScm {
            held: vec![
                (REGION, MODEM, Holders::HOST),
                (MemRange::new(REGION.end, 0x7d00_0000), MODEM, Holders::HOST),
            ],
            firmware: Some([0, 0, 0, 0]),
            no_map: vec![FIRMWARE_RAM],
            reply: Some(Ok(AssignOutcome::Exclusive(MODEM, TransferKind::Donate))),
            ..FakeScm::default()
        }
    }

    fn holders(host: &FakeScm) -> Holders {
        host.holders(REGION, MODEM).unwrap()
    }

    /// Linux's qcom_q6v5_pas for the modem: init_image, mem_setup, (loads the image),
    /// auth_and_reset — warden hands the region to the modem first — then shutdown gives it
    /// back through take-back.
    #[test]
    fn modem_boot_and_shutdown() {
        let mut host = board();
        host.memory.insert(0x4100_0000, vec![0; 0x1000]);
        assert_eq!(pas(&mut host, cmd::INIT_IMAGE, [peripheral::MPSS, 0x4100_0000, 0])[0], 0);
        assert_eq!(
            pas(&mut host, cmd::MEM_SETUP, [peripheral::MPSS, REGION.start, 0x10_0000])[0],
            0
        );
        assert_eq!(host.pas_region(MODEM), Some(REGION));
        assert!(host.assigns.is_empty(), "nothing changes hands before auth_and_reset");
        assert_eq!(pas(&mut host, cmd::AUTH_AND_RESET, [peripheral::MPSS, 0, 0])[0], 0);
        assert_eq!(host.assigns, vec![(REGION, Holders::HOST, Holders::peer(MODEM))]);
        assert_eq!(holders(&host), Holders::peer(MODEM));
        // The hand-over precedes the forwarded call.
        assert_eq!(host.forwarded.last().unwrap().cmd, cmd::AUTH_AND_RESET);
        host.reply = Some(Ok(AssignOutcome::TakenBack { from: MODEM, scrubbed: true }));
        assert_eq!(pas(&mut host, cmd::SHUTDOWN, [peripheral::MPSS, 0, 0])[0], 0);
        assert_eq!(host.assigns[1], (REGION, Holders::peer(MODEM), Holders::HOST));
        assert_eq!(holders(&host), Holders::HOST);
        assert_eq!(host.pas_region(MODEM), None);
    }

    #[test]
    fn firmware_refusing_auth_gets_the_region_back() {
        let mut host = board();
        host.pas.push((MODEM, REGION));
        host.firmware = Some([-1i64 as u64, 0, 0, 0]);
        assert_eq!(pas(&mut host, cmd::AUTH_AND_RESET, [peripheral::MPSS, 0, 0])[0], -1i64 as u64);
        assert_eq!(host.assigns.len(), 2, "handed over, then taken back");
        assert_eq!(holders(&host), Holders::HOST);
        // INTERRUPTED: still running in the firmware, passed through, nothing taken back.
        let mut host = board();
        host.pas.push((MODEM, REGION));
        host.firmware = Some([1, 0, 0, 0]);
        assert_eq!(pas(&mut host, cmd::AUTH_AND_RESET, [peripheral::MPSS, 0, 0])[0], 1);
        assert_eq!(holders(&host), Holders::peer(MODEM));
    }

    /// Every refusal with its code, nothing forwarded or changed.
    #[test]
    fn refusals() {
        type Case = (&'static str, u8, [u64; 3], u64, fn(&mut FakeScm));
        let cases: [Case; 8] = [
            ("metadata not host memory", cmd::INIT_IMAGE, [4, 0x7c00_0000, 0], EINVAL_ADDR, |_| {}),
            (
                "mem_setup unaligned",
                cmd::MEM_SETUP,
                [4, REGION.start + 8, 0x1000],
                EINVAL_ARG,
                |_| {},
            ),
            ("mem_setup empty", cmd::MEM_SETUP, [4, REGION.start, 0], EINVAL_ARG, |_| {}),
            (
                "mem_setup outside the modem's carveout",
                cmd::MEM_SETUP,
                [4, 0x4000_0000, 0x1000],
                EINVAL_ADDR,
                |_| {},
            ),
            (
                "mem_setup of a shared range",
                cmd::MEM_SETUP,
                [4, REGION.start, 0x1000],
                EINVAL_ARG,
                |h| h.held[0].2 = Holders::shared(MODEM),
            ),
            (
                "mem_setup of another peripheral in host RAM",
                cmd::MEM_SETUP,
                [9, 0x4000_0000, 0x1000],
                EINVAL_ADDR,
                |_| {},
            ),
            (
                "auth_and_reset without mem_setup",
                cmd::AUTH_AND_RESET,
                [4, 0, 0],
                EINVAL_ARG,
                |_| {},
            ),
            (
                "auth_and_reset of a shared region",
                cmd::AUTH_AND_RESET,
                [4, 0, 0],
                EINVAL_ARG,
                |h| {
                    h.pas.push((MODEM, REGION));
                    h.held[0].2 = Holders::shared(MODEM);
                },
            ),
        ];
        for (what, command, args, code, edit) in cases {
            let mut host = board();
            edit(&mut host);
            assert_eq!(pas(&mut host, command, args), [code, 0, 0, 0], "{what}");
            assert!(host.forwarded.is_empty() && host.assigns.is_empty(), "{what}");
        }
        // A wrong arginfo.
        let mut host = board();
        assert_eq!(
            answer_with(&mut host, fid(cmd::AUTH_AND_RESET), [2, 4, 0, 0, 0]).unwrap()[0],
            EINVAL_ARG
        );
        // Another peripheral's mem_setup in firmware's own no-map memory is forwarded.
        assert_eq!(pas(&mut host, cmd::MEM_SETUP, [9, FIRMWARE_RAM.start, 0x1000])[0], 0);
        assert_eq!(host.forwarded.len(), 1);
    }

    /// QEMU: checks as on a board, then EOPNOTSUPP with nothing changed.
    #[test]
    fn without_firmware_nothing_changes_hands() {
        let mut host = FakeScm { firmware: None, ..board() };
        host.pas.push((MODEM, REGION));
        assert_eq!(pas(&mut host, cmd::AUTH_AND_RESET, [4, 0, 0])[0], EOPNOTSUPP);
        assert_eq!(pas(&mut host, cmd::MEM_SETUP, [4, REGION.start, 0x1000])[0], EOPNOTSUPP);
        assert_eq!(pas(&mut host, cmd::SHUTDOWN, [4, 0, 0])[0], EOPNOTSUPP);
        assert_eq!(pas(&mut host, cmd::MSS_RESET, [1, 0, 0])[0], EOPNOTSUPP);
        assert!(host.assigns.is_empty());
        assert_eq!(host.pas_region(MODEM), Some(REGION), "untouched");
        assert_eq!(pas(&mut host, cmd::MEM_SETUP, [4, 0x4000_0000, 0x1000])[0], EINVAL_ADDR);
        // The tracker's refusals keep assign_mem's codes (a transfer in flight: busy).
        host.reply = Some(Err(AssignError::Busy));
        host.firmware = Some([0; 4]);
        host.forwarded.clear();
        assert_eq!(pas(&mut host, cmd::AUTH_AND_RESET, [4, 0, 0])[0], -12i64 as u64);
        assert!(host.forwarded.is_empty(), "not started: its memory could not be handed over");
    }
}
