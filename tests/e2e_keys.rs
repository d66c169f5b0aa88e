//! End-to-end, KeyService: the real server over a real socket, RocksDB in a
//! temp folder. One test per family of RPCs, so a failure names the broken one.

mod common;

use std::collections::HashMap;

use common::{assert_status, payments, TestServer};
use keyward::pb;
use tonic::Code;

#[tokio::test]
async fn create_key_returns_the_key_and_describe_key_finds_it_by_id_and_alias() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut keys = s.keys();
    // CreateKey with alias, description, labels (checked inside).
    let id = payments::create(&s).await;

    // DescribeKey by id and by alias.
    for name in [id.as_str(), payments::ALIAS] {
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
    s.stop().await.unwrap();
}

#[tokio::test]
async fn create_alias_names_a_key_until_delete_alias() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (mut keys, mut crypto) = (s.keys(), s.crypto());
    payments::create(&s).await;
    let other = s.create_key("").await;

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
    s.stop().await.unwrap();
}

#[tokio::test]
async fn rotate_key_makes_v2_primary_and_v1_ciphertexts_still_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (mut keys, mut crypto) = (s.keys(), s.crypto());
    let id = payments::create(&s).await;
    let ct = payments::encrypt(&s, &id).await;

    // Rotation: v2 is primary, new ciphertexts use it, v1 ciphertexts still decrypt.
    let r = keys
        .rotate_key(pb::RotateKeyRequest { key_id: payments::ALIAS.into() })
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
        (ct.clone(), payments::context(), payments::PLAINTEXT.to_vec()),
        (e2.ciphertext.clone(), HashMap::new(), b"new".to_vec()),
    ] {
        let d = crypto
            .decrypt(pb::DecryptRequest { ciphertext: ct, encryption_context: cx, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, want);
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn disable_key_refuses_every_crypto_operation_until_enable_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (mut keys, mut crypto) = (s.keys(), s.crypto());
    let id = payments::create(&s).await;
    let ct = payments::encrypt(&s, &id).await;
    let other = s.create_key("").await;
    let moved = payments::encrypt_moved(&s, &other).await;

    // Disable: every crypto op is FAILED_PRECONDITION; describe still works; enable restores.
    let dis = keys
        .disable_key(pb::DisableKeyRequest { key_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(dis.state, pb::KeyState::Disabled as i32);
    payments::assert_disabled_refuses(&s, &id, &ct, &other, &moved).await;
    let en =
        keys.enable_key(pb::EnableKeyRequest { key_id: id.clone() }).await.unwrap().into_inner().key.unwrap();
    assert_eq!(en.state, pb::KeyState::Enabled as i32);
    crypto
        .decrypt(pb::DecryptRequest {
            ciphertext: ct.clone(),
            encryption_context: payments::context(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn list_keys_pages_through_every_key_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut keys = s.keys();
    let id = payments::create(&s).await;
    let other = s.create_key("").await;

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
    s.stop().await.unwrap();
}
