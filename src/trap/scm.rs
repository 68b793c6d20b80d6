//! The Qualcomm SCM dispatcher: the one place where the host's SiP-service SMCCC calls (owner
//! 2, trapped by HCR_EL2.TSC, or HVC) are decoded and answered, on the Snapdragon persona.
//!
//! Qualcomm's "ARM SMC" convention (Linux `drivers/firmware/qcom/qcom_scm-smc.c`): the function
//! ID is an SMCCC SiP ID whose number is `svc << 8 | cmd`, fast (atomic calls) or yielding
//! (the others), SMC32 or SMC64; x1 is `arginfo` (argument count in bits [3:0], argument types
//! above it), x2..x5 the first four arguments (x5 points at a buffer holding the rest when
//! there are more than four). The answer: x0 a status (0 success, negative errors, 1
//! INTERRUPTED, 2 WAITQ_SLEEP), x1..x3 results.
//!
//! What Linux's `qcom_scm` probe and `arm-smmu-qcom` need on the persona:
//! - **convention detection** (`__get_convention`): INFO / IS_CALL_AVAIL (svc 0x06, cmd 0x01) as
//!   a fast SMC64 call, asking about itself. Answered: success, 1 — so Linux settles on
//!   "smc arm 64" (and never tries the SMC32 or the legacy convention);
//! - **IS_CALL_AVAIL** for any call: answered truthfully, 1 exactly for the calls this
//!   dispatcher implements ([`ScmFunction::ALL`]), 0 for everything else;
//! - `arm-smmu-qcom` on `qcom,sc7280-smmu-500` only checks `qcom_scm_is_available()` (no SMC).
//!
//! - **assign_mem** (MP 0x0C / 0x16, [`assign_mem`]): the host's lists are copied once from host
//!   memory warden may touch, validated, turned into [`Holders`] and carried out by
//!   [`crate::handoff::assign`] on the one tracker and the one set of handoff sequences warden's
//!   own ABI uses. `docs/qcom-scm.md` lists every check and its code.
//!
//! - **PAS** (PIL 0x02, [`pas`]): each call checked against the tracker and the carveouts,
//!   then forwarded to a board's SCM firmware (QCOM_SCM_EOPNOTSUPP on QEMU).
//!
//! The other SiP calls Linux makes on warden's boards are forwarded to a board's SCM firmware
//! ([`crate::boards::Board::scm_firmware`]) after the checks [`policy`] lists for them (an
//! address TZ would dereference must be host memory warden may touch, held the host's until
//! TZ answers, or a register the host's own stage 2 maps); every call [`policy`] does not list
//! is refused. Both get QCOM_SCM_EOPNOTSUPP (-4, Linux's -EOPNOTSUPP) on QEMU, where no
//! firmware below implements SCM.

pub mod forward;
pub mod pas;
pub mod policy;

use core::sync::atomic::{AtomicU64, Ordering};

use warden_abi::smccc;

use super::smccc::{SmcccCall, SmcccReturn};
use crate::handoff::assign::{AssignError, AssignOutcome, Holders};
use crate::mm::MemRange;
use crate::mm::ownership::{PeerId, TransferKind};

pub use warden_abi::qcom_scm::{
    ASSIGN_ARGINFO, ArgType, DEST_ENTRY, INFO_IS_CALL_AVAIL, MAX_SOURCES, MEM_ENTRY, MP_ASSIGN,
    OWNER_SIP, arginfo, svc, vmid,
};
use warden_abi::qcom_scm::{le32, le64, split_call_avail_id, split_function_id, status};

/// The peer warden plays for a VM ID: the modem for the modem's MSA VM, the DSP for the audio
/// DSP's. Every other VM (the compute DSP, sensors, Wi-Fi, ...) has no peer on warden's boards.
pub fn peer_of_vmid(vm: u32) -> Option<PeerId> {
    match vm {
        vmid::MSS_MSA => Some(PeerId::MODEM),
        vmid::ADSP_Q6 => Some(PeerId::DSP),
        _ => None,
    }
}

/// The VM ID of a peer (for the log).
pub fn vmid_of_peer(peer: PeerId) -> Option<u32> {
    [vmid::MSS_MSA, vmid::ADSP_Q6].into_iter().find(|&v| peer_of_vmid(v) == Some(peer))
}

/// Destination entries warden reads (it mediates at most two holders; more is refused).
pub const MAX_DESTINATIONS: usize = 8;
pub use warden_abi::qcom_scm::perm::RWX as PERM_RWX;

/// SCM status codes in x0 (Linux `qcom_scm.h`; negative ones are sign-extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum ScmStatus {
    Success = status::SUCCESS,
    Error = status::ERROR,
    InvalidArgument = status::EINVAL_ARG,
    InvalidAddress = status::EINVAL_ADDR,
    NotSupported = status::EOPNOTSUPP,
    NoMemory = status::ENOMEM,
    Busy = status::V2_EBUSY,
    Interrupted = status::INTERRUPTED,
    WaitQueueSleep = status::WAITQ_SLEEP,
}

/// One decoded SCM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScmCall {
    pub svc: u8,
    pub cmd: u8,
    pub smc64: bool,
    pub fast: bool,
    /// x1: argument count in bits [3:0], then two bits of type per argument.
    pub arginfo: u32,
    /// x2..x5.
    pub args: [u64; 4],
    /// x0..x7 as the host gave them (for forwarding the call unchanged).
    pub regs: [u64; 8],
}

impl ScmCall {
    /// The call, if `call` is a SiP-service call in Qualcomm's ARM SMC convention (function
    /// number bits [15:0], bits [23:16] zero).
    pub fn decode(call: &SmcccCall) -> Option<Self> {
        let fid = call.function_id;
        let (svc, cmd) = split_function_id(fid)?;
        let smc64 = smccc::is_64(fid);
        let narrow = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
        let r = &call.regs;
        Some(ScmCall {
            svc,
            cmd,
            smc64,
            fast: fid & smccc::FAST_CALL != 0,
            arginfo: r[1] as u32,
            args: [narrow(r[2]), narrow(r[3]), narrow(r[4]), narrow(r[5])],
            regs: *r,
        })
    }

    /// Number of arguments arginfo announces.
    pub fn arg_count(&self) -> u32 {
        warden_abi::qcom_scm::arg_count(self.arginfo)
    }
}

/// The SCM calls warden implements (IS_CALL_AVAIL answers 1 for exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScmFunction {
    IsCallAvailable,
    AssignMem,
}

impl ScmFunction {
    pub const ALL: &'static [ScmFunction] = &[ScmFunction::IsCallAvailable, ScmFunction::AssignMem];

    pub const fn ids(self) -> (u8, u8) {
        match self {
            ScmFunction::IsCallAvailable => (svc::INFO, INFO_IS_CALL_AVAIL),
            ScmFunction::AssignMem => (svc::MP, MP_ASSIGN),
        }
    }

    pub fn from_ids(svc: u8, cmd: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.ids() == (svc, cmd))
    }
}

/// The answer to an SCM call: warden's own, or the firmware's passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScmResult {
    /// x0: an [`ScmStatus`] for warden's answers; whatever the firmware said for a forwarded
    /// call (`INTERRUPTED`, `WAITQ_SLEEP` included).
    pub status: i64,
    pub results: [u64; 3],
}

impl ScmResult {
    pub const fn ok(results: [u64; 3]) -> Self {
        ScmResult { status: ScmStatus::Success as i64, results }
    }

    pub const fn status(status: ScmStatus) -> Self {
        ScmResult { status: status as i64, results: [0; 3] }
    }

    /// The firmware's x0..x3, unchanged.
    pub const fn forwarded(x: [u64; 4]) -> Self {
        ScmResult { status: x[0] as i64, results: [x[1], x[2], x[3]] }
    }

    pub const fn is_success(&self) -> bool {
        self.status == 0
    }

    /// x0..x3 as the host reads them.
    pub fn to_return(self) -> SmcccReturn {
        let [a, b, c] = self.results;
        SmcccReturn::x0_to_x3([self.status as u64, a, b, c])
    }
}

/// What the SCM calls need of the machine.
pub trait ScmHost {
    /// Copies `buf.len()` bytes of host memory at `ipa`, refused unless every byte is host
    /// memory warden may touch (`crate::mm::host_memory`). The lines are cleaned and
    /// invalidated to the point of coherency first: Linux writes its SCM buffers through a
    /// non-cacheable mapping (`qcom_tzmem`, a non-coherent device's `dma_alloc_coherent`), so
    /// a line warden's cacheable mapping kept from an earlier copy would be stale.
    fn read_host(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused>;
    /// Carries out a validated assignment ([`crate::handoff::assign::assign`]); with
    /// `forward`, the SCM firmware below is told it at the sequence's step (warden's copy, in
    /// warden's buffer: [`forward::TzAssign`]) and its refusal rolls the sequence back.
    fn assign(
        &mut self,
        range: MemRange,
        from: Holders,
        to: Holders,
        forward: Option<&forward::ForwardedAssign>,
    ) -> Result<AssignOutcome, AssignError>;
    /// Who holds `range`, which must lie in one carveout of `peer`
    /// ([`crate::handoff::assign::holders`]).
    fn holders(&self, range: MemRange, peer: PeerId) -> Result<Holders, AssignError>;
    /// Whether the board's EL3 implements SCM ([`crate::boards::Board::scm_firmware`]).
    fn can_forward(&self) -> bool;
    /// Makes the host's call (x0..x7 unchanged) to EL3 and returns its x0..x3; `None` when the
    /// firmware has no SCM ([`Self::can_forward`] false).
    fn forward(&mut self, call: &ScmCall) -> Option<[u64; 4]>;
    /// [`Self::forward`], made only if every range of `held` is host memory warden may touch,
    /// and with the ownership tracker held until the firmware has answered, so no page of them
    /// can be donated or assigned while the firmware uses it. `Err(Refused)`: a range is not.
    fn forward_holding(
        &mut self,
        call: &ScmCall,
        held: &policy::heapless_ranges::Ranges,
    ) -> Result<Option<[u64; 4]>, Refused>;
    /// Whether the host's own stage 2 maps the 4-byte device register at `pa` for the host to
    /// read (and, with `write`, write) it.
    fn host_maps_register(&self, pa: u64, write: bool) -> bool;
    /// Whether firmware may lock `range` away from everyone else (a PAS peripheral warden plays
    /// no peer for): it lies inside one `no-map` reserved region that is no carveout, so it is
    /// neither warden's, nor a peer's, nor host memory warden touches.
    fn firmware_may_take(&self, range: MemRange) -> bool;
    /// The PAS region `mem_setup` recorded for `peer`.
    fn pas_region(&self, peer: PeerId) -> Option<MemRange>;
    fn set_pas_region(&mut self, peer: PeerId, region: Option<MemRange>);
}

/// Host memory that may not be read as the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Answers one SCM call (see the module documentation).
pub fn dispatch<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> ScmResult {
    match ScmFunction::from_ids(call.svc, call.cmd) {
        Some(ScmFunction::IsCallAvailable) => is_call_available(call, host),
        Some(ScmFunction::AssignMem) => assign_mem(call, host),
        None if is_never_forwarded(call.svc, call.cmd) => {
            log::warn!(
                "SCM: svc {:#04x} cmd {:#04x} (TZ's AArch64 state switch) refused: TZ would rewrite \
                 HCR_EL2 and return to EL1 past warden",
                call.svc,
                call.cmd
            );
            ScmResult::status(ScmStatus::NotSupported)
        }
        None if call.svc == svc::PIL => pas::dispatch(call, host),
        None => match policy::forwarding(call.svc, call.cmd) {
            Some(how) => forward_checked(call, how, host),
            None => {
                log::warn!(
                    "SCM: svc {:#04x} cmd {:#04x} (x2..x5 {:#x} {:#x} {:#x} {:#x}) refused: not a \
                     call warden knows the arguments of, so not one it lets the firmware make for \
                     the host",
                    call.svc,
                    call.cmd,
                    call.args[0],
                    call.args[1],
                    call.args[2],
                    call.args[3]
                );
                ScmResult::status(ScmStatus::NotSupported)
            }
        },
    }
}

/// A call [`policy::FORWARDED`] lists: its addresses checked, then forwarded unchanged.
fn forward_checked<S: ScmHost + ?Sized>(
    call: &ScmCall,
    how: policy::Forwarding,
    host: &mut S,
) -> ScmResult {
    let refuse = |why: &str, status: ScmStatus| {
        log::warn!(
            "SCM: svc {:#04x} cmd {:#04x} (x2..x5 {:#x} {:#x} {:#x} {:#x}) refused: {why}",
            call.svc,
            call.cmd,
            call.args[0],
            call.args[1],
            call.args[2],
            call.args[3]
        );
        ScmResult::status(status)
    };
    if !host.can_forward() {
        return forward_or_unsupported(call, host);
    }
    let held = match policy::host_ranges(call, how) {
        Ok(held) => held,
        Err(policy::Malformed::ArgumentCount) => {
            return refuse("argument count", ScmStatus::InvalidArgument);
        }
        Err(policy::Malformed::BadRange) => {
            return refuse("a buffer that wraps or is empty", ScmStatus::InvalidAddress);
        }
    };
    if let policy::Forwarding::IoRegister { write } = how {
        let pa = call.args[0];
        if !pa.is_multiple_of(4) || !host.host_maps_register(pa, write) {
            return refuse(
                "a register the host's stage 2 does not let it reach itself",
                ScmStatus::InvalidAddress,
            );
        }
    }
    match host.forward_holding(call, &held) {
        Ok(Some(x)) => ScmResult::forwarded(x),
        Ok(None) => forward_or_unsupported(call, host),
        Err(Refused) => refuse(
            "a buffer outside the host memory warden may touch (a carveout, warden's, donated or \
             not RAM)",
            ScmStatus::InvalidAddress,
        ),
    }
}

/// BOOT's command 0x0F (function ID 0x0200010F, LK's `SCM_SVC_MILESTONE_CMD_ID`): TZ's
/// "switch to AArch64 and jump" — it takes a buffer of EL1 x0..x8 and ELR, switches EL1 to
/// AArch64 and ERETs there. msm8916-mainline's qhypstub documents that TZ does this by writing
/// the hypervisor's HCR_EL2 and returning to EL1 itself: forwarded from warden, it would clear
/// HCR_EL2.VM (the host's stage 2) and leave the host at EL1 with no hypervisor. qhypstub only
/// serves it for an AArch32 boot loader (its HVC from AArch32); warden runs AArch64 next stages
/// only (x1 = 2), which branch to an AArch64 entry themselves: refused, never forwarded.
pub const BOOT_SWITCH_TO_AARCH64: u8 = 0x0f;

/// SCM calls warden never forwards to the firmware, whatever the board (answered
/// QCOM_SCM_EOPNOTSUPP; IS_CALL_AVAIL answers 0 for them).
fn is_never_forwarded(svc_id: u8, cmd: u8) -> bool {
    (svc_id, cmd) == (svc::BOOT, BOOT_SWITCH_TO_AARCH64)
}

/// A call warden does not mediate: the firmware's answer, or QCOM_SCM_EOPNOTSUPP where there
/// is no SCM firmware below (QEMU).
pub fn forward_or_unsupported<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> ScmResult {
    match host.forward(call) {
        Some(x) => ScmResult::forwarded(x),
        None => {
            log::debug!(
                "SCM: svc {:#04x} cmd {:#04x}: no SCM firmware (EOPNOTSUPP)",
                call.svc,
                call.cmd
            );
            ScmResult::status(ScmStatus::NotSupported)
        }
    }
}

/// IS_CALL_AVAIL(fnid): `fnid` is `owner << 24 | svc << 8 | cmd` (the ARM SMC conventions;
/// the legacy one never gets here, as convention detection picks SMC64).
/// warden's own calls: 1; any other: the firmware's answer when there is SCM firmware (warden
/// forwards those calls, the PAS ones after its checks), else 0.
fn is_call_available<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> ScmResult {
    if call.arg_count() != 1 {
        return ScmResult::status(ScmStatus::InvalidArgument);
    }
    let asked = split_call_avail_id(call.args[0]);
    let ours = asked.is_some_and(|(svc, cmd)| ScmFunction::from_ids(svc, cmd).is_some());
    let forwardable = asked.is_some_and(|(service, cmd)| {
        !is_never_forwarded(service, cmd)
            && (service == svc::PIL || policy::forwarding(service, cmd).is_some())
    });
    if ours || !forwardable || !host.can_forward() {
        return ScmResult::ok([u64::from(ours), 0, 0]);
    }
    forward_or_unsupported(call, host)
}

/// Successful and refused assign_mem calls so far (for the log's numbering).
static ASSIGNS: AtomicU64 = AtomicU64::new(0);
static ASSIGNS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// An assign_mem request as copied from host memory, before it is checked against VM IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignRequest {
    pub range_base: u64,
    pub range_size: u64,
    /// Source VM IDs as a bitmap (each listed once).
    pub sources: u64,
    /// Destination VM IDs as a bitmap (each listed once, permissions checked).
    pub destinations: u64,
    /// `(VM ID, permissions)` of each destination entry, in the host's order.
    pub destination_perms: [(u32, u32); MAX_DESTINATIONS],
}

impl AssignRequest {
    /// What warden tells the SCM firmware for this request once it is validated: the range,
    /// the source bitmap, each destination with the permissions the host asked for, in
    /// increasing VM ID order. `None` with more destinations than warden mediates (it refused
    /// the request before).
    pub fn forwarded(&self, range: MemRange) -> Option<forward::ForwardedAssign> {
        let mut out = forward::ForwardedAssign {
            range,
            sources: self.sources,
            destinations: [(0, 0); forward::MAX_FORWARDED],
            destination_count: 0,
        };
        for vm in 0..64u32 {
            if self.destinations & (1 << vm) == 0 {
                continue;
            }
            let &(_, perm) = self.destination_perms.iter().find(|&&(v, _)| v == vm)?;
            let slot = out.destinations.get_mut(out.destination_count)?;
            *slot = (vm, perm);
            out.destination_count += 1;
        }
        Some(out)
    }
}

/// Copies the request's buffers once and checks their form (`docs/qcom-scm.md`, checks 1-5);
/// an error is the SCM status to answer.
pub fn copy_assign_request<S: ScmHost + ?Sized>(
    call: &ScmCall,
    host: &S,
) -> Result<AssignRequest, ScmStatus> {
    use ScmStatus::{InvalidAddress, InvalidArgument};
    // 1. The call's shape: Linux's QCOM_SCM_ARGS(7, RO, VAL, RO, VAL, RO, VAL, VAL).
    if call.arginfo != ASSIGN_ARGINFO {
        return Err(InvalidArgument);
    }
    let [mem_list, mem_size, src_list, ext] = call.args;
    // 2. Arguments 4..7 are in the buffer x5 points at: le64 words (le32 for SMC32).
    let word = if call.smc64 { 8 } else { 4 };
    let mut ext_buf = [0u8; 32];
    let ext_buf = &mut ext_buf[..4 * word];
    host.read_host(ext, ext_buf).map_err(|_| InvalidAddress)?;
    let ext_arg = |i: usize| {
        if call.smc64 { le64(ext_buf, i * 8) } else { u64::from(le32(ext_buf, i * 4)) }
    };
    let (src_size, dest_list, dest_size, spare) = (ext_arg(0), ext_arg(1), ext_arg(2), ext_arg(3));
    // 3. Sizes: one memory entry (so a request is one range, applied whole or not at all),
    // whole source and destination entries, within bounds; the spare argument zero.
    let src_count = (src_size / 4) as usize;
    let dest_count = (dest_size / DEST_ENTRY as u64) as usize;
    if spare != 0
        || mem_size != MEM_ENTRY as u64
        || src_size == 0
        || !src_size.is_multiple_of(4)
        || src_count > MAX_SOURCES
        || dest_size == 0
        || !dest_size.is_multiple_of(DEST_ENTRY as u64)
        || dest_count > MAX_DESTINATIONS
    {
        return Err(InvalidArgument);
    }
    // 4. Every list in host memory warden may touch; copied once, only the copies are used.
    let mut mem = [0u8; MEM_ENTRY];
    let mut src = [0u8; 4 * MAX_SOURCES];
    let mut dest = [0u8; DEST_ENTRY * MAX_DESTINATIONS];
    let src = &mut src[..4 * src_count];
    let dest = &mut dest[..DEST_ENTRY * dest_count];
    host.read_host(mem_list, &mut mem).map_err(|_| InvalidAddress)?;
    host.read_host(src_list, src).map_err(|_| InvalidAddress)?;
    host.read_host(dest_list, dest).map_err(|_| InvalidAddress)?;
    // 5. Contents: VM IDs below 64, none twice; permissions a non-empty subset of RWX; the
    // context fields (unused by Linux) zero; the range non-empty, 4 KiB aligned, not wrapping.
    let mut sources = 0u64;
    for i in 0..src_count {
        let vm = le32(src, 4 * i);
        if vm >= 64 || sources & (1 << vm) != 0 {
            return Err(InvalidArgument);
        }
        sources |= 1 << vm;
    }
    let mut destinations = 0u64;
    let mut destination_perms = [(0, 0); MAX_DESTINATIONS];
    for i in 0..dest_count {
        let e = &dest[DEST_ENTRY * i..DEST_ENTRY * (i + 1)];
        let (vm, perm, ctx, ctx_size) = (le32(e, 0), le32(e, 4), le64(e, 8), le32(e, 16));
        let fresh = vm < 64 && destinations & (1 << vm) == 0;
        if !fresh || perm == 0 || perm & !PERM_RWX != 0 || ctx != 0 || ctx_size != 0 {
            return Err(InvalidArgument);
        }
        destinations |= 1 << vm;
        destination_perms[i] = (vm, perm);
    }
    let (range_base, range_size) = (le64(&mem, 0), le64(&mem, 8));
    let aligned = range_base.is_multiple_of(crate::mm::PAGE_SIZE)
        && range_size.is_multiple_of(crate::mm::PAGE_SIZE);
    if range_size == 0 || !aligned || range_base.checked_add(range_size).is_none() {
        return Err(InvalidArgument);
    }
    Ok(AssignRequest { range_base, range_size, sources, destinations, destination_perms })
}

/// The holders a VM bitmap names: HLOS and at most one VM warden plays a peer for.
pub fn holders_of(vms: u64) -> Option<Holders> {
    let host = vms & (1 << vmid::HLOS) != 0;
    let others = vms & !(1 << vmid::HLOS);
    let peer = match others.count_ones() {
        0 => None,
        1 => Some(peer_of_vmid(others.trailing_zeros())?),
        _ => return None,
    };
    (host || peer.is_some()).then_some(Holders { host, peer })
}

/// The SCM status for a refused or failed assignment (`docs/qcom-scm.md`).
pub fn assign_status(e: AssignError) -> ScmStatus {
    match e {
        AssignError::BadRange
        | AssignError::UnknownPeer
        | AssignError::WrongPeer
        | AssignError::SourceMismatch => ScmStatus::InvalidArgument,
        AssignError::TouchesWarden | AssignError::NotInCarveout => ScmStatus::InvalidAddress,
        AssignError::Unmediated => ScmStatus::NotSupported,
        AssignError::Busy => ScmStatus::Busy,
        AssignError::NoMemory => ScmStatus::NoMemory,
        AssignError::Aborted | AssignError::FirmwareRefused(_) => ScmStatus::Error,
    }
}

/// One holder set as Qualcomm names it, for the log.
struct ShowHolders(Holders);

impl core::fmt::Display for ShowHolders {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Holders { host, peer } = self.0;
        if host {
            f.write_str("HLOS")?;
        }
        if let Some(p) = peer {
            let sep = if host { "+" } else { "" };
            match vmid_of_peer(p) {
                Some(vmid::MSS_MSA) => write!(f, "{sep}MSS_MSA")?,
                Some(vmid::ADSP_Q6) => write!(f, "{sep}ADSP_Q6")?,
                _ => write!(f, "{sep}peer {}", p.get())?,
            }
        }
        Ok(())
    }
}

/// assign_mem (MP 0x0C / 0x16): see the module documentation and `docs/qcom-scm.md`. On
/// success x1 is 0: Linux's `__qcom_scm_assign_mem` returns it as its result, and keeps the
/// new source bitmap itself (the destination VM IDs); the firmware returns none.
///
/// With SCM firmware below ([`ScmHost::can_forward`]) the firmware is told too, with warden's
/// validated copy ([`forward`]); its refusal is rolled back and its status answered.
fn assign_mem<S: ScmHost + ?Sized>(call: &ScmCall, host: &mut S) -> ScmResult {
    let checked = copy_assign_request(call, host).map_err(|s| s as i64).and_then(|r| {
        let invalid = ScmStatus::InvalidArgument as i64;
        let from = holders_of(r.sources).ok_or(invalid)?;
        let to = holders_of(r.destinations).ok_or(invalid)?;
        let range = MemRange::from_base_size(r.range_base, r.range_size).ok_or(invalid)?;
        let forward = match host.can_forward() {
            true => Some(r.forwarded(range).ok_or(invalid)?),
            false => None,
        };
        let outcome = host.assign(range, from, to, forward.as_ref()).map_err(|e| match e {
            // The firmware's own refusal reaches the host as it said it.
            AssignError::FirmwareRefused(status) if status < 0 => status,
            e => assign_status(e) as i64,
        })?;
        Ok((range, from, to, outcome, forward.is_some()))
    });
    match checked {
        Ok((range, from, to, outcome, told)) => {
            let n = ASSIGNS.fetch_add(1, Ordering::Relaxed) + 1;
            let what = match outcome {
                AssignOutcome::Shared(_) => "shared (SHARE)",
                AssignOutcome::Exclusive(_, TransferKind::Donate) => "donated (exclusive)",
                AssignOutcome::Exclusive(_, TransferKind::Lend) => "lent (exclusive)",
                AssignOutcome::Unshared(_) => "unshared (host alone)",
                AssignOutcome::TakenBack { scrubbed: true, .. } => "taken back, scrubbed",
                AssignOutcome::TakenBack { scrubbed: false, .. } => "taken back",
                AssignOutcome::Unchanged => "unchanged",
            };
            let firmware = match (told, outcome) {
                (true, AssignOutcome::Unchanged) => "",
                (true, _) => ", the firmware agreed",
                (false, _) => "",
            };
            log::info!(
                "SCM assign_mem #{n}: {range} {} -> {}: {what}{firmware}",
                ShowHolders(from),
                ShowHolders(to)
            );
            ScmResult::ok([0; 3])
        }
        Err(status) => {
            let n = ASSIGNS_REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
            if super::should_log(n) {
                log::info!(
                    "SCM assign_mem refused: {status} (x2 {:#x} x3 {:#x} x4 {:#x} x5 {:#x}; \
                     refusal #{n})",
                    call.args[0],
                    call.args[1],
                    call.args[2],
                    call.args[3]
                );
            }
            ScmResult { status, results: [0; 3] }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Host memory as buffers by address, the assignments passed on, the firmware below.
    #[derive(Default)]
    pub(super) struct FakeScm {
        pub memory: BTreeMap<u64, Vec<u8>>,
        pub reads: core::cell::RefCell<Vec<(u64, usize)>>,
        pub assigns: Vec<(MemRange, Holders, Holders)>,
        pub reply: Option<Result<AssignOutcome, AssignError>>,
        /// Who holds what (for `holders`, and updated by successful assigns); a range not
        /// listed is refused as outside every carveout.
        pub held: Vec<(MemRange, PeerId, Holders)>,
        /// `Some`: the board has SCM firmware, which answers every call with this.
        pub firmware: Option<[u64; 4]>,
        pub forwarded: Vec<ScmCall>,
        /// What each assignment was to tell the firmware.
        pub forwards: Vec<Option<forward::ForwardedAssign>>,
        pub no_map: Vec<MemRange>,
        pub pas: Vec<(PeerId, MemRange)>,
        /// Device registers the host's stage 2 maps: (address, writable).
        pub registers: Vec<(u64, bool)>,
    }

    impl ScmHost for FakeScm {
        fn read_host(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused> {
            let (&base, bytes) = self.memory.range(..=ipa).next_back().ok_or(Refused)?;
            let at = (ipa - base) as usize;
            buf.copy_from_slice(bytes.get(at..at + buf.len()).ok_or(Refused)?);
            self.reads.borrow_mut().push((ipa, buf.len()));
            Ok(())
        }
        fn assign(
            &mut self,
            range: MemRange,
            from: Holders,
            to: Holders,
            forward: Option<&forward::ForwardedAssign>,
        ) -> Result<AssignOutcome, AssignError> {
            self.assigns.push((range, from, to));
            self.forwards.push(forward.copied());
            let reply = self.reply.unwrap_or(Ok(AssignOutcome::Unchanged));
            if reply.is_ok() {
                for h in self.held.iter_mut().filter(|h| h.0 == range) {
                    h.2 = to;
                }
            }
            reply
        }
        fn holders(&self, range: MemRange, peer: PeerId) -> Result<Holders, AssignError> {
            let h = self
                .held
                .iter()
                .find(|h| h.0.contains_range(&range))
                .ok_or(AssignError::NotInCarveout)?;
            if h.1 != peer {
                return Err(AssignError::WrongPeer);
            }
            Ok(h.2)
        }
        fn can_forward(&self) -> bool {
            self.firmware.is_some()
        }
        fn forward(&mut self, call: &ScmCall) -> Option<[u64; 4]> {
            self.forwarded.push(*call);
            self.firmware
        }
        fn forward_holding(
            &mut self,
            call: &ScmCall,
            held: &policy::heapless_ranges::Ranges,
        ) -> Result<Option<[u64; 4]>, Refused> {
            for r in held.iter() {
                let mut probe = vec![0u8; r.size() as usize];
                self.read_host(r.start, &mut probe)?;
            }
            Ok(self.forward(call))
        }
        fn host_maps_register(&self, pa: u64, write: bool) -> bool {
            self.registers.iter().any(|&(r, w)| r == pa && (w || !write))
        }
        fn firmware_may_take(&self, range: MemRange) -> bool {
            self.no_map.iter().any(|r| r.contains_range(&range))
        }
        fn pas_region(&self, peer: PeerId) -> Option<MemRange> {
            self.pas.iter().find(|(p, _)| *p == peer).map(|(_, r)| *r)
        }
        fn set_pas_region(&mut self, peer: PeerId, region: Option<MemRange>) {
            self.pas.retain(|(p, _)| *p != peer);
            if let Some(r) = region {
                self.pas.push((peer, r));
            }
        }
    }

    pub(super) fn call(fid: u32, x: [u64; 5]) -> SmcccCall {
        let mut regs = [0u64; 31];
        regs[0] = u64::from(fid);
        regs[1..6].copy_from_slice(&x);
        SmcccCall::from_regs(&regs)
    }

    pub(super) fn answer_with(host: &mut FakeScm, fid: u32, x: [u64; 5]) -> Option<[u64; 4]> {
        let c = ScmCall::decode(&call(fid, x))?;
        let mut regs = [0xaau64; 31];
        dispatch(&c, host).to_return().apply(&mut regs);
        Some([regs[0], regs[1], regs[2], regs[3]])
    }

    fn answer(fid: u32, x: [u64; 5]) -> Option<[u64; 4]> {
        answer_with(&mut FakeScm::default(), fid, x)
    }

    /// Linux's `__get_convention`: fast SMC64 IS_CALL_AVAIL about itself, arginfo 1.
    #[test]
    fn convention_detection_finds_smc64() {
        let itself = 0x0200_0601;
        assert_eq!(answer(0xc200_0601, [1, itself, 0, 0, 0]), Some([0, 1, 0, 0]));
    }

    #[test]
    fn is_call_available_is_truthful() {
        // Yielding (non-atomic) calls, as qcom_scm_call makes them.
        let ask =
            |svc: u64, cmd: u64| answer(0x4200_0601, [1, (2 << 24) | (svc << 8) | cmd, 0, 0, 0]);
        assert_eq!(ask(0x06, 0x01), Some([0, 1, 0, 0]));
        assert_eq!(ask(0x0c, 0x16), Some([0, 1, 0, 0]), "assign_mem");
        // PAS init_image, download mode, wait-for-safe toggle: not ours.
        for (svc, cmd) in [(0x02, 0x01), (0x01, 0x10), (0x0c, 0x17)] {
            assert_eq!(ask(svc, cmd), Some([0, 0, 0, 0]), "{svc:#x}/{cmd:#x}");
        }
        // Another owner's function, or reserved bits: not available.
        assert_eq!(answer(0x4200_0601, [1, (3 << 24) | 0x601, 0, 0, 0]), Some([0, 0, 0, 0]));
        assert_eq!(
            answer(0x4200_0601, [1, (2 << 24) | (1 << 16) | 0x601, 0, 0, 0]),
            Some([0, 0, 0, 0])
        );
        // Wrong argument count.
        assert_eq!(answer(0x4200_0601, [2, 0x0200_0601, 0, 0, 0]), Some([(-2i64) as u64, 0, 0, 0]));
    }

    #[test]
    fn unimplemented_calls_are_eopnotsupp_and_smc32_args_are_narrowed() {
        // Download mode (BOOT 0x10), and a well-formed PAS init_image: no firmware on QEMU.
        assert_eq!(answer(0x4200_0110, [2, 1, 2, 3, 4]), Some([(-4i64) as u64, 0, 0, 0]));
        let mut host = FakeScm::default();
        host.memory.insert(0x4100_0000, vec![0; 64]);
        assert_eq!(
            answer_with(&mut host, 0x4200_0201, [0x82, 4, 0x4100_0000, 0, 0]),
            Some([(-4i64) as u64, 0, 0, 0])
        );
        let c = ScmCall::decode(&call(0x8200_0601, [1, 0xffff_ffff_0200_0601, 0, 0, 0])).unwrap();
        assert!(!c.smc64 && c.fast);
        assert_eq!(c.args[0], 0x0200_0601);
        assert_eq!(dispatch(&c, &mut FakeScm::default()).results[0], 1);
    }

    /// TZ's AArch64 state switch (0x0200010F, from LK's `jump_to_kernel`: arginfo 0x12, a
    /// buffer of EL1 x0..x8 and ELR) is refused on every board and never reaches the firmware,
    /// as SMC32 or SMC64, yielding or fast; IS_CALL_AVAIL says it is not there even when the
    /// firmware below would say it is.
    #[test]
    fn the_aarch64_state_switch_is_refused_never_forwarded() {
        let mut host = FakeScm { firmware: Some([0, 1, 0, 0]), ..FakeScm::default() };
        host.memory.insert(0x8000_0000, vec![0; 80]);
        for fid in [0x0200_010f, 0x4200_010f, 0x8200_010f, 0xc200_010f] {
            assert_eq!(
                answer_with(&mut host, fid, [0x12, 0x8000_0000, 80, 0, 0]),
                Some([(-4i64) as u64, 0, 0, 0]),
                "{fid:#x}"
            );
        }
        let ask =
            |host: &mut FakeScm, fnid: u64| answer_with(host, 0x4200_0601, [1, fnid, 0, 0, 0]);
        assert_eq!(ask(&mut host, 0x0200_010f), Some([0, 0, 0, 0]));
        assert!(host.forwarded.is_empty(), "{:?}", host.forwarded);
        assert!(host.reads.borrow().is_empty(), "the buffer is not even read");
        // Its neighbours in BOOT still go to the firmware.
        assert_eq!(answer_with(&mut host, 0x4200_0110, [2, 1, 2, 3, 4]), Some([0, 1, 0, 0]));
        assert_eq!(ask(&mut host, 0x0200_0110), Some([0, 1, 0, 0]));
        assert_eq!(host.forwarded.len(), 2);
    }

    /// With SCM firmware below, what warden does not answer itself is the firmware's: the
    /// call is forwarded unchanged (x0..x7) and its answer passed through (INTERRUPTED too);
    /// IS_CALL_AVAIL of such a call is the firmware's answer, of warden's own calls still 1.
    #[test]
    fn with_scm_firmware_the_rest_is_forwarded() {
        let mut host = FakeScm { firmware: Some([1, 7, 8, 9]), ..FakeScm::default() };
        assert_eq!(answer_with(&mut host, 0x4200_0110, [1, 2, 0, 0, 0]), Some([1, 7, 8, 9]));
        assert_eq!(host.forwarded.len(), 1);
        assert_eq!(host.forwarded[0].regs[..3], [0x4200_0110, 1, 2]);
        let ask = |host: &mut FakeScm, svc: u64, cmd: u64| {
            answer_with(host, 0x4200_0601, [1, (2 << 24) | (svc << 8) | cmd, 0, 0, 0])
        };
        host.firmware = Some([0, 1, 0, 0]);
        assert_eq!(ask(&mut host, 0x0c, 0x16), Some([0, 1, 0, 0]), "ours");
        assert_eq!(host.forwarded.len(), 1, "ours: not asked");
        assert_eq!(ask(&mut host, 0x02, 0x07), Some([0, 1, 0, 0]), "the firmware's");
        assert_eq!(host.forwarded.len(), 2);
        // Without it: 0, nothing forwarded.
        let mut none = FakeScm::default();
        assert_eq!(ask(&mut none, 0x02, 0x07), Some([0, 0, 0, 0]));
        assert!(none.forwarded.is_empty());
    }

    /// A SiP call warden does not know the arguments of is refused (EOPNOTSUPP), never made
    /// to the firmware, and IS_CALL_AVAIL says it is not there without asking the firmware:
    /// e.g. HDCP's register writes, the SHM bridge, BOOT's cold/warm boot address.
    #[test]
    fn unknown_calls_are_refused_with_firmware_below() {
        let mut host = FakeScm { firmware: Some([0, 1, 0, 0]), ..FakeScm::default() };
        for fid in [0x4200_1101u32, 0x4200_0c1e, 0x4200_0101, 0x4200_1501, 0xc200_fc01] {
            let eopnotsupp = status::EOPNOTSUPP as u64;
            assert_eq!(
                answer_with(&mut host, fid, [2, 0x8000_0000, 0, 0, 0]).unwrap()[0],
                eopnotsupp
            );
            let id = u64::from(fid & 0xffff) | (2 << 24);
            assert_eq!(answer_with(&mut host, 0x4200_0601, [1, id, 0, 0, 0]), Some([0, 0, 0, 0]));
        }
        assert!(host.forwarded.is_empty(), "{:?}", host.forwarded);
    }

    /// A buffer the firmware would read or write for the host must be host memory warden may
    /// touch: ICE's key (argument 1, size argument 2), the secure page-table pool (argument
    /// 0, size 1), and with more than four arguments the x5 buffer holding the rest.
    #[test]
    fn buffers_the_firmware_uses_must_be_host_memory() {
        let mut host = FakeScm { firmware: Some([0, 0, 0, 0]), ..FakeScm::default() };
        host.memory.insert(0x4000_0000, vec![0; 0x2000]);
        let set_key = 0x4200_1004u32; // ES CONFIG_SET_ICE_KEY, 5 arguments
        let key_args = |key: u64, size: u64, rest: u64| [0x1a5, 3, key, size, rest];
        let bad_addr = status::EINVAL_ADDR as u64;
        let ok = answer_with(&mut host, set_key, key_args(0x4000_0100, 64, 0x4000_1000));
        assert_eq!(ok, Some([0, 0, 0, 0]));
        assert_eq!(host.forwarded.len(), 1);
        // The key outside host memory (a carveout, warden's region: the fake knows neither).
        let r = answer_with(&mut host, set_key, key_args(0x9000_0000, 64, 0x4000_1000));
        assert_eq!(r.unwrap()[0], bad_addr);
        // The key running off the end of host memory.
        let r = answer_with(&mut host, set_key, key_args(0x4000_1ff0, 64, 0x4000_1000));
        assert_eq!(r.unwrap()[0], bad_addr);
        // The x5 buffer (arguments 3 and 4) outside host memory.
        let r = answer_with(&mut host, set_key, key_args(0x4000_0100, 64, 0x9000_0000));
        assert_eq!(r.unwrap()[0], bad_addr);
        // Wrapping and empty buffers.
        let r = answer_with(&mut host, set_key, key_args(u64::MAX - 8, 64, 0x4000_1000));
        assert_eq!(r.unwrap()[0], bad_addr);
        let r = answer_with(&mut host, set_key, key_args(0x4000_0100, 0, 0x4000_1000));
        assert_eq!(r.unwrap()[0], bad_addr);
        // Too few arguments to hold the buffer's size: refused before anything is read.
        let r = answer_with(&mut host, set_key, [0x2, 3, 0x4000_0100, 64, 0]);
        assert_eq!(r.unwrap()[0], status::EINVAL_ARG as u64);
        let ptbl_init = 0x4200_0c04u32;
        let r = answer_with(&mut host, ptbl_init, [0x3, 0x4000_0000, 0x1000, 0, 0]);
        assert_eq!(r, Some([0, 0, 0, 0]));
        let r = answer_with(&mut host, ptbl_init, [0x3, 0x8000_0000, 0x10_0000, 0, 0]);
        assert_eq!(r.unwrap()[0], bad_addr);
        assert_eq!(host.forwarded.len(), 2, "only the two good calls reached the firmware");
    }

    /// IO READ/WRITE make the firmware touch a register for the host: only one the host's own
    /// stage 2 maps for it (writable for a write), 4-byte aligned.
    #[test]
    fn io_registers_must_be_the_hosts_own() {
        let mut host = FakeScm { firmware: Some([0, 5, 0, 0]), ..FakeScm::default() };
        host.registers = vec![(0x1fd_3000, true), (0x1fd_4000, false)];
        let (read, write) = (0x4200_0501u32, 0x4200_0502u32);
        let bad_addr = status::EINVAL_ADDR as u64;
        assert_eq!(answer_with(&mut host, read, [1, 0x1fd_4000, 0, 0, 0]), Some([0, 5, 0, 0]));
        assert_eq!(answer_with(&mut host, write, [2, 0x1fd_3000, 1, 0, 0]), Some([0, 5, 0, 0]));
        assert_eq!(host.forwarded.len(), 2);
        for (fid, addr) in
            [(write, 0x1fd_4000), (read, 0x1500_0000), (write, 0x1500_0000), (read, 0x1fd_3002)]
        {
            assert_eq!(answer_with(&mut host, fid, [2, addr, 1, 0, 0]).unwrap()[0], bad_addr);
        }
        assert_eq!(host.forwarded.len(), 2, "no refused call reached the firmware");
    }

    #[test]
    fn only_sip_calls_in_the_arm_smc_convention_decode() {
        for fid in [0xc600_0601u32, 0x8400_0000, 0xc201_0601, 0xf200_0603] {
            assert_eq!(ScmCall::decode(&call(fid, [0; 5])), None, "{fid:#x}");
        }
    }

    const ASSIGN_FID: u32 = 0x4200_0c16;
    const MEM: u64 = 0x4100_0000;
    const SRC: u64 = 0x4100_0040;
    const DEST: u64 = 0x4100_0080;
    const EXT: u64 = 0x4100_1000;
    const CARVEOUT_PAGE: u64 = 0x7c00_0000;

    /// Linux's `qcom_scm_assign_mem` as it lays its buffers out (one tzmem buffer: source
    /// list, memory entry, destination list, each 64-byte aligned; the SMC argument buffer).
    struct Assign {
        range: (u64, u64),
        src: Vec<u32>,
        dest: Vec<(u32, u32)>,
        arginfo: u64,
        spare: u64,
        mem_size: u64,
    }

    impl Assign {
        fn new(src: &[u32], dest: &[(u32, u32)]) -> Self {
            Assign {
                range: (CARVEOUT_PAGE, 0x1000),
                src: src.to_vec(),
                dest: dest.to_vec(),
                arginfo: u64::from(ASSIGN_ARGINFO),
                spare: 0,
                mem_size: 16,
            }
        }

        fn host(&self) -> FakeScm {
            let mut src = Vec::new();
            for v in &self.src {
                src.extend_from_slice(&v.to_le_bytes());
            }
            let mut dest = Vec::new();
            for (vm, perm) in &self.dest {
                dest.extend_from_slice(&vm.to_le_bytes());
                dest.extend_from_slice(&perm.to_le_bytes());
                dest.extend_from_slice(&[0; 16]);
            }
            let mut mem = Vec::new();
            mem.extend_from_slice(&self.range.0.to_le_bytes());
            mem.extend_from_slice(&self.range.1.to_le_bytes());
            let (src_size, dest_size) = (src.len() as u64, dest.len() as u64);
            let mut ext = Vec::new();
            for w in [src_size, DEST, dest_size, self.spare, 0, 0, 0] {
                ext.extend_from_slice(&w.to_le_bytes());
            }
            let mut f = FakeScm::default();
            f.memory.insert(MEM, mem);
            f.memory.insert(SRC, src);
            f.memory.insert(DEST, dest);
            f.memory.insert(EXT, ext);
            f
        }

        fn regs(&self) -> [u64; 5] {
            [self.arginfo, MEM, self.mem_size, SRC, EXT]
        }

        fn run(&self, host: &mut FakeScm) -> [u64; 4] {
            answer_with(host, ASSIGN_FID, self.regs()).unwrap()
        }
    }

    const RW: u32 = 0x6;
    const HLOS: u32 = vmid::HLOS;
    const MSS: u32 = vmid::MSS_MSA;
    const MODEM: PeerId = PeerId::MODEM;

    fn status(s: ScmStatus) -> [u64; 4] {
        [s as i64 as u64, 0, 0, 0]
    }

    #[test]
    fn arginfo_is_linuxs() {
        // QCOM_SCM_ARGS(7, QCOM_SCM_RO, QCOM_SCM_VAL, QCOM_SCM_RO, QCOM_SCM_VAL, QCOM_SCM_RO,
        // QCOM_SCM_VAL, QCOM_SCM_VAL).
        assert_eq!(ASSIGN_ARGINFO, 0x1117);
    }

    /// rmtfs_mem's probe: HLOS → HLOS + MSS, each RW. x1 = 0 on success (Linux returns it).
    #[test]
    fn assign_mem_share_reaches_the_tracker_as_holders() {
        let a = Assign::new(&[HLOS], &[(HLOS, RW), (MSS, RW)]);
        let mut host = a.host();
        host.reply = Some(Ok(AssignOutcome::Shared(MODEM)));
        assert_eq!(a.run(&mut host), [0, 0, 0, 0]);
        let range = MemRange::from_base_size(CARVEOUT_PAGE, 0x1000).unwrap();
        assert_eq!(host.assigns, vec![(range, Holders::HOST, Holders::shared(MODEM))]);
        // Each buffer read exactly once.
        let mut reads: Vec<u64> = host.reads.borrow().iter().map(|r| r.0).collect();
        reads.sort();
        assert_eq!(reads, vec![MEM, SRC, DEST, EXT]);
        // And back: rmtfs_mem's remove (source bitmap HLOS | MSS, as Linux keeps it).
        let back = Assign::new(&[HLOS, MSS], &[(HLOS, RW)]);
        let mut host = back.host();
        host.reply = Some(Ok(AssignOutcome::Unshared(MODEM)));
        assert_eq!(back.run(&mut host), [0, 0, 0, 0]);
        assert_eq!(host.assigns, vec![(range, Holders::shared(MODEM), Holders::HOST)]);
    }

    #[test]
    fn assign_mem_exclusive_and_smc32() {
        let a = Assign::new(&[HLOS], &[(MSS, 0x7)]);
        let mut host = a.host();
        host.reply = Some(Ok(AssignOutcome::Exclusive(MODEM, TransferKind::Donate)));
        assert_eq!(a.run(&mut host), [0, 0, 0, 0]);
        assert_eq!(host.assigns[0].2, Holders::peer(MODEM));
        // SMC32: the argument buffer holds le32 words.
        let mut host = a.host();
        let mut ext = Vec::new();
        for w in [4u32, DEST as u32, 24, 0] {
            ext.extend_from_slice(&w.to_le_bytes());
        }
        host.memory.insert(EXT, ext);
        assert_eq!(answer_with(&mut host, 0x0200_0c16, a.regs()), Some([0, 0, 0, 0]));
        assert_eq!(host.assigns.len(), 1);
    }

    /// The bad-input catalogue (docs/qcom-scm.md): each refusal with its code, and nothing
    /// passed on to the tracker.
    #[test]
    fn assign_mem_refusals_have_their_codes_and_change_nothing() {
        use ScmStatus::{InvalidAddress as Addr, InvalidArgument as Arg};
        let ok = || Assign::new(&[HLOS], &[(HLOS, RW), (MSS, RW)]);
        type HostEdit = Option<fn(&mut FakeScm)>;
        let mut cases: Vec<(&str, Assign, HostEdit, ScmStatus)> = Vec::new();
        let mut push = |name, edit: fn(&mut Assign), host: Option<fn(&mut FakeScm)>, s| {
            let mut a = ok();
            edit(&mut a);
            cases.push((name, a, host, s));
        };
        push("arginfo", |a| a.arginfo = 7, None, Arg);
        push(
            "argument buffer not host memory",
            |_| {},
            Some(|h| {
                h.memory.remove(&EXT);
            }),
            Addr,
        );
        push("spare argument", |a| a.spare = 1, None, Arg);
        push("two memory entries", |a| a.mem_size = 32, None, Arg);
        push("memory list size 0", |a| a.mem_size = 0, None, Arg);
        push("no source", |a| a.src.clear(), None, Arg);
        push("65 sources", |a| a.src = (0..65).collect(), None, Arg);
        push("no destination", |a| a.dest.clear(), None, Arg);
        push("9 destinations", |a| a.dest = (0..9).map(|v| (v, RW)).collect(), None, Arg);
        push(
            "memory list not host memory",
            |_| {},
            Some(|h| {
                h.memory.remove(&MEM);
            }),
            Addr,
        );
        push(
            "source list not host memory",
            |_| {},
            Some(|h| {
                h.memory.remove(&SRC);
            }),
            Addr,
        );
        push(
            "destination list not host memory",
            |_| {},
            Some(|h| {
                h.memory.remove(&DEST);
            }),
            Addr,
        );
        push("source VM 64", |a| a.src = vec![64], None, Arg);
        push("source VM twice", |a| a.src = vec![HLOS, HLOS], None, Arg);
        push("destination VM twice", |a| a.dest = vec![(HLOS, RW), (HLOS, RW)], None, Arg);
        push("destination VM 64", |a| a.dest = vec![(64, RW)], None, Arg);
        push("permission 0", |a| a.dest = vec![(HLOS, RW), (MSS, 0)], None, Arg);
        push("permission 8", |a| a.dest = vec![(HLOS, RW), (MSS, 8)], None, Arg);
        push(
            "context set",
            |_| {},
            Some(|h| {
                h.memory.get_mut(&DEST).unwrap()[8] = 1;
            }),
            Arg,
        );
        push("size 0", |a| a.range.1 = 0, None, Arg);
        push("base unaligned", |a| a.range.0 += 0x800, None, Arg);
        push("size unaligned", |a| a.range.1 = 0x1800, None, Arg);
        push("range wraps", |a| a.range = (0xffff_ffff_ffff_f000, 0x2000), None, Arg);
        push("unknown source VM", |a| a.src = vec![vmid::CDSP], None, Arg);
        push("unknown destination VM", |a| a.dest = vec![(HLOS, RW), (vmid::CDSP, RW)], None, Arg);
        push("two peers", |a| a.dest = vec![(MSS, RW), (vmid::ADSP_Q6, RW)], None, Arg);
        for (name, a, edit, expected) in cases {
            let mut host = a.host();
            if let Some(edit) = edit {
                edit(&mut host);
            }
            assert_eq!(a.run(&mut host), status(expected), "{name}");
            assert!(host.assigns.is_empty(), "{name}: passed on");
        }
        // The tracker's refusals keep their codes (the table in docs/qcom-scm.md).
        for (e, code) in [
            (AssignError::TouchesWarden, Addr),
            (AssignError::NotInCarveout, Addr),
            (AssignError::UnknownPeer, Arg),
            (AssignError::WrongPeer, Arg),
            (AssignError::SourceMismatch, Arg),
            (AssignError::BadRange, Arg),
            (AssignError::Unmediated, ScmStatus::NotSupported),
            (AssignError::Busy, ScmStatus::Busy),
            (AssignError::NoMemory, ScmStatus::NoMemory),
            (AssignError::Aborted, ScmStatus::Error),
        ] {
            let a = ok();
            let mut host = a.host();
            host.reply = Some(Err(e));
            assert_eq!(a.run(&mut host), status(code), "{e:?}");
        }
    }

    /// With SCM firmware below, assign_mem tells it warden's validated copy (range, sources,
    /// destinations with the host's permissions), never the host's call or buffers: the SMC
    /// names only warden's own buffer. The firmware's refusal reaches the host as it said it.
    #[test]
    fn with_scm_firmware_assign_mem_tells_it_wardens_copy() {
        use forward::tests::{ConduitOp, FakeConduit};
        let a = Assign::new(&[HLOS], &[(MSS, 0x7)]);
        let mut host = a.host();
        host.firmware = Some([0; 4]);
        host.reply = Some(Ok(AssignOutcome::Exclusive(MODEM, TransferKind::Donate)));
        assert_eq!(a.run(&mut host), [0, 0, 0, 0]);
        let told = host.forwards[0].expect("the firmware is told");
        let range = MemRange::from_base_size(CARVEOUT_PAGE, 0x1000).unwrap();
        assert_eq!(told.range, range);
        assert_eq!(told.sources, 1 << HLOS);
        assert_eq!(told.destinations(), [(MSS, 0x7)]);
        assert!(host.forwarded.is_empty(), "the host's own call is not passed down");
        // The host rewrites its lists after warden's copy: what is told does not change.
        host.memory.insert(MEM, vec![0xff; 16]);
        const WARDEN_BUFFER: u64 = 0x7e10_0000;
        let mut conduit = FakeConduit::default();
        let mut lists = forward::AssignLists::new();
        let mut tz = forward::TzAssign::new(&mut conduit, &mut lists, WARDEN_BUFFER, told);
        crate::handoff::Firmware::agree(&mut tz).unwrap();
        let ConduitOp::Smc(regs) = conduit.log[1] else { panic!("{:?}", conduit.log) };
        assert_eq!(conduit.log[0], ConduitOp::Clean { addr: WARDEN_BUFFER, len: 256 });
        for (i, x) in [(2, regs[2]), (4, regs[4]), (5, regs[5])] {
            assert!((WARDEN_BUFFER..WARDEN_BUFFER + 256).contains(&x), "x{i} = {x:#x}");
            assert!(![MEM, SRC, DEST, EXT].contains(&x), "x{i} is the host's buffer");
        }
        assert_eq!(warden_abi::qcom_scm::le64(lists.bytes(), 64), CARVEOUT_PAGE);
        // The firmware refuses: its code.
        let mut host = a.host();
        host.firmware = Some([0; 4]);
        host.reply = Some(Err(AssignError::FirmwareRefused(-3)));
        assert_eq!(a.run(&mut host), status(ScmStatus::InvalidAddress));
        // A share tells both destinations, in VM ID order; no firmware: nothing told.
        let share = Assign::new(&[HLOS], &[(MSS, RW), (HLOS, 0x7)]);
        let mut host = share.host();
        host.firmware = Some([0; 4]);
        share.run(&mut host);
        assert_eq!(host.forwards[0].unwrap().destinations(), [(HLOS, 0x7), (MSS, RW)]);
        let mut host = share.host();
        share.run(&mut host);
        assert_eq!(host.forwards, [None]);
    }

    #[test]
    fn vm_bitmaps_become_holders() {
        let bit = |v: u32| 1u64 << v;
        assert_eq!(holders_of(bit(HLOS)), Some(Holders::HOST));
        assert_eq!(holders_of(bit(HLOS) | bit(MSS)), Some(Holders::shared(MODEM)));
        assert_eq!(holders_of(bit(vmid::ADSP_Q6)), Some(Holders::peer(PeerId::DSP)));
        assert_eq!(holders_of(0), None);
        assert_eq!(holders_of(bit(MSS) | bit(vmid::ADSP_Q6)), None);
        assert_eq!(holders_of(bit(vmid::SSC_Q6)), None);
        assert_eq!(vmid_of_peer(MODEM), Some(MSS));
    }

    proptest::proptest! {
        /// Hostile registers and list contents: every answer is a defined status, nothing
        /// panics, and only a request that decodes to holders reaches the tracker.
        #[test]
        fn hostile_assign_mem_never_panics(
            regs in proptest::array::uniform5(proptest::prelude::any::<u64>()),
            pick in proptest::array::uniform4(0usize..6),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            fid in proptest::sample::select(vec![0x4200_0c16u32, 0x0200_0c16, 0xc200_0c16]),
        ) {
            // Addresses either random or one of the buffers (so parsing gets deep).
            let buffers = [0x4100_0000u64, 0x4100_0100, 0x4100_0200, 0x4100_0300];
            let mut x = regs;
            for (i, p) in pick.iter().enumerate() {
                if *p < 4 {
                    x[i + 1] = buffers[*p];
                }
            }
            if pick[0] == 5 {
                x[0] = u64::from(ASSIGN_ARGINFO);
            }
            let mut host = FakeScm::default();
            for (i, b) in buffers.iter().enumerate() {
                let start = (i * 64).min(bytes.len());
                host.memory.insert(*b, bytes[start..].to_vec());
            }
            let out = answer_with(&mut host, fid, x).unwrap();
            let status = out[0] as i64;
            proptest::prop_assert!(matches!(status, 0 | -2 | -3 | -4 | -5 | -12 | -1));
            proptest::prop_assert!(status != 0 || host.assigns.len() == 1);
        }
    }
}
