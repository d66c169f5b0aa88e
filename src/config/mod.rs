//! Server configuration: typed, validated once, before any socket is bound.
//!
//! Sources, later ones winning: built-in defaults, a TOML file (`--config`),
//! command-line flags ([`Overrides`], which are also the flags of `keyward
//! server`). `--dev` fills in a local data folder and a generated
//! development root key. By concern: [`file`] (the TOML shape), [`listeners`],
//! [`tls`], [`principals`] (who may do what), [`jwt`] (workload identity:
//! JWT issuers and their rules), [`root_key`].

mod cluster;
mod edges;
mod file;
mod jwt;
mod listeners;
mod principals;
mod root_key;
mod tls;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_core::{AuditLogConfig, KmsConfig, Limits, TokenTtl};

use crate::auth::Authenticator;

pub use cluster::ClusterSettings;
pub use edges::{AwsKmsConfig, ConsoleConfig, VaultTransitConfig, DEFAULT_ACCOUNT, DEFAULT_REGION};
pub use file::{
    FileAudit, FileConfig, FileGrant, FileJwtIssuer, FileJwtRule, FileKmsV2, FileLimits, FileLog,
    FilePrincipal, FileTls, LogFormat,
};
pub use jwt::{ClaimRule, JwtIssuerConfig};
pub use listeners::KmsV2Config;
pub use root_key::{create_root_key_file, load_root_key, write_root_key_file, HsmConfig, RootKeySource};
pub use tls::TlsConfig;

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
    /// Serve the AWS KMS JSON API (boto3, aws-cli, the AWS SDKs, SOPS) here, e.g. 127.0.0.1:8900.
    #[arg(long)]
    pub aws_kms_listen: Option<String>,
    /// Serve the Vault Transit API (hvac, SOPS, Vault agents) here, e.g. 127.0.0.1:8200.
    #[arg(long)]
    pub vault_listen: Option<String>,
    /// Serve the web console (keys, usage plots, audit explorer) here, e.g.
    /// 127.0.0.1:8080 (on there by default in --dev).
    #[arg(long)]
    pub console_listen: Option<String>,
    /// Log line format (the level comes from RUST_LOG or [log] level).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Cluster mode: the etcd members that hold the shared keys, e.g.
    /// http://127.0.0.1:2379,http://127.0.0.1:22379 (see [cluster]).
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Cluster mode: this node's name.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Upgrade a data folder written by an earlier Keyward (an older stored
    /// format) in place: its key records and audit log are authenticated as
    /// they are now. Needed once; only if nobody else could have written to it.
    #[arg(long)]
    pub upgrade: bool,
    /// Tests of scheduled work only, with --dev: move this server's wall
    /// clock by the milliseconds written in this file (re-read every 100 ms).
    #[arg(long, hide = true, requires = "dev")]
    pub dev_clock_file: Option<PathBuf>,
}

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter (`RUST_LOG` overrides it); default `info`.
    pub level: Option<String>,
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
    /// `[[jwt_issuers]]`, validated; their JWKS files are read by
    /// `Server::build`, which attaches them to `auth`.
    pub jwt_issuers: Vec<JwtIssuerConfig>,
    /// Transport limits.
    pub edge: EdgeLimits,
    /// The Kubernetes KMS v2 plugin, if enabled.
    pub kms_v2: Option<KmsV2Config>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve plaintext health checks only, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// The AWS KMS JSON API, if served.
    pub aws_kms: Option<AwsKmsConfig>,
    /// The Vault Transit API, if served.
    pub vault_transit: Option<VaultTransitConfig>,
    /// The web console, if served.
    pub console: Option<ConsoleConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Cluster mode (keys in etcd), if configured.
    pub cluster: Option<ClusterSettings>,
    /// How often scheduled lifecycle work is looked for (`sweep_interval`).
    pub sweep_every: Duration,
    /// `--dev-clock-file`: the wall clock moved by the offset in this file.
    pub dev_clock_file: Option<PathBuf>,
}

impl ServerConfig {
    /// Merges defaults, the file named by `--config` (if any) and flags, and validates.
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let file = match &o.config {
            Some(path) => {
                let text = fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
                return Self::from_toml(&text, path, o);
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, o)
    }

    /// Parses and validates the text of a configuration file (named `path`
    /// in errors) plus overrides. Reads and writes no file: what the TOML
    /// loader's fuzz target drives.
    pub fn from_toml(text: &str, path: &Path, o: &Overrides) -> Result<Self, ConfigError> {
        let file = toml::from_str::<FileConfig>(text)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
        Self::from_parts(file, o)
    }

    /// Validates a parsed file plus overrides.
    pub fn from_parts(file: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let dev = o.dev || file.dev.unwrap_or(false);
        if o.dev_clock_file.is_some() && !dev {
            return Err(ConfigError::Invalid("--dev-clock-file is for tests and needs --dev".into()));
        }
        let listen_str = o.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:50051".into());
        let listen = listeners::socket_addr("listen", &listen_str, "127.0.0.1:50051")?;
        let data_dir =
            o.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("./keyward-data"));
        let root_key = RootKeySource::from_config(
            o.root_key_file.clone(),
            file.root_key_file,
            file.root_key,
            dev,
            &data_dir,
        )?;
        if dev && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--dev serves without transport security and may only listen on loopback, not {listen}"
            )));
        }
        let (limits, max_request_bytes) = limits(&file.limits)?;
        let audit = audit(&file.audit)?;
        let tls = TlsConfig::from_file(file.tls)?;
        let allow_insecure = file.allow_insecure.unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !allow_insecure {
            return Err(ConfigError::Invalid(format!(
                "listen: {listen} is not a loopback address; configure [tls] or set allow_insecure = true"
            )));
        }
        // A principal only a client certificate could identify, on a server
        // that asks for none, could never connect: say so now.
        let verifies_certs = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        let cert_only = file
            .principals
            .iter()
            .find(|p| {
                !p.cert_dns_names.is_empty() || !p.cert_uris.is_empty() || !p.cert_common_names.is_empty()
            })
            .map(|p| p.name.clone());
        let token_ttl = token_ttl(&file.access)?;
        let (auth, bootstrap_principals) = principals::authenticator(dev, file.principals)?;
        let jwt_issuers = jwt::issuers(dev, file.jwt_issuers)?;
        if let (Some(name), false) = (cert_only, verifies_certs) {
            return Err(ConfigError::Invalid(format!(
                "principals {name:?}: certificate names need [tls] client_ca_file (client certificates are not verified without it)"
            )));
        }
        let edge = edge(&file.limits)?;
        let kms_v2 = listeners::kms_v2(o.kms_v2_socket.clone(), o.kms_v2_key.clone(), file.kms_v2)?;
        let metrics_listen = listeners::optional_addr(
            "metrics_listen",
            o.metrics_listen.clone().or(file.metrics_listen),
            "127.0.0.1:9090",
        )?;
        let health_listen = listeners::optional_addr(
            "health_listen",
            o.health_listen.clone().or(file.health_listen),
            "0.0.0.0:8081",
        )?;
        let aws_kms = edges::aws_kms(o.aws_kms_listen.clone(), file.aws_kms)?;
        let vault_transit = edges::vault_transit(o.vault_listen.clone(), file.vault_transit)?;
        let console = edges::console(
            o.console_listen.clone(),
            file.console_listen,
            file.console_session_idle.as_deref(),
            dev,
        )?;
        for (field, addr) in [
            ("aws_kms.listen", aws_kms.as_ref().map(|a| a.listen)),
            ("vault_transit.listen", vault_transit.as_ref().map(|v| v.listen)),
            ("console_listen", console.as_ref().map(|c| c.listen)),
        ] {
            if let Some(addr) = addr {
                edges::check_listener(field, addr, tls.is_some(), allow_insecure, dev)?;
            }
        }
        let cluster = cluster::settings(o.etcd_endpoints.clone(), o.node_id.clone(), file.cluster)?;
        if cluster.is_some() && !matches!(root_key, RootKeySource::File(_) | RootKeySource::Dev(_)) {
            return Err(ConfigError::Invalid(format!(
                "cluster mode takes a root key file (--root-key-file, the same on every node); [root_key] kind = {:?} is not supported in cluster mode yet",
                root_key.kind()
            )));
        }
        if cluster.is_some() && matches!(root_key, RootKeySource::Dev(_)) {
            return Err(ConfigError::Invalid(
                "--dev in cluster mode needs --root-key-file: every node must be given the same root key (create one with `keyward root-key create FILE`)".into(),
            ));
        }
        let sweep_every = sweep_interval(file.sweep_interval.as_deref())?;
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
            kms: KmsConfig { limits, audit, adopt_older_format: o.upgrade, bootstrap_principals, token_ttl },
            tls,
            allow_insecure,
            auth,
            jwt_issuers,
            edge,
            kms_v2,
            metrics_listen,
            health_listen,
            aws_kms,
            vault_transit,
            console,
            log,
            cluster,
            sweep_every,
            dev_clock_file: o.dev_clock_file.clone(),
        })
    }

    /// A development configuration over `data_dir` (tests use it with port
    /// 0), without the console `--dev` would serve on 127.0.0.1:8080.
    pub fn dev(data_dir: &Path) -> Self {
        let mut c = Self::from_parts(
            FileConfig::default(),
            &Overrides { dev: true, data_dir: Some(data_dir.to_path_buf()), ..Default::default() },
        )
        .expect("dev defaults are valid");
        c.console = None;
        c
    }
}

/// `sweep_interval`: how often the sweeper looks for due rotations,
/// destructions and deletions (default a minute; 1 s to 1 h).
fn sweep_interval(v: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(Duration::from_secs(60)) };
    let d = humantime::parse_duration(v).map_err(|e| {
        ConfigError::Invalid(format!("sweep_interval {v:?}: {e} (say e.g. \"60s\" or \"5m\")"))
    })?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(ConfigError::Invalid(format!("sweep_interval {v:?}: must be between 1s and 1h")));
    }
    Ok(d)
}

/// The longest `max_token_ttl`: a year (and a day).
const MAX_TOKEN_TTL_MS: i64 = 366 * 24 * 3_600_000;

/// `[access]`: how long runtime tokens live.
fn token_ttl(a: &file::FileAccess) -> Result<TokenTtl, ConfigError> {
    let d = TokenTtl::default();
    let parse = |field: &str, v: &Option<String>, default: i64| -> Result<i64, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let ms = humantime::parse_duration(v)
            .map_err(|e| {
                ConfigError::Invalid(format!("access.{field} {v:?}: {e} (say e.g. \"1h\" or \"15m\")"))
            })?
            .as_millis();
        i64::try_from(ms).ok().filter(|ms| (1000..=MAX_TOKEN_TTL_MS).contains(ms)).ok_or_else(|| {
            ConfigError::Invalid(format!("access.{field} {v:?}: must be between 1s and 366days"))
        })
    };
    let max_ms = parse("max_token_ttl", &a.max_token_ttl, d.max_ms)?;
    let default_ms = parse("default_token_ttl", &a.default_token_ttl, d.default_ms.min(max_ms))?;
    if default_ms > max_ms {
        return Err(ConfigError::Invalid(format!(
            "access.default_token_ttl ({} s) is longer than access.max_token_ttl ({} s)",
            default_ms / 1000,
            max_ms / 1000
        )));
    }
    Ok(TokenTtl { default_ms, max_ms })
}

/// `[limits]`: the use-case limits and the largest request message.
fn limits(l: &FileLimits) -> Result<(Limits, usize), ConfigError> {
    let d = Limits::default();
    let limits = Limits {
        max_plaintext_bytes: l.max_plaintext_bytes.unwrap_or(d.max_plaintext_bytes),
        max_data_key_bytes: l.max_data_key_bytes.unwrap_or(d.max_data_key_bytes),
        max_context_pairs: l.max_context_pairs.unwrap_or(d.max_context_pairs),
        max_context_bytes: l.max_context_bytes.unwrap_or(d.max_context_bytes),
        max_cap_rotations_per_hour: l.max_cap_rotations_per_hour.unwrap_or(d.max_cap_rotations_per_hour),
    };
    let max_request_bytes = l.max_request_bytes.unwrap_or(64 * 1024);
    if limits.max_plaintext_bytes == 0 || limits.max_data_key_bytes == 0 {
        return Err(ConfigError::Invalid("limits: sizes must be at least 1".into()));
    }
    if limits.max_cap_rotations_per_hour == 0 {
        return Err(ConfigError::Invalid("limits.max_cap_rotations_per_hour must be at least 1".into()));
    }
    if max_request_bytes < limits.max_plaintext_bytes + limits.max_context_bytes {
        return Err(ConfigError::Invalid(
            "limits.max_request_bytes must hold the largest plaintext plus the largest context".into(),
        ));
    }
    Ok((limits, max_request_bytes))
}

/// `[audit]`: the audit writer's tuning.
fn audit(a: &FileAudit) -> Result<AuditLogConfig, ConfigError> {
    let ad = AuditLogConfig::default();
    let audit = AuditLogConfig {
        deadline: a.deadline_ms.map(Duration::from_millis).unwrap_or(ad.deadline),
        max_batch: a.max_batch.unwrap_or(ad.max_batch),
        linger: a.linger_us.map(Duration::from_micros).unwrap_or(ad.linger),
        ..ad
    };
    if audit.deadline.is_zero() || audit.max_batch == 0 {
        return Err(ConfigError::Invalid("audit: deadline_ms and max_batch must be positive".into()));
    }
    Ok(audit)
}

/// The transport limits of `[limits]`.
fn edge(l: &FileLimits) -> Result<EdgeLimits, ConfigError> {
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
    Ok(edge)
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
    fn certificate_names_without_a_client_ca_are_refused() {
        let text = "root_key_file = \"/k\"\n[[principals]]\nname = \"svc\"\nroles = [\"user\"]\ncert_dns_names = [\"svc.example\"]\n";
        let e = ServerConfig::from_toml(text, Path::new("t.toml"), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("client_ca_file") && e.to_string().contains("svc"), "{e}");
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
    fn the_sweep_interval_is_a_minute_unless_set_between_a_second_and_an_hour() {
        let dev = Overrides { dev: true, ..Default::default() };
        let load = |text: &str| ServerConfig::from_toml(text, Path::new("t.toml"), &dev);
        assert_eq!(load("").unwrap().sweep_every, Duration::from_secs(60));
        assert_eq!(load("sweep_interval = \"5s\"").unwrap().sweep_every, Duration::from_secs(5));
        for bad in ["500ms", "2h", "often"] {
            let e = load(&format!("sweep_interval = \"{bad}\"")).unwrap_err().to_string();
            assert!(e.starts_with("sweep_interval") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_dev_clock_needs_dev() {
        let o = Overrides {
            root_key_file: Some("/k".into()),
            dev_clock_file: Some("/offset".into()),
            ..Default::default()
        };
        let e = ServerConfig::from_parts(FileConfig::default(), &o).unwrap_err().to_string();
        assert!(e.contains("--dev-clock-file") && e.contains("--dev"), "{e}");
        let o = Overrides { dev: true, dev_clock_file: Some("/offset".into()), ..Default::default() };
        let c = ServerConfig::from_parts(FileConfig::default(), &o).unwrap();
        assert_eq!(c.dev_clock_file.as_deref(), Some(Path::new("/offset")));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../deploy/keyward.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert!(matches!(c.root_key, RootKeySource::File(_)));
        assert_eq!(c.kms.token_ttl, TokenTtl { default_ms: 3_600_000, max_ms: 720 * 3_600_000 });
        assert_eq!(c.kms.bootstrap_principals.len(), 3);
    }

    #[test]
    fn token_lifetimes_are_checked_naming_the_field() {
        let ttl = |text: &str| {
            let file: FileConfig = toml::from_str(&format!("[access]\n{text}")).unwrap();
            token_ttl(&file.access).map_err(|e| e.to_string())
        };
        assert_eq!(ttl("").unwrap(), TokenTtl::default());
        assert_eq!(
            ttl("max_token_ttl = \"30m\"").unwrap(),
            TokenTtl { default_ms: 1_800_000, max_ms: 1_800_000 }
        );
        for (text, needle) in [
            ("max_token_ttl = \"banana\"", "access.max_token_ttl"),
            ("default_token_ttl = \"0s\"", "access.default_token_ttl"),
            ("max_token_ttl = \"100000y\"", "between 1s and 366days"),
            ("default_token_ttl = \"2h\"\nmax_token_ttl = \"1h\"", "longer than access.max_token_ttl"),
        ] {
            let e = ttl(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<FileConfig>("[access]\nttl = \"1h\"").is_err(), "unknown fields refused");
    }

    #[test]
    fn production_and_kubernetes_examples_parse() {
        let file: FileConfig = toml::from_str(include_str!("../../deploy/keyward-production.toml")).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert!(c.tls.is_some() && c.metrics_listen.is_some() && c.health_listen.is_some());
        assert_eq!(c.log.format, LogFormat::Json);
        // The ConfigMap in the Kubernetes manifest embeds a keyward.toml.
        let yaml = include_str!("../../deploy/kubernetes/keyward.yaml");
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
}
