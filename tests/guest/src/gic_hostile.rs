//! DMA masters outside the SMMU (issue 11, section 2): the guest aims the GICv3 ITS, the
//! redistributors' LPI tables and QEMU's fw_cfg DMA at warden's memory and at a page donated
//! to the modem. Each attempt must be refused (the register does not keep the address,
//! EnableLPIs stays off) or contained (a synchronous external abort), the peer's checksum of
//! the donated page must not change, and the guest must keep running. warden's own memory is
//! checked from outside: its code+rodata digest at power-down (the `guest-boot` judge).
//!
//! Without warden's GIC emulation the ITS writes a device-table entry into warden's Image
//! header (DeviceID 7 of a table at warden's base: offset 0x38), an interrupt translation
//! entry and an LPI pending bit into the donated page; without the DMA policy fw_cfg writes
//! "QEMU" there. These scenarios run last for that reason.
//!
//! The guest drives the ITS the way Linux does (tables and a 4 KiB command queue in its own
//! memory, MAPD/MAPC/MAPTI/INT/SYNC), with 4 KiB ITS pages and flat tables.

use core::cell::UnsafeCell;

use crate::console::println;
use crate::cpu;
use crate::exceptions::{self, Caught};
use crate::handoff::{Span, check, expect_all_host, modem, peer_checksum, write_pattern};
use crate::platform::Platform;
use crate::report::{Outcome, Reason, fail};

// --- ITS registers (IHI 0069H 12.19).
const GITS_CTLR: u64 = 0x0000;
const GITS_TYPER: u64 = 0x0008;
const GITS_CBASER: u64 = 0x0080;
const GITS_CWRITER: u64 = 0x0088;
const GITS_CREADR: u64 = 0x0090;
const GITS_BASER: u64 = 0x0100;
const CTLR_ENABLED: u32 = 1;
const CTLR_QUIESCENT: u32 = 1 << 31;
const TYPER_PTA: u64 = 1 << 19;
const BASER_VALID: u64 = 1 << 63;
/// Inner cacheability RaWaWb, inner shareable: what Linux asks for.
const CACHE_SHARE: u64 = (7 << 59) | (1 << 10);
/// Physical address bits of GITS_BASER (4 KiB pages) and of GITS_CBASER.
const BASER_ADDRESS: u64 = ((1 << 48) - 1) & !0xfff;
// --- Redistributor RD_base registers (12.11).
const GICR_CTLR: u64 = 0x0000;
const GICR_TYPER: u64 = 0x0008;
const GICR_PROPBASER: u64 = 0x0070;
const GICR_PENDBASER: u64 = 0x0078;
const CTLR_ENABLE_LPIS: u32 = 1;
const TYPER_LAST: u64 = 1 << 4;
/// IDbits 15: 64 Ki INTIDs, as Linux programs it.
const PROP_ID_BITS: u64 = 15;
/// The LPI the scenarios raise.
const LPI: u64 = 8192 + 77;
// --- Commands (5.3).
const CMD_INT: u64 = 0x03;
const CMD_CLEAR: u64 = 0x04;
const CMD_SYNC: u64 = 0x05;
const CMD_MAPD: u64 = 0x08;
const CMD_MAPC: u64 = 0x09;
const CMD_MAPTI: u64 = 0x0a;
const CMD_VALID: u64 = 1 << 63;
/// How long the ITS gets to consume a batch.
const ITS_TIMEOUT_MS: u64 = 1000;
/// QEMU virt's fw_cfg (`fw-cfg@9020000`): warden no longer lists it, the address is fixed.
const FW_CFG: u64 = 0x0902_0000;
const FW_CFG_DMA_ADDRESS: u64 = FW_CFG + 0x10;
/// DMA control: select the item in bits [31:16], then read it into memory.
const FW_CFG_DMA_SELECT: u32 = 0x08;
const FW_CFG_DMA_READ: u32 = 0x02;
/// Item 0: the 4-byte signature "QEMU".
const FW_CFG_SIGNATURE: u32 = 0;
const ESR_EC_DATA_ABORT_CURRENT_EL: u64 = 0x25;
const ESR_DFSC_SEA: u64 = 0x10;

/// 64 KiB-aligned guest memory for the GIC: the pages are the host's own, the only valid
/// place for the tables (and what Linux uses).
#[repr(C, align(65536))]
struct GicMemory(UnsafeCell<[u64; GicMemory::WORDS]>);

// SAFETY: only the primary CPU uses it, through volatile accesses by raw pointer.
unsafe impl Sync for GicMemory {}

impl GicMemory {
    const PAGE: u64 = 0x1_0000;
    const WORDS: usize = 6 * Self::PAGE as usize / 8;
    /// 64 KiB slots: command queue, device table, collection table, ITT, LPI configuration
    /// table, LPI pending table.
    const QUEUE: u64 = 0;
    const DEVICES: u64 = 1;
    const COLLECTIONS: u64 = 2;
    const ITT: u64 = 3;
    const PROP: u64 = 4;
    const PEND: u64 = 5;

    const fn new() -> Self {
        Self(UnsafeCell::new([0; Self::WORDS]))
    }

    fn slot(&self, slot: u64) -> u64 {
        self.0.get() as usize as u64 + slot * Self::PAGE
    }

    fn word(&self, address: u64) -> Option<*mut u64> {
        let base = self.0.get() as usize as u64;
        let index = address.checked_sub(base)? / 8;
        (index < Self::WORDS as u64).then(|| {
            // SAFETY: in bounds of the array (checked).
            unsafe { self.0.get().cast::<u64>().add(index as usize) }
        })
    }

    fn write(&self, address: u64, value: u64) {
        if let Some(word) = self.word(address) {
            // SAFETY: a word of this static (checked by `word`); volatile, no reference exists.
            unsafe { word.write_volatile(value) }
        }
    }

    fn read(&self, address: u64) -> u64 {
        // SAFETY: as in `write`.
        self.word(address).map_or(0, |word| unsafe { word.read_volatile() })
    }

    fn zero(&self, slot: u64) {
        for offset in (0..Self::PAGE).step_by(8) {
            self.write(self.slot(slot) + offset, 0);
        }
    }
}

static MEMORY: GicMemory = GicMemory::new();

fn read32(address: u64) -> u32 {
    // SAFETY: `address` is a GIC register the DT names (device memory with the MMU off);
    // under warden the access may trap and be emulated, or be refused with an abort the
    // caller's probe catches.
    unsafe { (address as *const u32).read_volatile() }
}

fn write32(address: u64, value: u32) {
    // SAFETY: as in read32.
    unsafe { (address as *mut u32).write_volatile(value) }
}

fn read64(address: u64) -> u64 {
    // SAFETY: as in read32; 64-bit registers are 8-byte aligned.
    unsafe { (address as *const u64).read_volatile() }
}

fn write64(address: u64, value: u64) {
    // SAFETY: as in read64.
    unsafe { (address as *mut u64).write_volatile(value) }
}

/// Runs `f` with a probe armed: an abort on a GIC register access is a failure, not a crash.
fn no_abort<T>(what: &str, f: impl FnOnce() -> Result<T, Reason>) -> Result<T, Reason> {
    match exceptions::catch(f) {
        (result, None) => result,
        (_, Some(Caught { esr, far, .. })) => {
            fail!("{what}: aborted (ESR {esr:#x}, FAR {far:#x})")
        }
    }
}

/// The ITS as the guest drives it.
struct Its {
    base: u64,
    /// Next free slot of the command queue.
    next: u64,
    pta: bool,
}

impl Its {
    fn find(platform: &Platform) -> Result<Self, Reason> {
        match platform.its {
            Some(base) => {
                Ok(Self { base, next: 0, pta: read64(base + GITS_TYPER) & TYPER_PTA != 0 })
            }
            None => fail!("no arm,gic-v3-its node in the DT"),
        }
    }

    fn disable(&self) -> Outcome {
        write32(self.base + GITS_CTLR, 0);
        if !cpu::wait_until(ITS_TIMEOUT_MS, || read32(self.base + GITS_CTLR) & CTLR_QUIESCENT != 0)
        {
            fail!("the ITS did not become quiescent once disabled");
        }
        Ok(())
    }

    /// Writes GITS_BASER<n> (flat, 4 KiB pages, one page) at `address` and returns what it
    /// reads back.
    fn set_table(&self, n: u64, address: u64) -> u64 {
        let register = self.base + GITS_BASER + 8 * n;
        let current = read64(register);
        // Type and entry size are read-only: keep them.
        let fixed = current & (0x7 << 56 | 0x1f << 48);
        write64(register, fixed | BASER_VALID | CACHE_SHARE | address);
        read64(register)
    }

    fn clear_table(&self, n: u64) {
        let register = self.base + GITS_BASER + 8 * n;
        write64(register, read64(register) & (0x7 << 56 | 0x1f << 48));
    }

    /// Programs a fresh command queue in the guest's memory and enables the ITS.
    fn start(&mut self) {
        MEMORY.zero(GicMemory::QUEUE);
        write64(self.base + GITS_CBASER, BASER_VALID | CACHE_SHARE | MEMORY.slot(GicMemory::QUEUE));
        write64(self.base + GITS_CWRITER, 0);
        self.next = 0;
        write32(self.base + GITS_CTLR, CTLR_ENABLED);
    }

    /// Queues `commands`, writes GITS_CWRITER once and waits for GITS_CREADR to reach it.
    fn send(&mut self, commands: &[[u64; 4]]) -> Outcome {
        let queue = MEMORY.slot(GicMemory::QUEUE);
        for command in commands {
            for (i, word) in command.iter().enumerate() {
                MEMORY.write(queue + self.next * 32 + 8 * i as u64, *word);
            }
            // A 4 KiB queue: 128 commands.
            self.next = (self.next + 1) % 128;
        }
        cpu::dsb_sy();
        let cwriter = self.next * 32;
        write64(self.base + GITS_CWRITER, cwriter);
        let mut creadr = 0;
        if !cpu::wait_until(ITS_TIMEOUT_MS, || {
            creadr = read64(self.base + GITS_CREADR);
            creadr == cwriter
        }) {
            fail!(
                "the ITS did not consume its commands: GITS_CREADR {creadr:#x}, GITS_CWRITER \
                 {cwriter:#x}"
            );
        }
        Ok(())
    }

    /// The RDbase field for a redistributor: its address, or its processor number.
    fn target(&self, redist: &Redistributor) -> u64 {
        if self.pta { redist.base } else { (redist.processor() as u64) << 16 }
    }
}

fn mapd(device: u64, itt: u64) -> [u64; 4] {
    // Size 1: two EventIDs.
    [CMD_MAPD | device << 32, 1, CMD_VALID | itt, 0]
}

fn unmapd(device: u64) -> [u64; 4] {
    [CMD_MAPD | device << 32, 0, 0, 0]
}

fn sync(target: u64) -> [u64; 4] {
    [CMD_SYNC, 0, target, 0]
}

/// This CPU's redistributor.
struct Redistributor {
    base: u64,
    typer: u64,
}

impl Redistributor {
    fn find(platform: &Platform) -> Result<Self, Reason> {
        let Some((region, size)) = platform.gicr else { fail!("no GICv3 redistributor region") };
        let mpidr = cpu::mpidr_affinity();
        let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
        let mut at = region;
        while at + 0x2_0000 <= region + size {
            let typer = read64(at + GICR_TYPER);
            if typer >> 32 == affinity {
                return Ok(Self { base: at, typer });
            }
            if typer & TYPER_LAST != 0 {
                break;
            }
            at += 0x2_0000;
        }
        fail!("no redistributor for MPIDR {mpidr:#x}")
    }

    fn processor(&self) -> u16 {
        (self.typer >> 8) as u16
    }

    fn lpis_off(&self) {
        write32(self.base + GICR_CTLR, read32(self.base + GICR_CTLR) & !CTLR_ENABLE_LPIS);
    }

    fn set_tables(&self, prop: u64, pend: u64) {
        write64(self.base + GICR_PROPBASER, prop | CACHE_SHARE | PROP_ID_BITS);
        write64(self.base + GICR_PENDBASER, pend | CACHE_SHARE);
    }

    /// Asks for EnableLPIs; whether it was granted.
    fn enable_lpis(&self) -> bool {
        write32(self.base + GICR_CTLR, read32(self.base + GICR_CTLR) | CTLR_ENABLE_LPIS);
        read32(self.base + GICR_CTLR) & CTLR_ENABLE_LPIS != 0
    }
}

/// warden's region as it announces it.
fn warden_base(platform: &Platform) -> Result<u64, Reason> {
    match &platform.warden_regions {
        Ok(regions) => match regions.as_slice().first() {
            Some(region) => Ok(region.base),
            None => fail!("no warden region"),
        },
        Err(why) => fail!("{why}"),
    }
}

/// A 64 KiB page of the modem's carveout, filled with a pattern and donated; the peer's
/// checksum of it.
fn donated_page(offset: u64) -> Result<(Span, u64), Reason> {
    expect_all_host()?;
    let modem = modem();
    let span = modem.span(offset, 0x1_0000);
    write_pattern(span, 0x6_1c)?;
    check(modem.hand_over(span.target(), false), format_args!("DONATE {span}"))?;
    let sum = peer_checksum(modem.peer, span)?;
    Ok((span, sum))
}

fn expect_checksum(span: Span, before: u64, what: &str) -> Outcome {
    let after = peer_checksum(modem().peer, span)?;
    if after != before {
        fail!(
            "{what} wrote the donated page {span}: the peer's checksum went {before:#x} -> {after:#x}"
        );
    }
    Ok(())
}

/// Scenario `its_tables_hostile`: GITS_BASER(Device) aimed at warden's memory and at a donated
/// page, each followed by a MAPD that would make the ITS write a device-table entry there; a
/// MAPD whose ITT is the donated page, then a MAPTI that would write an ITE into it. The
/// table registers must not keep those addresses, the ITS must go on consuming commands, and
/// the donated page must not change.
pub fn its_tables_hostile(platform: &Platform) -> Outcome {
    let warden = warden_base(platform)?;
    let mut its = Its::find(platform)?;
    let redist = Redistributor::find(platform)?;
    let (donated, sum) = donated_page(0x10_0000)?;
    let mut refusals: [Option<u64>; 2] = [None; 2];
    let outcome = no_abort("ITS", || {
        for (i, table) in [warden, donated.base].into_iter().enumerate() {
            its.disable()?;
            MEMORY.zero(GicMemory::COLLECTIONS);
            its.set_table(1, MEMORY.slot(GicMemory::COLLECTIONS));
            let kept = its.set_table(0, table);
            if kept & BASER_VALID != 0 && kept & BASER_ADDRESS == table {
                refusals[i] = Some(kept);
            }
            its.start();
            // DeviceID 7 of a flat table at `table`: its entry is `table + 0x38`.
            its.send(&[mapd(7, MEMORY.slot(GicMemory::ITT)), sync(its.target(&redist))])?;
            its.send(&[unmapd(7), sync(its.target(&redist))])?;
        }
        // A device whose ITT is the donated page: MAPTI would write its ITE there.
        its.disable()?;
        MEMORY.zero(GicMemory::DEVICES);
        its.set_table(0, MEMORY.slot(GicMemory::DEVICES));
        its.start();
        let target = its.target(&redist);
        its.send(&[
            mapd(5, donated.base + 0x1000),
            [CMD_MAPC, 0, CMD_VALID | target, 0],
            [CMD_MAPTI | 5 << 32, LPI << 32, 0, 0],
            sync(target),
        ])?;
        its.send(&[unmapd(5), [CMD_MAPC, 0, 0, 0], sync(target)])?;
        its.disable()?;
        its.clear_table(0);
        its.clear_table(1);
        Ok(())
    });
    let contained = expect_checksum(donated, sum, "the ITS");
    outcome?;
    contained?;
    if let Some(kept) = refusals[0] {
        fail!(
            "GITS_BASER0 kept warden's memory {warden:#x} ({kept:#x}): the ITS wrote a DTE at {:#x}",
            warden + 0x38
        );
    }
    if let Some(kept) = refusals[1] {
        fail!("GITS_BASER0 kept the donated page {} ({kept:#x})", donated);
    }
    println!(
        "guest: note its_tables_hostile: GITS_BASER0 refused warden's memory {warden:#x} and the \
         donated page {donated}; MAPD/MAPTI with an ITT in the donated page changed nothing"
    );
    Ok(())
}

/// Scenario `gicr_tables_hostile`: first the control, LPIs with both tables in guest memory
/// and an LPI raised through the ITS landing in the guest's pending table; then
/// GICR_PROPBASER and GICR_PENDBASER aimed at warden's memory and at a donated page, each
/// followed by EnableLPIs (and, for the donated pending table, the same LPI raised again).
/// EnableLPIs must stay off for every hostile pair and the donated page must not change.
pub fn gicr_tables_hostile(platform: &Platform) -> Outcome {
    let warden = warden_base(platform)?;
    let mut its = Its::find(platform)?;
    let redist = Redistributor::find(platform)?;
    let (donated, sum) = donated_page(0x20_0000)?;
    let prop = MEMORY.slot(GicMemory::PROP);
    let pend = MEMORY.slot(GicMemory::PEND);
    let mut granted: [bool; 4] = [false; 4];
    let outcome = no_abort("GIC", || {
        // The ITS, with valid tables: DeviceID 1, EventID 0 -> LPI, collection 0 -> this CPU.
        its.disable()?;
        for slot in [GicMemory::DEVICES, GicMemory::COLLECTIONS, GicMemory::ITT] {
            MEMORY.zero(slot);
        }
        its.set_table(0, MEMORY.slot(GicMemory::DEVICES));
        its.set_table(1, MEMORY.slot(GicMemory::COLLECTIONS));
        its.start();
        let target = its.target(&redist);
        its.send(&[
            mapd(1, MEMORY.slot(GicMemory::ITT)),
            [CMD_MAPC, 0, CMD_VALID | target, 0],
            [CMD_MAPTI | 1 << 32, LPI << 32, 0, 0],
            sync(target),
        ])?;
        let raise = [[CMD_INT | 1 << 32, 0, 0, 0], sync(target)];
        let lower = [[CMD_CLEAR | 1 << 32, 0, 0, 0], sync(target)];
        // The control.
        redist.lpis_off();
        MEMORY.zero(GicMemory::PROP);
        MEMORY.zero(GicMemory::PEND);
        redist.set_tables(prop, pend);
        if !redist.enable_lpis() {
            fail!("control: EnableLPIs refused with both tables in guest memory");
        }
        its.send(&raise)?;
        let word = MEMORY.read(pend + LPI / 64 * 8);
        if word & 1 << (LPI % 64) == 0 {
            fail!("control: LPI {LPI} raised through the ITS is not pending in the guest's table");
        }
        its.send(&lower)?;
        redist.lpis_off();
        // The hostile pairs.
        let pairs = [(warden, pend), (prop, warden), (donated.base, pend), (prop, donated.base)];
        for (i, (p, q)) in pairs.into_iter().enumerate() {
            redist.set_tables(p, q);
            granted[i] = redist.enable_lpis();
            if q == donated.base {
                // Were LPIs on, the pending bit would land in the donated page.
                its.send(&raise)?;
                its.send(&lower)?;
            }
            redist.lpis_off();
        }
        redist.set_tables(0, 0);
        its.send(&[unmapd(1), [CMD_MAPC, 0, 0, 0], sync(target)])?;
        its.disable()?;
        its.clear_table(0);
        its.clear_table(1);
        Ok(())
    });
    let contained = expect_checksum(donated, sum, "the redistributor");
    outcome?;
    contained?;
    let names = [
        "PROPBASER in warden's memory",
        "PENDBASER in warden's memory",
        "PROPBASER in the donated page",
        "PENDBASER in the donated page",
    ];
    if let Some(i) = granted.iter().position(|&g| g) {
        fail!("EnableLPIs granted with {} ({warden:#x} / {donated})", names[i]);
    }
    println!(
        "guest: note gicr_tables_hostile: an LPI raised through the ITS reached the guest's \
         pending table; EnableLPIs refused for tables in warden's memory and the donated page"
    );
    Ok(())
}

/// The FWCfgDmaAccess structure QEMU reads (big-endian fields).
static FW_CFG_ACCESS: GicMemoryPage = GicMemoryPage(UnsafeCell::new([0; 2]));

#[repr(C, align(4096))]
struct GicMemoryPage(UnsafeCell<[u64; 2]>);

// SAFETY: only the primary CPU uses it, through volatile accesses by raw pointer.
unsafe impl Sync for GicMemoryPage {}

/// One fw_cfg DMA read of the signature into `destination`; the abort that stopped it, if any.
fn fw_cfg_dma(destination: u64) -> Option<Caught> {
    let control = (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_SELECT | FW_CFG_DMA_READ;
    let words = [u64::from(control.to_be()) | u64::from(4u32.to_be()) << 32, destination.to_be()];
    let base = FW_CFG_ACCESS.0.get();
    for (i, word) in words.iter().enumerate() {
        // SAFETY: the static's two words; volatile, no reference exists.
        unsafe { base.cast::<u64>().add(i).write_volatile(*word) };
    }
    cpu::dsb_sy();
    let (_, caught) = exceptions::catch(|| write64(FW_CFG_DMA_ADDRESS, (base as u64).to_be()));
    caught
}

/// Scenario `fw_cfg_dma_contained`: QEMU's fw_cfg DMA interface asked to copy its signature
/// into a donated page, then into warden's Image header. fw_cfg is not behind the SMMU, so
/// warden must not give it to the host: each access to it must end in a synchronous external
/// abort, and neither target may change (warden's is checked by its digest at power-down).
pub fn fw_cfg_dma_contained(platform: &Platform) -> Outcome {
    let warden = warden_base(platform)?;
    let (donated, sum) = donated_page(0x30_0000)?;
    let first = fw_cfg_dma(donated.base + 0x100);
    let contained = expect_checksum(donated, sum, "fw_cfg DMA");
    let second = fw_cfg_dma(warden + 0x38);
    for (what, caught) in [("the donated page", first), ("warden's memory", second)] {
        let Some(Caught { esr, far, .. }) = caught else {
            fail!(
                "fw_cfg DMA into {what} was not stopped: its register at {FW_CFG_DMA_ADDRESS:#x} took the write"
            );
        };
        let (ec, dfsc) = ((esr >> 26) & 0x3f, esr & 0x3f);
        if ec != ESR_EC_DATA_ABORT_CURRENT_EL || dfsc != ESR_DFSC_SEA || far != FW_CFG_DMA_ADDRESS {
            fail!(
                "fw_cfg DMA into {what}: abort ESR {esr:#x} FAR {far:#x}, expected an SEA at {FW_CFG_DMA_ADDRESS:#x}"
            );
        }
    }
    contained?;
    println!(
        "guest: note fw_cfg_dma_contained: both DMA requests aborted at {FW_CFG_DMA_ADDRESS:#x}; \
         the donated page {donated} is unchanged"
    );
    Ok(())
}
