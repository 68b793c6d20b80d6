//! The GICv3 pieces that write memory: the ITS and the redistributors' LPI tables; and which
//! GIC a boot uses ([`select`]: GICv3 or GICv2, from the DT, among the board's).
//!
//! The host owns the GIC (warden takes no interrupts), but an ITS writes device-table,
//! collection-table and interrupt-translation-table entries, and a redistributor writes LPI
//! pending bits, at physical addresses software programs, with no SMMU in the path. Left to
//! the host, either could write warden's memory or a donated carveout. So:
//! - each ITS's control frame and each redistributor's RD_base frame (and VLPI_base, on a
//!   GICv4) are holes in the host's stage 2; accesses trap and land here ([`its`],
//!   [`redist`]); GITS_TRANSLATER's frame, SGI_base and the distributor stay mapped;
//! - the real ITS uses only warden's queue and tables; the host's commands are copied,
//!   validated and re-issued, and every address the ITS or a redistributor will write is
//!   checked to be host memory warden may hand to a device ([`HostMemory`], rule 1 of the
//!   design: host-owned, outside every carveout, warden's region and `no-map` reserved
//!   memory; such memory never changes owner, so it stays valid for as long as the device
//!   uses it);
//! - GICv4 (virtual LPIs) is hidden and its registers and commands refused.
//!
//! Nothing here touches hardware: the real frames come through [`its::ItsIo`] and
//! [`redist::RegisterFrame`], with recording fakes in [`fake`]. The frame layout and the
//! boot-time redistributor walk are in [`layout`]. Details and the comparison with pKVM:
//! `docs/gic.md`.

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod its;
pub mod layout;
pub mod redist;
pub mod regs;
pub mod select;

use crate::mm::MemRange;

pub use layout::{GicFrame, GicLayout, RedistFrame};
pub use select::{GicVersion, SelectError};

/// A host-memory access refused (the range is not all host memory warden may touch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Host memory as the GIC emulation may use it (rule 1: host-owned, outside every carveout,
/// warden's region and `no-map` reserved memory).
pub trait HostMemory {
    /// Whether every byte of `range` is such memory: the only memory a GIC table or queue the
    /// host programs may be in.
    fn is_host_memory(&self, range: MemRange) -> bool;
    /// Copies `buf.len()` bytes at `pa`; refused unless [`Self::is_host_memory`] holds for it.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), Refused>;
}
