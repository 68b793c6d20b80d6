//! The virtual SMMU's hardware side: host memory checked against the ownership tracker, the
//! real SMMU through its driver, and the host's SMMU interrupts raised at the GIC distributor.
//!
//! Either face (the virtual SMMUv3 or the virtual MMU-500) drives either back end ([`BackEnd`]:
//! QEMU's SMMUv3 through warden's driver, or a Snapdragon board's apps MMU-500 through
//! [`crate::smmu::mmu500::Mmu500Backend`], `boot::mmu500`): the faces see one
//! [`NestedBackend`], [`RealSmmuOnDemand`], which takes the back end's lock when first used.
//!
//! Lock order on a trapped access: the virtual SMMU, then the tracker (held for the whole
//! access, so no range can change owner between the check and the copy), then the range kept
//! across traps (`VirtSmmuState::remembered`, SMMUv3 writes only), then the real SMMU, then the
//! frame pool. The handoff sequences take the tracker, the SMMU and the frame pool
//! one at a time and never the virtual SMMU, so the order has no cycle.

use super::{HOST_VMID, Warden};
use crate::arch::select_nospec;
use crate::dt::SmmuIrqs;
use crate::handoff::HostMemory;
use crate::mm::MemRange;
use crate::mm::host_memory::{AllowedRange, RememberedRange};
use crate::smmu::S2Config;
use crate::smmu::regs::{EVTQ_PROD, GERROR};
use crate::smmu::v2::{Mmu500Config, Mmu500Stats, StreamMatch, VirtMmu500};
use crate::smmu::virt::cd::CD_WORDS;
use crate::smmu::virt::cmdq::RealCommand;
use crate::smmu::virt::real::SmmuBackend;
use crate::smmu::virt::ste::RealSte;
use crate::smmu::virt::{
    BackendError, GuestMemory, NestedBackend, Notify, PendingWrite, Refused, VirtSmmu, VirtStats,
};
use crate::trap::{self, TrapFrame};
use alloc::vec::Vec;

/// The face the host drives: an SMMUv3 (the `virt` persona) or an MMU-500 (`snapdragon`).
/// (Both boxed: they differ much in size, and one lives for the whole run.)
pub enum Face {
    Smmuv3(alloc::boxed::Box<VirtSmmu>),
    Mmu500(alloc::boxed::Box<VirtMmu500>),
}

pub use crate::host_dt::Mmu500Irqs;

/// The real SMMU a face drives.
#[derive(Clone, Copy, Debug)]
pub enum BackEnd {
    /// The SMMUv3 (`Warden::smmu`) with its stage 2 for the host's streams: host VMID, the
    /// SMMU view's root (the host stage 2 plus the shadow-CD arena).
    Smmuv3 { s2: S2Config },
    /// The apps MMU-500 (`boot::mmu500`): its banks nest over warden's host stage 2 itself.
    Mmu500,
}

/// The virtual SMMU the host sees at the real SMMU's address.
pub struct VirtSmmuState {
    /// The register window (absent from the host's stage 2: every access traps).
    pub frames: MemRange,
    pub back_end: BackEnd,
    pub irqs: SmmuIrqs,
    /// GIC distributor base (mapped as device at EL2), for raising the host's interrupts.
    pub gicd: Option<u64>,
    /// The MMU-500 face's interrupts (`None` on the SMMUv3 face, which uses `irqs`).
    pub mmu500_irqs: Option<Mmu500Irqs>,
    pub face: spin::Mutex<Face>,
    /// The host memory range the SMMUv3 face's last back-end work found allowed (its command
    /// queue), kept across traps while the tracker's generation is unchanged (issue 16). Taken
    /// after the tracker's lock and released before it: the last lock of the module's order.
    remembered: spin::Mutex<RememberedRange>,
}

/// Host RAM as the virtual SMMU may touch it: exactly what [`HostMemory::allows`] (rule 1 of
/// the design) allows: host-owned, no carveout, no `no-map` region, not warden's. That is also
/// exactly the RAM warden's EL2 stage-1 maps besides its own region, so an allowed access never
/// faults at EL2. After the check the address goes through [`select_nospec`]: a mispredicted
/// check cannot lead even a speculative access to the refused address.
///
/// One per trap, built after `host` took the tracker lock and dropped before it is released, so
/// `allowed` ([`AllowedRange`]: the last range allowed, which saves the tracker walk for the
/// command queue's slots and MSI word once the queue was checked) never outlives the lock hold
/// whose answer it remembers; an SMMUv3 write's back end starts it from the last such write's
/// (`VirtSmmuState::remembered`) only while the tracker's generation is unchanged.
struct TrackedHostMemory<'a> {
    host: &'a HostMemory<'a>,
    allowed: core::cell::Cell<AllowedRange>,
}

impl<'a> TrackedHostMemory<'a> {
    fn new(host: &'a HostMemory<'a>) -> Self {
        Self::recalling(host, AllowedRange::default())
    }

    /// With `allowed` already known to hold under this hold of the lock (a
    /// [`RememberedRange`] recalled at the tracker's current generation).
    fn recalling(host: &'a HostMemory<'a>, allowed: AllowedRange) -> Self {
        Self { host, allowed: core::cell::Cell::new(allowed) }
    }

    fn allows(&self, range: MemRange) -> bool {
        let mut allowed = self.allowed.get();
        let answer = allowed.allows(range, |r| self.host.allows(r));
        self.allowed.set(allowed);
        answer
    }

    /// `ipa` if all of `[ipa, ipa + len)` may be touched, under speculation too.
    fn checked(&self, ipa: u64, len: usize) -> Result<u64, Refused> {
        let range = MemRange::from_base_size(ipa, len as u64).ok_or(Refused)?;
        let allowed = self.allows(range);
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
        self.allows(range)
    }

    /// A command slot as two aligned 64-bit loads (issue 16: the firmware target is
    /// strict-align, so the byte copy of [`GuestMemory::read`] is 16 byte loads and their
    /// shifts); an unaligned `ipa` (never a slot: the queue base is 32-byte aligned) copies
    /// bytes as `read` does.
    fn read_words(&self, ipa: u64) -> Result<[u64; 2], Refused> {
        let src = self.checked(ipa, 16)?;
        if !src.is_multiple_of(8) {
            let mut bytes = [0u8; 16];
            // SAFETY: as in `read`: host memory warden may touch, stable under the lock.
            unsafe { core::ptr::copy_nonoverlapping(src as *const u8, bytes.as_mut_ptr(), 16) };
            let (lo, hi) = bytes.split_at(8);
            return Ok([
                u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
                u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
            ]);
        }
        let src = src as *const u64;
        // SAFETY: as in `read`; `src` is 8-byte aligned, so both loads are aligned. Volatile:
        // each word is loaded exactly once (the host may rewrite the slot concurrently; what
        // was loaded is what is validated and executed).
        let words =
            unsafe { [core::ptr::read_volatile(src), core::ptr::read_volatile(src.add(1))] };
        Ok(words.map(u64::from_le))
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
    let mem = TrackedHostMemory::new(&host);
    let mut word = [0u8; 8];
    mem.read(ipa, &mut word).ok()?;
    Some(u64::from_le_bytes(word))
}

/// Runs `f` on the face with host memory and the real SMMU as its back end. The lock order of
/// the module documentation: the face, the tracker, the real SMMU (either back end), the frame
/// pool.
fn with_face<T>(
    w: &Warden,
    v: &VirtSmmuState,
    f: impl FnOnce(&mut Face, &mut TrackedHostMemory<'_>, &mut RealSmmuOnDemand<'_>) -> T,
) -> Option<T> {
    let mut face = v.face.lock();
    with_back_end(w, v, |mem, real| {
        crate::trap::profile::mark(crate::trap::profile::Phase::Locks);
        f(&mut face, mem, real)
    })
}

/// The locks after the face's, in the module's order, for `f`: the tracker now, the real SMMU
/// and the frame pool only when `f` first uses the real SMMU ([`RealSmmuOnDemand`]); `None`
/// without a real SMMU.
fn with_back_end<T>(
    w: &Warden,
    v: &VirtSmmuState,
    f: impl FnOnce(&mut TrackedHostMemory<'_>, &mut RealSmmuOnDemand<'_>) -> T,
) -> Option<T> {
    let host = w.handoff.host_memory();
    let mut mem = TrackedHostMemory::new(&host);
    let mut real = RealSmmuOnDemand { w, back_end: v.back_end, held: None };
    Some(f(&mut mem, &mut real))
}

/// The real SMMU as the faces' back end, its lock (and, for the SMMUv3, the frame pool's) taken
/// at the first command that needs them and held until the trap's back-end work is done
/// (issue 16: a `CMD_SYNC` with nothing issued since the last one, the commonest command, needs
/// neither). Taken after the tracker's, which [`with_back_end`] holds for longer, so the
/// module's lock order is kept. The virtual SMMU exists only with a real SMMU (`set_up` and
/// `boot::mmu500::take` make it after taking theirs, and nothing removes it), so "no real SMMU"
/// is an error of the command, never reached.
struct RealSmmuOnDemand<'a> {
    w: &'a Warden,
    back_end: BackEnd,
    held: Option<Held<'a>>,
}

/// The back end's locks, once taken.
enum Held<'a> {
    /// The SMMUv3's lock and the frame pool's, in that order.
    Smmuv3 {
        smmu: spin::MutexGuard<'a, Option<crate::smmu::Smmu<crate::smmu::MmioSmmu>>>,
        frames: spin::MutexGuard<'a, crate::mm::PoolFrames>,
        s2: S2Config,
    },
    Mmu500(super::mmu500::AppsSmmuGuard),
}

impl RealSmmuOnDemand<'_> {
    /// Whether a command of this trap reached the real SMMU (its lock was taken).
    fn used(&self) -> bool {
        self.held.is_some()
    }

    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut dyn NestedBackend) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let w = self.w;
        let back_end = self.back_end;
        let held = self.held.get_or_insert_with(|| match back_end {
            BackEnd::Smmuv3 { s2 } => {
                Held::Smmuv3 { smmu: w.smmu.lock(), frames: w.frames.lock(), s2 }
            }
            BackEnd::Mmu500 => Held::Mmu500(super::mmu500::lock()),
        });
        match held {
            Held::Smmuv3 { smmu, frames, s2 } => {
                let smmu = smmu.as_mut().ok_or(BackendError)?;
                f(&mut SmmuBackend { smmu, s2: *s2, frames: &mut **frames })
            }
            Held::Mmu500(apps) => f(apps.as_mut().ok_or(BackendError)?),
        }
    }
}

impl NestedBackend for RealSmmuOnDemand<'_> {
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), BackendError> {
        self.with(|real| real.install_ste(sid, ste))
    }

    fn write_cd(&mut self, ipa: u64, words: &[u64; CD_WORDS]) -> Result<(), BackendError> {
        self.with(|real| real.write_cd(ipa, words))
    }

    fn submit(&mut self, cmd: RealCommand) -> Result<(), BackendError> {
        self.with(|real| real.submit(cmd))
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        self.with(|real| real.sync())
    }
}

pub fn read(w: &Warden, offset: u32, size: u8) -> u64 {
    let Some(v) = w.vsmmu() else { return 0 };
    {
        // The SMMUv3 face answers most reads from its register file: only the face's lock.
        let mut face = v.face.lock();
        if let Face::Smmuv3(virt) = &mut *face
            && !virt.read_needs_backend(offset, size)
        {
            crate::trap::profile::mark(crate::trap::profile::Phase::Locks);
            return virt.read_register(offset, size);
        }
    }
    with_face(w, v, |face, mem, real| match face {
        Face::Smmuv3(virt) => {
            let (value, notify) = virt.mmio_read(offset, size, mem, real);
            raise(v, notify);
            value
        }
        Face::Mmu500(mmu) => mmu.mmio_read(offset, size, real),
    })
    .unwrap_or(0)
}

pub fn write(w: &Warden, offset: u32, size: u8, value: u64) {
    let Some(v) = w.vsmmu() else { return };
    let mut face = v.face.lock();
    if let Face::Smmuv3(virt) = &mut *face {
        // The register file first; the tracker, the real SMMU and the frame pool are locked
        // (after the face, in the module's order) only if the write left work for them.
        crate::trap::profile::mark(crate::trap::profile::Phase::Locks);
        let pending = virt.write_register(offset, size, value);
        if pending.is_empty() {
            return;
        }
        let done = smmuv3_back_end(w, v, virt, pending);
        drop(face);
        if let Some((notify, _)) = done {
            raise(v, notify);
        }
        return;
    }
    drop(face);
    with_face(w, v, |face, mem, real| match face {
        Face::Smmuv3(virt) => raise(v, virt.mmio_write(offset, size, value, mem, real)),
        Face::Mmu500(mmu) => raise_mmu500(v, mmu.mmio_write(offset, size, value, real)),
    });
}

/// The back-end half of an SMMUv3 register write that left work ([`PendingWrite`]): the
/// tracker, the real SMMU and the frame pool locked after the face (held by the caller, whose
/// `virt` it is), in the module's order, the last two only if a command needs them. The
/// interrupts to raise, and whether the real SMMU was used; `None` without a real SMMU.
fn smmuv3_back_end(
    w: &Warden,
    v: &VirtSmmuState,
    virt: &mut VirtSmmu,
    pending: PendingWrite,
) -> Option<(Notify, bool)> {
    // As `with_back_end`, with the range the last back-end work found allowed recalled while
    // the tracker is at the same generation: the command queue's check walks the tracker only
    // after an ownership change (issue 16).
    let host = w.handoff.host_memory();
    let generation = host.generation();
    let mut remembered = v.remembered.lock();
    let mut mem = TrackedHostMemory::recalling(&host, remembered.recall(generation));
    let mut real = RealSmmuOnDemand { w, back_end: v.back_end, held: None };
    let notify = virt.finish_write(pending, &mut mem, &mut real);
    remembered.remember(generation, mem.allowed.get());
    Some((notify, real.used()))
}

/// Reads the fast path leaves to the full one although the register file could answer them:
/// the registers through which the host learns of real SMMU events (its event queue's producer
/// and GERROR), because the full path drains the real event queue after every trap and the
/// fast path does not (see [`fast_access`]).
fn read_needs_drain(offset: u32) -> bool {
    offset == EVTQ_PROD || offset == GERROR
}

/// The virtual SMMU's fast path (issue 16), run by `lower_sync` before the full handler: a
/// plain 32- or 64-bit load or store by the host to the SMMUv3 face's register pages, emulated
/// with the face's lock alone when the register file answers it. Returns `false`, having
/// changed nothing, for everything else, which the full path then handles as before:
///
/// - an abort whose HPFAR page is not in the register pages (one range check, first), or whose
///   syndrome [`trap::fast::fast_mmio`] does not decode (ISV = 0, 8- or 16-bit, sign
///   extension, AArch32, cache maintenance, a fault other than stage-2 translation);
/// - any access on the simulated peer's CPU (a peer's access there is a violation, which the
///   full path's caller check finds), the MMU-500 face, a `CMDQ_CONS` read with commands left
///   to consume, and the reads of [`read_needs_drain`].
///
/// A write that leaves back-end work (a `CMDQ_PROD` write, SMMUEN or GBPA.ABORT flipped, a
/// command error acknowledged) is finished here as on the full path, and if that work reached
/// the real SMMU, its event queue is then drained as after every full-path trap: only such
/// work can have made the real SMMU report anything. An access answered from the register file,
/// or a write whose commands needed nothing of the real SMMU (a `CMD_SYNC` with nothing issued
/// since the last), does not drain; the next trap that touches the real SMMU (or any full-path
/// trap) does.
///
/// The window holds only the real SMMU's MMIO registers (the DT's `reg`), never RAM: no
/// ownership state can make it donated or warden's, so the range check is the whole of the
/// full path's window check apart from the caller, checked above.
pub fn fast_access(w: &Warden, frame: &mut TrapFrame) -> bool {
    use crate::trap::profile::{self, Phase};
    let Some(v) = w.vsmmu() else { return false };
    let page = trap::fast::hpfar_page(frame.hpfar);
    if page < v.frames.start || page >= v.frames.end {
        return false;
    }
    profile::mark(Phase::Window);
    let Some(access) = trap::fast::fast_mmio(frame) else { return false };
    profile::mark(Phase::Syndrome);
    if w.sim_peer().is_some_and(|s| s.cpu_index == super::cpu_index()) {
        return false;
    }
    let Ok(offset) = u32::try_from(access.ipa - v.frames.start) else { return false };
    profile::kind(profile::vsmmu_kind(offset, access.write));
    profile::mark(Phase::Decode);
    let mut face = v.face.lock();
    let Face::Smmuv3(virt) = &mut *face else { return false };
    profile::mark(Phase::Locks);
    if !access.write {
        if read_needs_drain(offset) || virt.read_needs_backend(offset, access.size) {
            return false;
        }
        let value = virt.read_register(offset, access.size);
        drop(face);
        profile::mark(Phase::Work);
        trap::mmio::complete(frame, &access, value);
        profile::mark(Phase::Complete);
        return true;
    }
    let pending = virt.write_register(offset, access.size, access.value);
    if pending.is_empty() {
        drop(face);
        profile::mark(Phase::Work);
        trap::mmio::complete(frame, &access, 0);
        profile::mark(Phase::Complete);
        return true;
    }
    let done = smmuv3_back_end(w, v, virt, pending);
    drop(face);
    let used_real_smmu = done.is_some_and(|(_, used)| used);
    if let Some((notify, _)) = done {
        raise(v, notify);
    }
    profile::mark(Phase::Work);
    trap::mmio::complete(frame, &access, 0);
    profile::mark(Phase::Complete);
    if used_real_smmu {
        super::drain_smmu_events(w);
        profile::mark(Phase::Drain);
    }
    true
}

/// Copies real event records for host streams into the host's event queue (SMMUv3 face), or
/// reports them in the context banks' and global fault registers (MMU-500 face).
pub fn forward_events(w: &Warden, records: &[[u64; 4]]) {
    let Some(v) = w.vsmmu() else { return };
    if records.is_empty() {
        return;
    }
    let mut face = v.face.lock();
    match &mut *face {
        Face::Smmuv3(virt) => {
            let host = w.handoff.host_memory();
            let mut mem = TrackedHostMemory::new(&host);
            let mut notify = Notify::default();
            for record in records {
                let n = virt.forward_event(record, &mut mem);
                notify.evtq_irq |= n.evtq_irq;
                notify.gerror_irq |= n.gerror_irq;
            }
            drop(face);
            raise(v, notify);
        }
        Face::Mmu500(mmu) => {
            let mut notify = crate::smmu::v2::Notify::default();
            for record in records {
                let n = mmu.forward_event(&crate::smmu::Event::decode(*record));
                notify.global_irq |= n.global_irq;
                notify.context_irqs |= n.context_irqs;
            }
            drop(face);
            raise_mmu500(v, notify);
        }
    }
}

/// The counters of whichever face the host has.
pub enum FaceStats {
    Smmuv3(VirtStats),
    Mmu500(Mmu500Stats),
}

pub fn stats(w: &Warden) -> Option<FaceStats> {
    w.vsmmu().map(|v| match &*v.face.lock() {
        Face::Smmuv3(virt) => FaceStats::Smmuv3(virt.stats()),
        Face::Mmu500(mmu) => FaceStats::Mmu500(mmu.stats()),
    })
}

/// GICD_ISPENDR<n>: write-1-to-set pending, one bit per INTID (GICv2 and GICv3 alike).
const GICD_ISPENDR: u64 = 0x200;

/// Makes `intid` pending at the distributor.
fn set_pending(gicd: u64, intid: u16) {
    let intid = u64::from(intid);
    let reg = gicd + GICD_ISPENDR + 4 * (intid / 32);
    // SAFETY: the distributor's page is mapped as device memory at EL2 (build_el2_tables);
    // ISPENDR is write-1-to-set, so other bits and the host's own concurrent writes are
    // unaffected.
    unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << (intid % 32)) };
}

fn raise_mmu500(v: &VirtSmmuState, notify: crate::smmu::v2::Notify) {
    let (Some(gicd), Some(irqs)) = (v.gicd, v.mmu500_irqs) else { return };
    if notify.global_irq {
        set_pending(gicd, irqs.global);
    }
    for (n, intid) in irqs.contexts.iter().enumerate() {
        if notify.context_irqs & (1 << n) != 0 {
            set_pending(gicd, *intid);
        }
    }
}

fn raise(v: &VirtSmmuState, notify: Notify) {
    let Some(gicd) = v.gicd else { return };
    let wanted = [
        (notify.evtq_irq, v.irqs.eventq),
        (notify.gerror_irq, v.irqs.gerror),
        (notify.cmd_sync_irq, v.irqs.cmdq_sync),
    ];
    for (_, intid) in wanted.into_iter().filter(|(raise, _)| *raise) {
        if let Some(intid) = intid {
            set_pending(gicd, intid);
        }
    }
}

/// The virtual MMU-500 over a board's apps MMU-500 (taken by `boot::mmu500::take`, whose
/// lock [`RealSmmuOnDemand`] takes): at the DT's window (`regs`), raising the DT's interrupts.
pub fn on_mmu500(
    regs: MemRange,
    gicd: Option<MemRange>,
    irqs: Option<Mmu500Irqs>,
    config: Mmu500Config,
) -> VirtSmmuState {
    VirtSmmuState {
        frames: regs,
        back_end: BackEnd::Mmu500,
        irqs: SmmuIrqs::default(),
        gicd: gicd.map(|g| g.start),
        mmu500_irqs: irqs,
        face: spin::Mutex::new(Face::Mmu500(alloc::boxed::Box::new(VirtMmu500::new(config)))),
        remembered: spin::Mutex::new(RememberedRange::default()),
    }
}

/// Why there is no virtual SMMU.
pub enum SetUpError {
    Unsupported(crate::smmu::virt::real::VirtUnsupported),
    View(crate::smmu::virt::real::ViewError),
    /// The real SMMU's register window is smaller than the MMU-500's.
    Window(MemRange),
}

impl core::fmt::Display for SetUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetUpError::Unsupported(e) => write!(f, "{e}"),
            SetUpError::View(e) => write!(f, "{e}"),
            SetUpError::Window(r) => write!(
                f,
                "the SMMU window {r} is smaller than the MMU-500's {:#x} bytes",
                crate::smmu::v2::regs::WINDOW
            ),
        }
    }
}

/// The virtual SMMU for the host's streams on this real SMMUv3, or why not: the SMMU's view of
/// the host stage 2 (`host`) with the shadow-CD arena, declared to the driver; with the stage 2
/// the host's streams get on the SMMUv3.
pub fn set_up(
    smmu: &mut crate::smmu::Smmu<crate::smmu::MmioSmmu>,
    info: &crate::dt::SmmuInfo,
    gicd: Option<MemRange>,
    host: &mut crate::mm::HostStage2,
    sids: &[u32],
    frames: &mut crate::mm::PoolFrames,
    persona: crate::persona::Persona,
) -> Result<(VirtSmmuState, S2Config), SetUpError> {
    use crate::smmu::virt::real;
    if persona == crate::persona::Persona::Snapdragon
        && info.regs.size() < u64::from(crate::smmu::v2::regs::WINDOW)
    {
        return Err(SetUpError::Window(info.regs));
    }
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
    let mmu500 = persona == crate::persona::Persona::Snapdragon;
    let face = if mmu500 {
        Face::Mmu500(alloc::boxed::Box::new(VirtMmu500::new(Mmu500Config {
            host_vmid: config.host_vmid,
            host_streams: config.host_sids.iter().map(|&s| StreamMatch::exact(s)).collect(),
            peer_streams: Vec::new(),
            initial: RealSte::Abort,
            arena: config.arena,
            oas_field: config.advertised.oas_field,
            asid16: config.advertised.asid16,
            g3_enabled: config.g3_enabled,
        })))
    } else {
        Face::Smmuv3(alloc::boxed::Box::new(VirtSmmu::new(config)))
    };
    let s2 = S2Config { vtcr: host.vtcr(), root_pa: view.root_pa, vmid: HOST_VMID };
    let state = VirtSmmuState {
        frames: info.regs,
        back_end: BackEnd::Smmuv3 { s2 },
        irqs: info.irqs,
        gicd: gicd.map(|g| g.start),
        mmu500_irqs: mmu500.then(Mmu500Irqs::qemu_virt),
        face: spin::Mutex::new(face),
        remembered: spin::Mutex::new(RememberedRange::default()),
    };
    Ok((state, s2))
}
