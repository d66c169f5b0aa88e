//! Cluster mode through the real binary: three etcd members and three
//! `keyward server --dev --root-key-file F --etcd-endpoints ... --node-id`
//! nodes on loopback, driven with the `keyward` command line.

#![expect(
    clippy::await_holding_lock,
    reason = "ONE_AT_A_TIME is held for a whole test, by design (each test has its own runtime)"
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::binary::*;
use common::clients::free_port;
use keyward_etcd::testing::Etcd;

fn keyward(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Node {
    addr: String,
    port: u16,
    data: std::path::PathBuf,
    endpoints: String,
    /// More server flags.
    extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, id: &str, endpoints: &str) -> Self {
        let port = free_port();
        Self {
            addr: format!("http://127.0.0.1:{port}"),
            port,
            data: dir.join(id),
            endpoints: endpoints.to_string(),
            extra: Vec::new(),
            child: None,
        }
    }

    fn command(&self, id: &str, root: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.args(["server", "--dev", "--root-key-file"])
            .arg(root)
            .args(["--etcd-endpoints", &self.endpoints, "--node-id", id])
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn start(&mut self, id: &str, root: &Path) {
        let mut child = self.command(id, root).spawn().unwrap();
        let start = Instant::now();
        while !keyward(&self.addr, &["key", "list"]).status.success() {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("node {id} exited ({st}): {err}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "node {id} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        keyward(&self.addr, args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
        }
    }
}

fn eventually(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < max, "not within {max:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// These tests measure how a cluster rides out faults within bounds of a
/// few seconds (an etcd election takes about 1.8 s of a 2 s freshness
/// bound): each has the machine's two cores to itself, not shared with
/// five more clusters of three etcd members and three nodes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn (held until it ends), three etcd members, ready; a
/// temporary folder; a root key file in it.
fn cluster() -> (std::sync::MutexGuard<'static, ()>, Etcd, tempfile::TempDir, std::path::PathBuf) {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let etcd = Etcd::start();
    etcd.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cluster.key");
    ok(with_stdin(&["root-key", "create", root.to_str().unwrap()], &[], ""));
    (turn, etcd, dir, root)
}

#[test]
fn three_nodes_share_keys_and_a_cut_off_node_fails_closed() {
    let (_one_at_a_time, etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    // n1 and n2 use the two members that stay up (a write sent to a frozen
    // member fails after the 2 s keep-alive, outcome unknown); n3 is pinned
    // to the third.
    let up = etcd.clients[..2].join(",");
    let mut nodes = [
        Node::new(dir.path(), "n1", &up),
        Node::new(dir.path(), "n2", &up),
        Node::new(dir.path(), "n3", &etcd.clients[2]),
    ];
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start(&format!("n{}", i + 1), &root);
    }

    // Created and aliased through n1, used through n2 and n3.
    let key = json(&ok(nodes[0].run(&["--output", "json", "key", "create", "--alias", "alias/orders"])));
    let id = key["key_id"].as_str().unwrap_or_else(|| key["id"].as_str().unwrap()).to_string();
    eventually("n2 and n3 know the alias", Duration::from_secs(5), || {
        nodes[1..].iter().all(|n| n.run(&["key", "describe", "alias/orders"]).status.success())
    });
    let ct = ok(nodes[1].run(&["encrypt", "--key", "alias/orders", "--plaintext", "order 7"]));
    assert_eq!(ok(nodes[2].run(&["decrypt", "--ciphertext", ct.trim()])), "order 7");

    // Rotated through n3: n1 encrypts under version 2, n2 opens both.
    ok(nodes[2].run(&["key", "rotate", "alias/orders"]));
    eventually("n1 uses version 2", Duration::from_secs(5), || {
        let out = nodes[0].run(&["--output", "json", "data-key", "--key", "alias/orders", "--bytes", "16"]);
        out.status.success() && json(&String::from_utf8_lossy(&out.stdout))["key_version"] == 2
    });
    let ct2 = ok(nodes[0].run(&["encrypt", "--key", &id, "--plaintext", "order 8"]));
    assert_eq!(ok(nodes[1].run(&["decrypt", "--ciphertext", ct2.trim()])), "order 8");
    assert_eq!(ok(nodes[1].run(&["decrypt", "--ciphertext", ct.trim()])), "order 7");

    // n3's member frozen; the key disabled through n1: n2 refuses the key,
    // n3 refuses everything as UNAVAILABLE within its 2 s bound.
    etcd.signal(2, "-STOP");
    ok(nodes[0].run(&["key", "disable", &id]));
    let disabled = Instant::now();
    eventually("n2 refuses the disabled key", Duration::from_secs(5), || {
        let o = nodes[1].run(&["encrypt", "--key", &id, "--plaintext", "x"]);
        String::from_utf8_lossy(&o.stderr).contains("FailedPrecondition")
    });
    eventually("n3 fails closed", Duration::from_secs(4), || {
        let o = nodes[2].run(&["encrypt", "--key", &id, "--plaintext", "x"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        !o.status.success() && err.contains("Unavailable") && err.contains("current with the cluster")
    });
    eprintln!("n3 refused {} ms after the disable", disabled.elapsed().as_millis());
    etcd.signal(2, "-CONT");
    eventually("n3 is current and refuses the disabled key", Duration::from_secs(20), || {
        let o = nodes[2].run(&["encrypt", "--key", &id, "--plaintext", "x"]);
        String::from_utf8_lossy(&o.stderr).contains("FailedPrecondition")
    });
    ok(nodes[0].run(&["key", "enable", &id]));

    // SIGKILL n2, restart it over the same folder: its keys come from etcd,
    // and its own audit chain is intact.
    nodes[1].kill();
    nodes[1].start("n2", &root);
    assert_eq!(ok(nodes[1].run(&["decrypt", "--ciphertext", ct2.trim()])), "order 8");
    let v = json(&ok(nodes[1].run(&["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");

    // Every record names its node; the lifecycle changes are on the nodes
    // that made them.
    let q = json(&ok(nodes[2].run(&["--output", "json", "audit", "query", "--operation", "RotateKey"])));
    let recs = q["records"].as_array().unwrap();
    assert!(!recs.is_empty() && recs.iter().all(|r| r["node_id"] == "n3"), "{q}");
    let q =
        json(&ok(nodes[0].run(&["--output", "json", "audit", "query", "--node-id", "n1", "--limit", "5"])));
    assert!(q["records"].as_array().unwrap().iter().all(|r| r["node_id"] == "n1"), "{q}");

    // `cluster status` lists the three nodes and one sweeper leader.
    eventually("every node is listed and current", Duration::from_secs(10), || {
        let s = json(&ok(nodes[1].run(&["--output", "json", "cluster", "status"])));
        let listed = s["nodes"].as_array().unwrap();
        listed.len() == 3 && listed.iter().all(|n| n["current"] == true)
    });
    let s = json(&ok(nodes[1].run(&["--output", "json", "cluster", "status"])));
    assert_eq!(s["node_id"], "n2", "{s}");
    let listed = s["nodes"].as_array().unwrap();
    let ids: Vec<_> = listed.iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "{s}");
    assert_eq!(listed.iter().filter(|n| n["sweeper_leader"] == true).count(), 1, "{s}");
    assert!(ids.contains(&s["sweeper_leader"].as_str().unwrap()), "{s}");
    for (n, node) in listed.iter().zip(&nodes) {
        assert_eq!(n["address"], node.addr.trim_start_matches("http://"), "{s}");
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"), "{s}");
        for field in
            ["started_time", "updated_time", "applied_revision", "checkpoint_sequence", "checkpoint_hash"]
        {
            assert!(n.get(field).is_some(), "{field} missing: {s}");
        }
    }
    let table = ok(nodes[0].run(&["cluster", "status"]));
    assert!(table.contains("SWEEPER") && table.contains("leader"), "{table}");

    // Cluster nodes refuse what would act on the local folder alone.
    let o = nodes[0].run(&["backup", "create", "--out", dir.path().join("b.kwbak").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cluster node"), "{o:?}");

    // A node given another root key refuses to start, saying why.
    let other = dir.path().join("other.key");
    ok(with_stdin(&["root-key", "create", other.to_str().unwrap()], &[], ""));
    let stranger = Node::new(dir.path(), "n4", &all);
    let o = stranger.command("n4", &other).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("same root key"), "{err}");
    // And a node id is required.
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--root-key-file", root.to_str().unwrap(), "--etcd-endpoints", &all])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--node-id"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_kms_v2_plugin_opens_what_another_sealed_and_every_node_fails_closed_without_quorum() {
    use keyward::k8s_pb as v2;
    let (_one_at_a_time, etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    // The plugin's key exists before the nodes bind to it.
    let mut first = Node::new(dir.path(), "n1", &all);
    first.start("n1", &root);
    let key = json(&ok(first.run(&["--output", "json", "key", "create", "--alias", "alias/k8s"])));
    let id = key["key_id"].as_str().unwrap_or_else(|| key["id"].as_str().unwrap()).to_string();
    first.kill();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let mut n = Node::new(dir.path(), &format!("n{i}"), &all);
        let socket = dir.path().join(format!("kms-{i}.sock"));
        n.extra = vec![
            "--kms-v2-socket".into(),
            socket.display().to_string(),
            "--kms-v2-key".into(),
            "alias/k8s".into(),
        ];
        n.start(&format!("n{i}"), &root);
        nodes.push((n, common::kms_v2_client(socket).await));
    }

    // Every node's plugin reports the same key id.
    let mut ids = Vec::new();
    for (_, p) in &mut nodes {
        ids.push(p.status(v2::StatusRequest {}).await.unwrap().into_inner().key_id);
    }
    assert!(ids.iter().all(|k| *k == format!("{id}:v1")), "{ids:?}");

    // Sealed by n1's plugin, opened by every node's (as three kube-apiservers do).
    let dek = vec![9u8; 32];
    let enc =
        nodes[0].1.encrypt(v2::EncryptRequest { plaintext: dek.clone(), uid: "u1".into() }).await.unwrap();
    let enc = enc.into_inner();
    let dec = |ct: &v2::EncryptResponse| v2::DecryptRequest {
        ciphertext: ct.ciphertext.clone(),
        uid: "u2".into(),
        key_id: ct.key_id.clone(),
        annotations: ct.annotations.clone(),
    };
    for (_, p) in &mut nodes {
        assert_eq!(p.decrypt(dec(&enc)).await.unwrap().into_inner().plaintext, dek);
    }

    // Rotated through n2: every plugin reports version 2, seals under it,
    // and still opens the version-1 ciphertext.
    ok(nodes[1].0.run(&["key", "rotate", "alias/k8s"]));
    let v2_id = format!("{id}:v2");
    for (_, p) in &mut nodes {
        let start = Instant::now();
        while p.status(v2::StatusRequest {}).await.unwrap().into_inner().key_id != v2_id {
            assert!(start.elapsed() < Duration::from_secs(5), "a plugin never reported version 2");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let enc2 =
        nodes[2].1.encrypt(v2::EncryptRequest { plaintext: dek.clone(), uid: "u3".into() }).await.unwrap();
    let enc2 = enc2.into_inner();
    assert_eq!(enc2.key_id, v2_id);
    for (_, p) in &mut nodes {
        assert_eq!(p.decrypt(dec(&enc2)).await.unwrap().into_inner().plaintext, dek);
        assert_eq!(p.decrypt(dec(&enc)).await.unwrap().into_inner().plaintext, dek);
    }

    // Quorum lost (two of three members frozen): every node fails closed
    // within its bound, and serves again once the members are back.
    etcd.signal(1, "-STOP");
    etcd.signal(2, "-STOP");
    let lost = Instant::now();
    for (n, p) in &mut nodes {
        eventually("the node fails closed", Duration::from_secs(6), || {
            let o = n.run(&["encrypt", "--key", "alias/k8s", "--plaintext", "x"]);
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            !o.status.success() && err.contains("Unavailable") && err.contains("current with the cluster")
        });
        let e = p.encrypt(v2::EncryptRequest { plaintext: dek.clone(), uid: "u4".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    }
    eprintln!("all three nodes refused {} ms after quorum was lost", lost.elapsed().as_millis());
    etcd.signal(1, "-CONT");
    etcd.signal(2, "-CONT");
    for (n, p) in &mut nodes {
        eventually("the node serves again", Duration::from_secs(30), || {
            n.run(&["encrypt", "--key", "alias/k8s", "--plaintext", "x"]).status.success()
        });
        assert_eq!(p.decrypt(dec(&enc)).await.unwrap().into_inner().plaintext, dek);
    }
}

/// What a load task saw: the request ids of acknowledged requests, and how
/// many failed.
#[derive(Default)]
struct Journal {
    acknowledged: Vec<String>,
    failed: usize,
    /// The first few failures: when (since the load began) and why.
    errors: Vec<(Duration, String)>,
}

/// Encrypts through `addr` until `stop`, journaling each acknowledged
/// request's id (`<tag>-<n>`, sent as x-request-id). `failed` counts only
/// while `counting` is set.
async fn encrypt_load(
    addr: String,
    key: String,
    tag: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Journal {
    use keyward::pb::{crypto_service_client::CryptoServiceClient, EncryptRequest};
    use std::sync::atomic::Ordering;
    let channel =
        tonic::transport::Endpoint::from_shared(addr).unwrap().timeout(Duration::from_secs(5)).connect_lazy();
    let mut client = CryptoServiceClient::new(channel);
    let mut journal = Journal::default();
    let mut n = 0u64;
    let began = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("{tag}-{n}");
        let mut req = tonic::Request::new(EncryptRequest {
            key_id: key.clone(),
            plaintext: b"under load".to_vec(),
            ..Default::default()
        });
        req.metadata_mut().insert("x-request-id", id.parse().unwrap());
        match client.encrypt(req).await {
            Ok(_) => journal.acknowledged.push(id),
            Err(e) => {
                journal.failed += 1;
                if journal.errors.len() < 5 {
                    journal.errors.push((began.elapsed(), format!("{:?}: {}", e.code(), e.message())));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    journal
}

/// Every record the merged QueryAuditLog through `addr` returns for
/// `filter`, page by page; no node may be unreachable.
async fn merged_records(
    addr: &str,
    mut filter: keyward::pb::QueryAuditLogRequest,
) -> Vec<keyward::pb::AuditRecord> {
    use keyward::pb::audit_service_client::AuditServiceClient;
    let mut client = AuditServiceClient::new(common::connect(addr).await);
    let mut records = Vec::new();
    filter.page_size = 1000;
    loop {
        let r = client.query_audit_log(filter.clone()).await.unwrap().into_inner();
        assert!(r.unreachable_nodes.is_empty(), "{:?}", r.unreachable_nodes);
        records.extend(r.records);
        if r.next_page_token.is_empty() {
            return records;
        }
        filter.page_token = r.next_page_token;
    }
}

/// Every request id of node `node`'s records of `operation`, read through
/// `addr` (the merged QueryAuditLog, paged).
async fn recorded_ids(addr: &str, node: &str, operation: &str) -> std::collections::HashSet<String> {
    let filter = keyward::pb::QueryAuditLogRequest {
        node_id: node.into(),
        operation: operation.into(),
        ..Default::default()
    };
    let records = merged_records(addr, filter).await;
    records.into_iter().filter(|r| r.outcome == "OK").map(|r| r.request_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_the_etcd_leader_and_a_node_die_and_every_acknowledged_request_is_recorded_on_its_node() {
    use keyward::pb::{key_service_client::KeyServiceClient, RotateKeyRequest};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (_one_at_a_time, mut etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    // No member answers a linearizable read until a new etcd leader is
    // elected: 1 to 2 s with etcd's default election timeout, and past 2.2 s
    // on this loaded 2-core machine at times (the 2 s default bound then
    // refused for a fraction of a second on every node, in about one run of
    // four). A bound above the election time, as README advises, rides it out.
    let settings = dir.path().join("bound.toml");
    std::fs::write(&settings, "[cluster]\nfreshness_bound = \"3s\"\n").unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let mut n = Node::new(dir.path(), &format!("n{i}"), &all);
            n.extra = vec!["--config".into(), settings.to_str().unwrap().into()];
            n
        })
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start(&format!("n{}", i + 1), &root);
    }
    let key = json(&ok(nodes[0].run(&["--output", "json", "key", "create", "--alias", "alias/load"])));
    let id = key["key_id"].as_str().unwrap().to_string();
    eventually("every node knows the key", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.run(&["key", "describe", &id]).status.success())
    });

    // Encrypt load on every node, rotations through n1, all journaled.
    let stop = Arc::new(AtomicBool::new(false));
    let loads_began = Instant::now();
    let loads: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .zip(&nodes)
        .map(|(tag, n)| tokio::spawn(encrypt_load(n.addr.clone(), id.clone(), tag, stop.clone())))
        .collect();
    let rotations = {
        let (addr, id, stop) = (nodes[0].addr.clone(), id.clone(), stop.clone());
        tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(addr)
                .unwrap()
                .timeout(Duration::from_secs(10))
                .connect_lazy();
            let mut keys = KeyServiceClient::new(channel);
            let (mut versions, mut longest, mut failed) = (Vec::new(), Duration::ZERO, 0usize);
            let mut last_ok = Instant::now();
            let began = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match keys.rotate_key(RotateKeyRequest { key_id: id.clone() }).await {
                    Ok(r) => {
                        versions.push(r.into_inner().key.unwrap().primary_version);
                        longest = longest.max(last_ok.elapsed());
                        last_ok = Instant::now();
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("rotation failed at {} ms: {e:?}", began.elapsed().as_millis());
                    }
                }
                if sent.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "a rotation sent at {} ms took {} ms",
                        (sent - began).as_millis(),
                        sent.elapsed().as_millis()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (versions, longest, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL of the etcd leader.
    let leader = etcd.leader().expect("an etcd leader");
    eprintln!("killing the etcd leader m{leader} at {} ms", loads_began.elapsed().as_millis());
    etcd.signal(leader, "-KILL");
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    etcd.restart(leader);
    eprintln!("etcd leader m{leader} killed; restarted {} ms later", killed.elapsed().as_millis());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL of node n2 under load, and its restart over the same folder.
    nodes[1].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[1].start("n2", &root);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut journals = Vec::new();
    for l in loads {
        journals.push(l.await.unwrap());
    }
    let (versions, longest_pause, rotation_failures) = rotations.await.unwrap();
    for (name, j) in ["n1", "n2", "n3"].iter().zip(&journals) {
        eprintln!("{name}: {} encrypts acknowledged, {} failed", j.acknowledged.len(), j.failed);
        for (at, e) in &j.errors {
            eprintln!("  {name} at {} ms: {e}", at.as_millis());
        }
    }
    eprintln!(
        "rotations: {} acknowledged, {rotation_failures} failed, longest gap between acknowledged rotations {} ms",
        versions.len(),
        longest_pause.as_millis()
    );
    // Crypto kept succeeding on the nodes that stayed up, through the etcd
    // leader's death; n2's failures are its own death.
    assert_eq!(journals[0].failed, 0, "n1 crypto failed");
    assert_eq!(journals[2].failed, 0, "n3 crypto failed");
    assert!(journals.iter().all(|j| !j.acknowledged.is_empty()));
    // Lifecycle writes paused (at most a few seconds) and no acknowledged
    // rotation was lost: each made its own version, and every one exists.
    assert!(longest_pause < Duration::from_secs(10), "rotations paused {longest_pause:?}");
    let mut sorted = versions.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), versions.len(), "two acknowledged rotations made one version: {versions:?}");
    let described = json(&ok(nodes[2].run(&["--output", "json", "key", "describe", &id])));
    let primary = described["primary_version"].as_u64().unwrap() as u32;
    // (A rotation whose answer was lost may have been made too: never fewer.)
    assert!(primary >= *versions.last().unwrap(), "{described}");

    // Every acknowledged request has its record on the node that served it,
    // read through one node; each node's chain is contiguous and intact.
    for (name, j) in ["n1", "n2", "n3"].iter().zip(&journals) {
        let recorded = recorded_ids(&nodes[2].addr, name, "Encrypt").await;
        let missing: Vec<_> = j.acknowledged.iter().filter(|r| !recorded.contains(*r)).collect();
        assert!(missing.is_empty(), "{name}: {} acknowledged without a record: {missing:?}", missing.len());
    }
    let v = json(&ok(nodes[0].run(&["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");
    let listed = v["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{v}");
    assert!(listed.iter().all(|n| n["reachable"] == true && n["records_checked"].as_u64() > Some(0)), "{v}");
    let text = ok(nodes[0].run(&["audit", "verify"]));
    assert!(text.contains("n1: intact") && text.contains("n3: intact"), "{text}");

    // A stopped node is named, not silently left out.
    nodes[2].kill();
    let q = json(&ok(nodes[0].run(&["--output", "json", "audit", "query", "--operation", "Encrypt"])));
    assert_eq!(q["unreachable_nodes"], serde_json::json!(["n3"]), "{}", q["unreachable_nodes"]);
    let o = nodes[0].run(&["--output", "json", "audit", "verify"]);
    assert!(!o.status.success());
    let v = json(&String::from_utf8_lossy(&o.stdout));
    let n3 = v["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == "n3").unwrap().clone();
    assert_eq!(n3["reachable"], false, "{v}");
}

#[test]
fn a_single_node_folder_is_imported_into_the_cluster_and_stays_verifiable() {
    let (_one_at_a_time, etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    // A single-node server (the same root key file), with a key, an alias
    // and a ciphertext; then stopped.
    let old = dir.path().join("single");
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--root-key-file", root.to_str().unwrap(), "--data-dir"])
        .arg(&old)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the single node answers", Duration::from_secs(30), || {
        keyward(&addr, &["key", "list"]).status.success()
    });
    ok(keyward(&addr, &["key", "create", "--alias", "alias/legacy"]));
    ok(keyward(&addr, &["key", "rotate", "alias/legacy"]));
    let ct = ok(keyward(&addr, &["encrypt", "--key", "alias/legacy", "--plaintext", "from before"]));
    stop(child);

    let import = |extra: &[&str]| {
        let mut args = vec!["--output", "json", "cluster", "import", "--data-dir", old.to_str().unwrap()];
        args.extend(["--etcd-endpoints", &all, "--root-key-file", root.to_str().unwrap()]);
        args.extend(extra);
        keyward("http://127.0.0.1:1", &args)
    };
    let r = json(&ok(import(&[])));
    assert_eq!(
        (r["keys"].as_u64(), r["versions"].as_u64(), r["aliases"].as_u64()),
        (Some(1), Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["usage_counts"], 1, "{r}");
    // Again: nothing more is written.
    let r = json(&ok(import(&[])));
    assert_eq!((r["keys"].as_u64(), r["already_there"].as_u64()), (Some(0), Some(2)), "{r}");

    // A cluster node serves what the single node made.
    let mut n1 = Node::new(dir.path(), "n1", &all);
    n1.start("n1", &root);
    assert_eq!(ok(n1.run(&["decrypt", "--ciphertext", ct.trim()])), "from before");
    let k = json(&ok(n1.run(&["--output", "json", "key", "describe", "alias/legacy"])));
    assert_eq!(k["primary_version"], 2, "{k}");
    // The old folder's audit history is still there and intact.
    let v = json(&ok(keyward(
        "http://127.0.0.1:1",
        &["--output", "json", "audit", "verify", "--data-dir", old.to_str().unwrap()],
    )));
    assert_eq!(v["intact"], true, "{v}");
    assert!(v["records_checked"].as_u64().unwrap() >= 3, "{v}");
    // Another root key is refused, saying so.
    let other = dir.path().join("other.key");
    ok(with_stdin(&["root-key", "create", other.to_str().unwrap()], &[], ""));
    let o = keyward(
        "http://127.0.0.1:1",
        &[
            "cluster",
            "import",
            "--data-dir",
            old.to_str().unwrap(),
            "--etcd-endpoints",
            &all,
            "--root-key-file",
            other.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("root key"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_usage_cap_under_load_on_three_nodes_is_never_exceeded_and_rotates_once_per_exhaustion() {
    use keyward::pb::QueryAuditLogRequest;
    use keyward::pb::{crypto_service_client::CryptoServiceClient, EncryptRequest};
    const CAP: u64 = 30;
    const PER_NODE: usize = 60;
    let (_one_at_a_time, etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(dir.path(), &format!("n{i}"), &all)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start(&format!("n{}", i + 1), &root);
    }
    let cap = CAP.to_string();
    let key = json(&ok(nodes[0].run(&[
        "--output",
        "json",
        "key",
        "create",
        "--max-encryptions-per-version",
        &cap,
    ])));
    let id = key["key_id"].as_str().unwrap().to_string();
    eventually("every node knows the key", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.run(&["key", "describe", &id]).status.success())
    });
    // Two clients per node, at once: 180 seals under a cap of 30.
    let mut clients = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let (addr, id) = (n.addr.clone(), id.clone());
            clients.push(tokio::spawn(async move {
                let mut c = CryptoServiceClient::new(common::connect(&addr).await);
                let mut versions = Vec::new();
                for _ in 0..PER_NODE / 2 {
                    let r = c
                        .encrypt(EncryptRequest {
                            key_id: id.clone(),
                            plaintext: b"capped".to_vec(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    versions.push(r.into_inner().key_version);
                }
                versions
            }));
        }
    }
    let mut per_version = std::collections::BTreeMap::<u32, u64>::new();
    for c in clients {
        for v in c.await.unwrap() {
            *per_version.entry(v).or_default() += 1;
        }
    }
    eprintln!("seals per version under a cap of {CAP}: {per_version:?}");
    assert_eq!(per_version.values().sum::<u64>(), 3 * PER_NODE as u64);
    assert!(per_version.values().all(|n| *n <= CAP), "a version sealed past its cap: {per_version:?}");
    let described = json(&ok(nodes[1].run(&["--output", "json", "key", "describe", &id])));
    let primary = described["primary_version"].as_u64().unwrap();
    assert!(primary >= 3 * PER_NODE as u64 / CAP, "{described}");
    // One rotation per exhaustion: the versions made are exactly the
    // system's rotations, each recorded once (read through one node).
    let filter = QueryAuditLogRequest {
        key_id: id.clone(),
        operation: "RotateKey".into(),
        principal: "system".into(),
        outcome: "OK".into(),
        ..Default::default()
    };
    let records = merged_records(&nodes[2].addr, filter).await;
    assert_eq!(
        records.len() as u64,
        primary - 1,
        "rotations {:?}",
        records.iter().map(|r| (&r.node_id, r.key_version)).collect::<Vec<_>>()
    );
    let mut made: Vec<u32> = records.iter().map(|r| r.key_version).collect();
    made.sort_unstable();
    assert_eq!(made, (2..=primary as u32).collect::<Vec<_>>(), "each version made by one rotation");
}

/// The sweeper leader, as `n` knows it ("" if none).
fn sweeper_leader(n: &Node) -> String {
    let o = n.run(&["--output", "json", "cluster", "status"]);
    if !o.status.success() {
        return String::new();
    }
    json(&String::from_utf8_lossy(&o.stdout))["sweeper_leader"].as_str().unwrap_or("").to_string()
}

/// Every key `addr` holds: id → (primary version, state), paged.
async fn key_states(addr: &str) -> std::collections::BTreeMap<String, (u32, i32)> {
    use keyward::pb::{key_service_client::KeyServiceClient, ListKeysRequest};
    let mut client = KeyServiceClient::new(common::connect(addr).await);
    let mut keys = std::collections::BTreeMap::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_keys(ListKeysRequest { page_size: 100, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        keys.extend(r.keys.into_iter().map(|k| (k.key_id, (k.primary_version, k.state))));
        if r.next_page_token.is_empty() {
            return keys;
        }
        token = r.next_page_token;
    }
}

/// The successful records of `operation` by principal `system`, per key,
/// and per node, read through `addr` (the merged log, paged).
async fn system_records(
    addr: &str,
    operation: &str,
) -> (std::collections::BTreeMap<String, usize>, std::collections::BTreeMap<String, usize>) {
    let filter = keyward::pb::QueryAuditLogRequest {
        operation: operation.into(),
        principal: "system".into(),
        outcome: "OK".into(),
        ..Default::default()
    };
    let (mut per_key, mut per_node) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for rec in merged_records(addr, filter).await {
        *per_key.entry(rec.key_id).or_default() += 1;
        *per_node.entry(rec.node_id).or_default() += 1;
    }
    (per_key, per_node)
}

async fn until(what: &str, max: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < max, "not within {max:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_leader_killed_then_paused_past_its_lease_hands_over_and_every_scheduled_job_runs_once() {
    use keyward::pb::{key_service_client::KeyServiceClient, CreateKeyRequest, ScheduleKeyDeletionRequest};
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const ROTATING: usize = 150;
    const DELETED: usize = 20;
    const HOUR_MS: i64 = 3_600_000;
    const DESTROYED: i32 = keyward::pb::KeyState::Destroyed as i32;
    let (_one_at_a_time, etcd, dir, root) = cluster();
    let all = etcd.clients.join(",");
    // Every node's wall clock is moved by the offset in one file (--dev
    // only), and each looks for due work every second.
    let clock = dir.path().join("clock-offset-ms");
    std::fs::write(&clock, "0").unwrap();
    let config = dir.path().join("sweep.toml");
    std::fs::write(&config, "sweep_interval = \"1s\"\n").unwrap();
    let names = ["n1", "n2", "n3"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|name| {
            let mut n = Node::new(dir.path(), name, &all);
            n.extra = ["--config", config.to_str().unwrap(), "--dev-clock-file", clock.to_str().unwrap()]
                .map(String::from)
                .to_vec();
            n
        })
        .collect();
    for (name, n) in names.iter().zip(nodes.iter_mut()) {
        n.start(name, &root);
    }

    // Keys rotating every hour, keys pending deletion for 7 days, and one
    // key the client load uses.
    let mut keys = KeyServiceClient::new(common::connect(&nodes[1].addr).await);
    let hourly = Some(prost_types::Duration { seconds: 3600, nanos: 0 });
    let mut rotating = BTreeSet::new();
    for _ in 0..ROTATING {
        let k = keys.create_key(CreateKeyRequest { rotation_period: hourly, ..Default::default() }).await;
        rotating.insert(k.unwrap().into_inner().key.unwrap().key_id);
    }
    let mut deleted = BTreeSet::new();
    for _ in 0..DELETED {
        let k = keys.create_key(CreateKeyRequest::default()).await.unwrap().into_inner().key.unwrap();
        keys.schedule_key_deletion(ScheduleKeyDeletionRequest {
            key_id: k.key_id.clone(),
            pending_window_days: 7,
        })
        .await
        .unwrap();
        deleted.insert(k.key_id);
    }
    let load_key =
        keys.create_key(CreateKeyRequest::default()).await.unwrap().into_inner().key.unwrap().key_id;
    for n in &nodes {
        until("every node knows every key", Duration::from_secs(10), async || {
            key_states(&n.addr).await.len() == ROTATING + DELETED + 1
        })
        .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = names
        .iter()
        .zip(&nodes)
        .map(|(tag, n)| tokio::spawn(encrypt_load(n.addr.clone(), load_key.clone(), tag, stop.clone())))
        .collect();
    let rotated_to = |states: &std::collections::BTreeMap<String, (u32, i32)>, v: u32| {
        rotating.iter().filter(|k| states[*k].0 >= v).count()
    };

    // 1. The rotations fall due; once the leader's sweep has begun, it is
    //    SIGKILLed. Another node takes over and finishes the work.
    let mut first = String::new();
    until("a sweeper leader", Duration::from_secs(15), async || {
        first = sweeper_leader(&nodes[0]);
        !first.is_empty()
    })
    .await;
    let li = names.iter().position(|n| *n == first).unwrap();
    let watcher = (li + 1) % 3;
    std::fs::write(&clock, (HOUR_MS + 60_000).to_string()).unwrap();
    until("the leader's sweep begins", Duration::from_secs(20), async || {
        rotated_to(&key_states(&nodes[watcher].addr).await, 2) > 0
    })
    .await;
    nodes[li].kill();
    let done_then = rotated_to(&key_states(&nodes[watcher].addr).await, 2);
    eprintln!("sweeper leader {first} SIGKILLed with {done_then} of {ROTATING} rotations seen done");
    let mut second = String::new();
    let took = until("another node leads the sweeper", Duration::from_secs(20), async || {
        second = sweeper_leader(&nodes[watcher]);
        !second.is_empty() && second != first
    })
    .await;
    eprintln!("{second} leads the sweeper {} ms after {first} was killed", took.as_millis());
    until("every due rotation is done", Duration::from_secs(30), async || {
        rotated_to(&key_states(&nodes[watcher].addr).await, 2) == ROTATING
    })
    .await;
    nodes[li].start(names[li], &root);

    // 2. A week later: a rotation and a destruction each are due; once the
    //    new leader's sweep has begun, it is SIGSTOPped past its lease.
    //    Another node takes over; the ex-leader's late writes, after
    //    SIGCONT, change nothing.
    let si = names.iter().position(|n| *n == second).unwrap();
    let watcher = (si + 1) % 3;
    std::fs::write(&clock, (8 * 24 * HOUR_MS).to_string()).unwrap();
    until("the leader's sweep begins", Duration::from_secs(20), async || {
        let s = key_states(&nodes[watcher].addr).await;
        rotated_to(&s, 3) > 0 || deleted.iter().any(|k| s[k].1 == DESTROYED)
    })
    .await;
    let pid = nodes[si].child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let s = key_states(&nodes[watcher].addr).await;
    eprintln!(
        "sweeper leader {second} SIGSTOPped with {} rotations and {} destructions seen done",
        rotated_to(&s, 3),
        deleted.iter().filter(|k| s[*k].1 == DESTROYED).count()
    );
    let mut third = String::new();
    let took = until("a third node leads the sweeper", Duration::from_secs(20), async || {
        third = sweeper_leader(&nodes[watcher]);
        !third.is_empty() && third != second
    })
    .await;
    eprintln!("{third} leads the sweeper {} ms after {second} was stopped", took.as_millis());
    until("every due job is done", Duration::from_secs(30), async || {
        let s = key_states(&nodes[watcher].addr).await;
        rotated_to(&s, 3) == ROTATING && deleted.iter().all(|k| s[k].1 == DESTROYED)
    })
    .await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    until("the ex-leader knows it no longer leads", Duration::from_secs(20), async || {
        let l = sweeper_leader(&nodes[si]);
        !l.is_empty() && l != second
    })
    .await;
    // Three sweep intervals for any late write of the ex-leader to be tried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut journals = Vec::new();
    for l in loads {
        journals.push(l.await.unwrap());
    }
    for (name, j) in names.iter().zip(&journals) {
        eprintln!("{name}: {} encrypts acknowledged, {} failed", j.acknowledged.len(), j.failed);
    }

    // Each job ran once: every node holds the same keys, each rotating key
    // made exactly two versions more, each deleted key is destroyed, and the
    // merged log shows one record per job.
    let expected = key_states(&nodes[0].addr).await;
    for n in &nodes[1..] {
        until("every node agrees", Duration::from_secs(10), async || key_states(&n.addr).await == expected)
            .await;
    }
    assert!(rotating.iter().all(|k| expected[k].0 == 3), "a key rotated other than twice");
    assert!(deleted.iter().all(|k| expected[k].1 == DESTROYED));
    assert_eq!(expected[&load_key].0, 1, "the load's key has no schedule");
    let (per_key, per_node) = system_records(&nodes[watcher].addr, "RotateKey").await;
    eprintln!("scheduled rotations recorded per node: {per_node:?}");
    assert_eq!(per_key.keys().cloned().collect::<BTreeSet<_>>(), rotating);
    assert!(per_key.values().all(|n| *n == 2), "a scheduled rotation recorded other than once");
    let (per_key, per_node) = system_records(&nodes[watcher].addr, "DestroyKey").await;
    eprintln!("scheduled destructions recorded per node: {per_node:?}");
    assert_eq!(per_key.keys().cloned().collect::<BTreeSet<_>>(), deleted);
    assert!(per_key.values().all(|n| *n == 1), "a scheduled destruction recorded other than once");
    // The node neither killed nor stopped served throughout.
    let steady = (0..3).find(|i| *i != li && *i != si).unwrap();
    assert_eq!(journals[steady].failed, 0, "{} crypto failed", names[steady]);
    assert!(journals.iter().all(|j| !j.acknowledged.is_empty()));
    let v = json(&ok(nodes[0].run(&["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");
}
