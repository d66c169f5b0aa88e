//! Who may do what with which key.
//!
//! A principal holds roles: `admin` (the KeyService lifecycle), `user`
//! (CryptoService, only on the keys and operations its grants name) and
//! `auditor` (the AuditService). A principal may hold several. Grants select
//! keys by id, alias or label, and name the crypto operations they allow —
//! data keys with and without plaintext are separate permissions, and
//! ReEncrypt needs `re-encrypt-from` on the source key and `re-encrypt-to` on
//! the destination key.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::{KeyId, KeyMeta};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Key lifecycle (KeyService).
    Admin,
    /// Crypto operations on granted keys (CryptoService).
    User,
    /// The audit log (AuditService).
    Auditor,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            "auditor" => Ok(Self::Auditor),
            other => Err(format!("unknown role {other:?} (admin, user, auditor)")),
        }
    }
}

/// A crypto permission a grant can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
    /// `GenerateDataKey` (returns plaintext).
    GenerateDataKey,
    /// `GenerateDataKeyWithoutPlaintext`.
    GenerateDataKeyWithoutPlaintext,
    /// `ReEncrypt`, on the source key.
    ReEncryptFrom,
    /// `ReEncrypt`, on the destination key.
    ReEncryptTo,
}

impl Permission {
    /// Every permission (what `*` means).
    pub const ALL: [Permission; 6] = [
        Self::Encrypt,
        Self::Decrypt,
        Self::GenerateDataKey,
        Self::GenerateDataKeyWithoutPlaintext,
        Self::ReEncryptFrom,
        Self::ReEncryptTo,
    ];

    /// Config name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::GenerateDataKey => "generate-data-key",
            Self::GenerateDataKeyWithoutPlaintext => "generate-data-key-without-plaintext",
            Self::ReEncryptFrom => "re-encrypt-from",
            Self::ReEncryptTo => "re-encrypt-to",
        }
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown operation {s:?} (encrypt, decrypt, generate-data-key, generate-data-key-without-plaintext, re-encrypt-from, re-encrypt-to, *)"))
    }
}

/// Which keys a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    /// Every key (`*`).
    Any,
    /// One key by id.
    Id(KeyId),
    /// Keys an alias points at (now).
    Alias(String),
    /// Keys carrying a label (`label:k=v`).
    Label(String, String),
}

impl FromStr for KeySelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(l) = s.strip_prefix("label:") {
            let (k, v) =
                l.split_once('=').ok_or_else(|| format!("{s:?}: a label selector is label:key=value"))?;
            return Ok(Self::Label(k.to_string(), v.to_string()));
        }
        if s.starts_with("alias/") {
            crate::validate_alias("grants.keys", s).map_err(|e| e.to_string())?;
            return Ok(Self::Alias(s.to_string()));
        }
        s.parse::<KeyId>()
            .map(Self::Id)
            .map_err(|_| format!("{s:?}: expected a key UUID, alias/<name>, label:k=v or *"))
    }
}

impl KeySelector {
    fn covers(&self, meta: &KeyMeta, aliases: &dyn Fn() -> Vec<String>) -> bool {
        match self {
            Self::Any => true,
            Self::Id(id) => *id == meta.id,
            Self::Alias(a) => aliases().iter().any(|x| x == a),
            Self::Label(k, v) => meta.labels.get(k) == Some(v),
        }
    }
}

/// Keys and the operations allowed on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Which keys.
    pub keys: Vec<KeySelector>,
    /// Which operations.
    pub permissions: BTreeSet<Permission>,
}

/// What one principal may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Roles held.
    pub roles: BTreeSet<Role>,
    /// Crypto grants (meaningful with the `user` role).
    pub grants: Vec<Grant>,
}

impl Policy {
    /// Every role, every key, every operation (the development principal).
    pub fn everything() -> Self {
        Self {
            roles: [Role::Admin, Role::User, Role::Auditor].into(),
            grants: vec![Grant { keys: vec![KeySelector::Any], permissions: Permission::ALL.into() }],
        }
    }

    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the principal may use `perm` on the key. `aliases` lists the
    /// key's aliases; it is called only if an alias selector needs it.
    pub fn allows(&self, perm: Permission, meta: &KeyMeta, aliases: &dyn Fn() -> Vec<String>) -> bool {
        self.has(Role::User)
            && self
                .grants
                .iter()
                .any(|g| g.permissions.contains(&perm) && g.keys.iter().any(|k| k.covers(meta, aliases)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyState, VersionMeta};

    fn meta() -> KeyMeta {
        KeyMeta {
            id: KeyId::generate(),
            description: String::new(),
            labels: [("team".to_string(), "pay".to_string())].into(),
            state: KeyState::Enabled,
            created_ms: 0,
            primary_version: 1,
            versions: vec![VersionMeta::new(1, 0)],
            deletion_ms: None,
            rotation: Default::default(),
        }
    }

    #[test]
    fn grants_select_by_id_alias_label() {
        let m = meta();
        let aliases = || vec!["alias/pay".to_string()];
        let p = |sel: &str, perm: Permission| Policy {
            roles: [Role::User].into(),
            grants: vec![Grant { keys: vec![sel.parse().unwrap()], permissions: [perm].into() }],
        };
        assert!(p(&m.id.to_string(), Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases));
        assert!(p("alias/pay", Permission::Decrypt).allows(Permission::Decrypt, &m, &aliases));
        assert!(p("label:team=pay", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases));
        assert!(!p("label:team=ops", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases));
        assert!(!p("alias/other", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases));
        // Data keys with and without plaintext are separate.
        let np = p("*", Permission::GenerateDataKeyWithoutPlaintext);
        assert!(np.allows(Permission::GenerateDataKeyWithoutPlaintext, &m, &aliases));
        assert!(!np.allows(Permission::GenerateDataKey, &m, &aliases));
        // Without the user role, grants mean nothing.
        let mut no_role = p("*", Permission::Encrypt);
        no_role.roles.clear();
        assert!(!no_role.allows(Permission::Encrypt, &m, &aliases));
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!("boss".parse::<Role>().unwrap_err().contains("admin"));
        assert!("label:x".parse::<KeySelector>().unwrap_err().contains("label:key=value"));
        assert!("nope".parse::<KeySelector>().unwrap_err().contains("alias/<name>"));
        assert!("sign".parse::<Permission>().unwrap_err().contains("encrypt"));
    }
}
