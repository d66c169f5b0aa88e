//! `keyward cluster import`: a single-node data folder's keys, versions,
//! aliases and usage counts written into an empty cluster's shared store.
//! The folder is only read: its audit history stays there, verifiable as
//! before. Everything is checked before anything is written (every key
//! record's and alias's tag, every secret unwrapped under the root key,
//! which must be the folder's and the cluster's), and written in
//! transactions of at most [`OPS_PER_WRITE`] operations, each key and alias
//! only if absent. An import stopped half way can be run again: keys and
//! aliases already in the cluster exactly as the folder holds them are
//! skipped; anything else in the cluster refuses the import.

use std::collections::{BTreeMap, HashSet};

use keyward_crypto::{RecordKey, RootCheck, RootKey};

use super::{unwrap_record, OpenError};
use crate::{integrity, AliasChange, KeyId, SharedKeys, SharedWrite, Store, StoreError};

/// Operations per shared-store transaction (etcd allows 128 by default).
const OPS_PER_WRITE: usize = 100;

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Keys written.
    pub keys: usize,
    /// Their versions.
    pub versions: usize,
    /// Aliases written.
    pub aliases: usize,
    /// Versions whose usage count was written.
    pub usage: usize,
    /// Keys and aliases already there from an earlier run.
    pub already_there: usize,
    /// Transactions it took.
    pub writes: usize,
}

fn shared(e: StoreError) -> OpenError {
    OpenError::Store(StoreError(format!("the shared key store: {e}")))
}

/// Moves what `store` (a stopped single-node server's folder) holds into
/// the cluster behind `shared`.
pub async fn import_into_cluster(
    store: &dyn Store,
    shared_keys: &dyn SharedKeys,
    root: &RootKey,
) -> Result<ImportReport, OpenError> {
    match store.root_check().map_err(OpenError::Store)? {
        Some(check) if root.matches(&RootCheck(check.clone())) => {}
        Some(_) => return Err(OpenError::WrongRootKey),
        None => return Err(OpenError::MissingCheck),
    }
    if store.needs_upgrade() {
        return Err(OpenError::NeedsUpgrade);
    }
    let records = RecordKey::derive(root);
    let keys = store.load_keys().map_err(OpenError::Store)?;
    let aliases = store.load_aliases().map_err(OpenError::Store)?;
    for k in &keys {
        if !integrity::key_intact(&records, k) {
            return Err(OpenError::Tampered(format!("key record {}", k.meta.id)));
        }
        unwrap_record(root, k.clone()).map_err(|_| OpenError::WrongRootKey)?;
    }
    for a in &aliases {
        if !integrity::alias_intact(&records, &a.alias, a.key, a.tag.as_ref()) {
            return Err(OpenError::Tampered(format!("alias {}", a.alias)));
        }
    }
    let usage: BTreeMap<(KeyId, u32), u64> = store
        .load_usage()
        .map_err(OpenError::Store)?
        .into_iter()
        .filter(|(_, _, u)| u.sealed() > 0)
        .map(|(k, v, u)| ((k, v), u.sealed()))
        .collect();

    // The cluster's root key must be this one; what it holds must be ours.
    let check = shared_keys.root_check(&root.check_value().0).await.map_err(shared)?;
    if !root.matches(&RootCheck(check)) {
        return Err(OpenError::ClusterRootKey);
    }
    let snap = shared_keys.load().await.map_err(shared)?;
    let ours: BTreeMap<KeyId, _> = keys.iter().map(|k| (k.meta.id, k)).collect();
    let mut present = HashSet::new();
    for k in &snap.keys {
        match ours.get(&k.record.meta.id) {
            Some(mine) if **mine == k.record => {
                present.insert(k.record.meta.id.to_string());
            }
            _ => return Err(OpenError::ClusterNotEmpty(format!("it holds key {}", k.record.meta.id))),
        }
    }
    for a in &snap.aliases {
        let same = aliases.iter().any(|mine| mine.alias == a.entry.alias && mine.key == a.entry.key);
        if !same {
            return Err(OpenError::ClusterNotEmpty(format!("it holds alias {}", a.entry.alias)));
        }
        present.insert(a.entry.alias.clone());
    }

    let mut report = ImportReport { already_there: present.len(), ..Default::default() };
    let mut write = SharedWrite::default();
    let mut ops = 0;
    let flush = async |write: &mut SharedWrite, report: &mut ImportReport| -> Result<(), OpenError> {
        let w = std::mem::take(write);
        if w.keys.is_empty() && w.aliases.is_empty() && w.usage.is_empty() {
            return Ok(());
        }
        shared_keys
            .write(w)
            .await
            .map_err(|e| OpenError::ClusterNotEmpty(format!("a write was refused ({e}): another writer")))?;
        report.writes += 1;
        Ok(())
    };
    for k in keys.iter().filter(|k| !present.contains(&k.meta.id.to_string())) {
        let counts: Vec<_> = k
            .meta
            .versions
            .iter()
            .filter_map(|v| usage.get(&(k.meta.id, v.version)).map(|n| (k.meta.id, v.version, *n)))
            .collect();
        if ops + 1 + counts.len() > OPS_PER_WRITE {
            flush(&mut write, &mut report).await?;
            ops = 0;
        }
        ops += 1 + counts.len();
        report.keys += 1;
        report.versions += k.meta.versions.len();
        report.usage += counts.len();
        write.keys.push((k.clone(), 0));
        write.usage.extend(counts);
    }
    for a in aliases.iter().filter(|a| !present.contains(&a.alias)) {
        if ops + 1 > OPS_PER_WRITE {
            flush(&mut write, &mut report).await?;
            ops = 0;
        }
        ops += 1;
        report.aliases += 1;
        write.aliases.push((AliasChange::Set(a.clone()), 0));
    }
    flush(&mut write, &mut report).await?;
    Ok(report)
}
