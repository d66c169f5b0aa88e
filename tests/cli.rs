//! The `keyward` binary as a user runs it: server --dev, the client
//! subcommands of the README tour, audit export, and offline verification.

use std::process::{Command, Output, Stdio};

fn keyward(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward")).env("KEYWARD_ADDR", addr).args(args).output().unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn readme_tour_export_and_offline_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if keyward(&addr, &["key", "list"]).status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let created = ok(keyward(&addr, &["key", "create", "--alias", "alias/payments", "--label", "team=pay"]));
    assert!(created.contains("alias/payments") && created.contains("primary_version: 1"), "{created}");
    let ct = ok(keyward(
        &addr,
        &["encrypt", "--key", "alias/payments", "--plaintext", "card 4111", "--context", "tenant=acme"],
    ));
    let ct = ct.trim();
    assert_eq!(ok(keyward(&addr, &["decrypt", "--ciphertext", ct, "--context", "tenant=acme"])), "card 4111");
    let wrong = keyward(&addr, &["decrypt", "--ciphertext", ct, "--context", "tenant=evil"]);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("InvalidArgument") && err.contains(&addr), "{err}");
    let dk: serde_json::Value = serde_json::from_str(&ok(keyward(
        &addr,
        &["--output", "json", "data-key", "--key", "alias/payments", "--bytes", "16"],
    )))
    .unwrap();
    assert_eq!(dk["key_version"], 1);
    ok(keyward(&addr, &["key", "rotate", "alias/payments"]));
    assert_eq!(ok(keyward(&addr, &["decrypt", "--ciphertext", ct, "--context", "tenant=acme"])), "card 4111");
    ok(keyward(&addr, &["key", "disable", "alias/payments"]));
    let refused = keyward(&addr, &["encrypt", "--key", "alias/payments", "--plaintext", "x"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("FailedPrecondition"));
    ok(keyward(&addr, &["key", "enable", "alias/payments"]));
    let described: serde_json::Value =
        serde_json::from_str(&ok(keyward(&addr, &["--output", "json", "key", "describe", "alias/payments"])))
            .unwrap();
    assert_eq!(described["primary_version"], 2);
    assert_eq!(described["state"], "enabled");
    let q = ok(keyward(
        &addr,
        &["audit", "query", "--key", "alias/payments", "--outcome", "FAILED_PRECONDITION"],
    ));
    assert!(q.contains("Encrypt") && q.contains("FAILED_PRECONDITION"), "{q}");
    assert!(ok(keyward(&addr, &["audit", "verify"])).contains("intact"));

    // Export: one JSON object per line, oldest first, stable field names.
    let out = dir.path().join("audit.jsonl");
    ok(keyward(&addr, &["audit", "export", "--out", out.to_str().unwrap()]));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 10);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["sequence"], i as u64 + 1);
        for field in
            ["time", "request_id", "principal", "peer", "operation", "outcome", "hash", "previous_hash"]
        {
            assert!(l.get(field).is_some(), "{field} missing");
        }
    }
    assert!(lines.iter().any(|l| l["operation"] == "CreateKey" && l["alias"] == "alias/payments"));

    // Stop, then verify offline on the data folder.
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
    let v = ok(keyward(&addr, &["audit", "verify", "--data-dir", data.to_str().unwrap()]));
    assert!(v.contains("intact"), "{v}");
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    let o = Command::new(env!("CARGO_BIN_EXE_keyward")).args(["server"]).output().unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--root-key-file"));
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", "0.0.0.0:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("loopback"));
}
