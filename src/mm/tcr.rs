//! Fields shared by TCR_EL2 (E2H=0) and VTCR_EL2: they have the same layout in bits `[18:0]`.

use core::fmt;

/// T0SZ[5:0]: the input region is `2^(64 - T0SZ)` bytes.
pub(crate) const T0SZ_SHIFT: u32 = 0;
/// IRGN0[9:8] = 0b01: table walks Normal inner Write-Back Read-Allocate Write-Allocate.
pub(crate) const IRGN0_WBWA: u64 = 0b01 << 8;
/// ORGN0[11:10] = 0b01: outer Write-Back Read-Allocate Write-Allocate.
pub(crate) const ORGN0_WBWA: u64 = 0b01 << 10;
/// SH0[13:12] = 0b11: table walks inner shareable.
pub(crate) const SH0_INNER: u64 = 0b11 << 12;
/// TG0[15:14] = 0b00: 4 KiB granule.
pub(crate) const TG0_4K: u64 = 0b00 << 14;
/// PS[18:16]: physical (output) address size.
pub(crate) const PS_SHIFT: u32 = 16;

/// Why a translation control value could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not one of the PARange sizes 32, 36, 40, 42, 44, 48, 52.
    UnsupportedPaRange(u32),
    /// Input (VA or IPA) size outside what the 4 KiB granule without LPA2 supports here.
    UnsupportedInputBits(u32),
    /// The IPA space is larger than the physical address size the CPU implements.
    InputExceedsPaRange { input_bits: u32, pa_range_bits: u32 },
    /// The VMID does not fit the configured VMID width.
    VmidTooWide { vmid: u16, vmid16: bool },
    /// A translation table base is not aligned as VTTBR/TTBR require.
    MisalignedRoot { root_pa: u64 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnsupportedPaRange(bits) => {
                write!(f, "{bits}-bit physical address range is not an architected size")
            }
            ConfigError::UnsupportedInputBits(bits) => {
                write!(f, "{bits}-bit input address size is not supported")
            }
            ConfigError::InputExceedsPaRange { input_bits, pa_range_bits } => write!(
                f,
                "{input_bits}-bit IPA space exceeds the CPU's {pa_range_bits}-bit PA range"
            ),
            ConfigError::VmidTooWide { vmid, vmid16 } => {
                write!(f, "VMID {vmid} does not fit {} bits", if *vmid16 { 16 } else { 8 })
            }
            ConfigError::MisalignedRoot { root_pa } => {
                write!(f, "translation table root {root_pa:#x} is misaligned")
            }
        }
    }
}

/// Address size in bits for an ID_AA64MMFR0_EL1.PARange value (bits `[3:0]` of the register).
pub fn pa_range_bits_from_mmfr0(mmfr0: u64) -> Option<u32> {
    address_size_bits(mmfr0 & 0xf)
}

/// Bits for the architecture's 3-bit address-size encoding, shared by PARange, TCR/VTCR.PS and
/// the SMMU's IDR5.OAS and STE.S2PS: 0 → 32, 1 → 36, 2 → 40, 3 → 42, 4 → 44, 5 → 48, 6 → 52.
pub const fn address_size_bits(encoding: u64) -> Option<u32> {
    match encoding {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// Whether ID_AA64MMFR1_EL1.VMIDBits (bits `[7:4]`) reports 16-bit VMIDs.
pub fn vmid16_from_mmfr1(mmfr1: u64) -> bool {
    (mmfr1 >> 4) & 0xf == 0b0010
}

/// The PS encoding for a CPU with a `pa_range_bits` physical address range, and the size it
/// stands for. 52 bits is capped to 48 (PS = 0b101): with the 4 KiB granule, 52-bit output
/// addresses need FEAT_LPA2 and TCR.DS=1, whose descriptor format warden does not use, and
/// warden's descriptors only hold 48-bit output addresses.
pub(crate) fn ps_field(pa_range_bits: u32) -> Result<(u64, u32), ConfigError> {
    let ps = match pa_range_bits {
        32 => 0b000,
        36 => 0b001,
        40 => 0b010,
        42 => 0b011,
        44 => 0b100,
        48 | 52 => 0b101,
        _ => return Err(ConfigError::UnsupportedPaRange(pa_range_bits)),
    };
    Ok((ps << PS_SHIFT, pa_range_bits.min(48)))
}

/// T0SZ, walk cacheability/shareability and 4 KiB granule for an `input_bits` region.
pub(crate) fn common_fields(input_bits: u32) -> u64 {
    (u64::from(64 - input_bits) << T0SZ_SHIFT) | IRGN0_WBWA | ORGN0_WBWA | SH0_INNER | TG0_4K
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_register_fields() {
        assert_eq!(pa_range_bits_from_mmfr0(0x0000_0000_0010_0025), Some(48));
        assert_eq!(pa_range_bits_from_mmfr0(2), Some(40));
        assert_eq!(pa_range_bits_from_mmfr0(7), None);
        assert!(vmid16_from_mmfr1(0x20));
        assert!(!vmid16_from_mmfr1(0x00));
        assert!(!vmid16_from_mmfr1(0x02));
    }

    #[test]
    fn ps_encodings() {
        assert_eq!(ps_field(32), Ok((0, 32)));
        assert_eq!(ps_field(40), Ok((0b010 << 16, 40)));
        assert_eq!(ps_field(44), Ok((0b100 << 16, 44)));
        assert_eq!(ps_field(52), Ok((0b101 << 16, 48)));
        assert_eq!(ps_field(39), Err(ConfigError::UnsupportedPaRange(39)));
    }
}
