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
///
/// Four lines per loop step (the operation chosen once, outside the loop): under `-icount`
/// a handoff's clean is most of its cost, and the per-line loop overhead of a plain loop
/// (compare, branch, the overflow check) was as much as the `DC` itself.
pub fn dcache_range<C: CacheMaintenance + ?Sized>(cache: &C, op: CacheOp, start: u64, size: u64) {
    if size == 0 {
        return;
    }
    match op {
        CacheOp::CleanInvalidate => each_line(cache, start, size, |va| cache.dc_civac(va)),
        CacheOp::Clean => each_line(cache, start, size, |va| cache.dc_cvac(va)),
        CacheOp::Invalidate => each_line(cache, start, size, |va| cache.dc_ivac(va)),
    }
    cache.dsb_sy();
}

/// Calls `f` with the address of every line intersecting `[start, start + size)` (`size` > 0),
/// in increasing order, four per step while four more fit below the end.
#[inline(always)]
fn each_line<C: CacheMaintenance + ?Sized>(
    cache: &C,
    start: u64,
    size: u64,
    mut f: impl FnMut(u64),
) {
    let line = cache.dcache_line_size();
    let end = start.saturating_add(size);
    let mut va = start & !(line - 1);
    // `va + 4 * line < end` here, so it never wraps.
    while end - va > 4 * line {
        f(va);
        f(va + line);
        f(va + 2 * line);
        f(va + 3 * line);
        va += 4 * line;
    }
    while va < end {
        f(va);
        va = match va.checked_add(line) {
            Some(v) => v,
            None => break,
        };
    }
}

/// Zeroes `[pa, pa + bytes)`, `pa` and `bytes` page aligned, reached at its physical address,
/// with `DC ZVA` where the CPU allows it (a 64-byte block per instruction: a page-table frame
/// in 64 instructions instead of about 2 000 of `memset`'s stores).
///
/// # Safety
/// The range is memory the caller owns, mapped Normal (any cacheability) and writable at its
/// physical address: `DC ZVA` faults on Device memory, so never before warden's MMU is on.
pub unsafe fn zero_normal_pages(pa: u64, bytes: u64) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    if let Some(block) = aarch64::sysreg::dc_zva_block_size() {
        let mut va = pa;
        while va < pa + bytes {
            // SAFETY: `va` is block aligned (pages are, and blocks are at most 2 KiB) inside
            // the caller's range, which is owned, Normal and writable (the caller's contract).
            unsafe { aarch64::sysreg::dc_zva(va) };
            va += block;
        }
        return;
    }
    // SAFETY: the caller's contract: owned, writable memory at `pa`.
    unsafe { core::ptr::write_bytes(pa as usize as *mut u8, 0, bytes as usize) }
}

#[cfg(test)]
mod tests {
    use super::fake::{HwOp, Recorder};
    use super::*;

    #[test]
    fn dcache_range_visits_every_line_once_at_any_size_and_offset() {
        let rec = Recorder::new(64);
        for start in [0x1000u64, 0x1010, 0x103f, 0x1040] {
            for size in 1..=12 * 64 {
                dcache_range(&rec, CacheOp::Clean, start, size);
                let first = start & !63;
                let mut want: Vec<HwOp> =
                    (first..start + size).step_by(64).map(HwOp::DcCvac).collect();
                want.push(HwOp::DsbSy);
                assert_eq!(rec.take(), want, "start {start:#x} size {size}");
            }
        }
        // The top of the address space: no wrap, the last line once.
        dcache_range(&rec, CacheOp::Invalidate, u64::MAX - 200, 500);
        let ops = rec.take();
        assert_eq!(ops.first(), Some(&HwOp::DcIvac((u64::MAX - 200) & !63)));
        assert_eq!(ops[ops.len() - 2], HwOp::DcIvac(!63));
        assert_eq!(ops.len(), 5);
    }

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
