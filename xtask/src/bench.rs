//! `cargo xtask bench`: instruction counts for warden's paths, measured by the test guest under
//! QEMU `-icount shift=0` (the 1 GHz counter then advances one tick per instruction executed,
//! warden's EL2 work on the guest's behalf included), plus warden's memory footprint.
//!
//! Writes `target/bench/report.json` (every raw sample), `target/bench/report.md` (the tables)
//! and `target/bench/handoff.svg` (handoff cost against size), and prints the tables.

use anyhow::{Context, Result, bail, ensure};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::firmware;
use crate::pack;
use crate::qemu::{self, Machine};
use crate::toolchain;

/// A bench carveout big enough for the 256 MiB handoff row (the board's are 16 MiB), in the
/// middle of the 1 GiB of RAM, away from warden, the guest and its DT (all near 0x4000_0000).
const BENCH_CARVEOUT: warden::boards::carveouts::CarveoutSpec =
    warden::boards::carveouts::CarveoutSpec {
        name: "bench",
        range: warden::mm::MemRange::new(0x5000_0000, 0x6000_0000),
        peer: "modem",
        policy: "donate",
        clear_on_reclaim: false,
    };

/// A whole bench run stays well inside the 15 minutes the issue allows.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// One measured row: raw samples in `unit`.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub samples: Vec<u64>,
}

impl Row {
    pub fn min(&self) -> u64 {
        self.samples.iter().copied().min().unwrap_or(0)
    }
    pub fn max(&self) -> u64 {
        self.samples.iter().copied().max().unwrap_or(0)
    }
    /// The middle sample (the lower middle one for an even count).
    pub fn median(&self) -> u64 {
        let mut s = self.samples.clone();
        s.sort_unstable();
        s.get(s.len().saturating_sub(1) / 2).copied().unwrap_or(0)
    }
}

/// `bench <row> <unit> <sample>...` lines of the guest's output.
pub fn parse_rows(lines: &[String]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for line in lines {
        let Some(rest) = line.trim_end().strip_prefix("bench ") else { continue };
        let mut words = rest.split_ascii_whitespace();
        let (Some(name), Some(unit)) = (words.next(), words.next()) else {
            bail!("malformed bench line: {line:?}");
        };
        let samples = words
            .map(|w| w.parse::<u64>().with_context(|| format!("sample {w:?} in {line:?}")))
            .collect::<Result<Vec<_>>>()?;
        ensure!(!samples.is_empty(), "bench row {name} has no samples");
        rows.push(Row { name: name.into(), unit: unit.into(), samples });
    }
    Ok(rows)
}

/// warden's `footprint:` boot line, as `(what, KiB)` pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Footprint {
    pub host_ram: String,
    pub region_kib: u64,
    pub code_kib: u64,
    pub data_kib: u64,
    pub pool_kib: u64,
    pub heap_used_kib: u64,
    pub table_frames: u64,
    pub host_stage2_pages: u64,
    /// From the power-down `footprint peak:` line: the most ever in use.
    pub peak: FootprintPeak,
}

/// warden's power-down `footprint peak:` line: the most of each sized part it ever used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FootprintPeak {
    pub heap_kib: u64,
    pub heap_size_kib: u64,
    pub table_frames: u64,
    pub pool_frames: u64,
    pub boot_stack_kib: u64,
    pub boot_stack_size_kib: u64,
    pub other_stack_kib: u64,
    pub other_stack_size_kib: u64,
}

/// The `A of B` after `key` in `line`.
fn pair_after(line: &str, key: &str) -> Result<(u64, u64)> {
    let rest = line
        .split_once(key)
        .map(|(_, rest)| rest)
        .with_context(|| format!("no `{key}` in {line:?}"))?;
    Ok((number_after(rest, "")?, number_after(rest, " of ")?))
}

/// The number after `key` in `line`.
fn number_after(line: &str, key: &str) -> Result<u64> {
    let at = line.find(key).with_context(|| format!("no `{key}` in {line:?}"))?;
    let digits: String =
        line[at + key.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().with_context(|| format!("no number after `{key}` in {line:?}"))
}

/// warden's `footprint peak:` power-down line.
pub fn parse_footprint_peak(lines: &[String]) -> Result<FootprintPeak> {
    let line = lines
        .iter()
        .find_map(|l| l.split_once("footprint peak: ").map(|(_, rest)| rest.to_owned()))
        .context("warden printed no `footprint peak:` line (did the guest power down?)")?;
    let (heap_kib, heap_size_kib) = pair_after(&line, "heap ")?;
    let (table_frames, pool_frames) = pair_after(&line, "page-table frames ")?;
    let (boot_stack_kib, boot_stack_size_kib) = pair_after(&line, "EL2 stack boot CPU ")?;
    let (other_stack_kib, other_stack_size_kib) = pair_after(&line, "EL2 stack other CPUs ")?;
    Ok(FootprintPeak {
        heap_kib,
        heap_size_kib,
        table_frames,
        pool_frames,
        boot_stack_kib,
        boot_stack_size_kib,
        other_stack_kib,
        other_stack_size_kib,
    })
}

/// Numbers after the given words in warden's footprint line.
pub fn parse_footprint(lines: &[String], host_ram: &str) -> Result<Footprint> {
    let line = lines
        .iter()
        .find_map(|l| l.split_once("footprint: ").map(|(_, rest)| rest.to_owned()))
        .context("warden printed no `footprint:` line")?;
    let after = |key: &str| number_after(&line, key);
    Ok(Footprint {
        host_ram: host_ram.to_owned(),
        region_kib: after("region ")?,
        code_kib: after("code+rodata ")?,
        data_kib: after("data+bss+stacks ")?,
        pool_kib: after("pool ")?,
        heap_used_kib: after("heap ")?,
        table_frames: after("page-table frames ")?,
        host_stage2_pages: after("host stage-2 ")?,
        peak: parse_footprint_peak(lines)?,
    })
}

/// warden's `handoff profile:` power-down line: counter ticks per phase over `transfers`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub transfers: u64,
    pub phases: Vec<(String, u64)>,
}

pub fn parse_profile(lines: &[String]) -> Result<Profile> {
    let line = lines
        .iter()
        .find_map(|l| l.split_once("handoff profile: ").map(|(_, rest)| rest.to_owned()))
        .context("warden printed no `handoff profile:` line")?;
    let (count, phases) = line
        .split_once(" transfers, counter ticks per phase:")
        .with_context(|| format!("malformed profile line {line:?}"))?;
    let transfers = count.trim().parse().with_context(|| format!("transfer count in {line:?}"))?;
    let phases = phases
        .split_ascii_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("{kv:?} in {line:?}"))?;
            Ok((k.to_owned(), v.parse().with_context(|| format!("{kv:?} in {line:?}"))?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Profile { transfers, phases })
}

/// warden's `trap profile:` power-down line (the `trap-profile` image): per kind of trap,
/// how many and the counter ticks per phase, summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrapProfile {
    pub kinds: Vec<TrapKindProfile>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrapKindProfile {
    pub kind: String,
    pub traps: u64,
    pub phases: Vec<(String, u64)>,
}

impl TrapKindProfile {
    /// Ticks per trap in warden's Rust handler (every phase).
    pub fn per_trap(&self) -> u64 {
        self.phases.iter().map(|(_, t)| t).sum::<u64>() / self.traps.max(1)
    }
}

pub fn parse_trap_profile(lines: &[String]) -> Result<TrapProfile> {
    let line = lines
        .iter()
        .find_map(|l| l.split_once("trap profile: ").map(|(_, rest)| rest.to_owned()))
        .context("warden printed no `trap profile:` line (not the trap-profile image?)")?;
    let kinds = line
        .split(';')
        .map(|part| {
            let mut words = part.split_ascii_whitespace();
            let kind = words.next().with_context(|| format!("empty kind in {line:?}"))?;
            let mut traps = None;
            let mut phases = Vec::new();
            for kv in words {
                let (k, v) = kv.split_once('=').with_context(|| format!("{kv:?} in {line:?}"))?;
                let v: u64 = v.parse().with_context(|| format!("{kv:?} in {line:?}"))?;
                if k == "n" { traps = Some(v) } else { phases.push((k.to_owned(), v)) }
            }
            let traps = traps.with_context(|| format!("no trap count for {kind} in {line:?}"))?;
            Ok(TrapKindProfile { kind: kind.to_owned(), traps, phases })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TrapProfile { kinds })
}

/// Which guest row a kind of trap is the one trap of (for the entry/exit column).
const TRAP_KIND_ROWS: [(&str, &str); 3] = [
    ("call", "trap/hvc_abi_version"),
    ("vsmmu-read", "trap/vsmmu_register_read"),
    ("vsmmu-write", "trap/vsmmu_register_write"),
];

/// The full result of a bench run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub quick: bool,
    pub rows: Vec<Row>,
    pub footprints: Vec<Footprint>,
    /// Where a 64 KiB donate/reclaim's instructions go (the profile run).
    pub profile: Option<Profile>,
    /// Where one trap's instructions go (the trap-profile run).
    pub trap_profile: Option<TrapProfile>,
    /// Rows 3–5 (Linux boots); None when not run.
    pub linux: Option<crate::bench_linux::LinuxReport>,
}

/// The per-phase table of a profile run of DONATE + RECLAIM cycles of `size`.
fn render_profile(md: &mut String, size: &str, p: &Profile) {
    use std::fmt::Write as _;
    let total: u64 = p.phases.iter().map(|(_, t)| t).sum();
    let _ = writeln!(
        md,
        "\n## Where a {size} DONATE + RECLAIM goes\n\nwarden's per-phase counters over {} \
         transfers (half DONATE, half RECLAIM, no CLEAR), per transfer:\n",
        p.transfers
    );
    let _ = writeln!(md, "| phase | instructions per transfer | share |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (phase, ticks) in p.phases.iter().filter(|(_, t)| *t > 0) {
        let _ = writeln!(
            md,
            "| {phase} | {} | {:.0}% |",
            ticks / p.transfers.max(1),
            100.0 * *ticks as f64 / total.max(1) as f64
        );
    }
}

fn row<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

/// Sizes with handoff rows, ascending.
fn handoff_sizes(rows: &[Row]) -> Vec<u64> {
    let mut sizes: Vec<u64> =
        rows.iter().filter_map(|r| r.name.strip_prefix("handoff/donate/")?.parse().ok()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 { "–".into() } else { format!("{:.2}×", a as f64 / b as f64) }
}

/// The Markdown report (what `report.md` holds and the command prints).
pub fn render_markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# warden bench{}\n\nInstructions counted under QEMU `-icount shift=0` (1 GHz counter: \
         one tick per instruction, EL2 work included); median of the samples, [min–max].\n",
        if r.quick { " (--quick: one sample per row, smoke test only)" } else { "" }
    );
    let _ = writeln!(md, "## Trap costs (per operation, loop overhead subtracted)\n");
    let _ = writeln!(md, "| path | instructions | range | vs untrapped MMIO read |");
    let _ = writeln!(md, "|---|---:|---|---:|");
    let mmio = row(&r.rows, "mmio/untrapped_uart_read").map(Row::median).unwrap_or(0);
    for x in r.rows.iter().filter(|x| x.name.starts_with("trap/") || x.name.starts_with("mmio/")) {
        let _ = writeln!(
            md,
            "| {} | {} | {}–{} | {} |",
            x.name,
            x.median(),
            x.min(),
            x.max(),
            ratio(x.median(), mmio.max(1))
        );
    }
    if let Some(p) = &r.trap_profile {
        render_trap_profile(&mut md, p, &r.rows);
    }
    let _ = writeln!(
        md,
        "\n## Handoff cost (one call, instructions)\n\nAgainst the lower bound: a plain `DC CIVAC` \
         loop over the same range at EL1 (`ratio` = donate / that loop).\n"
    );
    let _ = writeln!(
        md,
        "| size | donate | reclaim | donate CLEAR | reclaim CLEAR | EL1 DC CIVAC | ratio |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    for size in handoff_sizes(&r.rows) {
        let get = |kind: &str| row(&r.rows, &format!("handoff/{kind}/{size}")).map(Row::median);
        let cell = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
        let donate = get("donate");
        let civac = get("el1_dc_civac");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            human_size(size),
            cell(donate),
            cell(get("reclaim")),
            cell(get("donate_clear")),
            cell(get("reclaim_clear")),
            cell(civac),
            ratio(donate.unwrap_or(0), civac.unwrap_or(0))
        );
    }
    let scm_sizes: Vec<u64> = SCM_SIZES
        .iter()
        .copied()
        .filter(|s| row(&r.rows, &format!("scm/assign_exclusive/{s}")).is_some())
        .collect();
    if !scm_sizes.is_empty() {
        let _ = writeln!(
            md,
            "\n## Qualcomm assign_mem (Snapdragon persona, one call, instructions)\n\nOn the \
             modem carveout (donate policy): HLOS → MSS_MSA runs the same DONATE sequence, plus \
             the SMC decode and the copy of three host lists; MSS_MSA → HLOS takes it back \
             (peer unmap, scrub, host map); share and unshare keep the host mapped. DONATE and \
             the EL1 `DC CIVAC` loop are the virt run's rows of the same size.\n"
        );
        let _ = writeln!(
            md,
            "| size | HLOS → MSS | DONATE | MSS → HLOS (scrubbed) | share | unshare | EL1 DC \
             CIVAC | HLOS → MSS / DONATE |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        for size in scm_sizes {
            let get = |name: String| row(&r.rows, &name).map(Row::median);
            let cell = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
            let exclusive = get(format!("scm/assign_exclusive/{size}"));
            let donate = get(format!("handoff/donate/{size}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                human_size(size),
                cell(exclusive),
                cell(donate),
                cell(get(format!("scm/assign_back/{size}"))),
                cell(get(format!("scm/share/{size}"))),
                cell(get(format!("scm/unshare/{size}"))),
                cell(get(format!("handoff/el1_dc_civac/{size}"))),
                ratio(exclusive.unwrap_or(0), donate.unwrap_or(0))
            );
        }
    }
    if let Some(p) = &r.profile {
        render_profile(&mut md, "64 KiB", p);
    }
    if let Some(linux) = &r.linux {
        md.push('\n');
        md.push_str(&crate::bench_linux::render_markdown(linux));
    }
    let _ = writeln!(md, "\n## Memory footprint (after boot)\n");
    let _ = writeln!(
        md,
        "| host RAM | warden region KiB | code+rodata | data+bss+stacks | pool | heap in use | page-table frames in use | host stage-2 table pages |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in &r.footprints {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} ({} KiB) | {} |",
            f.host_ram,
            f.region_kib,
            f.code_kib,
            f.data_kib,
            f.pool_kib,
            f.heap_used_kib,
            f.table_frames,
            f.table_frames * 4,
            f.host_stage2_pages
        );
    }
    let _ = writeln!(
        md,
        "\nThe most ever in use (warden's power-down `footprint peak:` line; the sizes and \
         margins of the heap, the frame pool and the stacks come from these):\n\n\
         | host RAM | heap peak KiB (of) | page-table frames peak (of) | EL2 stack, boot CPU KiB (of) \
         | EL2 stack, deepest other CPU KiB (of) |\n|---|---:|---:|---:|---:|"
    );
    for f in &r.footprints {
        let p = &f.peak;
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {} ({}) | {} ({}) | {} ({}) |",
            f.host_ram,
            p.heap_kib,
            p.heap_size_kib,
            p.table_frames,
            p.pool_frames,
            p.boot_stack_kib,
            p.boot_stack_size_kib,
            p.other_stack_kib,
            p.other_stack_size_kib
        );
    }
    md
}

/// The per-trap table: phases per trap of each kind, and for the kinds that are one guest row's
/// only trap, what the vector and the exception entry and return cost (the row minus the
/// Rust handler).
fn render_trap_profile(md: &mut String, p: &TrapProfile, rows: &[Row]) {
    let phases: Vec<&str> = p
        .kinds
        .first()
        .map(|k| k.phases.iter().map(|(name, _)| name.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "\n## Where one trap goes (trap-profile image, instructions per trap)\n\n`vectors` is \
         the guest's row minus warden's Rust handler: the trapping instruction, the vector \
         saving the frame, restoring it and `ERET` (and the profile's own marks, a few \
         instructions each).\n"
    );
    let _ = write!(md, "| trap | count | vectors |");
    for ph in &phases {
        let _ = write!(md, " {ph} |");
    }
    let _ = writeln!(md, " handler total |");
    let _ = writeln!(md, "|---|---:|---:|{}---:|", "---:|".repeat(phases.len()));
    for k in &p.kinds {
        let vectors = TRAP_KIND_ROWS
            .iter()
            .find(|(kind, _)| *kind == k.kind)
            .and_then(|(_, name)| row(rows, name))
            .map_or_else(
                || "–".to_owned(),
                |r| r.median().saturating_sub(k.per_trap()).to_string(),
            );
        let _ = write!(md, "| {} | {} | {vectors} |", k.kind, k.traps);
        for ph in &phases {
            let ticks = k.phases.iter().find(|(name, _)| name == ph).map_or(0, |(_, t)| *t);
            let _ = write!(md, " {} |", ticks / k.traps.max(1));
        }
        let _ = writeln!(md, " {} |", k.per_trap());
    }
}

/// The report as JSON, raw samples included.
pub fn render_json(r: &Report) -> String {
    let rows: Vec<serde_json::Value> = r
        .rows
        .iter()
        .map(|x| {
            serde_json::json!({
                "name": x.name, "unit": x.unit, "samples": x.samples,
                "min": x.min(), "median": x.median(), "max": x.max(),
            })
        })
        .collect();
    let footprints: Vec<serde_json::Value> = r
        .footprints
        .iter()
        .map(|f| {
            serde_json::json!({
                "host_ram": f.host_ram, "region_kib": f.region_kib, "code_rodata_kib": f.code_kib,
                "data_bss_stacks_kib": f.data_kib, "pool_kib": f.pool_kib,
                "heap_used_kib": f.heap_used_kib, "page_table_frames": f.table_frames,
                "host_stage2_table_pages": f.host_stage2_pages,
                "peak": {
                    "heap_kib": f.peak.heap_kib, "heap_size_kib": f.peak.heap_size_kib,
                    "page_table_frames": f.peak.table_frames,
                    "pool_frames": f.peak.pool_frames,
                    "boot_cpu_stack_kib": f.peak.boot_stack_kib,
                    "boot_cpu_stack_size_kib": f.peak.boot_stack_size_kib,
                    "other_cpu_stack_kib": f.peak.other_stack_kib,
                    "other_cpu_stack_size_kib": f.peak.other_stack_size_kib,
                },
            })
        })
        .collect();
    let profile = r.profile.as_ref().map(|p| {
        serde_json::json!({
            "transfers": p.transfers,
            "ticks_per_phase": p.phases.iter().map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        })
    });
    let doc = serde_json::json!({
        "method": "QEMU -icount shift=0; counter ticks = instructions",
        "quick": r.quick,
        "rows": rows,
        "footprint": footprints,
        "handoff_profile_64k": profile,
        "trap_profile": r.trap_profile.as_ref().map(|p| {
            p.kinds
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kind": k.kind, "traps": k.traps,
                        "ticks_per_phase": k.phases.iter()
                            .map(|(n, v)| (n.clone(), serde_json::json!(v)))
                            .collect::<serde_json::Map<_, _>>(),
                    })
                })
                .collect::<Vec<_>>()
        }),
        "linux": r.linux.as_ref().map(crate::bench_linux::render_json),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Handoff cost against size, log-log, one line per kind.
pub fn render_svg(r: &Report) -> String {
    let sizes = handoff_sizes(&r.rows);
    let kinds = [
        ("donate", "#1f77b4"),
        ("donate_clear", "#ff7f0e"),
        ("reclaim", "#2ca02c"),
        ("el1_dc_civac", "#7f7f7f"),
    ];
    let (w, h, pad) = (640.0f64, 400.0f64, 60.0f64);
    let points: Vec<(u64, u64)> = kinds
        .iter()
        .flat_map(|(k, _)| {
            sizes.iter().filter_map(move |s| {
                row(&r.rows, &format!("handoff/{k}/{s}")).map(|x| (*s, x.median().max(1)))
            })
        })
        .collect();
    let span = |f: fn(&(u64, u64)) -> u64| {
        let lo = points.iter().map(f).min().unwrap_or(1).max(1) as f64;
        let hi = points.iter().map(f).max().unwrap_or(2).max(2) as f64;
        (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0))
    };
    let (x0, x1) = span(|p| p.0);
    let (y0, y1) = span(|p| p.1);
    let px = |v: u64| pad + ((v as f64).log10() - x0) / (x1 - x0) * (w - 2.0 * pad);
    let py = |v: u64| h - pad - ((v as f64).log10() - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\">warden handoff cost (instructions, log) against size (bytes, log)</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        h - pad,
        w - pad,
        h - pad,
        h - pad
    );
    for s in &sizes {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(*s),
            h - pad + 18.0,
            human_size(*s)
        );
    }
    for e in (y0 as i32)..=(y1 as i32) {
        let v = 10u64.saturating_pow(e.max(0) as u32);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">1e{e}</text>",
            pad - 6.0,
            py(v) + 4.0
        );
    }
    for (i, (kind, colour)) in kinds.iter().enumerate() {
        let pts: Vec<String> = sizes
            .iter()
            .filter_map(|s| row(&r.rows, &format!("handoff/{kind}/{s}")).map(|x| (*s, x)))
            .map(|(s, x)| format!("{:.1},{:.1}", px(s), py(x.median().max(1))))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{kind}</text>",
            pad + 10.0,
            pad + 16.0 * (i as f64 + 1.0)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

pub fn output_dir() -> PathBuf {
    firmware::repo_root().join("target/bench")
}

/// Runs the test guest in bench mode with `memory` of RAM; returns its output lines.
fn guest_run(qemu: &Path, image: &Path, memory: &str, name: &str) -> Result<Vec<String>> {
    let mut machine = Machine::with_warden(image.to_owned(), 2);
    machine.devices = qemu::test_guest_devices();
    machine.memory = memory.to_owned();
    let dtb = qemu::attach_warden_dt(qemu, &mut machine, name)?;
    let with_bench =
        warden::dt::apply(&std::fs::read(&dtb)?, &BENCH_CARVEOUT.add_to(warden::dt::DtEdit::new()))
            .map_err(|e| anyhow::anyhow!("adding the bench carveout: {e}"))?;
    std::fs::write(&dtb, with_bench)?;
    machine.extra = vec!["-icount".into(), "shift=0".into()];
    let log = output_dir().join(format!("{name}.log"));
    let run =
        qemu::run_captured(machine.command(qemu), RUN_TIMEOUT, &log, &|_| false, Duration::ZERO)?;
    ensure!(
        run.lines.iter().any(|l| l.contains("guest: bench done")),
        "the bench guest did not finish (see {})",
        log.display()
    );
    Ok(run.lines)
}

/// The rows of the MMU-500 face, all of them: a run that lost one (the guest printed why)
/// is an error, not a shorter report.
pub const MMU500_ROWS: [&str; 3] =
    ["trap/mmu500_register_read", "trap/mmu500_register_write", "trap/mmu500_tlbiasid_tlbsync"];

/// The SMMUv3 face's trap rows, all required of the `virt` persona's runs: a run that lost one
/// (the guest printed why, e.g. an MSI-signalled CMD_SYNC whose completion word never came) is
/// an error, not a shorter report.
pub const VSMMU_ROWS: [&str; 4] = [
    "trap/vsmmu_register_read",
    "trap/vsmmu_register_write",
    "trap/vsmmu_cmd_sync",
    "trap/vsmmu_cmd_sync_msi",
];

fn require_vsmmu_rows(rows: &[Row], log: &str) -> Result<()> {
    for name in VSMMU_ROWS {
        ensure!(row(rows, name).is_some(), "the bench run measured no {name} (see {log})");
    }
    Ok(())
}

/// Sizes of the Snapdragon run's assign_mem rows (`scm/<kind>/<bytes>`).
pub const SCM_SIZES: [u64; 3] = [64 << 10, 1 << 20, 16 << 20];
/// The assign_mem kinds measured per size.
pub const SCM_KINDS: [&str; 4] = ["assign_exclusive", "assign_back", "share", "unshare"];

/// Every `scm/...` row name the Snapdragon run must have measured.
pub fn scm_row_names() -> Vec<String> {
    SCM_SIZES
        .iter()
        .flat_map(|size| SCM_KINDS.iter().map(move |kind| format!("scm/{kind}/{size}")))
        .collect()
}

fn mmu500_rows(rows: &[Row]) -> Result<Vec<Row>> {
    let scm = scm_row_names();
    MMU500_ROWS
        .iter()
        .copied()
        .chain(scm.iter().map(String::as_str))
        .map(|name| {
            row(rows, name).cloned().with_context(|| {
                format!(
                    "the Snapdragon-persona bench run measured no {name} (see bench-snapdragon.log)"
                )
            })
        })
        .collect()
}

/// The trap rows (`warden.bench=traps`, full samples) on `warden.bin`, and the same on the
/// trap-profile image for where each trap's instructions go.
fn trap_runs(qemu: &Path, warden_bin: &Path, guest: &Path) -> Result<(Vec<Row>, TrapProfile)> {
    let tc = toolchain::firmware()?;
    let image = output_dir().join("warden-bench-guest-traps.img");
    pack::pack_files(warden_bin, guest, None, Some("warden.bench=traps"), &image)?;
    let rows = parse_rows(&guest_run(qemu, &image, "1G", "bench-traps")?)?;
    require_vsmmu_rows(&rows, "bench-traps.log")?;
    let profiled = firmware::build_one(tc, &firmware::WARDEN_TRAP_PROFILE)?;
    let image = output_dir().join("warden-bench-guest-trap-profile.img");
    pack::pack_files(&profiled, guest, None, Some("warden.bench=traps"), &image)?;
    let profile = parse_trap_profile(&guest_run(qemu, &image, "1G", "bench-trap-profile")?)?;
    Ok((rows, profile))
}

/// `cargo xtask bench --traps`: the trap rows and their profile only (under a minute once
/// built), for work on the trap path.
pub fn run_traps() -> Result<Report> {
    let qemu = toolchain::qemu()?;
    let tc = toolchain::firmware()?;
    let warden_bin = firmware::build_one(tc, &firmware::WARDEN)?;
    let guest = firmware::build_one(tc, &firmware::TEST_GUEST)?;
    std::fs::create_dir_all(output_dir())?;
    let (rows, profile) = trap_runs(&qemu.path, &warden_bin, &guest)?;
    let report = Report {
        quick: false,
        rows,
        footprints: vec![],
        profile: None,
        trap_profile: Some(profile),
        linux: None,
    };
    let dir = output_dir();
    std::fs::write(dir.join("report-traps.json"), render_json(&report))?;
    std::fs::write(dir.join("report-traps.md"), render_markdown(&report))?;
    Ok(report)
}

/// `cargo xtask bench --handoffs`: the handoff rows (1 GiB, the bench DT) and the per-phase
/// profiles of 64 KiB and 1 MiB cycles only, for work on the handoff path:
/// target/bench/report-handoffs.md. Returns the markdown.
pub fn run_handoffs() -> Result<String> {
    let qemu = toolchain::qemu()?;
    let tc = toolchain::firmware()?;
    let warden_bin = firmware::build_one(tc, &firmware::WARDEN)?;
    let guest = firmware::build_one(tc, &firmware::TEST_GUEST)?;
    std::fs::create_dir_all(output_dir())?;
    let image = output_dir().join("warden-bench-guest-handoffs.img");
    pack::pack_files(&warden_bin, &guest, None, Some("warden.bench=handoffs"), &image)?;
    let rows = parse_rows(&guest_run(&qemu.path, &image, "1G", "bench-handoffs")?)?;
    let mut profiles = Vec::new();
    for (word, size, log) in [
        ("warden.bench=profile", "64 KiB", "bench-profile"),
        ("warden.bench=profile-1m", "1 MiB", "bench-profile-1m"),
    ] {
        let image = output_dir().join(format!("warden-{log}.img"));
        pack::pack_files(&warden_bin, &guest, None, Some(word), &image)?;
        profiles.push((size, parse_profile(&guest_run(&qemu.path, &image, "1G", log)?)?));
    }
    let report = Report {
        quick: false,
        rows,
        footprints: vec![],
        profile: None,
        trap_profile: None,
        linux: None,
    };
    let mut md = render_markdown(&report);
    for (size, profile) in &profiles {
        render_profile(&mut md, size, profile);
    }
    std::fs::write(output_dir().join("report-handoffs.md"), &md)?;
    Ok(md)
}

/// `cargo xtask bench [--quick]`.
pub fn run(quick: bool) -> Result<Report> {
    let qemu = toolchain::qemu()?;
    let tc = toolchain::firmware()?;
    let warden_bin = firmware::build_one(tc, &firmware::WARDEN)?;
    let guest = firmware::build_one(tc, &firmware::TEST_GUEST)?;
    std::fs::create_dir_all(output_dir())?;
    let mode = if quick { "warden.bench=quick" } else { "warden.bench" };
    let image = output_dir().join("warden-bench-guest.img");
    pack::pack_files(&warden_bin, &guest, None, Some(mode), &image)?;
    let lines = guest_run(&qemu.path, &image, "1G", "bench-1g")?;
    let mut rows = parse_rows(&lines)?;
    require_vsmmu_rows(&rows, "bench-1g.log")?;
    let mut footprints = vec![parse_footprint(&lines, "1 GiB")?];
    // The footprint with 4 GiB: the same image, every row measured once.
    let quick_image = output_dir().join("warden-bench-guest-quick.img");
    pack::pack_files(&warden_bin, &guest, None, Some("warden.bench=quick"), &quick_image)?;
    let lines_4g = guest_run(&qemu.path, &quick_image, "4G", "bench-4g")?;
    footprints.push(parse_footprint(&lines_4g, "4 GiB")?);
    // Only 64 KiB donate/reclaim cycles, so warden's per-phase counters describe just those.
    let profile_image = output_dir().join("warden-bench-guest-profile.img");
    pack::pack_files(&warden_bin, &guest, None, Some("warden.bench=profile"), &profile_image)?;
    let lines_profile = guest_run(&qemu.path, &profile_image, "1G", "bench-profile")?;
    let profile = Some(parse_profile(&lines_profile)?);
    // The MMU-500 face's trap rows: the Snapdragon persona, trap rows only.
    let snapdragon_image = output_dir().join("warden-bench-guest-snapdragon.img");
    let snapdragon_cmdline = format!(
        "warden.bench=traps {}",
        crate::Persona::Snapdragon.cmdline_word().unwrap_or_default()
    );
    pack::pack_files(&warden_bin, &guest, None, Some(&snapdragon_cmdline), &snapdragon_image)?;
    let lines_snapdragon = guest_run(&qemu.path, &snapdragon_image, "1G", "bench-snapdragon")?;
    rows.extend(mmu500_rows(&parse_rows(&lines_snapdragon)?)?);
    // Where each trap goes: the trap-profile image (the full run only; --quick stays short).
    let trap_profile =
        if quick { None } else { Some(trap_runs(&qemu.path, &warden_bin, &guest)?.1) };
    let linux = crate::bench_linux::run(&qemu.path, &warden_bin, quick)?;
    let report = Report { quick, rows, footprints, profile, trap_profile, linux: Some(linux) };
    let dir = output_dir();
    std::fs::write(dir.join("report.json"), render_json(&report))?;
    std::fs::write(dir.join("report.md"), render_markdown(&report))?;
    std::fs::write(dir.join("handoff.svg"), render_svg(&report))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const OUTPUT: &str = "\
guest: bench mode (Full)
bench trap/hvc_abi_version instructions 463 470 460
bench mmio/untrapped_uart_read instructions 1 1 1
bench handoff/donate/65536 instructions 50008 61872 53101
bench handoff/el1_dc_civac/65536 instructions 4106 4106 4106
bench handoff/donate/1048576 instructions 153439
bench handoff/el1_dc_civac/1048576 instructions 65546
warden: cpu0: footprint: region 10240 KiB = code+rodata 236 KiB + data+bss+stacks 1240 KiB + pool 8192 KiB; heap 22 of 2048 KiB in use; page-table frames 57 of 1536 in use (228 KiB); host stage-2 8 table pages; EL2 boot tables 11 of 32 pages
warden: cpu0: footprint peak: heap 31 of 2048 KiB; page-table frames 230 of 1536; EL2 stack boot CPU 97 of 128 KiB; EL2 stack other CPUs 6 of 32 KiB (CPU 1); 16 CPU(s)
";

    #[test]
    fn rows_and_statistics() {
        let rows = parse_rows(&lines(OUTPUT)).unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0].name, "trap/hvc_abi_version");
        assert_eq!((rows[0].min(), rows[0].median(), rows[0].max()), (460, 463, 470));
        assert_eq!(rows[2].median(), 53101);
        let even = Row { name: "x".into(), unit: "u".into(), samples: vec![4, 1, 3, 2] };
        assert_eq!(even.median(), 2);
        assert!(parse_rows(&lines("bench x instructions 1 y")).is_err());
        assert!(parse_rows(&lines("bench x instructions")).is_err());
        assert!(parse_rows(&lines("bench x")).is_err());
    }

    #[test]
    fn the_vsmmu_rows_are_all_required() {
        let all: String =
            VSMMU_ROWS.iter().map(|n| format!("bench {n} instructions 300\n")).collect();
        assert!(require_vsmmu_rows(&parse_rows(&lines(&all)).unwrap(), "x.log").is_ok());
        let lost = all.replace("bench trap/vsmmu_cmd_sync_msi instructions 300\n", "");
        let err = require_vsmmu_rows(&parse_rows(&lines(&lost)).unwrap(), "x.log").unwrap_err();
        assert!(err.to_string().contains("trap/vsmmu_cmd_sync_msi"), "{err}");
    }

    #[test]
    fn the_mmu500_rows_are_all_required() {
        let mut run = String::from(
            "bench trap/hvc_abi_version instructions 500\n\
             bench trap/mmu500_register_read instructions 700 710\n\
             bench trap/mmu500_register_write instructions 780\n\
             bench trap/mmu500_tlbiasid_tlbsync instructions 5000\n",
        );
        for name in scm_row_names() {
            run += &format!("bench {name} instructions 90000\n");
        }
        let rows = mmu500_rows(&parse_rows(&lines(&run)).unwrap()).unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
        let mut want: Vec<String> = MMU500_ROWS.iter().map(|s| s.to_string()).collect();
        want.extend(scm_row_names());
        assert_eq!(names, want);
        assert_eq!(want.len(), 3 + 12);
        // The report compares HLOS -> MSS with the virt run's DONATE of the same size.
        let mut all = parse_rows(&lines(OUTPUT)).unwrap();
        all.extend(rows);
        let report = Report {
            quick: false,
            rows: all,
            footprints: vec![],
            profile: None,
            trap_profile: None,
            linux: None,
        };
        let md = render_markdown(&report);
        assert!(
            md.contains("| 64 KiB | 90000 | 53101 | 90000 | 90000 | 90000 | 4106 | 1.69× |"),
            "{md}"
        );
        let lost_scm = run.replace("bench scm/share/1048576 instructions 90000\n", "");
        let err = mmu500_rows(&parse_rows(&lines(&lost_scm)).unwrap()).unwrap_err().to_string();
        assert!(err.contains("scm/share/1048576"), "{err}");
        let lost = "bench trap/mmu500_register_read instructions 700\n\
                    guest: bench MMU-500 not usable: no edu\n";
        let err = mmu500_rows(&parse_rows(&lines(lost)).unwrap()).unwrap_err().to_string();
        assert!(err.contains("trap/mmu500_register_write"), "{err}");
    }

    #[test]
    fn footprint_line() {
        let f = parse_footprint(&lines(OUTPUT), "1 GiB").unwrap();
        assert_eq!(
            f,
            Footprint {
                host_ram: "1 GiB".into(),
                region_kib: 10240,
                code_kib: 236,
                data_kib: 1240,
                pool_kib: 8192,
                heap_used_kib: 22,
                table_frames: 57,
                host_stage2_pages: 8,
                peak: FootprintPeak {
                    heap_kib: 31,
                    heap_size_kib: 2048,
                    table_frames: 230,
                    pool_frames: 1536,
                    boot_stack_kib: 97,
                    boot_stack_size_kib: 128,
                    other_stack_kib: 6,
                    other_stack_size_kib: 32,
                },
            }
        );
        assert!(parse_footprint(&lines("nothing"), "1 GiB").is_err());
    }

    const PROFILE: &str = "warden: cpu0: handoff profile: 20 transfers, counter ticks per phase: validate=12938 reserve=55159 host-unmap=20505 smmu-sync=17640 dc-civac=51540 zero=0 peer-map=55000 peer-unmap=87598 host-map=12840 commit=12523";

    const TRAP_PROFILE: &str = "warden: cpu0: trap profile: call n=10 enter=200 decode=300 locks=0 work=2500 complete=100 drain=800 exit=100; cmdq-cons n=2 enter=10 decode=20 locks=30 work=40 complete=50 drain=60 exit=70";

    #[test]
    fn trap_profile_line() {
        let p = parse_trap_profile(&lines(TRAP_PROFILE)).unwrap();
        assert_eq!(p.kinds.len(), 2);
        assert_eq!((p.kinds[0].kind.as_str(), p.kinds[0].traps), ("call", 10));
        assert_eq!(p.kinds[0].phases[3], ("work".to_owned(), 2500));
        assert_eq!(p.kinds[0].per_trap(), 400);
        assert_eq!(p.kinds[1].per_trap(), 140);
        assert!(parse_trap_profile(&lines("trap profile: call enter=1")).is_err());
        assert!(parse_trap_profile(&lines("trap profile: call n=1 enter=x")).is_err());
        assert!(parse_trap_profile(&lines("nothing")).is_err());
    }

    #[test]
    fn profile_line() {
        let p = parse_profile(&lines(PROFILE)).unwrap();
        assert_eq!(p.transfers, 20);
        assert_eq!(p.phases.len(), 10);
        assert_eq!(p.phases[1], ("reserve".to_owned(), 55159));
        assert!(parse_profile(&lines("handoff profile: x")).is_err());
        assert!(parse_profile(&lines("nothing")).is_err());
    }

    #[test]
    fn reports_show_every_row_and_the_ratio() {
        let report = Report {
            quick: false,
            rows: parse_rows(&lines(OUTPUT)).unwrap(),
            footprints: vec![parse_footprint(&lines(OUTPUT), "1 GiB").unwrap()],
            profile: Some(parse_profile(&lines(PROFILE)).unwrap()),
            trap_profile: Some(parse_trap_profile(&lines(TRAP_PROFILE)).unwrap()),
            linux: None,
        };
        let md = render_markdown(&report);
        assert!(md.contains("| trap/hvc_abi_version | 463 | 460–470 | 463.00× |"), "{md}");
        assert!(md.contains("| 64 KiB | 53101 | – | – | – | 4106 | 12.93× |"), "{md}");
        assert!(md.contains("| 1 MiB | 153439 |"), "{md}");
        assert!(md.contains("| 1 GiB | 10240 | 236 | 1240 | 8192 | 22 | 57 (228 KiB) | 8 |"));
        assert!(md.contains("| peer-unmap | 4379 | 27% |"), "{md}");
        assert!(!md.contains("| zero |"), "phases that cost nothing are left out");
        // HVC row 463 minus the handler's 400 per call.
        assert!(md.contains("| call | 10 | 63 | 20 | 30 | 0 | 250 | 10 | 80 | 10 | 400 |"), "{md}");
        assert!(md.contains("| cmdq-cons | 2 | – | 5 |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(json["rows"][2]["samples"], serde_json::json!([50008, 61872, 53101]));
        assert_eq!(json["rows"][2]["median"], 53101);
        let svg = render_svg(&report);
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("1 MiB"));
    }
}
