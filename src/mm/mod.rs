//! Memory management: physical ranges, page tables (host/peer stage-2 and warden's own EL2
//! stage-1), frame allocation and boot-time layout.

pub mod el2;
pub mod footprint;
pub mod frame;
pub mod host_memory;
pub mod host_plan;
pub mod layout;
pub mod link_layout;
pub mod ownership;
pub mod pgtable;
pub mod range;
pub mod stage2;
pub mod tcr;

pub use el2::{El2Map, El2MapError, El2PageTable, build_el2_identity_map, el2_tcr};
pub use frame::{BumpFrames, FrameAllocator, FrameError, PoolFrames};
pub use pgtable::{
    Attrs, El2Stage1, MapError, Mapping, MemKind, PageTable, Perms, Stage2, TableLayout,
    TableStats, Translation,
};
pub use range::{MemRange, PAGE_SIZE, align_down, align_up};
pub use stage2::{
    HostStage2, HostStage2Error, HostStage2Spec, Stage2Config, build_host_stage2, ipa_bits_for,
    vttbr,
};
pub use tcr::{ConfigError, pa_range_bits_from_mmfr0, vmid16_from_mmfr1};

/// The layout numbers of the board this build is for ([`link_layout::LINK_LAYOUTS`]).
pub const LAYOUT: link_layout::LinkLayout =
    match link_layout::link_layout(crate::boards::CURRENT.name) {
        Some(layout) => layout,
        None => panic!("the board has no entry in src/mm/link_layout.rs"),
    };
