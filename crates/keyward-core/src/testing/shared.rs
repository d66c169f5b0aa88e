//! An in-memory [`SharedKeys`]: the shared key store of cluster mode, for
//! use-case tests of several `Kms` nodes in one process. Any node can be
//! cut off from it ([`MemoryShared::cut_off`]), and old revisions compacted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::shared::{
    Members, Membership, NodeInfo, Revision, SharedAlias, SharedEvent, SharedKey, SharedKeys, SharedSnapshot,
    SharedWrite,
};
use crate::{AliasChange, AliasEntry, KeyId, KeyRecord, StoreError, WatchError, WriteError};

#[derive(Debug, Default)]
struct Inner {
    revision: Revision,
    keys: BTreeMap<KeyId, (KeyRecord, Revision)>,
    aliases: BTreeMap<String, (AliasEntry, Revision)>,
    /// Every change, by revision (from `compacted` on).
    log: Vec<(Revision, SharedEvent)>,
    compacted: Revision,
    root_check: Option<Vec<u8>>,
    writes: u64,
    pending: BTreeMap<String, Vec<u8>>,
    /// Lease id to its expiry.
    leases: BTreeMap<u64, std::time::Instant>,
    next_lease: u64,
    /// Published nodes, each under a lease.
    nodes: BTreeMap<String, (NodeInfo, u64)>,
    /// The sweeper leader: node, lease, the term its leadership began.
    sweeper: Option<(String, u64, Revision)>,
    terms: Revision,
    /// Seals granted per version, cluster-wide.
    granted: BTreeMap<(KeyId, u32), u64>,
    /// Each node's last published audit checkpoint.
    checkpoints: BTreeMap<String, crate::Checkpoint>,
}

impl Inner {
    /// Drops expired leases and what was kept under them.
    fn expire(&mut self) {
        let now = std::time::Instant::now();
        self.leases.retain(|_, until| *until > now);
        let leases = &self.leases;
        self.nodes.retain(|_, (_, l)| leases.contains_key(l));
        if self.sweeper.as_ref().is_some_and(|(_, l, _)| !leases.contains_key(l)) {
            self.sweeper = None;
        }
    }
}

/// The shared store every node of a test cluster opens (cheap to clone).
#[derive(Debug, Clone)]
pub struct MemoryShared {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<Revision>,
}

impl Default for MemoryShared {
    fn default() -> Self {
        Self { inner: Default::default(), changed: watch::Sender::new(0) }
    }
}

impl MemoryShared {
    /// An empty shared store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of this store for one node, which the test can cut off.
    pub fn node(&self) -> SharedNode {
        SharedNode {
            store: self.clone(),
            cut: Arc::new(watch::Sender::new(false)),
            lease: Default::default(),
            lose_answer: Default::default(),
        }
    }

    /// Forgets the changes before the current revision: a watch from
    /// before it fails with `Compacted`.
    pub fn compact(&self) {
        let mut g = self.inner.lock().unwrap();
        g.compacted = g.revision;
        g.log.clear();
    }

    /// How many writes succeeded.
    pub fn writes(&self) -> u64 {
        self.inner.lock().unwrap().writes
    }

    /// Flips one byte of node `node`'s pending record (as someone with
    /// write access to the shared store could).
    pub fn tamper_pending(&self, node: &str) {
        let mut g = self.inner.lock().unwrap();
        let v = g.pending.get_mut(node).expect("a pending record");
        let last = v.len() - 1;
        v[last] ^= 1;
    }

    /// Node `node`'s published audit checkpoint.
    pub fn published_checkpoint(&self, node: &str) -> Option<crate::Checkpoint> {
        self.inner.lock().unwrap().checkpoints.get(node).cloned()
    }

    /// The key as stored, with its revision.
    pub fn key(&self, id: KeyId) -> Option<(KeyRecord, Revision)> {
        self.inner.lock().unwrap().keys.get(&id).cloned()
    }
}

/// One node's connection to a [`MemoryShared`].
#[derive(Debug, Clone)]
pub struct SharedNode {
    store: MemoryShared,
    cut: Arc<watch::Sender<bool>>,
    lease: Arc<Mutex<Option<u64>>>,
    lose_answer: Arc<std::sync::atomic::AtomicBool>,
}

impl SharedNode {
    /// Cuts this node off (`true`): every call waits, and its watch
    /// delivers nothing, until it is reconnected (`false`).
    pub fn cut_off(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// The next write applies, but its answer is lost: the node is told
    /// its outcome is unknown (as when etcd's leader dies mid-proposal).
    pub fn lose_next_answer(&self) {
        self.lose_answer.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn connected(cut: &watch::Sender<bool>) {
        let mut rx = cut.subscribe();
        let _ = rx.wait_for(|c| !*c).await;
    }
}

impl SharedKeys for SharedNode {
    fn load(&self) -> BoxFuture<'_, Result<SharedSnapshot, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            let g = self.store.inner.lock().unwrap();
            Ok(SharedSnapshot {
                revision: g.revision,
                keys: g
                    .keys
                    .values()
                    .map(|(r, rev)| SharedKey { record: r.clone(), revision: *rev })
                    .collect(),
                aliases: g
                    .aliases
                    .values()
                    .map(|(e, rev)| SharedAlias { entry: e.clone(), revision: *rev })
                    .collect(),
            })
        }
        .boxed()
    }

    fn write(&self, write: SharedWrite) -> BoxFuture<'_, Result<Revision, WriteError>> {
        async move {
            Self::connected(&self.cut).await;
            let rev = {
                let mut g = self.store.inner.lock().unwrap();
                let holds_keys =
                    write.keys.iter().all(|(k, want)| g.keys.get(&k.meta.id).map_or(0, |(_, r)| *r) == *want);
                let holds_aliases = write.aliases.iter().all(|(a, want)| {
                    let name = match a {
                        AliasChange::Set(e) => &e.alias,
                        AliasChange::Remove(n) => n,
                    };
                    g.aliases.get(name).map_or(0, |(_, r)| *r) == *want
                });
                if let Some(fence) = write.fence {
                    g.expire();
                    if g.sweeper.as_ref().map(|s| s.2) != Some(fence) {
                        return Err(WriteError::Fenced);
                    }
                }
                let usage_new = write.usage.iter().all(|(k, v, _)| !g.granted.contains_key(&(*k, *v)));
                if !holds_keys || !holds_aliases || !usage_new {
                    return Err(WriteError::Conflict(g.revision));
                }
                for (k, v, n) in &write.usage {
                    g.granted.insert((*k, *v), *n);
                }
                g.revision += 1;
                g.writes += 1;
                let rev = g.revision;
                for (k, _) in write.keys {
                    g.log.push((rev, SharedEvent::Key(SharedKey { record: k.clone(), revision: rev })));
                    g.keys.insert(k.meta.id, (k, rev));
                }
                for (a, _) in write.aliases {
                    match a {
                        AliasChange::Set(e) => {
                            g.log.push((
                                rev,
                                SharedEvent::Alias(SharedAlias { entry: e.clone(), revision: rev }),
                            ));
                            g.aliases.insert(e.alias.clone(), (e, rev));
                        }
                        AliasChange::Remove(n) => {
                            g.log.push((rev, SharedEvent::AliasRemoved { alias: n.clone(), revision: rev }));
                            g.aliases.remove(&n);
                        }
                    }
                }
                if let Some(p) = write.pending {
                    g.pending.insert(p.node, p.value);
                }
                rev
            };
            self.store.changed.send_replace(rev);
            if self.lose_answer.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(WriteError::Unknown(StoreError("the answer was lost".into())));
            }
            Ok(rev)
        }
        .boxed()
    }

    fn watch(&self, after: Revision) -> BoxStream<'static, Result<SharedEvent, WatchError>> {
        let (store, cut) = (self.store.clone(), self.cut.clone());
        let rx = store.changed.subscribe();
        futures_util::stream::unfold(
            (after, rx, Vec::<SharedEvent>::new()),
            move |(mut from, mut rx, mut queue)| {
                let (store, cut) = (store.clone(), cut.clone());
                async move {
                    loop {
                        if !queue.is_empty() {
                            let e = queue.remove(0);
                            return Some((Ok(e), (from, rx, queue)));
                        }
                        Self::connected(&cut).await;
                        {
                            let g = store.inner.lock().unwrap();
                            if from < g.compacted {
                                return Some((Err(WatchError::Compacted(from)), (from, rx, queue)));
                            }
                            if g.revision > from {
                                queue.extend(g.log.iter().filter(|(r, _)| *r > from).map(|(_, e)| e.clone()));
                                from = g.revision;
                                queue.push(SharedEvent::Progress(from));
                                continue;
                            }
                        }
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        )
        .boxed()
    }

    fn last_write(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            Ok(self.store.inner.lock().unwrap().revision)
        }
        .boxed()
    }

    fn root_check(&self, mine: &[u8]) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let mine = mine.to_vec();
        async move {
            Self::connected(&self.cut).await;
            let mut g = self.store.inner.lock().unwrap();
            Ok(g.root_check.get_or_insert(mine).clone())
        }
        .boxed()
    }

    fn heartbeat(
        &self,
        me: NodeInfo,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<Membership, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            let mut g = self.store.inner.lock().unwrap();
            g.expire();
            let mut mine = self.lease.lock().unwrap();
            let lease = match *mine {
                Some(l) if g.leases.contains_key(&l) => l,
                _ => {
                    g.next_lease += 1;
                    g.next_lease
                }
            };
            *mine = Some(lease);
            g.leases.insert(lease, std::time::Instant::now() + ttl);
            let node = me.node_id.clone();
            g.nodes.insert(node.clone(), (me, lease));
            if g.sweeper.is_none() {
                g.terms += 1;
                let term = g.terms;
                g.sweeper = Some((node, lease, term));
            }
            let (leader, held, term) = g.sweeper.clone().expect("a leader");
            Ok(Membership { leading: (held == lease).then_some(term), leader: Some(leader) })
        }
        .boxed()
    }

    fn lease_units(
        &self,
        key: KeyId,
        version: u32,
        want: u64,
        cap: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            let mut g = self.store.inner.lock().unwrap();
            let granted = g.granted.entry((key, version)).or_default();
            let left = cap.saturating_sub(*granted);
            let grant = want.min((left / 4).max(1)).min(left);
            *granted += grant;
            Ok(grant)
        }
        .boxed()
    }

    fn members(&self) -> BoxFuture<'_, Result<Members, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            let mut g = self.store.inner.lock().unwrap();
            g.expire();
            let nodes = g.nodes.values().map(|(n, _)| n.clone()).collect();
            Ok(Members { nodes, sweeper_leader: g.sweeper.as_ref().map(|s| s.0.clone()) })
        }
        .boxed()
    }

    fn pending(&self, node: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let node = node.to_string();
        async move {
            Self::connected(&self.cut).await;
            Ok(self.store.inner.lock().unwrap().pending.get(&node).cloned())
        }
        .boxed()
    }

    fn publish_checkpoint(
        &self,
        node: &str,
        checkpoint: &crate::Checkpoint,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let (node, checkpoint) = (node.to_string(), checkpoint.clone());
        async move {
            Self::connected(&self.cut).await;
            self.store.inner.lock().unwrap().checkpoints.insert(node, checkpoint);
            Ok(())
        }
        .boxed()
    }

    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<(String, crate::Checkpoint)>, StoreError>> {
        async move {
            Self::connected(&self.cut).await;
            let g = self.store.inner.lock().unwrap();
            Ok(g.checkpoints.iter().map(|(n, c)| (n.clone(), c.clone())).collect())
        }
        .boxed()
    }
}
