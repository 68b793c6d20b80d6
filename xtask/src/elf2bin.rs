//! ELF → flat binary conversion for the firmware images.
//!
//! Two layouts ([`Load`]). warden and the test guest are linked position-independent at address
//! 0 and loaded by QEMU (or a bootloader) as raw arm64 `Image` files, so the flat binary is the
//! PT_LOAD segments laid out by virtual address from 0. The only fix-ups their entry code
//! applies are `R_AARCH64_RELATIVE` entries of `.rela.dyn`, so any other dynamic relocation
//! would leave a wrong pointer in the running image: such an ELF is rejected here, at build
//! time. The simulated peer program is linked at the one address it runs at, with its
//! relocations applied by the linker (`--apply-dynamic-relocs`) because nothing relocates it at
//! run time: there, every `R_AARCH64_RELATIVE` must already hold its final value.

use anyhow::{Context, Result, bail, ensure};
use object::LittleEndian;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader};

/// Largest flat image we are willing to produce (a sanity bound against a mislinked ELF whose
/// segments sit gigabytes apart).
const MAX_FLAT_SIZE: u64 = 256 << 20;

/// How the flat image is loaded and entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// An arm64 `Image` linked at 0: placed anywhere, relocates itself (warden, test guest).
    SelfRelocatingImage,
    /// Linked at `base` and copied there as is, entered at its first byte: every dynamic
    /// relocation must already be applied for `base` (the simulated peer).
    Fixed { base: u64 },
}

/// A flat image and the memory it occupies once loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flat {
    /// File contents: byte `i` goes to load address + `i`. Trailing BSS is not stored.
    pub bytes: Vec<u8>,
    /// Bytes from the load address to the end of the last segment (BSS and any stack section
    /// included): what must be free at the load address.
    pub mem_size: u64,
}

/// Converts a little-endian AArch64 ELF linked at 0 into the flat binary a loader expects.
///
/// Fails when the ELF is not AArch64, when its first PT_LOAD segment is not at virtual address
/// 0, when segments overlap, when it has a dynamic relocation other than `R_AARCH64_RELATIVE`
/// (naming it), or when the result does not begin with an arm64 Image header.
pub fn elf_to_flat_binary(elf_bytes: &[u8]) -> Result<Vec<u8>> {
    elf_to_flat(elf_bytes, Load::SelfRelocatingImage).map(|flat| flat.bytes)
}

/// Converts a little-endian AArch64 ELF into a flat image for `load`.
///
/// Besides the checks of [`elf_to_flat_binary`] (the arm64 Image header only for
/// [`Load::SelfRelocatingImage`]): with [`Load::Fixed`] the first segment must start at `base`,
/// the entry point must be `base`, and every `R_AARCH64_RELATIVE` must already hold its addend
/// (applied at link time).
pub fn elf_to_flat(elf_bytes: &[u8], load: Load) -> Result<Flat> {
    let file = ElfFile64::<LittleEndian>::parse(elf_bytes)
        .context("not a 64-bit little-endian ELF file")?;
    let endian = file.endian();
    let header = file.elf_header();
    ensure!(
        header.e_machine(endian) == elf::EM_AARCH64,
        "ELF machine is {:?}, expected AArch64",
        header.e_machine(endian)
    );
    let base = match load {
        Load::SelfRelocatingImage => 0,
        Load::Fixed { base } => base,
    };

    let mut loads: Vec<(u64, u64, &[u8])> = Vec::new();
    for phdr in file.elf_program_headers() {
        if phdr.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let vaddr = phdr.p_vaddr(endian);
        let filesz = phdr.p_filesz(endian);
        let memsz = phdr.p_memsz(endian);
        ensure!(
            filesz <= memsz,
            "PT_LOAD at {vaddr:#x}: file size {filesz:#x} exceeds memory size {memsz:#x}"
        );
        let data = phdr
            .data(endian, elf_bytes)
            .map_err(|_| anyhow::anyhow!("PT_LOAD at {vaddr:#x} lies outside the file"))?;
        loads.push((vaddr, memsz, data));
    }
    ensure!(!loads.is_empty(), "ELF has no PT_LOAD segment");
    loads.sort_by_key(|&(vaddr, _, _)| vaddr);
    let first_vaddr = loads[0].0;
    ensure!(
        first_vaddr == base,
        "ELF is linked at {first_vaddr:#x}, not {base:#x} (the linker script must place the \
         image at {base:#x})"
    );
    if let Load::Fixed { .. } = load {
        let entry = header.e_entry(endian);
        ensure!(entry == base, "entry point {entry:#x} is not the first byte {base:#x}");
    }
    for pair in loads.windows(2) {
        let (prev_vaddr, prev_memsz, _) = pair[0];
        let (next_vaddr, _, _) = pair[1];
        let prev_end = prev_vaddr
            .checked_add(prev_memsz)
            .context("PT_LOAD segment wraps the address space")?;
        ensure!(
            prev_end <= next_vaddr,
            "PT_LOAD segments overlap: [{prev_vaddr:#x}, {prev_end:#x}) and one at {next_vaddr:#x}"
        );
    }

    let mem_end =
        loads.iter().map(|&(vaddr, memsz, _)| vaddr.saturating_add(memsz)).max().unwrap_or(0);
    let relatives = check_dynamic_relocations(&file, base, mem_end)?;

    // The flat file ends with the last byte that has file contents; trailing BSS is zeroed by
    // the entry code and need not be stored.
    let file_end = loads
        .iter()
        .filter(|(_, _, data)| !data.is_empty())
        .map(|&(vaddr, _, data)| vaddr.saturating_add(data.len() as u64) - base)
        .max()
        .unwrap_or(0);
    ensure!(file_end <= MAX_FLAT_SIZE, "flat image would be {file_end:#x} bytes: too large");
    let mut flat = vec![0u8; file_end as usize];
    // BSS-only segments (no file bytes) may start past the end of the file contents.
    for (vaddr, _, data) in loads.iter().filter(|(_, _, data)| !data.is_empty()) {
        let start = (*vaddr - base) as usize;
        flat[start..start + data.len()].copy_from_slice(data);
    }

    match load {
        Load::SelfRelocatingImage => {
            warden::payload::Arm64ImageHeader::parse(&flat).map_err(|e| {
                anyhow::anyhow!(
                    "flat image does not start with an arm64 Image header ({e}); \
                     the entry code must begin with the 64-byte header (magic ARM\\x64 at \
                     offset 56)"
                )
            })?;
        }
        Load::Fixed { .. } => {
            for (offset, addend) in relatives {
                let at = (offset - base) as usize;
                let stored = flat
                    .get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                ensure!(
                    stored == addend,
                    "R_AARCH64_RELATIVE at {offset:#x} is not applied (holds {stored:#x}, \
                     should be {addend:#x}): link with --apply-dynamic-relocs"
                );
            }
        }
    }
    Ok(Flat { bytes: flat, mem_size: mem_end - base })
}

/// Name of an AArch64 relocation type for error messages.
fn relocation_name(r_type: elf::RelocationType) -> String {
    elf::NAMES_R_AARCH64
        .name(r_type)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("relocation type {}", r_type.0))
}

/// Fails unless every dynamic relocation is `R_AARCH64_RELATIVE` without a symbol, applied
/// inside the loaded image `[base, mem_end)`. Returns each one's `(r_offset, r_addend)`.
fn check_dynamic_relocations(
    file: &ElfFile64<'_, LittleEndian>,
    base: u64,
    mem_end: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut relatives = Vec::new();
    let endian = file.endian();
    let data = file.data();
    for section in file.elf_section_table().iter() {
        // Only allocated sections are seen by the loader; non-allocated `.rela.*` sections
        // (from --emit-relocs) are link-time information.
        if section.sh_flags(endian).0 & elf::SHF_ALLOC.0 == 0 {
            continue;
        }
        let sh_type = section.sh_type(endian);
        let name = file
            .elf_section_table()
            .section_name(endian, section)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| "<unnamed>".into());
        if sh_type == elf::SHT_REL || sh_type == elf::SHT_RELR {
            bail!(
                "section {name} holds {} relocations; warden's entry code applies only RELA \
                 R_AARCH64_RELATIVE (link with -z nopack-relative-relocs)",
                if sh_type == elf::SHT_REL { "REL" } else { "RELR" }
            );
        }
        if sh_type != elf::SHT_RELA {
            continue;
        }
        let relas: &[elf::Rela64<LittleEndian>] =
            section.data_as_array(endian, data).context("unreadable relocation section")?;
        for rela in relas {
            let r_type = rela.r_type(endian, false);
            let offset = rela.r_offset(endian);
            if r_type != elf::R_AARCH64_RELATIVE {
                bail!(
                    "unsupported dynamic relocation {} at {offset:#x} in {name}: warden's entry \
                     code applies only R_AARCH64_RELATIVE",
                    relocation_name(r_type)
                );
            }
            ensure!(
                rela.r_sym(endian, false) == 0,
                "R_AARCH64_RELATIVE at {offset:#x} refers to a symbol"
            );
            ensure!(
                offset >= base && offset.checked_add(8).is_some_and(|end| end <= mem_end),
                "R_AARCH64_RELATIVE at {offset:#x} lies outside the image (ends at {mem_end:#x})"
            );
            relatives.push((offset, rela.r_addend(endian) as u64));
        }
    }
    Ok(relatives)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use object::Endianness;
    use object::write::elf::{FileHeader as WFileHeader, ProgramHeader as WProgramHeader};
    use object::write::elf::{Rel, SectionHeader as WSectionHeader, Writer};

    /// Contents of a minimal arm64 Image: a header with magic and the given image_size.
    pub(crate) fn image_bytes(len: usize, image_size: u64) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        v[8..16].copy_from_slice(&0u64.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[24..32].copy_from_slice(&0xau64.to_le_bytes());
        v[56..60].copy_from_slice(b"ARM\x64");
        v
    }

    pub(crate) struct Segment {
        pub vaddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
    }

    /// Writes an AArch64 ELF with the given PT_LOAD segments and an allocated `.rela.dyn`.
    pub(crate) fn build_elf(segments: &[Segment], relocs: &[(u64, u32, u32)]) -> Vec<u8> {
        build_elf_entry(segments, relocs, 0)
    }

    /// [`build_elf`] with entry point `e_entry`. Every relocation's addend is [`ADDEND`].
    fn build_elf_entry(segments: &[Segment], relocs: &[(u64, u32, u32)], e_entry: u64) -> Vec<u8> {
        build_elf_typed(segments, relocs, e_entry, elf::ET_DYN)
    }

    /// A fixed-address executable (`ET_EXEC`) with the given segments and entry point, and an
    /// empty `.rela.dyn`.
    pub(crate) fn build_executable(segments: &[Segment], e_entry: u64) -> Vec<u8> {
        build_elf_typed(segments, &[], e_entry, elf::ET_EXEC)
    }

    fn build_elf_typed(
        segments: &[Segment],
        relocs: &[(u64, u32, u32)],
        e_entry: u64,
        e_type: elf::FileType,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<u64> =
            segments.iter().map(|s| w.reserve(s.data.len() as u64, 16)).collect();
        w.reserve_null_section_index();
        let rela_name = w.add_section_name(b".rela.dyn");
        w.reserve_section_index();
        let rela_offset = w.reserve_relocations(relocs.len(), true);
        w.reserve_shstrtab_section_index();
        w.reserve_shstrtab().unwrap();
        w.reserve_section_headers();

        w.write_file_header(&WFileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type,
            e_machine: elf::EM_AARCH64,
            e_entry,
            e_flags: elf::FileFlags(0),
        })
        .unwrap();
        w.write_align_program_headers();
        for (s, &off) in segments.iter().zip(&offsets) {
            w.write_program_header(&WProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: elf::ProgramFlags(elf::PF_R.0 | elf::PF_W.0 | elf::PF_X.0),
                p_offset: off,
                p_vaddr: s.vaddr,
                p_paddr: s.vaddr,
                p_filesz: s.data.len() as u64,
                p_memsz: s.memsz,
                p_align: 16,
            });
        }
        for s in segments {
            w.write_align(16);
            w.write(&s.data);
        }
        w.write_align_relocation();
        for &(r_offset, r_sym, r_type) in relocs {
            w.write_relocation(
                true,
                &Rel {
                    r_offset,
                    r_sym,
                    r_type: elf::RelocationType(r_type),
                    r_addend: ADDEND as i64,
                },
            );
        }
        w.write_shstrtab();
        w.write_null_section_header();
        let sh_name = w.section_name_offset(Some(rela_name));
        w.write_section_header(&WSectionHeader {
            sh_name,
            sh_type: elf::SHT_RELA,
            sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0),
            sh_addr: 0,
            sh_offset: rela_offset,
            sh_size: relocs.len() as u64 * 24,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 8,
            sh_entsize: 24,
        });
        w.write_shstrtab_section_header();
        out
    }

    const ADDEND: u64 = 0x1000_0040;

    fn two_segments() -> Vec<Segment> {
        vec![
            Segment { vaddr: 0, data: image_bytes(0x100, 0x3000), memsz: 0x100 },
            Segment { vaddr: 0x1000, data: vec![0xaa; 0x20], memsz: 0x2000 },
        ]
    }

    #[test]
    fn lays_out_segments_by_address_with_zero_gaps() {
        let segs = two_segments();
        let elf = build_elf(&segs, &[(0x1008, 0, 1027)]);
        let flat = elf_to_flat_binary(&elf).unwrap();
        assert_eq!(flat.len(), 0x1020, "ends at the last file byte, BSS not stored");
        assert_eq!(&flat[..0x100], &segs[0].data[..]);
        assert!(flat[0x100..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&flat[0x1000..], &segs[1].data[..]);
    }

    #[test]
    fn trailing_bss_only_segment_is_not_stored() {
        // As lld lays out the test guest: the last PT_LOAD is .bss alone, past the file end.
        let segs = vec![
            Segment { vaddr: 0, data: image_bytes(0x98, 0x7_0000), memsz: 0x98 },
            Segment { vaddr: 0xa0, data: vec![], memsz: 0x6_0000 },
        ];
        let flat = elf_to_flat_binary(&build_elf(&segs, &[(0x1000, 0, 1027)])).unwrap();
        assert_eq!(flat, segs[0].data);
    }

    #[test]
    fn rejects_non_relative_relocation_by_name() {
        let elf = build_elf(&two_segments(), &[(0x1008, 0, 1027), (0x1010, 1, 257)]);
        let err = format!("{:#}", elf_to_flat_binary(&elf).unwrap_err());
        assert!(err.contains("R_AARCH64_ABS64"), "{err}");
        assert!(err.contains("0x1010"), "{err}");
    }

    #[test]
    fn rejects_relocation_outside_image() {
        let elf = build_elf(&two_segments(), &[(0x3000, 0, 1027)]);
        let err = format!("{:#}", elf_to_flat_binary(&elf).unwrap_err());
        assert!(err.contains("outside the image"), "{err}");
    }

    #[test]
    fn rejects_image_not_linked_at_zero() {
        let segs = vec![Segment { vaddr: 0x4020_0000, data: image_bytes(0x100, 0), memsz: 0x100 }];
        let err = format!("{:#}", elf_to_flat_binary(&build_elf(&segs, &[])).unwrap_err());
        assert!(err.contains("linked at 0x40200000"), "{err}");
    }

    #[test]
    fn rejects_missing_image_header() {
        let segs = vec![Segment { vaddr: 0, data: vec![0u8; 0x100], memsz: 0x100 }];
        let err = format!("{:#}", elf_to_flat_binary(&build_elf(&segs, &[])).unwrap_err());
        assert!(err.contains("arm64 Image header"), "{err}");
    }

    #[test]
    fn rejects_overlapping_segments_and_garbage() {
        let segs = vec![
            Segment { vaddr: 0, data: image_bytes(0x100, 0), memsz: 0x1000 },
            Segment { vaddr: 0x800, data: vec![1; 8], memsz: 8 },
        ];
        let err = format!("{:#}", elf_to_flat_binary(&build_elf(&segs, &[])).unwrap_err());
        assert!(err.contains("overlap"), "{err}");
        assert!(elf_to_flat_binary(b"\x7fELF garbage").is_err());
        assert!(elf_to_flat_binary(&[]).is_err());
    }

    const PEER_BASE: u64 = 0x1000_0000;

    /// A fixed-address image as lld lays out the peer: code, data holding an applied
    /// relocation at `PEER_BASE + 0x1008`, then BSS and stack up to `PEER_BASE + 0x1_0000`.
    fn fixed_segments(relocated_word: u64) -> Vec<Segment> {
        let mut data = vec![0xaa; 0x20];
        data[8..16].copy_from_slice(&relocated_word.to_le_bytes());
        vec![
            Segment { vaddr: PEER_BASE, data: vec![0x11; 0x100], memsz: 0x100 },
            Segment { vaddr: PEER_BASE + 0x1000, data, memsz: 0x20 },
            Segment { vaddr: PEER_BASE + 0x1020, data: vec![], memsz: 0xefe0 },
        ]
    }

    #[test]
    fn fixed_image_is_laid_out_from_its_base() {
        let segs = fixed_segments(ADDEND);
        let elf = build_elf_entry(&segs, &[(PEER_BASE + 0x1008, 0, 1027)], PEER_BASE);
        let flat = elf_to_flat(&elf, Load::Fixed { base: PEER_BASE }).unwrap();
        assert_eq!(flat.mem_size, 0x1_0000, "BSS and stack count, from the base");
        assert_eq!(flat.bytes.len(), 0x1020);
        assert_eq!(&flat.bytes[..0x100], &segs[0].data[..]);
        assert_eq!(&flat.bytes[0x1000..], &segs[1].data[..]);
        // No Image header needed, but the relocating layout still demands one (and 0).
        assert!(elf_to_flat_binary(&elf).is_err());
    }

    #[test]
    fn fixed_image_rejects_unapplied_relocations() {
        let elf = build_elf_entry(&fixed_segments(0), &[(PEER_BASE + 0x1008, 0, 1027)], PEER_BASE);
        let err = format!("{:#}", elf_to_flat(&elf, Load::Fixed { base: PEER_BASE }).unwrap_err());
        assert!(err.contains("not applied") && err.contains("0x10001008"), "{err}");
    }

    #[test]
    fn fixed_image_rejects_wrong_base_entry_and_relocation_below_base() {
        let segs = fixed_segments(ADDEND);
        let elf = build_elf_entry(&segs, &[], PEER_BASE);
        let err =
            format!("{:#}", elf_to_flat(&elf, Load::Fixed { base: 0x2000_0000 }).unwrap_err());
        assert!(err.contains("not 0x20000000"), "{err}");
        let elf = build_elf_entry(&segs, &[], PEER_BASE + 4);
        let err = format!("{:#}", elf_to_flat(&elf, Load::Fixed { base: PEER_BASE }).unwrap_err());
        assert!(err.contains("entry point"), "{err}");
        let elf = build_elf_entry(&segs, &[(0x8, 0, 1027)], PEER_BASE);
        let err = format!("{:#}", elf_to_flat(&elf, Load::Fixed { base: PEER_BASE }).unwrap_err());
        assert!(err.contains("outside the image"), "{err}");
    }
}
