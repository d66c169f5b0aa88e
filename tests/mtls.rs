//! Mutual TLS identities, end to end with certificates made at test time:
//! a principal is matched by the kind of name it lists (DNS SAN, URI SAN,
//! subject CN only when listed), a certificate must carry the clientAuth
//! extended key usage, and a configuration in which one name would match two
//! principals refuses to start (status 64).

mod common;

use std::process::Command;

use keyward::pb;
use keyward::pb::audit_service_client::AuditServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;
use rcgen::{ExtendedKeyUsagePurpose as Eku, SanType};
use tonic::transport::Channel;
use tonic::{Code, Request};

use common::pki::{channel, Pki};

const AUDITOR_TOKEN: &str = "kw_mtls_auditor_token";

fn dns(n: &str) -> SanType {
    SanType::DnsName(n.try_into().unwrap())
}

fn uri(n: &str) -> SanType {
    SanType::URI(n.try_into().unwrap())
}

/// The newest audit record (read with the auditor's token).
async fn newest(anon: &Channel) -> pb::AuditRecord {
    let mut req = Request::new(pb::QueryAuditLogRequest { page_size: 1, ..Default::default() });
    req.metadata_mut().insert("authorization", format!("Bearer {AUDITOR_TOKEN}").parse().unwrap());
    AuditServiceClient::new(anon.clone()).query_audit_log(req).await.unwrap().into_inner().records.remove(0)
}

/// Calls ListKeys with the channel's certificate; Ok(principal recorded) or the refusal.
async fn list_keys_as(c: &Channel, anon: &Channel) -> Result<String, tonic::Status> {
    KeyServiceClient::new(c.clone()).list_keys(pb::ListKeysRequest::default()).await?;
    let r = newest(anon).await;
    assert_eq!((r.operation.as_str(), r.outcome.as_str()), ("ListKeys", "OK"));
    Ok(r.principal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_are_typed_and_need_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let principals = format!(
        r#"
        [[principals]]
        name = "by-dns"
        roles = ["admin"]
        cert_dns_names = ["dns-client.example"]

        [[principals]]
        name = "by-uri"
        roles = ["admin"]
        cert_uris = ["spiffe://keyward.test/ns/pay/sa/api"]

        [[principals]]
        name = "by-cn"
        roles = ["admin"]
        cert_common_names = ["cn-client"]

        [[principals]]
        name = "auditor"
        roles = ["auditor"]
        token_sha256 = ["{auditor}"]
        "#,
        auditor = keyward::auth::token_hash_hex(AUDITOR_TOKEN),
    );
    let server = common::pki::TlsServer::start(dir.path(), &pki, &principals).await;
    let addr = server.addr.clone();
    let anon = channel(&addr, &pki, None).await;
    let client = |cn: Option<&str>, sans: Vec<SanType>| pki.client(cn, sans, vec![Eku::ClientAuth]);

    // A DNS SAN matches cert_dns_names (a CN nobody lists is ignored).
    let c = channel(&addr, &pki, Some(&client(Some("unlisted"), vec![dns("dns-client.example")]))).await;
    assert_eq!(list_keys_as(&c, &anon).await.unwrap(), "by-dns");
    // A URI SAN (SPIFFE ID) matches cert_uris.
    let c = channel(&addr, &pki, Some(&client(None, vec![uri("spiffe://keyward.test/ns/pay/sa/api")]))).await;
    assert_eq!(list_keys_as(&c, &anon).await.unwrap(), "by-uri");
    // The subject CN matches, because cert_common_names lists it.
    let c = channel(&addr, &pki, Some(&client(Some("cn-client"), vec![]))).await;
    assert_eq!(list_keys_as(&c, &anon).await.unwrap(), "by-cn");

    // A CN is not a DNS name, and a DNS SAN is not a URI.
    for (cn, sans) in [(Some("dns-client.example"), vec![]), (None, vec![dns("cn-client")])] {
        let c = channel(&addr, &pki, Some(&client(cn, sans))).await;
        let e = list_keys_as(&c, &anon).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
        assert!(e.message().contains("names no configured principal"), "{}", e.message());
    }

    // Without the clientAuth extended key usage the certificate is refused,
    // whatever it names, and the refusal is audited. (A certificate whose
    // extended key usages leave clientAuth out fails the TLS handshake
    // already; one without the extension gets this far.)
    {
        let c = channel(&addr, &pki, Some(&pki.client(None, vec![dns("dns-client.example")], vec![]))).await;
        let e = list_keys_as(&c, &anon).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
        assert!(e.message().contains("clientAuth extended key usage"), "{}", e.message());
        let r = newest(&anon).await;
        assert_eq!((r.principal.as_str(), r.outcome.as_str()), ("unauthenticated", "UNAUTHENTICATED"));
        assert!(r.reason.contains("clientAuth"), "{}", r.reason);
    }

    // One certificate naming two principals is refused, not resolved by order.
    for both in [
        client(None, vec![dns("dns-client.example"), uri("spiffe://keyward.test/ns/pay/sa/api")]),
        client(Some("cn-client"), vec![dns("dns-client.example")]),
    ] {
        let e = list_keys_as(&channel(&addr, &pki, Some(&both)).await, &anon).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("more than one configured principal"), "{}", e.message());
    }

    server.stop().await;
}

#[test]
fn a_name_claimed_by_two_principals_refuses_to_start_with_status_64() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    keyward::config::create_root_key_file(&root).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (a, b, needle) in [
        (
            r#"cert_dns_names = ["svc.example"]"#,
            r#"cert_dns_names = ["SVC.Example"]"#,
            r#"cert_dns_names "SVC.Example" is also claimed by principal "a""#,
        ),
        (
            r#"cert_uris = ["spiffe://t/x"]"#,
            r#"cert_uris = ["spiffe://t/x"]"#,
            r#"cert_uris "spiffe://t/x" is also claimed by principal "a""#,
        ),
        (r#"cert_names = ["svc"]"#, "", "cert_names is no longer accepted"),
    ] {
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\nroot_key_file = \"{root}\"\n\
             [[principals]]\nname = \"a\"\nroles = [\"admin\"]\n{a}\n\
             [[principals]]\nname = \"b\"\nroles = [\"admin\"]\n{b}\n",
            data = dir.path().join("data").display(),
            root = root.display(),
        );
        let config = dir.path().join("keyward.toml");
        std::fs::write(&config, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("server")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(64), "{err}");
        assert!(err.contains(needle), "{err:?} does not say {needle:?}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} is open");
        assert!(!dir.path().join("data").exists(), "the data folder was created");
    }
}
