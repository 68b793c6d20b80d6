//! Exceptions taken to EL2 from the host: decoding, SMCCC routing, PSCI mediation and fault
//! containment.
//!
//! The EL2 vector saves a [`TrapFrame`] and calls [`TrapHandler::handle_lower_sync`] for a
//! synchronous exception from the host; whatever the handler leaves in the frame is restored
//! and `ERET`ed. Everything hardware-dependent comes through [`Platform`], so the whole path
//! runs in host tests against `fake::FakePlatform`.

#[cfg(test)]
mod abi_order_tests;
pub mod control_page;
pub mod esr;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod fast;
pub mod frame;
pub mod inject;
pub mod mmio;
pub mod profile;
pub mod psci;
pub mod s1walk;
pub mod scm;
pub mod smccc;
pub mod violations;

use core::sync::atomic::{AtomicU64, Ordering};

pub use frame::TrapFrame;
use warden_abi::AbiError;
use warden_abi::calls::WardenCall;
use warden_abi::handoff::{Caller, Owner, Request};
use warden_abi::peer::{self as peer_abi, PeerCommand};
use warden_abi::smccc::CONV_64;

use crate::boards::{Board, ViolationPolicy};
use crate::mm::Perms;
use control_page::ControlPage;
use esr::{AbortReport, Esr, ExceptionClass, FaultStatus};
use inject::{El1ExceptionRegs, HostEl1, InjectError, Injection, TrappedState};
use psci::Psci;
use smccc::{SmcccCall, SmcccReturn};
use violations::ViolationRing;

/// The hardware-dependent pieces the trap path needs, implemented by the aarch64 integration
/// (and by `fake::FakePlatform` in tests). One value per CPU per trap. The SCM calls' needs
/// ([`scm::ScmHost`]: host buffers, assignments) are part of it.
pub trait Platform: scm::ScmHost {
    /// Index of the current CPU in the host CPU list given to [`Psci::new`].
    fn cpu_index(&self) -> usize;
    /// The board (firmware kind, violation policy).
    fn board(&self) -> Board;
    /// The host's VBAR_EL1 and SCTLR_EL1 now, and the PSTATE features its CPU implements.
    fn host_el1(&self) -> HostEl1;
    /// Writes ESR_EL1, FAR_EL1 (when `Some`), ELR_EL1 and SPSR_EL1 of the host.
    fn write_host_el1_exception(&mut self, regs: &El1ExceptionRegs);
    /// `SMC #0` to EL3 with x0..x3 = `args`; returns x0..x3.
    fn smc_to_el3(&mut self, args: [u64; 4]) -> [u64; 4];
    /// The entry point warden gives EL3 when it powers host CPU up (`CPU_ON`) or lets it power
    /// down (`CPU_SUSPEND`) for the host, which asked to start at `host_entry`: warden's own
    /// secondary entry (a packed-image board), or on a hyp-entry board the host's entry itself,
    /// since its TrustZone enters warden at warden's base anyway and passes that entry in x0
    /// (and a real TZ checks it is non-secure memory).
    fn el3_entry(&self, host_entry: u64) -> u64;
    /// The context value EL3 passes in x0 to [`Self::el3_entry`] for host CPU `cpu_index`
    /// (warden's per-CPU data, say; a hyp-entry TrustZone drops it, and warden finds the CPU's
    /// data by its MPIDR).
    fn secondary_context(&self, cpu_index: usize) -> u64;
    /// Whether `addr` is host RAM (owned by the host and mapped in its stage-2).
    fn is_host_ram(&self, addr: u64) -> bool;
    /// The 64-bit word at `ipa` (8-byte aligned) if it is memory warden may read for the host
    /// (host-owned, outside every carveout: it cannot change owner meanwhile), else `None`.
    fn read_host_u64(&self, ipa: u64) -> Option<u64>;
    /// The host asked for SYSTEM_OFF/SYSTEM_RESET(2): called just before the call goes to EL3,
    /// so warden can report its final state (it does not return on success).
    fn before_system_power_down(&mut self);
    /// Who owns `ipa` (from the ownership tracker), recorded with a violation there.
    fn owner_of(&self, ipa: u64) -> Owner;
    /// Whether the stage-2 of the caller that trapped (the host's, or the peer's on its CPU)
    /// maps the page at `ipa` now with at least `needed`, looked up under that table's lock:
    /// a stage-2 fault the answer is yes for raced with a change that has completed since
    /// (an entry briefly broken, a mapping just added), and the access is to be retried. When
    /// it answers yes, this CPU's TLBs hold nothing older for the page (on hardware: a local
    /// TLBI for it), so the retried access walks the tables as they are now.
    fn stage2_allows(&self, ipa: u64, needed: Perms) -> bool;
    /// Who trapped: the host, or a peer running on a CPU warden kept for it.
    fn caller(&self) -> Caller;
    /// A carveout call (anything [`Request::decode`] knows but the violation queries), already
    /// checked to be well formed; `x0..x7` of the reply.
    fn handoff(&mut self, caller: Caller, request: &Request) -> Result<[u64; 8], AbiError>;
    /// Whether this machine runs a simulated peer (else `PEER_COMMAND` is `NOT_SUPPORTED`).
    fn peer_commands_available(&self) -> bool;
    /// The host's `PEER_COMMAND`: runs it on the simulated peer and waits for the result.
    fn peer_command(&mut self, command: &PeerCommand) -> Result<u64, AbiError>;
    /// The peer's `PEER_DONE`: its command is finished; on hardware this powers the peer's CPU
    /// off and does not return.
    fn peer_done(&mut self);
    /// The counter (CNTPCT), for `TRAP_STATS`.
    fn counter(&self) -> u64;
    /// The persona the host is offered (the SCM interface only on the Snapdragon one).
    fn persona(&self) -> crate::persona::Persona;
    /// The virtual SMMU's counters for `SMMU_STATS` (`None`: no virtual SMMU).
    fn smmu_stats(&self) -> Option<warden_abi::stats::SmmuStats>;
    /// The virtual SMMU's register frames (both 64 KiB pages), if warden emulates one.
    fn vsmmu_frames(&self) -> Option<crate::mm::MemRange>;
    /// A 4- or 8-byte load at `offset` into the virtual SMMU's frames: the value read.
    fn vsmmu_read(&mut self, offset: u32, size: u8) -> u64;
    /// A 4- or 8-byte store of `value` at `offset` into the virtual SMMU's frames.
    fn vsmmu_write(&mut self, offset: u32, size: u8, value: u64);
    /// The GIC frame warden emulates that `ipa` falls in, and the offset in it (an ITS's
    /// control frame, a redistributor's RD_base or VLPI_base: `crate::gic`).
    fn gic_frame(&self, ipa: u64) -> Option<(crate::gic::GicFrame, u32)>;
    /// A 4- or 8-byte load at `offset` in an emulated GIC frame: the value read.
    fn gic_read(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8) -> u64;
    /// A 4- or 8-byte store of `value` at `offset` in an emulated GIC frame.
    fn gic_write(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8, value: u64);
}

/// Unhandled traps logged in full before rate limiting starts; after that, only the 2^k-th.
/// (Violations are rate-limited per incident by [`ViolationRing`].)
pub const LOG_FIRST_VIOLATIONS: u64 = 16;

/// Whether the `n`-th event (1-based) of a kind is logged.
pub const fn should_log(n: u64) -> bool {
    n <= LOG_FIRST_VIOLATIONS || n.is_power_of_two()
}

/// State shared by every CPU's trap handling: PSCI, the violation ring and counters. Lives in
/// a static.
#[derive(Debug)]
pub struct TrapHandler {
    psci: Psci,
    violations: ViolationRing,
    unhandled: AtomicU64,
    /// warden's own calls answered (logged with the same rate limit as violations).
    warden_calls: AtomicU64,
    /// The control page's registers (one set for the machine; see `warden_abi::control`).
    control: spin::Mutex<ControlPage>,
    /// Control-page accesses refused (undecodable or not a register).
    control_faults: AtomicU64,
    /// Virtual SMMU accesses refused (undecodable, or neither 32 nor 64 bits).
    vsmmu_faults: AtomicU64,
    /// Emulated GIC frame accesses refused (undecodable, or neither 32 nor 64 bits).
    gic_faults: AtomicU64,
    /// Stage-2 faults retried because the access was allowed by the time warden looked.
    retried: AtomicU64,
    /// Per CPU (index modulo [`RETRY_SLOTS`]): the access retried last and how many times in
    /// a row, so an access that keeps faulting although the table allows it is not retried
    /// forever.
    retry_streaks: [RetryStreak; RETRY_SLOTS],
    stats: Stats,
}

/// CPUs tracked separately by the retry guard (more share slots, which only shortens streaks).
const RETRY_SLOTS: usize = 16;
/// Retries of the same access in a row on one CPU before it is treated as a violation. One
/// retry suffices after a completed table change (the platform also drops this CPU's TLB
/// entries for the page), so a longer run means something else is wrong; the bound keeps the
/// CPU from looping in and out of warden for ever. (A loop that legitimately hits a changing
/// entry this often in a row, with no other fault between, would get one abort: what it got
/// before retries existed.)
pub const RETRY_LIMIT: u64 = 1024;

#[derive(Debug)]
struct RetryStreak {
    /// `ELR ^ IPA page` of the access retried last (0: none).
    key: AtomicU64,
    count: AtomicU64,
}

impl RetryStreak {
    const fn new() -> Self {
        Self { key: AtomicU64::new(0), count: AtomicU64::new(0) }
    }
}

/// What `TRAP_STATS` reports (relaxed counters: each is exact, their snapshot need not be).
#[derive(Debug)]
struct Stats {
    traps: AtomicU64,
    el2_ticks: AtomicU64,
    calls: AtomicU64,
    data_aborts: AtomicU64,
    other: AtomicU64,
}

impl TrapHandler {
    pub const fn new(psci: Psci) -> Self {
        TrapHandler {
            psci,
            violations: ViolationRing::new(),
            unhandled: AtomicU64::new(0),
            warden_calls: AtomicU64::new(0),
            control: spin::Mutex::new(ControlPage::new()),
            control_faults: AtomicU64::new(0),
            vsmmu_faults: AtomicU64::new(0),
            gic_faults: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            retry_streaks: [const { RetryStreak::new() }; RETRY_SLOTS],
            stats: Stats {
                traps: AtomicU64::new(0),
                el2_ticks: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                data_aborts: AtomicU64::new(0),
                other: AtomicU64::new(0),
            },
        }
    }

    pub fn psci(&self) -> &Psci {
        &self.psci
    }

    /// Host accesses refused by stage-2 so far (repeats included).
    pub fn violation_count(&self) -> u64 {
        self.violations.accesses()
    }

    /// The recorded incidents (for `VIOLATION_COUNT`/`VIOLATION_INFO`).
    pub fn violations(&self) -> &ViolationRing {
        &self.violations
    }

    /// Traps warden does not handle and turned into UNDEFINED so far.
    pub fn unhandled_count(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }

    /// Adds counter ticks spent in warden on a trap (measured by the caller around
    /// [`Self::handle_lower_sync`]).
    pub fn add_el2_ticks(&self, ticks: u64) {
        self.stats.el2_ticks.fetch_add(ticks, Ordering::Relaxed);
    }

    /// Counts a call the vector's fast path answered ([`fast`]): a trap and a call, as the full
    /// path would have counted it.
    pub fn count_fast_call(&self) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a data abort the virtual SMMU's fast path emulated ([`fast::fast_mmio`]): a trap
    /// and a data abort, as the full path would have counted it.
    pub fn count_fast_data_abort(&self) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        self.stats.data_aborts.fetch_add(1, Ordering::Relaxed);
    }

    fn count_trap(&self, class: ExceptionClass) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        let kind = match class {
            ExceptionClass::Hvc64 | ExceptionClass::Smc64 => &self.stats.calls,
            ExceptionClass::DabtLow => &self.stats.data_aborts,
            _ => &self.stats.other,
        };
        kind.fetch_add(1, Ordering::Relaxed);
    }

    fn trap_stats<P: Platform + ?Sized>(&self, platform: &P) -> warden_abi::stats::TrapStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        warden_abi::stats::TrapStats {
            traps: get(&self.stats.traps),
            el2_ticks: get(&self.stats.el2_ticks),
            now: platform.counter(),
            calls: get(&self.stats.calls),
            data_aborts: get(&self.stats.data_aborts),
            other: get(&self.stats.other),
        }
    }

    /// Handles a synchronous exception from the host (EL1/EL0, AArch64) taken to EL2.
    pub fn handle_lower_sync<P: Platform + ?Sized>(&self, frame: &mut TrapFrame, platform: &mut P) {
        let esr = Esr(frame.esr);
        self.count_trap(esr.class());
        profile::mark(profile::Phase::Classify);
        match esr.class() {
            ExceptionClass::Hvc64 => {
                // ELR_EL2 already points after the HVC.
                self.smccc_call(esr, frame, platform);
            }
            ExceptionClass::Smc64 => {
                self.smccc_call(esr, frame, platform);
                // A trapped SMC's preferred return address is the SMC itself.
                frame.elr = frame.elr.wrapping_add(4);
            }
            ExceptionClass::DabtLow => match emulated_window(esr, frame, platform) {
                Some(EmulatedWindow::ControlPage(base)) => {
                    self.control_page_access(base, frame, platform)
                }
                Some(EmulatedWindow::Vsmmu(base)) => self.vsmmu_access(base, frame, platform),
                Some(EmulatedWindow::Gic(gic, base)) => self.gic_access(gic, base, frame, platform),
                None => self.violation(esr, frame, platform),
            },
            ExceptionClass::IabtLow => self.violation(esr, frame, platform),
            other => {
                let n = self.unhandled.fetch_add(1, Ordering::Relaxed) + 1;
                if should_log(n) {
                    log::warn!(
                        "unhandled trap #{n} on CPU {}: {other} ESR {:#x} ELR {:#x} FAR {:#x}; \
                         injecting UNDEFINED",
                        platform.cpu_index(),
                        frame.esr,
                        frame.elr,
                        frame.far
                    );
                }
                let injection = inject::inject_undefined(&trapped(frame), &platform.host_el1());
                deliver(injection, frame, platform);
            }
        }
        profile::mark(profile::Phase::Complete);
    }

    fn smccc_call<P: Platform + ?Sized>(&self, esr: Esr, frame: &mut TrapFrame, platform: &mut P) {
        let call = SmcccCall::from_regs(&frame.x);
        let caller = platform.caller();
        profile::kind(profile::Kind::Call);
        profile::mark(profile::Phase::Decode);
        // SMCCC uses immediate 0; other immediates are not calls warden knows.
        let result = if esr.imm16() != 0 {
            SmcccReturn::not_supported()
        } else if let Some(result) = self.warden_call(&call, caller, platform) {
            result
        } else if caller != Caller::Host
            && warden_abi::smccc::owner(call.function_id) != warden_abi::smccc::OWNER_VENDOR_HYP
        {
            // A peer gets warden's calls only: no PSCI, nothing forwarded to EL3.
            SmcccReturn::not_supported()
        } else {
            smccc::route(&call, &self.psci, platform)
        };
        profile::mark(profile::Phase::Work);
        result.apply(&mut frame.x);
    }

    /// warden's carveout, violation, peer and statistics calls; `None` for anything else
    /// (including the version queries, which [`smccc::route`] answers).
    fn warden_call<P: Platform + ?Sized>(
        &self,
        call: &SmcccCall,
        caller: Caller,
        platform: &mut P,
    ) -> Option<SmcccReturn> {
        let fid = call.function_id;
        let reply = match WardenCall::identify(fid) {
            Ok(None | Some(WardenCall::AbiVersion)) => return None,
            // The version query's twin is the router's too (x0 only, like any unknown ID).
            Err(_) if WardenCall::identify(fid ^ CONV_64) == Ok(Some(WardenCall::AbiVersion)) => {
                return None;
            }
            Err(e) => Err(e),
            Ok(Some(kind)) => self.checked_call(kind, &call.regs, caller, platform),
        };
        let n = self.warden_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if should_log(n) {
            match &reply {
                Ok(regs) => log::info!(
                    "call {fid:#x} ({}) from {caller} on CPU {}: ok, x1 {:#x} x2 {:#x} \
                     (warden call #{n})",
                    Regs(&call.regs[1..6]),
                    platform.cpu_index(),
                    regs[1],
                    regs[2]
                ),
                Err(e) => log::info!(
                    "call {fid:#x} ({}) from {caller} on CPU {}: {e} (warden call #{n})",
                    Regs(&call.regs[1..6]),
                    platform.cpu_index()
                ),
            }
        }
        Some(match reply {
            Ok(regs) => SmcccReturn::x0_to_x7(regs),
            Err(e) => SmcccReturn::abi_error(e),
        })
    }

    /// One identified warden call, checked in the documented order (`docs/abi.md`, "Checks
    /// run in this order", and [`warden_abi::calls`]): offered on this board (else
    /// `NOT_SUPPORTED`), made by a caller that may (else `DENIED`), and only then its
    /// arguments decoded (`INVALID_PARAMETERS`) and the call carried out.
    fn checked_call<P: Platform + ?Sized>(
        &self,
        kind: WardenCall,
        regs: &[u64; 8],
        caller: Caller,
        platform: &mut P,
    ) -> Result<[u64; 8], AbiError> {
        let offered = match kind {
            WardenCall::PeerCommand => platform.peer_commands_available(),
            WardenCall::SmmuStats => platform.smmu_stats().is_some(),
            _ => true,
        };
        if !offered {
            return Err(AbiError::NotSupported);
        }
        kind.allowed_for(caller)?;
        match kind {
            WardenCall::PeerCommand => PeerCommand::decode(regs)
                .and_then(|command| platform.peer_command(&command))
                .map(peer_abi::encode_result),
            WardenCall::PeerDone => {
                warden_abi::calls::reserved_zero(regs)?;
                platform.peer_done();
                Ok([0; 8])
            }
            WardenCall::TrapStats => {
                warden_abi::calls::reserved_zero(regs)?;
                Ok(self.trap_stats(platform).encode())
            }
            WardenCall::SmmuStats => {
                warden_abi::calls::reserved_zero(regs)?;
                platform.smmu_stats().map(|s| s.encode()).ok_or(AbiError::NotSupported)
            }
            _ => match Request::decode(regs)? {
                Some(request) => self.request(&request, caller, platform),
                // identify() and Request::decode() know the same calls.
                None => Err(AbiError::NotSupported),
            },
        }
    }

    fn request<P: Platform + ?Sized>(
        &self,
        request: &Request,
        caller: Caller,
        platform: &mut P,
    ) -> Result<[u64; 8], AbiError> {
        request.allowed_for(caller)?;
        match *request {
            Request::ViolationCount => Ok(self.violations.counts().encode()),
            Request::ViolationInfo { seq } => {
                self.violations.get(seq).map(|v| v.encode()).ok_or(AbiError::NoData)
            }
            _ => platform.handoff(caller, request),
        }
    }

    /// Stage-2 faults retried because the access had become allowed (see [`Self::violation`]).
    pub fn retried_count(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Whether a stage-2 abort is to be retried: a translation or permission fault (on the
    /// access or on its stage-1 walk) whose page the caller's stage-2 now maps with the access
    /// allowed. While a table entry is broken (break-before-make) or a mapping is being added,
    /// an access that is legal before and after faults; warden then returns to the faulting
    /// instruction. The same access retried [`RETRY_LIMIT`] times in a row is not retried.
    fn retry<P: Platform + ?Sized>(&self, esr: Esr, frame: &TrapFrame, platform: &P) -> bool {
        let Some((ipa, needed)) = retry_candidate(esr, frame.hpfar) else { return false };
        let streak = &self.retry_streaks[platform.cpu_index() % RETRY_SLOTS];
        if !platform.stage2_allows(ipa, needed) {
            streak.key.store(0, Ordering::Relaxed);
            return false;
        }
        let key = frame.elr ^ ipa;
        let count = if streak.key.swap(key, Ordering::Relaxed) == key {
            streak.count.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            streak.count.store(1, Ordering::Relaxed);
            1
        };
        if count > RETRY_LIMIT {
            streak.key.store(0, Ordering::Relaxed);
            log::warn!(
                "stage-2 fault on CPU {} (ELR {:#x}, IPA {ipa:#x}) retried {RETRY_LIMIT} times \
                 in a row although the table allows it: treated as a violation",
                platform.cpu_index(),
                frame.elr
            );
            return false;
        }
        self.retried.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn violation<P: Platform + ?Sized>(&self, esr: Esr, frame: &mut TrapFrame, platform: &mut P) {
        if self.retry(esr, frame, platform) {
            // ELR_EL2 still points at the faulting instruction: it runs again.
            return;
        }
        let report = AbortReport { esr, far: frame.far, hpfar: frame.hpfar };
        let cpu = platform.cpu_index();
        let owner = report.ipa().map_or(Owner::Unknown, |ipa| platform.owner_of(ipa));
        let cpu_u32 = u32::try_from(cpu).unwrap_or(u32::MAX);
        let recorded = self
            .violations
            .record(violations::violation_from_abort(&report, frame.elr, owner, cpu_u32));
        let n = recorded.accesses;
        let who = match platform.caller() {
            Caller::Host => "host",
            Caller::Peer(p) => p.name().unwrap_or("peer"),
        };
        let board = platform.board();
        if board.violation_policy == ViolationPolicy::Panic {
            panic!(
                "{who} stage-2 violation #{n} on CPU {cpu}: {report} ELR {:#x} SPSR {:#x} \
                 owner {owner}",
                frame.elr, frame.spsr
            );
        }
        if recorded.log {
            log::warn!(
                "{who} stage-2 violation #{n} on CPU {cpu}: {report} ELR {:#x} SPSR {:#x} \
                 owner {owner} (incident {}, seen {} times)",
                frame.elr,
                frame.spsr,
                recorded.seq,
                recorded.count
            );
        }
        deliver(sea(frame, platform), frame, platform);
    }
}

impl TrapHandler {
    /// Emulates one load or store to the control page; anything that is not a register access
    /// warden can decode gets a synchronous external abort, like a violation.
    fn control_page_access<P: Platform + ?Sized>(
        &self,
        base: u64,
        frame: &mut TrapFrame,
        platform: &mut P,
    ) {
        let refused = match mmio::decode(frame) {
            Ok(access) => {
                let offset = access.ipa - base;
                // Held across the call: the page has one register set, and a call through it
                // (owner 6 only, see `control_call`) always returns.
                let result = self
                    .control
                    .lock()
                    .access(offset, &access, |regs| self.control_call(regs, platform));
                match result {
                    Ok(value) => {
                        mmio::complete(frame, &access, value);
                        return;
                    }
                    Err(fault) => alloc::format!("{access}: {fault}"),
                }
            }
            Err(e) => alloc::format!("{e}"),
        };
        refuse_mmio("control page", &self.control_faults, &refused, frame, platform);
    }

    /// Emulates one 32- or 64-bit load or store to the virtual SMMU; any other access (other
    /// sizes, no syndrome) gets a synchronous external abort, like the control page.
    fn vsmmu_access<P: Platform + ?Sized>(
        &self,
        base: u64,
        frame: &mut TrapFrame,
        platform: &mut P,
    ) {
        let decoded = mmio::decode(frame);
        profile::mark(profile::Phase::Syndrome);
        let refused = match decoded {
            Ok(access) if access.size == 4 || access.size == 8 => {
                let offset = u32::try_from(access.ipa - base).unwrap_or(u32::MAX);
                profile::kind(profile::vsmmu_kind(offset, access.write));
                profile::mark(profile::Phase::Decode);
                let value = if access.write {
                    platform.vsmmu_write(offset, access.size, access.value);
                    0
                } else {
                    platform.vsmmu_read(offset, access.size)
                };
                profile::mark(profile::Phase::Work);
                mmio::complete(frame, &access, value);
                return;
            }
            Ok(access) => alloc::format!("{access}: SMMU registers are accessed as 32 or 64 bits"),
            Err(e) => alloc::format!("{e}"),
        };
        refuse_mmio("SMMU register", &self.vsmmu_faults, &refused, frame, platform);
    }

    /// Emulates one 32- or 64-bit load or store to a trapped GIC frame (`crate::gic`); other
    /// accesses get a synchronous external abort, like the virtual SMMU's.
    fn gic_access<P: Platform + ?Sized>(
        &self,
        gic: crate::gic::GicFrame,
        base: u64,
        frame: &mut TrapFrame,
        platform: &mut P,
    ) {
        let refused = match mmio::decode(frame) {
            Ok(access) if access.size == 4 || access.size == 8 => {
                let offset = u32::try_from(access.ipa.wrapping_sub(base)).unwrap_or(u32::MAX);
                let value = if access.write {
                    platform.gic_write(gic, offset, access.size, access.value);
                    0
                } else {
                    platform.gic_read(gic, offset, access.size)
                };
                mmio::complete(frame, &access, value);
                return;
            }
            Ok(access) => alloc::format!("{access}: GIC registers are accessed as 32 or 64 bits"),
            Err(e) => alloc::format!("{e}"),
        };
        refuse_mmio("GIC register", &self.gic_faults, &refused, frame, platform);
    }

    /// A call written to the control page's `CALL` register, as the host's `HVC #0` with those
    /// registers. Only warden's own calls (owner 6): PSCI through the page could power the
    /// CPU off with the page's lock held, and nothing else belongs there.
    fn control_call<P: Platform + ?Sized>(&self, regs: [u64; 8], platform: &mut P) -> [u64; 8] {
        let mut x = [0u64; 31];
        x[..8].copy_from_slice(&regs);
        let call = SmcccCall::from_regs(&x);
        let result =
            if warden_abi::smccc::owner(call.function_id) != warden_abi::smccc::OWNER_VENDOR_HYP {
                SmcccReturn::not_supported()
            } else if let Some(result) = self.warden_call(&call, Caller::Host, platform) {
                result
            } else {
                smccc::route(&call, &self.psci, platform)
            };
        result.apply(&mut x);
        let mut out = [0u64; 8];
        out.copy_from_slice(&x[..8]);
        out
    }
}

/// An MMIO window warden emulates for the host, by its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EmulatedWindow {
    ControlPage(u64),
    Vsmmu(u64),
    /// A trapped GIC frame, and the frame's base.
    Gic(crate::gic::GicFrame, u64),
}

/// The emulated window this data abort is the host's access to, if any (a peer's access there
/// is an ordinary violation: the windows are not in its stage-2 either). On every data abort's
/// path: the IPA is decoded once and the caller looked up only for a hit.
fn emulated_window<P: Platform + ?Sized>(
    esr: Esr,
    frame: &TrapFrame,
    platform: &P,
) -> Option<EmulatedWindow> {
    let ipa = AbortReport { esr, far: frame.far, hpfar: frame.hpfar }.ipa()?;
    let window = if let Some(base) =
        platform.board().control_page.filter(|&b| ipa.wrapping_sub(b) < warden_abi::control::SIZE)
    {
        EmulatedWindow::ControlPage(base)
    } else if let Some(frames) = platform.vsmmu_frames().filter(|f| f.contains(ipa)) {
        EmulatedWindow::Vsmmu(frames.start)
    } else if let Some((gic, offset)) = platform.gic_frame(ipa) {
        EmulatedWindow::Gic(gic, ipa - u64::from(offset))
    } else {
        return None;
    };
    let window = (platform.caller() == Caller::Host).then_some(window);
    profile::mark(profile::Phase::Window);
    window
}

/// An access to an emulated MMIO window that is not one warden emulates: counted, logged with
/// the rate limit, answered with a synchronous external abort.
fn refuse_mmio<P: Platform + ?Sized>(
    what: &str,
    faults: &AtomicU64,
    why: &str,
    frame: &mut TrapFrame,
    platform: &mut P,
) {
    let n = faults.fetch_add(1, Ordering::Relaxed) + 1;
    if should_log(n) {
        log::warn!(
            "{what} access refused on CPU {} (ELR {:#x}, ESR {:#x}): {why}; injecting a \
             synchronous external abort (#{n})",
            platform.cpu_index(),
            frame.elr,
            frame.esr
        );
    }
    deliver(sea(frame, platform), frame, platform);
}

/// Argument registers on one line: `0x1, 0x2, ...`.
struct Regs<'a>(&'a [u64]);

impl core::fmt::Display for Regs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r:#x}")?;
        }
        Ok(())
    }
}

/// The page and the permission a stage-2 abort needs, if it is a kind a completed table change
/// can explain (translation or permission fault, HPFAR_EL2 valid): a write for WnR (which
/// cache maintenance that needs write permission sets too), an instruction fetch for an
/// instruction abort, a read otherwise (including stage-1 walks).
fn retry_candidate(esr: Esr, hpfar: u64) -> Option<(u64, Perms)> {
    let (fault, needed) = match (esr.data_abort(), esr.instruction_abort()) {
        (Some(d), _) if d.write() => (d.fault(), Perms { read: false, write: true, exec: false }),
        (Some(d), _) => (d.fault(), Perms { read: true, write: false, exec: false }),
        (None, Some(i)) if i.s1ptw() => {
            (i.fault(), Perms { read: true, write: false, exec: false })
        }
        (None, Some(i)) => (i.fault(), Perms { read: false, write: false, exec: true }),
        (None, None) => return None,
    };
    matches!(fault, FaultStatus::Translation(_) | FaultStatus::Permission(_))
        .then(|| (esr::fault_ipa(hpfar, 0), needed))
}

fn trapped(frame: &TrapFrame) -> TrappedState {
    TrappedState {
        esr: Esr(frame.esr),
        spsr: frame.spsr,
        elr: frame.elr,
        far: frame.far,
        s1_walk_level: None,
    }
}

/// The synchronous external abort for a refused access; for a fault on the host's own stage-1
/// walk, at the stage-1 level the walk was at ([`s1walk`]).
fn sea<P: Platform + ?Sized>(frame: &TrapFrame, platform: &P) -> Result<Injection, InjectError> {
    let host = platform.host_el1();
    let report = AbortReport { esr: Esr(frame.esr), far: frame.far, hpfar: frame.hpfar };
    let level = s1walk::walk_level(&report, &host.regime, |ipa| platform.read_host_u64(ipa));
    inject::inject_sea(&TrappedState { s1_walk_level: level, ..trapped(frame) }, &host)
}

/// Performs a computed exception entry. If the host's state cannot take one (AArch32 EL0, not
/// modelled), the frame is left alone: the host re-executes the instruction, and its
/// interrupts, still unmasked at EL0, let the host kernel preempt or kill the task.
fn deliver<P: Platform + ?Sized>(
    injection: Result<Injection, InjectError>,
    frame: &mut TrapFrame,
    platform: &mut P,
) {
    match injection {
        Ok(injection) => {
            platform.write_host_el1_exception(&injection.el1);
            frame.elr = injection.elr_el2;
            frame.spsr = injection.spsr_el2;
        }
        Err(err) => log::error!(
            "cannot deliver an exception to the host on CPU {} (ELR {:#x} SPSR {:#x}): {err}",
            platform.cpu_index(),
            frame.elr,
            frame.spsr
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeEl3, FakePlatform};
    use super::inject::spsr;
    use super::*;
    use crate::boards::Firmware;
    use alloc::sync::Arc;
    use alloc::vec;
    use warden_abi::psci as psci_abi;

    const HVC: u64 = 0x5a00_0000;
    const SMC: u64 = 0x5e00_0000;
    /// `str x1, [x0]`, translation fault L3 at stage 2.
    const DABT_WRITE: u64 = 0x93c1_8047;

    fn setup() -> (TrapHandler, Arc<FakeEl3>, FakePlatform) {
        let el3 = Arc::new(FakeEl3::qemu());
        let handler = TrapHandler::new(Psci::new(&[0, 1], 0).unwrap());
        (handler, el3.clone(), FakePlatform::new(0, el3))
    }

    fn frame(esr: u64, x0: u64, args: [u64; 3]) -> TrapFrame {
        let mut f = TrapFrame {
            esr,
            elr: 0xffff_8000_1000_0000,
            spsr: spsr::M_EL1H | spsr::Z,
            far: 0xffff_0000_7000_0008,
            hpfar: (0x7000_0000u64 >> 12) << 4,
            ..TrapFrame::default()
        };
        f.x = [0x5555; 31];
        f.x[0] = x0;
        f.x[1..4].copy_from_slice(&args);
        f
    }

    #[test]
    fn hvc_keeps_elr_smc_advances_it() {
        let (h, _el3, mut p) = setup();
        let mut f = frame(HVC, u64::from(warden_abi::hyp::ABI_VERSION), [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], warden_abi::hyp::packed_version());
        assert_eq!(f.elr, 0xffff_8000_1000_0000);
        assert_eq!(f.spsr, spsr::M_EL1H | spsr::Z);

        let mut f = frame(SMC, u64::from(warden_abi::hyp::ABI_VERSION), [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], warden_abi::hyp::packed_version());
        assert_eq!(f.elr, 0xffff_8000_1000_0004);
        assert!(p.el1_writes.is_empty());
    }

    #[test]
    fn unknown_hvc_returns_minus_one_only_in_x0() {
        let (h, el3, mut p) = setup();
        let mut f = frame(HVC, 0xC600_7777, [1, 2, 3]);
        let before = f;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0] as i64, -1);
        assert_eq!(f.x[1..], before.x[1..]);
        assert_eq!(f.elr, before.elr);
        // HVC #1 is not an SMCCC call.
        let mut f = frame(HVC | 1, u64::from(warden_abi::hyp::ABI_VERSION), [1, 2, 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[..4], [u64::MAX, 1, 2, 3]);
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn psci_through_smc() {
        let (h, el3, mut p) = setup();
        let mut f = frame(SMC, u64::from(psci_abi::CPU_ON_64), [1, 0x4008_0000, 9]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], 0);
        // EL3's x1..x3 are not passed on: PSCI returns only x0.
        assert_eq!(f.x[1..4], [1, 0x4008_0000, 9]);
        assert_eq!(f.elr, 0xffff_8000_1000_0004);
        assert_eq!(el3.calls().len(), 1);
        assert_eq!(h.psci().secondary_arrived(1).map(|e| e.context), Ok(9));
    }

    #[test]
    fn qemu_builtin_psci_only_ever_sees_psci_ids() {
        let (h, el3, mut p) = setup();
        assert_eq!(p.board.firmware, Firmware::QemuBuiltinPsci);
        // A spread of IDs through both conduits.
        let mut fids = vec![
            0x8000_0000u64,
            0x8000_0001,
            0x8000_8000,
            0x8000_7fff,
            0x8000_3fff,
            0x8200_0000,
            0xC200_0010,
            0x8300_0000,
            0xB000_0000,
            0xC400_0020,
            0xC400_0050,
            0x8600_FF01,
            0x0400_0000,
        ];
        fids.extend((0..0x20).map(|n| 0x8400_0000u64 | n));
        fids.extend((0..0x20).map(|n| 0xC400_0000u64 | n));
        for fid in fids {
            for conduit in [HVC, SMC] {
                for arg in [0u64, 0x8000_8000, u64::from(psci_abi::CPU_ON_64)] {
                    let mut f = frame(conduit, fid, [arg, 0x4008_0000, 0]);
                    h.handle_lower_sync(&mut f, &mut p);
                    let _ = h.psci().secondary_arrived(1);
                }
            }
        }
        let calls = el3.calls();
        assert!(!calls.is_empty());
        for c in calls {
            assert!(smccc::is_psci_id(c[0] as u32), "forwarded {:#x}", c[0]);
        }
    }

    #[test]
    fn dabt_violation_injects_sea() {
        let (h, _el3, mut p) = setup();
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        let x_before = f.x;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 1);
        assert_eq!(
            p.el1_writes,
            vec![El1ExceptionRegs {
                esr: 0x9600_0050,
                far: Some(0xffff_0000_7000_0008),
                elr: 0xffff_8000_1000_0000,
                spsr: spsr::M_EL1H | spsr::Z,
            }]
        );
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        // FakePlatform's host: FEAT_PAN with SPAN = 0, so PAN is set.
        assert_eq!(f.spsr, spsr::Z | spsr::PAN | spsr::DAIF | spsr::M_EL1H);
        assert_eq!(f.x, x_before);

        // From host EL0: lower-EL vector.
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        f.spsr = spsr::M_EL0T;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x400);
        assert_eq!(p.el1_writes[1].esr, 0x9200_0050);
        assert_eq!(h.violation_count(), 2);
    }

    /// A page of the host's stage-2 at the fault's IPA (0x7000_0000), with `perms`.
    fn mapped(perms: Perms) -> (crate::mm::MemRange, Perms) {
        (crate::mm::MemRange::new(0x7000_0000, 0x7000_1000), perms)
    }

    #[test]
    fn an_access_allowed_by_now_is_retried() {
        let (h, _el3, mut p) = setup();
        p.stage2 = vec![mapped(Perms::RW)];
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        let before = f;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f, before, "back to the faulting instruction, nothing else changed");
        assert!(p.el1_writes.is_empty(), "no abort injected");
        assert_eq!((h.violation_count(), h.retried_count()), (0, 1));
        assert_eq!(h.violations().counts().incidents, 0, "nothing recorded");
        assert_eq!(*p.stage2_queries.lock(), [(0x7000_0000, Perms { read: false, ..Perms::RW })]);
        // A read and a fetch need their own permission.
        let read = DABT_WRITE & !u64::from(esr::dabt::WNR);
        let mut f = frame(read, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.retried_count(), 2);
        let fetch = 0x8200_0007; // IABT_LOW, translation fault L3
        let mut f = frame(fetch, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!((h.violation_count(), h.retried_count()), (1, 2), "RW is not executable");
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
    }

    #[test]
    fn a_forbidden_access_still_gets_its_abort() {
        let (h, _el3, mut p) = setup();
        // Mapped read-only: a write is refused; another page: refused.
        p.stage2 = vec![
            mapped(Perms::R),
            (crate::mm::MemRange::new(0x7000_1000, 0x7000_2000), Perms::RWX),
        ];
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!((h.violation_count(), h.retried_count()), (1, 0));
        assert_eq!(p.el1_writes.len(), 1);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        p.stage2.clear();
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 2);
        // Faults a table change cannot explain are never retried, whatever the table says.
        p.stage2 = vec![mapped(Perms::RWX)];
        let queries = p.stage2_queries.lock().len();
        for fsc in [0x10u64, 0x00, 0x09, 0x15] {
            // synchronous external abort, address size, access flag, external abort on walk
            let mut f = frame((DABT_WRITE & !0x3f) | fsc, 0, [0; 3]);
            h.handle_lower_sync(&mut f, &mut p);
        }
        assert_eq!(h.violation_count(), 6);
        assert_eq!(p.stage2_queries.lock().len(), queries, "the table was not even consulted");
    }

    #[test]
    fn an_access_that_keeps_faulting_is_not_retried_for_ever() {
        let (h, _el3, mut p) = setup();
        p.stage2 = vec![mapped(Perms::RW)];
        for _ in 0..RETRY_LIMIT {
            let mut f = frame(DABT_WRITE, 0, [0; 3]);
            h.handle_lower_sync(&mut f, &mut p);
        }
        assert_eq!((h.violation_count(), h.retried_count()), (0, RETRY_LIMIT));
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 1, "the {}th retry in a row is refused", RETRY_LIMIT + 1);
        // Then it starts over; another access in between also starts a new streak.
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.retried_count(), RETRY_LIMIT + 1);
    }

    #[test]
    fn violations_are_recorded_as_incidents() {
        let (h, _el3, mut p) = setup();
        for _ in 0..3 {
            let mut f = frame(DABT_WRITE, 0, [0; 3]);
            h.handle_lower_sync(&mut f, &mut p);
        }
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        f.elr += 4;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 4);
        assert_eq!(p.el1_writes.len(), 4, "every access gets its SEA");
        let counts = h.violations().counts();
        assert_eq!((counts.incidents, counts.oldest, counts.accesses), (2, 0, 4));
        let first = h.violations().get(0).unwrap();
        assert_eq!(first.count, 3);
        assert_eq!(first.ipa, Some(0x7000_0008));
        assert_eq!(first.va, Some(0xffff_0000_7000_0008));
        assert_eq!(first.elr, 0xffff_8000_1000_0000);
        assert_eq!(first.esr, DABT_WRITE);
        assert!(first.access.write);
        assert_eq!(first.access.size, Some(8));
        assert_eq!(first.owner, Owner::Unknown);
        assert_eq!(first.cpu, 0);
        assert_eq!(h.violations().get(1).unwrap().elr, 0xffff_8000_1000_0004);
    }

    #[test]
    fn iabt_violation_injects_sea() {
        let (h, _el3, mut p) = setup();
        let mut f = frame(0x8200_0007, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes[0].esr, 0x8600_0010);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
    }

    #[test]
    fn aarch32_source_leaves_the_frame() {
        let (h, _el3, mut p) = setup();
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        f.spsr = 0x10;
        let before = f;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f, before);
        assert!(p.el1_writes.is_empty());
        assert_eq!(h.violation_count(), 1);
    }

    #[test]
    fn unknown_ec_injects_undefined() {
        let (h, _el3, mut p) = setup();
        // Trapped MSR (EC 0x18).
        let mut f = frame(0x6230_c001, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes[0].esr, 0x0200_0000);
        assert_eq!(p.el1_writes[0].elr, 0xffff_8000_1000_0000);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        assert_eq!(h.unhandled_count(), 1);
        assert_eq!(h.violation_count(), 0);
    }

    #[test]
    #[should_panic(expected = "host stage-2 violation #1 on CPU 0: DABT_LOW write 8B x1")]
    fn panic_policy_panics() {
        let (h, _el3, mut p) = setup();
        p.board.violation_policy = ViolationPolicy::Panic;
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
    }

    fn call_regs(esr: u64, regs: [u64; 8]) -> TrapFrame {
        let mut f = frame(esr, 0, [0; 3]);
        f.x[..8].copy_from_slice(&regs);
        f
    }

    #[test]
    fn carveout_calls_reach_the_platform_and_answer_in_x0_to_x7() {
        use warden_abi::handoff::{PeerId, Request, Target, Transfer};
        let (h, el3, mut p) = setup();
        p.handoff_reply = Ok([0, 0x7c00_0000, 0x1000, 0, 0, 0, 0, 0]);
        let donate = Request::Donate(Transfer {
            target: Target::Range { base: 0x7c00_0000, size: 0x1000 },
            peer: PeerId::MODEM,
            clear: false,
        });
        for conduit in [HVC, SMC] {
            let mut f = call_regs(conduit, donate.encode());
            h.handle_lower_sync(&mut f, &mut p);
            assert_eq!(f.x[..8], [0, 0x7c00_0000, 0x1000, 0, 0, 0, 0, 0]);
            assert_eq!(f.x[8], 0x5555, "x8 and up untouched");
        }
        assert_eq!(p.handoff_requests, vec![(Caller::Host, donate), (Caller::Host, donate)]);
        // A refused reply: the code in x0, x1..x7 zeroed.
        p.handoff_reply = Err(AbiError::Denied);
        let mut f = call_regs(HVC, donate.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[..8], [AbiError::Denied.register(), 0, 0, 0, 0, 0, 0, 0]);
        // Malformed (a reserved register set): refused before the platform sees it.
        let mut bad = donate.encode();
        bad[7] = 1;
        let mut f = call_regs(HVC, bad);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::InvalidParameters.register());
        assert_eq!(p.handoff_requests.len(), 3);
        // A host-only call from a peer never reaches the platform either.
        p.caller = Caller::Peer(PeerId::MODEM);
        let mut f = call_regs(HVC, donate.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::Denied.register());
        assert_eq!(p.handoff_requests.len(), 3);
        assert!(el3.calls().is_empty());
    }

    #[test]
    fn peers_get_warden_calls_only() {
        use warden_abi::handoff::PeerId;
        let (h, el3, mut p) = setup();
        p.caller = Caller::Peer(PeerId::DSP);
        // PSCI from a peer is not forwarded and not mediated.
        let mut f = frame(HVC, u64::from(psci_abi::CPU_ON_64), [1, 0x4008_0000, 0]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], u64::MAX);
        let mut f = frame(SMC, u64::from(psci_abi::SYSTEM_OFF), [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], u64::MAX);
        assert!(el3.calls().is_empty());
        assert!(p.power_down_notices.is_empty());
        // PEER_DONE is the peer's; PEER_COMMAND is the host's.
        let mut f = call_regs(HVC, [u64::from(peer_abi::PEER_DONE), 0, 0, 0, 0, 0, 0, 0]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.peer_done, 1);
        let command = PeerCommand {
            peer: PeerId::DSP,
            op: peer_abi::Op::Checksum { base: 0x7d00_0000, size: 0x1000 },
        };
        let mut f = call_regs(HVC, command.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::Denied.register());
        assert!(p.peer_commands.is_empty());
        // The version query is open to peers.
        let mut f = frame(HVC, u64::from(warden_abi::hyp::ABI_VERSION), [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], warden_abi::hyp::packed_version());
    }

    #[test]
    fn peer_command_from_the_host() {
        use warden_abi::handoff::PeerId;
        let (h, _el3, mut p) = setup();
        let command = PeerCommand {
            peer: PeerId::MODEM,
            op: peer_abi::Op::Checksum { base: 0x7c00_0000, size: 0x2000 },
        };
        p.peer_reply = Ok(0x1234_5678_9abc_def0);
        let mut f = call_regs(HVC, command.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[..8], [0, 0x1234_5678_9abc_def0, 0, 0, 0, 0, 0, 0]);
        p.peer_reply = Err(AbiError::PeerFault);
        let mut f = call_regs(HVC, command.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[..2], [AbiError::PeerFault.register(), 0]);
        assert_eq!(p.peer_commands, vec![command, command]);
        // PEER_DONE from the host, the SMC32 twin of PEER_COMMAND, a malformed command.
        let mut f = call_regs(HVC, [u64::from(peer_abi::PEER_DONE), 0, 0, 0, 0, 0, 0, 0]);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::Denied.register());
        let mut twin = command.encode();
        twin[0] &= !u64::from(warden_abi::smccc::CONV_64);
        let mut f = call_regs(HVC, twin);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::NotSupported.register());
        let mut bad = command.encode();
        bad[2] = 99;
        let mut f = call_regs(HVC, bad);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::InvalidParameters.register());
        assert_eq!((p.peer_commands.len(), p.peer_done), (2, 0));
    }

    #[test]
    fn violation_queries_read_the_ring() {
        use warden_abi::handoff::{PeerId, Request, ViolationCount, ViolationInfo};
        let (h, _el3, mut p) = setup();
        p.owner = Owner::Peer(PeerId::MODEM);
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        let mut f = call_regs(HVC, Request::ViolationCount.encode());
        h.handle_lower_sync(&mut f, &mut p);
        let count = ViolationCount::decode(f.x[..8].try_into().unwrap()).unwrap();
        assert_eq!((count.incidents, count.oldest, count.accesses), (1, 0, 1));
        let mut f = call_regs(HVC, Request::ViolationInfo { seq: 0 }.encode());
        h.handle_lower_sync(&mut f, &mut p);
        let info = ViolationInfo::decode(f.x[..8].try_into().unwrap()).unwrap();
        assert_eq!((info.ipa, info.owner, info.count), (Some(0x7000_0008), p.owner, 1));
        let mut f = call_regs(HVC, Request::ViolationInfo { seq: 1 }.encode());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::NoData.register());
        assert!(p.handoff_requests.is_empty());
    }

    const CONTROL: u64 = 0x090c_0000;

    /// A host `STR`/`LDR` (64-bit, x<srt>) of the control page register at `offset`.
    fn control_access(offset: u64, write: bool, srt: u64, size_log2: u64) -> TrapFrame {
        let ipa = CONTROL + offset;
        let sf = if size_log2 == 3 { 1 << 15 } else { 0 };
        let wnr = if write { 1 << 6 } else { 0 };
        let esr = (0x24 << 26)
            | (1 << 25)
            | (1 << 24)
            | (size_log2 << 22)
            | (srt << 16)
            | sf
            | wnr
            | 0x07;
        let mut f = frame(esr, 0, [0; 3]);
        f.far = 0xffff_0000_1000_0000 + (ipa & 0xfff);
        f.hpfar = (ipa >> 12) << 4;
        f
    }

    fn control_write(h: &TrapHandler, p: &mut FakePlatform, offset: u64, value: u64) {
        let mut f = control_access(offset, true, 1, 3);
        f.x[1] = value;
        let elr = f.elr;
        h.handle_lower_sync(&mut f, p);
        assert_eq!(f.elr, elr + 4, "write to {offset:#x} emulated and skipped");
    }

    fn control_read(h: &TrapHandler, p: &mut FakePlatform, offset: u64) -> u64 {
        let mut f = control_access(offset, false, 2, 3);
        h.handle_lower_sync(&mut f, p);
        f.x[2]
    }

    #[test]
    fn control_page_makes_warden_calls() {
        use warden_abi::control;
        use warden_abi::handoff::{PeerId, Request, Target, Transfer};
        let (h, el3, mut p) = setup();
        p.board.control_page = Some(CONTROL);
        assert_eq!(control_read(&h, &mut p, control::REG_MAGIC), control_page::magic());
        // ABI_VERSION through CALL.
        control_write(&h, &mut p, control::REG_CALL, u64::from(warden_abi::hyp::ABI_VERSION));
        assert_eq!(control_read(&h, &mut p, control::ret(0)), warden_abi::hyp::packed_version());
        // DONATE: arguments from ARG1..4, reply in RET0..2, the platform sees the host.
        let donate = Request::Donate(Transfer {
            target: Target::Range { base: 0x7c00_0000, size: 0x1000 },
            peer: PeerId::MODEM,
            clear: false,
        })
        .encode();
        p.handoff_reply = Ok([0, 0x7c00_0000, 0x1000, 0, 0, 0, 0, 0]);
        for (n, value) in donate.iter().enumerate().skip(1) {
            control_write(&h, &mut p, control::arg(n), *value);
        }
        control_write(&h, &mut p, control::REG_CALL, donate[0]);
        assert_eq!(p.handoff_requests.len(), 1);
        assert_eq!(p.handoff_requests[0].0, Caller::Host);
        assert_eq!(control_read(&h, &mut p, control::ret(1)), 0x7c00_0000);
        // PSCI through the page is refused and never reaches EL3.
        control_write(&h, &mut p, control::REG_CALL, u64::from(psci_abi::SYSTEM_OFF));
        assert_eq!(control_read(&h, &mut p, control::ret(0)), u64::MAX);
        assert!(el3.calls().is_empty() && p.power_down_notices.is_empty());
        // None of this was a violation.
        assert_eq!(h.violation_count(), 0);
        assert!(p.el1_writes.is_empty());
    }

    #[test]
    fn control_page_refuses_what_is_not_a_register_access() {
        let (h, _el3, mut p) = setup();
        p.board.control_page = Some(CONTROL);
        // A byte store: not a register access, an abort.
        let mut f = control_access(0x08, true, 1, 0);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes.len(), 1);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        // No syndrome (ISV = 0, e.g. LDP): an abort too.
        let mut f = control_access(0x80, false, 2, 3);
        f.esr &= !(1 << 24);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes.len(), 2);
        assert_eq!(h.violation_count(), 0, "refused accesses are not ownership violations");
        // The same page from a peer is an ordinary violation (it is not the peer's page).
        p.caller = Caller::Peer(warden_abi::handoff::PeerId::DSP);
        let mut f = control_access(0x80, false, 2, 3);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 1);
        // Without a control page on the board the address is just unmapped.
        p.caller = Caller::Host;
        p.board.control_page = None;
        let mut f = control_access(0x80, false, 2, 3);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 2);
    }

    #[test]
    fn trap_stats_count_by_kind() {
        use warden_abi::stats::TrapStats;
        let (h, _el3, mut p) = setup();
        h.add_el2_ticks(40);
        let mut f = frame(DABT_WRITE, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        let mut f = frame(0x6230_c001, 0, [0; 3]);
        h.handle_lower_sync(&mut f, &mut p);
        h.add_el2_ticks(2);
        let mut f = call_regs(HVC, TrapStats::request());
        h.handle_lower_sync(&mut f, &mut p);
        let stats = TrapStats::decode(f.x[..8].try_into().unwrap()).unwrap();
        assert_eq!(
            stats,
            TrapStats {
                traps: 3,
                el2_ticks: 42,
                now: FakePlatform::COUNTER,
                calls: 1,
                data_aborts: 1,
                other: 1
            }
        );
        let mut bad = TrapStats::request();
        bad[3] = 1;
        let mut f = call_regs(SMC, bad);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::InvalidParameters.register());
    }

    const SMMU: u64 = 0x0905_0000;

    /// A host load/store of `1 << size_log2` bytes at `ipa` through x<srt>.
    fn mmio_access(ipa: u64, write: bool, srt: u64, size_log2: u64) -> TrapFrame {
        let mut f = control_access(0, write, srt, size_log2);
        f.far = 0xffff_0000_1000_0000 + (ipa & 0xfff);
        f.hpfar = (ipa >> 12) << 4;
        f
    }

    #[test]
    fn smmu_frames_are_emulated_in_32_and_64_bits() {
        let (h, _el3, mut p) = setup();
        p.vsmmu_frames = Some(crate::mm::MemRange::new(SMMU, SMMU + 0x20000));
        p.vsmmu_value = 0xdead_beef_0000_0fff;
        // 32-bit read of IDR0 into w2: the platform's value cut to 32 bits.
        let mut f = mmio_access(SMMU, false, 2, 2);
        let elr = f.elr;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!((f.x[2], f.elr), (0x0000_0fff, elr + 4));
        // 64-bit write to page 1's EVTQ_CONS... as the frame offset 0x100a8.
        let mut f = mmio_access(SMMU + 0x1_00a8, true, 1, 3);
        f.x[1] = 0x1234;
        h.handle_lower_sync(&mut f, &mut p);
        let mut f = mmio_access(SMMU + 0x20, false, 3, 3);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[3], 0xdead_beef_0000_0fff);
        assert_eq!(
            p.vsmmu_accesses,
            vec![(0, 4, None), (0x1_00a8, 8, Some(0x1234)), (0x20, 8, None)]
        );
        assert!(p.el1_writes.is_empty());
        assert_eq!(h.violation_count(), 0);
    }

    #[test]
    fn smmu_frames_refuse_other_accesses() {
        let (h, _el3, mut p) = setup();
        p.vsmmu_frames = Some(crate::mm::MemRange::new(SMMU, SMMU + 0x20000));
        // Byte and halfword accesses, and an access without syndrome: aborts.
        for size_log2 in [0, 1] {
            let mut f = mmio_access(SMMU + 0x44, true, 1, size_log2);
            h.handle_lower_sync(&mut f, &mut p);
            assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        }
        let mut f = mmio_access(SMMU + 0x98, false, 2, 3);
        f.esr &= !(1 << 24);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes.len(), 3);
        assert!(p.vsmmu_accesses.is_empty());
        assert_eq!(h.violation_count(), 0);
        // Past the frames, or from a peer: an ordinary violation.
        let mut f = mmio_access(SMMU + 0x20000, false, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        p.caller = Caller::Peer(warden_abi::handoff::PeerId::DSP);
        let mut f = mmio_access(SMMU, false, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 2);
        assert!(p.vsmmu_accesses.is_empty());
    }

    fn qemu_gic() -> crate::gic::GicLayout {
        use crate::gic::regs::GICR_TYPER_F;
        let redist = |n: u64| crate::gic::RedistFrame {
            rd_base: 0x080a_0000 + n * 0x2_0000,
            typer: GICR_TYPER_F::PROCESSOR_NUMBER.val(n).value,
        };
        crate::gic::GicLayout { its: vec![0x0808_0000], redists: vec![redist(0), redist(1)] }
    }

    #[test]
    fn gic_frames_are_emulated() {
        use crate::gic::GicFrame;
        let (h, _el3, mut p) = setup();
        p.gic_layout = Some(qemu_gic());
        p.gic_value = 0x1234_5678_9abc_def0;
        // GITS_CWRITER (64-bit store), GITS_CREADR (32-bit load), GICR_PROPBASER of CPU 1.
        let mut f = mmio_access(0x0808_0088, true, 1, 3);
        f.x[1] = 0x40;
        let elr = f.elr;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.elr, elr + 4);
        let mut f = mmio_access(0x0808_0090, false, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[2], 0x9abc_def0);
        let mut f = mmio_access(0x080c_0070, true, 3, 3);
        f.x[3] = 0x4000_0000 | 15;
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(
            p.gic_accesses,
            vec![
                (GicFrame::ItsControl(0), 0x88, 8, Some(0x40)),
                (GicFrame::ItsControl(0), 0x90, 4, None),
                (GicFrame::RdBase(1), 0x70, 8, Some(0x4000_000f)),
            ]
        );
        assert!(p.el1_writes.is_empty());
        assert_eq!(h.violation_count(), 0);
    }

    #[test]
    fn gic_frames_refuse_other_accesses() {
        let (h, _el3, mut p) = setup();
        p.gic_layout = Some(qemu_gic());
        // A byte store and an access without syndrome: aborts, not violations.
        let mut f = mmio_access(0x080a_0000, true, 1, 0);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.elr, FakePlatform::HOST_VBAR + 0x200);
        let mut f = mmio_access(0x0808_0000, false, 2, 2);
        f.esr &= !(1 << 24);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(p.el1_writes.len(), 2);
        assert!(p.gic_accesses.is_empty());
        assert_eq!(h.violation_count(), 0);
        // SGI_base and GITS_TRANSLATER's frame are not emulated: an unmapped access there is
        // an ordinary violation; so is a peer's access to an emulated frame.
        let mut f = mmio_access(0x080b_0100, false, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        let mut f = mmio_access(0x0809_0040, true, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        p.caller = Caller::Peer(warden_abi::handoff::PeerId::DSP);
        let mut f = mmio_access(0x0808_0000, false, 2, 2);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(h.violation_count(), 3);
        assert!(p.gic_accesses.is_empty());
    }

    #[test]
    fn smmu_stats_come_from_the_platform() {
        use warden_abi::stats::SmmuStats;
        let (h, _el3, mut p) = setup();
        let mut f = call_regs(HVC, SmmuStats::request());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::NotSupported.register(), "no virtual SMMU");
        p.smmu_stats = Some(SmmuStats { commands: 3, forced_flushes: 1, ..SmmuStats::default() });
        let mut f = call_regs(HVC, SmmuStats::request());
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(SmmuStats::decode(f.x[..8].try_into().unwrap()), Ok(p.smmu_stats.unwrap()));
        let mut bad = SmmuStats::request();
        bad[2] = 1;
        let mut f = call_regs(HVC, bad);
        h.handle_lower_sync(&mut f, &mut p);
        assert_eq!(f.x[0], AbiError::InvalidParameters.register());
    }

    #[test]
    fn rate_limit() {
        let logged: vec::Vec<u64> = (1..=300).filter(|&n| should_log(n)).collect();
        assert_eq!(logged[..16], (1..=16).collect::<vec::Vec<_>>()[..]);
        assert_eq!(logged[16..], [32, 64, 128, 256]);
    }
}
