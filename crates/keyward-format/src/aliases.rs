//! Aliases. Key: the alias's UTF-8 bytes. Value, format 2: the key's UUID
//! (16 bytes) || the alias's tag (32 bytes). Format 1 (read, for upgrades):
//! the UUID alone.

use keyward_core::{AliasEntry, KeyId, StoreError};
use keyward_crypto::{RecordTag, RECORD_TAG_LEN};

use super::corrupt;

/// The stored value of an alias (format 2). Fails for an alias without a tag.
pub fn encode(e: &AliasEntry) -> Result<Vec<u8>, StoreError> {
    let tag = e.tag.ok_or_else(|| StoreError(format!("alias {:?} has no tag", e.alias)))?;
    Ok([&e.key.as_bytes()[..], &tag.0].concat())
}

/// Reads a stored alias (format 2).
pub fn decode(name: &[u8], value: &[u8]) -> Result<AliasEntry, StoreError> {
    let alias = String::from_utf8(name.to_vec()).map_err(|e| corrupt("alias", e))?;
    if value.len() != 16 + RECORD_TAG_LEN {
        return Err(corrupt("alias value", format!("{} bytes, not 48", value.len())));
    }
    let id: [u8; 16] = value[..16].try_into().expect("16 bytes");
    let tag: [u8; RECORD_TAG_LEN] = value[16..].try_into().expect("32 bytes");
    Ok(AliasEntry { alias, key: KeyId::from_bytes(id), tag: Some(RecordTag(tag)) })
}

/// Reads a stored alias in format 1 (no tag).
pub fn decode_v1(name: &[u8], value: &[u8]) -> Result<AliasEntry, StoreError> {
    let alias = String::from_utf8(name.to_vec()).map_err(|e| corrupt("alias", e))?;
    let id: [u8; 16] = value.try_into().map_err(|_| corrupt("alias target", "not 16 bytes"))?;
    Ok(AliasEntry { alias, key: KeyId::from_bytes(id), tag: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let e = AliasEntry { alias: "alias/a".into(), key: KeyId::generate(), tag: Some(RecordTag([7; 32])) };
        let v = encode(&e).unwrap();
        assert_eq!(decode(b"alias/a", &v).unwrap(), e);
        assert!(decode(b"alias/a", &v[..16]).is_err());
        assert!(decode(&[0xff], &v).is_err());
        assert!(encode(&AliasEntry { tag: None, ..e.clone() }).is_err());
        assert_eq!(decode_v1(b"alias/a", &v[..16]).unwrap(), AliasEntry { tag: None, ..e });
    }
}
