//! Event queue records (Arm IHI 0070, 7.3): 32 bytes, four little-endian u64 words.

use core::fmt;

/// Bytes in one event record.
pub const EVENT_SIZE: u64 = 32;

/// The event types warden names (others are shown by number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    UnsupportedUpstream,
    BadStreamId,
    SteFetch,
    BadSte,
    StreamDisabled,
    TranslationForbidden,
    BadSubstreamId,
    CdFetch,
    BadCd,
    WalkExternalAbort,
    Translation,
    AddressSize,
    Access,
    Permission,
    TlbConflict,
    ConfigConflict,
    VmsFetch,
    Other(u8),
}

impl EventKind {
    pub fn from_id(id: u8) -> Self {
        match id {
            0x01 => EventKind::UnsupportedUpstream,
            0x02 => EventKind::BadStreamId,
            0x03 => EventKind::SteFetch,
            0x04 => EventKind::BadSte,
            0x06 => EventKind::StreamDisabled,
            0x07 => EventKind::TranslationForbidden,
            0x08 => EventKind::BadSubstreamId,
            0x09 => EventKind::CdFetch,
            0x0a => EventKind::BadCd,
            0x0b => EventKind::WalkExternalAbort,
            0x10 => EventKind::Translation,
            0x11 => EventKind::AddressSize,
            0x12 => EventKind::Access,
            0x13 => EventKind::Permission,
            0x20 => EventKind::TlbConflict,
            0x21 => EventKind::ConfigConflict,
            0x25 => EventKind::VmsFetch,
            other => EventKind::Other(other),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            EventKind::UnsupportedUpstream => "F_UUT",
            EventKind::BadStreamId => "C_BAD_STREAMID",
            EventKind::SteFetch => "F_STE_FETCH",
            EventKind::BadSte => "C_BAD_STE",
            EventKind::StreamDisabled => "F_STREAM_DISABLED",
            EventKind::TranslationForbidden => "F_TRANSL_FORBIDDEN",
            EventKind::BadSubstreamId => "C_BAD_SUBSTREAMID",
            EventKind::CdFetch => "F_CD_FETCH",
            EventKind::BadCd => "C_BAD_CD",
            EventKind::WalkExternalAbort => "F_WALK_EABT",
            EventKind::Translation => "F_TRANSLATION",
            EventKind::AddressSize => "F_ADDR_SIZE",
            EventKind::Access => "F_ACCESS",
            EventKind::Permission => "F_PERMISSION",
            EventKind::TlbConflict => "F_TLB_CONFLICT",
            EventKind::ConfigConflict => "F_CFG_CONFLICT",
            EventKind::VmsFetch => "F_VMS_FETCH",
            EventKind::Other(_) => "event",
        }
    }

    /// Records that carry an input address, direction and stage (the translation faults).
    fn is_fault_with_address(&self) -> bool {
        matches!(
            self,
            EventKind::Translation
                | EventKind::AddressSize
                | EventKind::Access
                | EventKind::Permission
                | EventKind::WalkExternalAbort
                | EventKind::UnsupportedUpstream
                | EventKind::TranslationForbidden
                | EventKind::TlbConflict
        )
    }

    /// Records whose word 3 holds a fetch address (`[51:3]`).
    fn has_fetch_address(&self) -> bool {
        matches!(
            self,
            EventKind::SteFetch
                | EventKind::CdFetch
                | EventKind::VmsFetch
                | EventKind::WalkExternalAbort
        )
    }
}

/// What a fault's CLASS field says was being accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    ContextDescriptor,
    TranslationTable,
    Input,
    Reserved,
}

/// One decoded event record. Addresses not carried by the record's type are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub sid: u32,
    pub ssid: Option<u32>,
    /// The transaction's input address (for stage-2-only streams, the IPA).
    pub input_addr: u64,
    /// IPA field (`[51:12]`) of stage-2 faults under a stage 1.
    pub ipa: u64,
    /// Address of the structure or descriptor whose fetch failed.
    pub fetch_addr: u64,
    pub read: bool,
    pub stage2: bool,
    pub class: FaultClass,
    pub raw: [u64; 4],
}

impl Event {
    pub fn decode(raw: [u64; 4]) -> Self {
        let id = (raw[0] & 0xff) as u8;
        let kind = EventKind::from_id(id);
        let ssv = raw[0] & (1 << 11) != 0;
        let class = match (raw[1] >> 40) & 3 {
            0 => FaultClass::ContextDescriptor,
            1 => FaultClass::TranslationTable,
            2 => FaultClass::Input,
            _ => FaultClass::Reserved,
        };
        let with_addr = kind.is_fault_with_address();
        Event {
            kind,
            sid: (raw[0] >> 32) as u32,
            ssid: ssv.then_some(((raw[0] >> 12) & 0xf_ffff) as u32),
            input_addr: if with_addr { raw[2] } else { 0 },
            ipa: if with_addr && !kind.has_fetch_address() {
                raw[3] & 0x000f_ffff_ffff_f000
            } else {
                0
            },
            fetch_addr: if kind.has_fetch_address() { raw[3] & 0x000f_ffff_ffff_fff8 } else { 0 },
            read: raw[1] & (1 << 35) != 0,
            stage2: raw[1] & (1 << 39) != 0,
            class,
            raw,
        }
    }
}

impl fmt::Display for Event {
    /// One log line, e.g. `SMMU event F_TRANSLATION sid 0x18 IPA 0x40200000 write (stage 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SMMU event {}", self.kind.name())?;
        if let EventKind::Other(id) = self.kind {
            write!(f, " {id:#04x}")?;
        }
        write!(f, " sid {:#x}", self.sid)?;
        if let Some(ssid) = self.ssid {
            write!(f, " ssid {ssid:#x}")?;
        }
        if self.kind.is_fault_with_address() {
            if self.stage2 && (self.ipa == 0 || self.ipa == self.input_addr & !0xfff) {
                write!(f, " IPA {:#x}", self.input_addr)?;
            } else if self.stage2 {
                write!(f, " VA {:#x} IPA {:#x}", self.input_addr, self.ipa)?;
            } else {
                write!(f, " addr {:#x}", self.input_addr)?;
            }
            write!(f, " {}", if self.read { "read" } else { "write" })?;
        }
        if self.kind.has_fetch_address() {
            write!(f, " fetch {:#x}", self.fetch_addr)?;
        }
        if self.kind.is_fault_with_address() {
            let class = match self.class {
                FaultClass::ContextDescriptor => ", CD fetch",
                FaultClass::TranslationTable => ", table walk",
                FaultClass::Input | FaultClass::Reserved => "",
            };
            write!(f, " (stage {}{class})", if self.stage2 { 2 } else { 1 })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn translation_fault_stage2_write() {
        let e = Event::decode([0x18_0000_0010, (1 << 39) | (2 << 40), 0x4020_0000, 0]);
        assert_eq!(e.kind, EventKind::Translation);
        assert_eq!(
            (e.sid, e.ssid, e.input_addr, e.read, e.stage2),
            (0x18, None, 0x4020_0000, false, true)
        );
        assert_eq!(e.class, FaultClass::Input);
        assert_eq!(
            format!("{e}"),
            "SMMU event F_TRANSLATION sid 0x18 IPA 0x40200000 write (stage 2)"
        );
    }

    #[test]
    fn permission_read_with_ipa_and_ssid() {
        let e = Event::decode([
            (0x10 << 32) | (5 << 12) | (1 << 11) | 0x13,
            (1 << 35) | (1 << 39) | (1 << 40),
            0x1234_5678,
            0x4567_8000,
        ]);
        assert_eq!(e.ssid, Some(5));
        assert!(e.read);
        assert_eq!(e.ipa, 0x4567_8000);
        assert_eq!(
            format!("{e}"),
            "SMMU event F_PERMISSION sid 0x10 ssid 0x5 VA 0x12345678 IPA 0x45678000 read (stage 2, table walk)"
        );
    }

    #[test]
    fn config_errors_and_fetches() {
        let e = Event::decode([0x8_0000_0004, 0xffff_ffff, 0xdead, 0xbeef]);
        assert_eq!(e.kind, EventKind::BadSte);
        assert_eq!((e.input_addr, e.ipa, e.fetch_addr), (0, 0, 0));
        assert_eq!(format!("{e}"), "SMMU event C_BAD_STE sid 0x8");
        let e = Event::decode([(0x1_0000 << 32) | 0x02, 0, 0, 0]);
        assert_eq!(format!("{e}"), "SMMU event C_BAD_STREAMID sid 0x10000");
        let e = Event::decode([0x03, 0, 0, 0x4100_0047]);
        assert_eq!(e.fetch_addr, 0x4100_0040);
        assert_eq!(format!("{e}"), "SMMU event F_STE_FETCH sid 0x0 fetch 0x41000040");
        let e = Event::decode([0x18_0000_000b, (1 << 39) | (1 << 40), 0x5000, 0x4100_1008]);
        assert_eq!(
            format!("{e}"),
            "SMMU event F_WALK_EABT sid 0x18 IPA 0x5000 write fetch 0x41001008 (stage 2, table walk)"
        );
        for (id, name) in [(0x11, "F_ADDR_SIZE"), (0x12, "F_ACCESS")] {
            let e = Event::decode([id, (1 << 35) | (2 << 40), 0x1000, 0]);
            assert_eq!(
                format!("{e}"),
                format!("SMMU event {name} sid 0x0 addr 0x1000 read (stage 1)")
            );
        }
        let e = Event::decode([0x7f, 0, 0, 0]);
        assert_eq!(e.kind, EventKind::Other(0x7f));
        assert_eq!(format!("{e}"), "SMMU event event 0x7f sid 0x0");
    }
}
