//! The AccessService use cases over the in-memory store: principals, tokens
//! and grants that change at runtime, expiry, revocation, context
//! constraints, persistence across a restart, and tampering.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use common::{caller, open, open_with};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{
    AccessRecord, AuditQuery, Caller, CreateKeyInput, ErrorKind, GrantInput, Kms, KmsConfig, OpenError,
    Policy, Role, Store, TokenRefusal, TokenTtl,
};
use keyward_crypto::Plaintext;

fn as_token(kms: &Kms, token: &str) -> Result<Caller, TokenRefusal> {
    let id = kms.identify_token(token)?;
    Ok(Caller {
        request_id: "req-t".into(),
        principal: id.principal,
        peer: String::new(),
        edge: keyward_core::Edge::Grpc,
        policy: id.policy,
    })
}

fn newest(store: &Arc<dyn Store>) -> keyward_core::AuditRecord {
    store.query_audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap().records[0].record.clone()
}

fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn key(kms: &Kms) -> String {
    kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap().meta.id.to_string()
}

#[tokio::test]
async fn a_runtime_principal_gets_a_token_and_a_constrained_grant_and_loses_them() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let kms = open(&store, &clock);
    let k = key(&kms).await;
    let p = kms.create_principal(&caller(), "payments-api", &["user".into()]).await.unwrap();
    assert_eq!((p.bootstrap, p.roles), (false, BTreeSet::from([Role::User])));
    let r = newest(&store);
    assert_eq!((r.operation.as_str(), r.principal.as_str()), ("CreatePrincipal", "admin"));
    assert_eq!(r.target.as_deref(), Some("principal:payments-api"));

    let t = kms.create_token(&caller(), "payments-api", Some(15 * 60_000)).await.unwrap();
    assert!(t.token.starts_with("kwt_"));
    assert_eq!(t.view.expires_ms - t.view.created_ms, 15 * 60_000);
    assert!(!format!("{t:?}").contains(t.token.as_str()), "the token never prints");
    assert_eq!(newest(&store).target, Some(format!("token:{} principal:payments-api", t.view.id)));
    let user = as_token(&kms, &t.token).unwrap();
    assert_eq!(user.principal, "payments-api");

    // No grant yet.
    let e =
        kms.encrypt(&user, &k, Plaintext::new(b"x".to_vec()), ctx(&[("tenant", "acme")])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);

    let g = kms
        .create_grant(
            &caller(),
            GrantInput {
                principal: "payments-api".into(),
                keys: vec![k.clone()],
                operations: vec!["encrypt".into(), "decrypt".into()],
                context_equals: ctx(&[("tenant", "acme")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = newest(&store);
    assert_eq!(r.key_id.as_deref(), Some(k.as_str()), "a grant of one key names it");
    assert_eq!(
        r.target,
        Some(format!(
            "grant:{} principal:payments-api keys:{k} operations:encrypt,decrypt context_equals:tenant=acme",
            g.id.unwrap()
        ))
    );

    // The policy is looked up per request: the same caller value is stale,
    // a fresh identification sees the grant.
    let user = as_token(&kms, &t.token).unwrap();
    let sealed =
        kms.encrypt(&user, &k, Plaintext::new(b"x".to_vec()), ctx(&[("tenant", "acme")])).await.unwrap();
    // Outside the constraint: refused, audited, saying why.
    for bad in [ctx(&[("tenant", "evil")]), ctx(&[]), ctx(&[("tenant", "acme"), ("extra", "1")])] {
        let e = kms.encrypt(&user, &k, Plaintext::new(b"x".to_vec()), bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.public_message().contains("encryption context"), "{}", e.public_message());
        assert_eq!(newest(&store).outcome, "PERMISSION_DENIED");
    }
    let e = kms.decrypt(&user, &sealed.ciphertext, ctx(&[("tenant", "other")]), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    kms.decrypt(&user, &sealed.ciphertext, ctx(&[("tenant", "acme")]), None).await.unwrap();

    // Listings.
    let grants = kms.list_grants(&caller(), Some("payments-api"), None).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(kms.list_grants(&caller(), None, Some(&k)).await.unwrap().len(), 1);
    let tokens = kms.list_tokens(&caller(), None).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].last_used_ms.is_some());

    // Revoking the grant: the next request is refused; the record says what it allowed.
    kms.revoke_grant(&caller(), &g.id.unwrap().to_string()).await.unwrap();
    assert!(newest(&store).target.unwrap().contains("principal:payments-api keys:"));
    let user = as_token(&kms, &t.token).unwrap();
    let e =
        kms.encrypt(&user, &k, Plaintext::new(b"x".to_vec()), ctx(&[("tenant", "acme")])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);

    // Deleting the principal takes its tokens with it.
    kms.delete_principal(&caller(), "payments-api").await.unwrap();
    assert_eq!(as_token(&kms, &t.token).unwrap_err(), TokenRefusal::Invalid);
    assert!(kms.list_tokens(&caller(), None).await.unwrap().is_empty());
    assert!(kms.policy_of("payments-api").is_none());
}

#[tokio::test]
async fn tokens_expire_and_their_ttl_is_bounded() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let config =
        KmsConfig { token_ttl: TokenTtl { default_ms: 3_600_000, max_ms: 7_200_000 }, ..Default::default() };
    let kms = open_with(&store, &clock, config);
    kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap();
    let t = kms.create_token(&caller(), "svc", None).await.unwrap();
    assert_eq!(t.view.expires_ms - t.view.created_ms, 3_600_000, "default 1 h");
    clock.advance_ms(3_600_000 - 1);
    as_token(&kms, &t.token).unwrap();
    clock.advance_ms(1);
    assert_eq!(as_token(&kms, &t.token).unwrap_err(), TokenRefusal::Expired(t.view.id));
    assert_eq!(TokenRefusal::Expired(t.view.id).message(), "token expired");
    for ttl in [0, -5, 7_200_001] {
        let e = kms.create_token(&caller(), "svc", Some(ttl)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.public_message().contains("ttl"), "{}", e.public_message());
    }
    kms.create_token(&caller(), "svc", Some(7_200_000)).await.unwrap();
    let e = kms.create_token(&caller(), "nobody", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn only_admins_change_access_and_bad_input_names_its_field() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let config = KmsConfig {
        bootstrap_principals: vec![("ops".into(), Policy::new([Role::Admin].into(), vec![]))],
        ..Default::default()
    };
    let kms = open_with(&store, &clock, config);
    let user = Caller {
        principal: "u".into(),
        policy: Arc::new(Policy::new([Role::User].into(), vec![])),
        ..caller()
    };
    let e = kms.create_principal(&user, "x", &["admin".into()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let r = newest(&store);
    assert_eq!((r.operation.as_str(), r.outcome.as_str()), ("CreatePrincipal", "PERMISSION_DENIED"));
    assert_eq!(r.target.as_deref(), Some("principal:x"));
    assert_eq!(kms.list_tokens(&user, None).await.unwrap_err().kind(), ErrorKind::PermissionDenied);

    let cases: Vec<(&str, Result<_, keyward_core::KmsError>)> = vec![
        ("name", kms.create_principal(&caller(), "", &["user".into()]).await.map(drop)),
        ("name", kms.create_principal(&caller(), "has space", &["user".into()]).await.map(drop)),
        ("name", kms.create_principal(&caller(), "System", &["user".into()]).await.map(drop)),
        ("roles", kms.create_principal(&caller(), "a", &[]).await.map(drop)),
        ("roles", kms.create_principal(&caller(), "a", &["boss".into()]).await.map(drop)),
        ("token_id", kms.revoke_token(&caller(), "nope").await),
        ("grant_id", kms.revoke_grant(&caller(), "nope").await),
    ];
    for (field, r) in cases {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{field}: {e}");
        assert!(e.public_message().contains(field), "{field}: {}", e.public_message());
    }
    kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap();
    let grant = |keys: Vec<&str>, ops: Vec<&str>| GrantInput {
        principal: "svc".into(),
        keys: keys.into_iter().map(String::from).collect(),
        operations: ops.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    for (field, input) in [
        ("keys", grant(vec![], vec!["encrypt"])),
        ("keys", grant(vec!["not-a-key"], vec!["encrypt"])),
        ("operations", grant(vec!["*"], vec![])),
        ("operations", grant(vec!["*"], vec!["sign"])),
        (
            "context_contains",
            GrantInput {
                context_equals: ctx(&[("a", "1")]),
                context_contains: ctx(&[("b", "2")]),
                ..grant(vec!["*"], vec!["*"])
            },
        ),
        ("context_equals", GrantInput { context_equals: ctx(&[("", "1")]), ..grant(vec!["*"], vec!["*"]) }),
    ] {
        let e = kms.create_grant(&caller(), input).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{field}: {e}");
        assert!(e.public_message().contains(field), "{field}: {}", e.public_message());
    }
    // A key named by id or alias must exist.
    for missing in [keyward_core::KeyId::generate().to_string(), "alias/typo".to_string()] {
        let e =
            kms.create_grant(&caller(), grant(vec![missing.as_str()], vec!["encrypt"])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{missing}: {e}");
    }
    // Bootstrap principals: read only, but they can be given tokens and grants.
    assert_eq!(
        kms.delete_principal(&caller(), "ops").await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kms.create_principal(&caller(), "ops", &["user".into()]).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let t = kms.create_token(&caller(), "ops", None).await.unwrap();
    assert!(as_token(&kms, &t.token).unwrap().policy.has(Role::Admin));
    let listed = kms.list_principals(&caller()).await.unwrap();
    let names: Vec<(&str, bool)> = listed.iter().map(|p| (p.name.as_str(), p.bootstrap)).collect();
    assert_eq!(names, [("ops", true), ("svc", false)]);
    assert_eq!(kms.revoke_all_tokens(&caller(), "ops").await.unwrap(), 1);
    assert_eq!(as_token(&kms, &t.token).unwrap_err(), TokenRefusal::Invalid);
}

#[tokio::test]
async fn access_survives_a_restart_and_a_tampered_record_refuses_to_start() {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let clock = ManualClock::at(1_700_000_000_000);
    let (token, k) = {
        let kms = open(&store, &clock);
        let k = key(&kms).await;
        kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap();
        kms.create_grant(
            &caller(),
            GrantInput {
                principal: "svc".into(),
                keys: vec![k.clone()],
                operations: vec!["encrypt".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let t = kms.create_token(&caller(), "svc", None).await.unwrap();
        clock.advance_ms(5);
        as_token(&kms, &t.token).unwrap();
        kms.save_token_uses().unwrap();
        (t.token.to_string(), k)
    };
    let saved_use = 1_700_000_000_005;
    clock.advance_ms(1_000);
    let kms = open(&store, &clock);
    // Before any use after the restart: what was saved.
    assert_eq!(kms.list_tokens(&caller(), None).await.unwrap()[0].last_used_ms, Some(saved_use));
    let user = as_token(&kms, &token).unwrap();
    kms.encrypt(&user, &k, Plaintext::new(b"x".to_vec()), HashMap::new()).await.unwrap();
    drop(kms);

    // Someone with write access to the disk widens the grant: refused at open.
    mem.tamper_access(|records| {
        for r in records.values_mut() {
            if let AccessRecord::Grant(g) = r {
                g.grant.permissions.insert(keyward_core::Permission::Decrypt);
            }
        }
    });
    let opened = Kms::open(
        store.clone(),
        keyward_crypto::RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(clock.clone()),
        KmsConfig::default(),
    );
    match opened {
        Err(OpenError::Tampered(what)) => assert!(what.starts_with("grant "), "{what}"),
        other => panic!("expected Tampered, got {:?}", other.map(drop)),
    }
}

/// A configuration principal removed from the file leaves its runtime
/// tokens and grants refused; a runtime principal later made with its name
/// does not bring them back.
#[tokio::test]
async fn a_removed_bootstrap_principals_leftovers_do_not_come_back() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let boot = || KmsConfig {
        bootstrap_principals: vec![("contractor".into(), Policy::new([Role::User].into(), vec![]))],
        ..Default::default()
    };
    let token = {
        let kms = open_with(&store, &clock, boot());
        let k = key(&kms).await;
        let g = GrantInput {
            principal: "contractor".into(),
            keys: vec![k],
            operations: vec!["encrypt".into()],
            ..Default::default()
        };
        kms.create_grant(&caller(), g).await.unwrap();
        kms.create_token(&caller(), "contractor", None).await.unwrap().token.to_string()
    };
    // The file no longer lists it.
    let kms = open(&store, &clock);
    assert!(matches!(as_token(&kms, &token).unwrap_err(), TokenRefusal::NoPrincipal(_)));
    kms.create_principal(&caller(), "contractor", &["user".into()]).await.unwrap();
    assert_eq!(as_token(&kms, &token).unwrap_err(), TokenRefusal::Invalid);
    assert!(kms.list_grants(&caller(), Some("contractor"), None).await.unwrap().is_empty());
    assert!(kms.list_tokens(&caller(), Some("contractor")).await.unwrap().is_empty());
}

/// Expired tokens are refused "token expired" for a day, then the sweeper
/// deletes them, each audited as a RevokeToken by `system`.
#[tokio::test]
async fn expired_tokens_are_purged_a_day_after_expiry() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    let kms = open(&store, &clock);
    kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap();
    let short = kms.create_token(&caller(), "svc", Some(60_000)).await.unwrap();
    let long = kms.create_token(&caller(), "svc", Some(7 * 24 * 3_600_000)).await.unwrap();
    clock.advance_ms(60_000 + keyward_core::EXPIRED_TOKEN_RETENTION_MS - 1);
    kms.run_due().await.unwrap();
    assert_eq!(kms.list_tokens(&caller(), None).await.unwrap().len(), 2, "still listed within the day");
    assert_eq!(as_token(&kms, &short.token).unwrap_err(), TokenRefusal::Expired(short.view.id));
    clock.advance_ms(1);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let left = kms.list_tokens(&caller(), None).await.unwrap();
    assert_eq!(left.iter().map(|t| t.id).collect::<Vec<_>>(), vec![long.view.id]);
    let r = store
        .query_audit(&AuditQuery { operation: Some("RevokeToken".into()), limit: 10, ..Default::default() })
        .unwrap()
        .records;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].record.principal, "system");
    assert_eq!(r[0].record.target, Some(format!("token:{} principal:svc expired", short.view.id)));
    // Nothing left to do: no further record.
    assert_eq!(kms.run_due().await.unwrap(), 0);
    as_token(&kms, &long.token).unwrap();
}

/// A principal added to the configuration file under the name of a runtime
/// principal would inherit its tokens and grants: the start is refused.
#[tokio::test]
async fn a_configuration_principal_named_like_a_runtime_one_refuses_to_start() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_700_000_000_000);
    {
        let kms = open(&store, &clock);
        kms.create_principal(&caller(), "ops", &["user".into()]).await.unwrap();
        kms.create_token(&caller(), "ops", None).await.unwrap();
    }
    let config = KmsConfig {
        bootstrap_principals: vec![("ops".into(), Policy::new([Role::Auditor].into(), vec![]))],
        ..Default::default()
    };
    let opened = Kms::open(
        store.clone(),
        keyward_crypto::RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(clock.clone()),
        config,
    );
    match opened {
        Err(e @ OpenError::PrincipalClash(_)) => {
            assert!(
                e.to_string().contains("\"ops\"") && e.to_string().contains("keyward principal delete ops"),
                "{e}"
            )
        }
        other => panic!("expected PrincipalClash, got {:?}", other.map(drop)),
    }
    // Without the clash it opens as before.
    open(&store, &clock);
}

/// Access keys (AWS SigV4 credentials): created for a principal with the
/// secret shown once, looked up with the secret for the verifier, listed
/// without it, revoked at once, gone with their principal, kept across a
/// restart, and a tampered one refuses to start.
#[tokio::test]
async fn access_keys_are_created_looked_up_revoked_and_survive_a_restart() {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let clock = ManualClock::at(1_700_000_000_000);
    let kms = open(&store, &clock);
    kms.create_principal(&caller(), "svc", &["user".into()]).await.unwrap();
    let k = kms.create_access_key(&caller(), "svc").await.unwrap();
    assert!(keyward_core::is_access_key_id(&k.view.id), "{}", k.view.id);
    assert_eq!(k.secret.len(), keyward_core::ACCESS_SECRET_LEN);
    assert!(!format!("{k:?}").contains(k.secret.as_str()), "the secret never prints");
    let r = newest(&store);
    assert_eq!(r.operation, "CreateAccessKey");
    assert_eq!(r.target, Some(format!("access_key:{} principal:svc", k.view.id)));
    let id = kms.identify_access_key(&k.view.id).unwrap();
    assert_eq!((id.principal.as_str(), &id.secret[..]), ("svc", k.secret.as_bytes()));
    assert!(!format!("{id:?}").contains(k.secret.as_str()));
    // The secret is stored sealed, never in the clear.
    let stored = store.load_access().unwrap();
    let sealed = stored
        .iter()
        .find_map(|r| match r {
            AccessRecord::AccessKey(a) => Some(a.sealed_secret.as_bytes().to_vec()),
            _ => None,
        })
        .unwrap();
    assert!(!sealed.windows(k.secret.len()).any(|w| w == k.secret.as_bytes()));

    // Non-admins may not create, list or revoke; bad input names its field.
    let user = Caller {
        principal: "u".into(),
        policy: Arc::new(Policy::new([Role::User].into(), vec![])),
        ..caller()
    };
    assert_eq!(kms.create_access_key(&user, "svc").await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    assert_eq!(kms.list_access_keys(&user, None).await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    assert_eq!(
        kms.revoke_access_key(&user, &k.view.id).await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    let e = kms.create_access_key(&caller(), "nobody").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = kms.revoke_access_key(&caller(), "not-a-key").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.public_message().contains("access_key_id"), "{}", e.public_message());
    assert_eq!(
        kms.revoke_access_key(&caller(), "KWAKAAAAAAAAAAAAAAAA").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    for bad in ["", "KWAK", "kwakaaaaaaaaaaaaaaaa", "AKIAIOSFODNN7EXAMPLE", "KWAKAAAAAAAAAAAAAAA1"] {
        assert_eq!(kms.identify_access_key(bad).unwrap_err(), keyward_core::AccessKeyRefusal::Unknown);
    }

    // A second key; listing shows ids, never secrets.
    let k2 = kms.create_access_key(&caller(), "svc").await.unwrap();
    let listed = kms.list_access_keys(&caller(), Some("svc")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(kms.list_access_keys(&caller(), Some("other")).await.unwrap().is_empty());

    // Revoked: the very next lookup fails.
    kms.revoke_access_key(&caller(), &k.view.id).await.unwrap();
    assert_eq!(newest(&store).target, Some(format!("access_key:{} principal:svc", k.view.id)));
    assert_eq!(kms.identify_access_key(&k.view.id).unwrap_err(), keyward_core::AccessKeyRefusal::Unknown);

    // Across a restart, the other still works with the same secret.
    drop(kms);
    let kms = open(&store, &clock);
    assert_eq!(&kms.identify_access_key(&k2.view.id).unwrap().secret[..], k2.secret.as_bytes());
    // Under another root key the sealed secret does not open.
    drop(kms);
    let other_root = Kms::open(
        Arc::new(MemoryStore::new()),
        keyward_crypto::RootKey::from_bytes(&[7; 32]).unwrap(),
        Arc::new(clock.clone()),
        KmsConfig::default(),
    )
    .unwrap();
    assert!(other_root.identify_access_key(&k2.view.id).is_err());
    let kms = open(&store, &clock);

    // Deleting the principal deletes its access keys in the same write.
    kms.delete_principal(&caller(), "svc").await.unwrap();
    assert!(kms.list_access_keys(&caller(), None).await.unwrap().is_empty());
    assert!(kms.identify_access_key(&k2.view.id).is_err());

    // A tampered access key record (moved to another principal) refuses to start.
    kms.create_principal(&caller(), "svc2", &["user".into()]).await.unwrap();
    kms.create_access_key(&caller(), "svc2").await.unwrap();
    drop(kms);
    mem.tamper_access(|records| {
        for r in records.values_mut() {
            if let AccessRecord::AccessKey(a) = r {
                a.principal = "admin".into();
            }
        }
    });
    let opened = Kms::open(
        store.clone(),
        keyward_crypto::RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(clock.clone()),
        KmsConfig::default(),
    );
    match opened {
        Err(OpenError::Tampered(what)) => assert!(what.starts_with("access key "), "{what}"),
        other => panic!("expected Tampered, got {:?}", other.map(drop)),
    }
}
