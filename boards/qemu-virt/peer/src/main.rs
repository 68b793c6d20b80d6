//! warden's simulated peer (qemu-virt): the EL1 program that stands in for a modem or DSP.
//!
//! warden runs it on the CPU it keeps from the host, once per host `PEER_COMMAND`, under the
//! peer's own stage-2 (see `docs/abi.md`, "Simulated peer", and [`warden_abi::peer`]). Each run:
//! read the command from the [`Mailbox`] (x0 at entry), do it on memory handed to this peer,
//! write `status`, `result`, `fault_addr`, then `done_seq = seq`, and call `PEER_DONE`.
//!
//! | op         | what the program does                        | `result`                      |
//! |------------|----------------------------------------------|-------------------------------|
//! | `Checksum` | [`Checksum`] over the range's 64-bit words   | the checksum                  |
//! | `Fill`     | writes `pattern` to every 64-bit word        | 0                             |
//! | `Release`  | `HVC #0` `RELEASE(base, size, clear)`        | warden's `x0` (0 or an error) |
//! | `Touch`    | reads the 64-bit word at `addr`              | its value                     |
//! | `Spin`     | loops forever, touching nothing              | none: warden stops the CPU    |
//! | malformed  | nothing (`STATUS_BAD_COMMAND`)               | the decode error's code       |
//!
//! Any exception (warden injects a synchronous external abort when the peer touches memory it
//! was not given) ends the command with `STATUS_FAULT`, `fault_addr` = FAR_EL1, `result` =
//! ESR_EL1. Memory is only ever accessed with volatile 64-bit operations, so each access the
//! command names happens exactly once and in order.
#![no_std]
#![no_main]

mod entry;

use core::arch::asm;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use warden_abi::handoff::{Request, Return, Target};
use warden_abi::peer::{
    Checksum, Mailbox, Op, PEER_DONE, STATUS_BAD_COMMAND, STATUS_FAULT, STATUS_OK,
};

/// The mailbox of the command being run (x0 at entry), for the exception path. Plain loads and
/// stores only: one CPU, and no read-modify-write.
static MAILBOX: AtomicUsize = AtomicUsize::new(0);
/// Set once an exception has been reported: a second one (say, the mailbox itself faulting)
/// must not loop through the vector forever.
static REPORTING_EXCEPTION: AtomicBool = AtomicBool::new(false);

/// How a command ended: what goes into the mailbox.
struct Outcome {
    status: u64,
    result: u64,
    fault_addr: u64,
}

/// Called by `_start` (stack set, BSS zeroed, vectors installed) with x0 = the mailbox IPA.
extern "C" fn peer_main(mailbox: *mut Mailbox) -> ! {
    MAILBOX.store(mailbox as usize, Ordering::Relaxed);
    // SAFETY: warden maps the mailbox page at x0 for this peer for the whole command; it is
    // shared with warden, so every access is volatile.
    let command = unsafe { (&raw const (*mailbox).command).read_volatile() };
    let outcome = match Op::decode(command) {
        Ok(op) => Outcome { status: STATUS_OK, result: run(op), fault_addr: 0 },
        Err(e) => Outcome { status: STATUS_BAD_COMMAND, result: e.register(), fault_addr: 0 },
    };
    finish(mailbox, outcome)
}

/// Called by every exception vector on a fresh stack with ESR_EL1 and FAR_EL1.
extern "C" fn peer_exception(esr: u64, far: u64) -> ! {
    let mailbox: *mut Mailbox = ptr::with_exposed_provenance_mut(MAILBOX.load(Ordering::Relaxed));
    if REPORTING_EXCEPTION.load(Ordering::Relaxed) || mailbox.is_null() {
        // Already reporting one (or no mailbox yet): touching the mailbox again could fault
        // again. Give the CPU back; warden sees done_seq != seq and treats it as no answer.
        done()
    }
    REPORTING_EXCEPTION.store(true, Ordering::Relaxed);
    finish(mailbox, Outcome { status: STATUS_FAULT, result: esr, fault_addr: far })
}

/// Runs a validated command; returns the mailbox `result`. Ranges are page aligned and do not
/// wrap (checked by [`Op::decode`]); warden ran the command only if they are this peer's.
fn run(op: Op) -> u64 {
    match op {
        Op::Checksum { base, size } => {
            let words = words(base);
            let mut sum = Checksum::new();
            for i in 0..size / 8 {
                // SAFETY: a read of memory warden handed to this peer (or a contained fault,
                // reported through the vector); `words` is in bounds of the checked range.
                sum = sum.add(unsafe { words.add(i as usize).read_volatile() });
            }
            sum.value()
        }
        Op::Fill { base, size, pattern } => {
            let words = words(base);
            for i in 0..size / 8 {
                // SAFETY: as for Checksum; nothing in this program lives in the range (its
                // own windows are not transferable memory, and its program is read-only).
                unsafe { words.add(i as usize).write_volatile(pattern) };
            }
            0
        }
        Op::Release { base, size, clear } => {
            let call = Request::Release(Return { target: Target::Range { base, size }, clear });
            hvc(call.encode())[0]
        }
        Op::Touch { addr } => {
            let word: *const u64 = ptr::with_exposed_provenance(addr as usize);
            // SAFETY: 8-byte aligned (checked by Op::decode); a read that either succeeds or is
            // contained by warden with an abort this program reports.
            unsafe { word.read_volatile() }
        }
        Op::Spin => spin(),
    }
}

/// A peer that never finishes (the `Spin` command): no memory access, no call, no WFI; only
/// warden taking the program away stops it (its next instruction fetch faults into warden).
fn spin() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The first word of a checked range, as a pointer (the MMU is off: address == IPA).
fn words(base: u64) -> *mut u64 {
    ptr::with_exposed_provenance_mut(base as usize)
}

/// Writes the outcome, publishes `done_seq = seq` after it, and hands the CPU back.
fn finish(mailbox: *mut Mailbox, outcome: Outcome) -> ! {
    // SAFETY: the mailbox page is mapped for this peer (see peer_main); volatile because warden
    // reads it from another CPU.
    unsafe {
        let seq = (&raw const (*mailbox).seq).read_volatile();
        (&raw mut (*mailbox).status).write_volatile(outcome.status);
        (&raw mut (*mailbox).result).write_volatile(outcome.result);
        (&raw mut (*mailbox).fault_addr).write_volatile(outcome.fault_addr);
        dsb_sy();
        (&raw mut (*mailbox).done_seq).write_volatile(seq);
        dsb_sy();
    }
    done()
}

/// `PEER_DONE`; warden powers the CPU off and does not return. If it ever did, park.
fn done() -> ! {
    hvc([u64::from(PEER_DONE), 0, 0, 0, 0, 0, 0, 0]);
    loop {
        // SAFETY: waits for an interrupt (masked: in practice forever); no memory effects.
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
    }
}

/// Full-system data barrier: the mailbox writes before it are visible to warden's CPU first.
fn dsb_sy() {
    // SAFETY: a barrier only; not `nomem`, so the compiler keeps memory accesses on their side.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// `HVC #0` with `x0..x7` in and out. SMCCC lets the callee clobber `x0..x17`.
fn hvc(regs: [u64; 8]) -> [u64; 8] {
    let mut r = regs;
    // SAFETY: a call into warden, which follows SMCCC: only x0..x17 change; memory may change
    // (RELEASE unmaps pages), hence no `nomem`.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
            inout("x4") r[4], inout("x5") r[5], inout("x6") r[6], inout("x7") r[7],
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    r
}

/// Nothing here should panic (no indexing that can fail, wrapping-free checked ranges); if
/// something does, report it like an exception with ESR = FAR = 0 rather than hang.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    peer_exception(0, 0)
}
