//! Root-key rotation over the real binary: online on a running server,
//! offline on a stopped one, crash-safe under SIGKILL at any point, for a
//! key file and for Shamir shares; afterwards the old root key no longer
//! opens the store, every ciphertext made before decrypts, and a backup
//! made under the old key is readable only with it (destroying the old key
//! makes such backups unreadable).

mod common;

use common::binary::*;
use common::clients::free_port;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyward::pb;
use serde_json::Value;

const ADMIN: &str = "kw_rotation_admin_0123456789abcdef0123456789abcdef0123456789abcd";

fn config(dir: &Path, name: &str, data: &Path, port: u16, root_key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n{root_key}\n\n\
             [[principals]]\nname = \"ops\"\nroles = [\"admin\", \"auditor\", \"user\"]\ntoken_sha256 = [\"{}\"]\n\
             [[principals.grants]]\nkeys = [\"*\"]\noperations = [\"*\"]\n",
            sha(ADMIN)
        ),
    )
    .unwrap();
    path
}

fn file_key(path: &Path) -> String {
    format!("[root_key]\nkind = \"file\"\nfile = {path:?}")
}

fn run(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", addr)
        .env("KEYWARD_TOKEN", ADMIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn offline(args: &[&str], stdin: &str) -> Output {
    with_stdin(args, &[], stdin)
}

fn spawn(config: &Path, addr: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !run(addr, &["operator", "status"]).status.success() {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("server exited ({st}): {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The server refuses to start with this root key.
#[track_caller]
fn refuses_to_start(config: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn online_rotation_and_backups_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
    ok(offline(&["root-key", "create", old.to_str().unwrap()], ""));
    ok(offline(&["root-key", "create", new.to_str().unwrap()], ""));
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let with_old = config(dir.path(), "old.toml", &data, port, &file_key(&old));
    let with_new = config(dir.path(), "new.toml", &data, port, &file_key(&new));
    let server = spawn(&with_old, &addr);
    let mut made = Vec::new();
    for k in 0..4 {
        let alias = format!("alias/r{k}");
        ok(run(&addr, &["key", "create", "--alias", &alias]));
        for v in 0..2 {
            let text = format!("before {k}-{v}");
            made.push((
                ok(run(&addr, &["encrypt", "--key", &alias, "--plaintext", &text])).trim().to_string(),
                text,
            ));
            ok(run(&addr, &["key", "rotate", &alias]));
        }
    }
    ok(run(&addr, &["access-key", "create", "--principal", "ops"]));
    let backup = dir.path().join("before.backup");
    ok(run(&addr, &["backup", "create", "--out", backup.to_str().unwrap()]));

    // Refusals: no file, the current key, a missing file; all audited, nothing changes.
    for (file, why) in [
        (None, "new_root_key_file"),
        (Some(&old), "current one"),
        (Some(&dir.path().join("nope.key")), "No such file"),
    ] {
        let mut args = vec!["root-key", "rotate", "--online"];
        let f;
        if let Some(p) = file {
            f = p.to_str().unwrap().to_string();
            args.extend(["--new-root-key-file", &f]);
        }
        let o = run(&addr, &args);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(why),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let r = json(&ok(run(
        &addr,
        &["--output", "json", "root-key", "rotate", "--online", "--new-root-key-file", new.to_str().unwrap()],
    )));
    assert_eq!(
        (r["keys"].as_u64(), r["versions"].as_u64(), r["aliases"].as_u64()),
        (Some(4), Some(12), Some(4)),
        "{r}"
    );
    assert!(r["next_step"].as_str().unwrap().contains(new.to_str().unwrap()));
    // Served on at once, under the new key: old ciphertexts decrypt, new versions work.
    for (ct, text) in &made {
        assert_eq!(&ok(run(&addr, &["decrypt", "--ciphertext", ct])), text);
    }
    ok(run(&addr, &["key", "rotate", "alias/r0"]));
    let after = ok(run(&addr, &["encrypt", "--key", "alias/r0", "--plaintext", "after"])).trim().to_string();
    let v = json(&ok(run(&addr, &["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");
    let q = json(&ok(run(&addr, &["--output", "json", "audit", "query", "--operation", "RotateRootKey"])));
    let outcomes: Vec<&str> =
        q["records"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "OK").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.len(), 4, "three refusals and the rotation: {outcomes:?}");
    stop(server);

    // The old key no longer opens the store; the new one does.
    refuses_to_start(&with_old);
    let server = spawn(&with_new, &addr);
    assert_eq!(ok(run(&addr, &["decrypt", "--ciphertext", &after])), "after");
    assert_eq!(ok(run(&addr, &["decrypt", "--ciphertext", &made[0].0])), made[0].1);
    stop(server);

    // A backup made before the rotation is readable only with the old key:
    // destroy the old key, and the backup is useless.
    let restored = dir.path().join("restored");
    ok(offline(
        &["backup", "restore", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
        "",
    ));
    let port2 = free_port();
    refuses_to_start(&config(dir.path(), "r-new.toml", &restored, port2, &file_key(&new)));
    let addr2 = format!("http://127.0.0.1:{port2}");
    let server = spawn(&config(dir.path(), "r-old.toml", &restored, port2, &file_key(&old)), &addr2);
    assert_eq!(ok(run(&addr2, &["decrypt", "--ciphertext", &made[1].0])), made[1].1);
    stop(server);
}

fn auth<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut().insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    r
}

/// Makes `n` keys with a ciphertext each over gRPC (fast), returns the ciphertexts.
fn populate(addr: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let out = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(addr.to_string()).unwrap().connect().await.unwrap();
        futures_util::stream::iter(0..n)
            .map(|i| {
                let ch = ch.clone();
                async move {
                    let mut keys = pb::key_service_client::KeyServiceClient::new(ch.clone());
                    let mut crypto = pb::crypto_service_client::CryptoServiceClient::new(ch);
                    let id = keys
                        .create_key(auth(tonic::Request::new(pb::CreateKeyRequest::default())))
                        .await
                        .unwrap()
                        .into_inner()
                        .key
                        .unwrap()
                        .key_id;
                    let text = format!("crash {i}").into_bytes();
                    let req = pb::EncryptRequest {
                        key_id: id,
                        plaintext: text.clone(),
                        encryption_context: HashMap::new(),
                        ..Default::default()
                    };
                    let ct =
                        crypto.encrypt(auth(tonic::Request::new(req))).await.unwrap().into_inner().ciphertext;
                    (ct, text)
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
    });
    drop(rt);
    out
}

#[test]
fn offline_rotation_survives_sigkill_at_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let mut current = dir.path().join("k0.key");
    ok(offline(&["root-key", "create", current.to_str().unwrap()], ""));
    let server = spawn(&config(dir.path(), "k0.toml", &data, port, &file_key(&current)), &addr);
    let sample = populate(&addr, 2000);
    stop(server);
    let wrapped_before: Vec<Vec<u8>> = stored(&data, "secrets").into_iter().map(|(_, v)| v).collect();
    let signer_before = stored(&data, "meta");
    assert_eq!(wrapped_before.len(), 2000);

    // Stop rotations between their steps: exactly at each crash point
    // (KEYWARD_CRASH_AT: an abort, no destructors or flush, like a SIGKILL),
    // then SIGKILLs after delays spread over a whole run (opening,
    // re-wrapping, the write, the purge after it) wherever they fall.
    // Whatever the point, the store opens with the old key or the new one,
    // and running the same command again finishes the job.
    // One run to completion first: its duration spreads the delays.
    let k1 = dir.path().join("k1.key");
    let started = Instant::now();
    ok(offline(
        &[
            "root-key",
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--root-key-file",
            current.to_str().unwrap(),
            "--new-root-key-file",
            k1.to_str().unwrap(),
        ],
        "",
    ));
    let full = started.elapsed().as_millis() as u64;
    current = k1;
    enum Stop {
        /// Aborts at this crash point; whether the new key opens the store after.
        At(&'static str, bool),
        /// SIGKILL after this many milliseconds.
        After(u64),
    }
    let stops = [
        Stop::At("rotate-before-write", false),
        Stop::At("rekey-written", true),
        Stop::At("rotate-before-settle", true),
        Stop::After(0),
        Stop::After(full / 4),
        Stop::After(full / 2),
        Stop::After(full * 3 / 4),
        Stop::After(full),
    ];
    let runs = stops.len();
    let (mut committed, mut interrupted) = (0, 0);
    for (i, stop_at) in stops.into_iter().enumerate() {
        let i = i + 1;
        let next = dir.path().join(format!("k{}.key", i + 1));
        let args = [
            "root-key",
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--root-key-file",
            current.to_str().unwrap(),
            "--new-root-key-file",
            next.to_str().unwrap(),
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let status = match stop_at {
            Stop::At(point, _) => {
                let status = cmd.env(keyward_core::CRASH_AT_VAR, point).status().unwrap();
                assert!(!status.success(), "the run did not stop at {point}");
                status
            }
            Stop::After(ms) => {
                let mut child = cmd.spawn().unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        if !status.success() {
            interrupted += 1;
        }
        // Exactly one of the two keys opens the store now.
        let opens = |k: &Path| {
            let o = offline(
                &[
                    "root-key",
                    "rotate",
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--root-key-file",
                    k.to_str().unwrap(),
                    "--new-root-key-file",
                    k.to_str().unwrap(),
                ],
                "",
            );
            // Rotating a key to itself: "already" when it opens the store, else refused.
            o.status.success()
        };
        let (old_opens, new_opens) = (opens(&current), next.exists() && opens(&next));
        let at = match stop_at {
            Stop::At(point, expect_new) => {
                assert_eq!(new_opens, expect_new, "after an abort at {point}: new key opens {new_opens}");
                point.to_string()
            }
            Stop::After(ms) => format!("a kill after {ms} ms"),
        };
        assert!(old_opens ^ new_opens, "after {at} ({status}): old opens {old_opens}, new opens {new_opens}");
        if new_opens {
            committed += 1;
        }
        // The same command again finishes (or says it is done).
        let again = ok(offline(&args, ""));
        assert!(again.contains("rotated") || again.contains("already"), "{again}");
        current = next;
    }
    // How the timed kills fell (a noisy machine moves them; the checks above
    // hold either way, and the crash points cover each step exactly).
    eprintln!(
        "a full rotation took {full} ms; {interrupted} of {runs} runs were stopped, {committed} after their write"
    );

    // Served with the last key: everything made before decrypts; the chain
    // verifies and records exactly one rotation per run.
    let server = spawn(&config(dir.path(), "last.toml", &data, port, &file_key(&current)), &addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await.unwrap();
        let mut crypto = pb::crypto_service_client::CryptoServiceClient::new(ch);
        for (ct, text) in sample.iter().step_by(97) {
            let mut r =
                tonic::Request::new(pb::DecryptRequest { ciphertext: ct.clone(), ..Default::default() });
            r.metadata_mut().insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
            assert_eq!(&crypto.decrypt(r).await.unwrap().into_inner().plaintext, text);
        }
    });
    drop(rt);
    let v = json(&ok(run(&addr, &["--output", "json", "audit", "verify"])));
    assert_eq!(v["intact"], true, "{v}");
    let q = json(&ok(run(
        &addr,
        &["--output", "json", "audit", "query", "--operation", "RotateRootKey", "--limit", "100"],
    )));
    let ok_count = q["records"].as_array().unwrap().iter().filter(|r| r["outcome"] == "OK").count();
    assert_eq!(ok_count, 1 + runs, "one record per rotation: {q}");
    stop(server);

    // No file of the store still holds a secret wrapped under the first
    // root key, nor the signing key sealed under it: purged, not just replaced.
    // (Each is looked for by its last 32 bytes: AES-GCM tag and ciphertext, random.)
    let files = all_bytes(&data.join("db"));
    let mut needles: std::collections::HashSet<&[u8]> =
        wrapped_before.iter().map(|w| &w[w.len() - 32..]).collect();
    let signer: Vec<&Vec<u8>> =
        signer_before.iter().filter(|(k, _)| k.as_slice() == b"audit_signer").map(|(_, v)| v).collect();
    assert_eq!(signer.len(), 1);
    needles.insert(&signer[0][signer[0].len() - 32..]);
    let leftover = files.windows(32).filter(|w| needles.contains(w)).count();
    assert_eq!(leftover, 0, "{leftover} values sealed under the old root key remain in the files");
}

/// The values of column family `cf` of the stopped store in `data`.
fn stored(data: &Path, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    use keyward_core::Store;
    let store = keyward_store::RocksStore::open_read_only(&data.join("db")).unwrap();
    let mut out = Vec::new();
    store
        .snapshot_entries(&mut |c, k, v| {
            if c == cf {
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn shamir_rotation_offline_shows_new_shares_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = json(&ok(offline(
        &[
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
        ],
        "",
    )));
    let old: Vec<String> =
        init["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), "s.toml", &data, port, "[root_key]\nkind = \"shamir\"");
    // The share on stdin, as `keyward operator unseal < share` sends it.
    let unseal =
        |share: &str| with_stdin(&["operator", "unseal"], &[("KEYWARD_ADDR", &addr)], &format!("{share}\n"));
    let server = spawn(&cfg, &addr);
    for s in &old[..2] {
        ok(unseal(s));
    }
    ok(run(&addr, &["key", "create", "--alias", "alias/s"]));
    let ct = ok(run(&addr, &["encrypt", "--key", "alias/s", "--plaintext", "kept"])).trim().to_string();
    // Not online: the new shares must be shown before anything changes.
    let o = run(&addr, &["root-key", "rotate", "--online"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("offline"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stop(server);

    // Wrong current shares: refused, nothing changes.
    let forged = offline(
        &["root-key", "rotate", "--data-dir", data.to_str().unwrap(), "--shares", "4", "--threshold", "3"],
        &format!("{}\n{}\n", old[0], old[0]),
    );
    assert!(!forged.status.success(), "the same share twice must not rebuild the key");
    let err = String::from_utf8_lossy(&forged.stderr);
    assert!(err.contains("was given twice"), "the refusal names the repeated share: {err}");
    let out = ok(offline(
        &["root-key", "rotate", "--data-dir", data.to_str().unwrap(), "--shares", "4", "--threshold", "3"],
        &format!("{}\n{}\n", old[2], old[1]),
    ));
    let new: Vec<String> =
        out.lines().filter_map(|l| l.split_once(": kws1-").map(|(_, s)| format!("kws1-{s}"))).collect();
    assert_eq!(new.len(), 4, "{out}");
    assert!(out.contains("rotated the root key of") && out.contains("root key rotated: 1 key ("), "{out}");
    let seal: Value = serde_json::from_slice(&std::fs::read(data.join("seal.json")).unwrap()).unwrap();
    assert_eq!((seal["threshold"].as_u64(), seal.get("previous").is_none()), (Some(3), true), "{seal}");

    let server = spawn(&cfg, &addr);
    let o = unseal(&old[0]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("belongs to initialization"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for s in &new[1..4] {
        ok(unseal(s));
    }
    assert_eq!(ok(run(&addr, &["decrypt", "--ciphertext", &ct])), "kept");
    stop(server);

    // --output json: one document, the new shares and the outcome together.
    let out = ok(offline(
        &[
            "--output",
            "json",
            "root-key",
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--shares",
            "2",
            "--threshold",
            "2",
        ],
        &format!("{}\n{}\n{}\n", new[0], new[2], new[3]),
    ));
    let doc: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"));
    assert_eq!(doc["shares"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(
        (doc["kind"].as_str(), doc["threshold"].as_u64(), doc["keys"].as_u64()),
        (Some("shamir"), Some(2), Some(1)),
        "{doc}"
    );
    assert!(doc["next_step"].as_str().is_some_and(|s| s.contains("new shares")), "{doc}");
}
