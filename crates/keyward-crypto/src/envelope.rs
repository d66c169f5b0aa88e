//! The ciphertext format, version 1:
//!
//! ```text
//! 0x01 | key id (16) | key version (u32 BE) | salt (32) | nonce (12) | AES-256-GCM ciphertext || tag (16)
//! AAD = the whole 65-byte header || canonical(encryption context)
//! per-message key = HKDF-SHA256(ikm = version secret, salt, info = "keyward/v1/message" || key id || version)
//! ```
//!
//! Every message gets a fresh salt and therefore a fresh AES key, so the
//! 2^32-messages limit of random 96-bit GCM nonces under one key does not apply.

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::derive_key;
use crate::random::random_array;
use crate::{CryptoError, DataKey, EncryptionContext, KeyIdBytes, Plaintext, VersionSecret};

/// The format byte of version 1.
pub const FORMAT_V1: u8 = 0x01;
const SALT_LEN: usize = 32;
/// Length of the authenticated header.
pub const HEADER_LEN: usize = 1 + 16 + 4 + SALT_LEN + NONCE_LEN;
/// The shortest valid ciphertext (empty plaintext).
pub const MIN_CIPHERTEXT_LEN: usize = HEADER_LEN + TAG_LEN;
const INFO_LABEL: &[u8] = b"keyward/v1/message";

/// The public part of a ciphertext: which key and version made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiphertextHeader {
    /// The key's UUID bytes.
    pub key_id: KeyIdBytes,
    /// The key version (1-based).
    pub version: u32,
}

impl CiphertextHeader {
    /// Reads the header of a ciphertext without opening it. Fails for a
    /// ciphertext too short to be one or of an unknown format.
    pub fn parse(ciphertext: &[u8]) -> Result<Self, CryptoError> {
        match ciphertext.first() {
            None => return Err(CryptoError::Undecryptable),
            Some(&FORMAT_V1) => {}
            Some(&other) => return Err(CryptoError::UnknownFormat(other)),
        }
        if ciphertext.len() < MIN_CIPHERTEXT_LEN {
            return Err(CryptoError::Undecryptable);
        }
        let key_id: KeyIdBytes = ciphertext[1..17].try_into().expect("16 bytes");
        let version = u32::from_be_bytes(ciphertext[17..21].try_into().expect("4 bytes"));
        Ok(Self { key_id, version })
    }
}

/// Seals `plaintext` under one master-key version, binding `context`.
pub fn seal(
    secret: &VersionSecret,
    key_id: &KeyIdBytes,
    version: u32,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    // Salt and nonce in one draw from the OS generator (one syscall, not two).
    let fresh: [u8; SALT_LEN + NONCE_LEN] = random_array()?;
    let salt: [u8; SALT_LEN] = fresh[..SALT_LEN].try_into().expect("salt length");
    let nonce: [u8; NONCE_LEN] = fresh[SALT_LEN..].try_into().expect("nonce length");
    seal_with(secret, key_id, version, context, plaintext, salt, nonce)
}

/// A fresh data key of `len` bytes sealed like [`seal`]: the data key, the
/// salt and the nonce come from one draw of the OS generator (one syscall
/// for all three).
pub fn seal_new_data_key(
    secret: &VersionSecret,
    key_id: &KeyIdBytes,
    version: u32,
    context: &EncryptionContext,
    len: usize,
) -> Result<(DataKey, Vec<u8>), CryptoError> {
    let mut fresh = zeroize::Zeroizing::new(vec![0u8; len + SALT_LEN + NONCE_LEN]);
    crate::random_bytes(&mut fresh)?;
    let salt: [u8; SALT_LEN] = fresh[len..len + SALT_LEN].try_into().expect("salt length");
    let nonce: [u8; NONCE_LEN] = fresh[len + SALT_LEN..].try_into().expect("nonce length");
    let data_key = DataKey::new(fresh[..len].to_vec());
    let sealed = seal_with(secret, key_id, version, context, data_key.expose_secret(), salt, nonce)?;
    Ok((data_key, sealed))
}

fn seal_with(
    secret: &VersionSecret,
    key_id: &KeyIdBytes,
    version: u32,
    context: &EncryptionContext,
    plaintext: &[u8],
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(MIN_CIPHERTEXT_LEN + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(key_id);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let aad = aad(&out, context);
    let message_key =
        derive_key(secret.expose_secret(), &salt, &[INFO_LABEL, key_id, &version.to_be_bytes()]);
    let mut body = plaintext.to_vec();
    aead::seal(&message_key, nonce, &aad, &mut body)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a ciphertext made by [`seal`] with the version secret its header
/// names. Every failure is the same [`CryptoError::Undecryptable`].
pub fn open(
    secret: &VersionSecret,
    ciphertext: &[u8],
    context: &EncryptionContext,
) -> Result<Plaintext, CryptoError> {
    let header = CiphertextHeader::parse(ciphertext)?;
    let salt = &ciphertext[21..21 + SALT_LEN];
    let nonce: [u8; NONCE_LEN] = ciphertext[21 + SALT_LEN..HEADER_LEN].try_into().expect("12 bytes");
    let aad = aad(&ciphertext[..HEADER_LEN], context);
    let message_key = derive_key(
        secret.expose_secret(),
        salt,
        &[INFO_LABEL, &header.key_id, &header.version.to_be_bytes()],
    );
    let mut body = Plaintext::new(ciphertext[HEADER_LEN..].to_vec());
    let mut buf = body.into_exposed();
    let len = match aead::open(&message_key, nonce, &aad, &mut buf) {
        Ok(pt) => pt.len(),
        Err(e) => {
            crate::secret::wipe(&mut buf);
            return Err(e);
        }
    };
    buf.truncate(len);
    body = Plaintext::new(buf);
    Ok(body)
}

fn aad(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.canonical());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOLDEN: &str = include_str!("../tests/vectors/envelope_v1.txt");

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// A new data key from one draw: its ciphertext opens to it, and the
    /// key, salt and nonce are distinct parts of the draw (and differ per call).
    #[test]
    fn a_new_data_key_is_sealed_with_its_own_salt_and_nonce() {
        let secret = VersionSecret::from_bytes(&[7; 32]).unwrap();
        let c = ctx(&[("tenant", "a")]);
        let (k1, ct1) = seal_new_data_key(&secret, &[1; 16], 3, &c, 32).unwrap();
        let (k2, ct2) = seal_new_data_key(&secret, &[1; 16], 3, &c, 32).unwrap();
        assert_eq!(k1.expose_secret().len(), 32);
        assert_eq!(open(&secret, &ct1, &c).unwrap().expose_secret(), k1.expose_secret());
        assert_eq!(open(&secret, &ct2, &c).unwrap().expose_secret(), k2.expose_secret());
        assert_ne!(k1.expose_secret(), k2.expose_secret());
        assert_ne!(ct1[21..65], ct2[21..65], "salt and nonce are fresh per call");
        assert_ne!(&ct1[21..53], k1.expose_secret(), "the salt is not the key");
        let (one, ct) = seal_new_data_key(&secret, &[1; 16], 3, &c, 1).unwrap();
        assert_eq!(open(&secret, &ct, &c).unwrap().expose_secret(), one.expose_secret());
    }

    /// Each golden vector is re-made byte for byte from its fixed salt and
    /// nonce: a change to the format or the derivation breaks this test.
    #[test]
    fn golden_vectors_are_reproduced_exactly() {
        let vectors = crate::envelope::golden::parse(GOLDEN);
        assert!(vectors.len() >= 4);
        for v in &vectors {
            let secret = VersionSecret::from_bytes(&v.secret).unwrap();
            let ct = seal_with(
                &secret,
                &v.key_id,
                v.version,
                &v.context,
                &v.plaintext,
                v.ciphertext[21..53].try_into().unwrap(),
                v.ciphertext[53..65].try_into().unwrap(),
            )
            .unwrap();
            assert_eq!(hex::encode(&ct), hex::encode(&v.ciphertext), "vector {}", v.name);
            let opened = open(&secret, &v.ciphertext, &v.context).unwrap();
            assert_eq!(opened.expose_secret(), v.plaintext.as_slice(), "vector {}", v.name);
            let h = CiphertextHeader::parse(&v.ciphertext).unwrap();
            assert_eq!((h.key_id, h.version), (v.key_id, v.version));
        }
    }

    #[test]
    fn round_trip_and_header() {
        let secret = VersionSecret::generate().unwrap();
        let id = [9u8; 16];
        let c = ctx(&[("tenant", "acme")]);
        let ct = seal(&secret, &id, 7, &c, b"hello").unwrap();
        assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN + 5);
        assert_eq!(CiphertextHeader::parse(&ct).unwrap(), CiphertextHeader { key_id: id, version: 7 });
        assert_eq!(open(&secret, &ct, &c).unwrap().expose_secret(), b"hello");
    }

    #[test]
    fn two_seals_differ() {
        let secret = VersionSecret::generate().unwrap();
        let a = seal(&secret, &[1; 16], 1, &ctx(&[]), b"same").unwrap();
        let b = seal(&secret, &[1; 16], 1, &ctx(&[]), b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[21..65], b[21..65], "salt and nonce are fresh");
        // Over many seals no salt and no nonce repeats.
        let mut salts = std::collections::HashSet::new();
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..2000 {
            let ct = seal(&secret, &[1; 16], 1, &ctx(&[]), b"same").unwrap();
            assert!(salts.insert(ct[21..21 + SALT_LEN].to_vec()));
            assert!(nonces.insert(ct[21 + SALT_LEN..HEADER_LEN].to_vec()));
        }
    }

    #[test]
    fn every_failure_is_the_same_error() {
        let secret = VersionSecret::generate().unwrap();
        let other = VersionSecret::generate().unwrap();
        let c = ctx(&[("a", "b")]);
        let ct = seal(&secret, &[1; 16], 1, &c, b"payload").unwrap();
        let e = CryptoError::Undecryptable;
        assert_eq!(open(&secret, &ct, &ctx(&[("a", "c")])).unwrap_err(), e, "wrong context");
        assert_eq!(open(&secret, &ct, &ctx(&[])).unwrap_err(), e, "missing context");
        assert_eq!(open(&other, &ct, &c).unwrap_err(), e, "wrong key");
        assert_eq!(open(&secret, &ct[..ct.len() - 1], &c).unwrap_err(), e, "truncated");
        assert_eq!(open(&secret, &ct[..10], &c).unwrap_err(), e, "truncated header");
        assert_eq!(open(&secret, &[], &c).unwrap_err(), e, "empty");
        for i in 1..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x80;
            assert_eq!(open(&secret, &bad, &c).unwrap_err(), e, "byte {i} flipped");
        }
        let mut bad = ct.clone();
        bad[0] = 0x02;
        assert_eq!(open(&secret, &bad, &c).unwrap_err(), CryptoError::UnknownFormat(2));
    }
}

/// Parser for the golden-vector file format.
#[cfg(test)]
pub(crate) mod golden {
    use super::*;

    pub(crate) struct Vector {
        pub name: String,
        pub secret: Vec<u8>,
        pub key_id: KeyIdBytes,
        pub version: u32,
        pub context: EncryptionContext,
        pub plaintext: Vec<u8>,
        pub ciphertext: Vec<u8>,
    }

    /// Blocks of `field = value` lines separated by blank lines; `#` comments.
    pub(crate) fn parse(text: &str) -> Vec<Vector> {
        let mut out = Vec::new();
        for block in text.split("\n\n") {
            let mut fields = std::collections::HashMap::new();
            for line in block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (k, v) = line.split_once('=').expect("field = value");
                fields.insert(k.trim().to_string(), v.trim().to_string());
            }
            if fields.is_empty() {
                continue;
            }
            let context =
                EncryptionContext::new(fields["context"].split(',').filter(|p| !p.is_empty()).map(|p| {
                    let (k, v) = p.split_once(':').unwrap();
                    (k.to_string(), v.to_string())
                }));
            out.push(Vector {
                name: fields["name"].clone(),
                secret: hex::decode(&fields["secret"]).unwrap(),
                key_id: hex::decode(&fields["key_id"]).unwrap().try_into().unwrap(),
                version: fields["version"].parse().unwrap(),
                context,
                plaintext: hex::decode(&fields["plaintext"]).unwrap(),
                ciphertext: hex::decode(&fields["ciphertext"]).unwrap(),
            });
        }
        out
    }
}
