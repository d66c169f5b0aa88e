//! Access that changes at runtime: principals, bearer tokens and grants
//! created through the AccessService, as stored records, and the in-memory
//! directory every request consults.
//!
//! Principals from the configuration file are *bootstrap* principals: read
//! only here (they cannot be deleted or changed through the API), but they
//! may be given runtime tokens and grants. A principal's effective policy is
//! its roles and its grants (bootstrap grants first, then runtime ones); the
//! directory keeps one `Arc<Policy>` per principal and replaces it whenever a
//! change touches that principal, so a revocation is seen by the very next
//! request and nothing caches a policy past the write that changed it.
//!
//! Tokens are `kwt_<id>_<secret>`: the id (32 hex digits) finds the record,
//! and only SHA-256 of the whole token is stored, compared in constant time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use keyward_crypto::RecordTag;
use ring::digest::{digest, SHA256};
use uuid::Uuid;

use crate::{Grant, Policy, Role};

/// The prefix of every runtime token.
pub const TOKEN_PREFIX: &str = "kwt_";

/// The id of a token or grant: a random UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessId(Uuid);

impl AccessId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Its 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }

    /// The 32 hex digits embedded in a token.
    fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl fmt::Display for AccessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for AccessId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A principal created through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Its name, as recorded in the audit log.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Its integrity tag (see `integrity.rs`); `None` only before commit.
    pub tag: Option<RecordTag>,
}

/// A bearer token: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id (also embedded in the token).
    pub id: AccessId,
    /// Whose it is.
    pub principal: String,
    /// SHA-256 of the whole token.
    pub hash: [u8; 32],
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// When it stops working, Unix ms.
    pub expires_ms: i64,
    /// Its integrity tag.
    pub tag: Option<RecordTag>,
}

/// A grant created through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Its id.
    pub id: AccessId,
    /// Whom it grants.
    pub principal: String,
    /// Keys, operations and context constraint.
    pub grant: Grant,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Its integrity tag.
    pub tag: Option<RecordTag>,
}

/// An access key: what AWS SigV4 clients sign requests with. SigV4 needs
/// the secret on the verifying side, so it is kept sealed under the root key
/// (bound to the id), not hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// Its id (`KWAK` and 16 base-32 characters: AWS's 20-character shape).
    pub id: String,
    /// Whose it is.
    pub principal: String,
    /// The secret, sealed under the root key.
    pub sealed_secret: keyward_crypto::SealedAccessSecret,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Its integrity tag.
    pub tag: Option<RecordTag>,
}

/// The prefix of every access key id.
pub const ACCESS_KEY_PREFIX: &str = "KWAK";
/// Length of an access key id.
pub const ACCESS_KEY_ID_LEN: usize = 20;
/// Length of an access key's secret (AWS's shape: 40 characters of the
/// base64 alphabet, 240 random bits).
pub const ACCESS_SECRET_LEN: usize = 40;

/// Whether `id` has the shape of an access key id.
pub fn is_access_key_id(id: &str) -> bool {
    id.len() == ACCESS_KEY_ID_LEN
        && id.starts_with(ACCESS_KEY_PREFIX)
        && id.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// A new access key's id and secret, from fresh random bytes.
pub(crate) fn new_access_key() -> Result<(String, zeroize::Zeroizing<String>), keyward_crypto::CryptoError> {
    let mut raw = zeroize::Zeroizing::new([0u8; ACCESS_KEY_ID_LEN - 4 + ACCESS_SECRET_LEN]);
    keyward_crypto::random_bytes(&mut raw[..])?;
    Ok(access_key_from_bytes(&raw[..]))
}

/// An access key's id and secret made from 56 bytes (16 for the id, 40 for
/// the secret; fewer are cycled): each character from one byte, and 256 is
/// a multiple of both alphabets' sizes, so uniform bytes give uniform
/// characters. Also what the development access key is made from.
pub fn access_key_from_bytes(bytes: &[u8]) -> (String, zeroize::Zeroizing<String>) {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut all = bytes.iter().cycle();
    let mut id = String::from(ACCESS_KEY_PREFIX);
    id.extend(all.by_ref().take(ACCESS_KEY_ID_LEN - 4).map(|b| BASE32[usize::from(b & 31)] as char));
    let secret = all.take(ACCESS_SECRET_LEN).map(|b| BASE64[usize::from(b & 63)] as char).collect();
    (id, zeroize::Zeroizing::new(secret))
}

/// One stored access object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessRecord {
    /// A runtime principal.
    Principal(PrincipalRecord),
    /// A bearer token.
    Token(TokenRecord),
    /// A grant.
    Grant(GrantRecord),
    /// An access key.
    AccessKey(AccessKeyRecord),
}

impl AccessRecord {
    /// Where the store keeps it.
    pub fn key(&self) -> AccessRecordKey {
        match self {
            Self::Principal(p) => AccessRecordKey::Principal(p.name.clone()),
            Self::Token(t) => AccessRecordKey::Token(t.id),
            Self::Grant(g) => AccessRecordKey::Grant(g.id),
            Self::AccessKey(k) => AccessRecordKey::AccessKey(k.id.clone()),
        }
    }

    /// Its tag.
    pub fn tag(&self) -> Option<&RecordTag> {
        match self {
            Self::Principal(p) => p.tag.as_ref(),
            Self::Token(t) => t.tag.as_ref(),
            Self::Grant(g) => g.tag.as_ref(),
            Self::AccessKey(k) => k.tag.as_ref(),
        }
    }

    pub(crate) fn set_tag(&mut self, tag: RecordTag) {
        match self {
            Self::Principal(p) => p.tag = Some(tag),
            Self::Token(t) => t.tag = Some(tag),
            Self::Grant(g) => g.tag = Some(tag),
            Self::AccessKey(k) => k.tag = Some(tag),
        }
    }
}

/// The identity of a stored access object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessRecordKey {
    /// A principal, by name.
    Principal(String),
    /// A token, by id.
    Token(AccessId),
    /// A grant, by id.
    Grant(AccessId),
    /// An access key, by id.
    AccessKey(String),
}

/// An access change inside a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    /// Write (or replace) a record.
    Put(AccessRecord),
    /// Remove a record.
    Delete(AccessRecordKey),
}

/// A token in memory, with when it was last used.
#[derive(Debug)]
pub(crate) struct LiveToken {
    pub record: TokenRecord,
    pub last_used_ms: AtomicI64,
    /// The last use as last saved (0: none).
    pub saved_ms: AtomicI64,
}

impl LiveToken {
    pub fn last_used(&self) -> Option<i64> {
        let v = self.last_used_ms.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    }
}

/// Why a runtime token was refused. The messages are safe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Malformed, unknown, revoked or wrong secret: indistinguishable.
    Invalid,
    /// Past its expiry.
    Expired(AccessId),
    /// Its principal no longer exists (removed from the configuration).
    NoPrincipal(AccessId),
}

impl TokenRefusal {
    /// The caller-facing reason.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Invalid => "the bearer token is not valid",
            Self::Expired(_) => "token expired",
            Self::NoPrincipal(_) => "the bearer token's principal no longer exists",
        }
    }
}

/// A new token's text and its id, from [`new_token`].
pub(crate) fn new_token(
) -> Result<(AccessId, zeroize::Zeroizing<String>, [u8; 32]), keyward_crypto::CryptoError> {
    let id = AccessId::generate();
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    keyward_crypto::random_bytes(&mut secret[..])?;
    let token =
        zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{}_{}", id.simple(), hex::encode(&secret[..])));
    let hash = token_hash(&token);
    Ok((id, token, hash))
}

fn token_hash(token: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    h
}

/// Everything the directory knows.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// Configuration-file principals and their policies.
    bootstrap: BTreeMap<String, Arc<Policy>>,
    pub principals: BTreeMap<String, PrincipalRecord>,
    pub tokens: HashMap<AccessId, Arc<LiveToken>>,
    pub grants: BTreeMap<AccessId, GrantRecord>,
    pub access_keys: BTreeMap<String, AccessKeyRecord>,
    access_keys_of: BTreeMap<String, BTreeSet<String>>,
    tokens_of: BTreeMap<String, BTreeSet<AccessId>>,
    grants_of: BTreeMap<String, BTreeSet<AccessId>>,
    /// The effective policy of every principal, bootstrap or runtime.
    policies: HashMap<String, Arc<Policy>>,
}

impl Directory {
    /// The directory of these bootstrap principals and stored records.
    pub fn new(bootstrap: Vec<(String, Policy)>, records: Vec<AccessRecord>) -> Self {
        let mut d = Self {
            bootstrap: bootstrap.into_iter().map(|(n, p)| (n, Arc::new(p))).collect(),
            ..Default::default()
        };
        for r in records {
            d.put(r);
        }
        let names: Vec<String> = d.bootstrap.keys().chain(d.principals.keys()).cloned().collect();
        for n in names {
            d.recompute(&n);
        }
        d
    }

    /// Whether `name` is a bootstrap principal.
    pub fn is_bootstrap(&self, name: &str) -> bool {
        self.bootstrap.contains_key(name)
    }

    /// Whether `name` is a principal of either kind.
    pub fn exists(&self, name: &str) -> bool {
        self.policies.contains_key(name)
    }

    /// The effective policy of a principal.
    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.get(name).cloned()
    }

    /// The bootstrap principals' names and base policies.
    pub fn bootstrap(&self) -> impl Iterator<Item = (&String, &Arc<Policy>)> {
        self.bootstrap.iter()
    }

    /// A principal's token ids.
    pub fn tokens_of(&self, name: &str) -> Vec<AccessId> {
        self.tokens_of.get(name).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Deletions of every token and grant of a principal (for deleting it,
    /// or for clearing what a removed one left behind).
    pub fn delete_holdings_of(&self, name: &str) -> Vec<AccessChange> {
        let tokens =
            self.tokens_of(name).into_iter().map(|id| AccessChange::Delete(AccessRecordKey::Token(id)));
        let grants =
            self.grants_of(name).into_iter().map(|id| AccessChange::Delete(AccessRecordKey::Grant(id)));
        let keys = self
            .access_keys_of(name)
            .into_iter()
            .map(|id| AccessChange::Delete(AccessRecordKey::AccessKey(id)));
        tokens.chain(grants).chain(keys).collect()
    }

    /// A principal's access key ids.
    pub fn access_keys_of(&self, name: &str) -> Vec<String> {
        self.access_keys_of.get(name).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// A principal's grant ids.
    pub fn grants_of(&self, name: &str) -> Vec<AccessId> {
        self.grants_of.get(name).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Checks a runtime token at `now_ms`: its principal and policy.
    pub fn identify(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<(String, Arc<Policy>, AccessId), TokenRefusal> {
        let id = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| id.len() == 32 && secret.len() == 64)
            .and_then(|(id, _)| id.parse::<AccessId>().ok())
            .ok_or(TokenRefusal::Invalid)?;
        let live = self.tokens.get(&id).ok_or(TokenRefusal::Invalid)?;
        let hash = token_hash(token);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&hash[..], &live.record.hash[..])) {
            return Err(TokenRefusal::Invalid);
        }
        if now_ms >= live.record.expires_ms {
            return Err(TokenRefusal::Expired(id));
        }
        let policy = self.policy(&live.record.principal).ok_or(TokenRefusal::NoPrincipal(id))?;
        live.last_used_ms.store(now_ms.max(1), Ordering::Relaxed);
        Ok((live.record.principal.clone(), policy, id))
    }

    /// Applies committed changes and recomputes the policies they touch
    /// (a token changes no policy: it is looked up by itself).
    pub fn apply(&mut self, changes: Vec<AccessChange>) {
        let mut touched = BTreeSet::new();
        for c in changes {
            match c {
                AccessChange::Put(r) => {
                    if !matches!(r, AccessRecord::Token(_) | AccessRecord::AccessKey(_)) {
                        touched.insert(self.owner(&r));
                    }
                    self.put(r);
                }
                AccessChange::Delete(k) => {
                    let token = matches!(k, AccessRecordKey::Token(_) | AccessRecordKey::AccessKey(_));
                    if let Some(owner) = self.remove(&k).filter(|_| !token) {
                        touched.insert(owner);
                    }
                }
            }
        }
        for n in touched {
            self.recompute(&n);
        }
    }

    fn owner(&self, r: &AccessRecord) -> String {
        match r {
            AccessRecord::Principal(p) => p.name.clone(),
            AccessRecord::Token(t) => t.principal.clone(),
            AccessRecord::Grant(g) => g.principal.clone(),
            AccessRecord::AccessKey(k) => k.principal.clone(),
        }
    }

    fn put(&mut self, r: AccessRecord) {
        match r {
            AccessRecord::Principal(p) => {
                self.principals.insert(p.name.clone(), p);
            }
            AccessRecord::Token(t) => {
                self.tokens_of.entry(t.principal.clone()).or_default().insert(t.id);
                let live =
                    LiveToken { record: t, last_used_ms: AtomicI64::new(0), saved_ms: AtomicI64::new(0) };
                self.tokens.insert(live.record.id, Arc::new(live));
            }
            AccessRecord::Grant(g) => {
                self.grants_of.entry(g.principal.clone()).or_default().insert(g.id);
                self.grants.insert(g.id, g);
            }
            AccessRecord::AccessKey(k) => {
                self.access_keys_of.entry(k.principal.clone()).or_default().insert(k.id.clone());
                self.access_keys.insert(k.id.clone(), k);
            }
        }
    }

    /// Removes a record; returns the principal it belonged to.
    fn remove(&mut self, k: &AccessRecordKey) -> Option<String> {
        match k {
            AccessRecordKey::Principal(n) => self.principals.remove(n).map(|p| p.name),
            AccessRecordKey::Token(id) => {
                let t = self.tokens.remove(id)?;
                let owner = t.record.principal.clone();
                if let Some(s) = self.tokens_of.get_mut(&owner) {
                    s.remove(id);
                }
                Some(owner)
            }
            AccessRecordKey::Grant(id) => {
                let g = self.grants.remove(id)?;
                if let Some(s) = self.grants_of.get_mut(&g.principal) {
                    s.remove(id);
                }
                Some(g.principal)
            }
            AccessRecordKey::AccessKey(id) => {
                let k = self.access_keys.remove(id)?;
                if let Some(s) = self.access_keys_of.get_mut(&k.principal) {
                    s.remove(id);
                }
                Some(k.principal)
            }
        }
    }

    fn recompute(&mut self, name: &str) {
        let extra =
            self.grants_of(name).into_iter().filter_map(|id| self.grants.get(&id)).map(|g| g.grant.clone());
        let policy = if let Some(base) = self.bootstrap.get(name) {
            Some(base.with_grants(extra))
        } else {
            self.principals.get(name).map(|p| Policy::new(p.roles.clone(), extra.collect()))
        };
        match policy {
            Some(p) => {
                self.policies.insert(name.to_string(), Arc::new(p));
            }
            None => {
                self.policies.remove(name);
            }
        }
    }

    /// The stored token, with its last use.
    pub fn token(&self, id: &AccessId) -> Option<&Arc<LiveToken>> {
        self.tokens.get(id)
    }

    /// The last uses of the tokens used since they were last saved.
    pub fn unsaved_uses(&self) -> Vec<(AccessId, i64)> {
        self.tokens
            .values()
            .filter_map(|t| {
                let used = t.last_used_ms.load(Ordering::Relaxed);
                (used != 0 && used != t.saved_ms.load(Ordering::Relaxed)).then_some((t.record.id, used))
            })
            .collect()
    }

    /// Notes that these last uses are saved.
    pub fn mark_saved(&self, uses: &[(AccessId, i64)]) {
        for (id, ms) in uses {
            if let Some(t) = self.tokens.get(id) {
                t.saved_ms.store(*ms, Ordering::Relaxed);
            }
        }
    }

    /// Restores stored last uses at open.
    pub fn restore_uses(&self, uses: &[(AccessId, i64)]) {
        for (id, ms) in uses {
            if let Some(t) = self.tokens.get(id) {
                t.last_used_ms.store(*ms, Ordering::Relaxed);
                t.saved_ms.store(*ms, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeySelector, Permission};

    fn token_for(d: &mut Directory, principal: &str, expires_ms: i64) -> (AccessId, String) {
        let (id, token, hash) = new_token().unwrap();
        d.apply(vec![AccessChange::Put(AccessRecord::Token(TokenRecord {
            id,
            principal: principal.into(),
            hash,
            created_ms: 0,
            expires_ms,
            tag: None,
        }))]);
        (id, token.to_string())
    }

    #[test]
    fn tokens_identify_expire_and_revoke() {
        let mut d = Directory::new(vec![("boot".into(), Policy::new([Role::Admin].into(), vec![]))], vec![]);
        let (id, token) = token_for(&mut d, "boot", 1_000);
        let (name, policy, got) = d.identify(&token, 999).unwrap();
        assert_eq!((name.as_str(), got), ("boot", id));
        assert!(policy.has(Role::Admin));
        assert_eq!(d.token(&id).unwrap().last_used(), Some(999));
        assert_eq!(d.identify(&token, 1_000).unwrap_err(), TokenRefusal::Expired(id));
        // A wrong secret under a real id, a malformed token: both just invalid.
        let forged = format!("{}{}", &token[..token.len() - 1], if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(d.identify(&forged, 0).unwrap_err(), TokenRefusal::Invalid);
        for bad in ["", "kwt_", "kwt_x_y", "kw_abc", &token[..20]] {
            assert_eq!(d.identify(bad, 0).unwrap_err(), TokenRefusal::Invalid, "{bad:?}");
        }
        d.apply(vec![AccessChange::Delete(AccessRecordKey::Token(id))]);
        assert_eq!(d.identify(&token, 0).unwrap_err(), TokenRefusal::Invalid);
    }

    #[test]
    fn access_keys_have_aws_shapes() {
        let (id, secret) = new_access_key().unwrap();
        assert!(is_access_key_id(&id), "{id}");
        assert_eq!(secret.len(), ACCESS_SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        let (id2, secret2) = new_access_key().unwrap();
        assert_ne!((id.as_str(), secret.as_str()), (id2.as_str(), secret2.as_str()));
        // Deterministic from bytes (the development access key).
        assert_eq!(access_key_from_bytes(&[0; 64]).0, "KWAKAAAAAAAAAAAAAAAA");
        for bad in
            ["KWAKAAAAAAAAAAAAAAA", "KWAKAAAAAAAAAAAAAAA1", "AKIAAAAAAAAAAAAAAAAA", "kwakaaaaaaaaaaaaaaaa"]
        {
            assert!(!is_access_key_id(bad), "{bad}");
        }
    }

    #[test]
    fn policies_follow_every_change() {
        let mut d = Directory::new(vec![], vec![]);
        assert!(!d.exists("svc"));
        d.apply(vec![AccessChange::Put(AccessRecord::Principal(PrincipalRecord {
            name: "svc".into(),
            roles: [Role::User].into(),
            created_ms: 0,
            tag: None,
        }))]);
        assert!(d.policy("svc").unwrap().grants().is_empty());
        let gid = AccessId::generate();
        d.apply(vec![AccessChange::Put(AccessRecord::Grant(GrantRecord {
            id: gid,
            principal: "svc".into(),
            grant: Grant::new(vec![KeySelector::Any], [Permission::Encrypt]),
            created_ms: 0,
            tag: None,
        }))]);
        assert_eq!(d.policy("svc").unwrap().grants().len(), 1);
        d.apply(vec![AccessChange::Delete(AccessRecordKey::Grant(gid))]);
        assert!(d.policy("svc").unwrap().grants().is_empty());
        d.apply(vec![AccessChange::Delete(AccessRecordKey::Principal("svc".into()))]);
        assert!(d.policy("svc").is_none());
    }
}
