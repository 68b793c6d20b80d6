//! Links the peer with `linker/peer.ld` at `warden_abi::peer::PROGRAM_IPA` (BSS and stack at
//! `DATA_IPA`), with every dynamic
//! relocation applied at link time: warden copies the flat image to that IPA and enters it at
//! offset 0 with no loader in between.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let script = manifest_dir.join("../../../linker/peer.ld");
    let script = script.canonicalize().unwrap_or(script);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    // The peer is bare-metal only; a host build of the package must not get these.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let base = warden_abi::peer::PROGRAM_IPA;
    let size = warden_abi::peer::PROGRAM_SIZE;
    let data_base = warden_abi::peer::DATA_IPA;
    let data_size = warden_abi::peer::DATA_SIZE;
    for arg in [
        format!("--defsym=__peer_base={base:#x}"),
        format!("--defsym=__peer_size={size:#x}"),
        format!("--defsym=__peer_data_base={data_base:#x}"),
        format!("--defsym=__peer_data_size={data_size:#x}"),
        // Firmware is linked as a PIE (xtask's RUSTFLAGS); write the final value of every
        // R_AARCH64_RELATIVE into the image so it is correct at its link address as loaded.
        "--apply-dynamic-relocs".to_owned(),
        format!("-T{}", script.display()),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
