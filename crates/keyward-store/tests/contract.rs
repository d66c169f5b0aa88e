//! One contract, every store: the same checks run against the in-memory
//! store and against RocksDB in a temporary folder.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_core::testing::MemoryStore;
use keyward_core::{
    AliasChange, AliasEntry, AuditEntry, AuditHead, AuditQuery, AuditRecord, CommitBatch, KeyId, KeyMeta,
    KeyRecord, KeyState, Operation, Outcome, RotationPolicy, SealedRecord, Store, VersionMeta, VersionUsage,
    GENESIS_HASH, MIN_ROTATION_PERIOD_MS,
};
use keyward_crypto::{RecordTag, WrappedVersionSecret};
use keyward_store::RocksStore;

fn key(id: KeyId) -> KeyRecord {
    KeyRecord {
        meta: KeyMeta {
            id,
            description: "d".into(),
            labels: BTreeMap::from([("team".into(), "pay".into())]),
            state: KeyState::Enabled,
            created_ms: 1,
            primary_version: 1,
            versions: vec![VersionMeta::new(1, 1)],
            deletion_ms: None,
            rotation: RotationPolicy {
                period_ms: Some(MIN_ROTATION_PERIOD_MS),
                next_rotation_ms: Some(7),
                max_encryptions_per_version: Some(9),
            },
        },
        wrapped: keyward_core::VersionMap::from([(1, WrappedVersionSecret::from_stored(vec![1, 2, 3]))]),
        tag: Some(RecordTag([5; 32])),
    }
}

fn alias(name: &str, id: KeyId) -> AliasEntry {
    AliasEntry { alias: name.into(), key: id, tag: Some(RecordTag([6; 32])) }
}

fn usage(n: u64) -> VersionUsage {
    VersionUsage { encryptions: n, data_keys: n + 1, decryptions: n + 2, last_use_ms: n as i64 * 1000 }
}

/// Builds a chained batch of records for (principal, key, time) triples, in
/// `store`'s own encoding.
fn records(
    store: &dyn Store,
    start_seq: u64,
    prev: &str,
    specs: &[(&str, Option<KeyId>, i64)],
) -> (Vec<SealedRecord>, AuditHead) {
    let mut prev = prev.to_string();
    let mut out = Vec::new();
    let mut seq = start_seq;
    for (principal, key_id, time) in specs {
        let entry = AuditEntry {
            time_ms: *time,
            request_id: format!("r{seq}"),
            principal: principal.to_string(),
            peer: "127.0.0.1:1".into(),
            edge: keyward_core::Edge::Grpc,
            operation: if key_id.is_some() { Operation::Encrypt } else { Operation::ListKeys },
            key_id: *key_id,
            key_version: key_id.map(|_| 1),
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: BTreeMap::new(),
            outcome: if seq.is_multiple_of(2) {
                Outcome::ok()
            } else {
                Outcome { code: "NOT_FOUND", reason: "x".into() }
            },
        };
        let record = AuditRecord::from_entry(entry, seq, prev.clone());
        let bytes = store.encode_audit(&record);
        prev = keyward_core::record_hash(&bytes);
        out.push(SealedRecord { record, bytes });
        seq += 1;
    }
    (out, AuditHead { seq: seq - 1, hash: prev })
}

fn contract(store: Arc<dyn Store>) {
    // Empty.
    assert!(store.load_keys().unwrap().is_empty());
    assert!(store.load_aliases().unwrap().is_empty());
    assert!(store.root_check().unwrap().is_none());
    assert!(store.audit_head().unwrap().is_none());
    store.set_root_check(b"check").unwrap();
    assert_eq!(store.root_check().unwrap().as_deref(), Some(&b"check"[..]));

    // One atomic batch: a key, an alias and records.
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let specs: Vec<(&str, Option<KeyId>, i64)> = vec![
        ("alice", Some(a), 100),
        ("bob", Some(b), 200),
        ("alice", Some(b), 300),
        ("alice", None, 400),
        ("bob", Some(a), 500),
    ];
    let (recs, head) = records(&*store, 1, GENESIS_HASH, &specs);
    store
        .commit(&CommitBatch {
            keys: vec![key(a), key(b)],
            aliases: vec![AliasChange::Set(alias("alias/a", a))],
            audit: recs,
            head: Some(head.clone()),
            usage: vec![(a, 1, usage(3)), (a, 2, usage(4)), (b, 1, usage(5))],
            checkpoint: None,
            head_seal: None,
            ..Default::default()
        })
        .unwrap();
    let mut got = store.load_usage().unwrap();
    got.sort_by_key(|(id, v, _)| (*id, *v));
    let mut want = vec![(a, 1, usage(3)), (a, 2, usage(4)), (b, 1, usage(5))];
    want.sort_by_key(|(id, v, _)| (*id, *v));
    assert_eq!(got, want, "usage totals round-trip");
    let mut keys = store.load_keys().unwrap();
    keys.sort_by_key(|k| k.meta.id);
    let mut want = vec![key(a), key(b)];
    want.sort_by_key(|k| k.meta.id);
    assert_eq!(keys, want);
    assert_eq!(store.load_aliases().unwrap(), vec![alias("alias/a", a)]);
    assert_eq!(store.audit_head().unwrap(), Some(head));

    // Alias removal and key rewrite (a destroyed version's material gone).
    let mut changed = key(a);
    changed.wrapped.clear();
    changed.meta.state = KeyState::Disabled;
    store
        .commit(&CommitBatch {
            keys: vec![changed.clone()],
            aliases: vec![AliasChange::Remove("alias/a".into())],
            ..Default::default()
        })
        .unwrap();
    assert!(store.load_aliases().unwrap().is_empty());
    assert!(store.load_keys().unwrap().contains(&changed));

    // Queries: newest first by default, by key (as key or source), principal, filters, paging.
    let seqs = |q: AuditQuery| -> Vec<u64> {
        store.query_audit(&q).unwrap().records.iter().map(|r| r.record.seq).collect()
    };
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    assert_eq!(seqs(q(&|_| {})), vec![5, 4, 3, 2, 1]);
    assert_eq!(seqs(q(&|q| q.oldest_first = true)), vec![1, 2, 3, 4, 5]);
    assert_eq!(seqs(q(&|q| q.key_id = Some(a))), vec![5, 1]);
    assert_eq!(seqs(q(&|q| q.key_id = Some(b))), vec![3, 2]);
    assert_eq!(seqs(q(&|q| q.principal = Some("alice".into()))), vec![4, 3, 1]);
    assert_eq!(seqs(q(&|q| q.principal = Some("al".into()))), Vec::<u64>::new(), "no prefix match");
    assert_eq!(
        seqs(q(&|q| {
            q.principal = Some("alice".into());
            q.key_id = Some(b)
        })),
        vec![3]
    );
    assert_eq!(seqs(q(&|q| q.operation = Some("ListKeys".into()))), vec![4]);
    assert_eq!(seqs(q(&|q| q.outcome = Some("OK".into()))), vec![4, 2]);
    assert_eq!(
        seqs(q(&|q| {
            q.start_ms = Some(200);
            q.end_ms = Some(400)
        })),
        vec![3, 2]
    );
    // Paging newest first, two at a time.
    let mut cursor = None;
    let mut all = Vec::new();
    loop {
        let page = store.query_audit(&AuditQuery { limit: 2, cursor, ..Default::default() }).unwrap();
        all.extend(page.records.iter().map(|r| r.record.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(all, vec![5, 4, 3, 2, 1]);
    // Paging oldest first by key.
    let p1 = store
        .query_audit(&AuditQuery { limit: 1, oldest_first: true, key_id: Some(a), ..Default::default() })
        .unwrap();
    assert_eq!(p1.records[0].record.seq, 1);
    let p2 = store
        .query_audit(&AuditQuery {
            limit: 1,
            oldest_first: true,
            key_id: Some(a),
            cursor: p1.next_cursor,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(p2.records[0].record.seq, 5);
    assert_eq!(p2.next_cursor, None);
    // Each record comes with its stored bytes, and the hashes chain.
    let all =
        store.query_audit(&AuditQuery { limit: 100, oldest_first: true, ..Default::default() }).unwrap();
    for pair in all.records.windows(2) {
        assert_eq!(store.decode_audit(&pair[0].bytes).unwrap(), pair[0].record);
        assert_eq!(pair[1].record.prev_hash, pair[0].hash());
    }

    // Scan for the verifier, and the verifier on an intact chain.
    let mut scanned = Vec::new();
    store
        .scan_audit(2, &mut |s, _| {
            scanned.push(s);
            s < 4
        })
        .unwrap();
    assert_eq!(scanned, vec![2, 3, 4]);
    let report = keyward_core::verify_chain(&*store).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records_checked, 5);
}

/// The hourly counts: what each commit's records add, read back by range.
fn hourly_counts(store: &dyn Store) {
    use keyward_core::rollup::{OutcomesOf, HOUR_MS};
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let h = 480_000i64 * HOUR_MS;
    // Seq 1 (NOT_FOUND), 2 (OK), 3 (NOT_FOUND), 4 (OK): odd sequence numbers fail.
    let (recs, head) = records(
        store,
        1,
        GENESIS_HASH,
        &[
            ("p", Some(a), h + 1),
            ("p", Some(a), h + 2),
            ("q", Some(b), h + HOUR_MS),
            ("q", None, h + 2 * HOUR_MS),
        ],
    );
    store.commit(&CommitBatch { audit: recs, head: Some(head.clone()), ..Default::default() }).unwrap();
    let (recs, head) = records(store, 5, &head.hash, &[("p", Some(a), h + 5)]);
    store.commit(&CommitBatch { audit: recs, head: Some(head), ..Default::default() }).unwrap();
    let uses = store.usage_hours(a, 480_000, 480_003).unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(
        (uses[0].hour, uses[0].version, uses[0].encryptions),
        (480_000, 1, 1),
        "only successes are uses"
    );
    assert!(store.usage_hours(b, 480_000, 480_003).unwrap().is_empty(), "b's only use failed");
    assert!(store.usage_hours(a, 480_001, 480_003).unwrap().is_empty());
    let total = |of: &OutcomesOf, from, to| -> u64 {
        store.outcome_hours(of, from, to).unwrap().iter().map(|o| o.records).sum()
    };
    assert_eq!(total(&OutcomesOf::All, 480_000, 480_003), 5);
    assert_eq!(total(&OutcomesOf::All, 480_001, 480_002), 1);
    assert_eq!(total(&OutcomesOf::Key(a), 480_000, 480_001), 3);
    assert_eq!(total(&OutcomesOf::Principal("q".into()), 480_000, 480_003), 2);
    assert_eq!(total(&OutcomesOf::Principal("p".into()), 480_001, 480_003), 0);
    let all = store.outcome_hours(&OutcomesOf::Key(a), 480_000, 480_001).unwrap();
    let not_found: u64 = all.iter().filter(|o| o.outcome == "NOT_FOUND").map(|o| o.records).sum();
    assert_eq!(not_found, 2, "{all:?}");
}

#[test]
fn both_stores_keep_the_same_hourly_counts() {
    hourly_counts(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    hourly_counts(&RocksStore::open(dir.path()).unwrap());
}

#[test]
fn hourly_counts_missing_from_a_folder_are_rebuilt_from_its_log_at_open() {
    use keyward_core::rollup::OutcomesOf;
    let dir = tempfile::tempdir().unwrap();
    let a = KeyId::generate();
    let counted = {
        let s = RocksStore::open(dir.path()).unwrap();
        let (recs, head) =
            records(&s, 1, GENESIS_HASH, &[("p", Some(a), 10), ("p", Some(a), 20), ("p", Some(a), 30)]);
        s.commit(&CommitBatch { audit: recs, head: Some(head), ..Default::default() }).unwrap();
        (s.usage_hours(a, 0, 1).unwrap(), s.outcome_hours(&OutcomesOf::All, 0, 1).unwrap())
    };
    assert_eq!(counted.0[0].encryptions, 1);
    {
        // As a folder from before the counts were kept: none, no marker.
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let cf = db.cf_handle("audit_rollup").unwrap();
        let keys: Vec<Vec<u8>> =
            db.iterator_cf(cf, rocksdb::IteratorMode::Start).map(|i| i.unwrap().0.to_vec()).collect();
        assert!(!keys.is_empty());
        for k in keys {
            db.delete_cf(cf, k).unwrap();
        }
        db.delete_cf(db.cf_handle("meta").unwrap(), b"audit_rollup_complete").unwrap();
    }
    let s = RocksStore::open(dir.path()).unwrap();
    assert_eq!((s.usage_hours(a, 0, 1).unwrap(), s.outcome_hours(&OutcomesOf::All, 0, 1).unwrap()), counted);
    drop(s);
    // Rebuilt once: opening again counts nothing twice.
    let s = RocksStore::open(dir.path()).unwrap();
    assert_eq!(s.usage_hours(a, 0, 1).unwrap(), counted.0);
}

#[test]
fn memory_store_meets_the_contract() {
    contract(Arc::new(MemoryStore::new()));
}

#[test]
fn rocksdb_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(RocksStore::open(dir.path()).unwrap()));
}

#[test]
fn rocksdb_store_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = KeyId::generate();
    {
        let s = RocksStore::open(dir.path()).unwrap();
        let (recs, head) = records(&s, 1, GENESIS_HASH, &[("p", Some(a), 1)]);
        s.commit(&CommitBatch {
            keys: vec![key(a)],
            aliases: vec![AliasChange::Set(alias("alias/x", a))],
            audit: recs,
            head: Some(head),
            usage: vec![(a, 1, usage(11))],
            checkpoint: None,
            head_seal: None,
            ..Default::default()
        })
        .unwrap();
        s.set_root_check(b"rc").unwrap();
    }
    let s = RocksStore::open(dir.path()).unwrap();
    assert_eq!(s.load_keys().unwrap(), vec![key(a)]);
    assert_eq!(s.load_aliases().unwrap(), vec![alias("alias/x", a)]);
    assert_eq!(s.root_check().unwrap().as_deref(), Some(&b"rc"[..]));
    assert_eq!(s.audit_head().unwrap().unwrap().seq, 1);
    assert_eq!(s.load_usage().unwrap(), vec![(a, 1, usage(11))]);
    drop(s);
    let ro = RocksStore::open_read_only(dir.path()).unwrap();
    assert!(keyward_core::verify_chain(&ro).unwrap().intact());
}
