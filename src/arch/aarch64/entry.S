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

.section .text, "ax"
primary_entry:
    mov     x19, x0                     // DT address from the boot loader
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

    // Boot CPU runs on stack 0, on SP_EL2.
5:  msr     spsel, #1
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

8:  mov     x0, x19                     // DT
    mov     x1, x20                     // load base
    mrs     x2, CurrentEL
    mov     x3, x21                     // unexpected relocation type or 0
    bl      {PRIMARY_MAIN}
6:  wfe
    b       6b

// Secondary CPUs enter here from PSCI CPU_ON at EL2, MMU off, with x0 = &SecondaryBoot (cleaned
// to the Point of Coherency by the CPU that wrote it). Fields: stack top, MAIR, TCR, TTBR0,
// SCTLR, VBAR, then Rust's argument.
.global secondary_entry
secondary_entry:
    msr     spsel, #1
    ldr     x1, [x0, #{SB_STACK_TOP}]
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    ldr     x1, [x0, #{SB_VBAR}]
    msr     vbar_el2, x1
    ldr     x1, [x0, #{SB_MAIR}]
    msr     mair_el2, x1
    ldr     x1, [x0, #{SB_TCR}]
    msr     tcr_el2, x1
    ldr     x1, [x0, #{SB_TTBR}]
    msr     ttbr0_el2, x1
    isb
    tlbi    alle2
    ic      iallu
    dsb     nsh
    isb
    ldr     x1, [x0, #{SB_SCTLR}]
    msr     sctlr_el2, x1
    isb
    bl      {SECONDARY_MAIN}
7:  wfe
    b       7b
