//! The root key wrapped by an HSM over PKCS#11, against SoftHSM2 (Debian
//! `softhsm2`, installed by scripts/setup): init a token, create the
//! wrapping key with `keyward operator init --create-hsm-key`, start
//! (auto-unseal), restart, seal and unseal again, and refuse to start with a
//! clear error on a wrong PIN, a missing key or a missing module.

mod common;

use common::binary::*;
use common::clients::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A private SoftHSM2 token (scripts/softhsm-token); returns its SOFTHSM2_CONF.
fn token(dir: &Path, label: &str, pin: &str) -> String {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: install SoftHSM2 (apt-get install -y softhsm2; scripts/setup does it)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/softhsm-token");
    let o = Command::new(script).arg(dir).args([label, pin]).output().unwrap();
    assert!(o.status.success(), "softhsm-token: {}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8(o.stdout).unwrap();
    line.trim().strip_prefix("export SOFTHSM2_CONF=").unwrap().to_string()
}

fn config(
    dir: &Path,
    name: &str,
    data: &Path,
    port: u16,
    module: &str,
    pin_file: &Path,
    key_label: &str,
) -> PathBuf {
    let token = "kw_hsm_admin_token_0123456789abcdef0123456789abcdef0123456789ab";
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n\n[root_key]\nkind = \"pkcs11\"\nmodule = {module:?}\n\
             token_label = \"keyward\"\npin_file = {pin_file:?}\nkey_label = {key_label:?}\n\n\
             [[principals]]\nname = \"ops\"\nroles = [\"admin\", \"user\"]\ntoken_sha256 = [\"{sha}\"]\n\
             [[principals.grants]]\nkeys = [\"*\"]\noperations = [\"*\"]\n"
        ),
    )
    .unwrap();
    path
}

const TOKEN: &str = "kw_hsm_admin_token_0123456789abcdef0123456789abcdef0123456789ab";

fn keyward(conf: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward")).env("SOFTHSM2_CONF", conf).args(args).output().unwrap()
}

fn client(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_ADDR", addr)
        .env("KEYWARD_TOKEN", TOKEN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts the server; waits until it answers.
fn spawn(conf: &str, config: &Path, addr: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("SOFTHSM2_CONF", conf)
        .args(["server", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !client(addr, &["operator", "status"]).status.success() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("server exited ({status}): {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(20), "server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The server refuses to start: status 64 and a message with every word.
#[track_caller]
fn refuses(conf: &str, config: &Path, words: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("SOFTHSM2_CONF", conf)
        .args(["server", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts instead of refusing must not hang the test.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("the server started instead of refusing: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
}

#[test]
fn hsm_init_start_restart_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = dir.path().join("hsm");
    let conf = token(&hsm, "keyward", "pin-7f3a9c41e2");
    let pin = hsm.join("pin");
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), "keyward.toml", &data, port, MODULE, &pin, "keyward-root");

    // Before init: the server says to initialize.
    refuses(&conf, &cfg, &["not initialized", "keyward operator init"]);
    // Init without the key: refused, naming the label and the flag that creates it.
    let o = keyward(&conf, &["operator", "init", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("keyward-root") && err.contains("--create-hsm-key"), "{err}");
    assert!(!data.join("seal.json").exists());
    let out = ok(keyward(
        &conf,
        &["--output", "json", "operator", "init", "--config", cfg.to_str().unwrap(), "--create-hsm-key"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "pkcs11");
    let seal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("seal.json")).unwrap()).unwrap();
    assert_eq!(seal["kind"], "pkcs11");
    assert_eq!(seal["wrapped_root"].as_str().unwrap().len(), 126, "a 63-byte blob");

    // Start: unsealed from the HSM at once.
    let server = spawn(&conf, &cfg, &addr);
    let st: serde_json::Value =
        serde_json::from_str(&ok(client(&addr, &["--output", "json", "operator", "status"]))).unwrap();
    assert_eq!((st["sealed"].as_bool(), st["kind"].as_str()), (Some(false), Some("pkcs11")));
    ok(client(&addr, &["key", "create", "--alias", "alias/hsm"]));
    let ct = ok(client(&addr, &["encrypt", "--key", "alias/hsm", "--plaintext", "from the hsm"]))
        .trim()
        .to_string();
    // Seal drops the keys; an admin's empty unseal reads the HSM again.
    ok(client(&addr, &["operator", "seal"]));
    assert!(!client(&addr, &["decrypt", "--ciphertext", &ct]).status.success());
    ok(client(&addr, &["operator", "unseal"]));
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);

    // Restart: the same HSM key unwraps it again.
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    // Root-key rotation online: a new root key wrapped by the same HSM key;
    // seal.json names only it afterwards (the old one can never be unwrapped again).
    let before = std::fs::read_to_string(data.join("seal.json")).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&ok(client(&addr, &["--output", "json", "root-key", "rotate", "--online"])))
            .unwrap();
    assert_eq!((r["kind"].as_str(), r["keys"].as_u64()), (Some("pkcs11"), Some(1)), "{r}");
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("seal.json")).unwrap()).unwrap();
    assert!(after.get("previous").is_none(), "{after}");
    assert!(!before.contains(after["wrapped_root"].as_str().unwrap()), "a new wrapped root key");
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);
    // Offline too, on the stopped server.
    let out = ok(keyward(&conf, &["root-key", "rotate", "--config", cfg.to_str().unwrap()]));
    assert!(out.contains("root key rotated: 1 key ("), "{out}");
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);

    // Refusals, each naming what is wrong.
    let wrong_pin = dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "9999").unwrap();
    std::fs::set_permissions(&wrong_pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let c = config(dir.path(), "wrong-pin.toml", &data, port, MODULE, &wrong_pin, "keyward-root");
    refuses(&conf, &c, &["PIN", "wrong.pin", "not accepted"]);
    // seal.json names the HSM key that wrapped the root key, and the server
    // uses it over [root_key] key_label; a folder from before seal.json named
    // it uses the configured label, and a missing key refuses to start.
    let sealed = std::fs::read_to_string(data.join("seal.json")).unwrap();
    let mut legacy = json(&sealed);
    assert_eq!(legacy["key_label"], "keyward-root");
    legacy.as_object_mut().unwrap().remove("key_label");
    std::fs::write(data.join("seal.json"), legacy.to_string()).unwrap();
    let c = config(dir.path(), "wrong-key.toml", &data, port, MODULE, &pin, "no-such-key");
    refuses(&conf, &c, &["no-such-key", "keyward", "check token_label"]);
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);
    std::fs::write(data.join("seal.json"), &sealed).unwrap();
    let c =
        config(dir.path(), "no-module.toml", &data, port, "/nonexistent/libpkcs11.so", &pin, "keyward-root");
    refuses(&conf, &c, &["/nonexistent/libpkcs11.so"]);
    // The same key label on another token is another key: it does not open this folder.
    let other = token(&dir.path().join("hsm2"), "keyward", "1234");
    ok(keyward(
        &other,
        &[
            "operator",
            "init",
            "--config",
            config(
                dir.path(),
                "scratch.toml",
                &dir.path().join("scratch"),
                port,
                MODULE,
                &dir.path().join("hsm2/pin"),
                "keyward-root",
            )
            .to_str()
            .unwrap(),
            "--create-hsm-key",
        ],
    ));
    let c = config(
        dir.path(),
        "other-token.toml",
        &data,
        port,
        MODULE,
        &dir.path().join("hsm2/pin"),
        "keyward-root",
    );
    refuses(&other, &c, &["pkcs11"]);
    // Nothing secret in the data folder: no PIN, and the wrapped root only.
    let pin_text = std::fs::read(&pin).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let b = std::fs::read(&p).unwrap();
            assert!(!b.windows(pin_text.len()).any(|w| w == pin_text), "{} holds the PIN", p.display());
        }
    }
}

/// Item 5 for an HSM folder: a rotation moves the root key to a new HSM
/// key, the old HSM key is destroyed, and a backup made before can then be
/// restored but never opened; one made after opens. The destroy command
/// refuses the key in use, and wants --yes.
#[test]
fn hsm_key_rotation_makes_old_backups_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = dir.path().join("hsm");
    let conf = token(&hsm, "keyward", "pin-5c2e8a");
    let pin = hsm.join("pin");
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), "keyward.toml", &data, port, MODULE, &pin, "root-a");
    let cfg_s = cfg.to_str().unwrap();
    ok(keyward(&conf, &["operator", "init", "--config", cfg_s, "--create-hsm-key"]));
    let seal = |d: &Path| json(&std::fs::read_to_string(d.join("seal.json")).unwrap());
    assert_eq!(seal(&data)["key_label"], "root-a");

    let server = spawn(&conf, &cfg, &addr);
    ok(client(&addr, &["key", "create", "--alias", "alias/gone"]));
    let ct = ok(client(&addr, &["encrypt", "--key", "alias/gone", "--plaintext", "must not return"]))
        .trim()
        .to_string();
    let old_backup = dir.path().join("before.backup");
    ok(client(&addr, &["backup", "create", "--out", old_backup.to_str().unwrap()]));

    // A new label that does not exist needs --create-hsm-key; the current label is refused.
    let o = client(&addr, &["root-key", "rotate", "--online", "--new-hsm-key-label", "root-b"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("root-b") && err.contains("--create-hsm-key"), "{err}");
    let o = client(&addr, &["root-key", "rotate", "--online", "--new-hsm-key-label", "root-a"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("new label"));
    assert_eq!(seal(&data)["key_label"], "root-a", "a refused rotation changes nothing");
    let r = json(&ok(client(
        &addr,
        &[
            "--output",
            "json",
            "root-key",
            "rotate",
            "--online",
            "--new-hsm-key-label",
            "root-b",
            "--create-hsm-key",
        ],
    )));
    assert_eq!(
        (r["hsm_key_label"].as_str(), r["old_hsm_key_label"].as_str()),
        (Some("root-b"), Some("root-a")),
        "{r}"
    );
    assert!(r["next_step"].as_str().unwrap().contains("destroy-hsm-key"), "{r}");
    let s = seal(&data);
    assert_eq!(s["key_label"], "root-b");
    assert!(s.get("previous").is_none(), "{s}");
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "must not return");
    let new_backup = dir.path().join("after.backup");
    ok(client(&addr, &["backup", "create", "--out", new_backup.to_str().unwrap()]));

    // destroy-hsm-key: never the key in use; only with --yes; while the server serves.
    let destroy = |label: &str, yes: bool| {
        let mut args = vec!["root-key", "destroy-hsm-key", "--config", cfg_s, "--key-label", label];
        if yes {
            args.push("--yes");
        }
        keyward(&conf, &args)
    };
    let o = destroy("root-b", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is wrapped by HSM key \"root-b\""), "{err}");
    let o = destroy("root-a", false);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--yes"));
    let out = json(&ok(keyward(
        &conf,
        &[
            "--output",
            "json",
            "root-key",
            "destroy-hsm-key",
            "--config",
            cfg_s,
            "--key-label",
            "root-a",
            "--yes",
        ],
    )));
    assert_eq!(
        (out["destroyed"].as_bool(), out["key_label"].as_str()),
        (Some(true), Some("root-a")),
        "{out}"
    );
    let o = destroy("root-a", true);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no AES key labelled"));
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "must not return");
    stop(server);
    // A restart unwraps with seal.json's label, not the configured one (root-a is gone).
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "must not return");
    stop(server);

    // The backup from before restores (it is intact), but nothing can open it.
    ok(keyward(&conf, &["backup", "verify", old_backup.to_str().unwrap()]));
    let restored = dir.path().join("restored-old");
    ok(keyward(
        &conf,
        &["backup", "restore", old_backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
    ));
    let c = config(dir.path(), "old.toml", &restored, port, MODULE, &pin, "root-a");
    refuses(&conf, &c, &["no AES key labelled \"root-a\"", "destroyed"]);
    // Another label in the configuration does not help: the backup's seal.json names root-a.
    let c = config(dir.path(), "old-b.toml", &restored, port, MODULE, &pin, "root-b");
    refuses(&conf, &c, &["no AES key labelled \"root-a\""]);
    // The backup from after opens, and decrypts what was made before.
    let restored = dir.path().join("restored-new");
    ok(keyward(
        &conf,
        &["backup", "restore", new_backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
    ));
    let c = config(dir.path(), "new.toml", &restored, port, MODULE, &pin, "root-a");
    let server = spawn(&conf, &c, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "must not return");
    stop(server);

    // Offline too: to a third key, then the second one goes.
    let r = json(&ok(keyward(
        &conf,
        &[
            "--output",
            "json",
            "root-key",
            "rotate",
            "--config",
            cfg_s,
            "--new-hsm-key-label",
            "root-c",
            "--create-hsm-key",
        ],
    )));
    assert_eq!(
        (r["hsm_key_label"].as_str(), r["old_hsm_key_label"].as_str()),
        (Some("root-c"), Some("root-b")),
        "{r}"
    );
    assert_eq!(seal(&data)["key_label"], "root-c");
    ok(destroy("root-b", true));
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "must not return");
    stop(server);
}
