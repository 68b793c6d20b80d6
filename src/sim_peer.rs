//! The simulated peer's rules and command protocol (boards with `sim_peer`), host-testable.
//! `boot::sim_peer` is the aarch64 side: PSCI, mailbox pages in warden's memory, the peer's
//! stage-2 on hardware.
//!
//! # The peer's own pages
//! Besides what the host hands it (identity-mapped, read-write, never executable), each peer's
//! stage-2 maps three private windows of warden's memory ([`WINDOWS`]): its copy of the program
//! at [`abi::PROGRAM_IPA`], **read-only and executable**; its BSS and stack at
//! [`abi::DATA_IPA`] and its mailbox at [`abi::MAILBOX_IPA`], read-write and never executable.
//! Nothing the peer does, and so nothing a host command can make it do, changes its program.
//!
//! # What a command may touch
//! [`check_command`] runs before the peer does: CHECKSUM and FILL only on a range wholly
//! donated or lent to that peer and not released (else `DENIED`); TOUCH only below the peer
//! CPU's physical address size (beyond it the peer's own stage 1 would fault, unseen by
//! warden: `INVALID_PARAMETERS`). RELEASE is the peer's own ABI call, checked like any other;
//! SPIN touches nothing.
//!
//! # Running a command; stopping a peer that never finishes
//! [`CommandRunner::run`], on the host CPU that made the `PEER_COMMAND` call, one command at a
//! time (the peer CPU plays every peer):
//! 1. take the runner (waiting, bounded, behind a command in flight; else `RETRY`); if an
//!    earlier command's peer was stopped but its CPU had not gone off yet, finish that first
//!    (its windows come back once the CPU is off; until then `RETRY`);
//! 2. post the command in the peer's mailbox, power the peer CPU on (the peer enters its
//!    program), wait (bounded) for the answer;
//! 3. no answer in time: the peer is **stopped**. The runner raises its stop flag and
//!    [`PeerCpu::revoke`]s the peer's windows (unmapped from its stage-2, TLBs invalidated
//!    everywhere), so the peer's next instruction fetch (or WFI/WFE, which trap too) enters
//!    warden on the peer's CPU, which sees the flag ([`CommandRunner::stop_requested`]) and
//!    powers that CPU off. Once PSCI reports it off, the windows are restored and the command
//!    answers `ABORTED` (logged); later commands work again;
//! 4. an answer: the peer's `PEER_DONE` powers its CPU off; `STATUS_OK` is the result,
//!    `STATUS_FAULT` is `PEER_FAULT` only when the exception the peer reports is the
//!    synchronous external abort warden injects for a stage-2 violation (always recorded in
//!    the violation ring), anything else `ABORTED`.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;
use warden_abi::AbiError;
use warden_abi::peer::{self as abi, Mailbox, Op};

use crate::arch::TlbMaintenance;
use crate::mm::ownership::{OwnershipTracker, PageState, PeerId};
use crate::mm::{Attrs, FrameAllocator, MapError, MemRange, PAGE_SIZE, PageTable, Perms, Stage2};

/// How long a command may run: a checksum of a 16 MiB carveout under QEMU TCG takes well under
/// a second.
pub const COMMAND_TIMEOUT_MS: u64 = 5000;
/// How long PSCI may take to report the peer CPU off (after `PEER_DONE`, or once stopped).
pub const POWER_OFF_TIMEOUT_MS: u64 = 500;

/// One of a peer's private windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The program copy: read-only, executable.
    Program,
    /// BSS and stack: read-write, never executable.
    Data,
    /// The mailbox: read-write, never executable.
    Mailbox,
}

/// Every private window: where the peer sees it, how big it is, and its stage-2 permissions.
pub const WINDOWS: [(Window, u64, u64, Perms); 3] = [
    (Window::Program, abi::PROGRAM_IPA, abi::PROGRAM_SIZE, Perms::RX),
    (Window::Data, abi::DATA_IPA, abi::DATA_SIZE, Perms::RW),
    (Window::Mailbox, abi::MAILBOX_IPA, PAGE_SIZE, Perms::RW),
];

// The windows do not overlap, the data window follows the program (the peer's linker script
// relies on it), and each is page aligned.
const _: () = assert!(
    abi::DATA_IPA == abi::PROGRAM_IPA + abi::PROGRAM_SIZE
        && abi::DATA_IPA + abi::DATA_SIZE <= abi::MAILBOX_IPA
        && abi::PROGRAM_IPA.is_multiple_of(PAGE_SIZE)
        && abi::DATA_SIZE.is_multiple_of(PAGE_SIZE)
        && abi::MAILBOX_IPA.is_multiple_of(PAGE_SIZE)
);

/// The IPA range of one window.
pub const fn window_range(base: u64, size: u64) -> MemRange {
    MemRange::new(base, base + size)
}

/// The smallest range holding every window (a carveout must not reach into it: it would be
/// mapped at the same IPAs in the peer's stage-2).
pub const fn windows_span() -> MemRange {
    MemRange::new(abi::PROGRAM_IPA, abi::MAILBOX_IPA + PAGE_SIZE)
}

/// The physical pages (warden's) behind one peer's windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivatePages {
    pub program_pa: u64,
    pub data_pa: u64,
    pub mailbox_pa: u64,
}

impl PrivatePages {
    pub const fn pa(&self, window: Window) -> u64 {
        match window {
            Window::Program => self.program_pa,
            Window::Data => self.data_pa,
            Window::Mailbox => self.mailbox_pa,
        }
    }
}

/// Maps the peer's windows onto `pages` in its stage-2 (whose VMID the caller made current).
pub fn map_windows<A, T>(
    table: &mut PageTable<Stage2>,
    pages: &PrivatePages,
    frames: &mut A,
    tlb: &T,
) -> Result<(), MapError>
where
    A: FrameAllocator + ?Sized,
    T: TlbMaintenance + ?Sized,
{
    for (window, base, size, perms) in WINDOWS {
        table.map(window_range(base, size), pages.pa(window), Attrs::normal(perms), frames, tlb)?;
    }
    Ok(())
}

/// Removes the peer's windows from its stage-2 with break-before-make and broadcast TLB
/// invalidation (the peer's VMID current): afterwards no CPU can fetch the program or touch
/// the mailbox under that VMID.
pub fn unmap_windows<A, T>(
    table: &mut PageTable<Stage2>,
    frames: &mut A,
    tlb: &T,
) -> Result<(), MapError>
where
    A: FrameAllocator + ?Sized,
    T: TlbMaintenance + ?Sized,
{
    for (_, base, size, _) in WINDOWS {
        table.unmap(window_range(base, size), frames, tlb)?;
    }
    Ok(())
}

/// Whether `peer` may run `op` now (see the module documentation); `pa_bits` is the peer
/// CPU's physical address size (ID_AA64MMFR0_EL1.PARange).
pub fn check_command(
    tracker: &OwnershipTracker,
    peer: PeerId,
    op: &Op,
    pa_bits: u32,
) -> Result<(), AbiError> {
    match *op {
        Op::Checksum { base, size } | Op::Fill { base, size, .. } => {
            let range = MemRange::from_base_size(base, size).ok_or(AbiError::InvalidParameters)?;
            match tracker.state_of(range) {
                Ok(
                    PageState::Donated { peer: holder, released: false }
                    | PageState::Lent { peer: holder, released: false }
                    | PageState::Shared { peer: holder },
                ) if holder == peer => Ok(()),
                _ => Err(AbiError::Denied),
            }
        }
        Op::Touch { addr } => {
            let limit = 1u64.checked_shl(pa_bits).unwrap_or(u64::MAX);
            if addr < limit { Ok(()) } else { Err(AbiError::InvalidParameters) }
        }
        Op::Release { .. } | Op::Spin => Ok(()),
    }
}

/// Whether the exception a peer reports (its ESR_EL1) is the synchronous external abort warden
/// injects for a stage-2 violation: a data or instruction abort taken from EL1 or EL0, FSC
/// 0b010000.
pub const fn is_injected_abort(esr: u64) -> bool {
    let class = (esr >> 26) & 0x3f;
    matches!(class, 0x20 | 0x21 | 0x24 | 0x25) && esr & 0x3f == 0x10
}

/// The hardware a command runs on (the peer CPU and its pages), behind a narrow trait so the
/// protocol runs in host tests against a fake peer.
pub trait PeerCpu {
    /// PSCI `AFFINITY_INFO` reports the peer CPU off.
    fn is_off(&self) -> bool;
    /// Writes `mail` into the mailbox of peer `identity` and makes it visible to the peer CPU.
    fn post(&self, identity: usize, mail: &Mailbox);
    /// Reads the mailbox of peer `identity`.
    fn mailbox(&self, identity: usize) -> Mailbox;
    /// PSCI `CPU_ON` of the peer CPU at warden's entry (it runs peer `identity`); the PSCI
    /// error on failure.
    fn power_on(&self, identity: usize) -> Result<(), i64>;
    /// Unmaps peer `identity`'s windows ([`unmap_windows`]).
    fn revoke(&self, identity: usize) -> Result<(), MapError>;
    /// Maps them again ([`map_windows`]).
    fn restore(&self, identity: usize) -> Result<(), MapError>;
    /// Calls `done` until it returns true or `ms` milliseconds passed; its last answer.
    fn wait(&self, ms: u64, done: &mut dyn FnMut() -> bool) -> bool;
}

/// What the runner remembers between commands.
#[derive(Debug, Default)]
struct RunState {
    /// The last mailbox sequence number used.
    seq: u64,
    /// A stopped peer whose CPU had not gone off yet, and whose windows are still revoked.
    stopping: Option<usize>,
}

/// One command at a time on the peer CPU (see the module documentation).
#[derive(Debug, Default)]
pub struct CommandRunner {
    state: Mutex<RunState>,
    /// Raised while a peer is being stopped: the peer CPU powers itself off at its next trap.
    stop: AtomicBool,
    /// The peer identity the CPU plays now (set before `CPU_ON`).
    current: AtomicUsize,
    /// Peers stopped so far.
    stopped: AtomicU64,
}

impl CommandRunner {
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(RunState { seq: 0, stopping: None }),
            stop: AtomicBool::new(false),
            current: AtomicUsize::new(0),
            stopped: AtomicU64::new(0),
        }
    }

    /// The peer CPU, at any trap into warden: power off now instead of handling it.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The peer identity the CPU plays (meaningful while it runs).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// Peers stopped because they did not answer in time.
    pub fn stopped(&self) -> u64 {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Runs `op` as peer `identity` (`peer`); the command's result or its ABI error.
    pub fn run<C: PeerCpu + ?Sized>(
        &self,
        cpu: &C,
        identity: usize,
        peer: PeerId,
        op: Op,
    ) -> Result<u64, AbiError> {
        // A command queues behind the one running (bounded), rather than bouncing RETRY back
        // to a host that would only ask again at once.
        let mut state = None;
        cpu.wait(COMMAND_TIMEOUT_MS, &mut || {
            state = self.state.try_lock();
            state.is_some()
        });
        let Some(mut state) = state else { return Err(AbiError::Retry) };
        if let Some(stopped) = state.stopping {
            self.finish_stop(cpu, stopped, &mut state)?;
        }
        if !cpu.wait(POWER_OFF_TIMEOUT_MS, &mut || cpu.is_off()) {
            log::warn!("peer CPU is still on from an earlier command");
            return Err(AbiError::Retry);
        }
        state.seq += 1;
        let seq = state.seq;
        let mail = Mailbox {
            seq,
            command: op.encode(),
            done_seq: 0,
            status: 0,
            result: 0,
            fault_addr: 0,
            peer: u64::from(peer.get()),
        };
        cpu.post(identity, &mail);
        self.current.store(identity, Ordering::Release);
        if let Err(e) = cpu.power_on(identity) {
            log::error!("PSCI CPU_ON of the peer CPU failed: {e}");
            return Err(AbiError::Aborted);
        }
        let finished = cpu.wait(COMMAND_TIMEOUT_MS, &mut || cpu.mailbox(identity).done_seq == seq);
        if !finished {
            log::error!(
                "peer {peer} did not answer command {seq} ({op}) within {COMMAND_TIMEOUT_MS} ms: \
                 stopping its CPU"
            );
            self.stop(cpu, identity, &mut state)?;
            return Err(AbiError::Aborted);
        }
        let answer = cpu.mailbox(identity);
        if !cpu.wait(POWER_OFF_TIMEOUT_MS, &mut || cpu.is_off()) {
            log::warn!("peer CPU did not power off after command {seq}");
        }
        match answer.status {
            abi::STATUS_OK => Ok(answer.result),
            abi::STATUS_FAULT if is_injected_abort(answer.result) => {
                log::warn!(
                    "peer {peer} faulted at {:#x} (ESR {:#x}) running {op}",
                    answer.fault_addr,
                    answer.result
                );
                Err(AbiError::PeerFault)
            }
            abi::STATUS_FAULT => {
                log::error!(
                    "peer {peer} took an exception warden did not inject (ESR {:#x}, FAR {:#x}) \
                     running {op}",
                    answer.result,
                    answer.fault_addr
                );
                Err(AbiError::Aborted)
            }
            abi::STATUS_BAD_COMMAND => Err(AbiError::InvalidParameters),
            other => {
                log::error!("peer {peer} answered status {other} to {op}");
                Err(AbiError::Aborted)
            }
        }
    }

    /// Step 3: raise the stop flag, take the windows away, and wait for the CPU to go off.
    fn stop<C: PeerCpu + ?Sized>(
        &self,
        cpu: &C,
        identity: usize,
        state: &mut RunState,
    ) -> Result<(), AbiError> {
        self.stop.store(true, Ordering::Release);
        self.stopped.fetch_add(1, Ordering::Relaxed);
        state.stopping = Some(identity);
        if let Err(e) = cpu.revoke(identity) {
            // Unmapping whole windows mapped at boot needs no frames; if it still fails the
            // peer may keep running: its windows stay as they are and the CPU stays marked.
            log::error!("could not take the stopped peer's windows away: {e}");
        }
        self.finish_stop(cpu, identity, state).map_err(|_| AbiError::Aborted)
    }

    /// Once the stopped peer's CPU is off: windows back, stop flag down. `RETRY` while it is
    /// not off yet.
    fn finish_stop<C: PeerCpu + ?Sized>(
        &self,
        cpu: &C,
        identity: usize,
        state: &mut RunState,
    ) -> Result<(), AbiError> {
        if !cpu.wait(POWER_OFF_TIMEOUT_MS, &mut || cpu.is_off()) {
            log::error!("the stopped peer's CPU is not off yet; peer commands wait for it");
            return Err(AbiError::Retry);
        }
        if let Err(e) = cpu.restore(identity) {
            log::error!("could not map the stopped peer's windows again: {e}");
            return Err(AbiError::Retry);
        }
        state.stopping = None;
        self.stop.store(false, Ordering::Release);
        log::warn!("stopped peer CPU is off; its windows are back, peer commands resume");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
