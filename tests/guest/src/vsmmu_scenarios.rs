//! Scenarios of warden's virtual SMMU with a stage-1 context (issue 5): edu's DMA through the
//! guest's own stage-1 tables, nested by warden over its stage 2.
//!
//! - `vsmmu_stage1_dma_works`: IOVA -> guest page works both ways, an unmapped IOVA is a
//!   stage-1 fault event (so stage 1 really is in force).
//! - `vsmmu_stage1_into_carveout_faults`: stage-1 mappings onto a donated carveout page and onto
//!   warden's memory fault at stage 2, the events reach the guest's event queue, and the target
//!   memory is unchanged.
//! - `vsmmu_stale_asid_is_flushed` / `vsmmu_stale_asid_without_g3_reads_stale`: the FastRPC
//!   pattern (a context retired without TLBI, its ASID reused at once with other tables) reads
//!   the new page with G3, and the stale one with G3 switched off (warden's test switch), which
//!   shows the first one can fail.
//!
//! Each scenario reprograms the SMMU from scratch ([`Smmu::enable`]) and leaves edu's stream in
//! bypass, as `Edu::set_up` left it.

use warden_abi::handoff::PeerId;
use warden_abi::stats::SmmuStats;

use crate::console::println;
use crate::edu::{self, DmaPage, Edu, RESULT_PAGE, SOURCE_PAGE};
use crate::handoff;
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::smccc::Conduit;
use crate::vsmmu::{Event, Smmu, Stage1Pool, write_cd};

/// IOVAs the scenarios map (below 2^39, above guest RAM so no identity mapping is confused
/// with them): the source page, the destination page, then the targets.
pub(crate) const IOVA_BASE: u64 = 0x40_0000_0000;
pub(crate) const IOVA_SOURCE: u64 = IOVA_BASE;
pub(crate) const IOVA_RESULT: u64 = IOVA_BASE + 0x1000;
const IOVA_UNMAPPED: u64 = IOVA_BASE + 0x2000;
const IOVA_CARVEOUT: u64 = IOVA_BASE + 0x10_0000;
const IOVA_WARDEN: u64 = IOVA_BASE + 0x20_0000;
/// The IOVA the stale-ASID test maps to P1, then to P2.
pub(crate) const IOVA_STALE: u64 = IOVA_BASE + 0x4000_0000;

/// The one CD slot the scenarios use.
const CD_SLOT: usize = 0;
/// ASIDs, one per scenario (and per run of the stale test), so no run inherits another's TLB
/// entries.
const ASID_DMA: u16 = 0x21;
const ASID_CARVEOUT: u16 = 0x22;
const ASID_STALE_G3: u16 = 0x2a;
const ASID_STALE_NO_G3: u16 = 0x2b;

pub(crate) const EVENT_TIMEOUT_MS: u64 = 2000;
/// Event types of a translation-stage fault: F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION.
pub(crate) const FAULT_KINDS: core::ops::RangeInclusive<u8> = 0x10..=0x13;
pub(crate) const F_TRANSLATION: u8 = 0x10;

/// Bytes written at the carveout and warden targets.
pub(crate) const PROBE_BYTES: u64 = 64;
pub(crate) const PROBE_WORDS: usize = (PROBE_BYTES / 8) as usize;
/// edu buffer slots: the pattern, and what a target reads back as.
pub(crate) const PATTERN_SLOT: u64 = 0x000;
pub(crate) const READBACK_SLOT: u64 = 0x800;

/// The page P2 of the stale-ASID test (P1 is `SOURCE_PAGE`).
pub(crate) static SECOND_PAGE: DmaPage = DmaPage::new();

/// Word `index` of pattern `seed` (never 0; distinct per seed and index).
pub(crate) fn pattern(seed: u64, index: usize) -> u64 {
    0x534d_4d55_0000_0000 | (seed & 0xffff) << 16 | (index as u64 & 0xffff)
}

pub(crate) const POISON: u64 = 0xdead;

pub(crate) fn fill(page: &DmaPage, words: usize, seed: u64) {
    for index in 0..words {
        page.write(index, pattern(seed, index));
    }
}

/// Which pattern `page[..words]` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Seed(u64),
    Other { index: usize, value: u64 },
}

pub(crate) fn seen(page: &DmaPage, words: usize, seeds: &[u64]) -> Seen {
    for &seed in seeds {
        if (0..words).all(|i| page.read(i) == Some(pattern(seed, i))) {
            return Seen::Seed(seed);
        }
    }
    let index = (0..words)
        .find(|&i| seeds.iter().all(|&s| page.read(i) != Some(pattern(s, i))))
        .unwrap_or(0);
    Seen::Other { index, value: page.read(index).unwrap_or(0) }
}

pub(crate) fn devices<'a>(
    platform: &Platform,
    edu: &'a Result<Edu, Reason>,
) -> Result<(Smmu, &'a Edu, u32), Reason> {
    let edu = edu.as_ref().map_err(|why| Reason::new(format_args!("{why}")))?;
    let Some(base) = platform.smmu else {
        fail!("no arm,smmu-v3 node in the DT");
    };
    let mut smmu = Smmu::enable(base)?;
    let sid = u32::from(edu.function.requester_id());
    let stray = smmu.drain_events();
    if stray != 0 {
        println!("guest: note vSMMU: {stray} stale event(s) dropped before the scenario");
    }
    Ok((smmu, edu, sid))
}

/// Installs a fresh stage-1 context: CD slot with `asid` over `root`, the ASID invalidated
/// first (as Linux does for a new domain), then `sid`'s STE pointing at the CD.
pub(crate) fn install_context(smmu: &mut Smmu, sid: u32, asid: u16, root: u64) -> Outcome {
    write_cd(CD_SLOT, asid, root);
    smmu.tlbi_asid(asid)?;
    smmu.sync()?;
    smmu.stage1(sid, CD_SLOT)
}

/// Puts edu back in bypass and retires the context properly (CD invalid, CFGI_CD, TLBI, sync).
fn tear_down(smmu: &mut Smmu, sid: u32, asid: u16) -> Outcome {
    smmu.bypass(sid)?;
    crate::vsmmu::clear_cd(CD_SLOT);
    smmu.cfgi_cd(sid)?;
    smmu.tlbi_asid(asid)?;
    smmu.sync()
}

/// Runs `body`, then `tear_down` whatever happened; the body's failure wins.
pub(crate) fn with_teardown(
    smmu: &mut Smmu,
    sid: u32,
    asid: u16,
    body: impl FnOnce(&mut Smmu) -> Outcome,
) -> Outcome {
    let outcome = body(smmu);
    let cleanup = tear_down(smmu, sid, asid);
    match (outcome, cleanup) {
        (Err(why), _) => Err(why),
        (Ok(()), Err(why)) => Err(Reason::new(format_args!("tearing the context down: {why}"))),
        (Ok(()), Ok(())) => Ok(()),
    }
}

pub(crate) fn smmu_stats() -> Result<SmmuStats, Reason> {
    let regs = handoff::check(handoff::raw_call(Conduit::Hvc, SmmuStats::request()), "SMMU_STATS")?;
    SmmuStats::decode(&regs)
        .map_err(|e| Reason::new(format_args!("SMMU_STATS: {e} (x0 {:#x})", regs[0])))
}

pub(crate) fn describe(skipped: &[Option<Event>; 4]) -> Reason {
    let mut text = Reason::new(format_args!(""));
    let mut any = false;
    for event in skipped.iter().flatten() {
        let _ = core::fmt::Write::write_fmt(&mut text, format_args!(" {event}"));
        any = true;
    }
    if any { text } else { Reason::new(format_args!(" none")) }
}

/// Waits for the fault event of a DMA to `iova`: a translation-stage fault of `sid` for that
/// input address, at stage 2 (`ipa` given: with that IPA) or at stage 1 (`ipa` None).
pub(crate) fn expect_fault(
    smmu: &mut Smmu,
    sid: u32,
    iova: u64,
    ipa: Option<u64>,
) -> Result<Event, Reason> {
    let event = smmu
        .wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.input_address() == iova)
        .map_err(|skipped| {
            Reason::new(format_args!(
                "no event for IOVA {iova:#x} of stream {sid:#x} within {EVENT_TIMEOUT_MS} ms \
                 (other records:{})",
                describe(&skipped)
            ))
        })?;
    if !FAULT_KINDS.contains(&event.kind()) {
        fail!("event for IOVA {iova:#x} is not a translation fault: {event}");
    }
    match ipa {
        Some(ipa) if !event.stage2() || event.ipa() != ipa => {
            fail!("event for IOVA {iova:#x}: expected a stage-2 fault at IPA {ipa:#x}, got {event}")
        }
        None if event.stage2() || event.kind() != F_TRANSLATION => {
            fail!("event for IOVA {iova:#x}: expected a stage-1 F_TRANSLATION, got {event}")
        }
        _ => Ok(event),
    }
}

/// Scenario `vsmmu_stage1_dma_works`.
pub fn stage1_dma_works(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0x51;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
    install_context(&mut smmu, sid, ASID_DMA, pool.root(space))?;
    with_teardown(&mut smmu, sid, ASID_DMA, |smmu| {
        let words = DmaPage::WORDS;
        fill(&SOURCE_PAGE, words, SEED);
        fill(&RESULT_PAGE, words, POISON);
        edu.dma_to_device(IOVA_SOURCE, 0, edu::BUFFER_SIZE)?;
        edu.dma_to_ram(0, IOVA_RESULT, edu::BUFFER_SIZE)?;
        match seen(&RESULT_PAGE, words, &[SEED, POISON]) {
            Seen::Seed(SEED) => {}
            other => fail!(
                "IOVA {IOVA_SOURCE:#x} -> edu -> IOVA {IOVA_RESULT:#x} (pages {:#x}, {:#x}): \
                 result page holds {other:?}",
                SOURCE_PAGE.address(),
                RESULT_PAGE.address()
            ),
        }
        let spurious = smmu.drain_events();
        if spurious != 0 {
            fail!("{spurious} event(s) for DMA through valid mappings");
        }
        // Stage 1 is really in force: an IOVA with no mapping faults at stage 1.
        edu.dma_to_ram(0, IOVA_UNMAPPED, PROBE_BYTES)?;
        let event = expect_fault(smmu, sid, IOVA_UNMAPPED, None)?;
        println!(
            "guest: note vsmmu_stage1_dma_works: a page through IOVA {IOVA_SOURCE:#x} and back \
             via {IOVA_RESULT:#x}; unmapped IOVA {IOVA_UNMAPPED:#x}: event {event}"
        );
        Ok(())
    })
}

/// Scenario `vsmmu_stage1_into_carveout_faults`: the caller restores the carveouts afterwards.
pub fn stage1_into_carveout_faults(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0x52;
    const CARVEOUT_SEED: u64 = 0x5253;
    let warden_base = match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) if region.size >= PROBE_BYTES => region.base,
            _ => fail!("no usable warden region in the DT"),
        },
        Err(why) => fail!("{why}"),
    };
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let target = handoff::modem().span(handoff::modem().size - 0x1000, 0x1000);
    handoff::write_pattern(target, CARVEOUT_SEED)?;
    handoff::check(
        handoff::modem().hand_over(target.target(), false),
        format_args!("DONATE {target}"),
    )?;
    let before = handoff::peer_checksum(PeerId::MODEM, target)?;

    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
    pool.map(space, IOVA_CARVEOUT, target.base)?;
    pool.map(space, IOVA_WARDEN, warden_base & !0xfff)?;
    install_context(&mut smmu, sid, ASID_CARVEOUT, pool.root(space))?;
    let outcome = with_teardown(&mut smmu, sid, ASID_CARVEOUT, |smmu| {
        // The pattern into edu's buffer, checked to be there (through stage 1).
        fill(&SOURCE_PAGE, PROBE_WORDS, SEED);
        fill(&RESULT_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_device(IOVA_SOURCE, PATTERN_SLOT, PROBE_BYTES)?;
        edu.dma_to_ram(PATTERN_SLOT, IOVA_RESULT, PROBE_BYTES)?;
        if seen(&RESULT_PAGE, PROBE_WORDS, &[SEED]) != Seen::Seed(SEED) {
            fail!("control: the pattern did not make the round trip through stage 1");
        }
        smmu.drain_events();

        // The donated carveout page.
        edu.dma_to_ram(PATTERN_SLOT, IOVA_CARVEOUT, PROBE_BYTES)?;
        let carveout_event = expect_fault(smmu, sid, IOVA_CARVEOUT, Some(target.base))?;
        let after = handoff::peer_checksum(PeerId::MODEM, target)?;
        if after != before {
            fail!("the peer's checksum of {target} changed: {before:#x} -> {after:#x}");
        }

        // warden's memory: written, then read back by DMA over poison in edu's buffer.
        fill(&SOURCE_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_device(IOVA_SOURCE, READBACK_SLOT, PROBE_BYTES)?;
        edu.dma_to_ram(PATTERN_SLOT, IOVA_WARDEN, PROBE_BYTES)?;
        let warden_event = expect_fault(smmu, sid, IOVA_WARDEN, Some(warden_base & !0xfff))?;
        edu.dma_to_device(IOVA_WARDEN, READBACK_SLOT, PROBE_BYTES)?;
        fill(&RESULT_PAGE, PROBE_WORDS, 0xbeef);
        edu.dma_to_ram(READBACK_SLOT, IOVA_RESULT, PROBE_BYTES)?;
        match seen(&RESULT_PAGE, PROBE_WORDS, &[SEED, 0xbeef]) {
            Seen::Seed(SEED) => fail!("warden memory at {warden_base:#x} reads back the pattern"),
            Seen::Seed(_) => fail!("the read-back of warden memory did not reach guest RAM"),
            Seen::Other { .. } => {}
        }
        println!(
            "guest: note vsmmu_stage1_into_carveout_faults: carveout {target} via IOVA \
             {IOVA_CARVEOUT:#x}: event {carveout_event}, peer checksum {before:#x} unchanged; \
             warden {warden_base:#x} via {IOVA_WARDEN:#x}: event {warden_event}"
        );
        Ok(())
    });
    outcome?;
    handoff::peer_release(PeerId::MODEM, target)?;
    handoff::check(handoff::reclaim(target.target(), false), format_args!("RECLAIM {target}"))?;
    Ok(())
}

/// What the stale-ASID sequence read through the reused ASID, and warden's forced flushes
/// during it.
struct StaleRun {
    second_read: Seen,
    forced_flushes: u64,
}

pub(crate) const P1_SEED: u64 = 0x61;
pub(crate) const P2_SEED: u64 = 0x62;

/// Reads IOVA_STALE through edu into the result page; what it held.
pub(crate) fn read_stale_iova(edu: &Edu) -> Result<Seen, Reason> {
    fill(&RESULT_PAGE, DmaPage::WORDS, POISON);
    edu.dma_to_device(IOVA_STALE, 0, edu::BUFFER_SIZE)?;
    edu.dma_to_ram(0, IOVA_RESULT, edu::BUFFER_SIZE)?;
    Ok(seen(&RESULT_PAGE, DmaPage::WORDS, &[P1_SEED, P2_SEED, POISON]))
}

/// The FastRPC pattern: IOVA X -> P1 under `asid`, read (QEMU's IOTLB caches it); the CD goes
/// invalid with CFGI_CD + CMD_SYNC but no TLBI; a new CD reuses `asid` with X -> P2; X is read
/// again.
fn stale_asid_run(
    platform: &Platform,
    edu: &Result<Edu, Reason>,
    asid: u16,
) -> Result<StaleRun, Reason> {
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let mut pool = Stage1Pool::take();
    let first = pool.space()?;
    pool.map(first, IOVA_STALE, SOURCE_PAGE.address())?;
    pool.map(first, IOVA_RESULT, RESULT_PAGE.address())?;
    let second = pool.space()?;
    pool.map(second, IOVA_STALE, SECOND_PAGE.address())?;
    pool.map(second, IOVA_RESULT, RESULT_PAGE.address())?;
    fill(&SOURCE_PAGE, DmaPage::WORDS, P1_SEED);
    fill(&SECOND_PAGE, DmaPage::WORDS, P2_SEED);
    install_context(&mut smmu, sid, asid, pool.root(first))?;
    let mut run = None;
    with_teardown(&mut smmu, sid, asid, |smmu| {
        let first_read = read_stale_iova(edu)?;
        if first_read != Seen::Seed(P1_SEED) {
            fail!("first read of IOVA {IOVA_STALE:#x} (-> P1) gave {first_read:?}");
        }
        let before = smmu_stats()?;
        // Retire the context: V = 0, CFGI_CD, CMD_SYNC, and no TLBI_NH_ASID.
        crate::vsmmu::clear_cd(CD_SLOT);
        smmu.cfgi_cd(sid)?;
        smmu.sync()?;
        // A new context reusing the ASID, with other tables.
        write_cd(CD_SLOT, asid, pool.root(second));
        smmu.cfgi_cd(sid)?;
        smmu.sync()?;
        let second_read = read_stale_iova(edu)?;
        let after = smmu_stats()?;
        run = Some(StaleRun {
            second_read,
            forced_flushes: after.forced_flushes.wrapping_sub(before.forced_flushes),
        });
        Ok(())
    })?;
    run.ok_or_else(|| Reason::new(format_args!("the stale-ASID sequence did not run")))
}

/// Scenario `vsmmu_stale_asid_is_flushed` (G3 on, as warden always runs).
pub fn stale_asid_is_flushed(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    let run = stale_asid_run(platform, edu, ASID_STALE_G3)?;
    println!(
        "guest: note vsmmu_stale_asid_is_flushed: ASID {ASID_STALE_G3:#x} reused after a \
         retirement without TLBI: second read {:?} (P2 = {P2_SEED:#x}), {} forced flush(es) in \
         SMMU_STATS",
        run.second_read, run.forced_flushes
    );
    if run.second_read != Seen::Seed(P2_SEED) {
        fail!(
            "IOVA {IOVA_STALE:#x} read {:?} through the new context, expected P2 (seed \
             {P2_SEED:#x}): a stale IOTLB entry of ASID {ASID_STALE_G3:#x} was used",
            run.second_read
        );
    }
    if run.forced_flushes != 1 {
        fail!("SMMU_STATS counts {} forced flushes for the reuse, expected 1", run.forced_flushes);
    }
    Ok(())
}

/// Scenario `vsmmu_stale_asid_without_g3_reads_stale`: the same sequence with G3 switched off
/// must read P1 (the stale translation), proving the test above can fail.
pub fn stale_asid_without_g3_reads_stale(
    platform: &Platform,
    edu: &Result<Edu, Reason>,
) -> Outcome {
    let Some(base) = platform.smmu else {
        fail!("no arm,smmu-v3 node in the DT");
    };
    Smmu::enable(base)?.set_g3(false)?;
    let run = stale_asid_run(platform, edu, ASID_STALE_NO_G3);
    let restored = Smmu::enable(base).and_then(|mut smmu| {
        smmu.set_g3(true)?;
        let sid = edu.as_ref().map(|e| u32::from(e.function.requester_id())).unwrap_or(0);
        smmu.bypass(sid)
    });
    let run = run?;
    restored.map_err(|why| Reason::new(format_args!("switching G3 back on: {why}")))?;
    println!(
        "guest: note vsmmu_stale_asid_without_g3_reads_stale: with G3 off, ASID \
         {ASID_STALE_NO_G3:#x} reused: second read {:?} (P1 = {P1_SEED:#x}), {} forced flush(es)",
        run.second_read, run.forced_flushes
    );
    if run.second_read != Seen::Seed(P1_SEED) {
        fail!(
            "with G3 off IOVA {IOVA_STALE:#x} read {:?}, expected the stale P1 (seed \
             {P1_SEED:#x}): the stale-ASID test cannot tell G3 on from off",
            run.second_read
        );
    }
    if run.forced_flushes != 0 {
        fail!("with G3 off SMMU_STATS still counts {} forced flush(es)", run.forced_flushes);
    }
    Ok(())
}

/// CMDQ_CONS.ERR of a command fetch abort, and GERROR.CMDQ_ERR.
pub(crate) const CERROR_ABT: u32 = 2;
pub(crate) const GERROR_CMDQ_ERR: u32 = 1;
/// F_STE_FETCH.
pub(crate) const F_STE_FETCH: u8 = 0x03;

/// Scenario `vsmmu_hostile_tables`: the guest points its command queue at warden's memory
/// (the queue stops with CERROR_ABT and GERROR.CMDQ_ERR) and its stream table at a donated
/// carveout (CFGI_STE gives F_STE_FETCH for the STE's address), then the command queue at
/// that carveout (CERROR_ABT) and the stream table at warden's memory (F_STE_FETCH); then the
/// SMMU, set up properly again, still works: warden kept running and nothing was corrupted.
/// The caller restores the carveouts afterwards.
pub fn hostile_tables(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0x71;
    const CARVEOUT_SEED: u64 = 0x7172;
    let edu = edu.as_ref().map_err(|why| Reason::new(format_args!("{why}")))?;
    let Some(base) = platform.smmu else {
        fail!("no arm,smmu-v3 node in the DT");
    };
    let warden_base = match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) => region.base,
            None => fail!("no warden region in the DT"),
        },
        Err(why) => fail!("{why}"),
    };
    let sid = u32::from(edu.function.requester_id());

    // The command queue in warden's memory.
    let mut smmu = Smmu::enable_with(base, None, Some(warden_base))?;
    smmu.publish_one();
    let mut cons = 0;
    let stopped = crate::cpu::wait_until(EVENT_TIMEOUT_MS, || {
        cons = smmu.cmdq_cons();
        (cons >> 24) & 0x7f == CERROR_ABT && smmu.active_errors() & GERROR_CMDQ_ERR != 0
    });
    if !stopped {
        fail!(
            "command queue at warden memory {warden_base:#x}: CMDQ_CONS {cons:#x}, active \
             GERROR {:#x}; expected CERROR_ABT and CMDQ_ERR",
            smmu.active_errors()
        );
    }

    // The stream table in a donated carveout (16 KiB aligned: the linear table's size).
    let table = handoff::modem().span(handoff::modem().size - 0x4000, 0x4000);
    handoff::write_pattern(table, CARVEOUT_SEED)?;
    handoff::check(
        handoff::modem().hand_over(table.target(), false),
        format_args!("DONATE {table}"),
    )?;
    let before = handoff::peer_checksum(PeerId::MODEM, table)?;
    let mut smmu = Smmu::enable_with(base, Some(table.base), None)?;
    smmu.drain_events();
    smmu.cfgi_ste(sid)?;
    smmu.sync()?;
    let ste_address = table.base + u64::from(sid) * 64;
    let event = smmu
        .wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.kind() == F_STE_FETCH)
        .map_err(|skipped| {
            Reason::new(format_args!(
                "stream table in carveout {table}: no F_STE_FETCH for stream {sid:#x} (other \
                 records:{})",
                describe(&skipped)
            ))
        })?;
    if event.0[3] & !7 != ste_address {
        fail!("F_STE_FETCH {event}: expected the STE's address {ste_address:#x}");
    }
    let after = handoff::peer_checksum(PeerId::MODEM, table)?;
    if after != before {
        fail!("the peer's checksum of {table} changed: {before:#x} -> {after:#x}");
    }

    // The command queue in that donated carveout: a fetch abort too, the carveout unchanged.
    let mut smmu = Smmu::enable_with(base, None, Some(table.base))?;
    smmu.publish_one();
    let mut carveout_cons = 0;
    let stopped = crate::cpu::wait_until(EVENT_TIMEOUT_MS, || {
        carveout_cons = smmu.cmdq_cons();
        (carveout_cons >> 24) & 0x7f == CERROR_ABT && smmu.active_errors() & GERROR_CMDQ_ERR != 0
    });
    if !stopped {
        fail!(
            "command queue in carveout {table}: CMDQ_CONS {carveout_cons:#x}, active GERROR \
             {:#x}; expected CERROR_ABT and CMDQ_ERR",
            smmu.active_errors()
        );
    }
    let after = handoff::peer_checksum(PeerId::MODEM, table)?;
    if after != before {
        fail!("command queue in {table}: the peer's checksum changed: {before:#x} -> {after:#x}");
    }

    // The stream table in warden's memory (aligned to the linear table's 16 KiB).
    let warden_table = warden_base & !0x3fff;
    let mut smmu = Smmu::enable_with(base, Some(warden_table), None)?;
    smmu.drain_events();
    smmu.cfgi_ste(sid)?;
    smmu.sync()?;
    let warden_ste = warden_table + u64::from(sid) * 64;
    let warden_event = smmu
        .wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.kind() == F_STE_FETCH)
        .map_err(|skipped| {
            Reason::new(format_args!(
                "stream table in warden memory {warden_table:#x}: no F_STE_FETCH for stream \
                 {sid:#x} (other records:{})",
                describe(&skipped)
            ))
        })?;
    if warden_event.0[3] & !7 != warden_ste {
        fail!("F_STE_FETCH {warden_event}: expected the STE's address {warden_ste:#x}");
    }

    // Set up properly again, everything works.
    let mut smmu = Smmu::enable(base)?;
    if smmu.active_errors() != 0 {
        fail!("global errors still active after acknowledging: {:#x}", smmu.active_errors());
    }
    smmu.bypass(sid)?;
    fill(&SOURCE_PAGE, PROBE_WORDS, SEED);
    fill(&RESULT_PAGE, PROBE_WORDS, POISON);
    edu.dma_to_device(SOURCE_PAGE.address(), PATTERN_SLOT, PROBE_BYTES)?;
    edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
    if seen(&RESULT_PAGE, PROBE_WORDS, &[SEED]) != Seen::Seed(SEED) {
        fail!("after the hostile tables, a DMA round trip through bypass no longer works");
    }
    println!(
        "guest: note vsmmu_hostile_tables: CMDQ at {warden_base:#x}: CONS {cons:#x} \
         (CERROR_ABT), GERROR.CMDQ_ERR; STRTAB in {table}: event {event}; CMDQ in {table}: \
         CONS {carveout_cons:#x} (CERROR_ABT); STRTAB at {warden_table:#x}: event \
         {warden_event}; the SMMU works after"
    );
    handoff::peer_release(PeerId::MODEM, table)?;
    handoff::check(handoff::reclaim(table.target(), false), format_args!("RECLAIM {table}"))?;
    Ok(())
}
