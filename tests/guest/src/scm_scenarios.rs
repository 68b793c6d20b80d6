//! Qualcomm SCM `assign_mem` scenarios on the Snapdragon persona (`docs/qcom-scm.md`): the
//! guest calls it by `SMC #0` exactly as Linux's `qcom_scm_assign_mem` does (SMC64 SiP
//! `0x4200_0C16`, `arginfo` 0x1117, the memory, source and destination lists in one page of its
//! own RAM, arguments 4..7 in a buffer `x5` points at), and checks warden's answers against
//! the tracker (`RANGE_QUERY`), the peer and the host's own accesses.

use warden_abi::handoff::{Owner, PeerId, RangeState};

use crate::console::println;
use crate::edu::DmaPage;
use crate::handoff::{
    self, Span, check, expect_all_host, expect_run, host_checksum, peer_checksum, write_pattern,
};
use crate::report::{Outcome, Reason, fail};
use crate::scenarios::Access;
use crate::smccc::{self, Conduit};

/// SiP, yielding, SMC64: service MP (0x0C), command ASSIGN (0x16).
const ASSIGN_MEM: u64 = 0x4200_0c16;
/// Linux's `QCOM_SCM_ARGS(7, RO, VAL, RO, VAL, RO, VAL, VAL)`.
const ARGINFO: u64 = 0x1117;
const VMID_HLOS: u32 = 0x3;
const VMID_MSS_MSA: u32 = 0xf;
const VMID_ADSP_Q6: u32 = 0x6;
const VMID_CDSP: u32 = 0x1e;
const PERM_RW: u32 = 0x6;
const PERM_RWX: u32 = 0x7;

/// SCM status codes (Linux `qcom_scm.h`).
const SCM_ERROR: i64 = -1;
const SCM_EINVAL_ADDR: i64 = -3;
const SCM_EINVAL_ARG: i64 = -2;
const SCM_EOPNOTSUPP: i64 = -4;

/// The page the lists are built in (guest RAM: host memory warden may read).
static LISTS: DmaPage = DmaPage::new();
/// Word offsets in [`LISTS`], as Linux lays them out (64-byte aligned pieces).
const SRC_WORD: usize = 0;
const MEM_WORD: usize = 8;
const DEST_WORD: usize = 16;
/// The SMC argument buffer (arguments 4..7), in the same page.
const EXT_WORD: usize = 64;

/// One assign_mem request as the guest builds it.
#[derive(Clone, Copy)]
struct Assign<'a> {
    range: Span,
    src: &'a [u32],
    dest: &'a [(u32, u32)],
    arginfo: u64,
    /// The memory-list size (x3): 16 for Linux's one entry.
    mem_size: u64,
    /// Overrides of the buffer addresses (x2 memory list, x4 source list, x5 arguments, the
    /// destination list in argument 5).
    mem_at: Option<u64>,
    src_at: Option<u64>,
    ext_at: Option<u64>,
    dest_at: Option<u64>,
}

impl<'a> Assign<'a> {
    fn new(range: Span, src: &'a [u32], dest: &'a [(u32, u32)]) -> Self {
        Assign {
            range,
            src,
            dest,
            arginfo: ARGINFO,
            mem_size: 16,
            mem_at: None,
            src_at: None,
            ext_at: None,
            dest_at: None,
        }
    }

    /// Builds the lists and makes the call: x0 (the status) and x1.
    fn call(&self) -> (i64, u64) {
        let base = LISTS.address();
        for w in 0..DmaPage::WORDS {
            LISTS.write(w, 0);
        }
        for (i, pair) in self.src.chunks(2).enumerate() {
            let hi = pair.get(1).copied().unwrap_or(0);
            LISTS.write(SRC_WORD + i, u64::from(pair[0]) | u64::from(hi) << 32);
        }
        LISTS.write(MEM_WORD, self.range.base);
        LISTS.write(MEM_WORD + 1, self.range.size);
        for (i, (vm, perm)) in self.dest.iter().enumerate() {
            LISTS.write(DEST_WORD + 3 * i, u64::from(*vm) | u64::from(*perm) << 32);
        }
        let dest_at = self.dest_at.unwrap_or(base + 8 * DEST_WORD as u64);
        let ext = [4 * self.src.len() as u64, dest_at, 24 * self.dest.len() as u64, 0];
        for (i, w) in ext.into_iter().enumerate() {
            LISTS.write(EXT_WORD + i, w);
        }
        let regs = [
            ASSIGN_MEM,
            self.arginfo,
            self.mem_at.unwrap_or(base + 8 * MEM_WORD as u64),
            self.mem_size,
            self.src_at.unwrap_or(base + 8 * SRC_WORD as u64),
            self.ext_at.unwrap_or(base + 8 * EXT_WORD as u64),
            0,
            0,
        ];
        let out = smccc::call_regs(Conduit::Smc, regs);
        (out[0] as i64, out[1])
    }

    /// The call must succeed with x1 = 0 (Linux returns x1 as its result).
    fn expect_ok(&self, what: &str) -> Outcome {
        match self.call() {
            (0, 0) => Ok(()),
            (status, x1) => fail!("assign_mem {what} of {}: x0 {status}, x1 {x1:#x}", self.range),
        }
    }
}

fn state_of(addr: u64) -> Result<RangeState, Reason> {
    Ok(check(handoff::range_query(addr), format_args!("RANGE_QUERY({addr:#x})"))?.state)
}

/// Scenario `scm_exclusive_assign`: HLOS → MSS_MSA of a modem carveout page is the carveout's
/// DONATE (RANGE_QUERY: Donated(modem)); the peer's checksum equals the host's; the host's
/// next read and write are contained SEAs recorded with the modem as owner; MSS_MSA → HLOS
/// gives it back scrubbed (a donate carveout's data was the peer's).
pub fn exclusive_assign() -> Outcome {
    const SEED: u64 = 0x5c3;
    expect_all_host()?;
    let c = handoff::modem();
    let page = c.span(0x40_0000, 0x2000);
    write_pattern(page, SEED)?;
    let ours = host_checksum(page)?;
    Assign::new(page, &[VMID_HLOS], &[(VMID_MSS_MSA, PERM_RWX)]).expect_ok("HLOS -> MSS")?;
    expect_run(page.base, page.run(RangeState::Donated(c.peer), &c))?;
    let theirs = peer_checksum(c.peer, page)?;
    if theirs != ours {
        fail!("peer checksum {theirs:#x} after assign_mem, the host's {ours:#x}");
    }
    crate::handoff_scenarios::host_access_refused(
        page.base + 0x8,
        Access::Read,
        Owner::Peer(c.peer),
    )?;
    crate::handoff_scenarios::host_access_refused(
        page.base + 0x1010,
        Access::Write,
        Owner::Peer(c.peer),
    )?;
    Assign::new(page, &[VMID_MSS_MSA], &[(VMID_HLOS, PERM_RWX)]).expect_ok("MSS -> HLOS")?;
    expect_run(page.base, c.whole().run(RangeState::Host, &c))?;
    handoff::expect_words(page, "zeros (scrubbed on assign back)", |_| 0)?;
    expect_all_host()
}

/// Scenario `scm_assign_reaches_tz`, in the chain (tz-sim → warden → the guest; issue 14):
/// assign_mem HLOS → MSS_MSA of a modem carveout page, which warden forwards to the TZ below
/// once the host can no longer reach the page, then MSS_MSA → HLOS. Two outcomes are
/// consistent; the guest notes which it saw and the judge of each run wants its own:
/// - TZ accepted (`guest-chain`): x0 = 0, x1 = 0; RANGE_QUERY Donated(modem); the host's read
///   is a contained SEA recorded with the modem as owner; back: Host, scrubbed;
/// - TZ refused with QCOM_SCM_ERROR (`chain-xpu-violation`, warden built to skip the unmap, so
///   tz-sim's XPU witness still finds the page in the host's stage 2): RANGE_QUERY Host, the
///   page still holds the host's data and takes its writes.
///
/// Any other answer, or a state that does not match the answer, fails.
pub fn assign_reaches_tz() -> Outcome {
    const SEED: u64 = 0x7a55;
    expect_all_host()?;
    let c = handoff::modem();
    let page = c.span(0x40_0000, 0x2000);
    write_pattern(page, SEED)?;
    match Assign::new(page, &[VMID_HLOS], &[(VMID_MSS_MSA, PERM_RWX)]).call() {
        (0, 0) => {
            println!("guest: note scm_assign_reaches_tz: TZ accepted HLOS -> MSS_MSA of {page}");
            expect_run(page.base, page.run(RangeState::Donated(c.peer), &c))?;
            crate::handoff_scenarios::host_access_refused(
                page.base + 0x8,
                Access::Read,
                Owner::Peer(c.peer),
            )?;
            Assign::new(page, &[VMID_MSS_MSA], &[(VMID_HLOS, PERM_RWX)])
                .expect_ok("MSS -> HLOS")?;
            expect_run(page.base, c.whole().run(RangeState::Host, &c))?;
            handoff::expect_words(page, "zeros (scrubbed on assign back)", |_| 0)?;
        }
        (SCM_ERROR, _) => {
            println!(
                "guest: note scm_assign_reaches_tz: TZ refused HLOS -> MSS_MSA of {page} (x0 -1)"
            );
            expect_run(page.base, c.whole().run(RangeState::Host, &c))?;
            handoff::expect_words(page, "the pattern (kept)", |a| handoff::pattern_at(SEED, a))?;
            write_pattern(page, SEED + 1)?;
            handoff::expect_words(page, "the new pattern", |a| handoff::pattern_at(SEED + 1, a))?;
        }
        (status, x1) => fail!("assign_mem HLOS -> MSS of {page}: x0 {status}, x1 {x1:#x}"),
    }
    expect_all_host()
}

/// Scenario `scm_share_then_unshare`: HLOS → HLOS + MSS_MSA (rmtfs_mem's probe) records
/// Shared(modem): the host keeps reading and writing, the peer's checksum equals the host's;
/// HLOS + MSS_MSA → HLOS (its remove) gives Host again with the data kept.
pub fn share_then_unshare() -> Outcome {
    const SEED: u64 = 0x5a4e;
    expect_all_host()?;
    let c = handoff::modem();
    let span = c.span(0x50_0000, 0x4000);
    let both = [(VMID_HLOS, PERM_RW), (VMID_MSS_MSA, PERM_RW)];
    Assign::new(span, &[VMID_HLOS], &both).expect_ok("HLOS -> HLOS+MSS")?;
    if state_of(span.base)? != RangeState::Shared(c.peer) {
        fail!("RANGE_QUERY after the share: {:?}", state_of(span.base)?);
    }
    write_pattern(span, SEED)?;
    let ours = host_checksum(span)?;
    let theirs = peer_checksum(c.peer, span)?;
    if theirs != ours {
        fail!("peer checksum {theirs:#x} of the shared range, the host's {ours:#x}");
    }
    Assign::new(span, &[VMID_HLOS, VMID_MSS_MSA], &[(VMID_HLOS, PERM_RW)])
        .expect_ok("HLOS+MSS -> HLOS")?;
    expect_run(span.base, c.whole().run(RangeState::Host, &c))?;
    handoff::expect_words(span, "the pattern (kept)", |a| handoff::pattern_at(SEED, a))?;
    expect_all_host()
}

/// Scenario `scm_bad_inputs_change_nothing`: the bad-input catalogue of docs/qcom-scm.md, each
/// answered with its documented SCM code, both carveouts wholly Host before and after.
pub fn bad_inputs_change_nothing(warden: Option<(u64, u64)>) -> Outcome {
    expect_all_host()?;
    let (modem, dsp) = (handoff::modem(), handoff::dsp());
    let page = modem.span(0x60_0000, 0x1000);
    let to_mss = [(VMID_MSS_MSA, PERM_RW)];
    let hlos = [VMID_HLOS];
    let ok = Assign::new(page, &hlos, &to_mss);
    let guest_ram = Span { base: LISTS.address(), size: 0x1000 };
    let mut cases: [(&str, Assign<'_>, i64); 15] = [
        ("arginfo", Assign { arginfo: 7, ..ok }, SCM_EINVAL_ARG),
        ("argument buffer in a carveout", Assign { ext_at: Some(dsp.base), ..ok }, SCM_EINVAL_ADDR),
        ("memory list in a carveout", Assign { mem_at: Some(modem.base), ..ok }, SCM_EINVAL_ADDR),
        ("source list in a carveout", Assign { src_at: Some(dsp.base), ..ok }, SCM_EINVAL_ADDR),
        (
            "destination list in a carveout",
            Assign { dest_at: Some(dsp.base), ..ok },
            SCM_EINVAL_ADDR,
        ),
        ("two memory entries", Assign { mem_size: 32, ..ok }, SCM_EINVAL_ARG),
        ("range outside every carveout", Assign { range: guest_ram, ..ok }, SCM_EINVAL_ADDR),
        (
            "range spanning two carveouts",
            Assign { range: Span { base: modem.end() - 0x1000, size: 0x2000 }, ..ok },
            SCM_EINVAL_ADDR,
        ),
        (
            "range unaligned",
            Assign { range: Span { base: page.base + 8, size: 0x1000 }, ..ok },
            SCM_EINVAL_ARG,
        ),
        ("unknown VM", Assign { dest: &[(VMID_CDSP, PERM_RW)], ..ok }, SCM_EINVAL_ARG),
        (
            "two peer VMs",
            Assign { dest: &[(VMID_MSS_MSA, PERM_RW), (VMID_ADSP_Q6, PERM_RW)], ..ok },
            SCM_EINVAL_ARG,
        ),
        (
            "another peer's carveout",
            Assign { dest: &[(VMID_ADSP_Q6, PERM_RW)], ..ok },
            SCM_EINVAL_ARG,
        ),
        (
            "source not the holder",
            Assign { src: &[VMID_MSS_MSA], dest: &[(VMID_HLOS, PERM_RW)], ..ok },
            SCM_EINVAL_ARG,
        ),
        ("permission 0", Assign { dest: &[(VMID_MSS_MSA, 0)], ..ok }, SCM_EINVAL_ARG),
        ("warden's memory (or a carveout page again)", ok, SCM_EINVAL_ADDR),
    ];
    // warden's own memory, where the DT says it is.
    let last = cases.len() - 1;
    match warden {
        Some((base, _)) => cases[last].1.range = Span { base, size: 0x1000 },
        None => fail!("no /reserved-memory/warden* region in the DT"),
    }
    for (what, request, code) in cases {
        let (status, _) = request.call();
        if status != code {
            fail!("assign_mem with {what}: x0 {status}, expected {code}");
        }
        expect_all_host().map_err(|e| Reason::new(format_args!("after {what}: {e}")))?;
    }
    // A change of holders warden does not mediate: shared → the modem alone.
    let both = [(VMID_HLOS, PERM_RW), (VMID_MSS_MSA, PERM_RW)];
    Assign::new(page, &hlos, &both).expect_ok("HLOS -> HLOS+MSS")?;
    let (status, _) = Assign::new(page, &[VMID_HLOS, VMID_MSS_MSA], &to_mss).call();
    if status != SCM_EOPNOTSUPP {
        fail!("assign_mem HLOS+MSS -> MSS: x0 {status}, expected {SCM_EOPNOTSUPP}");
    }
    if state_of(page.base)? != RangeState::Shared(modem.peer) {
        fail!("the refused assign changed the shared range: {:?}", state_of(page.base)?);
    }
    Assign::new(page, &[VMID_HLOS, VMID_MSS_MSA], &[(VMID_HLOS, PERM_RW)])
        .expect_ok("HLOS+MSS -> HLOS")?;
    expect_all_host()
}

/// One assign_mem call of `range` from the `src` VMs to the `dest` (VM, permission) entries:
/// x0 (the status) and x1 (for the bench).
pub fn assign_mem(range: Span, src: &[u32], dest: &[(u32, u32)]) -> (i64, u64) {
    Assign::new(range, src, dest).call()
}

/// VM IDs and permissions the bench uses.
pub const HLOS: u32 = VMID_HLOS;
pub const MSS_MSA: u32 = VMID_MSS_MSA;
pub const RW: u32 = PERM_RW;

/// Gives a range left shared with `peer` back to the host alone (for
/// `handoff::restore_all_host`).
pub fn unshare(span: Span, peer: PeerId) -> Result<(), Reason> {
    let vm = if peer == PeerId::MODEM { VMID_MSS_MSA } else { VMID_ADSP_Q6 };
    Assign::new(span, &[VMID_HLOS, vm], &[(VMID_HLOS, PERM_RW)]).expect_ok("restore")
}
