//! The documented order of checks (`docs/abi.md`, "Checks run in this order") over every warden
//! call × every caller and conduit × every kind of malformation, and `CALL_COUNT` against the
//! calls warden actually answers. The expected answers come from the documentation's order,
//! written out here independently of the code under test:
//!
//! 1. the other convention's twin, or a call this machine does not offer: `NOT_SUPPORTED`;
//! 2. a caller the call is not for: `DENIED`;
//! 3. malformed arguments: `INVALID_PARAMETERS`;
//!
//! and only a call past all three reaches the platform (the handoff service, the peer).

use alloc::sync::Arc;
use alloc::vec::Vec;

use warden_abi::handoff::{
    self as h, Caller, FLAG_BY_INDEX, FLAG_CLEAR, PA_LIMIT, PeerId, Request, Return, Target,
    Transfer,
};
use warden_abi::peer::{self as peer_abi, Op, PeerCommand};
use warden_abi::{AbiError, control, hyp, smccc, stats};

use super::fake::{FakeEl3, FakePlatform};
use super::inject::spsr;
use super::psci::Psci;
use super::{TrapFrame, TrapHandler};

const HVC: u64 = 0x5a00_0000;
const SMC: u64 = 0x5e00_0000;
const CONTROL: u64 = 0x090c_0000;
const BASE: u64 = 0x7c00_0000;

/// How a call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conduit {
    HostHvc,
    HostSmc,
    HostControlPage,
    PeerHvc,
}

impl Conduit {
    const ALL: [Conduit; 4] =
        [Conduit::HostHvc, Conduit::HostSmc, Conduit::HostControlPage, Conduit::PeerHvc];

    fn caller(self) -> Caller {
        match self {
            Conduit::PeerHvc => Caller::Peer(PeerId::MODEM),
            _ => Caller::Host,
        }
    }
}

fn trap_frame(esr: u64) -> TrapFrame {
    TrapFrame {
        esr,
        elr: 0xffff_8000_1000_0000,
        spsr: spsr::M_EL1H,
        far: 0,
        hpfar: 0,
        ..TrapFrame::default()
    }
}

/// A 64-bit load or store of `x1` at `offset` into the control page.
fn control_access(offset: u64, write: bool) -> TrapFrame {
    let ipa = CONTROL + offset;
    let wnr = if write { 1 << 6 } else { 0 };
    // DABT_LOW, IL, ISV, SAS = 8 bytes, SRT = x1, SF, translation fault L3.
    let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (3 << 22) | (1 << 16) | (1 << 15) | wnr | 7;
    let mut f = trap_frame(esr);
    f.far = 0xffff_0000_1000_0000 + (ipa & 0xfff);
    f.hpfar = (ipa >> 12) << 4;
    f
}

fn control_write(h: &TrapHandler, p: &mut FakePlatform, offset: u64, value: u64) {
    let mut f = control_access(offset, true);
    f.x[1] = value;
    h.handle_lower_sync(&mut f, p);
}

fn control_read(h: &TrapHandler, p: &mut FakePlatform, offset: u64) -> u64 {
    let mut f = control_access(offset, false);
    h.handle_lower_sync(&mut f, p);
    f.x[1]
}

/// Makes the call `regs` through `conduit`; returns `x0..x7` as the caller sees them.
fn make_call(h: &TrapHandler, p: &mut FakePlatform, conduit: Conduit, regs: [u64; 8]) -> [u64; 8] {
    p.caller = conduit.caller();
    let mut out = [0u64; 8];
    match conduit {
        Conduit::HostControlPage => {
            for (n, &arg) in regs.iter().enumerate().skip(1) {
                control_write(h, p, control::arg(n), arg);
            }
            control_write(h, p, control::REG_CALL, regs[0]);
            for (n, slot) in out.iter_mut().enumerate() {
                *slot = control_read(h, p, control::ret(n));
            }
        }
        _ => {
            let esr = if conduit == Conduit::HostSmc { SMC } else { HVC };
            let mut f = trap_frame(esr);
            f.x[..8].copy_from_slice(&regs);
            h.handle_lower_sync(&mut f, p);
            out.copy_from_slice(&f.x[..8]);
        }
    }
    out
}

fn setup() -> (TrapHandler, FakePlatform) {
    let el3 = Arc::new(FakeEl3::qemu());
    let handler = TrapHandler::new(Psci::new(&[0, 1], 0).unwrap());
    let mut p = FakePlatform::new(0, el3);
    p.board.control_page = Some(CONTROL);
    p.handoff_reply = Ok([0, 0x1111, 0, 0, 0, 0, 0, 0]);
    p.peer_reply = Ok(0x2222);
    (handler, p)
}

/// A well-formed call, the callers it is for, and the ways to break its arguments.
struct CallCase {
    name: &'static str,
    regs: [u64; 8],
    /// (host may call, peer may call)
    callers: (bool, bool),
    /// Whether the call exists only on some machines (and which).
    needs: Needs,
    malformed: Vec<(&'static str, [u64; 8])>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Nothing,
    SimPeer,
    VirtualSmmu,
}

fn tweak(regs: [u64; 8], reg: usize, value: u64) -> [u64; 8] {
    let mut r = regs;
    r[reg] = value;
    r
}

fn transfer_case(name: &'static str, fid: u32) -> CallCase {
    let t = Transfer {
        target: Target::Range { base: BASE, size: 0x2000 },
        peer: PeerId::MODEM,
        clear: true,
    };
    let regs = if fid == h::DONATE { Request::Donate(t) } else { Request::Lend(t) }.encode();
    CallCase {
        name,
        regs,
        callers: (true, false),
        needs: Needs::Nothing,
        malformed: alloc::vec![
            ("zero size", tweak(regs, 2, 0)),
            ("unaligned base", tweak(regs, 1, BASE + 0x800)),
            ("unaligned size", tweak(regs, 2, 0x1800)),
            ("wraps", tweak(tweak(regs, 1, !0xfff), 2, 0x2000)),
            ("beyond 2^52", tweak(regs, 1, PA_LIMIT - 0x1000)),
            ("peer 0", tweak(regs, 3, 0)),
            ("peer 64", tweak(regs, 3, 64)),
            ("flag bit 2", tweak(regs, 4, 4)),
            ("BY_INDEX with a size", tweak(tweak(regs, 1, 0), 4, FLAG_BY_INDEX)),
            ("index above 32 bits", tweak(tweak(tweak(regs, 1, 1 << 32), 2, 0), 4, FLAG_BY_INDEX)),
            ("x5", tweak(regs, 5, 1)),
            ("x7", tweak(regs, 7, 1 << 63)),
        ],
    }
}

fn return_case(name: &'static str, fid: u32, callers: (bool, bool)) -> CallCase {
    let back = Return { target: Target::Range { base: BASE, size: 0x1000 }, clear: false };
    let regs =
        if fid == h::RECLAIM { Request::Reclaim(back) } else { Request::Release(back) }.encode();
    CallCase {
        name,
        regs,
        callers,
        needs: Needs::Nothing,
        malformed: alloc::vec![
            ("zero size", tweak(regs, 2, 0)),
            ("unaligned base", tweak(regs, 1, BASE + 8)),
            ("wraps", tweak(tweak(regs, 1, !0xfff), 2, 0x2000)),
            ("flag bit 5", tweak(regs, 3, 32)),
            ("BY_INDEX with a size", tweak(regs, 3, FLAG_BY_INDEX | FLAG_CLEAR)),
            ("x4", tweak(regs, 4, 1)),
            ("x6", tweak(regs, 6, 1)),
        ],
    }
}

/// Every warden call but `ABI_VERSION` (which takes and checks nothing; its twin is below).
fn every_call() -> Vec<CallCase> {
    let count = Request::CarveoutCount.encode();
    let info = Request::CarveoutInfo { index: 0 }.encode();
    let query = Request::RangeQuery { addr: BASE }.encode();
    let vcount = Request::ViolationCount.encode();
    let vinfo = Request::ViolationInfo { seq: 3 }.encode();
    let command =
        PeerCommand { peer: PeerId::MODEM, op: Op::Checksum { base: BASE, size: 0x1000 } }.encode();
    let touch = PeerCommand { peer: PeerId::DSP, op: Op::Touch { addr: BASE } }.encode();
    let done = [u64::from(peer_abi::PEER_DONE), 0, 0, 0, 0, 0, 0, 0];
    let trap_stats = stats::TrapStats::request();
    let smmu_stats = stats::SmmuStats::request();
    let both = (true, true);
    let case = |name, regs, callers, malformed| CallCase {
        name,
        regs,
        callers,
        needs: Needs::Nothing,
        malformed,
    };
    alloc::vec![
        case(
            "CARVEOUT_COUNT",
            count,
            both,
            alloc::vec![("w1", tweak(count, 1, 1)), ("w7", tweak(count, 7, 0x8000_0000))],
        ),
        case(
            "CARVEOUT_INFO",
            info,
            both,
            alloc::vec![
                ("index above 32 bits", tweak(info, 1, 1 << 32)),
                ("x2", tweak(info, 2, 1))
            ],
        ),
        case(
            "RANGE_QUERY",
            query,
            both,
            alloc::vec![("beyond 2^52", tweak(query, 1, PA_LIMIT)), ("x3", tweak(query, 3, 1))],
        ),
        transfer_case("DONATE", h::DONATE),
        transfer_case("LEND", h::LEND),
        return_case("RECLAIM", h::RECLAIM, (true, false)),
        return_case("RELEASE", h::RELEASE, (false, true)),
        case("VIOLATION_COUNT", vcount, both, alloc::vec![("x1", tweak(vcount, 1, 1))]),
        case("VIOLATION_INFO", vinfo, both, alloc::vec![("x2", tweak(vinfo, 2, 1))]),
        CallCase {
            name: "PEER_COMMAND",
            regs: command,
            callers: (true, false),
            needs: Needs::SimPeer,
            malformed: alloc::vec![
                ("peer 0", tweak(command, 1, 0)),
                ("peer 64", tweak(command, 1, 64)),
                ("op 9", tweak(command, 2, 9)),
                ("unaligned range", tweak(command, 3, BASE + 8)),
                ("zero size", tweak(command, 4, 0)),
                ("CHECKSUM a3", tweak(command, 5, 1)),
                ("x6", tweak(command, 6, 1)),
                ("x7", tweak(command, 7, 1)),
                ("Touch unaligned", tweak(touch, 3, BASE + 4)),
                ("Touch beyond 2^52", tweak(touch, 3, PA_LIMIT)),
            ],
        },
        CallCase {
            name: "PEER_DONE",
            regs: done,
            callers: (false, true),
            needs: Needs::Nothing,
            malformed: alloc::vec![("x1", tweak(done, 1, 1)), ("x7", tweak(done, 7, 1))],
        },
        case(
            "TRAP_STATS",
            trap_stats,
            both,
            alloc::vec![("x1", tweak(trap_stats, 1, 1)), ("x7", tweak(trap_stats, 7, 1))],
        ),
        CallCase {
            name: "SMMU_STATS",
            regs: smmu_stats,
            callers: both,
            needs: Needs::VirtualSmmu,
            malformed: alloc::vec![
                ("x1", tweak(smmu_stats, 1, 1)),
                ("x7", tweak(smmu_stats, 7, 1))
            ],
        },
    ]
}

/// What the documentation says the answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Error(AbiError),
    /// Passed the first three checks: the platform (service, peer) got it.
    Reached,
}

fn expected(
    case: &CallCase,
    conduit: Conduit,
    twin: bool,
    malformed: bool,
    offered: bool,
) -> Expected {
    if twin || !offered {
        return Expected::Error(AbiError::NotSupported);
    }
    let allowed = match conduit.caller() {
        Caller::Host => case.callers.0,
        Caller::Peer(_) => case.callers.1,
    };
    if !allowed {
        return Expected::Error(AbiError::Denied);
    }
    if malformed {
        return Expected::Error(AbiError::InvalidParameters);
    }
    Expected::Reached
}

/// What reached the platform so far.
fn reached(p: &FakePlatform) -> (usize, usize, usize) {
    (p.handoff_requests.len(), p.peer_commands.len(), p.peer_done)
}

#[test]
fn every_call_caller_and_malformation_answers_in_the_documented_order() {
    let mut checked = 0;
    for case in every_call() {
        for offered in [true, false] {
            if !offered && case.needs == Needs::Nothing {
                continue;
            }
            let mut variants: Vec<(&str, [u64; 8], bool, bool)> =
                alloc::vec![("well formed", case.regs, false, false)];
            let twin = tweak(case.regs, 0, case.regs[0] ^ u64::from(smccc::CONV_64));
            variants.push(("other convention", twin, true, false));
            variants.extend(case.malformed.iter().map(|(what, regs)| (*what, *regs, false, true)));
            for conduit in Conduit::ALL {
                for &(what, regs, twin, malformed) in &variants {
                    let (h, mut p) = setup();
                    p.peer_available = offered || case.needs != Needs::SimPeer;
                    if offered || case.needs != Needs::VirtualSmmu {
                        p.smmu_stats = Some(stats::SmmuStats::default());
                    }
                    let want = expected(&case, conduit, twin, malformed, offered);
                    let before = reached(&p);
                    let out = make_call(&h, &mut p, conduit, regs);
                    let label = alloc::format!(
                        "{} {what} from {conduit:?}{}",
                        case.name,
                        if offered { "" } else { " (not offered here)" }
                    );
                    match want {
                        Expected::Error(e) => {
                            assert_eq!(out[0] as i64, e.code(), "{label}: {out:#x?}");
                            assert_eq!(out[1..], [0; 7], "{label}: error with results");
                            assert_eq!(reached(&p), before, "{label}: passed on");
                        }
                        Expected::Reached => {
                            let first_three = [
                                AbiError::NotSupported.code(),
                                AbiError::Denied.code(),
                                AbiError::InvalidParameters.code(),
                            ];
                            assert!(!first_three.contains(&(out[0] as i64)), "{label}: {out:#x?}");
                            let passed_on = reached(&p) != before;
                            let answered_here = matches!(
                                case.name,
                                "TRAP_STATS" | "SMMU_STATS" | "VIOLATION_COUNT" | "VIOLATION_INFO"
                            );
                            assert!(passed_on || answered_here, "{label}: not passed on");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 400, "only {checked} combinations");
}

/// `ABI_VERSION` takes no arguments; its twin is not a call (x0 only, like any unknown ID).
#[test]
fn abi_version_and_its_twin() {
    for conduit in Conduit::ALL {
        let (h, mut p) = setup();
        let regs = [u64::from(hyp::ABI_VERSION), 7, 7, 7, 0, 0, 0, 0];
        assert_eq!(make_call(&h, &mut p, conduit, regs)[0], hyp::packed_version(), "{conduit:?}");
        let twin = tweak(regs, 0, u64::from(hyp::ABI_VERSION | smccc::CONV_64));
        let out = make_call(&h, &mut p, conduit, twin);
        assert_eq!(out[..4], [u64::MAX, 7, 7, 7], "{conduit:?}");
    }
}

/// `CALL_COUNT` is the number of warden calls that answer anything but `NOT_SUPPORTED` (to
/// the host or to a peer), over the whole vendor-hypervisor range of both conventions, the
/// service-range queries aside.
#[test]
fn call_count_counts_every_call_warden_answers() {
    let queries = [hyp::CALL_COUNT, hyp::CALL_UID, hyp::REVISION];
    let mut answered = Vec::new();
    for number in (0..=0x1ffu32).chain(0xff00..=0xffff) {
        for conv64 in [false, true] {
            let fid = smccc::fast_call(conv64, smccc::OWNER_VENDOR_HYP, number);
            if queries.contains(&fid) {
                continue;
            }
            let supported = [Conduit::HostHvc, Conduit::PeerHvc].iter().any(|&conduit| {
                let (h, mut p) = setup();
                p.smmu_stats = Some(stats::SmmuStats::default());
                let out = make_call(&h, &mut p, conduit, [u64::from(fid), 0, 0, 0, 0, 0, 0, 0]);
                out[0] as i64 != smccc::NOT_SUPPORTED
            });
            if supported {
                answered.push(fid);
            }
        }
    }
    let (h, mut p) = setup();
    let count =
        make_call(&h, &mut p, Conduit::HostHvc, [u64::from(hyp::CALL_COUNT), 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(count[0], answered.len() as u64, "answered: {answered:#x?}");
}

/// The control page makes every warden call exactly as `HVC #0` does, and refuses every other
/// function ID (`docs/abi.md`, *Control page*): `NOT_SUPPORTED` with the arguments left in
/// `RET1..RET7`, nothing forwarded to EL3, where the same ID by `HVC` would be.
#[test]
fn control_page_is_hvc_for_warden_calls_and_refuses_the_rest() {
    let args = [0, BASE, 0x1000, 1, 0, 0, 0, 0];
    for call in warden_abi::calls::WardenCall::ALL {
        let mut regs = args;
        regs[0] = u64::from(call.function_id());
        let (h, mut p) = setup();
        let by_hvc = make_call(&h, &mut p, Conduit::HostHvc, regs);
        let (h, mut q) = setup();
        let by_page = make_call(&h, &mut q, Conduit::HostControlPage, regs);
        assert_eq!(by_page, by_hvc, "{call:?}");
        assert_eq!(q.handoff_requests, p.handoff_requests, "{call:?}");
        assert_eq!(q.peer_commands, p.peer_commands, "{call:?}");
    }
    let others = [
        u64::from(warden_abi::psci::PSCI_VERSION),
        u64::from(warden_abi::psci::CPU_ON_64),
        u64::from(warden_abi::psci::SYSTEM_OFF),
        u64::from(smccc::SMCCC_VERSION),
        u64::from(smccc::SMCCC_ARCH_FEATURES),
        0x8500_0000,
        0xC700_0001,
    ];
    for fid in others {
        let regs = [fid, 1, 2, 3, 4, 5, 6, 7];
        let (h, mut p) = setup();
        let out = make_call(&h, &mut p, Conduit::HostControlPage, regs);
        assert_eq!(out, [u64::MAX, 1, 2, 3, 4, 5, 6, 7], "{fid:#x}");
        assert!(p.el3.calls().is_empty() && p.power_down_notices.is_empty(), "{fid:#x}");
    }
    // The same PSCI call by HVC is mediated and reaches EL3.
    let (h, mut p) = setup();
    let regs = [u64::from(warden_abi::psci::PSCI_VERSION), 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(make_call(&h, &mut p, Conduit::HostHvc, regs)[0], 0x1_0001);
    assert_eq!(p.el3.calls().len(), 1);
}
