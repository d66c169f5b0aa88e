//! The Vault Transit edge against the unmodified clients (hvac; SOPS with
//! --hc-vault-transit; tests/clients/), pointed at Keyward only by VAULT_ADDR
//! and VAULT_TOKEN, over a real server with RocksDB in a temporary folder;
//! and what it shares with the other edges: the Keyward ciphertext inside
//! `vault:v<N>:` (with associated_data as the encryption context), the
//! audit log (edge `vault-transit`), tokens revoked at once.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::clients::{self, free_port};
use common::TestServer;
use keyward::pb;
use keyward::pb::access_service_client::AccessServiceClient;
use keyward::{ServerConfig, VaultTransitConfig};

/// A development server with the Vault edge on a free loopback port.
async fn start(dir: &Path) -> (TestServer, String) {
    let port = free_port();
    let mut config = ServerConfig::dev(dir);
    config.vault_transit = Some(VaultTransitConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        mount: "transit".into(),
    });
    let s = TestServer::start_with(dir, config, None).await;
    clients::wait_for(port).await;
    (s, format!("http://127.0.0.1:{port}"))
}

/// A runtime principal with `roles` and a grant of every operation on
/// `keys`; a runtime token for it.
async fn principal(s: &TestServer, name: &str, roles: &[&str], keys: &[&str]) -> String {
    let mut access = AccessServiceClient::new(s.channel.clone());
    access
        .create_principal(pb::CreatePrincipalRequest {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
        .await
        .unwrap();
    if !keys.is_empty() {
        access
            .create_grant(pb::CreateGrantRequest {
                principal: name.into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                operations: vec!["*".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    access
        .create_token(pb::CreateTokenRequest { principal: name.into(), ttl: None })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// hvac (keys, config, rotation, min_decryption_version, batches,
/// associated data, data keys, random, bad token, a key without a grant,
/// unknown keys, Vault's upsert for an admin) and SOPS (encrypt, decrypt,
/// rotate, a bad token, an altered file, a key without a grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_vault_clients_run_their_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, addr) = start(dir.path()).await;
    s.create_key("alias/denied").await;
    s.create_key("alias/sops").await;
    // The first may manage keys and use any; the second only the sops key.
    let admin = principal(&s, "vault-admin", &["admin", "user"], &["*"]).await;
    let user = principal(&s, "vault-user", &["user"], &["alias/sops"]).await;
    let vars = vec![
        ("VAULT_ADDR", addr.clone()),
        ("VAULT_TOKEN", admin.clone()),
        ("KEYWARD_DENIED_KEY", "denied".to_string()),
        ("KEYWARD_DENIED_TOKEN", user.clone()),
    ];
    let out = clients::run_async("vault_hvac.py", home.path(), vars).await;
    assert!(out.contains("upsert"), "{out}");
    let vars = vec![
        ("VAULT_ADDR", addr.clone()),
        ("VAULT_TOKEN", user.clone()),
        ("KEYWARD_VAULT_KEY", "sops".to_string()),
        ("KEYWARD_DENIED_KEY", "denied".to_string()),
    ];
    clients::run_async("vault_sops.sh", home.path(), vars).await;

    let v = s.records(pb::QueryAuditLogRequest { edge: "vault-transit".into(), ..Default::default() }).await;
    assert!(v.len() > 40, "{} records", v.len());
    for (op, principal, outcome) in [
        ("CreateKey", "vault-admin", "OK"),
        ("Encrypt", "vault-admin", "OK"),
        ("Decrypt", "vault-user", "OK"),
        ("ReEncrypt", "vault-admin", "OK"),
        ("RotateKey", "vault-admin", "OK"),
        ("DisableKeyVersion", "vault-admin", "OK"),
        ("GenerateDataKey", "vault-admin", "OK"),
        ("GenerateDataKeyWithoutPlaintext", "vault-admin", "OK"),
        ("Encrypt", "vault-user", "PERMISSION_DENIED"),
        ("Encrypt", "unauthenticated", "UNAUTHENTICATED"),
        ("Decrypt", "vault-admin", "INVALID_ARGUMENT"),
    ] {
        assert!(
            v.iter().any(|r| r.operation == op && r.principal == principal && r.outcome == outcome),
            "no {op} {principal} {outcome} record"
        );
    }
    assert!(s.audit_count().await > 0);
    s.stop().await.unwrap();
}

/// The Keyward ciphertext inside `vault:v<N>:` decrypts through gRPC with
/// `{"associated_data": <as sent>}` (and with an empty context when none
/// was sent); N must be the version inside; a revoked token is refused by
/// the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_edge_shares_ciphertexts_audit_and_revocation_with_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, addr) = start(dir.path()).await;
    let key = s.create_key("alias/app").await;
    let token = principal(&s, "svc", &["user"], &["alias/app"]).await;
    let vars = vec![("VAULT_ADDR", addr.clone()), ("VAULT_TOKEN", token.clone())];
    let py = |code: &str| {
        let (code, home, vars) = (code.to_string(), home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(&code, &home, &vars))
    };
    let out = py("import hvac, base64\nc = hvac.Client()\n\
                  a = c.secrets.transit.encrypt_data(name='app', plaintext=base64.b64encode(b'with ad').decode(), associated_data='YWFk')\n\
                  b = c.secrets.transit.encrypt_data(name='app', plaintext=base64.b64encode(b'without').decode())\n\
                  print(a['data']['ciphertext'], b['data']['ciphertext'], a['request_id'])")
    .await
    .unwrap()
    .unwrap();
    let parts: Vec<&str> = out.split_whitespace().collect();
    let [with_ad, without, request_id] = parts[..] else { panic!("{out}") };
    let inner = |v: &str| {
        let rest = v.strip_prefix("vault:v1:").unwrap_or_else(|| panic!("{v}"));
        base64::engine::general_purpose::STANDARD.decode(rest).unwrap()
    };
    let decrypt = |ct: Vec<u8>, ctx: &[(&str, &str)]| {
        let mut c = s.crypto();
        let req =
            pb::DecryptRequest { ciphertext: ct, encryption_context: common::ctx(ctx), ..Default::default() };
        async move { c.decrypt(req).await }
    };
    let p = decrypt(inner(with_ad), &[("associated_data", "YWFk")]).await.unwrap().into_inner();
    assert_eq!((p.plaintext.as_slice(), p.key_id.as_str()), (b"with ad".as_slice(), key.as_str()));
    assert!(decrypt(inner(with_ad), &[]).await.is_err(), "the associated data is bound");
    assert_eq!(decrypt(inner(without), &[]).await.unwrap().into_inner().plaintext, b"without");

    // The record of that encrypt: the response's request id, the edge, the principal.
    let rec =
        s.records(pb::QueryAuditLogRequest { edge: "vault-transit".into(), ..Default::default() }).await;
    let r = rec.iter().find(|r| r.request_id == request_id).expect("the encrypt's record");
    assert_eq!(
        (r.operation.as_str(), r.principal.as_str(), r.alias.as_str()),
        ("Encrypt", "svc", "alias/app")
    );
    assert_eq!(r.encryption_context, common::ctx(&[("associated_data", "YWFk")]));

    // The version prefix must be the version inside.
    let forged = with_ad.replacen("vault:v1:", "vault:v2:", 1);
    let code = format!(
        "import hvac\nc = hvac.Client()\ntry:\n    c.secrets.transit.decrypt_data(name='app', ciphertext='{forged}', associated_data='YWFk')\n\
         except hvac.exceptions.InvalidRequest as e:\n    print('refused', e.errors)\n"
    );
    let out = py(&code).await.unwrap().unwrap();
    assert!(out.starts_with("refused") && out.contains("version"), "{out}");

    // A gRPC ciphertext is a Vault ciphertext once prefixed.
    let ct = s
        .crypto()
        .encrypt(pb::EncryptRequest {
            key_id: key.clone(),
            plaintext: b"from grpc".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let code = format!(
        "import hvac, base64\nc = hvac.Client()\n\
         print(base64.b64decode(c.secrets.transit.decrypt_data(name='app', ciphertext='vault:v1:{}')['data']['plaintext']).decode())",
        base64::engine::general_purpose::STANDARD.encode(&ct)
    );
    assert_eq!(py(&code).await.unwrap().unwrap().trim(), "from grpc");

    // lookup-self: who the token is and how long it lives (never the token).
    let out = py("import hvac\nd = hvac.Client().auth.token.lookup_self()['data']\n\
                  print(d['display_name'], d['ttl'] > 3000, d['expire_time'][:2], d['policies'], len(d['accessor']))")
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.trim(), "svc True 20 ['user'] 36", "{out}");
    assert!(!out.contains(&token[37..]), "the secret never comes back");

    // Revoked: the next request is refused 403, audited.
    let mut access = AccessServiceClient::new(s.channel.clone());
    access.revoke_all_tokens(pb::RevokeAllTokensRequest { principal: "svc".into() }).await.unwrap();
    let code = "import hvac\nc = hvac.Client()\nprint(c.is_authenticated())\ntry:\n    c.secrets.transit.encrypt_data(name='app', plaintext='eA==')\n\
                except hvac.exceptions.Forbidden as e:\n    print('forbidden', e.errors)\n";
    let out = py(code).await.unwrap().unwrap();
    assert_eq!(out.trim(), "False\nforbidden ['permission denied']");
    s.stop().await.unwrap();
}

/// Bad input from an authenticated client (bad JSON, wrong types, an
/// oversized body) gets Vault's error shape and loses nothing; the global
/// rate limit applies to the HTTP edges as to gRPC (429, audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_the_rate_limit_on_the_vault_edge() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, addr) = start(dir.path()).await;
    // Before any key: LIST is 404 with no message, as in Vault.
    let lister = principal(&s, "lister", &["admin"], &[]).await;
    let code = "import os, requests\n\
                r = requests.request('LIST', os.environ['VAULT_ADDR'] + '/v1/transit/keys', headers={'X-Vault-Token': os.environ['VAULT_TOKEN']})\n\
                print(r.status_code, r.json())\n";
    let vars = vec![("VAULT_ADDR", addr.clone()), ("VAULT_TOKEN", lister)];
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    assert_eq!(out.trim(), "404 {'errors': []}");
    s.create_key("alias/app").await;
    let token = principal(&s, "svc", &["user"], &["alias/app"]).await;
    let vars = vec![("VAULT_ADDR", addr.clone()), ("VAULT_TOKEN", token.clone())];
    let code = "import os, requests\n\
                u = os.environ['VAULT_ADDR'] + '/v1/transit/encrypt/app'\n\
                h = {'X-Vault-Token': os.environ['VAULT_TOKEN']}\n\
                for body in [b'{not json', b'[1]', b'{\"plaintext\": 5}', b'{\"plaintext\": \"!!\"}', b'{}', b'{\"batch_input\": 7}', b'{\"batch_input\": []}', b'{' + b' ' * (2 << 20) + b'}']:\n\
                \x20   r = requests.put(u, data=body, headers=h)\n\
                \x20   print(r.status_code, r.headers['content-type'], bool(r.json()['errors']))\n\
                r = requests.put(u, json={'plaintext': 'eA=='}, headers=h)\n\
                print(r.status_code, r.json()['data']['ciphertext'][:9])\n";
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    for l in &lines[..7] {
        assert_eq!(*l, "400 application/json True", "{out}");
    }
    assert_eq!(lines[7], "413 application/json True", "{out}");
    assert_eq!(lines[8], "200 vault:v1:", "still serving: {out}");
    s.stop().await.unwrap();

    // The same data folder again, now allowing 1 request a second (burst 2):
    // of six requests at once, some are refused 429.
    let port = free_port();
    let mut config = ServerConfig::dev(dir.path());
    config.vault_transit = Some(VaultTransitConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        mount: "transit".into(),
    });
    config.edge.rate = Some((1.0, 2.0));
    let s = TestServer::start_with(dir.path(), config, None).await;
    clients::wait_for(port).await;
    let vars = vec![("VAULT_ADDR", format!("http://127.0.0.1:{port}")), ("VAULT_TOKEN", token)];
    let code = "import os, requests\n\
                u = os.environ['VAULT_ADDR'] + '/v1/transit/encrypt/app'\n\
                h = {'X-Vault-Token': os.environ['VAULT_TOKEN']}\n\
                print(' '.join(str(requests.put(u, json={'plaintext': 'eA=='}, headers=h).status_code) for _ in range(6)))\n";
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    assert!(out.contains("429"), "{out}");
    // The query is a request too: let the bucket fill again first.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let limited = s
        .records(pb::QueryAuditLogRequest {
            edge: "vault-transit".into(),
            outcome: "RESOURCE_EXHAUSTED".into(),
            ..Default::default()
        })
        .await;
    assert!(!limited.is_empty(), "rate-limited requests are audited");
    s.stop().await.unwrap();
}

/// What the Vault edge's review found, each now held: a batch against a
/// key the caller cannot use is one record, not one per item; malformed
/// items are one record per batch; `min_decryption_version` never enables a
/// version an operator disabled; refused token checks on lookup-self are
/// audited, naming the token; response wrapping is refused, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cost_one_record_per_key_failure_and_operator_choices_stand() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (s, addr) = start(dir.path()).await;
    let key = s.create_key("alias/app").await;
    s.create_key("alias/other").await;
    let token = principal(&s, "svc", &["user"], &["alias/app"]).await;
    let admin = principal(&s, "ops", &["admin", "user"], &["*"]).await;
    let vars = vec![("VAULT_ADDR", addr.clone()), ("VAULT_TOKEN", token.clone()), ("ADMIN", admin.clone())];
    let count = |principal: &'static str| {
        let s = &s;
        async move {
            s.records(pb::QueryAuditLogRequest { principal: principal.into(), ..Default::default() })
                .await
                .len()
        }
    };
    let before = count("svc").await;
    let code = "import os, requests\n\
                a = os.environ['VAULT_ADDR']; h = {'X-Vault-Token': os.environ['VAULT_TOKEN']}\n\
                items = [{'plaintext': 'eA=='}] * 1000\n\
                for path in ['encrypt/nosuchkey', 'encrypt/other']:\n\
                \x20   r = requests.post(a + '/v1/transit/' + path, json={'batch_input': items}, headers=h)\n\
                \x20   print(r.status_code, len(r.json()['data']['batch_results']))\n\
                r = requests.post(a + '/v1/transit/encrypt/app', json={'batch_input': [{'plaintext': '!'}] * 1000}, headers=h)\n\
                print(r.status_code, len(r.json()['data']['batch_results']))\n\
                r = requests.post(a + '/v1/transit/encrypt/app', json={'batch_input': [{'plaintext': 'eA=='}, {'plaintext': '!'}], 'partial_failure_response_code': 207}, headers=h)\n\
                print(r.status_code, [bool(x.get('error')) for x in r.json()['data']['batch_results']])\n\
                r = requests.post(a + '/v1/transit/datakey/plaintext/app', json={}, headers=dict(h, **{'X-Vault-Wrap-TTL': '60s'}))\n\
                print(r.status_code, r.json()['errors'][0][:17])\n\
                bad = 'kwt_' + os.environ['VAULT_TOKEN'][4:36] + '_' + '0' * 64\n\
                print(requests.get(a + '/v1/auth/token/lookup-self', headers={'X-Vault-Token': bad}).status_code)\n\
                print(requests.get(a + '/v1/sys/seal-status').json()['sealed'])\n";
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    assert_eq!(
        out, "400 1000\n400 1000\n400 1000\n207 [False, True]\n400 response wrapping\n403\nFalse\n",
        "{out}"
    );
    // Three batches of 1000: one record each (the unknown key, the key
    // without a grant, the malformed items), not 3000.
    let after = count("svc").await;
    assert!(after - before <= 6, "{} records for three refused batches and a partial one", after - before);
    let lookups =
        s.records(pb::QueryAuditLogRequest { operation: "LookupToken".into(), ..Default::default() }).await;
    assert!(
        lookups.iter().any(|r| r.outcome == "UNAUTHENTICATED" && r.edge == "vault-transit"),
        "{lookups:?}"
    );

    // An operator disables version 2; re-applying min_decryption_version 1
    // through Vault does not enable it again.
    let mut keys = s.keys();
    keys.rotate_key(pb::RotateKeyRequest { key_id: key.clone() }).await.unwrap();
    keys.rotate_key(pb::RotateKeyRequest { key_id: key.clone() }).await.unwrap();
    keys.disable_key_version(pb::DisableKeyVersionRequest { key_id: key.clone(), version: 2 }).await.unwrap();
    let code = "import os, requests\n\
                a = os.environ['VAULT_ADDR']; h = {'X-Vault-Token': os.environ['ADMIN']}\n\
                for m in [1, 3, 1]:\n\
                \x20   r = requests.post(a + '/v1/transit/keys/app/config', json={'min_decryption_version': m}, headers=h)\n\
                \x20   d = r.json()['data']\n\
                \x20   print(r.status_code, d['min_decryption_version'], sorted(d['keys']))\n";
    let out = {
        let (home, vars) = (home.path().to_path_buf(), vars.clone());
        tokio::task::spawn_blocking(move || clients::python(code, &home, &vars)).await.unwrap().unwrap()
    };
    assert_eq!(out, "200 1 ['1', '3']\n200 3 ['3']\n200 1 ['1', '3']\n", "{out}");
    let versions = keys
        .list_key_versions(pb::ListKeyVersionsRequest { key_id: key.clone() })
        .await
        .unwrap()
        .into_inner();
    let v2 = versions.versions[1].metadata.unwrap();
    assert_eq!((v2.version, v2.state()), (2, pb::KeyVersionState::Disabled), "the operator's choice stands");
    s.stop().await.unwrap();
}
