//! Usage totals of one version (format 1). Key: key UUID (16 bytes) ||
//! version (u32 big-endian). Value: encryptions, data keys, decryptions,
//! last use (Unix ms), each a big-endian 64-bit number, 32 bytes in all.

use keyward_core::{KeyId, VersionUsage};

/// The stored key of a version's totals.
pub fn key(id: KeyId, version: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&version.to_be_bytes());
    k
}

/// Reads a stored key of a version's totals.
pub fn decode_key(k: &[u8]) -> Option<(KeyId, u32)> {
    let k: &[u8; 20] = k.try_into().ok()?;
    let id: [u8; 16] = k[..16].try_into().ok()?;
    Some((KeyId::from_bytes(id), u32::from_be_bytes(k[16..].try_into().ok()?)))
}

/// The stored value of a version's totals.
pub fn encode(u: &VersionUsage) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&u.encryptions.to_be_bytes());
    b[8..16].copy_from_slice(&u.data_keys.to_be_bytes());
    b[16..24].copy_from_slice(&u.decryptions.to_be_bytes());
    b[24..32].copy_from_slice(&u.last_use_ms.to_be_bytes());
    b
}

/// Reads a stored value of a version's totals.
pub fn decode(b: &[u8]) -> Option<VersionUsage> {
    let b: &[u8; 32] = b.try_into().ok()?;
    let n = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some(VersionUsage { encryptions: n(0), data_keys: n(8), decryptions: n(16), last_use_ms: n(24) as i64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_bytes_round_trip() {
        let u = VersionUsage { encryptions: 1, data_keys: u64::MAX, decryptions: 3, last_use_ms: -5 };
        assert_eq!(decode(&encode(&u)), Some(u));
        assert_eq!(decode(&[0; 31]), None);
    }
}
