//! `cargo xtask`: set up, build, pack, run and test warden. See README.md.

mod bench;
mod bench_linux;
mod board_dtbs;
mod chain;
mod cpio;
mod elf2bin;
mod firmware;
mod fuzz;
mod initramfs;
mod linux;
mod linux_host;
mod linux_tool;
mod pack;
mod qemu;
mod scenario;
mod smmu_trace;
mod soak;
mod test_cmd;
mod toolchain;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
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
    /// Debian's arm64 Linux with a busybox initramfs running tests/linux (see docs/linux-host.md).
    Linux,
    /// The Rust test guest in tests/guest.
    Guest,
}

/// What hardware warden presents to the host (`warden.persona=` on the packed command line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Persona {
    /// A virtual SMMUv3 and warden's ABI (QEMU's virt board as it is).
    #[default]
    Virt,
    /// A virtual Qualcomm MMU-500 (qcom,sc7280-smmu-500) and the qcom,scm firmware interface.
    Snapdragon,
}

impl Persona {
    /// The packed command-line word (`None` for the default).
    pub fn cmdline_word(self) -> Option<&'static str> {
        match self {
            Persona::Virt => None,
            Persona::Snapdragon => Some("warden.persona=snapdragon"),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the firmware toolchain and QEMU if missing (needs root and apt-get).
    Setup,
    /// Build warden and the test guest: target/warden/{warden,test-guest}.bin.
    Build,
    /// The Snapdragon boards' DTs from the pinned Debian kernel package, sha256-checked, into
    /// target/warden/board-dtbs/ (what the board unit tests read).
    BoardDtbs,
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
    Run(RunOptions),
    /// Convert a firmware ELF (linked at 0) to a flat arm64 Image, with the build's checks.
    Elf2bin {
        elf: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Unit tests, lints, firmware build and QEMU scenarios; ends with `N passed, M failed`.
    Test {
        /// Run only these QEMU scenarios (the firmware build included), skipping unit tests,
        /// lints and the fuzz smoke pass; may be repeated.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(test_cmd::ALL_SCENARIOS))]
        only: Vec<String>,
    },
    /// Check a QEMU SMMU trace (`-trace enable=smmuv3_cmdq_* ... -D FILE`, see
    /// docs/smmu.md): every ASID reused by a new context was invalidated and synced first.
    SmmuTrace {
        /// The trace log QEMU wrote.
        trace: PathBuf,
    },
    /// Coverage-guided fuzzing of the decoders of host input (cargo-fuzz, x86_64 nightly): one
    /// line per target with executions, coverage and crashes; non-zero exit on a crash.
    Fuzz {
        /// One target (default: all of them, one after the other).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60, conflicts_with = "runs")]
        seconds: u64,
        /// Executions per target instead of a time (e.g. 10000000).
        #[arg(long)]
        runs: Option<u64>,
        /// Instrumentation: AddressSanitizer (default) or coverage only (about 10x faster).
        #[arg(long, value_enum, default_value_t = fuzz::Sanitizer::Address)]
        sanitizer: fuzz::Sanitizer,
        /// Merge the inputs that added coverage into the committed corpus (fuzz/corpus/).
        #[arg(long)]
        save: bool,
    },
    /// Long runs, not part of `test` (see docs/soak.md): Linux IOMMU-group churn with
    /// whole-disk checks and QEMU's SMMU trace witness, then donate/reclaim cycles next to two
    /// hammering CPUs and edu DMA; target/soak/report.{md,json}; non-zero exit on any error.
    Soak {
        /// IOMMU-group cycles of the Linux part (0 skips it).
        #[arg(long, default_value_t = soak::DEFAULT_LINUX_CYCLES)]
        linux_cycles: u64,
        /// Donate/reclaim cycles of the test guest's stress part (0 skips it).
        #[arg(long, default_value_t = soak::DEFAULT_HANDOFF_CYCLES)]
        handoff_cycles: u64,
    },
    /// Instruction counts of warden's paths under QEMU -icount, and its memory footprint:
    /// target/bench/report.{md,json} and handoff.svg.
    Bench {
        /// One sample per row (a smoke test of the harness; the numbers mean little).
        #[arg(long)]
        quick: bool,
        /// Only the trap rows and the per-trap profile (for work on the trap path; no handoff,
        /// footprint or Linux rows): target/bench/report-traps.{md,json}.
        #[arg(long, conflicts_with = "quick")]
        traps: bool,
    },
}

/// `cargo xtask run` options.
#[derive(clap::Args)]
struct RunOptions {
    #[arg(long, value_enum, default_value_t = Host::Linux)]
    host: Host,
    /// CPUs the host gets; a run with warden gives QEMU one more, the simulated peer's.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    #[arg(long, default_value = "1G")]
    memory: String,
    /// Linux host: your own kernel (an arm64 Image) instead of Debian's.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Linux host: your own initrd instead of the one xtask builds.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Linux host: words appended to the kernel command line.
    #[arg(long)]
    append: Option<String>,
    /// Linux host: which Debian kernel to download (6.1 comes from bookworm).
    #[arg(long, value_enum, default_value_t = linux::Series::V6_12)]
    kernel_version: linux::Series,
    /// Linux host: boot Linux directly on a machine without EL2, no warden (the baseline).
    #[arg(long)]
    no_warden: bool,
    /// What warden presents to the host: `virt` (SMMUv3) or `snapdragon` (MMU-500 + SCM).
    #[arg(long, value_enum, default_value_t = Persona::Virt)]
    persona: Persona,
    /// QEMU virt's interrupt controller: GICv3 (with an ITS) or GICv2 (at most 8 CPUs, the
    /// simulated peer's included).
    #[arg(long, value_enum, default_value_t = qemu::Gic::V3)]
    gic: qemu::Gic,
    /// Extra QEMU arguments (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

fn run(o: RunOptions) -> Result<ExitCode> {
    let qemu = toolchain::qemu()?;
    let linux_only = o.kernel.is_some()
        || o.initrd.is_some()
        || o.append.is_some()
        || o.no_warden
        || o.persona != Persona::Virt
        || o.kernel_version != linux::Series::V6_12;
    check_gic(&o)?;
    let mut watch_done = false;
    let mut machine = match o.host {
        Host::Guest => {
            anyhow::ensure!(
                !linux_only,
                "--kernel, --initrd, --append, --kernel-version, --persona and --no-warden apply \
                 to the Linux host only (drop --host guest)"
            );
            let tc = toolchain::firmware()?;
            let warden = firmware::build_one(tc, &firmware::WARDEN)?;
            let guest = firmware::build_one(tc, &firmware::TEST_GUEST)?;
            let image = firmware::output_dir().join("warden-test-guest.img");
            pack::pack_files(&warden, &guest, None, None, &image)?;
            let mut m = qemu::Machine::with_warden(image, o.smp);
            m.devices = qemu::test_guest_devices();
            m.memory = o.memory;
            m.gic = o.gic;
            qemu::attach_warden_dt(&qemu.path, &mut m, "run-guest")?;
            m
        }
        Host::Linux => {
            let mut opts = linux_host::HostOptions::new(linux_host::default_work_dir());
            opts.kernel = o.kernel;
            opts.initrd = o.initrd;
            opts.append = o.append;
            opts.series = o.kernel_version;
            opts.smp = o.smp;
            opts.memory = o.memory;
            opts.with_warden = !o.no_warden;
            anyhow::ensure!(
                opts.with_warden || o.persona == Persona::Virt,
                "--persona needs warden (drop --no-warden)"
            );
            opts.persona = o.persona;
            opts.gic = o.gic;
            opts.shell = std::io::stdin().is_terminal();
            let warden = if opts.with_warden {
                Some(firmware::build_one(toolchain::firmware()?, &firmware::WARDEN)?)
            } else {
                None
            };
            let host = linux_host::prepare(&opts)?;
            watch_done = !opts.shell;
            if opts.shell {
                eprintln!(
                    "xtask: stdin is a terminal: a shell follows the demo (exit it to power off;                      Ctrl-A X quits QEMU)"
                );
            }
            let mut m = linux_host::machine(&host, warden.as_deref(), &opts)?;
            if warden.is_some() {
                qemu::attach_warden_dt(&qemu.path, &mut m, "run-linux")?;
            }
            m
        }
    };
    machine.extra = o.qemu_args;
    let mut cmd = machine.command(&qemu.path);
    let shown: Vec<String> = machine.args().iter().map(|a| qemu::shell_quote(a)).collect();
    eprintln!("xtask: {} {}", qemu.path.display(), shown.join(" "));
    if !watch_done {
        let status = cmd.status().context("starting QEMU")?;
        return Ok(exit_code(status));
    }
    // Non-interactive Linux host: `panic=-1` with `-no-reboot` also ends QEMU with status 0, so
    // success also needs /init's last line.
    let (status, done) = qemu::run_watching(cmd, "linux: done")?;
    if status.success() && !done {
        eprintln!("xtask: QEMU exited with status 0 but Linux never printed `linux: done`");
        return Ok(ExitCode::FAILURE);
    }
    Ok(exit_code(status))
}

/// What `--gic` allows: QEMU's GICv2 takes 8 CPUs; the Snapdragon persona's MMU-500 raises
/// SPIs 100..=108, which virt's GICv2m frame owns (48..=111) with a GICv2.
fn check_gic(o: &RunOptions) -> Result<()> {
    let cpus = o.smp + if o.no_warden { 0 } else { qemu::PEER_CPUS };
    anyhow::ensure!(
        cpus <= o.gic.max_cpus(),
        "--gic 2: QEMU's GICv2 takes at most {} CPUs; this run needs {cpus} (--smp {}{})",
        o.gic.max_cpus(),
        o.smp,
        if o.no_warden { "" } else { " plus the simulated peer's" }
    );
    anyhow::ensure!(
        !(o.gic == qemu::Gic::V2 && o.persona == Persona::Snapdragon),
        "--persona snapdragon needs --gic 3: its MMU-500 interrupts (SPIs 100..=108) belong to \
         the GICv2m frame on a GICv2 virt board"
    );
    Ok(())
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("xtask: QEMU ended by {status}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => {
            toolchain::firmware().and_then(|_| toolchain::qemu()).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Build => firmware::build_all().map(|_| ExitCode::SUCCESS),
        Cmd::BoardDtbs => board_dtbs::provide().map(|_| ExitCode::SUCCESS),
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
        Cmd::Run(options) => run(options),
        Cmd::Bench { traps: true, .. } => bench::run_traps().map(|report| {
            print!("{}", bench::render_markdown(&report));
            println!("\nxtask: wrote {}/report-traps.{{md,json}}", bench::output_dir().display());
            ExitCode::SUCCESS
        }),
        Cmd::Bench { quick, traps: false } => bench::run(quick).map(|report| {
            print!("{}", bench::render_markdown(&report));
            println!(
                "\nxtask: wrote {}/report.{{md,json}} and handoff.svg",
                bench::output_dir().display()
            );
            ExitCode::SUCCESS
        }),
        Cmd::SmmuTrace { trace } => smmu_trace::check_file(&trace).map(|w| {
            println!("{}", w.summary());
            for v in &w.violations {
                println!("violation: {v}");
            }
            if w.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }),
        Cmd::Fuzz { target, seconds, runs, sanitizer, save } => {
            let budget = runs.map_or(fuzz::Budget::Seconds(seconds), fuzz::Budget::Runs);
            fuzz::run(target.as_deref(), budget, sanitizer, save)
                .map(|clean| if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Soak { linux_cycles, handoff_cycles } => {
            soak::run(soak::Options { linux_cycles, handoff_cycles }).map(|report| {
                if report.errors() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            })
        }
        Cmd::Test { only } => test_cmd::run_all(&only)
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
