//! Carveout handoff between the host and a peer processor: DONATE, LEND, peer RELEASE and
//! RECLAIM, written once over narrow traits so a recording fake can check the order.
//!
//! The host's stage-2 has every carveout's edges made entry boundaries at boot (the 2 MiB /
//! 1 GiB blocks straddling an edge split, as far as needed; blocks wholly inside a carveout
//! stay blocks), so no entry maps both carveout and other memory, and a host CPU or device
//! using its own pages next to a carveout never faults while the carveout changes hands.
//! Every map here ([`PageTable::map`]) writes the largest blocks that fit inside the range, so
//! a transfer of whole blocks changes one entry per block (unmap: break, `TLBI IPAS2E1IS` by
//! IPA, completion); a transfer of part of a block splits it on demand, with frames taken up
//! front ([`reserve`]). Such a split breaks only an entry inside the carveout: a host access
//! to the carveout's other pages in that moment faults and is retried once the new table is
//! in (`crate::trap`, retry), and a host device's is a stage-2 fault like any DMA into a
//! carveout. Giving a block back merges it again (a whole block mapped back is one entry).
//!
//! warden's own EL2 stage-1 never maps a carveout, except for the moment of warden's own
//! clean/zero step: the *window* ([`HandoffCtx::el2`]): map the range Normal Non-cacheable,
//! `DC CIVAC` over it (cache maintenance by VA needs a mapping), zero it when asked, unmap it
//! (break-before-make, `TLBI VAE2IS` per removed entry, `DSB ISH; ISB`). In between, the
//! range is in flight: nobody else has it mapped.
//!
//! # Donate / lend (host → peer)
//! 1. Tracker: every page `Host` → `HandingOff` (refused otherwise; nothing changes).
//! 2. Host CPU stage-2: unmap its leaves (a last-level table's pages cleared, `DSB ISHST`,
//!    `TLBI IPAS2E1IS` per cleared page; `DSB ISH; TLBI VMALLE1IS; DSB ISH; ISB`; above 512
//!    pages one `TLBI VMALLS12E1IS` instead), the host's VMID being current.
//! 3. SMMU: host devices walk the host's stage-2 tables themselves, so step 2 removed their
//!    mappings too; their TLBs are invalidated for the range and VMID ([`DmaStage2`]) and the
//!    CMD_SYNC must complete. Table frames step 2 freed are reused only after that
//!    ([`reserve::FrameReserve::shared_with_dma`]).
//!    With a firmware to tell ([`Firmware`]: assign_mem on a board whose TrustZone implements
//!    SCM), it is told here, when the host can reach nothing of the range; a refusal restores
//!    the host's mapping and the tracker says `Host` again.
//! 4. Window: map; `DC CIVAC` over every line, `DSB SY`: no dirty line of the host's can later
//!    be written back over the peer's data, and no clean line can hit instead of the peer's
//!    writes (the seed: a non-coherent modem's XPU faults on such lines). Then, with CLEAR,
//!    zero the range through the window, which is Normal Non-cacheable: the zeros go straight
//!    to memory and no line is allocated, so nothing needs cleaning afterwards (and zeroing
//!    *before* the clean would not do: a dirty host line could land on top). Unmap the window.
//! 5. Peer stage-2: map the range (identity, `peer_attrs`, blocks where whole) with the peer's VMID
//!    current, then the host's again.
//! 6. Tracker: `HandingOff` → `Donated`/`Lent { released: false }`. The integrator tells the
//!    peer only after this returns.
//!
//! # Release (by the peer)
//! Refused unless the range is entirely donated or lent to that peer and not yet released.
//! Then: peer stage-2 unmap with TLBIs under the peer's VMID (afterwards nobody can access the
//! range: `PeerReleased`; the peer's stage-2 stays current, it is the peer's call); with CLEAR
//! the window scrubs it
//! (`DC CIVAC` first, so a line the peer dirtied cannot land on the zeros; the peer can no
//! longer refetch one); tracker → `released`.
//!
//! # Reclaim (host)
//! Refused unless the range is entirely donated or lent to that peer *and* the peer released
//! it (so the peer's stage-2 maps none of it). Then: tracker → `Reclaiming`; with CLEAR the
//! window scrubs it (the zeros are in memory before anyone with any memory attributes reads
//! them); map into the host's stage-2; tracker → `Host`.
//!
//! No SMMU invalidation is needed when the host *gains* access: TLBs (CPU and SMMU) never hold
//! invalid (faulting) entries, and `map` ends with `DSB ISHST` so the table walkers, the SMMU's
//! included (it walks the same tables, coherently on the supported boards), see the new
//! entries. Except when the map merges: a table it replaces by a block is freed, and its frame
//! is reused only after the SMMU's invalidation of the range has completed (its walk caches
//! may still point at it). Peers have no SMMU stage-2 here, so release and reclaim issue no SMMU command.
//!
//! # Errors
//! Every request is validated first (alignment, overflow, carveout, peer, tracker state); a
//! refused request changes nothing. The page-table frames a transfer can need are reserved up
//! front ([`reserve`]), so the table steps cannot run out of frames. If a step still fails the
//! sequence is rolled back to the previous owner: the tracker and the tables are as before.
//!
//! A failed SMMU invalidation during donate/lend means warden cannot prove that no host device
//! still holds a translation for the range, so the range must not reach the peer: the host's
//! mapping is restored (restoring access the host already had needs no invalidation), the
//! tracker says `Host` again and the call returns [`HandoffError::DmaSync`]. Table frames
//! freed before it are never reused (counted in [`HandoffState::quarantined_frames`]).
//!
//! # Concurrency
//! Each carveout has its own lock, held for the whole transfer: the same carveout is
//! serialized, different carveouts proceed in parallel. The tracker has its own short lock
//! (check-and-mark at the start, commit at the end; never held across hardware operations).
//! Each table (every stage-2, and warden's EL2 stage-1 for the window) has its own lock, held
//! only while it is edited; the frame allocator's lock (and the spare frames' lock, see
//! [`SPARE_FRAMES`]) only while the reserve is taken and returned. Lock order: carveout →
//! tracker, or carveout → one table, or carveout → spare frames → frames; never two tables at
//! once. TLB maintenance is broadcast (IS), so the CPU running the transfer covers every CPU.

pub mod assign;
pub mod reserve;
pub mod service;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

use crate::arch::{CacheMaintenance, CacheOp, TlbMaintenance, dcache_range};
use crate::mm::ownership::{OwnershipError, OwnershipTracker, PageState, PeerId, TransferKind};
use crate::mm::{
    Attrs, El2Stage1, FrameAllocator, MapError, MemRange, PAGE_SIZE, PageTable, Perms, Stage2,
};
use crate::smmu::SmmuError;
use reserve::FrameReserve;

/// The CPU-side hardware effects of a transfer, on the CPU running it.
pub trait HandoffCpu: TlbMaintenance + CacheMaintenance {
    /// Makes the stage-2 of `vmid` (root at `root_pa`) current on this CPU, so that stage-2
    /// TLB maintenance applies to it: on hardware `VTTBR_EL2 = vttbr(root_pa, vmid); ISB`.
    fn load_stage2(&self, vmid: u16, root_pa: u64);
    /// Writes zeros over `range` through warden's own Normal Non-cacheable mapping of it (the
    /// window, open while this runs) and waits for them to complete (`DSB SY`): afterwards
    /// they are in memory and no cache holds a line of `range` that warden put there. The
    /// caller has already cleaned+invalidated the range, so no older dirty line can be written
    /// back over the zeros.
    fn zero(&self, range: MemRange);
    /// A transfer starts on this CPU (for [`Self::phase_end`]'s accounting).
    fn phase_start(&self) {}
    /// `phase` of the transfer running on this CPU has just ended: profiling hook (the cost of
    /// each step, see `cargo xtask bench`); nothing else may depend on it.
    fn phase_end(&self, phase: Phase) {
        let _ = phase;
    }
}

/// The steps of a transfer, for [`HandoffCpu::phase_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Checks and the tracker's check-and-mark.
    Validate,
    /// Page-table frames reserved (and returned at the end).
    Reserve,
    HostUnmap,
    /// SMMU TLB invalidation and CMD_SYNC.
    DmaSync,
    /// The window opened: the range mapped in warden's EL2 stage-1.
    El2Map,
    /// `DC CIVAC` over the range.
    CacheClean,
    Zero,
    /// The window closed: unmapped, `TLBI VAE2IS`, `DSB ISH; ISB`.
    El2Unmap,
    PeerMap,
    PeerUnmap,
    HostMap,
    /// The tracker's final transition.
    Commit,
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::Validate,
        Phase::Reserve,
        Phase::HostUnmap,
        Phase::DmaSync,
        Phase::El2Map,
        Phase::CacheClean,
        Phase::Zero,
        Phase::El2Unmap,
        Phase::PeerMap,
        Phase::PeerUnmap,
        Phase::HostMap,
        Phase::Commit,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Reserve => "reserve",
            Phase::HostUnmap => "host-unmap",
            Phase::DmaSync => "smmu-sync",
            Phase::El2Map => "el2-map",
            Phase::CacheClean => "dc-civac",
            Phase::Zero => "zero",
            Phase::El2Unmap => "el2-unmap",
            Phase::PeerMap => "peer-map",
            Phase::PeerUnmap => "peer-unmap",
            Phase::HostMap => "host-map",
            Phase::Commit => "commit",
        }
    }
}

/// How warden's EL2 stage-1 maps a carveout during its own clean/zero step: Normal
/// Non-cacheable (its zeros go straight to memory and it never allocates a line of the
/// carveout; cache maintenance by VA works whatever the attributes), read-write, never
/// executable.
pub const EL2_WINDOW_ATTRS: Attrs = Attrs::normal_non_cacheable(Perms::RW);

/// Stage-2 TLB invalidation in the SMMU(s) translating host devices.
pub trait DmaStage2 {
    /// Invalidates every SMMU TLB entry for `range` of `vmid`'s IPA space and waits for the
    /// invalidation to complete (CMD_SYNC). An error means completion is not known.
    fn invalidate_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError>;
}

/// warden's SMMU: host devices use stage-2-only STEs walking the host's own stage-2 tables, so
/// this is exactly the invalidation a host stage-2 unmap needs.
impl<M: crate::smmu::io::SmmuIo> DmaStage2 for crate::smmu::Smmu<M> {
    fn invalidate_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError> {
        self.invalidate_s2_ipa_range(vmid, range)
    }
}

/// No SMMU: no device DMA is translated by warden at all (boot says so), so there is nothing
/// to invalidate.
impl<T: DmaStage2> DmaStage2 for Option<T> {
    fn invalidate_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError> {
        match self {
            Some(smmu) => smmu.invalidate_ipa_range(vmid, range),
            None => Ok(()),
        }
    }
}

/// An SMMU a board's image has no back end for (`Option<Infallible>`, always `None`: see the
/// `Option` implementation): the boot uses it on such a board, so that the back end's code is
/// not in that image (`crate::boards::HAS_SMMUV3`).
impl DmaStage2 for core::convert::Infallible {
    fn invalidate_ipa_range(&mut self, _vmid: u16, _range: MemRange) -> Result<(), SmmuError> {
        match *self {}
    }
}

/// A carveout: a physical range reserved for one peer (from `/reserved-memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carveout {
    pub range: MemRange,
    pub peer: PeerId,
}

/// Request flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferFlags {
    /// Zero the range before the receiver (peer on donate/lend, host on reclaim) sees it.
    pub clear: bool,
}

/// Why a request was refused or failed. Every error leaves ownership and tables as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffError {
    /// Size 0.
    ZeroSize,
    /// Base or size not a multiple of 4 KiB.
    Unaligned,
    /// `base + size` wraps the address space.
    Overflow,
    /// Not entirely inside one carveout (touches warden's or other memory, or straddles a
    /// carveout's edge).
    NotInCarveout,
    /// No such peer.
    UnknownPeer,
    /// The carveout is reserved for a different peer.
    WrongPeer,
    /// Some page is not the host's to give (already donated or lent, or in flight).
    NotHostOwned,
    /// Some page is not donated or lent to that peer.
    NotHeldByPeer,
    /// The peer has not released the range yet.
    PeerStillHolds,
    /// Not enough free page-table frames to reserve for the transfer.
    OutOfFrames,
    /// A stage-2 table operation failed (rolled back).
    Stage2(MapError),
    /// The SMMU invalidation did not complete (rolled back: the host keeps the range).
    DmaSync(SmmuError),
    /// The tracker disagreed with itself mid-transfer (a bug; the transfer was rolled back
    /// where possible).
    Internal(OwnershipError),
    /// The firmware below refused its part ([`Firmware::agree`]: its status); rolled back.
    FirmwareRefused(i64),
}

/// The firmware below's part in a transfer it must agree to: on a board whose TrustZone
/// implements Qualcomm's SCM, `assign_mem` reaches it (`crate::trap::scm`), so that its XPUs
/// follow warden's stage 2. [`Firmware::agree`] is called once per sequence, at the step where
/// the firmware's view must change (each sequence says where); a refusal (its status) rolls
/// the sequence back to where it started. [`Firmware::undo`] is called when one of warden's
/// own steps after an accepted `agree` fails and the sequence is rolled back.
pub trait Firmware {
    fn agree(&mut self) -> Result<(), i64>;
    fn undo(&mut self);
    /// Test builds only (`fault-injection-skip-assign-unmap`): whether this is a firmware that
    /// is told, so the injected fault hits assign_mem's forwarded path alone.
    fn is_told(&self) -> bool {
        true
    }
}

/// No firmware to tell: warden's own ABI, PAS, and boards without SCM firmware.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFirmware;

impl Firmware for NoFirmware {
    fn agree(&mut self) -> Result<(), i64> {
        Ok(())
    }
    fn undo(&mut self) {}
    fn is_told(&self) -> bool {
        false
    }
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::ZeroSize => write!(f, "size is zero"),
            HandoffError::Unaligned => write!(f, "base or size not page aligned"),
            HandoffError::Overflow => write!(f, "range wraps the address space"),
            HandoffError::NotInCarveout => write!(f, "range is not inside one carveout"),
            HandoffError::UnknownPeer => write!(f, "unknown peer"),
            HandoffError::WrongPeer => write!(f, "carveout belongs to another peer"),
            HandoffError::NotHostOwned => write!(f, "range is not entirely the host's"),
            HandoffError::NotHeldByPeer => write!(f, "range is not held by that peer"),
            HandoffError::PeerStillHolds => write!(f, "peer has not released the range"),
            HandoffError::OutOfFrames => write!(f, "no page-table frames to reserve"),
            HandoffError::Stage2(e) => write!(f, "stage-2: {e}"),
            HandoffError::DmaSync(e) => write!(f, "SMMU invalidation failed: {e}"),
            HandoffError::Internal(e) => write!(f, "ownership tracker inconsistent: {e}"),
            HandoffError::FirmwareRefused(s) => write!(f, "the firmware below refused ({s})"),
        }
    }
}

/// Why the carveout list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarveoutError {
    /// Empty or not page aligned.
    BadRange(MemRange),
    /// Two carveouts overlap.
    Overlap(MemRange, MemRange),
    /// Not entirely tracked memory in one state.
    NotTracked(MemRange),
}

struct CarveoutSlot {
    carveout: Carveout,
    /// Serializes transfers within this carveout.
    busy: Mutex<()>,
}

/// Frames kept between transfers (see [`FrameReserve::release_keeping`]), per board
/// (`crate::mm::link_layout`, `spare_frames`): a few transfers' worth of the reserve one takes
/// ([`reserve::transfer_bound`]: about 20 frames whatever its size) on the QEMU boards, one on
/// DB410c; the run-time reserve counts them (`crate::mm::footprint::runtime_frame_reserve`).
pub const SPARE_FRAMES: usize = crate::mm::LAYOUT.spare_frames;

/// Shared ownership state: the tracker and the carveouts with their locks.
pub struct HandoffState {
    tracker: Mutex<OwnershipTracker>,
    carveouts: Vec<CarveoutSlot>,
    /// Never host memory warden may touch: the carveouts, then whatever
    /// [`Self::exclude_from_host_memory`] added (`no-map` reserved regions).
    excluded: Vec<MemRange>,
    /// Page-table frames kept for the next transfers' reserves.
    spare_frames: Mutex<Vec<u64>>,
    /// How many [`Self::spare_frames`] keeps at most ([`SPARE_FRAMES`]).
    spare_cap: usize,
    /// Table frames freed from the host's stage-2 by transfers whose SMMU sync failed: never
    /// reused (a device may still walk them).
    quarantined_frames: AtomicUsize,
}

impl HandoffState {
    /// Takes the tracker (describing all memory) and the carveouts (page aligned, disjoint,
    /// each tracked in a single state).
    pub fn new(tracker: OwnershipTracker, carveouts: &[Carveout]) -> Result<Self, CarveoutError> {
        let mut sorted: Vec<Carveout> = carveouts.to_vec();
        sorted.sort_by_key(|c| c.range.start);
        for c in &sorted {
            if c.range.is_empty() || !c.range.is_page_aligned() {
                return Err(CarveoutError::BadRange(c.range));
            }
            if tracker.state_of(c.range).is_err() {
                return Err(CarveoutError::NotTracked(c.range));
            }
        }
        for pair in sorted.windows(2) {
            if pair[0].range.overlaps(&pair[1].range) {
                return Err(CarveoutError::Overlap(pair[0].range, pair[1].range));
            }
        }
        let excluded = sorted.iter().map(|c| c.range).collect();
        let carveouts = sorted
            .into_iter()
            .map(|carveout| CarveoutSlot { carveout, busy: Mutex::new(()) })
            .collect();
        Ok(Self {
            tracker: Mutex::new(tracker),
            carveouts,
            excluded,
            spare_frames: Mutex::new(Vec::new()),
            spare_cap: SPARE_FRAMES,
            quarantined_frames: AtomicUsize::new(0),
        })
    }

    /// Keeps at most `cap` spare frames between transfers instead of [`SPARE_FRAMES`] (another
    /// board's layout, in tests).
    pub fn set_spare_frames(&mut self, cap: usize) {
        self.spare_cap = cap;
    }

    /// Adds ranges (the `no-map` reserved regions, any other carveout the DT names) that are
    /// never host memory warden may touch, whatever the tracker says.
    pub fn exclude_from_host_memory(&mut self, ranges: &[MemRange]) {
        self.excluded.extend(ranges.iter().filter(|r| !r.is_empty()));
        // What host memory means changed: forget every remembered answer.
        self.tracker.get_mut().bump_generation();
    }

    /// Whether `range` lies inside one excluded region that is no carveout (a `no-map`
    /// reserved region: firmware's own memory, never host memory warden touches, never handed
    /// over).
    pub fn in_no_map_region(&self, range: MemRange) -> bool {
        let carveout = |r: &MemRange| self.carveouts.iter().any(|c| c.carveout.range.overlaps(r));
        !range.is_empty()
            && !carveout(&range)
            && self.excluded.iter().any(|x| x.contains_range(&range) && !carveout(x))
    }

    /// The tracker, locked (for queries and for deriving tables).
    pub fn tracker(&self) -> spin::MutexGuard<'_, OwnershipTracker> {
        self.tracker.lock()
    }

    /// The host memory warden may touch, with the tracker locked for as long as the returned
    /// view lives: check a range with [`HostMemory::allows`], then access it while still
    /// holding the view, so no page of it can change owner in between.
    pub fn host_memory(&self) -> HostMemory<'_> {
        HostMemory { tracker: self.tracker.lock(), excluded: &self.excluded }
    }

    /// Table frames never reused because the SMMU sync that had to precede their reuse failed.
    pub fn quarantined_frames(&self) -> usize {
        self.quarantined_frames.load(Ordering::Relaxed)
    }

    /// The carveouts, sorted by address.
    pub fn carveouts(&self) -> impl Iterator<Item = Carveout> + '_ {
        self.carveouts.iter().map(|s| s.carveout)
    }

    fn slot_for(&self, range: MemRange) -> Result<&CarveoutSlot, HandoffError> {
        self.carveouts
            .iter()
            .find(|s| s.carveout.range.contains_range(&range))
            .ok_or(HandoffError::NotInCarveout)
    }

    fn transition(
        &self,
        range: MemRange,
        from: PageState,
        to: PageState,
    ) -> Result<(), OwnershipError> {
        self.tracker.lock().transition(range, from, to)
    }
}

/// The one predicate for "host memory warden may touch" (`mm::host_memory`), over a locked
/// tracker: see [`HandoffState::host_memory`].
pub struct HostMemory<'a> {
    tracker: spin::MutexGuard<'a, OwnershipTracker>,
    excluded: &'a [MemRange],
}

impl HostMemory<'_> {
    /// Whether warden may read or write `range` as the host's memory (or let a device it does
    /// not confine use it): host-owned, no carveout, no `no-map` region, not warden's.
    pub fn allows(&self, range: MemRange) -> bool {
        crate::mm::host_memory::warden_may_touch(&self.tracker, self.excluded, range)
    }

    /// The locked tracker.
    pub fn tracker(&self) -> &OwnershipTracker {
        &self.tracker
    }

    /// The tracker's generation ([`OwnershipTracker::generation`]), stable while this view
    /// lives: what a [`crate::mm::host_memory::RememberedRange`] is keyed by.
    pub fn generation(&self) -> u64 {
        self.tracker.generation()
    }
}

/// A stage-2 translation warden edits: its table and the VMID it runs under.
pub struct Stage2Ref<'a> {
    pub vmid: u16,
    pub table: &'a Mutex<PageTable<Stage2>>,
    /// What a page handed to this agent is mapped with.
    pub attrs: Attrs,
}

/// A peer and its stage-2.
pub struct PeerRef<'a> {
    pub id: PeerId,
    pub stage2: Stage2Ref<'a>,
}

/// Everything a transfer touches. `cpu` is the CPU running it; the rest is shared.
pub struct HandoffCtx<'a, H: ?Sized, D: ?Sized, A: ?Sized> {
    pub cpu: &'a H,
    pub smmu: &'a Mutex<D>,
    pub frames: &'a Mutex<A>,
    pub host: Stage2Ref<'a>,
    pub peers: &'a [PeerRef<'a>],
    pub state: &'a HandoffState,
    /// warden's own EL2 stage-1 (the one in TTBR0_EL2 on every CPU), where the window is
    /// opened ([`EL2_WINDOW_ATTRS`]).
    pub el2: &'a Mutex<PageTable<El2Stage1>>,
}

/// `[base, base + size)` if it is a valid request range.
pub fn request_range(base: u64, size: u64) -> Result<MemRange, HandoffError> {
    if size == 0 {
        return Err(HandoffError::ZeroSize);
    }
    if !base.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return Err(HandoffError::Unaligned);
    }
    MemRange::from_base_size(base, size).ok_or(HandoffError::Overflow)
}

/// Gives `[base, base + size)` of a carveout to `peer`: the peer owns it afterwards.
pub fn donate<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    flags: TransferFlags,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    transfer(ctx, base, size, peer, TransferKind::Donate, flags, &mut NoFirmware)
}

/// Lends `[base, base + size)` of a carveout to `peer`: the host stays the owner but only the
/// peer can access it until it is released and reclaimed.
pub fn lend<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    flags: TransferFlags,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    transfer(ctx, base, size, peer, TransferKind::Lend, flags, &mut NoFirmware)
}

/// The peer's side: it is done with `[base, base + size)` (donated or lent to it), so the host
/// may reclaim it. The peer's stage-2 loses the range first (with TLBIs under its VMID); with
/// CLEAR the range is then scrubbed on the peer's behalf, through the window (`DC CIVAC`
/// first: the peer's dirty lines must not land on the zeros, and it can no longer refetch
/// one). Not profiled (the bench's transfers are donate/lend and reclaim).
pub fn release<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    flags: TransferFlags,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    let range = request_range(base, size)?;
    let peer_ref = ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    let _serial = slot.busy.lock();
    let held = ctx.state.tracker.lock().state_of(range).map_err(|_| HandoffError::NotHeldByPeer)?;
    let released = match held {
        PageState::Donated { peer: p, released: false } if p == peer => {
            PageState::Donated { peer, released: true }
        }
        PageState::Lent { peer: p, released: false } if p == peer => {
            PageState::Lent { peer, released: true }
        }
        _ => return Err(HandoffError::NotHeldByPeer),
    };
    // The carveout's lock keeps the state as checked until the commit below: every other
    // transfer of these pages takes it first.
    ctx.with_reserve(range, Profiled::No, |ctx, reserve| {
        ctx.peer_lets_go(range, peer_ref, flags, reserve)
    })
    .map_err(Rollback::error)?;
    ctx.state.transition(range, held, released).map_err(HandoffError::Internal)
}

/// Takes `[base, base + size)` back from `peer` for the host (see the module documentation).
pub fn reclaim<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    flags: TransferFlags,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    ctx.cpu.phase_start();
    let range = request_range(base, size)?;
    ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    if slot.carveout.peer != peer {
        return Err(HandoffError::NotHeldByPeer);
    }
    let _serial = slot.busy.lock();
    let (held, kind) = {
        let mut tracker = ctx.state.tracker.lock();
        let held = tracker.state_of(range).map_err(|_| HandoffError::NotHeldByPeer)?;
        let (kind, released) = match held {
            PageState::Donated { peer: p, released } if p == peer => {
                (TransferKind::Donate, released)
            }
            PageState::Lent { peer: p, released } if p == peer => (TransferKind::Lend, released),
            _ => return Err(HandoffError::NotHeldByPeer),
        };
        if !released {
            return Err(HandoffError::PeerStillHolds);
        }
        let moving = PageState::Reclaiming { from: peer, kind };
        tracker.transition(range, held, moving).map_err(HandoffError::Internal)?;
        (held, kind)
    };
    ctx.cpu.phase_end(Phase::Validate);
    let moving = PageState::Reclaiming { from: peer, kind };
    let result =
        ctx.with_reserve(range, Profiled::Yes, |ctx, reserve| ctx.to_host(range, flags, reserve));
    let (result, end_state) = match result {
        Ok(()) => (Ok(()), PageState::Host),
        Err(Rollback::Restored(e)) => (Err(e), held),
        Err(Rollback::HostKeeps(e)) => (Err(e), PageState::Host),
    };
    ctx.state.transition(range, moving, end_state).map_err(HandoffError::Internal)?;
    ctx.cpu.phase_end(Phase::Commit);
    result
}

/// Shares `[base, base + size)` of `peer`'s carveout between the host and `peer` (Qualcomm's
/// `assign_mem` to HLOS plus one peer VM; see the module documentation, *Share*). `firmware`
/// is told first (the host keeps its access; the peer gets none before the firmware agrees).
pub fn share<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    firmware: &mut dyn Firmware,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    let range = request_range(base, size)?;
    let peer_ref = ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    if slot.carveout.peer != peer {
        return Err(HandoffError::WrongPeer);
    }
    let _serial = slot.busy.lock();
    let moving = PageState::Sharing { peer };
    ctx.state.transition(range, PageState::Host, moving).map_err(|_| HandoffError::NotHostOwned)?;
    let result = ctx.with_reserve(range, Profiled::No, |ctx, reserve| {
        firmware.agree().map_err(|s| Rollback::Restored(HandoffError::FirmwareRefused(s)))?;
        // The host's dirty lines reach memory before a non-coherent peer reads it there.
        let done = ctx
            .scrub(range, false, reserve, Profiled::No)
            .and_then(|()| ctx.map_peer(range, peer_ref, reserve));
        done.map_err(|e| {
            firmware.undo();
            Rollback::Restored(HandoffError::Stage2(e))
        })
    });
    let end_state = if result.is_ok() { PageState::Shared { peer } } else { PageState::Host };
    ctx.state.transition(range, moving, end_state).map_err(HandoffError::Internal)?;
    result.map_err(Rollback::error)
}

/// Ends the sharing of `[base, base + size)` with `peer`: the host alone has it again (see
/// the module documentation, *Share*). `firmware` is told first: it refuses → nothing changed.
pub fn unshare<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    firmware: &mut dyn Firmware,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    let range = request_range(base, size)?;
    let peer_ref = ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    let _serial = slot.busy.lock();
    let (held, moving) = (PageState::Shared { peer }, PageState::Unsharing { peer });
    ctx.state.transition(range, held, moving).map_err(|_| HandoffError::NotHeldByPeer)?;
    let result = ctx.with_reserve(range, Profiled::No, |ctx, reserve| {
        firmware.agree().map_err(|s| Rollback::Restored(HandoffError::FirmwareRefused(s)))?;
        if let Err(e) = ctx.unmap_peer(range, peer_ref, reserve) {
            firmware.undo();
            return Err(e);
        }
        // No stale line of the host's may hide what the peer wrote last (it can write no more).
        if let Err(e) = ctx.scrub(range, false, reserve, Profiled::No) {
            let _ = ctx.map_peer(range, peer_ref, reserve);
            firmware.undo();
            return Err(Rollback::Restored(HandoffError::Stage2(e)));
        }
        Ok(())
    });
    let end_state = if result.is_ok() { PageState::Host } else { held };
    ctx.state.transition(range, moving, end_state).map_err(HandoffError::Internal)?;
    result.map_err(Rollback::error)
}

/// The host takes `[base, base + size)` back from `peer` without waiting for the peer's
/// RELEASE (Qualcomm's `assign_mem` from the peer VM to HLOS alone): `firmware` is told first
/// (it refuses → nothing changed, nothing remapped), then the peer's mapping goes, then the
/// reclaim sequence (see the module documentation, *Take back*).
pub fn take_back<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    flags: TransferFlags,
    firmware: &mut dyn Firmware,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    let range = request_range(base, size)?;
    let peer_ref = ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    if slot.carveout.peer != peer {
        return Err(HandoffError::NotHeldByPeer);
    }
    let _serial = slot.busy.lock();
    let (held, kind, released) = {
        let mut tracker = ctx.state.tracker.lock();
        let held = tracker.state_of(range).map_err(|_| HandoffError::NotHeldByPeer)?;
        let (kind, released) = match held {
            PageState::Donated { peer: p, released } if p == peer => {
                (TransferKind::Donate, released)
            }
            PageState::Lent { peer: p, released } if p == peer => (TransferKind::Lend, released),
            _ => return Err(HandoffError::NotHeldByPeer),
        };
        let moving = PageState::Reclaiming { from: peer, kind };
        tracker.transition(range, held, moving).map_err(HandoffError::Internal)?;
        (held, kind, released)
    };
    let moving = PageState::Reclaiming { from: peer, kind };
    let mut peer_unmapped = false;
    let result = ctx.with_reserve(range, Profiled::No, |ctx, reserve| {
        firmware.agree().map_err(|s| Rollback::Restored(HandoffError::FirmwareRefused(s)))?;
        if !released && let Err(e) = ctx.unmap_peer(range, peer_ref, reserve) {
            firmware.undo();
            return Err(e);
        }
        peer_unmapped = !released;
        let back = ctx.to_host(range, flags, reserve);
        if let Err(Rollback::Restored(_)) = &back {
            firmware.undo();
            if !released && ctx.map_peer(range, peer_ref, reserve).is_ok() {
                peer_unmapped = false;
            }
        }
        back
    });
    let end_state = match result {
        Ok(()) => PageState::Host,
        Err(Rollback::HostKeeps(_)) => PageState::Host,
        // The peer's mapping could not be put back: it stays released (mapped for nobody).
        Err(Rollback::Restored(_)) if peer_unmapped => match kind {
            TransferKind::Donate => PageState::Donated { peer, released: true },
            TransferKind::Lend => PageState::Lent { peer, released: true },
        },
        Err(Rollback::Restored(_)) => held,
    };
    ctx.state.transition(range, moving, end_state).map_err(HandoffError::Internal)?;
    result.map_err(Rollback::error)
}

/// Donate or lend with `firmware` told once the host can no longer reach the range (after
/// its stage-2 unmap, the TLBIs and the completed SMMU sync), before the clean and the peer's
/// map: it refuses → the host's mapping is restored and the tracker says `Host` again.
pub fn transfer<H, D, A>(
    ctx: &HandoffCtx<'_, H, D, A>,
    base: u64,
    size: u64,
    peer: PeerId,
    kind: TransferKind,
    flags: TransferFlags,
    firmware: &mut dyn Firmware,
) -> Result<(), HandoffError>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    ctx.cpu.phase_start();
    let range = request_range(base, size)?;
    let peer_ref = ctx.peer(peer)?;
    let slot = ctx.state.slot_for(range)?;
    if slot.carveout.peer != peer {
        return Err(HandoffError::WrongPeer);
    }
    let _serial = slot.busy.lock();
    let moving = PageState::HandingOff { to: peer, kind };
    ctx.state.transition(range, PageState::Host, moving).map_err(|_| HandoffError::NotHostOwned)?;
    ctx.cpu.phase_end(Phase::Validate);
    let result = ctx.with_reserve(range, Profiled::Yes, |ctx, reserve| {
        ctx.to_peer(range, peer_ref, flags, reserve, firmware)
    });
    let end_state = match (&result, kind) {
        (Ok(()), TransferKind::Donate) => PageState::Donated { peer, released: false },
        (Ok(()), TransferKind::Lend) => PageState::Lent { peer, released: false },
        (Err(_), _) => PageState::Host,
    };
    ctx.state.transition(range, moving, end_state).map_err(HandoffError::Internal)?;
    ctx.cpu.phase_end(Phase::Commit);
    result.map_err(|r| r.error())
}

/// How a failed sequence ended.
enum Rollback {
    /// Tables as before the transfer: the previous owner keeps the range.
    Restored(HandoffError),
    /// Reclaim only: the host's mapping could not be removed again (or the SMMU not
    /// invalidated); the range is the host's (mapped for nobody else).
    HostKeeps(HandoffError),
}

impl Rollback {
    fn error(self) -> HandoffError {
        match self {
            Rollback::Restored(e) | Rollback::HostKeeps(e) => e,
        }
    }
}

/// Whether a step is counted in the bench's handoff profile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profiled {
    Yes,
    No,
}

impl<'a, H, D, A> HandoffCtx<'a, H, D, A>
where
    H: HandoffCpu + ?Sized,
    D: DmaStage2 + ?Sized,
    A: FrameAllocator + ?Sized,
{
    fn phase_end(&self, profiled: Profiled, phase: Phase) {
        if profiled == Profiled::Yes {
            self.cpu.phase_end(phase);
        }
    }

    /// Runs `f` with frames reserved for every table operation a transfer of `range` (and its
    /// rollback) can make. Frames freed from the host's stage-2 whose SMMU sync never
    /// completed are not returned (see [`HandoffState::quarantined_frames`]).
    fn with_reserve(
        &self,
        range: MemRange,
        profiled: Profiled,
        f: impl FnOnce(&Self, &mut FrameReserve) -> Result<(), Rollback>,
    ) -> Result<(), Rollback> {
        let host_level = self.host.table.lock().layout().start_level();
        let peer_level = self.peers.iter().map(|p| p.stage2.table.lock().layout().start_level());
        let level = peer_level.fold(host_level, u8::min);
        let el2_level = self.el2.lock().layout().start_level();
        let count = reserve::transfer_bound(range, level, el2_level);
        let reserve = {
            let mut spares = self.state.spare_frames.lock();
            FrameReserve::take_with_spares(&mut spares, &mut *self.frames.lock(), count)
        };
        let Some(mut reserve) = reserve else {
            return Err(Rollback::Restored(HandoffError::OutOfFrames));
        };
        self.phase_end(profiled, Phase::Reserve);
        let result = f(self, &mut reserve);
        let unsynced = reserve.awaiting_dma_sync();
        if unsynced > 0 {
            self.state.quarantined_frames.fetch_add(unsynced, Ordering::Relaxed);
        }
        {
            let mut spares = self.state.spare_frames.lock();
            reserve.release_keeping(&mut spares, self.state.spare_cap, &mut *self.frames.lock());
        }
        self.phase_end(profiled, Phase::Reserve);
        result
    }

    fn host_root(&self) -> u64 {
        self.host.table.lock().root_pa()
    }

    /// Maps `range` back into the host's stage-2, whole blocks as blocks. A table that map
    /// replaces by a block (a block given back whole) is host devices' too: its frame waits
    /// for the SMMU's invalidation of the range, issued here (a failure leaves the frame
    /// quarantined; the host's mapping stands).
    fn map_host(&self, range: MemRange, reserve: &mut FrameReserve) -> Result<(), MapError> {
        let mapped = self.host.table.lock().map(
            range,
            range.start,
            self.host.attrs,
            &mut reserve.shared_with_dma(),
            self.cpu,
        );
        if reserve.awaiting_dma_sync() > 0
            && self.smmu.lock().invalidate_ipa_range(self.host.vmid, range).is_ok()
        {
            reserve.dma_synced();
        }
        mapped
    }

    /// Removes `range` from the host's stage-2 (tables it empties wait for the SMMU sync),
    /// then invalidates the SMMU's TLBs for it; on success the freed frames may be reused.
    fn unmap_host(
        &self,
        range: MemRange,
        reserve: &mut FrameReserve,
        profiled: Profiled,
    ) -> Result<(), HandoffError> {
        // The host's stage-2 is current: this runs on a call from the host.
        let unmapped =
            self.host.table.lock().unmap(range, &mut reserve.shared_with_dma(), self.cpu);
        self.phase_end(profiled, Phase::HostUnmap);
        unmapped.map_err(HandoffError::Stage2)?;
        let synced = self.smmu.lock().invalidate_ipa_range(self.host.vmid, range);
        self.phase_end(profiled, Phase::DmaSync);
        synced.map_err(HandoffError::DmaSync)?;
        reserve.dma_synced();
        Ok(())
    }

    /// warden's own clean (and, with `clear`, zero) step over `range`, which nobody else maps
    /// now: open the window, `DC CIVAC` every line, zero, close the window. An error means the
    /// window could not be opened (nothing was cleaned; the window is closed again).
    fn scrub(
        &self,
        range: MemRange,
        clear: bool,
        reserve: &mut FrameReserve,
        profiled: Profiled,
    ) -> Result<(), MapError> {
        let opened = {
            let mut el2 = self.el2.lock();
            let mapped = el2.map(range, range.start, EL2_WINDOW_ATTRS, reserve, self.cpu);
            if mapped.is_err() {
                // Whatever part was mapped: whole blocks and pages inside `range`, so removing
                // them needs no frame.
                let _ = el2.unmap(range, reserve, self.cpu);
            }
            mapped
        };
        self.phase_end(profiled, Phase::El2Map);
        opened?;
        dcache_range(self.cpu, CacheOp::CleanInvalidate, range.start, range.size());
        self.phase_end(profiled, Phase::CacheClean);
        if clear {
            self.cpu.zero(range);
            self.phase_end(profiled, Phase::Zero);
        }
        // Removes exactly what `map` made above: whole blocks and pages inside `range`, so no
        // split and no frame is needed, and it cannot fail.
        let closed = self.el2.lock().unmap(range, reserve, self.cpu);
        self.phase_end(profiled, Phase::El2Unmap);
        closed
    }

    /// Maps `range` into `peer`'s stage-2 (its VMID current while its table changes, the
    /// host's again afterwards); on failure whatever part was mapped is removed again.
    fn map_peer(
        &self,
        range: MemRange,
        peer: &PeerRef<'_>,
        reserve: &mut FrameReserve,
    ) -> Result<(), MapError> {
        let mapped = {
            let mut table = peer.stage2.table.lock();
            self.cpu.load_stage2(peer.stage2.vmid, table.root_pa());
            let mapped = table.map(range, range.start, peer.stage2.attrs, reserve, self.cpu);
            if mapped.is_err() {
                // `map` only created entries inside `range`: removing them needs no frame.
                let _ = table.unmap(range, reserve, self.cpu);
            }
            mapped
        };
        self.cpu.load_stage2(self.host.vmid, self.host_root());
        mapped
    }

    /// Removes `range` from `peer`'s stage-2 from a host call: TLBIs under the peer's VMID,
    /// then the host's VMID current again. On failure the peer's mapping is put back (what
    /// cannot be stays unmapped for its holder, which is safe).
    fn unmap_peer(
        &self,
        range: MemRange,
        peer: &PeerRef<'_>,
        reserve: &mut FrameReserve,
    ) -> Result<(), Rollback> {
        let unmapped = {
            let mut table = peer.stage2.table.lock();
            self.cpu.load_stage2(peer.stage2.vmid, table.root_pa());
            let unmapped = table.unmap(range, reserve, self.cpu);
            if unmapped.is_err() {
                let _ = table.map(range, range.start, peer.stage2.attrs, reserve, self.cpu);
            }
            unmapped
        };
        self.cpu.load_stage2(self.host.vmid, self.host_root());
        unmapped.map_err(|e| Rollback::Restored(HandoffError::Stage2(e)))
    }

    /// Steps 2-5 of donate/lend (module documentation), `firmware` told between 3 and 4.
    fn to_peer(
        &self,
        range: MemRange,
        peer: &PeerRef<'_>,
        flags: TransferFlags,
        reserve: &mut FrameReserve,
        firmware: &mut dyn Firmware,
    ) -> Result<(), Rollback> {
        // Test builds only: leave the host's mapping in place on assign_mem's forwarded path,
        // so the firmware's own check (tz-sim's XPU witness) must catch it.
        let skip_unmap = cfg!(feature = "fault-injection-skip-assign-unmap") && firmware.is_told();
        if !skip_unmap && let Err(e) = self.unmap_host(range, reserve, Profiled::Yes) {
            return Err(self.restore_host(range, reserve, e));
        }
        // The host can reach none of the range now (no stage-2 entry, no TLB entry on any CPU
        // or SMMU): what the firmware checks before it agrees.
        if let Err(status) = firmware.agree() {
            return Err(self.restore_host(range, reserve, HandoffError::FirmwareRefused(status)));
        }
        if let Err(e) = self.scrub(range, flags.clear, reserve, Profiled::Yes) {
            firmware.undo();
            return Err(self.restore_host(range, reserve, HandoffError::Stage2(e)));
        }
        let mapped = self.map_peer(range, peer, reserve);
        self.cpu.phase_end(Phase::PeerMap);
        match mapped {
            Ok(()) => Ok(()),
            Err(e) => {
                firmware.undo();
                Err(self.restore_host(range, reserve, HandoffError::Stage2(e)))
            }
        }
    }

    /// Gives the host back the mapping it had before a failed donate/lend.
    fn restore_host(
        &self,
        range: MemRange,
        reserve: &mut FrameReserve,
        e: HandoffError,
    ) -> Rollback {
        match self.map_host(range, reserve) {
            Ok(()) => Rollback::Restored(e),
            // Pages stay unmapped for their owner, the host: safe, and reported.
            Err(_) => Rollback::HostKeeps(e),
        }
    }

    /// The release sequence (module documentation): the peer's mapping goes, then the scrub.
    /// It runs on the peer's own call, on the CPU the peer runs on: the peer's stage-2 is
    /// current there (it is loaded again all the same) and stays current.
    fn peer_lets_go(
        &self,
        range: MemRange,
        peer: &PeerRef<'_>,
        flags: TransferFlags,
        reserve: &mut FrameReserve,
    ) -> Result<(), Rollback> {
        let mut table = peer.stage2.table.lock();
        self.cpu.load_stage2(peer.stage2.vmid, table.root_pa());
        if let Err(e) = table.unmap(range, reserve, self.cpu) {
            // The peer keeps the range; whatever part of its mapping could not be put back
            // stays unmapped for its holder, which is safe.
            let _ = table.map(range, range.start, peer.stage2.attrs, reserve, self.cpu);
            return Err(Rollback::Restored(HandoffError::Stage2(e)));
        }
        drop(table);
        if flags.clear
            && let Err(e) = self.scrub(range, true, reserve, Profiled::No)
        {
            // Not released after all: the peer gets its mapping back (adding a mapping needs
            // no invalidation).
            let mut table = peer.stage2.table.lock();
            let _ = table.map(range, range.start, peer.stage2.attrs, reserve, self.cpu);
            return Err(Rollback::Restored(HandoffError::Stage2(e)));
        }
        Ok(())
    }

    /// The reclaim sequence after the tracker said `Reclaiming`; the peer's stage-2 has no
    /// mapping of the range since its release.
    fn to_host(
        &self,
        range: MemRange,
        flags: TransferFlags,
        reserve: &mut FrameReserve,
    ) -> Result<(), Rollback> {
        if flags.clear
            && let Err(e) = self.scrub(range, true, reserve, Profiled::Yes)
        {
            return Err(Rollback::Restored(HandoffError::Stage2(e)));
        }
        let mapped = self.map_host(range, reserve);
        self.cpu.phase_end(Phase::HostMap);
        match mapped {
            Ok(()) => Ok(()),
            Err(e) => Err(self.unmap_after_failed_map(range, reserve, HandoffError::Stage2(e))),
        }
    }

    /// After a failed host map in reclaim: remove whatever the host got and invalidate the
    /// SMMU (host devices may have cached it); the range is then released as before.
    fn unmap_after_failed_map(
        &self,
        range: MemRange,
        reserve: &mut FrameReserve,
        e: HandoffError,
    ) -> Rollback {
        match self.unmap_host(range, reserve, Profiled::No) {
            Ok(()) => Rollback::Restored(e),
            // The host may still reach part of it: it must stay the host's.
            Err(_) => Rollback::HostKeeps(e),
        }
    }
}

impl<'a, H: ?Sized, D: ?Sized, A: ?Sized> HandoffCtx<'a, H, D, A> {
    fn peer(&self, id: PeerId) -> Result<&'a PeerRef<'a>, HandoffError> {
        self.peers.iter().find(|p| p.id == id).ok_or(HandoffError::UnknownPeer)
    }
}
