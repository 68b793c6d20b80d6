//! Host context descriptors (IHI 0070, 5.4) and the shadow CDs warden installs in their place.
//!
//! The real SMMU never reads a host CD. When the host's STE or CFGI_CD says a stream's CD may
//! have changed, warden copies the 64 bytes once from host memory, validates the copy against
//! what the virtual SMMU advertises, and builds a *shadow CD* from it field by field, with a
//! real ASID warden allocated (see [`super::asid`]) in place of the host's. The shadow lives in
//! warden memory; a later rewrite of the host's CD changes nothing until the next CFGI_CD.
//!
//! Policy for every field, given [`Advertised`] (AArch64 tables only, little-endian, 4 KiB
//! granule, no stall, no HTTU, no HAD/PBHA, terminate model, OAS):
//! - **V = 0**: the stream has no valid CD; the shadow is all zeros (the real SMMU then
//!   reports C_BAD_CD for each transaction, as the host's own CD would).
//! - **Refused** (C_BAD_CD for the host at once, and a V = 0 shadow): AA64 = 0, ENDI = 1
//!   (ILLEGAL with the advertised TTF/TTENDIAN), S = 1 (stall: STALL_MODEL says none; the
//!   real STE's S1STALLD makes it ILLEGAL there too), HA or HD (no HTTU), A = 0 (the
//!   terminate model aborts: as QEMU's SMMU, a CD asking for RAZ/WI is refused), and for each
//!   walk that EPDx leaves enabled: TxSZ outside 16..=39, a TGx other than 4 KiB, a TTBx
//!   beyond the advertised OAS; non-zero RES0 bits of words 1 and 2 (`[3:2]`, `[59:52]`), and
//!   HADx / HWUx (RES0 without IDR3.HAD / PBHA, which read as zero).
//! - **Copied**: T0SZ/TG0/IR0/OR0/SH0/EPD0 and the TTB1 counterparts, TTB0/TTB1 (zero when
//!   their walk is disabled), AFFD, WXN, UWXN, TBI, PAN, R, A, ASET, MAIR0/MAIR1 (word 3).
//!   IPS is capped at the advertised OAS (a larger value behaves as the OAS). These only shape
//!   the host's own stage 1, which warden's stage 2 confines whatever they say.
//! - **Ignored** (never copied, so harmless whatever they hold): NSCFG0/NSCFG1 (Non-secure
//!   streams), AMAIR (word 4, IMPLEMENTATION DEFINED), word 5 (IMPLEMENTATION DEFINED), the
//!   MPAM fields and the rest of words 6 and 7 (not advertised).

use super::GuestMemory;
use super::asid::ContextKey;
use super::regs::Advertised;

/// Words in a CD.
pub const CD_WORDS: usize = 8;
/// Bytes in a CD.
pub const CD_BYTES: u64 = 64;

const T0SZ: u64 = 0x3f;
const TG0_SHIFT: u32 = 6;
const TT0_ATTRS: u64 = 0x3f << 8; // IR0, OR0, SH0
const EPD0: u64 = 1 << 14;
const ENDI: u64 = 1 << 15;
/// The TTB1 fields are the TTB0 ones 16 bits up.
const TT1_SHIFT: u32 = 16;
const V: u64 = 1 << 31;
const IPS_SHIFT: u32 = 32;
const IPS: u64 = 7 << IPS_SHIFT;
const AFFD: u64 = 1 << 35;
const WXN: u64 = 1 << 36;
const UWXN: u64 = 1 << 37;
const TBI: u64 = 3 << 38;
const PAN: u64 = 1 << 40;
const AA64: u64 = 1 << 41;
const HD: u64 = 1 << 42;
const HA: u64 = 1 << 43;
const S: u64 = 1 << 44;
const R: u64 = 1 << 45;
const A: u64 = 1 << 46;
const ASET: u64 = 1 << 47;
const ASID_SHIFT: u32 = 48;
/// Word 0 fields copied as they are (besides the per-walk ones, IPS and the ASID).
const COPIED0: u64 = AFFD | WXN | UWXN | TBI | PAN | AA64 | R | A | ASET | V;

const TTB: u64 = 0x000f_ffff_ffff_fff0; // [51:4]
#[cfg(test)]
const NSCFG: u64 = 1 << 0;
const HAD: u64 = 1 << 1;
/// Words 1 and 2: RES0 `[3:2]` and `[59:52]`, and HWU `[63:60]` (RES0 without PBHA).
const TTB_WORD_RES0: u64 = (0b11 << 2) | (0xff << 52) | (0xf << 60);

/// 4 KiB granule: TG0 = 0b00, TG1 = 0b10.
const TG0_4K: u64 = 0b00;
const TG1_4K: u64 = 0b10;
/// TxSZ with 4 KiB granules, no TTST, no LVA.
const TSZ_MIN: u64 = 16;
const TSZ_MAX: u64 = 39;

/// Which of the two walks a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    Ttb0,
    Ttb1,
}

/// Why a host CD is refused (reported as C_BAD_CD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdRefusal {
    /// AA64 = 0: only AArch64 tables are advertised.
    NotAArch64,
    /// ENDI = 1: only little-endian walks are advertised.
    BigEndian,
    /// S = 1: stalls are not advertised.
    Stall,
    /// HA or HD: hardware access-flag/dirty updates are not advertised.
    HardwareUpdate,
    /// A = 0: the terminate model only aborts.
    NoAbort,
    /// TxSZ outside 16..=39.
    InputSize(Walk, u8),
    /// A granule other than 4 KiB.
    Granule(Walk, u8),
    /// TTBx beyond the advertised output address size.
    TableAddress(Walk, u64),
    /// HADx set (IDR3.HAD reads 0).
    HierarchicalAttributes(Walk),
    /// RES0 (or HWU) bits of word 1 or 2.
    Reserved { word: u8, bits: u64 },
}

impl core::fmt::Display for CdRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CdRefusal::NotAArch64 => write!(f, "CD asks for AArch32 tables (AA64 = 0)"),
            CdRefusal::BigEndian => write!(f, "CD asks for big-endian walks (ENDI)"),
            CdRefusal::Stall => write!(f, "CD asks for stalls (S)"),
            CdRefusal::HardwareUpdate => write!(f, "CD asks for hardware updates (HA/HD)"),
            CdRefusal::NoAbort => write!(f, "CD asks for RAZ/WI termination (A = 0)"),
            CdRefusal::InputSize(w, t) => write!(f, "{w:?}: TxSZ {t} outside 16..=39"),
            CdRefusal::Granule(w, g) => write!(f, "{w:?}: TGx {g:#b} is not the 4 KiB granule"),
            CdRefusal::TableAddress(w, a) => write!(f, "{w:?}: table {a:#x} beyond the OAS"),
            CdRefusal::HierarchicalAttributes(w) => write!(f, "{w:?}: HADx set"),
            CdRefusal::Reserved { word, bits } => write!(f, "CD word {word}: RES0 bits {bits:#x}"),
        }
    }
}

/// A validated host CD: the shadow's words except the ASID, and the context it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidCd {
    pub key: ContextKey,
    /// The shadow CD with ASID 0.
    words: [u64; CD_WORDS],
}

impl ValidCd {
    /// The shadow CD carrying real ASID `real`.
    pub fn shadow(&self, real: u16) -> [u64; CD_WORDS] {
        let mut words = self.words;
        words[0] |= u64::from(real) << ASID_SHIFT;
        words
    }
}

/// The CD could not be read (not wholly host memory warden may read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Copies the CD at host IPA `ptr` (one 64-byte read: the copy validated is the copy used).
pub fn read<M: GuestMemory + ?Sized>(mem: &M, ptr: u64) -> Result<[u64; CD_WORDS], Unreadable> {
    let mut bytes = [0u8; CD_BYTES as usize];
    mem.read(ptr, &mut bytes).map_err(|_| Unreadable)?;
    let mut words = [0u64; CD_WORDS];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    Ok(words)
}

/// One walk's fields (`shift` 0 for TTB0, 16 for TTB1) and TTB word: validated and copied
/// into `shadow`; returns the table address the context walks (`None`: EPDx).
fn walk(
    w0: u64,
    ttb_word: u64,
    which: Walk,
    adv: &Advertised,
    shadow: &mut [u64; CD_WORDS],
) -> Result<Option<u64>, CdRefusal> {
    let (shift, tg_4k, word) = match which {
        Walk::Ttb0 => (0, TG0_4K, 1),
        Walk::Ttb1 => (TT1_SHIFT, TG1_4K, 2),
    };
    let fields = w0 >> shift;
    if ttb_word & HAD != 0 {
        return Err(CdRefusal::HierarchicalAttributes(which));
    }
    let reserved = ttb_word & TTB_WORD_RES0;
    if reserved != 0 {
        return Err(CdRefusal::Reserved { word, bits: reserved });
    }
    let tsz = fields & T0SZ;
    if fields & EPD0 != 0 {
        // The walk is off: its TTB is ignored, its input size still bounds the half of the
        // address space that faults. Canonical values in the shadow.
        let tsz = tsz.clamp(TSZ_MIN, TSZ_MAX);
        shadow[0] |= (tsz | (tg_4k << TG0_SHIFT) | EPD0) << shift;
        return Ok(None);
    }
    if !(TSZ_MIN..=TSZ_MAX).contains(&tsz) {
        return Err(CdRefusal::InputSize(which, tsz as u8));
    }
    let tg = (fields >> TG0_SHIFT) & 3;
    if tg != tg_4k {
        return Err(CdRefusal::Granule(which, tg as u8));
    }
    let ttb = ttb_word & TTB;
    let oas = adv.oas_bits();
    if oas < 64 && ttb >> oas != 0 {
        return Err(CdRefusal::TableAddress(which, ttb));
    }
    shadow[0] |= (tsz | (tg << TG0_SHIFT) | (fields & TT0_ATTRS)) << shift;
    shadow[word as usize] = ttb;
    Ok(Some(ttb))
}

/// Validates a host CD (see the module documentation). `Ok(None)`: V = 0.
pub fn validate(words: &[u64; CD_WORDS], adv: &Advertised) -> Result<Option<ValidCd>, CdRefusal> {
    let w0 = words[0];
    if w0 & V == 0 {
        return Ok(None);
    }
    if w0 & AA64 == 0 {
        return Err(CdRefusal::NotAArch64);
    }
    if w0 & ENDI != 0 {
        return Err(CdRefusal::BigEndian);
    }
    if w0 & S != 0 {
        return Err(CdRefusal::Stall);
    }
    if w0 & (HA | HD) != 0 {
        return Err(CdRefusal::HardwareUpdate);
    }
    if w0 & A == 0 {
        return Err(CdRefusal::NoAbort);
    }
    let mut shadow = [0u64; CD_WORDS];
    let ttb0 = walk(w0, words[1], Walk::Ttb0, adv, &mut shadow)?;
    let ttb1 = walk(w0, words[2], Walk::Ttb1, adv, &mut shadow)?;
    let ips = ((w0 & IPS) >> IPS_SHIFT).min(u64::from(adv.oas_field));
    shadow[0] |= (w0 & COPIED0) | (ips << IPS_SHIFT);
    shadow[3] = words[3];
    let host_asid = ((w0 >> ASID_SHIFT) as u16) & adv.asid_mask();
    Ok(Some(ValidCd { key: ContextKey { host_asid, ttb0, ttb1 }, words: shadow }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::MemRange;
    use crate::smmu::virt::fake::FakeMemory;

    fn adv() -> Advertised {
        Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 }
    }

    /// Linux's CD (arm_smmu_make_s1_cd): T0SZ 25, TG0 4K, IRGN0/ORGN0 WBWA, SH0 inner, EPD1,
    /// V, IPS 40 bits, TBI0 off, AA64, R, A, ASET, ASID; TTB0; MAIR.
    fn linux_cd(asid: u16, ttb0: u64) -> [u64; CD_WORDS] {
        let w0 = 25
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | V
            | (2 << 32)
            | AA64
            | R
            | A
            | ASET
            | (u64::from(asid) << 48);
        [w0, ttb0, 0, 0xff_44_04_00, 0, 0, 0, 0]
    }

    #[test]
    fn linux_cd_is_copied_with_the_real_asid() {
        let cd = linux_cd(0x1234, 0x4300_0000);
        let valid = validate(&cd, &adv()).unwrap().unwrap();
        assert_eq!(
            valid.key,
            ContextKey { host_asid: 0x1234, ttb0: Some(0x4300_0000), ttb1: None }
        );
        let shadow = valid.shadow(7);
        assert_eq!(
            shadow[0] & !(0xffff << 48),
            (cd[0] & !(0xffff << 48) & !(0xff << 16)) | (16 << 16) | (0b10 << 22),
            "T1SZ and TG1 of the disabled walk made canonical, the rest copied"
        );
        assert_eq!(shadow[0] >> 48, 7, "warden's ASID");
        assert_eq!(&shadow[1..], &cd[1..], "TTB0, TTB1 = 0, MAIR, nothing else");
        // 8-bit ASIDs: the upper byte of the host's is not part of it.
        let a8 = Advertised { asid16: false, ..adv() };
        assert_eq!(validate(&cd, &a8).unwrap().unwrap().key.host_asid, 0x34);
        // V = 0.
        assert_eq!(validate(&[0, 0x4300_0000, 0, 0, 0, 0, 0, 0], &adv()), Ok(None));
    }

    #[test]
    fn ignored_fields_never_reach_the_shadow() {
        let mut cd = linux_cd(3, 0x4300_0000);
        cd[1] |= NSCFG;
        cd[2] = NSCFG | 0x4400_0000; // TTB1 ignored: EPD1 = 1
        cd[4] = u64::MAX; // AMAIR
        cd[5] = u64::MAX; // IMPLEMENTATION DEFINED
        cd[6] = u64::MAX;
        cd[7] = u64::MAX;
        let shadow = validate(&cd, &adv()).unwrap().unwrap().shadow(3);
        assert_eq!(shadow[1], 0x4300_0000);
        assert_eq!(&shadow[2..], &[0, cd[3], 0, 0, 0, 0]);
        let valid = validate(&cd, &adv()).unwrap().unwrap();
        assert_eq!(valid.key.ttb1, None, "a disabled walk's table is no part of the context");
        // IPS above the OAS is capped; T1SZ of a disabled walk is made canonical.
        let mut big = linux_cd(3, 0x4300_0000);
        big[0] |= 7 << 32;
        big[0] |= 5 << 16; // T1SZ 5, EPD1
        let shadow = validate(&big, &adv()).unwrap().unwrap().shadow(3);
        assert_eq!((shadow[0] >> 32) & 7, 2);
        assert_eq!((shadow[0] >> 16) & 0x3f, 16);
        assert_eq!((shadow[0] >> 22) & 3, 0b10, "TG1 4 KiB");
    }

    #[test]
    fn both_walks() {
        let mut cd = linux_cd(3, 0x4300_0000);
        cd[0] &= !(1 << 30); // EPD1 = 0
        cd[0] |= (25 << 16) | (0b10 << 22) | (0b01 << 24) | (0b11 << 28);
        cd[2] = 0x4400_0000;
        let valid = validate(&cd, &adv()).unwrap().unwrap();
        assert_eq!(valid.key.ttb1, Some(0x4400_0000));
        let shadow = valid.shadow(3);
        assert_eq!(shadow[0] & 0xffff_ffff, cd[0] & 0xffff_ffff);
        assert_eq!(shadow[2], 0x4400_0000);
        // Only TTB1 enabled.
        let mut only1 = cd;
        only1[0] |= EPD0;
        let valid = validate(&only1, &adv()).unwrap().unwrap();
        assert_eq!((valid.key.ttb0, valid.key.ttb1), (None, Some(0x4400_0000)));
        assert_eq!(valid.shadow(3)[1], 0);
    }

    #[test]
    fn refusals() {
        let good = linux_cd(3, 0x4300_0000);
        let a = adv();
        let with = |f: fn(&mut [u64; CD_WORDS])| {
            let mut cd = good;
            f(&mut cd);
            validate(&cd, &a)
        };
        assert_eq!(with(|c| c[0] &= !AA64), Err(CdRefusal::NotAArch64));
        assert_eq!(with(|c| c[0] |= ENDI), Err(CdRefusal::BigEndian));
        assert_eq!(with(|c| c[0] |= S), Err(CdRefusal::Stall));
        assert_eq!(with(|c| c[0] |= HA), Err(CdRefusal::HardwareUpdate));
        assert_eq!(with(|c| c[0] |= HD), Err(CdRefusal::HardwareUpdate));
        assert_eq!(with(|c| c[0] &= !A), Err(CdRefusal::NoAbort));
        assert_eq!(with(|c| c[0] = (c[0] & !0x3f) | 15), Err(CdRefusal::InputSize(Walk::Ttb0, 15)));
        assert_eq!(with(|c| c[0] = (c[0] & !0x3f) | 40), Err(CdRefusal::InputSize(Walk::Ttb0, 40)));
        assert_eq!(with(|c| c[0] |= 0b01 << 6), Err(CdRefusal::Granule(Walk::Ttb0, 0b01)));
        assert_eq!(with(|c| c[1] = 1 << 40), Err(CdRefusal::TableAddress(Walk::Ttb0, 1 << 40)));
        assert_eq!(with(|c| c[1] |= HAD), Err(CdRefusal::HierarchicalAttributes(Walk::Ttb0)));
        assert_eq!(with(|c| c[1] |= 1 << 60), Err(CdRefusal::Reserved { word: 1, bits: 1 << 60 }));
        assert_eq!(with(|c| c[2] |= 1 << 2), Err(CdRefusal::Reserved { word: 2, bits: 1 << 2 }));
        // TTB1's checks apply once EPD1 is clear.
        assert!(with(|c| c[0] |= 0b11 << 22).is_ok(), "TG1 of a disabled walk");
        assert_eq!(
            with(|c| c[0] = (c[0] & !(1 << 30)) | (25 << 16)),
            Err(CdRefusal::Granule(Walk::Ttb1, 0)),
            "TG1 = 0b00 is 16 KiB"
        );
        // Within a 44-bit OAS the same table is fine.
        let oas44 = Advertised { oas_field: 4, ..a };
        let mut high = good;
        high[1] = 1 << 40;
        assert!(validate(&high, &oas44).is_ok());
    }

    #[test]
    fn read_copies_from_host_memory_only() {
        let mut m = FakeMemory::new(&[MemRange::new(0x4000_0000, 0x4010_0000)]);
        let cd = linux_cd(9, 0x4300_0000);
        m.write_words(0x4002_0000, &cd);
        assert_eq!(read(&m, 0x4002_0000), Ok(cd));
        assert_eq!(read(&m, 0x5000_0000), Err(Unreadable), "not host memory");
        assert_eq!(read(&m, 0x400f_ffe0), Err(Unreadable), "straddles the end");
    }
}
