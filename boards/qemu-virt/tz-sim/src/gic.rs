//! The GIC's secure initialisation: every interrupt is non-secure group 1, the non-secure side
//! may use it all, and (GICv3) the system-register interface is open to EL2 and EL1.

use core::arch::asm;
use core::fmt;

use tz_sim::layout::{GICC, GICD, GICR, GICR_FRAME_PAIR, MAX_CPUS};

const GICD_CTLR: u64 = 0x0;
const GICD_TYPER: u64 = 0x4;
const GICD_IGROUPR: u64 = 0x80;
const GICD_IGRPMODR: u64 = 0xd00;
/// GICv3 GICD_CTLR (secure view).
const CTLR_ENABLE_G1NS: u32 = 1 << 1;
const CTLR_ARE_S: u32 = 1 << 4;
const CTLR_ARE_NS: u32 = 1 << 5;
const CTLR_RWP: u32 = 1 << 31;
/// GICv2 GICD_CTLR (secure view).
const V2_CTLR_ENABLE_G0: u32 = 1 << 0;
const V2_CTLR_ENABLE_G1: u32 = 1 << 1;
const GICR_TYPER: u64 = 0x8;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER: u64 = 0x14;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const SGI_BASE: u64 = 0x1_0000;
const GICC_PMR: u64 = 0x4;
/// Bounded waits for the GIC's own progress bits.
const POLLS: u32 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == Version::V3 { "GICv3" } else { "GICv2" })
    }
}

impl Version {
    /// QEMU's CPUs have the GICv3 system registers exactly with a GICv3
    /// (ID_AA64PFR0_EL1.GIC).
    pub fn of_this_cpu() -> Self {
        let pfr0: u64;
        // SAFETY: reading an ID register has no side effects.
        unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
        if (pfr0 >> 24) & 0xf != 0 { Version::V3 } else { Version::V2 }
    }
}

fn read32(pa: u64) -> u32 {
    // SAFETY: callers pass registers of the GIC's frames (device memory, MMU off).
    unsafe { core::ptr::read_volatile(pa as *const u32) }
}
fn write32(pa: u64, v: u32) {
    // SAFETY: as for read32.
    unsafe { core::ptr::write_volatile(pa as *mut u32, v) }
}
fn read64(pa: u64) -> u64 {
    // SAFETY: as for read32 (8-byte aligned registers).
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

fn wait_while(what: &str, mut busy: impl FnMut() -> bool) {
    for _ in 0..POLLS {
        if !busy() {
            return;
        }
    }
    crate::uart::print(format_args!("tz-sim: GIC: {what} did not complete\n"));
}

/// SPI groups: every SPI non-secure group 1; the distributor forwards both groups.
pub fn init_distributor(v: Version) {
    let lines = ((read32(GICD + GICD_TYPER) & 0x1f) + 1) as u64; // 32 INTIDs each
    match v {
        Version::V3 => {
            write32(GICD + GICD_CTLR, 0);
            wait_while("GICD_CTLR.RWP", || read32(GICD + GICD_CTLR) & CTLR_RWP != 0);
            write32(GICD + GICD_CTLR, CTLR_ARE_S | CTLR_ARE_NS);
            wait_while("GICD_CTLR.RWP", || read32(GICD + GICD_CTLR) & CTLR_RWP != 0);
            for n in 1..lines {
                write32(GICD + GICD_IGROUPR + 4 * n, u32::MAX);
                write32(GICD + GICD_IGRPMODR + 4 * n, 0);
            }
            write32(GICD + GICD_CTLR, CTLR_ARE_S | CTLR_ARE_NS | CTLR_ENABLE_G1NS);
            wait_while("GICD_CTLR.RWP", || read32(GICD + GICD_CTLR) & CTLR_RWP != 0);
        }
        Version::V2 => {
            for n in 1..lines {
                write32(GICD + GICD_IGROUPR + 4 * n, u32::MAX);
            }
            write32(GICD + GICD_CTLR, V2_CTLR_ENABLE_G0 | V2_CTLR_ENABLE_G1);
        }
    }
}

/// Every CPU the GIC serves, by MPIDR affinity: each redistributor's GICR_TYPER (GICv3), or
/// GICD_TYPER.CPUNumber CPUs numbered from 0 (GICv2, whose CPUs are one cluster on QEMU).
pub fn for_each_cpu(v: Version, mut f: impl FnMut(u64)) {
    match v {
        Version::V3 => {
            for i in 0..MAX_CPUS as u64 * 2 {
                let typer = read64(GICR + i * GICR_FRAME_PAIR + GICR_TYPER);
                let aff = typer >> 32;
                f((aff & 0xff_ffff) | ((aff >> 24) << 32));
                if typer & GICR_TYPER_LAST != 0 {
                    return;
                }
            }
        }
        Version::V2 => {
            let cpus = ((read32(GICD + GICD_TYPER) >> 5) & 0x7) + 1;
            (0..u64::from(cpus)).for_each(f);
        }
    }
}

/// This CPU's part: its SGIs and PPIs non-secure group 1; GICv3: its redistributor awake and
/// the system registers usable at EL2 and EL1 (ICC_SRE_EL3.{SRE, DFB, DIB, Enable}).
pub fn init_this_cpu(v: Version) {
    match v {
        Version::V3 => {
            // SAFETY: ICC_SRE_EL3 exists with a GICv3 CPU interface (checked by the caller's
            // `Version`); ISB makes the system registers usable before they are used.
            unsafe { asm!("msr S3_6_C12_C12_5, {}", "isb", in(reg) 0xfu64, options(nostack)) };
            let me = crate::cpu::mpidr();
            let mut rd = None;
            for i in 0..MAX_CPUS as u64 * 2 {
                let base = GICR + i * GICR_FRAME_PAIR;
                let typer = read64(base + GICR_TYPER);
                let aff = typer >> 32;
                if (aff & 0xff_ffff) | ((aff >> 24) << 32) == me {
                    rd = Some(base);
                    break;
                }
                if typer & GICR_TYPER_LAST != 0 {
                    break;
                }
            }
            let Some(rd) = rd else {
                crate::uart::print(format_args!("tz-sim: GIC: no redistributor for CPU {me:#x}\n"));
                return;
            };
            let waker = read32(rd + GICR_WAKER);
            write32(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
            wait_while("GICR_WAKER.ChildrenAsleep", || {
                read32(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0
            });
            write32(rd + SGI_BASE + GICD_IGROUPR, u32::MAX);
            write32(rd + SGI_BASE + GICD_IGRPMODR, 0);
        }
        Version::V2 => {
            // IGROUPR0 is banked per CPU: this CPU's SGIs and PPIs.
            write32(GICD + GICD_IGROUPR, u32::MAX);
            // Group 1 priorities are visible to the non-secure side from the lowest up.
            write32(GICC + GICC_PMR, 0xff);
        }
    }
}
