//! Hardware effects behind narrow traits.
//!
//! Logic in `mm`, `trap` and later `handoff`/`smmu` never issues a barrier, TLB or cache
//! instruction itself: it calls these traits. On aarch64 they are the real instructions
//! ([`aarch64`]); in host tests a [`fake::Recorder`] logs every operation in order so tests can
//! assert sequences such as "unmap → DSB ISHST → TLBI IPAS2E1IS → DSB ISH → TLBI VMALLE1IS →
//! DSB ISH → ISB".

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod host_el2;

/// TLB maintenance and the barriers that order it.
///
/// Stage-2 operations act on the VMID currently programmed in `VTTBR_EL2`, as the architecture
/// defines; callers make sure the right VMID is current.
pub trait TlbMaintenance {
    /// `DSB ISHST`: make prior page-table writes visible to the table walkers.
    fn dsb_ishst(&self);
    /// `DSB ISH`: wait for prior TLB maintenance to complete, inner shareable domain.
    fn dsb_ish(&self);
    /// `ISB`.
    fn isb(&self);
    /// `TLBI IPAS2E1IS, <ipa>`: stage-2 entries for one IPA page, current VMID, broadcast.
    fn tlbi_ipas2e1is(&self, ipa: u64);
    /// `TLBI VMALLE1IS`: all stage-1 (and combined) entries of the current VMID, broadcast.
    fn tlbi_vmalle1is(&self);
    /// `TLBI VMALLS12E1IS`: stage-1 and stage-2 entries of the current VMID, broadcast.
    fn tlbi_vmalls12e1is(&self);
    /// `TLBI ALLE2IS`: all EL2 stage-1 entries, broadcast (warden's own mappings).
    fn tlbi_alle2is(&self);
    /// `TLBI VAE2IS, <va>`: EL2 stage-1 entries for one page of warden's own mappings.
    fn tlbi_vae2is(&self, va: u64);
}

/// Data-cache maintenance by virtual address (warden's VA = PA).
pub trait CacheMaintenance {
    /// Smallest data cache line in bytes: `4 << CTR_EL0.DminLine`.
    fn dcache_line_size(&self) -> u64;
    /// `DC CIVAC`: clean and invalidate to the Point of Coherency.
    fn dc_civac(&self, va: u64);
    /// `DC CVAC`: clean to the Point of Coherency.
    fn dc_cvac(&self, va: u64);
    /// `DC IVAC`: invalidate to the Point of Coherency (discards dirty data: use only on memory
    /// that was written with caches off).
    fn dc_ivac(&self, va: u64);
    /// `DSB SY`.
    fn dsb_sy(&self);
}

/// `value` when `ok`, else 0, without a branch, followed by a speculation barrier (`CSDB` on
/// aarch64): code that uses the result after a bounds or ownership check cannot be steered,
/// even speculatively, to a value the check refused (the check's branch may be mispredicted,
/// but the result depends on `ok` as data, and CSDB stops that data from being predicted).
/// Use it on every host-supplied address or index right after the check that allowed it.
#[inline(always)]
pub fn select_nospec(ok: bool, value: u64) -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        aarch64::select_nospec(ok, value)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        // The host build (tests) has no speculation hazard to close: same result, plainly.
        if ok { value } else { 0 }
    }
}

/// `index` when `index < len`, else 0, by [`select_nospec`]: for indexing a table with a
/// host-supplied number after checking it.
#[inline(always)]
pub fn index_nospec(index: usize, len: usize) -> usize {
    select_nospec(index < len, index as u64) as usize
}

/// Which data-cache operation to run over a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOp {
    CleanInvalidate,
    Clean,
    Invalidate,
}

/// Runs `op` over every cache line that intersects `[start, start + size)`, then `DSB SY`.
pub fn dcache_range<C: CacheMaintenance + ?Sized>(cache: &C, op: CacheOp, start: u64, size: u64) {
    if size == 0 {
        return;
    }
    let line = cache.dcache_line_size();
    let end = start.saturating_add(size);
    let mut va = start & !(line - 1);
    while va < end {
        match op {
            CacheOp::CleanInvalidate => cache.dc_civac(va),
            CacheOp::Clean => cache.dc_cvac(va),
            CacheOp::Invalidate => cache.dc_ivac(va),
        }
        va = match va.checked_add(line) {
            Some(v) => v,
            None => break,
        };
    }
    cache.dsb_sy();
}

#[cfg(test)]
mod tests {
    use super::fake::{HwOp, Recorder};
    use super::*;

    #[test]
    fn dcache_range_covers_every_line_then_dsb() {
        let rec = Recorder::new(64);
        dcache_range(&rec, CacheOp::CleanInvalidate, 0x1030, 0x80);
        assert_eq!(
            rec.take(),
            vec![HwOp::DcCivac(0x1000), HwOp::DcCivac(0x1040), HwOp::DcCivac(0x1080), HwOp::DsbSy]
        );
        dcache_range(&rec, CacheOp::Clean, 0x1000, 0);
        assert!(rec.take().is_empty());
    }

    #[test]
    fn nospec_selection() {
        assert_eq!(select_nospec(true, 0x7c00_1000), 0x7c00_1000);
        assert_eq!(select_nospec(false, 0x7c00_1000), 0);
        assert_eq!(index_nospec(3, 4), 3);
        assert_eq!(index_nospec(4, 4), 0);
        assert_eq!(index_nospec(usize::MAX, 4), 0);
    }
}
