//! Running QEMU: the command line, the DT a warden run boots with, and a captured run with a
//! timeout that kills the whole process group.

use anyhow::{Context, Result, bail, ensure};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// QEMU virt's interrupt controller (`-machine virt,gic-version=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Gic {
    /// GICv2 (`arm,cortex-a15-gic`, with GICv2m), as on DB410c: at most 8 CPUs.
    #[value(name = "2")]
    V2,
    /// GICv3 with an ITS.
    #[default]
    #[value(name = "3")]
    V3,
}

impl Gic {
    /// Most CPUs QEMU's virt board takes with this GIC.
    pub fn max_cpus(self) -> u32 {
        match self {
            Gic::V2 => 8,
            Gic::V3 => 512,
        }
    }

    fn version(self) -> u32 {
        match self {
            Gic::V2 => 2,
            Gic::V3 => 3,
        }
    }
}

/// The `-machine` option: with EL2 for warden, or without (Linux boots at EL1 directly and
/// drives the SMMU itself: the "no hypervisor" baseline, `cargo xtask run --no-warden`).
pub fn machine_option(virtualization: bool, gic: Gic) -> String {
    let el2 = if virtualization { "virtualization=on," } else { "" };
    format!("virt,{el2}gic-version={},iommu=smmuv3", gic.version())
}

/// [`machine_option`] with EL3 (`secure=on`): QEMU runs the `-bios` image at EL3 on every CPU
/// and offers no PSCI of its own.
pub fn secure_machine_option(gic: Gic) -> String {
    format!("virt,secure=on,virtualization=on,gic-version={},iommu=smmuv3", gic.version())
}
pub const CPU: &str = "max,pauth-impdef=on";
/// CPUs a warden run has beyond the host's: warden removes the last CPU of `/cpus` from the
/// host's DT and runs the simulated peer on it.
pub const PEER_CPUS: u32 = 1;
/// No option ROM for any virtio NIC (the board's default NIC included): Debian ships the ROMs
/// in `ipxe-qemu`, which `qemu-system-arm --no-install-recommends` leaves out, and without the
/// file QEMU refuses to start (`failed to find romfile "efi-virtio.rom"`). Nothing here boots
/// from the network, so the ROM is never needed.
pub const NO_NIC_ROM: [&str; 2] = ["-global", "virtio-net-pci.romfile="];

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Machine {
    pub smp: u32,
    pub memory: String,
    /// Extra `-machine` options (e.g. `dumpdtb=FILE`).
    pub machine_extra: Option<String>,
    pub kernel: Option<PathBuf>,
    /// `-initrd` (only without warden: with warden the initrd is packed into the image).
    pub initrd: Option<PathBuf>,
    /// `-append` (only without warden, like `initrd`).
    pub append: Option<String>,
    pub dtb: Option<PathBuf>,
    /// False: no EL2 (`virtualization=off`), for booting a kernel without warden.
    pub virtualization: bool,
    pub gic: Gic,
    /// EL3 firmware (`-bios`, with `secure=on`): tz-sim.
    pub bios: Option<PathBuf>,
    /// Device arguments (`-drive`, `-device`, `-netdev`), before `extra`.
    pub devices: Vec<String>,
    pub extra: Vec<String>,
}

impl Machine {
    pub fn new(kernel: Option<PathBuf>) -> Self {
        Self {
            smp: 2,
            memory: "1G".into(),
            machine_extra: None,
            kernel,
            initrd: None,
            append: None,
            dtb: None,
            virtualization: true,
            gic: Gic::V3,
            bios: None,
            devices: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// warden packed with a host in `image`: `host_cpus` CPUs for the host plus [`PEER_CPUS`].
    /// Once its devices are set, [`attach_warden_dt`] gives it the DT warden boots with.
    pub fn with_warden(image: PathBuf, host_cpus: u32) -> Self {
        let mut m = Self::new(Some(image));
        m.smp = host_cpus + PEER_CPUS;
        m
    }

    /// The same machine (`-machine`, `-cpu`, `-smp`, `-m`, devices) told to write the DT it
    /// generates to `out` and exit instead of booting: no kernel, DT or extra arguments.
    pub fn dumping_dtb_to(&self, out: &Path) -> Self {
        let dump = format!("dumpdtb={}", out.display());
        Self {
            machine_extra: Some(match &self.machine_extra {
                Some(extra) => format!("{extra},{dump}"),
                None => dump,
            }),
            kernel: None,
            initrd: None,
            append: None,
            dtb: None,
            extra: Vec::new(),
            ..self.clone()
        }
    }

    pub fn args(&self) -> Vec<String> {
        let base = match self.bios {
            Some(_) => secure_machine_option(self.gic),
            None => machine_option(self.virtualization, self.gic),
        };
        let machine = match &self.machine_extra {
            Some(extra) => format!("{base},{extra}"),
            None => base,
        };
        let mut args: Vec<String> = [
            "-machine",
            &machine,
            "-cpu",
            CPU,
            "-smp",
            &self.smp.to_string(),
            "-m",
            &self.memory,
            "-nographic",
            "-no-reboot",
            NO_NIC_ROM[0],
            NO_NIC_ROM[1],
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(bios) = &self.bios {
            args.extend(["-bios".into(), bios.display().to_string()]);
        }
        if let Some(kernel) = &self.kernel {
            args.extend(["-kernel".into(), kernel.display().to_string()]);
        }
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        if let Some(append) = &self.append {
            args.extend(["-append".into(), append.clone()]);
        }
        if let Some(dtb) = &self.dtb {
            args.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        args.extend(self.devices.iter().cloned());
        args.extend(self.extra.iter().cloned());
        args
    }

    pub fn command(&self, qemu: &Path) -> Command {
        let mut cmd = Command::new(qemu);
        cmd.args(self.args());
        cmd
    }
}

/// The DT warden boots with: QEMU's own DT `dumped` (for a machine with `cpus` CPUs) plus the
/// board's carveouts (QEMU generates no `/reserved-memory`), placed inside the RAM that DT
/// names (`carveouts::for_ram`: `--memory` moves them). Checked with warden's own parser: the
/// carveouts must come back in order and all `cpus` CPUs must be there.
pub fn warden_dtb(dumped: &[u8], cpus: u32) -> Result<Vec<u8>> {
    use warden::boards::carveouts;
    let qemus = warden::dt::parse(dumped)
        .map_err(|e| anyhow::anyhow!("warden cannot parse QEMU's DT: {e}"))?;
    let specs = carveouts::for_ram(&qemus.memory)
        .map_err(|e| anyhow::anyhow!("placing the board carveouts: {e}"))?;
    let edit = carveouts::add_to(warden::dt::DtEdit::new(), &specs);
    let dtb = warden::dt::apply(dumped, &edit)
        .map_err(|e| anyhow::anyhow!("adding the board carveouts to QEMU's DT: {e}"))?;
    let info = warden::dt::parse(&dtb)
        .map_err(|e| anyhow::anyhow!("warden cannot parse the DT with carveouts: {e}"))?;
    let found: Vec<_> = info.carveouts.iter().map(|c| c.range).collect();
    let wanted: Vec<_> = specs.iter().map(|c| c.range).collect();
    ensure!(found == wanted, "the DT has carveouts {found:x?}, expected {wanted:x?}");
    ensure!(
        info.cpus.len() == cpus as usize,
        "QEMU's DT has {} CPUs, the machine {cpus}",
        info.cpus.len()
    );
    Ok(dtb)
}

/// Makes `machine` (a warden run, devices set) boot with [`warden_dtb`]: asks QEMU for the DT of
/// exactly that machine, writes `target/warden/<name>.dtb` and sets `machine.dtb`. `name` says
/// which configuration (one file per scenario or `run` host).
pub fn attach_warden_dt(qemu: &Path, machine: &mut Machine, name: &str) -> Result<PathBuf> {
    let dir = crate::firmware::output_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dumped_path = dir.join(format!("{name}.qemu.dtb"));
    let _ = std::fs::remove_file(&dumped_path);
    let mut dump = machine.dumping_dtb_to(&dumped_path).command(qemu);
    let out = dump.stdin(Stdio::null()).output().context("starting QEMU to dump its DT")?;
    if !out.status.success() {
        bail!(
            "QEMU could not dump its DT ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dumped = std::fs::read(&dumped_path)
        .with_context(|| format!("reading QEMU's DT {}", dumped_path.display()))?;
    let dtb =
        warden_dtb(&dumped, machine.smp).with_context(|| format!("building the DT for {name}"))?;
    let path = dir.join(format!("{name}.dtb"));
    std::fs::write(&path, dtb).with_context(|| format!("writing {}", path.display()))?;
    machine.dtb = Some(path.clone());
    Ok(path)
}

/// `arg` quoted for a POSIX shell when it needs it (for printing command lines to copy).
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,./:+@%".contains(c));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

/// Runs `cmd` with its stdout copied line by line to ours (stdin and stderr inherited); returns
/// its exit status and whether a line equal to `marker` (trimmed) went by.
pub fn run_watching(mut cmd: Command, marker: &str) -> Result<(std::process::ExitStatus, bool)> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("starting QEMU")?;
    let mut reader = BufReader::new(child.stdout.take().context("QEMU stdout")?);
    let mut out = std::io::stdout();
    let mut seen = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = out.write_all(&buf);
                let _ = out.flush();
                seen |= String::from_utf8_lossy(&buf).trim() == marker;
            }
        }
    }
    Ok((child.wait().context("waiting for QEMU")?, seen))
}

/// How a captured run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself (exit code; None if a signal ended it).
    Exited(Option<i32>),
    /// Nothing decisive happened before the timeout; QEMU was killed.
    TimedOut(Duration),
    /// The watcher saw what it waited for and QEMU was still running after the grace period;
    /// QEMU was killed.
    StillRunningAfterMatch,
}

/// Console output and how the run ended.
#[derive(Debug, Clone)]
pub struct Captured {
    pub lines: Vec<String>,
    pub ending: Ending,
    pub elapsed: Duration,
}

/// Kills the child's whole process group (QEMU was started as its leader).
fn kill_group(child: &mut Child) {
    let pgid = child.id();
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !killed {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn forward_lines(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Runs `cmd` with stdin closed, capturing stdout and stderr line by line into `log` (and
/// memory). Stops at `timeout`; if `watch` returns true for a line, waits `grace` more to see
/// whether QEMU exits on its own, then kills it.
pub fn run_captured(
    mut cmd: Command,
    timeout: Duration,
    log: &Path,
    watch: &dyn Fn(&str) -> bool,
    grace: Duration,
) -> Result<Captured> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    writeln!(log_file, "$ {program} {}", args.join(" "))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let (tx, rx) = mpsc::channel();
    forward_lines(child.stdout.take().context("QEMU stdout")?, tx.clone());
    forward_lines(child.stderr.take().context("QEMU stderr")?, tx);

    let mut lines = Vec::new();
    let mut deadline = start + timeout;
    let mut matched = false;
    let ending = loop {
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            break if matched { Ending::StillRunningAfterMatch } else { Ending::TimedOut(timeout) };
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log_file, "{line}")?;
                if !matched && watch(&line) {
                    matched = true;
                    deadline = deadline.min(Instant::now() + grace);
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed: QEMU has exited (or closed its output; wait tells).
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match wait_timeout(&mut child, remaining)? {
                    Some(code) => break Ending::Exited(code),
                    None => continue,
                }
            }
        }
    };
    writeln!(log_file, "# ended: {ending:?} after {:.1} s", start.elapsed().as_secs_f64())?;
    Ok(Captured { lines, ending, elapsed: start.elapsed() })
}

/// Waits for the child up to `limit`; Some(exit code) if it exited.
fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<Option<i32>>> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status.code()));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Devices the test guest drives: QEMU's `edu`, whose DMA engine goes through the SMMU. Its
/// default DMA mask is 28 bits and it silently clamps addresses above it, so the mask is
/// widened to reach RAM at 0x4000_0000 and above.
pub fn test_guest_devices() -> Vec<String> {
    // Two: the second gives the vSMMU scenarios a second stream (tests/guest/src/vsmmu_shadow.rs).
    let edu = || ["-device".to_owned(), "edu,dma_mask=0xffffffffff".to_owned()];
    edu().into_iter().chain(edu()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_matches_the_issue() {
        let mut m = Machine::new(Some("/t/img".into()));
        m.extra = vec!["-s".into()];
        assert_eq!(
            m.args().join(" "),
            "-machine virt,virtualization=on,gic-version=3,iommu=smmuv3 -cpu max,pauth-impdef=on \
             -smp 2 -m 1G -nographic -no-reboot -global virtio-net-pci.romfile= -kernel /t/img -s"
        );
        m.machine_extra = Some("dumpdtb=/t/x.dtb".into());
        m.kernel = None;
        m.extra.clear();
        assert!(m.args().join(" ").starts_with(
            "-machine virt,virtualization=on,gic-version=3,iommu=smmuv3,dumpdtb=/t/x.dtb "
        ));
    }

    #[test]
    fn gic_version_is_a_machine_option() {
        let mut m = Machine::new(None);
        m.gic = Gic::V2;
        assert_eq!(m.args()[1], "virt,virtualization=on,gic-version=2,iommu=smmuv3");
        m.virtualization = false;
        assert_eq!(m.args()[1], "virt,gic-version=2,iommu=smmuv3");
        assert_eq!((Gic::V2.max_cpus(), Gic::V3.max_cpus()), (8, 512));
    }

    #[test]
    fn a_bios_run_has_el3() {
        let mut m = Machine::new(None);
        m.bios = Some("/t/tz-sim.bin".into());
        m.gic = Gic::V2;
        let args = m.args().join(" ");
        assert!(
            args.starts_with(
                "-machine virt,secure=on,virtualization=on,gic-version=2,iommu=smmuv3 "
            ),
            "{args}"
        );
        assert!(args.contains(" -bios /t/tz-sim.bin"), "{args}");
    }

    #[test]
    fn a_warden_run_has_the_peer_cpu_and_its_dt() {
        let mut m = Machine::with_warden("/t/img".into(), 2);
        m.devices = test_guest_devices();
        m.dtb = Some("/t/warden.dtb".into());
        assert_eq!(
            m.args().join(" "),
            "-machine virt,virtualization=on,gic-version=3,iommu=smmuv3 -cpu max,pauth-impdef=on \
             -smp 3 -m 1G -nographic -no-reboot -global virtio-net-pci.romfile= -kernel /t/img \
             -dtb /t/warden.dtb -device edu,dma_mask=0xffffffffff \
             -device edu,dma_mask=0xffffffffff"
        );
        // The DT is QEMU's for the same machine and devices, with nothing to boot.
        m.extra = vec!["-s".into()];
        assert_eq!(
            m.dumping_dtb_to(Path::new("/t/q.dtb")).args().join(" "),
            "-machine virt,virtualization=on,gic-version=3,iommu=smmuv3,dumpdtb=/t/q.dtb \
             -cpu max,pauth-impdef=on -smp 3 -m 1G -nographic -no-reboot \
             -global virtio-net-pci.romfile= -device edu,dma_mask=0xffffffffff \
             -device edu,dma_mask=0xffffffffff"
        );
    }

    /// QEMU 10.0.2's DT for 2 CPUs (boards/qemu-virt/qemu-virt.dtb).
    const QEMU_DTB_2_CPUS: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt.dtb");

    #[test]
    fn warden_dtb_adds_the_carveouts() {
        let dtb = warden_dtb(QEMU_DTB_2_CPUS, 2).unwrap();
        let info = warden::dt::parse(&dtb).unwrap();
        let carveouts: Vec<_> = info
            .carveouts
            .iter()
            .map(|c| (c.range.start, c.range.end, c.peer, c.policy, c.clear_on_reclaim))
            .collect();
        use warden::dt::{PeerId, Policy};
        assert_eq!(
            carveouts,
            [
                (0x7c00_0000, 0x7d00_0000, PeerId::MODEM, Policy::Donate, false),
                (0x7d00_0000, 0x7e00_0000, PeerId::DSP, Policy::Lend, true),
            ]
        );
        let err = format!("{:#}", warden_dtb(QEMU_DTB_2_CPUS, 3).unwrap_err());
        assert!(err.contains("2 CPUs, the machine 3"), "{err}");
        assert!(warden_dtb(b"not a DT", 2).is_err());
    }

    /// The real thing: QEMU's DT for a warden run (3 CPUs), with the carveouts inside its RAM
    /// whatever `-m` says (the default 1 GiB, and 512 MiB, which used to leave them outside).
    /// Needs `qemu-system-aarch64` (`cargo xtask setup`), like every QEMU scenario.
    #[test]
    fn warden_run_dt_from_qemu_has_three_cpus_and_the_carveouts() {
        let qemu = crate::toolchain::find_in_path("qemu-system-aarch64")
            .expect("qemu-system-aarch64 in PATH (cargo xtask setup installs it)");
        for (memory, modem) in [("1G", 0x7c00_0000), ("512M", 0x5c00_0000)] {
            let mut m = Machine::with_warden("/nonexistent/img".into(), 2);
            m.devices = test_guest_devices();
            m.memory = memory.into();
            let name = format!("unit-test-{}-{memory}", std::process::id());
            let path = attach_warden_dt(&qemu, &mut m, &name).unwrap();
            assert_eq!(m.dtb.as_deref(), Some(path.as_path()));
            let info = warden::dt::parse(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(info.cpus.len(), 3);
            assert_eq!(info.carveouts.len(), 2, "-m {memory}");
            assert_eq!(info.carveouts[0].range.start, modem, "-m {memory}");
            assert!(info.carveouts.iter().all(|c| info.memory[0].contains_range(&c.range)));
            assert!(info.carveouts[1].clear_on_reclaim);
            std::fs::remove_file(&path).unwrap();
            std::fs::remove_file(path.with_extension("qemu.dtb")).unwrap();
        }
    }

    #[test]
    fn test_guest_gets_an_edu_that_reaches_all_ram() {
        assert_eq!(test_guest_devices(), ["-device", "edu,dma_mask=0xffffffffff"].repeat(2));
    }

    #[test]
    fn command_line_without_el2() {
        let mut m = Machine::new(Some("/t/Image".into()));
        m.virtualization = false;
        m.initrd = Some("/t/initrd".into());
        m.append = Some("console=ttyAMA0".into());
        m.devices = vec!["-device".into(), "edu".into()];
        m.extra = vec!["-s".into()];
        assert_eq!(
            m.args(),
            [
                "-machine",
                "virt,gic-version=3,iommu=smmuv3",
                "-cpu",
                "max,pauth-impdef=on",
                "-smp",
                "2",
                "-m",
                "1G",
                "-nographic",
                "-no-reboot",
                "-global",
                "virtio-net-pci.romfile=",
                "-kernel",
                "/t/Image",
                "-initrd",
                "/t/initrd",
                "-append",
                "console=ttyAMA0",
                "-device",
                "edu",
                "-s",
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-append"), "-append");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    fn log_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xtask-qemu-test-{}-{name}.log", std::process::id()))
    }

    #[test]
    fn captures_exit_status_and_lines() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; printf 'three\\r\\n'; exit 3"]);
        let log = log_path("exit");
        let c =
            run_captured(cmd, Duration::from_secs(20), &log, &|_| false, Duration::ZERO).unwrap();
        assert_eq!(c.ending, Ending::Exited(Some(3)));
        let mut lines = c.lines.clone();
        lines.sort();
        assert_eq!(lines, ["one", "three", "two"]);
        assert!(std::fs::read_to_string(&log).unwrap().contains("three"));
        std::fs::remove_file(log).unwrap();
    }

    #[test]
    fn times_out_and_kills_the_group() {
        let mut cmd = Command::new("sh");
        // A grandchild holding the pipe open must die with the group.
        cmd.args(["-c", "echo started; sleep 30 & sleep 30"]);
        let log = log_path("timeout");
        let start = Instant::now();
        let c = run_captured(cmd, Duration::from_millis(500), &log, &|_| false, Duration::ZERO)
            .unwrap();
        assert_eq!(c.ending, Ending::TimedOut(Duration::from_millis(500)));
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(c.lines, ["started"]);
        std::fs::remove_file(log).unwrap();
    }

    #[test]
    fn stops_after_match_plus_grace() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'DT: bad'; sleep 30"]);
        let log = log_path("match");
        let c = run_captured(
            cmd,
            Duration::from_secs(20),
            &log,
            &|l| l.starts_with("DT:"),
            Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(c.ending, Ending::StillRunningAfterMatch);
        assert!(c.elapsed < Duration::from_secs(10));
        std::fs::remove_file(log).unwrap();
    }
}
