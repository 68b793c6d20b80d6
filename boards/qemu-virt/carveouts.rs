//! The carveouts the qemu-virt board adds to the DT it boots the host with (QEMU's generated
//! DT has no `/reserved-memory`): one for the modem and one for the DSP, 16 MiB each, placed
//! inside whatever RAM the machine has — just below the top 32 MiB of its highest RAM bank
//! ([`for_ram`]). With `cargo xtask run`'s default 1 GiB at 0x4000_0000 that is 0x7c00_0000
//! (modem) and 0x7d00_0000 (DSP); with `--memory 512M`, 0x5c00_0000 and 0x5d00_0000. The top
//! 32 MiB stay free, as before, for what QEMU and warden's planner put at the end of RAM. The
//! binding is in `docs/carveouts.md`.
//!
//! Apply with [`add_to`] before the host DT is written (in xtask, on the blob QEMU will be
//! given); the result parses into `PlatformInfo::carveouts` in this order. Whoever uses the
//! carveouts later learns where they are from the DT or from warden (`CARVEOUT_INFO`), never
//! from a fixed address.

use core::fmt;

use crate::dt::DtEdit;
use crate::mm::MemRange;

/// One carveout of the board, as DT properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarveoutSpec {
    /// Node name without `@unit` (the node is `/reserved-memory/<name>@<start in hex>`).
    pub name: &'static str,
    pub range: MemRange,
    /// `warden,peer`.
    pub peer: &'static str,
    /// `warden,policy`.
    pub policy: &'static str,
    /// `warden,clear-on-reclaim;`.
    pub clear_on_reclaim: bool,
}

const MIB: u64 = 1 << 20;

/// Size of each carveout.
pub const CARVEOUT_SIZE: u64 = 16 * MIB;
/// RAM left free above the carveouts.
pub const TOP_GAP: u64 = 32 * MIB;
/// The smallest highest RAM bank the carveouts are placed in: besides the carveouts and the
/// gap above them, it must leave room below for warden (its region is 4 MiB on QEMU) and a
/// host.
pub const MIN_BANK: u64 = 128 * MIB;

/// The modem's carveout, without its place: donate only.
const MODEM: CarveoutSpec = CarveoutSpec {
    name: "modem",
    range: MemRange::new(0, 0),
    peer: "modem",
    policy: "donate",
    clear_on_reclaim: false,
};

/// The DSP's carveout, without its place: lend only, scrubbed on every reclaim.
const DSP: CarveoutSpec = CarveoutSpec {
    name: "dsp",
    range: MemRange::new(0, 0),
    peer: "dsp",
    policy: "lend",
    clear_on_reclaim: true,
};

/// Why the board cannot place its carveouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementError {
    NoRam,
    /// The highest RAM bank is smaller than [`MIN_BANK`].
    BankTooSmall(MemRange),
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRam => f.write_str("the DT names no RAM"),
            Self::BankTooSmall(bank) => write!(
                f,
                "the highest RAM bank {bank} is smaller than the {} MiB the board's carveouts \
                 need (give the machine more memory)",
                MIN_BANK / MIB
            ),
        }
    }
}

/// The board's carveouts for a machine whose RAM is `memory` (the DT's `/memory` ranges): the
/// modem's then the DSP's, 16 MiB each, ending [`TOP_GAP`] below the end of the highest bank.
pub fn for_ram(memory: &[MemRange]) -> Result<[CarveoutSpec; 2], PlacementError> {
    let bank = memory.iter().max_by_key(|b| b.end).ok_or(PlacementError::NoRam)?;
    if bank.size() < MIN_BANK {
        return Err(PlacementError::BankTooSmall(*bank));
    }
    let dsp_end = bank.end - TOP_GAP;
    let modem = MemRange::new(dsp_end - 2 * CARVEOUT_SIZE, dsp_end - CARVEOUT_SIZE);
    let dsp = MemRange::new(modem.end, dsp_end);
    Ok([CarveoutSpec { range: modem, ..MODEM }, CarveoutSpec { range: dsp, ..DSP }])
}

impl CarveoutSpec {
    /// `/reserved-memory/<name>@<start>`, the node [`DtEdit::reserve_no_map`] creates.
    pub fn node_path(&self) -> alloc::string::String {
        alloc::format!("/reserved-memory/{}@{:x}", self.name, self.range.start)
    }

    /// Adds this carveout's node (`reg`, `no-map`, `warden,*`) to `edit`.
    pub fn add_to(&self, edit: DtEdit) -> DtEdit {
        let path = self.node_path();
        let edit = edit
            .reserve_no_map(self.name, self.range)
            .set_property(&path, "warden,peer", &nul_terminated(self.peer))
            .set_property(&path, "warden,policy", &nul_terminated(self.policy));
        if self.clear_on_reclaim {
            edit.set_property(&path, "warden,clear-on-reclaim", &[])
        } else {
            edit
        }
    }
}

/// Adds every carveout in `specs` to `edit`.
pub fn add_to(edit: DtEdit, specs: &[CarveoutSpec]) -> DtEdit {
    specs.iter().fold(edit, |edit, spec| spec.add_to(edit))
}

fn nul_terminated(s: &str) -> alloc::vec::Vec<u8> {
    let mut bytes = alloc::vec::Vec::with_capacity(s.len() + 1);
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn placed_below_the_top_of_the_highest_bank() {
        let at = |memory: &[MemRange]| for_ram(memory).map(|[m, d]| (m.range, d.range));
        // 1 GiB at 0x4000_0000: where they always were.
        let one_gib = MemRange::new(0x4000_0000, 0x4000_0000 + GIB);
        assert_eq!(
            at(&[one_gib]),
            Ok((MemRange::new(0x7c00_0000, 0x7d00_0000), MemRange::new(0x7d00_0000, 0x7e00_0000)))
        );
        // 512 MiB: inside it.
        let half = MemRange::new(0x4000_0000, 0x6000_0000);
        assert_eq!(
            at(&[half]),
            Ok((MemRange::new(0x5c00_0000, 0x5d00_0000), MemRange::new(0x5d00_0000, 0x5e00_0000)))
        );
        // Several banks: the highest.
        let low = MemRange::new(0x4000_0000, 0x5000_0000);
        let high = MemRange::new(0x1_0000_0000, 0x1_4000_0000);
        let (modem, dsp) = at(&[high, low]).unwrap();
        assert!(high.contains_range(&modem) && high.contains_range(&dsp));
        assert_eq!(dsp.end, high.end - TOP_GAP);
        // Too small, none.
        let small = MemRange::new(0x4000_0000, 0x4000_0000 + MIN_BANK - 0x1000);
        assert_eq!(at(&[small]), Err(PlacementError::BankTooSmall(small)));
        assert_eq!(at(&[]), Err(PlacementError::NoRam));
        let [m, d] = for_ram(&[MemRange::new(0x4000_0000, 0x4000_0000 + MIN_BANK)]).unwrap();
        assert!(m.range.start >= 0x4000_0000 && d.range.end <= 0x4000_0000 + MIN_BANK);
    }

    #[test]
    fn the_specs_name_their_peers_and_policies() {
        let [m, d] = for_ram(&[MemRange::new(0x4000_0000, 0x8000_0000)]).unwrap();
        assert_eq!(
            (m.name, m.peer, m.policy, m.clear_on_reclaim),
            ("modem", "modem", "donate", false)
        );
        assert_eq!((d.name, d.peer, d.policy, d.clear_on_reclaim), ("dsp", "dsp", "lend", true));
        assert_eq!(m.node_path(), "/reserved-memory/modem@7c000000");
    }
}
