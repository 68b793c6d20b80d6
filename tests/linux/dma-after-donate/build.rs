//! Links the program as a static, non-PIE Linux executable at a normal user address. The target
//! (`aarch64-unknown-none-softfloat`) knows nothing about Linux; Linux only needs a valid ELF
//! with its entry point at `_start` (see `src/start.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Bare metal only: a host build of the package must not get these.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    for arg in [
        "--entry=_start",
        // Above Linux's mmap_min_addr, where a static executable is usually linked.
        "--image-base=0x400000",
        "-static",
        "--no-pie",
        "--build-id=none",
        // The initramfs carries it: no debug info or symbol table (a panic message names the
        // source line anyway).
        "--strip-all",
        "-znoexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
