//! Workload identity: a JWT sent as the bearer token (a Kubernetes
//! service-account token, say) identifies its workload as a configured
//! principal (`[[jwt_issuers]]`, validated in `crate::config::jwt`).
//!
//! A token is checked in this order, and refused at the first failure with a
//! message that names what failed and never repeats the token or a claim:
//! its size (at most [`MAX_TOKEN_BYTES`], before anything is parsed), its
//! shape, its `alg` (one of the issuer's asymmetric algorithms: `none` and
//! shared-secret algorithms are never accepted), its `iss` (exactly a
//! configured issuer, which chooses the keys), its signature (by the JWKS key
//! its `kid` names, else by each key whose type fits the algorithm), `exp`
//! (required) and `nbf` within the issuer's leeway, and `aud` (one of the
//! issuer's audiences). Then the issuer's rules, first match wins, map the
//! claims to a principal name; a rule's claims are compared only with string
//! claims, exactly.
//!
//! Each issuer's JWKS file is read at start (unreadable or without a usable
//! key: the server does not start) and again when its modification time,
//! length or inode changes, checked at most once a second by whichever
//! request gets there first; the others go on with the keys they have. A
//! broken new file keeps the previous keys and is warned about once. No key
//! is ever fetched over the network.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::auth::NoIdentity;
use crate::config::{ConfigError, JwtIssuerConfig};

/// The longest bearer JWT looked at; a longer one is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest JWKS file read.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// How often, at most, a JWKS file is checked for a change.
const RECHECK: Duration = Duration::from_secs(1);

/// The algorithms a `[[jwt_issuers]]` entry may list: asymmetric signatures only.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Whether a bearer token has a JWT's shape: three dot-separated base64url
/// segments (header and payload non-empty; the signature may be empty, as
/// in an `alg: none` token, which is then refused by name).
pub fn looks_like_jwt(token: &str) -> bool {
    let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
        }
        _ => false,
    }
}

/// The configured issuers, their keys and rules.
#[derive(Debug)]
pub struct JwtIssuers {
    issuers: Vec<Issuer>,
}

#[derive(Debug)]
struct Issuer {
    config: JwtIssuerConfig,
    jwks: Jwks,
}

impl JwtIssuers {
    /// Reads every issuer's JWKS file; a missing, unreadable or unusable one
    /// is a configuration error naming the issuer's entry.
    pub fn load(configs: &[JwtIssuerConfig]) -> Result<Self, ConfigError> {
        Self::load_rechecking(configs, RECHECK)
    }

    fn load_rechecking(configs: &[JwtIssuerConfig], recheck: Duration) -> Result<Self, ConfigError> {
        let mut issuers = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let jwks = Jwks::open(&c.jwks_file, &c.issuer, recheck).map_err(|m| {
                ConfigError::Invalid(format!("jwt_issuers[{i}].jwks_file {}: {m}", c.jwks_file.display()))
            })?;
            issuers.push(Issuer { config: c.clone(), jwks });
        }
        Ok(Self { issuers })
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies `token` and returns the principal name its issuer's first
    /// matching rule maps it to.
    pub fn identify(&self, token: &str) -> Result<String, NoIdentity> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(NoIdentity("the JWT is longer than 16 KiB"));
        }
        let malformed = NoIdentity("the JWT is malformed");
        let mut parts = token.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else { return Err(malformed) };
        let header = json_object(header).ok_or(malformed.clone())?;
        // Read unverified, only to choose the issuer and its keys.
        let claims = json_object(payload).ok_or(malformed.clone())?;
        let Some(alg) = header.get("alg").and_then(Value::as_str) else { return Err(malformed) };
        let Some(iss) = claims.get("iss") else { return Err(NoIdentity("the JWT has no issuer (iss)")) };
        let Some(issuer) = self.issuers.iter().find(|i| iss.as_str() == Some(i.config.issuer.as_str()))
        else {
            return Err(NoIdentity("the JWT issuer is not configured"));
        };
        let alg = Algorithm::from_str(alg)
            .ok()
            .filter(|a| issuer.config.algorithms.contains(a))
            .ok_or(NoIdentity("the JWT algorithm is not allowed"))?;
        let kid = header.get("kid").and_then(Value::as_str);
        let keys = issuer.jwks.current();
        let candidates: Vec<&Key> = match kid {
            Some(kid) => {
                let named: Vec<&Key> = keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
                if named.is_empty() {
                    return Err(NoIdentity("the JWT's key id (kid) is not in the issuer's JWKS"));
                }
                named.into_iter().filter(|k| k.fits(alg)).collect()
            }
            None => keys.iter().filter(|k| k.fits(alg)).collect(),
        };
        if candidates.is_empty() {
            return Err(match kid {
                Some(_) => NoIdentity("the JWT algorithm does not fit its key"),
                None => NoIdentity("the issuer's JWKS has no key for the JWT's algorithm"),
            });
        }
        let mut validation = Validation::new(alg);
        validation.leeway = issuer.config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audiences);
        let mut verified = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => continue,
                    ErrorKind::ExpiredSignature => return Err(NoIdentity("the JWT has expired")),
                    ErrorKind::ImmatureSignature => return Err(NoIdentity("the JWT is not yet valid")),
                    ErrorKind::InvalidAudience => return Err(NoIdentity("the JWT audience is not accepted")),
                    ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                        return Err(NoIdentity("the JWT has no expiry (exp)"))
                    }
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                        return Err(NoIdentity("the JWT audience is not accepted"))
                    }
                    ErrorKind::InvalidIssuer | ErrorKind::MissingRequiredClaim(_) => {
                        return Err(NoIdentity("the JWT issuer is not configured"))
                    }
                    ErrorKind::InvalidAlgorithm => {
                        return Err(NoIdentity("the JWT algorithm is not allowed"))
                    }
                    _ => return Err(malformed),
                },
            }
        }
        let claims = verified.ok_or(NoIdentity("the JWT signature does not verify"))?;
        let rule = issuer.config.rules.iter().find(|r| {
            r.claims
                .iter()
                .all(|(name, want)| claims.get(name).and_then(Value::as_str) == Some(want.as_str()))
        });
        match rule {
            Some(r) => {
                tracing::debug!(issuer = %issuer.config.issuer, principal = %r.principal, "JWT identified");
                Ok(r.principal.clone())
            }
            None => Err(NoIdentity("no rule maps the JWT's claims to a principal")),
        }
    }
}

/// A base64url (unpadded) JSON object, if the segment is one.
fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A verification key from a JWKS document.
struct Key {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("kind", &self.kind).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Key {
    /// Whether this key can verify `alg` signatures.
    fn fits(&self, alg: Algorithm) -> bool {
        let kind = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::P256,
            Algorithm::ES384 => KeyKind::P384,
            Algorithm::EdDSA => KeyKind::Ed25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return false,
        };
        self.kind == kind && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys of a JWKS document: its signature keys of supported types;
/// others (encryption keys, symmetric keys, unknown types) are skipped. Fails
/// when none is left.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS document (no \"keys\" array)".into());
    };
    let mut keys = Vec::new();
    for v in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
            continue;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyKind::P256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => KeyKind::P384,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match a.to_string().parse::<Algorithm>() {
                Ok(a) if ACCEPTED_ALGORITHMS.contains(&a) => Some(a),
                _ => continue,
            },
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
        keys.push(Key { kid: jwk.common.key_id.clone(), kind, alg, decoding });
    }
    if keys.is_empty() {
        return Err("holds no usable signature key (RSA, EC P-256/P-384 or Ed25519)".into());
    }
    Ok(keys)
}

/// What tells a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

/// Reads and parses a JWKS file (its stamp taken first: a change while it is
/// read is seen at the next check).
fn read_jwks(path: &Path) -> Result<(Stamp, Vec<Key>), String> {
    let s = stamp(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JWKS_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("is larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok((s, parse_jwks(&bytes)?))
}

/// One issuer's keys and the file they come from.
#[derive(Debug)]
struct Jwks {
    path: PathBuf,
    issuer: String,
    recheck: Duration,
    keys: RwLock<Arc<Vec<Key>>>,
    check: Mutex<Check>,
}

#[derive(Debug)]
struct Check {
    last: Instant,
    /// The stamp of the file the keys came from.
    loaded: Stamp,
    /// The stamp (None: the file could not be looked at) last warned about.
    warned: Option<Option<Stamp>>,
}

impl Jwks {
    fn open(path: &Path, issuer: &str, recheck: Duration) -> Result<Self, String> {
        let (loaded, keys) = read_jwks(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            issuer: issuer.to_string(),
            recheck,
            keys: RwLock::new(Arc::new(keys)),
            check: Mutex::new(Check { last: Instant::now(), loaded, warned: None }),
        })
    }

    /// The keys, after re-reading the file if it is time to look and it
    /// changed. Only one request looks at a time; the others do not wait.
    fn current(&self) -> Arc<Vec<Key>> {
        if let Ok(mut c) = self.check.try_lock() {
            if c.last.elapsed() >= self.recheck {
                c.last = Instant::now();
                self.reload_if_changed(&mut c);
            }
        }
        self.keys.read().expect("jwks lock").clone()
    }

    fn reload_if_changed(&self, c: &mut Check) {
        let seen = stamp(&self.path).ok();
        if seen == Some(c.loaded) || c.warned == Some(seen) {
            return;
        }
        match read_jwks(&self.path) {
            Ok((s, keys)) => {
                *self.keys.write().expect("jwks lock") = Arc::new(keys);
                c.loaded = s;
                c.warned = None;
                tracing::info!(issuer = %self.issuer, file = %self.path.display(), "JWKS file re-read");
            }
            Err(e) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    file = %self.path.display(),
                    error = %e,
                    "the changed JWKS file is unusable; keeping the keys read before"
                );
                c.warned = Some(seen);
            }
        }
    }
}

/// The rule lookup, exposed for the config's tests.
#[cfg(test)]
pub(crate) fn test_issuers(configs: &[JwtIssuerConfig]) -> Result<JwtIssuers, ConfigError> {
    JwtIssuers::load_rechecking(configs, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClaimRule;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const ISS: &str = "https://issuer.test";

    struct Signer {
        kid: String,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    fn ed25519(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Signer {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "use": "sig"}),
        }
    }

    fn p256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..]));
        Signer {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": x, "y": y}),
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn mint(s: &Signer, with_kid: bool, claims: Value) -> String {
        let mut h = Header::new(s.alg);
        h.kid = with_kid.then(|| s.kid.clone());
        jsonwebtoken::encode(&h, &claims, &s.encoding).unwrap()
    }

    fn claims(sub: &str) -> Value {
        serde_json::json!({"iss": ISS, "aud": ["keyward", "other"], "sub": sub, "exp": now() + 600, "nbf": now() - 5})
    }

    fn issuers(dir: &Path, signers: &[&Signer]) -> JwtIssuers {
        write_jwks(dir, signers);
        test_issuers(&[JwtIssuerConfig {
            issuer: ISS.into(),
            audiences: vec!["keyward".into()],
            jwks_file: dir.join("jwks.json"),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            leeway_seconds: 30,
            rules: vec![
                ClaimRule {
                    principal: "payments-api".into(),
                    claims: [("sub".to_string(), "system:serviceaccount:payments:api".to_string())].into(),
                },
                ClaimRule {
                    principal: "batch".into(),
                    claims: [
                        ("sub".to_string(), "batch".to_string()),
                        ("team".to_string(), "ops".to_string()),
                    ]
                    .into(),
                },
            ],
        }])
        .unwrap()
    }

    fn write_jwks(dir: &Path, signers: &[&Signer]) {
        let keys: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
        let tmp = dir.join("jwks.json.tmp");
        std::fs::write(&tmp, serde_json::json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(tmp, dir.join("jwks.json")).unwrap();
    }

    const SA: &str = "system:serviceaccount:payments:api";

    #[test]
    fn valid_tokens_map_to_the_first_matching_rule() {
        let dir = tempfile::tempdir().unwrap();
        let (ed, ec) = (ed25519("ed"), p256("ec"));
        let j = issuers(dir.path(), &[&ed, &ec]);
        for s in [&ed, &ec] {
            for with_kid in [true, false] {
                assert_eq!(j.identify(&mint(s, with_kid, claims(SA))), Ok("payments-api".into()));
            }
        }
        // Every claim of a rule must match, as a string.
        let mut c = claims("batch");
        c["team"] = "ops".into();
        assert_eq!(j.identify(&mint(&ed, true, c.clone())), Ok("batch".into()));
        c["team"] = serde_json::json!(["ops"]);
        assert_eq!(
            j.identify(&mint(&ed, true, c)),
            Err(NoIdentity("no rule maps the JWT's claims to a principal"))
        );
        // A single-string audience is fine too.
        let mut c = claims(SA);
        c["aud"] = "keyward".into();
        assert_eq!(j.identify(&mint(&ec, true, c)), Ok("payments-api".into()));
    }

    #[test]
    fn each_refusal_says_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (ed, ec) = (ed25519("ed"), p256("ec"));
        let j = issuers(dir.path(), &[&ed, &ec]);
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims(SA);
            edit(&mut c);
            j.identify(&mint(&ed, true, c)).unwrap_err().0
        };
        assert_eq!(with(&|c| c["exp"] = (now() - 120).into()), "the JWT has expired");
        // Within the leeway, an expired token still passes.
        let mut c = claims(SA);
        c["exp"] = (now() - 10).into();
        assert!(j.identify(&mint(&ed, true, c)).is_ok());
        assert_eq!(with(&|c| c["nbf"] = (now() + 120).into()), "the JWT is not yet valid");
        assert_eq!(with(&|c| c["aud"] = "someone-else".into()), "the JWT audience is not accepted");
        assert_eq!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "the JWT audience is not accepted"
        );
        assert_eq!(with(&|c| c["iss"] = "https://other.test".into()), "the JWT issuer is not configured");
        assert_eq!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "the JWT has no expiry (exp)"
        );
        assert_eq!(with(&|c| c["sub"] = "someone".into()), "no rule maps the JWT's claims to a principal");

        // A key not in the JWKS, under a listed kid or none.
        let stranger = ed25519("ed");
        assert_eq!(
            j.identify(&mint(&stranger, true, claims(SA))).unwrap_err().0,
            "the JWT signature does not verify"
        );
        assert_eq!(
            j.identify(&mint(&stranger, false, claims(SA))).unwrap_err().0,
            "the JWT signature does not verify"
        );
        let unknown = ed25519("unknown");
        assert!(j.identify(&mint(&unknown, true, claims(SA))).unwrap_err().0.contains("kid"));

        // alg none, HS256, and a kid naming a key of another type.
        let body = URL_SAFE_NO_PAD.encode(claims(SA).to_string());
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS256","kid":"ed"}"#, r#"{"alg":"RS512"}"#] {
            let h = URL_SAFE_NO_PAD.encode(header);
            for token in [format!("{h}.{body}."), format!("{h}.{body}.c2ln")] {
                assert!(looks_like_jwt(&token));
                assert_eq!(j.identify(&token).unwrap_err().0, "the JWT algorithm is not allowed", "{header}");
            }
        }
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(SA),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(j.identify(&hs).unwrap_err().0, "the JWT algorithm is not allowed");
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ed".into());
        let cross = jsonwebtoken::encode(&h, &claims(SA), &ec.encoding).unwrap();
        assert_eq!(j.identify(&cross).unwrap_err().0, "the JWT algorithm does not fit its key");

        // Garbage and oversize.
        for t in ["a.b.c", "e30.e30.", "..", "eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln"] {
            assert_eq!(j.identify(t).unwrap_err().0, "the JWT is malformed", "{t}");
        }
        let huge = format!("{}.{}.x", "a".repeat(MAX_TOKEN_BYTES), "b");
        assert_eq!(j.identify(&huge).unwrap_err().0, "the JWT is longer than 16 KiB");
    }

    #[test]
    fn refusal_messages_never_carry_the_token_or_claims() {
        let dir = tempfile::tempdir().unwrap();
        let ed = ed25519("ed");
        let j = issuers(dir.path(), &[&ed]);
        let mut c = claims("secret-subject-value");
        c["exp"] = (now() - 1000).into();
        let token = mint(&ed, true, c);
        let e = j.identify(&token).unwrap_err().0;
        assert!(!e.contains("secret-subject-value") && !e.contains(&token[..20]), "{e}");
    }

    #[test]
    fn a_changed_jwks_file_is_picked_up_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ed25519("old"), p256("new"));
        let j = issuers(dir.path(), &[&old]);
        assert!(j.identify(&mint(&old, true, claims(SA))).is_ok());
        // A broken file keeps the old keys.
        std::fs::write(dir.path().join("jwks.json"), "{ not json").unwrap();
        assert!(j.identify(&mint(&old, true, claims(SA))).is_ok());
        std::fs::write(dir.path().join("jwks.json"), r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
            .unwrap();
        assert!(j.identify(&mint(&old, true, claims(SA))).is_ok());
        std::fs::remove_file(dir.path().join("jwks.json")).unwrap();
        assert!(j.identify(&mint(&old, true, claims(SA))).is_ok());
        // A good new file replaces them.
        write_jwks(dir.path(), &[&new]);
        assert!(j.identify(&mint(&new, true, claims(SA))).is_ok());
        assert!(j.identify(&mint(&old, true, claims(SA))).unwrap_err().0.contains("kid"));
        assert!(j.identify(&mint(&old, false, claims(SA))).unwrap_err().0.contains("no key"));
    }

    #[test]
    fn jwks_documents_keep_only_usable_signature_keys() {
        let ed = ed25519("ed");
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird"},
            ed.jwk,
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(parse_jwks(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
            .unwrap_err()
            .contains("no usable"));
        assert!(parse_jwks(b"[]").unwrap_err().contains("no \"keys\""));
        assert!(parse_jwks(b"nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn the_jwt_shape() {
        assert!(looks_like_jwt("a.b.c") && looks_like_jwt("a-_.b.") && looks_like_jwt("eyJ.eyJ.sig"));
        for t in ["kw_token", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c=", "a b.c.d", "a.b/.c"] {
            assert!(!looks_like_jwt(t), "{t}");
        }
    }
}
