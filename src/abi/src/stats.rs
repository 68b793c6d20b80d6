//! `TRAP_STATS`: how often and for how long warden ran on the callers' behalf, for the EL2-share
//! figure of `cargo xtask bench` (under QEMU `-icount shift=0` counter ticks are instructions).

use crate::error::{AbiError, SUCCESS};
use crate::smccc::{OWNER_VENDOR_HYP, fast_call};

/// `TRAP_STATS()`: host or peer; every other register zero. Reply: [`TrapStats`].
pub const TRAP_STATS: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0050);

/// Counts since boot, over every CPU. A trap is one synchronous exception from EL1/EL0 into
/// warden (the call reading these included, up to its own entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapStats {
    /// `x1`: traps of every kind.
    pub traps: u64,
    /// `x2`: counter ticks spent in warden handling them (entry to exit, summed over CPUs).
    pub el2_ticks: u64,
    /// `x3`: the counter (CNTPCT) when warden answered.
    pub now: u64,
    /// `x4`: SMCCC calls (HVC and trapped SMC).
    pub calls: u64,
    /// `x5`: stage-2 data aborts (violations and emulated MMIO).
    pub data_aborts: u64,
    /// `x6`: everything else (instruction aborts, other trapped instructions).
    pub other: u64,
}

impl TrapStats {
    /// `x0..x7` of the call.
    pub const fn request() -> [u64; 8] {
        [TRAP_STATS as u64, 0, 0, 0, 0, 0, 0, 0]
    }

    pub const fn encode(&self) -> [u64; 8] {
        [0, self.traps, self.el2_ticks, self.now, self.calls, self.data_aborts, self.other, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        let status = regs[0] as i64;
        if status != SUCCESS {
            return Err(AbiError::from_code(status).unwrap_or(AbiError::Unknown(status)));
        }
        if regs[7] != 0 {
            return Err(AbiError::InvalidParameters);
        }
        Ok(Self {
            traps: regs[1],
            el2_ticks: regs[2],
            now: regs[3],
            calls: regs[4],
            data_aborts: regs[5],
            other: regs[6],
        })
    }
}

/// `SMMU_STATS()`: host or peer; every other register zero. Reply: [`SmmuStats`];
/// `NOT_SUPPORTED` when warden emulates no SMMU.
pub const SMMU_STATS: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0051);

/// The virtual SMMU's counters since boot, ASID retirement (G3) included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmmuStats {
    /// `x1`: host commands consumed.
    pub commands: u64,
    /// `x2`: real CMD_SYNCs warden issued for them.
    pub real_syncs: u64,
    /// `x3`: host ASIDs that left service (CD invalidated or changed).
    pub asids_retired: u64,
    /// `x4`: retiring ASIDs freed by a TLBI_NH_ASID plus a completed CMD_SYNC.
    pub asids_freed: u64,
    /// `x5`: reuses of a still-retiring ASID that warden invalidated and synced itself first.
    pub forced_flushes: u64,
    /// `x6`: real event records copied into the host's event queue.
    pub events_forwarded: u64,
    /// `x7`: GBPA updates asking for global bypass (ABORT = 0). Warden serves them with its
    /// host stage 2 alone while SMMUEN = 0, never with real bypass. On the MMU-500 face: sCR0
    /// writes asking for bypass (refused).
    pub bypass_requests: u64,
}

impl SmmuStats {
    /// `x0..x7` of the call.
    pub const fn request() -> [u64; 8] {
        [SMMU_STATS as u64, 0, 0, 0, 0, 0, 0, 0]
    }

    pub const fn encode(&self) -> [u64; 8] {
        [
            0,
            self.commands,
            self.real_syncs,
            self.asids_retired,
            self.asids_freed,
            self.forced_flushes,
            self.events_forwarded,
            self.bypass_requests,
        ]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        let status = regs[0] as i64;
        if status != SUCCESS {
            return Err(AbiError::from_code(status).unwrap_or(AbiError::Unknown(status)));
        }
        Ok(Self {
            commands: regs[1],
            real_syncs: regs[2],
            asids_retired: regs[3],
            asids_freed: regs[4],
            forced_flushes: regs[5],
            events_forwarded: regs[6],
            bypass_requests: regs[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_round_trip() {
        assert_eq!(TRAP_STATS, 0xC600_0050);
        let s = TrapStats { traps: 9, el2_ticks: 5, now: 100, calls: 4, data_aborts: 3, other: 2 };
        assert_eq!(TrapStats::decode(&s.encode()), Ok(s));
        assert_eq!(
            TrapStats::decode(&[u64::MAX - 1, 0, 0, 0, 0, 0, 0, 0]),
            Err(AbiError::InvalidParameters)
        );
        assert_eq!(TrapStats::request()[0], 0xC600_0050);
    }

    #[test]
    fn smmu_stats_id_and_round_trip() {
        assert_eq!(SMMU_STATS, 0xC600_0051);
        let s = SmmuStats {
            commands: 7,
            real_syncs: 6,
            asids_retired: 5,
            asids_freed: 4,
            forced_flushes: 3,
            events_forwarded: 2,
            bypass_requests: 1,
        };
        assert_eq!(SmmuStats::decode(&s.encode()), Ok(s));
        assert_eq!(s.encode()[7], 1, "x7: bypass requests");
        assert_eq!(
            SmmuStats::decode(&[AbiError::NotSupported.register(), 0, 0, 0, 0, 0, 0, 0]),
            Err(AbiError::NotSupported)
        );
    }
}
