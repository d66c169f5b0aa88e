//! The `keyward` command line: the server subcommand and a gRPC client for
//! every RPC, with readable output and `--output json`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::pb;
use crate::pb::audit_service_client::AuditServiceClient;
use crate::pb::crypto_service_client::CryptoServiceClient;
use crate::pb::key_service_client::KeyServiceClient;

/// Keyward: a key management service over gRPC.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    /// Server address for client commands.
    #[arg(long, global = true, env = "KEYWARD_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token for client commands.
    #[arg(long, global = true, env = "KEYWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// server.
    #[arg(long, global = true, env = "KEYWARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, env = "KEYWARD_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "KEYWARD_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Do not send or check CRC32C checksums of request and response data.
    #[arg(long, global = true)]
    pub no_crc32c: bool,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable: aligned tables for lists, fields for one item.
    #[value(alias = "text")]
    Table,
    /// One JSON document.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Server(ServerArgs),
    /// Manage root key files.
    #[command(subcommand, name = "root-key")]
    RootKey(RootKeyCommand),
    /// Create bearer tokens for the configuration.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Create, inspect and change keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create and delete aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Encrypt up to 4 KiB under a key; prints the ciphertext in base64.
    Encrypt(EncryptArgs),
    /// Decrypt a base64 ciphertext; prints the plaintext.
    Decrypt(DecryptArgs),
    /// Generate a data key under a key.
    DataKey(DataKeyArgs),
    /// Random bytes from the server's CSPRNG, base64.
    Random {
        /// How many (1 to 1024).
        #[arg(long, default_value_t = 32)]
        bytes: u32,
    },
    /// Re-encrypt a ciphertext under another key without exposing its plaintext.
    ReEncrypt(ReEncryptArgs),
    /// Re-encrypt many ciphertexts (one base64 per line, from a file or
    /// stdin) under a key's current version, streaming; one output line per
    /// input line, failures reported on stderr (their output line is empty).
    Rewrap(RewrapArgs),
    /// Query and verify the key-usage log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script, e.g. `keyward completions bash > /etc/bash_completion.d/keyward`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `keyward server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
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
    pub log_format: Option<crate::config::LogFormat>,
}

/// `keyward root-key ...`.
#[derive(Debug, Subcommand)]
pub enum RootKeyCommand {
    /// Write a new random root key to FILE (mode 0600; never overwrites).
    Create {
        /// Where to write it.
        file: PathBuf,
    },
}

/// `keyward token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token once, and the line to paste into the config.
    Create {
        /// The principal it is for (only printed as a reminder).
        #[arg(long, default_value = "my-service")]
        principal: String,
    },
}

/// `keyward key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key.
    Create {
        /// Alias to create with it (alias/<name>).
        #[arg(long)]
        alias: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Label k=v (repeatable).
        #[arg(long = "label", value_parser = parse_pair)]
        labels: Vec<(String, String)>,
        /// Rotation policy.
        #[command(flatten)]
        rotation: RotationArgs,
    },
    /// Set the rotation policy (a period, a usage cap, or both); without
    /// options it clears the policy. Manual rotation does not move the schedule.
    RotationPolicy {
        /// Key id or alias.
        key: String,
        /// The policy.
        #[command(flatten)]
        rotation: RotationArgs,
    },
    /// Show a key.
    Describe {
        /// Key id or alias.
        key: String,
    },
    /// List keys.
    List {
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Continue from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Add a new primary version.
    Rotate {
        /// Key id or alias.
        key: String,
    },
    /// Enable a key.
    Enable {
        /// Key id or alias.
        key: String,
    },
    /// Disable a key (every crypto operation is refused until enabled).
    Disable {
        /// Key id or alias.
        key: String,
    },
    /// Schedule deletion: unusable at once, material erased after the window.
    ScheduleDeletion {
        /// Key id or alias.
        key: String,
        /// Days, 7 to 30.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion (the key comes back disabled).
    CancelDeletion {
        /// Key id or alias.
        key: String,
    },
    /// Manage one version of a key.
    #[command(subcommand)]
    Version(VersionCommand),
}

/// `keyward key version ...`.
#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// Disable a version (it refuses Decrypt).
    Disable {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Enable a disabled version.
    Enable {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Schedule a version's destruction.
    ScheduleDestruction {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
        /// Days, 1 to 365.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Restore a version scheduled for destruction (it comes back disabled).
    Restore {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Mark a version compromised (one way): its ciphertexts then open only
    /// through ReEncrypt (`keyward rewrap`), never Decrypt.
    Compromise {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// List a key's versions with their state and usage counts.
    List {
        /// Key id or alias.
        key: String,
    },
}

/// Rotation policy options.
#[derive(Debug, Args)]
pub struct RotationArgs {
    /// Rotate every PERIOD (at least 1h), e.g. 90d, 720h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rotation_period: Option<Duration>,
    /// First scheduled rotation (RFC 3339; default: one period from now).
    #[arg(long)]
    pub next_rotation: Option<String>,
    /// Rotate before a version seals more than N (encryptions plus data keys).
    #[arg(long)]
    pub max_encryptions_per_version: Option<u64>,
}

impl RotationArgs {
    fn fields(
        &self,
    ) -> Result<(Option<prost_types::Duration>, Option<prost_types::Timestamp>, u64), CliError> {
        let period = self.rotation_period.map(|d| prost_types::Duration {
            seconds: d.as_secs().min(i64::MAX as u64) as i64,
            nanos: d.subsec_nanos() as i32,
        });
        Ok((
            period,
            rfc3339("next-rotation", &self.next_rotation)?,
            self.max_encryptions_per_version.unwrap_or(0),
        ))
    }
}

/// `keyward alias ...`.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point a new alias at a key.
    Create {
        /// alias/<name>.
        alias: String,
        /// Key id or alias.
        key: String,
    },
    /// Delete an alias.
    Delete {
        /// alias/<name>.
        alias: String,
    },
}

/// `keyward encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// Plaintext as text; without it, read from --in or stdin.
    #[arg(long)]
    pub plaintext: Option<String>,
    /// File to read the plaintext from ("-" for stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
}

/// `keyward decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Base64 ciphertext; without it, read from --in or stdin.
    #[arg(long)]
    pub ciphertext: Option<String>,
    /// File holding the base64 ciphertext ("-" for stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Require the ciphertext to be under this key.
    #[arg(long)]
    pub key: Option<String>,
}

/// `keyward data-key`.
#[derive(Debug, Args)]
pub struct DataKeyArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// Length in bytes.
    #[arg(long, default_value_t = 32)]
    pub bytes: u32,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Only the encrypted data key.
    #[arg(long)]
    pub no_plaintext: bool,
    /// How many data keys (1 to 1000), in one call.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

/// `keyward rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// Destination key id or alias (usually the same key, after a rotation).
    #[arg(long)]
    pub to: String,
    /// File of base64 ciphertexts, one per line ("-" or absent: stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Write the rewrapped ciphertexts here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Source encryption context k=v (repeatable; the same for every line).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Destination encryption context k=v (repeatable; defaults to the source context).
    #[arg(long = "to-context", value_parser = parse_pair)]
    pub to_context: Vec<(String, String)>,
}

/// `keyward re-encrypt`.
#[derive(Debug, Args)]
pub struct ReEncryptArgs {
    /// Base64 ciphertext.
    #[arg(long)]
    pub ciphertext: String,
    /// Destination key id or alias.
    #[arg(long)]
    pub to: String,
    /// Source encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Destination encryption context k=v (repeatable; defaults to the source context).
    #[arg(long = "to-context", value_parser = parse_pair)]
    pub to_context: Vec<(String, String)>,
}

/// `keyward audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Query the key-usage log (newest first).
    Query(AuditQueryArgs),
    /// Export records as JSON lines (oldest first) to stdout or --out FILE.
    Export(AuditExportArgs),
    /// Walk the hash chain; with --data-dir, offline on a stopped server's data.
    Verify {
        /// Data folder of a stopped server (verifies without a server).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Filters shared by `audit query` and `audit export`.
#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Key id or alias.
    #[arg(long)]
    pub key: Option<String>,
    /// Principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// Operation (e.g. Encrypt).
    #[arg(long)]
    pub operation: Option<String>,
    /// Outcome (OK or a gRPC code name such as NOT_FOUND).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Records at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

/// `keyward audit query`.
#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Records per page.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Continue from a previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Oldest first.
    #[arg(long)]
    pub oldest_first: bool,
}

/// `keyward audit export`.
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl AuditFilter {
    fn request(
        &self,
        page_size: u32,
        page_token: String,
        oldest_first: bool,
    ) -> Result<pb::QueryAuditLogRequest, CliError> {
        Ok(pb::QueryAuditLogRequest {
            key_id: self.key.clone().unwrap_or_default(),
            principal: self.principal.clone().unwrap_or_default(),
            operation: self.operation.clone().unwrap_or_default(),
            outcome: self.outcome.clone().unwrap_or_default(),
            start_time: rfc3339("since", &self.since)?,
            end_time: rfc3339("until", &self.until)?,
            page_size,
            page_token,
            oldest_first,
        })
    }
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not k=v"))
}

/// A client command failed; printed as `error: ...`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Could not connect.
    #[error("cannot reach keyward at {addr}: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// Transport error.
        source: tonic::transport::Error,
    },
    /// The server refused.
    #[error("{code:?} from {addr}: {message}")]
    Rpc {
        /// Address.
        addr: String,
        /// gRPC code.
        code: tonic::Code,
        /// Server message.
        message: String,
    },
    /// Bad local input.
    #[error("{0}")]
    Input(String),
}

/// How a client command reaches the server.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Server address (http:// or https://).
    pub addr: String,
    /// Bearer token.
    pub token: Option<String>,
    /// CA to verify the server.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Send and check CRC32C checksums (on by default).
    pub checksums: bool,
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(REDACTED)" } else { "Bearer(none)" })
    }
}

pub(crate) type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

pub(crate) struct Client {
    pub(crate) addr: String,
    channel: Channel,
    bearer: Bearer,
    pub(crate) checksums: bool,
}

impl Client {
    async fn connect(conn: &Connection) -> Result<Self, CliError> {
        let addr = conn.addr.as_str();
        let mut endpoint = Channel::from_shared(addr.to_string())
            .map_err(|e| CliError::Input(format!("--addr {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        if addr.starts_with("https://") || conn.ca_cert.is_some() || conn.client_identity.is_some() {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| CliError::Input(format!("{}: {e}", p.display())));
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &conn.ca_cert {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &conn.client_identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| CliError::Input(format!("tls: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| CliError::Connect { addr: addr.to_string(), source })?;
        let bearer = match &conn.token {
            Some(t) => Bearer(Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| CliError::Input("--token is not a valid header value".into()))?,
            )),
            None => Bearer(None),
        };
        Ok(Self { addr: addr.to_string(), channel, bearer, checksums: conn.checksums })
    }

    fn keys(&self) -> KeyServiceClient<Authed> {
        KeyServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
    pub(crate) fn crypto(&self) -> CryptoServiceClient<Authed> {
        CryptoServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
    fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The CRC32C to send for `bytes` (unless checksums are off).
    pub(crate) fn sum(&self, bytes: &[u8]) -> Option<u32> {
        self.checksums.then(|| crate::grpc::crc(bytes))
    }

    /// The CRC32C to send for an encryption context.
    pub(crate) fn context_sum(&self, ctx: &HashMap<String, String>) -> Option<u32> {
        self.checksums.then(|| crate::grpc::context_crc(ctx))
    }

    /// Checks a returned field against the server's CRC32C.
    pub(crate) fn check(&self, field: &str, bytes: &[u8], sum: u32) -> Result<(), CliError> {
        if self.checksums && crate::grpc::crc(bytes) != sum {
            return Err(CliError::Input(format!(
                "the {field} returned by {} failed its CRC32C check (corrupted in transit); not using it",
                self.addr
            )));
        }
        Ok(())
    }

    pub(crate) fn rpc(&self, s: tonic::Status) -> CliError {
        CliError::Rpc { addr: self.addr.clone(), code: s.code(), message: s.message().to_string() }
    }
}

fn time_str(t: &Option<prost_types::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds >= 0 => {
            let st = UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32);
            humantime::format_rfc3339_millis(st).to_string()
        }
        _ => String::new(),
    }
}

fn key_json(k: &pb::KeyMetadata) -> Value {
    json!({
        "key_id": k.key_id,
        "aliases": k.aliases,
        "description": k.description,
        "labels": k.labels,
        "state": state_name(k.state),
        "primary_version": k.primary_version,
        "versions": k.versions.iter().map(version_json).collect::<Vec<_>>(),
        "deletion_time": time_str(&k.deletion_time),
        "create_time": time_str(&k.create_time),
        "rotation_period": k.rotation_period.as_ref().map(duration_str).unwrap_or_default(),
        "next_rotation_time": time_str(&k.next_rotation_time),
        "max_encryptions_per_version": k.max_encryptions_per_version,
    })
}

fn version_json(v: &pb::KeyVersionMetadata) -> Value {
    json!({
        "version": v.version,
        "state": version_state_name(v.state),
        "compromised": v.compromised,
        "create_time": time_str(&v.create_time),
        "destroy_time": time_str(&v.destroy_time),
    })
}

fn duration_str(d: &prost_types::Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.seconds.max(0) as u64)).to_string()
}

fn versions_text(r: &pb::ListKeyVersionsResponse) -> String {
    let mut lines = vec![format!(
        "{:>7}  {:<26} {:>12} {:>12} {:>12}  {}",
        "VERSION", "STATE", "ENCRYPTIONS", "DATA KEYS", "DECRYPTIONS", "LAST USE"
    )];
    for v in &r.versions {
        let Some(m) = &v.metadata else { continue };
        let mut state = version_state_name(m.state).to_string();
        if v.primary {
            state.push_str(" primary");
        }
        if m.compromised {
            state.push_str(" COMPROMISED");
        }
        let last = time_str(&v.last_use_time);
        lines.push(format!(
            "{:>7}  {:<26} {:>12} {:>12} {:>12}  {}",
            m.version,
            state,
            v.encryptions,
            v.data_keys,
            v.decryptions,
            if last.is_empty() { "never".to_string() } else { last }
        ));
    }
    lines.join("\n")
}

fn state_name(s: i32) -> &'static str {
    match pb::KeyState::try_from(s) {
        Ok(pb::KeyState::Enabled) => "enabled",
        Ok(pb::KeyState::Disabled) => "disabled",
        Ok(pb::KeyState::PendingDeletion) => "pending-deletion",
        Ok(pb::KeyState::Destroyed) => "destroyed",
        _ => "unspecified",
    }
}

fn version_state_name(s: i32) -> &'static str {
    match pb::KeyVersionState::try_from(s) {
        Ok(pb::KeyVersionState::Enabled) => "enabled",
        Ok(pb::KeyVersionState::Disabled) => "disabled",
        Ok(pb::KeyVersionState::ScheduledForDestruction) => "scheduled-for-destruction",
        Ok(pb::KeyVersionState::Destroyed) => "destroyed",
        _ => "unspecified",
    }
}

fn key_text(k: &pb::KeyMetadata) -> String {
    let versions: Vec<String> = k
        .versions
        .iter()
        .map(|v| {
            let compromised = if v.compromised { ", COMPROMISED" } else { "" };
            match &v.destroy_time {
                Some(_) => format!(
                    "{} ({}{compromised}, {}, destroyed at {})",
                    v.version,
                    version_state_name(v.state),
                    time_str(&v.create_time),
                    time_str(&v.destroy_time)
                ),
                None => format!(
                    "{} ({}{compromised}, {})",
                    v.version,
                    version_state_name(v.state),
                    time_str(&v.create_time)
                ),
            }
        })
        .collect();
    let mut rotation = Vec::new();
    if let Some(p) = &k.rotation_period {
        rotation.push(format!("every {}, next at {}", duration_str(p), time_str(&k.next_rotation_time)));
    }
    if k.max_encryptions_per_version > 0 {
        rotation.push(format!("at most {} encryptions per version", k.max_encryptions_per_version));
    }
    let rotation = if rotation.is_empty() { "manual only".to_string() } else { rotation.join("; ") };
    let deletion = match &k.deletion_time {
        Some(_) => format!("\ndeletion at:     {}", time_str(&k.deletion_time)),
        None => String::new(),
    };
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    format!(
        "key_id:          {}\naliases:         {}\ndescription:     {}\nlabels:          {}\nstate:           {}\nprimary_version: {}\nversions:        {}\nrotation:        {}\ncreated:         {}{}",
        k.key_id,
        k.aliases.join(", "),
        k.description,
        labels.join(", "),
        state_name(k.state),
        k.primary_version,
        versions.join("; "),
        rotation,
        time_str(&k.create_time),
        deletion
    )
}

fn record_json(r: &pb::AuditRecord) -> Value {
    json!({
        "sequence": r.sequence,
        "time": time_str(&r.time),
        "request_id": r.request_id,
        "principal": r.principal,
        "peer": r.peer,
        "operation": r.operation,
        "key_id": r.key_id,
        "key_version": r.key_version,
        "alias": r.alias,
        "source_key_id": r.source_key_id,
        "source_key_version": r.source_key_version,
        "encryption_context": r.encryption_context,
        "outcome": r.outcome,
        "reason": r.reason,
        "previous_hash": r.previous_hash,
        "hash": r.hash,
    })
}

fn read_input(path: &Option<PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    match path.as_deref() {
        None => std::io::stdin().read_to_end(&mut buf),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut buf),
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut buf)),
    }
    .map_err(|e| CliError::Input(format!("reading input: {e}")))?;
    Ok(buf)
}

fn rfc3339(field: &str, s: &Option<String>) -> Result<Option<prost_types::Timestamp>, CliError> {
    s.as_ref()
        .map(|s| {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                CliError::Input(format!("--{field} {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T10:00:00Z)"))
            })?;
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            Ok(prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
        })
        .transpose()
}

fn print(output: Output, json: Value, text: String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json).expect("json")),
        Output::Table => println!("{text}"),
    }
}

/// Runs a client command (everything but `server` and `root-key`).
pub async fn run_client(conn: &Connection, output: Output, command: Command) -> Result<(), CliError> {
    if let Command::Audit(AuditCommand::Verify { data_dir: Some(dir) }) = &command {
        return verify_offline(dir, output);
    }
    let c = Client::connect(conn).await?;
    let mut keys = c.keys();
    let mut crypto = c.crypto();
    let mut audit = c.audit();
    match command {
        Command::Server(_) | Command::RootKey(_) | Command::Token(_) | Command::Completions { .. } => {
            unreachable!("handled by main")
        }
        Command::Key(k) => {
            let key = match k {
                KeyCommand::Create { alias, description, labels, rotation } => {
                    let (rotation_period, next_rotation_time, max_encryptions_per_version) =
                        rotation.fields()?;
                    keys.create_key(pb::CreateKeyRequest {
                        alias: alias.unwrap_or_default(),
                        description,
                        labels: labels.into_iter().collect(),
                        rotation_period,
                        next_rotation_time,
                        max_encryptions_per_version,
                    })
                    .await
                    .map(|r| r.into_inner().key)
                }
                KeyCommand::RotationPolicy { key, rotation } => {
                    let (rotation_period, next_rotation_time, max_encryptions_per_version) =
                        rotation.fields()?;
                    keys.update_rotation_policy(pb::UpdateRotationPolicyRequest {
                        key_id: key,
                        rotation_period,
                        next_rotation_time,
                        max_encryptions_per_version,
                    })
                    .await
                    .map(|r| r.into_inner().key)
                }
                KeyCommand::Version(VersionCommand::Compromise { key, version }) => keys
                    .mark_key_version_compromised(pb::MarkKeyVersionCompromisedRequest {
                        key_id: key,
                        version,
                    })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Version(VersionCommand::List { key }) => {
                    let r = keys
                        .list_key_versions(pb::ListKeyVersionsRequest { key_id: key })
                        .await
                        .map_err(|s| c.rpc(s))?
                        .into_inner();
                    let json = json!({
                        "key_id": r.key_id,
                        "versions": r.versions.iter().map(|v| {
                            let mut j = v.metadata.as_ref().map(version_json).unwrap_or_default();
                            j["primary"] = json!(v.primary);
                            j["encryptions"] = json!(v.encryptions);
                            j["data_keys"] = json!(v.data_keys);
                            j["decryptions"] = json!(v.decryptions);
                            j["last_use_time"] = json!(time_str(&v.last_use_time));
                            j
                        }).collect::<Vec<_>>(),
                    });
                    print(output, json, versions_text(&r));
                    return Ok(());
                }
                KeyCommand::Describe { key } => keys
                    .describe_key(pb::DescribeKeyRequest { key_id: key })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Rotate { key } => {
                    keys.rotate_key(pb::RotateKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
                }
                KeyCommand::Enable { key } => {
                    keys.enable_key(pb::EnableKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
                }
                KeyCommand::Disable { key } => {
                    keys.disable_key(pb::DisableKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
                }
                KeyCommand::ScheduleDeletion { key, days } => keys
                    .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                        key_id: key,
                        pending_window_days: days,
                    })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::CancelDeletion { key } => keys
                    .cancel_key_deletion(pb::CancelKeyDeletionRequest { key_id: key })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Version(VersionCommand::Disable { key, version }) => keys
                    .disable_key_version(pb::DisableKeyVersionRequest { key_id: key, version })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Version(VersionCommand::Enable { key, version }) => keys
                    .enable_key_version(pb::EnableKeyVersionRequest { key_id: key, version })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Version(VersionCommand::ScheduleDestruction { key, version, days }) => keys
                    .schedule_key_version_destruction(pb::ScheduleKeyVersionDestructionRequest {
                        key_id: key,
                        version,
                        pending_window_days: days,
                    })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::Version(VersionCommand::Restore { key, version }) => keys
                    .restore_key_version(pb::RestoreKeyVersionRequest { key_id: key, version })
                    .await
                    .map(|r| r.into_inner().key),
                KeyCommand::List { page_size, page_token } => {
                    let r = keys
                        .list_keys(pb::ListKeysRequest { page_size, page_token })
                        .await
                        .map_err(|s| c.rpc(s))?
                        .into_inner();
                    let text = r
                        .keys
                        .iter()
                        .map(|k| {
                            format!(
                                "{:<36}  {:<16} {:>7}  {}",
                                k.key_id,
                                state_name(k.state),
                                format!("v{}", k.primary_version),
                                k.aliases.join(",")
                            )
                        })
                        .chain(
                            (!r.next_page_token.is_empty())
                                .then(|| format!("next page: --page-token {}", r.next_page_token)),
                        )
                        .collect::<Vec<_>>();
                    let header = format!("{:<36}  {:<16} {:>7}  ALIASES", "KEY ID", "STATE", "PRIMARY");
                    let text = std::iter::once(header).chain(text).collect::<Vec<_>>().join("\n");
                    let text = if r.keys.is_empty() { "no keys".to_string() } else { text };
                    let json = json!({
                        "keys": r.keys.iter().map(key_json).collect::<Vec<_>>(),
                        "next_page_token": r.next_page_token,
                    });
                    print(output, json, text);
                    return Ok(());
                }
            }
            .map_err(|s| c.rpc(s))?
            .unwrap_or_default();
            print(output, key_json(&key), key_text(&key));
        }
        Command::Alias(AliasCommand::Create { alias, key }) => {
            let k = keys
                .create_alias(pb::CreateAliasRequest { alias, key_id: key })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner()
                .key
                .unwrap_or_default();
            print(output, key_json(&k), key_text(&k));
        }
        Command::Alias(AliasCommand::Delete { alias }) => {
            keys.delete_alias(pb::DeleteAliasRequest { alias: alias.clone() }).await.map_err(|s| c.rpc(s))?;
            print(output, json!({ "deleted": alias }), format!("deleted {alias}"));
        }
        Command::Encrypt(a) => {
            let plaintext = match a.plaintext {
                Some(p) => p.into_bytes(),
                None => read_input(&a.input)?,
            };
            let context: HashMap<String, String> = a.context.into_iter().collect();
            let r = crypto
                .encrypt(pb::EncryptRequest {
                    key_id: a.key,
                    plaintext_crc32c: c.sum(&plaintext),
                    encryption_context_crc32c: c.context_sum(&context),
                    plaintext,
                    encryption_context: context,
                })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
            let ct = B64.encode(&r.ciphertext);
            print(
                output,
                json!({ "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
                ct.clone(),
            );
        }
        Command::Decrypt(a) => {
            let text = match a.ciphertext {
                Some(t) => t.into_bytes(),
                None => read_input(&a.input)?,
            };
            let text = String::from_utf8(text)
                .map_err(|_| CliError::Input("ciphertext must be base64 text".into()))?;
            let ciphertext = B64
                .decode(text.trim())
                .map_err(|e| CliError::Input(format!("ciphertext is not valid base64: {e}")))?;
            let context: HashMap<String, String> = a.context.into_iter().collect();
            let r = crypto
                .decrypt(pb::DecryptRequest {
                    ciphertext_crc32c: c.sum(&ciphertext),
                    encryption_context_crc32c: c.context_sum(&context),
                    ciphertext,
                    encryption_context: context,
                    key_id: a.key.unwrap_or_default(),
                })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            let mut plaintext = zeroize::Zeroizing::new(r.plaintext);
            c.check("plaintext", &plaintext, r.plaintext_crc32c)?;
            match output {
                Output::Json => print(
                    output,
                    json!({ "plaintext": B64.encode(&*plaintext), "key_id": r.key_id, "key_version": r.key_version }),
                    String::new(),
                ),
                Output::Table => {
                    let mut out = std::io::stdout();
                    out.write_all(&plaintext)
                        .and_then(|_| out.flush())
                        .map_err(|e| CliError::Input(e.to_string()))?;
                    zeroize::Zeroize::zeroize(&mut *plaintext);
                }
            }
        }
        Command::DataKey(a) if a.count != 1 => {
            let context: HashMap<String, String> = a.context.into_iter().collect();
            let r = crypto
                .generate_data_key_batch(pb::GenerateDataKeyBatchRequest {
                    key_id: a.key,
                    number_of_bytes: Some(a.bytes),
                    encryption_context_crc32c: c.context_sum(&context),
                    encryption_context: context,
                    count: a.count,
                    without_plaintext: a.no_plaintext,
                })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            let mut items = Vec::new();
            let mut lines = Vec::new();
            for k in &r.data_keys {
                c.check("ciphertext", &k.ciphertext, k.ciphertext_crc32c)?;
                c.check("plaintext", &k.plaintext, k.plaintext_crc32c)?;
                let ct = B64.encode(&k.ciphertext);
                let pt = zeroize::Zeroizing::new(B64.encode(&k.plaintext));
                let mut j = json!({ "ciphertext": ct, "key_id": k.key_id, "key_version": k.key_version });
                if a.no_plaintext {
                    lines.push(ct);
                } else {
                    j["plaintext"] = json!(*pt);
                    lines.push(format!("{} {ct}", *pt));
                }
                items.push(j);
            }
            print(output, json!({ "data_keys": items }), lines.join("\n"));
        }
        Command::Rewrap(a) => crate::rewrap::run(&c, a).await?,
        Command::DataKey(a) => {
            let context: HashMap<String, String> = a.context.into_iter().collect();
            let req = pb::GenerateDataKeyRequest {
                key_id: a.key,
                number_of_bytes: Some(a.bytes),
                encryption_context_crc32c: c.context_sum(&context),
                encryption_context: context,
            };
            if a.no_plaintext {
                let r =
                    crypto.generate_data_key_without_plaintext(req).await.map_err(|s| c.rpc(s))?.into_inner();
                c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
                let ct = B64.encode(&r.ciphertext);
                print(
                    output,
                    json!({ "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
                    format!("ciphertext: {ct}\nkey_id:     {}\nversion:    {}", r.key_id, r.key_version),
                );
            } else {
                let r = crypto.generate_data_key(req).await.map_err(|s| c.rpc(s))?.into_inner();
                c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
                c.check("plaintext", &r.plaintext, r.plaintext_crc32c)?;
                let pt = zeroize::Zeroizing::new(B64.encode(&r.plaintext));
                let ct = B64.encode(&r.ciphertext);
                print(
                    output,
                    json!({ "plaintext": *pt, "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
                    format!(
                        "plaintext:  {}\nciphertext: {ct}\nkey_id:     {}\nversion:    {}",
                        *pt, r.key_id, r.key_version
                    ),
                );
            }
        }
        Command::Random { bytes } => {
            let r = crypto
                .generate_random(pb::GenerateRandomRequest { number_of_bytes: bytes })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            c.check("random", &r.random, r.random_crc32c)?;
            let b = zeroize::Zeroizing::new(B64.encode(&r.random));
            print(output, json!({ "random": *b }), b.to_string());
        }
        Command::ReEncrypt(a) => {
            let ciphertext = B64
                .decode(a.ciphertext.trim())
                .map_err(|e| CliError::Input(format!("ciphertext is not valid base64: {e}")))?;
            let to_context: HashMap<_, _> = if a.to_context.is_empty() {
                a.context.iter().cloned().collect()
            } else {
                a.to_context.into_iter().collect()
            };
            let from_context: HashMap<String, String> = a.context.into_iter().collect();
            let r = crypto
                .re_encrypt(pb::ReEncryptRequest {
                    ciphertext_crc32c: c.sum(&ciphertext),
                    source_encryption_context_crc32c: c.context_sum(&from_context),
                    destination_encryption_context_crc32c: c.context_sum(&to_context),
                    ciphertext,
                    source_encryption_context: from_context,
                    destination_key_id: a.to,
                    destination_encryption_context: to_context,
                    source_key_id: String::new(),
                })
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
            let ct = B64.encode(&r.ciphertext);
            print(
                output,
                json!({
                    "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version,
                    "source_key_id": r.source_key_id, "source_key_version": r.source_key_version,
                }),
                ct.clone(),
            );
        }
        Command::Audit(AuditCommand::Query(a)) => {
            let r = audit
                .query_audit_log(a.filter.request(a.limit, a.page_token, a.oldest_first)?)
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            let header = format!(
                "{:>6}  {:<24}  {:<32} {:<20} {}  {}",
                "SEQ", "TIME", "OPERATION", "OUTCOME", "KEY", "PRINCIPAL"
            );
            let text = std::iter::once(header)
                .chain(
                    r.records
                        .iter()
                        .map(|x| {
                            let key = if x.key_id.is_empty() {
                                "-".to_string()
                            } else {
                                format!("{} v{}", x.key_id, x.key_version)
                            };
                            let reason =
                                if x.reason.is_empty() { String::new() } else { format!(" ({})", x.reason) };
                            format!(
                                "{:>6}  {}  {:<32} {:<20} {}  {}{}",
                                x.sequence,
                                time_str(&x.time),
                                x.operation,
                                x.outcome,
                                key,
                                x.principal,
                                reason
                            )
                        })
                        .chain(
                            (!r.next_page_token.is_empty())
                                .then(|| format!("next page: --page-token {}", r.next_page_token)),
                        ),
                )
                .collect::<Vec<_>>()
                .join("\n");
            let json = json!({
                "records": r.records.iter().map(record_json).collect::<Vec<_>>(),
                "next_page_token": r.next_page_token,
            });
            print(output, json, text);
        }
        Command::Audit(AuditCommand::Export(a)) => export(&c, &mut audit, a).await?,
        Command::Audit(AuditCommand::Verify { data_dir: None }) => {
            let r = audit
                .verify_audit_log(pb::VerifyAuditLogRequest {})
                .await
                .map_err(|s| c.rpc(s))?
                .into_inner();
            report(output, r.records_checked, (!r.intact).then_some(r.first_bad_sequence), &r.problem)?;
        }
        Command::Audit(AuditCommand::Verify { data_dir: Some(_) }) => unreachable!("handled above"),
    }
    Ok(())
}

/// Pages through the log oldest first, one JSON object per line, with a
/// progress line on stderr (the total is the newest sequence number, an upper
/// bound when filters are set).
async fn export(
    c: &Client,
    audit: &mut AuditServiceClient<Authed>,
    a: AuditExportArgs,
) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Input(format!("writing export: {e}"));
    let newest = audit
        .query_audit_log(pb::QueryAuditLogRequest { page_size: 1, ..Default::default() })
        .await
        .map_err(|s| c.rpc(s))?
        .into_inner()
        .records
        .first()
        .map(|r| r.sequence)
        .unwrap_or(0);
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut token = String::new();
    let mut written = 0u64;
    let mut last_report = std::time::Instant::now();
    loop {
        let page = audit
            .query_audit_log(a.filter.request(1000, token, true)?)
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        for r in &page.records {
            serde_json::to_writer(&mut out, &record_json(r)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
            written += 1;
        }
        if last_report.elapsed() > Duration::from_millis(250) || page.next_page_token.is_empty() {
            last_report = std::time::Instant::now();
            let line = format!("exported {written} records (log holds {newest})");
            if tty {
                eprint!("\r{line}");
            } else if page.next_page_token.is_empty() {
                eprintln!("{line}");
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if tty {
        eprintln!();
    }
    out.flush().map_err(io)
}

fn report(output: Output, checked: u64, bad: Option<u64>, problem: &str) -> Result<(), CliError> {
    let text = match bad {
        None => format!("audit log intact: {checked} records checked"),
        Some(s) => format!("audit log BROKEN at record {s}: {problem} ({checked} records checked)"),
    };
    print(
        output,
        json!({ "records_checked": checked, "intact": bad.is_none(), "first_bad_sequence": bad.unwrap_or(0), "problem": problem }),
        text,
    );
    match bad {
        None => Ok(()),
        Some(s) => Err(CliError::Input(format!("audit chain broken at record {s}"))),
    }
}

fn verify_offline(dir: &std::path::Path, output: Output) -> Result<(), CliError> {
    let db = dir.join("db");
    let store = keyward_store::RocksStore::open_read_only(&db)
        .map_err(|e| CliError::Input(format!("{}: {e}", db.display())))?;
    let r = keyward_core::verify_chain(&store).map_err(|e| CliError::Input(e.to_string()))?;
    report(output, r.records_checked, r.first_bad_seq, r.problem.as_deref().unwrap_or(""))
}
