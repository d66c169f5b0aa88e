//! The node's audit signing key: Ed25519 (ring), its seed sealed under the
//! root key for storage, and the public half that verifies checkpoints on a
//! machine with neither the server nor the root key.
//!
//! Sealed format: `0x01 | nonce (12) | AES-256-GCM(seed (32)) || tag (16)`,
//! under `HKDF(root, "keyward/v1/audit-signing-key")`,
//! AAD = `"keyward audit signing key v1" || node id (16)`, so a sealed key
//! moved to another node id does not open.

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use crate::aead::NONCE_LEN;
use crate::random::random_array;
use crate::wrap::{open_under_root, seal_under_root};
use crate::{CryptoError, RootKey};

const SEAL_FORMAT: u8 = 0x01;
const SEAL_LABEL: &[u8] = b"keyward/v1/audit-signing-key";
const AAD_LABEL: &[u8] = b"keyward audit signing key v1";
const SEED_LEN: usize = 32;
const SEALED_LEN: usize = 1 + NONCE_LEN + SEED_LEN + 16;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// An Ed25519 signing key. The seed zeroizes on drop (ring's expanded key
/// inside the key pair is ring's own and not reachable for zeroizing); no
/// `Clone`, no serde, prints as `REDACTED`.
pub struct AuditSigningKey {
    seed: Zeroizing<[u8; SEED_LEN]>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditSigningKey(REDACTED)")
    }
}

impl AuditSigningKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_seed(Zeroizing::new(random_array()?))
    }

    fn from_seed(seed: Zeroizing<[u8; SEED_LEN]>) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| CryptoError::Undecryptable)?;
        Ok(Self { seed, pair })
    }

    /// The public half.
    pub fn public_key(&self) -> AuditPublicKey {
        let mut pk = [0u8; PUBLIC_KEY_LEN];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        AuditPublicKey(pk)
    }

    /// Signs `message` (Ed25519 is deterministic: no nonce to supply).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// An Ed25519 public key: verifies checkpoint signatures. Not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPublicKey([u8; PUBLIC_KEY_LEN]);

impl AuditPublicKey {
    /// Takes the 32 raw bytes of a public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| CryptoError::BadKeyLength { expected: PUBLIC_KEY_LEN })?;
        Ok(Self(arr))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The DER SubjectPublicKeyInfo (what a PEM "PUBLIC KEY" block holds).
    pub fn to_spki_der(&self) -> Vec<u8> {
        [&SPKI_PREFIX[..], &self.0[..]].concat()
    }

    /// Reads a DER SubjectPublicKeyInfo holding an Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) => Self::from_bytes(key),
            None => Err(CryptoError::BadKeyLength { expected: SPKI_PREFIX.len() + PUBLIC_KEY_LEN }),
        }
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0[..]).verify(message, signature).is_ok()
    }
}

/// An audit signing key sealed under the root key: safe to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSigningKey(Vec<u8>);

impl SealedSigningKey {
    /// Takes stored bytes as they are; `unseal_signing_key` checks them.
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn seal_aad(node_id: &[u8; 16]) -> Vec<u8> {
    [AAD_LABEL, &node_id[..]].concat()
}

impl RootKey {
    /// Seals an audit signing key for storage, bound to the node id.
    pub fn seal_signing_key(
        &self,
        node_id: &[u8; 16],
        key: &AuditSigningKey,
    ) -> Result<SealedSigningKey, CryptoError> {
        let out = seal_under_root(self, SEAL_LABEL, SEAL_FORMAT, &seal_aad(node_id), &key.seed[..])?;
        debug_assert_eq!(out.len(), SEALED_LEN);
        Ok(SealedSigningKey(out))
    }

    /// Opens a sealed audit signing key; fails under another root key, for
    /// another node id, or if the bytes were altered.
    pub fn unseal_signing_key(
        &self,
        node_id: &[u8; 16],
        sealed: &SealedSigningKey,
    ) -> Result<AuditSigningKey, CryptoError> {
        let seed = open_under_root(self, SEAL_LABEL, SEAL_FORMAT, &seal_aad(node_id), &sealed.0, SEED_LEN)?;
        let seed: [u8; SEED_LEN] = seed[..].try_into().map_err(|_| CryptoError::Undecryptable)?;
        AuditSigningKey::from_seed(Zeroizing::new(seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let root = RootKey::generate().unwrap();
        let key = AuditSigningKey::generate().unwrap();
        let sealed = root.seal_signing_key(&[1; 16], &key).unwrap();
        assert_eq!(sealed.as_bytes().len(), SEALED_LEN);
        let back = root.unseal_signing_key(&[1; 16], &sealed).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert!(root.unseal_signing_key(&[2; 16], &sealed).is_err(), "other node id");
        assert!(RootKey::generate().unwrap().unseal_signing_key(&[1; 16], &sealed).is_err(), "other root");
        let mut bytes = sealed.as_bytes().to_vec();
        bytes[20] ^= 1;
        assert!(root.unseal_signing_key(&[1; 16], &SealedSigningKey::from_stored(bytes)).is_err());
        assert_eq!(format!("{key:?}"), "AuditSigningKey(REDACTED)");
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = AuditSigningKey::generate().unwrap();
        let sig = key.sign(b"checkpoint");
        let pk = key.public_key();
        assert!(pk.verify(b"checkpoint", &sig));
        assert!(!pk.verify(b"checkpoinT", &sig));
        assert!(!AuditSigningKey::generate().unwrap().public_key().verify(b"checkpoint", &sig));
        let der = pk.to_spki_der();
        assert_eq!(der.len(), 44);
        assert_eq!(AuditPublicKey::from_spki_der(&der).unwrap(), pk);
        assert!(AuditPublicKey::from_spki_der(&der[1..]).is_err());
    }

    /// RFC 8032 section 7.1, test 1: ring's Ed25519 from a seed.
    #[test]
    fn rfc8032_test_1() {
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let key = AuditSigningKey::from_seed(Zeroizing::new(seed)).unwrap();
        assert_eq!(
            hex::encode(key.public_key().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(key.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
