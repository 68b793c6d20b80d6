//! The Linux test host's initramfs (busybox, `/init`, the scenario scripts, the virtio kernel
//! modules) and its two virtio-blk disks. Sources: `tests/linux/`. See `docs/linux-host.md`.

use crate::cpio::Archive;
use crate::firmware::repo_root;
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules the scenarios need, in load order. Each module's own dependencies (the `depends=`
/// of its `.modinfo`) are loaded before it, found the same way ([`collect_modules`]). Debian
/// builds some of them as modules (6.12: the virtio-net, virtio-blk and VFIO ones, `.ko.xz`;
/// 6.1 also virtio-pci, `.ko`); one built into the kernel (listed in `modules.builtin`) is
/// skipped. VFIO (`vfio-pci` with the type1 IOMMU backend) is for `dma-after-donate`, whose
/// program drives QEMU's `edu` from user space.
pub const MODULES: [&str; 10] = [
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "vfio",
    "vfio_iommu_type1",
    "vfio-pci",
];

/// Modules a scenario loads itself (`insmod /lib/modules/NAME.ko`), not /init: Qualcomm's
/// rmtfs region driver (`rmtfs-mem`, on the Snapdragon persona). They depend on nothing.
pub const ON_DEMAND_MODULES: [&str; 1] = ["rmtfs_mem"];

/// User-space programs built from this repository that go into the initramfs as `/bin/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// busybox applets the scripts use, linked as `/bin/<applet>`.
pub const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "awk",
    "basename",
    "blockdev",
    "cat",
    "cmp",
    "cut",
    "cttyhack",
    "date",
    "dd",
    "devmem",
    "dmesg",
    "echo",
    "expr",
    "grep",
    "head",
    "hexdump",
    "ifconfig",
    "insmod",
    "ip",
    "ls",
    "mkdir",
    "mount",
    "rmmod",
    "nproc",
    "od",
    "ping",
    "poweroff",
    "printf",
    "rm",
    "sed",
    "seq",
    "setsid",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "sync",
    "tail",
    "test",
    "tr",
    "true",
    "false",
    "umount",
    "uname",
    "wc",
    "[",
];

/// Size of the read-only disk with known content.
pub const RO_DISK_SIZE: usize = 4 << 20;
/// Size of the zeroed scratch disk.
pub const SCRATCH_DISK_SIZE: usize = 4 << 20;
/// virtio-blk serial numbers, by which the scripts find the disks (`/sys/block/vdX/serial`).
pub const RO_DISK_SERIAL: &str = "warden-ro";
pub const SCRATCH_DISK_SERIAL: &str = "warden-scratch";

/// The read-only disk's content: 64-bit little-endian words, word `i` = splitmix64(i).
pub fn disk_pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    let mut index: u64 = 0;
    while out.len() < len {
        let mut z = index.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
        index += 1;
    }
    out.truncate(len);
    out
}

/// The scripts in `tests/linux` that go into the initramfs.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub init: Vec<u8>,
    pub lib: Vec<u8>,
    pub demo: Vec<u8>,
    /// `(file name, contents)` of `scenarios/*.sh`, sorted by name.
    pub scenarios: Vec<(String, Vec<u8>)>,
}

pub fn tests_dir() -> PathBuf {
    repo_root().join("tests/linux")
}

impl Scripts {
    pub fn load(dir: &Path) -> Result<Self> {
        let read =
            |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
        let mut scenarios = Vec::new();
        let scenario_dir = dir.join("scenarios");
        for entry in std::fs::read_dir(&scenario_dir)
            .with_context(|| format!("reading {}", scenario_dir.display()))?
        {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".sh") {
                scenarios.push((name.to_owned(), read(path.clone())?));
            }
        }
        scenarios.sort();
        ensure!(!scenarios.is_empty(), "no scenario scripts in {}", scenario_dir.display());
        Ok(Self {
            init: read(dir.join("init"))?,
            lib: read(dir.join("lib.sh"))?,
            demo: read(dir.join("demo.sh"))?,
            scenarios,
        })
    }
}

/// A kernel module file ready for `insmod` (uncompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Loaded by /init at boot (listed in `/etc/warden/modules`); else a scenario loads it.
    pub at_boot: bool,
}

fn find_file(dir: &Path, wanted: &[String]) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            subdirs.push(path);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| wanted.iter().any(|w| w == n))
        {
            return Some(path);
        }
    }
    subdirs.sort();
    subdirs.iter().find_map(|d| find_file(d, wanted))
}

/// True when `modules.builtin` of the release lists the module.
fn is_builtin(modules_dir: &Path, name: &str) -> bool {
    let suffix = format!("/{name}.ko");
    std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .is_ok_and(|t| t.lines().any(|l| l.trim().ends_with(&suffix)))
}

fn xz_decompress(path: &Path) -> Result<Vec<u8>> {
    let out = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .output()
        .context("running `xz -dc` to decompress a kernel module (install xz-utils)")?;
    ensure!(
        out.status.success(),
        "xz -dc {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// Module names compare with `-` and `_` alike (the kernel treats them as the same).
fn same_module(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

/// The modules a module needs loaded first: the comma-separated `depends=` entry of its
/// `.modinfo` section (NUL-separated `key=value` strings, as `modinfo` reads them).
pub fn module_depends(bytes: &[u8]) -> Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(bytes).context("not an ELF file")?;
    let Some(section) = file.section_by_name(".modinfo") else { bail!("no .modinfo section") };
    let data = section.data().context("reading .modinfo")?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect())
}

/// Reads the module file `name` (`.ko`, or `.ko.xz` decompressed) under `kernel/`, trying the
/// name with `-` and with `_`; `None` when there is no such file.
fn read_module(modules_dir: &Path, name: &str) -> Result<Option<Module>> {
    let spellings = [name.to_owned(), name.replace('-', "_"), name.replace('_', "-")];
    let candidates: Vec<String> = spellings
        .iter()
        .flat_map(|n| [format!("{n}.ko"), format!("{n}.ko.xz"), format!("{n}.ko.zst")])
        .collect();
    let Some(path) = find_file(&modules_dir.join("kernel"), &candidates) else {
        return Ok(None);
    };
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let bytes = if file.ends_with(".ko.xz") {
        xz_decompress(&path)?
    } else if file.ends_with(".ko.zst") {
        bail!("{} is zstd-compressed; only .ko and .ko.xz are supported", path.display())
    } else {
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
    };
    ensure!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF kernel module after decompression",
        path.display()
    );
    let stem = file.split(".ko").next().unwrap_or(name).to_owned();
    Ok(Some(Module { name: stem, bytes, at_boot: true }))
}

/// Adds module `name` to `out` after its dependencies (depth first); `chain` is the path of
/// modules being added, to report a dependency cycle instead of recursing forever.
fn add_module(
    modules_dir: &Path,
    name: &str,
    out: &mut Vec<Module>,
    chain: &mut Vec<String>,
) -> Result<()> {
    if out.iter().any(|m| same_module(&m.name, name)) {
        return Ok(());
    }
    if chain.iter().any(|c| same_module(c, name)) {
        bail!("kernel modules depend on each other in a cycle: {} -> {name}", chain.join(" -> "));
    }
    let Some(module) = read_module(modules_dir, name)? else {
        let builtin = [name.to_owned(), name.replace('-', "_"), name.replace('_', "-")]
            .iter()
            .any(|n| is_builtin(modules_dir, n));
        ensure!(
            builtin,
            "kernel module {name} is neither in {} nor built in (modules.builtin){}",
            modules_dir.display(),
            match chain.last() {
                Some(parent) => format!(" (needed by {parent})"),
                None => String::new(),
            }
        );
        return Ok(());
    };
    let depends = module_depends(&module.bytes)
        .with_context(|| format!("reading the dependencies of kernel module {name}"))?;
    chain.push(name.to_owned());
    for dep in &depends {
        add_module(modules_dir, dep, out, chain)?;
    }
    chain.pop();
    out.push(module);
    Ok(())
}

/// Collects [`MODULES`] and what they depend on from `lib/modules/<release>` of an extracted
/// kernel package, in an order `insmod` can load them (dependencies first), skipping those
/// built into the kernel.
pub fn collect_modules(modules_dir: &Path) -> Result<Vec<Module>> {
    let mut out = Vec::new();
    for name in MODULES {
        add_module(modules_dir, name, &mut out, &mut Vec::new())?;
    }
    for name in ON_DEMAND_MODULES {
        let mut module = read_module(modules_dir, name)?
            .with_context(|| format!("kernel module {name} is not in {}", modules_dir.display()))?;
        module.at_boot = false;
        out.push(module);
    }
    Ok(out)
}

/// Builds the initramfs archive (uncompressed `newc` cpio; Linux accepts it as is).
pub fn build(
    busybox: &[u8],
    modules: &[Module],
    programs: &[Program],
    scripts: &Scripts,
) -> Result<Vec<u8>> {
    ensure!(
        busybox.starts_with(b"\x7fELF"),
        "busybox is not an ELF executable: the busybox-static package looks damaged"
    );
    let mut a = Archive::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "etc", "etc/warden", "lib", "lib/modules"] {
        a.dir(dir)?;
    }
    a.dir("scenarios")?;
    // The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    a.char_device("dev/console", 0o600, 5, 1)?;
    a.file("bin/busybox", 0o755, busybox.to_vec())?;
    for applet in APPLETS {
        a.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for program in programs {
        ensure!(
            !APPLETS.contains(&program.name.as_str()) && program.name != "busybox",
            "program {} would replace a busybox applet",
            program.name
        );
        ensure!(
            program.bytes.starts_with(b"\x7fELF"),
            "program {} is not an ELF file",
            program.name
        );
        a.file(&format!("bin/{}", program.name), 0o755, program.bytes.clone())?;
    }
    a.file("init", 0o755, scripts.init.clone())?;
    a.file("lib/warden.sh", 0o644, scripts.lib.clone())?;
    a.file("demo.sh", 0o755, scripts.demo.clone())?;
    for (name, bytes) in &scripts.scenarios {
        a.file(&format!("scenarios/{name}"), 0o755, bytes.clone())?;
    }
    let mut order = String::new();
    for module in modules {
        a.file(&format!("lib/modules/{}.ko", module.name), 0o644, module.bytes.clone())?;
        if module.at_boot {
            order.push_str(&module.name);
            order.push('\n');
        }
    }
    a.file("etc/warden/modules", 0o644, order.into_bytes())?;
    let bytes = a.to_bytes()?;
    // Read it back: what Linux will unpack is what was meant.
    let back = crate::cpio::parse(&bytes).context("the initramfs does not parse back")?;
    let same = back.len() == a.entries().len()
        && back.iter().zip(a.entries()).all(|(p, e)| p.to_entry().is_ok_and(|p| &p == e));
    ensure!(same, "internal error: the initramfs does not read back as written");
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{Kind, parse};

    #[test]
    fn disk_pattern_is_deterministic_and_not_trivial() {
        let a = disk_pattern(RO_DISK_SIZE);
        assert_eq!(a.len(), RO_DISK_SIZE);
        assert_eq!(a, disk_pattern(RO_DISK_SIZE));
        // splitmix64(0) with this increment: a published reference value.
        assert_eq!(&a[..8], &0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert_eq!(&disk_pattern(13)[..], &a[..13]);
        // No two 512-byte sectors are equal (a misplaced sector read would be caught).
        let mut sectors: Vec<&[u8]> = a.chunks(512).collect();
        sectors.sort();
        sectors.dedup();
        assert_eq!(sectors.len(), RO_DISK_SIZE / 512);
        assert_eq!(
            crate::linux::sha256_hex(&a),
            crate::linux::sha256_hex(&disk_pattern(RO_DISK_SIZE))
        );
    }

    fn scripts() -> Scripts {
        Scripts {
            init: b"#!/bin/sh\n".to_vec(),
            lib: b"# lib\n".to_vec(),
            demo: b"#!/bin/sh\necho demo\n".to_vec(),
            scenarios: vec![("10-a.sh".into(), b"true\n".to_vec())],
        }
    }

    #[test]
    fn initramfs_layout() {
        let modules = vec![
            Module { name: "virtio_blk".into(), bytes: b"\x7fELFmod".to_vec(), at_boot: true },
            Module { name: "rmtfs_mem".into(), bytes: b"\x7fELFrm".to_vec(), at_boot: false },
        ];
        let programs =
            vec![Program { name: "dma-after-donate".into(), bytes: b"\x7fELFp".to_vec() }];
        let bytes = build(b"\x7fELFbusybox", &modules, &programs, &scripts()).unwrap();
        let entries: Vec<_> =
            parse(&bytes).unwrap().iter().map(|p| p.to_entry().unwrap()).collect();
        let find = |p: &str| entries.iter().find(|e| e.path == p).unwrap_or_else(|| panic!("{p}"));
        assert_eq!(find("init").kind, Kind::File(b"#!/bin/sh\n".to_vec()));
        assert_eq!(find("init").permissions, 0o755);
        assert_eq!(find("bin/sh").kind, Kind::Symlink("busybox".into()));
        assert_eq!(find("bin/poweroff").kind, Kind::Symlink("busybox".into()));
        assert_eq!(find("dev/console").kind, Kind::CharDevice { major: 5, minor: 1 });
        assert_eq!(find("scenarios/10-a.sh").kind, Kind::File(b"true\n".to_vec()));
        assert_eq!(find("lib/modules/virtio_blk.ko").kind, Kind::File(b"\x7fELFmod".to_vec()));
        assert_eq!(find("lib/modules/rmtfs_mem.ko").kind, Kind::File(b"\x7fELFrm".to_vec()));
        assert_eq!(
            find("etc/warden/modules").kind,
            Kind::File(b"virtio_blk\n".to_vec()),
            "on-demand modules are not loaded by /init"
        );
        assert_eq!(find("bin/dma-after-donate").kind, Kind::File(b"\x7fELFp".to_vec()));
        assert_eq!(find("bin/dma-after-donate").permissions, 0o755);
        assert!(build(b"#!/bin/sh", &modules, &[], &scripts()).is_err(), "busybox must be ELF");
        // A program may not shadow an applet, and must be an ELF file.
        let shadow = [Program { name: "sh".into(), bytes: b"\x7fELF".to_vec() }];
        assert!(build(b"\x7fELFbusybox", &modules, &shadow, &scripts()).is_err());
        let script = [Program { name: "x".into(), bytes: b"#!/bin/sh".to_vec() }];
        assert!(build(b"\x7fELFbusybox", &modules, &script, &scripts()).is_err());
    }

    #[test]
    fn repository_scripts_load() {
        let s = Scripts::load(&tests_dir()).unwrap();
        assert!(s.init.starts_with(b"#!/bin/sh"));
        assert!(s.scenarios.len() >= 5);
        let names: Vec<&str> = s.scenarios.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    /// Runs `script` with the repository's lib.sh sourced, under the build host's `sh`
    /// (POSIX; lib.sh's arithmetic stays below 2^63 so dash and busybox ash agree).
    fn lib_sh(script: &str) -> String {
        let lib = tests_dir().join("lib.sh");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}'\n{script}", lib.display()))
            .output()
            .expect("sh must be installed");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The bench's idle time sums both sleep fields of every CPU in /proc/timer_list's real
    /// format, where `iowait_sleeptime` (16 characters) runs into the colon: a reader
    /// matching `.iowait_sleeptime` as a word missed every I/O wait, which the bench then
    /// counted as instructions.
    #[test]
    fn idle_ns_counts_idle_and_iowait_sleep() {
        let fixture = "\
cpu: 0
 clock 0:
  .base:               pK-error
  .idle_jiffies   : 4294937296
  .idle_calls     : 12
  .idle_entrytime : 4105000000 nsecs
  .idle_sleeptime : 1500 nsecs
  .iowait_sleeptime: 250000 nsecs
  .last_jiffies   : 4294937297
cpu: 1
  .idle_sleeptime : 7 nsecs
  .iowait_sleeptime: 3 nsecs
";
        let file = std::env::temp_dir().join(format!("xtask-timer-list-{}", std::process::id()));
        std::fs::write(&file, fixture).unwrap();
        let got = lib_sh(&format!("idle_ns '{}'", file.display()));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(got.trim(), "251510");
    }

    /// `module.param=value` words of the command line reach insmod (for `--gic 2`'s
    /// `vfio_iommu_type1.allow_unsafe_interrupts=1`); `cat` stands in for /proc/cmdline.
    #[test]
    fn module_params_come_from_the_command_line() {
        let script = "cat() { echo 'console=ttyAMA0 vfio_iommu_type1.allow_unsafe_interrupts=1 \
                      vfio_pci.ids=1 vfio_iommu_type1.x=y vfio.z=1 warden.smp=2'; }\n\
                      echo \"[$(module_params vfio_iommu_type1 | tr '\\n' ' ')]\"\n\
                      echo \"[$(module_params vfio-pci | tr '\\n' ' ')]\"\n\
                      echo \"[$(module_params virtio_blk)]\"\n";
        assert_eq!(lib_sh(script), "[allow_unsafe_interrupts=1 x=y ]\n[ids=1 ]\n[]\n");
    }

    fn pattern_word(seed: u64, index: u64) -> u64 {
        let hi = ((index * 0x9e37_79b1) >> 7) ^ 0x5752_444e ^ (seed << 24);
        let lo = index * 0x85eb_ca6b + 0x27d4_eb2f + seed;
        (hi & 0xffff_ffff) << 32 | (lo & 0xffff_ffff)
    }

    #[test]
    fn shell_checksum_is_the_peers() {
        use warden_abi::peer::Checksum;
        let fold = |words: &mut dyn Iterator<Item = u64>| {
            words.fold(Checksum::new(), Checksum::add).value()
        };
        let script = "fnv_init; fnv_value\n\
                      fnv_init; fnv_add 0; fnv_value\n\
                      fnv_init; fnv_add 0x1 0x2 0xFFFFFFFFFFFFFFFF 0x8000000000000000; fnv_value\n\
                      for seed in 1 2; do fnv_init; i=0; while [ $i -lt 512 ]; do \
                      fnv_add \"$(pattern_word $seed $i)\"; i=$((i + 1)); done; fnv_value; done\n\
                      zeros_checksum 512\n";
        let got: Vec<String> = lib_sh(script).lines().map(str::to_owned).collect();
        let want: Vec<String> = [
            Checksum::new().value(),
            fold(&mut [0].into_iter()),
            fold(&mut [1, 2, u64::MAX, 1 << 63].into_iter()),
            fold(&mut (0..512).map(|i| pattern_word(1, i))),
            fold(&mut (0..512).map(|i| pattern_word(2, i))),
            fold(&mut std::iter::repeat_n(0, 512)),
        ]
        .iter()
        .map(|v| format!("{v:#018x}"))
        .collect();
        assert_eq!(got, want);
        // The pattern has no repeated or zero word.
        let mut words: Vec<u64> = (0..512).map(|i| pattern_word(1, i)).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), 512);
        assert!(!words.contains(&0));
        let shell_words = lib_sh("pattern_word 1 0; pattern_word 2 511");
        assert_eq!(
            shell_words,
            format!("{:#018x}\n{:#018x}\n", pattern_word(1, 0), pattern_word(2, 511))
        );
    }

    #[test]
    fn shell_hex_helpers() {
        assert_eq!(
            lib_sh(
                "hex64 0xFFFFFFFFFFFFFFF6; hex64_int 0xFFFFFFFFFFFFFFF6; hex64_int 0x105; \
                 hex64_int 0x80000000; hex64_int 0xFFFFFFFF7FFFFFFF; int_hex64 -10; \
                 int_hex64 4096; hex64 7; hex64_eq 0xABCD00000000EF01 0xabcd00000000ef01 && \
                 echo eq; hex64_eq 0x1 0x100000001 || echo ne"
            ),
            "0xfffffffffffffff6\n-10\n261\n0x0000000080000000\n0xffffffff7fffffff\n\
             0xfffffffffffffff6\n0x0000000000001000\n0x0000000000000007\neq\nne\n"
        );
    }

    #[test]
    fn shell_call_ids_match_the_abi() {
        use warden_abi::handoff::{self, FLAG_CLEAR, PeerId, RangeState};
        use warden_abi::{control, peer};
        let names = "WARDEN_RANGE_QUERY WARDEN_DONATE WARDEN_LEND WARDEN_RECLAIM \
                     WARDEN_VIOLATION_COUNT WARDEN_PEER_COMMAND WARDEN_FLAG_CLEAR \
                     WARDEN_PEER_MODEM WARDEN_PEER_DSP WARDEN_STATE_HOST \
                     WARDEN_STATE_DONATED_MODEM WARDEN_STATE_LENT_DSP WARDEN_PEER_FAULT \
                     WARDEN_REG_MAGIC WARDEN_REG_ARG1 WARDEN_REG_CALL WARDEN_REG_RET0 \
                     WARDEN_CONTROL_MAGIC WARDEN_TRAP_STATS WARDEN_SMMU_STATS";
        let got: Vec<i64> =
            lib_sh(&format!("for n in {names}; do eval \"echo \\$(( \\${{n}} ))\"; done"))
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
        let want: Vec<i64> = vec![
            handoff::RANGE_QUERY.into(),
            handoff::DONATE.into(),
            handoff::LEND.into(),
            handoff::RECLAIM.into(),
            handoff::VIOLATION_COUNT.into(),
            peer::PEER_COMMAND.into(),
            FLAG_CLEAR as i64,
            PeerId::MODEM.get().into(),
            PeerId::DSP.get().into(),
            RangeState::Host.encode() as i64,
            RangeState::Donated(PeerId::MODEM).encode() as i64,
            RangeState::Lent(PeerId::DSP).encode() as i64,
            warden_abi::AbiError::PeerFault.code(),
            control::REG_MAGIC as i64,
            control::arg(1) as i64,
            control::REG_CALL as i64,
            control::ret(0) as i64,
            control::MAGIC.into(),
            warden_abi::stats::TRAP_STATS.into(),
            warden_abi::stats::SMMU_STATS.into(),
        ];
        assert_eq!(got, want);
        // Op numbers, through the ABI's encoder.
        let ops =
            lib_sh("echo $WARDEN_OP_CHECKSUM $WARDEN_OP_FILL $WARDEN_OP_RELEASE $WARDEN_OP_TOUCH");
        let encoded = [
            peer::Op::Checksum { base: 0, size: 0 },
            peer::Op::Fill { base: 0, size: 0, pattern: 0 },
            peer::Op::Release { base: 0, size: 0, clear: false },
            peer::Op::Touch { addr: 0 },
        ]
        .map(|op| op.encode()[0].to_string())
        .join(" ");
        assert_eq!(ops.trim(), encoded);
    }

    #[test]
    fn soak_steering_helpers() {
        // warden.only= picks scenarios by whole name; empty runs them all.
        let selected = lib_sh(
            "for case in 'iommu-groups iommu-groups' 'iommu iommu-groups' 'disk-read a,disk-read' \
                         'disk-read disk-read-x' 'cpus-at-el1 '; do
                 set -- $case
                 if scenario_selected \"$1\" \"$2\"; then echo yes; else echo no; fi
             done",
        );
        assert_eq!(
            selected.split_whitespace().collect::<Vec<_>>(),
            ["yes", "no", "yes", "no", "yes"]
        );
        // The whole-disk read comes after a step that rotates through the four domain types.
        let steps = |every: u32| {
            lib_sh(&format!("for c in $(seq 1 12); do whole_disk_step $c {every}; done"))
                .split_whitespace()
                .map(|s| s.parse::<i32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(0), [-1; 12]);
        assert_eq!(steps(1), [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(steps(3), [-1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 0]);
    }

    #[test]
    fn handoff_scenarios_exist_for_the_judge() {
        let s = Scripts::load(&tests_dir()).unwrap();
        let body = |name: &str| {
            let file = s.scenarios.iter().find(|(file, _)| {
                file.split_once('-').is_some_and(|(_, rest)| rest == format!("{name}.sh"))
            });
            let (_, body) = file.unwrap_or_else(|| panic!("no tests/linux/scenarios/NN-{name}.sh"));
            String::from_utf8_lossy(body).into_owned()
        };
        for name in crate::scenario::REQUIRED_WITH_WARDEN {
            body(name);
        }
        for name in crate::scenario::WARDEN_ONLY {
            assert!(
                body(name).contains("without_warden && skip"),
                "{name} must skip without warden"
            );
        }
        assert!(APPLETS.contains(&"devmem"));
    }

    /// A relocatable AArch64 ELF with a `.modinfo` section holding `modinfo` (as a kernel
    /// module has).
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(section, modinfo, 1);
        obj.write().unwrap()
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        // Compressed with the same tool the build uses to decompress.
        let mut child = Command::new("xz")
            .args(["-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("xz must be installed (xz-utils)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn module_dependencies_are_read_from_modinfo() {
        let m = fake_module(b"license=GPL v2\0depends=vfio-pci-core,vfio\0intree=Y\0");
        assert_eq!(module_depends(&m).unwrap(), ["vfio-pci-core", "vfio"]);
        assert!(module_depends(&fake_module(b"depends=\0")).unwrap().is_empty());
        assert!(module_depends(&fake_module(b"license=GPL\0")).unwrap().is_empty());
        assert!(module_depends(b"\x7fELFjunk").is_err());
        assert!(same_module("vfio-pci", "vfio_pci"));
        assert!(!same_module("vfio-pci", "vfio_pc"));
    }

    #[test]
    fn modules_found_decompressed_or_builtin_with_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("xtask-mods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let put = |path: &str, bytes: Vec<u8>| {
            let path = dir.join("kernel").join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let none = || fake_module(b"depends=\0");
        put("drivers/block/virtio_blk.ko", none());
        put("net/core/failover.ko", none());
        put("drivers/net/virtio_net.ko.xz", xz(&fake_module(b"depends=net_failover\0")));
        put("drivers/vfio/vfio.ko.xz", xz(&none()));
        put("drivers/vfio/vfio_iommu_type1.ko.xz", xz(&fake_module(b"depends=vfio\0")));
        put("drivers/vfio/pci/vfio-pci-core.ko.xz", xz(&fake_module(b"depends=vfio\0")));
        put("drivers/vfio/pci/vfio-pci.ko.xz", xz(&fake_module(b"depends=vfio-pci-core,vfio\0")));
        put("drivers/soc/qcom/rmtfs_mem.ko.xz", xz(&none()));
        let builtin_pci = "kernel/drivers/virtio/virtio_pci_legacy_dev.ko\n\
                           kernel/drivers/virtio/virtio_pci.ko\n\
                           kernel/drivers/virtio/virtio_pci_modern_dev.ko\n";
        let err = format!("{:#}", collect_modules(&dir).unwrap_err());
        assert!(err.contains("virtio_pci_legacy_dev is neither"), "{err}");
        std::fs::write(dir.join("modules.builtin"), builtin_pci).unwrap();
        let err = format!("{:#}", collect_modules(&dir).unwrap_err());
        assert!(err.contains("net_failover is neither"), "{err}");
        std::fs::write(
            dir.join("modules.builtin"),
            format!("{builtin_pci}kernel/drivers/net/net_failover.ko\n"),
        )
        .unwrap();
        let mods = collect_modules(&dir).unwrap();
        let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "failover",
                "virtio_net",
                "virtio_blk",
                "vfio",
                "vfio_iommu_type1",
                "vfio-pci-core",
                "vfio-pci",
                "rmtfs_mem"
            ]
        );
        let at_boot: Vec<bool> = mods.iter().map(|m| m.at_boot).collect();
        assert_eq!(at_boot, [true, true, true, true, true, true, true, false]);
        assert_eq!(module_depends(&mods[1].bytes).unwrap(), ["net_failover"]);
        // A dependency that is nowhere says who needed it; a cycle is reported, not followed.
        put("drivers/vfio/vfio.ko.xz", xz(&fake_module(b"depends=irqbypass\0")));
        let err = format!("{:#}", collect_modules(&dir).unwrap_err());
        assert!(err.contains("irqbypass is neither") && err.contains("(needed by vfio)"), "{err}");
        put("drivers/vfio/vfio.ko.xz", xz(&fake_module(b"depends=vfio-pci\0")));
        let err = format!("{:#}", collect_modules(&dir).unwrap_err());
        assert!(err.contains("cycle: vfio -> vfio-pci -> vfio-pci-core -> vfio"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
