//! The GICv3 pieces that write memory, as the host drives their emulation: the ITS control
//! frame (GITS_CTLR, GITS_BASERn, GITS_CBASER, GITS_CWRITER, ... at any offset and width) with
//! commands the fuzzer writes into the host's queue, and a redistributor's RD_base frame
//! (GICR_PROPBASER, GICR_PENDBASER, GICR_CTLR.EnableLPIs). The models are QEMU-like
//! (`warden::gic::fake`). Oracles: no panic; every memory write the modelled ITS makes lands in
//! warden's own tables or in host memory the host may use (never the forbidden range standing
//! for a carveout, never anywhere else); LPIs are never enabled on a redistributor whose tables
//! are not host memory.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use warden::gic::HostMemory;
use warden::gic::fake::{FakeHostMemory, FakeIts, FakeRedist, ItsOp};
use warden::gic::its::{ItsParams, RdTarget, VirtIts};
use warden::gic::redist::VirtRedist;
use warden::gic::regs::*;
use warden::mm::{MemRange, PoolFrames};

const HOST_BYTES: u64 = 0x4_0000;
const QUEUE: u64 = 0;
/// The part of the host buffer standing for a donated carveout.
const FORBIDDEN: u64 = 0x3_0000;
const ITS_REGS: [u32; 14] = [
    GITS_CTLR,
    GITS_IIDR,
    GITS_TYPER,
    GITS_TYPER + 4,
    GITS_CBASER,
    GITS_CBASER + 4,
    GITS_CWRITER,
    GITS_CWRITER + 4,
    GITS_CREADR,
    GITS_BASER,
    GITS_BASER + 8,
    GITS_BASER + 16,
    GITS_BASER + 0x38,
    GITS_IDREGS,
];
const GICR_REGS: [u32; 8] = [
    GICR_CTLR,
    GICR_TYPER,
    GICR_PROPBASER,
    GICR_PROPBASER + 4,
    GICR_PENDBASER,
    GICR_PENDBASER + 4,
    GICR_PIDR2,
    0x10,
];

#[derive(Arbitrary, Debug)]
enum Reg {
    Known(u8),
    Raw(u16),
}

/// An address the host could write into a register: somewhere in its buffer (the forbidden
/// part included), or anything at all.
#[derive(Arbitrary, Debug)]
enum Addr {
    Host(u32),
    Raw(u64),
}

impl Addr {
    fn value(&self, host: &FakeHostMemory) -> u64 {
        match *self {
            Addr::Host(off) => host.at(u64::from(off) % HOST_BYTES),
            Addr::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    ItsWrite {
        reg: Reg,
        wide: bool,
        value: u64,
        addr: Option<Addr>,
    },
    ItsRead {
        reg: Reg,
        wide: bool,
    },
    /// A command in the host's queue at GITS_CWRITER + `ahead` entries; its address-bearing
    /// word (ITT address, RDbase) may point into the host buffer.
    Command {
        ahead: u8,
        words: [u64; 4],
        addr: Option<Addr>,
    },
    /// Moves the host's GITS_CWRITER forward by `count` commands.
    Publish {
        count: u8,
    },
    RedistWrite {
        reg: Reg,
        wide: bool,
        value: u64,
        addr: Option<Addr>,
    },
    RedistRead {
        reg: Reg,
        wide: bool,
    },
    /// Host memory the ITS reads as an ITT or a table (content only).
    Fill {
        offset: u32,
        words: [u64; 4],
    },
}

fn offset(reg: &Reg, known: &[u32], wide: bool) -> (u32, u8) {
    let size = if wide { 8 } else { 4 };
    let off = match *reg {
        Reg::Known(i) => known[usize::from(i) % known.len()],
        Reg::Raw(r) => u32::from(r),
    };
    (off, size)
}

fn with_addr(value: u64, addr: &Option<Addr>, host: &FakeHostMemory) -> u64 {
    // Address fields sit in bits [51:12] (tables, queues) or [51:8] (ITTs): replace them.
    match addr {
        Some(a) => (value & !0x000f_ffff_ffff_f000) | (a.value(host) & 0x000f_ffff_ffff_f000),
        None => value,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    // Warden's frame pool for its ITS tables: a heap buffer, identity "physical" addresses.
    let layout = std::alloc::Layout::from_size_align(64 * 4096, 2 << 20).unwrap();
    // SAFETY: a non-zero size.
    let base = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!base.is_null());
    let pool_range = MemRange::new(base as u64, base as u64 + layout.size() as u64);
    // SAFETY: the buffer is this pool's alone until it is freed at the end.
    let mut frames = unsafe { PoolFrames::new(pool_range) }.unwrap();
    let mut host = FakeHostMemory::new(HOST_BYTES as usize);
    let forbidden = MemRange::new(host.at(FORBIDDEN), host.at(FORBIDDEN + 0x1_0000));
    host.forbidden.push(forbidden);
    let its = FakeIts::qemu(vec![pool_range, host.range]);
    let params = ItsParams {
        targets: vec![
            RdTarget { rd_base: 0x080a_0000, processor: 0 },
            RdTarget { rd_base: 0x080c_0000, processor: 1 },
        ],
        lpi_id_bits: 16,
        cmd_budget: ItsParams::DEFAULT_CMD_BUDGET,
        poll_limit: 16,
        l2_quota: 4,
    };
    let Ok(mut virt) = VirtIts::new(&its, &mut frames, params) else {
        panic!("a QEMU-like ITS must be taken");
    };
    let rd_io = FakeRedist::qemu(0, true);
    let Ok(mut rd) = VirtRedist::take(&rd_io, 16, 16) else { panic!("a QEMU-like redistributor") };
    let mut cwriter: u64 = 0;
    let queue_bytes = 4 * 4096;
    for op in ops.iter().take(128) {
        match op {
            Op::ItsWrite { reg, wide, value, addr } => {
                let (off, size) = offset(reg, &ITS_REGS, *wide);
                let v = with_addr(*value, addr, &host);
                virt.mmio_write(off, size, v, &its, &host, &mut frames);
            }
            Op::ItsRead { reg, wide } => {
                let (off, size) = offset(reg, &ITS_REGS, *wide);
                virt.mmio_read(off, size, &its, &host, &mut frames);
            }
            Op::Command { ahead, words, addr } => {
                let mut words = *words;
                if addr.is_some() {
                    words[2] = with_addr(words[2], addr, &host);
                }
                let slot = (cwriter + 32 * u64::from(*ahead % 16)) % queue_bytes;
                host.write_words(host.at(QUEUE) + slot, &words);
            }
            Op::Publish { count } => {
                cwriter = (cwriter + 32 * u64::from(*count % 64)) % queue_bytes;
                virt.mmio_write(GITS_CWRITER, 8, cwriter, &its, &host, &mut frames);
                virt.mmio_read(GITS_CREADR, 8, &its, &host, &mut frames);
            }
            Op::RedistWrite { reg, wide, value, addr } => {
                let (off, size) = offset(reg, &GICR_REGS, *wide);
                let v = with_addr(*value, addr, &host);
                rd.write(&rd_io, &host, off, size, v);
            }
            Op::RedistRead { reg, wide } => {
                let (off, size) = offset(reg, &GICR_REGS, *wide);
                rd.read(&rd_io, off, size);
            }
            Op::Fill { offset, words } => {
                let at = host.at(u64::from(*offset & !7) % (HOST_BYTES - 32));
                host.write_words(at, words);
            }
        }
        // Every ITS memory write: warden's tables, or host memory the host may use.
        for w in its.take_log() {
            match w {
                ItsOp::WildWrite { .. } => panic!("the ITS wrote outside every live buffer: {w:?}"),
                ItsOp::DeviceWrite { pa, len } => {
                    let r = MemRange::from_base_size(pa, len).expect("a write has a range");
                    assert!(
                        virt.memory().iter().any(|m| m.contains_range(&r))
                            || host.is_host_memory(r),
                        "the ITS wrote {r}: neither warden's table nor host memory"
                    );
                }
                _ => {}
            }
        }
        // LPIs on only with both tables in host memory.
        if rd_io.ctlr() & 1 != 0 {
            for value in [rd_io.propbaser(), rd_io.pendbaser()] {
                let pa = value & 0x000f_ffff_ffff_f000;
                assert!(
                    host.is_host_memory(MemRange::new(pa, pa + 0x1000)),
                    "EnableLPIs with a table at {pa:#x}"
                );
            }
        }
    }
    drop(frames);
    // SAFETY: allocated above with this layout; nothing refers to it any more.
    unsafe { std::alloc::dealloc(base, layout) };
});
