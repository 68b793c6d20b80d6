//! warden's back end on a real MMU-500 (Snapdragon's apps SMMU; Arm IHI 0062): its register
//! map and the register model its host tests run against.

pub mod io;
#[cfg(any(test, feature = "fakes"))]
pub mod model;
pub mod regs;
