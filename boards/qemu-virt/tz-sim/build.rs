//! Links the two firmware binaries at fixed addresses with every relocation applied at link
//! time (nothing relocates them at run time): `tz-sim` at 0 (QEMU's `-bios` flash) with its
//! BSS and stacks in the secure SRAM, `tz-probe` at the hyp image's address.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let linker = dir.join("../../../linker");
    let linker = linker.canonicalize().unwrap_or(linker);
    println!("cargo:rerun-if-changed=build.rs");
    for script in ["tz-sim.ld", "tz-probe.ld"] {
        println!("cargo:rerun-if-changed={}", linker.join(script).display());
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    for (bin, script) in [("tz-sim", "tz-sim.ld"), ("tz-probe", "tz-probe.ld")] {
        println!("cargo:rustc-link-arg-bin={bin}=--apply-dynamic-relocs");
        println!("cargo:rustc-link-arg-bin={bin}=-T{}", linker.join(script).display());
    }
}
