//! `seal.json` in the data folder: how this folder's root key is sealed
//! (written by `keyward operator init`). It holds no secret: for Shamir the
//! initialization's id and its N and K, for PKCS#11 the root key wrapped by
//! the HSM's key (useless without the HSM).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside the data folder.
pub const SEAL_FILE: &str = "seal.json";

/// The contents of `seal.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealFile {
    /// Format version (1).
    pub version: u32,
    /// `shamir` or `pkcs11`.
    pub kind: String,
    /// When `keyward operator init` ran (Unix ms).
    pub created_ms: i64,
    /// Shamir: the initialization's id (every share names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_id: Option<String>,
    /// Shamir: how many shares were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u32>,
    /// Shamir: how many rebuild the root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Shamir: each share's commitment (hex SHA-256, by index), so a share
    /// is checked when it is offered (see `Share::commitment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_commitments: Option<Vec<String>>,
    /// PKCS#11: the root key wrapped by the HSM's key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_root: Option<String>,
    /// PKCS#11: the label of the HSM key that wrapped `wrapped_root`. It
    /// overrides `[root_key] key_label` (the label init creates), so a
    /// rotation can move the root key to a new HSM key and the old one can
    /// be destroyed. Absent: the configured label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    /// While a root-key rotation may not have finished: how the root key
    /// before it was sealed. Whichever opens the store is kept; the other
    /// is dropped (for an HSM, at the next start, so the old root key
    /// cannot be unwrapped again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<SealFile>>,
}

/// An exclusive lock on `data_dir/seal.lock`, held by whatever changes which
/// HSM key the folder needs (a root-key rotation, offline or online, and
/// `root-key destroy-hsm-key`), so a key is never destroyed while a
/// rotation is moving to it. Released on drop.
#[derive(Debug)]
pub struct SealLock {
    _file: std::fs::File,
}

impl SealLock {
    /// Takes the lock, or says who may hold it.
    pub fn acquire(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("seal.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "{} is held: a root-key rotation or `root-key destroy-hsm-key` is running on {}; try again when it ends",
                path.display(),
                data_dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
}

impl SealFile {
    /// Its path in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(SEAL_FILE)
    }

    /// Reads `data_dir/seal.json`, if there is one.
    pub fn read(data_dir: &Path) -> Result<Option<Self>, String> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file: Self = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.version != 1 {
            return Err(format!(
                "{}: version {} is not one this Keyward reads (1)",
                path.display(),
                file.version
            ));
        }
        Ok(Some(file))
    }

    /// The HSM settings that unwrap this file's root key: `base` with this
    /// file's key label, when it names one.
    pub fn hsm(&self, base: &crate::config::HsmConfig) -> crate::config::HsmConfig {
        let mut cfg = base.clone();
        if let Some(l) = &self.key_label {
            cfg.key_label.clone_from(l);
        }
        cfg
    }

    /// A loader that unwraps this file's root key with the HSM (`base` with
    /// this file's key label).
    pub fn hsm_loader(&self, base: &crate::config::HsmConfig) -> Result<super::RootLoader, String> {
        let wrapped = self
            .wrapped_root
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .ok_or("seal.json: no wrapped_root (hex)")?;
        Ok(super::pkcs11::loader(self.hsm(base), wrapped))
    }

    /// Of this file and its `previous` (a rotation that may not have
    /// settled), the entry whose root key `fits` the store, with that key;
    /// the entry without `previous` and with its key label written out (so
    /// a later change of `[root_key] key_label` does not change which key it
    /// needs). An entry that does not unwrap (its HSM key destroyed) is not
    /// the one in use; if none fits, the first unwrap error, if any, says why.
    pub fn hsm_entry_in_use(
        &self,
        base: &crate::config::HsmConfig,
        fits: &dyn Fn(&keyward_crypto::RootKey) -> bool,
    ) -> Result<(keyward_crypto::RootKey, SealFile), String> {
        let mut failed = None;
        for entry in std::iter::once(self).chain(self.previous.as_deref()) {
            match entry.hsm_loader(base)?() {
                Ok(root) if fits(&root) => {
                    let mut entry = entry.clone();
                    entry.previous = None;
                    entry.key_label.get_or_insert_with(|| base.key_label.clone());
                    return Ok((root, entry));
                }
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        Err(failed.unwrap_or_else(|| "no root key in seal.json opens this store".into()))
    }

    /// Parses the bytes of a seal file (from a backup).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("seal.json: {e}"))
    }

    /// The bytes written.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a seal file serializes");
        b.push(b'\n');
        b
    }

    /// Writes it to `data_dir/seal.json` atomically (a synced temporary
    /// file renamed into place, then the folder synced), mode 0600.
    pub fn write(&self, data_dir: &Path) -> Result<(), String> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{SEAL_FILE}.tmp"));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let _ = std::fs::remove_file(&tmp);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&self.to_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SealFile::read(dir.path()).unwrap(), None);
        let f = SealFile {
            version: 1,
            kind: "shamir".into(),
            created_ms: 1,
            init_id: Some("0a0b0c0d".into()),
            shares: Some(5),
            threshold: Some(3),
            share_commitments: Some(vec!["00".repeat(32)]),
            wrapped_root: None,
            key_label: None,
            previous: None,
        };
        f.write(dir.path()).unwrap();
        assert_eq!(SealFile::read(dir.path()).unwrap(), Some(f.clone()));
        f.write(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(SealFile::path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("seal.json.tmp").exists());
        std::fs::write(SealFile::path(dir.path()), "{\"version\":2,\"kind\":\"x\",\"created_ms\":0}")
            .unwrap();
        assert!(SealFile::read(dir.path()).unwrap_err().contains("version 2"));
    }

    #[test]
    fn the_seal_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = SealLock::acquire(dir.path()).unwrap();
        assert!(SealLock::acquire(dir.path()).unwrap_err().contains("is running"));
        drop(held);
        SealLock::acquire(dir.path()).unwrap();
    }
}
