//! The Linux test host's own user-space program, `tests/linux/dma-after-donate` (the
//! `dma-after-donate` scenario: VFIO + QEMU's `edu`, which busybox cannot drive because it
//! needs ioctls and mmap).
//!
//! Built with the firmware toolchain (no other compiler is needed on a fresh machine) for
//! `aarch64-unknown-none-softfloat`: Rust only sees a bare-metal target, the program brings its
//! own `_start` and makes raw `svc #0` system calls, and its `build.rs` links it as a static,
//! non-PIE ELF at 0x400000, which Linux runs like any other static executable. Its RUSTFLAGS
//! differ from the firmware's (no PIE), so it gets a target directory of its own
//! (`target/linux-tool`) and the firmware's core/alloc builds are not invalidated.

use crate::firmware::{append_to, executables_from_messages, repo_root};
use crate::toolchain::FirmwareToolchain;
use anyhow::{Context, Result, bail, ensure};
use object::LittleEndian;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo package.
pub const PACKAGE: &str = "warden-dma-after-donate";
/// The executable's name, and its name in the initramfs (`/bin/dma-after-donate`).
pub const BIN: &str = "dma-after-donate";

/// RUSTFLAGS of the program: a static executable, not position independent (the target's
/// default relocation model), frame pointers for readable backtraces in a debugger.
pub const RUSTFLAGS: &[&str] = &["-C", "force-frame-pointers=yes"];

pub fn target_dir() -> PathBuf {
    repo_root().join("target/linux-tool")
}

fn cargo(tc: &FirmwareToolchain, subcommand: &str) -> Command {
    let mut cmd = tc.cargo_with_rustflags(subcommand, &target_dir(), RUSTFLAGS);
    cmd.args(["--package", PACKAGE, "--bins"]).current_dir(repo_root());
    cmd
}

/// Builds the program and checks it is what Linux can run; returns the ELF. Cargo's
/// diagnostics go to `log` if given, else to the terminal.
pub fn build(tc: &FirmwareToolchain, log: Option<&Path>) -> Result<PathBuf> {
    let mut cmd = cargo(tc, "build");
    cmd.arg("--message-format=json-render-diagnostics").stdin(Stdio::null()).stdout(Stdio::piped());
    match log {
        Some(log) => cmd.stderr(append_to(log)?),
        None => cmd.stderr(Stdio::inherit()),
    };
    let mut child = cmd.spawn().with_context(|| format!("starting cargo to build {PACKAGE}"))?;
    let mut messages = String::new();
    child
        .stdout
        .take()
        .context("cargo stdout")?
        .read_to_string(&mut messages)
        .context("reading cargo output")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("building {PACKAGE} failed ({status})");
    }
    let elf = executables_from_messages(&messages)
        .into_iter()
        .find(|(name, _)| name == BIN)
        .map(|(_, path)| path)
        .with_context(|| format!("building {PACKAGE} produced no `{BIN}` executable"))?;
    let bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    check_static_executable(&bytes)
        .with_context(|| format!("{} is not runnable", elf.display()))?;
    Ok(elf)
}

/// `cargo clippy` of the program for its target with `-D warnings`.
pub fn clippy_command(tc: &FirmwareToolchain) -> Command {
    let mut cmd = cargo(tc, "clippy");
    cmd.args(["--", "-D", "warnings"]);
    cmd
}

/// What Linux needs to run the file as a static program: a little-endian AArch64 `ET_EXEC`
/// with loadable segments, its entry point inside an executable one, no interpreter and no
/// dynamic section (nothing would relocate it or load libraries).
pub fn check_static_executable(bytes: &[u8]) -> Result<()> {
    let file =
        ElfFile64::<LittleEndian>::parse(bytes).context("not a 64-bit little-endian ELF file")?;
    let endian = file.endian();
    let header = file.elf_header();
    ensure!(header.e_machine(endian) == elf::EM_AARCH64, "not an AArch64 ELF");
    ensure!(
        header.e_type(endian) == elf::ET_EXEC,
        "not a fixed-address executable (ET_EXEC): linked as a PIE or a shared object?"
    );
    let entry = header.e_entry(endian);
    let segments = header.program_headers(endian, bytes).context("reading program headers")?;
    let mut entry_in_code = false;
    let mut loads = 0;
    for ph in segments {
        match ph.p_type(endian) {
            elf::PT_INTERP => bail!("it asks for a dynamic loader (PT_INTERP)"),
            elf::PT_DYNAMIC => bail!("it has a dynamic section (PT_DYNAMIC)"),
            elf::PT_LOAD => {
                loads += 1;
                let start = ph.p_vaddr(endian);
                let end = start.saturating_add(ph.p_memsz(endian));
                ensure!(start >= 0x1_0000, "a segment at {start:#x} is below mmap_min_addr");
                if ph.p_flags(endian).0 & elf::PF_X.0 != 0 && (start..end).contains(&entry) {
                    entry_in_code = true;
                }
            }
            _ => {}
        }
    }
    ensure!(loads > 0, "no PT_LOAD segment");
    ensure!(entry_in_code, "the entry point {entry:#x} is not in an executable segment");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf2bin::tests::{Segment, build_elf, build_executable};

    #[test]
    fn only_static_fixed_address_aarch64_executables_pass() {
        let code = |vaddr| Segment { vaddr, data: vec![0; 64], memsz: 64 };
        let good = build_executable(&[code(0x40_0000)], 0x40_0010);
        check_static_executable(&good).unwrap();
        // The firmware's kind: ET_DYN (a PIE), which Linux would place at a random base.
        let err = format!(
            "{:#}",
            check_static_executable(&build_elf(&[code(0x40_0000)], &[])).unwrap_err()
        );
        assert!(err.contains("ET_EXEC"), "{err}");
        let err = format!(
            "{:#}",
            check_static_executable(&build_executable(&[code(0x40_0000)], 0x50_0000)).unwrap_err()
        );
        assert!(err.contains("entry point 0x500000"), "{err}");
        let err = format!(
            "{:#}",
            check_static_executable(&build_executable(&[code(0)], 0x10)).unwrap_err()
        );
        assert!(err.contains("below mmap_min_addr"), "{err}");
        assert!(check_static_executable(b"\x7fELF").is_err());
        assert!(check_static_executable(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn flags_and_names() {
        // Not the firmware's PIE flags: Linux would load a static PIE at a random base, and
        // nothing would apply its relocations.
        assert!(!RUSTFLAGS.iter().any(|f| f.contains("pie")));
        assert!(target_dir().ends_with("target/linux-tool"));
        let tc = FirmwareToolchain::Debian { version: "1.96.0".into(), has_clippy: true };
        let cmd = cargo(&tc, "build");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["--package", PACKAGE]), "{args:?}");
        let rustflags = cmd
            .get_envs()
            .find(|(k, _)| *k == "RUSTFLAGS")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(!rustflags.contains("pie"), "{rustflags}");
        assert!(rustflags.contains("linker=/usr/bin/ld.lld-22"), "{rustflags}");
    }
}
