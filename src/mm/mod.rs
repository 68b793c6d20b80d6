//! Memory management: physical ranges, page tables (host/peer stage-2 and warden's own EL2
//! stage-1), frame allocation and boot-time layout.

pub mod el2;
pub mod frame;
pub mod pgtable;
pub mod range;
pub mod stage2;
pub mod tcr;

pub use frame::{BumpFrames, FrameAllocator, FrameError, PoolFrames};
pub use pgtable::{
    Attrs, El2Stage1, MapError, Mapping, MemKind, PageTable, Perms, Stage2, TableLayout,
    TableStats, Translation,
};
pub use range::{MemRange, PAGE_SIZE, align_down, align_up};
