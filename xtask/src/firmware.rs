//! Building the aarch64 firmware (the simulated peer, warden, the test guest) and converting it
//! to flat images.

use crate::elf2bin::{Load, elf_to_flat};
use crate::toolchain::{self, FirmwareToolchain};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One firmware crate: how to select it, how it is loaded and what the output is called.
pub struct FirmwareCrate {
    pub package: &'static str,
    pub cargo_args: &'static [&'static str],
    pub bin_name: &'static str,
    pub output: &'static str,
    pub load: Load,
    /// Most bytes the loaded image may span (BSS and stack included), if bounded.
    pub max_mem_size: Option<u64>,
    /// The build embeds the simulated peer: cargo gets [`SIM_PEER_ENV`] naming its flat image,
    /// which must be built first.
    pub embeds_sim_peer: bool,
}

/// Environment variable naming the simulated peer's flat image for warden's build (read by
/// `build.rs` and `boards/qemu-virt/sim_peer.rs`).
pub const SIM_PEER_ENV: &str = "WARDEN_SIM_PEER";

/// The simulated peer program warden embeds (qemu-virt): linked and loaded at
/// `PROGRAM_IPA`, its image at most `PROGRAM_SIZE` bytes (the linker script checks that) and
/// its footprint, BSS and stack in the data window after it included, `PEER_FOOTPRINT`.
pub const SIM_PEER: FirmwareCrate = FirmwareCrate {
    package: "warden-sim-peer",
    cargo_args: &["--package", "warden-sim-peer", "--bins"],
    bin_name: "warden-sim-peer",
    output: "sim-peer.bin",
    load: Load::Fixed { base: warden_abi::peer::PROGRAM_IPA },
    max_mem_size: Some(PEER_FOOTPRINT),
    embeds_sim_peer: false,
};

pub const WARDEN: FirmwareCrate = FirmwareCrate {
    package: "warden",
    cargo_args: &["--package", "warden", "--features", "firmware", "--bin", "warden"],
    bin_name: "warden",
    output: "warden.bin",
    load: Load::SelfRelocatingImage,
    max_mem_size: None,
    embeds_sim_peer: true,
};

/// warden with its test-only switches (the vSMMU's G3 switch, docs/smmu.md): only the
/// guest-boot scenario runs it; `warden.bin` never has them.
pub const WARDEN_TEST_SWITCHES: FirmwareCrate = FirmwareCrate {
    package: "warden",
    cargo_args: &["--package", "warden", "--features", "firmware,test-switches", "--bin", "warden"],
    bin_name: "warden",
    output: "warden-test-switches.bin",
    load: Load::SelfRelocatingImage,
    max_mem_size: None,
    embeds_sim_peer: true,
};

/// warden with the per-trap instruction profile (`src/trap/profile.rs`): only `cargo xtask
/// bench`'s trap-profile run uses it; `warden.bin` never has it.
pub const WARDEN_TRAP_PROFILE: FirmwareCrate = FirmwareCrate {
    package: "warden",
    cargo_args: &["--package", "warden", "--features", "firmware,trap-profile", "--bin", "warden"],
    bin_name: "warden",
    output: "warden-trap-profile.bin",
    load: Load::SelfRelocatingImage,
    max_mem_size: None,
    embeds_sim_peer: true,
};

pub const TEST_GUEST: FirmwareCrate = FirmwareCrate {
    package: "warden-test-guest",
    cargo_args: &["--package", "warden-test-guest", "--bins"],
    bin_name: "warden-test-guest",
    output: "test-guest.bin",
    load: Load::SelfRelocatingImage,
    max_mem_size: None,
    embeds_sim_peer: false,
};

/// tz-sim, the EL3 firmware QEMU runs as `-bios` (`boards/qemu-virt/tz-sim`): linked at the
/// secure flash's base, BSS and stacks in the secure SRAM.
pub const TZ_SIM: FirmwareCrate = FirmwareCrate {
    package: "warden-tz-sim",
    cargo_args: &["--package", "warden-tz-sim", "--features", "firmware", "--bin", "tz-sim"],
    bin_name: "tz-sim",
    output: "tz-sim.bin",
    load: Load::Fixed { base: tz_sim::layout::FLASH_BASE },
    max_mem_size: None,
    embeds_sim_peer: false,
};

/// tz-probe, the EL2 program that checks tz-sim from the hyp image's place (the `tz-sim`
/// scenario).
pub const TZ_PROBE: FirmwareCrate = FirmwareCrate {
    package: "warden-tz-sim",
    cargo_args: &["--package", "warden-tz-sim", "--features", "firmware", "--bin", "tz-probe"],
    bin_name: "tz-probe",
    output: "tz-probe.bin",
    load: Load::Fixed { base: tz_sim::layout::HYP_BASE },
    max_mem_size: None,
    embeds_sim_peer: false,
};

/// From the peer's first byte to the end of its data window.
pub const PEER_FOOTPRINT: u64 =
    warden_abi::peer::DATA_IPA + warden_abi::peer::DATA_SIZE - warden_abi::peer::PROGRAM_IPA;

/// Every firmware crate, in build order: the simulated peer before warden, which embeds it.
pub const ALL: [&FirmwareCrate; 6] =
    [&SIM_PEER, &WARDEN, &WARDEN_TEST_SWITCHES, &TEST_GUEST, &TZ_SIM, &TZ_PROBE];

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

pub(crate) fn append_to(log: &Path) -> Result<std::fs::File> {
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

/// Absolute path of the simulated peer's flat image (what [`SIM_PEER_ENV`] names).
pub fn sim_peer_image() -> PathBuf {
    output_dir().join(SIM_PEER.output)
}

/// `cargo <subcommand>` for `krate` (build or clippy), with the environment its build script
/// needs.
fn firmware_cargo(tc: &FirmwareToolchain, subcommand: &str, krate: &FirmwareCrate) -> Command {
    let mut cmd = tc.cargo(subcommand, &firmware_target_dir());
    cmd.args(krate.cargo_args);
    if krate.embeds_sim_peer {
        cmd.env(SIM_PEER_ENV, sim_peer_image());
    }
    cmd
}

/// Builds one firmware crate and returns its ELF path. A crate that embeds the simulated peer
/// needs [`sim_peer_image`] built first.
pub fn build_elf(
    tc: &FirmwareToolchain,
    krate: &FirmwareCrate,
    log: Option<&Path>,
    env: &[(&str, &Path)],
) -> Result<PathBuf> {
    let mut cmd = firmware_cargo(tc, "build", krate);
    cmd.envs(env.iter().copied());
    cmd.arg("--message-format=json-render-diagnostics");
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

/// Builds, converts and writes one firmware crate (and first the simulated peer if the crate
/// embeds it); returns the flat binary path.
pub fn build_one(tc: &FirmwareToolchain, krate: &FirmwareCrate) -> Result<PathBuf> {
    if krate.embeds_sim_peer {
        build(tc, &SIM_PEER, None)?;
    }
    build(tc, krate, None)
}

/// Builds only `krate`, with cargo's diagnostics appended to `log`. Callers go through [`ALL`],
/// whose order builds the simulated peer before the crate embedding it.
pub fn build_one_logged(
    tc: &FirmwareToolchain,
    krate: &FirmwareCrate,
    log: &Path,
) -> Result<PathBuf> {
    build(tc, krate, Some(log))
}

fn build(tc: &FirmwareToolchain, krate: &FirmwareCrate, log: Option<&Path>) -> Result<PathBuf> {
    build_with_env(tc, krate, log, &[])
}

/// [`build_one_logged`] (diagnostics to the terminal without `log`) with extra environment
/// variables for cargo (warden for `qemu-virt-tz` names the DT it links).
pub fn build_with_env(
    tc: &FirmwareToolchain,
    krate: &FirmwareCrate,
    log: Option<&Path>,
    env: &[(&str, &Path)],
) -> Result<PathBuf> {
    let elf_path = build_elf(tc, krate, log, env)?;
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let flat = elf_to_flat(&elf, krate.load)
        .with_context(|| format!("converting {} to a flat image", elf_path.display()))?;
    check_size(krate, flat.mem_size)?;
    let flat = flat.bytes;
    let out = output_dir().join(krate.output);
    std::fs::create_dir_all(output_dir())?;
    std::fs::write(&out, &flat).with_context(|| format!("writing {}", out.display()))?;
    if log.is_none() {
        eprintln!("xtask: wrote {} ({} bytes)", out.display(), flat.len());
    }
    Ok(out)
}

/// Fails if the loaded image (`mem_size` bytes from its load address) exceeds the crate's bound.
fn check_size(krate: &FirmwareCrate, mem_size: u64) -> Result<()> {
    match krate.max_mem_size {
        Some(max) if mem_size > max => bail!(
            "{} spans {mem_size:#x} bytes once loaded (code, data, BSS and stack), more than \
             the {max:#x} bytes it may use",
            krate.package
        ),
        _ => Ok(()),
    }
}

/// `cargo xtask build`: every firmware crate, then the chain's images (the OS's DT and warden
/// for `qemu-virt-tz`, `crate::chain`). Builds all of them even if one fails, then reports every
/// failure.
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
    let chain = toolchain::qemu().and_then(|qemu| {
        crate::chain::build_chain_images(tc, &qemu.path, crate::qemu::Gic::V3, None)
    });
    match chain {
        Ok(images) => {
            eprintln!("xtask: wrote {} (the OS's DT it links)", images.dtb.display());
            built.push(images.hyp_image);
        }
        Err(e) => errors.push(format!("chain images (qemu-virt-tz): {e:#}")),
    }
    if !errors.is_empty() {
        bail!("firmware build failed:\n  {}", errors.join("\n  "));
    }
    Ok(built)
}

/// `cargo clippy` over the firmware crates for the aarch64 target with `-D warnings`: every
/// crate of [`ALL`], and the bench's trap-profile image (whose marks only that feature
/// compiles).
pub fn clippy_commands(tc: &FirmwareToolchain) -> Vec<(&'static FirmwareCrate, Command)> {
    ALL.iter()
        .copied()
        .chain([&WARDEN_TRAP_PROFILE])
        .map(|krate| (krate, clippy_command(tc, krate)))
        .collect()
}

/// `cargo clippy` of one firmware crate with `-D warnings`.
pub fn clippy_command(tc: &FirmwareToolchain, krate: &FirmwareCrate) -> Command {
    let mut cmd = firmware_cargo(tc, "clippy", krate);
    cmd.args(["--", "-D", "warnings"]).current_dir(repo_root());
    cmd
}

/// `cargo clippy` of warden for `qemu-virt-tz` (after the chain's build wrote the DT it links).
pub fn hyp_clippy_command(tc: &FirmwareToolchain) -> Command {
    let mut cmd = clippy_command(tc, &crate::chain::WARDEN_HYP);
    cmd.env(crate::chain::HYP_DT_ENV, crate::chain::hyp_dt_path());
    cmd
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

    #[test]
    fn the_peer_is_built_first_and_bounded() {
        assert_eq!(ALL.first().map(|k| k.package), Some(SIM_PEER.package));
        let embeds: Vec<_> = ALL.iter().map(|k| k.embeds_sim_peer).collect();
        assert_eq!(embeds, [false, true, true, false, false, false]);
        assert!(WARDEN_TEST_SWITCHES.cargo_args.contains(&"firmware,test-switches"));
        assert!(!WARDEN.cargo_args.iter().any(|a| a.contains("test-switches")));
        assert_ne!(WARDEN.output, WARDEN_TEST_SWITCHES.output);
        assert_eq!(SIM_PEER.load, Load::Fixed { base: warden_abi::peer::PROGRAM_IPA });
        assert!(check_size(&SIM_PEER, PEER_FOOTPRINT).is_ok());
        let err = check_size(&SIM_PEER, PEER_FOOTPRINT + 1).unwrap_err();
        assert!(format!("{err}").contains("warden-sim-peer spans 0x14001 bytes"), "{err}");
        assert!(check_size(&WARDEN, u64::MAX).is_ok());
        assert!(sim_peer_image().is_absolute());
    }

    #[test]
    fn warden_builds_and_lints_with_the_peer_image_named() {
        let tc = FirmwareToolchain::Debian { version: "1.96.0".into(), has_clippy: true };
        for sub in ["build", "clippy"] {
            let env_of = |krate: &FirmwareCrate| {
                firmware_cargo(&tc, sub, krate)
                    .get_envs()
                    .find(|(k, _)| *k == SIM_PEER_ENV)
                    .and_then(|(_, v)| v.map(PathBuf::from))
            };
            assert_eq!(env_of(&WARDEN), Some(sim_peer_image()));
            assert_eq!(env_of(&TEST_GUEST), None);
        }
    }
}
