//! Finding (and, when allowed, installing) a compiler for the aarch64 firmware and a QEMU that
//! can run it. See `docs/toolchain.md`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const FIRMWARE_TARGET: &str = "aarch64-unknown-none-softfloat";
const MIN_RUSTC: (u32, u32, u32) = (1, 95, 0);
const MIN_QEMU: (u32, u32, u32) = (10, 0, 0);

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const DEBIAN_LLD: &str = "/usr/bin/ld.lld-22";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_RUST_PACKAGES: &[&str] =
    &["rustc-web", "cargo-web", "rust-web-src", "lld-22", "rust-web-clippy"];
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// RUSTFLAGS every firmware build uses, whatever the toolchain. (Alignment checking needs no
/// flag: the aarch64-unknown-none-softfloat target already has +strict-align, which warden
/// relies on while its MMU is off.)
pub const FIRMWARE_RUSTFLAGS: &[&str] = &[
    "-C",
    "relocation-model=pie",
    "-C",
    "link-arg=-pie",
    "-C",
    "link-arg=--no-dynamic-linker",
    "-C",
    "link-arg=-znostart-stop-gc",
    "-C",
    "force-frame-pointers=yes",
];

/// A compiler that can build the firmware.
#[derive(Debug, Clone)]
pub enum FirmwareToolchain {
    /// A rustup toolchain with the target's prebuilt core/alloc; links with its bundled rust-lld.
    Rustup { toolchain: String, has_clippy: bool },
    /// Debian's rustc-web with std sources: core/alloc built from source, linked by ld.lld-22.
    Debian { version: String, has_clippy: bool },
}

impl FirmwareToolchain {
    pub fn describe(&self) -> String {
        match self {
            Self::Rustup { toolchain, .. } => {
                format!("rustup toolchain {toolchain} (prebuilt {FIRMWARE_TARGET}, rust-lld)")
            }
            Self::Debian { version, .. } => format!(
                "Debian rustc-web {version} ({DEBIAN_RUSTC}, -Zbuild-std=core,alloc, {DEBIAN_LLD})"
            ),
        }
    }

    pub fn has_clippy(&self) -> bool {
        match self {
            Self::Rustup { has_clippy, .. } | Self::Debian { has_clippy, .. } => *has_clippy,
        }
    }

    /// A `cargo <subcommand>` for the firmware target with the environment this toolchain needs.
    /// `subcommand` is `build` or `clippy`; the caller adds packages and features.
    pub fn cargo(&self, subcommand: &str, target_dir: &Path) -> Command {
        self.cargo_with_rustflags(subcommand, target_dir, FIRMWARE_RUSTFLAGS)
    }

    /// [`Self::cargo`] with `rustflags` instead of [`FIRMWARE_RUSTFLAGS`] (the toolchain's own
    /// linker flags are still added): for programs that are not position-independent firmware,
    /// such as the Linux test program (`xtask/src/linux_tool.rs`). Use a target directory of
    /// their own: cargo rebuilds core and alloc whenever RUSTFLAGS change.
    pub fn cargo_with_rustflags(
        &self,
        subcommand: &str,
        target_dir: &Path,
        rustflags: &[&str],
    ) -> Command {
        let mut rustflags: Vec<&str> = rustflags.to_vec();
        let mut cmd = match self {
            Self::Rustup { toolchain, .. } => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", toolchain, "cargo", subcommand]);
                cmd.env_remove("RUSTC");
                cmd
            }
            Self::Debian { .. } => {
                rustflags.extend([
                    "-C",
                    "linker=/usr/bin/ld.lld-22",
                    // `ld.lld` is the stable spelling of the gnu-lld flavor.
                    "-C",
                    "linker-flavor=ld.lld",
                ]);
                // Cargo would look up `cargo-clippy` in ~/.cargo/bin first and get rustup's
                // proxy, which runs a different rustc; call Debian's driver directly.
                let mut cmd = if subcommand == "clippy" {
                    let mut c = Command::new(DEBIAN_CARGO_CLIPPY);
                    c.arg("clippy").env("CARGO", DEBIAN_CARGO);
                    c
                } else {
                    let mut c = Command::new(DEBIAN_CARGO);
                    c.arg(subcommand);
                    c
                };
                cmd.args(["-Zbuild-std=core,alloc"])
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("RUSTC", DEBIAN_RUSTC)
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("RUSTC_WRAPPER")
                    .env_remove("RUSTC_WORKSPACE_WRAPPER");
                cmd
            }
        };
        cmd.args(["--release", "--target", FIRMWARE_TARGET])
            .arg("--target-dir")
            .arg(target_dir)
            .env("RUSTFLAGS", rustflags.join(" "))
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        cmd
    }
}

/// The QEMU used for `run` and `test`.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub path: PathBuf,
    pub version: String,
}

/// Parses the first `X.Y[.Z]` in `text`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.')).find_map(|word| {
        let mut parts = word.split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some((major, minor, patch))
    })
}

pub(crate) fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
    })
}

fn rustup_candidate() -> Option<FirmwareToolchain> {
    let list = output_of(Command::new("rustup").args(["toolchain", "list"]))?;
    for line in list.lines() {
        let Some(toolchain) = line.split_whitespace().next() else { continue };
        let targets = output_of(Command::new("rustup").args([
            "target",
            "list",
            "--installed",
            "--toolchain",
            toolchain,
        ]))
        .unwrap_or_default();
        if targets.lines().any(|t| t.trim() == FIRMWARE_TARGET) {
            let components = output_of(Command::new("rustup").args([
                "component",
                "list",
                "--installed",
                "--toolchain",
                toolchain,
            ]))
            .unwrap_or_default();
            let has_clippy = components.lines().any(|c| c.starts_with("clippy"));
            return Some(FirmwareToolchain::Rustup { toolchain: toolchain.to_owned(), has_clippy });
        }
    }
    None
}

/// Why the Debian toolchain is not usable, or the toolchain.
fn debian_candidate() -> Result<FirmwareToolchain, String> {
    let version_text = output_of(Command::new(DEBIAN_RUSTC).arg("--version"))
        .ok_or_else(|| format!("{DEBIAN_RUSTC} missing"))?;
    let version = parse_version(&version_text)
        .ok_or_else(|| format!("cannot read the version in `{}`", version_text.trim()))?;
    if version < MIN_RUSTC {
        return Err(format!("{DEBIAN_RUSTC} is {}, need >= 1.95", version_text.trim()));
    }
    for (path, what) in
        [(DEBIAN_RUST_SRC, "rust-web-src"), (DEBIAN_CARGO, "cargo-web"), (DEBIAN_LLD, "lld-22")]
    {
        if !Path::new(path).exists() {
            return Err(format!("{path} missing (package {what})"));
        }
    }
    let has_clippy =
        Path::new(DEBIAN_CARGO_CLIPPY).exists() && Path::new("/usr/bin/clippy-driver").exists();
    Ok(FirmwareToolchain::Debian {
        version: format!("{}.{}.{}", version.0, version.1, version.2),
        has_clippy,
    })
}

pub(crate) fn is_root() -> bool {
    output_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

pub(crate) fn can_install() -> bool {
    is_root() && find_in_path("apt-get").is_some()
}

pub(crate) fn run_logged(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {}", shell_words(cmd));
    let status = cmd.status().with_context(|| format!("starting {}", shell_words(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", shell_words(cmd));
    }
    Ok(())
}

pub(crate) fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(std::process::Stdio::null());
    cmd
}

fn apt_updated() -> &'static OnceLock<()> {
    static UPDATED: OnceLock<()> = OnceLock::new();
    &UPDATED
}

pub(crate) fn apt_update() -> Result<()> {
    if apt_updated().get().is_none() {
        run_logged(&mut apt_get(&["update"]))?;
        let _ = apt_updated().set(());
    }
    Ok(())
}

fn install_debian_rust() -> Result<()> {
    eprintln!(
        "xtask: no compiler for {FIRMWARE_TARGET} found; installing Debian's rustc-web toolchain"
    );
    apt_update()?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(DEBIAN_RUST_PACKAGES);
    run_logged(&mut apt_get(&args))
}

fn resolve_firmware() -> Result<FirmwareToolchain> {
    if let Some(tc) = rustup_candidate() {
        return Ok(tc);
    }
    let why = match debian_candidate() {
        Ok(tc) => return Ok(tc),
        Err(why) => why,
    };
    if can_install() {
        install_debian_rust()?;
        return debian_candidate()
            .map_err(|why| anyhow::anyhow!("after installing: Debian toolchain unusable: {why}"));
    }
    Err(missing_toolchain_error(&why))
}

/// The error when no firmware compiler exists and xtask may not install one.
fn missing_toolchain_error(why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no compiler for {FIRMWARE_TARGET}: no rustup toolchain has the target installed, and \
         Debian's rustc-web toolchain is not usable ({why}).\n\
         Install one of them, e.g. (as root):\n  \
         apt-get update\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}\n\
         or: rustup target add {FIRMWARE_TARGET}",
        DEBIAN_RUST_PACKAGES.join(" ")
    )
}

/// Why QEMU is not usable, or QEMU.
fn qemu_candidate() -> Result<Qemu, String> {
    let path = find_in_path("qemu-system-aarch64")
        .ok_or_else(|| "qemu-system-aarch64 not found in PATH".to_owned())?;
    let text = output_of(Command::new(&path).arg("--version"))
        .ok_or_else(|| format!("{} --version failed", path.display()))?;
    let first = text.lines().next().unwrap_or_default().to_owned();
    let version = parse_version(&first).ok_or_else(|| format!("cannot read `{first}`"))?;
    if version < MIN_QEMU {
        return Err(format!("{} is too old ({first}), need >= 10.0", path.display()));
    }
    Ok(Qemu { path, version: format!("{}.{}.{}", version.0, version.1, version.2) })
}

pub(crate) fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// True when some apt source already names the suite.
pub(crate) fn apt_suite_configured(suite: &str) -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources")),
        );
    }
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).any(|text| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.split_whitespace().any(|w| w == suite))
    })
}

const BACKPORTS_DEB822: &str = "Types: deb\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm-backports\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// Makes sure bookworm-backports is an apt source and the index is fresh (adds the suite and
/// runs `apt-get update` when it was missing; otherwise updates at most once per process).
pub(crate) fn ensure_backports_suite() -> Result<()> {
    if !apt_suite_configured("bookworm-backports") {
        eprintln!("xtask: adding the bookworm-backports suite in {BACKPORTS_SOURCES}");
        std::fs::write(BACKPORTS_SOURCES, BACKPORTS_DEB822)
            .with_context(|| format!("writing {BACKPORTS_SOURCES}"))?;
        // The new suite needs a fresh index even if we updated before.
        run_logged(&mut apt_get(&["update"]))?;
        let _ = apt_updated().set(());
        Ok(())
    } else {
        apt_update()
    }
}

fn install_qemu() -> Result<()> {
    let bookworm = debian_codename().as_deref() == Some("bookworm");
    if bookworm {
        eprintln!(
            "xtask: installing qemu-system-arm >= 10.0 from bookworm-backports (bookworm has 7.2)"
        );
        ensure_backports_suite()?;
        run_logged(&mut apt_get(&[
            "install",
            "-y",
            "-t",
            "bookworm-backports",
            "--no-install-recommends",
            "qemu-system-arm",
        ]))
    } else {
        eprintln!("xtask: installing qemu-system-arm");
        apt_update()?;
        run_logged(&mut apt_get(&["install", "-y", "--no-install-recommends", "qemu-system-arm"]))
    }
}

fn resolve_qemu() -> Result<Qemu> {
    let why = match qemu_candidate() {
        Ok(q) => return Ok(q),
        Err(why) => why,
    };
    if can_install() {
        eprintln!("xtask: QEMU not usable: {why}");
        install_qemu()?;
        return qemu_candidate()
            .map_err(|why| anyhow::anyhow!("after installing QEMU it is still unusable: {why}"));
    }
    Err(missing_qemu_error(&why))
}

/// The error when QEMU is unusable and xtask may not install it.
fn missing_qemu_error(why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "QEMU not usable: {why}. Install qemu-system-arm >= 10.0, e.g. on Debian 12 (as root):\n  \
         printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: bookworm-backports\\n\
         Components: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' \
         > {BACKPORTS_SOURCES}\n  \
         apt-get update\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports \
         --no-install-recommends qemu-system-arm"
    )
}

/// The firmware toolchain, resolved once per process (installing it if allowed).
pub fn firmware() -> Result<&'static FirmwareToolchain> {
    static CHOSEN: OnceLock<FirmwareToolchain> = OnceLock::new();
    if let Some(tc) = CHOSEN.get() {
        return Ok(tc);
    }
    let tc = resolve_firmware()?;
    eprintln!("xtask: firmware toolchain: {}", tc.describe());
    Ok(CHOSEN.get_or_init(|| tc))
}

/// QEMU, resolved once per process (installing it if allowed).
pub fn qemu() -> Result<&'static Qemu> {
    static CHOSEN: OnceLock<Qemu> = OnceLock::new();
    if let Some(q) = CHOSEN.get() {
        return Ok(q);
    }
    let q = resolve_qemu()?;
    eprintln!("xtask: QEMU: {} {}", q.path.display(), q.version);
    Ok(CHOSEN.get_or_init(|| q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("rustc 1.96.0 (ac68faa20 2026-05-25)"), Some((1, 96, 0)));
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)"),
            Some((10, 0, 2))
        );
        assert_eq!(parse_version("QEMU emulator version 7.2"), Some((7, 2, 0)));
        assert_eq!(parse_version("no digits here"), None);
        assert!(parse_version("QEMU emulator version 7.2.15").unwrap() < MIN_QEMU);
        assert!(parse_version("rustc 1.94.1").unwrap() < MIN_RUSTC);
    }

    #[test]
    fn stop_messages_name_the_exact_commands() {
        let fw = format!("{:#}", missing_toolchain_error("/usr/bin/rustc missing"));
        assert!(fw.contains("(/usr/bin/rustc missing)"), "{fw}");
        assert!(
            fw.contains(
                "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                 rustc-web cargo-web rust-web-src lld-22 rust-web-clippy"
            ),
            "{fw}"
        );
        assert!(fw.contains("rustup target add aarch64-unknown-none-softfloat"), "{fw}");
        let q = format!("{:#}", missing_qemu_error("qemu-system-aarch64 not found in PATH"));
        assert!(q.contains("Suites: bookworm-backports\\n"), "{q}");
        assert!(q.contains("> /etc/apt/sources.list.d/bookworm-backports.sources"), "{q}");
        assert!(
            q.contains(
                "apt-get install -y -t bookworm-backports --no-install-recommends qemu-system-arm"
            ),
            "{q}"
        );
    }

    #[test]
    fn debian_command_has_linker_flags_and_env() {
        let tc = FirmwareToolchain::Debian { version: "1.96.0".into(), has_clippy: true };
        let cmd = tc.cargo("build", Path::new("/tmp/fw"));
        assert_eq!(cmd.get_program(), DEBIAN_CARGO);
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        let get = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("RUSTC"), Some(Some(DEBIAN_RUSTC.into())));
        assert_eq!(get("RUSTUP_TOOLCHAIN"), Some(None), "must be cleared");
        let flags = get("RUSTFLAGS").unwrap().unwrap();
        assert!(flags.contains("linker=/usr/bin/ld.lld-22"), "{flags}");
        assert!(flags.contains("force-frame-pointers=yes"), "{flags}");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"-Zbuild-std=core,alloc".to_owned()));
        let clippy = tc.cargo("clippy", Path::new("/tmp/fw"));
        assert_eq!(clippy.get_program(), DEBIAN_CARGO_CLIPPY);
    }
}
