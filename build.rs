//! Passes warden's linker script, with the board's layout numbers, when the firmware binary is
//! built, and checks that the simulated peer image it embeds (qemu-virt) is named.

// The per-board layout table the boot uses too (`crate::mm::link_layout`).
include!("src/mm/link_layout.rs");

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker/warden.ld");
    println!("cargo:rerun-if-changed=src/mm/link_layout.rs");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{manifest}/linker/warden.ld");
        if let Some(layout) = board_layout() {
            // The linker script's pool minimum and image-end alignment (linker/warden.ld).
            println!("cargo:rustc-link-arg-bins=--defsym=WARDEN_POOL_MIN={}", layout.pool_min);
            println!("cargo:rustc-link-arg-bins=--defsym=WARDEN_END_ALIGN={}", layout.end_align);
        }
    }
    sim_peer();
    hyp_dt();
    packed_entry();
}

/// `warden_packed`: the board starts an image packed behind warden: a Linux Image entered with
/// warden's payload (qemu-virt), or the next stage chainloaded after the Gunyah exit (RB3 Gen 2,
/// `cargo xtask image --next`); so the firmware carries the payload, the layout planner and the
/// host DT writer. `crate::boot` asserts that this agrees with the board's entry convention.
fn packed_entry() {
    println!("cargo:rustc-check-cfg=cfg(warden_packed)");
    if std::env::var_os("CARGO_FEATURE_BOARD_QEMU_VIRT").is_some()
        || std::env::var_os("CARGO_FEATURE_BOARD_QCS6490_RB3GEN2").is_some()
    {
        println!("cargo:rustc-cfg=warden_packed");
    }
}

/// The layout of the board the `board-*` feature picks (none without one: the crate then does
/// not build for a target anyway, `crate::boards::CURRENT` being undefined).
fn board_layout() -> Option<LinkLayout> {
    LINK_LAYOUTS.iter().copied().find(|layout| {
        let feature =
            format!("CARGO_FEATURE_BOARD_{}", layout.board.replace('-', "_").to_uppercase());
        std::env::var_os(feature).is_some()
    })
}

/// `boards/qemu-virt-tz/linked_dt.rs` links the DT `WARDEN_HYP_DT` names (the OS's DT for the
/// chain, which `cargo xtask build` writes before building warden for that board).
fn hyp_dt() {
    const VAR: &str = "WARDEN_HYP_DT";
    println!("cargo:rerun-if-env-changed={VAR}");
    let links = std::env::var_os("CARGO_FEATURE_FIRMWARE").is_some()
        && [
            "CARGO_FEATURE_BOARD_QEMU_VIRT_TZ",
            "CARGO_FEATURE_BOARD_QCS6490_RB3GEN2",
            "CARGO_FEATURE_BOARD_QRB5165_RB5",
            "CARGO_FEATURE_BOARD_APQ8016_SBC",
        ]
        .iter()
        .any(|feature| std::env::var_os(feature).is_some());
    // `boards::linked_dt` includes the blob under this cfg.
    println!("cargo:rustc-check-cfg=cfg(warden_links_dt)");
    if links {
        println!("cargo:rustc-cfg=warden_links_dt");
    }
    match std::env::var_os(VAR) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if links && !path.is_file() {
                panic!(
                    "{VAR}={} is not a file: build with `cargo xtask build`, which writes the \
                     chain's DT (target/warden/qemu-virt-tz.dtb) first",
                    path.display()
                );
            }
            println!("cargo:rerun-if-changed={}", path.display());
        }
        None if links => panic!(
            "{VAR} is not set: warden for a boot-stage board links the OS's DT; build it with \
             `cargo xtask build` (qemu-virt-tz) or `cargo xtask image --board NAME` (a \
             Snapdragon board), which name that DT in {VAR}"
        ),
        None => {}
    }
}

/// `boards/qemu-virt/sim_peer.rs` embeds the file `WARDEN_SIM_PEER` names: rebuild when the
/// variable or the file changes, and explain a missing variable instead of leaving it to
/// `env!`.
fn sim_peer() {
    const VAR: &str = "WARDEN_SIM_PEER";
    println!("cargo:rerun-if-env-changed={VAR}");
    let embeds = std::env::var_os("CARGO_FEATURE_FIRMWARE").is_some()
        && std::env::var_os("CARGO_FEATURE_BOARD_QEMU_VIRT").is_some();
    match std::env::var_os(VAR) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if embeds && !path.is_file() {
                panic!(
                    "{VAR}={} is not a file: build the firmware with `cargo xtask build`, which \
                     builds the simulated peer (boards/qemu-virt/peer) first",
                    path.display()
                );
            }
            println!("cargo:rerun-if-changed={}", path.display());
        }
        None if embeds => panic!(
            "{VAR} is not set: warden's firmware (feature `firmware`, board qemu-virt) embeds the \
             simulated peer program; build it with `cargo xtask build`, which builds the peer \
             and sets {VAR}"
        ),
        None => {}
    }
}
