//! Where the emulated GIC frames are: each ITS's control frame and each redistributor's
//! RD_base (and, on a GICv4, VLPI_base plus the reserved frame after it). The redistributors
//! are found at boot the way Linux finds them (`gic_iterate_rdists`): from the start of each
//! redistributor region, GICR_PIDR2 must say GICv3 or GICv4, GICR_TYPER gives the next frame
//! (128 KiB on, 256 KiB with VLPIS, or the DT's `redistributor-stride`) and ends the region
//! with Last. No frame past Last is ever read (an absent frame would abort the read).

use alloc::vec::Vec;

use super::regs::*;
use crate::mm::MemRange;

/// One redistributor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedistFrame {
    /// Physical address of its RD_base frame (SGI_base follows it).
    pub rd_base: u64,
    /// Its real GICR_TYPER.
    pub typer: u64,
}

impl RedistFrame {
    /// GICv4: VLPI_base and a reserved frame follow SGI_base.
    pub fn has_vlpi(&self) -> bool {
        GICR_TYPER_F::VLPIS.is_set(self.typer)
    }

    pub fn processor(&self) -> u16 {
        GICR_TYPER_F::PROCESSOR_NUMBER.read(self.typer) as u16
    }

    /// MPIDR affinity (Aff3.Aff2.Aff1.Aff0 packed as in GICR_TYPER).
    pub fn affinity(&self) -> u32 {
        GICR_TYPER_F::AFFINITY.read(self.typer) as u32
    }
}

/// A trapped frame, by index into [`GicLayout`]'s lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicFrame {
    /// An ITS's control frame.
    ItsControl(usize),
    /// A redistributor's RD_base frame.
    RdBase(usize),
    /// A GICv4 redistributor's VLPI_base frame or the reserved frame after it.
    Vlpi(usize),
}

/// Every frame warden emulates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GicLayout {
    /// Base of each ITS's control frame (GITS_TRANSLATER's frame follows, not trapped).
    pub its: Vec<u64>,
    pub redists: Vec<RedistFrame>,
}

impl GicLayout {
    /// The frame `ipa` falls in, and the offset in it.
    pub fn lookup(&self, ipa: u64) -> Option<(GicFrame, u32)> {
        let within = |base: u64, size: u64| {
            ipa.checked_sub(base).filter(|&off| off < size).map(|off| off as u32)
        };
        for (i, &base) in self.its.iter().enumerate() {
            if let Some(off) = within(base, FRAME_SIZE) {
                return Some((GicFrame::ItsControl(i), off));
            }
        }
        for (i, r) in self.redists.iter().enumerate() {
            if let Some(off) = within(r.rd_base, FRAME_SIZE) {
                return Some((GicFrame::RdBase(i), off));
            }
            if r.has_vlpi()
                && let Some(off) = within(r.rd_base + 2 * FRAME_SIZE, 2 * FRAME_SIZE)
            {
                return Some((GicFrame::Vlpi(i), off));
            }
        }
        None
    }

    /// What the host's stage 2 must leave unmapped.
    pub fn holes(&self) -> Vec<MemRange> {
        let mut out: Vec<MemRange> =
            self.its.iter().map(|&b| MemRange::new(b, b + FRAME_SIZE)).collect();
        for r in &self.redists {
            out.push(MemRange::new(r.rd_base, r.rd_base + FRAME_SIZE));
            if r.has_vlpi() {
                out.push(MemRange::new(r.rd_base + 2 * FRAME_SIZE, r.rd_base + 4 * FRAME_SIZE));
            }
        }
        out
    }

    /// Whether any redistributor is a GICv4 one (its frames are 256 KiB apart, which the host,
    /// shown no VLPIS, must learn from the DT's `redistributor-stride`).
    pub fn any_vlpi(&self) -> bool {
        self.redists.iter().any(RedistFrame::has_vlpi)
    }
}

/// Why the redistributor walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// GICR_PIDR2 at the start of a region says neither GICv3 nor GICv4.
    NotARedistributor { at: u64, pidr2: u32 },
    /// The next frame would leave the region before a redistributor said Last.
    RegionOverrun { region: MemRange },
    /// More redistributors than `max`.
    TooMany { max: usize },
}

impl core::fmt::Display for WalkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WalkError::NotARedistributor { at, pidr2 } => {
                write!(f, "no GICv3/v4 redistributor at {at:#x} (GICR_PIDR2 {pidr2:#x})")
            }
            WalkError::RegionOverrun { region } => write!(
                f,
                "redistributor region {region} ends before a redistributor with GICR_TYPER.Last"
            ),
            WalkError::TooMany { max } => write!(f, "more than {max} redistributors"),
        }
    }
}

/// Walks the redistributor `regions`; `read32`/`read64` read a physical address (of a frame in
/// a region). `stride`: the DT's `redistributor-stride`, if any.
pub fn walk_redistributors(
    regions: &[MemRange],
    stride: Option<u64>,
    max: usize,
    read32: impl Fn(u64) -> u32,
    read64: impl Fn(u64) -> u64,
) -> Result<Vec<RedistFrame>, WalkError> {
    let mut out = Vec::new();
    for &region in regions {
        let mut at = region.start;
        loop {
            if at.checked_add(2 * FRAME_SIZE).is_none_or(|end| end > region.end) {
                return Err(WalkError::RegionOverrun { region });
            }
            let pidr2 = read32(at + u64::from(GICR_PIDR2));
            let arch = GICR_PIDR2_F::ARCH_REV.read(pidr2);
            if arch != 3 && arch != 4 {
                return Err(WalkError::NotARedistributor { at, pidr2 });
            }
            let typer = read64(at + u64::from(GICR_TYPER));
            let frame = RedistFrame { rd_base: at, typer };
            if out.len() >= max {
                return Err(WalkError::TooMany { max });
            }
            out.push(frame);
            if GICR_TYPER_F::LAST.is_set(typer) {
                break;
            }
            let step = stride.filter(|&s| s >= 2 * FRAME_SIZE).unwrap_or(if frame.has_vlpi() {
                4 * FRAME_SIZE
            } else {
                2 * FRAME_SIZE
            });
            let Some(next) = at.checked_add(step) else {
                return Err(WalkError::RegionOverrun { region });
            };
            at = next;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// QEMU virt, gic-version=3, 3 CPUs: region 0x80a0000 + 0xf60000, 128 KiB apart.
    fn qemu_frames(n: u64, vlpi: bool) -> BTreeMap<u64, (u32, u64)> {
        let stride = if vlpi { 0x40000 } else { 0x20000 };
        (0..n)
            .map(|i| {
                let mut typer = GICR_TYPER_F::PLPIS::SET.value
                    | GICR_TYPER_F::PROCESSOR_NUMBER.val(i).value
                    | GICR_TYPER_F::AFFINITY.val(i).value;
                if vlpi {
                    typer |= GICR_TYPER_F::VLPIS::SET.value;
                }
                if i == n - 1 {
                    typer |= GICR_TYPER_F::LAST::SET.value;
                }
                (0x080a_0000 + i * stride, (if vlpi { 0x4b } else { 0x3b }, typer))
            })
            .collect()
    }

    fn walk(
        frames: &BTreeMap<u64, (u32, u64)>,
        regions: &[MemRange],
        stride: Option<u64>,
    ) -> Result<Vec<RedistFrame>, WalkError> {
        walk_redistributors(
            regions,
            stride,
            8,
            |pa| {
                let base = pa - u64::from(GICR_PIDR2);
                frames.get(&base).map_or_else(|| panic!("read of absent frame {base:#x}"), |f| f.0)
            },
            |pa| {
                let base = pa - u64::from(GICR_TYPER);
                frames.get(&base).map_or_else(|| panic!("read of absent frame {base:#x}"), |f| f.1)
            },
        )
    }

    #[test]
    fn qemu_virt_walk_stops_at_last() {
        let frames = qemu_frames(3, false);
        let region = [MemRange::new(0x080a_0000, 0x0900_0000)];
        let found = walk(&frames, &region, None).unwrap();
        assert_eq!(
            found.iter().map(|r| r.rd_base).collect::<Vec<_>>(),
            [0x080a_0000, 0x080c_0000, 0x080e_0000]
        );
        assert_eq!(found[2].processor(), 2);
        let layout = GicLayout { its: alloc::vec![0x0808_0000], redists: found };
        assert_eq!(layout.lookup(0x0808_0088), Some((GicFrame::ItsControl(0), 0x88)));
        assert_eq!(layout.lookup(0x0809_0040), None, "GITS_TRANSLATER's frame is the host's");
        assert_eq!(layout.lookup(0x080c_0070), Some((GicFrame::RdBase(1), 0x70)));
        assert_eq!(layout.lookup(0x080d_0100), None, "SGI_base is the host's");
        assert_eq!(layout.holes().len(), 4);
        assert!(!layout.any_vlpi());
    }

    #[test]
    fn gicv4_frames_and_stride() {
        let frames = qemu_frames(2, true);
        let region = [MemRange::new(0x080a_0000, 0x0900_0000)];
        let found = walk(&frames, &region, None).unwrap();
        assert_eq!(found[1].rd_base, 0x080e_0000);
        let layout = GicLayout { its: alloc::vec![], redists: found };
        assert_eq!(layout.lookup(0x080c_0078), Some((GicFrame::Vlpi(0), 0x78)));
        assert_eq!(layout.lookup(0x080d_0004), Some((GicFrame::Vlpi(0), 0x1_0004)));
        assert_eq!(layout.lookup(0x080b_0000), None);
        assert!(layout.holes().contains(&MemRange::new(0x080c_0000, 0x080e_0000)));
        assert!(layout.any_vlpi());
        // The DT's stride wins.
        let frames: BTreeMap<u64, (u32, u64)> = qemu_frames(2, false)
            .into_iter()
            .map(|(k, v)| (0x080a_0000 + (k - 0x080a_0000) * 4, v))
            .collect();
        let found = walk(&frames, &region, Some(0x80000)).unwrap();
        assert_eq!(found[1].rd_base, 0x0812_0000);
    }

    #[test]
    fn broken_regions_are_errors() {
        let frames = qemu_frames(3, false);
        // The region ends before Last.
        let short = [MemRange::new(0x080a_0000, 0x080e_0000)];
        assert!(matches!(walk(&frames, &short, None), Err(WalkError::RegionOverrun { .. })));
        // Not a redistributor.
        let mut odd = frames.clone();
        odd.insert(0x080a_0000, (0x1b, 0));
        assert!(matches!(
            walk(&odd, &[MemRange::new(0x080a_0000, 0x0900_0000)], None),
            Err(WalkError::NotARedistributor { .. })
        ));
        // More than the maximum.
        let many = qemu_frames(9, false);
        assert_eq!(
            walk(&many, &[MemRange::new(0x080a_0000, 0x0900_0000)], None),
            Err(WalkError::TooMany { max: 8 })
        );
    }
}
