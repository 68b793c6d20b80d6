//! Carveout handoff and violation queries: function IDs, the range state machine, and typed
//! encoders/decoders of requests and responses (`x0..x7`).
//!
//! Modelled on FF-A's memory management (DEN0077): DONATE moves ownership to a peer, LEND gives
//! a peer access while the host stays owner, the peer RELEASEs (FF-A's RELINQUISH) and only
//! then may the host RECLAIM. Unlike FF-A there are no memory-region descriptors or handles:
//! a transfer names a carveout (by index) or a page-aligned sub-range of one, in registers.
//!
//! Register rules (see `docs/abi.md`): `x0` carries the function ID in, the status out
//! ([`crate::error::SUCCESS`] or a negative [`AbiError`] code). Arguments are in `x1..x7`;
//! every register and bit a call does not define must be zero, else `INVALID_PARAMETERS`.
//! warden writes all of `x0..x7` on return: results, zero in the unused ones (on error only
//! `x0` is meaningful). Results beyond `x3` follow SMCCC v1.2's register use; a v1.1 caller
//! already treats `x4..x17` as clobbered.

use crate::calls::WardenCall;
use crate::error::{AbiError, SUCCESS};
use crate::smccc::{OWNER_VENDOR_HYP, fast_call};

/// `CARVEOUT_COUNT()` → x1 = number of carveouts.
pub const CARVEOUT_COUNT: u32 = fast_call(false, OWNER_VENDOR_HYP, 0x0010);
/// `CARVEOUT_INFO(index)` → base, size, attributes, state.
pub const CARVEOUT_INFO: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0011);
/// `RANGE_QUERY(addr)` → the run of pages in one state around `addr` within its carveout.
pub const RANGE_QUERY: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0012);
/// `DONATE(target, size, peer, flags)`: host only.
pub const DONATE: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0020);
/// `LEND(target, size, peer, flags)`: host only.
pub const LEND: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0021);
/// `RECLAIM(target, size, flags)`: host only.
pub const RECLAIM: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0022);
/// `RELEASE(target, size, flags)`: peer only (FF-A's RELINQUISH).
pub const RELEASE: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0023);
/// `VIOLATION_COUNT()` → incidents so far, oldest still held, accesses so far.
pub const VIOLATION_COUNT: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0030);
/// `VIOLATION_INFO(seq)` → one recorded incident.
pub const VIOLATION_INFO: u32 = fast_call(true, OWNER_VENDOR_HYP, 0x0031);

/// Every call this module defines.
pub const CALLS: [u32; 9] = [
    CARVEOUT_COUNT,
    CARVEOUT_INFO,
    RANGE_QUERY,
    DONATE,
    LEND,
    RECLAIM,
    RELEASE,
    VIOLATION_COUNT,
    VIOLATION_INFO,
];

/// Granule of every transfer: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// Highest physical address + 1 any range may reach (52-bit PA, FEAT_LPA/LPA2).
pub const PA_LIMIT: u64 = 1 << 52;

/// Transfer flag: DONATE/LEND zero the range before the peer sees it; RECLAIM zeroes it (and
/// cleans to PoC) before the host sees it again; RELEASE asks the same on the peer's behalf.
pub const FLAG_CLEAR: u64 = 1 << 0;
/// Transfer flag: `x1` is a carveout index and `x2` (size) must be 0: the whole carveout.
pub const FLAG_BY_INDEX: u64 = 1 << 1;
const TRANSFER_FLAGS: u64 = FLAG_CLEAR | FLAG_BY_INDEX;

/// A peer processor, 1..=[`PeerId::MAX`]. 0 is never a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u8);

impl PeerId {
    /// The modem (Qualcomm MPSS) or, on qemu-virt, the simulated peer standing in for it.
    pub const MODEM: PeerId = PeerId(1);
    /// A DSP (Qualcomm ADSP/CDSP/SLPI).
    pub const DSP: PeerId = PeerId(2);
    /// The WLAN processor (Qualcomm WPSS on SC7280).
    pub const WLAN: PeerId = PeerId(3);
    pub const MAX: u8 = 63;

    pub const fn new(id: u8) -> Option<Self> {
        if id >= 1 && id <= Self::MAX { Some(PeerId(id)) } else { None }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// The peer a well-known name stands for (`"modem"`, `"dsp"`, `"wlan"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "modem" => Some(Self::MODEM),
            "dsp" => Some(Self::DSP),
            "wlan" => Some(Self::WLAN),
            _ => None,
        }
    }

    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("modem"),
            2 => Some("dsp"),
            3 => Some("wlan"),
            _ => None,
        }
    }

    fn decode(reg: u64) -> Result<Self, AbiError> {
        u8::try_from(reg).ok().and_then(Self::new).ok_or(AbiError::InvalidParameters)
    }
}

impl core::fmt::Display for PeerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "peer {}", self.0),
        }
    }
}

/// Which transfer kind a carveout accepts (its DT `warden,policy`); the other kind is `DENIED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Donate,
    Lend,
}

impl Policy {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "donate" => Some(Self::Donate),
            "lend" => Some(Self::Lend),
            _ => None,
        }
    }
}

/// State of a page range (docs/abi.md has the diagram). Encoded as `kind | peer << 8`.
///
/// ```text
///  Host --DONATE--> Donating(p) --> Donated(p) --RELEASE by p--> PeerReleased(p)
///  Host --LEND----> Lending(p)  --> Lent(p)    --RELEASE by p--> PeerReleased(p)
///  PeerReleased(p) --RECLAIM--> Reclaiming(p) --> Host
///  Host --assign_mem HLOS+p--> Sharing(p) --> Shared(p) --assign_mem HLOS--> Unsharing(p) --> Host
/// ```
/// `Shared` exists only through Qualcomm's `assign_mem` on the Snapdragon persona
/// (`docs/qcom-scm.md`), which also takes `Donated(p)`/`Lent(p)` back to `Host` through
/// `Reclaiming(p)` without the peer's RELEASE.
/// The `-ing` states are transient (a transfer in flight; calls on them get `BUSY`); a failed
/// transfer returns the range to the state it started from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeState {
    /// Owned by the host and mapped in its stage-2.
    Host,
    Donating(PeerId),
    /// Owned by the peer; unmapped from the host and its devices.
    Donated(PeerId),
    Lending(PeerId),
    /// Owned by the host, accessible only to the peer.
    Lent(PeerId),
    /// The peer gave it up; unmapped from everyone until the host reclaims it.
    PeerReleased(PeerId),
    Reclaiming(PeerId),
    /// Owned by the host, mapped for the host and the peer.
    Shared(PeerId),
    Sharing(PeerId),
    Unsharing(PeerId),
}

const KIND_HOST: u64 = 0;
const KIND_DONATING: u64 = 1;
const KIND_DONATED: u64 = 2;
const KIND_LENDING: u64 = 3;
const KIND_LENT: u64 = 4;
const KIND_RELEASED: u64 = 5;
const KIND_RECLAIMING: u64 = 6;
const KIND_SHARED: u64 = 7;
const KIND_SHARING: u64 = 8;
const KIND_UNSHARING: u64 = 9;
/// [`CarveoutState::Mixed`]: only in `CARVEOUT_INFO`.
const KIND_MIXED: u64 = 0xff;

impl RangeState {
    pub const fn encode(self) -> u64 {
        let (kind, peer) = match self {
            Self::Host => (KIND_HOST, 0),
            Self::Donating(p) => (KIND_DONATING, p.0),
            Self::Donated(p) => (KIND_DONATED, p.0),
            Self::Lending(p) => (KIND_LENDING, p.0),
            Self::Lent(p) => (KIND_LENT, p.0),
            Self::PeerReleased(p) => (KIND_RELEASED, p.0),
            Self::Reclaiming(p) => (KIND_RECLAIMING, p.0),
            Self::Shared(p) => (KIND_SHARED, p.0),
            Self::Sharing(p) => (KIND_SHARING, p.0),
            Self::Unsharing(p) => (KIND_UNSHARING, p.0),
        };
        kind | (peer as u64) << 8
    }

    pub fn decode(reg: u64) -> Result<Self, AbiError> {
        if reg >> 16 != 0 {
            return Err(AbiError::InvalidParameters);
        }
        let peer = || PeerId::decode(reg >> 8);
        Ok(match reg & 0xff {
            KIND_HOST if reg >> 8 == 0 => Self::Host,
            KIND_DONATING => Self::Donating(peer()?),
            KIND_DONATED => Self::Donated(peer()?),
            KIND_LENDING => Self::Lending(peer()?),
            KIND_LENT => Self::Lent(peer()?),
            KIND_RELEASED => Self::PeerReleased(peer()?),
            KIND_RECLAIMING => Self::Reclaiming(peer()?),
            KIND_SHARED => Self::Shared(peer()?),
            KIND_SHARING => Self::Sharing(peer()?),
            KIND_UNSHARING => Self::Unsharing(peer()?),
            _ => return Err(AbiError::InvalidParameters),
        })
    }

    /// A transfer is in flight: every call touching the range gets `BUSY`.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Donating(_)
                | Self::Lending(_)
                | Self::Reclaiming(_)
                | Self::Sharing(_)
                | Self::Unsharing(_)
        )
    }

    /// The peer the range is with, if any.
    pub const fn peer(self) -> Option<PeerId> {
        match self {
            Self::Host => None,
            Self::Donating(p)
            | Self::Donated(p)
            | Self::Lending(p)
            | Self::Lent(p)
            | Self::PeerReleased(p)
            | Self::Reclaiming(p)
            | Self::Shared(p)
            | Self::Sharing(p)
            | Self::Unsharing(p) => Some(p),
        }
    }
}

/// A carveout's state as `CARVEOUT_INFO` reports it: one state, or `Mixed` when sub-ranges
/// differ (use `RANGE_QUERY` to walk them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarveoutState {
    Uniform(RangeState),
    Mixed,
}

impl CarveoutState {
    pub const fn encode(self) -> u64 {
        match self {
            Self::Uniform(s) => s.encode(),
            Self::Mixed => KIND_MIXED,
        }
    }

    pub fn decode(reg: u64) -> Result<Self, AbiError> {
        if reg == KIND_MIXED { Ok(Self::Mixed) } else { RangeState::decode(reg).map(Self::Uniform) }
    }
}

/// Who owns a faulting IPA, as recorded with a violation. Encoded in 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// warden could not tell (no tracker, or the IPA is not in any known range).
    Unknown,
    Host,
    Warden,
    Peer(PeerId),
    /// Not memory at all (an MMIO range hidden from the host, such as the SMMU's).
    Device,
}

impl Owner {
    pub const fn encode(self) -> u32 {
        match self {
            Self::Unknown => 0,
            Self::Host => 1,
            Self::Warden => 2,
            Self::Device => 3,
            Self::Peer(p) => 0x100 | p.0 as u32,
        }
    }

    pub fn decode(value: u32) -> Result<Self, AbiError> {
        Ok(match value {
            0 => Self::Unknown,
            1 => Self::Host,
            2 => Self::Warden,
            3 => Self::Device,
            v if v & !0xff == 0x100 => Self::Peer(PeerId::decode(u64::from(v & 0xff))?),
            _ => return Err(AbiError::InvalidParameters),
        })
    }
}

impl core::fmt::Display for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unknown => f.write_str("unknown"),
            Self::Host => f.write_str("host"),
            Self::Warden => f.write_str("warden"),
            Self::Device => f.write_str("device"),
            Self::Peer(p) => write!(f, "{p}"),
        }
    }
}

/// Who made a call: the host or a peer (warden knows from the VMID it trapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Host,
    Peer(PeerId),
}

impl core::fmt::Display for Caller {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Peer(p) => write!(f, "{p}"),
        }
    }
}

/// What a transfer call names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A whole carveout by its `CARVEOUT_INFO` index ([`FLAG_BY_INDEX`], size register 0).
    Carveout(u32),
    /// A page-aligned, non-empty range that must lie inside one carveout.
    Range { base: u64, size: u64 },
}

impl Target {
    /// `(x1, x2, flag bits)`.
    const fn encode(self) -> (u64, u64, u64) {
        match self {
            Self::Carveout(index) => (index as u64, 0, FLAG_BY_INDEX),
            Self::Range { base, size } => (base, size, 0),
        }
    }

    fn decode(x1: u64, x2: u64, flags: u64) -> Result<Self, AbiError> {
        if flags & FLAG_BY_INDEX != 0 {
            let index = u32::try_from(x1).map_err(|_| AbiError::InvalidParameters)?;
            if x2 != 0 {
                return Err(AbiError::InvalidParameters);
            }
            Ok(Self::Carveout(index))
        } else {
            check_range(x1, x2)?;
            Ok(Self::Range { base: x1, size: x2 })
        }
    }
}

/// Whether `[base, base + size)` is a valid range argument: non-empty, page-aligned, not
/// wrapping, below [`PA_LIMIT`]. Every failure is `INVALID_PARAMETERS`.
pub const fn check_range(base: u64, size: u64) -> Result<(), AbiError> {
    if size == 0 || !base.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return Err(AbiError::InvalidParameters);
    }
    match base.checked_add(size) {
        Some(end) if end <= PA_LIMIT => Ok(()),
        _ => Err(AbiError::InvalidParameters),
    }
}

/// DONATE or LEND arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub target: Target,
    pub peer: PeerId,
    /// [`FLAG_CLEAR`]: zero the range before the peer sees it.
    pub clear: bool,
}

/// RECLAIM or RELEASE arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Return {
    pub target: Target,
    /// [`FLAG_CLEAR`]: zero the range (and clean to PoC) before the host sees it again.
    pub clear: bool,
}

fn transfer_flags(target: Target, clear: bool) -> (u64, u64, u64) {
    let (x1, x2, mut flags) = target.encode();
    if clear {
        flags |= FLAG_CLEAR;
    }
    (x1, x2, flags)
}

fn decode_flags(flags: u64) -> Result<bool, AbiError> {
    if flags & !TRANSFER_FLAGS != 0 {
        return Err(AbiError::InvalidParameters);
    }
    Ok(flags & FLAG_CLEAR != 0)
}

/// A decoded call from `x0..x7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    CarveoutCount,
    CarveoutInfo { index: u32 },
    RangeQuery { addr: u64 },
    Donate(Transfer),
    Lend(Transfer),
    Reclaim(Return),
    Release(Return),
    ViolationCount,
    ViolationInfo { seq: u64 },
}

/// `regs[from..]` all zero, else `INVALID_PARAMETERS`.
fn unused_zero(regs: &[u64; 8], from: usize) -> Result<(), AbiError> {
    if regs.iter().skip(from).all(|&r| r == 0) { Ok(()) } else { Err(AbiError::InvalidParameters) }
}

impl Request {
    pub const fn function_id(&self) -> u32 {
        match self {
            Self::CarveoutCount => CARVEOUT_COUNT,
            Self::CarveoutInfo { .. } => CARVEOUT_INFO,
            Self::RangeQuery { .. } => RANGE_QUERY,
            Self::Donate(_) => DONATE,
            Self::Lend(_) => LEND,
            Self::Reclaim(_) => RECLAIM,
            Self::Release(_) => RELEASE,
            Self::ViolationCount => VIOLATION_COUNT,
            Self::ViolationInfo { .. } => VIOLATION_INFO,
        }
    }

    /// `x0..x7` for the call; unused registers zero.
    pub fn encode(&self) -> [u64; 8] {
        let mut regs = [0u64; 8];
        regs[0] = u64::from(self.function_id());
        match *self {
            Self::CarveoutCount | Self::ViolationCount => {}
            Self::CarveoutInfo { index } => regs[1] = u64::from(index),
            Self::RangeQuery { addr } => regs[1] = addr,
            Self::ViolationInfo { seq } => regs[1] = seq,
            Self::Donate(t) | Self::Lend(t) => {
                let (x1, x2, flags) = transfer_flags(t.target, t.clear);
                regs[1..5].copy_from_slice(&[x1, x2, u64::from(t.peer.0), flags]);
            }
            Self::Reclaim(r) | Self::Release(r) => {
                let (x1, x2, flags) = transfer_flags(r.target, r.clear);
                regs[1..4].copy_from_slice(&[x1, x2, flags]);
            }
        }
        regs
    }

    /// Decodes `x0..x7`. `Ok(None)`: not one of this module's calls (another owner or number;
    /// the router handles or refuses it). The SMC32 twin of an SMC64 call (or the reverse) is
    /// `NOT_SUPPORTED`; for the SMC32 `CARVEOUT_COUNT` the upper halves of `x1..x7` are ignored
    /// as SMCCC requires, but the lower halves must still be zero.
    ///
    /// This checks the function ID and the arguments, not the caller: a call decoded for a
    /// caller goes through [`WardenCall::identify`] and [`WardenCall::allowed_for`] first
    /// (see [`crate::calls`]), so that `DENIED` comes before `INVALID_PARAMETERS`.
    pub fn decode(regs: &[u64; 8]) -> Result<Option<Self>, AbiError> {
        let fid = regs[0] as u32;
        let Some(&known) =
            CALLS.iter().find(|&&c| c | crate::smccc::CONV_64 == fid | crate::smccc::CONV_64)
        else {
            return Ok(None);
        };
        if known != fid {
            return Err(AbiError::NotSupported);
        }
        let request = match fid {
            CARVEOUT_COUNT => {
                let mut low = *regs;
                for r in low.iter_mut().skip(1) {
                    *r &= 0xffff_ffff;
                }
                unused_zero(&low, 1)?;
                Self::CarveoutCount
            }
            CARVEOUT_INFO => {
                unused_zero(regs, 2)?;
                let index = u32::try_from(regs[1]).map_err(|_| AbiError::InvalidParameters)?;
                Self::CarveoutInfo { index }
            }
            RANGE_QUERY => {
                unused_zero(regs, 2)?;
                if regs[1] >= PA_LIMIT {
                    return Err(AbiError::InvalidParameters);
                }
                Self::RangeQuery { addr: regs[1] }
            }
            DONATE | LEND => {
                unused_zero(regs, 5)?;
                let clear = decode_flags(regs[4])?;
                let target = Target::decode(regs[1], regs[2], regs[4])?;
                let transfer = Transfer { target, peer: PeerId::decode(regs[3])?, clear };
                if fid == DONATE { Self::Donate(transfer) } else { Self::Lend(transfer) }
            }
            RECLAIM | RELEASE => {
                unused_zero(regs, 4)?;
                let clear = decode_flags(regs[3])?;
                let back = Return { target: Target::decode(regs[1], regs[2], regs[3])?, clear };
                if fid == RECLAIM { Self::Reclaim(back) } else { Self::Release(back) }
            }
            VIOLATION_COUNT => {
                unused_zero(regs, 1)?;
                Self::ViolationCount
            }
            _ => {
                unused_zero(regs, 2)?;
                Self::ViolationInfo { seq: regs[1] }
            }
        };
        Ok(Some(request))
    }

    /// The call this request is.
    pub const fn call(&self) -> WardenCall {
        match self {
            Self::CarveoutCount => WardenCall::CarveoutCount,
            Self::CarveoutInfo { .. } => WardenCall::CarveoutInfo,
            Self::RangeQuery { .. } => WardenCall::RangeQuery,
            Self::Donate(_) => WardenCall::Donate,
            Self::Lend(_) => WardenCall::Lend,
            Self::Reclaim(_) => WardenCall::Reclaim,
            Self::Release(_) => WardenCall::Release,
            Self::ViolationCount => WardenCall::ViolationCount,
            Self::ViolationInfo { .. } => WardenCall::ViolationInfo,
        }
    }

    /// Whether `caller` may make this call ([`WardenCall::allowed_for`]): DONATE, LEND and
    /// RECLAIM are the host's, RELEASE is a peer's; queries are open to both. Otherwise
    /// `DENIED`.
    pub const fn allowed_for(&self, caller: Caller) -> Result<(), AbiError> {
        self.call().allowed_for(caller)
    }
}

/// `x0..x7` for a failed call: the code in `x0`, the rest zero.
pub const fn encode_error(error: AbiError) -> [u64; 8] {
    [error.register(), 0, 0, 0, 0, 0, 0, 0]
}

/// Checks `x0` of a response and that registers from `used` on are zero.
fn decode_status(regs: &[u64; 8], used: usize) -> Result<(), AbiError> {
    let status = regs[0] as i64;
    if status != SUCCESS {
        return Err(AbiError::from_code(status).unwrap_or(AbiError::Unknown(status)));
    }
    unused_zero(regs, used)
}

/// Reply of `CARVEOUT_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarveoutCount {
    pub count: u32,
}

impl CarveoutCount {
    pub fn encode(&self) -> [u64; 8] {
        [0, u64::from(self.count), 0, 0, 0, 0, 0, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 2)?;
        let count = u32::try_from(regs[1]).map_err(|_| AbiError::InvalidParameters)?;
        Ok(Self { count })
    }
}

/// `CARVEOUT_INFO` attribute bit: the carveout is always scrubbed on reclaim.
pub const ATTR_CLEAR_ON_RECLAIM: u64 = 1 << 16;
const ATTR_POLICY_LEND: u64 = 1 << 8;

/// Reply of `CARVEOUT_INFO`: `x1` base, `x2` size, `x3` attributes (peer in bits 7:0, policy
/// in bit 8 (0 donate, 1 lend), [`ATTR_CLEAR_ON_RECLAIM`]), `x4` [`CarveoutState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarveoutInfo {
    pub base: u64,
    pub size: u64,
    pub peer: PeerId,
    pub policy: Policy,
    pub clear_on_reclaim: bool,
    pub state: CarveoutState,
}

impl CarveoutInfo {
    pub fn encode(&self) -> [u64; 8] {
        let mut attrs = u64::from(self.peer.0);
        if self.policy == Policy::Lend {
            attrs |= ATTR_POLICY_LEND;
        }
        if self.clear_on_reclaim {
            attrs |= ATTR_CLEAR_ON_RECLAIM;
        }
        [0, self.base, self.size, attrs, self.state.encode(), 0, 0, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 5)?;
        let attrs = regs[3];
        if attrs & !(0xff | ATTR_POLICY_LEND | ATTR_CLEAR_ON_RECLAIM) != 0 {
            return Err(AbiError::InvalidParameters);
        }
        check_range(regs[1], regs[2])?;
        Ok(Self {
            base: regs[1],
            size: regs[2],
            peer: PeerId::decode(attrs & 0xff)?,
            policy: if attrs & ATTR_POLICY_LEND != 0 { Policy::Lend } else { Policy::Donate },
            clear_on_reclaim: attrs & ATTR_CLEAR_ON_RECLAIM != 0,
            state: CarveoutState::decode(regs[4])?,
        })
    }
}

/// Reply of `RANGE_QUERY`: the largest run of pages around the address, inside its carveout,
/// that share one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeInfo {
    pub base: u64,
    pub size: u64,
    pub state: RangeState,
    pub carveout: u32,
}

impl RangeInfo {
    pub fn encode(&self) -> [u64; 8] {
        [0, self.base, self.size, self.state.encode(), u64::from(self.carveout), 0, 0, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 5)?;
        check_range(regs[1], regs[2])?;
        Ok(Self {
            base: regs[1],
            size: regs[2],
            state: RangeState::decode(regs[3])?,
            carveout: u32::try_from(regs[4]).map_err(|_| AbiError::InvalidParameters)?,
        })
    }
}

/// Reply of DONATE, LEND, RECLAIM and RELEASE: the range the call acted on (useful with
/// [`Target::Carveout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferDone {
    pub base: u64,
    pub size: u64,
}

impl TransferDone {
    pub fn encode(&self) -> [u64; 8] {
        [0, self.base, self.size, 0, 0, 0, 0, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 3)?;
        check_range(regs[1], regs[2])?;
        Ok(Self { base: regs[1], size: regs[2] })
    }
}

/// Reply of `VIOLATION_COUNT`. Incidents are numbered from 0 in the order warden first saw
/// them; the ring holds `oldest..incidents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViolationCount {
    /// Distinct incidents so far (= the next sequence number).
    pub incidents: u64,
    /// Sequence number of the oldest incident still held (= `incidents` when none is).
    pub oldest: u64,
    /// Refused accesses so far, repeats included.
    pub accesses: u64,
}

impl ViolationCount {
    pub fn encode(&self) -> [u64; 8] {
        [0, self.incidents, self.oldest, self.accesses, 0, 0, 0, 0]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 4)?;
        let count = Self { incidents: regs[1], oldest: regs[2], accesses: regs[3] };
        if count.oldest > count.incidents || count.accesses < count.incidents {
            return Err(AbiError::InvalidParameters);
        }
        Ok(count)
    }
}

/// How the refused access was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Bytes, when the syndrome says (ISV): 1, 2, 4, 8 or 16.
    pub size: Option<u8>,
    pub write: bool,
    /// An instruction fetch (instruction abort) rather than a data access.
    pub fetch: bool,
}

const ACCESS_SIZE_VALID: u64 = 1 << 4;
const ACCESS_WRITE: u64 = 1 << 5;
const ACCESS_FETCH: u64 = 1 << 6;
const ACCESS_IPA_VALID: u64 = 1 << 7;
const ACCESS_VA_VALID: u64 = 1 << 8;
const ACCESS_BITS: u64 =
    0xf | ACCESS_SIZE_VALID | ACCESS_WRITE | ACCESS_FETCH | ACCESS_IPA_VALID | ACCESS_VA_VALID;

/// Reply of `VIOLATION_INFO`: `x1` IPA, `x2` VA, `x3` ELR, `x4` ESR, `x5` access word (bits 3:0
/// log2 of the size, 4 size valid, 5 write, 6 fetch, 7 IPA valid, 8 VA valid), `x6` owner
/// (bits 31:0) and CPU index (bits 63:32), `x7` accesses counted for this incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViolationInfo {
    /// `None` when the syndrome gives no IPA (FAR not valid, or not a stage-2 walk fault).
    pub ipa: Option<u64>,
    /// `None` when FAR is not valid (FnV).
    pub va: Option<u64>,
    pub elr: u64,
    pub esr: u64,
    pub access: Access,
    pub owner: Owner,
    /// Index of the CPU that first made the access.
    pub cpu: u32,
    /// Accesses recorded for this incident (1 the first time).
    pub count: u64,
}

impl ViolationInfo {
    pub fn encode(&self) -> [u64; 8] {
        let mut access = 0;
        if let Some(size) = self.access.size {
            access |= ACCESS_SIZE_VALID | u64::from(size.trailing_zeros() & 0xf);
        }
        if self.access.write {
            access |= ACCESS_WRITE;
        }
        if self.access.fetch {
            access |= ACCESS_FETCH;
        }
        if self.ipa.is_some() {
            access |= ACCESS_IPA_VALID;
        }
        if self.va.is_some() {
            access |= ACCESS_VA_VALID;
        }
        let owner_cpu = u64::from(self.owner.encode()) | u64::from(self.cpu) << 32;
        [
            0,
            self.ipa.unwrap_or(0),
            self.va.unwrap_or(0),
            self.elr,
            self.esr,
            access,
            owner_cpu,
            self.count,
        ]
    }

    pub fn decode(regs: &[u64; 8]) -> Result<Self, AbiError> {
        decode_status(regs, 8)?;
        let access = regs[5];
        let bad = AbiError::InvalidParameters;
        if access & !ACCESS_BITS != 0 || regs[7] == 0 {
            return Err(bad);
        }
        let optional = |valid: u64, value: u64| match (access & valid != 0, value) {
            (true, v) => Ok(Some(v)),
            (false, 0) => Ok(None),
            (false, _) => Err(bad),
        };
        let size = match (access & ACCESS_SIZE_VALID != 0, access & 0xf) {
            (true, log2 @ 0..=4) => Some(1u8 << log2),
            (false, 0) => None,
            _ => return Err(bad),
        };
        Ok(Self {
            ipa: optional(ACCESS_IPA_VALID, regs[1])?,
            va: optional(ACCESS_VA_VALID, regs[2])?,
            elr: regs[3],
            esr: regs[4],
            access: Access {
                size,
                write: access & ACCESS_WRITE != 0,
                fetch: access & ACCESS_FETCH != 0,
            },
            owner: Owner::decode(regs[6] as u32)?,
            cpu: (regs[6] >> 32) as u32,
            count: regs[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7e00_0000;
    const SIZE: u64 = 0x100_0000;

    fn regs(values: &[u64]) -> [u64; 8] {
        let mut r = [0u64; 8];
        r[..values.len()].copy_from_slice(values);
        r
    }

    fn decode(values: &[u64]) -> Result<Option<Request>, AbiError> {
        Request::decode(&regs(values))
    }

    fn every_request() -> [Request; 13] {
        let range = Target::Range { base: BASE, size: SIZE };
        [
            Request::CarveoutCount,
            Request::CarveoutInfo { index: 7 },
            Request::RangeQuery { addr: BASE + 0x123 },
            Request::Donate(Transfer { target: range, peer: PeerId::MODEM, clear: false }),
            Request::Donate(Transfer {
                target: Target::Carveout(1),
                peer: PeerId::DSP,
                clear: true,
            }),
            Request::Lend(Transfer { target: range, peer: PeerId::DSP, clear: true }),
            Request::Lend(Transfer {
                target: Target::Carveout(0),
                peer: PeerId::MODEM,
                clear: false,
            }),
            Request::Reclaim(Return { target: range, clear: true }),
            Request::Reclaim(Return { target: Target::Carveout(u32::MAX), clear: false }),
            Request::Release(Return { target: range, clear: false }),
            Request::Release(Return { target: Target::Carveout(3), clear: true }),
            Request::ViolationCount,
            Request::ViolationInfo { seq: u64::MAX },
        ]
    }

    #[test]
    fn function_ids_are_stable() {
        assert_eq!(CARVEOUT_COUNT, 0x8600_0010);
        assert_eq!(CARVEOUT_INFO, 0xC600_0011);
        assert_eq!(RANGE_QUERY, 0xC600_0012);
        assert_eq!(DONATE, 0xC600_0020);
        assert_eq!(LEND, 0xC600_0021);
        assert_eq!(RECLAIM, 0xC600_0022);
        assert_eq!(RELEASE, 0xC600_0023);
        assert_eq!(VIOLATION_COUNT, 0xC600_0030);
        assert_eq!(VIOLATION_INFO, 0xC600_0031);
        for fid in CALLS {
            assert_eq!(crate::smccc::owner(fid), OWNER_VENDOR_HYP);
            assert_ne!(fid, crate::hyp::ABI_VERSION);
        }
    }

    #[test]
    fn requests_round_trip() {
        for request in every_request() {
            let encoded = request.encode();
            assert_eq!(encoded[0], u64::from(request.function_id()));
            assert_eq!(Request::decode(&encoded), Ok(Some(request)), "{request:?}");
        }
    }

    #[test]
    fn every_unused_register_and_bit_is_refused() {
        for request in every_request() {
            let good = request.encode();
            for reg in 1..8 {
                // SMCCC: an SMC32 callee ignores the upper halves (tested separately).
                let bits = if request == Request::CarveoutCount { 32 } else { 64 };
                for bit in 0..bits {
                    let mut bad = good;
                    bad[reg] ^= 1 << bit;
                    let Ok(Some(decoded)) = Request::decode(&bad) else { continue };
                    // A flipped bit may only ever be accepted as a *different* valid value of
                    // a defined field, never silently dropped.
                    assert_ne!(decoded, request, "reg x{reg} bit {bit} ignored for {request:?}");
                    assert_eq!(decoded.encode(), bad, "reg x{reg} bit {bit} for {request:?}");
                }
            }
        }
    }

    #[test]
    fn smc32_count_ignores_upper_halves_only() {
        let call = |x1| decode(&[u64::from(CARVEOUT_COUNT), x1]);
        assert_eq!(call(0xffff_ffff_0000_0000), Ok(Some(Request::CarveoutCount)));
        assert_eq!(call(1), Err(AbiError::InvalidParameters));
        // The function ID is read from w0.
        assert_eq!(
            decode(&[0xdead_beef_0000_0000 | u64::from(CARVEOUT_COUNT)]),
            Ok(Some(Request::CarveoutCount))
        );
    }

    #[test]
    fn wrong_convention_is_not_supported_and_others_are_not_ours() {
        for fid in CALLS {
            let twin = fid ^ crate::smccc::CONV_64;
            assert_eq!(decode(&[u64::from(twin)]), Err(AbiError::NotSupported), "{twin:#x}");
        }
        for fid in [crate::hyp::ABI_VERSION, crate::hyp::CALL_UID, 0xC600_0024, 0x8400_0000] {
            assert_eq!(decode(&[u64::from(fid)]), Ok(None));
        }
    }

    #[test]
    fn bad_ranges() {
        let donate =
            |base, size, peer, flags| decode(&[u64::from(DONATE), base, size, peer, flags]);
        let bad = Err(AbiError::InvalidParameters);
        assert!(donate(BASE, SIZE, 1, 0).is_ok());
        assert_eq!(donate(BASE, 0, 1, 0), bad, "zero size");
        assert_eq!(donate(BASE + 0x800, SIZE, 1, 0), bad, "unaligned base");
        assert_eq!(donate(BASE, SIZE + 8, 1, 0), bad, "unaligned size");
        assert_eq!(donate(u64::MAX - 0xfff, 0x2000, 1, 0), bad, "wraps");
        assert_eq!(donate(PA_LIMIT - 0x1000, 0x2000, 1, 0), bad, "beyond the PA space");
        assert!(donate(PA_LIMIT - 0x1000, 0x1000, 1, 0).is_ok());
        assert_eq!(donate(BASE, SIZE, 0, 0), bad, "peer 0");
        assert_eq!(donate(BASE, SIZE, 64, 0), bad, "peer above MAX");
        assert_eq!(donate(BASE, SIZE, 0x101, 0), bad, "peer upper bits");
        assert_eq!(donate(BASE, SIZE, 1, 1 << 2), bad, "reserved flag");
        assert_eq!(donate(1, 4096, 1, FLAG_BY_INDEX), bad, "size with BY_INDEX");
        assert_eq!(donate(1 << 32, 0, 1, FLAG_BY_INDEX), bad, "index above 32 bits");
        let reclaim = |base, size, flags| decode(&[u64::from(RECLAIM), base, size, flags]);
        assert_eq!(reclaim(BASE, 0, FLAG_CLEAR), bad);
        assert_eq!(reclaim(BASE, SIZE, 1 << 63), bad);
        assert_eq!(decode(&[u64::from(RANGE_QUERY), PA_LIMIT]), bad);
        assert_eq!(decode(&[u64::from(CARVEOUT_INFO), 1 << 32]), bad);
    }

    #[test]
    fn callers() {
        let modem = Caller::Peer(PeerId::MODEM);
        for request in every_request() {
            let (host, peer) = (request.allowed_for(Caller::Host), request.allowed_for(modem));
            match request {
                Request::Donate(_) | Request::Lend(_) | Request::Reclaim(_) => {
                    assert_eq!((host, peer), (Ok(()), Err(AbiError::Denied)));
                }
                Request::Release(_) => assert_eq!((host, peer), (Err(AbiError::Denied), Ok(()))),
                _ => assert_eq!((host, peer), (Ok(()), Ok(()))),
            }
        }
    }

    #[test]
    fn states_round_trip_and_refuse_garbage() {
        let p = PeerId::DSP;
        let states = [
            RangeState::Host,
            RangeState::Donating(p),
            RangeState::Donated(p),
            RangeState::Lending(p),
            RangeState::Lent(p),
            RangeState::PeerReleased(p),
            RangeState::Reclaiming(p),
            RangeState::Shared(p),
            RangeState::Sharing(p),
            RangeState::Unsharing(p),
        ];
        for s in states {
            assert_eq!(RangeState::decode(s.encode()), Ok(s));
            assert_eq!(CarveoutState::decode(s.encode()), Ok(CarveoutState::Uniform(s)));
            assert_eq!(s.peer(), if s == RangeState::Host { None } else { Some(p) });
        }
        assert_eq!(RangeState::Lent(p).encode(), 0x204);
        assert_eq!(RangeState::Shared(p).encode(), 0x207);
        assert_eq!(CarveoutState::decode(0xff), Ok(CarveoutState::Mixed));
        assert_eq!(CarveoutState::Mixed.encode(), 0xff);
        let transient: usize = states.iter().filter(|s| s.is_transient()).count();
        assert_eq!(transient, 5);
        for bad in [0x100, 0x2, 0x7, 0xa, 0x10a, 0x1_0204, 0x8000_0000_0000_0000, 0x4002, 0xfe] {
            assert_eq!(RangeState::decode(bad), Err(AbiError::InvalidParameters), "{bad:#x}");
        }
        assert!(RangeState::decode(0xff).is_err());
    }

    #[test]
    fn owners_and_peers() {
        for owner in [
            Owner::Unknown,
            Owner::Host,
            Owner::Warden,
            Owner::Device,
            Owner::Peer(PeerId::MODEM),
            Owner::Peer(PeerId::new(63).unwrap()),
        ] {
            assert_eq!(Owner::decode(owner.encode()), Ok(owner));
        }
        for bad in [4, 0x100, 0x140, 0x200, 0x1_0101, u32::MAX] {
            assert_eq!(Owner::decode(bad), Err(AbiError::InvalidParameters), "{bad:#x}");
        }
        assert_eq!(PeerId::from_name("modem"), Some(PeerId::MODEM));
        assert_eq!(PeerId::from_name("dsp"), Some(PeerId::DSP));
        assert_eq!(PeerId::from_name("wlan"), Some(PeerId::WLAN));
        assert_eq!(PeerId::WLAN.name(), Some("wlan"));
        assert_eq!(PeerId::from_name("gpu"), None);
        assert_eq!(PeerId::MODEM.name(), Some("modem"));
        assert_eq!(PeerId::new(0), None);
        assert_eq!(PeerId::new(64), None);
        assert_eq!(Policy::from_name("lend"), Some(Policy::Lend));
        assert_eq!(Policy::from_name("Lend"), None);
    }

    #[test]
    fn responses_round_trip() {
        let count = CarveoutCount { count: 2 };
        assert_eq!(CarveoutCount::decode(&count.encode()), Ok(count));
        let info = CarveoutInfo {
            base: BASE,
            size: SIZE,
            peer: PeerId::DSP,
            policy: Policy::Lend,
            clear_on_reclaim: true,
            state: CarveoutState::Mixed,
        };
        assert_eq!(info.encode()[3], 0x1_0102);
        assert_eq!(CarveoutInfo::decode(&info.encode()), Ok(info));
        let range = RangeInfo {
            base: BASE,
            size: 0x2000,
            state: RangeState::Donated(PeerId::MODEM),
            carveout: 1,
        };
        assert_eq!(RangeInfo::decode(&range.encode()), Ok(range));
        let done = TransferDone { base: BASE, size: SIZE };
        assert_eq!(TransferDone::decode(&done.encode()), Ok(done));
        let vc = ViolationCount { incidents: 70, oldest: 6, accesses: 1000 };
        assert_eq!(ViolationCount::decode(&vc.encode()), Ok(vc));
        let vi = ViolationInfo {
            ipa: Some(0x7e00_0008),
            va: Some(0xffff_0000_7e00_0008),
            elr: 0xffff_8000_1000_0000,
            esr: 0x93c1_8047,
            access: Access { size: Some(8), write: true, fetch: false },
            owner: Owner::Peer(PeerId::MODEM),
            cpu: 1,
            count: 3,
        };
        assert_eq!(vi.encode()[5], 0x1b3);
        assert_eq!(ViolationInfo::decode(&vi.encode()), Ok(vi));
        let unknown = ViolationInfo {
            ipa: None,
            va: None,
            access: Access { size: None, write: false, fetch: true },
            owner: Owner::Unknown,
            ..vi
        };
        assert_eq!(ViolationInfo::decode(&unknown.encode()), Ok(unknown));
        for size in [1u8, 2, 4, 16] {
            let v = ViolationInfo { access: Access { size: Some(size), ..vi.access }, ..vi };
            assert_eq!(ViolationInfo::decode(&v.encode()), Ok(v));
        }
    }

    #[test]
    fn responses_refuse_errors_and_garbage() {
        let err = encode_error(AbiError::PeerHolds);
        assert_eq!(err[0] as i64, -9);
        assert_eq!(TransferDone::decode(&err), Err(AbiError::PeerHolds));
        assert_eq!(CarveoutCount::decode(&regs(&[(-42i64) as u64])), Err(AbiError::Unknown(-42)));
        let bad = Some(AbiError::InvalidParameters);
        assert_eq!(CarveoutCount::decode(&regs(&[0, 1, 0, 0, 0, 0, 0, 9])).err(), bad);
        assert_eq!(TransferDone::decode(&regs(&[0, BASE, 0])).err(), bad);
        assert_eq!(CarveoutInfo::decode(&regs(&[0, BASE, SIZE, 1 | 1 << 9, 0])).err(), bad);
        assert_eq!(CarveoutInfo::decode(&regs(&[0, BASE, SIZE, 0, 0])).err(), bad, "peer 0");
        assert_eq!(ViolationCount::decode(&regs(&[0, 5, 6, 9])).err(), bad, "oldest after next");
        assert_eq!(ViolationCount::decode(&regs(&[0, 5, 0, 4])).err(), bad, "fewer accesses");
        let vi = [0, 0x1000, 0, 0, 0, 0x80, 1, 1];
        assert!(ViolationInfo::decode(&vi).is_ok());
        for (reg, value) in [(5, 0x200), (5, 0x15), (2, 1), (7, 0), (6, 0x4)] {
            let mut r = vi;
            r[reg] = value;
            assert_eq!(ViolationInfo::decode(&r).err(), bad, "x{reg} = {value:#x}");
        }
        let mut r = vi;
        r[1] = 0;
        r[5] = 0;
        r[1] = 5;
        assert_eq!(ViolationInfo::decode(&r).err(), bad, "IPA without its valid bit");
    }
}
