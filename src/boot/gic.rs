//! The GIC emulation's hardware side (`crate::gic`): the real ITS and redistributor frames,
//! warden memory the ITS reads, and host memory checked against the ownership tracker (rule 1:
//! host-owned, outside every carveout, warden's region and `no-map` reserved memory).
//!
//! Boot: [`probe`] (before the host's stage 2 is built: it names the frames to leave out)
//! walks the redistributors; [`take`] (once the frame pool exists) takes every ITS (warden's
//! queue and tables) and every redistributor (LPIs off). Any failure stops the boot: an ITS or
//! redistributor warden cannot confine is a DMA master the host could aim anywhere.
//!
//! Lock order on a trapped access: the ITS (or redistributor), then the tracker (held for the
//! whole access, like the virtual SMMU's), then the frame pool. The handoff sequences take the
//! tracker and the frame pool one at a time and never a GIC lock, so the order has no cycle.

use alloc::string::String;
use alloc::vec::Vec;

use super::Warden;
use crate::arch::aarch64::Hw;
use crate::arch::{CacheMaintenance, CacheOp, dcache_range, select_nospec};
use crate::dt::PlatformInfo;
use crate::gic::its::{ItsIo, ItsParams, RdTarget, VirtIts};
use crate::gic::redist::{RegisterFrame, VirtRedist};
use crate::gic::regs::{FRAME_SIZE, GICD_TYPER, GICD_TYPER_F};
use crate::gic::{GicFrame, GicLayout, HostMemory, Refused, layout};
use crate::mm::MemRange;

/// One real 64 KiB register frame, by physical address (identity-mapped as device at EL2).
#[derive(Debug)]
pub struct Frame {
    base: u64,
}

impl Frame {
    fn at(&self, offset: u32) -> u64 {
        // Callers pass offsets inside the frame (the emulation's own, or checked by lookup).
        self.base + u64::from(offset) % FRAME_SIZE
    }
}

impl RegisterFrame for Frame {
    fn read32(&self, offset: u32) -> u32 {
        // SAFETY: the frame is one of the GIC's, mapped as device at EL2 (build_el2_tables)
        // and absent from the host's stage 2; the offset is inside it and 4-byte aligned
        // (the emulation checks alignment before forwarding).
        unsafe { core::ptr::read_volatile(self.at(offset) as *const u32) }
    }
    fn write32(&self, offset: u32, value: u32) {
        // SAFETY: as in read32.
        unsafe { core::ptr::write_volatile(self.at(offset) as *mut u32, value) }
    }
    fn read64(&self, offset: u32) -> u64 {
        // SAFETY: as in read32, 8-byte aligned.
        unsafe { core::ptr::read_volatile(self.at(offset) as *const u64) }
    }
    fn write64(&self, offset: u32, value: u64) {
        // SAFETY: as in read64.
        unsafe { core::ptr::write_volatile(self.at(offset) as *mut u64, value) }
    }
}

impl ItsIo for Frame {
    fn read32(&self, offset: u32) -> u32 {
        RegisterFrame::read32(self, offset)
    }
    fn write32(&self, offset: u32, value: u32) {
        RegisterFrame::write32(self, offset, value)
    }
    fn read64(&self, offset: u32) -> u64 {
        RegisterFrame::read64(self, offset)
    }
    fn write64(&self, offset: u32, value: u64) {
        RegisterFrame::write64(self, offset, value)
    }
    fn mem_write64(&self, pa: u64, value: u64) {
        // SAFETY: the emulation only writes frames it allocated from warden's pool for the
        // ITS's queue and tables (identity-mapped RW at EL2, 8-byte aligned).
        unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
    }
    fn publish(&self, range: MemRange, clean: bool) {
        if clean {
            dcache_range(&Hw, CacheOp::Clean, range.start, range.size());
        } else {
            Hw.dsb_sy();
        }
    }
}

struct Its {
    io: Frame,
    virt: spin::Mutex<VirtIts>,
}

struct Redist {
    io: Frame,
    virt: spin::Mutex<VirtRedist>,
}

/// Everything the trap path needs.
pub struct GicState {
    pub layout: GicLayout,
    its: Vec<Its>,
    redists: Vec<Redist>,
}

/// Host memory as rule 1 defines it: exactly [`crate::handoff::HostMemory::allows`], the one
/// predicate the virtual SMMU and the stage-1 walker use too (its tracker lock held for the
/// whole access). A copy's address goes through [`select_nospec`] after the check, so a
/// mispredicted check cannot lead even a speculative load to a refused address.
struct RuleOne<'a> {
    host: &'a crate::handoff::HostMemory<'a>,
}

impl HostMemory for RuleOne<'_> {
    fn is_host_memory(&self, range: MemRange) -> bool {
        self.host.allows(range)
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), Refused> {
        let range = MemRange::from_base_size(pa, buf.len() as u64).ok_or(Refused)?;
        let allowed = self.host.allows(range);
        if !allowed {
            return Err(Refused);
        }
        let src = select_nospec(allowed, pa);
        // SAFETY: the range is host memory warden may touch (rule 1), which warden's EL2
        // stage-1 maps identity RW; the tracker lock held by `host` keeps it the host's. The
        // host may change it concurrently: bytes are copied, never referenced.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

fn gicd_typer(p: &PlatformInfo) -> Option<u32> {
    let gicd = p.gic_dist?.start;
    // SAFETY: the distributor's page is mapped as device at EL2 (build_el2_tables); reading
    // GICD_TYPER has no side effects.
    Some(unsafe { core::ptr::read_volatile((gicd + u64::from(GICD_TYPER)) as *const u32) })
}

/// The frames warden must trap: every ITS's control frame and, when the GIC implements LPIs,
/// every redistributor's RD_base (and VLPI_base). Before the host's stage 2 exists.
pub fn probe(p: &PlatformInfo) -> Result<GicLayout, String> {
    let its: Vec<u64> = p.gic_its.iter().map(|r| r.start).collect();
    let Some(gic) = p.gicv3.as_ref() else {
        if !its.is_empty() {
            return Err(alloc::format!("an ITS at {:#x} but no GICv3 node", its[0]));
        }
        return Ok(GicLayout::default());
    };
    for r in p.gic_its.iter() {
        if r.size() < 2 * FRAME_SIZE || !r.start.is_multiple_of(FRAME_SIZE) {
            return Err(alloc::format!("ITS registers {r} are not two aligned 64 KiB frames"));
        }
    }
    let lpis = gicd_typer(p).is_some_and(|t| GICD_TYPER_F::LPIS.is_set(t));
    if !lpis {
        return Ok(GicLayout { its, redists: Vec::new() });
    }
    let read32 = |pa: u64| {
        // SAFETY: the walk reads only frames inside the DT's redistributor regions, mapped
        // as device at EL2 (build_el2_tables), and never past a frame saying Last.
        unsafe { core::ptr::read_volatile(pa as *const u32) }
    };
    let read64 = |pa: u64| {
        // SAFETY: as for read32; GICR_TYPER is 8-byte aligned.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    };
    let redists = layout::walk_redistributors(
        &gic.redist_regions,
        gic.redist_stride,
        crate::arch::aarch64::MAX_CPUS * 2,
        read32,
        read64,
    )
    .map_err(|e| alloc::format!("{}: {e}", gic.path))?;
    Ok(GicLayout { its, redists })
}

/// Takes every ITS and redistributor of `layout` (see the module documentation).
pub fn take(
    p: &PlatformInfo,
    layout: GicLayout,
    frames: &mut crate::mm::PoolFrames,
) -> Result<GicState, String> {
    let typer = gicd_typer(p).unwrap_or(0);
    let id_bits = (GICD_TYPER_F::ID_BITS.read(typer) + 1).min(32);
    let mut redists = Vec::new();
    for r in &layout.redists {
        let io = Frame { base: r.rd_base };
        let virt = VirtRedist::take(&io, id_bits, ItsParams::DEFAULT_POLL_LIMIT).map_err(|_| {
            alloc::format!(
                "redistributor at {:#x} has LPIs enabled (tables nobody checked) and they do not turn off",
                r.rd_base
            )
        })?;
        redists.push(Redist { io, virt: spin::Mutex::new(virt) });
    }
    let targets: Vec<RdTarget> = layout
        .redists
        .iter()
        .map(|r| RdTarget { rd_base: r.rd_base, processor: r.processor() })
        .collect();
    let mut its = Vec::new();
    for &base in &layout.its {
        let io = Frame { base };
        let params = ItsParams {
            targets: targets.clone(),
            lpi_id_bits: id_bits,
            cmd_budget: ItsParams::DEFAULT_CMD_BUDGET,
            poll_limit: ItsParams::DEFAULT_POLL_LIMIT,
            l2_quota: ItsParams::DEFAULT_L2_QUOTA,
        };
        let virt = VirtIts::new(&io, frames, params)
            .map_err(|e| alloc::format!("ITS at {base:#x}: {e}"))?;
        let typer = virt.typer();
        log::info!(
            "ITS at {base:#x} taken: warden's command queue and tables ({} KiB), the host's control frame emulated (GITS_TYPER shown {typer:#x}: physical LPIs only, {}-bit DeviceIDs)",
            virt.memory().iter().map(|m| m.size()).sum::<u64>() / 1024,
            crate::gic::regs::GITS_TYPER_F::DEVBITS.read(typer) + 1
        );
        its.push(Its { io, virt: spin::Mutex::new(virt) });
    }
    if !layout.redists.is_empty() {
        log::info!(
            "GIC: {} redistributor(s) trapped (RD_base{}): LPI tables must be host memory before EnableLPIs",
            layout.redists.len(),
            if layout.any_vlpi() { " and VLPI_base" } else { "" }
        );
    }
    Ok(GicState { layout, its, redists })
}

/// Runs `f` with rule-1 host memory (tracker held) and the frame pool.
fn with_host<T>(w: &Warden, f: impl FnOnce(&RuleOne<'_>, &mut crate::mm::PoolFrames) -> T) -> T {
    let host = w.handoff.host_memory();
    let rule = RuleOne { host: &host };
    let mut frames = w.frames.lock();
    f(&rule, &mut frames)
}

pub fn read(w: &Warden, frame: GicFrame, offset: u32, size: u8) -> u64 {
    let Some(g) = w.gic() else { return 0 };
    match frame {
        GicFrame::ItsControl(i) => {
            let Some(its) = g.its.get(i) else { return 0 };
            let mut virt = its.virt.lock();
            with_host(w, |host, frames| virt.mmio_read(offset, size, &its.io, host, frames))
        }
        GicFrame::RdBase(i) => {
            let Some(r) = g.redists.get(i) else { return 0 };
            r.virt.lock().read(&r.io, offset, size)
        }
        GicFrame::Vlpi(i) => {
            g.redists.get(i).map_or(0, |r| r.virt.lock().vlpi_access(offset, size, None))
        }
    }
}

pub fn write(w: &Warden, frame: GicFrame, offset: u32, size: u8, value: u64) {
    let Some(g) = w.gic() else { return };
    match frame {
        GicFrame::ItsControl(i) => {
            let Some(its) = g.its.get(i) else { return };
            let mut virt = its.virt.lock();
            with_host(w, |host, frames| {
                virt.mmio_write(offset, size, value, &its.io, host, frames)
            });
        }
        GicFrame::RdBase(i) => {
            let Some(r) = g.redists.get(i) else { return };
            let mut virt = r.virt.lock();
            let host = w.handoff.host_memory();
            virt.write(&r.io, &RuleOne { host: &host }, offset, size, value);
        }
        GicFrame::Vlpi(i) => {
            if let Some(r) = g.redists.get(i) {
                r.virt.lock().vlpi_access(offset, size, Some(value));
            }
        }
    }
}

/// One line per ITS and one for the redistributors, at power-down.
pub fn log_stats(w: &Warden) {
    let Some(g) = w.gic() else { return };
    for (i, its) in g.its.iter().enumerate() {
        let s = its.virt.lock().stats();
        log::info!(
            "ITS {i}: {} command(s), {} forwarded, {} dropped (invalid), {} dropped (GICv4/unknown), {} table refusal(s), {} queue read abort(s), {} real stall(s), {} bad access(es)",
            s.commands,
            s.forwarded,
            s.dropped_invalid,
            s.dropped_unsupported,
            s.table_refusals,
            s.queue_read_aborts,
            s.real_stalls,
            s.bad_accesses
        );
    }
    if g.redists.is_empty() {
        return;
    }
    let mut total = crate::gic::redist::RedistStats::default();
    for r in &g.redists {
        let s = r.virt.lock().stats();
        total.enable_refusals += s.enable_refusals;
        total.table_refusals += s.table_refusals;
        total.ignored_while_enabled += s.ignored_while_enabled;
        total.vlpi_refusals += s.vlpi_refusals;
        total.bad_accesses += s.bad_accesses;
    }
    log::info!(
        "GICR: {} EnableLPIs refusal(s), {} table refusal(s), {} table write(s) ignored while LPIs were on, {} VLPI_base refusal(s), {} bad access(es)",
        total.enable_refusals,
        total.table_refusals,
        total.ignored_while_enabled,
        total.vlpi_refusals,
        total.bad_accesses
    );
}
