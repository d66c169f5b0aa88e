//! The port of cluster mode: keys and aliases shared by every node through a
//! replicated store (etcd), each write a compare-and-swap on the revisions
//! of what it replaces.
//!
//! Every node keeps all keys in memory (loaded at one revision, then
//! followed by a watch), so crypto requests never wait on the shared store.
//! Every write also moves one marker (its revision is the store's last
//! write to the shared keys), which a node reads linearizably to prove it
//! is current: see [`crate::kms`]'s cluster follower.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::{AliasChange, AliasEntry, KeyRecord, StoreError};

/// A revision of the shared store: every write has a larger one than the
/// writes before it. 0 means "absent" (never written, or removed).
pub type Revision = i64;

/// A key as the shared store holds it, with the revision that last wrote it.
#[derive(Debug, Clone)]
pub struct SharedKey {
    /// The key record (sealed version secrets, tagged).
    pub record: KeyRecord,
    /// The revision that last wrote it.
    pub revision: Revision,
}

/// An alias as the shared store holds it, with the revision that last wrote it.
#[derive(Debug, Clone)]
pub struct SharedAlias {
    /// The alias entry (tagged).
    pub entry: AliasEntry,
    /// The revision that last wrote it.
    pub revision: Revision,
}

/// Every shared key and alias at one revision.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot {
    /// The revision read at.
    pub revision: Revision,
    /// Every key.
    pub keys: Vec<SharedKey>,
    /// Every alias.
    pub aliases: Vec<SharedAlias>,
}

/// One all-or-nothing write: each key and alias is written only if the
/// revision that last wrote it is still the one given (0: it must not exist).
#[derive(Debug, Clone, Default)]
pub struct SharedWrite {
    /// Keys to write, each with its expected revision.
    pub keys: Vec<(KeyRecord, Revision)>,
    /// Alias changes, each with the alias's expected revision.
    pub aliases: Vec<(AliasChange, Revision)>,
    /// The change's audit record, written with it (replacing the node's
    /// previous one): a node that dies before its local record is durable
    /// appends it when it starts again, so no change lacks its record.
    pub pending: Option<PendingRecord>,
    /// Scheduled work: written only while the sweeper leadership this
    /// revision began is still held ([`Membership::leading`]), so a paused
    /// ex-leader's late writes fail ([`WriteError::Fenced`]).
    pub fence: Option<Revision>,
    /// Cluster-wide usage counts to start (`keyward cluster import`): each
    /// version's seals so far, written only if the version has no count yet.
    pub usage: Vec<(crate::KeyId, u32, u64)>,
}

/// What a node publishes about itself, under its lease (gone when it stops
/// renewing it), for `keyward cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its `--node-id`.
    pub node_id: String,
    /// Where its gRPC listener is reached.
    pub address: String,
    /// Its Keyward version.
    pub version: String,
    /// When it started, Unix ms.
    pub started_ms: i64,
    /// When it published this, Unix ms.
    pub updated_ms: i64,
    /// The shared store's revision it had applied.
    pub applied_revision: Revision,
    /// Whether it was current (within its freshness bound).
    pub current: bool,
    /// Its newest signed audit checkpoint: sequence number (0: none).
    pub checkpoint_seq: u64,
    /// The checkpoint's record hash (hex).
    pub checkpoint_hash: String,
    /// The checkpoint's time, Unix ms.
    pub checkpoint_ms: i64,
}

/// Every node whose lease is alive, and the sweeper leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// The nodes, as each last published itself.
    pub nodes: Vec<NodeInfo>,
    /// The node that leads the sweeper, if any.
    pub sweeper_leader: Option<String>,
}

/// What one heartbeat learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// While this node leads the sweeper: the revision its leadership
    /// began at (the fence of its scheduled writes).
    pub leading: Option<Revision>,
    /// The node that leads the sweeper, if any.
    pub leader: Option<String>,
}

/// A node's latest lifecycle record, as the shared store keeps it (one per
/// node, overwritten by its next change): opaque bytes, tagged under the
/// root key (see `Kms::settle_pending`).
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// The node that wrote it.
    pub node: String,
    /// The tagged record.
    pub value: Vec<u8>,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another write changed something this one expected unchanged; the
    /// store is at this revision now (at least).
    #[error("a concurrent change (the shared store is at revision {0})")]
    Conflict(Revision),
    /// The store could not be reached or refused; the write may or may not
    /// have happened only if the store says so ([`WriteError::Unknown`]).
    #[error("{0}")]
    Store(StoreError),
    /// The outcome is unknown (the connection broke after sending).
    #[error("outcome unknown: {0}")]
    Unknown(StoreError),
    /// A fenced write ([`SharedWrite::fence`]) whose leadership has ended.
    #[error("this node no longer leads the sweeper")]
    Fenced,
}

/// One change, in revision order, as a watch delivers it.
#[derive(Debug, Clone)]
pub enum SharedEvent {
    /// A key written.
    Key(SharedKey),
    /// An alias set.
    Alias(SharedAlias),
    /// An alias removed (at this revision).
    AliasRemoved {
        /// The alias.
        alias: String,
        /// The revision that removed it.
        revision: Revision,
    },
    /// Every change up to this revision has been delivered.
    Progress(Revision),
}

/// Why a watch ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The revision to start from is no longer kept: reload everything.
    #[error("the shared store compacted past revision {0}: reload")]
    Compacted(Revision),
    /// The store could not be reached.
    #[error("{0}")]
    Store(StoreError),
}

/// The shared key store (etcd in production, [`crate::testing::MemoryShared`] in tests).
pub trait SharedKeys: Send + Sync + std::fmt::Debug + 'static {
    /// Every key and alias at one revision (linearizable).
    fn load(&self) -> BoxFuture<'_, Result<SharedSnapshot, StoreError>>;
    /// Applies `write` if every expected revision holds; returns the revision it made.
    fn write(&self, write: SharedWrite) -> BoxFuture<'_, Result<Revision, WriteError>>;
    /// Every change after `after`, in order, until an error ends it.
    fn watch(&self, after: Revision) -> BoxStream<'static, Result<SharedEvent, WatchError>>;
    /// The revision of the last write to the shared keys, read
    /// linearizably: a node that has applied it is current.
    fn last_write(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;
    /// The root-key check value every node must match, stored by the first
    /// node if none is (returns the stored one either way).
    fn root_check(&self, mine: &[u8]) -> BoxFuture<'_, Result<Vec<u8>, StoreError>>;
    /// Node `node`'s latest pending record ([`SharedWrite::pending`]), read linearizably.
    fn pending(&self, node: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
    /// Renews this node's lease (taking a new one if it expired), publishes
    /// `me` under it, and takes the sweeper leadership if no node holds it.
    fn heartbeat(
        &self,
        me: NodeInfo,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<Membership, StoreError>>;
    /// Grants this node up to `want` more seals of `version` of key `key`,
    /// never past `cap` in all (a compare-and-swap on the version's
    /// cluster-wide "granted" count), and at most a quarter of what is left
    /// (at least one), so blocks shrink near the cap. Returns how many it
    /// granted (0: the cap is reached). Units granted to a node that dies
    /// are lost: the cap is never exceeded, some of it may go unused.
    fn lease_units(
        &self,
        key: crate::KeyId,
        version: u32,
        want: u64,
        cap: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Every node whose lease is alive, and the sweeper leader.
    fn members(&self) -> BoxFuture<'_, Result<Members, StoreError>>;
    /// Keeps `checkpoint` as node `node`'s last published signed audit
    /// checkpoint (not under a lease: it outlives the node, so a node whose
    /// log is later found behind it, or unreachable, is reported).
    fn publish_checkpoint(
        &self,
        node: &str,
        checkpoint: &crate::Checkpoint,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every node's last published checkpoint, by node id, read linearizably.
    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<(String, crate::Checkpoint)>, StoreError>>;
}
