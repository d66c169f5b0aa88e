//! The backup file (`keyward backup create`): one file holding every entry
//! of a store, as of one snapshot, with a manifest and a checksum.
//!
//! Layout (version 1), all integers big-endian:
//!
//! ```text
//! magic     "KEYWARD-BACKUP\n" 0x01
//! frames    tag (1 byte) | length (u32) | payload
//!   'H'     header, JSON: format, created_ms, keyward_version,
//!           store_format, column_families (names, by index), seal (the
//!           data folder's seal.json, or null)
//!   'E'     entry: column family index (1 byte) | key length (u32) | key | value
//!   'M'     manifest, JSON: entries per column family, total bytes of entries
//! 'Z'       SHA-256 of every byte before this frame (32 bytes), last
//! ```
//!
//! Entries are the store's bytes as they are: wrapped secrets, sealed
//! signing and access keys, hashed tokens, tagged records. A backup holds no
//! secret in the clear; it is useless without the root key. Readers check
//! the checksum only at the end, so [`verify`] reads the whole file before
//! anyone trusts an entry, and restore reads it twice (verify, then apply).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// The file's first bytes.
pub const MAGIC: &[u8; 16] = b"KEYWARD-BACKUP\n\x01";

/// Longest frame accepted (an entry's key and value, or a JSON frame).
pub const MAX_FRAME: u32 = 64 << 20;

/// Why a backup file is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid backup (corrupted, truncated or not one).
    #[error("not a valid Keyward backup: {0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> BackupError {
    BackupError::Invalid(m.into())
}

/// The header frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Backup format (1).
    pub format: u32,
    /// When the snapshot was taken (Unix ms).
    pub created_ms: i64,
    /// The Keyward that wrote it.
    pub keyward_version: String,
    /// The store's format version.
    pub store_format: u32,
    /// Column family names, by the index entries name them with.
    pub column_families: Vec<String>,
    /// The data folder's `seal.json` (how its root key is sealed), if any.
    pub seal: Option<serde_json::Value>,
}

/// The manifest frame: what the entries add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Entries per column family.
    pub entries: BTreeMap<String, u64>,
    /// Bytes of keys and values in all.
    pub bytes: u64,
}

/// Writes a backup: [`BackupWriter::new`], an [`BackupWriter::entry`] per
/// stored entry, then [`BackupWriter::finish`].
pub struct BackupWriter<W: Write> {
    out: W,
    hash: Context,
    cfs: Vec<String>,
    manifest: Manifest,
}

impl<W: Write> std::fmt::Debug for BackupWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup with `header` (its column families name the entries).
    pub fn new(out: W, header: &Header) -> Result<Self, BackupError> {
        let mut w = Self {
            out,
            hash: Context::new(&SHA256),
            cfs: header.column_families.clone(),
            manifest: Manifest::default(),
        };
        w.put(MAGIC)?;
        let json = serde_json::to_vec(header).map_err(|e| invalid(e.to_string()))?;
        w.frame(b'H', &[&json])?;
        Ok(w)
    }

    /// Adds one entry of column family `cf`.
    pub fn entry(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        let index = self
            .cfs
            .iter()
            .position(|c| c == cf)
            .ok_or_else(|| invalid(format!("unknown column family {cf}")))?;
        let klen = u32::try_from(key.len()).map_err(|_| invalid("key too long"))?;
        self.frame(b'E', &[&[index as u8], &klen.to_be_bytes(), key, value])?;
        *self.manifest.entries.entry(cf.to_string()).or_default() += 1;
        self.manifest.bytes += (key.len() + value.len()) as u64;
        Ok(())
    }

    /// Writes the manifest and the checksum; returns the writer and the manifest.
    pub fn finish(mut self) -> Result<(W, Manifest), BackupError> {
        let json = serde_json::to_vec(&self.manifest).map_err(|e| invalid(e.to_string()))?;
        self.frame(b'M', &[&json])?;
        let sum = self.hash.clone().finish();
        self.out.write_all(b"Z")?;
        self.out.write_all(&32u32.to_be_bytes())?;
        self.out.write_all(sum.as_ref())?;
        self.out.flush()?;
        Ok((self.out, self.manifest))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.hash.update(bytes);
        self.out.write_all(bytes)?;
        Ok(())
    }

    fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), BackupError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len =
            u32::try_from(len).ok().filter(|l| *l <= MAX_FRAME).ok_or_else(|| invalid("frame too large"))?;
        self.put(&[tag])?;
        self.put(&len.to_be_bytes())?;
        for p in parts {
            self.put(p)?;
        }
        Ok(())
    }
}

/// One entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its column family.
    pub cf: String,
    /// Its key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// What a whole, intact backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// Its manifest (the entries were counted and match it).
    pub manifest: Manifest,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// Reads a backup, calling `f` for each entry in order; checks the
/// structure, the counts against the manifest and finally the checksum.
/// Entries handed to `f` are not yet known to be intact: only a returned
/// `Ok` says the whole file is.
pub fn read(
    input: impl Read,
    f: &mut dyn FnMut(Entry) -> Result<(), BackupError>,
) -> Result<Verified, BackupError> {
    let mut r = Reader { input, hash: Context::new(&SHA256) };
    let mut magic = [0u8; 16];
    r.exact(&mut magic).map_err(|_| invalid("too short to be a backup"))?;
    if &magic != MAGIC {
        return Err(invalid("it does not start with KEYWARD-BACKUP (version 1)"));
    }
    let (tag, body) = r.frame()?.ok_or_else(|| invalid("no header"))?;
    if tag != b'H' {
        return Err(invalid("the first frame is not the header"));
    }
    let header: Header = serde_json::from_slice(&body).map_err(|e| invalid(format!("header: {e}")))?;
    if header.format != 1 {
        return Err(invalid(format!("backup format {} is not one this Keyward reads (1)", header.format)));
    }
    if header.column_families.len() > 255 {
        return Err(invalid("too many column families"));
    }
    let mut counted = Manifest::default();
    let manifest = loop {
        let (tag, body) = r.frame()?.ok_or_else(|| invalid("truncated: no manifest"))?;
        match tag {
            b'E' => {
                if body.len() < 5 {
                    return Err(invalid("an entry is too short"));
                }
                let cf = header
                    .column_families
                    .get(usize::from(body[0]))
                    .ok_or_else(|| invalid("an entry names an unknown column family"))?
                    .clone();
                let klen = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
                if body.len() < 5 + klen {
                    return Err(invalid("an entry's key overruns it"));
                }
                let (key, value) = (body[5..5 + klen].to_vec(), body[5 + klen..].to_vec());
                *counted.entries.entry(cf.clone()).or_default() += 1;
                counted.bytes += (key.len() + value.len()) as u64;
                f(Entry { cf, key, value })?;
            }
            b'M' => {
                break serde_json::from_slice::<Manifest>(&body)
                    .map_err(|e| invalid(format!("manifest: {e}")))?
            }
            other => return Err(invalid(format!("unexpected frame {:?}", other as char))),
        }
    };
    let sum = r.hash.clone().finish();
    let mut tail = [0u8; 37];
    r.input.read_exact(&mut tail).map_err(|_| invalid("truncated: no checksum"))?;
    if tail[0] != b'Z' || tail[1..5] != 32u32.to_be_bytes() {
        return Err(invalid("the checksum frame is malformed"));
    }
    let given = &tail[5..];
    if !subtle_eq(given, sum.as_ref()) {
        return Err(invalid("its checksum does not match its contents: the file is corrupted"));
    }
    let mut extra = [0u8; 1];
    if r.input.read(&mut extra)? != 0 {
        return Err(invalid("bytes follow the checksum"));
    }
    if manifest != counted {
        return Err(invalid("its entries do not add up to its manifest"));
    }
    Ok(Verified { header, manifest, sha256: hex::encode(sum.as_ref()) })
}

/// Checks a whole backup without applying it.
pub fn verify(input: impl Read) -> Result<Verified, BackupError> {
    read(input, &mut |_| Ok(()))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Reader<R> {
    input: R,
    hash: Context,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => invalid("truncated"),
            _ => BackupError::Io(e),
        })?;
        self.hash.update(buf);
        Ok(())
    }

    /// The next frame, or `None` at a clean end (there is none before the checksum).
    fn frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, BackupError> {
        let mut head = [0u8; 5];
        self.exact(&mut head)?;
        if head[0] == b'Z' {
            return Err(invalid("the checksum comes before the manifest"));
        }
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return Err(invalid(format!("a frame claims {len} bytes (at most {MAX_FRAME})")));
        }
        let mut body = vec![0u8; len as usize];
        self.exact(&mut body)?;
        Ok(Some((head[0], body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: 1,
            created_ms: 1_700_000_000_000,
            keyward_version: "0.1.0".into(),
            store_format: 2,
            column_families: vec!["keys".into(), "audit".into()],
            seal: None,
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new(), &header()).unwrap();
        w.entry("keys", b"k1", b"v1").unwrap();
        w.entry("audit", &7u64.to_be_bytes(), b"{\"seq\":7}").unwrap();
        w.entry("keys", b"k2", b"").unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn round_trips_and_counts() {
        let bytes = sample();
        let mut seen = Vec::new();
        let v = read(&bytes[..], &mut |e| {
            seen.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(v.header, header());
        assert_eq!(v.manifest.entries, BTreeMap::from([("keys".into(), 2), ("audit".into(), 1)]));
        assert_eq!(
            seen[1],
            Entry { cf: "audit".into(), key: 7u64.to_be_bytes().to_vec(), value: b"{\"seq\":7}".to_vec() }
        );
        assert_eq!(seen[2].value, b"");
        assert!(BackupWriter::new(Vec::new(), &header()).unwrap().entry("nope", b"", b"").is_err());
    }

    #[test]
    fn every_single_byte_flip_and_every_truncation_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(verify(&b[..]).is_err(), "flip at {i} accepted");
            assert!(verify(&bytes[..i]).is_err(), "truncation at {i} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(verify(&longer[..]).unwrap_err().to_string().contains("follow"));
        verify(&bytes[..]).unwrap();
    }

    /// The bytes of a backup are frozen: a change to the format is a new version.
    #[test]
    fn golden_layout() {
        let bytes = sample();
        assert_eq!(&bytes[..16], MAGIC);
        assert_eq!(bytes[16], b'H');
        let v = verify(&bytes[..]).unwrap();
        assert_eq!(v.sha256, hex::encode(ring::digest::digest(&SHA256, &bytes[..bytes.len() - 37]).as_ref()));
        let first_entry = 16 + 5 + u32::from_be_bytes(bytes[17..21].try_into().unwrap()) as usize;
        assert_eq!(&bytes[first_entry..first_entry + 14], b"E\0\0\0\x09\0\0\0\0\x02k1v1");
    }
}
