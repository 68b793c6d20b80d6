//! A minimal `newc` (SVR4, no CRC) cpio writer, the format Linux unpacks as an initramfs, and a
//! reader for checking what was written.
//!
//! Each entry: a 110-byte ASCII header (`070701` and 13 eight-digit hex fields), the NUL-terminated
//! name padded to a multiple of 4 bytes (counting the header), then the data padded to 4. The
//! archive ends with an entry named `TRAILER!!!`.

use anyhow::{Context, Result, bail, ensure};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One archive member. `path` is relative (`bin/busybox`), `permissions` the low 12 mode bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub permissions: u32,
    pub kind: Kind,
}

impl Entry {
    /// The full `st_mode` (type and permission bits).
    pub fn mode(&self) -> u32 {
        let kind = match self.kind {
            Kind::Directory => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDevice { .. } => S_IFCHR,
        };
        kind | (self.permissions & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(bytes) => bytes,
            Kind::Symlink(target) => target.as_bytes(),
            Kind::Directory | Kind::CharDevice { .. } => &[],
        }
    }
}

/// An archive being built; entries are written in insertion order (parents before children is
/// the caller's job, checked by [`Archive::to_bytes`]).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: Vec<Entry>,
}

fn check_path(path: &str) -> Result<()> {
    ensure!(!path.is_empty(), "empty path in cpio archive");
    ensure!(!path.starts_with('/'), "cpio path `{path}` must be relative");
    ensure!(!path.contains('\0'), "cpio path `{path}` contains a NUL byte");
    ensure!(
        path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
        "cpio path `{path}` has an empty, `.` or `..` component"
    );
    ensure!(path != TRAILER, "`{TRAILER}` is reserved");
    Ok(())
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn push(&mut self, path: &str, permissions: u32, kind: Kind) -> Result<&mut Self> {
        check_path(path)?;
        ensure!(!self.entries.iter().any(|e| e.path == path), "cpio path `{path}` added twice");
        self.entries.push(Entry { path: path.to_owned(), permissions, kind });
        Ok(self)
    }

    pub fn dir(&mut self, path: &str) -> Result<&mut Self> {
        self.push(path, 0o755, Kind::Directory)
    }

    pub fn file(&mut self, path: &str, permissions: u32, data: Vec<u8>) -> Result<&mut Self> {
        ensure!(u32::try_from(data.len()).is_ok(), "cpio member `{path}` is 4 GiB or larger");
        self.push(path, permissions, Kind::File(data))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        ensure!(!target.is_empty() && !target.contains('\0'), "bad symlink target for `{path}`");
        self.push(path, 0o777, Kind::Symlink(target.to_owned()))
    }

    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self> {
        self.push(path, permissions, Kind::CharDevice { major, minor })
    }

    /// The archive in `newc` format, trailer included. Every entry's parent directory must have
    /// been added before it (the kernel does not create missing parents).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                let ok = self.entries[..index]
                    .iter()
                    .any(|e| e.path == parent && e.kind == Kind::Directory);
                ensure!(ok, "cpio: `{}` comes before its directory `{parent}`", entry.path);
            }
            // Inode 0 is avoided: some readers treat it as "no inode".
            let ino = u32::try_from(index + 1).context("too many cpio entries")?;
            write_entry(&mut out, ino, entry)?;
        }
        let trailer = Entry { path: TRAILER.into(), permissions: 0, kind: Kind::File(Vec::new()) };
        write_entry_raw(&mut out, 0, 0, &trailer.path, &[], 1, (0, 0))?;
        Ok(out)
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_entry(out: &mut Vec<u8>, ino: u32, entry: &Entry) -> Result<()> {
    let nlink = if entry.kind == Kind::Directory { 2 } else { 1 };
    let rdev = match entry.kind {
        Kind::CharDevice { major, minor } => (major, minor),
        _ => (0, 0),
    };
    write_entry_raw(out, ino, entry.mode(), &entry.path, entry.data(), nlink, rdev)
}

fn write_entry_raw(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
) -> Result<()> {
    let filesize = u32::try_from(data.len()).context("cpio member too large")?;
    let namesize = u32::try_from(name.len() + 1).context("cpio name too long")?;
    // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
    // namesize check. uid/gid 0 (root), mtime 0 so the archive is reproducible.
    let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev_major, rdev_minor, namesize, 0];
    out.extend_from_slice(MAGIC);
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

/// A member read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub rdev: (u32, u32),
    pub name: String,
    pub data: Vec<u8>,
}

impl ParsedEntry {
    /// Converts back into an [`Entry`] (for round-trip checks).
    pub fn to_entry(&self) -> Result<Entry> {
        let permissions = self.mode & 0o7777;
        let kind = match self.mode & S_IFMT {
            S_IFDIR => Kind::Directory,
            S_IFREG => Kind::File(self.data.clone()),
            S_IFLNK => Kind::Symlink(
                String::from_utf8(self.data.clone()).context("symlink target is not UTF-8")?,
            ),
            S_IFCHR => Kind::CharDevice { major: self.rdev.0, minor: self.rdev.1 },
            other => bail!("unsupported file type {other:o} for `{}`", self.name),
        };
        Ok(Entry { path: self.name.clone(), permissions, kind })
    }
}

fn hex_field(header: &[u8], index: usize) -> Result<u32> {
    let start = 6 + index * 8;
    let text = header.get(start..start + 8).context("truncated cpio header")?;
    let text = std::str::from_utf8(text).context("cpio header field is not ASCII")?;
    u32::from_str_radix(text, 16).with_context(|| format!("cpio header field `{text}` is not hex"))
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Parses a `newc` archive up to its trailer (entries after it are ignored, as Linux does with
/// the padding between concatenated archives).
pub fn parse(bytes: &[u8]) -> Result<Vec<ParsedEntry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let header = bytes.get(at..at + HEADER_LEN).context("cpio archive ends without trailer")?;
        ensure!(&header[..6] == MAGIC, "no newc magic at offset {at}");
        let field = |i| hex_field(header, i);
        let (ino, mode, nlink) = (field(0)?, field(1)?, field(4)?);
        let filesize = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        ensure!(namesize >= 1, "cpio entry at {at} has an empty name");
        let name_start = at + HEADER_LEN;
        let name_bytes =
            bytes.get(name_start..name_start + namesize).context("truncated cpio name")?;
        ensure!(name_bytes.last() == Some(&0), "cpio name at {name_start} is not NUL-terminated");
        let name = std::str::from_utf8(&name_bytes[..namesize - 1])
            .context("cpio name is not UTF-8")?
            .to_owned();
        let data_start = align4(name_start + namesize);
        let data = bytes.get(data_start..data_start + filesize).context("truncated cpio data")?;
        at = align4(data_start + filesize);
        if name == TRAILER {
            return Ok(out);
        }
        out.push(ParsedEntry { ino, mode, nlink, rdev, name, data: data.to_vec() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.dir("bin").unwrap();
        a.file("bin/busybox", 0o755, b"\x7fELF fake busybox".to_vec()).unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.dir("dev").unwrap();
        a.char_device("dev/console", 0o600, 5, 1).unwrap();
        a.file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec()).unwrap();
        a.file("empty", 0o644, Vec::new()).unwrap();
        a
    }

    #[test]
    fn round_trip_names_modes_contents() {
        let archive = sample();
        let bytes = archive.to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let parsed = parse(&bytes).unwrap();
        let back: Vec<Entry> = parsed.iter().map(|p| p.to_entry().unwrap()).collect();
        assert_eq!(back, archive.entries());
        assert_eq!(parsed[1].mode, 0o100755);
        assert_eq!(parsed[2].mode, 0o120777);
        assert_eq!(parsed[4].mode, 0o020600);
        assert_eq!(parsed[4].rdev, (5, 1));
        assert_eq!(parsed[0].nlink, 2);
        let inos: Vec<u32> = parsed.iter().map(|p| p.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn exact_header_bytes() {
        let mut a = Archive::new();
        a.file("ab", 0o644, b"xyz".to_vec()).unwrap();
        let bytes = a.to_bytes().unwrap();
        let expected_header = "070701\
            00000001000081a4000000000000000000000001000000000000000300000000\
            00000000000000000000000000000003\
            00000000";
        assert_eq!(&bytes[..HEADER_LEN], expected_header.as_bytes());
        // name "ab\0" ends at 113, padded to 116; data at 116..119, padded to 120.
        assert_eq!(&bytes[110..116], b"ab\0\0\0\0");
        assert_eq!(&bytes[116..120], b"xyz\0");
        assert_eq!(&bytes[120..126], b"070701");
        assert_eq!(&bytes[230..241], b"TRAILER!!!\0");
    }

    #[test]
    fn rejects_bad_paths_and_order() {
        let mut a = Archive::new();
        for bad in ["", "/init", "a//b", "a/../b", "./x", "TRAILER!!!", "a\0b"] {
            assert!(a.file(bad, 0o644, Vec::new()).is_err(), "{bad:?}");
        }
        a.file("x", 0o644, Vec::new()).unwrap();
        assert!(a.file("x", 0o644, Vec::new()).is_err(), "duplicate");
        assert!(a.symlink("y", "").is_err());
        let mut orphan = Archive::new();
        orphan.file("lib/modules/a.ko", 0o644, vec![1]).unwrap();
        let err = orphan.to_bytes().unwrap_err().to_string();
        assert!(err.contains("before its directory `lib/modules`"), "{err}");
    }

    #[test]
    fn parser_rejects_damage() {
        let bytes = sample().to_bytes().unwrap();
        assert!(parse(&bytes[..bytes.len() - 20]).is_err(), "trailer cut off");
        let mut bad_magic = bytes.clone();
        bad_magic[5] = b'2';
        assert!(parse(&bad_magic).is_err());
        let mut bad_hex = bytes.clone();
        bad_hex[7] = b'g';
        assert!(parse(&bad_hex).is_err());
        assert!(parse(b"").is_err());
    }

    /// GNU cpio, when installed, lists the same names and extracts the same contents.
    #[test]
    fn gnu_cpio_agrees_when_available() {
        let Ok(out) = Command::new("cpio").arg("--version").output() else {
            eprintln!("cpio not installed; skipping the cross-check");
            return;
        };
        assert!(out.status.success());
        let bytes = sample().to_bytes().unwrap();
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &bytes).unwrap();
        drop(child.stdin.take());
        let listing = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init", "empty"]);
        assert!(listing.lines().any(|l| l.starts_with("crw-------") && l.contains("5,")));
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
    }
}
