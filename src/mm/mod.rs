//! Memory management: physical ranges, page tables (host/peer stage-2 and warden's own EL2
//! stage-1), frame allocation and boot-time layout.

pub mod layout;
pub mod range;

pub use range::{MemRange, PAGE_SIZE, align_down, align_up};
