//! The web console end to end: the real server (RocksDB in a temporary
//! folder, configured principals with bearer tokens) and Debian's headless
//! Chromium driven over WebDriver (chromium-driver, fantoccini), as a
//! reviewer and an administrator use it: sign in, find a key, read its
//! usage plot, filter the audit log, act with a typed confirmation and see
//! the action's record, be refused as an auditor and without a CSRF token,
//! sign out. Plain HTTP checks beside it: headers, cookie flags, the
//! sign-in rate limit, export, a replayed cookie after sign-out.
//!
//! With `KEYWARD_CONSOLE_SCREENSHOTS=DIR` the browser test saves a
//! screenshot of each page into DIR (the README's are from docs/console/).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::clients::{free_port, wait_for};
use common::{bearer, ctx, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use keyward::pb;

const ADMIN_TOKEN: &str = "kw_console_admin_token_for_tests";
const AUDITOR_TOKEN: &str = "kw_console_auditor_token_for_tests";

/// A server with the console on a free port, and the console's base URL.
async fn start(dir: &Path) -> (TestServer, String) {
    let root = dir.join("root.key");
    keyward::config::create_root_key_file(&root).unwrap();
    let port = free_port();
    let text = format!(
        r#"
        data_dir = "{data}"
        root_key_file = "{root}"
        console_listen = "127.0.0.1:{port}"

        [[principals]]
        name = "admin"
        roles = ["admin", "auditor", "user"]
        token_sha256 = ["{admin}"]
          [[principals.grants]]
          keys = ["*"]
          operations = ["*"]

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
    let config = keyward::ServerConfig::from_parts(file, &Default::default()).unwrap();
    let s = TestServer::start_with(dir, config, None).await;
    wait_for(port).await;
    (s, format!("http://127.0.0.1:{port}"))
}

/// A key with a label and description that are HTML, and some use.
async fn used_key(s: &TestServer) -> String {
    let mut labels = std::collections::HashMap::new();
    labels.insert("team".to_string(), "<script>x</script>".to_string());
    let key = s
        .keys()
        .create_key(bearer(
            pb::CreateKeyRequest {
                alias: "alias/payments".into(),
                description: "<b>card</b> numbers".into(),
                labels,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id;
    let mut crypto = s.crypto();
    let mut last = Vec::new();
    for i in 0..5u8 {
        last = crypto
            .encrypt(bearer(
                pb::EncryptRequest {
                    key_id: key.clone(),
                    plaintext: vec![i; 8],
                    encryption_context: ctx(&[("app", "shop")]),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner()
            .ciphertext;
    }
    for _ in 0..3 {
        crypto
            .decrypt(bearer(
                pb::DecryptRequest {
                    ciphertext: last.clone(),
                    encryption_context: ctx(&[("app", "shop")]),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        crypto
            .generate_data_key_without_plaintext(bearer(
                pb::GenerateDataKeyRequest { key_id: key.clone(), ..Default::default() },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
    }
    key
}

/// Today's UTC date (YYYY-MM-DD).
fn keyward_core_today() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string()
}

/// Headless Chromium behind chromedriver, each with its own profile.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; scripts/setup installs it)");
        wait_for(port).await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last = None;
        for _ in 0..20 {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Self { client, driver, _profile: profile },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("no WebDriver session: {last:?}");
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn css(&self, sel: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(sel))
            .await
            .unwrap_or_else(|e| panic!("no {sel}: {e}"))
    }

    async fn count(&self, sel: &str) -> usize {
        self.client.find_all(Locator::Css(sel)).await.unwrap().len()
    }

    async fn text(&self, sel: &str) -> String {
        self.css(sel).await.text().await.unwrap()
    }

    async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Clicks `sel` and waits until the page that follows has `url_part` in its URL.
    async fn click_to(&self, sel: &str, url_part: &str) {
        self.css(sel).await.click().await.unwrap();
        for _ in 0..200 {
            if self.path().await.contains(url_part) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {sel} did not lead to {url_part}: at {}", self.path().await);
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.go(&format!("{base}/keys")).await;
        assert_eq!(self.path().await, "/login", "an unsigned visitor is sent to the sign-in page");
        self.css("#token").await.send_keys(token).await.unwrap();
        self.css("#sign-in").await.click().await.unwrap();
        let signed_in =
            self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#principal")).await;
        if signed_in.is_err() {
            panic!("not signed in: {}", self.client.source().await.unwrap());
        }
    }

    async fn shot(&self, name: &str) {
        let Some(dir) = std::env::var_os("KEYWARD_CONSOLE_SCREENSHOTS") else { return };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One plain HTTP request: status, headers, body.
async fn http(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let cookie = cookie.map(|c| format!("keyward_session={c}"));
    http_raw(method, url, cookie.as_deref(), form).await
}

/// The sign-in form's CSRF cookie and token, from a fresh sign-in page:
/// (the `cookie` header to send, the form field to add).
fn login_csrf(headers: &http::HeaderMap, page: &str) -> (String, String) {
    let cookie = set_cookie(headers, "keyward_login").expect("the sign-in page sets its CSRF cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let token = cookie.trim_start_matches("keyward_login=");
    assert!(page.contains(&format!("name=\"csrf\" value=\"{token}\"")), "the form carries the same token");
    (cookie.clone(), format!("csrf={token}"))
}

/// The `set-cookie` header an answer sets for cookie `name`.
fn set_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.split_once('=').is_some_and(|(n, _)| n == name))
}

/// A sign-in form posted as a browser would: the sign-in page first, then
/// the form with its CSRF token and cookie.
async fn post_login(base: &str, fields: &str) -> (u16, http::HeaderMap, String) {
    let (_, headers, page) = http("GET", &format!("{base}/login"), None, None).await;
    let (cookie, csrf) = login_csrf(&headers, &page);
    http_raw("POST", &format!("{base}/login"), Some(&cookie), Some(&format!("{csrf}&{fields}"))).await
}

/// One HTTP request with a whole `cookie` header.
async fn http_raw(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req.body(Full::new(Bytes::from(form.unwrap_or("").to_string()))).unwrap();
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// The records of `operation` (read over gRPC as the admin, who is also an auditor).
async fn records(s: &TestServer, operation: &str) -> Vec<pb::AuditRecord> {
    s.audit()
        .query_audit_log(bearer(
            pb::QueryAuditLogRequest { operation: operation.into(), page_size: 1000, ..Default::default() },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_and_admins_use_the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (s, base) = start(dir.path()).await;
    let key = used_key(&s).await;
    for i in 0..3 {
        s.keys()
            .create_key(bearer(
                pb::CreateKeyRequest { alias: format!("alias/other-{i}"), ..Default::default() },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
    }
    let b = Browser::start().await;

    // Sign in: the token goes into a form, never into a URL, a page or a cookie.
    b.go(&format!("{base}/login")).await;
    b.shot("sign-in").await;
    b.sign_in(&base, ADMIN_TOKEN).await;
    assert_eq!(b.text("#principal").await, "admin");
    assert!(!b.path().await.contains(ADMIN_TOKEN));
    assert!(!b.client.source().await.unwrap().contains(ADMIN_TOKEN));
    let cookie = b.client.get_named_cookie("keyward_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true), "the session cookie is HttpOnly");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)", "the session cookie is SameSite=Strict");
    assert!(!cookie.value().contains(ADMIN_TOKEN));
    let session = cookie.value().to_string();

    // Find the key: four keys, one matches the text filter.
    assert_eq!(b.count("#keys tr.key").await, 4);
    b.css("#filter-text").await.send_keys("payments").await.unwrap();
    b.click_to("#filter", "q=payments").await;
    assert_eq!(b.count("#keys tr.key").await, 1, "{}", b.path().await);
    let row = b.text("#keys tr.key").await;
    assert!(
        row.contains("alias/payments") && row.contains("team=<script>x</script>"),
        "shown as text: {row}"
    );
    assert!(row.contains("<b>card</b> numbers"), "{row}");
    b.go(&format!("{base}/keys")).await;
    b.shot("keys").await;

    // Its page: the usage plot has one point per bucket of the one version used.
    b.go(&format!("{base}/keys?q=payments")).await;
    b.click_to(&format!("a[href='/keys/{key}']"), &format!("/keys/{key}")).await;
    assert_eq!(b.text("#key-id").await, key);
    let plot = b.css("#plot-encryptions").await;
    assert_eq!(plot.attr("data-points").await.unwrap().as_deref(), Some("30"), "30 days, a point a day");
    assert_eq!(b.count("#plot-encryptions svg circle").await, 30);
    b.go(&format!("{base}/keys/{key}?range=24h&bucket=hour")).await;
    assert_eq!(b.count("#plot-encryptions svg circle").await, 24, "24 hours, a point an hour");
    assert_eq!(b.count("#plot-decryptions svg circle").await, 24);
    // A range of one's own: from and until as dates, a point a day.
    let today = &keyward_core_today();
    b.go(&format!("{base}/keys/{key}?from=2026-01-01&until={today}&bucket=day")).await;
    let days = b.css("#plot-encryptions").await.attr("data-points").await.unwrap().unwrap();
    assert!(days.parse::<usize>().unwrap() > 300, "{days} points from 1 January");
    b.go(&format!("{base}/keys/{key}?from=yesterday")).await;
    assert!(b.client.source().await.unwrap().contains("from: a UTC date"), "a bad date is named");
    b.go(&format!("{base}/keys/{key}?range=24h&bucket=hour")).await;
    let versions = b.text("#versions tbody").await;
    assert!(
        versions.contains("v1") && versions.contains('5') && versions.contains('3') && versions.contains('2'),
        "{versions}"
    );
    b.shot("key").await;

    // An admin action with its confirmation, and its record.
    b.click_to("#rotate", "done=rotate").await;
    assert!(b.text("#notice").await.contains("Rotated"));
    assert_eq!(b.count("#versions tr.version").await, 2);
    b.css("#confirm-deletion").await.send_keys("alias/wrong").await.unwrap();
    b.click_to("#schedule-deletion", "/schedule-deletion").await;
    assert!(b.text("#message").await.contains("confirm"), "a wrong confirmation is refused");
    b.go(&format!("{base}/keys/{key}")).await;
    b.css("#confirm-deletion").await.send_keys("alias/payments").await.unwrap();
    b.click_to("#schedule-deletion", "done=schedule-deletion").await;
    assert!(b.text("#key-state").await.contains("pending deletion"));
    b.click_to("#cancel-deletion", "done=cancel-deletion").await;
    assert!(b.text("#key-state").await.contains("disabled"));
    b.click_to("#enable", "done=enable").await;
    assert!(b.text("#key-state").await.contains("enabled"));
    for (op, outcome) in [
        ("RotateKey", "OK"),
        ("ScheduleKeyDeletion", "INVALID_ARGUMENT"),
        ("ScheduleKeyDeletion", "OK"),
        ("CancelKeyDeletion", "OK"),
    ] {
        let r = records(&s, op).await;
        assert!(
            r.iter().any(|r| r.outcome == outcome
                && r.edge == "console"
                && r.principal == "admin"
                && r.key_id == key),
            "{op} {outcome}: {r:?}"
        );
    }

    // The audit log, filtered in the form: the actions, newest first.
    b.go(&format!("{base}/audit")).await;
    b.css("#filter-key").await.send_keys("alias/payments").await.unwrap();
    b.css("#filter-operation").await.send_keys("ScheduleKeyDeletion").await.unwrap();
    b.click_to("#apply-filters", "operation=ScheduleKeyDeletion").await;
    assert_eq!(b.count("#records tr.record").await, 2, "{}", b.path().await);
    let first = b.text("#records tr.record").await;
    assert!(first.contains("OK") && first.contains("console"), "newest first: {first}");
    assert_eq!(b.css("#plot-outcomes").await.attr("data-outcomes").await.unwrap().as_deref(), Some("2"));
    b.css("#records tr.fields summary").await.click().await.unwrap();
    let fields = b.text("#records tr.fields dl").await;
    assert!(fields.contains("request_id") && fields.contains("prev_hash"), "{fields}");
    b.go(&format!("{base}/audit")).await;
    b.shot("audit").await;

    // The export of a filtered range: JSON lines, every record of it.
    let (status, headers, body) = http(
        "GET",
        &format!("{base}/audit/export?key=alias/payments&operation=Encrypt"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["operation"] == "Encrypt" && l["key_id"] == key.as_str()));
    assert!(lines.iter().all(|l| l["hash"].as_str().is_some_and(|h| h.len() == 64)), "the CLI's line format");

    // Verification, with the public key.
    b.go(&format!("{base}/audit/verify")).await;
    assert!(b.text("#verdict").await.starts_with("Intact"));
    assert!(b.text("#public-key").await.contains("BEGIN PUBLIC KEY"));
    b.shot("verify").await;

    // Without its CSRF token a form is refused (and the refusal recorded).
    b.go(&format!("{base}/keys/{key}")).await;
    b.client
        .execute("document.querySelector('form[action$=\"/rotate\"] input[name=csrf]').remove()", vec![])
        .await
        .unwrap();
    b.click_to("#rotate", "/rotate").await;
    assert!(b.text("#message").await.contains("CSRF"));
    assert!(records(&s, "RotateKey")
        .await
        .iter()
        .any(|r| r.outcome == "PERMISSION_DENIED" && r.reason.contains("CSRF")));

    // Sign out ends the session on the server: the old cookie no longer works.
    b.go(&format!("{base}/keys")).await;
    b.click_to("#sign-out", "signed_out").await;
    b.go(&format!("{base}/keys")).await;
    assert_eq!(b.path().await, "/login");
    let (status, headers, _) = http("GET", &format!("{base}/keys"), Some(&session), None).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, "/login"));
    assert!(records(&s, "SignOut").await.iter().any(|r| r.principal == "admin" && r.outcome == "OK"));

    // An auditor reads but does not see the controls, and is refused if it posts anyway.
    b.sign_in(&base, AUDITOR_TOKEN).await;
    b.go(&format!("{base}/keys/{key}")).await;
    assert_eq!(b.count("#actions").await, 0);
    assert_eq!(b.count("#rotate").await, 0);
    b.client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
             const c = document.querySelector('input[name=csrf]').cloneNode(); f.appendChild(c); \
             document.body.appendChild(f); f.submit();",
            vec![serde_json::json!(format!("/keys/{key}/rotate"))],
        )
        .await
        .unwrap();
    assert!(b.text("#message").await.contains("auditor may not"), "{}", b.client.source().await.unwrap());
    assert!(records(&s, "RotateKey")
        .await
        .iter()
        .any(|r| r.principal == "auditor" && r.outcome == "PERMISSION_DENIED"));
    b.stop().await;
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served_safely_and_sign_in_is_limited_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (s, base) = start(dir.path()).await;
    let (status, headers, body) = http("GET", &format!("{base}/login"), None, None).await;
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(!body.contains("<script"), "no script on any page");
    assert!(!body.contains("http://") && !body.contains("https://"), "no third-party resource");
    let (status, headers, _) = http("GET", &format!("{base}/static/console.css"), None, None).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (200, "text/css; charset=utf-8"));

    // A sign-in without the sign-in form's CSRF token (or with another
    // than its cookie's) is refused, even with a good token.
    let (status, _, body) =
        http("POST", &format!("{base}/login"), None, Some(&format!("token={ADMIN_TOKEN}"))).await;
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"), "{body}");
    let (_, headers, page) = http("GET", &format!("{base}/login"), None, None).await;
    let (cookie, token) = login_csrf(&headers, &page);
    // Another sign-in page in the same browser (or a background request
    // redirected to it) keeps the token, so the form already shown still works.
    let (_, headers, page) = http_raw("GET", &format!("{base}/login"), Some(&cookie), None).await;
    assert_eq!(login_csrf(&headers, &page), (cookie.clone(), token));
    let forged = format!("csrf={}&token={ADMIN_TOKEN}", "0".repeat(64));
    let (status, headers, _) = http_raw("POST", &format!("{base}/login"), Some(&cookie), Some(&forged)).await;
    assert_eq!(status, 403);
    assert_eq!(set_cookie(&headers, "keyward_session"), None);

    // A good token gets a session; the token is in no answer.
    let (status, headers, body) = post_login(&base, &format!("token={ADMIN_TOKEN}")).await;
    assert_eq!(status, 303);
    let set = set_cookie(&headers, "keyward_session").expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"), "{set}");
    assert!(!set.contains(ADMIN_TOKEN) && !body.contains(ADMIN_TOKEN));
    let session = set.split(';').next().unwrap().trim_start_matches("keyward_session=").to_string();
    let (status, _, body) = http("GET", &format!("{base}/keys"), Some(&session), None).await;
    assert_eq!(status, 200);
    assert!(!body.contains(ADMIN_TOKEN));
    // A state-changing form without the CSRF token is refused; with a made-up cookie, signed out.
    let (status, _, _) = http("POST", &format!("{base}/logout"), Some(&session), Some("")).await;
    assert_eq!(status, 403);
    let (status, _, _) = http("POST", &format!("{base}/logout"), Some("0000"), Some("csrf=x")).await;
    assert_eq!(status, 401);

    // Wrong tokens: refused and recorded, then rate-limited.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(post_login(&base, "token=kw_wrong").await.0);
    }
    // Two of the minute's ten attempts went to the CSRF refusals above.
    assert_eq!(statuses[..7], [401; 7]);
    assert_eq!(statuses[10], 429, "{statuses:?}");
    let signins = records(&s, "SignIn").await;
    assert!(signins.iter().any(|r| r.principal == "admin" && r.outcome == "OK" && r.edge == "console"));
    assert!(signins.iter().any(|r| r.outcome == "UNAUTHENTICATED"));
    assert!(signins.iter().any(|r| r.outcome == "PERMISSION_DENIED" && r.principal == "unauthenticated"));
    assert!(signins.iter().any(|r| r.outcome == "RESOURCE_EXHAUSTED"));
    for r in &signins {
        assert!(!format!("{r:?}").contains("kw_wrong") && !format!("{r:?}").contains(ADMIN_TOKEN));
    }
    s.stop().await.unwrap();
}

/// One HTTPS request over a fresh connection, with a client certificate if given.
async fn https(
    port: u16,
    pki: &common::pki::Pki,
    identity: Option<&(String, String)>,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((c, k)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(c) = cookie {
        // A whole cookie header (`name=value`), or the session cookie's value.
        let c = if c.contains('=') { c.to_string() } else { format!("keyward_session={c}") };
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(form.unwrap_or("").to_string()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mutual_tls_a_client_certificate_signs_in_and_its_session_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new();
    let port = free_port();
    let top = format!("console_listen = \"127.0.0.1:{port}\"");
    let principals = r#"
        [[principals]]
        name = "reviewer"
        roles = ["auditor"]
        cert_dns_names = ["reviewer-client"]
        "#;
    let server = common::pki::TlsServer::start_with(dir.path(), &pki, &top, principals).await;
    wait_for(port).await;
    let me = pki.leaf("reviewer-client");
    let stranger = pki.leaf("stranger");
    // The sign-in page offers the certificate to a client that has one.
    let (status, headers, page) = https(port, &pki, Some(&me), "GET", "/login", None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("sign-in-certificate"), "{page}");
    let (login_cookie, csrf) = login_csrf(&headers, &page);
    assert!(headers["set-cookie"].to_str().unwrap().contains("Secure"));
    let form = format!("{csrf}&method=certificate");
    let (_, _, page) = https(port, &pki, None, "GET", "/login", None, None).await;
    assert!(!page.contains("sign-in-certificate"));
    // A certificate naming no principal is refused.
    let (status, _, _) =
        https(port, &pki, Some(&stranger), "POST", "/login", Some(&login_cookie), Some(&form)).await;
    assert_eq!(status, 401);
    // Without the sign-in form's CSRF token, even the right certificate is refused.
    let (status, _, _) =
        https(port, &pki, Some(&me), "POST", "/login", None, Some("method=certificate")).await;
    assert_eq!(status, 403);
    let (status, headers, _) =
        https(port, &pki, Some(&me), "POST", "/login", Some(&login_cookie), Some(&form)).await;
    assert_eq!(status, 303);
    let set = set_cookie(&headers, "keyward_session").expect("a session cookie");
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let session = set.split(';').next().unwrap().trim_start_matches("keyward_session=").to_string();
    let (status, _, page) = https(port, &pki, Some(&me), "GET", "/audit", Some(&session), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("reviewer"));
    // The session works only with the certificate it signed in with.
    let (status, _, _) = https(port, &pki, Some(&stranger), "GET", "/audit", Some(&session), None).await;
    assert_eq!(status, 303, "another certificate ends the session");
    let (status, _, _) = https(port, &pki, Some(&me), "GET", "/audit", Some(&session), None).await;
    assert_eq!(status, 303, "and it stays ended");
    server.stop().await;
}
