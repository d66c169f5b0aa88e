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
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("FailedPrecondition") && why.contains("(request id "), "{why}");
    // Out-of-range windows are refused by the CLI, not silently defaulted.
    for args in [
        ["key", "schedule-deletion", "alias/payments", "--days", "0"],
        ["key", "schedule-deletion", "alias/payments", "--days", "31"],
    ] {
        let o = keyward(&addr, &args);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--days"), "{args:?}");
    }
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

    // Export: one JSON object per line, oldest first: every record with its
    // stored bytes (a JSON document of its own), signed checkpoints between.
    let out = dir.path().join("audit.jsonl");
    ok(keyward(&addr, &["audit", "export", "--out", out.to_str().unwrap()]));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "record")
        .map(|l| serde_json::from_str(l["stored"].as_str().unwrap()).unwrap())
        .collect();
    assert!(records.len() >= 10);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        for field in ["time_ms", "request_id", "principal", "peer", "operation", "outcome", "prev_hash"] {
            assert!(r.get(field).is_some(), "{field} missing");
        }
    }
    assert!(records.iter().any(|r| r["operation"] == "CreateKey" && r["alias"] == "alias/payments"));
    // Filtered, the export lists readable records, one per line.
    let filtered = ok(keyward(&addr, &["audit", "export", "--operation", "CreateKey"]));
    let first: serde_json::Value = serde_json::from_str(filtered.lines().next().unwrap()).unwrap();
    for field in
        ["sequence", "time", "request_id", "principal", "operation", "outcome", "hash", "previous_hash"]
    {
        assert!(first.get(field).is_some(), "{field} missing");
    }

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

/// The README's offline verification: the public key over gRPC, a clean
/// stop, a signed export of the data folder, and verification with nothing
/// but the export and the key; a dropped checkpoint shows as an uncovered
/// tail, an edited record fails with its sequence number; and a data folder
/// whose chain head is behind its records refuses to start (status 64).
#[test]
fn signed_export_verifies_offline_with_only_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = dev_server(&data);
    ok(keyward(&addr, &["key", "create", "--alias", "alias/ledger"]));
    for _ in 0..5 {
        ok(keyward(&addr, &["encrypt", "--key", "alias/ledger", "--plaintext", "entry"]));
    }
    let pem = ok(keyward(&addr, &["audit", "public-key"]));
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(keyward(&addr, &["--output", "json", "audit", "public-key"]))).unwrap();
    assert_eq!(json["public_key_pem"].as_str().unwrap().trim(), pem.trim());
    assert_eq!(json["fingerprint_sha256"].as_str().unwrap().len(), 64);
    let node_id = json["node_id"].as_str().unwrap().to_string();
    let pem_file = dir.path().join("audit.pem");
    std::fs::write(&pem_file, &pem).unwrap();

    // Over gRPC, from the running server, as a reviewer would: the export
    // (ExportAuditLog, in pages) verifies offline with the public key alone.
    // Wait for the writer's once-a-second checkpoint first.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let live = dir.path().join("live.jsonl");
    let l = live.to_str().unwrap();
    ok(keyward(&addr, &["audit", "export", "--out", l]));
    let live_text = std::fs::read_to_string(&live).unwrap();
    assert!(live_text.lines().any(|x| x.contains("\"type\":\"checkpoint\"")), "{live_text}");
    let v =
        ok(keyward(&addr, &["audit", "verify", "--offline", l, "--public-key", pem_file.to_str().unwrap()]));
    assert!(v.contains("audit export intact") && v.contains("signed checkpoints checked"), "{v}");
    // A filtered export lists records (not verifiable offline).
    let filtered = ok(keyward(&addr, &["audit", "export", "--operation", "Encrypt"]));
    assert_eq!(filtered.lines().count(), 5, "{filtered}");
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());

    let d = data.to_str().unwrap();
    let offline = ok(keyward(&addr, &["audit", "public-key", "--data-dir", d]));
    assert_eq!(offline.trim(), pem.trim(), "the folder holds the same key");
    let export = dir.path().join("signed.jsonl");
    let e = export.to_str().unwrap();
    ok(keyward(&addr, &["audit", "export", "--data-dir", d, "--out", e]));
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["type"] == "record" || l["type"] == "checkpoint"));
    let records = lines.iter().filter(|l| l["type"] == "record").count();
    assert!(records >= 7, "{records}");
    assert_eq!(lines.last().unwrap()["type"], "checkpoint", "the clean stop signed the tail");

    let p = pem_file.to_str().unwrap();
    let v = ok(keyward(&addr, &["audit", "verify", "--offline", e, "--public-key", p]));
    assert!(v.contains("intact") && v.contains("every record is covered"), "{v}");
    let v: serde_json::Value = serde_json::from_str(&ok(keyward(
        &addr,
        &["--output", "json", "audit", "verify", "--offline", e, "--public-key", p],
    )))
    .unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["records_checked"], records as u64);
    assert_eq!(v["last_checkpoint_sequence"], records as u64);
    assert_eq!(v["uncovered_records"], 0);
    assert_eq!(v["node_id"], node_id.as_str());
    let v = ok(keyward(&addr, &["audit", "verify", "--data-dir", d, "--public-key", p]));
    assert!(v.contains("intact") && v.contains("signed checkpoints"), "{v}");

    // Without its last checkpoint the tail is reported as not yet covered.
    let cut = dir.path().join("cut.jsonl");
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, kept[..kept.len() - 1].join("\n")).unwrap();
    let v = ok(keyward(&addr, &["audit", "verify", "--offline", cut.to_str().unwrap(), "--public-key", p]));
    assert!(v.contains("are after the last checkpoint and not yet covered by a signature"), "{v}");

    // An edited record fails, naming its sequence number.
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, text.replacen("alias/ledger", "alias/ledgex", 1)).unwrap();
    let o = keyward(
        &addr,
        &["--output", "json", "audit", "verify", "--offline", edited.to_str().unwrap(), "--public-key", p],
    );
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["intact"], false);
    assert!(v["first_bad_sequence"].as_u64().unwrap() >= 1, "{v}");

    // A record beyond the chain head (a head rolled back): the server refuses to start.
    {
        use keyward_core::Store;
        let store = keyward_store::RocksStore::open(&data.join("db")).unwrap();
        let head = store.audit_head().unwrap().unwrap();
        let page = store.query_audit(&keyward_core::AuditQuery { limit: 1, ..Default::default() }).unwrap();
        let mut record = page.records[0].record.clone();
        record.seq = head.seq + 1;
        let bytes = store.encode_audit(&record);
        store
            .commit(&keyward_core::CommitBatch {
                audit: vec![keyward_core::SealedRecord { record, bytes }],
                ..Default::default()
            })
            .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", d])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("chain head is at") && err.contains("refusing to start"), "{err}");
}

/// A key record edited in the data folder by someone without the root key
/// (a label changed, the record's tag left as it was): the server refuses to
/// start, status 64, naming the key.
#[test]
fn an_edited_key_record_refuses_to_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = dev_server(&data);
    let created: serde_json::Value = serde_json::from_str(&ok(keyward(
        &addr,
        &["--output", "json", "key", "create", "--alias", "alias/payments", "--label", "team=payments"],
    )))
    .unwrap();
    let id = created["key_id"].as_str().unwrap().to_string();
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
    {
        use keyward_core::Store;
        let store = keyward_store::RocksStore::open(&data.join("db")).unwrap();
        let mut record = store.load_keys().unwrap().pop().unwrap();
        record.meta.labels.insert("team".into(), "attacker".into());
        store.commit(&keyward_core::CommitBatch { keys: vec![record], ..Default::default() }).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "server",
            "--dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("key record {id}")) && err.contains("integrity check"), "{err}");
}

/// A data folder written by an earlier build (stored format 1) is refused
/// with status 64 and a message naming `--upgrade`; started once with
/// `--upgrade` it is rewritten in the current format, and afterwards it
/// starts without the flag and serves its keys.
#[test]
fn an_older_data_folder_needs_upgrade_once() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/keyward-store/tests/fixtures/format-v1");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(fixture.join("db")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join("db").join(e.file_name())).unwrap();
    }
    let root = dir.path().join("root.key");
    std::fs::write(&root, std::fs::read(fixture.join("root.key")).unwrap()).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "server",
        "--dev",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
        "--root-key-file",
        root.to_str().unwrap(),
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_keyward")).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));
    let why = String::from_utf8_lossy(&o.stderr);
    assert!(why.contains("--upgrade"), "{why}");
    for upgrade in [true, false] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        if upgrade {
            cmd.arg("--upgrade");
        }
        let mut server = cmd.spawn().unwrap();
        let addr = format!("http://{listen}");
        let mut listed = String::new();
        for _ in 0..400 {
            let o = keyward(&addr, &["key", "list"]);
            if o.status.success() {
                listed = String::from_utf8(o.stdout).unwrap();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert!(listed.contains("alias/fixture-a"), "upgrade {upgrade}: {listed}");
        Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        assert!(server.wait().unwrap().success());
    }
}

/// Starts `keyward server --dev` on a free port; returns it and its address.
fn dev_server(data: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("http://127.0.0.1:{port}");
    let server = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if keyward(&addr, &["key", "list"]).status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    (server, addr)
}

#[test]
fn lifecycle_commands_and_rewrap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = dev_server(&dir.path().join("data"));
    let created = ok(keyward(
        &addr,
        &[
            "key",
            "create",
            "--alias",
            "alias/docs",
            "--rotation-period",
            "30d",
            "--max-encryptions-per-version",
            "1000",
        ],
    ));
    assert!(created.contains("every 30days") && created.contains("at most 1000 encryptions"), "{created}");
    let bad = keyward(&addr, &["key", "rotation-policy", "alias/docs", "--rotation-period", "10m"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("InvalidArgument") && err.contains("rotation_period"),
        "{err}"
    );

    // Ciphertexts under v1, one per line, plus a blank line and a broken one.
    let mut lines = Vec::new();
    for i in 0..40 {
        let ct = ok(keyward(&addr, &["encrypt", "--key", "alias/docs", "--plaintext", &format!("doc {i}")]));
        lines.push(ct.trim().to_string());
    }
    let keys = ok(keyward(&addr, &["data-key", "--key", "alias/docs", "--count", "3", "--no-plaintext"]));
    assert_eq!(keys.lines().count(), 3);
    ok(keyward(&addr, &["key", "rotate", "alias/docs"]));
    ok(keyward(&addr, &["key", "version", "compromise", "alias/docs", "1"]));
    let refused = keyward(&addr, &["decrypt", "--ciphertext", &lines[0]]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("compromised"));

    let mut input = lines.join("\n");
    input.push_str("\n\nnot base64!\n");
    let file = dir.path().join("old.txt");
    std::fs::write(&file, input).unwrap();
    let same = keyward(
        &addr,
        &["rewrap", "--to", "alias/docs", "--in", file.to_str().unwrap(), "--out", file.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&same.stderr).contains("is the input file"));
    assert!(std::fs::read_to_string(&file).unwrap().starts_with(&lines[0]), "the input is untouched");
    let out = dir.path().join("new.txt");
    let o = keyward(
        &addr,
        &["rewrap", "--to", "alias/docs", "--in", file.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "one bad line fails the run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 42: not valid base64") && err.contains("rewrapped 40 ciphertexts, 1 failed"),
        "{err}"
    );
    let new = std::fs::read_to_string(&out).unwrap();
    let new: Vec<&str> = new.lines().collect();
    assert_eq!(new.len(), 42, "one output line per input line");
    assert_eq!((new[40], new[41]), ("", ""));
    for (i, ct) in new[..40].iter().enumerate() {
        assert_ne!(*ct, lines[i]);
        assert_eq!(ok(keyward(&addr, &["decrypt", "--ciphertext", ct])), format!("doc {i}"));
    }

    // From stdin too; the usage counts show every item.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", &addr)
        .args(["rewrap", "--to", "alias/docs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lines[..5].join("\n").as_bytes()).unwrap();
    drop(child.stdin.take());
    assert_eq!(ok(child.wait_with_output().unwrap()).lines().count(), 5);
    let versions: serde_json::Value = serde_json::from_str(&ok(keyward(
        &addr,
        &["--output", "json", "key", "version", "list", "alias/docs"],
    )))
    .unwrap();
    let v = &versions["versions"];
    assert_eq!((v[0]["encryptions"].as_u64(), v[0]["data_keys"].as_u64()), (Some(40), Some(3)));
    assert_eq!(v[0]["decryptions"], 45, "40 + 5 rewrapped out of v1");
    assert_eq!(v[0]["compromised"], true);
    assert_eq!((v[1]["primary"].as_bool(), v[1]["encryptions"].as_u64()), (Some(true), Some(45)));
    let table = ok(keyward(&addr, &["key", "version", "list", "alias/docs"]));
    assert!(table.contains("COMPROMISED") && table.contains("primary"), "{table}");
    let keys = ok(keyward(&addr, &["--output", "table", "key", "list"]));
    assert!(keys.starts_with("KEY ID") && keys.contains("alias/docs"), "{keys}");
    let audit = ok(keyward(&addr, &["audit", "query", "--limit", "3"]));
    assert!(audit.lines().next().unwrap().contains("OPERATION"), "{audit}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}

#[test]
fn shell_completions_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "_keyward()"), ("zsh", "#compdef keyward"), ("fish", "complete -c keyward")]
    {
        let out =
            ok(Command::new(env!("CARGO_BIN_EXE_keyward")).args(["completions", shell]).output().unwrap());
        assert!(out.contains(marker), "{shell}: {}", &out[..out.len().min(200)]);
        assert!(out.contains("rewrap") && out.contains("rotation-policy"), "{shell} completes subcommands");
        for access in ["principal", "grant", "revoke-all", "server-side", "context-equals"] {
            assert!(out.contains(access), "{shell} completes the access commands: {access}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_keyward")).args(["completions", "tcsh"]).output().unwrap();
    assert!(!bad.status.success());
}

#[test]
fn an_unreachable_server_is_named_in_the_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("http://127.0.0.1:{port}");
    let o = keyward(&addr, &["key", "list"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&addr) && err.contains("cannot reach"), "{err}");
}

#[test]
fn server_help_lists_only_server_flags() {
    let help = ok(Command::new(env!("CARGO_BIN_EXE_keyward")).args(["server", "--help"]).output().unwrap());
    for client_only in
        ["--addr", "--token", "--output", "--ca-cert", "--client-cert", "--client-key", "--no-crc32c"]
    {
        assert!(!help.contains(client_only), "`keyward server --help` mentions {client_only}:\n{help}");
    }
    for server in ["--dev", "--config", "--data-dir", "--listen", "--root-key-file", "--kms-v2-socket"] {
        assert!(help.contains(server), "{server} missing:\n{help}");
    }
    let help =
        ok(Command::new(env!("CARGO_BIN_EXE_keyward")).args(["key", "list", "--help"]).output().unwrap());
    assert!(help.contains("--addr") && help.contains("--output"), "{help}");
}

#[test]
fn connection_flags_before_or_after_the_subcommand() {
    let free = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("http://127.0.0.1:{port}")
    };
    let (env, before, after) = (free(), free(), free());
    let named = |args: &[&str]| {
        let o = keyward(&env, args);
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    assert!(named(&["key", "list"]).contains(&env));
    assert!(named(&["--addr", &before, "key", "list"]).contains(&before), "a flag beats the environment");
    assert!(named(&["key", "list", "--addr", &after]).contains(&after));
    assert!(named(&["--addr", &before, "--output", "json", "key", "list", "--addr", &after]).contains(&after));
    assert!(named(&["encrypt", "--key", "k", "--plaintext", "x", "--addr", &after]).contains(&after));
}

/// Runs the CLI against `addr` with `token` as KEYWARD_TOKEN.
fn keyward_as(addr: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", addr)
        .env("KEYWARD_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

/// A failed run's stderr.
#[track_caller]
fn fails(o: Output) -> String {
    assert!(!o.status.success(), "succeeded: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr).unwrap()
}

/// Starts `keyward server --config` with one configuration-file principal,
/// `security-team` (admin), whose token `keyward token create` made offline;
/// returns the server, its address and the admin token.
fn config_server(dir: &std::path::Path) -> (std::process::Child, String, String) {
    let root = dir.join("root.key");
    ok(Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("root-key")
        .arg("create")
        .arg(&root)
        .output()
        .unwrap());
    // The offline `token create` as it always was: a kw_ token and the line for the file.
    let made = ok(Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["token", "create", "--principal", "security-team"])
        .output()
        .unwrap());
    let lines: Vec<&str> = made.lines().collect();
    let token = lines[1].trim().to_string();
    assert!(token.starts_with("kw_") && token.len() == 67, "{made}");
    let hash_line = lines.iter().find(|l| l.trim_start().starts_with("token_sha256 = [\"")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nroot_key_file = {:?}\n\n[[principals]]\nname = \"security-team\"\nroles = [\"admin\"]\n{}\n",
            dir.join("data"),
            root,
            hash_line.trim()
        ),
    )
    .unwrap();
    let server = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("server")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if keyward_as(&addr, &token, &["key", "list"]).status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    (server, addr, token)
}

/// The README's runtime access workflow with the CLI: a principal, a grant
/// of one key under a context constraint, a short-lived token that works
/// inside the constraint and not outside it, then revoked; the listings in
/// JSON carry every field and never a token; the principal deleted.
#[test]
fn runtime_access_workflow_principal_grant_token_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr, admin) = config_server(dir.path());
    let run = |args: &[&str]| keyward_as(&addr, &admin, args);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(run(&all))).unwrap()
    };
    let key = json(&["key", "create", "--alias", "alias/payments"])["key_id"].as_str().unwrap().to_string();

    let created = ok(run(&["principal", "create", "payments-api", "--role", "user"]));
    assert!(created.contains("name:      payments-api") && created.contains("bootstrap: false"), "{created}");
    let grant = ok(run(&[
        "grant",
        "create",
        "--principal",
        "payments-api",
        "--key",
        &key,
        "--operation",
        "encrypt",
        "--operation",
        "decrypt",
        "--context-equals",
        "tenant=acme",
    ]));
    assert!(grant.contains("context equals tenant=acme") && grant.contains("encrypt, decrypt"), "{grant}");

    let t = json(&["token", "create", "--principal", "payments-api", "--ttl", "15m"]);
    let token = t["token"].as_str().unwrap().to_string();
    let token_id = t["token_id"].as_str().unwrap().to_string();
    assert!(token.starts_with("kwt_"), "{t}");
    assert_eq!(t["principal"], "payments-api");
    let created = humantime::parse_rfc3339(t["create_time"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(t["expire_time"].as_str().unwrap()).unwrap();
    assert_eq!(expires.duration_since(created).unwrap(), std::time::Duration::from_secs(900));
    assert_eq!(t["last_used_time"], "");

    let encrypt = |tenant: &str| {
        keyward_as(
            &addr,
            &token,
            &["encrypt", "--key", &key, "--plaintext", "card 4111", "--context", &format!("tenant={tenant}")],
        )
    };
    let ct = ok(encrypt("acme"));
    assert!(!ct.trim().is_empty());
    let err = fails(encrypt("evil"));
    assert!(err.contains("PermissionDenied") && err.contains("payments-api"), "{err}");

    let listed = ok(run(&["--output", "json", "token", "list"]));
    assert!(!listed.contains(&token) && !listed.contains(token.rsplit('_').next().unwrap()), "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{listed}");
    assert_eq!(tokens[0]["token_id"], token_id.as_str());
    assert_eq!(tokens[0]["principal"], "payments-api");
    assert_eq!(tokens[0]["expire_time"], t["expire_time"]);
    assert!(tokens[0].get("token").is_none());
    let table = ok(run(&["token", "list", "--principal", "payments-api"]));
    assert!(table.starts_with("TOKEN ID") && table.contains(&token_id) && !table.contains(&token), "{table}");

    let revoked = ok(run(&["token", "revoke", &token_id]));
    assert!(revoked.contains(&token_id), "{revoked}");
    let err = fails(encrypt("acme"));
    assert!(err.contains("Unauthenticated"), "{err}");

    let grants = json(&["grant", "list", "--principal", "payments-api"]);
    let g = &grants["grants"][0];
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(g["keys"], serde_json::json!([key]));
    assert_eq!(g["operations"], serde_json::json!(["encrypt", "decrypt"]));
    assert_eq!(g["context_equals"], serde_json::json!({ "tenant": "acme" }));
    assert_eq!(g["context_contains"], serde_json::json!({}));
    assert!(humantime::parse_rfc3339(g["create_time"].as_str().unwrap()).is_ok(), "{g}");
    let by_alias = json(&["grant", "list", "--key", "alias/payments"]);
    assert_eq!(by_alias["grants"][0]["grant_id"], g["grant_id"], "a grant is found by the key's alias");

    let principals = json(&["principal", "list"]);
    let find = |name: &str| {
        principals["principals"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap()
    };
    let (boot, runtime) = (find("security-team"), find("payments-api"));
    assert_eq!((boot["bootstrap"].as_bool(), runtime["bootstrap"].as_bool()), (Some(true), Some(false)));
    assert_eq!(boot["roles"], serde_json::json!(["admin"]));
    assert_eq!(runtime["roles"], serde_json::json!(["user"]));
    assert_eq!((runtime["grant_count"].as_u64(), runtime["token_count"].as_u64()), (Some(1), Some(0)));
    let table = ok(run(&["principal", "list"]));
    assert!(table.starts_with("NAME") && table.contains("bootstrap") && table.contains("runtime"), "{table}");

    // A second token, revoked with every other one of the principal.
    let second = json(&["token", "create", "--principal", "payments-api", "--server-side"]);
    let ttl = humantime::parse_rfc3339(second["expire_time"].as_str().unwrap())
        .unwrap()
        .duration_since(humantime::parse_rfc3339(second["create_time"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(ttl, std::time::Duration::from_secs(3600), "the server's default time to live");
    let all = json(&["token", "revoke-all", "--principal", "payments-api"]);
    assert_eq!((all["principal"].as_str(), all["revoked"].as_u64()), (Some("payments-api"), Some(1)));
    assert!(ok(run(&["token", "revoke-all", "--principal", "payments-api"])).contains("revoked 0 tokens"));

    // The configuration file's principal is read-only here.
    let err = fails(run(&["principal", "delete", "security-team"]));
    assert!(err.contains("FailedPrecondition") && err.contains("configuration file"), "{err}");
    let deleted = ok(run(&["principal", "delete", "payments-api"]));
    assert!(deleted.contains("payments-api"), "{deleted}");
    let left = json(&["principal", "list"]);
    assert_eq!(left["principals"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(json(&["grant", "list", "--principal", "payments-api"])["grants"], serde_json::json!([]));
    // `revoke` is an alias of `delete`.
    ok(run(&["principal", "create", "temp", "--role", "auditor"]));
    assert_eq!(json(&["principal", "revoke", "temp"])["deleted"], "temp");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}

/// `keyward access-key`: create prints the id and secret once (JSON carries
/// every field), list never shows a secret, revoke takes it away, bad ids
/// are refused naming the field.
#[test]
fn access_key_commands_create_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr, admin) = config_server(dir.path());
    let run = |args: &[&str]| keyward_as(&addr, &admin, args);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(run(&all))).unwrap()
    };
    ok(run(&["principal", "create", "sops-ci", "--role", "user"]));
    let k = json(&["access-key", "create", "--principal", "sops-ci"]);
    let id = k["access_key_id"].as_str().unwrap().to_string();
    let secret = k["secret_access_key"].as_str().unwrap().to_string();
    assert!(id.starts_with("KWAK") && id.len() == 20, "{k}");
    assert_eq!(secret.len(), 40, "{k}");
    assert_eq!(k["principal"], "sops-ci");
    assert!(humantime::parse_rfc3339(k["create_time"].as_str().unwrap()).is_ok(), "{k}");
    let text = ok(run(&["access-key", "create", "--principal", "sops-ci"]));
    assert!(
        text.contains("access key id:")
            && text.contains("secret access key:")
            && text.contains("shown only now"),
        "{text}"
    );

    let listed = ok(run(&["--output", "json", "access-key", "list", "--principal", "sops-ci"]));
    assert!(!listed.contains(&secret), "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["access_keys"].as_array().unwrap().len(), 2, "{listed}");
    assert!(listed["access_keys"].as_array().unwrap().iter().all(|k| k.get("secret_access_key").is_none()));
    let table = ok(run(&["access-key", "list"]));
    assert!(table.starts_with("ACCESS KEY ID") && table.contains(&id), "{table}");

    assert_eq!(json(&["access-key", "revoke", &id])["revoked"], id.as_str());
    let table = ok(run(&["access-key", "list"]));
    assert!(!table.contains(&id), "{table}");
    let err = fails(run(&["access-key", "revoke", &id]));
    assert!(err.contains("NotFound"), "{err}");
    let err = fails(run(&["access-key", "revoke", "not-a-key"]));
    assert!(err.contains("InvalidArgument") && err.contains("access_key_id"), "{err}");
    let err = fails(run(&["access-key", "create", "--principal", "nobody"]));
    assert!(err.contains("NotFound") && err.contains("nobody"), "{err}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}

/// Bad input is refused naming the field: by the CLI for a time to live, by
/// the server for an operation; the offline `token create` is unchanged.
#[test]
fn access_commands_refuse_bad_input_naming_the_field() {
    let offline = ok(Command::new(env!("CARGO_BIN_EXE_keyward")).args(["token", "create"]).output().unwrap());
    let lines: Vec<&str> = offline.lines().collect();
    assert!(lines[0].contains("my-service"), "{offline}");
    let token = lines[1].trim();
    assert!(token.starts_with("kw_") && token.len() == 67, "{offline}");
    assert!(offline.contains("add to the [[principals]] entry named \"my-service\""), "{offline}");
    let hash = lines[3].trim().strip_prefix("token_sha256 = [\"").unwrap().strip_suffix("\"]").unwrap();
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{offline}");

    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr, admin) = config_server(dir.path());
    let run = |args: &[&str]| keyward_as(&addr, &admin, args);
    ok(run(&["principal", "create", "payments-api", "--role", "user"]));
    for ttl in ["0s", "banana"] {
        let o = run(&["token", "create", "--principal", "payments-api", "--ttl", ttl]);
        assert_eq!(o.status.code(), Some(2), "a usage error, like other bad flags");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--ttl") && err.contains(ttl), "{ttl}: {err}");
    }
    let err = fails(run(&["token", "create", "--principal", "payments-api", "--ttl", "1000d"]));
    assert!(err.contains("InvalidArgument") && err.contains("ttl") && err.contains("max_token_ttl"), "{err}");
    let err = fails(run(&["token", "create", "--ttl", "15m"]));
    assert!(err.contains("--principal"), "{err}");
    let err = fails(run(&[
        "grant",
        "create",
        "--principal",
        "payments-api",
        "--key",
        "alias/payments",
        "--operation",
        "banana",
    ]));
    assert!(err.contains("InvalidArgument") && err.contains("operations") && err.contains("banana"), "{err}");
    let err = fails(run(&[
        "grant",
        "create",
        "--principal",
        "payments-api",
        "--key",
        "*",
        "--operation",
        "*",
        "--context-equals",
        "a=b",
        "--context-contains",
        "c=d",
    ]));
    assert!(err.contains("--context-equals") && err.contains("--context-contains"), "{err}");
    let err = fails(run(&["token", "revoke", "not-an-id"]));
    assert!(err.contains("InvalidArgument") && err.contains("token_id"), "{err}");
    // Without the admin role: refused, with the server's code.
    let user = serde_json::from_str::<serde_json::Value>(&ok(run(&[
        "--output",
        "json",
        "token",
        "create",
        "--principal",
        "payments-api",
        "--ttl",
        "1h",
    ])))
    .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let err = fails(keyward_as(&addr, &user, &["principal", "list"]));
    assert!(err.contains("PermissionDenied") && err.contains(&addr), "{err}");
    assert!(!err.contains(&user), "{err}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}
