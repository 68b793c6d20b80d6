//! The virtual SMMUv3 as the host drives it: trapped register reads and writes (32/64-bit,
//! any offset), and host memory the emulation reads — stream tables, command queue entries,
//! context descriptors — filled by the fuzzer, plus real events forwarded to the host's event
//! queue and ranges that stop being the host's (a donation) in between. The oracles are what
//! G2 and G3 promise whatever the host writes: no panic; every real STE is one warden may
//! install (abort, stage-2 only, or nested with its CD in warden's shadow arena); every shadow
//! CD warden writes has no stall, no hardware-managed access/dirty flags and its own real ASID;
//! every real command is for the host's VMID; nothing is read or written outside host memory
//! (the fake refuses it).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use warden::mm::MemRange;
use warden::smmu::regs::*;
use warden::smmu::virt::cmdq::RealCommand;
use warden::smmu::virt::fake::{FakeMemory, RealOp, RecordingSmmu};
use warden::smmu::virt::regs::Advertised;
use warden::smmu::virt::ste::RealSte;
use warden::smmu::virt::{CdArena, VirtConfig, VirtSmmu};

const HOST: MemRange = MemRange::new(0x4000_0000, 0x4800_0000);
const HOST_VMID: u16 = 1;
const SIDS: [u32; 3] = [0x08, 0x10, 0x18];
const ARENA: CdArena =
    CdArena { ipa: 0x7f_c000_0000, slots: 6, unmapped_ipa: 0x7f_c000_0000 + 0x3fff_f000 };
/// Where the fuzzer's memory writes land: the places a driver puts its SMMU structures, plus
/// just outside host memory.
const BASES: [u64; 8] = [
    0x4010_0000, // stream table (L1 or linear)
    0x4011_0000, // level-2 table
    0x4020_0000, // command queue
    0x4021_0000, // event queue
    0x4030_0000, // CDs
    0x4100_0000, // page tables
    0x47ff_f000, // the last host page
    0x4800_0000, // not host memory
];
const REGS: [u32; 24] = [
    IDR0,
    IDR1,
    IDR5,
    CR0,
    CR0ACK,
    CR1,
    CR2,
    GBPA,
    IRQ_CTRL,
    IRQ_CTRLACK,
    GERROR,
    GERRORN,
    STRTAB_BASE,
    STRTAB_BASE_CFG,
    CMDQ_BASE,
    CMDQ_PROD,
    CMDQ_CONS,
    EVTQ_BASE,
    EVTQ_PROD,
    EVTQ_CONS,
    IDR3,
    GERROR_IRQ_CFG0,
    EVTQ_IRQ_CFG0,
    0xe00,
];

#[derive(Arbitrary, Debug)]
enum Reg {
    Known(u8),
    Raw(u32),
}

impl Reg {
    fn offset(&self) -> u32 {
        match *self {
            Reg::Known(i) => REGS[usize::from(i) % REGS.len()],
            Reg::Raw(r) => r % 0x2_0000,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        reg: Reg,
        wide: bool,
        value: u64,
    },
    Read {
        reg: Reg,
        wide: bool,
    },
    /// Eight words into host memory at one of [`BASES`] plus an offset.
    Fill {
        base: u8,
        offset: u16,
        words: [u64; 8],
    },
    /// A command `slot` entries past PROD (modulo 16) in the queue at BASES[2].
    Command {
        slot: u8,
        words: [u64; 2],
    },
    ForwardEvent {
        sid: u8,
        record: [u64; 4],
    },
    Donate {
        page: u16,
    },
    G3 {
        on: bool,
    },
    /// Publishes `count` more commands (CMDQ_PROD, as the host's driver tracks it) and polls
    /// CMDQ_CONS a few times, the way Linux waits for a CMD_SYNC.
    Publish {
        count: u8,
    },
}

/// Linux's `arm_smmu_device_reset`, abridged, and a stage-1 STE and CD for every stream: the
/// fuzzer starts from a working configuration (or, with `preset` off, from reset).
fn linux_reset(smmu: &mut VirtSmmu, mem: &mut FakeMemory, real: &mut RecordingSmmu) -> u32 {
    let [strtab, l2, cmdq, evtq, cds, tables, ..] = BASES;
    let mut w = |off: u32, size: u8, v: u64| {
        smmu.mmio_write(off, size, v, mem, real);
    };
    w(CR0, 4, 0);
    w(CR1, 4, 0xd75);
    w(CR2, 4, 0x6);
    w(STRTAB_BASE, 8, strtab | (1 << 62));
    w(STRTAB_BASE_CFG, 4, (1 << 16) | (8 << 6) | 16);
    w(CMDQ_BASE, 8, cmdq | (1 << 62) | 8);
    w(EVTQ_BASE, 8, evtq | (1 << 62) | 7);
    w(CR0, 4, 0b1100);
    w(IRQ_CTRL, 4, 0b101);
    mem.write_u64(strtab, l2 | 9);
    for (i, sid) in SIDS.iter().enumerate() {
        let i = i as u64;
        let cd = cds + 64 * i;
        // Linux's CD (T0SZ 25, 4K, WBWA inner shareable, EPD1, V, IPS 40, AA64, R, A, ASET)
        // and stage-1 STE (CD pointer, S1DSS SSID0, CIR/COR WBRA, CSH inner).
        let w0 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 30) | (1 << 31) | (2 << 32);
        let w0 = w0 | (1 << 41) | (1 << 45) | (1 << 46) | (1 << 47) | ((i + 1) << 48);
        mem.write_words(cd, &[w0, tables + 0x1000 * i, 0, 0xff, 0, 0, 0, 0]);
        let ste = [1 | (0b101 << 1) | cd, 2 | (1 << 2) | (1 << 4) | (3 << 6), 0, 0, 0, 0, 0, 0];
        mem.write_words(l2 + 64 * u64::from(*sid), &ste);
    }
    // CFGI_ALL, TLBI_NSNH_ALL, CMD_SYNC.
    mem.write_words(cmdq, &[0x04, 31, 0x30, 0, 0x46 | (2 << 12), 0]);
    smmu.mmio_write(CMDQ_PROD, 4, 3, mem, real);
    smmu.mmio_read(CMDQ_CONS, 4, mem, real);
    smmu.mmio_write(CR0, 4, 0b1101, mem, real);
    3
}

/// G3 as the real SMMU sees it: a real ASID that a shadow CD gives to other tables than the
/// last shadow CD that used it must have been invalidated (TLBI_NH_ASID of it, TLBI_NH_ALL or
/// TLBI_S12_VMALL) and a CMD_SYNC completed since that last use.
#[derive(Default)]
struct G3Model {
    /// Per real ASID: the tables of the last shadow CD with it, and whether a covering TLBI
    /// then a sync came after that.
    last: std::collections::BTreeMap<u16, ((u64, u64), bool)>,
    /// TLBIs issued since the last sync.
    pending: Vec<Option<u16>>,
}

impl G3Model {
    fn see(&mut self, op: &RealOp) {
        const EPD0: u64 = 1 << 14;
        const EPD1: u64 = 1 << 30;
        const TTB: u64 = 0x000f_ffff_ffff_fff0;
        match *op {
            RealOp::WriteCd(_, w) if w[0] & (1 << 31) != 0 => {
                let asid = (w[0] >> 48) as u16;
                let ttb0 = if w[0] & EPD0 == 0 { w[1] & TTB } else { u64::MAX };
                let ttb1 = if w[0] & EPD1 == 0 { w[2] & TTB } else { u64::MAX };
                if let Some(&(tables, flushed)) = self.last.get(&asid) {
                    assert!(
                        tables == (ttb0, ttb1) || flushed,
                        "G3: real ASID {asid} goes from tables {tables:x?} to {:x?} without a \
                         TLBI + CMD_SYNC in between",
                        (ttb0, ttb1)
                    );
                }
                self.last.insert(asid, ((ttb0, ttb1), false));
            }
            RealOp::Command(RealCommand::TlbiNhAsid { asid, .. }) => self.pending.push(Some(asid)),
            RealOp::Command(RealCommand::TlbiNhAll { .. } | RealCommand::TlbiS12Vmall { .. }) => {
                self.pending.push(None)
            }
            RealOp::Sync => {
                for p in self.pending.drain(..) {
                    for (asid, (_, flushed)) in self.last.iter_mut() {
                        if p.is_none_or(|a| a == *asid) {
                            *flushed = true;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn check(log: &[RealOp]) {
    let arena = MemRange::new(ARENA.ipa, ARENA.ipa + 64 * u64::from(ARENA.slots));
    for op in log {
        match *op {
            RealOp::Install(sid, ste) => {
                assert!(SIDS.contains(&sid), "real STE for stream {sid:#x}, not the host's");
                if let RealSte::Nested { cd_ipa } = ste {
                    assert!(
                        arena.contains(cd_ipa) || cd_ipa == ARENA.unmapped_ipa,
                        "nested STE points at {cd_ipa:#x}, outside warden's shadow arena"
                    );
                }
            }
            RealOp::WriteCd(ipa, words) => {
                assert!(arena.contains(ipa), "shadow CD written at {ipa:#x}");
                if words[0] & (1 << 31) != 0 {
                    assert_eq!(words[0] & (1 << 44), 0, "shadow CD with S (stall) set: {words:x?}");
                    assert_eq!(words[0] & (3 << 42), 0, "shadow CD with HA/HD set: {words:x?}");
                }
            }
            RealOp::Command(cmd) => {
                let vmid = match cmd {
                    RealCommand::TlbiNhAll { vmid }
                    | RealCommand::TlbiNhAsid { vmid, .. }
                    | RealCommand::TlbiNhVa { vmid, .. }
                    | RealCommand::TlbiNhVaa { vmid, .. }
                    | RealCommand::TlbiS12Vmall { vmid } => vmid,
                    _ => HOST_VMID,
                };
                assert_eq!(vmid, HOST_VMID, "{cmd:?} for another VMID");
            }
            RealOp::Sync => {}
        }
    }
}

fuzz_target!(|input: (bool, bool, Vec<Op>)| {
    let (asid16, preset, ops) = input;
    let mut smmu = VirtSmmu::new(VirtConfig {
        advertised: Advertised { sid_bits: 16, oas_field: 2, asid16, cmdq_log2: 8, evtq_log2: 7 },
        host_vmid: HOST_VMID,
        host_sids: SIDS.to_vec(),
        cmd_budget: 64,
        g3_enabled: true,
        arena: ARENA,
    });
    let mut mem = FakeMemory::new(&[HOST]);
    let mut real = RecordingSmmu::default();
    let mut g3 = G3Model::default();
    let mut g3_always_on = true;
    let mut prod = if preset { linux_reset(&mut smmu, &mut mem, &mut real) } else { 0 };
    let log = real.take();
    check(&log);
    log.iter().for_each(|op| g3.see(op));
    for op in ops.iter().take(256) {
        match op {
            Op::Write { reg, wide, value } => {
                let size = if *wide { 8 } else { 4 };
                smmu.mmio_write(reg.offset(), size, *value, &mut mem, &mut real);
            }
            Op::Read { reg, wide } => {
                let size = if *wide { 8 } else { 4 };
                smmu.mmio_read(reg.offset(), size, &mut mem, &mut real);
            }
            Op::Fill { base, offset, words } => {
                let addr = BASES[usize::from(*base) % BASES.len()] + u64::from(*offset & !7);
                mem.write_words(addr, words);
            }
            Op::Command { slot, words } => {
                // Mostly just ahead of PROD, where a driver writes its next commands.
                let index = (prod + u32::from(*slot % 16)) & 0xff;
                mem.write_words(BASES[2] + 16 * u64::from(index), words);
            }
            Op::ForwardEvent { sid, record } => {
                let mut record = *record;
                let sid = SIDS[usize::from(*sid) % SIDS.len()];
                record[0] = (record[0] & 0xffff_ffff) | (u64::from(sid) << 32);
                smmu.forward_event(&record, &mut mem);
            }
            Op::Donate { page } => {
                let start = HOST.start + (u64::from(*page) << 12) % HOST.size();
                mem.take_from_host(MemRange::new(start, start + 0x1000));
            }
            Op::Publish { count } => {
                prod = (prod + u32::from(*count)) & 0x1ff;
                smmu.mmio_write(CMDQ_PROD, 4, u64::from(prod), &mut mem, &mut real);
                for _ in 0..4 {
                    smmu.mmio_read(CMDQ_CONS, 4, &mut mem, &mut real);
                }
            }
            Op::G3 { on } => {
                g3_always_on &= *on;
                smmu.set_g3_enabled(*on);
            }
        }
        let log = real.take();
        check(&log);
        if g3_always_on {
            log.iter().for_each(|op| g3.see(op));
        }
    }
});
