//! warden's boot and run-time glue on aarch64: the primary and secondary CPU paths, the EL2
//! exception entry points, the panic handler and the heap. Everything decided here is computed
//! by the host-tested modules (`dt`, `mm`, `trap`, `payload`); this file sequences them and
//! touches the hardware.
//!
//! Boot on the primary CPU, in order:
//! 1. (asm) self-relocate, zero BSS, stack, vectors — MMU off.
//! 2. MMU off, no atomics: parse the DT, plan the layout, build warden's EL2 stage-1 in BSS,
//!    invalidate warden's image from the caches, MMU on.
//! 3. Logger; move the payload (initrd, then kernel) to its planned place; heap and frame pool.
//! 4. Host stage-2 from the DT (RAM minus warden, the devices the DMA policy keeps minus the
//!    SMMU frames and the GIC frames warden emulates); the SMMU and the ITS become warden's.
//! 5. Patched DT written for the host; kernel, initrd and DT cleaned to PoC.
//! 6. EL2 controls, stage-2 on, PSCI mediation ready; ERET to the kernel at EL1.

// DT errors carry node paths inline because they are made before any heap exists; they are
// returned once, on the boot path, so their size costs nothing.
#![allow(clippy::result_large_err)]

mod gic;
mod mmu500;
mod sim_peer;
mod vsmmu;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;
use arrayvec::ArrayVec;
use buddy_system_allocator::LockedHeap;
use spin::Once;

use crate::arch::aarch64::{self as hw, Hw, MAX_CPUS, SecondaryBoot, sysreg};
use crate::arch::host_el2::HostEl2Controls;
use crate::arch::{CacheOp, dcache_range};
use crate::boards::{self, Board, EntryConvention};
use crate::boot_stage;
use crate::console::{self, MmioUart};
use crate::dt::{self, PlatformInfo};
use crate::gic::GicVersion;
use crate::handoff::service::{self, CarveoutDesc};
use crate::handoff::{HandoffCpu, HandoffCtx, HandoffState, PeerRef, Phase, Stage2Ref};
use crate::mm::el2::{El2Plan, WardenImage, warden_regions};
#[cfg(warden_packed)]
use crate::mm::layout::{self, Layout, LayoutInput};
use crate::mm::ownership::{OwnershipTracker, PageState, PeerId};
use crate::mm::range::HumanSize;
use crate::mm::stage2::HOST_RAM_ATTRS;
use crate::mm::{
    Attrs, BumpFrames, El2PageTable, HostStage2, HostStage2Spec, MemRange, PAGE_SIZE, PageTable,
    Perms, PoolFrames, Stage2, build_el2_identity_map, build_host_stage2, ipa_bits_for,
    pa_range_bits_from_mmfr0, vmid16_from_mmfr1,
};
#[cfg(warden_packed)]
use crate::payload::{self, Arm64ImageHeader, PayloadDescriptor};
use crate::smmu::pci::MmioEcam;
use crate::smmu::{MmioSmmu, S2Config, Smmu, SmmuConfig};
use crate::trap::inject::{El1ExceptionRegs, El1Features, HostEl1};
use crate::trap::psci::Psci;
use crate::trap::{self, Platform, TrapFrame, TrapHandler};
use sim_peer::SimPeer;
use warden_abi::AbiError;
use warden_abi::handoff::{Caller, Owner, Request};
use warden_abi::peer::PeerCommand;

/// VMID of the host's stage-2 (0 is left unused so a zero VTTBR is never mistaken for it).
pub const HOST_VMID: u16 = 1;
/// Heap carved from the front of the pool; the rest are page-table frames. Per board, measured
/// need and margin in [`crate::mm::link_layout`]; the boot checks that the board's
/// `heap_reserve` is left.
const HEAP_SIZE: u64 = crate::mm::LAYOUT.heap;
/// Longest host command line accepted (Linux's arm64 COMMAND_LINE_SIZE is 2048).
#[cfg(warden_packed)]
const CMDLINE_MAX: usize = 2048;
/// Extra room the DT patch may add (reserved-memory nodes, bootargs, initrd properties).
#[cfg(warden_packed)]
const DT_PATCH_SLACK: u64 = 16 * 1024;
/// Pages for warden's own EL2 stage-1 tables, in BSS (built with the MMU off; sized in
/// [`crate::mm::link_layout::LinkLayout::el2_tables`] from the board's use).
const BOOT_TABLE_PAGES: usize = crate::mm::LAYOUT.el2_tables;

#[global_allocator]
static HEAP: PeakHeap = PeakHeap { heap: LockedHeap::empty(), peak: AtomicUsize::new(0) };

/// warden's heap: `buddy_system_allocator`'s, plus the most bytes it ever had handed out (its
/// power-of-two blocks), for sizing the heap from measured need (the power-down `footprint
/// peak:` line).
struct PeakHeap {
    heap: LockedHeap<32>,
    peak: AtomicUsize,
}

// SAFETY: every call goes to the locked buddy heap, which upholds GlobalAlloc's contract; the
// peak is only bookkeeping.
unsafe impl core::alloc::GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        let block = heap.alloc(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr());
        self.peak.fetch_max(heap.stats_alloc_actual(), Ordering::Relaxed);
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        let Some(ptr) = core::ptr::NonNull::new(ptr) else { return };
        // SAFETY: GlobalAlloc's caller passes a block this allocator returned, with its layout.
        unsafe { self.heap.lock().dealloc(ptr, layout) }
    }
}

#[repr(C, align(4096))]
struct BootTables([[u8; PAGE_SIZE as usize]; BOOT_TABLE_PAGES]);

static mut BOOT_TABLES: BootTables = BootTables([[0; PAGE_SIZE as usize]; BOOT_TABLE_PAGES]);

/// Per-CPU arguments for `secondary_entry` (read with the MMU off, so cleaned to PoC).
#[unsafe(no_mangle)]
pub static mut SECONDARY_BOOT: [SecondaryBoot; MAX_CPUS] = [SecondaryBoot {
    stack_top: 0,
    mair: 0,
    tcr: 0,
    ttbr: 0,
    sctlr: 0,
    vbar: 0,
    cpu_index: 0,
    mpidr_tag: 0,
}; MAX_CPUS];

#[cfg(warden_packed)]
static mut CMDLINE: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];

/// Everything the run-time paths need, fixed once the primary CPU has booted.
pub struct Warden {
    pub board: Board,
    pub el2_mmu: El2Mmu,
    pub host_controls: HostEl2Controls,
    pub vtcr: u64,
    pub vttbr: u64,
    /// The host's stage-2 tables (changed only under the lock, by the handoff sequences).
    pub host_stage2: spin::Mutex<PageTable<Stage2>>,
    /// warden's own EL2 stage-1 (TTBR0_EL2 on every CPU): fixed at boot but for the handoff
    /// sequences' clean/zero window over a carveout, opened and closed under this lock.
    pub el2_table: spin::Mutex<El2PageTable>,
    /// Every page-table frame after boot comes from here.
    pub frames: spin::Mutex<PoolFrames>,
    /// The real SMMU, warden's alone (absent from the host's stage-2 and DT); `None` when the
    /// DT has none.
    pub smmu: spin::Mutex<Option<Smmu<MmioSmmu>>>,
    /// The virtual SMMU the host drives in place of the real one (`None`: no SMMU, or one that
    /// cannot nest; the host then sees no SMMU and its devices get stage-2-only STEs).
    pub vsmmu: Option<vsmmu::VirtSmmuState>,
    /// The GICv3's ITSes and redistributors, emulated where they write memory (`None`: no
    /// GICv3).
    pub gic: Option<gic::GicState>,
    /// One stage-2 per peer named by a carveout.
    pub peers: Vec<PeerStage2>,
    /// The ownership tracker and the carveouts' transfer locks.
    pub handoff: HandoffState,
    /// The carveouts in `CARVEOUT_INFO` order.
    pub carveouts: Vec<CarveoutDesc>,
    /// The PAS region each peer's `mem_setup` named (`trap::scm::pas`).
    pub pas_regions: spin::Mutex<Vec<(PeerId, MemRange)>>,
    pub sim_peer: Option<SimPeer>,
    /// Host RAM as the host's stage-2 maps it (RAM minus warden), for entry-point checks.
    pub host_ram: alloc::vec::Vec<MemRange>,
    pub el1_features: El1Features,
    pub trap: TrapHandler,
    /// What the host is offered (`warden.persona=` on the packed command line).
    pub persona: crate::persona::Persona,
    /// [`image_digest`] at boot.
    pub image_digest: u64,
}

/// The pieces a board may lack, through [`boards::HAS_SMMUV3`] and the like: on a board without
/// one these are `None` at compile time, so its emulation is not in that board's image (the
/// fields are `None` there anyway: the boot sets them only where the DT and board have them).
impl Warden {
    pub fn vsmmu(&self) -> Option<&vsmmu::VirtSmmuState> {
        self.vsmmu.as_ref().filter(|_| boards::HAS_SMMUV3)
    }

    pub fn gic(&self) -> Option<&gic::GicState> {
        self.gic.as_ref().filter(|_| boards::HAS_GICV3)
    }

    pub fn sim_peer(&self) -> Option<&SimPeer> {
        self.sim_peer.as_ref().filter(|_| boards::HAS_SIM_PEER)
    }
}

/// A peer's stage-2: its VMID and tables (what is mapped follows the tracker).
pub struct PeerStage2 {
    pub id: PeerId,
    pub vmid: u16,
    pub table: spin::Mutex<PageTable<Stage2>>,
}

/// What a page handed to a peer is mapped with in its stage-2: data, never executable.
const PEER_DATA_ATTRS: Attrs = Attrs::normal(Perms::RW);

#[derive(Clone, Copy, Debug)]
pub struct El2Mmu {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr: u64,
    pub sctlr: u64,
}

static WARDEN: Once<Warden> = Once::new();
/// The platform as the boot CPU parsed it from the DT ([`dt::parse_into`], MMU off): about
/// 40 KiB, so in a static rather than on the boot stack. Only `primary_main` touches it.
static mut BOOT_PLATFORM: PlatformInfo = PlatformInfo::new();
static PANICKED: AtomicBool = AtomicBool::new(false);
/// Root of the host stage-2 and its size, for the panic path's stop-the-world.
static STAGE2_ROOT: AtomicU64 = AtomicU64::new(0);
static STAGE2_ROOT_SIZE: AtomicU64 = AtomicU64::new(0);
/// Root of the SMMU's view of the host stage 2 (same size; 0: none), emptied with it.
static SMMU_STAGE2_ROOT: AtomicU64 = AtomicU64::new(0);

fn warden() -> &'static Warden {
    // The exception vectors and secondaries only run after the primary finished booting.
    WARDEN
        .get()
        .unwrap_or_else(|| fatal_unlocked(format_args!("warden state used before boot finished")))
}

/// This CPU's logical index (TPIDR_EL2, set on every CPU before anything can log).
pub fn cpu_index() -> usize {
    sysreg::tpidr_el2() as usize
}

static LOGGER: console::Logger = console::Logger { cpu_index };

/// Stops after a boot error found before the logger exists (MMU possibly off: no atomics).
fn early_fatal(uart: &mut MmioUart, args: core::fmt::Arguments<'_>) -> ! {
    let _ = uart.write_fmt(format_args!("warden: FATAL: {args}\nwarden: halting this CPU\n"));
    hw::park()
}

fn fatal_unlocked(args: core::fmt::Arguments<'_>) -> ! {
    console::print_unlocked(format_args!("warden: FATAL: {args}\nwarden: halting this CPU\n"));
    hw::park()
}

/// The boot path's MMIO, MMU off (every access Device-nGnRnE). Used only for what a board
/// description names: registers (`boot_stage::qcom_hyp::RpmRelease`) and SMEM, read only
/// (`boot_stage::smem`, aligned 32-bit reads inside the board's SMEM region).
struct BootMmio;

impl boot_stage::qcom_hyp::BootMmio for BootMmio {
    fn read32(&mut self, pa: u64) -> u32 {
        // SAFETY: `pa` is a 4-byte aligned device register or SMEM word the board description
        // names (`boot_stage::smem` checks alignment and bounds first); with the MMU off the
        // access is a device access and touches no memory warden uses.
        unsafe { core::ptr::read_volatile(pa as *const u32) }
    }
    fn write32(&mut self, pa: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile(pa as *mut u32, value) }
    }
}

// build.rs builds the packed-image path (`warden_packed`: the payload, the layout planner, the
// host DT writer) only for the boards that start a packed image: entered as a Linux Image, or
// chainloading the next stage packed behind warden after the Gunyah exit. A board that cannot
// reach it does not carry it.
const _: () = assert!(
    cfg!(warden_packed)
        == matches!(
            boards::CURRENT.entry,
            EntryConvention::LinuxImage | EntryConvention::UefiUnderGunyah { .. }
        ),
    "build.rs's warden_packed must match the board's entry convention"
);

/// How the host is started, by entry convention.
enum Start {
    /// A packed image: the DT the boot loader passed (at `dt_pa`), the payload, where it goes.
    /// Only a board entered as a Linux Image has this path (`build.rs`: `warden_packed`).
    #[cfg(warden_packed)]
    Packed { dt_pa: u64, payload: Payload, layout: Layout },
    /// Hyp entry: the next stage's entry (TZ's x0), entered with no DT.
    Hyp { next_stage: u64 },
}

/// Primary CPU entry from the assembly, MMU off. `x0` and `x1` are the registers warden was
/// entered with: the DT (packed image) or the next stage's entry and 2 (hyp entry). The last
/// three are the entry code's record of the Gunyah exit (`boot_stage::gunyah::ExitRecord`;
/// zero for the other entry conventions).
// The entry code's registers, one argument each (AAPCS64 passes all eight in registers).
#[allow(clippy::too_many_arguments)]
pub extern "C" fn primary_main(
    x0: u64,
    load_base: u64,
    current_el: u64,
    bad_reloc: u64,
    x1: u64,
    gunyah_el_at_entry: u64,
    gunyah_smc_x0: u64,
    gunyah_el_after: u64,
) -> ! {
    let boot_start = sysreg::counter();
    let mut profile = BootProfile::new(boot_start);
    let board = boards::CURRENT;
    // SAFETY: the board's early UART is of the kind it names; the MMU is off (or, still at EL1
    // after a refused Gunyah exit, the loader's map has the UART as device memory: the loader
    // prints on it).
    let mut uart = unsafe { MmioUart::at(board.early_console()) };
    let _ = writeln!(
        uart,
        "\nwarden v{} on {} (loaded at {load_base:#x})",
        env!("CARGO_PKG_VERSION"),
        board.name
    );
    let el = (current_el >> 2) & 3;
    // Started at EL1 under Gunyah: the entry code made the exit SMC; check what it recorded.
    if matches!(board.entry, EntryConvention::UefiUnderGunyah { .. }) {
        let record = boot_stage::gunyah::ExitRecord::from_entry(
            gunyah_el_at_entry,
            gunyah_smc_x0,
            gunyah_el_after,
        );
        match boot_stage::gunyah::check_exit(record) {
            Ok(done) => {
                let _ = writeln!(uart, "warden: at EL2 ({done:?})");
            }
            Err(e) => early_fatal(&mut uart, format_args!("Gunyah exit: {e}")),
        }
    }
    // Checked before any EL2 register is touched: below EL2 they are UNDEFINED.
    if el != 2 {
        early_fatal(
            &mut uart,
            format_args!(
                "entered at EL{el}: warden must be started at EL2 (QEMU: -machine virt,virtualization=on)"
            ),
        );
    }
    sysreg::set_tpidr_el2(0);
    if bad_reloc != 0 {
        early_fatal(
            &mut uart,
            format_args!(
                "image has a relocation of type {bad_reloc} that the entry code cannot apply"
            ),
        );
    }

    // --- MMU off: parse, plan, build our own tables.
    let image = hw::image_layout();
    // The DT: the one the boot loader passed, or the one linked into the image (part of
    // warden's read-only data: mapped with the image, nothing else to keep mapped).
    let (dt_blob, dt_range) = match board.entry {
        EntryConvention::LinuxImage => match read_dt(x0) {
            Ok(b) => (b, MemRange::from_base_size(x0, b.len() as u64).unwrap_or_default()),
            Err(e) => early_fatal(&mut uart, format_args!("{e}")),
        },
        // Hyp entry, and after the Gunyah exit (the UEFI loader hands warden no DT).
        EntryConvention::Hyp { .. } | EntryConvention::UefiUnderGunyah { .. } => {
            match boards::linked_dt() {
                Some(b) => (b, MemRange::default()),
                None => early_fatal(&mut uart, format_args!("this boot-stage build links no DT")),
            }
        }
    };
    // SAFETY: the only reference to BOOT_PLATFORM ever made: primary_main runs once, on the
    // boot CPU, before any other CPU runs warden's code or an exception is taken.
    let platform: &'static mut PlatformInfo =
        unsafe { &mut *core::ptr::addr_of_mut!(BOOT_PLATFORM) };
    // The RAM: the DT's, or the firmware's SMEM table (`Board::ram_source`), read MMU off.
    match boot_stage::parse_platform(&board, dt_blob, platform, &mut BootMmio) {
        Ok(None) => {}
        Ok(Some(banks)) => {
            let _ = writeln!(uart, "warden: RAM from SMEM's RAM partition table: {banks} bank(s)");
        }
        Err(e) => early_fatal(&mut uart, format_args!("{e}")),
    }
    if let Err(e) = boards::apply_named_regions(&board, platform) {
        early_fatal(&mut uart, format_args!("{e}"));
    }
    let platform: &'static PlatformInfo = platform;
    let features = sysreg::cpu_features();
    let gic_version = match crate::gic::select::select(
        platform,
        board.interrupt_controllers,
        features.gicv3_sysregs(),
    ) {
        Ok(v) => v,
        Err(e) => early_fatal(&mut uart, format_args!("interrupt controller: {e}")),
    };
    let (start, persona, warden_region) = match board.entry {
        // Never taken: `warden_packed` is set for every board entered as a Linux Image
        // (asserted at compile time).
        #[cfg(not(warden_packed))]
        EntryConvention::LinuxImage => early_fatal(
            &mut uart,
            format_args!("{}: built without the packed-image entry", board.name),
        ),
        #[cfg(warden_packed)]
        EntryConvention::LinuxImage => {
            let (payload, layout, persona) =
                plan_packed(&mut uart, platform, &image, dt_blob, dt_range);
            (Start::Packed { dt_pa: x0, payload, layout }, persona, layout.warden)
        }
        EntryConvention::Hyp { base, region_size, rpm_release } => {
            let checked = boot_stage::check_entry(
                platform,
                base,
                region_size,
                MemRange::new(image.start, image.end),
                x1,
                x0,
            );
            let region = match checked {
                Ok(r) => r,
                Err(e) => early_fatal(&mut uart, format_args!("hyp entry: {e}")),
            };
            if let Err(e) = boot_stage::check_boot_stage_dt(platform, region) {
                early_fatal(&mut uart, format_args!("refusing to start: {e}"));
            }
            // First boot only (secondaries enter through `secondary_main`), MMU off.
            if let Some(rpm) = rpm_release {
                let (before, after) = boot_stage::qcom_hyp::release_rpm(&mut BootMmio, rpm);
                let _ = writeln!(
                    uart,
                    "warden: RPM out of reset ({:#x}: {before:#x} -> {after:#x})",
                    rpm.register
                );
            }
            // No command line: the OS's DT is the virt persona's (`boot_stage::os_dt`).
            (Start::Hyp { next_stage: x0 }, crate::persona::Persona::Virt, region)
        }
        // After the Gunyah exit: the next stage is packed behind warden like a packed host
        // (`cargo xtask image --next`), moved out of warden's region and entered at EL1 with
        // the linked DT, patched for it, in x0.
        #[cfg(not(warden_packed))]
        EntryConvention::UefiUnderGunyah { .. } => early_fatal(
            &mut uart,
            format_args!("{}: built without the packed next stage", board.name),
        ),
        #[cfg(warden_packed)]
        EntryConvention::UefiUnderGunyah { .. } => {
            let (payload, layout, persona) =
                plan_packed(&mut uart, platform, &image, dt_blob, dt_range);
            let dt_pa = dt_blob.as_ptr() as u64;
            (Start::Packed { dt_pa, payload, layout }, persona, layout.warden)
        }
    };
    profile.mark("dt+plan");
    let (console, dt_console_refused) = console::select(board.early_console(), platform.console);
    let Some(console_pages) = console.pages() else {
        early_fatal(&mut uart, format_args!("console at {:#x}: no pages to map", console.base))
    };
    let (el2_mmu, el2_table) = match build_el2_tables(platform, &image, console_pages, dt_range) {
        Ok(m) => m,
        Err(e) => early_fatal(&mut uart, format_args!("EL2 page tables: {e}")),
    };
    // Lines of warden's image written with caches off (relocations, BSS, tables) must not be
    // shadowed by stale cached copies once caches are on.
    dcache_range(&Hw, CacheOp::Invalidate, image.start, image.end - image.start);
    // SAFETY: the tables identity-map warden's image, stacks, the UART and RAM outside the
    // carveouts and no-map regions (build_el2_tables; nothing warden uses from here on lies
    // in those: the layout planner keeps the payload off reserved memory, and the DT was
    // checked), and the image was just invalidated from the data caches.
    unsafe { hw::enable_el2_mmu(el2_mmu.mair, el2_mmu.tcr, el2_mmu.ttbr, el2_mmu.sctlr) };
    profile.mark("el2-tables+mmu");

    // --- MMU and caches on.
    // SAFETY: the console's pages are mapped as device memory by build_el2_tables; it is the
    // board's UART or the DT's of the same kind (`console::select`).
    unsafe { console::set_console(console) };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    match dt_console_refused {
        None => log::info!("console: the DT's, {:?} at {:#x}", console.kind, console.base),
        Some(why) => {
            log::warn!("console: the board's {:?} at {:#x} ({why})", console.kind, console.base)
        }
    }
    match &start {
        #[cfg(warden_packed)]
        Start::Packed { payload, layout, .. } => {
            print_memory_map(platform, warden_region, &image);
            print_payload(layout, payload);
            profile.mark("console");
            let moved = move_payload(payload, layout);
            log::info!("  payload    {moved} bytes moved, the rest in place");
            profile.mark("payload-move");
        }
        Start::Hyp { next_stage } => {
            print_memory_map(platform, warden_region, &image);
            log::info!(
                "  next stage {next_stage:#x} (EL1, no DT in x0); the OS's DT is linked into warden ({} bytes): warden's region and {} carveout(s) reserved no-map in it",
                dt_blob.len(),
                platform.carveouts.len()
            );
        }
    }
    init_pool(&image);

    // SAFETY: the pool past the heap is warden's own RW memory, used for nothing else.
    let mut frames = match unsafe {
        PoolFrames::new(MemRange::new(image.pool_start + HEAP_SIZE, image.pool_end))
    } {
        Ok(f) => f,
        Err(e) => fatal_unlocked(format_args!("frame pool: {e}")),
    };
    log_withheld_devices(platform);
    log_gic(platform, gic_version);
    // The GIC frames that write memory are trapped: known before the host's stage 2 is built.
    let gic_layout = match gic_version {
        GicVersion::V3 if boards::HAS_GICV3 => match gic::probe(platform) {
            Ok(l) => l,
            Err(e) => fatal_unlocked(format_args!("GIC: {e}")),
        },
        // `gic::select` picks only a version the board names (V3 above when it can have one).
        GicVersion::V3 | GicVersion::V2 => crate::gic::GicLayout::default(),
    };
    check_pool_before_stage2(platform, &frames);
    profile.mark("pool+gic-probe");
    let host_stage2 = match host_stage2(
        platform,
        warden_region,
        board.control_page,
        &gic_layout.holes(),
        &mut frames,
    ) {
        Ok(s) => s,
        Err(e) => fatal_unlocked(format_args!("host stage-2: {e}")),
    };
    let vtcr = host_stage2.vtcr();
    let vttbr = match host_stage2.vttbr(HOST_VMID) {
        Ok(v) => v,
        Err(e) => fatal_unlocked(format_args!("host stage-2 VTTBR: {e}")),
    };
    let root_size = host_stage2.config.root_tables() as u64 * PAGE_SIZE;
    STAGE2_ROOT.store(host_stage2.table.root_pa(), Ordering::Release);
    STAGE2_ROOT_SIZE.store(root_size, Ordering::Release);
    let mut host_stage2 = host_stage2;
    profile.mark("stage-2");
    log::info!("persona: {}", persona.name());
    if cfg!(feature = "fault-injection-skip-assign-unmap") {
        log::warn!(
            "FAULT INJECTION: fault-injection-skip-assign-unmap built in: never ship this image \
             (a forwarded assign_mem leaves the host's mapping in place)"
        );
    }
    let (smmu, vsmmu) =
        match take_smmu(platform, &mut host_stage2, vtcr, vttbr, &mut frames, persona) {
            Ok(s) => s,
            Err(e) => fatal_unlocked(format_args!("SMMU: {e}")),
        };
    // The apps MMU-500 (Snapdragon): the devices the DT policy kept behind it are in the
    // host's stage 2, so without it taken the host must not start.
    if platform.mmu500.is_some() && board.iommu.back_end() != Some(boards::IommuBackEnd::Mmu500) {
        fatal_unlocked(format_args!("the DT's apps MMU-500 has no back end on {}", board.name));
    }
    // (`dt::parse` finds an apps MMU-500 only without an SMMUv3: one face at most.)
    let vsmmu = match mmu500::take(platform, vtcr, vttbr) {
        Ok(face) => vsmmu.or(face),
        Err(e) => fatal_unlocked(format_args!("MMU-500: {e}; refusing to start the host")),
    };
    let vlpi_stride = gic_layout.any_vlpi();
    let gic = if boards::HAS_GICV3 && gic_version == GicVersion::V3 {
        match gic::take(platform, gic_layout, &mut frames) {
            Ok(g) => Some(g),
            Err(e) => fatal_unlocked(format_args!("GIC: {e}")),
        }
    } else {
        None
    };

    profile.mark("smmu+gic");
    let carveouts = usable_carveouts(platform, warden_region);
    let (handoff, peers) =
        match handoff_state(platform, warden_region, &host_stage2, &carveouts, &mut frames) {
            Ok(h) => h,
            Err(e) => fatal_unlocked(format_args!("carveouts: {e}")),
        };
    // The simulated peer takes the last CPU of /cpus (if there is one to spare).
    let peer_cpu = (boards::HAS_SIM_PEER && board.sim_peer && platform.cpus.len() >= 2)
        .then(|| platform.cpus.last().map(|c| c.mpidr))
        .flatten();
    if board.sim_peer && peer_cpu.is_none() {
        log::warn!("only one CPU: no simulated peer (PEER_COMMAND answers NOT_SUPPORTED)");
    }
    let view = crate::host_dt::HostView {
        warden: warden_region,
        peer_cpu,
        control_page: board.control_page,
        gicv2: platform.gicv2.as_ref().filter(|_| gic_version == GicVersion::V2),
        keep_smmu: vsmmu.is_some(),
        mmu500: vsmmu.as_ref().and_then(|v| v.mmu500_irqs),
        scm: persona.has_scm(),
        rmtfs: persona.has_scm().then(|| rmtfs_region(platform, &carveouts)).flatten(),
        vlpi_stride,
    };
    profile.mark("carveouts+peer");
    // Where the host starts, with what in x0.
    let (host_entry, host_x0) = match &start {
        #[cfg(warden_packed)]
        Start::Packed { dt_pa, payload, layout } => {
            write_host_dt(dt_blob, *dt_pa, platform, layout, payload, &view);
            (layout.kernel.start, layout.dt.start)
        }
        Start::Hyp { next_stage } => {
            check_os_dt_matches(platform, &view);
            (*next_stage, 0)
        }
    };

    profile.mark("host-dt");
    let host_controls = HostEl2Controls::for_host(&features, gic_version);
    let el1_features = El1Features::from_id_regs(features.id_aa64mmfr1, features.id_aa64pfr1);
    let mut mpidrs: Vec<u64> =
        platform.cpus.iter().map(|c| c.mpidr).filter(|&m| Some(m) != peer_cpu).collect();
    if platform.cpus.len() > MAX_CPUS {
        fatal_unlocked(format_args!(
            "the DT lists {} CPUs; warden supports {MAX_CPUS}",
            platform.cpus.len()
        ));
    }
    // The peer CPU's warden index comes after the host's.
    let sim_peer = peer_cpu.and_then(|mpidr| {
        let tables: Vec<(PeerId, &spin::Mutex<PageTable<Stage2>>)> =
            peers.iter().map(|p| (p.id, &p.table)).collect();
        let ranges: Vec<MemRange> = carveouts.iter().map(|c| c.range).collect();
        match SimPeer::set_up(mpidrs.len(), mpidr, sim_peer_program(), &tables, &ranges, &mut frames)
        {
            Ok(sim) => {
                log::info!(
                    "simulated peer on CPU MPIDR {mpidr:#x} (warden CPU {}) for {} peer(s); the host gets the other {} CPU(s)",
                    mpidrs.len(),
                    peers.len(),
                    mpidrs.len()
                );
                Some(sim)
            }
            Err(e) => {
                log::error!("simulated peer not available: {e}");
                None
            }
        }
    });
    let boot_mpidr = sysreg::mpidr() & trap::psci::MPIDR_AFFINITY_MASK;
    // The boot CPU keeps stack 0 (entry.S): it is warden CPU 0 whatever the DT's order.
    if !trap::psci::boot_cpu_first(&mut mpidrs, boot_mpidr) {
        fatal_unlocked(format_args!("boot CPU (MPIDR {boot_mpidr:#x}) is not in the DT's /cpus"))
    }
    let boot_cpu = 0;
    sysreg::set_tpidr_el2(boot_cpu as u64);
    let psci = match Psci::new(&mpidrs, boot_cpu) {
        Ok(p) => p,
        Err(e) => fatal_unlocked(format_args!("PSCI: {e}")),
    };
    let host_ram = host_ram_ranges(platform, warden_region);
    let w = WARDEN.call_once(|| Warden {
        board,
        el2_mmu,
        host_controls,
        vtcr,
        vttbr,
        host_stage2: spin::Mutex::new(host_stage2.table),
        el2_table: spin::Mutex::new(el2_table),
        frames: spin::Mutex::new(frames),
        smmu: spin::Mutex::new(smmu),
        vsmmu,
        gic,
        peers,
        handoff,
        carveouts,
        pas_regions: spin::Mutex::new(Vec::new()),
        sim_peer,
        host_ram,
        el1_features,
        trap: TrapHandler::new(psci),
        persona,
        image_digest: image_digest(),
    });
    profile.mark("psci+state");
    log_footprint(w, &image);
    check_footprint(w);
    profile.mark("footprint");
    profile.log();
    let ticks = sysreg::counter().wrapping_sub(boot_start);
    let freq = sysreg::counter_frequency().max(1);
    log::info!(
        "boot took {ticks} counter ticks ({} us at {} MHz)",
        ticks.saturating_mul(1_000_000) / freq,
        freq / 1_000_000
    );
    mark_booted();
    enter_host_on_this_cpu(w, host_entry, host_x0)
}

/// Counter stamps at the ends of the boot CPU's phases, logged once as `boot profile:` (under
/// QEMU `-icount shift=0` a tick is an instruction: `cargo xtask bench` reads warden's own boot
/// there; the first figure is everything before `primary_main`, from the counter's zero).
struct BootProfile {
    last: u64,
    phases: ArrayVec<(&'static str, u64), 16>,
}

impl BootProfile {
    fn new(start: u64) -> Self {
        let mut phases = ArrayVec::new();
        phases.push(("before-main", start));
        Self { last: start, phases }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = sysreg::counter();
        // A full profile drops later phases (fewer marks than slots: never in practice).
        let _ = self.phases.try_push((phase, now.wrapping_sub(self.last)));
        self.last = now;
    }

    fn log(&self) {
        let mut line = arrayvec::ArrayString::<512>::new();
        for (phase, ticks) in &self.phases {
            let _ = write!(line, " {phase}={ticks}");
        }
        log::info!("boot profile (counter ticks):{line}");
    }
}

/// The packed-image plan, MMU off: the payload behind warden, the persona its command line
/// names, and where the kernel, initrd and the host's DT go.
#[cfg(warden_packed)]
fn plan_packed(
    uart: &mut MmioUart,
    platform: &PlatformInfo,
    image: &hw::ImageLayout,
    dt_blob: &[u8],
    dt_range: MemRange,
) -> (Payload, Layout, crate::persona::Persona) {
    let payload = match locate_payload(image) {
        Ok(p) => p,
        Err(e) => early_fatal(uart, format_args!("payload: {e}")),
    };
    let persona = match crate::persona::Persona::from_cmdline(cmdline(payload.cmdline_len)) {
        Ok(p) => p,
        Err(other) => {
            let _ = writeln!(uart, "warden: unknown persona `{other}`: using virt");
            crate::persona::Persona::Virt
        }
    };
    let mut reserved_ranges = [MemRange::default(); dt::MAX_RESERVED];
    let n_reserved = platform.reserved.len().min(reserved_ranges.len());
    for (slot, r) in reserved_ranges.iter_mut().zip(platform.reserved.iter()) {
        *slot = r.range;
    }
    let layout = match layout::plan(&LayoutInput {
        ram: &platform.memory,
        reserved: &reserved_ranges[..n_reserved],
        original_dt: dt_range,
        warden: MemRange::new(image.start, image.end),
        kernel_src: payload.kernel,
        kernel_text_offset: payload.kernel_header.text_offset,
        kernel_mem_size: payload.kernel_header.effective_size(payload.kernel.size()),
        initrd_src: payload.initrd,
        dt_max_size: dt_blob.len() as u64 + payload.cmdline_len as u64 + DT_PATCH_SLACK,
    }) {
        Ok(l) => l,
        Err(e) => early_fatal(uart, format_args!("memory layout: {e}")),
    };
    (payload, layout, persona)
}

/// Writes the host's DT (the boot loader's, patched: [`patch_host_dt`]) where the layout put
/// it, and cleans what warden wrote (the parts it moved, the DT) to PoC: the host starts with
/// its MMU and caches off.
#[cfg(warden_packed)]
fn write_host_dt(
    dt_blob: &[u8],
    dt_pa: u64,
    platform: &PlatformInfo,
    layout: &Layout,
    payload: &Payload,
    view: &crate::host_dt::HostView<'_>,
) {
    let host_dt = match patch_host_dt(dt_blob, platform, layout, payload, view) {
        Ok(d) => d,
        Err(e) => fatal_unlocked(format_args!("host DT: {e}")),
    };
    if host_dt.len() as u64 > layout.dt.size() {
        fatal_unlocked(format_args!(
            "patched DT is {} bytes, planned {}",
            host_dt.len(),
            layout.dt.size()
        ));
    }
    // The planner never puts the new DT over the original, which is read until here.
    debug_assert!(!layout.dt.contains(dt_pa));
    // SAFETY: layout.dt is RAM reserved for the DT by the planner, mapped RW for warden and
    // disjoint from everything live (the original DT has been fully read by now).
    unsafe {
        core::ptr::copy_nonoverlapping(host_dt.as_ptr(), layout.dt.start as *mut u8, host_dt.len())
    };
    // Only what warden wrote: a part left in place is as the loader left it, cleaned to PoC
    // (the arm64 boot protocol asks that of the loader for the whole loaded image).
    for m in layout.moves(payload.kernel, payload.initrd).into_iter().flatten() {
        dcache_range(&Hw, CacheOp::Clean, m.dst, m.len);
    }
    dcache_range(&Hw, CacheOp::Clean, layout.dt.start, host_dt.len() as u64);
}

/// Hyp entry: the OS's DT was made before warden ran (`boot_stage::os_dt`, assuming a virtual
/// SMMU and no GICv4 redistributors). Says so when the machine turned out otherwise: the host
/// then sees a device warden does not offer it (its accesses abort, contained).
fn check_os_dt_matches(platform: &PlatformInfo, view: &crate::host_dt::HostView<'_>) {
    if platform.smmu().is_some() && !view.keep_smmu {
        log::error!(
            "the OS's DT shows the SMMU but warden offers no virtual SMMU: the host's accesses to it will abort"
        );
    }
    if view.vlpi_stride && platform.gicv3.as_ref().is_some_and(|g| g.redist_stride.is_none()) {
        log::error!(
            "the redistributors are 256 KiB apart but the OS's DT gives no redistributor-stride: the host will not find them all"
        );
    }
}

/// The word the boot CPU sets once it is past the one-time setup (relocation, BSS), cleaned to
/// PoC: a hyp-entry board's TrustZone enters warden at the same address on every CPU power-up,
/// and the entry code reads this with the MMU off to send every later entry to the secondary
/// path (`entry.S`). Set in the entry code already; written again here, with the caches on, so
/// no stale cached copy can hide it.
fn mark_booted() {
    hw::mark_booted();
}

/// warden's memory in use after boot, in one parseable line (`cargo xtask bench` reads it).
fn log_footprint(w: &Warden, image: &hw::ImageLayout) {
    let kib = |bytes: u64| bytes / 1024;
    let frames = w.frames.lock();
    let heap = HEAP.heap.lock();
    let host_tables = w.host_stage2.lock().stats().table_pages;
    log::info!(
        "footprint: region {} KiB = code+rodata {} KiB + data+bss+stacks {} KiB + pool {} KiB; heap {} of {} KiB in use; page-table frames {} of {} in use ({} KiB); host stage-2 {} table pages; EL2 boot tables {} of {} pages",
        kib(image.end - image.start),
        kib(image.rodata_end - image.start),
        kib(image.pool_start - image.rodata_end),
        kib(image.pool_end - image.pool_start),
        kib(heap.stats_alloc_actual() as u64),
        kib(HEAP_SIZE),
        frames.allocated_pages(),
        frames.total_pages(),
        kib(frames.allocated_pages() as u64 * PAGE_SIZE),
        host_tables,
        w.el2_table.lock().stats().table_pages,
        BOOT_TABLE_PAGES,
    );
}

/// Before any table is built: the pool must at least hold the host stage-2's split at every
/// carveout's edges and what the run time needs to hand them all over
/// ([`crate::mm::footprint::least_frames_for`]). A machine whose carveouts outgrow warden's
/// region stops here with the shortfall, not halfway through the tables.
fn check_pool_before_stage2(platform: &PlatformInfo, frames: &PoolFrames) {
    let carveouts = || platform.carveouts.iter().map(|c| c.range);
    let least = crate::mm::footprint::least_frames_for(&crate::mm::LAYOUT, carveouts());
    if let Err(short) = crate::mm::footprint::check_headroom(frames.total_pages(), 0, least) {
        fatal_unlocked(format_args!(
            "warden's region is {} KiB too small for this machine: its {} carveout(s) ({} in all) need at least {least} page-table frames (their edges split in the host's stage 2, then every carveout handed over at once, as fragmented as a host can make it), and warden's pool has {}",
            short as u64 * PAGE_SIZE / 1024,
            platform.carveouts.len(),
            HumanSize(carveouts().map(|r| r.size()).sum()),
            frames.total_pages(),
        ));
    }
}

/// Stops the boot when warden's region is too small for this machine: the pool must keep
/// what the run time may still take ([`crate::mm::footprint`]) and the boot CPU's stack its
/// margin. Saying so now, and by how much, beats a handoff refused later for lack of frames.
fn check_footprint(w: &Warden) {
    use crate::mm::footprint::{self, PoolAfterBoot};
    let pool = {
        let frames = w.frames.lock();
        PoolAfterBoot {
            frames_total: frames.total_pages(),
            frames_used: frames.allocated_pages(),
            frames_reserve: footprint::runtime_frame_reserve(
                &crate::mm::LAYOUT,
                w.carveouts.iter().map(|c| c.range),
            ),
            heap_total: HEAP_SIZE as usize,
            heap_used: HEAP.heap.lock().stats_alloc_actual(),
            heap_reserve: crate::mm::LAYOUT.heap_reserve as usize,
        }
    };
    if let Err(short) = pool.check() {
        fatal_unlocked(format_args!(
            "warden's region is {} KiB too small for this machine: after boot {} of {} page-table frames and {} of {} KiB of heap are in use, and the run time needs {} frames ({} carveout(s) handed over at once, fragmented, plus {} spare) and {} KiB of heap: give warden's pool {} more frames and {} KiB more heap",
            short.bytes().div_ceil(1024),
            pool.frames_used,
            pool.frames_total,
            pool.heap_used / 1024,
            pool.heap_total / 1024,
            pool.frames_reserve,
            w.carveouts.len(),
            crate::mm::LAYOUT.runtime_frames,
            pool.heap_reserve / 1024,
            short.frames,
            short.heap.div_ceil(1024),
        ));
    }
    check_boot_stack();
}

/// The most warden needed of each sized part, at power-down (`cargo xtask bench` reads it):
/// the sizes and margins of the heap, the frame pool and the stacks come from these.
fn log_footprint_peak(w: &Warden) {
    let frames = w.frames.lock();
    let (deepest_cpu, deepest_other) = (1..MAX_CPUS)
        .map(|cpu| (cpu, hw::stack_high_water(cpu)))
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or((0, 0));
    log::info!(
        "footprint peak: heap {} of {} KiB; page-table frames {} of {}; EL2 stack boot CPU {} of {} KiB; EL2 stack other CPUs {} of {} KiB (CPU {deepest_cpu}); {} CPU(s)",
        HEAP.peak.load(Ordering::Relaxed) / 1024,
        HEAP_SIZE / 1024,
        frames.peak_pages(),
        frames.total_pages(),
        hw::stack_high_water(0) / 1024,
        hw::BOOT_STACK_SIZE / 1024,
        deepest_other / 1024,
        hw::SECONDARY_STACK_SIZE / 1024,
        MAX_CPUS,
    );
}

/// The boot CPU's stack after the boot (its deepest use): at least [`hw::BOOT_STACK_MARGIN`]
/// must be left for the traps it handles from now on.
fn check_boot_stack() {
    let used = hw::stack_high_water(0);
    let usable = hw::BOOT_STACK_SIZE - hw::STACK_GUARD_SIZE;
    if let Err(short) = crate::mm::footprint::check_headroom(usable, used, hw::BOOT_STACK_MARGIN) {
        fatal_unlocked(format_args!(
            "the boot used {} KiB of the boot CPU's {} KiB EL2 stack, leaving less than the {} KiB margin: BOOT_STACK_SIZE is {} KiB too small",
            used / 1024,
            usable / 1024,
            hw::BOOT_STACK_MARGIN / 1024,
            short.div_ceil(1024)
        ));
    }
}

/// Programs this CPU's EL2 controls and stage-2, then enters the host.
fn enter_host_on_this_cpu(w: &Warden, entry: u64, arg: u64) -> ! {
    sysreg::write_host_controls(&w.host_controls);
    sysreg::write_stage2(w.vtcr, w.vttbr);
    log::info!(
        "entering host at {entry:#x} (EL1h, x0 = {arg:#x}); EL2 stack used so far: {} of {} KiB",
        hw::stack_high_water(cpu_index()) / 1024,
        hw::stack_size(cpu_index()) / 1024
    );
    // SAFETY: stage 2 and the EL2 controls for the host are programmed on this CPU.
    unsafe { sysreg::enter_host(entry, arg) }
}

/// Never host memory warden may touch, never mapped at EL2 (except a carveout for warden's own
/// clean/zero step): every carveout the DT names and every `no-map` reserved region.
fn excluded_ranges(
    p: &PlatformInfo,
) -> ArrayVec<MemRange, { dt::MAX_RESERVED + dt::MAX_CARVEOUTS }> {
    let mut out = ArrayVec::new();
    out.extend(p.carveouts.iter().map(|c| c.range));
    out.extend(p.reserved.iter().filter(|r| r.no_map).map(|r| r.range));
    out
}

/// warden's own EL2 stage-1 ([`crate::mm::el2::warden_regions`]): an identity map of its image
/// (code RX, read-only data R, data, BSS and pool RW, stack guards left out), of RAM minus the
/// carveouts and the `no-map` reserved regions (RW, never executable) and of the devices it
/// drives, built in BSS pages with the MMU off. The tables stay in BSS; the handoff sequences
/// edit them at run time under [`Warden::el2_table`]'s lock (the clean/zero window).
fn build_el2_tables(
    p: &PlatformInfo,
    image: &hw::ImageLayout,
    console_pages: MemRange,
    dt: MemRange,
) -> Result<(El2Mmu, El2PageTable), BootError> {
    let excluded = excluded_ranges(p);
    // The DT is read with the MMU on: it must not sit where warden maps nothing.
    if let Some(x) = excluded.iter().find(|x| x.overlaps(&dt)) {
        return Err(BootError::DtInExcluded(*x));
    }
    // No heap yet: fixed lists.
    let mut guards: ArrayVec<MemRange, MAX_CPUS> = ArrayVec::new();
    guards.extend(hw::stack_guards());
    let mut devices: ArrayVec<
        MemRange,
        { 3 + dt::MAX_SMMUS + dt::MAX_PCIE + dt::MAX_ITS + dt::MAX_REDIST_REGIONS },
    > = ArrayVec::new();
    devices.push(console_pages);
    // The SMMUs warden drives, and PCIe config space for the boot-time scan of stream IDs.
    devices.extend(p.smmus.iter().map(|s| s.regs));
    devices.extend(p.mmu500.as_ref().map(|m| m.regs));
    devices.extend(p.pcie.iter().map(|h| h.ecam));
    // The GIC distributor, where the virtual SMMU raises the host's SMMU interrupts.
    devices.extend(p.gic_dist.and_then(|g| g.page_aligned_outward()));
    // The ITSes' control frames and the redistributor regions, which warden emulates.
    devices.extend(
        p.gic_its
            .iter()
            .map(|its| MemRange::new(its.start, its.start + crate::gic::regs::FRAME_SIZE)),
    );
    devices.extend(
        p.gicv3
            .iter()
            .flat_map(|g| g.redist_regions.iter())
            .filter_map(|r| r.page_aligned_outward()),
    );
    let plan = El2Plan {
        image: WardenImage {
            start: image.start,
            text_end: image.text_end,
            rodata_end: image.rodata_end,
            end: image.end,
        },
        guards: &guards,
        ram: &p.memory,
        excluded: &excluded,
        devices: &devices,
    };
    let mut regions: ArrayVec<
        (MemRange, Attrs),
        {
            3 + MAX_CPUS
                + dt::MAX_MEMORY_RANGES * (2 + dt::MAX_RESERVED + dt::MAX_CARVEOUTS)
                + 3
                + dt::MAX_SMMUS
                + dt::MAX_PCIE
                + 1
                + dt::MAX_ITS
                + dt::MAX_REDIST_REGIONS
        },
    > = ArrayVec::new();
    let mut overflow = false;
    warden_regions(&plan, |r, a| overflow |= regions.try_push((r, a)).is_err());
    if overflow {
        return Err(BootError::TooManyRegions);
    }
    let max_end = regions.iter().map(|(r, _)| r.end).max().unwrap_or(0);
    let va_bits = ipa_bits_for(max_end).ok_or(BootError::AddressTooHigh(max_end))?;
    let pa_bits = pa_range_bits_from_mmfr0(sysreg::id_aa64mmfr0()).ok_or(BootError::PaRange)?;
    // SAFETY: BOOT_TABLES is BSS owned by this function's single call on the boot CPU.
    let mut frames = unsafe {
        let base = core::ptr::addr_of_mut!(BOOT_TABLES) as u64;
        BumpFrames::new(MemRange::new(base, base + (BOOT_TABLE_PAGES as u64) * PAGE_SIZE))
    }
    .map_err(BootError::Frames)?;
    let map = build_el2_identity_map(&regions, va_bits, pa_bits, &mut frames, &Hw)
        .map_err(BootError::El2Map)?;
    let mmu = El2Mmu { mair: map.mair, tcr: map.tcr, ttbr: map.ttbr0, sctlr: map.sctlr };
    Ok((mmu, map.table))
}

/// The host's stage-2: RAM minus warden, every DT device the DMA policy keeps minus the SMMU
/// register frames and the GIC frames warden emulates (`gic_holes`).
fn host_stage2(
    p: &PlatformInfo,
    warden: MemRange,
    control_page: Option<u64>,
    gic_holes: &[MemRange],
    frames: &mut PoolFrames,
) -> Result<HostStage2, BootError> {
    let holes = crate::mm::host_plan::host_stage2_holes(p, warden, control_page, gic_holes);
    let split = crate::mm::host_plan::host_stage2_split(p);
    let spec = HostStage2Spec {
        ram: &p.memory,
        devices: &p.devices,
        holes: &holes,
        split: &split,
        pa_range_bits: pa_range_bits_from_mmfr0(sysreg::id_aa64mmfr0())
            .ok_or(BootError::PaRange)?,
        vmid16: vmid16_from_mmfr1(sysreg::id_aa64mmfr1()),
    };
    let s2 = build_host_stage2(&spec, frames, &Hw).map_err(BootError::Stage2)?;
    log::info!(
        "host stage-2: IPA {} bits, VMID {HOST_VMID}, {} x 1 GiB + {} x 2 MiB + {} x 4 KiB leaves, {} table pages",
        s2.config.ipa_bits(),
        s2.stats.blocks_1g,
        s2.stats.blocks_2m,
        s2.stats.pages_4k,
        s2.stats.table_pages
    );
    s2.table.for_each_region(|m| {
        log::info!(
            "  {:#012x}..{:#012x} {:>9} {}",
            m.va,
            m.va + m.size,
            alloc::format!("{}", HumanSize(m.size)),
            m.attrs
        )
    });
    Ok(s2)
}

/// The DT's carveouts warden can manage: inside RAM, clear of warden's own region (which the
/// layout planner placed around `/reserved-memory`, so this only fails on a broken DT). Any
/// other is reported and left to the host as ordinary reserved memory.
fn usable_carveouts(p: &PlatformInfo, warden: MemRange) -> Vec<CarveoutDesc> {
    let mut out = Vec::new();
    for c in p.carveouts.iter() {
        let in_ram = p.memory.iter().any(|b| b.contains_range(&c.range));
        if !in_ram || c.range.overlaps(&warden) || !c.range.is_page_aligned() {
            log::error!(
                "carveout {} {} is not page-aligned RAM clear of warden: not managed",
                c.name,
                c.range
            );
            continue;
        }
        log::info!(
            "  carveout   {} ({}: for the {}, {:?}{})",
            c.range,
            c.name,
            c.peer,
            c.policy,
            if c.clear_on_reclaim { ", clear on reclaim" } else { "" }
        );
        out.push(CarveoutDesc {
            range: c.range,
            peer: c.peer,
            policy: c.policy,
            clear_on_reclaim: c.clear_on_reclaim,
        });
    }
    out
}

/// The ownership tracker (RAM the host's, warden's region warden's; carveouts start as the
/// host's, mapped in its stage-2 like any RAM) and one empty stage-2 per peer named by a
/// carveout, VMID 1 + peer number.
fn handoff_state(
    p: &PlatformInfo,
    warden: MemRange,
    host: &HostStage2,
    carveouts: &[CarveoutDesc],
    frames: &mut PoolFrames,
) -> Result<(HandoffState, Vec<PeerStage2>), alloc::string::String> {
    let mut tracker = OwnershipTracker::new();
    for bank in p.memory.iter() {
        let below = MemRange::new(bank.start, warden.start.clamp(bank.start, bank.end));
        let above = MemRange::new(warden.end.clamp(bank.start, bank.end), bank.end);
        for r in [below, above].into_iter().filter(|r| !r.is_empty()) {
            tracker.add(r, PageState::Host).map_err(|e| alloc::format!("RAM {r}: {e}"))?;
        }
    }
    tracker.add(warden, PageState::Warden).map_err(|e| alloc::format!("warden: {e}"))?;
    let list: Vec<crate::handoff::Carveout> = carveouts.iter().map(|c| c.carveout()).collect();
    let mut state = HandoffState::new(tracker, &list).map_err(|e| alloc::format!("{e:?}"))?;
    // Rule 1: no carveout (managed or not) and no no-map region is host memory warden touches.
    state.exclude_from_host_memory(&excluded_ranges(p));
    let mut peers: Vec<PeerStage2> = Vec::new();
    for c in carveouts {
        if peers.iter().any(|p| p.id == c.peer) {
            continue;
        }
        let table = PageTable::<Stage2>::new(host.config.layout(), frames)
            .map_err(|e| alloc::format!("peer {:?} stage-2: {e}", c.peer))?;
        peers.push(PeerStage2 {
            id: c.peer,
            vmid: 1 + u16::from(c.peer.get()),
            table: spin::Mutex::new(table),
        });
    }
    Ok((state, peers))
}

/// The simulated peer's program, embedded by the board (built by `cargo xtask build`).
#[cfg(feature = "board-qemu-virt")]
fn sim_peer_program() -> &'static [u8] {
    boards::sim_peer::PROGRAM
}

/// Boards without a simulated peer embed no program ([`SimPeer::set_up`] refuses an empty one).
#[cfg(not(feature = "board-qemu-virt"))]
fn sim_peer_program() -> &'static [u8] {
    &[]
}

/// Takes the (first) SMMU: reset, warden's own queues and stream table, and the virtual SMMU
/// the host will drive: every PCI function present now starts with the real STE of the virtual
/// SMMU's reset state (SMMUv3: disabled with GBPA in bypass, i.e. warden's host stage 2 alone;
/// MMU-500: a valid abort STE), and the host configures it through the virtual SMMU: its stage
/// 1 nested over warden's host stage 2, or stage 2 alone for bypass. If the real SMMU cannot nest, there is no virtual SMMU and the
/// functions get stage-2-only STEs walking the host's stage-2 tables themselves (one source of
/// truth: a later change to the host's stage-2 applies to DMA too, once the SMMU's TLB is
/// invalidated). Every other stream ID aborts and is reported.
#[allow(clippy::type_complexity)]
fn take_smmu(
    p: &PlatformInfo,
    s2: &mut HostStage2,
    vtcr: u64,
    vttbr: u64,
    frames: &mut PoolFrames,
    persona: crate::persona::Persona,
) -> Result<(Option<Smmu<MmioSmmu>>, Option<vsmmu::VirtSmmuState>), BootError> {
    if !boards::HAS_SMMUV3 {
        // This board's image has no SMMUv3 back end: a DT naming one is not this board.
        return match p.smmu() {
            Some(info) => Err(BootError::NoSmmuV3BackEnd(info.regs)),
            None => Ok((None, None)),
        };
    }
    let Some(info) = p.smmu() else {
        log::warn!(
            "no SMMU in the DT: PCIe and every other DMA-capable device are withheld from the host (dt::policy)"
        );
        return Ok((None, None));
    };
    quiesce_other_smmus(p)?;
    // SAFETY: the SMMU's register frames are mapped as device memory at EL2
    // (build_el2_tables) and absent from the host's stage-2, so warden is their only user.
    let io = unsafe { MmioSmmu::new(info.regs) }.map_err(BootError::SmmuRegs)?;
    let sid_bits = p
        .pcie
        .iter()
        .flat_map(|h| h.iommu_map.iter())
        .map(|m| u64::from(m.sid_base) + u64::from(m.length))
        .max()
        .map_or(16, |end| (64 - end.saturating_sub(1).leading_zeros()).max(1));
    let mut smmu = Smmu::init(io, SmmuConfig::new(sid_bits, s2.config.ipa_bits()), frames)
        .map_err(BootError::Smmu)?;
    let ecams: Vec<MemRange> = p.pcie.iter().map(|h| h.ecam).collect();
    // SAFETY: every ECAM window is mapped as device memory at EL2 (build_el2_tables); reading
    // config space has no side effects.
    let ecam = unsafe { MmioEcam::new(&ecams) };
    let sids = crate::smmu::pci::host_stream_ids(&p.pcie, info.phandle, &ecam);
    let (virt, smmu_s2) = match vsmmu::set_up(
        &mut smmu, info, p.gic_dist, s2, &sids, frames, persona,
    ) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("no virtual SMMU for the host: {e}");
            smmu.install_stage2_only(&sids, &S2Config::from_vtcr_vttbr(vtcr, vttbr), frames)
                .map_err(BootError::Smmu)?;
            log::info!(
                "SMMU {} taken: stage-2-only (host VMID {HOST_VMID}, the CPU's tables) for stream IDs {:x?}; all others abort",
                info.regs,
                sids
            );
            return Ok((Some(smmu), None));
        }
    };
    if let Some(root) = s2.table.mirror_root_pa() {
        SMMU_STAGE2_ROOT.store(root, Ordering::Release);
    }
    // The host's streams start as the virtual SMMU's reset state says: the MMU-500 face's
    // streams fault until the host maps them; the SMMUv3 face is disabled with GBPA in bypass,
    // which is warden's stage 2 alone (the real STE a host STE asking for bypass gets).
    let reset = match &*virt.face.lock() {
        vsmmu::Face::Smmuv3(v) => v.reset_ste(),
        vsmmu::Face::Mmu500(_) => crate::smmu::virt::ste::RealSte::Abort,
    };
    let ste = reset
        .to_ste(&smmu_s2, smmu.features())
        .map_err(|e| BootError::Smmu(crate::smmu::SmmuError::Stage2(e)))?;
    smmu.install(&sids, &ste, frames).map_err(BootError::Smmu)?;
    if let Some(irqs) = virt.mmu500_irqs {
        log::info!(
            "SMMU {} taken; virtual MMU-500 (qcom,sc7280-smmu-500) for the host at the same address ({} context banks, {} stream match groups, stage 1 nested over host VMID {HOST_VMID}, global irq {}, context irqs {:?}); stream IDs {:x?} fault until the host maps them, all others abort",
            info.regs,
            crate::smmu::v2::regs::NUM_CB,
            crate::smmu::v2::regs::NUM_SMRG,
            irqs.global,
            irqs.contexts,
            sids
        );
        if virt.gicd.is_none() {
            log::warn!("no GIC distributor in the DT: the virtual MMU-500 raises no interrupts");
        }
        return Ok((Some(smmu), Some(virt)));
    }
    let adv = match &*virt.face.lock() {
        vsmmu::Face::Smmuv3(v) => *v.registers().advertised(),
        vsmmu::Face::Mmu500(_) => unreachable!("the MMU-500 face returned above"),
    };
    log::info!(
        "SMMU {} taken; virtual SMMUv3 for the host at the same address (stage 1 nested over host VMID {HOST_VMID}, OAS {} bits, {}-bit SIDs, {}-bit ASIDs, irqs {:?}); stream IDs {:x?} on warden's stage 2 alone until the host configures them (reset: SMMUEN = 0, GBPA bypass), all others abort",
        info.regs,
        adv.oas_bits(),
        adv.sid_bits,
        if adv.asid16 { 16 } else { 8 },
        virt.irqs,
        sids
    );
    if virt.gicd.is_none() {
        log::warn!("no GIC distributor in the DT: the virtual SMMU raises no interrupts");
    }
    Ok((Some(smmu), Some(virt)))
}

/// Every SMMU after the first (which warden drives): GBPA.ABORT set and SMMUEN off
/// (`smmu::quiesce`), so no DMA passes through one untranslated. A failure stops the boot.
fn quiesce_other_smmus(p: &PlatformInfo) -> Result<(), BootError> {
    for other in p.smmus.iter().skip(1) {
        // SAFETY: every SMMU's register frames are mapped as device memory at EL2
        // (build_el2_tables) and absent from the host's stage 2 and DT: warden is their only
        // user.
        let io = unsafe { MmioSmmu::new(other.regs) }.map_err(BootError::SmmuRegs)?;
        crate::smmu::quiesce::abort_all_traffic(&io, crate::smmu::DEFAULT_POLL_LIMIT)
            .map_err(|e| BootError::OtherSmmu(other.regs, e))?;
        log::info!(
            "SMMU {} ({}) not driven by warden: GBPA.ABORT set, SMMUEN off, hidden from the host",
            other.regs,
            other.path
        );
    }
    Ok(())
}

/// Logs what the SMMU reported since the last call (warden has no interrupt of its own: the host
/// owns the GIC, so events are collected whenever warden runs).
fn drain_smmu_events(w: &Warden) {
    // The apps MMU-500's faults (a board's) go into the host's face as the SMMUv3's do.
    vsmmu::forward_events(w, &mmu500::poll_faults());
    if !boards::HAS_SMMUV3 {
        return;
    }
    // Another CPU draining (or a transfer invalidating) already is as good as this one doing
    // it: events are collected the next time.
    let Some(mut guard) = w.smmu.try_lock() else { return };
    let Some(smmu) = guard.as_mut() else { return };
    // A device stuck retrying a refused DMA can produce thousands: same rate limit as
    // violations (the first few in full, then every 2^k-th), with the running total.
    let mut records: ArrayVec<[u64; 4], { 1 << crate::smmu::EVTQ_LOG2_MAX }> = ArrayVec::new();
    let drained = smmu.drain_raw_events(|raw| {
        let n = SMMU_EVENTS.fetch_add(1, Ordering::Relaxed) + 1;
        if trap::should_log(n) {
            log::warn!("{} (SMMU event #{n})", crate::smmu::Event::decode(raw));
        }
        let _ = records.try_push(raw);
    });
    drop(guard);
    if drained.overflowed {
        log::warn!("SMMU event queue overflowed: events were lost");
    }
    if drained.global_errors != 0 {
        log::warn!(
            "SMMU global errors {:#x} acknowledged (EVTQ_ABT_ERR {:#x}: events were lost)",
            drained.global_errors,
            crate::smmu::regs::GERROR_EVTQ_ABT_ERR
        );
    }
    // The host's own devices' events go to its virtual SMMU's event queue too.
    vsmmu::forward_events(w, &records);
}

/// SMMU events seen since boot.
static SMMU_EVENTS: AtomicU64 = AtomicU64::new(0);

/// The DT the host boots with: the host's view of the platform (`crate::host_dt::host_view`:
/// warden's memory reserved `no-map`, withheld devices and the peer's CPU removed, the control
/// page added, ...) plus the payload's command line and initrd in /chosen, and the RAM when it
/// came from SMEM (`Board::ram_source`).
#[cfg(warden_packed)]
fn patch_host_dt(
    blob: &[u8],
    p: &PlatformInfo,
    l: &Layout,
    payload: &Payload,
    view: &crate::host_dt::HostView<'_>,
) -> Result<Vec<u8>, dt::DtError> {
    let mut edit = crate::host_dt::host_view(p, view);
    let cmd = cmdline(payload.cmdline_len);
    if !cmd.is_empty() {
        edit = edit.set_chosen_bootargs(cmd);
    }
    if let Some(initrd) = l.initrd {
        edit = edit.set_chosen_initrd(initrd);
    }
    // The RAM warden read from SMEM fills the DT's placeholder `/memory` for the next stage.
    if let boards::RamSource::QcomSmem { .. } = boards::CURRENT.ram_source {
        edit = edit.set_memory(&p.memory);
    }
    dt::apply(blob, &edit)
}

/// The carveout the Snapdragon persona offers as Qualcomm's rmtfs region (the remote file
/// system's buffer between Linux's rmtfs daemon and the modem): the first carveout warden
/// manages for the modem. Its node name in the DT, logged.
fn rmtfs_region(p: &PlatformInfo, managed: &[CarveoutDesc]) -> Option<dt::NodeName> {
    let modem = managed.iter().find(|c| c.peer == PeerId::MODEM)?;
    let node = p.carveouts.iter().find(|c| c.range == modem.range)?;
    log::info!(
        "SCM: rmtfs region (qcom,rmtfs-mem, client {}, VM MSS_MSA) is carveout \
         {} {}",
        crate::host_dt::RMTFS_CLIENT_ID,
        node.name,
        node.range
    );
    Some(node.name)
}

/// One line naming the interrupt controller and what of it the host gets.
fn log_gic(p: &PlatformInfo, version: GicVersion) {
    match (version, p.gicv2.as_ref()) {
        (GicVersion::V2, Some(g)) => log::info!(
            "interrupt controller: GICv2 ({}): GICD {} and GICC {} passed through{}",
            g.path,
            g.dist,
            g.cpu,
            match (g.hyp, g.vcpu) {
                (None, None) => alloc::string::String::new(),
                (h, v) => alloc::format!(
                    "; GICH {} and GICV {} withheld (a hypervisor's)",
                    h.map_or_else(|| "-".into(), |r| alloc::format!("{r}")),
                    v.map_or_else(|| "-".into(), |r| alloc::format!("{r}"))
                ),
            }
        ),
        _ => log::info!(
            "interrupt controller: {version}: system-register CPU interface for EL1, ITS and redistributor LPI tables emulated"
        ),
    }
}

/// One line per device the host is not given, and why (`dt::policy`).
fn log_withheld_devices(p: &PlatformInfo) {
    for w in p.withheld.iter() {
        match w.regs {
            Some(r) => log::info!("  withheld   {r} ({}): {}", w.path, w.why),
            None => log::info!("  withheld   {}: {}", w.path, w.why),
        }
    }
}

/// Boot failures after the DT was read.
#[derive(Debug)]
enum BootError {
    AddressTooHigh(u64),
    /// The DT lies in a carveout or a `no-map` region, which warden's EL2 stage-1 leaves out.
    DtInExcluded(MemRange),
    /// More EL2 regions than the boot-time list holds.
    TooManyRegions,
    PaRange,
    Frames(crate::mm::FrameError),
    El2Map(crate::mm::El2MapError),
    Stage2(crate::mm::HostStage2Error),
    SmmuRegs(crate::smmu::RegsTooSmall),
    Smmu(crate::smmu::SmmuError),
    OtherSmmu(MemRange, crate::smmu::quiesce::QuiesceError),
    /// The DT names an SMMUv3 on a board whose image has no SMMUv3 back end
    /// ([`boards::HAS_SMMUV3`]): its devices would reach memory unconfined.
    NoSmmuV3BackEnd(MemRange),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::AddressTooHigh(a) => write!(f, "address {a:#x} is beyond 48 bits"),
            BootError::DtInExcluded(r) => write!(
                f,
                "the DT lies in {r}, a carveout or no-map region (warden never maps those)"
            ),
            BootError::TooManyRegions => write!(f, "too many regions for warden's own map"),
            BootError::PaRange => write!(f, "ID_AA64MMFR0_EL1.PARange has a reserved value"),
            BootError::Frames(e) => write!(f, "{e}"),
            BootError::El2Map(e) => write!(f, "{e}"),
            BootError::Stage2(e) => write!(f, "{e}"),
            BootError::SmmuRegs(e) => write!(f, "{e}"),
            BootError::Smmu(e) => write!(f, "{e}"),
            BootError::NoSmmuV3BackEnd(regs) => write!(
                f,
                "the DT names an SMMUv3 at {regs}, and this board's image has no SMMUv3 back end"
            ),
            BootError::OtherSmmu(regs, e) => write!(
                f,
                "SMMU at {regs} (not driven by warden) could not be made to abort DMA: {e}; refusing to boot (DMA through it would be unconfined)"
            ),
        }
    }
}

/// Secondary CPU entry from the assembly (MMU on, stack set). `el3_x0`: on a hyp-entry board,
/// the entry TrustZone passed (the one warden gave it for this CPU).
pub extern "C" fn secondary_main(boot: &SecondaryBoot, el3_x0: u64) -> ! {
    let cpu = boot.cpu_index as usize;
    sysreg::set_tpidr_el2(cpu as u64);
    let w = warden();
    if let Some(sim) = w.sim_peer().filter(|s| s.cpu_index == cpu) {
        sim_peer::enter(w, sim)
    }
    match w.trap.psci().secondary_arrived(cpu) {
        // TZ enters the host's CPU_ON entry, which warden forwarded (`Platform::el3_entry`);
        // another one means TZ and warden disagree about this CPU.
        Ok(host)
            if matches!(w.board.entry, EntryConvention::Hyp { .. }) && el3_x0 != host.entry =>
        {
            log::error!(
                "cpu{cpu} entered from TrustZone for {el3_x0:#x}, but the host asked for {:#x}: parking it",
                host.entry
            );
            hw::park()
        }
        Ok(host) => enter_host_on_this_cpu(w, host.entry, host.context),
        Err(e) => {
            log::error!("cpu{cpu} arrived in warden but {e:?}: parking it");
            hw::park()
        }
    }
}

/// The DT blob the boot loader passed, bounded by its header's `totalsize`.
fn read_dt(dt_pa: u64) -> Result<&'static [u8], DtLoadError> {
    if dt_pa == 0 || !dt_pa.is_multiple_of(8) {
        return Err(DtLoadError::BadPointer(dt_pa));
    }
    // SAFETY: the boot protocol puts a DT at x0; only its 40-byte header is read here, and
    // blob_size checks the magic before trusting totalsize.
    let header = unsafe { core::slice::from_raw_parts(dt_pa as *const u8, DT_HEADER_SIZE) };
    let size = dt::blob_size(header).map_err(DtLoadError::Dt)?;
    // SAFETY: the header says the blob spans `size` bytes from dt_pa; the boot loader placed it
    // in RAM that stays untouched until warden has copied what it needs.
    Ok(unsafe { core::slice::from_raw_parts(dt_pa as *const u8, size) })
}

/// Size of the flattened-DT header `blob_size` reads.
const DT_HEADER_SIZE: usize = 40;

#[derive(Debug)]
enum DtLoadError {
    BadPointer(u64),
    Dt(dt::DtError),
}

impl core::fmt::Display for DtLoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtLoadError::BadPointer(p) => write!(
                f,
                "DT: x0 = {p:#x} at entry is not a DT address (the boot loader must pass an 8-byte aligned DT)"
            ),
            DtLoadError::Dt(e) => write!(f, "{e}"),
        }
    }
}

/// The host payload inside the packed image, located and checked.
#[cfg(warden_packed)]
#[derive(Clone, Copy, Debug)]
struct Payload {
    kernel: MemRange,
    kernel_header: Arm64ImageHeader,
    initrd: Option<MemRange>,
    cmdline_len: usize,
}

#[cfg(warden_packed)]
fn locate_payload(image: &hw::ImageLayout) -> Result<Payload, PayloadErrorMsg> {
    let desc = PayloadDescriptor::decode(&hw::payload_descriptor_bytes())
        .map_err(PayloadErrorMsg::Format)?;
    // The header's image_size covers the whole packed file (the packer sets it).
    // SAFETY: the image header is the first 64 bytes of warden's own image.
    let header =
        unsafe { core::ptr::read_volatile(image.start as *const [u8; payload::IMAGE_HEADER_SIZE]) };
    let image_len = u64::from_le_bytes(header[16..24].try_into().unwrap_or([0; 8]));
    desc.validate(image_len).map_err(PayloadErrorMsg::Format)?;
    let kernel = MemRange::from_base_size(image.start + desc.kernel_offset, desc.kernel_size)
        .ok_or(PayloadErrorMsg::Format(payload::PayloadError::BadBounds("kernel")))?;
    // SAFETY: validate() checked the kernel lies inside the loaded image.
    let kernel_bytes = unsafe {
        core::slice::from_raw_parts(
            kernel.start as *const u8,
            (kernel.size() as usize).min(payload::IMAGE_HEADER_SIZE),
        )
    };
    let kernel_header = Arm64ImageHeader::parse(kernel_bytes).map_err(PayloadErrorMsg::Format)?;
    let initrd = (desc.initrd_size != 0)
        .then(|| MemRange::from_base_size(image.start + desc.initrd_offset, desc.initrd_size))
        .flatten();
    let cmdline_len = desc.cmdline_size as usize;
    if cmdline_len >= CMDLINE_MAX {
        return Err(PayloadErrorMsg::CmdlineTooLong(cmdline_len));
    }
    // Keep the command line: its bytes sit in the pool, which is reused once the payload moved.
    // SAFETY: validate() bounded the command line inside the image; CMDLINE is only written
    // here, on the boot CPU, before any other CPU runs.
    unsafe {
        let src = (image.start + desc.cmdline_offset) as *const u8;
        core::ptr::copy_nonoverlapping(
            src,
            core::ptr::addr_of_mut!(CMDLINE) as *mut u8,
            cmdline_len,
        );
    }
    Ok(Payload { kernel, kernel_header, initrd, cmdline_len })
}

#[cfg(warden_packed)]
#[derive(Debug)]
enum PayloadErrorMsg {
    Format(payload::PayloadError),
    CmdlineTooLong(usize),
}

#[cfg(warden_packed)]
impl core::fmt::Display for PayloadErrorMsg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PayloadErrorMsg::Format(e) => write!(f, "{e}"),
            PayloadErrorMsg::CmdlineTooLong(n) => {
                write!(f, "command line is {n} bytes; at most {} are accepted", CMDLINE_MAX - 1)
            }
        }
    }
}

#[cfg(warden_packed)]
fn cmdline(len: usize) -> &'static str {
    // SAFETY: CMDLINE was filled once at boot and is read-only afterwards.
    let bytes = unsafe { &(&*core::ptr::addr_of!(CMDLINE))[..len.min(CMDLINE_MAX)] };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// Moves the parts not already in place to their planned places (initrd first: each
/// destination is above its source and the kernel's lies below the initrd's, so `memmove`'s
/// backward copy never overwrites bytes still to be moved). Returns the bytes moved.
#[cfg(warden_packed)]
fn move_payload(p: &Payload, l: &Layout) -> u64 {
    let mut moved = 0;
    for m in l.moves(p.kernel, p.initrd).into_iter().flatten() {
        // SAFETY: both ranges are RAM the planner reserved for this part (the source inside
        // the loaded image, the destination clear of warden, reserved memory and the DT),
        // mapped RW at EL2; overlap is allowed (memmove).
        unsafe { core::ptr::copy(m.src as *const u8, m.dst as *mut u8, m.len as usize) };
        moved += m.len;
    }
    moved
}

/// Hands the pool (free now that the payload moved out) to the heap and the frame allocator.
fn init_pool(image: &hw::ImageLayout) {
    // SAFETY: [pool_start, pool_start + HEAP_SIZE) is warden's own memory, mapped RW, and no
    // longer holds payload bytes.
    unsafe { HEAP.heap.lock().init(image.pool_start as usize, HEAP_SIZE as usize) };
}

fn print_memory_map(p: &PlatformInfo, warden: MemRange, image: &hw::ImageLayout) {
    log::info!("memory map:");
    for r in p.memory.iter() {
        log::info!("  RAM        {r}");
    }
    for r in p.reserved.iter() {
        let in_ram = p.memory.iter().any(|bank| bank.contains_range(&r.range));
        log::info!(
            "  reserved   {} ({}{})",
            r.range,
            r.name,
            if r.no_map { ", no-map" } else { "" }
        );
        if r.carveout && !in_ram {
            // Reported, not fatal: warden hands over RAM only, and the host's stage-2 maps
            // only RAM and devices, so the host cannot reach it as memory either way.
            log::error!(
                "carveout {} {} is not inside RAM: not managed (CARVEOUT_COUNT leaves it out)",
                r.name,
                r.range
            );
        }
    }
    log::info!(
        "  warden     {} (image {:#x}..{:#x}, pool {:#x}..{:#x})",
        warden,
        image.start,
        image.bss_end,
        image.pool_start,
        image.pool_end
    );
    for s in p.smmus.iter() {
        log::info!("  SMMU       {} ({}: absent from host stage-2)", s.regs, s.path);
    }
}

/// Where the packed payload went, and its command line.
#[cfg(warden_packed)]
fn print_payload(l: &Layout, payload: &Payload) {
    log::info!("  kernel     {} ({} bytes of Image)", l.kernel, payload.kernel.size());
    if let Some(i) = l.initrd {
        log::info!("  initrd     {i}");
    }
    log::info!("  host DT    {}", l.dt);
    log::info!("  cmdline    \"{}\"", cmdline(payload.cmdline_len));
}

/// The panic path: report, stop the other CPUs, park.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let cpu = cpu_index();
    let first = !PANICKED.swap(true, Ordering::SeqCst);
    if let Some(loc) = info.location() {
        console::print_unlocked(format_args!(
            "\nwarden: PANIC on cpu{cpu} at {}:{}: {}\n",
            loc.file(),
            loc.line(),
            info.message()
        ));
    } else {
        console::print_unlocked(format_args!("\nwarden: PANIC on cpu{cpu}: {}\n", info.message()));
    }
    if first {
        stop_the_world();
        console::print_unlocked(format_args!("warden: all CPUs stopped\n"));
    }
    hw::park()
}

/// Makes every other CPU trap into warden and park: the host stage-2 root is emptied and the
/// stage-2 TLBs dropped, so the next host access anywhere faults to EL2, where `lower_sync`
/// sees PANICKED. (The host owns the GIC, so warden has no IPI of its own to send.)
fn stop_the_world() {
    let root = STAGE2_ROOT.load(Ordering::Acquire);
    let size = STAGE2_ROOT_SIZE.load(Ordering::Acquire);
    if root == 0 {
        return;
    }
    let tlb = Hw;
    for off in (0..size).step_by(8) {
        // SAFETY: root..root+size is the host stage-2 root table(s) in warden's pool.
        unsafe { core::ptr::write_volatile((root + off) as *mut u64, 0) };
    }
    let smmu_root = SMMU_STAGE2_ROOT.load(Ordering::Acquire);
    if smmu_root != 0 {
        for off in (0..size).step_by(8) {
            // SAFETY: the SMMU view's root has the host root's size, in warden's pool.
            unsafe { core::ptr::write_volatile((smmu_root + off) as *mut u64, 0) };
        }
    }
    use crate::arch::TlbMaintenance;
    tlb.dsb_ishst();
    tlb.tlbi_vmalls12e1is();
    tlb.dsb_ish();
    tlb.isb();
}

/// An exception taken from EL2 itself: a warden bug. Report everything and stop.
pub extern "C" fn el2_exception(frame: &mut TrapFrame, kind: u64) {
    panic!(
        "EL2 exception kind {kind}: {} ELR {:#x} FAR {:#x} SPSR {:#x}",
        trap::esr::Esr(frame.esr),
        frame.elr,
        frame.far,
        frame.spsr
    );
}

/// A synchronous exception from the host.
pub extern "C" fn lower_sync(frame: &mut TrapFrame, _kind: u64) {
    if PANICKED.load(Ordering::Acquire) {
        hw::park();
    }
    trap::profile::begin();
    let entry = sysreg::counter();
    let w = warden();
    if vsmmu::fast_access(w, frame) {
        w.trap.count_fast_data_abort();
    } else {
        // The profile restarts: the stamps of a fast path that gave up are older than this.
        trap::profile::begin();
        stop_peer_if_asked(w);
        trap::profile::mark(trap::profile::Phase::Enter);
        w.trap.handle_lower_sync(frame, &mut HwPlatform { w });
        drain_smmu_events(w);
        trap::profile::mark(trap::profile::Phase::Drain);
    }
    w.trap.add_el2_ticks(sysreg::counter().wrapping_sub(entry));
    trap::profile::mark(trap::profile::Phase::Exit);
    trap::profile::end();
}

/// An HVC or SMC64 from the host, on the vector's fast path (`vectors.S`, `lower_call_body`):
/// only x0..x18 and x30 are saved, in `regs` (the start of the frame), and ELR_EL2/SPSR_EL2
/// are still in their registers. Answers a [`trap::fast::FastCall`] and returns 1; returns 0
/// without touching anything for every other call, which the vector then completes the frame
/// for and hands to [`lower_sync`]. No event drain here: a constant query cannot have made the
/// real SMMU report anything, and the next trap of any other kind drains as before.
pub extern "C" fn lower_call(regs: &mut trap::fast::CallRegs) -> u64 {
    // After a panic the full path parks this CPU; the simulated peer's CPU may have to stop.
    if PANICKED.load(Ordering::Relaxed) {
        return 0;
    }
    let Some(call) = trap::fast::FastCall::lookup(trap::esr::Esr(sysreg::esr_el2()), regs.x[0])
    else {
        return 0;
    };
    let w = warden();
    if w.sim_peer().is_some_and(|s| s.cpu_index == cpu_index()) {
        return 0;
    }
    trap::profile::begin();
    let entry = sysreg::counter();
    trap::profile::kind(trap::profile::Kind::Call);
    trap::profile::mark(trap::profile::Phase::Decode);
    call.answer(regs);
    if call.skips_instruction {
        sysreg::skip_trapped_instruction();
    }
    trap::profile::mark(trap::profile::Phase::Work);
    w.trap.count_fast_call();
    w.trap.add_el2_ticks(sysreg::counter().wrapping_sub(entry));
    trap::profile::mark(trap::profile::Phase::Exit);
    trap::profile::end();
    1
}

/// On the simulated peer's CPU: a peer warden is stopping powers off at its first trap.
fn stop_peer_if_asked(w: &Warden) {
    if let Some(sim) = w.sim_peer().filter(|s| s.cpu_index == cpu_index()) {
        sim_peer::stop_if_asked(sim);
    }
}

/// RAM the host owns: every bank minus warden's region (and, later, carveouts).
fn host_ram_ranges(p: &PlatformInfo, warden: MemRange) -> Vec<MemRange> {
    let mut out = Vec::new();
    for bank in p.memory.iter() {
        let below = MemRange::new(bank.start, warden.start.clamp(bank.start, bank.end));
        let above = MemRange::new(warden.end.clamp(bank.start, bank.end), bank.end);
        out.extend([below, above].into_iter().filter(|r| !r.is_empty()));
    }
    out
}

/// warden's buffer for the lists of a forwarded assign_mem (`trap::scm::forward`): in warden's
/// image (BSS), which the host cannot reach; EL2's map is the identity, so its address is its
/// physical address.
static FORWARDED_ASSIGN_LISTS: spin::Mutex<trap::scm::forward::AssignLists> =
    spin::Mutex::new(trap::scm::forward::AssignLists::new());

/// `DC CVAC` + `DSB SY` and `SMC #0` for a forwarded assign_mem.
struct HwScmConduit;

impl trap::scm::forward::ScmConduit for HwScmConduit {
    fn clean_to_poc(&mut self, addr: u64, len: u64) {
        dcache_range(&Hw, CacheOp::Clean, addr, len);
    }

    fn smc(&mut self, regs: [u64; 8]) -> [u64; 4] {
        hw::smc(regs)
    }
}

/// The hardware side of trap handling on this CPU.
struct HwPlatform<'a> {
    w: &'a Warden,
}

/// The SMMUv3 of a board whose image has none ([`boards::HAS_SMMUV3`]): nothing to invalidate.
static NO_SMMUV3: spin::Mutex<Option<core::convert::Infallible>> = spin::Mutex::new(None);

/// Runs `f` with the context every transfer runs in (this CPU, the shared tables and tracker):
/// warden's ABI, the control page and SCM's assign_mem all reach the handoff code this way.
fn with_handoff_ctx<T>(
    w: &Warden,
    f: impl FnOnce(&HandoffCtx<'_, Hw, dyn crate::handoff::DmaStage2 + '_, PoolFrames>) -> T,
) -> T {
    let peers: Vec<PeerRef<'_>> = w
        .peers
        .iter()
        .map(|p| PeerRef {
            id: p.id,
            stage2: Stage2Ref { vmid: p.vmid, table: &p.table, attrs: PEER_DATA_ATTRS },
        })
        .collect();
    let ctx = HandoffCtx {
        cpu: &Hw,
        smmu: if boards::HAS_SMMUV3 {
            mmu500::dma_stage2(&w.smmu)
        } else {
            mmu500::dma_stage2(&NO_SMMUV3)
        },
        frames: &w.frames,
        host: Stage2Ref { vmid: HOST_VMID, table: &w.host_stage2, attrs: HOST_RAM_ATTRS },
        peers: &peers,
        state: &w.handoff,
        el2: &w.el2_table,
    };
    f(&ctx)
}

impl trap::scm::ScmHost for HwPlatform<'_> {
    fn read_host(&self, ipa: u64, buf: &mut [u8]) -> Result<(), trap::scm::Refused> {
        let range = MemRange::from_base_size(ipa, buf.len() as u64).ok_or(trap::scm::Refused)?;
        // The tracker stays locked for the copy: the range cannot change owner meanwhile.
        let host = self.w.handoff.host_memory();
        let allowed = host.allows(range);
        if !allowed {
            return Err(trap::scm::Refused);
        }
        let src = crate::arch::select_nospec(allowed, ipa);
        dcache_range(&Hw, CacheOp::CleanInvalidate, src, range.size());
        // SAFETY: the range is host memory warden may touch (rule 1), which warden's EL2
        // stage-1 maps identity RW; the tracker lock held by `host` keeps it the host's for
        // this copy. The host may change it concurrently: bytes are copied, no reference made.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn assign(
        &mut self,
        range: MemRange,
        from: crate::handoff::assign::Holders,
        to: crate::handoff::assign::Holders,
        forward: Option<&trap::scm::forward::ForwardedAssign>,
    ) -> Result<crate::handoff::assign::AssignOutcome, crate::handoff::assign::AssignError> {
        use crate::handoff::assign::assign;
        let carveouts = &self.w.carveouts;
        let Some(call) = forward.filter(|_| self.can_forward()) else {
            let mut none = crate::handoff::NoFirmware;
            return with_handoff_ctx(self.w, |ctx| {
                assign(ctx, carveouts, range, from, to, &mut none)
            });
        };
        // One forwarded assign_mem at a time: its lists live in this one buffer of warden's
        // until the firmware has answered (and any undo is made).
        let mut lists = FORWARDED_ASSIGN_LISTS.lock();
        let lists_pa = core::ptr::from_ref::<trap::scm::forward::AssignLists>(&*lists) as u64;
        let mut conduit = HwScmConduit;
        let mut tz = trap::scm::forward::TzAssign::new(&mut conduit, &mut lists, lists_pa, *call);
        with_handoff_ctx(self.w, |ctx| assign(ctx, carveouts, range, from, to, &mut tz))
    }

    fn holders(
        &self,
        range: MemRange,
        peer: PeerId,
    ) -> Result<crate::handoff::assign::Holders, crate::handoff::assign::AssignError> {
        with_handoff_ctx(self.w, |ctx| {
            crate::handoff::assign::holders(ctx, &self.w.carveouts, range, peer)
        })
    }

    fn can_forward(&self) -> bool {
        self.w.board.scm_firmware && self.w.board.firmware == boards::Firmware::Smccc
    }

    fn forward(&mut self, call: &trap::scm::ScmCall) -> Option<[u64; 4]> {
        self.can_forward().then(|| hw::smc(call.regs))
    }

    fn forward_holding(
        &mut self,
        call: &trap::scm::ScmCall,
        held: &trap::scm::policy::heapless_ranges::Ranges,
    ) -> Result<Option<[u64; 4]>, trap::scm::Refused> {
        // The tracker stays locked until the firmware has answered: no page of `held` can be
        // donated or assigned away while the firmware reads or writes it.
        let host = self.w.handoff.host_memory();
        if !held.iter().all(|r| host.allows(r)) {
            return Err(trap::scm::Refused);
        }
        let answer = self.can_forward().then(|| hw::smc(call.regs));
        drop(host);
        Ok(answer)
    }

    fn host_maps_register(&self, pa: u64, write: bool) -> bool {
        use crate::mm::pgtable::MemKind;
        let t = self.w.host_stage2.lock().translate(pa);
        t.is_some_and(|t| {
            t.pa == pa
                && t.attrs.kind == MemKind::Device
                && t.attrs.perms.read
                && (t.attrs.perms.write || !write)
        })
    }

    fn firmware_may_take(&self, range: MemRange) -> bool {
        self.w.handoff.in_no_map_region(range)
    }

    fn pas_region(&self, peer: PeerId) -> Option<MemRange> {
        self.w.pas_regions.lock().iter().find(|(p, _)| *p == peer).map(|(_, r)| *r)
    }

    fn set_pas_region(&mut self, peer: PeerId, region: Option<MemRange>) {
        let mut regions = self.w.pas_regions.lock();
        regions.retain(|(p, _)| *p != peer);
        if let Some(r) = region {
            regions.push((peer, r));
        }
    }
}

impl Platform for HwPlatform<'_> {
    fn cpu_index(&self) -> usize {
        cpu_index()
    }

    fn board(&self) -> Board {
        self.w.board
    }

    fn host_el1(&self) -> HostEl1 {
        let (tcr, ttbr0, ttbr1) = sysreg::el1_translation();
        HostEl1 {
            vbar: sysreg::el1_vbar(),
            sctlr: sysreg::el1_sctlr(),
            features: self.w.el1_features,
            regime: trap::s1walk::El1Regime { tcr, ttbr0, ttbr1 },
        }
    }

    fn write_host_el1_exception(&mut self, regs: &El1ExceptionRegs) {
        sysreg::write_el1_exception(regs.esr, regs.far, regs.elr, regs.spsr);
    }

    fn smc_to_el3(&mut self, args: [u64; 4]) -> [u64; 4] {
        hw::smc([args[0], args[1], args[2], args[3], 0, 0, 0, 0])
    }

    fn el3_entry(&self, host_entry: u64) -> u64 {
        match self.w.board.entry {
            // After the Gunyah exit TZ enters whatever EL2 asked for: warden's own entry.
            EntryConvention::LinuxImage | EntryConvention::UefiUnderGunyah { .. } => {
                hw::secondary_entry_address()
            }
            EntryConvention::Hyp { .. } => host_entry,
        }
    }

    fn secondary_context(&self, cpu_index: usize) -> u64 {
        secondary_boot_args(self.w, cpu_index)
    }

    fn is_host_ram(&self, addr: u64) -> bool {
        self.w.host_ram.iter().any(|r| r.contains(addr))
    }

    fn read_host_u64(&self, ipa: u64) -> Option<u64> {
        vsmmu::read_host_u64(self.w, ipa)
    }

    fn owner_of(&self, ipa: u64) -> Owner {
        service::owner_at(&self.w.handoff.tracker(), ipa)
    }

    fn stage2_allows(&self, ipa: u64, needed: Perms) -> bool {
        let table = match self.caller() {
            Caller::Host => &self.w.host_stage2,
            Caller::Peer(id) => match self.w.peers.iter().find(|p| p.id == id) {
                Some(p) => &p.table,
                None => return false,
            },
        };
        let allowed = table.lock().translate(ipa).is_some_and(|t| {
            let p = t.attrs.perms;
            (!needed.read || p.read) && (!needed.write || p.write) && (!needed.exec || p.exec)
        });
        if allowed {
            // The caller's stage-2 is current on this CPU: drop whatever its TLBs hold for the
            // page (a translation that faulted is never cached, but be exact about it).
            use crate::arch::TlbMaintenance;
            Hw.dsb_ishst();
            Hw.tlbi_ipas2e1is(ipa);
            Hw.dsb_ish();
            Hw.tlbi_vmalle1is();
            Hw.dsb_ish();
            Hw.isb();
        }
        allowed
    }

    fn caller(&self) -> Caller {
        match self.w.sim_peer() {
            Some(sim) if sim.cpu_index == cpu_index() => {
                sim.current().map_or(Caller::Host, |p| Caller::Peer(p.id))
            }
            _ => Caller::Host,
        }
    }

    fn handoff(&mut self, caller: Caller, request: &Request) -> Result<[u64; 8], AbiError> {
        with_handoff_ctx(self.w, |ctx| service::handle(ctx, &self.w.carveouts, caller, request))
    }

    fn peer_commands_available(&self) -> bool {
        self.w.sim_peer().is_some()
    }
    fn peer_command(&mut self, command: &PeerCommand) -> Result<u64, AbiError> {
        match self.w.sim_peer() {
            Some(sim) => sim_peer::run(self.w, sim, command),
            None => Err(AbiError::NotSupported),
        }
    }

    fn peer_done(&mut self) {
        sim_peer::done()
    }

    fn counter(&self) -> u64 {
        sysreg::counter()
    }

    fn smmu_stats(&self) -> Option<warden_abi::stats::SmmuStats> {
        vsmmu::stats(self.w).map(|s| match s {
            vsmmu::FaceStats::Smmuv3(s) => warden_abi::stats::SmmuStats {
                commands: s.commands,
                real_syncs: s.real_syncs,
                asids_retired: s.asids.retired,
                asids_freed: s.asids.freed,
                forced_flushes: s.asids.forced_flushes,
                events_forwarded: s.events_written,
                bypass_requests: s.bypass_requests,
            },
            // The MMU-500 face: host TLB maintenance and sync writes, faults reported.
            vsmmu::FaceStats::Mmu500(s) => warden_abi::stats::SmmuStats {
                commands: s.tlb_invalidations + s.tlb_syncs,
                real_syncs: s.real_syncs,
                asids_retired: s.asids.retired,
                asids_freed: s.asids.freed,
                forced_flushes: s.asids.forced_flushes,
                events_forwarded: s.global_faults + s.context_faults,
                bypass_requests: s.bypass_refusals,
            },
        })
    }

    fn persona(&self) -> crate::persona::Persona {
        self.w.persona
    }

    fn vsmmu_frames(&self) -> Option<MemRange> {
        self.w.vsmmu().map(|v| v.frames)
    }

    fn vsmmu_read(&mut self, offset: u32, size: u8) -> u64 {
        vsmmu::read(self.w, offset, size)
    }

    fn vsmmu_write(&mut self, offset: u32, size: u8, value: u64) {
        vsmmu::write(self.w, offset, size, value)
    }

    fn gic_frame(&self, ipa: u64) -> Option<(crate::gic::GicFrame, u32)> {
        self.w.gic().and_then(|g| g.layout.lookup(ipa))
    }

    fn gic_read(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8) -> u64 {
        gic::read(self.w, frame, offset, size)
    }

    fn gic_write(&mut self, frame: crate::gic::GicFrame, offset: u32, size: u8, value: u64) {
        gic::write(self.w, frame, offset, size, value)
    }

    fn before_system_power_down(&mut self) {
        drain_smmu_events(self.w);
        log_footprint_peak(self.w);
        log_handoff_profile();
        log_trap_profile();
        gic::log_stats(self.w);
        if let Some(vsmmu::FaceStats::Mmu500(s)) = vsmmu::stats(self.w) {
            log::info!(
                "vMMU-500: {} TLB invalidation(s), {} TLB sync(s) ({} retried), {} real sync(s), {} bank refusal(s), {} bypass refusal(s), {} bad access(es), faults: {} global, {} context, {} unreported; real ASIDs: {} retired, {} freed, {} forced flush(es), {} exhaustion flush(es)",
                s.tlb_invalidations,
                s.tlb_syncs,
                s.sync_retries,
                s.real_syncs,
                s.cb_refusals,
                s.bypass_refusals,
                s.bad_accesses,
                s.global_faults,
                s.context_faults,
                s.unreported_faults,
                s.asids.retired,
                s.asids.freed,
                s.asids.forced_flushes,
                s.asids.exhaustion_flushes
            );
        }
        if let Some(vsmmu::FaceStats::Smmuv3(s)) = vsmmu::stats(self.w) {
            log::info!(
                "vSMMU: {} command(s) ({} illegal), {} real sync(s), {} STE refusal(s), {} CD refusal(s), {} unreadable CD(s), {} GBPA update(s) asking for bypass, {} event(s) forwarded, not forwarded: {} (host event queue disabled), {} (queue full), {} (queue not in host memory); MSIs: {} written, {} refused; real ASIDs: {} retired, {} freed, {} forced flush(es), {} exhaustion flush(es)",
                s.commands,
                s.illegal_commands,
                s.real_syncs,
                s.ste_refusals,
                s.cd_refusals,
                s.cd_unreadable,
                s.bypass_requests,
                s.events_written,
                s.events_lost_disabled,
                s.events_lost_overflow,
                s.events_lost_abort,
                s.msi_writes,
                s.msi_refusals,
                s.asids.retired,
                s.asids.freed,
                s.asids.forced_flushes,
                s.asids.exhaustion_flushes
            );
        }
        if let Some(sim) = self.w.sim_peer() {
            log::info!("simulated peer: {} peer(s) stopped for not answering", sim.stopped());
        }
        let digest = image_digest();
        let verdict = if digest == self.w.image_digest { "intact" } else { "CORRUPTED" };
        log::info!(
            "host requested power-down: {} violation(s) contained, {} other trap(s) refused, {} SMMU event(s), {} stage-2 fault(s) retried, {} table frame(s) quarantined; warden code+rodata {verdict} (digest {digest:#018x}, boot {:#018x})",
            self.w.trap.violation_count(),
            self.w.trap.unhandled_count(),
            SMMU_EVENTS.load(Ordering::Relaxed),
            self.w.trap.retried_count(),
            self.w.handoff.quarantined_frames(),
            self.w.image_digest
        );
    }
}

/// The handoff sequences' CPU side on this CPU.
impl HandoffCpu for Hw {
    fn load_stage2(&self, vmid: u16, root_pa: u64) {
        sysreg::set_vttbr(crate::mm::stage2::vttbr(root_pa, vmid));
    }

    fn zero(&self, range: MemRange) {
        // DC ZVA writes a whole block of zeros per instruction (Normal memory of any
        // cacheability; carveouts are page aligned, so are blocks of up to 2 KiB): 16 MiB costs
        // 256 Ki instructions instead of 2 Mi stores.
        match sysreg::dc_zva_block_size() {
            Some(block) => {
                let mut va = range.start;
                while va < range.end {
                    // SAFETY: `va` is a block-aligned address inside a carveout range that the
                    // handoff sequence has just mapped Normal Non-cacheable, identity, RW in
                    // warden's EL2 stage-1 (the window, open for this call) and that nobody
                    // else maps at this point of a transfer.
                    unsafe { sysreg::dc_zva(va) };
                    va += block;
                }
            }
            // SAFETY: as above: the range is mapped Normal Non-cacheable, identity, RW at EL2
            // (the window) and nobody else maps it at this point of a transfer.
            None => unsafe {
                core::ptr::write_bytes(range.start as *mut u8, 0, range.size() as usize)
            },
        }
        use crate::arch::CacheMaintenance;
        self.dsb_sy();
    }

    fn phase_start(&self) {
        if let Some(last) = PROFILE_LAST.get(cpu_index()) {
            last.store(sysreg::counter(), Ordering::Relaxed);
        }
        PROFILE_TRANSFERS.fetch_add(1, Ordering::Relaxed);
    }

    fn phase_end(&self, phase: Phase) {
        let Some(last) = PROFILE_LAST.get(cpu_index()) else { return };
        let now = sysreg::counter();
        let ticks = now.wrapping_sub(last.swap(now, Ordering::Relaxed));
        if let Some(total) =
            Phase::ALL.iter().position(|&p| p == phase).and_then(|i| PROFILE_TICKS.get(i))
        {
            total.fetch_add(ticks, Ordering::Relaxed);
        }
    }
}

/// Counter ticks each [`Phase`] took, summed over every transfer (and the count of transfers):
/// logged at power-down, where `cargo xtask bench` reads the profile of a handoff.
static PROFILE_TICKS: [AtomicU64; Phase::ALL.len()] =
    [const { AtomicU64::new(0) }; Phase::ALL.len()];
static PROFILE_LAST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static PROFILE_TRANSFERS: AtomicU64 = AtomicU64::new(0);

/// The per-trap profile (only the `trap-profile` image has one), for the bench.
fn log_trap_profile() {
    let mut line = alloc::string::String::new();
    if let Some(Ok(())) = trap::profile::report(&mut line) {
        log::info!("trap profile:{line}");
    }
}

fn log_handoff_profile() {
    let transfers = PROFILE_TRANSFERS.load(Ordering::Relaxed);
    if transfers == 0 {
        return;
    }
    let mut line = alloc::string::String::new();
    for (phase, ticks) in Phase::ALL.iter().zip(PROFILE_TICKS.iter()) {
        let _ = write!(line, " {}={}", phase.name(), ticks.load(Ordering::Relaxed));
    }
    log::info!("handoff profile: {transfers} transfers, counter ticks per phase:{line}");
}

/// FNV-1a over warden's code and read-only data (which nothing may write after relocation):
/// taken at boot and again at power-down, so a corruption (a stray DMA, a wild write) shows.
fn image_digest() -> u64 {
    let image = hw::image_layout();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for addr in (image.start..image.rodata_end).step_by(8) {
        // SAFETY: [start, rodata_end) is warden's own mapped, readable image.
        let word = unsafe { core::ptr::read_volatile(addr as *const u64) };
        hash = (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Fills `cpu`'s SecondaryBoot block and returns its address, cleaned to PoC because the CPU
/// reads it with its MMU and caches off.
fn secondary_boot_args(w: &Warden, cpu: usize) -> u64 {
    let cpu = cpu.min(MAX_CPUS - 1);
    let args = SecondaryBoot {
        stack_top: hw::stack_top(cpu),
        mair: w.el2_mmu.mair,
        tcr: w.el2_mmu.tcr,
        ttbr: w.el2_mmu.ttbr,
        sctlr: w.el2_mmu.sctlr,
        vbar: hw::vectors_address(),
        cpu_index: cpu as u64,
        mpidr_tag: cpu_mpidr(w, cpu).map_or(0, |m| m | hw::SB_TAG_VALID),
    };
    // SAFETY: each CPU's block is written only by the CPU_ON call that targets it, which the
    // PSCI state machine serialises (only one CPU_ON per target can be pending).
    let slot = unsafe {
        let slot = core::ptr::addr_of_mut!(SECONDARY_BOOT[cpu]);
        slot.write_volatile(args);
        slot as u64
    };
    dcache_range(&Hw, CacheOp::Clean, slot, core::mem::size_of::<SecondaryBoot>() as u64);
    slot
}

/// The MPIDR affinity of warden CPU `cpu`: a host CPU's, or the simulated peer's.
fn cpu_mpidr(w: &Warden, cpu: usize) -> Option<u64> {
    match w.sim_peer().filter(|s| s.cpu_index == cpu) {
        Some(sim) => Some(sim.mpidr & trap::psci::MPIDR_AFFINITY_MASK),
        None => w.trap.psci().mpidr_of(cpu),
    }
}

/// IRQ, FIQ or SError routed to EL2, or anything from AArch32: none is expected (the host owns
/// interrupts and runs AArch64). Log it and return to the host unchanged.
pub extern "C" fn lower_other(frame: &mut TrapFrame, kind: u64) {
    if PANICKED.load(Ordering::Acquire) {
        hw::park();
    }
    stop_peer_if_asked(warden());
    log::warn!(
        "unexpected exception from the host (vector {kind}), ESR {:#x} ELR {:#x}: ignored",
        frame.esr,
        frame.elr
    );
}
