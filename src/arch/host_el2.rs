//! The EL2 controls that shape the host's EL1 environment, computed from the CPU's ID registers.
//!
//! warden is not a VM monitor: the host should find EL1 as if firmware had dropped it there
//! directly, with everything usable except what warden mediates (SMC, stage 2). The choices
//! follow what Linux's own `init_el2_state` does before it drops from EL2 to EL1 (nVHE).

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

fn field(reg: u64, shift: u32) -> u64 {
    (reg >> shift) & 0xf
}

impl CpuFeatures {
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
    pub zcr: Option<u64>,
    pub smcr: Option<u64>,
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
    pub fn for_host(f: &CpuFeatures) -> Self {
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
        // buffers owned by EL1 (E2PB/E2TB = 0b11) where present.
        let mut mdcr = if f.pmu() { f.pmcr_n & 0x1f } else { 0 };
        if f.spe() {
            mdcr |= 0b11 << 12;
        }
        if f.trbe() {
            mdcr |= 0b11 << 24;
        }
        // Largest vector lengths the hardware allows (LEN saturates); SME: FA64 and ZT0 too.
        let zcr = f.sve().then_some(0x1ff);
        let smcr = f.sme().then_some((1 << 31) | (1 << 30) | 0x1ff);
        Self { hcr, hcrx, cptr, cnthctl, mdcr, zcr, smcr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_cpu_gets_stage2_tsc_and_no_fp_traps() {
        let c = HostEl2Controls::for_host(&CpuFeatures::default());
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
        let c = HostEl2Controls::for_host(&f);
        assert_eq!(c.cptr & (CPTR_TZ | CPTR_TSM), 0);
        assert_ne!(c.hcr & hcr::ENSCXT, 0);
        assert_ne!(c.hcr & hcr::ATA, 0);
        assert_eq!(c.hcrx, Some(hcrx::MSCEN | hcrx::TCR2EN | hcrx::SCTLR2EN));
        assert_eq!(c.mdcr, 6);
        assert_eq!(c.zcr, Some(0x1ff));
    }
}
