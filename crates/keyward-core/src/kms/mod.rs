//! The use cases: every RPC of Keyward as one async method on [`Kms`], one
//! file per family.
//!
//! | file | what |
//! |---|---|
//! | `pipeline.rs` | the steps every use case shares: entry, resolve, authorize, finish, refuse, and `lifecycle` (prepare under the lock, commit and apply) |
//! | `crypto.rs` | Encrypt, Decrypt, GenerateDataKey(s), ReEncrypt, GenerateRandom |
//! | `rotation.rs` | manual, scheduled and usage-cap rotation, and the rotation policy |
//! | `keys.rs` | CreateKey, DescribeKey, ListKeys, enable/disable, deletion and its cancel |
//! | `versions.rs` | ListKeyVersions and every per-version change |
//! | `aliases.rs` | CreateAlias, DeleteAlias |
//! | `scheduled.rs` | `run_due`: the work the clock makes due |
//! | `audit.rs` | QueryAuditLog, VerifyAuditLog |
//! | `access.rs` | AccessService: principals, tokens, grants; the per-request policy and token lookups; expired-token purge |
//! | `refusals.rs` | how refusals are recorded: one by one, or counted past a per-peer threshold |
//!
//! Each method builds an [`AuditEntry`](crate::AuditEntry) as it goes (key,
//! version, alias, context, outcome) and ends in `finish`, which makes the
//! record durable before the result is handed back. If the record cannot be
//! written, the result (and any secret in it) is dropped and the caller gets
//! `AuditUnavailable`. Lifecycle operations commit their key changes and
//! their record in one atomic write.
//!
//! Hot state lives in memory: key metadata and unwrapped version secrets, in
//! a `RwLock<State>` of `Arc`s, replaced (not mutated) on change. Lifecycle
//! operations are serialised by one async mutex held until their write is
//! applied, so two rotations can never both create version n+1.

mod access;
mod access_keys;
mod aliases;
mod audit;
mod cluster;
mod cluster_audit;
mod console;
mod crypto;
mod import;
mod keys;
mod operator;
mod pending;
mod pipeline;
mod refusals;
mod root;
mod rotation;
mod scheduled;
mod signer;
mod versions;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use keyward_crypto::{RecordKey, RootKey, VersionSecret};
use tokio::sync::Mutex;

use crate::usage::UsageBook;
use crate::{
    integrity, AliasChange, AliasEntry, AuditLog, AuditLogConfig, Clock, Edge, KeyId, KeyMeta, KeyRecord,
    KeyRef, KeyState, KmsError, Limits, Policy, Store, StoreError, VersionMap,
};

pub use access::{
    GrantInput, GrantView, NewToken, PrincipalView, TokenIdentity, TokenTtl, TokenView,
    EXPIRED_TOKEN_RETENTION_MS, MAX_PRINCIPAL_NAME, RESERVED_PRINCIPALS,
};
pub use access_keys::{AccessKeyIdentity, AccessKeyRefusal, AccessKeyView, NewAccessKey};
pub use audit::{export_audit_page, AuditQueryInput, ExportPage};
pub use cluster::{ClusterConfig, ClusterStatus};
pub use cluster_audit::AuditResults;
pub use console::{AuditSummary, Bucket, KeyUsage, MAX_BUCKETS, SUMMARY_SCAN_LIMIT};
pub use crypto::{
    DataKeyInput, DataKeyOutput, DecryptOutput, EncryptOutput, ReEncryptInput, ReEncryptOutput, WRONG_KEY,
};
pub use import::{import_into_cluster, ImportReport};
pub use keys::{CreateKeyInput, KeyFilter, KeyPage};
pub use operator::UnsealAttempt;
pub use root::RootRotation;
pub use rotation::RotationInput;
pub use versions::{KeyVersions, VersionInfo};

/// Most items in one batch call.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Who is asking, and the request's identity for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Echoed to the caller as `x-request-id`.
    pub request_id: String,
    /// The authenticated principal.
    pub principal: String,
    /// The peer address.
    pub peer: String,
    /// The edge the request came through.
    pub edge: Edge,
    /// What the principal may do.
    pub policy: Arc<Policy>,
}

impl Caller {
    /// The principal scheduled and automatic work is recorded under.
    pub(crate) fn system(request_id: String) -> Self {
        Self {
            request_id,
            principal: "system".into(),
            peer: String::new(),
            edge: Edge::System,
            policy: Arc::new(Policy::everything()),
        }
    }
}

/// A key as the key-management RPCs return it: its metadata and the aliases
/// that point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// The key's metadata (never its material).
    pub meta: KeyMeta,
    /// Every alias naming the key, sorted.
    pub aliases: Vec<String>,
}

/// Start-up settings for [`Kms`].
#[derive(Debug, Clone, Default)]
pub struct KmsConfig {
    /// Request limits.
    pub limits: Limits,
    /// Audit writer tuning.
    pub audit: AuditLogConfig,
    /// Open a data folder in an older stored format and rewrite it in the
    /// current one, authenticating its records and adopting its audit log
    /// as they are now (`keyward server --upgrade`). Off by default: a
    /// folder that suddenly claims an older format is refused, since a
    /// downgrade would let a database writer have edits authenticated.
    pub adopt_older_format: bool,
    /// The principals of the configuration file and their policies: read
    /// only through the AccessService, which may add tokens and grants.
    pub bootstrap_principals: Vec<(String, Policy)>,
    /// Default and longest lifetime of runtime tokens.
    pub token_ttl: TokenTtl,
}

/// A key with its version secrets unwrapped.
struct LiveKey {
    record: KeyRecord,
    secrets: VersionMap<Arc<VersionSecret>>,
}

impl LiveKey {
    fn meta(&self) -> &KeyMeta {
        &self.record.meta
    }

    /// The same key with `f` applied to a copy of its metadata.
    fn with_meta(&self, f: impl FnOnce(&mut KeyMeta)) -> Self {
        let mut record = self.record.clone();
        f(&mut record.meta);
        Self { record, secrets: self.secrets.clone() }
    }

    /// The same key with `f` applied to a copy of its metadata, or `None`
    /// if `f` says nothing changed.
    fn try_with_meta(
        &self,
        f: impl FnOnce(&mut KeyMeta) -> Result<bool, KmsError>,
    ) -> Result<Option<Self>, KmsError> {
        let mut record = self.record.clone();
        Ok(f(&mut record.meta)?.then(|| Self { record, secrets: self.secrets.clone() }))
    }
}

#[derive(Default)]
struct State {
    keys: BTreeMap<KeyId, Arc<LiveKey>>,
    aliases: BTreeMap<String, KeyId>,
    /// Cluster mode: the shared-store revision of each key and alias.
    revisions: cluster::Revisions,
}

impl State {
    fn resolve(&self, r: &KeyRef) -> Result<Arc<LiveKey>, KmsError> {
        let id = match r {
            KeyRef::Id(id) => *id,
            KeyRef::Alias(a) => *self.aliases.get(a).ok_or_else(|| KmsError::NotFound(a.clone()))?,
        };
        self.keys.get(&id).cloned().ok_or_else(|| KmsError::NotFound(format!("key {id}")))
    }

    fn aliases_of(&self, id: KeyId) -> Vec<String> {
        self.aliases.iter().filter(|(_, k)| **k == id).map(|(a, _)| a.clone()).collect()
    }

    fn view(&self, meta: &KeyMeta) -> KeyView {
        KeyView { meta: meta.clone(), aliases: self.aliases_of(meta.id) }
    }
}

/// The key management service: all use cases, over a [`Store`].
pub struct Kms {
    store: Arc<dyn Store>,
    root: Arc<RootKey>,
    records: Arc<RecordKey>,
    state: Arc<RwLock<State>>,
    access: Arc<RwLock<crate::directory::Directory>>,
    token_ttl: TokenTtl,
    lifecycle: Arc<Mutex<()>>,
    audit: AuditLog,
    refusals: crate::refusals::RefusalBook,
    usage: Arc<UsageBook>,
    cap_rotations: rotation::CapRotations,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// This node's id and audit public key (checkpoints verify under it).
    audit_identity: (crate::NodeId, keyward_crypto::AuditPublicKey),
    /// Set once a root-key rotation committed: changes are refused.
    retired: root::Retired,
    /// Cluster mode: the shared key store this node follows.
    cluster: Option<cluster::Cluster>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("store", &self.store).field("limits", &self.limits).finish()
    }
}

impl Kms {
    /// Opens the service over `store`: checks the root key against the
    /// store's check value (storing it on first use of an empty store),
    /// unwraps every version secret, and starts the audit writer.
    pub fn open(
        store: Arc<dyn Store>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: KmsConfig,
    ) -> Result<Self, OpenError> {
        Self::open_with(store, root, clock, config, None)
    }

    /// Opens a cluster node: the keys and aliases come from `shared` (whose
    /// root-key check value this root key must match, or becomes, for the
    /// first node), `store` keeps this node's audit log, usage and access
    /// records. Start [`Kms::cluster_tasks`] next, or the node stops being
    /// current after `cluster.freshness_bound`.
    pub async fn open_cluster(
        store: Arc<dyn Store>,
        shared: Arc<dyn crate::SharedKeys>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: KmsConfig,
        cluster: ClusterConfig,
    ) -> Result<Self, OpenError> {
        let check = shared.root_check(&root.check_value().0).await.map_err(OpenError::Store)?;
        if !root.matches(&keyward_crypto::RootCheck(check)) {
            return Err(OpenError::ClusterRootKey);
        }
        let started = std::time::Instant::now();
        let snapshot = shared.load().await.map_err(OpenError::Store)?;
        let kms = Self::open_with(store, root, clock, config, Some((shared, snapshot, cluster, started)))?;
        // The record of a change this node made just before it stopped.
        let c = kms.cluster.as_ref().expect("a cluster node");
        match kms.settle_pending(c).await {
            Ok(_) => Ok(kms),
            Err(KmsError::Internal(e)) => Err(OpenError::Tampered(e)),
            Err(KmsError::Store(e)) => Err(OpenError::Store(e)),
            Err(e) => {
                Err(OpenError::AuditHead(format!("appending this node's pending lifecycle record: {e}")))
            }
        }
    }

    fn open_with(
        store: Arc<dyn Store>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        mut config: KmsConfig,
        joining: Option<(
            Arc<dyn crate::SharedKeys>,
            crate::SharedSnapshot,
            ClusterConfig,
            std::time::Instant,
        )>,
    ) -> Result<Self, OpenError> {
        let mut keys = store.load_keys().map_err(OpenError::Store)?;
        if joining.is_some() && !keys.is_empty() {
            return Err(OpenError::LocalKeys(keys.len()));
        }
        match store.root_check().map_err(OpenError::Store)? {
            Some(v) => {
                if !root.matches(&keyward_crypto::RootCheck(v)) {
                    return Err(OpenError::WrongRootKey);
                }
            }
            None if keys.is_empty() => {
                store.set_root_check(&root.check_value().0).map_err(OpenError::Store)?
            }
            None => return Err(OpenError::MissingCheck),
        }
        let records = RecordKey::derive(&root);
        let mut aliases = store.load_aliases().map_err(OpenError::Store)?;
        let upgrading = store.needs_upgrade();
        if upgrading && !config.adopt_older_format {
            return Err(OpenError::NeedsUpgrade);
        }
        if upgrading {
            // An older format carries no tags: tag what it holds, once, in
            // one atomic write (the upgrade trusts the folder as it is now).
            for k in &mut keys {
                k.tag = Some(integrity::tag_key(&records, k));
            }
            for a in &mut aliases {
                a.tag = Some(integrity::tag_alias(&records, &a.alias, a.key));
            }
            store.upgrade(&keys, &aliases).map_err(OpenError::Store)?;
            tracing::warn!(keys = keys.len(), aliases = aliases.len(), "data folder upgraded to the current stored format; key records and aliases are now authenticated");
        }
        let mut state = State::default();
        let mut cluster = None;
        if let Some((shared, snapshot, cluster_config, started)) = joining {
            let revision = snapshot.revision;
            config.audit.node_id = Some(cluster_config.node_id.clone());
            state = cluster::state_from(&root, &records, snapshot)?;
            cluster = Some(cluster::Cluster::new(shared, cluster_config, revision, started, clock.now_ms()));
        }
        for record in keys {
            if !integrity::key_intact(&records, &record) {
                return Err(OpenError::Tampered(format!("key record {}", record.meta.id)));
            }
            let live = unwrap_record(&root, record).map_err(|_| OpenError::WrongRootKey)?;
            state.keys.insert(live.meta().id, Arc::new(live));
        }
        for a in aliases {
            if !integrity::alias_intact(&records, &a.alias, a.key, a.tag.as_ref()) {
                return Err(OpenError::Tampered(format!("alias {:?}", a.alias)));
            }
            if !state.keys.contains_key(&a.key) {
                return Err(OpenError::Tampered(format!(
                    "alias {:?} (it names key {}, which is not stored)",
                    a.alias, a.key
                )));
            }
            state.aliases.insert(a.alias, a.key);
        }
        let access_records = store.load_access().map_err(OpenError::Store)?;
        for r in &access_records {
            if !integrity::access_intact(&records, r) {
                let what = match r.key() {
                    crate::AccessRecordKey::Principal(n) => format!("principal {n:?}"),
                    crate::AccessRecordKey::Token(id) => format!("token {id}"),
                    crate::AccessRecordKey::Grant(id) => format!("grant {id}"),
                    crate::AccessRecordKey::AccessKey(id) => format!("access key {id}"),
                };
                return Err(OpenError::Tampered(what));
            }
        }
        // A principal in the configuration file and one created at runtime
        // under the same name would merge (the runtime one's tokens and
        // grants would go to the file's): refuse, naming it.
        if let Some(clash) = access_records.iter().find_map(|r| match r {
            crate::AccessRecord::Principal(p)
                if config.bootstrap_principals.iter().any(|(n, _)| *n == p.name) =>
            {
                Some(p.name.clone())
            }
            _ => None,
        }) {
            return Err(OpenError::PrincipalClash(clash));
        }
        let directory = crate::directory::Directory::new(config.bootstrap_principals, access_records);
        directory.restore_uses(&store.load_token_uses().map_err(OpenError::Store)?);
        let usage = Arc::new(UsageBook::load(store.load_usage().map_err(OpenError::Store)?));
        signer::check_head(&*store)?;
        let (node_id, signing_key, audit_key) = signer::load_or_create(&*store, &root, upgrading)?;
        signer::check_seal(&*store, (node_id, &signing_key, &audit_key), &*clock, upgrading)?;
        let checkpoints =
            crate::committer::CheckpointSigner { key: signing_key, node_id, clock: clock.clone() };
        let audit = AuditLog::start(store.clone(), usage.clone(), config.audit, Some(checkpoints))
            .map_err(OpenError::Store)?;
        Ok(Self {
            store,
            root: Arc::new(root),
            records: Arc::new(records),
            state: Arc::new(RwLock::new(state)),
            access: Arc::new(RwLock::new(directory)),
            token_ttl: config.token_ttl,
            lifecycle: Arc::new(Mutex::new(())),
            audit,
            refusals: Default::default(),
            usage,
            cap_rotations: Default::default(),
            limits: config.limits,
            clock,
            audit_identity: (node_id, audit_key),
            retired: Default::default(),
            cluster,
        })
    }

    /// This node's id and the public key its audit checkpoints verify under.
    pub fn audit_identity(&self) -> (crate::NodeId, keyward_crypto::AuditPublicKey) {
        self.audit_identity
    }

    /// The audit writer (for health reporting).
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Test support: takes the lifecycle lock and holds it until the guard
    /// is dropped, to show what does and does not wait for it.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn hold_lifecycle_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.lifecycle.clone().lock_owned().await
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A key's id, state and primary version, from memory and without an
    /// audit record: for health reporting (the KMS v2 `Status` poll), not
    /// for callers.
    pub fn peek_key(&self, key: &str) -> Result<(KeyId, KeyState, u32), KmsError> {
        let r = KeyRef::parse("key_id", key)?;
        let live = self.state.read().expect("state lock").resolve(&r)?;
        let m = live.meta();
        Ok((m.id, m.state, m.primary_version))
    }

    /// How many keys are in each state (for metrics; not audited).
    pub fn key_state_counts(&self) -> Vec<(KeyState, usize)> {
        let s = self.state.read().expect("state lock");
        [KeyState::Enabled, KeyState::Disabled, KeyState::PendingDeletion, KeyState::Destroyed]
            .into_iter()
            .map(|st| (st, s.keys.values().filter(|k| k.meta().state == st).count()))
            .collect()
    }
}

/// Why [`Kms::open`] refused to start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The root key does not match the data folder.
    #[error("the root key does not match this data folder (its check value differs, or a stored key cannot be unwrapped)")]
    WrongRootKey,
    /// Keys exist but no check value does.
    #[error("the data folder holds keys but no root-key check value; refusing to guess")]
    MissingCheck,
    /// The folder is in an older stored format and `adopt_older_format` is off.
    #[error("this data folder is in an older stored format (written by an earlier Keyward); start once with --upgrade to rewrite it in the current format, authenticating its records and audit log as they are now (only if nobody else could have written to it)")]
    NeedsUpgrade,
    /// A stored record fails its integrity check: it was changed by
    /// something other than this service (or under another root key).
    #[error("{0} fails its integrity check (its tag does not match its contents): it was changed outside Keyward; refusing to load it. Restore the data folder from a backup, or investigate")]
    Tampered(String),
    /// A configuration-file principal has the name of a runtime principal.
    #[error("principal {0:?} is in the configuration file and was also created at runtime (AccessService); the two would merge. Remove it from the file, start, delete the runtime one (keyward principal delete {0}), then add it back; or give the file's another name")]
    PrincipalClash(String),
    /// The audit chain head is missing or behind the newest record.
    #[error("{0}; refusing to start (continuing would overwrite audit records)")]
    AuditHead(String),
    /// The audit signing key cannot be made or opened.
    #[error("audit signing key: {0}")]
    AuditKey(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Cluster mode: the root key is not the cluster's.
    #[error("the root key differs from the cluster's (its check value in the shared store does not match): every node must be given the same root key")]
    ClusterRootKey,
    /// `keyward cluster import`: the cluster already holds other keys.
    #[error("the cluster is not empty: {0}; import only into an empty cluster (an import stopped half way may be run again: what it already wrote is recognised)")]
    ClusterNotEmpty(String),
    /// Cluster mode: the local data folder holds keys of its own.
    #[error("this data folder holds {0} keys of a single-node server; a cluster node keeps its keys in the shared store: use an empty data folder, or move them with `keyward cluster import`")]
    LocalKeys(usize),
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Lifecycle changes need a key that is enabled or disabled (not pending
/// deletion, not destroyed).
fn check_key_manageable(meta: &KeyMeta) -> Result<(), KmsError> {
    match meta.state {
        KeyState::Enabled | KeyState::Disabled => Ok(()),
        other => Err(KmsError::FailedPrecondition(format!("key {} is {}", meta.id, other.as_str()))),
    }
}

/// Crypto operations need an enabled key.
fn check_key_usable(meta: &KeyMeta) -> Result<(), KmsError> {
    match meta.state {
        KeyState::Enabled => Ok(()),
        other => Err(KmsError::FailedPrecondition(format!("key {} is {}", meta.id, other.as_str()))),
    }
}

impl Kms {
    /// A copy of `record` with its tag, as committed.
    fn tagged(&self, record: &KeyRecord) -> KeyRecord {
        KeyRecord { tag: Some(integrity::tag_key(&self.records, record)), ..record.clone() }
    }

    /// An alias change with its tag, as committed.
    fn tagged_alias(&self, change: AliasChange) -> AliasChange {
        match change {
            AliasChange::Set(e) => {
                let tag = Some(integrity::tag_alias(&self.records, &e.alias, e.key));
                AliasChange::Set(AliasEntry { tag, ..e })
            }
            remove => remove,
        }
    }
}

fn unwrap_record(root: &RootKey, record: KeyRecord) -> Result<LiveKey, keyward_crypto::CryptoError> {
    let secrets = record
        .wrapped
        .iter()
        .map(|(v, wrapped)| Ok((*v, Arc::new(root.unwrap(record.meta.id.as_bytes(), *v, wrapped)?))))
        .collect::<Result<_, keyward_crypto::CryptoError>>()?;
    Ok(LiveKey { record, secrets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_memory_fits_the_256_byte_allocation_class() {
        // Every key is one `Arc<LiveKey>` for the server's life: with the
        // Arc's two counters it must stay within 256 bytes (mimalloc's next
        // class is 320: 64 bytes more per key, 6.4 MB per 100k keys).
        assert!(std::mem::size_of::<LiveKey>() + 2 * std::mem::size_of::<usize>() <= 256);
    }
}
