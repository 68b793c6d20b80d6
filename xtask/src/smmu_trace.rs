//! QEMU's own trace of its SMMUv3 as an outside witness of G3.
//!
//! warden's counters say that it flushed a retiring ASID before its reuse; this module checks
//! it from what the *real* (QEMU's) SMMU saw, independent of warden's code. QEMU runs with the
//! trace events of [`TRACE_EVENTS`] written to a log (`-D`), and [`check`] replays it:
//!
//! - `smmuv3_config_cache_hit/miss sid=S` starts a translation for stream S; after a miss,
//!   `smmuv3_decode_cd_tt TT[i] ... ttb:T` gives the translation tables of S's new context
//!   (none for a stage-2-only STE).
//! - `smmu_iotlb_lookup_hit/miss asid=A vmid=V` is a use of ASID A by S's current context.
//! - `smmuv3_cmdq_tlbi_nh_asid asid=A`, `smmuv3_cmdq_tlbi_nh vmid=V` (TLBI_NH_ALL),
//!   `smmuv3_cmdq_tlbi_s12_vmid vmid=V` and `smmuv3_cmdq_tlbi_nsnh` invalidate ASID A's entries;
//!   `smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC` completes what came before it.
//!
//! The rule: when (VMID, ASID) is used by a context whose tables differ from the context that
//! used it last (the ASID was retired and reused by a new CD), an invalidation covering it
//! followed by a CMD_SYNC must lie between the old context's last use and the new one's first.
//! Otherwise the new context may hit entries the old one left in the IOTLB: the FastRPC bug.

use crate::scenario::Verdict;
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// The QEMU trace events the witness needs (patterns for `-trace enable=`).
pub const TRACE_EVENTS: [&str; 6] = [
    "smmuv3_cmdq_*",
    "smmuv3_config_cache_hit",
    "smmuv3_config_cache_miss",
    "smmuv3_decode_cd_tt",
    "smmu_iotlb_lookup_hit",
    "smmu_iotlb_lookup_miss",
];

/// QEMU arguments that write [`TRACE_EVENTS`] to `log` (QEMU's `log` trace backend, which
/// Debian's build uses; `-D` also takes `-d` output, which warden's runs do not use).
pub fn qemu_args(log: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for event in TRACE_EVENTS {
        args.push("-trace".to_owned());
        args.push(format!("enable={event}"));
    }
    args.push("-D".to_owned());
    args.push(log.display().to_string());
    args
}

/// One trace line the witness understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A translation for stream `sid` starts; `miss`: its configuration is decoded afresh.
    Config { sid: u32, miss: bool },
    /// Translation table `index` (0 or 1) of the configuration being decoded.
    TableBase { index: usize, ttb: u64 },
    /// An IOTLB lookup for (`vmid`, `asid`) by the current stream's context.
    Lookup { asid: i64, vmid: i64 },
    /// TLBI_NH_ASID.
    InvalidateAsid { asid: i64 },
    /// TLBI_NH_ALL or TLBI_S12_VMALL: every stage-1 entry of `vmid`.
    InvalidateVmid { vmid: i64 },
    /// TLBI_NSNH_ALL: everything.
    InvalidateAll,
    /// CMD_SYNC.
    Sync,
}

/// `key=value` (value decimal, or hex with `0x`) from a trace line's text.
fn field(text: &str, key: &str) -> Option<i64> {
    let at = text.match_indices(key).find(|(i, _)| {
        *i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric() && text.as_bytes()[i - 1] != b'_'
    })?;
    let value = &text[at.0 + key.len()..];
    let value = value.split([' ', ',', ')']).next()?;
    match value.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// Parses one line of QEMU's `log` trace backend (`name args`, optionally after a
/// `pid@secs.usecs:` stamp); `None` for lines the witness does not use.
fn parse(line: &str) -> Option<Event> {
    let line = line.trim();
    let line = match line.split_once(':') {
        Some((stamp, rest))
            if stamp.contains('@')
                && stamp.chars().all(|c| c.is_ascii_digit() || c == '@' || c == '.') =>
        {
            rest
        }
        _ => line,
    };
    let (name, args) = line.split_once(' ').unwrap_or((line, ""));
    match name {
        "smmuv3_config_cache_hit" | "smmuv3_config_cache_miss" => Some(Event::Config {
            sid: u32::try_from(field(args, "sid=")?).ok()?,
            miss: name.ends_with("miss"),
        }),
        "smmuv3_decode_cd_tt" => {
            // `TT[i]:tsz:N ttb:0x... granule_sz:N had:N`
            let index = args.strip_prefix("TT[")?.split(']').next()?.parse().ok()?;
            let ttb = field(args, "ttb:")?;
            Some(Event::TableBase { index, ttb: u64::try_from(ttb).ok()? })
        }
        "smmu_iotlb_lookup_hit" | "smmu_iotlb_lookup_miss" => {
            Some(Event::Lookup { asid: field(args, "asid=")?, vmid: field(args, "vmid=")? })
        }
        "smmuv3_cmdq_tlbi_nh_asid" => Some(Event::InvalidateAsid { asid: field(args, "asid=")? }),
        "smmuv3_cmdq_tlbi_nh" | "smmuv3_cmdq_tlbi_s12_vmid" => {
            Some(Event::InvalidateVmid { vmid: field(args, "vmid=")? })
        }
        "smmuv3_cmdq_tlbi_nsnh" => Some(Event::InvalidateAll),
        "smmuv3_cmdq_opcode"
            if args.trim().trim_start_matches("<---").trim() == "SMMU_CMD_SYNC" =>
        {
            Some(Event::Sync)
        }
        _ => None,
    }
}

/// A stream's stage-1 context as the real SMMU decoded it: its TTB0/TTB1.
type Tables = [Option<u64>; 2];

/// How far ASID A's entries are gone since its current context last used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Used since the last invalidation: entries may be cached.
    Dirty,
    /// Invalidated, but no CMD_SYNC yet.
    Invalidated,
    /// Invalidated and a CMD_SYNC followed.
    Completed,
}

#[derive(Debug)]
struct AsidUse {
    tables: Tables,
    last_line: usize,
    flush: Flush,
}

/// A reuse of an ASID by a new context without a completed invalidation after the old
/// context's last use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub asid: i64,
    pub vmid: i64,
    pub sid: u32,
    /// Trace line (1-based) of the old context's last use and of the new context's first.
    pub old_line: usize,
    pub new_line: usize,
    /// What was missing: `no TLBI_NH_ASID` or `TLBI without a CMD_SYNC after it`.
    pub missing: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ASID {:#x} (VMID {}) reused by stream {:#x} at trace line {} after its last use at \
             line {}: {}",
            self.asid, self.vmid, self.sid, self.new_line, self.old_line, self.missing
        )
    }
}

/// What the witness found.
#[derive(Debug, Default)]
pub struct Witness {
    pub lines: usize,
    /// IOTLB lookups with an ASID, attributed to a decoded context.
    pub lookups: usize,
    /// ASID reuses by a new context that were properly preceded by invalidation + sync.
    pub clean_reuses: usize,
    /// ASIDs (with their VMID) that were reused by a new context at least once.
    pub reused_asids: Vec<(i64, i64)>,
    pub violations: Vec<Violation>,
    pub tlbi_asid: usize,
    pub syncs: usize,
}

/// Replays a trace (see the module documentation).
pub fn check(lines: impl Iterator<Item = String>) -> Witness {
    let mut w = Witness::default();
    let mut stream: Option<u32> = None;
    let mut decoding: Option<u32> = None;
    let mut contexts: HashMap<u32, Tables> = HashMap::new();
    let mut asids: HashMap<(i64, i64), AsidUse> = HashMap::new();
    for (i, line) in lines.enumerate() {
        let number = i + 1;
        w.lines = number;
        let Some(event) = parse(&line) else { continue };
        match event {
            Event::Config { sid, miss } => {
                stream = Some(sid);
                if miss {
                    contexts.insert(sid, [None, None]);
                    decoding = Some(sid);
                } else {
                    decoding = None;
                }
            }
            Event::TableBase { index, ttb } => {
                if let Some(slot) =
                    decoding.and_then(|sid| contexts.get_mut(&sid)).and_then(|t| t.get_mut(index))
                {
                    *slot = Some(ttb);
                }
            }
            Event::Lookup { asid, vmid } => {
                // ASID -1: a stage-2-only configuration, or (nested) the stage-2 translation
                // of the CD and table fetches, which come between the config miss and the
                // `decode_cd_tt` lines.
                if asid < 0 {
                    continue;
                }
                decoding = None;
                let Some(sid) = stream else { continue };
                let Some(tables) = contexts.get(&sid).copied().filter(|t| t != &[None, None])
                else {
                    continue;
                };
                w.lookups += 1;
                let previous = asids.insert(
                    (vmid, asid),
                    AsidUse { tables, last_line: number, flush: Flush::Dirty },
                );
                if let Some(old) = previous.filter(|old| old.tables != tables) {
                    if !w.reused_asids.contains(&(asid, vmid)) {
                        w.reused_asids.push((asid, vmid));
                    }
                    let missing = match old.flush {
                        Flush::Completed => None,
                        Flush::Invalidated => Some("TLBI without a CMD_SYNC after it"),
                        Flush::Dirty => Some("no TLBI_NH_ASID (or wider) after it"),
                    };
                    match missing {
                        None => w.clean_reuses += 1,
                        Some(missing) => w.violations.push(Violation {
                            asid,
                            vmid,
                            sid,
                            old_line: old.last_line,
                            new_line: number,
                            missing,
                        }),
                    }
                }
            }
            Event::InvalidateAsid { asid: target } => {
                w.tlbi_asid += 1;
                invalidate(&mut asids, |(_, asid)| asid == target);
            }
            Event::InvalidateVmid { vmid: target } => {
                invalidate(&mut asids, |(vmid, _)| vmid == target);
            }
            Event::InvalidateAll => invalidate(&mut asids, |_| true),
            Event::Sync => {
                w.syncs += 1;
                for entry in asids.values_mut() {
                    if entry.flush == Flush::Invalidated {
                        entry.flush = Flush::Completed;
                    }
                }
            }
        }
    }
    w
}

fn invalidate(asids: &mut HashMap<(i64, i64), AsidUse>, covers: impl Fn((i64, i64)) -> bool) {
    for (&key, entry) in asids.iter_mut() {
        if covers(key) && entry.flush == Flush::Dirty {
            entry.flush = Flush::Invalidated;
        }
    }
}

/// [`check`] over a trace file.
pub fn check_file(path: &Path) -> Result<Witness> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut failed = None;
    let lines = BufReader::new(file).lines().map_while(|l| match l {
        Ok(l) => Some(l),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let witness = check(lines);
    match failed {
        Some(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        None => Ok(witness),
    }
}

impl Witness {
    /// One line for verdicts and logs.
    pub fn summary(&self) -> String {
        format!(
            "{} trace lines, {} stage-1 IOTLB lookups, {} ASID(s) reused by a new context, {} \
             clean reuse(s), {} violation(s), {} TLBI_NH_ASID, {} CMD_SYNC",
            self.lines,
            self.lookups,
            self.reused_asids.len(),
            self.clean_reuses,
            self.violations.len(),
            self.tlbi_asid,
            self.syncs
        )
    }
}

/// The ASID a `guest: note <scenario>: ...ASID 0x..` line names (the test guest's stale-ASID
/// scenarios say which ASID they reuse).
fn noted_asid(lines: &[String], scenario: &str) -> Option<i64> {
    let prefix = format!("guest: note {scenario}:");
    let note = lines.iter().find_map(|l| l.trim().strip_prefix(prefix.as_str()))?;
    let hex = note.split("ASID 0x").nth(1)?;
    let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
    i64::from_str_radix(&digits, 16).ok()
}

/// Verdicts on guest-boot's trace: the stale-ASID test with G3 on reuses its ASID cleanly in
/// QEMU's eyes and nothing else is reused unflushed, except the one reuse of the G3-off run,
/// which the witness must catch (so it is shown able to fail).
pub fn judge_guest_boot(witness: Result<Witness>, lines: &[String]) -> Vec<Verdict> {
    judge_guest_g3(
        witness,
        lines,
        "guest-boot",
        "vsmmu_stale_asid_is_flushed",
        "vsmmu_stale_asid_without_g3_reads_stale",
    )
}

/// [`judge_guest_boot`] for any guest run with a G3-on and a G3-off scenario that name their
/// ASIDs in `guest: note NAME: ... ASID 0x..` lines (`guest-snapdragon`: the MMU-500 face).
pub fn judge_guest_g3(
    witness: Result<Witness>,
    lines: &[String],
    scenario: &str,
    on_note: &str,
    off_note: &str,
) -> Vec<Verdict> {
    let clean_name = format!("{scenario}/smmu trace: every ASID reuse flushed first (QEMU's view)");
    let caught_name = format!("{scenario}/smmu trace: the G3-off reuse is caught");
    let (clean_label, caught_label) = (clean_name.as_str(), caught_name.as_str());
    let w = match witness {
        Ok(w) => w,
        Err(e) => {
            return vec![
                Verdict::fail(clean_label, format!("{e:#}")),
                Verdict::fail(caught_label, format!("{e:#}")),
            ];
        }
    };
    let with_g3 = noted_asid(lines, on_note);
    let without_g3 = noted_asid(lines, off_note);
    let unexpected: Vec<&Violation> =
        w.violations.iter().filter(|v| Some(v.asid) != without_g3).collect();
    let clean = match (with_g3, unexpected.first()) {
        (_, Some(v)) => Err(format!("{v} ({} more; {})", unexpected.len() - 1, w.summary())),
        (None, None) => Err(format!("no `guest: note {on_note}: ... ASID 0x..` line")),
        (Some(asid), None) if !w.reused_asids.iter().any(|(a, _)| *a == asid) => Err(format!(
            "the trace shows no reuse of ASID {asid:#x} by a new context ({})",
            w.summary()
        )),
        _ => Ok(()),
    };
    let caught = match without_g3 {
        None => Err(format!("no `guest: note {off_note}: ... ASID 0x..` line")),
        Some(asid) => {
            let found = w.violations.iter().filter(|v| v.asid == asid).count();
            if found == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{found} violation(s) for ASID {asid:#x}, expected exactly 1 ({})",
                    w.summary()
                ))
            }
        }
    };
    vec![
        Verdict { name: clean_label.into(), outcome: clean },
        Verdict { name: caught_label.into(), outcome: caught },
    ]
}

/// Verdict on a Linux run's trace: Linux frees and reuses ASIDs (iommu-groups cycles domains
/// 200 times), and none is reused by a new context before a completed invalidation.
pub fn judge_linux(witness: Result<Witness>) -> Vec<Verdict> {
    const NAME: &str = "linux/smmu trace: every ASID reuse flushed first (QEMU's view)";
    let outcome = match witness {
        Err(e) => Err(format!("{e:#}")),
        Ok(w) => match w.violations.first() {
            Some(v) => Err(format!("{v} ({} in all; {})", w.violations.len(), w.summary())),
            None if w.reused_asids.is_empty() => {
                Err(format!("the trace shows no ASID reused by a new context ({})", w.summary()))
            }
            None => Ok(()),
        },
    };
    vec![Verdict { name: NAME.into(), outcome }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Witness {
        check(text.lines().map(str::to_owned))
    }

    /// A context of stream 0x8 with tables `ttb` using ASID `asid` once.
    fn context(ttb: u64, asid: i64, hit: bool) -> String {
        let kind = if hit { "HIT" } else { "MISS" };
        let lookup = if hit { "hit" } else { "miss" };
        format!(
            "smmuv3_config_cache_miss Config cache MISS for sid=0x8 (hits=0, misses=1, hit rate=0)\n\
             smmu_iotlb_lookup_hit IOTLB cache HIT asid=-1 vmid=1 addr=0x40c89000 hit=1 miss=0 hit rate=100\n\
             smmuv3_decode_cd_tt TT[0]:tsz:16 ttb:{ttb:#x} granule_sz:12 had:0\n\
             smmu_iotlb_lookup_{lookup} IOTLB cache {kind} asid={asid} vmid=1 addr=0x1000 hit=0 miss=1 hit rate=0\n"
        )
    }

    const TLBI_42: &str = "smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_ASID\n\
                           smmuv3_cmdq_tlbi_nh_asid asid=42\n";
    const SYNC: &str = "smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n";

    #[test]
    fn parses_real_qemu_lines() {
        assert_eq!(
            parse(
                "smmuv3_config_cache_hit Config cache HIT for sid=0x10 (hits=3, misses=1, hit rate=75)"
            ),
            Some(Event::Config { sid: 0x10, miss: false })
        );
        assert_eq!(
            parse("smmuv3_decode_cd_tt TT[1]:tsz:25 ttb:0x41234000 granule_sz:12 had:0"),
            Some(Event::TableBase { index: 1, ttb: 0x4123_4000 })
        );
        assert_eq!(
            parse(
                "12@1700000000.000001:smmu_iotlb_lookup_hit IOTLB cache HIT asid=-1 vmid=1 addr=0x0 hit=1 miss=0 hit rate=100"
            ),
            Some(Event::Lookup { asid: -1, vmid: 1 })
        );
        assert_eq!(
            parse("smmuv3_cmdq_tlbi_nh_asid asid=7"),
            Some(Event::InvalidateAsid { asid: 7 })
        );
        assert_eq!(parse("smmuv3_cmdq_tlbi_nh vmid=1"), Some(Event::InvalidateVmid { vmid: 1 }));
        assert_eq!(
            parse("smmuv3_cmdq_tlbi_s12_vmid vmid=3"),
            Some(Event::InvalidateVmid { vmid: 3 })
        );
        assert_eq!(parse("smmuv3_cmdq_tlbi_nsnh "), Some(Event::InvalidateAll));
        assert_eq!(parse("smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC"), Some(Event::Sync));
        assert_eq!(parse("smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_CD"), None);
        assert_eq!(parse("smmuv3_cmdq_consume prod=1 cons=0 prod.wrap=0 cons.wrap=0"), None);
        assert_eq!(parse("garbage"), None);
        // `hit=` must not be read as the `asid=` of another field.
        assert_eq!(field("xasid=5 asid=6", "asid="), Some(6));
    }

    #[test]
    fn reuse_after_tlbi_and_sync_is_clean() {
        let trace =
            [context(0x1000, 42, false), TLBI_42.into(), SYNC.into(), context(0x2000, 42, false)]
                .concat();
        let w = run(&trace);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert_eq!((w.clean_reuses, w.reused_asids.as_slice()), (1, &[(42, 1)][..]));
        assert_eq!((w.tlbi_asid, w.syncs, w.lookups), (1, 1, 2));
    }

    #[test]
    fn reuse_without_tlbi_is_a_violation() {
        // The stale-ASID test with G3 off: the new context even hits the old entry.
        let trace = [context(0x1000, 42, false), SYNC.into(), context(0x2000, 42, true)].concat();
        let w = run(&trace);
        assert_eq!(w.violations.len(), 1);
        let v = &w.violations[0];
        assert_eq!((v.asid, v.vmid, v.sid, v.old_line, v.new_line), (42, 1, 8, 4, 9));
        assert!(v.missing.starts_with("no TLBI"));
        assert_eq!(w.clean_reuses, 0);
    }

    #[test]
    fn tlbi_without_a_later_sync_is_a_violation() {
        let trace =
            [context(0x1000, 42, false), SYNC.into(), TLBI_42.into(), context(0x2000, 42, false)]
                .concat();
        let w = run(&trace);
        assert_eq!(w.violations.len(), 1);
        assert_eq!(w.violations[0].missing, "TLBI without a CMD_SYNC after it");
    }

    #[test]
    fn a_flush_before_the_last_use_does_not_count() {
        // Flushed, then the old context used the ASID again (refilling the IOTLB), then reuse.
        let old_again = "smmuv3_config_cache_hit Config cache HIT for sid=0x8 (hits=1, misses=1, hit rate=50)\n\
                         smmu_iotlb_lookup_miss IOTLB cache MISS asid=42 vmid=1 addr=0x2000 hit=0 miss=2 hit rate=0\n";
        let trace = [
            context(0x1000, 42, false),
            TLBI_42.into(),
            SYNC.into(),
            old_again.into(),
            context(0x2000, 42, false),
        ]
        .concat();
        assert_eq!(run(&trace).violations.len(), 1);
    }

    #[test]
    fn wider_invalidations_count_and_other_asids_do_not() {
        for wide in [
            "smmuv3_cmdq_tlbi_nh vmid=1\n",
            "smmuv3_cmdq_tlbi_nsnh \n",
            "smmuv3_cmdq_tlbi_s12_vmid vmid=1\n",
        ] {
            let trace =
                [context(0x1000, 42, false), wide.into(), SYNC.into(), context(0x2000, 42, false)]
                    .concat();
            assert!(run(&trace).violations.is_empty(), "{wide}");
        }
        for narrow in ["smmuv3_cmdq_tlbi_nh_asid asid=43\n", "smmuv3_cmdq_tlbi_nh vmid=2\n"] {
            let trace = [
                context(0x1000, 42, false),
                narrow.into(),
                SYNC.into(),
                context(0x2000, 42, false),
            ]
            .concat();
            assert_eq!(run(&trace).violations.len(), 1, "{narrow}");
        }
    }

    #[test]
    fn same_tables_again_is_not_a_reuse_and_stage2_only_is_ignored() {
        // A CFGI that re-decodes the same context, and a stage-2-only stream (no CD, ASID -1).
        let s2_only = "smmuv3_config_cache_miss Config cache MISS for sid=0x10 (hits=0, misses=1, hit rate=0)\n\
                       smmu_iotlb_lookup_miss IOTLB cache MISS asid=-1 vmid=1 addr=0x1000 hit=0 miss=1 hit rate=0\n";
        let trace =
            [context(0x1000, 42, false), s2_only.into(), context(0x1000, 42, true)].concat();
        let w = run(&trace);
        assert!(w.violations.is_empty() && w.reused_asids.is_empty(), "{w:?}");
        assert_eq!(w.lookups, 2);
    }

    #[test]
    fn reads_a_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("warden-smmu-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trace.log");
        std::fs::write(&path, [context(0x1000, 5, false), context(0x2000, 5, true)].concat())
            .unwrap();
        let w = check_file(&path).unwrap();
        assert_eq!(w.violations.len(), 1);
        assert!(w.summary().contains("1 violation(s)"), "{}", w.summary());
        assert!(check_file(&dir.join("absent.log")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qemu_args_enable_every_event_and_name_the_log() {
        let args = qemu_args(Path::new("/tmp/t.log"));
        assert_eq!(args.len(), 2 * TRACE_EVENTS.len() + 2);
        assert_eq!(args[..2], ["-trace", "enable=smmuv3_cmdq_*"]);
        assert_eq!(args[args.len() - 2..], ["-D", "/tmp/t.log"]);
    }
}
