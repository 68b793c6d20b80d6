//! The host's redistributors: each RD_base frame is a hole in the host's stage 2 and every
//! access lands in [`VirtRedist::read`] / [`VirtRedist::write`].
//!
//! - **GICR_PROPBASER** (LPI configuration table, `2^(IDbits+1) - 8192` bytes, IDbits capped
//!   by GICD_TYPER) and **GICR_PENDBASER** (pending table, `2^(GICD_TYPER.IDbits+1) / 8`
//!   bytes, the most any LPI can reach; the redistributor writes it) are validated: the table
//!   must be host memory (rule 1), else the write is ignored, logged and counted. What the
//!   register holds after the write is read back and validated again (an implementation with
//!   fewer address bits would otherwise truncate a validated address into another one); a
//!   value that fails puts the previous one back. Writes while LPIs are enabled are ignored
//!   (the architecture makes them UNPREDICTABLE).
//! - **GICR_CTLR.EnableLPIs** is set only once both tables were validated; otherwise the bit
//!   is dropped from the write (logged, counted) and the rest forwarded.
//! - **GICR_TYPER** hides GICv4 (VLPIS, RVPEID, VSGI, Dirty) and MPAM.
//! - The **VLPI_base** frame of a GICv4 redistributor (GICR_VPROPBASER, GICR_VPENDBASER) is
//!   trapped too and refused whole: RAZ/WI, logged, counted ([`VirtRedist::vlpi_access`]).
//! - Everything else is forwarded to the real register, same offset and size.

use super::HostMemory;
use super::regs::*;
use crate::mm::MemRange;
use crate::trap::should_log;

/// One real register frame, accessed by offset.
pub trait RegisterFrame {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
    fn read64(&self, offset: u32) -> u64;
    fn write64(&self, offset: u32, value: u64);
}

/// GICR_TYPER bits the host does not see: GICv4 and MPAM.
pub const TYPER_HIDDEN: u64 = mask(GICR_TYPER_F::VLPIS)
    | mask(GICR_TYPER_F::DIRTY)
    | mask(GICR_TYPER_F::MPAM)
    | mask(GICR_TYPER_F::RVPEID)
    | mask(GICR_TYPER_F::VSGI);

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedistStats {
    /// GICR_CTLR writes whose EnableLPIs was dropped (tables not validated).
    pub enable_refusals: u64,
    /// GICR_PROPBASER / GICR_PENDBASER writes ignored (not host memory).
    pub table_refusals: u64,
    /// GICR_PROPBASER / GICR_PENDBASER writes ignored because LPIs are enabled.
    pub ignored_while_enabled: u64,
    /// Accesses to the VLPI_base frame (GICv4), refused.
    pub vlpi_refusals: u64,
    /// Accesses the architecture does not define (misaligned, wrong width): RAZ/WI.
    pub bad_accesses: u64,
}

/// Why a redistributor cannot be taken at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpisStuckOn;

/// One emulated redistributor (the registers stay in the real frame; this is what warden
/// knows about them).
#[derive(Clone, Debug)]
pub struct VirtRedist {
    /// INTID bits the GIC implements (GICD_TYPER.IDbits + 1).
    id_bits: u32,
    /// The real GICR_PROPBASER / GICR_PENDBASER hold validated tables.
    prop_ok: bool,
    pend_ok: bool,
    stats: RedistStats,
}

/// Which table register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Prop,
    Pend,
}

impl Table {
    fn offset(self) -> u32 {
        match self {
            Table::Prop => GICR_PROPBASER,
            Table::Pend => GICR_PENDBASER,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Prop => "GICR_PROPBASER",
            Table::Pend => "GICR_PENDBASER",
        }
    }
}

impl VirtRedist {
    /// Takes a redistributor at boot: LPIs found enabled (tables nobody checked) are turned
    /// off; if they stay on (EnableLPIs may be write-once), the redistributor cannot be
    /// trusted and the caller must not boot.
    pub fn take<R: RegisterFrame + ?Sized>(
        io: &R,
        gicd_id_bits: u32,
        poll_limit: u32,
    ) -> Result<Self, LpisStuckOn> {
        let ctlr = io.read32(GICR_CTLR);
        if GICR_CTLR_F::ENABLE_LPIS.is_set(ctlr) {
            io.write32(GICR_CTLR, ctlr & !GICR_CTLR_F::ENABLE_LPIS::SET.value);
            let off = (0..poll_limit.max(1))
                .any(|_| !GICR_CTLR_F::ENABLE_LPIS.is_set(io.read32(GICR_CTLR)));
            if !off {
                return Err(LpisStuckOn);
            }
        }
        Ok(Self {
            id_bits: gicd_id_bits,
            prop_ok: false,
            pend_ok: false,
            stats: Default::default(),
        })
    }

    pub fn stats(&self) -> RedistStats {
        self.stats
    }

    /// Whether EnableLPIs would be accepted now.
    pub fn tables_validated(&self) -> bool {
        self.prop_ok && self.pend_ok
    }

    /// Bytes of the LPI configuration table `value` (a GICR_PROPBASER) describes: 0 when its
    /// IDbits leave no LPI.
    pub fn prop_table_bytes(&self, value: u64) -> u64 {
        let bits = (GICR_PROPBASER_F::ID_BITS.read(value) as u32 + 1).min(self.id_bits).min(32);
        (1u64 << bits).saturating_sub(LPI_FIRST_INTID)
    }

    /// Bytes of a pending table: one bit per INTID the GIC implements.
    pub fn pend_table_bytes(&self) -> u64 {
        (1u64 << self.id_bits.min(32)) / 8
    }

    /// The memory `value` in `table` makes the redistributor use (`None`: none).
    fn table_range(&self, table: Table, value: u64) -> Option<Option<MemRange>> {
        let (base, bytes) = match table {
            Table::Prop => {
                (GICR_PROPBASER_F::PHYSICAL_ADDRESS.read(value) << 12, self.prop_table_bytes(value))
            }
            Table::Pend => {
                (GICR_PENDBASER_F::PHYSICAL_ADDRESS.read(value) << 16, self.pend_table_bytes())
            }
        };
        if bytes == 0 {
            return Some(None);
        }
        MemRange::from_base_size(base, bytes).map(Some)
    }

    /// Whether `value` in `table` is acceptable: its table (if any) is host memory. The second
    /// part: whether it describes a table at all (what EnableLPIs needs).
    fn check<H: HostMemory + ?Sized>(&self, table: Table, value: u64, host: &H) -> (bool, bool) {
        match self.table_range(table, value) {
            Some(None) => (true, false),
            Some(Some(range)) => (host.is_host_memory(range), true),
            None => (false, false),
        }
    }

    /// A trapped 4- or 8-byte load at `offset` in RD_base.
    pub fn read<R: RegisterFrame + ?Sized>(&mut self, io: &R, offset: u32, size: u8) -> u64 {
        if !offset.is_multiple_of(u32::from(size)) || !matches!(size, 4 | 8) {
            return self.bad_access(offset, size, false);
        }
        if (GICR_TYPER..GICR_TYPER + 8).contains(&offset) {
            let typer = io.read64(GICR_TYPER) & !TYPER_HIDDEN;
            return read_part(typer, offset - GICR_TYPER, size).unwrap_or(0);
        }
        match size {
            4 => u64::from(io.read32(offset)),
            _ => io.read64(offset),
        }
    }

    /// A trapped 4- or 8-byte store of `value` at `offset` in RD_base.
    pub fn write<R: RegisterFrame + ?Sized, H: HostMemory + ?Sized>(
        &mut self,
        io: &R,
        host: &H,
        offset: u32,
        size: u8,
        value: u64,
    ) {
        if !offset.is_multiple_of(u32::from(size)) || !matches!(size, 4 | 8) {
            self.bad_access(offset, size, true);
            return;
        }
        match offset {
            GICR_CTLR if size == 4 => self.write_ctlr(io, value as u32),
            GICR_CTLR => {
                self.bad_access(offset, size, true);
            }
            o if (GICR_PROPBASER..GICR_PROPBASER + 8).contains(&o) => {
                self.write_table(io, host, Table::Prop, o - GICR_PROPBASER, size, value)
            }
            o if (GICR_PENDBASER..GICR_PENDBASER + 8).contains(&o) => {
                self.write_table(io, host, Table::Pend, o - GICR_PENDBASER, size, value)
            }
            o if size == 4 => io.write32(o, value as u32),
            o => io.write64(o, value),
        }
    }

    /// An access to the VLPI_base frame (or the reserved frame after it): GICv4 is not
    /// offered, so nothing there is the host's. RAZ/WI.
    pub fn vlpi_access(&mut self, offset: u32, size: u8, write: Option<u64>) -> u64 {
        self.stats.vlpi_refusals += 1;
        if should_log(self.stats.vlpi_refusals) {
            let what = match offset {
                GICR_VPROPBASER..=0x77 => "GICR_VPROPBASER",
                GICR_VPENDBASER..=0x7f => "GICR_VPENDBASER",
                _ => "a VLPI_base register",
            };
            match write {
                Some(v) => log::warn!(
                    "GICR: host write {size}B {v:#x} to {what} (offset {offset:#x}) refused: GICv4 is not offered (#{})",
                    self.stats.vlpi_refusals
                ),
                None => log::warn!(
                    "GICR: host read {size}B of {what} (offset {offset:#x}): reads as zero, GICv4 is not offered (#{})",
                    self.stats.vlpi_refusals
                ),
            }
        }
        0
    }

    fn bad_access(&mut self, offset: u32, size: u8, write: bool) -> u64 {
        self.stats.bad_accesses += 1;
        if should_log(self.stats.bad_accesses) {
            log::warn!(
                "GICR: {} {size}B at RD_base + {offset:#x} is not a register access: RAZ/WI (#{})",
                if write { "write" } else { "read" },
                self.stats.bad_accesses
            );
        }
        0
    }

    fn write_ctlr<R: RegisterFrame + ?Sized>(&mut self, io: &R, value: u32) {
        let mut value = value;
        let enabling = GICR_CTLR_F::ENABLE_LPIS.is_set(value)
            && !GICR_CTLR_F::ENABLE_LPIS.is_set(io.read32(GICR_CTLR));
        if enabling && !self.tables_validated() {
            value &= !GICR_CTLR_F::ENABLE_LPIS::SET.value;
            self.stats.enable_refusals += 1;
            if should_log(self.stats.enable_refusals) {
                log::warn!(
                    "GICR: EnableLPIs refused: {}{} not validated (#{})",
                    if self.prop_ok { "" } else { "GICR_PROPBASER " },
                    if self.pend_ok { "" } else { "GICR_PENDBASER " },
                    self.stats.enable_refusals
                );
            }
        }
        io.write32(GICR_CTLR, value);
    }

    fn write_table<R: RegisterFrame + ?Sized, H: HostMemory + ?Sized>(
        &mut self,
        io: &R,
        host: &H,
        table: Table,
        offset_in_register: u32,
        size: u8,
        value: u64,
    ) {
        if GICR_CTLR_F::ENABLE_LPIS.is_set(io.read32(GICR_CTLR)) {
            self.stats.ignored_while_enabled += 1;
            if should_log(self.stats.ignored_while_enabled) {
                log::warn!(
                    "GICR: {} written while LPIs are enabled: ignored (#{})",
                    table.name(),
                    self.stats.ignored_while_enabled
                );
            }
            return;
        }
        let old = io.read64(table.offset());
        let Some(new) = merge_write(old, offset_in_register, size, value) else {
            self.bad_access(table.offset() + offset_in_register, size, true);
            return;
        };
        let (acceptable, _) = self.check(table, new, host);
        if !acceptable {
            self.refuse(table, new);
            return;
        }
        io.write64(table.offset(), new);
        // What the hardware kept is what it will use.
        let kept = io.read64(table.offset());
        let (acceptable, describes) = self.check(table, kept, host);
        if !acceptable {
            io.write64(table.offset(), old);
            self.refuse(table, kept);
            return;
        }
        match table {
            Table::Prop => self.prop_ok = describes,
            Table::Pend => self.pend_ok = describes,
        }
    }

    fn refuse(&mut self, table: Table, value: u64) {
        self.stats.table_refusals += 1;
        if should_log(self.stats.table_refusals) {
            let range = self.table_range(table, value).flatten();
            log::warn!(
                "GICR: {} {value:#x} ({}) is not host memory (warden's, a carveout or no-map reserved): write ignored (#{})",
                table.name(),
                range.map_or(alloc::string::String::from("address overflows"), |r| alloc::format!(
                    "{r}"
                )),
                self.stats.table_refusals
            );
        }
    }
}
