//! Image header and entry code: runs before any Rust code.
//!
//! The loader enters the guest at offset 0 (the header's branch) at EL1h with the MMU off,
//! DAIF masked and x0 = physical address of the DT, at whatever 2 MiB-aligned address it chose.
//! The image is linked at 0 as a PIE, so the first thing the primary CPU does is add its load
//! address to every `R_AARCH64_RELATIVE` entry in `.rela.dyn`; only then may anything read a
//! pointer from memory. Then it zeroes BSS, takes stack slot 0, installs the exception vectors
//! and calls [`crate::primary_main`].
//!
//! Secondary CPUs enter at [`secondary_entry`] (given to PSCI `CPU_ON`) with x0 = context id;
//! the low byte of the context id names their stack slot (see [`crate::secondary`]).
//!
//! The MMU stays off for the whole run: every data access is Device-nGnRnE, which is why the
//! crate is built with `+strict-align` (no unaligned accesses) and never uses atomic
//! read-modify-write instructions (see [`crate::shared`]).

use core::arch::global_asm;
use core::cell::UnsafeCell;

/// Most CPUs the guest gives a stack to (slot 0 is the primary's): as many as warden's
/// qemu-virt board takes.
pub const MAX_CPUS: usize = 16;
/// Stack size per CPU. `core::fmt` and the DT walk are the deepest users.
pub const STACK_SIZE: usize = 16 * 1024;

/// `r_info` of an `R_AARCH64_RELATIVE` relocation (type 1027, no symbol).
const R_AARCH64_RELATIVE: u64 = 1027;
/// Image header `flags`: little endian (bit 0 = 0), 4 KiB pages (bits 2:1 = 1), placeable
/// anywhere in memory (bit 3 = 1).
const IMAGE_FLAGS: u64 = 0xa;
/// Image header magic "ARM\x64", little endian.
const IMAGE_MAGIC: u32 = 0x644d_5241;

#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_CPUS]>);

// SAFETY: the stacks are only touched through the stack pointer set up by the entry code; each
// CPU uses its own slot (slot 0: primary, 1..MAX_CPUS: named by the CPU_ON context id).
unsafe impl Sync for Stacks {}

/// In BSS, so `image_size` covers it and the entry code zeroes it.
static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

unsafe extern "C" {
    /// Entry point for PSCI `CPU_ON` (defined below): x0 = context id.
    pub fn secondary_entry() -> !;
}

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       2f                      // code0: branch to the entry code
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __guest_image_size      // image_size (absolute linker symbol)
    .quad   {flags}                 // flags
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   {magic}                 // magic "ARM\x64"
    .long   0                       // res5 (no PE header)

2:  mov     x19, x0                 // x19 = DT address, kept until Rust runs

    // Apply .rela.dyn: *(base + r_offset) = base + r_addend for R_AARCH64_RELATIVE.
    // Other types cannot be applied here; they are counted (x20) and reported by Rust.
    adrp    x9, _start              // x9 = load address (link address 0)
    add     x9, x9, :lo12:_start
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
    mov     x20, #0
3:  cmp     x10, x11
    b.hs    5f
    ldp     x12, x13, [x10], #16    // r_offset, r_info
    ldr     x14, [x10], #8          // r_addend
    cmp     x13, #{r_relative}
    b.ne    4f
    add     x14, x14, x9
    str     x14, [x9, x12]
    b       3b
4:  add     x20, x20, #1
    b       3b

    // Zero BSS (16-byte aligned bounds from the linker script).
5:  adrp    x10, __bss_start
    add     x10, x10, :lo12:__bss_start
    adrp    x11, __bss_end
    add     x11, x11, :lo12:__bss_end
6:  cmp     x10, x11
    b.hs    7f
    stp     xzr, xzr, [x10], #16
    b       6b

    // Stack slot 0, per-CPU slot index in TPIDR_EL1.
7:  adrp    x10, {stacks}
    add     x10, x10, :lo12:{stacks}
    mov     x11, #{stack_size}
    add     x10, x10, x11
    mov     sp, x10
    msr     tpidr_el1, xzr

    // Vectors for the EL we actually run at (EL2 only when started without warden with
    // virtualization=on: then the guest just reports and powers off).
    mrs     x10, CurrentEL
    cmp     x10, #(2 << 2)
    b.eq    8f
    adrp    x10, guest_el1_vectors
    add     x10, x10, :lo12:guest_el1_vectors
    msr     vbar_el1, x10
    b       9f
8:  adrp    x10, guest_el2_vectors
    add     x10, x10, :lo12:guest_el2_vectors
    msr     vbar_el2, x10
9:  isb
    mov     x0, x19                 // DT address
    mov     x1, x20                 // unsupported relocation count
    mov     x2, x9                  // load address
    bl      {primary_main}
10: wfe
    b       10b

    .text
    .balign 4
    .global secondary_entry
    .hidden secondary_entry
secondary_entry:
    // x0 = context id; its low byte is the stack slot, 1..MAX_CPUS. A CPU started with any
    // other value parks here: the primary's bounded wait then reports it.
    and     x1, x0, #0xff
    cbz     x1, 12f
    cmp     x1, #{max_cpus}
    b.hs    12f
    msr     tpidr_el1, x1
    adrp    x10, {stacks}
    add     x10, x10, :lo12:{stacks}
    add     x1, x1, #1
    mov     x11, #{stack_size}
    madd    x10, x1, x11, x10       // top of slot = base + (slot + 1) * STACK_SIZE
    mov     sp, x10
    adrp    x10, guest_el1_vectors
    add     x10, x10, :lo12:guest_el1_vectors
    msr     vbar_el1, x10
    isb
    bl      {secondary_main}        // x0 still holds the context id
12: wfe
    b       12b
"#,
    flags = const IMAGE_FLAGS,
    magic = const IMAGE_MAGIC,
    r_relative = const R_AARCH64_RELATIVE,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    max_cpus = const MAX_CPUS,
    primary_main = sym crate::primary_main,
    secondary_main = sym crate::secondary::secondary_main,
);
