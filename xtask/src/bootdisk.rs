//! The chain boot's disk (`cargo xtask run --chain`, docs/chain.md): a raw disk image with one
//! FAT partition holding `extlinux/extlinux.conf`, the kernel and the initramfs, which Debian's
//! U-Boot finds with its distro boot (`boot_targets` ... `virtio0` ...) and boots. Written
//! without root tools: the FAT file system by the `fatfs` crate (pinned), in memory.
//!
//! The partition table is written here: one MBR sector with one primary entry (bootable, LBA
//! start and length, the FAT type) and the 0x55AA signature. That is 16 bytes of fields, for
//! which a partition crate (`mbrman` brings serde, bincode and bitvec) would be heavier than
//! the code. It is needed because U-Boot's distro boot reads `virtio 0:1` and takes a disk
//! without a partition table only as partition 0.

use anyhow::{Context, Result, ensure};
use std::io::{Cursor, Write};
use std::path::Path;

/// The kernel's and the initramfs's names on the partition (what extlinux.conf names).
pub const KERNEL_FILE: &str = "Image";
pub const INITRD_FILE: &str = "initramfs.cpio";
pub const CONF_DIR: &str = "extlinux";
pub const CONF_FILE: &str = "extlinux.conf";
/// The label extlinux.conf boots.
pub const LABEL: &str = "warden-linux";

const SECTOR: usize = 512;
/// The partition starts at 1 MiB, as partitioning tools align it.
pub const PARTITION_START_SECTOR: u32 = 2048;
const MBR_ENTRY: usize = 446;
const MBR_DISK_SIGNATURE: usize = 440;
/// The disk signature (`"wrdn"`): U-Boot derives the partition's UUID from it.
const DISK_SIGNATURE: u32 = u32::from_le_bytes(*b"wrdn");
const BOOTABLE: u8 = 0x80;
/// MBR partition types: FAT16 and FAT32 with LBA addressing.
const TYPE_FAT16_LBA: u8 = 0x0e;
const TYPE_FAT32_LBA: u8 = 0x0c;
/// The CHS fields of an entry beyond CHS addressing (the LBA fields are what counts).
const CHS_BEYOND: [u8; 3] = [0xfe, 0xff, 0xff];

/// The longest `append` line U-Boot takes: its extlinux code builds `bootargs` in a buffer of
/// `CONFIG_SYS_CBSIZE` (512 in Debian's `qemu_arm64`) bytes with the terminating NUL, and boots
/// nothing (`bootarg overflow`) when the line is longer.
pub const MAX_APPEND: usize = 511;

/// extlinux.conf for `append` (the kernel command line): one label, booted at once. No `fdt`
/// line: U-Boot then gives Linux (a copy of) the DT at `fdt_addr` (0x4000_0000), the one QEMU
/// put at the base of RAM. U-Boot expands `${name}` in the line before it boots.
pub fn extlinux_conf(append: &str) -> Result<String> {
    let append = append.trim();
    ensure!(
        !append.chars().any(char::is_control),
        "the kernel command line for extlinux.conf must be one line without control characters"
    );
    ensure!(
        append.len() <= MAX_APPEND,
        "the kernel command line is {} bytes; U-Boot's extlinux boot takes at most {MAX_APPEND}",
        append.len()
    );
    Ok(format!(
        "# Written by cargo xtask (xtask/src/bootdisk.rs) for the chain boot:\n\
         # tz-sim -> warden -> U-Boot -> Linux (docs/chain.md).\n\
         default {LABEL}\n\
         label {LABEL}\n\
         \tkernel /{KERNEL_FILE}\n\
         \tinitrd /{INITRD_FILE}\n\
         \tappend {append}\n"
    ))
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// The FAT volume's size for files of `payload` bytes: their size plus an eighth and 4 MiB for
/// the file system's tables and cluster slack, in whole MiB.
fn volume_size(payload: u64) -> u64 {
    round_up(payload + payload / 8 + (4 << 20), 1 << 20)
}

/// The FAT volume holding the kernel, the initramfs and extlinux.conf, and whether it is FAT32
/// (`fatfs` picks the type from the size).
pub fn fat_volume(kernel: &[u8], initrd: &[u8], conf: &str) -> Result<(Vec<u8>, bool)> {
    let payload = (kernel.len() + initrd.len() + conf.len()) as u64;
    let size = volume_size(payload);
    let mut volume = Cursor::new(vec![0u8; usize::try_from(size)?]);
    fatfs::format_volume(
        &mut volume,
        fatfs::FormatVolumeOptions::new().volume_label(*b"WARDEN-BOOT").volume_id(DISK_SIGNATURE),
    )
    .context("formatting the FAT volume")?;
    let fat32 = {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
            .context("opening the new FAT volume")?;
        let fat32 = fs.fat_type() == fatfs::FatType::Fat32;
        let root = fs.root_dir();
        let write = |dir: &fatfs::Dir<_>, name: &str, bytes: &[u8]| -> Result<()> {
            let mut file = dir.create_file(name).with_context(|| format!("creating {name}"))?;
            file.truncate().with_context(|| format!("truncating {name}"))?;
            file.write_all(bytes).with_context(|| format!("writing {name}"))?;
            file.flush().with_context(|| format!("writing {name}"))
        };
        write(&root, KERNEL_FILE, kernel)?;
        write(&root, INITRD_FILE, initrd)?;
        let conf_dir = root.create_dir(CONF_DIR).context("creating extlinux/")?;
        write(&conf_dir, CONF_FILE, conf.as_bytes())?;
        drop((conf_dir, root));
        fs.unmount().context("closing the FAT volume")?;
        fat32
    };
    Ok((volume.into_inner(), fat32))
}

/// The MBR sector for one bootable FAT partition of `volume_len` bytes at
/// [`PARTITION_START_SECTOR`].
pub fn mbr(volume_len: u64, fat32: bool) -> Result<[u8; SECTOR]> {
    ensure!(
        volume_len.is_multiple_of(SECTOR as u64),
        "the volume is not a whole number of sectors"
    );
    let sectors = u32::try_from(volume_len / SECTOR as u64)
        .context("the volume is too large for an MBR partition")?;
    let mut sector = [0u8; SECTOR];
    sector[MBR_DISK_SIGNATURE..MBR_DISK_SIGNATURE + 4]
        .copy_from_slice(&DISK_SIGNATURE.to_le_bytes());
    let entry = &mut sector[MBR_ENTRY..MBR_ENTRY + 16];
    entry[0] = BOOTABLE;
    entry[1..4].copy_from_slice(&CHS_BEYOND);
    entry[4] = if fat32 { TYPE_FAT32_LBA } else { TYPE_FAT16_LBA };
    entry[5..8].copy_from_slice(&CHS_BEYOND);
    entry[8..12].copy_from_slice(&PARTITION_START_SECTOR.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    Ok(sector)
}

/// The whole disk: MBR, the gap up to 1 MiB, the FAT partition.
pub fn disk_image(kernel: &[u8], initrd: &[u8], append: &str) -> Result<Vec<u8>> {
    let conf = extlinux_conf(append)?;
    let (volume, fat32) = fat_volume(kernel, initrd, &conf)?;
    let mut disk = Vec::with_capacity(PARTITION_START_SECTOR as usize * SECTOR + volume.len());
    disk.extend_from_slice(&mbr(volume.len() as u64, fat32)?);
    disk.resize(PARTITION_START_SECTOR as usize * SECTOR, 0);
    disk.extend_from_slice(&volume);
    Ok(disk)
}

/// Writes the disk for `kernel` and `initrd` booted with `append` to `out`.
pub fn write(out: &Path, kernel: &Path, initrd: &Path, append: &str) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let disk = disk_image(&read(kernel)?, &read(initrd)?, append)
        .with_context(|| format!("building the boot disk {}", out.display()))?;
    std::fs::write(out, disk).with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The partition entry's fields: (status, type, LBA start, sectors).
    fn partition(disk: &[u8]) -> (u8, u8, u32, u32) {
        let e = &disk[MBR_ENTRY..MBR_ENTRY + 16];
        let word = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
        (e[0], e[4], word(8), word(12))
    }

    fn read_file(fs: &fatfs::FileSystem<Cursor<Vec<u8>>>, path: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        fs.root_dir().open_file(path).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn disk_reads_back_with_the_files_and_the_conf() {
        // Sizes that are not multiples of a cluster or sector.
        let kernel: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let initrd: Vec<u8> = (0..1_234_567u32).map(|i| (i ^ (i >> 9)) as u8).collect();
        let append = "console=ttyAMA0 earlycon panic=-1 warden.smp=2";
        let disk = disk_image(&kernel, &initrd, append).unwrap();

        assert_eq!(&disk[510..512], &[0x55, 0xaa]);
        let (status, kind, start, sectors) = partition(&disk);
        assert_eq!((status, start), (BOOTABLE, PARTITION_START_SECTOR));
        assert_eq!(disk.len(), (start as usize + sectors as usize) * SECTOR);
        // U-Boot takes a sector 0 with "FAT" where a boot sector has its type for a boot
        // sector, not a partition table.
        assert_ne!(&disk[0x36..0x39], b"FAT");
        assert_ne!(&disk[0x52..0x57], b"FAT32");

        let volume = &disk[start as usize * SECTOR..];
        let fs =
            fatfs::FileSystem::new(Cursor::new(volume.to_vec()), fatfs::FsOptions::new()).unwrap();
        let fat32 = fs.fat_type() == fatfs::FatType::Fat32;
        assert_eq!(kind, if fat32 { TYPE_FAT32_LBA } else { TYPE_FAT16_LBA });
        assert_eq!(read_file(&fs, KERNEL_FILE), kernel);
        assert_eq!(read_file(&fs, INITRD_FILE), initrd);
        let conf = String::from_utf8(read_file(&fs, "extlinux/extlinux.conf")).unwrap();
        let lines: Vec<&str> =
            conf.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "default warden-linux",
                "label warden-linux",
                "kernel /Image",
                "initrd /initramfs.cpio",
                "append console=ttyAMA0 earlycon panic=-1 warden.smp=2",
            ]
        );
        let mut names: Vec<String> = fs.root_dir().iter().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["Image", "extlinux", "initramfs.cpio"]);
    }

    #[test]
    fn the_image_is_reproducible() {
        let a = disk_image(b"kernel", b"initrd", "quiet").unwrap();
        let b = disk_image(b"kernel", b"initrd", "quiet").unwrap();
        assert!(a == b, "two images of the same files differ");
    }

    #[test]
    fn a_debian_sized_payload_fits() {
        // Debian's 6.12 Image (44 MB) and the scenarios' initramfs (about 25 MB).
        let kernel = vec![0x5au8; 44 << 20];
        let initrd = vec![0xa5u8; 25 << 20];
        let disk = disk_image(&kernel, &initrd, "quiet").unwrap();
        let volume = &disk[PARTITION_START_SECTOR as usize * SECTOR..];
        let fs =
            fatfs::FileSystem::new(Cursor::new(volume.to_vec()), fatfs::FsOptions::new()).unwrap();
        assert!(read_file(&fs, KERNEL_FILE) == kernel);
        assert!(read_file(&fs, INITRD_FILE) == initrd);
    }

    #[test]
    fn append_lines_u_boot_cannot_take_are_refused() {
        assert!(extlinux_conf("a\nlabel evil").is_err());
        assert!(extlinux_conf("a\rb").is_err());
        assert!(extlinux_conf(&"x".repeat(MAX_APPEND)).is_ok());
        let err = format!("{:#}", extlinux_conf(&"x".repeat(MAX_APPEND + 1)).unwrap_err());
        assert!(err.contains("at most 511"), "{err}");
        assert!(extlinux_conf("  padded  ").unwrap().contains("\tappend padded\n"));
    }

    #[test]
    fn mbr_fields() {
        let sector = mbr(64 << 20, true).unwrap();
        assert_eq!(partition(&sector), (BOOTABLE, TYPE_FAT32_LBA, 2048, (64 << 20) / 512));
        assert_eq!(&sector[440..444], b"wrdn");
        assert!(mbr(1000, false).is_err());
        assert!(mbr(1 << 42, true).is_err());
    }
}
