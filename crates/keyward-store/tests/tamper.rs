//! The audit chain catches records altered, removed or reordered directly in
//! RocksDB, names the first bad one, and raises no false alarm.

use std::collections::HashMap;
use std::sync::Arc;

use keyward_core::{verify_chain, Caller, Kms, KmsConfig, Policy, Store, SystemClock};
use keyward_crypto::{Plaintext, RootKey};
use keyward_store::RocksStore;

fn caller(i: usize) -> Caller {
    Caller {
        request_id: format!("r{i}"),
        principal: "tester".into(),
        peer: "127.0.0.1:9".into(),
        policy: Arc::new(Policy::everything()),
    }
}

/// Writes `n` records through the real use cases, then closes the store.
async fn fill(dir: &std::path::Path, n: usize) {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir).unwrap());
    let root = RootKey::from_bytes(&[7; 32]).unwrap();
    let kms = Kms::open(store, root, Arc::new(SystemClock), KmsConfig::default()).unwrap();
    let (meta, _) = kms.create_key(&caller(0), Default::default()).await.unwrap();
    for i in 1..n {
        kms.encrypt(&caller(i), &meta.id.to_string(), Plaintext::new(vec![1, 2, 3]), HashMap::new())
            .await
            .unwrap();
    }
    kms.audit_log().stop(std::time::Duration::from_secs(5));
}

fn verify(dir: &std::path::Path) -> keyward_core::VerifyReport {
    verify_chain(&RocksStore::open(dir).unwrap()).unwrap()
}

#[tokio::test]
async fn intact_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    let r = verify(dir.path());
    assert!(r.intact(), "{r:?}");
    assert_eq!(r.records_checked, 20);
}

#[tokio::test]
async fn altered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    {
        let s = RocksStore::open(dir.path()).unwrap();
        let bytes = s.raw_audit(7).unwrap().unwrap();
        let text = String::from_utf8(bytes).unwrap().replace("\"OK\"", "\"NOT_FOUND\"");
        s.tamper_audit(7, Some(text.as_bytes())).unwrap();
    }
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(7), "{r:?}");
}

#[tokio::test]
async fn altered_newest_record_is_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let s = RocksStore::open(dir.path()).unwrap();
        let text = String::from_utf8(s.raw_audit(10).unwrap().unwrap()).unwrap().replace("tester", "someone");
        s.tamper_audit(10, Some(text.as_bytes())).unwrap();
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(10));
}

#[tokio::test]
async fn removed_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    RocksStore::open(dir.path()).unwrap().tamper_audit(12, None).unwrap();
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(12), "{r:?}");
}

#[tokio::test]
async fn truncated_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let s = RocksStore::open(dir.path()).unwrap();
        s.tamper_audit(10, None).unwrap();
        s.tamper_audit(9, None).unwrap();
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(9));
}

#[tokio::test]
async fn swapped_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    {
        let s = RocksStore::open(dir.path()).unwrap();
        let a = s.raw_audit(5).unwrap().unwrap();
        let b = s.raw_audit(6).unwrap().unwrap();
        s.tamper_audit(5, Some(&b)).unwrap();
        s.tamper_audit(6, Some(&a)).unwrap();
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(5));
}
