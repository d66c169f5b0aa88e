//! Destroyed means unrecoverable: once a version's or a key's destruction is
//! acknowledged, no file of the data folder holds its wrapped secret (neither
//! in a WAL nor in an SST file, in raw or hex form), and that stays true
//! across a restart. Versions not destroyed keep theirs.

use std::path::Path;
use std::sync::Arc;

use keyward_core::testing::ManualClock;
use keyward_core::{Caller, Kms, KmsConfig, Policy, Store, VersionState};
use keyward_crypto::RootKey;
use keyward_store::RocksStore;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn caller() -> Caller {
    Caller {
        request_id: "shred".into(),
        principal: "admin".into(),
        peer: String::new(),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::everything()),
    }
}

fn open(dir: &Path, clock: &ManualClock) -> (Arc<RocksStore>, Kms) {
    let store = Arc::new(RocksStore::open(dir).unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    let root = RootKey::from_bytes(&[0x5a; 32]).unwrap();
    (store, Kms::open(dyn_store, root, Arc::new(clock.clone()), KmsConfig::default()).unwrap())
}

/// Every file of the folder that holds `needle` raw or hex-encoded.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let hex = hex::encode(needle).into_bytes();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let holds = |n: &[u8]| bytes.windows(n.len()).any(|w| w == n);
        if holds(needle) || holds(&hex) {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

fn secret(store: &RocksStore, id: keyward_core::KeyId, version: u32) -> Option<Vec<u8>> {
    let keys = store.load_keys().unwrap();
    let k = keys.iter().find(|k| k.meta.id == id).unwrap();
    k.wrapped.get(&version).map(|w| w.as_bytes().to_vec())
}

fn stop(kms: Kms) {
    kms.audit_log().stop(std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_destroyed_version_and_a_destroyed_key_leave_no_trace_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_700_000_000_000);
    let (store, kms) = open(dir.path(), &clock);
    let doomed = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    kms.rotate_key(&caller(), &doomed.to_string()).await.unwrap();
    let other = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    let (v1, v2) = (secret(&store, doomed, 1).unwrap(), secret(&store, doomed, 2).unwrap());
    let kept = secret(&store, other, 1).unwrap();
    // Before: the secrets are in the folder's files (the WAL at least).
    for s in [&v1, &v2, &kept] {
        assert!(!files_holding(dir.path(), s).is_empty(), "a live secret should be on disk");
    }
    // A restart between creation and destruction (the secrets then live in
    // the recovered WAL or an SST file of the reopened database).
    stop(kms);
    drop(store);
    let (store, kms) = open(dir.path(), &clock);

    kms.schedule_key_version_destruction(&caller(), &doomed.to_string(), 1, Some(1)).await.unwrap();
    clock.advance_ms(2 * DAY_MS);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let record = store.load_keys().unwrap().into_iter().find(|k| k.meta.id == doomed).unwrap();
    assert_eq!(record.meta.version(1).unwrap().state, VersionState::Destroyed);
    assert!(!record.wrapped.contains_key(&1));
    assert_eq!(files_holding(dir.path(), &v1), Vec::<String>::new(), "destroyed version 1 still on disk");
    assert!(!files_holding(dir.path(), &v2).is_empty(), "version 2 was not destroyed");
    assert!(!files_holding(dir.path(), &kept).is_empty(), "the other key was not destroyed");

    // The whole key.
    kms.schedule_key_deletion(&caller(), &doomed.to_string(), Some(7)).await.unwrap();
    clock.advance_ms(8 * DAY_MS);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    assert_eq!(
        files_holding(dir.path(), &v2),
        Vec::<String>::new(),
        "destroyed key's version 2 still on disk"
    );
    assert!(!files_holding(dir.path(), &kept).is_empty());
    stop(kms);
    drop(store);

    // Across a restart (WAL replay, recovery): still nowhere.
    let (store, kms) = open(dir.path(), &clock);
    for s in [&v1, &v2] {
        assert_eq!(files_holding(dir.path(), s), Vec::<String>::new(), "after restart");
    }
    assert_eq!(secret(&store, other, 1).unwrap(), kept, "the other key still loads");
    stop(kms);
}

/// A crash after a destruction's synced write but before its shredding:
/// the deletion and the `shred_pending` marker are durable, the secret still
/// sits in older files. The next open finishes the shredding before anything
/// is served. (The crash is simulated by writing what that commit writes
/// with RocksDB itself, without the store's shredding step.)
#[tokio::test]
async fn an_interrupted_shredding_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_700_000_000_000);
    let (store, kms) = open(dir.path(), &clock);
    let id = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    kms.rotate_key(&caller(), &id.to_string()).await.unwrap();
    let v1 = secret(&store, id, 1).unwrap();
    stop(kms);
    drop(store);
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        // Into SST files first, as a long-running server's would be.
        for cf in ["keys", "secrets", "meta", "audit"] {
            db.flush_cf(db.cf_handle(cf).unwrap()).unwrap();
        }
        let mut b = rocksdb::WriteBatch::default();
        b.delete_cf(db.cf_handle("secrets").unwrap(), keyward_store::format::keys::secret_key(id, 1));
        b.put_cf(db.cf_handle("meta").unwrap(), b"shred_pending", []);
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(b, &wo).unwrap();
    }
    assert!(!files_holding(dir.path(), &v1).is_empty(), "the crash left the secret on disk");
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(files_holding(dir.path(), &v1), Vec::<String>::new(), "open finished the shredding");
    let keys = store.load_keys().unwrap();
    assert!(!keys[0].wrapped.contains_key(&1) && keys[0].wrapped.contains_key(&2));
}
