//! Words shared between CPUs and with exception handlers, with the MMU off.
//!
//! With the MMU off every data access is Device-nGnRnE: not cacheable, so no cache maintenance
//! is needed between CPUs, and accesses are not merged or reordered. Exclusive accesses
//! (LDXR/STXR, and LSE atomics) on such memory are IMPLEMENTATION DEFINED: they need a global
//! monitor that real cores may only provide for cacheable memory (QEMU TCG runs them anyway).
//! So this type offers only loads and stores, which compile to plain LDAR/STLR: single-copy
//! atomic for aligned words on any memory type, and free of data races in Rust's model (which
//! plain volatile accesses from two CPUs would not be). Read-modify-write is deliberately not
//! exposed; every word has a single writer at a time (see the users).

use core::sync::atomic::{AtomicU64, Ordering};

/// A 64-bit word read and written by different CPUs (or by an exception handler).
#[derive(Debug)]
pub struct SharedU64(AtomicU64);

impl SharedU64 {
    pub const fn new(value: u64) -> Self {
        Self(AtomicU64::new(value))
    }

    /// Load-acquire: later accesses are not observed before it.
    pub fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Store-release: earlier accesses are observed before it.
    pub fn store(&self, value: u64) {
        self.0.store(value, Ordering::Release)
    }
}
