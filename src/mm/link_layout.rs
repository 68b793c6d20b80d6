// warden's memory layout per board: the pool's least size and where the image ends (which
// `build.rs` includes, to hand them to the linker script `linker/warden.ld` as `--defsym`s),
// and the heap the boot carves from the pool's front (`crate::boot`). One table, so the linker
// and the boot cannot disagree; the unit tests check each entry against its board's
// description and, for the Snapdragon boards, against what its real DT needs of the pool.
//
// This file is `include!`d by build.rs: plain items and outer comments only.

/// One board's layout numbers (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLayout {
    /// The board's name (`boards/NAME/`, feature `board-NAME`).
    pub board: &'static str,
    /// Heap carved from the front of the pool; the rest are page-table frames.
    pub heap: u64,
    /// Heap the run time may still allocate after the boot: the boot stops with a fatal error
    /// when less is left (`crate::mm::footprint::PoolAfterBoot`).
    pub heap_reserve: u64,
    /// The pool's least size (heap and frames): the linker makes it at least this.
    pub pool_min: u64,
    /// The image (and so the pool) ends on a multiple of this. 2 MiB where warden is placed
    /// like a Linux Image (2 MiB-aligned, and the host's stage 2 keeps 2 MiB blocks around it)
    /// or its region is a multiple of 2 MiB; a board whose region is smaller ends it there.
    pub end_align: u64,
    /// Pages in BSS for warden's own EL2 stage-1 (built at boot with the MMU off; the run
    /// time's clean window takes its tables from the pool). The boot logs how many it used
    /// (`footprint:`, `EL2 boot tables N of M`) and stops with an error if they run out; the
    /// Snapdragon boards' need on their real DTs is checked by the board tests
    /// (`el2_boot_tables_fit_on_every_board`, with [`EL2_TABLE_MARGIN`] to spare).
    pub el2_tables: usize,
}

/// Pages of a Snapdragon board's `el2_tables` the board tests require to be left over.
pub const EL2_TABLE_MARGIN: usize = 4;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The QEMU boards' heap: the scenarios of `cargo xtask test` and the bench took at most
/// 151 KiB (`many-cpus`, 16 CPUs), 132 KiB of it after the boot (`footprint peak:` against
/// `footprint:`); 384 KiB left after the boot is nearly three times that.
const QEMU_HEAP: u64 = 512 * KIB;
const QEMU_HEAP_RESERVE: u64 = 384 * KIB;

/// The QEMU boards' layout (qemu-virt, and qemu-virt-tz with the same machine under the chain).
const QEMU_LAYOUT: LinkLayout = LinkLayout {
    board: "qemu-virt",
    heap: QEMU_HEAP,
    heap_reserve: QEMU_HEAP_RESERVE,
    // The bench's 256 MiB DONATE peaked at 487 frames (docs/bench.md, Footprint).
    pool_min: 2 * MIB,
    end_align: 2 * MIB,
    // The test DTs and the hostile-DT scenarios: not sized down (not measured on each).
    el2_tables: 32,
};

/// Every board's layout.
pub const LINK_LAYOUTS: [LinkLayout; 5] = [
    QEMU_LAYOUT,
    LinkLayout { board: "qemu-virt-tz", ..QEMU_LAYOUT },
    // RB3 Gen 2 (4 MiB region) and RB5 (6 MiB): the QEMU boards' heap. Frames and EL2 tables
    // from their real DTs (the board tests print them): the run-time reserve counts every
    // carveout as fragmented as a host can make it (`crate::mm::footprint::carveout_frames`):
    // RB3 Gen 2's four carveouts (255 MiB) need 590 frames before the host stage 2, RB5's
    // three 287; RB3 Gen 2's EL2 stage-1 takes 13 pages, RB5's 10.
    LinkLayout {
        board: "qcs6490-rb3gen2",
        heap: QEMU_HEAP,
        heap_reserve: QEMU_HEAP_RESERVE,
        pool_min: QEMU_HEAP + 600 * 4 * KIB,
        end_align: 2 * MIB,
        el2_tables: 18,
    },
    LinkLayout {
        board: "qrb5165-rb5",
        heap: QEMU_HEAP,
        heap_reserve: QEMU_HEAP_RESERVE,
        pool_min: 2 * MIB,
        end_align: 2 * MIB,
        el2_tables: 16,
    },
    // DB410c: a 1 MiB region at 0x8640_0000 (1 MiB-aligned, not 2). No virtual SMMU, no ITS:
    // the hyp-entry chain on qemu-virt-tz (the same boot path, with an SMMUv3 and an ITS) took
    // 9 KiB of heap after the boot and 21 KiB at its peak; 64 KiB left after the boot is three
    // times the peak. The frames, on its real DT (the board tests): 201 before the host stage
    // 2 (the run-time reserve: mpss as fragmented as a host can make it, in both stage 2s,
    // with a transfer in flight, plus the two 64-frame spares), 202 after it (the host stage
    // 2's 7 tables and the reserve). Its EL2 stage-1 takes 7 pages. (So the region does not
    // hold it yet: docs/boards/apq8016-sbc.md.)
    LinkLayout {
        board: "apq8016-sbc",
        heap: 96 * KIB,
        heap_reserve: 64 * KIB,
        pool_min: 96 * KIB + 204 * 4 * KIB,
        end_align: MIB,
        el2_tables: 12,
    },
];

/// The layout of the board named `board`.
pub const fn link_layout(board: &str) -> Option<LinkLayout> {
    let mut i = 0;
    while i < LINK_LAYOUTS.len() {
        if str_eq(LINK_LAYOUTS[i].board, board) {
            return Some(LINK_LAYOUTS[i]);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::{self, Board};

    /// Every board has a layout; its numbers hang together; a board with a region fits its
    /// image's end inside it (the region is a multiple of the end alignment, from a base
    /// aligned to it: warden is linked at 0 and placed at the base).
    #[test]
    fn every_board_has_a_consistent_layout() {
        let all: [&Board; 5] = [
            &boards::qemu_virt::BOARD,
            &boards::qemu_virt_tz::BOARD,
            &boards::qcs6490_rb3gen2::BOARD,
            &boards::qrb5165_rb5::BOARD,
            &boards::apq8016_sbc::BOARD,
        ];
        for board in all {
            let layout = link_layout(board.name).unwrap_or_else(|| panic!("{}", board.name));
            assert!(layout.heap_reserve < layout.heap && layout.heap < layout.pool_min);
            assert!(layout.end_align.is_power_of_two() && layout.el2_tables > 0);
            if let Some(region) = board.entry.region() {
                assert!(layout.pool_min < region.size(), "{}", board.name);
                assert_eq!(region.start % layout.end_align, 0, "{}", board.name);
                assert_eq!(region.size() % layout.end_align, 0, "{}", board.name);
            }
        }
        assert_eq!(link_layout("apq8016-sbc").unwrap().end_align, 1 << 20);
        assert_eq!(link_layout("no-such-board"), None);
        assert_eq!(crate::mm::LAYOUT, link_layout(boards::CURRENT.name).unwrap());
    }
}
