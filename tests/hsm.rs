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
    let o = keyward(conf, &["server", "--config", config.to_str().unwrap()]);
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
    assert!(out.contains("root key rotated: 1 keys"), "{out}");
    let server = spawn(&conf, &cfg, &addr);
    assert_eq!(ok(client(&addr, &["decrypt", "--ciphertext", &ct])), "from the hsm");
    stop(server);

    // Refusals, each naming what is wrong.
    let wrong_pin = dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "9999").unwrap();
    std::fs::set_permissions(&wrong_pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let c = config(dir.path(), "wrong-pin.toml", &data, port, MODULE, &wrong_pin, "keyward-root");
    refuses(&conf, &c, &["PIN", "wrong.pin", "not accepted"]);
    let c = config(dir.path(), "wrong-key.toml", &data, port, MODULE, &pin, "no-such-key");
    refuses(&conf, &c, &["no-such-key", "keyward"]);
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
