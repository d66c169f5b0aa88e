//! Use cases over the in-memory store: concurrency of lifecycle changes and
//! fail-closed behaviour, without a socket.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{caller, open, open_with};
use keyward_core::testing::{FaultyStore, ManualClock, MemoryStore};
use keyward_core::{ErrorKind, KeyView, Kms, KmsConfig, Store};
use keyward_crypto::{Plaintext, RootKey};

fn kms(store: Arc<dyn Store>) -> Kms {
    open(&store, &ManualClock::at(1_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_never_reuse_a_version() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = Arc::new(kms(store.clone()));
    let KeyView { meta, .. } = kms.create_key(&caller(), Default::default()).await.unwrap();
    let id = meta.id.to_string();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (kms, id) = (kms.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            kms.rotate_key(&caller(), &id).await.unwrap().meta.primary_version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (2..=21).collect::<Vec<_>>());
    // The stored record agrees with memory, and every version still decrypts.
    let stored = store.load_keys().unwrap();
    assert_eq!(stored[0].meta.primary_version, 21);
    assert_eq!(stored[0].wrapped.len(), 21);
}

#[tokio::test]
async fn wrong_root_key_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    drop(kms(store.clone()));
    let other = RootKey::from_bytes(&[2; 32]).unwrap();
    let e = Kms::open(store, other, Arc::new(ManualClock::at(0)), KmsConfig::default()).unwrap_err();
    assert!(e.to_string().contains("root key does not match"));
}

#[tokio::test]
async fn failed_audit_write_returns_nothing_and_changes_nothing() {
    let (faulty, faults) = FaultyStore::new(Arc::new(MemoryStore::new()));
    let store: Arc<dyn Store> = Arc::new(faulty);
    let kms = kms(store.clone());
    let KeyView { meta, .. } = kms.create_key(&caller(), Default::default()).await.unwrap();
    let id = meta.id.to_string();
    faults.fail_writes.store(true, Ordering::SeqCst);
    let e = kms.encrypt(&caller(), &id, Plaintext::new(b"x".to_vec()), HashMap::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let e = kms.rotate_key(&caller(), &id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(!*kms.audit_log().health().borrow());
    faults.fail_writes.store(false, Ordering::SeqCst);
    let KeyView { meta: m, .. } = kms.describe_key(&caller(), &id).await.unwrap();
    assert_eq!(m.primary_version, 1, "the failed rotation was not applied in memory");
    assert_eq!(store.load_keys().unwrap()[0].meta.primary_version, 1);
    assert!(*kms.audit_log().health().borrow());
    // Sequence numbers continue without gaps: create, describe.
    let r = keyward_core::verify_chain(&*store).unwrap();
    assert!(r.intact());
    assert_eq!(r.records_checked, 2);
}

/// Counts audit batches.
#[derive(Debug, Default)]
struct Batches(std::sync::Mutex<Vec<usize>>);

impl keyward_core::AuditObserver for Batches {
    fn committed(&self, records: usize, _: std::time::Duration) {
        self.0.lock().unwrap().push(records);
    }
    fn failed(&self, _: usize, _: std::time::Duration) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_waits_for_records_of_requests_in_flight_and_only_for_those() {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let batches = Arc::new(Batches::default());
    let mut config = KmsConfig::default();
    config.audit.in_flight = Some(in_flight.clone());
    config.audit.observer = Some(batches.clone());
    // Far longer than the test: the wait must end because the records came.
    config.audit.linger = std::time::Duration::from_secs(30);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = Arc::new(open_with(&store, &ManualClock::at(1_000), config));
    let encrypt = |kms: Arc<Kms>, key: String| async move {
        kms.encrypt(&caller(), &key, Plaintext::new(b"x".to_vec()), HashMap::new()).await.unwrap()
    };
    // A lone request never waits (else this would take 30 s).
    in_flight.store(1, Ordering::SeqCst);
    let KeyView { meta, .. } = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        kms.create_key(&caller(), Default::default()),
    )
    .await
    .expect("no linger for a lone request")
    .unwrap();
    let key = meta.id.to_string();
    // Three in flight: the first record waits for the second (the third is
    // allowed to be elsewhere), and both share one write.
    in_flight.store(3, Ordering::SeqCst);
    let first = tokio::spawn(encrypt(kms.clone(), key.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = tokio::spawn(encrypt(kms.clone(), key.clone()));
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        first.await.unwrap();
        second.await.unwrap();
    })
    .await
    .expect("the batch was written once both records arrived");
    assert_eq!(*batches.0.lock().unwrap(), vec![1, 2]);
}

/// The newest audit record.
fn newest(store: &Arc<dyn Store>) -> keyward_core::AuditRecord {
    let q = keyward_core::AuditQuery { limit: 1, ..Default::default() };
    store.query_audit(&q).unwrap().records.remove(0).record
}

#[tokio::test]
async fn every_refusal_is_recorded_with_the_key_it_concerned_and_its_code() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = kms(store.clone());
    let input = keyward_core::CreateKeyInput { alias: Some("alias/known".into()), ..Default::default() };
    let id = kms.create_key(&caller(), input).await.unwrap().meta.id.to_string();
    // A user with no grant at all, and no admin role.
    let user = keyward_core::Caller {
        principal: "user".into(),
        policy: Arc::new(keyward_core::Policy::new([keyward_core::Role::User].into(), Vec::new())),
        ..caller()
    };
    let check = |code: &str, alias: Option<&str>| {
        let r = newest(&store);
        assert_eq!(
            (r.key_id.as_deref(), r.outcome.as_str(), r.alias.as_deref()),
            (Some(id.as_str()), code, alias),
            "{r:?}"
        );
    };

    // PERMISSION_DENIED on a known key, by id and by alias.
    let e = kms.encrypt(&user, &id, Plaintext::new(b"x".to_vec()), HashMap::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    check("PERMISSION_DENIED", None);
    kms.describe_key(&user, "alias/known").await.unwrap_err();
    check("PERMISSION_DENIED", Some("alias/known"));
    kms.rotate_key(&user, &id).await.unwrap_err();
    check("PERMISSION_DENIED", None);
    // Alias changes by a non-admin name the key (and the alias) too.
    kms.create_alias(&user, "alias/new", &id).await.unwrap_err();
    check("PERMISSION_DENIED", Some("alias/new"));
    kms.delete_alias(&user, "alias/known").await.unwrap_err();
    check("PERMISSION_DENIED", Some("alias/known"));
    // An audit query by a non-auditor names the key it filtered on.
    let q = keyward_core::AuditQueryInput { key: Some("alias/known".into()), ..Default::default() };
    kms.query_audit(&user, q).await.unwrap_err();
    check("PERMISSION_DENIED", Some("alias/known"));
    // Arguments refused before the key is looked up still name it.
    let e = kms.schedule_key_deletion(&caller(), &id, Some(99)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    check("INVALID_ARGUMENT", None);
    kms.schedule_key_version_destruction(&caller(), "alias/known", 1, Some(999)).await.unwrap_err();
    check("INVALID_ARGUMENT", Some("alias/known"));
    // FAILED_PRECONDITION: the primary version cannot be disabled.
    let e = kms.disable_key_version(&caller(), &id, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    check("FAILED_PRECONDITION", None);
    // NOT_FOUND on a version of a known key.
    kms.enable_key_version(&caller(), &id, 7).await.unwrap_err();
    check("NOT_FOUND", None);
}

/// UpdateAlias repoints an alias in one write; ListAliases pages by name,
/// filters by key, and is one audited read; TagResource's label update
/// sets and removes labels within the CreateKey bounds.
#[tokio::test]
async fn aliases_repoint_and_list_and_labels_update() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let kms = open(&store, &clock);
    let input =
        |alias: &str| keyward_core::CreateKeyInput { alias: Some(alias.into()), ..Default::default() };
    let a = kms.create_key(&caller(), input("alias/a")).await.unwrap().meta.id;
    let b = kms.create_key(&caller(), input("alias/b")).await.unwrap().meta.id;
    kms.create_alias(&caller(), "alias/c", &a.to_string()).await.unwrap();

    let moved = kms.update_alias(&caller(), "alias/c", &b.to_string()).await.unwrap();
    assert_eq!(moved.meta.id, b);
    assert_eq!(newest(&store).operation, "UpdateAlias");
    assert_eq!(kms.peek_key("alias/c").unwrap().0, b);
    let e = kms.update_alias(&caller(), "alias/missing", &b.to_string()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let (all, more) = kms.list_aliases(&caller(), None, None, 10).await.unwrap();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!((names, more), (vec!["alias/a", "alias/b", "alias/c"], false));
    assert_eq!(newest(&store).operation, "ListAliases");
    let (page, more) = kms.list_aliases(&caller(), None, Some("alias/a"), 1).await.unwrap();
    assert_eq!((page, more), (vec![("alias/b".to_string(), b)], true));
    let (of_b, _) = kms.list_aliases(&caller(), Some("alias/b"), None, 10).await.unwrap();
    assert_eq!(of_b, vec![("alias/b".to_string(), b), ("alias/c".to_string(), b)]);

    let set = [("team".to_string(), "pay".to_string()), ("env".to_string(), "prod".to_string())].into();
    let v = kms.update_key_labels(&caller(), &a.to_string(), set, Vec::new()).await.unwrap();
    assert_eq!(v.meta.labels.len(), 2);
    let v = kms
        .update_key_labels(&caller(), &a.to_string(), Default::default(), vec!["env".into()])
        .await
        .unwrap();
    assert_eq!(v.meta.labels.keys().collect::<Vec<_>>(), vec!["team"]);
    let too_long = [("k".repeat(64), "v".to_string())].into();
    let e = kms.update_key_labels(&caller(), &a.to_string(), too_long, Vec::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}
