//! The audit chain catches records altered, removed or reordered directly in
//! RocksDB, names the first bad one, and raises no false alarm. The tests
//! tamper as a hostile writer of the disk would: with RocksDB itself, through
//! no hook of the store.

use std::collections::HashMap;
use std::sync::Arc;

use keyward_core::{verify_chain, Caller, Kms, KmsConfig, Policy, Store, SystemClock};
use keyward_crypto::{Plaintext, RootKey};
use keyward_store::RocksStore;
use rocksdb::{Options, DB};

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
    let meta = kms.create_key(&caller(0), Default::default()).await.unwrap().meta;
    for i in 1..n {
        kms.encrypt(&caller(i), &meta.id.to_string(), Plaintext::new(vec![1, 2, 3]), HashMap::new())
            .await
            .unwrap();
    }
    kms.audit_log().stop(std::time::Duration::from_secs(5));
}

/// The data folder opened raw, every column family.
struct Raw(DB);

impl Raw {
    fn open(dir: &std::path::Path) -> Self {
        let cfs = DB::list_cf(&Options::default(), dir).unwrap();
        Self(DB::open_cf(&Options::default(), dir, cfs).unwrap())
    }

    fn audit(&self, seq: u64) -> Vec<u8> {
        self.0.get_cf(self.0.cf_handle("audit").unwrap(), seq.to_be_bytes()).unwrap().unwrap()
    }

    fn set_audit(&self, seq: u64, bytes: Option<&[u8]>) {
        let cf = self.0.cf_handle("audit").unwrap();
        match bytes {
            Some(b) => self.0.put_cf(cf, seq.to_be_bytes(), b),
            None => self.0.delete_cf(cf, seq.to_be_bytes()),
        }
        .unwrap()
    }
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
        let s = Raw::open(dir.path());
        let text = String::from_utf8(s.audit(7)).unwrap().replace("\"OK\"", "\"NOT_FOUND\"");
        s.set_audit(7, Some(text.as_bytes()));
    }
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(7), "{r:?}");
}

#[tokio::test]
async fn altered_newest_record_is_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let s = Raw::open(dir.path());
        let text = String::from_utf8(s.audit(10)).unwrap().replace("tester", "someone");
        s.set_audit(10, Some(text.as_bytes()));
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(10));
}

#[tokio::test]
async fn removed_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    Raw::open(dir.path()).set_audit(12, None);
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(12), "{r:?}");
}

#[tokio::test]
async fn truncated_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let s = Raw::open(dir.path());
        s.set_audit(10, None);
        s.set_audit(9, None);
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(9));
}

#[tokio::test]
async fn swapped_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    {
        let s = Raw::open(dir.path());
        let (a, b) = (s.audit(5), s.audit(6));
        s.set_audit(5, Some(&b));
        s.set_audit(6, Some(&a));
    }
    assert_eq!(verify(dir.path()).first_bad_seq, Some(5));
}
