//! `cargo xtask soak` (issue 11 §10): the long runs `cargo xtask test` cannot afford, judged like
//! its scenarios and summed up in `target/soak/report.{md,json}`. Two parts, one after the other
//! (a count of 0 skips a part):
//!
//! - **linux**: warden + Debian Linux 6.12 as in the `linux` scenario, `/init` steered by its
//!   command line ([`linux_cmdline_words`]) to run only `iommu-groups` with N cycles of the
//!   read-only disk's IOMMU group through identity/DMA/DMA-FQ/DMA, the disk's first 256 KiB
//!   checked after every step and the whole disk's sha256 after one step of every cycle
//!   ([`WHOLE_DISK_EVERY`]), with QEMU's SMMU trace replayed by [`crate::smmu_trace`] at the end.
//! - **handoff**: the test guest's stress mode (`warden.stress=N`): CPU 0 runs N donate →
//!   peer release → reclaim cycles while two other host CPUs and edu's DMA engine use the pages
//!   next to the range.
//!
//! Each part is judged from its console (the guest's or /init's own verdict, the figures they
//! print, warden's power-down report) and, for Linux, from QEMU's trace; any failed check makes
//! the command exit non-zero. Parsing and judging are pure functions, unit-tested below.

use crate::firmware::{self, repo_root};
use crate::linux_host::{self, HostOptions};
use crate::qemu::{self, Captured, Ending};
use crate::scenario::{self, KERNEL_TROUBLE, Verdict, ending_text, is_banner};
use crate::smmu_trace::{self, Witness};
use crate::test_cmd::{self, LINUX_TIMEOUT};
use crate::toolchain;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cycles of the IOMMU-group churn without `--linux-cycles`.
pub const DEFAULT_LINUX_CYCLES: u64 = 1000;
/// Donate/reclaim cycles without `--handoff-cycles`.
pub const DEFAULT_HANDOFF_CYCLES: u64 = 100_000;
/// The whole disk's sha256 is checked every this many churn cycles (and before and after
/// them). Every cycle: measured under TCG with the trace on, 20 cycles took 38 s with only the
/// per-step 256 KiB prefix checks and 34 s with a whole-disk (4 MiB) check in every cycle as
/// well: the driver unbind/bind around each domain change dominates, the extra read is lost
/// in the noise of the shared machine.
pub const WHOLE_DISK_EVERY: u64 = 1;
/// The Linux run's bound per churn cycle on top of a normal Linux boot's ([`LINUX_TIMEOUT`]):
/// a cycle took 1.7-1.9 s on the loaded 2-core development machine.
const LINUX_SECONDS_PER_CYCLE: u64 = 6;
/// The Linux scenario the soak runs.
pub const CHURN_SCENARIO: &str = "iommu-groups";

pub fn output_dir() -> PathBuf {
    repo_root().join("target/soak")
}

/// What to run: 0 cycles skips a part.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub linux_cycles: u64,
    pub handoff_cycles: u64,
}

/// The Linux run's bound for `cycles` churn cycles.
pub fn linux_timeout(cycles: u64) -> Duration {
    LINUX_TIMEOUT + Duration::from_secs(cycles.saturating_mul(LINUX_SECONDS_PER_CYCLE))
}

/// The kernel command-line words that steer /init (tests/linux/init, 80-iommu-groups.sh).
pub fn linux_cmdline_words(cycles: u64) -> String {
    format!(
        "warden.only={CHURN_SCENARIO} warden.iommu_cycles={cycles} \
         warden.iommu_whole_every={WHOLE_DISK_EVERY}"
    )
}

/// The number right before the first `suffix` in `text` (`(80 domain changes)` → 80 for
/// ` domain changes`).
fn number_before(text: &str, suffix: &str) -> Option<u64> {
    let (before, _) = text.split_once(suffix)?;
    let word = before.rsplit(|c: char| c.is_whitespace() || c == '(').next()?;
    word.parse().ok()
}

/// The number `text` starts with.
fn leading_number(text: &str) -> Option<u64> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The churn's final line: `linux: iommu: N cycles (4N domain changes), W whole-disk checks,
/// every read matched, S s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnFigures {
    pub cycles: u64,
    pub domain_changes: u64,
    pub whole_disk_checks: u64,
    pub seconds: u64,
}

pub fn parse_churn(line: &str) -> Option<ChurnFigures> {
    let rest = line.trim().strip_prefix("linux: iommu: ")?;
    if !rest.contains("every read matched") {
        return None;
    }
    Some(ChurnFigures {
        cycles: number_before(rest, " cycles (")?,
        domain_changes: number_before(rest, " domain changes)")?,
        whole_disk_checks: number_before(rest, " whole-disk checks")?,
        seconds: rest.trim_end().strip_suffix(" s")?.rsplit(' ').next()?.parse().ok()?,
    })
}

/// The churn's `warden's SMMU_STATS` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuStats {
    pub commands: u64,
    pub retired_while_cycling: u64,
    pub forced_flushes: u64,
}

pub fn parse_smmu_stats(line: &str) -> Option<SmmuStats> {
    let rest = line.trim().strip_prefix("linux: iommu: warden's SMMU_STATS: ")?;
    Some(SmmuStats {
        commands: number_before(rest, " commands")?,
        retired_while_cycling: number_before(rest, " while cycling)")?,
        forced_flushes: number_before(rest, " forced flushes")?,
    })
}

/// warden's `host requested power-down: ...` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerDown {
    pub violations: u64,
    pub other_refused: u64,
    pub smmu_events: u64,
    pub intact: bool,
}

pub fn parse_power_down(line: &str) -> Option<PowerDown> {
    let (_, rest) = line.split_once("host requested power-down: ")?;
    Some(PowerDown {
        violations: number_before(rest, " violation(s) contained")?,
        other_refused: number_before(rest, " other trap(s) refused")?,
        smmu_events: number_before(rest, " SMMU event(s)")?,
        intact: rest.contains("code+rodata intact"),
    })
}

impl PowerDown {
    fn clean(&self) -> bool {
        self.violations == 0 && self.other_refused == 0 && self.smmu_events == 0 && self.intact
    }
}

/// The stress scenario's final note (tests/guest/src/handoff_stress.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StressFigures {
    pub cycles: u64,
    pub requested: u64,
    pub whole_blocks: u64,
    pub ms: u64,
    pub retries: u64,
    pub cpu_passes: u64,
    pub dma_hammer_passes: u64,
    pub edu_rounds: u64,
    pub edu_failed: u64,
    pub seas: u64,
    pub mismatches: u64,
    pub smmu_events: u64,
}

pub fn parse_stress_note(line: &str) -> Option<StressFigures> {
    let prefix = format!("guest: note {}: CPU 0: ", scenario::STRESS_SCENARIO);
    let rest = line.trim().strip_prefix(prefix.as_str())?;
    Some(StressFigures {
        cycles: leading_number(rest)?,
        requested: number_before(rest, " cycles (")?,
        whole_blocks: number_before(rest, " of the whole")?,
        ms: number_before(rest, " ms,")?,
        retries: number_before(rest, " RETRY")?,
        cpu_passes: number_before(rest, " passes;")?,
        dma_hammer_passes: number_before(rest, " passes,")?,
        edu_rounds: number_before(rest, " edu rounds")?,
        edu_failed: number_before(rest, " failed)")?,
        seas: number_before(rest, " SEA(s)")?,
        mismatches: number_before(rest, " mismatch(es)")?,
        smmu_events: number_before(rest, " SMMU event(s)")?,
    })
}

/// What QEMU's trace witness found (the figures of [`Witness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceFigures {
    pub lines: usize,
    pub lookups: usize,
    pub reused_asids: usize,
    pub clean_reuses: usize,
    pub violations: usize,
    pub tlbi_asid: usize,
    pub syncs: usize,
}

impl From<&Witness> for TraceFigures {
    fn from(w: &Witness) -> Self {
        Self {
            lines: w.lines,
            lookups: w.lookups,
            reused_asids: w.reused_asids.len(),
            clean_reuses: w.clean_reuses,
            violations: w.violations.len(),
            tlbi_asid: w.tlbi_asid,
            syncs: w.syncs,
        }
    }
}

/// What a part measured, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Figures {
    Linux {
        churn: Option<ChurnFigures>,
        stats: Option<SmmuStats>,
        power_down: Option<PowerDown>,
        trace: Option<TraceFigures>,
    },
    Handoff {
        note: Option<StressFigures>,
        power_down: Option<PowerDown>,
    },
}

/// One part's outcome.
#[derive(Debug, Clone)]
pub struct Part {
    /// `linux` or `handoff`.
    pub name: &'static str,
    pub requested: u64,
    pub verdicts: Vec<Verdict>,
    pub wall: Duration,
    pub figures: Figures,
}

impl Part {
    /// Cycles the run reports done (0 when it reported nothing).
    pub fn cycles(&self) -> u64 {
        match &self.figures {
            Figures::Linux { churn, .. } => churn.map_or(0, |c| c.cycles),
            Figures::Handoff { note, .. } => note.map_or(0, |n| n.cycles),
        }
    }

    /// Failed checks.
    pub fn errors(&self) -> usize {
        self.verdicts.iter().filter(|v| v.outcome.is_err()).count()
    }

    /// The part's one summary line.
    pub fn summary(&self) -> String {
        let head = format!("soak {}: {} of {} cycles", self.name, self.cycles(), self.requested);
        let errors = self.errors();
        let wall = self.wall.as_secs();
        match &self.figures {
            Figures::Linux { churn, trace, .. } => {
                let detail = churn.map_or_else(
                    || "no figures from /init".to_owned(),
                    |c| {
                        format!(
                            "{} domain changes, {} whole-disk sha256 checks",
                            c.domain_changes, c.whole_disk_checks
                        )
                    },
                );
                let trace = trace.map_or_else(
                    || "no QEMU SMMU trace".to_owned(),
                    |t| {
                        format!(
                            "QEMU SMMU trace: {} lines, {} stage-1 IOTLB lookups, {} ASID(s) \
                             reused by a new context, {} clean reuse(s), {} violation(s)",
                            t.lines, t.lookups, t.reused_asids, t.clean_reuses, t.violations
                        )
                    },
                );
                format!("{head} ({detail}), {errors} error(s), {wall} s wall; {trace}")
            }
            Figures::Handoff { note, power_down } => {
                let violations =
                    power_down.map_or_else(|| "?".into(), |p| p.violations.to_string());
                let detail = note.map_or_else(
                    || "no figures from the guest".to_owned(),
                    |n| {
                        format!(
                            "{} of the whole 2 MiB block; {} SEA(s), {} mismatch(es), {} of {} \
                             edu DMA round(s) failed, {} SMMU event(s), {violations} \
                             violation(s); {} CPU pass(es) next to the range",
                            n.whole_blocks,
                            n.seas,
                            n.mismatches,
                            n.edu_failed,
                            n.edu_rounds,
                            n.smmu_events,
                            n.cpu_passes + n.dma_hammer_passes
                        )
                    },
                );
                format!("{head} ({detail}), {errors} error(s), {wall} s wall")
            }
        }
    }

    /// A part whose run could not even start.
    fn setup_failed(
        name: &'static str,
        requested: u64,
        why: &anyhow::Error,
        figures: Figures,
    ) -> Self {
        Self {
            name,
            requested,
            verdicts: vec![Verdict::fail(format!("soak/{name}/setup"), format!("{why:#}"))],
            wall: Duration::ZERO,
            figures,
        }
    }
}

fn no_linux_figures() -> Figures {
    Figures::Linux { churn: None, stats: None, power_down: None, trace: None }
}

fn no_handoff_figures() -> Figures {
    Figures::Handoff { note: None, power_down: None }
}

/// The power-down verdict both parts share: warden itself counted nothing refused and found its
/// code intact.
fn judge_power_down(name: &str, lines: &[String]) -> (Verdict, Option<PowerDown>) {
    let line = lines.iter().find(|l| l.contains("host requested power-down"));
    let parsed = line.and_then(|l| parse_power_down(l));
    let verdict = Verdict::check(
        &format!(
            "soak/{name}/warden at power-down: 0 violations, 0 refused traps, 0 SMMU events, \
             code+rodata intact"
        ),
        parsed.is_some_and(|p| p.clean()),
        || line.map_or_else(|| "no power-down report".into(), |l| l.trim().to_owned()),
    );
    (verdict, parsed)
}

/// The Linux part: /init ran only the churn, and it passed with `cycles` cycles and the whole
/// disk checked as often as asked; Linux powered off cleanly with a clean console; warden
/// counted nothing; QEMU's trace shows ASIDs reused and none before its invalidation completed.
pub fn judge_linux(run: &Captured, cycles: u64, witness: Result<Witness>) -> Part {
    const P: &str = "soak/linux";
    let mut verdicts = vec![Verdict::check(
        &format!("{P}/warden banner printed"),
        run.lines.iter().any(|l| is_banner(l)),
        || "no line containing `warden v<version>`".into(),
    )];
    let results: Vec<Verdict> =
        run.lines.iter().filter_map(|l| scenario::parse_result_line(l, "linux")).collect();
    let wanted = format!("linux/{CHURN_SCENARIO}");
    verdicts.push(Verdict {
        name: format!("{P}/{CHURN_SCENARIO} passed, and only it ran"),
        outcome: match results.as_slice() {
            [only] if only.name == wanted => only.outcome.clone(),
            [] => Err(format!(
                "/init printed no `ok {CHURN_SCENARIO}` or `FAILED {CHURN_SCENARIO}` line ({})",
                ending_text(&run.ending)
            )),
            more => Err(format!(
                "/init ran {}: warden.only= did not steer it",
                more.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        },
    });
    let churn = run.lines.iter().find_map(|l| parse_churn(l));
    let whole_expected = 2 + cycles / WHOLE_DISK_EVERY;
    verdicts.push(Verdict::check(
        &format!("{P}/{cycles} cycles, whole-disk sha256 every {WHOLE_DISK_EVERY} cycle(s)"),
        churn.is_some_and(|c| {
            c.cycles == cycles
                && c.domain_changes == 4 * cycles
                && c.whole_disk_checks == whole_expected
        }),
        || match churn {
            Some(c) => format!(
                "/init reports {} cycles ({} domain changes) and {} whole-disk checks, expected \
                 {cycles} ({}) and {whole_expected}",
                c.cycles,
                c.domain_changes,
                c.whole_disk_checks,
                4 * cycles
            ),
            None => "no `linux: iommu: N cycles (...), ... every read matched` line".into(),
        },
    ));
    let done = run.lines.iter().any(|l| l.trim() == "linux: done");
    verdicts.push(Verdict::check(
        &format!("{P}/`linux: done`, QEMU exit 0"),
        done && run.ending == Ending::Exited(Some(0)),
        || format!("`linux: done` printed: {done}; {}", ending_text(&run.ending)),
    ));
    let trouble = run.lines.iter().find(|l| KERNEL_TROUBLE.iter().any(|t| l.contains(t)));
    verdicts.push(Verdict::check(
        &format!("{P}/no WARNING:, Oops, BUG:, Call trace or panic on the console"),
        trouble.is_none(),
        || format!("`{}`", trouble.map_or("", |l| l.trim())),
    ));
    let (power, power_down) = judge_power_down("linux", &run.lines);
    verdicts.push(power);
    let trace = witness.as_ref().ok().map(TraceFigures::from);
    for mut v in smmu_trace::judge_linux(witness) {
        v.name = v.name.replacen("linux/", "soak/linux/", 1);
        verdicts.push(v);
    }
    let stats = run.lines.iter().find_map(|l| parse_smmu_stats(l));
    Part {
        name: "linux",
        requested: cycles,
        verdicts,
        wall: run.elapsed,
        figures: Figures::Linux { churn, stats, power_down, trace },
    }
}

/// The handoff part: the stress scenario's own verdicts (scenario::judge_handoff_stress), its
/// note counting `cycles` cycles, and warden's code intact at power-down.
pub fn judge_handoff(run: &Captured, cycles: u64) -> Part {
    let mut verdicts: Vec<Verdict> = scenario::judge_handoff_stress(run)
        .into_iter()
        .map(|mut v| {
            v.name = v.name.replacen("handoff-stress/", "soak/handoff/", 1);
            v
        })
        .collect();
    let note = run.lines.iter().find_map(|l| parse_stress_note(l));
    verdicts.push(Verdict::check(
        &format!("soak/handoff/{cycles} donate/reclaim cycles"),
        note.is_some_and(|n| n.cycles == cycles && n.requested == cycles),
        || match note {
            Some(n) => {
                format!("the guest ran {} of {} cycles, expected {cycles}", n.cycles, n.requested)
            }
            None => format!("no `guest: note {}: CPU 0: ...` line", scenario::STRESS_SCENARIO),
        },
    ));
    let (power, power_down) = judge_power_down("handoff", &run.lines);
    verdicts.push(power);
    Part {
        name: "handoff",
        requested: cycles,
        verdicts,
        wall: run.elapsed,
        figures: Figures::Handoff { note, power_down },
    }
}

/// Console lines worth showing while a long run goes on: progress, failures, kernel trouble.
fn shows_progress(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("linux: iommu: cycle ")
        || line.starts_with(&format!("guest: note {}:", scenario::STRESS_SCENARIO))
        || line.starts_with("FAILED ")
        || KERNEL_TROUBLE.iter().any(|t| line.contains(t))
}

fn watch_progress(line: &str) -> bool {
    if shows_progress(line) {
        println!("     | {}", line.trim());
    }
    false
}

fn linux_part(qemu: &Path, warden: &Path, cycles: u64) -> Part {
    let result = (|| -> Result<Part> {
        let dir = output_dir();
        let mut opts = HostOptions::new(dir.join("linux"));
        opts.append = Some(linux_cmdline_words(cycles));
        let host = linux_host::prepare(&opts)?;
        let mut machine = linux_host::machine(&host, Some(warden), &opts)?;
        qemu::attach_warden_dt(qemu, &mut machine, "soak-linux")?;
        let trace = dir.join("linux.smmu-trace.log");
        let _ = std::fs::remove_file(&trace);
        machine.extra.extend(smmu_trace::qemu_args(&trace));
        let timeout = linux_timeout(cycles);
        let log = dir.join("linux.log");
        println!(
            "     warden + Linux 6.12, {cycles} IOMMU-group cycles, timeout {} s; console: {}",
            timeout.as_secs(),
            log.display()
        );
        let run = qemu::run_captured(
            machine.command(qemu),
            timeout,
            &log,
            &watch_progress,
            Duration::ZERO,
        )?;
        test_cmd::report_timeout("soak linux", &run);
        Ok(judge_linux(&run, cycles, test_cmd::witness(&trace)))
    })();
    result.unwrap_or_else(|e| Part::setup_failed("linux", cycles, &e, no_linux_figures()))
}

fn handoff_part(qemu: &Path, warden: &Path, cycles: u64) -> Part {
    let result = (|| -> Result<Part> {
        let guest = firmware::build_one(toolchain::firmware()?, &firmware::TEST_GUEST)?;
        let log = output_dir().join("handoff.log");
        println!(
            "     warden + test guest (stress mode), {cycles} donate/reclaim cycles, timeout {} s; \
             console: {}",
            test_cmd::stress_timeout(cycles).as_secs(),
            log.display()
        );
        let run = test_cmd::run_handoff_stress(
            qemu,
            warden,
            &guest,
            Some(cycles),
            &log,
            &watch_progress,
        )?;
        test_cmd::report_timeout("soak handoff", &run);
        Ok(judge_handoff(&run, cycles))
    })();
    result.unwrap_or_else(|e| Part::setup_failed("handoff", cycles, &e, no_handoff_figures()))
}

/// Where and when the soak ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setting {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub started: String,
    pub cpu: String,
    pub cpus: usize,
    /// `/proc/loadavg`'s first three figures when the soak started.
    pub load: String,
    pub qemu: String,
    pub commit: String,
}

/// The civil date of `days` since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_text(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(days);
    let minutes = secs % 86_400 / 60;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

fn probe_setting(qemu_version: &str) -> Setting {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or_else(|| "unknown CPU".into(), |(_, name)| name.trim().to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    Setting {
        started: utc_text(now),
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        load,
        qemu: qemu_version.to_owned(),
        commit,
    }
}

/// The whole soak's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub setting: Setting,
    pub parts: Vec<Part>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.parts.iter().map(Part::errors).sum()
    }
}

pub fn render_markdown(r: &Report) -> String {
    let s = &r.setting;
    let mut out = format!(
        "# warden soak\n\nStarted {} on {} ({} CPUs, load {} at the start), QEMU {}, warden {}.\n\n\
         | part | cycles | errors | wall time | figures |\n|---|---:|---:|---:|---|\n",
        s.started, s.cpu, s.cpus, s.load, s.qemu, s.commit
    );
    for p in &r.parts {
        let figures = match &p.figures {
            Figures::Linux { churn, stats, trace, .. } => {
                let mut f = Vec::new();
                if let Some(c) = churn {
                    f.push(format!(
                        "{} domain changes, {} whole-disk sha256 checks, churn {} s",
                        c.domain_changes, c.whole_disk_checks, c.seconds
                    ));
                }
                if let Some(st) = stats {
                    f.push(format!(
                        "warden: {} vSMMU commands, {} ASIDs retired while cycling, {} forced flushes",
                        st.commands, st.retired_while_cycling, st.forced_flushes
                    ));
                }
                if let Some(t) = trace {
                    f.push(format!(
                        "QEMU SMMU trace: {} lines, {} stage-1 IOTLB lookups, {} ASIDs reused by \
                         a new context, {} clean reuses, {} violations, {} TLBI_NH_ASID, {} CMD_SYNC",
                        t.lines, t.lookups, t.reused_asids, t.clean_reuses, t.violations, t.tlbi_asid, t.syncs
                    ));
                }
                f.join("; ")
            }
            Figures::Handoff { note, power_down } => match note {
                Some(n) => format!(
                    "{} whole-block cycles, {} RETRY, loop {} ms; {} + {} hammer passes, {} edu \
                     DMA rounds ({} failed); {} SEA, {} mismatches, {} SMMU events, {} violations",
                    n.whole_blocks,
                    n.retries,
                    n.ms,
                    n.cpu_passes,
                    n.dma_hammer_passes,
                    n.edu_rounds,
                    n.edu_failed,
                    n.seas,
                    n.mismatches,
                    n.smmu_events,
                    power_down.map_or_else(|| "?".into(), |p| p.violations.to_string())
                ),
                None => String::new(),
            },
        };
        out += &format!(
            "| {} | {} of {} | {} | {} s | {} |\n",
            p.name,
            p.cycles(),
            p.requested,
            p.errors(),
            p.wall.as_secs(),
            figures
        );
    }
    out += "\n## Checks\n\n";
    for p in &r.parts {
        for v in &p.verdicts {
            match &v.outcome {
                Ok(()) => out += &format!("- ok `{}`\n", v.name),
                Err(why) => out += &format!("- **FAIL** `{}`: {why}\n", v.name),
            }
        }
    }
    out
}

pub fn render_json(r: &Report) -> String {
    use serde_json::json;
    let power = |p: &Option<PowerDown>| {
        p.map(|p| {
            json!({"violations": p.violations, "other_refused": p.other_refused,
                   "smmu_events": p.smmu_events, "code_intact": p.intact})
        })
    };
    let parts: Vec<serde_json::Value> = r
        .parts
        .iter()
        .map(|p| {
            let figures = match &p.figures {
                Figures::Linux { churn, stats, power_down, trace } => json!({
                    "churn": churn.map(|c| json!({"cycles": c.cycles, "domain_changes": c.domain_changes,
                        "whole_disk_checks": c.whole_disk_checks, "seconds": c.seconds})),
                    "smmu_stats": stats.map(|s| json!({"commands": s.commands,
                        "asids_retired_while_cycling": s.retired_while_cycling,
                        "forced_flushes": s.forced_flushes})),
                    "power_down": power(power_down),
                    "smmu_trace": trace.map(|t| json!({"lines": t.lines, "lookups": t.lookups,
                        "reused_asids": t.reused_asids, "clean_reuses": t.clean_reuses,
                        "violations": t.violations, "tlbi_nh_asid": t.tlbi_asid, "cmd_sync": t.syncs})),
                }),
                Figures::Handoff { note, power_down } => json!({
                    "stress": note.map(|n| json!({"cycles": n.cycles, "requested": n.requested,
                        "whole_blocks": n.whole_blocks, "loop_ms": n.ms, "retries": n.retries,
                        "cpu_passes": n.cpu_passes, "dma_hammer_passes": n.dma_hammer_passes,
                        "edu_rounds": n.edu_rounds, "edu_failed": n.edu_failed, "seas": n.seas,
                        "mismatches": n.mismatches, "smmu_events": n.smmu_events})),
                    "power_down": power(power_down),
                }),
            };
            json!({
                "part": p.name,
                "requested_cycles": p.requested,
                "cycles": p.cycles(),
                "errors": p.errors(),
                "wall_seconds": p.wall.as_secs_f64(),
                "summary": p.summary(),
                "figures": figures,
                "checks": p.verdicts.iter().map(|v| json!({
                    "name": v.name,
                    "ok": v.outcome.is_ok(),
                    "why": v.outcome.as_ref().err(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let s = &r.setting;
    let doc = json!({
        "started": s.started,
        "machine": {"cpu": s.cpu, "cpus": s.cpus, "load_at_start": s.load},
        "qemu": s.qemu,
        "warden": s.commit,
        "errors": r.errors(),
        "parts": parts,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// `cargo xtask soak`: both parts (those with a non-zero count), their verdicts and summary
/// lines printed, the report written.
pub fn run(opts: Options) -> Result<Report> {
    anyhow::ensure!(
        opts.linux_cycles > 0 || opts.handoff_cycles > 0,
        "--linux-cycles 0 and --handoff-cycles 0: nothing to run"
    );
    let qemu = toolchain::qemu()?;
    let warden = firmware::build_one(toolchain::firmware()?, &firmware::WARDEN)?;
    let dir = output_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let setting = probe_setting(&qemu.version);
    println!(
        "soak: started {} on {} ({} CPUs, load {})",
        setting.started, setting.cpu, setting.cpus, setting.load
    );
    let mut parts = Vec::new();
    if opts.linux_cycles > 0 {
        println!("== soak linux: IOMMU-group churn");
        parts.push(linux_part(&qemu.path, &warden, opts.linux_cycles));
    }
    if opts.handoff_cycles > 0 {
        println!("== soak handoff: donate/reclaim next to two hammering CPUs and edu DMA");
        parts.push(handoff_part(&qemu.path, &warden, opts.handoff_cycles));
    }
    let report = Report { setting, parts };
    let mut tally = test_cmd::Tally::default();
    for part in &report.parts {
        part.verdicts.iter().for_each(|v| tally.record(v));
    }
    for part in &report.parts {
        println!("{}", part.summary());
    }
    std::fs::write(dir.join("report.md"), render_markdown(&report))
        .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
    std::fs::write(dir.join("report.json"), render_json(&report))
        .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    println!("soak: wrote {}/report.{{md,json}}", dir.display());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(text: &str, ending: Ending, secs: u64) -> Captured {
        Captured {
            lines: text.lines().map(str::to_owned).collect(),
            ending,
            elapsed: Duration::from_secs(secs),
        }
    }

    /// warden's power-down line with these counts.
    fn power_down(violations: u32, events: u32, verdict: &str) -> String {
        format!(
            "warden: cpu0: host requested power-down: {violations} violation(s) contained, 0 other \
             trap(s) refused, {events} SMMU event(s), 0 stage-2 fault(s) retried, 0 table \
             frame(s) quarantined; warden code+rodata {verdict} (digest 0xc4485edfd148e7ca, boot \
             0xc4485edfd148e7ca)"
        )
    }

    /// A soak Linux console (the lines of a real 20-cycle run, trimmed) for `cycles` cycles
    /// with `whole` whole-disk checks.
    fn linux_console(cycles: u64, whole: u64) -> String {
        format!(
            "warden v0.1.0 on qemu-virt\n\
             [    4.041129] hrtimer: interrupt took 20540197 ns\n\
             linux: /init started, kernel 6.12.95+deb12-arm64\n\
             linux: nproc=2\n\
             linux: iommu: cycle 50 of {cycles}, 51 whole-disk checks, 90 s\n\
             linux: iommu: {cycles} cycles ({} domain changes), {whole} whole-disk checks, every read matched, 34 s\n\
             linux: iommu: warden's SMMU_STATS: 36725 commands, ASIDs 40 retired (40 while cycling), 40 freed, 0 forced flushes\n\
             ok iommu-groups\n\
             linux: 1 passed, 0 failed\n\
             linux: done\n\
             {}\n",
            4 * cycles,
            power_down(0, 0, "intact")
        )
    }

    fn witness(reused: usize, violations: usize) -> Result<Witness> {
        let mut w =
            Witness { lines: 1000, lookups: 500, clean_reuses: reused, ..Witness::default() };
        w.reused_asids = (0..reused).map(|a| (a as i64, 1)).collect();
        w.violations = (0..violations)
            .map(|i| smmu_trace::Violation {
                asid: i as i64,
                vmid: 1,
                sid: 8,
                old_line: 1,
                new_line: 2,
                missing: "no TLBI_NH_ASID (or wider) after it",
            })
            .collect();
        Ok(w)
    }

    fn failed(part: &Part) -> Vec<&str> {
        part.verdicts.iter().filter(|v| v.outcome.is_err()).map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn parses_the_figure_lines() {
        assert_eq!(
            parse_churn(
                "linux: iommu: 1000 cycles (4000 domain changes), 1002 whole-disk checks, every \
                 read matched, 1834 s"
            ),
            Some(ChurnFigures {
                cycles: 1000,
                domain_changes: 4000,
                whole_disk_checks: 1002,
                seconds: 1834
            })
        );
        // Progress lines are not the final one.
        assert_eq!(parse_churn("linux: iommu: cycle 50 of 1000, 51 whole-disk checks, 90 s"), None);
        assert_eq!(
            parse_smmu_stats(
                "linux: iommu: warden's SMMU_STATS: 36725 commands, ASIDs 43 retired (40 while \
                 cycling), 40 freed, 2 forced flushes"
            ),
            Some(SmmuStats { commands: 36725, retired_while_cycling: 40, forced_flushes: 2 })
        );
        assert_eq!(
            parse_power_down(&power_down(5, 128, "intact")),
            Some(PowerDown { violations: 5, other_refused: 0, smmu_events: 128, intact: true })
        );
        assert!(!parse_power_down(&power_down(0, 0, "CORRUPTED")).unwrap().intact);
        // The note of a real 10 000-cycle run (with the requested count the guest now prints).
        let note = "guest: note carveout_neighbours_never_fault: CPU 0: 10000 of 10000 cycles \
                    (100 of the whole 2 MiB block) in 196296 ms, 0 RETRY; CPU 0x1: 2843292 \
                    passes; CPU 0x2: 420 passes, 420 edu rounds (0 failed); 0 SEA(s), 0 \
                    mismatch(es), 0 SMMU event(s) (0 stale before), violations [0 incidents from \
                    0, 0 accesses] -> [0 incidents from 0, 0 accesses]; first failure at 0x0 (ESR \
                    0x0)";
        assert_eq!(
            parse_stress_note(note),
            Some(StressFigures {
                cycles: 10000,
                requested: 10000,
                whole_blocks: 100,
                ms: 196_296,
                retries: 0,
                cpu_passes: 2_843_292,
                dma_hammer_passes: 420,
                edu_rounds: 420,
                edu_failed: 0,
                seas: 0,
                mismatches: 0,
                smmu_events: 0,
            })
        );
        let bad = note.replace("0 SEA(s), 0 mismatch(es)", "3 SEA(s), 7 mismatch(es)");
        let bad = parse_stress_note(&bad).unwrap();
        assert_eq!((bad.seas, bad.mismatches), (3, 7));
        // A progress note is not the final one.
        assert_eq!(
            parse_stress_note(
                "guest: note carveout_neighbours_never_fault: 10000 of 100000 cycles, 190000 ms"
            ),
            None
        );
    }

    #[test]
    fn linux_part_passes_only_when_everything_holds() {
        let good = captured(&linux_console(20, 22), Ending::Exited(Some(0)), 120);
        let part = judge_linux(&good, 20, witness(3, 0));
        assert!(failed(&part).is_empty(), "{:?}", part.verdicts);
        assert_eq!(part.cycles(), 20);
        assert_eq!(part.errors(), 0);
        assert_eq!(
            part.summary(),
            "soak linux: 20 of 20 cycles (80 domain changes, 22 whole-disk sha256 checks), 0 \
             error(s), 120 s wall; QEMU SMMU trace: 1000 lines, 500 stage-1 IOTLB lookups, 3 \
             ASID(s) reused by a new context, 3 clean reuse(s), 0 violation(s)"
        );

        // Fewer cycles than asked, or the whole disk checked less often.
        for console in [linux_console(19, 21), linux_console(20, 2)] {
            let part =
                judge_linux(&captured(&console, Ending::Exited(Some(0)), 1), 20, witness(3, 0));
            assert_eq!(failed(&part), ["soak/linux/20 cycles, whole-disk sha256 every 1 cycle(s)"]);
        }
        // The trace: a reuse before its invalidation, or no reuse at all.
        for w in [witness(3, 1), witness(0, 0), Err(anyhow::anyhow!("no trace file"))] {
            let part = judge_linux(&good, 20, w);
            assert_eq!(
                failed(&part),
                ["soak/linux/smmu trace: every ASID reuse flushed first (QEMU's view)"]
            );
        }
        // warden counted something, or its code changed.
        for (from, to) in [
            (" 0 violation(s)", " 1 violation(s)"),
            (" 0 SMMU event(s)", " 4 SMMU event(s)"),
            ("code+rodata intact", "code+rodata CORRUPTED"),
        ] {
            let console = linux_console(20, 22).replace(from, to);
            let part =
                judge_linux(&captured(&console, Ending::Exited(Some(0)), 1), 20, witness(3, 0));
            assert_eq!(failed(&part).len(), 1, "{from}: {:?}", failed(&part));
            assert!(failed(&part)[0].contains("warden at power-down"), "{from}");
        }
        // The churn failed, /init was not steered, the kernel warned, the run timed out.
        let console = linux_console(20, 22)
            .replace("ok iommu-groups", "FAILED iommu-groups: cycle 7 (DMA): /dev/vda sha256 00");
        let part = judge_linux(&captured(&console, Ending::Exited(Some(0)), 1), 20, witness(3, 0));
        assert_eq!(failed(&part), ["soak/linux/iommu-groups passed, and only it ran"]);
        assert!(format!("{:?}", part.verdicts).contains("cycle 7 (DMA)"));
        let console =
            linux_console(20, 22).replace("ok iommu-groups", "ok cpus-at-el1\nok iommu-groups");
        let part = judge_linux(&captured(&console, Ending::Exited(Some(0)), 1), 20, witness(3, 0));
        assert_eq!(failed(&part), ["soak/linux/iommu-groups passed, and only it ran"]);
        let console = linux_console(20, 22) + "[  99.1] WARNING: CPU: 1 PID: 7 at iommu.c:1\n";
        let part = judge_linux(&captured(&console, Ending::Exited(Some(0)), 1), 20, witness(3, 0));
        assert_eq!(
            failed(&part),
            ["soak/linux/no WARNING:, Oops, BUG:, Call trace or panic on the console"]
        );
        let cut = linux_console(20, 22);
        let cut = &cut[..cut.find("linux: iommu: 20 cycles").unwrap()];
        let part = judge_linux(
            &captured(cut, Ending::TimedOut(Duration::from_secs(9)), 9),
            20,
            witness(3, 0),
        );
        assert_eq!(part.cycles(), 0);
        assert_eq!(part.errors(), 4, "{:?}", failed(&part));
        assert!(part.summary().starts_with(
            "soak linux: 0 of 20 cycles (no figures from /init), 4 error(s), 9 s wall"
        ));
    }

    fn handoff_console(done: u64, asked: u64, seas: u64) -> String {
        let verdict = if seas == 0 {
            "ok carveout_neighbours_never_fault".to_owned()
        } else {
            format!("FAILED carveout_neighbours_never_fault: {seas} SEA(s), 0 mismatch(es)")
        };
        format!(
            "warden v0.1.0 on qemu-virt\n\
             guest: note carveout_neighbours_never_fault: 10000 of {asked} cycles, 19000 ms\n\
             guest: note carveout_neighbours_never_fault: CPU 0: {done} of {asked} cycles (1000 of \
             the whole 2 MiB block) in 1962960 ms, 0 RETRY; CPU 0x1: 28432920 passes; CPU 0x2: \
             4200 passes, 4200 edu rounds (0 failed); {seas} SEA(s), 0 mismatch(es), 0 SMMU event(s) \
             (0 stale before), violations [...] -> [...]; first failure at 0x0 (ESR 0x0)\n\
             {verdict}\nguest: done\n{}\n",
            power_down(0, 0, "intact")
        )
    }

    #[test]
    fn handoff_part_passes_only_when_everything_holds() {
        let good = captured(&handoff_console(100_000, 100_000, 0), Ending::Exited(Some(0)), 2000);
        let part = judge_handoff(&good, 100_000);
        assert!(failed(&part).is_empty(), "{:?}", part.verdicts);
        assert_eq!(
            part.summary(),
            "soak handoff: 100000 of 100000 cycles (1000 of the whole 2 MiB block; 0 SEA(s), 0 \
             mismatch(es), 0 of 4200 edu DMA round(s) failed, 0 SMMU event(s), 0 violation(s); \
             28437120 CPU pass(es) next to the range), 0 error(s), 2000 s wall"
        );
        // The guest ran its default count: the command line did not reach it.
        let part = judge_handoff(
            &captured(&handoff_console(10_000, 10_000, 0), Ending::Exited(Some(0)), 1),
            100_000,
        );
        assert_eq!(failed(&part), ["soak/handoff/100000 donate/reclaim cycles"]);
        // Aborts next to the range; code corrupted; a hang.
        let part = judge_handoff(
            &captured(&handoff_console(100_000, 100_000, 3), Ending::Exited(Some(0)), 1),
            100_000,
        );
        assert_eq!(failed(&part), ["soak/handoff/carveout_neighbours_never_fault"]);
        let console = handoff_console(100_000, 100_000, 0).replace("intact", "CORRUPTED");
        let part = judge_handoff(&captured(&console, Ending::Exited(Some(0)), 1), 100_000);
        assert_eq!(
            failed(&part),
            [
                "soak/handoff/warden at power-down: 0 violations, 0 refused traps, 0 SMMU events, code+rodata intact"
            ]
        );
        let part =
            judge_handoff(&captured("", Ending::TimedOut(Duration::from_secs(9)), 9), 100_000);
        assert_eq!(part.errors(), part.verdicts.len());
    }

    #[test]
    fn reports_carry_the_figures() {
        let linux = judge_linux(
            &captured(&linux_console(20, 22), Ending::Exited(Some(0)), 120),
            20,
            witness(3, 0),
        );
        let handoff = judge_handoff(
            &captured(&handoff_console(100_000, 100_000, 3), Ending::Exited(Some(0)), 2000),
            100_000,
        );
        let report = Report {
            setting: Setting {
                started: "2025-12-07 03:00 UTC".into(),
                cpu: "Some CPU".into(),
                cpus: 2,
                load: "1.00 1.10 1.20".into(),
                qemu: "10.0.2".into(),
                commit: "f866545".into(),
            },
            parts: vec![linux, handoff],
        };
        assert_eq!(report.errors(), 1);
        let md = render_markdown(&report);
        assert!(
            md.contains("| linux | 20 of 20 | 0 | 120 s | 80 domain changes, 22 whole-disk"),
            "{md}"
        );
        assert!(md.contains("| handoff | 100000 of 100000 | 1 | 2000 s |"), "{md}");
        assert!(md.contains("- **FAIL** `soak/handoff/carveout_neighbours_never_fault`: "), "{md}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(json["errors"], 1);
        assert_eq!(json["parts"][0]["figures"]["smmu_trace"]["violations"], 0);
        assert_eq!(json["parts"][0]["figures"]["churn"]["whole_disk_checks"], 22);
        assert_eq!(json["parts"][1]["figures"]["stress"]["seas"], 3);
        assert_eq!(json["parts"][1]["wall_seconds"], 2000.0);
    }

    #[test]
    fn bounds_and_command_line() {
        assert_eq!(linux_timeout(0), LINUX_TIMEOUT);
        assert_eq!(linux_timeout(1000), LINUX_TIMEOUT + Duration::from_secs(6000));
        assert_eq!(
            linux_cmdline_words(1000),
            "warden.only=iommu-groups warden.iommu_cycles=1000 warden.iommu_whole_every=1"
        );
        // Progress worth showing during a long run; the rest is not.
        assert!(shows_progress("linux: iommu: cycle 50 of 1000, 51 whole-disk checks, 90 s"));
        assert!(shows_progress(
            "guest: note carveout_neighbours_never_fault: 10000 of 100000 cycles, 1 ms"
        ));
        assert!(shows_progress("FAILED iommu-groups: cycle 3"));
        assert!(!shows_progress("[    2.4] virtio-pci 0000:00:01.0: Adding to iommu group 0"));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_text(1_765_078_200), "2025-12-07 03:30 UTC");
        assert_eq!(utc_text(4_107_542_399), "2100-02-28 23:59 UTC");
    }
}
