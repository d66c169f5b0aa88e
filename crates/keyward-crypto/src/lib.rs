//! Pure envelope cryptography for Keyward.
//!
//! This crate owns the key types (root key, master-key version secrets, data
//! keys), the self-describing ciphertext format, and the `seal`/`open` and
//! `wrap`/`unwrap` operations. It must never do IO, spawn tasks, log, or know
//! about protobuf or storage: its Cargo.toml carries only `ring`, `zeroize`
//! and `thiserror`, and that is the enforcement.
//!
//! Architecture invariant: every nonce and salt is generated inside this crate
//! from the system CSPRNG; no public function accepts one from a caller.

mod aead;
mod context;
mod envelope;
mod error;
mod kdf;
mod mac;
mod random;
mod secret;
mod signing;
mod wrap;

pub use context::{EncryptionContext, MAX_CONTEXT_BYTES, MAX_CONTEXT_PAIRS};
pub use envelope::{
    open, seal, seal_new_data_key, CiphertextHeader, FORMAT_V1, HEADER_LEN, MIN_CIPHERTEXT_LEN,
};
pub use error::CryptoError;
pub use mac::{RecordKey, RecordTag, RECORD_TAG_LEN};
pub use random::random_bytes;
pub use secret::{DataKey, Plaintext, RootKey, VersionSecret, SECRET_LEN};
pub use signing::{AuditPublicKey, AuditSigningKey, SealedSigningKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
pub use wrap::{RootCheck, SealedAccessSecret, WrappedVersionSecret};

/// A key id as 16 raw bytes (the UUID of the key). The crypto layer does not
/// interpret it beyond binding it into headers and AAD.
pub type KeyIdBytes = [u8; 16];
