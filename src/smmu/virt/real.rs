//! The virtual SMMU's view of warden's real SMMU: [`NestedBackend`] over the [`Smmu`] driver, and
//! the [`VirtConfig`] the firmware builds from what the real SMMU and the host's stage 2 allow.

use alloc::vec::Vec;

use crate::arch::TlbMaintenance;
use crate::mm::{Attrs, FrameAllocator, MapError, MemRange, PAGE_SIZE, PageTable, Perms, Stage2};
use crate::smmu::io::SmmuIo;
use crate::smmu::{S2Config, Smmu, SmmuError};

use super::cd::{CD_BYTES, CD_WORDS};
use super::cmdq::RealCommand;
use super::regs::Advertised;
use super::ste::RealSte;
use super::{BackendError, CdArena, NestedBackend, VirtConfig};

/// The real SMMU as the emulation drives it: STEs are built over warden's host stage 2
/// (`s2`: the host VMID and the SMMU's view of the host's tables, whose extra slot maps the
/// CD arena) and written through the driver, which keeps break-before-make (or switches a
/// nested STE's CD pointer in one store); level-2 stream tables come from `frames` when needed.
pub struct SmmuBackend<'a, M: SmmuIo, F: FrameAllocator + ?Sized> {
    pub smmu: &'a mut Smmu<M>,
    pub s2: S2Config,
    pub frames: &'a mut F,
}

fn failed(what: &str, e: SmmuError) -> BackendError {
    log::error!("vSMMU: real SMMU {what} failed: {e}");
    BackendError
}

impl<M: SmmuIo, F: FrameAllocator + ?Sized> NestedBackend for SmmuBackend<'_, M, F> {
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), BackendError> {
        let words = ste.to_ste(&self.s2, self.smmu.features()).map_err(|e| {
            log::error!("vSMMU: no real STE for stream {sid:#x}: {e}");
            BackendError
        })?;
        self.smmu.write_ste(sid, &words, self.frames).map_err(|e| failed("STE write", e))
    }

    fn write_cd(&mut self, ipa: u64, words: &[u64; CD_WORDS]) -> Result<(), BackendError> {
        self.smmu.write_context_descriptor(ipa, words).map_err(|e| failed("CD write", e))
    }

    fn submit(&mut self, cmd: RealCommand) -> Result<(), BackendError> {
        self.smmu.submit_words(cmd.encode()).map_err(|e| failed("command", e))
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        self.smmu.sync().map_err(|e| failed("CMD_SYNC", e))
    }
}

/// The real SMMU's view of the host stage 2 for the host's streams, and where the shadow CDs
/// live in it (see [`smmu_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuView {
    /// The view's root (a mirror of the host stage-2 root: same lower-level tables).
    pub root_pa: u64,
    pub arena: CdArena,
    /// The warden pages holding the shadow CDs.
    pub memory: MemRange,
}

/// Why there is no SMMU view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewError {
    /// Every root slot of the host stage 2 is in use: no IPA for the CD arena.
    NoFreeSlot,
    Map(MapError),
}

impl core::fmt::Display for ViewError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ViewError::NoFreeSlot => {
                write!(f, "no unmapped root-level slot in the host stage 2 for the CD arena")
            }
            ViewError::Map(e) => write!(f, "SMMU view of the host stage 2: {e}"),
        }
    }
}

/// Builds the real SMMU's view of the host stage 2 (`host`): a mirror of its root that shares
/// every lower-level table (so every handoff change applies to the CPU and the SMMU alike),
/// plus one root entry of its own, in the highest slot the host's view leaves unmapped, that
/// maps the shadow-CD arena read-only: `streams` x 2 CDs of 64 bytes in zeroed warden pages.
/// The slot is reserved in `host` (never mapped for the CPU); the host's CPUs cannot reach
/// the arena, its devices can only read it (see `docs/smmu.md`).
pub fn smmu_view<A, T>(
    host: &mut PageTable<Stage2>,
    streams: usize,
    frames: &mut A,
    tlb: &T,
) -> Result<SmmuView, ViewError>
where
    A: FrameAllocator + ?Sized,
    T: TlbMaintenance + ?Sized,
{
    let slot = host.highest_free_root_slot().ok_or(ViewError::NoFreeSlot)?;
    let slots = CdArena::slots_for(streams);
    let bytes = (u64::from(slots) * CD_BYTES).max(1);
    let pages = bytes.div_ceil(PAGE_SIZE) as usize;
    let pa = frames.alloc_zeroed(pages).ok_or(ViewError::Map(MapError::OutOfFrames))?;
    let memory = MemRange::new(pa, pa + pages as u64 * PAGE_SIZE);
    let ipa = MemRange::new(slot.start, slot.start + memory.size());
    let mut donor = PageTable::<Stage2>::new(host.layout(), frames).map_err(ViewError::Map)?;
    donor.map(ipa, pa, Attrs::normal(Perms::R), frames, tlb).map_err(ViewError::Map)?;
    let root_pa = host.add_root_mirror(frames).map_err(ViewError::Map)?;
    host.graft_into_mirror(slot, &donor).map_err(ViewError::Map)?;
    // Only the donor's tables below the grafted entry are in use; its own root is not.
    frames.free(donor.root_pa(), donor.layout().root_tables());
    Ok(SmmuView {
        root_pa,
        arena: CdArena { ipa: slot.start, slots, unmapped_ipa: slot.end - PAGE_SIZE },
        memory,
    })
}

/// Command queue entries advertised to the host (log2): 256 x 16 bytes, one page of its memory,
/// above Linux's minimum ([`Advertised::MIN_CMDQ_LOG2`]).
pub const HOST_CMDQ_LOG2: u32 = 8;
/// Event queue entries advertised to the host (log2).
pub const HOST_EVTQ_LOG2: u32 = 7;

/// Why the virtual SMMU cannot be offered on this real SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtUnsupported {
    /// Nesting needs both stages on the real SMMU (IDR0.S1P and S2P).
    NoNesting,
    /// The host's IPA size has no IDR5.OAS encoding at or below it (under 32 bits).
    IpaBits(u32),
    /// IDR0.STALL_MODEL = 0b10: every faulting host transaction would stall, and warden
    /// offers no RESUME.
    StallForced,
}

impl core::fmt::Display for VirtUnsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VirtUnsupported::NoNesting => {
                write!(f, "the real SMMU lacks stage 1 + stage 2 (IDR0.S1P/S2P) for nesting")
            }
            VirtUnsupported::IpaBits(b) => write!(f, "a {b}-bit host IPA space is too small"),
            VirtUnsupported::StallForced => {
                write!(f, "the real SMMU forces stalls (IDR0.STALL_MODEL = 0b10)")
            }
        }
    }
}

/// Whether this real SMMU can offer the host a virtual SMMU at all, and with which IDR5.OAS
/// encoding (the largest not above the host's IPA size and the real OAS).
pub fn advertised_oas(
    f: &crate::smmu::Features,
    host_ipa_bits: u32,
) -> Result<u32, VirtUnsupported> {
    if !(f.stage1 && f.stage2) {
        return Err(VirtUnsupported::NoNesting);
    }
    if f.stall_model == crate::smmu::regs::IDR0_STALL_MODEL_FORCED {
        return Err(VirtUnsupported::StallForced);
    }
    (0..=6u32)
        .rev()
        .find(|&field| {
            crate::mm::tcr::address_size_bits(u64::from(field))
                .is_some_and(|b| b <= host_ipa_bits && f.oas_bits.is_some_and(|real| b <= real))
        })
        .ok_or(VirtUnsupported::IpaBits(host_ipa_bits))
}

/// What the host is offered: its stream IDs, the real SMMU's stream-ID width and ASID size, an
/// output address size no larger than its IPA space (the stage-1 output is a stage-2 input).
pub fn virt_config<M: SmmuIo>(
    smmu: &Smmu<M>,
    host_ipa_bits: u32,
    host_vmid: u16,
    host_sids: Vec<u32>,
    arena: CdArena,
) -> Result<VirtConfig, VirtUnsupported> {
    let f = smmu.features();
    let oas_field = advertised_oas(f, host_ipa_bits)?;
    Ok(VirtConfig {
        advertised: Advertised {
            sid_bits: smmu.stream_table().sid_bits(),
            oas_field,
            asid16: f.asid16,
            cmdq_log2: HOST_CMDQ_LOG2,
            evtq_log2: HOST_EVTQ_LOG2,
        },
        host_vmid,
        host_sids,
        cmd_budget: VirtConfig::DEFAULT_CMD_BUDGET,
        g3_enabled: true,
        arena,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::Stage2Config;
    use crate::mm::frame::test_support::HeapFrames;
    use crate::smmu::fake::FakeOp;
    use crate::smmu::fake::FakeSmmu;
    use crate::smmu::ste::Ste;
    use crate::smmu::{SmmuConfig, cmd};

    fn host_s2() -> S2Config {
        let cfg = Stage2Config::new(40, 48, true).unwrap();
        S2Config::from_vtcr_vttbr(cfg.vtcr(), cfg.vttbr(0x4100_0000, 1).unwrap())
    }

    fn smmu(frames: &mut HeapFrames) -> Smmu<FakeSmmu> {
        let config = SmmuConfig { poll_limit: 1000, ..SmmuConfig::new(16, 40) };
        Smmu::init(FakeSmmu::qemu(), config, frames).unwrap()
    }

    const ARENA_IPA: u64 = 0x7f_c000_0000;

    fn arena() -> CdArena {
        CdArena { ipa: ARENA_IPA, slots: 4, unmapped_ipa: ARENA_IPA + 0x3fff_f000 }
    }

    #[test]
    fn backend_writes_shadow_cds_nested_and_stage2_only_stes_and_raw_commands() {
        let mut frames = HeapFrames::new(64);
        let mut smmu = smmu(&mut frames);
        let page = frames.alloc_zeroed(1).unwrap();
        let arena_memory = MemRange::new(page, page + 0x1000);
        smmu.set_cd_arena(ARENA_IPA, arena_memory);
        assert!(smmu.memory_ranges().contains(&arena_memory));
        smmu.io().take_log();
        let s2 = host_s2();
        let features = *smmu.features();
        let cd = [1, 2, 3, 4, 5, 6, 7, 8];
        let slot1 = RealSte::Nested { cd_ipa: ARENA_IPA + 0x40 };
        {
            let mut real = SmmuBackend { smmu: &mut smmu, s2, frames: &mut frames };
            real.write_cd(ARENA_IPA + 0x40, &cd).unwrap();
            real.install_ste(0x10, slot1).unwrap();
            real.submit(RealCommand::TlbiNhAsid { vmid: 1, asid: 7 }).unwrap();
            real.sync().unwrap();
            assert_eq!(real.write_cd(ARENA_IPA + 0x1000, &cd), Err(BackendError), "beyond");
            assert_eq!(real.write_cd(ARENA_IPA - 0x40, &cd), Err(BackendError), "below");
            assert_eq!(real.write_cd(ARENA_IPA + 8, &cd), Err(BackendError), "misaligned");
        }
        for (i, w) in cd.iter().enumerate() {
            assert_eq!(smmu.io().mem_read64(page + 0x40 + 8 * i as u64), *w);
        }
        assert_eq!(smmu.read_ste(0x10), Some(slot1.to_ste(&s2, &features).unwrap()));
        let log = smmu.io().log();
        let cd_written =
            log.iter().position(|o| *o == FakeOp::MemWrite { pa: page + 0x78, value: 8 });
        let ste_valid = log.iter().position(|o| matches!(o, FakeOp::MemWrite { value, .. } if *value == slot1.to_ste(&s2, &features).unwrap().0[0]));
        assert!(
            cd_written.unwrap() < ste_valid.unwrap(),
            "the CD before the STE that points at it"
        );
        let ops: Vec<u8> = smmu.io().commands().iter().map(|c| (c[0] & 0xff) as u8).collect();
        assert_eq!(
            ops,
            [cmd::OP_CFGI_STE_RANGE, cmd::OP_CFGI_STE, 0x11, cmd::OP_CMD_SYNC],
            "L2 table published, STE, TLBI_NH_ASID, sync"
        );
        // The other slot: one store to word 0, no break.
        smmu.io().take_log();
        {
            let mut real = SmmuBackend { smmu: &mut smmu, s2, frames: &mut frames };
            real.install_ste(0x10, RealSte::Nested { cd_ipa: ARENA_IPA }).unwrap();
            real.sync().unwrap();
        }
        let ops: Vec<u8> = smmu.io().commands().iter().map(|c| (c[0] & 0xff) as u8).collect();
        assert_eq!(ops, [cmd::OP_CFGI_STE, cmd::OP_CMD_SYNC], "hitless");
        // Replacing it with stage 2 only: invalid first, synced, then the new one.
        smmu.io().take_log();
        {
            let mut real = SmmuBackend { smmu: &mut smmu, s2, frames: &mut frames };
            real.install_ste(0x10, RealSte::Stage2Only).unwrap();
            real.sync().unwrap();
        }
        let ops: Vec<u8> = smmu.io().commands().iter().map(|c| (c[0] & 0xff) as u8).collect();
        assert_eq!(ops, [cmd::OP_CFGI_STE, cmd::OP_CMD_SYNC, cmd::OP_CFGI_STE, cmd::OP_CMD_SYNC]);
        assert_eq!(smmu.read_ste(0x10), Some(Ste::stage2_only(&s2, &features).unwrap()));
        assert_eq!(smmu.read_ste(0x1_0000), None, "beyond the 16-bit table");
    }

    #[test]
    fn smmu_view_mirrors_the_host_stage2_and_adds_the_arena() {
        use crate::arch::fake::Recorder;
        use crate::mm::TableLayout;
        let mut frames = HeapFrames::new(64);
        let rec = Recorder::new(64);
        let layout = TableLayout::new(40, 1, 2).unwrap();
        let mut host = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
        let ram = MemRange::new(0x4000_0000, 0x8000_0000);
        host.map(ram, ram.start, Attrs::normal(Perms::RWX), &mut frames, &rec).unwrap();
        // QEMU virt's high PCIe window: the top half of the 40-bit space.
        let pcie = MemRange::new(0x80_0000_0000, 0x100_0000_0000);
        host.map(pcie, pcie.start, Attrs::device(Perms::RW), &mut frames, &rec).unwrap();
        let before = frames.pool.allocated_pages();
        let view = smmu_view(&mut host, 40, &mut frames, &rec).unwrap();
        assert_eq!(view.arena.ipa, 0x7f_c000_0000, "the highest free 1 GiB slot");
        assert_eq!(view.arena.slots, 80);
        assert_eq!(view.arena.unmapped_ipa, 0x7f_ffff_f000);
        assert_eq!(view.memory.size(), 0x2000, "80 x 64 bytes");
        assert_eq!(host.mirror_root_pa(), Some(view.root_pa));
        // Arena (2) + view root (2) + the arena's L2 and L3 tables; the donor root is freed.
        assert_eq!(frames.pool.allocated_pages(), before + 2 + 2 + 2);
        // The view's root: the host's entries plus the arena's; the host never maps it.
        let entry = |root: u64, i: u64| {
            // SAFETY: both roots are live 2-page concatenated tables (1024 entries).
            unsafe { core::ptr::read_volatile((root + 8 * i) as *const u64) }
        };
        for i in 0..1024 {
            if i != 511 {
                assert_eq!(entry(view.root_pa, i), entry(host.root_pa(), i), "entry {i}");
            }
        }
        assert_eq!(entry(host.root_pa(), 511), 0);
        assert_ne!(entry(view.root_pa, 511), 0);
        assert_eq!(host.translate(view.arena.ipa), None);
        assert!(
            host.map(
                MemRange::new(view.arena.ipa, view.arena.ipa + 0x1000),
                0,
                Attrs::normal(Perms::RW),
                &mut frames,
                &rec
            )
            .is_err()
        );
        // Walk the view by hand to the arena: level 1 (root) -> level 2 -> level 3 page.
        let l2 = entry(view.root_pa, 511) & 0x0000_ffff_ffff_f000;
        let l3 = entry(l2, 0) & 0x0000_ffff_ffff_f000;
        let page1 = entry(l3, 1);
        assert_eq!(page1 & 0x0000_ffff_ffff_f000, view.memory.start + 0x1000);
        assert_eq!(page1 & (0b11 << 6), 1 << 6, "S2AP read-only");
        assert_eq!(entry(l3, 2), 0, "nothing after the arena: the unmapped page stays unmapped");
        assert_eq!(entry(l3, 511), 0);
        // A host stage 2 with every slot in use has no room.
        let mut full = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
        let all = MemRange::new(0, 1 << 40);
        full.map(all, 0, Attrs::device(Perms::RW), &mut frames, &rec).unwrap();
        assert_eq!(smmu_view(&mut full, 1, &mut frames, &rec), Err(ViewError::NoFreeSlot));
    }

    #[test]
    fn config_follows_the_real_smmu_and_the_host_ipa_size() {
        let mut frames = HeapFrames::new(64);
        let smmu = smmu(&mut frames);
        let c = virt_config(&smmu, 40, 1, alloc::vec![8, 0x10], arena()).unwrap();
        assert_eq!(c.advertised.oas_field, 2, "40 bits");
        assert_eq!(c.advertised.sid_bits, 16);
        assert!(c.advertised.asid16);
        assert!(c.advertised.cmdq_log2 >= Advertised::MIN_CMDQ_LOG2);
        assert_eq!((c.host_vmid, c.host_sids.as_slice(), c.g3_enabled), (1, &[8, 0x10][..], true));
        assert_eq!(virt_config(&smmu, 39, 1, Vec::new(), arena()).unwrap().advertised.oas_field, 1);
        assert_eq!(
            virt_config(&smmu, 52, 1, Vec::new(), arena()).unwrap().advertised.oas_field,
            4,
            "real OAS 44"
        );
        assert_eq!(
            virt_config(&smmu, 31, 1, Vec::new(), arena()).unwrap_err(),
            VirtUnsupported::IpaBits(31)
        );
        let s2only =
            FakeSmmu::new(FakeSmmu::QEMU_IDR0 & !2, FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
        let config = SmmuConfig { poll_limit: 1000, ..SmmuConfig::new(16, 40) };
        let smmu = Smmu::init(s2only, config, &mut frames).unwrap();
        assert_eq!(
            virt_config(&smmu, 40, 1, Vec::new(), arena()).unwrap_err(),
            VirtUnsupported::NoNesting
        );
        let forced = FakeSmmu::new(
            (FakeSmmu::QEMU_IDR0 & !(3 << 24)) | (0b10 << 24),
            FakeSmmu::QEMU_IDR1,
            FakeSmmu::QEMU_IDR5,
        );
        let smmu = Smmu::init(forced, config, &mut frames).unwrap();
        assert_eq!(
            virt_config(&smmu, 40, 1, Vec::new(), arena()).unwrap_err(),
            VirtUnsupported::StallForced
        );
    }
}
