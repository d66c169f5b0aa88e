//! Rotation, all of it: `RotateKey` (manual), `UpdateRotationPolicy`, the
//! scheduled rotation `run_due` asks for, and the rotation a usage cap forces
//! before a version seals more than it may. Every path makes version n+1 with
//! [`rotated`] under the lifecycle lock, so two can never both create it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use keyward_crypto::{RootKey, VersionSecret, WrappedVersionSecret};

use super::{check_key_usable, Caller, KeyView, Kms, LiveKey, DAY_MS};
use crate::MIN_ROTATION_PERIOD_MS;
use crate::{KeyId, KeyMeta, KeyRef, KeyState, KmsError, Operation, RotationPolicy, VersionMeta};

/// A rotation policy as asked for (validated by the use case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationInput {
    /// Rotate every this many ms (at least one hour); `None` clears.
    pub period_ms: Option<i64>,
    /// The first scheduled rotation (default: now + period).
    pub next_rotation_ms: Option<i64>,
    /// Rotate before a primary version seals more than this; `None` clears.
    pub max_encryptions_per_version: Option<u64>,
}

/// Longest rotation period accepted: ten years.
const MAX_ROTATION_PERIOD_MS: i64 = 10 * 366 * DAY_MS;

impl RotationInput {
    /// The policy to store, checked against the clock's `now`.
    pub(super) fn validate(self, now: i64) -> Result<RotationPolicy, KmsError> {
        if let Some(p) = self.period_ms {
            if !(MIN_ROTATION_PERIOD_MS..=MAX_ROTATION_PERIOD_MS).contains(&p) {
                return Err(KmsError::invalid(
                    "rotation_period",
                    format!("must be between 1 hour and 3660 days, got {} s", p / 1000),
                ));
            }
        }
        let next_rotation_ms = match (self.period_ms, self.next_rotation_ms) {
            (None, Some(_)) => {
                return Err(KmsError::invalid("next_rotation_time", "needs a rotation_period"));
            }
            (Some(_), Some(t)) if t <= now => {
                return Err(KmsError::invalid("next_rotation_time", "must be in the future"));
            }
            (Some(_), Some(t)) => Some(t),
            (Some(p), None) => Some(now + p),
            (None, None) => None,
        };
        if self.max_encryptions_per_version == Some(0) {
            return Err(KmsError::invalid("max_encryptions_per_version", "must be at least 1"));
        }
        Ok(RotationPolicy {
            period_ms: self.period_ms,
            next_rotation_ms,
            max_encryptions_per_version: self.max_encryptions_per_version,
        })
    }
}

impl Kms {
    /// `RotateKey`: adds version n+1 and makes it primary. A manual
    /// rotation leaves the schedule alone.
    pub async fn rotate_key(&self, caller: &Caller, key: &str) -> Result<KeyView, KmsError> {
        self.change_key(caller, Operation::RotateKey, key, None, true, |live, root, now| {
            rotated(live, root, now).map(Some)
        })
        .await
    }

    /// Sets only the rotation period (AWS KMS's EnableKeyRotation and
    /// DisableKeyRotation), keeping the usage cap; recorded as
    /// `UpdateRotationPolicy`. The same period again changes nothing.
    pub async fn update_rotation_period(
        &self,
        caller: &Caller,
        key: &str,
        period_ms: Option<i64>,
    ) -> Result<KeyView, KmsError> {
        self.change_meta(caller, Operation::UpdateRotationPolicy, key, None, move |meta, now| {
            if meta.rotation.period_ms == period_ms {
                return Ok(false);
            }
            let input = RotationInput {
                period_ms,
                next_rotation_ms: None,
                max_encryptions_per_version: meta.rotation.max_encryptions_per_version,
            };
            meta.rotation = input.validate(now)?;
            Ok(true)
        })
        .await
    }

    /// `UpdateRotationPolicy`: sets (or, with `None`s, clears) the rotation
    /// period and the usage cap. A period schedules the next rotation at
    /// `next_rotation_ms`, or one period from now.
    pub async fn update_rotation_policy(
        &self,
        caller: &Caller,
        key: &str,
        input: RotationInput,
    ) -> Result<KeyView, KmsError> {
        self.change_meta(caller, Operation::UpdateRotationPolicy, key, None, move |meta, now| {
            meta.rotation = input.validate(now)?;
            Ok(true)
        })
        .await
    }

    /// The scheduled rotation of key `id`, as principal `system`: if it is
    /// still due under the lock, rotate once and schedule the next rotation
    /// one period from now (however many were missed).
    pub(super) async fn rotate_if_due(&self, system: &Caller, id: KeyId) -> Result<KeyView, KmsError> {
        self.change_key(system, Operation::RotateKey, &id.to_string(), None, false, |live, root, now| {
            if !rotation_due(live.meta(), now) {
                return Ok(None);
            }
            let mut new = rotated(live, root, now)?;
            let r = &mut new.record.meta.rotation;
            r.next_rotation_ms = r.period_ms.map(|p| now + p);
            Ok(Some(new))
        })
        .await
    }

    /// A seal on key `id` found no slot left under its usage cap: under the
    /// lifecycle lock, either find that someone else rotated in a version
    /// with room, or rotate the key (audited as `system`, with the request's
    /// id) and take the new version's first slot, so every request finishes
    /// in one round however many race. A cap may make at most
    /// `limits.max_cap_rotations_per_hour` versions of one key in any hour
    /// (a tiny cap under load would otherwise mint versions without end);
    /// beyond that the request is refused `RESOURCE_EXHAUSTED`, recorded
    /// once, as the request's own outcome.
    pub(super) async fn rotate_for_cap(
        &self,
        caller: &Caller,
        id: KeyId,
        cap: u64,
    ) -> Result<(KeyId, u32, Arc<VersionSecret>), KmsError> {
        let mut got = None;
        let mut exhausted = false;
        let max = self.limits.max_cap_rotations_per_hour;
        let system = Caller::system(caller.request_id.clone());
        self.change_key(&system, Operation::RotateKey, &id.to_string(), None, false, |live, root, now| {
            check_key_usable(live.meta())?;
            let current = live.meta().primary_version;
            if self.usage.reserve(id, current, cap) {
                got = Some(current);
                return Ok(None);
            }
            if self.cap_rotations.recent(id, now) >= max as usize {
                // Nothing changes and nothing is recorded here: the
                // request's own record says why it was refused.
                exhausted = true;
                return Ok(None);
            }
            let new = rotated(live, root, now)?;
            self.cap_rotations.record(id, now);
            let v = new.meta().primary_version;
            // Nobody can use v before this rotation is applied.
            self.usage.reserve(id, v, cap);
            got = Some(v);
            Ok(Some(new))
        })
        .await?;
        if exhausted {
            return Err(KmsError::ResourceExhausted(format!(
                "key {id} reached its usage cap (max_encryptions_per_version = {cap}) and the cap has \
                 already made {max} versions in the last hour (limits.max_cap_rotations_per_hour); \
                 retry later, or rotate the key with RotateKey"
            )));
        }
        let version = got.ok_or_else(|| KmsError::Internal("no version after rotation".into()))?;
        let live = self.state.read().expect("state lock").resolve(&KeyRef::Id(id))?;
        let secret = live.secrets.get(&version).cloned().ok_or_else(|| {
            KmsError::FailedPrecondition(format!("version {version} of key {id} is no longer usable"))
        })?;
        Ok((id, version, secret))
    }
}

impl Kms {
    /// Cluster mode: a seal of key `id` under a usage cap takes one of the
    /// units this node leased from the version's cluster-wide count; when
    /// they run out it leases a block more, and when the cap is reached
    /// cluster-wide the key is rotated, once: the rotation is a
    /// compare-and-swap on the key, and a node that lost the race finds the
    /// version already replaced and seals under the new one.
    pub(super) async fn seal_leased(
        &self,
        cluster: &super::cluster::Cluster,
        caller: &Caller,
        id: KeyId,
        mut version: u32,
        mut secret: Arc<VersionSecret>,
        cap: u64,
    ) -> Result<(KeyId, u32, Arc<VersionSecret>), KmsError> {
        for _ in 0..4 {
            if self.usage.take_leased(id, version) {
                return Ok((id, version, secret));
            }
            let granted = {
                let _one = cluster.lease_lock.lock().await;
                if self.usage.take_leased(id, version) {
                    return Ok((id, version, secret));
                }
                let want = self.usage.next_block(id, version);
                let got = cluster.shared.lease_units(id, version, want, cap).await.map_err(|e| {
                    KmsError::Store(crate::StoreError(format!("the shared key store (usage cap): {e}")))
                })?;
                self.usage.add_leased(id, version, got);
                got
            };
            if granted > 0 {
                continue;
            }
            // The cap is reached on every node: rotate unless another node did.
            (version, secret) = self.rotate_exhausted(caller, id, version).await?;
        }
        Err(KmsError::ResourceExhausted(format!(
            "key {id}: every new version reached its usage cap at once; retry"
        )))
    }

    /// Rotates key `id` if `exhausted` is still its primary version
    /// (audited as `system`, with the request's id), within the cap's
    /// rotation limit; returns the primary version then.
    async fn rotate_exhausted(
        &self,
        caller: &Caller,
        id: KeyId,
        exhausted: u32,
    ) -> Result<(u32, Arc<VersionSecret>), KmsError> {
        let max = self.limits.max_cap_rotations_per_hour;
        let mut limited = false;
        let system = Caller::system(caller.request_id.clone());
        self.change_key(&system, Operation::RotateKey, &id.to_string(), None, false, |live, root, now| {
            check_key_usable(live.meta())?;
            limited = false;
            if live.meta().primary_version != exhausted {
                return Ok(None);
            }
            if self.cap_rotations.recent(id, now) >= max as usize {
                limited = true;
                return Ok(None);
            }
            let new = rotated(live, root, now)?;
            self.cap_rotations.record(id, now);
            Ok(Some(new))
        })
        .await?;
        let cap = self.state.read().expect("state lock").resolve(&KeyRef::Id(id))?;
        let version = cap.meta().primary_version;
        if limited || version == exhausted {
            return Err(KmsError::ResourceExhausted(format!(
                "key {id} reached its usage cap and the cap has already made {max} versions in the last hour \
                 (limits.max_cap_rotations_per_hour); retry later, or rotate the key with RotateKey"
            )));
        }
        let secret = cap.secrets.get(&version).cloned().ok_or_else(|| {
            KmsError::FailedPrecondition(format!("version {version} of key {id} is no longer usable"))
        })?;
        Ok((version, secret))
    }
}

/// When the usage cap last rotated each key, within the past hour (kept in
/// memory: a restart forgets it, which at worst allows one more hour's worth).
#[derive(Debug, Default)]
pub(super) struct CapRotations(std::sync::Mutex<HashMap<KeyId, VecDeque<i64>>>);

impl CapRotations {
    /// How many cap rotations of `id` happened in the hour before `now`.
    fn recent(&self, id: KeyId, now: i64) -> usize {
        let mut m = self.0.lock().expect("cap rotations lock");
        let Some(times) = m.get_mut(&id) else { return 0 };
        while times.front().is_some_and(|t| *t <= now - HOUR_MS) {
            times.pop_front();
        }
        let n = times.len();
        if n == 0 {
            m.remove(&id);
        }
        n
    }

    fn record(&self, id: KeyId, now: i64) {
        self.0.lock().expect("cap rotations lock").entry(id).or_default().push_back(now);
    }
}

/// One hour, in ms.
const HOUR_MS: i64 = 3_600_000;

/// Whether an enabled key's scheduled rotation time has come.
pub(super) fn rotation_due(meta: &KeyMeta, now: i64) -> bool {
    meta.state == KeyState::Enabled && meta.rotation.next_rotation_ms.is_some_and(|t| t <= now)
}

/// The key with a fresh version n+1 as primary (the schedule untouched).
pub(super) fn rotated(live: &LiveKey, root: &RootKey, now: i64) -> Result<LiveKey, KmsError> {
    check_key_usable(live.meta())?;
    let mut record = live.record.clone();
    let next = record.meta.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    let secret = VersionSecret::generate()?;
    let wrapped: WrappedVersionSecret = root.wrap(record.meta.id.as_bytes(), next, &secret)?;
    record.wrapped.insert(next, wrapped);
    record.meta.versions.push(VersionMeta::new(next, now));
    record.meta.primary_version = next;
    let mut secrets = live.secrets.clone();
    secrets.insert(next, Arc::new(secret));
    Ok(LiveKey { record, secrets })
}
