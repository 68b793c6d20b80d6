//! `cargo xtask test`: host tests, lints, firmware build, QEMU scenarios; one line per result and
//! a final `N passed, M failed`.

use crate::firmware::{self, repo_root};
use crate::qemu::{self, Captured, Ending, Machine};
use crate::scenario::{self, Verdict};
use crate::{chainboot, fuzz, linux_host, linux_tool, pack, smmu_trace, toolchain};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);
/// A Linux run (boot, scenarios, IOMMU-group churn, demo) under warden takes minutes under
/// TCG, and on a loaded machine over 300 s (one stopped there, in the churn of
/// `linux-snapdragon`) and over 600 s (a fresh-machine `cargo xtask test` at load 9 stopped
/// `linux-snapdragon` after its rmtfs story, still making progress). Only a hang should reach
/// this.
pub const LINUX_TIMEOUT: Duration = Duration::from_secs(900);
/// How long warden must stay halted after reporting a hostile DT.
const HALT_GRACE: Duration = Duration::from_secs(2);

/// Running totals and the printing of result lines.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

impl Tally {
    pub fn record(&mut self, verdict: &Verdict) {
        match &verdict.outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok   {}", verdict.name);
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {}: {why}", verdict.name);
            }
        }
    }
}

/// Result numbers of one test binary (`test result:` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    pub label: String,
    pub passed: usize,
    pub failed: usize,
    pub failed_names: Vec<String>,
}

/// Label for a `Running <src> (<path>)` or `Doc-tests <crate>` line.
fn binary_label(line: &str) -> Option<String> {
    let line = line.trim();
    if let Some(krate) = line.strip_prefix("Doc-tests ") {
        return Some(format!("{} doctests", krate.trim()));
    }
    let rest = line.strip_prefix("Running ")?;
    let (src, path) = rest.rsplit_once(" (")?;
    let file = Path::new(path.trim_end_matches(')')).file_name()?.to_string_lossy().into_owned();
    // target/debug/deps/<crate>-<hash>
    let krate = file.rsplit_once('-').map_or(file.as_str(), |(k, _)| k).to_owned();
    let src = src.strip_prefix("unittests ").unwrap_or(src);
    Some(format!("{krate} {src}"))
}

fn count_before(text: &str, word: &str) -> Option<usize> {
    let idx = text.find(word)?;
    text[..idx].split_whitespace().last()?.trim_end_matches(';').parse().ok()
}

/// Parses `cargo test` output (stdout and stderr interleaved).
pub fn parse_cargo_test(output: &str) -> Vec<TestBinary> {
    let mut out = Vec::new();
    let mut label = String::from("tests");
    let mut failed_names = Vec::new();
    for line in output.lines() {
        if let Some(l) = binary_label(line) {
            label = l;
            failed_names.clear();
        } else if let Some(name) =
            line.strip_prefix("test ").and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            failed_names.push(name.to_owned());
        } else if let Some(result) = line.trim().strip_prefix("test result: ") {
            out.push(TestBinary {
                label: label.clone(),
                passed: count_before(result, " passed").unwrap_or(0),
                failed: count_before(result, " failed").unwrap_or(0),
                failed_names: std::mem::take(&mut failed_names),
            });
        }
    }
    out
}

fn logs_dir() -> PathBuf {
    repo_root().join("target/xtask-logs")
}

/// Runs a command with stdout and stderr both going to `log`; returns success and the log text.
fn run_to_log(mut cmd: Command, log: &Path) -> Result<(bool, String)> {
    std::fs::create_dir_all(logs_dir())?;
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.current_dir(repo_root()).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    let status = cmd.status().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Ok((status.success(), text))
}

/// The lines worth showing from a failed tool run: `error...` lines with their `-->` location
/// and rustfmt's `Diff in` lines (at most `n`); the last `n` lines when there are none.
pub fn failure_summary(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut picked = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("error") || line.starts_with("Diff in ") {
            picked.push(*line);
            if let Some(next) = lines.get(i + 1).filter(|l| l.trim_start().starts_with("-->")) {
                picked.push(next);
            }
        }
    }
    if picked.is_empty() {
        return tail_text(text, n);
    }
    picked.truncate(n);
    picked.iter().map(|l| format!("\n       | {l}")).collect()
}

fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    scenario::tail(&lines, n).iter().map(|l| format!("\n       | {l}")).collect()
}

fn host_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

fn step(title: &str) {
    println!("== {title}");
}

/// Workspace members that only build for aarch64 bare metal (the Linux test program too: it
/// has its own `_start` and system calls): host `cargo test`/`clippy` skip them (the firmware
/// steps build and lint them).
const BARE_METAL_ONLY: [&str; 6] = [
    "--exclude",
    "warden-test-guest",
    "--exclude",
    "warden-sim-peer",
    "--exclude",
    crate::linux_tool::PACKAGE,
];

fn unit_tests(tally: &mut Tally) -> Result<()> {
    step("host unit tests: cargo test --workspace (bare-metal-only crates excluded)");
    let log = logs_dir().join("unit-tests.log");
    let mut cmd = host_cargo();
    cmd.args(["test", "--workspace"]).args(BARE_METAL_ONLY);
    // The board tests parse the real Snapdragon DTs: provide them, and make the tests fail
    // rather than skip if they are missing anyway.
    match crate::board_dtbs::provide() {
        Ok(dir) => {
            cmd.env("WARDEN_BOARD_DTBS", dir).env("WARDEN_REQUIRE_BOARD_DTBS", "1");
        }
        Err(e) => tally.record(&Verdict::fail("unit/board DTs", format!("{e:#}"))),
    }
    let (ok, text) = run_to_log(cmd, &log)?;
    let binaries = parse_cargo_test(&text);
    for bin in &binaries {
        let name = format!("unit/{}", bin.label);
        if bin.failed == 0 {
            tally.passed += bin.passed;
            println!("ok   {name}: {} passed", bin.passed);
        } else {
            tally.passed += bin.passed;
            tally.failed += bin.failed;
            println!(
                "FAIL {name}: {} of {} failed: {}",
                bin.failed,
                bin.passed + bin.failed,
                bin.failed_names.join(", ")
            );
        }
    }
    let counted_failures: usize = binaries.iter().map(|b| b.failed).sum();
    if !ok && counted_failures == 0 {
        tally.record(&Verdict::fail(
            "unit/cargo test",
            format!(
                "cargo test failed before running tests; see {}{}",
                log.display(),
                tail_text(&text, 20)
            ),
        ));
    }
    Ok(())
}

fn lint(tally: &mut Tally, name: &str, args: &[&str], log_name: &str) -> Result<()> {
    let log = logs_dir().join(log_name);
    let mut cmd = host_cargo();
    cmd.args(args);
    let (ok, text) = run_to_log(cmd, &log)?;
    let verdict = if ok {
        Verdict::pass(name)
    } else {
        Verdict::fail(name, format!("see {}{}", log.display(), failure_summary(&text, 20)))
    };
    tally.record(&verdict);
    Ok(())
}

/// The flat images the QEMU scenarios run.
struct Binaries {
    warden: PathBuf,
    /// warden with `test-switches`: for guest-boot only.
    warden_test_switches: PathBuf,
    guest: PathBuf,
    /// tz-sim (`-bios`) and the EL2 program that checks it.
    tz_sim: PathBuf,
    tz_probe: PathBuf,
    /// The chain's images (`None`: their build failed, reported as its own result).
    chain: Option<crate::chain::ChainImages>,
}

/// Firmware build and clippy; returns the flat binaries if the build succeeded.
fn firmware_steps(tally: &mut Tally) -> Result<Option<Binaries>> {
    step("firmware (aarch64-unknown-none-softfloat)");
    let tc = match toolchain::firmware() {
        Ok(tc) => tc,
        Err(e) => {
            tally.record(&Verdict::fail("firmware/build", format!("{e:#}")));
            return Ok(None);
        }
    };
    let log = logs_dir().join("firmware-build.log");
    std::fs::create_dir_all(logs_dir())?;
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for krate in firmware::ALL {
        match firmware::build_one_logged(tc, krate, &log) {
            Ok(p) => built.push(p),
            Err(e) => errors.push(format!("{}: {e:#}", krate.package)),
        }
    }
    let build_ok = errors.is_empty();
    if build_ok {
        tally.record(&Verdict::pass(
            "firmware/build (sim peer, warden, warden with test switches, test guest, tz-sim, tz-probe)",
        ));
    } else {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        tally.record(&Verdict::fail(
            "firmware/build (sim peer, warden, warden with test switches, test guest, tz-sim, tz-probe)",
            format!("{}; see {}{}", errors.join("; "), log.display(), failure_summary(&text, 20)),
        ));
    }
    // The chain's images: the OS's DT for qemu-virt-tz (QEMU's, edited by warden's DT code)
    // and warden built for that board, linking it.
    let chain_name = "firmware/build chain images (qemu-virt-tz DT, warden-hyp.bin)";
    let chain = if build_ok {
        let made = toolchain::qemu().and_then(|qemu| {
            crate::chain::build_chain_images(tc, &qemu.path, crate::qemu::Gic::V3, Some(&log))
        });
        match made {
            Ok(images) => {
                tally.record(&Verdict::pass(chain_name));
                Some(images)
            }
            Err(e) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                tally.record(&Verdict::fail(
                    chain_name,
                    format!("{e:#}; see {}{}", log.display(), failure_summary(&text, 20)),
                ));
                None
            }
        }
    } else {
        None
    };
    // The Linux host's program: built again (a no-op) when the linux scenario packs the
    // initramfs; a failure here names the compiler error instead of a `linux/setup` one.
    let tool_log = logs_dir().join("linux-tool-build.log");
    let _ = std::fs::remove_file(&tool_log);
    let tool_name = format!("firmware/build Linux test program ({})", linux_tool::BIN);
    match linux_tool::build(tc, Some(&tool_log)) {
        Ok(_) => tally.record(&Verdict::pass(tool_name)),
        Err(e) => {
            let text = std::fs::read_to_string(&tool_log).unwrap_or_default();
            tally.record(&Verdict::fail(
                tool_name,
                format!("{e:#}; see {}{}", tool_log.display(), failure_summary(&text, 20)),
            ));
        }
    }

    if tc.has_clippy() {
        let log = logs_dir().join("firmware-clippy.log");
        let _ = std::fs::remove_file(&log);
        let mut failures = Vec::new();
        for (krate, cmd) in firmware::clippy_commands(tc) {
            let ok = firmware::run_appending(cmd, &log)?;
            if !ok {
                failures.push(krate.package);
            }
        }
        if !firmware::run_appending(linux_tool::clippy_command(tc), &log)? {
            failures.push(linux_tool::PACKAGE);
        }
        if chain.is_some() && !firmware::run_appending(firmware::hyp_clippy_command(tc), &log)? {
            failures.push("warden (board qemu-virt-tz)");
        }
        let verdict = if failures.is_empty() {
            Verdict::pass("firmware/clippy -D warnings")
        } else {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Verdict::fail(
                "firmware/clippy -D warnings",
                format!(
                    "{} failed; see {}{}",
                    failures.join(", "),
                    log.display(),
                    tail_text(&text, 20)
                ),
            )
        };
        tally.record(&verdict);
    } else {
        println!("skip firmware/clippy: the firmware toolchain has no clippy");
    }
    Ok(match (build_ok, built.as_slice()) {
        (true, [_sim_peer, warden, warden_test_switches, guest, tz_sim, tz_probe]) => {
            Some(Binaries {
                warden: warden.clone(),
                warden_test_switches: warden_test_switches.clone(),
                guest: guest.clone(),
                tz_sim: tz_sim.clone(),
                tz_probe: tz_probe.clone(),
                chain,
            })
        }
        _ => None,
    })
}

pub fn report_timeout(scenario: &str, run: &Captured) {
    println!("     scenario {scenario}: QEMU ran {:.1} s", run.elapsed.as_secs_f64());
    if let Ending::TimedOut(t) = run.ending {
        println!(
            "     scenario {scenario} timed out after {} s; last 20 lines of output:",
            t.as_secs()
        );
        for line in scenario::tail(&run.lines, 20) {
            println!("       | {line}");
        }
    }
}

/// CPUs the test guest gets in guest-boot (QEMU has one more: the peer's).
const GUEST_HOST_CPUS: u32 = 2;
/// CPUs the test guest gets in handoff-stress: one handing a range over, two using the pages
/// next to it.
const STRESS_HOST_CPUS: u32 = 3;
/// handoff-stress's bound per donate/reclaim cycle, as the guest's own deadline
/// (`DEADLINE_MS_PER_CYCLE` in tests/guest/src/handoff_stress.rs): 10 000 cycles with three
/// busy CPUs take about a minute on an idle 2-core machine, 196 s on a loaded one.
pub const STRESS_MS_PER_CYCLE: u64 = 78;
/// What the run gets on top: boot, edu set-up, the hammers stopping, power-down.
const STRESS_MARGIN: Duration = Duration::from_secs(120);
/// The guest's cycles without a count on its command line (`DEFAULT_CYCLES` there).
pub const STRESS_DEFAULT_CYCLES: u64 = 10_000;

/// The bound on a stress run of `cycles` (900 s for the default 10 000).
pub fn stress_timeout(cycles: u64) -> Duration {
    STRESS_MARGIN + Duration::from_millis(cycles.saturating_mul(STRESS_MS_PER_CYCLE))
}

/// The packed command line of a stress run: `warden.stress` (the guest's default count) or
/// `warden.stress=N`.
pub fn stress_cmdline(cycles: Option<u64>) -> String {
    match cycles {
        Some(n) => format!("warden.stress={n}"),
        None => "warden.stress".into(),
    }
}

/// warden + the test guest in stress mode with `cycles` (None: the guest's default), three
/// host CPUs; QEMU's console goes to `log`, and `watch` sees every line as it comes.
pub fn run_handoff_stress(
    qemu: &Path,
    warden: &Path,
    guest: &Path,
    cycles: Option<u64>,
    log: &Path,
    watch: &dyn Fn(&str) -> bool,
) -> Result<Captured> {
    let image = firmware::output_dir().join(match cycles {
        Some(n) => format!("warden-test-guest-stress-{n}.img"),
        None => "warden-test-guest-stress.img".into(),
    });
    pack::pack_files(warden, guest, None, Some(&stress_cmdline(cycles)), &image)?;
    let mut machine = Machine::with_warden(image, STRESS_HOST_CPUS);
    machine.devices = crate::qemu::test_guest_devices();
    qemu::attach_warden_dt(qemu, &mut machine, "handoff-stress")?;
    let timeout = stress_timeout(cycles.unwrap_or(STRESS_DEFAULT_CYCLES));
    qemu::run_captured(machine.command(qemu), timeout, log, watch, Duration::ZERO)
}

fn scenario_guest_boot(qemu: &Path, image: &Path) -> Result<Vec<Verdict>> {
    let mut machine = Machine::with_warden(image.to_owned(), GUEST_HOST_CPUS);
    machine.devices = crate::qemu::test_guest_devices();
    qemu::attach_warden_dt(qemu, &mut machine, "guest-boot")?;
    let trace = logs_dir().join("qemu-guest-boot.smmu-trace.log");
    machine.extra.extend(smmu_trace::qemu_args(&trace));
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-guest-boot.log"),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout("guest-boot", &run);
    let mut verdicts = scenario::judge_guest_boot(&run);
    verdicts.extend(smmu_trace::judge_guest_boot(witness(&trace), &run.lines));
    Ok(verdicts)
}

/// warden (with the test switches) + the test guest on the Snapdragon persona: the MMU-500
/// scenarios (the FastRPC session-reuse race with G3 on and off), with QEMU's SMMU trace as the
/// outside witness.
fn scenario_guest_snapdragon(qemu: &Path, warden: &Path, guest: &Path) -> Result<Vec<Verdict>> {
    let image = firmware::output_dir().join("warden-test-switches-guest-snapdragon.img");
    let cmdline = crate::Persona::Snapdragon.cmdline_word();
    pack::pack_files(warden, guest, None, cmdline, &image)?;
    let mut machine = Machine::with_warden(image, GUEST_HOST_CPUS);
    machine.devices = crate::qemu::test_guest_devices();
    qemu::attach_warden_dt(qemu, &mut machine, "guest-snapdragon")?;
    let trace = logs_dir().join("qemu-guest-snapdragon.smmu-trace.log");
    machine.extra.extend(smmu_trace::qemu_args(&trace));
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-guest-snapdragon.log"),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout("guest-snapdragon", &run);
    let mut verdicts = scenario::judge_guest_snapdragon(&run);
    verdicts.extend(smmu_trace::judge_guest_g3(
        witness(&trace),
        &run.lines,
        "guest-snapdragon",
        "mmu500_fastrpc_session_reuse_is_flushed",
        "mmu500_fastrpc_session_reuse_without_g3_reads_stale",
    ));
    Ok(verdicts)
}

/// warden + the test guest in half the default RAM, handoff scenarios only (issue 11: the
/// board's carveouts used to sit outside any RAM under 1 GiB, and warden halted).
fn scenario_small_ram(qemu: &Path, warden: &Path, guest: &Path) -> Result<Vec<Verdict>> {
    let image = firmware::output_dir().join("warden-test-guest-small-ram.img");
    // Compact, unlike every other run: warden moves the guest out of its region at boot.
    pack::pack_files_placed(
        warden,
        guest,
        None,
        Some("warden.scenarios=handoff"),
        &image,
        pack::Placement::Compact,
    )?;
    let mut machine = Machine::with_warden(image, GUEST_HOST_CPUS);
    machine.devices = crate::qemu::test_guest_devices();
    machine.memory = scenario::SMALL_RAM.into();
    qemu::attach_warden_dt(qemu, &mut machine, "small-ram")?;
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-small-ram.log"),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout("small-ram", &run);
    Ok(scenario::judge_small_ram(&run))
}

/// warden + the test guest's board checks and handoff scenarios (`warden.scenarios=platform`)
/// on `gic`, with `host_cpus` CPUs for the host; `name` names the run's files.
fn run_platform_guest(
    qemu: &Path,
    warden: &Path,
    guest: &Path,
    name: &str,
    gic: crate::qemu::Gic,
    host_cpus: u32,
) -> Result<Captured> {
    let image = firmware::output_dir().join(format!("warden-test-guest-{name}.img"));
    pack::pack_files(warden, guest, None, Some("warden.scenarios=platform"), &image)?;
    let mut machine = Machine::with_warden(image, host_cpus);
    machine.devices = crate::qemu::test_guest_devices();
    machine.gic = gic;
    qemu::attach_warden_dt(qemu, &mut machine, name)?;
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join(format!("qemu-{name}.log")),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout(name, &run);
    Ok(run)
}

/// tz-sim as `-bios` with tz-probe where the hyp image goes, on each GIC (4 CPUs: as many as
/// QEMU's GICv2 takes is not needed, three secondaries show the pen and the PSCI cycle).
fn scenario_tz_sim(qemu: &Path, tz_sim: &Path, tz_probe: &Path) -> Result<Vec<Verdict>> {
    let mut verdicts = Vec::new();
    for gic in [crate::qemu::Gic::V3, crate::qemu::Gic::V2] {
        let name = match gic {
            crate::qemu::Gic::V3 => "gicv3",
            crate::qemu::Gic::V2 => "gicv2",
        };
        let mut machine = Machine::new(None);
        machine.bios = Some(tz_sim.to_owned());
        machine.gic = gic;
        machine.smp = 4;
        machine.devices = vec![
            "-device".into(),
            format!("loader,file={},addr={:#x}", tz_probe.display(), tz_sim::layout::HYP_BASE),
        ];
        let run = qemu::run_captured(
            machine.command(qemu),
            SCENARIO_TIMEOUT,
            &logs_dir().join(format!("qemu-tz-sim-{name}.log")),
            &|_| false,
            Duration::ZERO,
        )?;
        report_timeout(&format!("tz-sim/{name}"), &run);
        verdicts.extend(scenario::judge_tz_sim(name, &run));
    }
    Ok(verdicts)
}

/// The chain (issue 14): tz-sim → warden entered as the hyp image (`warden-hyp.bin`, board
/// `qemu-virt-tz`) → the test guest at the next stage's place, entered with no DT.
fn scenario_guest_chain(
    qemu: &Path,
    images: &crate::chain::ChainImages,
    guest: &Path,
) -> Result<Vec<Verdict>> {
    let mut machine = images.machine();
    machine.devices.extend(crate::chain::next_stage_loader(guest));
    machine.devices.extend(crate::qemu::test_guest_devices());
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-guest-chain.log"),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout("guest-chain", &run);
    Ok(scenario::judge_guest_chain(&run, crate::chain::SMP))
}

/// The chain with warden built to skip the host's unmap on a forwarded assign_mem
/// (`fault-injection-skip-assign-unmap`, its own image, built here for this scenario only):
/// tz-sim's XPU witness must catch it (`XPU: violation`), refuse, and the refusal reach the
/// guest with nothing changed.
fn scenario_chain_xpu_violation(
    qemu: &Path,
    images: &crate::chain::ChainImages,
    guest: &Path,
) -> Result<Vec<Verdict>> {
    let tc = toolchain::firmware()?;
    let log = logs_dir().join("firmware-build-fault-injection.log");
    let _ = std::fs::remove_file(&log);
    let hyp_image = crate::chain::build_skip_assign_unmap_image(tc, images, Some(&log))
        .with_context(|| format!("building the fault-injection image; see {}", log.display()))?;
    let faulty = crate::chain::ChainImages { hyp_image, ..images.clone() };
    let mut machine = faulty.machine();
    machine.devices.extend(crate::chain::next_stage_loader(guest));
    machine.devices.extend(crate::qemu::test_guest_devices());
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-chain-xpu-violation.log"),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout("chain-xpu-violation", &run);
    Ok(scenario::judge_chain_xpu_violation(&run))
}

/// warden-hyp whose linked DT reserves only half its region (`chain::with_half_reservation`):
/// it must refuse to start, say why, and halt before the next stage runs.
fn scenario_chain_refusal(qemu: &Path, images: &crate::chain::ChainImages) -> Result<Vec<Verdict>> {
    let (image, dtb) = crate::chain::with_half_reservation(
        &std::fs::read(&images.hyp_image)?,
        &std::fs::read(&images.dtb)?,
    )?;
    let image_path = logs_dir().join("warden-hyp-half-reserved.bin");
    let dtb_path = logs_dir().join("qemu-virt-tz-half-reserved.dtb");
    std::fs::write(&image_path, image)?;
    std::fs::write(&dtb_path, dtb)?;
    let refused =
        crate::chain::ChainImages { hyp_image: image_path, dtb: dtb_path, ..images.clone() };
    let mut machine = refused.machine();
    let guest = firmware::output_dir().join(firmware::TEST_GUEST.output);
    machine.devices.extend(crate::chain::next_stage_loader(&guest));
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-chain-refusal.log"),
        &scenario::is_chain_refusal_report,
        HALT_GRACE,
    )?;
    report_timeout("chain-refusal", &run);
    Ok(scenario::judge_chain_refusal(&run))
}

/// warden on `-machine virt,gic-version=2` (issue 14): GICv2, 3 host CPUs.
fn scenario_guest_gicv2(qemu: &Path, warden: &Path, guest: &Path) -> Result<Vec<Verdict>> {
    let run = run_platform_guest(qemu, warden, guest, "guest-gicv2", crate::qemu::Gic::V2, 3)?;
    Ok(scenario::judge_guest_gicv2(&run))
}

/// warden with more CPUs than its old fixed limit of 8 (issue 14: the board's limit).
fn scenario_many_cpus(qemu: &Path, warden: &Path, guest: &Path) -> Result<Vec<Verdict>> {
    let run = run_platform_guest(
        qemu,
        warden,
        guest,
        "many-cpus",
        crate::qemu::Gic::V3,
        scenario::MANY_CPUS_HOST,
    )?;
    Ok(scenario::judge_many_cpus(&run))
}

/// warden + the test guest in stress mode (`warden.stress`): `carveout_neighbours_never_fault`
/// on three host CPUs, the guest's default cycle count.
fn scenario_handoff_stress(qemu: &Path, warden: &Path, guest: &Path) -> Result<Vec<Verdict>> {
    let log = logs_dir().join("qemu-handoff-stress.log");
    let run = run_handoff_stress(qemu, warden, guest, None, &log, &|_| false)?;
    report_timeout("handoff-stress", &run);
    Ok(scenario::judge_handoff_stress(&run))
}

/// Replays QEMU's SMMU trace of a run and says what it saw.
pub fn witness(trace: &Path) -> Result<smmu_trace::Witness> {
    let witness = smmu_trace::check_file(trace)?;
    println!("     smmu trace {}: {}", trace.display(), witness.summary());
    Ok(witness)
}

/// `dtb` plus a `/reserved-memory` with two `no-map` regions that overlap by 1 MiB, high in the
/// 1 GiB of RAM at 0x4000_0000 (away from where QEMU puts the image and the DT). Written with
/// warden's own DT editor, which checks its input but, by design, not what the edit makes.
fn overlapping_reserved_memory(dtb: &[u8]) -> Result<Vec<u8>> {
    use warden::dt::{DtEdit, apply};
    use warden::mm::MemRange;
    let region = |base: u64| MemRange::new(base, base + 0x20_0000);
    let edit = DtEdit::new()
        .reserve_no_map("hostile-a", region(0x7000_0000))
        .reserve_no_map("hostile-b", region(0x7010_0000));
    apply(dtb, &edit).map_err(|e| anyhow::anyhow!("building the hostile DT: {e}"))
}

fn scenario_hostile_dt(qemu: &Path, image: &Path) -> Result<Vec<Verdict>> {
    let qemu_dtb = logs_dir().join("qemu-virt-dumped.dtb");
    let mut dump = Machine::new(None);
    dump.machine_extra = Some(format!("dumpdtb={}", qemu_dtb.display()));
    let (ok, text) = run_to_log(dump.command(qemu), &logs_dir().join("qemu-dumpdtb.log"))?;
    anyhow::ensure!(ok, "QEMU could not dump its DT:{}", tail_text(&text, 10));
    let original = std::fs::read(&qemu_dtb)?;
    let hostile = overlapping_reserved_memory(&original)?;
    let hostile_dtb = logs_dir().join("hostile-reserved-overlap.dtb");
    std::fs::write(&hostile_dtb, hostile)?;

    let mut machine = Machine::new(Some(image.to_owned()));
    machine.dtb = Some(hostile_dtb);
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-hostile-dt.log"),
        &scenario::is_overlap_report,
        HALT_GRACE,
    )?;
    report_timeout("hostile-dt", &run);
    let mut verdicts = scenario::judge_hostile_dt(&run);

    // A machine whose carveout outgrows warden's region: 4 GiB of RAM, 3 GiB of it a carveout,
    // whose split to pages and hand-over need more page-table frames than any pool warden
    // would be built with (1 540 frames each way: over 12 MiB). The boot must stop saying by how
    // much the region is too small (`mm::footprint`), before building any table.
    let mut dump = Machine::new(None);
    dump.memory = "4G".into();
    let big_qemu_dtb = logs_dir().join("qemu-virt-4g-dumped.dtb");
    dump.machine_extra = Some(format!("dumpdtb={}", big_qemu_dtb.display()));
    let (ok, text) = run_to_log(dump.command(qemu), &logs_dir().join("qemu-dumpdtb-4g.log"))?;
    anyhow::ensure!(ok, "QEMU could not dump its 4 GiB DT:{}", tail_text(&text, 10));
    let too_big = carveout_too_big_for_warden(&std::fs::read(&big_qemu_dtb)?)?;
    let too_big_dtb = logs_dir().join("hostile-carveout-too-big.dtb");
    std::fs::write(&too_big_dtb, too_big)?;
    let mut machine = Machine::new(Some(image.to_owned()));
    machine.memory = "4G".into();
    machine.dtb = Some(too_big_dtb);
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-hostile-dt-region.log"),
        &scenario::is_region_too_small_report,
        HALT_GRACE,
    )?;
    report_timeout("hostile-dt", &run);
    verdicts.extend(scenario::judge_region_too_small(&run));
    Ok(verdicts)
}

/// `dtb` (QEMU's, 4 GiB of RAM at 0x4000_0000) plus one donate-only carveout of 3 GiB for the
/// modem, from 1 GiB into RAM to its end.
fn carveout_too_big_for_warden(dtb: &[u8]) -> Result<Vec<u8>> {
    use warden::boards::carveouts::CarveoutSpec;
    use warden::dt::{DtEdit, apply};
    use warden::mm::MemRange;
    let spec = CarveoutSpec {
        name: "modem",
        range: MemRange::new(0x8000_0000, 0x1_4000_0000),
        peer: "modem",
        policy: "donate",
        clear_on_reclaim: false,
    };
    apply(dtb, &spec.add_to(DtEdit::new()))
        .map_err(|e| anyhow::anyhow!("building the DT with a 3 GiB carveout: {e}"))
}

/// warden loaded by a QEMU without EL2 (`virtualization=off`): it must say so and halt.
fn scenario_wrong_el(qemu: &Path, image: &Path) -> Result<Vec<Verdict>> {
    let mut machine = Machine::new(Some(image.to_owned()));
    machine.virtualization = false;
    let run = qemu::run_captured(
        machine.command(qemu),
        SCENARIO_TIMEOUT,
        &logs_dir().join("qemu-wrong-el.log"),
        &scenario::is_wrong_el_report,
        HALT_GRACE,
    )?;
    report_timeout("wrong-el", &run);
    Ok(scenario::judge_wrong_el(&run))
}

/// Every QEMU scenario, for `--only`.
pub const ALL_SCENARIOS: [&str; 21] = [
    "images",
    "tz-sim",
    "guest-chain",
    "chain-refusal",
    "linux-chain",
    "chain-xpu-violation",
    "guest-boot",
    "guest-snapdragon",
    "small-ram",
    "guest-gicv2",
    "many-cpus",
    "handoff-stress",
    "hostile-dt",
    "wrong-el",
    "linux",
    "linux-snapdragon",
    "linux-gicv2",
    "linux-no-warden",
    "linux-chain-no-warden",
    "linux-chain-gicv2",
    "bench-quick",
];
/// What `cargo xtask test` runs without `--only` (linux-no-warden is the baseline,
/// linux-gicv2 the `linux` scenario on `gic-version=2`, linux-chain-no-warden the chain boot
/// with U-Boot in warden's place and linux-chain-gicv2 `linux-chain` on `gic-version=2`, all
/// four on request).
const DEFAULT_SCENARIOS: [&str; 17] = [
    "images",
    "tz-sim",
    "guest-chain",
    "chain-refusal",
    "chain-xpu-violation",
    "linux-chain",
    "guest-boot",
    "guest-snapdragon",
    "small-ram",
    "guest-gicv2",
    "many-cpus",
    "handoff-stress",
    "hostile-dt",
    "wrong-el",
    "linux",
    "linux-snapdragon",
    "bench-quick",
];

/// A minimal arm64 Image whose code parks the CPU (`wfe; b .-4`): the next stage the images
/// scenario packs for a chainloading board.
fn parking_next_stage() -> Vec<u8> {
    let mut image = vec![0u8; 0x1000];
    // code0: branch past the 64-byte header.
    image[0..4].copy_from_slice(&(0x1400_0000u32 | (0x40 / 4)).to_le_bytes());
    image[16..24].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    image[24..32].copy_from_slice(&0xau64.to_le_bytes()); // LE, 4K pages, anywhere
    image[56..60].copy_from_slice(b"ARM\x64");
    image[0x40..0x44].copy_from_slice(&0xd503_205fu32.to_le_bytes()); // wfe
    image[0x44..0x48].copy_from_slice(&0x17ff_ffffu32.to_le_bytes()); // b .-4
    image
}

/// `cargo xtask image` for each Snapdragon board (warden built for it, the fit check, the MBN
/// written and read back by `mbn_check`): every board's image must fit its region (DB410c's
/// 1 MiB included) and be written and checked.
fn scenario_images() -> Vec<Verdict> {
    let log = logs_dir().join("images.log");
    let _ = std::fs::remove_file(&log);
    if let Err(e) = std::fs::create_dir_all(logs_dir()) {
        return vec![Verdict::fail(
            "images/setup",
            format!("creating {}: {e}", logs_dir().display()),
        )];
    }
    let mut verdicts = Vec::new();
    let parking = parking_next_stage();
    for image in &crate::image::BOARDS {
        let board = image.board.name;
        // A chainloading board's image is checked with a next stage that only parks its CPU
        // (what is under test is the packing and its check, not the next stage), and written
        // with the logs, not where `cargo xtask image` puts images to flash.
        let (next, out) = match image.chainloads() {
            true => (
                Some(parking.as_slice()),
                logs_dir().join(format!("warden-{board}-parking-next-stage.mbn")),
            ),
            false => (None, image.output()),
        };
        let made = crate::image::build_elf(image, Some(&log))
            .and_then(|elf| crate::image::pack(image, &elf, next, &out));
        verdicts.push(match made {
            Ok(made) => {
                // Stable result names (README lists them); the figures go on a line of their own.
                println!(
                    "     {board}: {} ({} bytes), footprint {}",
                    made.path.display(),
                    made.size,
                    made.footprint.describe()
                );
                Verdict::pass(format!("images/{board} (built, fits, MBN written and checked)"))
            }
            Err(e) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Verdict::fail(
                    format!("images/{board}"),
                    format!("{e:#}; see {}{}", log.display(), failure_summary(&text, 20)),
                )
            }
        });
    }
    verdicts
}

/// `cargo xtask bench --quick`: proves the bench harness runs end to end (every row measured
/// once, the reports written). Nothing about the numbers is asserted: timing belongs to the
/// bench itself.
fn scenario_bench_quick() -> Result<Vec<Verdict>> {
    let report = crate::bench::run(true)?;
    let rows = report.rows.len();
    let written = ["report.md", "report.json", "handoff.svg"]
        .iter()
        .all(|f| crate::bench::output_dir().join(f).is_file());
    Ok(vec![
        Verdict::check(&format!("bench-quick/{rows} rows measured"), rows > 0, || {
            "the bench guest printed no `bench` line".into()
        }),
        Verdict::check("bench-quick/reports written", written, || {
            format!("missing files in {}", crate::bench::output_dir().display())
        }),
    ])
}

/// Boots the Linux host (Debian 6.12, built initramfs, 2 CPUs) with or without warden, and
/// with warden on either persona (`linux-snapdragon`: the MMU-500 face and SCM).
fn scenario_linux(
    qemu: &Path,
    warden: Option<&Path>,
    persona: crate::Persona,
    gic: crate::qemu::Gic,
) -> Result<Vec<Verdict>> {
    let snapdragon = persona == crate::Persona::Snapdragon;
    let name = match (warden.is_some(), snapdragon, gic) {
        (false, _, _) => "linux-no-warden",
        (true, false, crate::qemu::Gic::V2) => "linux-gicv2",
        (true, false, crate::qemu::Gic::V3) => "linux",
        (true, true, _) => "linux-snapdragon",
    };
    let mut opts = linux_host::HostOptions::new(logs_dir().join(name));
    opts.with_warden = warden.is_some();
    opts.persona = persona;
    opts.gic = gic;
    let host = linux_host::prepare(&opts)?;
    let mut machine = linux_host::machine(&host, warden, &opts)?;
    let trace = logs_dir().join(format!("qemu-{name}.smmu-trace.log"));
    if warden.is_some() {
        qemu::attach_warden_dt(qemu, &mut machine, name)?;
        machine.extra.extend(smmu_trace::qemu_args(&trace));
    }
    let run = qemu::run_captured(
        machine.command(qemu),
        LINUX_TIMEOUT,
        &logs_dir().join(format!("qemu-{name}.log")),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout(name, &run);
    let done = run.lines.iter().any(|l| l.trim() == "linux: done");
    if !done && !matches!(run.ending, Ending::TimedOut(_)) {
        println!("     scenario {name}: no `linux: done`; last 20 lines of output:");
        for line in scenario::tail(&run.lines, 20) {
            println!("       | {line}");
        }
    }
    let mut verdicts = scenario::judge_linux_boot(&run, opts.smp, opts.with_warden);
    if warden.is_some() {
        verdicts.extend(smmu_trace::judge_linux(witness(&trace)));
    }
    if snapdragon {
        verdicts.extend(scenario::judge_snapdragon_probe(&run));
        verdicts.extend(scenario::judge_snapdragon_scm(&run));
    }
    if name != "linux" {
        for v in &mut verdicts {
            v.name = v.name.replacen("linux/", &format!("{name}/"), 1);
        }
    }
    Ok(verdicts)
}

/// The chain without warden, labelled as such: tz-sim → U-Boot at `HYP_BASE` (EL2, in warden's
/// place) → Linux at EL2 from the boot disk, one CPU (docs/chain.md). Proves tz-sim, U-Boot, the
/// disk and the DT hand-over; says nothing about warden. The `linux` judge's EL1 checks become
/// the EL2 this boot must show, and the CPU hotplug scenario, which needs a second CPU, is not
/// counted.
fn scenario_linux_chain_no_warden(qemu: &Path, tz_sim: &Path) -> Result<Vec<Verdict>> {
    let name = "linux-chain-no-warden";
    let mut opts = linux_host::HostOptions::new(logs_dir().join(name));
    opts.with_warden = false;
    opts.smp = 1;
    opts.memory = crate::chain::MEMORY.into();
    let chain = chainboot::linux(qemu, tz_sim, &opts, &chainboot::HypStage::None, name)?;
    let run = qemu::run_captured(
        chain.machine.command(qemu),
        LINUX_TIMEOUT,
        &logs_dir().join(format!("qemu-{name}.log")),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout(name, &run);
    if !run.lines.iter().any(|l| l.trim() == "linux: done") {
        println!("     scenario {name}: no `linux: done`; last 20 lines of output:");
        for line in scenario::tail(&run.lines, 20) {
            println!("       | {line}");
        }
    }
    const AT_EL1: &str = "linux/boot/kernel: CPU: All CPU(s) started at EL1";
    let mut verdicts: Vec<Verdict> = scenario::judge_linux_boot(&run, opts.smp, false)
        .into_iter()
        .filter(|v| !["linux/cpus-at-el1", "linux/cpu-hotplug", AT_EL1].contains(&v.name.as_str()))
        .collect();
    verdicts.push(Verdict::check(
        "linux/boot/kernel: CPU: All CPU(s) started at EL2 (no warden: U-Boot booted it at EL2)",
        run.lines.iter().any(|l| l.contains("CPU: All CPU(s) started at EL2")),
        || "no such kernel line".into(),
    ));
    verdicts.extend(scenario::judge_chain(
        &run,
        &scenario::ChainExpectations {
            prefix: "linux".into(),
            cmdline: chain.cmdline,
            no_map: Vec::new(),
            warden: false,
        },
    ));
    for v in &mut verdicts {
        v.name = v.name.replacen("linux/", &format!("{name}/"), 1);
    }
    Ok(verdicts)
}

/// The `linux` scenario through the chain with warden as the boot stage: tz-sim → warden
/// (`qemu-virt-tz`, `warden-hyp.bin` at `HYP_BASE`) → Debian's U-Boot at `NEXT_STAGE` (EL1) →
/// Linux from the boot disk, on all the chain's CPUs (docs/chain.md). Judged as `linux` is
/// (warden's banner required, QEMU's SMMU trace), plus [`scenario::judge_chain`] (the stages in
/// order, xtask's command line, every `no-map` region of the chain's DT reserved by Linux) and
/// [`scenario::judge_chain_cpus_and_power`]. What cannot hold there, and why, is
/// [`scenario::CHAIN_WITHOUT_PEER`]: `qemu-virt-tz` runs no simulated peer.
fn scenario_linux_chain(qemu: &Path, images: &crate::chain::ChainImages) -> Result<Vec<Verdict>> {
    let name = match images.gic {
        crate::qemu::Gic::V3 => "linux-chain",
        crate::qemu::Gic::V2 => "linux-chain-gicv2",
    };
    let mut opts = linux_host::HostOptions::new(logs_dir().join(name));
    opts.smp = crate::chain::SMP;
    opts.memory = crate::chain::MEMORY.into();
    opts.gic = images.gic;
    let hyp = chainboot::HypStage::Warden(images.clone());
    let mut chain = chainboot::linux(qemu, &images.tz_sim, &opts, &hyp, name)?;
    let trace = logs_dir().join(format!("qemu-{name}.smmu-trace.log"));
    chain.machine.extra.extend(smmu_trace::qemu_args(&trace));
    let run = qemu::run_captured(
        chain.machine.command(qemu),
        LINUX_TIMEOUT,
        &logs_dir().join(format!("qemu-{name}.log")),
        &|_| false,
        Duration::ZERO,
    )?;
    report_timeout(name, &run);
    if !run.lines.iter().any(|l| l.trim() == "linux: done") {
        println!("     scenario {name}: no `linux: done`; last 20 lines of output:");
        for line in scenario::tail(&run.lines, 20) {
            println!("       | {line}");
        }
    }
    let mut verdicts = scenario::without_sim_peer(scenario::judge_linux_boot(&run, opts.smp, true));
    verdicts.extend(smmu_trace::judge_linux(witness(&trace)));
    verdicts.extend(scenario::judge_chain(
        &run,
        &scenario::ChainExpectations {
            prefix: "linux".into(),
            cmdline: chain.cmdline,
            no_map: chainboot::no_map_regions(&images.dtb)?,
            warden: true,
        },
    ));
    verdicts.extend(scenario::judge_chain_cpus_and_power(&run, opts.smp, "linux"));
    for v in &mut verdicts {
        v.name = v.name.replacen("linux/", &format!("{name}/"), 1);
    }
    Ok(verdicts)
}

fn qemu_steps(tally: &mut Tally, binaries: Option<Binaries>, selected: &[&str]) -> Result<()> {
    step("QEMU scenarios");
    let not_run = |tally: &mut Tally, why: &str| {
        for s in selected {
            tally.record(&Verdict::fail(format!("{s}/not run"), why));
        }
    };
    let qemu = match toolchain::qemu() {
        Ok(q) => q,
        Err(e) => {
            not_run(tally, &format!("{e:#}"));
            return Ok(());
        }
    };
    let record = |tally: &mut Tally, name: &str, result: Result<Vec<Verdict>>| match result {
        Ok(verdicts) => verdicts.iter().for_each(|v| tally.record(v)),
        Err(e) => tally.record(&Verdict::fail(format!("{name}/setup"), format!("{e:#}"))),
    };
    // The baseline needs no firmware.
    if selected.contains(&"linux-no-warden") {
        let result = scenario_linux(&qemu.path, None, crate::Persona::Virt, crate::qemu::Gic::V3);
        record(tally, "linux-no-warden", result);
    }
    // The Snapdragon boards' MBNs: built from source, not from the flat binaries.
    if selected.contains(&"images") {
        scenario_images().iter().for_each(|v| tally.record(v));
    }
    let needs_firmware: Vec<&str> =
        selected.iter().copied().filter(|s| *s != "linux-no-warden" && *s != "images").collect();
    if needs_firmware.is_empty() {
        return Ok(());
    }
    let Some(Binaries { warden, warden_test_switches, guest, tz_sim, tz_probe, chain }) = binaries
    else {
        for s in &needs_firmware {
            tally.record(&Verdict::fail(format!("{s}/not run"), "firmware build failed"));
        }
        return Ok(());
    };
    let image = firmware::output_dir().join("warden-test-guest.img");
    let guest_image = pack::pack_files(&warden, &guest, None, None, &image);
    // guest-boot flips warden's test-only G3 switch: it runs the build that has it.
    let switches_image = firmware::output_dir().join("warden-test-switches-guest.img");
    let switches_guest_image =
        pack::pack_files(&warden_test_switches, &guest, None, None, &switches_image);
    for name in needs_firmware {
        let result = match (name, &guest_image) {
            ("linux", _) => scenario_linux(
                &qemu.path,
                Some(&warden),
                crate::Persona::Virt,
                crate::qemu::Gic::V3,
            ),
            ("linux-gicv2", _) => scenario_linux(
                &qemu.path,
                Some(&warden),
                crate::Persona::Virt,
                crate::qemu::Gic::V2,
            ),
            ("linux-snapdragon", _) => scenario_linux(
                &qemu.path,
                Some(&warden),
                crate::Persona::Snapdragon,
                crate::qemu::Gic::V3,
            ),
            ("bench-quick", _) => scenario_bench_quick(),
            ("tz-sim", _) => scenario_tz_sim(&qemu.path, &tz_sim, &tz_probe),
            ("guest-chain", _) => match &chain {
                Some(images) => scenario_guest_chain(&qemu.path, images, &guest),
                None => Err(anyhow::anyhow!("the chain's images were not built")),
            },
            ("chain-refusal", _) => match &chain {
                Some(images) => scenario_chain_refusal(&qemu.path, images),
                None => Err(anyhow::anyhow!("the chain's images were not built")),
            },
            ("chain-xpu-violation", _) => match &chain {
                Some(images) => scenario_chain_xpu_violation(&qemu.path, images, &guest),
                None => Err(anyhow::anyhow!("the chain's images were not built")),
            },
            ("linux-chain-no-warden", _) => scenario_linux_chain_no_warden(&qemu.path, &tz_sim),
            ("linux-chain", _) => match &chain {
                Some(images) => scenario_linux_chain(&qemu.path, images),
                None => Err(anyhow::anyhow!("the chain's images were not built")),
            },
            // The GICv2 chain's images are built only when asked for (their own DT and warden).
            ("linux-chain-gicv2", _) => toolchain::firmware()
                .and_then(|tc| {
                    let log = logs_dir().join("firmware-build.log");
                    crate::chain::build_chain_images(
                        tc,
                        &qemu.path,
                        crate::qemu::Gic::V2,
                        Some(&log),
                    )
                })
                .and_then(|images| scenario_linux_chain(&qemu.path, &images)),
            (_, Err(e)) => Err(anyhow::anyhow!("packing warden with the test guest: {e:#}")),
            ("guest-boot", Ok(_)) => match &switches_guest_image {
                Ok(_) => scenario_guest_boot(&qemu.path, &switches_image),
                Err(e) => Err(anyhow::anyhow!("packing warden-test-switches: {e:#}")),
            },
            ("small-ram", Ok(_)) => scenario_small_ram(&qemu.path, &warden, &guest),
            ("guest-gicv2", Ok(_)) => scenario_guest_gicv2(&qemu.path, &warden, &guest),
            ("many-cpus", Ok(_)) => scenario_many_cpus(&qemu.path, &warden, &guest),
            ("guest-snapdragon", Ok(_)) => {
                scenario_guest_snapdragon(&qemu.path, &warden_test_switches, &guest)
            }
            ("handoff-stress", Ok(_)) => scenario_handoff_stress(&qemu.path, &warden, &guest),
            ("hostile-dt", Ok(_)) => scenario_hostile_dt(&qemu.path, &image),
            ("wrong-el", Ok(_)) => scenario_wrong_el(&qemu.path, &image),
            (other, Ok(_)) => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        record(tally, name, result);
    }
    Ok(())
}

/// Runs everything, or with `only` non-empty just the firmware build and those QEMU scenarios;
/// returns the totals.
pub fn run_all(only: &[String]) -> Result<Tally> {
    let mut tally = Tally::default();
    println!("logs: {}", logs_dir().display());
    let selected: Vec<&str> = if only.is_empty() {
        DEFAULT_SCENARIOS.to_vec()
    } else {
        ALL_SCENARIOS.iter().copied().filter(|s| only.iter().any(|o| o == s)).collect()
    };
    if only.is_empty() {
        // One xtask unit test boots QEMU (to dump the DT of a warden run): on a fresh machine
        // QEMU must be installed before the unit tests, not only before the scenarios.
        if let Err(e) = toolchain::qemu() {
            tally.record(&Verdict::fail("setup/qemu-system-aarch64", format!("{e:#}")));
        }
        // Likewise U-Boot (the linux-chain scenario's bootloader; a unit test checks its pin).
        if let Err(e) = crate::uboot::uboot() {
            tally.record(&Verdict::fail("setup/u-boot-qemu", format!("{e:#}")));
        }
        unit_tests(&mut tally)?;
        step("lints");
        lint(
            &mut tally,
            "lint/clippy --workspace --all-targets -D warnings",
            &[
                &["clippy", "--workspace"][..],
                &BARE_METAL_ONLY,
                &["--all-targets", "--", "-D", "warnings"],
            ]
            .concat(),
            "clippy.log",
        )?;
        lint(&mut tally, "lint/cargo fmt --check", &["fmt", "--all", "--", "--check"], "fmt.log")?;
        step(&format!(
            "fuzz smoke: every target {} s over its seed corpus (cargo xtask fuzz for real runs)",
            fuzz::smoke_seconds()
        ));
        for verdict in fuzz::smoke(&logs_dir()) {
            tally.record(&verdict);
        }
    }
    // linux-no-warden runs no firmware; images builds its own.
    let binaries = if selected.iter().any(|s| *s != "linux-no-warden" && *s != "images") {
        firmware_steps(&mut tally)?
    } else {
        None
    };
    qemu_steps(&mut tally, binaries, &selected)?;
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO_TEST: &str = "\
   Compiling warden v0.1.0 (/r)
    Finished `test` profile [optimized + debuginfo] target(s) in 2.00s
     Running unittests src/lib.rs (target/debug/deps/warden-0123456789abcdef)

running 3 tests
test mm::range::tests::a ... ok
test mm::range::tests::b ... FAILED
test mm::range::tests::c ... ok

failures:

failures:
    mm::range::tests::b

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running unittests src/main.rs (target/debug/deps/xtask-fedcba9876543210)

running 12 tests
test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.50s

   Doc-tests warden_abi

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";

    #[test]
    fn parses_cargo_test_output() {
        let bins = parse_cargo_test(CARGO_TEST);
        assert_eq!(
            bins,
            [
                TestBinary {
                    label: "warden src/lib.rs".into(),
                    passed: 2,
                    failed: 1,
                    failed_names: vec!["mm::range::tests::b".into()],
                },
                TestBinary {
                    label: "xtask src/main.rs".into(),
                    passed: 12,
                    failed: 0,
                    failed_names: vec![],
                },
                TestBinary {
                    label: "warden_abi doctests".into(),
                    passed: 0,
                    failed: 0,
                    failed_names: vec![],
                },
            ]
        );
        assert!(parse_cargo_test("error[E0308]: mismatched types\n").is_empty());
    }

    #[test]
    fn failure_summary_picks_errors_and_locations() {
        let log = "warning: noise\nerror: bad thing\n  --> src/a.rs:1:2\n   |\nerror: could not compile\n";
        assert_eq!(
            failure_summary(log, 20),
            "\n       | error: bad thing\n       |   --> src/a.rs:1:2\n       | error: could not compile"
        );
        assert_eq!(failure_summary("a\nb\nc\n", 2), "\n       | b\n       | c");
        assert_eq!(
            failure_summary("Diff in /r/src/x.rs:3:\n-a\n+b\n", 20),
            "\n       | Diff in /r/src/x.rs:3:"
        );
    }

    #[test]
    fn stress_bound_scales_with_the_cycles() {
        // The default run keeps the bound it always had.
        assert_eq!(stress_timeout(STRESS_DEFAULT_CYCLES), Duration::from_secs(900));
        assert_eq!(stress_timeout(100_000), Duration::from_secs(120 + 7800));
        assert_eq!(stress_cmdline(None), "warden.stress");
        assert_eq!(stress_cmdline(Some(100_000)), "warden.stress=100000");
    }

    #[test]
    fn tally_counts() {
        let mut t = Tally::default();
        t.record(&Verdict::pass("a"));
        t.record(&Verdict::fail("b", "why"));
        t.record(&Verdict::pass("c"));
        assert_eq!((t.passed, t.failed), (2, 1));
    }
}
