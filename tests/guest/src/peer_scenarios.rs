//! The simulated peer against a hostile host (issue 11, §8.2): the host cannot disable the peer
//! for the rest of the boot, neither by making it overwrite its own program nor by giving it a
//! command that never ends. Each scenario ends with a full handoff cycle on both carveouts
//! (hand over, the peer's checksum equal to the host's, the peer's release, reclaim): on a
//! disabled peer that cycle fails with `RETRY`, the peer CPU never coming back.

use warden_abi::AbiError;
use warden_abi::handoff::PAGE_SIZE;
use warden_abi::peer::{self as peer_abi, Op};

use crate::cpu;
use crate::handoff::{
    self, CallError, Show, check, expect_all_host, host_checksum, peer_checksum, write_pattern,
};
use crate::handoff_scenarios::{give_back, hand_over};
use crate::report::{Outcome, fail};

/// A full cycle on each carveout: the peer answers, checksums what it holds, releases it.
fn peer_still_works(seed: u64) -> Outcome {
    for c in [handoff::modem(), handoff::dsp()] {
        let span = c.span(0x2000, 0x3000);
        write_pattern(span, seed)?;
        let ours = host_checksum(span)?;
        hand_over(&c, span, false)?;
        let theirs = peer_checksum(c.peer, span)?;
        if theirs != ours {
            fail!("{:?}'s checksum of {span} is {theirs:#x}, the host's {ours:#x}", c.peer);
        }
        give_back(&c, span, false)?;
    }
    expect_all_host()
}

/// Scenario `peer_own_pages_refused`: the attack of issue 11 — `PEER_COMMAND(modem, FILL, the
/// peer's own program IPA, 0x1000, pattern)` — and the same at its BSS/stack and mailbox pages,
/// for both peers, are `DENIED` (the peer holds none of them: commands touch only what was
/// donated or lent to it), change nothing, and the peer works afterwards. (Its stage-2 maps the
/// program read-only besides: warden's unit tests check that.) The peer may still read its own
/// program (TOUCH of its first word answers the entry code's first instruction).
pub fn peer_own_pages_refused() -> Outcome {
    expect_all_host()?;
    let before = check(handoff::violation_count(), "VIOLATION_COUNT")?;
    let windows = [
        ("program", peer_abi::PROGRAM_IPA),
        ("BSS and stack", peer_abi::DATA_IPA),
        ("mailbox", peer_abi::MAILBOX_IPA),
    ];
    for (what, base) in windows {
        for peer in [handoff::modem().peer, handoff::dsp().peer] {
            let fill = Op::Fill { base, size: PAGE_SIZE, pattern: 0xdead_beef_dead_beef };
            match handoff::peer_command(peer, fill) {
                Err(CallError::Refused(AbiError::Denied)) => {}
                other => fail!(
                    "PEER_COMMAND({peer:?}, FILL its {what} at {base:#x}) = {other:?}, expected \
                     DENIED"
                ),
            }
            let sum = Op::Checksum { base, size: PAGE_SIZE };
            match handoff::peer_command(peer, sum) {
                Err(CallError::Refused(AbiError::Denied)) => {}
                other => fail!(
                    "PEER_COMMAND({peer:?}, CHECKSUM its {what} at {base:#x}) = {other:?}, \
                     expected DENIED"
                ),
            }
        }
    }
    let first =
        handoff::peer_command(handoff::modem().peer, Op::Touch { addr: peer_abi::PROGRAM_IPA });
    match first {
        Ok(answer) if answer.result != 0 => {}
        other => fail!("modem TOUCH of its own program: {other:?}, expected its first word"),
    }
    let after = check(handoff::violation_count(), "VIOLATION_COUNT")?;
    if after != before {
        fail!("refused commands recorded violations: {} -> {}", Show(before), Show(after));
    }
    peer_still_works(0x5eed)
}

/// How long the hung command may take at most: warden's 5 s timeout, then stopping the CPU.
const HANG_LIMIT_MS: u64 = 20_000;

/// Scenario `hung_peer_is_stopped`: `PEER_COMMAND(modem, SPIN)` never finishes by itself;
/// warden answers `ABORTED` after its timeout, having stopped the peer's CPU (it takes the
/// peer's windows away, the peer's next fetch enters warden, which powers the CPU off), and
/// then every peer works again. Twice, to show the recovery leaves the peer as it was.
pub fn hung_peer_is_stopped() -> Outcome {
    expect_all_host()?;
    for round in 0..2 {
        let start = cpu::counter();
        match handoff::peer_command(handoff::modem().peer, Op::Spin) {
            Err(CallError::Refused(AbiError::Aborted)) => {}
            other => {
                fail!("round {round}: PEER_COMMAND(modem, SPIN) = {other:?}, expected ABORTED")
            }
        }
        let took = cpu::elapsed_ms(start);
        if took > HANG_LIMIT_MS {
            fail!("round {round}: the hung command took {took} ms");
        }
        peer_still_works(0x4a46 + round)?;
    }
    Ok(())
}
