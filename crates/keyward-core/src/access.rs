//! Who may do what with which key.
//!
//! A principal holds roles: `admin` (the KeyService lifecycle), `user`
//! (CryptoService, only on the keys and operations its grants name) and
//! `auditor` (the AuditService). A principal may hold several. Grants select
//! keys by id, alias or label, and name the crypto operations they allow —
//! data keys with and without plaintext are separate permissions, and
//! ReEncrypt needs `re-encrypt-from` on the source key and `re-encrypt-to` on
//! the destination key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
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

impl Role {
    /// The name configuration, API and stored records use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Auditor => "auditor",
        }
    }
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

impl fmt::Display for KeySelector {
    /// The form [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Id(id) => id.fmt(f),
            Self::Alias(a) => f.write_str(a),
            Self::Label(k, v) => write!(f, "label:{k}={v}"),
        }
    }
}

impl KeySelector {
    /// Whether the selector covers the key (`aliases` lists its aliases).
    pub fn covers(&self, meta: &KeyMeta, aliases: &dyn Fn() -> Vec<String>) -> bool {
        match self {
            Self::Any => true,
            Self::Id(id) => *id == meta.id,
            Self::Alias(a) => aliases().iter().any(|x| x == a),
            Self::Label(k, v) => meta.labels.get(k) == Some(v),
        }
    }
}

/// What a grant requires of a request's encryption context, like AWS KMS's
/// grant constraints: nothing, exactly these pairs (`EncryptionContextEquals`),
/// or at least these pairs (`EncryptionContextSubset`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ContextConstraint {
    /// Any context.
    #[default]
    None,
    /// The context must be exactly these pairs.
    Equals(BTreeMap<String, String>),
    /// The context must contain these pairs (and may hold others).
    Contains(BTreeMap<String, String>),
}

impl ContextConstraint {
    /// Whether a request with `context` meets the constraint.
    pub fn admits(&self, context: &BTreeMap<String, String>) -> bool {
        match self {
            Self::None => true,
            Self::Equals(want) => want == context,
            Self::Contains(want) => want.iter().all(|(k, v)| context.get(k) == Some(v)),
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
    /// What the request's encryption context must hold.
    pub constraint: ContextConstraint,
}

impl Grant {
    /// A grant without a context constraint.
    pub fn new(keys: Vec<KeySelector>, permissions: impl IntoIterator<Item = Permission>) -> Self {
        Self { keys, permissions: permissions.into_iter().collect(), constraint: ContextConstraint::None }
    }
}

/// What one principal may do. Its grants are indexed by the key id they
/// name, so a principal with thousands of grants is checked in constant time
/// per key (grants by alias, label or `*` are checked one by one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    roles: BTreeSet<Role>,
    grants: Vec<Grant>,
    /// Grant positions by the key ids their selectors name.
    by_key: HashMap<KeyId, Vec<usize>>,
    /// Grants with a selector that is not a key id.
    others: Vec<usize>,
}

impl Policy {
    /// A policy of these roles and grants.
    pub fn new(roles: BTreeSet<Role>, grants: Vec<Grant>) -> Self {
        let mut by_key: HashMap<KeyId, Vec<usize>> = HashMap::new();
        let mut others = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let mut other = false;
            for k in &g.keys {
                match k {
                    KeySelector::Id(id) => {
                        let at = by_key.entry(*id).or_default();
                        if at.last() != Some(&i) {
                            at.push(i);
                        }
                    }
                    _ => other = true,
                }
            }
            if other {
                others.push(i);
            }
        }
        Self { roles, grants, by_key, others }
    }

    /// Every role, every key, every operation (the development principal).
    pub fn everything() -> Self {
        Self::new(
            [Role::Admin, Role::User, Role::Auditor].into(),
            vec![Grant::new(vec![KeySelector::Any], Permission::ALL)],
        )
    }

    /// The same roles, with `extra` grants after these.
    pub fn with_grants(&self, extra: impl IntoIterator<Item = Grant>) -> Self {
        let mut grants = self.grants.clone();
        grants.extend(extra);
        Self::new(self.roles.clone(), grants)
    }

    /// The roles held.
    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    /// The grants, in order.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the principal may use `perm` on the key with this encryption
    /// context. `aliases` lists the key's aliases; it is called only if an
    /// alias selector needs it.
    pub fn allows(
        &self,
        perm: Permission,
        meta: &KeyMeta,
        aliases: &dyn Fn() -> Vec<String>,
        context: &BTreeMap<String, String>,
    ) -> bool {
        self.has(Role::User)
            && self.covering(meta, aliases, |g| g.permissions.contains(&perm) && g.constraint.admits(context))
    }

    /// Whether a grant that covers the key passes `fits`: the grants naming
    /// the key's id (from the index), then those selecting by alias, label
    /// or `*` (each checked). `fits` runs first, so aliases are listed only
    /// for a grant that would otherwise allow the request.
    fn covering(
        &self,
        meta: &KeyMeta,
        aliases: &dyn Fn() -> Vec<String>,
        fits: impl Fn(&Grant) -> bool,
    ) -> bool {
        let by_id = self.by_key.get(&meta.id).into_iter().flatten().any(|&i| fits(&self.grants[i]));
        by_id
            || self.others.iter().any(|&i| {
                let g = &self.grants[i];
                fits(g) && g.keys.iter().any(|k| k.covers(meta, aliases))
            })
    }

    /// Whether some grant covers the key, for any operation and context: a
    /// principal that may use a key may read its metadata (DescribeKey).
    pub fn covers_key(&self, meta: &KeyMeta, aliases: &dyn Fn() -> Vec<String>) -> bool {
        self.has(Role::User) && self.covering(meta, aliases, |_| true)
    }

    /// Whether some grant gives `perm` on the key, whatever the context:
    /// tells a refusal for the context apart from one for the key.
    pub fn allows_some_context(
        &self,
        perm: Permission,
        meta: &KeyMeta,
        aliases: &dyn Fn() -> Vec<String>,
    ) -> bool {
        self.has(Role::User) && self.covering(meta, aliases, |g| g.permissions.contains(&perm))
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
        let none = BTreeMap::new();
        let p = |sel: &str, perm: Permission| {
            Policy::new([Role::User].into(), vec![Grant::new(vec![sel.parse().unwrap()], [perm])])
        };
        assert!(p(&m.id.to_string(), Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases, &none));
        assert!(p("alias/pay", Permission::Decrypt).allows(Permission::Decrypt, &m, &aliases, &none));
        assert!(p("label:team=pay", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases, &none));
        assert!(!p("label:team=ops", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases, &none));
        assert!(!p("alias/other", Permission::Encrypt).allows(Permission::Encrypt, &m, &aliases, &none));
        // Data keys with and without plaintext are separate.
        let np = p("*", Permission::GenerateDataKeyWithoutPlaintext);
        assert!(np.allows(Permission::GenerateDataKeyWithoutPlaintext, &m, &aliases, &none));
        assert!(!np.allows(Permission::GenerateDataKey, &m, &aliases, &none));
        // Without the user role, grants mean nothing.
        let no_role = Policy::new(BTreeSet::new(), p("*", Permission::Encrypt).grants().to_vec());
        assert!(!no_role.allows(Permission::Encrypt, &m, &aliases, &none));
    }

    #[test]
    fn context_constraints_equal_or_contain() {
        let m = meta();
        let aliases = Vec::new;
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let with = |c: ContextConstraint| {
            let mut g = Grant::new(vec![KeySelector::Id(m.id)], [Permission::Decrypt]);
            g.constraint = c;
            Policy::new([Role::User].into(), vec![g])
        };
        let eq = with(ContextConstraint::Equals(pairs(&[("tenant", "acme")])));
        assert!(eq.allows(Permission::Decrypt, &m, &aliases, &pairs(&[("tenant", "acme")])));
        assert!(!eq.allows(Permission::Decrypt, &m, &aliases, &pairs(&[("tenant", "acme"), ("x", "y")])));
        assert!(!eq.allows(Permission::Decrypt, &m, &aliases, &pairs(&[])));
        let has = with(ContextConstraint::Contains(pairs(&[("tenant", "acme")])));
        assert!(has.allows(Permission::Decrypt, &m, &aliases, &pairs(&[("tenant", "acme"), ("x", "y")])));
        assert!(!has.allows(Permission::Decrypt, &m, &aliases, &pairs(&[("tenant", "evil")])));
        assert!(has.allows_some_context(Permission::Decrypt, &m, &aliases));
    }

    #[test]
    fn many_grants_are_indexed_by_key() {
        let m = meta();
        let grants: Vec<Grant> = (0..10_000)
            .map(|_| Grant::new(vec![KeySelector::Id(KeyId::generate())], [Permission::Encrypt]))
            .chain([Grant::new(vec![KeySelector::Id(m.id)], [Permission::Encrypt])])
            .collect();
        let p = Policy::new([Role::User].into(), grants);
        assert_eq!(p.others.len(), 0);
        assert!(p.allows(Permission::Encrypt, &m, &Vec::new, &BTreeMap::new()));
        assert!(!p.allows(Permission::Decrypt, &m, &Vec::new, &BTreeMap::new()));
        assert!(p.allows_some_context(Permission::Encrypt, &m, &Vec::new));
        assert!(!p.allows_some_context(Permission::Decrypt, &m, &Vec::new));
        for s in ["*", "alias/pay", "label:team=pay"] {
            assert_eq!(s.parse::<KeySelector>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!("boss".parse::<Role>().unwrap_err().contains("admin"));
        assert!("label:x".parse::<KeySelector>().unwrap_err().contains("label:key=value"));
        assert!("nope".parse::<KeySelector>().unwrap_err().contains("alias/<name>"));
        assert!("sign".parse::<Permission>().unwrap_err().contains("encrypt"));
    }
}
