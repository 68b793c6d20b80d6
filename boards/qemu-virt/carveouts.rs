//! The carveouts the qemu-virt board adds to the DT it boots the host with (QEMU's generated
//! DT has no `/reserved-memory`): one for the modem and one for the DSP, 16 MiB each, just
//! below the top 32 MiB of the 1 GiB of RAM `cargo xtask run` gives the machine. The binding is
//! in `docs/carveouts.md`.
//!
//! Apply with [`add_to`] before the host DT is written (at boot, or in xtask on the blob QEMU
//! will be given); the result parses into `PlatformInfo::carveouts` in this order.

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

pub const MODEM: CarveoutSpec = CarveoutSpec {
    name: "modem",
    range: MemRange::new(0x7c00_0000, 0x7c00_0000 + 16 * MIB),
    peer: "modem",
    policy: "donate",
    clear_on_reclaim: false,
};

pub const DSP: CarveoutSpec = CarveoutSpec {
    name: "dsp",
    range: MemRange::new(0x7d00_0000, 0x7d00_0000 + 16 * MIB),
    peer: "dsp",
    policy: "lend",
    clear_on_reclaim: true,
};

pub const CARVEOUTS: [CarveoutSpec; 2] = [MODEM, DSP];

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

/// Adds every carveout of the board to `edit`.
pub fn add_to(edit: DtEdit) -> DtEdit {
    CARVEOUTS.iter().fold(edit, |edit, spec| spec.add_to(edit))
}

fn nul_terminated(s: &str) -> alloc::vec::Vec<u8> {
    let mut bytes = alloc::vec::Vec::with_capacity(s.len() + 1);
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    bytes
}
