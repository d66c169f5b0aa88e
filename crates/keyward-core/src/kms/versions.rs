//! Key versions: ListKeyVersions and every per-version change — disable and
//! enable, the destruction window (schedule, restore, and the destruction
//! `run_due` carries out), and marking a version compromised.

use super::{Caller, KeyView, Kms, DAY_MS};
use crate::{KeyId, KeyMeta, KmsError, Operation, VersionMeta, VersionState, VersionUsage};

/// One version as `ListKeyVersions` shows it.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// Its metadata.
    pub meta: VersionMeta,
    /// Its usage (acknowledged uses only).
    pub usage: VersionUsage,
    /// Whether it is the key's primary version.
    pub primary: bool,
}

/// A key's versions, as `ListKeyVersions` returns them.
#[derive(Debug, Clone)]
pub struct KeyVersions {
    /// The key's metadata.
    pub meta: KeyMeta,
    /// Every version, oldest first, with its usage.
    pub versions: Vec<VersionInfo>,
}

/// Destruction window unless asked otherwise, days.
pub const DEFAULT_DESTRUCTION_WINDOW_DAYS: u32 = 30;

impl Kms {
    /// `ListKeyVersions`: every version with its state and usage.
    pub async fn list_key_versions(&self, caller: &Caller, key: &str) -> Result<KeyVersions, KmsError> {
        let mut entry = self.entry(caller, Operation::ListKeyVersions);
        let result = self.resolve(&mut entry, "key_id", key).and_then(|live| {
            self.require_reader(caller, "list key versions")?;
            let meta = live.meta().clone();
            let versions = meta
                .versions
                .iter()
                .map(|v| VersionInfo {
                    meta: v.clone(),
                    usage: self.usage.get(meta.id, v.version),
                    primary: v.version == meta.primary_version,
                })
                .collect();
            Ok(KeyVersions { meta, versions })
        });
        self.finish(entry, result).await
    }

    /// `DisableKeyVersion`: the version refuses Decrypt until enabled again.
    pub async fn disable_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<KeyView, KmsError> {
        self.set_version_enabled(caller, Operation::DisableKeyVersion, key, version, false).await
    }

    /// `EnableKeyVersion`.
    pub async fn enable_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<KeyView, KmsError> {
        self.set_version_enabled(caller, Operation::EnableKeyVersion, key, version, true).await
    }

    /// Moves a version between Enabled and Disabled (idempotent); only the
    /// primary version may not be disabled.
    async fn set_version_enabled(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: u32,
        enable: bool,
    ) -> Result<KeyView, KmsError> {
        let to = if enable { VersionState::Enabled } else { VersionState::Disabled };
        self.change_version(caller, op, key, version, !enable, move |v, _| match v.state {
            VersionState::Enabled | VersionState::Disabled if v.state == to => Ok(false),
            VersionState::Enabled | VersionState::Disabled => {
                v.state = to;
                Ok(true)
            }
            other => Err(version_state_error(v.version, other)),
        })
        .await
    }

    /// `ScheduleKeyVersionDestruction`: after `days` (1..=365, default 30)
    /// the version's material is erased; until then `RestoreKeyVersion` undoes it.
    pub async fn schedule_key_version_destruction(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
        days: Option<u32>,
    ) -> Result<KeyView, KmsError> {
        let days = days.unwrap_or(DEFAULT_DESTRUCTION_WINDOW_DAYS);
        if !(1..=365).contains(&days) {
            let e = KmsError::invalid("pending_window_days", "must be between 1 and 365");
            return Err(self.refuse_key(caller, Operation::ScheduleKeyVersionDestruction, key, e).await);
        }
        let op = Operation::ScheduleKeyVersionDestruction;
        self.change_version(caller, op, key, version, true, move |v, now| match v.state {
            VersionState::Enabled | VersionState::Disabled => {
                v.state = VersionState::ScheduledForDestruction;
                v.destroy_ms = Some(now + i64::from(days) * DAY_MS);
                Ok(true)
            }
            other => Err(version_state_error(v.version, other)),
        })
        .await
    }

    /// `RestoreKeyVersion`: inside the window, the version comes back disabled.
    pub async fn restore_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<KeyView, KmsError> {
        self.change_version(caller, Operation::RestoreKeyVersion, key, version, false, |v, _| match v.state {
            VersionState::ScheduledForDestruction => {
                v.state = VersionState::Disabled;
                v.destroy_ms = None;
                Ok(true)
            }
            other => Err(version_state_error(v.version, other)),
        })
        .await
    }

    /// `MarkKeyVersionCompromised`: one way. The version keeps its state,
    /// but its ciphertexts open only through ReEncrypt (to move them to a
    /// sound version), never through Decrypt. Not the primary version.
    pub async fn mark_key_version_compromised(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<KeyView, KmsError> {
        let op = Operation::MarkKeyVersionCompromised;
        self.change_version(caller, op, key, version, true, |v, _| match v.state {
            VersionState::Destroyed => Err(version_state_error(v.version, v.state)),
            _ if v.compromised => Ok(false),
            _ => {
                v.compromised = true;
                Ok(true)
            }
        })
        .await
    }

    /// The end of a version's destruction window, as principal `system`: if
    /// it is still scheduled and its time has come, erase its material.
    pub(super) async fn destroy_version_if_due(
        &self,
        system: &Caller,
        id: KeyId,
        version: u32,
    ) -> Result<KeyView, KmsError> {
        let op = Operation::DestroyKeyVersion;
        self.change_key(system, op, &id.to_string(), Some(version), false, move |live, _, now| {
            if !live.meta().version(version).is_some_and(|v| destruction_due(v, now)) {
                return Ok(None);
            }
            let mut new = live.with_meta(|m| {
                let vm = m.version_mut(version).expect("checked above");
                vm.state = VersionState::Destroyed;
                vm.destroy_ms = None;
            });
            new.record.wrapped.remove(&version);
            new.secrets.remove(&version);
            Ok(Some(new))
        })
        .await
    }

    /// Applies `f` to one version of a manageable key (not the primary, if
    /// `not_primary`); `f` returns false when nothing changes.
    async fn change_version(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: u32,
        not_primary: bool,
        mut f: impl FnMut(&mut VersionMeta, i64) -> Result<bool, KmsError>,
    ) -> Result<KeyView, KmsError> {
        self.change_meta(caller, op, key, Some(version), move |meta, now| {
            if meta.version(version).is_none() {
                return Err(KmsError::NotFound(format!("version {version} of key {}", meta.id)));
            }
            if not_primary && version == meta.primary_version {
                return Err(KmsError::FailedPrecondition(format!(
                    "version {version} is the primary version of key {}; rotate the key first",
                    meta.id
                )));
            }
            f(meta.version_mut(version).expect("checked above"), now)
        })
        .await
    }
}

/// Whether a version scheduled for destruction has reached the end of its window.
pub(super) fn destruction_due(v: &VersionMeta, now: i64) -> bool {
    v.state == VersionState::ScheduledForDestruction && v.destroy_ms.is_some_and(|t| t <= now)
}

fn version_state_error(version: u32, state: VersionState) -> KmsError {
    KmsError::FailedPrecondition(format!("version {version} is {}", state.as_str()))
}
