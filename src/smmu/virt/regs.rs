//! The register file the host sees (both 64 KiB pages), as pure state: `read(offset, size)` and
//! `write(offset, size, value) -> Effects`. No memory is touched here; the command queue,
//! stream table and event queue are driven by [`super::VirtSmmu`] from the [`Effects`].
//!
//! What is advertised (IDR0..5) is what warden can honour on the real SMMU for a host whose
//! stage 1 is nested under warden's stage 2: stage 1 only, AArch64 little-endian tables,
//! 2-level stream table, terminate (no stall) model, MSIs (IDR0.MSI: a CMD_SYNC's completion
//! word, the event queue's and GERROR's interrupts written to host memory, see
//! [`super::VirtSmmu`]), no ATS/PRI/SEV/HYP/BTM/HTTU, no substreams, no range invalidation. IIDR = 0 (implementer 0) matches none of Linux's errata.
//!
//! Access rules follow the architecture (IHI 0070, 6.3): 64-bit registers may be accessed as
//! one 64-bit or two 32-bit halves, 32-bit registers only as 32 bits; anything else (other
//! widths, misalignment, unknown offsets) is RAZ/WI and counted. Guarded registers (stream
//! table and queue bases, CR1, CR2, CMDQ_CONS, EVTQ_PROD) ignore writes while what guards them
//! is enabled. CR0ACK and IRQ_CTRLACK follow their registers at once, and GBPA.UPDATE reads 0
//! as soon as it is written: every update is complete when the trapped write returns.
//!
//! GBPA resets to [`GBPA_RESET`]: bypass (ABORT = 0, SHCFG = use incoming), the value QEMU's
//! SMMUv3 resets to (`SMMU_GBPA_RESET_VAL`). IHI 0070 leaves ABORT's reset value IMPLEMENTATION
//! DEFINED (an implementation may reset it to 1 for default deny); bypass is what the SMMU under
//! a QEMU host resets to, so a bootloader that drives no SMMU (Debian's U-Boot) can do DMA.
//! Bypass here never means real bypass: while SMMUEN = 0 and ABORT = 0, [`super::VirtSmmu`]
//! gives every host stream warden's stage 2 alone, as for a host STE asking for bypass. A host
//! that writes ABORT = 1 (Linux's `disable_bypass` path) gets abort.

use crate::smmu::queue::QueueShape;
use crate::smmu::regs::*;

/// What warden advertises; the rest of IDR0..5 is fixed (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertised {
    /// IDR1.SIDSIZE (at most 32).
    pub sid_bits: u32,
    /// IDR5.OAS encoding: the host's physical address size, i.e. its IPA size.
    pub oas_field: u32,
    /// IDR0.ASID16: only if the real SMMU has 16-bit ASIDs.
    pub asid16: bool,
    /// IDR1.CMDQS / EVTQS: log2 of the largest queues (at most 19).
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
}

impl Advertised {
    /// Linux needs more than 64 command queue entries (CMDQ_BATCH_ENTRIES).
    pub const MIN_CMDQ_LOG2: u32 = 7;

    pub fn idr0(&self) -> u32 {
        IDR0_S1P
            | (IDR0_TTF_AARCH64 << IDR0_TTF_SHIFT)
            | IDR0_COHACC
            | if self.asid16 { IDR0_ASID16 } else { 0 }
            | IDR0_MSI
            | (IDR0_TTENDIAN_LE << IDR0_TTENDIAN_SHIFT)
            | (IDR0_STALL_MODEL_NONE << IDR0_STALL_MODEL_SHIFT)
            | IDR0_TERM_MODEL
            | (IDR0_ST_LEVEL_2LVL << IDR0_ST_LEVEL_SHIFT)
    }

    pub fn idr1(&self) -> u32 {
        (self.sid_bits.min(32) & IDR1_SIDSIZE_MASK)
            | (self.evtq_log2.min(19) << IDR1_EVTQS_SHIFT)
            | (self.cmdq_log2.min(19) << IDR1_CMDQS_SHIFT)
    }

    pub fn idr5(&self) -> u32 {
        (self.oas_field & IDR5_OAS_MASK) | IDR5_GRAN4K
    }

    /// Output address size in bits (32 for a reserved encoding, the smallest).
    pub fn oas_bits(&self) -> u32 {
        oas_bits(self.oas_field).unwrap_or(32)
    }

    pub fn asid_mask(&self) -> u16 {
        if self.asid16 { 0xffff } else { 0xff }
    }
}

/// What a register write asks the emulation to do next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Look at the command queue (PROD written, queue enabled, or a command error acknowledged).
    pub cmdq_kick: bool,
    /// CR0.SMMUEN changed to this value: re-derive every host stream's real STE.
    pub smmu_enable: Option<bool>,
    /// A GBPA update changed GBPA.ABORT to this value (what a disabled SMMU does with traffic).
    pub gbpa_abort: Option<bool>,
    /// The access was not one the architecture defines (RAZ/WI).
    pub bad_access: bool,
}

/// 64-bit registers: accessible as 64 bits or as two 32-bit halves.
const REGS64: [u32; 7] =
    [GERROR_IRQ_CFG0, STRTAB_BASE, CMDQ_BASE, EVTQ_BASE, EVTQ_IRQ_CFG0, PRIQ_BASE, PRIQ_IRQ_CFG0];

/// [`REGS64`] as a bit per 8-byte slot of page 0's first 256 bytes, where they all are: one
/// shift and test on every trapped access instead of two searches of the list (issue 16).
const REGS64_SLOTS: u32 = {
    let mut slots = 0u32;
    let mut i = 0;
    while i < REGS64.len() {
        assert!(REGS64[i] < 0x100 && REGS64[i].is_multiple_of(8));
        slots |= 1 << (REGS64[i] / 8);
        i += 1;
    }
    slots
};

/// Whether `offset` is the start of a 64-bit register.
const fn is_reg64(offset: u32) -> bool {
    offset < 0x100 && offset.is_multiple_of(8) && (REGS64_SLOTS >> (offset / 8)) & 1 != 0
}

const CR0_MASK: u32 = CR0_SMMUEN | CR0_EVTQEN | CR0_CMDQEN;
const CR1_MASK: u32 = 0xfff;
const CR2_MASK: u32 = CR2_RECINVSID | CR2_PTM;
const IRQ_CTRL_MASK: u32 = IRQ_CTRL_GERROR_IRQEN | IRQ_CTRL_EVTQ_IRQEN;
/// GERROR bits this SMMU can raise (no PRI): CMDQ_ERR, EVTQ_ABT_ERR, SFM_ERR and the aborted
/// MSI writes of CMD_SYNC, the event queue and GERROR itself.
pub const GERROR_IMPLEMENTED: u32 = GERROR_CMDQ_ERR
    | GERROR_EVTQ_ABT_ERR
    | GERROR_SFM_ERR
    | GERROR_MSI_CMDQ_ABT_ERR
    | GERROR_MSI_EVTQ_ABT_ERR
    | GERROR_MSI_GERROR_ABT_ERR;
/// `*_IRQ_CFG0.ADDR`, bits [51:2] (0: no MSI).
const MSI_ADDR_MASK: u64 = 0x000f_ffff_ffff_fffc;
/// `*_IRQ_CFG2`: MemAttr [3:0] and SH [5:4].
const MSI_CFG2_MASK: u32 = 0x3f;
/// GBPA fields other than UPDATE: ABORT, INSTCFG, PRIVCFG, SHCFG, ALLOCCFG, MTCFG, MemAttr.
const GBPA_FIELDS: u32 = GBPA_ABORT | (0xf << 16) | (3 << 12) | (0xf << 8) | (1 << 4) | 0xf;
/// GBPA.SHCFG = 0b01: use the incoming shareability.
const GBPA_SHCFG_USE_INCOMING: u32 = 1 << 12;
/// GBPA at reset: bypass with the incoming attributes (QEMU's `SMMU_GBPA_RESET_VAL`, 0x1000).
pub const GBPA_RESET: u32 = GBPA_SHCFG_USE_INCOMING;
const STRTAB_BASE_MASK: u64 = STRTAB_BASE_RA | STRTAB_BASE_ADDR_MASK;
const Q_BASE_MASK: u64 = Q_BASE_RWA | Q_BASE_ADDR_MASK | Q_BASE_LOG2SIZE_MASK;
const CMDQ_CONS_ERR_FIELD: u32 = CMDQ_CONS_ERR_MASK << CMDQ_CONS_ERR_SHIFT;

/// One interrupt's MSI registers (`*_IRQ_CFG0/1/2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MsiConfig {
    /// ADDR [51:2]; 0: no MSI (the wired interrupt).
    address: u64,
    data: u32,
    attributes: u32,
}

impl MsiConfig {
    fn target(&self) -> Option<(u64, u32)> {
        (self.address != 0).then_some((self.address, self.data))
    }
}

/// The emulated registers.
#[derive(Clone, Debug)]
pub struct RegisterFile {
    adv: Advertised,
    cr0: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerror: u32,
    gerrorn: u32,
    /// GERROR_IRQ_CFG0/1/2 and EVTQ_IRQ_CFG0/1/2: the MSI address (0: the wired interrupt),
    /// data and attributes.
    gerror_msi: MsiConfig,
    evtq_msi: MsiConfig,
    strtab_base: u64,
    strtab_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    /// RD[19:0] and ERR[30:24].
    cmdq_cons: u32,
    evtq_base: u64,
    /// WR[19:0] and OVFLG[31].
    evtq_prod: u32,
    /// RD[19:0] and OVACKFLG[31].
    evtq_cons: u32,
    bad_accesses: u64,
    /// GBPA updates with ABORT = 0.
    bypass_requests: u64,
}

impl RegisterFile {
    /// Reset state: everything disabled, GBPA = [`GBPA_RESET`] (bypass: see the module comment).
    pub fn new(adv: Advertised) -> Self {
        Self {
            adv,
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: GBPA_RESET,
            irq_ctrl: 0,
            gerror: 0,
            gerrorn: 0,
            gerror_msi: MsiConfig::default(),
            evtq_msi: MsiConfig::default(),
            strtab_base: 0,
            strtab_cfg: 0,
            cmdq_base: 0,
            cmdq_prod: 0,
            cmdq_cons: 0,
            evtq_base: 0,
            evtq_prod: 0,
            evtq_cons: 0,
            bad_accesses: 0,
            bypass_requests: 0,
        }
    }

    pub fn advertised(&self) -> &Advertised {
        &self.adv
    }

    /// A read of `size` bytes (4 or 8) at `offset` from the start of page 0.
    pub fn read(&mut self, offset: u32, size: u8) -> u64 {
        match self.width(offset, size) {
            Some(Width::Full64(reg)) => self.read64(reg),
            Some(Width::Low(reg)) => self.read64(reg) & 0xffff_ffff,
            Some(Width::High(reg)) => self.read64(reg) >> 32,
            Some(Width::Reg32) => u64::from(self.read32(offset)),
            None => {
                self.bad_accesses += 1;
                0
            }
        }
    }

    /// A write of `size` bytes (4 or 8) at `offset`.
    pub fn write(&mut self, offset: u32, size: u8, value: u64) -> Effects {
        match self.width(offset, size) {
            Some(Width::Full64(reg)) => self.write64(reg, value),
            Some(Width::Low(reg)) => {
                let v = (self.read64(reg) & !0xffff_ffff) | (value & 0xffff_ffff);
                self.write64(reg, v)
            }
            Some(Width::High(reg)) => {
                let v = (self.read64(reg) & 0xffff_ffff) | ((value & 0xffff_ffff) << 32);
                self.write64(reg, v)
            }
            Some(Width::Reg32) => self.write32(offset, value as u32),
            None => {
                self.bad_accesses += 1;
                Effects { bad_access: true, ..Effects::default() }
            }
        }
    }

    fn width(&self, offset: u32, size: u8) -> Option<Width> {
        if offset >= 2 * PAGE1 {
            return None;
        }
        match size {
            8 if is_reg64(offset) => Some(Width::Full64(offset)),
            4 if offset.is_multiple_of(4) => {
                if is_reg64(offset) {
                    Some(Width::Low(offset))
                } else if offset >= 4 && is_reg64(offset - 4) {
                    Some(Width::High(offset - 4))
                } else {
                    Some(Width::Reg32)
                }
            }
            _ => None,
        }
    }

    fn read64(&self, reg: u32) -> u64 {
        match reg {
            STRTAB_BASE => self.strtab_base,
            CMDQ_BASE => self.cmdq_base,
            EVTQ_BASE => self.evtq_base,
            GERROR_IRQ_CFG0 => self.gerror_msi.address,
            EVTQ_IRQ_CFG0 => self.evtq_msi.address,
            // The PRI queue: RES0 on this SMMU.
            _ => 0,
        }
    }

    fn read32(&self, offset: u32) -> u32 {
        match offset {
            IDR0 => self.adv.idr0(),
            IDR1 => self.adv.idr1(),
            IDR5 => self.adv.idr5(),
            CR0 | CR0ACK => self.cr0,
            CR1 => self.cr1,
            CR2 => self.cr2,
            GBPA => self.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => self.irq_ctrl,
            GERROR => self.gerror,
            GERRORN => self.gerrorn,
            STRTAB_BASE_CFG => self.strtab_cfg,
            CMDQ_PROD => self.cmdq_prod,
            CMDQ_CONS => self.cmdq_cons,
            EVTQ_PROD => self.evtq_prod,
            EVTQ_CONS => self.evtq_cons,
            GERROR_IRQ_CFG1 => self.gerror_msi.data,
            GERROR_IRQ_CFG2 => self.gerror_msi.attributes,
            EVTQ_IRQ_CFG1 => self.evtq_msi.data,
            EVTQ_IRQ_CFG2 => self.evtq_msi.attributes,
            // IDR2/3/4, IIDR, AIDR (SMMUv3.0), AGBPA, PRIQ_*, reserved: zero.
            _ => 0,
        }
    }

    fn write64(&mut self, reg: u32, value: u64) -> Effects {
        match reg {
            STRTAB_BASE if !self.smmu_enabled() => self.strtab_base = value & STRTAB_BASE_MASK,
            CMDQ_BASE if self.cr0 & CR0_CMDQEN == 0 => self.cmdq_base = value & Q_BASE_MASK,
            EVTQ_BASE if self.cr0 & CR0_EVTQEN == 0 => self.evtq_base = value & Q_BASE_MASK,
            GERROR_IRQ_CFG0 if self.irq_ctrl & IRQ_CTRL_GERROR_IRQEN == 0 => {
                self.gerror_msi.address = value & MSI_ADDR_MASK
            }
            EVTQ_IRQ_CFG0 if self.irq_ctrl & IRQ_CTRL_EVTQ_IRQEN == 0 => {
                self.evtq_msi.address = value & MSI_ADDR_MASK
            }
            // Guarded while enabled (the MSI registers by their IRQEN), or RES0 (PRI): ignored.
            _ => {}
        }
        Effects::default()
    }

    fn write32(&mut self, offset: u32, value: u32) -> Effects {
        let mut fx = Effects::default();
        match offset {
            CR0 => {
                let old = self.cr0;
                self.cr0 = value & CR0_MASK;
                if (old ^ self.cr0) & CR0_SMMUEN != 0 {
                    fx.smmu_enable = Some(self.cr0 & CR0_SMMUEN != 0);
                }
                if old & CR0_CMDQEN == 0 && self.cr0 & CR0_CMDQEN != 0 {
                    fx.cmdq_kick = true;
                }
            }
            CR1 if self.cr0 == 0 => self.cr1 = value & CR1_MASK,
            CR2 if !self.smmu_enabled() => self.cr2 = value & CR2_MASK,
            GBPA if value & GBPA_UPDATE != 0 => {
                // Only a write with UPDATE = 1 changes GBPA; the update completes at once.
                let old = self.gbpa;
                self.gbpa = value & GBPA_FIELDS;
                if self.gbpa & GBPA_ABORT == 0 {
                    self.bypass_requests += 1;
                }
                if (old ^ self.gbpa) & GBPA_ABORT != 0 {
                    fx.gbpa_abort = Some(self.gbpa & GBPA_ABORT != 0);
                }
            }
            IRQ_CTRL => self.irq_ctrl = value & IRQ_CTRL_MASK,
            GERRORN => {
                let was_pending = self.cmdq_error_active();
                self.gerrorn = value & GERROR_IMPLEMENTED;
                if was_pending && !self.cmdq_error_active() {
                    fx.cmdq_kick = true;
                }
            }
            STRTAB_BASE_CFG if !self.smmu_enabled() => self.strtab_cfg = value & STRTAB_CFG_MASK,
            CMDQ_PROD => fx = self.write_cmdq_prod(value),
            CMDQ_CONS if self.cr0 & CR0_CMDQEN == 0 => self.cmdq_cons = value & Q_PTR_MASK,
            EVTQ_PROD if self.cr0 & CR0_EVTQEN == 0 => {
                self.evtq_prod = value & (Q_PTR_MASK | Q_OVERFLOW_FLAG)
            }
            EVTQ_CONS => self.evtq_cons = value & (Q_PTR_MASK | Q_OVERFLOW_FLAG),
            GERROR_IRQ_CFG1 if self.irq_ctrl & IRQ_CTRL_GERROR_IRQEN == 0 => {
                self.gerror_msi.data = value
            }
            GERROR_IRQ_CFG2 if self.irq_ctrl & IRQ_CTRL_GERROR_IRQEN == 0 => {
                self.gerror_msi.attributes = value & MSI_CFG2_MASK
            }
            EVTQ_IRQ_CFG1 if self.irq_ctrl & IRQ_CTRL_EVTQ_IRQEN == 0 => self.evtq_msi.data = value,
            EVTQ_IRQ_CFG2 if self.irq_ctrl & IRQ_CTRL_EVTQ_IRQEN == 0 => {
                self.evtq_msi.attributes = value & MSI_CFG2_MASK
            }
            // ID registers, CR0ACK, IRQ_CTRLACK, GERROR: read-only. Guarded registers while
            // enabled, RES0 and reserved offsets: ignored.
            _ => {}
        }
        fx
    }

    /// A 32-bit write of CMDQ_PROD, what [`Self::write`] does for it without the decode of
    /// the offset and width (issue 16: the write of every batch of commands).
    pub fn write_cmdq_prod(&mut self, value: u32) -> Effects {
        self.cmdq_prod = value & Q_PTR_MASK;
        Effects { cmdq_kick: true, ..Effects::default() }
    }

    // ---- State the emulation reads and updates ----

    pub fn smmu_enabled(&self) -> bool {
        self.cr0 & CR0_SMMUEN != 0
    }

    /// GBPA.ABORT: while SMMUEN = 0, incoming transactions abort (else they bypass).
    pub fn gbpa_abort(&self) -> bool {
        self.gbpa & GBPA_ABORT != 0
    }

    pub fn cmdq_enabled(&self) -> bool {
        self.cr0 & CR0_CMDQEN != 0
    }

    pub fn evtq_enabled(&self) -> bool {
        self.cr0 & CR0_EVTQEN != 0
    }

    pub fn recinvsid(&self) -> bool {
        self.cr2 & CR2_RECINVSID != 0
    }

    pub fn strtab_base(&self) -> u64 {
        self.strtab_base
    }

    pub fn strtab_cfg(&self) -> u32 {
        self.strtab_cfg
    }

    /// The command queue's shape (LOG2SIZE capped at IDR1.CMDQS) and its base address (aligned
    /// to the larger of its size and 32 bytes, as the SMMU does).
    pub fn cmdq_geometry(&self) -> (QueueShape, u64) {
        queue_geometry(self.cmdq_base, self.adv.cmdq_log2, 16)
    }

    pub fn evtq_geometry(&self) -> (QueueShape, u64) {
        queue_geometry(self.evtq_base, self.adv.evtq_log2, 32)
    }

    pub fn cmdq_prod(&self) -> u32 {
        self.cmdq_prod
    }

    pub fn cmdq_cons(&self) -> u32 {
        self.cmdq_cons & Q_PTR_MASK
    }

    /// Advances CONS.RD (ERR is left as it is: UNKNOWN while no error is active).
    pub fn set_cmdq_cons(&mut self, rd: u32) {
        self.cmdq_cons = (self.cmdq_cons & CMDQ_CONS_ERR_FIELD) | (rd & Q_PTR_MASK);
    }

    /// Whether the command queue holds commands the SMMU would consume now: enabled, no error
    /// active, PROD ahead of CONS. (The emulation consumes on the `CMDQ_PROD` write, so a
    /// `CMDQ_CONS` poll usually finds nothing left.)
    pub fn cmdq_pending(&self) -> bool {
        let (shape, _) = self.cmdq_geometry();
        self.cmdq_enabled()
            && !self.cmdq_error_active()
            && !shape.is_empty(shape.pointer(self.cmdq_prod), shape.pointer(self.cmdq_cons))
    }

    pub fn cmdq_error_active(&self) -> bool {
        (self.gerror ^ self.gerrorn) & GERROR_CMDQ_ERR != 0
    }

    /// Stops the command queue at CONS with `code` in CONS.ERR and GERROR.CMDQ_ERR active.
    /// Returns whether the GERROR interrupt should be raised.
    pub fn raise_cmdq_error(&mut self, code: u8) -> bool {
        self.cmdq_cons = (self.cmdq_cons & Q_PTR_MASK)
            | ((u32::from(code) & CMDQ_CONS_ERR_MASK) << CMDQ_CONS_ERR_SHIFT);
        self.raise_gerror(GERROR_CMDQ_ERR)
    }

    /// Toggles the GERROR bits in `mask` that are not already active (GERROR != GERRORN).
    /// Returns whether the GERROR interrupt should be raised.
    pub fn raise_gerror(&mut self, mask: u32) -> bool {
        let pending = self.gerror ^ self.gerrorn;
        let new = mask & GERROR_IMPLEMENTED & !pending;
        self.gerror ^= new;
        new != 0 && self.irq_ctrl & IRQ_CTRL_GERROR_IRQEN != 0
    }

    /// GERROR's MSI (address, data), if the host configured one (address not 0).
    pub fn gerror_msi(&self) -> Option<(u64, u32)> {
        self.gerror_msi.target()
    }

    /// The event queue's MSI (address, data), if the host configured one.
    pub fn evtq_msi(&self) -> Option<(u64, u32)> {
        self.evtq_msi.target()
    }

    pub fn evtq_irq_enabled(&self) -> bool {
        self.irq_ctrl & IRQ_CTRL_EVTQ_IRQEN != 0
    }

    pub fn evtq_prod(&self) -> u32 {
        self.evtq_prod
    }

    pub fn evtq_cons(&self) -> u32 {
        self.evtq_cons
    }

    /// Sets EVTQ_PROD (WR and OVFLG), as the SMMU does when it writes a record or overflows.
    pub fn set_evtq_prod(&mut self, value: u32) {
        self.evtq_prod = value & (Q_PTR_MASK | Q_OVERFLOW_FLAG);
    }

    pub fn bad_accesses(&self) -> u64 {
        self.bad_accesses
    }

    /// GBPA updates with ABORT = 0 (asking that a disabled SMMU let traffic through).
    pub fn bypass_requests(&self) -> u64 {
        self.bypass_requests
    }
}

#[derive(Clone, Copy, Debug)]
enum Width {
    Full64(u32),
    Low(u32),
    High(u32),
    Reg32,
}

fn queue_geometry(base_reg: u64, max_log2: u32, entry_bytes: u64) -> (QueueShape, u64) {
    let log2 = ((base_reg & Q_BASE_LOG2SIZE_MASK) as u32).min(max_log2).min(19);
    let shape = QueueShape::new(log2);
    let bytes = (u64::from(shape.entries()) * entry_bytes).max(32);
    (shape, base_reg & Q_BASE_ADDR_MASK & !(bytes - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn adv() -> Advertised {
        Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 }
    }

    fn idr_field(v: u32, lo: u32, width: u32) -> u32 {
        (v >> lo) & ((1 << width) - 1)
    }

    #[test]
    fn id_registers_advertise_stage1_only() {
        let mut r = RegisterFile::new(adv());
        let idr0 = r.read(IDR0, 4) as u32;
        assert_eq!(idr0 & IDR0_S2P, 0, "no stage 2");
        assert_ne!(idr0 & IDR0_S1P, 0);
        assert_eq!(idr_field(idr0, 2, 2), 0b10, "TTF AArch64");
        assert_ne!(idr0 & IDR0_COHACC, 0);
        assert_eq!(idr_field(idr0, 5, 1), 0, "no BTM");
        assert_eq!(idr_field(idr0, 6, 2), 0, "no HTTU");
        assert_eq!(idr_field(idr0, 9, 1), 0, "no HYP");
        assert_eq!(idr_field(idr0, 10, 1), 0, "no ATS");
        assert_ne!(idr0 & IDR0_ASID16, 0);
        assert_eq!(idr_field(idr0, 13, 2), 0b01, "MSI, no SEV");
        assert_eq!(idr_field(idr0, 16, 1), 0, "no PRI");
        assert_eq!(idr_field(idr0, 18, 2), 0, "no VMID16, no CD2L");
        assert_eq!(idr_field(idr0, 21, 2), 0b10, "little-endian");
        assert_eq!(idr_field(idr0, 24, 2), 0b01, "no stall");
        assert_eq!(idr_field(idr0, 26, 1), 1, "terminate model: abort");
        assert_eq!(idr_field(idr0, 27, 2), 0b01, "2-level stream table");
        let idr1 = r.read(IDR1, 4) as u32;
        assert_eq!(idr_field(idr1, 0, 6), 16, "SIDSIZE");
        assert_eq!(idr_field(idr1, 6, 5), 0, "no substreams");
        assert_eq!(idr_field(idr1, 11, 5), 0, "no PRI queue");
        assert_eq!(idr_field(idr1, 16, 5), 7);
        assert_eq!(idr_field(idr1, 21, 5), 8);
        assert_eq!(idr1 >> 26, 0, "no presets, REL, ATTR_*_OVR");
        assert_eq!(r.read(IDR5, 4), 0b010 | (1 << 4), "OAS 40 bits, 4K only, no VAX");
        for off in [IDR2, IDR3, IDR4, IIDR, AIDR, AGBPA] {
            assert_eq!(r.read(off, 4), 0, "{off:#x}");
        }
        let no16 = Advertised { asid16: false, ..adv() };
        assert_eq!(RegisterFile::new(no16).read(IDR0, 4) as u32 & IDR0_ASID16, 0);
        // ID registers are read-only.
        r.write(IDR0, 4, 0xffff_ffff);
        assert_eq!(r.read(IDR0, 4) as u32, idr0);
    }

    #[test]
    fn cr0_ack_follows_and_reports_transitions() {
        let mut r = RegisterFile::new(adv());
        let fx = r.write(CR0, 4, u64::from(CR0_CMDQEN));
        assert!(fx.cmdq_kick);
        assert_eq!(fx.smmu_enable, None);
        assert_eq!(r.read(CR0ACK, 4), u64::from(CR0_CMDQEN));
        let fx = r.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN | CR0_PRIQEN));
        assert!(!fx.cmdq_kick, "already enabled");
        assert_eq!(fx.smmu_enable, Some(true));
        assert_eq!(r.read(CR0ACK, 4), u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN), "no PRI");
        let fx = r.write(CR0, 4, 0);
        assert_eq!(fx.smmu_enable, Some(false));
        assert_eq!(r.read(CR0ACK, 4), 0);
        // CR0ACK is read-only.
        r.write(CR0ACK, 4, 1);
        assert_eq!(r.read(CR0ACK, 4), 0);
    }

    #[test]
    fn gbpa_resets_to_bypass_and_updates_complete_at_once() {
        let mut r = RegisterFile::new(adv());
        assert_eq!(r.read(GBPA, 4), 0x1000, "reset: QEMU's SMMU_GBPA_RESET_VAL, bypass");
        assert!(!r.gbpa_abort());
        // Linux's arm_smmu_update_gbpa(smmu, GBPA_ABORT, 0) (`disable_bypass`): abort.
        let fx = r.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT | 0x1000));
        assert_eq!(fx.gbpa_abort, Some(true));
        assert_eq!(r.read(GBPA, 4), u64::from(GBPA_ABORT | 0x1000), "UPDATE done at once");
        assert!(r.gbpa_abort());
        // The same again changes nothing the streams depend on.
        let fx = r.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT));
        assert_eq!(fx.gbpa_abort, None);
        assert_eq!(r.bypass_requests(), 0);
        // Linux's arm_smmu_update_gbpa(smmu, 0, GBPA_ABORT): clear ABORT, set UPDATE. Bypass
        // (which the virtual SMMU serves with warden's stage 2 alone), counted.
        let fx = r.write(GBPA, 4, u64::from(GBPA_UPDATE));
        assert_eq!(fx.gbpa_abort, Some(false));
        assert_eq!(r.read(GBPA, 4), 0, "UPDATE done, ABORT clear");
        assert_eq!(r.bypass_requests(), 1);
        // Without UPDATE nothing changes.
        let fx = r.write(GBPA, 4, u64::from(GBPA_ABORT));
        assert_eq!(fx, Effects::default());
        assert_eq!(r.read(GBPA, 4), 0);
        // RES0 bits dropped.
        r.write(GBPA, 4, u64::from(GBPA_UPDATE | GBPA_ABORT | (1 << 25) | (1 << 6)));
        assert_eq!(r.read(GBPA, 4), u64::from(GBPA_ABORT));
    }

    #[test]
    fn the_64_bit_register_slots_are_the_list() {
        for offset in 0..2 * PAGE1 + 16 {
            assert_eq!(is_reg64(offset), REGS64.contains(&offset), "offset {offset:#x}");
        }
    }

    #[test]
    fn sixty_four_bit_registers_in_both_widths() {
        let mut r = RegisterFile::new(adv());
        r.write(STRTAB_BASE, 8, 0x4000_0000_1234_5000 | 0x3f);
        assert_eq!(r.read(STRTAB_BASE, 8), 0x4000_0000_1234_5000, "RA kept, [5:0] RES0");
        assert_eq!(r.read(STRTAB_BASE, 4), 0x1234_5000);
        assert_eq!(r.read(STRTAB_BASE + 4, 4), 0x4000_0000);
        // lo_hi_writeq: low half then high half.
        r.write(CMDQ_BASE, 4, 0x8765_4008);
        r.write(CMDQ_BASE + 4, 4, 0x0000_0001);
        assert_eq!(r.read(CMDQ_BASE, 8), 0x1_8765_4008);
        r.write(EVTQ_BASE, 8, 0xffff_ffff_ffff_ffff);
        assert_eq!(r.read(EVTQ_BASE, 8), Q_BASE_RWA | Q_BASE_ADDR_MASK | 0x1f);
        // The MSI registers (IDR0.MSI): ADDR [51:2], in both widths (Linux clears them with
        // writeq); the PRI queue's are RES0 (no PRI).
        for reg in [GERROR_IRQ_CFG0, EVTQ_IRQ_CFG0] {
            let fx = r.write(reg, 8, 0xfff0_0000_4000_1237);
            assert!(!fx.bad_access);
            assert_eq!(r.read(reg, 8), 0x0000_0000_4000_1234);
            r.write(reg + 4, 4, 0x1);
            assert_eq!(r.read(reg, 8), 0x1_4000_1234);
        }
        for reg in [PRIQ_IRQ_CFG0, PRIQ_BASE] {
            let fx = r.write(reg, 8, 0x1234);
            assert!(!fx.bad_access);
            assert_eq!(r.read(reg, 8), 0);
        }
        for reg in [GERROR_IRQ_CFG1, EVTQ_IRQ_CFG1] {
            r.write(reg, 4, 0xffff_fffe);
            assert_eq!(r.read(reg, 4), 0xffff_fffe, "MSI data: 32 bits");
        }
        for reg in [GERROR_IRQ_CFG2, EVTQ_IRQ_CFG2] {
            r.write(reg, 4, 0xff);
            assert_eq!(r.read(reg, 4), 0x3f, "MemAttr and SH");
        }
        // Guarded by their interrupt's enable: ignored while it is on.
        r.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_GERROR_IRQEN | IRQ_CTRL_EVTQ_IRQEN));
        r.write(GERROR_IRQ_CFG0, 8, 0x5000);
        r.write(EVTQ_IRQ_CFG1, 4, 7);
        assert_eq!(
            (r.read(GERROR_IRQ_CFG0, 8), r.read(EVTQ_IRQ_CFG1, 4)),
            (0x1_4000_1234, 0xffff_fffe)
        );
    }

    #[test]
    fn bad_widths_and_offsets_are_raz_wi() {
        let mut r = RegisterFile::new(adv());
        r.write(CR0, 4, u64::from(CR0_CMDQEN));
        for (off, size) in [(CR0, 8), (CR0, 2), (CR0, 1), (CR0 + 1, 4), (STRTAB_BASE + 2, 4)] {
            assert_eq!(r.read(off, size), 0, "{off:#x}/{size}");
            assert!(r.write(off, size, 0).bad_access);
        }
        assert_eq!(r.read(CR0, 4), u64::from(CR0_CMDQEN), "unchanged");
        assert_eq!(r.read(STRTAB_BASE + 4, 8), 0, "64-bit access to the high half");
        assert!(r.write(2 * PAGE1, 4, 1).bad_access, "beyond page 1");
        assert_eq!(r.bad_accesses(), 12);
        // Unknown but aligned offsets inside the frames: RAZ/WI without complaint.
        assert_eq!(r.read(0x400, 4), 0);
        assert!(!r.write(PAGE1 + 0x400, 4, 5).bad_access);
    }

    #[test]
    fn guarded_registers_ignore_writes_while_enabled() {
        let mut r = RegisterFile::new(adv());
        r.write(STRTAB_BASE, 8, 0x1000);
        r.write(STRTAB_BASE_CFG, 4, 0x1_0208 | (1 << 20));
        r.write(CMDQ_BASE, 8, 0x2000 | 8);
        r.write(EVTQ_BASE, 8, 0x3000 | 7);
        r.write(CR1, 4, 0xd75);
        r.write(CR2, 4, 0x7);
        assert_eq!(r.read(STRTAB_BASE_CFG, 4), 0x1_0208, "RES0 dropped");
        assert_eq!(r.read(CR2, 4), u64::from(CR2_RECINVSID | CR2_PTM), "no E2H");
        r.write(CR0, 4, u64::from(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN));
        r.write(STRTAB_BASE, 8, 0x9000);
        r.write(STRTAB_BASE_CFG, 4, 0);
        r.write(CMDQ_BASE, 8, 0x9000);
        r.write(EVTQ_BASE, 4, 0x9000);
        r.write(CR1, 4, 0);
        r.write(CR2, 4, 0);
        r.write(CMDQ_CONS, 4, 5);
        r.write(EVTQ_PROD, 4, 5);
        assert_eq!(r.read(STRTAB_BASE, 8), 0x1000);
        assert_eq!(r.read(STRTAB_BASE_CFG, 4), 0x1_0208);
        assert_eq!(r.read(CMDQ_BASE, 8), 0x2008);
        assert_eq!(r.read(EVTQ_BASE, 8), 0x3007);
        assert_eq!(r.read(CR1, 4), 0xd75);
        assert_eq!(r.read(CR2, 4), u64::from(CR2_RECINVSID | CR2_PTM));
        assert_eq!(r.read(CMDQ_CONS, 4), 0);
        assert_eq!(r.read(EVTQ_PROD, 4), 0);
        // Always writable: CMDQ_PROD, EVTQ_CONS, IRQ_CTRL.
        assert!(r.write(CMDQ_PROD, 4, 0xfff_ffff).cmdq_kick);
        assert_eq!(r.read(CMDQ_PROD, 4), 0xf_ffff, "bits [31:20] RES0");
        r.write(EVTQ_CONS, 4, 0x8000_0003);
        assert_eq!(r.read(EVTQ_CONS, 4), 0x8000_0003);
        r.write(IRQ_CTRL, 4, 0x7);
        assert_eq!(r.read(IRQ_CTRLACK, 4), 0x5, "no PRI IRQ");
        // Queue-only disable frees the queue bases but not the stream table.
        r.write(CR0, 4, u64::from(CR0_SMMUEN));
        r.write(CMDQ_BASE, 8, 0x5000 | 8);
        r.write(STRTAB_BASE, 8, 0x9000);
        assert_eq!(r.read(CMDQ_BASE, 8), 0x5008);
        assert_eq!(r.read(STRTAB_BASE, 8), 0x1000);
    }

    #[test]
    fn gerror_toggles_and_gerrorn_acknowledges() {
        let mut r = RegisterFile::new(adv());
        r.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_GERROR_IRQEN));
        r.write(CMDQ_PROD, 4, 3);
        r.write(CR0, 4, u64::from(CR0_CMDQEN));
        r.set_cmdq_cons(2);
        assert!(r.raise_cmdq_error(1), "interrupt");
        assert_eq!(r.read(CMDQ_CONS, 4), (1 << 24) | 2);
        assert_eq!(r.read(GERROR, 4), 1);
        assert!(r.cmdq_error_active());
        assert!(!r.raise_cmdq_error(1), "already active: no second toggle");
        assert_eq!(r.read(GERROR, 4), 1);
        // Linux acks by writing GERROR's value to GERRORN.
        let fx = r.write(GERRORN, 4, 1);
        assert!(fx.cmdq_kick, "acknowledging resumes the queue");
        assert!(!r.cmdq_error_active());
        // The next error toggles GERROR back to 0; active again.
        assert!(r.raise_cmdq_error(2));
        assert_eq!(r.read(GERROR, 4), 0);
        assert!(r.cmdq_error_active());
        assert_eq!(r.read(CMDQ_CONS, 4) >> 24, 2);
        // GERRORN keeps only implemented bits; a write that acks nothing does not kick.
        assert!(!r.write(GERRORN, 4, 1 | 0x2).cmdq_kick);
        assert_eq!(r.read(GERRORN, 4), 1);
        assert!(r.write(GERRORN, 4, 0).cmdq_kick);
        // Without GERROR_IRQEN, no interrupt but the error is still recorded.
        r.write(IRQ_CTRL, 4, 0);
        assert!(!r.raise_gerror(GERROR_EVTQ_ABT_ERR));
        assert_eq!(r.read(GERROR, 4), u64::from(GERROR_EVTQ_ABT_ERR));
        // GERROR is read-only.
        r.write(GERROR, 4, 0);
        assert_eq!(r.read(GERROR, 4), u64::from(GERROR_EVTQ_ABT_ERR));
    }

    #[test]
    fn queue_geometry_caps_and_aligns() {
        let mut r = RegisterFile::new(adv());
        r.write(CMDQ_BASE, 8, 0x4000_1fe0 | 12);
        let (shape, base) = r.cmdq_geometry();
        assert_eq!(shape.log2(), 8, "capped at CMDQS");
        assert_eq!(base, 0x4000_1000, "aligned to 4 KiB = 256 x 16");
        r.write(CMDQ_BASE, 8, 0x4000_0060);
        let (shape, base) = r.cmdq_geometry();
        assert_eq!((shape.entries(), base), (1, 0x4000_0060), "one entry, 32-byte aligned");
        r.write(EVTQ_BASE, 8, 0x5000_0fe0 | 3);
        assert_eq!(r.evtq_geometry().1, 0x5000_0f00, "8 x 32 bytes");
    }
}
