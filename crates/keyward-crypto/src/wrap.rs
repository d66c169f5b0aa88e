//! Wrapping master-key version secrets under the root key, and the root-key
//! check value that lets the server refuse a wrong root key at start-up.
//!
//! Two sub-keys are derived from the root key with HKDF-SHA256 (distinct
//! `info` labels), so the root key itself never serves two algorithms.
//!
//! Wrapped format: `0x01 | nonce (12) | AES-256-GCM(secret) || tag (16)`,
//! AAD = `"keyward/v1/version-secret" || key id (16) || version (u32 BE)`.
//! Random nonces are safe here: a root key wraps one secret per key version,
//! many orders of magnitude below the 2^32 bound.

use ring::hmac;

use crate::aead::{self, NONCE_LEN};
use crate::kdf::derive_key;
use crate::random::random_array;
use crate::{CryptoError, KeyIdBytes, RootKey, VersionSecret, SECRET_LEN};

const WRAP_FORMAT: u8 = 0x01;
const WRAP_LABEL: &[u8] = b"keyward/v1/wrap-key";
const CHECK_LABEL: &[u8] = b"keyward/v1/root-check";
const AAD_LABEL: &[u8] = b"keyward/v1/version-secret";
const WRAPPED_LEN: usize = 1 + NONCE_LEN + SECRET_LEN + 16;

/// A version secret sealed under the root key: safe to store, useless without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedVersionSecret(Vec<u8>);

impl WrappedVersionSecret {
    /// Takes stored bytes as they are; validity is checked by `unwrap`.
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A non-secret value derived from the root key and kept in the store; a
/// different root key yields a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCheck(pub Vec<u8>);

/// Seals `plaintext` under the root sub-key `HKDF(root, label)`:
/// `format | nonce (12) | AES-256-GCM(plaintext) || tag (16)`. The one shape
/// of everything Keyward keeps sealed under the root key (version secrets,
/// the audit signing key); callers differ in label, format byte and AAD.
pub(crate) fn seal_under_root(
    root: &RootKey,
    label: &[u8],
    format: u8,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce: [u8; NONCE_LEN] = random_array()?;
    let key = derive_key(root.expose_secret(), &[], &[label]);
    let mut body = zeroize::Zeroizing::new(plaintext.to_vec());
    aead::seal(&key, nonce, aad, &mut body)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(format);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal_under_root`] made, if it is exactly `plaintext_len`
/// bytes of plaintext in `format`; every failure is `Undecryptable`.
pub(crate) fn open_under_root(
    root: &RootKey,
    label: &[u8],
    format: u8,
    aad: &[u8],
    sealed: &[u8],
    plaintext_len: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() != 1 + NONCE_LEN + plaintext_len + 16 || sealed[0] != format {
        return Err(CryptoError::Undecryptable);
    }
    let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("12 bytes");
    let key = derive_key(root.expose_secret(), &[], &[label]);
    let mut buf = zeroize::Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
    let len = aead::open(&key, nonce, aad, &mut buf)?.len();
    buf.truncate(len);
    Ok(buf)
}

fn wrap_aad(key_id: &KeyIdBytes, version: u32) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

impl RootKey {
    /// Seals a version secret for storage, bound to its key id and version.
    pub fn wrap(
        &self,
        key_id: &KeyIdBytes,
        version: u32,
        secret: &VersionSecret,
    ) -> Result<WrappedVersionSecret, CryptoError> {
        let aad = wrap_aad(key_id, version);
        let out = seal_under_root(self, WRAP_LABEL, WRAP_FORMAT, &aad, secret.expose_secret())?;
        debug_assert_eq!(out.len(), WRAPPED_LEN);
        Ok(WrappedVersionSecret(out))
    }

    /// Opens a wrapped version secret; fails if it was wrapped under another
    /// root key, for another key id or version, or was altered.
    pub fn unwrap(
        &self,
        key_id: &KeyIdBytes,
        version: u32,
        wrapped: &WrappedVersionSecret,
    ) -> Result<VersionSecret, CryptoError> {
        let aad = wrap_aad(key_id, version);
        let secret = open_under_root(self, WRAP_LABEL, WRAP_FORMAT, &aad, &wrapped.0, SECRET_LEN)?;
        VersionSecret::from_bytes(&secret)
    }

    fn check_key(&self) -> hmac::Key {
        let k = derive_key(self.expose_secret(), &[], &[CHECK_LABEL]);
        hmac::Key::new(hmac::HMAC_SHA256, &k[..])
    }

    /// The check value stored beside the keys: HMAC-SHA256 of a fixed label
    /// under a sub-key of the root key.
    pub fn check_value(&self) -> RootCheck {
        RootCheck(hmac::sign(&self.check_key(), CHECK_LABEL).as_ref().to_vec())
    }

    /// Whether `stored` was made from this root key (constant-time compare).
    pub fn matches(&self, stored: &RootCheck) -> bool {
        hmac::verify(&self.check_key(), CHECK_LABEL, &stored.0).is_ok()
    }
}

const ACCESS_FORMAT: u8 = 0x01;
const ACCESS_LABEL: &[u8] = b"keyward/v1/access-key-secret";
const ACCESS_AAD_LABEL: &[u8] = b"keyward/v1/access-key";

/// The secret of an access key (what AWS SigV4 clients sign with), sealed
/// under the root key and bound to the key's id. SigV4 needs the secret
/// itself on the verifying side, so it is stored sealed, never hashed:
/// `0x01 | nonce (12) | AES-256-GCM(secret) || tag (16)` under
/// `HKDF(root, "keyward/v1/access-key-secret")`, AAD =
/// `"keyward/v1/access-key" || id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAccessSecret(Vec<u8>);

impl SealedAccessSecret {
    /// Takes stored bytes as they are; validity is checked when opened.
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn access_aad(id: &str) -> Vec<u8> {
    [ACCESS_AAD_LABEL, id.as_bytes()].concat()
}

impl RootKey {
    /// Seals an access key's secret for storage, bound to its id.
    pub fn seal_access_secret(&self, id: &str, secret: &[u8]) -> Result<SealedAccessSecret, CryptoError> {
        seal_under_root(self, ACCESS_LABEL, ACCESS_FORMAT, &access_aad(id), secret).map(SealedAccessSecret)
    }

    /// Opens a sealed access-key secret of `len` bytes; fails under another
    /// root key, for another id, or if it was altered.
    pub fn open_access_secret(
        &self,
        id: &str,
        sealed: &SealedAccessSecret,
        len: usize,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
        open_under_root(self, ACCESS_LABEL, ACCESS_FORMAT, &access_aad(id), &sealed.0, len)
    }
}

impl RootKey {
    /// 32 bytes derived from the root key under `label` (HKDF-SHA256),
    /// for the development credentials `--dev` prints (the AWS edge's dev
    /// access key, the Vault edge's dev token): stable across restarts of
    /// one data folder, different for every root key. Labels must start
    /// with `keyward/v1/dev-` so no production key can be derived here.
    /// `None` for any other label.
    pub fn derive_dev_credential(&self, label: &str) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        label
            .starts_with("keyward/v1/dev-")
            .then(|| derive_key(self.expose_secret(), &[], &[label.as_bytes()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_credentials_are_stable_and_distinct() {
        let a = RootKey::from_bytes(&[1; 32]).unwrap();
        let x = a.derive_dev_credential("keyward/v1/dev-aws").unwrap();
        assert_eq!(*x, *a.derive_dev_credential("keyward/v1/dev-aws").unwrap());
        assert_ne!(*x, *a.derive_dev_credential("keyward/v1/dev-vault").unwrap());
        assert_ne!(
            *x,
            *RootKey::from_bytes(&[2; 32]).unwrap().derive_dev_credential("keyward/v1/dev-aws").unwrap()
        );
        assert!(a.derive_dev_credential("keyward/v1/wrap-key").is_none(), "only dev labels");
    }

    #[test]
    fn access_secrets_open_only_under_their_root_and_id() {
        let root = RootKey::generate().unwrap();
        let s = root.seal_access_secret("KWAKAAAA", b"0123456789").unwrap();
        assert_eq!(s.as_bytes().len(), 1 + 12 + 10 + 16);
        assert_eq!(&root.open_access_secret("KWAKAAAA", &s, 10).unwrap()[..], b"0123456789");
        assert!(root.open_access_secret("KWAKAAAB", &s, 10).is_err(), "other id");
        assert!(root.open_access_secret("KWAKAAAA", &s, 11).is_err(), "other length");
        assert!(RootKey::generate().unwrap().open_access_secret("KWAKAAAA", &s, 10).is_err());
        // Not the same sub-key as version secrets: a wrapped version secret does not open.
        let w = root.wrap(&[1; 16], 1, &VersionSecret::generate().unwrap()).unwrap();
        let as_access = SealedAccessSecret::from_stored(w.as_bytes().to_vec());
        assert!(root.open_access_secret("KWAKAAAA", &as_access, SECRET_LEN).is_err());
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let root = RootKey::generate().unwrap();
        let secret = VersionSecret::generate().unwrap();
        let w = root.wrap(&[1; 16], 3, &secret).unwrap();
        assert_eq!(w.as_bytes().len(), WRAPPED_LEN);
        assert_eq!(root.unwrap(&[1; 16], 3, &w).unwrap().expose_secret(), secret.expose_secret());
        assert!(root.unwrap(&[1; 16], 4, &w).is_err(), "other version");
        assert!(root.unwrap(&[2; 16], 3, &w).is_err(), "other key");
        let other = RootKey::generate().unwrap();
        assert!(other.unwrap(&[1; 16], 3, &w).is_err(), "other root key");
        let mut bytes = w.as_bytes().to_vec();
        bytes[20] ^= 1;
        assert!(root.unwrap(&[1; 16], 3, &WrappedVersionSecret::from_stored(bytes)).is_err());
    }

    #[test]
    fn check_value_tells_root_keys_apart() {
        let a = RootKey::from_bytes(&[1; 32]).unwrap();
        let b = RootKey::from_bytes(&[2; 32]).unwrap();
        assert!(a.matches(&a.check_value()));
        assert!(!b.matches(&a.check_value()));
        assert!(!a.matches(&RootCheck(vec![])));
        // The check value is not the key.
        assert_ne!(a.check_value().0, a.expose_secret().to_vec());
    }
}
