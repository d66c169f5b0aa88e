//! Workload identity end to end: JWTs minted at test time with the test's
//! own keys (Ed25519 and P-256 generated with ring; RSA from the test-only
//! key in tests/fixtures/jwt-test-rsa.pem, since ring cannot generate RSA
//! keys) are sent as bearer tokens. A valid RS256, ES256 or EdDSA token
//! authenticates as the principal its claims map to, with that principal's
//! grants; every bad one is refused UNAUTHENTICATED with a message saying
//! what failed, and audited as `unauthenticated`; a new JWKS file is picked
//! up without a restart; a JWKS file that cannot be read refuses to start.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward::pb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tonic::Code;

use common::{assert_status, bearer, TestServer};

const ISS: &str = "https://kubernetes.default.svc.cluster.local";
const SA: &str = "system:serviceaccount:payments:api";
const ADMIN_TOKEN: &str = "kw_jwt_test_admin_token";
const AUDITOR_TOKEN: &str = "kw_jwt_test_auditor_token";

/// A signing key and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn rsa(kid: &str) -> Signer {
    let pem = include_str!("fixtures/jwt-test-rsa.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let pair = RsaKeyPair::from_der(&der).unwrap();
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let (n, e) = (URL_SAFE_NO_PAD.encode(&public.n), URL_SAFE_NO_PAD.encode(&public.e));
    Signer {
        alg: Algorithm::RS256,
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_der(&der),
        // As `kubectl get --raw /openid/v1/jwks` prints them.
        jwk: json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": n, "e": e}),
    }
}

fn p256(kid: &str) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    Signer {
        alg: Algorithm::ES256,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }),
    }
}

fn ed25519(kid: &str) -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    Signer {
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(pair.public_key())}),
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// A service-account token's claims for `sub`, valid for ten minutes.
fn claims(sub: &str) -> Value {
    json!({
        "iss": ISS, "aud": ["keyward"], "sub": sub,
        "iat": now(), "nbf": now() - 5, "exp": now() + 600,
        "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}},
    })
}

fn mint(s: &Signer, claims: &Value) -> String {
    let mut h = Header::new(s.alg);
    h.kid = Some(s.kid.clone());
    jsonwebtoken::encode(&h, claims, &s.encoding).unwrap()
}

/// Writes the JWKS document as a whole (a new file renamed into place).
fn write_jwks(dir: &Path, signers: &[&Signer]) {
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
    let tmp = dir.join("jwks.json.tmp");
    std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(tmp, dir.join("jwks.json")).unwrap();
}

fn config_text(dir: &Path) -> String {
    let root = dir.join("root.key");
    if !root.exists() {
        keyward::config::create_root_key_file(&root).unwrap();
    }
    format!(
        r#"
        data_dir = "{data}"
        root_key_file = "{root}"

        [[principals]]
        name = "admin"
        roles = ["admin"]
        token_sha256 = ["{admin}"]

        [[principals]]
        name = "auditor"
        roles = ["auditor"]
        token_sha256 = ["{auditor}"]

        # No token and no certificate: only its JWTs identify it.
        [[principals]]
        name = "payments-api"
        roles = ["user"]
          [[principals.grants]]
          keys = ["alias/payments"]
          operations = ["encrypt"]

        [[jwt_issuers]]
        issuer = "{ISS}"
        audiences = ["keyward"]
        jwks_file = "{jwks}"
        [[jwt_issuers.rules]]
        principal = "payments-api"
        [jwt_issuers.rules.claims]
        sub = "{SA}"
        [[jwt_issuers.rules]]
        principal = "ghost"
        [jwt_issuers.rules.claims]
        sub = "system:serviceaccount:payments:ghost"
        "#,
        data = dir.join("data").display(),
        root = root.display(),
        admin = keyward::auth::token_hash_hex(ADMIN_TOKEN),
        auditor = keyward::auth::token_hash_hex(AUDITOR_TOKEN),
        jwks = dir.join("jwks.json").display(),
    )
}

/// A server over `dir` whose JWKS holds `signers`, and the id of its key
/// `alias/payments`.
async fn server(dir: &Path, signers: &[&Signer]) -> (TestServer, String) {
    write_jwks(dir, signers);
    let file: keyward::config::FileConfig = toml::from_str(&config_text(dir)).unwrap();
    let config = keyward::ServerConfig::from_parts(file, &Default::default()).unwrap();
    let s = TestServer::start_with(dir, config, None).await;
    let key = s
        .keys()
        .create_key(bearer(
            pb::CreateKeyRequest { alias: "alias/payments".into(), ..Default::default() },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id;
    (s, key)
}

async fn encrypt(s: &TestServer, token: &str) -> Result<pb::EncryptResponse, tonic::Status> {
    let body = pb::EncryptRequest {
        key_id: "alias/payments".into(),
        plaintext: b"card 4111".to_vec(),
        ..Default::default()
    };
    s.crypto().encrypt(bearer(body, token)).await.map(|r| r.into_inner())
}

/// The newest audit record.
async fn newest(s: &TestServer) -> pb::AuditRecord {
    let req = bearer(pb::QueryAuditLogRequest { page_size: 1, ..Default::default() }, AUDITOR_TOKEN);
    s.audit().query_audit_log(req).await.unwrap().into_inner().records.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rs256_es256_and_eddsa_tokens_act_as_the_mapped_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (r, e, d) = (rsa("rsa-1"), p256("ec-1"), ed25519("ed-1"));
    let (s, key) = server(dir.path(), &[&r, &e, &d]).await;
    for signer in [&r, &e, &d] {
        let token = mint(signer, &claims(SA));
        let out = encrypt(&s, &token).await.unwrap_or_else(|e| panic!("{:?}: {e:?}", signer.alg));
        assert_eq!(out.key_id, key);
        let rec = newest(&s).await;
        assert_eq!(
            (rec.principal.as_str(), rec.operation.as_str(), rec.outcome.as_str()),
            ("payments-api", "Encrypt", "OK"),
            "{:?}",
            signer.alg
        );
        // Its grants, nothing more: it may not decrypt, nor create keys.
        let ct = out.ciphertext;
        let denied = s
            .crypto()
            .decrypt(bearer(pb::DecryptRequest { ciphertext: ct, ..Default::default() }, &token))
            .await;
        assert_status(denied, Code::PermissionDenied, "");
        assert_eq!(newest(&s).await.principal, "payments-api");
        let denied = s.keys().create_key(bearer(pb::CreateKeyRequest::default(), &token)).await;
        assert_status(denied, Code::PermissionDenied, "");
    }
    // The same token works again (it is not spent).
    let token = mint(&d, &claims(SA));
    encrypt(&s, &token).await.unwrap();
    encrypt(&s, &token).await.unwrap();
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_jwt_is_refused_unauthenticated_with_its_reason_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (r, d) = (rsa("rsa-1"), ed25519("ed-1"));
    let (s, _key) = server(dir.path(), &[&r, &d]).await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(SA);
        edit(&mut c);
        mint(&d, &c)
    };
    let body = URL_SAFE_NO_PAD.encode(claims(SA).to_string());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#));
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(SA),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    // Signed by keys that are not in the JWKS, under a listed kid and an unlisted one.
    let stranger = mint(&ed25519("ed-1"), &claims(SA));
    let unknown_kid = mint(&ed25519("ed-2"), &claims(SA));
    // A valid RS256 token (kid in the JWKS) with another key's signature.
    let rsa_token = mint(&r, &claims(SA));
    let forged =
        format!("{}.{}", &rsa_token[..rsa_token.rfind('.').unwrap()], stranger.rsplit('.').next().unwrap());
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", with(&|c| c["exp"] = (now() - 3600).into()), "the JWT has expired"),
        ("not yet valid", with(&|c| c["nbf"] = (now() + 3600).into()), "the JWT is not yet valid"),
        ("wrong audience", with(&|c| c["aud"] = json!(["vault"])), "the JWT audience is not accepted"),
        (
            "wrong issuer",
            with(&|c| c["iss"] = "https://evil.example".into()),
            "the JWT issuer is not configured",
        ),
        ("wrong key", stranger, "the JWT signature does not verify"),
        ("forged RSA signature", forged, "the JWT signature does not verify"),
        ("unknown kid", unknown_kid, "is not in the issuer's JWKS"),
        ("alg none", none, "the JWT algorithm is not allowed"),
        ("HS256", hs256, "the JWT algorithm is not allowed"),
        (
            "no rule",
            with(&|c| c["sub"] = "system:serviceaccount:other:app".into()),
            "no rule maps the JWT's claims to a principal",
        ),
        (
            "no such principal",
            with(&|c| c["sub"] = "system:serviceaccount:payments:ghost".into()),
            "the JWT maps to a principal that does not exist",
        ),
        ("garbage", "a.b.c".into(), "the JWT is malformed"),
        ("large garbage", format!("{}.b.c", "a".repeat(15 * 1024)), "the JWT is malformed"),
    ];
    for (i, (what, token, message)) in cases.iter().enumerate() {
        // Refusals of one kind (peer, operation) are audited one by one up
        // to ten a second: alternate between two operations.
        let (result, op) = if i % 2 == 0 {
            (encrypt(&s, token).await.map(drop), "Encrypt")
        } else {
            (s.keys().list_keys(bearer(pb::ListKeysRequest::default(), token)).await.map(drop), "ListKeys")
        };
        let status = result.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {}", status.message());
        assert!(status.message().contains(message), "{what}: {:?}", status.message());
        let rec = newest(&s).await;
        assert_eq!(
            (rec.principal.as_str(), rec.operation.as_str(), rec.outcome.as_str()),
            ("unauthenticated", op, "UNAUTHENTICATED"),
            "{what}"
        );
        assert!(rec.reason.contains(message), "{what}: {}", rec.reason);
        // Neither the token nor its claims reach the reply or the record.
        let tail = &token[token.len().saturating_sub(16)..];
        for text in [status.message(), rec.reason.as_str()] {
            assert!(
                !tail.is_empty() && !text.contains(tail) && !text.contains("serviceaccount"),
                "{what}: {text}"
            );
        }
    }

    // A huge token is refused, and the server keeps serving. (Past 16 KiB
    // the transport's header-list limit refuses it before Keyward sees it,
    // HTTP 431 or an h2 error; src/jwt.rs also refuses one unparsed.)
    // (Each on its own connection: an h2 error ends that connection.)
    for huge in [format!("{}.{}.x", "a".repeat(20 * 1024), "b"), "e".repeat(200 * 1024)] {
        let own = common::connect(&s.addr).await;
        let body = pb::EncryptRequest { key_id: "alias/payments".into(), ..Default::default() };
        let refused = keyward::pb::crypto_service_client::CryptoServiceClient::new(own)
            .encrypt(bearer(body, &huge))
            .await;
        assert!(refused.is_err());
    }
    encrypt(&s, &mint(&r, &claims(SA))).await.unwrap();
    assert_eq!(newest(&s).await.principal, "payments-api");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_jwks_file_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (rsa("2025-key"), p256("2026-key"));
    let (s, _key) = server(dir.path(), &[&old]).await;
    encrypt(&s, &mint(&old, &claims(SA))).await.unwrap();
    let fresh = mint(&new, &claims(SA));
    assert_status(encrypt(&s, &fresh).await, Code::Unauthenticated, "kid");

    // A broken file keeps the old keys.
    std::fs::write(dir.path().join("jwks.json"), "{ half a document").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    encrypt(&s, &mint(&old, &claims(SA))).await.unwrap();

    // The key rotated: the new key replaces the old one. The file is looked
    // at once a second at most; allow it (generously) to be noticed.
    write_jwks(dir.path(), &[&new]);
    let mut accepted = false;
    for _ in 0..100 {
        if encrypt(&s, &fresh).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted, "the new JWKS was not picked up");
    assert_eq!(newest(&s).await.principal, "payments-api");
    assert_status(
        encrypt(&s, &mint(&old, &claims(SA))).await,
        Code::Unauthenticated,
        "the JWT's key id (kid) is not in the issuer's JWKS",
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_jwks_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    common::private(dir.path());
    for contents in [None, Some("{}"), Some(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)] {
        let jwks = dir.path().join("jwks.json");
        let _ = std::fs::remove_file(&jwks);
        if let Some(c) = contents {
            std::fs::write(&jwks, c).unwrap();
        }
        let file: keyward::config::FileConfig = toml::from_str(&config_text(dir.path())).unwrap();
        let config = keyward::ServerConfig::from_parts(file, &Default::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = keyward::run(config, listener, std::future::pending()).await.unwrap_err();
        assert!(matches!(e, keyward::ServerError::Config(_)), "{e}");
        assert!(e.to_string().starts_with("jwt_issuers[0].jwks_file "), "{e}");
        // Nothing was opened.
        assert!(!dir.path().join("data").exists(), "{contents:?}");
    }
}

/// A rule may name a principal created at runtime (AccessService): the JWT
/// for `ghost` is refused until `ghost` exists, then acts with its runtime
/// grant, and is refused again once `ghost` is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_rule_may_name_a_runtime_principal() {
    use keyward::pb::access_service_client::AccessServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let d = ed25519("ed-1");
    let (s, key) = server(dir.path(), &[&d]).await;
    let token = mint(&d, &claims("system:serviceaccount:payments:ghost"));
    assert_status(encrypt(&s, &token).await, Code::Unauthenticated, "principal that does not exist");
    let mut access = AccessServiceClient::new(s.channel.clone());
    access
        .create_principal(bearer(
            pb::CreatePrincipalRequest { name: "ghost".into(), roles: vec!["user".into()] },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    assert_status(encrypt(&s, &token).await, Code::PermissionDenied, "ghost may not encrypt");
    access
        .create_grant(bearer(
            pb::CreateGrantRequest {
                principal: "ghost".into(),
                keys: vec![key.clone()],
                operations: vec!["encrypt".into()],
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    encrypt(&s, &token).await.unwrap();
    assert_eq!(newest(&s).await.principal, "ghost");
    access
        .delete_principal(bearer(pb::DeletePrincipalRequest { name: "ghost".into() }, ADMIN_TOKEN))
        .await
        .unwrap();
    assert_status(encrypt(&s, &token).await, Code::Unauthenticated, "principal that does not exist");
    s.stop().await.unwrap();
}
