//! Handoff scenarios of issue 11 (hardening):
//!
//! - `peer_write_after_release_refused`: once the peer has RELEASEd a range (with CLEAR) it can
//!   reach it no more: its FILL and TOUCH of the range are refused (a contained peer fault, or
//!   the command refused outright), and the zeros warden wrote at the release are what the host
//!   reclaims.
//! - `carveout_neighbours_never_fault`: CPU 0 runs [`CYCLES`] donate → peer release → reclaim
//!   cycles of a range of the modem carveout while two other CPUs and edu's DMA engine use the
//!   pages right next to it, inside the carveout (both sides) and outside it (both sides):
//!   none of those accesses may abort, no SMMU event may occur, no data may change. Every
//!   [`WHOLE_BLOCK_EVERY`]th cycle hands over the whole 2 MiB block around the range instead
//!   (the CPUs and edu stay off the pages inside it meanwhile), so a warden that maps that block
//!   with one entry must break it again on the next cycle.

use core::cell::UnsafeCell;

use warden_abi::AbiError;
use warden_abi::handoff::{Owner, PAGE_SIZE, RangeState, ViolationCount};
use warden_abi::peer::Op;

use crate::console::println;
use crate::cpu;
use crate::edu::{DmaPage, Edu};
use crate::entry::secondary_entry;
use crate::exceptions;
use crate::handoff::{
    self, CallError, Show, Span, check, expect_all_host, expect_run, modem, peer_command,
    write_pattern,
};
use crate::handoff_scenarios::HammerStats;
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::secondary;
use crate::shared::SharedU64;
use crate::smccc;
use crate::vsmmu::Smmu;
use crate::vsmmu_scenarios::smmu_stats;

fn violations() -> Result<ViolationCount, Reason> {
    check(handoff::violation_count(), "VIOLATION_COUNT")
}

/// DONATE (the modem's policy) of `span`, checked.
fn donate(span: Span) -> Outcome {
    let done = check(modem().hand_over(span.target(), false), format_args!("DONATE {span}"))?;
    if (done.base, done.size) != (span.base, span.size) {
        fail!("DONATE {span} answered {:#x}+{:#x}", done.base, done.size);
    }
    Ok(())
}

fn reclaim(span: Span) -> Outcome {
    let done = check(handoff::reclaim(span.target(), false), format_args!("RECLAIM {span}"))?;
    if (done.base, done.size) != (span.base, span.size) {
        fail!("RECLAIM {span} answered {:#x}+{:#x}", done.base, done.size);
    }
    Ok(())
}

/// The peer's own RELEASE of `span`, with `clear`; the number of RETRY answers.
fn peer_release(span: Span, clear: bool) -> Result<u64, Reason> {
    let op = Op::Release { base: span.base, size: span.size, clear };
    let answer =
        check(peer_command(modem().peer, op), format_args!("PEER_COMMAND Release {span}"))?;
    if answer.result != 0 {
        fail!("the peer's RELEASE {span} got {:#x}", answer.result);
    }
    Ok(answer.retries)
}

/// A peer command on memory the peer released: refused, one way or the other. A peer fault
/// must be recorded as one new incident at `addr` owned by the modem; a command refused before
/// the peer runs (INVALID_PARAMETERS or DENIED: warden checking the command against what the
/// peer holds) must record nothing.
fn peer_refused(op: Op, addr: u64, write: bool) -> Outcome {
    let before = violations()?;
    let outcome = peer_command(modem().peer, op);
    let after = violations()?;
    match outcome {
        Err(CallError::Refused(AbiError::PeerFault)) => {
            if after.incidents != before.incidents + 1 {
                fail!("{op:?}: PEER_FAULT, VIOLATION_COUNT {} -> {}", Show(before), Show(after));
            }
            let info = check(
                handoff::violation_info(after.incidents - 1),
                format_args!("VIOLATION_INFO({})", after.incidents - 1),
            )?;
            if info.ipa != Some(addr) || info.access.write != write {
                fail!("{op:?}: record {}, expected {addr:#x} (write {write})", Show(info));
            }
            if info.owner != Owner::Peer(modem().peer) {
                fail!("{op:?}: record {}, expected the modem as owner", Show(info));
            }
            Ok(())
        }
        Err(CallError::Refused(AbiError::InvalidParameters | AbiError::Denied)) => {
            if after != before {
                fail!("{op:?} refused, but VIOLATION_COUNT {} -> {}", Show(before), Show(after));
            }
            Ok(())
        }
        Ok(answer) => fail!(
            "the peer's {op:?} after its RELEASE answered {:#x}: it still reaches the range",
            answer.result
        ),
        Err(other) => fail!("{op:?} after RELEASE: {other}, expected PEER_FAULT"),
    }
}

/// Scenario `peer_write_after_release_refused` (issue 11, section 8): the peer RELEASEs with
/// CLEAR, then tries to write (FILL) and read (TOUCH) the range: both refused, and the host
/// reclaims the zeros of the release, not the peer's pattern.
pub fn peer_write_after_release_refused() -> Outcome {
    const SEED: u64 = 0x4e1ea5e;
    const FILL: u64 = 0xf111_dead_beef_f111;
    expect_all_host()?;
    let span = modem().span(0x60_0000, 0x2000);
    write_pattern(span, SEED)?;
    donate(span)?;
    peer_release(span, true)?;
    expect_run(span.base, span.run(RangeState::PeerReleased(modem().peer), &modem()))?;
    peer_refused(Op::Fill { base: span.base, size: span.size, pattern: FILL }, span.base, true)?;
    peer_refused(Op::Touch { addr: span.base + 8 }, span.base + 8, false)?;
    expect_run(span.base, span.run(RangeState::PeerReleased(modem().peer), &modem()))?;
    reclaim(span)?;
    handoff::expect_words(span, "zero (scrubbed at RELEASE, nothing written after)", |_| 0)?;
    expect_all_host()
}

/// Cycles CPU 0 runs in `carveout_neighbours_never_fault`.
pub const CYCLES: u64 = 10_000;
/// Every this many cycles the whole 2 MiB block around [`range()`] is handed over instead.
const WHOLE_BLOCK_EVERY: u64 = 100;
/// Bound on CPU 0's loop (QEMU TCG on two shared host cores, four busy CPUs; below xtask's
/// 900 s for the run).
const DEADLINE_MS: u64 = 780_000;
/// How long CPU 0 waits for the other CPUs to step off the block's pages.
const PAUSE_TIMEOUT_MS: u64 = 5_000;

/// What is handed over: two pages near the start of the modem carveout, inside its first
/// 2 MiB block.
fn range() -> Span {
    modem().span(0x1000, 0x2000)
}
/// The 2 MiB block around it.
fn block() -> Span {
    modem().span(0, 0x20_0000)
}
/// The pages next to [`range()`], inside the carveout (and inside [`block()`]).
fn inside() -> [u64; 2] {
    [modem().base, modem().base + 0x3000]
}
/// The pages next to the carveout, outside it: host RAM below, the DSP's carveout (idle, the
/// host's) above.
fn outside() -> [u64; 2] {
    [modem().base - PAGE_SIZE, modem().base + modem().size]
}
/// In each hammered page: CPU 1's words, CPU 2's words, then edu's half.
const CPU1_WORDS: core::ops::Range<u64> = 0..128;
const CPU2_WORDS: core::ops::Range<u64> = 128..256;
const DMA_OFFSET: u64 = 0x800;
const DMA_BYTES: u64 = 0x800;

/// Shared between CPU 0 and the hammering CPUs.
struct Control {
    /// Set by CPU 0 when its loop ended.
    stop: SharedU64,
    /// Odd while CPU 0 wants the pages inside [`block()`] left alone; CPU 0 waits for every
    /// hammer to echo the odd value in its `paused` before handing the block over.
    pause: SharedU64,
}

static CONTROL: Control = Control { stop: SharedU64::new(0), pause: SharedU64::new(0) };

/// One hammering CPU's report (slot = its secondary slot).
struct Report {
    paused: SharedU64,
    passes: SharedU64,
    aborts: SharedU64,
    mismatches: SharedU64,
    dma_rounds: SharedU64,
    dma_failures: SharedU64,
    /// The first failure's address (0: none) and ESR (for an abort).
    first_addr: SharedU64,
    first_esr: SharedU64,
}

impl Report {
    const fn new() -> Self {
        Self {
            paused: SharedU64::new(0),
            passes: SharedU64::new(0),
            aborts: SharedU64::new(0),
            mismatches: SharedU64::new(0),
            dma_rounds: SharedU64::new(0),
            dma_failures: SharedU64::new(0),
            first_addr: SharedU64::new(0),
            first_esr: SharedU64::new(0),
        }
    }

    fn clear(&self) {
        for word in [
            &self.paused,
            &self.passes,
            &self.aborts,
            &self.mismatches,
            &self.dma_rounds,
            &self.dma_failures,
            &self.first_addr,
            &self.first_esr,
        ] {
            word.store(0);
        }
    }

    fn bump(word: &SharedU64) {
        word.store(word.load() + 1);
    }

    fn note_first(&self, addr: u64, esr: u64) {
        if self.first_addr.load() == 0 {
            self.first_esr.store(esr);
            self.first_addr.store(addr);
        }
    }
}

/// Slots of the two hammering CPUs.
const SLOT_INSIDE_HAMMER: u8 = 2;
const SLOT_DMA_HAMMER: u8 = 3;
static REPORTS: [Report; 2] = [Report::new(), Report::new()];

/// The edu device for the DMA hammer: written by CPU 0 before it starts that CPU (CPU_ON
/// orders the write before the other CPU's first instruction), read only by that CPU after.
struct SharedEdu(UnsafeCell<Option<Edu>>);
// SAFETY: see the type's documentation: one write before the reader exists, then reads only.
unsafe impl Sync for SharedEdu {}
static EDU: SharedEdu = SharedEdu(UnsafeCell::new(None));

/// The DMA hammer's own source and check pages.
static DMA_SOURCE: DmaPage = DmaPage::new();
static DMA_CHECK: DmaPage = DmaPage::new();

const fn pattern(seed: u64, addr: u64) -> u64 {
    handoff::pattern_at(seed, addr)
}

/// One write-then-read pass over `words` of `page`; an abort ends the pass and is counted.
fn hammer_page(report: &Report, page: u64, words: core::ops::Range<u64>, seed: u64) {
    let ((), caught) = exceptions::catch(|| {
        for word in words {
            let addr = page + 8 * word;
            // SAFETY: the hammered pages are the carveout's and its neighbours' (no memory
            // of this program), 8-byte aligned; with the MMU off the address is physical.
            unsafe { (addr as *mut u64).write_volatile(pattern(seed, addr)) };
            if exceptions::caught_yet() {
                return;
            }
            // SAFETY: as above.
            let value = unsafe { (addr as *const u64).read_volatile() };
            if exceptions::caught_yet() {
                return;
            }
            if value != pattern(seed, addr) {
                Report::bump(&report.mismatches);
                report.note_first(addr, 0);
            }
        }
    });
    if let Some(caught) = caught {
        Report::bump(&report.aborts);
        report.note_first(caught.far, caught.esr);
    }
}

/// The pages a hammer may use now: all four, or only the outside ones while CPU 0 hands the
/// block over (after saying so in `paused`).
fn allowed_pages(report: &Report) -> AllowedPages {
    let [in0, in1] = inside();
    let [out0, out1] = outside();
    let pause = CONTROL.pause.load();
    report.paused.store(pause);
    AllowedPages { pages: [out0, out1, in0, in1], len: if pause % 2 == 1 { 2 } else { 4 } }
}

/// [`allowed_pages`]' answer: the first `len` of `pages` (the outside ones first).
struct AllowedPages {
    pages: [u64; 4],
    len: usize,
}

impl core::ops::Deref for AllowedPages {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        &self.pages[..self.len]
    }
}

/// CPU 1's task: CPU accesses to every allowed page (its own words), until told to stop. Its
/// findings are in [`REPORTS`]; the mailbox gets the passes and the time.
pub fn inside_hammer() -> HammerStats {
    let start = cpu::counter();
    let report = &REPORTS[0];
    let mut seed = 1u64;
    while CONTROL.stop.load() == 0 {
        for &page in allowed_pages(report).iter() {
            hammer_page(report, page, CPU1_WORDS, seed);
        }
        Report::bump(&report.passes);
        seed += 1;
    }
    HammerStats { cycles: report.passes.load(), retries: 0, elapsed_ms: cpu::elapsed_ms(start) }
}

/// One edu round on `page`: a pattern DMAed into its DMA half, checked by the CPU, DMAed out
/// again and checked once more.
fn dma_round(edu: &Edu, report: &Report, page: u64, seed: u64) {
    let target = page + DMA_OFFSET;
    let words = (DMA_BYTES / 8) as usize;
    for i in 0..words {
        DMA_SOURCE.write(i, pattern(seed, target + 8 * i as u64));
        DMA_CHECK.write(i, 0);
    }
    cpu::dsb_sy();
    let steps = edu
        .dma_to_device(DMA_SOURCE.address(), 0, DMA_BYTES)
        .and_then(|()| edu.dma_to_ram(0, target, DMA_BYTES));
    let mut failed = steps.is_err();
    // The CPU reads what the device wrote.
    let ((), caught) = exceptions::catch(|| {
        for i in 0..words as u64 {
            let addr = target + 8 * i;
            // SAFETY: as in `hammer_page`: a hammered page's DMA half.
            let value = unsafe { (addr as *const u64).read_volatile() };
            if exceptions::caught_yet() {
                return;
            }
            if value != pattern(seed, addr) {
                failed = true;
                report.note_first(addr, 0);
                return;
            }
        }
    });
    if let Some(caught) = caught {
        Report::bump(&report.aborts);
        report.note_first(caught.far, caught.esr);
    }
    let back = edu
        .dma_to_device(target, DMA_BYTES, DMA_BYTES)
        .and_then(|()| edu.dma_to_ram(DMA_BYTES, DMA_CHECK.address(), DMA_BYTES));
    cpu::dsb_sy();
    let echoed =
        (0..words).all(|i| DMA_CHECK.read(i) == Some(pattern(seed, target + 8 * i as u64)));
    if back.is_err() || !echoed {
        failed = true;
        report.note_first(target, 0);
    }
    Report::bump(&report.dma_rounds);
    if failed {
        Report::bump(&report.dma_failures);
    }
}

/// CPU 2's task: edu DMA rounds on every allowed page in turn, with CPU accesses (its own
/// words) to every allowed page between them, until told to stop.
pub fn dma_hammer() -> HammerStats {
    let start = cpu::counter();
    let report = &REPORTS[1];
    // SAFETY: written before this CPU was started, never again (see `SharedEdu`).
    let Some(edu) = (unsafe { *EDU.0.get() }) else { return HammerStats::default() };
    let mut seed = 0x1000u64;
    let mut next = 0usize;
    while CONTROL.stop.load() == 0 {
        let pages = allowed_pages(report);
        for &page in pages.iter() {
            hammer_page(report, page, CPU2_WORDS, seed);
        }
        Report::bump(&report.passes);
        let page = pages[next % pages.len()];
        next += 1;
        dma_round(&edu, report, page, seed);
        seed += 1;
    }
    HammerStats { cycles: report.passes.load(), retries: 0, elapsed_ms: cpu::elapsed_ms(start) }
}

/// CPU 0's side of a whole-block cycle: the hammers step off the block's pages, the block is
/// donated, released and reclaimed, the hammers go on.
fn whole_block_cycle() -> Result<u64, Reason> {
    let pause = CONTROL.pause.load() + 1;
    CONTROL.pause.store(pause);
    let stepped_off =
        cpu::wait_until(PAUSE_TIMEOUT_MS, || REPORTS.iter().all(|r| r.paused.load() == pause));
    if !stepped_off {
        fail!("the hammers did not step off {} within {PAUSE_TIMEOUT_MS} ms", block());
    }
    let result = donate(block()).and_then(|()| peer_release(block(), false)).and_then(|retries| {
        reclaim(block())?;
        Ok(retries)
    });
    CONTROL.pause.store(pause + 1);
    result
}

/// Starts the hammer of `slot` on `target` with `task`.
fn start(platform: &Platform, target: u64, slot: u8, task: u64) -> Outcome {
    let conduit = platform.psci.map_err(|why| Reason::new(format_args!("{why}")))?;
    let Some(mailbox) = secondary::mailbox(usize::from(slot)) else {
        fail!("no mailbox for slot {slot}");
    };
    mailbox.clear();
    mailbox.task.store(task);
    let entry = secondary_entry as *const () as usize as u64;
    let status = smccc::cpu_on(conduit, target, entry, secondary::context_id(4, slot));
    if status != warden_abi::psci::SUCCESS {
        fail!("CPU_ON({target:#x}) for slot {slot} returned {status}");
    }
    Ok(())
}

/// What CPU 0's loop did.
struct Loop {
    cycles: u64,
    whole_blocks: u64,
    retries: u64,
    elapsed_ms: u64,
}

fn donate_reclaim_loop() -> Result<Loop, Reason> {
    let start = cpu::counter();
    let mut done = Loop { cycles: 0, whole_blocks: 0, retries: 0, elapsed_ms: 0 };
    for cycle in 0..CYCLES {
        if cycle % 64 == 0 && cpu::elapsed_ms(start) > DEADLINE_MS {
            fail!("only {cycle} of {CYCLES} cycles in {DEADLINE_MS} ms");
        }
        let step = if cycle % WHOLE_BLOCK_EVERY == WHOLE_BLOCK_EVERY - 1 {
            done.whole_blocks += 1;
            whole_block_cycle()
        } else {
            donate(range()).and_then(|()| peer_release(range(), false)).and_then(|retries| {
                reclaim(range())?;
                Ok(retries)
            })
        };
        done.retries += step.map_err(|why| Reason::new(format_args!("cycle {cycle}: {why}")))?;
        done.cycles = cycle + 1;
    }
    done.elapsed_ms = cpu::elapsed_ms(start);
    Ok(done)
}

/// Scenario `carveout_neighbours_never_fault` (issue 11, section 5): see the module
/// documentation. Needs two host CPUs besides this one.
pub fn carveout_neighbours_never_fault(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    expect_all_host()?;
    let edu = match edu {
        Ok(edu) => *edu,
        Err(why) => fail!("no edu device: {why}"),
    };
    let own = cpu::mpidr_affinity();
    let cpus = match &platform.cpus {
        Ok(cpus) => cpus.as_slice(),
        Err(why) => fail!("{why}"),
    };
    let mut others = cpus.iter().copied().filter(|&m| m != own);
    let (Some(first), Some(second)) = (others.next(), others.next()) else {
        fail!("needs two host CPUs besides this one; the DT lists {}", cpus.len());
    };
    // A fresh event queue: every event from here on is this scenario's.
    let Some(smmu_base) = platform.smmu else { fail!("no SMMU in the DT") };
    let mut smmu = Smmu::enable(smmu_base)?;
    smmu.bypass(u32::from(edu.function.requester_id()))?;
    let stale = smmu.drain_events();
    let events_before = smmu_stats()?.events_forwarded;
    let violations_before = violations()?;
    // SAFETY: the DMA hammer is not running yet (see `SharedEdu`).
    unsafe { *EDU.0.get() = Some(edu) };
    for report in &REPORTS {
        report.clear();
    }
    CONTROL.stop.store(0);
    CONTROL.pause.store(0);
    start(platform, first, SLOT_INSIDE_HAMMER, secondary::TASK_NEIGHBOURS_CPU)?;
    start(platform, second, SLOT_DMA_HAMMER, secondary::TASK_NEIGHBOURS_DMA)?;
    let ours = donate_reclaim_loop();
    CONTROL.stop.store(1);
    let mut finished = true;
    for slot in [SLOT_INSIDE_HAMMER, SLOT_DMA_HAMMER] {
        let mailbox = secondary::mailbox(usize::from(slot));
        finished &= mailbox.is_some_and(|m| cpu::wait_until(10_000, || m.task_done.load() != 0));
    }
    let conduit = platform.psci.map_err(|why| Reason::new(format_args!("{why}")))?;
    let off = cpu::wait_until(5000, || {
        [first, second]
            .iter()
            .all(|&m| smccc::affinity_info(conduit, m) == warden_abi::psci::AFFINITY_OFF)
    });
    let events = smmu_stats()?.events_forwarded.wrapping_sub(events_before) + {
        let queued = smmu.drain_events();
        u64::from(queued)
    };
    let violations_after = violations()?;
    let seas: u64 = REPORTS.iter().map(|r| r.aborts.load()).sum();
    let mismatches: u64 = REPORTS.iter().map(|r| r.mismatches.load()).sum();
    let [cpu1, cpu2] = &REPORTS;
    let first_failure = [cpu1, cpu2]
        .iter()
        .find(|r| r.first_addr.load() != 0)
        .map_or((0, 0), |r| (r.first_addr.load(), r.first_esr.load()));
    println!(
        "guest: note carveout_neighbours_never_fault: CPU 0: {} cycles ({} of the whole 2 MiB \
         block) in {} ms, {} RETRY; CPU {first:#x}: {} passes; CPU {second:#x}: {} passes, {} \
         edu rounds ({} failed); {seas} SEA(s), {mismatches} mismatch(es), {events} SMMU \
         event(s) ({stale} stale before), violations {} -> {}; first failure at {:#x} (ESR \
         {:#x})",
        ours.as_ref().map_or(0, |l| l.cycles),
        ours.as_ref().map_or(0, |l| l.whole_blocks),
        ours.as_ref().map_or(0, |l| l.elapsed_ms),
        ours.as_ref().map_or(0, |l| l.retries),
        cpu1.passes.load(),
        cpu2.passes.load(),
        cpu2.dma_rounds.load(),
        cpu2.dma_failures.load(),
        Show(violations_before),
        Show(violations_after),
        first_failure.0,
        first_failure.1,
    );
    let ours = ours?;
    if !finished || !off {
        fail!("the hammering CPUs did not finish and power off");
    }
    if seas != 0 || mismatches != 0 || cpu2.dma_failures.load() != 0 || events != 0 {
        fail!(
            "{seas} SEA(s), {mismatches} mismatch(es), {} failed edu round(s), {events} SMMU \
             event(s) on the pages next to {}",
            cpu2.dma_failures.load(),
            range()
        );
    }
    if violations_after.accesses != violations_before.accesses {
        fail!("violations {} -> {}", Show(violations_before), Show(violations_after));
    }
    if cpu1.passes.load() == 0 || cpu2.dma_rounds.load() == 0 {
        fail!(
            "a hammer did nothing: {} CPU passes, {} edu rounds",
            cpu1.passes.load(),
            cpu2.dma_rounds.load()
        );
    }
    if ours.cycles != CYCLES {
        fail!("{} of {CYCLES} cycles", ours.cycles);
    }
    expect_all_host()?;
    expect_run(modem().base, modem().whole().run(RangeState::Host, &modem()))
}
