//! Per-version usage: counts of encryptions, data keys and decryptions, and
//! the last use, kept with the audit log.
//!
//! The audit writer derives each batch's new totals from the batch's own
//! successful records and writes them in the same synced write, so a count
//! never includes a use that was not acknowledged, and never misses one that
//! was. The in-memory book is updated only after that write succeeds.
//!
//! For keys with a usage cap, [`UsageBook::reserve`] also hands out seal
//! slots to requests in flight, so no version seals more than its cap even
//! while records are still being written.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{AuditEntry, KeyId, Operation, VersionUsage};

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    durable: VersionUsage,
    /// Seal slots handed out (at least `durable.sealed()` once used).
    reserved: u64,
    /// Cluster mode: seals this node was granted and has not used.
    leased: u64,
    /// Cluster mode: the size of the last block asked for.
    block: u64,
}

/// Usage of every version, shared by the use cases and the audit writer.
#[derive(Debug, Default)]
pub(crate) struct UsageBook {
    map: Mutex<HashMap<(KeyId, u32), Entry>>,
}

/// Which counter a successful record moves.
#[derive(Clone, Copy)]
enum Use {
    Encryption,
    DataKey,
    Decryption,
}

impl UsageBook {
    /// A book holding the stored totals.
    pub(crate) fn load(rows: Vec<(KeyId, u32, VersionUsage)>) -> Self {
        let map = rows
            .into_iter()
            .map(|(id, v, u)| ((id, v), Entry { durable: u, ..Default::default() }))
            .collect();
        Self { map: Mutex::new(map) }
    }

    /// Durable totals of one version.
    pub(crate) fn get(&self, id: KeyId, version: u32) -> VersionUsage {
        self.map.lock().expect("usage lock").get(&(id, version)).map(|e| e.durable).unwrap_or_default()
    }

    /// Takes one seal slot of `version` if fewer than `cap` were taken.
    pub(crate) fn reserve(&self, id: KeyId, version: u32, cap: u64) -> bool {
        let mut map = self.map.lock().expect("usage lock");
        let e = map.entry((id, version)).or_default();
        e.reserved = e.reserved.max(e.durable.sealed());
        if e.reserved >= cap {
            return false;
        }
        e.reserved += 1;
        true
    }

    /// Cluster mode: takes one of the seals this node was granted.
    pub(crate) fn take_leased(&self, id: KeyId, version: u32) -> bool {
        let mut map = self.map.lock().expect("usage lock");
        match map.get_mut(&(id, version)) {
            Some(e) if e.leased > 0 => {
                e.leased -= 1;
                true
            }
            _ => false,
        }
    }

    /// Cluster mode: adds `n` granted seals.
    pub(crate) fn add_leased(&self, id: KeyId, version: u32, n: u64) {
        self.map.lock().expect("usage lock").entry((id, version)).or_default().leased += n;
    }

    /// Cluster mode: how many seals to ask for next: twice the last block
    /// (from 8, at most 1024), so a busy node asks rarely and an idle one
    /// holds little.
    pub(crate) fn next_block(&self, id: KeyId, version: u32) -> u64 {
        let mut map = self.map.lock().expect("usage lock");
        let e = map.entry((id, version)).or_default();
        e.block = (e.block * 2).clamp(8, 1024);
        e.block
    }

    /// New totals after `entries` (a batch about to be written); not applied.
    pub(crate) fn tally<'a>(
        &self,
        entries: impl Iterator<Item = &'a AuditEntry>,
    ) -> Vec<(KeyId, u32, VersionUsage)> {
        let mut totals: HashMap<(KeyId, u32), VersionUsage> = HashMap::new();
        let map = self.map.lock().expect("usage lock");
        for e in entries {
            if e.outcome.code != "OK" {
                continue;
            }
            let mut count = |id: Option<KeyId>, version: Option<u32>, what: Use| {
                let (Some(id), Some(v)) = (id, version) else { return };
                let u = totals
                    .entry((id, v))
                    .or_insert_with(|| map.get(&(id, v)).map(|e| e.durable).unwrap_or_default());
                match what {
                    Use::Encryption => u.encryptions += 1,
                    Use::DataKey => u.data_keys += 1,
                    Use::Decryption => u.decryptions += 1,
                }
                u.last_use_ms = u.last_use_ms.max(e.time_ms);
            };
            match e.operation {
                Operation::Encrypt => count(e.key_id, e.key_version, Use::Encryption),
                Operation::GenerateDataKey | Operation::GenerateDataKeyWithoutPlaintext => {
                    count(e.key_id, e.key_version, Use::DataKey)
                }
                Operation::Decrypt => count(e.key_id, e.key_version, Use::Decryption),
                Operation::ReEncrypt => {
                    count(e.source_key_id, e.source_key_version, Use::Decryption);
                    count(e.key_id, e.key_version, Use::Encryption);
                }
                _ => {}
            }
        }
        totals.into_iter().map(|((id, v), u)| (id, v, u)).collect()
    }

    /// Makes written totals visible.
    pub(crate) fn apply(&self, totals: &[(KeyId, u32, VersionUsage)]) {
        let mut map = self.map.lock().expect("usage lock");
        for (id, v, u) in totals {
            map.entry((*id, *v)).or_default().durable = *u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    fn entry(op: Operation, id: KeyId, v: u32, ok: bool, t: i64) -> AuditEntry {
        AuditEntry {
            time_ms: t,
            request_id: String::new(),
            principal: "p".into(),
            peer: String::new(),
            edge: crate::Edge::Grpc,
            operation: op,
            key_id: Some(id),
            key_version: Some(v),
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: Default::default(),
            outcome: if ok {
                Outcome::ok()
            } else {
                Outcome { code: "INVALID_ARGUMENT", reason: "x".into() }
            },
        }
    }

    #[test]
    fn tally_counts_successes_by_kind_and_keeps_the_latest_use() {
        let id = KeyId::generate();
        let book = UsageBook::load(vec![(id, 1, VersionUsage { encryptions: 5, ..Default::default() })]);
        let mut re = entry(Operation::ReEncrypt, id, 2, true, 40);
        re.source_key_id = Some(id);
        re.source_key_version = Some(1);
        let batch = [
            entry(Operation::Encrypt, id, 1, true, 10),
            entry(Operation::Encrypt, id, 1, false, 50),
            entry(Operation::GenerateDataKey, id, 1, true, 20),
            entry(Operation::GenerateDataKeyWithoutPlaintext, id, 1, true, 30),
            entry(Operation::Decrypt, id, 1, true, 15),
            entry(Operation::DescribeKey, id, 1, true, 99),
            re,
        ];
        let mut totals = book.tally(batch.iter());
        totals.sort_by_key(|t| t.1);
        assert_eq!(
            totals,
            vec![
                (id, 1, VersionUsage { encryptions: 6, data_keys: 2, decryptions: 2, last_use_ms: 40 }),
                (id, 2, VersionUsage { encryptions: 1, data_keys: 0, decryptions: 0, last_use_ms: 40 }),
            ]
        );
        // Not visible until applied.
        assert_eq!(book.get(id, 1).encryptions, 5);
        book.apply(&totals);
        assert_eq!(book.get(id, 1).sealed(), 8);
    }

    #[test]
    fn reserve_never_hands_out_more_than_the_cap() {
        let id = KeyId::generate();
        let book = UsageBook::load(vec![(id, 1, VersionUsage { data_keys: 3, ..Default::default() })]);
        assert!(book.reserve(id, 1, 5));
        assert!(book.reserve(id, 1, 5));
        assert!(!book.reserve(id, 1, 5), "3 durable + 2 in flight reach the cap of 5");
        assert!(book.reserve(id, 2, 1));
        assert!(!book.reserve(id, 2, 1));
    }
}
