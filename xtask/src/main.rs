//! `cargo xtask`: set up, build, pack, run and test warden. See README.md.

mod elf2bin;
mod fdt_edit;
mod firmware;
mod pack;
mod qemu;
mod scenario;
mod test_cmd;
mod toolchain;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, pack, run and test warden"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// What runs as the host under warden.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Host {
    /// The Rust test guest in tests/guest.
    Guest,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the firmware toolchain and QEMU if missing (needs root and apt-get).
    Setup,
    /// Build warden and the test guest: target/warden/{warden,test-guest}.bin.
    Build,
    /// Pack warden and a host payload into one bootable image.
    Pack {
        /// Host kernel (an arm64 Image).
        #[arg(long)]
        kernel: PathBuf,
        /// Optional initrd.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Kernel command line.
        #[arg(long)]
        append: Option<String>,
        /// warden flat binary (default: build warden now and use target/warden/warden.bin).
        #[arg(long)]
        warden: Option<PathBuf>,
        /// Output image.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build, pack and boot warden with a host in QEMU (console on stdio).
    Run {
        #[arg(long, value_enum, default_value_t = Host::Guest)]
        host: Host,
        #[arg(long, default_value_t = 2)]
        smp: u32,
        #[arg(long, default_value = "1G")]
        memory: String,
        /// Extra QEMU arguments (after `--`).
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
    /// Convert a firmware ELF (linked at 0) to a flat arm64 Image, with the build's checks.
    Elf2bin {
        elf: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Unit tests, lints, firmware build and QEMU scenarios; ends with `N passed, M failed`.
    Test,
}

fn run(host: Host, smp: u32, memory: String, qemu_args: Vec<String>) -> Result<ExitCode> {
    let qemu = toolchain::qemu()?;
    let tc = toolchain::firmware()?;
    let warden = firmware::build_one(tc, &firmware::WARDEN)?;
    let image = match host {
        Host::Guest => {
            let guest = firmware::build_one(tc, &firmware::TEST_GUEST)?;
            let image = firmware::output_dir().join("warden-test-guest.img");
            pack::pack_files(&warden, &guest, None, None, &image)?;
            image
        }
    };
    let mut machine = qemu::Machine::new(Some(image));
    machine.smp = smp;
    machine.memory = memory;
    machine.extra = qemu_args;
    let mut cmd = machine.command(&qemu.path);
    eprintln!("xtask: {} {}", qemu.path.display(), machine.args().join(" "));
    let status = cmd.status().context("starting QEMU")?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("xtask: QEMU ended by {status}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => {
            toolchain::firmware().and_then(|_| toolchain::qemu()).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Build => firmware::build_all().map(|_| ExitCode::SUCCESS),
        Cmd::Pack { kernel, initrd, append, warden, output } => (|| {
            let warden = match warden {
                Some(w) => w,
                None => firmware::build_one(toolchain::firmware()?, &firmware::WARDEN)?,
            };
            let len =
                pack::pack_files(&warden, &kernel, initrd.as_deref(), append.as_deref(), &output)?;
            eprintln!("xtask: wrote {} ({len} bytes)", output.display());
            Ok(ExitCode::SUCCESS)
        })(),
        Cmd::Elf2bin { elf, output } => (|| {
            let bytes =
                std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
            let flat = elf2bin::elf_to_flat_binary(&bytes)
                .with_context(|| format!("converting {}", elf.display()))?;
            std::fs::write(&output, &flat)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("xtask: wrote {} ({} bytes)", output.display(), flat.len());
            Ok(ExitCode::SUCCESS)
        })(),
        Cmd::Run { host, smp, memory, qemu_args } => run(host, smp, memory, qemu_args),
        Cmd::Test => test_cmd::run_all()
            .map(|t| if t.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
