//! Debian's U-Boot for the chain boot (`cargo xtask run --chain`, docs/chain.md): the
//! `u-boot-qemu` package, installed with apt like QEMU, and its `qemu_arm64/u-boot.bin`.
//!
//! The package is `Architecture: all` with no dependencies, so it installs the same on an x86_64
//! host with `--no-install-recommends`. The version checked here is pinned with the sha256 of
//! its `.deb` (apt checks that one against the archive's signed index when it installs) and of
//! the `u-boot.bin` it ships, which xtask checks itself. Another version (a newer security
//! update, another Debian release) is used with a warning; the pinned version with a different
//! `u-boot.bin` is refused (the file was changed after installation).

use crate::linux::sha256_hex;
use crate::toolchain::{apt_get, apt_update, can_install, output_of, run_logged};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Debian's package of U-Boot for QEMU's boards.
pub const PACKAGE: &str = "u-boot-qemu";
/// The version whose behaviour docs/chain.md describes (bookworm, security update 3). Its
/// `.deb`, `u-boot-qemu_2023.01+dfsg-2+deb12u3_all.deb`, has sha256
/// 02a14f0876b76c0d7d7934e9b83a77515c5bdbad1e00af84c445bfeb1e6b8665 (the archive's `SHA256:`,
/// which apt checks when it installs).
pub const VERSION: &str = "2023.01+dfsg-2+deb12u3";
/// sha256 of the `u-boot.bin` that version ships.
pub const BIN_SHA256: &str = "f50cb989e32b41a7389edd5a77a565c2c3870abec44a2e55678107abd34f1184";
/// The image for QEMU's arm64 virt board: a raw binary, position independent (linked at 0 with
/// its own relocations), so it runs wherever it is loaded (tz-sim's `NEXT_STAGE`).
pub const BIN: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The ELF the package ships next to it, read to check the image is position independent.
pub const ELF: &str = "/usr/lib/u-boot/qemu_arm64/uboot.elf";

/// U-Boot's default environment for `qemu_arm64` (`include/configs/qemu-arm.h` of 2023.01; the
/// strings are in `u-boot.bin`): where distro boot loads what extlinux.conf names. Both are
/// below tz-sim's `NEXT_STAGE` (0x6000_0000), where U-Boot itself is loaded.
pub const KERNEL_ADDR_R: u64 = 0x4040_0000;
pub const RAMDISK_ADDR_R: u64 = 0x4400_0000;

/// The U-Boot xtask found.
#[derive(Debug, Clone)]
pub struct UBoot {
    pub bin: PathBuf,
    /// The installed package's version.
    pub version: String,
    pub sha256: String,
}

/// What xtask makes of an installed `u-boot.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pinned version, its file unchanged.
    Checked,
    /// Another version: used, with a warning (what docs/chain.md says may not hold).
    Unchecked(String),
    /// The pinned version with another file: refused.
    Altered,
}

/// Judges an installed U-Boot from the package's version (dpkg) and the file's sha256.
pub fn judge(installed_version: Option<&str>, bin_sha256: &str) -> Verdict {
    match installed_version {
        Some(VERSION) if bin_sha256.eq_ignore_ascii_case(BIN_SHA256) => Verdict::Checked,
        Some(VERSION) => Verdict::Altered,
        Some(other) => Verdict::Unchecked(other.to_owned()),
        None if bin_sha256.eq_ignore_ascii_case(BIN_SHA256) => Verdict::Checked,
        None => Verdict::Unchecked("not installed by dpkg".to_owned()),
    }
}

/// Checks an ELF is position independent (`ET_DYN`), as U-Boot must be to run at
/// `NEXT_STAGE` when it was linked at 0.
pub fn check_position_independent(elf: &[u8]) -> Result<()> {
    use object::Object;
    let file = object::File::parse(elf).context("not an ELF file")?;
    if file.kind() != object::ObjectKind::Dynamic {
        bail!("U-Boot is not position independent (ELF kind {:?}, not ET_DYN)", file.kind());
    }
    Ok(())
}

fn installed_version() -> Option<String> {
    output_of(Command::new("dpkg-query").args(["-W", "-f=${Version}", PACKAGE]))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn install() -> Result<()> {
    eprintln!("xtask: installing {PACKAGE} (Debian's U-Boot for QEMU, for --chain)");
    apt_update()?;
    run_logged(&mut apt_get(&["install", "-y", "--no-install-recommends", PACKAGE]))
        .with_context(|| format!("installing {PACKAGE} failed"))
}

/// The error when U-Boot is missing and xtask may not install it.
fn missing_error() -> anyhow::Error {
    anyhow::anyhow!(
        "{BIN} not found: --chain boots Debian's U-Boot. Install it (as root):\n  \
         apt-get update\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGE}"
    )
}

fn resolve(bin: &Path) -> Result<UBoot> {
    if !bin.is_file() {
        if !can_install() {
            return Err(missing_error());
        }
        install()?;
        if !bin.is_file() {
            bail!("{PACKAGE} is installed but has no {}", bin.display());
        }
    }
    let bytes = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let sha256 = sha256_hex(&bytes);
    let elf = std::fs::read(ELF).with_context(|| format!("reading {ELF}"))?;
    check_position_independent(&elf).with_context(|| format!("checking {ELF}"))?;
    let version = installed_version();
    match judge(version.as_deref(), &sha256) {
        Verdict::Checked => {}
        Verdict::Unchecked(other) => eprintln!(
            "xtask: WARNING: {PACKAGE} {other} is not the version checked ({VERSION}, \
             docs/chain.md): U-Boot's addresses and behaviour may differ"
        ),
        Verdict::Altered => bail!(
            "{} has sha256 {sha256}, but {PACKAGE} {VERSION} ships {BIN_SHA256}: the file was \
             changed after installation (reinstall it: apt-get install --reinstall {PACKAGE})",
            bin.display()
        ),
    }
    Ok(UBoot { bin: bin.to_owned(), version: version.unwrap_or_else(|| "unknown".into()), sha256 })
}

/// Debian's U-Boot, found once per process (installed if missing and allowed).
pub fn uboot() -> Result<&'static UBoot> {
    static FOUND: OnceLock<UBoot> = OnceLock::new();
    if let Some(u) = FOUND.get() {
        return Ok(u);
    }
    let u = resolve(Path::new(BIN))?;
    eprintln!("xtask: U-Boot: {} ({PACKAGE} {}, sha256 {})", u.bin.display(), u.version, u.sha256);
    Ok(FOUND.get_or_init(|| u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_version_and_file_are_checked() {
        assert_eq!(judge(Some(VERSION), BIN_SHA256), Verdict::Checked);
        assert_eq!(judge(Some(VERSION), &BIN_SHA256.to_uppercase()), Verdict::Checked);
        assert_eq!(judge(None, BIN_SHA256), Verdict::Checked);
    }

    #[test]
    fn another_version_is_unchecked_and_an_altered_file_refused() {
        let other = "2025.01-3";
        assert_eq!(judge(Some(other), "00"), Verdict::Unchecked(other.into()));
        assert_eq!(judge(Some(VERSION), "00"), Verdict::Altered);
        assert!(matches!(judge(None, "00"), Verdict::Unchecked(_)));
    }

    #[test]
    fn the_stop_message_names_the_install_command() {
        let e = format!("{:#}", missing_error());
        assert!(e.contains("apt-get install -y --no-install-recommends u-boot-qemu"), "{e}");
    }

    #[test]
    fn position_independence_is_read_from_the_elf_type() {
        let object = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::Aarch64,
            object::Endianness::Little,
        );
        // A relocatable object (ET_REL) is not position independent in this sense.
        let relocatable = object.write().unwrap();
        let err = format!("{:#}", check_position_independent(&relocatable).unwrap_err());
        assert!(err.contains("not position independent"), "{err}");
        // The same header with e_type = ET_DYN.
        let mut dynamic = relocatable.clone();
        dynamic[16..18].copy_from_slice(&object::elf::ET_DYN.0.to_le_bytes());
        check_position_independent(&dynamic).unwrap();
        assert!(check_position_independent(b"not an elf").is_err());
    }

    /// The package this machine has (`cargo xtask setup` and `cargo xtask test` install it,
    /// like QEMU): the pinned one, its image position independent.
    #[test]
    fn installed_uboot_is_the_checked_one() {
        let u = resolve(Path::new(BIN)).unwrap();
        assert_eq!((u.version.as_str(), u.sha256.as_str()), (VERSION, BIN_SHA256));
    }
}
