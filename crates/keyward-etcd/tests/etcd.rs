//! Cluster mode over a real three-member etcd cluster on loopback ports
//! (Debian's `etcd-server`; `.ci/run` installs it): several `Kms` nodes in
//! this process, each with its own in-memory local store, sharing keys
//! through `EtcdShared`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::testing::MemoryStore;
use keyward_core::{
    Caller, ClusterConfig, CreateKeyInput, Edge, ErrorKind, Kms, KmsConfig, KmsError, OpenError, Policy,
    SharedKeys, Store, SystemClock,
};
use keyward_crypto::{Plaintext, RootKey};
use keyward_etcd::testing::Etcd;
use keyward_etcd::{EtcdConfig, EtcdShared};

const ROOT: [u8; 32] = [5; 32];

fn caller() -> Caller {
    Caller {
        request_id: "req-1".into(),
        principal: "admin".into(),
        peer: String::new(),
        edge: Edge::Grpc,
        policy: Arc::new(Policy::everything()),
    }
}

async fn connect(endpoints: &[String]) -> EtcdShared {
    let start = Instant::now();
    loop {
        if let Ok(s) = EtcdShared::connect(EtcdConfig::new(endpoints.to_vec())).await {
            if s.last_write().await.is_ok() {
                return s;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "etcd never answered at {endpoints:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Node {
    kms: Arc<Kms>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

async fn open(shared: EtcdShared, root: [u8; 32]) -> Result<Node, OpenError> {
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let config = ClusterConfig::new(format!("n{n}"));
    let kms = Kms::open_cluster(
        local,
        Arc::new(shared),
        RootKey::from_bytes(&root).unwrap(),
        Arc::new(SystemClock),
        KmsConfig::default(),
        config,
    )
    .await?;
    let kms = Arc::new(kms);
    let tasks = kms.cluster_tasks().into_iter().map(tokio::spawn).collect();
    Ok(Node { kms, tasks })
}

async fn encrypt(kms: &Kms, key: &str) -> Result<Vec<u8>, KmsError> {
    kms.encrypt(&caller(), key, Plaintext::new(b"etcd".to_vec()), HashMap::new()).await.map(|o| o.ciphertext)
}

async fn eventually(what: &str, max: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < max, "not within {max:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_keys_through_etcd_and_fail_closed_when_cut_off() {
    let etcd = Etcd::start();
    // Node a talks to the two members that stay up (a write the balanced
    // channel sends to a frozen member fails, outcome unknown, after the
    // 2 s keep-alive); b and c are pinned to one each.
    let a = open(connect(&etcd.clients[..2]).await, ROOT).await.unwrap();
    let b = open(connect(&etcd.clients[1..2]).await, ROOT).await.unwrap();
    let c = open(connect(&etcd.clients[2..3]).await, ROOT).await.unwrap();

    // Another root key is refused, naming the reason.
    let e = open(connect(&etcd.clients).await, [6; 32]).await.err().expect("another root key joined");
    assert!(matches!(e, OpenError::ClusterRootKey), "{e}");

    // Made on a, aliased, used everywhere; rotated on c, used by a.
    let key = a.kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap().meta.id.to_string();
    a.kms.create_alias(&caller(), "alias/etcd", &key).await.unwrap();
    eventually("b and c know the alias", Duration::from_secs(5), async || {
        b.kms.peek_key("alias/etcd").is_ok() && c.kms.peek_key("alias/etcd").is_ok()
    })
    .await;
    let ct = encrypt(&b.kms, "alias/etcd").await.unwrap();
    assert_eq!(
        c.kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap().plaintext.expose_secret(),
        b"etcd"
    );
    c.kms.rotate_key(&caller(), &key).await.unwrap();
    eventually("a uses version 2", Duration::from_secs(5), async || a.kms.peek_key(&key).unwrap().2 == 2)
        .await;

    // Concurrent rotations through two nodes: consecutive versions, none twice.
    eventually("b knows version 2", Duration::from_secs(5), async || b.kms.peek_key(&key).unwrap().2 == 2)
        .await;
    let rounds = 5_u32;
    let (ra, rb) = keyward_core::testing::rotate_on_both(&a.kms, &b.kms, &caller(), &key, rounds).await;
    let mut all: Vec<u32> = ra.iter().chain(&rb).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (3..3 + 2 * rounds).collect::<Vec<u32>>(), "a: {ra:?}, b: {rb:?}");

    // c's member frozen (SIGSTOP); a disables the key. Within the bound c
    // refuses everything as UNAVAILABLE; the others refuse the key itself.
    etcd.signal(2, "-STOP");
    let disabled_at = Instant::now();
    a.kms.disable_key(&caller(), &key).await.unwrap();
    eventually("b refuses the disabled key", Duration::from_secs(5), async || {
        encrypt(&b.kms, &key).await.is_err_and(|e| e.kind() == ErrorKind::FailedPrecondition)
    })
    .await;
    eventually("c fails closed", Duration::from_secs(4), async || {
        encrypt(&c.kms, &key).await.is_err_and(|e| e.kind() == ErrorKind::Unavailable)
    })
    .await;
    eprintln!("c refused {} ms after the disable", disabled_at.elapsed().as_millis());
    assert!(!c.kms.is_current());

    // Thawed: c catches up and refuses the key for what it is.
    etcd.signal(2, "-CONT");
    eventually("c is current again", Duration::from_secs(20), async || c.kms.is_current()).await;
    let e = encrypt(&c.kms, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    a.kms.enable_key(&caller(), &key).await.unwrap();
    eventually("c serves the key again", Duration::from_secs(5), async || {
        encrypt(&c.kms, &key).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_leadership_moves_when_its_lease_expires_and_fences_the_old_leader() {
    use keyward_core::{NodeInfo, SharedWrite, WriteError};
    let etcd = Etcd::start();
    let (a, b) = (connect(&etcd.clients).await, connect(&etcd.clients).await);
    let me = |id: &str| NodeInfo { node_id: id.into(), address: format!("{id}:1"), ..Default::default() };
    let ttl = Duration::from_secs(2);
    let first = a.heartbeat(me("a"), ttl).await.unwrap();
    let fence = first.leading.expect("a leads the sweeper, as the first to ask");
    assert_eq!(first.leader.as_deref(), Some("a"));
    let seen = b.heartbeat(me("b"), ttl).await.unwrap();
    assert_eq!((seen.leading, seen.leader.as_deref()), (None, Some("a")));
    assert_eq!(a.heartbeat(me("a"), ttl).await.unwrap().leading, Some(fence), "renewed, same term");
    let keyward_core::Members { nodes, sweeper_leader: leader } = b.members().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(nodes[0].address, "a:1");
    assert_eq!(leader.as_deref(), Some("a"));
    // A fenced write while a leads applies.
    let write = |fence| SharedWrite { fence: Some(fence), ..Default::default() };
    a.write(write(fence)).await.unwrap();

    // a stops renewing (paused): its lease expires, b takes over, and a's
    // late fenced write is refused.
    let started = Instant::now();
    let taken = loop {
        let m = b.heartbeat(me("b"), ttl).await.unwrap();
        if let Some(f) = m.leading {
            break f;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "b never took over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("b took over {} ms after a's last renewal", started.elapsed().as_millis());
    assert_ne!(taken, fence);
    assert!(matches!(a.write(write(fence)).await, Err(WriteError::Fenced)));
    let keyward_core::Members { nodes, sweeper_leader: leader } = b.members().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(), ["b"], "a's entry expired");
    assert_eq!(leader.as_deref(), Some("b"));
    // a, back, renews a new lease and does not lead.
    let back = a.heartbeat(me("a"), ttl).await.unwrap();
    assert_eq!((back.leading, back.leader.as_deref()), (None, Some("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_units_leased_by_racing_nodes_never_pass_the_cap() {
    let etcd = Etcd::start();
    let (a, b) = (connect(&etcd.clients).await, connect(&etcd.clients).await);
    let key: keyward_core::KeyId = "a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1".parse().unwrap();
    let lease = |s: EtcdShared| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match s.lease_units(key, 3, 16, 100).await.unwrap() {
                    0 => return got,
                    n => got.push(n),
                }
            }
        })
    };
    let (ga, gb) = (lease(a.clone()), lease(b.clone()));
    let (ga, gb) = (ga.await.unwrap(), gb.await.unwrap());
    let total: u64 = ga.iter().chain(&gb).sum();
    assert_eq!(total, 100, "{ga:?} {gb:?}");
    // Blocks shrink near the cap: never more than a quarter of what was left.
    assert!(ga.iter().chain(&gb).any(|n| *n < 16), "{ga:?} {gb:?}");
    assert_eq!(a.lease_units(key, 3, 16, 100).await.unwrap(), 0);
    // Another version counts on its own.
    assert_eq!(a.lease_units(key, 4, 16, 100).await.unwrap(), 16);
}
