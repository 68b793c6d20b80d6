//! A recording [`Platform`] and EL3 model for host tests.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, Ordering};

use spin::Mutex;
use warden_abi::AbiError;
use warden_abi::handoff::{Caller, Owner, Request};
use warden_abi::peer::PeerCommand;
use warden_abi::{psci, smccc};

use super::Platform;
use super::inject::{El1ExceptionRegs, El1Features, HostEl1};
use super::s1walk::El1Regime;
use super::scm::{Refused, ScmHost};
use crate::boards::{Board, Firmware, ViolationPolicy};
use crate::handoff::assign::{AssignError, AssignOutcome, Holders};

/// EL3 firmware model shared by all fake CPUs: records every SMC and answers like QEMU's
/// built-in PSCI (PSCI 1.1, everything succeeds, CPUs report OFF to AFFINITY_INFO).
pub struct FakeEl3 {
    calls: Mutex<Vec<[u64; 4]>>,
    fail_next: Mutex<Option<i64>>,
    power_off: Mutex<Vec<u32>>,
    suspend_features: AtomicI64,
}

impl FakeEl3 {
    pub fn qemu() -> Self {
        FakeEl3 {
            calls: Mutex::new(Vec::new()),
            fail_next: Mutex::new(None),
            power_off: Mutex::new(Vec::new()),
            suspend_features: AtomicI64::new(0),
        }
    }

    /// Every SMC so far, in order.
    pub fn calls(&self) -> Vec<[u64; 4]> {
        self.calls.lock().clone()
    }

    /// The next call returns `status` in x0.
    pub fn fail_next(&self, status: i64) {
        *self.fail_next.lock() = Some(status);
    }

    /// Calls with this ID do not return (the CPU powered off): the fake panics, which a test
    /// catches to look at the state left behind.
    pub fn power_off_on(&self, function_id: u32) {
        self.power_off.lock().push(function_id);
    }

    /// Answer to PSCI_FEATURES(CPU_SUSPEND).
    pub fn set_suspend_features(&self, value: i64) {
        self.suspend_features.store(value, Ordering::Relaxed);
    }

    pub fn smc(&self, args: [u64; 4]) -> [u64; 4] {
        self.calls.lock().push(args);
        let fid = args[0] as u32;
        if self.power_off.lock().contains(&fid) {
            panic!("fake EL3: CPU powered off by {fid:#x}");
        }
        if let Some(status) = self.fail_next.lock().take() {
            return [status as u64, 0, 0, 0];
        }
        let x0: i64 = match fid {
            psci::PSCI_VERSION => 0x1_0001,
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => psci::AFFINITY_OFF,
            psci::MIGRATE_INFO_TYPE => 2,
            psci::PSCI_FEATURES => match args[1] as u32 {
                psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => {
                    self.suspend_features.load(Ordering::Relaxed)
                }
                _ => psci::SUCCESS,
            },
            f if smccc::owner(f) == smccc::OWNER_STANDARD => psci::SUCCESS,
            // SMCCC firmware: arch calls it knows succeed, everything else is unknown.
            smccc::SMCCC_ARCH_FEATURES | 0x8000_8000 | 0x8000_7FFF | 0x8000_3FFF => 0,
            _ => smccc::NOT_SUPPORTED,
        };
        // Junk in x1..x3 that must never reach the host.
        [x0 as u64, 0xbad0_bad1, 0xbad0_bad2, 0xbad0_bad3]
    }
}

/// One CPU's view of the platform.
pub struct FakePlatform {
    pub cpu: usize,
    pub board: Board,
    pub host_el1: HostEl1,
    /// Every `write_host_el1_exception`, in order.
    pub el1_writes: Vec<El1ExceptionRegs>,
    /// For each `before_system_power_down`: how many EL3 calls had been made at that moment.
    pub power_down_notices: Vec<usize>,
    pub el3: Arc<FakeEl3>,
    /// Who [`Platform::caller`] says trapped.
    pub caller: Caller,
    /// What [`Platform::owner_of`] answers for every address.
    pub owner: Owner,
    /// Every carveout request passed on, and the reply given to all of them.
    pub handoff_requests: Vec<(Caller, Request)>,
    pub handoff_reply: Result<[u64; 8], AbiError>,
    /// Whether [`Platform::peer_commands_available`] says there is a simulated peer.
    pub peer_available: bool,
    /// Every `PEER_COMMAND` passed on, and the reply given to all of them.
    pub peer_commands: Vec<PeerCommand>,
    pub peer_reply: Result<u64, AbiError>,
    /// `PEER_DONE` calls seen.
    pub peer_done: usize,
    /// What [`Platform::persona`] answers.
    pub persona: crate::persona::Persona,
    /// What [`Platform::smmu_stats`] answers.
    pub smmu_stats: Option<warden_abi::stats::SmmuStats>,
    /// Host memory [`Platform::read_host_u64`] answers from (address → word).
    pub host_words: alloc::collections::BTreeMap<u64, u64>,
    /// The virtual SMMU frames [`Platform::vsmmu_frames`] reports.
    pub vsmmu_frames: Option<crate::mm::MemRange>,
    /// Every virtual SMMU access: (offset, size, written value or `None` for a load).
    pub vsmmu_accesses: Vec<(u32, u8, Option<u64>)>,
    /// What every virtual SMMU load returns.
    pub vsmmu_value: u64,
    /// The GIC frames [`Platform::gic_frame`] looks addresses up in.
    pub gic_layout: Option<crate::gic::GicLayout>,
    /// Every GIC frame access: (frame, offset, size, written value or `None` for a load).
    pub gic_accesses: Vec<(crate::gic::GicFrame, u32, u8, Option<u64>)>,
    /// What every GIC frame load returns.
    pub gic_value: u64,
    /// Host memory [`super::scm::ScmHost::read_host`] copies from (address → bytes).
    pub host_bytes: alloc::collections::BTreeMap<u64, Vec<u8>>,
    /// Every assignment passed on, and the reply given to all of them.
    pub assigns: Vec<(crate::mm::MemRange, Holders, Holders)>,
    pub assign_reply: Result<AssignOutcome, AssignError>,
    /// What the caller's stage-2 maps now, for [`Platform::stage2_allows`].
    pub stage2: Vec<(crate::mm::MemRange, crate::mm::Perms)>,
    /// Every [`Platform::stage2_allows`] question: (IPA, permission needed).
    pub stage2_queries: Mutex<Vec<(u64, crate::mm::Perms)>>,
}

impl FakePlatform {
    pub const SECONDARY_ENTRY: u64 = 0x7000_1000;
    /// warden's memory, inside the RAM range but not host RAM.
    pub const WARDEN_BASE: u64 = 0x7000_0000;
    pub const WARDEN_SIZE: u64 = 0x0100_0000;
    pub const RAM_BASE: u64 = 0x4000_0000;
    pub const RAM_SIZE: u64 = 0x4000_0000;
    pub const HOST_VBAR: u64 = 0xffff_8000_1001_0800;
    /// What [`Platform::counter`] reads.
    pub const COUNTER: u64 = 0x1234_5678;

    /// CPU `cpu` on QEMU virt's board (built-in PSCI, Contain), host with FEAT_PAN and
    /// SCTLR_EL1.SPAN = 0 (as Linux sets it).
    pub fn new(cpu: usize, el3: Arc<FakeEl3>) -> Self {
        FakePlatform {
            cpu,
            board: Board {
                name: "fake",
                entry: crate::boards::EntryConvention::LinuxImage,
                ram_source: crate::boards::RamSource::Dt,
                early_uart: 0x0900_0000,
                console: crate::boards::UartKind::Pl011,
                iommu: crate::boards::Iommu::SmmuV3,
                named_regions: &[],
                firmware: Firmware::QemuBuiltinPsci,
                violation_policy: ViolationPolicy::Contain,
                sim_peer: false,
                control_page: None,
                scm_firmware: false,
                interrupt_controllers: &[crate::gic::GicVersion::V3],
                max_cpus: 8,
            },
            host_el1: HostEl1 {
                vbar: Self::HOST_VBAR,
                sctlr: 0,
                features: El1Features { pan: true, ..El1Features::default() },
                regime: El1Regime::default(),
            },
            el1_writes: Vec::new(),
            power_down_notices: Vec::new(),
            el3,
            caller: Caller::Host,
            owner: Owner::Unknown,
            handoff_requests: Vec::new(),
            handoff_reply: Err(AbiError::Aborted),
            peer_available: true,
            peer_commands: Vec::new(),
            peer_reply: Err(AbiError::Aborted),
            peer_done: 0,
            persona: crate::persona::Persona::Virt,
            smmu_stats: None,
            host_words: alloc::collections::BTreeMap::new(),
            vsmmu_frames: None,
            vsmmu_accesses: Vec::new(),
            vsmmu_value: 0,
            gic_layout: None,
            gic_accesses: Vec::new(),
            gic_value: 0,
            stage2: Vec::new(),
            host_bytes: alloc::collections::BTreeMap::new(),
            assigns: Vec::new(),
            assign_reply: Err(AssignError::Aborted),
            stage2_queries: Mutex::new(Vec::new()),
        }
    }

    /// The per-CPU context the fake hands EL3 for `cpu_index`.
    pub const fn context_for(cpu_index: usize) -> u64 {
        0x7080_0000 + cpu_index as u64 * 0x1000
    }
}

/// Host memory is whatever `host_bytes` holds: a read must lie inside one stored buffer.
impl ScmHost for FakePlatform {
    fn read_host(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused> {
        let (&base, bytes) = self.host_bytes.range(..=ipa).next_back().ok_or(Refused)?;
        let at = usize::try_from(ipa - base).map_err(|_| Refused)?;
        let src = bytes.get(at..at.checked_add(buf.len()).ok_or(Refused)?).ok_or(Refused)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn assign(
        &mut self,
        range: crate::mm::MemRange,
        from: Holders,
        to: Holders,
        _forward: Option<&super::scm::forward::ForwardedAssign>,
    ) -> Result<AssignOutcome, AssignError> {
        self.assigns.push((range, from, to));
        self.assign_reply
    }
    fn holders(
        &self,
        _range: crate::mm::MemRange,
        _peer: crate::mm::ownership::PeerId,
    ) -> Result<Holders, AssignError> {
        Ok(Holders::HOST)
    }
    fn can_forward(&self) -> bool {
        false
    }
    fn forward(&mut self, _call: &super::scm::ScmCall) -> Option<[u64; 4]> {
        None
    }
    fn forward_holding(
        &mut self,
        _call: &super::scm::ScmCall,
        _held: &super::scm::policy::heapless_ranges::Ranges,
    ) -> Result<Option<[u64; 4]>, Refused> {
        Ok(None)
    }
    fn host_maps_register(&self, _pa: u64, _write: bool) -> bool {
        false
    }
    fn firmware_may_take(&self, _range: crate::mm::MemRange) -> bool {
        false
    }
    fn pas_region(&self, _peer: crate::mm::ownership::PeerId) -> Option<crate::mm::MemRange> {
        None
    }
    fn set_pas_region(
        &mut self,
        _peer: crate::mm::ownership::PeerId,
        _region: Option<crate::mm::MemRange>,
    ) {
    }
}

impl Platform for FakePlatform {
    fn cpu_index(&self) -> usize {
        self.cpu
    }
    fn board(&self) -> Board {
        self.board
    }
    fn host_el1(&self) -> HostEl1 {
        self.host_el1
    }
    fn write_host_el1_exception(&mut self, regs: &El1ExceptionRegs) {
        self.el1_writes.push(*regs);
    }
    fn smc_to_el3(&mut self, args: [u64; 4]) -> [u64; 4] {
        self.el3.smc(args)
    }
    fn el3_entry(&self, host_entry: u64) -> u64 {
        match self.board.entry {
            crate::boards::EntryConvention::LinuxImage
            | crate::boards::EntryConvention::UefiUnderGunyah { .. } => Self::SECONDARY_ENTRY,
            crate::boards::EntryConvention::Hyp { .. } => host_entry,
        }
    }
    fn secondary_context(&self, cpu_index: usize) -> u64 {
        Self::context_for(cpu_index)
    }
    fn is_host_ram(&self, addr: u64) -> bool {
        let in_ram = addr >= Self::RAM_BASE && addr - Self::RAM_BASE < Self::RAM_SIZE;
        let in_warden = addr >= Self::WARDEN_BASE && addr - Self::WARDEN_BASE < Self::WARDEN_SIZE;
        in_ram && !in_warden
    }
    fn read_host_u64(&self, ipa: u64) -> Option<u64> {
        self.host_words.get(&ipa).copied()
    }
    fn before_system_power_down(&mut self) {
        self.power_down_notices.push(self.el3.calls().len());
    }
    fn owner_of(&self, _ipa: u64) -> Owner {
        self.owner
    }
    fn stage2_allows(&self, ipa: u64, needed: crate::mm::Perms) -> bool {
        self.stage2_queries.lock().push((ipa, needed));
        self.stage2.iter().any(|(range, perms)| {
            range.contains(ipa)
                && (!needed.read || perms.read)
                && (!needed.write || perms.write)
                && (!needed.exec || perms.exec)
        })
    }
    fn caller(&self) -> Caller {
        self.caller
    }
    fn handoff(&mut self, caller: Caller, request: &Request) -> Result<[u64; 8], AbiError> {
        self.handoff_requests.push((caller, *request));
        self.handoff_reply
    }
    fn peer_commands_available(&self) -> bool {
        self.peer_available
    }
    fn peer_command(&mut self, command: &PeerCommand) -> Result<u64, AbiError> {
        self.peer_commands.push(*command);
        self.peer_reply
    }
    fn peer_done(&mut self) {
        self.peer_done += 1;
    }
    fn counter(&self) -> u64 {
        Self::COUNTER
    }
    fn smmu_stats(&self) -> Option<warden_abi::stats::SmmuStats> {
        self.smmu_stats
    }
    fn persona(&self) -> crate::persona::Persona {
        self.persona
    }
    fn vsmmu_frames(&self) -> Option<crate::mm::MemRange> {
        self.vsmmu_frames
    }
    fn vsmmu_read(&mut self, offset: u32, size: u8) -> u64 {
        self.vsmmu_accesses.push((offset, size, None));
        self.vsmmu_value
    }
    fn vsmmu_write(&mut self, offset: u32, size: u8, value: u64) {
        self.vsmmu_accesses.push((offset, size, Some(value)));
    }
    fn gic_frame(&self, ipa: u64) -> Option<(crate::gic::GicFrame, u32)> {
        self.gic_layout.as_ref().and_then(|l| l.lookup(ipa))
    }
    fn gic_read(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8) -> u64 {
        self.gic_accesses.push((frame, offset, size, None));
        self.gic_value
    }
    fn gic_write(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8, value: u64) {
        self.gic_accesses.push((frame, offset, size, Some(value)));
    }
}
