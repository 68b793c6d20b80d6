//! What the host's stage 2 leaves out and what it maps with pages only, from the platform
//! description: one computation for boot (`crate::boot`) and the board tests
//! (`crate::boards`), so a test on a real board's DT checks the plan boot builds.

use alloc::vec::Vec;

use super::range::{MemRange, PAGE_SIZE};
use crate::dt::PlatformInfo;

/// Ranges never mapped for the host: warden's region, every IOMMU's register frames (SMMUv3s
/// and the apps MMU-500 warden drives; other MMU-500s and `msm-iommu-v1`s, also withheld as
/// devices),
/// the GIC frames warden emulates (`gic_holes`) and the control page, whose every access must
/// trap (no DT device should be there; if one is, the page still wins).
pub fn host_stage2_holes(
    p: &PlatformInfo,
    warden: MemRange,
    control_page: Option<u64>,
    gic_holes: &[MemRange],
) -> Vec<MemRange> {
    let mut holes: Vec<MemRange> = alloc::vec![warden];
    holes.extend(p.smmus.iter().map(|s| s.regs));
    holes.extend(p.mmu500.as_ref().map(|m| m.regs));
    holes.extend(p.other_iommus.iter().map(|s| s.regs));
    holes.extend_from_slice(gic_holes);
    holes.extend(control_page.and_then(|pa| MemRange::from_base_size(pa, PAGE_SIZE)));
    holes
}

/// Ranges whose edges the host's stage 2 makes entry boundaries: the carveouts. A handoff then
/// only changes entries inside its carveout (a whole block of it: one entry), never breaking an
/// entry that maps the host's other memory.
pub fn host_stage2_split(p: &PlatformInfo) -> Vec<MemRange> {
    p.carveouts.iter().map(|c| c.range).collect()
}
