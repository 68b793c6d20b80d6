//! The EL2 controls that shape the host's EL1 environment, computed from the CPU's ID registers.
//!
//! warden is not a VM monitor: the host should find EL1 as if firmware had dropped it there
//! directly, with everything usable except what warden mediates (SMC, stage 2). The choices
//! follow what Linux's own `init_el2_state` does before it drops from EL2 to EL1 (nVHE), with
//! one difference: the host may profile and trace itself, never warden. EL1 owns the PMU, the
//! SPE and trace buffers and the branch record buffer, so without EL2's own controls it could
//! count, sample, trace or record what warden executes. Each control exists only with its
//! feature, so each is set where the ID registers say it is implemented:
//! - PMU (FEAT_PMUv3p1): `MDCR_EL2.HPMD`, no event counting at EL2; FEAT_PMUv3p5 adds
//!   `MDCR_EL2.HCCD`, no cycle counting at EL2. A PMUv3.0 (or, before v3p5, the cycle counter
//!   with PMCR_EL0.DP clear) has no such control: EL1 could still count at EL2 there, which
//!   only trapping every PMU access would prevent (not done: it would take the PMU from the
//!   host on the cores that have one).
//! - SPE (FEAT_SPE): `PMSCR_EL2.E2SPE` = 0, no sampling at EL2 (PA and PCT as Linux sets them
//!   for an EL1-owned buffer: the host's IPAs are its PAs).
//! - Self-hosted trace (FEAT_TRF): `TRFCR_EL2` = 0, no trace of EL2 (E2TRE), no
//!   CONTEXTIDR_EL2/VMID in the host's trace (CX). A trace unit without FEAT_TRF filters by
//!   exception level only in its own EL1-programmable registers.
//! - Branch records (FEAT_BRBE): `BRBCR_EL2.E2BRE` = 0 (CC and MPRED as Linux sets them), as
//!   every field of it resets to an UNKNOWN value.

use crate::gic::GicVersion;

/// ID register values that decide the controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub id_aa64pfr0: u64,
    pub id_aa64pfr1: u64,
    pub id_aa64dfr0: u64,
    pub id_aa64mmfr1: u64,
    pub id_aa64mmfr3: u64,
    pub id_aa64isar2: u64,
    /// PMCR_EL0.N: number of event counters.
    pub pmcr_n: u64,
}

/// ID_AA64DFR0_EL1.PMUVer values.
const PMUVER_V3P1: u64 = 0b0100;
const PMUVER_V3P5: u64 = 0b0110;

fn field(reg: u64, shift: u32) -> u64 {
    (reg >> shift) & 0xf
}

impl CpuFeatures {
    /// ID_AA64PFR0_EL1.GIC: the CPU has a GICv3 system-register interface (ICC_*).
    pub fn gicv3_sysregs(&self) -> bool {
        field(self.id_aa64pfr0, 24) != 0
    }
    pub fn sve(&self) -> bool {
        field(self.id_aa64pfr0, 32) != 0
    }
    pub fn csv2_2(&self) -> bool {
        field(self.id_aa64pfr0, 56) >= 2
    }
    pub fn sme(&self) -> bool {
        field(self.id_aa64pfr1, 24) != 0
    }
    pub fn mte2(&self) -> bool {
        field(self.id_aa64pfr1, 8) >= 2
    }
    pub fn pmu(&self) -> bool {
        let v = field(self.id_aa64dfr0, 8);
        v != 0 && v != 0xf
    }
    pub fn spe(&self) -> bool {
        field(self.id_aa64dfr0, 32) != 0
    }
    pub fn trbe(&self) -> bool {
        field(self.id_aa64dfr0, 44) != 0
    }
    /// ID_AA64DFR0_EL1.PMUVer, or 0 for none or an IMPLEMENTATION DEFINED PMU.
    fn pmu_version(&self) -> u64 {
        match field(self.id_aa64dfr0, 8) {
            0xf => 0,
            v => v,
        }
    }
    /// FEAT_PMUv3p1: MDCR_EL2.HPMD exists.
    pub fn pmuv3p1(&self) -> bool {
        self.pmu_version() >= PMUVER_V3P1
    }
    /// FEAT_PMUv3p5: MDCR_EL2.HCCD exists.
    pub fn pmuv3p5(&self) -> bool {
        self.pmu_version() >= PMUVER_V3P5
    }
    /// FEAT_TRF: TRFCR_EL2 exists.
    pub fn trace_filter(&self) -> bool {
        field(self.id_aa64dfr0, 40) != 0
    }
    /// FEAT_BRBE: BRBCR_EL2 exists.
    pub fn brbe(&self) -> bool {
        field(self.id_aa64dfr0, 52) != 0
    }
    pub fn hcx(&self) -> bool {
        field(self.id_aa64mmfr1, 40) != 0
    }
    pub fn tcr2(&self) -> bool {
        field(self.id_aa64mmfr3, 0) != 0
    }
    pub fn sctlr2(&self) -> bool {
        field(self.id_aa64mmfr3, 4) != 0
    }
    pub fn mops(&self) -> bool {
        field(self.id_aa64isar2, 16) != 0
    }
}

/// Register values warden programs on every CPU before entering the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEl2Controls {
    pub hcr: u64,
    pub hcrx: Option<u64>,
    pub cptr: u64,
    pub cnthctl: u64,
    pub mdcr: u64,
    /// PMSCR_EL2, where FEAT_SPE is implemented.
    pub pmscr: Option<u64>,
    /// TRFCR_EL2, where FEAT_TRF is implemented.
    pub trfcr: Option<u64>,
    /// BRBCR_EL2, where FEAT_BRBE is implemented.
    pub brbcr: Option<u64>,
    pub zcr: Option<u64>,
    pub smcr: Option<u64>,
    /// Bits set in ICC_SRE_EL2 (SRE: EL2 uses the system registers; Enable: EL1 may), with a
    /// GICv3 only: without a GICv3 CPU interface the register is UNDEFINED.
    pub icc_sre_set: Option<u64>,
}

pub mod hcr {
    pub const VM: u64 = 1 << 0;
    pub const SWIO: u64 = 1 << 1;
    pub const TSC: u64 = 1 << 19;
    pub const RW: u64 = 1 << 31;
    pub const APK: u64 = 1 << 40;
    pub const API: u64 = 1 << 41;
    pub const ENSCXT: u64 = 1 << 53;
    pub const ATA: u64 = 1 << 56;
}

pub mod mdcr {
    /// Number of event counters EL1 may use (bits 4:0).
    pub const HPMN_MASK: u64 = 0x1f;
    /// E2PB: the SPE buffer is owned by EL1&0.
    pub const E2PB_EL1: u64 = 0b11 << 12;
    /// HPMD (FEAT_PMUv3p1): event counting prohibited at EL2.
    pub const HPMD: u64 = 1 << 17;
    /// HCCD (FEAT_PMUv3p5): PMCCNTR_EL0 does not count at EL2.
    pub const HCCD: u64 = 1 << 23;
    /// E2TB: the trace buffer is owned by EL1&0.
    pub const E2TB_EL1: u64 = 0b11 << 24;
}

pub mod pmscr {
    /// E2SPE: sampling at EL2.
    pub const E2SPE: u64 = 1 << 1;
    /// PA: EL1 may sample physical addresses.
    pub const PA: u64 = 1 << 4;
    /// PCT = 0b01: EL1 may use the physical timestamp.
    pub const PCT_PHYSICAL: u64 = 0b01 << 6;
}

pub mod trfcr {
    /// E2TRE: trace at EL2.
    pub const E2TRE: u64 = 1 << 1;
    /// CX: CONTEXTIDR_EL2 and the VMID in the trace.
    pub const CX: u64 = 1 << 3;
}

pub mod brbcr {
    /// E2BRE: branch records at EL2.
    pub const E2BRE: u64 = 1 << 1;
    /// CC: cycle counts in branch records (lets BRBCR_EL1.CC work).
    pub const CC: u64 = 1 << 3;
    /// MPRED: mispredict bits in branch records (lets BRBCR_EL1.MPRED work).
    pub const MPRED: u64 = 1 << 4;
}

pub mod icc_sre {
    /// SRE: the system-register interface is used at EL2.
    pub const SRE: u64 = 1 << 0;
    /// Enable: EL1 may set ICC_SRE_EL1.SRE (use the system registers).
    pub const ENABLE: u64 = 1 << 3;
}

pub mod hcrx {
    pub const MSCEN: u64 = 1 << 11;
    pub const MCE2: u64 = 1 << 10;
    pub const TCR2EN: u64 = 1 << 14;
    pub const SCTLR2EN: u64 = 1 << 15;
}

/// CPTR_EL2 (E2H = 0) bits that are RES1 whatever the features: 13, 9, 7..0.
const CPTR_NVHE_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
const CPTR_TZ: u64 = 1 << 8;
const CPTR_TSM: u64 = 1 << 12;

impl HostEl2Controls {
    /// The controls for a host on this CPU with the board's interrupt controller `gic`.
    pub fn for_host(f: &CpuFeatures, gic: GicVersion) -> Self {
        // Stage 2 on, host at AArch64 EL1, SMC trapped for PSCI mediation. IRQ/FIQ/SError stay
        // with the host (no IMO/FMO/AMO): the host owns the GIC. Pointer authentication keys
        // and instructions are the host's own (APK/API), as are MTE tags and SCXTNUM.
        let mut hcr = hcr::VM | hcr::SWIO | hcr::TSC | hcr::RW | hcr::APK | hcr::API;
        if f.csv2_2() {
            hcr |= hcr::ENSCXT;
        }
        if f.mte2() {
            hcr |= hcr::ATA;
        }
        let hcrx = f.hcx().then(|| {
            let mut v = 0;
            if f.mops() {
                v |= hcrx::MSCEN;
            }
            if f.tcr2() {
                v |= hcrx::TCR2EN;
            }
            if f.sctlr2() {
                v |= hcrx::SCTLR2EN;
            }
            v
        });
        // FP/SIMD, SVE and SME untrapped: warden itself never uses them (softfloat target).
        let mut cptr = CPTR_NVHE_RES1;
        if !f.sve() {
            cptr |= CPTR_TZ;
        }
        if !f.sme() {
            cptr |= CPTR_TSM;
        }
        // EL1 may use the physical counter and timer (EL1PCTEN, EL1PCEN).
        let cnthctl = 0b11;
        // Debug and PMU belong to the host: no traps, all counters (HPMN = N); SPE and TRBE
        // buffers owned by EL1 (E2PB/E2TB = 0b11) where present. None of them sees EL2 (module
        // documentation).
        let mut mdcr = if f.pmu() { f.pmcr_n & mdcr::HPMN_MASK } else { 0 };
        if f.pmuv3p1() {
            mdcr |= mdcr::HPMD;
        }
        if f.pmuv3p5() {
            mdcr |= mdcr::HCCD;
        }
        if f.spe() {
            mdcr |= mdcr::E2PB_EL1;
        }
        if f.trbe() {
            mdcr |= mdcr::E2TB_EL1;
        }
        let pmscr = f.spe().then_some(pmscr::PA | pmscr::PCT_PHYSICAL);
        let trfcr = f.trace_filter().then_some(0);
        let brbcr = f.brbe().then_some(brbcr::CC | brbcr::MPRED);
        // Largest vector lengths the hardware allows (LEN saturates); SME: FA64 and ZT0 too.
        let zcr = f.sve().then_some(0x1ff);
        let smcr = f.sme().then_some((1 << 31) | (1 << 30) | 0x1ff);
        // GICv3: EL1 uses the system-register CPU interface, as Linux's init_el2_state lets it.
        // GICv2: the CPU interface is GICC, mapped in the host's stage 2; nothing to open.
        let icc_sre_set = (gic == GicVersion::V3).then_some(icc_sre::SRE | icc_sre::ENABLE);
        Self { hcr, hcrx, cptr, cnthctl, mdcr, pmscr, trfcr, brbcr, zcr, smcr, icc_sre_set }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_cpu_gets_stage2_tsc_and_no_fp_traps() {
        let c = HostEl2Controls::for_host(&CpuFeatures::default(), GicVersion::V3);
        assert_eq!(c.hcr & (hcr::VM | hcr::TSC | hcr::RW), hcr::VM | hcr::TSC | hcr::RW);
        assert_eq!(c.hcr & ((1 << 3) | (1 << 4) | (1 << 5) | (1 << 27) | (1 << 34)), 0);
        assert_eq!(c.cptr & (1 << 10), 0, "TFP must be clear: the host owns FP/SIMD");
        assert_eq!(c.cptr & (CPTR_TZ | CPTR_TSM), CPTR_TZ | CPTR_TSM);
        assert_eq!(c.hcrx, None);
        assert_eq!((c.zcr, c.smcr), (None, None));
        assert_eq!(c.mdcr, 0);
    }

    #[test]
    fn features_unlock_their_controls() {
        let f = CpuFeatures {
            id_aa64pfr0: (1 << 32) | (2 << 56),
            id_aa64pfr1: (1 << 24) | (2 << 8),
            id_aa64dfr0: 6 << 8,
            id_aa64mmfr1: 1 << 40,
            id_aa64mmfr3: 0x11,
            id_aa64isar2: 1 << 16,
            pmcr_n: 6,
        };
        let c = HostEl2Controls::for_host(&f, GicVersion::V3);
        assert_eq!(c.cptr & (CPTR_TZ | CPTR_TSM), 0);
        assert_ne!(c.hcr & hcr::ENSCXT, 0);
        assert_ne!(c.hcr & hcr::ATA, 0);
        assert_eq!(c.hcrx, Some(hcrx::MSCEN | hcrx::TCR2EN | hcrx::SCTLR2EN));
        assert_eq!(c.mdcr, 6 | mdcr::HPMD | mdcr::HCCD);
        assert_eq!(c.zcr, Some(0x1ff));
    }

    fn with_dfr0(id_aa64dfr0: u64) -> HostEl2Controls {
        HostEl2Controls::for_host(
            &CpuFeatures { id_aa64dfr0, pmcr_n: 6, ..CpuFeatures::default() },
            GicVersion::V3,
        )
    }

    /// MDCR_EL2 per PMU version (ID_AA64DFR0_EL1.PMUVer): every counter for EL1, and from
    /// PMUv3p1 on no event counting at EL2, from PMUv3p5 on no cycle counting there either.
    #[test]
    fn pmu_versions_decide_what_el2_hides_from_the_counters() {
        let cases = [
            (0x0, 0),
            (0x1, 6),
            (0x4, 6 | mdcr::HPMD),
            (0x5, 6 | mdcr::HPMD),
            (0x6, 6 | mdcr::HPMD | mdcr::HCCD),
            (0x7, 6 | mdcr::HPMD | mdcr::HCCD),
            (0x8, 6 | mdcr::HPMD | mdcr::HCCD),
            (0x9, 6 | mdcr::HPMD | mdcr::HCCD),
            // IMPLEMENTATION DEFINED PMU: not PMUv3, none of its controls.
            (0xf, 0),
        ];
        for (pmuver, want) in cases {
            let c = with_dfr0(pmuver << 8);
            assert_eq!(c.mdcr, want, "PMUVer {pmuver:#x}: MDCR_EL2 {:#x}", c.mdcr);
        }
    }

    /// SPE, self-hosted trace and BRBE: each EL2 control is programmed exactly where its
    /// feature exists, and never lets EL1 sample, trace or record EL2.
    #[test]
    fn profiling_and_trace_never_reach_el2() {
        const SPE: u64 = 1 << 32;
        const TRBE: u64 = 1 << 44;
        const TRF: u64 = 1 << 40;
        const BRBE: u64 = 1 << 52;
        for bits in 0..16u64 {
            let pick = |i: u64, v: u64| if bits & (1 << i) != 0 { v } else { 0 };
            let dfr0 = pick(0, SPE) | pick(1, TRBE) | pick(2, TRF) | pick(3, BRBE);
            let c = with_dfr0(dfr0);
            let what = format!("ID_AA64DFR0_EL1 {dfr0:#x}");
            assert_eq!(c.mdcr & mdcr::E2PB_EL1 != 0, dfr0 & SPE != 0, "{what}");
            assert_eq!(c.mdcr & mdcr::E2TB_EL1 != 0, dfr0 & TRBE != 0, "{what}");
            match c.pmscr {
                Some(v) => {
                    assert_ne!(dfr0 & SPE, 0, "{what}: PMSCR_EL2 without SPE");
                    assert_eq!(v & pmscr::E2SPE, 0, "{what}: EL2 sampled");
                    assert_eq!(v, pmscr::PA | pmscr::PCT_PHYSICAL, "{what}");
                }
                None => assert_eq!(dfr0 & SPE, 0, "{what}: SPE left as reset"),
            }
            match c.trfcr {
                Some(v) => {
                    assert_ne!(dfr0 & TRF, 0, "{what}: TRFCR_EL2 without FEAT_TRF");
                    assert_eq!(v & (trfcr::E2TRE | trfcr::CX), 0, "{what}: EL2 traced");
                }
                None => assert_eq!(dfr0 & TRF, 0, "{what}: trace filter left as reset"),
            }
            match c.brbcr {
                Some(v) => {
                    assert_ne!(dfr0 & BRBE, 0, "{what}: BRBCR_EL2 without BRBE");
                    assert_eq!(v & brbcr::E2BRE, 0, "{what}: EL2 branches recorded");
                    assert_eq!(v, brbcr::CC | brbcr::MPRED, "{what}");
                }
                None => assert_eq!(dfr0 & BRBE, 0, "{what}: BRBE left as reset"),
            }
        }
    }

    /// ICC_SRE_EL2 is written with a GICv3 only: on a GICv2 (QEMU `gic-version=2`, msm8916)
    /// it is UNDEFINED and the write would fault warden before the host ever ran.
    #[test]
    fn icc_sre_el2_only_with_a_gicv3() {
        let f = CpuFeatures::default();
        let v3 = HostEl2Controls::for_host(&f, GicVersion::V3);
        assert_eq!(v3.icc_sre_set, Some(icc_sre::SRE | icc_sre::ENABLE));
        let v2 = HostEl2Controls::for_host(&f, GicVersion::V2);
        assert_eq!(v2.icc_sre_set, None);
        // Nothing else depends on the GIC.
        assert_eq!(HostEl2Controls { icc_sre_set: None, ..v3 }, v2);
    }

    #[test]
    fn gicv3_sysregs_is_id_aa64pfr0_gic() {
        let with = |pfr0| CpuFeatures { id_aa64pfr0: pfr0, ..CpuFeatures::default() };
        assert!(!with(0).gicv3_sysregs());
        assert!(with(1 << 24).gicv3_sysregs());
        assert!(with(3 << 24).gicv3_sysregs());
        assert!(!with(!(0xf << 24)).gicv3_sysregs());
    }
}
