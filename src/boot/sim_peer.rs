//! The simulated peer on hardware (boards with `sim_peer`): a CPU warden keeps from the host and
//! runs the peer program on, at EL1, one command at a time, under the stage-2 of the peer it
//! plays. The rules (private windows, what a command may touch) and the command protocol
//! (including stopping a peer that never finishes) are host-tested in [`crate::sim_peer`];
//! this is their [`PeerCpu`]: PSCI from EL2, the mailbox pages, the peer's stage-2.
//!
//! Each peer named by a carveout gets its own copy of the program (read-only and executable at
//! [`abi::PROGRAM_IPA`]), BSS and stack pages (at [`abi::DATA_IPA`]) and a mailbox page (at
//! [`abi::MAILBOX_IPA`]), next to whatever the host handed it; nothing else is mapped, so any
//! other access is a stage-2 fault that warden contains like a host violation.
//!
//! On the peer CPU: [`enter`] (from warden's secondary entry) programs EL2 for the peer
//! (stage 1 off with HCR_EL2.DC, WFI/WFE trapped) and enters the program; its `PEER_DONE`
//! ([`done`]) powers the CPU off; any trap while the runner asks for a stop ([`stop_if_asked`],
//! first thing on every trap from that CPU) powers it off too.

use alloc::vec::Vec;
use core::arch::asm;

use spin::Mutex;
use warden_abi::AbiError;
use warden_abi::peer::{self as abi, Mailbox, PeerCommand};
use warden_abi::psci;

use super::{HOST_VMID, Warden};
use crate::arch::aarch64::{self as hw, Hw, sysreg};
use crate::arch::{CacheOp, dcache_range};
use crate::mm::ownership::PeerId;
use crate::mm::tcr::pa_range_bits_from_mmfr0;
use crate::mm::{FrameAllocator, MapError, MemRange, PAGE_SIZE, PageTable, Stage2, stage2};
use crate::sim_peer::{
    CommandRunner, PeerCpu, PrivatePages, check_command, map_windows, unmap_windows, windows_span,
};

/// The private pages of one peer identity.
pub struct PeerPages {
    pub id: PeerId,
    /// Index into [`Warden::peers`] (its stage-2 and VMID).
    pub stage2: usize,
    pages: PrivatePages,
}

pub struct SimPeer {
    /// warden's index for the CPU (its stacks, `SecondaryBoot` slot, TPIDR_EL2).
    pub cpu_index: usize,
    pub mpidr: u64,
    identities: Vec<PeerPages>,
    runner: CommandRunner,
    /// The peer CPU's physical address size (a TOUCH beyond it is refused).
    pa_bits: u32,
}

/// Why the simulated peer could not be set up (boot continues without it).
#[derive(Debug)]
pub enum SetUpError {
    NoProgram,
    ProgramTooLarge(usize),
    OutOfFrames,
    Map(MapError),
    /// A carveout lies where the peer sees its own windows (it would be mapped there too).
    CarveoutOverlapsWindows(MemRange),
}

impl core::fmt::Display for SetUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetUpError::NoProgram => write!(f, "this build embeds no peer program"),
            SetUpError::ProgramTooLarge(n) => {
                write!(f, "peer program is {n} bytes; at most {} fit", abi::PROGRAM_SIZE)
            }
            SetUpError::OutOfFrames => write!(f, "no frames for the peer's private pages"),
            SetUpError::Map(e) => write!(f, "peer stage-2: {e}"),
            SetUpError::CarveoutOverlapsWindows(c) => {
                write!(f, "carveout {c} overlaps the peer's own windows at {}", windows_span())
            }
        }
    }
}

const PROGRAM_PAGES: usize = (abi::PROGRAM_SIZE / PAGE_SIZE) as usize;
const DATA_PAGES: usize = (abi::DATA_SIZE / PAGE_SIZE) as usize;

impl SimPeer {
    /// Gives every peer stage-2 in `tables` (peer id, table) its private windows, the program
    /// copied in once (nothing can write it afterwards).
    pub fn set_up<A: FrameAllocator + ?Sized>(
        cpu_index: usize,
        mpidr: u64,
        program: &'static [u8],
        tables: &[(PeerId, &Mutex<PageTable<Stage2>>)],
        carveouts: &[MemRange],
        frames: &mut A,
    ) -> Result<Self, SetUpError> {
        if program.is_empty() {
            return Err(SetUpError::NoProgram);
        }
        if program.len() as u64 > abi::PROGRAM_SIZE {
            return Err(SetUpError::ProgramTooLarge(program.len()));
        }
        if let Some(c) = carveouts.iter().find(|c| c.overlaps(&windows_span())) {
            return Err(SetUpError::CarveoutOverlapsWindows(*c));
        }
        let mut identities = Vec::new();
        for (index, (id, table)) in tables.iter().enumerate() {
            let mut alloc = |n| frames.alloc_zeroed(n).ok_or(SetUpError::OutOfFrames);
            let pages = PrivatePages {
                program_pa: alloc(PROGRAM_PAGES)?,
                data_pa: alloc(DATA_PAGES)?,
                mailbox_pa: alloc(1)?,
            };
            // SAFETY: the program pages were just allocated for this copy (PROGRAM_SIZE bytes,
            // warden's RW memory at EL2), and the image fits (checked above).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    program.as_ptr(),
                    pages.program_pa as *mut u8,
                    program.len(),
                )
            };
            // The peer fetches its program through a fresh translation: it must be in memory.
            dcache_range(&Hw, CacheOp::Clean, pages.program_pa, abi::PROGRAM_SIZE);
            map_windows(&mut table.lock(), &pages, frames, &Hw).map_err(SetUpError::Map)?;
            identities.push(PeerPages { id: *id, stage2: index, pages });
        }
        // SAFETY: I-cache invalidation to PoU, broadcast; no memory effects.
        unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack, preserves_flags)) };
        Ok(Self {
            cpu_index,
            mpidr,
            identities,
            runner: CommandRunner::new(),
            pa_bits: pa_range_bits_from_mmfr0(sysreg::id_aa64mmfr0()).unwrap_or(32),
        })
    }

    /// The peer the CPU is playing right now.
    pub fn current(&self) -> Option<&PeerPages> {
        self.identities.get(self.runner.current())
    }

    /// Peers stopped so far because they did not answer in time.
    pub fn stopped(&self) -> u64 {
        self.runner.stopped()
    }
}

/// Milliseconds as counter ticks.
fn ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().max(1).saturating_mul(ms) / 1000
}

fn mailbox(pa: u64) -> *mut Mailbox {
    pa as *mut Mailbox
}

/// The peer CPU and the peers' pages, for [`CommandRunner`].
struct HwPeerCpu<'a> {
    w: &'a Warden,
    sim: &'a SimPeer,
}

impl HwPeerCpu<'_> {
    fn pages(&self, identity: usize) -> Option<&PeerPages> {
        self.sim.identities.get(identity)
    }

    /// Runs `f` on `identity`'s stage-2 with its VMID current on this CPU (TLB maintenance by
    /// VMID), then makes the host's current again (this runs on a host hypercall).
    fn with_peer_stage2(
        &self,
        identity: usize,
        f: impl FnOnce(
            &mut PageTable<Stage2>,
            &PrivatePages,
            &mut crate::mm::PoolFrames,
        ) -> Result<(), MapError>,
    ) -> Result<(), MapError> {
        let Some(p) = self.pages(identity) else { return Ok(()) };
        let Some(peer) = self.w.peers.get(p.stage2) else { return Ok(()) };
        let mut table = peer.table.lock();
        let mut frames = self.w.frames.lock();
        sysreg::set_vttbr(stage2::vttbr(table.root_pa(), peer.vmid));
        let result = f(&mut table, &p.pages, &mut frames);
        sysreg::set_vttbr(self.w.vttbr);
        result
    }
}

impl PeerCpu for HwPeerCpu<'_> {
    fn is_off(&self) -> bool {
        let r = hw::smc([u64::from(psci::AFFINITY_INFO_64), self.sim.mpidr, 0, 0, 0, 0, 0, 0]);
        r[0] as i64 == psci::AFFINITY_OFF
    }

    fn post(&self, identity: usize, mail: &Mailbox) {
        let Some(p) = self.pages(identity) else { return };
        // SAFETY: the mailbox page is warden's (from the pool, mapped RW at EL2) and the peer
        // CPU is off, so nobody else accesses it now.
        unsafe { mailbox(p.pages.mailbox_pa).write_volatile(*mail) };
        // The peer starts with caches off at EL2 and reads its mailbox through a fresh
        // translation: the command must be in memory.
        dcache_range(&Hw, CacheOp::Clean, p.pages.mailbox_pa, PAGE_SIZE);
    }

    fn mailbox(&self, identity: usize) -> Mailbox {
        match self.pages(identity) {
            // SAFETY: as in `post`; the peer writes done_seq last, so a volatile read that
            // sees it sees a finished answer.
            Some(p) => unsafe { mailbox(p.pages.mailbox_pa).read_volatile() },
            None => Mailbox::default(),
        }
    }

    fn power_on(&self, _identity: usize) -> Result<(), i64> {
        let context = super::secondary_boot_args(self.w, self.sim.cpu_index);
        let on = hw::smc([
            u64::from(psci::CPU_ON_64),
            self.sim.mpidr,
            hw::secondary_entry_address(),
            context,
            0,
            0,
            0,
            0,
        ]);
        if on[0] == 0 { Ok(()) } else { Err(on[0] as i64) }
    }

    fn revoke(&self, identity: usize) -> Result<(), MapError> {
        self.with_peer_stage2(identity, |table, _, frames| unmap_windows(table, frames, &Hw))
    }

    fn restore(&self, identity: usize) -> Result<(), MapError> {
        self.with_peer_stage2(identity, |table, pages, frames| {
            map_windows(table, pages, frames, &Hw)
        })
    }

    fn wait(&self, ms: u64, done: &mut dyn FnMut() -> bool) -> bool {
        let deadline = sysreg::counter().saturating_add(ticks(ms));
        loop {
            if done() {
                return true;
            }
            if sysreg::counter() > deadline {
                return done();
            }
            core::hint::spin_loop();
        }
    }
}

/// The host's `PEER_COMMAND` (see [`crate::sim_peer`]).
pub fn run(w: &Warden, sim: &SimPeer, command: &PeerCommand) -> Result<u64, AbiError> {
    let identity = sim
        .identities
        .iter()
        .position(|p| p.id == command.peer)
        .ok_or(AbiError::InvalidParameters)?;
    check_command(&w.handoff.tracker(), command.peer, &command.op, sim.pa_bits)?;
    sim.runner.run(&HwPeerCpu { w, sim }, identity, command.peer, command.op)
}

/// On the peer CPU, from warden's secondary entry: program EL2 for the peer and enter its
/// program at EL1.
pub fn enter(w: &Warden, sim: &SimPeer) -> ! {
    let Some(pages) = sim.current() else {
        log::error!("peer CPU started with no command: parking it");
        hw::park()
    };
    let Some(peer) = w.peers.get(pages.stage2) else { hw::park() };
    let root = peer.table.lock().root_pa();
    let mut controls = w.host_controls;
    // Stage 1 off at EL1 means Normal write-back memory: the program needs no page tables.
    // WFI and WFE trap, so a peer waiting for nothing still reaches warden to be stopped.
    controls.hcr |= HCR_DC | HCR_TWI | HCR_TWE;
    sysreg::write_host_controls(&controls);
    sysreg::write_stage2(w.vtcr, stage2::vttbr(root, peer.vmid));
    debug_assert_ne!(peer.vmid, HOST_VMID);
    // SAFETY: stage 2 (the peer's own tables) and the EL2 controls are programmed on this CPU;
    // the entry is the program copy mapped read-only and executable.
    unsafe { sysreg::enter_host(abi::PROGRAM_IPA, abi::MAILBOX_IPA) }
}

/// HCR_EL2.DC: default cacheable when EL1's stage 1 is off.
const HCR_DC: u64 = 1 << 12;
/// HCR_EL2.TWI, TWE: WFI and WFE at EL1/EL0 trap to EL2.
const HCR_TWI: u64 = 1 << 13;
const HCR_TWE: u64 = 1 << 14;

/// First thing on every trap from the peer CPU: if the runner is stopping the peer (it did not
/// answer in time and lost its windows), power this CPU off instead of handling the trap.
pub fn stop_if_asked(sim: &SimPeer) {
    if sim.runner.stop_requested() {
        done()
    }
}

/// The peer's `PEER_DONE` (or a stop): power the CPU off.
pub fn done() -> ! {
    // SAFETY: DSB only orders the peer's mailbox writes before the power-off; no memory effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    let r = hw::smc([u64::from(psci::CPU_OFF), 0, 0, 0, 0, 0, 0, 0]);
    log::error!("PSCI CPU_OFF of the peer CPU returned {}: parking it", r[0] as i64);
    hw::park()
}
