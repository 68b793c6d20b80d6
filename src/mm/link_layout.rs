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
    /// Page-table frames transfers keep between them (`crate::handoff`: the next transfer's
    /// reserve comes from these first, so steady-state transfers neither allocate nor zero
    /// frames they do not use). The run-time reserve counts them
    /// (`crate::mm::footprint::runtime_frame_reserve`).
    pub spare_frames: usize,
    /// Frames the run time may allocate outside the handoffs: the virtual SMMU's and the ITS's
    /// shadow structures and the simulated peer's tables. The board tests require
    /// [`RUNTIME_FRAMES_WITH_SHADOWS`] of a board that has any of them.
    pub runtime_frames: usize,
    /// The boot CPU's EL2 stack, its guard page included (`crate::arch::BOOT_STACK_SIZE`):
    /// the boot is its deepest use, and the boot checks that `BOOT_STACK_MARGIN` (16 KiB) of it
    /// is still unused when warden enters the host (a fatal error saying by how much otherwise).
    pub boot_stack: usize,
    /// Devices the DT parse may withhold from the host (`crate::dt::MAX_WITHHELD`, the capacity
    /// of `PlatformInfo::withheld`, about 200 bytes each in `.data`); a DT withholding more is
    /// refused at boot with a defined error. The board tests parse each Snapdragon board's
    /// real DT and require a quarter of this to spare.
    pub max_withheld: usize,
}

/// Frames the run time may allocate outside the handoffs on a board with a virtual SMMU, an
/// ITS or the simulated peer: the scenarios of `cargo xtask test` (the Linux boots included)
/// took at most 38 after boot, 20 of them the two carveouts' peer tables and up to 17 a
/// transfer's reserve and the spares it left (`footprint peak:` at power-down against
/// `footprint:` at boot); 64 is far more than the rest.
pub const RUNTIME_FRAMES_WITH_SHADOWS: usize = 64;

/// The most frames one transfer reserves (`crate::handoff::reserve::transfer_bound` for any
/// range inside one 512 GiB region, walks starting at level 0: 2 x (4 + 5) + 5; the board
/// tests check it against every carveout of the Snapdragon boards' DTs). Kept as spares, one
/// transfer's worth lets the next transfer take all of its reserve from them.
pub const ONE_TRANSFER_FRAMES: usize = 23;

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
    // A few transfers' worth (the bench's handoff figures are with these).
    spare_frames: 64,
    runtime_frames: RUNTIME_FRAMES_WITH_SHADOWS,
    // The hostile-DT scenarios and the Linux boots were not measured on a smaller one.
    boot_stack: 128 * KIB as usize,
    // RB3 Gen 2's DT withholds 159 (the QEMU builds' host tests parse every board's DT).
    max_withheld: 192,
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
        spare_frames: 64,
        runtime_frames: RUNTIME_FRAMES_WITH_SHADOWS,
        boot_stack: 128 * KIB as usize,
        max_withheld: 192,
    },
    LinkLayout {
        board: "qrb5165-rb5",
        heap: QEMU_HEAP,
        heap_reserve: QEMU_HEAP_RESERVE,
        pool_min: 2 * MIB,
        end_align: 2 * MIB,
        el2_tables: 16,
        spare_frames: 64,
        runtime_frames: RUNTIME_FRAMES_WITH_SHADOWS,
        boot_stack: 128 * KIB as usize,
        max_withheld: 192,
    },
    // DB410c: a 1 MiB region at 0x8640_0000 (1 MiB-aligned, not 2). No virtual SMMU, no ITS:
    // the hyp-entry chain on qemu-virt-tz (the same boot path, with an SMMUv3 and an ITS) took
    // 9 KiB of heap after the boot and 21 KiB at its peak; 48 KiB left after the boot is more
    // than twice the peak. The frames, on its real DT (the board tests): 76 before the host stage 2
    // (the host stage 2's edge splits and the run-time reserve: `mpss` as fragmented as a host
    // can make it, in both stage 2s, 47, and the larger of one transfer in flight and the
    // spares, 23: no shadow structures), 77 after it (the host stage 2's 7 tables and the
    // reserve); 80 leaves 3 for the boot's own (a peer stage 2's root). Its EL2 stage-1 takes 7
    // pages.
    LinkLayout {
        board: "apq8016-sbc",
        heap: 80 * KIB,
        heap_reserve: 48 * KIB,
        pool_min: 80 * KIB + 80 * 4 * KIB,
        end_align: MIB,
        // 7 used on its real DT, and the board tests' 4 to spare.
        el2_tables: 11,
        // One carveout (`mpss`), so one transfer at a time: one transfer's worth of spares
        // covers it, and the reserve counts the larger of the spares and that transfer
        // (`crate::mm::footprint::runtime_frame_reserve`).
        spare_frames: ONE_TRANSFER_FRAMES,
        // No virtual SMMU (msm-iommu-v1 has no back end), no ITS (GICv2), no simulated peer:
        // nothing allocates frames after the boot outside the handoffs.
        runtime_frames: 0,
        // The same boot path on qemu-virt-tz (hyp entry, DT linked in, no packed payload:
        // `guest-chain`) reached 35 KiB of the boot CPU's stack (`footprint peak:`); 64 KiB
        // leaves 60 above the guard page, of which the boot's check keeps 16 unused: a boot
        // up to 44 KiB deep passes, a deeper one stops with a fatal error saying by how much.
        boot_stack: 64 * KIB as usize,
        // Its DT withholds 82 (the board tests require a quarter to spare).
        max_withheld: 112,
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
