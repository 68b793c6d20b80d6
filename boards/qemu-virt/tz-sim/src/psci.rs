//! PSCI 1.0 (Arm DEN0022) over SMC: decoding a call and the per-CPU power state machine.
//!
//! Everything here is pure: [`decode`] turns the caller's x0..x3 into a [`Call`], and
//! [`Psci::handle`] decides, for a call from CPU slot `caller`, what the EL3 program must do
//! ([`Action`]): answer, power a CPU on then answer, take the caller off line, or stop the
//! machine. The EL3 side (`src/main.rs`) carries the actions out under one lock.
//!
//! Return codes are DEN0022's: `CPU_ON` of a CPU that is not there or not a CPU → `INVALID_PARAMETERS`;
//! of one that is on → `ALREADY_ON`; of one being powered on → `ON_PENDING`; with an entry point
//! outside non-secure RAM or not 4-byte aligned → `INVALID_ADDRESS`. `AFFINITY_INFO` answers at
//! affinity level 0 only (higher levels are optional in PSCI 1.0: `INVALID_PARAMETERS`).
//! `CPU_SUSPEND` supports the standby state only (a power-down `power_state` gets
//! `INVALID_PARAMETERS`). Unknown function IDs get `NOT_SUPPORTED`, as SMCCC requires.

use warden_abi::psci::{
    AFFINITY_INFO_32, AFFINITY_INFO_64, AFFINITY_OFF, AFFINITY_ON, AFFINITY_ON_PENDING, ALREADY_ON,
    CPU_OFF, CPU_ON_32, CPU_ON_64, CPU_SUSPEND_32, CPU_SUSPEND_64, DENIED, INVALID_ADDRESS,
    INVALID_PARAMETERS, MIGRATE_INFO_TYPE, NOT_SUPPORTED, ON_PENDING, PSCI_FEATURES, PSCI_VERSION,
    SUCCESS, SYSTEM_OFF, SYSTEM_RESET,
};
use warden_abi::smccc::{SMCCC_ARCH_FEATURES, SMCCC_VERSION, SMCCC_VERSION_1_1};

use crate::layout::{MAX_CPUS, RAM_BASE, RAM_LIMIT, cpu_slot};

/// `PSCI_VERSION`: 1.0.
pub const VERSION_1_0: u64 = 0x1_0000;
/// `MIGRATE_INFO_TYPE`: no Trusted OS that would need migrating.
pub const MIGRATE_NOT_PRESENT: u64 = 2;
/// `power_state` StateType (original format): 1 = power-down.
const POWER_STATE_POWERDOWN: u64 = 1 << 16;

/// A decoded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Version,
    Features { function: u32 },
    CpuSuspend { power_state: u64 },
    CpuOff,
    CpuOn { target: u64, entry: u64 },
    AffinityInfo { target: u64, level: u64 },
    MigrateInfoType,
    SystemOff,
    SystemReset,
    SmcccVersion,
    SmcccArchFeatures { function: u32 },
    Unknown { function: u32 },
}

/// The function IDs tz-sim implements (what `PSCI_FEATURES` says yes to).
pub const IMPLEMENTED: [u32; 13] = [
    PSCI_VERSION,
    PSCI_FEATURES,
    CPU_SUSPEND_32,
    CPU_SUSPEND_64,
    CPU_OFF,
    CPU_ON_32,
    CPU_ON_64,
    AFFINITY_INFO_32,
    AFFINITY_INFO_64,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    SMCCC_VERSION,
];

/// Decodes x0..x3 of an SMC. The function ID is w0 (SMCCC: the upper half of x0 is ignored);
/// an SMC32 call's arguments are w1..w3.
pub fn decode(x: [u64; 4]) -> Call {
    let function = x[0] as u32;
    let arg = |i: usize| if warden_abi::smccc::is_64(function) { x[i] } else { x[i] & 0xffff_ffff };
    match function {
        PSCI_VERSION => Call::Version,
        PSCI_FEATURES => Call::Features { function: arg(1) as u32 },
        CPU_SUSPEND_32 | CPU_SUSPEND_64 => Call::CpuSuspend { power_state: arg(1) },
        CPU_OFF => Call::CpuOff,
        // The context id (x3) is not kept: the hyp entry convention does not pass it.
        CPU_ON_32 | CPU_ON_64 => Call::CpuOn { target: arg(1), entry: arg(2) },
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => Call::AffinityInfo { target: arg(1), level: arg(2) },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures { function: arg(1) as u32 },
        function => Call::Unknown { function },
    }
}

/// One CPU's power state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuState {
    /// Not present (no such CPU on the board), or not yet known.
    #[default]
    Absent,
    Off,
    /// `CPU_ON` accepted; the CPU has not reached its hyp entry yet.
    OnPending {
        entry: u64,
    },
    On,
}

/// What the EL3 program must do for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return x0 to the caller.
    Return(u64),
    /// Release CPU `slot` from its pen towards `entry` (its state is already `OnPending`),
    /// then return `SUCCESS`.
    PowerOn {
        slot: usize,
        entry: u64,
    },
    /// The caller is off: it goes back to its pen and never returns.
    PowerOff,
    /// Wait for an interrupt, then return `SUCCESS`.
    Standby,
    SystemOff,
    SystemReset,
}

fn ret(code: i64) -> Action {
    Action::Return(code as u64)
}

/// Every CPU's power state, by slot ([`cpu_slot`]). All zeroes is a valid value (every CPU
/// absent), so it can live in BSS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Psci {
    cpus: [CpuState; MAX_CPUS],
}

impl Psci {
    pub const fn new() -> Self {
        Self { cpus: [CpuState::Absent; MAX_CPUS] }
    }

    /// Records a CPU the board has (found at boot); `on`: it is the boot CPU.
    pub fn add_cpu(&mut self, mpidr: u64, on: bool) -> bool {
        match cpu_slot(mpidr) {
            Some(slot) => {
                self.cpus[slot] = if on { CpuState::On } else { CpuState::Off };
                true
            }
            None => false,
        }
    }

    pub fn state(&self, slot: usize) -> CpuState {
        self.cpus.get(slot).copied().unwrap_or_default()
    }

    /// The CPU in `slot` reached its hyp entry after a `CPU_ON`.
    pub fn arrived(&mut self, slot: usize) {
        if let Some(s @ CpuState::OnPending { .. }) = self.cpus.get_mut(slot) {
            *s = CpuState::On;
        }
    }

    /// Present CPUs' count.
    pub fn present(&self) -> usize {
        self.cpus.iter().filter(|s| **s != CpuState::Absent).count()
    }

    /// What to do for `call` from the CPU in slot `caller`.
    pub fn handle(&mut self, call: Call, caller: usize) -> Action {
        match call {
            Call::Version => Action::Return(VERSION_1_0),
            Call::Features { function } => {
                ret(if IMPLEMENTED.contains(&function) { SUCCESS } else { NOT_SUPPORTED })
            }
            Call::CpuSuspend { power_state } => {
                if power_state & POWER_STATE_POWERDOWN != 0 {
                    ret(INVALID_PARAMETERS)
                } else {
                    Action::Standby
                }
            }
            Call::CpuOff => match self.cpus.get_mut(caller) {
                Some(s @ CpuState::On) => {
                    *s = CpuState::Off;
                    Action::PowerOff
                }
                // Only a CPU that is on can call; anything else is tz-sim's own error.
                _ => ret(DENIED),
            },
            Call::CpuOn { target, entry } => self.cpu_on(target, entry),
            Call::AffinityInfo { target, level } => {
                if level != 0 {
                    return ret(INVALID_PARAMETERS);
                }
                match cpu_slot(target).map(|slot| self.state(slot)) {
                    Some(CpuState::On) => ret(AFFINITY_ON),
                    Some(CpuState::Off) => ret(AFFINITY_OFF),
                    Some(CpuState::OnPending { .. }) => ret(AFFINITY_ON_PENDING),
                    Some(CpuState::Absent) | None => ret(INVALID_PARAMETERS),
                }
            }
            Call::MigrateInfoType => Action::Return(MIGRATE_NOT_PRESENT),
            Call::SystemOff => Action::SystemOff,
            Call::SystemReset => Action::SystemReset,
            Call::SmcccVersion => Action::Return(SMCCC_VERSION_1_1),
            // No architectural workaround is needed on QEMU, and no other SMCCC function
            // exists here.
            Call::SmcccArchFeatures { .. } => ret(NOT_SUPPORTED),
            Call::Unknown { .. } => ret(NOT_SUPPORTED),
        }
    }

    fn cpu_on(&mut self, target: u64, entry: u64) -> Action {
        // Bits of `target` outside the affinity fields must be zero (DEN0022, 5.1.4).
        const AFFINITY: u64 = 0xff_00ff_ffff;
        if target & !AFFINITY != 0 {
            return ret(INVALID_PARAMETERS);
        }
        let Some(slot) = cpu_slot(target) else { return ret(INVALID_PARAMETERS) };
        match self.cpus[slot] {
            CpuState::Absent => return ret(INVALID_PARAMETERS),
            CpuState::On => return ret(ALREADY_ON),
            CpuState::OnPending { .. } => return ret(ON_PENDING),
            CpuState::Off => {}
        }
        if !(RAM_BASE..RAM_LIMIT).contains(&entry) || !entry.is_multiple_of(4) {
            return ret(INVALID_ADDRESS);
        }
        self.cpus[slot] = CpuState::OnPending { entry };
        Action::PowerOn { slot, entry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(cpus: usize) -> Psci {
        let mut p = Psci::new();
        for i in 0..cpus as u64 {
            assert!(p.add_cpu(i, i == 0));
        }
        p
    }

    #[test]
    fn decoding_follows_smccc() {
        assert_eq!(decode([PSCI_VERSION as u64, 0, 0, 0]), Call::Version);
        // The upper half of x0 is not part of the function ID.
        assert_eq!(decode([0xdead_0000_0000_0000 | PSCI_VERSION as u64, 0, 0, 0]), Call::Version);
        assert_eq!(
            decode([CPU_ON_64 as u64, 0x1_0000_0001, 0x4008_0000_1000, 7]),
            Call::CpuOn { target: 0x1_0000_0001, entry: 0x4008_0000_1000 }
        );
        // SMC32: only w1..w3.
        assert_eq!(
            decode([CPU_ON_32 as u64, 0xffff_ffff_0000_0002, 0xffff_ffff_4000_0000, 0]),
            Call::CpuOn { target: 2, entry: 0x4000_0000 }
        );
        assert_eq!(
            decode([AFFINITY_INFO_64 as u64, 3, 0, 0]),
            Call::AffinityInfo { target: 3, level: 0 }
        );
        assert_eq!(
            decode([PSCI_FEATURES as u64, 0xffff_ffff_0000_0000 | CPU_ON_64 as u64, 0, 0]),
            Call::Features { function: CPU_ON_64 }
        );
        assert_eq!(decode([0x8400_00ff, 0, 0, 0]), Call::Unknown { function: 0x8400_00ff });
        assert_eq!(decode([0xc200_0001, 0, 0, 0]), Call::Unknown { function: 0xc200_0001 });
        assert_eq!(decode([SMCCC_VERSION as u64, 0, 0, 0]), Call::SmcccVersion);
    }

    #[test]
    fn version_features_and_unknowns() {
        let mut p = board(2);
        assert_eq!(p.handle(Call::Version, 0), Action::Return(VERSION_1_0));
        for f in IMPLEMENTED {
            assert_eq!(p.handle(Call::Features { function: f }, 0), Action::Return(0), "{f:#x}");
        }
        for f in [0x8400_0005, 0x8400_0007, 0x8400_0012, 0xc400_0012, 0x8600_0001] {
            assert_eq!(p.handle(Call::Features { function: f }, 0), ret(NOT_SUPPORTED), "{f:#x}");
        }
        assert_eq!(p.handle(Call::Unknown { function: 0x8400_00ff }, 0), ret(NOT_SUPPORTED));
        assert_eq!(p.handle(Call::SmcccVersion, 0), Action::Return(0x1_0001));
        assert_eq!(p.handle(Call::SmcccArchFeatures { function: 0x8000_8000 }, 0), ret(-1));
        assert_eq!(p.handle(Call::MigrateInfoType, 0), Action::Return(2));
        assert_eq!(p.handle(Call::SystemOff, 1), Action::SystemOff);
        assert_eq!(p.handle(Call::SystemReset, 1), Action::SystemReset);
    }

    /// A CPU's life: off, CPU_ON (pending: a second CPU_ON says so), on at its hyp entry
    /// (CPU_ON: already on), CPU_OFF, and on again.
    #[test]
    fn cpu_on_off_cycle() {
        let mut p = board(3);
        let affinity = |p: &mut Psci| p.handle(Call::AffinityInfo { target: 2, level: 0 }, 0);
        assert_eq!(affinity(&mut p), ret(AFFINITY_OFF));
        let on = Call::CpuOn { target: 2, entry: 0x4080_0000 };
        assert_eq!(p.handle(on, 0), Action::PowerOn { slot: 2, entry: 0x4080_0000 });
        assert_eq!(p.state(2), CpuState::OnPending { entry: 0x4080_0000 });
        assert_eq!(affinity(&mut p), ret(AFFINITY_ON_PENDING));
        assert_eq!(p.handle(on, 0), ret(ON_PENDING));
        p.arrived(2);
        assert_eq!(affinity(&mut p), ret(AFFINITY_ON));
        assert_eq!(p.handle(on, 1), ret(ALREADY_ON));
        assert_eq!(p.handle(Call::CpuOff, 2), Action::PowerOff);
        assert_eq!(affinity(&mut p), ret(AFFINITY_OFF));
        // A CPU that is off cannot call CPU_OFF.
        assert_eq!(p.handle(Call::CpuOff, 2), ret(DENIED));
        assert!(matches!(p.handle(on, 0), Action::PowerOn { slot: 2, .. }));
        // `arrived` only completes a pending power-on.
        p.arrived(1);
        assert_eq!(p.state(1), CpuState::Off);
    }

    #[test]
    fn cpu_on_errors_follow_den0022() {
        let mut p = board(2);
        let on = |target, entry| Call::CpuOn { target, entry };
        // The boot CPU is on.
        assert_eq!(p.handle(on(0, 0x4000_0000), 1), ret(ALREADY_ON));
        // Absent CPUs and bits outside the affinity fields.
        for target in [2, 0xff, 0x100, 0x1_0000, 0x1_0000_0000, 1 | (1 << 31), 1 | (1 << 24)] {
            assert_eq!(
                p.handle(on(target, 0x4000_0000), 0),
                ret(INVALID_PARAMETERS),
                "{target:#x}"
            );
        }
        // Entry points outside non-secure RAM, or misaligned.
        for entry in [0, 0x0e00_0000, 0x3fff_fffc, 0x4000_0002, 1 << 40] {
            assert_eq!(p.handle(on(1, entry), 0), ret(INVALID_ADDRESS), "{entry:#x}");
        }
        assert_eq!(p.state(1), CpuState::Off, "a refused CPU_ON changes nothing");
        assert_eq!(
            p.handle(Call::AffinityInfo { target: 1, level: 1 }, 0),
            ret(INVALID_PARAMETERS)
        );
        assert_eq!(
            p.handle(Call::AffinityInfo { target: 5, level: 0 }, 0),
            ret(INVALID_PARAMETERS)
        );
    }

    #[test]
    fn suspend_is_standby_only() {
        let mut p = board(1);
        assert_eq!(p.handle(Call::CpuSuspend { power_state: 0 }, 0), Action::Standby);
        assert_eq!(
            p.handle(Call::CpuSuspend { power_state: POWER_STATE_POWERDOWN }, 0),
            ret(INVALID_PARAMETERS)
        );
    }

    #[test]
    fn the_board_is_what_was_added() {
        let p = board(12);
        assert_eq!(p.present(), 12);
        assert_eq!(p.state(11), CpuState::Off);
        assert_eq!(p.state(12), CpuState::Absent);
        assert_eq!(p.state(MAX_CPUS + 5), CpuState::Absent);
        assert!(!Psci::new().add_cpu(0x10, false));
    }
}
