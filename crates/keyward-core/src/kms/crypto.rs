//! Crypto operations: Encrypt, Decrypt, GenerateDataKey (one or a batch),
//! ReEncrypt and GenerateRandom. Seal under the primary version (taking a
//! usage-cap slot first, see `rotation.rs`); open under the version the
//! ciphertext header names.

use std::collections::HashMap;
use std::sync::Arc;

use keyward_crypto::{CiphertextHeader, CryptoError, DataKey, EncryptionContext, Plaintext, VersionSecret};

use super::{check_key_usable, Caller, Kms, LiveKey, MAX_BATCH_ITEMS};
use crate::{AuditEntry, KeyId, KeyRef, KmsError, Operation, Permission, Role, VersionState};

/// The reason of the `InvalidArgument` a Decrypt or ReEncrypt gets when
/// the key it names is not the one its ciphertext was made under (edges
/// that have their own error for it, AWS's IncorrectKeyException, match it).
pub const WRONG_KEY: &str = "the ciphertext was not made under this key";

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

/// Arguments of `GenerateDataKey` (with or without plaintext).
#[derive(Debug, Clone, Default)]
pub struct DataKeyInput {
    /// The key (id or alias) to seal the data key under.
    pub key: String,
    /// Length of the data key; `None`: 32 bytes.
    pub number_of_bytes: Option<u32>,
    /// The encryption context bound to the sealed data key.
    pub context: HashMap<String, String>,
    /// Whether the plaintext data key is returned too.
    pub with_plaintext: bool,
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

/// Arguments of `ReEncrypt`: named fields, so source and destination cannot
/// be swapped silently.
#[derive(Debug, Clone, Default)]
pub struct ReEncryptInput {
    /// The ciphertext to move.
    pub ciphertext: Vec<u8>,
    /// The context it was sealed with.
    pub source_context: HashMap<String, String>,
    /// If given, the ciphertext must have been made under this key.
    pub source_key: Option<String>,
    /// The key to seal under (its primary version).
    pub destination_key: String,
    /// The context of the new ciphertext.
    pub destination_context: HashMap<String, String>,
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

/// Which request opens a ciphertext: it decides the pin field's name, the
/// permission checked and where the audit record names the key.
#[derive(Debug, Clone, Copy)]
enum Side {
    Decrypt,
    ReEncryptSource,
}

impl Kms {
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
            self.pre_authorize(caller, Permission::Encrypt, &live)?;
            let ctx = self.context("encryption_context", context)?;
            entry.context = ctx.pairs().clone();
            self.authorize(caller, Permission::Encrypt, &live, &ctx)?;
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

    /// `Decrypt`: opens a ciphertext under the key and version its header
    /// names; with `pinned_key`, only if that is the key.
    pub async fn decrypt(
        &self,
        caller: &Caller,
        ciphertext: &[u8],
        context: HashMap<String, String>,
        pinned_key: Option<&str>,
    ) -> Result<DecryptOutput, KmsError> {
        let mut entry = self.entry(caller, Operation::Decrypt);
        let result = (|| {
            let ctx = self.context("encryption_context", context)?;
            entry.context = ctx.pairs().clone();
            let (live, version, plaintext) =
                self.open_ciphertext(caller, &mut entry, Side::Decrypt, ciphertext, &ctx, pinned_key)?;
            entry.key_id = Some(live.meta().id);
            entry.key_version = Some(version);
            Ok(DecryptOutput { plaintext, key_id: live.meta().id, key_version: version })
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
        pinned_key: Option<&str>,
    ) -> Result<(Arc<LiveKey>, u32, Plaintext), KmsError> {
        if ciphertext.is_empty() {
            return Err(KmsError::invalid("ciphertext", "must not be empty"));
        }
        self.check_current()?;
        let header = CiphertextHeader::parse(ciphertext)?;
        let id = KeyId::from_bytes(header.key_id);
        let (pin_field, perm) = match side {
            Side::Decrypt => ("key_id", Permission::Decrypt),
            Side::ReEncryptSource => ("source_key_id", Permission::ReEncryptFrom),
        };
        if let Some(pinned_key) = pinned_key {
            let r = KeyRef::parse(pin_field, pinned_key)?;
            entry.alias = r.alias().map(str::to_string);
            let pinned = self.state.read().expect("state lock").resolve(&r)?;
            if pinned.meta().id != id {
                return Err(KmsError::invalid(pin_field, WRONG_KEY));
            }
        }
        // An unknown key in the header is reported like any other bad
        // ciphertext: a foreign or forged ciphertext learns nothing.
        let undecryptable = || KmsError::InvalidCiphertext(CryptoError::Undecryptable);
        let live = self.state.read().expect("state lock").keys.get(&id).cloned().ok_or_else(undecryptable)?;
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
        self.authorize(caller, perm, &live, ctx)?;
        let meta = live.meta();
        check_key_usable(meta)?;
        let vmeta = meta.version(header.version).ok_or_else(undecryptable)?;
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
        input: DataKeyInput,
    ) -> Result<DataKeyOutput, KmsError> {
        let (op, perm) = data_key_op(input.with_plaintext);
        let mut entry = self.entry(caller, op);
        let result = async {
            let live = self.resolve(&mut entry, "key_id", &input.key)?;
            self.pre_authorize(caller, perm, &live)?;
            let ctx = self.context("encryption_context", input.context)?;
            entry.context = ctx.pairs().clone();
            self.authorize(caller, perm, &live, &ctx)?;
            let n = input.number_of_bytes.unwrap_or(32) as usize;
            if n == 0 || n > self.limits.max_data_key_bytes {
                return Err(KmsError::invalid(
                    "number_of_bytes",
                    format!("must be between 1 and {}, got {n}", self.limits.max_data_key_bytes),
                ));
            }
            let (id, version, secret) = self.seal_version(caller, live).await?;
            entry.key_version = Some(version);
            let (data_key, ciphertext) =
                keyward_crypto::seal_new_data_key(&secret, id.as_bytes(), version, &ctx, n)?;
            Ok(DataKeyOutput {
                plaintext: input.with_plaintext.then_some(data_key),
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
    pub async fn generate_data_keys(
        &self,
        caller: &Caller,
        input: DataKeyInput,
        count: u32,
    ) -> Result<Vec<DataKeyOutput>, KmsError> {
        // Checked once, so a refused batch is one record, not `count`.
        let (op, perm) = data_key_op(input.with_plaintext);
        let mut entry = self.entry(caller, op);
        let check = (|| {
            if count == 0 || count as usize > MAX_BATCH_ITEMS {
                return Err(KmsError::invalid(
                    "count",
                    format!("must be between 1 and {MAX_BATCH_ITEMS}, got {count}"),
                ));
            }
            let live = self.resolve(&mut entry, "key_id", &input.key)?;
            self.pre_authorize(caller, perm, &live)?;
            let ctx = self.context("encryption_context", input.context.clone())?;
            entry.context = ctx.pairs().clone();
            self.authorize(caller, perm, &live, &ctx)?;
            check_key_usable(live.meta())
        })();
        if let Err(e) = check {
            return self.finish(entry, Err(e)).await;
        }
        let each = (0..count).map(|_| self.generate_data_key(caller, input.clone()));
        futures_util::future::join_all(each).await.into_iter().collect()
    }

    /// `ReEncrypt`: opens under the source key and seals under the
    /// destination key's primary version; the plaintext stays in here.
    pub async fn re_encrypt(
        &self,
        caller: &Caller,
        input: ReEncryptInput,
    ) -> Result<ReEncryptOutput, KmsError> {
        let mut entry = self.entry(caller, Operation::ReEncrypt);
        let result = async {
            let dest = self.resolve(&mut entry, "destination_key_id", &input.destination_key)?;
            self.pre_authorize(caller, Permission::ReEncryptTo, &dest)?;
            let src_ctx = self.context("source_encryption_context", input.source_context)?;
            let dst_ctx = self.context("destination_encryption_context", input.destination_context)?;
            entry.context = dst_ctx.pairs().clone();
            self.authorize(caller, Permission::ReEncryptTo, &dest, &dst_ctx)?;
            let dest_alias = entry.alias.take();
            let (src, src_version, plaintext) = self.open_ciphertext(
                caller,
                &mut entry,
                Side::ReEncryptSource,
                &input.ciphertext,
                &src_ctx,
                input.source_key.as_deref(),
            )?;
            entry.alias = dest_alias.or(entry.alias.take());
            entry.source_key_id = Some(src.meta().id);
            entry.source_key_version = Some(src_version);
            let (id, version, secret) = self.seal_version(caller, dest).await?;
            entry.key_version = Some(version);
            let ciphertext =
                keyward_crypto::seal(&secret, id.as_bytes(), version, &dst_ctx, plaintext.expose_secret())?;
            Ok(ReEncryptOutput {
                ciphertext,
                source_key_id: src.meta().id,
                source_key_version: src_version,
                key_id: id,
                key_version: version,
            })
        }
        .await;
        self.finish(entry, result).await
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

    /// The version to seal under: the primary, or for a key with a usage
    /// cap, a version with a seal slot left (see `rotation.rs`).
    async fn seal_version(
        &self,
        caller: &Caller,
        live: Arc<LiveKey>,
    ) -> Result<(KeyId, u32, Arc<VersionSecret>), KmsError> {
        let id = live.meta().id;
        let (version, secret) = primary(&live)?;
        let Some(cap) = live.meta().rotation.max_encryptions_per_version else {
            return Ok((id, version, secret));
        };
        if let Some(cluster) = &self.cluster {
            return self.seal_leased(cluster, caller, id, version, secret, cap).await;
        }
        if self.usage.reserve(id, version, cap) {
            return Ok((id, version, secret));
        }
        self.rotate_for_cap(caller, id, cap).await
    }
}

/// The operation recorded and the permission checked for a data key.
fn data_key_op(with_plaintext: bool) -> (Operation, Permission) {
    if with_plaintext {
        (Operation::GenerateDataKey, Permission::GenerateDataKey)
    } else {
        (Operation::GenerateDataKeyWithoutPlaintext, Permission::GenerateDataKeyWithoutPlaintext)
    }
}

/// The key's primary version and its secret; the key must be enabled.
fn primary(live: &LiveKey) -> Result<(u32, Arc<VersionSecret>), KmsError> {
    let meta = live.meta();
    check_key_usable(meta)?;
    let v = meta.primary_version;
    let secret = live.secrets.get(&v).cloned().ok_or_else(|| {
        KmsError::Internal(format!("primary version {v} of key {} has no material", meta.id))
    })?;
    Ok((v, secret))
}
