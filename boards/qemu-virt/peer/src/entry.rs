//! Entry code and exception vectors: run before (and instead of) any Rust stack frame.
//!
//! warden enters the program at its first byte ([`warden_abi::peer::PROGRAM_IPA`]) at EL1h with
//! the MMU off (its accesses are Normal cacheable through HCR_EL2.DC), DAIF masked, SP_EL1
//! unknown and x0 = the mailbox IPA. The program window is read-only to the peer; `_start`
//! takes the stack at the top of the data window ([`warden_abi::peer::DATA_IPA`]),
//! installs its own vector table (`peer_vectors`) in VBAR_EL1, zeroes BSS and calls [`crate::peer_main`] with
//! x0 untouched. Every command starts here again: nothing survives from the previous one.
//!
//! Every exception vector (the ones that matter are the synchronous ones: warden injects a
//! synchronous external abort when the peer touches memory it was not given) takes a fresh
//! stack and calls [`crate::peer_exception`] with ESR_EL1 and FAR_EL1; it never returns.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    // x0 = mailbox IPA: left alone until peer_main gets it.
    adrp    x9, __stack_top
    add     x9, x9, :lo12:__stack_top
    mov     sp, x9
    adrp    x9, peer_vectors
    add     x9, x9, :lo12:peer_vectors
    msr     vbar_el1, x9
    isb
    adrp    x9, __bss_start
    add     x9, x9, :lo12:__bss_start
    adrp    x10, __bss_end
    add     x10, x10, :lo12:__bss_end
1:  cmp     x9, x10
    b.hs    2f
    stp     xzr, xzr, [x9], #16     // bounds are 16-byte aligned (linker/peer.ld)
    b       1b
2:  bl      {main}
3:  wfi                             // peer_main does not return; never reached
    b       3b

    // 16 vectors of 0x80 bytes (current EL with SP_EL0 / SP_ELx, lower EL AArch64 / AArch32;
    // synchronous, IRQ, FIQ, SError each), all handled the same way.
    .section .text.vectors, "ax"
    .balign 2048
    .global peer_vectors
peer_vectors:
    .rept 16
    .balign 0x80
    b       4f
    .endr

    // Fresh stack (the interrupted code is abandoned), then Rust with x0 = ESR, x1 = FAR.
4:  adrp    x9, __stack_top
    add     x9, x9, :lo12:__stack_top
    mov     sp, x9
    mrs     x0, esr_el1
    mrs     x1, far_el1
    bl      {exception}
5:  wfi
    b       5b
"#,
    main = sym crate::peer_main,
    exception = sym crate::peer_exception,
);
