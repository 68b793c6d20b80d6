//! Recording fakes of the hardware traits, for host tests (modelled on Hafnium's `arch/fake`).

use alloc::vec::Vec;
use core::cell::RefCell;

use super::{CacheMaintenance, TlbMaintenance};

/// One hardware operation, in the order it was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwOp {
    DsbIshst,
    DsbIsh,
    DsbSy,
    Isb,
    TlbiIpas2e1is(u64),
    TlbiVmalle1is,
    TlbiVmalls12e1is,
    TlbiAlle2is,
    TlbiVae2is(u64),
    DcCivac(u64),
    DcCvac(u64),
    DcIvac(u64),
}

/// Records every operation; single-threaded (tests that need threads wrap it in a lock).
pub struct Recorder {
    ops: RefCell<Vec<HwOp>>,
    line_size: u64,
}

impl Recorder {
    pub fn new(line_size: u64) -> Self {
        Self { ops: RefCell::new(Vec::new()), line_size }
    }

    fn push(&self, op: HwOp) {
        self.ops.borrow_mut().push(op);
    }

    /// Returns and clears the log.
    pub fn take(&self) -> Vec<HwOp> {
        core::mem::take(&mut *self.ops.borrow_mut())
    }

    /// A copy of the log so far.
    pub fn ops(&self) -> Vec<HwOp> {
        self.ops.borrow().clone()
    }
}

impl TlbMaintenance for Recorder {
    fn dsb_ishst(&self) {
        self.push(HwOp::DsbIshst)
    }
    fn dsb_ish(&self) {
        self.push(HwOp::DsbIsh)
    }
    fn isb(&self) {
        self.push(HwOp::Isb)
    }
    fn tlbi_ipas2e1is(&self, ipa: u64) {
        self.push(HwOp::TlbiIpas2e1is(ipa))
    }
    fn tlbi_vmalle1is(&self) {
        self.push(HwOp::TlbiVmalle1is)
    }
    fn tlbi_vmalls12e1is(&self) {
        self.push(HwOp::TlbiVmalls12e1is)
    }
    fn tlbi_alle2is(&self) {
        self.push(HwOp::TlbiAlle2is)
    }
    fn tlbi_vae2is(&self, va: u64) {
        self.push(HwOp::TlbiVae2is(va))
    }
}

impl CacheMaintenance for Recorder {
    fn dcache_line_size(&self) -> u64 {
        self.line_size
    }
    fn dc_civac(&self, va: u64) {
        self.push(HwOp::DcCivac(va))
    }
    fn dc_cvac(&self, va: u64) {
        self.push(HwOp::DcCvac(va))
    }
    fn dc_ivac(&self, va: u64) {
        self.push(HwOp::DcIvac(va))
    }
    fn dsb_sy(&self) {
        self.push(HwOp::DsbSy)
    }
}

/// Implements [`TlbMaintenance`] and [`CacheMaintenance`] for each listed type as operations
/// that do nothing, with `dcache_line_size() == line`: for fakes whose tests check tables or
/// record something else (the order of maintenance is what [`Recorder`] checks). A type that
/// also needs other hooks (e.g. `HandoffCpu`) implements those itself.
///
/// `warden::no_op_maintenance!(NullCpu, OtherCpu; line_size = 64);`
#[macro_export]
macro_rules! no_op_maintenance {
    ($($cpu:ty),+ ; line_size = $line:expr) => {$(
        impl $crate::arch::TlbMaintenance for $cpu {
            fn dsb_ishst(&self) {}
            fn dsb_ish(&self) {}
            fn isb(&self) {}
            fn tlbi_ipas2e1is(&self, _: u64) {}
            fn tlbi_vmalle1is(&self) {}
            fn tlbi_vmalls12e1is(&self) {}
            fn tlbi_alle2is(&self) {}
            fn tlbi_vae2is(&self, _: u64) {}
        }

        impl $crate::arch::CacheMaintenance for $cpu {
            fn dcache_line_size(&self) -> u64 {
                $line
            }
            fn dc_civac(&self, _: u64) {}
            fn dc_cvac(&self, _: u64) {}
            fn dc_ivac(&self, _: u64) {}
            fn dsb_sy(&self) {}
        }
    )+};
}

/// Barriers, TLB and cache maintenance that do nothing (64-byte lines), for tests that check
/// table contents only.
pub struct NoOpCpu;

crate::no_op_maintenance!(NoOpCpu; line_size = 64);
