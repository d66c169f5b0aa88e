//! The gRPC edge: one service struct per proto service, each a thin
//! translation between protobuf messages and `keyward_core::Kms` calls.
//!
//! Architecture invariant: this module is the only place that turns a
//! `KmsError` into a `tonic::Status` ([`to_status`]), and the only place that
//! names both protobuf types and domain types.

mod access;
mod audit;
mod convert;
mod crypto;
mod keys;
mod operator;
mod peer;
mod size;

use std::sync::Arc;

use keyward_core::{Caller, Edge, ErrorKind, Kms, KmsError, Operation, Policy};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Authenticator, NoIdentity};
use crate::seal::Seal;

pub use access::AccessApi;
pub use audit::AuditApi;
pub use convert::{record_to_pb, timestamp};
pub use crypto::CryptoApi;
pub use keys::KeysApi;
pub use operator::OperatorApi;
pub use peer::{GrpcPeers, PeerApi};
pub use size::{size_status, SizeLayer};

/// Metadata key carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The one mapping from domain errors to gRPC status codes. Internal causes
/// are logged here, once; callers get the sanitised message.
pub fn to_status(e: &KmsError) -> Status {
    let code = match e.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    match e.kind() {
        // Sealed (or, in a cluster, not current) is a state, not a failure:
        // one line per request would flood the log (the state change is logged).
        ErrorKind::Unavailable if matches!(e, KmsError::Sealed(_) | KmsError::Stale(_)) => {
            tracing::debug!(error = %e.public_message(), "refused while sealed")
        }
        ErrorKind::Internal | ErrorKind::Unavailable => {
            tracing::error!(error = %e, cause = ?std::error::Error::source(e), "request failed")
        }
        // The bounded message: a refusal may echo what the caller sent.
        _ => tracing::debug!(error = %e.public_message(), "request refused"),
    }
    Status::new(code, e.public_message())
}

/// The request id: the caller's `x-request-id` if sane, else a fresh UUID.
fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::observe::sane_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(keyward_core::new_request_id)
}

/// Wraps a use-case result into a response (or status) carrying the request id.
pub(crate) fn respond<T>(caller: &Caller, result: Result<T, KmsError>) -> Result<Response<T>, Status> {
    let id = MetadataValue::try_from(caller.request_id.as_str()).ok();
    match result {
        Ok(body) => {
            let mut resp = Response::new(body);
            if let Some(id) = id {
                resp.metadata_mut().insert(REQUEST_ID, id);
            }
            Ok(resp)
        }
        Err(e) => {
            let mut status = to_status(&e);
            if let Some(id) = id {
                status.metadata_mut().insert(REQUEST_ID, id);
            }
            Err(status)
        }
    }
}

/// Shared state of every service.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) seal: Arc<Seal>,
    auth: Arc<Authenticator>,
    limiter: Option<Arc<RateLimiter>>,
}

impl Api {
    /// Services over the `Kms` behind `seal`, identifying callers with `auth`.
    pub fn new(seal: Arc<Seal>, auth: Authenticator, limiter: Option<Arc<RateLimiter>>) -> Self {
        Self { seal, auth: Arc::new(auth), limiter }
    }

    /// The key service, or UNAVAILABLE "sealed".
    pub(crate) fn kms(&self) -> Result<Arc<Kms>, KmsError> {
        self.seal.kms()
    }

    /// The key service, or the status a sealed server answers.
    pub(crate) fn live(&self) -> Result<Arc<Kms>, Status> {
        self.seal.kms().map_err(|e| to_status(&e))
    }

    /// The authenticator (the OperatorService checks admins of the
    /// configuration file while sealed).
    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The global rate limiter, if one is configured.
    pub(crate) fn limiter(&self) -> Option<Arc<RateLimiter>> {
        self.limiter.clone()
    }

    /// Who is calling: request id, peer, and the principal from a client
    /// certificate or bearer token. A caller without a valid identity is
    /// refused UNAUTHENTICATED, and the refusal is audited (past a per-peer
    /// threshold, counted into one record a second: `Kms::refuse`). Only an
    /// authenticated request spends the global rate limit: over it, the
    /// request is refused RESOURCE_EXHAUSTED before any work.
    ///
    /// A bearer token starting `kwt_` is a runtime token (AccessService),
    /// checked against the directory as it is now; any other credential is
    /// checked against the configuration. Either way the principal's policy
    /// is looked up for this request (bootstrap grants plus runtime ones),
    /// so a revoked grant or token is refused by the very next request.
    pub(crate) async fn caller<T>(&self, req: &Request<T>, op: Operation) -> Result<Caller, Status> {
        self.caller_with_credential(req, op).await.map(|(c, _)| c)
    }

    /// As [`Api::caller`], with what identified the caller, so that a
    /// long-lived stream can check it again for each item ([`Api::recheck`]).
    pub(crate) async fn caller_with_credential<T>(
        &self,
        req: &Request<T>,
        op: Operation,
    ) -> Result<(Caller, Credential), Status> {
        let request_id = request_id(req);
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        // Sealed: nothing to identify callers against, nothing to record in.
        let kms = match self.kms() {
            Ok(k) => k,
            Err(e) => return Err(respond::<()>(&refused(request_id, peer), Err(e)).expect_err("an error")),
        };
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let certs = req.peer_certs();
        let runtime = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(keyward_core::TOKEN_PREFIX));
        // A client certificate naming a principal wins over a bearer token,
        // as it does for configured tokens.
        let by_cert = match (&certs, runtime) {
            (Some(c), Some(_)) => self.auth.identify(None, Some(c.as_slice())).ok(),
            _ => None,
        };
        if let (Some(token), None) = (runtime, &by_cert) {
            return match kms.identify_token(token) {
                Ok(id) => {
                    let caller = Caller {
                        request_id,
                        principal: id.principal,
                        peer,
                        edge: Edge::Grpc,
                        policy: id.policy,
                    };
                    let cred = Credential::Runtime(Arc::new(zeroize::Zeroizing::new(token.to_string())));
                    Ok((self.admit(caller, op).await?, cred))
                }
                Err(why) => {
                    let caller = refused(request_id, peer);
                    let err = kms.refuse_token(&caller, op, &why).await;
                    Err(respond::<()>(&caller, Err(err)).expect_err("an error"))
                }
            };
        }
        let identified = match by_cert {
            Some(p) => Ok(p),
            None => self.auth.identify(authorization, certs.as_deref().map(|c| c.as_slice())),
        };
        match identified {
            Ok(p) => {
                let caller =
                    Caller { request_id, principal: p.name, peer, edge: Edge::Grpc, policy: p.policy };
                let dev = matches!(*self.auth, Authenticator::Dev(_));
                let cred = if dev { Credential::Fixed } else { Credential::Named };
                let caller = self
                    .current(caller, &cred, op)
                    .await
                    .map_err(|(c, e)| respond::<()>(&c, Err(e)).expect_err("an error"))?;
                Ok((self.admit(caller, op).await?, cred))
            }
            Err(NoIdentity(why)) => {
                let caller = refused(request_id, peer);
                let err = kms.refuse(&caller, op, KmsError::Unauthenticated(why.to_string())).await;
                Err(respond::<()>(&caller, Err(err)).expect_err("an error"))
            }
        }
    }

    /// The caller of a stream's later item, as its credential stands now: a
    /// revoked or expired token, a deleted principal or a revoked grant
    /// stops applying to the very next item. Refusals are audited.
    pub(crate) async fn recheck(
        &self,
        caller: &Caller,
        cred: &Credential,
        op: Operation,
    ) -> Result<Caller, KmsError> {
        let kms = self.kms()?;
        match cred {
            Credential::Runtime(token) => match kms.identify_token(token) {
                Ok(id) => Ok(Caller { principal: id.principal, policy: id.policy, ..caller.clone() }),
                Err(why) => {
                    let refused = refused(caller.request_id.clone(), caller.peer.clone());
                    Err(kms.refuse_token(&refused, op, &why).await)
                }
            },
            Credential::Named | Credential::Fixed => {
                self.current(caller.clone(), cred, op).await.map_err(|(_, e)| e)
            }
        }
    }

    /// `caller` with its principal's policy as it is now (bootstrap grants
    /// plus runtime ones). A name that is no principal (a JWT rule naming a
    /// deleted runtime principal) is refused, audited.
    async fn current(
        &self,
        caller: Caller,
        cred: &Credential,
        op: Operation,
    ) -> Result<Caller, (Caller, KmsError)> {
        if matches!(cred, Credential::Fixed) {
            return Ok(caller);
        }
        let kms = match self.kms() {
            Ok(k) => k,
            Err(e) => return Err((caller, e)),
        };
        match kms.policy_of(&caller.principal) {
            Some(policy) => Ok(Caller { policy, ..caller }),
            None => {
                let refused = refused(caller.request_id, caller.peer);
                let why = KmsError::Unauthenticated("the JWT maps to a principal that does not exist".into());
                let err = kms.refuse(&refused, op, why).await;
                Err((refused, err))
            }
        }
    }

    /// Spends the global rate limit for an authenticated caller.
    async fn admit(&self, caller: Caller, op: Operation) -> Result<Caller, Status> {
        if let Some(l) = &self.limiter {
            if !l.try_acquire() {
                let kms = self.live()?;
                // Audited like other refusals: one by one up to the
                // per-peer threshold, then one summary a second.
                let why = KmsError::ResourceExhausted("rate limit exceeded; retry with backoff".into());
                let err = kms.refuse(&caller, op, why).await;
                return Err(respond::<()>(&caller, Err(err)).expect_err("an error"));
            }
        }
        Ok(caller)
    }
}

/// What identified a caller (see [`Api::recheck`]).
#[derive(Clone)]
pub(crate) enum Credential {
    /// A runtime token, checked against the directory each time.
    Runtime(Arc<zeroize::Zeroizing<String>>),
    /// A configured token, certificate or JWT: the principal's policy is
    /// looked up each time.
    Named,
    /// The development principal.
    Fixed,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Runtime(_) => "Runtime(REDACTED)",
            Self::Named => "Named",
            Self::Fixed => "Fixed",
        })
    }
}

/// The caller a refusal before identification is recorded as.
fn refused(request_id: String, peer: String) -> Caller {
    Caller {
        request_id,
        principal: "unauthenticated".to_string(),
        peer,
        edge: Edge::Grpc,
        policy: Arc::new(Policy::default()),
    }
}

/// A global token bucket shared by every connection.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateLimiter {
    /// Allows `per_second` requests on average and `burst` at once.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst, state: std::sync::Mutex::new((burst, std::time::Instant::now())) }
    }

    /// Gives back the token of a request that was refused PERMISSION_DENIED
    /// (`crate::observe` calls it): refusals must not spend the budget of
    /// authorised callers. They are limited per peer instead (their audit
    /// records, `Kms::refuse`).
    pub(crate) fn refund(&self) {
        let mut s = self.state.lock().expect("limiter lock");
        s.0 = (s.0 + 1.0).min(self.burst);
    }

    pub(crate) fn try_acquire(&self) -> bool {
        self.try_acquire_n(1)
    }

    /// Spends `n` requests' worth at once (a batch of `n` items), or none.
    pub(crate) fn try_acquire_n(&self, n: usize) -> bool {
        let n = n.max(1) as f64;
        let mut s = self.state.lock().expect("limiter lock");
        let now = std::time::Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_second).min(self.burst);
        s.1 = now;
        // A batch larger than the burst can pass only with a full bucket.
        let cost = n.min(self.burst);
        if s.0 >= cost {
            s.0 -= cost;
            true
        } else {
            false
        }
    }
}
