//! Stream table entries (Arm IHI 0070, 5.2): 64 bytes, eight little-endian u64 words.
//!
//! warden installs two kinds for the host: *abort* and *stage-2-only* translation through the
//! host's own stage-2 tables. Stray stream IDs get no STE at all (V = 0, or an L1 descriptor
//! with Span = 0), so their transactions abort *and* are recorded as C_BAD_STE /
//! C_BAD_STREAMID events. Bypass exists only as a test building block.

use core::fmt;

use super::regs::Features;

/// Words in an STE.
pub const STE_WORDS: usize = 8;
/// Bytes in an STE.
pub const STE_SIZE: u64 = 64;

// Word 0.
pub const STE0_V: u64 = 1 << 0;
const STE0_CONFIG_SHIFT: u32 = 1;
const CONFIG_ABORT: u64 = 0b000;
#[cfg(any(test, feature = "fakes"))]
const CONFIG_BYPASS: u64 = 0b100;
const CONFIG_S2_ONLY: u64 = 0b110;
const CONFIG_NESTED: u64 = 0b111;
/// S1ContextPtr, word 0 bits [55:6].
pub const STE0_S1_CONTEXT_PTR: u64 = 0x00ff_ffff_ffff_ffc0;

// Word 1.
const STE1_SHCFG_SHIFT: u32 = 44;
/// SHCFG = 0b01: use the incoming shareability (stage 2 then combines with its own).
const SHCFG_INCOMING: u64 = 0b01;

// Word 2.
const STE2_S2VMID_MASK: u64 = 0xffff;
/// VTCR_EL2 bits [18:0] (T0SZ, SL0, IRGN0, ORGN0, SH0, TG0, PS) sit at STE bits [50:32].
const STE2_VTCR_SHIFT: u32 = 32;
const VTCR_FIELDS_MASK: u64 = 0x7_ffff;
const STE2_S2AA64: u64 = 1 << 51;
const STE2_S2ENDI: u64 = 1 << 52;
const STE2_S2AFFD: u64 = 1 << 53;
const STE2_S2PTW: u64 = 1 << 54;
const STE2_S2S: u64 = 1 << 57;
const STE2_S2R: u64 = 1 << 58;

// Word 3.
const STE3_S2TTB_MASK: u64 = 0x000f_ffff_ffff_fff0; // [51:4]

// VTCR_EL2 fields read by the checks.
const VTCR_T0SZ_MASK: u64 = 0x3f;
const VTCR_SL0_SHIFT: u32 = 6;
const VTCR_TG0_SHIFT: u32 = 14;
const VTCR_PS_SHIFT: u32 = 16;
const VTCR_VS_16BIT: u64 = 1 << 19;
const VTTBR_BADDR_MASK: u64 = 0x0000_ffff_ffff_fffe;

/// The stage-2 configuration the SMMU must walk exactly as the CPU does: the host's VTCR_EL2
/// and VTTBR_EL2 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Config {
    pub vtcr: u64,
    /// Root of the host's stage-2 tables (VTTBR_EL2.BADDR).
    pub root_pa: u64,
    pub vmid: u16,
}

impl S2Config {
    /// From the host's VTCR_EL2 and VTTBR_EL2 (VMID in `[63:48]` with 16-bit VMIDs, else
    /// `[55:48]`).
    pub fn from_vtcr_vttbr(vtcr: u64, vttbr: u64) -> Self {
        let vmid_bits = if vtcr & VTCR_VS_16BIT != 0 { 0xffff } else { 0xff };
        Self { vtcr, root_pa: vttbr & VTTBR_BADDR_MASK, vmid: ((vttbr >> 48) & vmid_bits) as u16 }
    }

    /// Input (IPA) size in bits: 64 - T0SZ.
    pub fn ipa_bits(&self) -> u32 {
        64u32.saturating_sub((self.vtcr & VTCR_T0SZ_MASK) as u32)
    }
}

/// Why a stage-2 configuration cannot be given to this SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S2ConfigError {
    /// VTCR.TG0 is not the 4 KiB granule (the only one warden's tables use), or the SMMU lacks it.
    Granule,
    /// T0SZ outside 16..=39 or an input size above the SMMU's OAS (its stage-2 IAS).
    InputSize { ipa_bits: u32, oas_bits: u32 },
    /// SL0 = 0b11 (reserved without FEAT_TTST).
    StartLevel,
    /// The root is not 16-byte aligned or lies above the SMMU's OAS.
    Root(u64),
    /// A VMID above 255 on an SMMU with 8-bit VMIDs.
    Vmid(u16),
    /// VTCR.PS is a reserved encoding.
    OutputSize,
}

impl fmt::Display for S2ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S2ConfigError::Granule => write!(f, "stage-2 granule is not 4 KiB or not supported"),
            S2ConfigError::InputSize { ipa_bits, oas_bits } => write!(
                f,
                "{ipa_bits}-bit IPA space does not fit the SMMU's {oas_bits}-bit address size"
            ),
            S2ConfigError::StartLevel => write!(f, "VTCR.SL0 = 0b11 is reserved"),
            S2ConfigError::Root(r) => write!(f, "stage-2 root {r:#x} is misaligned or too high"),
            S2ConfigError::Vmid(v) => write!(f, "VMID {v} needs 16-bit VMIDs (IDR0.VMID16)"),
            S2ConfigError::OutputSize => write!(f, "VTCR.PS is a reserved encoding"),
        }
    }
}

/// One stream table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ste(pub [u64; STE_WORDS]);

impl Ste {
    /// V = 0: the SMMU reports C_BAD_STE for the stream and aborts its transactions.
    pub const INVALID: Ste = Ste([0; STE_WORDS]);

    /// Valid, Config = abort: transactions are terminated silently (no event).
    pub const fn abort() -> Ste {
        let mut w = [0; STE_WORDS];
        w[0] = STE0_V | (CONFIG_ABORT << STE0_CONFIG_SHIFT);
        Ste(w)
    }

    /// Valid, Config = bypass, incoming attributes. Test building block only: warden never
    /// installs it for the host.
    #[cfg(any(test, feature = "fakes"))]
    pub const fn bypass() -> Ste {
        let mut w = [0; STE_WORDS];
        w[0] = STE0_V | (CONFIG_BYPASS << STE0_CONFIG_SHIFT);
        w[1] = SHCFG_INCOMING << STE1_SHCFG_SHIFT;
        Ste(w)
    }

    /// Valid, Config = stage-2 translation only, walking `s2`'s tables with its VTCR fields:
    /// - S2T0SZ, S2SL0, S2IR0, S2OR0, S2SH0, S2TG copied from VTCR_EL2, so the SMMU starts at
    ///   the same level over the same concatenated root as the CPU, with the same walk
    ///   cacheability and shareability;
    /// - S2PS = min(VTCR.PS, IDR5.OAS): the SMMU caps it to OAS anyway; every output address in
    ///   the host's identity map is below 2^ipa_bits, which the checks keep within OAS;
    /// - S2AA64 = 1, S2ENDI = 0 (little-endian), S2AFFD = 0 (warden's descriptors always set
    ///   AF, so an access-flag fault would only reveal a corrupt descriptor, as on the CPU);
    /// - S2PTW = 1: no effect without stage 1, and keeps a later nested stage 1 from walking
    ///   tables that stage 2 maps as Device;
    /// - S2R = 1 (record faults), S2S = 0 (terminate, never stall), S2HA/S2HD = 0;
    /// - SHCFG = incoming; MTCFG = 0 (incoming memory type); ATS disabled (EATS = 0).
    pub fn stage2_only(s2: &S2Config, features: &Features) -> Result<Ste, S2ConfigError> {
        let oas_bits = features.oas_bits.unwrap_or(32);
        if (s2.vtcr >> VTCR_TG0_SHIFT) & 3 != 0 || !features.gran4k {
            return Err(S2ConfigError::Granule);
        }
        let t0sz = (s2.vtcr & VTCR_T0SZ_MASK) as u32;
        let ipa_bits = s2.ipa_bits();
        if !(16..=39).contains(&t0sz) || ipa_bits > oas_bits {
            return Err(S2ConfigError::InputSize { ipa_bits, oas_bits });
        }
        if (s2.vtcr >> VTCR_SL0_SHIFT) & 3 == 3 {
            return Err(S2ConfigError::StartLevel);
        }
        if s2.root_pa & !STE3_S2TTB_MASK != 0 || (oas_bits < 64 && s2.root_pa >> oas_bits != 0) {
            return Err(S2ConfigError::Root(s2.root_pa));
        }
        if !features.vmid16 && s2.vmid > 0xff {
            return Err(S2ConfigError::Vmid(s2.vmid));
        }
        let ps = ((s2.vtcr >> VTCR_PS_SHIFT) & 7) as u32;
        if super::regs::oas_bits(ps).is_none() {
            return Err(S2ConfigError::OutputSize);
        }
        let s2ps = u64::from(ps.min(features.oas_field));
        let vtcr_fields =
            (s2.vtcr & VTCR_FIELDS_MASK & !(7 << VTCR_PS_SHIFT)) | (s2ps << VTCR_PS_SHIFT);

        let mut w = [0; STE_WORDS];
        w[0] = STE0_V | (CONFIG_S2_ONLY << STE0_CONFIG_SHIFT);
        w[1] = SHCFG_INCOMING << STE1_SHCFG_SHIFT;
        w[2] = (u64::from(s2.vmid) & STE2_S2VMID_MASK)
            | (vtcr_fields << STE2_VTCR_SHIFT)
            | STE2_S2AA64
            | STE2_S2PTW
            | STE2_S2R;
        // S2ENDI, S2AFFD, S2S stay clear (see above).
        debug_assert!(w[2] & (STE2_S2ENDI | STE2_S2AFFD | STE2_S2S) == 0);
        w[3] = s2.root_pa & STE3_S2TTB_MASK;
        Ok(Ste(w))
    }

    pub fn is_valid(&self) -> bool {
        self.0[0] & STE0_V != 0
    }

    /// STE.Config[3:1].
    pub fn config(&self) -> u64 {
        (self.0[0] >> STE0_CONFIG_SHIFT) & 7
    }

    /// Config = stage 1 + stage 2 (nested).
    pub fn is_nested(&self) -> bool {
        self.config() == CONFIG_NESTED
    }

    /// S2VMID.
    pub fn s2_vmid(&self) -> u16 {
        (self.0[2] & STE2_S2VMID_MASK) as u16
    }

    /// Both are valid nested STEs that differ in S1ContextPtr (word 0, bits [55:6]) and in
    /// nothing else: the change the SMMU may see in one 64-bit store.
    pub fn only_context_pointer_differs(&self, new: &Ste) -> bool {
        self.is_valid()
            && new.is_valid()
            && self.is_nested()
            && new.is_nested()
            && self.0[1..] == new.0[1..]
            && (self.0[0] ^ new.0[0]) & !STE0_S1_CONTEXT_PTR == 0
            && self.0[0] != new.0[0]
    }
}

/// Level-1 stream table descriptor: Span[4:0] (log2 of L2 entries + 1), L2Ptr[51:6].
pub fn l1_descriptor(l2_pa: u64, split: u32) -> u64 {
    (l2_pa & 0x000f_ffff_ffff_ffc0) | u64::from(split + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::Stage2Config;
    use crate::smmu::fake::FakeSmmu;

    fn field(word: u64, lo: u32, width: u32) -> u64 {
        (word >> lo) & ((1 << width) - 1)
    }

    #[test]
    fn abort_and_invalid() {
        assert_eq!(Ste::abort().0, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Ste::abort().is_valid());
        assert_eq!(Ste::abort().config(), 0);
        assert!(!Ste::INVALID.is_valid());
        let b = Ste::bypass();
        assert_eq!(b.0[0], 0b1001);
        assert_eq!(field(b.0[1], 44, 2), 1);
    }

    #[test]
    fn stage2_only_from_qemu_host_vtcr() {
        // The QEMU host: 40-bit IPA (2 concatenated level-1 tables), 48-bit PA range, VMID 1.
        let cfg = Stage2Config::new(40, 48, true).unwrap();
        let root = 0x4100_2000;
        let vttbr = cfg.vttbr(root, 1).unwrap();
        let s2 = S2Config::from_vtcr_vttbr(cfg.vtcr(), vttbr);
        assert_eq!(s2, S2Config { vtcr: cfg.vtcr(), root_pa: root, vmid: 1 });
        let ste = Ste::stage2_only(&s2, &FakeSmmu::qemu_features()).unwrap();
        let w = ste.0;
        assert_eq!(field(w[0], 0, 1), 1, "V");
        assert_eq!(field(w[0], 1, 3), 0b110, "Config = stage 2 only");
        assert_eq!(w[0] >> 4, 0, "no stage-1 context");
        assert_eq!(field(w[1], 44, 2), 0b01, "SHCFG incoming");
        assert_eq!(w[1] & !(0b11 << 44), 0, "EATS, STRW, MTCFG, ALLOCCFG... zero");
        assert_eq!(field(w[2], 0, 16), 1, "S2VMID");
        assert_eq!(field(w[2], 32, 6), 24, "S2T0SZ = 64 - 40");
        assert_eq!(field(w[2], 38, 2), 0b01, "S2SL0: start at level 1");
        assert_eq!(field(w[2], 40, 2), 0b01, "S2IR0 WBWA");
        assert_eq!(field(w[2], 42, 2), 0b01, "S2OR0 WBWA");
        assert_eq!(field(w[2], 44, 2), 0b11, "S2SH0 inner");
        assert_eq!(field(w[2], 46, 2), 0b00, "S2TG 4 KiB");
        assert_eq!(field(w[2], 48, 3), 0b100, "S2PS capped to the SMMU's 44 bits");
        assert_eq!(field(w[2], 51, 1), 1, "S2AA64");
        assert_eq!(field(w[2], 52, 1), 0, "S2ENDI little");
        assert_eq!(field(w[2], 53, 1), 0, "S2AFFD");
        assert_eq!(field(w[2], 54, 1), 1, "S2PTW");
        assert_eq!(field(w[2], 55, 2), 0, "S2HD/S2HA");
        assert_eq!(field(w[2], 57, 1), 0, "S2S");
        assert_eq!(field(w[2], 58, 1), 1, "S2R");
        assert_eq!(w[2] >> 59, 0);
        assert_eq!(field(w[2], 16, 16), 0);
        assert_eq!(w[3], root, "S2TTB");
        assert_eq!(&w[4..], &[0; 4]);
        // Same walk as the CPU: every VTCR field except PS is copied verbatim.
        assert_eq!((w[2] >> 32) & 0xffff, cfg.vtcr() & 0xffff);
    }

    #[test]
    fn stage2_only_keeps_ps_below_oas_and_8bit_vmid() {
        let cfg = Stage2Config::new(32, 36, false).unwrap();
        let s2 = S2Config::from_vtcr_vttbr(cfg.vtcr(), cfg.vttbr(0x8000_0000, 5).unwrap());
        assert_eq!(s2.vmid, 5);
        let w = Ste::stage2_only(&s2, &FakeSmmu::qemu_features()).unwrap().0;
        assert_eq!(field(w[2], 48, 3), 0b001, "36-bit PS kept (below OAS)");
        assert_eq!(field(w[2], 32, 6), 32);
    }

    #[test]
    fn stage2_only_refusals() {
        let f = FakeSmmu::qemu_features();
        let good = S2Config::from_vtcr_vttbr(
            Stage2Config::new(40, 48, true).unwrap().vtcr(),
            (1 << 48) | 0x4000_0000,
        );
        assert!(Ste::stage2_only(&good, &f).is_ok());
        let bad_tg = S2Config { vtcr: good.vtcr | (0b01 << 14), ..good };
        assert_eq!(Ste::stage2_only(&bad_tg, &f), Err(S2ConfigError::Granule));
        let no4k = Features { gran4k: false, ..f };
        assert_eq!(Ste::stage2_only(&good, &no4k), Err(S2ConfigError::Granule));
        let oas40 = Features { oas_field: 2, oas_bits: Some(40), ..f };
        assert!(Ste::stage2_only(&good, &oas40).is_ok());
        let oas36 = Features { oas_field: 1, oas_bits: Some(36), ..f };
        assert_eq!(
            Ste::stage2_only(&good, &oas36),
            Err(S2ConfigError::InputSize { ipa_bits: 40, oas_bits: 36 })
        );
        let t0sz_small = S2Config { vtcr: (good.vtcr & !0x3f) | 15, ..good };
        assert!(matches!(Ste::stage2_only(&t0sz_small, &f), Err(S2ConfigError::InputSize { .. })));
        let sl0 = S2Config { vtcr: good.vtcr | (3 << 6), ..good };
        assert_eq!(Ste::stage2_only(&sl0, &f), Err(S2ConfigError::StartLevel));
        let high_root = S2Config { root_pa: 1 << 45, ..good };
        assert_eq!(Ste::stage2_only(&high_root, &f), Err(S2ConfigError::Root(1 << 45)));
        let odd_root = S2Config { root_pa: 0x4000_0008, ..good };
        assert!(matches!(Ste::stage2_only(&odd_root, &f), Err(S2ConfigError::Root(_))));
        let big_vmid = S2Config { vmid: 256, ..good };
        assert!(Ste::stage2_only(&big_vmid, &f).is_ok());
        let vmid8 = Features { vmid16: false, ..f };
        assert_eq!(Ste::stage2_only(&big_vmid, &vmid8), Err(S2ConfigError::Vmid(256)));
        let bad_ps = S2Config { vtcr: good.vtcr | (7 << 16), ..good };
        assert_eq!(Ste::stage2_only(&bad_ps, &f), Err(S2ConfigError::OutputSize));
    }

    #[test]
    fn l1_descriptor_span() {
        assert_eq!(l1_descriptor(0x4123_4000, 8), 0x4123_4000 | 9);
        assert_eq!(l1_descriptor(0x4123_4007, 8) & !0x1f, 0x4123_4000);
    }
}
