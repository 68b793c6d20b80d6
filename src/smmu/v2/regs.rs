//! The SMMUv2 register map warden presents as an MMU-500 (Arm IHI 0062, SMMU architecture
//! version 2; the MMU-500 TRM for the IMPLEMENTATION DEFINED parts): offsets of the global
//! register spaces 0 and 1 and of a context bank, and the fields warden decodes as
//! `tock-registers` bitfields, so that every field is named once.
//!
//! The register file itself is emulated (read and written by trapped accesses), not MMIO, so
//! offsets are plain constants rather than a `register_structs!` layout: the emulation
//! dispatches on the offset of each trapped access.

use tock_registers::fields::Field;
use tock_registers::register_bitfields;

/// Bytes per SMMU page (sIDR1.PAGESIZE = 0: 4 KiB).
pub const PAGE: u32 = 0x1000;
/// sIDR1.NUMPAGENDXB: the global address space has `2^(NUMPAGENDXB + 1)` pages.
pub const NUMPAGENDXB: u32 = 3;
/// Pages of the global address space; the translation context space has as many.
pub const NUMPAGE: u32 = 1 << (NUMPAGENDXB + 1);
/// The whole register window: global space then translation context space (128 KiB).
pub const WINDOW: u32 = 2 * NUMPAGE * PAGE;
/// Context bank `n` starts at `CB_BASE + n * PAGE`.
pub const CB_BASE: u32 = NUMPAGE * PAGE;

/// Context banks offered (sIDR1.NUMCB); none is stage-2 capable (NUMS2CB = 0).
pub const NUM_CB: usize = 8;
/// Stream mapping register groups offered (sIDR0.NUMSMRG).
pub const NUM_SMRG: usize = 16;
/// Stream ID bits (sIDR0.NUMSIDB): SMR.ID and SMR.MASK are 15 bits wide.
pub const NUMSIDB: u32 = 15;
/// The stream-ID bits an SMR compares.
pub const SID_MASK: u32 = (1 << NUMSIDB) - 1;

// --- Global register space 0 (page 0).
pub const SCR0: u32 = 0x000;
pub const SCR1: u32 = 0x004;
pub const SCR2: u32 = 0x008;
pub const SACR: u32 = 0x010;
pub const SIDR0: u32 = 0x020;
pub const SIDR1: u32 = 0x024;
pub const SIDR2: u32 = 0x028;
pub const SIDR3: u32 = 0x02c;
pub const SIDR7: u32 = 0x03c;
/// 64 bits.
pub const SGFAR: u32 = 0x040;
pub const SGFSR: u32 = 0x048;
pub const SGFSRRESTORE: u32 = 0x04c;
pub const SGFSYNR0: u32 = 0x050;
pub const SGFSYNR1: u32 = 0x054;
pub const SGFSYNR2: u32 = 0x058;
pub const STLBIALL: u32 = 0x060;
pub const TLBIVMID: u32 = 0x064;
pub const TLBIALLNSNH: u32 = 0x068;
pub const TLBIALLH: u32 = 0x06c;
pub const STLBGSYNC: u32 = 0x070;
pub const STLBGSTATUS: u32 = 0x074;
pub const TLBIVAH: u32 = 0x078;
/// The Non-secure alias of sCR0 (Secure software only): RAZ/WI here.
pub const NSCR0: u32 = 0x400;
/// SMR<n> / S2CR<n>, 4 bytes apart.
pub const SMR_BASE: u32 = 0x800;
pub const S2CR_BASE: u32 = 0xc00;

// --- Global register space 1 (page 1), offsets within the page.
pub const CBAR_BASE: u32 = 0x000;
pub const CBFRSYNRA_BASE: u32 = 0x400;
pub const CBA2R_BASE: u32 = 0x800;

// --- A context bank, offsets within its page.
pub const CB_SCTLR: u32 = 0x000;
pub const CB_ACTLR: u32 = 0x004;
pub const CB_RESUME: u32 = 0x008;
pub const CB_TCR2: u32 = 0x010;
/// 64 bits each.
pub const CB_TTBR0: u32 = 0x020;
pub const CB_TTBR1: u32 = 0x028;
pub const CB_TCR: u32 = 0x030;
pub const CB_CONTEXTIDR: u32 = 0x034;
pub const CB_MAIR0: u32 = 0x038;
pub const CB_MAIR1: u32 = 0x03c;
/// 64 bits (ATOS results; ATOS is not offered: RAZ/WI).
pub const CB_PAR: u32 = 0x050;
pub const CB_FSR: u32 = 0x058;
pub const CB_FSRRESTORE: u32 = 0x05c;
/// 64 bits.
pub const CB_FAR: u32 = 0x060;
pub const CB_FSYNR0: u32 = 0x068;
pub const CB_FSYNR1: u32 = 0x06c;
/// 64 bits, write-only TLB maintenance.
pub const CB_TLBIVA: u32 = 0x600;
pub const CB_TLBIVAA: u32 = 0x608;
pub const CB_TLBIASID: u32 = 0x610;
pub const CB_TLBIALL: u32 = 0x618;
pub const CB_TLBIVAL: u32 = 0x620;
pub const CB_TLBIVAAL: u32 = 0x628;
pub const CB_TLBIIPAS2: u32 = 0x630;
pub const CB_TLBIIPAS2L: u32 = 0x638;
pub const CB_TLBSYNC: u32 = 0x7f0;
pub const CB_TLBSTATUS: u32 = 0x7f4;

register_bitfields![u32,
    pub SCR0_F [
        CLIENTPD OFFSET(0) NUMBITS(1) [],
        GFRE OFFSET(1) NUMBITS(1) [],
        GFIE OFFSET(2) NUMBITS(1) [],
        EXIDENABLE OFFSET(3) NUMBITS(1) [],
        GCFGFRE OFFSET(4) NUMBITS(1) [],
        GCFGFIE OFFSET(5) NUMBITS(1) [],
        TRANSIENTCFG OFFSET(6) NUMBITS(2) [],
        STALLD OFFSET(8) NUMBITS(1) [],
        GSE OFFSET(9) NUMBITS(1) [],
        USFCFG OFFSET(10) NUMBITS(1) [],
        VMIDPNE OFFSET(11) NUMBITS(1) [],
        PTM OFFSET(12) NUMBITS(1) [],
        FB OFFSET(13) NUMBITS(1) [],
        BSU OFFSET(14) NUMBITS(2) [],
        MEMATTR OFFSET(16) NUMBITS(4) [],
        MTCFG OFFSET(20) NUMBITS(1) [],
        SMCFCFG OFFSET(21) NUMBITS(1) [],
        SHCFG OFFSET(22) NUMBITS(2) [],
        RACFG OFFSET(24) NUMBITS(2) [],
        WACFG OFFSET(26) NUMBITS(2) [],
        NSCFG OFFSET(28) NUMBITS(2) [],
        VMID16EN OFFSET(31) NUMBITS(1) []
    ],
    pub SIDR0_F [
        NUMSMRG OFFSET(0) NUMBITS(8) [],
        EXIDS OFFSET(8) NUMBITS(1) [],
        NUMSIDB OFFSET(9) NUMBITS(4) [],
        BTM OFFSET(13) NUMBITS(1) [],
        CTTW OFFSET(14) NUMBITS(1) [],
        NUMIRPT OFFSET(16) NUMBITS(8) [],
        PTFS_NO_AARCH32S OFFSET(24) NUMBITS(1) [],
        PTFS_NO_AARCH32 OFFSET(25) NUMBITS(1) [],
        ATOSNS OFFSET(26) NUMBITS(1) [],
        SMS OFFSET(27) NUMBITS(1) [],
        NTS OFFSET(28) NUMBITS(1) [],
        S2TS OFFSET(29) NUMBITS(1) [],
        S1TS OFFSET(30) NUMBITS(1) [],
        SES OFFSET(31) NUMBITS(1) []
    ],
    pub SIDR1_F [
        NUMCB OFFSET(0) NUMBITS(8) [],
        NUMS2CB OFFSET(16) NUMBITS(8) [],
        NUMPAGENDXB OFFSET(28) NUMBITS(3) [],
        PAGESIZE OFFSET(31) NUMBITS(1) []
    ],
    pub SIDR2_F [
        IAS OFFSET(0) NUMBITS(4) [],
        OAS OFFSET(4) NUMBITS(4) [],
        UBS OFFSET(8) NUMBITS(4) [],
        PTFS_4K OFFSET(12) NUMBITS(1) [],
        PTFS_16K OFFSET(13) NUMBITS(1) [],
        PTFS_64K OFFSET(14) NUMBITS(1) [],
        VMID16 OFFSET(15) NUMBITS(1) []
    ],
    pub SIDR7_F [
        MINOR OFFSET(0) NUMBITS(4) [],
        MAJOR OFFSET(4) NUMBITS(4) []
    ],
    /// sGFSR (and sGFSRRESTORE): global faults.
    pub SGFSR_F [
        ICF OFFSET(0) NUMBITS(1) [],
        USF OFFSET(1) NUMBITS(1) [],
        SMCF OFFSET(2) NUMBITS(1) [],
        UCBF OFFSET(3) NUMBITS(1) [],
        UCIF OFFSET(4) NUMBITS(1) [],
        CAF OFFSET(5) NUMBITS(1) [],
        EF OFFSET(6) NUMBITS(1) [],
        PF OFFSET(7) NUMBITS(1) [],
        UUT OFFSET(8) NUMBITS(1) [],
        MULTI OFFSET(31) NUMBITS(1) []
    ],
    pub SGFSYNR0_F [
        NESTED OFFSET(0) NUMBITS(1) [],
        WNR OFFSET(1) NUMBITS(1) [],
        PNU OFFSET(2) NUMBITS(1) [],
        IND OFFSET(3) NUMBITS(1) []
    ],
    pub SMR_F [
        ID OFFSET(0) NUMBITS(15) [],
        MASK OFFSET(16) NUMBITS(15) [],
        VALID OFFSET(31) NUMBITS(1) []
    ],
    pub S2CR_F [
        CBNDX OFFSET(0) NUMBITS(8) [],
        SHCFG OFFSET(8) NUMBITS(2) [],
        MTCFG OFFSET(11) NUMBITS(1) [],
        MEMATTR OFFSET(12) NUMBITS(4) [],
        TYPE OFFSET(16) NUMBITS(2) [
            Translation = 0,
            Bypass = 1,
            Fault = 2
        ],
        NSCFG OFFSET(18) NUMBITS(2) [],
        RACFG OFFSET(20) NUMBITS(2) [],
        WACFG OFFSET(22) NUMBITS(2) [],
        PRIVCFG OFFSET(24) NUMBITS(2) [],
        INSTCFG OFFSET(26) NUMBITS(2) [],
        TRANSIENTCFG OFFSET(28) NUMBITS(2) []
    ],
    pub CBAR_F [
        VMID OFFSET(0) NUMBITS(8) [],
        BPSHCFG OFFSET(8) NUMBITS(2) [],
        HYPC OFFSET(10) NUMBITS(1) [],
        FB OFFSET(11) NUMBITS(1) [],
        MEMATTR OFFSET(12) NUMBITS(4) [],
        TYPE OFFSET(16) NUMBITS(2) [
            Stage2 = 0,
            Stage1Stage2Bypass = 1,
            Stage1Stage2Fault = 2,
            Nested = 3
        ],
        BSU OFFSET(18) NUMBITS(2) [],
        RACFG OFFSET(20) NUMBITS(2) [],
        WACFG OFFSET(22) NUMBITS(2) [],
        IRPTNDX OFFSET(24) NUMBITS(8) []
    ],
    pub CBA2R_F [
        VA64 OFFSET(0) NUMBITS(1) [],
        MONC OFFSET(1) NUMBITS(1) [],
        VMID16 OFFSET(16) NUMBITS(16) []
    ],
    pub SCTLR_F [
        M OFFSET(0) NUMBITS(1) [],
        TRE OFFSET(1) NUMBITS(1) [],
        AFE OFFSET(2) NUMBITS(1) [],
        AFFD OFFSET(3) NUMBITS(1) [],
        E OFFSET(4) NUMBITS(1) [],
        CFRE OFFSET(5) NUMBITS(1) [],
        CFIE OFFSET(6) NUMBITS(1) [],
        CFCFG OFFSET(7) NUMBITS(1) [],
        HUPCF OFFSET(8) NUMBITS(1) [],
        WXN OFFSET(9) NUMBITS(1) [],
        UWXN OFFSET(10) NUMBITS(1) [],
        ASIDPNE OFFSET(12) NUMBITS(1) []
    ],
    /// TCR of an AArch64 stage-1 context (the TCR_EL1 layout, low 32 bits).
    pub TCR_F [
        T0SZ OFFSET(0) NUMBITS(6) [],
        EPD0 OFFSET(7) NUMBITS(1) [],
        IRGN0 OFFSET(8) NUMBITS(2) [],
        ORGN0 OFFSET(10) NUMBITS(2) [],
        SH0 OFFSET(12) NUMBITS(2) [],
        TG0 OFFSET(14) NUMBITS(2) [],
        T1SZ OFFSET(16) NUMBITS(6) [],
        A1 OFFSET(22) NUMBITS(1) [],
        EPD1 OFFSET(23) NUMBITS(1) [],
        IRGN1 OFFSET(24) NUMBITS(2) [],
        ORGN1 OFFSET(26) NUMBITS(2) [],
        SH1 OFFSET(28) NUMBITS(2) [],
        TG1 OFFSET(30) NUMBITS(2) []
    ],
    pub TCR2_F [
        PASIZE OFFSET(0) NUMBITS(3) [],
        AS OFFSET(4) NUMBITS(1) [],
        TBI0 OFFSET(5) NUMBITS(1) [],
        TBI1 OFFSET(6) NUMBITS(1) [],
        HA OFFSET(7) NUMBITS(1) [],
        HD OFFSET(8) NUMBITS(1) [],
        NSCFG0 OFFSET(14) NUMBITS(1) [],
        SEP OFFSET(15) NUMBITS(3) [],
        NSCFG1 OFFSET(30) NUMBITS(1) []
    ],
    /// FSR (and FSRRESTORE): context faults.
    pub FSR_F [
        TF OFFSET(1) NUMBITS(1) [],
        AFF OFFSET(2) NUMBITS(1) [],
        PF OFFSET(3) NUMBITS(1) [],
        EF OFFSET(4) NUMBITS(1) [],
        TLBMCF OFFSET(5) NUMBITS(1) [],
        TLBLKF OFFSET(6) NUMBITS(1) [],
        ASF OFFSET(7) NUMBITS(1) [],
        UUT OFFSET(8) NUMBITS(1) [],
        SS OFFSET(30) NUMBITS(1) [],
        MULTI OFFSET(31) NUMBITS(1) []
    ],
    pub FSYNR0_F [
        PLVL OFFSET(0) NUMBITS(2) [],
        WNR OFFSET(4) NUMBITS(1) [],
        PNU OFFSET(5) NUMBITS(1) [],
        IND OFFSET(6) NUMBITS(1) [],
        NSATTR OFFSET(8) NUMBITS(1) [],
        PTWF OFFSET(10) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    /// TTBR0/TTBR1 of an AArch64 context: the table address and the ASID.
    pub TTBR_F [
        BADDR OFFSET(4) NUMBITS(44) [],
        ASID OFFSET(48) NUMBITS(16) []
    ]
];

/// The bits a 32-bit field covers, in place.
pub const fn mask32<R: tock_registers::RegisterLongName>(field: Field<u32, R>) -> u32 {
    field.mask << field.shift
}

/// The MMU-500's auxiliary configuration register bits Linux touches (`arm_mmu500_reset`):
/// sACR.CACHE_LOCK makes the context banks' ACTLRs read-only; SMTNMB_TLBEN and S2CRB_TLBEN
/// are TLB allocation hints warden has no use for (stored only).
pub const SACR_CACHE_LOCK: u32 = 1 << 26;
/// CB_ACTLR: CPRE (bit 1, prefetch) and CMTLB (bit 0), both set at reset in the MMU-500.
pub const ACTLR_RESET: u32 = 0b11;
