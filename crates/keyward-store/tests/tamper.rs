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
        edge: keyward_core::Edge::Grpc,
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

impl Raw {
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.0.cf_handle(name).unwrap()
    }

    /// Rewrites record `seq` with `edit`, then redoes the plain chain after
    /// it and the head, as a writer of the database without the signing key
    /// would: every SHA-256 link checks out again.
    fn rewrite_and_rechain(&self, seq: u64, edit: impl Fn(&str) -> String) {
        let text = String::from_utf8(self.audit(seq)).unwrap();
        self.set_audit(seq, Some(edit(&text).as_bytes()));
        let mut prev = keyward_core::record_hash(&self.audit(seq));
        let mut last = seq;
        while let Some(bytes) = self.0.get_cf(self.cf("audit"), (last + 1).to_be_bytes()).unwrap() {
            last += 1;
            let mut r = format::audit::decode(&bytes).unwrap();
            r.prev_hash = prev;
            let bytes = format::audit::encode(&r);
            prev = keyward_core::record_hash(&bytes);
            self.set_audit(last, Some(&bytes));
        }
        let head = format::audit::encode_head(&keyward_core::AuditHead { seq: last, hash: prev });
        self.0.put_cf(self.cf("meta"), b"audit_head", head).unwrap();
    }
}

use keyward_store::format;

/// What `keyward audit export --data-dir` writes, from one snapshot.
fn export(dir: &std::path::Path) -> Vec<u8> {
    let store = RocksStore::open_read_only(dir).unwrap();
    let mut out = Vec::new();
    store
        .audit_view(&mut |view| {
            let mut cps = Vec::new();
            view.scan_checkpoints(0, &mut |_, c| {
                cps.push(c.unwrap());
                true
            })?;
            view.scan_records(1, &mut |seq, bytes| {
                out.extend(format::export::record_line(seq, bytes));
                true
            })?;
            for c in &cps {
                out.extend(format::export::checkpoint_line(c));
            }
            Ok(())
        })
        .unwrap();
    out
}

fn public_key(dir: &std::path::Path) -> keyward_crypto::AuditPublicKey {
    let signer = RocksStore::open(dir).unwrap().audit_signer().unwrap().unwrap();
    keyward_crypto::AuditPublicKey::from_bytes(&signer.public_key).unwrap()
}

#[tokio::test]
async fn a_rewritten_history_with_a_redone_chain_fails_at_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    let pinned = public_key(dir.path());
    let before = format::export::verify(&format::export::parse(&export(dir.path())).unwrap(), &pinned);
    assert!(before.intact(), "{before:?}");
    assert_eq!((before.last_checkpoint_seq, before.uncovered), (Some(20), None), "{before:?}");

    Raw::open(dir.path()).rewrite_and_rechain(7, |t| t.replace("\"OK\"", "\"NOT_FOUND\""));
    // The plain chain alone no longer tells: every link and the head agree.
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(20), "the signed checkpoint at 20 catches it: {r:?}");
    assert!(r.problem.as_deref().unwrap().contains("signed checkpoint"), "{r:?}");
    // Offline, with the key pinned before: the same finding.
    let after = format::export::verify(&format::export::parse(&export(dir.path())).unwrap(), &pinned);
    assert_eq!(after.first_bad_seq, Some(20), "{after:?}");
    assert!(after.problem.as_deref().unwrap().contains("does not match its signed checkpoint"), "{after:?}");
}

#[tokio::test]
async fn a_deleted_index_entry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let raw = Raw::open(dir.path());
        let cf = raw.cf("audit_by_key");
        let (k, _) = raw.0.iterator_cf(cf, rocksdb::IteratorMode::Start).nth(3).unwrap().unwrap();
        raw.0.delete_cf(cf, &k).unwrap();
    }
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(4), "{r:?}");
    assert!(r.problem.as_deref().unwrap().contains("missing its key index entry"), "{r:?}");
}

#[tokio::test]
async fn an_index_entry_pointing_elsewhere_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    {
        let raw = Raw::open(dir.path());
        let mut k = 5u16.to_be_bytes().to_vec();
        k.extend_from_slice(b"alice");
        k.extend_from_slice(&3u64.to_be_bytes());
        raw.0.put_cf(raw.cf("audit_by_principal"), k, []).unwrap();
    }
    let r = verify(dir.path());
    assert_eq!(r.first_bad_seq, Some(3), "{r:?}");
    assert!(r.problem.as_deref().unwrap().contains("does not name it"), "{r:?}");
}

#[tokio::test]
async fn a_deleted_head_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 5).await;
    {
        let raw = Raw::open(dir.path());
        raw.0.delete_cf(raw.cf("meta"), b"audit_head").unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let err =
        Kms::open(store, RootKey::from_bytes(&[7; 32]).unwrap(), Arc::new(SystemClock), KmsConfig::default())
            .unwrap_err();
    assert!(matches!(err, keyward_core::OpenError::AuditHead(_)), "{err}");
    // Nothing was overwritten: record 1 is still the CreateKey.
    let text = String::from_utf8(Raw::open(dir.path()).audit(1)).unwrap();
    assert!(text.contains("CreateKey"), "{text}");
}

fn open_kms(dir: &std::path::Path) -> Result<Kms, keyward_core::OpenError> {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir).unwrap());
    Kms::open(store, RootKey::from_bytes(&[7; 32]).unwrap(), Arc::new(SystemClock), KmsConfig::default())
}

/// The outside reviewer's forgery: rewrite a record, redo the chain and the
/// head, and delete every signed checkpoint. Without the head's seal the
/// verifier said "intact, no signed checkpoint yet" and the server started
/// and signed the forged history. The seal (signed with every batch) names
/// the genuine head: the verifier reports it, the server refuses to start.
#[tokio::test]
async fn a_rewritten_history_with_its_checkpoints_deleted_is_caught_by_the_sealed_head() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    {
        let raw = Raw::open(dir.path());
        raw.rewrite_and_rechain(6, |t| t.replace("\"OK\"", "\"NOT_FOUND\""));
        let cf = raw.cf("audit_checkpoints");
        let keys: Vec<Box<[u8]>> =
            raw.0.iterator_cf(cf, rocksdb::IteratorMode::Start).map(|i| i.unwrap().0).collect();
        assert!(!keys.is_empty());
        for k in keys {
            raw.0.delete_cf(cf, k).unwrap();
        }
    }
    let r = verify(dir.path());
    assert!(!r.intact(), "{r:?}");
    assert!(r.problem.as_deref().unwrap().contains("signed seal"), "{r:?}");
    let e = open_kms(dir.path()).unwrap_err();
    assert!(e.to_string().contains("seal") && e.to_string().contains("outside Keyward"), "{e}");
}

/// Deleting the node's signing key does not make the server start with a
/// fresh one (which would sign whatever the log holds): it refuses.
#[tokio::test]
async fn a_deleted_signing_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 5).await;
    {
        let raw = Raw::open(dir.path());
        raw.0.delete_cf(raw.cf("meta"), b"audit_signer").unwrap();
    }
    let e = open_kms(dir.path()).unwrap_err();
    assert!(matches!(e, keyward_core::OpenError::AuditKey(_)), "{e}");
    assert!(e.to_string().contains("signing key is missing"), "{e}");
}

/// A record after the last checkpoint rewritten (the chain redone to a new
/// head, the seal left as it was): the server refuses to start.
#[tokio::test]
async fn a_rewritten_tail_after_the_last_checkpoint_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 8).await;
    {
        let raw = Raw::open(dir.path());
        raw.rewrite_and_rechain(8, |t| t.replace("\"OK\"", "\"NOT_FOUND\""));
    }
    assert!(open_kms(dir.path()).unwrap_err().to_string().contains("seal"));
}

/// Verification while requests commit: the head and the records come from
/// one snapshot, so a busy log is never reported as tampered with. (Before,
/// the head was read before the records: a commit landing in between was
/// reported as "records after the head were added".)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_under_concurrent_load_reports_intact() {
    const WRITERS: usize = 4;
    const EACH: usize = 1200;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let root = RootKey::from_bytes(&[7; 32]).unwrap();
    let kms = Arc::new(Kms::open(store.clone(), root, Arc::new(SystemClock), KmsConfig::default()).unwrap());
    let key = kms.create_key(&caller(0), Default::default()).await.unwrap().meta.id.to_string();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (kms, key, done) = (kms.clone(), key.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                kms.encrypt(&caller(w * 100_000 + i), &key, Plaintext::new(vec![1]), HashMap::new())
                    .await
                    .unwrap();
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // Walk again and again while the writers commit.
    let walker_done = done.clone();
    let walks = tokio::task::spawn_blocking(move || {
        let mut walks = 0;
        while walker_done.load(std::sync::atomic::Ordering::SeqCst) < WRITERS {
            let r = verify_chain(&*store).unwrap();
            assert!(r.intact(), "false alarm under load (walk {walks}): {r:?}");
            walks += 1;
        }
        walks
    })
    .await
    .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(walks > 0);
    // Release the store before the process exits (RocksDB must not outlive main).
    kms.audit_log().stop(std::time::Duration::from_secs(5));
}
