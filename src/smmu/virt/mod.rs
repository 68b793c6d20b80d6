//! The virtual SMMUv3 the host sees (G2), with ASID retirement (G3).
//!
//! The host's SMMU register frames are absent from its stage 2; every access traps and lands
//! in [`VirtSmmu::mmio_read`] / [`VirtSmmu::mmio_write`]. Nothing here touches hardware:
//! host memory is reached through [`GuestMemory`] (which refuses anything the host does not
//! own), and the real SMMU through [`RealSmmu`]. The caller holds one lock around the
//! `VirtSmmu`, so every trap is atomic with respect to the other CPUs.
//!
//! - [`regs`]: the register file (IDRs, CR0/CR0ACK, GBPA, IRQ_CTRL, GERROR, bases, PROD/CONS).
//! - [`cmdq`]: decode and validate host commands; the bounded consumer.
//! - [`ste`]: host STE lookup and validation; the real STE (nested or stage-2-only).
//! - [`asid`]: G3 retirement tracking.
//! - [`evtq`]: records written into the host's event queue.
//!
//! Work per trap is bounded: at most [`VirtConfig::cmd_budget`] commands per CMDQ_PROD write;
//! the rest is consumed on later traps, and a host waiting for a CMD_SYNC polls CMDQ_CONS,
//! each read of which traps and consumes another batch first.

pub mod asid;
pub mod cmdq;
pub mod evtq;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod real;
pub mod regs;
pub mod ste;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::mm::MemRange;
use crate::smmu::regs::CMDQ_CONS;

use asid::{AsidBook, RetireStats};
use cmdq::{HostCommand, Outcome, RealCommand, Stop, SyncSignal};
use evtq::{EventRecord, EventWrite};
use regs::{Advertised, RegisterFile};
use ste::{RealSte, SteRefusal};

/// A host memory access warden refused (the range is not, or not wholly, host-owned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Host memory by IPA (the host's stage 2 is an identity map), checked against ownership.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes at `ipa`; refused unless the whole range is host-owned.
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused>;
    /// Writes `data` at `ipa`; refused unless the whole range is host-owned.
    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), Refused>;
    /// Whether every byte of `range` is owned by the host right now.
    fn is_host_owned(&self, range: MemRange) -> bool;
}

/// The real SMMU failed a request (the driver logs the details).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSmmuError;

/// The few real-SMMU operations the emulation needs.
pub trait RealSmmu {
    /// Makes `sid`'s real STE this one (written safely, then CMD_CFGI_STE for it); complete
    /// at the next successful [`RealSmmu::sync`].
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), RealSmmuError>;
    /// Queues one command.
    fn submit(&mut self, cmd: RealCommand) -> Result<(), RealSmmuError>;
    /// CMD_SYNC, waiting (bounded) for it to complete.
    fn sync(&mut self) -> Result<(), RealSmmuError>;
}

/// How the virtual SMMU is set up.
#[derive(Clone, Debug)]
pub struct VirtConfig {
    pub advertised: Advertised,
    /// The VMID of the host's stage 2 on the real SMMU (its TLB entries are tagged with it).
    pub host_vmid: u16,
    /// The stream IDs of the host's devices (from the DT): the only real STEs the host steers.
    pub host_sids: Vec<u32>,
    /// Commands consumed per trap at most.
    pub cmd_budget: u32,
    /// G3 on (the default); off only in the test that shows what it prevents.
    pub g3_enabled: bool,
}

impl VirtConfig {
    pub const DEFAULT_CMD_BUDGET: u32 = 64;
}

/// The test-only G3 switch (cargo feature `test-switches`, built by `cargo xtask build` into
/// the image the test guest runs on, never into `warden.bin`): a 32-bit register in page 0's
/// IMPLEMENTATION DEFINED space. Reading it gives [`test_switch::KEY`] | G3-on; writing
/// `KEY | 1` turns G3 on, `KEY | 0` off, anything else is ignored. Without the feature the
/// offset is RAZ/WI like every unknown register, so a guest sees 0 and knows there is no switch.
#[cfg(any(test, feature = "test-switches"))]
pub mod test_switch {
    /// Offset in page 0 (0xE00..0xEFF is IMPLEMENTATION DEFINED in SMMUv3).
    pub const G3_OFFSET: u32 = 0xe00;
    /// Upper half of every read and of every write that is obeyed ("G3").
    pub const KEY: u32 = 0x4733_0000;
    /// Bit 0: G3 on.
    pub const ON: u32 = 1;
}

/// Interrupts the caller must raise towards the host after a trap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub evtq_irq: bool,
    pub gerror_irq: bool,
    /// CMD_SYNC with CS = SIG_IRQ completed (the wired cmdq-sync interrupt).
    pub cmd_sync_irq: bool,
}

impl Notify {
    fn merge(&mut self, other: Notify) {
        self.evtq_irq |= other.evtq_irq;
        self.gerror_irq |= other.gerror_irq;
        self.cmd_sync_irq |= other.cmd_sync_irq;
    }
}

/// Counters for logs and the hypercall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtStats {
    pub commands: u64,
    pub illegal_commands: u64,
    pub fetch_aborts: u64,
    /// Real CMD_SYNCs issued for host CMD_SYNCs (skipped when nothing was issued since).
    pub real_syncs: u64,
    pub skipped_syncs: u64,
    /// Commands left for a later trap because the real SMMU did not complete.
    pub retries: u64,
    pub ste_refusals: u64,
    pub events_written: u64,
    /// Real events not forwarded because the host's event queue was disabled (EVTQEN = 0 or
    /// SMMUEN = 0: the architecture discards them), full (EVTQ_PROD.OVFLG toggled), or not
    /// in host memory (GERROR.EVTQ_ABT_ERR).
    pub events_lost_disabled: u64,
    pub events_lost_overflow: u64,
    pub events_lost_abort: u64,
    pub bad_accesses: u64,
    pub bypass_refusals: u64,
    pub asids: RetireStats,
}

/// The virtual SMMU.
pub struct VirtSmmu {
    regs: RegisterFile,
    config: VirtConfig,
    /// The real STE installed for each host stream.
    installed: BTreeMap<u32, RealSte>,
    asids: AsidBook,
    /// Real commands were issued since the last completed real sync.
    real_dirty: bool,
    stats: VirtStats,
}

impl VirtSmmu {
    pub fn new(config: VirtConfig) -> Self {
        let mut asids = AsidBook::new();
        asids.tracker_mut().set_enabled(config.g3_enabled);
        let installed = config.host_sids.iter().map(|&s| (s, RealSte::Abort)).collect();
        Self {
            regs: RegisterFile::new(config.advertised),
            config,
            installed,
            asids,
            real_dirty: false,
            stats: VirtStats::default(),
        }
    }

    /// Turns G3 (forced flushes of reused retiring ASIDs) on or off; off only in the test that
    /// shows what G3 prevents (see [`test_switch`]).
    pub fn set_g3_enabled(&mut self, enabled: bool) {
        self.config.g3_enabled = enabled;
        self.asids.tracker_mut().set_enabled(enabled);
    }

    pub fn g3_enabled(&self) -> bool {
        self.asids.tracker().enabled()
    }

    pub fn registers(&self) -> &RegisterFile {
        &self.regs
    }

    pub fn asids(&self) -> &AsidBook {
        &self.asids
    }

    /// The real STE warden installed for a host stream.
    pub fn installed(&self, sid: u32) -> Option<RealSte> {
        self.installed.get(&sid).copied()
    }

    pub fn stats(&self) -> VirtStats {
        VirtStats {
            bad_accesses: self.regs.bad_accesses(),
            bypass_refusals: self.regs.bypass_refusals(),
            asids: self.asids.tracker().stats(),
            ..self.stats
        }
    }

    /// A trapped read. Reading CMDQ_CONS first consumes another batch of commands, so a host
    /// polling for completion makes progress one bounded batch per poll.
    pub fn mmio_read<M, R>(
        &mut self,
        offset: u32,
        size: u8,
        mem: &mut M,
        real: &mut R,
    ) -> (u64, Notify)
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        #[cfg(any(test, feature = "test-switches"))]
        if offset == test_switch::G3_OFFSET && size == 4 {
            let value = test_switch::KEY | u32::from(self.g3_enabled());
            return (u64::from(value), Notify::default());
        }
        let mut notify = Notify::default();
        if offset == CMDQ_CONS && size == 4 {
            notify = self.process_commands(mem, real);
        }
        (self.regs.read(offset, size), notify)
    }

    /// A trapped write.
    pub fn mmio_write<M, R>(
        &mut self,
        offset: u32,
        size: u8,
        value: u64,
        mem: &mut M,
        real: &mut R,
    ) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        #[cfg(any(test, feature = "test-switches"))]
        if offset == test_switch::G3_OFFSET && size == 4 {
            if value & !u64::from(test_switch::ON) == u64::from(test_switch::KEY) {
                let enabled = value & u64::from(test_switch::ON) != 0;
                self.set_g3_enabled(enabled);
                log::warn!(
                    "vSMMU: G3 (ASID retirement flushes) switched {} by the host (test switch)",
                    if enabled { "on" } else { "off" }
                );
            }
            return Notify::default();
        }
        let fx = self.regs.write(offset, size, value);
        if fx.bypass_refused {
            log::warn!("vSMMU: host asked for global bypass (GBPA.ABORT = 0); kept abort");
        }
        let mut notify = Notify::default();
        if let Some(enabled) = fx.smmu_enable {
            notify.merge(self.resync_all(enabled, mem, real));
        }
        if fx.cmdq_kick {
            notify.merge(self.process_commands(mem, real));
        }
        notify
    }

    /// Consumes up to the budget of host commands.
    pub fn process_commands<M, R>(&mut self, mem: &mut M, real: &mut R) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        let budget = self.config.cmd_budget;
        let mut notify = Notify::default();
        let mut regs =
            core::mem::replace(&mut self.regs, RegisterFile::new(self.config.advertised));
        let consumed = cmdq::consume(&mut regs, mem, budget, |regs, mem, cmd| {
            let (outcome, n) = self.execute(regs, mem, real, cmd);
            notify.merge(n);
            outcome
        });
        self.regs = regs;
        self.stats.commands += u64::from(consumed.commands);
        notify.gerror_irq |= consumed.gerror_irq;
        match consumed.stop {
            Stop::Error { code, illegal } => {
                if code == crate::smmu::cmd::CERROR_ILL {
                    self.stats.illegal_commands += 1;
                } else {
                    self.stats.fetch_aborts += 1;
                }
                match illegal {
                    Some(why) => log::warn!("vSMMU: host command refused (CERROR_ILL): {why}"),
                    None => log::warn!(
                        "vSMMU: host command queue stopped: {}",
                        crate::smmu::cmd::CommandErrorCode(code)
                    ),
                }
            }
            Stop::Retry => self.stats.retries += 1,
            Stop::Empty | Stop::Budget | Stop::Disabled | Stop::ErrorActive => {}
        }
        notify
    }

    /// Copies a real event record for a host stream into the host's event queue (records for
    /// other streams are warden's own and are not forwarded).
    pub fn forward_event<M: GuestMemory + ?Sized>(
        &mut self,
        record: &EventRecord,
        mem: &mut M,
    ) -> Notify {
        let sid = (record[0] >> 32) as u32;
        if !self.installed.contains_key(&sid) {
            return Notify::default();
        }
        record_event(&mut self.regs, &mut self.stats, record, mem)
    }

    fn execute<M, R>(
        &mut self,
        regs: &mut RegisterFile,
        mem: &mut M,
        real: &mut R,
        cmd: HostCommand,
    ) -> (Outcome, Notify)
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        let vmid = self.config.host_vmid;
        let mut notify = Notify::default();
        let result = match cmd {
            // Prefetching is a hint; the real SMMU fetches on demand.
            HostCommand::Prefetch { .. } => Ok(()),
            HostCommand::CfgiSte { sid, .. } => self.reshadow(regs, mem, real, sid, &mut notify),
            HostCommand::CfgiSteRange { sid, range } => {
                let span = if range >= 31 { u64::MAX } else { (2u64 << range) - 1 };
                let first = u64::from(sid) & !span;
                let last = first.saturating_add(span);
                let sids: Vec<u32> = self
                    .installed
                    .keys()
                    .copied()
                    .filter(|&s| (first..=last).contains(&u64::from(s)))
                    .collect();
                sids.into_iter().try_for_each(|s| self.reshadow(regs, mem, real, s, &mut notify))
            }
            HostCommand::CfgiCd { sid, leaf, .. } => self
                .refresh_cd(regs, mem, real, sid)
                .and_then(|_| self.issue(real, sid, RealCommand::CfgiCd { sid, ssid: 0, leaf })),
            HostCommand::CfgiCdAll { sid } => self
                .refresh_cd(regs, mem, real, sid)
                .and_then(|_| self.issue(real, sid, RealCommand::CfgiCdAll { sid })),
            HostCommand::TlbiNhAll => self.tlbi(real, RealCommand::TlbiNhAll { vmid }, None),
            HostCommand::TlbiNhAsid { asid } => {
                self.tlbi(real, RealCommand::TlbiNhAsid { vmid, asid }, Some(asid))
            }
            HostCommand::TlbiNhVa { asid, addr, leaf } => {
                self.submit(real, RealCommand::TlbiNhVa { vmid, asid, addr, leaf })
            }
            HostCommand::TlbiNhVaa { addr, leaf } => {
                self.submit(real, RealCommand::TlbiNhVaa { vmid, addr, leaf })
            }
            // From the host's view "all non-secure, non-hyp entries" are its own VMID's.
            HostCommand::TlbiNsnhAll => self.tlbi(real, RealCommand::TlbiS12Vmall { vmid }, None),
            HostCommand::Sync(signal) => {
                let r = self.real_sync(real);
                if r.is_ok() && signal == SyncSignal::Irq {
                    notify.cmd_sync_irq = true;
                }
                r
            }
        };
        match result {
            Ok(()) => (Outcome::Done, notify),
            Err(RealSmmuError) => (Outcome::Retry, notify),
        }
    }

    fn submit<R: RealSmmu + ?Sized>(
        &mut self,
        real: &mut R,
        cmd: RealCommand,
    ) -> Result<(), RealSmmuError> {
        self.real_dirty = true;
        real.submit(cmd)
    }

    /// Configuration invalidations only matter for the host's own streams.
    fn issue<R: RealSmmu + ?Sized>(
        &mut self,
        real: &mut R,
        sid: u32,
        cmd: RealCommand,
    ) -> Result<(), RealSmmuError> {
        if self.installed.contains_key(&sid) { self.submit(real, cmd) } else { Ok(()) }
    }

    fn tlbi<R: RealSmmu + ?Sized>(
        &mut self,
        real: &mut R,
        cmd: RealCommand,
        asid: Option<u16>,
    ) -> Result<(), RealSmmuError> {
        self.submit(real, cmd)?;
        let tracker = self.asids.tracker_mut();
        match asid {
            Some(a) => tracker.invalidated(a),
            None => tracker.invalidated_all(),
        }
        Ok(())
    }

    fn real_sync<R: RealSmmu + ?Sized>(&mut self, real: &mut R) -> Result<(), RealSmmuError> {
        if !self.real_dirty {
            self.stats.skipped_syncs += 1;
            return Ok(());
        }
        real.sync()?;
        self.stats.real_syncs += 1;
        self.real_dirty = false;
        self.asids.tracker_mut().sync_completed();
        Ok(())
    }

    /// Re-derives `sid`'s real STE from the host's STE (only for the host's streams).
    fn reshadow<M, R>(
        &mut self,
        regs: &mut RegisterFile,
        mem: &mut M,
        real: &mut R,
        sid: u32,
        notify: &mut Notify,
    ) -> Result<(), RealSmmuError>
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        if !self.installed.contains_key(&sid) {
            return Ok(());
        }
        let adv = *regs.advertised();
        let mut event = None;
        let real_ste = if !regs.smmu_enabled() {
            // SMMUEN = 0: GBPA applies, and GBPA is always abort.
            RealSte::Abort
        } else {
            match ste::read_host_ste(mem, regs.strtab_base(), regs.strtab_cfg(), sid, &adv) {
                Err(fault) => {
                    // A stream ID outside the host's table is only an error once a device
                    // uses it: the real STE goes invalid, and the real SMMU reports that
                    // transaction (forwarded). Linux enables the SMMU before it fills in the
                    // level-2 tables of its devices, so reporting here would be noise.
                    if fault != ste::SteFault::BadStreamId {
                        event = Some(fault.event(sid));
                    }
                    RealSte::Invalid
                }
                Ok(words) => {
                    let host = ste::decode_host_ste(&words, &adv);
                    if let Err(why) = host {
                        self.refused(sid, why);
                        event = Some(evtq::bad_ste(sid));
                    }
                    RealSte::for_host(host)
                }
            }
        };
        let ctx = real_ste.stage1().and_then(|s1| ste::read_host_cd(mem, s1.ctx_ptr, &adv));
        self.set_context(real, sid, ctx)?;
        self.real_dirty = true;
        real.install_ste(sid, real_ste)?;
        self.installed.insert(sid, real_ste);
        if let Some(record) = event {
            notify.merge(record_event(regs, &mut self.stats, &record, mem));
        }
        Ok(())
    }

    /// Re-reads `sid`'s CD (after the host's CFGI_CD*) for ASID tracking.
    fn refresh_cd<M, R>(
        &mut self,
        regs: &RegisterFile,
        mem: &mut M,
        real: &mut R,
        sid: u32,
    ) -> Result<(), RealSmmuError>
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        let Some(s1) = self.installed.get(&sid).and_then(RealSte::stage1) else {
            return Ok(());
        };
        let ctx = ste::read_host_cd(mem, s1.ctx_ptr, regs.advertised());
        self.set_context(real, sid, ctx)
    }

    /// G3: before a stream's new context can be used, a retiring ASID it reuses is
    /// invalidated and synced by warden itself.
    fn set_context<R: RealSmmu + ?Sized>(
        &mut self,
        real: &mut R,
        sid: u32,
        ctx: Option<ste::CdContext>,
    ) -> Result<(), RealSmmuError> {
        let vmid = self.config.host_vmid;
        let mut dirty = self.real_dirty;
        let update = self.asids.update(sid, ctx, |asid| {
            real.submit(RealCommand::TlbiNhAsid { vmid, asid })?;
            dirty = true;
            real.sync()?;
            dirty = false;
            Ok(())
        });
        self.real_dirty = dirty;
        let update = update?;
        if let Some(asid) = update.flushed {
            self.stats.real_syncs += 1;
            log::info!(
                "vSMMU G3: stream {sid:#x} reuses retiring ASID {asid} before its TLBI + sync; \
                 warden invalidated it first ({} so far)",
                self.asids.tracker().stats().forced_flushes
            );
        }
        Ok(())
    }

    fn refused(&mut self, sid: u32, why: SteRefusal) {
        self.stats.ste_refusals += 1;
        log::warn!("vSMMU: STE for stream {sid:#x} refused: {why}; C_BAD_STE");
    }

    /// SMMUEN changed: every host stream follows (host STEs when enabled, abort when not).
    fn resync_all<M, R>(&mut self, enabled: bool, mem: &mut M, real: &mut R) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: RealSmmu + ?Sized,
    {
        let mut notify = Notify::default();
        let sids: Vec<u32> = self.installed.keys().copied().collect();
        let mut regs =
            core::mem::replace(&mut self.regs, RegisterFile::new(self.config.advertised));
        for sid in sids {
            if self.reshadow(&mut regs, mem, real, sid, &mut notify).is_err() {
                log::error!("vSMMU: real SMMU failed while re-deriving stream {sid:#x}");
            }
        }
        self.regs = regs;
        // The new STEs are in force once CR0ACK shows the change: complete them now.
        if self.real_sync(real).is_err() {
            log::error!("vSMMU: real SMMU sync failed after SMMUEN = {enabled}");
        }
        notify
    }
}

fn record_event<M: GuestMemory + ?Sized>(
    regs: &mut RegisterFile,
    stats: &mut VirtStats,
    record: &EventRecord,
    mem: &mut M,
) -> Notify {
    match evtq::write_event(regs, mem, record) {
        EventWrite::Written { irq } => {
            stats.events_written += 1;
            Notify { evtq_irq: irq, ..Notify::default() }
        }
        EventWrite::Aborted { gerror_irq } => {
            stats.events_lost_abort += 1;
            Notify { gerror_irq, ..Notify::default() }
        }
        EventWrite::Overflow => {
            stats.events_lost_overflow += 1;
            Notify::default()
        }
        EventWrite::Disabled => {
            stats.events_lost_disabled += 1;
            Notify::default()
        }
    }
}

/// Makes `vmid` live again on the real SMMU: if it is still retiring, its TLB entries are
/// invalidated (TLBI_S12_VMALL) and synced first. Returns whether that flush was needed.
pub fn reuse_vmid<R: RealSmmu + ?Sized>(
    vmids: &mut asid::RetireTracker,
    vmid: u16,
    real: &mut R,
) -> Result<bool, RealSmmuError> {
    let flush = vmids.needs_flush(vmid);
    if flush {
        real.submit(RealCommand::TlbiS12Vmall { vmid })?;
        real.sync()?;
        vmids.invalidated(vmid);
        vmids.sync_completed();
        vmids.note_forced_flush();
        log::info!("vSMMU G3: VMID {vmid} reused while retiring; warden invalidated it first");
    }
    vmids.acquire(vmid);
    Ok(flush)
}
