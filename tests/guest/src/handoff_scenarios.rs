//! Carveout handoff scenarios (issue 4): the host lists, donates, lends and reclaims qemu-virt's
//! two carveouts, the simulated peer checksums, fills and releases them, and every refused
//! access or request is checked against `docs/abi.md`.
//!
//! Each scenario starts from both carveouts wholly `Host` (it fails at once otherwise, naming
//! the state it found) and is followed by [`crate::handoff::restore_all_host`], so one failure
//! does not cascade and the order of scenarios does not matter.

use warden_abi::AbiError;
use warden_abi::handoff::{
    self as abi, CarveoutState, Owner, PA_LIMIT, PAGE_SIZE, PeerId, RangeInfo, RangeState, Request,
    Return, Target, Transfer, TransferDone, ViolationCount, ViolationInfo,
};
use warden_abi::peer::{Op, PeerCommand};

use crate::console::println;
use crate::cpu;
use crate::entry::secondary_entry;
use crate::handoff::{
    self, CallError, Carveout, Show, Span, check, expect_all_host, expect_carveout, expect_run,
    host_checksum, peer_checksum, peer_fill, peer_release, write_pattern,
};
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::scenarios::{Access, check_contained};
use crate::secondary;
use crate::smccc::{self, Conduit};

/// ESR_EL2.EC of a data abort from a lower EL, as warden records a host's refused access.
const EC_DATA_ABORT_LOWER_EL: u64 = 0x24;

const HOST: RangeState = RangeState::Host;

fn uniform(state: RangeState) -> CarveoutState {
    CarveoutState::Uniform(state)
}

/// The whole-carveout `RANGE_QUERY` answer of a carveout that is all `Host`.
fn all_host(c: &Carveout) -> RangeInfo {
    c.whole().run(HOST, c)
}

/// DONATE/LEND (by the carveout's policy) of `span` to its peer; the reply must name `span`.
pub(crate) fn hand_over(c: &Carveout, span: Span, clear: bool) -> Outcome {
    let done = check(
        c.hand_over(span.target(), clear),
        format_args!("{:?} {span} to {:?}", c.policy, c.peer),
    )?;
    expect_done(done, span, "transfer")
}

fn expect_done(done: TransferDone, span: Span, what: &str) -> Outcome {
    if (done.base, done.size) != (span.base, span.size) {
        fail!("{what} of {span} answered {:#x}+{:#x}", done.base, done.size);
    }
    Ok(())
}

fn reclaim(span: Span, clear: bool) -> Outcome {
    let done = check(handoff::reclaim(span.target(), clear), format_args!("RECLAIM {span}"))?;
    expect_done(done, span, "RECLAIM")
}

/// The peer releases `span` and the host reclaims it; the carveout is then all `Host` again.
pub(crate) fn give_back(c: &Carveout, span: Span, clear: bool) -> Outcome {
    peer_release(c.peer, span)?;
    expect_run(span.base, span.run(RangeState::PeerReleased(c.peer), c))?;
    reclaim(span, clear)?;
    expect_run(span.base, all_host(c))
}

/// Scenario `carveouts_listed`: CARVEOUT_COUNT (by HVC and by SMC), CARVEOUT_INFO of both
/// carveouts, NO_DATA past the end, and RANGE_QUERY inside each.
pub fn carveouts_listed() -> Outcome {
    for conduit in [Conduit::Hvc, Conduit::Smc] {
        let count = check(
            handoff::call_via(conduit, Request::CarveoutCount, abi::CarveoutCount::decode),
            format_args!("CARVEOUT_COUNT by {conduit}"),
        )?;
        if count.count != 2 {
            fail!("CARVEOUT_COUNT by {conduit} = {}, expected 2 (modem, dsp)", count.count);
        }
    }
    expect_all_host()?;
    for c in [handoff::modem(), handoff::dsp()] {
        expect_run(c.base + 0x1238, all_host(&c))?;
        expect_run(c.end() - 8, all_host(&c))?;
    }
    for index in [2, 3, u32::MAX] {
        match handoff::carveout_info(index) {
            Err(CallError::Refused(AbiError::NoData)) => {}
            other => fail!("CARVEOUT_INFO({index}) = {other:?}, expected NO_DATA"),
        }
    }
    Ok(())
}

/// Scenario `donate_then_peer_checksum`: a pattern written by the host survives donation (of a
/// sub-range that is not 2 MiB aligned, then of the whole carveout by index) and the peer's
/// checksum of it equals the host's.
pub fn donate_then_peer_checksum() -> Outcome {
    const SEED: u64 = 0x4163;
    expect_all_host()?;
    let c = handoff::modem();
    let sub = c.span(0x3000, 0x5000);
    // The pattern spans the neighbours too, so their run boundaries are checked on real data.
    write_pattern(c.span(0, 0x10000), SEED)?;
    let ours = host_checksum(sub)?;
    hand_over(&c, sub, false)?;
    expect_run(sub.base, sub.run(RangeState::Donated(c.peer), &c))?;
    expect_run(sub.end() - 8, sub.run(RangeState::Donated(c.peer), &c))?;
    expect_run(c.base, c.span(0, 0x3000).run(HOST, &c))?;
    expect_run(sub.end(), Span { base: sub.end(), size: c.end() - sub.end() }.run(HOST, &c))?;
    expect_carveout(&c, CarveoutState::Mixed)?;
    expect_carveout(&handoff::dsp(), uniform(HOST))?;
    let theirs = peer_checksum(c.peer, sub)?;
    if theirs != ours {
        fail!("peer checksum of {sub} is {theirs:#x}, the host's before donating was {ours:#x}");
    }
    // The host keeps the pages around the donated ones.
    handoff::expect_words(c.span(0x2000, 0x1000), "the pattern", |a| handoff::pattern_at(SEED, a))?;
    handoff::expect_words(c.span(0x8000, 0x1000), "the pattern", |a| handoff::pattern_at(SEED, a))?;
    give_back(&c, sub, false)?;

    // The whole carveout, by index.
    let whole = c.whole();
    write_pattern(whole, SEED + 1)?;
    let ours = host_checksum(whole)?;
    let done = check(
        handoff::donate(Target::Carveout(c.index), c.peer, false),
        format_args!("DONATE carveout {} by index", c.index),
    )?;
    expect_done(done, whole, "DONATE by index")?;
    expect_carveout(&c, uniform(RangeState::Donated(c.peer)))?;
    expect_run(c.base + c.size / 2, whole.run(RangeState::Donated(c.peer), &c))?;
    let theirs = peer_checksum(c.peer, whole)?;
    if theirs != ours {
        fail!("peer checksum of all of {whole} is {theirs:#x}, the host's was {ours:#x}");
    }
    peer_release(c.peer, whole)?;
    expect_carveout(&c, uniform(RangeState::PeerReleased(c.peer)))?;
    let done = check(
        handoff::reclaim(Target::Carveout(c.index), false),
        format_args!("RECLAIM carveout {} by index", c.index),
    )?;
    expect_done(done, whole, "RECLAIM by index")?;
    expect_all_host()
}

/// The violation record for a refused access to `addr` by the instruction at `elr`, looked
/// for among the incidents warden still holds, newest first.
fn find_violation(
    count: &ViolationCount,
    addr: u64,
    elr: Option<u64>,
) -> Result<ViolationInfo, Reason> {
    let mut seq = count.incidents;
    while seq > count.oldest {
        seq -= 1;
        let info = check(handoff::violation_info(seq), format_args!("VIOLATION_INFO({seq})"))?;
        if info.ipa == Some(addr) && elr.is_none_or(|elr| info.elr == elr) {
            return Ok(info);
        }
    }
    fail!("no violation record for {addr:#x} among incidents {}..{}", count.oldest, count.incidents)
}

fn violations() -> Result<ViolationCount, Reason> {
    check(handoff::violation_count(), "VIOLATION_COUNT")
}

/// A host access to `addr` (donated to the modem) aborts, and warden records it as one new
/// incident with the right details.
pub(crate) fn host_access_refused(addr: u64, access: Access, owner: Owner) -> Outcome {
    let before = violations()?;
    let elr = check_contained(addr, access)?;
    let after = violations()?;
    if after.accesses != before.accesses + 1 || after.incidents != before.incidents + 1 {
        fail!(
            "{access} of {addr:#x}: VIOLATION_COUNT went from {} to {}, expected \
             one more incident and access",
            Show(before),
            Show(after)
        );
    }
    let info = find_violation(&after, addr, Some(elr))?;
    let write = matches!(access, Access::Write);
    let expected_access = abi::Access { size: Some(4), write, fetch: false };
    if info.va != Some(addr) || info.access != expected_access || info.owner != owner {
        fail!(
            "{access} of {addr:#x}: record {}, expected VA {addr:#x}, size 4 {access}, owner \
             {owner:?}",
            Show(info)
        );
    }
    if (info.esr >> 26) & 0x3f != EC_DATA_ABORT_LOWER_EL || info.count != 1 {
        fail!("{access} of {addr:#x}: record has ESR {:#x}, count {}", info.esr, info.count);
    }
    Ok(())
}

/// Scenario `host_read_after_donate_aborts`: once donated, a host load (and store) takes the
/// SEA warden injects, and the violation ring names the IPA, the owner (the modem), the size
/// and the direction. After reclaim the host reads the range again.
pub fn host_read_after_donate_aborts() -> Outcome {
    const SEED: u64 = 0x5ea;
    expect_all_host()?;
    let c = handoff::modem();
    let sub = c.span(0x10_0000, 0x3000);
    write_pattern(sub, SEED)?;
    hand_over(&c, sub, false)?;
    let owner = Owner::Peer(c.peer);
    host_access_refused(sub.base + 0x1008, Access::Read, owner)?;
    host_access_refused(sub.base + 0x2010, Access::Write, owner)?;
    // Released but not yet reclaimed: still nobody's but warden's to give back.
    peer_release(c.peer, sub)?;
    let before = violations()?;
    check_contained(sub.base + 0x18, Access::Read)?;
    let after = violations()?;
    if after.accesses != before.accesses + 1 {
        fail!("read of a released range: VIOLATION_COUNT {} -> {}", Show(before), Show(after));
    }
    reclaim(sub, false)?;
    handoff::expect_words(sub, "the pattern (the refused write must not land)", |a| {
        handoff::pattern_at(SEED, a)
    })?;
    expect_all_host()
}

/// Scenario `reclaim_without_clear_keeps_data` / `reclaim_with_clear_zeroes` on the modem:
/// RECLAIM while the peer holds the range is PEER_HOLDS; after the peer's fill and release, a
/// reclaim without CLEAR shows the peer's data, with CLEAR zeros. The neighbours keep theirs.
pub fn reclaim_modem(clear: bool) -> Outcome {
    const SEED: u64 = 0xc1ea;
    const FILL: u64 = 0xf111_0000_0000_f111;
    expect_all_host()?;
    let c = handoff::modem();
    let sub = if clear { c.span(0x30_5000, 0x4000) } else { c.span(0x20_7000, 0x4000) };
    let around = Span { base: sub.base - PAGE_SIZE, size: sub.size + 2 * PAGE_SIZE };
    write_pattern(around, SEED)?;
    let ours = host_checksum(sub)?;
    // With CLEAR, DONATE hands the peer zeros; without, the host's data.
    hand_over(&c, sub, clear)?;
    let theirs = peer_checksum(c.peer, sub)?;
    let expected = if clear { handoff::zero_checksum(sub) } else { ours };
    if theirs != expected {
        fail!("peer checksum after DONATE (clear {clear}) is {theirs:#x}, expected {expected:#x}");
    }
    peer_fill(c.peer, sub, FILL)?;
    match handoff::reclaim(sub.target(), clear) {
        Err(CallError::Refused(AbiError::PeerHolds)) => {}
        other => fail!("RECLAIM {sub} before the peer released it: {other:?}, expected PEER_HOLDS"),
    }
    expect_run(sub.base, sub.run(RangeState::Donated(c.peer), &c))?;
    give_back(&c, sub, clear)?;
    if clear {
        handoff::expect_words(sub, "zero (RECLAIM with CLEAR)", |_| 0)?;
    } else {
        handoff::expect_words(sub, "the peer's fill", |_| FILL)?;
    }
    let pattern = |a| handoff::pattern_at(SEED, a);
    handoff::expect_words(Span { base: around.base, size: PAGE_SIZE }, "the pattern", pattern)?;
    handoff::expect_words(Span { base: sub.end(), size: PAGE_SIZE }, "the pattern", pattern)?;
    expect_all_host()
}

/// Scenario `dsp_lend_scrubbed_on_reclaim`: the DSP carveout accepts LEND to the DSP only
/// (DONATE and a LEND to the modem are DENIED); the peer sees the host's data, and a reclaim
/// without CLEAR still returns zeros (`warden,clear-on-reclaim`).
pub fn dsp_lend_scrubbed_on_reclaim() -> Outcome {
    const SEED: u64 = 0xd5b;
    const FILL: u64 = 0x0d5b_0d5b_0d5b_0d5b;
    expect_all_host()?;
    let c = handoff::dsp();
    let sub = c.span(0x5000, 0x3000);
    write_pattern(sub, SEED)?;
    let ours = host_checksum(sub)?;
    for (what, result) in [
        ("DONATE to the DSP (policy lend)", handoff::donate(sub.target(), c.peer, false)),
        ("LEND to the modem (not its peer)", handoff::lend(sub.target(), PeerId::MODEM, false)),
    ] {
        if result != Err(CallError::Refused(AbiError::Denied)) {
            fail!("{what} of {sub}: {result:?}, expected DENIED");
        }
    }
    expect_carveout(&c, uniform(HOST))?;
    hand_over(&c, sub, false)?;
    expect_run(sub.base, sub.run(RangeState::Lent(c.peer), &c))?;
    let theirs = peer_checksum(c.peer, sub)?;
    if theirs != ours {
        fail!("peer checksum of lent {sub} is {theirs:#x}, the host's was {ours:#x}");
    }
    peer_fill(c.peer, sub, FILL)?;
    give_back(&c, sub, false)?;
    handoff::expect_words(sub, "zero (clear-on-reclaim)", |_| 0)?;
    expect_all_host()
}

/// What a bad request must leave untouched: both carveouts, the runs around the ranges the
/// scenario handed over, and the violation counters.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    carveouts: [abi::CarveoutInfo; 2],
    runs: [RangeInfo; 6],
    violations: ViolationCount,
}

impl Snapshot {
    /// The first part of `now` that differs from `self`, as text.
    fn first_change(&self, now: &Snapshot) -> Option<Reason> {
        let carveout =
            self.carveouts.iter().zip(&now.carveouts).enumerate().find(|(_, (a, b))| a != b);
        if let Some((index, (was, is))) = carveout {
            return Some(Reason::new(format_args!(
                "CARVEOUT_INFO({index}) from {} to {}",
                Show(*was),
                Show(*is)
            )));
        }
        if let Some((was, is)) = self.runs.iter().zip(&now.runs).find(|(a, b)| a != b) {
            return Some(Reason::new(format_args!("a run from {} to {}", Show(*was), Show(*is))));
        }
        (self.violations != now.violations).then(|| {
            Reason::new(format_args!(
                "VIOLATION_COUNT from {} to {}",
                Show(self.violations),
                Show(now.violations)
            ))
        })
    }
}

fn snapshot(donated: Span, lent: Span) -> Result<Snapshot, Reason> {
    let info = |c: Carveout| check(handoff::carveout_info(c.index), "CARVEOUT_INFO");
    let run = |addr: u64| check(handoff::range_query(addr), format_args!("RANGE_QUERY({addr:#x})"));
    Ok(Snapshot {
        carveouts: [info(handoff::modem())?, info(handoff::dsp())?],
        runs: [
            run(handoff::modem().base)?,
            run(donated.base)?,
            run(donated.end())?,
            run(handoff::dsp().base)?,
            run(lent.base)?,
            run(lent.end())?,
        ],
        violations: violations()?,
    })
}

/// One bad request: its registers and the error it must get.
struct BadRequest {
    what: &'static str,
    regs: [u64; 8],
    expected: AbiError,
}

fn bad(what: &'static str, regs: [u64; 8], expected: AbiError) -> BadRequest {
    BadRequest { what, regs, expected }
}

/// `PEER_DONE` with `x1` = `x1` (the host may not make it at all).
fn peer_done(x1: u64) -> [u64; 8] {
    [u64::from(warden_abi::peer::PEER_DONE), x1, 0, 0, 0, 0, 0, 0]
}

/// `SMMU_STATS` with `x1` set.
fn tweaked_stats(x1: u64) -> [u64; 8] {
    let mut regs = warden_abi::stats::SmmuStats::request();
    regs[1] = x1;
    regs
}

/// `request` encoded, then `tweak`ed (to set what no encoder would).
fn tweaked(request: Request, tweak: impl FnOnce(&mut [u64; 8])) -> [u64; 8] {
    let mut regs = request.encode();
    tweak(&mut regs);
    regs
}

fn donate_req(target: Target, peer: PeerId) -> Request {
    Request::Donate(Transfer { target, peer, clear: false })
}

fn lend_req(target: Target, peer: PeerId) -> Request {
    Request::Lend(Transfer { target, peer, clear: false })
}

fn reclaim_req(target: Target) -> Request {
    Request::Reclaim(Return { target, clear: false })
}

fn range(base: u64, size: u64) -> Target {
    Target::Range { base, size }
}

/// Every bad request of issue 4 and `docs/abi.md` ("Checks run in this order"), with the
/// state `donated` (modem) and `lent` (DSP) in place. A request breaking two rules gets the
/// earlier rule's error (issue 11: the caller before the arguments).
fn bad_requests(warden: u64, donated: Span, lent: Span) -> [BadRequest; 62] {
    use AbiError::{Denied, InvalidParameters as Invalid, NoData, NotSupported, PeerHolds};
    let (modem, dsp) = (PeerId::MODEM, PeerId::DSP);
    // A page of each carveout the host still owns.
    let modem_host = range(handoff::modem().base, PAGE_SIZE);
    let dsp_host = range(handoff::dsp().base, PAGE_SIZE);
    let unknown_peer = PeerId::new(7).unwrap_or(PeerId::MODEM);
    let donate = |target| donate_req(target, modem).encode();
    let peer = |peer: PeerId, op| PeerCommand { peer, op }.encode();
    let checksum = Op::Checksum { base: donated.base, size: donated.size };
    let peer_tweaked = |reg: usize, value: u64| {
        let mut regs = peer(modem, checksum);
        if let Some(slot) = regs.get_mut(reg) {
            *slot = value;
        }
        regs
    };
    [
        // Malformed ranges.
        bad("zero size", donate(range(donated.base, 0)), Invalid),
        bad("unaligned base", donate(range(handoff::modem().base + 0x800, PAGE_SIZE)), Invalid),
        bad("unaligned size", donate(range(handoff::modem().base, 0x1800)), Invalid),
        bad("address wraps", donate(range(0xffff_ffff_ffff_f000, 0x2000)), Invalid),
        bad("beyond 2^52", donate(range(PA_LIMIT - PAGE_SIZE, 0x2000)), Invalid),
        bad("LEND zero size", lend_req(range(handoff::dsp().base, 0), dsp).encode(), Invalid),
        bad("RECLAIM wraps", reclaim_req(range(!0xfff, 0x2000)).encode(), Invalid),
        // warden's own memory.
        bad("DONATE warden memory", donate(range(warden, PAGE_SIZE)), Denied),
        bad("LEND warden memory", lend_req(range(warden, PAGE_SIZE), dsp).encode(), Denied),
        bad("DONATE touching warden", donate(range(warden - PAGE_SIZE, 0x2000)), Denied),
        bad("RECLAIM warden memory", reclaim_req(range(warden, PAGE_SIZE)).encode(), Denied),
        // Not inside exactly one carveout.
        bad(
            "straddles modem's start",
            donate(range(handoff::modem().base - PAGE_SIZE, 0x2000)),
            Invalid,
        ),
        bad(
            "straddles modem/dsp",
            donate(range(handoff::modem().end() - PAGE_SIZE, 0x2000)),
            Invalid,
        ),
        bad(
            "straddles dsp's end",
            lend_req(range(handoff::dsp().end() - PAGE_SIZE, 0x2000), dsp).encode(),
            Invalid,
        ),
        bad("outside every carveout", donate(range(0x4800_0000, PAGE_SIZE)), Invalid),
        bad("index 2", donate(Target::Carveout(2)), Invalid),
        bad("index u32::MAX", donate(Target::Carveout(u32::MAX)), Invalid),
        bad("RECLAIM index 2", reclaim_req(Target::Carveout(2)).encode(), Invalid),
        bad(
            "BY_INDEX with a size",
            tweaked(donate_req(Target::Carveout(0), modem), |r| r[2] = PAGE_SIZE),
            Invalid,
        ),
        // Peers.
        bad("unknown peer 7", donate_req(modem_host, unknown_peer).encode(), Invalid),
        bad("peer 0", tweaked(donate_req(modem_host, modem), |r| r[3] = 0), Invalid),
        bad("peer 64", tweaked(donate_req(modem_host, modem), |r| r[3] = 64), Invalid),
        bad("modem carveout to the DSP", donate_req(modem_host, dsp).encode(), Denied),
        bad("LEND dsp carveout to the modem", lend_req(dsp_host, modem).encode(), Denied),
        bad("LEND of a donate carveout", lend_req(modem_host, modem).encode(), Denied),
        bad("DONATE of a lend carveout", donate_req(dsp_host, dsp).encode(), Denied),
        // State.
        bad("donating twice", donate(donated.target()), Denied),
        bad("DONATE half donated", donate(range(donated.base - PAGE_SIZE, 0x2000)), Denied),
        bad("DONATE mixed carveout by index", donate(Target::Carveout(0)), Denied),
        bad("lending twice", lend_req(lent.target(), dsp).encode(), Denied),
        bad("RECLAIM of host pages", reclaim_req(modem_host).encode(), Invalid),
        bad(
            "RECLAIM half donated",
            reclaim_req(range(donated.base - PAGE_SIZE, 0x2000)).encode(),
            Invalid,
        ),
        bad("RECLAIM while donated", reclaim_req(donated.target()).encode(), PeerHolds),
        bad(
            "RECLAIM part of a donated run",
            reclaim_req(range(donated.base + PAGE_SIZE, PAGE_SIZE)).encode(),
            PeerHolds,
        ),
        bad("RECLAIM while lent", reclaim_req(lent.target()).encode(), PeerHolds),
        // Caller.
        bad(
            "RELEASE from the host",
            Request::Release(Return { target: donated.target(), clear: false }).encode(),
            Denied,
        ),
        bad(
            "RELEASE by index from the host",
            Request::Release(Return { target: Target::Carveout(1), clear: false }).encode(),
            Denied,
        ),
        // The caller is checked before the arguments.
        bad(
            "RELEASE from the host, zero size",
            Request::Release(Return { target: range(donated.base, 0), clear: false }).encode(),
            Denied,
        ),
        bad(
            "RELEASE from the host, flag bit 2",
            tweaked(Request::Release(Return { target: donated.target(), clear: false }), |r| {
                r[3] = 4
            }),
            Denied,
        ),
        bad("PEER_DONE from the host", peer_done(0), Denied),
        bad("PEER_DONE from the host, x1", peer_done(1), Denied),
        // Reserved bits and registers, wrong convention.
        bad("DONATE flag bit 2", tweaked(donate_req(modem_host, modem), |r| r[4] = 4), Invalid),
        bad("DONATE x5", tweaked(donate_req(modem_host, modem), |r| r[5] = 1), Invalid),
        bad("DONATE x7", tweaked(donate_req(modem_host, modem), |r| r[7] = 1 << 63), Invalid),
        bad("RECLAIM x4", tweaked(reclaim_req(donated.target()), |r| r[4] = 1), Invalid),
        bad("RECLAIM flag bit 5", tweaked(reclaim_req(donated.target()), |r| r[3] = 32), Invalid),
        bad("CARVEOUT_INFO x2", tweaked(Request::CarveoutInfo { index: 0 }, |r| r[2] = 1), Invalid),
        bad(
            "RANGE_QUERY beyond 2^52",
            tweaked(Request::RangeQuery { addr: 0 }, |r| r[1] = PA_LIMIT),
            Invalid,
        ),
        bad("VIOLATION_COUNT x1", tweaked(Request::ViolationCount, |r| r[1] = 1), Invalid),
        bad("CARVEOUT_COUNT w1", tweaked(Request::CarveoutCount, |r| r[1] = 1), Invalid),
        bad(
            "DONATE as SMC32",
            tweaked(donate_req(modem_host, modem), |r| {
                r[0] ^= u64::from(warden_abi::smccc::CONV_64)
            }),
            NotSupported,
        ),
        bad("CARVEOUT_INFO 2", Request::CarveoutInfo { index: 2 }.encode(), NoData),
        // PEER_COMMAND refused before any peer runs.
        bad("PEER_COMMAND unknown peer", peer(unknown_peer, checksum), Invalid),
        bad("PEER_COMMAND op 9", peer_tweaked(2, 9), Invalid),
        bad("PEER_COMMAND x6", peer_tweaked(6, 1), Invalid),
        bad(
            "PEER_COMMAND unaligned",
            peer(modem, Op::Checksum { base: donated.base + 8, size: PAGE_SIZE }),
            Invalid,
        ),
        bad(
            "PEER_COMMAND Touch unaligned",
            peer(modem, Op::Touch { addr: donated.base + 4 }),
            Invalid,
        ),
        bad("PEER_COMMAND Touch beyond 2^52", peer(modem, Op::Touch { addr: PA_LIMIT }), Invalid),
        // Peer commands touch only what the peer holds (issue 11).
        bad(
            "PEER_COMMAND Checksum of host memory",
            peer(modem, Op::Checksum { base: handoff::modem().base, size: PAGE_SIZE }),
            Denied,
        ),
        bad(
            "PEER_COMMAND Fill of another peer's range",
            peer(modem, Op::Fill { base: lent.base, size: PAGE_SIZE, pattern: 1 }),
            Denied,
        ),
        bad(
            "PEER_COMMAND Checksum reaching past the peer's range",
            peer(modem, Op::Checksum { base: donated.base, size: donated.size + PAGE_SIZE }),
            Denied,
        ),
        bad("SMMU_STATS x1", tweaked_stats(1), Invalid),
    ]
}

fn warden_base(platform: &Platform) -> Result<u64, Reason> {
    match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) => Ok(region.base),
            None => fail!("the DT names no warden region"),
        },
        Err(why) => fail!("{why}"),
    }
}

/// The peer touches `addr`, which it was not given: PEER_FAULT, and one new incident naming
/// the address, a read, and `owner`.
fn peer_touch_refused(peer: PeerId, addr: u64, owner: Owner) -> Outcome {
    let before = violations()?;
    match handoff::peer_command(peer, Op::Touch { addr }) {
        Err(CallError::Refused(AbiError::PeerFault)) => {}
        other => fail!("PEER_COMMAND({peer:?}) Touch {addr:#x}: {other:?}, expected PEER_FAULT"),
    }
    let after = violations()?;
    if after.incidents != before.incidents + 1 {
        fail!("{peer:?} Touch {addr:#x}: VIOLATION_COUNT {} -> {}", Show(before), Show(after));
    }
    let info = find_violation(&after, addr, None)?;
    let read = !info.access.write && !info.access.fetch;
    if !read || !matches!(info.access.size, Some(8) | None) || info.owner != owner {
        fail!(
            "{peer:?} Touch {addr:#x}: record {}, expected an 8-byte read, {owner:?}",
            Show(info)
        );
    }
    Ok(())
}

/// Scenario `bad_requests_change_nothing`: with part of each carveout handed over, every bad
/// request gets its documented error and leaves carveouts, runs and violation counters as they
/// were; a peer touching memory it was not given gets PEER_FAULT and is recorded.
pub fn bad_requests_change_nothing(platform: &Platform) -> Outcome {
    const SEED: u64 = 0xbad;
    expect_all_host()?;
    let warden = warden_base(platform)?;
    let donated = handoff::modem().span(0x40_0000, 0x4000);
    let lent = handoff::dsp().span(0x40_0000, 0x4000);
    write_pattern(donated, SEED)?;
    hand_over(&handoff::modem(), donated, false)?;
    hand_over(&handoff::dsp(), lent, false)?;
    let before = snapshot(donated, lent)?;
    for case in bad_requests(warden, donated, lent) {
        let out = check(handoff::raw_call(Conduit::Hvc, case.regs), case.what)?;
        match handoff::status(&out) {
            Err(got) if got == case.expected => {}
            Err(got) => fail!("{}: {got}, expected {}", case.what, case.expected),
            Ok(()) => fail!("{}: SUCCESS {out:#x?}, expected {}", case.what, case.expected),
        }
        let now = snapshot(donated, lent)?;
        if let Some(change) = before.first_change(&now) {
            fail!("{} changed {change}", case.what);
        }
    }
    // The peer only reaches what it was given.
    let touch = handoff::peer_command(handoff::modem().peer, Op::Touch { addr: donated.base + 8 });
    let value = check(touch, "modem Touch of its donated range")?.result;
    if value != handoff::pattern_at(SEED, donated.base + 8) {
        fail!(
            "modem Touch {:#x} read {value:#x}, the host wrote {:#x}",
            donated.base + 8,
            handoff::pattern_at(SEED, donated.base + 8)
        );
    }
    peer_touch_refused(handoff::modem().peer, handoff::modem().base + 0x8_0000, Owner::Host)?;
    peer_touch_refused(
        handoff::dsp().peer,
        donated.base + 0x1000,
        Owner::Peer(handoff::modem().peer),
    )?;
    let after = snapshot(donated, lent)?;
    let after = Snapshot { violations: before.violations, ..after };
    if let Some(change) = before.first_change(&after) {
        fail!("the peer's refused touches changed {change}");
    }
    give_back(&handoff::modem(), donated, false)?;
    give_back(&handoff::dsp(), lent, false)?;
    expect_all_host()
}

/// Prefixes a failure with the cycle it happened in.
fn step<T>(cycle: u64, result: Result<T, Reason>) -> Result<T, Reason> {
    result.map_err(|why| Reason::new(format_args!("cycle {cycle}: {why}")))
}

/// Cycles each CPU runs in `two_cpus_hammer_carveouts`.
pub const HAMMER_CYCLES: u64 = 1000;
/// Bound on each CPU's cycles (QEMU TCG, one peer CPU shared by both).
pub const HAMMER_DEADLINE_MS: u64 = 60_000;

/// What one CPU's hammer loop did.
#[derive(Clone, Copy, Debug, Default)]
pub struct HammerStats {
    pub cycles: u64,
    /// `RETRY` answers to PEER_COMMAND (the peer was busy with the other CPU's command).
    pub retries: u64,
    pub elapsed_ms: u64,
}

/// `HAMMER_CYCLES` of hand over → RANGE_QUERY → peer release → RANGE_QUERY → reclaim →
/// RANGE_QUERY on sub-ranges of `c` of 1..8 pages at varying offsets, each answer checked.
/// Runs on either CPU (prints nothing).
pub fn hammer(c: &Carveout) -> Result<HammerStats, Reason> {
    let start = cpu::counter();
    let mut stats = HammerStats::default();
    let slots = c.size / PAGE_SIZE - 8;
    for cycle in 0..HAMMER_CYCLES {
        if cycle % 32 == 0 && cpu::elapsed_ms(start) > HAMMER_DEADLINE_MS {
            fail!(
                "{:?}: only {cycle} of {HAMMER_CYCLES} cycles in {HAMMER_DEADLINE_MS} ms",
                c.peer
            );
        }
        let span = c.span((cycle * 97 % slots) * PAGE_SIZE, (1 + cycle % 8) * PAGE_SIZE);
        step(cycle, hand_over(c, span, false))?;
        step(cycle, expect_run(span.base, span.run(c.handed_state(), c)))?;
        stats.retries += step(cycle, peer_release(c.peer, span))?;
        step(cycle, expect_run(span.base, span.run(RangeState::PeerReleased(c.peer), c)))?;
        step(cycle, reclaim(span, false))?;
        step(cycle, expect_run(span.base, all_host(c)))?;
        stats.cycles = cycle + 1;
    }
    stats.elapsed_ms = cpu::elapsed_ms(start);
    Ok(stats)
}

/// How long after CPU_ON the primary waits at most for the secondary's loop to end: its
/// deadline plus the time a last cycle may take (a few PEER_COMMAND timeouts).
const HAMMER_WAIT_MS: u64 = HAMMER_DEADLINE_MS + 10_000;

/// Scenario `two_cpus_hammer_carveouts`: CPU 0 donates/reclaims sub-ranges of the modem
/// carveout while the secondary CPU lends/reclaims sub-ranges of the DSP's, the peer releasing
/// each in between; both finish every cycle, both carveouts end `Host`, no violation occurs.
pub fn two_cpus_hammer_carveouts(platform: &Platform) -> Outcome {
    expect_all_host()?;
    let conduit = platform.psci.map_err(|why| Reason::new(format_args!("{why}")))?;
    let own = cpu::mpidr_affinity();
    let cpus = match &platform.cpus {
        Ok(cpus) => cpus.as_slice(),
        Err(why) => fail!("{why}"),
    };
    let Some(&target) = cpus.iter().find(|&&mpidr| mpidr != own) else {
        fail!("the DT lists no CPU other than this one ({own:#x})");
    };
    let slot = secondary::HANDOFF_SLOT;
    let Some(mailbox) = secondary::mailbox(usize::from(slot)) else {
        fail!("no mailbox for slot {slot}");
    };
    let violations_before = violations()?;
    mailbox.clear();
    mailbox.task.store(secondary::TASK_HAMMER_DSP);
    let entry = secondary_entry as *const () as usize as u64;
    let started = cpu::counter();
    let status = smccc::cpu_on(conduit, target, entry, secondary::context_id(3, slot));
    if status != warden_abi::psci::SUCCESS {
        fail!("CPU_ON({target:#x}) for the DSP loop returned {status}");
    }
    let ours = hammer(&handoff::modem());
    let wait_ms = HAMMER_WAIT_MS.saturating_sub(cpu::elapsed_ms(started)).max(1000);
    let done = cpu::wait_until(wait_ms, || mailbox.task_done.load() != 0);
    let off = cpu::wait_until(5000, || {
        smccc::affinity_info(conduit, target) == warden_abi::psci::AFFINITY_OFF
    });
    let ours = ours.map_err(|why| Reason::new(format_args!("CPU 0 (modem): {why}")))?;
    if !done {
        fail!(
            "the secondary CPU (DSP loop) did not finish (context seen: {:#x})",
            mailbox.context.load()
        );
    }
    let theirs = secondary::task_result(mailbox)
        .map_err(|why| Reason::new(format_args!("CPU {target:#x} (dsp): {why}")))?;
    println!(
        "guest: note two_cpus_hammer_carveouts: CPU 0: {} cycles on modem in {} ms ({} us per \
         cycle, {} RETRY); CPU {target:#x}: {} cycles on dsp in {} ms ({} us per cycle, {} RETRY)",
        ours.cycles,
        ours.elapsed_ms,
        ours.elapsed_ms * 1000 / ours.cycles.max(1),
        ours.retries,
        theirs.cycles,
        theirs.elapsed_ms,
        theirs.elapsed_ms * 1000 / theirs.cycles.max(1),
        theirs.retries
    );
    if !off {
        fail!("CPU {target:#x} is not OFF after its loop");
    }
    if ours.cycles != HAMMER_CYCLES || theirs.cycles != HAMMER_CYCLES {
        fail!(
            "cycles: CPU 0 {}, CPU {target:#x} {}, expected {HAMMER_CYCLES}",
            ours.cycles,
            theirs.cycles
        );
    }
    expect_all_host()?;
    expect_run(handoff::modem().base, all_host(&handoff::modem()))?;
    expect_run(handoff::dsp().base, all_host(&handoff::dsp()))?;
    let violations_after = violations()?;
    if violations_after != violations_before {
        fail!(
            "violations during the loops: {} -> {}",
            Show(violations_before),
            Show(violations_after)
        );
    }
    Ok(())
}
