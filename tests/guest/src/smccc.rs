//! SMCCC calls (HVC or SMC) and the PSCI calls built on them.

use core::arch::asm;
use core::fmt;

use warden_abi::psci;

use crate::console::println;
use crate::cpu;
use crate::exceptions;
use crate::shared::SharedU64;

/// How a call reaches its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

impl fmt::Display for Conduit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conduit::Hvc => "HVC",
            Conduit::Smc => "SMC",
        })
    }
}

/// Issues `HVC #0` or `SMC #0` with `function_id` in w0 and `args` in x1..x3; returns x0..x3.
/// SMCCC lets the callee clobber x4..x17 as well.
pub fn call(conduit: Conduit, function_id: u32, args: [u64; 3]) -> [u64; 4] {
    let (mut x0, mut x1, mut x2, mut x3) = (u64::from(function_id), args[0], args[1], args[2]);
    match conduit {
        // SAFETY: an SMCCC call changes no memory of ours and returns to the next instruction
        // (or, if nothing implements it, raises an exception that `exceptions` handles); all
        // registers the callee may change are declared.
        Conduit::Hvc => unsafe {
            asm!("hvc #0",
                inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _)
        },
        // SAFETY: as for HVC.
        Conduit::Smc => unsafe {
            asm!("smc #0",
                inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _)
        },
    }
    [x0, x1, x2, x3]
}

/// Issues `HVC #0` or `SMC #0` with `regs` in x0..x7 (the function ID in w0); returns x0..x7
/// as the callee left them (SMCCC v1.2 register use, which warden's own calls follow).
/// x8..x17 may be clobbered too.
pub fn call_regs(conduit: Conduit, regs: [u64; 8]) -> [u64; 8] {
    let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7] = regs;
    match conduit {
        // SAFETY: as for `call`: no memory of ours changes, control returns to the next
        // instruction (or an exception that `exceptions` handles), every register the callee
        // may change is declared.
        Conduit::Hvc => unsafe {
            asm!("hvc #0",
                inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                inout("x4") x4, inout("x5") x5, inout("x6") x6, inout("x7") x7,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _)
        },
        // SAFETY: as for HVC.
        Conduit::Smc => unsafe {
            asm!("smc #0",
                inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                inout("x4") x4, inout("x5") x5, inout("x6") x6, inout("x7") x7,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _)
        },
    }
    [x0, x1, x2, x3, x4, x5, x6, x7]
}

/// PSCI conduit from the DT, for code that has no `Platform` (secondaries, power-off):
/// 0 = unknown, 1 = HVC, 2 = SMC. Written by the primary before any secondary starts.
static PSCI_CONDUIT: SharedU64 = SharedU64::new(0);

pub fn set_psci_conduit(conduit: Conduit) {
    PSCI_CONDUIT.store(match conduit {
        Conduit::Hvc => 1,
        Conduit::Smc => 2,
    });
}

pub fn psci_conduit() -> Option<Conduit> {
    match PSCI_CONDUIT.load() {
        1 => Some(Conduit::Hvc),
        2 => Some(Conduit::Smc),
        _ => None,
    }
}

/// A PSCI call: x0 as the signed status/result PSCI defines.
pub fn psci_call(conduit: Conduit, function_id: u32, args: [u64; 3]) -> i64 {
    call(conduit, function_id, args)[0] as i64
}

pub fn psci_version(conduit: Conduit) -> i64 {
    psci_call(conduit, psci::PSCI_VERSION, [0; 3])
}

pub fn cpu_on(conduit: Conduit, target_mpidr: u64, entry: u64, context_id: u64) -> i64 {
    psci_call(conduit, psci::CPU_ON_64, [target_mpidr, entry, context_id])
}

/// Returns only on failure (the PSCI error).
pub fn cpu_off(conduit: Conduit) -> i64 {
    psci_call(conduit, psci::CPU_OFF, [0; 3])
}

/// AFFINITY_INFO at level 0 for one CPU.
pub fn affinity_info(conduit: Conduit, target_mpidr: u64) -> i64 {
    psci_call(conduit, psci::AFFINITY_INFO_64, [target_mpidr, 0, 0])
}

/// PSCI SYSTEM_OFF, which ends QEMU. Without a known conduit: at EL1 try HVC then SMC (each
/// guarded, so an UNDEFINED one is caught); at EL2 only SMC is meaningful.
pub fn system_off() -> ! {
    match psci_conduit() {
        Some(conduit) => {
            call(conduit, psci::SYSTEM_OFF, [0; 3]);
        }
        None if cpu::current_el() == 1 => {
            let _ = exceptions::catch(|| call(Conduit::Hvc, psci::SYSTEM_OFF, [0; 3]));
            let _ = exceptions::catch(|| call(Conduit::Smc, psci::SYSTEM_OFF, [0; 3]));
        }
        None => {
            call(Conduit::Smc, psci::SYSTEM_OFF, [0; 3]);
        }
    }
    println!("guest: PSCI SYSTEM_OFF returned; parking this CPU");
    cpu::park()
}
