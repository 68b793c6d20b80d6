// warden's entry points. Assembled through global_asm! in arch/aarch64/mod.rs, which supplies
// the constants in braces.

.section .text.head, "ax"
.global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst), so QEMU -kernel and boot
    // loaders load warden like a Linux kernel and hand it the DT in x0.
    b       primary_entry               // code0
    .long   0                           // code1
    .quad   0                           // text_offset: load at a 2 MiB-aligned base
    .quad   __image_size                // image_size: warden's footprint (the packer may raise it)
    .quad   0xa                         // flags: little endian, 4K pages, anywhere in RAM
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic
    .long   0                           // res5
    // Offset 0x40: payload descriptor (src/payload.rs). The packer fills in all but the first
    // two fields.
.global warden_payload_descriptor
warden_payload_descriptor:
    .ascii  "WRDNPAY1"
    .quad   __resident_file_end
    .fill   6, 8, 0

// Set by the boot CPU once it is past the one-time setup below (relocation, BSS), cleaned to
// PoC. In .data, so its loaded value is 0 whatever RAM held. A hyp-entry board's TrustZone
// enters _start on every CPU power-up: the entry code reads this with the MMU off to send
// every entry after the first to hyp_secondary_entry.
.section .data, "aw"
.balign 64
.global warden_boot_flag
warden_boot_flag:
    .quad   0
    .fill   7, 8, 0                     // the rest of the line: nothing else shares it

.section .text, "ax"
primary_entry:
.if {HYP_ENTRY}
    adrp    x9, warden_boot_flag
    add     x9, x9, :lo12:warden_boot_flag
    ldr     x10, [x9]
    movz    x11, #({BOOT_FLAG} & 0xffff)
    movk    x11, #(({BOOT_FLAG} >> 16) & 0xffff), lsl #16
    movk    x11, #(({BOOT_FLAG} >> 32) & 0xffff), lsl #32
    movk    x11, #(({BOOT_FLAG} >> 48) & 0xffff), lsl #48
    cmp     x10, x11
    b.eq    hyp_secondary_entry
.endif
.if {GUNYAH_EXIT}
    // RB3 Gen 2 (boards::EntryConvention::UefiUnderGunyah): the UEFI loader starts warden at
    // EL1 under Gunyah. Leave Gunyah here, before any memory is written or a stack is used
    // (boot_stage/gunyah.rs says why and checks what is recorded). Register contract:
    //   in:   x0, x1 as the loader left them (kept in x19, x22 across the SMC: SMCCC keeps
    //         x18..x30).
    //   SMC:  x0 = {GUNYAH_W0}, x1 = {GUNYAH_W1}, x2 = x3 = 0, x4 = {GUNYAH_W4}, x5..x7 = 0; made
    //         only when CurrentEL is EL1, after warden's loaded image [_start, _start +
    //         image_size) is cleaned to PoC (EL2 starts with its MMU and caches off). It returns
    //         x0; x1..x17 are not relied on; on success it continues at the next instruction at
    //         EL2 (MMU off, SP_EL2 unknown: the common path below sets SP_EL2 before any use).
    //   out:  x23 = CurrentEL at entry, x24 = the SMC's x0, x25 = CurrentEL after the SMC
    //         (0: no SMC made), passed to primary_main as x5, x6, x7.
    mrs     x23, CurrentEL
    mov     x24, xzr
    mov     x25, xzr
    mov     x19, x0
    mov     x22, x1
    cmp     x23, #(1 << 2)
    b.ne    12f                         // EL2 already: nothing to leave; another EL: Rust refuses
    adr     x9, _start
    ldr     x10, [x9, #16]              // image_size: the file and what follows it
    add     x10, x10, x9
    mrs     x11, ctr_el0
    ubfx    x11, x11, #16, #4           // DminLine: log2(words) of the smallest D-cache line
    mov     x12, #4
    lsl     x12, x12, x11
    sub     x13, x12, #1
    bic     x9, x9, x13
11: dc      cvac, x9
    add     x9, x9, x12
    cmp     x9, x10
    b.lo    11b
    dsb     sy
    movz    x0, #({GUNYAH_W0} & 0xffff)
    movk    x0, #(({GUNYAH_W0} >> 16) & 0xffff), lsl #16
    mov     x1, #{GUNYAH_W1}
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, #{GUNYAH_W4}
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    smc     #0
    mov     x24, x0
    mrs     x25, CurrentEL
    isb
12: mov     x0, x19
    mov     x1, x22
.else
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
.endif
    mov     x19, x0                     // DT address from the boot loader (hyp: next stage)
    mov     x22, x1                     // hyp entry: 2 for an AArch64 next stage
    adr     x20, _start                 // where we were loaded
    mov     x21, xzr                    // first unexpected relocation type, if any

    // Apply R_AARCH64_RELATIVE relocations: warden is linked at 0, so *(base + off) = base + addend.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    3f
    ldp     x3, x4, [x1], #16           // r_offset, r_info
    ldr     x5, [x1], #8                // r_addend
    cmp     x4, #{R_AARCH64_RELATIVE}
    b.ne    2f
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       1b
2:  cbnz    x21, 1b                     // keep the first one for the error message
    mov     x21, x4
    b       1b

    // Zero BSS (the packer placed the payload after it, never inside it).
3:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
4:  cmp     x1, x2
    b.hs    5f
    stp     xzr, xzr, [x1], #16
    b       4b

5:
.if {HYP_ENTRY}
    // Past the one-time setup: every later entry is a secondary one.
    adrp    x9, warden_boot_flag
    add     x9, x9, :lo12:warden_boot_flag
    movz    x11, #({BOOT_FLAG} & 0xffff)
    movk    x11, #(({BOOT_FLAG} >> 16) & 0xffff), lsl #16
    movk    x11, #(({BOOT_FLAG} >> 32) & 0xffff), lsl #32
    movk    x11, #(({BOOT_FLAG} >> 48) & 0xffff), lsl #48
    str     x11, [x9]
    dc      civac, x9
    dsb     sy
.endif

    // Boot CPU runs on stack 0, on SP_EL2.
    msr     spsel, #1
    adrp    x1, {STACKS}
    add     x1, x1, :lo12:{STACKS}
    add     x1, x1, #{STACK_SIZE}
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    // Entered below EL2 (e.g. QEMU without virtualization=on): EL2 registers would be
    // UNDEFINED, so leave them alone; Rust reports the exception level and stops.
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    8f
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb

8:  mov     x0, x19                     // DT (hyp: next stage)
    mov     x1, x20                     // load base
    mrs     x2, CurrentEL
    mov     x3, x21                     // unexpected relocation type or 0
    mov     x4, x22                     // x1 at entry
    mov     x5, x23                     // Gunyah exit: CurrentEL at entry (else 0)
    mov     x6, x24                     // Gunyah exit: the SMC's x0
    mov     x7, x25                     // Gunyah exit: CurrentEL after the SMC (0: none made)
    bl      {PRIMARY_MAIN}
6:  wfe
    b       6b

.if {HYP_ENTRY}
// Every hyp entry after the boot CPU's: a CPU TrustZone powered on (CPU_ON, warden's or the
// host's forwarded one), MMU off, x0 = the entry that CPU_ON named. TZ drops the context id, so
// the CPU's SecondaryBoot is found by its MPIDR (the CPU_ON that woke it wrote and cleaned the
// block, tag = affinity | VALID). A CPU warden did not send has no block: it stays here.
hyp_secondary_entry:
    mrs     x9, mpidr_el1
    movz    x10, #({MPIDR_MASK} & 0xffff)
    movk    x10, #(({MPIDR_MASK} >> 16) & 0xffff), lsl #16
    movk    x10, #(({MPIDR_MASK} >> 32) & 0xffff), lsl #32
    and     x9, x9, x10
    orr     x9, x9, #{SB_TAG_VALID}
    adrp    x10, {SECONDARY_BOOT}
    add     x10, x10, :lo12:{SECONDARY_BOOT}
    mov     x11, #{MAX_CPUS}
1:  ldr     x12, [x10, #{SB_MPIDR_TAG}]
    cmp     x12, x9
    b.eq    2f
    add     x10, x10, #{SB_SIZE}
    subs    x11, x11, #1
    b.ne    1b
3:  wfe
    b       3b
2:  mov     x1, x0                      // the entry TZ passed
    mov     x0, x10
    b       secondary_entry
.endif

// Secondary CPUs enter here from PSCI CPU_ON at EL2, MMU off, with x0 = &SecondaryBoot (cleaned
// to the Point of Coherency by the CPU that wrote it) and, on a hyp-entry board, x1 = the entry
// TZ passed. Fields: stack top, MAIR, TCR, TTBR0, SCTLR, VBAR, then Rust's argument.
.global secondary_entry
secondary_entry:
    msr     spsel, #1
    ldr     x9, [x0, #{SB_STACK_TOP}]
    mov     sp, x9
    mov     x29, xzr
    mov     x30, xzr
    ldr     x9, [x0, #{SB_VBAR}]
    msr     vbar_el2, x9
    ldr     x9, [x0, #{SB_MAIR}]
    msr     mair_el2, x9
    ldr     x9, [x0, #{SB_TCR}]
    msr     tcr_el2, x9
    ldr     x9, [x0, #{SB_TTBR}]
    msr     ttbr0_el2, x9
    isb
    tlbi    alle2
    ic      iallu
    dsb     nsh
    isb
    ldr     x9, [x0, #{SB_SCTLR}]
    msr     sctlr_el2, x9
    isb
    bl      {SECONDARY_MAIN}
7:  wfe
    b       7b
