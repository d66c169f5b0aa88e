//! Each Vault Transit endpoint as calls of the `Kms` use cases: key `<name>`
//! is alias `alias/<name>`, a ciphertext is `vault:v<N>:<base64 of the
//! Keyward ciphertext>`, `associated_data` is the encryption context
//! `{"associated_data": <the base64 text as sent>}`. Batches
//! (`batch_input`) are one use-case call per item, answered as
//! `batch_results`; a batch with a failed item answers 400 with them all.
//! Errors found here, before a use case runs, are audited through
//! `Kms::refuse`.

use std::collections::HashMap;

use base64::Engine as _;
use keyward_core::{
    Caller, CreateKeyInput, DataKeyInput, KeyState, KeyView, Kms, KmsError, Operation, ReEncryptInput,
    VersionState, MAX_BATCH_ITEMS,
};
use keyward_crypto::{CiphertextHeader, Plaintext};
use serde_json::{json, Map, Value};

use super::{Route, VaultError};

const DAY_S: i64 = 86_400;
/// `min_decryption_version` etc. are kept as Keyward state; `deletion_allowed`
/// has no Keyward meaning and is kept as this label.
const DELETION_ALLOWED: &str = "vault-transit.deletion_allowed";
/// The `min_decryption_version` the edge applied.
const MIN_DECRYPTION: &str = "vault-transit.min_decryption_version";
/// The versions the edge disabled for it, as ranges (`1-4,7`): the only
/// ones it enables again when the minimum goes down.
const EDGE_DISABLED: &str = "vault-transit.disabled_versions";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(field: &'static str, s: &str) -> Result<Vec<u8>, KmsError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| KmsError::invalid(field, "is not valid base64"))
}

fn alias(name: &str) -> String {
    format!("alias/{name}")
}

/// Why an endpoint failed: already audited by the use case, or found here.
enum Failure {
    Audited(KmsError),
    Edge(KmsError),
    /// A batch with failed items: 400 (or the caller's
    /// `partial_failure_response_code` when some succeeded) with every item's result.
    Batch(Vec<Value>, Option<u16>),
    /// A key read that found nothing (already audited): 404, no message.
    Missing,
}

impl From<KmsError> for Failure {
    fn from(e: KmsError) -> Self {
        Self::Edge(e)
    }
}

fn audited<T>(r: Result<T, KmsError>) -> Result<T, Failure> {
    r.map_err(Failure::Audited)
}

/// The fields of a request (or of one batch item).
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, f: &str) -> Option<&Value> {
        self.0.get(f).filter(|v| !v.is_null())
    }

    fn str(&self, f: &'static str) -> Result<Option<&str>, KmsError> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(KmsError::invalid(f, "must be a string")),
        }
    }

    fn required(&self, f: &'static str) -> Result<&str, KmsError> {
        self.str(f)?.ok_or_else(|| KmsError::invalid(f, "missing required field"))
    }

    /// An integer, given as a number or a string (Vault accepts both).
    fn int(&self, f: &'static str) -> Result<Option<i64>, KmsError> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| KmsError::invalid(f, "must be an integer"))
            }
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                s.parse().map(Some).map_err(|_| KmsError::invalid(f, "must be an integer"))
            }
            Some(_) => Err(KmsError::invalid(f, "must be an integer")),
        }
    }

    fn bool(&self, f: &'static str) -> Result<Option<bool>, KmsError> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Vault parses strings as Go's strconv.ParseBool does.
            Some(Value::String(s)) => match s.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
                _ => Err(KmsError::invalid(f, "must be true or false")),
            },
            Some(_) => Err(KmsError::invalid(f, "must be true or false")),
        }
    }

    /// The encryption context of `associated_data` (as sent), or none.
    fn context(&self) -> Result<HashMap<String, String>, KmsError> {
        if self.str("context")?.is_some_and(|s| !s.is_empty()) {
            return Err(KmsError::invalid(
                "context",
                "key derivation (derived keys) is not supported; use associated_data",
            ));
        }
        if self.str("nonce")?.is_some_and(|s| !s.is_empty()) {
            return Err(KmsError::invalid("nonce", "caller-chosen nonces are not supported"));
        }
        Ok(match self.str("associated_data")? {
            Some(ad) if !ad.is_empty() => {
                unb64("associated_data", ad)?;
                HashMap::from([("associated_data".to_string(), ad.to_string())])
            }
            _ => HashMap::new(),
        })
    }

    /// A `vault:v<N>:<base64>` ciphertext: the Keyward ciphertext, whose
    /// version must be N.
    fn ciphertext(&self) -> Result<Vec<u8>, KmsError> {
        let s = self.required("ciphertext")?;
        let bad = || KmsError::invalid("ciphertext", "must be vault:v<N>:<base64>");
        let rest = s.strip_prefix("vault:v").ok_or_else(bad)?;
        let (n, body) = rest.split_once(':').ok_or_else(bad)?;
        if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = n.parse().map_err(|_| bad())?;
        if body.len() > 16 * 1024 {
            return Err(KmsError::invalid("ciphertext", "is too long"));
        }
        let ct = unb64("ciphertext", body)?;
        let header = CiphertextHeader::parse(&ct)
            .map_err(|_| KmsError::invalid("ciphertext", "is not a Keyward ciphertext"))?;
        if header.version != n {
            return Err(KmsError::invalid(
                "ciphertext",
                format!("names version {n}, but the ciphertext is of version {}", header.version),
            ));
        }
        Ok(ct)
    }
}

fn vault_ciphertext(ct: &[u8], version: u32) -> String {
    format!("vault:v{version}:{}", b64(ct))
}

/// The `sys/health` answer (not audited: it touches no key).
pub(super) fn health(seal: &crate::seal::SealState) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({
        "initialized": true,
        "sealed": seal.sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": env!("CARGO_PKG_VERSION"),
        "cluster_name": "keyward",
    })
}

/// `sys/seal-status`, as `vault status` reads it (unsealing goes through
/// `keyward operator unseal`, not this API).
pub(super) fn seal_status(seal: &crate::seal::SealState) -> Value {
    json!({
        "type": seal.kind,
        "initialized": true,
        "sealed": seal.sealed,
        "t": seal.threshold,
        "n": seal.shares,
        "progress": seal.progress,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": "keyward",
        "cluster_name": "keyward",
    })
}

/// `auth/token/lookup-self`: who the token stands for (never the token),
/// and for a runtime token when it was made and when it stops working
/// (`ttl` in seconds; configured tokens and JWTs: 0 and null, no expiry here).
pub(super) fn lookup_self(caller: &Caller, runtime: Option<&keyward_core::TokenIdentity>) -> Value {
    let roles: Vec<&str> = caller.policy.roles().iter().map(|r| r.as_str()).collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let rfc3339 = |ms: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let (accessor, created, ttl, creation_ttl, expire, issue) = match runtime {
        Some(t) => (
            t.token.to_string(),
            t.created_ms / 1000,
            (t.expires_ms - now_ms).max(0) / 1000,
            (t.expires_ms - t.created_ms).max(0) / 1000,
            json!(rfc3339(t.expires_ms)),
            json!(rfc3339(t.created_ms)),
        ),
        None => (String::new(), 0, 0, 0, Value::Null, Value::Null),
    };
    json!({
        "accessor": accessor,
        "creation_time": created,
        "creation_ttl": creation_ttl,
        "display_name": caller.principal,
        "entity_id": "",
        "expire_time": expire,
        "explicit_max_ttl": 0,
        "issue_time": issue,
        "meta": { "principal": caller.principal },
        "policies": roles,
        "path": "auth/token/create",
        "renewable": false,
        "ttl": ttl,
        "type": "service",
        "orphan": true,
        "num_uses": 0,
    })
}

/// Runs one endpoint.
pub(super) async fn run(
    kms: &Kms,
    caller: &Caller,
    route: Route,
    op: Operation,
    body: Value,
) -> Result<(u16, Value), VaultError> {
    let empty = Map::new();
    let map = body.as_object().unwrap_or(&empty);
    let key = route.key_name().map(alias);
    let o = Ops { kms, caller };
    let result = match route {
        Route::ListKeys => o.list_keys().await,
        Route::CreateKey(n) => o.create_key(&n, Fields(map)).await,
        Route::ReadKey(n) => o.read_key(&n).await,
        Route::ConfigKey(n) => o.config_key(&n, Fields(map)).await,
        Route::RotateKey(n) => match audited(kms.rotate_key(caller, &alias(&n)).await) {
            Ok(v) => Ok(o.key_data(&n, &v)),
            Err(e) => Err(e),
        },
        Route::Encrypt(n) => o.batch(map, op, &alias(&n), |f| o.encrypt(n.clone(), f)).await,
        Route::Decrypt(n) => o.batch(map, op, &alias(&n), |f| o.decrypt(n.clone(), f)).await,
        Route::Rewrap(n) => o.batch(map, op, &alias(&n), |f| o.rewrap(n.clone(), f)).await,
        Route::DataKey { plaintext, name } => o.data_key(&name, plaintext, Fields(map)).await,
        Route::Random(bytes) => o.random(bytes, Fields(map)).await,
        Route::Health | Route::SealStatus | Route::LookupSelf => {
            Err(Failure::Edge(KmsError::Internal("routed elsewhere".into())))
        }
    };
    match result {
        Ok(v) => Ok((200, v)),
        Err(Failure::Audited(e)) => Err(VaultError::of(&e)),
        Err(Failure::Missing) => Err(VaultError { status: 404, errors: Vec::new() }),
        // Recorded naming the key the request named, when it resolves.
        Err(Failure::Edge(e)) => Err(VaultError::of(&match &key {
            Some(k) => kms.refuse_key(caller, op, k, e).await,
            None => kms.refuse(caller, op, e).await,
        })),
        // As Vault: the whole envelope, every item's result, status 400.
        Err(Failure::Batch(results, partial)) => {
            Ok((partial.unwrap_or(400), json!({ "batch_results": results })))
        }
    }
}

struct Ops<'a> {
    kms: &'a Kms,
    caller: &'a Caller,
}

impl Ops<'_> {
    /// A key as Vault shows it (`keys/:name`).
    fn key_data(&self, name: &str, v: &KeyView) -> Value {
        let m = &v.meta;
        let min = min_decryption_version(v);
        let keys: Map<String, Value> = m
            .versions
            .iter()
            .filter(|x| x.version >= min && x.state == VersionState::Enabled)
            .map(|x| (x.version.to_string(), json!(x.created_ms / 1000)))
            .collect();
        json!({
            "name": name,
            "type": "aes256-gcm96",
            "keys": keys,
            "latest_version": m.primary_version,
            "min_available_version": 0,
            "min_decryption_version": min,
            "min_encryption_version": 0,
            "deletion_allowed": m.labels.get(DELETION_ALLOWED).is_some_and(|v| v == "true"),
            "derived": false,
            "exportable": false,
            "allow_plaintext_backup": false,
            "supports_encryption": m.state == KeyState::Enabled,
            "supports_decryption": m.state == KeyState::Enabled,
            "supports_derivation": false,
            "supports_signing": false,
            "imported_key": false,
            "auto_rotate_period": m.rotation.period_ms.map_or(0, |p| p / 1000),
            "keyward_key_id": m.id.to_string(),
        })
    }

    async fn list_keys(&self) -> Result<Value, Failure> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = audited(self.kms.list_keys(self.caller, Some(1000), token.as_deref()).await)?;
            for k in page.keys {
                names.extend(
                    k.aliases
                        .iter()
                        .filter_map(|a| a.strip_prefix("alias/"))
                        .filter(|n| !n.contains('/'))
                        .map(str::to_string),
                );
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        names.sort();
        if names.is_empty() {
            // As Vault: an empty list is 404 with no message.
            return Err(Failure::Missing);
        }
        Ok(json!({ "keys": names }))
    }

    async fn create_key(&self, name: &str, f: Fields<'_>) -> Result<Value, Failure> {
        if let Some(t) = f.str("type")? {
            if t != "aes256-gcm96" {
                return Err(
                    KmsError::invalid("type", format!("{t:?} is not supported (only aes256-gcm96)")).into()
                );
            }
        }
        for flag in ["derived", "convergent_encryption", "exportable", "allow_plaintext_backup"] {
            if f.bool(flag)? == Some(true) {
                return Err(KmsError::invalid("type", format!("{flag} keys are not supported")).into());
            }
        }
        let rotation = match f.get("auto_rotate_period") {
            Some(p) => period(p)?,
            None => None,
        };
        let input = CreateKeyInput {
            alias: Some(alias(name)),
            description: format!("Vault Transit key {name}"),
            rotation: keyward_core::RotationInput { period_ms: rotation, ..Default::default() },
            ..Default::default()
        };
        match self.kms.create_key(self.caller, input).await {
            Ok(v) => Ok(self.key_data(name, &v)),
            // Creating a key that exists changes nothing, as in Vault.
            Err(KmsError::AlreadyExists(_)) => self.read_key(name).await,
            Err(e) => Err(Failure::Audited(e)),
        }
    }

    async fn read_key(&self, name: &str) -> Result<Value, Failure> {
        match self.kms.describe_key(self.caller, &alias(name)).await {
            Ok(v) => Ok(self.key_data(name, &v)),
            // As Vault: an unknown key reads as 404 with no message.
            Err(KmsError::NotFound(_)) => Err(Failure::Missing),
            Err(e) => Err(Failure::Audited(e)),
        }
    }

    /// `keys/:name/config`: `min_decryption_version` (the edge disables the
    /// enabled versions below it, and enables again only those it disabled
    /// itself, recorded in a label; a version an operator disabled stays
    /// disabled), `deletion_allowed`, `auto_rotate_period`. Every field is
    /// checked before anything changes; each change is its own audited use
    /// case.
    async fn config_key(&self, name: &str, f: Fields<'_>) -> Result<Value, Failure> {
        let key = alias(name);
        if !self.caller.policy.has(keyward_core::Role::Admin) {
            let e = KmsError::PermissionDenied(format!("{} may not configure keys", self.caller.principal));
            return Err(Failure::Edge(e));
        }
        let min = f.int("min_decryption_version")?;
        let deletion = f.bool("deletion_allowed")?;
        let rotation = f.get("auto_rotate_period").map(period).transpose()?;
        if f.int("min_encryption_version")?.is_some_and(|v| v != 0) {
            return Err(KmsError::invalid(
                "min_encryption_version",
                "only 0 (the latest version) is supported",
            )
            .into());
        }
        for flag in ["exportable", "allow_plaintext_backup"] {
            if f.bool(flag)? == Some(true) {
                return Err(KmsError::invalid(flag, "is not supported").into());
            }
        }
        let mut view = audited(self.kms.describe_key(self.caller, &key).await)?;
        if let Some(min) = min {
            let latest = i64::from(view.meta.primary_version);
            if min < 1 || min > latest {
                return Err(KmsError::invalid(
                    "min_decryption_version",
                    format!("must be between 1 and the latest version ({latest})"),
                )
                .into());
            }
            let min = min as u32;
            let old = min_decryption_version(&view);
            // The versions this edge disabled (and only those) it may enable again.
            let mut ours = edge_disabled(&view);
            for v in view.meta.versions.clone() {
                if v.version < min && v.state == VersionState::Enabled {
                    view = audited(self.kms.disable_key_version(self.caller, &key, v.version).await)?;
                    ours.insert(v.version);
                } else if v.version >= min && ours.contains(&v.version) {
                    if v.state == VersionState::Disabled {
                        view = audited(self.kms.enable_key_version(self.caller, &key, v.version).await)?;
                    }
                    ours.remove(&v.version);
                }
            }
            if min != old || ours != edge_disabled(&view) {
                let mut set = std::collections::BTreeMap::new();
                let mut remove = Vec::new();
                match min {
                    1 => remove.push(MIN_DECRYPTION.to_string()),
                    m => drop(set.insert(MIN_DECRYPTION.to_string(), m.to_string())),
                }
                match ranges(&ours) {
                    r if r.is_empty() => remove.push(EDGE_DISABLED.to_string()),
                    r => drop(set.insert(EDGE_DISABLED.to_string(), r)),
                }
                view = audited(self.kms.update_key_labels(self.caller, &key, set, remove).await)?;
            }
        }
        if let Some(d) = deletion {
            let (set, remove) = if d {
                ([(DELETION_ALLOWED.to_string(), "true".to_string())].into(), Vec::new())
            } else {
                (Default::default(), vec![DELETION_ALLOWED.to_string()])
            };
            view = audited(self.kms.update_key_labels(self.caller, &key, set, remove).await)?;
        }
        if let Some(p) = rotation {
            view = audited(self.kms.update_rotation_period(self.caller, &key, p).await)?;
        }
        Ok(self.key_data(name, &view))
    }

    /// Runs `one` for the request, or for each item of its `batch_input`.
    /// A failure of the key itself (unknown, no grant, disabled, audit down)
    /// ends the batch: the remaining items are answered with the same error
    /// without another use-case call, so a batch against a key the caller
    /// cannot use is one record, not one per item. Items the edge finds
    /// malformed are recorded once for the whole batch.
    async fn batch<F, Fut>(
        &self,
        map: &Map<String, Value>,
        op: Operation,
        key: &str,
        one: F,
    ) -> Result<Value, Failure>
    where
        F: Fn(Map<String, Value>) -> Fut,
        Fut: std::future::Future<Output = Result<Value, Failure>>,
    {
        let Some(items) = map.get("batch_input").filter(|v| !v.is_null()) else {
            return one(map.clone()).await;
        };
        let items =
            items.as_array().ok_or_else(|| KmsError::invalid("batch_input", "must be a list of objects"))?;
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            return Err(
                KmsError::invalid("batch_input", format!("must hold 1 to {MAX_BATCH_ITEMS} items")).into()
            );
        }
        let mut results = Vec::with_capacity(items.len());
        let (mut failed, mut malformed, mut first_malformed) = (false, 0usize, None);
        let mut stop: Option<String> = None;
        for item in items {
            let Some(obj) = item.as_object() else {
                return Err(KmsError::invalid("batch_input", "must be a list of objects").into());
            };
            let reference = match obj.get("reference") {
                None | Some(Value::Null) => json!(""),
                Some(Value::String(r)) => json!(r),
                Some(_) => return Err(KmsError::invalid("reference", "must be a string").into()),
            };
            let outcome = match &stop {
                Some(e) => Err(e.clone()),
                None => match one(obj.clone()).await {
                    Ok(v) => Ok(v),
                    Err(Failure::Audited(e)) => {
                        let text = VaultError::of(&e).errors.join("; ");
                        if key_level(&e) {
                            stop = Some(text.clone());
                        }
                        Err(text)
                    }
                    Err(Failure::Edge(e)) => {
                        malformed += 1;
                        let text = VaultError::of(&e).errors.join("; ");
                        first_malformed.get_or_insert(e);
                        Err(text)
                    }
                    Err(Failure::Batch(..) | Failure::Missing) => Err("encryption key not found".to_string()),
                },
            };
            let mut r = match outcome {
                Ok(v) => v,
                Err(text) => {
                    failed = true;
                    let mut r = json!({ "error": text });
                    if op == Operation::Decrypt {
                        r["plaintext"] = json!("");
                    }
                    r
                }
            };
            r["reference"] = reference;
            results.push(r);
        }
        if let Some(e) = first_malformed {
            let n = items.len();
            let summary = match e {
                KmsError::InvalidArgument { field, reason } => {
                    KmsError::invalid(field, format!("{reason} ({malformed} of {n} batch items invalid)"))
                }
                other => other,
            };
            if let KmsError::AuditUnavailable(a) = self.kms.refuse_key(self.caller, op, key, summary).await {
                return Err(Failure::Audited(KmsError::AuditUnavailable(a)));
            }
        }
        if failed {
            // `partial_failure_response_code` (Vault's): the status when some,
            // not all, items failed.
            let all_failed = results.iter().all(|r| r.get("error").is_some());
            let partial =
                Fields(map).int("partial_failure_response_code")?.filter(|c| (200..=599).contains(c));
            return Err(Failure::Batch(results, if all_failed { None } else { partial.map(|c| c as u16) }));
        }
        Ok(json!({ "batch_results": results }))
    }

    async fn encrypt(&self, name: String, m: Map<String, Value>) -> Result<Value, Failure> {
        let f = Fields(&m);
        let plaintext = unb64("plaintext", f.required("plaintext")?)?;
        let context = f.context()?;
        let key_version = f.int("key_version")?;
        if f.str("type")?.is_some_and(|t| t != "aes256-gcm96") {
            return Err(KmsError::invalid("type", "only aes256-gcm96").into());
        }
        let key = alias(&name);
        // Everything is checked before an upsert creates anything.
        let missing = matches!(self.kms.peek_key(&key), Err(KmsError::NotFound(_)));
        if missing && key_version.is_some_and(|v| v > 1) {
            return Err(KmsError::invalid(
                "key_version",
                "the key does not exist yet (a new key has version 1)",
            )
            .into());
        }
        if missing {
            self.upsert(&name).await?;
        }
        if let Some(v) = key_version.filter(|v| *v != 0) {
            // Only the latest version encrypts (Vault's min_encryption_version 0).
            let (_, _, primary) = self.kms.peek_key(&key).map_err(Failure::Edge)?;
            if v != i64::from(primary) {
                return Err(KmsError::invalid(
                    "key_version",
                    format!("only the latest version ({primary}) encrypts"),
                )
                .into());
            }
        }
        let out = audited(self.kms.encrypt(self.caller, &key, Plaintext::new(plaintext), context).await)?;
        Ok(
            json!({ "ciphertext": vault_ciphertext(&out.ciphertext, out.key_version), "key_version": out.key_version }),
        )
    }

    /// As Vault's encrypt: a key that does not exist is created first, if
    /// the caller may create keys (Vault's `create` capability is Keyward's
    /// admin role); otherwise the encrypt is refused as for any unknown key.
    /// Called for a key found missing.
    async fn upsert(&self, name: &str) -> Result<(), Failure> {
        if !self.caller.policy.has(keyward_core::Role::Admin) {
            return Ok(());
        }
        let input = CreateKeyInput {
            alias: Some(alias(name)),
            description: format!("Vault Transit key {name} (created by an encrypt)"),
            ..Default::default()
        };
        match self.kms.create_key(self.caller, input).await {
            Ok(_) | Err(KmsError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(Failure::Audited(e)),
        }
    }

    async fn decrypt(&self, name: String, m: Map<String, Value>) -> Result<Value, Failure> {
        let f = Fields(&m);
        let ct = f.ciphertext()?;
        let context = f.context()?;
        let out = audited(self.kms.decrypt(self.caller, &ct, context, Some(&alias(&name))).await)?;
        Ok(json!({ "plaintext": b64(out.plaintext.expose_secret()) }))
    }

    async fn rewrap(&self, name: String, m: Map<String, Value>) -> Result<Value, Failure> {
        let f = Fields(&m);
        let ct = f.ciphertext()?;
        let context = f.context()?;
        if f.int("key_version")?.is_some_and(|v| v != 0) {
            let (_, _, primary) = self.kms.peek_key(&alias(&name)).map_err(Failure::Edge)?;
            if f.int("key_version")? != Some(i64::from(primary)) {
                return Err(KmsError::invalid(
                    "key_version",
                    format!("only the latest version ({primary}) encrypts"),
                )
                .into());
            }
        }
        let input = ReEncryptInput {
            ciphertext: ct,
            source_context: context.clone(),
            source_key: Some(alias(&name)),
            destination_key: alias(&name),
            destination_context: context,
        };
        let out = audited(self.kms.re_encrypt(self.caller, input).await)?;
        Ok(
            json!({ "ciphertext": vault_ciphertext(&out.ciphertext, out.key_version), "key_version": out.key_version }),
        )
    }

    async fn data_key(&self, name: &str, plaintext: bool, f: Fields<'_>) -> Result<Value, Failure> {
        let bits = f.int("bits")?.unwrap_or(256);
        let bytes = match bits {
            128 | 256 | 512 => (bits / 8) as u32,
            _ => return Err(KmsError::invalid("bits", "must be 128, 256 or 512").into()),
        };
        let context = f.context()?;
        let input = DataKeyInput {
            key: alias(name),
            number_of_bytes: Some(bytes),
            context,
            with_plaintext: plaintext,
        };
        let out = audited(self.kms.generate_data_key(self.caller, input).await)?;
        let mut v = json!({ "ciphertext": vault_ciphertext(&out.ciphertext, out.key_version), "key_version": out.key_version });
        if let Some(p) = &out.plaintext {
            v["plaintext"] = json!(b64(p.expose_secret()));
        }
        Ok(v)
    }

    async fn random(&self, in_path: Option<String>, f: Fields<'_>) -> Result<Value, Failure> {
        let n = match in_path {
            Some(p) => p.parse::<i64>().map_err(|_| KmsError::invalid("bytes", "must be an integer"))?,
            None => f.int("bytes")?.unwrap_or(32),
        };
        let n = u32::try_from(n).map_err(|_| KmsError::invalid("bytes", "must be positive"))?;
        let format = f.str("format")?.unwrap_or("base64").to_string();
        if format != "base64" && format != "hex" {
            return Err(KmsError::invalid("format", "must be base64 or hex").into());
        }
        let out = audited(self.kms.generate_random(self.caller, n).await)?;
        let text = if format == "hex" { hex::encode(out.expose_secret()) } else { b64(out.expose_secret()) };
        Ok(json!({ "random_bytes": text }))
    }
}

/// The `min_decryption_version` the edge applied (1 when none).
fn min_decryption_version(v: &KeyView) -> u32 {
    v.meta.labels.get(MIN_DECRYPTION).and_then(|m| m.parse().ok()).unwrap_or(1)
}

/// The versions the edge disabled (from [`EDGE_DISABLED`]).
fn edge_disabled(v: &KeyView) -> std::collections::BTreeSet<u32> {
    let mut out = std::collections::BTreeSet::new();
    for part in v.meta.labels.get(EDGE_DISABLED).map(String::as_str).unwrap_or("").split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            out.extend(a..=b.min(a.saturating_add(100_000)));
        }
    }
    out
}

/// Versions as ranges: `{1,2,3,7}` is `1-3,7`.
fn ranges(set: &std::collections::BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

/// Whether a use-case error concerns the key (or the caller's right to use
/// it, or the audit log) rather than one batch item: the rest of a batch
/// would fail the same way.
fn key_level(e: &KmsError) -> bool {
    matches!(
        e,
        KmsError::NotFound(_)
            | KmsError::PermissionDenied(_)
            | KmsError::Unauthenticated(_)
            | KmsError::AuditUnavailable(_)
            | KmsError::Store(_)
            | KmsError::ResourceExhausted(_)
    ) || matches!(e, KmsError::FailedPrecondition(m) if m.starts_with("key "))
}

/// `auto_rotate_period`: seconds (number) or a duration (`"24h"`); 0 turns
/// rotation off; otherwise at least an hour.
fn period(v: &Value) -> Result<Option<i64>, KmsError> {
    let secs = match v {
        Value::Number(n) => {
            n.as_i64().ok_or_else(|| KmsError::invalid("auto_rotate_period", "must be a duration"))?
        }
        Value::String(s) if s.trim() == "0" || s.is_empty() => 0,
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => humantime::parse_duration(s)
                .map_err(|e| KmsError::invalid("auto_rotate_period", format!("{e}")))?
                .as_secs()
                .try_into()
                .map_err(|_| KmsError::invalid("auto_rotate_period", "is too long"))?,
        },
        _ => return Err(KmsError::invalid("auto_rotate_period", "must be a duration like \"24h\"")),
    };
    match secs {
        0 => Ok(None),
        s if !(3600..=3650 * DAY_S).contains(&s) => {
            Err(KmsError::invalid("auto_rotate_period", "must be 0 (off) or between 1h and 3650 days"))
        }
        s => Ok(Some(s * 1000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges_round_trip() {
        let set: std::collections::BTreeSet<u32> = [1, 2, 3, 7, 9, 10].into();
        assert_eq!(ranges(&set), "1-3,7,9-10");
        assert_eq!(ranges(&Default::default()), "");
    }

    #[test]
    fn periods_parse_like_vault() {
        assert_eq!(period(&json!(0)).unwrap(), None);
        assert_eq!(period(&json!("0")).unwrap(), None);
        assert_eq!(period(&json!("24h")).unwrap(), Some(86_400_000));
        assert_eq!(period(&json!(7200)).unwrap(), Some(7_200_000));
        assert!(period(&json!("10m")).is_err());
        assert!(period(&json!(true)).is_err());
    }

    #[test]
    fn ciphertexts_must_name_their_version() {
        let m: Map<String, Value> = serde_json::from_str(r#"{"ciphertext":"vault:v1:AAAA"}"#).unwrap();
        assert!(Fields(&m).ciphertext().is_err(), "not a Keyward ciphertext");
        for bad in ["", "vault:", "vault:vx:AAAA", "vault:v1", "v1:AAAA", "vault:v1:!!!"] {
            let m: Map<String, Value> = serde_json::from_value(json!({ "ciphertext": bad })).unwrap();
            assert!(Fields(&m).ciphertext().is_err(), "{bad}");
        }
    }

    #[test]
    fn associated_data_is_the_context_as_sent() {
        let m: Map<String, Value> = serde_json::from_value(json!({ "associated_data": "YWFk" })).unwrap();
        assert_eq!(Fields(&m).context().unwrap(), HashMap::from([("associated_data".into(), "YWFk".into())]));
        let m: Map<String, Value> = serde_json::from_value(json!({ "associated_data": "" })).unwrap();
        assert!(Fields(&m).context().unwrap().is_empty());
        let m: Map<String, Value> = serde_json::from_value(json!({ "context": "YWFk" })).unwrap();
        assert!(Fields(&m).context().is_err(), "derived keys are not supported");
    }
}
