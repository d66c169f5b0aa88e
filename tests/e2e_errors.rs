//! End-to-end, refusals: bad requests to every service get the right code,
//! a message naming the field, and an audit record; nothing is lost.

mod common;

use std::collections::HashMap;

use common::{assert_status, ctx, TestServer};
use keyward::pb;
use tonic::Code;

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

    // A request over the 64 KiB limit is refused before any handler; it is
    // audited too (just after its reply), and the server keeps serving.
    let huge = crypto.encrypt(enc(&id, vec![0; 70 * 1024], HashMap::new())).await;
    assert!(huge.is_err());
    requests += 1;

    // Every refused request above was audited; nothing was lost; still serving.
    // (Each count is a QueryAuditLog, audited itself.)
    let (mut count, mut counts) = (0, 0);
    for _ in 0..100 {
        count = s.audit_count().await;
        counts += 1;
        if count >= before + counts + requests {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count, before + counts + requests);
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

/// A request with `x-request-id` set to `id`.
fn with_id<T>(id: &str, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert("x-request-id", id.parse().unwrap());
    r
}

#[tokio::test]
async fn an_oversized_request_is_invalid_argument_naming_the_limit_with_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = s.create_key("alias/k").await;
    let mut crypto = s.crypto();
    let big = pb::EncryptRequest { key_id: id.clone(), plaintext: vec![0; 70 * 1024], ..Default::default() };

    // Unary: refused before any handler, as INVALID_ARGUMENT naming the limit.
    let e = assert_status(
        crypto.encrypt(with_id("req-too-big", big.clone())).await,
        Code::InvalidArgument,
        "request exceeds the 65536-byte limit",
    );
    assert_eq!(e.metadata().get("x-request-id").unwrap(), "req-too-big");
    // And audited, as the caller's refusal (written just after the reply:
    // nothing was done, so the refusal does not wait for it).
    let mut found = None;
    for _ in 0..100 {
        let q = pb::QueryAuditLogRequest { outcome: "INVALID_ARGUMENT".into(), ..Default::default() };
        let records = s.audit().query_audit_log(q).await.unwrap().into_inner().records;
        found = records.into_iter().find(|r| r.request_id == "req-too-big");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = found.expect("the oversized request's refusal is audited");
    assert_eq!((r.operation.as_str(), r.principal.as_str()), ("Encrypt", "dev"));
    assert!(r.reason.contains("65536-byte limit"), "{}", r.reason);
    // Without an id of the caller's, the server's own is returned.
    let e = crypto.encrypt(big.clone()).await.unwrap_err();
    assert!(!e.metadata().get("x-request-id").unwrap().is_empty());

    // A stream item over the limit ends the stream the same way.
    let item = pb::ReEncryptRequest {
        ciphertext: vec![0; 70 * 1024],
        destination_key_id: id.clone(),
        ..Default::default()
    };
    let resp = crypto
        .re_encrypt_stream(with_id("req-stream-big", futures_util::stream::iter([item])))
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "req-stream-big");
    let e = assert_status(
        resp.into_inner().message().await,
        Code::InvalidArgument,
        "request exceeds the 65536-byte limit",
    );
    assert_eq!(e.metadata().get("x-request-id").unwrap(), "req-stream-big");
    let q = pb::QueryAuditLogRequest { outcome: "INVALID_ARGUMENT".into(), ..Default::default() };
    let records = s.audit().query_audit_log(q).await.unwrap().into_inner().records;
    let r = records
        .iter()
        .find(|r| r.request_id == "req-stream-big")
        .expect("the stream item's refusal is audited");
    assert_eq!(r.operation, "ReEncrypt");

    // Still serving.
    crypto
        .encrypt(pb::EncryptRequest { key_id: id, plaintext: b"x".to_vec(), ..Default::default() })
        .await
        .unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn re_encrypt_stream_returns_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = s.create_key("alias/k").await;
    let mut crypto = s.crypto();
    let ct = crypto
        .encrypt(pb::EncryptRequest { key_id: id.clone(), plaintext: b"x".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let item = pb::ReEncryptRequest { ciphertext: ct, destination_key_id: id, ..Default::default() };
    let resp = crypto
        .re_encrypt_stream(with_id("req-stream-1", futures_util::stream::iter([item.clone()])))
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "req-stream-1");
    let mut results = resp.into_inner();
    assert!(results.message().await.unwrap().is_some());
    assert!(results.message().await.unwrap().is_none());
    // Its audit record carries the same id.
    let records = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest { operation: "ReEncrypt".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(records.iter().any(|r| r.request_id == "req-stream-1"), "{records:?}");
    // Without one of the caller's, the server's own.
    let resp = crypto.re_encrypt_stream(futures_util::stream::iter([item])).await.unwrap();
    assert!(!resp.metadata().get("x-request-id").unwrap().is_empty());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn huge_caller_strings_are_not_echoed_into_errors_or_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = s.create_key("alias/k").await;
    let huge = "x".repeat(60 * 1024);
    let alias = format!("alias/{huge}");
    let mut keys = s.keys();
    let mut crypto = s.crypto();
    let refusals = [
        keys.create_alias(pb::CreateAliasRequest { alias: alias.clone(), key_id: id.clone() })
            .await
            .map(drop),
        keys.describe_key(pb::DescribeKeyRequest { key_id: alias.clone() }).await.map(drop),
        keys.describe_key(pb::DescribeKeyRequest { key_id: huge.clone() }).await.map(drop),
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: huge.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .map(drop),
        crypto
            .encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: b"x".to_vec(),
                encryption_context: ctx(&[(&huge[..20_000], "v")]),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for r in refusals {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", &e.message()[..e.message().len().min(200)]);
        assert!(e.message().len() <= 1024, "{} bytes", e.message().len());
    }
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
    assert_eq!(records.len(), 5);
    for r in &records {
        let size = r.reason.len()
            + r.alias.len()
            + r.key_id.len()
            + r.request_id.len()
            + r.encryption_context.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        assert!(size <= 2048, "{} bytes in {}", size, r.operation);
    }
    s.stop().await.unwrap();
}
