//! Cluster mode: the keys live in a shared store ([`SharedKeys`], etcd),
//! every node holds all of them in memory and follows the store's changes.
//!
//! - **Following.** Loaded at one revision at open, then a watch from the
//!   next; a compacted watch reloads everything. Crypto requests read only
//!   memory.
//! - **Freshness, fail closed.** Every `probe_every` the node reads the
//!   revision of the last shared write linearizably (at `t0`) and waits
//!   until it has applied it; it is then current until `t0 +
//!   freshness_bound`. Past that without a confirmation it refuses crypto
//!   and lifecycle requests (`Stale`, UNAVAILABLE): a key disabled anywhere
//!   is refused everywhere within the bound, even by a node cut off from
//!   the shared store.
//! - **Lifecycle writes** are compare-and-swap writes on the revisions of
//!   what they replace, decided from memory under this node's lifecycle
//!   lock. A write that loses a race waits until this node has applied the
//!   change that beat it and decides again, so two rotations of one key on
//!   two nodes make versions n+1 and n+2.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{unwrap_record, Kms, LiveKey, State};
use crate::shared::{Revision, SharedEvent, SharedKeys, SharedSnapshot, WatchError};
use crate::{integrity, AliasChange, KeyId, KmsError, OpenError};

/// Cluster-mode settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name: every audit record it writes carries it.
    pub node_id: String,
    /// Where other nodes and `keyward cluster status` reach it.
    pub address: String,
    /// Its Keyward version, as published.
    pub version: String,
    /// Its lease: it publishes itself and may lead the sweeper while it
    /// renews it (every third of it).
    pub lease_ttl: Duration,
    /// How long a confirmation that this node is current holds.
    pub freshness_bound: Duration,
    /// How often the node confirms it is current.
    pub probe_every: Duration,
    /// How it reaches the other nodes' audit logs (merged `QueryAuditLog`
    /// and `VerifyAuditLog`); `None`: it cannot, and reports them unreachable.
    pub peers: Option<Arc<dyn crate::AuditPeers>>,
}

impl ClusterConfig {
    /// Node `node_id` with the default bound (2 s) and probe interval (50 ms).
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            address: String::new(),
            version: String::new(),
            lease_ttl: Duration::from_secs(5),
            freshness_bound: Duration::from_secs(2),
            probe_every: Duration::from_millis(50),
            peers: None,
        }
    }
}

/// How many times a lifecycle write that lost a race is decided again.
pub(super) const MAX_WRITE_ATTEMPTS: usize = 16;

/// The revisions of what memory holds (cluster mode only).
#[derive(Debug, Default)]
pub(super) struct Revisions {
    /// The revision that last wrote each key.
    pub keys: HashMap<KeyId, Revision>,
    /// The revision that last set or removed each alias (kept after removal,
    /// so an older event for it is not applied).
    pub aliases: HashMap<String, Revision>,
}

/// This node's link to the shared store.
pub(super) struct Cluster {
    pub shared: Arc<dyn SharedKeys>,
    pub config: ClusterConfig,
    /// Everything up to this revision is in memory.
    applied: watch::Sender<Revision>,
    base: Instant,
    /// When this node opened, Unix ms.
    started_ms: i64,
    /// Nanoseconds after `base` until which this node is current.
    fresh_until: AtomicU64,
    /// A lifecycle change may be in the shared store without its local
    /// record (its write's outcome was unknown, or the local write failed):
    /// settle this node's pending record before the next change.
    unsettled: AtomicBool,
    /// While this node leads the sweeper: the revision its leadership began
    /// at (0: it does not lead).
    leading: AtomicI64,
    /// The sweeper leader, as the last heartbeat saw it.
    leader: std::sync::Mutex<Option<String>>,
    /// One request at a time asks the shared store for usage units.
    pub lease_lock: tokio::sync::Mutex<()>,
    /// This node's published audit checkpoint: what it last published or
    /// found published ([`PUBLISHED_UNKNOWN`] until read at start).
    pub published: AtomicU64,
    /// The probe found the watch behind the last write for a while (its
    /// member may have died): the follower opens another watch.
    lagging: Arc<tokio::sync::Notify>,
    /// The last write the probe found not yet applied.
    lag_target: AtomicI64,
    /// Its log does not hold its own published checkpoint (restored from an
    /// older copy, or rewritten): it publishes no more, so the evidence stays.
    pub diverged: AtomicBool,
}

/// [`Cluster::published`] before the node has read its published checkpoint.
pub(super) const PUBLISHED_UNKNOWN: u64 = u64::MAX;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("shared", &self.shared)
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

impl Cluster {
    pub fn new(
        shared: Arc<dyn SharedKeys>,
        config: ClusterConfig,
        loaded_at: Revision,
        started: Instant,
        started_ms: i64,
    ) -> Self {
        let c = Self {
            shared,
            config,
            applied: watch::Sender::new(loaded_at),
            base: started,
            started_ms,
            fresh_until: AtomicU64::new(0),
            unsettled: AtomicBool::new(true),
            leading: AtomicI64::new(0),
            leader: std::sync::Mutex::new(None),
            lease_lock: tokio::sync::Mutex::new(()),
            lagging: Arc::new(tokio::sync::Notify::new()),
            lag_target: AtomicI64::new(0),
            published: AtomicU64::new(PUBLISHED_UNKNOWN),
            diverged: AtomicBool::new(false),
        };
        // The load was a linearizable read begun at `started`.
        c.confirm(started);
        c
    }

    fn confirm(&self, probe_start: Instant) {
        let until = probe_start.saturating_duration_since(self.base) + self.config.freshness_bound;
        self.fresh_until.fetch_max(until.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Whether this node is current (within the bound of its last confirmation).
    pub fn is_current(&self) -> bool {
        (self.base.elapsed().as_nanos() as u64) < self.fresh_until.load(Ordering::SeqCst)
    }

    /// `Stale` unless this node is current.
    pub fn check_current(&self) -> Result<(), KmsError> {
        if self.is_current() {
            return Ok(());
        }
        let until = Duration::from_nanos(self.fresh_until.load(Ordering::SeqCst));
        let since = self.base.elapsed().saturating_sub(until) + self.config.freshness_bound;
        Err(KmsError::Stale(format!(
            "this node has not confirmed it is current with the cluster for {} ms (bound {} ms): it refuses until it is",
            since.as_millis(),
            self.config.freshness_bound.as_millis()
        )))
    }

    /// The fence of this node's sweeper leadership, while it leads.
    pub fn leading(&self) -> Option<Revision> {
        Some(self.leading.load(Ordering::SeqCst)).filter(|r| *r != 0)
    }

    fn set_membership(&self, m: Option<crate::Membership>) {
        let (leading, leader) = m.map_or((None, None), |m| (m.leading, m.leader));
        let was = self.leading.swap(leading.unwrap_or(0), Ordering::SeqCst);
        if (was != 0) != leading.is_some() {
            if leading.is_some() {
                tracing::warn!(node_id = %self.config.node_id, "this node now leads the sweeper (scheduled rotations, destructions and deletions)");
            } else {
                tracing::warn!(node_id = %self.config.node_id, "this node no longer leads the sweeper");
            }
        }
        *self.leader.lock().expect("leader lock") = leader;
    }

    /// Whether this node's pending record may still need settling.
    pub fn unsettled(&self) -> bool {
        self.unsettled.load(Ordering::SeqCst)
    }

    /// Marks whether this node's pending record may still need settling.
    pub fn set_unsettled(&self, unsettled: bool) {
        self.unsettled.store(unsettled, Ordering::SeqCst);
    }

    /// The revision applied so far.
    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    fn advance(&self, to: Revision) {
        self.applied.send_if_modified(|a| {
            let moved = to > *a;
            if moved {
                *a = to;
            }
            moved
        });
    }

    /// Waits until everything up to `rev` is applied, at most `max`.
    pub async fn wait_applied(&self, rev: Revision, max: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(max, rx.wait_for(|a| *a >= rev)).await.is_ok_and(|r| r.is_ok())
    }
}

/// Builds the in-memory state from a snapshot, checking every tag and
/// unwrapping every secret.
pub(super) fn state_from(
    kms_root: &keyward_crypto::RootKey,
    records: &keyward_crypto::RecordKey,
    snap: SharedSnapshot,
) -> Result<State, OpenError> {
    let mut state = State::default();
    for k in snap.keys {
        if !integrity::key_intact(records, &k.record) {
            return Err(OpenError::Tampered(format!("shared key record {}", k.record.meta.id)));
        }
        let id = k.record.meta.id;
        let live = unwrap_record(kms_root, k.record).map_err(|_| OpenError::WrongRootKey)?;
        state.keys.insert(id, Arc::new(live));
        state.revisions.keys.insert(id, k.revision);
    }
    for a in snap.aliases {
        let e = a.entry;
        if !integrity::alias_intact(records, &e.alias, e.key, e.tag.as_ref()) {
            return Err(OpenError::Tampered(format!("shared alias {:?}", e.alias)));
        }
        state.revisions.aliases.insert(e.alias.clone(), a.revision);
        state.aliases.insert(e.alias, e.key);
    }
    Ok(state)
}

impl State {
    /// The revision a write must expect for key `id` (0: not stored).
    pub(super) fn expected_key(&self, id: KeyId) -> Revision {
        self.revisions.keys.get(&id).copied().unwrap_or(0)
    }

    /// The revision a write must expect for `alias` (0: not set).
    pub(super) fn expected_alias(&self, alias: &str) -> Revision {
        if self.aliases.contains_key(alias) {
            self.revisions.aliases.get(alias).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Puts a key written at `rev`, unless memory holds a later write of it.
    pub(super) fn put_shared_key(&mut self, key: LiveKey, rev: Revision) {
        let id = key.meta().id;
        if self.revisions.keys.get(&id).is_some_and(|r| *r >= rev) {
            return;
        }
        self.revisions.keys.insert(id, rev);
        self.keys.insert(id, Arc::new(key));
    }

    /// Applies an alias change made at `rev`, unless memory holds a later one.
    pub(super) fn put_shared_alias(&mut self, change: AliasChange, rev: Revision) {
        let alias = match &change {
            AliasChange::Set(e) => e.alias.clone(),
            AliasChange::Remove(a) => a.clone(),
        };
        if self.revisions.aliases.get(&alias).is_some_and(|r| *r >= rev) {
            return;
        }
        self.revisions.aliases.insert(alias, rev);
        match change {
            AliasChange::Set(e) => self.aliases.insert(e.alias, e.key),
            AliasChange::Remove(a) => self.aliases.remove(&a),
        };
    }
}

impl Kms {
    /// Whether this node may serve: always in single-node mode; in cluster
    /// mode, while it is current (for health reporting).
    pub fn is_current(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_current())
    }

    /// `Stale` if this is a cluster node that is not current.
    pub(super) fn check_current(&self) -> Result<(), KmsError> {
        self.cluster.as_ref().map_or(Ok(()), |c| c.check_current())
    }

    /// The revision of the shared store this node has applied (cluster mode).
    pub fn applied_revision(&self) -> Option<Revision> {
        self.cluster.as_ref().map(|c| c.applied())
    }

    /// The background work of a cluster node: following the shared store
    /// and confirming it is current. Empty in single-node mode. Each ends
    /// once this `Kms` is dropped or retired.
    pub fn cluster_tasks(self: &Arc<Self>) -> Vec<BoxFuture<'static, ()>> {
        if self.cluster.is_none() {
            return Vec::new();
        }
        vec![
            Box::pin(follow(Arc::downgrade(self))),
            Box::pin(probe(Arc::downgrade(self))),
            Box::pin(membership(Arc::downgrade(self))),
        ]
    }

    /// Whether this cluster node leads the sweeper now.
    pub fn leads_sweeper(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.leading().is_some())
    }

    /// What this node publishes about itself.
    fn node_info(&self, c: &Cluster) -> crate::NodeInfo {
        let checkpoint = self.store.last_checkpoint().ok().flatten();
        crate::NodeInfo {
            node_id: c.config.node_id.clone(),
            address: c.config.address.clone(),
            version: c.config.version.clone(),
            started_ms: c.started_ms,
            updated_ms: self.clock.now_ms(),
            applied_revision: c.applied(),
            current: c.is_current(),
            checkpoint_seq: checkpoint.as_ref().map_or(0, |c| c.seq),
            checkpoint_hash: checkpoint.as_ref().map_or(String::new(), |c| c.record_hash.clone()),
            checkpoint_ms: checkpoint.as_ref().map_or(0, |c| c.time_ms),
        }
    }

    /// `keyward cluster status`: every node whose lease is alive (as each
    /// last published itself), and the sweeper leader. Administrators and
    /// auditors only.
    pub async fn cluster_status(&self, caller: &super::Caller) -> Result<ClusterStatus, KmsError> {
        let entry = self.entry(caller, crate::Operation::ClusterStatus);
        let result = self.read_cluster_status(caller).await;
        self.finish(entry, result).await
    }

    async fn read_cluster_status(&self, caller: &super::Caller) -> Result<ClusterStatus, KmsError> {
        if !caller.policy.has(crate::Role::Admin) && !caller.policy.has(crate::Role::Auditor) {
            return Err(KmsError::PermissionDenied(format!(
                "{} may not read the cluster's status (administrators and auditors may)",
                caller.principal
            )));
        }
        let Some(c) = self.cluster.as_ref() else {
            return Err(KmsError::FailedPrecondition(
                "this server is not a cluster node (start it with --etcd-endpoints and --node-id)".into(),
            ));
        };
        let crate::Members { mut nodes, sweeper_leader } = c
            .shared
            .members()
            .await
            .map_err(|e| KmsError::Store(crate::StoreError(format!("the shared key store: {e}"))))?;
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let last_write = c.shared.last_write().await.ok();
        Ok(ClusterStatus { this_node: c.config.node_id.clone(), nodes, sweeper_leader, last_write })
    }

    /// Applies one change from the shared store. A record that fails its
    /// tag or does not unwrap is not applied and stops the node's progress:
    /// it then fails closed at the freshness bound.
    fn apply_shared(&self, cluster: &Cluster, event: SharedEvent) -> Result<(), String> {
        match event {
            SharedEvent::Key(k) => {
                if !integrity::key_intact(&self.records, &k.record) {
                    return Err(format!("shared key record {} fails its integrity check", k.record.meta.id));
                }
                let id = k.record.meta.id;
                let live = unwrap_record(&self.root, k.record).map_err(|_| {
                    format!("shared key record {id} does not unwrap under this node's root key")
                })?;
                self.state.write().expect("state lock").put_shared_key(live, k.revision);
            }
            SharedEvent::Alias(a) => {
                let e = a.entry;
                if !integrity::alias_intact(&self.records, &e.alias, e.key, e.tag.as_ref()) {
                    return Err(format!("shared alias {:?} fails its integrity check", e.alias));
                }
                self.state.write().expect("state lock").put_shared_alias(AliasChange::Set(e), a.revision);
            }
            SharedEvent::AliasRemoved { alias, revision } => {
                self.state
                    .write()
                    .expect("state lock")
                    .put_shared_alias(AliasChange::Remove(alias), revision);
            }
            SharedEvent::Progress(rev) => cluster.advance(rev),
        }
        Ok(())
    }

    /// Replaces memory with a fresh snapshot (after a compacted watch).
    fn reload_shared(&self, cluster: &Cluster, snap: SharedSnapshot) -> Result<(), String> {
        let rev = snap.revision;
        let state = state_from(&self.root, &self.records, snap).map_err(|e| e.to_string())?;
        *self.state.write().expect("state lock") = state;
        cluster.advance(rev);
        Ok(())
    }
}

/// Follows the shared store's changes into memory.
async fn follow(kms: Weak<Kms>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some((shared, from, lagging)) = kms.upgrade().and_then(|k| {
            let c = k.cluster.as_ref()?;
            (!k.is_retired()).then(|| (c.shared.clone(), c.applied(), c.lagging.clone()))
        }) else {
            return;
        };
        let mut events = shared.watch(from);
        let opened = Instant::now();
        let mut failure = None;
        loop {
            // A watch that stays silent while the node is not current may
            // be stuck on a member cut off from its quorum: open another.
            let bound = match kms.upgrade() {
                Some(k) => k.cluster.as_ref().map_or(Duration::from_secs(2), |c| c.config.freshness_bound),
                None => return,
            };
            let next = tokio::select! {
                biased;
                next = tokio::time::timeout(bound, events.next()) => next,
                () = lagging.notified() => {
                    let behind = kms.upgrade().and_then(|k| {
                        k.cluster.as_ref().map(|c| c.applied() < c.lag_target.load(Ordering::SeqCst))
                    });
                    // A watch just opened is given the probes' patience
                    // (a quarter of the bound) to catch up: probes that
                    // found it behind a moment ago must not reopen it
                    // again and again before it can deliver.
                    if behind == Some(true) && opened.elapsed() >= bound / 4 {
                        tracing::warn!("the watch is behind the last shared write (its etcd member may have gone): opening another");
                        break;
                    }
                    continue;
                }
            };
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) => {
                    let stuck = kms.upgrade().and_then(|k| k.cluster.as_ref().map(|c| !c.is_current()));
                    if stuck == Some(true) {
                        failure = Some("no change or progress from the watch while not current".to_string());
                        break;
                    }
                    continue;
                }
            };
            let Some(k) = kms.upgrade() else { return };
            let Some(c) = k.cluster.as_ref() else { return };
            match event {
                Ok(e) => {
                    if let Err(e) = k.apply_shared(c, e) {
                        failure = Some(e);
                        break;
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(WatchError::Compacted(at)) => {
                    tracing::warn!(
                        revision = at,
                        "the shared store compacted past this node's revision: reloading every key"
                    );
                    match shared.load().await {
                        Ok(snap) => {
                            if let Err(e) = k.reload_shared(c, snap) {
                                failure = Some(e);
                            }
                        }
                        Err(e) => failure = Some(e.to_string()),
                    }
                    break;
                }
                Err(WatchError::Store(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failure {
            tracing::error!(error = %e, "following the shared key store failed; this node refuses requests once its freshness bound passes; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The answer of [`Kms::cluster_status`].
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    /// The node that answered.
    pub this_node: String,
    /// Every node whose lease is alive, by id.
    pub nodes: Vec<crate::NodeInfo>,
    /// The node that leads the sweeper.
    pub sweeper_leader: Option<String>,
    /// The shared store's last write (a node that applied it is up to date).
    pub last_write: Option<Revision>,
}

/// Renews this node's lease every third of it, publishing what it knows
/// about itself, and takes or keeps the sweeper leadership. A heartbeat
/// that fails or times out ends this node's leadership at once (its lease
/// may expire before the next one succeeds).
async fn membership(kms: Weak<Kms>) {
    loop {
        let Some((shared, ttl, info)) = kms.upgrade().and_then(|k| {
            let c = k.cluster.as_ref()?;
            (!k.is_retired()).then(|| (c.shared.clone(), c.config.lease_ttl, k.node_info(c)))
        }) else {
            return;
        };
        let started = Instant::now();
        let beat = tokio::time::timeout(ttl / 3, shared.heartbeat(info, ttl)).await;
        let Some(k) = kms.upgrade() else { return };
        let Some(c) = k.cluster.as_ref() else { return };
        match beat {
            Ok(Ok(m)) => {
                c.set_membership(Some(m));
                k.publish_checkpoint(c).await;
                k.settle_if_unsettled(c).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "renewing this node's cluster lease failed");
                c.set_membership(None);
            }
            Err(_) => {
                tracing::debug!("renewing this node's cluster lease timed out");
                c.set_membership(None);
            }
        }
        drop(k);
        tokio::time::sleep((ttl / 3).saturating_sub(started.elapsed())).await;
    }
}

impl Kms {
    /// A change whose shared write had an unknown outcome (or whose local
    /// record failed) may be in force without its record in this node's
    /// log; the next change settles it first, but a node may make no next
    /// change for a long time (an ex-sweeper leader, say). The heartbeat
    /// settles it too, under the lifecycle lock.
    async fn settle_if_unsettled(&self, c: &Cluster) {
        if !c.unsettled() || !c.is_current() {
            return;
        }
        let _guard = self.lifecycle.clone().lock_owned().await;
        if c.unsettled() {
            if let Err(e) = self.settle_pending(c).await {
                tracing::warn!(error = %e, "settling this node's pending lifecycle record failed; retrying at the next heartbeat");
            }
        }
    }
}

/// Probes in flight at once, at most (each ends within the bound).
const MAX_PROBES_IN_FLIGHT: usize = 64;

/// Confirms, every `probe_every`, that this node has applied the last
/// shared write (read linearizably). Each probe runs on its own: one that
/// waits (sent while etcd elects a leader, say, which etcd answers only
/// once it has one, and then after its own retry interval) does not hold up
/// the next, so the first probe sent after a new leader is elected
/// confirms, and the time a node refuses across an etcd leader's death is
/// the election's and not the election's plus a probe's wait.
async fn probe(kms: Weak<Kms>) {
    let mut was_current = true;
    let mut probes = futures_util::stream::FuturesUnordered::new();
    loop {
        let Some((shared, config)) = kms.upgrade().and_then(|k| {
            let c = k.cluster.as_ref()?;
            (!k.is_retired()).then(|| (c.shared.clone(), c.config.clone()))
        }) else {
            return;
        };
        let tick = tokio::time::sleep(config.probe_every);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => break,
                Some(()) = probes.next(), if !probes.is_empty() => {}
            }
        }
        if probes.len() < MAX_PROBES_IN_FLIGHT {
            probes.push(probe_once(kms.clone(), shared, config.clone()));
        }
        let Some(k) = kms.upgrade() else { return };
        let Some(c) = k.cluster.as_ref() else { return };
        let current = c.is_current();
        if current != was_current {
            if current {
                tracing::warn!(
                    revision = c.applied(),
                    "this node is current with the cluster again: serving"
                );
            } else {
                tracing::error!(bound_ms = config.freshness_bound.as_millis() as u64, "this node could not confirm it is current with the cluster within its freshness bound: refusing crypto and lifecycle requests");
            }
            was_current = current;
        }
    }
}

/// One probe: the last shared write's revision, read linearizably, and
/// then waiting (within the bound) until this node has applied it; if it
/// has, this node was current when the probe began.
async fn probe_once(kms: Weak<Kms>, shared: Arc<dyn SharedKeys>, config: ClusterConfig) {
    let t0 = Instant::now();
    let last = tokio::time::timeout(config.freshness_bound, shared.last_write()).await;
    match last {
        Ok(Ok(rev)) => {
            let Some(k) = kms.upgrade() else { return };
            let Some(c) = k.cluster.as_ref() else { return };
            let left = config.freshness_bound.saturating_sub(t0.elapsed());
            // A live watch delivers within milliseconds; one still behind
            // after a quarter of the bound may be on a member that died
            // (a node whose writes are all its own would not notice):
            // the follower opens another while this probe waits on.
            let patience = (config.freshness_bound / 4).min(left);
            let mut applied = c.wait_applied(rev, patience).await;
            if !applied {
                c.lag_target.fetch_max(rev, Ordering::SeqCst);
                c.lagging.notify_one();
                applied = c.wait_applied(rev, left.saturating_sub(patience)).await;
            }
            if applied {
                c.confirm(t0);
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "confirming this node is current failed"),
        Err(_) => tracing::debug!("confirming this node is current timed out"),
    }
}
