//! Key records.
//!
//! Format 2 (current): the metadata and its tag, one JSON document per key,
//! `{"meta":{...},"tag":"<hex of the 32-byte tag>"}`; each version's wrapped
//! secret is a value of its own (key: key UUID || version, [`secret_key`]),
//! so destroying a version deletes exactly its secret and nothing else.
//!
//! Shared (cluster mode, one etcd value per key): the metadata, its tag and
//! every version's wrapped secret in one document,
//! `{"meta":{...},"tag":"<hex>","wrapped":{"<version>":"<hex>"}}`, so a key
//! changes in one compare-and-swap of one value.
//!
//! Format 1 (read, for upgrades): secrets inside the record,
//! `{"meta":{...},"wrapped":{"<version>":"<hex of the wrapped secret>"}}`.
//!
//! Field names and enum spellings below are the stored ones; keep them.

use std::collections::BTreeMap;

use keyward_core::{
    KeyId, KeyMeta, KeyRecord, KeyState, RotationPolicy, StoreError, VersionMap, VersionMeta, VersionState,
};
use keyward_crypto::{RecordTag, WrappedVersionSecret, RECORD_TAG_LEN};
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
struct StoredKeyV1 {
    meta: StoredMeta,
    /// Version -> hex of the secret wrapped under the root key.
    wrapped: BTreeMap<u32, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKeyV2 {
    meta: StoredMeta,
    /// Hex of the record's tag (see `keyward_core::KeyRecord::tag`).
    tag: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKeyShared {
    meta: StoredMeta,
    /// Hex of the record's tag.
    tag: String,
    /// Version -> hex of the secret wrapped under the root key.
    wrapped: BTreeMap<u32, String>,
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    id: String,
    description: String,
    labels: BTreeMap<String, String>,
    state: StoredKeyState,
    created_ms: i64,
    primary_version: u32,
    versions: Vec<StoredVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletion_ms: Option<i64>,
    #[serde(default)]
    rotation: StoredRotation,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    version: u32,
    state: StoredVersionState,
    created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroy_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    compromised: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct StoredRotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_rotation_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_encryptions_per_version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum StoredKeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    Destroyed,
}

#[derive(Serialize, Deserialize)]
enum StoredVersionState {
    Enabled,
    Disabled,
    ScheduledForDestruction,
    Destroyed,
}

/// The stored key of one version's wrapped secret: key UUID (16 bytes) ||
/// version (u32 big-endian).
pub fn secret_key(id: KeyId, version: u32) -> [u8; 20] {
    crate::usage::key(id, version)
}

/// Reads a stored key of a version's wrapped secret.
pub fn decode_secret_key(k: &[u8]) -> Option<(KeyId, u32)> {
    crate::usage::decode_key(k)
}

/// The stored bytes of a key record's metadata and tag (format 2; the
/// wrapped secrets are stored apart, under [`secret_key`]). Fails for a
/// record without a tag: format 2 never holds one.
pub fn encode(record: &KeyRecord) -> Result<Vec<u8>, StoreError> {
    let tag = record.tag.ok_or_else(|| StoreError(format!("key record {} has no tag", record.meta.id)))?;
    let stored = StoredKeyV2 { meta: meta_to_stored(&record.meta), tag: hex::encode(tag.0) };
    Ok(serde_json::to_vec(&stored).expect("key record serialises"))
}

/// Reads a stored key record (format 2) and the versions' secrets, which
/// the store reads apart.
pub fn decode(bytes: &[u8], wrapped: VersionMap<WrappedVersionSecret>) -> Result<KeyRecord, StoreError> {
    let stored: StoredKeyV2 = serde_json::from_slice(bytes).map_err(|e| corrupt("key record", e))?;
    let tag = hex::decode(&stored.tag).map_err(|e| corrupt("key record tag", e))?;
    let tag: [u8; RECORD_TAG_LEN] = tag.try_into().map_err(|_| corrupt("key record tag", "not 32 bytes"))?;
    Ok(KeyRecord { meta: meta_from_stored(stored.meta)?, wrapped, tag: Some(RecordTag(tag)) })
}

/// The shared form of a key record (cluster mode): metadata, tag and
/// wrapped secrets in one value. Fails for a record without a tag.
pub fn encode_shared(record: &KeyRecord) -> Result<Vec<u8>, StoreError> {
    let tag = record.tag.ok_or_else(|| StoreError(format!("key record {} has no tag", record.meta.id)))?;
    let stored = StoredKeyShared {
        meta: meta_to_stored(&record.meta),
        tag: hex::encode(tag.0),
        wrapped: record.wrapped.iter().map(|(v, w)| (*v, hex::encode(w.as_bytes()))).collect(),
    };
    Ok(serde_json::to_vec(&stored).expect("key record serialises"))
}

/// Reads the shared form of a key record.
pub fn decode_shared(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    let stored: StoredKeyShared =
        serde_json::from_slice(bytes).map_err(|e| corrupt("shared key record", e))?;
    let tag = hex::decode(&stored.tag).map_err(|e| corrupt("key record tag", e))?;
    let tag: [u8; RECORD_TAG_LEN] = tag.try_into().map_err(|_| corrupt("key record tag", "not 32 bytes"))?;
    let mut wrapped = VersionMap::new();
    for (v, h) in stored.wrapped {
        let bytes = hex::decode(&h).map_err(|e| corrupt("wrapped secret", e))?;
        wrapped.insert(v, WrappedVersionSecret::from_stored(bytes));
    }
    Ok(KeyRecord { meta: meta_from_stored(stored.meta)?, wrapped, tag: Some(RecordTag(tag)) })
}

/// The stored bytes of a key record in format 1 (for golden vectors and
/// upgrade tests; this build never writes it).
pub fn encode_v1(record: &KeyRecord) -> Vec<u8> {
    let stored = StoredKeyV1 {
        meta: meta_to_stored(&record.meta),
        wrapped: record.wrapped.iter().map(|(v, w)| (*v, hex::encode(w.as_bytes()))).collect(),
    };
    serde_json::to_vec(&stored).expect("key record serialises")
}

/// Reads a stored key record in format 1 (no tag).
pub fn decode_v1(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    let stored: StoredKeyV1 = serde_json::from_slice(bytes).map_err(|e| corrupt("key record", e))?;
    let mut wrapped = VersionMap::new();
    for (v, h) in stored.wrapped {
        let bytes = hex::decode(&h).map_err(|e| corrupt("wrapped secret", e))?;
        wrapped.insert(v, WrappedVersionSecret::from_stored(bytes));
    }
    Ok(KeyRecord { meta: meta_from_stored(stored.meta)?, wrapped, tag: None })
}

fn meta_to_stored(m: &KeyMeta) -> StoredMeta {
    StoredMeta {
        id: m.id.to_string(),
        description: m.description.clone(),
        labels: m.labels.clone(),
        state: match m.state {
            KeyState::Enabled => StoredKeyState::Enabled,
            KeyState::Disabled => StoredKeyState::Disabled,
            KeyState::PendingDeletion => StoredKeyState::PendingDeletion,
            KeyState::Destroyed => StoredKeyState::Destroyed,
        },
        created_ms: m.created_ms,
        primary_version: m.primary_version,
        versions: m.versions.iter().map(version_to_stored).collect(),
        deletion_ms: m.deletion_ms,
        rotation: StoredRotation {
            period_ms: m.rotation.period_ms,
            next_rotation_ms: m.rotation.next_rotation_ms,
            max_encryptions_per_version: m.rotation.max_encryptions_per_version,
        },
    }
}

fn meta_from_stored(m: StoredMeta) -> Result<KeyMeta, StoreError> {
    let meta = KeyMeta {
        id: m.id.parse().map_err(|e| corrupt("key id", e))?,
        description: m.description,
        labels: m.labels,
        state: match m.state {
            StoredKeyState::Enabled => KeyState::Enabled,
            StoredKeyState::Disabled => KeyState::Disabled,
            StoredKeyState::PendingDeletion => KeyState::PendingDeletion,
            StoredKeyState::Destroyed => KeyState::Destroyed,
        },
        created_ms: m.created_ms,
        primary_version: m.primary_version,
        versions: m.versions.into_iter().map(version_from_stored).collect(),
        deletion_ms: m.deletion_ms,
        rotation: RotationPolicy {
            period_ms: m.rotation.period_ms,
            next_rotation_ms: m.rotation.next_rotation_ms,
            max_encryptions_per_version: m.rotation.max_encryptions_per_version,
        },
    };
    Ok(meta)
}

fn version_to_stored(v: &VersionMeta) -> StoredVersion {
    StoredVersion {
        version: v.version,
        state: match v.state {
            VersionState::Enabled => StoredVersionState::Enabled,
            VersionState::Disabled => StoredVersionState::Disabled,
            VersionState::ScheduledForDestruction => StoredVersionState::ScheduledForDestruction,
            VersionState::Destroyed => StoredVersionState::Destroyed,
        },
        created_ms: v.created_ms,
        destroy_ms: v.destroy_ms,
        compromised: v.compromised,
    }
}

fn version_from_stored(v: StoredVersion) -> VersionMeta {
    VersionMeta {
        version: v.version,
        state: match v.state {
            StoredVersionState::Enabled => VersionState::Enabled,
            StoredVersionState::Disabled => VersionState::Disabled,
            StoredVersionState::ScheduledForDestruction => VersionState::ScheduledForDestruction,
            StoredVersionState::Destroyed => VersionState::Destroyed,
        },
        created_ms: v.created_ms,
        destroy_ms: v.destroy_ms,
        compromised: v.compromised,
    }
}
