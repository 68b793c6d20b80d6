//! The host's side of warden's carveout handoff ABI, for the handoff scenarios: typed calls
//! (built and read only with `warden_abi`'s encoders and decoders), the carveouts qemu-virt is
//! expected to have, pattern and checksum passes over carveout memory, and putting every
//! carveout back into state `Host`.

use core::fmt;

use warden_abi::AbiError;
use warden_abi::handoff::{
    CarveoutCount, CarveoutInfo, CarveoutState, PeerId, Policy, RangeInfo, RangeState, Request,
    Return, Target, Transfer, TransferDone, ViolationCount, ViolationInfo,
};
use warden_abi::peer::{Checksum, Op, PeerCommand};

use crate::cpu;
use crate::exceptions::{self, Caught};
use crate::platform::BoardCarveouts;
use crate::report::Reason;
use crate::shared::SharedU64;
use crate::smccc::{self, Conduit};

/// A carveout as the board is expected to announce it (`boards/qemu-virt/carveouts.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carveout {
    pub index: u32,
    pub base: u64,
    pub size: u64,
    pub peer: PeerId,
    pub policy: Policy,
    pub clear_on_reclaim: bool,
}

/// Where the board put its carveouts (it places them inside whatever RAM the machine has), as
/// the DT the guest was given says: modem base and size, then the DSP's. Written once by
/// [`set_board_carveouts`] before any scenario runs, read by every CPU.
static BOARD_CARVEOUTS: [SharedU64; 4] =
    [SharedU64::new(0), SharedU64::new(0), SharedU64::new(0), SharedU64::new(0)];

/// Records where the DT says the board's carveouts are (`/reserved-memory/modem@*`, `dsp@*`).
pub fn set_board_carveouts(found: &BoardCarveouts) {
    let words = [found.modem.0, found.modem.1, found.dsp.0, found.dsp.1];
    for (slot, word) in BOARD_CARVEOUTS.iter().zip(words) {
        slot.store(word);
    }
}

/// qemu-virt's carveout 0: the modem's (16 MiB where the DT says), donate only.
pub fn modem() -> Carveout {
    Carveout {
        index: 0,
        base: BOARD_CARVEOUTS[0].load(),
        size: BOARD_CARVEOUTS[1].load(),
        peer: PeerId::MODEM,
        policy: Policy::Donate,
        clear_on_reclaim: false,
    }
}

/// qemu-virt's carveout 1: the DSP's (16 MiB right after the modem's), lend only, scrubbed on
/// reclaim.
pub fn dsp() -> Carveout {
    Carveout {
        index: 1,
        base: BOARD_CARVEOUTS[2].load(),
        size: BOARD_CARVEOUTS[3].load(),
        peer: PeerId::DSP,
        policy: Policy::Lend,
        clear_on_reclaim: true,
    }
}

pub fn carveouts() -> [Carveout; 2] {
    [modem(), dsp()]
}

impl Carveout {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }

    pub const fn whole(&self) -> Span {
        Span { base: self.base, size: self.size }
    }

    /// `[base + offset, + size)`.
    pub const fn span(&self, offset: u64, size: u64) -> Span {
        Span { base: self.base + offset, size }
    }

    /// What `CARVEOUT_INFO` must say while the carveout is in `state`.
    pub const fn info(&self, state: CarveoutState) -> CarveoutInfo {
        CarveoutInfo {
            base: self.base,
            size: self.size,
            peer: self.peer,
            policy: self.policy,
            clear_on_reclaim: self.clear_on_reclaim,
            state,
        }
    }

    /// The state a successful transfer of the carveout's kind leaves a range in.
    pub const fn handed_state(&self) -> RangeState {
        match self.policy {
            Policy::Donate => RangeState::Donated(self.peer),
            Policy::Lend => RangeState::Lent(self.peer),
        }
    }

    /// DONATE or LEND, whichever the carveout's policy allows, to its own peer.
    pub fn hand_over(&self, target: Target, clear: bool) -> Result<TransferDone, CallError> {
        let transfer = Transfer { target, peer: self.peer, clear };
        match self.policy {
            Policy::Donate => call(Request::Donate(transfer), TransferDone::decode),
            Policy::Lend => call(Request::Lend(transfer), TransferDone::decode),
        }
    }

    /// The carveout containing all of `span`, if any.
    pub fn containing(span: Span) -> Option<Carveout> {
        carveouts()
            .into_iter()
            .find(|c| span.size != 0 && span.base >= c.base && span.end() <= c.end())
    }
}

/// A page range named in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub base: u64,
    pub size: u64,
}

impl Span {
    pub const fn end(&self) -> u64 {
        self.base.wrapping_add(self.size)
    }

    pub const fn target(&self) -> Target {
        Target::Range { base: self.base, size: self.size }
    }

    /// The `RANGE_QUERY` answer for a run that is exactly this span.
    pub const fn run(&self, state: RangeState, carveout: &Carveout) -> RangeInfo {
        RangeInfo { base: self.base, size: self.size, state, carveout: carveout.index }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x}", self.base, self.size)
    }
}

/// Compact text of ABI values for failure reasons (which are cut at 200 bytes): addresses in
/// hex, no field names.
pub struct Show<T>(pub T);

impl fmt::Display for Show<RangeInfo> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        write!(f, "[{:#x}+{:#x} {:?} #{}]", r.base, r.size, r.state, r.carveout)
    }
}

impl fmt::Display for Show<CarveoutInfo> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0;
        let clear = if c.clear_on_reclaim { " clear-on-reclaim" } else { "" };
        write!(
            f,
            "[{:#x}+{:#x} peer {} {:?}{clear} {:?}]",
            c.base,
            c.size,
            c.peer.get(),
            c.policy,
            c.state
        )
    }
}

impl fmt::Display for Show<ViolationCount> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        write!(f, "[{} incidents from {}, {} accesses]", v.incidents, v.oldest, v.accesses)
    }
}

impl fmt::Display for Show<ViolationInfo> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        let a = &v.access;
        write!(
            f,
            "[IPA {:x?} VA {:x?} ELR {:#x} ESR {:#x} size {:?}{}{} {:?} cpu {} x{}]",
            v.ipa,
            v.va,
            v.elr,
            v.esr,
            a.size,
            if a.write { " write" } else { " read" },
            if a.fetch { " fetch" } else { "" },
            v.owner,
            v.cpu,
            v.count
        )
    }
}

/// Why a call did not give the expected kind of answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// warden answered with this error code.
    Refused(AbiError),
    /// `x0` was 0 but the other registers break the ABI (the decoder refused them).
    Malformed([u64; 8]),
    /// The HVC raised an exception instead of being answered.
    Exception { esr: u64, elr: u64 },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused(error) => write!(f, "{error}"),
            CallError::Malformed(regs) => write!(f, "malformed reply {regs:#x?}"),
            CallError::Exception { esr, elr } => {
                write!(f, "HVC raised an exception: ESR {esr:#x}, ELR {elr:#x}")
            }
        }
    }
}

/// Turns a call's error into a scenario failure naming what was attempted.
pub fn check<T>(result: Result<T, CallError>, what: impl fmt::Display) -> Result<T, Reason> {
    result.map_err(|error| Reason::new(format_args!("{what}: {error}")))
}

/// Issues `regs` (x0..x7) through `conduit`; an exception instead of an answer is an error.
pub fn raw_call(conduit: Conduit, regs: [u64; 8]) -> Result<[u64; 8], CallError> {
    match exceptions::catch(|| smccc::call_regs(conduit, regs)) {
        (out, None) => Ok(out),
        (_, Some(Caught { esr, elr, .. })) => Err(CallError::Exception { esr, elr }),
    }
}

/// The error `x0` stands for, if it is not `SUCCESS`.
pub fn status(regs: &[u64; 8]) -> Result<(), AbiError> {
    match AbiError::from_code(regs[0] as i64) {
        Some(error) => Err(error),
        None if regs[0] == 0 => Ok(()),
        // A positive x0: no call of this ABI returns one.
        None => Err(AbiError::Unknown(regs[0] as i64)),
    }
}

fn decode_reply<T>(
    out: [u64; 8],
    decode: fn(&[u64; 8]) -> Result<T, AbiError>,
) -> Result<T, CallError> {
    status(&out).map_err(CallError::Refused)?;
    decode(&out).map_err(|_| CallError::Malformed(out))
}

/// One call through `conduit`, its reply decoded.
pub fn call_via<T>(
    conduit: Conduit,
    request: Request,
    decode: fn(&[u64; 8]) -> Result<T, AbiError>,
) -> Result<T, CallError> {
    decode_reply(raw_call(conduit, request.encode())?, decode)
}

/// One call by HVC, its reply decoded.
pub fn call<T>(
    request: Request,
    decode: fn(&[u64; 8]) -> Result<T, AbiError>,
) -> Result<T, CallError> {
    call_via(Conduit::Hvc, request, decode)
}

pub fn carveout_count() -> Result<u32, CallError> {
    call(Request::CarveoutCount, CarveoutCount::decode).map(|c| c.count)
}

pub fn carveout_info(index: u32) -> Result<CarveoutInfo, CallError> {
    call(Request::CarveoutInfo { index }, CarveoutInfo::decode)
}

pub fn range_query(addr: u64) -> Result<RangeInfo, CallError> {
    call(Request::RangeQuery { addr }, RangeInfo::decode)
}

pub fn donate(target: Target, peer: PeerId, clear: bool) -> Result<TransferDone, CallError> {
    call(Request::Donate(Transfer { target, peer, clear }), TransferDone::decode)
}

pub fn lend(target: Target, peer: PeerId, clear: bool) -> Result<TransferDone, CallError> {
    call(Request::Lend(Transfer { target, peer, clear }), TransferDone::decode)
}

pub fn reclaim(target: Target, clear: bool) -> Result<TransferDone, CallError> {
    call(Request::Reclaim(Return { target, clear }), TransferDone::decode)
}

pub fn violation_count() -> Result<ViolationCount, CallError> {
    call(Request::ViolationCount, ViolationCount::decode)
}

pub fn violation_info(seq: u64) -> Result<ViolationInfo, CallError> {
    call(Request::ViolationInfo { seq }, ViolationInfo::decode)
}

/// How long `PEER_COMMAND` is retried while warden answers `RETRY` (the one peer CPU is busy
/// with another CPU's command).
const PEER_RETRY_MS: u64 = 10_000;

/// A `PEER_COMMAND`'s answer.
#[derive(Clone, Copy, Debug)]
pub struct PeerAnswer {
    /// `x1`: the command's result.
    pub result: u64,
    /// `RETRY` answers before this one.
    pub retries: u64,
}

/// A successful `PEER_COMMAND` reply is `x1` = result and zeros in `x2..x7`.
fn decode_peer_reply(regs: &[u64; 8]) -> Result<u64, AbiError> {
    if regs.iter().skip(2).any(|&r| r != 0) {
        return Err(AbiError::InvalidParameters);
    }
    Ok(regs[1])
}

/// Runs `op` on `peer` (retrying while warden says `RETRY`, for up to [`PEER_RETRY_MS`]).
pub fn peer_command(peer: PeerId, op: Op) -> Result<PeerAnswer, CallError> {
    let regs = PeerCommand { peer, op }.encode();
    let start = cpu::counter();
    let mut retries = 0;
    loop {
        match decode_reply(raw_call(Conduit::Hvc, regs)?, decode_peer_reply) {
            Err(CallError::Refused(AbiError::Retry)) if cpu::elapsed_ms(start) < PEER_RETRY_MS => {
                retries += 1;
                core::hint::spin_loop();
            }
            Err(error) => return Err(error),
            Ok(result) => return Ok(PeerAnswer { result, retries }),
        }
    }
}

/// The peer releases `span` (its own `RELEASE`); fails unless warden answered it with 0.
pub fn peer_release(peer: PeerId, span: Span) -> Result<u64, Reason> {
    let op = Op::Release { base: span.base, size: span.size, clear: false };
    let answer = check(peer_command(peer, op), format_args!("PEER_COMMAND Release {span}"))?;
    if answer.result != 0 {
        let error = AbiError::from_code(answer.result as i64);
        return Err(Reason::new(format_args!(
            "the peer's RELEASE {span} got {:#x} ({})",
            answer.result,
            error.map_or("not an error code", AbiError::name)
        )));
    }
    Ok(answer.retries)
}

/// The peer's checksum of `span`.
pub fn peer_checksum(peer: PeerId, span: Span) -> Result<u64, Reason> {
    let op = Op::Checksum { base: span.base, size: span.size };
    check(peer_command(peer, op), format_args!("PEER_COMMAND Checksum {span}")).map(|a| a.result)
}

/// The peer fills `span` with `pattern`.
pub fn peer_fill(peer: PeerId, span: Span, pattern: u64) -> Result<(), Reason> {
    let op = Op::Fill { base: span.base, size: span.size, pattern };
    let answer = check(peer_command(peer, op), format_args!("PEER_COMMAND Fill {span}"))?;
    if answer.result != 0 {
        return Err(Reason::new(format_args!(
            "PEER_COMMAND Fill {span}: result {:#x}, expected 0",
            answer.result
        )));
    }
    Ok(())
}

/// `RANGE_QUERY(addr)` must answer exactly `expected`.
pub fn expect_run(addr: u64, expected: RangeInfo) -> Result<(), Reason> {
    let run = check(range_query(addr), format_args!("RANGE_QUERY({addr:#x})"))?;
    if run != expected {
        return Err(Reason::new(format_args!(
            "RANGE_QUERY({addr:#x}) = {}, expected {}",
            Show(run),
            Show(expected)
        )));
    }
    Ok(())
}

/// `CARVEOUT_INFO(c.index)` must describe `c` in `state`.
pub fn expect_carveout(c: &Carveout, state: CarveoutState) -> Result<(), Reason> {
    let info = check(carveout_info(c.index), format_args!("CARVEOUT_INFO({})", c.index))?;
    let expected = c.info(state);
    if info != expected {
        return Err(Reason::new(format_args!(
            "CARVEOUT_INFO({}) = {}, expected {}",
            c.index,
            Show(info),
            Show(expected)
        )));
    }
    Ok(())
}

/// Every expected carveout must be wholly `Host`: what each handoff scenario starts from.
pub fn expect_all_host() -> Result<(), Reason> {
    for c in carveouts() {
        expect_carveout(&c, CarveoutState::Uniform(RangeState::Host))?;
    }
    Ok(())
}

/// Most runs walked per carveout when putting it back (each handoff scenario makes a few).
const MAX_RUNS: usize = 64;

/// Returns every carveout to `Host`: runs still with a peer are released by it, released runs
/// reclaimed. Without the handoff ABI (`CARVEOUT_COUNT` is `NOT_SUPPORTED`) nothing can have
/// changed, so that is success.
pub fn restore_all_host() -> Result<(), Reason> {
    let count = match carveout_count() {
        Err(CallError::Refused(AbiError::NotSupported)) => return Ok(()),
        other => check(other, "CARVEOUT_COUNT")?,
    };
    for index in 0..count.min(16) {
        let info = check(carveout_info(index), format_args!("CARVEOUT_INFO({index})"))?;
        if info.state == CarveoutState::Uniform(RangeState::Host) {
            continue;
        }
        let end = info.base.saturating_add(info.size);
        let mut addr = info.base;
        for _ in 0..MAX_RUNS {
            if addr >= end {
                break;
            }
            let run = check(range_query(addr), format_args!("RANGE_QUERY({addr:#x})"))?;
            let span = Span { base: run.base, size: run.size };
            if span.end() <= addr {
                return Err(Reason::new(format_args!(
                    "RANGE_QUERY({addr:#x}) = {} does not contain the address",
                    Show(run)
                )));
            }
            match run.state {
                RangeState::Host => {}
                RangeState::Donated(peer) | RangeState::Lent(peer) => {
                    peer_release(peer, span)?;
                    check(reclaim(span.target(), false), format_args!("RECLAIM {span}"))?;
                }
                RangeState::PeerReleased(_) => {
                    check(reclaim(span.target(), false), format_args!("RECLAIM {span}"))?;
                }
                // Only Qualcomm's assign_mem shares (the Snapdragon persona).
                RangeState::Shared(peer) => crate::scm_scenarios::unshare(span, peer)?,
                transient => {
                    return Err(Reason::new(format_args!(
                        "{span} is stuck in {transient:?} (a transfer never finished)"
                    )));
                }
            }
            addr = span.end();
        }
        let after = check(carveout_info(index), format_args!("CARVEOUT_INFO({index})"))?;
        if after.state != CarveoutState::Uniform(RangeState::Host) {
            return Err(Reason::new(format_args!(
                "carveout {index} is {:?} after restoring it",
                after.state
            )));
        }
    }
    Ok(())
}

/// Word of test pattern `seed` at `addr`: a function of the address, never 0.
pub const fn pattern_at(seed: u64, addr: u64) -> u64 {
    (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.rotate_left(29)) | 1
}

/// Checks that `span` lies in one expected carveout: the only memory these passes touch
/// (reserved no-map, so no memory of the guest's image, stacks or DT).
fn carveout_memory(span: Span) -> Result<(), Reason> {
    if Carveout::containing(span).is_none() || !span.base.is_multiple_of(8) {
        return Err(Reason::new(format_args!("{span} is not inside a carveout")));
    }
    Ok(())
}

/// Runs `pass` over every word address of `span` with a probe armed; stops at the first abort
/// and reports it (a failure instead of a fatal exception when warden wrongly refuses the host).
fn guarded_pass(span: Span, what: &str, mut pass: impl FnMut(u64) -> bool) -> Result<(), Reason> {
    carveout_memory(span)?;
    let mut addr = span.base;
    let ((), caught) = exceptions::catch(|| {
        while addr < span.end() {
            if !pass(addr) || exceptions::caught_yet() {
                return;
            }
            addr += 8;
        }
    });
    match caught {
        Some(caught) => Err(Reason::new(format_args!(
            "host {what} of {span} aborted at {:#x} (ESR {:#x}): is the range still the host's?",
            caught.far, caught.esr
        ))),
        None => Ok(()),
    }
}

fn read_word(addr: u64) -> u64 {
    // SAFETY: only called by passes that checked the word lies in a carveout (memory no part
    // of this program uses) and is 8-byte aligned; with the MMU off the address is physical.
    unsafe { (addr as *const u64).read_volatile() }
}

fn write_word(addr: u64, value: u64) {
    // SAFETY: as for `read_word`.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

/// Writes pattern `seed` over `span`.
pub fn write_pattern(span: Span, seed: u64) -> Result<(), Reason> {
    guarded_pass(span, "write", |addr| {
        write_word(addr, pattern_at(seed, addr));
        true
    })
}

/// The host's [`Checksum`] of `span`, the way the peer computes it.
pub fn host_checksum(span: Span) -> Result<u64, Reason> {
    let mut sum = Checksum::new();
    guarded_pass(span, "read", |addr| {
        sum = sum.add(read_word(addr));
        true
    })?;
    Ok(sum.value())
}

/// The checksum of `span` holding only zeros.
pub fn zero_checksum(span: Span) -> u64 {
    (0..span.size / 8).fold(Checksum::new(), |sum, _| sum.add(0)).value()
}

/// Every word of `span` must be `expected(addr)`; `what` names the expectation.
pub fn expect_words(span: Span, what: &str, expected: impl Fn(u64) -> u64) -> Result<(), Reason> {
    let mut mismatch = None;
    guarded_pass(span, "read", |addr| {
        let value = read_word(addr);
        if value != expected(addr) {
            mismatch = Some((addr, value));
        }
        mismatch.is_none()
    })?;
    match mismatch {
        Some((addr, value)) => Err(Reason::new(format_args!(
            "{span}: word at {addr:#x} is {value:#x}, expected {what} {:#x}",
            expected(addr)
        ))),
        None => Ok(()),
    }
}
