//! The Vault Transit HTTP API (`/v1/<mount>/...`, plus `sys/health` and
//! `auth/token/lookup-self`) for unmodified Vault clients (hvac, SOPS's
//! `--hc-vault-transit`, Vault agents): a thin translation over the same
//! `Kms` use cases as every other edge.
//!
//! A Vault key name is the Keyward alias `alias/<name>`; a Vault ciphertext
//! is `vault:v<N>:<base64 of the Keyward ciphertext>` (N, the version inside,
//! is checked); `associated_data` is the encryption context
//! `{"associated_data": "<the base64 text as sent>"}`. Callers send a
//! Keyward bearer token as `X-Vault-Token` (or `Authorization: Bearer`);
//! in `--dev`, the development token printed at start acts as `dev`. Every
//! request that touches a key is audited with edge `vault-transit`, its
//! refusals included; errors are `{"errors": [...]}` with Vault's codes.

mod ops;

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use keyward_core::{Caller, Edge, Kms, KmsError, Operation, Policy};
use serde_json::{json, Value};

use crate::auth::Authenticator;
use crate::bearer::Refusal;
use crate::http::{BodyError, EdgeRequest, EdgeResponse, Handler};
use crate::seal::Seal;

/// Largest request body: a batch of ciphertexts.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Bodies above this size are parsed at most [`LARGE_BODIES`] at a time: a
/// parsed JSON body takes many times its size in memory.
const LARGE_BODY: usize = 64 * 1024;
const LARGE_BODIES: usize = 8;

/// The development token (`--dev`): derived from the development root key,
/// stable for one data folder; acts as principal `dev` with every role.
pub(crate) struct DevToken(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for DevToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevToken(REDACTED)")
    }
}

impl DevToken {
    /// The development token of a root key.
    pub fn of(root: &keyward_crypto::RootKey) -> Self {
        let b = root.derive_dev_credential("keyward/v1/dev-vault-token").expect("a dev label");
        Self(zeroize::Zeroizing::new(format!("kwdev_{}", hex::encode(&b[..20]))))
    }
}

/// The answer to a request that ran out of time.
pub(crate) fn timed_out(request_id: &str) -> EdgeResponse {
    http::Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::from(json!({ "errors": ["the request timed out; retry"] }).to_string())))
        .expect("valid response parts")
}

/// A Vault error: status and messages.
#[derive(Debug)]
pub(crate) struct VaultError {
    status: u16,
    errors: Vec<String>,
}

impl VaultError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, errors: vec![message.into()] }
    }

    fn denied() -> Self {
        Self::new(403, "permission denied")
    }

    /// The Vault error for a use-case error.
    fn of(e: &KmsError) -> Self {
        match e {
            KmsError::Unauthenticated(_) => Self::denied(),
            KmsError::PermissionDenied(m) => Self::new(403, format!("permission denied: {m}")),
            KmsError::NotFound(_) => {
                Self::new(400, format!("encryption key not found: {}", e.public_message()))
            }
            KmsError::InvalidCiphertext(_) => {
                Self::new(400, "invalid ciphertext: it does not open under this key and associated data")
            }
            KmsError::ResourceExhausted(_) => Self::new(429, e.public_message()),
            // As Vault answers every request while sealed.
            KmsError::Sealed(_) => Self::new(503, "Vault is sealed"),
            KmsError::Stale(_) => Self::new(503, e.public_message()),
            KmsError::AuditUnavailable(_) | KmsError::Store(_) | KmsError::Internal(_) => {
                Self::new(500, e.public_message())
            }
            _ => Self::new(400, e.public_message()),
        }
    }
}

/// The Vault Transit edge.
pub(crate) struct VaultTransit {
    seal: Arc<Seal>,
    auth: Authenticator,
    mount: String,
    limiter: Option<Arc<crate::grpc::RateLimiter>>,
    dev: Option<DevToken>,
    large: tokio::sync::Semaphore,
}

impl std::fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransit")
            .field("mount", &self.mount)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

/// A successful answer: `data` inside Vault's envelope, or a bare body.
enum Answer {
    Data(Value),
    Bare(Value),
}

/// What a request asks for, once routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    SealStatus,
    LookupSelf,
    ListKeys,
    CreateKey(String),
    ReadKey(String),
    ConfigKey(String),
    RotateKey(String),
    Encrypt(String),
    Decrypt(String),
    Rewrap(String),
    DataKey { plaintext: bool, name: String },
    Random(Option<String>),
}

impl Route {
    /// The key name the route names, if any.
    pub(crate) fn key_name(&self) -> Option<&str> {
        match self {
            Self::CreateKey(n)
            | Self::ReadKey(n)
            | Self::ConfigKey(n)
            | Self::RotateKey(n)
            | Self::Encrypt(n)
            | Self::Decrypt(n)
            | Self::Rewrap(n)
            | Self::DataKey { name: n, .. } => Some(n),
            _ => None,
        }
    }

    /// The operation its refusals are recorded as (`None`: touches no key).
    fn operation(&self) -> Option<Operation> {
        Some(match self {
            Self::Health | Self::SealStatus => return None,
            Self::LookupSelf => Operation::LookupToken,
            Self::ListKeys => Operation::ListKeys,
            Self::CreateKey(_) => Operation::CreateKey,
            Self::ReadKey(_) => Operation::DescribeKey,
            Self::ConfigKey(_) => Operation::UpdateRotationPolicy,
            Self::RotateKey(_) => Operation::RotateKey,
            Self::Encrypt(_) => Operation::Encrypt,
            Self::Decrypt(_) => Operation::Decrypt,
            Self::Rewrap(_) => Operation::ReEncrypt,
            Self::DataKey { plaintext: true, .. } => Operation::GenerateDataKey,
            Self::DataKey { plaintext: false, .. } => Operation::GenerateDataKeyWithoutPlaintext,
            Self::Random(_) => Operation::GenerateRandom,
        })
    }
}

/// How many batch items a body holds (1 for a single request), counted
/// without parsing it: a cheap upper bound, for the rate limit.
fn batch_len(body: &[u8]) -> usize {
    let needle = b"\"batch_input\"";
    if !body.windows(needle.len()).any(|w| w == needle) {
        return 1;
    }
    body.iter().filter(|b| **b == b'{').count().saturating_sub(1).clamp(1, keyward_core::MAX_BATCH_ITEMS)
}

/// Routes `method path?query` under `mount`.
pub(crate) fn route(
    mount: &str,
    method: &http::Method,
    path: &str,
    query: &str,
) -> Result<Route, VaultError> {
    let list = method.as_str() == "LIST"
        || (*method == http::Method::GET && query.split('&').any(|q| q == "list=true" || q == "list=1"));
    let read = *method == http::Method::GET && !list;
    let write = matches!(method.as_str(), "POST" | "PUT");
    let unsupported = || VaultError::new(405, format!("unsupported operation: {method} {path}"));
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(VaultError::new(404, format!("no handler for route {path:?}")));
    };
    match rest {
        "sys/health" => {
            return if *method == http::Method::GET || *method == http::Method::HEAD {
                Ok(Route::Health)
            } else {
                Err(unsupported())
            }
        }
        "sys/seal-status" => {
            return if *method == http::Method::GET { Ok(Route::SealStatus) } else { Err(unsupported()) }
        }
        "auth/token/lookup-self" => {
            return if read || write { Ok(Route::LookupSelf) } else { Err(unsupported()) }
        }
        _ => {}
    }
    let Some(rest) = rest.strip_prefix(mount).and_then(|r| r.strip_prefix('/')) else {
        return Err(VaultError::new(404, format!("no handler for route {path:?}")));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let name = |s: &str| -> Result<String, VaultError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(s.to_string())
        } else {
            Err(VaultError::new(
                400,
                format!(
                    "invalid key name {:?}: 1 to 128 letters, digits, - _ .",
                    keyward_core::bounded(s, 64)
                ),
            ))
        }
    };
    let r = match (segs.as_slice(), list, read, write) {
        (["keys"], true, _, _) => Route::ListKeys,
        (["keys", n], false, true, _) => Route::ReadKey(name(n)?),
        (["keys", n], false, _, true) => Route::CreateKey(name(n)?),
        (["keys", n, "config"], false, _, true) => Route::ConfigKey(name(n)?),
        (["keys", n, "rotate"], false, _, true) => Route::RotateKey(name(n)?),
        (["encrypt", n], false, _, true) => Route::Encrypt(name(n)?),
        (["decrypt", n], false, _, true) => Route::Decrypt(name(n)?),
        (["rewrap", n], false, _, true) => Route::Rewrap(name(n)?),
        (["datakey", "plaintext", n], false, _, true) => Route::DataKey { plaintext: true, name: name(n)? },
        (["datakey", "wrapped", n], false, _, true) => Route::DataKey { plaintext: false, name: name(n)? },
        (["random"], false, _, true) => Route::Random(None),
        (["random", b], false, _, true) => Route::Random(Some(b.to_string())),
        (["random", "platform" | "seal" | "all", b], false, _, true) => Route::Random(Some(b.to_string())),
        (["keys", _], ..) if *method == http::Method::DELETE => {
            return Err(VaultError::new(
                400,
                "deleting keys through the Vault API is not supported: schedule the deletion with \
                 `keyward key schedule-deletion alias/<name>` (deletion_allowed is recorded, not acted on)",
            ))
        }
        (["keys" | "encrypt" | "decrypt" | "rewrap" | "datakey" | "random", ..], ..) => {
            return Err(unsupported())
        }
        _ => return Err(VaultError::new(404, format!("no handler for route {path:?}"))),
    };
    Ok(r)
}

impl VaultTransit {
    /// The edge over `kms` at `/v1/<mount>/`.
    pub fn new(
        seal: Arc<Seal>,
        auth: Authenticator,
        mount: String,
        limiter: Option<Arc<crate::grpc::RateLimiter>>,
        dev: Option<DevToken>,
    ) -> Self {
        Self { seal, auth, mount, limiter, dev, large: tokio::sync::Semaphore::new(LARGE_BODIES) }
    }

    /// The development token, in `--dev`.
    pub fn dev_token(&self) -> Option<&DevToken> {
        self.dev.as_ref()
    }

    /// The handler the HTTP listener runs.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req| {
            let edge = self.clone();
            Box::pin(async move { edge.handle(req).await })
        })
    }

    async fn handle(&self, req: EdgeRequest) -> EdgeResponse {
        let request_id = req.request_id.clone();
        let (status, body) = match self.answer(req).await {
            // sys/health answers without the envelope, as Vault does.
            Ok((status, Answer::Bare(v))) => (status, v),
            Ok((status, Answer::Data(data))) => (
                status,
                json!({
                    "request_id": request_id,
                    "lease_id": "",
                    "renewable": false,
                    "lease_duration": 0,
                    "data": data,
                    "wrap_info": null,
                    "warnings": null,
                    "auth": null,
                }),
            ),
            Err(e) => (e.status, json!({ "errors": e.errors })),
        };
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-request-id", &request_id)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid response parts")
    }

    /// The data of a successful answer, with its status, or the error.
    async fn answer(&self, req: EdgeRequest) -> Result<(u16, Answer), VaultError> {
        let EdgeRequest { head, body, peer, request_id, .. } = req;
        let route = route(&self.mount, &head.method, head.uri.path(), head.uri.query().unwrap_or(""))?;
        match route {
            // As Vault: health is 503 while sealed, seal-status always 200.
            Route::Health => {
                let state = self.seal.state();
                let status = if state.sealed { 503 } else { 200 };
                return Ok((status, Answer::Bare(ops::health(&state))));
            }
            Route::SealStatus => return Ok((200, Answer::Bare(ops::seal_status(&self.seal.state())))),
            _ => {}
        }
        if head.headers.contains_key("x-vault-wrap-ttl") {
            return Err(VaultError::new(400, "response wrapping (X-Vault-Wrap-TTL) is not supported"));
        }
        let body = match body {
            Ok(b) => b,
            Err(BodyError::TooLarge(n)) => {
                return Err(VaultError::new(413, format!("request body: at most {n} bytes")))
            }
            Err(BodyError::Unreadable) => {
                return Err(VaultError::new(400, "the request body could not be read"))
            }
        };
        let refused = Caller {
            request_id,
            principal: "unauthenticated".into(),
            peer: peer.to_string(),
            edge: Edge::VaultTransit,
            policy: Arc::new(Policy::default()),
        };
        let token = head
            .headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| {
                head.headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim)
            })
            .filter(|t| !t.is_empty());
        let op = route.operation().expect("every route past health has an operation");
        let kms = self.seal.kms().map_err(|e| VaultError::of(&e))?;
        let identity = self.identify(&kms, token, refused.clone());
        let caller = match identity {
            Ok(c) => c,
            Err(why) => {
                let recorded = match &why {
                    Refusal::Token(t) => kms.refuse_token(&refused, op, t).await,
                    Refusal::Other(m) => kms.refuse(&refused, op, KmsError::Unauthenticated(m.clone())).await,
                };
                if let KmsError::AuditUnavailable(a) = recorded {
                    return Err(VaultError::of(&KmsError::AuditUnavailable(a)));
                }
                return Err(VaultError::denied());
            }
        };
        // A batch spends one request's worth of the rate limit per item.
        let items = batch_len(&body);
        if let Some(l) = &self.limiter {
            if !l.try_acquire_n(items) {
                let why = KmsError::ResourceExhausted("rate limit exceeded; retry with backoff".into());
                return Err(VaultError::of(&kms.refuse(&caller, op, why).await));
            }
        }
        if route == Route::LookupSelf {
            let runtime = token
                .filter(|t| t.starts_with(keyward_core::TOKEN_PREFIX))
                .and_then(|t| kms.identify_token(t).ok());
            return Ok((200, Answer::Data(ops::lookup_self(&caller, runtime.as_ref()))));
        }
        let _large = if body.len() > LARGE_BODY {
            Some(self.large.acquire().await.expect("never closed"))
        } else {
            None
        };
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) | Err(_) => {
                    let e = KmsError::invalid("body", "must be a JSON object");
                    return Err(VaultError::of(&kms.refuse(&caller, op, e).await));
                }
            }
        };
        ops::run(&kms, &caller, route, op, parsed).await.map(|(s, d)| (s, Answer::Data(d)))
    }

    /// The caller a token stands for (see [`crate::bearer::identify`]).
    fn identify(&self, kms: &Kms, token: Option<&str>, refused: Caller) -> Result<Caller, Refusal> {
        let Some(token) = token else {
            return Err(Refusal::Other("missing client token (X-Vault-Token)".into()));
        };
        let dev = self.dev.as_ref().map(|d| d.0.as_bytes());
        crate::bearer::identify(&self.auth, kms, dev, token, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_as_vault_names_them() {
        let r =
            |m: &str, p: &str, q: &str| route("transit", &Method::from_bytes(m.as_bytes()).unwrap(), p, q);
        assert_eq!(r("GET", "/v1/sys/health", "").unwrap(), Route::Health);
        assert_eq!(r("GET", "/v1/auth/token/lookup-self", "").unwrap(), Route::LookupSelf);
        assert_eq!(r("LIST", "/v1/transit/keys", "").unwrap(), Route::ListKeys);
        assert_eq!(r("GET", "/v1/transit/keys", "list=true").unwrap(), Route::ListKeys);
        assert_eq!(r("GET", "/v1/transit/keys/app", "").unwrap(), Route::ReadKey("app".into()));
        assert_eq!(r("POST", "/v1/transit/keys/app", "").unwrap(), Route::CreateKey("app".into()));
        assert_eq!(r("PUT", "/v1/transit/encrypt/app", "").unwrap(), Route::Encrypt("app".into()));
        assert_eq!(r("POST", "/v1/transit/keys/app/rotate", "").unwrap(), Route::RotateKey("app".into()));
        assert_eq!(
            r("POST", "/v1/transit/datakey/wrapped/app", "").unwrap(),
            Route::DataKey { plaintext: false, name: "app".into() }
        );
        assert_eq!(r("POST", "/v1/transit/random/24", "").unwrap(), Route::Random(Some("24".into())));
        assert_eq!(r("POST", "/v1/transit/random", "").unwrap(), Route::Random(None));
        assert_eq!(r("GET", "/v1/transit/random/8", "").unwrap_err().status, 405);
        let delete = r("DELETE", "/v1/transit/keys/app", "").unwrap_err();
        assert!(
            delete.status == 400 && delete.errors[0].contains("keyward key schedule-deletion"),
            "{delete:?}"
        );
        assert_eq!(r("GET", "/v1/sys/seal-status", "").unwrap(), Route::SealStatus);
        assert_eq!(r("POST", "/v1/transit/keys/app", "list=true").unwrap(), Route::CreateKey("app".into()));
        assert_eq!(r("POST", "/v1/other/encrypt/app", "").unwrap_err().status, 404);
        assert_eq!(r("POST", "/v1/transit/nosuch", "").unwrap_err().status, 404);
        assert_eq!(r("POST", "/v1/transit/encrypt/a%20b", "").unwrap_err().status, 400);
        assert_eq!(r("POST", "/", "").unwrap_err().status, 404);
    }
}
