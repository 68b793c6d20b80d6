//! The virtual SMMU's view of warden's real SMMU: [`RealSmmu`] over the [`Smmu`] driver, and
//! the [`VirtConfig`] the firmware builds from what the real SMMU and the host's stage 2 allow.

use alloc::vec::Vec;

use crate::mm::FrameAllocator;
use crate::smmu::io::SmmuIo;
use crate::smmu::{S2Config, Smmu, SmmuError};

use super::cmdq::RealCommand;
use super::regs::Advertised;
use super::ste::RealSte;
use super::{RealSmmu, RealSmmuError, VirtConfig};

/// The real SMMU as the emulation drives it: STEs are built over warden's host stage 2
/// (`s2`: the host VMID and the CPU's tables) and written through the driver, which keeps
/// break-before-make; level-2 stream tables come from `frames` when needed.
pub struct SmmuBackend<'a, M: SmmuIo, F: FrameAllocator + ?Sized> {
    pub smmu: &'a mut Smmu<M>,
    pub s2: S2Config,
    pub frames: &'a mut F,
}

fn failed(what: &str, e: SmmuError) -> RealSmmuError {
    log::error!("vSMMU: real SMMU {what} failed: {e}");
    RealSmmuError
}

impl<M: SmmuIo, F: FrameAllocator + ?Sized> RealSmmu for SmmuBackend<'_, M, F> {
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), RealSmmuError> {
        let words = ste.to_ste(&self.s2, self.smmu.features()).map_err(|e| {
            log::error!("vSMMU: no real STE for stream {sid:#x}: {e}");
            RealSmmuError
        })?;
        self.smmu.write_ste(sid, &words, self.frames).map_err(|e| failed("STE write", e))
    }

    fn submit(&mut self, cmd: RealCommand) -> Result<(), RealSmmuError> {
        self.smmu.submit_words(cmd.encode()).map_err(|e| failed("command", e))
    }

    fn sync(&mut self) -> Result<(), RealSmmuError> {
        self.smmu.sync().map_err(|e| failed("CMD_SYNC", e))
    }
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
}

impl core::fmt::Display for VirtUnsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VirtUnsupported::NoNesting => {
                write!(f, "the real SMMU lacks stage 1 + stage 2 (IDR0.S1P/S2P) for nesting")
            }
            VirtUnsupported::IpaBits(b) => write!(f, "a {b}-bit host IPA space is too small"),
        }
    }
}

/// What the host is offered: its stream IDs, the real SMMU's stream-ID width and ASID size, an
/// output address size no larger than its IPA space (the stage-1 output is a stage-2 input).
pub fn virt_config<M: SmmuIo>(
    smmu: &Smmu<M>,
    host_ipa_bits: u32,
    host_vmid: u16,
    host_sids: Vec<u32>,
) -> Result<VirtConfig, VirtUnsupported> {
    let f = smmu.features();
    if !(f.stage1 && f.stage2) {
        return Err(VirtUnsupported::NoNesting);
    }
    let oas_field = (0..=6u32)
        .rev()
        .find(|&field| {
            crate::mm::tcr::address_size_bits(u64::from(field))
                .is_some_and(|b| b <= host_ipa_bits && f.oas_bits.is_some_and(|real| b <= real))
        })
        .ok_or(VirtUnsupported::IpaBits(host_ipa_bits))?;
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::Stage2Config;
    use crate::mm::frame::test_support::HeapFrames;
    use crate::smmu::fake::FakeSmmu;
    use crate::smmu::ste::Ste;
    use crate::smmu::virt::ste::Stage1Context;
    use crate::smmu::{SmmuConfig, cmd};

    fn host_s2() -> S2Config {
        let cfg = Stage2Config::new(40, 48, true).unwrap();
        S2Config::from_vtcr_vttbr(cfg.vtcr(), cfg.vttbr(0x4100_0000, 1).unwrap())
    }

    fn smmu(frames: &mut HeapFrames) -> Smmu<FakeSmmu> {
        let config = SmmuConfig { poll_limit: 1000, ..SmmuConfig::new(16, 40) };
        Smmu::init(FakeSmmu::qemu(), config, frames).unwrap()
    }

    #[test]
    fn backend_writes_nested_and_stage2_only_stes_and_raw_commands() {
        let mut frames = HeapFrames::new(64);
        let mut smmu = smmu(&mut frames);
        smmu.io().take_log();
        let s2 = host_s2();
        let features = *smmu.features();
        let ctx = Stage1Context { ctx_ptr: 0x4002_0000, cir: 1, cor: 1, csh: 3 };
        {
            let mut real = SmmuBackend { smmu: &mut smmu, s2, frames: &mut frames };
            real.install_ste(0x10, RealSte::Nested(ctx)).unwrap();
            real.submit(RealCommand::TlbiNhAsid { vmid: 1, asid: 7 }).unwrap();
            real.sync().unwrap();
        }
        assert_eq!(smmu.read_ste(0x10), Some(RealSte::Nested(ctx).to_ste(&s2, &features).unwrap()));
        let ops: Vec<u8> = smmu.io().commands().iter().map(|c| (c[0] & 0xff) as u8).collect();
        assert_eq!(
            ops,
            [cmd::OP_CFGI_STE_RANGE, cmd::OP_CFGI_STE, 0x11, cmd::OP_CMD_SYNC],
            "L2 table published, STE, TLBI_NH_ASID, sync"
        );
        // Replacing a valid STE: invalid first, synced, then the new one.
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
    fn config_follows_the_real_smmu_and_the_host_ipa_size() {
        let mut frames = HeapFrames::new(64);
        let smmu = smmu(&mut frames);
        let c = virt_config(&smmu, 40, 1, alloc::vec![8, 0x10]).unwrap();
        assert_eq!(c.advertised.oas_field, 2, "40 bits");
        assert_eq!(c.advertised.sid_bits, 16);
        assert!(c.advertised.asid16);
        assert!(c.advertised.cmdq_log2 >= Advertised::MIN_CMDQ_LOG2);
        assert_eq!((c.host_vmid, c.host_sids.as_slice(), c.g3_enabled), (1, &[8, 0x10][..], true));
        assert_eq!(virt_config(&smmu, 39, 1, Vec::new()).unwrap().advertised.oas_field, 1);
        assert_eq!(
            virt_config(&smmu, 52, 1, Vec::new()).unwrap().advertised.oas_field,
            4,
            "real OAS 44"
        );
        assert_eq!(
            virt_config(&smmu, 31, 1, Vec::new()).unwrap_err(),
            VirtUnsupported::IpaBits(31)
        );
        let s2only =
            FakeSmmu::new(FakeSmmu::QEMU_IDR0 & !2, FakeSmmu::QEMU_IDR1, FakeSmmu::QEMU_IDR5);
        let config = SmmuConfig { poll_limit: 1000, ..SmmuConfig::new(16, 40) };
        let smmu = Smmu::init(s2only, config, &mut frames).unwrap();
        assert_eq!(virt_config(&smmu, 40, 1, Vec::new()).unwrap_err(), VirtUnsupported::NoNesting);
    }
}
