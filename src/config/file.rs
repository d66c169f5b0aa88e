//! The TOML file's shape (`--config`): plain serde structs, every field
//! optional, unknown fields refused. Nothing here is validated; that happens
//! once, in [`super::ServerConfig::from_parts`].

use std::path::PathBuf;

use serde::Deserialize;

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
    /// Where the root key comes from (`[root_key]`): a file, Shamir key
    /// shares, or an HSM over PKCS#11.
    pub root_key: Option<FileRootKey>,
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
    /// Runtime tokens (AccessService).
    #[serde(default)]
    pub access: FileAccess,
    /// Issuers whose JWTs identify workloads as principals (workload identity).
    #[serde(default)]
    pub jwt_issuers: Vec<FileJwtIssuer>,
    /// Serve Prometheus metrics over HTTP here (`GET /metrics`); off by default.
    pub metrics_listen: Option<String>,
    /// Serve only `grpc.health.v1`, in plaintext, here (for kubelet gRPC
    /// probes, which cannot speak TLS); off by default.
    pub health_listen: Option<String>,
    /// The Kubernetes KMS v2 plugin.
    pub kms_v2: Option<FileKmsV2>,
    /// The AWS KMS JSON API (for boto3, aws-cli, the AWS SDKs, SOPS).
    pub aws_kms: Option<FileAwsKms>,
    /// The Vault Transit HTTP API (for hvac, SOPS, Vault agents).
    pub vault_transit: Option<FileVaultTransit>,
    /// Logging.
    #[serde(default)]
    pub log: FileLog,
    /// Cluster mode: keys shared by several nodes through etcd.
    pub cluster: Option<FileCluster>,
    /// How often scheduled lifecycle work (rotation periods, destruction and
    /// deletion windows) is looked for (default "60s"; 1s to 1h).
    pub sweep_interval: Option<String>,
    /// Serve the web console here (off by default; `127.0.0.1:8080` in `--dev`).
    pub console_listen: Option<String>,
    /// How long a console session lasts without a request (default "15m";
    /// 1m to 12h).
    pub console_session_idle: Option<String>,
}

/// `[cluster]`: keys shared by several nodes through etcd.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    /// One URL per etcd member.
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// This node's name.
    pub node_id: Option<String>,
    /// The address other nodes reach this one at.
    pub advertise_addr: Option<String>,
    /// How long a node serves after it last confirmed it is current (default "2s").
    pub freshness_bound: Option<String>,
    /// Prefix of every etcd key Keyward writes (default "/keyward/").
    pub etcd_prefix: Option<String>,
    /// CA bundle of the members' certificates.
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate for the members.
    pub etcd_cert_file: Option<PathBuf>,
    /// Its key.
    pub etcd_key_file: Option<PathBuf>,
}

/// `[root_key]`: where the root key comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRootKey {
    /// `file`, `shamir` or `pkcs11`.
    pub kind: Option<String>,
    /// kind = "file": the key file (same as top-level `root_key_file`).
    pub file: Option<PathBuf>,
    /// kind = "pkcs11": the PKCS#11 module (a shared library).
    pub module: Option<PathBuf>,
    /// kind = "pkcs11": the token's label.
    pub token_label: Option<String>,
    /// kind = "pkcs11": a file holding the user PIN (mode 0600).
    pub pin_file: Option<PathBuf>,
    /// kind = "pkcs11": the label of the AES wrapping key on the token.
    pub key_label: Option<String>,
}

/// `[aws_kms]`: serve the AWS KMS JSON API over HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAwsKms {
    /// Address, e.g. 127.0.0.1:8900 (plaintext only on loopback, else TLS
    /// with `[tls]`'s certificate).
    pub listen: Option<String>,
    /// The region in ARNs and in the signature scope (default `keyward-1`).
    pub region: Option<String>,
    /// The 12-digit account in ARNs (default 000000000000).
    pub account_id: Option<String>,
}

/// `[vault_transit]`: serve the Vault Transit HTTP API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVaultTransit {
    /// Address, e.g. 127.0.0.1:8200.
    pub listen: Option<String>,
    /// The mount path (default `transit`).
    pub mount: Option<String>,
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
    /// DNS subject alternative names of this principal's client certificates.
    #[serde(default)]
    pub cert_dns_names: Vec<String>,
    /// URI subject alternative names (SPIFFE IDs, `spiffe://...`) of its
    /// client certificates.
    #[serde(default)]
    pub cert_uris: Vec<String>,
    /// Subject common names of its client certificates (matched only when listed here).
    #[serde(default)]
    pub cert_common_names: Vec<String>,
    /// Removed (it matched subject CN and DNS SAN alike): refused at start
    /// with a message naming the typed fields above.
    #[serde(default)]
    pub cert_names: Option<Vec<String>>,
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
    /// The request's encryption context must be exactly these pairs.
    pub context_equals: Option<std::collections::BTreeMap<String, String>>,
    /// The request's encryption context must contain these pairs.
    pub context_contains: Option<std::collections::BTreeMap<String, String>>,
}

/// `[access]`: runtime tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccess {
    /// Lifetime of a token created without one, e.g. "1h" (default 1h).
    pub default_token_ttl: Option<String>,
    /// The longest lifetime a token may be given, e.g. "24h" (default 30 days).
    pub max_token_ttl: Option<String>,
}

/// `[[jwt_issuers]]`: an issuer of JWTs that clients send as bearer tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJwtIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Its public keys, a JWKS document (re-read when it changes).
    pub jwks_file: PathBuf,
    /// Accepted signature algorithms (default RS256, ES256, EdDSA).
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed for `exp` and `nbf` (default 30, at most 300).
    pub leeway_seconds: Option<u64>,
    /// Claims -> principal, first match wins.
    #[serde(default)]
    pub rules: Vec<FileJwtRule>,
}

/// `[[jwt_issuers.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJwtRule {
    /// The `[[principals]]` name a matching token identifies as.
    pub principal: String,
    /// Claims that must each equal these strings.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
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
    /// Most versions a usage cap may create for one key in an hour (default 60).
    pub max_cap_rotations_per_hour: Option<u32>,
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
