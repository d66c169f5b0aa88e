//! Health and fail-closed behaviour: when audit records cannot be written,
//! key use stops (UNAVAILABLE, nothing secret returned), health says
//! NOT_SERVING, and service resumes by itself when writes succeed again.
//! Also the Prometheus metrics listener.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_status, ctx, TestServer};
use keyward::pb;
use keyward_core::testing::FaultyStore;
use keyward_store::RocksStore;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn health(s: &TestServer, service: &str) -> i32 {
    HealthClient::new(s.channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn wait_health(s: &TestServer, want: ServingStatus) {
    let start = Instant::now();
    while health(s, "").await != want as i32 {
        assert!(start.elapsed() < Duration::from_secs(10), "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn audit_write_failure_fails_closed_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = keyward::ServerConfig::dev(dir.path());
    config.kms.audit.deadline = Duration::from_millis(300);
    std::fs::create_dir_all(dir.path()).unwrap();
    let root = keyward::config::load_root_key(&config.root_key).unwrap();
    let rocks = Arc::new(RocksStore::open(&dir.path().join("db")).unwrap());
    let (faulty, faults) = FaultyStore::new(rocks);
    let s = TestServer::start_with(dir.path(), config, Some((Arc::new(faulty), root))).await;
    assert_eq!(health(&s, "").await, ServingStatus::Serving as i32);
    assert_eq!(health(&s, "keyward.v1.CryptoService").await, ServingStatus::Serving as i32);
    assert_eq!(health(&s, "keyward.v1.AccessService").await, ServingStatus::Serving as i32);
    let id = s.create_key("").await;
    let mut crypto = s.crypto();
    let req = || pb::GenerateDataKeyRequest { key_id: id.clone(), ..Default::default() };
    crypto.generate_data_key(req()).await.unwrap();
    let before = s.audit_count().await;

    // Disk full: every key use fails UNAVAILABLE, lifecycle changes do not happen.
    faults.fail_writes.store(true, Ordering::SeqCst);
    let st = assert_status(crypto.generate_data_key(req()).await, Code::Unavailable, "audit log unavailable");
    assert!(st.details().is_empty());
    assert_status(
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            })
            .await,
        Code::Unavailable,
        "audit",
    );
    assert_status(
        s.keys().rotate_key(pb::RotateKeyRequest { key_id: id.clone() }).await,
        Code::Unavailable,
        "audit",
    );
    wait_health(&s, ServingStatus::NotServing).await;
    assert_eq!(health(&s, "keyward.v1.CryptoService").await, ServingStatus::NotServing as i32);

    // Writes succeed again: serving resumes by itself; the failed rotation left no trace.
    faults.fail_writes.store(false, Ordering::SeqCst);
    crypto.generate_data_key(req()).await.unwrap();
    wait_health(&s, ServingStatus::Serving).await;
    let k = s
        .keys()
        .describe_key(pb::DescribeKeyRequest { key_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k.primary_version, 1, "the refused rotation did not happen");
    // Records: the verify, the data key, the describe; none of the refused ones.
    assert_eq!(s.audit_count().await, before + 3);

    // A stuck writer: requests give up at the deadline instead of hanging.
    faults.stall_ms.store(1500, Ordering::SeqCst);
    let started = Instant::now();
    assert_status(crypto.generate_data_key(req()).await, Code::Unavailable, "audit");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "gave up at the deadline: {:?}",
        started.elapsed()
    );
    wait_health(&s, ServingStatus::NotServing).await;
    faults.stall_ms.store(0, Ordering::SeqCst);
    // The stalled write completes on its own; service resumes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    crypto.generate_data_key(req()).await.unwrap();
    wait_health(&s, ServingStatus::Serving).await;
    s.stop().await.unwrap();
}

/// Fetches `GET /metrics` over plain HTTP/1.0.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no metrics listener at {addr}")
}

#[tokio::test]
async fn metrics_count_rpcs_audit_batches_and_keys_without_secrets_or_ids() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = keyward::ServerConfig::dev(dir.path());
    config.metrics_listen = Some(maddr);
    let s = TestServer::start_with(dir.path(), config, None).await;
    let key = s.create_key("alias/metrics").await;
    let mut crypto = s.crypto();
    for _ in 0..3 {
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: key.clone(),
                plaintext: b"metric-plaintext".to_vec(),
                encryption_context: ctx(&[("tenant", "secret-tenant-value")]),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let _ = crypto
        .decrypt(pb::DecryptRequest { ciphertext: vec![1; 100], ..Default::default() })
        .await
        .unwrap_err();
    let text = scrape(maddr).await;
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    for want in [
        r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Encrypt",grpc_service="keyward.v1.CryptoService",grpc_type="unary"} 3"#,
        r#"grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Decrypt",grpc_service="keyward.v1.CryptoService",grpc_type="unary"} 1"#,
        r#"grpc_server_handling_seconds_count{grpc_method="Encrypt",grpc_service="keyward.v1.CryptoService",grpc_type="unary"} 3"#,
        r#"grpc_server_started_total{grpc_method="CreateKey",grpc_service="keyward.v1.KeyService",grpc_type="unary"} 1"#,
        r#"keyward_keys{state="enabled"} 1"#,
        r#"keyward_keys{state="destroyed"} 0"#,
        "keyward_audit_write_failures_total 0",
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
    let batches: f64 = text
        .lines()
        .find(|l| l.starts_with("keyward_audit_batch_records_sum"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(batches >= 5.0, "CreateKey, 3 Encrypt, Decrypt: {batches} records");
    assert!(text.contains("keyward_audit_commit_seconds_bucket"));
    for never in [key.as_str(), "secret-tenant-value", "metric-plaintext", "alias/metrics"] {
        assert!(!text.contains(never), "{never} leaked into metrics");
    }
    let other = scrape_path(maddr, "/other").await;
    assert!(other.contains(" 404 "), "{other}");
    s.stop().await.unwrap();
}

async fn scrape_path(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_plaintext_health_listener_serves_health_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = keyward::ServerConfig::dev(dir.path());
    config.health_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let s = TestServer::start_with(dir.path(), config, None).await;
    let ch = common::connect(&format!("http://127.0.0.1:{port}")).await;
    let r = HealthClient::new(ch.clone())
        .check(HealthCheckRequest { service: "keyward.v1.CryptoService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
    let e = keyward::pb::key_service_client::KeyServiceClient::new(ch)
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "no key operation on the health port");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_every_service_and_describes_them() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut client = ServerReflectionClient::new(s.channel.clone());
    let ask = |m: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let reqs = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("keyward.v1.CryptoService".into())),
    ];
    let mut answers =
        client.server_reflection_info(futures_util::stream::iter(reqs)).await.unwrap().into_inner();
    let listed = answers.message().await.unwrap().unwrap().message_response.unwrap();
    let MessageResponse::ListServicesResponse(list) = listed else { panic!("{listed:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "keyward.v1.KeyService",
        "keyward.v1.CryptoService",
        "keyward.v1.AuditService",
        "keyward.v1.AccessService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let file = answers.message().await.unwrap().unwrap().message_response.unwrap();
    let MessageResponse::FileDescriptorResponse(fd) = file else { panic!("{file:?}") };
    assert!(!fd.file_descriptor_proto.is_empty());
    let bytes = &fd.file_descriptor_proto[0];
    assert!(bytes.windows(13).any(|w| w == b"ReEncryptStre"), "the descriptor names the RPCs");
    s.stop().await.unwrap();
}
