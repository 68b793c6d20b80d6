//! Host stream table entries: finding the host's STE for a stream (linear or 2-level table,
//! host memory only), validating it, and deriving the real STE warden installs.
//!
//! Policy for every STE field (IHI 0070, 5.2), given what [`super::regs::Advertised`] says:
//! - **V = 0** → real V = 0: the real SMMU aborts and records C_BAD_STE per transaction,
//!   exactly what the host's own STE asks for.
//! - **Config 0b0xx** (abort, and the reserved values that behave as abort) → real abort.
//! - **Config 0b100** (bypass) → real stage-2-only translation over warden's host stage 2:
//!   the host gets its identity view, never real bypass.
//! - **Config 0b101** (stage 1) → real nested (0b111) under warden's host stage 2 and host
//!   VMID, whose S1ContextPtr is warden's shadow of the host's CD (see [`super::cd`]), never
//!   the host's CD itself; S1STALLD = 1.
//! - **Refused** (C_BAD_STE, real V = 0): Config 0b11x (stage 2 is not advertised, ILLEGAL),
//!   S1STALLD = 1 with stage 1 (STALL_MODEL = 0b01 makes it ILLEGAL), an S1ContextPtr above
//!   the advertised OAS, non-zero RES0 bits [58:56].
//! - **Ignored** (never copied into the real STE, so harmless whatever their value):
//!   S1Fmt/S1CDMax/S1DSS (no substreams: SSIDSIZE = 0), EATS (no ATS), STRW (no HYP: RES0),
//!   the S2* fields (host stage 2 is never enabled), the attribute and permission overrides
//!   MemAttr/MTCFG/ALLOCCFG/SHCFG/NSCFG/PRIVCFG/INSTCFG (IDR1.ATTR_*_OVR = 0), DRE, DCP,
//!   CONT, PPAR, MEV, S2FWB, S1PIE, S1MPAM, SW_RESERVED and words 4..7.

use crate::smmu::regs::{Features, IDR0_STALL_MODEL_SUPPORTED};
use crate::smmu::regs::{STRTAB_BASE_ADDR_MASK, STRTAB_CFG_SPLIT_SHIFT};
use crate::smmu::regs::{STRTAB_CFG_FMT_SHIFT, STRTAB_CFG_LOG2SIZE_MASK};
use crate::smmu::ste::{S2Config, S2ConfigError, STE_SIZE, STE_WORDS, Ste};

use super::GuestMemory;
use super::evtq::{self, EventRecord};
use super::regs::Advertised;

const STE0_V: u64 = 1;
const STE0_CONFIG_SHIFT: u32 = 1;
const STE0_CTXPTR_MASK: u64 = 0x00ff_ffff_ffff_ffc0; // [55:6]
const STE0_RES0: u64 = 0x7 << 56;
const STE1_S1CIR_SHIFT: u32 = 2;
const STE1_S1COR_SHIFT: u32 = 4;
const STE1_S1CSH_SHIFT: u32 = 6;
const STE1_S1STALLD: u64 = 1 << 27;
const CONFIG_BYPASS: u64 = 0b100;
const CONFIG_S1: u64 = 0b101;
const CONFIG_NESTED: u64 = 0b111;
/// S1CIR/S1COR = write-back read/write-allocate, S1CSH = inner shareable.
const CD_FETCH_WB: u64 = 0b01;
const CD_FETCH_INNER_SHAREABLE: u64 = 0b11;
const L1_SPAN_MASK: u64 = 0x1f;
const L1_L2PTR_MASK: u64 = 0x000f_ffff_ffff_ffc0;

/// Why a host STE could not be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteFault {
    /// Beyond the host's stream table, or its L1 descriptor is invalid: C_BAD_STREAMID.
    BadStreamId,
    /// The L1 descriptor has a reserved Span above SPLIT + 1: C_BAD_STE.
    BadL1Span,
    /// The STE or L1 descriptor at this address is not readable host memory: F_STE_FETCH.
    Fetch(u64),
}

impl SteFault {
    pub fn event(&self, sid: u32) -> EventRecord {
        match self {
            SteFault::BadStreamId => evtq::bad_streamid(sid),
            SteFault::BadL1Span => evtq::bad_ste(sid),
            SteFault::Fetch(addr) => evtq::ste_fetch(sid, *addr),
        }
    }
}

fn low_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// The host address of `sid`'s STE under STRTAB_BASE / STRTAB_BASE_CFG.
pub fn locate_ste<M: GuestMemory + ?Sized>(
    mem: &M,
    strtab_base: u64,
    strtab_cfg: u32,
    sid: u32,
    adv: &Advertised,
) -> Result<u64, SteFault> {
    let log2size = strtab_cfg & STRTAB_CFG_LOG2SIZE_MASK;
    // StreamIDs at or above 2^min(LOG2SIZE, SIDSIZE) are out of range.
    if u64::from(sid) > low_mask(log2size.min(adv.sid_bits)) {
        return Err(SteFault::BadStreamId);
    }
    let addr = strtab_base & STRTAB_BASE_ADDR_MASK;
    if (strtab_cfg >> STRTAB_CFG_FMT_SHIFT) & 3 != 1 {
        // Linear (FMT 0b00, and the reserved values that behave as it): aligned to its size.
        let base = addr & !low_mask(log2size + 6);
        return Ok(base + u64::from(sid) * STE_SIZE);
    }
    let split = match (strtab_cfg >> STRTAB_CFG_SPLIT_SHIFT) & 0x1f {
        s @ (6 | 8 | 10) => s,
        _ => 6, // reserved values behave as 6
    };
    let l1_align = 6u32.max((log2size.saturating_sub(split) + 3).min(63));
    let l1_base = addr & !low_mask(l1_align);
    let l1_addr = l1_base + u64::from(sid >> split.min(31)) * 8;
    let mut desc = [0u8; 8];
    mem.read(l1_addr, &mut desc).map_err(|_| SteFault::Fetch(l1_addr))?;
    let desc = u64::from_le_bytes(desc);
    let span = (desc & L1_SPAN_MASK) as u32;
    if span == 0 || span >= 12 {
        return Err(SteFault::BadStreamId);
    }
    if span > split + 1 {
        return Err(SteFault::BadL1Span);
    }
    let l2_index = u64::from(sid) & low_mask(split);
    if l2_index > low_mask(span - 1) {
        return Err(SteFault::BadStreamId);
    }
    let l2_base = desc & L1_L2PTR_MASK & !low_mask(5 + span);
    Ok(l2_base + l2_index * STE_SIZE)
}

/// Reads `sid`'s host STE (one 64-byte read: the copy warden validates is the copy it uses).
pub fn read_host_ste<M: GuestMemory + ?Sized>(
    mem: &M,
    strtab_base: u64,
    strtab_cfg: u32,
    sid: u32,
    adv: &Advertised,
) -> Result<[u64; STE_WORDS], SteFault> {
    let addr = locate_ste(mem, strtab_base, strtab_cfg, sid, adv)?;
    let mut bytes = [0u8; STE_SIZE as usize];
    mem.read(addr, &mut bytes).map_err(|_| SteFault::Fetch(addr))?;
    let mut words = [0u64; STE_WORDS];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    Ok(words)
}

/// The stage-1 context a host STE points at (attributes are the host's CD fetch attributes,
/// which only matter for warden's copy: the shadow CD is warden memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage1Context {
    /// S1ContextPtr: host IPA of the (single) context descriptor.
    pub ctx_ptr: u64,
    pub cir: u8,
    pub cor: u8,
    pub csh: u8,
}

/// What a valid host STE configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSte {
    Invalid,
    Abort,
    Bypass,
    Stage1(Stage1Context),
}

/// Why a host STE is refused (reported as C_BAD_STE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteRefusal {
    /// Config 0b11x: stage 2 is not advertised.
    Stage2Requested,
    /// S1STALLD = 1 with stage 1: stalling is not advertised.
    StallRequested,
    /// S1ContextPtr above the advertised output address size.
    ContextPointer(u64),
    /// Non-zero RES0 bits [58:56].
    Reserved,
}

impl core::fmt::Display for SteRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SteRefusal::Stage2Requested => write!(f, "STE asks for stage 2"),
            SteRefusal::StallRequested => write!(f, "STE asks for stalls (S1STALLD)"),
            SteRefusal::ContextPointer(p) => write!(f, "S1ContextPtr {p:#x} beyond the OAS"),
            SteRefusal::Reserved => write!(f, "STE RES0 bits set"),
        }
    }
}

/// Validates a host STE (see the module comment for every field).
pub fn decode_host_ste(words: &[u64; STE_WORDS], adv: &Advertised) -> Result<HostSte, SteRefusal> {
    let w0 = words[0];
    let w1 = words[1];
    if w0 & STE0_V == 0 {
        return Ok(HostSte::Invalid);
    }
    let config = (w0 >> STE0_CONFIG_SHIFT) & 7;
    match config {
        0b000..=0b011 => Ok(HostSte::Abort),
        CONFIG_BYPASS => Ok(HostSte::Bypass),
        CONFIG_S1 => {
            if w0 & STE0_RES0 != 0 {
                return Err(SteRefusal::Reserved);
            }
            if w1 & STE1_S1STALLD != 0 {
                return Err(SteRefusal::StallRequested);
            }
            let ctx_ptr = w0 & STE0_CTXPTR_MASK;
            if ctx_ptr & !low_mask(adv.oas_bits()) != 0 {
                return Err(SteRefusal::ContextPointer(ctx_ptr));
            }
            Ok(HostSte::Stage1(Stage1Context {
                ctx_ptr,
                cir: ((w1 >> STE1_S1CIR_SHIFT) & 3) as u8,
                cor: ((w1 >> STE1_S1COR_SHIFT) & 3) as u8,
                csh: ((w1 >> STE1_S1CSH_SHIFT) & 3) as u8,
            }))
        }
        _ => Err(SteRefusal::Stage2Requested),
    }
}

/// The real STE warden installs for a host stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealSte {
    /// V = 0: transactions abort and are recorded (C_BAD_STE).
    Invalid,
    /// Transactions abort silently.
    Abort,
    /// Warden's host stage 2 only (the host asked for bypass).
    Stage2Only,
    /// The host's stage 1, as the shadow CD at `cd_ipa` (an IPA of warden's SMMU view of the
    /// host stage 2) describes it, nested over warden's host stage 2.
    Nested { cd_ipa: u64 },
}

impl RealSte {
    /// The real STE for a decoded host STE that is not stage 1 (a refused one becomes V = 0);
    /// stage 1 needs its shadow CD first (`None`).
    pub fn without_stage1(host: Result<HostSte, SteRefusal>) -> Option<RealSte> {
        match host {
            Ok(HostSte::Invalid) | Err(_) => Some(RealSte::Invalid),
            Ok(HostSte::Abort) => Some(RealSte::Abort),
            Ok(HostSte::Bypass) => Some(RealSte::Stage2Only),
            Ok(HostSte::Stage1(_)) => None,
        }
    }

    /// The real STE words: stage 2 exactly as [`Ste::stage2_only`] builds it (host VMID,
    /// warden's tables for the host's devices), plus for nested the shadow CD's pointer with
    /// warden's CD fetch attributes (write-back, inner shareable: warden memory), S1Fmt =
    /// linear, S1CDMax = 0, S1DSS = terminate, STRW = NS-EL1, EATS = 0, and S1STALLD = 1 on an
    /// SMMU that supports stalls (IDR0.STALL_MODEL = 0b00), so no CD can enable them. Where
    /// stalls are not supported S1STALLD is not allowed (QEMU's SMMU calls such an STE bad),
    /// and a CD with S = 1 is ILLEGAL there anyway; a forced-stall SMMU gets no virtual SMMU
    /// at all ([`super::real::virt_config`]).
    pub fn to_ste(&self, s2: &S2Config, features: &Features) -> Result<Ste, S2ConfigError> {
        match self {
            RealSte::Invalid => Ok(Ste::INVALID),
            RealSte::Abort => Ok(Ste::abort()),
            RealSte::Stage2Only => Ste::stage2_only(s2, features),
            RealSte::Nested { cd_ipa } => {
                let mut ste = Ste::stage2_only(s2, features)?;
                ste.0[0] = STE0_V
                    | (CONFIG_NESTED << STE0_CONFIG_SHIFT)
                    | (cd_ipa & STE0_CTXPTR_MASK & L1_L2PTR_MASK);
                ste.0[1] |= (CD_FETCH_WB << STE1_S1CIR_SHIFT)
                    | (CD_FETCH_WB << STE1_S1COR_SHIFT)
                    | (CD_FETCH_INNER_SHAREABLE << STE1_S1CSH_SHIFT);
                if features.stall_model == IDR0_STALL_MODEL_SUPPORTED {
                    ste.0[1] |= STE1_S1STALLD;
                }
                Ok(ste)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::{MemRange, Stage2Config};
    use crate::smmu::fake::FakeSmmu;
    use crate::smmu::virt::fake::FakeMemory;

    fn adv() -> Advertised {
        Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 }
    }

    fn mem() -> FakeMemory {
        FakeMemory::new(&[MemRange::new(0x4000_0000, 0x4010_0000)])
    }

    const LINEAR: u32 = 8; // FMT 0, LOG2SIZE 8
    const TWO_LEVEL: u32 = (1 << 16) | (8 << 6) | 16; // FMT 1, SPLIT 8, LOG2SIZE 16

    #[test]
    fn linear_table() {
        let m = mem();
        assert_eq!(locate_ste(&m, 0x4000_0000, LINEAR, 0, &adv()), Ok(0x4000_0000));
        assert_eq!(locate_ste(&m, 0x4000_0000, LINEAR, 255, &adv()), Ok(0x4000_3fc0));
        assert_eq!(locate_ste(&m, 0x4000_0000, LINEAR, 256, &adv()), Err(SteFault::BadStreamId));
        // Aligned to the table size (16 KiB), RA and low bits ignored.
        assert_eq!(locate_ste(&m, (1 << 62) | 0x4000_3fc0, LINEAR, 1, &adv()), Ok(0x4000_0040));
        // LOG2SIZE beyond SIDSIZE is capped by SIDSIZE for the range check.
        assert_eq!(locate_ste(&m, 0, 20, 1 << 16, &adv()), Err(SteFault::BadStreamId));
        // Reserved FMT values behave as linear.
        assert_eq!(locate_ste(&m, 0x4000_0000, (3 << 16) | 8, 2, &adv()), Ok(0x4000_0080));
        // A 32-bit SIDSIZE and LOG2SIZE 63 do not overflow.
        let wide = Advertised { sid_bits: 32, ..adv() };
        assert_eq!(locate_ste(&m, 0x4000_0000, 63, u32::MAX, &wide), Ok(0x3f_ffff_ffc0));
    }

    #[test]
    fn two_level_table() {
        let mut m = mem();
        // L1 at 0x4000_0000 (256 descriptors: 2 KiB); bus 1 -> L2 at 0x4000_4000, Span 9.
        m.write_u64(0x4000_0008, 0x4000_4000 | 9);
        // bus 2 -> a small L2 with Span 2 (two STEs).
        m.write_u64(0x4000_0010, 0x4000_8000 | 2);
        // bus 3 -> Span 10 (> SPLIT + 1).
        m.write_u64(0x4000_0018, 0x4000_c000 | 10);
        // bus 4 -> L2 in memory that is not the host's.
        m.write_u64(0x4000_0020, 0x5000_0000 | 9);
        let loc = |m: &FakeMemory, sid| locate_ste(m, 0x4000_0000, TWO_LEVEL, sid, &adv());
        assert_eq!(loc(&m, 0x0100), Ok(0x4000_4000));
        assert_eq!(loc(&m, 0x01ff), Ok(0x4000_7fc0));
        assert_eq!(loc(&m, 0x0000), Err(SteFault::BadStreamId), "Span 0");
        assert_eq!(loc(&m, 0x0201), Ok(0x4000_8040));
        assert_eq!(loc(&m, 0x0202), Err(SteFault::BadStreamId), "beyond the L2's span");
        assert_eq!(loc(&m, 0x0300), Err(SteFault::BadL1Span));
        assert_eq!(loc(&m, 0x0400), Ok(0x5000_0000), "located; the read is what fails");
        assert_eq!(
            read_host_ste(&m, 0x4000_0000, TWO_LEVEL, 0x0400, &adv()),
            Err(SteFault::Fetch(0x5000_0000))
        );
        // L1 table itself outside host memory.
        assert_eq!(
            locate_ste(&m, 0x6000_0000, TWO_LEVEL, 0x100, &adv()),
            Err(SteFault::Fetch(0x6000_0008))
        );
        // Reserved SPLIT behaves as 6: sid 0x40 uses L1 index 1, whose Span 9 is then too big.
        let split7 = (1 << 16) | (7 << 6) | 16;
        assert_eq!(locate_ste(&m, 0x4000_0000, split7, 0x40, &adv()), Err(SteFault::BadL1Span));
        assert_eq!(locate_ste(&m, 0x4000_0000, split7, 0x80, &adv()), Ok(0x4000_8000));
        // Span 12..31 are reserved and behave as 0.
        m.write_u64(0x4000_0028, 0x4000_4000 | 12);
        assert_eq!(loc(&m, 0x0500), Err(SteFault::BadStreamId));
        // L2Ptr bits below the L2 size are ignored.
        m.write_u64(0x4000_0030, 0x4000_4040 | 2);
        assert_eq!(loc(&m, 0x0601), Ok(0x4000_4040));
        m.write_u64(0x4000_0030, 0x4000_4040 | 3);
        assert_eq!(
            loc(&m, 0x0601),
            Ok(0x4000_4040),
            "256-byte L2 aligns 0x..40 down to 0x..00 + 64"
        );
    }

    #[test]
    fn fault_events() {
        assert_eq!(SteFault::BadStreamId.event(5)[0], 0x5_0000_0002);
        assert_eq!(SteFault::BadL1Span.event(5)[0], 0x5_0000_0004);
        assert_eq!(SteFault::Fetch(0x1238).event(5), [0x5_0000_0003, 0, 0, 0x1238]);
    }

    fn ste(w0: u64, w1: u64) -> [u64; 8] {
        [w0, w1, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn host_ste_configs() {
        let a = adv();
        assert_eq!(decode_host_ste(&ste(0, 0), &a), Ok(HostSte::Invalid));
        assert_eq!(decode_host_ste(&ste(0xe, 0), &a), Ok(HostSte::Invalid), "V = 0 wins");
        for config in 0..4u64 {
            assert_eq!(decode_host_ste(&ste(1 | (config << 1), 0), &a), Ok(HostSte::Abort));
        }
        assert_eq!(decode_host_ste(&ste(0b1001, u64::MAX), &a), Ok(HostSte::Bypass));
        assert_eq!(decode_host_ste(&ste(0b1101, 0), &a), Err(SteRefusal::Stage2Requested));
        assert_eq!(decode_host_ste(&ste(0b1111, 0), &a), Err(SteRefusal::Stage2Requested));
        // Linux's stage-1 STE: S1DSS=SSID0, CIR/COR WBRA, CSH inner, STRW NS-EL1.
        let w0 = 1 | (0b101 << 1) | 0x4002_0000;
        let w1 = 0b10 | (1 << 2) | (1 << 4) | (3 << 6);
        assert_eq!(
            decode_host_ste(&ste(w0, w1), &a),
            Ok(HostSte::Stage1(Stage1Context { ctx_ptr: 0x4002_0000, cir: 1, cor: 1, csh: 3 }))
        );
        // Fields that are ignored: S1Fmt, S1CDMax, EATS, STRW, S2 words, words 4..7.
        let mut noisy = ste(w0 | (3 << 4) | (31 << 59), w1 | (3 << 28) | (3 << 30));
        noisy[2] = u64::MAX;
        noisy[7] = u64::MAX;
        assert!(matches!(decode_host_ste(&noisy, &a), Ok(HostSte::Stage1(_))));
        assert_eq!(decode_host_ste(&ste(w0, w1 | (1 << 27)), &a), Err(SteRefusal::StallRequested));
        assert_eq!(decode_host_ste(&ste(w0 | (1 << 57), w1), &a), Err(SteRefusal::Reserved));
        let high = 1 | (0b101 << 1) | (1 << 40);
        assert_eq!(
            decode_host_ste(&ste(high, 0), &a),
            Err(SteRefusal::ContextPointer(1 << 40)),
            "beyond the 40-bit OAS"
        );
        let oas44 = Advertised { oas_field: 4, ..a };
        assert!(decode_host_ste(&ste(high, 0), &oas44).is_ok());
    }

    #[test]
    fn real_ste_choice() {
        assert_eq!(RealSte::without_stage1(Ok(HostSte::Invalid)), Some(RealSte::Invalid));
        assert_eq!(RealSte::without_stage1(Ok(HostSte::Abort)), Some(RealSte::Abort));
        assert_eq!(RealSte::without_stage1(Ok(HostSte::Bypass)), Some(RealSte::Stage2Only));
        assert_eq!(
            RealSte::without_stage1(Err(SteRefusal::Stage2Requested)),
            Some(RealSte::Invalid)
        );
        let ctx = Stage1Context { ctx_ptr: 0x4002_0000, cir: 1, cor: 2, csh: 3 };
        assert_eq!(RealSte::without_stage1(Ok(HostSte::Stage1(ctx))), None);
    }

    #[test]
    fn real_ste_words() {
        let cfg = Stage2Config::new(40, 48, true).unwrap();
        let s2 = S2Config::from_vtcr_vttbr(cfg.vtcr(), cfg.vttbr(0x4100_2000, 1).unwrap());
        let f = FakeSmmu::qemu_features();
        let s2only = Ste::stage2_only(&s2, &f).unwrap();
        assert_eq!(RealSte::Stage2Only.to_ste(&s2, &f), Ok(s2only));
        assert_eq!(RealSte::Invalid.to_ste(&s2, &f), Ok(Ste::INVALID));
        assert_eq!(RealSte::Abort.to_ste(&s2, &f), Ok(Ste::abort()));
        let nested = RealSte::Nested { cd_ipa: 0x7f_c000_0040 };
        let w = nested.to_ste(&s2, &f).unwrap().0;
        assert_eq!(w[0], 1 | (0b111 << 1) | 0x7f_c000_0040, "V, nested, CD pointer, CDMax 0");
        assert_eq!(w[1], s2only.0[1] | (1 << 2) | (1 << 4) | (3 << 6));
        assert_eq!((w[1] >> 27) & 1, 0, "no stalls on QEMU's SMMU: S1STALLD not allowed");
        let stalls = Features { stall_model: 0b00, ..f };
        let w1 = nested.to_ste(&s2, &stalls).unwrap().0[1];
        assert_eq!((w1 >> 27) & 1, 1, "S1STALLD: no CD may ask for stalls");
        assert_eq!(w[1] & 3, 0, "S1DSS");
        assert_eq!((w[1] >> 28) & 0xf, 0, "EATS, STRW");
        assert_eq!(&w[2..], &s2only.0[2..], "stage 2: host VMID and tables");
        assert_eq!(w[2] & 0xffff, 1);
    }
}
