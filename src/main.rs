//! The warden EL2 image. Everything lives in the library; this binary only links it for
//! `aarch64-unknown-none-softfloat` (entry point `_start`, see `src/arch/aarch64/entry.S`).
#![no_std]
#![no_main]

// Linking the library brings in the entry code, vectors, panic handler and allocator.
use warden as _;
