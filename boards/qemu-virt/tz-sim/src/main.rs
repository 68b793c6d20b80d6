//! tz-sim's EL3 program (see the library's documentation for what it plays).
//!
//! Every CPU starts at `_start` (QEMU's `-bios` flash, EL3, MMU off) at once. Each takes the
//! EL3 stack of its slot (`layout::cpu_slot`; a CPU without one parks for good). The boot CPU
//! (MPIDR affinity 0) zeroes BSS, initialises the distributor, learns the board's CPUs from the
//! GIC and enters the hyp image; the others wait in a pen (`pen`) until a `CPU_ON` names them,
//! and go back to it on `CPU_OFF`. Every exit from EL3 to the hyp image programs the CPU's EL3
//! controls and its GIC CPU interface first (`cpu::prepare_lower_els`, `gic::init_this_cpu`).
//!
//! The MMU stays off at EL3: data accesses are Device-nGnRnE, where QEMU's TCG (the only place
//! tz-sim runs) carries out the exclusive loads and stores of the PSCI lock as on Normal memory.
#![no_std]
#![no_main]

mod board;
mod cpu;
mod gic;
mod uart;

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use tz_sim::layout::{self, MAX_CPUS, STACK_SIZE};
use tz_sim::psci::{self, Action, Psci};
use tz_sim::scm::{self, Scm, ScmCall};

/// The power state of every CPU, shared by all of them.
static PSCI: spin::Mutex<Psci> = spin::Mutex::new(Psci::new());
/// RAM and the SMMU, from the boot DT (set by the boot CPU before any SMC can come).
static BOARD: spin::Once<board::Board> = spin::Once::new();
/// The SCM firmware's state (ownership, PAS): one call at a time.
static SCM: spin::Mutex<Scm> = spin::Mutex::new(Scm::new());
/// Per slot: the entry a `CPU_ON` released the CPU towards (0: stay in the pen).
static PEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    mrs     x19, mpidr_el1
    // Slot = Aff0 + 16 * Aff1 (layout::cpu_slot); Aff0 < 16, no Aff2/Aff3, slot < MAX_CPUS.
    and     x20, x19, #0xff
    cmp     x20, #16
    b.hs    9f
    ubfx    x21, x19, #8, #8
    add     x20, x20, x21, lsl #4
    cmp     x20, #{max_cpus}
    b.hs    9f
    ubfx    x21, x19, #16, #8
    cbnz    x21, 9f
    ubfx    x21, x19, #32, #8
    cbnz    x21, 9f
    // SP_EL3 = top of this slot's stack.
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x20, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    adrp    x1, el3_vectors
    add     x1, x1, :lo12:el3_vectors
    msr     vbar_el3, x1
    isb
    mov     x0, x20
    // The boot CPU (affinity 0, slot 0) zeroes BSS; the others go to their pen.
    cbnz    x20, 2f
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       1b
3:  bl      {primary}
2:  bl      {pen}
9:  wfe
    b       9b

    // park_in_pen(slot): back to the pen on a fresh stack (CPU_OFF never returns).
    .global park_in_pen
park_in_pen:
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x0, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    bl      {pen}
    b       9b

    // EL3 vectors. Only an SMC from the non-secure AArch64 side is expected (lower EL,
    // synchronous: offset 0x400); everything else is reported and stops the CPU.
    .section .text.vectors, "ax"
    .balign 2048
el3_vectors:
    .rept 8
    .balign 0x80
    b       20f
    .endr
    .balign 0x80
    b       10f                         // lower EL, AArch64, synchronous
    .rept 7
    .balign 0x80
    b       20f
    .endr

    // Save x0..x30 (the frame tz-sim's handler reads and writes), handle, restore, return.
10: sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
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
    str     x30, [sp, #240]
    mov     x0, sp
    bl      {lower_sync}
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #256
    eret

20: mov     x0, sp
    bl      {unexpected}
    b       9b
"#,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    primary = sym primary_main,
    pen = sym pen,
    lower_sync = sym lower_sync,
    unexpected = sym unexpected,
);

unsafe extern "C" {
    /// Back to the pen of `slot` on a fresh stack.
    fn park_in_pen(slot: usize) -> !;
}

/// The boot CPU, after BSS: the GIC's global state, the board's CPUs, then the hyp image.
extern "C" fn primary_main(slot: usize) -> ! {
    let gic = gic::Version::of_this_cpu();
    gic::init_distributor(gic);
    let boot_mpidr = cpu::mpidr();
    let mut cpus = 0;
    {
        let mut psci = PSCI.lock();
        gic::for_each_cpu(gic, |mpidr| {
            if psci.add_cpu(mpidr, mpidr == boot_mpidr) {
                cpus += 1;
            } else {
                uart::print(format_args!("tz-sim: CPU {mpidr:#x} has no slot: left off\n"));
            }
        });
    }
    let board = BOARD.call_once(board::Board::from_boot_dt);
    uart::print(format_args!(
        "\ntz-sim v{}: EL3 on QEMU virt ({gic}, {cpus} CPUs), PSCI 1.0 and Qualcomm SCM over SMC; entering the hyp image at {:#x} at EL2 with x0 = {:#x}, x1 = {}\n",
        env!("CARGO_PKG_VERSION"),
        layout::HYP_BASE,
        layout::NEXT_STAGE,
        layout::HYP_ENTRY_AARCH64,
    ));
    for &(base, size) in board.ram.regions() {
        uart::print(format_args!("tz-sim: RAM {base:#x}..{:#x}\n", base + size));
    }
    match board.smmu {
        Some(smmu) => uart::print(format_args!("tz-sim: SMMUv3 at {smmu:#x}\n")),
        None => uart::print(format_args!("tz-sim: no SMMUv3\n")),
    }
    enter_hyp(slot, gic, layout::NEXT_STAGE)
}

/// A CPU that is off: waits until a `CPU_ON` releases it, then enters the hyp image with the
/// entry that call named.
extern "C" fn pen(slot: usize) -> ! {
    let entry = loop {
        let entry = PEN[slot].swap(0, Ordering::Acquire);
        if entry != 0 {
            break entry;
        }
        cpu::wait_for_event();
    };
    PSCI.lock().arrived(slot);
    enter_hyp(slot, gic::Version::of_this_cpu(), entry)
}

fn enter_hyp(slot: usize, gic: gic::Version, entry: u64) -> ! {
    gic::init_this_cpu(gic);
    cpu::prepare_lower_els();
    let _ = slot;
    // SAFETY: the hyp image is loaded at HYP_BASE (the board's convention); EL2 is set up to
    // start it with the MMU off.
    unsafe { cpu::eret_to_el2(layout::HYP_BASE, entry, layout::HYP_ENTRY_AARCH64) }
}

/// A synchronous exception from the non-secure side: an SMC (SiP: SCM; else PSCI), or a
/// report.
extern "C" fn lower_sync(frame: &mut [u64; 32]) {
    let esr = cpu::esr_el3();
    const EC_SMC64: u64 = 0x17;
    if (esr >> 26) & 0x3f != EC_SMC64 {
        unexpected(frame);
    }
    if warden_abi::smccc::owner(frame[0] as u32) == scm::OWNER_SIP {
        let x = [frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]];
        let answer = match (ScmCall::decode(&x), BOARD.get()) {
            (Some(call), Some(board)) => SCM.lock().handle(&call, board),
            _ => scm::answer(scm::status::NOT_SUPPORTED),
        };
        frame[..4].copy_from_slice(&answer);
        return;
    }
    let call = psci::decode([frame[0], frame[1], frame[2], frame[3]]);
    let slot = layout::cpu_slot(cpu::mpidr()).unwrap_or(usize::MAX);
    let action = PSCI.lock().handle(call, slot);
    frame[0] = match action {
        Action::Return(x0) => x0,
        Action::PowerOn { slot, entry } => {
            PEN[slot].store(entry, Ordering::Release);
            cpu::send_event();
            0
        }
        Action::Standby => {
            cpu::wait_for_interrupt();
            0
        }
        // SAFETY: this CPU's state is Off; its stack is abandoned for a fresh one.
        Action::PowerOff => unsafe { park_in_pen(slot) },
        Action::SystemOff => {
            uart::print(format_args!("tz-sim: SYSTEM_OFF\n"));
            cpu::gpio_pulse(layout::GPIO_POWEROFF_PIN)
        }
        Action::SystemReset => {
            uart::print(format_args!("tz-sim: SYSTEM_RESET\n"));
            cpu::gpio_pulse(layout::GPIO_RESTART_PIN)
        }
    };
}

/// Anything else reaching EL3: reported, and the CPU stops.
extern "C" fn unexpected(_frame: &mut [u64; 32]) -> ! {
    uart::print(format_args!(
        "tz-sim: FATAL: unexpected exception at EL3 on CPU {:#x}: ESR_EL3 {:#x} ELR_EL3 {:#x} FAR_EL3 {:#x} SPSR_EL3 {:#x}\n",
        cpu::mpidr(),
        cpu::esr_el3(),
        cpu::elr_el3(),
        cpu::far_el3(),
        cpu::spsr_el3()
    ));
    cpu::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    uart::print(format_args!("tz-sim: FATAL: panic: {info}\n"));
    cpu::halt()
}
