//! End-to-end, CryptoService: the real server over a real socket, RocksDB in
//! a temp folder. One test per family of RPCs, so a failure names the broken one.

mod common;

use common::{assert_status, ctx, payments, TestServer};
use keyward::pb;
use tonic::Code;

#[tokio::test]
async fn encrypt_and_decrypt_under_a_context_echo_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut crypto = s.crypto();
    let id = payments::create(&s).await;
    let c = payments::context();

    // Encrypt / Decrypt with a context; x-request-id is echoed (checked inside).
    let ct = payments::encrypt(&s, &id).await;
    let d = crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: ct.clone(),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, payments::PLAINTEXT);
    assert_eq!((d.key_id.as_str(), d.key_version), (id.as_str(), 1));
    // Pinning the right key works, by alias too.
    crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: ct.clone(),
            encryption_context: c.clone(),
            key_id: payments::ALIAS.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn generate_data_key_with_and_without_plaintext_decrypts_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut crypto = s.crypto();
    let id = payments::create(&s).await;
    let c = payments::context();

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
            key_id: payments::ALIAS.into(),
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
    s.stop().await.unwrap();
}

#[tokio::test]
async fn re_encrypt_moves_a_ciphertext_to_another_key_and_context() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut crypto = s.crypto();
    let id = payments::create(&s).await;
    let ct = payments::encrypt(&s, &id).await;

    // ReEncrypt to a second key with a new context.
    let other = s.create_key("").await;
    let re = crypto
        .re_encrypt(pb::ReEncryptRequest {
            ciphertext: ct.clone(),
            source_encryption_context: payments::context(),
            destination_key_id: other.clone(),
            destination_encryption_context: payments::moved(),
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
            encryption_context: payments::moved(),
            key_id: other.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d2.plaintext, payments::PLAINTEXT);
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
    assert_eq!(keyward::checksum::crc(b"123456789"), 0xE306_9283);
    let mut canon = Vec::new();
    canon.extend_from_slice(&2u32.to_be_bytes());
    for (k, v) in [("a", "1"), ("tenant", "acme")] {
        canon.extend_from_slice(&(k.len() as u32).to_be_bytes());
        canon.extend_from_slice(k.as_bytes());
        canon.extend_from_slice(&(v.len() as u32).to_be_bytes());
        canon.extend_from_slice(v.as_bytes());
    }
    let context = ctx(&[("tenant", "acme"), ("a", "1")]);
    assert_eq!(keyward::checksum::context_crc(&context), keyward::checksum::crc(&canon));

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let key = s.create_key("alias/crc").await;
    let mut crypto = s.crypto();
    let pt = b"checked plaintext".to_vec();
    let crc = keyward::checksum::crc;
    let r = crypto
        .encrypt(pb::EncryptRequest {
            key_id: key.clone(),
            plaintext: pt.clone(),
            encryption_context: context.clone(),
            plaintext_crc32c: Some(crc(&pt)),
            encryption_context_crc32c: Some(keyward::checksum::context_crc(&context)),
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
