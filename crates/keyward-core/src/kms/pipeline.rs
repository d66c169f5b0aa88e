//! The steps every use case shares: open an audit entry, resolve the key,
//! authorize, and end in `finish` (record, then release the result) or
//! `lifecycle` (prepare under the lifecycle lock, then commit the change and
//! its record in one write and apply it to memory).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use keyward_crypto::{EncryptionContext, RootKey};

use super::{check_key_manageable, Caller, KeyView, Kms, LiveKey, State};
use crate::committer::Mutation;
use crate::{AliasChange, AuditEntry, CommitBatch, KeyRef, KmsError, Operation, Outcome};
use crate::{Permission, Role};

/// What a lifecycle use case decided, under the lifecycle lock.
pub(super) enum Plan<T> {
    /// Write these keys and alias changes with the record, then answer `T`.
    Change {
        /// Keys replacing (or adding to) the in-memory state.
        keys: Vec<LiveKey>,
        /// Alias changes.
        aliases: Vec<AliasChange>,
        /// The answer once durable.
        output: T,
    },
    /// Nothing changes (enabling an enabled key, say). `record` says whether
    /// the request is still audited: a caller asked for it (true), or the
    /// system re-checked scheduled work that someone else already did (false).
    Unchanged {
        /// The answer.
        output: T,
        /// Whether to audit the request.
        record: bool,
    },
}

impl Plan<KeyView> {
    /// Replaces one key; answers with its new view.
    fn replace(state: &State, key: LiveKey) -> Self {
        let output = state.view(key.meta());
        Plan::Change { keys: vec![key], aliases: Vec::new(), output }
    }
}

/// What one lifecycle step sees while it decides.
pub(super) struct Prep<'a> {
    /// The request's audit record, to name key, version and alias.
    pub entry: &'a mut AuditEntry,
    /// The in-memory keys and aliases (read-only here).
    pub state: &'a State,
    /// The root key, to wrap new version secrets.
    pub root: &'a RootKey,
    /// The clock's time.
    pub now: i64,
}

impl Kms {
    /// A fresh audit entry for `caller` doing `op`, with the outcome unset.
    pub(super) fn entry(&self, caller: &Caller, op: Operation) -> AuditEntry {
        AuditEntry {
            time_ms: self.clock.now_ms(),
            request_id: caller.request_id.clone(),
            principal: caller.principal.clone(),
            peer: caller.peer.clone(),
            edge: caller.edge,
            operation: op,
            key_id: None,
            key_version: None,
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: BTreeMap::new(),
            outcome: Outcome::ok(),
        }
    }

    /// Records the outcome durably, then releases the result.
    pub(super) async fn finish<T>(
        &self,
        mut entry: AuditEntry,
        result: Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        entry.outcome = match &result {
            Ok(_) => Outcome::ok(),
            Err(e) => Outcome::of_error(e),
        };
        match self.record(entry).await {
            Ok(()) => result,
            Err(e) => Err(KmsError::AuditUnavailable(e)),
        }
    }

    /// Records a request refused before it reached a use case (for example
    /// one without a valid identity) and returns the error.
    pub async fn refuse(&self, caller: &Caller, op: Operation, error: KmsError) -> KmsError {
        let mut entry = self.entry(caller, op);
        entry.outcome = Outcome::of_error(&error);
        match self.record(entry).await {
            Ok(()) => error,
            Err(e) => KmsError::AuditUnavailable(e),
        }
    }

    /// Like [`Kms::refuse`], naming the credential the caller presented
    /// (e.g. `access_key:<id>`) in the record's `target`, so a reviewer can
    /// tell which revoked or unknown credential is still in use.
    pub async fn refuse_credential(
        &self,
        caller: &Caller,
        op: Operation,
        error: KmsError,
        credential: &str,
    ) -> KmsError {
        let mut entry = self.entry(caller, op);
        entry.target = Some(crate::bounded(credential, 160));
        entry.outcome = Outcome::of_error(&error);
        match self.record(entry).await {
            Ok(()) => error,
            Err(e) => KmsError::AuditUnavailable(e),
        }
    }

    /// Like [`Kms::refuse`], for a request refused before its use case ran
    /// that named `key`: the record names the key (and alias) when it
    /// resolves, so every refusal is recorded with the key it concerned.
    pub async fn refuse_key(&self, caller: &Caller, op: Operation, key: &str, error: KmsError) -> KmsError {
        let mut entry = self.entry(caller, op);
        note_in(&self.state.read().expect("state lock"), &mut entry, key);
        entry.outcome = Outcome::of_error(&error);
        match self.audit.append(entry).await {
            Ok(_) => error,
            Err(e) => KmsError::AuditUnavailable(e),
        }
    }

    /// Resolves the key a request names, recording it (and any alias) in the entry.
    pub(super) fn resolve(
        &self,
        entry: &mut AuditEntry,
        field: &'static str,
        key: &str,
    ) -> Result<Arc<LiveKey>, KmsError> {
        self.check_current()?;
        resolve_in(&self.state.read().expect("state lock"), entry, field, key)
    }

    /// Refuses a caller without `role`.
    pub(super) fn require(&self, caller: &Caller, role: Role, what: &str) -> Result<(), KmsError> {
        if caller.policy.has(role) {
            Ok(())
        } else {
            Err(KmsError::PermissionDenied(format!("{} may not {what}", caller.principal)))
        }
    }

    /// Refuses a caller with neither the admin nor the auditor role: the
    /// reads of key metadata (ListKeys, DescribeKey, ListKeyVersions), which
    /// compliance reviewers need (they show no key material).
    pub(super) fn require_reader(&self, caller: &Caller, what: &str) -> Result<(), KmsError> {
        if caller.policy.has(Role::Admin) || caller.policy.has(Role::Auditor) {
            Ok(())
        } else {
            Err(KmsError::PermissionDenied(format!(
                "{} may not {what} (admin or auditor role)",
                caller.principal
            )))
        }
    }

    /// Refuses a caller no grant of which allows `perm` on this key under
    /// any context: decided before the request's context is even read, so
    /// a caller without access learns nothing about the context limits and
    /// its refusal is a PERMISSION_DENIED like any other. [`Kms::authorize`]
    /// then checks the context constraints.
    pub(super) fn pre_authorize(
        &self,
        caller: &Caller,
        perm: Permission,
        live: &LiveKey,
    ) -> Result<(), KmsError> {
        let meta = live.meta();
        let aliases = || self.state.read().expect("state lock").aliases_of(meta.id);
        if caller.policy.allows_some_context(perm, meta, &aliases) {
            return Ok(());
        }
        Err(KmsError::PermissionDenied(format!(
            "{} may not {} with key {}",
            caller.principal,
            perm.as_str(),
            meta.id
        )))
    }

    /// Refuses a caller whose grants do not allow `perm` on this key with
    /// this encryption context.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        perm: Permission,
        live: &LiveKey,
        context: &EncryptionContext,
    ) -> Result<(), KmsError> {
        let meta = live.meta();
        let aliases = || self.state.read().expect("state lock").aliases_of(meta.id);
        if caller.policy.allows(perm, meta, &aliases, context.pairs()) {
            return Ok(());
        }
        let under = if caller.policy.allows_some_context(perm, meta, &aliases) {
            " under this encryption context (a grant constrains it)"
        } else {
            ""
        };
        Err(KmsError::PermissionDenied(format!(
            "{} may not {} with key {}{under}",
            caller.principal,
            perm.as_str(),
            meta.id
        )))
    }

    /// Validates an encryption context against the limits.
    pub(super) fn context(
        &self,
        field: &'static str,
        pairs: HashMap<String, String>,
    ) -> Result<EncryptionContext, KmsError> {
        if pairs.len() > self.limits.max_context_pairs {
            return Err(KmsError::invalid(
                field,
                format!("at most {} pairs allowed, got {}", self.limits.max_context_pairs, pairs.len()),
            ));
        }
        let ctx = EncryptionContext::new(pairs);
        if ctx.byte_len() > self.limits.max_context_bytes {
            return Err(KmsError::invalid(
                field,
                format!("at most {} bytes allowed, got {}", self.limits.max_context_bytes, ctx.byte_len()),
            ));
        }
        if ctx.pairs().keys().any(String::is_empty) {
            return Err(KmsError::invalid(field, "keys must not be empty"));
        }
        Ok(ctx)
    }

    /// The one lifecycle path: under the lifecycle lock, `prepare` decides
    /// what changes (or refuses); a refusal is recorded, a change is written
    /// with its record in one synced batch and applied to memory on the
    /// writer thread, which then releases the lock.
    pub(super) async fn lifecycle<T>(
        &self,
        caller: &Caller,
        op: Operation,
        mut prepare: impl FnMut(Prep<'_>) -> Result<Plan<T>, KmsError>,
    ) -> Result<T, KmsError> {
        let mut entry = self.entry(caller, op);
        // Every lifecycle change is an administrator's: anyone else is
        // refused without the lock, so a stream of refusals never queues on
        // it (or delays rotations and the sweeper). `prepare` still decides,
        // over the current state, so the refusal names the key it concerned
        // and says what was asked; it refuses a non-administrator.
        if !caller.policy.has(Role::Admin) {
            let refused = {
                let state = self.state.read().expect("state lock");
                let now = self.clock.now_ms();
                prepare(Prep { entry: &mut entry, state: &state, root: &self.root, now })
            };
            let e = match refused {
                Err(e) => e,
                Ok(_) => KmsError::PermissionDenied(format!("{} may not change keys", caller.principal)),
            };
            return self.finish(entry, Err(e)).await;
        }
        if let Some(cluster) = &self.cluster {
            return self.lifecycle_shared(cluster, entry, prepare).await;
        }
        let guard = self.lifecycle.clone().lock_owned().await;
        if let Err(e) = self.check_not_retired() {
            drop(guard);
            return self.finish(entry, Err(e)).await;
        }
        let planned = {
            let state = self.state.read().expect("state lock");
            let now = self.clock.now_ms();
            prepare(Prep { entry: &mut entry, state: &state, root: &self.root, now })
        };
        let (keys, aliases, output) = match planned {
            Err(e) => {
                drop(guard);
                return self.finish(entry, Err(e)).await;
            }
            Ok(Plan::Unchanged { output, record }) => {
                drop(guard);
                return if record { self.finish(entry, Ok(output)).await } else { Ok(output) };
            }
            Ok(Plan::Change { keys, aliases, output }) => (keys, aliases, output),
        };
        let batch = CommitBatch {
            keys: keys.iter().map(|k| self.tagged(&k.record)).collect(),
            aliases: aliases.into_iter().map(|a| self.tagged_alias(a)).collect(),
            ..Default::default()
        };
        let alias_changes = batch.aliases.clone();
        let state = self.state.clone();
        let apply = move || {
            let mut s = state.write().expect("state lock");
            for key in keys {
                s.keys.insert(key.meta().id, Arc::new(key));
            }
            for change in alias_changes {
                match change {
                    AliasChange::Set(e) => s.aliases.insert(e.alias, e.key),
                    AliasChange::Remove(alias) => s.aliases.remove(&alias),
                };
            }
            drop(guard);
        };
        self.audit
            .submit(entry, Some(Mutation { batch, apply: Box::new(apply) }))
            .await
            .map_err(KmsError::AuditUnavailable)?;
        Ok(output)
    }

    /// The lifecycle path of a cluster node: decided from memory under the
    /// lock, written to the shared store as a compare-and-swap on the
    /// revisions memory holds; a write that lost a race waits until the
    /// winning change is in memory and decides again. The record follows
    /// the write (so it never claims a change that did not happen) and is
    /// durable before the answer.
    async fn lifecycle_shared<T>(
        &self,
        cluster: &super::cluster::Cluster,
        first: AuditEntry,
        mut prepare: impl FnMut(Prep<'_>) -> Result<Plan<T>, KmsError>,
    ) -> Result<T, KmsError> {
        for _ in 0..super::cluster::MAX_WRITE_ATTEMPTS {
            let mut entry = first.clone();
            let guard = self.lifecycle.clone().lock_owned().await;
            if let Err(e) = self.check_not_retired().and_then(|()| cluster.check_current()) {
                drop(guard);
                return self.finish(entry, Err(e)).await;
            }
            // An earlier change's record may be missing: append it first,
            // before this change overwrites its pending record.
            if cluster.unsettled() {
                if let Err(e) = self.settle_pending(cluster).await {
                    drop(guard);
                    return self.finish(entry, Err(e)).await;
                }
            }
            let planned = {
                let state = self.state.read().expect("state lock");
                let now = self.clock.now_ms();
                prepare(Prep { entry: &mut entry, state: &state, root: &self.root, now }).map(|plan| {
                    // The revisions of what the change replaces, as memory holds them.
                    let expect = match &plan {
                        Plan::Change { keys, aliases, .. } => (
                            keys.iter().map(|k| state.expected_key(k.meta().id)).collect(),
                            aliases.iter().map(|a| state.expected_alias(alias_name(a))).collect(),
                        ),
                        Plan::Unchanged { .. } => (Vec::new(), Vec::new()),
                    };
                    (plan, expect)
                })
            };
            let (keys, aliases, output, expect) = match planned {
                Err(e) => {
                    drop(guard);
                    return self.finish(entry, Err(e)).await;
                }
                Ok((Plan::Unchanged { output, record }, _)) => {
                    drop(guard);
                    return if record { self.finish(entry, Ok(output)).await } else { Ok(output) };
                }
                Ok((Plan::Change { keys, aliases, output }, expect)) => (keys, aliases, output, expect),
            };
            let keys: Vec<LiveKey> = keys
                .into_iter()
                .map(|k| LiveKey { record: self.tagged(&k.record), secrets: k.secrets })
                .collect();
            let aliases: Vec<AliasChange> = aliases.into_iter().map(|a| self.tagged_alias(a)).collect();
            let (pending_id, pending) = match self.pending_record(&cluster.config.node_id, &entry) {
                Ok(p) => p,
                Err(e) => {
                    drop(guard);
                    return self.finish(entry, Err(e)).await;
                }
            };
            let write = crate::SharedWrite {
                keys: keys.iter().zip(expect.0).map(|(k, rev)| (k.record.clone(), rev)).collect(),
                aliases: aliases.iter().zip(expect.1).map(|(a, rev)| (a.clone(), rev)).collect(),
                pending: Some(pending),
                fence: super::scheduled::SWEEPER_FENCE.try_with(|f| *f).ok().flatten(),
                usage: Vec::new(),
            };
            match cluster.shared.write(write).await {
                Ok(rev) => {
                    {
                        let mut s = self.state.write().expect("state lock");
                        for key in keys {
                            s.put_shared_key(key, rev);
                        }
                        for change in aliases {
                            s.put_shared_alias(change, rev);
                        }
                    }
                    // The lock is held until the record is durable, so no
                    // later change overwrites its pending record before.
                    let hold = move || drop(guard);
                    return match self.record_settled_holding(entry, pending_id, hold).await {
                        Ok(()) => Ok(output),
                        Err(e) => {
                            cluster.set_unsettled(true);
                            Err(e)
                        }
                    };
                }
                Err(crate::WriteError::Conflict(at)) => {
                    drop(guard);
                    // Decide again once the change that won is in memory.
                    cluster.wait_applied(at, cluster.config.freshness_bound).await;
                }
                Err(crate::WriteError::Fenced) => {
                    drop(guard);
                    let e = KmsError::FailedPrecondition(
                        "this node no longer leads the sweeper: the node that does carries out the scheduled work".into(),
                    );
                    return self.finish(entry, Err(e)).await;
                }
                Err(e) => {
                    // An unknown outcome may have applied: settle before the next change.
                    if matches!(e, crate::WriteError::Unknown(_)) {
                        cluster.set_unsettled(true);
                    }
                    drop(guard);
                    let e = KmsError::Store(crate::StoreError(format!("the shared key store: {e}")));
                    return self.finish(entry, Err(e)).await;
                }
            }
        }
        let e = KmsError::Stale(format!(
            "{} concurrent changes won the race for this change; retry",
            super::cluster::MAX_WRITE_ATTEMPTS
        ));
        self.finish(first, Err(e)).await
    }

    /// A lifecycle change of one existing key by an administrator: `change`
    /// gets the key and returns its new form, or `None` if nothing changes.
    /// `version` is the version the record names (default: the primary).
    /// A change that turns out to be none is recorded when `record_noop` (a
    /// caller asked for it) and silently skipped otherwise (the system
    /// re-checking scheduled work someone else already did).
    pub(super) async fn change_key(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: Option<u32>,
        record_noop: bool,
        mut change: impl FnMut(&LiveKey, &RootKey, i64) -> Result<Option<LiveKey>, KmsError>,
    ) -> Result<KeyView, KmsError> {
        self.lifecycle(caller, op, |p| {
            let live = resolve_in(p.state, p.entry, "key_id", key)?;
            self.require(caller, Role::Admin, "change keys")?;
            let new = change(&live, p.root, p.now)?;
            let shown = new.as_ref().map_or(live.meta(), LiveKey::meta);
            p.entry.key_version = Some(version.unwrap_or(shown.primary_version));
            Ok(match new {
                Some(new) => Plan::replace(p.state, new),
                None => Plan::Unchanged { output: p.state.view(live.meta()), record: record_noop },
            })
        })
        .await
    }

    /// A change of a key's metadata that needs the key to be manageable
    /// (enabled or disabled); `f` returns false when nothing changes.
    /// `version` is the version the record names (default: the primary).
    pub(super) async fn change_meta(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: Option<u32>,
        mut f: impl FnMut(&mut crate::KeyMeta, i64) -> Result<bool, KmsError>,
    ) -> Result<KeyView, KmsError> {
        self.change_key(caller, op, key, version, true, |live, _, now| {
            check_key_manageable(live.meta())?;
            live.try_with_meta(|m| f(m, now))
        })
        .await
    }
}

/// The alias an alias change concerns.
fn alias_name(change: &AliasChange) -> &str {
    match change {
        AliasChange::Set(e) => &e.alias,
        AliasChange::Remove(a) => a,
    }
}

/// Resolves `key` in `state`, naming the key (and alias) in `entry` as soon
/// as it is known, so a refusal is recorded with the key it concerned.
pub(super) fn resolve_in(
    state: &State,
    entry: &mut AuditEntry,
    field: &'static str,
    key: &str,
) -> Result<Arc<LiveKey>, KmsError> {
    let r = KeyRef::parse(field, key)?;
    entry.alias = r.alias().map(str::to_string);
    if let KeyRef::Id(id) = &r {
        entry.key_id = Some(*id);
    }
    let live = state.resolve(&r)?;
    entry.key_id = Some(live.meta().id);
    Ok(live)
}

/// Names `key` (and its alias) in `entry` if it resolves, without failing:
/// for a refusal decided before the key is looked up (a missing role, a bad
/// argument), so its record still says which key it concerned.
pub(super) fn note_in(state: &State, entry: &mut AuditEntry, key: &str) {
    let _ = resolve_in(state, entry, "key_id", key);
}
