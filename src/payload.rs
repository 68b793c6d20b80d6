//! The packed-image format: warden followed by the host payload, in one file that QEMU
//! `-kernel` and a board bootloader load as an arm64 Linux `Image` (see `docs/image-format.md`).
//!
//! ```text
//! offset 0x00  arm64 Image header (64 bytes; image_size covers the whole file)
//! offset 0x40  PayloadDescriptor (64 bytes, little-endian, filled in by `cargo xtask pack`)
//! ...          warden code and data, then zeroes up to `resident_file_end`
//! kernel_offset   host kernel (an arm64 Image)
//! initrd_offset   optional initrd
//! cmdline_offset  optional command line (UTF-8, no NUL needed)
//! ```
//!
//! `cargo xtask pack` puts the payload where it runs (the kernel at the first 2 MiB boundary
//! after warden's `image_size` + its `text_offset`, the initrd after the kernel's footprint), so
//! warden copies nothing. A compact image (RB3 Gen 2's next stage) has the payload right after
//! warden's BSS, overlapping warden's pool, which is not touched until warden has moved the
//! payload out (`mm::layout`).

/// Offset of the descriptor inside the image.
pub const DESCRIPTOR_OFFSET: usize = 0x40;
/// Size of the encoded descriptor.
pub const DESCRIPTOR_SIZE: usize = 64;
/// First eight bytes of the descriptor.
pub const MAGIC: [u8; 8] = *b"WRDNPAY1";

/// Offset of the arm64 Image header's `text_offset` field.
pub const IMAGE_TEXT_OFFSET: usize = 8;
/// Offset of the arm64 Image header's `image_size` field.
pub const IMAGE_SIZE_OFFSET: usize = 16;
/// Offset of the arm64 Image header's `flags` field.
pub const IMAGE_FLAGS_OFFSET: usize = 24;
/// Offset of the arm64 Image header's magic (`ARM\x64`).
pub const IMAGE_MAGIC_OFFSET: usize = 56;
pub const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
/// Size of the arm64 Image header.
pub const IMAGE_HEADER_SIZE: usize = 64;

/// Where the host payload is in the packed image. Offsets are from the start of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadDescriptor {
    /// First file offset the payload may use (end of warden's zero-initialised data, page
    /// aligned). Written by the linker; the packer never places anything before it.
    pub resident_file_end: u64,
    pub kernel_offset: u64,
    pub kernel_size: u64,
    pub initrd_offset: u64,
    pub initrd_size: u64,
    pub cmdline_offset: u64,
    pub cmdline_size: u64,
}

/// Why a descriptor or payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    BadMagic,
    /// No kernel was packed (a bare warden image).
    NoKernel,
    /// A part lies before `resident_file_end`, overlaps another, or beyond the image.
    BadBounds(&'static str),
    /// The kernel is not an arm64 Image.
    KernelNotArm64Image,
    /// The kernel is big-endian or uses a page size other than 4K and says so in its flags.
    KernelUnsupported(&'static str),
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PayloadError::BadMagic => {
                write!(f, "payload descriptor magic missing (not a warden image?)")
            }
            PayloadError::NoKernel => {
                write!(f, "no host kernel packed into this image (use `cargo xtask pack`)")
            }
            PayloadError::BadBounds(what) => write!(f, "payload {what} out of bounds"),
            PayloadError::KernelNotArm64Image => {
                write!(f, "host kernel is not an arm64 Image (no ARM\\x64 magic)")
            }
            PayloadError::KernelUnsupported(why) => write!(f, "host kernel unsupported: {why}"),
        }
    }
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl PayloadDescriptor {
    /// Decodes the 64 descriptor bytes. Only the magic is checked here; see [`Self::validate`].
    pub fn decode(bytes: &[u8; DESCRIPTOR_SIZE]) -> Result<Self, PayloadError> {
        if bytes[..8] != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        Ok(Self {
            resident_file_end: le64(bytes, 8),
            kernel_offset: le64(bytes, 16),
            kernel_size: le64(bytes, 24),
            initrd_offset: le64(bytes, 32),
            initrd_size: le64(bytes, 40),
            cmdline_offset: le64(bytes, 48),
            cmdline_size: le64(bytes, 56),
        })
    }

    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut out = [0u8; DESCRIPTOR_SIZE];
        out[..8].copy_from_slice(&MAGIC);
        let fields = [
            self.resident_file_end,
            self.kernel_offset,
            self.kernel_size,
            self.initrd_offset,
            self.initrd_size,
            self.cmdline_offset,
            self.cmdline_size,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Checks that the parts lie after the resident part, inside an image of `image_len` bytes,
    /// in order (kernel, initrd, cmdline) and without overlap.
    pub fn validate(&self, image_len: u64) -> Result<(), PayloadError> {
        if self.kernel_size == 0 {
            return Err(PayloadError::NoKernel);
        }
        let mut cursor = self.resident_file_end;
        for (what, off, size) in [
            ("kernel", self.kernel_offset, self.kernel_size),
            ("initrd", self.initrd_offset, self.initrd_size),
            ("cmdline", self.cmdline_offset, self.cmdline_size),
        ] {
            if size == 0 {
                continue;
            }
            let end = off.checked_add(size).ok_or(PayloadError::BadBounds(what))?;
            if off < cursor || end > image_len {
                return Err(PayloadError::BadBounds(what));
            }
            cursor = end;
        }
        Ok(())
    }
}

/// The fields of an arm64 Image header that placement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64ImageHeader {
    pub text_offset: u64,
    /// Memory the image needs from its load address (0 in pre-3.17 kernels: then unknown).
    pub image_size: u64,
    pub flags: u64,
}

impl Arm64ImageHeader {
    /// Parses the first 64 bytes of an arm64 Image.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() < IMAGE_HEADER_SIZE
            || bytes[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] != IMAGE_MAGIC
        {
            return Err(PayloadError::KernelNotArm64Image);
        }
        let hdr = Self {
            text_offset: le64(bytes, IMAGE_TEXT_OFFSET),
            image_size: le64(bytes, IMAGE_SIZE_OFFSET),
            flags: le64(bytes, IMAGE_FLAGS_OFFSET),
        };
        if hdr.image_size != 0 {
            if hdr.flags & 1 != 0 {
                return Err(PayloadError::KernelUnsupported("big-endian kernel"));
            }
            let page = (hdr.flags >> 1) & 3;
            if page != 0 && page != 1 {
                return Err(PayloadError::KernelUnsupported("kernel page size is not 4K"));
            }
        }
        Ok(hdr)
    }

    /// Bytes of memory to reserve for the kernel at its load address.
    pub fn effective_size(&self, file_size: u64) -> u64 {
        // Before image_size existed, text_offset was 0x80000 and the kernel needed its file
        // size plus BSS; Documentation/arch/arm64/booting.rst says to assume a generous bound.
        if self.image_size == 0 {
            file_size.saturating_mul(2)
        } else {
            self.image_size.max(file_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> PayloadDescriptor {
        PayloadDescriptor {
            resident_file_end: 0x4_0000,
            kernel_offset: 0x4_0000,
            kernel_size: 0x1000,
            initrd_offset: 0x4_1000,
            initrd_size: 0x10,
            cmdline_offset: 0x4_1010,
            cmdline_size: 5,
        }
    }

    #[test]
    fn descriptor_round_trips() {
        let d = desc();
        assert_eq!(PayloadDescriptor::decode(&d.encode()), Ok(d));
        assert_eq!(d.validate(0x4_1015), Ok(()));
    }

    #[test]
    fn descriptor_rejects_bad_layouts() {
        let mut bad = desc().encode();
        bad[0] = b'X';
        assert_eq!(PayloadDescriptor::decode(&bad), Err(PayloadError::BadMagic));
        assert_eq!(desc().validate(0x4_1014), Err(PayloadError::BadBounds("cmdline")));
        let mut d = desc();
        d.kernel_offset = 0x1000;
        assert_eq!(d.validate(0x10_0000), Err(PayloadError::BadBounds("kernel")));
        d = desc();
        d.initrd_offset = 0x4_0800;
        assert_eq!(d.validate(0x10_0000), Err(PayloadError::BadBounds("initrd")));
        d = desc();
        d.kernel_size = 0;
        assert_eq!(d.validate(0x10_0000), Err(PayloadError::NoKernel));
        d = desc();
        d.cmdline_offset = u64::MAX;
        assert_eq!(d.validate(u64::MAX), Err(PayloadError::BadBounds("cmdline")));
    }

    #[test]
    fn image_header_parsing() {
        let mut h = [0u8; 64];
        assert_eq!(Arm64ImageHeader::parse(&h), Err(PayloadError::KernelNotArm64Image));
        h[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4].copy_from_slice(&IMAGE_MAGIC);
        h[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&0x20_0000u64.to_le_bytes());
        h[IMAGE_FLAGS_OFFSET] = 0b1010;
        let hdr = Arm64ImageHeader::parse(&h).unwrap();
        assert_eq!(hdr.image_size, 0x20_0000);
        assert_eq!(hdr.effective_size(0x1000), 0x20_0000);
        h[IMAGE_FLAGS_OFFSET] = 0b0101;
        assert!(matches!(Arm64ImageHeader::parse(&h), Err(PayloadError::KernelUnsupported(_))));
    }
}
