//! The virtual SMMUv3 the host sees (G2), with ASID retirement (G3).
//!
//! The host's SMMU register frames are absent from its stage 2; every access traps and lands
//! in [`VirtSmmu::mmio_read`] / [`VirtSmmu::mmio_write`]. Nothing here touches hardware:
//! host memory is reached through [`GuestMemory`] (which refuses anything the host does not
//! own), and the real SMMU through [`NestedBackend`]. The caller holds one lock around the
//! `VirtSmmu`, so every trap is atomic with respect to the other CPUs.
//!
//! - [`regs`]: the register file (IDRs, CR0/CR0ACK, GBPA, IRQ_CTRL, GERROR, bases, PROD/CONS).
//! - [`cmdq`]: decode and validate host commands; the bounded consumer.
//! - [`ste`]: host STE lookup and validation; the real STE (nested or stage-2-only).
//! - [`cd`]: host CD validation; the shadow CDs the real SMMU reads instead.
//! - [`asid`]: real ASIDs warden allocates per host context, and their retirement (G3).
//! - [`evtq`]: records written into the host's event queue.
//!
//! **Shadow CDs.** The real SMMU never reads a host CD. Each host stream has two 64-byte CD
//! slots in an arena of warden memory ([`CdArena`]) that the real SMMU reaches through its
//! own view of the host stage 2 (see `docs/smmu.md`). On CFGI_STE (when the STE's stage-1
//! context is new) and CFGI_CD, warden copies the host's CD once, validates it, writes the
//! shadow (with a real ASID warden allocated) into the stream's idle slot, switches the real
//! STE's S1ContextPtr to it with one 64-bit store, and issues CFGI_STE + CFGI_CD_ALL; the old
//! context is released only once a CMD_SYNC has completed that switch, so its real ASID
//! starts retiring only when no DMA can use it any more, and only TLBIs issued after that
//! count towards freeing it. A slot is rewritten only after the switch away from it was
//! synced.
//!
//! **While the host's SMMU is disabled** (SMMUEN = 0) GBPA decides, as on a real SMMU: with
//! ABORT = 1 every host stream's real STE aborts; with ABORT = 0 (bypass, the reset value: see
//! [`regs`]) it is warden's stage 2 alone, exactly the real STE a host STE asking for bypass
//! gets once enabled: DMA reaches what the host's CPU reaches, never a carveout, warden's
//! region or a donated page. A bootloader that drives no SMMU can then do DMA, and G1 holds.
//!
//! Work per trap is bounded: at most [`VirtConfig::cmd_budget`] commands per CMDQ_PROD write;
//! the rest is consumed on later traps, and a host waiting for a CMD_SYNC polls CMDQ_CONS,
//! each read of which traps and consumes another batch first. A host that waits for its
//! CMD_SYNCs on memory (MSI-signalled completion: Linux with IDR0.MSI) never reads CMDQ_CONS,
//! so once it has used one the bound is the queue (2^CMDQS commands per trap at most).
//!
//! **MSIs** (IDR0.MSI): a CMD_SYNC with CS = SIG_IRQ and an MSIAddress writes its 32-bit
//! MSIData there when it completes, and the event queue's and GERROR's interrupts go to their
//! `*_IRQ_CFG0` address when the host set one, each only into host memory warden may touch
//! ([`GuestMemory::write`]: host-owned, not a carveout or donated, not warden's, not MMIO). A
//! write there is refused and reported as the architecture reports an aborted MSI:
//! GERROR.MSI_CMDQ_ABT_ERR, MSI_EVTQ_ABT_ERR or MSI_GERROR_ABT_ERR.

pub mod asid;
pub mod cd;
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
use crate::smmu::regs::{
    CMDQ_CONS, GERROR_MSI_CMDQ_ABT_ERR, GERROR_MSI_EVTQ_ABT_ERR, GERROR_MSI_GERROR_ABT_ERR,
};

use crate::smmu::backend::{ContextPlan, Installed, NestedStreams};
use asid::{AsidStats, RealAsids};
use cd::CD_BYTES;
use cmdq::{HostCommand, Outcome, RealCommand, Stop, SyncSignal};
use evtq::{EventRecord, EventWrite};
use regs::{Advertised, RegisterFile};
use ste::{RealSte, Stage1Context, SteRefusal};

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
    /// The two little-endian 64-bit words at `ipa` (a command queue slot), copied once;
    /// refused unless all 16 bytes are host-owned. An implementation may read them as two
    /// aligned 64-bit loads when `ipa` is 8-byte aligned (issue 16: a slot always is).
    fn read_words(&self, ipa: u64) -> Result<[u64; 2], Refused> {
        let mut bytes = [0u8; 16];
        self.read(ipa, &mut bytes)?;
        let (lo, hi) = bytes.split_at(8);
        Ok([
            u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
        ])
    }
}

pub use crate::smmu::backend::{BackendError, NestedBackend, StreamCd};

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
    /// Where the shadow CDs go: two slots per host stream, in `host_sids` order.
    pub arena: CdArena,
}

impl VirtConfig {
    pub const DEFAULT_CMD_BUDGET: u32 = 64;
}

/// The shadow CD slots as the real SMMU addresses them: IPAs of warden's SMMU view of the host
/// stage 2, which maps them read-only onto warden memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdArena {
    /// IPA of slot 0; slot `i` is at `ipa + 64 * i`.
    pub ipa: u64,
    pub slots: u32,
    /// A page the SMMU view never maps: the CD pointer of a stream whose host CD warden cannot
    /// read, so that the real SMMU reports the CD fetch as a stage-2 fault, as it would for
    /// the host's own CD (warden puts the host's CD address into the forwarded event).
    pub unmapped_ipa: u64,
}

impl CdArena {
    /// Slots for `streams` host streams.
    pub const fn slots_for(streams: usize) -> u32 {
        2 * streams as u32
    }

    pub(crate) fn slot_ipa(&self, stream: u32, slot: u8) -> Option<u64> {
        let index = 2 * stream + u32::from(slot & 1);
        (index < self.slots).then(|| self.ipa + u64::from(index) * CD_BYTES)
    }
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

/// What a register write left for the back end ([`VirtSmmu::finish_write`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingWrite {
    /// SMMUEN changed to this: every host stream is re-derived.
    pub smmu_enable: Option<bool>,
    /// GBPA.ABORT changed to this while SMMUEN = 0: every host stream is re-derived.
    pub gbpa_abort: Option<bool>,
    /// The command queue may have work (CMDQ_PROD written, CMDQEN set, an error cleared).
    pub cmdq_kick: bool,
}

impl PendingWrite {
    pub fn is_empty(&self) -> bool {
        self.smmu_enable.is_none() && self.gbpa_abort.is_none() && !self.cmdq_kick
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
    /// GBPA updates with ABORT = 0 (served with warden's stage 2 alone while SMMUEN = 0).
    pub bypass_requests: u64,
    /// Host CDs refused (C_BAD_CD), and CDs warden could not read from host memory.
    pub cd_refusals: u64,
    pub cd_unreadable: u64,
    /// MSI writes made (CMD_SYNC completions, event queue and GERROR interrupts), and those
    /// refused because the address was not host memory warden may touch.
    pub msi_writes: u64,
    pub msi_refusals: u64,
    pub asids: AsidStats,
}

/// The virtual SMMU.
pub struct VirtSmmu {
    regs: RegisterFile,
    config: VirtConfig,
    /// The host's streams on the back end: real STEs, shadow CDs, real ASIDs (G3).
    engine: NestedStreams,
    /// Per host stream, the stage-1 context of the host STE warden last read (for CFGI_CD).
    host_s1: BTreeMap<u32, Stage1Context>,
    stats: VirtStats,
    /// The host has used an MSI-signalled CMD_SYNC: it waits on memory, not on CMDQ_CONS, so a
    /// CMDQ_PROD write consumes the whole queue (see the module documentation).
    host_waits_on_memory: bool,
}

impl VirtSmmu {
    pub fn new(config: VirtConfig) -> Self {
        let regs = RegisterFile::new(config.advertised);
        let engine = NestedStreams::new(
            "vSMMU",
            config.host_vmid,
            &config.host_sids,
            disabled_ste(&regs),
            config.arena,
            config.advertised.asid16,
            config.g3_enabled,
        );
        Self {
            regs,
            config,
            engine,
            host_s1: BTreeMap::new(),
            stats: VirtStats::default(),
            host_waits_on_memory: false,
        }
    }

    /// Turns G3 (forced flushes of reused retiring ASIDs) on or off; off only in the test that
    /// shows what G3 prevents (see [`test_switch`]).
    pub fn set_g3_enabled(&mut self, enabled: bool) {
        self.config.g3_enabled = enabled;
        self.engine.set_g3_enabled(enabled);
    }

    pub fn g3_enabled(&self) -> bool {
        self.engine.g3_enabled()
    }

    pub fn registers(&self) -> &RegisterFile {
        &self.regs
    }

    /// The real STE every host stream must have when the host first runs: what the reset
    /// state (SMMUEN = 0, GBPA bypass) gives it. Warden installs it at boot.
    pub fn reset_ste(&self) -> RealSte {
        disabled_ste(&RegisterFile::new(self.config.advertised))
    }

    pub fn asids(&self) -> &RealAsids {
        self.engine.asids()
    }

    /// The real STE warden installed for a host stream.
    pub fn installed(&self, sid: u32) -> Option<RealSte> {
        self.engine.installed(sid)
    }

    /// What a host stream's real STE points its stage 1 at.
    pub fn stream_cd(&self, sid: u32) -> Option<StreamCd> {
        self.engine.stream_cd(sid)
    }

    /// The real ASID a host stream's shadow CD carries.
    pub fn real_asid(&self, sid: u32) -> Option<u16> {
        self.engine.real_asid(sid)
    }

    pub fn stats(&self) -> VirtStats {
        let engine = self.engine.stats();
        VirtStats {
            bad_accesses: self.regs.bad_accesses(),
            bypass_requests: self.regs.bypass_requests(),
            asids: self.engine.asid_stats(),
            real_syncs: engine.real_syncs,
            skipped_syncs: engine.skipped_syncs,
            cd_refusals: self.stats.cd_refusals + engine.asid_exhausted,
            ..self.stats
        }
    }

    /// Whether a read at `offset` needs host memory and the real SMMU ([`Self::mmio_read`]):
    /// only a `CMDQ_CONS` read while commands are left to consume. Every other read is
    /// answered by [`Self::read_register`] alone, so the caller need not lock the tracker, the
    /// real SMMU or the frame pool for it.
    pub fn read_needs_backend(&self, offset: u32, size: u8) -> bool {
        offset == CMDQ_CONS && size == 4 && self.regs.cmdq_pending()
    }

    /// A trapped read that needs no back end (see [`Self::read_needs_backend`]).
    pub fn read_register(&mut self, offset: u32, size: u8) -> u64 {
        #[cfg(any(test, feature = "test-switches"))]
        if offset == test_switch::G3_OFFSET && size == 4 {
            return u64::from(test_switch::KEY | u32::from(self.g3_enabled()));
        }
        self.regs.read(offset, size)
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
        R: NestedBackend + ?Sized,
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
        let notify = self.signal(notify, mem);
        (self.regs.read(offset, size), notify)
    }

    /// A trapped write: [`Self::write_register`], then [`Self::finish_write`] with what it
    /// left to do.
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
        R: NestedBackend + ?Sized,
    {
        let pending = self.write_register(offset, size, value);
        self.finish_write(pending, mem, real)
    }

    /// The register-file half of a trapped write; what is left needs host memory and the real
    /// SMMU ([`Self::finish_write`]), and most writes leave nothing, so the caller locks those
    /// only when [`PendingWrite::is_empty`] is false.
    pub fn write_register(&mut self, offset: u32, size: u8, value: u64) -> PendingWrite {
        // The commonest write by far (every batch of commands), straight to the register.
        if offset == crate::smmu::regs::CMDQ_PROD && size == 4 {
            let fx = self.regs.write_cmdq_prod(value as u32);
            return PendingWrite { cmdq_kick: fx.cmdq_kick, ..PendingWrite::default() };
        }
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
            return PendingWrite::default();
        }
        let fx = self.regs.write(offset, size, value);
        if let Some(abort) = fx.gbpa_abort {
            log::info!(
                "vSMMU: GBPA.ABORT = {}: while SMMUEN = 0 the host's streams {}",
                u8::from(abort),
                if abort { "abort" } else { "use warden's stage 2 alone" }
            );
        }
        // GBPA only matters while the SMMU is disabled.
        let gbpa_abort = fx.gbpa_abort.filter(|_| !self.regs.smmu_enabled());
        PendingWrite { smmu_enable: fx.smmu_enable, gbpa_abort, cmdq_kick: fx.cmdq_kick }
    }

    /// The back-end half of a trapped write: the streams re-derived after SMMUEN changed, the
    /// commands consumed after a kick.
    pub fn finish_write<M, R>(&mut self, pending: PendingWrite, mem: &mut M, real: &mut R) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        let mut notify = Notify::default();
        if pending.smmu_enable.is_some() || pending.gbpa_abort.is_some() {
            notify.merge(self.resync_all(mem, real));
        }
        if pending.cmdq_kick {
            notify.merge(self.process_commands(mem, real));
        }
        self.signal(notify, mem)
    }

    /// Sends the event queue's and GERROR's interrupts in `notify` as MSIs where the host
    /// configured an address (`*_IRQ_CFG0`), and returns what is left for the wired lines.
    fn signal<M: GuestMemory + ?Sized>(&mut self, mut notify: Notify, mem: &mut M) -> Notify {
        if notify.evtq_irq
            && let Some((address, data)) = self.regs.evtq_msi()
        {
            notify.evtq_irq = false;
            if !self.write_msi(mem, address, data, "event queue") {
                notify.gerror_irq |= self.regs.raise_gerror(GERROR_MSI_EVTQ_ABT_ERR);
            }
        }
        if notify.gerror_irq
            && let Some((address, data)) = self.regs.gerror_msi()
        {
            notify.gerror_irq = false;
            if !self.write_msi(mem, address, data, "GERROR") {
                // An aborted GERROR MSI is recorded, with no further interrupt.
                let _ = self.regs.raise_gerror(GERROR_MSI_GERROR_ABT_ERR);
            }
        }
        notify
    }

    /// One MSI write of `data` at `address`, into host memory warden may touch only. Returns
    /// whether it was made.
    fn write_msi<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        address: u64,
        data: u32,
        what: &str,
    ) -> bool {
        if mem.write(address, &data.to_le_bytes()).is_ok() {
            self.stats.msi_writes += 1;
            return true;
        }
        self.stats.msi_refusals += 1;
        if crate::trap::should_log(self.stats.msi_refusals) {
            log::warn!(
                "vSMMU: {what} MSI to {address:#x} refused (not host memory warden may touch;                  #{}): GERROR MSI abort",
                self.stats.msi_refusals
            );
        }
        false
    }

    /// Consumes up to the budget of host commands.
    pub fn process_commands<M, R>(&mut self, mem: &mut M, real: &mut R) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        // A host waiting on memory never polls CMDQ_CONS: the whole queue now.
        let budget = if self.host_waits_on_memory {
            self.config.cmd_budget.max(1 << self.config.advertised.cmdq_log2.min(19))
        } else {
            self.config.cmd_budget
        };
        let mut notify = Notify::default();
        // The consumer works on `self.regs` in place (issue 16: no register file moved out and
        // back around every batch).
        let consumed = cmdq::consume(self, mem, budget, |this, mem, cmd| {
            let (outcome, n) = this.execute(mem, real, cmd);
            notify.merge(n);
            outcome
        });
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
    /// other streams are warden's own and are not forwarded). A stage-2 fault on the CD fetch
    /// of a stream whose host CD warden could not read names the host's CD, as the host's own
    /// CD fetch would have.
    pub fn forward_event<M: GuestMemory + ?Sized>(
        &mut self,
        record: &EventRecord,
        mem: &mut M,
    ) -> Notify {
        let sid = (record[0] >> 32) as u32;
        let Some(cd) = self.engine.stream_cd(sid) else {
            return Notify::default();
        };
        if !self.regs.smmu_enabled() {
            // A disabled SMMU records no events (the stream bypasses, or aborts silently).
            self.stats.events_lost_disabled += 1;
            return Notify::default();
        }
        let mut record = *record;
        if let StreamCd::Unreadable { host_ptr } = cd {
            evtq::rename_cd_fetch_address(&mut record, self.config.arena.unmapped_ipa, host_ptr);
        }
        let notify = record_event(&mut self.regs, &mut self.stats, &record, mem);
        self.signal(notify, mem)
    }

    fn execute<M, R>(&mut self, mem: &mut M, real: &mut R, cmd: HostCommand) -> (Outcome, Notify)
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        let mut notify = Notify::default();
        let result = match cmd {
            // Prefetching is a hint; the real SMMU fetches on demand.
            HostCommand::Prefetch { .. } => Ok(()),
            HostCommand::CfgiSte { sid, .. } => self.reshadow(mem, real, sid, &mut notify),
            HostCommand::CfgiSteRange { sid, range } => {
                let span = if range >= 31 { u64::MAX } else { (2u64 << range) - 1 };
                let first = u64::from(sid) & !span;
                let last = first.saturating_add(span);
                let sids: Vec<u32> = self
                    .engine
                    .sids()
                    .into_iter()
                    .filter(|&s| (first..=last).contains(&u64::from(s)))
                    .collect();
                sids.into_iter().try_for_each(|s| self.reshadow(mem, real, s, &mut notify))
            }
            // No substreams: every CD invalidation of a stream is about its one CD.
            HostCommand::CfgiCd { sid, .. } | HostCommand::CfgiCdAll { sid } => {
                self.refresh_cd(mem, real, sid, &mut notify)
            }
            HostCommand::TlbiNhAll => self.engine.invalidate_all(real, false),
            // Every real ASID the host's ASID names, retiring ones included.
            HostCommand::TlbiNhAsid { asid } => self.engine.invalidate_host_asid(real, asid),
            HostCommand::TlbiNhVa { asid, addr, leaf } => {
                self.engine.invalidate_host_va(real, asid, addr, leaf)
            }
            HostCommand::TlbiNhVaa { addr, leaf } => {
                self.engine.invalidate_va_all_asids(real, addr, leaf)
            }
            // From the host's view "all non-secure, non-hyp entries" are its own VMID's.
            HostCommand::TlbiNsnhAll => self.engine.invalidate_all(real, true),
            HostCommand::Sync(signal) => {
                let r = self.engine.sync(real);
                if r.is_ok() {
                    match signal {
                        SyncSignal::None => {}
                        SyncSignal::Irq => notify.cmd_sync_irq = true,
                        SyncSignal::Msi { address, data } => {
                            self.host_waits_on_memory = true;
                            if !self.write_msi(mem, address, data, "CMD_SYNC") {
                                notify.gerror_irq |=
                                    self.regs.raise_gerror(GERROR_MSI_CMDQ_ABT_ERR);
                            }
                        }
                    }
                }
                r
            }
        };
        match result {
            Ok(()) => (Outcome::Done, notify),
            Err(BackendError) => (Outcome::Retry, notify),
        }
    }

    /// Re-derives `sid`'s real STE from the host's STE (only for the host's streams). A
    /// stage-1 STE whose context pointer is the one warden already shadows keeps the shadow:
    /// only CFGI_CD re-reads a CD.
    fn reshadow<M, R>(
        &mut self,
        mem: &mut M,
        real: &mut R,
        sid: u32,
        notify: &mut Notify,
    ) -> Result<(), BackendError>
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        if !self.engine.contains(sid) {
            return Ok(());
        }
        let adv = *self.regs.advertised();
        let mut event = None;
        let mut stage1 = None;
        let plain = if !self.regs.smmu_enabled() {
            // SMMUEN = 0: GBPA applies.
            Some(disabled_ste(&self.regs))
        } else {
            let (base, cfg) = (self.regs.strtab_base(), self.regs.strtab_cfg());
            match ste::read_host_ste(mem, base, cfg, sid, &adv) {
                Err(fault) => {
                    // A stream ID outside the host's table is only an error once a device
                    // uses it: the real STE goes invalid, and the real SMMU reports that
                    // transaction (forwarded). Linux enables the SMMU before it fills in the
                    // level-2 tables of its devices, so reporting here would be noise.
                    if fault != ste::SteFault::BadStreamId {
                        event = Some(fault.event(sid));
                    }
                    Some(RealSte::Invalid)
                }
                Ok(words) => {
                    let host = ste::decode_host_ste(&words, &adv);
                    if let Err(why) = host {
                        self.refused(sid, why);
                        event = Some(evtq::bad_ste(sid));
                    }
                    if let Ok(ste::HostSte::Stage1(s1)) = host {
                        stage1 = Some(s1);
                    }
                    RealSte::without_stage1(host)
                }
            }
        };
        let result = match (plain, stage1) {
            (Some(r), _) => self.install_plain(real, sid, r),
            (None, Some(s1)) => {
                let same_context = self.host_s1.get(&sid).map(|h| h.ctx_ptr) == Some(s1.ctx_ptr)
                    && matches!(self.engine.installed(sid), Some(RealSte::Nested { .. }))
                    && !matches!(self.engine.stream_cd(sid), Some(StreamCd::Unreadable { .. }))
                    && !self.engine.is_stale(sid);
                if same_context {
                    self.host_s1.insert(sid, s1);
                    Ok(())
                } else {
                    let (plan, cd_event) = self.plan_cd(mem, sid, s1.ctx_ptr, &adv);
                    event = event.or(cd_event);
                    self.install_cd(real, sid, s1, plan, &mut event)
                }
            }
            (None, None) => Ok(()),
        };
        if let Some(record) = event {
            notify.merge(record_event(&mut self.regs, &mut self.stats, &record, mem));
        }
        result
    }

    /// Re-reads `sid`'s CD after the host's CFGI_CD(_ALL) (nested streams only).
    fn refresh_cd<M, R>(
        &mut self,
        mem: &mut M,
        real: &mut R,
        sid: u32,
        notify: &mut Notify,
    ) -> Result<(), BackendError>
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        let (Some(&s1), Some(RealSte::Nested { .. })) =
            (self.host_s1.get(&sid), self.engine.installed(sid))
        else {
            return Ok(());
        };
        let adv = *self.regs.advertised();
        let (plan, mut event) = self.plan_cd(mem, sid, s1.ctx_ptr, &adv);
        let result = self.install_cd(real, sid, s1, plan, &mut event);
        if let Some(record) = event {
            notify.merge(record_event(&mut self.regs, &mut self.stats, &record, mem));
        }
        result
    }

    /// Copies and validates the host's CD at `ptr`; the C_BAD_CD record if it is refused.
    fn plan_cd<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        sid: u32,
        ptr: u64,
        adv: &Advertised,
    ) -> (ContextPlan, Option<EventRecord>) {
        let words = match cd::read(mem, ptr) {
            Ok(words) => words,
            Err(cd::Unreadable) => {
                self.stats.cd_unreadable += 1;
                return (ContextPlan::Unreadable { host_ptr: ptr }, None);
            }
        };
        match cd::validate(&words, adv) {
            Ok(Some(valid)) => (ContextPlan::Valid(valid), None),
            Ok(None) => (ContextPlan::Invalid, None),
            Err(why) => {
                self.stats.cd_refusals += 1;
                log::warn!("vSMMU: CD at {ptr:#x} for stream {sid:#x} refused: {why}; C_BAD_CD");
                (ContextPlan::Invalid, Some(evtq::bad_cd(sid)))
            }
        }
    }

    /// A real STE without stage 1 (the stream's old context, if any, is released).
    fn install_plain<R: NestedBackend + ?Sized>(
        &mut self,
        real: &mut R,
        sid: u32,
        ste: RealSte,
    ) -> Result<(), BackendError> {
        self.engine.install_plain(real, sid, ste)?;
        self.host_s1.remove(&sid);
        Ok(())
    }

    /// A nested real STE whose stage 1 is `plan` (see [`NestedStreams::install_context`]); a
    /// context refused for want of a real ASID becomes C_BAD_CD in `event`.
    fn install_cd<R: NestedBackend + ?Sized>(
        &mut self,
        real: &mut R,
        sid: u32,
        s1: Stage1Context,
        plan: ContextPlan,
        event: &mut Option<EventRecord>,
    ) -> Result<(), BackendError> {
        if !self.engine.contains(sid) {
            return Ok(());
        }
        if self.engine.install_context(real, sid, plan)? == Installed::NoAsid {
            *event = Some(evtq::bad_cd(sid));
        }
        self.host_s1.insert(sid, s1);
        Ok(())
    }

    fn refused(&mut self, sid: u32, why: SteRefusal) {
        self.stats.ste_refusals += 1;
        log::warn!("vSMMU: STE for stream {sid:#x} refused: {why}; C_BAD_STE");
    }

    /// SMMUEN (or, while disabled, GBPA.ABORT) changed: every host stream follows (host STEs
    /// when enabled, GBPA's choice when not).
    fn resync_all<M, R>(&mut self, mem: &mut M, real: &mut R) -> Notify
    where
        M: GuestMemory + ?Sized,
        R: NestedBackend + ?Sized,
    {
        let mut notify = Notify::default();
        let sids = self.engine.sids();
        for sid in sids {
            if self.reshadow(mem, real, sid, &mut notify).is_err() {
                log::error!("vSMMU: real SMMU failed while re-deriving stream {sid:#x}");
            }
        }
        // The new STEs are in force once CR0ACK (or GBPA.UPDATE) shows the change: complete
        // them now.
        if self.engine.sync(real).is_err() {
            log::error!(
                "vSMMU: real SMMU sync failed after SMMUEN = {}, GBPA.ABORT = {}",
                u8::from(self.regs.smmu_enabled()),
                u8::from(self.regs.gbpa_abort())
            );
        }
        notify
    }
}

impl cmdq::CommandQueue for VirtSmmu {
    fn registers(&mut self) -> &mut RegisterFile {
        &mut self.regs
    }
}

/// The real STE of every host stream while the host's SMMU is disabled: GBPA.ABORT = 1 aborts;
/// bypass is warden's stage 2 alone, as for a host STE asking for bypass (never real bypass).
fn disabled_ste(regs: &RegisterFile) -> RealSte {
    if regs.gbpa_abort() { RealSte::Abort } else { RealSte::Stage2Only }
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
pub fn reuse_vmid<R: NestedBackend + ?Sized>(
    vmids: &mut asid::RetireTracker,
    vmid: u16,
    real: &mut R,
) -> Result<bool, BackendError> {
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
