//! The chain: tz-sim (EL3) → warden entered as the hyp boot stage (EL2, board `qemu-virt-tz`)
//! → the next stage at EL1 (U-Boot then Linux, or the test guest) on QEMU virt.
//!
//! One place for the chain's machine ([`machine`]: CPUs, RAM, GIC, SMMU, `secure=on`, tz-sim
//! as `-bios`), because warden links the OS's DT made for exactly that machine
//! ([`build_chain_images`]): QEMU's own DT for it (`dumpdtb`), plus the board's carveouts, plus
//! the host's view warden's own DT code makes (`warden::boot_stage::os_dt`), so the host sees
//! what a packed warden would have shown it. QEMU gets the same DT with `-dtb` (with `-bios` it
//! puts it at the base of RAM, where U-Boot and the test guest read it).

use crate::firmware::{self, FirmwareCrate};
use crate::qemu::{Gic, Machine};
use crate::toolchain::FirmwareToolchain;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use warden::boards::qemu_virt_tz;

/// CPUs of the chain's machine (all the host's: `qemu-virt-tz` keeps none for a simulated
/// peer).
pub const SMP: u32 = 3;
/// RAM of the chain's machine (0x4000_0000..0x1_4000_0000): warden's region at `HYP_BASE`
/// inside the first GiB, the board's carveouts 64 to 32 MiB below the top, above 4 GiB. Not
/// 1 GiB: U-Boot relocates itself to the top of RAM, which would then be warden's region, and
/// copies the initramfs below 4 GiB without looking at `/reserved-memory` (the chainboot
/// helper's measurements, docs/chain.md on its branch).
pub const MEMORY: &str = "4G";
/// Where tz-sim enters the hyp image and where the next stage goes (tz-sim's fixed layout).
pub const HYP_BASE: u64 = tz_sim::layout::HYP_BASE;
pub const NEXT_STAGE: u64 = tz_sim::layout::NEXT_STAGE;

// warden's board and tz-sim agree on where the hyp image goes.
const _: () = assert!(qemu_virt_tz::HYP_BASE == tz_sim::layout::HYP_BASE);

/// Environment variable naming the DT warden links for `qemu-virt-tz` (read by `build.rs` and
/// `boards/qemu-virt-tz/linked_dt.rs`).
pub const HYP_DT_ENV: &str = "WARDEN_HYP_DT";

/// warden built for `qemu-virt-tz` (GICv3 machine): `target/warden/warden-hyp.bin`, a raw
/// image to load at [`HYP_BASE`].
pub const WARDEN_HYP: FirmwareCrate = FirmwareCrate {
    package: "warden",
    cargo_args: &[
        "--package",
        "warden",
        "--no-default-features",
        "--features",
        "firmware,board-qemu-virt-tz",
        "--bin",
        "warden",
    ],
    bin_name: "warden",
    output: "warden-hyp.bin",
    load: crate::elf2bin::Load::SelfRelocatingImage,
    max_mem_size: Some(qemu_virt_tz::HYP_REGION_SIZE),
    embeds_sim_peer: false,
};

/// The same for the GICv2 machine (its DT differs, and warden links the DT).
pub const WARDEN_HYP_GICV2: FirmwareCrate =
    FirmwareCrate { output: "warden-hyp-gicv2.bin", ..WARDEN_HYP };

/// FAULT INJECTION, for the `chain-xpu-violation` scenario only: [`WARDEN_HYP`] with the
/// test-only `fault-injection-skip-assign-unmap` feature (a forwarded assign_mem leaves the
/// host's mapping in place), in its own file so that no other run picks it up.
pub const WARDEN_HYP_SKIP_ASSIGN_UNMAP: FirmwareCrate = FirmwareCrate {
    cargo_args: &[
        "--package",
        "warden",
        "--no-default-features",
        "--features",
        "firmware,board-qemu-virt-tz,fault-injection-skip-assign-unmap",
        "--bin",
        "warden",
    ],
    output: "warden-hyp-fault-skip-assign-unmap.bin",
    ..WARDEN_HYP
};

/// Builds [`WARDEN_HYP_SKIP_ASSIGN_UNMAP`] linking the DT of `images` (a GICv3 chain's).
pub fn build_skip_assign_unmap_image(
    tc: &FirmwareToolchain,
    images: &ChainImages,
    log: Option<&Path>,
) -> Result<PathBuf> {
    anyhow::ensure!(images.gic == Gic::V3, "the fault-injection image is built for GICv3");
    firmware::build_with_env(tc, &WARDEN_HYP_SKIP_ASSIGN_UNMAP, log, &[(HYP_DT_ENV, &images.dtb)])
}

/// What a chain boots: warden's hyp image and the OS's DT it was linked with.
#[derive(Clone, Debug)]
pub struct ChainImages {
    pub gic: Gic,
    /// `target/warden/warden-hyp.bin` (`-gicv2` with a GICv2).
    pub hyp_image: PathBuf,
    /// `target/warden/qemu-virt-tz.dtb` (`-gicv2` with a GICv2): QEMU's `-dtb`.
    pub dtb: PathBuf,
    /// `target/warden/tz-sim.bin`: QEMU's `-bios`.
    pub tz_sim: PathBuf,
}

impl ChainImages {
    /// The chain's machine booting these images: tz-sim as `-bios`, the DT as `-dtb`, warden
    /// loaded at [`HYP_BASE`]. The caller adds the next stage (`-device
    /// loader,file=...,addr=NEXT_STAGE`, see [`next_stage_loader`]) and PCI devices (which do
    /// not change the DT); nothing that adds DT nodes.
    pub fn machine(&self) -> Machine {
        let mut m = machine(self.gic, Some(self.tz_sim.clone()));
        m.dtb = Some(self.dtb.clone());
        m.devices.extend(loader(&self.hyp_image, HYP_BASE));
        m
    }
}

/// `-device loader` arguments putting `file` at `addr` (raw bytes, no CPU started there).
pub fn loader(file: &Path, addr: u64) -> [String; 2] {
    ["-device".into(), format!("loader,file={},addr={addr:#x}", file.display())]
}

/// The next stage (a raw image entered at its first byte) at [`NEXT_STAGE`].
pub fn next_stage_loader(file: &Path) -> [String; 2] {
    loader(file, NEXT_STAGE)
}

/// The chain's machine options, the one place they are set: `-machine
/// virt,secure=on,virtualization=on,gic-version=N,iommu=smmuv3 -smp SMP -m MEMORY`.
pub fn machine(gic: Gic, bios: Option<PathBuf>) -> Machine {
    let mut m = Machine::new(None);
    m.smp = SMP;
    m.memory = MEMORY.into();
    m.gic = gic;
    m.bios = Some(bios.unwrap_or_else(|| firmware::output_dir().join(firmware::TZ_SIM.output)));
    m
}

fn suffix(gic: Gic) -> &'static str {
    match gic {
        Gic::V3 => "",
        Gic::V2 => "-gicv2",
    }
}

/// The OS's DT for the chain: `dumped` (QEMU's DT for [`machine`]) with the board's carveouts
/// and the host's view ([`warden::boot_stage::os_dt`]), checked to list all [`SMP`] CPUs.
pub fn os_dt(dumped: &[u8]) -> Result<Vec<u8>> {
    use warden::boards::carveouts;
    let qemus = warden::dt::parse(dumped)
        .map_err(|e| anyhow::anyhow!("warden cannot parse QEMU's DT: {e}"))?;
    let specs = carveouts::for_ram(&qemus.memory)
        .map_err(|e| anyhow::anyhow!("placing the board carveouts: {e}"))?;
    let edit = carveouts::add_to(warden::dt::DtEdit::new(), &specs);
    let os = warden::boot_stage::os_dt(dumped, &qemu_virt_tz::BOARD, &edit)
        .map_err(|e| anyhow::anyhow!("making the OS's DT for qemu-virt-tz: {e}"))?;
    let info = warden::dt::parse(&os).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        info.cpus.len() == SMP as usize,
        "the chain's DT has {} CPUs, the machine {SMP}",
        info.cpus.len()
    );
    Ok(os)
}

/// QEMU's own DT for `machine` (`-machine dumpdtb`, with the machine's `-bios`, which changes
/// the devices), written to `path` and returned.
pub fn dump_dt(qemu: &Path, machine: &Machine, path: &Path) -> Result<Vec<u8>> {
    let _ = std::fs::remove_file(path);
    let out = machine
        .dumping_dtb_to(path)
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
    std::fs::read(path).with_context(|| format!("reading QEMU's DT {}", path.display()))
}

/// Dumps QEMU's DT for the chain's machine, makes the OS's DT from it
/// (`target/warden/qemu-virt-tz[-gicv2].dtb`), then builds tz-sim and warden for `qemu-virt-tz`
/// linking that DT (`target/warden/warden-hyp[-gicv2].bin`). cargo's diagnostics go to `log`
/// when given.
pub fn build_chain_images(
    tc: &FirmwareToolchain,
    qemu: &Path,
    gic: Gic,
    log: Option<&Path>,
) -> Result<ChainImages> {
    let dir = firmware::output_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // First: QEMU loads the -bios file before it dumps the DT (and the DT differs with one).
    let tz_sim = firmware::build_with_env(tc, &firmware::TZ_SIM, log, &[])?;
    let dumped_path = dir.join(format!("qemu-virt-tz{}.qemu.dtb", suffix(gic)));
    let dumped = dump_dt(qemu, &machine(gic, None), &dumped_path)?;
    let dtb_path = dir.join(format!("qemu-virt-tz{}.dtb", suffix(gic)));
    let dtb = os_dt(&dumped)?;
    // Rewrite only on change: warden's build reruns when the file changes.
    if std::fs::read(&dtb_path).ok().as_deref() != Some(dtb.as_slice()) {
        std::fs::write(&dtb_path, &dtb)
            .with_context(|| format!("writing {}", dtb_path.display()))?;
    }
    let krate = match gic {
        Gic::V3 => &WARDEN_HYP,
        Gic::V2 => &WARDEN_HYP_GICV2,
    };
    let hyp_image = firmware::build_with_env(tc, krate, log, &[(HYP_DT_ENV, &dtb_path)])?;
    Ok(ChainImages { gic, hyp_image, dtb: dtb_path, tz_sim })
}

/// `hyp_image` (built by [`build_chain_images`] linking `dtb`) with the linked DT's
/// reservation of warden's region cut to half its size, in place (same bytes otherwise): the
/// `chain-refusal` scenario's image, which warden must refuse to start from. Returns the image
/// and the edited DT (for QEMU's `-dtb`).
pub fn with_half_reservation(hyp_image: &[u8], dtb: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let size = qemu_virt_tz::HYP_REGION_SIZE;
    // `/reserved-memory/warden@7e000000`'s reg, 2 + 2 cells.
    let mut reg = HYP_BASE.to_be_bytes().to_vec();
    reg.extend_from_slice(&size.to_be_bytes());
    let find = |hay: &[u8], needle: &[u8]| {
        let mut at = hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle);
        match (at.next(), at.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    let at = find(dtb, &reg).context("warden's reg found once in the chain's DT")?;
    let mut edited = dtb.to_vec();
    edited[at + 8..at + 16].copy_from_slice(&(size / 2).to_be_bytes());
    let linked = find(hyp_image, dtb).context("the chain's DT linked once into warden-hyp.bin")?;
    let mut image = hyp_image.to_vec();
    image[linked..linked + dtb.len()].copy_from_slice(&edited);
    Ok((image, edited))
}

/// The DT [`WARDEN_HYP`] links (for its clippy run).
pub fn hyp_dt_path() -> PathBuf {
    firmware::output_dir().join("qemu-virt-tz.dtb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chains_machine_is_the_one_the_dt_is_for() {
        let images = ChainImages {
            gic: Gic::V3,
            hyp_image: PathBuf::from("/t/warden-hyp.bin"),
            dtb: PathBuf::from("/t/qemu-virt-tz.dtb"),
            tz_sim: PathBuf::from("/t/tz-sim.bin"),
        };
        let args = images.machine().args().join(" ");
        assert!(
            args.starts_with(
                "-machine virt,secure=on,virtualization=on,gic-version=3,iommu=smmuv3 -cpu \
                 max,pauth-impdef=on -smp 3 -m 4G"
            ),
            "{args}"
        );
        assert!(args.contains("-bios /t/tz-sim.bin"), "{args}");
        assert!(args.contains("-dtb /t/qemu-virt-tz.dtb"), "{args}");
        assert!(args.contains("-device loader,file=/t/warden-hyp.bin,addr=0x7e000000"), "{args}");
        // The dump is of the same machine, without what only the run has.
        let dump = machine(Gic::V3, Some("/t/tz-sim.bin".into())).dumping_dtb_to(Path::new("/t/d"));
        let dump_args = dump.args().join(" ");
        assert!(
            dump_args.starts_with(
                "-machine virt,secure=on,virtualization=on,gic-version=3,iommu=smmuv3,dumpdtb=/t/d \
                 -cpu max,pauth-impdef=on -smp 3 -m 4G"
            ),
            "{dump_args}"
        );
        assert_eq!(
            next_stage_loader(Path::new("/t/g.bin"))[1],
            "loader,file=/t/g.bin,addr=0x60000000"
        );
    }

    #[test]
    fn half_reservation_edits_the_linked_dt_in_place() {
        use warden::boards::carveouts;
        let fixture = include_bytes!("../../boards/qemu-virt/qemu-virt.dtb");
        let ram = [warden::mm::MemRange::new(0x4000_0000, 0x8000_0000)];
        let edit = carveouts::add_to(warden::dt::DtEdit::new(), &carveouts::for_ram(&ram).unwrap());
        let dtb = warden::boot_stage::os_dt(fixture, &qemu_virt_tz::BOARD, &edit).unwrap();
        let mut image = vec![0xaa; 64];
        image.extend_from_slice(&dtb);
        image.extend_from_slice(&[0x55; 64]);
        let (patched, edited) = with_half_reservation(&image, &dtb).unwrap();
        assert_eq!(patched.len(), image.len());
        assert_eq!(&patched[64..64 + dtb.len()], edited.as_slice());
        assert_eq!(patched[..64], image[..64]);
        let p = warden::dt::parse(&edited).unwrap();
        let half =
            warden::mm::MemRange::new(HYP_BASE, HYP_BASE + qemu_virt_tz::HYP_REGION_SIZE / 2);
        assert!(p.reserved.iter().any(|r| r.range == half && r.no_map));
        let region =
            warden::mm::MemRange::from_base_size(HYP_BASE, qemu_virt_tz::HYP_REGION_SIZE).unwrap();
        assert!(warden::boot_stage::check_boot_stage_dt(&p, region).is_err());
        assert!(with_half_reservation(&image[..80], &dtb).is_err());
    }

    /// The real thing: QEMU's DT for the chain's machine, edited as `cargo xtask build` does;
    /// warden's boot-stage check accepts it.
    #[test]
    fn os_dt_from_qemu_passes_wardens_check() {
        let Ok(qemu) = crate::toolchain::qemu() else {
            eprintln!("skipped: no QEMU");
            return;
        };
        let dir = std::env::temp_dir().join(format!("warden-chain-dt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // QEMU loads the -bios file before dumping the DT; it never runs.
        let bios = dir.join("bios.bin");
        std::fs::write(&bios, [0u8; 4]).unwrap();
        for gic in [Gic::V3, Gic::V2] {
            let path = dir.join("q.dtb");
            let out = machine(gic, Some(bios.clone()))
                .dumping_dtb_to(&path)
                .command(&qemu.path)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let os = os_dt(&std::fs::read(&path).unwrap()).unwrap();
            let p = warden::dt::parse(&os).unwrap();
            let region =
                warden::mm::MemRange::from_base_size(HYP_BASE, qemu_virt_tz::HYP_REGION_SIZE)
                    .unwrap();
            assert_eq!(warden::boot_stage::check_boot_stage_dt(&p, region), Ok(()));
            assert_eq!(p.carveouts.len(), 2);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
