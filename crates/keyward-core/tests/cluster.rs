//! Cluster mode over the in-memory shared store: several `Kms` nodes in one
//! process, each with its own local store (audit), following one
//! `MemoryShared`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::caller;
use keyward_core::testing::{MemoryShared, MemoryStore, SharedNode};
use keyward_core::{
    ClusterConfig, CreateKeyInput, ErrorKind, Kms, KmsConfig, KmsError, OpenError, Store, SystemClock,
};
use keyward_crypto::{Plaintext, RootKey};

const ROOT: [u8; 32] = [9; 32];

struct Node {
    kms: Arc<Kms>,
    link: SharedNode,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn config(bound_ms: u64) -> ClusterConfig {
    ClusterConfig {
        freshness_bound: Duration::from_millis(bound_ms),
        probe_every: Duration::from_millis(bound_ms / 8),
    }
}

/// Opens a node over `local` and `link` with root key `root`.
async fn open(local: Arc<dyn Store>, link: SharedNode, root: [u8; 32]) -> Result<Kms, OpenError> {
    let root = RootKey::from_bytes(&root).unwrap();
    Kms::open_cluster(local, Arc::new(link), root, Arc::new(SystemClock), KmsConfig::default(), config(2000))
        .await
}

async fn join(shared: &MemoryShared, bound_ms: u64) -> Node {
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let link = shared.node();
    let kms = Kms::open_cluster(
        local,
        Arc::new(link.clone()),
        RootKey::from_bytes(&ROOT).unwrap(),
        Arc::new(SystemClock),
        KmsConfig::default(),
        config(bound_ms),
    )
    .await
    .unwrap();
    let kms = Arc::new(kms);
    let tasks = kms.cluster_tasks().into_iter().map(tokio::spawn).collect();
    Node { kms, link, tasks }
}

async fn create(kms: &Kms) -> String {
    kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap().meta.id.to_string()
}

async fn encrypt(kms: &Kms, key: &str) -> Result<Vec<u8>, KmsError> {
    kms.encrypt(&caller(), key, Plaintext::new(b"shared".to_vec()), HashMap::new())
        .await
        .map(|o| o.ciphertext)
}

/// Polls `f` every 10 ms until it holds, for at most 5 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_key_made_on_one_node_serves_on_every_node() {
    let shared = MemoryShared::new();
    let (a, b, c) = (join(&shared, 2000).await, join(&shared, 2000).await, join(&shared, 2000).await);
    let key = create(&a.kms).await;
    a.kms.create_alias(&caller(), "alias/app", &key).await.unwrap();
    eventually("b and c know the alias", async || {
        b.kms.peek_key("alias/app").is_ok() && c.kms.peek_key("alias/app").is_ok()
    })
    .await;
    // Made on b, opened on c and a.
    let ct = encrypt(&b.kms, "alias/app").await.unwrap();
    for n in [&a, &c] {
        let out = n.kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap();
        assert_eq!(out.plaintext.expose_secret(), b"shared");
    }
    // A rotation on c is used by a, and b still opens the old ciphertext.
    c.kms.rotate_key(&caller(), &key).await.unwrap();
    eventually("a uses version 2", async || a.kms.peek_key(&key).unwrap().2 == 2).await;
    let ct2 = encrypt(&a.kms, &key).await.unwrap();
    let out = b.kms.decrypt(&caller(), &ct2, HashMap::new(), None).await.unwrap();
    assert_eq!(out.key_version, 2);
    assert_eq!(b.kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap().key_version, 1);
    // An alias taken on one node cannot be taken again on another.
    eventually("b knows version 2", async || b.kms.peek_key(&key).unwrap().2 == 2).await;
    let e = b.kms.create_alias(&caller(), "alias/app", &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
}

#[tokio::test]
async fn a_node_that_lost_a_race_decides_again() {
    let shared = MemoryShared::new();
    let (a, b) = (join(&shared, 2000).await, join(&shared, 2000).await);
    let key = create(&a.kms).await;
    eventually("b knows the key", async || b.kms.peek_key(&key).is_ok()).await;
    // Both nodes rotate the same key at once, many times: every rotation
    // succeeds and makes its own version, none twice.
    let rounds = 10_u32;
    let (ra, rb) = keyward_core::testing::rotate_on_both(&a.kms, &b.kms, &caller(), &key, rounds).await;
    let mut all: Vec<u32> = ra.iter().chain(&rb).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (2..=2 + 2 * rounds - 1).collect::<Vec<u32>>(), "a: {ra:?}, b: {rb:?}");
    let (stored, _) = shared.key(key.parse().unwrap()).unwrap();
    assert_eq!(stored.meta.primary_version, 1 + 2 * rounds);
    assert_eq!(stored.meta.versions.len() as u32, 1 + 2 * rounds);
    assert_eq!(stored.wrapped.len() as u32, 1 + 2 * rounds);
    // Each node recorded its own rotations, each OK.
    for (n, mine) in [(&a, &ra), (&b, &rb)] {
        let page = n
            .kms
            .query_audit(
                &caller(),
                keyward_core::AuditQueryInput {
                    operation: Some("RotateKey".into()),
                    page_size: Some(100),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let ok = page.records.iter().filter(|r| r.record.outcome == "OK").count();
        assert_eq!(ok, mine.len(), "{:?}", page.records);
    }
}

#[tokio::test]
async fn a_cut_off_node_fails_closed_and_catches_up() {
    let shared = MemoryShared::new();
    let (a, b) = (join(&shared, 400).await, join(&shared, 400).await);
    let key = create(&a.kms).await;
    eventually("b knows the key", async || b.kms.peek_key(&key).is_ok()).await;
    let ct = encrypt(&b.kms, &key).await.unwrap();

    // b is cut off; a disables the key. Within the bound b refuses
    // everything (it cannot know what changed), as UNAVAILABLE.
    b.link.cut_off(true);
    a.kms.disable_key(&caller(), &key).await.unwrap();
    eventually("b is not current", async || !b.kms.is_current()).await;
    let e = encrypt(&b.kms, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("current with the cluster"), "{e}");
    let e = b.kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = b.kms.rotate_key(&caller(), &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // Back in touch: b is current again and knows the key is disabled.
    b.link.cut_off(false);
    eventually("b is current", async || b.kms.is_current()).await;
    let e = encrypt(&b.kms, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    a.kms.enable_key(&caller(), &key).await.unwrap();
    eventually("b serves the key again", async || encrypt(&b.kms, &key).await.is_ok()).await;
}

#[tokio::test]
async fn a_compacted_watch_reloads_every_key() {
    let shared = MemoryShared::new();
    let (a, b) = (join(&shared, 2000).await, join(&shared, 2000).await);
    let key = create(&a.kms).await;
    eventually("b knows the key", async || b.kms.peek_key(&key).is_ok()).await;
    b.link.cut_off(true);
    a.kms.rotate_key(&caller(), &key).await.unwrap();
    let other = create(&a.kms).await;
    a.kms.create_alias(&caller(), "alias/new", &other).await.unwrap();
    shared.compact();
    b.link.cut_off(false);
    eventually("b reloaded", async || {
        b.kms.peek_key("alias/new").is_ok() && b.kms.peek_key(&key).unwrap().2 == 2
    })
    .await;
    encrypt(&b.kms, "alias/new").await.unwrap();
}

#[tokio::test]
async fn a_node_with_another_root_key_or_local_keys_refuses_to_join() {
    let shared = MemoryShared::new();
    let _a = join(&shared, 2000).await;
    let other = open(Arc::new(MemoryStore::new()), shared.node(), [7; 32]).await.unwrap_err();
    assert!(matches!(other, OpenError::ClusterRootKey), "{other}");
    assert!(other.to_string().contains("same root key"), "{other}");

    // A single-node folder with keys is not silently joined.
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let single = Kms::open(
        local.clone(),
        RootKey::from_bytes(&ROOT).unwrap(),
        Arc::new(SystemClock),
        KmsConfig::default(),
    )
    .unwrap();
    create(&single).await;
    single.audit_log().stop(Duration::from_secs(5));
    drop(single);
    let e = open(local, shared.node(), ROOT).await.unwrap_err();
    assert!(matches!(e, OpenError::LocalKeys(1)), "{e}");
}
