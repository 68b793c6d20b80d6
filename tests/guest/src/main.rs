//! warden's test guest: a `no_std` EL1 program that plays the host in QEMU scenarios.
//!
//! It is an arm64 Linux `Image` (see `entry`), entered per the Linux boot protocol with the DT
//! in x0. It reads the console, CPUs, PSCI conduit and warden's reserved memory from the DT,
//! runs each scenario, prints `ok NAME` / `FAILED NAME: reason`, then
//! `guest: N passed, M failed` and `guest: done`, and ends the run with PSCI SYSTEM_OFF.
//!
//! The MMU stays off throughout (no page tables to get wrong): data accesses are then
//! Device-nGnRnE, hence `+strict-align`, and no atomic read-modify-write (see `shared`).
#![no_std]
#![no_main]
#![allow(
    clippy::result_large_err,
    reason = "a failure carries its message in a fixed buffer: there is no heap to box it in"
)]

mod bench;
mod console;
mod cpu;
mod devicetree;
mod edu;
mod entry;
mod exceptions;
mod gic_hostile;
mod handoff;
mod handoff_scenarios;
mod handoff_stress;
mod mmu500;
mod mmu500_scenarios;
mod pci;
mod peer_scenarios;
mod platform;
mod report;
mod scenarios;
mod scm_scenarios;
mod secondary;
mod shared;
mod smccc;
mod vsmmu;
mod vsmmu_donate;
mod vsmmu_hostile;
mod vsmmu_scenarios;
mod vsmmu_shadow;

use console::println;
use platform::Platform;
use report::{fail, record};

/// Where QEMU virt puts the DT (`-dtb`, or its own) when it boots firmware (`-bios`): the base
/// of RAM.
const QEMU_BIOS_DT: u64 = 0x4000_0000;

/// Rust entry of the primary CPU (from `entry`, relocated, BSS zeroed, on stack slot 0).
extern "C" fn primary_main(dt_address: u64, unsupported_relocations: u64, load_address: u64) -> ! {
    // Entered with no DT: the next stage of the chain (tz-sim → warden's hyp entry → here),
    // where the DT is the one QEMU puts at the base of RAM for a `-bios` boot, as U-Boot finds
    // it. The guest then runs the scenarios that apply to a warden that did not patch its DT.
    let chain = dt_address == 0;
    let dt_address = if chain { QEMU_BIOS_DT } else { dt_address };
    let platform = match Platform::from_dt(dt_address) {
        Ok(platform) => platform,
        // No DT, no console: nothing can be printed. Power off; the harness sees no result.
        Err(_) => smccc::system_off(),
    };
    if let Ok(conduit) = platform.psci {
        smccc::set_psci_conduit(conduit);
    }
    if let Ok(carveouts) = &platform.carveouts {
        handoff::set_board_carveouts(carveouts);
    }
    println!(
        "guest: warden test guest at {load_address:#x}, EL{}, DT at {dt_address:#x}",
        cpu::current_el()
    );
    if unsupported_relocations != 0 {
        record(
            "image_relocations",
            (|| fail!("{unsupported_relocations} relocations other than R_AARCH64_RELATIVE"))(),
        );
    }
    let at_el1 = scenarios::runs_at_el1();
    let continue_run = at_el1.is_ok();
    record("runs_at_el1", at_el1);
    // At any other EL the other scenarios would test the wrong thing (and the vectors would
    // not catch anything): stop here.
    if continue_run && chain {
        scenarios::run_chain(&platform);
    } else if continue_run {
        match platform.bench {
            Some(mode) => bench::run_all(&platform, mode),
            None if platform.handoff_only => scenarios::run_handoff(&platform),
            None if platform.platform_checks => scenarios::run_platform(&platform),
            None if platform.mmu500.is_some() => scenarios::run_snapdragon(&platform),
            None => match platform.stress {
                Some(cycles) => scenarios::run_stress(&platform, cycles),
                None => scenarios::run_all(&platform),
            },
        }
    }
    report::finish();
    smccc::system_off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => report::fatal(
            "guest_panic",
            format_args!("{}:{}: {}", location.file(), location.line(), info.message()),
        ),
        None => report::fatal("guest_panic", format_args!("{}", info.message())),
    }
}
