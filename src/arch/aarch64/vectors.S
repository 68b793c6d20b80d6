// EL2 exception vectors. Every entry saves a full TrapFrame (src/trap/frame.rs: x0..x30, ELR,
// SPSR, ESR, FAR, HPFAR) on SP_EL2 and calls Rust with (frame, kind); the handler may rewrite
// the frame, which is restored before ERET. One exception: an HVC or SMC64 from the host first
// takes the call fast path (lower_call_body, src/trap/fast.rs), which saves only x0..x18 and
// x30 and completes the frame only for a call the fast path does not answer.
//
// kind = vector index: 0-3 EL2 with SP_EL0, 4-7 EL2 with SP_EL2, 8-11 lower EL AArch64,
// 12-15 lower EL AArch32; within each group sync, IRQ, FIQ, SError.

// A vector slot is 32 instructions: save x0/x1, put the kind in x1, branch to the shared body.
.macro VECTOR body, kind
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #16 * 0]
    mov     x1, #\kind
    b       \body
.endm

// The lower-EL AArch64 synchronous slot: an HVC64 or SMC64 goes to the call fast path, the
// rest to the full body as kind 8. x0 is saved before it is used as scratch.
.macro LOWER_SYNC_VECTOR
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #16 * 0]
    mrs     x0, esr_el2
    lsr     x0, x0, #{ESR_EC_SHIFT}
    cmp     x0, #{EC_HVC64}
    ccmp    x0, #{EC_SMC64}, #0b0100, ne    // HVC: Z stays set; else Z = (EC == SMC64)
    b.eq    lower_call_body
    mov     x1, #8
    b       lower_sync_body
.endm

// An exception taken from EL2 is fatal and may come from a stack overflow, so it first moves to
// this CPU's emergency stack: SP_EL0 (the host's, never restored after a fatal error) holds x0
// while SP itself serves as the scratch register for the address.
.macro FATAL_VECTOR kind
    .balign 0x80
    msr     sp_el0, x0
    mrs     x0, tpidr_el2
    and     x0, x0, #{CPU_MASK}
    add     x0, x0, #1
    lsl     x0, x0, #{EMERGENCY_SHIFT}
    mov     sp, x0
    adrp    x0, {EMERGENCY_STACKS}
    add     x0, x0, :lo12:{EMERGENCY_STACKS}
    add     sp, sp, x0
    mrs     x0, sp_el0
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #16 * 0]
    mov     x1, #\kind
    b       el2_fault_body
.endm

// Shared body: save the rest, call handler(frame, kind), restore, ERET.
.macro TRAP_BODY name, handler
\name:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el2
    stp     x30, x2, [sp, #16 * 15]     // x30 @ 240, elr @ 248
    mrs     x2, spsr_el2
    mrs     x3, esr_el2
    stp     x2, x3, [sp, #16 * 16]      // spsr @ 256, esr @ 264
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    stp     x2, x3, [sp, #16 * 17]      // far @ 272, hpfar @ 280
\name\()_saved:
    mov     x0, sp
    bl      \handler
    ldp     x30, x0, [sp, #16 * 15]
    msr     elr_el2, x0
    ldr     x0, [sp, #16 * 16]
    msr     spsr_el2, x0
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    add     sp, sp, #{FRAME_SIZE}
    eret
    dsb     nsh                         // no straight-line speculation past ERET
    isb
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    FATAL_VECTOR 0
    FATAL_VECTOR 1
    FATAL_VECTOR 2
    FATAL_VECTOR 3
    FATAL_VECTOR 4
    FATAL_VECTOR 5
    FATAL_VECTOR 6
    FATAL_VECTOR 7
    LOWER_SYNC_VECTOR
    VECTOR lower_other_body, 9
    VECTOR lower_other_body, 10
    VECTOR lower_other_body, 11
    VECTOR lower_other_body, 12
    VECTOR lower_other_body, 13
    VECTOR lower_other_body, 14
    VECTOR lower_other_body, 15

// The call fast path: x0/x1 are saved; save the rest of what Rust may clobber (x2..x18, x30)
// in their frame slots and ask lower_call (src/boot.rs), which answers a fast call and returns
// 1, or returns 0 having changed nothing. ELR_EL2 and SPSR_EL2 stay in their registers (warden
// takes no exception of its own before ERET), so only the saved registers are restored.
lower_call_body:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    str     x18, [sp, #16 * 9]
    str     x30, [sp, #16 * 15]
    mov     x0, sp
    bl      {LOWER_CALL}
    cbz     x0, 1f
    ldr     x30, [sp, #16 * 15]
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldr     x18, [sp, #16 * 9]
    add     sp, sp, #{FRAME_SIZE}
    eret
    dsb     nsh                         // no straight-line speculation past ERET
    isb
    // Not a fast call: x19..x29 still hold the host's values (callee-saved in Rust), and the
    // exception registers are untouched. Complete the frame and run the full path as kind 8.
1:  str     x19, [sp, #16 * 9 + 8]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el2
    str     x2, [sp, #16 * 15 + 8]      // elr @ 248
    mrs     x2, spsr_el2
    mrs     x3, esr_el2
    stp     x2, x3, [sp, #16 * 16]      // spsr @ 256, esr @ 264
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    stp     x2, x3, [sp, #16 * 17]      // far @ 272, hpfar @ 280
    mov     x1, #8
    b       lower_sync_body_saved

    TRAP_BODY el2_fault_body, {EL2_FAULT}
    TRAP_BODY lower_sync_body, {LOWER_SYNC}
    TRAP_BODY lower_other_body, {LOWER_OTHER}
