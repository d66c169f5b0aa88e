//! Where the server listens: the gRPC address, the optional metrics and
//! plaintext health listeners, and the Kubernetes KMS v2 unix socket (from
//! flags or `[kms_v2]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::file::FileKmsV2;
use super::ConfigError;

/// The KMS v2 plugin settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsV2Config {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Key id or alias.
    pub key: String,
}

/// Parses `field`'s address; the error shows an `example`.
pub(super) fn socket_addr(field: &str, value: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::Invalid(format!("{field}: {value:?} is not an address like {example}")))
}

/// An optional listener address.
pub(super) fn optional_addr(
    field: &str,
    value: Option<String>,
    example: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    value.map(|v| socket_addr(field, &v, example)).transpose()
}

/// The KMS v2 plugin: flags win field by field over `[kms_v2]`; a flag alone
/// (without the file section) is refused.
pub(super) fn kms_v2(
    socket: Option<PathBuf>,
    key: Option<String>,
    file: Option<FileKmsV2>,
) -> Result<Option<KmsV2Config>, ConfigError> {
    let file = file.map(|k| (k.socket, k.key));
    let v2 = match (socket, key) {
        (Some(socket), Some(key)) => Some(KmsV2Config { socket, key }),
        (None, None) => file.map(|(socket, key)| KmsV2Config { socket, key }),
        (socket, key) => match file {
            Some((fs, fk)) => Some(KmsV2Config { socket: socket.unwrap_or(fs), key: key.unwrap_or(fk) }),
            None => {
                return Err(ConfigError::Invalid(
                    "the KMS v2 plugin needs both --kms-v2-socket and --kms-v2-key".into(),
                ))
            }
        },
    };
    if let Some(k) = &v2 {
        keyward_core::KeyRef::parse("kms_v2.key", &k.key).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    Ok(v2)
}
