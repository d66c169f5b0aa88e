//! Server configuration: typed, validated once, before any socket is bound.
//!
//! Sources, later ones winning: built-in defaults, a TOML file (`--config`),
//! command-line flags. `--dev` fills in a local data folder and a generated
//! development root key.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_core::{AuditLogConfig, KmsConfig, Limits};
use keyward_crypto::RootKey;
use serde::Deserialize;

/// Why a configuration was refused. The binary exits with status 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The root key file is unusable.
    #[error("root key file {path}: {message}")]
    RootKey {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The TOML file's shape. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// RocksDB folder.
    pub data_dir: Option<PathBuf>,
    /// File holding the root key (64 hex characters, mode 0600).
    pub root_key_file: Option<PathBuf>,
    /// Development mode (generated root key; loopback only).
    pub dev: Option<bool>,
    /// Request limits.
    #[serde(default)]
    pub limits: FileLimits,
    /// Audit log tuning.
    #[serde(default)]
    pub audit: FileAudit,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest Encrypt plaintext.
    pub max_plaintext_bytes: Option<usize>,
    /// Largest data key.
    pub max_data_key_bytes: Option<usize>,
    /// Most encryption context pairs.
    pub max_context_pairs: Option<usize>,
    /// Most encryption context bytes.
    pub max_context_bytes: Option<usize>,
    /// Largest request message.
    pub max_request_bytes: Option<usize>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// How long a request waits for its audit record before failing UNAVAILABLE.
    pub deadline_ms: Option<u64>,
    /// Most records per synced write.
    pub max_batch: Option<usize>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--dev`.
    pub dev: bool,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--root-key-file`.
    pub root_key_file: Option<PathBuf>,
}

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// An operator-provided file (must exist, mode 0600 or stricter).
    File(PathBuf),
    /// A development key file, created if missing, with a loud warning.
    Dev(PathBuf),
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// RocksDB folder.
    pub data_dir: PathBuf,
    /// Root key source.
    pub root_key: RootKeySource,
    /// Largest request message in bytes.
    pub max_request_bytes: usize,
    /// Use-case settings.
    pub kms: KmsConfig,
}

impl ServerConfig {
    /// Merges defaults, the file named by `--config` (if any) and flags, and validates.
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let file = match &o.config {
            Some(path) => {
                let text = fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, o)
    }

    /// Validates a parsed file plus overrides.
    pub fn from_parts(file: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let dev = o.dev || file.dev.unwrap_or(false);
        let listen_str = o.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:50051".into());
        let listen: SocketAddr = listen_str.parse().map_err(|_| {
            ConfigError::Invalid(format!("listen: {listen_str:?} is not an address like 127.0.0.1:50051"))
        })?;
        let data_dir =
            o.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("./keyward-data"));
        let root_key =
            match (o.root_key_file.clone().or(file.root_key_file), dev) {
                (Some(p), _) => RootKeySource::File(p),
                (None, true) => RootKeySource::Dev(data_dir.join("dev-root.key")),
                (None, false) => return Err(ConfigError::Invalid(
                    "no root key: pass --root-key-file (or root_key_file in the config), or run with --dev"
                        .into(),
                )),
            };
        if dev && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--dev serves without transport security and may only listen on loopback, not {listen}"
            )));
        }
        let d = Limits::default();
        let l = file.limits;
        let limits = Limits {
            max_plaintext_bytes: l.max_plaintext_bytes.unwrap_or(d.max_plaintext_bytes),
            max_data_key_bytes: l.max_data_key_bytes.unwrap_or(d.max_data_key_bytes),
            max_context_pairs: l.max_context_pairs.unwrap_or(d.max_context_pairs),
            max_context_bytes: l.max_context_bytes.unwrap_or(d.max_context_bytes),
        };
        let max_request_bytes = l.max_request_bytes.unwrap_or(64 * 1024);
        if limits.max_plaintext_bytes == 0 || limits.max_data_key_bytes == 0 {
            return Err(ConfigError::Invalid("limits: sizes must be at least 1".into()));
        }
        if max_request_bytes < limits.max_plaintext_bytes + limits.max_context_bytes {
            return Err(ConfigError::Invalid(
                "limits.max_request_bytes must hold the largest plaintext plus the largest context".into(),
            ));
        }
        let ad = AuditLogConfig::default();
        let audit = AuditLogConfig {
            deadline: file.audit.deadline_ms.map(Duration::from_millis).unwrap_or(ad.deadline),
            max_batch: file.audit.max_batch.unwrap_or(ad.max_batch),
        };
        if audit.deadline.is_zero() || audit.max_batch == 0 {
            return Err(ConfigError::Invalid("audit: deadline_ms and max_batch must be positive".into()));
        }
        Ok(Self { listen, data_dir, root_key, max_request_bytes, kms: KmsConfig { limits, audit } })
    }

    /// A development configuration over `data_dir` (tests use it with port 0).
    pub fn dev(data_dir: &Path) -> Self {
        Self::from_parts(
            FileConfig::default(),
            &Overrides { dev: true, data_dir: Some(data_dir.to_path_buf()), ..Default::default() },
        )
        .expect("dev defaults are valid")
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
    fn dev_defaults() {
        let c =
            ServerConfig::from_parts(FileConfig::default(), &Overrides { dev: true, ..Default::default() })
                .unwrap();
        assert_eq!(c.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./keyward-data"));
        assert_eq!(c.root_key, RootKeySource::Dev(PathBuf::from("./keyward-data/dev-root.key")));
        assert_eq!(c.kms.limits, Limits::default());
    }

    #[test]
    fn refusals_are_clear() {
        let e = ServerConfig::from_parts(FileConfig::default(), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("--root-key-file"), "{e}");
        let o = Overrides { dev: true, listen: Some("0.0.0.0:1".into()), ..Default::default() };
        assert!(ServerConfig::from_parts(FileConfig::default(), &o)
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        let o = Overrides { dev: true, listen: Some("nope".into()), ..Default::default() };
        assert!(ServerConfig::from_parts(FileConfig::default(), &o)
            .unwrap_err()
            .to_string()
            .starts_with("listen:"));
        let bad: Result<FileConfig, _> = toml::from_str("listn = \"x\"");
        assert!(bad.unwrap_err().to_string().contains("listn"));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../deploy/keyward.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert!(matches!(c.root_key, RootKeySource::File(_)));
    }

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
