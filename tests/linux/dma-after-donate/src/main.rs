//! `dma-after-donate CONTROL_PAGE PCI_NAME IOMMU_GROUP`: the user-space half of the Linux
//! scenario `dma-after-donate` (tests/linux/scenarios/85-dma-after-donate.sh, docs/linux-host.md).
//!
//! Question: once the host has donated a page P to a peer, can a host device that had a live
//! IOMMU mapping of P (and used it just before) still write P? Under warden the device's
//! translation is Linux's stage 1 (programmed through warden's virtual SMMU) nested over
//! warden's stage 2; DONATE removes P from the stage 2 and must also drop every cached
//! stage-1+2 translation of it, or the device keeps writing through its IOTLB (escape, G1).
//!
//! Linux itself never DMAs into a carveout (they are `no-map`, outside System RAM), so the
//! program plays a user-space driver: it takes QEMU's `edu` device with VFIO (Linux's
//! arm-smmu-v3 driver then gives it an IOMMU domain of its own on warden's virtual SMMU) and
//! maps, at IOVAs it chooses, a page of anonymous memory (the staging buffer) and P itself
//! (an `mmap` of `/dev/mem`, which VFIO's type1 backend accepts for memory that is not System
//! RAM). Then:
//!
//! 1. edu DMAs pattern A into P through its IOVA (the SMMU now caches that translation), and
//!    the CPU reads A back from P;
//! 2. `DONATE(P, modem)` through warden's control page; the modem's checksum of P is A's;
//! 3. edu DMAs pattern B to the same IOVA; the modem checksums P again: still A's is
//!    *contained* (exit 0), B's (or anything else) is an *escape* (exit 1);
//! 4. cleanup, whatever happened: the modem RELEASEs P, the host RECLAIMs it with CLEAR (P
//!    reads zero), edu DMAs into P once more through the same mapping and the CPU sees it (the
//!    mapping itself was fine: only the donation stood in the way), P is zeroed, the mappings
//!    removed, bus mastering switched off.
//!
//! Every step prints one `dma-after-donate: ...` line; the last line is the verdict
//! (`contained: ...`, `ESCAPE: ...` or what failed), which the scenario script reports. Exit status: 0 contained, 1 escape or a failed check, 2 bad
//! usage or setup (no VFIO, no edu, no control page).
//!
//! P is the last page of the modem's carveout, found with `CARVEOUT_INFO` (not hard-coded), so
//! it does not collide with the pages the other scenarios hand off.
#![no_std]
#![no_main]
// `Failure` carries its message line (512 bytes) by value: a handful are made per run, and
// boxing them would need an allocator this program does not have.
#![allow(clippy::result_large_err)]

mod console;
mod control;
mod edu;
mod start;
mod sys;
mod vfio;

use core::ffi::CStr;
use core::fmt::Write;

use warden_abi::AbiError;
use warden_abi::handoff::{
    CarveoutCount, CarveoutInfo, PeerId, Policy, RangeInfo, RangeState, Request, Return, Target,
    Transfer, TransferDone,
};
use warden_abi::peer::{Checksum, Op, PeerCommand};
use warden_abi::stats::SmmuStats;

use console::say;
use control::ControlPage;
use edu::{Direction, Edu};
use start::Args;
use sys::{MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, Mapping, PROT_READ, PROT_WRITE};

/// IOVAs the program maps: edu masks DMA addresses to 28 bits by default, and arm-smmu-v3
/// reserves 0x0800_0000..0x0810_0000 for MSIs; both stay clear of that (and are checked
/// against the IOVA ranges VFIO reports).
const IOVA_STAGING: u64 = 0x0100_0000;
const IOVA_PAGE: u64 = 0x0200_0000;
const PAGE: u64 = 4096;
const WORDS: usize = (PAGE / 8) as usize;

/// PCI command register: memory space and bus master enable.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

const EXIT_CONTAINED: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_SETUP: i32 = 2;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::print_line(2, format_args!("dma-after-donate: panic: {info}"));
    sys::exit(EXIT_SETUP)
}

/// Word `i` of test pattern `seed` (splitmix64 of `seed << 32 | i`: distinct, never zero in
/// practice, and different for the two seeds used).
fn pattern_word(seed: u64, i: usize) -> u64 {
    let mut z = (seed << 32 | i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pattern_checksum(seed: u64) -> u64 {
    (0..WORDS).fold(Checksum::new(), |c, i| c.add(pattern_word(seed, i))).value()
}

fn zeros_checksum() -> u64 {
    (0..WORDS).fold(Checksum::new(), |c, _| c.add(0)).value()
}

/// A page-sized mapping read and written one 64-bit volatile access at a time (it is either
/// device memory or memory edu writes behind the program's back).
fn read_word(page: &Mapping, i: usize) -> u64 {
    assert!(i < WORDS);
    // SAFETY: `i` is inside the 4 KiB mapping; the address is 8-byte aligned.
    unsafe { page.base().cast::<u64>().add(i).read_volatile() }
}

fn write_word(page: &Mapping, i: usize, value: u64) {
    assert!(i < WORDS);
    // SAFETY: as in `read_word`.
    unsafe { page.base().cast::<u64>().add(i).write_volatile(value) }
}

fn page_checksum(page: &Mapping) -> u64 {
    (0..WORDS).fold(Checksum::new(), |c, i| c.add(read_word(page, i))).value()
}

/// A failed step: what it was, for the last output line.
struct Failure(console::Line);

macro_rules! failure {
    ($($arg:tt)*) => {{
        let mut line = console::Line::new();
        let _ = write!(line, $($arg)*);
        Failure(line)
    }};
}

fn parse_hex(arg: &CStr) -> Option<u64> {
    let s = arg.to_str().ok()?;
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(digits, 16).ok()
}

/// `/dev/vfio/GROUP` as a C string in `buf`.
fn group_path<'a>(group: &CStr, buf: &'a mut [u8; 64]) -> Option<&'a CStr> {
    let digits = group.to_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let prefix = b"/dev/vfio/";
    let len = prefix.len() + digits.len();
    if len >= buf.len() {
        return None;
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    buf[prefix.len()..len].copy_from_slice(digits);
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}

fn main(args: Args) -> i32 {
    let (Some(control), Some(pci_name), Some(group), 3) =
        (args.get(0).and_then(parse_hex), args.get(1), args.get(2), args.count())
    else {
        say!("usage: dma-after-donate CONTROL_PAGE(0x...) PCI_NAME(0000:00:04.0) IOMMU_GROUP(N)");
        return EXIT_SETUP;
    };
    let mut path_buf = [0u8; 64];
    let Some(group_path) = group_path(group, &mut path_buf) else {
        say!("IOMMU group {group:?} is not a number");
        return EXIT_SETUP;
    };
    let mut setup = match Setup::new(control, pci_name, group_path) {
        Ok(setup) => setup,
        Err(Failure(why)) => {
            print_reason(&why);
            return EXIT_SETUP;
        }
    };
    let verdict = setup.run();
    let cleanup = setup.clean_up();
    match (verdict, cleanup) {
        (Ok(()), Ok(())) => {
            console::print_line(
                1,
                format_args!(
                    "contained: P kept the modem's content; edu's DMA through its IOVA mapping \
                     made before the donation did not reach it"
                ),
            );
            EXIT_CONTAINED
        }
        (Err(Failure(why)), _) | (Ok(()), Err(Failure(why))) => {
            print_reason(&why);
            EXIT_FAILED
        }
    }
}

/// The verdict line, last and without the prefix: the scenario reports it as the reason.
fn print_reason(why: &console::Line) {
    let text = core::str::from_utf8(why.bytes()).unwrap_or("(unprintable reason)");
    console::print_line(1, format_args!("{text}"));
}

/// Everything the scenario holds: the control page, the VFIO container and device, the two
/// mappings, and whether P is currently donated.
struct Setup {
    // Field order is drop order: edu's BAR0 mapping, the device, then the container (closing
    // it removes every IOVA mapping and frees the domain), then the memory it mapped.
    edu: Edu,
    device: vfio::Device,
    config: vfio::RegionInfo,
    container: vfio::Container,
    staging: Mapping,
    carveout: Mapping,
    control: ControlPage,
    page: u64,
    mapped: bool,
    donated: bool,
}

impl Setup {
    fn new(control: u64, pci_name: &CStr, group_path: &CStr) -> Result<Self, Failure> {
        let control =
            ControlPage::open(control).map_err(|e| failure!("control page {control:#x}: {e}"))?;
        let page = modem_page(&control)?;
        // The scenario script reads P from this line (`P = 0x..., `).
        say!("P = {page:#x}, the last page of the modem's carveout (CARVEOUT_INFO), state Host");

        let container = vfio::Container::open(group_path)
            .map_err(|e| failure!("VFIO group {group_path:?}: {e}"))?;
        let iommu = container.iommu_info().map_err(|e| failure!("{e}"))?;
        if iommu.page_sizes & PAGE == 0 {
            return Err(failure!("the IOMMU does not map 4 KiB pages ({:#x})", iommu.page_sizes));
        }
        if !iommu.allows(IOVA_STAGING, PAGE) || !iommu.allows(IOVA_PAGE, PAGE) {
            return Err(failure!("IOVAs {IOVA_STAGING:#x}/{IOVA_PAGE:#x} are reserved here"));
        }
        let device = container.device(pci_name).map_err(|e| failure!("{pci_name:?}: {e}"))?;
        let bar0 = device.region(vfio::PCI_BAR0_REGION).map_err(|e| failure!("BAR0: {e}"))?;
        let config =
            device.region(vfio::PCI_CONFIG_REGION).map_err(|e| failure!("config space: {e}"))?;
        let command = device.config_read16(&config, PCI_COMMAND).map_err(|e| failure!("{e}"))?;
        device
            .config_write16(&config, PCI_COMMAND, command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
            .map_err(|e| failure!("{e}"))?;
        let bar0_mapping = device.map_region(&bar0).map_err(|e| failure!("BAR0: {e}"))?;
        let edu = Edu::new(bar0_mapping, bar0.size)
            .map_err(|id| failure!("{pci_name:?} is not edu (identification {id:#x})"))?;
        say!(
            "VFIO: {pci_name:?} ({group_path:?}) in a type1v2 container, BAR0 {:#x} bytes \
             mapped, bus mastering on",
            bar0.size
        );

        let staging = Mapping::new(
            PAGE as usize,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
            None,
            0,
        )
        .map_err(|e| failure!("mmap of the staging buffer: {e}"))?;
        let carveout = control::map_physical(page, PAGE as usize)
            .map_err(|e| failure!("mmap of P {page:#x} through /dev/mem: {e}"))?;
        let mut setup = Self {
            edu,
            device,
            config,
            container,
            staging,
            carveout,
            control,
            page,
            mapped: false,
            donated: false,
        };
        setup.map()?;
        Ok(setup)
    }

    fn map(&mut self) -> Result<(), Failure> {
        self.container
            .map_dma(self.staging.addr(), IOVA_STAGING, PAGE)
            .map_err(|e| failure!("staging buffer at IOVA {IOVA_STAGING:#x}: {e}"))?;
        if let Err(e) = self.container.map_dma(self.carveout.addr(), IOVA_PAGE, PAGE) {
            let _ = self.container.unmap_dma(IOVA_STAGING, PAGE);
            return Err(failure!("P {:#x} at IOVA {IOVA_PAGE:#x}: {e}", self.page));
        }
        self.mapped = true;
        say!(
            "VFIO_IOMMU_MAP_DMA: staging buffer at IOVA {IOVA_STAGING:#x}, P {:#x} (/dev/mem) \
             at IOVA {IOVA_PAGE:#x}",
            self.page
        );
        Ok(())
    }

    /// edu's buffer gets pattern `seed` (through the staging buffer), then goes to `iova`.
    fn dma_pattern_to(&self, seed: u64, iova: u64) -> Result<(), Failure> {
        for i in 0..WORDS {
            write_word(&self.staging, i, pattern_word(seed, i));
        }
        self.edu
            .dma(Direction::ToDevice, IOVA_STAGING, PAGE)
            .map_err(|e| failure!("edu DMA from the staging buffer: {e}"))?;
        self.edu
            .dma(Direction::ToMemory, iova, PAGE)
            .map_err(|e| failure!("edu DMA to IOVA {iova:#x}: {e}"))
    }

    fn call(&self, request: [u64; 8]) -> [u64; 8] {
        self.control.call(request)
    }

    fn peer_checksum(&self) -> Result<u64, Failure> {
        let op = Op::Checksum { base: self.page, size: PAGE };
        let regs = self.call(PeerCommand { peer: PeerId::MODEM, op }.encode());
        status(&regs).map_err(|e| failure!("PEER_COMMAND(modem, {op}): {e}"))?;
        Ok(regs[1])
    }

    fn range_state(&self) -> Result<RangeState, Failure> {
        let regs = self.call(Request::RangeQuery { addr: self.page }.encode());
        RangeInfo::decode(&regs)
            .map(|info| info.state)
            .map_err(|e| failure!("RANGE_QUERY({:#x}): {e}", self.page))
    }

    fn smmu_events_forwarded(&self) -> Result<u64, Failure> {
        SmmuStats::decode(&self.call(SmmuStats::request()))
            .map(|s| s.events_forwarded)
            .map_err(|e| failure!("SMMU_STATS: {e}"))
    }

    /// Steps 1 to 3 of the module documentation.
    fn run(&mut self) -> Result<(), Failure> {
        const SEED_BEFORE: u64 = 0xa;
        const SEED_AFTER: u64 = 0xb;
        let before = pattern_checksum(SEED_BEFORE);
        let after = pattern_checksum(SEED_AFTER);

        // 1. A DMA through the mapping while P is the host's: it lands, and the SMMU has
        //    walked (and may cache) IOVA_PAGE -> P.
        self.dma_pattern_to(SEED_BEFORE, IOVA_PAGE)?;
        let seen = page_checksum(&self.carveout);
        if seen != before {
            return Err(failure!(
                "edu's DMA to IOVA {IOVA_PAGE:#x} did not land in P {:#x} while the host owns \
                 it (checksum {seen:#x}, expected {before:#x})",
                self.page
            ));
        }
        say!(
            "before DONATE: edu DMAed pattern A into P through IOVA {IOVA_PAGE:#x}; the CPU reads it back (checksum {before:#x})"
        );

        // 2. DONATE P to the modem; the modem sees pattern A.
        let transfer = Transfer {
            target: Target::Range { base: self.page, size: PAGE },
            peer: PeerId::MODEM,
            clear: false,
        };
        let done = TransferDone::decode(&self.call(Request::Donate(transfer).encode()))
            .map_err(|e| failure!("DONATE({:#x}, modem): {e}", self.page))?;
        self.donated = true;
        if (done.base, done.size) != (self.page, PAGE) {
            return Err(failure!("DONATE acted on {:#x}+{:#x}", done.base, done.size));
        }
        let state = self.range_state()?;
        if state != RangeState::Donated(PeerId::MODEM) {
            return Err(failure!("P is {state:?} after DONATE, not Donated(modem)"));
        }
        let peer_before = self.peer_checksum()?;
        if peer_before != before {
            return Err(failure!(
                "the modem's checksum of P after DONATE is {peer_before:#x}, not pattern A's \
                 {before:#x}"
            ));
        }
        say!("DONATE(P, modem): state Donated(modem), the modem's checksum is pattern A's");

        // 3. The same DMA with pattern B: warden must have dropped the cached translation.
        let events_before = self.smmu_events_forwarded()?;
        self.dma_pattern_to(SEED_AFTER, IOVA_PAGE)?;
        let peer_after = self.peer_checksum()?;
        let events = self.smmu_events_forwarded()?.saturating_sub(events_before);
        say!(
            "after DONATE: edu DMAed pattern B to IOVA {IOVA_PAGE:#x}; the modem's checksum of \
             P is {peer_after:#x}; {events} SMMU event(s) forwarded to Linux meanwhile"
        );
        if peer_after == after {
            return Err(failure!(
                "ESCAPE: edu wrote pattern B into P {:#x} after it was donated to the modem \
                 (checksum {before:#x} -> {peer_after:#x}): a translation of IOVA \
                 {IOVA_PAGE:#x} cached before the donation outlived it",
                self.page
            ));
        }
        if peer_after != before {
            return Err(failure!(
                "ESCAPE: P {:#x} changed while donated to the modem (checksum {before:#x} -> \
                 {peer_after:#x})",
                self.page
            ));
        }
        Ok(())
    }

    /// Step 4: whatever happened, give P back to the host, show the mapping works again, and
    /// leave P zeroed and unmapped.
    fn clean_up(&mut self) -> Result<(), Failure> {
        let mut first_error = None;
        let mut note = |r: Result<(), Failure>| {
            if let (Err(e), None) = (r, &first_error) {
                first_error = Some(e);
            }
        };
        // Also when DONATE's answer could not be read but warden did donate P.
        if self.donated || self.range_state().is_ok_and(|s| s == RangeState::Donated(PeerId::MODEM))
        {
            self.donated = true;
            note(self.give_back());
        }
        if self.mapped && !self.donated {
            note(self.dma_after_reclaim());
            for i in 0..WORDS {
                write_word(&self.carveout, i, 0);
            }
        }
        if self.mapped {
            for iova in [IOVA_PAGE, IOVA_STAGING] {
                note(self.container.unmap_dma(iova, PAGE).map_err(|e| failure!("{e}")));
            }
            self.mapped = false;
        }
        let command = self.device.config_read16(&self.config, PCI_COMMAND);
        note(
            command
                .and_then(|c| {
                    self.device.config_write16(&self.config, PCI_COMMAND, c & !PCI_COMMAND_MASTER)
                })
                .map_err(|e| failure!("switching edu's bus mastering off: {e}")),
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The modem RELEASEs P, the host RECLAIMs it with CLEAR: state Host, P reads zero.
    fn give_back(&mut self) -> Result<(), Failure> {
        let op = Op::Release { base: self.page, size: PAGE, clear: false };
        let regs = self.call(PeerCommand { peer: PeerId::MODEM, op }.encode());
        status(&regs).map_err(|e| failure!("PEER_COMMAND(modem, {op}): {e}"))?;
        if regs[1] != 0 {
            return Err(failure!("the modem's RELEASE of P returned {}", regs[1] as i64));
        }
        let back = Return { target: Target::Range { base: self.page, size: PAGE }, clear: true };
        TransferDone::decode(&self.call(Request::Reclaim(back).encode()))
            .map_err(|e| failure!("RECLAIM({:#x}, CLEAR): {e}", self.page))?;
        self.donated = false;
        let state = self.range_state()?;
        if state != RangeState::Host {
            return Err(failure!("P is {state:?} after RECLAIM, not Host"));
        }
        let seen = page_checksum(&self.carveout);
        if seen != zeros_checksum() {
            return Err(failure!("P does not read zero after RECLAIM with CLEAR"));
        }
        say!("the modem released P, RECLAIM(CLEAR): state Host, P reads zero");
        Ok(())
    }

    /// With P the host's again, the same IOVA mapping works: only the donation refused it.
    fn dma_after_reclaim(&self) -> Result<(), Failure> {
        const SEED_RECLAIMED: u64 = 0xc;
        self.dma_pattern_to(SEED_RECLAIMED, IOVA_PAGE)?;
        let seen = page_checksum(&self.carveout);
        if seen != pattern_checksum(SEED_RECLAIMED) {
            return Err(failure!(
                "after RECLAIM, edu's DMA to IOVA {IOVA_PAGE:#x} did not land in P (checksum \
                 {seen:#x})"
            ));
        }
        say!("after RECLAIM: edu's DMA through the same mapping reaches P again");
        Ok(())
    }
}

/// `Ok` when `x0` is SUCCESS.
fn status(regs: &[u64; 8]) -> Result<(), AbiError> {
    match regs[0] as i64 {
        0 => Ok(()),
        code => Err(AbiError::from_code(code).unwrap_or(AbiError::Unknown(code))),
    }
}

/// The last page of the modem's carveout (the first carveout whose peer is the modem and whose
/// policy is donate), which must be in state Host.
fn modem_page(control: &ControlPage) -> Result<u64, Failure> {
    let count = CarveoutCount::decode(&control.call(Request::CarveoutCount.encode()))
        .map_err(|e| failure!("CARVEOUT_COUNT: {e}"))?
        .count;
    for index in 0..count {
        let info = CarveoutInfo::decode(&control.call(Request::CarveoutInfo { index }.encode()))
            .map_err(|e| failure!("CARVEOUT_INFO({index}): {e}"))?;
        if info.peer == PeerId::MODEM && info.policy == Policy::Donate {
            let page = info.base + info.size - PAGE;
            let regs = control.call(Request::RangeQuery { addr: page }.encode());
            let state = RangeInfo::decode(&regs)
                .map_err(|e| failure!("RANGE_QUERY({page:#x}): {e}"))?
                .state;
            if state != RangeState::Host {
                return Err(failure!("P {page:#x} starts in state {state:?}, not Host"));
            }
            return Ok(page);
        }
    }
    Err(failure!("no carveout of the modem with policy donate among {count}"))
}
