//! Exception vectors. The guest expects exceptions only inside [`catch`]: a synchronous
//! exception from the current EL while a probe is armed on this CPU is recorded and the
//! faulting instruction skipped. Anything else is fatal: reported, then SYSTEM_OFF.
//!
//! EL2 has its own table only to turn a stray exception into a report when the guest was
//! (wrongly) started at EL2; nothing is ever caught there.

use core::arch::{asm, global_asm};
use core::mem::size_of;

use crate::cpu;
use crate::entry::MAX_CPUS;
use crate::report;
use crate::shared::SharedU64;

/// Vector index (offset / 0x80) of a synchronous exception from the current EL using SP_ELx.
pub const VECTOR_SYNC_CURRENT_SPX: u64 = 4;

/// Registers saved by the EL1 vector stub, in the order the assembly stores them.
#[repr(C)]
pub struct ExceptionFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _padding: u64,
}

const FRAME_SIZE: usize = size_of::<ExceptionFrame>();
const _: () = assert!(FRAME_SIZE == 272 && FRAME_SIZE.is_multiple_of(16));

global_asm!(
    r#"
.macro guest_el1_vector index
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp, #0]
    mov     x1, #\index
    b       guest_el1_exception_common
.endm

.macro guest_el2_vector index
    .balign 0x80
    mov     x0, #\index
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    b       {el2_exception}
.endm

    .text
    .balign 2048
    .global guest_el1_vectors
    .hidden guest_el1_vectors
guest_el1_vectors:
    guest_el1_vector 0
    guest_el1_vector 1
    guest_el1_vector 2
    guest_el1_vector 3
    guest_el1_vector 4
    guest_el1_vector 5
    guest_el1_vector 6
    guest_el1_vector 7
    guest_el1_vector 8
    guest_el1_vector 9
    guest_el1_vector 10
    guest_el1_vector 11
    guest_el1_vector 12
    guest_el1_vector 13
    guest_el1_vector 14
    guest_el1_vector 15

guest_el1_exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #240]
    str     x3, [sp, #256]
    mov     x0, sp
    bl      {el1_exception}         // (frame, vector index); may change frame.elr
    ldp     x30, x2, [sp, #240]
    ldr     x3, [sp, #256]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x28, x29, [sp, #224]
    ldp     x26, x27, [sp, #208]
    ldp     x24, x25, [sp, #192]
    ldp     x22, x23, [sp, #176]
    ldp     x20, x21, [sp, #160]
    ldp     x18, x19, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame_size}
    eret

    .balign 2048
    .global guest_el2_vectors
    .hidden guest_el2_vectors
guest_el2_vectors:
    guest_el2_vector 0
    guest_el2_vector 1
    guest_el2_vector 2
    guest_el2_vector 3
    guest_el2_vector 4
    guest_el2_vector 5
    guest_el2_vector 6
    guest_el2_vector 7
    guest_el2_vector 8
    guest_el2_vector 9
    guest_el2_vector 10
    guest_el2_vector 11
    guest_el2_vector 12
    guest_el2_vector 13
    guest_el2_vector 14
    guest_el2_vector 15
"#,
    frame_size = const FRAME_SIZE,
    el1_exception = sym el1_exception,
    el2_exception = sym el2_exception,
);

/// What the vector saw when a probe caught an exception.
#[derive(Clone, Copy, Debug)]
pub struct Caught {
    /// Vector index (offset / 0x80).
    pub vector: u64,
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
}

impl Caught {
    /// ESR exception class.
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }
}

/// Per-CPU probe state, a cache line each so CPUs never share one.
#[repr(C, align(64))]
struct ProbeSlot {
    armed: SharedU64,
    caught: SharedU64,
    vector: SharedU64,
    esr: SharedU64,
    far: SharedU64,
    elr: SharedU64,
}

impl ProbeSlot {
    const fn new() -> Self {
        Self {
            armed: SharedU64::new(0),
            caught: SharedU64::new(0),
            vector: SharedU64::new(0),
            esr: SharedU64::new(0),
            far: SharedU64::new(0),
            elr: SharedU64::new(0),
        }
    }
}

static PROBES: [ProbeSlot; MAX_CPUS] = [const { ProbeSlot::new() }; MAX_CPUS];

/// Runs `attempt` with a probe armed: a synchronous exception it raises at the current EL is
/// recorded and the faulting instruction skipped (ELR += 4), so `attempt` continues after it.
/// Returns what `attempt` returned and what was caught, if anything. EL1 only.
pub fn catch<T>(attempt: impl FnOnce() -> T) -> (T, Option<Caught>) {
    let Some(slot) = PROBES.get(cpu::cpu_slot()) else {
        return (attempt(), None);
    };
    slot.caught.store(0);
    slot.armed.store(1);
    let result = attempt();
    slot.armed.store(0);
    let caught = (slot.caught.load() == 1).then(|| Caught {
        vector: slot.vector.load(),
        esr: slot.esr.load(),
        far: slot.far.load(),
        elr: slot.elr.load(),
    });
    (result, caught)
}

/// Whether the probe armed by the [`catch`] running on this CPU has caught an exception yet.
/// A probe catches one exception only (a second one is fatal), so a loop of accesses inside
/// `catch` checks this after each access and stops at the first abort.
pub fn caught_yet() -> bool {
    PROBES.get(cpu::cpu_slot()).is_some_and(|slot| slot.caught.load() == 1)
}

fn read_esr_far_el1() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reading the syndrome registers has no side effects.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far,
            options(nomem, nostack, preserves_flags));
    }
    (esr, far)
}

extern "C" fn el1_exception(frame: &mut ExceptionFrame, vector: u64) {
    let (esr, far) = read_esr_far_el1();
    if vector == VECTOR_SYNC_CURRENT_SPX
        && let Some(slot) = PROBES.get(cpu::cpu_slot())
        && slot.armed.load() == 1
    {
        slot.vector.store(vector);
        slot.esr.store(esr);
        slot.far.store(far);
        slot.elr.store(frame.elr);
        slot.armed.store(0);
        slot.caught.store(1);
        // Every A64 instruction is 4 bytes; resume after the one that faulted.
        frame.elr = frame.elr.wrapping_add(4);
        return;
    }
    fatal_exception(1, vector, esr, frame.elr, far)
}

extern "C" fn el2_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    fatal_exception(2, vector, esr, elr, far)
}

/// Set once a fatal exception is being reported: a second one (say, in the reporting itself)
/// skips straight to parking instead of recursing.
static FATAL_IN_PROGRESS: SharedU64 = SharedU64::new(0);

fn fatal_exception(el: u64, vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    if FATAL_IN_PROGRESS.load() != 0 {
        cpu::park();
    }
    FATAL_IN_PROGRESS.store(1);
    report::fatal(
        "unexpected_exception",
        format_args!(
            "EL{el} vector {vector} (offset {:#x}), ESR {esr:#x} (EC {:#x}), ELR {elr:#x}, \
             FAR {far:#x}, CPU slot {}",
            vector * 0x80,
            (esr >> 26) & 0x3f,
            cpu::cpu_slot()
        ),
    )
}
