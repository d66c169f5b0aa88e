//! The "payments" key that the per-service end-to-end tests start from:
//! made with an alias, a description and labels, then used once under an
//! encryption context with a request id the audit test looks for. Each step
//! checks what it gets back, so every test that takes it checks it too.

use std::collections::HashMap;

use keyward::pb;
use tonic::Code;

use super::{assert_status, ctx, TestServer};

pub const ALIAS: &str = "alias/payments";
pub const REQUEST_ID: &str = "req-123";
pub const PLAINTEXT: &[u8] = b"card 4111";

/// The encryption context of the first ciphertext.
pub fn context() -> HashMap<String, String> {
    ctx(&[("tenant", "acme"), ("purpose", "invoice")])
}

/// The context a ciphertext moved to the second key is bound to.
pub fn moved() -> HashMap<String, String> {
    ctx(&[("moved", "yes")])
}

/// CreateKey with alias, description and labels; returns the key id.
pub async fn create(s: &TestServer) -> String {
    let k = s
        .keys()
        .create_key(pb::CreateKeyRequest {
            alias: ALIAS.into(),
            description: "payments master key".into(),
            labels: ctx(&[("team", "payments")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k.aliases, vec![ALIAS]);
    assert_eq!(k.state, pb::KeyState::Enabled as i32);
    assert_eq!(k.primary_version, 1);
    assert_eq!(k.versions.len(), 1);
    assert!(k.create_time.is_some());
    k.key_id
}

/// Encrypts `PLAINTEXT` under the alias with `context()`, sending
/// x-request-id `REQUEST_ID`: the id is echoed, version 1 of key `id` seals,
/// and the plaintext does not show in the ciphertext. Returns the ciphertext.
pub async fn encrypt(s: &TestServer, id: &str) -> Vec<u8> {
    let mut req = tonic::Request::new(pb::EncryptRequest {
        key_id: ALIAS.into(),
        plaintext: PLAINTEXT.to_vec(),
        encryption_context: context(),
        ..Default::default()
    });
    req.metadata_mut().insert("x-request-id", REQUEST_ID.parse().unwrap());
    let resp = s.crypto().encrypt(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), REQUEST_ID);
    let e = resp.into_inner();
    assert_eq!((e.key_id.as_str(), e.key_version), (id, 1));
    assert!(!e.ciphertext.windows(9).any(|w| w == PLAINTEXT));
    e.ciphertext
}

/// Encrypts `PLAINTEXT` under `other` with `moved()`, as a ciphertext moved
/// there by ReEncrypt would be.
pub async fn encrypt_moved(s: &TestServer, other: &str) -> Vec<u8> {
    s.crypto()
        .encrypt(pb::EncryptRequest {
            key_id: other.into(),
            plaintext: PLAINTEXT.to_vec(),
            encryption_context: moved(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

/// With key `id` disabled, every crypto operation naming it (as the key, the
/// source or the destination) and its rotation are FAILED_PRECONDITION
/// (seven refusals, each audited), while DescribeKey still works.
/// `ct` is `encrypt`'s ciphertext, `moved_ct` one under `other` with `moved()`.
pub async fn assert_disabled_refuses(s: &TestServer, id: &str, ct: &[u8], other: &str, moved_ct: &[u8]) {
    let (mut keys, mut crypto) = (s.keys(), s.crypto());
    let c = context();
    assert_status(
        crypto
            .encrypt(pb::EncryptRequest { key_id: id.into(), plaintext: b"x".to_vec(), ..Default::default() })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .decrypt(pb::DecryptRequest {
                ciphertext: ct.to_vec(),
                encryption_context: c.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .generate_data_key(pb::GenerateDataKeyRequest { key_id: id.into(), ..Default::default() })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .generate_data_key_without_plaintext(pb::GenerateDataKeyRequest {
                key_id: id.into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        crypto
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext: ct.to_vec(),
                source_encryption_context: c.clone(),
                destination_key_id: other.into(),
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
                ciphertext: moved_ct.to_vec(),
                source_encryption_context: moved(),
                destination_key_id: id.into(),
                destination_encryption_context: HashMap::new(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        keys.rotate_key(pb::RotateKeyRequest { key_id: id.into() }).await,
        Code::FailedPrecondition,
        "disabled",
    );
    keys.describe_key(pb::DescribeKeyRequest { key_id: id.into() }).await.unwrap();
}
