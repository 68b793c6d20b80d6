//! Secondary CPUs: started by PSCI `CPU_ON` at [`crate::entry::secondary_entry`] with a context
//! id whose low byte is their slot. Each reports in its own mailbox, then powers itself off.

use crate::cpu;
use crate::entry::MAX_CPUS;
use crate::shared::SharedU64;
use crate::smccc;

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
}

impl Mailbox {
    const fn new() -> Self {
        Self {
            context: SharedU64::new(0),
            el: SharedU64::new(0),
            mpidr: SharedU64::new(0),
            cpu_off_returned: SharedU64::new(0),
            cpu_off_status: SharedU64::new(0),
        }
    }

    pub fn clear(&self) {
        self.el.store(0);
        self.mpidr.store(0);
        self.cpu_off_returned.store(0);
        self.cpu_off_status.store(0);
        self.context.store(0);
        cpu::dsb_sy();
    }
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
