//! The AWS KMS edge against the unmodified clients (boto3, aws-cli, the AWS
//! Encryption SDK, SOPS; tests/clients/), each pointed at Keyward only by
//! AWS_ENDPOINT_URL_KMS and the usual credential variables, over a real
//! server with RocksDB in a temporary folder; and what the edge shares with
//! the others: one ciphertext format, the audit log (edge `aws-kms`, the
//! response's request id), access keys revoked at once.

mod common;

use std::path::Path;

use common::clients::{self, free_port};
use common::TestServer;
use keyward::pb;
use keyward::pb::access_service_client::AccessServiceClient;
use keyward::{AwsKmsConfig, ServerConfig};

const REGION: &str = "keyward-1";
const ACCOUNT: &str = "111122223333";

fn arn(id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{id}")
}

/// A development server with the AWS edge on a free loopback port.
async fn start(dir: &Path) -> (TestServer, String) {
    let port = free_port();
    let mut config = ServerConfig::dev(dir);
    config.aws_kms = Some(AwsKmsConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        region: REGION.into(),
        account_id: ACCOUNT.into(),
    });
    let s = TestServer::start_with(dir, config, None).await;
    clients::wait_for(port).await;
    (s, format!("http://127.0.0.1:{port}"))
}

/// A key with an alias and labels; its id.
async fn key(s: &TestServer, alias: &str, labels: &[(&str, &str)]) -> String {
    s.keys()
        .create_key(pb::CreateKeyRequest {
            alias: alias.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

/// A runtime principal with `roles`, a grant of `operations` on `keys`, and
/// an access key: (id, secret).
async fn principal(
    s: &TestServer,
    name: &str,
    roles: &[&str],
    keys: &[&str],
    ops: &[&str],
) -> (String, String) {
    let mut access = AccessServiceClient::new(s.channel.clone());
    access
        .create_principal(pb::CreatePrincipalRequest {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
        .await
        .unwrap();
    access
        .create_grant(pb::CreateGrantRequest {
            principal: name.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            operations: ops.iter().map(|o| o.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let k = access
        .create_access_key(pb::CreateAccessKeyRequest { principal: name.into() })
        .await
        .unwrap()
        .into_inner();
    (k.info.unwrap().access_key_id, k.secret_access_key)
}

fn aws_env(endpoint: &str, (akid, secret): &(String, String)) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_KMS", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", akid.clone()),
        ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// Every client's scenario: boto3 (success paths in all four key-id forms,
/// contexts, data keys, rotation, disable, deletion, tags, a key without a
/// grant, unknown keys), bad credentials, the Encryption SDK in strict mode
/// with a 1 MiB message, aws-cli, SOPS with --kms, and malformed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_aws_clients_run_their_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, endpoint) = start(dir.path()).await;
    let app = key(&s, "alias/app", &[("team", "e2e")]).await;
    let other = key(&s, "alias/other", &[]).await;
    // May manage keys and use the ones labelled team=e2e (the scripts label
    // the keys they create so), but not `other`.
    let creds = principal(&s, "ci-app", &["admin", "user"], &["label:team=e2e"], &["*"]).await;
    let mut vars = aws_env(&endpoint, &creds);
    vars.extend([
        ("KEYWARD_KEY_ARN", arn(&app)),
        ("KEYWARD_KEY_ALIAS", "alias/app".to_string()),
        ("KEYWARD_OTHER_KEY_ARN", arn(&other)),
    ]);
    let mut admin = vars.clone();
    admin.push(("KEYWARD_ADMIN", "1".into()));
    let out = clients::run_async("aws_boto3.py", home.path(), admin).await;
    assert!(out.contains("CancelKeyDeletion leaves the key Disabled"), "{out}");
    for script in
        ["aws_bad_credentials.py", "aws_esdk_strict.py", "aws_bad_input.py", "aws_cli.sh", "sops_kms.sh"]
    {
        clients::run_async(script, home.path(), vars.clone()).await;
    }

    // Everything came through the AWS edge, as ci-app (refusals as
    // unauthenticated), into one intact chain.
    let aws = s.records(pb::QueryAuditLogRequest { edge: "aws-kms".into(), ..Default::default() }).await;
    assert!(aws.len() > 100, "{} records", aws.len());
    assert!(aws.iter().all(|r| r.principal == "ci-app" || r.principal == "unauthenticated"));
    for (op, outcome) in [
        ("Encrypt", "OK"),
        ("Decrypt", "OK"),
        ("GenerateDataKey", "OK"),
        ("Encrypt", "PERMISSION_DENIED"),
        ("Decrypt", "INVALID_ARGUMENT"),
        ("Encrypt", "UNAUTHENTICATED"),
        ("RotateKey", "OK"),
        ("UpdateKeyLabels", "OK"),
        ("UpdateAlias", "OK"),
    ] {
        assert!(aws.iter().any(|r| r.operation == op && r.outcome == outcome), "no {op} {outcome} record");
    }
    assert!(s.audit_count().await > 0);
    s.stop().await.unwrap();
}

/// One ciphertext format across edges; the response's request id is its
/// audit record's; a revoked access key is refused by the very next
/// request; a deleted grant too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_edge_shares_ciphertexts_audit_and_revocation_with_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, endpoint) = start(dir.path()).await;
    let app = key(&s, "alias/app", &[]).await;
    let creds = principal(&s, "svc", &["user"], &[&app], &["encrypt", "decrypt"]).await;
    let vars = aws_env(&endpoint, &creds);

    // boto3 encrypts; gRPC decrypts with the same context.
    let code = "import boto3, base64\nk = boto3.client('kms')\n\
         r = k.encrypt(KeyId='alias/app', Plaintext=b'across edges', EncryptionContext={'tenant': 'acme'})\n\
         print(base64.b64encode(r['CiphertextBlob']).decode(), r['ResponseMetadata']['RequestId'], r['KeyId'])"
        .to_string();
    let out = {
        let (code, home, vars) = (code.clone(), home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(&code, &home, &vars)).await.unwrap().unwrap()
    };
    let parts: Vec<&str> = out.split_whitespace().collect();
    let [ct, request_id, key_arn] = parts[..] else { panic!("{out}") };
    assert_eq!(key_arn, arn(&app));
    use base64::Engine as _;
    let ct = base64::engine::general_purpose::STANDARD.decode(ct).unwrap();
    let plain = s
        .crypto()
        .decrypt(pb::DecryptRequest {
            ciphertext: ct,
            encryption_context: common::ctx(&[("tenant", "acme")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext, b"across edges");

    // The response's x-amzn-RequestId is the id of its audit record.
    let rec = s.records(pb::QueryAuditLogRequest { edge: "aws-kms".into(), ..Default::default() }).await;
    let r = rec.iter().find(|r| r.request_id == request_id).expect("the Encrypt's record");
    assert_eq!((r.operation.as_str(), r.principal.as_str(), r.edge.as_str()), ("Encrypt", "svc", "aws-kms"));
    assert_eq!(r.key_id, app);
    assert_eq!(r.alias, "alias/app");

    // gRPC encrypts; boto3 decrypts.
    let ct = s
        .crypto()
        .encrypt(pb::EncryptRequest {
            key_id: app.clone(),
            plaintext: b"the other way".to_vec(),
            encryption_context: common::ctx(&[("k", "v")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let code = format!(
        "import boto3, base64\nk = boto3.client('kms')\n\
         print(k.decrypt(CiphertextBlob=base64.b64decode('{}'), EncryptionContext={{'k': 'v'}})['Plaintext'].decode())",
        base64::engine::general_purpose::STANDARD.encode(&ct)
    );
    let py = |code: String| {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(&code, &home, &vars))
    };
    assert_eq!(py(code).await.unwrap().unwrap().trim(), "the other way");

    // Revoked: the very next request is refused, and the refusal is audited.
    let mut access = AccessServiceClient::new(s.channel.clone());
    access.revoke_access_key(pb::RevokeAccessKeyRequest { access_key_id: creds.0.clone() }).await.unwrap();
    let code = "import boto3\nfrom botocore.exceptions import ClientError\n\
                try:\n    boto3.client('kms').encrypt(KeyId='alias/app', Plaintext=b'x')\n\
                except ClientError as e:\n    print(e.response['Error']['Code'])\n"
        .to_string();
    assert_eq!(py(code).await.unwrap().unwrap().trim(), "UnrecognizedClientException");
    let refused = s
        .records(pb::QueryAuditLogRequest {
            edge: "aws-kms".into(),
            outcome: "UNAUTHENTICATED".into(),
            ..Default::default()
        })
        .await;
    // The record names the revoked access key still in use.
    let named = format!("access_key:{}", creds.0);
    assert!(
        refused
            .iter()
            .any(|r| r.operation == "Encrypt" && r.principal == "unauthenticated" && r.target == named),
        "{refused:?}"
    );
    let listed = access.list_access_keys(pb::ListAccessKeysRequest::default()).await.unwrap().into_inner();
    assert!(listed.access_keys.is_empty());
    s.stop().await.unwrap();
}

/// A request as raw bytes, signed with an access key id nobody has.
fn unknown_key_request(port: u16) -> String {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=KWAKAAAAAAAAAAAAAAAA/20261202/{REGION}/kms/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
        "0".repeat(64)
    );
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.Encrypt\r\nX-Amz-Date: 20261202T000000Z\r\nAuthorization: {auth}\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    )
}

/// A client that sends a request and goes away at once does not cancel it
/// half done: each refusal is still audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_lose_the_audit_record() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (s, endpoint) = start(dir.path()).await;
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    // Each sends its request and half-closes (no more to say, no wait for
    // the answer), as a client that gives up does.
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(unknown_key_request(port).as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        open.push(c);
    }
    let filter = || pb::QueryAuditLogRequest {
        edge: "aws-kms".into(),
        outcome: "UNAUTHENTICATED".into(),
        ..Default::default()
    };
    let mut seen = 0;
    for _ in 0..100 {
        seen = s.records(filter()).await.len();
        if seen >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 5, "every refusal is recorded, hung up or not");
    drop(open);
    s.stop().await.unwrap();
}

/// One address cannot hold every connection of the edge: past 64, a new
/// one is closed at once; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (s, endpoint) = start(dir.path()).await;
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    // 64 connections that send half a request and stall.
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{").await.unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The 65th is closed without an answer (read returns end of stream).
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = extra.write_all(unknown_key_request(port).as_bytes()).await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), extra.read_to_end(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once, got {:?} {:?}",
        n,
        String::from_utf8_lossy(&buf)
    );
    // Once they go, the same address is served again.
    drop(stalled);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(unknown_key_request(port).as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    s.stop().await.unwrap();
}

/// The global rate limit applies to the AWS edge as to gRPC: past it, a
/// request gets `ThrottlingException` (400), audited as RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_applies_to_the_aws_edge() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // Set up without a limit, then serve the same data folder with one.
    let (s, _) = start(dir.path()).await;
    let app = key(&s, "alias/app", &[]).await;
    let creds = principal(&s, "svc", &["user"], &[&app], &["encrypt"]).await;
    s.stop().await.unwrap();
    let port = free_port();
    let mut config = ServerConfig::dev(dir.path());
    config.aws_kms = Some(AwsKmsConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        region: REGION.into(),
        account_id: ACCOUNT.into(),
    });
    config.edge.rate = Some((1.0, 2.0));
    let s = TestServer::start_with(dir.path(), config, None).await;
    clients::wait_for(port).await;
    let vars = aws_env(&format!("http://127.0.0.1:{port}"), &creds);
    let code = "import boto3\nfrom botocore.config import Config\nfrom botocore.exceptions import ClientError\n\
                k = boto3.client('kms', config=Config(retries={'max_attempts': 1, 'mode': 'standard'}))\n\
                out = []\nfor _ in range(6):\n    try:\n        k.encrypt(KeyId='alias/app', Plaintext=b'x')\n        out.append('ok')\n\
                \x20   except ClientError as e:\n        out.append(e.response['Error']['Code'] + ':' + str(e.response['ResponseMetadata']['HTTPStatusCode']))\n\
                print(' '.join(out))\n";
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    assert!(out.contains("ok") && out.contains("ThrottlingException:400"), "{out}");
    // The query is a request too: let the bucket fill again first.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let limited = s
        .records(pb::QueryAuditLogRequest {
            edge: "aws-kms".into(),
            outcome: "RESOURCE_EXHAUSTED".into(),
            ..Default::default()
        })
        .await;
    assert!(!limited.is_empty(), "throttled requests are audited");
    s.stop().await.unwrap();
}
