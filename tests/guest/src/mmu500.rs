//! A minimal driver for the MMU-500 the guest sees on the Snapdragon persona (warden's virtual
//! MMU-500, SMMU architecture version 2): stream matching (SMR/S2CR), a stage-1 context bank
//! over the page tables of [`crate::vsmmu::Stage1Pool`], TLBIASID/TLBSYNC, the bank's fault
//! registers. Register offsets and fields per Arm IHI 0062 (the guest's own copy, as the guest
//! must not share code with what it tests).

use crate::cpu;
use crate::report::Reason;

const SCR0: u64 = 0x000;
const SGFSR: u64 = 0x048;
const SGFSYNR1: u64 = 0x054;
const SIDR0: u64 = 0x020;
const SMR: u64 = 0x800;
const S2CR: u64 = 0xc00;
const STLBGSYNC: u64 = 0x070;
const STLBGSTATUS: u64 = 0x074;
/// Global space 1 (page 1).
const CBAR: u64 = 0x1000;
const CBA2R: u64 = 0x1800;
/// Context bank `n` at 64 KiB + n * 4 KiB (16 global pages of 4 KiB).
const CB_BASE: u64 = 0x1_0000;
const CB_SCTLR: u64 = 0x000;
const CB_TCR2: u64 = 0x010;
const CB_TTBR0: u64 = 0x020;
const CB_TCR: u64 = 0x030;
const CB_MAIR0: u64 = 0x038;
const CB_FSR: u64 = 0x058;
const CB_FAR: u64 = 0x060;
const CB_FSYNR0: u64 = 0x068;
const CB_TLBIASID: u64 = 0x610;
const CB_TLBSYNC: u64 = 0x7f0;
const CB_TLBSTATUS: u64 = 0x7f4;

/// sCR0: GFRE | GFIE | GCFGFRE | GCFGFIE | USFCFG (unmatched streams fault), client port on.
pub const SCR0_ON: u32 = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 10);
const SIDR0_S1TS: u32 = 1 << 30;
const SMR_VALID: u32 = 1 << 31;
pub const S2CR_TRANSLATE: u32 = 0;
pub const S2CR_BYPASS: u32 = 1 << 16;
/// CBAR type "stage 1, stage 2 bypass".
const CBAR_S1: u32 = 1 << 16;
const CBA2R_VA64: u32 = 1;
/// TCR2: PASIZE 40 bits, AS (16-bit ASIDs).
const TCR2: u32 = 2 | (1 << 4);
/// TCR: T0SZ 25 (39-bit IOVAs, the pool's tables), IRGN0/ORGN0 write-back, SH0 inner, EPD1.
const TCR: u32 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23);
/// MAIR attribute 0: normal write-back (the pool's descriptors use AttrIndx 0).
const MAIR0: u32 = 0xff;
/// SCTLR: M, CFRE, CFIE, ASIDPNE.
const SCTLR_ON: u32 = 1 | (1 << 5) | (1 << 6) | (1 << 12);
const FSR_ALL: u32 = 0xc000_01fe;
/// warden's test-only G3 switch, as on the SMMUv3 face (docs/smmu-500.md).
const TEST_G3_SWITCH: u64 = 0xe00;
const TEST_G3_KEY: u32 = 0x4733_0000;
const TIMEOUT_MS: u64 = 1000;

/// The virtual MMU-500 at `base`.
pub struct Mmu500 {
    base: u64,
}

impl Mmu500 {
    /// Turns fault reporting and translation on (unmatched streams fault), after checking the
    /// SMMU offers stage 1.
    pub fn enable(base: u64) -> Result<Self, Reason> {
        let smmu = Mmu500 { base };
        if smmu.read(SIDR0) & SIDR0_S1TS == 0 {
            return Err(Reason::new(format_args!("sIDR0 {:#x}: no stage 1", smmu.read(SIDR0))));
        }
        smmu.write(SCR0, SCR0_ON);
        Ok(smmu)
    }

    fn read(&self, offset: u64) -> u32 {
        // SAFETY: the register window is device memory the guest's DT gives it (its MMU is
        // off); warden traps the access.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    fn write(&self, offset: u64, value: u32) {
        // SAFETY: as in `read`.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }

    fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as in `read`; TTBR0 is a 64-bit register.
        unsafe { ((self.base + offset) as *mut u64).write_volatile(value) }
    }

    fn cb(n: u32, offset: u64) -> u64 {
        CB_BASE + u64::from(n) * 0x1000 + offset
    }

    /// Stream-match group `group` sends stream `sid` to `s2cr` (S2CR first, then the SMR, as
    /// Linux's `arm_smmu_write_sme` does).
    pub fn map_stream(&self, group: u32, sid: u32, s2cr: u32) {
        self.write(S2CR + 4 * u64::from(group), s2cr);
        self.write(SMR + 4 * u64::from(group), SMR_VALID | (sid & 0x7fff));
    }

    /// Group `group` invalid, its S2CR back to bypass.
    pub fn unmap_stream(&self, group: u32) {
        self.write(SMR + 4 * u64::from(group), 0);
        self.write(S2CR + 4 * u64::from(group), S2CR_BYPASS);
    }

    /// Context bank `n` as a stage-1 AArch64 context with `asid` over `root` (Linux's
    /// `arm_smmu_write_context_bank` order: SCTLR last).
    pub fn write_bank(&self, n: u32, asid: u16, root: u64) {
        self.write(CBA2R + 4 * u64::from(n), CBA2R_VA64);
        self.write(CBAR + 4 * u64::from(n), CBAR_S1);
        self.write(Self::cb(n, CB_TCR2), TCR2);
        self.write(Self::cb(n, CB_TCR), TCR);
        self.write64(Self::cb(n, CB_TTBR0), root | (u64::from(asid) << 48));
        self.write(Self::cb(n, CB_MAIR0), MAIR0);
        self.write(Self::cb(n, CB_FSR), FSR_ALL);
        self.write(Self::cb(n, CB_SCTLR), SCTLR_ON);
    }

    /// Context bank `n` off (SCTLR = 0, as Linux's domain teardown).
    pub fn disable_bank(&self, n: u32) {
        self.write(Self::cb(n, CB_SCTLR), 0);
    }

    pub fn tlbi_asid(&self, n: u32, asid: u16) {
        self.write(Self::cb(n, CB_TLBIASID), u32::from(asid));
    }

    /// TLBSYNC through bank `n`, polled to completion.
    pub fn tlb_sync(&self, n: u32) -> Result<(), Reason> {
        self.write(Self::cb(n, CB_TLBSYNC), 0xffff_ffff);
        self.poll(Self::cb(n, CB_TLBSTATUS), "TLBSTATUS.SACTIVE")
    }

    /// TLBGSYNC, polled to completion.
    pub fn tlb_global_sync(&self) -> Result<(), Reason> {
        self.write(STLBGSYNC, 0xffff_ffff);
        self.poll(STLBGSTATUS, "sTLBGSTATUS.GSACTIVE")
    }

    fn poll(&self, offset: u64, what: &str) -> Result<(), Reason> {
        if cpu::wait_until(TIMEOUT_MS, || self.read(offset) & 1 == 0) {
            Ok(())
        } else {
            Err(Reason::new(format_args!("{what} still set after {TIMEOUT_MS} ms")))
        }
    }

    pub fn scr0(&self) -> u32 {
        self.read(SCR0)
    }

    pub fn write_scr0(&self, value: u32) {
        self.write(SCR0, value);
    }

    /// sGFSR and sGFSYNR1 (the faulting stream).
    pub fn global_fault(&self) -> (u32, u32) {
        (self.read(SGFSR), self.read(SGFSYNR1))
    }

    pub fn clear_global_fault(&self) {
        self.write(SGFSR, 0x8000_01ff);
    }

    /// FAR of bank `n` (two 32-bit halves).
    pub fn far(&self, n: u32) -> u64 {
        u64::from(self.read(Self::cb(n, CB_FAR)))
            | (u64::from(self.read(Self::cb(n, CB_FAR + 4))) << 32)
    }

    pub fn fsynr0(&self, n: u32) -> u32 {
        self.read(Self::cb(n, CB_FSYNR0))
    }

    /// Waits for bank `n` to record a fault; its FSR.
    pub fn wait_fault(&self, n: u32) -> Result<u32, Reason> {
        if cpu::wait_until(TIMEOUT_MS, || self.fsr(n) != 0) {
            Ok(self.fsr(n))
        } else {
            Err(Reason::new(format_args!("bank {n} recorded no fault in {TIMEOUT_MS} ms")))
        }
    }

    /// Waits for a global fault; (sGFSR, sGFSYNR1).
    pub fn wait_global_fault(&self) -> Result<(u32, u32), Reason> {
        if cpu::wait_until(TIMEOUT_MS, || self.read(SGFSR) != 0) {
            Ok(self.global_fault())
        } else {
            Err(Reason::new(format_args!("no global fault in {TIMEOUT_MS} ms")))
        }
    }

    pub fn fsr(&self, n: u32) -> u32 {
        self.read(Self::cb(n, CB_FSR))
    }

    pub fn clear_fsr(&self, n: u32) {
        self.write(Self::cb(n, CB_FSR), FSR_ALL);
    }

    /// The test-only G3 switch: `Err` if warden has none (a build without `test-switches`).
    pub fn set_g3(&self, on: bool) -> Result<(), Reason> {
        self.write(TEST_G3_SWITCH, TEST_G3_KEY | u32::from(on));
        let now = self.read(TEST_G3_SWITCH);
        if now != TEST_G3_KEY | u32::from(on) {
            return Err(Reason::new(format_args!(
                "G3 switch reads {now:#x} after writing {:#x} (warden without test-switches?)",
                TEST_G3_KEY | u32::from(on)
            )));
        }
        Ok(())
    }
}
