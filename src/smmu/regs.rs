//! SMMUv3 register offsets and fields (Arm IHI 0070, chapter 6), and the decoded ID registers.

/// Register page 0 offsets.
pub const IDR0: u32 = 0x00;
pub const IDR1: u32 = 0x04;
pub const IDR5: u32 = 0x14;
pub const CR0: u32 = 0x20;
pub const CR0ACK: u32 = 0x24;
pub const CR1: u32 = 0x28;
pub const CR2: u32 = 0x2c;
pub const GBPA: u32 = 0x44;
pub const IRQ_CTRL: u32 = 0x50;
pub const IRQ_CTRLACK: u32 = 0x54;
pub const GERROR: u32 = 0x60;
pub const GERRORN: u32 = 0x64;
pub const STRTAB_BASE: u32 = 0x80;
pub const STRTAB_BASE_CFG: u32 = 0x88;
pub const CMDQ_BASE: u32 = 0x90;
pub const CMDQ_PROD: u32 = 0x98;
pub const CMDQ_CONS: u32 = 0x9c;
pub const EVTQ_BASE: u32 = 0xa0;
/// The event queue's PROD and CONS live in register page 1 (64 KiB above page 0).
pub const EVTQ_PROD: u32 = 0x1_00a8;
pub const EVTQ_CONS: u32 = 0x1_00ac;
/// Both register pages: what must be mapped (as device memory) for this driver.
pub const REGS_SIZE: u64 = 0x2_0000;

/// Further page 0 offsets (the virtual SMMU emulates every register Linux touches).
pub const IDR2: u32 = 0x08;
pub const IDR3: u32 = 0x0c;
pub const IDR4: u32 = 0x10;
pub const IIDR: u32 = 0x18;
pub const AIDR: u32 = 0x1c;
pub const AGBPA: u32 = 0x48;
/// 64-bit MSI address registers (RES0 without IDR0.MSI) and their 32-bit companions.
pub const GERROR_IRQ_CFG0: u32 = 0x68;
pub const GERROR_IRQ_CFG1: u32 = 0x70;
pub const GERROR_IRQ_CFG2: u32 = 0x74;
pub const EVTQ_IRQ_CFG0: u32 = 0xb0;
pub const EVTQ_IRQ_CFG1: u32 = 0xb8;
pub const EVTQ_IRQ_CFG2: u32 = 0xbc;
pub const PRIQ_BASE: u32 = 0xc0;
pub const PRIQ_IRQ_CFG0: u32 = 0xd0;
pub const PRIQ_PROD: u32 = 0x1_00c8;
pub const PRIQ_CONS: u32 = 0x1_00cc;
/// The second 64 KiB register page.
pub const PAGE1: u32 = 0x1_0000;

// IDR0
pub const IDR0_S2P: u32 = 1 << 0;
pub const IDR0_S1P: u32 = 1 << 1;
pub const IDR0_TTF_SHIFT: u32 = 2;
pub const IDR0_COHACC: u32 = 1 << 4;
pub const IDR0_BTM: u32 = 1 << 5;
pub const IDR0_HYP: u32 = 1 << 9;
pub const IDR0_VMID16: u32 = 1 << 18;
pub const IDR0_TTENDIAN_SHIFT: u32 = 21;
pub const IDR0_ST_LEVEL_SHIFT: u32 = 27;
pub const IDR0_ASID16: u32 = 1 << 12;
pub const IDR0_MSI: u32 = 1 << 13;
pub const IDR0_TTF_AARCH64: u32 = 0b10;
pub const IDR0_TTENDIAN_LE: u32 = 0b10;
pub const IDR0_STALL_MODEL_SHIFT: u32 = 24;
/// IDR0.STALL_MODEL = 0b01: stalling is not supported.
pub const IDR0_STALL_MODEL_NONE: u32 = 0b01;
/// IDR0.STALL_MODEL = 0b00: stalls supported (STE.S1STALLD can disable them); 0b10: forced.
pub const IDR0_STALL_MODEL_SUPPORTED: u32 = 0b00;
pub const IDR0_STALL_MODEL_FORCED: u32 = 0b10;
pub const IDR0_TERM_MODEL: u32 = 1 << 26;
pub const IDR0_ST_LEVEL_2LVL: u32 = 0b01;

// IDR1
pub const IDR1_SIDSIZE_MASK: u32 = 0x3f;
pub const IDR1_EVTQS_SHIFT: u32 = 16;
pub const IDR1_CMDQS_SHIFT: u32 = 21;
pub const IDR1_QUEUES_PRESET: u32 = 1 << 29;
pub const IDR1_TABLES_PRESET: u32 = 1 << 30;

// IDR5
pub const IDR5_OAS_MASK: u32 = 0x7;
pub const IDR5_GRAN4K: u32 = 1 << 4;

// CR0
pub const CR0_SMMUEN: u32 = 1 << 0;
pub const CR0_EVTQEN: u32 = 1 << 2;
pub const CR0_CMDQEN: u32 = 1 << 3;
pub const CR0_PRIQEN: u32 = 1 << 1;
pub const CR0_ATSCHK: u32 = 1 << 4;

// CR1: cacheability 1 = write-back (not the TCR encoding), shareability 3 = inner.
pub const CR1_CACHE_WB: u32 = 1;
pub const CR1_SH_ISH: u32 = 3;
pub const CR1_QUEUE_IC_SHIFT: u32 = 0;
pub const CR1_QUEUE_OC_SHIFT: u32 = 2;
pub const CR1_QUEUE_SH_SHIFT: u32 = 4;
pub const CR1_TABLE_IC_SHIFT: u32 = 6;
pub const CR1_TABLE_OC_SHIFT: u32 = 8;
pub const CR1_TABLE_SH_SHIFT: u32 = 10;

// CR2
pub const CR2_RECINVSID: u32 = 1 << 1;
pub const CR2_PTM: u32 = 1 << 2;

// GBPA
pub const GBPA_ABORT: u32 = 1 << 20;
pub const GBPA_UPDATE: u32 = 1 << 31;

// IRQ_CTRL / IRQ_CTRLACK
pub const IRQ_CTRL_GERROR_IRQEN: u32 = 1 << 0;
pub const IRQ_CTRL_PRIQ_IRQEN: u32 = 1 << 1;
pub const IRQ_CTRL_EVTQ_IRQEN: u32 = 1 << 2;

// GERROR / GERRORN
pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
pub const GERROR_EVTQ_ABT_ERR: u32 = 1 << 2;
/// A CMD_SYNC's completion MSI write was aborted.
pub const GERROR_MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
/// An event queue MSI write was aborted.
pub const GERROR_MSI_EVTQ_ABT_ERR: u32 = 1 << 5;
/// A GERROR MSI write was aborted.
pub const GERROR_MSI_GERROR_ABT_ERR: u32 = 1 << 7;
pub const GERROR_SFM_ERR: u32 = 1 << 8;
/// Every defined GERROR bit up to DPT_ERR.
pub const GERROR_MASK: u32 = 0x7fd;

// STRTAB_BASE / _CFG
pub const STRTAB_BASE_RA: u64 = 1 << 62;
pub const STRTAB_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_ffc0; // [51:6]
pub const STRTAB_CFG_FMT_2LVL: u32 = 1 << 16;
pub const STRTAB_CFG_SPLIT_SHIFT: u32 = 6;
pub const STRTAB_CFG_FMT_SHIFT: u32 = 16;
pub const STRTAB_CFG_LOG2SIZE_MASK: u32 = 0x3f;
/// STRTAB_BASE_CFG's defined fields: FMT[17:16], SPLIT[10:6], LOG2SIZE[5:0].
pub const STRTAB_CFG_MASK: u32 = (3 << 16) | (0x1f << 6) | 0x3f;

// Queue base registers: RA/WA hint, ADDR[51:5], LOG2SIZE[4:0].
pub const Q_BASE_RWA: u64 = 1 << 62;
pub const Q_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_ffe0;
pub const Q_BASE_LOG2SIZE_MASK: u64 = 0x1f;
/// CMDQ_PROD.WR / CMDQ_CONS.RD / EVTQ_PROD.WR / EVTQ_CONS.RD: index and wrap, [19:0].
pub const Q_PTR_MASK: u32 = 0xf_ffff;

/// CMDQ_CONS.ERR[30:24].
pub const CMDQ_CONS_ERR_SHIFT: u32 = 24;
pub const CMDQ_CONS_ERR_MASK: u32 = 0x7f;
/// EVTQ_PROD.OVFLG / EVTQ_CONS.OVACKFLG.
pub const Q_OVERFLOW_FLAG: u32 = 1 << 31;

/// Output address size in bits for an IDR5.OAS (or STE.S2PS / VTCR.PS) encoding.
pub fn oas_bits(field: u32) -> Option<u32> {
    crate::mm::tcr::address_size_bits(u64::from(field))
}

/// What warden reads from IDR0, IDR1 and IDR5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub stage1: bool,
    pub stage2: bool,
    /// IDR0.TTF includes AArch64 tables (0b10 or 0b11).
    pub aarch64_tables: bool,
    /// IDR0.TTENDIAN allows little-endian walks (0b00 mixed or 0b10 little).
    pub little_endian: bool,
    pub coherent: bool,
    pub broadcast_tlb: bool,
    pub hyp: bool,
    pub vmid16: bool,
    pub asid16: bool,
    pub two_level_strtab: bool,
    pub sid_bits: u32,
    /// log2 of the largest queue in entries.
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
    /// Queue or table base registers are fixed by the implementation.
    pub preset: bool,
    /// IDR5.OAS, raw and in bits (`None`: reserved encoding).
    pub oas_field: u32,
    pub oas_bits: Option<u32>,
    pub gran4k: bool,
    /// IDR0.STALL_MODEL: 0b00 stalls supported, 0b01 not supported, 0b10 forced.
    pub stall_model: u32,
}

impl Features {
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Self {
        let ttf = (idr0 >> IDR0_TTF_SHIFT) & 3;
        let ttendian = (idr0 >> IDR0_TTENDIAN_SHIFT) & 3;
        let oas_field = idr5 & IDR5_OAS_MASK;
        Self {
            stage1: idr0 & IDR0_S1P != 0,
            stage2: idr0 & IDR0_S2P != 0,
            aarch64_tables: ttf & 0b10 != 0,
            little_endian: ttendian == 0b00 || ttendian == 0b10,
            coherent: idr0 & IDR0_COHACC != 0,
            broadcast_tlb: idr0 & IDR0_BTM != 0,
            hyp: idr0 & IDR0_HYP != 0,
            vmid16: idr0 & IDR0_VMID16 != 0,
            asid16: idr0 & IDR0_ASID16 != 0,
            two_level_strtab: (idr0 >> IDR0_ST_LEVEL_SHIFT) & 3 == 1,
            stall_model: (idr0 >> IDR0_STALL_MODEL_SHIFT) & 3,
            sid_bits: idr1 & IDR1_SIDSIZE_MASK,
            cmdq_log2: (idr1 >> IDR1_CMDQS_SHIFT) & 0x1f,
            evtq_log2: (idr1 >> IDR1_EVTQS_SHIFT) & 0x1f,
            preset: idr1 & (IDR1_QUEUES_PRESET | IDR1_TABLES_PRESET) != 0,
            oas_field,
            oas_bits: oas_bits(oas_field),
            gran4k: idr5 & IDR5_GRAN4K != 0,
        }
    }
}
