//! `RotateRootKey`: everything the root key protects, rewritten under a new
//! one in one atomic write with its audit record.
//!
//! Under the lifecycle lock (so no key, version, alias or access change
//! runs meanwhile): every version secret still held is wrapped under the new
//! key, every key record, alias and access record re-tagged under the new
//! record key, every access-key secret and the audit signing key re-sealed,
//! and the new check value written, together with the record, in one synced
//! batch. The store then purges what the old key protected from its files.
//! The old root key no longer opens the store; every ciphertext made before
//! still decrypts (the version secrets themselves do not change).
//!
//! This `Kms` is then retired: it still answers crypto requests from memory,
//! but refuses every change (its root key is the old one) until the server
//! replaces it with a `Kms` opened under the new key.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use keyward_crypto::{RecordKey, RootKey};

use super::{Caller, Kms};
use crate::committer::Mutation;
use crate::directory::ACCESS_SECRET_LEN;
use crate::{integrity, AccessRecord, AliasEntry, CommitBatch, KmsError, Operation, Rekey, Role};

/// What a rotation rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRotation {
    /// Key records.
    pub keys: usize,
    /// Version secrets re-wrapped.
    pub versions: usize,
    /// Aliases re-tagged.
    pub aliases: usize,
    /// Access records re-tagged (access keys re-sealed).
    pub access: usize,
}

impl Kms {
    /// `RotateRootKey` (admin): see the module documentation. After it
    /// returns `Ok`, this `Kms` is retired; open a new one under `new_root`.
    pub async fn rotate_root_key(
        &self,
        caller: &Caller,
        new_root: RootKey,
    ) -> Result<RootRotation, KmsError> {
        let mut entry = self.entry(caller, Operation::RotateRootKey);
        if !caller.policy.has(Role::Admin) {
            let e = KmsError::PermissionDenied(format!("{} may not rotate the root key", caller.principal));
            return self.finish(entry, Err(e)).await;
        }
        if self.cluster.is_some() {
            let e = KmsError::FailedPrecondition(
                "root-key rotation is not supported in cluster mode yet: the keys live in etcd, shared by every node".into(),
            );
            return self.finish(entry, Err(e)).await;
        }
        let guard = self.lifecycle.clone().lock_owned().await;
        let planned = self.plan_rekey(&new_root);
        let (rekey, done) = match planned {
            Ok(p) => p,
            Err(e) => {
                drop(guard);
                return self.finish(entry, Err(e)).await;
            }
        };
        entry.target = Some(format!(
            "root key: {} keys, {} version secrets re-wrapped; {} aliases, {} access records re-tagged",
            done.keys, done.versions, done.aliases, done.access
        ));
        let batch = CommitBatch { rekey: Some(Box::new(rekey)), ..Default::default() };
        let retired = self.retired.clone();
        let apply = move || {
            retired.store(true, Ordering::SeqCst);
            drop(guard);
        };
        // Waited for to the end once the writer has taken it: a big store's
        // rewrite may take longer than a request's deadline, and its outcome
        // decides which root key opens the store.
        self.audit
            .submit_with(entry, Some(Mutation { batch, apply: Box::new(apply) }), true)
            .await
            .map_err(KmsError::AuditUnavailable)?;
        tracing::warn!(
            keys = done.keys,
            versions = done.versions,
            "root key rotated: the old root key no longer opens this store"
        );
        Ok(done)
    }

    /// Whether a root-key rotation retired this `Kms` (it refuses changes).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The refusal of a change on a retired `Kms`.
    pub(super) fn check_not_retired(&self) -> Result<(), KmsError> {
        if self.is_retired() {
            Err(KmsError::Sealed(
                "the root key was just rotated and the service is reopening under the new one; retry".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Everything the new root key must protect, from memory (under the
    /// lifecycle lock, memory is what the store holds) and the store.
    fn plan_rekey(&self, new_root: &RootKey) -> Result<(Rekey, RootRotation), KmsError> {
        self.check_not_retired()?;
        if self.root.matches(&new_root.check_value()) {
            return Err(KmsError::FailedPrecondition("the new root key is the current one".into()));
        }
        let internal = |e: keyward_crypto::CryptoError| KmsError::Internal(format!("re-wrapping: {e}"));
        let records = RecordKey::derive(new_root);
        let (keys, aliases, versions) = {
            let state = self.state.read().expect("state lock");
            let mut versions = 0;
            let mut keys = Vec::with_capacity(state.keys.len());
            for live in state.keys.values() {
                let mut record = live.record.clone();
                for (v, wrapped) in record.wrapped.iter_mut() {
                    let secret = live.secrets.get(v).ok_or_else(|| {
                        KmsError::Internal(format!("key {} v{v}: secret not in memory", live.meta().id))
                    })?;
                    *wrapped = new_root.wrap(live.meta().id.as_bytes(), *v, secret).map_err(internal)?;
                    versions += 1;
                }
                record.tag = Some(integrity::tag_key(&records, &record));
                keys.push(record);
            }
            let aliases: Vec<AliasEntry> = state
                .aliases
                .iter()
                .map(|(alias, key)| AliasEntry {
                    alias: alias.clone(),
                    key: *key,
                    tag: Some(integrity::tag_alias(&records, alias, *key)),
                })
                .collect();
            (keys, aliases, versions)
        };
        let mut access = self.store.load_access().map_err(KmsError::Store)?;
        for r in &mut access {
            if let AccessRecord::AccessKey(k) = r {
                let secret = self
                    .root
                    .open_access_secret(&k.id, &k.sealed_secret, ACCESS_SECRET_LEN)
                    .map_err(internal)?;
                k.sealed_secret = new_root.seal_access_secret(&k.id, &secret).map_err(internal)?;
            }
            let tag = integrity::tag_access(&records, r);
            r.set_tag(tag);
        }
        let mut signer = self
            .store
            .audit_signer()
            .map_err(KmsError::Store)?
            .ok_or_else(|| KmsError::Internal("no audit signing key stored".into()))?;
        let key =
            self.root.unseal_signing_key(signer.node_id.as_bytes(), &signer.sealed_key).map_err(internal)?;
        signer.sealed_key = new_root.seal_signing_key(signer.node_id.as_bytes(), &key).map_err(internal)?;
        let done = RootRotation { keys: keys.len(), versions, aliases: aliases.len(), access: access.len() };
        let rekey = Rekey { keys, aliases, access, signer, root_check: new_root.check_value().0 };
        Ok((rekey, done))
    }
}

/// Shared so the committer's apply can retire the `Kms` it came from.
pub(super) type Retired = Arc<std::sync::atomic::AtomicBool>;
