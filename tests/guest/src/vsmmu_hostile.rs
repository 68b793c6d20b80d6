//! Hostile-host scenarios of warden's virtual SMMU (issue 5, items 3 and "hostile host"): the
//! guest asks for what warden must refuse, and each request gets the architected error or
//! event, nothing lands where it must not, and the SMMU still works afterwards.
//!
//! - `vsmmu_hostile_prod`: CMDQ_PROD more than a full queue ahead of CONS stops the queue with
//!   CERROR_ILL and no command runs; PROD bits above the queue's wrap bit are ignored.
//! - `vsmmu_hostile_gbpa`: GBPA resets to bypass; with SMMUEN = 0, GBPA.ABORT = 1 lets edu's
//!   DMA reach nothing, and bypass is warden's stage 2 alone: guest RAM yes, a donated carveout
//!   and warden's memory no, and no event (a disabled SMMU records none).
//! - `vsmmu_hostile_ste`: STEs asking for stage 2 (S2-only, nested) get C_BAD_STE and their DMA
//!   goes nowhere; an STE asking for bypass gets warden's stage 2 alone (host memory yes, a
//!   donated carveout and warden's memory no).
//! - `vsmmu_cd_in_carveout`: a CD pointer into a donated carveout (holding a valid CD) faults
//!   at stage 2 on the CD fetch; the CD there is never used.
//! - `vsmmu_cmd_sync_flood`: 64K CMD_SYNCs are consumed at most one budget per trap, all of
//!   them, and warden, the queue and DMA work afterwards.
//!
//! Each scenario reprograms the SMMU from scratch and leaves edu's stream in bypass.

use warden_abi::handoff::PeerId;
use warden_abi::hyp;

use crate::console::println;
use crate::cpu;
use crate::edu::{Edu, RESULT_PAGE, SOURCE_PAGE};
use crate::handoff;
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::smccc::{self, Conduit};
use crate::vsmmu::{
    self, CMD_SYNC, Event, STE0_CONFIG_NESTED, STE0_CONFIG_S1, STE0_CONFIG_S2, STE0_V, Smmu,
    Stage1Pool,
};
use crate::vsmmu_scenarios::{
    EVENT_TIMEOUT_MS, F_TRANSLATION, IOVA_RESULT, IOVA_SOURCE, PATTERN_SLOT, POISON, PROBE_BYTES,
    PROBE_WORDS, READBACK_SLOT, Seen, describe, devices, expect_fault, fill, seen, smmu_stats,
};

/// CMDQ_CONS.ERR of an illegal command (or queue state), and GERROR.CMDQ_ERR.
const CERROR_ILL: u32 = 1;
const GERROR_CMDQ_ERR: u32 = 1;
/// C_BAD_STE.
const C_BAD_STE: u8 = 0x04;
/// Event CLASS of a fault on a CD fetch.
const CLASS_CD: u8 = 0b00;
/// warden's per-trap command budget (`VirtConfig::DEFAULT_CMD_BUDGET`, docs/smmu.md: "At most
/// 64 commands are consumed per trap").
const WARDEN_CMD_BUDGET: u32 = 64;
/// CMD_SYNCs in the flood.
const FLOOD_COMMANDS: u64 = 1 << 16;

/// ASIDs of these scenarios (apart from the other scenarios' ones).
const ASID_NESTED: u16 = 0x31;
const ASID_CD_CARVEOUT: u16 = 0x32;
const CD_SLOT: usize = 0;

fn cons_error(cons: u32) -> u32 {
    (cons >> 24) & 0x7f
}

fn warden_base(platform: &Platform) -> Result<u64, Reason> {
    match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) if region.size >= 0x4000 => Ok(region.base),
            _ => Err(Reason::new(format_args!("no usable warden region in the DT"))),
        },
        Err(why) => Err(Reason::new(format_args!("{why}"))),
    }
}

/// `seed` goes SOURCE_PAGE -> edu -> RESULT_PAGE by DMA with `sid` in bypass (warden's stage 2
/// alone); fails unless it arrives.
fn round_trip(edu: &Edu, seed: u64, what: &str) -> Outcome {
    fill(&SOURCE_PAGE, PROBE_WORDS, seed);
    fill(&RESULT_PAGE, PROBE_WORDS, POISON);
    edu.dma_to_device(SOURCE_PAGE.address(), PATTERN_SLOT, PROBE_BYTES)?;
    edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
    match seen(&RESULT_PAGE, PROBE_WORDS, &[seed, POISON]) {
        Seen::Seed(s) if s == seed => Ok(()),
        other => fail!("{what}: a DMA round trip through bypass gave {other:?}"),
    }
}

/// Waits for a C_BAD_STE record of `sid` in the guest's event queue.
fn expect_bad_ste(smmu: &mut Smmu, sid: u32, what: &str) -> Result<Event, Reason> {
    smmu.wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.kind() == C_BAD_STE).map_err(
        |skipped| {
            Reason::new(format_args!(
                "{what}: no C_BAD_STE for stream {sid:#x} within {EVENT_TIMEOUT_MS} ms (other \
                 records:{})",
                describe(&skipped)
            ))
        },
    )
}

/// Scenario `vsmmu_hostile_prod`.
pub fn hostile_prod(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0x81;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let entries = smmu.cmdq_entries();
    let pointer_mask = 2 * entries - 1;
    // Every slot a CMD_SYNC: any command warden ran would show in SMMU_STATS.commands.
    for slot in 0..entries {
        smmu.write_command_slot(slot, CMD_SYNC);
    }
    cpu::dsb_sy();
    let cons0 = smmu.cmdq_cons();
    if cons_error(cons0) != 0 || cons0 & pointer_mask != smmu.cmdq_prod() {
        fail!("fresh queue: CMDQ_CONS {cons0:#x}, PROD {:#x}", smmu.cmdq_prod());
    }
    let before = smmu_stats()?;
    // One entry more than a full queue ahead of CONS: index + 1 on the other lap.
    let beyond = smmu.advanced(cons0 & pointer_mask, entries + 1);
    smmu.write_cmdq_prod(beyond);
    let cons = smmu.cmdq_cons();
    let errors = smmu.active_errors();
    let after = smmu_stats()?;
    let ran = after.commands.wrapping_sub(before.commands);
    if cons_error(cons) != CERROR_ILL || cons & pointer_mask != cons0 & pointer_mask {
        fail!(
            "PROD {beyond:#x} ({} entries ahead of CONS {cons0:#x} in a {entries}-entry queue): \
             CMDQ_CONS {cons:#x}, expected RD unchanged and ERR = CERROR_ILL",
            entries + 1
        );
    }
    if errors & GERROR_CMDQ_ERR == 0 {
        fail!("PROD {beyond:#x}: GERROR.CMDQ_ERR not active (GERROR ^ GERRORN = {errors:#x})");
    }
    if ran != 0 {
        fail!("PROD {beyond:#x}: warden ran {ran} command(s) of an inconsistent queue");
    }

    // A driver's recovery: PROD back to CONS (empty), then acknowledge the error.
    smmu.write_cmdq_prod(cons0 & pointer_mask);
    smmu.ack_errors();
    if smmu.active_errors() != 0 {
        fail!("global errors still active after GERRORN: {:#x}", smmu.active_errors());
    }
    smmu.sync().map_err(|why| Reason::new(format_args!("after recovery: {why}")))?;

    // PROD bits above the wrap bit are RES0: ignored, the command below them runs.
    let before = smmu_stats()?;
    let next = smmu.advanced(smmu.cmdq_prod(), 1);
    let junk = 0x000f_ffff & !pointer_mask;
    smmu.write_command_slot(smmu.cmdq_prod(), CMD_SYNC);
    cpu::dsb_sy();
    smmu.write_cmdq_prod(junk | next);
    let mut high_cons = 0;
    let consumed = cpu::wait_until(EVENT_TIMEOUT_MS, || {
        high_cons = smmu.cmdq_cons();
        high_cons & pointer_mask == next
    });
    let high_ran = smmu_stats()?.commands.wrapping_sub(before.commands);
    if !consumed || smmu.active_errors() != 0 || high_ran != 1 {
        fail!(
            "PROD {:#x} (RES0 bits {junk:#x} set): CONS {high_cons:#x}, active GERROR {:#x}, \
             {high_ran} command(s) ran; expected the one CMD_SYNC below them to run",
            junk | next,
            smmu.active_errors()
        );
    }

    smmu.bypass(sid)?;
    round_trip(edu, SEED, "after the inconsistent PROD")?;
    println!(
        "guest: note vsmmu_hostile_prod: PROD {beyond:#x} over CONS {cons0:#x} \
         ({entries}-entry queue): CONS {cons:#x} (CERROR_ILL), GERROR.CMDQ_ERR, {ran} commands \
         ran; PROD {:#x}: {high_ran} command ran; DMA works after",
        junk | next
    );
    Ok(())
}

/// Scenario `vsmmu_hostile_gbpa`: the caller restores the carveouts afterwards.
pub fn hostile_gbpa(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const BUFFER_SEED: u64 = 0x91;
    const BLOCKED_SEED: u64 = 0x92;
    const BYPASS_SEED: u64 = 0x93;
    const CARVEOUT_SEED: u64 = 0x9192;
    const UNTOUCHED: u64 = 0xbeef;
    let warden = warden_base(platform)? & !0xfff;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    smmu.bypass(sid)?;
    // Control, and edu's buffer holds BUFFER_SEED from now on.
    round_trip(edu, BUFFER_SEED, "control")?;
    let initial = smmu.gbpa();
    if initial != vsmmu::GBPA_RESET {
        fail!(
            "GBPA reads {initial:#x} before any update, expected the reset value {:#x} (bypass)",
            vsmmu::GBPA_RESET
        );
    }

    // Linux's arm_smmu_update_gbpa(smmu, GBPA_ABORT, 0): with SMMUEN = 0 nothing gets through.
    smmu.write_gbpa(vsmmu::GBPA_UPDATE | vsmmu::GBPA_ABORT);
    let aborting = smmu.gbpa();
    if aborting & vsmmu::GBPA_ABORT == 0 || aborting & vsmmu::GBPA_UPDATE != 0 {
        fail!("GBPA update asking for abort: reads {aborting:#x}, expected ABORT set, UPDATE 0");
    }
    smmu.set_translation(false)?;
    fill(&SOURCE_PAGE, PROBE_WORDS, BLOCKED_SEED);
    fill(&RESULT_PAGE, PROBE_WORDS, UNTOUCHED);
    let dma = edu
        .dma_to_device(SOURCE_PAGE.address(), PATTERN_SLOT, PROBE_BYTES)
        .and_then(|()| edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), PROBE_BYTES));
    let written = seen(&RESULT_PAGE, PROBE_WORDS, &[UNTOUCHED, BLOCKED_SEED, BUFFER_SEED]);
    smmu.set_translation(true)?;
    dma?;
    if written != Seen::Seed(UNTOUCHED) {
        fail!("with SMMUEN = 0 and GBPA.ABORT = 1, edu's DMA wrote guest RAM: {written:?}");
    }
    // What the read with SMMUEN = 0 put into edu's buffer: never the source page.
    fill(&RESULT_PAGE, PROBE_WORDS, UNTOUCHED);
    edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
    let buffer = seen(&RESULT_PAGE, PROBE_WORDS, &[BLOCKED_SEED, UNTOUCHED, BUFFER_SEED]);
    match buffer {
        Seen::Seed(BLOCKED_SEED) => {
            fail!("with SMMUEN = 0 and GBPA.ABORT = 1, edu's DMA read guest RAM")
        }
        Seen::Seed(UNTOUCHED) => fail!("SMMUEN = 1 again, edu's buffer did not reach guest RAM"),
        _ => {}
    }
    round_trip(edu, BUFFER_SEED + 2, "SMMUEN = 1 again")?;

    // Linux's arm_smmu_update_gbpa(smmu, 0, GBPA_ABORT) (`disable_bypass=0`): bypass, which
    // warden serves with its stage 2 alone while SMMUEN = 0.
    let requests_before = smmu_stats()?.bypass_requests;
    smmu.write_gbpa(vsmmu::GBPA_UPDATE);
    let bypassing = smmu.gbpa();
    if bypassing & (vsmmu::GBPA_ABORT | vsmmu::GBPA_UPDATE) != 0 {
        fail!("GBPA update asking for bypass: reads {bypassing:#x}, expected ABORT 0, UPDATE 0");
    }
    let requests = smmu_stats()?.bypass_requests.wrapping_sub(requests_before);
    if requests != 1 {
        fail!("SMMU_STATS x7 counts {requests} bypass request(s) for the update, expected 1");
    }
    smmu.set_translation(false)?;
    smmu.drain_events();
    // Host memory: a round trip works (a bootloader's DMA, U-Boot's AHCI reads).
    let host = round_trip(edu, BYPASS_SEED, "SMMUEN = 0, GBPA bypass");
    // A donated carveout page: never reached.
    let target = handoff::modem().span(handoff::modem().size - 0x1000, 0x1000);
    let carveout = host.and_then(|()| {
        handoff::write_pattern(target, CARVEOUT_SEED)?;
        handoff::check(
            handoff::modem().hand_over(target.target(), false),
            format_args!("DONATE {target}"),
        )?;
        let before = handoff::peer_checksum(PeerId::MODEM, target)?;
        edu.dma_to_ram(PATTERN_SLOT, target.base, PROBE_BYTES)?;
        let after = handoff::peer_checksum(PeerId::MODEM, target)?;
        handoff::peer_release(PeerId::MODEM, target)?;
        handoff::check(handoff::reclaim(target.target(), false), format_args!("RECLAIM {target}"))?;
        Ok((before, after))
    });
    // Warden's memory: neither written nor read back.
    let warden_read = carveout.as_ref().map_err(|_| ()).ok().map(|_| {
        edu.dma_to_ram(PATTERN_SLOT, warden, PROBE_BYTES)?;
        fill(&SOURCE_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_device(SOURCE_PAGE.address(), READBACK_SLOT, PROBE_BYTES)?;
        edu.dma_to_device(warden, READBACK_SLOT, PROBE_BYTES)?;
        fill(&RESULT_PAGE, PROBE_WORDS, UNTOUCHED);
        edu.dma_to_ram(READBACK_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
        Ok::<Seen, Reason>(seen(&RESULT_PAGE, PROBE_WORDS, &[BYPASS_SEED, UNTOUCHED]))
    });
    // A disabled SMMU records no events.
    let events = smmu.drain_events();
    smmu.write_gbpa(vsmmu::GBPA_UPDATE | initial);
    smmu.set_translation(true)?;
    let (before, after) = carveout?;
    if after != before {
        fail!(
            "SMMUEN = 0, GBPA bypass: the peer's checksum of {target} changed: {before:#x} -> {after:#x}"
        );
    }
    match warden_read.transpose()? {
        Some(Seen::Seed(BYPASS_SEED)) => {
            fail!("SMMUEN = 0, GBPA bypass: warden memory at {warden:#x} reads the pattern")
        }
        Some(Seen::Seed(_)) => {
            fail!("SMMUEN = 0, GBPA bypass: the read-back of warden memory did not reach RAM")
        }
        Some(Seen::Other { .. }) => {}
        None => fail!("SMMUEN = 0, GBPA bypass: warden's memory was not tried"),
    }
    if events != 0 {
        fail!("SMMUEN = 0: {events} event record(s) in the host's queue, expected none");
    }
    round_trip(edu, BUFFER_SEED + 3, "SMMUEN = 1, GBPA back to its reset value")?;
    println!(
        "guest: note vsmmu_hostile_gbpa: GBPA {initial:#x} at reset; ABORT -> {aborting:#x}, \
         SMMUEN = 0: edu's write to RAM did not land, its read gave {buffer:?}; bypass -> \
         {bypassing:#x} (SMMU_STATS: 1 request), SMMUEN = 0: DMA to RAM works, carveout \
         {target} (peer checksum {before:#x} unchanged) and warden {warden:#x} unreached, no \
         event; DMA works after"
    );
    Ok(())
}

/// Scenario `vsmmu_hostile_ste`: the caller restores the carveouts afterwards.
pub fn hostile_ste(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0xa1;
    const CARVEOUT_SEED: u64 = 0xa1a2;
    let warden = warden_base(platform)? & !0xfff;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    smmu.bypass(sid)?;
    // edu's buffer holds SEED for every write below.
    round_trip(edu, SEED, "control")?;

    // Stage 2 only, then stage 1 + stage 2 over a CD whose tables map IOVA_RESULT: both
    // refused with C_BAD_STE, and the DMA reaches nothing.
    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
    vsmmu::write_cd(CD_SLOT, ASID_NESTED, pool.root(space));
    let nested = vsmmu::stage1_ste(vsmmu::cd_address(CD_SLOT));
    let nested0 = (nested[0] & !STE0_CONFIG_S1) | STE0_CONFIG_NESTED;
    let requests = [
        ("stage 2 only", [STE0_V | STE0_CONFIG_S2, 0, 0, 0, 0, 0, 0, 0], RESULT_PAGE.address()),
        ("stage 1 + 2", [nested0, nested[1], 0, 0, 0, 0, 0, 0], IOVA_RESULT),
    ];
    let mut refusals = [None; 2];
    for ((what, ste, address), refusal) in requests.into_iter().zip(refusals.iter_mut()) {
        smmu.drain_events();
        smmu.install_ste(sid, ste)?;
        let at_cfgi = expect_bad_ste(&mut smmu, sid, what)?;
        fill(&RESULT_PAGE, PROBE_WORDS, POISON);
        edu.dma_to_ram(PATTERN_SLOT, address, PROBE_BYTES)?;
        let at_dma = expect_bad_ste(&mut smmu, sid, what)?;
        let result = seen(&RESULT_PAGE, PROBE_WORDS, &[POISON, SEED]);
        if result != Seen::Seed(POISON) {
            fail!("STE asking for {what}: edu's DMA to {address:#x} wrote guest RAM: {result:?}");
        }
        *refusal = Some((at_cfgi, at_dma));
    }
    vsmmu::clear_cd(CD_SLOT);

    // Bypass: warden's stage 2 alone. Host memory yes (round_trip), a donated carveout no,
    // warden's memory no.
    smmu.bypass(sid)?;
    round_trip(edu, SEED, "STE bypass into host memory")?;
    let target = handoff::modem().span(handoff::modem().size - 0x1000, 0x1000);
    handoff::write_pattern(target, CARVEOUT_SEED)?;
    handoff::check(
        handoff::modem().hand_over(target.target(), false),
        format_args!("DONATE {target}"),
    )?;
    let before = handoff::peer_checksum(PeerId::MODEM, target)?;
    smmu.drain_events();
    edu.dma_to_ram(PATTERN_SLOT, target.base, PROBE_BYTES)?;
    let carveout_event = expect_fault(&mut smmu, sid, target.base, Some(target.base))?;
    let after = handoff::peer_checksum(PeerId::MODEM, target)?;
    if after != before {
        fail!("STE bypass: the peer's checksum of {target} changed: {before:#x} -> {after:#x}");
    }
    handoff::peer_release(PeerId::MODEM, target)?;
    handoff::check(handoff::reclaim(target.target(), false), format_args!("RECLAIM {target}"))?;

    edu.dma_to_ram(PATTERN_SLOT, warden, PROBE_BYTES)?;
    let warden_event = expect_fault(&mut smmu, sid, warden, Some(warden))?;
    // Read back over poison in edu's buffer: the pattern must not come back.
    fill(&SOURCE_PAGE, PROBE_WORDS, POISON);
    edu.dma_to_device(SOURCE_PAGE.address(), READBACK_SLOT, PROBE_BYTES)?;
    edu.dma_to_device(warden, READBACK_SLOT, PROBE_BYTES)?;
    fill(&RESULT_PAGE, PROBE_WORDS, 0xbeef);
    edu.dma_to_ram(READBACK_SLOT, RESULT_PAGE.address(), PROBE_BYTES)?;
    match seen(&RESULT_PAGE, PROBE_WORDS, &[SEED, 0xbeef]) {
        Seen::Seed(SEED) => fail!("STE bypass: warden memory at {warden:#x} reads the pattern"),
        Seen::Seed(_) => fail!("STE bypass: the read-back of warden memory did not reach RAM"),
        Seen::Other { .. } => {}
    }
    smmu.drain_events();
    let [Some((s2_cfgi, s2_dma)), Some((nested_cfgi, nested_dma))] = refusals else {
        fail!("the refused STEs were not all tried");
    };
    println!(
        "guest: note vsmmu_hostile_ste: S2-only STE: {s2_cfgi} at CFGI_STE, {s2_dma} on DMA; \
         nested STE: {nested_cfgi}, {nested_dma}; bypass STE: carveout {target}: \
         {carveout_event} (peer checksum {before:#x} unchanged), warden {warden:#x}: \
         {warden_event}"
    );
    Ok(())
}

/// Scenario `vsmmu_cd_in_carveout`: the caller restores the carveouts afterwards.
pub fn cd_in_carveout(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0xb1;
    const CARVEOUT_SEED: u64 = 0xb1b2;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    smmu.bypass(sid)?;
    round_trip(edu, SEED, "control")?;

    // A valid CD at the start of a carveout page, its tables (guest RAM) mapping IOVA_RESULT:
    // were it ever used, the DMA below would land in RESULT_PAGE.
    let target = handoff::modem().span(handoff::modem().size - 0x1000, 0x1000);
    handoff::write_pattern(target, CARVEOUT_SEED)?;
    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space, IOVA_RESULT, RESULT_PAGE.address())?;
    let cd = vsmmu::cd_words(ASID_CD_CARVEOUT, pool.root(space));
    for (i, word) in cd.iter().enumerate() {
        let address = (target.base + 8 * i as u64) as *mut u64;
        // SAFETY: the carveout page is the host's (not donated yet) and the guest's MMU is off
        // (identity); the CD's 8 words fit in the page.
        unsafe { address.write_volatile(*word) };
    }
    cpu::dsb_sy();
    handoff::check(
        handoff::modem().hand_over(target.target(), false),
        format_args!("DONATE {target}"),
    )?;
    let before = handoff::peer_checksum(PeerId::MODEM, target)?;

    smmu.drain_events();
    smmu.install_ste(sid, vsmmu::stage1_ste(target.base))?;
    fill(&RESULT_PAGE, PROBE_WORDS, POISON);
    let dma = edu.dma_to_ram(PATTERN_SLOT, IOVA_RESULT, PROBE_BYTES);
    let event = smmu.wait_event(EVENT_TIMEOUT_MS, |e| e.stream_id() == sid && e.stage2());
    let result = seen(&RESULT_PAGE, PROBE_WORDS, &[POISON, SEED]);
    let after = handoff::peer_checksum(PeerId::MODEM, target);
    let restored = smmu.bypass(sid);
    dma?;
    restored?;
    let event = event.map_err(|skipped| {
        Reason::new(format_args!(
            "CD at {:#x} (donated): no stage-2 event for stream {sid:#x} (other records:{})",
            target.base,
            describe(&skipped)
        ))
    })?;
    if result != Seen::Seed(POISON) {
        fail!(
            "the CD in carveout {target} was used: the DMA to IOVA {IOVA_RESULT:#x} gave {result:?}"
        );
    }
    if event.kind() != F_TRANSLATION || event.class() != CLASS_CD || event.ipa() != target.base {
        fail!(
            "CD at {:#x} (donated): expected a stage-2 F_TRANSLATION with CLASS = CD and IPA = \
             the CD, got {event}",
            target.base
        );
    }
    let after = after?;
    if after != before {
        fail!("the peer's checksum of {target} changed: {before:#x} -> {after:#x}");
    }
    smmu.drain_events();
    round_trip(edu, SEED + 1, "after the CD in a carveout")?;
    handoff::peer_release(PeerId::MODEM, target)?;
    handoff::check(handoff::reclaim(target.target(), false), format_args!("RECLAIM {target}"))?;
    println!(
        "guest: note vsmmu_cd_in_carveout: STE -> CD at {:#x} (donated, holding a valid CD): \
         event {event}, DMA to IOVA {IOVA_RESULT:#x} did not land, peer checksum {before:#x} \
         unchanged",
        target.base
    );
    Ok(())
}

/// What the flood saw.
#[derive(Default)]
struct Flood {
    prod_writes: u32,
    cons_reads: u32,
    max_per_prod_write: u64,
    max_per_cons_read: u32,
}

/// Scenario `vsmmu_cmd_sync_flood`.
pub fn cmd_sync_flood(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 0xc1;
    let edu = edu.as_ref().map_err(|why| Reason::new(format_args!("{why}")))?;
    let Some(base) = platform.smmu else {
        fail!("no arm,smmu-v3 node in the DT");
    };
    let mut smmu = Smmu::enable_large_queue(base)?;
    let sid = u32::from(edu.function.requester_id());
    let entries = smmu.cmdq_entries();
    if entries <= WARDEN_CMD_BUDGET {
        fail!("a {entries}-entry command queue cannot show a budget of {WARDEN_CMD_BUDGET}");
    }
    let pointer_mask = 2 * entries - 1;
    for slot in 0..entries {
        smmu.write_command_slot(slot, CMD_SYNC);
    }
    cpu::dsb_sy();
    let start = smmu_stats()?;
    let mut flood = Flood::default();
    let mut published = 0u64;
    while published < FLOOD_COMMANDS {
        // The whole queue at once (CONS == PROD now: the queue is empty).
        let batch = (FLOOD_COMMANDS - published).min(u64::from(entries)) as u32;
        let cons = smmu.cmdq_prod();
        let full = smmu.advanced(cons, batch);
        let before = smmu_stats()?.commands;
        smmu.write_cmdq_prod(full);
        flood.prod_writes += 1;
        // SMMU_STATS is a hypercall: it consumes nothing, so this is the PROD write's share.
        let by_write = smmu_stats()?.commands.wrapping_sub(before);
        if by_write == 0 || by_write > u64::from(WARDEN_CMD_BUDGET) {
            fail!(
                "PROD write #{} ({batch} commands published): warden consumed {by_write} in \
                 that trap, expected 1..={WARDEN_CMD_BUDGET}",
                flood.prod_writes
            );
        }
        flood.max_per_prod_write = flood.max_per_prod_write.max(by_write);
        // Each CMDQ_CONS read consumes the next batch first (at most the budget, at least one).
        let mut known = smmu.advanced(cons, by_write as u32);
        while known != full {
            let read = smmu.cmdq_cons();
            flood.cons_reads += 1;
            if cons_error(read) != 0 || smmu.active_errors() != 0 {
                fail!(
                    "after {published} CMD_SYNCs: CMDQ_CONS {read:#x}, active GERROR {:#x}",
                    smmu.active_errors()
                );
            }
            let step = (read & pointer_mask).wrapping_sub(known) & pointer_mask;
            if step == 0 || step > WARDEN_CMD_BUDGET {
                fail!(
                    "after {published} CMD_SYNCs: one CMDQ_CONS read moved CONS {known:#x} -> \
                     {read:#x} ({step} commands), expected 1..={WARDEN_CMD_BUDGET}"
                );
            }
            flood.max_per_cons_read = flood.max_per_cons_read.max(step);
            known = read & pointer_mask;
        }
        published += u64::from(batch);
    }
    let consumed = smmu_stats()?.commands.wrapping_sub(start.commands);
    if consumed != FLOOD_COMMANDS {
        fail!("SMMU_STATS counts {consumed} commands for the flood of {FLOOD_COMMANDS}");
    }
    // Still working: a CMD_SYNC completes, warden answers a call, DMA goes through.
    smmu.sync().map_err(|why| Reason::new(format_args!("after the flood: {why}")))?;
    let version = smccc::call(Conduit::Hvc, hyp::ABI_VERSION, [0; 3])[0];
    if version != hyp::packed_version() {
        fail!("after the flood ABI_VERSION returned {version:#x}");
    }
    smmu.bypass(sid)?;
    round_trip(edu, SEED, "after the flood")?;
    println!(
        "guest: note vsmmu_cmd_sync_flood: {FLOOD_COMMANDS} CMD_SYNCs through a {entries}-entry \
         queue: {} PROD writes (at most {} consumed by one), {} CMDQ_CONS reads (at most {} \
         consumed by one), {} traps; then CMD_SYNC, ABI_VERSION and DMA work",
        flood.prod_writes,
        flood.max_per_prod_write,
        flood.cons_reads,
        flood.max_per_cons_read,
        flood.prod_writes + flood.cons_reads
    );
    Ok(())
}
