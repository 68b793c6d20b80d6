//! `cargo xtask run --chain`: Linux booted as on a board where warden is a boot stage —
//! tz-sim (EL3, `-bios`) → the hyp image at `HYP_BASE` (EL2) → Debian's U-Boot at
//! `NEXT_STAGE` (EL1) → Linux from a disk U-Boot reads (`extlinux/extlinux.conf`). See
//! docs/chain.md.
//!
//! With `--no-warden` the chain has no hyp stage: U-Boot itself is loaded at `HYP_BASE` and
//! tz-sim enters it at EL2 (it is position independent), so Linux runs at EL2 and nothing
//! mediates it. That run proves tz-sim, U-Boot, the disk and the DT hand-over without warden;
//! it is labelled as such on the console and is never counted as a warden run.
//!
//! U-Boot's addresses, which the machine's RAM must keep away from warden (measured with
//! `bdinfo` on `u-boot-qemu` 2023.01+dfsg-2+deb12u3 under tz-sim):
//! - it relocates itself to the top of the (first and only) RAM bank: code at
//!   `top - 0x10_9000`, its control DT, malloc area (16 MiB) and stack below that, and it
//!   reserves from `top - 0x235_3000` (35.3 MiB, the stack's 16 MiB reservation included) to the
//!   top from everything it loads ([`UBOOT_TOP_RESERVATION`]);
//! - the kernel goes to `kernel_addr_r` (0x4040_0000), the initramfs to `ramdisk_addr_r`
//!   (0x4400_0000); then, since `initrd_high` and `fdt_high` are 0xffffffff (a 4 GiB limit on
//!   arm64, not "leave it in place"), it copies the initramfs and the DT (the one at `fdt_addr`,
//!   0x4000_0000, where QEMU put `-dtb`) to the highest free memory below its reservation and
//!   under 4 GiB, avoiding the DT's `/reserved-memory` regions, and boots Linux with those.
//!
//! Hence [`MEMORY`]: 2 GiB. With 1 GiB the top of RAM is 0x8000_0000 and U-Boot would relocate
//! into warden's region at `HYP_BASE` (0x7e00_0000) and the carveouts below it, which warden
//! has unmapped from the host's stage 2 (a stage-2 abort in U-Boot before it prints a line).
//! With 2 GiB RAM ends at 0xc000_0000: U-Boot lives in its top 35.3 MiB, above the board's
//! carveouts (placed 32 MiB below the top: U-Boot's reservation reaches 3.3 MiB into the
//! upper one, but what U-Boot writes starts 19.3 MiB below the top, at its stack) and a
//! gigabyte above warden's region.

use crate::bootdisk;
use crate::firmware;
use crate::linux_host::{self, HostOptions};
use crate::qemu::{Gic, Machine};
use crate::uboot;
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tz_sim::layout::{HYP_BASE, NEXT_STAGE};

/// RAM of the chain's machine (see the module documentation for why not 1 GiB).
pub const MEMORY: &str = "2G";
/// Bytes at the top of RAM U-Boot keeps for itself (its relocated code, control DT, malloc
/// area and stack reservation), measured with `bdinfo`: 0x235_3000 below a 2 GiB machine's top.
pub const UBOOT_TOP_RESERVATION: u64 = 0x235_3000;
/// The end of the chain's RAM: virt's RAM starts at 0x4000_0000.
pub const RAM_END: u64 = tz_sim::layout::RAM_BASE + (2 << 30);
/// The largest hyp region the chain leaves clear of U-Boot (warden's region is
/// `[HYP_BASE, HYP_BASE + size)`).
pub const MAX_HYP_REGION: u64 = RAM_END - UBOOT_TOP_RESERVATION - HYP_BASE;

// U-Boot's relocation cannot reach warden's region, and what it loads for Linux lies below
// where U-Boot is loaded.
const _: () = assert!(MAX_HYP_REGION >= 32 << 20);
const _: () = assert!(uboot::RAMDISK_ADDR_R < NEXT_STAGE && uboot::KERNEL_ADDR_R < NEXT_STAGE);

/// The chain's machine: `secure=on` (tz-sim at EL3 as `-bios`), [`MEMORY`], `cpus` CPUs.
pub fn machine(gic: Gic, cpus: u32, tz_sim: &Path) -> Machine {
    let mut m = Machine::new(None);
    m.smp = cpus;
    m.memory = MEMORY.into();
    m.gic = gic;
    m.bios = Some(tz_sim.to_owned());
    m
}

/// `-device loader` arguments putting `file` at `addr` (raw bytes; QEMU starts no CPU there).
pub fn loader(file: &Path, addr: u64) -> [String; 2] {
    ["-device".into(), format!("loader,file={},addr={addr:#x}", file.display())]
}

/// The boot disk on an AHCI controller (U-Boot's `scsi0`, which its distro boot tries before
/// `virtio0`). Not virtio: U-Boot 2023.01 does not negotiate VIRTIO_F_ACCESS_PLATFORM, so it
/// cannot drive a virtio device with `iommu_platform=on` ("unknown device"), and one without it
/// would do its DMA around the SMMU, where the host could aim it at warden's memory. AHCI's DMA
/// always goes through the SMMU. `snapshot=on`: QEMU's `ide-hd` takes no read-only drive, so
/// writes go to a temporary overlay and the image stays as xtask wrote it.
pub fn boot_disk_devices(disk: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id=bootdisk,format=raw,snapshot=on,file={}", disk.display()),
        "-device".into(),
        "ich9-ahci,id=ahci".into(),
        "-device".into(),
        "ide-hd,drive=bootdisk,bus=ahci.0".into(),
    ]
}

/// What sits at `HYP_BASE`.
#[derive(Debug, Clone)]
pub enum HypStage {
    /// No hyp stage: U-Boot at `HYP_BASE`, entered at EL2 (the `--no-warden` chain).
    None,
}

/// The DT of the `--no-warden` chain: QEMU's own for `machine` (dumped with its `-bios`, so
/// the devices are those the run has: with firmware, virt has an ACPI GED instead of the
/// non-secure PL061) plus the PSCI node QEMU leaves out when EL3 firmware is loaded, so Linux
/// can start CPUs and power off through tz-sim.
pub fn plain_chain_dtb(qemu: &Path, machine: &Machine, name: &str) -> Result<PathBuf> {
    let dir = firmware::output_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dumped_path = dir.join(format!("{name}.qemu.dtb"));
    let _ = std::fs::remove_file(&dumped_path);
    let out = machine
        .dumping_dtb_to(&dumped_path)
        .command(qemu)
        .stdin(Stdio::null())
        .output()
        .context("starting QEMU to dump the chain's DT")?;
    if !out.status.success() {
        bail!(
            "QEMU could not dump the chain's DT ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dumped = std::fs::read(&dumped_path)
        .with_context(|| format!("reading QEMU's DT {}", dumped_path.display()))?;
    let dtb = with_psci(&dumped)?;
    let path = dir.join(format!("{name}.dtb"));
    std::fs::write(&path, dtb).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `dtb` with `/firmware/psci` (PSCI 1.0 over SMC: tz-sim's; Linux and U-Boot find the node
/// by its compatible). Refuses a DT that has a PSCI node already.
pub fn with_psci(dtb: &[u8]) -> Result<Vec<u8>> {
    let info = warden::dt::parse(dtb).map_err(|e| anyhow::anyhow!("parsing QEMU's DT: {e}"))?;
    ensure!(
        info.psci.is_none() && !dtb.windows(9).any(|w| w == b"arm,psci-"),
        "QEMU's DT already has a PSCI node"
    );
    let edit = warden::dt::DtEdit::new().add_firmware("psci", "arm,psci-1.0").set_property(
        "/firmware/psci",
        "method",
        b"smc\0",
    );
    warden::dt::apply(dtb, &edit).map_err(|e| anyhow::anyhow!("adding the PSCI node: {e}"))
}

/// A Linux host booted through the chain: the host's files as `linux_host::prepare` makes
/// them, the boot disk holding its kernel, initramfs and command line, and the machine.
#[derive(Debug)]
pub struct ChainLinux {
    pub machine: Machine,
    pub boot_disk: PathBuf,
    /// The kernel command line extlinux.conf passes.
    pub cmdline: String,
}

/// Prepares Linux (`opts`: kernel, initrd, `--append`, CPUs) on the chain with `hyp` at
/// `HYP_BASE`: writes the boot disk into `opts.work_dir` and returns the machine, which has
/// tz-sim, the hyp stage, U-Boot, the DT, the boot disk and the Linux host's devices.
pub fn linux(qemu: &Path, opts: &HostOptions, hyp: &HypStage, name: &str) -> Result<ChainLinux> {
    let u_boot = uboot::uboot()?;
    let tz_sim = firmware::build_one(crate::toolchain::firmware()?, &firmware::TZ_SIM)?;
    let host = linux_host::prepare(opts)?;
    let boot_disk = opts.work_dir.join("boot-disk.img");
    bootdisk::write(&boot_disk, &host.kernel, &host.initrd, &host.cmdline)?;
    let mut m = machine(opts.gic, opts.smp, &tz_sim);
    match hyp {
        HypStage::None => {
            m.devices.extend(loader(&u_boot.bin, HYP_BASE));
            m.dtb = Some(plain_chain_dtb(qemu, &m, name)?);
        }
    }
    m.devices.extend(boot_disk_devices(&boot_disk));
    m.devices.extend(host.devices.iter().cloned());
    Ok(ChainLinux { machine: m, boot_disk, cmdline: host.cmdline })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_machine_has_el3_and_2g() {
        let mut m = machine(Gic::V3, 3, Path::new("/t/tz-sim.bin"));
        m.devices.extend(loader(Path::new("/t/u-boot.bin"), HYP_BASE));
        m.devices.extend(boot_disk_devices(Path::new("/t/boot.img")));
        assert_eq!(
            m.args().join(" "),
            "-machine virt,secure=on,virtualization=on,gic-version=3,iommu=smmuv3 \
             -cpu max,pauth-impdef=on -smp 3 -m 2G -nographic -no-reboot \
             -global virtio-net-pci.romfile= -bios /t/tz-sim.bin \
             -device loader,file=/t/u-boot.bin,addr=0x7e000000 \
             -drive if=none,id=bootdisk,format=raw,snapshot=on,file=/t/boot.img \
             -device ich9-ahci,id=ahci -device ide-hd,drive=bootdisk,bus=ahci.0"
        );
    }

    #[test]
    fn u_boot_stays_clear_of_the_hyp_region() {
        assert_eq!(MAX_HYP_REGION, 0xc000_0000 - 0x235_3000 - 0x7e00_0000);
        assert_eq!(RAM_END, 0xc000_0000);
        assert_eq!(crate::linux::parse_memory(MEMORY).unwrap(), 2 << 30);
    }

    /// QEMU's own DT for the chain's machine has no PSCI node (virt leaves it out when EL3
    /// firmware is loaded); the `--no-warden` chain's DT has tz-sim's, found by warden's parser.
    #[test]
    fn the_plain_chain_dt_has_psci_over_smc() {
        let qemu = crate::toolchain::find_in_path("qemu-system-aarch64")
            .expect("qemu-system-aarch64 in PATH (cargo xtask setup installs it)");
        let dir = std::env::temp_dir().join(format!("xtask-chain-dt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // QEMU does not read the -bios file to dump the DT, but wants it to exist.
        let bios = dir.join("tz-sim.bin");
        std::fs::write(&bios, [0u8; 4]).unwrap();
        let m = machine(Gic::V3, 3, &bios);
        let dumped = dir.join("q.dtb");
        let out = m.dumping_dtb_to(&dumped).command(&qemu).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let qemus = std::fs::read(&dumped).unwrap();
        let psci = |dtb: &[u8]| {
            let fdt = fdt::Fdt::new(dtb).unwrap();
            let node = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
            node.property("method").and_then(|m| m.as_str()).map(str::to_owned)
        };
        assert_eq!(psci(&qemus), None);
        let ours = with_psci(&qemus).unwrap();
        assert_eq!(psci(&ours).as_deref(), Some("smc"));
        assert_eq!(warden::dt::parse(&ours).unwrap().cpus.len(), 3);
        assert!(with_psci(&ours).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
