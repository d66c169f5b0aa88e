//! End-to-end, AuditService: the real server over a real socket, RocksDB in a
//! temp folder. (VerifyAuditLog runs in every test that counts records.)

mod common;

use common::{payments, TestServer};
use keyward::pb;

#[tokio::test]
async fn query_audit_log_by_alias_returns_the_keys_records_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = payments::create(&s).await;
    let c = payments::context();
    // An Encrypt with our request id, then refusals while the key is disabled.
    let ct = payments::encrypt(&s, &id).await;
    let other = s.create_key("").await;
    let moved = payments::encrypt_moved(&s, &other).await;
    s.keys().disable_key(pb::DisableKeyRequest { key_id: id.clone() }).await.unwrap();
    payments::assert_disabled_refuses(&s, &id, &ct, &other, &moved).await;

    // QueryAuditLog by alias: newest first, this key's records, no secrets.
    let page = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest {
            key_id: payments::ALIAS.into(),
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
    let enc = page
        .records
        .iter()
        .find(|r| r.request_id == payments::REQUEST_ID)
        .expect("the Encrypt with our request id");
    assert_eq!(enc.operation, "Encrypt");
    assert_eq!(enc.outcome, "OK");
    assert_eq!(enc.alias, payments::ALIAS);
    assert_eq!(enc.key_version, 1);
    assert_eq!(enc.encryption_context, c);
    assert!(enc.peer.starts_with("127.0.0.1:"));
    assert!(page.records.iter().all(|r| r.edge == "grpc"), "every record names its edge");
    // The edge filter: nothing here came through the AWS edge.
    let aws = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest { edge: "aws-kms".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(aws.records.is_empty());
    let bad = s
        .audit()
        .query_audit_log(pb::QueryAuditLogRequest { edge: "carrier-pigeon".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("edge"), "{}", bad.message());
    let refused = page.records.iter().filter(|r| r.outcome == "FAILED_PRECONDITION").count();
    assert!(refused >= 6, "refused requests are recorded too ({refused})");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn get_audit_public_key_verifies_the_servers_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let id = payments::create(&s).await;
    payments::encrypt(&s, &id).await;
    let k = s.audit().get_audit_public_key(pb::GetAuditPublicKeyRequest {}).await.unwrap().into_inner();
    assert!(k.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{}", k.public_key_pem);
    assert!(k.public_key_pem.trim_end().ends_with("-----END PUBLIC KEY-----"));
    assert_eq!(k.fingerprint_sha256.len(), 64);
    let node: keyward_core::NodeId = k.node_id.parse().unwrap();
    let key = keyward_store::format::export::parse_public_key_pem(&k.public_key_pem).unwrap();
    // The same key again, and the verifier finds its checkpoints good.
    let again = s.audit().get_audit_public_key(pb::GetAuditPublicKeyRequest {}).await.unwrap().into_inner();
    assert_eq!(again.public_key_pem, k.public_key_pem);
    let v = s.audit().verify_audit_log(pb::VerifyAuditLogRequest {}).await.unwrap().into_inner();
    assert!(v.intact && v.checkpoints_checked >= 1 && v.last_checkpoint_sequence >= 1, "{v:?}");
    let dir_path = s.dir.clone();
    s.stop().await.unwrap();
    let store = keyward_store::RocksStore::open_read_only(&dir_path.join("db")).unwrap();
    let c = keyward_core::Store::last_checkpoint(&store).unwrap().unwrap();
    assert_eq!(c.node_id, node);
    assert!(c.verify(&key), "the clean stop's checkpoint verifies under the published key");
}
