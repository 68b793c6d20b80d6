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
    /// The next stage packed behind warden (chainloading boards).
    pub next_stage: Option<NextStage>,
}

impl BoardImage {
    /// Whether warden chainloads a next stage packed behind it (RB3 Gen 2: after the Gunyah
    /// exit, at EL1), rather than being told by TrustZone where the next stage is (`hyp`).
    pub fn chainloads(&self) -> bool {
        matches!(self.board.entry, boards::EntryConvention::UefiUnderGunyah { .. })
    }
}

/// What goes into the segment: warden's flat image, and for a chainloading board the next
/// stage packed behind it with the packed-image format (`warden::payload`: the next stage is
/// the payload's kernel, no initrd, no command line), as `cargo xtask pack` packs a host.
pub fn segment_bytes(image: &BoardImage, warden: Vec<u8>, next: Option<&[u8]>) -> Result<Vec<u8>> {
    check_next_given(image, next.is_some())?;
    match next {
        Some(next) => crate::pack::pack(
            &warden,
            &crate::pack::Payload { kernel: next, initrd: None, cmdline: None },
            // Inside warden's region (the segment must fit it): warden moves it out at boot.
            crate::pack::Placement::Compact,
        )
        .with_context(|| format!("packing the next stage behind warden for {}", image.board.name)),
        None => Ok(warden),
    }
}

/// A next stage is given exactly when the board chainloads one.
pub fn check_next_given(image: &BoardImage, given: bool) -> Result<()> {
    let board = image.board.name;
    match (image.chainloads(), given) {
        (true, false) => bail!(
            "{board}: warden chainloads the next stage at EL1 after the Gunyah exit, and it is \
             packed into the image: pass --next FILE (an arm64 Image: U-Boot's qcs6490 build, \
             u-boot.bin, see docs/boards/{board}.md)"
        ),
        (false, true) => bail!(
            "{board}: TrustZone enters warden with the next stage's address; nothing is packed \
             behind warden (drop --next)"
        ),
        _ => Ok(()),
    }
}

/// Packs warden's ELF (linked at 0) for `image`, with the next stage behind it if the board
/// chainloads one ([`segment_bytes`]): the fit check, the MBN, its check. Writes nothing when
/// the footprint or the next stage does not fit.
pub fn pack(image: &BoardImage, elf: &[u8], next: Option<&[u8]>, out: &Path) -> Result<Made> {
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
    // The segment is the file part (header to data, then any next stage); BSS and the pool
    // after warden's data are warden's to zero and use once the next stage has been moved out,
    // and the hash segment lands right after the file part, inside the region.
    let data = segment_bytes(image, flat.bytes, next)?;
    let room = region.1 - region.0;
    if data.len() as u64 > room {
        bail!(
            "warden and the next stage behind it ({} KiB) do not fit {}'s region ({} KiB): {} \
             KiB too large",
            data.len().div_ceil(1024),
            image.board.name,
            room / 1024,
            (data.len() as u64 - room).div_ceil(1024)
        );
    }
    let segment = Segment { addr: region.0, mem_size: data.len() as u64, data, flags: PF_RWX };
    let bytes = mbn::write(region.0, &[segment], image.signing())?;
    let checked = mbn_check::check(&bytes, &image.expected()?)
        .context("the MBN just written fails its check")?;
    let next_stage = match image.chainloads() {
        true => Some(
            check_next_stage(&bytes, region.0, next)
                .context("the MBN just written fails its check of the next stage")?,
        ),
        false => None,
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(Made { path: out.to_owned(), size: bytes.len() as u64, footprint, checked, next_stage })
}

/// The next stage packed in a chainloading board's image, as the checker found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextStage {
    /// Offset from warden's base (the region's) and size.
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

/// Checks the next stage packed in the MBN `file` (the segment loaded at `base`) as warden's
/// boot will find it (`boot::locate_payload`): the payload descriptor at 0x40 of warden's
/// image is well-formed and its parts lie in the loaded bytes after warden's resident part,
/// the next stage is an arm64 Image, and, when `expected` is given, is exactly those bytes.
pub fn check_next_stage(file: &[u8], base: u64, expected: Option<&[u8]>) -> Result<NextStage> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use warden::payload::{
        Arm64ImageHeader, DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, IMAGE_SIZE_OFFSET, PayloadDescriptor,
    };
    let e = LittleEndian;
    let header = object::elf::FileHeader64::<LittleEndian>::parse(file).context("not an ELF64")?;
    let segment = header
        .program_headers(e, file)
        .context("program headers outside the file")?
        .iter()
        .find(|p| p.p_type(e) == object::elf::PT_LOAD && p.p_paddr(e) == base)
        .with_context(|| format!("no loadable segment at {base:#x} (warden's image)"))?;
    let loaded = segment.data(e, file).ok().context("warden's segment lies outside the file")?;
    let descriptor: &[u8; DESCRIPTOR_SIZE] = loaded
        .get(DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE)
        .and_then(|d| d.try_into().ok())
        .context("warden's segment is shorter than its payload descriptor")?;
    let desc = PayloadDescriptor::decode(descriptor)
        .map_err(|e| anyhow::anyhow!("payload descriptor: {e}"))?;
    let image_size = u64::from_le_bytes(
        loaded[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].try_into().unwrap_or_default(),
    );
    desc.validate(image_size.min(loaded.len() as u64)).map_err(|e| {
        anyhow::anyhow!("the next stage, as warden's boot reads the descriptor: {e}")
    })?;
    ensure!(
        desc.initrd_size == 0 && desc.cmdline_size == 0,
        "a next stage is packed alone (this image has an initrd or a command line)"
    );
    let stage =
        &loaded[desc.kernel_offset as usize..(desc.kernel_offset + desc.kernel_size) as usize];
    Arm64ImageHeader::parse(stage).map_err(|e| anyhow::anyhow!("the next stage: {e}"))?;
    if let Some(expected) = expected {
        ensure!(stage == expected, "the packed next stage differs from the file given");
    }
    Ok(NextStage {
        offset: desc.kernel_offset,
        size: desc.kernel_size,
        sha256: crate::linux::sha256_hex(stage),
    })
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

/// `cargo xtask image --board NAME [--next FILE]`: build, fit, write, check, and say where to
/// flash it.
pub fn run(board: &str, next: Option<&Path>) -> Result<Made> {
    let image = find(board)?;
    let next = next
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    // Refused before the (long) build when the next stage is missing or not wanted.
    check_next_given(image, next.is_some())?;
    let elf = build_elf(image, None)?;
    let made = pack(image, &elf, next.as_deref(), &image.output())?;
    let (start, end) = image.region()?;
    println!("xtask: wrote {} ({} bytes)", made.path.display(), made.size);
    println!(
        "xtask: MBN v{} SW_ID {:#04x}, one segment at {start:#x} ({} bytes), entry {start:#x}; \
         checked: hashes, entry, load address inside [{start:#x}, {end:#x})",
        image.version.number(),
        image.partition.sw_id(),
        made.checked.loaded_bytes,
    );
    if let Some(stage) = &made.next_stage {
        println!(
            "xtask: next stage at {:#x} ({} bytes, sha256 {}): moved out of the region and \
             entered at EL1 by warden's boot; checked: descriptor, arm64 Image, same bytes",
            start + stage.offset,
            stage.size,
            stage.sha256
        );
    }
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
    let next_stage = image
        .chainloads()
        .then(|| check_next_stage(&bytes, image.expected()?.entry, None))
        .transpose()
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
    if let Some(stage) = next_stage {
        println!(
            "xtask: next stage packed at offset {:#x}: {} bytes, an arm64 Image, sha256 {}",
            stage.offset, stage.size, stage.sha256
        );
    }
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
        let mut data = crate::elf2bin::tests::image_bytes(file, mem);
        // warden's payload descriptor, as its linker script leaves it.
        let own = warden::payload::PayloadDescriptor {
            resident_file_end: (file as u64).next_multiple_of(0x1000),
            ..Default::default()
        };
        data[0x40..0x80].copy_from_slice(&own.encode());
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
        let made = pack(db410c, &fake_warden(0x5000, MIB), None, &out).unwrap();
        assert_eq!(made.footprint.total(), MIB);
        assert_eq!(made.checked.loaded_bytes, 0x5000);
        let written = std::fs::read(&out).unwrap();
        assert_eq!(written.len() as u64, made.size);
        mbn_check::check(&written, &db410c.expected().unwrap()).unwrap();
        // 4 KiB more memory than the region: refused by how much, and the old image is gone.
        let err = format!(
            "{:#}",
            pack(db410c, &fake_warden(0x5000, MIB + 0x1000), None, &out).unwrap_err()
        );
        assert!(
            err.contains("warden does not fit apq8016-sbc's region")
                && err.contains("4 KiB too large"),
            "{err}"
        );
        assert!(!out.exists(), "a refused image leaves no file behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_rb3gen2_chainloads_and_it_needs_its_next_stage() {
        let rb3 = find("qcs6490-rb3gen2").unwrap();
        assert!(rb3.chainloads());
        let err = check_next_given(rb3, false).unwrap_err().to_string();
        assert!(err.contains("pass --next FILE") && err.contains("Gunyah exit"), "{err}");
        check_next_given(rb3, true).unwrap();
        for hyp in ["qrb5165-rb5", "apq8016-sbc"] {
            let image = find(hyp).unwrap();
            assert!(!image.chainloads());
            check_next_given(image, false).unwrap();
            let err = check_next_given(image, true).unwrap_err().to_string();
            assert!(err.contains("drop --next"), "{err}");
        }
        // The refusal is also pack's: no image without the next stage.
        let dir = scratch("no-next");
        let out = dir.join("warden.mbn");
        assert!(pack(rb3, &fake_warden(0x5000, 4 * MIB), None, &out).is_err());
        assert!(!out.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_next_stage_is_packed_behind_warden_and_checked() {
        let dir = scratch("next");
        let rb3 = find("qcs6490-rb3gen2").unwrap();
        let out = dir.join("warden.mbn");
        let next = crate::elf2bin::tests::image_bytes(0x3456, 0x10_0000);
        let made = pack(rb3, &fake_warden(0x5000, 4 * MIB), Some(&next), &out).unwrap();
        let stage = made.next_stage.clone().unwrap();
        // At the first 4 KiB boundary after warden's resident part, the bytes given.
        assert_eq!((stage.offset, stage.size), (0x5000, 0x3456));
        assert_eq!(stage.sha256, crate::linux::sha256_hex(&next));
        assert_eq!(made.checked.loaded_bytes, 0x5000 + 0x3456);
        let written = std::fs::read(&out).unwrap();
        let base = rb3.expected().unwrap().entry;
        assert_eq!(check_next_stage(&written, base, Some(&next)).unwrap(), stage);
        assert_eq!(check_next_stage(&written, base, None).unwrap(), stage);
        // Another file than the one packed, and an image without a next stage, are refused.
        let mut other = next.clone();
        other[0x100] ^= 1;
        let err = check_next_stage(&written, base, Some(&other)).unwrap_err().to_string();
        assert!(err.contains("differs"), "{err}");
        let db410c = find("apq8016-sbc").unwrap();
        let bare = dir.join("bare.mbn");
        pack(db410c, &fake_warden(0x5000, MIB), None, &bare).unwrap();
        let bare = std::fs::read(&bare).unwrap();
        let err = format!("{:#}", check_next_stage(&bare, 0x8640_0000, None).unwrap_err());
        assert!(err.contains("no host kernel packed"), "{err}");
        // Not an arm64 Image: refused by the packer.
        let mut not_image = next.clone();
        not_image[56] = 0;
        assert!(pack(rb3, &fake_warden(0x5000, 4 * MIB), Some(&not_image), &out).is_err());
        // Too large for the region with warden: refused by how much.
        let huge = crate::elf2bin::tests::image_bytes(4 * MIB as usize, 0);
        let err = format!(
            "{:#}",
            pack(rb3, &fake_warden(0x5000, 4 * MIB), Some(&huge), &out).unwrap_err()
        );
        assert!(err.contains("do not fit") && err.contains("20 KiB too large"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
