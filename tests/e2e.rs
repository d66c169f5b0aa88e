//! End-to-end: the real server over a real socket, RocksDB in a temp folder.

mod common;

use std::collections::HashMap;

use common::{assert_status, ctx, TestServer};
use keyward::pb;
use tonic::Code;

#[tokio::test]
async fn every_rpc_works_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut keys = s.keys();
    let mut crypto = s.crypto();

    // CreateKey with alias, description, labels.
    let k = keys
        .create_key(pb::CreateKeyRequest {
            alias: "alias/payments".into(),
            description: "payments master key".into(),
            labels: ctx(&[("team", "payments")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k.aliases, vec!["alias/payments"]);
    assert_eq!(k.state, pb::KeyState::Enabled as i32);
    assert_eq!(k.primary_version, 1);
    assert_eq!(k.versions.len(), 1);
    assert!(k.create_time.is_some());
    let id = k.key_id.clone();

    // DescribeKey by id and by alias.
    for name in [id.as_str(), "alias/payments"] {
        let d = keys
            .describe_key(pb::DescribeKeyRequest { key_id: name.into() })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert_eq!(d.key_id, id);
        assert_eq!(d.description, "payments master key");
        assert_eq!(d.labels.get("team").map(String::as_str), Some("payments"));
    }

    // Encrypt / Decrypt with a context; x-request-id is echoed.
    let c = ctx(&[("tenant", "acme"), ("purpose", "invoice")]);
    let mut req = tonic::Request::new(pb::EncryptRequest {
        key_id: "alias/payments".into(),
        plaintext: b"card 4111".to_vec(),
        encryption_context: c.clone(),
        ..Default::default()
    });
    req.metadata_mut().insert("x-request-id", "req-123".parse().unwrap());
    let resp = crypto.encrypt(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "req-123");
    let e = resp.into_inner();
    assert_eq!((e.key_id.as_str(), e.key_version), (id.as_str(), 1));
    assert!(!e.ciphertext.windows(9).any(|w| w == b"card 4111"));
    let d = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: e.ciphertext.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, b"card 4111");
    assert_eq!((d.key_id.as_str(), d.key_version), (id.as_str(), 1));
    // Pinning the right key works, by alias too.
    crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: e.ciphertext.clone(),
            encryption_context: c.clone(),
            key_id: "alias/payments".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // GenerateDataKey: default 32 bytes, then 64; the data key decrypts back.
    let dk = crypto
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: id.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dk.plaintext.len(), 32);
    let back = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: dk.ciphertext.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, dk.plaintext);
    let dk64 = crypto
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: id.clone(),
            number_of_bytes: Some(64),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dk64.plaintext.len(), 64);
    let np = crypto
        .generate_data_key_without_plaintext(pb::GenerateDataKeyRequest {
            key_id: "alias/payments".into(),
            number_of_bytes: Some(16),
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
    assert_eq!(np_plain.len(), 16);

    // ReEncrypt to a second key with a new context.
    let other = s.create_key("").await;
    let re = crypto
        .re_encrypt(pb::ReEncryptRequest {
            ciphertext: e.ciphertext.clone(),
            source_encryption_context: c.clone(),
            destination_key_id: other.clone(),
            destination_encryption_context: ctx(&[("moved", "yes")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((re.source_key_id.as_str(), re.source_key_version), (id.as_str(), 1));
    assert_eq!((re.key_id.as_str(), re.key_version), (other.as_str(), 1));
    let d2 = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: re.ciphertext.clone(),
            encryption_context: ctx(&[("moved", "yes")]),
            key_id: other.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d2.plaintext, b"card 4111");

    // Aliases: create, use, delete.
    let a = keys
        .create_alias(pb::CreateAliasRequest { alias: "alias/second".into(), key_id: other.clone() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(a.aliases, vec!["alias/second"]);
    crypto
        .encrypt(pb::EncryptRequest {
            key_id: "alias/second".into(),
            plaintext: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    keys.delete_alias(pb::DeleteAliasRequest { alias: "alias/second".into() }).await.unwrap();
    assert_status(
        keys.describe_key(pb::DescribeKeyRequest { key_id: "alias/second".into() }).await,
        Code::NotFound,
        "alias/second",
    );

    // Rotation: v2 is primary, new ciphertexts use it, v1 ciphertexts still decrypt.
    let r = keys
        .rotate_key(pb::RotateKeyRequest { key_id: "alias/payments".into() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(r.primary_version, 2);
    assert_eq!(r.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    let e2 = crypto
        .encrypt(pb::EncryptRequest { key_id: id.clone(), plaintext: b"new".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e2.key_version, 2);
    for (ct, cx, want) in [
        (e.ciphertext.clone(), c.clone(), b"card 4111".to_vec()),
        (e2.ciphertext.clone(), HashMap::new(), b"new".to_vec()),
    ] {
        let d = crypto
            .decrypt(pb::DecryptRequest { ciphertext: ct, encryption_context: cx, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, want);
    }

    // Disable: every crypto op is FAILED_PRECONDITION; describe still works; enable restores.
    let dis = keys
        .disable_key(pb::DisableKeyRequest { key_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(dis.state, pb::KeyState::Disabled as i32);
    assert_status(
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                encryption_context: c.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .generate_data_key(pb::GenerateDataKeyRequest { key_id: id.clone(), ..Default::default() })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .generate_data_key_without_plaintext(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext: e.ciphertext.clone(),
                source_encryption_context: c.clone(),
                destination_key_id: other.clone(),
                destination_encryption_context: HashMap::new(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext: re.ciphertext.clone(),
                source_encryption_context: ctx(&[("moved", "yes")]),
                destination_key_id: id.clone(),
                destination_encryption_context: HashMap::new(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        keys.rotate_key(pb::RotateKeyRequest { key_id: id.clone() }).await,
        Code::FailedPrecondition,
        "disabled",
    );
    keys.describe_key(pb::DescribeKeyRequest { key_id: id.clone() }).await.unwrap();
    let en =
        keys.enable_key(pb::EnableKeyRequest { key_id: id.clone() }).await.unwrap().into_inner().key.unwrap();
    assert_eq!(en.state, pb::KeyState::Enabled as i32);
    crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: e.ciphertext.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // ListKeys pages through both keys one at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = keys
            .list_keys(pb::ListKeysRequest { page_size: 1, page_token: token })
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 1);
        seen.extend(page.keys.into_iter().map(|k| k.key_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    let mut want = vec![id.clone(), other.clone()];
    want.sort();
    assert_eq!(seen, want);

    // QueryAuditLog by alias: newest first, this key's records, no secrets.
    let page = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            key_id: "alias/payments".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.records.windows(2).all(|w| w[0].sequence > w[1].sequence), "newest first");
    assert!(page.records.iter().all(|r| r.key_id == id || r.source_key_id == id));
    let first = page.records.last().unwrap();
    assert_eq!(first.operation, "CreateKey");
    let enc =
        page.records.iter().find(|r| r.request_id == "req-123").expect("the Encrypt with our request id");
    assert_eq!(enc.operation, "Encrypt");
    assert_eq!(enc.outcome, "OK");
    assert_eq!(enc.alias, "alias/payments");
    assert_eq!(enc.key_version, 1);
    assert_eq!(enc.encryption_context, c);
    assert!(enc.peer.starts_with("127.0.0.1:"));
    let refused = page.records.iter().filter(|r| r.outcome == "FAILED_PRECONDITION").count();
    assert!(refused >= 6, "refused requests are recorded too ({refused})");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_right_codes_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut crypto = s.crypto();
    let mut keys = s.keys();
    let id = s.create_key("alias/k").await;
    let good = crypto
        .encrypt(pb::EncryptRequest {
            key_id: id.clone(),
            plaintext: b"secret".to_vec(),
            encryption_context: ctx(&[("a", "b")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let before = s.audit_count().await;
    let enc = |key: &str, pt: Vec<u8>, c: HashMap<String, String>| pb::EncryptRequest {
        key_id: key.into(),
        plaintext: pt,
        encryption_context: c,
        ..Default::default()
    };
    let dec = |ct: Vec<u8>, c: HashMap<String, String>| pb::DecryptRequest {
        ciphertext: ct,
        encryption_context: c,
        ..Default::default()
    };
    let opaque = "ciphertext is invalid or does not match the key and encryption context";
    let mut requests = 0u64;

    // Unknown keys and aliases: NOT_FOUND.
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_status(
        crypto.encrypt(enc(&unknown, b"x".to_vec(), HashMap::new())).await,
        Code::NotFound,
        &unknown,
    );
    assert_status(
        crypto.encrypt(enc("alias/nope", b"x".to_vec(), HashMap::new())).await,
        Code::NotFound,
        "alias/nope",
    );
    assert_status(
        keys.describe_key(pb::DescribeKeyRequest { key_id: unknown.clone() }).await,
        Code::NotFound,
        &unknown,
    );
    assert_status(
        keys.rotate_key(pb::RotateKeyRequest { key_id: "alias/nope".into() }).await,
        Code::NotFound,
        "alias/nope",
    );
    assert_status(
        keys.delete_alias(pb::DeleteAliasRequest { alias: "alias/nope".into() }).await,
        Code::NotFound,
        "alias/nope",
    );
    requests += 5;

    // Empty / malformed key ids name the field.
    assert_status(
        crypto.encrypt(enc("", b"x".to_vec(), HashMap::new())).await,
        Code::InvalidArgument,
        "key_id",
    );
    assert_status(
        crypto.encrypt(enc("not-a-key", b"x".to_vec(), HashMap::new())).await,
        Code::InvalidArgument,
        "key_id",
    );
    assert_status(
        crypto
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext: good.clone(),
                destination_key_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "destination_key_id",
    );
    requests += 3;

    // Wrong context, truncated, tampered, foreign, empty: one opaque message.
    assert_status(crypto.decrypt(dec(good.clone(), ctx(&[("a", "c")]))).await, Code::InvalidArgument, opaque);
    assert_status(crypto.decrypt(dec(good.clone(), HashMap::new())).await, Code::InvalidArgument, opaque);
    assert_status(
        crypto.decrypt(dec(good[..good.len() - 1].to_vec(), ctx(&[("a", "b")]))).await,
        Code::InvalidArgument,
        opaque,
    );
    assert_status(
        crypto.decrypt(dec(good[..30].to_vec(), ctx(&[("a", "b")]))).await,
        Code::InvalidArgument,
        opaque,
    );
    let mut tampered = good.clone();
    tampered[70] ^= 1;
    assert_status(crypto.decrypt(dec(tampered, ctx(&[("a", "b")]))).await, Code::InvalidArgument, opaque);
    let mut foreign = good.clone();
    foreign[1..17].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    assert_status(crypto.decrypt(dec(foreign, ctx(&[("a", "b")]))).await, Code::InvalidArgument, opaque);
    let mut wrong_version = good.clone();
    wrong_version[17..21].copy_from_slice(&9u32.to_be_bytes());
    assert_status(
        crypto.decrypt(dec(wrong_version, ctx(&[("a", "b")]))).await,
        Code::InvalidArgument,
        opaque,
    );
    let mut random = vec![1u8];
    random.extend((0..100).map(|i| (i * 37 % 251) as u8));
    assert_status(crypto.decrypt(dec(random, HashMap::new())).await, Code::InvalidArgument, opaque);
    let mut future = good.clone();
    future[0] = 7;
    assert_status(
        crypto.decrypt(dec(future, ctx(&[("a", "b")]))).await,
        Code::InvalidArgument,
        "unsupported ciphertext format",
    );
    assert_status(crypto.decrypt(dec(Vec::new(), HashMap::new())).await, Code::InvalidArgument, "ciphertext");
    requests += 10;
    // Pinned to another key.
    let other = s.create_key("").await;
    requests += 1;
    assert_status(
        crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: good.clone(),
                encryption_context: ctx(&[("a", "b")]),
                key_id: other.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "key_id",
    );
    requests += 1;

    // Size limits.
    assert_status(
        crypto.encrypt(enc(&id, vec![0; 4097], HashMap::new())).await,
        Code::InvalidArgument,
        "plaintext",
    );
    crypto.encrypt(enc(&id, vec![0; 4096], HashMap::new())).await.unwrap();
    for n in [0u32, 1025] {
        assert_status(
            crypto
                .generate_data_key(pb::GenerateDataKeyRequest {
                    key_id: id.clone(),
                    number_of_bytes: Some(n),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "number_of_bytes",
        );
    }
    for n in [1u32, 1024] {
        let dk = crypto
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                number_of_bytes: Some(n),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dk.plaintext.len(), n as usize);
    }
    let many: HashMap<String, String> = (0..65).map(|i| (format!("k{i}"), "v".to_string())).collect();
    assert_status(
        crypto.encrypt(enc(&id, b"x".to_vec(), many)).await,
        Code::InvalidArgument,
        "encryption_context",
    );
    let big = ctx(&[("k", &"v".repeat(8 * 1024))]);
    assert_status(
        crypto.encrypt(enc(&id, b"x".to_vec(), big)).await,
        Code::InvalidArgument,
        "encryption_context",
    );
    requests += 8;

    // Aliases: duplicate -> ALREADY_EXISTS; malformed -> INVALID_ARGUMENT naming the field.
    assert_status(
        keys.create_alias(pb::CreateAliasRequest { alias: "alias/k".into(), key_id: other.clone() }).await,
        Code::AlreadyExists,
        "alias/k",
    );
    assert_status(
        keys.create_key(pb::CreateKeyRequest { alias: "alias/k".into(), ..Default::default() }).await,
        Code::AlreadyExists,
        "alias/k",
    );
    assert_status(
        keys.create_alias(pb::CreateAliasRequest { alias: "payments".into(), key_id: other.clone() }).await,
        Code::InvalidArgument,
        "alias",
    );
    assert_status(
        keys.list_keys(pb::ListKeysRequest { page_size: 5000, page_token: String::new() }).await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_status(
        keys.list_keys(pb::ListKeysRequest { page_size: 1, page_token: "zzz".into() }).await,
        Code::InvalidArgument,
        "page_token",
    );
    requests += 5;

    // A request over the 64 KiB limit is refused by the transport, unaudited
    // (it never reached a key), and the server keeps serving.
    let huge = crypto.encrypt(enc(&id, vec![0; 70 * 1024], HashMap::new())).await;
    assert!(huge.is_err());

    // Every refused request above was audited; nothing was lost; still serving.
    assert_eq!(s.audit_count().await, before + 1 + requests);
    let d = crypto.decrypt(dec(good, ctx(&[("a", "b")]))).await.unwrap().into_inner();
    assert_eq!(d.plaintext, b"secret");
    let refused = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            outcome: "INVALID_ARGUMENT".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(refused.len() >= 20, "{}", refused.len());
    assert!(refused.iter().all(|r| !r.reason.is_empty()));
    s.stop().await.unwrap();
}

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
    s.stop().await.unwrap();
}

#[tokio::test]
async fn batch_and_streaming_rewrap_report_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let key = s.create_key("alias/bulk").await;
    let mut crypto = s.crypto();
    let mut cts = Vec::new();
    for i in 0..300u32 {
        let r = crypto
            .encrypt(pb::EncryptRequest {
                key_id: key.clone(),
                plaintext: i.to_be_bytes().to_vec(),
                encryption_context: ctx(&[("n", &i.to_string())]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        cts.push(r.ciphertext);
    }
    s.keys().rotate_key(pb::RotateKeyRequest { key_id: key.clone() }).await.unwrap();
    let item = |i: usize, ct: &[u8]| pb::ReEncryptRequest {
        ciphertext: ct.to_vec(),
        source_encryption_context: ctx(&[("n", &i.to_string())]),
        destination_key_id: key.clone(),
        destination_encryption_context: ctx(&[("n", &i.to_string())]),
        ..Default::default()
    };

    // A batch with a good item, a forged one, one under the wrong context, and a good one.
    let mut forged = cts[1].clone();
    *forged.last_mut().unwrap() ^= 1;
    let mut wrong_ctx = item(2, &cts[2]);
    wrong_ctx.source_encryption_context = ctx(&[("n", "other")]);
    let before = s.audit_count().await;
    let r = crypto
        .batch_re_encrypt(pb::BatchReEncryptRequest {
            items: vec![item(0, &cts[0]), item(1, &forged), wrong_ctx, item(3, &cts[3])],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 4);
    let codes: Vec<(u32, Option<i32>)> = r
        .results
        .iter()
        .map(|x| match &x.result {
            Some(pb::re_encrypt_result::Result::Ok(ok)) => {
                assert_eq!((ok.source_key_version, ok.key_version), (1, 2));
                (x.index, None)
            }
            Some(pb::re_encrypt_result::Result::Error(e)) => (x.index, Some(e.code)),
            None => panic!("empty result"),
        })
        .collect();
    let invalid = Some(Code::InvalidArgument as i32);
    assert_eq!(codes, vec![(0, None), (1, invalid), (2, invalid), (3, None)]);
    // Four item records, plus the first count query's own record.
    assert_eq!(s.audit_count().await, before + 4 + 1, "each item audited");

    // Empty and oversized batches are refused as a whole, naming the field.
    assert_status(
        crypto.batch_re_encrypt(pb::BatchReEncryptRequest { items: vec![] }).await,
        Code::InvalidArgument,
        "items",
    );

    // The stream: 300 items in, 300 results out, in order, all under v2.
    let reqs: Vec<_> = cts.iter().enumerate().map(|(i, ct)| item(i, ct)).collect();
    let mut results = crypto.re_encrypt_stream(futures_util::stream::iter(reqs)).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(r) = results.message().await.unwrap() {
        assert_eq!(r.index, n);
        let Some(pb::re_encrypt_result::Result::Ok(ok)) = r.result else { panic!("item {n} failed") };
        assert_eq!(ok.key_version, 2);
        let pt = crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: ok.ciphertext,
                encryption_context: ctx(&[("n", &n.to_string())]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .plaintext;
        assert_eq!(pt, n.to_be_bytes());
        n += 1;
    }
    assert_eq!(n, 300);
    let versions = s
        .keys()
        .list_key_versions(pb::ListKeyVersionsRequest { key_id: key.clone() })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!((versions[0].encryptions, versions[0].decryptions), (300, 302));
    assert_eq!((versions[1].encryptions, versions[1].decryptions), (302, 300));
    assert!(versions[1].primary && versions[1].last_use_time.is_some());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn crc32c_checksums_are_verified_and_returned() {
    // The CRC32C (Castagnoli) check value, and the documented context encoding.
    assert_eq!(keyward::grpc::crc(b"123456789"), 0xE306_9283);
    let mut canon = Vec::new();
    canon.extend_from_slice(&2u32.to_be_bytes());
    for (k, v) in [("a", "1"), ("tenant", "acme")] {
        canon.extend_from_slice(&(k.len() as u32).to_be_bytes());
        canon.extend_from_slice(k.as_bytes());
        canon.extend_from_slice(&(v.len() as u32).to_be_bytes());
        canon.extend_from_slice(v.as_bytes());
    }
    let context = ctx(&[("tenant", "acme"), ("a", "1")]);
    assert_eq!(keyward::grpc::context_crc(&context), keyward::grpc::crc(&canon));

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let key = s.create_key("alias/crc").await;
    let mut crypto = s.crypto();
    let pt = b"checked plaintext".to_vec();
    let crc = keyward::grpc::crc;
    let r = crypto
        .encrypt(pb::EncryptRequest {
            key_id: key.clone(),
            plaintext: pt.clone(),
            encryption_context: context.clone(),
            plaintext_crc32c: Some(crc(&pt)),
            encryption_context_crc32c: Some(keyward::grpc::context_crc(&context)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ciphertext_crc32c, crc(&r.ciphertext));
    let d = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: r.ciphertext.clone(),
            encryption_context: context.clone(),
            ciphertext_crc32c: Some(crc(&r.ciphertext)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((d.plaintext.as_slice(), d.plaintext_crc32c), (pt.as_slice(), crc(&pt)));

    // A corrupted request is refused naming the field; nothing is processed.
    let before =
        s.keys().list_key_versions(pb::ListKeyVersionsRequest { key_id: key.clone() }).await.unwrap();
    let before = before.into_inner().versions[0].encryptions;
    assert_status(
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: key.clone(),
                plaintext: pt.clone(),
                plaintext_crc32c: Some(crc(&pt) ^ 1),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "plaintext_crc32c",
    );
    assert_status(
        crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: r.ciphertext.clone(),
                encryption_context: context.clone(),
                encryption_context_crc32c: Some(0),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "encryption_context_crc32c",
    );
    assert_status(
        crypto
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext: r.ciphertext.clone(),
                source_encryption_context: context.clone(),
                destination_key_id: key.clone(),
                ciphertext_crc32c: Some(crc(&r.ciphertext).wrapping_add(1)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ciphertext_crc32c",
    );
    let after = s.keys().list_key_versions(pb::ListKeyVersionsRequest { key_id: key.clone() }).await.unwrap();
    let v = &after.into_inner().versions[0];
    assert_eq!((v.encryptions, v.decryptions), (before, 1), "refused requests used nothing");
    let refused = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            outcome: "INVALID_ARGUMENT".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(refused.len(), 3, "each refusal audited");
    assert!(refused.iter().all(|r| r.reason.contains("checksum mismatch")));

    // Data keys and random bytes come with checksums of what is returned.
    let dk = crypto
        .generate_data_key(pb::GenerateDataKeyRequest { key_id: key.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dk.plaintext_crc32c, dk.ciphertext_crc32c), (crc(&dk.plaintext), crc(&dk.ciphertext)));
    let rnd =
        crypto.generate_random(pb::GenerateRandomRequest { number_of_bytes: 16 }).await.unwrap().into_inner();
    assert_eq!(rnd.random_crc32c, crc(&rnd.random));
    s.stop().await.unwrap();
}
