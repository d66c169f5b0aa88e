//! Key metadata is authenticated on disk: a storage administrator without
//! the root key who edits a key record, repoints an alias or deletes a
//! version's secret directly in RocksDB gets a service that refuses to load
//! the record, naming it, instead of one that obeys the edit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use keyward_core::{Caller, CreateKeyInput, KeyId, Kms, KmsConfig, Policy, Store, SystemClock};
use keyward_crypto::RootKey;
use keyward_store::RocksStore;
use rocksdb::{Options, DB};

fn caller() -> Caller {
    Caller {
        request_id: "tamper".into(),
        principal: "admin".into(),
        peer: String::new(),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::everything()),
    }
}

fn open(dir: &Path) -> Result<Kms, String> {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir).map_err(|e| e.to_string())?);
    let root = RootKey::from_bytes(&[7; 32]).unwrap();
    Kms::open(store, root, Arc::new(SystemClock), KmsConfig::default()).map_err(|e| e.to_string())
}

/// Two keys, the first with an alias, a label and two versions.
async fn fill(dir: &Path) -> (KeyId, KeyId) {
    let kms = open(dir).unwrap();
    let input = CreateKeyInput {
        alias: Some("alias/payments".into()),
        labels: BTreeMap::from([("team".into(), "payments".into())]),
        ..Default::default()
    };
    let a = kms.create_key(&caller(), input).await.unwrap().meta.id;
    kms.rotate_key(&caller(), &a.to_string()).await.unwrap();
    let b = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    (a, b)
}

fn raw(dir: &Path) -> DB {
    let cfs = DB::list_cf(&Options::default(), dir).unwrap();
    DB::open_cf(&Options::default(), dir, cfs).unwrap()
}

#[tokio::test]
async fn an_untouched_folder_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = fill(dir.path()).await;
    let kms = open(dir.path()).unwrap();
    assert_eq!(kms.peek_key("alias/payments").unwrap().0, a);
    kms.audit_log().stop(std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn an_edited_label_or_state_is_refused_naming_the_key() {
    for edit in ["label", "state"] {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = fill(dir.path()).await;
        {
            let db = raw(dir.path());
            let cf = db.cf_handle("keys").unwrap();
            let mut v: serde_json::Value =
                serde_json::from_slice(&db.get_cf(cf, a.as_bytes()).unwrap().unwrap()).unwrap();
            match edit {
                "label" => v["meta"]["labels"]["team"] = "attacker".into(),
                _ => v["meta"]["versions"][0]["compromised"] = true.into(),
            }
            db.put_cf(cf, a.as_bytes(), serde_json::to_vec(&v).unwrap()).unwrap();
        }
        let e = open(dir.path()).expect_err("tampered record loaded");
        assert!(e.contains(&format!("key record {a}")) && e.contains("integrity check"), "{edit}: {e}");
    }
}

#[tokio::test]
async fn a_repointed_alias_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = fill(dir.path()).await;
    {
        let db = raw(dir.path());
        let cf = db.cf_handle("aliases").unwrap();
        let mut v = db.get_cf(cf, b"alias/payments").unwrap().unwrap();
        assert_eq!(&v[..16], a.as_bytes());
        v[..16].copy_from_slice(b.as_bytes());
        db.put_cf(cf, b"alias/payments", v).unwrap();
    }
    let e = open(dir.path()).expect_err("repointed alias loaded");
    assert!(e.contains("alias \"alias/payments\"") && e.contains("integrity check"), "{e}");
}

#[tokio::test]
async fn a_deleted_version_secret_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = fill(dir.path()).await;
    {
        let db = raw(dir.path());
        let cf = db.cf_handle("secrets").unwrap();
        db.delete_cf(cf, keyward_store::format::keys::secret_key(a, 1)).unwrap();
    }
    let e = open(dir.path()).expect_err("record missing a secret loaded");
    assert!(e.contains(&format!("key record {a}")), "{e}");
}
