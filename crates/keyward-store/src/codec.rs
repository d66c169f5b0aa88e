//! How key records are laid out as bytes (shared by both stores, so the
//! contract tests exercise the same encoding the RocksDB store writes).

use std::collections::BTreeMap;

use keyward_core::{KeyId, KeyMeta, KeyRecord, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct StoredKey {
    meta: KeyMeta,
    /// Version -> hex of the secret wrapped under the root key.
    wrapped: BTreeMap<u32, String>,
}

pub(crate) fn encode_key(record: &KeyRecord) -> Vec<u8> {
    let stored = StoredKey {
        meta: record.meta.clone(),
        wrapped: record.wrapped.iter().map(|(v, w)| (*v, hex::encode(w))).collect(),
    };
    serde_json::to_vec(&stored).expect("key record serialises")
}

pub(crate) fn decode_key(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    let stored: StoredKey =
        serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt key record: {e}")))?;
    let mut wrapped = BTreeMap::new();
    for (v, h) in stored.wrapped {
        wrapped.insert(v, hex::decode(&h).map_err(|_| StoreError("corrupt wrapped secret".into()))?);
    }
    Ok(KeyRecord { meta: stored.meta, wrapped })
}

/// Key of a version's usage totals: key UUID (16) || version (u32 BE).
pub(crate) fn usage_key(id: KeyId, version: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&version.to_be_bytes());
    k
}

pub(crate) fn decode_usage_key(k: &[u8]) -> Option<(KeyId, u32)> {
    let k: &[u8; 20] = k.try_into().ok()?;
    let id: [u8; 16] = k[..16].try_into().ok()?;
    Some((KeyId::from_bytes(id), u32::from_be_bytes(k[16..].try_into().ok()?)))
}
