//! Which of the host's SiP calls warden passes to a board's SCM firmware, and what it checks
//! first (the default is to refuse).
//!
//! TrustZone acts with the secure world's reach: a call that names a physical address makes
//! TZ read or write there on the host's behalf, past the host's stage 2 and past every XPU
//! rule that binds the host. Forwarding every unknown call unchanged would let the host aim TZ
//! at a carveout, at warden's region or at the real SMMU (MP's `IOMMU_SECURE_PTBL_INIT` hands
//! TZ memory to lock and write; IO's `WRITE` writes any register TZ allows; the >4-argument
//! convention makes TZ read the rest from x5's address). So warden forwards only the calls
//! Linux 6.12's `qcom_scm` makes on warden's boards that it knows the meaning of, each with
//! the check its addresses need ([`Forwarding`]); every other call is answered
//! QCOM_SCM_EOPNOTSUPP and IS_CALL_AVAIL says it is not there, which Linux's callers handle
//! (ICE, the SHM bridge and download mode probe with IS_CALL_AVAIL or tolerate the error).
//! warden's own calls (IS_CALL_AVAIL, assign_mem) and PIL's (`pas`) are mediated elsewhere.
//!
//! Linux names the calls in `drivers/firmware/qcom/qcom_scm.h` / `qcom_scm.c`; the argument
//! meanings below are from there.

use super::{ScmCall, svc};
use crate::mm::MemRange;

/// How a forwarded call is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// Values only: no argument is an address the firmware dereferences for the host.
    Values,
    /// Argument `addr` is the physical address of a buffer of argument `len` bytes the
    /// firmware reads or writes: it must be host memory warden may touch, and stays the
    /// host's until the firmware has answered.
    HostBuffer { addr: usize, len: usize },
    /// Argument 0 is a device register (4 bytes) the firmware reads, or writes with
    /// `write`: the host's own stage 2 must let the host do that itself.
    IoRegister { write: bool },
}

/// IO service (`QCOM_SCM_SVC_IO`) and its commands.
pub const SVC_IO: u8 = 0x05;
pub const IO_READ: u8 = 0x01;
pub const IO_WRITE: u8 = 0x02;
/// ES service (`QCOM_SCM_SVC_ES`, the inline crypto engine's keys).
pub const SVC_ES: u8 = 0x10;

/// The calls warden forwards, with their checks. Anything absent is refused.
pub const FORWARDED: &[((u8, u8), Forwarding)] = &[
    // BOOT SET_REMOTE_STATE (state, id): venus.
    ((svc::BOOT, 0x0a), Forwarding::Values),
    // BOOT SET_DLOAD_MODE (command, enable).
    ((svc::BOOT, 0x10), Forwarding::Values),
    // IO READ (address), IO WRITE (address, value): `qcom_scm_io_readl/writel`.
    ((SVC_IO, IO_READ), Forwarding::IoRegister { write: false }),
    ((SVC_IO, IO_WRITE), Forwarding::IoRegister { write: true }),
    // INFO GET_FEAT_VERSION (feature).
    ((svc::INFO, 0x03), Forwarding::Values),
    // MP RESTORE_SEC_CFG (device, spare), IOMMU_SECURE_PTBL_SIZE (spare),
    // IOMMU_SET_CP_POOL_SIZE (size, spare), VIDEO_VAR (IOVA start/size pairs: venus's
    // addresses, not physical ones).
    ((svc::MP, 0x02), Forwarding::Values),
    ((svc::MP, 0x03), Forwarding::Values),
    ((svc::MP, 0x05), Forwarding::Values),
    ((svc::MP, 0x08), Forwarding::Values),
    // MP IOMMU_SECURE_PTBL_INIT (address, size, spare): memory TZ takes for its tables.
    ((svc::MP, 0x04), Forwarding::HostBuffer { addr: 0, len: 1 }),
    // ES INVALIDATE_ICE_KEY (index), CONFIG_SET_ICE_KEY (index, key address, key size,
    // cipher, data unit size).
    ((SVC_ES, 0x03), Forwarding::Values),
    ((SVC_ES, 0x04), Forwarding::HostBuffer { addr: 1, len: 2 }),
];

/// How `(svc, cmd)` is forwarded; `None`: refused.
pub fn forwarding(svc_id: u8, cmd: u8) -> Option<Forwarding> {
    FORWARDED.iter().find(|(ids, _)| *ids == (svc_id, cmd)).map(|(_, f)| *f)
}

/// Why a call in [`FORWARDED`] was not forwarded as made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// arginfo announces fewer arguments than the call's checked ones, or more than the
    /// convention carries (10).
    ArgumentCount,
    /// A buffer's address and size overflow or are empty.
    BadRange,
}

/// The most arguments Linux's convention passes (`MAX_QCOM_SCM_ARGS`).
pub const MAX_ARGS: u32 = 10;

/// The host memory ranges the firmware will read or write for `call`: its buffer argument
/// and, with more than four arguments, the x5 buffer holding arguments 4.. (le64 words for
/// SMC64, le32 for SMC32). At most two.
pub fn host_ranges(call: &ScmCall, how: Forwarding) -> Result<heapless_ranges::Ranges, Malformed> {
    let count = call.arg_count();
    if count > MAX_ARGS {
        return Err(Malformed::ArgumentCount);
    }
    let mut out = heapless_ranges::Ranges::default();
    if count > 4 {
        let word = if call.smc64 { 8 } else { 4 };
        let rest = MemRange::from_base_size(call.args[3], u64::from(count - 3) * word)
            .ok_or(Malformed::BadRange)?;
        out.push(rest);
    }
    if let Forwarding::HostBuffer { addr, len } = how {
        // Buffer arguments are among the first three (in registers) for every call listed.
        if addr.max(len) >= 3 || addr.max(len) as u32 >= count {
            return Err(Malformed::ArgumentCount);
        }
        let range = MemRange::from_base_size(call.args[addr], call.args[len])
            .filter(|r| r.size() > 0)
            .ok_or(Malformed::BadRange)?;
        out.push(range);
    }
    if let Forwarding::IoRegister { .. } = how
        && count < 1
    {
        return Err(Malformed::ArgumentCount);
    }
    Ok(out)
}

/// A fixed-capacity list of ranges (no allocation on the trap path).
pub mod heapless_ranges {
    use crate::mm::MemRange;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Ranges {
        items: [Option<MemRange>; 2],
    }

    impl Ranges {
        pub(super) fn push(&mut self, r: MemRange) {
            if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
                *slot = Some(r);
            }
        }

        pub fn iter(&self) -> impl Iterator<Item = MemRange> + '_ {
            self.items.iter().flatten().copied()
        }
    }
}
