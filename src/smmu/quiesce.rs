//! SMMUs warden does not drive: their incoming transactions must abort, whatever firmware left.
//!
//! GBPA.ABORT's reset value is IMPLEMENTATION DEFINED, so an SMMU nobody programs may let DMA
//! through untranslated (QEMU's resets to bypass). For every SMMU after the one warden takes,
//! [`abort_all_traffic`] sets GBPA.ABORT with the architected handshake (wait for
//! GBPA.UPDATE = 0, write the new value with UPDATE = 1, wait for UPDATE = 0: IHI 0070,
//! 6.3.14), *then* turns SMMUEN off (so no instant passes with SMMUEN = 0 and GBPA in bypass;
//! while SMMUEN = 1 the firmware's stream table still confines the traffic), and reads GBPA
//! back. Every wait is bounded; a failure is for the caller to refuse the boot over.

use core::fmt;

use super::SmmuIo;
use super::regs::*;

/// What did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuiesceError {
    /// GBPA.UPDATE stayed set (before or after warden's write).
    GbpaUpdate,
    /// CR0ACK did not show SMMUEN off.
    SmmuDisable,
    /// GBPA read back without ABORT.
    AbortNotSet(u32),
}

impl fmt::Display for QuiesceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuiesceError::GbpaUpdate => write!(f, "GBPA.UPDATE did not clear"),
            QuiesceError::SmmuDisable => write!(f, "CR0ACK did not follow CR0.SMMUEN = 0"),
            QuiesceError::AbortNotSet(v) => write!(f, "GBPA reads {v:#x} without ABORT"),
        }
    }
}

fn poll(limit: u32, mut done: impl FnMut() -> bool) -> bool {
    (0..limit.max(1)).any(|_| {
        let ok = done();
        if !ok {
            core::hint::spin_loop();
        }
        ok
    })
}

/// Makes the SMMU behind `io` abort every incoming transaction: GBPA.ABORT, then SMMUEN off.
/// Queues and other CR0 bits go off with SMMUEN (nothing will drive this SMMU).
pub fn abort_all_traffic<M: SmmuIo + ?Sized>(io: &M, poll_limit: u32) -> Result<(), QuiesceError> {
    if !poll(poll_limit, || io.read32(GBPA) & GBPA_UPDATE == 0) {
        return Err(QuiesceError::GbpaUpdate);
    }
    io.write32(GBPA, GBPA_ABORT | GBPA_UPDATE);
    if !poll(poll_limit, || io.read32(GBPA) & GBPA_UPDATE == 0) {
        return Err(QuiesceError::GbpaUpdate);
    }
    io.write32(CR0, 0);
    if !poll(poll_limit, || io.read32(CR0ACK) & CR0_SMMUEN == 0) {
        return Err(QuiesceError::SmmuDisable);
    }
    let gbpa = io.read32(GBPA);
    if gbpa & GBPA_ABORT == 0 {
        return Err(QuiesceError::AbortNotSet(gbpa));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::fake::{FakeFaults, FakeOp, FakeSmmu};

    fn writes(smmu: &FakeSmmu) -> alloc::vec::Vec<(u32, u32)> {
        smmu.log()
            .into_iter()
            .filter_map(|op| match op {
                FakeOp::Write32 { offset, value } => Some((offset, value)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn from_reset_bypass_to_abort() {
        let smmu = FakeSmmu::qemu();
        assert_eq!(smmu.reg(GBPA) as u32 & GBPA_ABORT, 0, "QEMU resets to bypass");
        abort_all_traffic(&smmu, 8).unwrap();
        assert_eq!(smmu.reg(GBPA) as u32, GBPA_ABORT);
        assert_eq!(writes(&smmu), [(GBPA, GBPA_ABORT | GBPA_UPDATE), (CR0, 0)]);
    }

    #[test]
    fn firmware_left_it_enabled_abort_comes_first() {
        let smmu = FakeSmmu::qemu();
        smmu.preset_enabled(CR0_SMMUEN | CR0_CMDQEN);
        abort_all_traffic(&smmu, 8).unwrap();
        assert_eq!(writes(&smmu), [(GBPA, GBPA_ABORT | GBPA_UPDATE), (CR0, 0)]);
        assert_eq!(smmu.reg(CR0ACK), 0);
        assert_eq!(smmu.reg(GBPA) as u32, GBPA_ABORT);
    }

    #[test]
    fn stuck_hardware_is_an_error() {
        let smmu = FakeSmmu::qemu();
        smmu.set_faults(FakeFaults { stuck_gbpa: true, ..FakeFaults::default() });
        assert_eq!(abort_all_traffic(&smmu, 8), Err(QuiesceError::GbpaUpdate));
        let smmu = FakeSmmu::qemu();
        smmu.preset_enabled(CR0_SMMUEN);
        smmu.set_faults(FakeFaults { stuck_cr0ack: true, ..FakeFaults::default() });
        assert_eq!(abort_all_traffic(&smmu, 8), Err(QuiesceError::SmmuDisable));
        for e in [QuiesceError::GbpaUpdate, QuiesceError::SmmuDisable, QuiesceError::AbortNotSet(0)]
        {
            assert!(!alloc::format!("{e}").is_empty());
        }
    }
}
