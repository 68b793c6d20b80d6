//! The host's event queue: records warden writes into host memory (its own C_BAD_STE-style
//! refusals and real event records forwarded for host streams), with the architecture's
//! overflow rule and EVTQ_ABT_ERR when the queue is not in host memory.

use crate::mm::MemRange;
use crate::smmu::event::EVENT_SIZE;
use crate::smmu::regs::{GERROR_EVTQ_ABT_ERR, Q_OVERFLOW_FLAG};

use super::GuestMemory;
use super::regs::RegisterFile;

pub const EVT_ID_BAD_STREAMID: u64 = 0x02;
pub const EVT_ID_STE_FETCH: u64 = 0x03;
pub const EVT_ID_BAD_STE: u64 = 0x04;
pub const EVT_ID_CD_FETCH: u64 = 0x09;
pub const EVT_ID_BAD_CD: u64 = 0x0a;

/// One event record (four little-endian words).
pub type EventRecord = [u64; 4];

/// C_BAD_STREAMID: the stream ID is beyond the host's stream table (or its L1 descriptor is
/// invalid).
pub fn bad_streamid(sid: u32) -> EventRecord {
    [EVT_ID_BAD_STREAMID | (u64::from(sid) << 32), 0, 0, 0]
}

/// C_BAD_STE: the host's STE asks for something this SMMU does not do.
pub fn bad_ste(sid: u32) -> EventRecord {
    [EVT_ID_BAD_STE | (u64::from(sid) << 32), 0, 0, 0]
}

/// F_STE_FETCH: the STE (or L1 descriptor) at `addr` could not be read (not host memory).
pub fn ste_fetch(sid: u32, addr: u64) -> EventRecord {
    [EVT_ID_STE_FETCH | (u64::from(sid) << 32), 0, 0, addr & 0x000f_ffff_ffff_fff8]
}

/// C_BAD_CD: the stream's CD asks for something this SMMU does not do.
pub fn bad_cd(sid: u32) -> EventRecord {
    [EVT_ID_BAD_CD | (u64::from(sid) << 32), 0, 0, 0]
}

/// Event types whose record carries a stage-2 IPA in word 3 (`[51:12]`).
const EVT_ID_TRANSLATION_FAULTS: core::ops::RangeInclusive<u64> = 0x10..=0x13;
const EVT_S2: u64 = 1 << 39;
const EVT_CLASS_SHIFT: u32 = 40;
const EVT_CLASS_CD: u64 = 0b00;
const EVT_IPA: u64 = 0x000f_ffff_ffff_f000;
const EVT_FETCH_ADDR: u64 = 0x000f_ffff_ffff_fff8;

/// A real record about the CD fetch of a stream whose real STE points at warden's unmapped
/// page `unmapped` in place of the host's CD at `host_cd` gets the host's address: a stage-2
/// fault with CLASS = CD and that IPA, or F_CD_FETCH with that fetch address.
pub fn rename_cd_fetch_address(record: &mut EventRecord, unmapped: u64, host_cd: u64) {
    let id = record[0] & 0xff;
    let page = |a: u64| a & EVT_IPA;
    if EVT_ID_TRANSLATION_FAULTS.contains(&id)
        && record[1] & EVT_S2 != 0
        && (record[1] >> EVT_CLASS_SHIFT) & 3 == EVT_CLASS_CD
        && page(record[3]) == page(unmapped)
    {
        record[3] = (record[3] & !EVT_IPA) | (host_cd & EVT_IPA);
    } else if id == EVT_ID_CD_FETCH && page(record[3]) == page(unmapped) {
        record[3] = (record[3] & !EVT_FETCH_ADDR) | (host_cd & EVT_FETCH_ADDR);
    }
}

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventWrite {
    /// Written; `irq`: the host's event interrupt should be raised.
    Written { irq: bool },
    /// The queue is full: the record is lost and EVTQ_PROD.OVFLG now differs from OVACKFLG.
    Overflow,
    /// The event queue is disabled: nothing is recorded.
    Disabled,
    /// The queue is not (wholly) in host memory: GERROR.EVTQ_ABT_ERR; `gerror_irq` as named.
    Aborted { gerror_irq: bool },
}

/// Appends `record` to the host's event queue.
pub fn write_event<M: GuestMemory + ?Sized>(
    regs: &mut RegisterFile,
    mem: &mut M,
    record: &EventRecord,
) -> EventWrite {
    if !regs.evtq_enabled() {
        return EventWrite::Disabled;
    }
    let (shape, base) = regs.evtq_geometry();
    let prod = regs.evtq_prod();
    let cons = regs.evtq_cons();
    if shape.is_full(prod, cons) {
        // Overflow is signalled by OVFLG != OVACKFLG; toggle only if they were equal.
        if (prod ^ cons) & Q_OVERFLOW_FLAG == 0 {
            regs.set_evtq_prod(prod ^ Q_OVERFLOW_FLAG);
        }
        return EventWrite::Overflow;
    }
    let queue = MemRange::from_base_size(base, u64::from(shape.entries()) * EVENT_SIZE);
    let slot = base + u64::from(shape.index(prod)) * EVENT_SIZE;
    let mut bytes = [0u8; EVENT_SIZE as usize];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(record) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let written = queue.is_some_and(|q| mem.is_host_owned(q)) && mem.write(slot, &bytes).is_ok();
    if !written {
        return EventWrite::Aborted { gerror_irq: regs.raise_gerror(GERROR_EVTQ_ABT_ERR) };
    }
    let ptr = shape.pointer(prod);
    regs.set_evtq_prod((prod & Q_OVERFLOW_FLAG) | shape.next(ptr));
    EventWrite::Written { irq: regs.evtq_irq_enabled() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::*;
    use crate::smmu::virt::fake::FakeMemory;
    use crate::smmu::virt::regs::Advertised;

    fn setup(evtq_log2: u64) -> (RegisterFile, FakeMemory) {
        let adv =
            Advertised { sid_bits: 16, oas_field: 2, asid16: true, cmdq_log2: 8, evtq_log2: 7 };
        let mut regs = RegisterFile::new(adv);
        regs.write(EVTQ_BASE, 8, 0x8000_0000 | evtq_log2);
        regs.write(CR0, 4, u64::from(CR0_EVTQEN));
        regs.write(IRQ_CTRL, 4, u64::from(IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN));
        (regs, FakeMemory::new(&[MemRange::new(0x8000_0000, 0x8001_0000)]))
    }

    #[test]
    fn records_are_written_in_order_and_wrap() {
        let (mut regs, mut mem) = setup(1); // two entries
        assert_eq!(
            write_event(&mut regs, &mut mem, &bad_ste(7)),
            EventWrite::Written { irq: true }
        );
        assert_eq!(mem.read_u64(0x8000_0000), 0x7_0000_0004);
        assert_eq!(regs.evtq_prod(), 1);
        let rec = ste_fetch(9, 0xdead_beef);
        assert_eq!(write_event(&mut regs, &mut mem, &rec), EventWrite::Written { irq: true });
        assert_eq!(mem.read_u64(0x8000_0020), 0x9_0000_0003);
        assert_eq!(mem.read_u64(0x8000_0038), 0xdead_bee8, "fetch address [51:3]");
        assert_eq!(regs.evtq_prod(), 0b10, "wrapped");
        // Full: the record is lost, OVFLG toggles once.
        assert_eq!(write_event(&mut regs, &mut mem, &bad_streamid(1)), EventWrite::Overflow);
        assert_eq!(regs.evtq_prod(), 0x8000_0002);
        assert_eq!(write_event(&mut regs, &mut mem, &bad_streamid(1)), EventWrite::Overflow);
        assert_eq!(regs.evtq_prod(), 0x8000_0002, "still flagged, not toggled back");
        // The host consumes one and acknowledges the overflow.
        regs.write(EVTQ_CONS, 4, 0x8000_0001);
        assert_eq!(
            write_event(&mut regs, &mut mem, &bad_ste(3)),
            EventWrite::Written { irq: true }
        );
        assert_eq!(regs.evtq_prod(), 0x8000_0003, "OVFLG kept, index advanced");
        assert_eq!(mem.read_u64(0x8000_0000), 0x3_0000_0004);
    }

    #[test]
    fn cd_fetch_faults_name_the_host_cd() {
        let unmapped = 0x7f_fff0_0000;
        let host = 0x7c00_0040;
        // F_TRANSLATION, stage 2, CLASS = CD, IPA = the unmapped page.
        let mut rec = [0x10_0000_0010, (1 << 39) | (1 << 35), 0x40_0000_1000, unmapped];
        rename_cd_fetch_address(&mut rec, unmapped, host);
        assert_eq!(rec, [0x10_0000_0010, (1 << 39) | (1 << 35), 0x40_0000_1000, 0x7c00_0000]);
        // Other faults, other classes, other IPAs: untouched.
        for mut other in [
            [0x10_0000_0010, (1 << 39) | (2 << 40), 0, unmapped],
            [0x10_0000_0010, 1 << 35, 0, unmapped],
            [0x10_0000_0010, 1 << 39, 0, 0x4000_0000],
            [0x10_0000_000a, 0, 0, unmapped],
        ] {
            let before = other;
            rename_cd_fetch_address(&mut other, unmapped, host);
            assert_eq!(other, before);
        }
        let mut fetch = [0x10_0000_0009, 0, 0, unmapped | 0x40];
        rename_cd_fetch_address(&mut fetch, unmapped, host);
        assert_eq!(fetch[3], host);
        assert_eq!(bad_cd(0x10), [0x10_0000_000a, 0, 0, 0]);
    }

    #[test]
    fn disabled_or_outside_host_memory() {
        let (mut regs, mut mem) = setup(3);
        regs.write(CR0, 4, 0);
        assert_eq!(write_event(&mut regs, &mut mem, &bad_ste(1)), EventWrite::Disabled);
        regs.write(EVTQ_BASE, 8, 0x9000_0000 | 3);
        regs.write(CR0, 4, u64::from(CR0_EVTQEN));
        assert_eq!(
            write_event(&mut regs, &mut mem, &bad_ste(1)),
            EventWrite::Aborted { gerror_irq: true }
        );
        assert_eq!(regs.read(GERROR, 4), u64::from(GERROR_EVTQ_ABT_ERR));
        assert_eq!(regs.evtq_prod(), 0, "nothing produced");
        // A queue that straddles the end of host memory is refused too, even for a slot
        // that lies inside it; the error is already active, so no second interrupt.
        let mut short = FakeMemory::new(&[MemRange::new(0x8000_0000, 0x8000_0100)]);
        regs.write(CR0, 4, 0);
        regs.write(EVTQ_BASE, 8, 0x8000_0000 | 4); // 16 x 32 = 512 bytes
        regs.write(CR0, 4, u64::from(CR0_EVTQEN));
        assert_eq!(
            write_event(&mut regs, &mut short, &bad_ste(1)),
            EventWrite::Aborted { gerror_irq: false }
        );
        assert_eq!(short.read_u64(0x8000_0000), 0);
    }
}
