//! Process entry. Linux starts a static executable at `_start` with `sp` pointing at `argc`,
//! then the `argv` pointers (NULL-terminated), then the environment; `sp` is 16-byte aligned
//! and BSS is already zeroed. No libc, so `_start` only clears the frame chain and hands the
//! stack pointer to Rust.

use core::arch::global_asm;
use core::ffi::{CStr, c_char};

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    mov     x29, xzr        // end of the frame-pointer chain
    mov     x30, xzr
    mov     x0, sp          // &argc
    bl      {main}
    brk     #0              // process_main does not return
"#,
    main = sym process_main,
);

/// The command-line arguments (argv[1..]), at most [`MAX_ARGS`].
#[derive(Clone, Copy, Debug)]
pub struct Args {
    args: [&'static CStr; MAX_ARGS],
    count: usize,
}

pub const MAX_ARGS: usize = 8;

impl Args {
    pub fn get(&self, i: usize) -> Option<&'static CStr> {
        self.args[..self.count].get(i).copied()
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

extern "C" fn process_main(stack: *const usize) -> ! {
    // SAFETY: Linux's initial stack layout (see the module doc): argc, then argc argv
    // pointers to NUL-terminated strings that live as long as the process.
    let args = unsafe {
        let argc = stack.read();
        let argv = stack.add(1).cast::<*const c_char>();
        let mut args = Args { args: [c""; MAX_ARGS], count: 0 };
        for i in 1..argc.min(MAX_ARGS + 1) {
            args.args[args.count] = CStr::from_ptr(argv.add(i).read());
            args.count += 1;
        }
        args
    };
    crate::sys::exit(crate::main(args))
}
