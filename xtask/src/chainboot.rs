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
//! U-Boot's addresses, which decide the machine's RAM (measured with `bdinfo` and its boot log,
//! `u-boot-qemu` 2023.01+dfsg-2+deb12u3 under tz-sim, docs/chain.md):
//! - it relocates itself to the top of its RAM bank: code at `top - 0x10_9000`, below it its
//!   control DT, 16 MiB of malloc and its stack, which starts `0x115_25a0` below the top
//!   ([`UBOOT_TOP`] rounds that up), and it takes nothing it loads from there;
//! - the kernel goes to `kernel_addr_r` (0x4040_0000), the initramfs to `ramdisk_addr_r`
//!   (0x4400_0000); then, `initrd_high` and `fdt_high` being 0xffffffff (a 4 GiB limit on arm64,
//!   not "leave it in place"), it copies the initramfs and the DT to the highest free memory
//!   below 4 GiB and boots Linux with those copies. The DT's copy avoids `/reserved-memory`;
//!   the initramfs's does not (it is placed before U-Boot reads the reservations).
//!
//! Hence [`chain::MEMORY`], 4 GiB (RAM 0x4000_0000..0x1_4000_0000):
//! - with 1 GiB the top of RAM is 0x8000_0000: U-Boot would relocate into warden's region at
//!   `HYP_BASE` (0x7e00_0000), which warden has taken out of the host's stage 2;
//! - with RAM ending at or below 4 GiB, the initramfs's copy lands right below U-Boot, which is
//!   where the board puts its carveouts (32 MiB below the top of RAM, `carveouts::for_ram`):
//!   at 2 GiB, 0xbdc3_7000 inside `dsp@bd000000`, and Linux then fails to reserve the DSP's
//!   carveout;
//! - with 4 GiB, U-Boot and the carveouts are above 4 GiB (U-Boot in the top 17.3 MiB, the
//!   carveouts 64 to 32 MiB below the top) and the copies just below 4 GiB (0xffd9_2000 and
//!   0xffd8_5000 for the scenarios' initramfs), a gigabyte above warden's region.

use crate::bootdisk;
use crate::chain::{self, loader};
use crate::firmware;
use crate::linux_host::{self, HostOptions};
use crate::qemu::Machine;
use crate::uboot;
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use tz_sim::layout::{HYP_BASE, NEXT_STAGE};

/// The end of the chain's RAM: virt's RAM starts at 0x4000_0000.
pub const RAM_END: u64 = tz_sim::layout::RAM_BASE + (4 << 30);
// [`chain::MEMORY`] is what RAM_END assumes.
const _: () = assert!(matches!(chain::MEMORY.as_bytes(), b"4G"));
/// How far below the top of RAM U-Boot writes once relocated (its stack starts 0x115_25a0 below
/// the top; 1 MiB for the stack's depth).
pub const UBOOT_TOP: u64 = 0x125_0000;
/// The 4 GiB limit under which U-Boot copies the initramfs and the DT (`initrd_high`,
/// `fdt_high`).
pub const UBOOT_COPY_LIMIT: u64 = 1 << 32;
/// The largest kernel: U-Boot loads it at `kernel_addr_r` and the initramfs at
/// `ramdisk_addr_r` after it.
pub const MAX_KERNEL: u64 = uboot::RAMDISK_ADDR_R - uboot::KERNEL_ADDR_R;
/// The largest initramfs: loaded at `ramdisk_addr_r`, it must end below `NEXT_STAGE` (and so
/// below warden's region); its copy under 4 GiB must stay above warden's region.
pub const MAX_INITRD: u64 = NEXT_STAGE - uboot::RAMDISK_ADDR_R;

const MIB: u64 = 1 << 20;
// warden's region (32 MiB on qemu-virt-tz) lies below what U-Boot copies under 4 GiB, even for
// the largest initramfs xtask puts on the disk; U-Boot's relocation and the board's carveouts
// lie above 4 GiB, U-Boot above the carveouts; what U-Boot loads lies below where it is
// loaded.
const _: () = assert!(HYP_BASE + 32 * MIB + MAX_INITRD + 2 * MIB <= UBOOT_COPY_LIMIT);
const _: () = assert!(
    RAM_END - warden::boards::carveouts::TOP_GAP - 2 * warden::boards::carveouts::CARVEOUT_SIZE
        >= UBOOT_COPY_LIMIT
);
const _: () = assert!(RAM_END - UBOOT_TOP >= RAM_END - warden::boards::carveouts::TOP_GAP);
const _: () = assert!(uboot::RAMDISK_ADDR_R < NEXT_STAGE && uboot::KERNEL_ADDR_R < NEXT_STAGE);

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
    /// warden's boot-stage image (board `qemu-virt-tz`) at `HYP_BASE` with the OS's DT it
    /// links as QEMU's `-dtb`; U-Boot at `NEXT_STAGE`, entered by warden at EL1 on the boot
    /// CPU. The machine is [`chain::ChainImages::machine`]: all [`chain::SMP`] CPUs, which
    /// tz-sim powers on through warden's PSCI path.
    Warden(chain::ChainImages),
}

/// The `/reserved-memory` regions of `dtb` marked `no-map` (node base name, range): what
/// Linux must reserve `no-map` when U-Boot hands that DT over (warden's region, the carveouts).
pub fn no_map_regions(dtb: &Path) -> Result<Vec<(String, warden::mm::MemRange)>> {
    let bytes = std::fs::read(dtb).with_context(|| format!("reading {}", dtb.display()))?;
    let info = warden::dt::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("parsing the chain's DT {}: {e}", dtb.display()))?;
    Ok(info
        .reserved
        .iter()
        .filter(|r| r.no_map)
        .map(|r| {
            let base = r.name.split('@').next().unwrap_or(&r.name).to_owned();
            (base, r.range)
        })
        .collect())
}

/// The DT of the `--no-warden` chain: QEMU's own for `machine` (dumped with its `-bios`, so
/// the devices are those the run has: with firmware, virt has an ACPI GED instead of the
/// non-secure PL061) plus the PSCI node QEMU leaves out when EL3 firmware is loaded, so Linux
/// can start CPUs and power off through tz-sim.
pub fn plain_chain_dtb(qemu: &Path, machine: &Machine, name: &str) -> Result<PathBuf> {
    let dir = firmware::output_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dumped_path = dir.join(format!("{name}.qemu.dtb"));
    let dumped = chain::dump_dt(qemu, machine, &dumped_path)?;
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

/// Prepares Linux (`opts`: kernel, initrd, `--append`, CPUs) on the chain with `tz_sim` as
/// `-bios` (the warden chain's images name their own) and `hyp` at `HYP_BASE`: writes the boot disk into `opts.work_dir` and returns the machine, which has
/// tz-sim, the hyp stage, U-Boot, the DT, the boot disk and the Linux host's devices.
pub fn linux(
    qemu: &Path,
    tz_sim: &Path,
    opts: &HostOptions,
    hyp: &HypStage,
    name: &str,
) -> Result<ChainLinux> {
    let u_boot = uboot::uboot()?;
    let host = linux_host::prepare(opts)?;
    for (what, path, max) in
        [("kernel", &host.kernel, MAX_KERNEL), ("initramfs", &host.initrd, MAX_INITRD)]
    {
        let len =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        ensure!(
            len <= max,
            "the {what} {} is {len} bytes; U-Boot's addresses on the chain take at most {max} \
             (docs/chain.md)",
            path.display()
        );
    }
    let boot_disk = opts.work_dir.join("boot-disk.img");
    bootdisk::write(&boot_disk, &host.kernel, &host.initrd, &host.cmdline)?;
    let mut m = chain::machine(opts.gic, Some(tz_sim.to_owned()));
    match hyp {
        HypStage::None => {
            // One CPU: tz-sim enters every CPU it powers on at HYP_BASE, where U-Boot would
            // start again (docs/chain.md).
            m.smp = opts.smp;
            m.devices.extend(loader(&u_boot.bin, HYP_BASE));
            m.dtb = Some(plain_chain_dtb(qemu, &m, name)?);
        }
        HypStage::Warden(images) => {
            ensure!(
                opts.smp == chain::SMP && opts.gic == images.gic,
                "the chain with warden runs the machine its DT was made for: {} CPUs, {:?} \
                 (asked: {} CPUs, {:?})",
                chain::SMP,
                images.gic,
                opts.smp,
                opts.gic
            );
            m = images.machine();
            m.devices.extend(chain::next_stage_loader(&u_boot.bin));
        }
    }
    m.devices.extend(boot_disk_devices(&boot_disk));
    m.devices.extend(host.devices.iter().cloned());
    Ok(ChainLinux { machine: m, boot_disk, cmdline: host.cmdline })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Gic;
    use std::process::Stdio;

    #[test]
    fn the_chain_machine_has_el3_and_4g() {
        let mut m = chain::machine(Gic::V3, Some("/t/tz-sim.bin".into()));
        m.devices.extend(loader(Path::new("/t/u-boot.bin"), HYP_BASE));
        m.devices.extend(boot_disk_devices(Path::new("/t/boot.img")));
        assert_eq!(
            m.args().join(" "),
            "-machine virt,secure=on,virtualization=on,gic-version=3,iommu=smmuv3 \
             -cpu max,pauth-impdef=on -smp 3 -m 4G -nographic -no-reboot \
             -global virtio-net-pci.romfile= -bios /t/tz-sim.bin \
             -device loader,file=/t/u-boot.bin,addr=0x7e000000 \
             -drive if=none,id=bootdisk,format=raw,snapshot=on,file=/t/boot.img \
             -device ich9-ahci,id=ahci -device ide-hd,drive=bootdisk,bus=ahci.0"
        );
    }

    #[test]
    fn u_boot_stays_clear_of_warden_and_the_carveouts() {
        assert_eq!(RAM_END, 0x1_4000_0000);
        assert_eq!(crate::linux::parse_memory(chain::MEMORY).unwrap(), 4 << 30);
        // Where the board places its carveouts in the chain's RAM: above 4 GiB, below U-Boot.
        let ram = [warden::mm::MemRange::new(0x4000_0000, RAM_END)];
        let carveouts = warden::boards::carveouts::for_ram(&ram).unwrap();
        assert_eq!(carveouts[0].range.start, 0x1_3c00_0000);
        assert!(carveouts[1].range.end <= RAM_END - UBOOT_TOP);
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
        let m = chain::machine(Gic::V3, Some(bios.clone()));
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
