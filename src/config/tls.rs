//! TLS settings: validated from `[tls]`, and the certificate, key and client
//! CA files read and parsed into the transport's configuration at start, so
//! a bad path or a bad PEM file refuses to start before any socket is bound.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::file::FileTls;
use super::ConfigError;

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

impl TlsConfig {
    /// Validates `[tls]`.
    pub(super) fn from_file(file: Option<FileTls>) -> Result<Option<Self>, ConfigError> {
        let tls = file.map(|t| TlsConfig {
            require_client_cert: t.require_client_cert.unwrap_or(false),
            cert_file: t.cert_file,
            key_file: t.key_file,
            client_ca_file: t.client_ca_file,
        });
        if tls.as_ref().is_some_and(|t| t.require_client_cert && t.client_ca_file.is_none()) {
            return Err(ConfigError::Invalid("tls.require_client_cert needs tls.client_ca_file".into()));
        }
        Ok(tls)
    }

    /// Reads the PEM files (an unreadable one is named in the error).
    pub fn read(&self) -> Result<ServerTlsConfig, ConfigError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| ConfigError::Invalid(format!("tls: cannot read {}: {e}", p.display())))
        };
        let mut c = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?));
        if let Some(ca) = &self.client_ca_file {
            c = c
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(!self.require_client_cert);
        }
        Ok(c)
    }
}
