//! G1 against the SMMU's combined stage-1 + stage-2 TLB entries (issue 11 §3).
//!
//! - `vsmmu_donate_after_stage1_dma_faults`: edu writes a host page P of the modem carveout
//!   through a stage-1 mapping (so the SMMU caches a combined IOVA -> P translation), P is
//!   donated, and the same DMA again must fault at stage 2 with the event in the guest's queue
//!   while the peer's checksum of P stays what it was at the donation. An invalidation of
//!   stage 2 by IPA alone leaves the combined entry in place (IHI 0070; QEMU's IOTLB too), so
//!   the second write would land in the peer's page. (`vsmmu_stage1_into_carveout_faults`
//!   donates first and maps second, so it never has such an entry.)
//!
//! The scenario leaves edu's stream in bypass and the carveout back with the host.

use warden_abi::handoff::PeerId;

use crate::console::println;
use crate::edu::{Edu, SOURCE_PAGE};
use crate::handoff;
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};
use crate::vsmmu::Stage1Pool;
use crate::vsmmu_scenarios::{
    IOVA_BASE, PATTERN_SLOT, PROBE_BYTES, PROBE_WORDS, devices, expect_fault, fill,
    install_context, pattern, with_teardown,
};

/// The IOVA mapped to P, and the source page's.
const IOVA_PAGE: u64 = IOVA_BASE + 0x30_0000;
const IOVA_SOURCE: u64 = IOVA_BASE + 0x30_1000;
/// This scenario's ASID (no other scenario uses it).
const ASID_DONATE: u16 = 0x24;
/// P: 32 KiB below the end of the modem carveout (other scenarios use the last pages).
const PAGE_FROM_END: u64 = 0x8000;

/// Scenario `vsmmu_donate_after_stage1_dma_faults`: the caller restores the carveouts.
pub fn donate_after_stage1_dma_faults(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const HOST_SEED: u64 = 0x5401;
    const FIRST_SEED: u64 = 0x5402;
    const SECOND_SEED: u64 = 0x5403;
    let (mut smmu, edu, sid) = devices(platform, edu)?;
    let modem = handoff::modem();
    let page = modem.span(modem.size - PAGE_FROM_END, 0x1000);
    let probe = modem.span(modem.size - PAGE_FROM_END, PROBE_BYTES);
    handoff::write_pattern(page, HOST_SEED)?;

    let mut pool = Stage1Pool::take();
    let space = pool.space()?;
    pool.map(space, IOVA_SOURCE, SOURCE_PAGE.address())?;
    pool.map(space, IOVA_PAGE, page.base)?;
    install_context(&mut smmu, sid, ASID_DONATE, pool.root(space))?;
    let mut donated = false;
    let outcome = with_teardown(&mut smmu, sid, ASID_DONATE, |smmu| {
        // While P is the host's, edu writes it through stage 1: the SMMU now caches
        // IOVA_PAGE -> P (writable).
        fill(&SOURCE_PAGE, PROBE_WORDS, FIRST_SEED);
        edu.dma_to_device(IOVA_SOURCE, PATTERN_SLOT, PROBE_BYTES)?;
        edu.dma_to_ram(PATTERN_SLOT, IOVA_PAGE, PROBE_BYTES)?;
        handoff::expect_words(probe, "the first DMA's pattern", |addr| {
            pattern(FIRST_SEED, ((addr - probe.base) / 8) as usize)
        })?;
        let spurious = smmu.drain_events();
        if spurious != 0 {
            fail!("{spurious} event(s) for DMA to P while the host owned it");
        }

        handoff::check(modem.hand_over(page.target(), false), format_args!("DONATE {page}"))?;
        donated = true;
        let before = handoff::peer_checksum(PeerId::MODEM, page)?;

        // The same write again, with other data.
        fill(&SOURCE_PAGE, PROBE_WORDS, SECOND_SEED);
        edu.dma_to_device(IOVA_SOURCE, PATTERN_SLOT, PROBE_BYTES)?;
        edu.dma_to_ram(PATTERN_SLOT, IOVA_PAGE, PROBE_BYTES)?;
        let after = handoff::peer_checksum(PeerId::MODEM, page)?;
        if after != before {
            fail!(
                "edu wrote the donated page {page} through IOVA {IOVA_PAGE:#x} after DONATE: \
                 the peer's checksum went {before:#x} -> {after:#x} (a combined stage-1 + \
                 stage-2 TLB entry survived the donation)"
            );
        }
        let event = expect_fault(smmu, sid, IOVA_PAGE, Some(page.base))?;
        println!(
            "guest: note vsmmu_donate_after_stage1_dma_faults: P = {page} written through IOVA \
             {IOVA_PAGE:#x} before DONATE; after it the same DMA gave event {event}, peer \
             checksum {before:#x} unchanged"
        );
        Ok(())
    });
    if donated {
        handoff::peer_release(PeerId::MODEM, page)?;
        handoff::check(handoff::reclaim(page.target(), false), format_args!("RECLAIM {page}"))?;
    }
    outcome
}
