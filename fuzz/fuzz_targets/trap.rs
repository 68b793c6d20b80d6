//! Every trap the host (or a peer) can take to warden, as the trap dispatcher sees it: HVC and
//! trapped SMC with any registers (SMCCC routing, PSCI mediation, warden's calls and their
//! request decoding), data aborts on the emulated windows (the MMIO decoder and the control
//! page's register file), and raw syndromes (ESR decoding, violations, injected exceptions).
//! Two CPUs share one `TrapHandler`, as on hardware. The only oracle is warden's own: it must
//! never panic, whatever the host puts in the frame.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use warden::mm::MemRange;
use warden::trap::esr::{ESR_EC_SHIFT, ESR_IL, ExceptionClass};
use warden::trap::fake::{FakeEl3, FakePlatform};
use warden::trap::psci::Psci;
use warden::trap::{TrapFrame, TrapHandler};
use warden_abi::handoff::Caller;

const CONTROL_PAGE: u64 = 0x090c_0000;
const VSMMU: MemRange = MemRange::new(0x0905_0000, 0x0907_0000);

/// A function ID, biased towards the ranges warden decodes.
#[derive(Arbitrary, Debug)]
enum Fid {
    Smccc(u8),
    Psci { low: u8, smc64: bool },
    Warden { low: u16, smc64: bool },
    Raw(u32),
}

impl Fid {
    fn value(&self) -> u64 {
        let bit30 = |b: bool| if b { 1 << 30 } else { 0 };
        u64::from(match *self {
            Fid::Smccc(low) => 0x8000_0000 | u32::from(low & 0x7f),
            Fid::Psci { low, smc64 } => 0x8400_0000 | u32::from(low & 0x1f) | bit30(smc64),
            Fid::Warden { low, smc64 } => 0x8600_0000 | u32::from(low) | bit30(smc64),
            Fid::Raw(v) => v,
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Hvc {
        imm: u16,
    },
    Smc {
        imm: u16,
    },
    /// A data abort on the control page: the ISS (ISV, SAS, SRT, WnR, ...) is the fuzzer's.
    ControlPage {
        offset: u16,
        iss: u32,
    },
    /// A data abort on the virtual SMMU's frames.
    Vsmmu {
        offset: u32,
        iss: u32,
    },
    /// Any syndrome at all, with any fault address.
    Raw {
        esr: u64,
        hpfar: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct Trap {
    second_cpu: bool,
    from_peer: bool,
    kind: Kind,
    fid: Fid,
    args: [u64; 7],
    far: u64,
    elr: u64,
    spsr: u64,
}

fn esr(class: ExceptionClass, iss: u32) -> u64 {
    (u64::from(class.bits()) << ESR_EC_SHIFT) | ESR_IL | u64::from(iss & 0x1ff_ffff)
}

fn platform(cpu: usize, el3: &Arc<FakeEl3>) -> FakePlatform {
    let mut p = FakePlatform::new(cpu, el3.clone());
    p.board.control_page = Some(CONTROL_PAGE);
    p.vsmmu_frames = Some(VSMMU);
    p.handoff_reply = Ok([0; 8]);
    p.peer_reply = Ok(0);
    p
}

fuzz_target!(|traps: Vec<Trap>| {
    let Ok(psci) = Psci::new(&[0, 1], 0) else { return };
    let handler = TrapHandler::new(psci);
    let el3 = Arc::new(FakeEl3::qemu());
    let mut cpus = [platform(0, &el3), platform(1, &el3)];
    for trap in traps.iter().take(64) {
        let p = &mut cpus[usize::from(trap.second_cpu)];
        p.caller = if trap.from_peer {
            Caller::Peer(warden_abi::handoff::PeerId::MODEM)
        } else {
            Caller::Host
        };
        let mut frame = TrapFrame::default();
        frame.x[0] = trap.fid.value();
        frame.x[1..8].copy_from_slice(&trap.args);
        for (i, x) in frame.x.iter_mut().enumerate().skip(8) {
            *x = trap.args[i % 7].rotate_left(i as u32);
        }
        frame.elr = trap.elr;
        frame.spsr = trap.spsr;
        frame.far = trap.far;
        match trap.kind {
            Kind::Hvc { imm } => frame.esr = esr(ExceptionClass::Hvc64, u32::from(imm)),
            Kind::Smc { imm } => frame.esr = esr(ExceptionClass::Smc64, u32::from(imm)),
            Kind::ControlPage { offset, iss } => {
                let ipa = CONTROL_PAGE + u64::from(offset & 0xfff);
                frame.esr = esr(ExceptionClass::DabtLow, iss);
                frame.hpfar = (ipa >> 12) << 4;
                frame.far = (trap.far & !0xfff) | (ipa & 0xfff);
            }
            Kind::Vsmmu { offset, iss } => {
                let ipa = VSMMU.start + u64::from(offset) % VSMMU.size();
                frame.esr = esr(ExceptionClass::DabtLow, iss);
                frame.hpfar = (ipa >> 12) << 4;
                frame.far = (trap.far & !0xfff) | (ipa & 0xfff);
            }
            Kind::Raw { esr, hpfar } => {
                frame.esr = esr;
                frame.hpfar = hpfar;
            }
        }
        handler.handle_lower_sync(&mut frame, p);
    }
});
