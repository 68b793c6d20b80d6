//! Getting a Linux host: a Debian arm64 kernel and busybox from Debian's archive (cached under
//! `$XDG_CACHE_HOME/warden`, else `~/.cache/warden`), and checks on a kernel or initrd the user
//! brings. See `docs/linux-host.md`.

use crate::toolchain::{self, apt_get, can_install, is_root, output_of, run_logged};
use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use warden::payload::{Arm64ImageHeader, PayloadError};

/// A Debian package pinned to one version and the sha256 of its `.deb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebPin {
    pub package: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
}

/// The default host kernel: Linux 6.12 from bookworm-backports.
pub const KERNEL_6_12: DebPin = DebPin {
    package: "linux-image-6.12.95+deb12-arm64-unsigned",
    version: "6.12.95-1~bpo12+1",
    sha256: "78e1ba9c8b64d4669f48a6f756148aa67212cc83b01dcae87e0648277b03774e",
};

/// busybox for the initramfs (statically linked, so it needs no libraries).
pub const BUSYBOX: DebPin = DebPin {
    package: "busybox-static",
    version: "1:1.35.0-4+deb12u1+b1",
    sha256: "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5",
};

/// Which Debian kernel series to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// Linux 6.12 from bookworm-backports (pinned; the default).
    #[value(name = "6.12")]
    V6_12,
    /// Linux 6.1 from bookworm (the newest the archive offers; for the "another kernel" check).
    #[value(name = "6.1")]
    V6_1,
}

impl Series {
    pub fn label(self) -> &'static str {
        match self {
            Series::V6_12 => "6.12",
            Series::V6_1 => "6.1",
        }
    }

    fn pin(self) -> Option<DebPin> {
        match self {
            Series::V6_12 => Some(KERNEL_6_12),
            Series::V6_1 => None,
        }
    }

    /// The `apt-cache search --names-only` pattern for this series' generic arm64 kernels.
    fn search_pattern(self) -> &'static str {
        match self {
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-arm64-unsigned$",
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-arm64-unsigned$",
        }
    }

    /// The numeric parts that order this series' package names (newest = largest), or None if
    /// `package` is not a generic arm64 kernel of this series (`-cloud-`, `-rt-`, `-dbg` are
    /// not).
    fn order_key(self, package: &str) -> Option<Vec<u64>> {
        let (prefix, suffix) = match self {
            Series::V6_12 => ("linux-image-6.12.", "+deb12-arm64-unsigned"),
            Series::V6_1 => ("linux-image-6.1.0-", "-arm64-unsigned"),
        };
        let middle = package.strip_prefix(prefix)?.strip_suffix(suffix)?;
        let parts: Option<Vec<u64>> = middle.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty())
    }
}

/// The newest package of `series` among `names` (e.g. lines of `apt-cache search`).
pub fn select_newest(series: Series, names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let name = name.strip_suffix(":arm64").unwrap_or(name);
            Some((series.order_key(name)?, name))
        })
        .max()
        .map(|(_, name)| name.to_owned())
}

/// Versions in `apt-cache madison` output (`pkg | version | source`), in its order (newest
/// first), each with its source line.
pub fn madison_versions(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            let _package = fields.next()?;
            let version = fields.next().filter(|v| !v.is_empty())?;
            let source = fields.next().unwrap_or_default();
            Some((version.to_owned(), source.to_owned()))
        })
        .collect()
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `$XDG_CACHE_HOME/warden`, else `$HOME/.cache/warden`.
pub fn cache_dir_from(xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match (xdg_cache_home.filter(|x| x.starts_with('/')), home.filter(|h| !h.is_empty())) {
        (Some(xdg), _) => Some(Path::new(xdg).join("warden")),
        (None, Some(home)) => Some(Path::new(home).join(".cache/warden")),
        (None, None) => None,
    }
}

pub fn cache_dir() -> Result<PathBuf> {
    let var = |k| std::env::var(k).ok();
    cache_dir_from(var("XDG_CACHE_HOME").as_deref(), var("HOME").as_deref())
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the Linux download cache")
}

/// A Debian kernel package, extracted.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// `boot/vmlinuz-<release>` (a raw arm64 Image).
    pub image: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
    pub release: String,
    pub package: String,
    pub version: String,
}

const COMPLETE_MARKER: &str = ".xtask-complete";

fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".+-_".contains(c) { c } else { '_' })
        .collect()
}

fn extract_dir(cache: &Path, package: &str, version: &str) -> PathBuf {
    cache.join("extracted").join(format!("{package}_{}", file_safe(version)))
}

fn foreign_arm64() -> bool {
    output_of(Command::new("dpkg").arg("--print-foreign-architectures"))
        .is_some_and(|t| t.lines().any(|l| l.trim() == "arm64"))
}

fn stop_not_root(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} needs root (apt). Run as root, or prepare apt once (as root):\n  \
         dpkg --add-architecture arm64\n  \
         apt-get update\n\
         or bring your own host: cargo xtask run --kernel IMAGE [--initrd FILE]"
    )
}

/// Makes apt able to download arm64 packages of `series` (and busybox).
fn prepare_apt(need_backports: bool) -> Result<()> {
    if !foreign_arm64() {
        if !can_install() {
            return Err(stop_not_root("adding the arm64 architecture to dpkg"));
        }
        eprintln!("xtask: adding the arm64 architecture to dpkg (for Debian's arm64 kernel)");
        run_logged(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        run_logged(&mut apt_get(&["update"])).context("apt-get update failed")?;
    }
    if need_backports && toolchain::debian_codename().as_deref() == Some("bookworm") {
        if !toolchain::apt_suite_configured("bookworm-backports") && !can_install() {
            return Err(stop_not_root("adding bookworm-backports (for Linux 6.12)"));
        }
        toolchain::ensure_backports_suite()?;
    }
    Ok(())
}

fn madison(package: &str) -> Vec<(String, String)> {
    output_of(Command::new("apt-cache").args(["madison", &format!("{package}:arm64")]))
        .map(|t| madison_versions(&t))
        .unwrap_or_default()
}

fn apt_search(pattern: &str) -> Vec<String> {
    output_of(Command::new("apt-cache").args(["search", "--names-only", pattern]))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Downloads `package=version` (arm64) into the cache, checks its sha256 against `expected`
/// (if pinned), extracts it, and returns the extracted root.
fn download_and_extract(
    cache: &Path,
    package: &str,
    version: &str,
    expected: Option<&str>,
) -> Result<PathBuf> {
    let target = extract_dir(cache, package, version);
    let debs = cache.join("debs");
    let staging = debs.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    eprintln!("xtask: downloading {package} {version} (arm64) from Debian's archive");
    let spec = format!("{package}:arm64={version}");
    let mut cmd = apt_get(&["download"]);
    if is_root() {
        // The cache is usually under /root, which apt's `_apt` sandbox user cannot enter.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(&spec).current_dir(&staging);
    run_logged(&mut cmd).with_context(|| {
        format!(
            "downloading {spec} failed: check the network and the apt sources \
             (`apt-get update`), or bring your own host with `cargo xtask run --kernel IMAGE \
             --initrd FILE`"
        )
    })?;
    let deb = std::fs::read_dir(&staging)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| {
            format!("apt-get download {spec} left no .deb in {}", staging.display())
        })?;
    let bytes = std::fs::read(&deb).with_context(|| format!("reading {}", deb.display()))?;
    let actual = sha256_hex(&bytes);
    eprintln!("xtask: {} sha256 {actual}", deb.display());
    if let Some(Err(e)) = expected.map(|e| verify_sha256(package, version, e, &actual, &deb)) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let kept = debs.join(format!("{package}_{}_arm64.deb", file_safe(version)));
    std::fs::rename(&deb, &kept)?;
    let _ = std::fs::remove_dir_all(&staging);

    eprintln!("xtask: extracting {} into {}", kept.display(), target.display());
    let mut partial_name = target.file_name().unwrap_or_default().to_owned();
    partial_name.push(".partial");
    let partial = target.with_file_name(partial_name);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    run_logged(Command::new("dpkg-deb").arg("-x").arg(&kept).arg(&partial))
        .with_context(|| format!("extracting {}", kept.display()))?;
    std::fs::write(partial.join(COMPLETE_MARKER), format!("{actual}\n"))?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&partial, &target)?;
    Ok(target)
}

/// Fails with a clear message when a pinned download's sha256 is not the pinned one.
pub fn verify_sha256(
    package: &str,
    version: &str,
    expected: &str,
    actual: &str,
    file: &Path,
) -> Result<()> {
    ensure!(
        actual.eq_ignore_ascii_case(expected),
        "sha256 mismatch for {package} {version}: expected {expected} (pinned in \
         xtask/src/linux.rs), got {actual} from {}. The archive served a different file than \
         the one pinned; it was not used. If Debian really rebuilt the package, check it and \
         update the pin.",
        file.display()
    );
    Ok(())
}

fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).is_file()
}

/// Gets `pin` from the cache or the archive; returns the extracted root.
fn obtain_pinned(cache: &Path, pin: DebPin, need_backports: bool) -> Result<PathBuf> {
    let dir = extract_dir(cache, pin.package, pin.version);
    if is_complete(&dir) {
        return Ok(dir);
    }
    prepare_apt(need_backports)?;
    download_and_extract(cache, pin.package, pin.version, Some(pin.sha256))
}

/// Finds the kernel release in an extracted kernel package.
fn kernel_in(root: &Path, package: &str, version: &str) -> Result<DebianKernel> {
    let boot = root.join("boot");
    let image = std::fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/ directory", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .with_context(|| format!("no boot/vmlinuz-* in {}", root.display()))?;
    let release = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz file name")?
        .to_owned();
    let modules = root.join("lib/modules").join(&release);
    Ok(DebianKernel {
        image,
        modules,
        release,
        package: package.to_owned(),
        version: version.to_owned(),
    })
}

fn newest_cached(cache: &Path, series: Series) -> Option<(PathBuf, String, String)> {
    let dir = std::fs::read_dir(cache.join("extracted")).ok()?;
    dir.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_complete(p))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let (package, version) = name.split_once('_')?;
            Some((series.order_key(package)?, p.clone(), package.to_owned(), version.to_owned()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p, package, version)| (p, package, version))
}

/// The Debian arm64 kernel of `series`, from the cache or downloaded.
pub fn debian_kernel(series: Series) -> Result<DebianKernel> {
    let cache = cache_dir()?;
    let need_backports = series == Series::V6_12;
    if let Some(pin) = series.pin() {
        let dir = extract_dir(&cache, pin.package, pin.version);
        if is_complete(&dir) {
            eprintln!("xtask: Linux {}: cached {} {}", series.label(), pin.package, pin.version);
            return kernel_in(&dir, pin.package, pin.version);
        }
        prepare_apt(need_backports)?;
        let mut offered = madison(pin.package);
        if !offered.iter().any(|(v, _)| v == pin.version) {
            // Maybe the index is just old.
            toolchain::apt_update()?;
            offered = madison(pin.package);
        }
        if offered.iter().any(|(v, _)| v == pin.version) {
            let root = download_and_extract(&cache, pin.package, pin.version, Some(pin.sha256))?;
            return kernel_in(&root, pin.package, pin.version);
        }
        eprintln!(
            "xtask: WARNING: the pinned kernel {} {} is no longer in the archive.\n\
             xtask: WARNING: falling back to the newest Linux {} the archive offers; its \
             sha256 is NOT checked. Update KERNEL_6_12 in xtask/src/linux.rs.",
            pin.package,
            pin.version,
            series.label()
        );
    } else if let Some((dir, package, version)) = newest_cached(&cache, series) {
        eprintln!(
            "xtask: Linux {}: cached {package} {version} (delete {} to look for a newer one)",
            series.label(),
            dir.display()
        );
        return kernel_in(&dir, &package, &version);
    } else {
        prepare_apt(need_backports)?;
    }
    let mut names = apt_search(series.search_pattern());
    if names.is_empty() {
        toolchain::apt_update()?;
        names = apt_search(series.search_pattern());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let package = select_newest(series, &refs).with_context(|| {
        format!(
            "the archive offers no arm64 Linux {} kernel ({}); check `dpkg \
             --print-foreign-architectures` lists arm64 and run `apt-get update`",
            series.label(),
            series.search_pattern()
        )
    })?;
    let (version, _) = madison(&package)
        .into_iter()
        .next()
        .with_context(|| format!("apt-cache madison shows no version of {package}:arm64"))?;
    eprintln!("xtask: Linux {}: using {package} {version} (not pinned)", series.label());
    let dir = extract_dir(&cache, &package, &version);
    let root = if is_complete(&dir) {
        dir
    } else {
        download_and_extract(&cache, &package, &version, None)?
    };
    kernel_in(&root, &package, &version)
}

/// The static busybox binary (arm64), from the cache or downloaded.
pub fn busybox() -> Result<PathBuf> {
    let cache = cache_dir()?;
    let root = obtain_pinned(&cache, BUSYBOX, false).with_context(|| {
        format!("getting busybox ({} {}) for the initramfs", BUSYBOX.package, BUSYBOX.version)
    })?;
    let path = root.join("bin/busybox");
    ensure!(
        path.is_file(),
        "busybox is missing: {} has no bin/busybox. Delete {} and run again to download {} anew",
        root.display(),
        root.display(),
        BUSYBOX.package
    );
    Ok(path)
}

/// Checks that `bytes` (read from `path`) is an arm64 Image; returns its header's image_size
/// (the memory the kernel needs from its load address, 0 if the header does not say).
pub fn check_kernel_image(path: &Path, bytes: &[u8]) -> Result<u64> {
    let expected = "expected an uncompressed arm64 Linux Image (`ARM\\x64` magic at offset 56, \
                    e.g. Debian's /boot/vmlinuz-*-arm64 or a kernel build's \
                    arch/arm64/boot/Image)";
    let found = if bytes.starts_with(&[0x1f, 0x8b]) {
        "a gzip file (decompress it first: zcat FILE > Image)"
    } else if bytes.starts_with(b"\x7fELF") {
        "an ELF file (vmlinux?); use arch/arm64/boot/Image instead"
    } else if bytes.starts_with(b"MZ") {
        "a PE/EFI file without the arm64 Image magic"
    } else if bytes.len() < 64 {
        "a file shorter than the 64-byte Image header"
    } else {
        "no arm64 Image header"
    };
    match Arm64ImageHeader::parse(bytes) {
        Ok(header) => Ok(header.image_size),
        Err(PayloadError::KernelNotArm64Image) => {
            bail!("{} is not an arm64 Image: found {found}; {expected}", path.display())
        }
        Err(e) => bail!("{} is not usable as the host kernel: {e}; {expected}", path.display()),
    }
}

/// Parses a QEMU `-m` size (`1G`, `512M`, `2048` = MiB) into bytes.
pub fn parse_memory(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("memory size `{text}` does not start with a number"))?;
    let shift = match suffix.to_ascii_uppercase().trim_end_matches('B') {
        "" | "M" => 20,
        "K" => 10,
        "G" => 30,
        "T" => 40,
        _ => bail!("memory size `{text}`: unknown suffix `{suffix}` (use K, M, G or T)"),
    };
    number.checked_shl(shift).filter(|b| b >> shift == number).context("memory size overflows")
}

/// Memory Linux needs besides the kernel image and the initrd (page tables, early allocations,
/// the unpacked rootfs's first pages, userspace).
const MIN_WORKING_MEMORY: u64 = 96 << 20;

/// Checks that the kernel and initrd can boot in `memory` bytes: the kernel's image size, the
/// initrd twice (the packed copy and the unpacked rootfs) and some working memory.
pub fn check_fits(
    memory: u64,
    kernel_image_size: u64,
    initrd_len: u64,
    initrd: &Path,
) -> Result<()> {
    let need = kernel_image_size
        .saturating_add(initrd_len.saturating_mul(2))
        .saturating_add(MIN_WORKING_MEMORY);
    ensure!(
        need <= memory,
        "initrd {} ({} MiB) is too large for {} MiB of memory: the kernel ({} MiB), the initrd \
         twice (packed and unpacked) and {} MiB to run need {} MiB. Give more memory (e.g. \
         --memory {}M) or use a smaller initrd",
        initrd.display(),
        initrd_len >> 20,
        memory >> 20,
        kernel_image_size >> 20,
        MIN_WORKING_MEMORY >> 20,
        need.div_ceil(1 << 20),
        need.div_ceil(1 << 20).next_multiple_of(256)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH_6_12: &str = "\
linux-image-6.12.9+deb12-arm64-unsigned - Linux 6.12 for 64-bit ARMv8 machines
linux-image-6.12.95+deb12-arm64-unsigned - Linux 6.12 for 64-bit ARMv8 machines
linux-image-6.12.95+deb12-cloud-arm64-unsigned - Linux 6.12 for arm64 cloud
linux-image-6.12.96+deb12-rt-arm64-unsigned - Linux 6.12 for 64-bit ARMv8 machines, PREEMPT_RT
linux-image-6.12.10+deb12-arm64-unsigned-dbg - debug symbols
";

    const SEARCH_6_1: &str = "\
linux-image-6.1.0-9-arm64-unsigned - Linux 6.1 for 64-bit ARMv8 machines
linux-image-6.1.0-47-arm64-unsigned - Linux 6.1 for 64-bit ARMv8 machines
linux-image-6.1.0-56-cloud-arm64-unsigned - Linux 6.1 for arm64 cloud
linux-image-6.1.0-50-arm64-unsigned - Linux 6.1 for 64-bit ARMv8 machines
linux-image-6.12.95+deb12-arm64-unsigned - Linux 6.12 for 64-bit ARMv8 machines
";

    #[test]
    fn newest_kernel_by_number_not_by_text() {
        let lines: Vec<&str> = SEARCH_6_12.lines().collect();
        assert_eq!(
            select_newest(Series::V6_12, &lines).as_deref(),
            Some("linux-image-6.12.95+deb12-arm64-unsigned")
        );
        let lines: Vec<&str> = SEARCH_6_1.lines().collect();
        assert_eq!(
            select_newest(Series::V6_1, &lines).as_deref(),
            Some("linux-image-6.1.0-50-arm64-unsigned")
        );
        assert_eq!(
            select_newest(Series::V6_1, &["linux-image-6.12.95+deb12-arm64-unsigned"]),
            None
        );
        assert_eq!(select_newest(Series::V6_12, &[]), None);
        assert_eq!(
            select_newest(Series::V6_1, &["linux-image-6.1.0-7-arm64-unsigned:arm64"]).as_deref(),
            Some("linux-image-6.1.0-7-arm64-unsigned")
        );
        assert_eq!(select_newest(Series::V6_1, &["linux-image-6.1.0-x-arm64-unsigned"]), None);
    }

    #[test]
    fn pin_matches_its_series() {
        assert!(Series::V6_12.order_key(KERNEL_6_12.package).is_some());
        assert_eq!(KERNEL_6_12.sha256.len(), 64);
        assert_eq!(BUSYBOX.sha256.len(), 64);
        assert!(Series::V6_1.pin().is_none());
    }

    #[test]
    fn madison_parsing() {
        let text = "linux-image-arm64:arm64 | 6.12.95-1~bpo12+1 | http://deb.debian.org/debian bookworm-backports/main arm64 Packages\n\
                    linux-image-arm64:arm64 |   6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main arm64 Packages\n\
                    garbage\n";
        let v = madison_versions(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "6.12.95-1~bpo12+1");
        assert!(v[0].1.contains("bookworm-backports"));
        assert_eq!(v[1].0, "6.1.192-2");
        assert!(madison_versions("").is_empty());
    }

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pinned_sha256_mismatch_is_refused() {
        let deb = Path::new("/c/debs/x.deb");
        verify_sha256("p", "1", BUSYBOX.sha256, BUSYBOX.sha256, deb).unwrap();
        let err = verify_sha256("busybox-static", "1:1.35", BUSYBOX.sha256, &"0".repeat(64), deb)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sha256 mismatch for busybox-static 1:1.35: expected 732c"),
            "{err}"
        );
        assert!(err.contains("got 0000") && err.contains("from /c/debs/x.deb"), "{err}");
    }

    #[test]
    fn cache_location() {
        assert_eq!(
            cache_dir_from(Some("/x/cache"), Some("/root")),
            Some(PathBuf::from("/x/cache/warden"))
        );
        // A relative XDG_CACHE_HOME is invalid per the spec and ignored.
        assert_eq!(
            cache_dir_from(Some("rel"), Some("/home/u")),
            Some("/home/u/.cache/warden".into())
        );
        assert_eq!(cache_dir_from(None, Some("/root")), Some("/root/.cache/warden".into()));
        assert_eq!(cache_dir_from(None, None), None);
        assert_eq!(file_safe("1:1.35.0-4+deb12u1+b1"), "1_1.35.0-4+deb12u1+b1");
    }

    #[test]
    fn kernel_checks_name_file_and_expectation() {
        let path = Path::new("/tmp/some-kernel");
        let gz = format!("{:#}", check_kernel_image(path, &[0x1f, 0x8b, 8, 0]).unwrap_err());
        assert!(
            gz.starts_with("/tmp/some-kernel is not an arm64 Image: found a gzip file"),
            "{gz}"
        );
        assert!(gz.contains("expected an uncompressed arm64 Linux Image"), "{gz}");
        let elf = format!("{:#}", check_kernel_image(path, b"\x7fELF\x02\x01\x01").unwrap_err());
        assert!(elf.contains("an ELF file"), "{elf}");
        let short = format!("{:#}", check_kernel_image(path, b"#!/bin/sh\n").unwrap_err());
        assert!(short.contains("shorter than the 64-byte Image header"), "{short}");
        let mut image = crate::elf2bin::tests::image_bytes(0x1000, 0x20_0000);
        assert_eq!(check_kernel_image(path, &image).unwrap(), 0x20_0000);
        image[56] = b'X';
        let bad = format!("{:#}", check_kernel_image(path, &image).unwrap_err());
        assert!(bad.contains("found no arm64 Image header"), "{bad}");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("512").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2g").unwrap(), 2 << 30);
        assert!(parse_memory("64KiB").is_err(), "only K, KB");
        assert_eq!(parse_memory("64KB").unwrap(), 64 << 10);
        assert!(parse_memory("G").is_err());
        assert!(parse_memory("1X").is_err());
        assert!(parse_memory("99999999999999T").is_err());
    }

    #[test]
    fn initrd_fit() {
        let initrd = Path::new("/tmp/big.cpio");
        check_fits(1 << 30, 45 << 20, 8 << 20, initrd).unwrap();
        let err = format!("{:#}", check_fits(256 << 20, 45 << 20, 200 << 20, initrd).unwrap_err());
        assert!(
            err.starts_with("initrd /tmp/big.cpio (200 MiB) is too large for 256 MiB"),
            "{err}"
        );
        assert!(err.contains("--memory 768M"), "{err}");
        assert!(
            check_fits(u64::MAX - 1, u64::MAX, u64::MAX, initrd).is_err(),
            "saturates, never wraps"
        );
    }
}
