//! Key records (format 1): one JSON document per key,
//! `{"meta":{...},"wrapped":{"<version>":"<hex of the wrapped secret>"}}`.
//! Field names and enum spellings below are the stored ones; keep them.

use std::collections::BTreeMap;

use keyward_core::{KeyMeta, KeyRecord, KeyState, RotationPolicy, StoreError, VersionMeta, VersionState};
use keyward_crypto::WrappedVersionSecret;
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
struct StoredKey {
    meta: StoredMeta,
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

/// The stored bytes of a key record.
pub fn encode(record: &KeyRecord) -> Vec<u8> {
    let m = &record.meta;
    let stored = StoredKey {
        meta: StoredMeta {
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
        },
        wrapped: record.wrapped.iter().map(|(v, w)| (*v, hex::encode(w.as_bytes()))).collect(),
    };
    serde_json::to_vec(&stored).expect("key record serialises")
}

/// Reads a stored key record.
pub fn decode(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    let stored: StoredKey = serde_json::from_slice(bytes).map_err(|e| corrupt("key record", e))?;
    let m = stored.meta;
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
    let mut wrapped = BTreeMap::new();
    for (v, h) in stored.wrapped {
        let bytes = hex::decode(&h).map_err(|e| corrupt("wrapped secret", e))?;
        wrapped.insert(v, WrappedVersionSecret::from_stored(bytes));
    }
    Ok(KeyRecord { meta, wrapped })
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
