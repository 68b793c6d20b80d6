//! G3 whatever the host does with its context descriptors (issue 11 §6): warden installs
//! validated copies of the guest's CDs (shadow CDs) with ASIDs it allocates itself.
//!
//! - `vsmmu_same_asid_two_streams`: two edu devices whose CDs give the same ASID over different
//!   tables, the same IOVAs mapped to different pages: each DMA reads and writes its own pages.
//!   Were the guest's ASID the real one, the second device would hit the first one's IOTLB
//!   entries (QEMU's IOTLB is tagged by ASID and VMID only).
//! - `vsmmu_cd_rewrite_needs_cfgi_cd`: a CD rewritten in memory (another ASID, other tables)
//!   changes nothing, even after a CFGI_STE (which architecturally does not cover CDs, and
//!   which makes QEMU's SMMU fetch its configuration again), until CFGI_CD.
//! - `vsmmu_stall_cd_refused`: a CD asking for stalls (S = 1; warden advertises none) is refused
//!   when the guest configures it: C_BAD_CD in the guest's event queue before any DMA, and a DMA
//!   through it does not land.
//!
//! Each leaves both edu streams in bypass and retires its contexts with TLBI + CMD_SYNC.

use crate::console::println;
use crate::edu::{DmaPage, Edu, RESULT_PAGE, SOURCE_PAGE};
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::vsmmu::{self, CD0_S, Smmu, Stage1Pool, cd_words, write_cd, write_cd_words};
use crate::vsmmu_scenarios::{
    EVENT_TIMEOUT_MS, IOVA_BASE, POISON, PROBE_BYTES, PROBE_WORDS, Seen, describe, devices, fill,
    seen,
};

const IOVA_SOURCE: u64 = IOVA_BASE + 0x50_0000;
const IOVA_RESULT: u64 = IOVA_BASE + 0x50_1000;
/// CD slots of the guest's driver.
const SLOT_A: usize = 0;
const SLOT_B: usize = 1;
/// ASIDs no other scenario uses.
const ASID_SHARED: u16 = 0x31;
const ASID_BEFORE: u16 = 0x32;
const ASID_AFTER: u16 = 0x33;
const ASID_STALL: u16 = 0x34;
/// C_BAD_CD.
const C_BAD_CD: u8 = 0x0a;

/// The second device's pages, and the rewritten CD's source page.
static SOURCE_B: DmaPage = DmaPage::new();
static RESULT_B: DmaPage = DmaPage::new();
static OTHER_PAGE: DmaPage = DmaPage::new();

/// Source -> edu -> result through IOVA_SOURCE and IOVA_RESULT; what the result page of the
/// stream (`result`) holds afterwards.
fn round_trip(edu: &Edu, result: &DmaPage, seeds: &[u64]) -> Result<Seen, Reason> {
    fill(result, PROBE_WORDS, POISON);
    edu.dma_to_device(IOVA_SOURCE, 0, PROBE_BYTES)?;
    edu.dma_to_ram(0, IOVA_RESULT, PROBE_BYTES)?;
    Ok(seen(result, PROBE_WORDS, seeds))
}

/// Streams back to bypass, CDs cleared, the ASIDs invalidated; the body's failure wins.
fn clean_up(smmu: &mut Smmu, sids: &[u32], asids: &[u16], outcome: Outcome) -> Outcome {
    let cleanup = (|| {
        for &sid in sids {
            smmu.bypass(sid)?;
        }
        for slot in [SLOT_A, SLOT_B] {
            vsmmu::clear_cd(slot);
        }
        for &sid in sids {
            smmu.cfgi_cd(sid)?;
        }
        for &asid in asids {
            smmu.tlbi_asid(asid)?;
        }
        smmu.sync()
    })();
    match (outcome, cleanup) {
        (Err(why), _) => Err(why),
        (Ok(()), Err(why)) => Err(Reason::new(format_args!("cleaning up: {why}"))),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Scenario `vsmmu_same_asid_two_streams`.
pub fn same_asid_two_streams(
    platform: &Platform,
    edu: &Result<Edu, Reason>,
    second: &Result<Edu, Reason>,
) -> Outcome {
    const SEED_A: u64 = 0x31a;
    const SEED_B: u64 = 0x31b;
    let (mut smmu, edu_a, sid_a) = devices(platform, edu)?;
    let edu_b = second.as_ref().map_err(|why| Reason::new(format_args!("second edu: {why}")))?;
    let sid_b = u32::from(edu_b.function.requester_id());
    let mut pool = Stage1Pool::take();
    let space_a = pool.space()?;
    pool.map(space_a, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space_a, IOVA_RESULT, RESULT_PAGE.address())?;
    let space_b = pool.space()?;
    pool.map(space_b, IOVA_SOURCE, SOURCE_B.address())?;
    pool.map(space_b, IOVA_RESULT, RESULT_B.address())?;
    write_cd(SLOT_A, ASID_SHARED, pool.root(space_a));
    write_cd(SLOT_B, ASID_SHARED, pool.root(space_b));
    smmu.tlbi_asid(ASID_SHARED)?;
    smmu.sync()?;
    let outcome = (|| {
        smmu.stage1(sid_a, SLOT_A)?;
        smmu.stage1(sid_b, SLOT_B)?;
        fill(&SOURCE_PAGE, PROBE_WORDS, SEED_A);
        fill(&SOURCE_B, PROBE_WORDS, SEED_B);
        let a = round_trip(edu_a, &RESULT_PAGE, &[SEED_A, SEED_B, POISON])?;
        let b = round_trip(edu_b, &RESULT_B, &[SEED_A, SEED_B, POISON])?;
        let a_again = seen(&RESULT_PAGE, PROBE_WORDS, &[SEED_A, SEED_B, POISON]);
        if a != Seen::Seed(SEED_A) {
            fail!("stream {sid_a:#x} (ASID {ASID_SHARED:#x}, its own tables) got {a:?}");
        }
        if b != Seen::Seed(SEED_B) || a_again != Seen::Seed(SEED_A) {
            fail!(
                "stream {sid_b:#x} (ASID {ASID_SHARED:#x}, other tables) got {b:?} and stream \
                 {sid_a:#x}'s result page then held {a_again:?}: the second stream used the \
                 first one's translations"
            );
        }
        let events = smmu.drain_events();
        if events != 0 {
            fail!("{events} event(s) for DMA through valid mappings");
        }
        println!(
            "guest: note vsmmu_same_asid_two_streams: streams {sid_a:#x} and {sid_b:#x}, both \
             ASID {ASID_SHARED:#x}, same IOVAs, different tables: each read and wrote its own \
             pages"
        );
        Ok(())
    })();
    clean_up(&mut smmu, &[sid_a, sid_b], &[ASID_SHARED], outcome)
}

/// Scenario `vsmmu_cd_rewrite_needs_cfgi_cd`.
pub fn cd_rewrite_needs_cfgi_cd(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED_BEFORE: u64 = 0x321;
    const SEED_AFTER: u64 = 0x331;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let mut pool = Stage1Pool::take();
    let before = pool.space()?;
    pool.map(before, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(before, IOVA_RESULT, RESULT_PAGE.address())?;
    let after = pool.space()?;
    pool.map(after, IOVA_SOURCE, OTHER_PAGE.address())?;
    pool.map(after, IOVA_RESULT, RESULT_PAGE.address())?;
    fill(&SOURCE_PAGE, PROBE_WORDS, SEED_BEFORE);
    fill(&OTHER_PAGE, PROBE_WORDS, SEED_AFTER);
    write_cd(SLOT_A, ASID_BEFORE, pool.root(before));
    smmu.tlbi_asid(ASID_BEFORE)?;
    smmu.tlbi_asid(ASID_AFTER)?;
    smmu.sync()?;
    let seeds = [SEED_BEFORE, SEED_AFTER, POISON];
    let outcome = (|| {
        smmu.stage1(sid, SLOT_A)?;
        let first = round_trip(edu, &RESULT_PAGE, &seeds)?;
        if first != Seen::Seed(SEED_BEFORE) {
            fail!("through the first CD: {first:?}");
        }
        // The CD rewritten in place, no CFGI_CD; then CFGI_STE (the STE itself unchanged).
        write_cd(SLOT_A, ASID_AFTER, pool.root(after));
        smmu.cfgi_ste(sid)?;
        smmu.sync()?;
        let unchanged = round_trip(edu, &RESULT_PAGE, &seeds)?;
        if unchanged != Seen::Seed(SEED_BEFORE) {
            fail!(
                "after rewriting the CD (ASID {ASID_AFTER:#x}, other tables) and CFGI_STE but no \
                 CFGI_CD, the DMA got {unchanged:?}: the rewritten CD was used unvalidated"
            );
        }
        smmu.cfgi_cd(sid)?;
        smmu.sync()?;
        let updated = round_trip(edu, &RESULT_PAGE, &seeds)?;
        if updated != Seen::Seed(SEED_AFTER) {
            fail!("after CFGI_CD the DMA got {updated:?}, expected the new CD's page");
        }
        println!(
            "guest: note vsmmu_cd_rewrite_needs_cfgi_cd: CD rewritten (ASID {ASID_BEFORE:#x} -> \
             {ASID_AFTER:#x}, other tables): unchanged after CFGI_STE, in force after CFGI_CD"
        );
        Ok(())
    })();
    clean_up(&mut smmu, &[sid], &[ASID_BEFORE, ASID_AFTER], outcome)
}

/// Scenario `vsmmu_stall_cd_refused`.
pub fn stall_cd_refused(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
    let mut words = cd_words(ASID_STALL, pool.root(space));
    words[0] |= CD0_S;
    write_cd_words(SLOT_A, words);
    smmu.tlbi_asid(ASID_STALL)?;
    smmu.sync()?;
    let outcome = (|| {
        smmu.drain_events();
        smmu.stage1(sid, SLOT_A)?;
        // Refused when configured, before any DMA.
        let refusal = smmu
            .wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.kind() == C_BAD_CD)
            .map_err(|skipped| {
                Reason::new(format_args!(
                    "a CD with S = 1 (stall) for stream {sid:#x}: no C_BAD_CD after CFGI_STE + \
                     CMD_SYNC (other records:{})",
                    describe(&skipped)
                ))
            })?;
        // Whatever edu's buffer holds, none of it may reach the result page.
        fill(&RESULT_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_ram(0, IOVA_RESULT, PROBE_BYTES)?;
        let result = seen(&RESULT_PAGE, PROBE_WORDS, &[POISON]);
        if result != Seen::Seed(POISON) {
            fail!("a DMA through the refused CD reached guest RAM: {result:?}");
        }
        let dma_event = smmu
            .wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.kind() == C_BAD_CD)
            .map_err(|skipped| {
                Reason::new(format_args!(
                    "no C_BAD_CD for the DMA through the refused CD (other records:{})",
                    describe(&skipped)
                ))
            })?;
        println!(
            "guest: note vsmmu_stall_cd_refused: CD with S = 1: {refusal} at CFGI_STE, {dma_event} \
             for the DMA, which did not land"
        );
        Ok(())
    })();
    clean_up(&mut smmu, &[sid], &[ASID_STALL], outcome)
}
