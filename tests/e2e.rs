//! End-to-end, the server as a whole: the real server over a real socket,
//! RocksDB in a temp folder; restarts, the root-key check, concurrency and the
//! rate limit. Each service's RPCs: e2e_keys.rs, e2e_crypto.rs, e2e_audit.rs;
//! bad requests: e2e_errors.rs.

mod common;

use common::{ctx, TestServer};
use keyward::pb;
use tonic::Code;

#[tokio::test]
async fn restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = s.create_key("alias/persist").await;
    let mut crypto = s.crypto();
    let mut saved = Vec::new();
    for i in 0..3u8 {
        let e = crypto
            .encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: vec![i; 10],
                encryption_context: ctx(&[("i", &i.to_string())]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        saved.push((e.ciphertext, i, e.key_version));
        s.keys().rotate_key(pb::RotateKeyRequest { key_id: id.clone() }).await.unwrap();
    }
    s.keys()
        .create_alias(pb::CreateAliasRequest { alias: "alias/second-name".into(), key_id: id.clone() })
        .await
        .unwrap();
    let other = s.create_key("").await;
    s.keys().disable_key(pb::DisableKeyRequest { key_id: other.clone() }).await.unwrap();
    let count = s.audit_count().await;
    s.stop().await.unwrap();

    let s = TestServer::start(dir.path()).await;
    let k = s
        .keys()
        .describe_key(pb::DescribeKeyRequest { key_id: "alias/persist".into() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k.key_id, id);
    assert_eq!(k.primary_version, 4);
    assert_eq!(k.aliases, vec!["alias/persist", "alias/second-name"]);
    let o = s
        .keys()
        .describe_key(pb::DescribeKeyRequest { key_id: other.clone() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(o.state, pb::KeyState::Disabled as i32);
    let mut crypto = s.crypto();
    for (ct, i, v) in saved {
        let d = crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: ct,
                encryption_context: ctx(&[("i", &i.to_string())]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![i; 10]);
        assert_eq!(d.key_version, v);
    }
    let e = crypto
        .encrypt(pb::EncryptRequest {
            key_id: "alias/second-name".into(),
            plaintext: b"after".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.key_version, 4);
    // The audit chain continues across the restart: the verify call before
    // the stop, three decrypts, one encrypt, one describe x2, then this verify.
    assert_eq!(s.audit_count().await, count + 1 + 2 + 3 + 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_root_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.create_key("").await;
    s.stop().await.unwrap();
    let other_key = dir.path().join("other.key");
    keyward::config::create_root_key_file(&other_key).unwrap();
    let mut config = keyward::ServerConfig::dev(dir.path());
    config.root_key = keyward::config::RootKeySource::File(other_key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = keyward::run(config, listener, async {}).await.unwrap_err();
    assert!(err.to_string().contains("root key does not match"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_get_correct_answers_and_one_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let ids = [s.create_key("").await, s.create_key("").await];
    let before = s.audit_count().await;
    const CLIENTS: usize = 32;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut crypto = s.crypto();
        let key = ids[c % 2].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let pt = format!("client {c} message {i}").into_bytes();
                let cx = ctx(&[("client", &c.to_string())]);
                let e = crypto
                    .encrypt(pb::EncryptRequest {
                        key_id: key.clone(),
                        plaintext: pt.clone(),
                        encryption_context: cx.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(e.key_id, key);
                let d = crypto
                    .decrypt(pb::DecryptRequest {
                        ciphertext: e.ciphertext,
                        encryption_context: cx,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(d.plaintext, pt, "client {c} got someone else's answer");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each request produced exactly one record (plus the first verify call).
    assert_eq!(s.audit_count().await, before + 1 + (CLIENTS * EACH * 2) as u64);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_global_rate_limit_refuses_excess_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let file: keyward::config::FileConfig =
        toml::from_str("[limits]\nrate_limit_per_second = 5.0\nrate_limit_burst = 5.0\n").unwrap();
    let config = keyward::ServerConfig::from_parts(
        file,
        &keyward::config::Overrides {
            dev: true,
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let s = TestServer::start_with(dir.path(), config, None).await;
    let mut keys = s.keys();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..30 {
        match keys.list_keys(pb::ListKeysRequest::default()).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
                refused += 1;
            }
        }
    }
    assert!(ok >= 5 && refused >= 10, "ok {ok}, refused {refused}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    keys.list_keys(pb::ListKeysRequest::default()).await.expect("serving again after the window");
    // The refusals are audited (past 10 a second from one peer, as one
    // summary a second: the sweeper writes it within a second or two).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let q = pb::QueryAuditLogRequest {
        outcome: "RESOURCE_EXHAUSTED".into(),
        page_size: 100,
        ..Default::default()
    };
    let records = s.audit().query_audit_log(q).await.unwrap().into_inner().records;
    assert!(!records.is_empty(), "rate-limit refusals are audited");
    assert!(records.iter().all(|r| r.operation == "ListKeys"), "{records:?}");
    s.stop().await.unwrap();
}

/// The audit writer runs in SCHED_BATCH (it does not preempt the request
/// thread when they share a core) and still commits every record: read from
/// the kernel's own view of the threads (/proc/self/task/*/stat, field 41).
#[tokio::test]
async fn the_audit_writer_runs_in_the_batch_class_and_still_commits() {
    const SCHED_BATCH: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let before = s.audit_count().await;
    let id = s.create_key("").await;
    s.crypto()
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: id,
            number_of_bytes: Some(32),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(s.audit_count().await >= before + 2, "the create and the data key are both recorded");
    let mut writers = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim() != "keyward-audit" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        // Fields after the command name's closing parenthesis start at field 3.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let policy: u32 = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        writers.push(policy);
    }
    assert!(!writers.is_empty(), "no keyward-audit thread found");
    assert!(writers.iter().all(|&p| p == SCHED_BATCH), "writer scheduling policies: {writers:?}");
    s.stop().await.unwrap();
}
