//! Keys: CreateKey, DescribeKey, ListKeys, EnableKey / DisableKey, and the
//! deletion window (ScheduleKeyDeletion, CancelKeyDeletion, and the
//! destruction `run_due` carries out when the window ends).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use keyward_crypto::VersionSecret;

use super::pipeline::Plan;
use super::rotation::RotationInput;
use super::{Caller, KeyView, Kms, LiveKey, DAY_MS};
use crate::{
    AliasChange, KeyId, KeyMeta, KeyRecord, KeyState, KmsError, Operation, Role, VersionMap, VersionMeta,
    VersionState,
};

/// Arguments of `CreateKey`.
#[derive(Debug, Clone, Default)]
pub struct CreateKeyInput {
    /// Optional alias created with the key.
    pub alias: Option<String>,
    /// Free text.
    pub description: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Rotation policy (none by default).
    pub rotation: RotationInput,
}

/// One page of `ListKeys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in id order.
    pub keys: Vec<KeyView>,
    /// The token for the next page, if there may be more.
    pub next_page_token: Option<String>,
}

/// Which keys a filtered listing returns (the console's inventory). `None`
/// matches every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Keys in this state.
    pub state: Option<KeyState>,
    /// Keys with this label (`name`), or this label with this value (`name=value`).
    pub label: Option<(String, Option<String>)>,
    /// Keys with an alias containing this text (case-insensitive), or whose id does.
    pub text: Option<String>,
}

impl KeyFilter {
    /// Whether `key` is one the filter asks for.
    pub fn matches(&self, key: &KeyView) -> bool {
        let state_ok = self.state.is_none_or(|s| key.meta.state == s);
        let label_ok = self.label.as_ref().is_none_or(|(name, value)| match key.meta.labels.get(name) {
            Some(v) => value.as_ref().is_none_or(|want| want == v),
            None => false,
        });
        let text_ok = self.text.as_ref().is_none_or(|t| {
            let t = t.to_lowercase();
            key.meta.id.to_string().contains(&t) || key.aliases.iter().any(|a| a.to_lowercase().contains(&t))
        });
        state_ok && label_ok && text_ok
    }
}

/// Keys on a `ListKeys` page unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most keys on one `ListKeys` page.
const MAX_PAGE_SIZE: u32 = 1000;
/// Deletion window unless asked otherwise, days.
pub const DEFAULT_DELETION_WINDOW_DAYS: u32 = 30;

impl Kms {
    /// `CreateKey`: a new key with version 1, and optionally an alias.
    pub async fn create_key(&self, caller: &Caller, input: CreateKeyInput) -> Result<KeyView, KmsError> {
        self.lifecycle(caller, Operation::CreateKey, |p| {
            self.require(caller, Role::Admin, "create keys")?;
            if let Some(a) = &input.alias {
                crate::validate_alias("alias", a)?;
                p.entry.alias = Some(a.clone());
                if p.state.aliases.contains_key(a) {
                    return Err(KmsError::AlreadyExists(a.clone()));
                }
            }
            validate_labels(&input.labels)?;
            if input.description.len() > 8192 {
                return Err(KmsError::invalid("description", "at most 8192 bytes allowed"));
            }
            let rotation = input.rotation.validate(p.now)?;
            let id = KeyId::generate();
            p.entry.key_id = Some(id);
            p.entry.key_version = Some(1);
            let meta = KeyMeta {
                id,
                description: input.description.clone(),
                labels: input.labels.clone(),
                state: KeyState::Enabled,
                created_ms: p.now,
                primary_version: 1,
                versions: vec![VersionMeta::new(1, p.now)],
                deletion_ms: None,
                rotation,
            };
            let secret = VersionSecret::generate()?;
            let wrapped = p.root.wrap(id.as_bytes(), 1, &secret)?;
            let output = KeyView { meta: meta.clone(), aliases: input.alias.iter().cloned().collect() };
            let record = KeyRecord { meta, wrapped: VersionMap::from([(1, wrapped)]), tag: None };
            let live = LiveKey { record, secrets: VersionMap::from([(1, Arc::new(secret))]) };
            let aliases = input.alias.iter().map(|a| AliasChange::set(a.clone(), id)).collect();
            Ok(Plan::Change { keys: vec![live], aliases, output })
        })
        .await
    }

    /// `DescribeKey`: for administrators and auditors, and for principals
    /// holding a grant on the key.
    pub async fn describe_key(&self, caller: &Caller, key: &str) -> Result<KeyView, KmsError> {
        let mut entry = self.entry(caller, Operation::DescribeKey);
        let result = self.resolve(&mut entry, "key_id", key).and_then(|live| {
            let state = self.state.read().expect("state lock");
            let id = live.meta().id;
            // Administrators, and whoever holds a grant on the key (as AWS
            // lets a grant allow DescribeKey).
            if !caller.policy.has(Role::Admin)
                && !caller.policy.has(Role::Auditor)
                && !caller.policy.covers_key(live.meta(), &|| state.aliases_of(id))
            {
                return Err(KmsError::PermissionDenied(format!(
                    "{} may not describe key {id} (admin or auditor role, or a grant on the key)",
                    caller.principal
                )));
            }
            Ok(state.view(live.meta()))
        });
        self.finish(entry, result).await
    }

    /// `ListKeys`: keys in id order, `page_size` (default 100, at most 1000)
    /// at a time, after `page_token`.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<KeyPage, KmsError> {
        self.list_keys_where(caller, &KeyFilter::default(), page_size, page_token).await
    }

    /// `ListKeys` of the keys `filter` matches (the console's inventory):
    /// one page, recorded as ListKeys.
    pub async fn list_keys_where(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<KeyPage, KmsError> {
        let entry = self.entry(caller, Operation::ListKeys);
        let result = (|| {
            self.require_reader(caller, "list keys")?;
            let size = match page_size.unwrap_or(DEFAULT_PAGE_SIZE) {
                n if n > MAX_PAGE_SIZE => return Err(KmsError::invalid("page_size", "at most 1000")),
                0 => return Err(KmsError::invalid("page_size", "must be at least 1")),
                n => n as usize,
            };
            let after = page_token
                .map(|t| {
                    t.parse::<KeyId>()
                        .map_err(|_| KmsError::invalid("page_token", "not a token from ListKeys"))
                })
                .transpose()?;
            let s = self.state.read().expect("state lock");
            let range = match after {
                Some(a) => s.keys.range((Bound::Excluded(a), Bound::Unbounded)),
                None => s.keys.range(..),
            };
            let mut keys: Vec<KeyView> = range
                .map(|(_, live)| s.view(live.meta()))
                .filter(|v| filter.matches(v))
                .take(size + 1)
                .collect();
            let next_page_token = if keys.len() > size {
                keys.truncate(size);
                keys.last().map(|k| k.meta.id.to_string())
            } else {
                None
            };
            Ok(KeyPage { keys, next_page_token })
        })();
        self.finish(entry, result).await
    }

    /// `EnableKey`.
    pub async fn enable_key(&self, caller: &Caller, key: &str) -> Result<KeyView, KmsError> {
        self.set_key_state(caller, Operation::EnableKey, key, KeyState::Enabled).await
    }

    /// `DisableKey`.
    pub async fn disable_key(&self, caller: &Caller, key: &str) -> Result<KeyView, KmsError> {
        self.set_key_state(caller, Operation::DisableKey, key, KeyState::Disabled).await
    }

    async fn set_key_state(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        to: KeyState,
    ) -> Result<KeyView, KmsError> {
        self.change_meta(caller, op, key, None, |meta, _| {
            let changed = meta.state != to;
            meta.state = to;
            Ok(changed)
        })
        .await
    }

    /// `UpdateKeyLabels`: sets the labels in `set` and removes those named
    /// in `remove` (AWS KMS's TagResource and UntagResource). Labels stay
    /// bounded as at CreateKey.
    pub async fn update_key_labels(
        &self,
        caller: &Caller,
        key: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<KeyView, KmsError> {
        self.change_meta(caller, Operation::UpdateKeyLabels, key, None, move |meta, _| {
            let mut labels = meta.labels.clone();
            for k in &remove {
                labels.remove(k);
            }
            labels.extend(set.clone());
            validate_labels(&labels)?;
            let changed = labels != meta.labels;
            meta.labels = labels;
            Ok(changed)
        })
        .await
    }

    /// `ScheduleKeyDeletion`: unusable at once; after `days` (7..=30,
    /// default 30) every version's material is erased.
    pub async fn schedule_key_deletion(
        &self,
        caller: &Caller,
        key: &str,
        days: Option<u32>,
    ) -> Result<KeyView, KmsError> {
        let days = days.unwrap_or(DEFAULT_DELETION_WINDOW_DAYS);
        if !(7..=30).contains(&days) {
            let e = KmsError::invalid("pending_window_days", "must be between 7 and 30");
            return Err(self.refuse_key(caller, Operation::ScheduleKeyDeletion, key, e).await);
        }
        self.change_meta(caller, Operation::ScheduleKeyDeletion, key, None, move |meta, now| {
            meta.state = KeyState::PendingDeletion;
            meta.deletion_ms = Some(now + i64::from(days) * DAY_MS);
            Ok(true)
        })
        .await
    }

    /// `CancelKeyDeletion`: inside the window, the key comes back disabled.
    pub async fn cancel_key_deletion(&self, caller: &Caller, key: &str) -> Result<KeyView, KmsError> {
        self.change_key(caller, Operation::CancelKeyDeletion, key, None, true, |live, _, _| {
            let meta = live.meta();
            if meta.state != KeyState::PendingDeletion {
                return Err(KmsError::FailedPrecondition(format!(
                    "key {} is {}, not pending deletion",
                    meta.id,
                    meta.state.as_str()
                )));
            }
            Ok(Some(live.with_meta(|m| {
                m.state = KeyState::Disabled;
                m.deletion_ms = None;
            })))
        })
        .await
    }

    /// The end of a deletion window, as principal `system`: if the key is
    /// still pending deletion and its time has come, erase every version's
    /// material (metadata kept, the id never reused).
    pub(super) async fn destroy_key_if_due(&self, system: &Caller, id: KeyId) -> Result<KeyView, KmsError> {
        self.change_key(system, Operation::DestroyKey, &id.to_string(), None, false, |live, _, now| {
            if !deletion_due(live.meta(), now) {
                return Ok(None);
            }
            let mut record = live.record.clone();
            record.meta.state = KeyState::Destroyed;
            record.meta.deletion_ms = None;
            for v in &mut record.meta.versions {
                v.state = VersionState::Destroyed;
                v.destroy_ms = None;
            }
            record.wrapped.clear();
            Ok(Some(LiveKey { record, secrets: VersionMap::new() }))
        })
        .await
    }
}

/// Whether a key pending deletion has reached the end of its window.
pub(super) fn deletion_due(meta: &KeyMeta, now: i64) -> bool {
    meta.state == KeyState::PendingDeletion && meta.deletion_ms.is_some_and(|t| t <= now)
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), KmsError> {
    if labels.len() > 64 {
        return Err(KmsError::invalid("labels", "at most 64 labels allowed"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 63 || v.len() > 255 {
            return Err(KmsError::invalid("labels", "keys must be 1-63 bytes and values at most 255 bytes"));
        }
    }
    Ok(())
}
