//! Judging QEMU console output. Pure functions over captured lines, so every verdict is
//! unit-tested with canned output.
//!
//! Strings the harness relies on (documented in README.md):
//! - warden banner: a line containing `warden v<digit>` (warden prints `warden v<version> on
//!   <board>`), and a line containing `memory map`;
//! - test guest: lines `ok NAME` and `FAILED NAME: reason` (at the start of a line), then
//!   `guest: done`, then PSCI SYSTEM_OFF so QEMU exits with status 0;
//! - hostile DT: a line containing `DT:` and `overlap`, after which warden halts (QEMU keeps
//!   running); no `panicked at` line.

use crate::qemu::{Captured, Ending};

/// One test result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub outcome: Result<(), String>,
}

impl Verdict {
    pub fn pass(name: impl Into<String>) -> Self {
        Self { name: name.into(), outcome: Ok(()) }
    }
    pub fn fail(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self { name: name.into(), outcome: Err(why.into()) }
    }
    pub fn check(name: &str, ok: bool, why: impl FnOnce() -> String) -> Self {
        if ok { Self::pass(name) } else { Self::fail(name, why()) }
    }
}

/// A scenario result line `ok NAME` or `FAILED NAME: reason`, named `<prefix>/NAME`.
pub fn parse_result_line(line: &str, prefix: &str) -> Option<Verdict> {
    let line = line.trim();
    if let Some(name) = line.strip_prefix("ok ") {
        let name = name.trim();
        return (!name.is_empty()).then(|| Verdict::pass(format!("{prefix}/{name}")));
    }
    let rest = line.strip_prefix("FAILED ")?;
    let (name, reason) = match rest.split_once(':') {
        Some((name, reason)) => (name.trim(), reason.trim()),
        None => (rest.trim(), "(no reason given)"),
    };
    (!name.is_empty()).then(|| Verdict::fail(format!("{prefix}/{name}"), reason))
}

/// A guest scenario result line: `ok NAME` or `FAILED NAME: reason`.
pub fn parse_guest_line(line: &str) -> Option<Verdict> {
    parse_result_line(line, "guest")
}

pub fn is_banner(line: &str) -> bool {
    line.match_indices("warden v")
        .any(|(i, m)| line[i + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()))
}

pub fn ending_text(ending: &Ending) -> String {
    match ending {
        Ending::Exited(Some(code)) => format!("QEMU exited with status {code}"),
        Ending::Exited(None) => "QEMU was killed by a signal".into(),
        Ending::TimedOut(t) => format!("timed out after {} s", t.as_secs()),
        Ending::StillRunningAfterMatch => "QEMU was still running".into(),
    }
}

/// Scenarios the test guest runs (`tests/guest/src/scenarios.rs`, `run_all`), in order. A name
/// with no result line is a failure: the guest stopped (or was changed) before reporting it.
pub const GUEST_SCENARIOS: [&str; 37] = [
    "runs_at_el1",
    "warden_abi_version",
    "unknown_hvc_returns_not_supported",
    "warden_memory_read_aborts",
    "secondary_cpu_on",
    "psci_cpu_on_errors",
    "psci_version",
    "carveouts_listed",
    "donate_then_peer_checksum",
    "host_read_after_donate_aborts",
    "reclaim_without_clear_keeps_data",
    "reclaim_with_clear_zeroes",
    "dsp_lend_scrubbed_on_reclaim",
    "bad_requests_change_nothing",
    "two_cpus_hammer_carveouts",
    "peer_own_pages_refused",
    "hung_peer_is_stopped",
    "peer_write_after_release_refused",
    "edu_dma_works",
    "edu_dma_into_warden_refused",
    "vsmmu_stage1_dma_works",
    "vsmmu_stage1_into_carveout_faults",
    "vsmmu_donate_after_stage1_dma_faults",
    "vsmmu_stale_asid_is_flushed",
    "vsmmu_stale_asid_without_g3_reads_stale",
    "vsmmu_same_asid_two_streams",
    "vsmmu_cd_rewrite_needs_cfgi_cd",
    "vsmmu_stall_cd_refused",
    "vsmmu_hostile_tables",
    "vsmmu_hostile_prod",
    "vsmmu_hostile_gbpa",
    "vsmmu_hostile_ste",
    "vsmmu_cd_in_carveout",
    "vsmmu_cmd_sync_flood",
    "its_tables_hostile",
    "gicr_tables_hostile",
    "fw_cfg_dma_contained",
];

/// The stress run's one scenario (`tests/guest/src/handoff_stress.rs`).
pub const STRESS_SCENARIO: &str = "carveout_neighbours_never_fault";

/// warden + the test guest in stress mode: its one scenario passed, the guest finished, and
/// warden's own power-down report (an oracle independent of the guest) counts no violation and
/// no SMMU event.
pub fn judge_handoff_stress(run: &Captured) -> Vec<Verdict> {
    let ok_line = format!("ok {STRESS_SCENARIO}");
    let failed =
        run.lines.iter().find(|l| l.trim_start().starts_with(&format!("FAILED {STRESS_SCENARIO}")));
    let report = run.lines.iter().find(|l| l.contains("host requested power-down"));
    let clean = report.is_some_and(|l| {
        l.contains(": 0 violation(s) contained") && l.contains(" 0 SMMU event(s)")
    });
    vec![
        Verdict::check(
            &format!("handoff-stress/{STRESS_SCENARIO}"),
            run.lines.iter().any(|l| l.trim() == ok_line),
            || match failed {
                Some(line) => line.trim().to_owned(),
                None => format!("no `{ok_line}` line"),
            },
        ),
        Verdict::check(
            "handoff-stress/warden counted no violation and no SMMU event",
            clean,
            || match report {
                Some(line) => line.trim().to_owned(),
                None => "no power-down report".into(),
            },
        ),
        Verdict::check(
            "handoff-stress/guest printed `guest: done`",
            run.lines.iter().any(|l| l.trim() == "guest: done"),
            || "no `guest: done` line".into(),
        ),
        Verdict::check(
            "handoff-stress/QEMU exited by itself with status 0 (PSCI SYSTEM_OFF)",
            matches!(run.ending, Ending::Exited(Some(0))),
            || ending_text(&run.ending),
        ),
    ]
}

/// The guest's `guest: N passed, M failed` line.
fn parse_guest_summary(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix("guest: ")?;
    let (passed, failed) = rest.split_once(", ")?;
    let passed = passed.strip_suffix(" passed")?.parse().ok()?;
    let failed = failed.strip_suffix(" failed")?.parse().ok()?;
    Some((passed, failed))
}

/// Boot of warden with the test guest as host.
pub fn judge_guest_boot(run: &Captured) -> Vec<Verdict> {
    let mut out = vec![
        Verdict::check(
            "boot/warden banner printed",
            run.lines.iter().any(|l| is_banner(l)),
            || "no line containing `warden v<version>`".into(),
        ),
        Verdict::check(
            "boot/warden memory map printed",
            run.lines.iter().any(|l| l.contains("memory map")),
            || "no line containing `memory map`".into(),
        ),
        Verdict::check(
            "boot/the packed payload runs in place (0 bytes moved)",
            payload_bytes_moved(&run.lines) == Some(0),
            || format!("warden's `payload` line: {:?}", payload_bytes_moved(&run.lines)),
        ),
    ];
    let guest: Vec<Verdict> = run.lines.iter().filter_map(|l| parse_guest_line(l)).collect();
    if guest.is_empty() {
        out.push(Verdict::fail(
            "guest/any scenario",
            "the guest printed no `ok NAME` or `FAILED NAME: reason` line",
        ));
    }
    let counted = (
        guest.iter().filter(|v| v.outcome.is_ok()).count(),
        guest.iter().filter(|v| v.outcome.is_err()).count(),
    );
    let missing: Vec<Verdict> = GUEST_SCENARIOS
        .iter()
        .filter(|name| !guest.iter().any(|v| v.name.strip_prefix("guest/") == Some(**name)))
        .map(|name| {
            Verdict::fail(
                format!("guest/{name}"),
                "no `ok`/`FAILED` line for it (the guest stopped before it, or no longer runs it)",
            )
        })
        .collect();
    out.extend(guest);
    out.extend(missing);
    let summary = run.lines.iter().find_map(|l| parse_guest_summary(l));
    out.push(Verdict::check(
        "boot/guest summary agrees with its result lines",
        summary == Some(counted),
        || match summary {
            Some(s) => format!("the guest counted {s:?} (passed, failed), the log has {counted:?}"),
            None => "no `guest: N passed, M failed` line".into(),
        },
    ));
    out.push(Verdict::check(
        "boot/guest printed `guest: done`",
        run.lines.iter().any(|l| l.trim() == "guest: done"),
        || format!("no `guest: done` line ({})", ending_text(&run.ending)),
    ));
    out.push(Verdict::check(
        "boot/warden logged the SMMU refusing the edu DMA into its memory",
        run.lines.iter().any(|l| is_smmu_refusal(l)),
        || {
            "no `SMMU event` line for a stage-2 fault (the edu scenario's DMA was not refused?)"
                .into()
        },
    ));
    out.push(Verdict::check(
        "boot/warden logged its G3 flush of the reused ASID",
        run.lines.iter().any(|l| is_g3_forced_flush(l)),
        || {
            "no `vSMMU G3: ... warden invalidated it first` line (vsmmu_stale_asid_is_flushed \
             reused a retiring ASID)"
                .into()
        },
    ));
    out.push(Verdict::check(
        "boot/warden code+rodata intact at power-down",
        run.lines.iter().any(|l| l.contains("host requested power-down") && l.contains("intact")),
        || "no power-down report saying warden's code+rodata are intact".into(),
    ));
    out.push(Verdict::check(
        "boot/QEMU exited by itself with status 0 (PSCI SYSTEM_OFF)",
        run.ending == Ending::Exited(Some(0)),
        || ending_text(&run.ending),
    ));
    out
}

/// What the `small-ram` run's guest runs (`warden.scenarios=handoff`: `run_handoff` in
/// `tests/guest/src/scenarios.rs`), in order.
pub const SMALL_RAM_SCENARIOS: [&str; 8] = [
    "runs_at_el1",
    "carveouts_listed",
    "donate_then_peer_checksum",
    "host_read_after_donate_aborts",
    "reclaim_with_clear_zeroes",
    "dsp_lend_scrubbed_on_reclaim",
    "bad_requests_change_nothing",
    "peer_own_pages_refused",
];

/// The RAM the `small-ram` run gives the machine: half of `cargo xtask run`'s default, which
/// put the board's carveouts (fixed at 0x7c00_0000 then) outside RAM.
pub const SMALL_RAM: &str = "512M";

/// The bytes warden's boot log says it moved (`payload    N bytes moved, the rest in place`).
pub fn payload_bytes_moved(lines: &[String]) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = l.split("payload ").nth(1)?.trim_start();
        rest.strip_suffix(" bytes moved, the rest in place")?.trim().parse().ok()
    })
}

/// warden + the test guest in [`SMALL_RAM`], handoff scenarios only: the board's carveouts are
/// inside that RAM (warden lists them, in RAM, in its memory map), every handoff scenario
/// reports `ok`, and the run ends as it should.
pub fn judge_small_ram(run: &Captured) -> Vec<Verdict> {
    let guest: Vec<Verdict> = run.lines.iter().filter_map(|l| parse_guest_line(l)).collect();
    let mut out = vec![
        Verdict::check(
            "small-ram/warden manages two carveouts inside 512 MiB of RAM",
            run.lines.iter().filter(|l| is_carveout_in_small_ram(l)).count() == 2,
            || {
                "warden's memory map does not list two carveouts inside 0x40000000..0x60000000"
                    .into()
            },
        ),
        // Packed compact (`pack::Placement::Compact`): the one QEMU run of warden's move path.
        Verdict::check(
            "small-ram/the compact-packed guest was moved out of warden's region",
            payload_bytes_moved(&run.lines).is_some_and(|n| n > 0),
            || format!("warden's `payload` line: {:?}", payload_bytes_moved(&run.lines)),
        ),
    ];
    for name in SMALL_RAM_SCENARIOS {
        let verdict = guest.iter().find(|v| v.name.strip_prefix("guest/") == Some(name));
        out.push(match verdict.map(|v| &v.outcome) {
            Some(Ok(())) => Verdict::pass(format!("small-ram/{name}")),
            Some(Err(why)) => Verdict::fail(format!("small-ram/{name}"), why.clone()),
            None => Verdict::fail(format!("small-ram/{name}"), "no `ok`/`FAILED` line for it"),
        });
    }
    out.push(Verdict::check(
        "small-ram/guest printed `guest: done`, QEMU exited with status 0",
        run.lines.iter().any(|l| l.trim() == "guest: done")
            && run.ending == Ending::Exited(Some(0)),
        || ending_text(&run.ending),
    ));
    out
}

/// The guest's scenarios in a `warden.scenarios=platform` run without a GICv2, in order.
pub const PLATFORM_SCENARIOS: [&str; 1] = ["all_cpus_on"];
/// ... and with one.
pub const GICV2_PLATFORM_SCENARIOS: [&str; 2] = ["all_cpus_on", "gicv2_frames"];

/// The CPUs the `many-cpus` run gives the host: more than warden's old fixed limit of 8 (the
/// machine has one more, the simulated peer's).
pub const MANY_CPUS_HOST: u32 = 11;

/// One `<run>/NAME` verdict per guest scenario in `scenarios` then per handoff scenario, and
/// the ending (`guest: done`, QEMU exit status 0).
fn judge_platform_guest(run_name: &str, run: &Captured, scenarios: &[&str]) -> Vec<Verdict> {
    let guest: Vec<Verdict> = run.lines.iter().filter_map(|l| parse_guest_line(l)).collect();
    let mut out = Vec::new();
    for name in scenarios.iter().chain(SMALL_RAM_SCENARIOS.iter()) {
        let verdict = guest.iter().find(|v| v.name.strip_prefix("guest/") == Some(name));
        let full = format!("{run_name}/{name}");
        out.push(match verdict.map(|v| &v.outcome) {
            Some(Ok(())) => Verdict::pass(full),
            Some(Err(why)) => Verdict::fail(full, why.clone()),
            None => Verdict::fail(full, "no `ok`/`FAILED` line for it"),
        });
    }
    out.push(Verdict::check(
        &format!("{run_name}/guest printed `guest: done`, QEMU exited with status 0"),
        run.lines.iter().any(|l| l.trim() == "guest: done")
            && run.ending == Ending::Exited(Some(0)),
        || ending_text(&run.ending),
    ));
    out
}

/// warden + the test guest on `-machine virt,gic-version=2`: warden names the GICv2 and
/// withholds GICH and GICV; the guest's board checks (every CPU on and off, the GICv2 frames:
/// GICC answers, GICH and GICV aborted, the node cut to GICD and GICC) and handoff scenarios
/// pass; the run ends as it should.
pub fn judge_guest_gicv2(run: &Captured) -> Vec<Verdict> {
    let mut out = vec![Verdict::check(
        "guest-gicv2/warden uses the GICv2 and withholds GICH and GICV",
        run.lines.iter().any(|l| {
            l.contains("interrupt controller: GICv2")
                && l.contains("GICH 0x0008030000")
                && l.contains("GICV 0x0008040000")
                && l.contains("withheld")
        }),
        || {
            "no `interrupt controller: GICv2 ... GICH ... GICV ... withheld` line from warden"
                .into()
        },
    )];
    out.extend(judge_platform_guest("guest-gicv2", run, &GICV2_PLATFORM_SCENARIOS));
    out
}

/// warden + the test guest with [`MANY_CPUS_HOST`] host CPUs (GICv3): warden boots (it used to
/// refuse more than 8 CPUs), the guest powers every other CPU on and off, and the handoff
/// scenarios pass.
pub fn judge_many_cpus(run: &Captured) -> Vec<Verdict> {
    let others = MANY_CPUS_HOST - 1;
    let mut out = vec![Verdict::check(
        &format!("many-cpus/the guest started all {others} other CPUs"),
        run.lines.iter().any(|l| l.contains(&format!("all_cpus_on: {others} CPU(s) on and off"))),
        || format!("no `all_cpus_on: {others} CPU(s) on and off` note from the guest"),
    )];
    out.extend(judge_platform_guest("many-cpus", run, &PLATFORM_SCENARIOS));
    out
}

/// What tz-probe checks (`boards/qemu-virt/tz-sim/src/probe.rs`), in order.
pub const TZ_PROBE_CHECKS: [&str; 13] = [
    "hyp_entry",
    "psci_version",
    "psci_features",
    "cpu_on_cycle",
    "cpu_on_errors",
    "gic_group1",
    "scm_is_call_avail",
    "scm_assign_errors",
    "xpu_witness_stage2",
    "xpu_witness_smmu",
    "xpu_witness_hostile",
    "pas_sequence",
    "pas_out_of_order",
];

/// What tz-sim's XPU witness must have logged during the probe's SCM checks: a violation found
/// in the CPU's stage 2 and one in an SMMU stream, an assign and an auth_and_reset it let
/// through.
pub const TZ_WITNESS_LINES: [(&str, &str); 4] = [
    ("XPU: violation: assign ", ": host stage 2 (VTTBR_EL2 "),
    ("XPU: violation: assign ", ": SMMU stream 0x3's stage 2 maps "),
    ("XPU: assign ", " HLOS -> MSS_MSA ok"),
    ("XPU: auth_and_reset MPSS ", " HLOS -> MSS_MSA ok"),
];

/// tz-sim + tz-probe on one GIC (`gic`: `gicv3` or `gicv2`): tz-sim's banner names that GIC
/// and 4 CPUs, every probe check passes, the probe finishes and tz-sim powers the machine off
/// (QEMU exits with status 0).
pub fn judge_tz_sim(gic: &str, run: &Captured) -> Vec<Verdict> {
    let prefix = format!("tz-sim/{gic}");
    let version = if gic == "gicv2" { "GICv2" } else { "GICv3" };
    let mut out = vec![Verdict::check(
        &format!("{prefix}/banner names the {version} and 4 CPUs"),
        run.lines
            .iter()
            .any(|l| l.contains("tz-sim v") && l.contains(&format!("({version}, 4 CPUs)"))),
        || format!("no `tz-sim v... ({version}, 4 CPUs)` banner"),
    )];
    let results: Vec<Verdict> =
        run.lines.iter().filter_map(|l| parse_result_line(l, &prefix)).collect();
    for check in TZ_PROBE_CHECKS {
        let name = format!("{prefix}/{check}");
        out.push(match results.iter().find(|v| v.name == name) {
            Some(v) => v.clone(),
            None => Verdict::fail(name, "no `ok`/`FAILED` line for it"),
        });
    }
    if let Some(extra) =
        results.iter().find(|v| !TZ_PROBE_CHECKS.iter().any(|c| v.name.ends_with(&format!("/{c}"))))
    {
        out.push(extra.clone());
    }
    let missing: Vec<String> = TZ_WITNESS_LINES
        .iter()
        .filter(|(start, part)| {
            !run.lines.iter().any(|l| l.trim_start().starts_with(start) && l.contains(part))
        })
        .map(|(start, part)| format!("`{start}...{part}...`"))
        .collect();
    let fatal = run.lines.iter().find(|l| l.contains("tz-sim: FATAL"));
    out.push(Verdict::check(
        &format!("{prefix}/XPU witness lines, no fault at EL3"),
        missing.is_empty() && fatal.is_none(),
        || match fatal {
            Some(l) => l.trim().to_owned(),
            None => format!("no {}", missing.join(", no ")),
        },
    ));
    out.push(Verdict::check(
        &format!("{prefix}/probe done, SYSTEM_OFF, QEMU exited with status 0"),
        run.lines.iter().any(|l| l.trim() == "tz-probe: done")
            && run.lines.iter().any(|l| l.trim() == "tz-sim: SYSTEM_OFF")
            && run.ending == Ending::Exited(Some(0)),
        || ending_text(&run.ending),
    ));
    out
}

/// warden's memory-map line for a managed carveout inside 0x4000_0000..0x6000_0000.
fn is_carveout_in_small_ram(line: &str) -> bool {
    let Some(rest) = line.split("  carveout   ").nth(1) else { return false };
    let Some((start, rest)) = rest.split_once("..") else { return false };
    let end = rest.split_whitespace().next().unwrap_or("");
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    matches!((parse(start), parse(end)), (Some(s), Some(e)) if s >= 0x4000_0000 && e <= 0x6000_0000 && s < e)
}

/// warden's log line for a DMA the SMMU refused at stage 2 (`SMMU event F_... (stage 2)`).
pub fn is_smmu_refusal(line: &str) -> bool {
    line.contains("SMMU event F_") && line.contains("stage 2")
}

/// warden's log line for a retiring ASID it invalidated itself before its reuse (G3).
pub fn is_g3_forced_flush(line: &str) -> bool {
    line.contains("vSMMU G3:") && line.contains("warden invalidated it first")
}

/// Line that reports the hostile DT.
pub fn is_overlap_report(line: &str) -> bool {
    line.contains("DT:") && line.contains("overlap")
}

/// Boot with overlapping `/reserved-memory` regions: warden must say so and halt.
pub fn judge_hostile_dt(run: &Captured) -> Vec<Verdict> {
    judge_report_then_halt(
        "hostile-dt",
        "overlapping reserved-memory reported",
        "no line containing `DT:` and `overlap`",
        run,
        is_overlap_report,
    )
}

/// warden's report that its region cannot hold what this machine needs (`mm::footprint`).
pub fn is_region_too_small_report(line: &str) -> bool {
    line.contains("FATAL: warden's region is") && line.contains("KiB too small for this machine")
}

/// Boot with a carveout too big for warden's region: warden must say by how much and halt.
pub fn judge_region_too_small(run: &Captured) -> Vec<Verdict> {
    judge_report_then_halt(
        "hostile-dt/region",
        "a carveout too big for warden's region reported, with the shortfall",
        "no `FATAL: warden's region is N KiB too small for this machine` line",
        run,
        is_region_too_small_report,
    )
}

/// warden's report of being started below EL2.
/// The test guest's scenarios in the chain (`tests/guest/src/scenarios.rs`, `run_chain`), in
/// order.
pub const CHAIN_SCENARIOS: [&str; 13] = [
    "runs_at_el1",
    "warden_abi_version",
    "unknown_hvc_returns_not_supported",
    "warden_memory_read_aborts",
    "secondary_cpu_on",
    "all_cpus_on",
    "psci_cpu_on_errors",
    "psci_version",
    "carveouts_listed",
    "edu_dma_works",
    "edu_dma_into_warden_refused",
    "vsmmu_stage1_dma_works",
    "scm_assign_reaches_tz",
];

/// The guest's note when TZ accepted the assign_mem warden forwarded (`scm_assign_reaches_tz`).
pub const TZ_ACCEPTED_NOTE: &str = "guest: note scm_assign_reaches_tz: TZ accepted";
/// The guest's note when TZ refused it (x0 = QCOM_SCM_ERROR).
pub const TZ_REFUSED_NOTE: &str = "guest: note scm_assign_reaches_tz: TZ refused";

/// tz-sim's XPU witness let a range leave HLOS for the modem (`XPU: assign <range> HLOS ->
/// MSS_MSA ok`).
fn is_xpu_assign_ok(line: &str) -> bool {
    line.contains("XPU: assign ") && line.contains(" HLOS -> MSS_MSA ok")
}

/// tz-sim's XPU witness found the host's stage 2 still mapping a range leaving HLOS.
fn is_xpu_violation(line: &str) -> bool {
    line.contains("XPU: violation: assign ") && line.contains("HLOS -> MSS_MSA: host stage 2")
}

/// What the chain's assign_mem must show when warden unmaps as it should: the guest's
/// assign_mem HLOS → MSS_MSA reached tz-sim after warden's unmap (the witness says ok, warden
/// logs the firmware's agreement), the way back reached it too, no violation anywhere.
fn judge_chain_assign(run: &Captured) -> Vec<Verdict> {
    let has = |needle: &str| run.lines.iter().any(|l| l.contains(needle));
    let any = |f: fn(&str) -> bool| run.lines.iter().any(|l| f(l));
    vec![
        Verdict::check(
            "guest-chain/assign_mem HLOS -> MSS_MSA forwarded: TZ accepted it (guest)",
            has(TZ_ACCEPTED_NOTE),
            || format!("no `{TZ_ACCEPTED_NOTE}` line"),
        ),
        Verdict::check(
            "guest-chain/tz-sim's XPU witness: `XPU: assign ... HLOS -> MSS_MSA ok`",
            any(is_xpu_assign_ok),
            || "no such tz-sim line".into(),
        ),
        Verdict::check(
            "guest-chain/warden: `SCM assign_mem #1: ... HLOS -> MSS_MSA: donated (exclusive), \
             the firmware agreed`",
            run.lines.iter().any(|l| {
                l.contains("SCM assign_mem #1: ")
                    && l.contains("HLOS -> MSS_MSA: donated (exclusive), the firmware agreed")
            }),
            || "no such warden line".into(),
        ),
        Verdict::check(
            "guest-chain/the way back reached tz-sim: `tz-sim: SCM assign_mem ... MSS_MSA -> HLOS`",
            run.lines
                .iter()
                .any(|l| l.contains("tz-sim: SCM assign_mem ") && l.contains("MSS_MSA -> HLOS")),
            || "no such tz-sim line".into(),
        ),
        Verdict::check("guest-chain/no `XPU: violation`", !has("XPU: violation"), || {
            run.lines.iter().find(|l| l.contains("XPU: violation")).cloned().unwrap_or_default()
        }),
    ]
}

/// warden built to skip the host's unmap on a forwarded assign_mem (`chain-xpu-violation`):
/// the image says so at boot; tz-sim's witness finds the host's stage 2 still mapping the
/// range, logs `XPU: violation` and refuses; warden rolls back and answers the guest TZ's
/// ERROR (-1); the guest finds the range still the host's with its data
/// (`scm_assign_reaches_tz` ok); no assign was let through; the run ends normally.
pub fn judge_chain_xpu_violation(run: &Captured) -> Vec<Verdict> {
    let has = |needle: &str| run.lines.iter().any(|l| l.contains(needle));
    let any = |f: fn(&str) -> bool| run.lines.iter().any(|l| f(l));
    let name = "scm_assign_reaches_tz";
    let guest = run
        .lines
        .iter()
        .filter_map(|l| parse_guest_line(l))
        .find(|v| v.name.strip_prefix("guest/") == Some(name));
    vec![
        Verdict::check(
            "chain-xpu-violation/warden says it is the fault-injection build",
            has("FAULT INJECTION: fault-injection-skip-assign-unmap"),
            || "no `FAULT INJECTION: fault-injection-skip-assign-unmap` line".into(),
        ),
        Verdict::check(
            "chain-xpu-violation/tz-sim's witness: `XPU: violation: assign ... HLOS -> MSS_MSA: \
             host stage 2 ...`",
            any(is_xpu_violation),
            || "no such tz-sim line".into(),
        ),
        Verdict::check(
            "chain-xpu-violation/TZ's refusal reached the guest: warden `SCM assign_mem \
             refused: -1`, the guest's note",
            has("SCM assign_mem refused: -1 ") && has(TZ_REFUSED_NOTE),
            || format!("no `SCM assign_mem refused: -1` or no `{TZ_REFUSED_NOTE}` line"),
        ),
        Verdict::check("chain-xpu-violation/no assign let through", !any(is_xpu_assign_ok), || {
            "tz-sim logged `XPU: assign ... ok`".into()
        }),
        match guest.map(|v| v.outcome) {
            Some(Ok(())) => Verdict::pass(format!(
                "chain-xpu-violation/{name} (range still the host's, data kept)"
            )),
            Some(Err(why)) => Verdict::fail(format!("chain-xpu-violation/{name}"), why),
            None => {
                Verdict::fail(format!("chain-xpu-violation/{name}"), "no `ok`/`FAILED` line for it")
            }
        },
        Verdict::check(
            "chain-xpu-violation/guest: done, tz-sim SYSTEM_OFF, QEMU exited with status 0",
            has("guest: done")
                && has("tz-sim: SYSTEM_OFF")
                && run.ending == Ending::Exited(Some(0)),
            || ending_text(&run.ending),
        ),
    ]
}

/// tz-sim → warden entered as the hyp image → the test guest at the next stage's place, with
/// `cpus` CPUs: tz-sim enters warden at 0x7e000000 with x0 = 0x60000000 and x1 = 2, warden
/// (board `qemu-virt-tz`) checks its linked DT and enters the guest there with no DT; one
/// `guest-chain/NAME` per chain scenario; the other CPUs came up through warden and TZ and
/// back into the guest; `guest: done`, tz-sim's SYSTEM_OFF and QEMU's exit status 0.
pub fn judge_guest_chain(run: &Captured, cpus: u32) -> Vec<Verdict> {
    let has = |needle: &str| run.lines.iter().any(|l| l.contains(needle));
    let mut out = vec![
        Verdict::check(
            "guest-chain/tz-sim enters warden at 0x7e000000 with x0 = 0x60000000, x1 = 2",
            has("entering the hyp image at 0x7e000000 at EL2 with x0 = 0x60000000, x1 = 2"),
            || "no such tz-sim banner".into(),
        ),
        Verdict::check(
            "guest-chain/warden banner names qemu-virt-tz, loaded at 0x7e000000",
            run.lines
                .iter()
                .any(|l| is_banner(l) && l.contains("on qemu-virt-tz (loaded at 0x7e000000)")),
            || "no `warden v... on qemu-virt-tz (loaded at 0x7e000000)` banner".into(),
        ),
        Verdict::check(
            "guest-chain/warden checked its linked DT and enters the next stage at EL1 without a DT",
            has("warden's region and 2 carveout(s) reserved no-map in it")
                && has("entering host at 0x60000000 (EL1h, x0 = 0x0)"),
            || {
                "no `... reserved no-map in it` and `entering host at 0x60000000 (EL1h, x0 = 0x0)`"
                    .into()
            },
        ),
    ];
    let guest: Vec<Verdict> = run.lines.iter().filter_map(|l| parse_guest_line(l)).collect();
    for name in CHAIN_SCENARIOS {
        let verdict = guest.iter().find(|v| v.name.strip_prefix("guest/") == Some(name));
        out.push(match verdict.map(|v| &v.outcome) {
            Some(Ok(())) => Verdict::pass(format!("guest-chain/{name}")),
            Some(Err(why)) => Verdict::fail(format!("guest-chain/{name}"), why.clone()),
            None => Verdict::fail(format!("guest-chain/{name}"), "no `ok`/`FAILED` line for it"),
        });
    }
    if let Some(extra) = guest
        .iter()
        .find(|v| !CHAIN_SCENARIOS.iter().any(|c| v.name.strip_prefix("guest/") == Some(c)))
    {
        out.push(Verdict::fail(
            format!("guest-chain/{}", extra.name.trim_start_matches("guest/")),
            "a scenario the judge does not know",
        ));
    }
    out.extend(judge_chain_assign(run));
    let others = cpus - 1;
    // Each other CPU entered the host from warden's secondary path (TZ → warden at HYP_BASE).
    let secondaries =
        (1..cpus).filter(|cpu| has(&format!("warden: cpu{cpu}: entering host at "))).count() as u32;
    out.push(Verdict::check(
        &format!("guest-chain/all {others} other CPUs came up through warden and TZ"),
        has(&format!("all_cpus_on: {others} CPU(s) on and off")) && secondaries == others,
        || format!("{secondaries} of {others} CPUs entered the guest from warden"),
    ));
    out.push(Verdict::check(
        "guest-chain/guest: done, tz-sim SYSTEM_OFF, QEMU exited with status 0",
        has("guest: done") && has("tz-sim: SYSTEM_OFF") && run.ending == Ending::Exited(Some(0)),
        || ending_text(&run.ending),
    ));
    out
}

/// A boot-stage warden whose linked DT does not reserve its whole region `no-map` says so.
pub fn is_chain_refusal_report(line: &str) -> bool {
    line.contains("FATAL: refusing to start: warden's region")
        && line.contains("is not reserved no-map in the OS's DT")
}

/// warden-hyp with a DT that reserves only half its region: it refuses to start, with the
/// reason, and halts.
pub fn judge_chain_refusal(run: &Captured) -> Vec<Verdict> {
    let mut out = judge_report_then_halt(
        "chain-refusal",
        "warden refuses a DT that does not reserve its region no-map",
        "no `FATAL: refusing to start: warden's region ... is not reserved no-map` line",
        run,
        is_chain_refusal_report,
    );
    out.push(Verdict::check(
        "chain-refusal/the next stage never ran",
        !run.lines.iter().any(|l| l.contains("guest:")),
        || "the guest printed".into(),
    ));
    out
}

pub fn is_wrong_el_report(line: &str) -> bool {
    line.contains("FATAL: entered at EL1") && line.contains("EL2")
}

/// Started at EL1 (no virtualization): warden must say so and halt, not hang silently.
pub fn judge_wrong_el(run: &Captured) -> Vec<Verdict> {
    judge_report_then_halt(
        "wrong-el",
        "entry below EL2 reported",
        "no `FATAL: entered at EL1 ... EL2` line",
        run,
        is_wrong_el_report,
    )
}

/// A fatal condition warden must report in one line and then halt on, without panicking.
fn judge_report_then_halt(
    scenario: &str,
    reported: &str,
    missing: &str,
    run: &Captured,
    is_report: fn(&str) -> bool,
) -> Vec<Verdict> {
    let report = run.lines.iter().position(|l| is_report(l));
    let panic = run.lines.iter().position(|l| l.contains("panicked at"));
    vec![
        Verdict::check(&format!("{scenario}/{reported}"), report.is_some(), || {
            format!("{missing} ({})", ending_text(&run.ending))
        }),
        Verdict::check(
            &format!("{scenario}/warden halts after the report"),
            report.is_some() && run.ending == Ending::StillRunningAfterMatch,
            || match run.ending {
                Ending::Exited(_) => format!("{} instead of halting", ending_text(&run.ending)),
                _ => "no report to halt after".into(),
            },
        ),
        Verdict::check(&format!("{scenario}/no panic"), panic.is_none(), || {
            format!("`{}`", panic.and_then(|i| run.lines.get(i)).map_or("", |l| l.trim()))
        }),
    ]
}

/// What the Linux console must never show.
/// (`Internal error:` starts an arm64 oops, e.g. `Internal error: synchronous external abort`.)
pub const KERNEL_TROUBLE: [&str; 6] =
    ["WARNING:", "Oops", "BUG:", "Call trace", "Internal error:", "Kernel panic"];

/// The scenarios driven through warden's control page: the handoff stories of
/// `tests/linux/scenarios/7*-*.sh` and `dma-after-donate` (a device's DMA into a page after it
/// was donated). Without warden they skip (no control page).
pub const WARDEN_ONLY: [&str; 3] = ["handoff-devmem", "lend-devmem", DMA_AFTER_DONATE];

/// The scenario whose refused DMA warden must log (see [`judge_linux_boot`]).
pub const DMA_AFTER_DONATE: &str = "dma-after-donate";

/// Linux scenarios that must report a result under warden (a missing line is a failure, not
/// silence): the control-page scenarios and `iommu-groups` (Linux on the virtual SMMU, cycling
/// domain types; without warden it runs on QEMU's SMMU).
pub const REQUIRED_WITH_WARDEN: [&str; 4] =
    [WARDEN_ONLY[0], WARDEN_ONLY[1], WARDEN_ONLY[2], "iommu-groups"];

/// The line `dma-after-donate` writes straight to the console (so it shows even when the
/// scenario passes), followed by the page: `linux: dma-after-donate: DMA target page P = 0x...`.
const DMA_TARGET_LINE: &str = "linux: dma-after-donate: DMA target page P = ";

/// The page `dma-after-donate` DMAed into after donating it, from its console line.
pub fn dma_target_page(line: &str) -> Option<u64> {
    let hex = line.trim().strip_prefix(DMA_TARGET_LINE)?.strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The IPA of a warden `SMMU event F_... (stage 2)` line (`... IPA 0x7cfff000 ...`).
pub fn smmu_refusal_ipa(line: &str) -> Option<u64> {
    if !is_smmu_refusal(line) {
        return None;
    }
    let (_, rest) = line.split_once(" IPA 0x")?;
    let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// Under warden: `dma-after-donate` named its page, and warden logged a stage-2 SMMU fault
/// inside that page (the device's DMA after the donation was refused, and warden saw it).
/// The verdict of [`judge_dma_refusal_logged`].
pub const DMA_REFUSAL_LOGGED: &str =
    "linux/boot/warden logged the SMMU refusing the DMA into the donated page";

fn judge_dma_refusal_logged(run: &Captured) -> Verdict {
    const NAME: &str = DMA_REFUSAL_LOGGED;
    let Some(page) = run.lines.iter().find_map(|l| dma_target_page(l)) else {
        return Verdict::fail(NAME, format!("no `{DMA_TARGET_LINE}0x...` line"));
    };
    let logged = run
        .lines
        .iter()
        .filter_map(|l| smmu_refusal_ipa(l))
        .any(|ipa| (page..page + 0x1000).contains(&ipa));
    Verdict::check(NAME, logged, || {
        format!(
            "no warden `SMMU event F_... IPA {page:#x} ... (stage 2)` line: the DMA after the \
             donation was not refused"
        )
    })
}

/// The line /init prints first (results are only read after it).
const INIT_STARTED: &str = "linux: /init started";

/// `linux: N passed, M failed[, K skipped]` → (N, M, K).
pub fn parse_linux_summary(line: &str) -> Option<(usize, usize, usize)> {
    let rest = line.trim().strip_prefix("linux: ")?;
    let mut parts = rest.split(", ");
    let count = |part: Option<&str>, word: &str| -> Option<usize> {
        part?.strip_suffix(word)?.trim().parse().ok()
    };
    let passed = count(parts.next(), " passed")?;
    let failed = count(parts.next(), " failed")?;
    let skipped = match parts.next() {
        Some(p) => count(Some(p), " skipped")?,
        None => 0,
    };
    parts.next().is_none().then_some((passed, failed, skipped))
}

/// The guest scenarios on the Snapdragon persona (`guest-snapdragon`).
pub const GUEST_SNAPDRAGON_SCENARIOS: [&str; 8] = [
    "warden_abi_version",
    "mmu500_bypass_stream_dma_works",
    "mmu500_fastrpc_session_reuse_is_flushed",
    "mmu500_fastrpc_session_reuse_without_g3_reads_stale",
    "mmu500_hostile_host",
    "scm_exclusive_assign",
    "scm_share_then_unshare",
    "scm_bad_inputs_change_nothing",
];

/// The test guest on the Snapdragon persona: banner, every MMU-500 scenario reported and
/// passed, `guest: done` and a clean power-off, and warden's `vMMU-500 G3: ... warden
/// invalidated it first` line (the G3-on run's forced flush).
pub fn judge_guest_snapdragon(run: &Captured) -> Vec<Verdict> {
    const P: &str = "guest-snapdragon";
    let mut out = vec![Verdict::check(
        &format!("{P}/warden banner printed"),
        run.lines.iter().any(|l| is_banner(l)),
        || "no line containing `warden v<version>`".into(),
    )];
    let guest: Vec<Verdict> = run.lines.iter().filter_map(|l| parse_result_line(l, P)).collect();
    for name in GUEST_SNAPDRAGON_SCENARIOS {
        let full = format!("{P}/{name}");
        if !guest.iter().any(|v| v.name == full) {
            out.push(Verdict::fail(full, "no `ok`/`FAILED` line for it"));
        }
    }
    out.extend(guest);
    out.push(Verdict::check(
        &format!("{P}/warden forced the flush of the reused ASID (vMMU-500 G3 line)"),
        run.lines
            .iter()
            .any(|l| l.contains("vMMU-500 G3: ") && l.contains("warden invalidated it first")),
        || "no `vMMU-500 G3: ... warden invalidated it first` line".into(),
    ));
    let done = run.lines.iter().any(|l| l.trim() == "guest: done");
    out.push(Verdict::check(&format!("{P}/guest: done"), done, || {
        format!("no `guest: done` line ({})", ending_text(&run.ending))
    }));
    out.push(Verdict::check(
        &format!("{P}/powered off cleanly"),
        matches!(run.ending, Ending::Exited(Some(0))),
        || ending_text(&run.ending),
    ));
    out
}

/// assign_mem calls the `rmtfs-mem` scenario makes: its probe, then 20 binds (shares), and 20
/// unbinds then its rmmod (unshares).
pub const RMTFS_ASSIGNS: usize = 21;

/// warden's side of the `rmtfs-mem` scenario (on top of its own `ok` line): warden offered the
/// rmtfs region, mediated exactly [`RMTFS_ASSIGNS`] shares and as many unshares of it, refused
/// none, and its assign_mem counter (`#n`) agrees with the lines (1, 2, ... in order).
pub fn judge_snapdragon_scm(run: &Captured) -> Vec<Verdict> {
    let assigns: Vec<&str> =
        run.lines.iter().map(|l| l.as_str()).filter(|l| l.contains("SCM assign_mem #")).collect();
    let count = |what: &str| assigns.iter().filter(|l| l.contains(what)).count();
    let shares = count("HLOS -> HLOS+MSS_MSA: shared (SHARE)");
    let unshares = count("HLOS+MSS_MSA -> HLOS: unshared");
    let numbers: Vec<Option<usize>> = assigns
        .iter()
        .map(|l| {
            let rest = l.split("SCM assign_mem #").nth(1)?;
            rest.split(':').next()?.trim().parse().ok()
        })
        .collect();
    let in_order = numbers.iter().enumerate().all(|(i, n)| *n == Some(i + 1));
    let refused = run.lines.iter().find(|l| l.contains("SCM assign_mem refused"));
    vec![
        Verdict::check(
            "linux/snapdragon/scm: warden offered the rmtfs region",
            run.lines.iter().any(|l| l.contains("SCM: rmtfs region (qcom,rmtfs-mem")),
            || "no `SCM: rmtfs region` line".into(),
        ),
        Verdict::check(
            &format!("linux/snapdragon/scm: {RMTFS_ASSIGNS} shares (HLOS -> HLOS+MSS_MSA)"),
            shares == RMTFS_ASSIGNS,
            || format!("{shares} share lines"),
        ),
        Verdict::check(
            &format!("linux/snapdragon/scm: {RMTFS_ASSIGNS} unshares (HLOS+MSS_MSA -> HLOS)"),
            unshares == RMTFS_ASSIGNS,
            || format!("{unshares} unshare lines"),
        ),
        Verdict::check(
            "linux/snapdragon/scm: assign_mem counter agrees with the lines",
            in_order && assigns.len() == shares + unshares,
            || format!("numbers {numbers:?} over {} lines", assigns.len()),
        ),
        Verdict::check("linux/snapdragon/scm: no assign_mem refused", refused.is_none(), || {
            format!("`{}`", refused.map(|l| l.trim()).unwrap_or_default())
        }),
    ]
}

/// The Snapdragon persona's probe lines (on top of [`judge_linux_boot`]): warden offered the
/// MMU-500, Linux's `arm-smmu` (with `arm-smmu-qcom`) probed it with stage 1, and `qcom_scm`
/// settled on the SMC64 convention through warden's SCM dispatcher.
pub fn judge_snapdragon_probe(run: &Captured) -> Vec<Verdict> {
    let has = |pred: &dyn Fn(&str) -> bool| run.lines.iter().any(|l| pred(l));
    let checks: [(&str, bool); 4] = [
        (
            "linux/snapdragon/warden offered a virtual MMU-500",
            has(&|l| l.contains("virtual MMU-500 (qcom,sc7280-smmu-500)")),
        ),
        (
            "linux/snapdragon/arm-smmu: probing hardware configuration",
            has(&|l| l.contains("arm-smmu ") && l.contains("probing hardware configuration")),
        ),
        (
            "linux/snapdragon/arm-smmu: stage 1 translation",
            has(&|l| l.contains("arm-smmu ") && l.trim_end().ends_with("stage 1 translation")),
        ),
        (
            "linux/snapdragon/qcom_scm: convention: smc arm 64",
            has(&|l| l.contains("qcom_scm: convention: smc arm 64")),
        ),
    ];
    checks
        .into_iter()
        .map(|(name, ok)| Verdict::check(name, ok, || "line not on the console".into()))
        .collect()
}

/// Boot of a Linux host (see `tests/linux/init`). `with_warden`: a `skip` line is a failure
/// (everything must run under warden); without warden it is only reported.
pub fn judge_linux_boot(run: &Captured, smp: u32, with_warden: bool) -> Vec<Verdict> {
    const P: &str = "linux";
    let mut out = Vec::new();
    if with_warden {
        out.push(Verdict::check(
            "linux/boot/warden banner printed",
            run.lines.iter().any(|l| is_banner(l)),
            || "no line containing `warden v<version>`".into(),
        ));
    }
    out.push(Verdict::check(
        "linux/boot/kernel: CPU: All CPU(s) started at EL1",
        run.lines.iter().any(|l| l.contains("CPU: All CPU(s) started at EL1")),
        || match run.lines.iter().find(|l| l.contains("CPU: All CPU(s) started")) {
            Some(l) => format!("the kernel said `{}`", l.trim()),
            None => format!("no such kernel line ({})", ending_text(&run.ending)),
        },
    ));
    let init = run.lines.iter().position(|l| l.contains(INIT_STARTED));
    out.push(Verdict::check("linux/boot/init started", init.is_some(), || {
        format!("no `{INIT_STARTED}` line ({})", ending_text(&run.ending))
    }));
    let after_init = init.map_or(&run.lines[..0], |i| &run.lines[i..]);
    let nproc = after_init.iter().find_map(|l| l.trim().strip_prefix("linux: nproc="));
    out.push(Verdict::check(
        &format!("linux/boot/nproc is {smp} (-smp)"),
        nproc.is_some_and(|n| n.trim() == smp.to_string()),
        || match nproc {
            Some(n) => format!("nproc={}", n.trim()),
            None => "no `linux: nproc=N` line".into(),
        },
    ));
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for line in after_init {
        if let Some(v) = parse_result_line(line, P) {
            results.push(v);
        } else if let Some(rest) = line.trim().strip_prefix("skip ") {
            let (name, reason) = rest.split_once(':').unwrap_or((rest, ""));
            skipped.push((name.trim().to_owned(), reason.trim().to_owned()));
        }
    }
    if results.is_empty() && skipped.is_empty() {
        out.push(Verdict::fail(
            "linux/any scenario",
            "/init printed no `ok NAME` or `FAILED NAME: reason` line",
        ));
    }
    let counted = (
        results.iter().filter(|v| v.outcome.is_ok()).count(),
        results.iter().filter(|v| v.outcome.is_err()).count(),
        skipped.len(),
    );
    out.extend(results);
    // (When /init ran no scenario at all, "any scenario" already says so.)
    let ran_scenarios = counted != (0, 0, 0);
    if with_warden && ran_scenarios {
        for name in REQUIRED_WITH_WARDEN {
            let full = format!("{P}/{name}");
            let reported = out.iter().any(|v| v.name == full)
                || skipped.iter().any(|(skipped, _)| skipped == name);
            if !reported {
                out.push(Verdict::fail(full, "no `ok`/`FAILED`/`skip` line for this scenario"));
            }
        }
    }
    if with_warden {
        for (name, reason) in &skipped {
            out.push(Verdict::fail(
                format!("linux/{name}"),
                format!("skipped under warden: {reason}"),
            ));
        }
    }
    let done = after_init.iter().position(|l| l.trim() == "linux: done");
    let summary = after_init.iter().find_map(|l| parse_linux_summary(l));
    out.push(Verdict::check(
        "linux/boot/summary line agrees with the result lines",
        summary == Some(counted),
        || match summary {
            Some(s) => {
                format!("/init counted {s:?} (passed, failed, skipped), the log has {counted:?}")
            }
            None => "no `linux: N passed, M failed` line".into(),
        },
    ));
    out.push(Verdict::check("linux/boot/printed `linux: done`", done.is_some(), || {
        format!("no `linux: done` line ({})", ending_text(&run.ending))
    }));
    out.push(Verdict::check(
        "linux/boot/powered off cleanly (QEMU exit 0 after `linux: done`)",
        done.is_some() && run.ending == Ending::Exited(Some(0)),
        || {
            if done.is_none() {
                format!("{} without `linux: done`", ending_text(&run.ending))
            } else {
                ending_text(&run.ending)
            }
        },
    ));
    if with_warden && ran_scenarios {
        out.push(judge_dma_refusal_logged(run));
    }
    let trouble = run.lines.iter().find(|l| KERNEL_TROUBLE.iter().any(|t| l.contains(t)));
    out.push(Verdict::check(
        "linux/boot/no WARNING:, Oops, BUG:, Call trace or panic on the console",
        trouble.is_none(),
        || format!("`{}`", trouble.map_or("", |l| l.trim())),
    ));
    out
}

/// What the chain scenario (`linux-chain`) checks beyond the `linux` scenario's verdicts.
#[derive(Debug, Clone)]
pub struct ChainExpectations {
    /// Verdict names start with this (`linux-chain`).
    pub prefix: String,
    /// The kernel command line written into extlinux.conf.
    pub cmdline: String,
    /// `/reserved-memory` nodes of the chain's DT that must reach Linux `no-map` (warden's
    /// region and the carveouts): node base name and range.
    pub no_map: Vec<(String, warden::mm::MemRange)>,
    /// False for the chain without warden (U-Boot at `HYP_BASE`): then warden's banner must
    /// not appear.
    pub warden: bool,
}

/// The chain's stages, in order on the console: tz-sim entering the hyp image, warden's banner,
/// U-Boot's, U-Boot reading extlinux.conf from the boot disk with the command line xtask wrote,
/// Linux; and every no-map region of the chain's DT in Linux's `OF: reserved mem:` lines (the
/// DT U-Boot handed over kept warden's reservations).
pub fn judge_chain(run: &Captured, expect: &ChainExpectations) -> Vec<Verdict> {
    let p = &expect.prefix;
    let first = |pred: &dyn Fn(&str) -> bool| run.lines.iter().position(|l| pred(l));
    let warden = first(&|l| is_banner(l));
    let mut stages: Vec<(&str, Option<usize>)> = vec![(
        "tz-sim entered the hyp image",
        first(&|l| l.contains("tz-sim v") && l.contains("entering the hyp image")),
    )];
    if expect.warden {
        stages.push(("warden's banner", warden));
    }
    stages.extend([
        ("U-Boot's banner", first(&|l| l.starts_with("U-Boot 20"))),
        (
            "U-Boot read extlinux.conf",
            first(&|l| l.trim() == "Retrieving file: /extlinux/extlinux.conf"),
        ),
        ("Linux", first(&|l| l.contains("Booting Linux on physical CPU"))),
    ]);
    let names: Vec<&str> = stages.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&str> =
        stages.iter().filter(|(_, at)| at.is_none()).map(|(n, _)| *n).collect();
    let positions: Vec<usize> = stages.iter().filter_map(|(_, at)| *at).collect();
    let mut out = vec![Verdict::check(
        &format!("{p}/chain/{} in order", names.join(", ")),
        missing.is_empty() && positions.windows(2).all(|w| w[0] < w[1]),
        || {
            if missing.is_empty() {
                let at: Vec<String> = stages
                    .iter()
                    .map(|(n, at)| format!("{n} at line {}", at.unwrap_or(0)))
                    .collect();
                format!("out of order: {}", at.join(", "))
            } else {
                format!("never seen: {}", missing.join(", "))
            }
        },
    )];
    if !expect.warden {
        out.push(Verdict::check(
            &format!("{p}/chain/no warden banner (U-Boot runs in warden's place)"),
            warden.is_none(),
            || format!("`{}`", warden.map_or("", |i| run.lines[i].trim())),
        ));
    }
    let append = run.lines.iter().find_map(|l| l.trim().strip_prefix("append: "));
    out.push(Verdict::check(
        &format!("{p}/chain/U-Boot booted the disk's extlinux.conf with xtask's command line"),
        append.is_some_and(|a| a.trim() == expect.cmdline.trim()),
        || match append {
            Some(a) => format!("U-Boot's append line was `{}`", a.trim()),
            None => "no `append:` line from U-Boot".into(),
        },
    ));
    for (name, range) in &expect.no_map {
        let wanted = format!(
            "OF: reserved mem: {:#018x}..{:#018x} ",
            range.start,
            range.end.saturating_sub(1)
        );
        let line = run.lines.iter().find(|l| l.contains(&wanted));
        out.push(Verdict::check(
            &format!("{p}/chain/Linux has {name} {range} reserved no-map"),
            line.is_some_and(|l| l.contains(" nomap ") && l.contains(&format!(" {name}@"))),
            || match line {
                Some(l) => format!("Linux reserved it differently: `{}`", l.trim()),
                None => format!("no `{}` line in the kernel log", wanted.trim()),
            },
        ));
    }
    out
}

/// `linux` checks that cannot hold on the chain's board, `qemu-virt-tz`: it keeps no CPU for
/// warden's simulated peer (boards/qemu-virt-tz, `sim_peer: false`), and these stories end with
/// the peer checksumming what it was given, so they skip there (`without_sim_peer` in
/// tests/linux/lib.sh: PEER_COMMAND answers NOT_SUPPORTED). Without `dma-after-donate` there is
/// also no DMA into a donated page for warden to refuse and log.
pub const CHAIN_WITHOUT_PEER: [&str; 3] = ["handoff-devmem", "lend-devmem", DMA_AFTER_DONATE];

/// What `/init` prints for a scenario that skipped for want of the simulated peer
/// (`WARDEN_NO_PEER_WHY` in tests/linux/lib.sh).
pub const NO_PEER_SKIP: &str = "no simulated peer on this machine";

/// The `linux` judge's verdicts (named `linux/...`) for a host with no simulated peer: each
/// scenario of [`CHAIN_WITHOUT_PEER`] that skipped for exactly that reason passes as a
/// recorded skip, and so does the check that warden logged `dma-after-donate`'s refused DMA
/// when that scenario skipped. Any other skip, and these scenarios failing, still fail.
pub fn without_sim_peer(verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let no_peer_skip = |v: &Verdict| {
        v.outcome.as_ref().err().is_some_and(|why| {
            why.strip_prefix("skipped under warden: ").is_some_and(|r| r.starts_with(NO_PEER_SKIP))
        })
    };
    let dma_skipped =
        verdicts.iter().any(|v| v.name == format!("linux/{DMA_AFTER_DONATE}") && no_peer_skip(v));
    verdicts
        .into_iter()
        .map(|v| {
            let name = v.name.strip_prefix("linux/").unwrap_or("");
            if CHAIN_WITHOUT_PEER.contains(&name) && no_peer_skip(&v) {
                Verdict::pass(format!("{} (skipped: {NO_PEER_SKIP})", v.name))
            } else if dma_skipped && v.name == DMA_REFUSAL_LOGGED {
                Verdict::pass(format!(
                    "{} (not provoked: {DMA_AFTER_DONATE} needs the simulated peer)",
                    v.name
                ))
            } else {
                v
            }
        })
        .collect()
}

/// The chain's CPUs and power-off, with warden as the boot stage: each of the `cpus - 1` other
/// CPUs entered Linux from warden's secondary path (tz-sim → warden at `HYP_BASE` → the entry
/// Linux asked for), Linux's power-off reached tz-sim (`tz-sim: SYSTEM_OFF`), and tz-sim's XPU
/// witness logged no violation.
pub fn judge_chain_cpus_and_power(run: &Captured, cpus: u32, prefix: &str) -> Vec<Verdict> {
    let has = |needle: &str| run.lines.iter().any(|l| l.contains(needle));
    let others = cpus.saturating_sub(1);
    let secondaries =
        (1..cpus).filter(|cpu| has(&format!("warden: cpu{cpu}: entering host at "))).count() as u32;
    let violation = run.lines.iter().find(|l| l.contains("XPU: violation"));
    vec![
        Verdict::check(
            &format!("{prefix}/chain/all {others} other CPUs came up through tz-sim and warden"),
            secondaries == others,
            || format!("{secondaries} of {others} CPUs entered Linux from warden"),
        ),
        Verdict::check(
            &format!("{prefix}/chain/power-off reached tz-sim (SYSTEM_OFF)"),
            has("tz-sim: SYSTEM_OFF"),
            || format!("no `tz-sim: SYSTEM_OFF` line ({})", ending_text(&run.ending)),
        ),
        Verdict::check(
            &format!("{prefix}/chain/tz-sim's XPU witness saw no violation"),
            violation.is_none(),
            || format!("`{}`", violation.map_or("", |l| l.trim())),
        ),
    ]
}

/// The last `n` lines, for timeout reports.
pub fn tail(lines: &[String], n: usize) -> &[String] {
    &lines[lines.len().saturating_sub(n)..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn payload_bytes_moved_reads_warden_s_line() {
        let line = |s: &str| vec![s.to_string()];
        let moved = "warden: cpu0:   payload    4096 bytes moved, the rest in place";
        assert_eq!(payload_bytes_moved(&line(moved)), Some(4096));
        let none = "warden: cpu0:   payload    0 bytes moved, the rest in place";
        assert_eq!(payload_bytes_moved(&line(none)), Some(0));
        assert_eq!(payload_bytes_moved(&line("warden: cpu0:   kernel     0x40600000")), None);
        assert_eq!(payload_bytes_moved(&line("payload    x bytes moved, the rest in place")), None);
    }

    /// The chain's assign_mem judges: each wants its own outcome, and fails on the other's.
    #[test]
    fn chain_assign_judges_want_their_own_outcome() {
        let accepted = "\
warden: SCM assign_mem #1: 0x13c400000..0x13c402000 HLOS -> MSS_MSA: donated (exclusive), the firmware agreed
XPU: assign 0x13c400000..0x13c402000 HLOS -> MSS_MSA ok
guest: note scm_assign_reaches_tz: TZ accepted HLOS -> MSS_MSA of 0x13c400000..0x13c402000
tz-sim: SCM assign_mem 0x13c400000..0x13c402000 MSS_MSA -> HLOS
ok scm_assign_reaches_tz
guest: done
tz-sim: SYSTEM_OFF
";
        let refused = "\
warden: FAULT INJECTION: fault-injection-skip-assign-unmap built in: never ship this image
XPU: violation: assign 0x13c400000..0x13c402000 HLOS -> MSS_MSA: host stage 2 (VTTBR_EL2 0x1) maps IPA 0x13c400000 -> PA 0x13c400000 (level 3 page)
warden: SCM assign_mem refused: -1 (x2 0x1 x3 0x10 x4 0x2 x5 0x3; refusal #1)
guest: note scm_assign_reaches_tz: TZ refused HLOS -> MSS_MSA of 0x13c400000..0x13c402000 (x0 -1)
ok scm_assign_reaches_tz
guest: done
tz-sim: SYSTEM_OFF
";
        let ok = Ending::Exited(Some(0));
        let passed = |v: &[Verdict]| v.iter().all(|v| v.outcome.is_ok());
        assert!(passed(&judge_chain_assign(&captured(accepted, ok.clone()))));
        assert!(!passed(&judge_chain_assign(&captured(refused, ok.clone()))));
        assert!(passed(&judge_chain_xpu_violation(&captured(refused, ok.clone()))));
        assert!(!passed(&judge_chain_xpu_violation(&captured(accepted, ok.clone()))));
        let no_violation: String =
            refused.lines().filter(|l| !l.starts_with("XPU:")).map(|l| format!("{l}\n")).collect();
        assert!(!passed(&judge_chain_xpu_violation(&captured(&no_violation, ok))));
    }

    fn captured(text: &str, ending: Ending) -> Captured {
        Captured {
            lines: text.lines().map(str::to_owned).collect(),
            ending,
            elapsed: Duration::from_secs(1),
        }
    }

    const BOOT_HEAD: &str = "\
warden v0.1.0 on qemu-virt
warden: memory map:
warden:   0x40200000..0x40400000 warden
warden: cpu0:   payload    0 bytes moved, the rest in place
guest: warden test guest at 0x40c00000, EL1, DT at 0x40e00000
";
    const BOOT_TAIL: &str = "\
guest: done
warden: cpu0: WARN: SMMU event F_TRANSLATION sid 0x10 IPA 0x40200000 write (stage 2) (SMMU event #1)
warden: cpu0: vSMMU G3: stream 0x10 reuses retiring ASID 42 before its TLBI + sync; warden invalidated it first (1 so far)
warden: cpu0: host requested power-down: 1 violation(s) contained, 0 other trap(s) refused, 1 SMMU event(s); warden code+rodata intact (digest 0x1, boot 0x1)
";

    const CHAIN_LOG: &str = "\
tz-sim v0.1.0: EL3 on QEMU virt (GICv3, 3 CPUs), PSCI 1.0 over SMC; entering the hyp image at 0x7e000000 at EL2 with x0 = 0x60000000, x1 = 2
warden v0.1.0 on qemu-virt-tz
U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)
Retrieving file: /extlinux/extlinux.conf
append: console=ttyAMA0 warden.smp=3
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.000000] OF: reserved mem: 0x000000007e000000..0x000000007fffffff (32768 KiB) nomap non-reusable warden@7e000000
[    0.000000] OF: reserved mem: 0x00000000bc000000..0x00000000bcffffff (16384 KiB) nomap non-reusable modem@bc000000
";

    fn chain_expectations() -> ChainExpectations {
        use warden::mm::MemRange;
        ChainExpectations {
            prefix: "linux-chain".into(),
            cmdline: "console=ttyAMA0 warden.smp=3".into(),
            no_map: vec![
                ("warden".into(), MemRange::new(0x7e00_0000, 0x8000_0000)),
                ("modem".into(), MemRange::new(0xbc00_0000, 0xbd00_0000)),
            ],
            warden: true,
        }
    }

    #[test]
    fn without_a_peer_only_the_peer_stories_may_skip_and_only_for_that_reason() {
        let no_peer = "skipped under warden: no simulated peer on this machine (PEER_COMMAND: \
                       NOT_SUPPORTED)";
        let verdicts = vec![
            Verdict::fail("linux/handoff-devmem", no_peer),
            Verdict::fail("linux/lend-devmem", "skipped under warden: something else"),
            Verdict::fail("linux/dma-after-donate", no_peer),
            Verdict::fail(DMA_REFUSAL_LOGGED, "no `linux: dma-after-donate: ...` line"),
            Verdict::fail("linux/iommu-groups", no_peer),
            Verdict::fail("linux/disk-read", "FAILED"),
            Verdict::pass("linux/cpu-hotplug"),
        ];
        let judged = without_sim_peer(verdicts);
        let outcome: Vec<(&str, bool)> =
            judged.iter().map(|v| (v.name.as_str(), v.outcome.is_ok())).collect();
        assert_eq!(
            outcome,
            [
                ("linux/handoff-devmem (skipped: no simulated peer on this machine)", true),
                ("linux/lend-devmem", false),
                ("linux/dma-after-donate (skipped: no simulated peer on this machine)", true),
                (
                    "linux/boot/warden logged the SMMU refusing the DMA into the donated page \
                     (not provoked: dma-after-donate needs the simulated peer)",
                    true
                ),
                ("linux/iommu-groups", false),
                ("linux/disk-read", false),
                ("linux/cpu-hotplug", true),
            ]
        );
        // dma-after-donate ran (and failed): its refusal check stays.
        let ran = without_sim_peer(vec![
            Verdict::fail("linux/dma-after-donate", "DMA landed"),
            Verdict::fail(DMA_REFUSAL_LOGGED, "not refused"),
        ]);
        assert!(ran.iter().all(|v| v.outcome.is_err()));
    }

    #[test]
    fn chain_cpus_and_power_judge() {
        let good = "\
warden: cpu1: entering host at 0x40001000
warden: cpu2: entering host at 0x40001000
tz-sim: SYSTEM_OFF
";
        let judged = |log: &str| -> Vec<bool> {
            judge_chain_cpus_and_power(&captured(log, Ending::Exited(Some(0))), 3, "linux-chain")
                .iter()
                .map(|v| v.outcome.is_ok())
                .collect()
        };
        assert_eq!(judged(good), [true, true, true]);
        assert_eq!(judged(&good.replace("cpu2", "cpu1")), [false, true, true]);
        assert_eq!(judged(&good.replace("tz-sim: SYSTEM_OFF", "")), [true, false, true]);
        let xpu = format!("{good}tz-sim: XPU: violation: assign ...\n");
        assert_eq!(judged(&xpu), [true, true, false]);
    }

    #[test]
    fn chain_judge_passes_a_good_chain() {
        let run = captured(CHAIN_LOG, Ending::Exited(Some(0)));
        let verdicts = judge_chain(&run, &chain_expectations());
        assert_eq!(verdicts.len(), 4);
        for v in &verdicts {
            assert!(v.outcome.is_ok(), "{v:?}");
        }
    }

    #[test]
    fn chain_judge_catches_a_missing_stage_a_wrong_order_and_a_lost_reservation() {
        let expect = chain_expectations();
        let failed = |log: &str| -> Vec<String> {
            judge_chain(&captured(log, Ending::Exited(Some(0))), &expect)
                .into_iter()
                .filter(|v| v.outcome.is_err())
                .map(|v| v.name)
                .collect()
        };
        const IN_ORDER: &str = "linux-chain/chain/tz-sim entered the hyp image, warden's banner, \
                                U-Boot's banner, U-Boot read extlinux.conf, Linux in order";
        // U-Boot at HYP_BASE in warden's place: no warden banner.
        let no_warden = CHAIN_LOG.replace("warden v0.1.0 on qemu-virt-tz\n", "");
        assert_eq!(failed(&no_warden), [IN_ORDER]);
        // ... which is what the chain without warden must show.
        let without = ChainExpectations { warden: false, ..expect.clone() };
        let judged = |log: &str| judge_chain(&captured(log, Ending::Exited(Some(0))), &without);
        assert!(judged(&no_warden).iter().all(|v| v.outcome.is_ok()));
        assert_eq!(
            judged(CHAIN_LOG).iter().filter(|v| v.outcome.is_err()).count(),
            1,
            "a warden banner in the chain without warden"
        );
        // warden's banner after U-Boot's.
        let late = CHAIN_LOG
            .replace("warden v0.1.0 on qemu-virt-tz\n", "")
            .replace("Retrieving", "warden v0.1.0 on qemu-virt-tz\nRetrieving");
        assert_eq!(failed(&late), [IN_ORDER]);
        // Another command line (a stale disk).
        let stale = CHAIN_LOG.replace("append: console=ttyAMA0 warden.smp=3", "append: quiet");
        assert_eq!(
            failed(&stale),
            ["linux-chain/chain/U-Boot booted the disk's extlinux.conf with xtask's command line"]
        );
        // warden's region mapped by Linux (U-Boot or a DT without the no-map).
        let mapped = CHAIN_LOG.replace("nomap non-reusable warden", "non-reusable warden");
        assert_eq!(failed(&mapped).len(), 1);
        assert!(failed(&mapped)[0].contains("warden"), "{:?}", failed(&mapped));
        let lost = CHAIN_LOG.replace("modem@bc000000", "other@bc000000");
        assert!(failed(&lost)[0].contains("modem"));
    }

    #[test]
    fn handoff_stress_judge() {
        let report = |violations: u32, events: u32| {
            format!(
                "warden: cpu0: host requested power-down: {violations} violation(s) contained, 0 \
                 other trap(s) refused, {events} SMMU event(s), 0 stage-2 fault(s) retried, 0 \
                 table frame(s) quarantined; warden code+rodata intact (digest 0x1, boot 0x1)"
            )
        };
        let good = format!(
            "guest: note carveout_neighbours_never_fault: ...\nok carveout_neighbours_never_fault\n\
             guest: 2 passed, 0 failed\nguest: done\n{}\n",
            report(0, 0)
        );
        let verdicts = judge_handoff_stress(&captured(&good, Ending::Exited(Some(0))));
        assert!(verdicts.iter().all(|v| v.outcome.is_ok()), "{verdicts:?}");
        let bad = format!(
            "FAILED carveout_neighbours_never_fault: 3 SEA(s)\nguest: done\n{}\n",
            report(3, 1)
        );
        let verdicts = judge_handoff_stress(&captured(&bad, Ending::Exited(Some(0))));
        let failed: Vec<&str> =
            verdicts.iter().filter(|v| v.outcome.is_err()).map(|v| v.name.as_str()).collect();
        assert_eq!(
            failed,
            [
                "handoff-stress/carveout_neighbours_never_fault",
                "handoff-stress/warden counted no violation and no SMMU event"
            ]
        );
        let hung = judge_handoff_stress(&captured("", Ending::TimedOut(Duration::from_secs(9))));
        assert!(hung.iter().all(|v| v.outcome.is_err()));
    }

    /// A guest boot whose scenario lines are `ok NAME` for every expected name except those
    /// in `failed` (`FAILED NAME: why`) and `absent` (no line); the summary line matches.
    fn guest_boot(failed: &[(&str, &str)], absent: &[&str]) -> String {
        let mut text = BOOT_HEAD.to_owned();
        let (mut passed, mut failures) = (0, 0);
        for name in GUEST_SCENARIOS.iter().filter(|name| !absent.contains(name)) {
            match failed.iter().find(|(n, _)| n == name) {
                Some((_, why)) => {
                    failures += 1;
                    text += &format!("FAILED {name}: {why}\n");
                }
                None => {
                    passed += 1;
                    text += &format!("ok {name}\n");
                }
            }
        }
        text += &format!("guest: {passed} passed, {failures} failed\n");
        text + BOOT_TAIL
    }

    fn names(v: &[Verdict]) -> Vec<(&str, bool)> {
        v.iter().map(|v| (v.name.as_str(), v.outcome.is_ok())).collect()
    }

    fn failures(v: &[Verdict]) -> Vec<(&str, &str)> {
        v.iter()
            .filter_map(|v| v.outcome.as_ref().err().map(|e| (v.name.as_str(), e.as_str())))
            .collect()
    }

    #[test]
    fn small_ram_needs_carveouts_inside_and_every_handoff_scenario() {
        let map = "\
warden: cpu0:   RAM        0x0040000000..0x0060000000 (512 MiB)
warden: cpu0:   carveout   0x005c000000..0x005d000000 (16 MiB) (modem@5c000000: for the modem, Donate)
warden: cpu0:   carveout   0x005d000000..0x005e000000 (16 MiB) (dsp@5d000000: for the dsp, Lend, clear on reclaim)
warden: cpu0:   payload    4096 bytes moved, the rest in place
";
        let oks: String = SMALL_RAM_SCENARIOS.iter().map(|n| format!("ok {n}\n")).collect();
        let good = format!("{map}{oks}guest: done\n");
        let v = judge_small_ram(&captured(&good, Ending::Exited(Some(0))));
        assert!(failures(&v).is_empty(), "{:?}", failures(&v));
        assert_eq!(v.len(), SMALL_RAM_SCENARIOS.len() + 3);
        // The compact-packed guest left in place: the move path did not run.
        let unmoved = good.replace("4096 bytes moved", "0 bytes moved");
        let v = judge_small_ram(&captured(&unmoved, Ending::Exited(Some(0))));
        assert_eq!(failures(&v).len(), 1, "{:?}", failures(&v));
        // The carveouts where 1 GiB would have them: outside 512 MiB.
        let outside = good.replace("0x005c000000..0x005d000000", "0x007c000000..0x007d000000");
        let v = judge_small_ram(&captured(&outside, Ending::Exited(Some(0))));
        assert_eq!(failures(&v).len(), 1, "{:?}", failures(&v));
        // A scenario failing or missing, a bad ending.
        let bad = good
            .replace("ok peer_own_pages_refused", "FAILED peer_own_pages_refused: nope")
            .replace("ok carveouts_listed\n", "");
        let v = judge_small_ram(&captured(&bad, Ending::TimedOut(Duration::from_secs(240))));
        let names: Vec<&str> = failures(&v).iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "small-ram/carveouts_listed",
                "small-ram/peer_own_pages_refused",
                "small-ram/guest printed `guest: done`, QEMU exited with status 0"
            ]
        );
    }

    #[test]
    fn guest_gicv2_needs_warden_on_the_gicv2_and_every_board_check() {
        let warden = "warden: cpu0: interrupt controller: GICv2 (/intc@8000000): GICD 0x0008000000..0x0008010000 (64 KiB) and GICC 0x0008010000..0x0008020000 (64 KiB) passed through; GICH 0x0008030000..0x0008040000 (64 KiB) and GICV 0x0008040000..0x0008050000 (64 KiB) withheld (a hypervisor's)\n";
        let oks: String = GICV2_PLATFORM_SCENARIOS
            .iter()
            .chain(SMALL_RAM_SCENARIOS.iter())
            .map(|n| format!("ok {n}\n"))
            .collect();
        let good = format!("{warden}{oks}guest: done\n");
        let v = judge_guest_gicv2(&captured(&good, Ending::Exited(Some(0))));
        assert!(failures(&v).is_empty(), "{:?}", failures(&v));
        assert_eq!(v.len(), 1 + GICV2_PLATFORM_SCENARIOS.len() + SMALL_RAM_SCENARIOS.len() + 1);
        // warden on a GICv3 (or silent about GICH), a board check missing.
        let gicv3 = good.replace(warden, "warden: cpu0: interrupt controller: GICv3: ...\n");
        let v = judge_guest_gicv2(&captured(&gicv3, Ending::Exited(Some(0))));
        assert_eq!(failures(&v).len(), 1, "{:?}", failures(&v));
        let missing = good.replace("ok gicv2_frames\n", "");
        let names: Vec<String> =
            failures(&judge_guest_gicv2(&captured(&missing, Ending::Exited(Some(0)))))
                .iter()
                .map(|f| f.0.to_owned())
                .collect();
        assert_eq!(names, ["guest-gicv2/gicv2_frames"]);
    }

    #[test]
    fn tz_sim_needs_the_banner_every_probe_check_and_the_power_off() {
        let oks: String = TZ_PROBE_CHECKS.iter().map(|n| format!("ok {n}\n")).collect();
        let witness = "XPU: violation: assign 0x48000000..0x48010000 HLOS -> MSS_MSA: host stage 2 (VTTBR_EL2 0x1007e00c000) maps IPA ...\n\
            XPU: violation: assign 0x48000000..0x48010000 HLOS -> MSS_MSA: SMMU stream 0x3's stage 2 maps IPA ...\n\
            XPU: assign 0x48000000..0x48010000 HLOS -> MSS_MSA ok\n\
            XPU: auth_and_reset MPSS 0x48400000..0x48440000 HLOS -> MSS_MSA ok\n";
        let good = format!(
            "tz-sim v0.1.0: EL3 on QEMU virt (GICv2, 4 CPUs), PSCI 1.0 over SMC; ...\n{witness}{oks}tz-probe: done\ntz-sim: SYSTEM_OFF\n"
        );
        let v = judge_tz_sim("gicv2", &captured(&good, Ending::Exited(Some(0))));
        assert!(failures(&v).is_empty(), "{:?}", failures(&v));
        assert_eq!(v.len(), TZ_PROBE_CHECKS.len() + 3);
        // Without the witness's lines, or with a fault at EL3.
        for bad in [
            good.replace("XPU: violation", "XPU: fine"),
            good.replace("XPU: auth_and_reset", "auth_and_reset"),
            format!("{good}tz-sim: FATAL: unexpected exception at EL3 on CPU 0x0: ...\n"),
        ] {
            let v = judge_tz_sim("gicv2", &captured(&bad, Ending::Exited(Some(0))));
            let names: Vec<&str> = failures(&v).iter().map(|f| f.0).collect();
            assert_eq!(names, ["tz-sim/gicv2/XPU witness lines, no fault at EL3"]);
        }
        assert!(v.iter().all(|v| v.name.starts_with("tz-sim/gicv2/")));
        // The other GIC's banner; a failed check; no power-off.
        let v = judge_tz_sim("gicv3", &captured(&good, Ending::Exited(Some(0))));
        assert_eq!(failures(&v).len(), 1, "{:?}", failures(&v));
        let bad = good
            .replace("ok gic_group1", "FAILED gic_group1: acknowledged INTID 1023")
            .replace("tz-sim: SYSTEM_OFF\n", "");
        let names: Vec<String> = failures(&judge_tz_sim(
            "gicv2",
            &captured(&bad, Ending::TimedOut(Duration::from_secs(240))),
        ))
        .iter()
        .map(|f| f.0.to_owned())
        .collect();
        assert_eq!(
            names,
            [
                "tz-sim/gicv2/gic_group1",
                "tz-sim/gicv2/probe done, SYSTEM_OFF, QEMU exited with status 0"
            ]
        );
    }

    #[test]
    fn many_cpus_needs_every_other_cpu_started() {
        let oks: String = PLATFORM_SCENARIOS
            .iter()
            .chain(SMALL_RAM_SCENARIOS.iter())
            .map(|n| format!("ok {n}\n"))
            .collect();
        let note = "guest: note all_cpus_on: 10 CPU(s) on and off, one at a time\n";
        let good = format!("{note}{oks}guest: done\n");
        let v = judge_many_cpus(&captured(&good, Ending::Exited(Some(0))));
        assert!(failures(&v).is_empty(), "{:?}", failures(&v));
        // Fewer CPUs than the machine has (a DT cut to 8, say).
        let fewer = good.replace("10 CPU(s)", "7 CPU(s)");
        let v = judge_many_cpus(&captured(&fewer, Ending::Exited(Some(0))));
        assert_eq!(failures(&v).len(), 1, "{:?}", failures(&v));
        // warden refusing the DT: nothing from the guest, a timeout.
        let v = judge_many_cpus(&captured(
            "warden: FATAL: ...\n",
            Ending::TimedOut(Duration::from_secs(240)),
        ));
        assert_eq!(failures(&v).len(), v.len());
    }

    const BOOT_CHECKS_AFTER_GUEST: [&str; 6] = [
        "boot/guest summary agrees with its result lines",
        "boot/guest printed `guest: done`",
        "boot/warden logged the SMMU refusing the edu DMA into its memory",
        "boot/warden logged its G3 flush of the reused ASID",
        "boot/warden code+rodata intact at power-down",
        "boot/QEMU exited by itself with status 0 (PSCI SYSTEM_OFF)",
    ];

    #[test]
    fn passing_boot_reports_every_scenario_in_order() {
        let v = judge_guest_boot(&captured(&guest_boot(&[], &[]), Ending::Exited(Some(0))));
        let mut expected = vec![
            "boot/warden banner printed",
            "boot/warden memory map printed",
            "boot/the packed payload runs in place (0 bytes moved)",
        ];
        let guest: Vec<String> = GUEST_SCENARIOS.iter().map(|n| format!("guest/{n}")).collect();
        expected.extend(guest.iter().map(String::as_str));
        expected.extend(BOOT_CHECKS_AFTER_GUEST);
        assert_eq!(v.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), expected);
        assert_eq!(failures(&v), []);
    }

    #[test]
    fn handoff_scenarios_refused_by_warden_are_failures_not_skips() {
        let why = "CARVEOUT_COUNT by HVC: NOT_SUPPORTED (-1)";
        let refused = [
            ("carveouts_listed", why),
            ("two_cpus_hammer_carveouts", "CARVEOUT_INFO(0): NOT_SUPPORTED (-1)"),
        ];
        let v = judge_guest_boot(&captured(&guest_boot(&refused, &[]), Ending::Exited(Some(0))));
        assert_eq!(
            failures(&v),
            [
                ("guest/carveouts_listed", why),
                ("guest/two_cpus_hammer_carveouts", "CARVEOUT_INFO(0): NOT_SUPPORTED (-1)"),
            ]
        );
        assert_eq!(v.len(), 3 + GUEST_SCENARIOS.len() + BOOT_CHECKS_AFTER_GUEST.len());
    }

    #[test]
    fn scenarios_without_a_line_fail() {
        let absent = ["bad_requests_change_nothing", "two_cpus_hammer_carveouts"];
        let v = judge_guest_boot(&captured(&guest_boot(&[], &absent), Ending::Exited(Some(0))));
        let f = failures(&v);
        assert_eq!(
            f.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            ["guest/bad_requests_change_nothing", "guest/two_cpus_hammer_carveouts"]
        );
        assert!(f.iter().all(|(_, why)| why.contains("no `ok`/`FAILED` line")), "{f:?}");
        // Unexpected names (a fatal report, an extra scenario) are results too.
        let text = guest_boot(&[], &[])
            .replace("guest: done", "FAILED unexpected_exception: EL1 vector 4\nguest: done");
        let v = judge_guest_boot(&captured(&text, Ending::Exited(Some(0))));
        let n = GUEST_SCENARIOS.len();
        let summary = format!("the guest counted ({n}, 0) (passed, failed), the log has ({n}, 1)");
        assert_eq!(
            failures(&v),
            [
                ("guest/unexpected_exception", "EL1 vector 4"),
                ("boot/guest summary agrees with its result lines", summary.as_str()),
            ]
        );
    }

    #[test]
    fn guest_summary_parsing() {
        assert_eq!(parse_guest_summary("guest: 9 passed, 0 failed"), Some((9, 0)));
        assert_eq!(parse_guest_summary("guest: 9 passed, 2 failed\r"), Some((9, 2)));
        assert_eq!(parse_guest_summary("guest: done"), None);
        assert_eq!(parse_guest_summary("guest: 9 passed"), None);
        assert_eq!(parse_guest_summary("9 passed, 0 failed"), None);
    }

    #[test]
    fn timeout_without_done_line() {
        let text = "warden v0.1.0 on qemu-virt\nwarden: memory map:\n\
                    warden: cpu0:   payload    0 bytes moved, the rest in place\nok runs_at_el1\n";
        let v = judge_guest_boot(&captured(text, Ending::TimedOut(Duration::from_secs(120))));
        let done = v.iter().find(|v| v.name.contains("guest: done")).unwrap();
        assert_eq!(done.outcome, Err("no `guest: done` line (timed out after 120 s)".into()));
        let exit = v.iter().find(|v| v.name.contains("QEMU exited")).unwrap();
        assert_eq!(exit.outcome, Err("timed out after 120 s".into()));
        let passed: Vec<&str> =
            v.iter().filter(|v| v.outcome.is_ok()).map(|v| v.name.as_str()).collect();
        assert_eq!(
            passed,
            [
                "boot/warden banner printed",
                "boot/warden memory map printed",
                "boot/the packed payload runs in place (0 bytes moved)",
                "guest/runs_at_el1"
            ]
        );
        assert_eq!(v.iter().filter(|v| v.outcome.is_err()).count(), GUEST_SCENARIOS.len() - 1 + 6);
    }

    #[test]
    fn silent_guest_and_missing_banner_fail() {
        let v = judge_guest_boot(&captured("guest: done\n", Ending::Exited(Some(1))));
        assert!(
            v.iter().all(|v| v.outcome.is_ok() == (v.name == "boot/guest printed `guest: done`"))
        );
        let head: Vec<(&str, bool)> = names(&v).into_iter().take(5).collect();
        assert_eq!(
            head,
            [
                ("boot/warden banner printed", false),
                ("boot/warden memory map printed", false),
                ("boot/the packed payload runs in place (0 bytes moved)", false),
                ("guest/any scenario", false),
                ("guest/runs_at_el1", false),
            ]
        );
        assert_eq!(v.last().unwrap().outcome, Err("QEMU exited with status 1".into()));
    }

    #[test]
    fn corrupted_image_or_missing_smmu_refusal_fail() {
        let text = guest_boot(&[("secondary_cpu_on", "CPU_ON returned -2")], &[])
            .replace("code+rodata intact", "code+rodata CORRUPTED")
            .replace(
                "SMMU event F_TRANSLATION sid 0x10 IPA 0x40200000 write (stage 2)",
                "SMMU event C_BAD_STE sid 0x10",
            );
        let v = judge_guest_boot(&captured(&text, Ending::Exited(Some(0))));
        let failed: Vec<&str> =
            v.iter().filter(|v| v.outcome.is_err()).map(|v| v.name.as_str()).collect();
        assert_eq!(
            failed,
            [
                "guest/secondary_cpu_on",
                "boot/warden logged the SMMU refusing the edu DMA into its memory",
                "boot/warden code+rodata intact at power-down",
            ]
        );
    }

    #[test]
    fn stale_asid_without_g3_flush_line_fails() {
        // The G3-off run's log has no flush line; without the G3-on run's, warden did not flush.
        let text = guest_boot(&[], &[]).replace("warden invalidated it first", "nothing done");
        let v = judge_guest_boot(&captured(&text, Ending::Exited(Some(0))));
        assert_eq!(
            failures(&v).iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            ["boot/warden logged its G3 flush of the reused ASID"]
        );
        assert!(is_g3_forced_flush(
            "warden: cpu0: vSMMU G3: stream 0x10 reuses retiring ASID 42 before its TLBI + \
             sync; warden invalidated it first (1 so far)"
        ));
        assert!(!is_g3_forced_flush(
            "warden: cpu0: WARN: vSMMU: G3 (ASID retirement flushes) switched off"
        ));
    }

    #[test]
    fn guest_line_parsing() {
        assert_eq!(parse_guest_line("ok a"), Some(Verdict::pass("guest/a")));
        assert_eq!(parse_guest_line("  ok a b \r"), Some(Verdict::pass("guest/a b")));
        assert_eq!(
            parse_guest_line("FAILED x"),
            Some(Verdict::fail("guest/x", "(no reason given)"))
        );
        assert_eq!(parse_guest_line("FAILED x: y: z"), Some(Verdict::fail("guest/x", "y: z")));
        assert_eq!(parse_guest_line("ok "), None);
        assert_eq!(parse_guest_line("okay"), None);
        assert_eq!(parse_guest_line("warden: ok a"), None);
        assert!(!is_banner("warden: v"));
        assert!(!is_banner("warden vx"));
        assert!(is_banner("[INFO] warden v12 on qemu-virt"));
    }

    #[test]
    fn region_too_small_verdicts() {
        let report = "warden v0.1.0 on qemu-virt\nwarden: FATAL: warden's region is 6184 KiB too small for this machine: its 1 carveout(s) (3 GiB in all) need at least 3142 page-table frames\nwarden: halting this CPU\n";
        let v = judge_region_too_small(&captured(report, Ending::StillRunningAfterMatch));
        assert!(v.iter().all(|v| v.outcome.is_ok()), "{v:?}");
        assert!(v.iter().all(|v| v.name.starts_with("hostile-dt/region/")), "{v:?}");
        let other_fatal = "warden: FATAL: host stage-2: out of frames\n";
        let v = judge_region_too_small(&captured(other_fatal, Ending::StillRunningAfterMatch));
        assert!(v[0].outcome.is_err() && v[1].outcome.is_err(), "{v:?}");
    }

    #[test]
    fn hostile_dt_verdicts() {
        let report = "warden v0.1.0 on qemu-virt\nDT: /reserved-memory/hostile-a@70000000 [..] overlaps /reserved-memory/hostile-b@70100000\nwarden: halting\n";
        let v = judge_hostile_dt(&captured(report, Ending::StillRunningAfterMatch));
        assert!(v.iter().all(|v| v.outcome.is_ok()), "{v:?}");

        let reset = judge_hostile_dt(&captured(report, Ending::Exited(Some(0))));
        assert_eq!(reset[1].outcome, Err("QEMU exited with status 0 instead of halting".into()));

        let silent = judge_hostile_dt(&captured(
            "warden v0.1.0\npanicked at src/dt/parse.rs:10:5: index out of bounds\n",
            Ending::TimedOut(Duration::from_secs(120)),
        ));
        assert_eq!(
            names(&silent),
            [
                ("hostile-dt/overlapping reserved-memory reported", false),
                ("hostile-dt/warden halts after the report", false),
                ("hostile-dt/no panic", false),
            ]
        );
    }

    #[test]
    fn tail_of_output() {
        let lines: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        assert_eq!(tail(&lines, 20).first().map(String::as_str), Some("10"));
        assert_eq!(tail(&lines[..3], 20).len(), 3);
    }

    const LINUX_PASS: &str = "\
warden v0.1.0 on qemu-virt (loaded at 0x40200000)
[    0.101] CPU: All CPU(s) started at EL1
[    3.215] Run /init as init process
linux: /init started, kernel 6.12.95+deb12-arm64
linux: nproc=2
linux: | CPUs:   all 2 CPUs started at EL1 (the kernel says so)
ok cpus-at-el1
ok cpu-hotplug
ok iomem-excludes-warden
ok disk-read
ok handoff-devmem
ok lend-devmem
ok iommu-groups
warden: cpu1: WARN: SMMU event F_TRANSLATION sid 0x20 VA 0x2000000 IPA 0x7cfff000 write (stage 2) (SMMU event #1)
linux: dma-after-donate: DMA target page P = 0x7cfff000
ok dma-after-donate
linux: 8 passed, 0 failed
linux: done
[    8.633] reboot: Power down
";

    #[test]
    fn guest_snapdragon_verdicts() {
        let mut text = String::from("warden v0.1.0 on qemu-virt\n");
        for name in GUEST_SNAPDRAGON_SCENARIOS {
            text.push_str(&format!("ok {name}\n"));
        }
        text.push_str(
            "warden: cpu0: vMMU-500 G3: stream 0x10 reuses retiring ASID 58 (host) before its \
             TLBI + sync (real ASID 58 still retiring); warden invalidated it first (1 so far)\n",
        );
        text.push_str("guest: done\n");
        let verdicts = judge_guest_snapdragon(&captured(&text, Ending::Exited(Some(0))));
        assert!(verdicts.iter().all(|v| v.outcome.is_ok()), "{verdicts:?}");
        assert_eq!(verdicts.len(), 1 + GUEST_SNAPDRAGON_SCENARIOS.len() + 3);
        let failed = text.replace(
            "ok mmu500_fastrpc_session_reuse_is_flushed",
            "FAILED mmu500_fastrpc_session_reuse_is_flushed: stale",
        );
        let verdicts = judge_guest_snapdragon(&captured(&failed, Ending::Exited(Some(0))));
        assert_eq!(verdicts.iter().filter(|v| v.outcome.is_err()).count(), 1);
        let missing = text.replace("ok mmu500_bypass_stream_dma_works\n", "");
        let verdicts = judge_guest_snapdragon(&captured(&missing, Ending::Exited(Some(0))));
        assert_eq!(verdicts.iter().filter(|v| v.outcome.is_err()).count(), 1);
    }

    #[test]
    fn snapdragon_scm_lines() {
        let mut text = String::from(
            "warden: SCM: rmtfs region (qcom,rmtfs-mem, client 1, VM MSS_MSA) is carveout x\n",
        );
        let mut n = 0;
        for _ in 0..RMTFS_ASSIGNS {
            n += 1;
            text +=
                &format!("warden: SCM assign_mem #{n}: r HLOS -> HLOS+MSS_MSA: shared (SHARE)\n");
            n += 1;
            text += &format!(
                "warden: SCM assign_mem #{n}: r HLOS+MSS_MSA -> HLOS: unshared (host alone)\n"
            );
        }
        let verdicts = judge_snapdragon_scm(&captured(&text, Ending::Exited(Some(0))));
        assert_eq!(verdicts.len(), 5);
        assert!(verdicts.iter().all(|v| v.outcome.is_ok()), "{verdicts:?}");
        let skipped = text.replace("#5:", "#50:");
        let verdicts = judge_snapdragon_scm(&captured(&skipped, Ending::Exited(Some(0))));
        assert_eq!(verdicts.iter().filter(|v| v.outcome.is_err()).count(), 1, "{verdicts:?}");
        let one_less = text.replacen("HLOS -> HLOS+MSS_MSA: shared", "x", 1);
        let verdicts = judge_snapdragon_scm(&captured(&one_less, Ending::Exited(Some(0))));
        assert!(verdicts.iter().any(|v| v.outcome.is_err()));
        let refused = text + "warden: SCM assign_mem refused: InvalidArgument\n";
        let verdicts = judge_snapdragon_scm(&captured(&refused, Ending::Exited(Some(0))));
        assert_eq!(verdicts.iter().filter(|v| v.outcome.is_err()).count(), 1);
    }

    #[test]
    fn snapdragon_probe_lines() {
        let text = "\
warden: SMMU [0x9050000, 0x9070000) taken; virtual MMU-500 (qcom,sc7280-smmu-500) for the host
[    0.1] qcom_scm: convention: smc arm 64
[    0.2] arm-smmu 9050000.smmuv3: probing hardware configuration...
[    0.2] arm-smmu 9050000.smmuv3: SMMUv2 with:
[    0.2] arm-smmu 9050000.smmuv3: \tstage 1 translation
";
        let verdicts = judge_snapdragon_probe(&captured(text, Ending::Exited(Some(0))));
        assert_eq!(verdicts.len(), 4);
        assert!(verdicts.iter().all(|v| v.outcome.is_ok()), "{verdicts:?}");
        let missing = text.replace("smc arm 64", "legacy");
        let verdicts = judge_snapdragon_probe(&captured(&missing, Ending::Exited(Some(0))));
        assert_eq!(verdicts.iter().filter(|v| v.outcome.is_err()).count(), 1);
    }

    fn linux(text: &str, ending: Ending) -> Vec<Verdict> {
        judge_linux_boot(&captured(text, ending), 2, true)
    }

    #[test]
    fn linux_passing_boot() {
        let v = linux(LINUX_PASS, Ending::Exited(Some(0)));
        assert_eq!(failures(&v), []);
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert!(names.contains(&"linux/cpu-hotplug"));
        assert!(names.contains(&"linux/boot/nproc is 2 (-smp)"));
        assert!(names.contains(&"linux/handoff-devmem"));
        assert!(names.contains(&"linux/dma-after-donate"));
        assert_eq!(v.len(), 17);
        // Without warden no banner is required.
        let text = LINUX_PASS.replace("warden v0.1.0", "qemu");
        let v = judge_linux_boot(&captured(&text, Ending::Exited(Some(0))), 2, false);
        assert_eq!(failures(&v), []);
        assert_eq!(v.len(), 15);
    }

    #[test]
    fn linux_failed_hotplug_and_wrong_summary() {
        let text = LINUX_PASS
            .replace("ok cpu-hotplug", "FAILED cpu-hotplug: writing 1 to /sys/devices/system/cpu/cpu1/online failed (CPU_ON refused?)")
            .replace("linux: nproc=2", "linux: nproc=1");
        let v = linux(&text, Ending::Exited(Some(0)));
        assert_eq!(
            failures(&v),
            [
                ("linux/boot/nproc is 2 (-smp)", "nproc=1"),
                (
                    "linux/cpu-hotplug",
                    "writing 1 to /sys/devices/system/cpu/cpu1/online failed (CPU_ON refused?)"
                ),
                (
                    "linux/boot/summary line agrees with the result lines",
                    "/init counted (8, 0, 0) (passed, failed, skipped), the log has (7, 1, 0)"
                ),
            ]
        );
    }

    #[test]
    fn linux_oops_without_done() {
        let text = "\
warden v0.1.0 on qemu-virt
[    0.101] CPU: All CPU(s) started at EL1
[    2.503] Internal error: Oops: 0000000096000010 [#1] SMP
[    2.516] Call trace:
[    2.523] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b
";
        let v = linux(text, Ending::Exited(Some(0)));
        assert_eq!(
            failures(&v),
            [
                (
                    "linux/boot/init started",
                    "no `linux: /init started` line (QEMU exited with status 0)"
                ),
                ("linux/boot/nproc is 2 (-smp)", "no `linux: nproc=N` line"),
                ("linux/any scenario", "/init printed no `ok NAME` or `FAILED NAME: reason` line"),
                (
                    "linux/boot/summary line agrees with the result lines",
                    "no `linux: N passed, M failed` line"
                ),
                (
                    "linux/boot/printed `linux: done`",
                    "no `linux: done` line (QEMU exited with status 0)"
                ),
                (
                    "linux/boot/powered off cleanly (QEMU exit 0 after `linux: done`)",
                    "QEMU exited with status 0 without `linux: done`"
                ),
                (
                    "linux/boot/no WARNING:, Oops, BUG:, Call trace or panic on the console",
                    "`[    2.503] Internal error: Oops: 0000000096000010 [#1] SMP`"
                ),
            ]
        );
    }

    #[test]
    fn linux_warning_timeout_and_skip() {
        let text = LINUX_PASS
            .replace("ok disk-read", "skip disk-read: no disk")
            .replace("8 passed, 0 failed", "7 passed, 0 failed, 1 skipped")
            .replace("linux: done\n", "[    5.0] WARNING: CPU: 1 PID: 1 at mm/slub.c:1 x\n");
        let v = linux(&text, Ending::TimedOut(Duration::from_secs(300)));
        let f = failures(&v);
        assert_eq!(f.len(), 4, "{f:?}");
        assert_eq!(f[0], ("linux/disk-read", "skipped under warden: no disk"));
        assert_eq!(f[1].0, "linux/boot/printed `linux: done`");
        assert_eq!(f[2].1, "timed out after 300 s without `linux: done`");
        assert!(f[3].1.contains("WARNING: CPU: 1"), "{f:?}");
        // Without warden a skip is only reported and the summary still agrees.
        let v =
            judge_linux_boot(&captured(&text, Ending::TimedOut(Duration::from_secs(1))), 2, false);
        assert!(!v.iter().any(|v| v.name == "linux/disk-read"));
        assert!(v.iter().any(|v| v.name.starts_with("linux/boot/summary") && v.outcome.is_ok()));
        // Result-like lines before /init are not results.
        let early = format!("ok early\n{LINUX_PASS}");
        assert!(!linux(&early, Ending::Exited(Some(0))).iter().any(|v| v.name == "linux/early"));
    }

    #[test]
    fn handoff_scenarios_are_required_under_warden_only() {
        // Under warden, a missing handoff line is a failure; a FAILED one is reported as such.
        let text = LINUX_PASS
            .replace("ok handoff-devmem\n", "")
            .replace(
                "ok lend-devmem",
                "FAILED lend-devmem: no /proc/device-tree/warden-control@* node",
            )
            .replace("8 passed, 0 failed", "6 passed, 1 failed");
        let v = linux(&text, Ending::Exited(Some(0)));
        assert_eq!(
            failures(&v),
            [
                ("linux/lend-devmem", "no /proc/device-tree/warden-control@* node"),
                ("linux/handoff-devmem", "no `ok`/`FAILED`/`skip` line for this scenario"),
            ]
        );
        // The no-warden baseline skips them cleanly: no failure, and the skips are not results.
        let text = LINUX_PASS
            .replace("warden v0.1.0", "qemu")
            .replace("ok handoff-devmem", "skip handoff-devmem: no warden, so no control page")
            .replace("ok lend-devmem", "skip lend-devmem: no warden, so no control page")
            .replace("8 passed, 0 failed", "6 passed, 0 failed, 2 skipped");
        let v = judge_linux_boot(&captured(&text, Ending::Exited(Some(0))), 2, false);
        assert_eq!(failures(&v), []);
        assert!(!v.iter().any(|v| v.name.contains("devmem")));
        // Under warden a skip of them fails once, as a skip (not also as missing).
        let text = LINUX_PASS
            .replace("ok handoff-devmem", "skip handoff-devmem: no warden, so no control page")
            .replace("8 passed, 0 failed", "7 passed, 0 failed, 1 skipped");
        let v = linux(&text, Ending::Exited(Some(0)));
        assert_eq!(
            failures(&v),
            [("linux/handoff-devmem", "skipped under warden: no warden, so no control page")]
        );
        // iommu-groups (Linux on the virtual SMMU) must report under warden too.
        let text = LINUX_PASS
            .replace("ok iommu-groups\n", "")
            .replace("8 passed, 0 failed", "7 passed, 0 failed");
        assert_eq!(
            failures(&linux(&text, Ending::Exited(Some(0)))),
            [("linux/iommu-groups", "no `ok`/`FAILED`/`skip` line for this scenario")]
        );
    }

    #[test]
    fn dma_after_donate_needs_warden_s_record_of_the_refusal() {
        const NAME: &str =
            "linux/boot/warden logged the SMMU refusing the DMA into the donated page";
        let refusal = "warden: cpu1: WARN: SMMU event F_TRANSLATION sid 0x20 VA 0x2000000 IPA \
                       0x7cfff000 write (stage 2) (SMMU event #1)\n";
        assert_eq!(smmu_refusal_ipa(refusal.trim()), Some(0x7cff_f000));
        assert_eq!(smmu_refusal_ipa("SMMU event C_BAD_STE sid 0x8"), None);
        assert_eq!(
            dma_target_page("linux: dma-after-donate: DMA target page P = 0x7cfff000"),
            Some(0x7cff_f000)
        );
        assert_eq!(dma_target_page("linux: dma-after-donate: DMA target page P = "), None);
        // The escape of today's main: the scenario fails and warden logged nothing.
        let escape = LINUX_PASS
            .replace(refusal, "")
            .replace(
                "ok dma-after-donate",
                "FAILED dma-after-donate: ESCAPE: edu wrote pattern B into P",
            )
            .replace("8 passed, 0 failed", "7 passed, 1 failed");
        assert_eq!(
            failures(&linux(&escape, Ending::Exited(Some(0)))),
            [
                ("linux/dma-after-donate", "ESCAPE: edu wrote pattern B into P"),
                (
                    NAME,
                    "no warden `SMMU event F_... IPA 0x7cfff000 ... (stage 2)` line: the DMA \
                     after the donation was not refused"
                ),
            ]
        );
        // A refusal elsewhere does not count; a refusal anywhere in the page does.
        let elsewhere = LINUX_PASS.replace("IPA 0x7cfff000", "IPA 0x40200000");
        assert_eq!(failures(&linux(&elsewhere, Ending::Exited(Some(0))))[0].0, NAME);
        let inside = LINUX_PASS.replace("IPA 0x7cfff000", "IPA 0x7cfffff8");
        assert_eq!(failures(&linux(&inside, Ending::Exited(Some(0)))), []);
        // No page named: nothing to look for.
        let silent =
            LINUX_PASS.replace("linux: dma-after-donate: DMA target page P = 0x7cfff000\n", "");
        assert_eq!(
            failures(&linux(&silent, Ending::Exited(Some(0)))),
            [(NAME, "no `linux: dma-after-donate: DMA target page P = 0x...` line")]
        );
        // Without warden there is nothing to refuse.
        let baseline = LINUX_PASS
            .replace("warden v0.1.0", "qemu")
            .replace(refusal, "")
            .replace("ok dma-after-donate", "skip dma-after-donate: no warden, so no control page")
            .replace("8 passed, 0 failed", "7 passed, 0 failed, 1 skipped");
        let v = judge_linux_boot(&captured(&baseline, Ending::Exited(Some(0))), 2, false);
        assert_eq!(failures(&v), []);
        assert!(!v.iter().any(|v| v.name == NAME));
    }

    #[test]
    fn linux_summary_parsing() {
        assert_eq!(parse_linux_summary("linux: 6 passed, 0 failed"), Some((6, 0, 0)));
        assert_eq!(parse_linux_summary("linux: 6 passed, 1 failed, 2 skipped\r"), Some((6, 1, 2)));
        assert_eq!(parse_linux_summary("linux: 6 passed"), None);
        assert_eq!(parse_linux_summary("linux: x passed, 0 failed"), None);
        assert_eq!(parse_linux_summary("linux: 1 passed, 0 failed, 0 skipped, 3 more"), None);
        assert_eq!(parse_linux_summary("6 passed, 0 failed"), None);
    }
}
