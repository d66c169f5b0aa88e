//! The domain error. One enum for the use cases, mapped to gRPC codes in
//! exactly one place at the edge (via [`ErrorKind`]). Messages are safe to
//! send to callers: they name fields, keys and states, never secrets.

use keyward_crypto::CryptoError;

use crate::{AuditError, StoreError};

/// The class of an error; the gRPC edge maps each to one status code, and the
/// audit log records it under the same canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad argument, oversized input, undecryptable ciphertext.
    InvalidArgument,
    /// Unknown key or alias.
    NotFound,
    /// Alias already taken.
    AlreadyExists,
    /// Key or version in a state that forbids the operation.
    FailedPrecondition,
    /// No valid identity.
    Unauthenticated,
    /// Identity known, operation not allowed.
    PermissionDenied,
    /// A quota is used up (the usage cap's rotations per hour).
    ResourceExhausted,
    /// Audit log or store unavailable.
    Unavailable,
    /// A bug or an unexpected failure; details only in the server log.
    Internal,
}

impl ErrorKind {
    /// The canonical gRPC code name, as recorded in audit outcomes.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// A request field is missing, malformed or too large.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The proto field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The ciphertext cannot be opened. Opaque on purpose.
    #[error("ciphertext: {0}")]
    InvalidCiphertext(#[source] CryptoError),
    /// No such key or alias.
    #[error("{0} not found")]
    NotFound(String),
    /// The alias is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The key or version state forbids this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller has no valid identity.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A quota is used up; retrying later may succeed.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The audit record could not be made durable; the message says whether
    /// anything was done (see [`AuditError`]).
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(#[source] AuditError),
    /// The store failed outside the audit path (start-up, queries).
    #[error("key store unavailable")]
    Store(#[source] StoreError),
    /// Unexpected failure (never shown to callers in detail).
    #[error("internal error")]
    Internal(String),
    /// The server is sealed: no key is in memory until it is unsealed. The
    /// message says how far unsealing has come.
    #[error("keyward is sealed: {0}")]
    Sealed(String),
    /// Cluster mode: this node could not confirm it is current with the
    /// shared key store within its freshness bound (UNAVAILABLE).
    #[error("{0}")]
    Stale(String),
}

impl KmsError {
    /// Shorthand for an invalid-argument error.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } | Self::InvalidCiphertext(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Self::AuditUnavailable(_) | Self::Store(_) | Self::Sealed(_) | Self::Stale(_) => {
                ErrorKind::Unavailable
            }
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message sent to callers and written to audit records, at most
    /// [`MAX_MESSAGE_BYTES`] long: whatever of a request it echoes, a
    /// request cannot make it (or the audit record) large.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_string(),
            other => bounded(&other.to_string(), MAX_MESSAGE_BYTES),
        }
    }
}

/// Longest error message sent to a caller or written to an audit record.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `s` if it is at most `max` bytes, else its first bytes (on a character
/// boundary) and a marker saying how long it was: for echoing a
/// caller-supplied string into an error or a record.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker = format!("... ({} bytes)", s.len());
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

impl From<CryptoError> for KmsError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Undecryptable | CryptoError::UnknownFormat(_) => Self::InvalidCiphertext(e),
            CryptoError::BadKeyLength { .. } | CryptoError::Random => Self::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_echoes_are_bounded() {
        assert_eq!(bounded("short", 64), "short");
        let long = "é".repeat(30_000);
        let b = bounded(&long, 64);
        assert!(b.len() <= 64 && b.ends_with("... (60000 bytes)"), "{b}");
        let e = KmsError::NotFound(format!("alias/{}", "x".repeat(60 * 1024)));
        let m = e.public_message();
        assert!(m.len() <= MAX_MESSAGE_BYTES && m.starts_with("alias/xxx") && m.contains("bytes)"), "{m}");
        assert_eq!(KmsError::NotFound("key k".into()).public_message(), "key k not found");
    }
}
