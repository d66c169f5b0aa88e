//! Crash safety: the real `keyward` binary under concurrent load is killed
//! with SIGKILL several times and restarted on the same data. Every request
//! that was answered OK has its audit record, the chain verifies, sequence
//! numbers continue without gaps or reuse, and every returned ciphertext
//! still decrypts.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, ctx};
use keyward::pb;
use keyward::pb::audit_service_client::AuditServiceClient;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    common::private(dir);
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["server", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyward")
}

/// (request id, ciphertext, plaintext) of every answered Encrypt.
type Answered = Arc<Mutex<Vec<(String, Vec<u8>, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let answered: Answered = Arc::new(Mutex::new(Vec::new()));
    for round in 0..4 {
        let port = free_port();
        let mut child = spawn(dir.path(), port);
        let addr = format!("http://127.0.0.1:{port}");
        let channel = connect(&addr).await;
        if round == 0 {
            KeyServiceClient::new(channel.clone())
                .create_key(pb::CreateKeyRequest { alias: "alias/crash".into(), ..Default::default() })
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for t in 0..16 {
            let mut crypto = CryptoServiceClient::new(channel.clone());
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("round{round}-task{t}-req{i}");
                    let plaintext = id.clone().into_bytes();
                    let mut req = tonic::Request::new(pb::EncryptRequest {
                        key_id: "alias/crash".into(),
                        plaintext: plaintext.clone(),
                        encryption_context: ctx(&[("id", &id)]),
                        ..Default::default()
                    });
                    req.metadata_mut().insert("x-request-id", id.parse().unwrap());
                    match crypto.encrypt(req).await {
                        Ok(r) => answered.lock().unwrap().push((id, r.into_inner().ciphertext, plaintext)),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let the load run, then pull the plug mid-flight.
        tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 100, "load was too light to mean anything: {}", answered.len());

    // Restart once more and check everything.
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let channel = connect(&format!("http://127.0.0.1:{port}")).await;
    let mut audit = AuditServiceClient::new(channel.clone());
    let v = audit.verify_audit_log(pb::VerifyAuditLogRequest {}).await.unwrap().into_inner();
    assert!(v.intact, "chain broken after crashes: {v:?}");
    let mut seqs = Vec::new();
    let mut ok_ids = HashSet::new();
    let mut token = String::new();
    loop {
        let page = audit
            .query_audit_log(pb::QueryAuditLogRequest {
                page_size: 1000,
                page_token: token,
                oldest_first: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for r in &page.records {
            seqs.push(r.sequence);
            if r.operation == "Encrypt" && r.outcome == "OK" {
                ok_ids.insert(r.request_id.clone());
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Gapless, never reused: 1..=n in order.
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() as u64 >= v.records_checked);
    let missing: Vec<_> =
        answered.iter().filter(|(id, _, _)| !ok_ids.contains(id)).map(|(id, _, _)| id).collect();
    assert!(
        missing.is_empty(),
        "{} answered requests have no record, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(ok_ids.len() >= answered.len());

    // Every ciphertext that was returned still decrypts.
    let mut crypto = CryptoServiceClient::new(channel.clone());
    for (id, ct, pt) in &answered {
        let d = crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: ct.clone(),
                encryption_context: ctx(&[("id", id)]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&d.plaintext, pt);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
