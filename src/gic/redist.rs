//! The host's redistributors: each RD_base frame is a hole in the host's stage 2 and every
//! access lands in [`VirtRedist::read`] / [`VirtRedist::write`].
//!
//! - **GICR_PROPBASER** (LPI configuration table, `2^(IDbits+1) - 8192` bytes, IDbits capped
//!   by GICD_TYPER) and **GICR_PENDBASER** (pending table, `2^(GICD_TYPER.IDbits+1) / 8`
//!   bytes, the most any LPI can reach; the redistributor writes it) are validated: each
//!   table must be host memory (rule 1). A redistributor uses them only once
//!   **GICR_CTLR.EnableLPIs** is set, so that is where the check bites: EnableLPIs is set
//!   only if the values the registers hold at that moment (read back from the hardware, so
//!   an implementation that keeps fewer address bits cannot turn a checked address into
//!   another) both pass; otherwise the bit is dropped from the write (logged, counted) and
//!   the rest forwarded. While LPIs are off the registers are inert, so writes reach them
//!   (a 64-bit table address written as two 32-bit halves passes through an intermediate
//!   value), and a value that fails is logged and counted at once. While LPIs are on, writes
//!   to them are ignored (the architecture makes them UNPREDICTABLE). Every access to the
//!   frame is under one lock, so nothing changes between the check and the enable.
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
    /// GICR_PROPBASER / GICR_PENDBASER values whose table is not host memory.
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
    /// What the last write left in the real GICR_PROPBASER / GICR_PENDBASER passed (for the
    /// logs; EnableLPIs checks the registers again).
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

    /// Whether the values the last writes left in both table registers passed (EnableLPIs
    /// checks the registers again before it is let through).
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
        // No table (IDbits too small), or the reset value's address 0: nothing to check, and
        // nothing EnableLPIs would accept.
        if bytes == 0 || base == 0 {
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
            GICR_CTLR if size == 4 => self.write_ctlr(io, host, value as u32),
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

    fn write_ctlr<R: RegisterFrame + ?Sized, H: HostMemory + ?Sized>(
        &mut self,
        io: &R,
        host: &H,
        value: u32,
    ) {
        let mut value = value;
        let enabling = GICR_CTLR_F::ENABLE_LPIS.is_set(value)
            && !GICR_CTLR_F::ENABLE_LPIS.is_set(io.read32(GICR_CTLR));
        if enabling {
            // What the registers hold now is what the redistributor will use.
            let (prop_fine, prop_table) = self.check(Table::Prop, io.read64(GICR_PROPBASER), host);
            let (pend_fine, pend_table) = self.check(Table::Pend, io.read64(GICR_PENDBASER), host);
            self.prop_ok = prop_fine && prop_table;
            self.pend_ok = pend_fine && pend_table;
        }
        if enabling && !self.tables_validated() {
            value &= !GICR_CTLR_F::ENABLE_LPIS::SET.value;
            self.stats.enable_refusals += 1;
            if should_log(self.stats.enable_refusals) {
                let which = match (self.prop_ok, self.pend_ok) {
                    (false, false) => "GICR_PROPBASER and GICR_PENDBASER do",
                    (false, true) => "GICR_PROPBASER does",
                    _ => "GICR_PENDBASER does",
                };
                log::warn!(
                    "GICR: EnableLPIs refused: {which} not name a table in host memory (#{})",
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
        io.write64(table.offset(), new);
        // What the hardware kept is what it would use.
        let kept = io.read64(table.offset());
        let (acceptable, describes) = self.check(table, kept, host);
        if !acceptable {
            self.refuse(table, kept);
        }
        match table {
            Table::Prop => self.prop_ok = acceptable && describes,
            Table::Pend => self.pend_ok = acceptable && describes,
        }
    }

    fn refuse(&mut self, table: Table, value: u64) {
        self.stats.table_refusals += 1;
        if should_log(self.stats.table_refusals) {
            let range = self.table_range(table, value).flatten();
            log::warn!(
                "GICR: {} {value:#x}: table {} is not host memory (warden's, a carveout or no-map reserved): EnableLPIs will be refused (#{})",
                table.name(),
                range.map_or(alloc::string::String::from("address overflows"), |r| alloc::format!(
                    "{r}"
                )),
                self.stats.table_refusals
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gic::fake::{FakeHostMemory, FakeRedist};

    const CARVEOUT: u64 = 0x8_0000;

    struct Rig {
        host: FakeHostMemory,
        io: FakeRedist,
        virt: VirtRedist,
    }

    fn rig() -> Rig {
        let mut host = FakeHostMemory::new(0x10_0000);
        host.forbidden.push(MemRange::new(host.at(CARVEOUT), host.at(CARVEOUT + 0x1_0000)));
        let io = FakeRedist::qemu(0, true);
        let virt = VirtRedist::take(&io, 16, 8).unwrap();
        Rig { host, io, virt }
    }

    impl Rig {
        fn write(&mut self, offset: u32, size: u8, value: u64) {
            self.virt.write(&self.io, &self.host, offset, size, value);
        }
        fn read(&mut self, offset: u32, size: u8) -> u64 {
            self.virt.read(&self.io, offset, size)
        }
        /// Linux's its_cpu_init_lpis: IDbits 15 (64 Ki INTIDs), WB, inner shareable.
        fn prop(&self, offset: u64) -> u64 {
            self.host.at(offset) | (1 << 10) | (7 << 7) | 15
        }
        fn pend(&self, offset: u64) -> u64 {
            self.host.at(offset) | (1 << 10) | (7 << 7)
        }
    }

    #[test]
    fn linux_flow_enables_lpis() {
        let mut r = rig();
        let (prop, pend) = (r.prop(0), r.pend(0x1_0000));
        r.write(GICR_PROPBASER, 8, prop);
        assert_eq!(r.read(GICR_PROPBASER, 8), prop);
        r.write(GICR_PENDBASER, 8, pend);
        assert_eq!(r.read(GICR_PENDBASER, 8), pend);
        assert!(r.virt.tables_validated());
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 1);
        assert_eq!(r.virt.stats(), RedistStats::default());
        assert_eq!(r.virt.prop_table_bytes(prop), 0x1_0000 - 0x2000);
        assert_eq!(r.virt.pend_table_bytes(), 0x2000);
    }

    #[test]
    fn tables_outside_host_memory_keep_lpis_off() {
        let mut r = rig();
        let warden = 0x4020_0000u64;
        let good_prop = r.prop(0);
        let good_pend = r.pend(0x1_0000);
        // Configuration tables in the carveout, in warden's memory, running off the end of
        // host memory; pending tables in the carveout and in warden's memory.
        let bad_props = [r.prop(CARVEOUT), warden | 15, r.prop(0x10_0000 - 0x1000)];
        let bad_pends = [r.pend(CARVEOUT), warden];
        for bad in bad_props {
            r.write(GICR_PENDBASER, 8, good_pend);
            r.write(GICR_PROPBASER, 8, bad);
            r.write(GICR_CTLR, 4, 1 | (1 << 25));
            assert_eq!(r.io.ctlr(), 1 << 25, "PROPBASER {bad:#x}: EnableLPIs dropped, rest kept");
        }
        for bad in bad_pends {
            r.write(GICR_PROPBASER, 8, good_prop);
            r.write(GICR_PENDBASER, 8, bad);
            r.write(GICR_CTLR, 4, 1);
            assert_eq!(r.io.ctlr(), 0, "PENDBASER {bad:#x}: EnableLPIs dropped");
        }
        let stats = r.virt.stats();
        assert_eq!((stats.table_refusals, stats.enable_refusals), (5, 5));
        // A pending table 60 KiB below the carveout: the address field drops the low 16
        // bits, so it is the 8 KiB at 64 KiB below it, host memory.
        r.write(GICR_PENDBASER, 8, r.pend(CARVEOUT - 0x1_0000) + 0xf000);
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 1);
    }

    #[test]
    fn halves_are_validated_as_the_whole_register() {
        let mut r = rig();
        let (prop, pend) = (r.prop(0), r.pend(0x1_0000));
        // Linux on 32-bit: low half, then high half (the intermediate value is no table).
        r.write(GICR_PROPBASER, 4, prop & 0xffff_ffff);
        r.write(GICR_PROPBASER + 4, 4, prop >> 32);
        r.write(GICR_PENDBASER, 4, pend & 0xffff_ffff);
        r.write(GICR_PENDBASER + 4, 4, pend >> 32);
        assert_eq!((r.io.propbaser(), r.io.pendbaser()), (prop, pend));
        assert_eq!(r.read(GICR_PROPBASER + 4, 4), prop >> 32);
        assert_eq!(r.read(GICR_PROPBASER, 4), prop & 0xffff_ffff);
        assert!(r.virt.tables_validated());
        // A low half that moves the table into the carveout: no LPIs.
        r.write(GICR_PROPBASER, 4, r.prop(CARVEOUT) & 0xffff_ffff);
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 0);
        r.write(GICR_PROPBASER, 4, prop & 0xffff_ffff);
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 1);
    }

    #[test]
    fn what_the_register_keeps_is_validated() {
        let mut r = rig();
        assert!(r.host.range.start >= 1 << 32, "the test needs a buffer above 4 GiB");
        r.io.set_address_bits(32);
        let (prop, pend) = (r.prop(0), r.pend(0x1_0000));
        r.write(GICR_PROPBASER, 8, prop);
        r.write(GICR_PENDBASER, 8, pend);
        assert_ne!(r.io.propbaser(), prop, "the register dropped the high address bits");
        assert_eq!(r.virt.stats().table_refusals, 2);
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 0, "the truncated addresses are not host memory");
    }

    #[test]
    fn tables_are_fixed_while_lpis_are_on() {
        let mut r = rig();
        let (prop, pend) = (r.prop(0), r.pend(0x1_0000));
        r.write(GICR_PROPBASER, 8, prop);
        r.write(GICR_PENDBASER, 8, pend);
        r.write(GICR_CTLR, 4, 1);
        let other = r.prop(0x2_0000);
        r.write(GICR_PROPBASER, 8, other);
        r.write(GICR_PENDBASER, 8, r.pend(0x3_0000));
        assert_eq!((r.io.propbaser(), r.io.pendbaser()), (prop, pend));
        assert_eq!(r.virt.stats().ignored_while_enabled, 2);
        // LPIs off again (QEMU allows it): the tables may change, validated again.
        r.write(GICR_CTLR, 4, 0);
        r.write(GICR_PROPBASER, 8, other);
        assert_eq!(r.io.propbaser(), other);
    }

    #[test]
    fn too_few_id_bits_is_no_table() {
        let mut r = rig();
        r.write(GICR_PROPBASER, 8, r.host.at(CARVEOUT) | 12);
        assert_eq!(r.io.propbaser(), r.host.at(CARVEOUT) | 12, "no LPI: no table to check");
        assert!(!r.virt.prop_ok);
        r.write(GICR_PENDBASER, 8, r.pend(0x1_0000));
        r.write(GICR_CTLR, 4, 1);
        assert_eq!(r.io.ctlr(), 0);
    }

    #[test]
    fn typer_hides_gicv4_and_the_rest_is_forwarded() {
        let mut r = rig();
        r.io.set_typer(r.io.read64(GICR_TYPER) | TYPER_HIDDEN);
        let typer = r.read(GICR_TYPER, 8);
        assert_eq!(typer & TYPER_HIDDEN, 0);
        assert!(GICR_TYPER_F::LAST.is_set(typer));
        assert_eq!(r.read(GICR_TYPER, 4), typer & 0xffff_ffff);
        assert_eq!(r.read(GICR_TYPER + 4, 4), typer >> 32);
        assert_eq!(r.read(GICR_PIDR2, 4), 0x3b);
        r.write(0x14, 4, 0);
        r.write(0x40, 8, 0x2000);
        assert_eq!(r.io.other_writes(), [(0x14, 4, 0), (0x40, 8, 0x2000)]);
        // Misaligned or odd sizes never reach the frame.
        r.write(0x42, 4, 1);
        r.write(0x40, 2, 1);
        assert_eq!(r.read(0x44, 8), 0);
        r.write(GICR_CTLR, 8, 1);
        assert_eq!(r.io.other_writes().len(), 2);
        assert_eq!(r.io.ctlr(), 0);
        assert_eq!(r.virt.stats().bad_accesses, 4);
    }

    #[test]
    fn vlpi_frame_is_refused() {
        let mut r = rig();
        assert_eq!(r.virt.vlpi_access(GICR_VPROPBASER, 8, Some(r.host.at(0))), 0);
        assert_eq!(r.virt.vlpi_access(GICR_VPENDBASER, 8, None), 0);
        assert_eq!(r.virt.stats().vlpi_refusals, 2);
    }

    #[test]
    fn lpis_left_on_by_firmware() {
        let io = FakeRedist::qemu(1, false);
        io.preset_ctlr(1);
        assert!(VirtRedist::take(&io, 16, 8).is_ok());
        assert_eq!(io.ctlr(), 0);
        let io = FakeRedist::qemu(1, false);
        io.preset_ctlr(1);
        io.set_lpis_sticky(true);
        assert_eq!(VirtRedist::take(&io, 16, 8).err(), Some(LpisStuckOn));
    }

    proptest::proptest! {
        /// Whatever the host writes, LPIs are on only with both tables in host memory.
        #[test]
        fn lpis_only_with_host_tables(
            ops in proptest::collection::vec(
                (0u8..6, proptest::prelude::any::<u64>()), 1..30),
        ) {
            let mut r = rig();
            for (kind, value) in ops {
                let near = r.host.at(value % 0x10_0000) & !0xfff;
                match kind {
                    0 => r.write(GICR_PROPBASER, 8, near | (value >> 59)),
                    1 => r.write(GICR_PENDBASER, 8, near & !0xffff),
                    2 => r.write(GICR_PROPBASER + 4 * (value as u32 & 1), 4, value),
                    3 => r.write(GICR_PENDBASER, 8, value),
                    4 => r.write(GICR_CTLR, 4, value),
                    _ => { r.read(GICR_TYPER, 8); }
                }
                if r.io.ctlr() & 1 == 1 {
                    let prop = r.io.propbaser();
                    let pend = r.io.pendbaser();
                    let prop_range = MemRange::from_base_size(
                        GICR_PROPBASER_F::PHYSICAL_ADDRESS.read(prop) << 12,
                        r.virt.prop_table_bytes(prop),
                    ).unwrap();
                    let pend_range = MemRange::from_base_size(
                        GICR_PENDBASER_F::PHYSICAL_ADDRESS.read(pend) << 16,
                        r.virt.pend_table_bytes(),
                    ).unwrap();
                    proptest::prop_assert!(r.host.is_host_memory(prop_range));
                    proptest::prop_assert!(r.host.is_host_memory(pend_range));
                }
            }
        }
    }
}
