//! The virtual SMMU's hardware side: host memory checked against the ownership tracker, the
//! real SMMU through its driver, and the host's SMMU interrupts raised at the GIC distributor.
//!
//! Lock order on a trapped access: the virtual SMMU, then the tracker (held for the whole
//! access, so no range can change owner between the check and the copy), then the real SMMU,
//! then the frame pool. The handoff sequences take the tracker, the SMMU and the frame pool
//! one at a time and never the virtual SMMU, so the order has no cycle.

use super::{HOST_VMID, Warden};
use crate::arch::select_nospec;
use crate::dt::SmmuIrqs;
use crate::handoff::HostMemory;
use crate::mm::MemRange;
use crate::smmu::S2Config;
use crate::smmu::virt::real::SmmuBackend;
use crate::smmu::virt::{GuestMemory, Notify, Refused, VirtSmmu, VirtStats};

/// The virtual SMMU the host sees at the real SMMU's address.
pub struct VirtSmmuState {
    /// Both 64 KiB register pages (absent from the host's stage 2: every access traps).
    pub frames: MemRange,
    /// The real SMMU's stage 2 for the host's streams: host VMID, the SMMU view's root (the
    /// host stage 2 plus the shadow-CD arena).
    pub s2: S2Config,
    pub irqs: SmmuIrqs,
    /// GIC distributor base (mapped as device at EL2), for raising the host's interrupts.
    pub gicd: Option<u64>,
    pub virt: spin::Mutex<VirtSmmu>,
}

/// Host RAM as the virtual SMMU may touch it: exactly what [`HostMemory::allows`] (rule 1 of
/// the design) allows: host-owned, no carveout, no `no-map` region, not warden's. That is also
/// exactly the RAM warden's EL2 stage-1 maps besides its own region, so an allowed access never
/// faults at EL2. After the check the address goes through [`select_nospec`]: a mispredicted
/// check cannot lead even a speculative access to the refused address.
struct TrackedHostMemory<'a> {
    host: &'a HostMemory<'a>,
}

impl TrackedHostMemory<'_> {
    /// `ipa` if all of `[ipa, ipa + len)` may be touched, under speculation too.
    fn checked(&self, ipa: u64, len: usize) -> Result<u64, Refused> {
        let range = MemRange::from_base_size(ipa, len as u64).ok_or(Refused)?;
        let allowed = self.host.allows(range);
        if !allowed {
            return Err(Refused);
        }
        Ok(select_nospec(allowed, ipa))
    }
}

impl GuestMemory for TrackedHostMemory<'_> {
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused> {
        let src = self.checked(ipa, buf.len())?;
        // SAFETY: the range is host memory warden may touch (rule 1), which warden's EL2
        // stage-1 maps identity RW; the tracker lock held by `host` keeps it the host's for this
        // copy. The host may change it concurrently: bytes, not references.
        unsafe {
            core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), Refused> {
        let dst = self.checked(ipa, data.len())?;
        // SAFETY: as in `read`; the host gave this memory to the SMMU (its event queue).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
        Ok(())
    }

    fn is_host_owned(&self, range: MemRange) -> bool {
        self.host.allows(range)
    }
}

/// One 64-bit word of host memory warden may touch (rule 1, [`HostMemory::allows`]), for
/// other host tables warden must read: the host's stage-1 descriptors (`trap::s1walk`). `None`
/// if the word is not such memory or not 8-byte aligned.
pub fn read_host_u64(w: &Warden, ipa: u64) -> Option<u64> {
    if !ipa.is_multiple_of(8) {
        return None;
    }
    let host = w.handoff.host_memory();
    let mem = TrackedHostMemory { host: &host };
    let mut word = [0u8; 8];
    mem.read(ipa, &mut word).ok()?;
    Some(u64::from_le_bytes(word))
}

/// Runs `f` on the virtual SMMU with host memory and the real SMMU, then raises what it asks.
fn with_virt<T>(
    w: &Warden,
    v: &VirtSmmuState,
    f: impl FnOnce(
        &mut VirtSmmu,
        &mut TrackedHostMemory<'_>,
        &mut SmmuBackend<'_, crate::smmu::MmioSmmu, crate::mm::PoolFrames>,
    ) -> (T, Notify),
) -> Option<T> {
    let mut virt = v.virt.lock();
    let host = w.handoff.host_memory();
    let mut mem = TrackedHostMemory { host: &host };
    let mut smmu = w.smmu.lock();
    let smmu = smmu.as_mut()?;
    let mut frames = w.frames.lock();
    let mut real = SmmuBackend { smmu, s2: v.s2, frames: &mut *frames };
    let (out, notify) = f(&mut virt, &mut mem, &mut real);
    raise(v, notify);
    Some(out)
}

pub fn read(w: &Warden, offset: u32, size: u8) -> u64 {
    let Some(v) = w.vsmmu.as_ref() else { return 0 };
    with_virt(w, v, |virt, mem, real| virt.mmio_read(offset, size, mem, real)).unwrap_or(0)
}

pub fn write(w: &Warden, offset: u32, size: u8, value: u64) {
    let Some(v) = w.vsmmu.as_ref() else { return };
    with_virt(w, v, |virt, mem, real| ((), virt.mmio_write(offset, size, value, mem, real)));
}

/// Copies real event records for host streams into the host's event queue.
pub fn forward_events(w: &Warden, records: &[[u64; 4]]) {
    let Some(v) = w.vsmmu.as_ref() else { return };
    if records.is_empty() {
        return;
    }
    let mut virt = v.virt.lock();
    let host = w.handoff.host_memory();
    let mut mem = TrackedHostMemory { host: &host };
    let mut notify = Notify::default();
    for record in records {
        let n = virt.forward_event(record, &mut mem);
        notify.evtq_irq |= n.evtq_irq;
        notify.gerror_irq |= n.gerror_irq;
    }
    drop(virt);
    raise(v, notify);
}

pub fn stats(w: &Warden) -> Option<VirtStats> {
    w.vsmmu.as_ref().map(|v| v.virt.lock().stats())
}

/// GICD_ISPENDR<n>: write-1-to-set pending, one bit per INTID (GICv2 and GICv3 alike).
const GICD_ISPENDR: u64 = 0x200;

fn raise(v: &VirtSmmuState, notify: Notify) {
    let Some(gicd) = v.gicd else { return };
    let wanted = [
        (notify.evtq_irq, v.irqs.eventq),
        (notify.gerror_irq, v.irqs.gerror),
        (notify.cmd_sync_irq, v.irqs.cmdq_sync),
    ];
    for (_, intid) in wanted.into_iter().filter(|(raise, _)| *raise) {
        let Some(intid) = intid.map(u64::from) else { continue };
        let reg = gicd + GICD_ISPENDR + 4 * (intid / 32);
        // SAFETY: the distributor's page is mapped as device memory at EL2
        // (build_el2_tables); ISPENDR is write-1-to-set, so other bits and the host's own
        // concurrent writes are unaffected.
        unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << (intid % 32)) };
    }
}

/// Why there is no virtual SMMU.
pub enum SetUpError {
    Unsupported(crate::smmu::virt::real::VirtUnsupported),
    View(crate::smmu::virt::real::ViewError),
}

impl core::fmt::Display for SetUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetUpError::Unsupported(e) => write!(f, "{e}"),
            SetUpError::View(e) => write!(f, "{e}"),
        }
    }
}

/// The virtual SMMU for the host's streams on this real SMMU, or why not: the SMMU's view of
/// the host stage 2 (`host`) with the shadow-CD arena, declared to the driver.
pub fn set_up(
    smmu: &mut crate::smmu::Smmu<crate::smmu::MmioSmmu>,
    info: &crate::dt::SmmuInfo,
    gicd: Option<MemRange>,
    host: &mut crate::mm::HostStage2,
    sids: &[u32],
    frames: &mut crate::mm::PoolFrames,
) -> Result<VirtSmmuState, SetUpError> {
    use crate::smmu::virt::real;
    let ipa_bits = host.config.ipa_bits();
    // Checked before anything is allocated or reserved.
    real::advertised_oas(smmu.features(), ipa_bits).map_err(SetUpError::Unsupported)?;
    let view = real::smmu_view(&mut host.table, sids.len(), frames, &crate::arch::aarch64::Hw)
        .map_err(SetUpError::View)?;
    smmu.set_cd_arena(view.arena.ipa, view.memory);
    let config = real::virt_config(smmu, ipa_bits, HOST_VMID, sids.to_vec(), view.arena)
        .map_err(SetUpError::Unsupported)?;
    log::info!(
        "SMMU view of the host stage 2: root {:#x}; {} shadow CD slots at IPA {:#x} (warden {}), read-only",
        view.root_pa,
        view.arena.slots,
        view.arena.ipa,
        view.memory
    );
    Ok(VirtSmmuState {
        frames: info.regs,
        s2: S2Config { vtcr: host.vtcr(), root_pa: view.root_pa, vmid: HOST_VMID },
        irqs: info.irqs,
        gicd: gicd.map(|g| g.start),
        virt: spin::Mutex::new(VirtSmmu::new(config)),
    })
}
