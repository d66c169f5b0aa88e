//! How client commands reach the server: the connection flags (accepted both
//! before the subcommand, `keyward --addr X key list`, and after it,
//! `keyward key list --addr X`), the TLS channel, the bearer token, and the
//! checksums every client command sends and checks.
//!
//! Only client commands carry these flags; `keyward server` does not.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::transport::Channel;

use super::render::Output;
use super::CliError;
use crate::checksum::{context_crc, crc};
use crate::pb::access_service_client::AccessServiceClient;
use crate::pb::audit_service_client::AuditServiceClient;
use crate::pb::crypto_service_client::CryptoServiceClient;
use crate::pb::key_service_client::KeyServiceClient;
use crate::pb::operator_service_client::OperatorServiceClient;

/// Connection flags given before the subcommand (`keyward --addr X key list`),
/// with their environment variables and defaults.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address for client commands.
    #[arg(long, env = "KEYWARD_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token for client commands.
    #[arg(long, env = "KEYWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// server.
    #[arg(long, env = "KEYWARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "KEYWARD_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "KEYWARD_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Do not send or check CRC32C checksums of request and response data.
    #[arg(long)]
    pub no_crc32c: bool,
    /// Output format of client commands.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The same flags given after a client subcommand (`keyward key list --addr X`);
/// they win over [`ClientArgs`]. No environment or defaults here: those are
/// applied once, by [`ClientArgs`], so a flag always beats the environment.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ClientFlags {
    /// Server address (default from KEYWARD_ADDR, else http://127.0.0.1:50051).
    #[arg(long = "addr", global = true, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Bearer token (default from KEYWARD_TOKEN).
    #[arg(long = "token", global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// server (default from KEYWARD_CA_CERT).
    #[arg(long = "ca-cert", global = true, value_name = "CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (default from KEYWARD_CLIENT_CERT).
    #[arg(long = "client-cert", global = true, value_name = "CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (default from KEYWARD_CLIENT_KEY).
    #[arg(long = "client-key", global = true, value_name = "CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Do not send or check CRC32C checksums of request and response data.
    #[arg(long = "no-crc32c", global = true)]
    pub no_crc32c: bool,
    /// Output format.
    #[arg(long = "output", global = true, value_enum)]
    pub output: Option<Output>,
}

impl ClientArgs {
    /// Merges the flags given after the subcommand (which win) into these.
    pub fn with(&self, f: &ClientFlags) -> (Connection, Output) {
        let pick =
            |later: &Option<PathBuf>, earlier: &Option<PathBuf>| later.clone().or_else(|| earlier.clone());
        let conn = Connection {
            addr: f.addr.clone().unwrap_or_else(|| self.addr.clone()),
            token: f.token.clone().or_else(|| self.token.clone()),
            ca_cert: pick(&f.ca_cert, &self.ca_cert),
            client_identity: pick(&f.client_cert, &self.client_cert)
                .zip(pick(&f.client_key, &self.client_key)),
            checksums: !(self.no_crc32c || f.no_crc32c),
        };
        (conn, f.output.unwrap_or(self.output))
    }
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

/// A channel with the bearer token added to every call.
pub(crate) type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A connected client: typed stubs, checksums, and errors naming the server.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) addr: String,
    channel: Channel,
    bearer: Bearer,
    pub(crate) checksums: bool,
}

impl Client {
    /// Connects (with TLS for https:// or when certificates are given).
    pub(crate) async fn connect(conn: &Connection) -> Result<Self, CliError> {
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
        // An empty KEYWARD_TOKEN (`export KEYWARD_TOKEN=`) is no token: the
        // server then says one is missing, not that it is invalid.
        let bearer = match conn.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Bearer(Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| CliError::Input("--token is not a valid header value".into()))?,
            )),
            None => Bearer(None),
        };
        Ok(Self { addr: addr.to_string(), channel, bearer, checksums: conn.checksums })
    }

    /// The KeyService stub.
    pub(crate) fn keys(&self) -> KeyServiceClient<Authed> {
        KeyServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The CryptoService stub.
    pub(crate) fn crypto(&self) -> CryptoServiceClient<Authed> {
        CryptoServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The AuditService stub.
    pub(crate) fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The AccessService stub.
    pub(crate) fn access(&self) -> AccessServiceClient<Authed> {
        AccessServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The OperatorService stub.
    pub(crate) fn operator(&self) -> OperatorServiceClient<Authed> {
        OperatorServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The CRC32C to send for `bytes` (unless checksums are off).
    pub(crate) fn sum(&self, bytes: &[u8]) -> Option<u32> {
        self.checksums.then(|| crc(bytes))
    }

    /// The CRC32C to send for an encryption context.
    pub(crate) fn context_sum(&self, ctx: &HashMap<String, String>) -> Option<u32> {
        self.checksums.then(|| context_crc(ctx))
    }

    /// Checks a returned field against the server's CRC32C.
    pub(crate) fn check(&self, field: &str, bytes: &[u8], sum: u32) -> Result<(), CliError> {
        if self.checksums && crc(bytes) != sum {
            return Err(CliError::Input(format!(
                "the {field} returned by {} failed its CRC32C check (corrupted in transit); not using it",
                self.addr
            )));
        }
        Ok(())
    }

    /// A refusal from the server, naming it.
    /// The server's refusal, with its request id (to find its audit record).
    pub(crate) fn rpc(&self, s: tonic::Status) -> CliError {
        let mut message = s.message().to_string();
        if let Some(id) = s.metadata().get("x-request-id").and_then(|v| v.to_str().ok()) {
            message.push_str(&format!(" (request id {id})"));
        }
        CliError::Rpc { addr: self.addr.clone(), code: s.code(), message }
    }
}
