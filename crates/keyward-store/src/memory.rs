//! An in-memory store for tests: the same contract as RocksDB, no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use keyward_core::{
    AliasChange, AuditHead, AuditPage, AuditQuery, AuditRecord, CommitBatch, KeyId, KeyRecord, Store,
    StoreError, VersionUsage,
};

use crate::codec::{decode_key, encode_key};

#[derive(Debug, Default)]
struct Inner {
    keys: BTreeMap<KeyId, Vec<u8>>,
    aliases: BTreeMap<String, KeyId>,
    root_check: Option<Vec<u8>>,
    head: Option<AuditHead>,
    audit: BTreeMap<u64, Vec<u8>>,
    usage: BTreeMap<(KeyId, u32), [u8; 32]>,
}

/// Keys and audit log in memory.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.0.lock().unwrap().keys.values().map(|b| decode_key(b)).collect()
    }

    fn load_aliases(&self) -> Result<Vec<(String, KeyId)>, StoreError> {
        Ok(self.0.lock().unwrap().aliases.iter().map(|(a, k)| (a.clone(), *k)).collect())
    }

    fn load_usage(&self) -> Result<Vec<(KeyId, u32, VersionUsage)>, StoreError> {
        let inner = self.0.lock().unwrap();
        inner
            .usage
            .iter()
            .map(|((id, v), b)| {
                VersionUsage::from_bytes(b)
                    .map(|u| (*id, *v, u))
                    .ok_or_else(|| StoreError("corrupt usage entry".into()))
            })
            .collect()
    }

    fn root_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().unwrap().root_check.clone())
    }

    fn set_root_check(&self, value: &[u8]) -> Result<(), StoreError> {
        self.0.lock().unwrap().root_check = Some(value.to_vec());
        Ok(())
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(self.0.lock().unwrap().head.clone())
    }

    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        let mut inner = self.0.lock().unwrap();
        for k in &batch.keys {
            inner.keys.insert(k.meta.id, encode_key(k));
        }
        for a in &batch.aliases {
            match a {
                AliasChange::Set(name, id) => inner.aliases.insert(name.clone(), *id),
                AliasChange::Remove(name) => inner.aliases.remove(name),
            };
        }
        for r in &batch.audit {
            inner.audit.insert(r.record.seq, r.bytes.clone());
        }
        for (id, v, u) in &batch.usage {
            inner.usage.insert((*id, *v), u.to_bytes());
        }
        if let Some(h) = &batch.head {
            inner.head = Some(h.clone());
        }
        Ok(())
    }

    fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let inner = self.0.lock().unwrap();
        let iter: Box<dyn Iterator<Item = (&u64, &Vec<u8>)>> = match (query.oldest_first, query.cursor) {
            (true, Some(c)) => Box::new(inner.audit.range(c + 1..)),
            (true, None) => Box::new(inner.audit.iter()),
            (false, Some(c)) => Box::new(inner.audit.range(..c).rev()),
            (false, None) => Box::new(inner.audit.iter().rev()),
        };
        let mut page = AuditPage::default();
        for (_, bytes) in iter {
            let r = AuditRecord::from_bytes(bytes).map_err(|e| StoreError(e.to_string()))?;
            if !query.matches(&r) {
                continue;
            }
            if page.records.len() == query.limit {
                page.next_cursor = page.records.last().map(|r| r.seq);
                break;
            }
            page.records.push(r);
        }
        Ok(page)
    }

    fn scan_audit(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let inner = self.0.lock().unwrap();
        for (seq, bytes) in inner.audit.range(from_seq..) {
            if !f(*seq, bytes) {
                break;
            }
        }
        Ok(())
    }
}
