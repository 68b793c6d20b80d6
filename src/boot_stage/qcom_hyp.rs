//! What the `hyp` image owes the rest of a Qualcomm boot besides entering the next stage, per
//! msm8916-mainline's qhypstub (the open `hyp` stub for MSM8916/APQ8016, read, not copied):
//!
//! - **RPM release** (board-selected, [`RpmRelease`]): on MSM8916 the `hyp` image is what takes
//!   the RPM (the resource power manager: clocks, regulators) out of reset, once, on the first
//!   boot: qhypstub clears `RPM_RESET_REMOVAL` (bit 0) of `GCC_APSS_MISC` (0x01860000), a
//!   read-modify-write. Without it the next stage hangs waiting for the RPM. warden does the same,
//!   on the boot CPU only (TZ enters warden again on every CPU power-up: those entries never
//!   touch it), after its entry and DT checks passed and before the EL2 MMU is on (the access is
//!   then Device-nGnRnE).
//! - **TZ's AArch64 state switch** (SCM BOOT 0x0F, function ID 0x0200010F): refused when the
//!   host issues it, never forwarded (`crate::trap::scm::BOOT_SWITCH_TO_AARCH64` says why).
//!   qhypstub also issues it itself on the first AArch64 boot, because TZ's PSCI otherwise
//!   powers the other CPUs up with x1 = 1 (AArch32) at the hyp entry. warden does not: on a
//!   CPU's power-up it reads only x0 (checked against the entry the host asked `CPU_ON` for) and
//!   always enters the host in AArch64 at EL1 (HCR_EL2.RW is warden's), so the x1 TZ passes
//!   there changes nothing. The first boot's x1 is still checked (`check_entry`: 2).
//!
//! Checked only against the recording fake below and the real DTB (the register is inside GCC's
//! `reg`); not run on a DB410c.

/// A register bit the `hyp` image clears once at first boot to take the RPM out of reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpmRelease {
    /// Physical address of the 32-bit register.
    pub register: u64,
    /// The bit to clear.
    pub reset_bit: u32,
}

/// MSM8916/APQ8016: `GCC_APSS_MISC`, bit 0 `RPM_RESET_REMOVAL` (qhypstub).
pub const MSM8916_RPM_RELEASE: RpmRelease = RpmRelease { register: 0x0186_0000, reset_bit: 0 };

/// 32-bit MMIO as the boot path does it (MMU off). The aarch64 implementation is in
/// `crate::boot`; tests record the accesses.
pub trait BootMmio {
    fn read32(&mut self, pa: u64) -> u32;
    fn write32(&mut self, pa: u64, value: u32);
}

/// Clears `rpm.reset_bit` in `rpm.register` with a read-modify-write (the other bits kept, the
/// write made even when the bit already reads clear, as qhypstub does). Returns the values
/// before and after, for the boot log.
pub fn release_rpm(mmio: &mut impl BootMmio, rpm: RpmRelease) -> (u32, u32) {
    let before = mmio.read32(rpm.register);
    let after = before & !(1u32 << (rpm.reset_bit & 31));
    mmio.write32(rpm.register, after);
    (before, after)
}

#[cfg(test)]
pub mod fake {
    use alloc::vec::Vec;

    use super::BootMmio;

    /// One access, in order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Access {
        Read(u64),
        Write(u64, u32),
    }

    /// Registers that read as `value` until written; every access recorded.
    pub struct RecordingMmio {
        pub value: u32,
        pub log: Vec<Access>,
    }

    impl BootMmio for RecordingMmio {
        fn read32(&mut self, pa: u64) -> u32 {
            self.log.push(Access::Read(pa));
            self.value
        }
        fn write32(&mut self, pa: u64, value: u32) {
            self.log.push(Access::Write(pa, value));
            self.value = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::fake::{Access, RecordingMmio};
    use super::*;

    #[test]
    fn rpm_release_is_one_read_then_one_write_clearing_only_the_reset_bit() {
        let reg = MSM8916_RPM_RELEASE.register;
        for (before, after) in [(0x0000_0001, 0), (0xdead_beef, 0xdead_beee), (0x10, 0x10)] {
            let mut mmio = RecordingMmio { value: before, log: vec![] };
            assert_eq!(release_rpm(&mut mmio, MSM8916_RPM_RELEASE), (before, after));
            assert_eq!(mmio.log, [Access::Read(reg), Access::Write(reg, after)]);
        }
        let other = RpmRelease { register: 0x1000, reset_bit: 4 };
        let mut mmio = RecordingMmio { value: 0xff, log: vec![] };
        assert_eq!(release_rpm(&mut mmio, other), (0xff, 0xef));
        assert_eq!(mmio.log, [Access::Read(0x1000), Access::Write(0x1000, 0xef)]);
    }
}
