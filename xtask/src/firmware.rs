//! Building the aarch64 firmware (warden and the test guest) and converting it to flat images.

use crate::elf2bin::elf_to_flat_binary;
use crate::toolchain::{self, FirmwareToolchain};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One firmware crate: how to select it and what the output is called.
pub struct FirmwareCrate {
    pub package: &'static str,
    pub cargo_args: &'static [&'static str],
    pub bin_name: &'static str,
    pub output: &'static str,
}

pub const WARDEN: FirmwareCrate = FirmwareCrate {
    package: "warden",
    cargo_args: &["--package", "warden", "--features", "firmware", "--bin", "warden"],
    bin_name: "warden",
    output: "warden.bin",
};

pub const TEST_GUEST: FirmwareCrate = FirmwareCrate {
    package: "warden-test-guest",
    cargo_args: &["--package", "warden-test-guest", "--bins"],
    bin_name: "warden-test-guest",
    output: "test-guest.bin",
};

pub const ALL: [&FirmwareCrate; 2] = [&WARDEN, &TEST_GUEST];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo").to_owned()
}

pub fn firmware_target_dir() -> PathBuf {
    repo_root().join("target/firmware")
}

pub fn output_dir() -> PathBuf {
    repo_root().join("target/warden")
}

/// Extracts the executables cargo reported in its JSON messages.
pub fn executables_from_messages(stdout: &str) -> Vec<(String, PathBuf)> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            let exe = msg["executable"].as_str()?;
            let name = msg["target"]["name"].as_str()?;
            Some((name.to_owned(), PathBuf::from(exe)))
        })
        .collect()
}

fn append_to(log: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))
}

/// Runs a command with stdout and stderr appended to `log`; returns whether it succeeded.
pub fn run_appending(mut cmd: Command, log: &Path) -> Result<bool> {
    let file = append_to(log)?;
    cmd.current_dir(repo_root()).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    let status = cmd.status().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(status.success())
}

/// Runs a firmware cargo command; diagnostics go to the terminal, or are appended to `log`.
/// Returns the built executables.
fn run_cargo(mut cmd: Command, log: Option<&Path>) -> Result<Vec<(String, PathBuf)>> {
    cmd.current_dir(repo_root()).stdin(Stdio::null()).stdout(Stdio::piped());
    match log {
        Some(log) => cmd.stderr(append_to(log)?),
        None => cmd.stderr(Stdio::inherit()),
    };
    let mut child = cmd.spawn().context("starting cargo for the firmware")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut collected = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        collected.push_str(&line);
        collected.push('\n');
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo failed ({status})");
    }
    Ok(executables_from_messages(&collected))
}

/// Builds one firmware crate and returns its ELF path.
pub fn build_elf(
    tc: &FirmwareToolchain,
    krate: &FirmwareCrate,
    log: Option<&Path>,
) -> Result<PathBuf> {
    let mut cmd = tc.cargo("build", &firmware_target_dir());
    cmd.args(krate.cargo_args).arg("--message-format=json-render-diagnostics");
    let exes = run_cargo(cmd, log).with_context(|| format!("building {}", krate.package))?;
    // The crate's own binary name wins; a crate with a single differently named binary is
    // accepted too.
    let single = if exes.len() == 1 { exes.first().map(|(_, p)| p.clone()) } else { None };
    exes.iter()
        .find(|(name, _)| name == krate.bin_name)
        .map(|(_, p)| p.clone())
        .or(single)
        .with_context(|| {
            format!(
                "building {} produced no `{}` executable (does the crate have that binary?)",
                krate.package, krate.bin_name
            )
        })
}

/// Builds, converts and writes one firmware crate; returns the flat binary path.
pub fn build_one(tc: &FirmwareToolchain, krate: &FirmwareCrate) -> Result<PathBuf> {
    build(tc, krate, None)
}

/// Like [`build_one`], with cargo's diagnostics appended to `log`.
pub fn build_one_logged(
    tc: &FirmwareToolchain,
    krate: &FirmwareCrate,
    log: &Path,
) -> Result<PathBuf> {
    build(tc, krate, Some(log))
}

fn build(tc: &FirmwareToolchain, krate: &FirmwareCrate, log: Option<&Path>) -> Result<PathBuf> {
    let elf_path = build_elf(tc, krate, log)?;
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let flat = elf_to_flat_binary(&elf)
        .with_context(|| format!("converting {} to a flat image", elf_path.display()))?;
    let out = output_dir().join(krate.output);
    std::fs::create_dir_all(output_dir())?;
    std::fs::write(&out, &flat).with_context(|| format!("writing {}", out.display()))?;
    if log.is_none() {
        eprintln!("xtask: wrote {} ({} bytes)", out.display(), flat.len());
    }
    Ok(out)
}

/// `cargo xtask build`: every firmware crate. Builds all of them even if one fails, then
/// reports every failure.
pub fn build_all() -> Result<Vec<PathBuf>> {
    let tc = toolchain::firmware()?;
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for krate in ALL {
        match build_one(tc, krate) {
            Ok(p) => built.push(p),
            Err(e) => errors.push(format!("{}: {e:#}", krate.package)),
        }
    }
    if !errors.is_empty() {
        bail!("firmware build failed:\n  {}", errors.join("\n  "));
    }
    Ok(built)
}

/// `cargo clippy` over the firmware crates for the aarch64 target with `-D warnings`.
pub fn clippy_commands(tc: &FirmwareToolchain) -> Vec<Command> {
    ALL.iter()
        .map(|krate| {
            let mut cmd = tc.cargo("clippy", &firmware_target_dir());
            cmd.args(krate.cargo_args).args(["--", "-D", "warnings"]).current_dir(repo_root());
            cmd
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"warden","kind":["lib"]},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"warden","kind":["bin"]},"executable":"/r/target/firmware/aarch64-unknown-none-softfloat/release/warden"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables_from_messages(messages),
            vec![(
                "warden".to_owned(),
                PathBuf::from("/r/target/firmware/aarch64-unknown-none-softfloat/release/warden")
            )]
        );
    }
}
