//! Secondary CPUs: started by PSCI `CPU_ON` at [`crate::entry::secondary_entry`] with a context
//! id whose low byte is their slot. Each reports in its own mailbox, runs the task the primary
//! left there (if any), then powers itself off.

use crate::cpu;
use crate::entry::MAX_CPUS;
use crate::handoff;
use crate::handoff_scenarios::{self, HammerStats};
use crate::handoff_stress;
use crate::report::Reason;
use crate::shared::SharedU64;
use crate::smccc;

/// Tasks a secondary runs after reporting in ([`Mailbox::task`]).
pub const TASK_NONE: u64 = 0;
/// `two_cpus_hammer_carveouts`' loop on the DSP carveout.
pub const TASK_HAMMER_DSP: u64 = 1;
/// `carveout_neighbours_never_fault`: CPU accesses next to the range CPU 0 hands over.
pub const TASK_NEIGHBOURS_CPU: u64 = 2;
/// `carveout_neighbours_never_fault`: edu DMA and CPU accesses next to that range.
pub const TASK_NEIGHBOURS_DMA: u64 = 3;

/// Slot of the secondary that runs handoff tasks.
pub const HANDOFF_SLOT: u8 = 1;

/// Bytes of a failure reason a secondary can hand back (a multiple of 8).
const REASON_BYTES: usize = 200;
const REASON_WORDS: usize = REASON_BYTES / 8;

/// Context ids the guest passes to CPU_ON: this tag, a round number in bits 15:8 and the slot
/// in bits 7:0. The tag makes a stray or truncated x0 recognisable.
pub const CONTEXT_TAG: u64 = 0x5741_5244_0000_0000;

pub const fn context_id(round: u8, slot: u8) -> u64 {
    CONTEXT_TAG | ((round as u64) << 8) | slot as u64
}

/// One per slot, a cache line each. The primary clears it before CPU_ON; the secondary writes
/// `el` and `mpidr`, then `context` last (non-zero), so `context != 0` means "all written".
#[repr(C, align(64))]
pub struct Mailbox {
    pub context: SharedU64,
    pub el: SharedU64,
    pub mpidr: SharedU64,
    /// 1 if CPU_OFF returned (it must not), with its status in `cpu_off_status`.
    pub cpu_off_returned: SharedU64,
    pub cpu_off_status: SharedU64,
    /// What to do after reporting in ([`TASK_NONE`], [`TASK_HAMMER_DSP`], ...); set by the primary
    /// between [`Mailbox::clear`] and CPU_ON.
    pub task: SharedU64,
    /// The task's results, then `task_done` = 1 last.
    task_failed: SharedU64,
    task_cycles: SharedU64,
    task_retries: SharedU64,
    task_elapsed_ms: SharedU64,
    /// The failure reason: its length, then the bytes packed little-endian into words.
    reason_len: SharedU64,
    reason: [SharedU64; REASON_WORDS],
    pub task_done: SharedU64,
}

impl Mailbox {
    const fn new() -> Self {
        Self {
            context: SharedU64::new(0),
            el: SharedU64::new(0),
            mpidr: SharedU64::new(0),
            cpu_off_returned: SharedU64::new(0),
            cpu_off_status: SharedU64::new(0),
            task: SharedU64::new(TASK_NONE),
            task_failed: SharedU64::new(0),
            task_cycles: SharedU64::new(0),
            task_retries: SharedU64::new(0),
            task_elapsed_ms: SharedU64::new(0),
            reason_len: SharedU64::new(0),
            reason: [const { SharedU64::new(0) }; REASON_WORDS],
            task_done: SharedU64::new(0),
        }
    }

    pub fn clear(&self) {
        self.el.store(0);
        self.mpidr.store(0);
        self.cpu_off_returned.store(0);
        self.cpu_off_status.store(0);
        self.task.store(TASK_NONE);
        self.task_failed.store(0);
        self.task_cycles.store(0);
        self.task_retries.store(0);
        self.task_elapsed_ms.store(0);
        self.reason_len.store(0);
        self.task_done.store(0);
        self.context.store(0);
        cpu::dsb_sy();
    }
}

impl Mailbox {
    /// Leaves a task's outcome for the primary (`task_done` last).
    fn finish_task(&self, outcome: Result<HammerStats, Reason>) {
        match outcome {
            Ok(stats) => {
                self.task_cycles.store(stats.cycles);
                self.task_retries.store(stats.retries);
                self.task_elapsed_ms.store(stats.elapsed_ms);
            }
            Err(why) => {
                let bytes = why.as_bytes();
                for (word, chunk) in self.reason.iter().zip(bytes.chunks(8)) {
                    let mut packed = [0u8; 8];
                    for (to, from) in packed.iter_mut().zip(chunk) {
                        *to = *from;
                    }
                    word.store(u64::from_le_bytes(packed));
                }
                self.reason_len.store(bytes.len().min(REASON_BYTES) as u64);
                self.task_failed.store(1);
            }
        }
        cpu::dsb_sy();
        self.task_done.store(1);
    }
}

/// The outcome of the task a secondary finished (call after `task_done` reads 1).
pub fn task_result(mailbox: &Mailbox) -> Result<HammerStats, Reason> {
    if mailbox.task_failed.load() == 0 {
        return Ok(HammerStats {
            cycles: mailbox.task_cycles.load(),
            retries: mailbox.task_retries.load(),
            elapsed_ms: mailbox.task_elapsed_ms.load(),
        });
    }
    let mut bytes = [0u8; REASON_BYTES];
    for (chunk, word) in bytes.chunks_mut(8).zip(&mailbox.reason) {
        for (to, from) in chunk.iter_mut().zip(word.load().to_le_bytes()) {
            *to = from;
        }
    }
    let len = usize::try_from(mailbox.reason_len.load()).unwrap_or(0).min(REASON_BYTES);
    Err(Reason::from_bytes(bytes.get(..len).unwrap_or_default()))
}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const { Mailbox::new() }; MAX_CPUS];

pub fn mailbox(slot: usize) -> Option<&'static Mailbox> {
    MAILBOXES.get(slot)
}

/// Rust entry of a secondary CPU (from the entry code, on its own stack, slot in TPIDR_EL1).
pub extern "C" fn secondary_main(context_id: u64) -> ! {
    let Some(mailbox) = MAILBOXES.get(cpu::cpu_slot()) else { cpu::park() };
    mailbox.el.store(cpu::current_el());
    mailbox.mpidr.store(cpu::mpidr_affinity());
    mailbox.context.store(context_id);
    cpu::dsb_sy();
    match mailbox.task.load() {
        TASK_HAMMER_DSP => mailbox.finish_task(handoff_scenarios::hammer(&handoff::dsp())),
        // These report their findings in their own words (`handoff_stress`).
        TASK_NEIGHBOURS_CPU => mailbox.finish_task(Ok(handoff_stress::inside_hammer())),
        TASK_NEIGHBOURS_DMA => mailbox.finish_task(Ok(handoff_stress::dma_hammer())),
        _ => {}
    }
    let status = match smccc::psci_conduit() {
        Some(conduit) => smccc::cpu_off(conduit),
        None => warden_abi::psci::NOT_SUPPORTED,
    };
    // CPU_OFF returned: leave the status for the primary (which reports it) and stop here.
    mailbox.cpu_off_status.store(status as u64);
    mailbox.cpu_off_returned.store(1);
    cpu::dsb_sy();
    cpu::park()
}
