//! Scenarios on the Snapdragon persona (warden's virtual MMU-500): the FastRPC seed's
//! session-reuse race on a context bank, with G3 on (the new session never sees the old
//! translation) and with the test-only G3 switch off (it does: the test can fail); a bypass
//! stream; the hostile host's carveout mapping and bypass request.

use crate::console::println;
use crate::edu::{DmaPage, Edu, RESULT_PAGE, SOURCE_PAGE};
use crate::handoff;
use crate::mmu500::{Mmu500, S2CR_BYPASS, S2CR_TRANSLATE, SCR0_ON};
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::vsmmu::Stage1Pool;
use crate::vsmmu_scenarios::{
    IOVA_RESULT, IOVA_SOURCE, IOVA_STALE, P1_SEED, P2_SEED, PATTERN_SLOT, POISON, PROBE_BYTES,
    PROBE_WORDS, SECOND_PAGE, Seen, fill, read_stale_iova, seen, smmu_stats,
};
use warden_abi::handoff::PeerId;

/// The FastRPC session's context bank and stream-match group.
const BANK: u32 = 1;
const GROUP: u32 = 0;
/// Host ASIDs of the two runs (distinct, so QEMU's trace tells them apart).
const ASID_G3: u16 = 0x3a;
const ASID_NO_G3: u16 = 0x3b;

struct SessionRun {
    second_read: Seen,
    forced_flushes: u64,
}

fn edu_and_base<'a>(
    platform: &Platform,
    edu: &'a Result<Edu, Reason>,
) -> Result<(u64, &'a Edu), Reason> {
    let edu = edu.as_ref().map_err(|why| Reason::new(format_args!("{why}")))?;
    let Some(base) = platform.mmu500 else {
        fail!("no arm,mmu-500 node in the DT (not the Snapdragon persona?)");
    };
    Ok((base, edu))
}

/// INIT_CREATE on bank 1 with `asid` over tables mapping IOVA X -> P1; a DMA reads X (QEMU's
/// IOTLB caches it); INIT_RELEASE: the bank is disabled and synced, but no TLBIASID; at once a
/// new INIT_CREATE on the same bank and ASID with tables mapping X -> P2; X is read again.
fn session_reuse(smmu: &Mmu500, edu: &Edu, sid: u32, asid: u16) -> Result<SessionRun, Reason> {
    let mut pool = Stage1Pool::take();
    let first = pool.space()?;
    pool.map(first, IOVA_STALE, SOURCE_PAGE.address())?;
    pool.map(first, IOVA_RESULT, RESULT_PAGE.address())?;
    let second = pool.space()?;
    pool.map(second, IOVA_STALE, SECOND_PAGE.address())?;
    pool.map(second, IOVA_RESULT, RESULT_PAGE.address())?;
    fill(&SOURCE_PAGE, DmaPage::WORDS, P1_SEED);
    fill(&SECOND_PAGE, DmaPage::WORDS, P2_SEED);
    // Session 1 (as Linux sets up a domain: the bank, a clean ASID, then the stream).
    smmu.write_bank(BANK, asid, pool.root(first));
    smmu.tlbi_asid(BANK, asid);
    smmu.tlb_sync(BANK)?;
    smmu.map_stream(GROUP, sid, S2CR_TRANSLATE | BANK);
    let first_read = read_stale_iova(edu)?;
    if first_read != Seen::Seed(P1_SEED) {
        fail!("session 1: IOVA {IOVA_STALE:#x} (-> P1) read {first_read:?}");
    }
    let before = smmu_stats()?;
    // INIT_RELEASE: the session's bank goes away; a sync, but no TLBIASID.
    smmu.disable_bank(BANK);
    smmu.tlb_sync(BANK)?;
    // INIT_CREATE at once: same bank, same ASID, other tables.
    smmu.write_bank(BANK, asid, pool.root(second));
    let second_read = read_stale_iova(edu)?;
    let after = smmu_stats()?;
    Ok(SessionRun {
        second_read,
        forced_flushes: after.forced_flushes.wrapping_sub(before.forced_flushes),
    })
}

/// Leaves the stream in bypass, the bank off and its ASID invalidated.
fn teardown(smmu: &Mmu500, asid: u16) -> Result<(), Reason> {
    smmu.unmap_stream(GROUP);
    smmu.disable_bank(BANK);
    smmu.tlbi_asid(BANK, asid);
    smmu.tlb_sync(BANK)?;
    let fsr = smmu.fsr(BANK);
    smmu.clear_fsr(BANK);
    if fsr != 0 {
        fail!("bank {BANK} recorded a fault (FSR {fsr:#x}) for DMA through valid mappings");
    }
    Ok(())
}

/// Scenario `mmu500_fastrpc_session_reuse_is_flushed` (G3 on).
pub fn fastrpc_session_reuse_is_flushed(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    let (base, edu) = edu_and_base(platform, edu)?;
    let smmu = Mmu500::enable(base)?;
    let sid = u32::from(edu.function.requester_id());
    let run = session_reuse(&smmu, edu, sid, ASID_G3);
    teardown(&smmu, ASID_G3)?;
    let run = run?;
    println!(
        "guest: note mmu500_fastrpc_session_reuse_is_flushed: ASID {ASID_G3:#x} on bank {BANK} \
         reused at once by a new session: second read {:?} (P2 = {P2_SEED:#x}), {} forced \
         flush(es) in SMMU_STATS",
        run.second_read, run.forced_flushes
    );
    if run.second_read != Seen::Seed(P2_SEED) {
        fail!(
            "the new session read {:?} at IOVA {IOVA_STALE:#x}, expected P2 (seed {P2_SEED:#x}): \
             the released session's translation was used",
            run.second_read
        );
    }
    if run.forced_flushes != 1 {
        fail!("SMMU_STATS counts {} forced flushes for the reuse, expected 1", run.forced_flushes);
    }
    Ok(())
}

/// Scenario `mmu500_fastrpc_session_reuse_without_g3_reads_stale`: the same with the test-only
/// G3 switch off must read P1, proving the scenario above can fail.
pub fn fastrpc_session_reuse_without_g3_reads_stale(
    platform: &Platform,
    edu: &Result<Edu, Reason>,
) -> Outcome {
    let (base, edu) = edu_and_base(platform, edu)?;
    let smmu = Mmu500::enable(base)?;
    let sid = u32::from(edu.function.requester_id());
    smmu.set_g3(false)?;
    let run = session_reuse(&smmu, edu, sid, ASID_NO_G3);
    let restored = smmu.set_g3(true);
    teardown(&smmu, ASID_NO_G3)?;
    let run = run?;
    restored.map_err(|why| Reason::new(format_args!("switching G3 back on: {why}")))?;
    println!(
        "guest: note mmu500_fastrpc_session_reuse_without_g3_reads_stale: with G3 off, ASID \
         {ASID_NO_G3:#x} on bank {BANK} reused: second read {:?} (P1 = {P1_SEED:#x}), {} forced \
         flush(es)",
        run.second_read, run.forced_flushes
    );
    if run.second_read != Seen::Seed(P1_SEED) {
        fail!(
            "with G3 off the new session read {:?}, expected the stale P1 (seed {P1_SEED:#x}): \
             the test cannot tell G3 on from off",
            run.second_read
        );
    }
    if run.forced_flushes != 0 {
        fail!("with G3 off SMMU_STATS still counts {} forced flush(es)", run.forced_flushes);
    }
    Ok(())
}

/// Scenario `mmu500_bypass_stream_dma_works`: a stream in bypass gets warden's stage 2 (DMA to
/// guest RAM arrives), and a TLBGSYNC completes.
pub fn bypass_stream_dma_works(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    let (base, edu) = edu_and_base(platform, edu)?;
    let smmu = Mmu500::enable(base)?;
    let sid = u32::from(edu.function.requester_id());
    smmu.map_stream(GROUP, sid, S2CR_BYPASS);
    smmu.tlb_global_sync()?;
    fill(&SOURCE_PAGE, DmaPage::WORDS, P2_SEED);
    fill(&RESULT_PAGE, DmaPage::WORDS, P1_SEED);
    let copied = edu
        .dma_to_device(SOURCE_PAGE.address(), 0, crate::edu::BUFFER_SIZE)
        .and_then(|()| edu.dma_to_ram(0, RESULT_PAGE.address(), crate::edu::BUFFER_SIZE));
    smmu.unmap_stream(GROUP);
    copied?;
    match seen(&RESULT_PAGE, DmaPage::WORDS, &[P2_SEED, P1_SEED]) {
        Seen::Seed(P2_SEED) => Ok(()),
        other => fail!("bypass DMA page -> edu -> page: result holds {other:?}"),
    }
}

/// The hostile-host scenario's bank, ASID and carveout IOVA.
const HOSTILE_BANK: u32 = 2;
const ASID_HOSTILE: u16 = 0x3c;
const IOVA_CARVEOUT: u64 = 0x40_0010_0000;
/// FSR.EF, FSYNR0.WNR; sGFSR.USF; sCR0.CLIENTPD.
const FSR_EF: u32 = 1 << 4;
const FSYNR0_WNR: u32 = 1 << 4;
const SGFSR_USF: u32 = 1 << 1;
const SCR0_CLIENTPD: u32 = 1;

/// Scenario `mmu500_hostile_host`: (1) a bank mapping an IOVA onto a donated modem page: edu's
/// DMA write there is refused by warden's stage 2 below the bank and reported as the bank's
/// external abort (FSR.EF, FAR = the IOVA, FSYNR0.WNR), and the peer's checksum of the page is
/// unchanged; (2) sCR0.CLIENTPD = 1 (bypass for every stream) is refused: it reads back 0, and
/// an unmatched stream's DMA write into guest RAM does not land and is reported as sGFSR.USF
/// with the stream ID.
pub fn hostile_host(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0x71;
    const CARVEOUT_SEED: u64 = 0x7172;
    let (base, edu) = edu_and_base(platform, edu)?;
    let smmu = Mmu500::enable(base)?;
    let sid = u32::from(edu.function.requester_id());
    let target = handoff::modem().span(handoff::modem().size - 0x1000, 0x1000);
    handoff::write_pattern(target, CARVEOUT_SEED)?;
    handoff::check(
        handoff::modem().hand_over(target.target(), false),
        format_args!("DONATE {target}"),
    )?;
    let before = handoff::peer_checksum(PeerId::MODEM, target)?;
    let outcome = (|| -> Outcome {
        let mut pool = Stage1Pool::take();
        let space = pool.space()?;
        pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
        pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
        pool.map(space, IOVA_CARVEOUT, target.base)?;
        smmu.write_bank(HOSTILE_BANK, ASID_HOSTILE, pool.root(space));
        smmu.tlbi_asid(HOSTILE_BANK, ASID_HOSTILE);
        smmu.tlb_sync(HOSTILE_BANK)?;
        smmu.map_stream(GROUP, sid, S2CR_TRANSLATE | HOSTILE_BANK);
        // Control: a round trip through the bank works.
        fill(&SOURCE_PAGE, PROBE_WORDS, SEED);
        fill(&RESULT_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_device(IOVA_SOURCE, PATTERN_SLOT, PROBE_BYTES)?;
        edu.dma_to_ram(PATTERN_SLOT, IOVA_RESULT, PROBE_BYTES)?;
        if seen(&RESULT_PAGE, PROBE_WORDS, &[SEED]) != Seen::Seed(SEED) {
            fail!("control: the pattern did not make the round trip through bank {HOSTILE_BANK}");
        }
        if smmu.fsr(HOSTILE_BANK) != 0 {
            fail!("control: FSR {:#x} after DMA through valid mappings", smmu.fsr(HOSTILE_BANK));
        }
        // (1) The donated page.
        edu.dma_to_ram(PATTERN_SLOT, IOVA_CARVEOUT, PROBE_BYTES)?;
        let fsr = smmu.wait_fault(HOSTILE_BANK)?;
        let (far, fsynr0) = (smmu.far(HOSTILE_BANK), smmu.fsynr0(HOSTILE_BANK));
        smmu.clear_fsr(HOSTILE_BANK);
        if fsr & FSR_EF == 0 || far != IOVA_CARVEOUT || fsynr0 & FSYNR0_WNR == 0 {
            fail!(
                "DMA write to IOVA {IOVA_CARVEOUT:#x} (-> donated {target}): FSR {fsr:#x}, FAR \
                 {far:#x}, FSYNR0 {fsynr0:#x}; expected EF, the IOVA and WNR"
            );
        }
        let after = handoff::peer_checksum(PeerId::MODEM, target)?;
        if after != before {
            fail!("the peer's checksum of {target} changed: {before:#x} -> {after:#x}");
        }
        // (2) Bypass for every stream, asked for with no SMR matching edu.
        smmu.unmap_stream(GROUP);
        smmu.clear_global_fault();
        smmu.write_scr0(SCR0_ON | SCR0_CLIENTPD);
        let scr0 = smmu.scr0();
        fill(&RESULT_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
        let global = smmu.wait_global_fault();
        smmu.write_scr0(SCR0_ON);
        smmu.clear_global_fault();
        if scr0 & SCR0_CLIENTPD != 0 {
            fail!("sCR0 reads {scr0:#x} after CLIENTPD = 1: bypass was not refused");
        }
        let (gfsr, gfsynr1) = global?;
        if seen(&RESULT_PAGE, PROBE_WORDS, &[SEED, POISON]) != Seen::Seed(POISON) {
            fail!("with CLIENTPD = 1 asked, an unmatched stream's DMA write landed in guest RAM");
        }
        if gfsr & SGFSR_USF == 0 || gfsynr1 & 0xffff != sid {
            fail!("sGFSR {gfsr:#x}, sGFSYNR1 {gfsynr1:#x}: expected USF for stream {sid:#x}");
        }
        println!(
            "guest: note mmu500_hostile_host: donated {target} via IOVA {IOVA_CARVEOUT:#x}: FSR \
             {fsr:#x} FAR {far:#x} FSYNR0 {fsynr0:#x}, peer checksum {before:#x} unchanged; \
             CLIENTPD = 1 refused (sCR0 {scr0:#x}), unmatched DMA: sGFSR {gfsr:#x} sGFSYNR1 \
             {gfsynr1:#x}"
        );
        Ok(())
    })();
    smmu.unmap_stream(GROUP);
    smmu.disable_bank(HOSTILE_BANK);
    smmu.tlbi_asid(HOSTILE_BANK, ASID_HOSTILE);
    smmu.tlb_sync(HOSTILE_BANK)?;
    smmu.clear_fsr(HOSTILE_BANK);
    outcome?;
    handoff::peer_release(PeerId::MODEM, target)?;
    handoff::check(handoff::reclaim(target.target(), false), format_args!("RECLAIM {target}"))?;
    Ok(())
}
