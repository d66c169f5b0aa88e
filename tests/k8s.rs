//! The Kubernetes KMS v2 plugin end to end: a client generated from the
//! upstream api.proto talks to the real server over its unix socket.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::TestServer;
use keyward::k8s_pb as v2;
use keyward::k8s_pb::key_management_service_client::KeyManagementServiceClient;
use keyward::pb;
use keyward::ServerConfig;
use tonic::transport::Channel;
use tonic::Code;

async fn uds(path: PathBuf) -> KeyManagementServiceClient<Channel> {
    common::kms_v2_client(path).await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_can_seal_rotate_and_unseal() {
    let dir = tempfile::tempdir().unwrap();
    // The key must exist before the plugin binds to it: create it on a first run.
    let s = TestServer::start(dir.path()).await;
    let key = s.create_key("alias/k8s").await;
    s.stop().await.unwrap();

    let socket = dir.path().join("kms.sock");
    let mut config = ServerConfig::dev(dir.path());
    config.kms_v2 = Some(keyward::config::KmsV2Config { socket: socket.clone(), key: "alias/k8s".into() });
    let s = TestServer::start_with(dir.path(), config, None).await;
    let mut kms = uds(socket.clone()).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    let st = kms.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.version.as_str(), st.healthz.as_str()), ("v2", "ok"));
    assert_eq!(st.key_id, format!("{key}:v1"));

    let dek = vec![7u8; 32];
    let enc = kms
        .encrypt(v2::EncryptRequest { plaintext: dek.clone(), uid: "uid-enc-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(enc.ciphertext.len() <= 1024);
    assert_eq!(enc.key_id, st.key_id);
    assert!(enc.annotations.is_empty());
    let too_big = kms.encrypt(v2::EncryptRequest { plaintext: vec![0; 1000], uid: "u".into() }).await;
    assert_eq!(too_big.unwrap_err().code(), Code::InvalidArgument);

    // Rotation: Status reports the new version; the old ciphertext still opens.
    s.keys().rotate_key(pb::RotateKeyRequest { key_id: key.clone() }).await.unwrap();
    let st2 = kms.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st2.key_id, format!("{key}:v2"));
    let dec = |ct: Vec<u8>, key_id: String| v2::DecryptRequest {
        ciphertext: ct,
        uid: "uid-dec-1".into(),
        key_id,
        annotations: Default::default(),
    };
    let pt = kms.decrypt(dec(enc.ciphertext.clone(), enc.key_id.clone())).await.unwrap().into_inner();
    assert_eq!(pt.plaintext, dek);
    let enc2 = kms
        .encrypt(v2::EncryptRequest { plaintext: dek.clone(), uid: "u2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enc2.key_id, st2.key_id);

    // Unknown or mismatched key ids are refused.
    for bad in ["", "garbage", &format!("{key}:v9"), &format!("{}:v1", uuid::Uuid::new_v4()), &st2.key_id] {
        let e = kms.decrypt(dec(enc.ciphertext.clone(), bad.to_string())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {}", e.message());
    }

    // Every call is audited with the request uid and the plugin's principal.
    let records = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            principal: "kube-apiserver".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(records
        .iter()
        .any(|r| r.request_id == "uid-enc-1" && r.operation == "Encrypt" && r.outcome == "OK"));
    assert!(records
        .iter()
        .any(|r| r.request_id == "uid-dec-1" && r.operation == "Decrypt" && r.outcome == "OK"));
    assert!(records.iter().all(|r| r.peer.starts_with("unix:")), "{records:?}");
    assert!(records.iter().all(|r| r.edge == "kms-v2"), "{records:?}");
    assert_eq!(records.iter().filter(|r| r.outcome == "INVALID_ARGUMENT").count(), 6);

    // Start-up decrypt storm: latency of sequential and concurrent Decrypt, printed.
    let mut lat = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        kms.decrypt(dec(enc2.ciphertext.clone(), enc2.key_id.clone())).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (mut kms, req) = (kms.clone(), dec(enc2.ciphertext.clone(), enc2.key_id.clone()));
            tokio::spawn(async move { kms.decrypt(req).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "KMS v2 Decrypt over the unix socket (debug build): sequential p50 {:.2} ms, p99 {:.2} ms; 1000 concurrent in {:.0} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // A disabled key fails healthz with a reason.
    s.keys().disable_key(pb::DisableKeyRequest { key_id: key.clone() }).await.unwrap();
    let st3 = kms.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert!(st3.healthz.contains("disabled"), "{}", st3.healthz);
    s.stop().await.unwrap();
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_key_id_is_not_echoed_and_refusals_name_the_plugins_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let key = s.create_key("alias/k8s").await;
    s.stop().await.unwrap();
    let socket = dir.path().join("kms.sock");
    let mut config = ServerConfig::dev(dir.path());
    config.kms_v2 = Some(keyward::config::KmsV2Config { socket: socket.clone(), key: "alias/k8s".into() });
    let s = TestServer::start_with(dir.path(), config, None).await;
    let mut kms = uds(socket).await;
    let enc = kms.encrypt(v2::EncryptRequest { plaintext: vec![1; 32], uid: "u1".into() }).await.unwrap();
    let huge = "k".repeat(60 * 1024);
    let e = kms
        .decrypt(v2::DecryptRequest {
            ciphertext: enc.into_inner().ciphertext,
            uid: "uid-huge".into(),
            key_id: huge.clone(),
            annotations: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= 1024 && e.message().contains("61440 bytes"), "{}", e.message().len());
    let too_big = kms.encrypt(v2::EncryptRequest { plaintext: vec![0; 1000], uid: "uid-big".into() }).await;
    assert_eq!(too_big.unwrap_err().code(), Code::InvalidArgument);
    let records = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            outcome: "INVALID_ARGUMENT".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    for uid in ["uid-huge", "uid-big"] {
        let r = records.iter().find(|r| r.request_id == uid).expect("audited");
        assert!(r.reason.len() <= 1024, "{uid}: {} bytes", r.reason.len());
        assert_eq!(r.key_id, key, "{uid}: the refusal names the plugin's key");
    }
    s.stop().await.unwrap();
}
