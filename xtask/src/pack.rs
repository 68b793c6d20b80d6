//! Packing warden and a host payload into one bootable image (format: `warden::payload`,
//! documented in `docs/image-format.md`).

use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use warden::payload::{
    Arm64ImageHeader, DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, IMAGE_SIZE_OFFSET, PayloadDescriptor,
    PayloadError,
};

/// Alignment of every payload part inside the packed image.
pub const PART_ALIGN: u64 = 4096;

/// The host payload to pack behind warden.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: Option<&'a str>,
}

fn align_up(value: u64, align: u64) -> Result<u64> {
    value
        .checked_next_multiple_of(align)
        .with_context(|| format!("{value:#x} overflows when aligned to {align:#x}"))
}

/// Reads warden's own descriptor (the linker fills in `resident_file_end`).
fn warden_descriptor(warden: &[u8]) -> Result<PayloadDescriptor> {
    let bytes: &[u8; DESCRIPTOR_SIZE] = warden
        .get(DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE)
        .and_then(|s| s.try_into().ok())
        .context("warden binary is shorter than its header and payload descriptor")?;
    PayloadDescriptor::decode(bytes).map_err(|e| match e {
        PayloadError::BadMagic => anyhow::anyhow!(
            "warden binary has no payload descriptor at {DESCRIPTOR_OFFSET:#x} (magic WRDNPAY1)"
        ),
        other => anyhow::anyhow!("warden payload descriptor: {other}"),
    })
}

/// Packs `payload` behind the flat `warden` binary and returns the image.
///
/// Layout: warden, zero padding up to its `resident_file_end`, then kernel, initrd and command
/// line, each at the next 4 KiB boundary. The Image header's `image_size` grows to cover the
/// file when the file is larger than what warden itself declares.
pub fn pack(warden: &[u8], payload: &Payload<'_>) -> Result<Vec<u8>> {
    let warden_header = Arm64ImageHeader::parse(warden)
        .map_err(|e| anyhow::anyhow!("warden binary is not an arm64 Image: {e}"))?;
    let own = warden_descriptor(warden)?;
    let resident_end = own.resident_file_end;
    ensure!(
        resident_end >= warden.len() as u64,
        "warden binary ({:#x} bytes) is longer than its resident_file_end ({resident_end:#x}); \
         the linker script must put the descriptor's resident end after all file contents",
        warden.len()
    );
    Arm64ImageHeader::parse(payload.kernel).map_err(|e| anyhow::anyhow!("kernel: {e}"))?;
    ensure!(!payload.kernel.is_empty(), "kernel is empty");

    let mut desc = PayloadDescriptor { resident_file_end: resident_end, ..Default::default() };
    let mut cursor = align_up(resident_end, PART_ALIGN)?;
    desc.kernel_offset = cursor;
    desc.kernel_size = payload.kernel.len() as u64;
    cursor = align_up(cursor + desc.kernel_size, PART_ALIGN)?;
    let mut file_end = desc.kernel_offset + desc.kernel_size;
    if let Some(initrd) = payload.initrd.filter(|i| !i.is_empty()) {
        desc.initrd_offset = cursor;
        desc.initrd_size = initrd.len() as u64;
        file_end = cursor + desc.initrd_size;
        cursor = align_up(file_end, PART_ALIGN)?;
    }
    if let Some(cmdline) = payload.cmdline.filter(|c| !c.is_empty()) {
        ensure!(!cmdline.contains('\0'), "command line contains a NUL byte");
        desc.cmdline_offset = cursor;
        desc.cmdline_size = cmdline.len() as u64;
        file_end = cursor + desc.cmdline_size;
    }
    let file_len = usize::try_from(file_end).context("packed image too large")?;

    let mut image = vec![0u8; file_len];
    image[..warden.len()].copy_from_slice(warden);
    let mut place = |offset: u64, bytes: &[u8]| {
        let at = offset as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    };
    place(desc.kernel_offset, payload.kernel);
    if let Some(initrd) = payload.initrd.filter(|_| desc.initrd_size != 0) {
        place(desc.initrd_offset, initrd);
    }
    if let Some(cmdline) = payload.cmdline.filter(|_| desc.cmdline_size != 0) {
        place(desc.cmdline_offset, cmdline.as_bytes());
    }
    image[DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE].copy_from_slice(&desc.encode());
    let image_size = warden_header.image_size.max(file_end);
    image[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&image_size.to_le_bytes());

    // What warden will check at boot must hold for what we wrote.
    if let Err(e) = desc.validate(file_end) {
        bail!("internal error: packed descriptor does not validate: {e}");
    }
    Ok(image)
}

/// `cargo xtask pack`: reads the files, packs, writes `out`.
pub fn pack_files(
    warden_bin: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: Option<&str>,
    out: &Path,
) -> Result<u64> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let warden = read(warden_bin)?;
    let kernel_bytes = read(kernel)?;
    match Arm64ImageHeader::parse(&kernel_bytes) {
        Ok(_) => {}
        Err(PayloadError::KernelNotArm64Image) => {
            bail!("{} is not an arm64 Image (no ARM\\x64 magic at offset 56)", kernel.display())
        }
        Err(e) => bail!("{}: {e}", kernel.display()),
    }
    let initrd_bytes = initrd.map(read).transpose()?;
    let image =
        pack(&warden, &Payload { kernel: &kernel_bytes, initrd: initrd_bytes.as_deref(), cmdline })
            .with_context(|| {
                format!("packing {} with {}", warden_bin.display(), kernel.display())
            })?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &image).with_context(|| format!("writing {}", out.display()))?;
    Ok(image.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf2bin::tests::image_bytes;

    /// A warden-like binary: Image header plus a descriptor with only resident_file_end set.
    fn fake_warden(len: usize, resident_end: u64, image_size: u64) -> Vec<u8> {
        let mut w = image_bytes(len, image_size);
        let d = PayloadDescriptor { resident_file_end: resident_end, ..Default::default() };
        w[DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE].copy_from_slice(&d.encode());
        w
    }

    fn decode(image: &[u8]) -> PayloadDescriptor {
        let bytes: &[u8; DESCRIPTOR_SIZE] =
            image[DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE].try_into().unwrap();
        let d = PayloadDescriptor::decode(bytes).unwrap();
        d.validate(image.len() as u64).unwrap();
        d
    }

    fn part(image: &[u8], offset: u64, size: u64) -> &[u8] {
        &image[offset as usize..(offset + size) as usize]
    }

    #[test]
    fn round_trip_with_all_parts() {
        let warden = fake_warden(0x1234, 0x3000, 0x20_0000);
        let kernel = image_bytes(0x2345, 0x1_0000);
        let initrd: Vec<u8> = (0..0x777).map(|i| (i % 251) as u8).collect();
        let cmdline = "console=ttyAMA0 earlycon";
        let image = pack(
            &warden,
            &Payload { kernel: &kernel, initrd: Some(&initrd), cmdline: Some(cmdline) },
        )
        .unwrap();
        let d = decode(&image);
        assert_eq!(d.resident_file_end, 0x3000);
        assert_eq!((d.kernel_offset, d.kernel_size), (0x3000, 0x2345));
        assert_eq!((d.initrd_offset, d.initrd_size), (0x6000, 0x777));
        assert_eq!((d.cmdline_offset, d.cmdline_size), (0x7000, cmdline.len() as u64));
        assert_eq!(image.len() as u64, 0x7000 + cmdline.len() as u64);
        assert_eq!(part(&image, d.kernel_offset, d.kernel_size), &kernel[..]);
        assert_eq!(part(&image, d.initrd_offset, d.initrd_size), &initrd[..]);
        assert_eq!(part(&image, d.cmdline_offset, d.cmdline_size), cmdline.as_bytes());
        // warden itself is unchanged apart from the descriptor and image_size, then zeroes.
        assert_eq!(&image[..IMAGE_SIZE_OFFSET], &warden[..IMAGE_SIZE_OFFSET]);
        assert_eq!(&image[0x80..0x1234], &warden[0x80..]);
        assert!(image[0x1234..0x3000].iter().all(|&b| b == 0));
        // warden's own image_size (2 MiB) exceeds the file: kept.
        let hdr = Arm64ImageHeader::parse(&image).unwrap();
        assert_eq!(hdr.image_size, 0x20_0000);
    }

    #[test]
    fn kernel_only_and_image_size_grows_with_file() {
        let warden = fake_warden(0x100, 0x1800, 0x2000);
        let kernel = image_bytes(0x5000, 0);
        let image =
            pack(&warden, &Payload { kernel: &kernel, initrd: None, cmdline: Some("") }).unwrap();
        let d = decode(&image);
        assert_eq!(d.kernel_offset, 0x2000, "next 4 KiB boundary after resident_file_end");
        assert_eq!((d.initrd_size, d.cmdline_size), (0, 0));
        assert_eq!(image.len(), 0x7000);
        assert_eq!(Arm64ImageHeader::parse(&image).unwrap().image_size, 0x7000);
        assert_eq!(part(&image, d.kernel_offset, d.kernel_size), &kernel[..]);
    }

    #[test]
    fn rejects_bad_inputs() {
        let warden = fake_warden(0x100, 0x1000, 0);
        let kernel = image_bytes(0x200, 0);
        let not_image = vec![0u8; 0x200];
        let err = pack(&warden, &Payload { kernel: &not_image, initrd: None, cmdline: None });
        assert!(format!("{:#}", err.unwrap_err()).contains("not an arm64 Image"));
        // warden longer than its resident end.
        let long = fake_warden(0x1100, 0x1000, 0);
        let err = pack(&long, &Payload { kernel: &kernel, initrd: None, cmdline: None });
        assert!(format!("{:#}", err.unwrap_err()).contains("resident_file_end"));
        // no descriptor.
        let bare = image_bytes(0x100, 0);
        let err = pack(&bare, &Payload { kernel: &kernel, initrd: None, cmdline: None });
        assert!(format!("{:#}", err.unwrap_err()).contains("WRDNPAY1"));
        let err = pack(&warden, &Payload { kernel: &kernel, initrd: None, cmdline: Some("a\0b") });
        assert!(format!("{:#}", err.unwrap_err()).contains("NUL"));
    }

    #[test]
    fn pack_files_names_the_bad_kernel() {
        let dir = std::env::temp_dir().join(format!("xtask-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let warden_path = dir.join("warden.bin");
        let kernel_path = dir.join("notakernel");
        std::fs::write(&warden_path, fake_warden(0x100, 0x1000, 0)).unwrap();
        std::fs::write(&kernel_path, b"#!/bin/sh\necho hello\n").unwrap();
        let err = pack_files(&warden_path, &kernel_path, None, None, &dir.join("out.img"));
        let msg = format!("{:#}", err.unwrap_err());
        assert_eq!(
            msg,
            format!(
                "{} is not an arm64 Image (no ARM\\x64 magic at offset 56)",
                kernel_path.display()
            )
        );
        std::fs::write(&kernel_path, image_bytes(0x300, 0)).unwrap();
        let out = dir.join("sub/out.img");
        let len = pack_files(&warden_path, &kernel_path, None, Some("x"), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap().len() as u64, len);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
