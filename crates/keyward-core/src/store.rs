//! The storage port. One trait for keys and the audit log, because a
//! lifecycle change and its audit record must be one atomic write.

use keyward_crypto::RecordTag;

use crate::directory::{AccessChange, AccessId, AccessRecord};
use crate::rollup::{HourOutcome, HourUsage, OutcomesOf};
use crate::{AuditHead, AuditPage, AuditQuery, AuditRecord, KeyId, KeyRecord, VersionUsage};
use crate::{AuditSigner, Checkpoint, IndexEntry};

/// A storage failure. Carries the adapter's message for the server log; it
/// is never sent to callers.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// An alias and the key it names, with its tag (see [`KeyRecord::tag`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEntry {
    /// The alias (`alias/...`).
    pub alias: String,
    /// The key it names.
    pub key: KeyId,
    /// Its tag under the record key; `None` only as read from format 1, and
    /// in a plan before `Kms` tags it for commit.
    pub tag: Option<RecordTag>,
}

/// An alias change inside a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasChange {
    /// Point the alias at a key.
    Set(AliasEntry),
    /// Remove the alias.
    Remove(String),
}

impl AliasChange {
    /// Point `alias` at `key` (untagged until committed).
    pub fn set(alias: impl Into<String>, key: KeyId) -> Self {
        Self::Set(AliasEntry { alias: alias.into(), key, tag: None })
    }
}

/// An audit record with its stored bytes (what the chain hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// The record.
    pub record: AuditRecord,
    /// Exactly the bytes stored (what the chain hashes).
    pub bytes: Vec<u8>,
}

impl SealedRecord {
    /// Hex SHA-256 of the stored bytes: the next record's `prev_hash`.
    pub fn hash(&self) -> String {
        crate::audit::hash_bytes(&self.bytes)
    }
}

/// Everything one synced write applies atomically.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// Keys to write (whole records; versions absent from `wrapped` are
    /// erased: when this returns, no file of the store holds their wrapped
    /// secrets any more).
    pub keys: Vec<KeyRecord>,
    /// Alias changes.
    pub aliases: Vec<AliasChange>,
    /// Audit records, in sequence order.
    pub audit: Vec<SealedRecord>,
    /// The new head of the audit chain (the last record of `audit`).
    pub head: Option<AuditHead>,
    /// New totals of the versions used by this batch's records.
    pub usage: Vec<(KeyId, u32, VersionUsage)>,
    /// A signed checkpoint of the chain (at most one per batch), stored
    /// under its sequence number.
    pub checkpoint: Option<Checkpoint>,
    /// The head's seal: a checkpoint of the new head, signed with every
    /// batch that moves it, kept (one value, overwritten) beside the head.
    pub head_seal: Option<Checkpoint>,
    /// Principal, token and grant changes (AccessService).
    pub access: Vec<AccessChange>,
    /// When tokens were last used (Unix ms), overwriting what was stored.
    pub token_uses: Vec<(AccessId, i64)>,
    /// A root-key rotation: everything the root key protects, rewritten
    /// under the new one, in this same atomic write.
    pub rekey: Option<Box<Rekey>>,
    /// Cluster mode: the id of the pending record (a lifecycle change's,
    /// kept in the shared store) this batch's record settles.
    pub settled: Option<[u8; 16]>,
}

/// Everything a root-key rotation rewrites (see `Kms::rotate_root_key`):
/// applied atomically with the rotation's audit record, after which no file
/// of the store holds what the old root key protected (the store purges the
/// overwritten values as it does destroyed secrets).
#[derive(Debug)]
pub struct Rekey {
    /// Every key record, tagged under the new root key, with every stored
    /// version secret wrapped under it (overwriting the old wrapped secrets).
    pub keys: Vec<KeyRecord>,
    /// Every alias, tagged under the new root key.
    pub aliases: Vec<AliasEntry>,
    /// Every principal, token, grant and access key, tagged (access-key
    /// secrets sealed) under the new root key.
    pub access: Vec<AccessRecord>,
    /// The node's audit signing key, sealed under the new root key.
    pub signer: AuditSigner,
    /// The new root key's check value.
    pub root_check: Vec<u8>,
}

/// Where keys and the audit log live. Implementations: RocksDB (production,
/// `keyward-store`) and in-memory (tests, [`crate::testing`]), both run
/// against one contract test suite. The store owns how everything is laid
/// out as bytes, including the audit record bytes the chain hashes.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The bytes this store keeps for an audit record: what the chain
    /// hashes and [`Store::decode_audit`] reads back. Deterministic.
    fn encode_audit(&self, record: &AuditRecord) -> Vec<u8>;
    /// Reads stored audit record bytes.
    fn decode_audit(&self, bytes: &[u8]) -> Result<AuditRecord, StoreError>;
    /// Every key record.
    fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Every alias and its key.
    fn load_aliases(&self) -> Result<Vec<AliasEntry>, StoreError>;
    /// Whether the folder is in an older stored format that [`Store::upgrade`]
    /// must rewrite (its records carry no tags). Decided when the store opened.
    fn needs_upgrade(&self) -> bool;
    /// Rewrites every key record and alias in the current stored format,
    /// with the tags given, in one atomic synced write that also records the
    /// new format; then erases what the old format left behind (as a
    /// destruction does). Called once, by `Kms::open`, when
    /// [`Store::needs_upgrade`].
    fn upgrade(&self, keys: &[KeyRecord], aliases: &[AliasEntry]) -> Result<(), StoreError>;
    /// Every stored principal, token and grant (AccessService).
    fn load_access(&self) -> Result<Vec<AccessRecord>, StoreError>;
    /// When each token was last used, as last stored.
    fn load_token_uses(&self) -> Result<Vec<(AccessId, i64)>, StoreError>;
    /// Every version's usage totals.
    fn load_usage(&self) -> Result<Vec<(KeyId, u32, VersionUsage)>, StoreError>;
    /// The root-key check value, if one was stored.
    fn root_check(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the root-key check value (synced).
    fn set_root_check(&self, value: &[u8]) -> Result<(), StoreError>;
    /// Cluster mode: the id of the last pending record settled here
    /// ([`CommitBatch::settled`]).
    fn settled_pending(&self) -> Result<Option<[u8; 16]>, StoreError>;
    /// The newest audit record's sequence and hash.
    fn audit_head(&self) -> Result<Option<AuditHead>, StoreError>;
    /// Applies a batch atomically and durably (WAL synced) before returning.
    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError>;
    /// Reads a page of audit records.
    fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
    /// The hourly uses of `key`'s versions in hours `from..to` (see
    /// [`crate::rollup`]), ordered by hour then version.
    fn usage_hours(&self, key: KeyId, from: u32, to: u32) -> Result<Vec<HourUsage>, StoreError>;
    /// The hourly records by operation and outcome in hours `from..to`, of
    /// the records naming a key, of a principal's, or of all.
    fn outcome_hours(&self, of: &OutcomesOf, from: u32, to: u32) -> Result<Vec<HourOutcome>, StoreError>;
    /// Calls `f(seq_in_key, stored_bytes)` for each audit record in key order,
    /// from `from_seq`, until `f` returns false. Used by the chain verifier.
    fn scan_audit(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;
    /// The node's audit signing identity, if one was stored.
    fn audit_signer(&self) -> Result<Option<AuditSigner>, StoreError>;
    /// Stores the node's audit signing identity (synced).
    fn set_audit_signer(&self, signer: &AuditSigner) -> Result<(), StoreError>;
    /// The checkpoint with the highest sequence number.
    fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// The head's seal (see [`CommitBatch::head_seal`]), if one was stored.
    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// The highest sequence number of a stored audit record (whatever the head says).
    fn newest_audit_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Calls `f` with a consistent read-only view of the audit log (one
    /// RocksDB snapshot): head, records, checkpoints and indexes as of one
    /// moment, whatever is committed meanwhile.
    fn audit_view(
        &self,
        f: &mut dyn FnMut(&dyn AuditView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// The store's column families, in order (named by a backup's entries).
    fn column_families(&self) -> Vec<String> {
        Vec::new()
    }
    /// Calls `f(column family, key, value)` for every stored entry, as of
    /// one consistent snapshot (a backup). The in-memory test store has no
    /// bytes to give and refuses.
    fn snapshot_entries(&self, _f: &mut EntrySink<'_>) -> Result<(), StoreError> {
        Err(StoreError("this store cannot be backed up".into()))
    }
}

/// What [`Store::snapshot_entries`] hands each entry to: column family, key, value.
pub type EntrySink<'a> = dyn FnMut(&str, &[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// The audit log as of one moment (see [`Store::audit_view`]).
pub trait AuditView {
    /// The chain head.
    fn head(&self) -> Result<Option<AuditHead>, StoreError>;
    /// The node's signing identity.
    fn signer(&self) -> Result<Option<AuditSigner>, StoreError>;
    /// The head's seal.
    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// The stored bytes of record `seq`.
    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f(seq_in_key, stored_bytes)` for each record from `from_seq`
    /// in order, until `f` returns false.
    fn scan_records(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;
    /// Calls `f(seq_in_key, checkpoint)` for each stored checkpoint in order
    /// (a checkpoint that does not decode is an `Err`), until `f` returns false.
    fn scan_checkpoints(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(u64, Result<Checkpoint, StoreError>) -> bool,
    ) -> Result<(), StoreError>;
    /// Whether the index holds `entry`.
    fn has_index(&self, entry: &IndexEntry) -> Result<bool, StoreError>;
    /// Calls `f` for every index entry (key index, then principal index),
    /// until `f` returns false.
    fn scan_index(&self, f: &mut dyn FnMut(IndexEntry) -> bool) -> Result<(), StoreError>;
}
