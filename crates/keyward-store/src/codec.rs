//! How key records are laid out as bytes (shared by both stores, so the
//! contract tests exercise the same encoding the RocksDB store writes).

use std::collections::BTreeMap;

use keyward_core::{KeyMeta, KeyRecord, StoreError};
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
