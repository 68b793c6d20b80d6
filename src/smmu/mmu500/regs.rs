//! What warden touches on a real MMU-500 (Arm IHI 0062, SMMU architecture version 2; the
//! CoreLink MMU-500 TRM for its IMPLEMENTATION DEFINED registers): the fields the back end
//! decodes or builds, as `tock-registers` bitfields.
//!
//! One definition per field: the register offsets and the fields the virtual MMU-500 face also
//! decodes (sCR0, sIDR0..2/7, sGFSR, SMR, S2CR, CBAR, CBA2R, SCTLR, the stage-1 TCR and TCR2,
//! FSR, TTBRn) are [`crate::smmu::v2::regs`]'s and re-exported here; this file adds only what
//! the back end needs beyond them. The register *file* is reached through [`super::io`]'s
//! narrow trait (offsets from the window base), not a `register_structs!` overlay: the window's
//! shape (page size, number of global pages, context banks) is only known once sIDR1 has been
//! read, and the trait lets the host tests record the order of every access.

use tock_registers::register_bitfields;

pub use crate::smmu::v2::regs::{
    CB_ACTLR, CB_FAR, CB_FSR, CB_FSYNR0, CB_MAIR0, CB_MAIR1, CB_SCTLR, CB_TCR, CB_TCR2,
    CB_TLBIASID, CB_TLBIVA, CB_TLBIVAA, CB_TLBIVAAL, CB_TLBIVAL, CB_TLBSTATUS, CB_TLBSYNC,
    CB_TTBR0, CB_TTBR1, CBA2R_BASE, CBA2R_F, CBAR_BASE, CBAR_F, CBFRSYNRA_BASE, FSR_F, FSYNR0_F,
    S2CR_BASE, S2CR_F, SACR, SACR_CACHE_LOCK, SCR0, SCR0_F, SCR1, SCTLR_F, SGFAR, SGFSR, SGFSR_F,
    SGFSYNR1, SIDR0, SIDR0_F, SIDR1, SIDR1_F, SIDR2, SIDR2_F, SIDR7, SIDR7_F, SMR_BASE, SMR_F,
    STLBGSTATUS, STLBGSYNC, TCR_F, TCR2_F, TLBIALLNSNH, TLBIVMID, TTBR_F, mask32,
};

/// Stream mapping register groups and context banks the architecture allows at most.
pub const MAX_SMRG: usize = 128;
pub const MAX_CB: usize = 128;

register_bitfields![u32,
    /// sCR1 (Secure software's view; Non-secure reads see the counts Secure software left to
    /// it in sIDR0.NUMSMRG and sIDR1.NUMCB). Only decoded for the log.
    pub SCR1_F [
        NSNUMCBO OFFSET(0) NUMBITS(8) [],
        NSNUMSMRGO OFFSET(8) NUMBITS(8) []
    ],
    /// CBAR when TYPE = 0b11 (stage 1 with stage 2 nested): bits [15:8] name the stage-2
    /// context bank whose translation follows this bank's (IHI 0062, CBAR format for nested
    /// contexts; the stage-1 memory-attribute fields of the other types are not present).
    pub CBAR_NESTED_F [
        CBNDX OFFSET(8) NUMBITS(8) [],
        TYPE OFFSET(16) NUMBITS(2) [],
        IRPTNDX OFFSET(24) NUMBITS(8) []
    ],
    /// TCR of a stage-2 context bank with AArch64 tables: the VTCR_EL2 layout (Linux's
    /// `arm_smmu_lpae_vtcr`), bit 31 RES1.
    pub S2TCR_F [
        T0SZ OFFSET(0) NUMBITS(6) [],
        SL0 OFFSET(6) NUMBITS(2) [],
        IRGN0 OFFSET(8) NUMBITS(2) [],
        ORGN0 OFFSET(10) NUMBITS(2) [],
        SH0 OFFSET(12) NUMBITS(2) [],
        TG0 OFFSET(14) NUMBITS(2) [],
        PASIZE OFFSET(16) NUMBITS(3) [],
        RES1 OFFSET(31) NUMBITS(1) []
    ],
    /// sTLBGSTATUS: a TLBGSYNC is still in progress.
    pub STLBGSTATUS_F [
        GSACTIVE OFFSET(0) NUMBITS(1) []
    ],
    /// A context bank's TLBSTATUS: its TLBSYNC is still in progress.
    pub TLBSTATUS_F [
        SACTIVE OFFSET(0) NUMBITS(1) []
    ],
    /// A context bank's ACTLR on the MMU-500 (TRM): CPRE is the prefetcher that errata
    /// 841119 and 826419 make Linux turn off (`arm_mmu500_reset`), CMTLB the TLB hint.
    pub ACTLR_F [
        CMTLB OFFSET(0) NUMBITS(1) [],
        CPRE OFFSET(1) NUMBITS(1) []
    ],
    /// A context bank's TLBIASID (and the ASID of TLBIVA-family values, bits [63:48]).
    pub TLBIASID_F [
        ASID OFFSET(0) NUMBITS(16) []
    ],
    /// TLBIVMID.
    pub TLBIVMID_F [
        VMID OFFSET(0) NUMBITS(16) []
    ]
];

/// S2CR.TYPE encodings (the same numbers as `S2CR_F::TYPE`'s values).
pub const S2CR_TYPE_TRANSLATION: u32 = 0;
pub const S2CR_TYPE_BYPASS: u32 = 1;
pub const S2CR_TYPE_FAULT: u32 = 2;

/// CBAR.TYPE encodings.
pub const CBAR_TYPE_S2: u32 = 0;
pub const CBAR_TYPE_S1_S2_BYPASS: u32 = 1;
pub const CBAR_TYPE_S1_S2_FAULT: u32 = 2;
pub const CBAR_TYPE_NESTED: u32 = 3;

/// TCR2.SEP = 0b111: the sign-extension bit is the upstream bus's top bit (what Linux writes).
pub const TCR2_SEP_UPSTREAM: u32 = 0b111;

/// The TLBIVA family's 64-bit value: VA bits 55..12 in bits 43..0 and the ASID in 63..48.
pub const fn tlbiva_value(addr: u64, asid: u16) -> u64 {
    ((addr >> 12) & ((1 << 44) - 1)) | ((asid as u64) << 48)
}

/// Where a register lives in the window, once sIDR1 is known: global space 0 is page 0,
/// global space 1 page 1, and context bank `n` is page `numpage + n` (IHI 0062, 8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// 4 KiB or 64 KiB (sIDR1.PAGESIZE).
    pub page: u32,
    /// Pages of the global space: `2^(NUMPAGENDXB + 1)`.
    pub numpage: u32,
}

impl Layout {
    /// From sIDR1.
    pub fn from_sidr1(sidr1: u32) -> Self {
        let page = if sidr1 & mask32(SIDR1_F::PAGESIZE) != 0 { 0x1_0000 } else { 0x1000 };
        let ndxb = (sidr1 >> SIDR1_F::NUMPAGENDXB.shift) & SIDR1_F::NUMPAGENDXB.mask;
        Self { page, numpage: 1 << (ndxb + 1) }
    }

    pub const fn gr0(&self, offset: u32) -> u32 {
        offset
    }

    pub const fn gr1(&self, offset: u32) -> u32 {
        self.page + offset
    }

    pub const fn cb(&self, bank: u8, offset: u32) -> u32 {
        (self.numpage + bank as u32) * self.page + offset
    }

    /// The window's size for `numcb` context banks.
    pub const fn size(&self, numcb: u32) -> u64 {
        (self.numpage as u64 + numcb as u64) * self.page as u64
    }

    /// Which register an offset names (the model and the tests decode accesses with it).
    pub fn decode(&self, offset: u32) -> Space {
        let page = offset / self.page;
        let within = offset % self.page;
        match page {
            0 => Space::Gr0(within),
            1 => Space::Gr1(within),
            p if p >= self.numpage => Space::Cb((p - self.numpage) as u8, within),
            _ => Space::Other(offset),
        }
    }
}

/// An offset, decoded by [`Layout::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Gr0(u32),
    Gr1(u32),
    /// (bank, offset within the bank's page)
    Cb(u8, u32),
    Other(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_sidr1() {
        // 4 KiB pages, NUMPAGENDXB = 3: 16 global pages, banks from 64 KiB.
        let l = Layout::from_sidr1(3 << 28);
        assert_eq!((l.page, l.numpage), (0x1000, 16));
        assert_eq!(l.cb(0, CB_SCTLR), 0x1_0000);
        assert_eq!(l.cb(2, CB_TLBSYNC), 0x1_2000 + 0x7f0);
        assert_eq!(l.gr1(CBAR_BASE + 4), 0x1004);
        assert_eq!(l.decode(0x1_27f0), Space::Cb(2, 0x7f0));
        assert_eq!(l.decode(0x2000), Space::Other(0x2000));
        // 64 KiB pages, NUMPAGENDXB = 0: two global pages.
        let l = Layout::from_sidr1(1 << 31);
        assert_eq!((l.page, l.numpage), (0x1_0000, 2));
        assert_eq!(l.cb(1, 0), 0x3_0000);
        assert_eq!(l.size(8), 10 * 0x1_0000);
    }

    #[test]
    fn tlbiva_value_packs_the_page_and_the_asid() {
        assert_eq!(tlbiva_value(0x1234_5000, 7), 0x1_2345 | (7 << 48));
        assert_eq!(tlbiva_value(0xffff_ffff_ffff_f000, 0), (1 << 44) - 1, "VA[55:12] only");
    }
}
