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
/// The arm64 boot protocol's kernel base alignment: loaders put an Image at such a boundary +
/// its `text_offset` (QEMU `-kernel`: RAM + 2 MiB; U-Boot `booti`: `ALIGN(addr, 2 MiB)`).
pub const IMAGE_BASE_ALIGN: u64 = 2 << 20;
/// Largest packed image `pack` writes (a hostile kernel `image_size` would otherwise ask for
/// gigabytes of zeroes).
pub const MAX_PACKED_SIZE: u64 = 1 << 30;

/// Where the payload goes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Where it runs, once a loader has put the image at a 2 MiB-aligned base (+ warden's
    /// `text_offset`): the kernel at the first 2 MiB boundary after warden's whole region
    /// (`image_size`: BSS, stacks, pool) + the kernel's `text_offset`, the initrd after the
    /// kernel's `image_size`. warden then moves nothing (`mm::layout`). For QEMU `-kernel` and
    /// U-Boot `booti`.
    InPlace,
    /// Right after warden's file contents, 4 KiB aligned: smallest file, warden moves the parts
    /// at boot. For a segment that must fit warden's region (RB3 Gen 2's next stage).
    Compact,
}

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
/// Layout: warden, zero padding up to its `resident_file_end` (or, [`Placement::InPlace`], up to
/// where the kernel runs), then kernel, initrd and command line, each at the next 4 KiB
/// boundary (the initrd, in place, after the kernel's `image_size`). The Image header's
/// `image_size` grows to cover the file and the kernel's footprint when they are larger than
/// what warden itself declares.
pub fn pack(warden: &[u8], payload: &Payload<'_>, placement: Placement) -> Result<Vec<u8>> {
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
    let kernel_header =
        Arm64ImageHeader::parse(payload.kernel).map_err(|e| anyhow::anyhow!("kernel: {e}"))?;
    ensure!(!payload.kernel.is_empty(), "kernel is empty");

    let mut desc = PayloadDescriptor { resident_file_end: resident_end, ..Default::default() };
    desc.kernel_size = payload.kernel.len() as u64;
    let (kernel_offset, kernel_end) = match placement {
        Placement::Compact => {
            let at = align_up(resident_end, PART_ALIGN)?;
            (at, at + desc.kernel_size)
        }
        Placement::InPlace => {
            in_place_kernel(&warden_header, resident_end, &kernel_header, desc.kernel_size)?
        }
    };
    ensure!(
        kernel_end <= MAX_PACKED_SIZE,
        "the kernel's footprint ends {kernel_end:#x} bytes into the image, beyond the \
         {MAX_PACKED_SIZE:#x} this packer writes (image_size {:#x} in its header?)",
        kernel_header.image_size
    );
    desc.kernel_offset = kernel_offset;
    let mut file_end = desc.kernel_offset + desc.kernel_size;
    // The command line is copied out at boot before anything runs: it may sit in the kernel's
    // BSS. The initrd may not (the kernel zeroes its BSS).
    let mut cursor = align_up(file_end, PART_ALIGN)?;
    if let Some(initrd) = payload.initrd.filter(|i| !i.is_empty()) {
        cursor = align_up(kernel_end, PART_ALIGN)?;
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
    let image_size = warden_header.image_size.max(file_end).max(kernel_end);
    image[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&image_size.to_le_bytes());

    // What warden will check at boot must hold for what we wrote.
    if let Err(e) = desc.validate(file_end) {
        bail!("internal error: packed descriptor does not validate: {e}");
    }
    Ok(image)
}

/// [`Placement::InPlace`]: the kernel's file offset and the end of its memory footprint.
/// Refuses header fields no loader honours (a `text_offset` that is not a 4 KiB multiple below
/// 2 MiB), so the kernel's 2 MiB base stays the one the boot protocol gives it.
fn in_place_kernel(
    warden: &Arm64ImageHeader,
    resident_end: u64,
    kernel: &Arm64ImageHeader,
    kernel_file_size: u64,
) -> Result<(u64, u64)> {
    for (what, h) in [("warden", warden), ("kernel", kernel)] {
        ensure!(
            h.text_offset < IMAGE_BASE_ALIGN && h.text_offset.is_multiple_of(PART_ALIGN),
            "{what}'s text_offset {:#x} is not a 4 KiB multiple below 2 MiB",
            h.text_offset
        );
    }
    // Loaded at B = 2 MiB boundary + warden's text_offset; warden's region is
    // [B, B + image_size), rounded up to 2 MiB by warden's planner; the kernel goes at the next
    // boundary + its own text_offset. (image_size covers resident_end in any real link.)
    let warden_size = warden.image_size.max(resident_end);
    let region_end = warden
        .text_offset
        .checked_add(warden_size)
        .with_context(|| format!("warden's image_size {:#x} overflows", warden.image_size))?;
    let region_end = align_up(region_end, IMAGE_BASE_ALIGN)?;
    let offset = region_end - warden.text_offset + kernel.text_offset;
    let footprint = kernel.effective_size(kernel_file_size);
    let end = offset
        .checked_add(footprint)
        .with_context(|| format!("kernel image_size {:#x} overflows", kernel.image_size))?;
    Ok((offset, end))
}

/// `cargo xtask pack`: reads the files, packs, writes `out` ([`Placement::InPlace`]).
pub fn pack_files(
    warden_bin: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: Option<&str>,
    out: &Path,
) -> Result<u64> {
    pack_files_placed(warden_bin, kernel, initrd, cmdline, out, Placement::InPlace)
}

/// [`pack_files`] with the payload placed as `placement` says.
pub fn pack_files_placed(
    warden_bin: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: Option<&str>,
    out: &Path,
    placement: Placement,
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
    let image = pack(
        &warden,
        &Payload { kernel: &kernel_bytes, initrd: initrd_bytes.as_deref(), cmdline },
        placement,
    )
    .with_context(|| format!("packing {} with {}", warden_bin.display(), kernel.display()))?;
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

    const MIB: u64 = 1 << 20;

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
            Placement::Compact,
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
        let image = pack(
            &warden,
            &Payload { kernel: &kernel, initrd: None, cmdline: Some("") },
            Placement::Compact,
        )
        .unwrap();
        let d = decode(&image);
        assert_eq!(d.kernel_offset, 0x2000, "next 4 KiB boundary after resident_file_end");
        assert_eq!((d.initrd_size, d.cmdline_size), (0, 0));
        assert_eq!(image.len(), 0x7000);
        assert_eq!(Arm64ImageHeader::parse(&image).unwrap().image_size, 0x7000);
        assert_eq!(part(&image, d.kernel_offset, d.kernel_size), &kernel[..]);
    }

    /// A kernel header with this `text_offset` and `image_size`.
    fn kernel_with(len: usize, text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut k = image_bytes(len, image_size);
        k[8..16].copy_from_slice(&text_offset.to_le_bytes());
        k
    }

    #[test]
    fn in_place_puts_the_kernel_where_it_runs() {
        // warden: 3 MiB + 4 KiB of region (image_size), 0x3000 resident; text_offset 0.
        let warden = fake_warden(0x1234, 0x3000, 3 * MIB + 0x1000);
        let kernel = kernel_with(0x2345, 0, 0x10_0000);
        let initrd: Vec<u8> = (0..0x777).map(|i| (i % 251) as u8).collect();
        let payload = Payload { kernel: &kernel, initrd: Some(&initrd), cmdline: Some("x=1") };
        let image = pack(&warden, &payload, Placement::InPlace).unwrap();
        let d = decode(&image);
        // The 2 MiB boundary after warden's region (4 MiB), + the kernel's text_offset 0; the
        // initrd after the kernel's 1 MiB image_size, the command line after it.
        assert_eq!((d.kernel_offset, d.kernel_size), (4 * MIB, 0x2345));
        assert_eq!((d.initrd_offset, d.initrd_size), (5 * MIB, 0x777));
        assert_eq!(d.cmdline_offset, 5 * MIB + 0x1000);
        assert_eq!(part(&image, d.kernel_offset, d.kernel_size), &kernel[..]);
        assert_eq!(part(&image, d.initrd_offset, d.initrd_size), &initrd[..]);
        assert_eq!(part(&image, d.cmdline_offset, d.cmdline_size), b"x=1");
        assert!(image[0x1234..4 * MIB as usize].iter().all(|&b| b == 0));
        assert_eq!(Arm64ImageHeader::parse(&image).unwrap().image_size, image.len() as u64);

        // text_offset 0x80000 (pre-5.8 kernels): 2 MiB boundary + 0x80000.
        let old = kernel_with(0x2345, 0x8_0000, 0x10_0000);
        let image = pack(
            &warden,
            &Payload { kernel: &old, initrd: None, cmdline: None },
            Placement::InPlace,
        )
        .unwrap();
        let d = decode(&image);
        assert_eq!(d.kernel_offset, 4 * MIB + 0x8_0000);
        // No initrd: the file ends with the kernel, image_size still covers its footprint so a
        // loader puts nothing in its BSS.
        assert_eq!(image.len() as u64, 4 * MIB + 0x8_0000 + 0x2345);
        let hdr = Arm64ImageHeader::parse(&image).unwrap();
        assert_eq!(hdr.image_size, 4 * MIB + 0x8_0000 + 0x10_0000);
    }

    #[test]
    fn in_place_refuses_hostile_kernel_headers() {
        let warden = fake_warden(0x1234, 0x3000, 3 * MIB);
        let try_pack = |kernel: &[u8]| {
            pack(&warden, &Payload { kernel, initrd: None, cmdline: None }, Placement::InPlace)
                .map_err(|e| format!("{e:#}"))
        };
        let unaligned = kernel_with(0x200, 0x123, 0x1000);
        assert!(try_pack(&unaligned).unwrap_err().contains("text_offset 0x123"));
        let far = kernel_with(0x200, 2 * MIB, 0x1000);
        assert!(try_pack(&far).unwrap_err().contains("text_offset 0x200000"));
        let huge = kernel_with(0x200, 0, u64::MAX);
        assert!(try_pack(&huge).unwrap_err().contains("overflows"));
        let big = kernel_with(0x200, 0, 2 * MAX_PACKED_SIZE);
        assert!(try_pack(&big).unwrap_err().contains("beyond"));
        // The compact layout ignores text_offset (warden moves the kernel to its own place).
        let image = pack(
            &warden,
            &Payload { kernel: &unaligned, initrd: None, cmdline: None },
            Placement::Compact,
        );
        assert_eq!(decode(&image.unwrap()).kernel_offset, 0x3000);
    }

    #[test]
    fn rejects_bad_inputs() {
        let warden = fake_warden(0x100, 0x1000, 0);
        let kernel = image_bytes(0x200, 0);
        let not_image = vec![0u8; 0x200];
        let err = pack(
            &warden,
            &Payload { kernel: &not_image, initrd: None, cmdline: None },
            Placement::InPlace,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("not an arm64 Image"));
        // warden longer than its resident end.
        let long = fake_warden(0x1100, 0x1000, 0);
        let err = pack(
            &long,
            &Payload { kernel: &kernel, initrd: None, cmdline: None },
            Placement::InPlace,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("resident_file_end"));
        // no descriptor.
        let bare = image_bytes(0x100, 0);
        let err = pack(
            &bare,
            &Payload { kernel: &kernel, initrd: None, cmdline: None },
            Placement::InPlace,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("WRDNPAY1"));
        let err = pack(
            &warden,
            &Payload { kernel: &kernel, initrd: None, cmdline: Some("a\0b") },
            Placement::InPlace,
        );
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
