//! warden's driver for the real SMMUv3 (Arm IHI 0070): reset, stream table, command and event
//! queues in warden memory, stage-2-only STEs over the host's own stage-2 tables, invalidation,
//! event draining. The later virtual SMMU builds on it.
//!
//! Design decisions:
//! - **Same tables as the CPU.** A host device's STE points S2TTB at the root of the host's
//!   stage-2 (the tables in VTTBR_EL2), with the host VMID and VTCR_EL2's walk fields. One
//!   source of truth: nothing to keep in sync, no drift, no second set of tables. The cost:
//!   every change to the host stage-2 that removes or changes access must also be invalidated
//!   in the SMMU ([`Smmu::invalidate_s2_ipa_range`] / [`Smmu::invalidate_vmid`], each ending
//!   with a completed CMD_SYNC), because the SMMU does not see CPU TLBIs (CR2.PTM = 1; QEMU has
//!   no BTM at all). Both tables are walked coherently (IDR0.COHACC is required).
//! - **Stray stream IDs get no STE**: V = 0 (or an L1 descriptor with Span = 0), so their
//!   transactions abort and are recorded (C_BAD_STE / C_BAD_STREAMID, CR2.RECINVSID = 1) —
//!   events for unknown devices are worth logging. A valid abort STE (silent) is available too.
//! - **GBPA = abort before anything else**, and a failed init leaves the SMMU disabled with
//!   GBPA = abort: DMA is refused, never let through.
//! - **No interrupts, no MSI**: warden polls. CMD_SYNC uses CS = none and completion is seen as
//!   CMDQ_CONS reaching the producer index; every wait is bounded by [`SmmuConfig::poll_limit`].
//! - **Command errors** (architecture 7.1): the failing command is reported, replaced in the
//!   queue by a CMD_SYNC (a no-op) and GERROR.CMDQ_ERR acknowledged through GERRORN; the SMMU
//!   then resumes at CMDQ_CONS, which software does not write.
//! - **Combined stage-1 + stage-2 TLB entries.** A nested STE (the host's stage 1 over
//!   warden's stage 2) fills the TLB with entries that combine both stages, tagged with the
//!   VMID and an ASID and looked up by the stage-1 input address. CMD_TLBI_S2_IPA is not
//!   required to invalidate them (IHI 0070, 4.4.2: it affects stage-2-only entries and
//!   stage-2 walk caches; like the CPU's `TLBI IPAS2E1IS`, combined entries need a stage-1
//!   invalidation, CMD_TLBI_NH_ALL or CMD_TLBI_S12_VMALL), and QEMU's IOTLB keeps them too.
//!   So [`Smmu::invalidate_s2_ipa_range`] becomes one CMD_TLBI_S12_VMALL of the VMID whenever
//!   a nested STE with that VMID was installed since the VMID's last complete invalidation:
//!   one command instead of one per page, at the price of the VMID's other TLB entries (on
//!   real hardware the stage-1 ones would go with TLBI_NH_ALL anyway, which is the other
//!   correct choice; S12_VMALL needs no second CMD_SYNC between the stage-2 and the stage-1
//!   invalidation). The VMID stays marked after its last nested STE is gone until such an
//!   invalidation completes, since its combined entries outlive the STE.
//! - **Hitless context switch.** Replacing a valid STE is break-before-make, except when only
//!   the stage-1 context pointer of a nested STE changes (the virtual SMMU's double-buffered
//!   shadow context descriptors): then word 0 is rewritten in one 64-bit store, which the SMMU
//!   sees either old or new, and CMD_CFGI_STE follows.

pub mod backend;
pub mod cmd;
pub mod event;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod io;
pub mod mmu500;
pub mod pci;
pub mod queue;
pub mod quiesce;
pub mod regs;
pub mod ste;
#[cfg(test)]
mod tests;
pub mod v2;
pub mod virt;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use crate::mm::{FrameAllocator, MemRange, PAGE_SIZE};

pub use cmd::{Command, CommandErrorCode};
pub use event::{Event, EventKind, FaultClass};
pub use io::{MmioSmmu, RegsTooSmall, SmmuIo};
pub use queue::QueueShape;
pub use regs::Features;
pub use ste::{S2Config, S2ConfigError, Ste};

use event::EVENT_SIZE;
use regs::*;
use ste::{STE_SIZE, STE_WORDS, l1_descriptor};

/// Command queue entries warden uses at most: 256 x 16 bytes = one page.
pub const CMDQ_LOG2_MAX: u32 = 8;
/// Event queue entries warden uses at most: 128 x 32 bytes = one page.
pub const EVTQ_LOG2_MAX: u32 = 7;
/// Level-2 stream tables cover 2^8 stream IDs (one PCI bus): 256 x 64 bytes = 16 KiB.
pub const STRTAB_SPLIT: u32 = 8;
/// Register polls before a wait counts as timed out (QEMU completes everything on the write).
pub const DEFAULT_POLL_LIMIT: u32 = 1 << 20;
/// Above this many pages, an IPA-range invalidation becomes one TLBI_S12_VMALL.
pub const MAX_TLBI_IPA_PAGES: u64 = 128;

const CMD_SIZE: u64 = 16;

/// What warden asks of the SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuConfig {
    /// Stream ID bits the stream table covers (16 for PCI requester IDs); at most IDR1.SIDSIZE.
    pub sid_bits: u32,
    /// Output address bits the host's stage-2 produces: its IPA size, as it is an identity map.
    pub min_oas_bits: u32,
    /// Register polls per wait.
    pub poll_limit: u32,
}

impl SmmuConfig {
    pub const fn new(sid_bits: u32, min_oas_bits: u32) -> Self {
        Self { sid_bits, min_oas_bits, poll_limit: DEFAULT_POLL_LIMIT }
    }
}

/// A capability warden needs and the SMMU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Stage2,
    AArch64Tables,
    LittleEndianWalks,
    Coherency,
    Granule4K,
    /// Queue or table bases fixed by the implementation (IDR1.QUEUES_PRESET/TABLES_PRESET).
    ProgrammableBases,
    StreamIdBits {
        have: u32,
        need: u32,
    },
    OutputAddressBits {
        have: Option<u32>,
        need: u32,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Stage2 => write!(f, "stage-2 translation (IDR0.S2P)"),
            Missing::AArch64Tables => write!(f, "AArch64 translation tables (IDR0.TTF)"),
            Missing::LittleEndianWalks => write!(f, "little-endian table walks (IDR0.TTENDIAN)"),
            Missing::Coherency => write!(f, "coherent table and queue access (IDR0.COHACC)"),
            Missing::Granule4K => write!(f, "the 4 KiB granule (IDR5.GRAN4K)"),
            Missing::ProgrammableBases => {
                write!(f, "programmable queue and table bases (IDR1.*_PRESET set)")
            }
            Missing::StreamIdBits { have, need } => {
                write!(f, "{need}-bit stream IDs (IDR1.SIDSIZE is {have})")
            }
            Missing::OutputAddressBits { have: Some(h), need } => {
                write!(f, "a {need}-bit output address size (IDR5.OAS is {h} bits)")
            }
            Missing::OutputAddressBits { have: None, need } => {
                write!(f, "a {need}-bit output address size (IDR5.OAS is reserved)")
            }
        }
    }
}

/// What a bounded wait was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    GbpaUpdate,
    Cr0Ack(u32),
    IrqCtrlAck,
    CommandQueueSpace,
}

/// Driver errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    Unsupported(Missing),
    /// `SmmuConfig.sid_bits` is 0 or above 32.
    BadConfig,
    /// The frame allocator could not supply `pages` for `what`.
    OutOfFrames {
        what: &'static str,
        pages: usize,
    },
    Timeout(WaitFor),
    /// CMD_SYNC did not complete: CONS stayed short of PROD.
    SyncTimeout {
        prod: u32,
        cons: u32,
    },
    /// A command failed; it was skipped (replaced by CMD_SYNC) and the error acknowledged.
    Command {
        code: CommandErrorCode,
        index: u32,
        command: [u64; 2],
    },
    /// Other global errors were active (acknowledged, except SFM which software cannot clear).
    Global {
        active: u32,
    },
    /// A stream ID beyond the stream table.
    StreamId {
        sid: u32,
        sid_bits: u32,
    },
    Stage2(S2ConfigError),
    /// A context descriptor write outside the arena (or with no arena).
    CdArena {
        ipa: u64,
    },
    /// The MMU-500's TLB invalidation of the host VMID did not complete (its TLBGSYNC stayed
    /// active for the poll limit).
    Mmu500Sync,
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmmuError::Unsupported(m) => write!(f, "SMMU lacks {m}"),
            SmmuError::Mmu500Sync => write!(f, "MMU-500 TLBIVMID + TLBGSYNC did not complete"),
            SmmuError::BadConfig => write!(f, "SMMU config: stream ID bits must be 1..=32"),
            SmmuError::OutOfFrames { what, pages } => {
                write!(f, "no {pages} free pages for the SMMU {what}")
            }
            SmmuError::Timeout(w) => match w {
                WaitFor::GbpaUpdate => write!(f, "SMMU GBPA.UPDATE did not clear"),
                WaitFor::Cr0Ack(v) => write!(f, "SMMU CR0ACK did not reach {v:#x}"),
                WaitFor::IrqCtrlAck => write!(f, "SMMU IRQ_CTRLACK did not follow IRQ_CTRL"),
                WaitFor::CommandQueueSpace => write!(f, "SMMU command queue stayed full"),
            },
            SmmuError::SyncTimeout { prod, cons } => {
                write!(f, "SMMU CMD_SYNC timed out (CMDQ_PROD {prod:#x}, CMDQ_CONS {cons:#x})")
            }
            SmmuError::Command { code, index, command } => write!(
                f,
                "SMMU command {} at queue index {index} failed: {code} (words {:#x} {:#x}); skipped",
                cmd::opcode_name((command[0] & 0xff) as u8),
                command[0],
                command[1]
            ),
            SmmuError::Global { active } => write!(f, "SMMU global errors active: {active:#x}"),
            SmmuError::StreamId { sid, sid_bits } => {
                write!(f, "stream ID {sid:#x} is beyond the {sid_bits}-bit stream table")
            }
            SmmuError::Stage2(e) => write!(f, "SMMU stage 2: {e}"),
            SmmuError::CdArena { ipa } => {
                write!(f, "context descriptor at IPA {ipa:#x} is outside the CD arena")
            }
        }
    }
}

/// How the stream table is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamTable {
    /// `2^sid_bits` STEs at `base`.
    Linear { base: u64, sid_bits: u32 },
    /// An L1 table of `2^(sid_bits - 8)` descriptors at `l1`; `l2[i]` is the 256-entry
    /// level-2 table for stream IDs `i << 8 ..`, allocated on first use.
    TwoLevel { l1: u64, sid_bits: u32, l2: Vec<Option<u64>> },
}

impl StreamTable {
    pub fn sid_bits(&self) -> u32 {
        match self {
            StreamTable::Linear { sid_bits, .. } | StreamTable::TwoLevel { sid_bits, .. } => {
                *sid_bits
            }
        }
    }
}

/// Summary of one [`Smmu::drain_events`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventDrain {
    pub events: u32,
    /// The SMMU flagged an event-queue overflow (events were lost) since the last drain.
    pub overflowed: bool,
    /// Global errors other than the command queue's, acknowledged while waiting for a sync
    /// since the last drain (GERROR bits; EVTQ_ABT_ERR: an event record could not be written,
    /// which QEMU also raises for a full queue, so events were lost).
    pub global_errors: u32,
}

#[derive(Clone, Copy, Debug)]
struct Queue {
    base: u64,
    shape: QueueShape,
    /// Software's index: PROD for the command queue, CONS for the event queue.
    ptr: u32,
}

/// Warden memory given to the SMMU, for the integrator's checks (never host-accessible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuMemory {
    pub cmdq: MemRange,
    pub evtq: MemRange,
    /// Linear table or L1 table (L2 tables come and go with [`Smmu::memory_ranges`]).
    pub strtab: MemRange,
}

/// The SMMU, owned by warden.
pub struct Smmu<M: SmmuIo> {
    io: M,
    features: Features,
    poll_limit: u32,
    cmdq: Queue,
    /// Last CMDQ_CONS read (index and wrap only).
    cmdq_cons: u32,
    evtq: Queue,
    /// CONS.OVACKFLG as last written.
    evtq_ovack: u32,
    /// Global errors [`Self::sync`] acknowledged and did not fail on, for the next drain.
    global_errors: u32,
    strtab: StreamTable,
    memory: SmmuMemory,
    /// A command error met while waiting for queue space, returned by the next sync.
    pending: Option<SmmuError>,
    /// Stream IDs whose STE is nested (stage 1 + 2), with its S2VMID.
    nested: BTreeMap<u32, u16>,
    /// VMIDs whose TLB entries may include combined stage-1 + stage-2 ones (see the module
    /// documentation).
    combined: BTreeSet<u16>,
    /// Warden memory holding the context descriptors of nested STEs, and the IPA at which
    /// the SMMU's stage 2 maps it (see [`Smmu::set_cd_arena`]).
    cd_arena: Option<(u64, MemRange)>,
}

fn pages_for(bytes: u64) -> usize {
    bytes.div_ceil(PAGE_SIZE).max(1) as usize
}

fn alloc<F: FrameAllocator + ?Sized>(
    frames: &mut F,
    bytes: u64,
    what: &'static str,
) -> Result<MemRange, SmmuError> {
    let pages = pages_for(bytes);
    let pa = frames.alloc_zeroed(pages).ok_or(SmmuError::OutOfFrames { what, pages })?;
    Ok(MemRange::new(pa, pa + pages as u64 * PAGE_SIZE))
}

/// Checks the features warden needs, naming the first one missing.
pub fn check_features(f: &Features, config: &SmmuConfig) -> Result<(), Missing> {
    if !f.stage2 {
        return Err(Missing::Stage2);
    }
    if !f.aarch64_tables {
        return Err(Missing::AArch64Tables);
    }
    if !f.little_endian {
        return Err(Missing::LittleEndianWalks);
    }
    if !f.coherent {
        return Err(Missing::Coherency);
    }
    if !f.gran4k {
        return Err(Missing::Granule4K);
    }
    if f.preset {
        return Err(Missing::ProgrammableBases);
    }
    if f.sid_bits < config.sid_bits {
        return Err(Missing::StreamIdBits { have: f.sid_bits, need: config.sid_bits });
    }
    match f.oas_bits {
        Some(b) if b >= config.min_oas_bits => Ok(()),
        have => Err(Missing::OutputAddressBits { have, need: config.min_oas_bits }),
    }
}

impl<M: SmmuIo> Smmu<M> {
    /// Takes the SMMU: GBPA = abort, disable, check features, allocate and program the stream
    /// table (every STE invalid) and queues, enable the command queue, CFGI_ALL + TLBI_EL2_ALL
    /// (if IDR0.HYP) + TLBI_NSNH_ALL + CMD_SYNC, enable the event queue, then SMMUEN. On error
    /// the SMMU is left disabled with GBPA = abort.
    pub fn init<F: FrameAllocator + ?Sized>(
        io: M,
        config: SmmuConfig,
        frames: &mut F,
    ) -> Result<Self, SmmuError> {
        if config.sid_bits == 0 || config.sid_bits > 32 {
            return Err(SmmuError::BadConfig);
        }
        let limit = config.poll_limit.max(1);
        // Incoming transactions abort while the SMMU is disabled, from here on.
        poll(limit, || io.read32(GBPA) & GBPA_UPDATE == 0)
            .ok_or(SmmuError::Timeout(WaitFor::GbpaUpdate))?;
        io.write32(GBPA, GBPA_ABORT | GBPA_UPDATE);
        poll(limit, || io.read32(GBPA) & GBPA_UPDATE == 0)
            .ok_or(SmmuError::Timeout(WaitFor::GbpaUpdate))?;
        write_cr0(&io, 0, limit)?;
        // warden polls: no wired interrupts or MSIs.
        io.write32(IRQ_CTRL, 0);
        poll(limit, || io.read32(IRQ_CTRLACK) == 0)
            .ok_or(SmmuError::Timeout(WaitFor::IrqCtrlAck))?;
        // Errors left by whoever ran the SMMU before are stale now.
        let stale = (io.read32(GERROR) ^ io.read32(GERRORN)) & GERROR_MASK & !GERROR_SFM_ERR;
        if stale != 0 {
            io.write32(GERRORN, io.read32(GERRORN) ^ stale);
        }

        let features = Features::decode(io.read32(IDR0), io.read32(IDR1), io.read32(IDR5));
        check_features(&features, &config).map_err(SmmuError::Unsupported)?;

        // Warden memory for the structures; nothing is programmed until all exist.
        let cmdq_shape = QueueShape::new(features.cmdq_log2.min(CMDQ_LOG2_MAX));
        let evtq_shape = QueueShape::new(features.evtq_log2.min(EVTQ_LOG2_MAX));
        let two_level = features.two_level_strtab && config.sid_bits > STRTAB_SPLIT;
        let strtab_bytes = if two_level {
            8u64 << (config.sid_bits - STRTAB_SPLIT)
        } else {
            STE_SIZE << config.sid_bits
        };
        let cmdq_mem = alloc(frames, CMD_SIZE << cmdq_shape.log2(), "command queue")?;
        let evtq_mem = match alloc(frames, EVENT_SIZE << evtq_shape.log2(), "event queue") {
            Ok(m) => m,
            Err(e) => {
                frames.free(cmdq_mem.start, pages_for(cmdq_mem.size()));
                return Err(e);
            }
        };
        let strtab_mem = match alloc(frames, strtab_bytes, "stream table") {
            Ok(m) => m,
            Err(e) => {
                frames.free(evtq_mem.start, pages_for(evtq_mem.size()));
                frames.free(cmdq_mem.start, pages_for(cmdq_mem.size()));
                return Err(e);
            }
        };
        // The allocator zeroed them: every STE and L1 descriptor is invalid. Make the zeroes
        // visible to the SMMU before it is told where they are.
        io.barrier();

        let cacheable = (CR1_CACHE_WB << CR1_QUEUE_IC_SHIFT)
            | (CR1_CACHE_WB << CR1_QUEUE_OC_SHIFT)
            | (CR1_SH_ISH << CR1_QUEUE_SH_SHIFT)
            | (CR1_CACHE_WB << CR1_TABLE_IC_SHIFT)
            | (CR1_CACHE_WB << CR1_TABLE_OC_SHIFT)
            | (CR1_SH_ISH << CR1_TABLE_SH_SHIFT);
        io.write32(CR1, cacheable);
        // PTM: only explicit commands maintain the SMMU's TLBs; RECINVSID: record bad stream IDs.
        io.write32(CR2, CR2_PTM | CR2_RECINVSID);

        io.write64(STRTAB_BASE, STRTAB_BASE_RA | (strtab_mem.start & STRTAB_BASE_ADDR_MASK));
        let strtab_cfg = if two_level {
            STRTAB_CFG_FMT_2LVL | (STRTAB_SPLIT << STRTAB_CFG_SPLIT_SHIFT) | config.sid_bits
        } else {
            config.sid_bits
        };
        io.write32(STRTAB_BASE_CFG, strtab_cfg);

        io.write64(
            CMDQ_BASE,
            Q_BASE_RWA | (cmdq_mem.start & Q_BASE_ADDR_MASK) | u64::from(cmdq_shape.log2()),
        );
        io.write32(CMDQ_PROD, 0);
        io.write32(CMDQ_CONS, 0);
        io.write64(
            EVTQ_BASE,
            Q_BASE_RWA | (evtq_mem.start & Q_BASE_ADDR_MASK) | u64::from(evtq_shape.log2()),
        );
        io.write32(EVTQ_PROD, 0);
        io.write32(EVTQ_CONS, 0);

        let strtab = if two_level {
            StreamTable::TwoLevel {
                l1: strtab_mem.start,
                sid_bits: config.sid_bits,
                l2: alloc::vec![None; 1usize << (config.sid_bits - STRTAB_SPLIT)],
            }
        } else {
            StreamTable::Linear { base: strtab_mem.start, sid_bits: config.sid_bits }
        };
        let mut smmu = Smmu {
            io,
            features,
            poll_limit: limit,
            cmdq: Queue { base: cmdq_mem.start, shape: cmdq_shape, ptr: 0 },
            cmdq_cons: 0,
            evtq: Queue { base: evtq_mem.start, shape: evtq_shape, ptr: 0 },
            evtq_ovack: 0,
            global_errors: 0,
            strtab,
            memory: SmmuMemory { cmdq: cmdq_mem, evtq: evtq_mem, strtab: strtab_mem },
            pending: None,
            nested: BTreeMap::new(),
            combined: BTreeSet::new(),
            cd_arena: None,
        };
        // From here on the SMMU knows the memory: on failure it is disabled, and the frames
        // stay allocated (it might still be reading them).
        match smmu.enable() {
            Ok(()) => Ok(smmu),
            Err(e) => {
                let _ = write_cr0(&smmu.io, 0, limit);
                Err(e)
            }
        }
    }

    fn enable(&mut self) -> Result<(), SmmuError> {
        write_cr0(&self.io, CR0_CMDQEN, self.poll_limit)?;
        self.push(Command::CfgiAll)?;
        if self.features.hyp {
            self.push(Command::TlbiEl2All)?;
        }
        self.push(Command::TlbiNsnhAll)?;
        self.sync()?;
        write_cr0(&self.io, CR0_CMDQEN | CR0_EVTQEN, self.poll_limit)?;
        write_cr0(&self.io, CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN, self.poll_limit)?;
        self.check_global_errors()
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    pub fn stream_table(&self) -> &StreamTable {
        &self.strtab
    }

    pub fn memory(&self) -> SmmuMemory {
        self.memory
    }

    /// Every range of warden memory the SMMU reads or writes: queues, stream table, L2 tables,
    /// the context descriptor arena.
    pub fn memory_ranges(&self) -> Vec<MemRange> {
        let mut out = alloc::vec![self.memory.cmdq, self.memory.evtq, self.memory.strtab];
        if let StreamTable::TwoLevel { l2, .. } = &self.strtab {
            out.extend(l2.iter().flatten().map(|&pa| MemRange::new(pa, pa + l2_table_bytes())));
        }
        out.extend(self.cd_arena.map(|(_, memory)| memory));
        out
    }

    /// Declares `memory` (warden memory, page aligned) the context descriptor arena of nested
    /// STEs: their stage 2 maps it at IPA `ipa` (read-only), and
    /// [`Self::write_context_descriptor`] fills it.
    pub fn set_cd_arena(&mut self, ipa: u64, memory: MemRange) {
        self.cd_arena = Some((ipa, memory));
    }

    /// Writes a context descriptor (8 words) at arena IPA `ipa`, then a barrier: it is visible
    /// to the SMMU before any later STE write points at it. Refused outside the arena.
    pub fn write_context_descriptor(
        &mut self,
        ipa: u64,
        words: &[u64; 8],
    ) -> Result<(), SmmuError> {
        let Some((base, memory)) = self.cd_arena else {
            return Err(SmmuError::CdArena { ipa });
        };
        let pa = ipa
            .checked_sub(base)
            .and_then(|offset| memory.start.checked_add(offset))
            .filter(|pa| {
                pa.is_multiple_of(64) && pa.checked_add(64).is_some_and(|e| e <= memory.end)
            })
            .ok_or(SmmuError::CdArena { ipa })?;
        for (i, word) in words.iter().enumerate() {
            self.io.mem_write64(pa + 8 * i as u64, *word);
        }
        self.io.barrier();
        Ok(())
    }

    pub fn io(&self) -> &M {
        &self.io
    }

    /// Installs stage-2-only STEs walking the host's stage-2 (`s2`) for `sids`, each followed by
    /// CFGI_STE, then one CMD_SYNC. An STE that was valid is first made invalid and synced
    /// (break-before-make).
    pub fn install_stage2_only<F: FrameAllocator + ?Sized>(
        &mut self,
        sids: &[u32],
        s2: &S2Config,
        frames: &mut F,
    ) -> Result<(), SmmuError> {
        let ste = Ste::stage2_only(s2, &self.features).map_err(SmmuError::Stage2)?;
        self.install(sids, &ste, frames)
    }

    /// Installs valid abort STEs (silent: no events) for `sids`.
    pub fn install_abort<F: FrameAllocator + ?Sized>(
        &mut self,
        sids: &[u32],
        frames: &mut F,
    ) -> Result<(), SmmuError> {
        self.install(sids, &Ste::abort(), frames)
    }

    /// Makes the STEs of `sids` invalid again (their transactions abort with C_BAD_STE).
    pub fn remove(&mut self, sids: &[u32]) -> Result<(), SmmuError> {
        for &sid in sids {
            self.check_sid(sid)?;
            if let Some(addr) = self.ste_addr(sid) {
                self.io.mem_write64(addr, 0);
                self.nested.remove(&sid);
                self.push(Command::CfgiSte { sid })?;
            }
        }
        self.sync()
    }

    /// Installs `ste` for every stream ID in `sids`: words 1..7, barrier, word 0 (with V),
    /// CFGI_STE; one CMD_SYNC at the end.
    pub(crate) fn install<F: FrameAllocator + ?Sized>(
        &mut self,
        sids: &[u32],
        ste: &Ste,
        frames: &mut F,
    ) -> Result<(), SmmuError> {
        for &sid in sids {
            self.check_sid(sid)?;
        }
        for &sid in sids {
            self.write_ste(sid, ste, frames)?;
        }
        self.sync()
    }

    /// Makes `sid`'s STE `ste`: words 1..7, barrier, word 0 (with V), CFGI_STE. A valid STE is
    /// first made invalid and synced (break-before-make), unless only the stage-1 context
    /// pointer of a nested STE changes: then word 0 alone is rewritten (hitless, see the module
    /// documentation). In force after the next [`Self::sync`].
    pub fn write_ste<F: FrameAllocator + ?Sized>(
        &mut self,
        sid: u32,
        ste: &Ste,
        frames: &mut F,
    ) -> Result<(), SmmuError> {
        self.check_sid(sid)?;
        let addr = self.ste_addr_alloc(sid, frames)?;
        let current = Ste(core::array::from_fn(|i| self.io.mem_read64(addr + 8 * i as u64)));
        if current.is_valid() && current == *ste {
            return self.push(Command::CfgiSte { sid });
        }
        if current.only_context_pointer_differs(ste) {
            // The new context descriptor must be visible before the pointer to it.
            self.io.barrier();
            self.io.mem_write64(addr, ste.0[0]);
            return self.push(Command::CfgiSte { sid });
        }
        if current.is_valid() {
            self.io.mem_write64(addr, 0);
            self.nested.remove(&sid);
            self.push(Command::CfgiSte { sid })?;
            self.sync()?;
        }
        for i in 1..STE_WORDS {
            self.io.mem_write64(addr + 8 * i as u64, ste.0[i]);
        }
        self.io.barrier();
        self.io.mem_write64(addr, ste.0[0]);
        if ste.is_valid() && ste.is_nested() {
            self.nested.insert(sid, ste.s2_vmid());
            self.combined.insert(ste.s2_vmid());
        }
        self.push(Command::CfgiSte { sid })
    }

    /// The STE now in the table for `sid` (`None`: beyond the table or no level-2 table yet).
    pub fn read_ste(&self, sid: u32) -> Option<Ste> {
        self.check_sid(sid).ok()?;
        let addr = self.ste_addr(sid)?;
        Some(Ste(core::array::from_fn(|i| self.io.mem_read64(addr + 8 * i as u64))))
    }

    /// Queues one command given as its two words (the virtual SMMU's translated commands);
    /// complete after the next [`Self::sync`].
    pub fn submit_words(&mut self, words: [u64; 2]) -> Result<(), SmmuError> {
        self.push_words(words)
    }

    /// Stage-2 TLB invalidation for `range` of `vmid`'s IPA space (all levels, so freed table
    /// pages are covered too), ending with a completed CMD_SYNC. Large ranges become one
    /// TLBI_S12_VMALL, and so does every range while `vmid` may have combined stage-1 +
    /// stage-2 entries (a nested STE uses it, or did since its last complete invalidation):
    /// TLBI_S2_IPA leaves those in place.
    pub fn invalidate_s2_ipa_range(&mut self, vmid: u16, range: MemRange) -> Result<(), SmmuError> {
        if range.is_empty() {
            return Ok(());
        }
        if self.combined.contains(&vmid) {
            return self.invalidate_vmid(vmid);
        }
        let Some(pages) = range.page_aligned_outward() else {
            return self.invalidate_vmid(vmid);
        };
        if pages.size() / PAGE_SIZE > MAX_TLBI_IPA_PAGES {
            return self.invalidate_vmid(vmid);
        }
        let mut ipa = pages.start;
        while ipa < pages.end {
            self.push(Command::TlbiS2Ipa { vmid, ipa, leaf: false })?;
            ipa += PAGE_SIZE;
        }
        self.sync()
    }

    /// Every TLB entry of `vmid`, ending with a completed CMD_SYNC.
    pub fn invalidate_vmid(&mut self, vmid: u16) -> Result<(), SmmuError> {
        self.push(Command::TlbiS12Vmall { vmid })?;
        self.sync()?;
        if !self.nested.values().any(|&v| v == vmid) {
            self.combined.remove(&vmid);
        }
        Ok(())
    }

    /// Whether `vmid`'s TLB entries may include combined stage-1 + stage-2 ones (what makes
    /// [`Self::invalidate_s2_ipa_range`] invalidate the whole VMID).
    pub fn may_hold_combined_entries(&self, vmid: u16) -> bool {
        self.combined.contains(&vmid)
    }

    /// Reads at most one queue's worth of event records, oldest first, passing each to `f`, and
    /// acknowledges an overflow flag.
    pub fn drain_events(&mut self, mut f: impl FnMut(Event)) -> EventDrain {
        self.drain_raw_events(|raw| f(Event::decode(raw)))
    }

    /// [`Self::drain_events`] with the records as the SMMU wrote them (for forwarding).
    ///
    /// warden drains after every trap, so the common case is that nothing happened: then one
    /// read of EVTQ_PROD is all it costs (no barrier, no EVTQ_CONS write).
    pub fn drain_raw_events(&mut self, mut f: impl FnMut([u64; 4])) -> EventDrain {
        let q = self.evtq.shape;
        let prod_reg = self.io.read32(EVTQ_PROD);
        let prod = q.pointer(prod_reg);
        if q.is_empty(prod, self.evtq.ptr)
            && (prod_reg ^ self.evtq_ovack) & Q_OVERFLOW_FLAG == 0
            && self.global_errors == 0
        {
            return EventDrain::default();
        }
        // The records must be read after PROD says they are there.
        self.io.barrier();
        let mut events = 0;
        while !q.is_empty(prod, self.evtq.ptr) && events < q.entries() {
            let entry = self.evtq.base + u64::from(q.index(self.evtq.ptr)) * EVENT_SIZE;
            let raw = core::array::from_fn(|i| self.io.mem_read64(entry + 8 * i as u64));
            f(raw);
            self.evtq.ptr = q.next(self.evtq.ptr);
            events += 1;
        }
        let overflowed = (prod_reg ^ self.evtq_ovack) & Q_OVERFLOW_FLAG != 0;
        self.evtq_ovack = prod_reg & Q_OVERFLOW_FLAG;
        // Finish reading the records before handing their slots back.
        self.io.barrier();
        self.io.write32(EVTQ_CONS, self.evtq.ptr | self.evtq_ovack);
        let global_errors = core::mem::take(&mut self.global_errors);
        EventDrain { events, overflowed, global_errors }
    }

    /// Returns the first error among the GERROR bits now active, acknowledging them; a command
    /// error is skipped as described in the module documentation.
    pub fn check_global_errors(&mut self) -> Result<(), SmmuError> {
        let active = self.active_gerror();
        if active & GERROR_CMDQ_ERR != 0 {
            let err = self.skip_failed_command();
            self.sync()?;
            return Err(err);
        }
        if active != 0 {
            self.ack_gerror(active);
            return Err(SmmuError::Global { active });
        }
        Ok(())
    }

    fn check_sid(&self, sid: u32) -> Result<(), SmmuError> {
        let bits = self.strtab.sid_bits();
        if bits < 32 && sid >> bits != 0 {
            return Err(SmmuError::StreamId { sid, sid_bits: bits });
        }
        Ok(())
    }

    /// The STE's address, if its table exists.
    fn ste_addr(&self, sid: u32) -> Option<u64> {
        match &self.strtab {
            StreamTable::Linear { base, .. } => Some(base + u64::from(sid) * STE_SIZE),
            StreamTable::TwoLevel { l2, .. } => {
                let table = (*l2.get((sid >> STRTAB_SPLIT) as usize)?)?;
                Some(table + u64::from(sid & ((1 << STRTAB_SPLIT) - 1)) * STE_SIZE)
            }
        }
    }

    /// The STE's address, allocating and publishing its level-2 table first if needed.
    fn ste_addr_alloc<F: FrameAllocator + ?Sized>(
        &mut self,
        sid: u32,
        frames: &mut F,
    ) -> Result<u64, SmmuError> {
        if let Some(addr) = self.ste_addr(sid) {
            return Ok(addr);
        }
        let StreamTable::TwoLevel { l1, l2, sid_bits } = &mut self.strtab else {
            return Err(SmmuError::StreamId { sid, sid_bits: self.strtab.sid_bits() });
        };
        let index = (sid >> STRTAB_SPLIT) as usize;
        let (l1, sid_bits) = (*l1, *sid_bits);
        let slot = l2.get_mut(index).ok_or(SmmuError::StreamId { sid, sid_bits })?;
        let table = alloc(frames, l2_table_bytes(), "level-2 stream table")?;
        *slot = Some(table.start);
        // Zeroed STEs (invalid) visible before the descriptor that points at them.
        self.io.barrier();
        self.io.mem_write64(l1 + 8 * index as u64, l1_descriptor(table.start, STRTAB_SPLIT));
        self.io.barrier();
        self.push(Command::CfgiSteRange {
            sid: (index as u32) << STRTAB_SPLIT,
            range: (STRTAB_SPLIT - 1) as u8,
        })?;
        self.ste_addr(sid).ok_or(SmmuError::StreamId { sid, sid_bits })
    }

    /// Writes one command at PROD (publishing and waiting for space when the queue is full).
    fn push(&mut self, cmd: Command) -> Result<(), SmmuError> {
        self.push_words(cmd.encode())
    }

    fn push_words(&mut self, words: [u64; 2]) -> Result<(), SmmuError> {
        let q = self.cmdq.shape;
        let mut polls = 0;
        while q.is_full(self.cmdq.ptr, self.cmdq_cons) {
            self.publish();
            if self.active_gerror() & GERROR_CMDQ_ERR != 0 {
                let err = self.skip_failed_command();
                self.pending.get_or_insert(err);
            }
            self.cmdq_cons = q.pointer(self.io.read32(CMDQ_CONS));
            polls += 1;
            if polls > self.poll_limit {
                return Err(SmmuError::Timeout(WaitFor::CommandQueueSpace));
            }
        }
        let entry = self.cmdq.base + u64::from(q.index(self.cmdq.ptr)) * CMD_SIZE;
        self.io.mem_write64(entry, words[0]);
        self.io.mem_write64(entry + 8, words[1]);
        self.cmdq.ptr = q.next(self.cmdq.ptr);
        Ok(())
    }

    /// Makes the commands written so far visible, then moves PROD.
    fn publish(&self) {
        self.io.barrier();
        self.io.write32(CMDQ_PROD, self.cmdq.ptr);
    }

    /// Issues CMD_SYNC and waits (bounded) until the SMMU has consumed everything up to it.
    pub fn sync(&mut self) -> Result<(), SmmuError> {
        self.push(Command::Sync)?;
        self.publish();
        let q = self.cmdq.shape;
        let mut first_error = self.pending.take();
        for _ in 0..self.poll_limit {
            let active = self.active_gerror();
            if active & GERROR_CMDQ_ERR != 0 {
                let err = self.skip_failed_command();
                first_error.get_or_insert(err);
                continue;
            }
            if active & GERROR_SFM_ERR != 0 {
                return Err(first_error.unwrap_or(SmmuError::Global { active }));
            }
            if active != 0 {
                // An event-queue write abort (or an MSI or PRI queue error) does not stop the
                // command queue (IHI0070: CMDQ_ERR stops it, SFM_ERR stops all): failing the sync for it would let any device
                // that floods the event queue with faults make warden's handoffs and
                // invalidations fail. Acknowledge, report with the next drain, keep waiting.
                self.ack_gerror(active);
                self.global_errors |= active;
            }
            let cons = q.pointer(self.io.read32(CMDQ_CONS));
            self.cmdq_cons = cons;
            if q.is_empty(self.cmdq.ptr, cons) {
                return first_error.map_or(Ok(()), Err);
            }
            core::hint::spin_loop();
        }
        Err(first_error
            .unwrap_or(SmmuError::SyncTimeout { prod: self.cmdq.ptr, cons: self.cmdq_cons }))
    }

    fn active_gerror(&self) -> u32 {
        (self.io.read32(GERROR) ^ self.io.read32(GERRORN)) & GERROR_MASK
    }

    fn ack_gerror(&self, bits: u32) {
        let ackable = bits & !GERROR_SFM_ERR;
        if ackable != 0 {
            self.io.write32(GERRORN, self.io.read32(GERRORN) ^ ackable);
        }
    }

    /// Reports the command at CMDQ_CONS, replaces it with CMD_SYNC, acknowledges CMDQ_ERR.
    fn skip_failed_command(&mut self) -> SmmuError {
        let q = self.cmdq.shape;
        let cons_reg = self.io.read32(CMDQ_CONS);
        let code = ((cons_reg >> CMDQ_CONS_ERR_SHIFT) & CMDQ_CONS_ERR_MASK) as u8;
        let index = q.index(cons_reg);
        let entry = self.cmdq.base + u64::from(index) * CMD_SIZE;
        let command = [self.io.mem_read64(entry), self.io.mem_read64(entry + 8)];
        let nop = Command::Sync.encode();
        self.io.mem_write64(entry, nop[0]);
        self.io.mem_write64(entry + 8, nop[1]);
        self.io.barrier();
        self.ack_gerror(GERROR_CMDQ_ERR);
        SmmuError::Command { code: CommandErrorCode(code), index, command }
    }
}

fn l2_table_bytes() -> u64 {
    STE_SIZE << STRTAB_SPLIT
}

/// Polls `done` up to `limit` times.
fn poll(limit: u32, mut done: impl FnMut() -> bool) -> Option<()> {
    for _ in 0..limit {
        if done() {
            return Some(());
        }
        core::hint::spin_loop();
    }
    None
}

/// Writes CR0 and waits for CR0ACK to match.
fn write_cr0<M: SmmuIo + ?Sized>(io: &M, value: u32, limit: u32) -> Result<(), SmmuError> {
    io.write32(CR0, value);
    poll(limit, || io.read32(CR0ACK) == value).ok_or(SmmuError::Timeout(WaitFor::Cr0Ack(value)))
}
