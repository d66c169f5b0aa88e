//! Keys, versions and their states, as stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::KeyId;

/// Lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable for every operation.
    Enabled,
    /// Refuses every crypto operation until enabled again.
    Disabled,
    /// Scheduled for deletion; refuses every crypto operation.
    PendingDeletion,
    /// Material erased; ciphertexts under it are dead.
    Destroyed,
}

impl KeyState {
    /// Lower-case name for messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::PendingDeletion => "pending deletion",
            Self::Destroyed => "destroyed",
        }
    }
}

/// Lifecycle state of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    /// Decrypts (and encrypts, if primary).
    Enabled,
    /// Refuses decrypt until enabled again.
    Disabled,
    /// Will be destroyed when its window ends; refuses decrypt.
    ScheduledForDestruction,
    /// Material erased; metadata kept.
    Destroyed,
}

impl VersionState {
    /// Lower-case name for messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::ScheduledForDestruction => "scheduled for destruction",
            Self::Destroyed => "destroyed",
        }
    }
}

/// Metadata of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// 1-based version number.
    pub version: u32,
    /// Its state.
    pub state: VersionState,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// When a version scheduled for destruction is destroyed, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_ms: Option<i64>,
}

/// Metadata of a key (never its material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The key's id.
    pub id: KeyId,
    /// Free text.
    pub description: String,
    /// Free labels, for grouping and (later) access grants.
    pub labels: BTreeMap<String, String>,
    /// Key state.
    pub state: KeyState,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// The version new ciphertexts use.
    pub primary_version: u32,
    /// Every version, oldest first.
    pub versions: Vec<VersionMeta>,
    /// When a key pending deletion is destroyed, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_ms: Option<i64>,
}

impl KeyMeta {
    /// One version's metadata.
    pub fn version(&self, v: u32) -> Option<&VersionMeta> {
        self.versions.iter().find(|m| m.version == v)
    }

    /// One version's metadata, mutable.
    pub fn version_mut(&mut self, v: u32) -> Option<&mut VersionMeta> {
        self.versions.iter_mut().find(|m| m.version == v)
    }
}

/// What the store holds for a key: metadata plus each version's secret
/// wrapped under the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Metadata.
    pub meta: KeyMeta,
    /// Wrapped secrets by version (absent once destroyed).
    pub wrapped: BTreeMap<u32, Vec<u8>>,
}
