//! The few system registers and barriers the guest needs, and bounded waiting.

use core::arch::asm;

/// Current exception level (0..3).
pub fn current_el() -> u64 {
    let value: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) value, options(nomem, nostack, preserves_flags)) };
    (value >> 2) & 3
}

/// Affinity fields of MPIDR_EL1 (Aff3..Aff0), the form PSCI and the DT use.
pub fn mpidr_affinity() -> u64 {
    let value: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value & 0xff_00ff_ffff
}

/// This CPU's slot (stack and per-CPU data index), set by the entry code in TPIDR_EL1.
pub fn cpu_slot() -> usize {
    let value: u64;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Full-system data synchronization barrier: the mailbox writes before it are visible to the
/// other CPU before anything after it (belt and braces on top of Device-nGnRnE ordering).
pub fn dsb_sy() {
    // SAFETY: a barrier has no effect other than ordering.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Waits for events forever: the end of a CPU's life when nothing else can be done.
pub fn park() -> ! {
    loop {
        // SAFETY: WFE only waits; DAIF stays masked.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}

/// The physical counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading the physical counter has no side effects; the ISB keeps the read from
    // being hoisted above earlier instructions.
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nomem, nostack)) };
    value
}

/// Ticks per second of [`counter`].
pub fn counter_frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Polls `condition` until it holds (true) or `timeout_ms` of counter time have passed
/// (false). Also bounded by a poll count, so a counter that does not tick (or a CNTFRQ of 0)
/// cannot turn this into a hang.
pub fn wait_until(timeout_ms: u64, mut condition: impl FnMut() -> bool) -> bool {
    const MAX_POLLS_PER_MS: u64 = 200_000;
    let ticks = counter_frequency().saturating_mul(timeout_ms) / 1000;
    let start = counter();
    let max_polls = timeout_ms.saturating_mul(MAX_POLLS_PER_MS);
    let mut polls = 0u64;
    loop {
        if condition() {
            return true;
        }
        polls += 1;
        if polls >= max_polls || counter().wrapping_sub(start) >= ticks {
            return condition();
        }
        core::hint::spin_loop();
    }
}

/// Milliseconds of counter time since `start` (a [`counter`] value); 0 if CNTFRQ is 0.
pub fn elapsed_ms(start: u64) -> u64 {
    let ticks = counter().wrapping_sub(start);
    match counter_frequency() / 1000 {
        0 => 0,
        ticks_per_ms => ticks / ticks_per_ms,
    }
}
