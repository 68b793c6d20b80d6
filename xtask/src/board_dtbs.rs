//! The Snapdragon boards' DTs (`boards/{qcs6490-rb3gen2,qrb5165-rb5,apq8016-sbc}`), taken from
//! the Debian arm64 kernel package xtask already pins for the Linux host
//! ([`crate::linux::KERNEL_6_12`], which ships `/usr/lib/linux-image-*/qcom/*.dtb`), each
//! checked against its own sha256 and copied to `target/warden/board-dtbs/`, where warden's
//! board unit tests read them (`src/boards/tests.rs`). `cargo xtask test` provides them and
//! makes those tests require them (`WARDEN_REQUIRE_BOARD_DTBS`).

use crate::linux::{self, Series, sha256_hex};
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// One board DT: the board's name (= the file's stem) and its pinned sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardDtb {
    pub board: &'static str,
    pub sha256: &'static str,
}

/// The DTs of Linux 6.12.95 (`KERNEL_6_12`'s package), `qcom/<board>.dtb`.
pub const BOARD_DTBS: [BoardDtb; 3] = [
    BoardDtb {
        board: "qcs6490-rb3gen2",
        sha256: "9f6e8166635fc088c4b5c745cdaffc85c54b32fee5e1306d8fb0b9e669e2e657",
    },
    BoardDtb {
        board: "qrb5165-rb5",
        sha256: "2947d2dd42e43513d37cd7968e0e08e6677865f13ca6e92f32e8658db99b954b",
    },
    BoardDtb {
        board: "apq8016-sbc",
        sha256: "72731b7698985f7ebc70ae8d6af35fdd2c452df9476f24bb7ba13382c733544b",
    },
];

/// Where the DTs go (what the unit tests read without `WARDEN_BOARD_DTBS`).
pub fn output_dir() -> PathBuf {
    crate::firmware::output_dir().join("board-dtbs")
}

/// `qcom/` of an extracted kernel package: `usr/lib/linux-image-<release>/qcom`.
fn qcom_dir(package_root: &Path) -> Result<PathBuf> {
    let lib = package_root.join("usr/lib");
    let dir = std::fs::read_dir(&lib)
        .with_context(|| format!("{} has no usr/lib/", package_root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-")))
        .with_context(|| format!("no usr/lib/linux-image-* in {}", package_root.display()))?;
    Ok(dir.join("qcom"))
}

/// Copies each pinned DT from `qcom` into `out`, after checking its sha256.
pub fn copy_checked(qcom: &Path, out: &Path, dtbs: &[BoardDtb]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for dtb in dtbs {
        let src = qcom.join(format!("{}.dtb", dtb.board));
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let actual = sha256_hex(&bytes);
        ensure!(
            actual == dtb.sha256,
            "sha256 mismatch for {}: expected {} (pinned in xtask/src/board_dtbs.rs), got {actual}. \
             It was not used; if the kernel package changed, check the DT and update the pin.",
            src.display(),
            dtb.sha256
        );
        let dest = out.join(format!("{}.dtb", dtb.board));
        std::fs::write(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
        written.push(dest);
    }
    Ok(written)
}

/// Gets the pinned kernel package (cached or downloaded) and writes the board DTs to
/// [`output_dir`]. Returns that directory.
pub fn provide() -> Result<PathBuf> {
    let kernel = linux::debian_kernel(Series::V6_12)?;
    let root = kernel
        .image
        .parent()
        .and_then(Path::parent)
        .context("the kernel image is not in <package>/boot/")?;
    let out = output_dir();
    copy_checked(&qcom_dir(root)?, &out, &BOARD_DTBS)?;
    eprintln!("xtask: board DTs from {} {} in {}", kernel.package, kernel.version, out.display());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warden-board-dtbs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pins_are_sha256_and_name_the_boards() {
        for dtb in BOARD_DTBS {
            assert_eq!(dtb.sha256.len(), 64);
            assert!(dtb.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            let board = crate::firmware::repo_root().join("boards").join(dtb.board);
            assert!(board.join("board.rs").is_file(), "{}", board.display());
        }
    }

    #[test]
    fn copies_only_what_matches_its_pin() {
        let qcom = scratch("src");
        let out = scratch("out");
        std::fs::write(qcom.join("good.dtb"), b"abc").unwrap();
        let good = BoardDtb {
            board: "good",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        };
        let written = copy_checked(&qcom, &out, &[good]).unwrap();
        assert_eq!(std::fs::read(&written[0]).unwrap(), b"abc");
        let bad = BoardDtb { board: "good", sha256: "0".repeat(64).leak() };
        std::fs::remove_file(out.join("good.dtb")).unwrap();
        let err = copy_checked(&qcom, &out, &[bad]).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch") && err.contains("got ba7816bf"), "{err}");
        assert!(!out.join("good.dtb").exists(), "a mismatching DT is not written");
        let _ = std::fs::remove_dir_all(&qcom);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn finds_the_qcom_dir_of_a_package() {
        let root = scratch("pkg");
        std::fs::create_dir_all(root.join("usr/lib/linux-image-6.12.95+deb12-arm64/qcom")).unwrap();
        assert_eq!(
            qcom_dir(&root).unwrap(),
            root.join("usr/lib/linux-image-6.12.95+deb12-arm64/qcom")
        );
        assert!(qcom_dir(&root.join("nothing")).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
