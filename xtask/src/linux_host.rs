//! Putting a Linux host together: kernel (Debian's or the user's), initramfs, disks, command
//! line and QEMU devices; with warden (packed image) or without (the "no hypervisor" baseline).

use crate::firmware;
use crate::initramfs::{
    self, RO_DISK_SERIAL, RO_DISK_SIZE, SCRATCH_DISK_SERIAL, SCRATCH_DISK_SIZE,
};
use crate::linux::{self, Series};
use crate::pack;
use crate::qemu::Machine;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The kernel command line every Linux host boot starts with.
pub const BASE_CMDLINE: &str = "console=ttyAMA0 earlycon panic=-1";

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub series: Series,
    pub smp: u32,
    pub memory: String,
    /// Start a shell on the console after the scenarios (`warden.shell=1`).
    pub shell: bool,
    /// False: boot Linux directly at EL1, without warden (`--no-warden`).
    pub with_warden: bool,
    /// What warden presents to the host (`--persona`).
    pub persona: crate::Persona,
    /// QEMU virt's interrupt controller (`--gic`).
    pub gic: crate::qemu::Gic,
    /// Where the initramfs, disks and packed image go.
    pub work_dir: PathBuf,
}

impl HostOptions {
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            kernel: None,
            initrd: None,
            append: None,
            series: Series::V6_12,
            smp: 2,
            memory: "1G".into(),
            shell: false,
            with_warden: true,
            persona: crate::Persona::Virt,
            gic: crate::qemu::Gic::V3,
            work_dir,
        }
    }
}

pub fn default_work_dir() -> PathBuf {
    firmware::output_dir().join("linux")
}

/// Everything needed to boot: files on disk and the command line.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub devices: Vec<String>,
}

/// The command line: base, what the scenarios read, then the user's `--append`.
pub fn cmdline(opts: &HostOptions, disk_sha256: &str) -> String {
    let mut words = vec![
        BASE_CMDLINE.to_owned(),
        format!("warden.smp={}", opts.smp),
        format!("warden.disk_sha256={disk_sha256}"),
        format!("warden.disk_bytes={RO_DISK_SIZE}"),
    ];
    if !opts.with_warden {
        words.push("warden.absent=1".into());
    }
    if opts.shell {
        words.push("warden.shell=1".into());
    }
    if let Some(word) = opts.persona.cmdline_word() {
        words.push(word.into());
    }
    if opts.gic == crate::qemu::Gic::V2 {
        // VFIO refuses (EPERM) an IOMMU whose MSIs are not isolated, which a GICv2m's are not
        // (a GICv3 ITS's are); `dma-after-donate`'s edu raises none.
        words.push(GICV2_VFIO.into());
    }
    if let Some(append) = opts.append.as_deref().filter(|a| !a.trim().is_empty()) {
        words.push(append.trim().to_owned());
    }
    words.join(" ")
}

/// What `dma-after-donate` needs on a GICv2 (`--gic 2`) to hand edu to user space.
pub const GICV2_VFIO: &str = "vfio_iommu_type1.allow_unsafe_interrupts=1";

/// QEMU's `edu` for the `dma-after-donate` scenario (its user-space program drives it through
/// VFIO). Placed after the virtio devices so their PCI slots, and so their stream IDs, stay
/// what they were. The `dma_mask` lets its DMA engine reach any 40-bit IOVA, as for the test
/// guest (the program uses low IOVAs, which need no such mask).
pub const EDU_DEVICE: &str = "edu,dma_mask=0xffffffffff";

/// QEMU arguments for the two virtio-blk disks, the virtio-net card and `edu`, all behind the
/// SMMU.
pub fn device_args(ro_disk: &Path, scratch_disk: &Path) -> Vec<String> {
    // Without iommu_platform=on the devices' DMA bypasses the SMMU; disable-legacy=on because
    // legacy virtio cannot use it.
    let behind_smmu = "iommu_platform=on,disable-legacy=on";
    vec![
        "-drive".into(),
        format!("if=none,id=ro,format=raw,readonly=on,file={}", ro_disk.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=ro,serial={RO_DISK_SERIAL},{behind_smmu}"),
        "-drive".into(),
        format!("if=none,id=scratch,format=raw,file={}", scratch_disk.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=scratch,serial={SCRATCH_DISK_SERIAL},{behind_smmu}"),
        "-netdev".into(),
        "user,id=n0,restrict=on".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,{behind_smmu}"),
        // A plain PCI device: its DMA always goes through the SMMU.
        "-device".into(),
        EDU_DEVICE.into(),
    ]
}

/// The scenarios' own program (`tests/linux/dma-after-donate`), built with the firmware
/// toolchain (a no-op when it is up to date).
fn linux_program() -> Result<initramfs::Program> {
    let tc = crate::toolchain::firmware()?;
    let elf = crate::linux_tool::build(tc, None)?;
    let bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    Ok(initramfs::Program { name: crate::linux_tool::BIN.to_owned(), bytes })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Gets the kernel, builds (or checks) the initrd, writes the disks.
pub fn prepare(opts: &HostOptions) -> Result<LinuxHost> {
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let memory = linux::parse_memory(&opts.memory)?;

    let (kernel, modules) = match &opts.kernel {
        Some(path) => (path.clone(), None),
        None => {
            let k = linux::debian_kernel(opts.series)?;
            eprintln!(
                "xtask: kernel {} (Linux {}, {} {})",
                k.image.display(),
                k.release,
                k.package,
                k.version
            );
            (k.image.clone(), Some(k.modules))
        }
    };
    let kernel_bytes =
        std::fs::read(&kernel).with_context(|| format!("reading kernel {}", kernel.display()))?;
    let image_size = linux::check_kernel_image(&kernel, &kernel_bytes)?;
    // An Image header may say 0 (old kernels): assume the file size.
    let image_size = image_size.max(kernel_bytes.len() as u64);
    drop(kernel_bytes);

    let initrd = match &opts.initrd {
        Some(path) => path.clone(),
        None => {
            eprintln!("xtask: building the initramfs (busybox, /init, tests/linux scenarios)");
            let busybox_path = linux::busybox()?;
            let busybox = std::fs::read(&busybox_path)
                .with_context(|| format!("reading {}", busybox_path.display()))?;
            let modules = match &modules {
                Some(dir) => initramfs::collect_modules(dir)?,
                None => {
                    eprintln!(
                        "xtask: note: --kernel without --initrd: the initramfs has no kernel \
                         modules, so virtio-blk/virtio-net work only if built into that kernel"
                    );
                    Vec::new()
                }
            };
            let scripts = initramfs::Scripts::load(&initramfs::tests_dir())?;
            let programs = vec![linux_program()?];
            let archive = initramfs::build(&busybox, &modules, &programs, &scripts)?;
            let path = opts.work_dir.join("initramfs.cpio");
            write(&path, &archive)?;
            path
        }
    };
    let initrd_len = std::fs::metadata(&initrd)
        .with_context(|| format!("reading initrd {}", initrd.display()))?
        .len();
    linux::check_fits(memory, image_size, initrd_len, &initrd)?;

    let pattern = initramfs::disk_pattern(RO_DISK_SIZE);
    let ro_disk_sha256 = linux::sha256_hex(&pattern);
    let ro_disk = opts.work_dir.join("ro-disk.img");
    let scratch_disk = opts.work_dir.join("scratch-disk.img");
    write(&ro_disk, &pattern)?;
    // A fresh zeroed scratch disk every boot.
    write(&scratch_disk, &vec![0u8; SCRATCH_DISK_SIZE])?;

    Ok(LinuxHost {
        kernel,
        initrd,
        cmdline: cmdline(opts, &ro_disk_sha256),
        devices: device_args(&ro_disk, &scratch_disk),
    })
}

/// The QEMU machine booting `host`: packed behind `warden` (a flat warden binary; `opts.smp`
/// host CPUs plus the peer's, and the caller attaches the DT with
/// [`crate::qemu::attach_warden_dt`]), or, with `warden: None`, directly with
/// `-kernel/-initrd/-append` on a machine without EL2 and `opts.smp` CPUs.
pub fn machine(host: &LinuxHost, warden: Option<&Path>, opts: &HostOptions) -> Result<Machine> {
    let mut m = match warden {
        Some(warden) => {
            let image = opts.work_dir.join("warden-linux.img");
            pack::pack_files(
                warden,
                &host.kernel,
                Some(&host.initrd),
                Some(&host.cmdline),
                &image,
            )?;
            Machine::with_warden(image, opts.smp)
        }
        None => {
            let mut m = Machine::new(Some(host.kernel.clone()));
            m.virtualization = false;
            m.initrd = Some(host.initrd.clone());
            m.append = Some(host.cmdline.clone());
            m.smp = opts.smp;
            m
        }
    };
    m.memory = opts.memory.clone();
    m.devices = host.devices.clone();
    m.gic = opts.gic;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words() {
        let mut opts = HostOptions::new("/w".into());
        assert_eq!(
            cmdline(&opts, "ab12"),
            "console=ttyAMA0 earlycon panic=-1 warden.smp=2 warden.disk_sha256=ab12 \
             warden.disk_bytes=4194304"
        );
        opts.smp = 4;
        opts.shell = true;
        opts.with_warden = false;
        opts.append = Some("  loglevel=8 ".into());
        opts.persona = crate::Persona::Snapdragon;
        assert!(cmdline(&opts, "ab12").contains(" warden.shell=1 warden.persona=snapdragon "));
        opts.persona = crate::Persona::Virt;
        let line = cmdline(&opts, "ab12");
        assert!(
            line.ends_with(
                "warden.smp=4 warden.disk_sha256=ab12 warden.disk_bytes=4194304 \
                                warden.absent=1 warden.shell=1 loglevel=8"
            ),
            "{line}"
        );
        assert!(!line.contains("quiet"));
        assert!(!line.contains(GICV2_VFIO));
        opts.gic = crate::qemu::Gic::V2;
        assert!(cmdline(&opts, "ab12").contains(GICV2_VFIO));
    }

    #[test]
    fn every_device_is_behind_the_smmu() {
        let args = device_args(Path::new("/d/ro.img"), Path::new("/d/s.img"));
        let devices: Vec<&String> =
            args.iter().skip(1).step_by(2).filter(|a| a.starts_with("virtio-")).collect();
        assert_eq!(devices.len(), 3);
        for d in devices {
            assert!(d.ends_with(",iommu_platform=on,disable-legacy=on"), "{d}");
        }
        // edu comes last, so the virtio devices keep their slots (and stream IDs).
        let all: Vec<&String> = args.iter().skip(1).step_by(2).collect();
        assert_eq!(all.last().map(|d| d.as_str()), Some(EDU_DEVICE));
        assert_eq!(args.iter().filter(|a| a.starts_with("edu")).count(), 1);
        assert!(args.contains(&"user,id=n0,restrict=on".to_owned()));
        assert!(args.contains(&"if=none,id=ro,format=raw,readonly=on,file=/d/ro.img".to_owned()));
    }
}
