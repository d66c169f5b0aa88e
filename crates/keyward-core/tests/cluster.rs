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

/// A new node's settings: named n1, n2, ... in the order they are made.
fn config(bound_ms: u64) -> ClusterConfig {
    static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    ClusterConfig {
        freshness_bound: Duration::from_millis(bound_ms),
        probe_every: Duration::from_millis(bound_ms / 8),
        lease_ttl: Duration::from_millis(300),
        ..ClusterConfig::new(format!("n{n}"))
    }
}

/// Opens a node over `local` and `link` with root key `root`.
async fn open(local: Arc<dyn Store>, link: SharedNode, root: [u8; 32]) -> Result<Kms, OpenError> {
    let root = RootKey::from_bytes(&root).unwrap();
    Kms::open_cluster(local, Arc::new(link), root, Arc::new(SystemClock), KmsConfig::default(), config(2000))
        .await
}

async fn join(shared: &MemoryShared, bound_ms: u64) -> Node {
    join_as(shared, Arc::new(MemoryStore::new()), config(bound_ms)).await
}

/// A node over the local store `local`, with `config` (its name).
async fn join_as(shared: &MemoryShared, local: Arc<dyn Store>, config: ClusterConfig) -> Node {
    join_with(shared, local, config, Arc::new(SystemClock), KmsConfig::default()).await
}

async fn join_with(
    shared: &MemoryShared,
    local: Arc<dyn Store>,
    config: ClusterConfig,
    clock: Arc<dyn keyward_core::Clock>,
    settings: KmsConfig,
) -> Node {
    let link = shared.node();
    let kms = Kms::open_cluster(
        local,
        Arc::new(link.clone()),
        RootKey::from_bytes(&ROOT).unwrap(),
        clock,
        settings,
        config,
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

/// Every record in `store`'s log, oldest first.
fn records(store: &dyn Store) -> Vec<keyward_core::AuditRecord> {
    let mut out = Vec::new();
    store
        .scan_audit(1, &mut |_, bytes| {
            out.push(store.decode_audit(bytes).unwrap());
            true
        })
        .unwrap();
    out
}

fn successes<'a>(records: &'a [keyward_core::AuditRecord], op: &str) -> Vec<&'a keyward_core::AuditRecord> {
    records.iter().filter(|r| r.operation == op && r.outcome == "OK").collect()
}

#[tokio::test]
async fn a_change_made_without_its_local_record_is_recorded_before_the_next_change_and_at_restart() {
    use keyward_core::testing::FaultyStore;
    use std::sync::atomic::Ordering;
    let shared = MemoryShared::new();
    let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (faulty, faults) = FaultyStore::new(inner.clone());
    let local: Arc<dyn Store> = Arc::new(faulty);
    let named = |name: &str| ClusterConfig { node_id: name.into(), ..config(2000) };
    let a = join_as(&shared, local.clone(), named("a")).await;
    let key = create(&a.kms).await;
    let id: keyward_core::KeyId = key.parse().unwrap();

    // The local disk fails after the shared write: the caller is told the
    // audit log is unavailable, and the rotation is in force cluster-wide.
    faults.fail_writes.store(true, Ordering::SeqCst);
    let mut rotate = caller();
    rotate.request_id = "rotate-1".into();
    let e = a.kms.rotate_key(&rotate, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(shared.key(id).unwrap().0.meta.primary_version, 2);
    faults.fail_writes.store(false, Ordering::SeqCst);
    assert!(successes(&records(&*inner), "RotateKey").is_empty());

    // The node's next change first appends the missing record.
    a.kms.disable_key(&caller(), &key).await.unwrap();
    let log = records(&*inner);
    let rotated = successes(&log, "RotateKey");
    assert_eq!(rotated.len(), 1, "{log:?}");
    assert_eq!(rotated[0].request_id, "rotate-1");
    assert_eq!(rotated[0].node_id.as_deref(), Some("a"));
    assert_eq!(rotated[0].key_version, Some(2));
    let pos = |op: &str| log.iter().position(|r| r.operation == op && r.outcome == "OK").unwrap();
    assert!(pos("RotateKey") < pos("DisableKey"), "{log:?}");

    // The same, when the node stops before its next change: it appends the
    // record when it starts again, once.
    faults.fail_writes.store(true, Ordering::SeqCst);
    let mut enable = caller();
    enable.request_id = "enable-1".into();
    a.kms.enable_key(&enable, &key).await.unwrap_err();
    faults.fail_writes.store(false, Ordering::SeqCst);
    a.kms.audit_log().stop(Duration::from_secs(5));
    drop(a);
    let a = join_as(&shared, local.clone(), named("a")).await;
    let enabled =
        records(&*inner).into_iter().filter(|r| r.operation == "EnableKey" && r.outcome == "OK").count();
    assert_eq!(enabled, 1);
    a.kms.audit_log().stop(Duration::from_secs(5));
    drop(a);
    let _a = join_as(&shared, local, named("a")).await;
    let log = records(&*inner);
    assert_eq!(successes(&log, "EnableKey").len(), 1, "appended once: {log:?}");
    assert_eq!(successes(&log, "EnableKey")[0].request_id, "enable-1");
    assert!(keyward_core::verify_chain(&*inner).unwrap().intact());

    // Every record a cluster node writes names it.
    assert!(log.iter().all(|r| r.node_id.as_deref() == Some("a")), "{log:?}");
}

#[tokio::test]
async fn a_change_whose_answer_was_lost_is_recorded_by_the_heartbeat_without_a_next_change() {
    let shared = MemoryShared::new();
    let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let named = ClusterConfig { node_id: "lost".into(), ..config(2000) };
    let a = join_as(&shared, inner.clone(), named).await;
    let key = create(&a.kms).await;
    let id: keyward_core::KeyId = key.parse().unwrap();
    // The rotation applies, but the node is told its outcome is unknown
    // (etcd's leader died mid-proposal): the caller gets an error, and the
    // node makes no other change.
    a.link.lose_next_answer();
    let mut rotate = caller();
    rotate.request_id = "rotate-lost".into();
    a.kms.rotate_key(&rotate, &key).await.unwrap_err();
    assert_eq!(shared.key(id).unwrap().0.meta.primary_version, 2, "in force");
    // Within a heartbeat or two (lease 300 ms, a beat every 100 ms), the
    // change in force has its record in the node's log, once.
    eventually("the lost change is recorded", async || successes(&records(&*inner), "RotateKey").len() == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = records(&*inner);
    let rotated = successes(&log, "RotateKey");
    assert_eq!(rotated.len(), 1, "{log:?}");
    assert_eq!(rotated[0].request_id, "rotate-lost");
    assert_eq!(rotated[0].key_version, Some(2));
    assert!(keyward_core::verify_chain(&*inner).unwrap().intact());
}

#[tokio::test]
async fn a_pending_record_changed_in_the_shared_store_refuses_the_start() {
    let shared = MemoryShared::new();
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let named = ClusterConfig { node_id: "a".into(), ..config(2000) };
    let a = join_as(&shared, local.clone(), named.clone()).await;
    create(&a.kms).await;
    a.kms.audit_log().stop(Duration::from_secs(5));
    drop(a);
    shared.tamper_pending("a");
    let e = Kms::open_cluster(
        local,
        Arc::new(shared.node()),
        RootKey::from_bytes(&ROOT).unwrap(),
        Arc::new(SystemClock),
        KmsConfig::default(),
        named,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, OpenError::Tampered(_)), "{e}");
    assert!(e.to_string().contains("pending lifecycle record"), "{e}");
}

#[tokio::test]
async fn scheduled_work_runs_on_the_sweeper_leader_only_and_a_paused_ex_leader_changes_nothing() {
    use keyward_core::testing::ManualClock;
    use keyward_core::RotationInput;
    const HOUR: i64 = 3_600_000;
    let shared = MemoryShared::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let node = |name: &str| ClusterConfig { node_id: name.into(), ..config(2000) };
    let (sa, sb): (Arc<dyn Store>, Arc<dyn Store>) =
        (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let a = join_with(&shared, sa.clone(), node("a"), Arc::new(clock.clone()), KmsConfig::default()).await;
    eventually("a leads the sweeper", async || a.kms.leads_sweeper()).await;
    let b = join_with(&shared, sb.clone(), node("b"), Arc::new(clock.clone()), KmsConfig::default()).await;
    let key = create(&a.kms).await;
    let id: keyward_core::KeyId = key.parse().unwrap();
    let policy = RotationInput { period_ms: Some(HOUR), ..Default::default() };
    a.kms.update_rotation_policy(&caller(), &key, policy).await.unwrap();
    eventually("b knows the policy", async || {
        b.kms.peek_key(&key).is_ok_and(|_| shared.key(id).unwrap().0.meta.rotation.period_ms == Some(HOUR))
    })
    .await;
    let status = b.kms.cluster_status(&caller()).await.unwrap();
    assert_eq!(status.sweeper_leader.as_deref(), Some("a"));
    eventually("both nodes are published", async || {
        b.kms.cluster_status(&caller()).await.unwrap().nodes.len() == 2
    })
    .await;

    // Due: only the leader does it, once.
    clock.advance_ms(HOUR + 1);
    assert_eq!(b.kms.run_due().await.unwrap(), 0, "b does not lead");
    assert_eq!(a.kms.run_due().await.unwrap(), 1);
    assert_eq!(a.kms.run_due().await.unwrap(), 0, "done already");
    assert_eq!(shared.key(id).unwrap().0.meta.primary_version, 2);

    // a is paused past its lease with the next rotation in hand: b takes
    // over, and a's late write is refused by the fence.
    clock.advance_ms(HOUR + 1);
    a.link.cut_off(true);
    let late = {
        let kms = a.kms.clone();
        tokio::spawn(async move { kms.run_due().await })
    };
    eventually("b leads the sweeper", async || b.kms.leads_sweeper()).await;
    a.link.cut_off(false);
    let e = late.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("no longer leads the sweeper"), "{e}");
    assert_eq!(shared.key(id).unwrap().0.meta.primary_version, 2, "the fenced write changed nothing");
    assert_eq!(b.kms.run_due().await.unwrap(), 1);
    assert_eq!(shared.key(id).unwrap().0.meta.primary_version, 3);
    eventually("a knows it no longer leads", async || !a.kms.leads_sweeper()).await;
    assert_eq!(a.kms.run_due().await.unwrap(), 0);

    // Each scheduled rotation is recorded once, as done, across the nodes.
    let rotations: usize = [&sa, &sb]
        .iter()
        .map(|s| {
            let log = records(&***s);
            log.iter()
                .filter(|r| r.operation == "RotateKey" && r.principal == "system" && r.outcome == "OK")
                .count()
        })
        .sum();
    assert_eq!(rotations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_cap_holds_across_nodes_and_each_exhaustion_rotates_once() {
    use keyward_core::RotationInput;
    const CAP: u64 = 40;
    let shared = MemoryShared::new();
    let stores: Vec<Arc<dyn Store>> =
        (0..3).map(|_| Arc::new(MemoryStore::new()) as Arc<dyn Store>).collect();
    let mut nodes = Vec::new();
    for s in &stores {
        nodes.push(join_as(&shared, s.clone(), config(2000)).await);
    }
    let key = create(&nodes[0].kms).await;
    let cap = RotationInput { max_encryptions_per_version: Some(CAP), ..Default::default() };
    nodes[0].kms.update_rotation_policy(&caller(), &key, cap).await.unwrap();
    eventually("every node knows the cap", async || {
        nodes.iter().all(|n| {
            n.kms.peek_key(&key).is_ok()
                && shared.key(key.parse().unwrap()).unwrap().0.meta.rotation.max_encryptions_per_version
                    == Some(CAP)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 3 nodes × 4 clients × 25 encryptions = 300 seals: several exhaustions.
    let mut clients = Vec::new();
    for n in &nodes {
        for _ in 0..4 {
            let (kms, key) = (n.kms.clone(), key.clone());
            clients.push(tokio::spawn(async move {
                let mut versions = Vec::new();
                for _ in 0..25 {
                    let ct = kms
                        .encrypt(&caller(), &key, Plaintext::new(b"capped".to_vec()), HashMap::new())
                        .await
                        .unwrap()
                        .ciphertext;
                    versions
                        .push(kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap().key_version);
                }
                versions
            }));
        }
    }
    let mut per_version: HashMap<u32, u64> = HashMap::new();
    for c in clients {
        for v in c.await.unwrap() {
            *per_version.entry(v).or_default() += 1;
        }
    }
    assert_eq!(per_version.values().sum::<u64>(), 300);
    assert!(per_version.values().all(|n| *n <= CAP), "a version sealed past its cap: {per_version:?}");
    let primary = shared.key(key.parse().unwrap()).unwrap().0.meta.primary_version;
    assert!(primary as u64 >= 300 / CAP, "at least {} versions: {primary}", 300 / CAP);
    // One rotation per exhaustion, recorded once across the nodes, and the
    // audit logs count exactly the seals each version made.
    let mut rotations = 0;
    let mut recorded: HashMap<u32, u64> = HashMap::new();
    for s in &stores {
        for r in records(&**s) {
            if r.operation == "RotateKey" && r.principal == "system" && r.outcome == "OK" {
                rotations += 1;
            }
            if r.operation == "Encrypt" && r.outcome == "OK" {
                *recorded.entry(r.key_version.unwrap()).or_default() += 1;
            }
        }
    }
    assert_eq!(rotations, primary - 1, "{per_version:?}");
    assert_eq!(recorded, per_version);
    eprintln!("cap {CAP}: 300 seals over {primary} versions: {per_version:?}");
}

/// A node reachable by the others through `peers` at its own name, signing
/// checkpoints every 50 ms.
async fn join_peered(
    shared: &MemoryShared,
    peers: &keyward_core::testing::LocalPeers,
    local: Arc<dyn Store>,
) -> Node {
    let mut c = config(2000);
    c.address = c.node_id.clone();
    c.peers = Some(Arc::new(peers.clone()));
    let address = c.address.clone();
    let settings = KmsConfig {
        audit: keyward_core::AuditLogConfig {
            checkpoint_every: Duration::from_millis(50),
            ..Default::default()
        },
        ..Default::default()
    };
    let node = join_with(shared, local, c, Arc::new(SystemClock), settings).await;
    peers.register(&address, &node.kms);
    node
}

fn audit_query(page_size: u32, page_token: Option<String>) -> keyward_core::AuditQueryInput {
    keyward_core::AuditQueryInput { page_size: Some(page_size), page_token, ..Default::default() }
}

#[tokio::test]
async fn any_node_answers_for_every_nodes_audit_log() {
    let shared = MemoryShared::new();
    let peers = keyward_core::testing::LocalPeers::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(join_peered(&shared, &peers, Arc::new(MemoryStore::new())).await);
    }
    let mut names = Vec::new();
    for n in &nodes {
        names.push(n.kms.cluster_status(&caller()).await.unwrap().this_node);
    }
    let key = create(&nodes[0].kms).await;
    eventually("every node knows the key", async || nodes.iter().all(|n| n.kms.peek_key(&key).is_ok())).await;
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..=i {
            encrypt(&n.kms, &key).await.unwrap();
        }
    }
    eventually("every node is published", async || {
        nodes[0].kms.cluster_status(&caller()).await.unwrap().nodes.len() == 3
    })
    .await;

    // One node's query returns the Encrypt records of all three, newest first.
    let enc = keyward_core::AuditQueryInput { operation: Some("Encrypt".into()), ..audit_query(100, None) };
    let page = nodes[1].kms.query_audit(&caller(), enc.clone()).await.unwrap();
    assert!(page.unreachable_nodes.is_empty());
    let by: Vec<&str> = page.records.iter().map(|r| r.record.node_id.as_deref().unwrap()).collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(by.iter().filter(|n| **n == name).count(), i + 1, "{by:?}");
    }
    let times: Vec<i64> = page.records.iter().map(|r| r.record.time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    // A node filter asks that node only.
    let only = keyward_core::AuditQueryInput { node_id: Some(names[2].clone()), ..enc.clone() };
    let page = nodes[0].kms.query_audit(&caller(), only).await.unwrap();
    assert_eq!(page.records.len(), 3);

    // Pages of two, oldest first, return every record of every node once
    // (filtered: each page's own QueryAuditLog records would outrun it).
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let q = keyward_core::AuditQueryInput {
            oldest_first: true,
            ..keyward_core::AuditQueryInput { page_token: token, page_size: Some(2), ..enc.clone() }
        };
        let page = nodes[2].kms.query_audit(&caller(), q).await.unwrap();
        assert!(page.records.len() <= 2);
        seen.extend(page.records.iter().map(|r| (r.record.node_id.clone().unwrap(), r.record.seq)));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no record twice: {seen:?}");
    assert_eq!(seen.len(), 6, "every Encrypt of the three nodes: {seen:?}");
    for n in &names {
        let mine: Vec<u64> = seen.iter().filter(|(m, _)| m == n).map(|(_, s)| *s).collect();
        assert!(!mine.is_empty());
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{n}: {mine:?}");
    }
    let bad = nodes[0].kms.query_audit(&caller(), audit_query(2, Some("17".into()))).await.unwrap_err();
    assert!(bad.to_string().contains("page_token"), "{bad}");

    // Each peer recorded what it was asked, under the asking node's name.
    let asked = records_of(
        &nodes[2].kms,
        keyward_core::AuditQueryInput {
            principal: Some(format!("node:{}", names[1])),
            node_id: Some(names[2].clone()),
            ..audit_query(100, None)
        },
    )
    .await;
    assert!(asked.iter().any(|r| r.operation == "QueryAuditLog" && r.outcome == "OK"), "{asked:?}");

    // Every node's chain verifies, through any node.
    eventually("every node published a checkpoint", async || {
        names.iter().all(|n| shared.published_checkpoint(n).is_some())
    })
    .await;
    let report = nodes[0].kms.verify_audit(&caller()).await.unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.nodes.len(), 3);
    assert!(report
        .nodes
        .iter()
        .all(|n| n.reachable && n.records_checked > 0 && n.published_checkpoint_seq > 0));

    // A stopped node is reported, not silently left out.
    peers.remove(&names[2]);
    let page = nodes[0].kms.query_audit(&caller(), enc).await.unwrap();
    assert_eq!(page.unreachable_nodes, vec![names[2].clone()]);
    assert_eq!(page.records.len(), 3, "the other two nodes' records");
    let report = nodes[0].kms.verify_audit(&caller()).await.unwrap();
    assert!(!report.intact());
    let gone = report.nodes.iter().find(|n| n.node_id == names[2]).unwrap();
    assert!(!gone.reachable && gone.problem.as_deref().unwrap().contains("unreachable"), "{gone:?}");
}

async fn records_of(kms: &Kms, q: keyward_core::AuditQueryInput) -> Vec<keyward_core::AuditRecord> {
    kms.query_audit(&caller(), q).await.unwrap().records.into_iter().map(|r| r.record).collect()
}

#[tokio::test]
async fn a_node_restored_from_an_older_copy_of_its_log_is_reported_behind() {
    let shared = MemoryShared::new();
    let peers = keyward_core::testing::LocalPeers::default();
    let a = join_peered(&shared, &peers, Arc::new(MemoryStore::new())).await;
    let old = Arc::new(MemoryStore::new());
    let b = join_peered(&shared, &peers, old.clone()).await;
    let b_name = b.kms.cluster_status(&caller()).await.unwrap().this_node;
    let key = create(&a.kms).await;
    eventually("b knows the key", async || b.kms.peek_key(&key).is_ok()).await;
    // b's log as it was, then more records and a newer published checkpoint.
    let copy: Arc<dyn Store> = Arc::new(old.snapshot_copy());
    let copied_to = copy.audit_head().unwrap().map_or(0, |h| h.seq);
    for _ in 0..5 {
        encrypt(&b.kms, &key).await.unwrap();
    }
    eventually("b publishes a checkpoint past the copy", async || {
        shared.published_checkpoint(&b_name).is_some_and(|c| c.seq > copied_to)
    })
    .await;
    peers.remove(&b_name);
    drop(b);
    // b comes back on the old copy: it says so, and VerifyAuditLog reports it.
    let mut c = config(2000);
    c.node_id = b_name.clone();
    c.address = b_name.clone();
    c.peers = Some(Arc::new(peers.clone()));
    let b = join_with(&shared, copy, c, Arc::new(SystemClock), KmsConfig::default()).await;
    peers.register(&b_name, &b.kms);
    let report = a.kms.verify_audit(&caller()).await.unwrap();
    assert!(!report.intact(), "{report:?}");
    let nb = report.nodes.iter().find(|n| n.node_id == b_name).unwrap();
    assert!(nb.reachable && nb.behind, "{nb:?}");
    assert!(nb.problem.as_deref().unwrap().contains("older copy"), "{nb:?}");
    let na = report.nodes.iter().find(|n| n.node_id != b_name).unwrap();
    assert!(na.ok(), "{na:?}");
    // It publishes nothing newer, so the evidence stays.
    for _ in 0..3 {
        encrypt(&b.kms, &key).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(a.kms.verify_audit(&caller()).await.unwrap().nodes.iter().any(|n| n.behind));
}

#[tokio::test]
async fn a_peer_credential_from_another_root_key_for_another_node_or_too_old_is_refused() {
    use keyward_core::{peer_message, AuditQuery, PeerCall, PeerCredential, PEER_DOMAIN};
    let shared = MemoryShared::new();
    let peers = keyward_core::testing::LocalPeers::default();
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = join_peered(&shared, &peers, local.clone()).await;
    let name = a.kms.cluster_status(&caller()).await.unwrap().this_node;
    let now = keyward_core::Clock::now_ms(&keyward_core::SystemClock);
    let q = AuditQuery { limit: 10, ..Default::default() };
    let signed = |root: [u8; 32], to: &str, issued_ms: i64| {
        let mut c = PeerCredential {
            from_node: "n-other".into(),
            to_node: to.into(),
            issued_ms,
            request_id: "r-claimed".into(),
            principal: "mallory".into(),
            tag: [0; 32],
        };
        let key = keyward_crypto::RecordKey::derive(&RootKey::from_bytes(&root).unwrap());
        c.tag = key.tag(PEER_DOMAIN, &peer_message(&c, &PeerCall::Query(q.clone()))).0;
        c
    };
    let edge = || keyward_core::Caller {
        request_id: "r-edge".into(),
        principal: "unauthenticated".into(),
        ..caller()
    };
    for (cred, why) in [
        (signed([8; 32], &name, now), "does not verify"),
        (signed(ROOT, "n-elsewhere", now), "not this one"),
        (signed(ROOT, &name, now - 60_000), "away from this node's clock"),
        (PeerCredential { tag: [7; 32], ..signed(ROOT, &name, now) }, "does not verify"),
    ] {
        let e = a.kms.peer_query_audit(edge(), cred, q.clone()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let e = a.kms.peer_verify_audit(edge(), signed([8; 32], &name, now), 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    // The verifier's own signature with a different request is refused too.
    let other_q = AuditQuery { limit: 11, ..q.clone() };
    let e = a.kms.peer_query_audit(edge(), signed(ROOT, &name, now), other_q).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    // Refusals are recorded as the edge saw the caller, claiming nothing.
    let log = records(&*local);
    let refused: Vec<_> = log.iter().filter(|r| r.outcome == "UNAUTHENTICATED").collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|r| r.principal == "unauthenticated"), "{refused:?}");
    assert!(!log.iter().any(|r| r.principal == "mallory" || r.request_id == "r-claimed"), "{log:?}");
    // A good credential is served and recorded under the asking node.
    a.kms.peer_query_audit(edge(), signed(ROOT, &name, now), q.clone()).await.unwrap();
    let log = records(&*local);
    assert!(
        log.iter().any(|r| r.principal == "node:n-other" && r.request_id == "r-claimed" && r.outcome == "OK"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_single_node_folder_is_imported_into_an_empty_cluster_once() {
    let root = || RootKey::from_bytes(&ROOT).unwrap();
    let folder = Arc::new(MemoryStore::new());
    let single = Kms::open(folder.clone(), root(), Arc::new(SystemClock), KmsConfig::default()).unwrap();
    let a = create(&single).await;
    let b = create(&single).await;
    single.rotate_key(&caller(), &a).await.unwrap();
    single.create_alias(&caller(), "alias/moved", &b).await.unwrap();
    let ct = encrypt(&single, "alias/moved").await.unwrap();
    let ct_a = encrypt(&single, &a).await.unwrap();
    let records_before = records(&*folder).len();
    drop(single);

    let shared = MemoryShared::new();
    let report = keyward_core::import_into_cluster(&*folder, &shared.node(), &root()).await.unwrap();
    assert_eq!((report.keys, report.versions, report.aliases), (2, 3, 1), "{report:?}");
    assert_eq!(report.usage, 2, "one sealed version of each key: {report:?}");
    assert_eq!(records(&*folder).len(), records_before, "the folder is only read");

    // A node of the cluster serves the imported keys and aliases.
    let n = join(&shared, 2000).await;
    let out = n.kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap();
    assert_eq!(out.plaintext.expose_secret(), b"shared");
    assert_eq!(n.kms.decrypt(&caller(), &ct_a, HashMap::new(), None).await.unwrap().key_version, 2);
    assert_eq!(n.kms.peek_key("alias/moved").unwrap().0.to_string(), b);

    // Run again, it writes nothing; another folder's keys are refused.
    let again = keyward_core::import_into_cluster(&*folder, &shared.node(), &root()).await.unwrap();
    assert_eq!((again.keys, again.aliases, again.already_there, again.writes), (0, 0, 3, 0), "{again:?}");
    let other = Arc::new(MemoryStore::new());
    let o = Kms::open(other.clone(), root(), Arc::new(SystemClock), KmsConfig::default()).unwrap();
    create(&o).await;
    drop(o);
    let e = keyward_core::import_into_cluster(&*other, &shared.node(), &root()).await.unwrap_err();
    assert!(matches!(e, OpenError::ClusterNotEmpty(_)), "{e}");
    // Under another root key: refused before anything is read into the cluster.
    let wrong = RootKey::from_bytes(&[8; 32]).unwrap();
    let e =
        keyward_core::import_into_cluster(&*folder, &MemoryShared::new().node(), &wrong).await.unwrap_err();
    assert!(matches!(e, OpenError::WrongRootKey), "{e}");
}
