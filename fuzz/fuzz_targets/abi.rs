//! warden's carveout calls end to end below the trap layer: the registers of a call from the
//! host or a peer (any function ID near warden's, any arguments) decoded by `warden_abi`'s
//! `Request::decode` and served by `handoff::service::handle` over a real ownership tracker,
//! real page tables (host stage-2 split at boot, two peers' stage-2, warden's own EL2
//! stage-1 with its clean/zero window) and fake hardware. After every call the oracles of G1
//! hold: the tracker is consistent and covers the same memory; the host's stage-2 maps exactly
//! the pages the host may access, each peer's exactly what it holds, identity-mapped; warden's
//! EL2 map holds no carveout or `no-map` page (the window is closed between calls).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use spin::Mutex;
use warden::dt::Policy;
use warden::handoff::service::{self, CarveoutDesc};
use warden::handoff::{DmaStage2, HandoffCpu, HandoffCtx, HandoffState, PeerRef, Stage2Ref};
use warden::mm::el2::{El2Plan, WardenImage, warden_regions};
use warden::mm::ownership::{Accessor, OwnershipTracker, PageState, PeerId};
use warden::mm::stage2::HOST_RAM_ATTRS;
use warden::mm::{
    Attrs, FrameAllocator, HostStage2Spec, MemRange, PageTable, Perms, PoolFrames, Stage2,
    TableLayout, build_el2_identity_map, build_host_stage2,
};
use warden::smmu::SmmuError;
use warden_abi::handoff::{Caller, Request};

const RAM: MemRange = MemRange::new(0x4000_0000, 0x4100_0000);
const WARDEN: MemRange = MemRange::new(0x4000_0000, 0x4020_0000);
const C_MODEM: MemRange = MemRange::new(0x4030_0000, 0x4034_0000);
/// Across a 2 MiB boundary.
const C_DSP: MemRange = MemRange::new(0x403f_0000, 0x4041_0000);
const NO_MAP: MemRange = MemRange::new(0x4080_0000, 0x4081_0000);
const UART: MemRange = MemRange::new(0x0900_0000, 0x0900_1000);
const PEER_ATTRS: Attrs = Attrs::normal(Perms::RW);

/// No hardware: every barrier, TLBI and cache operation does nothing (the tables are what the
/// oracles read).
struct NullCpu;

warden::no_op_maintenance!(NullCpu; line_size = 64);

impl HandoffCpu for NullCpu {
    fn load_stage2(&self, _: u16, _: u64) {}
    fn zero(&self, _: MemRange) {}
}

/// The SMMU: succeeds unless told to fail (then the transfer must roll back).
struct FakeDma {
    fail: bool,
}

impl DmaStage2 for FakeDma {
    fn invalidate_ipa_range(&mut self, _: u16, _: MemRange) -> Result<(), SmmuError> {
        if self.fail { Err(SmmuError::BadConfig) } else { Ok(()) }
    }
}

/// A frame pool over a heap buffer (page tables are written through their addresses). The
/// buffer is allocated once and reused by every input (frames are zeroed when allocated): a
/// fresh allocation per input cost a third of the time in page faults and page clearing.
struct HeapPool {
    pool: PoolFrames,
}

/// Pages in the pool buffer.
const POOL_PAGES: usize = 128;
/// The pool buffer's address, allocated on first use and never freed.
static POOL_BUFFER: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
/// Set while a `HeapPool` owns the buffer (inputs run one at a time; this makes sure).
static POOL_IN_USE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl HeapPool {
    fn new() -> Self {
        let was_in_use = POOL_IN_USE.swap(true, std::sync::atomic::Ordering::Acquire);
        assert!(!was_in_use, "one HeapPool at a time");
        let base = *POOL_BUFFER.get_or_init(|| {
            let layout = std::alloc::Layout::from_size_align(POOL_PAGES * 4096, 2 << 20).unwrap();
            // SAFETY: a non-zero size.
            let base = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!base.is_null());
            base as usize
        });
        let range = MemRange::new(base as u64, (base + POOL_PAGES * 4096) as u64);
        // SAFETY: the buffer is never freed, and `POOL_IN_USE` makes it this pool's alone until
        // `drop`.
        let pool = unsafe { PoolFrames::new(range) }.unwrap();
        Self { pool }
    }
}

impl Drop for HeapPool {
    fn drop(&mut self) {
        POOL_IN_USE.store(false, std::sync::atomic::Ordering::Release);
    }
}

// SAFETY: delegates to `PoolFrames` over the owned buffer.
unsafe impl FrameAllocator for HeapPool {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        self.pool.alloc_zeroed(pages)
    }
    fn free(&mut self, pa: u64, pages: usize) {
        self.pool.free(pa, pages)
    }
}

/// A register value, biased towards what the calls take: offsets into the carveouts, sizes in
/// pages, small numbers (indexes, peer IDs, flags), or anything.
#[derive(Arbitrary, Debug)]
enum Arg {
    Modem(u16),
    Dsp(u16),
    Pages(u8),
    Small(u8),
    Raw(u64),
}

impl Arg {
    fn value(&self) -> u64 {
        match *self {
            Arg::Modem(off) => C_MODEM.start + (u64::from(off) << 8),
            Arg::Dsp(off) => C_DSP.start + (u64::from(off) << 8),
            Arg::Pages(n) => u64::from(n) << 12,
            Arg::Small(n) => u64::from(n),
            Arg::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Call {
    /// 0: host; 1: the modem; 2: the DSP; other: another peer number.
    caller: u8,
    /// Low 16 bits of a vendor-hypervisor function ID, and SMC64 or SMC32.
    fid: u16,
    smc64: bool,
    args: [Arg; 7],
    dma_fails: bool,
}

fuzz_target!(|calls: Vec<Call>| {
    let mut frames = HeapPool::new();
    let carveouts = [C_MODEM, C_DSP];
    let layout = TableLayout::new(32, 1, 1).unwrap();
    let spec = HostStage2Spec {
        ram: &[RAM],
        devices: &[],
        holes: &[WARDEN],
        split: &carveouts,
        pa_range_bits: 40,
        vmid16: false,
    };
    let host = build_host_stage2(&spec, &mut frames, &NullCpu).unwrap().table;
    let image = WardenImage {
        start: WARDEN.start,
        text_end: WARDEN.start + 0x4_0000,
        rodata_end: WARDEN.start + 0x6_0000,
        end: WARDEN.end,
    };
    let plan = El2Plan {
        image,
        guards: &[],
        ram: &[RAM],
        excluded: &[C_MODEM, C_DSP, NO_MAP],
        devices: &[UART],
    };
    let mut regions = Vec::new();
    warden_regions(&plan, |r, a| regions.push((r, a)));
    let el2 = build_el2_identity_map(&regions, 32, 40, &mut frames, &NullCpu).unwrap().table;
    let modem_s2 = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
    let dsp_s2 = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
    let mut tracker = OwnershipTracker::new();
    tracker.add(WARDEN, PageState::Warden).unwrap();
    tracker.add(MemRange::new(WARDEN.end, RAM.end), PageState::Host).unwrap();
    let descs = [
        CarveoutDesc {
            range: C_MODEM,
            peer: PeerId::MODEM,
            policy: Policy::Donate,
            clear_on_reclaim: false,
        },
        CarveoutDesc {
            range: C_DSP,
            peer: PeerId::DSP,
            policy: Policy::Lend,
            clear_on_reclaim: true,
        },
    ];
    let list: Vec<_> = descs.iter().map(|c| c.carveout()).collect();
    let mut state = HandoffState::new(tracker, &list).unwrap();
    state.exclude_from_host_memory(&[NO_MAP]);
    let frames = Mutex::new(frames);
    let host = Mutex::new(host);
    let el2 = Mutex::new(el2);
    let modem_s2 = Mutex::new(modem_s2);
    let dsp_s2 = Mutex::new(dsp_s2);
    let smmu = Mutex::new(FakeDma { fail: false });
    let peers = [
        PeerRef {
            id: PeerId::MODEM,
            stage2: Stage2Ref { vmid: 2, table: &modem_s2, attrs: PEER_ATTRS },
        },
        PeerRef {
            id: PeerId::DSP,
            stage2: Stage2Ref { vmid: 3, table: &dsp_s2, attrs: PEER_ATTRS },
        },
    ];
    let ctx = HandoffCtx {
        cpu: &NullCpu,
        smmu: &smmu,
        frames: &frames,
        host: Stage2Ref { vmid: 1, table: &host, attrs: HOST_RAM_ATTRS },
        peers: &peers,
        state: &state,
        el2: &el2,
    };
    let tracked = state.tracker().tracked_bytes();
    for call in calls.iter().take(48) {
        let caller = match call.caller {
            0 => Caller::Host,
            1 => Caller::Peer(PeerId::MODEM),
            2 => Caller::Peer(PeerId::DSP),
            n => match PeerId::new(n % 64) {
                Some(p) => Caller::Peer(p),
                None => Caller::Host,
            },
        };
        let mut regs = [0u64; 8];
        regs[0] =
            u64::from(0x8600_0000u32 | u32::from(call.fid) | if call.smc64 { 1 << 30 } else { 0 });
        for (r, a) in regs[1..].iter_mut().zip(call.args.iter()) {
            *r = a.value();
        }
        smmu.lock().fail = call.dma_fails;
        if let Ok(Some(request)) = Request::decode(&regs) {
            if !matches!(request, Request::ViolationCount | Request::ViolationInfo { .. }) {
                let _ = service::handle(&ctx, &descs, caller, &request);
            }
        }
        check(&state, &host, &modem_s2, &dsp_s2, &el2, tracked);
    }
});

/// G1's invariants over the tables and the tracker (the handoff unit tests' `World::check`).
fn check(
    state: &HandoffState,
    host: &Mutex<PageTable<Stage2>>,
    modem: &Mutex<PageTable<Stage2>>,
    dsp: &Mutex<PageTable<Stage2>>,
    el2: &Mutex<PageTable<warden::mm::El2Stage1>>,
    tracked: u64,
) {
    let tracker = state.tracker().clone();
    tracker.check_invariants().expect("the tracker is consistent");
    assert_eq!(tracker.tracked_bytes(), tracked, "tracked memory changed");
    for (who, table) in [
        (Accessor::Host, host),
        (Accessor::Peer(PeerId::MODEM), modem),
        (Accessor::Peer(PeerId::DSP), dsp),
    ] {
        let table = table.lock();
        if let Err(e) = tracker.check_mapped_exactly(who, &table.mappings()) {
            panic!("{e}");
        }
    }
    for m in el2.lock().mappings() {
        let r = MemRange::new(m.va, m.va + m.size);
        for forbidden in [C_MODEM, C_DSP, NO_MAP] {
            assert!(
                !r.overlaps(&forbidden),
                "EL2 maps {r}, which overlaps {forbidden} (window left open?)"
            );
        }
    }
}
