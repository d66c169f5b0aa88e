//! The root key: where it comes from (an operator's file, or a development
//! key beside the data), reading it (mode 0600 or stricter, 64 hex
//! characters), and writing a fresh one (`keyward root-key create`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keyward_crypto::RootKey;

use super::ConfigError;

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// An operator-provided file (must exist, mode 0600 or stricter).
    File(PathBuf),
    /// A development key file, created if missing, with a loud warning.
    Dev(PathBuf),
}

impl RootKeySource {
    /// `--root-key-file` (or `root_key_file`) if given, else with `dev` the
    /// development key in the data folder.
    pub(super) fn choose(file: Option<PathBuf>, dev: bool, data_dir: &Path) -> Result<Self, ConfigError> {
        match (file, dev) {
            (Some(p), _) => Ok(RootKeySource::File(p)),
            (None, true) => Ok(RootKeySource::Dev(data_dir.join("dev-root.key"))),
            (None, false) => Err(ConfigError::Invalid(
                "no root key: pass --root-key-file (or root_key_file in the config), or run with --dev"
                    .into(),
            )),
        }
    }
}

/// Reads (or, for a development source, creates) the root key.
pub fn load_root_key(source: &RootKeySource) -> Result<RootKey, ConfigError> {
    let path = match source {
        RootKeySource::File(p) => p,
        RootKeySource::Dev(p) => {
            if !p.exists() {
                create_root_key_file(p)?;
                tracing::warn!(
                    path = %p.display(),
                    "DEVELOPMENT MODE: generated a root key and stored it unprotected beside the data. \
                     Anyone who can read this file can decrypt every key. Never use --dev in production."
                );
            } else {
                tracing::warn!(path = %p.display(), "DEVELOPMENT MODE: using the development root key beside the data");
            }
            p
        }
    };
    let bad = |message: String| ConfigError::RootKey { path: path.clone(), message };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode is {mode:04o}; it must not be accessible to group or others (chmod 600 {})",
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.trim()).map_err(|_| bad("must hold 64 hexadecimal characters (32 bytes)".into()))?,
    );
    RootKey::from_bytes(&bytes).map_err(|_| bad("must hold 64 hexadecimal characters (32 bytes)".into()))
}

/// Writes a fresh random root key to `path` with mode 0600; refuses to overwrite.
pub fn create_root_key_file(path: &Path) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::RootKey { path: path.to_path_buf(), message };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
    }
    let key = RootKey::generate().map_err(|e| bad(e.to_string()))?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key.expose_secret())));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_file_permissions_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        create_root_key_file(&p).unwrap();
        assert!(create_root_key_file(&p).is_err(), "never overwrites");
        load_root_key(&RootKeySource::File(p.clone())).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_root_key(&RootKeySource::File(p.clone())).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "not hex").unwrap();
        let e = load_root_key(&RootKeySource::File(p)).unwrap_err().to_string();
        assert!(e.contains("64 hexadecimal"), "{e}");
    }
}
