//! PSCI mediation: the host's power calls, checked against warden's view of the host's CPUs
//! and forwarded to EL3, with entry points rewritten so every CPU that powers up enters warden
//! at EL2 first.
//!
//! State is per CPU behind its own lock, so host CPUs calling at once (two `CPU_ON`s for the
//! same target, a `CPU_ON` racing the target's `CPU_OFF`) are serialized per target. No lock is
//! held across an SMC: the target may reach [`Psci::secondary_arrived`] before the EL3 call
//! that woke it has returned on the caller.

use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use spin::Mutex;
use warden_abi::psci;

use super::Platform;

/// Most host CPUs warden tracks.
pub const MAX_HOST_CPUS: usize = 64;

/// MPIDR affinity fields PSCI uses (Aff3 `[39:32]`, Aff2..Aff0 `[23:0]`); other bits must be 0.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Where the host asked a CPU to start (`CPU_ON`) or resume (`CPU_SUSPEND` power-down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEntry {
    /// Host physical (= IPA) address to `ERET` to, at EL1h with the MMU off.
    pub entry: u64,
    /// Value for the host's x0 at that entry.
    pub context: u64,
}

/// warden's view of one host CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPower {
    Off,
    /// `CPU_ON` forwarded; the CPU has not reached warden yet.
    OnPending {
        host: HostEntry,
        /// Identifies the `CPU_ON` that set this state, so only it may undo it.
        ticket: u64,
    },
    On,
    /// In a `CPU_SUSPEND`; if it powers down it comes back through warden and resumes `host`.
    Suspending {
        host: HostEntry,
    },
}

struct CpuSlot {
    mpidr: u64,
    power: Mutex<CpuPower>,
}

/// Errors building the PSCI state from the DT's CPU list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciInitError {
    NoCpus,
    TooManyCpus(usize),
    /// An MPIDR has bits outside the affinity fields.
    InvalidMpidr(u64),
    DuplicateMpidr(u64),
    BootCpuOutOfRange(usize),
}

impl fmt::Display for PsciInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCpus => f.write_str("no host CPUs"),
            Self::TooManyCpus(n) => write!(f, "{n} host CPUs, at most {MAX_HOST_CPUS} supported"),
            Self::InvalidMpidr(m) => write!(f, "CPU MPIDR {m:#x} has non-affinity bits set"),
            Self::DuplicateMpidr(m) => write!(f, "CPU MPIDR {m:#x} listed twice"),
            Self::BootCpuOutOfRange(i) => write!(f, "boot CPU index {i} is not a host CPU"),
        }
    }
}

/// Why a CPU that entered warden's secondary entry point has nothing to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrivalError {
    /// The index is not one of the host CPUs.
    UnknownCpu(usize),
    /// warden did not send this CPU anywhere (it is `Off` or already `On`).
    NotExpected(CpuPower),
}

impl fmt::Display for ArrivalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCpu(i) => write!(f, "CPU index {i} is not a host CPU"),
            Self::NotExpected(state) => write!(f, "CPU arrived while {state:?}"),
        }
    }
}

const SUSPEND_FORMAT_UNKNOWN: u8 = 0;
const SUSPEND_FORMAT_ORIGINAL: u8 = 1;
const SUSPEND_FORMAT_EXTENDED: u8 = 2;
/// power_state.StateType (1 = power down) in the original and the extended format.
const POWER_DOWN_ORIGINAL: u64 = 1 << 16;
const POWER_DOWN_EXTENDED: u64 = 1 << 30;
/// PSCI_FEATURES(CPU_SUSPEND) bit 1: EL3 uses the extended power_state format.
const FEATURE_EXTENDED_STATE_ID: u64 = 1 << 1;

/// PSCI functions warden mediates (and so answers PSCI_FEATURES for).
const MEDIATED: [u32; 14] = [
    psci::PSCI_VERSION,
    psci::CPU_SUSPEND_32,
    psci::CPU_SUSPEND_64,
    psci::CPU_OFF,
    psci::CPU_ON_32,
    psci::CPU_ON_64,
    psci::AFFINITY_INFO_32,
    psci::AFFINITY_INFO_64,
    psci::MIGRATE_INFO_TYPE,
    psci::SYSTEM_OFF,
    psci::SYSTEM_RESET,
    psci::PSCI_FEATURES,
    psci::SYSTEM_RESET2_32,
    psci::SYSTEM_RESET2_64,
];

/// Whether `function_id` is a PSCI function warden mediates.
pub fn is_mediated(function_id: u32) -> bool {
    MEDIATED.contains(&function_id)
}

/// Orders the host CPUs' affinity values for [`Psci::new`] with the boot CPU's (`boot`) first,
/// the others in DT order after it, and returns whether `boot` is among them. The boot CPU runs
/// on stack 0 from the entry code on, so it must be warden CPU 0: were it CPU `k`, the host CPU
/// with index 0 would be started on the stack the boot CPU is using (a DT that does not list
/// the boot CPU first, as a TrustZone that boots another core may hand over).
pub fn boot_cpu_first(mpidrs: &mut alloc::vec::Vec<u64>, boot: u64) -> bool {
    match mpidrs.iter().position(|&m| m == boot) {
        Some(i) => {
            let m = mpidrs.remove(i);
            mpidrs.insert(0, m);
            true
        }
        None => false,
    }
}

/// The host CPUs and their power state.
pub struct Psci {
    cpus: [CpuSlot; MAX_HOST_CPUS],
    count: usize,
    next_ticket: AtomicU64,
    suspend_format: AtomicU8,
}

impl fmt::Debug for Psci {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psci").field("cpus", &self.count).finish_non_exhaustive()
    }
}

impl Psci {
    /// `host_mpidrs`: the affinity values (DT `/cpus/cpu@N` `reg`) of the CPUs the host owns, in
    /// the order that defines CPU indices; `boot_cpu`: the index of the CPU running now, which
    /// is `On`. All others start `Off`.
    pub fn new(host_mpidrs: &[u64], boot_cpu: usize) -> Result<Self, PsciInitError> {
        if host_mpidrs.is_empty() {
            return Err(PsciInitError::NoCpus);
        }
        if host_mpidrs.len() > MAX_HOST_CPUS {
            return Err(PsciInitError::TooManyCpus(host_mpidrs.len()));
        }
        if boot_cpu >= host_mpidrs.len() {
            return Err(PsciInitError::BootCpuOutOfRange(boot_cpu));
        }
        for (i, &mpidr) in host_mpidrs.iter().enumerate() {
            if mpidr & !MPIDR_AFFINITY_MASK != 0 {
                return Err(PsciInitError::InvalidMpidr(mpidr));
            }
            if host_mpidrs[..i].contains(&mpidr) {
                return Err(PsciInitError::DuplicateMpidr(mpidr));
            }
        }
        let cpus = core::array::from_fn(|i| CpuSlot {
            mpidr: host_mpidrs.get(i).copied().unwrap_or(0),
            power: Mutex::new(if i == boot_cpu { CpuPower::On } else { CpuPower::Off }),
        });
        Ok(Psci {
            cpus,
            count: host_mpidrs.len(),
            next_ticket: AtomicU64::new(1),
            suspend_format: AtomicU8::new(SUSPEND_FORMAT_UNKNOWN),
        })
    }

    /// Number of host CPUs.
    pub fn cpu_count(&self) -> usize {
        self.count
    }

    /// Index of the host CPU with this MPIDR (only the affinity fields are compared, so the
    /// raw MPIDR_EL1 value can be passed).
    pub fn cpu_index_of(&self, mpidr: u64) -> Option<usize> {
        let aff = mpidr & MPIDR_AFFINITY_MASK;
        self.slots().iter().position(|c| c.mpidr == aff)
    }

    /// The MPIDR affinity of host CPU `index`.
    pub fn mpidr_of(&self, index: usize) -> Option<u64> {
        self.slots().get(index).map(|c| c.mpidr)
    }

    /// warden's view of CPU `index`.
    pub fn power_state(&self, index: usize) -> Option<CpuPower> {
        self.slots().get(index).map(|c| *c.power.lock())
    }

    fn slots(&self) -> &[CpuSlot] {
        self.cpus.get(..self.count).unwrap_or(&[])
    }

    /// Called by the boot code on a CPU that entered warden's secondary entry point (after
    /// `CPU_ON`, or waking from a power-down `CPU_SUSPEND`): marks it `On` and returns where the
    /// host wants it. On `Err` the CPU was not sent by the host; the caller must not enter
    /// the host on it.
    pub fn secondary_arrived(&self, cpu_index: usize) -> Result<HostEntry, ArrivalError> {
        let slot = self.slots().get(cpu_index).ok_or(ArrivalError::UnknownCpu(cpu_index))?;
        let mut power = slot.power.lock();
        match *power {
            CpuPower::OnPending { host, .. } | CpuPower::Suspending { host } => {
                *power = CpuPower::On;
                Ok(host)
            }
            other => Err(ArrivalError::NotExpected(other)),
        }
    }

    /// Handles a PSCI call (`function_id` has owner 4); `args` are x1..x3 (already truncated to
    /// 32 bits for SMC32 calls). Returns the value for the host's x0.
    pub fn handle<P: Platform + ?Sized>(
        &self,
        function_id: u32,
        args: [u64; 3],
        platform: &mut P,
    ) -> i64 {
        let [a1, a2, a3] = args;
        match function_id {
            psci::CPU_ON_32 | psci::CPU_ON_64 => self.cpu_on(a1, a2, a3, platform),
            psci::CPU_OFF => self.cpu_off(platform),
            psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => self.cpu_suspend(a1, a2, a3, platform),
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
                if !self.affinity_known(a1, a2) {
                    return psci::INVALID_PARAMETERS;
                }
                forward(platform, [u64::from(function_id), a1, a2, 0])
            }
            psci::PSCI_FEATURES => {
                let queried = a1 as u32;
                if is_mediated(queried) {
                    forward(platform, [u64::from(function_id), u64::from(queried), 0, 0])
                } else if queried == warden_abi::smccc::SMCCC_VERSION {
                    // warden answers SMCCC_VERSION itself; Linux probes it through PSCI_FEATURES.
                    psci::SUCCESS
                } else {
                    psci::NOT_SUPPORTED
                }
            }
            psci::PSCI_VERSION | psci::MIGRATE_INFO_TYPE => {
                forward(platform, [u64::from(function_id), 0, 0, 0])
            }
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                platform.before_system_power_down();
                forward(platform, [u64::from(function_id), 0, 0, 0])
            }
            psci::SYSTEM_RESET2_32 | psci::SYSTEM_RESET2_64 => {
                platform.before_system_power_down();
                forward(platform, [u64::from(function_id), a1, a2, 0])
            }
            _ => psci::NOT_SUPPORTED,
        }
    }

    fn cpu_on<P: Platform + ?Sized>(
        &self,
        target: u64,
        entry: u64,
        context: u64,
        platform: &mut P,
    ) -> i64 {
        if target & !MPIDR_AFFINITY_MASK != 0 {
            return psci::INVALID_PARAMETERS;
        }
        let Some(index) = self.cpu_index_of(target) else {
            return psci::INVALID_PARAMETERS;
        };
        if !valid_host_entry(platform, entry) {
            return psci::INVALID_ADDRESS;
        }
        let Some(slot) = self.slots().get(index) else {
            return psci::INVALID_PARAMETERS;
        };
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        {
            let mut power = slot.power.lock();
            match *power {
                CpuPower::Off => {
                    *power = CpuPower::OnPending { host: HostEntry { entry, context }, ticket };
                }
                CpuPower::OnPending { .. } => return psci::ON_PENDING,
                CpuPower::On | CpuPower::Suspending { .. } => return psci::ALREADY_ON,
            }
        }
        let args = [
            u64::from(psci::CPU_ON_64),
            target,
            platform.el3_entry(entry),
            platform.secondary_context(index),
        ];
        let result = forward(platform, args);
        if result != psci::SUCCESS {
            let mut power = slot.power.lock();
            if matches!(*power, CpuPower::OnPending { ticket: t, .. } if t == ticket) {
                *power = CpuPower::Off;
            }
            log::warn!("PSCI CPU_ON {target:#x}: EL3 returned {result}");
        }
        result
    }

    fn cpu_off<P: Platform + ?Sized>(&self, platform: &mut P) -> i64 {
        let Some(slot) = self.slots().get(platform.cpu_index()) else {
            return psci::DENIED;
        };
        *slot.power.lock() = CpuPower::Off;
        let result = forward(platform, [u64::from(psci::CPU_OFF), 0, 0, 0]);
        // CPU_OFF only returns on failure: the caller is still running.
        *slot.power.lock() = CpuPower::On;
        log::warn!("PSCI CPU_OFF on CPU {}: EL3 returned {result}", platform.cpu_index());
        result
    }

    fn cpu_suspend<P: Platform + ?Sized>(
        &self,
        power_state: u64,
        entry: u64,
        context: u64,
        platform: &mut P,
    ) -> i64 {
        let index = platform.cpu_index();
        let Some(slot) = self.slots().get(index) else {
            return psci::DENIED;
        };
        // Standby requests carry no entry point (Linux passes 0); only power-down ones must
        // resume somewhere valid.
        if self.is_power_down(power_state, platform) && !valid_host_entry(platform, entry) {
            return psci::INVALID_ADDRESS;
        }
        *slot.power.lock() = CpuPower::Suspending { host: HostEntry { entry, context } };
        // The entry point is rewritten even for standby (EL3 ignores it there), so that a state
        // EL3 treats as power-down although warden misread it still wakes in warden.
        let args = [
            u64::from(psci::CPU_SUSPEND_64),
            power_state,
            platform.el3_entry(entry),
            platform.secondary_context(index),
        ];
        let result = forward(platform, args);
        // Returned: standby, an early wake-up or an error; the CPU is running the host again.
        *slot.power.lock() = CpuPower::On;
        result
    }

    fn is_power_down<P: Platform + ?Sized>(&self, power_state: u64, platform: &mut P) -> bool {
        let mut format = self.suspend_format.load(Ordering::Relaxed);
        if format == SUSPEND_FORMAT_UNKNOWN {
            let features = forward(
                platform,
                [u64::from(psci::PSCI_FEATURES), u64::from(psci::CPU_SUSPEND_64), 0, 0],
            );
            format = if features >= 0 && features as u64 & FEATURE_EXTENDED_STATE_ID != 0 {
                SUSPEND_FORMAT_EXTENDED
            } else {
                SUSPEND_FORMAT_ORIGINAL
            };
            self.suspend_format.store(format, Ordering::Relaxed);
        }
        let bit = if format == SUSPEND_FORMAT_EXTENDED {
            POWER_DOWN_EXTENDED
        } else {
            POWER_DOWN_ORIGINAL
        };
        power_state & bit != 0
    }

    /// AFFINITY_INFO: whether some host CPU matches `target` at `level` and above.
    fn affinity_known(&self, target: u64, level: u64) -> bool {
        let ignored: u64 = match level {
            0 => 0,
            1 => 0xff,
            2 => 0xffff,
            3 => 0xff_ffff,
            _ => return false,
        };
        if target & !MPIDR_AFFINITY_MASK != 0 {
            return false;
        }
        let mask = MPIDR_AFFINITY_MASK & !ignored;
        self.slots().iter().any(|c| c.mpidr & mask == target & mask)
    }
}

/// An entry point the host may ask a CPU to start at: in host RAM and 4-byte aligned (an
/// A64 instruction address).
fn valid_host_entry<P: Platform + ?Sized>(platform: &P, entry: u64) -> bool {
    entry & 3 == 0 && platform.is_host_ram(entry)
}

/// Forwards a PSCI call to EL3 and returns x0 as a PSCI status.
fn forward<P: Platform + ?Sized>(platform: &mut P, args: [u64; 4]) -> i64 {
    platform.smc_to_el3(args)[0] as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::fake::{FakeEl3, FakePlatform};
    use alloc::sync::Arc;
    use alloc::vec;
    use std::thread;

    const MPIDRS: [u64; 4] = [0x0, 0x1, 0x100, 0x1_0000_0000];
    const ENTRY: u64 = 0x4008_0000;

    #[test]
    fn the_boot_cpu_is_cpu_0_whatever_the_dt_order() {
        let mut mpidrs = vec![0x1, 0x2, 0x0, 0x3];
        assert!(boot_cpu_first(&mut mpidrs, 0x0));
        assert_eq!(mpidrs, [0x0, 0x1, 0x2, 0x3]);
        let mut mpidrs = vec![0x100, 0x0, 0x1];
        assert!(boot_cpu_first(&mut mpidrs, 0x1));
        assert_eq!(mpidrs, [0x1, 0x100, 0x0]);
        assert!(boot_cpu_first(&mut mpidrs, 0x1));
        assert_eq!(mpidrs, [0x1, 0x100, 0x0], "already first: unchanged");
        assert!(!boot_cpu_first(&mut mpidrs, 0x7));
        assert_eq!(mpidrs, [0x1, 0x100, 0x0]);
    }

    fn setup() -> (Psci, Arc<FakeEl3>, FakePlatform) {
        let el3 = Arc::new(FakeEl3::qemu());
        let psci = Psci::new(&MPIDRS, 0).unwrap();
        let platform = FakePlatform::new(0, el3.clone());
        (psci, el3, platform)
    }

    #[test]
    fn init_validates_the_cpu_list() {
        assert_eq!(Psci::new(&[], 0).unwrap_err(), PsciInitError::NoCpus);
        assert_eq!(Psci::new(&[0, 1], 2).unwrap_err(), PsciInitError::BootCpuOutOfRange(2));
        assert_eq!(Psci::new(&[0, 1, 1], 0).unwrap_err(), PsciInitError::DuplicateMpidr(1));
        assert_eq!(
            Psci::new(&[0, 0x8000_0000], 0).unwrap_err(),
            PsciInitError::InvalidMpidr(0x8000_0000)
        );
        let many = vec![0u64; MAX_HOST_CPUS + 1];
        assert_eq!(Psci::new(&many, 0).unwrap_err(), PsciInitError::TooManyCpus(MAX_HOST_CPUS + 1));
        let psci = Psci::new(&MPIDRS, 2).unwrap();
        assert_eq!(psci.cpu_count(), 4);
        assert_eq!(psci.power_state(2), Some(CpuPower::On));
        assert_eq!(psci.power_state(0), Some(CpuPower::Off));
        assert_eq!(psci.power_state(4), None);
        // The raw MPIDR_EL1 (U and RES1 bit 31 set) finds the CPU.
        assert_eq!(psci.cpu_index_of(0x8000_0100 | (1 << 30)), Some(2));
        assert_eq!(psci.mpidr_of(3), Some(0x1_0000_0000));
        assert_eq!(psci.cpu_index_of(0x2), None);
    }

    #[test]
    fn cpu_on_unknown_target_forwards_nothing() {
        let (psci, el3, mut p) = setup();
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x2, ENTRY, 0], &mut p), psci::INVALID_PARAMETERS);
        // Bits outside the affinity fields.
        assert_eq!(
            psci.handle(psci::CPU_ON_64, [0x1 | (1 << 40), ENTRY, 0], &mut p),
            psci::INVALID_PARAMETERS
        );
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn cpu_on_self_and_already_on() {
        let (psci, el3, mut p) = setup();
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x0, ENTRY, 0], &mut p), psci::ALREADY_ON);
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn cpu_on_success_forwards_exactly_then_arrival() {
        let (psci, el3, mut p) = setup();
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x100, ENTRY, 0xc0ffee], &mut p), psci::SUCCESS);
        assert_eq!(
            el3.calls(),
            vec![[
                u64::from(psci::CPU_ON_64),
                0x100,
                FakePlatform::SECONDARY_ENTRY,
                FakePlatform::context_for(2)
            ]]
        );
        assert!(matches!(psci.power_state(2), Some(CpuPower::OnPending { .. })));
        // A second CPU_ON while pending.
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x100, ENTRY, 0], &mut p), psci::ON_PENDING);
        assert_eq!(psci.secondary_arrived(2), Ok(HostEntry { entry: ENTRY, context: 0xc0ffee }));
        assert_eq!(psci.power_state(2), Some(CpuPower::On));
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x100, ENTRY, 0], &mut p), psci::ALREADY_ON);
        // Nothing more was forwarded.
        assert_eq!(el3.calls().len(), 1);
        // Arriving twice, or without being sent, is refused.
        assert_eq!(psci.secondary_arrived(2), Err(ArrivalError::NotExpected(CpuPower::On)));
        assert_eq!(psci.secondary_arrived(1), Err(ArrivalError::NotExpected(CpuPower::Off)));
        assert_eq!(psci.secondary_arrived(9), Err(ArrivalError::UnknownCpu(9)));
    }

    /// On a hyp-entry board TrustZone enters warden at its base whatever the entry: warden
    /// gives EL3 the host's own entry (TZ passes it back in x0; a real TZ checks it is
    /// non-secure memory), still with the CPU's context, and the arrival resumes the host there.
    #[test]
    fn hyp_entry_board_forwards_the_hosts_own_entry() {
        let (psci, el3, mut p) = setup();
        p.board.entry = crate::boards::EntryConvention::Hyp {
            base: 0x7e00_0000,
            region_size: 32 << 20,
            rpm_release: None,
        };
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x100, ENTRY, 0xc0ffee], &mut p), psci::SUCCESS);
        assert_eq!(
            el3.calls(),
            vec![[u64::from(psci::CPU_ON_64), 0x100, ENTRY, FakePlatform::context_for(2)]]
        );
        assert_eq!(psci.secondary_arrived(2), Ok(HostEntry { entry: ENTRY, context: 0xc0ffee }));
    }

    #[test]
    fn cpu_on_bad_entry() {
        let (psci, el3, mut p) = setup();
        // Outside host RAM (warden's own memory, say).
        assert_eq!(
            psci.handle(psci::CPU_ON_64, [0x1, FakePlatform::WARDEN_BASE, 0], &mut p),
            psci::INVALID_ADDRESS
        );
        // Misaligned.
        assert_eq!(
            psci.handle(psci::CPU_ON_64, [0x1, ENTRY + 2, 0], &mut p),
            psci::INVALID_ADDRESS
        );
        assert!(el3.calls().is_empty());
        assert_eq!(psci.power_state(1), Some(CpuPower::Off));
    }

    #[test]
    fn cpu_on_el3_failure_reverts() {
        let (psci, el3, mut p) = setup();
        el3.fail_next(psci::INTERNAL_FAILURE);
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x1, ENTRY, 0], &mut p), psci::INTERNAL_FAILURE);
        assert_eq!(psci.power_state(1), Some(CpuPower::Off));
        // And a retry works.
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x1, ENTRY, 0], &mut p), psci::SUCCESS);
    }

    /// Runs a call that EL3 does not return from (the fake panics to model that).
    fn call_that_powers_off(psci: &Psci, fid: u32, args: [u64; 3], p: &mut FakePlatform) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            psci.handle(fid, args, p);
        }));
        assert!(result.is_err(), "EL3 returned from a call that powers the CPU off");
    }

    #[test]
    fn hotplug_off_then_on_again() {
        let (psci, el3, mut p0) = setup();
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x1, ENTRY, 7], &mut p0), psci::SUCCESS);
        assert!(psci.secondary_arrived(1).is_ok());
        // CPU 1 turns itself off: EL3 does not return.
        let mut p1 = FakePlatform::new(1, el3.clone());
        el3.power_off_on(psci::CPU_OFF);
        call_that_powers_off(&psci, psci::CPU_OFF, [0; 3], &mut p1);
        assert_eq!(psci.power_state(1), Some(CpuPower::Off));
        assert_eq!(psci.handle(psci::AFFINITY_INFO_64, [0x1, 0, 0], &mut p0), psci::AFFINITY_OFF);
        // CPU 0 brings it back with a new entry point.
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x1, ENTRY + 0x100, 8], &mut p0), psci::SUCCESS);
        assert_eq!(psci.secondary_arrived(1), Ok(HostEntry { entry: ENTRY + 0x100, context: 8 }));
        let on_calls = el3.calls().iter().filter(|c| c[0] == u64::from(psci::CPU_ON_64)).count();
        assert_eq!(on_calls, 2);
    }

    #[test]
    fn cpu_off_failure_restores_on() {
        let (psci, el3, mut p) = setup();
        el3.fail_next(psci::DENIED);
        assert_eq!(psci.handle(psci::CPU_OFF, [0; 3], &mut p), psci::DENIED);
        assert_eq!(psci.power_state(0), Some(CpuPower::On));
        assert_eq!(el3.calls(), vec![[u64::from(psci::CPU_OFF), 0, 0, 0]]);
    }

    #[test]
    fn cpu_suspend_power_down_rewrites_entry() {
        let (psci, el3, mut p) = setup();
        // Original format (QEMU: PSCI_FEATURES(CPU_SUSPEND) = 0): bit 16 is power-down.
        let state = 1 << 16;
        el3.power_off_on(psci::CPU_SUSPEND_64);
        call_that_powers_off(&psci, psci::CPU_SUSPEND_64, [state, ENTRY, 0x55], &mut p);
        assert_eq!(
            el3.calls(),
            vec![
                [u64::from(psci::PSCI_FEATURES), u64::from(psci::CPU_SUSPEND_64), 0, 0],
                [
                    u64::from(psci::CPU_SUSPEND_64),
                    state,
                    FakePlatform::SECONDARY_ENTRY,
                    FakePlatform::context_for(0)
                ],
            ]
        );
        let host = HostEntry { entry: ENTRY, context: 0x55 };
        assert_eq!(psci.power_state(0), Some(CpuPower::Suspending { host }));
        // Another CPU cannot start it meanwhile.
        let mut p1 = FakePlatform::new(1, el3.clone());
        assert_eq!(psci.handle(psci::CPU_ON_64, [0x0, ENTRY, 0], &mut p1), psci::ALREADY_ON);
        // The CPU wakes in warden and resumes the host where it asked.
        assert_eq!(psci.secondary_arrived(0), Ok(host));
        assert_eq!(psci.power_state(0), Some(CpuPower::On));

        // Power-down with an entry outside host RAM: refused, format is cached (no re-query).
        assert_eq!(
            psci.handle(psci::CPU_SUSPEND_64, [state, 0x10, 0], &mut p),
            psci::INVALID_ADDRESS
        );
        assert_eq!(el3.calls().len(), 2);
    }

    #[test]
    fn cpu_suspend_standby_returns_and_ignores_entry() {
        let (psci, el3, mut p) = setup();
        // Standby with entry 0 (what Linux passes) is fine and returns.
        assert_eq!(psci.handle(psci::CPU_SUSPEND_32, [0x0, 0, 0], &mut p), psci::SUCCESS);
        assert_eq!(psci.power_state(0), Some(CpuPower::On));
        assert_eq!(el3.calls().len(), 2);
    }

    #[test]
    fn cpu_suspend_extended_format() {
        let (psci, el3, mut p) = setup();
        el3.set_suspend_features(FEATURE_EXTENDED_STATE_ID as i64);
        // Bit 16 is part of the state ID in the extended format: standby, entry unchecked.
        assert_eq!(psci.handle(psci::CPU_SUSPEND_64, [1 << 16, 0, 0], &mut p), psci::SUCCESS);
        // Bit 30 is power-down.
        assert_eq!(
            psci.handle(psci::CPU_SUSPEND_64, [1 << 30, 0x10, 0], &mut p),
            psci::INVALID_ADDRESS
        );
    }

    #[test]
    fn affinity_info() {
        let (psci, el3, mut p) = setup();
        assert_eq!(
            psci.handle(psci::AFFINITY_INFO_64, [0x2, 0, 0], &mut p),
            psci::INVALID_PARAMETERS
        );
        assert_eq!(
            psci.handle(psci::AFFINITY_INFO_64, [0x1, 4, 0], &mut p),
            psci::INVALID_PARAMETERS
        );
        assert!(el3.calls().is_empty());
        assert_eq!(psci.handle(psci::AFFINITY_INFO_64, [0x1, 0, 0], &mut p), psci::AFFINITY_OFF);
        // Level 1: cluster 0x1xx contains 0x100.
        assert_eq!(psci.handle(psci::AFFINITY_INFO_32, [0x1ff, 1, 0], &mut p), psci::AFFINITY_OFF);
        assert_eq!(
            el3.calls(),
            vec![
                [u64::from(psci::AFFINITY_INFO_64), 0x1, 0, 0],
                [u64::from(psci::AFFINITY_INFO_32), 0x1ff, 1, 0]
            ]
        );
    }

    #[test]
    fn features_version_and_system_calls() {
        let (psci, el3, mut p) = setup();
        assert_eq!(psci.handle(psci::PSCI_FEATURES, [u64::from(psci::CPU_ON_64), 0, 0], &mut p), 0);
        assert_eq!(
            psci.handle(
                psci::PSCI_FEATURES,
                [u64::from(warden_abi::smccc::SMCCC_VERSION), 0, 0],
                &mut p
            ),
            psci::SUCCESS
        );
        // SYSTEM_SUSPEND (0xC400000E) is not mediated: NOT_SUPPORTED without asking EL3.
        assert_eq!(
            psci.handle(psci::PSCI_FEATURES, [0xC400_000E, 0, 0], &mut p),
            psci::NOT_SUPPORTED
        );
        assert_eq!(psci.handle(0xC400_000E, [ENTRY, 0, 0], &mut p), psci::NOT_SUPPORTED);
        assert_eq!(psci.handle(psci::PSCI_VERSION, [9, 9, 9], &mut p), 0x1_0001);
        psci.handle(psci::SYSTEM_RESET2_64, [0x8000_0000, 0x1234, 9], &mut p);
        psci.handle(psci::SYSTEM_OFF, [1, 2, 3], &mut p);
        assert_eq!(
            el3.calls(),
            vec![
                [u64::from(psci::PSCI_FEATURES), u64::from(psci::CPU_ON_64), 0, 0],
                [u64::from(psci::PSCI_VERSION), 0, 0, 0],
                [u64::from(psci::SYSTEM_RESET2_64), 0x8000_0000, 0x1234, 0],
                [u64::from(psci::SYSTEM_OFF), 0, 0, 0],
            ]
        );
        // warden got to report before each power-down call left for EL3 (calls 2 and 3).
        assert_eq!(p.power_down_notices, vec![2, 3]);
    }

    #[test]
    fn concurrent_cpu_on_to_the_same_target() {
        for _ in 0..200 {
            let el3 = Arc::new(FakeEl3::qemu());
            let psci = Arc::new(Psci::new(&MPIDRS, 0).unwrap());
            // CPU 1 is already on; CPUs 0 and 1 both try to start CPU 2.
            *psci.cpus[1].power.lock() = CpuPower::On;
            let handles: vec::Vec<_> = (0..2)
                .map(|caller| {
                    let psci = psci.clone();
                    let el3 = el3.clone();
                    thread::spawn(move || {
                        let mut p = FakePlatform::new(caller, el3);
                        psci.handle(psci::CPU_ON_64, [0x100, ENTRY, caller as u64], &mut p)
                    })
                })
                .collect();
            let mut results: vec::Vec<i64> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            results.sort();
            // One succeeds; the other sees it pending.
            assert_eq!(results, vec![psci::ON_PENDING, psci::SUCCESS]);
            assert_eq!(el3.calls().len(), 1);
        }
    }
}
