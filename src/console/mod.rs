//! The web console (`--console-listen`, `console_listen`): key inventory,
//! key pages with usage plots, the audit explorer and admin actions, for
//! security teams and compliance reviewers, in the same binary.
//!
//! A thin edge like the others: each page and action is one `Kms` use case
//! of the same meaning (ListKeys, DescribeKey, ListKeyVersions,
//! GetKeyUsage, QueryAuditLog, SummarizeAuditLog, VerifyAuditLog,
//! RotateKey, ...), called as the signed-in principal, so it is authorized
//! and recorded (edge `console`) as on every edge. Sign-in exchanges a
//! bearer token for a session cookie ([`session`]); every form that changes
//! state carries the session's CSRF token (the sign-in form a double-submit
//! token of its own). Pages are HTML from [`pages`]
//! (maud: every inserted value escaped), plots SVG drawn here ([`plot`]);
//! no script, no third-party resource, a strict Content-Security-Policy.

mod forms;
mod pages;
mod plot;
mod session;

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use keyward_core::{Caller, Edge, Kms, KmsError, Operation, Policy};

use crate::auth::Authenticator;
use crate::bearer::Refusal;
use crate::http::{BodyError, EdgeRequest, EdgeResponse, Handler};
use crate::seal::Seal;
use forms::Form;
use session::{Credential, SessionCredential, SessionView, Sessions, SignInLimiter};

/// Largest form body.
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// The session cookie's name.
const COOKIE: &str = "keyward_session";
/// The sign-in form's CSRF cookie: the form carries the same random value
/// (a double-submit token), so a sign-in cannot be posted from another site.
const LOGIN_COOKIE: &str = "keyward_login";
/// The stylesheet, served by the binary.
const CSS: &str = include_str!("static/console.css");
/// What every page may load: its own stylesheet, nothing else; no script,
/// no frame, forms only back to the console.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The answer to a request that ran out of time.
pub(crate) fn timed_out(request_id: &str) -> EdgeResponse {
    let page =
        pages::message(None, "Timed out", "The request took too long. Try again, or narrow the range.");
    respond(503, request_id, "text/html; charset=utf-8", page.into_string().into(), &[])
}

/// The web console edge.
pub(crate) struct Console {
    seal: Arc<Seal>,
    auth: Authenticator,
    sessions: Sessions,
    limiter: SignInLimiter,
    /// `--dev`: sign in as the development principal directly.
    dev: bool,
    /// Under TLS: the cookie is `Secure`.
    secure: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("dev", &self.dev)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// Who a request is from, once its session checked out.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The caller every use case is called as.
    pub caller: Caller,
    /// The session's CSRF token (put in every form).
    pub csrf: String,
    /// The session's id hash.
    session: [u8; 32],
}

impl Viewer {
    /// Whether the controls of admin actions are shown.
    pub fn is_admin(&self) -> bool {
        self.caller.policy.has(keyward_core::Role::Admin)
    }

    /// Whether the audit pages are offered.
    pub fn is_auditor(&self) -> bool {
        self.caller.policy.has(keyward_core::Role::Auditor)
    }
}

/// A finished answer: status, content type, body, extra headers.
struct Page {
    status: u16,
    content_type: &'static str,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

impl Page {
    fn html(status: u16, markup: maud::Markup) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            body: markup.into_string().into(),
            headers: Vec::new(),
        }
    }

    fn redirect(to: &str) -> Self {
        Self {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::new(),
            headers: vec![("location", to.to_string())],
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

fn respond(
    status: u16,
    request_id: &str,
    content_type: &str,
    body: Bytes,
    headers: &[(&'static str, String)],
) -> EdgeResponse {
    let mut b = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-request-id", request_id)
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(body)).expect("valid response parts")
}

/// The HTTP status of a use-case error.
fn status_of(e: &KmsError) -> u16 {
    match e {
        KmsError::Unauthenticated(_) => 401,
        KmsError::PermissionDenied(_) => 403,
        KmsError::NotFound(_) => 404,
        KmsError::FailedPrecondition(_) | KmsError::AlreadyExists(_) => 409,
        KmsError::ResourceExhausted(_) => 429,
        KmsError::Sealed(_) | KmsError::Stale(_) | KmsError::AuditUnavailable(_) => 503,
        KmsError::Store(_) | KmsError::Internal(_) => 500,
        _ => 400,
    }
}

impl Console {
    /// The console over `seal`; `secure`: served over TLS.
    pub fn new(
        seal: Arc<Seal>,
        auth: Authenticator,
        idle: std::time::Duration,
        dev: bool,
        secure: bool,
    ) -> Self {
        Self { seal, auth, sessions: Sessions::new(idle), limiter: SignInLimiter::default(), dev, secure }
    }

    /// The handler the HTTP listener runs.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req| {
            let console = self.clone();
            Box::pin(async move { console.handle(req).await })
        })
    }

    async fn handle(&self, req: EdgeRequest) -> EdgeResponse {
        let request_id = req.request_id.clone();
        let page = self.page(req).await;
        respond(page.status, &request_id, page.content_type, page.body, &page.headers)
    }

    fn refused_caller(req: &EdgeRequest) -> Caller {
        Caller {
            request_id: req.request_id.clone(),
            principal: "unauthenticated".into(),
            peer: req.peer.to_string(),
            edge: Edge::Console,
            policy: Arc::new(Policy::default()),
        }
    }

    fn cookie_value(req: &EdgeRequest) -> Option<String> {
        Self::named_cookie(req, COOKIE)
    }

    fn named_cookie(req: &EdgeRequest, name: &str) -> Option<String> {
        req.head
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// A `set-cookie` value: HttpOnly, SameSite=Strict, Secure under TLS;
    /// `max_age` in seconds (None: a session cookie; 0: remove it).
    fn cookie(&self, name: &str, value: &str, path: &str, max_age: Option<u32>) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
        format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{age}{secure}")
    }

    fn set_cookie(&self, value: &str) -> String {
        self.cookie(COOKIE, value, "/", None)
    }

    /// The sign-in page with its CSRF token, set as its cookie too: the
    /// browser's token if it has one (so a second sign-in page, or a
    /// background request sent to it, does not void the form already shown),
    /// else a fresh one.
    fn login_page(&self, status: u16, error: Option<&str>, req: &EdgeRequest) -> Page {
        let token = Self::named_cookie(req, LOGIN_COOKIE)
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| session::random_hex(32));
        let cookie = self.cookie(LOGIN_COOKIE, &token, "/login", Some(3600));
        Page::html(status, pages::sign_in(error, req.client_certs.is_some(), &token))
            .with("set-cookie", cookie)
    }

    /// Whether a sign-in form carries the token of its cookie (compared in constant time).
    fn login_csrf_ok(req: &EdgeRequest, form: &Form) -> bool {
        Self::named_cookie(req, LOGIN_COOKIE).is_some_and(|c| !c.is_empty() && same_token(form, &c))
    }

    fn clear_cookie(&self) -> String {
        self.cookie(COOKIE, "", "/", Some(0))
    }

    /// The answer to a sign-in that started a session: the session cookie
    /// set, the sign-in form's CSRF cookie removed.
    fn signed_in(&self, session: &str) -> Page {
        Page::redirect("/")
            .with("set-cookie", self.set_cookie(session))
            .with("set-cookie", self.cookie(LOGIN_COOKIE, "", "/login", Some(0)))
    }

    /// The viewer of a request with a live session whose credential still holds.
    fn viewer(&self, kms: &Kms, req: &EdgeRequest) -> Option<Viewer> {
        let cookie = Self::cookie_value(req)?;
        let s: SessionView = self.sessions.get(&cookie)?;
        let refused = Self::refused_caller(req);
        let checked = match &s.credential {
            SessionCredential::Dev => {
                Ok(Caller { principal: "dev".into(), policy: Arc::new(Policy::everything()), ..refused })
            }
            SessionCredential::Token(t) => {
                crate::bearer::identify(&self.auth, kms, None, t, refused).map_err(|_| ())
            }
            // The request must come with the certificate the session signed in with.
            SessionCredential::Certificate(h) => match req.client_certs.as_deref().and_then(|c| c.first()) {
                Some(leaf) if session::sha256(leaf) == *h => self.certificate_caller(kms, req).ok_or(()),
                _ => Err(()),
            },
        };
        let caller = match checked {
            Ok(c) if c.principal == s.principal => c,
            _ => {
                // Revoked, expired, the principal is gone, or another certificate: the session ends.
                self.sessions.end(&s.id);
                return None;
            }
        };
        Some(Viewer { caller, csrf: s.csrf, session: s.id })
    }

    async fn page(&self, req: EdgeRequest) -> Page {
        let path = req.head.uri.path().to_string();
        let method = req.head.method.clone();
        if path == "/static/console.css" && method == http::Method::GET {
            return Page {
                status: 200,
                content_type: "text/css; charset=utf-8",
                body: Bytes::from_static(CSS.as_bytes()),
                headers: Vec::new(),
            };
        }
        let kms = match self.seal.kms() {
            Ok(k) => k,
            Err(e) => return Page::html(503, pages::message(None, "Unavailable", &e.public_message())),
        };
        let body = match &req.body {
            Ok(b) => b.clone(),
            Err(BodyError::TooLarge(n)) => {
                return Page::html(
                    413,
                    pages::message(None, "Too large", &format!("A form is at most {n} bytes.")),
                )
            }
            Err(BodyError::Unreadable) => {
                return Page::html(400, pages::message(None, "Bad request", "The form could not be read."))
            }
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/login") => return self.sign_in_page(&kms, &req).await,
            ("POST", "/login") => return self.sign_in(&kms, &req, &body).await,
            _ => {}
        }
        let Some(viewer) = self.viewer(&kms, &req) else {
            return match method.as_str() {
                "GET" | "HEAD" => Page::redirect("/login"),
                _ => Page::html(
                    401,
                    pages::message(
                        None,
                        "Signed out",
                        "Your session ended. Sign in again, then repeat the action.",
                    ),
                ),
            };
        };
        let query = forms::query(req.head.uri.query().unwrap_or(""));
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", [""]) => {
                Page::redirect(if viewer.is_admin() || viewer.is_auditor() { "/keys" } else { "/audit" })
            }
            ("GET", ["keys"]) => self.inventory(&kms, &viewer, &query).await,
            ("GET", ["keys", key]) => self.key_page(&kms, &viewer, key, &query).await,
            ("GET", ["audit"]) => self.audit_page(&kms, &viewer, &query).await,
            ("GET", ["audit", "export"]) => self.export(&kms, &viewer, &query).await,
            ("GET", ["audit", "verify"]) => self.verify_page(&kms, &viewer).await,
            ("POST", rest) => {
                let form = forms::query(std::str::from_utf8(&body).unwrap_or(""));
                let op = actions_op(rest);
                if !csrf_ok(&viewer, &form) {
                    let e = KmsError::PermissionDenied(
                        "the form's CSRF token is missing or wrong; reload the page".into(),
                    );
                    let e = match (op, rest) {
                        (Some(op), ["keys", key, ..]) => kms.refuse_key(&viewer.caller, op, key, e).await,
                        (Some(op), _) => kms.refuse(&viewer.caller, op, e).await,
                        (None, _) => kms.refuse(&viewer.caller, Operation::SignOut, e).await,
                    };
                    return self.error_page(Some(&viewer), &e);
                }
                match rest {
                    ["logout"] => self.sign_out(&kms, &viewer).await,
                    ["keys", key, action @ ..] => self.action(&kms, &viewer, key, action, &form).await,
                    _ => Page::html(404, pages::message(Some(&viewer), "Not found", "No such action.")),
                }
            }
            _ => Page::html(404, pages::message(Some(&viewer), "Not found", "No such page.")),
        }
    }

    fn error_page(&self, viewer: Option<&Viewer>, e: &KmsError) -> Page {
        let status = status_of(e);
        let title = match status {
            403 => "Not allowed",
            404 => "Not found",
            409 => "Not possible now",
            429 => "Slow down",
            503 => "Unavailable",
            500 => "Server error",
            _ => "Bad request",
        };
        Page::html(status, pages::message(viewer, title, &e.public_message()))
    }

    async fn sign_in_page(&self, kms: &Kms, req: &EdgeRequest) -> Page {
        if self.viewer(kms, req).is_some() {
            return Page::redirect("/");
        }
        if self.dev {
            // Development mode signs in as the development principal directly.
            let caller = Caller {
                principal: "dev".into(),
                policy: Arc::new(Policy::everything()),
                ..Self::refused_caller(req)
            };
            if let Err(e) = kms.console_sign_in(&caller, "dev").await {
                return self.error_page(None, &e);
            }
            let cookie = self.sessions.start("dev".into(), Credential::Dev);
            return Page::redirect("/keys").with("set-cookie", self.set_cookie(&cookie));
        }
        self.login_page(200, None, req)
    }

    /// The caller a request's client certificate names, if it names a principal.
    fn certificate_caller(&self, kms: &Kms, req: &EdgeRequest) -> Option<Caller> {
        let certs = req.client_certs.as_deref()?;
        let p = self.auth.identify(None, Some(certs)).ok()?;
        let policy = kms.policy_of(&p.name)?;
        Some(Caller { principal: p.name, policy, ..Self::refused_caller(req) })
    }

    async fn sign_in(&self, kms: &Kms, req: &EdgeRequest, body: &[u8]) -> Page {
        let refused = Self::refused_caller(req);
        if !self.limiter.allow(req.peer.ip()) {
            let e = KmsError::ResourceExhausted(format!(
                "too many sign-in attempts from this address (at most {} a minute); wait a minute",
                session::ATTEMPTS_PER_ADDRESS
            ));
            let e = kms.refuse(&refused, Operation::SignIn, e).await;
            return self.login_page(status_of(&e), Some(&e.public_message()), req);
        }
        let form: Form = forms::query(std::str::from_utf8(body).unwrap_or(""));
        if !Self::login_csrf_ok(req, &form) {
            let e = KmsError::PermissionDenied(
                "the sign-in form's CSRF token is missing or wrong; reload the sign-in page".into(),
            );
            let e = kms.refuse(&refused, Operation::SignIn, e).await;
            if let KmsError::AuditUnavailable(_) = e {
                return self.error_page(None, &e);
            }
            return self.login_page(403, Some(&e.public_message()), req);
        }
        if form.get("method").map(String::as_str) == Some("certificate") {
            let leaf = req.client_certs.as_deref().and_then(|c| c.first());
            let Some((caller, leaf)) = self.certificate_caller(kms, req).zip(leaf) else {
                let why = KmsError::Unauthenticated("no client certificate naming a principal".into());
                let e = kms.refuse(&refused, Operation::SignIn, why).await;
                if let KmsError::AuditUnavailable(_) = e {
                    return self.error_page(None, &e);
                }
                return self.login_page(401, Some("Your client certificate names no principal."), req);
            };
            if let Err(e) = kms.console_sign_in(&caller, "certificate").await {
                return self.error_page(None, &e);
            }
            let cookie =
                self.sessions.start(caller.principal.clone(), Credential::Certificate(session::sha256(leaf)));
            return self.signed_in(&cookie);
        }
        let token =
            zeroize::Zeroizing::new(form.get("token").map(|t| t.trim().to_string()).unwrap_or_default());
        if token.is_empty() {
            let e = kms
                .refuse(&refused, Operation::SignIn, KmsError::invalid("token", "paste a bearer token"))
                .await;
            return self.login_page(400, Some(&e.public_message()), req);
        }
        let caller = match crate::bearer::identify(&self.auth, kms, None, &token, refused.clone()) {
            Ok(c) => c,
            Err(why) => {
                let recorded = match &why {
                    Refusal::Token(t) => kms.refuse_token(&refused, Operation::SignIn, t).await,
                    Refusal::Other(m) => {
                        kms.refuse(&refused, Operation::SignIn, KmsError::Unauthenticated(m.clone())).await
                    }
                };
                if let KmsError::AuditUnavailable(_) = recorded {
                    return self.error_page(None, &recorded);
                }
                return self.login_page(401, Some("That token was not accepted."), req);
            }
        };
        if let Err(e) = kms.console_sign_in(&caller, "token").await {
            return self.error_page(None, &e);
        }
        let cookie = self.sessions.start(caller.principal.clone(), Credential::Token(token));
        self.signed_in(&cookie)
    }

    async fn sign_out(&self, kms: &Kms, viewer: &Viewer) -> Page {
        self.sessions.end(&viewer.session);
        // The session is over whatever the record says; a failed record is reported.
        if let Err(e) = kms.console_sign_out(&viewer.caller).await {
            return self.error_page(None, &e).with("set-cookie", self.clear_cookie());
        }
        Page::redirect("/login?signed_out=1").with("set-cookie", self.clear_cookie())
    }
}

/// The operation a state-changing form is (for the record of a CSRF refusal).
fn actions_op(segs: &[&str]) -> Option<Operation> {
    Some(match segs {
        ["logout"] => Operation::SignOut,
        ["keys", _, "rotate"] => Operation::RotateKey,
        ["keys", _, "enable"] => Operation::EnableKey,
        ["keys", _, "disable"] => Operation::DisableKey,
        ["keys", _, "schedule-deletion"] => Operation::ScheduleKeyDeletion,
        ["keys", _, "cancel-deletion"] => Operation::CancelKeyDeletion,
        ["keys", _, "rotation-policy"] => Operation::UpdateRotationPolicy,
        ["keys", _, "versions", _, "enable"] => Operation::EnableKeyVersion,
        ["keys", _, "versions", _, "disable"] => Operation::DisableKeyVersion,
        ["keys", _, "versions", _, "schedule-destruction"] => Operation::ScheduleKeyVersionDestruction,
        ["keys", _, "versions", _, "restore"] => Operation::RestoreKeyVersion,
        _ => return None,
    })
}

/// Whether a form carries the session's CSRF token (compared in constant time).
fn csrf_ok(viewer: &Viewer, form: &Form) -> bool {
    same_token(form, &viewer.csrf)
}

/// Whether a form's `csrf` field is `expected` (compared in constant time).
fn same_token(form: &Form, expected: &str) -> bool {
    form.get("csrf")
        .is_some_and(|t| bool::from(subtle::ConstantTimeEq::ct_eq(t.as_bytes(), expected.as_bytes())))
}

mod views;
