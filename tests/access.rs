//! Access control end to end, with real certificates made at test time:
//! every RPC is tried by an unauthenticated caller, a caller with the wrong
//! role and a user without a grant on the key; each is refused and audited;
//! an authorized caller succeeds on every RPC. "Every RPC" is read from the
//! descriptor set (tests/common/rpcs.rs), so a new RPC cannot be skipped.

mod common;

use keyward::config::{FileConfig, Overrides};
use keyward::pb;
use keyward::pb::access_service_client::AccessServiceClient;
use keyward::pb::audit_service_client::AuditServiceClient;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;
use keyward::pb::operator_service_client::OperatorServiceClient;
use keyward::ServerConfig;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use common::pki::{channel, Pki};
use common::rpcs::{self, Rpc};

const AUDITOR_TOKEN: &str = "kw_auditor_token_for_tests";
const LIMITED_TOKEN: &str = "kw_limited_token_for_tests";

#[derive(Clone)]
struct Who {
    channel: Channel,
    token: Option<&'static str>,
}

impl Who {
    fn req<T>(&self, body: T) -> Request<T> {
        let mut r = Request::new(body);
        if let Some(t) = self.token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
}

/// Every RPC of the descriptor set, in the proto's order, except that
/// MarkKeyVersionCompromised runs last: it leaves version 1 (which made the
/// ciphertext) open only to ReEncrypt.
fn rpcs_in_test_order() -> Vec<Rpc> {
    let mut rpcs = rpcs::all();
    rpcs.sort_by_key(|r| r.method == "MarkKeyVersionCompromised");
    rpcs
}

/// A batch or stream item's error as the status a unary call would return.
fn item(r: pb::ReEncryptResult) -> Result<(), Status> {
    match r.result {
        Some(pb::re_encrypt_result::Result::Ok(_)) => Ok(()),
        Some(pb::re_encrypt_result::Result::Error(e)) => Err(Status::new(Code::from_i32(e.code), e.message)),
        None => panic!("empty item result"),
    }
}

/// A response's metadata (the headers it began with).
fn meta<T>(r: tonic::Response<T>) -> MetadataMap {
    r.metadata().clone()
}

/// Calls one RPC naming `key` (and `ct`, a ciphertext under it); on success,
/// the metadata of the (last) response.
async fn call(who: &Who, rpc: &str, key: &str, ct: &[u8]) -> Result<MetadataMap, Status> {
    let mut keys = KeyServiceClient::new(who.channel.clone());
    let mut crypto = CryptoServiceClient::new(who.channel.clone());
    let mut audit = AuditServiceClient::new(who.channel.clone());
    let mut access = AccessServiceClient::new(who.channel.clone());
    let mut operator = OperatorServiceClient::new(who.channel.clone());
    let mut peer = pb::cluster_peer_service_client::ClusterPeerServiceClient::new(who.channel.clone());
    let grant = || pb::CreateGrantRequest {
        principal: "user".into(),
        keys: vec![key.into()],
        operations: vec!["decrypt".into()],
        ..Default::default()
    };
    match rpc {
        "CreatePrincipal" => access
            .create_principal(who.req(pb::CreatePrincipalRequest {
                name: "runtime-created".into(),
                roles: vec!["user".into()],
            }))
            .await
            .map(meta),
        // The revocations are tried first, so a refused caller is refused
        // (and audited) by the RPC under test; the owner then gets NOT_FOUND
        // and makes what it revokes.
        "DeletePrincipal" => {
            match access
                .delete_principal(who.req(pb::DeletePrincipalRequest { name: "runtime-deleted".into() }))
                .await
            {
                Err(e) if e.code() != Code::NotFound => return Err(e),
                _ => {}
            }
            access
                .create_principal(who.req(pb::CreatePrincipalRequest {
                    name: "runtime-deleted".into(),
                    roles: vec!["user".into()],
                }))
                .await?;
            access
                .delete_principal(who.req(pb::DeletePrincipalRequest { name: "runtime-deleted".into() }))
                .await
                .map(meta)
        }
        "ListPrincipals" => access.list_principals(who.req(pb::ListPrincipalsRequest {})).await.map(meta),
        "CreateToken" => access
            .create_token(who.req(pb::CreateTokenRequest { principal: "auditor".into(), ttl: None }))
            .await
            .map(meta),
        "RevokeToken" => {
            let unknown = pb::RevokeTokenRequest { token_id: "00000000-0000-4000-8000-000000000000".into() };
            match access.revoke_token(who.req(unknown)).await {
                Err(e) if e.code() != Code::NotFound => return Err(e),
                _ => {}
            }
            let t = access
                .create_token(who.req(pb::CreateTokenRequest { principal: "auditor".into(), ttl: None }))
                .await?
                .into_inner();
            let token_id = t.info.unwrap().token_id;
            access.revoke_token(who.req(pb::RevokeTokenRequest { token_id })).await.map(meta)
        }
        "RevokeAllTokens" => access
            .revoke_all_tokens(who.req(pb::RevokeAllTokensRequest { principal: "auditor".into() }))
            .await
            .map(meta),
        "ListTokens" => access.list_tokens(who.req(pb::ListTokensRequest::default())).await.map(meta),
        "CreateGrant" => access.create_grant(who.req(grant())).await.map(meta),
        "RevokeGrant" => {
            let unknown = pb::RevokeGrantRequest { grant_id: "00000000-0000-4000-8000-000000000000".into() };
            match access.revoke_grant(who.req(unknown)).await {
                Err(e) if e.code() != Code::NotFound => return Err(e),
                _ => {}
            }
            let g = access.create_grant(who.req(grant())).await?.into_inner();
            let grant_id = g.grant.unwrap().grant_id;
            access.revoke_grant(who.req(pb::RevokeGrantRequest { grant_id })).await.map(meta)
        }
        "ListGrants" => access
            .list_grants(who.req(pb::ListGrantsRequest { key_id: key.into(), ..Default::default() }))
            .await
            .map(meta),
        "CreateAccessKey" => access
            .create_access_key(who.req(pb::CreateAccessKeyRequest { principal: "auditor".into() }))
            .await
            .map(meta),
        "ListAccessKeys" => {
            access.list_access_keys(who.req(pb::ListAccessKeysRequest::default())).await.map(meta)
        }
        "RevokeAccessKey" => {
            let unknown = pb::RevokeAccessKeyRequest { access_key_id: "KWAKAAAAAAAAAAAAAAAA".into() };
            match access.revoke_access_key(who.req(unknown)).await {
                Err(e) if e.code() != Code::NotFound => return Err(e),
                _ => {}
            }
            let k = access
                .create_access_key(who.req(pb::CreateAccessKeyRequest { principal: "auditor".into() }))
                .await?
                .into_inner();
            let access_key_id = k.info.unwrap().access_key_id;
            access.revoke_access_key(who.req(pb::RevokeAccessKeyRequest { access_key_id })).await.map(meta)
        }
        "CreateKey" => keys.create_key(who.req(pb::CreateKeyRequest::default())).await.map(meta),
        "DescribeKey" => {
            keys.describe_key(who.req(pb::DescribeKeyRequest { key_id: key.into() })).await.map(meta)
        }
        "ListKeys" => keys.list_keys(who.req(pb::ListKeysRequest::default())).await.map(meta),
        "RotateKey" => keys.rotate_key(who.req(pb::RotateKeyRequest { key_id: key.into() })).await.map(meta),
        "EnableKey" => keys.enable_key(who.req(pb::EnableKeyRequest { key_id: key.into() })).await.map(meta),
        "DisableKey" => {
            keys.disable_key(who.req(pb::DisableKeyRequest { key_id: key.into() })).await?;
            keys.enable_key(who.req(pb::EnableKeyRequest { key_id: key.into() })).await.map(meta)
        }
        "CreateAlias" => keys
            .create_alias(who.req(pb::CreateAliasRequest { alias: "alias/extra".into(), key_id: key.into() }))
            .await
            .map(meta),
        "DeleteAlias" => {
            keys.delete_alias(who.req(pb::DeleteAliasRequest { alias: "alias/extra".into() })).await.map(meta)
        }
        "Encrypt" => crypto
            .encrypt(who.req(pb::EncryptRequest {
                key_id: key.into(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            }))
            .await
            .map(meta),
        "Decrypt" => crypto
            .decrypt(who.req(pb::DecryptRequest { ciphertext: ct.to_vec(), ..Default::default() }))
            .await
            .map(meta),
        "GenerateDataKey" => crypto
            .generate_data_key(
                who.req(pb::GenerateDataKeyRequest { key_id: key.into(), ..Default::default() }),
            )
            .await
            .map(meta),
        "GenerateDataKeyWithoutPlaintext" => crypto
            .generate_data_key_without_plaintext(
                who.req(pb::GenerateDataKeyRequest { key_id: key.into(), ..Default::default() }),
            )
            .await
            .map(meta),
        "ReEncrypt" => crypto
            .re_encrypt(who.req(pb::ReEncryptRequest {
                ciphertext: ct.to_vec(),
                destination_key_id: key.into(),
                ..Default::default()
            }))
            .await
            .map(meta),
        "DisableKeyVersion" => {
            keys.disable_key_version(
                who.req(pb::DisableKeyVersionRequest { key_id: key.into(), version: 1 }),
            )
            .await?;
            keys.enable_key_version(who.req(pb::EnableKeyVersionRequest { key_id: key.into(), version: 1 }))
                .await
                .map(meta)
        }
        "EnableKeyVersion" => keys
            .enable_key_version(who.req(pb::EnableKeyVersionRequest { key_id: key.into(), version: 1 }))
            .await
            .map(meta),
        "ScheduleKeyVersionDestruction" | "RestoreKeyVersion" => {
            let first = pb::ScheduleKeyVersionDestructionRequest {
                key_id: key.into(),
                version: 1,
                pending_window_days: 1,
            };
            if rpc == "RestoreKeyVersion" {
                // Restoring needs a scheduled version: try the restore first so
                // a refused caller is refused (and audited) exactly once.
                match keys
                    .restore_key_version(
                        who.req(pb::RestoreKeyVersionRequest { key_id: key.into(), version: 1 }),
                    )
                    .await
                {
                    Err(e) if e.code() != Code::FailedPrecondition => return Err(e),
                    _ => {}
                }
            }
            keys.schedule_key_version_destruction(who.req(first)).await?;
            keys.restore_key_version(
                who.req(pb::RestoreKeyVersionRequest { key_id: key.into(), version: 1 }),
            )
            .await?;
            keys.enable_key_version(who.req(pb::EnableKeyVersionRequest { key_id: key.into(), version: 1 }))
                .await
                .map(meta)
        }
        "ScheduleKeyDeletion" | "CancelKeyDeletion" => {
            if rpc == "CancelKeyDeletion" {
                match keys
                    .cancel_key_deletion(who.req(pb::CancelKeyDeletionRequest { key_id: key.into() }))
                    .await
                {
                    Err(e) if e.code() != Code::FailedPrecondition => return Err(e),
                    _ => {}
                }
            }
            keys.schedule_key_deletion(
                who.req(pb::ScheduleKeyDeletionRequest { key_id: key.into(), pending_window_days: 7 }),
            )
            .await?;
            keys.cancel_key_deletion(who.req(pb::CancelKeyDeletionRequest { key_id: key.into() })).await?;
            keys.enable_key(who.req(pb::EnableKeyRequest { key_id: key.into() })).await.map(meta)
        }
        "GenerateRandom" => {
            crypto.generate_random(who.req(pb::GenerateRandomRequest { number_of_bytes: 16 })).await.map(meta)
        }
        "QueryAuditLog" => audit
            .query_audit_log(who.req(pb::QueryAuditLogRequest { key_id: key.into(), ..Default::default() }))
            .await
            .map(meta),
        "VerifyAuditLog" => audit.verify_audit_log(who.req(pb::VerifyAuditLogRequest {})).await.map(meta),
        "GetAuditPublicKey" => {
            audit.get_audit_public_key(who.req(pb::GetAuditPublicKeyRequest {})).await.map(meta)
        }
        "ExportAuditLog" => audit
            .export_audit_log(who.req(pb::ExportAuditLogRequest { after_sequence: 0, page_size: 10 }))
            .await
            .map(meta),
        "UpdateRotationPolicy" => keys
            .update_rotation_policy(who.req(pb::UpdateRotationPolicyRequest {
                key_id: key.into(),
                rotation_period: Some(prost_types::Duration { seconds: 90 * 86400, nanos: 0 }),
                ..Default::default()
            }))
            .await
            .map(meta),
        "ListKeyVersions" => {
            keys.list_key_versions(who.req(pb::ListKeyVersionsRequest { key_id: key.into() })).await.map(meta)
        }
        "MarkKeyVersionCompromised" => keys
            .mark_key_version_compromised(
                who.req(pb::MarkKeyVersionCompromisedRequest { key_id: key.into(), version: 1 }),
            )
            .await
            .map(meta),
        "GenerateDataKeyBatch" => crypto
            .generate_data_key_batch(who.req(pb::GenerateDataKeyBatchRequest {
                key_id: key.into(),
                count: 2,
                ..Default::default()
            }))
            .await
            .map(meta),
        "BatchReEncrypt" => {
            let items = vec![pb::ReEncryptRequest {
                ciphertext: ct.to_vec(),
                destination_key_id: key.into(),
                ..Default::default()
            }];
            let r = crypto.batch_re_encrypt(who.req(pb::BatchReEncryptRequest { items })).await?;
            let m = r.metadata().clone();
            r.into_inner().results.into_iter().try_for_each(item).map(|()| m)
        }
        "ReEncryptStream" => {
            let one = pb::ReEncryptRequest {
                ciphertext: ct.to_vec(),
                destination_key_id: key.into(),
                ..Default::default()
            };
            let resp = crypto.re_encrypt_stream(who.req(futures_util::stream::iter([one]))).await?;
            let m = resp.metadata().clone();
            let mut results = resp.into_inner();
            let r = results.message().await?.expect("one result");
            assert!(results.message().await?.is_none(), "one item in, one result out");
            item(r).map(|()| m)
        }
        "SealStatus" => operator.seal_status(who.req(pb::SealStatusRequest {})).await.map(meta),
        // On this key-file server an empty share does nothing while unsealed.
        "Unseal" => operator.unseal(who.req(pb::UnsealRequest::default())).await.map(meta),
        // Sealed, then unsealed again from the key file by the same admin.
        "Seal" => {
            let m = operator.seal(who.req(pb::SealRequest {})).await.map(meta)?;
            let s = operator.unseal(who.req(pb::UnsealRequest::default())).await?.into_inner();
            assert!(!s.sealed, "unsealed again");
            Ok(m)
        }
        // To a fresh key file each time (the server swaps to it and serves on).
        "RotateRootKey" => {
            let dir = std::env::temp_dir().join(format!("keyward-access-rotate-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("root.key");
            keyward::config::create_root_key_file(&file).unwrap();
            let req = pb::RotateRootKeyRequest {
                new_root_key_file: file.display().to_string(),
                ..Default::default()
            };
            let out = operator.rotate_root_key(who.req(req)).await.map(meta);
            let _ = std::fs::remove_dir_all(&dir);
            out
        }
        "ClusterStatus" => operator.cluster_status(who.req(pb::ClusterStatusRequest {})).await.map(meta),
        "PeerQueryAuditLog" => peer
            .peer_query_audit_log(
                who.req(pb::PeerQueryAuditLogRequest { page_size: 10, ..Default::default() }),
            )
            .await
            .map(meta),
        "PeerVerifyAuditLog" => {
            peer.peer_verify_audit_log(who.req(pb::PeerVerifyAuditLogRequest::default())).await.map(meta)
        }
        "CreateBackup" => {
            let resp = operator.create_backup(who.req(pb::CreateBackupRequest {})).await?;
            let m = resp.metadata().clone();
            let mut chunks = resp.into_inner();
            let mut bytes = Vec::new();
            while let Some(c) = chunks.message().await? {
                bytes.extend(c.data);
            }
            keyward_format::backup::verify(&bytes[..]).expect("an intact backup");
            Ok(m)
        }
        other => panic!(
            "the {} descriptor lists {other}, which `call` in tests/access.rs does not know: \
             add an arm that calls it (the every-RPC tests cover every RPC of the descriptor)",
            rpcs::PACKAGE
        ),
    }
}

/// The RPCs that need no credential (tests/seal.rs covers them).
const UNGUARDED: [&str; 2] = ["SealStatus", "Unseal"];

/// Which role's service an RPC belongs to, from the descriptor's service name.
fn service_of(rpc: &Rpc) -> &'static str {
    match rpc.service.as_str() {
        "KeyService" => "keys",
        "CryptoService" => "crypto",
        "AuditService" => "audit",
        "AccessService" => "access",
        // Seal is the admin's; SealStatus and Unseal are UNGUARDED.
        "OperatorService" => "keys",
        // Node to node: a peer credential, whoever the caller.
        "ClusterPeerService" => "peer",
        other => {
            panic!("{}: service {other} is new to tests/access.rs: say which roles may call it", rpc.path())
        }
    }
}

/// Fails, naming the RPC, when the proto gains an RPC that `call` (and so
/// the every-RPC test below) does not know. Runs against a port nobody
/// listens on: every known RPC fails to connect before reaching a server.
#[tokio::test]
async fn call_knows_every_rpc_of_the_descriptor() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let nowhere =
        Who { channel: Channel::from_shared(format!("http://{free}")).unwrap().connect_lazy(), token: None };
    let all = rpcs::all();
    for rpc in &all {
        let e = call(&nowhere, &rpc.method, "k", b"").await.expect_err("nothing listens");
        assert_eq!(e.code(), Code::Unavailable, "{}: {}", rpc.path(), e.message());
        // Every RPC names the operation its refusals are audited as (the
        // size layer audits oversized requests by it).
        // (SealStatus is a status read, like health: never audited.)
        let audited = rpc.method != "SealStatus";
        assert_eq!(keyward_core::Operation::from_rpc(&rpc.method).is_some(), audited, "{}", rpc.path());
    }
    // The streaming RPC is in the list the every-RPC test walks.
    assert!(all.iter().any(|r| r.method == "ReEncryptStream" && r.client_streaming && r.server_streaming));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_guarded_and_every_refusal_audited() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let principals = format!(
        r#"
        [[principals]]
        name = "admin"
        roles = ["admin"]
        cert_dns_names = ["admin-client"]

        [[principals]]
        name = "auditor"
        roles = ["auditor"]
        token_sha256 = ["{auditor}"]

        [[principals]]
        name = "user"
        roles = ["user"]
        cert_dns_names = ["user-client"]
          [[principals.grants]]
          keys = ["alias/granted"]
          operations = ["*"]

        [[principals]]
        name = "limited"
        roles = ["user"]
        token_sha256 = ["{limited}"]
          [[principals.grants]]
          keys = ["label:team=pay"]
          operations = ["encrypt", "generate-data-key-without-plaintext"]
        "#,
        auditor = keyward::auth::token_hash_hex(AUDITOR_TOKEN),
        limited = keyward::auth::token_hash_hex(LIMITED_TOKEN),
    );
    let server = common::pki::TlsServer::start(dir.path(), &pki, &principals).await;
    let addr = server.addr.clone();

    let admin = Who { channel: channel(&addr, &pki, Some(&pki.leaf("admin-client"))).await, token: None };
    let user = Who { channel: channel(&addr, &pki, Some(&pki.leaf("user-client"))).await, token: None };
    let anon_channel = channel(&addr, &pki, None).await;
    let auditor = Who { channel: anon_channel.clone(), token: Some(AUDITOR_TOKEN) };
    let limited = Who { channel: anon_channel.clone(), token: Some(LIMITED_TOKEN) };
    let nobody = Who { channel: anon_channel.clone(), token: None };
    let bad_token = Who { channel: anon_channel.clone(), token: Some("kw_wrong") };
    let stranger = Who { channel: channel(&addr, &pki, Some(&pki.leaf("stranger"))).await, token: None };

    // The admin makes two keys; the user is granted only the first.
    let mk = |alias: &'static str, team: &'static str| {
        let admin = admin.clone();
        async move {
            KeyServiceClient::new(admin.channel.clone())
                .create_key(admin.req(pb::CreateKeyRequest {
                    alias: alias.into(),
                    labels: [("team".to_string(), team.to_string())].into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .key
                .unwrap()
                .key_id
        }
    };
    let granted = mk("alias/granted", "ops").await;
    let other = mk("alias/other", "pay").await;
    let ct_of = |who: Who, key: String| async move {
        CryptoServiceClient::new(who.channel.clone())
            .encrypt(who.req(pb::EncryptRequest {
                key_id: key,
                plaintext: b"p".to_vec(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .ciphertext
    };
    let granted_ct = ct_of(user.clone(), granted.clone()).await;
    // Version 1 (which made granted_ct) is no longer primary, so version RPCs may use it.
    KeyServiceClient::new(admin.channel.clone())
        .rotate_key(admin.req(pb::RotateKeyRequest { key_id: granted.clone() }))
        .await
        .unwrap();
    let other_ct = ct_of(limited.clone(), other.clone()).await;

    let mut refusals = 0;
    for rpc in rpcs_in_test_order() {
        let service = service_of(&rpc);
        let rpc = rpc.method.as_str();
        if UNGUARDED.contains(&rpc) {
            // Anyone may ask and offer shares (the share is the credential);
            // they answer while sealed, when no identity can be checked.
            assert!(call(&nobody, rpc, &granted, &granted_ct).await.is_ok(), "{rpc}");
            continue;
        }
        if service == "peer" {
            // Without a peer credential (and on a single node, with any),
            // every caller is refused, administrators too.
            for who in [&nobody, &admin] {
                let e = call(who, rpc, &granted, &granted_ct).await.unwrap_err();
                assert_eq!(e.code(), Code::Unauthenticated, "{rpc}: {}", e.message());
                assert!(e.message().contains("peer credential"), "{rpc}: {}", e.message());
                assert!(e.metadata().get("x-request-id").is_some(), "{rpc}: refusal without x-request-id");
                refusals += 1;
            }
            continue;
        }
        // Unauthenticated: no credentials, a wrong token, an unknown certificate.
        for who in [&nobody, &bad_token, &stranger] {
            let e = call(who, rpc, &granted, &granted_ct).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{rpc}: {}", e.message());
            assert!(e.metadata().get("x-request-id").is_some(), "{rpc}: refusal without x-request-id");
            refusals += 1;
        }
        // Wrong role: everyone whose roles do not include this service's.
        let wrong: Vec<&Who> = match service {
            // DescribeKey is also for whoever holds a grant on the key (the user, on `granted`);
            // the reads of key metadata are for auditors too (compliance reviewers).
            "keys" if rpc == "DescribeKey" => vec![&limited],
            "keys" if rpc == "ListKeys" || rpc == "ListKeyVersions" => vec![&user, &limited],
            // Administrators and auditors may read the cluster's status.
            "keys" if rpc == "ClusterStatus" => vec![&user, &limited],
            "keys" | "access" => vec![&user, &auditor, &limited],
            "crypto" => vec![&admin, &auditor],
            _ => vec![&admin, &user, &limited],
        };
        for who in wrong {
            let e = call(who, rpc, &granted, &granted_ct).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rpc}: {}", e.message());
            refusals += 1;
        }
        // A user describes the key it holds a grant on, not the other.
        if rpc == "DescribeKey" {
            call(&user, rpc, &granted, &granted_ct).await.unwrap();
            let e = call(&user, rpc, &other, &other_ct).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rpc}: {}", e.message());
            assert!(e.message().contains("a grant on the key"), "{}", e.message());
            refusals += 1;
        }
        // A user without a grant on the key.
        if service == "crypto" && rpc != "GenerateRandom" {
            let e = call(&user, rpc, &other, &other_ct).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rpc}: {}", e.message());
            assert!(e.message().contains("user may not"), "{}", e.message());
            refusals += 1;
        }
        // The authorized caller succeeds.
        let ok = match service {
            "keys" | "access" => &admin,
            "crypto" => &user,
            _ => &auditor,
        };
        if rpc == "ClusterStatus" {
            // This is a single-node server: the authorized caller is told so.
            for who in [&admin, &auditor] {
                let e = call(who, rpc, &granted, &granted_ct).await.unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition, "{rpc}: {}", e.message());
                assert!(e.message().contains("not a cluster node"), "{}", e.message());
                assert!(e.metadata().get("x-request-id").is_some(), "{rpc}: no x-request-id");
            }
            continue;
        }
        let m = call(ok, rpc, &granted, &granted_ct)
            .await
            .unwrap_or_else(|e| panic!("{rpc} by its owner: {e:?}"));
        // Every RPC returns its request id (README), streams included.
        assert!(m.get("x-request-id").is_some_and(|v| !v.is_empty()), "{rpc}: no x-request-id in {m:?}");
    }

    // Separate permissions: data keys with and without plaintext; decrypt.
    assert!(call(&limited, "GenerateDataKeyWithoutPlaintext", &other, &other_ct).await.is_ok());
    for rpc in ["GenerateDataKey", "Decrypt", "ReEncrypt"] {
        assert_eq!(
            call(&limited, rpc, &other, &other_ct).await.unwrap_err().code(),
            Code::PermissionDenied,
            "{rpc}"
        );
        refusals += 1;
    }
    // ReEncrypt checks both keys: the user may re-encrypt from granted but not into other.
    assert_eq!(
        call(&user, "ReEncrypt", &other, &granted_ct).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    refusals += 1;

    // Every refusal is in the audit log, with the principal.
    let mut audit = AuditServiceClient::new(auditor.channel.clone());
    let mut denied = Vec::new();
    for outcome in ["UNAUTHENTICATED", "PERMISSION_DENIED"] {
        let mut token = String::new();
        loop {
            let page = audit
                .query_audit_log(auditor.req(pb::QueryAuditLogRequest {
                    outcome: outcome.into(),
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            denied.extend(page.records);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    assert_eq!(denied.len(), refusals, "one record per refusal");
    // ... each under the operation that was refused (every RPC was refused for a wrong role).
    for rpc in rpcs::all().iter().filter(|r| !UNGUARDED.contains(&r.method.as_str())) {
        let op = keyward_core::Operation::from_rpc(&rpc.method).unwrap().as_str();
        assert!(
            denied.iter().any(|r| r.operation == op && r.outcome == "PERMISSION_DENIED"),
            "no PERMISSION_DENIED record of {op}"
        );
    }
    assert!(denied.iter().any(|r| r.principal == "unauthenticated" && r.outcome == "UNAUTHENTICATED"));
    assert!(denied.iter().any(|r| r.principal == "limited" && r.operation == "GenerateDataKey"));
    assert!(denied.iter().any(|r| r.principal == "user" && r.key_id == other && r.operation == "Encrypt"));
    let by_user = audit
        .query_audit_log(auditor.req(pb::QueryAuditLogRequest {
            principal: "user".into(),
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(by_user.iter().all(|r| r.principal == "user"));
    assert!(!by_user.is_empty());

    server.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_without_allow_insecure() {
    let file: FileConfig = toml::from_str(
        r#"
        listen = "0.0.0.0:50051"
        root_key_file = "/nonexistent"
        [[principals]]
        name = "a"
        roles = ["admin"]
        "#,
    )
    .unwrap();
    let e = ServerConfig::from_parts(file, &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("allow_insecure"), "{e}");
}
