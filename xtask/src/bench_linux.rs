//! The Linux rows of `cargo xtask bench` (3: boot overhead, 4: EL2 share, 5: DMA through the
//! SMMU): the Debian kernel and the test initramfs booted under QEMU `-icount shift=0` without a
//! hypervisor, behind warden, and under KVM's pKVM and nVHE modes, with `warden.bench=linux` on
//! the command line so `/init` runs only `tests/linux/bench.sh`. See `docs/bench.md`.

use anyhow::{Context, Result, bail, ensure};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::Row;
use crate::cpio::Archive;
use crate::linux_host::{self, HostOptions, LinuxHost};
use crate::qemu::{self, Ending, Machine};

/// The text `/bin/warden-counter` writes to `/dev/kmsg` (the kernel timestamps it).
pub const COUNTER_MARK: &str = "warden-bench: counter mark";
/// The line Linux prints when it starts `/init`.
pub const RUN_INIT: &str = "Run /init as init process";
/// virtio-blk serial of the bench disk (`tests/linux/bench.sh` looks for it).
pub const DISK_SERIAL: &str = "warden-bench";
/// The bench disk: big enough for the longest `dd`.
pub const DISK_SIZE: u64 = 64 << 20;
/// Host CPUs: one, so that the time Linux spent idle (waiting for I/O included) is the time
/// QEMU skipped with nothing to run, and ticks minus idle time are instructions (docs/bench.md).
pub const HOST_CPUS: u32 = 1;
/// One run boots in about 5 s of wall time and reads the disk in a few more.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// QEMU options every bench boot gets, for repeatability (docs/bench.md says why each).
pub fn repeatable_qemu_args() -> Vec<String> {
    [
        "-icount",
        "shift=0,sleep=off,align=off",
        "-rtc",
        "base=2025-01-01T00:00:00,clock=vm",
        "-seed",
        "1",
        "-nic",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `-machine` options added to [`crate::qemu::machine_option`]: no random DT nodes (rng-seed,
/// kaslr-seed).
pub const MACHINE_EXTRA: &str = "dtb-randomness=off";

/// Kernel command-line words every bench boot gets besides [`linux_host::BASE_CMDLINE`].
/// The initcall trace events time Linux's SMMU probe (`tests/linux/bench.sh`, 2b); a small
/// buffer keeps their cost low and still holds every initcall's pair. No `idle=poll`: arm64
/// has no such parameter (Linux passes it to /init), and a CPU that polled would turn the wait
/// for QEMU's I/O thread into instructions; waiting in WFI, the wait is skipped time that
/// Linux counts as idle, which the figures subtract.
pub const BENCH_CMDLINE: &str = "nokaslr random.trust_cpu=off warden.bench=linux \
                                 trace_event=initcall:initcall_start,initcall:initcall_finish \
                                 trace_buf_size=256K";

/// One way of booting the same kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// No EL2 (`virtualization=off`): Linux at EL1 drives the SMMU itself.
    NoHypervisor,
    /// No EL2 and no SMMU (`iommu=none`): Linux does what it does under warden (which keeps
    /// the SMMU to itself), without warden.
    NoSmmu,
    /// warden at EL2, Linux at EL1 behind it, using warden's virtual SMMU (its DMA domains
    /// nested over warden's stage-2).
    Warden,
    /// The same with `iommu.passthrough=1`: Linux puts its devices in identity domains, which
    /// warden turns into stage-2-only confinement.
    WardenStage2Only,
    /// warden on the Snapdragon persona (`warden.persona=snapdragon`): Linux's `arm-smmu` on
    /// warden's virtual MMU-500, its context banks nested over warden's stage-2.
    WardenSnapdragon,
    /// Linux entered at EL2, `kvm-arm.mode=protected`.
    Pkvm,
    /// Linux entered at EL2, `kvm-arm.mode=nvhe`.
    KvmNvhe,
}

impl Config {
    pub const ALL: [Config; 7] = [
        Config::NoHypervisor,
        Config::NoSmmu,
        Config::Warden,
        Config::WardenStage2Only,
        Config::WardenSnapdragon,
        Config::Pkvm,
        Config::KvmNvhe,
    ];

    /// Whether warden runs in this configuration.
    pub fn with_warden(self) -> bool {
        matches!(self, Config::Warden | Config::WardenStage2Only | Config::WardenSnapdragon)
    }

    pub fn key(self) -> &'static str {
        match self {
            Config::NoHypervisor => "no-hypervisor",
            Config::NoSmmu => "no-hypervisor-no-smmu",
            Config::Warden => "warden",
            Config::WardenStage2Only => "warden-stage2-only",
            Config::WardenSnapdragon => "warden-snapdragon",
            Config::Pkvm => "pkvm",
            Config::KvmNvhe => "kvm-nvhe",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Config::NoHypervisor => "(a) no hypervisor (virtualization=off)",
            Config::NoSmmu => "(a′) no hypervisor, no SMMU (iommu=none)",
            Config::Warden => "(b) warden (Linux on its virtual SMMU)",
            Config::WardenStage2Only => "(b′) warden, iommu.passthrough=1",
            Config::WardenSnapdragon => {
                "(b″) warden, Snapdragon persona (Linux on its virtual MMU-500)"
            }
            Config::Pkvm => "(c) pKVM (kvm-arm.mode=protected)",
            Config::KvmNvhe => "(d) KVM nVHE (kvm-arm.mode=nvhe)",
        }
    }

    fn kvm_mode(self) -> Option<&'static str> {
        match self {
            Config::Pkvm => Some("protected"),
            Config::KvmNvhe => Some("nvhe"),
            _ => None,
        }
    }

    /// Whether KVM's dmesg line `kvm [1]: ...` (after the prefix) proves its hypervisor
    /// started in this configuration's mode. pKVM says `Protected nVHE` or, on a CPU with
    /// FEAT_E2H0-less VHE such as QEMU's `max`, `Protected hVHE` (its EL2 code runs with E2H
    /// set; still the protected mode).
    pub fn kvm_line_ok(self, line: &str) -> bool {
        match self {
            Config::Pkvm => {
                line == "Protected nVHE mode initialized successfully"
                    || line == "Protected hVHE mode initialized successfully"
            }
            Config::KvmNvhe => line == "Hyp nVHE mode initialized successfully",
            _ => true,
        }
    }

    /// Machine options besides [`MACHINE_EXTRA`].
    fn machine_extra(self) -> String {
        match self {
            Config::NoSmmu => format!("{MACHINE_EXTRA},iommu=none"),
            _ => MACHINE_EXTRA.to_owned(),
        }
    }
}

/// The kernel command line of a bench boot.
pub fn cmdline(config: Config, dd_bytes: u64, dd_runs: u32) -> String {
    let mut line = format!(
        "{} {BENCH_CMDLINE} warden.bench_dd_bytes={dd_bytes} warden.bench_dd_runs={dd_runs}",
        linux_host::BASE_CMDLINE
    );
    if !config.with_warden() {
        line.push_str(" warden.absent=1");
    }
    if config == Config::WardenStage2Only {
        line.push_str(" iommu.passthrough=1");
    }
    if let (Config::WardenSnapdragon, Some(word)) =
        (config, crate::Persona::Snapdragon.cmdline_word())
    {
        let _ = write!(line, " {word}");
    }
    if let Some(mode) = config.kvm_mode() {
        let _ = write!(line, " kvm-arm.mode={mode}");
    }
    line
}

/// The bench disk, read-only, behind the SMMU like every Linux host device.
pub fn device_args(disk: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id=bench,format=raw,readonly=on,file={}", disk.display()),
        "-device".into(),
        format!(
            "virtio-blk-pci,drive=bench,serial={DISK_SERIAL},iommu_platform=on,disable-legacy=on"
        ),
    ]
}

/// Load address of [`counter_program`] (any page-aligned user address works).
const COUNTER_BASE: u64 = 0x40_0000;
/// Offset of the code in the file: right after the ELF header and the one program header.
const COUNTER_CODE_OFFSET: u64 = 64 + 56;

/// `/warden-counter`: a static arm64 Linux program (no libc) that reads CNTVCT_EL0, writes
/// [`COUNTER_MARK`] and a newline to fd 3, reads CNTVCT_EL0 again and writes both counter
/// values to stdout as two little-endian 64-bit words (`od -An -tu8` prints them). busybox has
/// no way to read the counter, and printk time starts late (see `docs/bench.md`).
pub fn counter_program() -> Vec<u8> {
    // The instructions (encodings checked with `llvm-mc -triple=aarch64 -show-encoding`).
    const CODE: [u32; 19] = [
        0xd503_3fdf, // isb
        0xd53b_e053, // mrs  x19, cntvct_el0
        0xd280_0060, // mov  x0, #3
        0x1000_0201, // adr  x1, message (pc + 0x40)
        0xd280_0362, // mov  x2, #27 (the message's length)
        0xd280_0808, // mov  x8, #64 (write)
        0xd400_0001, // svc  #0
        0xd503_3fdf, // isb
        0xd53b_e054, // mrs  x20, cntvct_el0
        0xd100_43ff, // sub  sp, sp, #16
        0xa900_53f3, // stp  x19, x20, [sp]
        0xd280_0020, // mov  x0, #1
        0x9100_03e1, // mov  x1, sp
        0xd280_0202, // mov  x2, #16
        0xd280_0808, // mov  x8, #64 (write)
        0xd400_0001, // svc  #0
        0xd280_0000, // mov  x0, #0
        0xd280_0ba8, // mov  x8, #93 (exit)
        0xd400_0001, // svc  #0
    ];
    let mut body: Vec<u8> = CODE.iter().flat_map(|w| w.to_le_bytes()).collect();
    body.extend_from_slice(COUNTER_MARK.as_bytes());
    body.push(b'\n');
    let total = COUNTER_CODE_OFFSET + body.len() as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // ELF header: 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(COUNTER_BASE + COUNTER_CODE_OFFSET).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD, read + execute, the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, COUNTER_BASE, COUNTER_BASE, total, total, 0x1_0000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&body);
    elf
}

/// The bench initramfs: the test initramfs with a second cpio archive appended (Linux unpacks
/// them in turn) holding `/bench.sh` and `/warden-counter`.
pub fn bench_initramfs(base: &[u8], bench_sh: &[u8]) -> Result<Vec<u8>> {
    ensure!(base.starts_with(b"070701"), "the test initramfs is not a newc cpio archive");
    let mut extra = Archive::new();
    extra.file("bench.sh", 0o755, bench_sh.to_vec())?;
    extra.file("warden-counter", 0o755, counter_program())?;
    let mut out = base.to_vec();
    // Each archive starts 4-byte aligned.
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(&extra.to_bytes()?);
    Ok(out)
}

/// A console line's printk timestamp (`[    1.007961] ...`) in ns, and the text after it.
pub fn printk_time(line: &str) -> Option<(u64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, text) = rest.split_once(']')?;
    let (secs, micros) = stamp.trim().split_once('.')?;
    if micros.len() != 6 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    Some((secs.checked_mul(1_000_000_000)?.checked_add(micros * 1000)?, text.trim_start()))
}

/// The printk timestamp (ns) of the first console line whose text contains `needle`.
fn printk_time_of(lines: &[String], needle: &str) -> Option<u64> {
    lines.iter().filter_map(|l| printk_time(l)).find(|(_, text)| text.contains(needle)).map(|t| t.0)
}

/// A number as `bench.sh` prints it: decimal, or hex with `0x` (lib.sh's 64-bit values).
fn number(word: &str) -> Result<u64> {
    let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.with_context(|| format!("{word:?} is not a number"))
}

/// warden's `TRAP_STATS` (the ABI's own type), as `/init` read it.
pub use warden_abi::stats::TrapStats;

/// Why `TRAP_STATS` has no figures, or the figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapStatsLine {
    Values(TrapStats),
    Unavailable(String),
}

/// `bench-linux: trap-stats T E N C D O` (hex or decimal) or `... unavailable: why`.
pub fn parse_trap_stats(lines: &[String]) -> Result<Option<TrapStatsLine>> {
    parse_trap_stats_line(lines, "trap-stats")
}

/// A `bench-linux: KEY` line of `TRAP_STATS` values (or `unavailable: why`).
fn parse_trap_stats_line(lines: &[String], key: &str) -> Result<Option<TrapStatsLine>> {
    let Some(rest) = bench_value(lines, key) else { return Ok(None) };
    if let Some(why) = rest.strip_prefix("unavailable:") {
        return Ok(Some(TrapStatsLine::Unavailable(why.trim().to_owned())));
    }
    let values = rest.split_ascii_whitespace().map(number).collect::<Result<Vec<_>>>()?;
    let [traps, el2_ticks, now, calls, data_aborts, other] = values[..] else {
        bail!("trap-stats line has {} values, expected 6: {rest:?}", values.len());
    };
    Ok(Some(TrapStatsLine::Values(TrapStats { traps, el2_ticks, now, calls, data_aborts, other })))
}

/// The text after `bench-linux: KEY ` on the first such line.
fn bench_value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("bench-linux: {key}");
    lines.iter().find_map(|l| {
        let rest = l.trim_end().split_once(&prefix)?.1;
        (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim_start())
    })
}

/// One `dd`: counter ticks between the reads around it, and the bytes dd says it copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DdSample {
    pub ticks: u64,
    /// ns (= ticks) Linux spent idle meanwhile: QEMU skipped them.
    pub idle: u64,
    pub bytes: u64,
}

impl DdSample {
    /// Instructions executed: ticks minus idle time.
    pub fn instructions(&self) -> u64 {
        self.ticks.saturating_sub(self.idle)
    }
}

/// The block size of `tests/linux/bench.sh`'s `dd` (`bs=1048576`).
pub const DD_BLOCK: u64 = 1 << 20;

/// `bench-linux: dd TICKS IDLE F+P records out` lines (the tick count, the idle ns, then busybox
/// dd's last line: F full and P partial blocks of [`DD_BLOCK`] written to /dev/null).
pub fn parse_dd(lines: &[String]) -> Result<Vec<DdSample>> {
    let prefix = "bench-linux: dd ";
    let mut out = Vec::new();
    for line in lines {
        let Some((_, rest)) = line.split_once(prefix) else { continue };
        if rest.starts_with("unavailable:") || rest.starts_with("failed:") {
            continue;
        }
        let mut words = rest.split_ascii_whitespace();
        let ticks = number(words.next().unwrap_or_default())
            .with_context(|| format!("dd line {line:?}"))?;
        let idle = number(words.next().unwrap_or_default())
            .with_context(|| format!("dd line {line:?}: no idle time"))?;
        let records = words.next().unwrap_or_default();
        ensure!(
            words.next() == Some("records") && words.next() == Some("out"),
            "dd line {line:?}: not busybox dd's `F+P records out`"
        );
        let (full, partial) = records
            .split_once('+')
            .with_context(|| format!("dd line {line:?}: no F+P record count"))?;
        ensure!(number(partial)? == 0, "dd line {line:?}: a partial block (short read)");
        let bytes = number(full)?
            .checked_mul(DD_BLOCK)
            .with_context(|| format!("dd line {line:?}: record count overflows"))?;
        out.push(DdSample { ticks, idle, bytes });
    }
    Ok(out)
}

/// What one bench boot measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// Counter ticks (= instructions and idle skips) from power-on to `Run /init`.
    pub boot_ticks: u64,
    /// Linux's own timestamp of `Run /init` (starts when sched_clock does, not at power-on).
    pub printk_run_init_ns: u64,
    /// ns (= ticks) Linux had spent idle at the counter mark (QEMU skipped them).
    pub idle_at_mark: u64,
    pub trap_stats: Option<TrapStatsLine>,
    /// `TRAP_STATS` again after the dd runs (warden only): the difference is warden's share of
    /// the DMA path.
    pub trap_stats_after_dd: Option<TrapStatsLine>,
    /// KVM's `... mode initialized successfully` line (or what it said instead).
    pub kvm: Option<String>,
    pub counter_overhead: Option<u64>,
    pub dd: Vec<DdSample>,
    /// Why the dd row has no samples (`bench-linux: dd unavailable/failed: ...`).
    pub dd_problem: Option<String>,
    /// Ticks of the initcall that probed Linux's SMMU (`arm_smmu_driver_init` for the SMMUv3,
    /// `arm_smmu_init` for the MMU-500), or why there is no figure.
    pub smmu_probe: Option<Result<u64, String>>,
}

/// A trace timestamp (`1.388527`, seconds with 6 decimals) in ns.
fn trace_seconds(word: &str) -> Option<u64> {
    printk_time(&format!("[{word}]")).map(|(ns, _)| ns)
}

/// `bench-linux: smmu-probe START FINISH` → FINISH − START in ns (= ticks).
fn parse_smmu_probe(lines: &[String]) -> Option<Result<u64, String>> {
    let rest = bench_value(lines, "smmu-probe")?;
    if let Some(why) = rest.strip_prefix("unavailable:") {
        return Some(Err(why.trim().to_owned()));
    }
    let times: Vec<Option<u64>> = rest.split_ascii_whitespace().map(trace_seconds).collect();
    Some(match times[..] {
        [Some(start), Some(finish)] if finish >= start => Ok(finish - start),
        _ => Err(format!("`smmu-probe {rest}` is not START FINISH (seconds, in order)")),
    })
}

/// Parses the console of one bench boot.
pub fn parse_run(lines: &[String]) -> Result<RunResult> {
    ensure!(
        lines.iter().any(|l| l.trim_end().ends_with("bench-linux: done")),
        "/bench.sh did not finish (no `bench-linux: done`)"
    );
    let run_init =
        printk_time_of(lines, RUN_INIT).with_context(|| format!("no printk line `{RUN_INIT}`"))?;
    let mark = printk_time_of(lines, COUNTER_MARK)
        .with_context(|| format!("no printk line `{COUNTER_MARK}`"))?;
    let counters = bench_value(lines, "counter-mark").context("no `bench-linux: counter-mark`")?;
    let words: Vec<&str> = counters.split_ascii_whitespace().collect();
    let [before, after, "idle", idle] = words[..] else {
        bail!("counter-mark line {counters:?} is not `BEFORE AFTER idle NS`");
    };
    let (before, after, idle_at_mark) = (number(before)?, number(after)?, number(idle)?);
    ensure!(before <= after, "counter went backwards around the mark: {before} > {after}");
    ensure!(mark >= run_init, "the mark is timestamped before `{RUN_INIT}`");
    // The mark's timestamp is taken inside the write, between the two counter reads; `before`
    // is the nearer one (the console output comes after the timestamp).
    let boot_ticks = before
        .checked_sub(mark - run_init)
        .context("the counter is behind printk time: is CNTVOFF not zero?")?;
    // KVM's verdict: its success line, else the first line saying why not.
    let kvm_lines: Vec<&str> = lines
        .iter()
        .filter_map(|l| printk_time(l).map(|(_, text)| text))
        .filter(|t| t.starts_with("kvm ["))
        .filter_map(|t| t.split_once("]: ").map(|(_, m)| m))
        .collect();
    let kvm = kvm_lines
        .iter()
        .find(|m| m.ends_with("mode initialized successfully"))
        .or_else(|| {
            kvm_lines
                .iter()
                .find(|m| m.contains("not available") || m.contains("error") || m.contains("fail"))
        })
        .map(|m| (*m).to_owned());
    let dd_problem = lines.iter().find_map(|l| {
        let (_, rest) = l.split_once("bench-linux: dd ")?;
        let why = rest.strip_prefix("unavailable:").or_else(|| rest.strip_prefix("failed:"))?;
        Some(why.trim().to_owned())
    });
    Ok(RunResult {
        boot_ticks,
        printk_run_init_ns: run_init,
        idle_at_mark,
        trap_stats: parse_trap_stats(lines)?,
        trap_stats_after_dd: parse_trap_stats_line(lines, "trap-stats-after-dd")?,
        kvm,
        counter_overhead: bench_value(lines, "counter-overhead").map(number).transpose()?,
        dd: parse_dd(lines)?,
        dd_problem,
        smmu_probe: parse_smmu_probe(lines),
    })
}

/// Every run of one configuration, or why it could not run.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigResult {
    pub config: Config,
    pub runs: Vec<RunResult>,
    pub error: Option<String>,
}

impl ConfigResult {
    fn row(&self, name: &str, unit: &str, f: impl Fn(&RunResult) -> Vec<u64>) -> Option<Row> {
        let samples: Vec<u64> = self.runs.iter().flat_map(f).collect();
        (!samples.is_empty()).then(|| Row {
            name: format!("linux/{name}/{}", self.config.key()),
            unit: unit.into(),
            samples,
        })
    }

    /// Counter ticks from power-on to `Run /init`, one sample per boot.
    pub fn boot_ticks(&self) -> Option<Row> {
        self.row("boot_ticks", "ticks", |r| vec![r.boot_ticks])
    }

    /// Instructions from power-on to `Run /init`: ticks minus idle (the idle time between
    /// `Run /init` and the mark is included, and nil: /init runs without a pause).
    pub fn boot(&self) -> Option<Row> {
        self.row("boot", "instructions", |r| vec![r.boot_ticks.saturating_sub(r.idle_at_mark)])
    }

    /// Ticks of Linux's SMMU probe (its initcall), one sample per boot that has it.
    pub fn smmu_probe(&self) -> Option<Row> {
        self.row("smmu_probe", "ticks", |r| r.smmu_probe.iter().flatten().copied().collect())
    }

    /// Counter ticks per `dd`, the counter reads' own cost subtracted.
    pub fn dd(&self) -> Option<Row> {
        self.row("dd", "instructions", |r| {
            let overhead = r.counter_overhead.unwrap_or(0);
            r.dd.iter().map(|d| d.instructions().saturating_sub(overhead)).collect()
        })
    }

    /// Counter ticks per `dd` (idle included), the counter reads' cost subtracted.
    pub fn dd_ticks(&self) -> Option<Row> {
        self.row("dd_ticks", "ticks", |r| {
            let overhead = r.counter_overhead.unwrap_or(0);
            r.dd.iter().map(|d| d.ticks.saturating_sub(overhead)).collect()
        })
    }

    fn stats(&self) -> Vec<TrapStats> {
        self.runs
            .iter()
            .filter_map(|r| match &r.trap_stats {
                Some(TrapStatsLine::Values(s)) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// warden's work during the dd loop of each run: `TRAP_STATS` after minus before, with the
    /// instructions the dd runs took.
    fn dd_el2(&self) -> Vec<(TrapStats, u64)> {
        self.runs
            .iter()
            .filter_map(|r| match (&r.trap_stats, &r.trap_stats_after_dd) {
                (Some(TrapStatsLine::Values(a)), Some(TrapStatsLine::Values(b))) => {
                    let delta = TrapStats {
                        traps: b.traps.saturating_sub(a.traps),
                        el2_ticks: b.el2_ticks.saturating_sub(a.el2_ticks),
                        now: b.now.saturating_sub(a.now),
                        calls: b.calls.saturating_sub(a.calls),
                        data_aborts: b.data_aborts.saturating_sub(a.data_aborts),
                        other: b.other.saturating_sub(a.other),
                    };
                    let dd: u64 = r.dd.iter().map(DdSample::instructions).sum();
                    Some((delta, dd))
                }
                _ => None,
            })
            .collect()
    }

    fn first_problem(&self, f: impl Fn(&RunResult) -> Option<String>) -> Option<String> {
        self.runs.iter().find_map(f)
    }
}

/// Rows 3, 4 and 5.
#[derive(Clone, Debug, PartialEq)]
pub struct LinuxReport {
    pub runs_per_config: u32,
    pub dd_bytes: u64,
    pub configs: Vec<ConfigResult>,
}

fn config(r: &LinuxReport, c: Config) -> Option<&ConfigResult> {
    r.configs.iter().find(|x| x.config == c)
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 { "–".into() } else { format!("{:.3}×", a as f64 / b as f64) }
}

fn spread(row: &Row) -> String {
    let median = row.median().max(1) as f64;
    format!("{:.2} %", (row.max() - row.min()) as f64 * 100.0 / median)
}

/// MiB per second of virtual time (10^9 ticks).
fn mib_per_s(bytes: u64, ticks: u64) -> String {
    if ticks == 0 {
        return "–".into();
    }
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64 / (ticks as f64 / 1e9))
}

/// Linux's boot-time SMMU probe per configuration (ticks of its initcall).
fn render_smmu_probe(md: &mut String, r: &LinuxReport) {
    let _ = writeln!(
        md,
        "\n## Linux's SMMU probe (its driver's initcall, at boot)\n\n\
         Counter ticks between the `initcall_start` and `initcall_finish` trace events of the \
         built-in driver's initcall that probes the SMMU (±1000: the events print µs): \
         arm-smmu-v3's `arm_smmu_driver_init`, or on the Snapdragon persona (b″) arm-smmu's \
         `arm_smmu_init` probing warden's MMU-500. Under warden every SMMU register access of \
         the probe traps and is emulated; without an SMMU (a′) the initcall only registers the \
         driver.\n"
    );
    let _ = writeln!(md, "| configuration | probe ticks | range | vs (a) |");
    let _ = writeln!(md, "|---|---:|---|---:|");
    let base = config(r, Config::NoHypervisor).and_then(ConfigResult::smmu_probe);
    for c in &r.configs {
        match c.smmu_probe() {
            Some(row) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {}–{} | {} |",
                    c.config.label(),
                    row.median(),
                    row.min(),
                    row.max(),
                    ratio(row.median(), base.as_ref().map_or(0, Row::median))
                );
            }
            None => {
                let why = c
                    .first_problem(|run| run.smmu_probe.clone().and_then(Result::err))
                    .or_else(|| c.error.clone())
                    .unwrap_or_else(|| "no smmu-probe line".into());
                let _ = writeln!(md, "| {} | – | – | not available: {why} |", c.config.label());
            }
        }
    }
}

/// The Markdown sections for rows 3, 4 and 5.
pub fn render_markdown(r: &LinuxReport) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Linux boot overhead (power-on to `{RUN_INIT}`)\n\n\
         Debian 6.12, {HOST_CPUS} host CPU, 1 GiB, same QEMU options (`-icount \
         shift=0,sleep=off`), {} boot(s) per configuration. Instructions = counter \
         ticks minus the time Linux spent idle (QEMU skips it; 0 before `/init` with one CPU); \
         median [min–max], spread = (max − min) / median. Ticks: the counter itself (idle included). Before \
         Linux's clock: ticks before sched_clock starts (warden's boot shows there).\n",
        r.runs_per_config
    );
    let _ = writeln!(
        md,
        "| configuration | instructions to /init | range | spread | vs (a) | vs (a′) | ticks | \
         before Linux's clock | note |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|---|");
    let median_of = |c: Config| config(r, c).and_then(ConfigResult::boot).map(|x| x.median());
    let (base, base_no_smmu) = (median_of(Config::NoHypervisor), median_of(Config::NoSmmu));
    for c in &r.configs {
        let note = match &c.error {
            Some(e) => format!("could not run: {e}"),
            None if matches!(c.config, Config::Pkvm | Config::KvmNvhe) => {
                match c.first_problem(|run| run.kvm.clone()) {
                    Some(k) if c.config.kvm_line_ok(&k) => format!("dmesg: {k}"),
                    Some(k) => format!("NOT in this mode; dmesg: {k}"),
                    None => "no `kvm [1]:` mode line in dmesg".into(),
                }
            }
            None => String::new(),
        };
        match c.boot() {
            Some(row) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {}–{} | {} | {} | {} | {} | {} | {note} |",
                    c.config.label(),
                    row.median(),
                    row.min(),
                    row.max(),
                    spread(&row),
                    ratio(row.median(), base.unwrap_or(0)),
                    ratio(row.median(), base_no_smmu.unwrap_or(0)),
                    c.boot_ticks().map_or(0, |x| x.median()),
                    c.row("before_clock", "instructions", |r| {
                        vec![r.boot_ticks.saturating_sub(r.printk_run_init_ns)]
                    })
                    .map_or(0, |x| x.median())
                );
            }
            None => {
                let _ =
                    writeln!(md, "| {} | – | – | – | – | – | – | – | {note} |", c.config.label());
            }
        }
    }
    render_smmu_probe(&mut md, r);
    let _ = writeln!(
        md,
        "\n## EL2 share (warden, power-on to /init's first command)\n\n\
         warden's `TRAP_STATS`: counter ticks spent handling traps at EL2 as a share of all \
         ticks so far (warden's own boot before Linux is not a trap: it is in the boot row's \
         difference), and the traps by kind.\n"
    );
    match config(r, Config::Warden) {
        Some(c) if !c.stats().is_empty() => {
            let stats = c.stats();
            let median = |f: fn(&TrapStats) -> u64| {
                Row {
                    name: String::new(),
                    unit: String::new(),
                    samples: stats.iter().map(f).collect(),
                }
                .median()
            };
            let (el2, now) = (median(|s| s.el2_ticks), median(|s| s.now));
            let _ = writeln!(
                md,
                "| EL2 ticks | all ticks | EL2 share | traps | SMCCC calls | stage-2 data aborts | other |"
            );
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                md,
                "| {el2} | {now} | {:.4} % | {} | {} | {} | {} |",
                el2 as f64 * 100.0 / now.max(1) as f64,
                median(|s| s.traps),
                median(|s| s.calls),
                median(|s| s.data_aborts),
                median(|s| s.other)
            );
        }
        Some(c) => {
            let why = c
                .first_problem(|run| match &run.trap_stats {
                    Some(TrapStatsLine::Unavailable(why)) => Some(why.clone()),
                    _ => None,
                })
                .or_else(|| c.error.clone())
                .unwrap_or_else(|| "/init printed no trap-stats line".into());
            let _ = writeln!(md, "not available: {why}");
        }
        None => {
            let _ = writeln!(md, "not available: warden not measured");
        }
    }
    let _ = writeln!(
        md,
        "\n## DMA through the SMMU (virtio-blk sequential read)\n\n\
         `dd` of {} from the read-only virtio-blk disk to /dev/null, `bs=1M iflag=direct` \
         (every byte DMA through the SMMU), timed with the counter in the guest (the reads' \
         own cost subtracted). Instructions = ticks minus Linux's idle and I/O-wait time (the \
         CPU waits for QEMU's I/O thread in WFI, and QEMU skips that time); median [min–max]; \
         MiB/s = MiB per 10^9 instructions.\n",
        crate::bench::human_size(r.dd_bytes)
    );
    let _ = writeln!(
        md,
        "| configuration | instructions per dd | range | spread | MiB/s | vs (a) | vs (a′) | \
         ticks (median) |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|");
    let dd_median = |c: Config| config(r, c).and_then(ConfigResult::dd).map(|x| x.median());
    let (dd_base, dd_no_smmu) = (dd_median(Config::NoHypervisor), dd_median(Config::NoSmmu));
    for c in &r.configs {
        let label = match c.config {
            Config::NoHypervisor => "(a) Linux's own SMMU, no hypervisor",
            Config::NoSmmu => "(a′) no SMMU at all, no hypervisor",
            Config::WardenStage2Only => {
                "(b) warden, stage-2-only confinement (iommu.passthrough=1)"
            }
            Config::Warden => {
                "(c) warden's virtual SMMU, Linux's DMA domains nested over warden's stage-2"
            }
            Config::WardenSnapdragon => {
                "(c′) warden's virtual MMU-500 (Snapdragon persona), Linux's context banks \
                 nested over warden's stage-2"
            }
            Config::Pkvm => "pKVM (Linux's own SMMU; pKVM does not manage it)",
            Config::KvmNvhe => "KVM nVHE (Linux's own SMMU)",
        };
        match c.dd() {
            Some(row) => {
                let _ = writeln!(
                    md,
                    "| {label} | {} | {}–{} | {} | {} | {} | {} | {} |",
                    row.median(),
                    row.min(),
                    row.max(),
                    spread(&row),
                    mib_per_s(r.dd_bytes, row.median()),
                    ratio(row.median(), dd_base.unwrap_or(0)),
                    ratio(row.median(), dd_no_smmu.unwrap_or(0)),
                    c.dd_ticks().map_or(0, |x| x.median())
                );
            }
            None => {
                let why = c
                    .first_problem(|run| run.dd_problem.clone())
                    .or_else(|| c.error.clone())
                    .unwrap_or_else(|| "no dd line".into());
                let _ = writeln!(md, "| {label} | – | – | – | – | – | – | not available: {why} |");
            }
        }
    }
    let el2_rows: Vec<(Config, Vec<(TrapStats, u64)>)> = r
        .configs
        .iter()
        .filter(|c| c.config.with_warden())
        .map(|c| (c.config, c.dd_el2()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !el2_rows.is_empty() {
        let _ = writeln!(
            md,
            "\nwarden's part of it (`TRAP_STATS` before and after the dd loop; the loop's \
             traps and EL2 ticks against the dd runs' instructions, median over boots):\n"
        );
        let _ = writeln!(
            md,
            "| configuration | traps | SMMU/control-page accesses | calls | EL2 ticks | share of the dd instructions | EL2 ticks per trap |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for (config, v) in el2_rows {
            let med = |f: &dyn Fn(&(TrapStats, u64)) -> u64| {
                Row { name: String::new(), unit: String::new(), samples: v.iter().map(f).collect() }
                    .median()
            };
            let (traps, aborts, calls) =
                (med(&|x| x.0.traps), med(&|x| x.0.data_aborts), med(&|x| x.0.calls));
            let (el2, dd) = (med(&|x| x.0.el2_ticks), med(&|x| x.1));
            let _ = writeln!(
                md,
                "| {} | {traps} | {aborts} | {calls} | {el2} | {:.1} % | {} |",
                config.label(),
                el2 as f64 * 100.0 / dd.max(1) as f64,
                el2 / traps.max(1)
            );
        }
    }
    md
}

fn stats_json(s: &TrapStats) -> serde_json::Value {
    serde_json::json!({
        "traps": s.traps, "el2_ticks": s.el2_ticks, "now": s.now, "calls": s.calls,
        "data_aborts": s.data_aborts, "other": s.other,
    })
}

fn row_json(row: Option<Row>) -> serde_json::Value {
    row.map_or(serde_json::Value::Null, |x| {
        serde_json::json!({
            "name": x.name, "unit": x.unit, "samples": x.samples,
            "min": x.min(), "median": x.median(), "max": x.max(),
        })
    })
}

/// Rows 3–5 as JSON, every run's raw figures included.
pub fn render_json(r: &LinuxReport) -> serde_json::Value {
    let configs: Vec<serde_json::Value> = r
        .configs
        .iter()
        .map(|c| {
            let runs: Vec<serde_json::Value> = c
                .runs
                .iter()
                .map(|run| {
                    serde_json::json!({
                        "boot_ticks": run.boot_ticks,
                        "idle_ns_at_mark": run.idle_at_mark,
                        "printk_run_init_ns": run.printk_run_init_ns,
                        "trap_stats": match &run.trap_stats {
                            Some(TrapStatsLine::Values(s)) => stats_json(s),
                            Some(TrapStatsLine::Unavailable(why)) =>
                                serde_json::json!({ "unavailable": why }),
                            None => serde_json::Value::Null,
                        },
                        "kvm": run.kvm,
                        "counter_overhead_ticks": run.counter_overhead,
                        "dd": run.dd.iter().map(|d| serde_json::json!({
                            "ticks": d.ticks, "idle_ns": d.idle, "bytes": d.bytes }))
                            .collect::<Vec<_>>(),
                        "dd_problem": run.dd_problem,
                        "smmu_probe_ticks": match &run.smmu_probe {
                            Some(Ok(ticks)) => serde_json::json!(ticks),
                            Some(Err(why)) => serde_json::json!({ "unavailable": why }),
                            None => serde_json::Value::Null,
                        },
                    })
                })
                .collect();
            serde_json::json!({
                "config": c.config.key(),
                "label": c.config.label(),
                "error": c.error,
                "boot": row_json(c.boot()),
                "boot_ticks": row_json(c.boot_ticks()),
                "dd": row_json(c.dd()),
                "dd_ticks": row_json(c.dd_ticks()),
                "smmu_probe": row_json(c.smmu_probe()),
                "runs": runs,
            })
        })
        .collect();
    serde_json::json!({
        "method": "QEMU -icount shift=0,sleep=off, one host CPU; guest counter ticks (1 GHz) = \
                   instructions plus skipped idle time; instructions = ticks - Linux's idle ns",
        "runs_per_config": r.runs_per_config,
        "dd_bytes": r.dd_bytes,
        "configs": configs,
    })
}

/// Boots `machine` once and parses what `/bench.sh` printed.
fn boot_once(qemu: &Path, machine: &Machine, log: &Path) -> Result<RunResult> {
    let run =
        qemu::run_captured(machine.command(qemu), RUN_TIMEOUT, log, &|_| false, Duration::ZERO)?;
    if let Ending::TimedOut(t) = run.ending {
        bail!("no power-off within {} s (see {})", t.as_secs(), log.display());
    }
    parse_run(&run.lines).with_context(|| format!("see {}", log.display()))
}

/// The machine for one configuration (warden's image packed, its DT attached).
fn machine_for(
    qemu: &Path,
    config: Config,
    host: &LinuxHost,
    warden: &Path,
    opts: &HostOptions,
) -> Result<Machine> {
    let mut m = match config {
        Config::Warden | Config::WardenStage2Only | Config::WardenSnapdragon => {
            let mut m = linux_host::machine(host, Some(warden), opts)?;
            m.machine_extra = Some(config.machine_extra());
            qemu::attach_warden_dt(qemu, &mut m, "bench-linux")?;
            m
        }
        _ => {
            let mut m = linux_host::machine(host, None, opts)?;
            m.machine_extra = Some(config.machine_extra());
            m.virtualization = config.kvm_mode().is_some();
            m
        }
    };
    m.extra = repeatable_qemu_args();
    Ok(m)
}

fn work_dir() -> PathBuf {
    crate::bench::output_dir().join("linux")
}

/// Runs rows 3–5: `runs` boots per configuration, each reading `dd_bytes` `dd_runs` times.
pub fn run(qemu: &Path, warden: &Path, quick: bool) -> Result<LinuxReport> {
    let (runs, dd_bytes, dd_runs) = if quick { (1, 4 << 20, 1) } else { (5, DISK_SIZE, 3) };
    let mut opts = HostOptions::new(work_dir());
    opts.smp = HOST_CPUS;
    let prepared = linux_host::prepare(&opts)?;
    let base = std::fs::read(&prepared.initrd)
        .with_context(|| format!("reading {}", prepared.initrd.display()))?;
    let bench_sh = crate::initramfs::tests_dir().join("bench.sh");
    let bench_sh =
        std::fs::read(&bench_sh).with_context(|| format!("reading {}", bench_sh.display()))?;
    let initrd = work_dir().join("bench-initramfs.cpio");
    std::fs::write(&initrd, bench_initramfs(&base, &bench_sh)?)?;
    let disk = work_dir().join("bench-disk.img");
    let file = std::fs::File::create(&disk)?;
    // Sparse: QEMU reads the holes as zeros, at the same guest cost as data.
    file.set_len(DISK_SIZE)?;
    let mut configs = Vec::new();
    for config in Config::ALL {
        let host = LinuxHost {
            kernel: prepared.kernel.clone(),
            initrd: initrd.clone(),
            cmdline: cmdline(config, dd_bytes, dd_runs),
            devices: device_args(&disk),
        };
        let machine = machine_for(qemu, config, &host, warden, &opts)?;
        let mut result = ConfigResult { config, runs: Vec::new(), error: None };
        for i in 0..runs {
            let log = crate::bench::output_dir().join(format!("linux-{}-{i}.log", config.key()));
            eprintln!("xtask: bench: Linux {} boot {}/{runs}", config.key(), i + 1);
            match boot_once(qemu, &machine, &log) {
                Ok(run) => result.runs.push(run),
                Err(e) => {
                    result.error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        if let (Some(e), Config::NoHypervisor | Config::NoSmmu | Config::Warden) =
            (&result.error, config)
        {
            bail!("bench Linux {}: {e}", config.key());
        }
        configs.push(result);
    }
    Ok(LinuxReport { runs_per_config: runs, dd_bytes, configs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// The console of a bench boot under warden (Debian 6.12 under QEMU 10.0.2, trimmed).
    const WARDEN_RUN: &str = "\
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.000000] sched_clock: 61 bits at 1000MHz, resolution 1ns, wraps every 4398046511103ns
[    0.061911] kvm [1]: HYP mode not available
[    1.007961] Run /init as init process
bench-linux: trap-stats 0x0000000000000a3c 0x00000000003d0f12 0x0000000052a1c3e0 0x000000000000001b 0x0000000000000a15 0x0000000000000006
[    1.046002] warden-bench: counter mark
bench-linux: counter-mark 1386324480 1386339021 idle 1000
bench-linux: smmu-probe 1.388002 1.391230
bench-linux: counter-overhead 1402311
bench-linux: dd 58112331 112331 4+0 records out
bench-linux: dd 57000000 0 4+0 records out
bench-linux: done
";

    #[test]
    fn warden_share_of_the_dd_loop() {
        let text = WARDEN_RUN.replace(
            "bench-linux: done",
            "bench-linux: trap-stats-after-dd 0xb3c 0x4d0f12 0x60000000 0x1b 0xb15 0x6\nbench-linux: done",
        );
        let run = parse_run(&lines(&text)).unwrap();
        let c = ConfigResult { config: Config::Warden, runs: vec![run], error: None };
        let v = c.dd_el2();
        assert_eq!(v.len(), 1);
        let (delta, dd) = v[0];
        assert_eq!((delta.traps, delta.data_aborts, delta.el2_ticks), (0x100, 0x100, 0x100000));
        assert_eq!(dd, 58_112_331 - 112_331 + 57_000_000);
        // Without the second line there is nothing to report.
        let run = parse_run(&lines(WARDEN_RUN)).unwrap();
        let c = ConfigResult { config: Config::Warden, runs: vec![run], error: None };
        assert!(c.dd_el2().is_empty());
    }

    #[test]
    fn smmu_probe_lines() {
        let probe = |line: &str| parse_smmu_probe(&lines(line));
        assert_eq!(probe("bench-linux: smmu-probe 0.500000 0.500001"), Some(Ok(1000)));
        assert_eq!(
            probe("bench-linux: smmu-probe unavailable: no initcall events"),
            Some(Err("no initcall events".into()))
        );
        for bad in ["0.5 0.6", "1.000002 1.000001", "1.000000", "1.000000 2.000000 3.000000"] {
            assert!(probe(&format!("bench-linux: smmu-probe {bad}")).unwrap().is_err(), "{bad}");
        }
        assert_eq!(probe("bench-linux: done"), None);
    }

    #[test]
    fn printk_timestamps() {
        assert_eq!(
            printk_time("[    1.007961] Run /init as init process"),
            Some((1_007_961_000, "Run /init as init process"))
        );
        assert_eq!(printk_time("[12345.000001] x"), Some((12_345_000_001_000, "x")));
        assert_eq!(printk_time("  [    0.000000] a"), Some((0, "a")));
        for bad in ["Run /init", "[    1.00796] x", "[ 1.0079610] x", "[a.000000] x", "[1] x", ""] {
            assert_eq!(printk_time(bad), None, "{bad:?}");
        }
        assert_eq!(printk_time("[99999999999999999999.000000] x"), None);
    }

    #[test]
    fn a_warden_run() {
        let run = parse_run(&lines(WARDEN_RUN)).unwrap();
        // The mark is 38.041 ms of printk time after `Run /init`.
        assert_eq!(run.boot_ticks, 1_386_324_480 - 38_041_000);
        assert_eq!(run.printk_run_init_ns, 1_007_961_000);
        assert_eq!(run.idle_at_mark, 1000);
        assert_eq!(
            run.trap_stats,
            Some(TrapStatsLine::Values(TrapStats {
                traps: 0xa3c,
                el2_ticks: 0x3d0f12,
                now: 0x52a1c3e0,
                calls: 0x1b,
                data_aborts: 0xa15,
                other: 6
            }))
        );
        assert_eq!(run.kvm.as_deref(), Some("HYP mode not available"));
        assert_eq!(run.counter_overhead, Some(1_402_311));
        assert_eq!(
            run.dd,
            [
                DdSample { ticks: 58_112_331, idle: 112_331, bytes: 4 << 20 },
                DdSample { ticks: 57_000_000, idle: 0, bytes: 4 << 20 }
            ]
        );
        assert_eq!(run.dd_problem, None);
        assert_eq!(run.smmu_probe, Some(Ok(3_228_000)));
        let result = ConfigResult { config: Config::Warden, runs: vec![run], error: None };
        assert_eq!(
            result.dd().unwrap().samples,
            [58_112_331 - 112_331 - 1_402_311, 57_000_000 - 1_402_311]
        );
        assert_eq!(result.dd_ticks().unwrap().samples[0], 58_112_331 - 1_402_311);
        assert_eq!(result.boot().unwrap().name, "linux/boot/warden");
        assert_eq!(result.boot().unwrap().samples, [1_386_324_480 - 38_041_000 - 1000]);
        assert_eq!(result.boot_ticks().unwrap().samples, [1_386_324_480 - 38_041_000]);
    }

    #[test]
    fn kvm_lines_and_missing_figures() {
        let text = WARDEN_RUN
            .replace(
                "kvm [1]: HYP mode not available",
                "kvm [1]: Protected nVHE mode initialized successfully",
            )
            .replace(
                "bench-linux: trap-stats 0x0000000000000a3c 0x00000000003d0f12 0x0000000052a1c3e0 \
                 0x000000000000001b 0x0000000000000a15 0x0000000000000006",
                "bench-linux: trap-stats unavailable: no warden",
            );
        let text = text
            .lines()
            .filter(|l| !l.starts_with("bench-linux: dd") && !l.contains("overhead"))
            .chain(["bench-linux: dd unavailable: no virtio disk with serial warden-bench"])
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.replace(
            "[    0.061911] kvm",
            "[    0.000000] kvm [0]: Reserved 10 MiB at 0x7f200000\n\
             [    0.061900] kvm [1]: GICv3: no GICV resource entry\n[    0.061911] kvm",
        );
        let run = parse_run(&lines(&text)).unwrap();
        assert_eq!(run.kvm.as_deref(), Some("Protected nVHE mode initialized successfully"));
        assert!(Config::Pkvm.kvm_line_ok(run.kvm.as_deref().unwrap()));
        assert!(Config::Pkvm.kvm_line_ok("Protected hVHE mode initialized successfully"));
        assert!(!Config::Pkvm.kvm_line_ok("Hyp nVHE mode initialized successfully"));
        assert!(Config::KvmNvhe.kvm_line_ok("Hyp nVHE mode initialized successfully"));
        assert!(!Config::KvmNvhe.kvm_line_ok("VHE mode initialized successfully"));
        assert!(!Config::KvmNvhe.kvm_line_ok("HYP mode not available"));
        assert_eq!(run.trap_stats, Some(TrapStatsLine::Unavailable("no warden".into())));
        assert!(run.dd.is_empty());
        assert_eq!(run.dd_problem.as_deref(), Some("no virtio disk with serial warden-bench"));
        assert_eq!(run.counter_overhead, None);
    }

    #[test]
    fn broken_runs_are_refused() {
        let without = |needle: &str| -> Vec<String> {
            lines(WARDEN_RUN).into_iter().filter(|l| !l.contains(needle)).collect()
        };
        for needle in ["bench-linux: done", "Run /init", "counter mark", "counter-mark"] {
            assert!(parse_run(&without(needle)).is_err(), "{needle}");
        }
        let swapped = WARDEN_RUN.replace("1386324480 1386339021", "1386339021 1386324480");
        assert!(parse_run(&lines(&swapped)).is_err());
        let one = WARDEN_RUN.replace("1386324480 1386339021", "1386324480");
        assert!(parse_run(&lines(&one)).is_err());
        let no_idle = WARDEN_RUN.replace(" idle 1000", "");
        assert!(parse_run(&lines(&no_idle)).is_err());
        let behind = WARDEN_RUN.replace("1386324480 1386339021", "1000 2000");
        assert!(parse_run(&lines(&behind)).is_err(), "counter behind printk time");
        let short_stats = WARDEN_RUN.replace(" 0x0000000000000006\n", "\n");
        assert!(parse_run(&lines(&short_stats)).is_err());
        for bad in [
            "bench-linux: dd 57000000 0 4+1 records out",
            "bench-linux: dd 57000000 0 4 records out",
            "bench-linux: dd 57000000 0 4+0 records in",
            "bench-linux: dd x 0 4+0 records out",
            "bench-linux: dd 57000000 4+0 records out",
            "bench-linux: dd 1 0 99999999999999+0 records out",
        ] {
            assert!(parse_dd(&lines(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            parse_dd(&lines("bench-linux: dd 7 2 64+0 records out")).unwrap(),
            [DdSample { ticks: 7, idle: 2, bytes: 64 << 20 }]
        );
    }

    #[test]
    fn trap_stats_lines() {
        let status = lines("bench-linux: trap-stats unavailable: status -1");
        assert_eq!(
            parse_trap_stats(&status).unwrap(),
            Some(TrapStatsLine::Unavailable("status -1".into()))
        );
        let decimal = lines("bench-linux: trap-stats 1 2 3 4 5 6");
        assert!(matches!(
            parse_trap_stats(&decimal).unwrap(),
            Some(TrapStatsLine::Values(TrapStats { traps: 1, other: 6, .. }))
        ));
        assert_eq!(parse_trap_stats(&lines("nothing")).unwrap(), None);
        assert!(parse_trap_stats(&lines("bench-linux: trap-stats 1 2 3 4 5 6 7")).is_err());
        assert!(parse_trap_stats(&lines("bench-linux: trap-stats 0xzz 2 3 4 5 6")).is_err());
        // `trap-statsX` is another key.
        assert_eq!(parse_trap_stats(&lines("bench-linux: trap-statsX 1")).unwrap(), None);
    }

    #[test]
    fn command_lines_and_devices() {
        assert_eq!(
            cmdline(Config::Warden, 4 << 20, 1),
            "console=ttyAMA0 earlycon panic=-1 nokaslr random.trust_cpu=off warden.bench=linux \
             trace_event=initcall:initcall_start,initcall:initcall_finish trace_buf_size=256K \
             warden.bench_dd_bytes=4194304 warden.bench_dd_runs=1"
        );
        assert!(cmdline(Config::NoHypervisor, 1, 1).ends_with(" warden.absent=1"));
        assert!(cmdline(Config::Pkvm, 1, 1).ends_with(" warden.absent=1 kvm-arm.mode=protected"));
        assert!(cmdline(Config::KvmNvhe, 1, 1).ends_with(" kvm-arm.mode=nvhe"));
        let snapdragon = cmdline(Config::WardenSnapdragon, 1, 1);
        assert!(snapdragon.ends_with(" warden.persona=snapdragon"), "{snapdragon}");
        assert!(!snapdragon.contains("warden.absent"));
        let args = device_args(Path::new("/b/disk.img"));
        assert_eq!(args[1], "if=none,id=bench,format=raw,readonly=on,file=/b/disk.img");
        assert!(args[3].contains("serial=warden-bench,iommu_platform=on,disable-legacy=on"));
        let q = repeatable_qemu_args().join(" ");
        assert!(q.contains("-icount shift=0,sleep=off") && q.contains("-seed 1"), "{q}");
        assert!(q.ends_with("-nic none"), "no default NIC: {q}");
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn counter_program_is_a_loadable_arm64_elf() {
        let elf = counter_program();
        assert_eq!(&elf[..6], b"\x7fELF\x02\x01");
        assert_eq!((u16_at(&elf, 16), u16_at(&elf, 18)), (2, 183), "ET_EXEC, EM_AARCH64");
        let entry = u64_at(&elf, 24);
        let phoff = u64_at(&elf, 32) as usize;
        assert_eq!((u16_at(&elf, 54), u16_at(&elf, 56)), (56, 1));
        let ph = &elf[phoff..phoff + 56];
        assert_eq!((u32_at(ph, 0), u32_at(ph, 4)), (1, 5), "PT_LOAD, R+X");
        let (offset, vaddr, filesz) = (u64_at(ph, 8), u64_at(ph, 16), u64_at(ph, 32));
        assert_eq!(offset, 0);
        assert_eq!(filesz as usize, elf.len());
        assert_eq!(vaddr % 0x1_0000, 0);
        let code = (entry - vaddr) as usize;
        assert_eq!(code % 4, 0);
        assert_eq!(u32_at(&elf, code), 0xd503_3fdf, "starts with ISB");
        // The ADR (4th instruction) points at the message, and x2 holds its length.
        let adr = u32_at(&elf, code + 12);
        assert_eq!(adr & 0x9f00_001f, 0x1000_0001, "ADR x1");
        let imm = (((adr >> 5) & 0x7_ffff) << 2) | ((adr >> 29) & 3);
        let message = code + 12 + imm as usize;
        let len = ((u32_at(&elf, code + 16) >> 5) & 0xffff) as usize;
        assert_eq!(&elf[message..message + len], format!("{COUNTER_MARK}\n").as_bytes());
        assert_eq!(message + len, elf.len());
    }

    #[test]
    fn bench_initramfs_appends_an_archive() {
        let mut base = Archive::new();
        base.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        let base = base.to_bytes().unwrap();
        let both = bench_initramfs(&base, b"echo bench\n").unwrap();
        assert_eq!(&both[..base.len()], &base[..]);
        let extra = crate::cpio::parse(&both[base.len().next_multiple_of(4)..]).unwrap();
        let names: Vec<String> = extra.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["bench.sh", "warden-counter"]);
        assert!(bench_initramfs(b"not cpio", b"").is_err());
    }

    #[test]
    fn report_sections() {
        let run = parse_run(&lines(WARDEN_RUN)).unwrap();
        let mut base = run.clone();
        base.boot_ticks = 1_000_000_000;
        base.trap_stats = Some(TrapStatsLine::Unavailable("no warden".into()));
        base.dd = vec![DdSample { ticks: 21_402_311, idle: 0, bytes: 4 << 20 }];
        let report = LinuxReport {
            runs_per_config: 1,
            dd_bytes: 4 << 20,
            configs: vec![
                ConfigResult { config: Config::NoHypervisor, runs: vec![base], error: None },
                ConfigResult { config: Config::Warden, runs: vec![run], error: None },
                ConfigResult {
                    config: Config::Pkvm,
                    runs: vec![],
                    error: Some("no power-off within 180 s".into()),
                },
            ],
        };
        let md = render_markdown(&report);
        let expected = [
            "| (a) no hypervisor (virtualization=off) | 999999000 | 999999000–999999000 | 0.00 % | \
             1.000× | – | 1000000000 | 0 |  |",
            "| (b) warden (Linux on its virtual SMMU) | 1348282480 | 1348282480–1348282480 | \
             0.00 % | 1.348× | – | 1348283480 | 340322480 |  |",
            "| (c) pKVM (kvm-arm.mode=protected) | – | – | – | – | – | – | – | could not run: no \
             power-off within 180 s |",
            "| 4001554 | 1386333152 | 0.2886 % | 2620 | 27 | 2581 | 6 |",
            "| (a) Linux's own SMMU, no hypervisor | 20000000 | 20000000–20000000 | 0.00 % | 200.0 | \
             1.000× | – | 20000000 |",
            "| (c) warden's virtual SMMU, Linux's DMA domains nested over warden's stage-2 | \
             55597689 | 55597689–56597689 | 1.80 % | 71.9 | 2.780× | – | 55597689 |",
            "| pKVM (Linux's own SMMU; pKVM does not manage it) | – | – | – | – | – | – | not \
             available: no power-off within 180 s |",
        ];
        for line in expected {
            assert!(md.contains(line), "{line}\n{md}");
        }
        let json = render_json(&report);
        assert_eq!(json["configs"][1]["boot"]["samples"][0], 1_348_282_480u64);
        assert_eq!(json["configs"][1]["boot_ticks"]["samples"][0], 1_348_283_480u64);
        assert_eq!(json["configs"][1]["runs"][0]["dd"][0]["idle_ns"], 112_331);
        assert_eq!(json["configs"][1]["runs"][0]["trap_stats"]["traps"], 0xa3c);
        assert_eq!(json["configs"][2]["error"], "no power-off within 180 s");
    }
}
