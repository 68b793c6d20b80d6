use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use proptest::prelude::*;
use spin::Mutex;

use super::*;
use crate::arch::fake::{HwOp, Recorder};
use crate::mm::el2::{El2Plan, WardenImage, build_el2_identity_map, warden_regions};
use crate::mm::frame::test_support::HeapFrames;
use crate::mm::ownership::Accessor;
use crate::mm::stage2::{HostStage2Spec, build_host_stage2};
use crate::mm::{Mapping, MemKind, Perms, TableLayout};

const HOST_VMID: u16 = 1;
const MODEM: PeerId = PeerId::MODEM;
const DSP: PeerId = PeerId::DSP;

/// A valid peer number that no carveout names.
fn peer(id: u8) -> PeerId {
    PeerId::new(id).expect("1..=63")
}
const LINE: u64 = 64;
const SZ_2M: u64 = 2 << 20;

const WARDEN: MemRange = MemRange::new(0x4000_0000, 0x4020_0000);
const HOST_RAM: MemRange = MemRange::new(0x4020_0000, 0x4080_0000);
/// 64 KiB inside the host's first 2 MiB block.
const C_MODEM: MemRange = MemRange::new(0x4030_0000, 0x4031_0000);
/// 128 KiB straddling a 2 MiB boundary.
const C_DSP: MemRange = MemRange::new(0x403f_0000, 0x4041_0000);
/// A whole 2 MiB block.
const C_BIG: MemRange = MemRange::new(0x4060_0000, 0x4080_0000);
const CARVEOUTS: [Carveout; 3] = [
    Carveout { range: C_MODEM, peer: MODEM },
    Carveout { range: C_DSP, peer: DSP },
    Carveout { range: C_BIG, peer: MODEM },
];
/// A `no-map` reserved region that is no carveout (firmware's): host RAM to the tracker, but
/// never mapped at EL2 and never host memory warden may touch.
const NO_MAP: MemRange = MemRange::new(0x4048_0000, 0x4049_0000);
/// All RAM: warden's region then the host's.
const RAM: MemRange = MemRange::new(WARDEN.start, HOST_RAM.end);
/// warden's image inside its region: code, read-only data, the rest (data, BSS, pool).
const IMAGE: WardenImage = WardenImage {
    start: WARDEN.start,
    text_end: 0x4004_0000,
    rodata_end: 0x4006_0000,
    end: WARDEN.end,
};
const UART: MemRange = MemRange::new(0x0900_0000, 0x0900_1000);

const HOST_ATTRS: Attrs = Attrs::normal(Perms::RWX);
const PEER_ATTRS: Attrs = Attrs::normal(Perms::RW);

/// One event in the single ordered log shared by the CPU fake and the SMMU fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// A barrier/TLB/cache operation and the VMID current when it was issued.
    Cpu {
        vmid: u16,
        op: HwOp,
    },
    Load(u16),
    Zero(MemRange),
    Smmu {
        vmid: u16,
        range: MemRange,
    },
    /// The firmware below told (`Firmware::agree`) or asked to undo (`Firmware::undo`).
    FirmwareAgree,
    FirmwareUndo,
}

/// A firmware below (Qualcomm's TZ for assign_mem) recording into the shared log; it answers
/// `agree` with `answer`.
struct FakeFirmware {
    log: Log,
    answer: Result<(), i64>,
}

impl Firmware for FakeFirmware {
    fn agree(&mut self) -> Result<(), i64> {
        self.log.borrow_mut().push(Ev::FirmwareAgree);
        self.answer
    }
    fn undo(&mut self) {
        self.log.borrow_mut().push(Ev::FirmwareUndo);
    }
}

type Log = Rc<RefCell<Vec<Ev>>>;

/// CPU fake: forwards to a [`Recorder`] and moves each operation into the shared log, tagged
/// with the current VMID. With a probe, also checks at every operation that the tracker still
/// shows the probed range in flight.
struct FakeCpu<'a> {
    rec: Recorder,
    vmid: Cell<u16>,
    log: Log,
    probe: Option<(&'a HandoffState, MemRange)>,
    probe_violations: Cell<usize>,
    /// warden's EL2 stage-1: every `DC CIVAC` and every zeroed page must be mapped there
    /// (Normal Non-cacheable) when issued, as on hardware, where an unmapped VA faults.
    window: Option<&'a Mutex<PageTable<El2Stage1>>>,
    unmapped_accesses: Cell<usize>,
}

impl<'a> FakeCpu<'a> {
    fn new(log: Log) -> Self {
        Self {
            rec: Recorder::new(LINE),
            vmid: Cell::new(HOST_VMID),
            log,
            probe: None,
            probe_violations: Cell::new(0),
            window: None,
            unmapped_accesses: Cell::new(0),
        }
    }

    /// Also checks warden's own accesses against `w`'s EL2 stage-1.
    fn on(w: &'a World, log: Log) -> Self {
        Self { window: Some(&w.el2), ..Self::new(log) }
    }

    fn check_window(&self, va: u64) {
        let Some(el2) = self.window else { return };
        let mapped = el2.lock().translate(va).is_some_and(|t| {
            t.pa == va && t.attrs == EL2_WINDOW_ATTRS && t.attrs.kind == MemKind::NormalNonCacheable
        });
        if !mapped {
            self.unmapped_accesses.set(self.unmapped_accesses.get() + 1);
        }
    }

    fn flush(&self) {
        let vmid = self.vmid.get();
        self.log.borrow_mut().extend(self.rec.take().into_iter().map(|op| Ev::Cpu { vmid, op }));
        self.check_probe();
    }

    fn check_probe(&self) {
        if let Some((state, range)) = self.probe {
            let in_flight = state.tracker().state_of(range).is_ok_and(|s| s.is_transient());
            if !in_flight {
                self.probe_violations.set(self.probe_violations.get() + 1);
            }
        }
    }
}

impl TlbMaintenance for FakeCpu<'_> {
    fn dsb_ishst(&self) {
        self.rec.dsb_ishst();
        self.flush()
    }
    fn dsb_ish(&self) {
        self.rec.dsb_ish();
        self.flush()
    }
    fn isb(&self) {
        self.rec.isb();
        self.flush()
    }
    fn tlbi_ipas2e1is(&self, ipa: u64) {
        self.rec.tlbi_ipas2e1is(ipa);
        self.flush()
    }
    fn tlbi_vmalle1is(&self) {
        self.rec.tlbi_vmalle1is();
        self.flush()
    }
    fn tlbi_vmalls12e1is(&self) {
        self.rec.tlbi_vmalls12e1is();
        self.flush()
    }
    fn tlbi_alle2is(&self) {
        self.rec.tlbi_alle2is();
        self.flush()
    }
    fn tlbi_vae2is(&self, va: u64) {
        self.rec.tlbi_vae2is(va);
        self.flush()
    }
}

impl CacheMaintenance for FakeCpu<'_> {
    fn dcache_line_size(&self) -> u64 {
        self.rec.dcache_line_size()
    }
    fn dc_civac(&self, va: u64) {
        self.check_window(va);
        self.rec.dc_civac(va);
        self.flush()
    }
    fn dc_cvac(&self, va: u64) {
        self.check_window(va);
        self.rec.dc_cvac(va);
        self.flush()
    }
    fn dc_ivac(&self, va: u64) {
        self.rec.dc_ivac(va);
        self.flush()
    }
    fn dsb_sy(&self) {
        self.rec.dsb_sy();
        self.flush()
    }
}

impl HandoffCpu for FakeCpu<'_> {
    fn load_stage2(&self, vmid: u16, _root_pa: u64) {
        self.vmid.set(vmid);
        self.log.borrow_mut().push(Ev::Load(vmid));
        self.check_probe();
    }
    fn zero(&self, range: MemRange) {
        for page in pages(range) {
            self.check_window(page);
        }
        self.log.borrow_mut().push(Ev::Zero(range));
        self.check_probe();
    }
}

/// SMMU fake logging into the same log; can fail its next invalidations.
struct FakeSmmu {
    log: Option<Log>,
    fail: bool,
}

const SYNC_FAILED: SmmuError = SmmuError::SyncTimeout { prod: 1, cons: 0 };

impl DmaStage2 for FakeSmmu {
    fn invalidate_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError> {
        if let Some(log) = &self.log {
            log.borrow_mut().push(Ev::Smmu { vmid, range });
        }
        if self.fail { Err(SYNC_FAILED) } else { Ok(()) }
    }
}

// Barrier, TLB and cache operations that do nothing, for the fakes that check tables or record
// something else (large lines keep the property test fast; line coverage is checked by the
// recording fake).
crate::no_op_maintenance!(NullCpu, VmidCpu, PhaseCpu; line_size = 2048);

/// CPU hardware that does nothing (property and thread tests check tables, not order).
struct NullCpu;

impl HandoffCpu for NullCpu {
    fn load_stage2(&self, _: u16, _: u64) {}
    fn zero(&self, _: MemRange) {}
}

/// Test memory: the tables live in `frames`; the mapped memory itself is never touched. The
/// host's stage-2 and warden's EL2 stage-1 are built by the code the boot uses.
struct World {
    frames: Mutex<SendFrames>,
    host: Mutex<PageTable<Stage2>>,
    modem: Mutex<PageTable<Stage2>>,
    dsp: Mutex<PageTable<Stage2>>,
    el2: Mutex<PageTable<El2Stage1>>,
    state: HandoffState,
}

/// `HeapFrames` holds a raw pointer to its buffer, so it is not `Send` by itself.
struct SendFrames(HeapFrames);

// SAFETY: the buffer is owned by the `HeapFrames` alone and only reached through the `Mutex`
// that holds this wrapper, so moving it to or sharing it with another thread is sound.
unsafe impl Send for SendFrames {}

// SAFETY: delegates to `HeapFrames`.
unsafe impl FrameAllocator for SendFrames {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        self.0.alloc_zeroed(pages)
    }
    fn free(&mut self, pa: u64, pages: usize) {
        self.0.free(pa, pages)
    }
}

fn layout() -> TableLayout {
    TableLayout::new(32, 1, 1).unwrap()
}

/// The host's stage-2 as the boot builds it: RAM minus warden, carveouts' edges split.
fn boot_host_stage2(frames: &mut SendFrames, split: bool) -> PageTable<Stage2> {
    let carveouts = CARVEOUTS.map(|c| c.range);
    let spec = HostStage2Spec {
        ram: &[RAM],
        devices: &[],
        holes: &[WARDEN],
        split: if split { &carveouts } else { &[] },
        pa_range_bits: 40,
        vmid16: false,
    };
    let s2 = build_host_stage2(&spec, frames, &NullCpu).unwrap();
    assert_eq!(s2.config.layout(), layout());
    s2.table
}

/// warden's EL2 stage-1 as the boot builds it: its image, RAM minus the carveouts and the
/// no-map region, the UART.
fn boot_el2_stage1(frames: &mut SendFrames) -> PageTable<El2Stage1> {
    let guards = [MemRange::new(0x4010_0000, 0x4010_1000)];
    let plan = El2Plan {
        image: IMAGE,
        guards: &guards,
        ram: &[RAM],
        excluded: &[C_MODEM, C_DSP, C_BIG, NO_MAP],
        devices: &[UART],
    };
    let mut regions = Vec::new();
    warden_regions(&plan, |r, a| regions.push((r, a)));
    build_el2_identity_map(&regions, 32, 40, frames, &NullCpu).unwrap().table
}

impl World {
    fn new() -> Self {
        Self::build(128, true)
    }

    /// With the host's stage-2 mapping carveouts like any RAM (2 MiB blocks), as before
    /// carveouts were split at boot.
    fn unsplit() -> Self {
        Self::build(128, false)
    }

    fn build(pages: usize, split: bool) -> Self {
        let mut frames = SendFrames(HeapFrames::new(pages));
        let host = boot_host_stage2(&mut frames, split);
        let el2 = boot_el2_stage1(&mut frames);
        let modem = PageTable::<Stage2>::new(layout(), &mut frames).unwrap();
        let dsp = PageTable::<Stage2>::new(layout(), &mut frames).unwrap();
        let mut tracker = OwnershipTracker::new();
        tracker.add(WARDEN, PageState::Warden).unwrap();
        tracker.add(HOST_RAM, PageState::Host).unwrap();
        let mut state = HandoffState::new(tracker, &CARVEOUTS).unwrap();
        state.exclude_from_host_memory(&[NO_MAP]);
        Self {
            frames: Mutex::new(frames),
            host: Mutex::new(host),
            modem: Mutex::new(modem),
            dsp: Mutex::new(dsp),
            el2: Mutex::new(el2),
            state,
        }
    }

    fn peers(&self) -> [PeerRef<'_>; 2] {
        [
            PeerRef {
                id: MODEM,
                stage2: Stage2Ref { vmid: 2, table: &self.modem, attrs: PEER_ATTRS },
            },
            PeerRef { id: DSP, stage2: Stage2Ref { vmid: 3, table: &self.dsp, attrs: PEER_ATTRS } },
        ]
    }

    fn ctx<'a, H: ?Sized, D: ?Sized>(
        &'a self,
        cpu: &'a H,
        smmu: &'a Mutex<D>,
        peers: &'a [PeerRef<'a>],
    ) -> HandoffCtx<'a, H, D, SendFrames> {
        HandoffCtx {
            cpu,
            smmu,
            frames: &self.frames,
            host: Stage2Ref { vmid: HOST_VMID, table: &self.host, attrs: HOST_ATTRS },
            peers,
            state: &self.state,
            el2: &self.el2,
        }
    }

    /// Tracker, then every table's merged regions: what "state unchanged" compares.
    fn snapshot(&self) -> (OwnershipTracker, [Vec<Mapping>; 4]) {
        let regions = |t: &Mutex<PageTable<Stage2>>| {
            let mut out = Vec::new();
            t.lock().for_each_region(|m| out.push(m));
            out
        };
        let mut el2 = Vec::new();
        self.el2.lock().for_each_region(|m| el2.push(m));
        (
            self.state.tracker().clone(),
            [regions(&self.host), regions(&self.modem), regions(&self.dsp), el2],
        )
    }

    /// warden's own EL2 stage-1 maps, besides its image and the UART, only RAM that is host
    /// memory warden may touch: the host's, outside every carveout and the no-map region.
    /// (Checked between transfers: a transfer's own window is checked by [`FakeCpu`].)
    fn check_el2(&self) -> Result<(), String> {
        let host_memory = self.state.host_memory();
        let el2 = self.el2.lock();
        for m in el2.mappings() {
            let r = MemRange::new(m.va, m.va + m.size);
            if m.pa != m.va {
                return Err(format!("EL2: {r:?} not identity"));
            }
            if WARDEN.contains_range(&r) || (r == UART && m.attrs.kind == MemKind::Device) {
                continue;
            }
            if m.attrs != Attrs::normal(Perms::RW) {
                return Err(format!("EL2 maps RAM {r:?} as {}", m.attrs));
            }
            if !host_memory.allows(r) {
                let states: Vec<_> = host_memory.tracker().extents_in(r).collect();
                return Err(format!("EL2 maps {r:?} ({states:?}), not host memory"));
            }
        }
        // And each carveout and the no-map region, page by page, by walking.
        for c in CARVEOUTS.iter().map(|c| c.range).chain([NO_MAP]) {
            if let Some(page) = pages(c).find(|&p| el2.translate(p).is_some()) {
                return Err(format!("EL2 maps {page:#x} of {c:?}"));
            }
        }
        Ok(())
    }

    /// Every page mapped in a table is tracked, identity-mapped, and in a state whose accessor
    /// is that table's agent; every page with an accessor is mapped by it (so no page is lost
    /// or mapped twice). Checked by walking the tables, and by `translate` at carveout edges.
    fn check(&self) -> Result<(), String> {
        self.check_el2()?;
        let tracker = self.state.tracker().clone();
        tracker.check_invariants().map_err(|e| format!("{e:?}"))?;
        if tracker.tracked_bytes() != WARDEN.size() + HOST_RAM.size() {
            return Err(format!("tracked bytes changed: {:#x}", tracker.tracked_bytes()));
        }
        let tables = [
            (Accessor::Host, &self.host),
            (Accessor::Peer(MODEM), &self.modem),
            (Accessor::Peer(DSP), &self.dsp),
        ];
        for (who, table) in tables {
            let table = table.lock();
            tracker.check_mapped_exactly(who, &table.mappings())?;
            for c in CARVEOUTS {
                for page in
                    [c.range.start - PAGE_SIZE, c.range.start, c.range.end - PAGE_SIZE, c.range.end]
                {
                    let state = tracker.state_of(MemRange::new(page, page + PAGE_SIZE));
                    let allowed = state.is_ok_and(|s| s.accessible_by(who));
                    if table.translate(page + 8).is_some() != allowed {
                        return Err(format!(
                            "{who:?}: translate({page:#x}) disagrees with {state:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn cpu(vmid: u16, op: HwOp) -> Ev {
    Ev::Cpu { vmid, op }
}

fn pages(range: MemRange) -> impl Iterator<Item = u64> {
    (range.start..range.end).step_by(PAGE_SIZE as usize)
}

/// `DC <op>` over every line of `range`, then DSB SY.
fn lines(range: MemRange, op: fn(u64) -> HwOp) -> Vec<Ev> {
    let mut v: Vec<Ev> =
        (range.start..range.end).step_by(LINE as usize).map(|a| cpu(HOST_VMID, op(a))).collect();
    v.push(cpu(HOST_VMID, HwOp::DsbSy));
    v
}

/// What `edit` issues through a [`Recorder`], as events under `vmid`.
fn recorded(vmid: u16, edit: impl FnOnce(&Recorder)) -> Vec<Ev> {
    let rec = Recorder::new(LINE);
    edit(&rec);
    rec.take().into_iter().map(|op| cpu(vmid, op)).collect()
}

/// The window over `range` on `replica` (a world in the state the transfer found): opening it
/// (map), cleaning every line, zeroing (with `clear`), closing it (unmap), as the sequence
/// must issue them.
fn expected_scrub(replica: &World, range: MemRange, clear: bool) -> Vec<Ev> {
    let mut frames = replica.frames.lock();
    let mut el2 = replica.el2.lock();
    let mut v = recorded(HOST_VMID, |rec| {
        el2.map(range, range.start, EL2_WINDOW_ATTRS, &mut *frames, rec).unwrap()
    });
    v.extend(lines(range, HwOp::DcCivac));
    if clear {
        v.push(Ev::Zero(range));
    }
    v.extend(recorded(HOST_VMID, |rec| el2.unmap(range, &mut *frames, rec).unwrap()));
    v
}

/// The whole donate/lend sequence for `range` into a peer with `vmid`, replayed table by table
/// on `replica` (a world as the transfer found it).
fn expected_give(
    replica: &World,
    range: MemRange,
    peer: PeerId,
    vmid: u16,
    clear: bool,
) -> Vec<Ev> {
    let mut v = recorded(HOST_VMID, |rec| {
        replica.host.lock().unmap(range, &mut *replica.frames.lock(), rec).unwrap()
    });
    v.push(Ev::Smmu { vmid: HOST_VMID, range });
    v.extend(expected_scrub(replica, range, clear));
    v.push(Ev::Load(vmid));
    let table = if peer == MODEM { &replica.modem } else { &replica.dsp };
    v.extend(recorded(vmid, |rec| {
        table.lock().map(range, range.start, PEER_ATTRS, &mut *replica.frames.lock(), rec).unwrap()
    }));
    v.push(Ev::Load(HOST_VMID));
    v
}

fn position(log: &[Ev], what: impl Fn(&Ev) -> bool) -> usize {
    log.iter().position(what).expect("event not in the log")
}

fn rposition(log: &[Ev], what: impl Fn(&Ev) -> bool) -> usize {
    log.iter().rposition(what).expect("event not in the log")
}

fn is_civac(e: &Ev) -> bool {
    matches!(e, Ev::Cpu { op: HwOp::DcCivac(_), .. })
}

fn run_give(kind: TransferKind, range: MemRange, peer: PeerId, vmid: u16, clear: bool) {
    let w = World::new();
    let log: Log = Rc::default();
    let mut fake = FakeCpu::on(&w, log.clone());
    fake.probe = Some((&w.state, range));
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    let flags = TransferFlags { clear };
    let el2_tables = w.el2.lock().stats().table_pages;
    let f = match kind {
        TransferKind::Donate => donate::<FakeCpu<'_>, FakeSmmu, SendFrames>,
        TransferKind::Lend => lend::<FakeCpu<'_>, FakeSmmu, SendFrames>,
    };
    f(&ctx, range.start, range.size(), peer, flags).unwrap();
    let got = log.take();
    let want = expected_give(&World::new(), range, peer, vmid, clear);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // Coverage: every line exactly once; SMMU before the window opens; the peer map after the
    // window closed.
    let civac: Vec<u64> = got
        .iter()
        .filter_map(|e| match e {
            Ev::Cpu { op: HwOp::DcCivac(a), .. } => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(civac, (range.start..range.end).step_by(LINE as usize).collect::<Vec<_>>());
    let smmu_at = position(&got, |e| matches!(e, Ev::Smmu { .. }));
    let last_dc = rposition(&got, is_civac);
    let first_vae2 = position(&got, |e| matches!(e, Ev::Cpu { op: HwOp::TlbiVae2is(_), .. }));
    let load_peer = position(&got, |e| *e == Ev::Load(vmid));
    assert!(smmu_at < first_vae2 && last_dc < first_vae2 && first_vae2 < load_peer);
    // Every host TLBI by IPA is for the carveout: its edges split at boot, the host's stage-2
    // only loses entries inside it (the range's own, or a block of it split on demand) and no
    // entry mapping anything else is ever broken.
    let carveout = CARVEOUTS.iter().find(|c| c.range.contains_range(&range)).unwrap().range;
    for e in &got[..smmu_at] {
        if let Ev::Cpu { vmid: v, op: HwOp::TlbiIpas2e1is(ipa) } = *e {
            assert_eq!(v, HOST_VMID);
            assert!(carveout.contains(ipa), "host TLBI at {ipa:#x} outside {carveout:?}");
        }
    }
    for page in pages(range) {
        let block = page & !(SZ_2M - 1);
        assert!(
            got.contains(&cpu(HOST_VMID, HwOp::TlbiIpas2e1is(page)))
                || (range.contains(block) && range.contains(block + SZ_2M - 1))
        );
    }
    // warden's accesses were all through the window; afterwards it is closed.
    assert_eq!(fake.unmapped_accesses.get(), 0);
    assert!(pages(range).all(|p| w.el2.lock().translate(p).is_none()));
    // ... and so are the tables it took: warden's stage 1 has exactly the frames it had.
    assert_eq!(w.el2.lock().stats().table_pages, el2_tables);
    // The tracker said "in flight" at every hardware operation, and the peer's state only now.
    assert_eq!(fake.probe_violations.get(), 0);
    let end = match kind {
        TransferKind::Donate => PageState::Donated { peer, released: false },
        TransferKind::Lend => PageState::Lent { peer, released: false },
    };
    assert_eq!(w.state.tracker().state_of(range), Ok(end));
    w.check().unwrap();
}

#[test]
fn donate_a_page_in_order() {
    run_give(TransferKind::Donate, C_MODEM, MODEM, 2, false);
}

#[test]
fn lend_with_clear_zeroes_after_the_clean() {
    run_give(TransferKind::Lend, C_MODEM, MODEM, 2, true);
}

#[test]
fn donate_across_a_2m_boundary() {
    run_give(TransferKind::Donate, C_DSP, DSP, 3, false);
}

#[test]
fn lend_a_sub_range_not_2m_aligned() {
    run_give(TransferKind::Lend, MemRange::new(0x403f_3000, 0x4040_2000), DSP, 3, false);
}

#[test]
fn donate_a_whole_2m_block() {
    run_give(TransferKind::Donate, C_BIG, MODEM, 2, true);
}

#[test]
fn lend_part_of_a_2m_block_splits_it_on_demand() {
    let part = MemRange::new(C_BIG.start + 3 * PAGE_SIZE, C_BIG.start + 7 * PAGE_SIZE);
    run_give(TransferKind::Lend, part, MODEM, 2, false);
}

/// A carveout's whole 2 MiB block is one entry in the host's stage 2 (its edges are block
/// boundaries: nothing split at boot): donating it breaks that entry alone (by IPA, completed)
/// before the SMMU sync and the clean, and the peer gets one block entry; giving it back makes
/// it one block again, in no new table.
#[test]
fn a_whole_block_changes_one_entry_each_way() {
    let w = World::new();
    let host_level = |addr: u64| w.host.lock().translate(addr).map(|t| t.level);
    assert_eq!(host_level(C_BIG.start), Some(2));
    assert_eq!(host_level(C_BIG.end - PAGE_SIZE), Some(2));
    let host_before = w.host.lock().stats();
    let log: Log = Rc::default();
    let fake = FakeCpu::on(&w, log.clone());
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    donate(&ctx, C_BIG.start, C_BIG.size(), MODEM, TransferFlags::default()).unwrap();
    let got = log.take();
    let host_unmap = [
        cpu(HOST_VMID, HwOp::DsbIshst),
        cpu(HOST_VMID, HwOp::TlbiIpas2e1is(C_BIG.start)),
        cpu(HOST_VMID, HwOp::DsbIsh),
        cpu(HOST_VMID, HwOp::TlbiVmalle1is),
        cpu(HOST_VMID, HwOp::DsbIsh),
        cpu(HOST_VMID, HwOp::Isb),
        Ev::Smmu { vmid: HOST_VMID, range: C_BIG },
    ];
    assert_eq!(got[..host_unmap.len()], host_unmap, "one entry broken, completed, then the SMMU");
    let first_civac = position(&got, is_civac);
    assert!(first_civac > host_unmap.len(), "the clean only after the SMMU sync");
    let load_peer = position(&got, |e| *e == Ev::Load(2));
    assert_eq!(
        got[load_peer..],
        [Ev::Load(2), cpu(2, HwOp::DsbIshst), cpu(2, HwOp::Isb), Ev::Load(HOST_VMID)],
        "the peer's map writes one block entry"
    );
    let peer = w.modem.lock().translate(C_BIG.start).unwrap();
    assert_eq!((peer.pa, peer.level), (C_BIG.start, 2));
    assert_eq!(host_level(C_BIG.start), None);
    assert!(host_level(C_BIG.start - PAGE_SIZE).is_some(), "the host's page below stays");
    w.check().unwrap();
    let none = TransferFlags::default();
    release(&ctx, C_BIG.start, C_BIG.size(), MODEM, none).unwrap();
    log.take();
    // The release ran on the peer's CPU; the reclaim runs on a host call.
    fake.vmid.set(HOST_VMID);
    reclaim(&ctx, C_BIG.start, C_BIG.size(), MODEM, none).unwrap();
    assert_eq!(
        log.take(),
        [cpu(HOST_VMID, HwOp::DsbIshst), cpu(HOST_VMID, HwOp::Isb)],
        "one block entry written back; no SMMU command"
    );
    assert_eq!(host_level(C_BIG.start), Some(2));
    assert_eq!(w.host.lock().stats(), host_before, "no table left behind");
    w.check().unwrap();
}

/// The unsplit host stage-2 (carveouts in 2 MiB blocks, as before the boot split them): a
/// donation breaks the block around it, i.e. entries mapping the host's other pages. What the
/// split prevents, shown on the same sequence.
#[test]
fn without_the_split_a_donation_breaks_its_neighbours() {
    let w = World::unsplit();
    let log: Log = Rc::default();
    let fake = FakeCpu::on(&w, log.clone());
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    let page = MemRange::new(C_MODEM.start + PAGE_SIZE, C_MODEM.start + 2 * PAGE_SIZE);
    donate(&ctx, page.start, page.size(), MODEM, TransferFlags::default()).unwrap();
    let block = C_MODEM.start & !(SZ_2M - 1);
    assert!(log.take().contains(&cpu(HOST_VMID, HwOp::TlbiIpas2e1is(block))));
    w.check().unwrap();
}

/// A donate, a release and a reclaim of `range`, the reclaim logged; with the peer's stage-2
/// already empty since the release, the reclaim only scrubs (with `clear`) and maps the host.
fn run_reclaim(range: MemRange, peer: PeerId, clear: bool, kind: TransferKind) {
    let w = World::new();
    let replica = World::new();
    let log: Log = Rc::default();
    let mut fake = FakeCpu::on(&w, log.clone());
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
    let peers = w.peers();
    for world in [&w, &replica] {
        let null_smmu = Mutex::new(FakeSmmu { log: None, fail: false });
        let peers = world.peers();
        let ctx = world.ctx(&NullCpu, &null_smmu, &peers);
        transfer(
            &ctx,
            range.start,
            range.size(),
            peer,
            kind,
            TransferFlags::default(),
            &mut NoFirmware,
        )
        .unwrap();
        let flags = TransferFlags { clear };
        assert_eq!(
            reclaim(&ctx, range.start, range.size(), peer, flags),
            Err(HandoffError::PeerStillHolds)
        );
        release(&ctx, range.start, range.size(), peer, TransferFlags::default()).unwrap();
    }
    let table = if peer == MODEM { &w.modem } else { &w.dsp };
    assert!(table.lock().mappings().is_empty(), "released: the peer maps nothing");
    fake.probe = Some((&w.state, range));
    let ctx = w.ctx(&fake, &smmu, &peers);
    reclaim(&ctx, range.start, range.size(), peer, TransferFlags { clear }).unwrap();
    let mut want = Vec::new();
    if clear {
        want.extend(expected_scrub(&replica, range, true));
    }
    want.extend(recorded(HOST_VMID, |rec| {
        replica
            .host
            .lock()
            .map(range, range.start, HOST_ATTRS, &mut *replica.frames.lock(), rec)
            .unwrap()
    }));
    assert_eq!(log.take(), want, "scrub, then map back; no peer table, no SMMU command");
    assert_eq!(fake.probe_violations.get(), 0);
    assert_eq!(fake.unmapped_accesses.get(), 0);
    assert_eq!(w.state.tracker().state_of(range), Ok(PageState::Host));
    w.check().unwrap();
}

#[test]
fn reclaim_without_clear() {
    run_reclaim(C_DSP, DSP, false, TransferKind::Donate);
}

#[test]
fn reclaim_with_clear_scrubs_before_the_host_maps() {
    run_reclaim(C_DSP, DSP, true, TransferKind::Lend);
}

#[test]
fn reclaim_of_a_block_given_away_in_pieces_merges_it_again() {
    run_reclaim(C_BIG, MODEM, true, TransferKind::Donate);
    let w = World::new();
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&NullCpu, &smmu, &peers);
    let before = w.host.lock().stats();
    let none = TransferFlags::default();
    let half = MemRange::new(C_BIG.start, C_BIG.start + SZ_2M / 2);
    for piece in [half, MemRange::new(half.end, C_BIG.end)] {
        donate(&ctx, piece.start, piece.size(), MODEM, none).unwrap();
        release(&ctx, piece.start, piece.size(), MODEM, none).unwrap();
    }
    assert_eq!(w.host.lock().translate(C_BIG.start), None);
    reclaim(&ctx, C_BIG.start, C_BIG.size(), MODEM, none).unwrap();
    assert_eq!(w.host.lock().stats(), before, "one block again, as at boot");
    w.check().unwrap();
}

/// RELEASE takes the range out of the peer's stage-2 (TLBIs under its VMID) before anything
/// else, and with CLEAR scrubs it only then, through the window.
#[test]
fn release_unmaps_the_peer_then_scrubs() {
    let w = World::new();
    let replica = World::new();
    let range = MemRange::new(C_DSP.start + PAGE_SIZE, C_DSP.end - PAGE_SIZE);
    for world in [&w, &replica] {
        let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
        let peers = world.peers();
        let ctx = world.ctx(&NullCpu, &smmu, &peers);
        lend(&ctx, range.start, range.size(), DSP, TransferFlags::default()).unwrap();
    }
    let log: Log = Rc::default();
    let fake = FakeCpu::on(&w, log.clone());
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    release(&ctx, range.start, range.size(), DSP, TransferFlags { clear: true }).unwrap();
    let got = log.take();
    let mut want = vec![Ev::Load(3)];
    want.extend(recorded(3, |rec| {
        replica.dsp.lock().unmap(range, &mut *replica.frames.lock(), rec).unwrap()
    }));
    // The peer's call: its stage-2 stays current (the window is warden's own stage-1).
    want.extend(expected_scrub(&replica, range, true).into_iter().map(|e| match e {
        Ev::Cpu { op, .. } => cpu(3, op),
        other => other,
    }));
    assert_eq!(got, want);
    // The peer's last TLBI and its completion come before warden's first clean.
    let last_peer_tlbi = rposition(&got, |e| *e == cpu(3, HwOp::TlbiVmalle1is));
    assert!(last_peer_tlbi < position(&got, is_civac));
    assert!(got.iter().all(|e| !matches!(e, Ev::Smmu { .. })));
    assert_eq!(fake.unmapped_accesses.get(), 0);
    assert_eq!(
        w.state.tracker().state_of(range),
        Ok(PageState::Lent { peer: DSP, released: true })
    );
    assert!(w.dsp.lock().translate(range.start).is_none());
    w.check().unwrap();
}

#[test]
fn bad_requests_get_their_error_and_change_nothing() {
    let w = World::new();
    let fake = FakeCpu::new(Rc::default());
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    let none = TransferFlags::default();
    donate(&ctx, C_MODEM.start, PAGE_SIZE, MODEM, none).unwrap();
    let before = w.snapshot();
    let cases: [(u64, u64, PeerId, HandoffError); 9] = [
        (C_MODEM.start, 0, MODEM, HandoffError::ZeroSize),
        (C_MODEM.start + 8, PAGE_SIZE, MODEM, HandoffError::Unaligned),
        (C_MODEM.start, 0x800, MODEM, HandoffError::Unaligned),
        (u64::MAX - 0xfff, 0x2000, MODEM, HandoffError::Overflow),
        (WARDEN.start, PAGE_SIZE, MODEM, HandoffError::NotInCarveout),
        (C_DSP.end - PAGE_SIZE, 2 * PAGE_SIZE, DSP, HandoffError::NotInCarveout),
        (C_MODEM.start, PAGE_SIZE, peer(9), HandoffError::UnknownPeer),
        (C_MODEM.start, PAGE_SIZE, DSP, HandoffError::WrongPeer),
        (C_MODEM.start, 2 * PAGE_SIZE, MODEM, HandoffError::NotHostOwned),
    ];
    for (base, size, peer, err) in cases {
        assert_eq!(donate(&ctx, base, size, peer, none), Err(err), "{base:#x}+{size:#x}");
        assert_eq!(lend(&ctx, base, size, peer, none), Err(err), "{base:#x}+{size:#x}");
        assert_eq!(w.snapshot(), before);
    }
    assert_eq!(
        reclaim(&ctx, C_MODEM.start + PAGE_SIZE, PAGE_SIZE, MODEM, none),
        Err(HandoffError::NotHeldByPeer)
    );
    assert_eq!(
        reclaim(&ctx, C_MODEM.start, PAGE_SIZE, DSP, none),
        Err(HandoffError::NotHeldByPeer)
    );
    assert_eq!(
        reclaim(&ctx, C_MODEM.start, PAGE_SIZE, MODEM, none),
        Err(HandoffError::PeerStillHolds)
    );
    assert_eq!(
        reclaim(&ctx, C_MODEM.start, 2 * PAGE_SIZE, MODEM, none),
        Err(HandoffError::NotHeldByPeer)
    );
    assert_eq!(
        release(&ctx, C_MODEM.start, PAGE_SIZE, DSP, TransferFlags::default()),
        Err(HandoffError::NotHeldByPeer)
    );
    assert_eq!(
        release(&ctx, C_MODEM.start, PAGE_SIZE, peer(7), TransferFlags::default()),
        Err(HandoffError::UnknownPeer)
    );
    assert_eq!(w.snapshot(), before);
    w.check().unwrap();
}

#[test]
fn failing_smmu_sync_keeps_the_range_the_hosts() {
    let w = World::new();
    let log: Log = Rc::default();
    let fake = FakeCpu::new(log.clone());
    let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: true });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    let before = w.snapshot();
    let got = donate(&ctx, C_DSP.start, C_DSP.size(), DSP, TransferFlags { clear: true });
    assert_eq!(got, Err(HandoffError::DmaSync(SYNC_FAILED)));
    assert_eq!(w.snapshot(), before);
    let ops = log.take();
    assert!(
        !ops.iter()
            .any(|e| matches!(e, Ev::Zero(_) | Ev::Load(_) | Ev::Cpu { op: HwOp::DcCivac(_), .. })),
        "nothing reaches the peer"
    );
    w.check().unwrap();
}

fn table_frames<F: crate::mm::pgtable::Format>(t: &Mutex<PageTable<F>>) -> Vec<u64> {
    let mut v = Vec::new();
    t.lock().for_each_table_frame(|pa| v.push(pa));
    v
}

/// A level-3 table the host's unmap empties (the rest of a 2 MiB block of carveout whose first
/// page was donated before) is freed, but a device may still walk it until the SMMU's
/// invalidation has completed: its frame must not be reused before that. Here the sync fails,
/// so the host's mapping comes back in another frame and the freed one is never used again.
#[test]
fn freed_host_tables_are_not_reused_before_the_smmu_sync() {
    let w = World::new();
    let peers = w.peers();
    let synced = Mutex::new(FakeSmmu { log: None, fail: false });
    let ctx = w.ctx(&NullCpu, &synced, &peers);
    donate(&ctx, C_BIG.start, PAGE_SIZE, MODEM, TransferFlags::default()).unwrap();
    let rest = MemRange::new(C_BIG.start + PAGE_SIZE, C_BIG.end);
    let smmu = Mutex::new(FakeSmmu { log: None, fail: true });
    let ctx = w.ctx(&NullCpu, &smmu, &peers);
    let before = table_frames(&w.host);
    let got = donate(&ctx, rest.start, rest.size(), MODEM, TransferFlags::default());
    assert_eq!(got, Err(HandoffError::DmaSync(SYNC_FAILED)));
    let after = table_frames(&w.host);
    let gone: Vec<u64> = before.iter().copied().filter(|pa| !after.contains(pa)).collect();
    let new: Vec<u64> = after.iter().copied().filter(|pa| !before.contains(pa)).collect();
    assert_eq!((gone.len(), new.len()), (1, 1), "C_BIG's table was freed and built again");
    assert_eq!(w.state.quarantined_frames(), 1);
    let everywhere: Vec<u64> =
        [table_frames(&w.modem), table_frames(&w.dsp), table_frames(&w.el2)].concat();
    assert!(!everywhere.contains(&gone[0]), "the freed table is nowhere");
    assert!(!w.state.spare_frames.lock().contains(&gone[0]), "nor kept for later");
    assert_eq!(w.state.tracker().state_of(rest), Ok(PageState::Host));
    w.check().unwrap();
    // With the sync completing, the frame is reused (only afterwards: the peer's tables are
    // built after the SMMU step).
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let ctx = w.ctx(&NullCpu, &smmu, &peers);
    donate(&ctx, rest.start, rest.size(), MODEM, TransferFlags::default()).unwrap();
    assert_eq!(w.state.quarantined_frames(), 1, "nothing more quarantined");
    w.check().unwrap();
}

#[test]
fn too_few_frames_refuses_before_touching_anything() {
    let w = World::new();
    // Every frame left is taken: nothing to reserve.
    let mut hoard = Vec::new();
    while let Some(pa) = w.frames.lock().alloc_zeroed(1) {
        hoard.push(pa);
    }
    let fake = FakeCpu::new(Rc::default());
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    let before = w.snapshot();
    let allocated = w.frames.lock().0.pool.allocated_pages();
    assert_eq!(
        donate(&ctx, C_MODEM.start, PAGE_SIZE, MODEM, TransferFlags::default()),
        Err(HandoffError::OutOfFrames)
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(w.frames.lock().0.pool.allocated_pages(), allocated);
    assert!(fake.log.borrow().is_empty());
}

#[test]
fn carveout_list_is_validated() {
    let mut t = OwnershipTracker::new();
    t.add(HOST_RAM, PageState::Host).unwrap();
    let c = |start, end| Carveout { range: MemRange::new(start, end), peer: MODEM };
    assert!(matches!(
        HandoffState::new(t.clone(), &[c(0x4030_0000, 0x4030_0800)]),
        Err(CarveoutError::BadRange(_))
    ));
    assert!(matches!(
        HandoffState::new(t.clone(), &[c(0x4030_0000, 0x4032_0000), c(0x4031_0000, 0x4033_0000)]),
        Err(CarveoutError::Overlap(..))
    ));
    assert!(matches!(
        HandoffState::new(t.clone(), &[c(0x1000, 0x2000)]),
        Err(CarveoutError::NotTracked(_))
    ));
    let s =
        HandoffState::new(t, &[c(0x4050_0000, 0x4051_0000), c(0x4030_0000, 0x4031_0000)]).unwrap();
    assert_eq!(s.carveouts().next().unwrap().range.start, 0x4030_0000);
}

// ---- property test ----

#[derive(Clone, Copy, Debug)]
enum Action {
    Donate,
    Lend,
    Release,
    Reclaim {
        clear: bool,
    },
    /// An access by the host (`None`) or a peer to `base`: it must translate exactly when the
    /// tracker says that agent may access the page (else it is a stage-2 fault).
    Access {
        peer: Option<PeerId>,
    },
}

/// One of the two CPUs of the property test: it remembers which stage-2 is current on it, so
/// the test can check every transfer leaves the host's loaded again.
struct VmidCpu {
    vmid: Cell<u16>,
}

impl HandoffCpu for VmidCpu {
    fn load_stage2(&self, vmid: u16, _: u64) {
        self.vmid.set(vmid);
    }
    fn zero(&self, _: MemRange) {}
}

#[derive(Clone, Copy, Debug)]
struct Step {
    action: Action,
    base: u64,
    size: u64,
    peer: PeerId,
    smmu_fails: bool,
    /// Target the range of the last successful request instead (so releases and reclaims
    /// match earlier transfers).
    reuse: bool,
    /// Which of the two CPUs makes the request.
    cpu: usize,
}

fn step() -> impl Strategy<Value = Step> {
    let action = prop_oneof![
        2 => Just(Action::Donate),
        2 => Just(Action::Lend),
        3 => Just(Action::Release),
        3 => any::<bool>().prop_map(|clear| Action::Reclaim { clear }),
        2 => prop_oneof![Just(None), Just(Some(MODEM)), Just(Some(DSP))]
            .prop_map(|peer| Action::Access { peer }),
    ];
    // Mostly page-aligned sub-ranges of a carveout, sometimes anything.
    let in_carveout = (0..3usize, 0..40u64, 1..40u64).prop_map(|(i, first, len)| {
        let c = CARVEOUTS[i].range;
        let pages = c.size() / PAGE_SIZE;
        let first = first % pages;
        let len = len.min(pages - first);
        (c.start + first * PAGE_SIZE, len * PAGE_SIZE)
    });
    let whole = (0..3usize).prop_map(|i| (CARVEOUTS[i].range.start, CARVEOUTS[i].range.size()));
    let wild = (WARDEN.start - 0x10000..HOST_RAM.end + 0x10000, 0..0x30000u64);
    let range =
        prop_oneof![6 => in_carveout, 3 => whole, 1 => wild, 1 => Just((u64::MAX - 0xfff, 0x2000))];
    let peer = prop_oneof![4 => Just(MODEM), 4 => Just(DSP), 1 => Just(peer(9))];
    (action, range, peer, prop::bool::weighted(0.1), prop::bool::weighted(0.75), 0..2usize)
        .prop_map(|(action, (base, size), peer, smmu_fails, reuse, cpu)| Step {
            action,
            base,
            size,
            peer,
            smmu_fails,
            reuse,
            cpu,
        })
}

fn apply(w: &World, cpu: &VmidCpu, s: &Step) -> Result<(), HandoffError> {
    let smmu = Mutex::new(FakeSmmu { log: None, fail: s.smmu_fails });
    let peers = w.peers();
    let ctx = w.ctx(cpu, &smmu, &peers);
    let flags = TransferFlags { clear: matches!(s.action, Action::Reclaim { clear: true }) };
    match s.action {
        Action::Donate => donate(&ctx, s.base, s.size, s.peer, flags),
        Action::Lend => lend(&ctx, s.base, s.size, s.peer, flags),
        Action::Release => release(&ctx, s.base, s.size, s.peer, TransferFlags::default()),
        Action::Reclaim { .. } => reclaim(&ctx, s.base, s.size, s.peer, flags),
        Action::Access { .. } => Ok(()),
    }
}

/// For [`Action::Access`]: whether the agent's stage-2 translates `addr` exactly when the
/// tracker allows it access.
fn access_matches_ownership(w: &World, addr: u64, peer: Option<PeerId>) -> Result<(), String> {
    let page = addr & !(PAGE_SIZE - 1);
    let Some(range) = MemRange::from_base_size(page, PAGE_SIZE) else { return Ok(()) };
    let (who, table) = match peer {
        None => (Accessor::Host, &w.host),
        Some(p) if p == MODEM => (Accessor::Peer(MODEM), &w.modem),
        Some(_) => (Accessor::Peer(DSP), &w.dsp),
    };
    let allowed = w.state.tracker().state_of(range).is_ok_and(|s| s.accessible_by(who));
    let translates = table.lock().translate(page).is_some();
    if allowed == translates {
        Ok(())
    } else {
        Err(format!("{who:?} access to {page:#x}: allowed {allowed}, translates {translates}"))
    }
}

proptest! {
    // 10 000 sequences of up to 9 requests each; runs in a few seconds.
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_transfers_keep_every_page_with_its_owner(steps in prop::collection::vec(step(), 1..10)) {
        let w = World::new();
        let cpus = [VmidCpu { vmid: Cell::new(HOST_VMID) }, VmidCpu { vmid: Cell::new(HOST_VMID) }];
        let peer_cpu = VmidCpu { vmid: Cell::new(2) };
        let mut last_ok: Option<(u64, u64, PeerId)> = None;
        for s in &steps {
            let mut s = *s;
            if let (true, Some((base, size, peer))) = (s.reuse, last_ok) {
                (s.base, s.size, s.peer) = (base, size, peer);
            }
            if let Action::Access { peer } = s.action
                && let Err(e) = access_matches_ownership(&w, s.base, peer)
            {
                prop_assert!(false, "{}", e);
            }
            let before = w.snapshot();
            let generation = w.state.tracker().generation();
            // A release is the peer's call, on the CPU it runs on, where its stage-2 is current
            // and stays so; everything else is the host's, whose stage-2 is current again after.
            let (cpu, vmid) = match s.action {
                Action::Release => {
                    let vmid = if s.peer == MODEM { 2 } else { 3 };
                    (&peer_cpu, vmid)
                }
                _ => (&cpus[s.cpu], HOST_VMID),
            };
            cpu.vmid.set(vmid);
            let result = apply(&w, cpu, &s);
            prop_assert_eq!(cpu.vmid.get(), vmid, "the caller's stage-2 is current again");
            if result.is_ok() {
                last_ok = Some((s.base, s.size, s.peer));
            }
            if result.is_err() {
                prop_assert_eq!(&w.snapshot(), &before, "error {:?} changed state", result);
            }
            // Every DONATE, LEND, RELEASE and RECLAIM that changed the map (a peer's release
            // included) bumped the generation, which forgets every range the vSMMU remembered.
            if w.snapshot().0 != before.0 {
                prop_assert_ne!(w.state.tracker().generation(), generation, "{:?} kept the generation", s);
            }
            if let Err(e) = w.check() {
                prop_assert!(false, "after {:?} -> {:?}: {}", s, result, e);
            }
        }
    }
}

#[test]
fn two_threads_hammer_different_and_same_carveouts() {
    let w = World::new();
    let rounds = 300;
    let worker = |carveouts: [(MemRange, PeerId); 2], seed: u64| {
        let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
        let peers = w.peers();
        let ctx = w.ctx(&NullCpu, &smmu, &peers);
        let mut ok = 0u32;
        let mut x = seed;
        for i in 0..rounds {
            let (c, peer) = carveouts[i % 2];
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let first = (x >> 33) % (c.size() / PAGE_SIZE);
            let len = 1 + (x >> 50) % (c.size() / PAGE_SIZE - first);
            let (base, size) = (c.start + first * PAGE_SIZE, len * PAGE_SIZE);
            let flags = TransferFlags { clear: x & 1 == 0 };
            if lend(&ctx, base, size, peer, flags).is_ok() {
                ok += 1;
            }
            // The other thread may have taken (part of) it meanwhile: errors are fine, but
            // each call is atomic, which `check` below confirms.
            let _ = release(&ctx, base, size, peer, TransferFlags::default());
            let _ = reclaim(&ctx, base, size, peer, flags);
        }
        ok
    };
    let (a, b) = std::thread::scope(|s| {
        // Thread A: modem's small carveout and the shared big one; thread B: DSP's and the
        // shared big one.
        let a = s.spawn(|| worker([(C_MODEM, MODEM), (C_BIG, MODEM)], 1));
        let b = s.spawn(|| worker([(C_DSP, DSP), (C_BIG, MODEM)], 2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a > 0 && b > 0);
    w.check().unwrap();
    // Everything was reclaimed in the end, or is still lent, or released but not reclaimed
    // (one thread reclaimed part of what the other had released, so the other's reclaim of
    // the whole failed), all consistent; reclaim the rest.
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&NullCpu, &smmu, &peers);
    for c in CARVEOUTS {
        let held: Vec<_> = w.state.tracker().extents_in(c.range).collect();
        for e in held {
            let (base, size) = (e.range.start, e.range.size());
            match e.state {
                PageState::Host => {}
                PageState::Lent { peer, released } | PageState::Donated { peer, released } => {
                    if !released {
                        release(&ctx, base, size, peer, TransferFlags::default()).unwrap();
                    }
                    reclaim(&ctx, base, size, peer, TransferFlags::default()).unwrap();
                }
                other => panic!("{other:?} left at {} after both threads finished", e.range),
            }
        }
    }
    assert_eq!(w.state.tracker().state_of(HOST_RAM), Ok(PageState::Host));
    w.check().unwrap();
}

/// The ABI layer over the sequences: every request's reply and every refusal's code.
mod service_calls {
    use super::*;
    use crate::handoff::service::{self, CarveoutDesc};
    use warden_abi::AbiError;
    use warden_abi::handoff::{
        Caller, CarveoutCount, CarveoutInfo, CarveoutState, Owner as AbiOwner, Policy, RangeInfo,
        RangeState, Request, Return, Target, Transfer, TransferDone,
    };

    const DESCS: [CarveoutDesc; 3] = [
        CarveoutDesc {
            range: C_MODEM,
            peer: MODEM,
            policy: Policy::Donate,
            clear_on_reclaim: false,
        },
        CarveoutDesc { range: C_DSP, peer: DSP, policy: Policy::Lend, clear_on_reclaim: true },
        CarveoutDesc { range: C_BIG, peer: MODEM, policy: Policy::Donate, clear_on_reclaim: false },
    ];

    struct Rig {
        w: World,
        log: Log,
    }

    impl Rig {
        fn new() -> Self {
            Self { w: World::new(), log: Rc::default() }
        }

        fn call(&self, caller: Caller, request: Request) -> Result<[u64; 8], AbiError> {
            let fake = FakeCpu::new(self.log.clone());
            let smmu = Mutex::new(FakeSmmu { log: Some(self.log.clone()), fail: false });
            let peers = self.w.peers();
            let ctx = self.w.ctx(&fake, &smmu, &peers);
            service::handle(&ctx, &DESCS, caller, &request)
        }

        fn host(&self, request: Request) -> Result<[u64; 8], AbiError> {
            self.call(Caller::Host, request)
        }

        fn query(&self, addr: u64) -> RangeInfo {
            RangeInfo::decode(&self.host(Request::RangeQuery { addr }).unwrap()).unwrap()
        }
    }

    fn range(base: u64, size: u64) -> Target {
        Target::Range { base, size }
    }

    fn donate(target: Target, peer: PeerId, clear: bool) -> Request {
        Request::Donate(Transfer { target, peer, clear })
    }

    fn lend(target: Target, peer: PeerId, clear: bool) -> Request {
        Request::Lend(Transfer { target, peer, clear })
    }

    fn reclaim(target: Target, clear: bool) -> Request {
        Request::Reclaim(Return { target, clear })
    }

    fn release(target: Target, clear: bool) -> Request {
        Request::Release(Return { target, clear })
    }

    /// A range shared by Qualcomm's assign_mem, seen through warden's own ABI: CARVEOUT_INFO
    /// and RANGE_QUERY report SHARE; DONATE/LEND of it are DENIED (not the host's alone),
    /// RECLAIM and the peer's RELEASE INVALID_PARAMETERS (nothing donated or lent); nothing
    /// changes.
    #[test]
    fn shared_ranges_through_warden_abi() {
        use crate::handoff::assign::{Holders, assign};
        let rig = Rig::new();
        {
            let fake = FakeCpu::new(rig.log.clone());
            let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
            let peers = rig.w.peers();
            let ctx = rig.w.ctx(&fake, &smmu, &peers);
            assign(&ctx, &DESCS, C_MODEM, Holders::HOST, Holders::shared(MODEM), &mut NoFirmware)
                .unwrap();
        }
        let info = CarveoutInfo::decode(&rig.host(Request::CarveoutInfo { index: 0 }).unwrap());
        assert_eq!(info.unwrap().state, CarveoutState::Uniform(RangeState::Shared(MODEM)));
        let q = rig.query(C_MODEM.start + 0x2000);
        assert_eq!(
            (q.base, q.size, q.state),
            (C_MODEM.start, C_MODEM.size(), RangeState::Shared(MODEM))
        );
        let before = rig.w.snapshot();
        let page = range(C_MODEM.start, PAGE_SIZE);
        assert_eq!(rig.host(donate(page, MODEM, false)), Err(AbiError::Denied));
        assert_eq!(rig.host(reclaim(page, false)), Err(AbiError::InvalidParameters));
        assert_eq!(
            rig.call(Caller::Peer(MODEM), release(page, false)),
            Err(AbiError::InvalidParameters)
        );
        assert!(rig.w.snapshot() == before);
        rig.w.check().unwrap();
    }

    #[test]
    fn queries_describe_the_carveouts() {
        let rig = Rig::new();
        let count = CarveoutCount::decode(&rig.host(Request::CarveoutCount).unwrap()).unwrap();
        assert_eq!(count.count, 3);
        let info = CarveoutInfo::decode(&rig.host(Request::CarveoutInfo { index: 1 }).unwrap());
        assert_eq!(
            info.unwrap(),
            CarveoutInfo {
                base: C_DSP.start,
                size: C_DSP.size(),
                peer: DSP,
                policy: Policy::Lend,
                clear_on_reclaim: true,
                state: CarveoutState::Uniform(RangeState::Host),
            }
        );
        assert_eq!(rig.host(Request::CarveoutInfo { index: 3 }), Err(AbiError::NoData));
        let q = rig.query(C_MODEM.start + 0x1234);
        assert_eq!(
            (q.base, q.size, q.state, q.carveout),
            (C_MODEM.start, C_MODEM.size(), RangeState::Host, 0)
        );
        assert_eq!(
            rig.host(Request::RangeQuery { addr: C_MODEM.end }),
            Err(AbiError::InvalidParameters)
        );
        // A peer may query too.
        assert!(rig.call(Caller::Peer(DSP), Request::CarveoutCount).is_ok());
    }

    #[test]
    fn donate_release_reclaim_through_the_abi() {
        let rig = Rig::new();
        let sub = range(C_MODEM.start + 0x3000, 0x5000);
        let done = rig.host(donate(sub, MODEM, false)).unwrap();
        assert_eq!(
            TransferDone::decode(&done).unwrap(),
            TransferDone { base: C_MODEM.start + 0x3000, size: 0x5000 }
        );
        let q = rig.query(C_MODEM.start + 0x4000);
        assert_eq!(
            (q.base, q.size, q.state),
            (C_MODEM.start + 0x3000, 0x5000, RangeState::Donated(MODEM))
        );
        assert_eq!(rig.query(C_MODEM.start).state, RangeState::Host);
        let info = CarveoutInfo::decode(&rig.host(Request::CarveoutInfo { index: 0 }).unwrap());
        assert_eq!(info.unwrap().state, CarveoutState::Mixed);
        // Donating twice, reclaiming before the release, releasing as the host.
        assert_eq!(rig.host(donate(sub, MODEM, false)), Err(AbiError::Denied));
        assert_eq!(rig.host(reclaim(sub, false)), Err(AbiError::PeerHolds));
        assert_eq!(rig.host(release(sub, false)), Err(AbiError::Denied));
        // Another peer cannot release it.
        assert_eq!(rig.call(Caller::Peer(DSP), release(sub, false)), Err(AbiError::Denied));
        assert!(rig.call(Caller::Peer(MODEM), release(sub, false)).is_ok());
        assert_eq!(
            rig.call(Caller::Peer(MODEM), release(sub, false)),
            Err(AbiError::InvalidParameters),
            "released twice"
        );
        assert_eq!(rig.query(C_MODEM.start + 0x3000).state, RangeState::PeerReleased(MODEM));
        // A peer may not reclaim or donate.
        assert_eq!(rig.call(Caller::Peer(MODEM), reclaim(sub, false)), Err(AbiError::Denied));
        assert_eq!(rig.call(Caller::Peer(MODEM), donate(sub, MODEM, false)), Err(AbiError::Denied));
        rig.log.take();
        assert!(rig.host(reclaim(sub, false)).is_ok());
        assert!(!rig.log.take().iter().any(|e| matches!(e, Ev::Zero(_))), "no CLEAR, no scrub");
        assert_eq!(rig.query(C_MODEM.start + 0x3000).state, RangeState::Host);
        assert_eq!(rig.query(C_MODEM.start).size, C_MODEM.size(), "merged again");
        // Reclaiming host memory.
        assert_eq!(rig.host(reclaim(sub, false)), Err(AbiError::InvalidParameters));
        rig.w.check().unwrap();
    }

    #[test]
    fn whole_carveout_by_index_and_clear_on_reclaim() {
        let rig = Rig::new();
        let whole = Target::Carveout(1);
        assert_eq!(rig.host(donate(whole, DSP, false)), Err(AbiError::Denied), "policy is lend");
        let done = TransferDone::decode(&rig.host(lend(whole, DSP, false)).unwrap()).unwrap();
        assert_eq!((done.base, done.size), (C_DSP.start, C_DSP.size()));
        assert_eq!(rig.query(C_DSP.start).state, RangeState::Lent(DSP));
        rig.call(Caller::Peer(DSP), release(whole, false)).unwrap();
        rig.log.take();
        rig.host(reclaim(whole, false)).unwrap();
        let log = rig.log.take();
        let zero = log.iter().position(|e| *e == Ev::Zero(C_DSP)).expect("clear-on-reclaim scrubs");
        let last_civac =
            log.iter().rposition(|e| matches!(e, Ev::Cpu { op: HwOp::DcCivac(_), .. })).unwrap();
        assert!(last_civac < zero, "clean+invalidate before the zeros");
        assert_eq!(
            rig.host(lend(Target::Carveout(3), DSP, false)),
            Err(AbiError::InvalidParameters)
        );
        rig.w.check().unwrap();
    }

    #[test]
    fn release_with_clear_scrubs_after_clean_invalidate() {
        let rig = Rig::new();
        let whole = Target::Carveout(0);
        rig.host(donate(whole, MODEM, false)).unwrap();
        rig.log.take();
        rig.call(Caller::Peer(MODEM), release(whole, true)).unwrap();
        let log = rig.log.take();
        // The peer's stage-2 loses the range (its VMID current) before warden's clean, the
        // zeros come after the clean, the window closes last.
        assert_eq!(log[0], Ev::Load(2));
        assert_eq!(log.iter().filter(|e| matches!(e, Ev::Load(_))).count(), 1);
        let peer_done = rposition(&log, |e| *e == cpu(2, HwOp::TlbiVmalle1is));
        let first_civac = position(&log, is_civac);
        let zero = position(&log, |e| *e == Ev::Zero(C_MODEM));
        let closed = rposition(&log, |e| matches!(e, Ev::Cpu { op: HwOp::TlbiVae2is(_), .. }));
        assert!(peer_done < first_civac && first_civac < zero && zero < closed);
        let civac = log.iter().filter(|e| is_civac(e)).count() as u64;
        assert_eq!(civac, C_MODEM.size() / LINE);
        assert_eq!(rig.query(C_MODEM.start).state, RangeState::PeerReleased(MODEM));
        rig.w.check().unwrap();
    }

    #[test]
    fn bad_requests_get_their_code_and_change_nothing() {
        let rig = Rig::new();
        rig.host(donate(range(C_BIG.start, PAGE_SIZE), MODEM, false)).unwrap();
        let before = rig.w.snapshot();
        let cases: [(Caller, Request, AbiError); 10] = [
            // Straddles the modem carveout's end.
            (
                Caller::Host,
                donate(range(C_MODEM.end - PAGE_SIZE, 2 * PAGE_SIZE), MODEM, false),
                AbiError::InvalidParameters,
            ),
            // Host RAM outside any carveout.
            (
                Caller::Host,
                donate(range(HOST_RAM.start, PAGE_SIZE), MODEM, false),
                AbiError::InvalidParameters,
            ),
            // Touches warden.
            (
                Caller::Host,
                donate(range(WARDEN.end - PAGE_SIZE, 2 * PAGE_SIZE), MODEM, false),
                AbiError::Denied,
            ),
            // Another peer's carveout, an unknown peer.
            (Caller::Host, donate(range(C_MODEM.start, PAGE_SIZE), DSP, false), AbiError::Denied),
            (
                Caller::Host,
                donate(range(C_MODEM.start, PAGE_SIZE), peer(9), false),
                AbiError::InvalidParameters,
            ),
            // Lend on a donate-only carveout.
            (Caller::Host, lend(range(C_MODEM.start, PAGE_SIZE), MODEM, false), AbiError::Denied),
            // Donating twice; reclaiming before the release; reclaiming host memory.
            (Caller::Host, donate(range(C_BIG.start, PAGE_SIZE), MODEM, false), AbiError::Denied),
            (Caller::Host, reclaim(range(C_BIG.start, PAGE_SIZE), true), AbiError::PeerHolds),
            (
                Caller::Host,
                reclaim(range(C_MODEM.start, PAGE_SIZE), false),
                AbiError::InvalidParameters,
            ),
            // A host-only call from a peer.
            (Caller::Peer(MODEM), reclaim(range(C_BIG.start, PAGE_SIZE), false), AbiError::Denied),
        ];
        for (caller, request, want) in cases {
            assert_eq!(rig.call(caller, request), Err(want), "{request:?}");
            assert!(rig.w.snapshot() == before, "{request:?} changed state");
        }
        assert_eq!(
            rig.call(Caller::Peer(MODEM), Request::ViolationCount),
            Err(AbiError::NotSupported),
            "the trap handler answers violation queries"
        );
    }

    /// Two checks fail at once: the answer is the earlier one of `docs/abi.md`'s order (4 peer
    /// exists, 5 warden's memory, 6 inside one carveout, 7 peer and policy, 8 in flight, 9
    /// state), whoever calls.
    #[test]
    fn two_failures_answer_the_earlier_check() {
        let rig = Rig::new();
        rig.host(donate(range(C_BIG.start, PAGE_SIZE), MODEM, false)).unwrap();
        // A run of the modem carveout in flight (a transfer on another CPU, frozen here).
        let in_flight = MemRange::from_base_size(C_MODEM.start + 4 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let handing_off = PageState::HandingOff { to: MODEM, kind: TransferKind::Donate };
        rig.w.state.tracker().transition(in_flight, PageState::Host, handing_off).unwrap();
        let flying = range(in_flight.start, PAGE_SIZE);
        let half_flying = range(in_flight.start - PAGE_SIZE, 2 * PAGE_SIZE);
        let before = rig.w.snapshot();
        let cases: [(&str, Caller, Request, AbiError); 8] = [
            (
                "4 before 5: unknown peer, warden's memory",
                Caller::Host,
                donate(range(WARDEN.start, PAGE_SIZE), peer(9), false),
                AbiError::InvalidParameters,
            ),
            (
                "5 before 6: warden's memory outside every carveout",
                Caller::Host,
                reclaim(range(WARDEN.end - PAGE_SIZE, 2 * PAGE_SIZE), false),
                AbiError::Denied,
            ),
            (
                "7 before 8: the wrong peer for a range in flight",
                Caller::Host,
                donate(flying, DSP, false),
                AbiError::Denied,
            ),
            (
                "7 before 8: the wrong policy for a range in flight",
                Caller::Host,
                lend(flying, MODEM, false),
                AbiError::Denied,
            ),
            (
                "7 before 8: RELEASE by another peer of a range in flight",
                Caller::Peer(DSP),
                release(flying, false),
                AbiError::Denied,
            ),
            (
                "8 before 9: DONATE of host and in-flight pages",
                Caller::Host,
                donate(half_flying, MODEM, false),
                AbiError::Busy,
            ),
            (
                "8 before 9: RECLAIM of host and in-flight pages",
                Caller::Host,
                reclaim(half_flying, false),
                AbiError::Busy,
            ),
            (
                "8 before 9: RELEASE of host and in-flight pages",
                Caller::Peer(MODEM),
                release(half_flying, true),
                AbiError::Busy,
            ),
        ];
        for (what, caller, request, want) in cases {
            assert_eq!(rig.call(caller, request), Err(want), "{what}");
            assert!(rig.w.snapshot() == before, "{what}: changed state");
        }
    }

    #[test]
    fn states_and_errors_map_onto_the_abi() {
        use crate::mm::ownership::TransferKind::{Donate, Lend};
        let cases = [
            (PageState::Host, Some(RangeState::Host)),
            (PageState::Warden, None),
            (PageState::HandingOff { to: DSP, kind: Donate }, Some(RangeState::Donating(DSP))),
            (PageState::HandingOff { to: DSP, kind: Lend }, Some(RangeState::Lending(DSP))),
            (PageState::Donated { peer: DSP, released: false }, Some(RangeState::Donated(DSP))),
            (PageState::Lent { peer: DSP, released: false }, Some(RangeState::Lent(DSP))),
            (PageState::Donated { peer: DSP, released: true }, Some(RangeState::PeerReleased(DSP))),
            (PageState::Lent { peer: DSP, released: true }, Some(RangeState::PeerReleased(DSP))),
            (PageState::Reclaiming { from: DSP, kind: Lend }, Some(RangeState::Reclaiming(DSP))),
            (PageState::Shared { peer: DSP }, Some(RangeState::Shared(DSP))),
            (PageState::Sharing { peer: DSP }, Some(RangeState::Sharing(DSP))),
            (PageState::Unsharing { peer: DSP }, Some(RangeState::Unsharing(DSP))),
        ];
        for (state, want) in cases {
            assert_eq!(service::range_state(state), want);
        }
        assert_eq!(service::abi_error(HandoffError::OutOfFrames), AbiError::NoMemory);
        assert_eq!(service::abi_error(HandoffError::PeerStillHolds), AbiError::PeerHolds);
        assert_eq!(service::abi_error(HandoffError::DmaSync(SYNC_FAILED)), AbiError::Aborted);
        let rig = Rig::new();
        rig.host(donate(range(C_MODEM.start, PAGE_SIZE), MODEM, false)).unwrap();
        let tracker = rig.w.state.tracker();
        assert_eq!(service::owner_at(&tracker, C_MODEM.start + 8), AbiOwner::Peer(MODEM));
        assert_eq!(service::owner_at(&tracker, C_MODEM.start + PAGE_SIZE), AbiOwner::Host);
        assert_eq!(service::owner_at(&tracker, WARDEN.start), AbiOwner::Warden);
        assert_eq!(service::owner_at(&tracker, 0x1000), AbiOwner::Unknown);
        assert_eq!(service::owner_at(&tracker, u64::MAX), AbiOwner::Unknown);
    }
}

/// A CPU that only records the profiling hooks.
struct PhaseCpu(RefCell<Vec<Option<Phase>>>);

impl HandoffCpu for PhaseCpu {
    fn load_stage2(&self, _: u16, _: u64) {}
    fn zero(&self, _: MemRange) {}
    fn phase_start(&self) {
        self.0.borrow_mut().push(None);
    }
    fn phase_end(&self, phase: Phase) {
        self.0.borrow_mut().push(Some(phase));
    }
}

#[test]
fn profiling_hooks_name_every_step_in_order() {
    use Phase::*;
    let w = World::new();
    let cpu = PhaseCpu(RefCell::new(Vec::new()));
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers = w.peers();
    let ctx = w.ctx(&cpu, &smmu, &peers);
    let clear = TransferFlags { clear: true };
    donate(&ctx, C_DSP.start, C_DSP.size(), DSP, clear).unwrap();
    let want = [
        Validate, Reserve, HostUnmap, DmaSync, El2Map, CacheClean, Zero, El2Unmap, PeerMap,
        Reserve, Commit,
    ];
    let mut expected: Vec<Option<Phase>> = vec![None];
    expected.extend(want.iter().map(|p| Some(*p)));
    assert_eq!(cpu.0.take(), expected);
    release(&ctx, C_DSP.start, C_DSP.size(), DSP, clear).unwrap();
    assert!(cpu.0.take().is_empty(), "a release is not profiled");
    reclaim(&ctx, C_DSP.start, C_DSP.size(), DSP, clear).unwrap();
    let want = [Validate, Reserve, El2Map, CacheClean, Zero, El2Unmap, HostMap, Reserve, Commit];
    let mut expected: Vec<Option<Phase>> = vec![None];
    expected.extend(want.iter().map(|p| Some(*p)));
    assert_eq!(cpu.0.take(), expected);
    assert!(Phase::ALL.iter().all(|p| !p.name().is_empty()));
}

/// Qualcomm's assign_mem on the tracker ([`super::assign`]): the sequences it runs, in order,
/// and its refusals.
mod assign_mem {
    use super::*;
    use crate::handoff::assign::{AssignError, AssignOutcome, Holders, assign};
    use crate::handoff::service::CarveoutDesc;
    use warden_abi::handoff::Policy;

    fn descs() -> [CarveoutDesc; 3] {
        let d = |c: Carveout, policy, clear_on_reclaim| CarveoutDesc {
            range: c.range,
            peer: c.peer,
            policy,
            clear_on_reclaim,
        };
        [
            d(CARVEOUTS[0], Policy::Donate, false),
            d(CARVEOUTS[1], Policy::Lend, false),
            d(CARVEOUTS[2], Policy::Lend, true),
        ]
    }

    fn run(
        w: &World,
        cpu: &FakeCpu<'_>,
        log: &Log,
        range: MemRange,
        from: Holders,
        to: Holders,
    ) -> Result<AssignOutcome, AssignError> {
        run_told(w, cpu, log, range, from, to, &mut NoFirmware)
    }

    fn run_told(
        w: &World,
        cpu: &FakeCpu<'_>,
        log: &Log,
        range: MemRange,
        from: Holders,
        to: Holders,
        firmware: &mut dyn Firmware,
    ) -> Result<AssignOutcome, AssignError> {
        let smmu = Mutex::new(FakeSmmu { log: Some(log.clone()), fail: false });
        let peers = w.peers();
        let ctx = w.ctx(cpu, &smmu, &peers);
        assign(&ctx, &descs(), range, from, to, firmware)
    }

    /// With SCM firmware below, HLOS → MSS tells it once the host can reach nothing: after
    /// the host's unmap (TLBIs) and the completed SMMU sync, before the clean and the peer's
    /// map. Taking it back tells it first, before anything is remapped.
    #[test]
    fn firmware_told_after_unmap_and_sync_and_first_on_the_way_back() {
        let w = World::new();
        let replica = World::new();
        let range = MemRange::new(C_MODEM.start, C_MODEM.start + 2 * PAGE_SIZE);
        let log: Log = Rc::default();
        let fake = FakeCpu::on(&w, log.clone());
        let mut tz = FakeFirmware { log: log.clone(), answer: Ok(()) };
        let (host, modem) = (Holders::HOST, Holders::peer(MODEM));
        let got = run_told(&w, &fake, &log, range, host, modem, &mut tz);
        assert_eq!(got, Ok(AssignOutcome::Exclusive(MODEM, TransferKind::Donate)));
        let mut want = expected_give(&replica, range, MODEM, 2, false);
        let synced = want.iter().position(|e| matches!(e, Ev::Smmu { .. })).unwrap();
        want.insert(synced + 1, Ev::FirmwareAgree);
        let got = log.take();
        assert_eq!(got, want);
        // The host's unmap with its TLBIs came before.
        assert!(
            got[..synced].iter().any(|e| matches!(e, Ev::Cpu { op: HwOp::TlbiIpas2e1is(_), .. }))
        );
        w.check().unwrap();
        let got = run_told(&w, &fake, &log, range, modem, host, &mut tz);
        assert_eq!(got, Ok(AssignOutcome::TakenBack { from: MODEM, scrubbed: true }));
        let got = log.take();
        assert_eq!(got[0], Ev::FirmwareAgree, "{got:?}");
        assert_eq!(got.iter().filter(|e| **e == Ev::FirmwareAgree).count(), 1);
        assert!(!got.contains(&Ev::FirmwareUndo));
        assert_eq!(w.state.tracker().state_of(range), Ok(PageState::Host));
        w.check().unwrap();
    }

    /// The firmware refuses HLOS → MSS: the host's mapping comes back (no clean, no peer map),
    /// the tracker says Host, tables as before; its status is the error.
    #[test]
    fn firmware_refusal_rolls_the_exclusive_assign_back() {
        let w = World::new();
        let replica = World::new();
        let range = MemRange::new(C_MODEM.start, C_MODEM.start + PAGE_SIZE);
        let before = w.snapshot();
        let log: Log = Rc::default();
        let fake = FakeCpu::on(&w, log.clone());
        let mut tz = FakeFirmware { log: log.clone(), answer: Err(-1) };
        let got = run_told(&w, &fake, &log, range, Holders::HOST, Holders::peer(MODEM), &mut tz);
        assert_eq!(got, Err(AssignError::FirmwareRefused(-1)));
        let mut want = recorded(HOST_VMID, |rec| {
            replica.host.lock().unmap(range, &mut *replica.frames.lock(), rec).unwrap()
        });
        want.push(Ev::Smmu { vmid: HOST_VMID, range });
        want.push(Ev::FirmwareAgree);
        want.extend(recorded(HOST_VMID, |rec| {
            replica
                .host
                .lock()
                .map(range, range.start, HOST_ATTRS, &mut *replica.frames.lock(), rec)
                .unwrap()
        }));
        assert_eq!(log.take(), want);
        assert_eq!(w.snapshot(), before);
        w.check().unwrap();
    }

    /// Refusals on the way back, and of share and unshare: the firmware is asked first, so
    /// nothing is unmapped, cleaned or remapped, and the holders stay.
    #[test]
    fn firmware_refusal_first_changes_nothing() {
        let w = World::new();
        let log: Log = Rc::default();
        let fake = FakeCpu::on(&w, log.clone());
        let exclusive = MemRange::new(C_MODEM.start, C_MODEM.start + PAGE_SIZE);
        let shared = MemRange::new(C_BIG.start, C_BIG.start + PAGE_SIZE);
        let (host, modem, both) = (Holders::HOST, Holders::peer(MODEM), Holders::shared(MODEM));
        run(&w, &fake, &log, exclusive, host, modem).unwrap();
        run(&w, &fake, &log, shared, host, both).unwrap();
        let before = w.snapshot();
        log.take();
        let mut tz = FakeFirmware { log: log.clone(), answer: Err(-3) };
        for (range, from, to) in [(exclusive, modem, host), (shared, both, host)] {
            let got = run_told(&w, &fake, &log, range, from, to, &mut tz);
            assert_eq!(got, Err(AssignError::FirmwareRefused(-3)), "{from:?} -> {to:?}");
            assert_eq!(log.take(), [Ev::FirmwareAgree], "{from:?} -> {to:?}");
            assert_eq!(w.snapshot(), before);
        }
        let fresh = MemRange::new(C_BIG.start + PAGE_SIZE, C_BIG.start + 2 * PAGE_SIZE);
        let got = run_told(&w, &fake, &log, fresh, host, both, &mut tz);
        assert_eq!(got, Err(AssignError::FirmwareRefused(-3)));
        assert_eq!(log.take(), [Ev::FirmwareAgree]);
        assert_eq!(w.snapshot(), before);
        // Agreeing, share tells it before the clean and the peer's map.
        let mut tz = FakeFirmware { log: log.clone(), answer: Ok(()) };
        run_told(&w, &fake, &log, fresh, host, both, &mut tz).unwrap();
        assert_eq!(log.take()[0], Ev::FirmwareAgree);
        w.check().unwrap();
    }

    /// The peer's map of `range` (its VMID current, then the host's again).
    fn expected_peer_map(replica: &World, range: MemRange) -> Vec<Ev> {
        let mut v = vec![Ev::Load(2)];
        v.extend(recorded(2, |rec| {
            replica
                .modem
                .lock()
                .map(range, range.start, PEER_ATTRS, &mut *replica.frames.lock(), rec)
                .unwrap()
        }));
        v.push(Ev::Load(HOST_VMID));
        v
    }

    fn expected_peer_unmap(replica: &World, range: MemRange) -> Vec<Ev> {
        let mut v = vec![Ev::Load(2)];
        v.extend(recorded(2, |rec| {
            replica.modem.lock().unmap(range, &mut *replica.frames.lock(), rec).unwrap()
        }));
        v.push(Ev::Load(HOST_VMID));
        v
    }

    /// rmtfs_mem's probe and remove: HLOS → HLOS + MSS → HLOS. Share: the window cleans the
    /// host's lines to memory, then the peer maps; the host keeps its mapping, no SMMU step.
    /// Unshare: the peer's mapping goes (TLBIs under its VMID), then the clean.
    #[test]
    fn share_then_unshare_in_order() {
        let w = World::new();
        let replica = World::new();
        let range = MemRange::new(C_BIG.start, C_BIG.start + 4 * PAGE_SIZE);
        let log: Log = Rc::default();
        let mut fake = FakeCpu::on(&w, log.clone());
        fake.probe = Some((&w.state, range));
        let generation = w.state.tracker().generation();
        let got = run(&w, &fake, &log, range, Holders::HOST, Holders::shared(MODEM));
        assert_eq!(got, Ok(AssignOutcome::Shared(MODEM)));
        assert_ne!(w.state.tracker().generation(), generation, "a share bumps the generation");
        let generation = w.state.tracker().generation();
        let mut want = expected_scrub(&replica, range, false);
        want.extend(expected_peer_map(&replica, range));
        assert_eq!(log.take(), want);
        assert_eq!(fake.probe_violations.get(), 0, "in flight (Sharing) throughout");
        assert_eq!(w.state.tracker().state_of(range), Ok(PageState::Shared { peer: MODEM }));
        assert!(w.host.lock().translate(range.start).is_some(), "the host keeps it");
        assert!(w.modem.lock().translate(range.start).is_some(), "the peer has it");
        w.check().unwrap();

        let got = run(&w, &fake, &log, range, Holders::shared(MODEM), Holders::HOST);
        assert_eq!(got, Ok(AssignOutcome::Unshared(MODEM)));
        assert_ne!(w.state.tracker().generation(), generation, "an unshare bumps it");
        let mut want = expected_peer_unmap(&replica, range);
        want.extend(expected_scrub(&replica, range, false));
        assert_eq!(log.take(), want);
        assert_eq!(fake.probe_violations.get(), 0, "in flight (Unsharing) throughout");
        assert_eq!(w.state.tracker().state_of(range), Ok(PageState::Host));
        assert!(w.modem.lock().translate(range.start).is_none());
        assert_eq!(fake.unmapped_accesses.get(), 0);
        w.check().unwrap();
    }

    /// HLOS → MSS is the carveout's DONATE (same sequence, same log); MSS → HLOS takes it
    /// back without the peer's RELEASE: the peer's mapping goes first, then the scrub (a
    /// donated range is always scrubbed), then the host maps.
    #[test]
    fn exclusive_assign_is_donate_and_back_scrubs() {
        let w = World::new();
        let replica = World::new();
        let range = MemRange::new(C_MODEM.start, C_MODEM.start + PAGE_SIZE);
        let log: Log = Rc::default();
        let fake = FakeCpu::on(&w, log.clone());
        let generation = w.state.tracker().generation();
        let got = run(&w, &fake, &log, range, Holders::HOST, Holders::peer(MODEM));
        assert_eq!(got, Ok(AssignOutcome::Exclusive(MODEM, TransferKind::Donate)));
        assert_ne!(w.state.tracker().generation(), generation, "an SCM assign bumps it");
        assert_eq!(log.take(), expected_give(&replica, range, MODEM, 2, false));
        assert_eq!(
            w.state.tracker().state_of(range),
            Ok(PageState::Donated { peer: MODEM, released: false })
        );
        w.check().unwrap();
        {
            let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
            let peers = replica.peers();
            let ctx = replica.ctx(&NullCpu, &smmu, &peers);
            donate(&ctx, range.start, range.size(), MODEM, TransferFlags::default()).unwrap();
        }
        let generation = w.state.tracker().generation();
        let got = run(&w, &fake, &log, range, Holders::peer(MODEM), Holders::HOST);
        assert_eq!(got, Ok(AssignOutcome::TakenBack { from: MODEM, scrubbed: true }));
        assert_ne!(w.state.tracker().generation(), generation, "taking it back bumps it");
        let got = log.take();
        let mut want = expected_peer_unmap(&replica, range);
        want.extend(expected_scrub(&replica, range, true));
        want.extend(recorded(HOST_VMID, |rec| {
            replica
                .host
                .lock()
                .map(range, range.start, HOST_ATTRS, &mut *replica.frames.lock(), rec)
                .unwrap()
        }));
        assert_eq!(got, want);
        assert_eq!(w.state.tracker().state_of(range), Ok(PageState::Host));
        assert_eq!(fake.unmapped_accesses.get(), 0);
        w.check().unwrap();
    }

    /// A lend-policy carveout without clear-on-reclaim is lent, and comes back unscrubbed.
    #[test]
    fn exclusive_assign_of_a_lend_carveout() {
        let w = World::new();
        let range = MemRange::new(C_DSP.start, C_DSP.start + 2 * PAGE_SIZE);
        let log: Log = Rc::default();
        let fake = FakeCpu::on(&w, log.clone());
        let got = run(&w, &fake, &log, range, Holders::HOST, Holders::peer(DSP));
        assert_eq!(got, Ok(AssignOutcome::Exclusive(DSP, TransferKind::Lend)));
        let got = run(&w, &fake, &log, range, Holders::peer(DSP), Holders::HOST);
        assert_eq!(got, Ok(AssignOutcome::TakenBack { from: DSP, scrubbed: false }));
        assert!(!log.take().iter().any(|e| matches!(e, Ev::Zero(_))));
        w.check().unwrap();
    }

    #[test]
    fn refusals_change_nothing() {
        let w = World::new();
        let log: Log = Rc::default();
        let fake = FakeCpu::new(log.clone());
        let page = |base: u64| MemRange::new(base, base + PAGE_SIZE);
        let shared = page(C_BIG.start);
        run(&w, &fake, &log, shared, Holders::HOST, Holders::shared(MODEM)).unwrap();
        let before = w.snapshot();
        log.take();
        let (host, modem, dsp) = (Holders::HOST, Holders::peer(MODEM), Holders::peer(DSP));
        let cases = [
            (page(WARDEN.start), host, modem, AssignError::TouchesWarden),
            (
                MemRange::new(WARDEN.end - PAGE_SIZE, C_MODEM.end),
                host,
                modem,
                AssignError::TouchesWarden,
            ),
            (page(HOST_RAM.start), host, modem, AssignError::NotInCarveout),
            (
                MemRange::new(C_DSP.end - PAGE_SIZE, C_DSP.end + PAGE_SIZE),
                host,
                dsp,
                AssignError::NotInCarveout,
            ),
            (MemRange::new(C_MODEM.start, C_DSP.end), host, modem, AssignError::NotInCarveout),
            (page(C_MODEM.start), host, Holders::peer(peer(9)), AssignError::UnknownPeer),
            (page(C_MODEM.start), host, dsp, AssignError::WrongPeer),
            (page(C_MODEM.start), modem, host, AssignError::SourceMismatch),
            (page(C_MODEM.start), Holders::shared(MODEM), host, AssignError::SourceMismatch),
            (
                MemRange::new(C_BIG.start, C_BIG.start + 2 * PAGE_SIZE),
                host,
                modem,
                AssignError::SourceMismatch,
            ),
            (shared, Holders::shared(MODEM), modem, AssignError::Unmediated),
            (MemRange::new(C_MODEM.start, C_MODEM.start), host, modem, AssignError::BadRange),
        ];
        for (range, from, to, err) in cases {
            assert_eq!(run(&w, &fake, &log, range, from, to), Err(err), "{range} {from:?} {to:?}");
            assert_eq!(w.snapshot(), before, "{err:?}");
        }
        assert_eq!(
            run(&w, &fake, &log, shared, Holders::shared(MODEM), Holders::shared(MODEM)),
            Ok(AssignOutcome::Unchanged)
        );
        // In flight: BUSY.
        w.state
            .tracker()
            .transition(page(C_MODEM.start), PageState::Host, PageState::Sharing { peer: MODEM })
            .unwrap();
        assert_eq!(run(&w, &fake, &log, page(C_MODEM.start), host, modem), Err(AssignError::Busy));
        w.state
            .tracker()
            .transition(page(C_MODEM.start), PageState::Sharing { peer: MODEM }, PageState::Host)
            .unwrap();
        assert!(log.take().is_empty(), "no hardware operation for a refusal");
        assert_eq!(w.snapshot(), before);
        w.check().unwrap();
    }

    /// No frames for the sequence: NO_MEMORY, nothing changed.
    #[test]
    fn out_of_frames_is_no_memory_and_changes_nothing() {
        let w = World::new();
        let mut hoard = Vec::new();
        while let Some(pa) = w.frames.lock().alloc_zeroed(1) {
            hoard.push(pa);
        }
        let log: Log = Rc::default();
        let fake = FakeCpu::new(log.clone());
        let before = w.snapshot();
        let range = MemRange::new(C_BIG.start, C_BIG.start + PAGE_SIZE);
        for to in [Holders::shared(MODEM), Holders::peer(MODEM)] {
            assert_eq!(run(&w, &fake, &log, range, Holders::HOST, to), Err(AssignError::NoMemory));
            assert_eq!(w.snapshot(), before);
        }
        assert!(log.take().is_empty());
    }
}

/// The run-time frame reserve checked at boot (`crate::mm::footprint`) covers what transfers
/// really take, on the bench's shape: 1 GiB of RAM and a 256 MiB carveout. Handed over whole
/// (before transfers went by blocks, that alone reserved 268 frames where the boot kept 194),
/// then fragmented as badly as a host can: one page of every 2 MiB block donated, so both the
/// host's and the peer's stage 2 need a last-level table below every block.
#[test]
fn the_run_time_reserve_covers_what_transfers_really_take() {
    reserve_covers_transfers_with(crate::mm::LAYOUT);
}

/// The same with DB410c's layout: one carveout and spares of one transfer's worth, so the
/// reserve counts the larger of the spares and the transfer in flight, not their sum.
#[test]
fn the_run_time_reserve_covers_transfers_with_one_transfer_of_spares() {
    let db410c = crate::mm::link_layout::link_layout("apq8016-sbc").unwrap();
    assert!(db410c.spare_frames < crate::mm::LAYOUT.spare_frames);
    reserve_covers_transfers_with(db410c);
}

fn reserve_covers_transfers_with(link: crate::mm::link_layout::LinkLayout) {
    const RAM_1G: MemRange = MemRange::new(0x4000_0000, 0x8000_0000);
    const CARVE: MemRange = MemRange::new(0x5000_0000, 0x6000_0000);
    let mut frames = SendFrames(HeapFrames::new(1024));
    let spec = HostStage2Spec {
        ram: &[RAM_1G],
        devices: &[],
        holes: &[WARDEN],
        split: &[CARVE],
        pa_range_bits: 40,
        vmid16: false,
    };
    let host = build_host_stage2(&spec, &mut frames, &NullCpu).unwrap().table;
    let guards = [MemRange::new(0x4010_0000, 0x4010_1000)];
    let plan = El2Plan {
        image: IMAGE,
        guards: &guards,
        ram: &[RAM_1G],
        excluded: &[CARVE],
        devices: &[UART],
    };
    let mut regions = Vec::new();
    warden_regions(&plan, |r, a| regions.push((r, a)));
    let el2 = build_el2_identity_map(&regions, 32, 40, &mut frames, &NullCpu).unwrap().table;
    let modem = PageTable::<Stage2>::new(layout(), &mut frames).unwrap();
    let mut tracker = OwnershipTracker::new();
    tracker.add(WARDEN, PageState::Warden).unwrap();
    tracker.add(MemRange::new(WARDEN.end, RAM_1G.end), PageState::Host).unwrap();
    let mut state = HandoffState::new(tracker, &[Carveout { range: CARVE, peer: MODEM }]).unwrap();
    state.set_spare_frames(link.spare_frames);
    let after_boot = frames.0.pool.allocated_pages();
    let (frames, host, modem, el2) =
        (Mutex::new(frames), Mutex::new(host), Mutex::new(modem), Mutex::new(el2));
    let smmu = Mutex::new(FakeSmmu { log: None, fail: false });
    let peers =
        [PeerRef { id: MODEM, stage2: Stage2Ref { vmid: 2, table: &modem, attrs: PEER_ATTRS } }];
    let ctx = HandoffCtx {
        cpu: &NullCpu,
        smmu: &smmu,
        frames: &frames,
        host: Stage2Ref { vmid: HOST_VMID, table: &host, attrs: HOST_ATTRS },
        peers: &peers,
        state: &state,
        el2: &el2,
    };
    let none = TransferFlags::default();
    let clear = TransferFlags { clear: true };
    donate(&ctx, CARVE.start, CARVE.size(), MODEM, clear).unwrap();
    release(&ctx, CARVE.start, CARVE.size(), MODEM, none).unwrap();
    reclaim(&ctx, CARVE.start, CARVE.size(), MODEM, clear).unwrap();
    let whole = frames.lock().0.pool.peak_pages() - after_boot;
    for block in (CARVE.start..CARVE.end).step_by(SZ_2M as usize) {
        donate(&ctx, block + PAGE_SIZE, PAGE_SIZE, MODEM, none).unwrap();
    }
    let peak = frames.lock().0.pool.peak_pages() - after_boot;
    // The handoffs' share of the reserve (the rest is the virtual SMMU's and the ITS's).
    let reserve = crate::mm::footprint::runtime_frame_reserve(&link, [CARVE]) - link.runtime_frames;
    assert!(
        peak <= reserve,
        "the transfers took {peak} frames after boot, the reserve is {reserve}"
    );
    // Whole blocks cost a few tables; the fragmented carveout two tables per 2 MiB.
    assert!(whole <= 32, "a whole-carveout transfer took {whole} frames");
    assert!(peak >= 2 * 128, "fragmented: {peak}");
    assert_eq!(host.lock().translate(CARVE.start + PAGE_SIZE), None);
    assert_eq!(host.lock().translate(CARVE.start).map(|t| t.level), Some(3));
}

/// The real MMU-500 back end (on its register model) as the handoff's SMMU, logging into the
/// shared log and noting how many TLB entries of the host's VMID the model still holds once
/// the invalidation returned (live or invalidated but not yet synced away).
struct Mmu500OnModel<'a> {
    backend: crate::smmu::mmu500::Mmu500Backend<&'a crate::smmu::mmu500::model::Mmu500Model>,
    model: &'a crate::smmu::mmu500::model::Mmu500Model,
    log: Log,
    left_after: Vec<usize>,
}

impl DmaStage2 for Mmu500OnModel<'_> {
    fn invalidate_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError> {
        let done = self.backend.invalidate_ipa_range(vmid, range);
        self.log.borrow_mut().push(Ev::Smmu { vmid, range });
        self.left_after.push(self.model.cached(vmid));
        done
    }
}

/// G1 on a Snapdragon board: a donation while a host device translates through a live nested
/// context bank (the host's stage 1 over warden's stage-2 bank, with a TLB entry cached)
/// invalidates the host VMID on the MMU-500 (TLBIVMID + TLBGSYNC, completed) after the host
/// stage-2 unmap and before the first clean, and the nested bank's entry is gone by then.
#[test]
fn a_donation_with_a_live_nested_mmu500_bank_invalidates_it_before_the_clean() {
    use crate::smmu::S2Config;
    use crate::smmu::backend::{NestedBackend, RealSte};
    use crate::smmu::mmu500::model::{Mmu500Model, ModelConfig, Route};
    use crate::smmu::mmu500::{Mmu500Backend, Mmu500Config, StreamMatch, cd_keys};
    const SID: u32 = 0x10;
    let model = Mmu500Model::new(ModelConfig::QCOM);
    let config = Mmu500Config {
        host_streams: vec![StreamMatch::exact(SID)],
        s2: S2Config { vtcr: 24 | (2 << 16), root_pa: 0x4010_0000, vmid: HOST_VMID },
        arena: cd_keys(1),
        initial: RealSte::Stage2Only,
        poll_limit: 8,
    };
    let mut backend = Mmu500Backend::init(&model, config.clone()).unwrap();
    // A shadow CD as the engine writes it (V, AArch64, T0SZ 25, ASID 5, tables at 0x4100_0000).
    let mut cd = [0u64; crate::smmu::virt::cd::CD_WORDS];
    cd[0] = 25 | (1 << 31) | (1 << 41) | (5 << 48);
    cd[1] = 0x4100_0000;
    let slot = config.arena.ipa;
    backend.write_cd(slot, &cd).unwrap();
    backend.install_ste(SID, RealSte::Nested { cd_ipa: slot }).unwrap();
    backend.sync().unwrap();
    let (route, _) = model.dma(SID);
    assert!(
        matches!(
            route,
            Route::Translate { s1_ttbr0: Some(_), s2_root: Some(_), vmid: HOST_VMID, .. }
        ),
        "{route:?}"
    );
    assert_eq!(model.cached(HOST_VMID), 1, "the nested bank's walk is in the TLB");

    let w = World::new();
    let log: Log = Rc::default();
    let fake = FakeCpu::on(&w, log.clone());
    let smmu =
        Mutex::new(Mmu500OnModel { backend, model: &model, log: log.clone(), left_after: vec![] });
    let peers = w.peers();
    let ctx = w.ctx(&fake, &smmu, &peers);
    donate(&ctx, C_MODEM.start, C_MODEM.size(), MODEM, TransferFlags { clear: false }).unwrap();
    let got = log.take();
    let smmu_at = position(&got, |e| matches!(e, Ev::Smmu { vmid: HOST_VMID, .. }));
    let first_unmap_tlbi =
        position(&got, |e| matches!(e, Ev::Cpu { vmid: HOST_VMID, op: HwOp::TlbiIpas2e1is(_) }));
    let first_clean = position(&got, is_civac);
    assert!(first_unmap_tlbi < smmu_at && smmu_at < first_clean, "{got:?}");
    assert_eq!(smmu.lock().left_after, [0], "no entry of the nested bank survives to the clean");
    assert_eq!(
        w.state.tracker().state_of(C_MODEM),
        Ok(PageState::Donated { peer: MODEM, released: false })
    );
}
