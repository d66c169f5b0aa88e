//! Keys, versions and their states. Domain types only: how they are laid out
//! on disk is the store's business (`keyward-store`'s stored formats).

use std::collections::BTreeMap;

use keyward_crypto::{RecordTag, WrappedVersionSecret};

use crate::{KeyId, VersionMap};

/// Lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    /// 1-based version number.
    pub version: u32,
    /// Its state.
    pub state: VersionState,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// When a version scheduled for destruction is destroyed, Unix ms.
    pub destroy_ms: Option<i64>,
    /// Marked compromised (one way): it opens only for ReEncrypt, never for Decrypt.
    pub compromised: bool,
}

impl VersionMeta {
    /// A new enabled version.
    pub fn new(version: u32, created_ms: i64) -> Self {
        Self { version, state: VersionState::Enabled, created_ms, destroy_ms: None, compromised: false }
    }
}

/// Metadata of a key (never its material).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub deletion_ms: Option<i64>,
    /// When and how the key rotates by itself.
    pub rotation: RotationPolicy,
}

/// A key's rotation policy: a period, a cap on encryptions per version, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate every this many ms (at least one hour).
    pub period_ms: Option<i64>,
    /// The next scheduled rotation, Unix ms (set while `period_ms` is).
    pub next_rotation_ms: Option<i64>,
    /// Rotate before a primary version seals more than this many
    /// (encryptions plus data keys).
    pub max_encryptions_per_version: Option<u64>,
}

/// Smallest rotation period: one hour.
pub const MIN_ROTATION_PERIOD_MS: i64 = 60 * 60 * 1000;

/// How one version has been used. Counts only acknowledged requests: each
/// count is written in the same synced batch as the audit record of the use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionUsage {
    /// Encrypt, and ReEncrypt into this version.
    pub encryptions: u64,
    /// Data keys issued (with or without plaintext).
    pub data_keys: u64,
    /// Decrypt, and ReEncrypt out of this version.
    pub decryptions: u64,
    /// Last successful use of any kind, Unix ms (0: never).
    pub last_use_ms: i64,
}

impl VersionUsage {
    /// What counts against `max_encryptions_per_version`.
    pub fn sealed(&self) -> u64 {
        self.encryptions + self.data_keys
    }
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
    pub wrapped: VersionMap<WrappedVersionSecret>,
    /// The record's tag under the root-derived record key (`Kms` sets it on
    /// every record it commits and checks it on every record it loads; the
    /// store keeps it opaque). `None` only in records read from a stored
    /// format that had none (format 1), before the upgrade tags them.
    pub tag: Option<RecordTag>,
}
