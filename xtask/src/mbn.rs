//! Writing a test-signed Qualcomm MBN: an ELF whose program headers are preceded by two
//! `PT_NULL` entries Qualcomm's loaders look for (the "hash table segment" format of Qualcomm's
//! public *Secure Boot and Image Authentication* overviews, v1.0 and v2.0; qtestsign and
//! U-Boot's `tools/qcom/mkmbn` implement the same format and were read as references, no code
//! taken from them):
//!
//! ```text
//! file 0x0000  ELF header, then the program headers:
//!              [0] NULL, flags 0x0700_0000: covers the ELF header and program headers
//!              [1] NULL, flags 0x0220_0000: the hash segment (loaded by the boot loader)
//!              [2..] the image's PT_LOAD segments
//! file 0x1000  hash segment: MBN header (v3: 10 words, v6: 12), [v6: metadata],
//!              one digest per program header (SHA-256 for v3, SHA-384 for v6):
//!              the headers' digest, zeros for the hash segment itself, then each
//!              segment's data (zeros for one without file bytes); then the signature and
//!              the certificate chain (attestation certificate, then root, DER).
//! then         each PT_LOAD segment's bytes, 4 KiB aligned
//! ```
//!
//! "Test-signed" as qtestsign means it: the hashes are real, the signature is a placeholder of
//! the attestation key's size (all 0xff), and the certificate chain is genuine X.509 made and
//! signed here with warden's own *published, insecure* test keys (`mbn/test-*-key.pk8`). That
//! is what a Snapdragon with firmware secure boot disabled accepts; a board with secure boot
//! enabled refuses it. Before v6 the attestation certificate's OU fields carry the SW_ID, which
//! some firmware checks even with secure boot off.
//!
//! The DER writer below is hand-rolled (about 60 lines): it writes two fixed certificate shapes
//! and nothing else, which a general X.509 builder crate would do with several more
//! dependencies. The independent reader that checks what this writes is `mbn_check.rs`.

use anyhow::{Context, Result, ensure};
use rsa::PrivateKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256, Sha384};

/// `p_flags` of the placeholder program header covering the ELF header and program headers
/// (segment type 7 in bits 24..27).
pub const FLAGS_HEADER: u32 = 0x0700_0000;
/// `p_flags` of the hash segment: segment type 2 (hash) and access type 1 (read-only, bits
/// 21..24).
pub const FLAGS_HASH: u32 = 0x0220_0000;
/// Where the hash segment goes in the file and in memory (4 KiB: what Qualcomm's own images
/// and the reference tools use).
pub const HASH_SEGMENT_ALIGN: u64 = 0x1000;
/// The v6 header's OEM metadata: its size as the reference tools and Qualcomm's own images
/// have it (all zeros: no OEM fields are asserted).
pub const V6_METADATA_SIZE: usize = 120;
/// The certificate chain is padded to this with 0xff.
const CERT_CHAIN_ALIGN: usize = 16;
/// ELF64 header and program header sizes.
pub const EHDR_SIZE: usize = 64;
pub const PHDR_SIZE: usize = 56;

/// The MBN header version: which hash segment layout and which digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MbnVersion {
    /// MSM8916 family (DB410c): 10-word header, SHA-256. (v5, MSM8998 / SDM845, is the v6
    /// layout without metadata and with SHA-256: no board here uses it.)
    V3,
    /// SM8150 and later (RB5's SM8250, RB3 Gen 2's SC7280): 12-word header with metadata,
    /// SHA-384.
    V6,
}

impl MbnVersion {
    pub fn number(self) -> u32 {
        match self {
            Self::V3 => 3,
            Self::V6 => 6,
        }
    }

    /// Bytes of the MBN header at the start of the hash segment.
    pub fn header_size(self) -> usize {
        match self {
            Self::V3 => 40,
            Self::V6 => 48,
        }
    }

    pub fn digest_size(self) -> usize {
        match self {
            Self::V3 => 32,
            Self::V6 => 48,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::V3 => Sha256::digest(data).to_vec(),
            Self::V6 => Sha384::digest(data).to_vec(),
        }
    }

    /// Metadata bytes after the header (v6 only).
    pub fn metadata_size(self) -> usize {
        match self {
            Self::V3 => 0,
            Self::V6 => V6_METADATA_SIZE,
        }
    }
}

/// One loadable segment: its bytes go to `addr` (physical = virtual), `mem_size` bytes from
/// there belong to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub data: Vec<u8>,
    pub mem_size: u64,
    /// ELF `p_flags` (PF_R | PF_W | PF_X bits).
    pub flags: u32,
}

/// What the image is signed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signing {
    pub version: MbnVersion,
    /// The SW_ID of the partition the image goes to (hyp 0x15, uefi 0x09).
    pub sw_id: u32,
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Writes the MBN: `segments` in order, entered at `entry`. The hash segment is placed in
/// memory at the first 4 KiB boundary after the segments' memory (where the boot loader copies
/// it), so the segments' `mem_size` decides whether it lands inside the caller's region.
pub fn write(entry: u64, segments: &[Segment], signing: Signing) -> Result<Vec<u8>> {
    ensure!(!segments.is_empty(), "an MBN needs at least one loadable segment");
    let version = signing.version;
    let phnum = segments.len() + 2;
    let headers_size = EHDR_SIZE + phnum * PHDR_SIZE;
    ensure!(headers_size as u64 <= HASH_SEGMENT_ALIGN, "too many segments for one header page");

    let digest_size = version.digest_size();
    let hash_table_size = phnum * digest_size;
    let signature = vec![0xffu8; attestation_key()?.size()];
    // SW_SIZE (an OU field before v6): the header and the hash table.
    let sw_size = version.header_size() + hash_table_size;
    let cert_chain = certificate_chain(signing, sw_size as u64)?;

    let metadata_size = version.metadata_size();
    let hash_segment_size = version.header_size()
        + metadata_size
        + hash_table_size
        + signature.len()
        + cert_chain.len();
    let segments_end = segments
        .iter()
        .map(|s| s.addr.checked_add(s.mem_size).context("segment wraps the address space"))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let hash_addr = align_up(segments_end, HASH_SEGMENT_ALIGN);

    // File layout: headers, hash segment at 0x1000, then each segment 4 KiB aligned.
    let hash_offset = HASH_SEGMENT_ALIGN;
    let mut offset = align_up(hash_offset + hash_segment_size as u64, HASH_SEGMENT_ALIGN);
    let mut segment_offsets = Vec::with_capacity(segments.len());
    for s in segments {
        ensure!(
            s.data.len() as u64 <= s.mem_size,
            "segment at {:#x}: data beyond its size",
            s.addr
        );
        segment_offsets.push(offset);
        offset = align_up(offset + s.data.len() as u64, HASH_SEGMENT_ALIGN);
    }

    let mut phdrs = Vec::with_capacity(phnum * PHDR_SIZE);
    let phdr = |out: &mut Vec<u8>,
                p_type: u32,
                flags: u32,
                off: u64,
                addr: u64,
                filesz: u64,
                memsz: u64,
                align: u64| {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        for v in [off, addr, addr, filesz, memsz, align] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut phdrs, 0, FLAGS_HEADER, 0, 0, headers_size as u64, 0, 0);
    phdr(
        &mut phdrs,
        0,
        FLAGS_HASH,
        hash_offset,
        hash_addr,
        hash_segment_size as u64,
        align_up(hash_segment_size as u64, HASH_SEGMENT_ALIGN),
        HASH_SEGMENT_ALIGN,
    );
    for (s, &off) in segments.iter().zip(&segment_offsets) {
        const PT_LOAD: u32 = 1;
        phdr(
            &mut phdrs,
            PT_LOAD,
            s.flags,
            off,
            s.addr,
            s.data.len() as u64,
            s.mem_size,
            HASH_SEGMENT_ALIGN,
        );
    }

    let mut file = elf_header(entry, phnum as u16);
    file.extend_from_slice(&phdrs);
    debug_assert_eq!(file.len(), headers_size);

    let mut hashes = Vec::with_capacity(hash_table_size);
    hashes.extend(version.digest(&file));
    hashes.extend(vec![0u8; digest_size]);
    for s in segments {
        if s.data.is_empty() {
            hashes.extend(vec![0u8; digest_size]);
        } else {
            hashes.extend(version.digest(&s.data));
        }
    }

    let total_size = (hash_segment_size - version.header_size()) as u32;
    let words: Vec<u32> = match version {
        MbnVersion::V3 => {
            let dest = u32::try_from(hash_addr + version.header_size() as u64)
                .context("hash segment above 4 GiB: a v3 header holds 32-bit addresses")?;
            let signature_addr = dest + hash_table_size as u32;
            vec![
                0, // image_id
                3,
                0, // flash address (historical)
                dest,
                total_size,
                hash_table_size as u32,
                signature_addr,
                signature.len() as u32,
                signature_addr + signature.len() as u32,
                cert_chain.len() as u32,
            ]
        }
        MbnVersion::V6 => {
            let mut w = vec![
                0, // image_id
                version.number(),
                0, // Qualcomm's signature
                0, // Qualcomm's certificate chain
                total_size,
                hash_table_size as u32,
                0xffff_ffff, // signature address: unused
                signature.len() as u32,
                0xffff_ffff, // certificate chain address: unused
                cert_chain.len() as u32,
            ];
            w.extend([0, metadata_size as u32]); // Qualcomm's metadata, the OEM's
            w
        }
    };
    debug_assert_eq!(words.len() * 4, version.header_size());

    file.resize(hash_offset as usize, 0);
    for w in words {
        file.extend_from_slice(&w.to_le_bytes());
    }
    file.extend(vec![0u8; metadata_size]);
    file.extend(&hashes);
    file.extend(&signature);
    file.extend(&cert_chain);
    debug_assert_eq!(file.len() as u64, hash_offset + hash_segment_size as u64);
    for (s, &off) in segments.iter().zip(&segment_offsets) {
        file.resize(off as usize, 0);
        file.extend_from_slice(&s.data);
    }
    Ok(file)
}

/// An ELF64 little-endian AArch64 executable header with `phnum` program headers right after
/// it and no section headers.
fn elf_header(entry: u64, phnum: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(EHDR_SIZE);
    h.extend_from_slice(b"\x7fELF");
    h.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little endian, EV_CURRENT, System V ABI
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&entry.to_le_bytes());
    h.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    h.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&phnum.to_le_bytes());
    h.extend_from_slice(&[0; 6]); // no section headers
    h
}

/// warden's test root key and attestation key: published on purpose, NOT SECURE, generated for
/// this repository (RSA 2048, PKCS#8 DER).
const ROOT_KEY: &[u8] = include_bytes!("mbn/test-root-key.pk8");
const ATTESTATION_KEY: &[u8] = include_bytes!("mbn/test-attestation-key.pk8");

fn root_key() -> Result<PrivateKey> {
    PrivateKey::from_pkcs8_der(ROOT_KEY).map_err(|e| anyhow::anyhow!("test root key: {e}"))
}

fn attestation_key() -> Result<PrivateKey> {
    PrivateKey::from_pkcs8_der(ATTESTATION_KEY)
        .map_err(|e| anyhow::anyhow!("test attestation key: {e}"))
}

/// The OU fields of the attestation certificate (before v6; from v6 on the metadata carries
/// them): SW_ID, HW_ID, DEBUG (2: disabled), OEM_ID, SW_SIZE, MODEL_ID, the hash (1: SHA-256).
pub fn ou_fields(signing: Signing, sw_size: u64) -> Vec<String> {
    if signing.version == MbnVersion::V6 {
        return Vec::new();
    }
    vec![
        format!("01 {:016X} SW_ID", signing.sw_id),
        format!("02 {:016X} HW_ID", 0),
        format!("03 {:016X} DEBUG", 2),
        format!("04 {:04X} OEM_ID", 0),
        format!("05 {sw_size:08X} SW_SIZE"),
        format!("06 {:04X} MODEL_ID", 0),
        format!("07 {:04X} SHA256", 1),
    ]
}

/// Common names of the two certificates.
pub const ROOT_CN: &str = "warden MBN test root CA - NOT SECURE";
pub const ATTESTATION_CN: &str = "warden MBN test attestation CA - NOT SECURE";

/// The certificate chain: attestation certificate (signed by the root) then the self-signed
/// root, DER, padded with 0xff to 16 bytes.
fn certificate_chain(signing: Signing, sw_size: u64) -> Result<Vec<u8>> {
    let root = root_key()?;
    let attestation = attestation_key()?;
    let root_name = der::name(&[(der::OID_CN, ROOT_CN)]);
    let mut att_attrs = vec![(der::OID_CN, ATTESTATION_CN.to_owned())];
    att_attrs.extend(ou_fields(signing, sw_size).into_iter().map(|ou| (der::OID_OU, ou)));
    let att_attrs: Vec<(&[u8], &str)> = att_attrs.iter().map(|(o, v)| (*o, v.as_str())).collect();
    let att_name = der::name(&att_attrs);
    // keyCertSign only (bit 5); digitalSignature only (bit 0).
    let root_cert = certificate(
        &root,
        &root_name,
        &root_name,
        &root,
        der::basic_constraints_ca(),
        &[0x02, 0x04],
    )?;
    let att_cert = certificate(
        &root,
        &root_name,
        &att_name,
        &attestation,
        der::basic_constraints_leaf(),
        &[0x07, 0x80],
    )?;
    let mut chain = att_cert;
    chain.extend(root_cert);
    let padded = chain.len().div_ceil(CERT_CHAIN_ALIGN) * CERT_CHAIN_ALIGN;
    chain.resize(padded, 0xff);
    Ok(chain)
}

/// An X.509 v3 certificate for `subject_key`'s public key, signed by `issuer_key`
/// (sha256WithRSAEncryption), serial 1, valid from 2026-01-01 with no well-defined end
/// (99991231235959Z, RFC 5280 4.1.2.5), with critical basic constraints and key usage
/// (`key_usage`: the BIT STRING's unused-bit count and byte).
fn certificate(
    issuer_key: &PrivateKey,
    issuer: &[u8],
    subject: &[u8],
    subject_key: &PrivateKey,
    basic_constraints: Vec<u8>,
    key_usage: &[u8],
) -> Result<Vec<u8>> {
    use der::*;
    let spki = subject_key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| anyhow::anyhow!("encoding a test public key: {e}"))?;
    let extensions = explicit(
        3,
        &seq(&[
            seq(&[oid(OID_BASIC_CONSTRAINTS), boolean(true), octets(&basic_constraints)]),
            seq(&[oid(OID_KEY_USAGE), boolean(true), octets(&tlv(TAG_BIT_STRING, key_usage))]),
        ]),
    );
    let tbs = seq(&[
        explicit(0, &integer(2)), // v3
        integer(1),
        sha256_with_rsa(),
        issuer.to_vec(),
        seq(&[tlv(TAG_UTC_TIME, b"260101000000Z"), tlv(TAG_GENERALIZED_TIME, b"99991231235959Z")]),
        subject.to_vec(),
        spki.as_bytes().to_vec(),
        extensions,
    ]);
    let digest = Sha256::digest(&tbs);
    let signature = issuer_key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        .map_err(|e| anyhow::anyhow!("signing a test certificate: {e}"))?;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend(signature);
    Ok(seq(&[tbs, sha256_with_rsa(), tlv(TAG_BIT_STRING, &bits)]))
}

/// The DER encoder for [`certificate`] (definite lengths, the handful of types it uses).
mod der {
    pub const TAG_BOOLEAN: u8 = 0x01;
    pub const TAG_INTEGER: u8 = 0x02;
    pub const TAG_BIT_STRING: u8 = 0x03;
    pub const TAG_OCTET_STRING: u8 = 0x04;
    pub const TAG_NULL: u8 = 0x05;
    pub const TAG_OID: u8 = 0x06;
    pub const TAG_UTF8_STRING: u8 = 0x0c;
    pub const TAG_UTC_TIME: u8 = 0x17;
    pub const TAG_GENERALIZED_TIME: u8 = 0x18;
    pub const TAG_SEQUENCE: u8 = 0x30;
    pub const TAG_SET: u8 = 0x31;

    /// 2.5.4.3 commonName, 2.5.4.11 organizationalUnitName.
    pub const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    pub const OID_OU: &[u8] = &[0x55, 0x04, 0x0b];
    /// 2.5.29.19, 2.5.29.15.
    pub const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    /// 1.2.840.113549.1.1.11 sha256WithRSAEncryption.
    pub const OID_SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(TAG_SEQUENCE, &items.concat())
    }

    pub fn explicit(number: u8, content: &[u8]) -> Vec<u8> {
        tlv(0xa0 | number, content)
    }

    /// A small non-negative INTEGER.
    pub fn integer(value: u8) -> Vec<u8> {
        if value & 0x80 != 0 { tlv(TAG_INTEGER, &[0, value]) } else { tlv(TAG_INTEGER, &[value]) }
    }

    pub fn boolean(value: bool) -> Vec<u8> {
        tlv(TAG_BOOLEAN, &[if value { 0xff } else { 0 }])
    }

    pub fn octets(content: &[u8]) -> Vec<u8> {
        tlv(TAG_OCTET_STRING, content)
    }

    pub fn oid(encoded: &[u8]) -> Vec<u8> {
        tlv(TAG_OID, encoded)
    }

    pub fn sha256_with_rsa() -> Vec<u8> {
        seq(&[oid(OID_SHA256_WITH_RSA), tlv(TAG_NULL, &[])])
    }

    /// A Name: one RDN per attribute, each a UTF8String.
    pub fn name(attributes: &[(&[u8], &str)]) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = attributes
            .iter()
            .map(|(o, v)| tlv(TAG_SET, &seq(&[oid(o), tlv(TAG_UTF8_STRING, v.as_bytes())])))
            .collect();
        seq(&rdns)
    }

    /// cA TRUE, pathLenConstraint 0.
    pub fn basic_constraints_ca() -> Vec<u8> {
        seq(&[boolean(true), integer(0)])
    }

    /// cA FALSE (the default, so an empty sequence).
    pub fn basic_constraints_leaf() -> Vec<u8> {
        seq(&[])
    }
}
