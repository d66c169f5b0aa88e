//! Backup and restore over the real binary: `keyward backup create` under
//! load while the server serves, `backup verify` and `backup restore` with
//! no server, a server on the restored folder that decrypts what was made
//! before and whose audit chain verifies, a corrupted file refused
//! everywhere, and a Shamir folder restored and unsealed with its shares.

mod common;

use common::binary::*;
use common::clients::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "kw_backup_admin_0123456789abcdef0123456789abcdef0123456789abcdef";
const USER: &str = "kw_backup_user_0123456789abcdef0123456789abcdef0123456789abcdef0";

fn config(dir: &Path, name: &str, data: &Path, port: u16, root_key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n{root_key}\n\n\
             [[principals]]\nname = \"ops\"\nroles = [\"admin\", \"auditor\", \"user\"]\ntoken_sha256 = [\"{}\"]\n\
             [[principals.grants]]\nkeys = [\"*\"]\noperations = [\"*\"]\n\n\
             [[principals]]\nname = \"app\"\nroles = [\"user\"]\ntoken_sha256 = [\"{}\"]\n\
             [[principals.grants]]\nkeys = [\"*\"]\noperations = [\"*\"]\n",
            sha(ADMIN),
            sha(USER)
        ),
    )
    .unwrap();
    path
}

fn run(addr: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", addr)
        .env("KEYWARD_TOKEN", token)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `keyward operator unseal` with the share on stdin.
fn unseal(addr: &str, share: &str) -> Output {
    with_stdin(&["operator", "unseal"], &[("KEYWARD_ADDR", addr)], &format!("{share}\n"))
}

fn offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward")).args(args).output().unwrap()
}

#[track_caller]
fn fails(o: Output, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected a failure: {}", String::from_utf8_lossy(&o.stdout));
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    err
}

fn spawn(config: &Path, addr: &str) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !run(addr, ADMIN, &["operator", "status"]).status.success() {
        assert!(start.elapsed() < Duration::from_secs(20), "server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn backup_under_load_restore_decrypt_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    ok(offline(&["root-key", "create", root.to_str().unwrap()]));
    let root_hex = std::fs::read_to_string(&root).unwrap().trim().to_string();
    let table = format!("[root_key]\nkind = \"file\"\nfile = {root:?}");
    let (port, port2) = (free_port(), free_port());
    let (addr, addr2) = (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port2}"));
    let data = dir.path().join("data");
    let server = spawn(&config(dir.path(), "a.toml", &data, port, &table), &addr);

    // Keys, versions and ciphertexts made before the backup.
    let mut made: Vec<(String, String)> = Vec::new();
    for k in 0..5 {
        let alias = format!("alias/k{k}");
        ok(run(&addr, ADMIN, &["key", "create", "--alias", &alias]));
        for v in 0..3 {
            for i in 0..4 {
                let text = format!("secret {k}-{v}-{i}");
                let ct = ok(run(&addr, USER, &["encrypt", "--key", &alias, "--plaintext", &text]));
                made.push((ct.trim().to_string(), text));
            }
            ok(run(&addr, ADMIN, &["key", "rotate", &alias]));
        }
    }
    // Load while the backup runs.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop_load, addr) = (stop_load.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop_load.load(Ordering::SeqCst) {
                ok(run(&addr, USER, &["data-key", "--key", "alias/k0"]));
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let file = dir.path().join("keyward.backup");
    // Not for a user: admin only, and refused (audited) without leaving a file.
    fails(run(&addr, USER, &["backup", "create", "--out", file.to_str().unwrap()]), &["PermissionDenied"]);
    assert!(!file.exists());
    let created = json(&ok(run(
        &addr,
        ADMIN,
        &["--output", "json", "backup", "create", "--out", file.to_str().unwrap()],
    )));
    stop_load.store(true, Ordering::SeqCst);
    let during = load.join().unwrap();
    assert!(during > 0, "no load ran during the backup");
    assert_eq!(created["file_bytes"].as_u64().unwrap(), std::fs::metadata(&file).unwrap().len());
    assert!(created["entries"]["secrets"].as_u64().unwrap() >= 20, "{created}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Refuses to overwrite.
    fails(run(&addr, ADMIN, &["backup", "create", "--out", file.to_str().unwrap()]), &["exists"]);
    stop(server);

    // Nothing in the clear: not the root key, not a plaintext.
    let bytes = std::fs::read(&file).unwrap();
    assert!(!contains(&bytes, root_hex.as_bytes()) && !contains(&bytes, &hex::decode(&root_hex).unwrap()));
    assert!(!made.iter().any(|(_, t)| contains(&bytes, t.as_bytes())));

    // Verify without a server.
    let v = json(&ok(offline(&["--output", "json", "backup", "verify", file.to_str().unwrap()])));
    assert_eq!((v["ok"].as_bool(), v["audit_chain_intact"].as_bool()), (Some(true), Some(true)), "{v}");
    assert_eq!(v["sha256"], created["sha256"]);
    assert!(v["audit_records_checked"].as_u64().unwrap() > 60, "{v}");

    // Restore into a new folder and serve it with the same root key.
    let data2 = dir.path().join("restored");
    let r = json(&ok(offline(&[
        "--output",
        "json",
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data2.to_str().unwrap(),
    ])));
    assert_eq!(r["audit_chain_intact"], true, "{r}");
    fails(
        offline(&["backup", "restore", file.to_str().unwrap(), "--data-dir", data2.to_str().unwrap()]),
        &["not empty"],
    );
    let server2 = spawn(&config(dir.path(), "b.toml", &data2, port2, &table), &addr2);
    for (ct, text) in &made {
        assert_eq!(&ok(run(&addr2, USER, &["decrypt", "--ciphertext", ct])), text);
    }
    let chain = json(&ok(run(&addr2, ADMIN, &["--output", "json", "audit", "verify"])));
    assert_eq!(chain["intact"], true, "{chain}");
    // The backup's own record is in it; the user's refused attempt too.
    let q =
        json(&ok(run(&addr2, ADMIN, &["--output", "json", "audit", "query", "--operation", "CreateBackup"])));
    let outcomes: Vec<&str> =
        q["records"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"OK") && outcomes.contains(&"PERMISSION_DENIED"), "{outcomes:?}");
    stop(server2);

    // One corrupted byte anywhere: verify and restore refuse, and leave no folder.
    for at in [20, bytes.len() / 3, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
        let bad = dir.path().join(format!("bad-{at}.backup"));
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        fails(offline(&["backup", "verify", bad.to_str().unwrap()]), &["not a valid Keyward backup"]);
        let target = dir.path().join(format!("never-{at}"));
        fails(
            offline(&["backup", "restore", bad.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]),
            &["not a valid Keyward backup"],
        );
        assert!(!target.exists(), "a refused restore left {}", target.display());
    }
    let truncated = dir.path().join("short.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails(offline(&["backup", "verify", truncated.to_str().unwrap()]), &["truncated"]);
}

#[test]
fn shamir_folder_restores_and_unseals_with_its_shares() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = json(&ok(offline(&[
        "--output",
        "json",
        "operator",
        "init",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
    ])));
    let shares: Vec<String> =
        init["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let table = "[root_key]\nkind = \"shamir\"";
    let (port, port2) = (free_port(), free_port());
    let (addr, addr2) = (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port2}"));
    let server = spawn(&config(dir.path(), "a.toml", &data, port, table), &addr);
    for s in &shares[..2] {
        ok(unseal(&addr, s));
    }
    ok(run(&addr, ADMIN, &["key", "create", "--alias", "alias/s"]));
    let ct =
        ok(run(&addr, USER, &["encrypt", "--key", "alias/s", "--plaintext", "shared"])).trim().to_string();
    let file = dir.path().join("s.backup");
    ok(run(&addr, ADMIN, &["backup", "create", "--out", file.to_str().unwrap()]));
    stop(server);
    let data2 = dir.path().join("restored");
    let r = json(&ok(offline(&[
        "--output",
        "json",
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data2.to_str().unwrap(),
    ])));
    assert_eq!(r["sealed_by"], "shamir");
    assert!(data2.join("seal.json").exists());
    let server2 = spawn(&config(dir.path(), "b.toml", &data2, port2, table), &addr2);
    fails(run(&addr2, USER, &["decrypt", "--ciphertext", &ct]), &["sealed"]);
    for s in &shares[1..] {
        ok(unseal(&addr2, s));
    }
    assert_eq!(ok(run(&addr2, USER, &["decrypt", "--ciphertext", &ct])), "shared");
    stop(server2);
}
