//! A data folder written by an earlier build (commit 4220ff1, through its real
//! server and CLI; see fixtures/make-format-v1.sh) is read by this one: the
//! same keys, aliases, usage and audit chain, every stored value re-encodes to
//! exactly the bytes on disk, and its ciphertexts still decrypt.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use keyward_core::testing::ManualClock;
use keyward_core::{Caller, KeyState, Kms, KmsConfig, Policy, Store, VersionState};
use keyward_crypto::RootKey;
use keyward_store::{format, RocksStore};
use rocksdb::{IteratorMode, Options, DB};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v1");

/// A copy of the fixture's database (opening it writes; the fixture stays as it is).
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(Path::new(FIXTURE).join("db")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn ids() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("ids.txt")).unwrap();
    text.split_whitespace().map(str::to_string).collect()
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(Path::new(FIXTURE).join(name)).unwrap()).unwrap()
}

/// One stored key and value.
type Entry = (Box<[u8]>, Box<[u8]>);

#[test]
fn every_stored_value_re_encodes_to_the_bytes_on_disk() {
    let dir = copy();
    let cfs = DB::list_cf(&Options::default(), dir.path()).unwrap();
    let db = DB::open_cf_for_read_only(&Options::default(), dir.path(), &cfs, false).unwrap();
    let all = |cf: &str| -> Vec<Entry> {
        db.iterator_cf(db.cf_handle(cf).unwrap(), IteratorMode::Start).map(Result::unwrap).collect()
    };
    let keys = all("keys");
    assert_eq!(keys.len(), 3);
    for (_, v) in &keys {
        assert_eq!(format::keys::encode_v1(&format::keys::decode_v1(v).unwrap()), v.to_vec());
    }
    let audit = all("audit");
    assert!(audit.len() >= 15, "{} records", audit.len());
    for (_, v) in &audit {
        assert_eq!(format::audit::encode(&format::audit::decode(v).unwrap()), v.to_vec());
    }
    let head = db.get_cf(db.cf_handle("meta").unwrap(), b"audit_head").unwrap().unwrap();
    assert_eq!(format::audit::encode_head(&format::audit::decode_head(&head).unwrap()), head);
    let usage = all("usage");
    assert!(!usage.is_empty());
    for (k, v) in &usage {
        let (id, version) = format::usage::decode_key(k).unwrap();
        assert_eq!(format::usage::key(id, version).to_vec(), k.to_vec());
        assert_eq!(format::usage::encode(&format::usage::decode(v).unwrap()).to_vec(), v.to_vec());
    }
}

#[tokio::test]
async fn the_keys_aliases_usage_and_chain_are_as_written_and_ciphertexts_decrypt() {
    let dir = copy();
    let [a, b, c] = <[String; 3]>::try_from(ids()).unwrap();
    {
        // Read-only, before any server of this build opened it: no checkpoints yet, intact.
        let ro = RocksStore::open_read_only(dir.path()).unwrap();
        let report = keyward_core::verify_chain(&ro).unwrap();
        assert!(report.intact() && report.checkpoints_checked == 0, "{report:?}");
    }
    {
        let store = RocksStore::open(dir.path()).unwrap();
        let report = keyward_core::verify_chain(&store).unwrap();
        assert!(report.intact(), "{report:?}");
        let keys = store.load_keys().unwrap();
        let key = |id: &str| keys.iter().find(|k| k.meta.id.to_string() == id).unwrap().clone();
        let ka = key(&a);
        assert_eq!(
            (ka.meta.state, ka.meta.primary_version, ka.meta.versions.len()),
            (KeyState::Enabled, 2, 2)
        );
        assert_eq!(ka.meta.description, "format v1 fixture");
        assert_eq!(ka.meta.labels.get("team").map(String::as_str), Some("pay"));
        assert_eq!(ka.meta.rotation.period_ms, Some(90 * 24 * 3600 * 1000));
        assert_eq!(ka.meta.rotation.max_encryptions_per_version, Some(1000));
        assert_eq!(ka.wrapped.len(), 2);
        let kb = key(&b);
        assert_eq!(kb.meta.state, KeyState::PendingDeletion);
        assert!(kb.meta.deletion_ms.is_some());
        let kc = key(&c);
        assert_eq!(kc.meta.state, KeyState::Disabled);
        let v1 = kc.meta.version(1).unwrap();
        assert_eq!(v1.state, VersionState::ScheduledForDestruction);
        assert!(v1.compromised && v1.destroy_ms.is_some());
        let mut aliases = store.load_aliases().unwrap();
        aliases.sort_by(|x, y| x.alias.cmp(&y.alias));
        assert!(aliases.iter().all(|e| e.tag.is_none()) && keys.iter().all(|k| k.tag.is_none()));
        assert!(store.needs_upgrade());
        let names: Vec<_> = aliases.iter().map(|e| (e.alias.as_str(), e.key.to_string())).collect();
        assert_eq!(names, vec![("alias/fixture-a", a.clone()), ("alias/fixture-c", c.clone())]);
        let usage = store.load_usage().unwrap();
        let of = |v: u32| usage.iter().find(|(id, ver, _)| id.to_string() == a && *ver == v).unwrap().2;
        assert_eq!((of(1).encryptions, of(1).decryptions, of(1).data_keys), (1, 1, 0));
        assert_eq!((of(2).encryptions, of(2).data_keys), (1, 1));
    }

    // The use cases over the old folder: opening it with the root key
    // upgrades it to format 2 (secrets apart, records and aliases tagged),
    // and ciphertexts of both versions decrypt.
    let root_hex = std::fs::read_to_string(Path::new(FIXTURE).join("root.key")).unwrap();
    let root = || RootKey::from_bytes(&hex::decode(root_hex.trim()).unwrap()).unwrap();
    let rocks = Arc::new(RocksStore::open(dir.path()).unwrap());
    let store: Arc<dyn Store> = rocks.clone();
    // Without the operator's say-so, an older format is refused.
    let refused = Kms::open(store.clone(), root(), Arc::new(ManualClock::at(1)), KmsConfig::default());
    assert!(refused.unwrap_err().to_string().contains("--upgrade"));
    let upgrade = KmsConfig { adopt_older_format: true, ..Default::default() };
    let kms = Kms::open(store, root(), Arc::new(ManualClock::at(1)), upgrade).unwrap();
    assert!(!rocks.needs_upgrade());
    let keys = rocks.load_keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.tag.is_some()));
    assert_eq!(keys.iter().map(|k| k.wrapped.len()).sum::<usize>(), 2 + 1 + 2, "every secret kept");
    assert!(rocks.load_aliases().unwrap().iter().all(|e| e.tag.is_some()));
    assert!(keyward_core::verify_chain(&*rocks).unwrap().intact());
    let caller = Caller {
        request_id: "fixture".into(),
        principal: "admin".into(),
        peer: String::new(),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::everything()),
    };
    for (file, context, plaintext) in [
        ("a-v1.json", HashMap::from([("tenant".to_string(), "acme".to_string())]), "fixture plaintext v1"),
        ("a-v2.json", HashMap::new(), "fixture plaintext v2"),
    ] {
        let ct = base64::engine::general_purpose::STANDARD
            .decode(json(file)["ciphertext"].as_str().unwrap())
            .unwrap();
        let out = kms.decrypt(&caller, &ct, context, None).await.unwrap();
        assert_eq!(out.plaintext.expose_secret(), plaintext.as_bytes(), "{file}");
        assert_eq!(out.key_id.to_string(), a);
    }
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop((kms, rocks));

    // Upgraded for good: format 2 recorded, and it opens again as format 2.
    let store = Arc::new(RocksStore::open(dir.path()).unwrap());
    assert!(!store.needs_upgrade());
    let kms = Kms::open(store, root(), Arc::new(ManualClock::at(2)), KmsConfig::default()).unwrap();
    assert_eq!(kms.peek_key("alias/fixture-a").unwrap().2, 2);
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    let cfs = DB::list_cf(&Options::default(), dir.path()).unwrap();
    let db = DB::open_cf_for_read_only(&Options::default(), dir.path(), &cfs, false).unwrap();
    let version = db.get_cf(db.cf_handle("meta").unwrap(), b"format_version").unwrap().unwrap();
    assert_eq!(version, 2u32.to_be_bytes());
}

#[test]
fn a_folder_of_an_unknown_format_is_refused() {
    let dir = copy();
    drop(RocksStore::open(dir.path()).unwrap());
    let cfs = DB::list_cf(&Options::default(), dir.path()).unwrap();
    {
        let db = DB::open_cf(&Options::default(), dir.path(), &cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        // Opening without a root key leaves a format-1 folder as it is.
        assert_eq!(db.get_cf(meta, b"format_version").unwrap(), None);
        db.put_cf(meta, b"format_version", 3u32.to_be_bytes()).unwrap();
    }
    for e in [RocksStore::open(dir.path()).unwrap_err(), RocksStore::open_read_only(dir.path()).unwrap_err()]
    {
        assert!(e.0.contains("stored format 3") && e.0.contains("reads formats 1 to 2"), "{}", e.0);
    }
}
