//! `cargo xtask`: set up, build, pack, run and test warden. See README.md.

mod bench;
mod bench_linux;
mod board_dtbs;
mod bootdisk;
mod chain;
mod chainboot;
mod cpio;
mod elf2bin;
mod firmware;
mod fuzz;
mod image;
mod initramfs;
mod linux;
mod linux_host;
mod linux_tool;
mod mbn;
mod mbn_check;
mod pack;
mod qemu;
mod scenario;
mod smmu_trace;
mod soak;
mod test_cmd;
mod toolchain;
mod uboot;

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
    /// Install the firmware toolchain, QEMU and Debian's U-Boot if missing (needs root and
    /// apt-get).
    Setup,
    /// Build warden and the test guest: target/warden/{warden,test-guest}.bin.
    Build,
    /// The Snapdragon boards' DTs from the pinned Debian kernel package, sha256-checked, into
    /// target/warden/board-dtbs/ (what the board unit tests read).
    BoardDtbs,
    /// warden for a Snapdragon board as a test-signed Qualcomm MBN
    /// (target/warden/images/warden-BOARD-PARTITION.mbn), checked after writing; refused when
    /// warden's footprint does not fit the board's region (docs/boards/BOARD.md).
    Image {
        /// qcs6490-rb3gen2, qrb5165-rb5 or apq8016-sbc.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(image::board_names()))]
        board: String,
        /// Only check this MBN file for the board (no build).
        #[arg(long)]
        check: Option<PathBuf>,
        /// The next stage warden chainloads at EL1, packed behind it (qcs6490-rb3gen2, which
        /// requires it: an arm64 Image such as U-Boot's qcs6490 u-boot.bin).
        #[arg(long, conflicts_with = "check")]
        next: Option<PathBuf>,
    },
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
        /// Pack the payload right after warden's file contents (smallest file; warden moves it
        /// at boot) instead of where it runs (docs/image-format.md).
        #[arg(long)]
        compact: bool,
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
        /// Only the handoff rows and the per-phase profiles of 64 KiB and 1 MiB transfers (for
        /// work on the handoff path; no trap, footprint or Linux rows):
        /// target/bench/report-handoffs.md.
        #[arg(long, conflicts_with_all = ["quick", "traps"])]
        handoffs: bool,
    },
}

/// `cargo xtask run` options.
#[derive(clap::Args)]
struct RunOptions {
    #[arg(long, value_enum, default_value_t = Host::Linux)]
    host: Host,
    /// CPUs the host gets (default 2); a run with warden gives QEMU one more, the simulated
    /// peer's. `--chain` has the 3 its DT was made for (no simulated peer), `--chain
    /// --no-warden` 1.
    #[arg(long)]
    smp: Option<u32>,
    /// RAM (default 1G; `--chain` sets its own, 4G).
    #[arg(long)]
    memory: Option<String>,
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
    /// Linux host: boot as on a board where warden is a boot stage: tz-sim (EL3) -> warden
    /// (EL2) -> Debian's U-Boot (EL1) -> Linux from a disk image (docs/chain.md). With
    /// --no-warden, U-Boot takes warden's place and Linux runs at EL2, unmediated.
    #[arg(long)]
    chain: bool,
    /// Extra QEMU arguments (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

/// The host's CPUs when `--smp` is not given.
const DEFAULT_SMP: u32 = 2;
/// The machine's RAM when `--memory` is not given.
const DEFAULT_MEMORY: &str = "1G";

fn run(o: RunOptions) -> Result<ExitCode> {
    let qemu = toolchain::qemu()?;
    if o.chain {
        return run_chain(o, &qemu.path);
    }
    let smp = o.smp.unwrap_or(DEFAULT_SMP);
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
            let mut m = qemu::Machine::with_warden(image, smp);
            m.devices = qemu::test_guest_devices();
            m.memory = o.memory.unwrap_or_else(|| DEFAULT_MEMORY.into());
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
            opts.smp = smp;
            opts.memory = o.memory.unwrap_or_else(|| DEFAULT_MEMORY.into());
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

/// `run --chain`: Linux through tz-sim, the hyp stage and U-Boot (xtask/src/chainboot.rs).
fn run_chain(o: RunOptions, qemu: &std::path::Path) -> Result<ExitCode> {
    anyhow::ensure!(
        matches!(o.host, Host::Linux),
        "--chain boots Linux through U-Boot (drop --host guest)"
    );
    anyhow::ensure!(
        o.persona == Persona::Virt,
        "--chain: the persona is a word of the packed image's command line, which the chain \
         has not (drop --persona)"
    );
    anyhow::ensure!(
        o.memory.is_none(),
        "--chain sets the memory itself ({}: U-Boot relocates to the top of RAM, which must be \
         clear of warden's region; docs/chain.md)",
        chain::MEMORY
    );
    let mut opts = linux_host::HostOptions::new(linux_host::default_work_dir());
    opts.kernel = o.kernel;
    opts.initrd = o.initrd;
    opts.append = o.append;
    opts.series = o.kernel_version;
    opts.memory = chain::MEMORY.into();
    opts.with_warden = !o.no_warden;
    opts.gic = o.gic;
    opts.shell = std::io::stdin().is_terminal();
    let tc = toolchain::firmware()?;
    let (hyp, tz_sim) = if o.no_warden {
        // tz-sim enters every CPU it powers on at HYP_BASE, where U-Boot sits without warden:
        // only warden sends a CPU on to the entry the OS asked for.
        anyhow::ensure!(
            o.smp.is_none_or(|n| n == 1),
            "--chain --no-warden runs 1 CPU: tz-sim enters every CPU it powers on at the hyp \
             image's address, where U-Boot sits in warden's place, and only warden sends it on \
             to the entry Linux asked for"
        );
        opts.smp = 1;
        eprintln!(
            "xtask: --chain --no-warden: tz-sim -> U-Boot at {:#x} (EL2, in warden's place) -> \
             Linux at EL2; warden does not run",
            tz_sim::layout::HYP_BASE
        );
        (chainboot::HypStage::None, firmware::build_one(tc, &firmware::TZ_SIM)?)
    } else {
        // warden links the OS's DT, made for exactly the chain's machine: its CPU count.
        anyhow::ensure!(
            o.smp.is_none_or(|n| n == chain::SMP),
            "--chain runs the {} CPUs of the machine warden's linked DT was made for \
             (chain::SMP)",
            chain::SMP
        );
        opts.smp = chain::SMP;
        let images = chain::build_chain_images(tc, qemu, o.gic, None)?;
        eprintln!(
            "xtask: --chain: tz-sim -> warden at {:#x} (EL2, {}) -> U-Boot at {:#x} (EL1) -> \
             Linux at EL1 ({} CPUs, DT {})",
            chain::HYP_BASE,
            images.hyp_image.display(),
            chain::NEXT_STAGE,
            chain::SMP,
            images.dtb.display()
        );
        let tz_sim = images.tz_sim.clone();
        (chainboot::HypStage::Warden(images), tz_sim)
    };
    let chain = chainboot::linux(qemu, &tz_sim, &opts, &hyp, "run-chain")?;
    eprintln!(
        "xtask: boot disk {} (extlinux.conf: append {})",
        chain.boot_disk.display(),
        chain.cmdline
    );
    let mut machine = chain.machine;
    machine.extra = o.qemu_args;
    let cmd = machine.command(qemu);
    let shown: Vec<String> = machine.args().iter().map(|a| qemu::shell_quote(a)).collect();
    eprintln!("xtask: {} {}", qemu.display(), shown.join(" "));
    if opts.shell {
        let status = { cmd }.status().context("starting QEMU")?;
        return Ok(exit_code(status));
    }
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
    let smp = o.smp.unwrap_or(DEFAULT_SMP);
    let cpus = smp + if o.no_warden { 0 } else { qemu::PEER_CPUS };
    anyhow::ensure!(
        cpus <= o.gic.max_cpus(),
        "--gic 2: QEMU's GICv2 takes at most {} CPUs; this run needs {cpus} (--smp {}{})",
        o.gic.max_cpus(),
        smp,
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
        Cmd::Setup => toolchain::firmware()
            .and_then(|_| toolchain::qemu())
            .and_then(|_| uboot::uboot())
            .map(|_| ExitCode::SUCCESS),
        Cmd::Build => firmware::build_all().map(|_| ExitCode::SUCCESS),
        Cmd::BoardDtbs => board_dtbs::provide().map(|_| ExitCode::SUCCESS),
        Cmd::Image { board, check: Some(file), .. } => {
            image::check_file(&board, &file).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Image { board, check: None, next } => {
            image::run(&board, next.as_deref()).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Pack { kernel, initrd, append, warden, compact, output } => (|| {
            let warden = match warden {
                Some(w) => w,
                None => firmware::build_one(toolchain::firmware()?, &firmware::WARDEN)?,
            };
            let placement =
                if compact { pack::Placement::Compact } else { pack::Placement::InPlace };
            let len = pack::pack_files_placed(
                &warden,
                &kernel,
                initrd.as_deref(),
                append.as_deref(),
                &output,
                placement,
            )?;
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
        Cmd::Bench { handoffs: true, .. } => bench::run_handoffs().map(|md| {
            print!("{md}");
            println!("\nxtask: wrote {}/report-handoffs.md", bench::output_dir().display());
            ExitCode::SUCCESS
        }),
        Cmd::Bench { quick, traps: false, handoffs: false } => bench::run(quick).map(|report| {
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
