//! Boot-time placement: where the host kernel, initrd and patched DT go, decided once from the
//! DT's memory map and the packed payload, before anything is moved.
//!
//! Rules (the arm64 boot protocol plus warden's own):
//! - warden's region (image, BSS, pool) stays where the boot loader put it, rounded out to
//!   2 MiB so the host's stage-2 keeps 2 MiB blocks elsewhere;
//! - a part the packer already put where it may run stays there (`cargo xtask pack` lays the
//!   image out so that, loaded at a 2 MiB-aligned base as every arm64 loader does, the kernel
//!   sits at a 2 MiB boundary + its `text_offset` above warden's region and the initrd after the
//!   kernel's `image_size`): nothing is copied and nothing cleaned, the loader cleaned it;
//! - otherwise the kernel goes to the first 2 MiB-aligned address (+ its `text_offset`) above
//!   warden where `effective size` bytes of free RAM exist, and the initrd after it;
//! - the patched DT follows, at a 2 MiB boundary so it never shares a 2 MiB block with memory of
//!   other attributes;
//! - nothing may land on a reserved region, on the original DT (still being read), or outside
//!   RAM; every destination is at or above its source so moving the parts from last to first
//!   ([`Layout::moves`]) with a backward copy never overwrites data not yet moved.

use super::range::{MemRange, PAGE_SIZE, SZ_2M, align_up};

/// The inputs.
#[derive(Clone, Copy, Debug)]
pub struct LayoutInput<'a> {
    pub ram: &'a [MemRange],
    /// Ranges nothing may be placed on (reserved-memory, /memreserve/).
    pub reserved: &'a [MemRange],
    /// The DT the boot loader passed (read until the patched copy exists).
    pub original_dt: MemRange,
    /// warden's memory from its load address to the end of its pool.
    pub warden: MemRange,
    /// Where the kernel bytes are now (inside the packed image).
    pub kernel_src: MemRange,
    pub kernel_text_offset: u64,
    /// Memory the kernel needs from its load address (`image_size`, or a bound).
    pub kernel_mem_size: u64,
    pub initrd_src: Option<MemRange>,
    /// Upper bound of the patched DT's size.
    pub dt_max_size: u64,
}

/// The decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// warden's region, 2 MiB aligned: absent from the host's stage-2.
    pub warden: MemRange,
    /// Kernel load address (2 MiB aligned base + text_offset) and its full memory footprint.
    pub kernel: MemRange,
    pub initrd: Option<MemRange>,
    pub dt: MemRange,
}

/// One part to copy at boot: `len` bytes from `src` to `dst`, `dst > src` (ranges may overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub what: &'static str,
    pub src: u64,
    pub dst: u64,
    pub len: u64,
}

impl Layout {
    /// The copies that put the payload where this layout wants it, in the order they must be
    /// made (the initrd, the later part, first), leaving out the parts already in place. After
    /// them the destination ranges hold the parts; only those ranges need cleaning to PoC.
    pub fn moves(&self, kernel_src: MemRange, initrd_src: Option<MemRange>) -> [Option<Move>; 2] {
        let initrd = match (initrd_src, self.initrd) {
            (Some(src), Some(dst)) if src.start != dst.start => {
                Some(Move { what: "initrd", src: src.start, dst: dst.start, len: src.size() })
            }
            _ => None,
        };
        let kernel = (kernel_src.start != self.kernel.start).then_some(Move {
            what: "kernel",
            src: kernel_src.start,
            dst: self.kernel.start,
            len: kernel_src.size(),
        });
        [initrd, kernel]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    WardenNotInRam(MemRange),
    NoRoom {
        what: &'static str,
        size: u64,
    },
    /// A destination would lie below its source (the payload would overwrite itself).
    WouldMoveDown(&'static str),
    DtTooLarge(u64),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::WardenNotInRam(r) => {
                write!(f, "warden is loaded at {r:?}, which is not inside one RAM bank of the DT")
            }
            LayoutError::NoRoom { what, size } => write!(
                f,
                "no room for the {what} ({} bytes) in RAM above warden: give the machine more memory or a smaller payload",
                size
            ),
            LayoutError::WouldMoveDown(what) => {
                write!(f, "the {what} would have to move below its packed position")
            }
            LayoutError::DtTooLarge(s) => write!(f, "patched DT bound {s} bytes exceeds 2 MiB"),
        }
    }
}

/// `want` as it is, if a part may stay there: inside one RAM bank and clear of `avoid`.
fn fits_in_place(ram: &[MemRange], avoid: &[MemRange], want: MemRange) -> Option<MemRange> {
    let in_ram = ram.iter().any(|b| b.contains_range(&want));
    (in_ram && !avoid.iter().any(|a| a.overlaps(&want))).then_some(want)
}

/// First `align`-aligned address `>= from` (plus `offset`) where `size` bytes fit in one RAM
/// bank without touching any of `avoid`.
fn first_fit(
    ram: &[MemRange],
    avoid: &[MemRange],
    from: u64,
    align: u64,
    offset: u64,
    size: u64,
) -> Option<MemRange> {
    let mut candidate = align_up(from, align)?;
    // Each iteration either returns or moves `candidate` strictly upward past an obstacle, and
    // there are finitely many obstacles and banks, so this terminates.
    loop {
        let want = MemRange::from_base_size(candidate.checked_add(offset)?, size)?;
        let Some(bank) = ram.iter().find(|b| b.contains(want.start)) else {
            // Skip to the next bank above, if any.
            let next = ram.iter().filter(|b| b.start > want.start).map(|b| b.start).min()?;
            candidate = align_up(next, align)?;
            continue;
        };
        if want.end > bank.end {
            let next = ram.iter().filter(|b| b.start >= bank.end).map(|b| b.start).min()?;
            candidate = align_up(next, align)?;
            continue;
        }
        match avoid.iter().filter(|a| a.overlaps(&want)).map(|a| a.end).max() {
            Some(end) => candidate = align_up(end, align)?,
            None => return Some(want),
        }
    }
}

pub fn plan(input: &LayoutInput<'_>) -> Result<Layout, LayoutError> {
    let warden_start = input.warden.start & !(SZ_2M - 1);
    let warden_end =
        align_up(input.warden.end, SZ_2M).ok_or(LayoutError::WardenNotInRam(input.warden))?;
    let warden = MemRange::new(warden_start, warden_end);
    if !input.ram.iter().any(|b| b.contains_range(&input.warden)) {
        return Err(LayoutError::WardenNotInRam(input.warden));
    }
    if input.dt_max_size > SZ_2M {
        return Err(LayoutError::DtTooLarge(input.dt_max_size));
    }
    let mut avoid: [MemRange; 64] = [MemRange::default(); 64];
    let mut n = 0;
    for r in input.reserved.iter().chain([&warden, &input.original_dt]) {
        if n < avoid.len() {
            avoid[n] = *r;
            n += 1;
        }
    }
    let kernel_size = input.kernel_mem_size.max(input.kernel_src.size());
    // In place: where the packer put it, if that is a 2 MiB boundary + text_offset above warden.
    let kernel_in_place = input
        .kernel_src
        .start
        .checked_sub(input.kernel_text_offset)
        .filter(|base| base.is_multiple_of(SZ_2M) && *base >= warden_end)
        .and_then(|_| MemRange::from_base_size(input.kernel_src.start, kernel_size))
        .and_then(|want| fits_in_place(input.ram, &avoid[..n], want));
    let kernel = match kernel_in_place {
        Some(k) => k,
        None => first_fit(
            input.ram,
            &avoid[..n],
            warden_end,
            SZ_2M,
            input.kernel_text_offset,
            kernel_size,
        )
        .ok_or(LayoutError::NoRoom { what: "kernel", size: kernel_size })?,
    };
    if kernel.start < input.kernel_src.start {
        return Err(LayoutError::WouldMoveDown("kernel"));
    }
    if n < avoid.len() {
        avoid[n] = kernel;
        n += 1;
    }
    let mut cursor = kernel.end;
    let initrd = match input.initrd_src {
        Some(src) => {
            // In place: page aligned, past the kernel's footprint (the packer leaves room for
            // its BSS), clear of everything else.
            let in_place = (src.start.is_multiple_of(PAGE_SIZE) && src.start >= kernel.end)
                .then(|| fits_in_place(input.ram, &avoid[..n], src))
                .flatten();
            let dst = match in_place {
                Some(d) => d,
                None => first_fit(input.ram, &avoid[..n], cursor, PAGE_SIZE, 0, src.size())
                    .ok_or(LayoutError::NoRoom { what: "initrd", size: src.size() })?,
            };
            if dst.start < src.start {
                return Err(LayoutError::WouldMoveDown("initrd"));
            }
            if n < avoid.len() {
                avoid[n] = dst;
                n += 1;
            }
            cursor = dst.end;
            Some(dst)
        }
        None => None,
    };
    let dt = first_fit(input.ram, &avoid[..n], cursor, SZ_2M, 0, input.dt_max_size)
        .ok_or(LayoutError::NoRoom { what: "device tree", size: input.dt_max_size })?;
    Ok(Layout { warden, kernel, initrd, dt })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn qemu_input<'a>(ram: &'a [MemRange], reserved: &'a [MemRange]) -> LayoutInput<'a> {
        // warden at 0x4020_0000 with a 9 MiB footprint, kernel packed at +1 MiB.
        LayoutInput {
            ram,
            reserved,
            original_dt: MemRange::new(0x4800_0000, 0x4810_0000),
            warden: MemRange::new(0x4020_0000, 0x4020_0000 + 9 * MIB),
            kernel_src: MemRange::new(0x4030_0000, 0x4030_0000 + 30 * MIB),
            kernel_text_offset: 0,
            kernel_mem_size: 40 * MIB,
            initrd_src: Some(MemRange::new(0x4030_0000 + 30 * MIB, 0x4030_0000 + 32 * MIB)),
            dt_max_size: 64 * 1024,
        }
    }

    #[test]
    fn qemu_virt_placement() {
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        let l = plan(&qemu_input(&ram, &[])).unwrap();
        assert_eq!(l.warden, MemRange::new(0x4020_0000, 0x40c0_0000));
        assert_eq!(l.kernel, MemRange::new(0x40c0_0000, 0x40c0_0000 + 40 * MIB));
        assert_eq!(l.initrd, Some(MemRange::new(0x40c0_0000 + 40 * MIB, 0x40c0_0000 + 42 * MIB)));
        assert_eq!(l.dt.start % SZ_2M, 0);
        assert!(l.dt.start >= l.initrd.unwrap().end);
    }

    #[test]
    fn skips_reserved_memory_and_the_original_dt() {
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        let reserved = [MemRange::new(0x40d0_0000, 0x40e0_0000)];
        let mut input = qemu_input(&ram, &reserved);
        input.original_dt = MemRange::new(0x4400_0000, 0x4410_0000);
        let l = plan(&input).unwrap();
        assert_eq!(l.kernel.start, 0x40e0_0000);
        // The initrd would cross the original DT at 0x4400_0000: pushed past it.
        assert!(!l.initrd.unwrap().overlaps(&input.original_dt));
        assert!(!l.kernel.overlaps(&reserved[0]));
    }

    #[test]
    fn errors_are_specific() {
        let ram = [MemRange::new(0x4000_0000, 0x4350_0000)];
        assert_eq!(
            plan(&qemu_input(&ram, &[])),
            Err(LayoutError::NoRoom { what: "initrd", size: 2 * MIB })
        );
        let small = [MemRange::new(0x4000_0000, 0x4100_0000)];
        assert!(matches!(
            plan(&qemu_input(&small, &[])),
            Err(LayoutError::NoRoom { what: "kernel", .. })
        ));
        let elsewhere = [MemRange::new(0x8000_0000, 0xc000_0000)];
        assert!(matches!(plan(&qemu_input(&elsewhere, &[])), Err(LayoutError::WardenNotInRam(_))));
    }

    /// What `cargo xtask pack` lays out for QEMU `-kernel` (loaded at 0x4020_0000): warden's
    /// 9 MiB region rounded to 10 MiB, the kernel at the next 2 MiB boundary, the initrd after
    /// the kernel's 40 MiB `image_size`.
    fn packed_in_place<'a>(ram: &'a [MemRange], reserved: &'a [MemRange]) -> LayoutInput<'a> {
        let kernel = 0x40c0_0000;
        let initrd = kernel + 40 * MIB;
        LayoutInput {
            kernel_src: MemRange::new(kernel, kernel + 30 * MIB),
            initrd_src: Some(MemRange::new(initrd, initrd + 2 * MIB + 0x123)),
            ..qemu_input(ram, reserved)
        }
    }

    #[test]
    fn a_payload_already_in_place_is_not_moved() {
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        let input = packed_in_place(&ram, &[]);
        let l = plan(&input).unwrap();
        assert_eq!(l.kernel, MemRange::new(0x40c0_0000, 0x40c0_0000 + 40 * MIB));
        assert_eq!(l.initrd, input.initrd_src);
        assert_eq!(l.moves(input.kernel_src, input.initrd_src), [None, None]);
        assert!(l.dt.start >= l.initrd.unwrap().end && l.dt.start.is_multiple_of(SZ_2M));
        // Also in place above the first fit (a loader that left a gap): not moved down.
        let mut high = input;
        high.kernel_src = MemRange::new(0x4200_0000 + 0x8_0000, 0x4200_0000 + 0x8_0000 + 30 * MIB);
        high.kernel_text_offset = 0x8_0000;
        high.initrd_src = None;
        let l = plan(&high).unwrap();
        assert_eq!(l.kernel.start, high.kernel_src.start);
        assert_eq!(l.moves(high.kernel_src, None), [None, None]);
    }

    #[test]
    fn a_payload_out_of_place_is_moved_up_initrd_first() {
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        // The compact layout (RB3 Gen 2's next stage, or an old packer): inside warden's region.
        let input = qemu_input(&ram, &[]);
        let l = plan(&input).unwrap();
        let [initrd, kernel] = l.moves(input.kernel_src, input.initrd_src);
        let initrd = initrd.unwrap();
        let kernel = kernel.unwrap();
        assert_eq!(
            (initrd.src, initrd.dst, initrd.len),
            (0x4030_0000 + 30 * MIB, l.initrd.unwrap().start, 2 * MIB)
        );
        assert_eq!((kernel.src, kernel.dst, kernel.len), (0x4030_0000, 0x40c0_0000, 30 * MIB));
        // Backward copies are safe: every destination is above its source, and the kernel's
        // destination does not reach the initrd's, which is written first.
        assert!(initrd.dst > initrd.src && kernel.dst > kernel.src);
        assert!(kernel.dst + 40 * MIB <= initrd.dst);

        // Not at a 2 MiB boundary + text_offset: never run from there; the first allowed place
        // lies below it, and moving down is refused (a backward copy would corrupt it).
        let mut odd = packed_in_place(&ram, &[]);
        odd.kernel_src = MemRange::new(0x40c0_1000, 0x40c0_1000 + 30 * MIB);
        assert_eq!(plan(&odd), Err(LayoutError::WouldMoveDown("kernel")));
        // The initrd packed inside the kernel's BSS: moved past the kernel's footprint.
        let mut in_bss = packed_in_place(&ram, &[]);
        in_bss.initrd_src = Some(MemRange::new(0x40c0_0000 + 30 * MIB, 0x40c0_0000 + 31 * MIB));
        let l = plan(&in_bss).unwrap();
        assert_eq!(l.kernel.start, 0x40c0_0000);
        let [initrd, kernel] = l.moves(in_bss.kernel_src, in_bss.initrd_src);
        assert_eq!(kernel, None);
        assert_eq!(initrd.unwrap().dst, 0x40c0_0000 + 40 * MIB);
    }

    #[test]
    fn in_place_refused_over_reserved_memory_the_dt_or_warden() {
        let ram = [MemRange::new(0x4000_0000, 0x8000_0000)];
        // A reserved region inside the kernel's BSS: the kernel moves above it.
        let reserved = [MemRange::new(0x40c0_0000 + 35 * MIB, 0x40c0_0000 + 36 * MIB)];
        let input = packed_in_place(&ram, &reserved);
        let l = plan(&input).unwrap();
        assert!(l.kernel.start > input.kernel_src.start && !l.kernel.overlaps(&reserved[0]));
        // The loader's DT inside the initrd: the initrd moves, the kernel stays.
        let mut input = packed_in_place(&ram, &[]);
        input.original_dt = MemRange::new(0x40c0_0000 + 41 * MIB, 0x40c0_0000 + 41 * MIB + 0x1000);
        let l = plan(&input).unwrap();
        assert_eq!(l.kernel.start, input.kernel_src.start);
        assert!(!l.initrd.unwrap().overlaps(&input.original_dt));
        assert!(l.initrd.unwrap().start > input.initrd_src.unwrap().start);
        // A kernel "in place" inside warden's (2 MiB-rounded) region is not in place.
        let mut input = packed_in_place(&ram, &[]);
        input.kernel_src = MemRange::new(0x40a0_0000, 0x40a0_0000 + 30 * MIB);
        input.initrd_src = None;
        let l = plan(&input).unwrap();
        assert_eq!(l.kernel.start, 0x40c0_0000);
        // Past the end of RAM (a hostile descriptor): not in place, and nowhere to move up to.
        let mut input = packed_in_place(&ram, &[]);
        input.kernel_src = MemRange::new(0x7fe0_0000, 0x7fe0_0000 + 30 * MIB);
        input.initrd_src = None;
        assert_eq!(plan(&input), Err(LayoutError::WouldMoveDown("kernel")));
        // Hostile header fields: errors, no overflow.
        let mut input = packed_in_place(&ram, &[]);
        input.kernel_text_offset = u64::MAX;
        assert!(plan(&input).is_err());
        let mut input = packed_in_place(&ram, &[]);
        input.kernel_mem_size = u64::MAX;
        assert!(matches!(plan(&input), Err(LayoutError::NoRoom { what: "kernel", .. })));
    }

    #[test]
    fn spans_banks() {
        let ram =
            [MemRange::new(0x4000_0000, 0x4200_0000), MemRange::new(0x8000_0000, 0x9000_0000)];
        let mut input = qemu_input(&ram, &[]);
        input.original_dt = MemRange::new(0x4100_0000, 0x4101_0000);
        let l = plan(&input).unwrap();
        assert_eq!(l.kernel.start, 0x8000_0000);
    }
}
