//! The RocksDB store.
//!
//! Column families:
//! - `keys`: key UUID (16 bytes) -> key record (JSON metadata + tag)
//! - `secrets`: key UUID (16) || version (u32 BE) -> that version's secret,
//!   wrapped under the root key
//! - `aliases`: alias -> key UUID (16 bytes) || tag (32)
//! - `meta`: `format_version` (u32 BE), `root_check`, `audit_head`
//! - `audit`: sequence (u64 BE) -> record bytes (exactly what the chain hashes)
//! - `audit_by_key`: key UUID (16) || sequence (u64 BE) -> empty
//! - `audit_by_principal`: len (u16 BE) || principal || sequence (u64 BE) -> empty
//! - `usage`: key UUID (16) || version (u32 BE) -> usage totals (32 bytes)
//! - `audit_checkpoints`: sequence (u64 BE) -> signed checkpoint of the chain at that record
//! - `meta` also holds `audit_signer` (node id, audit public key, sealed signing key)
//!   and `audit_rollup_complete` (the hourly counts cover the whole log)
//! - `audit_rollup`: the audit log's hourly counts (layout in
//!   `keyward_format::rollup`), added to in each commit's batch
//!
//! Every `commit` is one `WriteBatch` written with `sync = true`: the keys,
//! aliases, audit records, their index entries and the chain head land
//! together or not at all, and are on disk (WAL fsynced) when it returns.
//!
//! Destruction is crypto-shredding: a commit that deletes a stored secret
//! then flushes every column family (so no live WAL file still holds the
//! secret's original write), compacts the `secrets` column family down to
//! its last level with the deletion applied (so no SST file holds it), and
//! only then returns; RocksDB deletes the obsolete WAL and SST files as part
//! of the flush and the compaction. After `commit` returns, no file of the
//! data folder holds the destroyed wrapped secret.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use keyward_core::{AccessChange, AccessId, AccessRecord, AccessRecordKey};
use keyward_core::{
    AliasChange, AliasEntry, AuditHead, AuditPage, AuditQuery, AuditRecord, CommitBatch, KeyId, KeyRecord,
    SealedRecord, Store, StoreError, VersionMap, VersionUsage,
};
use keyward_core::{AuditSigner, AuditView, Checkpoint, IndexEntry};
use keyward_crypto::WrappedVersionSecret;
use rocksdb::SnapshotWithThreadMode;
use rocksdb::{
    BottommostLevelCompaction, ColumnFamily, CompactOptions, Direction, FlushOptions, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use crate::format::{self, FORMAT_VERSION, OLDEST_READABLE};

const CF_KEYS: &str = "keys";
const CF_SECRETS: &str = "secrets";
const CF_ALIASES: &str = "aliases";
const CF_META: &str = "meta";
const CF_AUDIT: &str = "audit";
const CF_BY_KEY: &str = "audit_by_key";
const CF_BY_PRINCIPAL: &str = "audit_by_principal";
const CF_USAGE: &str = "usage";
const CF_CHECKPOINTS: &str = "audit_checkpoints";
const CF_ACCESS: &str = "access";
const CF_ROLLUP: &str = "audit_rollup";
const ALL_CFS: [&str; 11] = [
    CF_KEYS,
    CF_SECRETS,
    CF_ALIASES,
    CF_META,
    CF_AUDIT,
    CF_BY_KEY,
    CF_BY_PRINCIPAL,
    CF_USAGE,
    CF_CHECKPOINTS,
    CF_ACCESS,
    CF_ROLLUP,
];
/// Present once `audit_rollup` counts every record of the log.
const ROLLUP_COMPLETE: &[u8] = b"audit_rollup_complete";
/// Records counted per write while the hourly counts are rebuilt.
const ROLLUP_REBUILD_BATCH: usize = 100_000;
const AUDIT_SIGNER: &[u8] = b"audit_signer";
const AUDIT_HEAD_SEAL: &[u8] = b"audit_head_seal";
/// Cluster mode: the id of the last pending lifecycle record settled here.
const SETTLED_PENDING: &[u8] = b"cluster_settled_pending";
const ROOT_CHECK: &[u8] = b"root_check";
const AUDIT_HEAD: &[u8] = b"audit_head";
const FORMAT: &[u8] = b"format_version";
/// Present from a destruction's write until its shredding completed.
const SHRED_PENDING: &[u8] = b"shred_pending";

/// Keys and the audit log in an embedded RocksDB.
pub struct RocksStore {
    db: DB,
    /// The folder is in format 1 (until [`Store::upgrade`] rewrites it).
    legacy: AtomicBool,
    /// A purge after a commit did not finish: retry it with the next commits.
    shred_retry: AtomicBool,
    /// Opened for writing: flushed when dropped (see `Drop`).
    writable: bool,
}

/// The write-ahead log's bound. RocksDB keeps every log file until each
/// column family with data in it has flushed, and by default allows four
/// times all the column families' write buffers (gigabytes here): a column
/// family that changes little (`meta`, `usage`) then keeps every log alive,
/// and an open after a crash replays them all (13.5 s over 10M records).
/// Past this size RocksDB flushes the column families holding the oldest.
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

/// The memtables of every column family together, at most (RocksDB
/// flushes the largest past it). Without it each column family grows its
/// own to 64 MiB under load (the log, its two indexes, the hourly counts:
/// a quarter of a gigabyte of RSS on a busy server).
const MAX_MEMTABLE_BYTES: usize = 16 << 20;

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.db.path()).finish()
    }
}

fn err(e: rocksdb::Error) -> StoreError {
    StoreError(e.into_string())
}

impl Drop for RocksStore {
    /// A clean close flushes every column family, so the next open has no
    /// write-ahead log to replay (nothing is lost either way: every commit
    /// is in the synced log first). A failed flush leaves the log, replayed
    /// at the next open as after a crash.
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        let started = std::time::Instant::now();
        match self.flush_all() {
            Ok(()) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "store flushed at close"),
            Err(e) => {
                tracing::warn!(error = %e.0, "store not flushed at close; the next open replays its log")
            }
        }
    }
}

impl RocksStore {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_paranoid_checks(true);
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        opts.set_db_write_buffer_size(MAX_MEMTABLE_BYTES);
        let db = DB::open_cf(&opts, dir, ALL_CFS).map_err(err)?;
        let store =
            Self { db, legacy: AtomicBool::new(false), shred_retry: AtomicBool::new(false), writable: true };
        match store.format_version()? {
            // A new folder starts in the current format.
            None if store.is_empty()? => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                let meta = store.cf(CF_META);
                store.db.put_cf_opt(meta, FORMAT, FORMAT_VERSION.to_be_bytes(), &wo).map_err(err)?;
            }
            // Folders from before the version was recorded are format 1.
            None => store.legacy.store(true, Ordering::SeqCst),
            Some(v) => {
                check_format(dir, v)?;
                store.legacy.store(v < FORMAT_VERSION, Ordering::SeqCst);
            }
        }
        // A destruction whose shredding a crash interrupted: finish it
        // before serving. (Its deletion is in the WAL, replayed at open.)
        if store.db.get_cf(store.cf(CF_META), SHRED_PENDING).map_err(err)?.is_some() {
            store.shred()?;
        }
        store.complete_rollup()?;
        Ok(store)
    }

    /// Rebuilds the hourly counts from the log if they do not cover all of
    /// it (a folder from before they were kept, or restored from such a
    /// backup): what was counted is cleared, every record is counted, then
    /// the counts are marked complete. A crash midway starts over at open.
    fn complete_rollup(&self) -> Result<(), StoreError> {
        let (meta, rollup) = (self.cf(CF_META), self.cf(CF_ROLLUP));
        if self.db.get_cf(meta, ROLLUP_COMPLETE).map_err(err)?.is_some() {
            return Ok(());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut b = WriteBatch::default();
        b.delete_range_cf(rollup, [0u8].as_slice(), [0xffu8; 64].as_slice());
        self.db.write_opt(b, &wo).map_err(err)?;
        let started = std::time::Instant::now();
        let (mut counted, mut pending) = (0usize, keyward_core::rollup::Rollup::default());
        let mut in_pending = 0usize;
        let flush = |r: &mut keyward_core::rollup::Rollup| -> Result<(), StoreError> {
            let mut b = WriteBatch::default();
            self.add_rollup(&mut b, &std::mem::take(r))?;
            self.db.write(b).map_err(err)
        };
        for item in self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::Start) {
            let (_, v) = item.map_err(err)?;
            let record =
                format::audit::decode(&v).map_err(|e| StoreError(format!("audit record: {}", e.0)))?;
            pending.add_record(&record);
            counted += 1;
            in_pending += 1;
            if in_pending == ROLLUP_REBUILD_BATCH {
                flush(&mut pending)?;
                in_pending = 0;
            }
        }
        flush(&mut pending)?;
        self.db.put_cf_opt(meta, ROLLUP_COMPLETE, [], &wo).map_err(err)?;
        if counted > 0 {
            tracing::info!(
                records = counted,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "counted the audit log by hour (the console's plots)"
            );
        }
        Ok(())
    }

    /// Adds counts to `b`: each stored count read and rewritten with the
    /// addition (commits come from the one audit writer, so nothing adds
    /// in between; a RocksDB merge operator would do it without the read,
    /// but would make the folder unreadable to anything opening it without
    /// that operator, an older Keyward included).
    fn add_rollup(&self, b: &mut WriteBatch, r: &keyward_core::rollup::Rollup) -> Result<(), StoreError> {
        let cf = self.cf(CF_ROLLUP);
        for (k, v) in &r.0 {
            let key = format::rollup::key(k);
            let stored = self.db.get_pinned_cf(cf, &key).map_err(err)?;
            let sum = format::rollup::add(stored.as_deref(), std::iter::once(&format::rollup::encode(v)[..]));
            b.put_cf(cf, key, sum);
        }
        Ok(())
    }

    /// Reads the hourly counts of one kind from `start` up to `end`.
    fn scan_rollup(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let Some(cf) = self.db.cf_handle(CF_ROLLUP) else { return Ok(()) };
        for item in self.db.iterator_cf_opt(cf, ro, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(err)?;
            f(&k, &v);
        }
        Ok(())
    }

    /// Whether the folder holds no keys and no audit records.
    fn is_empty(&self) -> Result<bool, StoreError> {
        for cf in [CF_KEYS, CF_AUDIT] {
            if let Some(item) = self.db.iterator_cf(self.cf(cf), IteratorMode::Start).next() {
                item.map_err(err)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every stored wrapped secret, by key and version.
    fn load_secrets(&self) -> Result<BTreeMap<KeyId, VersionMap<WrappedVersionSecret>>, StoreError> {
        let mut out: BTreeMap<KeyId, VersionMap<WrappedVersionSecret>> = BTreeMap::new();
        for item in self.db.iterator_cf(self.cf(CF_SECRETS), IteratorMode::Start) {
            let (k, v) = item.map_err(err)?;
            let (id, version) =
                format::keys::decode_secret_key(&k).ok_or_else(|| StoreError("corrupt secret key".into()))?;
            out.entry(id).or_default().insert(version, WrappedVersionSecret::from_stored(v.to_vec()));
        }
        Ok(out)
    }

    /// Adds a key record and its new secrets to `b`; deletes the secrets of
    /// versions it no longer holds. Returns whether a stored secret was
    /// deleted (the caller then shreds).
    fn put_key(&self, b: &mut WriteBatch, k: &KeyRecord) -> Result<bool, StoreError> {
        let (keys, secrets) = (self.cf(CF_KEYS), self.cf(CF_SECRETS));
        b.put_cf(keys, k.meta.id.as_bytes(), format::keys::encode(k)?);
        let mut deleted = false;
        for v in &k.meta.versions {
            let sk = format::keys::secret_key(k.meta.id, v.version);
            let stored = self.db.get_pinned_cf(secrets, sk).map_err(err)?.is_some();
            match (k.wrapped.get(&v.version), stored) {
                (Some(w), false) => b.put_cf(secrets, sk, w.as_bytes()),
                (None, true) => {
                    b.delete_cf(secrets, sk);
                    deleted = true;
                }
                // A stored secret never changes (a root-key rotation rewrites
                // through `upgrade`-like paths, not here).
                _ => {}
            }
        }
        Ok(deleted)
    }

    /// Adds a root-key rotation to `b`: every key record, every stored
    /// wrapped secret (overwritten), alias and access record, the sealed
    /// signing key and the check value, as the new root key made them.
    fn put_rekey(&self, b: &mut WriteBatch, r: &keyward_core::Rekey) -> Result<(), StoreError> {
        let (keys, secrets, aliases, access, meta) = (
            self.cf(CF_KEYS),
            self.cf(CF_SECRETS),
            self.cf(CF_ALIASES),
            self.cf(CF_ACCESS),
            self.cf(CF_META),
        );
        for k in &r.keys {
            b.put_cf(keys, k.meta.id.as_bytes(), format::keys::encode(k)?);
            for (version, w) in &k.wrapped {
                b.put_cf(secrets, format::keys::secret_key(k.meta.id, *version), w.as_bytes());
            }
        }
        for a in &r.aliases {
            b.put_cf(aliases, a.alias.as_bytes(), format::aliases::encode(a)?);
        }
        for a in &r.access {
            b.put_cf(access, format::access::key(&a.key()), format::access::encode(a)?);
        }
        b.put_cf(meta, AUDIT_SIGNER, format::checkpoint::encode_signer(&r.signer));
        b.put_cf(meta, ROOT_CHECK, &r.root_check);
        Ok(())
    }

    /// Removes every trace of deleted values from the files: flush every
    /// column family (the WAL files that held the original writes become
    /// obsolete and are deleted), then compact `secrets` and `keys` to their
    /// last level with the deletions applied (the SST files that held the
    /// values are rewritten and the old ones deleted).
    fn shred(&self) -> Result<(), StoreError> {
        self.flush_all()?;
        let mut co = CompactOptions::default();
        co.set_exclusive_manual_compaction(true);
        co.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        // `meta` and `access` too: a root-key rotation overwrites the sealed
        // signing key and the sealed access-key secrets there.
        for cf in [CF_SECRETS, CF_KEYS, CF_META, CF_ACCESS, CF_ALIASES] {
            self.db.compact_range_cf_opt(self.cf(cf), None::<&[u8]>, None::<&[u8]>, &co);
        }
        // `compact_range` reports no errors: check its effect instead. A
        // forced last-level compaction leaves no deletion markers behind, so
        // one left means some file may still hold a deleted secret.
        if self.shred_pending()? {
            return Err(StoreError(
                "shredding incomplete: a secrets file still holds deleted entries".into(),
            ));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.delete_cf_opt(self.cf(CF_META), SHRED_PENDING, &wo).map_err(err)
    }

    /// Whether a deletion in `secrets` has not yet been compacted away (a
    /// crash between a destruction's write and its shredding; checked at
    /// open, which finishes the job).
    fn shred_pending(&self) -> Result<bool, StoreError> {
        let files = self.db.live_files().map_err(err)?;
        Ok(files.iter().any(|f| f.column_family_name == CF_SECRETS && f.num_deletions > 0))
    }

    /// The stored-format version recorded in the folder, if any.
    fn format_version(&self) -> Result<Option<u32>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), FORMAT).map_err(err)? {
            None => Ok(None),
            Some(b) => {
                let b: [u8; 4] =
                    b.as_slice().try_into().map_err(|_| StoreError("corrupt format version".into()))?;
                Ok(Some(u32::from_be_bytes(b)))
            }
        }
    }

    /// Opens an existing database read-only (offline verification, export).
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join("CURRENT").exists() {
            return Err(StoreError(format!("{} holds no Keyward database", dir.display())));
        }
        let opts = Options::default();
        // An older folder may lack column families added since (`secrets` in
        // format 1, `audit_checkpoints` before checkpoints).
        let existing = DB::list_cf(&opts, dir).map_err(err)?;
        let cfs = ALL_CFS.iter().filter(|n| existing.iter().any(|e| e == *n));
        let db = DB::open_cf_for_read_only(&opts, dir, cfs, false).map_err(err)?;
        let store =
            Self { db, legacy: AtomicBool::new(true), shred_retry: AtomicBool::new(false), writable: false };
        if let Some(v) = store.format_version()? {
            check_format(dir, v)?;
            store.legacy.store(v < FORMAT_VERSION, Ordering::SeqCst);
        }
        Ok(store)
    }

    /// Flushes every column family's memtable to its files and waits.
    fn flush_all(&self) -> Result<(), StoreError> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().map(|n| self.cf(n)).collect();
        self.db.flush_cfs_opt(&cfs, &fo).map_err(err)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column family opened at start")
    }

    fn legacy(&self) -> bool {
        self.legacy.load(Ordering::SeqCst)
    }

    fn record(&self, seq: u64) -> Result<Option<SealedRecord>, StoreError> {
        match self.db.get_cf(self.cf(CF_AUDIT), seq.to_be_bytes()).map_err(err)? {
            Some(bytes) => {
                let record = format::audit::decode(&bytes)
                    .map_err(|e| StoreError(format!("audit record {seq}: {}", e.0)))?;
                Ok(Some(SealedRecord { record, bytes }))
            }
            None => Ok(None),
        }
    }

    /// Walks sequence numbers from an index (or the log itself) in the
    /// direction asked, calling `f` until it returns false.
    fn walk(
        &self,
        cf: &str,
        prefix: &[u8],
        query: &AuditQuery,
        f: &mut dyn FnMut(u64) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut start = prefix.to_vec();
        let (mode_key, direction) = match (query.oldest_first, query.cursor) {
            (true, Some(c)) => {
                start.extend_from_slice(&(c.saturating_add(1)).to_be_bytes());
                (start, Direction::Forward)
            }
            (true, None) => (start, Direction::Forward),
            (false, Some(c)) => {
                if c == 0 {
                    return Ok(());
                }
                start.extend_from_slice(&(c - 1).to_be_bytes());
                (start, Direction::Reverse)
            }
            (false, None) => {
                start.extend_from_slice(&u64::MAX.to_be_bytes());
                (start, Direction::Reverse)
            }
        };
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(&mode_key, direction)) {
            let (k, _) = item.map_err(err)?;
            if !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            let seq = u64::from_be_bytes(k[prefix.len()..].try_into().expect("8 bytes"));
            if !f(seq)? {
                break;
            }
        }
        Ok(())
    }
}

/// Refuses a folder written in a stored format this build does not read.
fn check_format(dir: &Path, version: u32) -> Result<(), StoreError> {
    if (OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
        return Ok(());
    }
    Err(StoreError(format!(
        "{} holds stored format {version}; this build reads formats {OLDEST_READABLE} to {FORMAT_VERSION}",
        dir.display()
    )))
}

fn principal_prefix(p: &str) -> Vec<u8> {
    let mut out = (p.len().min(u16::MAX as usize) as u16).to_be_bytes().to_vec();
    out.extend_from_slice(p.as_bytes());
    out
}

impl Store for RocksStore {
    fn usage_hours(
        &self,
        key: KeyId,
        from: u32,
        to: u32,
    ) -> Result<Vec<keyward_core::rollup::HourUsage>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let (start, end) = (
            format::rollup::range_start(b'u', Some(key), from),
            format::rollup::range_start(b'u', Some(key), to),
        );
        self.scan_rollup(&start, &end, &mut |k, v| out.extend(format::rollup::decode_usage(k, v)))?;
        Ok(out)
    }

    fn outcome_hours(
        &self,
        of: &keyward_core::rollup::OutcomesOf,
        from: u32,
        to: u32,
    ) -> Result<Vec<keyward_core::rollup::HourOutcome>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let (start, end) = (format::rollup::outcomes_start(of, from), format::rollup::outcomes_start(of, to));
        self.scan_rollup(&start, &end, &mut |k, v| out.extend(format::rollup::decode_outcome(k, v)))?;
        Ok(out)
    }

    fn encode_audit(&self, record: &AuditRecord) -> Vec<u8> {
        format::audit::encode(record)
    }

    fn decode_audit(&self, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
        format::audit::decode(bytes)
    }

    fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let iter = self.db.iterator_cf(self.cf(CF_KEYS), IteratorMode::Start);
        if self.legacy() {
            return iter
                .map(|item| item.map_err(err).and_then(|(_, v)| format::keys::decode_v1(&v)))
                .collect();
        }
        let mut secrets = self.load_secrets()?;
        iter.map(|item| {
            let (k, v) = item.map_err(err)?;
            let id: [u8; 16] = k.as_ref().try_into().map_err(|_| StoreError("corrupt key id".into()))?;
            let id = KeyId::from_bytes(id);
            format::keys::decode(&v, secrets.remove(&id).unwrap_or_default()).map_err(|e| {
                StoreError(format!("key record {id} cannot be read ({}): refusing to load it", e.0))
            })
        })
        .collect()
    }

    fn load_aliases(&self) -> Result<Vec<AliasEntry>, StoreError> {
        let decode = if self.legacy() { format::aliases::decode_v1 } else { format::aliases::decode };
        self.db
            .iterator_cf(self.cf(CF_ALIASES), IteratorMode::Start)
            .map(|item| item.map_err(err).and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    fn needs_upgrade(&self) -> bool {
        self.legacy()
    }

    fn upgrade(&self, keys: &[KeyRecord], aliases: &[AliasEntry]) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        for k in keys {
            self.put_key(&mut b, k)?;
        }
        for a in aliases {
            b.put_cf(self.cf(CF_ALIASES), a.alias.as_bytes(), format::aliases::encode(a)?);
        }
        b.put_cf(self.cf(CF_META), FORMAT, FORMAT_VERSION.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo).map_err(err)?;
        self.legacy.store(false, Ordering::SeqCst);
        // Format 1 kept secrets inside key records: old values of those
        // records (of versions destroyed since) may linger in old files.
        self.shred()
    }

    fn load_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        // A folder opened read-only from before the AccessService has none.
        let Some(cf) = self.db.cf_handle(CF_ACCESS) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(err)?;
            if !format::access::is_use_key(&k) {
                out.push(format::access::decode(&v)?);
            }
        }
        Ok(out)
    }

    fn load_token_uses(&self) -> Result<Vec<(AccessId, i64)>, StoreError> {
        let Some(cf) = self.db.cf_handle(CF_ACCESS) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(b"u/", Direction::Forward)) {
            let (k, v) = item.map_err(err)?;
            if !format::access::is_use_key(&k) {
                break;
            }
            out.push(format::access::decode_use(&k, &v)?);
        }
        Ok(out)
    }

    fn load_usage(&self) -> Result<Vec<(KeyId, u32, VersionUsage)>, StoreError> {
        self.db
            .iterator_cf(self.cf(CF_USAGE), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.map_err(err)?;
                let corrupt = || StoreError("corrupt usage entry".into());
                let (id, version) = format::usage::decode_key(&k).ok_or_else(corrupt)?;
                Ok((id, version, format::usage::decode(&v).ok_or_else(corrupt)?))
            })
            .collect()
    }

    fn root_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_META), ROOT_CHECK).map_err(err)
    }

    fn set_root_check(&self, value: &[u8]) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META), ROOT_CHECK, value);
        self.db.write_opt(b, &wo).map_err(err)
    }

    fn settled_pending(&self) -> Result<Option<[u8; 16]>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), SETTLED_PENDING).map_err(err)? {
            None => Ok(None),
            Some(v) => v
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| StoreError("corrupt settled pending record id".into())),
        }
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), AUDIT_HEAD).map_err(err)? {
            Some(b) => format::audit::decode_head(&b).map(Some),
            None => Ok(None),
        }
    }

    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        // Resolve each column family once per batch, not once per record.
        let (aliases, meta) = (self.cf(CF_ALIASES), self.cf(CF_META));
        let (audit, by_key, by_principal) = (self.cf(CF_AUDIT), self.cf(CF_BY_KEY), self.cf(CF_BY_PRINCIPAL));
        if self.legacy() {
            return Err(StoreError("the data folder is in stored format 1 and was not upgraded".into()));
        }
        let mut b = WriteBatch::default();
        let mut shred = false;
        if let Some(r) = &batch.rekey {
            self.put_rekey(&mut b, r)?;
            // What the old root key protected is overwritten: purge it from the files.
            shred = true;
        }
        for k in &batch.keys {
            shred |= self.put_key(&mut b, k)?;
        }
        for a in &batch.aliases {
            match a {
                AliasChange::Set(e) => b.put_cf(aliases, e.alias.as_bytes(), format::aliases::encode(e)?),
                AliasChange::Remove(name) => b.delete_cf(aliases, name.as_bytes()),
            }
        }
        for r in &batch.audit {
            let seq = r.record.seq.to_be_bytes();
            b.put_cf(audit, seq, &r.bytes);
            // Index the key and the ReEncrypt source key (once if they are the same).
            let mut indexed: Option<KeyId> = None;
            for k in [r.record.key_id.as_deref(), r.record.source_key_id.as_deref()].into_iter().flatten() {
                if let Ok(id) = k.parse::<KeyId>() {
                    if indexed != Some(id) {
                        indexed = Some(id);
                        b.put_cf(by_key, [&id.as_bytes()[..], &seq].concat(), []);
                    }
                }
            }
            b.put_cf(by_principal, [principal_prefix(&r.record.principal).as_slice(), &seq].concat(), []);
        }
        if !batch.audit.is_empty() {
            self.add_rollup(&mut b, &keyward_core::rollup::Rollup::of(&batch.audit))?;
        }
        if !batch.usage.is_empty() {
            let usage = self.cf(CF_USAGE);
            for (id, version, u) in &batch.usage {
                b.put_cf(usage, format::usage::key(*id, *version), format::usage::encode(u));
            }
        }
        if !batch.access.is_empty() || !batch.token_uses.is_empty() {
            let access = self.cf(CF_ACCESS);
            for c in &batch.access {
                match c {
                    AccessChange::Put(r) => {
                        b.put_cf(access, format::access::key(&r.key()), format::access::encode(r)?)
                    }
                    AccessChange::Delete(k) => {
                        b.delete_cf(access, format::access::key(k));
                        if let AccessRecordKey::Token(id) = k {
                            b.delete_cf(access, format::access::use_key(id));
                        }
                    }
                }
            }
            for (id, ms) in &batch.token_uses {
                b.put_cf(access, format::access::use_key(id), ms.to_be_bytes());
            }
        }
        if let Some(h) = &batch.head {
            b.put_cf(meta, AUDIT_HEAD, format::audit::encode_head(h));
        }
        if shred {
            b.put_cf(meta, SHRED_PENDING, []);
        }
        if let Some(c) = &batch.head_seal {
            b.put_cf(meta, AUDIT_HEAD_SEAL, format::checkpoint::encode(c));
        }
        if let Some(id) = &batch.settled {
            b.put_cf(meta, SETTLED_PENDING, id);
        }
        if let Some(c) = &batch.checkpoint {
            b.put_cf(self.cf(CF_CHECKPOINTS), c.seq.to_be_bytes(), format::checkpoint::encode(c));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo).map_err(err)?;
        if batch.rekey.is_some() {
            keyward_core::crash_point("rekey-written");
        }
        // The batch is durable: whatever happens to the purge, the write
        // happened (reporting it failed would make the writer reuse its
        // sequence numbers). A purge that could not finish (a backup's
        // snapshot still holds the old values) stays pending and is retried
        // with the next commits, and at open.
        if shred || self.shred_retry.load(Ordering::SeqCst) {
            match self.shred() {
                Ok(()) => self.shred_retry.store(false, Ordering::SeqCst),
                Err(e) => {
                    if !self.shred_retry.swap(true, Ordering::SeqCst) {
                        tracing::warn!(error = %e.0, "purging erased or re-wrapped secrets from the files did not finish; retrying with the next writes");
                    }
                }
            }
        }
        Ok(())
    }

    fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let (cf, prefix) = if let Some(k) = query.key_id {
            (CF_BY_KEY, k.as_bytes().to_vec())
        } else if let Some(p) = &query.principal {
            (CF_BY_PRINCIPAL, principal_prefix(p))
        } else {
            (CF_AUDIT, Vec::new())
        };
        let mut page = AuditPage::default();
        self.walk(cf, &prefix, query, &mut |seq| {
            let Some(r) = self.record(seq)? else { return Ok(true) };
            if !query.matches(&r.record) {
                return Ok(true);
            }
            if page.records.len() == query.limit {
                page.next_cursor = page.records.last().map(|r| r.record.seq);
                return Ok(false);
            }
            page.records.push(r);
            Ok(true)
        })?;
        Ok(page)
    }

    fn scan_audit(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let start = from_seq.to_be_bytes();
        for item in self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item.map_err(err)?;
            let seq = u64::from_be_bytes(
                k.as_ref().try_into().map_err(|_| StoreError("corrupt audit key".into()))?,
            );
            if !f(seq, &v) {
                break;
            }
        }
        Ok(())
    }

    fn audit_signer(&self) -> Result<Option<AuditSigner>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), AUDIT_SIGNER).map_err(err)? {
            Some(b) => format::checkpoint::decode_signer(&b).map(Some),
            None => Ok(None),
        }
    }

    fn set_audit_signer(&self, signer: &AuditSigner) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META), AUDIT_SIGNER, format::checkpoint::encode_signer(signer));
        self.db.write_opt(b, &wo).map_err(err)
    }

    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), AUDIT_HEAD_SEAL).map_err(err)? {
            Some(b) => format::checkpoint::decode(&b).map(Some),
            None => Ok(None),
        }
    }

    fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some(cf) = self.db.cf_handle(CF_CHECKPOINTS) else { return Ok(None) };
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => format::checkpoint::decode(&item.map_err(err)?.1).map(Some),
            None => Ok(None),
        }
    }

    fn newest_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        match self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::End).next() {
            Some(item) => seq_of(&item.map_err(err)?.0).map(Some),
            None => Ok(None),
        }
    }

    fn audit_view(
        &self,
        f: &mut dyn FnMut(&dyn AuditView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let snap = self.db.snapshot();
        f(&RocksView { store: self, snap })
    }

    fn column_families(&self) -> Vec<String> {
        ALL_CFS.iter().map(|c| c.to_string()).collect()
    }

    fn snapshot_entries(&self, f: &mut keyward_core::EntrySink<'_>) -> Result<(), StoreError> {
        // One snapshot for every column family: keys, their secrets, the
        // audit log and its head as of one moment, whatever commits meanwhile.
        let snap = self.db.snapshot();
        for name in ALL_CFS {
            for item in snap.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = item.map_err(err)?;
                f(name, &k, &v)?;
            }
        }
        Ok(())
    }
}

impl RocksStore {
    /// A new, empty store in `dir` to restore a backup into: `dir` must not
    /// hold a database yet.
    pub fn create_for_restore(dir: &Path) -> Result<Self, StoreError> {
        if dir.join("CURRENT").exists() {
            return Err(StoreError(format!(
                "{} already holds a database; restore into a new folder",
                dir.display()
            )));
        }
        Self::open(dir)
    }

    /// Writes restored entries (not synced: [`RocksStore::finish_restore`]
    /// makes them durable). Refuses a column family this store lacks.
    pub fn put_restored(&self, entries: &[(String, Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        for (cf, k, v) in entries {
            let handle = self.db.cf_handle(cf).ok_or_else(|| {
                StoreError(format!("the backup holds column family {cf}, which this Keyward does not know"))
            })?;
            b.put_cf(handle, k, v);
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(b, &wo).map_err(err)
    }

    /// Flushes everything restored to its files (synced), then records the
    /// format the restored entries carry.
    pub fn finish_restore(&self) -> Result<(), StoreError> {
        self.flush_all()?;
        let version = self.format_version()?;
        self.legacy.store(version.is_some_and(|v| v < FORMAT_VERSION), Ordering::SeqCst);
        self.db.flush_wal(true).map_err(err)
    }
}

fn seq_of(k: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(k.try_into().map_err(|_| StoreError("corrupt audit key".into()))?))
}

/// The audit log as of one RocksDB snapshot.
struct RocksView<'a> {
    store: &'a RocksStore,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl RocksView<'_> {
    fn scan(&self, cf: &str, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StoreError> {
        // Only `audit_checkpoints` can be absent (a read-only older folder).
        let Some(cf) = self.store.db.cf_handle(cf) else { return Ok(()) };
        for item in self.snap.iterator_cf(cf, IteratorMode::From(from, Direction::Forward)) {
            let (k, v) = item.map_err(err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

impl AuditView for RocksView<'_> {
    fn head(&self) -> Result<Option<AuditHead>, StoreError> {
        match self.snap.get_cf(self.store.cf(CF_META), AUDIT_HEAD).map_err(err)? {
            Some(b) => format::audit::decode_head(&b).map(Some),
            None => Ok(None),
        }
    }

    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError> {
        match self.snap.get_cf(self.store.cf(CF_META), AUDIT_HEAD_SEAL).map_err(err)? {
            Some(b) => format::checkpoint::decode(&b).map(Some),
            None => Ok(None),
        }
    }

    fn signer(&self) -> Result<Option<AuditSigner>, StoreError> {
        match self.snap.get_cf(self.store.cf(CF_META), AUDIT_SIGNER).map_err(err)? {
            Some(b) => format::checkpoint::decode_signer(&b).map(Some),
            None => Ok(None),
        }
    }

    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.snap.get_cf(self.store.cf(CF_AUDIT), seq.to_be_bytes()).map_err(err)
    }

    fn scan_records(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let mut bad_key = None;
        self.scan(CF_AUDIT, &from_seq.to_be_bytes(), &mut |k, v| match seq_of(k) {
            Ok(seq) => f(seq, v),
            Err(e) => {
                bad_key = Some(e);
                false
            }
        })?;
        bad_key.map_or(Ok(()), Err)
    }

    fn scan_checkpoints(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(u64, Result<Checkpoint, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        let mut bad_key = None;
        self.scan(CF_CHECKPOINTS, &from_seq.to_be_bytes(), &mut |k, v| match seq_of(k) {
            Ok(seq) => f(seq, format::checkpoint::decode(v)),
            Err(e) => {
                bad_key = Some(e);
                false
            }
        })?;
        bad_key.map_or(Ok(()), Err)
    }

    fn has_index(&self, entry: &IndexEntry) -> Result<bool, StoreError> {
        let (cf, key) = match entry {
            IndexEntry::Key(id, seq) => (CF_BY_KEY, [&id.as_bytes()[..], &seq.to_be_bytes()].concat()),
            IndexEntry::Principal(p, seq) => {
                (CF_BY_PRINCIPAL, [principal_prefix(p).as_slice(), &seq.to_be_bytes()].concat())
            }
        };
        Ok(self.snap.get_cf(self.store.cf(cf), key).map_err(err)?.is_some())
    }

    fn scan_index(&self, f: &mut dyn FnMut(IndexEntry) -> bool) -> Result<(), StoreError> {
        let corrupt = |what: &str| StoreError(format!("corrupt {what} index entry"));
        let mut bad = None;
        let mut go = true;
        self.scan(CF_BY_KEY, &[], &mut |k, _| {
            let entry = (k.len() == 24).then(|| {
                let id = KeyId::from_bytes(k[..16].try_into().expect("16 bytes"));
                IndexEntry::Key(id, u64::from_be_bytes(k[16..].try_into().expect("8 bytes")))
            });
            match entry {
                Some(e) => {
                    go = f(e);
                    go
                }
                None => {
                    bad = Some(corrupt("key"));
                    false
                }
            }
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        if !go {
            return Ok(());
        }
        self.scan(CF_BY_PRINCIPAL, &[], &mut |k, _| {
            let entry = (|| {
                let n = u16::from_be_bytes(k.get(..2)?.try_into().ok()?) as usize;
                let (p, seq) = (k.get(2..2 + n)?, k.get(2 + n..)?);
                let seq = u64::from_be_bytes(seq.try_into().ok()?);
                Some(IndexEntry::Principal(String::from_utf8(p.to_vec()).ok()?, seq))
            })();
            match entry {
                Some(e) => f(e),
                None => {
                    bad = Some(corrupt("principal"));
                    false
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }
}
