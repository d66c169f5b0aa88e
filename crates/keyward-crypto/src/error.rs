//! Errors of the crypto layer. Deliberately coarse: a failed `open` says only
//! that it failed, never why (no padding/tag/key oracle).

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The ciphertext is truncated, tampered with, made under another key, or
    /// bound to another encryption context. One variant, one message, on purpose.
    #[error("ciphertext is invalid or does not match the key and encryption context")]
    Undecryptable,
    /// The ciphertext's first byte names a format this build does not know.
    #[error("unsupported ciphertext format {0:#04x}")]
    UnknownFormat(u8),
    /// A key file or secret had the wrong length or encoding.
    #[error("key material must be {expected} bytes")]
    BadKeyLength {
        /// The length the key must have.
        expected: usize,
    },
    /// The operating system's random generator failed.
    #[error("system random generator failed")]
    Random,
}
