//! The apps MMU-500 of a Snapdragon board (RB5, RB3 Gen 2) at run time: warden's back end
//! ([`crate::smmu::mmu500`]) over the DT's register window, started before the host's first
//! instruction, with every host stream on warden's host stage 2; the host's virtual MMU-500
//! (`smmu::v2`'s face, `boot::vsmmu`) at the same address, driving it; its faults polled where
//! the SMMUv3's event queue is drained and delivered into the face; its TLB invalidated by the
//! handoff sequences ([`crate::handoff::DmaStage2`], through [`dma_stage2`]). Checked only
//! against the register model (docs/smmu-500.md).

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;

use crate::dt::PlatformInfo;
use crate::handoff::DmaStage2;
use crate::host_dt::Mmu500Irqs;
use crate::smmu::S2Config;
use crate::smmu::mmu500::io::MmioMmu500;
use crate::smmu::mmu500::{Mmu500Backend, Mmu500Config, Mmu500Error};

/// The apps MMU-500, once taken (`None` on every other board).
static APPS_SMMU: spin::Mutex<Option<Mmu500Backend<MmioMmu500>>> = spin::Mutex::new(None);

/// The apps MMU-500's lock, held by the face's back-end work (`boot::vsmmu`).
pub type AppsSmmuGuard = spin::MutexGuard<'static, Option<Mmu500Backend<MmioMmu500>>>;

/// Takes the apps MMU-500's lock (after the face's and the tracker's: `boot::vsmmu`'s order).
pub fn lock() -> AppsSmmuGuard {
    APPS_SMMU.lock()
}

/// Context-bank faults polled since boot.
static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Takes the DT's apps MMU-500, if it has one: the survey, the stage-2 bank, TLBIVMID +
/// TLBGSYNC, every host stream's SMR and S2CR, then sCR0 (`Mmu500Backend::init`); and makes the
/// host's face for it: the virtual MMU-500 at the DT's window with the DT's interrupts, whose
/// streams are the DT's host streams (merged as the back end programmed them) and which
/// refuses host SMRs naming the streams the firmware kept. An error leaves the SMMU as the
/// firmware left it; the caller must not start the host then (the devices behind it are in
/// the host's stage 2).
pub fn take(
    p: &PlatformInfo,
    vtcr: u64,
    vttbr: u64,
) -> Result<Option<super::vsmmu::VirtSmmuState>, Mmu500Error> {
    // A DT with an MMU-500 on a board without the back end stopped the boot before this.
    if !crate::boards::HAS_MMU500 {
        return Ok(None);
    }
    let Some(info) = p.mmu500.as_ref() else { return Ok(None) };
    // SAFETY: the window is the DT's `reg` of the node, mapped as device memory at EL2
    // (build_el2_tables) and absent from the host's stage 2 (`host_stage2_holes`); this is
    // the only `MmioMmu500` made for it, kept in `APPS_SMMU` for the rest of the run.
    let io = unsafe { MmioMmu500::new(info.regs) };
    let s2 = S2Config::from_vtcr_vttbr(vtcr, vttbr);
    let config = Mmu500Config::for_board(p, s2);
    let backend = Mmu500Backend::init(io, config.clone())?;
    let face = backend.face_config(&config)?;
    let irqs = Mmu500Irqs::from_dt(info);
    log::info!(
        "MMU-500 {} ({}) taken: {} host stream(s) on warden's stage 2 (bank {}) until the host \
         configures them; virtual MMU-500 for the host at the same address ({} context banks, \
         {} stream match groups, stage 1 nested over host VMID {}, irqs {:?}), the firmware's \
         {} stream(s) invisible to it",
        info.regs,
        info.path,
        face.host_streams.len(),
        backend.stage2_bank(),
        crate::smmu::v2::regs::NUM_CB,
        crate::smmu::v2::regs::NUM_SMRG,
        s2.vmid,
        irqs,
        face.peer_streams.len(),
    );
    if irqs.is_none() {
        log::warn!(
            "MMU-500: the DT names no SPI global interrupt and {} context interrupts: the \
             virtual MMU-500 raises none",
            crate::smmu::v2::regs::NUM_CB
        );
    }
    *APPS_SMMU.lock() = Some(backend);
    Ok(Some(super::vsmmu::on_mmu500(info.regs, p.gic_dist, irqs, face)))
}

/// The SMMU the handoff sequences invalidate: the apps MMU-500 once taken, else `smmuv3`.
pub fn dma_stage2<'a>(
    smmuv3: &'a spin::Mutex<impl DmaStage2 + 'a>,
) -> &'a spin::Mutex<dyn DmaStage2 + 'a> {
    if crate::boards::HAS_MMU500 && APPS_SMMU.lock().is_some() { &APPS_SMMU } else { smmuv3 }
}

/// The faults the host's context banks recorded since the last call, logged (rate-limited
/// like the SMMUv3's events) and returned as event records for the face
/// (`vsmmu::forward_events`). Another CPU polling is as good as this one doing it.
pub fn poll_faults() -> Vec<[u64; 4]> {
    if !crate::boards::HAS_MMU500 {
        return Vec::new();
    }
    let Some(mut guard) = APPS_SMMU.try_lock() else { return Vec::new() };
    let Some(backend) = guard.as_mut() else { return Vec::new() };
    let events = backend.poll_faults();
    drop(guard);
    for event in &events {
        let n = FAULTS.fetch_add(1, Ordering::Relaxed) + 1;
        if crate::trap::should_log(n) {
            log::warn!("MMU-500: {event} (fault #{n})");
        }
    }
    events.iter().map(|e| e.raw).collect()
}
