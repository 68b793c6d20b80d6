//! `cargo xtask fuzz`: coverage-guided fuzzing of every decoder of host-controlled input, with
//! cargo-fuzz and libFuzzer on the machine's x86_64 nightly toolchain (`fuzz/`).
//!
//! Each target runs over a scratch corpus in `target/fuzz/corpus/<target>` seeded (read-only)
//! from the committed `fuzz/corpus/<target>`; `--save` merges what increased coverage back into
//! the committed corpus. Crash inputs go to `target/fuzz/artifacts/<target>/`. A run ends with
//! one line per target: executions, coverage, crashes. `cargo xtask test` runs a short smoke
//! pass of every target ([`smoke`]).

use crate::firmware::repo_root;
use crate::linux;
use crate::scenario::Verdict;
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// cargo-fuzz, pinned; installed by xtask into warden's cache (`~/.cache/warden/tools`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A fuzz target and the longest input worth trying on it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub max_len: usize,
    pub what: &'static str,
}

/// Every target, in the order they run.
pub const TARGETS: &[Target] = &[
    Target {
        name: "trap",
        max_len: 4096,
        what: "trap dispatch: SMCCC/PSCI/warden calls, MMIO decode, control page, syndromes",
    },
    Target { name: "dt", max_len: 16384, what: "DT parse (warden's validating reader) and patch" },
    Target {
        name: "vsmmu",
        max_len: 8192,
        what: "virtual SMMUv3: registers, command queue, STE and CD decoding, event forwarding",
    },
    Target {
        name: "abi",
        max_len: 4096,
        what: "warden's carveout calls: request decoding and the handoff service over real \
               tables, with G1's invariants after every call",
    },
    Target {
        name: "gic",
        max_len: 8192,
        what: "GICv3 ITS emulation (registers, command queue, commands) and a redistributor's \
               LPI tables",
    },
];

/// The outcome of one target's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub executions: u64,
    pub seconds: u64,
    /// libFuzzer's `cov:` (edges) and `ft:` (features) of the last status line.
    pub coverage: u64,
    pub features: u64,
    pub corpus: u64,
    /// The input that crashed, if one did.
    pub crash: Option<String>,
    /// libFuzzer stopped on SIGINT/SIGTERM (`run interrupted`): the executions so far count,
    /// nothing crashed, but the budget was not spent.
    pub interrupted: bool,
}

impl Stats {
    pub fn line(&self, target: &str) -> String {
        format!(
            "{target}: {} executions in {} s, coverage {} edges / {} features, corpus {}{}",
            self.executions,
            self.seconds,
            self.coverage,
            self.features,
            self.corpus,
            match (&self.crash, self.interrupted) {
                (Some(input), _) => format!(", CRASH (input: {input})"),
                (None, true) => ", interrupted before its budget, no crash".into(),
                (None, false) => ", no crash".into(),
            }
        )
    }
}

/// Reads libFuzzer's output: `stat::number_of_executed_units`, the last `cov:`/`ft:`/`corp:`
/// status line, and a crash artifact's path.
pub fn parse_output(text: &str) -> Stats {
    let mut stats = Stats::default();
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        let value: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
        value.parse().ok()
    };
    for line in text.lines() {
        if let Some(n) = field(line, "stat::number_of_executed_units:") {
            stats.executions = n;
        }
        if line.starts_with('#') && line.contains(" cov: ") {
            stats.coverage = field(line, " cov:").unwrap_or(stats.coverage);
            stats.features = field(line, " ft:").unwrap_or(stats.features);
            stats.corpus = field(line, " corp:").unwrap_or(stats.corpus);
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            stats.crash = Some(path.trim().to_owned());
        }
        if line.contains("libFuzzer: run interrupted") {
            stats.interrupted = true;
        }
    }
    stats
}

fn fuzz_dir() -> PathBuf {
    repo_root().join("fuzz")
}

fn work_dir() -> PathBuf {
    repo_root().join("target/fuzz")
}

/// cargo-fuzz's binary, installed (pinned) when missing.
fn cargo_fuzz() -> Result<PathBuf> {
    let root = linux::cache_dir()?.join("tools");
    let bin = root.join("bin/cargo-fuzz");
    let version_ok = Command::new(&bin)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if version_ok {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (cargo install --locked)",
        root.display()
    );
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "--locked", "--version"])
        .arg(format!("={CARGO_FUZZ_VERSION}"))
        .arg("--root")
        .arg(&root)
        .arg("cargo-fuzz")
        .status()
        .context("running cargo install cargo-fuzz")?;
    ensure!(status.success(), "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} failed ({status})");
    Ok(bin)
}

/// `rustup run nightly`: cargo-fuzz needs nightly's `-Z` sanitizer flags. rustup's nightly for
/// x86_64 is part of this machine's image.
fn nightly(program: &Path) -> Result<Command> {
    let probe = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        bail!(
            "no rustup nightly toolchain: cargo-fuzz needs one (`rustup toolchain install \
             nightly` where rustup can download)"
        );
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly"]).arg(program).current_dir(fuzz_dir());
    Ok(cmd)
}

/// libFuzzer's instrumentation: coverage always; AddressSanitizer (the default) also catches
/// out-of-bounds and use-after-free in warden's `unsafe` code and in the fakes, at about a
/// tenth of the speed, so long runs of the slow targets may go without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sanitizer {
    Address,
    None,
}

impl Sanitizer {
    fn flag(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }

    /// Separate build directories: switching does not rebuild the other.
    fn build_dir(self) -> PathBuf {
        work_dir().join(format!("build-{}", self.flag()))
    }
}

/// Builds every target (instrumented, optimised).
pub fn build(sanitizer: Sanitizer) -> Result<()> {
    let bin = cargo_fuzz()?;
    let mut cmd = nightly(&bin)?;
    cmd.args(["fuzz", "build", "-O", "-s", sanitizer.flag(), "--target-dir"])
        .arg(sanitizer.build_dir());
    let status = cmd.status().context("running cargo fuzz build")?;
    ensure!(status.success(), "cargo fuzz build failed ({status})");
    Ok(())
}

pub fn target(name: &str) -> Result<Target> {
    TARGETS.iter().copied().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!("no fuzz target {name}; there are {}", names.join(", "))
    })
}

/// How long a target runs: a time, or a number of executions (whichever is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Seconds(u64),
    Runs(u64),
}

impl Budget {
    fn flags(self) -> [String; 2] {
        match self {
            Budget::Seconds(s) => [format!("-max_total_time={s}"), "-runs=-1".into()],
            Budget::Runs(n) => ["-max_total_time=0".into(), format!("-runs={n}")],
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Seconds(s) => write!(f, "{s} s"),
            Budget::Runs(n) => write!(f, "{n} executions"),
        }
    }
}

/// Runs one (built) target for `budget` and returns its figures; the output goes to `log`.
pub fn run_target(t: Target, sanitizer: Sanitizer, budget: Budget, log: &Path) -> Result<Stats> {
    let bin = cargo_fuzz()?;
    let corpus = work_dir().join("corpus").join(t.name);
    let seeds = fuzz_dir().join("corpus").join(t.name);
    let artifacts = work_dir().join("artifacts").join(t.name);
    for dir in [&corpus, &seeds, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = nightly(&bin)?;
    cmd.args(["fuzz", "run", "-O", "-s", sanitizer.flag(), "--target-dir"])
        .arg(sanitizer.build_dir())
        .arg(t.name)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(budget.flags())
        .arg(format!("-max_len={}", t.max_len))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=4096"]);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let start = std::time::Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .context("running cargo fuzz run")?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut stats = parse_output(&text);
    stats.seconds = start.elapsed().as_secs();
    // An interrupted run exits non-zero (72) with no artifact: not a crash, but not a clean
    // run either (the caller reports it as interrupted).
    if !status.success() && stats.crash.is_none() && !stats.interrupted {
        stats.crash =
            Some(format!("(no artifact; the fuzzer exited with {status}, see {})", log.display()));
    }
    Ok(stats)
}

/// Merges the scratch corpus into the committed one (only inputs that add coverage).
pub fn save_corpus(t: Target, sanitizer: Sanitizer) -> Result<()> {
    let bin = cargo_fuzz()?;
    let mut cmd = nightly(&bin)?;
    cmd.args(["fuzz", "run", "-O", "-s", sanitizer.flag(), "--target-dir"])
        .arg(sanitizer.build_dir())
        .arg(t.name)
        .arg(fuzz_dir().join("corpus").join(t.name))
        .arg(work_dir().join("corpus").join(t.name))
        .arg("--")
        .arg("-merge=1")
        .arg(format!("-max_len={}", t.max_len));
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    ensure!(status.success(), "merging the corpus of {} failed ({status})", t.name);
    Ok(())
}

/// `cargo xtask fuzz [TARGET] [--seconds N | --runs N] [--sanitizer S] [--save]`.
pub fn run(name: Option<&str>, budget: Budget, sanitizer: Sanitizer, save: bool) -> Result<bool> {
    let targets = match name {
        Some(n) => vec![target(n)?],
        None => TARGETS.to_vec(),
    };
    build(sanitizer)?;
    let mut clean = true;
    for t in targets {
        eprintln!("xtask: fuzzing {} for {budget}: {}", t.name, t.what);
        let log = work_dir().join(format!("{}.log", t.name));
        let stats = run_target(t, sanitizer, budget, &log)?;
        println!("{}", stats.line(t.name));
        clean &= stats.crash.is_none() && !stats.interrupted;
        // An interrupted run's new inputs are still worth keeping.
        if save {
            save_corpus(t, sanitizer)?;
        }
    }
    Ok(clean)
}

/// Seconds each target gets in `cargo xtask test`'s smoke pass (all together at most 30).
pub fn smoke_seconds() -> u64 {
    (30 / TARGETS.len() as u64).max(1)
}

/// `cargo xtask test`'s smoke pass: build, then every target briefly over its seed corpus.
pub fn smoke(logs: &Path) -> Vec<Verdict> {
    if let Err(e) = build(Sanitizer::Address) {
        return vec![Verdict::fail("fuzz/build", format!("{e:#}"))];
    }
    let mut out = vec![Verdict::pass("fuzz/build")];
    for t in TARGETS {
        let log = logs.join(format!("fuzz-{}.log", t.name));
        let name = format!("fuzz/{}", t.name);
        let budget = Budget::Seconds(smoke_seconds());
        out.push(match run_target(*t, Sanitizer::Address, budget, &log) {
            Ok(stats) if stats.crash.is_none() && !stats.interrupted && stats.executions > 0 => {
                Verdict::pass(name)
            }
            Ok(stats) => {
                Verdict::fail(name, format!("{}; log: {}", stats.line(t.name), log.display()))
            }
            Err(e) => Verdict::fail(name, format!("{e:#}")),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 312 ft: 313 corp: 1/8126b exec/s: 0 rss: 40Mb
#1024\tpulse  cov: 900 ft: 1200 corp: 20/30Kb lim: 4096 exec/s: 512 rss: 60Mb
#60147\tDONE   cov: 1272 ft: 1766 corp: 40/32Kb lim: 16384 exec/s: 1940 rss: 392Mb
Done 60147 runs in 31 second(s)
stat::number_of_executed_units: 60147
stat::average_exec_per_sec:     1940
";

    #[test]
    fn reads_libfuzzer_figures() {
        let s = parse_output(OUTPUT);
        assert_eq!((s.executions, s.coverage, s.features, s.corpus), (60147, 1272, 1766, 40));
        assert_eq!(s.crash, None);
        assert!(s.line("dt").contains("60147 executions"), "{}", s.line("dt"));
    }

    #[test]
    fn reads_a_crash() {
        let text = format!(
            "{OUTPUT}==1== ERROR: libFuzzer: deadly signal\n\
             artifact_prefix='/r/target/fuzz/artifacts/dt/'; Test unit written to /r/target/fuzz/artifacts/dt/crash-abc\n"
        );
        let s = parse_output(&text);
        assert_eq!(s.crash.as_deref(), Some("/r/target/fuzz/artifacts/dt/crash-abc"));
        assert!(s.line("dt").contains("CRASH"));
    }

    #[test]
    fn an_interrupted_run_is_not_a_crash() {
        let text = "#4\tpulse  cov: 9 ft: 9 corp: 2/8b exec/s: 4 rss: 30Mb\n\
                    ==17263== libFuzzer: run interrupted; exiting\n\
                    stat::number_of_executed_units: 495957\n";
        let s = parse_output(text);
        assert!(s.interrupted);
        assert_eq!((s.executions, s.crash.as_deref()), (495957, None));
        let line = s.line("abi");
        assert!(line.contains("interrupted") && !line.contains("CRASH"), "{line}");
    }

    #[test]
    fn every_target_has_a_source_and_a_seed_corpus() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{}\"", t.name)),
                "{} in fuzz/Cargo.toml",
                t.name
            );
            assert!(fuzz_dir().join(format!("fuzz_targets/{}.rs", t.name)).is_file());
            let seeds = std::fs::read_dir(fuzz_dir().join("corpus").join(t.name)).unwrap().count();
            assert!(seeds > 0, "{} has no seed inputs", t.name);
        }
        assert!(smoke_seconds() * TARGETS.len() as u64 <= 30);
        assert_eq!(Budget::Runs(10).flags(), ["-max_total_time=0", "-runs=10"]);
        assert_eq!(Budget::Seconds(5).flags(), ["-max_total_time=5", "-runs=-1"]);
        assert!(target("nope").is_err());
    }
}
