//! The use cases: every RPC of Keyward as one async method on [`Kms`].
//!
//! Each method builds an [`AuditEntry`] as it goes (key, version, alias,
//! context, outcome) and ends in [`Kms::finish`], which makes the record
//! durable before the result is handed back. If the record cannot be written,
//! the result (and any secret in it) is dropped and the caller gets
//! `AuditUnavailable`. Lifecycle operations commit their key changes and
//! their record in one atomic write.
//!
//! Hot state lives in memory: key metadata and unwrapped version secrets, in
//! a `RwLock<State>` of `Arc`s, replaced (not mutated) on change. Lifecycle
//! operations are serialised by one async mutex held until their write is
//! applied, so two rotations can never both create version n+1.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use keyward_crypto::{
    CiphertextHeader, DataKey, EncryptionContext, Plaintext, RootKey, VersionSecret, WrappedVersionSecret,
};
use tokio::sync::Mutex;

use crate::committer::Mutation;
use crate::usage::UsageBook;
use crate::{
    AliasChange, AuditEntry, AuditLog, AuditLogConfig, AuditPage, AuditQuery, Clock, CommitBatch, KeyId,
    KeyMeta, KeyRecord, KeyRef, KeyState, KmsError, Limits, Operation, Outcome, RotationPolicy, Store,
    StoreError, VerifyReport, VersionMeta, VersionState, VersionUsage, MIN_ROTATION_PERIOD_MS,
};
use crate::{Permission, Policy, Role};

/// Who is asking, and the request's identity for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Echoed to the caller as `x-request-id`.
    pub request_id: String,
    /// The authenticated principal.
    pub principal: String,
    /// The peer address.
    pub peer: String,
    /// What the principal may do.
    pub policy: Arc<Policy>,
}

/// Arguments of `CreateKey`.
#[derive(Debug, Clone, Default)]
pub struct CreateKeyInput {
    /// Optional alias created with the key.
    pub alias: Option<String>,
    /// Free text.
    pub description: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Rotation policy (none by default).
    pub rotation: RotationInput,
}

/// A rotation policy as asked for (validated by the use case).
#[derive(Debug, Clone, Copy, Default)]
pub struct RotationInput {
    /// Rotate every this many ms (at least one hour); `None` clears.
    pub period_ms: Option<i64>,
    /// The first scheduled rotation (default: now + period).
    pub next_rotation_ms: Option<i64>,
    /// Rotate before a primary version seals more than this; `None` clears.
    pub max_encryptions_per_version: Option<u64>,
}

/// Longest rotation period accepted: ten years.
const MAX_ROTATION_PERIOD_MS: i64 = 10 * 366 * DAY_MS;

impl RotationInput {
    fn validate(self, now: i64) -> Result<RotationPolicy, KmsError> {
        if let Some(p) = self.period_ms {
            if !(MIN_ROTATION_PERIOD_MS..=MAX_ROTATION_PERIOD_MS).contains(&p) {
                return Err(KmsError::invalid(
                    "rotation_period",
                    format!("must be between 1 hour and 3660 days, got {} s", p / 1000),
                ));
            }
        }
        let next_rotation_ms = match (self.period_ms, self.next_rotation_ms) {
            (None, Some(_)) => {
                return Err(KmsError::invalid("next_rotation_time", "needs a rotation_period"));
            }
            (Some(_), Some(t)) if t <= now => {
                return Err(KmsError::invalid("next_rotation_time", "must be in the future"));
            }
            (Some(_), Some(t)) => Some(t),
            (Some(p), None) => Some(now + p),
            (None, None) => None,
        };
        if self.max_encryptions_per_version == Some(0) {
            return Err(KmsError::invalid(
                "max_encryptions_per_version",
                "must be at least 1 (0 means none)",
            ));
        }
        Ok(RotationPolicy {
            period_ms: self.period_ms,
            next_rotation_ms,
            max_encryptions_per_version: self.max_encryptions_per_version,
        })
    }
}

/// One version as `ListKeyVersions` shows it.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// Its metadata.
    pub meta: VersionMeta,
    /// Its usage (acknowledged uses only).
    pub usage: VersionUsage,
    /// Whether it is the key's primary version.
    pub primary: bool,
}

/// Most items in one batch call.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Result of `Encrypt`.
#[derive(Debug)]
pub struct EncryptOutput {
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The key used.
    pub key_id: KeyId,
    /// The version used.
    pub key_version: u32,
}

/// Result of `Decrypt`.
#[derive(Debug)]
pub struct DecryptOutput {
    /// The plaintext (secret).
    pub plaintext: Plaintext,
    /// The key that made the ciphertext.
    pub key_id: KeyId,
    /// Its version.
    pub key_version: u32,
}

/// Result of `GenerateDataKey` (with or without plaintext).
#[derive(Debug)]
pub struct DataKeyOutput {
    /// The data key (absent for the without-plaintext variant).
    pub plaintext: Option<DataKey>,
    /// The data key sealed under the key.
    pub ciphertext: Vec<u8>,
    /// The key used.
    pub key_id: KeyId,
    /// The version used.
    pub key_version: u32,
}

/// Result of `ReEncrypt`.
#[derive(Debug)]
pub struct ReEncryptOutput {
    /// The new ciphertext.
    pub ciphertext: Vec<u8>,
    /// The key that made the old ciphertext.
    pub source_key_id: KeyId,
    /// Its version.
    pub source_key_version: u32,
    /// The destination key.
    pub key_id: KeyId,
    /// Its primary version, now used.
    pub key_version: u32,
}

/// Start-up settings for [`Kms`].
#[derive(Debug, Clone, Default)]
pub struct KmsConfig {
    /// Request limits.
    pub limits: Limits,
    /// Audit writer tuning.
    pub audit: AuditLogConfig,
}

/// Which request opens a ciphertext: it decides the pin field's name, the
/// permission checked and where the audit record names the key.
#[derive(Debug, Clone, Copy)]
enum Side {
    Decrypt,
    ReEncryptSource,
}

struct LiveKey {
    record: KeyRecord,
    secrets: BTreeMap<u32, Arc<VersionSecret>>,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<KeyId, Arc<LiveKey>>,
    aliases: BTreeMap<String, KeyId>,
}

impl State {
    fn resolve(&self, r: &KeyRef) -> Result<Arc<LiveKey>, KmsError> {
        let id = match r {
            KeyRef::Id(id) => *id,
            KeyRef::Alias(a) => *self.aliases.get(a).ok_or_else(|| KmsError::NotFound(a.clone()))?,
        };
        self.keys.get(&id).cloned().ok_or_else(|| KmsError::NotFound(format!("key {id}")))
    }

    fn aliases_of(&self, id: KeyId) -> Vec<String> {
        self.aliases.iter().filter(|(_, k)| **k == id).map(|(a, _)| a.clone()).collect()
    }
}

/// The key management service: all use cases, over a [`Store`].
pub struct Kms {
    store: Arc<dyn Store>,
    root: Arc<RootKey>,
    state: Arc<RwLock<State>>,
    lifecycle: Arc<Mutex<()>>,
    audit: AuditLog,
    usage: Arc<UsageBook>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("store", &self.store).field("limits", &self.limits).finish()
    }
}

impl Kms {
    /// Opens the service over `store`: checks the root key against the
    /// store's check value (storing it on first use of an empty store),
    /// unwraps every version secret, and starts the audit writer.
    pub fn open(
        store: Arc<dyn Store>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: KmsConfig,
    ) -> Result<Self, OpenError> {
        let keys = store.load_keys().map_err(OpenError::Store)?;
        match store.root_check().map_err(OpenError::Store)? {
            Some(v) => {
                if !root.matches(&keyward_crypto::RootCheck(v)) {
                    return Err(OpenError::WrongRootKey);
                }
            }
            None if keys.is_empty() => {
                store.set_root_check(&root.check_value().0).map_err(OpenError::Store)?
            }
            None => return Err(OpenError::MissingCheck),
        }
        let mut state = State::default();
        for record in keys {
            let live = unwrap_record(&root, record).map_err(|_| OpenError::WrongRootKey)?;
            state.keys.insert(live.record.meta.id, Arc::new(live));
        }
        for (alias, id) in store.load_aliases().map_err(OpenError::Store)? {
            state.aliases.insert(alias, id);
        }
        let usage = Arc::new(UsageBook::load(store.load_usage().map_err(OpenError::Store)?));
        let audit = AuditLog::start(store.clone(), usage.clone(), config.audit).map_err(OpenError::Store)?;
        Ok(Self {
            store,
            root: Arc::new(root),
            state: Arc::new(RwLock::new(state)),
            lifecycle: Arc::new(Mutex::new(())),
            audit,
            usage,
            limits: config.limits,
            clock,
        })
    }

    /// The audit writer (for health reporting).
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A key's id, state and primary version, from memory and without an
    /// audit record: for health reporting (the KMS v2 `Status` poll), not
    /// for callers.
    pub fn peek_key(&self, key: &str) -> Result<(KeyId, KeyState, u32), KmsError> {
        let r = KeyRef::parse("key_id", key)?;
        let live = self.state.read().expect("state lock").resolve(&r)?;
        let m = &live.record.meta;
        Ok((m.id, m.state, m.primary_version))
    }

    /// How many keys are in each state (for metrics; not audited).
    pub fn key_state_counts(&self) -> Vec<(KeyState, usize)> {
        let s = self.state.read().expect("state lock");
        [KeyState::Enabled, KeyState::Disabled, KeyState::PendingDeletion, KeyState::Destroyed]
            .into_iter()
            .map(|st| (st, s.keys.values().filter(|k| k.record.meta.state == st).count()))
            .collect()
    }

    fn entry(&self, caller: &Caller, op: Operation) -> AuditEntry {
        AuditEntry {
            time_ms: self.clock.now_ms(),
            request_id: caller.request_id.clone(),
            principal: caller.principal.clone(),
            peer: caller.peer.clone(),
            operation: op,
            key_id: None,
            key_version: None,
            alias: None,
            source_key_id: None,
            source_key_version: None,
            context: BTreeMap::new(),
            outcome: Outcome::ok(),
        }
    }

    /// Records the outcome durably, then releases the result.
    async fn finish<T>(&self, mut entry: AuditEntry, result: Result<T, KmsError>) -> Result<T, KmsError> {
        entry.outcome = match &result {
            Ok(_) => Outcome::ok(),
            Err(e) => Outcome::of_error(e),
        };
        match self.audit.append(entry).await {
            Ok(_) => result,
            Err(e) => Err(KmsError::AuditUnavailable(e)),
        }
    }

    fn resolve(
        &self,
        entry: &mut AuditEntry,
        field: &'static str,
        key: &str,
    ) -> Result<Arc<LiveKey>, KmsError> {
        let r = KeyRef::parse(field, key)?;
        entry.alias = r.alias().map(str::to_string);
        if let KeyRef::Id(id) = &r {
            entry.key_id = Some(*id);
        }
        let live = self.state.read().expect("state lock").resolve(&r)?;
        entry.key_id = Some(live.record.meta.id);
        Ok(live)
    }

    /// Records a request refused before it reached a use case (for example
    /// one without a valid identity) and returns the error.
    pub async fn refuse(&self, caller: &Caller, op: Operation, error: KmsError) -> KmsError {
        let mut entry = self.entry(caller, op);
        entry.outcome = Outcome::of_error(&error);
        match self.audit.append(entry).await {
            Ok(_) => error,
            Err(e) => KmsError::AuditUnavailable(e),
        }
    }

    fn require(&self, caller: &Caller, role: Role, what: &str) -> Result<(), KmsError> {
        if caller.policy.has(role) {
            Ok(())
        } else {
            Err(KmsError::PermissionDenied(format!("{} may not {what}", caller.principal)))
        }
    }

    fn authorize(&self, caller: &Caller, perm: Permission, live: &LiveKey) -> Result<(), KmsError> {
        let meta = &live.record.meta;
        let aliases = || self.state.read().expect("state lock").aliases_of(meta.id);
        if caller.policy.allows(perm, meta, &aliases) {
            Ok(())
        } else {
            Err(KmsError::PermissionDenied(format!(
                "{} may not {} with key {}",
                caller.principal,
                perm.as_str(),
                meta.id
            )))
        }
    }

    fn context(
        &self,
        field: &'static str,
        pairs: HashMap<String, String>,
    ) -> Result<EncryptionContext, KmsError> {
        if pairs.len() > self.limits.max_context_pairs {
            return Err(KmsError::invalid(
                field,
                format!("at most {} pairs allowed, got {}", self.limits.max_context_pairs, pairs.len()),
            ));
        }
        let ctx = EncryptionContext::new(pairs);
        if ctx.byte_len() > self.limits.max_context_bytes {
            return Err(KmsError::invalid(
                field,
                format!("at most {} bytes allowed, got {}", self.limits.max_context_bytes, ctx.byte_len()),
            ));
        }
        if ctx.pairs().keys().any(String::is_empty) {
            return Err(KmsError::invalid(field, "keys must not be empty"));
        }
        Ok(ctx)
    }

    // ------------------------------------------------------------ crypto

    /// `Encrypt`: seals up to `max_plaintext_bytes` under the key's primary version.
    pub async fn encrypt(
        &self,
        caller: &Caller,
        key: &str,
        plaintext: Plaintext,
        context: HashMap<String, String>,
    ) -> Result<EncryptOutput, KmsError> {
        let mut entry = self.entry(caller, Operation::Encrypt);
        let result = async {
            let live = self.resolve(&mut entry, "key_id", key)?;
            self.authorize(caller, Permission::Encrypt, &live)?;
            let ctx = self.context("encryption_context", context)?;
            entry.context = ctx.pairs().clone();
            if plaintext.len() > self.limits.max_plaintext_bytes {
                return Err(KmsError::invalid(
                    "plaintext",
                    format!(
                        "at most {} bytes allowed, got {}",
                        self.limits.max_plaintext_bytes,
                        plaintext.len()
                    ),
                ));
            }
            let (id, version, secret) = self.seal_version(caller, live).await?;
            entry.key_version = Some(version);
            let ciphertext =
                keyward_crypto::seal(&secret, id.as_bytes(), version, &ctx, plaintext.expose_secret())?;
            Ok(EncryptOutput { ciphertext, key_id: id, key_version: version })
        }
        .await;
        self.finish(entry, result).await
    }

    /// `Decrypt`: opens a ciphertext under the key and version its header names.
    pub async fn decrypt(
        &self,
        caller: &Caller,
        ciphertext: &[u8],
        context: HashMap<String, String>,
        pinned_key: &str,
    ) -> Result<DecryptOutput, KmsError> {
        let mut entry = self.entry(caller, Operation::Decrypt);
        let result = (|| {
            let ctx = self.context("encryption_context", context)?;
            entry.context = ctx.pairs().clone();
            let (live, version, plaintext) =
                self.open_ciphertext(caller, &mut entry, Side::Decrypt, ciphertext, &ctx, pinned_key)?;
            entry.key_id = Some(live.record.meta.id);
            entry.key_version = Some(version);
            Ok(DecryptOutput { plaintext, key_id: live.record.meta.id, key_version: version })
        })();
        self.finish(entry, result).await
    }

    /// Opens a ciphertext; shared by Decrypt and ReEncrypt.
    fn open_ciphertext(
        &self,
        caller: &Caller,
        entry: &mut AuditEntry,
        side: Side,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
        pinned_key: &str,
    ) -> Result<(Arc<LiveKey>, u32, Plaintext), KmsError> {
        if ciphertext.is_empty() {
            return Err(KmsError::invalid("ciphertext", "must not be empty"));
        }
        let header = CiphertextHeader::parse(ciphertext)?;
        let id = KeyId::from_bytes(header.key_id);
        let pin_field = match side {
            Side::Decrypt => "key_id",
            Side::ReEncryptSource => "source_key_id",
        };
        let pinned = if pinned_key.is_empty() {
            None
        } else {
            let r = KeyRef::parse(pin_field, pinned_key)?;
            entry.alias = r.alias().map(str::to_string);
            Some(self.state.read().expect("state lock").resolve(&r)?)
        };
        if let Some(p) = &pinned {
            if p.record.meta.id != id {
                return Err(KmsError::invalid(pin_field, "the ciphertext was not made under this key"));
            }
        }
        // An unknown key in the header is reported like any other bad
        // ciphertext: a foreign or forged ciphertext learns nothing.
        let live = self
            .state
            .read()
            .expect("state lock")
            .keys
            .get(&id)
            .cloned()
            .ok_or(KmsError::InvalidCiphertext(keyward_crypto::CryptoError::Undecryptable))?;
        // From here on the record names the key and version the header names.
        match side {
            Side::ReEncryptSource => {
                entry.source_key_id = Some(id);
                entry.source_key_version = Some(header.version);
            }
            Side::Decrypt => {
                entry.key_id = Some(id);
                entry.key_version = Some(header.version);
            }
        }
        let perm = match side {
            Side::Decrypt => Permission::Decrypt,
            Side::ReEncryptSource => Permission::ReEncryptFrom,
        };
        self.authorize(caller, perm, &live)?;
        let meta = &live.record.meta;
        check_key_usable(meta)?;
        let vmeta = meta
            .version(header.version)
            .ok_or(KmsError::InvalidCiphertext(keyward_crypto::CryptoError::Undecryptable))?;
        if vmeta.state != VersionState::Enabled {
            return Err(KmsError::FailedPrecondition(format!(
                "version {} of key {} is {}",
                header.version,
                meta.id,
                vmeta.state.as_str()
            )));
        }
        if vmeta.compromised && matches!(side, Side::Decrypt) {
            return Err(KmsError::FailedPrecondition(format!(
                "version {} of key {} is compromised; its ciphertexts open only through ReEncrypt",
                header.version, meta.id
            )));
        }
        let secret = live.secrets.get(&header.version).cloned().ok_or_else(|| {
            KmsError::FailedPrecondition(format!(
                "version {} of key {} is destroyed",
                header.version, meta.id
            ))
        })?;
        let plaintext = keyward_crypto::open(&secret, ciphertext, ctx)?;
        Ok((live, header.version, plaintext))
    }

    /// `GenerateDataKey` / `GenerateDataKeyWithoutPlaintext`.
    pub async fn generate_data_key(
        &self,
        caller: &Caller,
        key: &str,
        number_of_bytes: Option<u32>,
        context: HashMap<String, String>,
        with_plaintext: bool,
    ) -> Result<DataKeyOutput, KmsError> {
        let (op, perm) = data_key_op(with_plaintext);
        let mut entry = self.entry(caller, op);
        let result = async {
            let live = self.resolve(&mut entry, "key_id", key)?;
            self.authorize(caller, perm, &live)?;
            let ctx = self.context("encryption_context", context)?;
            entry.context = ctx.pairs().clone();
            let n = number_of_bytes.unwrap_or(32) as usize;
            if n == 0 || n > self.limits.max_data_key_bytes {
                return Err(KmsError::invalid(
                    "number_of_bytes",
                    format!("must be between 1 and {}, got {n}", self.limits.max_data_key_bytes),
                ));
            }
            let data_key = DataKey::generate(n)?;
            let (id, version, secret) = self.seal_version(caller, live).await?;
            entry.key_version = Some(version);
            let ciphertext =
                keyward_crypto::seal(&secret, id.as_bytes(), version, &ctx, data_key.expose_secret())?;
            Ok(DataKeyOutput {
                plaintext: with_plaintext.then_some(data_key),
                ciphertext,
                key_id: id,
                key_version: version,
            })
        }
        .await;
        self.finish(entry, result).await
    }

    /// `GenerateDataKey` for `count` keys at once (1..=1000): each is an
    /// independent data key with its own audit record; all or nothing. A
    /// batch refused as a whole (bad count, no permission, unusable key) is
    /// one record.
    #[allow(clippy::too_many_arguments)]
    pub async fn generate_data_keys(
        &self,
        caller: &Caller,
        key: &str,
        number_of_bytes: Option<u32>,
        context: HashMap<String, String>,
        with_plaintext: bool,
        count: u32,
    ) -> Result<Vec<DataKeyOutput>, KmsError> {
        // Checked once, so a refused batch is one record, not `count`.
        let (op, perm) = data_key_op(with_plaintext);
        let mut entry = self.entry(caller, op);
        let check = (|| {
            if count == 0 || count as usize > MAX_BATCH_ITEMS {
                return Err(KmsError::invalid(
                    "count",
                    format!("must be between 1 and {MAX_BATCH_ITEMS}, got {count}"),
                ));
            }
            let live = self.resolve(&mut entry, "key_id", key)?;
            self.authorize(caller, perm, &live)?;
            check_key_usable(&live.record.meta)
        })();
        if let Err(e) = check {
            return self.finish(entry, Err(e)).await;
        }
        let each = (0..count)
            .map(|_| self.generate_data_key(caller, key, number_of_bytes, context.clone(), with_plaintext));
        futures_util::future::join_all(each).await.into_iter().collect()
    }

    /// `ReEncrypt`: opens under the source key and seals under the
    /// destination key's primary version; the plaintext stays in here.
    pub async fn re_encrypt(
        &self,
        caller: &Caller,
        ciphertext: &[u8],
        source_context: HashMap<String, String>,
        source_key: &str,
        destination_key: &str,
        destination_context: HashMap<String, String>,
    ) -> Result<ReEncryptOutput, KmsError> {
        let mut entry = self.entry(caller, Operation::ReEncrypt);
        let result = async {
            let dest = self.resolve(&mut entry, "destination_key_id", destination_key)?;
            self.authorize(caller, Permission::ReEncryptTo, &dest)?;
            let dest_alias = entry.alias.take();
            let src_ctx = self.context("source_encryption_context", source_context)?;
            let dst_ctx = self.context("destination_encryption_context", destination_context)?;
            entry.context = dst_ctx.pairs().clone();
            let (src, src_version, plaintext) = self.open_ciphertext(
                caller,
                &mut entry,
                Side::ReEncryptSource,
                ciphertext,
                &src_ctx,
                source_key,
            )?;
            entry.alias = dest_alias.or(entry.alias.take());
            entry.source_key_id = Some(src.record.meta.id);
            entry.source_key_version = Some(src_version);
            let (id, version, secret) = self.seal_version(caller, dest).await?;
            entry.key_version = Some(version);
            let ciphertext =
                keyward_crypto::seal(&secret, id.as_bytes(), version, &dst_ctx, plaintext.expose_secret())?;
            Ok(ReEncryptOutput {
                ciphertext,
                source_key_id: src.record.meta.id,
                source_key_version: src_version,
                key_id: id,
                key_version: version,
            })
        }
        .await;
        self.finish(entry, result).await
    }

    /// The version to seal under: the primary. For a key with a usage cap
    /// this takes one of the primary's seal slots. When none is left, it
    /// takes the lifecycle lock and there either finds a version rotated in
    /// meanwhile with room, or rotates the key itself (audited as `system`,
    /// with the request's id) and takes the new version's first slot, so
    /// every request finishes in one round however many race.
    async fn seal_version(
        &self,
        caller: &Caller,
        live: Arc<LiveKey>,
    ) -> Result<(KeyId, u32, Arc<VersionSecret>), KmsError> {
        let id = live.record.meta.id;
        let (version, secret) = primary(&live)?;
        let Some(cap) = live.record.meta.rotation.max_encryptions_per_version else {
            return Ok((id, version, secret));
        };
        if self.usage.reserve(id, version, cap) {
            return Ok((id, version, secret));
        }
        let mut got = None;
        let system = system_caller(caller.request_id.clone());
        self.change_key(&system, Operation::RotateKey, &id.to_string(), None, false, |live, root, now| {
            check_key_usable(&live.record.meta)?;
            let current = live.record.meta.primary_version;
            if self.usage.reserve(id, current, cap) {
                got = Some(current);
                return Ok(None);
            }
            let new = rotated(live, root, now)?;
            let v = new.record.meta.primary_version;
            // Nobody can use v before this rotation is applied.
            self.usage.reserve(id, v, cap);
            got = Some(v);
            Ok(Some(new))
        })
        .await?;
        let version = got.ok_or_else(|| KmsError::Internal("no version after rotation".into()))?;
        let live = self.state.read().expect("state lock").resolve(&KeyRef::Id(id))?;
        let secret = live.secrets.get(&version).cloned().ok_or_else(|| {
            KmsError::FailedPrecondition(format!("version {version} of key {id} is no longer usable"))
        })?;
        Ok((id, version, secret))
    }

    // ------------------------------------------------------------ keys

    /// `CreateKey`: a new key with version 1, and optionally an alias.
    pub async fn create_key(
        &self,
        caller: &Caller,
        input: CreateKeyInput,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let mut entry = self.entry(caller, Operation::CreateKey);
        let guard = self.lifecycle.clone().lock_owned().await;
        let prepared = (|| {
            self.require(caller, Role::Admin, "create keys")?;
            if let Some(a) = &input.alias {
                crate::validate_alias("alias", a)?;
                entry.alias = Some(a.clone());
                if self.state.read().expect("state lock").aliases.contains_key(a) {
                    return Err(KmsError::AlreadyExists(a.clone()));
                }
            }
            validate_labels(&input.labels)?;
            if input.description.len() > 8192 {
                return Err(KmsError::invalid("description", "at most 8192 bytes allowed"));
            }
            let now = self.clock.now_ms();
            let rotation = input.rotation.validate(now)?;
            let id = KeyId::generate();
            entry.key_id = Some(id);
            entry.key_version = Some(1);
            let meta = KeyMeta {
                id,
                description: input.description.clone(),
                labels: input.labels.clone(),
                state: KeyState::Enabled,
                created_ms: now,
                primary_version: 1,
                versions: vec![VersionMeta::new(1, now)],
                deletion_ms: None,
                rotation,
            };
            let secret = VersionSecret::generate()?;
            let wrapped = self.root.wrap(id.as_bytes(), 1, &secret)?;
            let record = KeyRecord { meta, wrapped: BTreeMap::from([(1, wrapped.as_bytes().to_vec())]) };
            let live = LiveKey { record, secrets: BTreeMap::from([(1, Arc::new(secret))]) };
            Ok(live)
        })();
        let live = match prepared {
            Ok(l) => l,
            Err(e) => return self.finish(entry, Err(e)).await,
        };
        let meta = live.record.meta.clone();
        let id = meta.id;
        let mut batch = CommitBatch { keys: vec![live.record.clone()], ..Default::default() };
        if let Some(a) = &input.alias {
            batch.aliases.push(AliasChange::Set(a.clone(), id));
        }
        let alias = input.alias.clone();
        let state = self.state.clone();
        let apply = move || {
            let mut s = state.write().expect("state lock");
            s.keys.insert(id, Arc::new(live));
            if let Some(a) = alias {
                s.aliases.insert(a, id);
            }
            drop(guard);
        };
        self.commit(entry, batch, apply).await?;
        let aliases = input.alias.into_iter().collect();
        Ok((meta, aliases))
    }

    async fn commit(
        &self,
        entry: AuditEntry,
        batch: CommitBatch,
        apply: impl FnOnce() + Send + 'static,
    ) -> Result<(), KmsError> {
        self.audit
            .submit(entry, Some(Mutation { batch, apply: Box::new(apply) }))
            .await
            .map(|_| ())
            .map_err(KmsError::AuditUnavailable)
    }

    /// Applies `change` to the key named by `key` under the lifecycle lock,
    /// committing the new record with the audit entry.
    /// A change that turns out to be none (`Ok(None)`) is recorded when
    /// `record_noop` (a caller asked for it), and silently skipped otherwise
    /// (the system re-checking scheduled work).
    async fn change_key(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        record_version: Option<u32>,
        record_noop: bool,
        change: impl FnOnce(&LiveKey, &RootKey, i64) -> Result<Option<LiveKey>, KmsError>,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let mut entry = self.entry(caller, op);
        let guard = self.lifecycle.clone().lock_owned().await;
        let prepared = (|| {
            let live = self.resolve(&mut entry, "key_id", key)?;
            self.require(caller, Role::Admin, "change keys")?;
            let new = change(&live, &self.root, self.clock.now_ms())?;
            Ok((live, new))
        })();
        let (live, new) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(entry, Err(e)).await,
        };
        let aliases = self.state.read().expect("state lock").aliases_of(live.record.meta.id);
        let Some(new) = new else {
            // Nothing changes (for example enabling an enabled key): record only.
            entry.key_version = Some(record_version.unwrap_or(live.record.meta.primary_version));
            drop(guard);
            let meta = live.record.meta.clone();
            if !record_noop {
                return Ok((meta, aliases));
            }
            return self.finish(entry, Ok((meta, aliases))).await;
        };
        let meta = new.record.meta.clone();
        entry.key_version = Some(record_version.unwrap_or(meta.primary_version));
        let batch = CommitBatch { keys: vec![new.record.clone()], ..Default::default() };
        let state = self.state.clone();
        let id = meta.id;
        let apply = move || {
            state.write().expect("state lock").keys.insert(id, Arc::new(new));
            drop(guard);
        };
        self.commit(entry, batch, apply).await?;
        Ok((meta, aliases))
    }

    /// `RotateKey`: adds version n+1 and makes it primary.
    pub async fn rotate_key(&self, caller: &Caller, key: &str) -> Result<(KeyMeta, Vec<String>), KmsError> {
        // A manual rotation leaves the schedule alone.
        self.change_key(caller, Operation::RotateKey, key, None, true, |live, root, now| {
            rotated(live, root, now).map(Some)
        })
        .await
    }

    /// `UpdateRotationPolicy`: sets (or, with `None`s, clears) the rotation
    /// period and the usage cap. A period schedules the next rotation at
    /// `next_rotation_ms`, or one period from now.
    pub async fn update_rotation_policy(
        &self,
        caller: &Caller,
        key: &str,
        input: RotationInput,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_key(caller, Operation::UpdateRotationPolicy, key, None, true, move |live, _, now| {
            let meta = &live.record.meta;
            check_key_manageable(meta)?;
            let rotation = input.validate(now)?;
            let mut record = live.record.clone();
            record.meta.rotation = rotation;
            Ok(Some(LiveKey { record, secrets: live.secrets.clone() }))
        })
        .await
    }

    /// `ListKeyVersions`: every version with its state and usage.
    pub async fn list_key_versions(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<(KeyMeta, Vec<VersionInfo>), KmsError> {
        let mut entry = self.entry(caller, Operation::ListKeyVersions);
        let result = self.resolve(&mut entry, "key_id", key).and_then(|live| {
            self.require(caller, Role::Admin, "list key versions")?;
            let meta = live.record.meta.clone();
            let versions = meta
                .versions
                .iter()
                .map(|v| VersionInfo {
                    meta: v.clone(),
                    usage: self.usage.get(meta.id, v.version),
                    primary: v.version == meta.primary_version,
                })
                .collect();
            Ok((meta, versions))
        });
        self.finish(entry, result).await
    }

    /// `EnableKey`.
    pub async fn enable_key(&self, caller: &Caller, key: &str) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.set_key_state(caller, Operation::EnableKey, key, KeyState::Enabled).await
    }

    /// `DisableKey`.
    pub async fn disable_key(&self, caller: &Caller, key: &str) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.set_key_state(caller, Operation::DisableKey, key, KeyState::Disabled).await
    }

    async fn set_key_state(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        to: KeyState,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_key(caller, op, key, None, true, |live, _, _| {
            check_key_manageable(&live.record.meta)?;
            if live.record.meta.state == to {
                return Ok(None);
            }
            let mut record = live.record.clone();
            record.meta.state = to;
            Ok(Some(LiveKey { record, secrets: live.secrets.clone() }))
        })
        .await
    }

    /// Applies `f` to one version of a key (not the primary, if `not_primary`).
    async fn change_version(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: u32,
        not_primary: bool,
        f: impl FnOnce(&mut VersionMeta, i64) -> Result<bool, KmsError>,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_key(caller, op, key, Some(version), true, move |live, _, now| {
            let meta = &live.record.meta;
            check_key_manageable(meta)?;
            if meta.version(version).is_none() {
                return Err(KmsError::NotFound(format!("version {version} of key {}", meta.id)));
            }
            if not_primary && version == meta.primary_version {
                return Err(KmsError::FailedPrecondition(format!(
                    "version {version} is the primary version of key {}; rotate the key first",
                    meta.id
                )));
            }
            let mut record = live.record.clone();
            let v = record.meta.version_mut(version).expect("checked above");
            if !f(v, now)? {
                return Ok(None);
            }
            Ok(Some(LiveKey { record, secrets: live.secrets.clone() }))
        })
        .await
    }

    /// `DisableKeyVersion`: the version refuses Decrypt until enabled again.
    pub async fn disable_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.set_version_enabled(caller, Operation::DisableKeyVersion, key, version, false).await
    }

    /// `EnableKeyVersion`.
    pub async fn enable_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.set_version_enabled(caller, Operation::EnableKeyVersion, key, version, true).await
    }

    /// Moves a version between Enabled and Disabled (idempotent); only the
    /// primary version may not be disabled.
    async fn set_version_enabled(
        &self,
        caller: &Caller,
        op: Operation,
        key: &str,
        version: u32,
        enable: bool,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let to = if enable { VersionState::Enabled } else { VersionState::Disabled };
        self.change_version(caller, op, key, version, !enable, move |v, _| match v.state {
            VersionState::Enabled | VersionState::Disabled if v.state == to => Ok(false),
            VersionState::Enabled | VersionState::Disabled => {
                v.state = to;
                Ok(true)
            }
            other => Err(version_state_error(v.version, other)),
        })
        .await
    }

    /// `ScheduleKeyVersionDestruction`: after `days` (1..=365, default 30)
    /// the version's material is erased; until then `RestoreKeyVersion` undoes it.
    pub async fn schedule_key_version_destruction(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
        days: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let days = match days {
            0 => 30,
            d @ 1..=365 => d,
            _ => {
                let e = KmsError::invalid("pending_window_days", "must be between 1 and 365");
                return Err(self.refuse(caller, Operation::ScheduleKeyVersionDestruction, e).await);
            }
        };
        self.change_version(
            caller,
            Operation::ScheduleKeyVersionDestruction,
            key,
            version,
            true,
            move |v, now| match v.state {
                VersionState::Enabled | VersionState::Disabled => {
                    v.state = VersionState::ScheduledForDestruction;
                    v.destroy_ms = Some(now + i64::from(days) * DAY_MS);
                    Ok(true)
                }
                other => Err(version_state_error(v.version, other)),
            },
        )
        .await
    }

    /// `RestoreKeyVersion`: inside the window, the version comes back disabled.
    pub async fn restore_key_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_version(caller, Operation::RestoreKeyVersion, key, version, false, |v, _| match v.state {
            VersionState::ScheduledForDestruction => {
                v.state = VersionState::Disabled;
                v.destroy_ms = None;
                Ok(true)
            }
            other => Err(version_state_error(v.version, other)),
        })
        .await
    }

    /// `MarkKeyVersionCompromised`: one way. The version keeps its state,
    /// but its ciphertexts open only through ReEncrypt (to move them to a
    /// sound version), never through Decrypt. Not the primary version.
    pub async fn mark_key_version_compromised(
        &self,
        caller: &Caller,
        key: &str,
        version: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_version(caller, Operation::MarkKeyVersionCompromised, key, version, true, |v, _| match v
            .state
        {
            VersionState::Destroyed => Err(version_state_error(v.version, v.state)),
            _ if v.compromised => Ok(false),
            _ => {
                v.compromised = true;
                Ok(true)
            }
        })
        .await
    }

    /// `ScheduleKeyDeletion`: unusable at once; after `days` (7..=30,
    /// default 30) every version's material is erased.
    pub async fn schedule_key_deletion(
        &self,
        caller: &Caller,
        key: &str,
        days: u32,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let days = match days {
            0 => 30,
            d @ 7..=30 => d,
            _ => {
                let e = KmsError::invalid("pending_window_days", "must be between 7 and 30");
                return Err(self.refuse(caller, Operation::ScheduleKeyDeletion, e).await);
            }
        };
        self.change_key(caller, Operation::ScheduleKeyDeletion, key, None, true, move |live, _, now| {
            let meta = &live.record.meta;
            check_key_manageable(meta)?;
            let mut record = live.record.clone();
            record.meta.state = KeyState::PendingDeletion;
            record.meta.deletion_ms = Some(now + i64::from(days) * DAY_MS);
            Ok(Some(LiveKey { record, secrets: live.secrets.clone() }))
        })
        .await
    }

    /// `CancelKeyDeletion`: inside the window, the key comes back disabled.
    pub async fn cancel_key_deletion(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        self.change_key(caller, Operation::CancelKeyDeletion, key, None, true, |live, _, _| {
            let meta = &live.record.meta;
            if meta.state != KeyState::PendingDeletion {
                return Err(KmsError::FailedPrecondition(format!(
                    "key {} is {}, not pending deletion",
                    meta.id,
                    meta.state.as_str()
                )));
            }
            let mut record = live.record.clone();
            record.meta.state = KeyState::Disabled;
            record.meta.deletion_ms = None;
            Ok(Some(LiveKey { record, secrets: live.secrets.clone() }))
        })
        .await
    }

    /// Carries out what is due at the clock's time: keys whose deletion
    /// window ended are destroyed (every version's material erased, metadata
    /// kept, the id never reused), versions whose destruction window ended
    /// lose their material, and enabled keys whose scheduled rotation time
    /// has passed (also while the server was down) rotate once, with the
    /// next rotation one period from now. Each is audited as principal
    /// `system`. Returns how many were carried out. Called at start-up and
    /// periodically.
    pub async fn run_due(&self) -> Result<usize, KmsError> {
        let now = self.clock.now_ms();
        let due: Vec<(KeyId, Due)> = {
            let s = self.state.read().expect("state lock");
            let mut due = Vec::new();
            for (id, live) in &s.keys {
                let m = &live.record.meta;
                if m.state == KeyState::PendingDeletion && m.deletion_ms.is_some_and(|t| t <= now) {
                    due.push((*id, Due::DestroyKey));
                    continue;
                }
                for v in &m.versions {
                    if v.state == VersionState::ScheduledForDestruction
                        && v.destroy_ms.is_some_and(|t| t <= now)
                    {
                        due.push((*id, Due::DestroyVersion(v.version)));
                    }
                }
                if rotation_due(m, now) {
                    due.push((*id, Due::Rotate));
                }
            }
            due
        };
        let system = system_caller(format!("system-{now}"));
        let mut done = 0;
        for (id, what) in due {
            let key = id.to_string();
            let result = match what {
                Due::Rotate => {
                    self.change_key(
                        &system,
                        Operation::RotateKey,
                        &key,
                        None,
                        false,
                        move |live, root, now| {
                            if !rotation_due(&live.record.meta, now) {
                                return Ok(None);
                            }
                            let mut new = rotated(live, root, now)?;
                            let r = &mut new.record.meta.rotation;
                            r.next_rotation_ms = r.period_ms.map(|p| now + p);
                            Ok(Some(new))
                        },
                    )
                    .await
                }
                Due::DestroyKey => {
                    self.change_key(&system, Operation::DestroyKey, &key, None, false, move |live, _, now| {
                        let m = &live.record.meta;
                        if m.state != KeyState::PendingDeletion || m.deletion_ms.is_none_or(|t| t > now) {
                            return Ok(None);
                        }
                        let mut record = live.record.clone();
                        record.meta.state = KeyState::Destroyed;
                        record.meta.deletion_ms = None;
                        for v in &mut record.meta.versions {
                            v.state = VersionState::Destroyed;
                            v.destroy_ms = None;
                        }
                        record.wrapped.clear();
                        Ok(Some(LiveKey { record, secrets: BTreeMap::new() }))
                    })
                    .await
                }
                Due::DestroyVersion(v) => {
                    self.change_key(
                        &system,
                        Operation::DestroyKeyVersion,
                        &key,
                        Some(v),
                        false,
                        move |live, _, now| {
                            let m = &live.record.meta;
                            let Some(vm) = m.version(v) else { return Ok(None) };
                            if vm.state != VersionState::ScheduledForDestruction
                                || vm.destroy_ms.is_none_or(|t| t > now)
                            {
                                return Ok(None);
                            }
                            let mut record = live.record.clone();
                            let vm = record.meta.version_mut(v).expect("present");
                            vm.state = VersionState::Destroyed;
                            vm.destroy_ms = None;
                            record.wrapped.remove(&v);
                            let mut secrets = live.secrets.clone();
                            secrets.remove(&v);
                            Ok(Some(LiveKey { record, secrets }))
                        },
                    )
                    .await
                }
            };
            match result {
                Ok(_) => done += 1,
                Err(e) => {
                    tracing::error!(key = %id, due = ?what, error = %e, "scheduled work failed; will retry");
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// `GenerateRandom`: 1..=1024 bytes from the system CSPRNG.
    pub async fn generate_random(&self, caller: &Caller, n: u32) -> Result<DataKey, KmsError> {
        let entry = self.entry(caller, Operation::GenerateRandom);
        let result = (|| {
            self.require(caller, Role::User, "generate random bytes")?;
            if n == 0 || n as usize > self.limits.max_data_key_bytes {
                return Err(KmsError::invalid(
                    "number_of_bytes",
                    format!("must be between 1 and {}, got {n}", self.limits.max_data_key_bytes),
                ));
            }
            Ok(DataKey::generate(n as usize)?)
        })();
        self.finish(entry, result).await
    }

    /// `DescribeKey`.
    pub async fn describe_key(&self, caller: &Caller, key: &str) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let mut entry = self.entry(caller, Operation::DescribeKey);
        let result = self.resolve(&mut entry, "key_id", key).and_then(|live| {
            self.require(caller, Role::Admin, "describe keys")?;
            Ok(live)
        });
        let result = result.map(|live| {
            let aliases = self.state.read().expect("state lock").aliases_of(live.record.meta.id);
            (live.record.meta.clone(), aliases)
        });
        self.finish(entry, result).await
    }

    /// `ListKeys`: keys in id order, `page_size` at a time, after `page_token`.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<(KeyMeta, Vec<String>)>, Option<String>), KmsError> {
        let entry = self.entry(caller, Operation::ListKeys);
        let result = (|| {
            self.require(caller, Role::Admin, "list keys")?;
            let size = match page_size {
                0 => 100,
                n if n > 1000 => return Err(KmsError::invalid("page_size", "at most 1000")),
                n => n as usize,
            };
            let after = if page_token.is_empty() {
                None
            } else {
                Some(
                    page_token
                        .parse::<KeyId>()
                        .map_err(|_| KmsError::invalid("page_token", "not a token from ListKeys"))?,
                )
            };
            let s = self.state.read().expect("state lock");
            let range = match after {
                Some(a) => s.keys.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                None => s.keys.range(..),
            };
            let mut out: Vec<_> = range
                .take(size + 1)
                .map(|(id, live)| (live.record.meta.clone(), s.aliases_of(*id)))
                .collect();
            let next = if out.len() > size {
                out.truncate(size);
                out.last().map(|(m, _)| m.id.to_string())
            } else {
                None
            };
            Ok((out, next))
        })();
        self.finish(entry, result).await
    }

    /// `CreateAlias`: points a new alias at a key.
    pub async fn create_alias(
        &self,
        caller: &Caller,
        alias: &str,
        key: &str,
    ) -> Result<(KeyMeta, Vec<String>), KmsError> {
        let mut entry = self.entry(caller, Operation::CreateAlias);
        let guard = self.lifecycle.clone().lock_owned().await;
        let prepared = (|| {
            self.require(caller, Role::Admin, "manage aliases")?;
            crate::validate_alias("alias", alias)?;
            let live = self.resolve(&mut entry, "key_id", key)?;
            entry.alias = Some(alias.to_string());
            if matches!(live.record.meta.state, KeyState::Destroyed | KeyState::PendingDeletion) {
                return Err(KmsError::FailedPrecondition(format!(
                    "key {} is {}",
                    live.record.meta.id,
                    live.record.meta.state.as_str()
                )));
            }
            if self.state.read().expect("state lock").aliases.contains_key(alias) {
                return Err(KmsError::AlreadyExists(alias.to_string()));
            }
            Ok(live)
        })();
        let live = match prepared {
            Ok(l) => l,
            Err(e) => return self.finish(entry, Err(e)).await,
        };
        let id = live.record.meta.id;
        let mut aliases = self.state.read().expect("state lock").aliases_of(id);
        aliases.push(alias.to_string());
        aliases.sort();
        let batch =
            CommitBatch { aliases: vec![AliasChange::Set(alias.to_string(), id)], ..Default::default() };
        let state = self.state.clone();
        let a = alias.to_string();
        self.commit(entry, batch, move || {
            state.write().expect("state lock").aliases.insert(a, id);
            drop(guard);
        })
        .await?;
        Ok((live.record.meta.clone(), aliases))
    }

    /// `DeleteAlias`: removes an alias (the key is untouched).
    pub async fn delete_alias(&self, caller: &Caller, alias: &str) -> Result<(), KmsError> {
        let mut entry = self.entry(caller, Operation::DeleteAlias);
        let guard = self.lifecycle.clone().lock_owned().await;
        let prepared = (|| {
            self.require(caller, Role::Admin, "manage aliases")?;
            crate::validate_alias("alias", alias)?;
            entry.alias = Some(alias.to_string());
            let id = *self
                .state
                .read()
                .expect("state lock")
                .aliases
                .get(alias)
                .ok_or_else(|| KmsError::NotFound(alias.to_string()))?;
            entry.key_id = Some(id);
            Ok(id)
        })();
        if let Err(e) = prepared {
            return self.finish(entry, Err(e)).await;
        }
        let batch =
            CommitBatch { aliases: vec![AliasChange::Remove(alias.to_string())], ..Default::default() };
        let state = self.state.clone();
        let a = alias.to_string();
        self.commit(entry, batch, move || {
            state.write().expect("state lock").aliases.remove(&a);
            drop(guard);
        })
        .await
    }

    // ------------------------------------------------------------ audit

    /// `QueryAuditLog`. The query itself is audited. `key` may be an id or alias.
    pub async fn query_audit(
        &self,
        caller: &Caller,
        key: &str,
        page_token: &str,
        mut query: AuditQuery,
    ) -> Result<AuditPage, KmsError> {
        let mut entry = self.entry(caller, Operation::QueryAuditLog);
        let result = (|| {
            self.require(caller, Role::Auditor, "read the audit log")?;
            if !page_token.is_empty() {
                let c = page_token
                    .parse::<u64>()
                    .map_err(|_| KmsError::invalid("page_token", "not a token from QueryAuditLog"))?;
                query.cursor = Some(c);
            }
            if !key.is_empty() {
                let r = KeyRef::parse("key_id", key)?;
                entry.alias = r.alias().map(str::to_string);
                let id = match &r {
                    KeyRef::Id(id) => *id,
                    // An alias must exist now; an id may name a deleted key.
                    KeyRef::Alias(_) => self.state.read().expect("state lock").resolve(&r)?.record.meta.id,
                };
                entry.key_id = Some(id);
                query.key_id = Some(id);
            }
            if query.limit == 0 {
                query.limit = 100;
            }
            if query.limit > 1000 {
                return Err(KmsError::invalid("page_size", "at most 1000"));
            }
            if let (Some(s), Some(e)) = (query.start_ms, query.end_ms) {
                if s > e {
                    return Err(KmsError::invalid("start_time", "must not be after end_time"));
                }
            }
            self.store.query_audit(&query).map_err(KmsError::Store)
        })();
        self.finish(entry, result).await
    }

    /// `VerifyAuditLog`: walks the hash chain.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<VerifyReport, KmsError> {
        let entry = self.entry(caller, Operation::VerifyAuditLog);
        let result = match self.require(caller, Role::Auditor, "verify the audit log") {
            Err(e) => Err(e),
            Ok(()) => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || crate::verify_chain(&*store))
                    .await
                    .map_err(|e| KmsError::Internal(e.to_string()))
                    .and_then(|r| r.map_err(KmsError::Store))
            }
        };
        self.finish(entry, result).await
    }
}

/// Why [`Kms::open`] refused to start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The root key does not match the data folder.
    #[error("the root key does not match this data folder (its check value differs, or a stored key cannot be unwrapped)")]
    WrongRootKey,
    /// Keys exist but no check value does.
    #[error("the data folder holds keys but no root-key check value; refusing to guess")]
    MissingCheck,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Scheduled work found by [`Kms::run_due`].
#[derive(Debug, Clone, Copy)]
enum Due {
    Rotate,
    DestroyKey,
    DestroyVersion(u32),
}

/// The operation recorded and the permission checked for a data key.
fn data_key_op(with_plaintext: bool) -> (Operation, Permission) {
    if with_plaintext {
        (Operation::GenerateDataKey, Permission::GenerateDataKey)
    } else {
        (Operation::GenerateDataKeyWithoutPlaintext, Permission::GenerateDataKeyWithoutPlaintext)
    }
}

fn rotation_due(meta: &KeyMeta, now: i64) -> bool {
    meta.state == KeyState::Enabled && meta.rotation.next_rotation_ms.is_some_and(|t| t <= now)
}

/// The principal scheduled and automatic work is recorded under.
fn system_caller(request_id: String) -> Caller {
    Caller {
        request_id,
        principal: "system".into(),
        peer: String::new(),
        policy: Arc::new(Policy::everything()),
    }
}

/// The key with a fresh version n+1 as primary (the schedule untouched).
fn rotated(live: &LiveKey, root: &RootKey, now: i64) -> Result<LiveKey, KmsError> {
    check_key_usable(&live.record.meta)?;
    let mut record = live.record.clone();
    let next = record.meta.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    let secret = VersionSecret::generate()?;
    let wrapped: WrappedVersionSecret = root.wrap(record.meta.id.as_bytes(), next, &secret)?;
    record.wrapped.insert(next, wrapped.as_bytes().to_vec());
    record.meta.versions.push(VersionMeta::new(next, now));
    record.meta.primary_version = next;
    let mut secrets = live.secrets.clone();
    secrets.insert(next, Arc::new(secret));
    Ok(LiveKey { record, secrets })
}

fn version_state_error(version: u32, state: VersionState) -> KmsError {
    KmsError::FailedPrecondition(format!("version {version} is {}", state.as_str()))
}

/// Lifecycle changes need a key that is enabled or disabled (not pending
/// deletion, not destroyed).
fn check_key_manageable(meta: &KeyMeta) -> Result<(), KmsError> {
    match meta.state {
        KeyState::Enabled | KeyState::Disabled => Ok(()),
        other => Err(KmsError::FailedPrecondition(format!("key {} is {}", meta.id, other.as_str()))),
    }
}

fn check_key_usable(meta: &KeyMeta) -> Result<(), KmsError> {
    match meta.state {
        KeyState::Enabled => Ok(()),
        other => Err(KmsError::FailedPrecondition(format!("key {} is {}", meta.id, other.as_str()))),
    }
}

fn primary(live: &LiveKey) -> Result<(u32, Arc<VersionSecret>), KmsError> {
    let meta = &live.record.meta;
    check_key_usable(meta)?;
    let v = meta.primary_version;
    let secret = live.secrets.get(&v).cloned().ok_or_else(|| {
        KmsError::Internal(format!("primary version {v} of key {} has no material", meta.id))
    })?;
    Ok((v, secret))
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), KmsError> {
    if labels.len() > 64 {
        return Err(KmsError::invalid("labels", "at most 64 labels allowed"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 63 || v.len() > 255 {
            return Err(KmsError::invalid("labels", "keys must be 1-63 bytes and values at most 255 bytes"));
        }
    }
    Ok(())
}

fn unwrap_record(root: &RootKey, record: KeyRecord) -> Result<LiveKey, keyward_crypto::CryptoError> {
    let mut secrets = BTreeMap::new();
    for (v, bytes) in &record.wrapped {
        let w = WrappedVersionSecret::from_stored(bytes.clone());
        secrets.insert(*v, Arc::new(root.unwrap(record.meta.id.as_bytes(), *v, &w)?));
    }
    Ok(LiveKey { record, secrets })
}
