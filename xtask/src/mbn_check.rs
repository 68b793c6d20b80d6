//! An independent reader for the MBNs `mbn.rs` writes (`cargo xtask image` runs it on every
//! image it writes; `cargo xtask image --board NAME --check FILE` on any file). It shares no
//! code with the writer: the ELF is parsed with the `object` crate, the hash segment and the
//! certificates by the code below, from the format's description (see `mbn.rs`).
//!
//! What it checks: an ELF64 little-endian AArch64 executable; program header 0 is the `PT_NULL`
//! placeholder covering exactly the ELF and program headers; exactly one hash segment
//! (`PT_NULL`, segment type 2) whose MBN header has the expected version and consistent sizes;
//! one digest per program header, each equal to the digest of what it covers (zeros for the
//! hash segment itself and for segments without file bytes); at least one `PT_LOAD`; every
//! `PT_LOAD` and the hash segment inside the board's region, physical = virtual, no two
//! overlapping; the entry point is the expected one and inside an executable segment; the
//! certificate chain is two DER certificates, the first signed by the second's key, and (before
//! v6) names the expected SW_ID.

use anyhow::{Context, Result, bail, ensure};
use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use rsa::PublicKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384};

/// What the image must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// MBN header version (3 or 6).
    pub version: u32,
    pub sw_id: u32,
    pub entry: u64,
    /// `[start, end)` every loaded byte must lie in.
    pub region: (u64, u64),
}

/// What a good image holds, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub segments: usize,
    pub loaded_bytes: u64,
    pub hash_segment: (u64, u64),
}

const SEGMENT_TYPE_MASK: u32 = 0x0700_0000;
const SEGMENT_TYPE_HASH: u32 = 0x0200_0000;
const SEGMENT_TYPE_HEADER: u32 = 0x0700_0000;

struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Checks `file` against `expected`; the error says what is wrong.
pub fn check(file: &[u8], expected: &Expected) -> Result<Checked> {
    let header = elf::FileHeader64::<LE>::parse(file).context("not an ELF64 little-endian file")?;
    let e = LE;
    ensure!(
        header.e_machine(e) == elf::EM_AARCH64,
        "ELF machine {} is not AArch64",
        header.e_machine(e)
    );
    ensure!(header.e_type(e) == elf::ET_EXEC, "ELF type {} is not an executable", header.e_type(e));
    let phdrs: Vec<Phdr> = header
        .program_headers(e, file)
        .context("program headers lie outside the file")?
        .iter()
        .map(|p| Phdr {
            p_type: p.p_type(e).0,
            flags: p.p_flags(e).0,
            offset: p.p_offset(e),
            vaddr: p.p_vaddr(e),
            paddr: p.p_paddr(e),
            filesz: p.p_filesz(e),
            memsz: p.p_memsz(e),
        })
        .collect();
    let data_of = |i: usize| -> Result<&[u8]> {
        let p = &phdrs[i];
        let end = p.offset.checked_add(p.filesz).context("segment wraps")?;
        file.get(p.offset as usize..end as usize).with_context(|| {
            format!(
                "program header {i}: bytes [{:#x}, {end:#x}) outside the file ({:#x} bytes)",
                p.offset,
                file.len()
            )
        })
    };

    let headers_end =
        header.e_phoff(e) + u64::from(header.e_phnum(e)) * u64::from(header.e_phentsize(e));
    let first = phdrs.first().context("no program headers")?;
    ensure!(
        first.p_type == elf::PT_NULL.0 && first.flags & SEGMENT_TYPE_MASK == SEGMENT_TYPE_HEADER,
        "program header 0 is not the MBN header placeholder (PT_NULL, flags {SEGMENT_TYPE_HEADER:#x})"
    );
    ensure!(
        first.offset == 0 && first.filesz == headers_end,
        "the header placeholder covers [{:#x}, {:#x}), not the ELF and program headers [0, {headers_end:#x})",
        first.offset,
        first.offset + first.filesz
    );

    let hash_indices: Vec<usize> = (0..phdrs.len())
        .filter(|&i| {
            phdrs[i].p_type == elf::PT_NULL.0
                && phdrs[i].flags & SEGMENT_TYPE_MASK == SEGMENT_TYPE_HASH
        })
        .collect();
    let [hash_index] = hash_indices[..] else {
        bail!(
            "{} hash segments (PT_NULL, segment type 2), expected exactly one",
            hash_indices.len()
        );
    };
    let hash_seg = data_of(hash_index)?;
    let word = |i: usize| -> Result<u32> {
        hash_seg
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
            .with_context(|| format!("hash segment too short for MBN header word {i}"))
    };
    let version = word(1)?;
    ensure!(
        version == expected.version,
        "MBN header version {version}, expected {}",
        expected.version
    );
    // Layout per version: header words, metadata, hash table, signature(s), certificate chain(s).
    let (header_size, digest_size, metadata, hash_table, qcom, signature, chain, total) =
        match version {
            3 => (40, 32, 0, word(5)?, 0, word(7)?, word(9)?, word(4)?),
            6 => (
                48,
                48,
                word(10)? + word(11)?,
                word(5)?,
                word(2)? + word(3)?,
                word(7)?,
                word(9)?,
                word(4)?,
            ),
            v => bail!("MBN header version {v} is not one this checker reads (3, 6)"),
        };
    let sizes = [metadata, hash_table, qcom, signature, chain].map(u64::from);
    let sum: u64 = sizes.iter().sum();
    ensure!(
        u64::from(total) == sum,
        "MBN header total size {total:#x} is not the sum of its parts {sum:#x}"
    );
    ensure!(
        header_size as u64 + sum == hash_seg.len() as u64,
        "hash segment is {:#x} bytes, its MBN header describes {:#x}",
        hash_seg.len(),
        header_size as u64 + sum
    );
    ensure!(
        hash_table as usize == phdrs.len() * digest_size,
        "hash table holds {hash_table:#x} bytes, {} program headers need {:#x}",
        phdrs.len(),
        phdrs.len() * digest_size
    );
    if version == 3 {
        let base = phdrs[hash_index].paddr;
        let dest = u64::from(word(3)?);
        ensure!(
            dest == base + header_size as u64,
            "v3 header: hash table address {dest:#x}, the hash segment's data starts at {:#x}",
            base + header_size as u64
        );
        ensure!(
            u64::from(word(6)?) == dest + u64::from(hash_table)
                && u64::from(word(8)?) == dest + u64::from(hash_table) + u64::from(signature),
            "v3 header: signature or certificate chain address does not follow the hash table"
        );
    }
    let table_start = header_size + metadata as usize;
    let table = &hash_seg[table_start..table_start + hash_table as usize];
    let digest = |data: &[u8]| -> Vec<u8> {
        if digest_size == 32 {
            Sha256::digest(data).to_vec()
        } else {
            Sha384::digest(data).to_vec()
        }
    };
    for (i, p) in phdrs.iter().enumerate() {
        let want = if i == hash_index || p.filesz == 0 {
            vec![0u8; digest_size]
        } else {
            digest(data_of(i)?)
        };
        let have = &table[i * digest_size..(i + 1) * digest_size];
        if have != want.as_slice() {
            bail!(
                "program header {i} ({} at {:#x}, {:#x} bytes): hash mismatch: the table has {}, the data hashes to {}",
                if p.p_type == elf::PT_LOAD.0 { "PT_LOAD" } else { "PT_NULL" },
                p.paddr,
                p.filesz,
                hex(have),
                hex(&want)
            );
        }
    }
    let chain_start = table_start + hash_table as usize + qcom as usize + signature as usize;
    check_chain(&hash_seg[chain_start..chain_start + chain as usize], version, expected.sw_id)?;

    // Where things go.
    let (start, end) = expected.region;
    let in_region = |what: String, addr: u64, size: u64| -> Result<(u64, u64)> {
        let stop =
            addr.checked_add(size).with_context(|| format!("{what} wraps the address space"))?;
        ensure!(
            addr >= start && stop <= end,
            "{what} [{addr:#x}, {stop:#x}) is not inside the board's region [{start:#x}, {end:#x})"
        );
        Ok((addr, stop))
    };
    let mut placed = Vec::new();
    let mut loaded_bytes = 0;
    let mut entry_ok = false;
    for (i, p) in phdrs.iter().enumerate() {
        let is_hash = i == hash_index;
        if p.p_type != elf::PT_LOAD.0 && !is_hash {
            continue;
        }
        ensure!(
            p.vaddr == p.paddr,
            "program header {i}: virtual {:#x} != physical {:#x}",
            p.vaddr,
            p.paddr
        );
        ensure!(p.filesz <= p.memsz || is_hash, "program header {i}: file size beyond memory size");
        let what =
            if is_hash { "the hash segment".to_owned() } else { format!("PT_LOAD segment {i}") };
        let size = if is_hash { p.filesz } else { p.memsz };
        placed.push((in_region(what, p.paddr, size)?, i));
        if !is_hash {
            loaded_bytes += p.filesz;
            if p.flags & elf::PF_X.0 != 0 && (p.paddr..p.paddr + p.memsz).contains(&expected.entry)
            {
                entry_ok = true;
            }
        }
    }
    ensure!(placed.len() > 1, "no PT_LOAD segment");
    placed.sort();
    for pair in placed.windows(2) {
        let (((_, a_end), a), ((b_start, _), b)) = (pair[0], pair[1]);
        ensure!(a_end <= b_start, "program headers {a} and {b} overlap in memory");
    }
    let entry = header.e_entry(e);
    ensure!(
        entry == expected.entry,
        "entry point {entry:#x}, expected {:#x} (the board's load address)",
        expected.entry
    );
    ensure!(entry_ok, "entry point {entry:#x} is not inside an executable PT_LOAD segment");
    let hash = &phdrs[hash_index];
    Ok(Checked {
        segments: placed.len() - 1,
        loaded_bytes,
        hash_segment: (hash.paddr, hash.paddr + hash.filesz),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One DER element: its tag, its contents, and the whole encoding.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads the element at the start of `data`; returns it and the rest.
fn read_tlv(data: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = data.split_first().context("DER: no tag")?;
    let (&first, rest) = rest.split_first().context("DER: no length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        ensure!((1..=4).contains(&n) && rest.len() >= n, "DER: bad length");
        (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize), &rest[n..])
    };
    ensure!(rest.len() >= len, "DER: element runs past its container");
    let header_len = data.len() - rest.len();
    Ok((Tlv { tag, content: &rest[..len], whole: &data[..header_len + len] }, &rest[len..]))
}

/// The elements of a constructed element's contents.
fn children(content: &[u8]) -> Result<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = read_tlv(rest)?;
        out.push(t);
        rest = r;
    }
    Ok(out)
}

/// The parts of a certificate the chain check uses (DER encodings, the signature's bytes).
struct CertParts<'a> {
    tbs: &'a [u8],
    subject: &'a [u8],
    public_key: &'a [u8],
    signature: &'a [u8],
}

/// The chain: attestation certificate then root (each a SEQUENCE), 0xff padding after.
fn check_chain<'a>(chain: &'a [u8], version: u32, sw_id: u32) -> Result<()> {
    let (att, rest) = read_tlv(chain).context("certificate chain: attestation certificate")?;
    let (root, rest) = read_tlv(rest).context("certificate chain: root certificate")?;
    ensure!(att.tag == 0x30 && root.tag == 0x30, "certificate chain: not two DER certificates");
    ensure!(
        rest.iter().all(|&b| b == 0xff),
        "certificate chain: bytes after the two certificates other than 0xff padding"
    );
    let cert_parts = |c: &Tlv<'a>| -> Result<CertParts<'a>> {
        let parts = children(c.content)?;
        ensure!(parts.len() == 3, "a certificate is tbsCertificate, algorithm, signature");
        let tbs = children(parts[0].content)?;
        // [0] version, serial, algorithm, issuer, validity, subject, subjectPublicKeyInfo, ...
        ensure!(tbs.len() >= 7 && tbs[0].tag == 0xa0, "a v3 tbsCertificate has at least 7 fields");
        let signature = parts[2].content.get(1..).context("empty signature")?;
        Ok(CertParts {
            tbs: parts[0].whole,
            subject: tbs[5].whole,
            public_key: tbs[6].whole,
            signature,
        })
    };
    let attestation = cert_parts(&att)?;
    let root = cert_parts(&root)?;
    let root_key = PublicKey::from_public_key_der(root.public_key)
        .map_err(|e| anyhow::anyhow!("root certificate's public key: {e}"))?;
    for (what, cert) in [("attestation", &attestation), ("root", &root)] {
        root_key
            .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(cert.tbs), cert.signature)
            .map_err(|_| anyhow::anyhow!("the {what} certificate is not signed by the root's key"))?;
    }
    if version < 6 {
        let (subject, _) = read_tlv(attestation.subject)?;
        let mut ous = Vec::new();
        for rdn in children(subject.content)? {
            for attr in children(rdn.content)? {
                let kv = children(attr.content)?;
                if kv.len() == 2 && kv[0].content == [0x55, 0x04, 0x0b] {
                    ous.push(String::from_utf8_lossy(kv[1].content).into_owned());
                }
            }
        }
        let want = format!("01 {sw_id:016X} SW_ID");
        ensure!(
            ous.contains(&want),
            "the attestation certificate does not name SW_ID {sw_id:#x} (its OU fields: {ous:?})"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbn::{self, MbnVersion, Segment, Signing};

    const BASE: u64 = 0x8640_0000;
    const REGION: (u64, u64) = (BASE, BASE + (1 << 20));

    fn code() -> Vec<u8> {
        (0..0x3000u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn image(version: MbnVersion, entry: u64, addr: u64) -> Vec<u8> {
        let segment = Segment { addr, data: code(), mem_size: 0x3000, flags: 7 };
        mbn::write(entry, &[segment], Signing { version, sw_id: 0x15 }).unwrap()
    }

    fn expected(version: u32) -> Expected {
        Expected { version, sw_id: 0x15, entry: BASE, region: REGION }
    }

    fn refused(file: &[u8], expected: &Expected) -> String {
        format!("{:#}", check(file, expected).unwrap_err())
    }

    /// The file offset of the one PT_LOAD segment's data and of the hash table.
    fn offsets(file: &[u8], version: MbnVersion) -> (usize, usize) {
        let phdr = |i: usize, field: usize| {
            let at = mbn::EHDR_SIZE + i * mbn::PHDR_SIZE + 8 + field * 8;
            u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize
        };
        (phdr(2, 0), phdr(1, 0) + version.header_size() + version.metadata_size())
    }

    #[test]
    fn good_images_are_accepted() {
        for (version, number) in [(MbnVersion::V3, 3), (MbnVersion::V6, 6)] {
            let file = image(version, BASE, BASE);
            let checked = check(&file, &expected(number)).unwrap();
            assert_eq!(checked.segments, 1);
            assert_eq!(checked.loaded_bytes, 0x3000);
            // The hash segment follows the segment's memory, 4 KiB aligned, inside the region.
            assert_eq!(checked.hash_segment.0, BASE + 0x3000);
            // The layout the format describes: placeholder, hash segment, the PT_LOAD.
            assert_eq!(u16::from_le_bytes([file[56], file[57]]), 3, "{number}: e_phnum");
            assert_eq!(&file[0x1004..0x1008], &number.to_le_bytes());
        }
    }

    #[test]
    fn a_corrupted_segment_is_refused() {
        let mut file = image(MbnVersion::V3, BASE, BASE);
        let (data, _) = offsets(&file, MbnVersion::V3);
        file[data + 0x123] ^= 1;
        let err = refused(&file, &expected(3));
        assert!(
            err.contains("program header 2 (PT_LOAD at 0x86400000, 0x3000 bytes): hash mismatch"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_hash_in_the_table_is_refused() {
        for (version, number) in [(MbnVersion::V3, 3), (MbnVersion::V6, 6)] {
            let mut file = image(version, BASE, BASE);
            let (_, table) = offsets(&file, version);
            // Entry 0: the digest of the ELF and program headers.
            file[table] ^= 0x80;
            let err = refused(&file, &expected(number));
            assert!(
                err.contains("program header 0 (PT_NULL at 0x0, 0xe8 bytes): hash mismatch"),
                "{err}"
            );
        }
    }

    #[test]
    fn edited_headers_are_refused_by_their_hash() {
        let mut file = image(MbnVersion::V6, BASE, BASE);
        // Move the entry point by editing e_entry in place.
        file[24] = 0x40;
        let err = refused(&file, &expected(6));
        assert!(err.contains("program header 0") && err.contains("hash mismatch"), "{err}");
    }

    #[test]
    fn a_wrong_entry_is_refused() {
        let file = image(MbnVersion::V3, BASE + 0x40, BASE);
        let err = refused(&file, &expected(3));
        assert!(err.contains("entry point 0x86400040, expected 0x86400000"), "{err}");
        // An entry outside every executable segment.
        let file = image(MbnVersion::V3, BASE + 0x10_0000, BASE);
        let err = refused(&file, &Expected { entry: BASE + 0x10_0000, ..expected(3) });
        assert!(err.contains("not inside an executable PT_LOAD segment"), "{err}");
    }

    #[test]
    fn a_load_outside_the_region_is_refused() {
        let below = image(MbnVersion::V3, BASE - 0x1000, BASE - 0x1000);
        let err = refused(&below, &Expected { entry: BASE - 0x1000, ..expected(3) });
        assert!(err.contains("PT_LOAD segment 2 [0x863ff000, 0x86402000) is not inside the board's region [0x86400000, 0x86500000)"), "{err}");
        // The segment fits, but the hash segment after it does not.
        let top = REGION.1 - 0x3000;
        let file = image(MbnVersion::V3, top, top);
        let err = refused(&file, &Expected { entry: top, ..expected(3) });
        assert!(
            err.contains("the hash segment [0x86500000,")
                && err.contains("is not inside the board's region"),
            "{err}"
        );
    }

    #[test]
    fn version_and_sw_id_must_match() {
        let file = image(MbnVersion::V3, BASE, BASE);
        let err = refused(&file, &expected(6));
        assert!(err.contains("MBN header version 3, expected 6"), "{err}");
        let err = refused(&file, &Expected { sw_id: 0x09, ..expected(3) });
        assert!(err.contains("does not name SW_ID 0x9"), "{err}");
    }

    #[test]
    fn the_certificate_chain_is_verified() {
        let mut file = image(MbnVersion::V6, BASE, BASE);
        let (_, table) = offsets(&file, MbnVersion::V6);
        // The attestation certificate starts after the hash table (3 x 48) and the 256-byte
        // signature; change a letter of its issuer's common name.
        let att = table + 3 * 48 + 256;
        assert_eq!(file[att], 0x30);
        let issuer = &file[att..att + 120];
        let at = att + issuer.windows(6).position(|w| w == b"warden").unwrap();
        file[at] = b'W';
        let err = refused(&file, &expected(6));
        assert!(
            err.contains("the attestation certificate is not signed by the root's key"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(refused(b"not an elf", &expected(3)).contains("not an ELF64"));
        let mut file = image(MbnVersion::V3, BASE, BASE);
        // Turn the hash segment into an ordinary PT_NULL.
        let flags = mbn::EHDR_SIZE + mbn::PHDR_SIZE + 4;
        file[flags + 3] = 0;
        let err = refused(&file, &expected(3));
        assert!(err.contains("0 hash segments"), "{err}");
    }
}
