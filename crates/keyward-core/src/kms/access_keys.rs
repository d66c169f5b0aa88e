//! Access keys: the credentials AWS SigV4 clients sign requests with
//! (`CreateAccessKey`, `ListAccessKeys`, `RevokeAccessKey`; admin role, every
//! call audited), and the lookup the AWS edge makes per request.
//!
//! SigV4 is an HMAC under a key derived from the secret, so the verifier
//! needs the secret itself: it is stored sealed under the root key, bound to
//! the key's id, and opened only for the request that presents the id. A
//! revocation goes through the same path as every access change, so the
//! next request with the key is refused.

use std::sync::Arc;

use super::access::principal_target;
use super::{Caller, Kms};
use crate::{
    is_access_key_id, AccessChange, AccessKeyRecord, AccessRecord, AccessRecordKey, KmsError, Operation,
    Policy, Role, ACCESS_SECRET_LEN,
};

/// An access key as `ListAccessKeys` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyView {
    /// Its id (`KWAK...`, 20 characters).
    pub id: String,
    /// Whose it is.
    pub principal: String,
    /// Created, Unix ms.
    pub created_ms: i64,
}

/// An access key just created: the secret is shown once, here.
pub struct NewAccessKey {
    /// The secret access key (40 characters); never stored in the clear,
    /// never logged.
    pub secret: zeroize::Zeroizing<String>,
    /// What `ListAccessKeys` will show of it.
    pub view: AccessKeyView,
}

impl std::fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccessKey").field("secret", &"REDACTED").field("view", &self.view).finish()
    }
}

/// What a known access key stands for, with its secret for the verifier.
pub struct AccessKeyIdentity {
    /// The principal.
    pub principal: String,
    /// Its policy now.
    pub policy: Arc<Policy>,
    /// The secret, to verify the request's signature with (wiped on drop).
    pub secret: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for AccessKeyIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyIdentity")
            .field("principal", &self.principal)
            .field("secret", &"REDACTED")
            .finish_non_exhaustive()
    }
}

/// Why an access key id was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessKeyRefusal {
    /// Unknown or revoked (or not an access key id at all).
    Unknown,
    /// Its principal no longer exists.
    NoPrincipal,
}

impl AccessKeyRefusal {
    /// The caller-facing reason.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Unknown => "the security token included in the request is invalid",
            Self::NoPrincipal => "the access key's principal no longer exists",
        }
    }
}

fn key_target(id: &str, principal: &str) -> String {
    crate::bounded(&format!("access_key:{id} principal:{principal}"), 256)
}

impl Kms {
    /// Looks up an access key by id: its principal, policy and secret.
    pub fn identify_access_key(&self, id: &str) -> Result<AccessKeyIdentity, AccessKeyRefusal> {
        if !is_access_key_id(id) {
            return Err(AccessKeyRefusal::Unknown);
        }
        let (principal, policy, sealed) = {
            let dir = self.access.read().expect("access lock");
            let k = dir.access_keys.get(id).ok_or(AccessKeyRefusal::Unknown)?;
            let policy = dir.policy(&k.principal).ok_or(AccessKeyRefusal::NoPrincipal)?;
            (k.principal.clone(), policy, k.sealed_secret.clone())
        };
        // Tagged at load and at every change: a record that does not open is
        // not one this root key sealed; refused like an unknown key.
        let secret = self
            .root
            .open_access_secret(id, &sealed, ACCESS_SECRET_LEN)
            .map_err(|_| AccessKeyRefusal::Unknown)?;
        Ok(AccessKeyIdentity { principal, policy, secret })
    }

    /// `CreateAccessKey`: a new access key for a principal. The secret is
    /// in the answer once.
    pub async fn create_access_key(
        &self,
        caller: &Caller,
        principal: &str,
    ) -> Result<NewAccessKey, KmsError> {
        let root = self.root.clone();
        self.access_change(
            caller,
            Operation::CreateAccessKey,
            principal_target(principal),
            true,
            |entry, dir, now| {
                if principal.is_empty() {
                    return Err(KmsError::invalid("principal", "must not be empty"));
                }
                if !dir.exists(principal) {
                    return Err(KmsError::NotFound(format!("principal {principal:?}")));
                }
                let (id, secret) = crate::directory::new_access_key()?;
                let sealed_secret = root.seal_access_secret(&id, secret.as_bytes())?;
                entry.target = Some(key_target(&id, principal));
                let view =
                    AccessKeyView { id: id.clone(), principal: principal.to_string(), created_ms: now };
                let record = AccessKeyRecord {
                    id,
                    principal: principal.to_string(),
                    sealed_secret,
                    created_ms: now,
                    tag: None,
                };
                Ok((vec![AccessChange::Put(AccessRecord::AccessKey(record))], NewAccessKey { secret, view }))
            },
        )
        .await
    }

    /// `RevokeAccessKey`: effective for the very next request.
    pub async fn revoke_access_key(&self, caller: &Caller, id: &str) -> Result<(), KmsError> {
        let target = is_access_key_id(id).then(|| format!("access_key:{id}"));
        self.access_change(caller, Operation::RevokeAccessKey, target, true, |entry, dir, _| {
            if !is_access_key_id(id) {
                return Err(KmsError::invalid(
                    "access_key_id",
                    "expected an access key id (KWAK and 16 characters A-Z, 2-7)",
                ));
            }
            let Some(k) = dir.access_keys.get(id) else {
                return Err(KmsError::NotFound(format!("access key {id}")));
            };
            entry.target = Some(key_target(id, &k.principal));
            Ok((vec![AccessChange::Delete(AccessRecordKey::AccessKey(id.to_string()))], ()))
        })
        .await
    }

    /// `ListAccessKeys`: every access key, or one principal's, by id.
    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        principal: Option<&str>,
    ) -> Result<Vec<AccessKeyView>, KmsError> {
        let mut entry = self.entry(caller, Operation::ListAccessKeys);
        entry.target = principal.and_then(principal_target);
        let result = self.require(caller, Role::Admin, "list access keys").map(|()| {
            let dir = self.access.read().expect("access lock");
            dir.access_keys
                .values()
                .filter(|k| principal.is_none_or(|p| k.principal == p))
                .map(|k| AccessKeyView {
                    id: k.id.clone(),
                    principal: k.principal.clone(),
                    created_ms: k.created_ms,
                })
                .collect()
        });
        self.finish(entry, result).await
    }
}
