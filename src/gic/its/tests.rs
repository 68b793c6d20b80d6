//! The ITS emulation against the QEMU-like model ([`crate::gic::fake::FakeIts`]): warden's
//! tables, the Linux-like flow, hostile tables and commands, the shadow queue's wrap, bounded
//! work per trap, slow, stuck and stalling ITSes.

use alloc::vec;
use alloc::vec::Vec;

use super::cmd::*;
use super::*;
use crate::gic::fake::{FakeHostMemory, FakeIts, ItsFaults, ItsOp};
use crate::mm::frame::test_support::HeapFrames;

const HOST_BYTES: usize = 0x10_0000;
/// Offsets into the host buffer: Linux-like layout.
const QUEUE: u64 = 0;
const QUEUE_PAGES: u64 = 16;
const DEVICE_TABLE: u64 = 0x1_0000;
const COLLECTION_TABLE: u64 = 0x2_0000;
const ITT: u64 = 0x3_0000;
/// A range of the host buffer that stands for a donated carveout page.
const CARVEOUT: u64 = 0xc_0000;

struct Rig {
    frames: HeapFrames,
    host: FakeHostMemory,
    its: FakeIts,
    virt: VirtIts,
}

fn params() -> ItsParams {
    ItsParams {
        targets: vec![
            RdTarget { rd_base: 0x080a_0000, processor: 0 },
            RdTarget { rd_base: 0x080c_0000, processor: 1 },
        ],
        lpi_id_bits: 16,
        cmd_budget: ItsParams::DEFAULT_CMD_BUDGET,
        poll_limit: 16,
        l2_quota: 4,
    }
}

fn rig_with(make: impl FnOnce(Vec<MemRange>) -> FakeIts, faults: ItsFaults) -> Rig {
    let mut frames = HeapFrames::new(256);
    let mut host = FakeHostMemory::new(HOST_BYTES);
    host.forbidden.push(MemRange::new(host.at(CARVEOUT), host.at(CARVEOUT + 0x1_0000)));
    let its = make(vec![frames.pool.range(), host.range]);
    its.set_faults(faults);
    let virt = VirtIts::new(&its, &mut frames, params()).expect("ITS taken");
    Rig { frames, host, its, virt }
}

fn rig() -> Rig {
    rig_with(FakeIts::qemu, ItsFaults::default())
}

impl Rig {
    fn write(&mut self, offset: u32, size: u8, value: u64) {
        self.virt.mmio_write(offset, size, value, &self.its, &self.host, &mut self.frames);
    }

    fn read(&mut self, offset: u32, size: u8) -> u64 {
        self.virt.mmio_read(offset, size, &self.its, &self.host, &mut self.frames)
    }

    fn warden(&self) -> MemRange {
        self.frames.pool.range()
    }

    /// What Linux does at probe: tables and queue in its memory, then enable.
    fn linux_setup(&mut self) {
        let baser = |offset: u64, kind: u64| {
            GITS_BASER_F::VALID::SET.value
                | GITS_BASER_F::INNER_CACHE.val(CACHE_RAWAWB).value
                | GITS_BASER_F::SHAREABILITY.val(SHAREABILITY_INNER).value
                | GITS_BASER_F::TYPE.val(kind).value
                | GITS_BASER_F::ENTRY_SIZE.val(7).value
                | GITS_BASER_F::PAGE_SIZE::Size64K.value
                | offset
        };
        let dt = baser(self.host.at(DEVICE_TABLE), 1);
        let ct = baser(self.host.at(COLLECTION_TABLE), 4);
        self.write(GITS_BASER, 8, dt);
        assert_eq!(self.read(GITS_BASER, 8), dt, "Linux checks the value sticks");
        self.write(GITS_BASER + 8, 8, ct);
        assert_eq!(self.read(GITS_BASER + 8, 8), ct);
        let cbaser = GITS_CBASER_F::VALID::SET.value
            | GITS_CBASER_F::INNER_CACHE.val(CACHE_RAWAWB).value
            | GITS_CBASER_F::SHAREABILITY.val(SHAREABILITY_INNER).value
            | self.host.at(QUEUE)
            | (QUEUE_PAGES - 1);
        self.write(GITS_CBASER, 8, cbaser);
        assert_eq!(self.read(GITS_CBASER, 8), cbaser);
        self.write(GITS_CWRITER, 8, 0);
        self.write(GITS_CTLR, 4, 1);
        assert_eq!(self.read(GITS_CTLR, 4), 1, "enabled, not quiescent");
    }

    /// Appends commands to the host's queue and writes GITS_CWRITER once.
    fn send(&mut self, commands: &[[u64; 4]]) {
        let (_, mut cwriter) = self.virt.host_offsets();
        for c in commands {
            self.host.write_words(self.host.at(QUEUE) + cwriter, c);
            cwriter = (cwriter + COMMAND_BYTES) % (QUEUE_PAGES * 0x1000);
        }
        self.write(GITS_CWRITER, 8, cwriter);
    }

    fn creadr(&mut self) -> u64 {
        self.read(GITS_CREADR, 8)
    }

    /// Every memory write the ITS made is in warden's tables or an ITT in host memory the
    /// host may hand out; none is wild.
    fn assert_device_writes_contained(&self) {
        for op in self.its.device_writes() {
            match op {
                ItsOp::DeviceWrite { pa, len } => {
                    let r = MemRange::from_base_size(pa, len).unwrap();
                    assert!(
                        self.virt.memory().iter().any(|m| m.contains_range(&r))
                            || self.host.is_host_memory(r),
                        "the ITS wrote {r}: neither warden's table nor host memory"
                    );
                }
                other => panic!("the ITS wrote outside every live buffer: {other:?}"),
            }
        }
    }
}

fn mapd(device: u32, size: u8, itt: u64) -> [u64; 4] {
    Command::Mapd { device, size, itt, valid: true }.encode()
}

#[test]
fn init_takes_the_its_with_wardens_tables() {
    let r = rig();
    let log = r.its.log();
    let dt = r.its.reg(GITS_BASER);
    let ct = r.its.reg(GITS_BASER + 8);
    let cbaser = r.its.reg(GITS_CBASER);
    for (what, value) in [("device table", dt), ("collection table", ct)] {
        assert!(GITS_BASER_F::VALID.is_set(value), "{what} valid");
        assert_eq!(GITS_BASER_F::PAGE_SIZE.read(value), 0, "{what}: 4 KiB pages");
        assert!(r.warden().contains(its_baser_address(value)), "{what} in warden's memory");
    }
    assert!(GITS_BASER_F::INDIRECT.is_set(dt), "two-level device table");
    assert!(!GITS_BASER_F::INDIRECT.is_set(ct));
    assert!(r.warden().contains(GITS_CBASER_F::PHYSICAL_ADDRESS.read(cbaser) << 12));
    assert!(log.contains(&ItsOp::Write64 { offset: GITS_CWRITER, value: 0 }));
    assert!(!GITS_CTLR_F::ENABLED.is_set(r.its.reg(GITS_CTLR) as u32), "left disabled");
    assert_eq!(r.virt.device_table().l2_pages(), 0, "level-2 pages come with MAPD");
    // What the host sees: physical LPIs, QEMU's IDs, DeviceIDs all covered, 512 collections.
    let typer = r.virt.typer();
    assert_eq!(GITS_TYPER_F::DEVBITS.read(typer), 15);
    assert_eq!(GITS_TYPER_F::ID_BITS.read(typer), 15);
    assert_eq!(GITS_TYPER_F::ITT_ENTRY_SIZE.read(typer), 11);
    assert!(GITS_TYPER_F::CIL.is_set(typer));
    assert_eq!(GITS_TYPER_F::CIDBITS.read(typer), 8);
    // The host's BASERs start as QEMU's reset values (types and entry sizes), invalid.
    let mut r = r;
    let virt_dt = r.read(GITS_BASER, 8);
    assert_eq!(GITS_BASER_F::TYPE.read(virt_dt), 1);
    assert!(!GITS_BASER_F::VALID.is_set(virt_dt));
    assert_eq!(r.read(GITS_BASER + 16, 8), 0, "unimplemented BASER2 is RAZ");
}

#[test]
fn gicv4_is_hidden_and_its_tables_never_valid() {
    let mut r = rig_with(FakeIts::gicv4, ItsFaults::default());
    let typer = r.read(GITS_TYPER, 8);
    assert!(!GITS_TYPER_F::VIRTUAL.is_set(typer));
    assert!(!GITS_TYPER_F::SEIS.is_set(typer));
    assert_eq!(typer & (1 << 37), 0, "no VMOVP");
    assert_eq!(r.read(GITS_TYPER + 4, 4), typer >> 32);
    // The vPE table: invalid at the ITS, RAZ/WI for the host.
    assert!(!GITS_BASER_F::VALID.is_set(r.its.reg(GITS_BASER + 16)));
    assert_eq!(r.read(GITS_BASER + 16, 8), 0);
    r.write(GITS_BASER + 16, 8, GITS_BASER_F::VALID::SET.value | r.host.at(DEVICE_TABLE));
    assert_eq!(r.read(GITS_BASER + 16, 8), 0);
    assert!(!GITS_BASER_F::VALID.is_set(r.its.reg(GITS_BASER + 16)));
}

#[test]
fn firmware_enabled_its_is_quiesced_first() {
    let mut frames = HeapFrames::new(64);
    let its = FakeIts::qemu(vec![frames.pool.range()]);
    its.preset_enabled();
    VirtIts::new(&its, &mut frames, params()).unwrap();
    let first_write = its.log().into_iter().find(|op| !matches!(op, ItsOp::Publish { .. }));
    assert_eq!(first_write, Some(ItsOp::Write32 { offset: GITS_CTLR, value: 0 }));
    let its = FakeIts::qemu(vec![frames.pool.range()]);
    its.preset_enabled();
    its.set_faults(ItsFaults { never_quiescent: true, ..Default::default() });
    assert_eq!(VirtIts::new(&its, &mut frames, params()).err(), Some(ItsInitError::NotQuiescent));
}

#[test]
fn without_two_level_tables_the_device_ids_shrink() {
    let r = rig_with(FakeIts::qemu, ItsFaults { no_indirect: true, ..Default::default() });
    let dt = r.its.reg(GITS_BASER);
    assert!(!GITS_BASER_F::INDIRECT.is_set(dt));
    assert_eq!(GITS_BASER_F::SIZE.read(dt), 15, "64 KiB flat table");
    assert_eq!(GITS_TYPER_F::DEVBITS.read(r.virt.typer()), 12, "8192 DeviceIDs");
}

#[test]
fn non_coherent_its_gets_cleaned_writes() {
    let mut r = rig_with(FakeIts::qemu, ItsFaults { non_shareable: true, ..Default::default() });
    r.linux_setup();
    r.its.take_log();
    r.send(&[mapd(8, 0, r.host.at(ITT))]);
    let publishes: Vec<bool> = r
        .its
        .log()
        .into_iter()
        .filter_map(|op| if let ItsOp::Publish { clean, .. } = op { Some(clean) } else { None })
        .collect();
    assert!(!publishes.is_empty() && publishes.iter().all(|&c| c), "{publishes:?}");
}

#[test]
fn linux_flow_maps_devices_in_wardens_table() {
    let mut r = rig();
    r.linux_setup();
    let commands = [
        mapd(0x10, 4, r.host.at(ITT)),
        Command::Mapc { icid: 0, target: 0, valid: true }.encode(),
        Command::Mapti { device: 0x10, event: 0, intid: 8192, icid: 0 }.encode(),
        Command::Sync { target: 0 }.encode(),
    ];
    r.send(&commands);
    assert_eq!(r.creadr(), 4 * COMMAND_BYTES, "all consumed");
    assert_eq!(r.its.commands(), commands, "passed on in order, canonical");
    assert_eq!(r.virt.device_table().l2_pages(), 1);
    let writes = r.its.device_writes();
    assert_eq!(writes.len(), 3, "DTE, CTE, ITE: {writes:?}");
    r.assert_device_writes_contained();
    // The DTE is in warden's level-2 page, never in the table the host named.
    let ItsOp::DeviceWrite { pa, .. } = writes[0] else { panic!() };
    assert!(r.warden().contains(pa));
    let ItsOp::DeviceWrite { pa, .. } = writes[2] else { panic!() };
    assert_eq!(pa, r.host.at(ITT), "the ITE goes to the host's ITT");
    assert_eq!(r.host.read_word(r.host.at(DEVICE_TABLE)), 0);
    let stats = r.virt.stats();
    assert_eq!((stats.commands, stats.forwarded, stats.dropped_invalid), (4, 4, 0));
    // Unmapping and mapping again reuses the page.
    r.send(&[Command::Mapd { device: 0x10, size: 0, itt: 0, valid: false }.encode()]);
    r.send(&[mapd(0x11, 0, r.host.at(ITT + 0x100))]);
    assert_eq!(r.virt.device_table().l2_pages(), 1);
    r.assert_device_writes_contained();
}

#[test]
fn tables_outside_host_memory_are_refused() {
    let mut r = rig();
    let page64k = GITS_BASER_F::PAGE_SIZE::Size64K.value;
    let before = r.read(GITS_BASER, 8);
    let warden = r.warden().start;
    for address in [r.host.at(CARVEOUT), warden, r.host.range.end - 0x1_0000 + 0x1_0000] {
        let value = GITS_BASER_F::VALID::SET.value | page64k | address;
        r.write(GITS_BASER, 8, value);
        assert_eq!(r.read(GITS_BASER, 8), before, "BASER at {address:#x} ignored");
    }
    // A table that starts in host memory and runs into the carveout.
    let value = GITS_BASER_F::VALID::SET.value | page64k | r.host.at(CARVEOUT - 0x1_0000) | 1;
    r.write(GITS_BASER, 8, value);
    assert_eq!(r.read(GITS_BASER, 8), before);
    // The same through two 32-bit halves: the low half alone (Valid is in the high half) is
    // accepted, the high half then refused.
    r.write(GITS_BASER, 4, page64k | r.host.at(CARVEOUT) & 0xffff_ffff);
    r.write(GITS_BASER + 4, 4, (GITS_BASER_F::VALID::SET.value | r.host.at(CARVEOUT)) >> 32);
    assert!(!GITS_BASER_F::VALID.is_set(r.read(GITS_BASER, 8)));
    let cbaser = GITS_CBASER_F::VALID::SET.value | r.host.at(CARVEOUT);
    r.write(GITS_CBASER, 8, cbaser);
    assert_eq!(r.read(GITS_CBASER, 8), 0);
    r.write(GITS_CBASER, 8, GITS_CBASER_F::VALID::SET.value | warden);
    assert_eq!(r.read(GITS_CBASER, 8), 0);
    assert_eq!(r.virt.stats().table_refusals, 7);
    // None of it reached the real ITS.
    assert!(r.warden().contains(its_baser_address(r.its.reg(GITS_BASER))));
}

#[test]
fn itts_outside_host_memory_are_dropped() {
    let mut r = rig();
    r.linux_setup();
    let warden = r.warden().start;
    let end = r.host.range.end;
    r.send(&[
        mapd(1, 4, r.host.at(CARVEOUT)),
        mapd(2, 4, warden),
        // 32 entries of 12 bytes from 0x100 before the end: past it.
        mapd(3, 4, end - 0x100),
        // Just before the carveout, and into it.
        mapd(4, 15, r.host.at(CARVEOUT - 0x100)),
        Command::Mapti { device: 1, event: 0, intid: 8192, icid: 0 }.encode(),
    ]);
    assert_eq!(r.creadr(), 5 * COMMAND_BYTES, "dropped commands are consumed");
    assert!(r.its.commands().is_empty(), "{:x?}", r.its.commands());
    assert_eq!(r.virt.stats().dropped_invalid, 5);
    assert!(r.its.device_writes().is_empty());
    assert_eq!(r.virt.device_table().l2_pages(), 0);
}

#[test]
fn gicv4_and_unknown_commands_are_dropped() {
    let mut r = rig();
    r.linux_setup();
    let mut packets: Vec<[u64; 4]> =
        GICV4_OPS.iter().map(|&op| [u64::from(op) | (0x10 << 32), 0, 0, 0]).collect();
    packets.push([0x42, 0, 0, 0]);
    packets.push(Command::Sync { target: 1 }.encode());
    r.send(&packets);
    assert_eq!(r.creadr(), packets.len() as u64 * COMMAND_BYTES);
    assert_eq!(r.its.commands(), [Command::Sync { target: 1 }.encode()]);
    assert_eq!(r.virt.stats().dropped_unsupported, GICV4_OPS.len() as u64 + 1);
}

#[test]
fn fields_out_of_range_are_dropped() {
    let mut r = rig();
    r.linux_setup();
    let itt = r.host.at(ITT);
    r.send(&[mapd(5, 0, itt)]);
    let bad = [
        Command::Mapc { icid: 0, target: 7, valid: true },
        Command::Mapc { icid: 512, target: 0, valid: true },
        Command::Sync { target: 0x1_0000 },
        Command::Movall { from: 0, to: 2 },
        Command::Mapti { device: 5, event: 0, intid: 100, icid: 0 },
        Command::Mapti { device: 5, event: 0, intid: 1 << 16, icid: 0 },
        Command::Mapi { device: 5, event: 3, icid: 0 },
        Command::Mapti { device: 5, event: 1 << 16, intid: 8192, icid: 0 },
        Command::Int { device: 0x600, event: 0 },
        Command::Int { device: 0x1_0000, event: 0 },
        Command::Mapd { device: 6, size: 16, itt, valid: true },
        Command::Mapd { device: 0x1_0000, size: 0, itt, valid: true },
        Command::Mapd { device: 0x700, size: 0, itt: 0, valid: false },
        Command::Invall { icid: 0xffff },
    ];
    let packets: Vec<[u64; 4]> = bad.iter().map(Command::encode).collect();
    r.send(&packets);
    assert_eq!(r.its.commands().len(), 1, "only the first MAPD: {:x?}", r.its.commands());
    assert_eq!(r.virt.stats().dropped_invalid, bad.len() as u64);
    // MAPC V=0 is passed with its target cleared.
    r.send(&[[0x9, 0, 3 | (0xdead << 16), 0]]);
    assert_eq!(r.its.commands()[1], Command::Mapc { icid: 3, target: 0, valid: false }.encode());
}

#[test]
fn pta_targets_are_redistributor_addresses() {
    let mut frames = HeapFrames::new(64);
    let host = FakeHostMemory::new(HOST_BYTES);
    let its = FakeIts::qemu(vec![frames.pool.range(), host.range]);
    its.set_typer(its.reg(GITS_TYPER) | GITS_TYPER_F::PTA::SET.value);
    let mut r = Rig { virt: VirtIts::new(&its, &mut frames, params()).unwrap(), frames, host, its };
    r.linux_setup();
    r.send(&[
        Command::Sync { target: 0x080c_0000 >> 16 }.encode(),
        Command::Sync { target: 1 }.encode(),
    ]);
    assert_eq!(r.its.commands(), [Command::Sync { target: 0x080c }.encode()]);
}

#[test]
fn shadow_queue_wraps() {
    let mut r = rig();
    r.linux_setup();
    let entries = VirtIts::shadow_entries();
    let mut sent = 0u32;
    while sent < 3 * entries + 5 {
        let batch: Vec<[u64; 4]> =
            (0..10).map(|i| Command::Sync { target: u64::from((sent + i) % 2) }.encode()).collect();
        r.send(&batch);
        sent += 10;
        let (creadr, cwriter) = r.virt.host_offsets();
        assert_eq!(creadr, cwriter, "each batch completes at once on a QEMU-like ITS");
    }
    assert_eq!(r.its.commands().len() as u32, sent);
    assert_eq!(r.virt.shadow_write_index(), sent % entries);
    // The real GITS_CWRITER wrapped: some write of it is below the one before.
    let cwriters: Vec<u64> = r
        .its
        .log()
        .into_iter()
        .filter_map(|op| match op {
            ItsOp::Write64 { offset: GITS_CWRITER, value } => Some(value),
            _ => None,
        })
        .collect();
    assert!(cwriters.windows(2).any(|w| w[1] < w[0]), "{cwriters:x?}");
    // The host's queue wrapped too (2048 entries): keep going past it.
    while sent < 2100 {
        let batch: Vec<[u64; 4]> = (0..50).map(|_| Command::Sync { target: 0 }.encode()).collect();
        r.send(&batch);
        sent += 50;
    }
    let (creadr, cwriter) = r.virt.host_offsets();
    assert_eq!((creadr, cwriter), (u64::from(sent % 2048) * COMMAND_BYTES, creadr));
    assert_eq!(r.its.commands().len() as u32, sent);
}

#[test]
fn work_per_trap_is_bounded() {
    let mut r = rig();
    r.linux_setup();
    let packets: Vec<[u64; 4]> = (0..1000).map(|_| Command::Sync { target: 0 }.encode()).collect();
    r.send(&packets);
    let budget = ItsParams::DEFAULT_CMD_BUDGET as usize;
    assert_eq!(r.its.commands().len(), budget, "one CWRITER write: one budget");
    let mut reads = 0;
    while r.creadr() != 1000 * COMMAND_BYTES {
        reads += 1;
        assert!(r.its.commands().len() <= budget * (reads + 1));
        assert!(reads < 100);
    }
    // The write did one budget and the read that finishes is not counted.
    assert_eq!(reads, 1000usize.div_ceil(budget) - 2);
    assert_eq!(r.its.commands().len(), 1000);
}

#[test]
fn slow_its_finishes_on_later_traps() {
    let mut r = rig_with(FakeIts::qemu, ItsFaults { busy_polls: 20, ..Default::default() });
    r.linux_setup();
    r.send(&[Command::Sync { target: 0 }.encode(), Command::Sync { target: 1 }.encode()]);
    assert_eq!(r.virt.host_offsets().0, 0, "not done within 16 polls: CREADR stays");
    assert_eq!(r.virt.stats().real_busy, 1);
    assert!(r.its.commands().is_empty());
    assert_eq!(r.creadr(), 2 * COMMAND_BYTES, "the batch completed during this read's wait");
    // The next batch is slow too: CREADR moves only once the ITS is done with it.
    r.send(&[Command::Sync { target: 0 }.encode()]);
    assert_eq!(r.virt.host_offsets().0, 2 * COMMAND_BYTES);
    assert_eq!(r.creadr(), 3 * COMMAND_BYTES);
    assert_eq!(r.its.commands().len(), 3);
}

#[test]
fn stuck_its_never_blocks_the_host() {
    let mut r = rig_with(FakeIts::qemu, ItsFaults { stuck: true, ..Default::default() });
    r.linux_setup();
    r.send(&[Command::Sync { target: 0 }.encode()]);
    for _ in 0..10 {
        assert_eq!(r.creadr(), 0);
    }
    r.send(&[Command::Sync { target: 0 }.encode()]);
    let writes = r
        .its
        .log()
        .into_iter()
        .filter(|op| matches!(op, ItsOp::Write64 { offset: GITS_CWRITER, .. }))
        .count();
    assert_eq!(writes, 2, "setup's CWRITER = 0 and one batch: nothing pushed behind it");
    assert!(r.virt.stats().real_busy >= 10);
}

#[test]
fn stalled_its_stops_until_the_host_retries() {
    let mut r =
        rig_with(FakeIts::qemu, ItsFaults { stall_op: Some(OP_MAPC), ..Default::default() });
    r.linux_setup();
    r.send(&[
        Command::Sync { target: 0 }.encode(),
        Command::Mapc { icid: 0, target: 0, valid: true }.encode(),
    ]);
    assert_eq!(r.creadr() & 1, 1, "CREADR.Stalled");
    assert_eq!(r.virt.stats().real_stalls, 1);
    r.send(&[Command::Sync { target: 0 }.encode()]);
    assert_eq!(r.its.commands().len(), 2, "nothing more while stalled");
    // Retry: the model re-runs the MAPC (succeeding now), then the rest follows.
    let (_, cwriter) = r.virt.host_offsets();
    r.write(GITS_CWRITER, 8, cwriter | 1);
    assert_eq!(r.creadr(), 3 * COMMAND_BYTES);
}

#[test]
fn unreadable_host_queue_stalls_until_retry() {
    let mut r = rig();
    r.linux_setup();
    r.send(&[Command::Sync { target: 0 }.encode()]);
    // The next command's bytes are no longer host memory (as if the host pointed the queue
    // at memory that is not its own).
    let at = r.host.at(QUEUE + COMMAND_BYTES);
    r.host.forbidden.push(MemRange::new(at, at + COMMAND_BYTES));
    r.send(&[Command::Sync { target: 0 }.encode(), Command::Sync { target: 1 }.encode()]);
    assert_eq!(r.creadr(), COMMAND_BYTES | 1, "stalled at the unreadable command");
    assert_eq!(r.virt.stats().queue_read_aborts, 1);
    r.host.forbidden.pop();
    let (_, cwriter) = r.virt.host_offsets();
    r.write(GITS_CWRITER, 8, cwriter | 1);
    assert_eq!(r.creadr(), 3 * COMMAND_BYTES);
    assert_eq!(r.its.commands().len(), 3);
}

#[test]
fn registers_follow_the_architecture() {
    let mut r = rig();
    r.linux_setup();
    let dt = r.read(GITS_BASER, 8);
    let cbaser = r.read(GITS_CBASER, 8);
    // Ignored while enabled.
    r.write(GITS_BASER, 8, 0);
    r.write(GITS_CBASER, 8, 0);
    assert_eq!((r.read(GITS_BASER, 8), r.read(GITS_CBASER, 8)), (dt, cbaser));
    // TYPE and entry size are read-only.
    r.write(GITS_CTLR, 4, 0);
    r.write(GITS_BASER, 8, dt & !mask(GITS_BASER_F::TYPE));
    assert_eq!(r.read(GITS_BASER, 8), dt);
    // CWRITER beyond the queue is ignored; CREADR is read-only.
    r.write(GITS_CWRITER, 8, QUEUE_PAGES * 0x1000);
    assert_eq!(r.read(GITS_CWRITER, 8), 0);
    r.write(GITS_CREADR, 8, 0x40);
    assert_eq!(r.read(GITS_CREADR, 8), 0);
    // Undefined offsets and shapes: RAZ/WI, counted.
    let before = r.virt.stats().bad_accesses;
    assert_eq!(r.read(0x200, 4), 0);
    assert_eq!(r.read(GITS_CTLR, 8), 0);
    assert_eq!(r.read(GITS_TYPER + 2, 4), 0);
    r.write(GITS_TYPER, 8, 0);
    assert_eq!(r.virt.stats().bad_accesses, before + 4);
    // ID registers and IIDR come from the ITS.
    assert_eq!(r.read(0xffe8, 4), 0x3b);
    assert_eq!(r.read(GITS_IIDR, 4), 0x0100_043b);
    // Disabled: quiescent again; commands wait for the enable.
    assert_eq!(r.read(GITS_CTLR, 4), 1 << 31);
    r.send(&[Command::Sync { target: 0 }.encode()]);
    assert!(r.its.commands().is_empty());
    r.write(GITS_CTLR, 4, 1);
    assert_eq!(r.its.commands().len(), 1);
}

#[test]
fn device_table_quota_is_enforced() {
    let mut r = rig();
    r.linux_setup();
    let itt = r.host.at(ITT);
    // quota 4: DeviceIDs 512 apart need a page each.
    let packets: Vec<[u64; 4]> = (0..6).map(|i| mapd(i * 512, 0, itt)).collect();
    r.send(&packets);
    assert_eq!(r.virt.device_table().l2_pages(), 4);
    assert_eq!(r.its.commands().len(), 4);
    assert_eq!(r.virt.stats().dropped_invalid, 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// A hostile host: random register accesses, random command words, and plausible MAPD /
    /// MAPTI / MAPC / DISCARD commands naming host memory, the carveout or warden's memory.
    /// Nothing panics, the real ITS never writes outside warden's tables and host memory, and
    /// it is only given canonical, valid commands.
    #[test]
    fn hostile_host_never_escapes(
        ops in proptest::collection::vec(
            (0u8..9, proptest::prelude::any::<u64>(), proptest::prelude::any::<[u64; 4]>()),
            1..40,
        ),
    ) {
        let mut r = rig();
        r.linux_setup();
        for (kind, value, words) in ops {
            let pick = value as usize;
            let offsets = [GITS_CTLR, GITS_CBASER, GITS_CBASER + 4, GITS_CWRITER, GITS_CREADR,
                GITS_BASER, GITS_BASER + 8, GITS_BASER + 12, 0x48, 0xffe8];
            let offset = offsets[pick % offsets.len()];
            // A plausible address: in the host buffer, the carveout, or warden's memory.
            let address = [
                r.host.at(((value >> 8) % HOST_BYTES as u64) & !0xff),
                r.host.at(CARVEOUT + ((value >> 8) & 0xff00)),
                r.warden().start + ((value >> 8) & 0xff00),
            ][pick % 3];
            let device = (words[0] % 8) as u32;
            let event = (words[1] % 8) as u32;
            match kind {
                0 => { r.read(offset, if pick & 1 == 0 { 4 } else { 8 }); }
                1 => r.write(offset, 4, value),
                2 => r.write(offset, 8, value),
                3 => {
                    let size = (words[2] % 6) as u8;
                    r.send(&[mapd(device, size, address)]);
                }
                4 => r.send(&[words]),
                5 => r.write(GITS_CTLR, 4, 1),
                6 => r.send(&[
                    Command::Mapti { device, event, intid: 8192 + event, icid: 0 }.encode(),
                ]),
                7 => r.send(&[Command::Discard { device, event }.encode()]),
                _ => r.send(&[
                    Command::Mapc { icid: (words[2] % 600) as u16, target: words[3] % 3, valid: true }
                        .encode(),
                ]),
            }
            r.assert_device_writes_contained();
        }
        for c in r.its.commands() {
            let decoded = Command::decode(c);
            proptest::prop_assert!(decoded.is_ok());
            proptest::prop_assert_eq!(decoded.unwrap().encode(), c);
        }
    }
}
