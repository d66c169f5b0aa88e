//! Access that changes at runtime, end to end over a real socket and real
//! RocksDB: principals, tokens and grants through the AccessService,
//! revocation while a client is sending, expiry, grant constraints on the
//! encryption context, a deleted principal, a JWT mapped to a runtime
//! principal, and persistence across a restart.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyward::pb;
use keyward::pb::access_service_client::AccessServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

use common::{assert_status, bearer, ctx, TestServer};

const ADMIN_TOKEN: &str = "kw_admin_token_for_runtime_access";
const AUDITOR_TOKEN: &str = "kw_auditor_token_for_runtime_access";

fn config(dir: &Path, extra: &str) -> keyward::ServerConfig {
    let root = dir.join("root.key");
    if !root.exists() {
        keyward::config::create_root_key_file(&root).unwrap();
    }
    let text = format!(
        r#"
        data_dir = "{data}"
        root_key_file = "{root}"
        {extra}

        [[principals]]
        name = "admin"
        roles = ["admin"]
        token_sha256 = ["{admin}"]

        [[principals]]
        name = "auditor"
        roles = ["auditor"]
        token_sha256 = ["{auditor}"]
        "#,
        data = dir.join("data").display(),
        root = root.display(),
        admin = keyward::auth::token_hash_hex(ADMIN_TOKEN),
        auditor = keyward::auth::token_hash_hex(AUDITOR_TOKEN),
    );
    let file: keyward::config::FileConfig = toml::from_str(&text).unwrap();
    keyward::ServerConfig::from_parts(file, &Default::default()).unwrap()
}

struct Admin(AccessServiceClient<Channel>);

impl Admin {
    fn new(s: &TestServer) -> Self {
        Self(AccessServiceClient::new(s.channel.clone()))
    }

    async fn principal(&mut self, name: &str, roles: &[&str]) {
        let roles = roles.iter().map(|r| r.to_string()).collect();
        self.0
            .create_principal(bearer(pb::CreatePrincipalRequest { name: name.into(), roles }, ADMIN_TOKEN))
            .await
            .unwrap();
    }

    async fn token(&mut self, principal: &str, ttl_s: Option<i64>) -> (String, String) {
        let ttl = ttl_s.map(|s| prost_types::Duration { seconds: s, nanos: 0 });
        let r = self
            .0
            .create_token(bearer(pb::CreateTokenRequest { principal: principal.into(), ttl }, ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner();
        (r.token, r.info.unwrap().token_id)
    }

    async fn grant(&mut self, principal: &str, key: &str, ops: &[&str], equals: &[(&str, &str)]) -> String {
        let req = pb::CreateGrantRequest {
            principal: principal.into(),
            keys: vec![key.into()],
            operations: ops.iter().map(|o| o.to_string()).collect(),
            context_equals: ctx(equals),
            ..Default::default()
        };
        self.0.create_grant(bearer(req, ADMIN_TOKEN)).await.unwrap().into_inner().grant.unwrap().grant_id
    }
}

async fn make_key(s: &TestServer) -> String {
    s.keys()
        .create_key(bearer(pb::CreateKeyRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

fn encrypt_req(key: &str, token: &str, context: &[(&str, &str)]) -> Request<pb::EncryptRequest> {
    bearer(
        pb::EncryptRequest {
            key_id: key.into(),
            plaintext: b"card 4111".to_vec(),
            encryption_context: ctx(context),
            ..Default::default()
        },
        token,
    )
}

async fn records(s: &TestServer, operation: &str) -> Vec<pb::AuditRecord> {
    s.audit()
        .query_audit_log(bearer(
            pb::QueryAuditLogRequest { operation: operation.into(), page_size: 1000, ..Default::default() },
            AUDITOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_workflow_grants_constrains_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), config(dir.path(), ""), None).await;
    let key = make_key(&s).await;
    let mut admin = Admin::new(&s);
    admin.principal("payments-api", &["user"]).await;
    let grant = admin.grant("payments-api", &key, &["encrypt", "decrypt"], &[("tenant", "acme")]).await;
    let (token, token_id) = admin.token("payments-api", Some(900)).await;
    assert!(token.starts_with("kwt_"));

    // Inside the constraint: works. Outside: PERMISSION_DENIED, audited.
    let ct = s
        .crypto()
        .encrypt(encrypt_req(&key, &token, &[("tenant", "acme")]))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert_status(
        s.crypto().encrypt(encrypt_req(&key, &token, &[("tenant", "evil")])).await,
        Code::PermissionDenied,
        "encryption context",
    );
    let dec = |context: &[(&str, &str)]| {
        bearer(
            pb::DecryptRequest {
                ciphertext: ct.clone(),
                encryption_context: ctx(context),
                ..Default::default()
            },
            &token,
        )
    };
    s.crypto().decrypt(dec(&[("tenant", "acme")])).await.unwrap();
    // Not granted: data keys (with or without plaintext are separate permissions anyway).
    assert_status(
        s.crypto()
            .generate_data_key(bearer(
                pb::GenerateDataKeyRequest {
                    key_id: key.clone(),
                    encryption_context: ctx(&[("tenant", "acme")]),
                    ..Default::default()
                },
                &token,
            ))
            .await,
        Code::PermissionDenied,
        "payments-api may not generate-data-key",
    );
    let denied = records(&s, "Encrypt").await;
    assert!(denied.iter().any(|r| r.principal == "payments-api"
        && r.outcome == "PERMISSION_DENIED"
        && r.encryption_context.get("tenant").map(String::as_str) == Some("evil")));

    // Every access change is audited with who changed what.
    for (op, target) in [
        ("CreatePrincipal", "principal:payments-api".to_string()),
        ("CreateGrant", format!("grant:{grant}")),
        ("CreateToken", format!("token:{token_id}")),
    ] {
        let r = records(&s, op).await;
        assert!(
            r.iter().any(|r| r.principal == "admin" && r.target.starts_with(&target) && r.outcome == "OK"),
            "{op}: {r:?}"
        );
    }
    // A grant of one key names it in its record.
    assert!(records(&s, "CreateGrant").await.iter().any(|r| r.key_id == key));

    // Listing never shows the token.
    let listed = admin
        .0
        .list_tokens(bearer(pb::ListTokensRequest { principal: "payments-api".into() }, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].token_id, token_id);
    assert!(listed[0].last_used_time.is_some());
    assert!(!format!("{listed:?}").contains(&token[token.len() - 64..]));

    // A user may not change access; audited.
    admin.principal("other-admin-wannabe", &["user"]).await;
    let (user_token, _) = admin.token("other-admin-wannabe", None).await;
    assert_status(
        AccessServiceClient::new(s.channel.clone())
            .create_grant(bearer(
                pb::CreateGrantRequest {
                    principal: "other-admin-wannabe".into(),
                    keys: vec!["*".into()],
                    operations: vec!["*".into()],
                    ..Default::default()
                },
                &user_token,
            ))
            .await,
        Code::PermissionDenied,
        "may not change access",
    );

    // Revoking the grant: refused on the next request.
    admin
        .0
        .revoke_grant(bearer(pb::RevokeGrantRequest { grant_id: grant.clone() }, ADMIN_TOKEN))
        .await
        .unwrap();
    assert_status(
        s.crypto().decrypt(dec(&[("tenant", "acme")])).await,
        Code::PermissionDenied,
        "may not decrypt",
    );

    // Deleting the principal takes its token (and grants) with it.
    admin.grant("payments-api", &key, &["encrypt"], &[]).await;
    s.crypto().encrypt(encrypt_req(&key, &token, &[])).await.unwrap();
    admin
        .0
        .delete_principal(bearer(pb::DeletePrincipalRequest { name: "payments-api".into() }, ADMIN_TOKEN))
        .await
        .unwrap();
    assert_status(
        s.crypto().encrypt(encrypt_req(&key, &token, &[])).await,
        Code::Unauthenticated,
        "not valid",
    );
    let grants = admin
        .0
        .list_grants(bearer(pb::ListGrantsRequest { key_id: key.clone(), ..Default::default() }, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.iter().all(|g| g.principal != "payments-api"), "{grants:?}");

    // Bootstrap principals are read-only.
    assert_status(
        admin
            .0
            .delete_principal(bearer(pb::DeletePrincipalRequest { name: "auditor".into() }, ADMIN_TOKEN))
            .await,
        Code::FailedPrecondition,
        "configuration file",
    );
    s.stop().await.unwrap();
}

/// Revocation while a client sends in a loop: once `RevokeToken` (or
/// `RevokeGrant`) has answered, no request sent after that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_succeeds_after_a_revocation_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), config(dir.path(), ""), None).await;
    let key = make_key(&s).await;
    let mut admin = Admin::new(&s);
    admin.principal("looper", &["user"]).await;
    for what in ["token", "grant"] {
        let grant = admin.grant("looper", &key, &["encrypt"], &[]).await;
        let (token, token_id) = admin.token("looper", None).await;
        let revoked = Arc::new(AtomicBool::new(false));
        // Clients on their own connections, sending back to back.
        let mut loops = Vec::new();
        for _ in 0..4 {
            let (channel, key, token, revoked) =
                (common::connect(&s.addr).await, key.clone(), token.clone(), revoked.clone());
            loops.push(tokio::spawn(async move {
                let mut crypto = keyward::pb::crypto_service_client::CryptoServiceClient::new(channel);
                let (mut ok_before, mut refused_after) = (0u32, 0u32);
                loop {
                    // Read before sending: a request sent after the revoke was acknowledged.
                    let after = revoked.load(Ordering::SeqCst);
                    match crypto.encrypt(encrypt_req(&key, &token, &[])).await {
                        Ok(_) => {
                            assert!(!after, "a request sent after the revocation was acknowledged succeeded");
                            ok_before += 1;
                        }
                        Err(e) => {
                            assert!(
                                matches!(e.code(), Code::Unauthenticated | Code::PermissionDenied),
                                "{e:?}"
                            );
                            if after {
                                refused_after += 1;
                                if refused_after >= 20 {
                                    return ok_before;
                                }
                            }
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if what == "token" {
            admin.0.revoke_token(bearer(pb::RevokeTokenRequest { token_id }, ADMIN_TOKEN)).await.unwrap();
        } else {
            admin
                .0
                .revoke_grant(bearer(pb::RevokeGrantRequest { grant_id: grant }, ADMIN_TOKEN))
                .await
                .unwrap();
        }
        revoked.store(true, Ordering::SeqCst);
        let mut ok = 0;
        for l in loops {
            ok += l.await.unwrap();
        }
        assert!(ok > 0, "{what}: the loop succeeded before the revocation");
        if what == "token" {
            // Clean up the grant for the next round.
            let gs = admin
                .0
                .list_grants(bearer(
                    pb::ListGrantsRequest { principal: "looper".into(), ..Default::default() },
                    ADMIN_TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
                .grants;
            for g in gs {
                admin
                    .0
                    .revoke_grant(bearer(pb::RevokeGrantRequest { grant_id: g.grant_id }, ADMIN_TOKEN))
                    .await
                    .unwrap();
            }
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_token_expired_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), config(dir.path(), "[access]\nmax_token_ttl = \"2h\""), None)
        .await;
    let key = make_key(&s).await;
    let mut admin = Admin::new(&s);
    admin.principal("short-lived", &["user"]).await;
    admin.grant("short-lived", &key, &["encrypt"], &[]).await;
    let (token, token_id) = admin.token("short-lived", Some(3)).await;
    s.crypto().encrypt(encrypt_req(&key, &token, &[])).await.unwrap();
    // Waiting for the expiry, not timing anything.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_status(
        s.crypto().encrypt(encrypt_req(&key, &token, &[])).await,
        Code::Unauthenticated,
        "token expired",
    );
    let r = records(&s, "Encrypt").await;
    assert!(
        r.iter().any(|r| r.outcome == "UNAUTHENTICATED"
            && r.reason == "token expired"
            && r.target == format!("token:{token_id}")),
        "{r:?}"
    );
    // The TTL is bounded by max_token_ttl, and the default is 1 h.
    let too_long = admin
        .0
        .create_token(bearer(
            pb::CreateTokenRequest {
                principal: "short-lived".into(),
                ttl: Some(prost_types::Duration { seconds: 3 * 3600, nanos: 0 }),
            },
            ADMIN_TOKEN,
        ))
        .await;
    assert_status(too_long, Code::InvalidArgument, "ttl");
    let t = admin
        .0
        .create_token(bearer(
            pb::CreateTokenRequest { principal: "short-lived".into(), ttl: None },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(t.expire_time.unwrap().seconds - t.create_time.unwrap().seconds, 3600);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_access_survives_a_restart_and_bad_requests_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), config(dir.path(), ""), None).await;
    let key = make_key(&s).await;
    let mut admin = Admin::new(&s);
    admin.principal("svc", &["user"]).await;
    admin.grant("svc", &key, &["encrypt"], &[("tenant", "acme")]).await;
    let (token, _) = admin.token("svc", None).await;
    s.crypto().encrypt(encrypt_req(&key, &token, &[("tenant", "acme")])).await.unwrap();

    let bad = [
        (
            pb::CreateGrantRequest {
                principal: "svc".into(),
                keys: vec![],
                operations: vec!["encrypt".into()],
                ..Default::default()
            },
            "keys",
        ),
        (
            pb::CreateGrantRequest {
                principal: "svc".into(),
                keys: vec!["*".into()],
                operations: vec!["sign".into()],
                ..Default::default()
            },
            "operations",
        ),
        (
            pb::CreateGrantRequest {
                principal: "nobody".into(),
                keys: vec!["*".into()],
                operations: vec!["*".into()],
                ..Default::default()
            },
            "nobody",
        ),
    ];
    for (req, needle) in bad {
        let e = admin.0.create_grant(bearer(req, ADMIN_TOKEN)).await.unwrap_err();
        assert!(matches!(e.code(), Code::InvalidArgument | Code::NotFound), "{e:?}");
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
    }
    assert_status(
        admin
            .0
            .create_principal(bearer(
                pb::CreatePrincipalRequest { name: "dev".into(), roles: vec!["admin".into()] },
                ADMIN_TOKEN,
            ))
            .await,
        Code::InvalidArgument,
        "name",
    );
    assert_status(
        admin.0.revoke_token(bearer(pb::RevokeTokenRequest { token_id: "x".into() }, ADMIN_TOKEN)).await,
        Code::InvalidArgument,
        "token_id",
    );
    // A forged runtime token: refused, and the server keeps serving.
    assert_status(
        s.crypto().encrypt(encrypt_req(&key, "kwt_garbage", &[])).await,
        Code::Unauthenticated,
        "not valid",
    );
    s.stop().await.unwrap();

    let s = TestServer::start_with(dir.path(), config(dir.path(), ""), None).await;
    s.crypto().encrypt(encrypt_req(&key, &token, &[("tenant", "acme")])).await.unwrap();
    assert_status(
        s.crypto().encrypt(encrypt_req(&key, &token, &[("tenant", "other")])).await,
        Code::PermissionDenied,
        "encryption context",
    );
    let principals = Admin::new(&s)
        .0
        .list_principals(bearer(pb::ListPrincipalsRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .principals;
    let names: Vec<(&str, bool)> = principals.iter().map(|p| (p.name.as_str(), p.bootstrap)).collect();
    assert_eq!(names, [("admin", true), ("auditor", true), ("svc", false)]);
    s.stop().await.unwrap();
}

/// A ReEncryptStream's items are requests: once a grant is revoked (or the
/// token), the stream's next item is refused, though the stream stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sees_a_revocation_at_its_next_item() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), config(dir.path(), ""), None).await;
    let key = make_key(&s).await;
    let mut admin = Admin::new(&s);
    admin.principal("streamer", &["user"]).await;
    let grant = admin.grant("streamer", &key, &["encrypt", "re-encrypt-from", "re-encrypt-to"], &[]).await;
    let (token, token_id) = admin.token("streamer", None).await;
    let ct = s.crypto().encrypt(encrypt_req(&key, &token, &[])).await.unwrap().into_inner().ciphertext;
    let item = || pb::ReEncryptRequest {
        ciphertext: ct.clone(),
        destination_key_id: key.clone(),
        ..Default::default()
    };

    for revoke in ["grant", "token"] {
        if revoke == "token" {
            admin.grant("streamer", &key, &["re-encrypt-from", "re-encrypt-to"], &[]).await;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ReEncryptRequest>(4);
        let items =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        let mut results = s.crypto().re_encrypt_stream(bearer(items, &token)).await.unwrap().into_inner();
        tx.send(item()).await.unwrap();
        let first = results.message().await.unwrap().unwrap();
        assert!(matches!(first.result, Some(pb::re_encrypt_result::Result::Ok(_))), "{first:?}");
        if revoke == "grant" {
            let gs = admin
                .0
                .list_grants(bearer(
                    pb::ListGrantsRequest { principal: "streamer".into(), ..Default::default() },
                    ADMIN_TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
                .grants;
            assert!(gs.iter().any(|g| g.grant_id == grant));
            for g in gs {
                admin
                    .0
                    .revoke_grant(bearer(pb::RevokeGrantRequest { grant_id: g.grant_id }, ADMIN_TOKEN))
                    .await
                    .unwrap();
            }
        } else {
            admin
                .0
                .revoke_token(bearer(pb::RevokeTokenRequest { token_id: token_id.clone() }, ADMIN_TOKEN))
                .await
                .unwrap();
        }
        tx.send(item()).await.unwrap();
        let second = results.message().await.unwrap().unwrap();
        let Some(pb::re_encrypt_result::Result::Error(e)) = second.result else {
            panic!("{revoke}: {second:?}")
        };
        let want = if revoke == "grant" { Code::PermissionDenied } else { Code::Unauthenticated };
        assert_eq!(Code::from_i32(e.code), want, "{revoke}: {}", e.message);
        drop(tx);
        assert!(results.message().await.unwrap().is_none());
    }
    s.stop().await.unwrap();
}
