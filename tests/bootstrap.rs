//! The server bootstrap: everything is validated before anything is bound
//! (a bad TLS file fails at start, status 64, naming the file, with nothing
//! listening), and one shutdown releases the store even while a client
//! still holds a connection open.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

mod common;
use common::TestServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A production-style config (TLS, principals) whose TLS files are `cert` and `key`.
fn config_with_tls(dir: &Path, cert: &Path, key: &Path, port: u16, metrics: u16) -> std::path::PathBuf {
    let root = dir.join("root.key");
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("root-key")
        .arg("create")
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = format!(
        r#"
listen = "127.0.0.1:{port}"
data_dir = "{data}"
root_key_file = "{root}"
metrics_listen = "127.0.0.1:{metrics}"

[tls]
cert_file = "{cert}"
key_file = "{key}"

[[principals]]
name = "ops"
roles = ["admin"]
token_sha256 = ["{hash}"]
"#,
        data = dir.join("data").display(),
        root = root.display(),
        cert = cert.display(),
        key = key.display(),
        hash = "00".repeat(32),
    );
    let file = dir.join("keyward.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[track_caller]
fn refused_at_start(config: &Path, dir: &Path, port: u16, metrics: u16, needle: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("server")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains(needle), "{err:?} does not name {needle:?}");
    // Nothing was bound and nothing was opened: TLS is read first.
    for p in [port, metrics] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err(), "port {p} is open");
    }
    assert!(!dir.join("data").exists(), "the data folder was created before TLS was checked");
}

#[test]
fn a_bad_tls_file_fails_at_start_with_status_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let cert = dir.path().join("missing-cert.pem");
    let key = dir.path().join("missing-key.pem");
    let config = config_with_tls(dir.path(), &cert, &key, port, metrics);
    refused_at_start(&config, dir.path(), port, metrics, cert.to_str().unwrap());

    // The certificate is there, the key is not.
    std::fs::write(&cert, "not a certificate").unwrap();
    refused_at_start(&config, dir.path(), port, metrics, key.to_str().unwrap());

    // Both are there, neither is PEM.
    std::fs::write(&key, "not a key").unwrap();
    refused_at_start(&config, dir.path(), port, metrics, "tls:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_store_while_a_metrics_client_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = keyward::ServerConfig::dev(dir.path());
    config.metrics_listen = Some(metrics);
    let server = TestServer::start_with(dir.path(), config, None).await;
    server.create_key("alias/held").await;
    // An HTTP/1.1 keep-alive connection, left open after its response.
    let mut conn = std::net::TcpStream::connect(metrics).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    let n = conn.read(&mut first).unwrap();
    assert!(std::str::from_utf8(&first[..n]).unwrap().starts_with("HTTP/1.1 200"));

    server.stop().await.unwrap();
    // The store is released when `run` returns: the folder opens again at once.
    keyward_store::RocksStore::open(&dir.path().join("db")).expect("the store was released");
    drop(conn);
}

#[tokio::test]
async fn a_data_folder_others_can_enter_is_refused_and_a_new_one_is_made_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Made by the server: 0700, parents included.
    let fresh = dir.path().join("new").join("data");
    let prepared = keyward::Server::build(keyward::ServerConfig::dev(&fresh)).await.unwrap();
    prepared.close();
    for d in [dir.path().join("new"), fresh.clone()] {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
    // Group or other bits: refused as a configuration error (status 64), untouched.
    for mode in [0o750, 0o705, 0o2770] {
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = keyward::Server::build(keyward::ServerConfig::dev(&fresh)).await.unwrap_err();
        assert!(matches!(e, keyward::ServerError::Config(_)), "{e}");
        let m = e.to_string();
        assert!(m.contains(&fresh.display().to_string()) && m.contains("chmod 0700"), "{m}");
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777, mode);
    }
}
