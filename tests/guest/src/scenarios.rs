//! The scenarios. Each returns `Ok` or a reason, and each is bounded in time.

use core::arch::asm;
use core::fmt;

use warden_abi::{hyp, psci, smccc as ids};

use crate::console::println;
use crate::cpu;
use crate::edu::{self, DmaPage, Edu, RESULT_PAGE, SOURCE_PAGE};
use crate::entry::secondary_entry;
use crate::exceptions::{self, Caught, VECTOR_SYNC_CURRENT_SPX};
use crate::gic_hostile;
use crate::handoff;
use crate::handoff_scenarios;
use crate::handoff_stress;
use crate::mmu500_scenarios;
use crate::peer_scenarios;
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail, record};
use crate::scm_scenarios;
use crate::secondary;
use crate::smccc::{self, Conduit};
use crate::vsmmu_donate;
use crate::vsmmu_hostile;
use crate::vsmmu_scenarios;
use crate::vsmmu_shadow;

/// ESR_ELx.EC values.
const EC_UNKNOWN: u64 = 0x00;
const EC_DATA_ABORT_CURRENT_EL: u64 = 0x25;
/// ESR_ELx.ISS.DFSC of a synchronous external abort (not on a table walk).
const DFSC_SYNC_EXTERNAL_ABORT: u64 = 0x10;
const ESR_DFSC_MASK: u64 = 0x3f;
const ESR_WNR: u64 = 1 << 6;

/// How long another CPU gets to report in or to be seen off (QEMU TCG on a loaded host is
/// slow; a working run needs a few milliseconds).
const CPU_TIMEOUT_MS: u64 = 5000;
/// Slot (stack, mailbox) the secondary CPU under test uses.
const SECONDARY_SLOT: u8 = 1;

/// Runs the carveout handoff scenarios only (`warden.scenarios=handoff` on the command line:
/// `cargo xtask test`'s `small-ram` run, which checks the board placed its carveouts inside a
/// smaller RAM and the handoff works there), after `runs_at_el1` passed.
pub fn run_handoff(platform: &Platform) {
    record_handoff("carveouts_listed", handoff_scenarios::carveouts_listed());
    record_handoff("donate_then_peer_checksum", handoff_scenarios::donate_then_peer_checksum());
    record_handoff(
        "host_read_after_donate_aborts",
        handoff_scenarios::host_read_after_donate_aborts(),
    );
    record_handoff("reclaim_with_clear_zeroes", handoff_scenarios::reclaim_modem(true));
    record_handoff(
        "dsp_lend_scrubbed_on_reclaim",
        handoff_scenarios::dsp_lend_scrubbed_on_reclaim(),
    );
    record_handoff(
        "bad_requests_change_nothing",
        handoff_scenarios::bad_requests_change_nothing(platform),
    );
    record_handoff("peer_own_pages_refused", peer_scenarios::peer_own_pages_refused());
}

/// The board checks (`warden.scenarios=platform`: `cargo xtask test`'s `many-cpus` and
/// `guest-gicv2` runs), then the carveout handoff scenarios, after `runs_at_el1` passed.
pub fn run_platform(platform: &Platform) {
    record("all_cpus_on", all_cpus_on(platform));
    if platform.gicv2.is_some() {
        record("gicv2_frames", gicv2_frames(platform));
    }
    run_handoff(platform);
}

/// Scenario `all_cpus_on`: every other CPU of the DT, one after the other, powered on (it
/// reports in at EL1 with its own MPIDR and context id) and off again. With more CPUs than
/// warden's old fixed limit of 8, this is what a board's CPU count must carry.
fn all_cpus_on(platform: &Platform) -> Outcome {
    let conduit = psci_conduit(platform)?;
    let own = cpu::mpidr_affinity();
    let Some(mailbox) = secondary::mailbox(usize::from(SECONDARY_SLOT)) else {
        fail!("no mailbox for slot {SECONDARY_SLOT}");
    };
    let mut started = 0;
    for (i, &target) in dt_cpus(platform)?.iter().enumerate() {
        if target == own {
            continue;
        }
        let round = u8::try_from(i).unwrap_or(u8::MAX);
        cpu_on_and_off(conduit, target, round, mailbox)
            .map_err(|why| Reason::new(format_args!("CPU {target:#x}: {why}")))?;
        started += 1;
    }
    if started == 0 {
        fail!("the DT lists no CPU other than this one ({own:#x})");
    }
    crate::console::println!("guest: note all_cpus_on: {started} CPU(s) on and off, one at a time");
    Ok(())
}

/// QEMU virt's GICv2 virtualization frames (fixed in its memory map): the hypervisor's
/// control interface (GICH) and the virtual CPU interface (GICV).
const QEMU_VIRT_GICH: u64 = 0x0803_0000;
const QEMU_VIRT_GICV: u64 = 0x0804_0000;
/// GICC_IIDR: the CPU interface's implementer register.
const GICC_IIDR: u64 = 0xfc;

/// Scenario `gicv2_frames`: the host's GICv2 node lists GICD and GICC only (no GICH/GICV, no
/// maintenance interrupt); GICC answers; GICH and GICV, which QEMU's virt board has, are
/// contained (not in the host's stage 2).
fn gicv2_frames(platform: &Platform) -> Outcome {
    let Some(gic) = platform.gicv2 else { fail!("no arm,cortex-a15-gic node in the DT") };
    if gic.reg_entries != 2 {
        fail!("the GICv2 node has {} reg entries, expected 2 (GICD, GICC)", gic.reg_entries);
    }
    if gic.maintenance_interrupt {
        fail!("the GICv2 node still names the maintenance interrupt (`interrupts`)");
    }
    let iidr_address = gic.cpu_interface + GICC_IIDR;
    let (iidr, caught) = exceptions::catch(|| {
        // SAFETY: GICC_IIDR is a read-only register of the GICC frame the DT gives the host;
        // an abort is caught by the armed probe.
        unsafe { core::ptr::read_volatile(iidr_address as *const u32) }
    });
    if let Some(c) = caught {
        fail!("GICC_IIDR at {iidr_address:#x} aborted (ESR {:#x})", c.esr);
    }
    if iidr == 0 {
        fail!("GICC_IIDR at {iidr_address:#x} reads 0");
    }
    for (name, frame) in [("GICH", QEMU_VIRT_GICH), ("GICV", QEMU_VIRT_GICV)] {
        check_contained(frame, Access::Read)
            .map_err(|why| Reason::new(format_args!("{name}: {why}")))?;
    }
    Ok(())
}

/// One CPU_ON of `target` with `round` in the context id: it must report in at EL1 with its
/// MPIDR and that context, then be OFF (it powers itself off) within the timeout.
fn cpu_on_and_off(
    conduit: Conduit,
    target: u64,
    round: u8,
    mailbox: &secondary::Mailbox,
) -> Outcome {
    let context = secondary::context_id(round, SECONDARY_SLOT);
    mailbox.clear();
    let status = smccc::cpu_on(conduit, target, secondary_entry_address(), context);
    if status != psci::SUCCESS {
        fail!("CPU_ON returned {status}");
    }
    if !cpu::wait_until(CPU_TIMEOUT_MS, || mailbox.context.load() != 0) {
        fail!("did not report within {CPU_TIMEOUT_MS} ms");
    }
    let (seen_context, el, mpidr) =
        (mailbox.context.load(), mailbox.el.load(), mailbox.mpidr.load());
    if seen_context != context {
        fail!("got x0 {seen_context:#x}, expected {context:#x}");
    }
    if el != 1 {
        fail!("runs at EL{el}, expected EL1");
    }
    if mpidr != target {
        fail!("has MPIDR {mpidr:#x}, expected {target:#x}");
    }
    let mut state = 0;
    let off = cpu::wait_until(CPU_TIMEOUT_MS, || {
        state = smccc::affinity_info(conduit, target);
        state == psci::AFFINITY_OFF
    });
    if !off {
        if mailbox.cpu_off_returned.load() == 1 {
            fail!("CPU_OFF returned {}", mailbox.cpu_off_status.load() as i64);
        }
        fail!("AFFINITY_INFO is {state} after {CPU_TIMEOUT_MS} ms, expected 1 (OFF)");
    }
    Ok(())
}

/// On the Snapdragon persona (`warden.persona=snapdragon`: an `arm,mmu-500` in the DT instead
/// of the SMMUv3): the MMU-500 scenarios, after `runs_at_el1` passed.
pub fn run_snapdragon(platform: &Platform) {
    let edu = Edu::set_up(platform);
    record("warden_abi_version", warden_abi_version());
    record(
        "mmu500_bypass_stream_dma_works",
        mmu500_scenarios::bypass_stream_dma_works(platform, &edu),
    );
    record(
        "mmu500_fastrpc_session_reuse_is_flushed",
        mmu500_scenarios::fastrpc_session_reuse_is_flushed(platform, &edu),
    );
    record(
        "mmu500_fastrpc_session_reuse_without_g3_reads_stale",
        mmu500_scenarios::fastrpc_session_reuse_without_g3_reads_stale(platform, &edu),
    );
    record("mmu500_hostile_host", mmu500_scenarios::hostile_host(platform, &edu));
    record_handoff("scm_exclusive_assign", scm_scenarios::exclusive_assign());
    record_handoff("scm_share_then_unshare", scm_scenarios::share_then_unshare());
    let warden = match &platform.warden_regions {
        Ok(regions) => regions.as_slice().first().map(|r| (r.base, r.size)),
        Err(_) => None,
    };
    record_handoff(
        "scm_bad_inputs_change_nothing",
        scm_scenarios::bad_inputs_change_nothing(warden),
    );
}

/// The chain's scenarios (`cargo xtask test`'s `guest-chain`: tz-sim → warden entered as the
/// hyp image → this guest, entered with no DT), after `runs_at_el1` passed: warden's ABI, its
/// memory out of reach, PSCI through warden and TrustZone (every CPU on and off, the errors),
/// the carveouts the OS's DT names (the handoff scenarios need the simulated peer, which that
/// board does not run), and DMA through the virtual SMMU.
pub fn run_chain(platform: &Platform) {
    record("warden_abi_version", warden_abi_version());
    record("unknown_hvc_returns_not_supported", unknown_calls_return_not_supported());
    record("warden_memory_read_aborts", warden_memory_read_aborts(platform));
    record("secondary_cpu_on", secondary_cpu_on(platform));
    record("all_cpus_on", all_cpus_on(platform));
    record("psci_cpu_on_errors", psci_cpu_on_errors(platform));
    record("psci_version", psci_version(platform));
    record_handoff("carveouts_listed", handoff_scenarios::carveouts_listed());
    let edu = Edu::set_up(platform);
    record("edu_dma_works", edu_dma_works(&edu));
    record("edu_dma_into_warden_refused", edu_dma_into_warden_refused(platform, &edu));
    record("vsmmu_stage1_dma_works", vsmmu_scenarios::stage1_dma_works(platform, &edu));
    record("scm_assign_reaches_tz", scm_scenarios::assign_reaches_tz());
}

/// Runs every scenario after `runs_at_el1` passed.
pub fn run_all(platform: &Platform) {
    record("warden_abi_version", warden_abi_version());
    record("unknown_hvc_returns_not_supported", unknown_calls_return_not_supported());
    record("warden_memory_read_aborts", warden_memory_read_aborts(platform));
    record("secondary_cpu_on", secondary_cpu_on(platform));
    record("psci_cpu_on_errors", psci_cpu_on_errors(platform));
    record("psci_version", psci_version(platform));
    record_handoff("carveouts_listed", handoff_scenarios::carveouts_listed());
    record_handoff("donate_then_peer_checksum", handoff_scenarios::donate_then_peer_checksum());
    record_handoff(
        "host_read_after_donate_aborts",
        handoff_scenarios::host_read_after_donate_aborts(),
    );
    record_handoff("reclaim_without_clear_keeps_data", handoff_scenarios::reclaim_modem(false));
    record_handoff("reclaim_with_clear_zeroes", handoff_scenarios::reclaim_modem(true));
    record_handoff(
        "dsp_lend_scrubbed_on_reclaim",
        handoff_scenarios::dsp_lend_scrubbed_on_reclaim(),
    );
    record_handoff(
        "bad_requests_change_nothing",
        handoff_scenarios::bad_requests_change_nothing(platform),
    );
    record_handoff(
        "two_cpus_hammer_carveouts",
        handoff_scenarios::two_cpus_hammer_carveouts(platform),
    );
    record_handoff("peer_own_pages_refused", peer_scenarios::peer_own_pages_refused());
    record_handoff("hung_peer_is_stopped", peer_scenarios::hung_peer_is_stopped());
    record_handoff(
        "peer_write_after_release_refused",
        handoff_stress::peer_write_after_release_refused(),
    );
    // Last: should a DMA into warden's memory land, everything else has reported already.
    let edu = Edu::set_up(platform);
    record("edu_dma_works", edu_dma_works(&edu));
    record("edu_dma_into_warden_refused", edu_dma_into_warden_refused(platform, &edu));
    // The virtual SMMU with a stage-1 context (each leaves edu's stream in bypass).
    record("vsmmu_stage1_dma_works", vsmmu_scenarios::stage1_dma_works(platform, &edu));
    record_handoff(
        "vsmmu_stage1_into_carveout_faults",
        vsmmu_scenarios::stage1_into_carveout_faults(platform, &edu),
    );
    record_handoff(
        "vsmmu_donate_after_stage1_dma_faults",
        vsmmu_donate::donate_after_stage1_dma_faults(platform, &edu),
    );
    record("vsmmu_stale_asid_is_flushed", vsmmu_scenarios::stale_asid_is_flushed(platform, &edu));
    record(
        "vsmmu_stale_asid_without_g3_reads_stale",
        vsmmu_scenarios::stale_asid_without_g3_reads_stale(platform, &edu),
    );
    // Shadow CDs and warden's ASIDs: a second edu for a second stream.
    let second_edu = Edu::set_up_second(platform);
    record(
        "vsmmu_same_asid_two_streams",
        vsmmu_shadow::same_asid_two_streams(platform, &edu, &second_edu),
    );
    record(
        "vsmmu_cd_rewrite_needs_cfgi_cd",
        vsmmu_shadow::cd_rewrite_needs_cfgi_cd(platform, &edu),
    );
    record("vsmmu_stall_cd_refused", vsmmu_shadow::stall_cd_refused(platform, &edu));
    record_handoff("vsmmu_hostile_tables", vsmmu_scenarios::hostile_tables(platform, &edu));
    record("vsmmu_hostile_prod", vsmmu_hostile::hostile_prod(platform, &edu));
    record_handoff("vsmmu_hostile_gbpa", vsmmu_hostile::hostile_gbpa(platform, &edu));
    record_handoff("vsmmu_hostile_ste", vsmmu_hostile::hostile_ste(platform, &edu));
    record_handoff("vsmmu_cd_in_carveout", vsmmu_hostile::cd_in_carveout(platform, &edu));
    record("vsmmu_cmd_sync_flood", vsmmu_hostile::cmd_sync_flood(platform, &edu));
    // DMA masters outside the SMMU (without warden's containment these write warden's memory
    // and a donated page: last, like the edu DMA into warden's memory).
    record_handoff("its_tables_hostile", gic_hostile::its_tables_hostile(platform));
    record_handoff("gicr_tables_hostile", gic_hostile::gicr_tables_hostile(platform));
    record_handoff("fw_cfg_dma_contained", gic_hostile::fw_cfg_dma_contained(platform));
}

/// The stress run (`warden.stress[=CYCLES]`, `cargo xtask test --only handoff-stress`,
/// `cargo xtask soak`): edu set up, then `carveout_neighbours_never_fault` with `cycles`, which
/// needs three host CPUs and minutes of QEMU time (an `Err`: the command line's count was bad).
pub fn run_stress(platform: &Platform, cycles: Result<u64, &'static str>) {
    const NAME: &str = "carveout_neighbours_never_fault";
    let cycles = match cycles {
        Ok(cycles) => cycles,
        Err(why) => return record(NAME, Err(Reason::new(format_args!("{why}")))),
    };
    let edu = Edu::set_up(platform);
    record_handoff(NAME, handoff_stress::carveout_neighbours_never_fault(platform, &edu, cycles));
}

/// Records a handoff scenario's outcome after putting both carveouts back to `Host`, so the
/// next one starts clean; a scenario that passed but left a carveout handed over fails.
fn record_handoff(name: &str, outcome: Outcome) {
    let restored = handoff::restore_all_host();
    let outcome = match (outcome, restored) {
        (Ok(()), Err(why)) => Err(Reason::new(format_args!("cleaning up afterwards: {why}"))),
        (Err(why), Err(cleanup)) => {
            println!("guest: note {name}: cleaning up after the failure: {cleanup}");
            Err(why)
        }
        (outcome, Ok(())) => outcome,
    };
    record(name, outcome);
}

/// Scenario `runs_at_el1`.
pub fn runs_at_el1() -> Outcome {
    match cpu::current_el() {
        1 => Ok(()),
        el => fail!("running at EL{el}, expected EL1 (started without warden at EL2?)"),
    }
}

struct Words([u64; 4]);

impl fmt::Display for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "[{a:#x}, {b:#x}, {c:#x}, {d:#x}]")
    }
}

/// An SMCCC call that must be answered: an exception instead (HVC/SMC UNDEFINED because no
/// EL2/EL3 implements it) becomes the failure reason.
fn answered_call(conduit: Conduit, function_id: u32, args: [u64; 3]) -> Result<[u64; 4], Reason> {
    match exceptions::catch(|| smccc::call(conduit, function_id, args)) {
        (regs, None) => Ok(regs),
        (_, Some(caught)) if caught.ec() == EC_UNKNOWN => Err(Reason::new(format_args!(
            "{conduit} {function_id:#010x}: no hypervisor answered ({conduit} is UNDEFINED: \
             ESR {:#x}, ELR {:#x})",
            caught.esr, caught.elr
        ))),
        (_, Some(caught)) => Err(Reason::new(format_args!(
            "{conduit} {function_id:#010x} raised an exception: ESR {:#x} (EC {:#x}), ELR {:#x}",
            caught.esr,
            caught.ec(),
            caught.elr
        ))),
    }
}

/// Scenario `warden_abi_version`.
fn warden_abi_version() -> Outcome {
    let version = answered_call(Conduit::Hvc, hyp::ABI_VERSION, [0; 3])?[0];
    if version as i64 == ids::NOT_SUPPORTED {
        fail!("ABI_VERSION returned -1 (NOT_SUPPORTED): what answered HVC is not warden");
    }
    if version != hyp::packed_version() {
        fail!("ABI_VERSION returned {version:#x}, expected {:#x}", hyp::packed_version());
    }
    let uid = answered_call(Conduit::Hvc, hyp::CALL_UID, [0; 3])?;
    let expected = hyp::UID.map(u64::from);
    if uid != expected {
        fail!("CALL_UID returned {}, expected {}", Words(uid), Words(expected));
    }
    Ok(())
}

/// IDs nobody implements: an unused vendor-hypervisor number (warden's own range) and an unused
/// number in the standard hypervisor service range (owner 5), through both conduits.
const UNKNOWN_CALLS: [(Conduit, u32); 4] = [
    (Conduit::Hvc, ids::fast_call(false, ids::OWNER_VENDOR_HYP, 0x1234)),
    (Conduit::Hvc, ids::fast_call(true, 5, 0x1234)),
    (Conduit::Smc, ids::fast_call(false, ids::OWNER_VENDOR_HYP, 0x1234)),
    (Conduit::Smc, ids::fast_call(true, 5, 0x1234)),
];

/// Scenario `unknown_hvc_returns_not_supported`.
fn unknown_calls_return_not_supported() -> Outcome {
    for (conduit, function_id) in UNKNOWN_CALLS {
        let x0 = answered_call(conduit, function_id, [0; 3])?[0];
        if x0 as i64 != ids::NOT_SUPPORTED {
            fail!("{conduit} {function_id:#010x} returned {x0:#x}, expected -1 (NOT_SUPPORTED)");
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// Value a write probe stores (only lands if containment is broken).
const PROBE_PATTERN: u32 = 0x5741_5244;

/// One 32-bit access to `address`; returns the address of the access instruction and the
/// value read (for a write: the value written).
fn probe_access(address: u64, access: Access) -> (u64, u32) {
    let instruction: u64;
    let mut value = PROBE_PATTERN;
    match access {
        // SAFETY: the access is to memory the guest does not own and expects to abort; the
        // abort is caught by the armed probe, which skips the instruction. The asm touches no
        // memory of the program's.
        Access::Read => unsafe {
            asm!("adr {insn}, 2f", "2: ldr {value:w}, [{address}]",
                insn = out(reg) instruction, value = inout(reg) value, address = in(reg) address,
                options(nostack))
        },
        // SAFETY: as for the read.
        Access::Write => unsafe {
            asm!("adr {insn}, 2f", "2: str {value:w}, [{address}]",
                insn = out(reg) instruction, value = in(reg) value, address = in(reg) address,
                options(nostack))
        },
    }
    (instruction, value)
}

/// One 32-bit `access` of `address` must take the synchronous external abort warden injects
/// (vector 0x200, EC 0x25, DFSC 0x10, WnR, FAR and ELR right). Returns the address of the
/// access instruction (the ELR warden records).
pub(crate) fn check_contained(address: u64, access: Access) -> Result<u64, Reason> {
    let ((instruction, value), caught) = exceptions::catch(|| probe_access(address, access));
    let Some(Caught { vector, esr, far, elr }) = caught else {
        fail!("{access} of {address:#x} completed without an abort (value {value:#x})");
    };
    let ec = (esr >> 26) & 0x3f;
    let dfsc = esr & ESR_DFSC_MASK;
    let wnr = esr & ESR_WNR != 0;
    if vector != VECTOR_SYNC_CURRENT_SPX {
        fail!("{access} abort arrived at vector offset {:#x}, expected 0x200", vector * 0x80);
    }
    if ec != EC_DATA_ABORT_CURRENT_EL {
        fail!("{access} of {address:#x}: ESR {esr:#x} has EC {ec:#x}, expected 0x25");
    }
    if dfsc != DFSC_SYNC_EXTERNAL_ABORT {
        fail!("{access} of {address:#x}: ESR {esr:#x} has DFSC {dfsc:#x}, expected 0x10");
    }
    if wnr != matches!(access, Access::Write) {
        fail!("{access} of {address:#x}: ESR {esr:#x} has WnR {}", u8::from(wnr));
    }
    if far != address {
        fail!("{access} of {address:#x}: FAR_EL1 {far:#x}");
    }
    if elr != instruction {
        fail!("{access} of {address:#x}: ELR_EL1 {elr:#x}, access instruction at {instruction:#x}");
    }
    Ok(instruction)
}

/// Scenario `warden_memory_read_aborts`.
fn warden_memory_read_aborts(platform: &Platform) -> Outcome {
    let regions = match &platform.warden_regions {
        Ok(regions) => regions,
        Err(why) => fail!("{why}"),
    };
    for region in regions.as_slice() {
        if !region.no_map {
            fail!(
                "reserved region {:#x} (+{:#x}) has no no-map property",
                region.base,
                region.size
            );
        }
        // A read first: if it is not contained, no write is attempted.
        check_contained(region.base, Access::Read)?;
        check_contained(region.base, Access::Write)?;
    }
    Ok(())
}

fn psci_conduit(platform: &Platform) -> Result<Conduit, Reason> {
    platform.psci.map_err(|why| Reason::new(format_args!("{why}")))
}

fn dt_cpus(platform: &Platform) -> Result<&[u64], Reason> {
    match &platform.cpus {
        Ok(cpus) => Ok(cpus.as_slice()),
        Err(why) => Err(Reason::new(format_args!("{why}"))),
    }
}

fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as usize as u64
}

/// Scenario `secondary_cpu_on`: two rounds of CPU_ON / report / CPU_OFF on the same CPU.
fn secondary_cpu_on(platform: &Platform) -> Outcome {
    let conduit = psci_conduit(platform)?;
    let own = cpu::mpidr_affinity();
    let Some(&target) = dt_cpus(platform)?.iter().find(|&&mpidr| mpidr != own) else {
        fail!("the DT lists no CPU other than this one ({own:#x})");
    };
    let Some(mailbox) = secondary::mailbox(usize::from(SECONDARY_SLOT)) else {
        fail!("no mailbox for slot {SECONDARY_SLOT}");
    };
    for round in 1..=2u8 {
        cpu_on_and_off(conduit, target, round, mailbox)
            .map_err(|why| Reason::new(format_args!("round {round}: CPU {target:#x} {why}")))?;
    }
    Ok(())
}

/// Scenario `psci_cpu_on_errors`.
fn psci_cpu_on_errors(platform: &Platform) -> Outcome {
    let conduit = psci_conduit(platform)?;
    let cpus = dt_cpus(platform)?;
    let own = cpu::mpidr_affinity();
    let Some(absent) =
        [0xff, 0xfe, 0xff_ff, 0xff_00ff_ffff].into_iter().find(|m| *m != own && !cpus.contains(m))
    else {
        fail!("found no MPIDR that is absent from the DT");
    };
    // Slot 0 in the context id: should a CPU start anyway, the entry code parks it.
    let context = secondary::context_id(0, 0);
    let status = smccc::cpu_on(conduit, absent, secondary_entry_address(), context);
    if status != psci::INVALID_PARAMETERS {
        fail!("CPU_ON of absent MPIDR {absent:#x} returned {status}, expected -2");
    }
    let status = smccc::cpu_on(conduit, own, secondary_entry_address(), context);
    if status != psci::ALREADY_ON {
        fail!("CPU_ON of the calling CPU {own:#x} returned {status}, expected -4 (ALREADY_ON)");
    }
    Ok(())
}

/// Scenario `psci_version`.
fn psci_version(platform: &Platform) -> Outcome {
    let version = smccc::psci_version(psci_conduit(platform)?);
    if version < 0 {
        fail!("PSCI_VERSION returned {version}");
    }
    if version < 0x1_0000 {
        fail!("PSCI version {}.{}, expected at least 1.0", version >> 16, version & 0xffff);
    }
    Ok(())
}

/// Word `index` of test pattern `seed`: never 0, and different for every seed and index.
fn pattern_word(seed: u64, index: usize) -> u64 {
    0x5741_5244_0000_0000 | (seed & 0xffff) << 16 | (index as u64 & 0xffff)
}

/// What RAM the device never wrote holds (a pattern seed no transfer uses).
const POISON_SEED: u64 = 0xdead;

fn edu_device(edu: &Result<Edu, Reason>) -> Result<&Edu, Reason> {
    edu.as_ref().map_err(|why| Reason::new(format_args!("{why}")))
}

/// The first word of `page[..words]` that differs from pattern `seed`: (index, value read).
fn first_mismatch(page: &DmaPage, words: usize, seed: u64) -> Option<(usize, u64)> {
    (0..words).find_map(|index| {
        let value = page.read(index).unwrap_or(0);
        (value != pattern_word(seed, index)).then_some((index, value))
    })
}

/// Scenario `edu_dma_works` (the control): a page of guest RAM goes to edu's buffer and back to
/// another page, so the DMA path through the SMMU works for memory the host owns. MMU and
/// caches are off: no cache maintenance is needed around the transfers.
fn edu_dma_works(edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 1;
    let edu = edu_device(edu)?;
    let words = DmaPage::WORDS;
    for index in 0..words {
        SOURCE_PAGE.write(index, pattern_word(SEED, index));
        RESULT_PAGE.write(index, pattern_word(POISON_SEED, index));
    }
    edu.dma_to_device(SOURCE_PAGE.address(), 0, edu::BUFFER_SIZE)?;
    edu.dma_to_ram(0, RESULT_PAGE.address(), edu::BUFFER_SIZE)?;
    if let Some((index, value)) = first_mismatch(&RESULT_PAGE, words, SEED) {
        let clamped = RESULT_PAGE.address().max(SOURCE_PAGE.address()) > edu::DEFAULT_DMA_MASK;
        fail!(
            "RAM {:#x} -> edu -> RAM {:#x}: word {index} reads {value:#x}, expected {:#x}{}",
            SOURCE_PAGE.address(),
            RESULT_PAGE.address(),
            pattern_word(SEED, index),
            if clamped {
                " (edu's default 28-bit dma_mask? use edu,dma_mask=0xffffffffff)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Bytes the guest tries to DMA into warden's memory: the arm64 Image header at the start of
/// warden's image, which nothing reads after boot, so a landed write does the least harm (and
/// is undone).
const WARDEN_PROBE_BYTES: u64 = 64;
const WARDEN_PROBE_WORDS: usize = (WARDEN_PROBE_BYTES / 8) as usize;
/// Offsets in edu's buffer: the pattern, the slot warden's memory is read back into, and what
/// warden's memory read as before the attempt (to restore it should the write land).
const PATTERN_SLOT: u64 = 0x000;
const READBACK_SLOT: u64 = 0x400;
const SAVED_SLOT: u64 = 0x800;

/// What guest RAM held before edu's buffer was copied into it (a seed no pattern uses).
const RAM_POISON_SEED: u64 = 0xbeef;

/// How a DMA read of warden's memory came back, as copied from edu's buffer to guest RAM.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readback {
    /// Some word of the pattern written: the write landed.
    Pattern,
    /// What QEMU gives a device for a read the SMMU aborted.
    Zeros,
    /// The read-back slot in edu's buffer kept its poison: the read brought no data.
    DevicePoison,
    /// Guest RAM kept its poison: the copy out of edu did not arrive, nothing was observed.
    RamPoison,
    /// Anything else (first word).
    Other(u64),
}

impl Readback {
    fn of(page: &DmaPage, seed_written: u64) -> Self {
        let words = || (0..WARDEN_PROBE_WORDS).map(|index| (index, page.read(index).unwrap_or(0)));
        let all_of_seed = |seed| words().all(|(index, value)| value == pattern_word(seed, index));
        if words().any(|(index, value)| value == pattern_word(seed_written, index)) {
            Readback::Pattern
        } else if words().all(|(_, value)| value == 0) {
            Readback::Zeros
        } else if all_of_seed(POISON_SEED) {
            Readback::DevicePoison
        } else if all_of_seed(RAM_POISON_SEED) {
            Readback::RamPoison
        } else {
            Readback::Other(page.read(0).unwrap_or(0))
        }
    }
}

impl fmt::Display for Readback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readback::Pattern => f.write_str("the pattern"),
            Readback::Zeros => f.write_str("all zeros (the read was refused too)"),
            Readback::DevicePoison => {
                f.write_str("no data (edu's buffer kept its poison: the read was refused too)")
            }
            Readback::RamPoison => f.write_str("nothing (the copy to guest RAM did not arrive)"),
            Readback::Other(first) => write!(
                f,
                "other data, first word {first:#x} (warden's memory may be readable by DMA)"
            ),
        }
    }
}

/// Scenario `edu_dma_into_warden_refused`: a pattern goes into edu's buffer (and is checked to
/// be there), edu DMA-writes it to the start of warden's memory, then DMA-reads that memory
/// back. Passes when the pattern did not land. The SMMU, not the CPU's stage-2, is what must
/// refuse it: warden should log an SMMU event for the stream ID in the note line.
fn edu_dma_into_warden_refused(platform: &Platform, edu: &Result<Edu, Reason>) -> Outcome {
    const SEED: u64 = 2;
    let edu = edu_device(edu)?;
    let region = match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) => *region,
            None => fail!("no warden region"),
        },
        Err(why) => fail!("{why}"),
    };
    if region.size < WARDEN_PROBE_BYTES {
        fail!("warden region {:#x} is only {:#x} bytes", region.base, region.size);
    }
    let target = region.base;
    println!(
        "guest: note edu_dma_into_warden_refused: edu at {} (stream ID {:#x}) DMA-writes \
         {WARDEN_PROBE_BYTES} bytes to warden memory at {target:#x}",
        edu.function,
        edu.function.requester_id()
    );
    // Keep what a DMA read of the target gives now, in edu's buffer.
    edu.dma_to_device(target, SAVED_SLOT, WARDEN_PROBE_BYTES)?;
    // The pattern into the pattern slot, poison into the read-back slot, in one transfer.
    let readback_word = (READBACK_SLOT / 8) as usize;
    for index in 0..WARDEN_PROBE_WORDS {
        SOURCE_PAGE.write(index, pattern_word(SEED, index));
        SOURCE_PAGE.write(readback_word + index, pattern_word(POISON_SEED, index));
        RESULT_PAGE.write(index, 0);
    }
    edu.dma_to_device(SOURCE_PAGE.address(), PATTERN_SLOT, READBACK_SLOT + WARDEN_PROBE_BYTES)?;
    edu.dma_to_ram(PATTERN_SLOT, RESULT_PAGE.address(), WARDEN_PROBE_BYTES)?;
    if let Some((index, value)) = first_mismatch(&RESULT_PAGE, WARDEN_PROBE_WORDS, SEED) {
        fail!(
            "control failed: the pattern did not make the round trip through edu's buffer \
             (word {index} reads {value:#x}); see edu_dma_works"
        );
    }
    // The attempt, then what the device sees at the target afterwards, copied to guest RAM
    // over poison (the control left the pattern there).
    edu.dma_to_ram(PATTERN_SLOT, target, WARDEN_PROBE_BYTES)?;
    edu.dma_to_device(target, READBACK_SLOT, WARDEN_PROBE_BYTES)?;
    for index in 0..WARDEN_PROBE_WORDS {
        RESULT_PAGE.write(index, pattern_word(RAM_POISON_SEED, index));
    }
    edu.dma_to_ram(READBACK_SLOT, RESULT_PAGE.address(), WARDEN_PROBE_BYTES)?;
    let seen = Readback::of(&RESULT_PAGE, SEED);
    println!("guest: note edu_dma_into_warden_refused: {target:#x} read back by DMA: {seen}");
    if seen == Readback::RamPoison {
        fail!(
            "inconclusive: the read-back of {target:#x} did not arrive in guest RAM at {:#x} \
             although the same copy worked before the attempt",
            RESULT_PAGE.address()
        );
    }
    if seen == Readback::Pattern {
        // Put back what was there, so the rest of the run is not disturbed by this failure.
        let restored = edu.dma_to_ram(SAVED_SLOT, target, WARDEN_PROBE_BYTES).is_ok();
        fail!(
            "the DMA write to warden memory at {target:#x} landed: a DMA read of it returned \
             the pattern ({}; the SMMU does not confine stream ID {:#x})",
            if restored { "original bytes restored" } else { "restoring them failed" },
            edu.function.requester_id()
        );
    }
    Ok(())
}
