//! Register maps of the GICv3 pieces warden emulates (Arm IHI 0069H): offsets, and the fields
//! of the registers it decodes as `tock-registers` bitfields, so every field is named once and
//! read or built through [`Field::read`] / [`Field::val`].
//!
//! Only what warden decodes is listed; everything else is forwarded or hidden whole.

use tock_registers::fields::Field;
use tock_registers::register_bitfields;

/// The 64 KiB frames: an ITS's control frame, a redistributor's RD_base, SGI_base and (GICv4)
/// VLPI_base frames.
pub const FRAME_SIZE: u64 = 0x1_0000;

// --- ITS control frame (GITS_*), 12.19.
pub const GITS_CTLR: u32 = 0x0000;
pub const GITS_IIDR: u32 = 0x0004;
pub const GITS_TYPER: u32 = 0x0008;
pub const GITS_CBASER: u32 = 0x0080;
pub const GITS_CWRITER: u32 = 0x0088;
pub const GITS_CREADR: u32 = 0x0090;
/// GITS_BASER<n>, n = 0..8, 8 bytes apart.
pub const GITS_BASER: u32 = 0x0100;
pub const GITS_BASER_COUNT: usize = 8;
/// The ID registers (PIDR/CIDR), 32 bits each, up to the end of the frame.
pub const GITS_IDREGS: u32 = 0xffd0;

// --- Redistributor RD_base frame (GICR_*), 12.11.
pub const GICR_CTLR: u32 = 0x0000;
pub const GICR_TYPER: u32 = 0x0008;
pub const GICR_PROPBASER: u32 = 0x0070;
pub const GICR_PENDBASER: u32 = 0x0078;
/// GICR_PIDR2: bits [7:4] are the architecture revision (3: GICv3, 4: GICv4).
pub const GICR_PIDR2: u32 = 0xffe8;
pub const GICR_IDREGS: u32 = 0xffd0;
/// VLPI_base frame (GICv4 only): the registers that point a redistributor at vPE tables.
pub const GICR_VPROPBASER: u32 = 0x0070;
pub const GICR_VPENDBASER: u32 = 0x0078;

// --- Distributor.
pub const GICD_TYPER: u32 = 0x0004;

/// LPIs start at this INTID.
pub const LPI_FIRST_INTID: u64 = 8192;

register_bitfields![u32,
    pub GITS_CTLR_F [
        ENABLED OFFSET(0) NUMBITS(1) [],
        QUIESCENT OFFSET(31) NUMBITS(1) []
    ],
    pub GICR_CTLR_F [
        ENABLE_LPIS OFFSET(0) NUMBITS(1) []
    ],
    pub GICR_PIDR2_F [
        ARCH_REV OFFSET(4) NUMBITS(4) []
    ],
    pub GICD_TYPER_F [
        LPIS OFFSET(17) NUMBITS(1) [],
        /// Interrupt ID bits supported, minus one.
        ID_BITS OFFSET(19) NUMBITS(5) []
    ]
];

register_bitfields![u64,
    pub GITS_TYPER_F [
        PHYSICAL OFFSET(0) NUMBITS(1) [],
        VIRTUAL OFFSET(1) NUMBITS(1) [],
        /// Bytes per ITT entry, minus one.
        ITT_ENTRY_SIZE OFFSET(4) NUMBITS(4) [],
        /// EventID bits, minus one.
        ID_BITS OFFSET(8) NUMBITS(5) [],
        /// DeviceID bits, minus one.
        DEVBITS OFFSET(13) NUMBITS(5) [],
        SEIS OFFSET(18) NUMBITS(1) [],
        /// 1: RDbase fields are physical addresses; 0: processor numbers.
        PTA OFFSET(19) NUMBITS(1) [],
        HCC OFFSET(24) NUMBITS(8) [],
        /// Collection ID bits, minus one (valid when CIL = 1; else 16 bits).
        CIDBITS OFFSET(32) NUMBITS(4) [],
        CIL OFFSET(36) NUMBITS(1) []
    ],
    pub GITS_BASER_F [
        /// Pages in the table (or its level 1), minus one.
        SIZE OFFSET(0) NUMBITS(8) [],
        PAGE_SIZE OFFSET(8) NUMBITS(2) [
            Size4K = 0,
            Size16K = 1,
            Size64K = 2
        ],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// PA[47:12]; with 64 KiB pages, bits [15:12] hold PA[51:48].
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(36) [],
        /// Bytes per entry, minus one (read-only).
        ENTRY_SIZE OFFSET(48) NUMBITS(5) [],
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// What the table holds (read-only).
        TYPE OFFSET(56) NUMBITS(3) [
            Unimplemented = 0,
            Devices = 1,
            Vpes = 2,
            Collections = 4
        ],
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        INDIRECT OFFSET(62) NUMBITS(1) [],
        VALID OFFSET(63) NUMBITS(1) []
    ],
    pub GITS_CBASER_F [
        /// 4 KiB pages in the queue, minus one.
        SIZE OFFSET(0) NUMBITS(8) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        VALID OFFSET(63) NUMBITS(1) []
    ],
    /// GITS_CWRITER and GITS_CREADR: an offset into the queue, and Retry / Stalled in bit 0.
    pub GITS_CQ_OFFSET_F [
        RETRY_OR_STALLED OFFSET(0) NUMBITS(1) [],
        /// Bits [19:5] of the byte offset.
        OFFSET OFFSET(5) NUMBITS(15) []
    ],
    pub GICR_TYPER_F [
        PLPIS OFFSET(0) NUMBITS(1) [],
        VLPIS OFFSET(1) NUMBITS(1) [],
        DIRTY OFFSET(2) NUMBITS(1) [],
        DIRECT_LPI OFFSET(3) NUMBITS(1) [],
        LAST OFFSET(4) NUMBITS(1) [],
        DPGS OFFSET(5) NUMBITS(1) [],
        MPAM OFFSET(6) NUMBITS(1) [],
        RVPEID OFFSET(7) NUMBITS(1) [],
        PROCESSOR_NUMBER OFFSET(8) NUMBITS(16) [],
        COMMON_LPI_AFF OFFSET(24) NUMBITS(2) [],
        VSGI OFFSET(26) NUMBITS(1) [],
        PPI_NUM OFFSET(27) NUMBITS(5) [],
        AFFINITY OFFSET(32) NUMBITS(32) []
    ],
    pub GICR_PROPBASER_F [
        /// Interrupt ID bits, minus one (capped by GICD_TYPER.IDbits).
        ID_BITS OFFSET(0) NUMBITS(5) [],
        INNER_CACHE OFFSET(7) NUMBITS(3) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        OUTER_CACHE OFFSET(56) NUMBITS(3) []
    ],
    pub GICR_PENDBASER_F [
        INNER_CACHE OFFSET(7) NUMBITS(3) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// PA[51:16]: the table is 64 KiB aligned.
        PHYSICAL_ADDRESS OFFSET(16) NUMBITS(36) [],
        OUTER_CACHE OFFSET(56) NUMBITS(3) [],
        PTZ OFFSET(62) NUMBITS(1) []
    ]
];

/// Inner Shareable, the shareability warden asks for its own tables.
pub const SHAREABILITY_INNER: u64 = 1;
/// Read-allocate, write-allocate, write-back: the cacheability warden asks for.
pub const CACHE_RAWAWB: u64 = 7;

/// The bits a field covers, in place.
pub const fn mask<R: tock_registers::RegisterLongName>(field: Field<u64, R>) -> u64 {
    field.mask << field.shift
}

/// Bytes of an ITS page size encoding (the reserved 0b11 behaves as 64 KiB, as QEMU does).
pub const fn its_page_bytes(encoding: u64) -> u64 {
    match encoding {
        0 => 0x1000,
        1 => 0x4000,
        _ => 0x1_0000,
    }
}

/// The table address in a GITS_BASER value, for its page size: PA[47:12], and with 64 KiB
/// pages PA[51:48] from bits [15:12] (whose PA bits are zero by alignment).
pub fn its_baser_address(value: u64) -> u64 {
    let field = GITS_BASER_F::PHYSICAL_ADDRESS.read(value) << 12;
    if its_page_bytes(GITS_BASER_F::PAGE_SIZE.read(value)) == 0x1_0000 {
        let high = (field >> 12) & 0xf;
        (field & !0xffff) | (high << 48)
    } else {
        field
    }
}

/// A 64-bit register after a 4- or 8-byte write at byte `offset_in_register` (0 or 4) of it:
/// a 4-byte write replaces one half. `None` for any other shape.
pub fn merge_write(old: u64, offset_in_register: u32, size: u8, value: u64) -> Option<u64> {
    match (offset_in_register, size) {
        (0, 8) => Some(value),
        (0, 4) => Some((old & !0xffff_ffff) | (value & 0xffff_ffff)),
        (4, 4) => Some((old & 0xffff_ffff) | (value << 32)),
        _ => None,
    }
}

/// What a 4- or 8-byte read at byte `offset_in_register` (0 or 4) of a 64-bit register returns.
pub fn read_part(value: u64, offset_in_register: u32, size: u8) -> Option<u64> {
    match (offset_in_register, size) {
        (0, 8) => Some(value),
        (0, 4) => Some(value & 0xffff_ffff),
        (4, 4) => Some(value >> 32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baser_addresses_by_page_size() {
        let four_k = GITS_BASER_F::PHYSICAL_ADDRESS.val(0x0041_2345).value;
        assert_eq!(its_baser_address(four_k), 0x4_1234_5000);
        let sixty_four_k = GITS_BASER_F::PAGE_SIZE::Size64K.value
            | GITS_BASER_F::PHYSICAL_ADDRESS.val((0x4_1230_0000 >> 12) | 0x3).value;
        assert_eq!(its_baser_address(sixty_four_k), 0x3_0004_1230_0000);
        assert_eq!(its_page_bytes(3), 0x1_0000);
    }

    #[test]
    fn halves_merge_and_read() {
        let old = 0x1111_2222_3333_4444;
        assert_eq!(merge_write(old, 0, 8, 5), Some(5));
        assert_eq!(merge_write(old, 0, 4, 0xffff_aaaa_bbbb), Some(0x1111_2222_aaaa_bbbb));
        assert_eq!(merge_write(old, 4, 4, 0xcccc_dddd), Some(0xcccc_dddd_3333_4444));
        assert_eq!(merge_write(old, 4, 8, 0), None);
        assert_eq!(merge_write(old, 2, 4, 0), None);
        assert_eq!(read_part(old, 4, 4), Some(0x1111_2222));
        assert_eq!(read_part(old, 0, 4), Some(0x3333_4444));
        assert_eq!(read_part(old, 0, 2), None);
    }

    #[test]
    fn field_masks() {
        assert_eq!(mask(GITS_BASER_F::TYPE), 0x0700_0000_0000_0000);
        assert_eq!(mask(GICR_PENDBASER_F::PHYSICAL_ADDRESS), 0x000f_ffff_ffff_0000);
        assert_eq!(mask(GITS_CQ_OFFSET_F::OFFSET), 0xf_ffe0);
    }
}
