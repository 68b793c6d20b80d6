//! ITS commands (IHI 0069H 5.3): decoding the host's 32-byte packets into [`Command`]s and
//! encoding warden's canonical copies (every field from the decoded value, every reserved bit
//! zero). The GICv4 commands are recognised only to be refused.

use core::fmt;

/// Bytes per command.
pub const COMMAND_BYTES: u64 = 32;

pub const OP_MOVI: u8 = 0x01;
pub const OP_INT: u8 = 0x03;
pub const OP_CLEAR: u8 = 0x04;
pub const OP_SYNC: u8 = 0x05;
pub const OP_MAPD: u8 = 0x08;
pub const OP_MAPC: u8 = 0x09;
pub const OP_MAPTI: u8 = 0x0a;
pub const OP_MAPI: u8 = 0x0b;
pub const OP_INV: u8 = 0x0c;
pub const OP_INVALL: u8 = 0x0d;
pub const OP_MOVALL: u8 = 0x0e;
pub const OP_DISCARD: u8 = 0x0f;
/// GICv4 / GICv4.1: VMOVI, VMOVP, VSGI, VSYNC, VMAPP, VMAPTI, VMAPI, VINVALL, INVDB.
pub const GICV4_OPS: [u8; 9] = [0x21, 0x22, 0x23, 0x25, 0x29, 0x2a, 0x2b, 0x2d, 0x2e];

/// RDbase fields: bits [51:16] of a doubleword.
const RDBASE_SHIFT: u32 = 16;
const RDBASE_MASK: u64 = (1 << 36) - 1;
/// MAPD: ITT_addr is bits [51:8] of DW2.
const ITT_ADDR_MASK: u64 = ((1 << 52) - 1) & !0xff;
const VALID: u64 = 1 << 63;

/// One decoded GICv3 ITS command. `target`s are raw RDbase fields (a processor number when
/// GITS_TYPER.PTA = 0, the frame's address bits [51:16] when PTA = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Movi { device: u32, event: u32, icid: u16 },
    Int { device: u32, event: u32 },
    Clear { device: u32, event: u32 },
    Sync { target: u64 },
    Mapd { device: u32, size: u8, itt: u64, valid: bool },
    Mapc { icid: u16, target: u64, valid: bool },
    Mapti { device: u32, event: u32, intid: u32, icid: u16 },
    Mapi { device: u32, event: u32, icid: u16 },
    Inv { device: u32, event: u32 },
    Invall { icid: u16 },
    Movall { from: u64, to: u64 },
    Discard { device: u32, event: u32 },
}

/// Why a host command is not passed to the ITS. The GICv3 architecture lets an ITS without
/// System Error reporting (GITS_TYPER.SEIS = 0, what warden advertises) ignore a command it
/// cannot carry out; warden drops these the same way (logged and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A GICv4 command: virtual LPIs are not offered to the host.
    GicV4(u8),
    Unknown(u8),
    DeviceId(u32),
    EventId(u32),
    Icid(u16),
    /// No redistributor answers to this RDbase.
    Target(u64),
    /// MAPD Size above GITS_TYPER.ID_bits.
    IttSize(u8),
    /// MAPD's interrupt translation table is not host memory warden may hand to a device.
    IttNotHostMemory {
        itt: u64,
        bytes: u64,
    },
    /// MAPTI/MAPI to an INTID that is not an LPI the pending tables cover.
    Intid(u32),
    /// No frame left for the device table's level-2 page this DeviceID needs.
    NoTableMemory(u32),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::GicV4(op) => write!(f, "GICv4 command {op:#04x} (virtual LPIs are hidden)"),
            Refusal::Unknown(op) => write!(f, "unknown command {op:#04x}"),
            Refusal::DeviceId(d) => write!(f, "DeviceID {d:#x} beyond the advertised DeviceIDs"),
            Refusal::EventId(e) => write!(f, "EventID {e:#x} beyond the advertised EventIDs"),
            Refusal::Icid(c) => write!(f, "ICID {c:#x} beyond the advertised collections"),
            Refusal::Target(t) => write!(f, "RDbase {t:#x} names no redistributor"),
            Refusal::IttSize(s) => write!(f, "MAPD Size {s} above GITS_TYPER.ID_bits"),
            Refusal::IttNotHostMemory { itt, bytes } => write!(
                f,
                "MAPD ITT {itt:#x}+{bytes:#x} is not host memory (warden's, a carveout or \
                 no-map reserved)"
            ),
            Refusal::Intid(i) => write!(f, "INTID {i:#x} is not a covered LPI"),
            Refusal::NoTableMemory(d) => {
                write!(f, "no frame for the device table page of DeviceID {d:#x}")
            }
        }
    }
}

fn device_of(dw0: u64) -> u32 {
    (dw0 >> 32) as u32
}

fn rdbase_of(dw: u64) -> u64 {
    (dw >> RDBASE_SHIFT) & RDBASE_MASK
}

impl Command {
    /// Decodes a host command (little-endian doublewords). Only the opcode decides the shape;
    /// the fields are checked against the ITS by the caller.
    pub fn decode(dw: [u64; 4]) -> Result<Command, Refusal> {
        let op = (dw[0] & 0xff) as u8;
        let device = device_of(dw[0]);
        let event = dw[1] as u32;
        let icid = dw[2] as u16;
        Ok(match op {
            OP_MOVI => Command::Movi { device, event, icid },
            OP_INT => Command::Int { device, event },
            OP_CLEAR => Command::Clear { device, event },
            OP_SYNC => Command::Sync { target: rdbase_of(dw[2]) },
            OP_MAPD => Command::Mapd {
                device,
                size: (dw[1] & 0x1f) as u8,
                itt: dw[2] & ITT_ADDR_MASK,
                valid: dw[2] & VALID != 0,
            },
            OP_MAPC => Command::Mapc { icid, target: rdbase_of(dw[2]), valid: dw[2] & VALID != 0 },
            OP_MAPTI => Command::Mapti { device, event, intid: (dw[1] >> 32) as u32, icid },
            OP_MAPI => Command::Mapi { device, event, icid },
            OP_INV => Command::Inv { device, event },
            OP_INVALL => Command::Invall { icid },
            OP_MOVALL => Command::Movall { from: rdbase_of(dw[2]), to: rdbase_of(dw[3]) },
            OP_DISCARD => Command::Discard { device, event },
            op if GICV4_OPS.contains(&op) => return Err(Refusal::GicV4(op)),
            op => return Err(Refusal::Unknown(op)),
        })
    }

    /// The canonical packet: opcode and fields only.
    pub fn encode(&self) -> [u64; 4] {
        let dev = |op: u8, device: u32| u64::from(op) | (u64::from(device) << 32);
        let rd = |target: u64| (target & RDBASE_MASK) << RDBASE_SHIFT;
        match *self {
            Command::Movi { device, event, icid } => {
                [dev(OP_MOVI, device), u64::from(event), u64::from(icid), 0]
            }
            Command::Int { device, event } => [dev(OP_INT, device), u64::from(event), 0, 0],
            Command::Clear { device, event } => [dev(OP_CLEAR, device), u64::from(event), 0, 0],
            Command::Sync { target } => [u64::from(OP_SYNC), 0, rd(target), 0],
            Command::Mapd { device, size, itt, valid } => [
                dev(OP_MAPD, device),
                u64::from(size & 0x1f),
                (itt & ITT_ADDR_MASK) | if valid { VALID } else { 0 },
                0,
            ],
            Command::Mapc { icid, target, valid } => [
                u64::from(OP_MAPC),
                0,
                u64::from(icid) | rd(target) | if valid { VALID } else { 0 },
                0,
            ],
            Command::Mapti { device, event, intid, icid } => [
                dev(OP_MAPTI, device),
                u64::from(event) | (u64::from(intid) << 32),
                u64::from(icid),
                0,
            ],
            Command::Mapi { device, event, icid } => {
                [dev(OP_MAPI, device), u64::from(event), u64::from(icid), 0]
            }
            Command::Inv { device, event } => [dev(OP_INV, device), u64::from(event), 0, 0],
            Command::Invall { icid } => [u64::from(OP_INVALL), 0, u64::from(icid), 0],
            Command::Movall { from, to } => [u64::from(OP_MOVALL), 0, rd(from), rd(to)],
            Command::Discard { device, event } => [dev(OP_DISCARD, device), u64::from(event), 0, 0],
        }
    }

    /// The opcode's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Movi { .. } => "MOVI",
            Command::Int { .. } => "INT",
            Command::Clear { .. } => "CLEAR",
            Command::Sync { .. } => "SYNC",
            Command::Mapd { .. } => "MAPD",
            Command::Mapc { .. } => "MAPC",
            Command::Mapti { .. } => "MAPTI",
            Command::Mapi { .. } => "MAPI",
            Command::Inv { .. } => "INV",
            Command::Invall { .. } => "INVALL",
            Command::Movall { .. } => "MOVALL",
            Command::Discard { .. } => "DISCARD",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_packets_decode() {
        // MAPD DeviceID 0x10, 32 events, ITT at 0x4321_0000, valid (as Linux builds it).
        let mapd = [0x10_0000_0008, 4, 0x8000_0000_4321_0000, 0];
        assert_eq!(
            Command::decode(mapd),
            Ok(Command::Mapd { device: 0x10, size: 4, itt: 0x4321_0000, valid: true })
        );
        assert_eq!(Command::decode(mapd).unwrap().encode(), mapd);
        // MAPC ICID 1 to processor 1 (PTA = 0: RDbase = processor number << 16).
        let mapc = [0x9, 0, 0x8000_0000_0001_0001, 0];
        assert_eq!(Command::decode(mapc), Ok(Command::Mapc { icid: 1, target: 1, valid: true }));
        // MAPTI DeviceID 0x18, EventID 2 -> LPI 8194, ICID 0.
        let mapti = [0x18_0000_000a, 0x2002_0000_0002, 0, 0];
        assert_eq!(
            Command::decode(mapti),
            Ok(Command::Mapti { device: 0x18, event: 2, intid: 0x2002, icid: 0 })
        );
    }

    #[test]
    fn reserved_bits_are_dropped() {
        let noisy = [0xdead_beef_0000_ff03 & !0xff | 0x03, u64::MAX, u64::MAX, u64::MAX];
        let cmd = Command::decode(noisy).unwrap();
        assert_eq!(cmd, Command::Int { device: 0xdead_beef, event: u32::MAX });
        assert_eq!(cmd.encode(), [0xdead_beef_0000_0003, 0xffff_ffff, 0, 0]);
        let mapd = Command::decode([0x08, u64::MAX, u64::MAX, u64::MAX]).unwrap();
        assert_eq!(mapd.encode(), [0x08, 0x1f, (1 << 63) | ITT_ADDR_MASK, 0]);
    }

    #[test]
    fn gicv4_and_unknown_are_refused() {
        for op in GICV4_OPS {
            assert_eq!(Command::decode([u64::from(op), 0, 0, 0]), Err(Refusal::GicV4(op)));
        }
        for op in [0x00, 0x02, 0x06, 0x07, 0x10, 0x20, 0x24, 0xff] {
            assert_eq!(Command::decode([u64::from(op), 0, 0, 0]), Err(Refusal::Unknown(op)));
        }
    }

    proptest::proptest! {
        /// Whatever the host writes, a decoded command re-encodes to a packet that decodes to
        /// itself (the canonical form is a fixed point) and never carries more than its fields.
        #[test]
        fn encode_is_canonical(dw in proptest::prelude::any::<[u64; 4]>()) {
            if let Ok(cmd) = Command::decode(dw) {
                let packet = cmd.encode();
                proptest::prop_assert_eq!(Command::decode(packet), Ok(cmd));
                proptest::prop_assert_eq!(packet[0] & 0xffff_ff00, 0);
                let _ = cmd.name();
            }
        }
    }
}
