//! The root key: where it comes from (an operator's file, a development key
//! beside the data, Shamir key shares given at unseal, or an HSM over
//! PKCS#11), reading a key file (mode 0600 or stricter, 64 hex characters),
//! and writing a fresh one (`keyward root-key create`).

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
    /// Rebuilt from key shares at unseal (`keyward operator init --shares N
    /// --threshold K`); the server starts sealed.
    Shamir,
    /// Stored in the data folder wrapped by an AES key that never leaves an
    /// HSM, unwrapped at start.
    Pkcs11(HsmConfig),
}

/// `[root_key] kind = "pkcs11"`: which HSM key wraps the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmConfig {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// File holding the user PIN (mode 0600).
    pub pin_file: PathBuf,
    /// Label of the AES wrapping key on the token.
    pub key_label: String,
}

impl RootKeySource {
    /// The source named by `--root-key-file`, `root_key_file` and
    /// `[root_key]`; `--dev` only with a key file (or none).
    pub(super) fn from_config(
        flag: Option<PathBuf>,
        top: Option<PathBuf>,
        table: Option<super::file::FileRootKey>,
        dev: bool,
        data_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let Some(t) = table else {
            return Self::choose(flag.or(top), dev, data_dir);
        };
        if top.is_some() {
            return invalid("root_key_file and [root_key] both name the root key; keep one".into());
        }
        let kind = t.kind.as_deref().unwrap_or("file");
        let pkcs11_fields =
            t.module.is_some() || t.token_label.is_some() || t.pin_file.is_some() || t.key_label.is_some();
        if kind != "pkcs11" && pkcs11_fields {
            return invalid(format!(
                "[root_key] module, token_label, pin_file and key_label are for kind = \"pkcs11\", not {kind:?}"
            ));
        }
        if kind != "file" && t.file.is_some() {
            return invalid(format!("[root_key] file is for kind = \"file\", not {kind:?}"));
        }
        if kind != "file" && (dev || flag.is_some()) {
            let what = if dev { "--dev" } else { "--root-key-file" };
            return invalid(format!(
                "{what} uses a root key file; it does not combine with [root_key] kind = {kind:?}"
            ));
        }
        match kind {
            "file" => Self::choose(flag.or(t.file), dev, data_dir),
            "shamir" => Ok(Self::Shamir),
            "pkcs11" => {
                let need = |v: Option<String>, f: &str| {
                    v.filter(|s| !s.is_empty()).ok_or_else(|| {
                        ConfigError::Invalid(format!("[root_key] kind = \"pkcs11\" needs {f}"))
                    })
                };
                let module = t.module.ok_or_else(|| {
                    ConfigError::Invalid(
                        "[root_key] kind = \"pkcs11\" needs module (the PKCS#11 library)".into(),
                    )
                })?;
                let pin_file = t.pin_file.ok_or_else(|| {
                    ConfigError::Invalid("[root_key] kind = \"pkcs11\" needs pin_file".into())
                })?;
                Ok(Self::Pkcs11(HsmConfig {
                    module,
                    token_label: need(t.token_label, "token_label")?,
                    pin_file,
                    key_label: need(t.key_label, "key_label")?,
                }))
            }
            other => {
                invalid(format!("[root_key] kind must be \"file\", \"shamir\" or \"pkcs11\", not {other:?}"))
            }
        }
    }

    /// The name `SealStatus` reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) | Self::Dev(_) => "file",
            Self::Shamir => "shamir",
            Self::Pkcs11(_) => "pkcs11",
        }
    }

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
        RootKeySource::Shamir | RootKeySource::Pkcs11(_) => {
            return Err(ConfigError::Invalid(format!(
                "the root key of [root_key] kind = {:?} is not in a file",
                source.kind()
            )))
        }
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
    let key = RootKey::generate()
        .map_err(|e| ConfigError::RootKey { path: path.to_path_buf(), message: e.to_string() })?;
    write_root_key_file(path, &key)
}

/// Writes `key` to `path` (64 hex characters, mode 0600, synced); refuses to
/// overwrite. Atomic: the key is written to a temporary file that is then
/// linked into place, so a crash never leaves a partial key file at `path`.
pub fn write_root_key_file(path: &Path, key: &RootKey) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::RootKey { path: path.to_path_buf(), message };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
    }
    if path.exists() {
        return Err(bad("exists already; a root key file is never overwritten".into()));
    }
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key.expose_secret())));
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        // Fails if `path` appeared meanwhile: never overwrites.
        fs::hard_link(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    })();
    let _ = fs::remove_file(&tmp);
    written.map_err(|e| bad(e.to_string()))
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
