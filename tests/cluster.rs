//! Cluster mode through the real binary: three etcd members and three
//! `keyward server --dev --root-key-file F --etcd-endpoints ... --node-id`
//! nodes on loopback, driven with the `keyward` command line.

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

/// Three etcd members, ready; a temporary folder; a root key file in it.
fn cluster() -> (Etcd, tempfile::TempDir, std::path::PathBuf) {
    let etcd = Etcd::start();
    etcd.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cluster.key");
    ok(with_stdin(&["root-key", "create", root.to_str().unwrap()], &[], ""));
    (etcd, dir, root)
}

#[test]
fn three_nodes_share_keys_and_a_cut_off_node_fails_closed() {
    let (etcd, dir, root) = cluster();
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
    let (etcd, dir, root) = cluster();
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
