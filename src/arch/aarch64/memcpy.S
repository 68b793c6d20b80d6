// memcpy for warden's EL2 code (assembled through global_asm! in arch/aarch64/mod.rs).
//
// Why not compiler_builtins' (whose weak `memcpy` this strong symbol replaces): warden is built
// without FP/SIMD registers, so LLVM does not inline moves of structs larger than a few words
// and calls memcpy for them, many times on every trap (SMCCC call and return values, MMIO
// accesses, register-file snapshots). compiler_builtins' generic memcpy spends about 25
// instructions before its first word and copies anything under 16 bytes byte by byte; under
// `-icount` that was a third of a trapped register access. This one copies 16 bytes per
// LDP/STP when both pointers are 8-byte aligned (every struct move), 8 more with LDR/STR,
// and the rest, or everything when either pointer is unaligned, byte by byte, so it never
// makes an unaligned access (warden runs Rust before its MMU is on, where all memory is
// Device memory). Regions must not overlap (memmove handles those). Returns dst.
//
// x0 = dst, x1 = src, x2 = n.
.section .text.memcpy, "ax"
.global memcpy
.type memcpy, %function
.balign 16
memcpy:
    mov     x3, x0
    orr     x4, x0, x1
    tst     x4, #7
    b.ne    2f
0:  cmp     x2, #16
    b.lo    1f
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x3], #16
    sub     x2, x2, #16
    b       0b
1:  cmp     x2, #8
    b.lo    2f
    ldr     x4, [x1], #8
    str     x4, [x3], #8
    sub     x2, x2, #8
2:  cbz     x2, 3f
    ldrb    w4, [x1], #1
    strb    w4, [x3], #1
    sub     x2, x2, #1
    b       2b
3:  ret
.size memcpy, . - memcpy
