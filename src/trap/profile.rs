//! Where a trap's instructions go, for `cargo xtask bench` (issue 16's per-trap breakdown).
//!
//! Only the image built with the cargo feature `trap-profile` counts anything: the bench builds
//! that image for its profile run alone (`warden-trap-profile.bin`); in every other build each
//! function here is empty and inlined away, so `warden.bin`'s trap path pays nothing for it.
//!
//! The trap path marks the end of each [`Phase`] with [`mark`]; the counter delta since the
//! previous mark goes to that phase (under QEMU `-icount shift=0` one tick is one instruction,
//! the marks' own few instructions included). [`kind`] says which [`Kind`] of trap this is and
//! [`end`] adds the trap's phases to that kind's totals, which warden prints at power-down
//! (`trap profile: ...`, parsed by the bench). What happens before the first mark (the
//! exception entry, the vector saving the frame) and after the last (restoring it, `ERET`) is
//! not seen here: the bench takes it as the guest's round trip minus these phases.
//!
//! The stamps and totals are global relaxed atomics read and written with plain loads and
//! stores, not per CPU: the bench traps from one host CPU, and the figures are averages, so a
//! rare trap on another CPU only blurs them.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Which kind of trap the phases belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An SMCCC call (HVC or trapped SMC).
    Call = 0,
    /// A trapped read of the virtual SMMU other than `CMDQ_CONS`.
    VsmmuRead,
    /// A trapped write of the virtual SMMU other than `CMDQ_PROD`.
    VsmmuWrite,
    /// A write of the virtual SMMU's `CMDQ_PROD` (commands consumed).
    CmdqProd,
    /// A read of the virtual SMMU's `CMDQ_CONS` (the host polling for a sync).
    CmdqCons,
    /// Anything else (stage-2 faults, the control page, GIC frames).
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Call,
        Kind::VsmmuRead,
        Kind::VsmmuWrite,
        Kind::CmdqProd,
        Kind::CmdqCons,
        Kind::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::VsmmuRead => "vsmmu-read",
            Kind::VsmmuWrite => "vsmmu-write",
            Kind::CmdqProd => "cmdq-prod",
            Kind::CmdqCons => "cmdq-cons",
            Kind::Other => "other",
        }
    }
}

/// The phases of one trap, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// From the Rust handler's first instruction: the panic check, the per-CPU state, the
    /// simulated peer's stop check.
    Enter = 0,
    /// The handler's prologue, the exception class, the trap counters.
    Classify,
    /// Which emulated MMIO window a data abort hit, if any (data aborts only).
    Window,
    /// The MMIO syndrome decoded into an access (emulated windows only).
    Syndrome,
    /// The call's registers and caller, or the register offset of an access.
    Decode,
    /// Locks a virtual-SMMU access takes before it emulates anything.
    Locks,
    /// The call or the emulation itself.
    Work,
    /// The result written back into the frame (registers, ELR), returning to the top.
    Complete,
    /// The real SMMU's event queue checked (and drained).
    Drain,
    /// The EL2 tick statistics, up to the return to the vector.
    Exit,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Enter,
        Phase::Classify,
        Phase::Window,
        Phase::Syndrome,
        Phase::Decode,
        Phase::Locks,
        Phase::Work,
        Phase::Complete,
        Phase::Drain,
        Phase::Exit,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Phase::Enter => "enter",
            Phase::Classify => "classify",
            Phase::Window => "window",
            Phase::Syndrome => "syndrome",
            Phase::Decode => "decode",
            Phase::Locks => "locks",
            Phase::Work => "work",
            Phase::Complete => "complete",
            Phase::Drain => "drain",
            Phase::Exit => "exit",
        }
    }
}

const KINDS: usize = Kind::ALL.len();
const PHASES: usize = Phase::ALL.len();

/// One trap in progress and the totals per kind.
///
/// A mark is one counter read and one plain store (relaxed atomics compile to `LDR`/`STR`), so
/// it adds about four instructions to the phase it ends; [`Profile::end`] does the sums, after
/// the last mark.
pub struct Profile {
    begin: AtomicU64,
    /// When each phase of the current trap ended; older than `begin`: not reached this trap.
    stamps: [AtomicU64; PHASES],
    kind: AtomicUsize,
    traps: [AtomicU64; KINDS],
    totals: [[AtomicU64; PHASES]; KINDS],
}

impl Profile {
    pub const fn new() -> Self {
        Profile {
            begin: AtomicU64::new(0),
            stamps: [const { AtomicU64::new(0) }; PHASES],
            kind: AtomicUsize::new(Kind::Other as usize),
            traps: [const { AtomicU64::new(0) }; KINDS],
            totals: [const { [const { AtomicU64::new(0) }; PHASES] }; KINDS],
        }
    }

    /// A trap starts at counter value `now`.
    pub fn begin(&self, now: u64) {
        self.begin.store(now, Ordering::Relaxed);
        self.kind.store(Kind::Other as usize, Ordering::Relaxed);
    }

    /// `phase` ended at `now` (phases are marked in [`Phase::ALL`] order; each at most once).
    pub fn mark(&self, phase: Phase, now: u64) {
        self.stamps[phase as usize].store(now, Ordering::Relaxed);
    }

    pub fn set_kind(&self, kind: Kind) {
        self.kind.store(kind as usize, Ordering::Relaxed);
    }

    /// The trap is over: its phases go to its kind's totals (a phase not marked this trap
    /// gets nothing; the next marked one gets the time since the last mark).
    pub fn end(&self) {
        let kind = self.kind.load(Ordering::Relaxed).min(KINDS - 1);
        let begin = self.begin.load(Ordering::Relaxed);
        let add = |a: &AtomicU64, v: u64| a.store(a.load(Ordering::Relaxed) + v, Ordering::Relaxed);
        add(&self.traps[kind], 1);
        let mut last = begin;
        for (total, stamp) in self.totals[kind].iter().zip(&self.stamps) {
            let at = stamp.load(Ordering::Relaxed);
            if at >= begin {
                add(total, at.wrapping_sub(last));
                last = at;
            }
        }
    }
    /// Traps of `kind` so far, and their ticks per phase (in [`Phase::ALL`] order).
    pub fn totals(&self, kind: Kind) -> (u64, [u64; PHASES]) {
        let ticks = core::array::from_fn(|p| self.totals[kind as usize][p].load(Ordering::Relaxed));
        (self.traps[kind as usize].load(Ordering::Relaxed), ticks)
    }

    /// The power-down line: `call n=600 enter=12 ...; vsmmu-read n=...` (totals, kinds with
    /// no trap left out).
    pub fn write_line(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let mut first = true;
        for kind in Kind::ALL {
            let (n, ticks) = self.totals(kind);
            if n == 0 {
                continue;
            }
            if !first {
                out.write_str(";")?;
            }
            first = false;
            write!(out, " {} n={n}", kind.name())?;
            for (phase, t) in Phase::ALL.iter().zip(ticks) {
                write!(out, " {}={t}", phase.name())?;
            }
        }
        Ok(())
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind of a virtual-SMMU access at `offset` (page 0's queue registers apart).
pub const fn vsmmu_kind(offset: u32, write: bool) -> Kind {
    match (offset, write) {
        (crate::smmu::regs::CMDQ_PROD, true) => Kind::CmdqProd,
        (crate::smmu::regs::CMDQ_CONS, false) => Kind::CmdqCons,
        (_, true) => Kind::VsmmuWrite,
        (_, false) => Kind::VsmmuRead,
    }
}

/// Whether this build profiles traps.
pub const ENABLED: bool = cfg!(all(feature = "trap-profile", target_arch = "aarch64"));

#[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
static PROFILE: Profile = Profile::new();

#[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
fn now() -> u64 {
    crate::arch::aarch64::sysreg::counter()
}

/// A trap starts (the Rust handler's first instruction).
#[inline(always)]
pub fn begin() {
    #[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
    PROFILE.begin(now());
}

/// `phase` of the current trap ends here.
#[inline(always)]
pub fn mark(_phase: Phase) {
    #[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
    PROFILE.mark(_phase, now());
}

/// The current trap is of `kind`.
#[inline(always)]
pub fn kind(_kind: Kind) {
    #[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
    PROFILE.set_kind(_kind);
}

/// The current trap is over.
#[inline(always)]
pub fn end() {
    #[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
    PROFILE.end();
}

/// The `trap profile:` line's text (after the colon), if this build profiles.
pub fn report(out: &mut impl core::fmt::Write) -> Option<core::fmt::Result> {
    #[cfg(all(feature = "trap-profile", target_arch = "aarch64"))]
    return Some(PROFILE.write_line(out));
    #[cfg(not(all(feature = "trap-profile", target_arch = "aarch64")))]
    {
        let _ = out;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_go_to_the_kind_of_their_trap() {
        let p = Profile::new();
        p.begin(100);
        p.mark(Phase::Enter, 110);
        p.mark(Phase::Decode, 130);
        p.set_kind(Kind::Call);
        p.mark(Phase::Work, 205);
        p.mark(Phase::Exit, 206);
        p.end();
        p.begin(1000);
        p.mark(Phase::Enter, 1003);
        p.end();
        let (n, ticks) = p.totals(Kind::Call);
        assert_eq!(n, 1);
        assert_eq!(ticks, [10, 0, 0, 0, 20, 0, 75, 0, 0, 1]);
        assert_eq!(p.totals(Kind::Other), (1, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(p.totals(Kind::CmdqProd), (0, [0; PHASES]));
        let mut line = String::new();
        p.write_line(&mut line).unwrap();
        assert_eq!(
            line,
            " call n=1 enter=10 classify=0 window=0 syndrome=0 decode=20 locks=0 work=75 \
             complete=0 drain=0 exit=1; other n=1 enter=3 classify=0 window=0 syndrome=0 \
             decode=0 locks=0 work=0 complete=0 drain=0 exit=0"
        );
    }

    #[test]
    fn without_the_feature_nothing_is_reported() {
        let mut line = String::new();
        assert_eq!(report(&mut line).is_some(), ENABLED);
    }
}
