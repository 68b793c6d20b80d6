//! The simulated peer (boards with `sim_peer`): a CPU warden keeps from the host and runs the
//! peer program on, at EL1, one command at a time, under the stage-2 of the peer it plays.
//!
//! Each peer named by a carveout gets a private copy of the program (at
//! [`abi::PROGRAM_IPA`]) and a mailbox page (at [`abi::MAILBOX_IPA`]) in its stage-2, next to
//! whatever the host handed it; nothing else is mapped, so any other access is a stage-2 fault
//! that warden contains like a host violation (the peer gets a synchronous external abort).
//!
//! A command, on the host CPU that made the `PEER_COMMAND` call:
//! 1. take the peer CPU (one command at a time; `RETRY` if busy) and check it is off;
//! 2. write the command into that peer's mailbox; refresh the program copy (so every run
//!    starts from the same image) and make it visible to instruction fetch;
//! 3. PSCI `CPU_ON` the peer CPU at warden's secondary entry; it enters the program at EL1
//!    (see [`enter`]) under the peer's VMID;
//! 4. wait (bounded) for the mailbox's `done_seq`; the peer's `PEER_DONE` powers its CPU off
//!    ([`done`]); wait (bounded) for PSCI to report it off.

use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;
use warden_abi::AbiError;
use warden_abi::peer::{self as abi, Mailbox, PeerCommand};
use warden_abi::psci;

use super::{HOST_VMID, Warden};
use crate::arch::aarch64::{self as hw, Hw, sysreg};
use crate::arch::{CacheOp, dcache_range};
use crate::mm::ownership::PeerId;
use crate::mm::{Attrs, FrameAllocator, MemRange, PAGE_SIZE, PageTable, Perms, Stage2, stage2};

/// How long a command may run: a checksum of a 16 MiB carveout under QEMU TCG takes well under
/// a second.
const COMMAND_TIMEOUT_MS: u64 = 5000;
/// How long PSCI may take to report the peer CPU off after its `PEER_DONE`.
const POWER_OFF_TIMEOUT_MS: u64 = 500;

/// The private pages of one peer identity.
pub struct PeerPages {
    pub id: PeerId,
    /// Index into [`Warden::peers`] (its stage-2 and VMID).
    pub stage2: usize,
    program_pa: u64,
    mailbox_pa: u64,
}

pub struct SimPeer {
    /// warden's index for the CPU (its stacks, `SecondaryBoot` slot, TPIDR_EL2).
    pub cpu_index: usize,
    pub mpidr: u64,
    program: &'static [u8],
    identities: Vec<PeerPages>,
    /// Held for a whole command; the value is the last mailbox sequence number used.
    busy: Mutex<u64>,
    /// Index into `identities` of the peer the CPU plays now (set before `CPU_ON`).
    current: AtomicUsize,
}

/// Why the simulated peer could not be set up (boot continues without it).
#[derive(Debug)]
pub enum SetUpError {
    NoProgram,
    ProgramTooLarge(usize),
    OutOfFrames,
    Map(crate::mm::MapError),
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
        }
    }
}

const PROGRAM_PAGES: usize = (abi::PROGRAM_SIZE / PAGE_SIZE) as usize;

impl SimPeer {
    /// Gives every peer stage-2 in `tables` (peer id, table) a program copy and a mailbox page.
    pub fn set_up<A: FrameAllocator + ?Sized>(
        cpu_index: usize,
        mpidr: u64,
        program: &'static [u8],
        tables: &[(PeerId, &Mutex<PageTable<Stage2>>)],
        frames: &mut A,
    ) -> Result<Self, SetUpError> {
        if program.is_empty() {
            return Err(SetUpError::NoProgram);
        }
        if program.len() as u64 > abi::PROGRAM_SIZE {
            return Err(SetUpError::ProgramTooLarge(program.len()));
        }
        let mut identities = Vec::new();
        for (index, (id, table)) in tables.iter().enumerate() {
            let program_pa = frames.alloc_zeroed(PROGRAM_PAGES).ok_or(SetUpError::OutOfFrames)?;
            let mailbox_pa = frames.alloc_zeroed(1).ok_or(SetUpError::OutOfFrames)?;
            let mut table = table.lock();
            let program_ipa =
                MemRange::from_base_size(abi::PROGRAM_IPA, abi::PROGRAM_SIZE).unwrap_or_default();
            table
                .map(program_ipa, program_pa, Attrs::normal(Perms::RWX), frames, &Hw)
                .map_err(SetUpError::Map)?;
            let mailbox_ipa =
                MemRange::from_base_size(abi::MAILBOX_IPA, PAGE_SIZE).unwrap_or_default();
            table
                .map(mailbox_ipa, mailbox_pa, Attrs::normal(Perms::RW), frames, &Hw)
                .map_err(SetUpError::Map)?;
            identities.push(PeerPages { id: *id, stage2: index, program_pa, mailbox_pa });
        }
        Ok(Self {
            cpu_index,
            mpidr,
            program,
            identities,
            busy: Mutex::new(0),
            current: AtomicUsize::new(0),
        })
    }

    /// The peer the CPU is playing right now.
    pub fn current(&self) -> Option<&PeerPages> {
        self.identities.get(self.current.load(Ordering::Acquire))
    }
}

/// Milliseconds as counter ticks.
fn ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().max(1).saturating_mul(ms) / 1000
}

/// Polls `done` until it is true or `ms` milliseconds passed.
fn wait_for(ms: u64, mut done: impl FnMut() -> bool) -> bool {
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

fn peer_cpu_is_off(mpidr: u64) -> bool {
    let r = hw::smc([u64::from(psci::AFFINITY_INFO_64), mpidr, 0, 0, 0, 0, 0, 0]);
    r[0] as i64 == psci::AFFINITY_OFF
}

fn mailbox(pa: u64) -> *mut Mailbox {
    pa as *mut Mailbox
}

/// The host's `PEER_COMMAND` (see the module documentation).
pub fn run(w: &Warden, sim: &SimPeer, command: &PeerCommand) -> Result<u64, AbiError> {
    let index = sim
        .identities
        .iter()
        .position(|p| p.id == command.peer)
        .ok_or(AbiError::InvalidParameters)?;
    // One peer CPU for every peer: a command queues behind the one running (bounded), rather
    // than bouncing RETRY back to a host that would only ask again at once.
    let mut busy = None;
    wait_for(COMMAND_TIMEOUT_MS, || {
        busy = sim.busy.try_lock();
        busy.is_some()
    });
    let Some(mut seq) = busy else { return Err(AbiError::Retry) };
    if !wait_for(POWER_OFF_TIMEOUT_MS, || peer_cpu_is_off(sim.mpidr)) {
        log::warn!("peer CPU (MPIDR {:#x}) is still on from an earlier command", sim.mpidr);
        return Err(AbiError::Retry);
    }
    let pages = &sim.identities[index];
    *seq += 1;
    let seq = *seq;
    let mail = Mailbox {
        seq,
        command: command.op.encode(),
        done_seq: 0,
        status: 0,
        result: 0,
        fault_addr: 0,
        peer: u64::from(command.peer.get()),
    };
    // SAFETY: the mailbox page is warden's (from the pool, mapped RW at EL2) and the peer CPU
    // is off, so nobody else accesses it now.
    unsafe { mailbox(pages.mailbox_pa).write_volatile(mail) };
    // SAFETY: the program copy is warden's RW memory of PROGRAM_SIZE bytes, and the image fits
    // (checked in set_up); the peer CPU that executes it is off.
    unsafe {
        core::ptr::copy_nonoverlapping(
            sim.program.as_ptr(),
            pages.program_pa as *mut u8,
            sim.program.len(),
        )
    };
    // The peer starts with caches off at EL2 and fetches its program through a fresh
    // translation: both must see memory. Then drop stale instructions from every I-cache.
    dcache_range(&Hw, CacheOp::Clean, pages.program_pa, abi::PROGRAM_SIZE);
    dcache_range(&Hw, CacheOp::Clean, pages.mailbox_pa, PAGE_SIZE);
    // SAFETY: I-cache invalidation to PoU, broadcast; no memory effects.
    unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack, preserves_flags)) };
    sim.current.store(index, Ordering::Release);
    let context = super::secondary_boot_args(w, sim.cpu_index);
    let on = hw::smc([
        u64::from(psci::CPU_ON_64),
        sim.mpidr,
        hw::secondary_entry_address(),
        context,
        0,
        0,
        0,
        0,
    ]);
    if on[0] != 0 {
        log::error!("PSCI CPU_ON of the peer CPU failed: {}", on[0] as i64);
        return Err(AbiError::Aborted);
    }
    // SAFETY: as above; the peer writes done_seq last, so volatile reads see a finished answer.
    let finished = wait_for(COMMAND_TIMEOUT_MS, || unsafe {
        core::ptr::addr_of!((*mailbox(pages.mailbox_pa)).done_seq).read_volatile() == seq
    });
    if !finished {
        log::error!(
            "peer {} did not answer command {seq} ({}) within {COMMAND_TIMEOUT_MS} ms",
            command.peer,
            command.op
        );
        return Err(AbiError::Aborted);
    }
    // SAFETY: as above.
    let answer = unsafe { mailbox(pages.mailbox_pa).read_volatile() };
    if !wait_for(POWER_OFF_TIMEOUT_MS, || peer_cpu_is_off(sim.mpidr)) {
        log::warn!("peer CPU did not power off after command {seq}");
    }
    match answer.status {
        abi::STATUS_OK => Ok(answer.result),
        abi::STATUS_FAULT => {
            log::warn!(
                "peer {} faulted at {:#x} (ESR {:#x}) running {}",
                command.peer,
                answer.fault_addr,
                answer.result,
                command.op
            );
            Err(AbiError::PeerFault)
        }
        _ => Err(AbiError::InvalidParameters),
    }
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
    controls.hcr |= HCR_DC;
    sysreg::write_host_controls(&controls);
    sysreg::write_stage2(w.vtcr, stage2::vttbr(root, peer.vmid));
    debug_assert_ne!(peer.vmid, HOST_VMID);
    // SAFETY: stage 2 (the peer's own tables) and the EL2 controls are programmed on this CPU;
    // the entry is the program copy warden just refreshed.
    unsafe { sysreg::enter_host(abi::PROGRAM_IPA, abi::MAILBOX_IPA) }
}

/// HCR_EL2.DC: default cacheable when EL1's stage 1 is off.
const HCR_DC: u64 = 1 << 12;

/// The peer's `PEER_DONE`: its answer is in the mailbox; power the CPU off.
pub fn done() -> ! {
    // SAFETY: DSB only orders the peer's mailbox writes before the power-off; no memory effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    let r = hw::smc([u64::from(psci::CPU_OFF), 0, 0, 0, 0, 0, 0, 0]);
    log::error!("PSCI CPU_OFF of the peer CPU returned {}: parking it", r[0] as i64);
    hw::park()
}
