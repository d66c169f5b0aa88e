//! Seal and unseal over the real binary: `keyward operator init` splits the
//! root key into shares (stored nowhere), the server starts sealed (every
//! RPC but SealStatus/Unseal UNAVAILABLE, health NOT_SERVING), shares are
//! offered one by one with clear refusals, `seal` drops the keys, a restart
//! is sealed again, and every attempt is in the audit log (never a share).

mod common;

use common::binary::*;
use common::clients::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn keyward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward")).args(args).output().unwrap()
}

fn client(addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env("KEYWARD_ADDR", addr).env_remove("KEYWARD_TOKEN");
    if let Some(t) = token {
        c.env("KEYWARD_TOKEN", t);
    }
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

/// `keyward operator unseal` with the share on stdin (as a script pipes it;
/// a share is never a command-line argument).
fn unseal(addr: &str, share: &str) -> Output {
    with_stdin(&["--output", "json", "operator", "unseal"], &[("KEYWARD_ADDR", addr)], &format!("{share}\n"))
}

#[track_caller]
fn refused(o: Output, code: &str, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected a refusal, got {}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains(code), "{err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    err
}

/// Writes a config: Shamir root key, one admin+auditor principal.
fn config(dir: &Path, data: &Path, port: u16, token_sha: &str) -> PathBuf {
    config_with(dir, data, port, token_sha, "kind = \"shamir\"")
}

/// A Shamir config that also serves the AWS KMS and Vault Transit edges.
fn config_edges(dir: &Path, data: &Path, port: u16, token_sha: &str, aws: u16, vault: u16) -> PathBuf {
    let root = format!(
        "kind = \"shamir\"\n\n[aws_kms]\nlisten = \"127.0.0.1:{aws}\"\n\n[vault_transit]\nlisten = \"127.0.0.1:{vault}\""
    );
    config_with(dir, data, port, token_sha, &root)
}

/// One raw HTTP/1.1 request; the status code and body.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    (code, out)
}

/// Writes a config with this `[root_key]` table.
fn config_with(dir: &Path, data: &Path, port: u16, token_sha: &str, root_key: &str) -> PathBuf {
    let path = dir.join(format!("keyward-{}.toml", root_key.len()));
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n[root_key]\n{root_key}\n\n\
             [[principals]]\nname = \"ops\"\nroles = [\"admin\", \"auditor\", \"user\"]\ntoken_sha256 = [\"{token_sha}\"]\n\n\
             [[principals.grants]]\nkeys = [\"*\"]\noperations = [\"*\"]\n"
        ),
    )
    .unwrap();
    path
}

/// Starts the server, its log lines appended to `config` + ".log".
fn spawn(config: &Path) -> Child {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(config.with_extension("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_up(addr: &str) {
    let start = Instant::now();
    while !client(addr, None, &["operator", "status"]).status.success() {
        assert!(start.elapsed() < Duration::from_secs(20), "server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(port: u16) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(ch)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner()
            .status
    })
}

/// A share of the same init with one byte of its value changed, its check recomputed.
fn forged(share: &str) -> String {
    let parts: Vec<&str> = share.split('-').collect();
    let mut y = hex::decode(parts[3]).unwrap();
    y[0] ^= 0x5a;
    let body = format!("{}-{}-{}-{}", parts[0], parts[1], parts[2], hex::encode(y));
    format!("{body}-{:08x}", crc32c::crc32c(body.as_bytes()))
}

#[test]
fn shamir_init_unseal_seal_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = json(&ok(keyward(&[
        "--output",
        "json",
        "operator",
        "init",
        "--shares",
        "5",
        "--threshold",
        "3",
        "--data-dir",
        data.to_str().unwrap(),
    ])));
    let shares: Vec<String> =
        init["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!((shares.len(), init["threshold"].as_u64()), (5, Some(3)));
    let init_id = init["init_id"].as_str().unwrap().to_string();
    assert!(shares.iter().all(|s| s.starts_with(&format!("kws1-{init_id}-"))));
    // Initialized once only.
    let again = keyward(&[
        "operator",
        "init",
        "--shares",
        "5",
        "--threshold",
        "3",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already initialized")
    );
    // A second initialization elsewhere: its shares belong to another init.
    let other_data = dir.path().join("other");
    let other = json(&ok(keyward(&[
        "--output",
        "json",
        "operator",
        "init",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--data-dir",
        other_data.to_str().unwrap(),
    ])));
    let foreign = other["shares"][0].as_str().unwrap().to_string();

    let token = "kw_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let (aws, vault) = (free_port(), free_port());
    let cfg = config_edges(dir.path(), &data, port, &sha, aws, vault);
    let server = spawn(&cfg);
    wait_up(&addr);
    // The HTTP edges answer as their APIs do while sealed.
    let (code, body) = http(vault, "GET", "/v1/sys/health", "", "");
    assert!(code == 503 && body.contains("\"sealed\":true"), "{body}");
    let (code, body) = http(vault, "GET", "/v1/sys/seal-status", "", "");
    assert!(code == 200 && body.contains("\"sealed\":true") && body.contains("\"t\":3"), "{body}");
    let (code, body) = http(vault, "POST", "/v1/transit/encrypt/k", "x-vault-token: t\r\n", "{}");
    assert!(code == 503 && body.contains("Vault is sealed"), "{body}");
    let target = "x-amz-target: TrentService.ListKeys\r\ncontent-type: application/x-amz-json-1.1\r\n";
    let (code, body) = http(aws, "POST", "/", target, "{}");
    assert!(code == 503 && body.contains("sealed"), "{body}");

    // Sealed: status answers, everything else is UNAVAILABLE "sealed", health NOT_SERVING.
    let st = json(&ok(client(&addr, None, &["--output", "json", "operator", "status"])));
    assert_eq!(st["sealed"], true);
    assert_eq!(
        (st["kind"].as_str(), st["progress"].as_u64(), st["threshold"].as_u64()),
        (Some("shamir"), Some(0), Some(3))
    );
    refused(client(&addr, Some(token), &["key", "list"]), "Unavailable", &["sealed", "0 of 3 shares"]);
    // Sealing a sealed server changes nothing.
    assert_eq!(
        json(&ok(client(&addr, Some(token), &["--output", "json", "operator", "seal"])))["sealed"],
        true
    );
    assert_eq!(health(port), ServingStatus::NotServing as i32);

    // Refusals that keep the progress: malformed, mistyped, another init's, a repeat.
    refused(unseal(&addr, "hello"), "InvalidArgument", &["share", "kws1-"]);
    let mut typo = shares[0].clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    refused(unseal(&addr, std::str::from_utf8(&typo).unwrap()), "InvalidArgument", &["mistyped"]);
    refused(unseal(&addr, &foreign), "FailedPrecondition", &["belongs to initialization", &init_id]);
    let p = json(&ok(unseal(&addr, &shares[0])));
    assert_eq!((p["sealed"].as_bool(), p["progress"].as_u64()), (Some(true), Some(1)));
    refused(unseal(&addr, &shares[0]), "InvalidArgument", &["already given"]);
    let p = json(&ok(unseal(&addr, &shares[1])));
    assert_eq!(p["progress"], 2);
    // A forged share (right init, right format, recomputed check) is refused
    // by its commitment before it counts: it cannot take a real share's place.
    refused(unseal(&addr, &forged(&shares[2])), "InvalidArgument", &["not one of the shares", "not counted"]);
    let st = json(&ok(client(&addr, None, &["--output", "json", "operator", "status"])));
    assert_eq!((st["sealed"].as_bool(), st["progress"].as_u64()), (Some(true), Some(2)));
    // Reset needs an admin of the configuration file.
    refused(client(&addr, None, &["operator", "unseal", "--reset"]), "Unauthenticated", &["admin"]);
    let p = json(&ok(client(&addr, Some(token), &["--output", "json", "operator", "unseal", "--reset"])));
    assert_eq!((p["sealed"].as_bool(), p["progress"].as_u64()), (Some(true), Some(0)));

    // Any three right shares unseal.
    for s in [&shares[4], &shares[2]] {
        ok(unseal(&addr, s));
    }
    let p = json(&ok(unseal(&addr, &shares[0])));
    assert_eq!((p["sealed"].as_bool(), p["progress"].as_u64()), (Some(false), Some(0)));
    assert_eq!(health(port), ServingStatus::Serving as i32);
    ok(client(&addr, Some(token), &["key", "create", "--alias", "alias/sealed"]));
    let ct = ok(client(&addr, Some(token), &["encrypt", "--key", "alias/sealed", "--plaintext", "hello"]));
    let ct = ct.trim().to_string();

    // Every attempt is recorded (with its outcome), never a share.
    let q = json(&ok(client(
        &addr,
        Some(token),
        &["--output", "json", "audit", "query", "--operation", "Unseal", "--limit", "100"],
    )));
    let recs = q["records"].as_array().unwrap();
    let outcomes: Vec<&str> = recs.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    let count = |o: &str| outcomes.iter().filter(|x| **x == o).count();
    // Accepted: 2 shares, the reset, then the 3 that unsealed.
    assert_eq!(count("OK"), 6, "{outcomes:?}");
    // Malformed, mistyped, repeated, forged; another init's; the reset without a credential.
    assert_eq!(
        (count("INVALID_ARGUMENT"), count("FAILED_PRECONDITION"), count("UNAUTHENTICATED")),
        (4, 1, 1),
        "{outcomes:?}"
    );
    assert_eq!(recs.len(), 12, "{outcomes:?}");
    assert!(
        recs.iter().any(|r| r["principal"] == "ops" && r["target"].as_str().unwrap().starts_with("reset")),
        "{q}"
    );
    let text = q.to_string();
    for s in shares.iter().chain([&foreign]) {
        assert!(!text.contains(s.split('-').nth(3).unwrap()), "a share's value is in the audit log");
    }
    assert!(text.contains("unsealed with 3 shares"), "{text}");

    // Seal: keys gone, requests UNAVAILABLE, health NOT_SERVING; the Seal itself is recorded.
    let p = json(&ok(client(&addr, Some(token), &["--output", "json", "operator", "seal"])));
    assert_eq!(p["sealed"], true);
    refused(client(&addr, Some(token), &["decrypt", "--ciphertext", &ct]), "Unavailable", &["sealed"]);
    assert_eq!(health(port), ServingStatus::NotServing as i32);
    for s in &shares[1..4] {
        ok(unseal(&addr, s));
    }
    assert_eq!(ok(client(&addr, Some(token), &["decrypt", "--ciphertext", &ct])), "hello");
    let q =
        json(&ok(client(&addr, Some(token), &["--output", "json", "audit", "query", "--operation", "Seal"])));
    assert_eq!(q["records"][0]["principal"], "ops");

    // A restart is sealed again; the shares open it; the old ciphertext decrypts.
    stop(server);
    let server = spawn(&cfg);
    wait_up(&addr);
    refused(client(&addr, Some(token), &["decrypt", "--ciphertext", &ct]), "Unavailable", &["sealed"]);
    for s in [&shares[3], &shares[0], &shares[4]] {
        ok(unseal(&addr, s));
    }
    assert_eq!(ok(client(&addr, Some(token), &["decrypt", "--ciphertext", &ct])), "hello");
    let v = json(&ok(client(&addr, Some(token), &["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");
    stop(server);

    // Neither the root key nor any share is in any file of the folder, nor in the log.
    let mut bytes = all_bytes(&data);
    let log = std::fs::read(cfg.with_extension("log")).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("unseal attempt refused"),
        "the log names refused attempts"
    );
    bytes.extend(log);
    for s in &shares {
        let y = s.split('-').nth(3).unwrap();
        assert!(!contains(&bytes, y.as_bytes()), "a share is stored");
        assert!(!contains(&bytes, &hex::decode(y).unwrap()), "a share is stored");
    }
}

#[test]
fn configuration_and_folder_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let cfg = config(dir.path(), &data, port, &"0".repeat(64));
    // Shamir configured, folder never initialized: refused at start, status 64.
    let o =
        Command::new(env!("CARGO_BIN_EXE_keyward")).args(["server", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("keyward operator init"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Bad parameters.
    for (n, k) in [("3", "4"), ("3", "1"), ("0", "0"), ("256", "2")] {
        let o = keyward(&[
            "operator",
            "init",
            "--shares",
            n,
            "--threshold",
            k,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--"), "{n} {k}");
    }
    // Nothing was left behind by a refused init.
    assert!(!data.join("seal.json").exists());
    ok(keyward(&[
        "operator",
        "init",
        "--shares",
        "1",
        "--threshold",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    // A key file for a folder initialized for shares: refused, naming the kind.
    let key = dir.path().join("root.key");
    ok(keyward(&["root-key", "create", key.to_str().unwrap()]));
    let file_cfg =
        config_with(dir.path(), &data, port, &"0".repeat(64), &format!("kind = \"file\"\nfile = {key:?}"));
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--config"])
        .arg(&file_cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"shamir\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // --dev does not combine with shares.
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dev"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// An unauthenticated flood of bad shares cannot grow memory or the log
/// without bound: the first refusals are recorded one by one, the rest
/// counted into one record, and the shares that unseal are recorded anyway.
#[test]
fn refused_attempts_past_the_bound_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = json(&ok(keyward(&[
        "--output",
        "json",
        "operator",
        "init",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
    ])));
    let token = "kw_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), &data, port, &sha);
    let server = spawn(&cfg);
    wait_up(&addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await.unwrap();
        let mut op = keyward::pb::operator_service_client::OperatorServiceClient::new(ch);
        for i in 0..300 {
            let e = op.unseal(keyward::pb::UnsealRequest { share: format!("junk {i}"), reset: false }).await;
            assert_eq!(e.unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        for s in init["shares"].as_array().unwrap() {
            op.unseal(keyward::pb::UnsealRequest { share: s.as_str().unwrap().into(), reset: false })
                .await
                .unwrap();
        }
    });
    // Closes the connection (a runtime that no longer runs would keep it open).
    drop(rt);
    let q = json(&ok(client(
        &addr,
        Some(token),
        &["--output", "json", "audit", "query", "--operation", "Unseal", "--limit", "1000"],
    )));
    let recs = q["records"].as_array().unwrap();
    let refused = recs.iter().filter(|r| r["outcome"] == "INVALID_ARGUMENT").count();
    let ok_count = recs.iter().filter(|r| r["outcome"] == "OK").count();
    let summary: Vec<&Value> = recs.iter().filter(|r| r["outcome"] == "FAILED_PRECONDITION").collect();
    assert_eq!((refused, ok_count, summary.len()), (128, 2, 1), "{q}");
    assert!(summary[0]["target"].as_str().unwrap().contains("172 further refused"), "{}", summary[0]);
    stop(server);
}
