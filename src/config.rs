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

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_core::{AuditLogConfig, Grant, KeySelector, KmsConfig, Limits, Permission, Policy, Role};

use crate::auth::{Authenticator, Principal};
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
    /// TLS (rustls). Without it, only loopback addresses are served, unless
    /// `allow_insecure` is set.
    pub tls: Option<FileTls>,
    /// Serve plaintext gRPC on a non-loopback address (logs a warning).
    pub allow_insecure: Option<bool>,
    /// Who may connect and what they may do.
    #[serde(default)]
    pub principals: Vec<FilePrincipal>,
    /// Serve Prometheus metrics over HTTP here (`GET /metrics`); off by default.
    pub metrics_listen: Option<String>,
    /// Serve only `grpc.health.v1`, in plaintext, here (for kubelet gRPC
    /// probes, which cannot speak TLS); off by default.
    pub health_listen: Option<String>,
    /// The Kubernetes KMS v2 plugin.
    pub kms_v2: Option<FileKmsV2>,
    /// Logging.
    #[serde(default)]
    pub log: FileLog,
}

/// `[kms_v2]`: serve the Kubernetes KMS v2 API on a unix socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKmsV2 {
    /// Unix socket path (kube-apiserver's `endpoint: unix://...`).
    pub socket: PathBuf,
    /// Key id or alias whose versions seal the apiserver's keys.
    pub key: String,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// `text` (default) or `json`.
    pub format: Option<LogFormat>,
    /// A tracing filter such as `info` or `keyward=debug`; `RUST_LOG` wins.
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter (`RUST_LOG` overrides it); default `info`.
    pub level: Option<String>,
}

/// The KMS v2 plugin settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsV2Config {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Key id or alias.
    pub key: String,
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA that signs client certificates (PEM); enables mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: refuse connections without a client certificate
    /// (default false, so bearer-token callers can still connect).
    pub require_client_cert: Option<bool>,
}

/// `[[principals]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePrincipal {
    /// Name recorded in the audit log.
    pub name: String,
    /// Roles: admin, user, auditor.
    #[serde(default)]
    pub roles: Vec<String>,
    /// SHA-256 (hex) of each bearer token of this principal.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Client certificate names (subject CN or DNS SAN) of this principal.
    #[serde(default)]
    pub cert_names: Vec<String>,
    /// Crypto grants (for the user role).
    #[serde(default)]
    pub grants: Vec<FileGrant>,
}

/// `[[principals.grants]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Key UUIDs, `alias/<name>`, `label:k=v`, or `*`.
    pub keys: Vec<String>,
    /// Operations: encrypt, decrypt, generate-data-key,
    /// generate-data-key-without-plaintext, re-encrypt-from, re-encrypt-to, or `*`.
    pub operations: Vec<String>,
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
    /// Most requests in flight on one connection.
    pub concurrency_per_connection: Option<usize>,
    /// A request running longer than this fails DEADLINE_EXCEEDED.
    pub request_timeout_ms: Option<u64>,
    /// Global rate limit, requests per second (absent: none).
    pub rate_limit_per_second: Option<f64>,
    /// Burst allowed above the rate (default: one second's worth).
    pub rate_limit_burst: Option<f64>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// How long a request waits for its audit record before failing UNAVAILABLE.
    pub deadline_ms: Option<u64>,
    /// Most records per synced write.
    pub max_batch: Option<usize>,
    /// Longest wait, in microseconds, for records of requests the server is
    /// already handling, so they share one fsync (default 500; 0: never).
    pub linger_us: Option<u64>,
}

/// Command-line overrides: the flags of `keyward server` (later sources win:
/// defaults, the `--config` file, these).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Development mode: data in ./keyward-data, generated root key, loopback only.
    #[arg(long)]
    pub dev: bool,
    /// TOML configuration file (see deploy/keyward.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data folder (RocksDB).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:50051.
    #[arg(long)]
    pub listen: Option<String>,
    /// Root key file (64 hex characters, mode 0600).
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
    /// Serve the Kubernetes KMS v2 plugin API on this unix socket.
    #[arg(long, requires = "kms_v2_key")]
    pub kms_v2_socket: Option<PathBuf>,
    /// The key (id or alias) the KMS v2 plugin seals with.
    #[arg(long, requires = "kms_v2_socket")]
    pub kms_v2_key: Option<String>,
    /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9090.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve only grpc.health.v1 in plaintext here (for kubelet probes), e.g. 0.0.0.0:8081.
    #[arg(long)]
    pub health_listen: Option<String>,
    /// Log line format (the level comes from RUST_LOG or [log] level).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// An operator-provided file (must exist, mode 0600 or stricter).
    File(PathBuf),
    /// A development key file, created if missing, with a loud warning.
    Dev(PathBuf),
}

/// TLS settings, validated.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain PEM file.
    pub cert_file: PathBuf,
    /// Private key PEM file.
    pub key_file: PathBuf,
    /// Client CA PEM file (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is mandatory.
    pub require_client_cert: bool,
}

/// Transport limits enforced at the edge.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Per-connection concurrency.
    pub concurrency_per_connection: Option<usize>,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Global rate (per second, burst).
    pub rate: Option<(f64, f64)>,
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
    /// TLS, if configured.
    pub tls: Option<TlsConfig>,
    /// Plaintext on a non-loopback address was explicitly allowed.
    pub allow_insecure: bool,
    /// How callers are identified and what they may do.
    pub auth: Authenticator,
    /// Transport limits.
    pub edge: EdgeLimits,
    /// The Kubernetes KMS v2 plugin, if enabled.
    pub kms_v2: Option<KmsV2Config>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve plaintext health checks only, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// Logging.
    pub log: LogConfig,
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
            linger: file.audit.linger_us.map(Duration::from_micros).unwrap_or(ad.linger),
            ..ad
        };
        if audit.deadline.is_zero() || audit.max_batch == 0 {
            return Err(ConfigError::Invalid("audit: deadline_ms and max_batch must be positive".into()));
        }
        let tls = file.tls.map(|t| TlsConfig {
            require_client_cert: t.require_client_cert.unwrap_or(false),
            cert_file: t.cert_file,
            key_file: t.key_file,
            client_ca_file: t.client_ca_file,
        });
        if tls.as_ref().is_some_and(|t| t.require_client_cert && t.client_ca_file.is_none()) {
            return Err(ConfigError::Invalid("tls.require_client_cert needs tls.client_ca_file".into()));
        }
        let allow_insecure = file.allow_insecure.unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !allow_insecure {
            return Err(ConfigError::Invalid(format!(
                "listen: {listen} is not a loopback address; configure [tls] or set allow_insecure = true"
            )));
        }
        let auth = if dev {
            if !file.principals.is_empty() {
                return Err(ConfigError::Invalid(
                    "--dev uses one development principal with every role; remove [[principals]] or drop --dev".into(),
                ));
            }
            Authenticator::dev()
        } else {
            principals(file.principals)?
        };
        let edge = EdgeLimits {
            concurrency_per_connection: l.concurrency_per_connection,
            request_timeout: Duration::from_millis(l.request_timeout_ms.unwrap_or(30_000)),
            rate: match l.rate_limit_per_second {
                Some(r) if r > 0.0 => Some((r, l.rate_limit_burst.unwrap_or(r).max(1.0))),
                Some(_) => {
                    return Err(ConfigError::Invalid("limits.rate_limit_per_second must be positive".into()))
                }
                None => None,
            },
        };
        if edge.concurrency_per_connection == Some(0) || edge.request_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "limits.concurrency_per_connection and request_timeout_ms must be positive".into(),
            ));
        }
        let file_v2 = file.kms_v2.map(|k| (k.socket, k.key));
        let kms_v2 = match (o.kms_v2_socket.clone(), o.kms_v2_key.clone()) {
            (Some(socket), Some(key)) => Some(KmsV2Config { socket, key }),
            (None, None) => file_v2.map(|(socket, key)| KmsV2Config { socket, key }),
            (socket, key) => match file_v2 {
                Some((fs, fk)) => Some(KmsV2Config { socket: socket.unwrap_or(fs), key: key.unwrap_or(fk) }),
                None => {
                    return Err(ConfigError::Invalid(
                        "the KMS v2 plugin needs both --kms-v2-socket and --kms-v2-key".into(),
                    ))
                }
            },
        };
        if let Some(k) = &kms_v2 {
            keyward_core::KeyRef::parse("kms_v2.key", &k.key)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let metrics_listen = match o.metrics_listen.clone().or(file.metrics_listen) {
            None => None,
            Some(m) => Some(m.parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!("metrics_listen: {m:?} is not an address like 127.0.0.1:9090"))
            })?),
        };
        let health_listen = match o.health_listen.clone().or(file.health_listen) {
            None => None,
            Some(m) => Some(m.parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!("health_listen: {m:?} is not an address like 0.0.0.0:8081"))
            })?),
        };
        let log =
            LogConfig { format: o.log_format.or(file.log.format).unwrap_or_default(), level: file.log.level };
        if let Some(l) = &log.level {
            tracing_subscriber::EnvFilter::try_new(l)
                .map_err(|e| ConfigError::Invalid(format!("log.level {l:?}: {e}")))?;
        }
        Ok(Self {
            listen,
            data_dir,
            root_key,
            max_request_bytes,
            kms: KmsConfig { limits, audit },
            tls,
            allow_insecure,
            auth,
            edge,
            kms_v2,
            metrics_listen,
            health_listen,
            log,
        })
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

fn principals(list: Vec<FilePrincipal>) -> Result<Authenticator, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::Invalid(
            "no [[principals]] configured: nobody could use this server (see deploy/keyward.toml)".into(),
        ));
    }
    let mut tokens = Vec::new();
    let mut cert_names = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in list {
        let bad = |m: String| ConfigError::Invalid(format!("principals {:?}: {m}", p.name));
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            return Err(bad("names must be non-empty and unique".into()));
        }
        let roles = p.roles.iter().map(|r| r.parse::<Role>()).collect::<Result<_, _>>().map_err(bad)?;
        let mut grants = Vec::new();
        for g in &p.grants {
            let keys = g
                .keys
                .iter()
                .map(|k| k.parse::<KeySelector>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let mut permissions = std::collections::BTreeSet::new();
            for o in &g.operations {
                if o == "*" {
                    permissions.extend(Permission::ALL);
                } else {
                    permissions.insert(o.parse::<Permission>().map_err(bad)?);
                }
            }
            grants.push(Grant { keys, permissions });
        }
        let principal = Principal { name: p.name.clone(), policy: Arc::new(Policy { roles, grants }) };
        for h in &p.token_sha256 {
            let bytes: [u8; 32] = hex::decode(h).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                bad("token_sha256 entries are 64 hex characters (keyward token create prints one)".into())
            })?;
            tokens.push((bytes, principal.clone()));
        }
        for n in &p.cert_names {
            if cert_names.insert(n.clone(), principal.clone()).is_some() {
                return Err(bad(format!("certificate name {n:?} is claimed twice")));
            }
        }
    }
    Ok(Authenticator::Configured { tokens, cert_names })
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
    fn production_and_kubernetes_examples_parse() {
        let file: FileConfig = toml::from_str(include_str!("../deploy/keyward-production.toml")).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert!(c.tls.is_some() && c.metrics_listen.is_some() && c.health_listen.is_some());
        assert_eq!(c.log.format, LogFormat::Json);
        // The ConfigMap in the Kubernetes manifest embeds a keyward.toml.
        let yaml = include_str!("../deploy/kubernetes/keyward.yaml");
        let start = yaml.find("keyward.toml: |").expect("embedded config");
        let embedded: String = yaml[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("---"))
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&embedded).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert_eq!(c.health_listen.map(|a| a.port()), Some(8081));
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
