//! Key material stays in the process: marker plaintexts and data keys,
//! driven through every RPC with the server logging at debug level, appear
//! nowhere in the server's log output, the audit records or the RocksDB files.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use base64::Engine;
use common::{connect, ctx};
use keyward::pb;
use keyward::pb::audit_service_client::AuditServiceClient;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;

const MARKER: &[u8] = b"MARKER-PLAINTEXT-c0ffee-4f1d";

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_audit_or_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let ch = connect(&format!("http://127.0.0.1:{port}")).await;
    let mut keys = KeyServiceClient::new(ch.clone());
    let mut crypto = CryptoServiceClient::new(ch.clone());
    let mut audit = AuditServiceClient::new(ch.clone());
    let mut secrets: Vec<Vec<u8>> = vec![MARKER.to_vec()];

    let id = keys
        .create_key(pb::CreateKeyRequest { alias: "alias/hygiene".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id;
    let other =
        keys.create_key(pb::CreateKeyRequest::default()).await.unwrap().into_inner().key.unwrap().key_id;
    let c = ctx(&[("purpose", "hygiene")]);
    let ct = crypto
        .encrypt(pb::EncryptRequest {
            key_id: id.clone(),
            plaintext: MARKER.to_vec(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let pt = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: ct.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(pt, MARKER);
    // A failed decrypt (wrong context) must not leak either.
    assert!(crypto
        .decrypt(pb::DecryptRequest { ciphertext: ct.clone(), ..Default::default() })
        .await
        .is_err());
    let dk = crypto
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: "alias/hygiene".into(),
            number_of_bytes: Some(32),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(dk.plaintext.clone());
    let np = crypto
        .generate_data_key_without_plaintext(pb::GenerateDataKeyRequest {
            key_id: id.clone(),
            number_of_bytes: Some(48),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let np_plain = crypto
        .decrypt(pb::DecryptRequest { ciphertext: np.ciphertext, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    secrets.push(np_plain);
    let batch = crypto
        .generate_data_key_batch(pb::GenerateDataKeyBatchRequest {
            key_id: id.clone(),
            count: 3,
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    secrets.extend(batch.data_keys.into_iter().map(|k| k.plaintext));
    let items = vec![
        pb::ReEncryptRequest {
            ciphertext: ct.clone(),
            source_encryption_context: c.clone(),
            destination_key_id: id.clone(),
            ..Default::default()
        },
        // A failing item (wrong context) must not leak either.
        pb::ReEncryptRequest { ciphertext: ct.clone(), destination_key_id: id.clone(), ..Default::default() },
    ];
    let results = crypto.batch_re_encrypt(pb::BatchReEncryptRequest { items }).await.unwrap().into_inner();
    assert_eq!(results.results.len(), 2);
    keys.rotate_key(pb::RotateKeyRequest { key_id: id.clone() }).await.unwrap();
    let re = crypto
        .re_encrypt(pb::ReEncryptRequest {
            ciphertext: ct.clone(),
            source_encryption_context: c.clone(),
            destination_key_id: other.clone(),
            destination_encryption_context: HashMap::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!contains(&re.ciphertext, MARKER));
    keys.describe_key(pb::DescribeKeyRequest { key_id: id.clone() }).await.unwrap();
    keys.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    keys.disable_key(pb::DisableKeyRequest { key_id: other.clone() }).await.unwrap();
    keys.enable_key(pb::EnableKeyRequest { key_id: other.clone() }).await.unwrap();
    keys.create_alias(pb::CreateAliasRequest { alias: "alias/h2".into(), key_id: other.clone() })
        .await
        .unwrap();
    keys.delete_alias(pb::DeleteAliasRequest { alias: "alias/h2".into() }).await.unwrap();
    let records = audit
        .query_audit_log(pb::QueryAuditLogRequest { page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(records.len() >= 15);
    assert!(audit.verify_audit_log(pb::VerifyAuditLogRequest {}).await.unwrap().into_inner().intact);

    // Stop cleanly (SIGTERM) so everything is flushed.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    child.wait().unwrap();

    let log = std::fs::read(&log_path).unwrap();
    assert!(contains(&log, b"keyward serving"), "the log was captured");
    let audit_text = format!("{records:?}").into_bytes();
    let mut files = Vec::new();
    files_under(&data, &mut files);
    let root_key_hex = std::fs::read_to_string(data.join("dev-root.key")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for s in &secrets {
        let forms = [
            s.clone(),
            hex::encode(s).into_bytes(),
            b64.encode(s).into_bytes(),
            format!("{s:?}").into_bytes(),
        ];
        for f in &forms {
            assert!(!contains(&log, f), "a secret reached the server log");
            assert!(!contains(&audit_text, f), "a secret reached the audit records");
            for file in files.iter().filter(|p| !p.ends_with("dev-root.key")) {
                let bytes = std::fs::read(file).unwrap();
                assert!(!contains(&bytes, f), "a secret reached {}", file.display());
            }
        }
    }
    assert!(!contains(&log, root_key_hex.trim().as_bytes()), "the root key reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "server",
            "--dev",
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let ch = connect(&format!("http://127.0.0.1:{port}")).await;
    let mut keys = KeyServiceClient::new(ch.clone());
    let mut crypto = CryptoServiceClient::new(ch.clone());
    let id = keys.create_key(pb::CreateKeyRequest::default()).await.unwrap().into_inner().key.unwrap().key_id;
    let mut req = tonic::Request::new(pb::EncryptRequest {
        key_id: id.clone(),
        plaintext: MARKER.to_vec(),
        encryption_context: ctx(&[("t", "1")]),
        ..Default::default()
    });
    req.metadata_mut().insert("x-request-id", "req-json-ok".parse().unwrap());
    let ct = crypto.encrypt(req).await.unwrap().into_inner().ciphertext;
    // A refused request logs at debug level inside its span.
    let mut req = tonic::Request::new(pb::DecryptRequest { ciphertext: ct, ..Default::default() });
    req.metadata_mut().insert("x-request-id", "req-json-42".parse().unwrap());
    let e = crypto.decrypt(req).await.unwrap_err();
    assert_eq!(e.metadata().get("x-request-id").unwrap(), "req-json-42");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();

    let log = std::fs::read(&log_path).unwrap();
    assert!(!contains(&log, MARKER), "plaintext reached the log");
    let lines: Vec<serde_json::Value> = String::from_utf8(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "keyward serving"));
    let refused: Vec<_> = lines.iter().filter(|l| l["fields"]["message"] == "request refused").collect();
    assert!(!refused.is_empty(), "the refusal was logged at debug");
    for l in refused {
        assert_eq!(l["span"]["request_id"], "req-json-42", "{l}");
    }
    // Every line logged inside a request span names its request id.
    let in_request = |l: &&serde_json::Value| {
        l["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "request"))
    };
    let n = lines.iter().filter(in_request).count();
    assert!(n >= 1);
    for l in lines.iter().filter(in_request) {
        let ids: Vec<_> =
            l["spans"].as_array().unwrap().iter().filter_map(|s| s["request_id"].as_str()).collect();
        assert!(!ids.is_empty(), "{l}");
    }
}
