//! An in-memory store: the same contract as RocksDB, no disk. Keys, aliases
//! and usage are kept as values; audit records as bytes in a simple
//! length-prefixed encoding of this store's own (no stability promise: it
//! never outlives the process).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::directory::{AccessChange, AccessId, AccessRecord, AccessRecordKey};
use crate::{
    AliasChange, AliasEntry, AuditHead, AuditPage, AuditQuery, AuditRecord, CommitBatch, KeyId, KeyRecord,
    SealedRecord, Store, StoreError, VersionUsage,
};
use crate::{AuditSigner, AuditView, Checkpoint, IndexEntry};

#[derive(Debug, Default, Clone)]
struct Inner {
    keys: BTreeMap<KeyId, KeyRecord>,
    aliases: BTreeMap<String, AliasEntry>,
    root_check: Option<Vec<u8>>,
    head: Option<AuditHead>,
    audit: BTreeMap<u64, Vec<u8>>,
    usage: BTreeMap<(KeyId, u32), VersionUsage>,
    signer: Option<AuditSigner>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    head_seal: Option<Checkpoint>,
    settled: Option<[u8; 16]>,
    index: BTreeSet<IndexEntry>,
    access: BTreeMap<AccessRecordKey, AccessRecord>,
    token_uses: BTreeMap<AccessId, i64>,
    rollup: crate::rollup::Rollup,
}

/// Keys and audit log in memory.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything stored now (an old backup of the disk).
    pub fn snapshot_copy(&self) -> Self {
        Self(Mutex::new(self.inner().clone()))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().expect("memory store lock")
    }

    /// Changes a stored key record behind the service's back, as someone
    /// with write access to the disk could (for integrity tests).
    pub fn tamper_key(&self, id: KeyId, f: impl FnOnce(&mut KeyRecord)) {
        f(self.inner().keys.get_mut(&id).expect("stored key"));
    }

    /// Changes a stored access record behind the service's back (integrity tests).
    pub fn tamper_access(&self, f: impl FnOnce(&mut BTreeMap<AccessRecordKey, AccessRecord>)) {
        f(&mut self.inner().access);
    }

    /// Changes a stored alias behind the service's back (integrity tests).
    pub fn tamper_alias(&self, alias: &str, f: impl FnOnce(&mut AliasEntry)) {
        f(self.inner().aliases.get_mut(alias).expect("stored alias"));
    }
}

impl Store for MemoryStore {
    fn usage_hours(
        &self,
        key: KeyId,
        from: u32,
        to: u32,
    ) -> Result<Vec<crate::rollup::HourUsage>, StoreError> {
        Ok(self.inner().rollup.usage_hours(key, from, to))
    }

    fn outcome_hours(
        &self,
        of: &crate::rollup::OutcomesOf,
        from: u32,
        to: u32,
    ) -> Result<Vec<crate::rollup::HourOutcome>, StoreError> {
        Ok(self.inner().rollup.outcome_hours(of, from, to))
    }

    fn encode_audit(&self, r: &AuditRecord) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256));
        w.u64(r.seq);
        w.u64(r.time_ms as u64);
        for s in [&r.request_id, &r.principal, &r.peer, &r.operation] {
            w.str(s);
        }
        w.opt_str(r.key_id.as_deref());
        w.opt_u32(r.key_version);
        w.opt_str(r.alias.as_deref());
        w.opt_str(r.source_key_id.as_deref());
        w.opt_u32(r.source_key_version);
        w.opt_str(r.target.as_deref());
        w.opt_str(r.edge.as_deref());
        w.opt_str(r.node_id.as_deref());
        w.u64(r.context.len() as u64);
        for (k, v) in &r.context {
            w.str(k);
            w.str(v);
        }
        for s in [&r.outcome, &r.reason, &r.prev_hash] {
            w.str(s);
        }
        w.0
    }

    fn decode_audit(&self, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
        let mut r = Reader(bytes);
        let record = (|| {
            let seq = r.u64()?;
            let time_ms = r.u64()? as i64;
            let (request_id, principal, peer, operation) = (r.str()?, r.str()?, r.str()?, r.str()?);
            let key_id = r.opt_str()?;
            let key_version = r.opt_u32()?;
            let alias = r.opt_str()?;
            let source_key_id = r.opt_str()?;
            let source_key_version = r.opt_u32()?;
            let target = r.opt_str()?;
            let edge = r.opt_str()?;
            let node_id = r.opt_str()?;
            let mut context = BTreeMap::new();
            for _ in 0..r.u64()? {
                context.insert(r.str()?, r.str()?);
            }
            let (outcome, reason, prev_hash) = (r.str()?, r.str()?, r.str()?);
            r.0.is_empty().then_some(AuditRecord {
                seq,
                time_ms,
                request_id,
                principal,
                peer,
                edge,
                node_id,
                operation,
                key_id,
                key_version,
                alias,
                source_key_id,
                source_key_version,
                target,
                context,
                outcome,
                reason,
                prev_hash,
            })
        })();
        record.ok_or_else(|| StoreError("corrupt audit record".into()))
    }

    fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self.inner().keys.values().cloned().collect())
    }

    fn load_aliases(&self) -> Result<Vec<AliasEntry>, StoreError> {
        Ok(self.inner().aliases.values().cloned().collect())
    }

    fn needs_upgrade(&self) -> bool {
        false
    }

    fn upgrade(&self, keys: &[KeyRecord], aliases: &[AliasEntry]) -> Result<(), StoreError> {
        let mut inner = self.inner();
        inner.keys = keys.iter().map(|k| (k.meta.id, k.clone())).collect();
        inner.aliases = aliases.iter().map(|a| (a.alias.clone(), a.clone())).collect();
        Ok(())
    }

    fn load_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        Ok(self.inner().access.values().cloned().collect())
    }

    fn load_token_uses(&self) -> Result<Vec<(AccessId, i64)>, StoreError> {
        Ok(self.inner().token_uses.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn load_usage(&self) -> Result<Vec<(KeyId, u32, VersionUsage)>, StoreError> {
        Ok(self.inner().usage.iter().map(|((id, v), u)| (*id, *v, *u)).collect())
    }

    fn root_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner().root_check.clone())
    }

    fn set_root_check(&self, value: &[u8]) -> Result<(), StoreError> {
        self.inner().root_check = Some(value.to_vec());
        Ok(())
    }

    fn settled_pending(&self) -> Result<Option<[u8; 16]>, StoreError> {
        Ok(self.inner().settled)
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(self.inner().head.clone())
    }

    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if let Some(r) = &batch.rekey {
            for k in &r.keys {
                inner.keys.insert(k.meta.id, k.clone());
            }
            for a in &r.aliases {
                inner.aliases.insert(a.alias.clone(), a.clone());
            }
            for a in &r.access {
                inner.access.insert(a.key(), a.clone());
            }
            inner.signer = Some(r.signer.clone());
            inner.root_check = Some(r.root_check.clone());
        }
        for k in &batch.keys {
            inner.keys.insert(k.meta.id, k.clone());
        }
        for a in &batch.aliases {
            match a {
                AliasChange::Set(e) => inner.aliases.insert(e.alias.clone(), e.clone()),
                AliasChange::Remove(name) => inner.aliases.remove(name),
            };
        }
        for r in &batch.audit {
            inner.audit.insert(r.record.seq, r.bytes.clone());
            inner.index.extend(crate::index_entries(&r.record));
        }
        inner.rollup.merge(&crate::rollup::Rollup::of(&batch.audit));
        if batch.settled.is_some() {
            inner.settled = batch.settled;
        }
        if let Some(c) = &batch.head_seal {
            inner.head_seal = Some(c.clone());
        }
        if let Some(c) = &batch.checkpoint {
            inner.checkpoints.insert(c.seq, c.clone());
        }
        for (id, v, u) in &batch.usage {
            inner.usage.insert((*id, *v), *u);
        }
        for c in &batch.access {
            match c {
                AccessChange::Put(r) => {
                    inner.access.insert(r.key(), r.clone());
                }
                AccessChange::Delete(k) => {
                    inner.access.remove(k);
                    if let AccessRecordKey::Token(id) = k {
                        inner.token_uses.remove(id);
                    }
                }
            }
        }
        for (id, ms) in &batch.token_uses {
            if inner.access.contains_key(&AccessRecordKey::Token(*id)) {
                inner.token_uses.insert(*id, *ms);
            }
        }
        if let Some(h) = &batch.head {
            inner.head = Some(h.clone());
        }
        Ok(())
    }

    fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let inner = self.inner();
        let iter: Box<dyn Iterator<Item = (&u64, &Vec<u8>)>> = match (query.oldest_first, query.cursor) {
            (true, Some(c)) => Box::new(inner.audit.range(c.saturating_add(1)..)),
            (true, None) => Box::new(inner.audit.iter()),
            (false, Some(c)) => Box::new(inner.audit.range(..c).rev()),
            (false, None) => Box::new(inner.audit.iter().rev()),
        };
        let mut page = AuditPage::default();
        for (_, bytes) in iter {
            let record = self.decode_audit(bytes)?;
            if !query.matches(&record) {
                continue;
            }
            if page.records.len() == query.limit {
                page.next_cursor = page.records.last().map(|r| r.record.seq);
                break;
            }
            page.records.push(SealedRecord { record, bytes: bytes.clone() });
        }
        Ok(page)
    }

    fn scan_audit(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let inner = self.inner();
        for (seq, bytes) in inner.audit.range(from_seq..) {
            if !f(*seq, bytes) {
                break;
            }
        }
        Ok(())
    }

    fn audit_signer(&self) -> Result<Option<AuditSigner>, StoreError> {
        Ok(self.inner().signer.clone())
    }

    fn set_audit_signer(&self, signer: &AuditSigner) -> Result<(), StoreError> {
        self.inner().signer = Some(signer.clone());
        Ok(())
    }

    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.inner().head_seal.clone())
    }

    fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.inner().checkpoints.values().next_back().cloned())
    }

    fn newest_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.inner().audit.keys().next_back().copied())
    }

    fn audit_view(
        &self,
        f: &mut dyn FnMut(&dyn AuditView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Holding the lock for the walk is the snapshot: no commit lands meanwhile.
        let inner = self.inner();
        f(&View { inner: &inner })
    }
}

impl MemoryStore {
    /// Removes an index entry, as a hostile writer of the store would (tests
    /// of the verifier).
    pub fn tamper_remove_index(&self, entry: &IndexEntry) {
        self.inner().index.remove(entry);
    }

    /// Deletes the chain head, as a hostile writer would.
    pub fn tamper_remove_head(&self) {
        self.inner().head = None;
    }
}

struct View<'a> {
    inner: &'a Inner,
}

impl AuditView for View<'_> {
    fn head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(self.inner.head.clone())
    }
    fn signer(&self) -> Result<Option<AuditSigner>, StoreError> {
        Ok(self.inner.signer.clone())
    }
    fn head_seal(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.inner.head_seal.clone())
    }
    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.audit.get(&seq).cloned())
    }
    fn scan_records(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        for (seq, bytes) in self.inner.audit.range(from_seq..) {
            if !f(*seq, bytes) {
                break;
            }
        }
        Ok(())
    }
    fn scan_checkpoints(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(u64, Result<Checkpoint, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        for (seq, c) in self.inner.checkpoints.range(from_seq..) {
            if !f(*seq, Ok(c.clone())) {
                break;
            }
        }
        Ok(())
    }
    fn has_index(&self, entry: &IndexEntry) -> Result<bool, StoreError> {
        Ok(self.inner.index.contains(entry))
    }
    fn scan_index(&self, f: &mut dyn FnMut(IndexEntry) -> bool) -> Result<(), StoreError> {
        for e in &self.inner.index {
            if !f(e.clone()) {
                break;
            }
        }
        Ok(())
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        self.0.push(u8::from(s.is_some()));
        if let Some(s) = s {
            self.str(s);
        }
    }
    fn opt_u32(&mut self, n: Option<u32>) {
        self.0.push(u8::from(n.is_some()));
        if let Some(n) = n {
            self.0.extend_from_slice(&n.to_be_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn flag(&mut self) -> Option<bool> {
        match self.take(1)?[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        if self.flag()? {
            self.str().map(Some)
        } else {
            Some(None)
        }
    }
    fn opt_u32(&mut self) -> Option<Option<u32>> {
        if self.flag()? {
            Some(Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?)))
        } else {
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_records_round_trip_and_garbage_is_refused() {
        let s = MemoryStore::new();
        let r = AuditRecord {
            seq: 7,
            time_ms: -3,
            request_id: "r".into(),
            principal: "p".into(),
            peer: String::new(),
            edge: Some("vault-transit".into()),
            node_id: Some("n2".into()),
            operation: "Encrypt".into(),
            key_id: Some("k".into()),
            key_version: Some(2),
            alias: None,
            source_key_id: None,
            source_key_version: Some(1),
            target: None,
            context: BTreeMap::from([("a".into(), "b".into())]),
            outcome: "OK".into(),
            reason: String::new(),
            prev_hash: "00".into(),
        };
        let bytes = s.encode_audit(&r);
        assert_eq!(s.decode_audit(&bytes).unwrap(), r);
        assert!(s.decode_audit(&bytes[..bytes.len() - 1]).is_err());
        assert!(s.decode_audit(b"{\"seq\":1}").is_err());
    }
}
