//! `cargo xtask image --board NAME`: warden built for a Snapdragon board, packed into a
//! test-signed Qualcomm MBN for the partition the board enters it from (docs/boards/NAME.md).
//!
//! Where the image goes comes from the board description (`boards/NAME/board.rs`, its
//! `entry`: base and region size, which the board unit tests check against the board's real DT):
//! the MBN's one loadable segment is placed at the region's base, the entry point is that base
//! (warden's `_start` is its first byte). warden itself is linked at 0 and position independent:
//! its entry code relocates it to wherever it was loaded (`R_AARCH64_RELATIVE` only, checked
//! when the ELF is converted), as the chain's `warden-hyp.bin` is loaded at tz-sim's `HYP_BASE`.
//!
//! Before writing, the image's resident footprint (code, read-only data, data, BSS with the EL2
//! stacks and boot tables, and the pool the heap and page tables come from: the linker's
//! `__image_end`, see `linker/warden.ld` and `src/mm/footprint.rs`) must fit the region; after
//! writing, `mbn_check` reads the file back.

use crate::elf2bin::{Load, elf_to_flat};
use crate::firmware::{self, FirmwareCrate};
use crate::mbn::{self, MbnVersion, Segment, Signing};
use crate::mbn_check::{self, Expected};
use crate::toolchain;
use anyhow::{Context, Result, bail, ensure};
use object::read::elf::ElfFile64;
use object::{LittleEndian, Object, ObjectSymbol};
use std::path::{Path, PathBuf};
use warden::boards::{self, Board};

/// The partition TrustZone or the boot loader takes the image from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// `hyp`: entered by TrustZone at EL2 (SW_ID 0x15).
    Hyp,
    /// `uefi_a`: loaded by XBL as the UEFI image, started at EL1 (SW_ID 0x09).
    UefiA,
}

impl Partition {
    pub fn sw_id(self) -> u32 {
        match self {
            Self::Hyp => 0x15,
            Self::UefiA => 0x09,
        }
    }

    /// The fastboot partition name.
    pub fn fastboot_name(self) -> &'static str {
        match self {
            Self::Hyp => "hyp",
            Self::UefiA => "uefi_a",
        }
    }
}

/// A board warden can be imaged for.
pub struct BoardImage {
    pub board: &'static Board,
    pub partition: Partition,
    /// The SoC's MBN header version (qtestsign's table: MSM8916 v3, SM8150 and later v6).
    pub version: MbnVersion,
    /// What warden is built as for this board.
    pub krate: FirmwareCrate,
}

/// warden built for one board (no simulated peer; `WARDEN_HYP_DT` names the DT it links).
const fn board_crate(cargo_args: &'static [&'static str]) -> FirmwareCrate {
    FirmwareCrate {
        package: "warden",
        cargo_args,
        bin_name: "warden",
        // Not written as a flat image: `build_elf` keeps the ELF, the MBN is the output.
        output: "warden.elf",
        load: Load::SelfRelocatingImage,
        max_mem_size: None,
        embeds_sim_peer: false,
    }
}

/// The Snapdragon boards: RB3 Gen 2's UEFI loader takes `uefi_a`; RB5's and DB410c's
/// TrustZone enters `hyp`.
pub const BOARDS: [BoardImage; 3] = [
    BoardImage {
        board: &boards::qcs6490_rb3gen2::BOARD,
        partition: Partition::UefiA,
        version: MbnVersion::V6,
        krate: board_crate(&[
            "--package",
            "warden",
            "--no-default-features",
            "--features",
            "firmware,board-qcs6490-rb3gen2",
            "--bin",
            "warden",
        ]),
    },
    BoardImage {
        board: &boards::qrb5165_rb5::BOARD,
        partition: Partition::Hyp,
        version: MbnVersion::V6,
        krate: board_crate(&[
            "--package",
            "warden",
            "--no-default-features",
            "--features",
            "firmware,board-qrb5165-rb5",
            "--bin",
            "warden",
        ]),
    },
    BoardImage {
        board: &boards::apq8016_sbc::BOARD,
        partition: Partition::Hyp,
        version: MbnVersion::V3,
        krate: board_crate(&[
            "--package",
            "warden",
            "--no-default-features",
            "--features",
            "firmware,board-apq8016-sbc",
            "--bin",
            "warden",
        ]),
    },
];

pub fn board_names() -> Vec<&'static str> {
    BOARDS.iter().map(|b| b.board.name).collect()
}

pub fn find(name: &str) -> Result<&'static BoardImage> {
    BOARDS.iter().find(|b| b.board.name == name).with_context(|| {
        format!("no board {name}: images are made for {}", board_names().join(", "))
    })
}

impl BoardImage {
    /// warden's region on the board: `[base, end)`.
    pub fn region(&self) -> Result<(u64, u64)> {
        let r = self.board.entry.region().with_context(|| {
            format!("board {} is not entered as a boot stage: no region", self.board.name)
        })?;
        Ok((r.start, r.end))
    }

    pub fn signing(&self) -> Signing {
        Signing { version: self.version, sw_id: self.partition.sw_id() }
    }

    pub fn expected(&self) -> Result<Expected> {
        let region = self.region()?;
        Ok(Expected {
            version: self.version.number(),
            sw_id: self.partition.sw_id(),
            entry: region.0,
            region,
        })
    }

    pub fn output(&self) -> PathBuf {
        output_dir().join(format!(
            "warden-{}-{}.mbn",
            self.board.name,
            self.partition.fastboot_name()
        ))
    }
}

pub fn output_dir() -> PathBuf {
    firmware::output_dir().join("images")
}

/// warden's resident footprint from its linked ELF's symbols (`linker/warden.ld`), bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Image header, code, read-only data, relocations: `[0, __rodata_end)`.
    pub code_rodata: u64,
    /// Data and BSS (the EL2 and emergency stacks, warden's own stage-1 tables):
    /// `[__rodata_end, __bss_end)`.
    pub data_bss: u64,
    /// The heap and the page-table frames (`.pool`, at least `WARDEN_POOL_MIN`, then to the next
    /// 2 MiB boundary): `[__bss_end, __image_end)`.
    pub pool: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.code_rodata + self.data_bss + self.pool
    }

    pub fn from_elf(elf: &[u8]) -> Result<Self> {
        let file = ElfFile64::<LittleEndian>::parse(elf).context("reading warden's ELF")?;
        let symbol = |name: &str| -> Result<u64> {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .with_context(|| format!("warden's ELF has no symbol {name} (linker/warden.ld)"))
        };
        let start = symbol("__image_start")?;
        let rodata_end = symbol("__rodata_end")?;
        let bss_end = symbol("__bss_end")?;
        let end = symbol("__image_end")?;
        ensure!(
            start <= rodata_end && rodata_end <= bss_end && bss_end <= end,
            "warden's ELF has its layout symbols out of order"
        );
        Ok(Footprint {
            code_rodata: rodata_end - start,
            data_bss: bss_end - rodata_end,
            pool: end - bss_end,
        })
    }

    /// One line: the parts and the total in KiB.
    pub fn describe(&self) -> String {
        format!(
            "{} KiB (code + rodata {} KiB, data + BSS {} KiB, pool {} KiB)",
            self.total() / 1024,
            self.code_rodata / 1024,
            self.data_bss / 1024,
            self.pool / 1024
        )
    }
}

/// Refuses a footprint larger than the region, saying by how much.
pub fn check_fit(board: &str, footprint: &Footprint, region: (u64, u64)) -> Result<()> {
    let size = region.1 - region.0;
    let total = footprint.total();
    if total > size {
        bail!(
            "warden does not fit {board}'s region [{:#x}, {:#x}) ({} KiB): its resident \
             footprint is {}, {} KiB too large",
            region.0,
            region.1,
            size / 1024,
            footprint.describe(),
            (total - size).div_ceil(1024)
        );
    }
    Ok(())
}

/// What [`make`] wrote.
#[derive(Debug)]
pub struct Made {
    pub path: PathBuf,
    pub size: u64,
    pub footprint: Footprint,
    pub checked: mbn_check::Checked,
}

/// Packs warden's ELF (linked at 0) for `image`: the fit check, the MBN, its check. Writes
/// nothing when the footprint does not fit.
pub fn pack(image: &BoardImage, elf: &[u8], out: &Path) -> Result<Made> {
    let region = image.region()?;
    let footprint = Footprint::from_elf(elf)?;
    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("removing the old {}", out.display()))?;
    }
    check_fit(image.board.name, &footprint, region)?;
    let flat = elf_to_flat(elf, Load::SelfRelocatingImage).context("converting warden's ELF")?;
    ensure!(
        flat.mem_size <= footprint.total(),
        "warden's segments span {:#x} bytes, beyond __image_end ({:#x})",
        flat.mem_size,
        footprint.total()
    );
    const PF_RWX: u32 = 7;
    // The segment is the file part (header to data); BSS and the pool after it are warden's to
    // zero and use, and the hash segment lands right after the file part, inside the region.
    let segment = Segment {
        addr: region.0,
        mem_size: flat.bytes.len() as u64,
        data: flat.bytes,
        flags: PF_RWX,
    };
    let bytes = mbn::write(region.0, &[segment], image.signing())?;
    let checked = mbn_check::check(&bytes, &image.expected()?)
        .context("the MBN just written fails its check")?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(Made { path: out.to_owned(), size: bytes.len() as u64, footprint, checked })
}

/// Builds warden for `image`'s board (linking the board's pinned DT) and returns its ELF,
/// copied to `target/warden/images/` (the firmware build dir's `warden` is whichever board
/// was built last).
pub fn build_elf(image: &BoardImage, log: Option<&Path>) -> Result<Vec<u8>> {
    let dtb = crate::board_dtbs::provide()?.join(format!("{}.dtb", image.board.name));
    let tc = toolchain::firmware()?;
    let elf_path =
        firmware::build_elf(tc, &image.krate, log, &[(crate::chain::HYP_DT_ENV, dtb.as_path())])?;
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    std::fs::create_dir_all(output_dir())?;
    let copy = output_dir().join(format!("warden-{}.elf", image.board.name));
    std::fs::write(&copy, &elf).with_context(|| format!("writing {}", copy.display()))?;
    Ok(elf)
}

/// `cargo xtask image --board NAME`: build, fit, write, check, and say where to flash it.
pub fn run(board: &str) -> Result<Made> {
    let image = find(board)?;
    let elf = build_elf(image, None)?;
    let made = pack(image, &elf, &image.output())?;
    let (start, end) = image.region()?;
    println!("xtask: wrote {} ({} bytes)", made.path.display(), made.size);
    println!(
        "xtask: MBN v{} SW_ID {:#04x}, one segment at {start:#x} ({} bytes), entry {start:#x}; \
         checked: hashes, entry, load address inside [{start:#x}, {end:#x})",
        image.version.number(),
        image.partition.sw_id(),
        made.checked.loaded_bytes,
    );
    println!(
        "xtask: footprint {} of the region's {} KiB ({} KiB free)",
        made.footprint.describe(),
        (end - start) / 1024,
        ((end - start) - made.footprint.total()) / 1024
    );
    println!(
        "xtask: flash it: fastboot flash {} {}   (docs/boards/{}.md)",
        image.partition.fastboot_name(),
        made.path.display(),
        image.board.name
    );
    Ok(made)
}

/// `cargo xtask image --board NAME --check FILE`.
pub fn check_file(board: &str, file: &Path) -> Result<()> {
    let image = find(board)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let checked = mbn_check::check(&bytes, &image.expected()?)
        .with_context(|| format!("{} is not a good {board} image", file.display()))?;
    println!(
        "xtask: {} is a good {board} image: MBN v{}, SW_ID {:#04x}, {} loadable segment(s), \
         {} bytes, hash segment at [{:#x}, {:#x})",
        file.display(),
        image.version.number(),
        image.partition.sw_id(),
        checked.segments,
        checked.loaded_bytes,
        checked.hash_segment.0,
        checked.hash_segment.1
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn regions_and_signing_come_from_the_boards() {
        let rb3 = find("qcs6490-rb3gen2").unwrap();
        assert_eq!(rb3.region().unwrap(), (0x9fc0_0000, 0x9fc0_0000 + 4 * MIB));
        assert_eq!((rb3.partition.fastboot_name(), rb3.partition.sw_id()), ("uefi_a", 0x09));
        assert_eq!(rb3.version, MbnVersion::V6);
        let rb5 = find("qrb5165-rb5").unwrap();
        assert_eq!(rb5.region().unwrap(), (0x8000_0000, 0x8000_0000 + 6 * MIB));
        assert_eq!((rb5.partition.fastboot_name(), rb5.partition.sw_id()), ("hyp", 0x15));
        assert_eq!(rb5.version, MbnVersion::V6);
        let db410c = find("apq8016-sbc").unwrap();
        assert_eq!(db410c.region().unwrap(), (0x8640_0000, 0x8640_0000 + MIB));
        assert_eq!((db410c.partition.fastboot_name(), db410c.partition.sw_id()), ("hyp", 0x15));
        assert_eq!(db410c.version, MbnVersion::V3);
        for b in &BOARDS {
            // The entry is the region's base, 2 MiB aligned as warden's relocation expects.
            let expected = b.expected().unwrap();
            assert_eq!(expected.entry % (2 * MIB), 0, "{}", b.board.name);
            let feature = format!("firmware,board-{}", b.board.name);
            assert!(b.krate.cargo_args.contains(&feature.as_str()), "{}", b.board.name);
            assert!(b.krate.cargo_args.contains(&"--no-default-features"));
            assert!(b.output().ends_with(format!(
                "warden-{}-{}.mbn",
                b.board.name,
                b.partition.fastboot_name()
            )));
        }
        assert!(find("qemu-virt").err().unwrap().to_string().contains("images are made for"));
    }

    #[test]
    fn a_footprint_beyond_the_region_is_refused_by_how_much() {
        let footprint = Footprint { code_rodata: 420 * 1024, data_bss: 600 * 1024, pool: 3 * MIB };
        assert_eq!(footprint.total(), 4 * MIB - 4 * 1024);
        let region = (0x8640_0000, 0x8640_0000 + MIB);
        let err = check_fit("apq8016-sbc", &footprint, region).unwrap_err().to_string();
        assert!(
            err.contains(
                "warden does not fit apq8016-sbc's region [0x86400000, 0x86500000) (1024 KiB): \
                 its resident footprint is 4092 KiB (code + rodata 420 KiB, data + BSS 600 KiB, \
                 pool 3072 KiB), 3068 KiB too large"
            ),
            "{err}"
        );
        // Exactly the region fits; one byte more does not, and counts as a whole KiB.
        let exact = Footprint { code_rodata: 512 * 1024, data_bss: 512 * 1024, pool: 0 };
        assert!(check_fit("b", &exact, region).is_ok());
        let over = Footprint { pool: 1, ..exact };
        assert!(
            check_fit("b", &over, region).unwrap_err().to_string().contains(", 1 KiB too large")
        );
    }

    /// A minimal ELF shaped like warden's: linked at 0, one PT_LOAD of `file` bytes (an arm64
    /// Image header first) and `mem` bytes of memory, and the layout symbols of
    /// `linker/warden.ld` (`__image_end` = `mem`).
    fn fake_warden(file: usize, mem: u64) -> Vec<u8> {
        use object::Endianness;
        use object::elf;
        use object::write::elf::{FileHeader, ProgramHeader, Sym, Writer};
        let data = crate::elf2bin::tests::image_bytes(file, mem);
        let symbols = [
            ("__image_start", 0),
            ("__rodata_end", file as u64 / 2),
            ("__bss_end", file as u64),
            ("__image_end", mem),
        ];
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(1);
        let offset = w.reserve(data.len() as u64, 16);
        w.reserve_null_section_index();
        let names: Vec<_> = symbols.iter().map(|(n, _)| w.add_string(n.as_bytes())).collect();
        w.reserve_null_symbol_index();
        for _ in &symbols {
            w.reserve_symbol_index(None);
        }
        w.reserve_symtab_section_index();
        w.reserve_strtab_section_index();
        w.reserve_shstrtab_section_index();
        w.reserve_symtab();
        w.reserve_strtab().unwrap();
        w.reserve_shstrtab().unwrap();
        w.reserve_section_headers();
        w.write_file_header(&FileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_DYN,
            e_machine: elf::EM_AARCH64,
            e_entry: 0,
            e_flags: elf::FileFlags(0),
        })
        .unwrap();
        w.write_align_program_headers();
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::ProgramFlags(elf::PF_R.0 | elf::PF_W.0 | elf::PF_X.0),
            p_offset: offset,
            p_vaddr: 0,
            p_paddr: 0,
            p_filesz: data.len() as u64,
            p_memsz: mem,
            p_align: 16,
        });
        w.write_align(16);
        w.write(&data);
        w.write_null_symbol();
        for (&(_, value), &name) in symbols.iter().zip(&names) {
            let st_name = w.string_offset(Some(name));
            w.write_symbol(&Sym {
                st_name,
                section: None,
                st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_NOTYPE),
                st_other: elf::SymbolOther(0),
                st_shndx: elf::SHN_ABS,
                st_value: value,
                st_size: 0,
            });
        }
        w.write_strtab();
        w.write_shstrtab();
        w.write_null_section_header();
        w.write_symtab_section_header(1);
        w.write_strtab_section_header();
        w.write_shstrtab_section_header();
        out
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn packing_refuses_before_writing_and_checks_what_it_writes() {
        let dir = scratch("pack");
        let db410c = find("apq8016-sbc").unwrap();
        let out = dir.join("warden.mbn");
        // 0x5000 bytes of file in 1 MiB: fits; the MBN is written and reads back.
        let made = pack(db410c, &fake_warden(0x5000, MIB), &out).unwrap();
        assert_eq!(made.footprint.total(), MIB);
        assert_eq!(made.checked.loaded_bytes, 0x5000);
        let written = std::fs::read(&out).unwrap();
        assert_eq!(written.len() as u64, made.size);
        mbn_check::check(&written, &db410c.expected().unwrap()).unwrap();
        // 4 KiB more memory than the region: refused by how much, and the old image is gone.
        let err =
            format!("{:#}", pack(db410c, &fake_warden(0x5000, MIB + 0x1000), &out).unwrap_err());
        assert!(
            err.contains("warden does not fit apq8016-sbc's region")
                && err.contains("4 KiB too large"),
            "{err}"
        );
        assert!(!out.exists(), "a refused image leaves no file behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
