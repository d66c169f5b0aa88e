//! What a key record's and an alias's tag cover: a canonical, length-prefixed
//! encoding of every field that drives authorization or the lifecycle
//! (labels, states, the compromised flag, windows, rotation, which versions
//! still hold material) and of an alias's name and target. The encoding is
//! the domain's, not the store's: the store keeps the tag opaque beside its
//! own bytes, and changing how the store lays a record out never changes the
//! tag. Golden tags in this module's tests freeze it.

use keyward_crypto::{RecordKey, RecordTag};

use crate::directory::AccessRecord;
use crate::{ContextConstraint, KeyId, KeyRecord, KeyState, Role, VersionState};

const KEY_DOMAIN: &[u8] = b"keyward key record v1";
const ALIAS_DOMAIN: &[u8] = b"keyward alias v1";
const PRINCIPAL_DOMAIN: &[u8] = b"keyward access principal v1";
const TOKEN_DOMAIN: &[u8] = b"keyward access token v1";
const GRANT_DOMAIN: &[u8] = b"keyward access grant v1";
const ACCESS_KEY_DOMAIN: &[u8] = b"keyward access key v1";

struct Canon(Vec<u8>);

impl Canon {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }
    fn opt_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.i64(v);
            }
        }
        self
    }
    fn byte(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
}

fn key_state(s: KeyState) -> u8 {
    match s {
        KeyState::Enabled => 1,
        KeyState::Disabled => 2,
        KeyState::PendingDeletion => 3,
        KeyState::Destroyed => 4,
    }
}

fn version_state(s: VersionState) -> u8 {
    match s {
        VersionState::Enabled => 1,
        VersionState::Disabled => 2,
        VersionState::ScheduledForDestruction => 3,
        VersionState::Destroyed => 4,
    }
}

/// The bytes a key record's tag covers.
pub(crate) fn key_message(record: &KeyRecord) -> Vec<u8> {
    let m = &record.meta;
    let mut c = Canon(Vec::with_capacity(256));
    c.bytes(m.id.as_bytes()).bytes(m.description.as_bytes()).u64(m.labels.len() as u64);
    for (k, v) in &m.labels {
        c.bytes(k.as_bytes()).bytes(v.as_bytes());
    }
    c.byte(key_state(m.state)).i64(m.created_ms).u64(u64::from(m.primary_version));
    c.u64(m.versions.len() as u64);
    for v in &m.versions {
        c.u64(u64::from(v.version)).byte(version_state(v.state)).i64(v.created_ms).opt_i64(v.destroy_ms);
        c.byte(u8::from(v.compromised));
    }
    c.opt_i64(m.deletion_ms).opt_i64(m.rotation.period_ms).opt_i64(m.rotation.next_rotation_ms);
    match m.rotation.max_encryptions_per_version {
        None => c.byte(0),
        Some(n) => c.byte(1).u64(n),
    };
    // Which versions still hold material: deleting one is a change too.
    c.u64(record.wrapped.len() as u64);
    for v in record.wrapped.keys() {
        c.u64(u64::from(*v));
    }
    c.0
}

/// The bytes an alias's tag covers.
fn alias_message(alias: &str, key: KeyId) -> Vec<u8> {
    let mut c = Canon(Vec::with_capacity(64));
    c.bytes(alias.as_bytes()).bytes(key.as_bytes());
    c.0
}

/// The tag of a key record.
pub(crate) fn tag_key(k: &RecordKey, record: &KeyRecord) -> RecordTag {
    k.tag(KEY_DOMAIN, &key_message(record))
}

/// Whether a key record's stored tag is its tag.
pub(crate) fn key_intact(k: &RecordKey, record: &KeyRecord) -> bool {
    record.tag.as_ref().is_some_and(|t| k.verify(KEY_DOMAIN, &key_message(record), t))
}

/// The tag of an alias.
pub(crate) fn tag_alias(k: &RecordKey, alias: &str, key: KeyId) -> RecordTag {
    k.tag(ALIAS_DOMAIN, &alias_message(alias, key))
}

/// Whether an alias's stored tag is its tag.
pub(crate) fn alias_intact(k: &RecordKey, alias: &str, key: KeyId, tag: Option<&RecordTag>) -> bool {
    tag.is_some_and(|t| k.verify(ALIAS_DOMAIN, &alias_message(alias, key), t))
}

/// The domain and the bytes an access record's tag covers: every field.
fn access_message(r: &AccessRecord) -> (&'static [u8], Vec<u8>) {
    let mut c = Canon(Vec::with_capacity(128));
    let domain = match r {
        AccessRecord::Principal(p) => {
            c.bytes(p.name.as_bytes()).u64(p.roles.len() as u64);
            for role in &p.roles {
                c.byte(match role {
                    Role::Admin => 1,
                    Role::User => 2,
                    Role::Auditor => 3,
                });
            }
            c.i64(p.created_ms);
            PRINCIPAL_DOMAIN
        }
        AccessRecord::Token(t) => {
            c.bytes(t.id.as_bytes()).bytes(t.principal.as_bytes()).bytes(&t.hash);
            c.i64(t.created_ms).i64(t.expires_ms);
            TOKEN_DOMAIN
        }
        AccessRecord::Grant(g) => {
            c.bytes(g.id.as_bytes()).bytes(g.principal.as_bytes()).u64(g.grant.keys.len() as u64);
            for k in &g.grant.keys {
                c.bytes(k.to_string().as_bytes());
            }
            c.u64(g.grant.permissions.len() as u64);
            for p in &g.grant.permissions {
                c.bytes(p.as_str().as_bytes());
            }
            let (kind, pairs) = match &g.grant.constraint {
                ContextConstraint::None => (0, None),
                ContextConstraint::Equals(p) => (1, Some(p)),
                ContextConstraint::Contains(p) => (2, Some(p)),
            };
            c.byte(kind);
            if let Some(pairs) = pairs {
                c.u64(pairs.len() as u64);
                for (k, v) in pairs {
                    c.bytes(k.as_bytes()).bytes(v.as_bytes());
                }
            }
            c.i64(g.created_ms);
            GRANT_DOMAIN
        }
        AccessRecord::AccessKey(k) => {
            c.bytes(k.id.as_bytes()).bytes(k.principal.as_bytes()).bytes(k.sealed_secret.as_bytes());
            c.i64(k.created_ms);
            ACCESS_KEY_DOMAIN
        }
    };
    (domain, c.0)
}

/// The tag of an access record.
pub(crate) fn tag_access(k: &RecordKey, r: &AccessRecord) -> RecordTag {
    let (domain, m) = access_message(r);
    k.tag(domain, &m)
}

/// Whether an access record's stored tag is its tag.
pub(crate) fn access_intact(k: &RecordKey, r: &AccessRecord) -> bool {
    let (domain, m) = access_message(r);
    r.tag().is_some_and(|t| k.verify(domain, &m, t))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keyward_crypto::{RootKey, WrappedVersionSecret};

    use super::*;
    use crate::{KeyMeta, RotationPolicy, VersionMeta};

    fn record() -> KeyRecord {
        let mut v2 = VersionMeta::new(2, 1_700_000_100_000);
        v2.compromised = true;
        let mut v1 = VersionMeta::new(1, 1_700_000_000_000);
        v1.state = VersionState::Destroyed;
        KeyRecord {
            meta: KeyMeta {
                id: "6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8".parse().unwrap(),
                description: "payments".into(),
                labels: BTreeMap::from([("team".into(), "pay".into())]),
                state: KeyState::Enabled,
                created_ms: 1_700_000_000_000,
                primary_version: 2,
                versions: vec![v1, v2],
                deletion_ms: None,
                rotation: RotationPolicy {
                    period_ms: Some(3_600_000),
                    next_rotation_ms: Some(1_700_003_600_000),
                    max_encryptions_per_version: None,
                },
            },
            wrapped: crate::VersionMap::from([(2, WrappedVersionSecret::from_stored(vec![1, 2, 3]))]),
            tag: None,
        }
    }

    fn rk() -> RecordKey {
        RecordKey::derive(&RootKey::from_bytes(&[0x42; 32]).unwrap())
    }

    /// Frozen: every stored key record's tag depends on this encoding.
    #[test]
    fn golden_key_tag() {
        let t = tag_key(&rk(), &record());
        assert_eq!(hex::encode(t.0), GOLDEN_KEY_TAG);
        let a = tag_alias(&rk(), "alias/payments", record().meta.id);
        assert_eq!(hex::encode(a.0), GOLDEN_ALIAS_TAG);
    }

    // Both computed independently with Python (hmac, hashlib, struct) from
    // the encoding documented above.
    const GOLDEN_KEY_TAG: &str = "42e5b48b84fb08b17122e844fb275682c79180c0160962a1567067ee11bfc860";
    const GOLDEN_ALIAS_TAG: &str = "6a13c54be0eea5bd46302c26e96e295a73be3670f9ddbb3280172011d305270e";

    #[test]
    fn every_authorizing_field_is_covered() {
        let k = rk();
        let mut r = record();
        r.tag = Some(tag_key(&k, &r));
        assert!(key_intact(&k, &r));
        type Edit = Box<dyn Fn(&mut KeyRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.meta.labels.insert("team".into(), "ops".into()).map(drop).unwrap_or(())),
            Box::new(|r| r.meta.description.push('!')),
            Box::new(|r| r.meta.state = KeyState::Disabled),
            Box::new(|r| r.meta.primary_version = 1),
            Box::new(|r| r.meta.versions[1].compromised = false),
            Box::new(|r| r.meta.versions[0].state = VersionState::Enabled),
            Box::new(|r| r.meta.versions[0].destroy_ms = Some(1)),
            Box::new(|r| r.meta.deletion_ms = Some(5)),
            Box::new(|r| r.meta.rotation.period_ms = None),
            Box::new(|r| r.meta.rotation.max_encryptions_per_version = Some(0)),
            Box::new(|r| r.meta.id = "00000000-0000-4000-8000-000000000001".parse().unwrap()),
            Box::new(|r| drop(r.wrapped.remove(&2))),
            Box::new(|r| drop(r.wrapped.insert(1, WrappedVersionSecret::from_stored(vec![9])))),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut e = r.clone();
            edit(&mut e);
            assert!(!key_intact(&k, &e), "edit {i} not detected");
        }
        let mut untagged = r.clone();
        untagged.tag = None;
        assert!(!key_intact(&k, &untagged));
    }

    #[test]
    fn alias_tag_binds_name_and_target() {
        let k = rk();
        let id = record().meta.id;
        let t = tag_alias(&k, "alias/a", id);
        assert!(alias_intact(&k, "alias/a", id, Some(&t)));
        assert!(!alias_intact(&k, "alias/b", id, Some(&t)));
        assert!(!alias_intact(&k, "alias/a", KeyId::generate(), Some(&t)));
        assert!(!alias_intact(&k, "alias/a", id, None));
    }

    pub(super) fn access_records() -> Vec<AccessRecord> {
        use crate::directory::{AccessId, GrantRecord, PrincipalRecord, TokenRecord};
        use crate::{Grant, KeySelector, Permission};
        let id: AccessId = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".parse().unwrap();
        let mut grant = Grant::new(
            vec![KeySelector::Alias("alias/pay".into()), KeySelector::Label("team".into(), "pay".into())],
            [Permission::Decrypt, Permission::Encrypt],
        );
        grant.constraint = ContextConstraint::Contains(BTreeMap::from([("tenant".into(), "acme".into())]));
        vec![
            AccessRecord::Principal(PrincipalRecord {
                name: "payments-api".into(),
                roles: [Role::User, Role::Auditor].into(),
                created_ms: 1_700_000_000_000,
                tag: None,
            }),
            AccessRecord::Token(TokenRecord {
                id,
                principal: "payments-api".into(),
                hash: [0x5a; 32],
                created_ms: 1_700_000_000_000,
                expires_ms: 1_700_003_600_000,
                tag: None,
            }),
            AccessRecord::Grant(GrantRecord {
                id,
                principal: "payments-api".into(),
                grant,
                created_ms: 1_700_000_000_000,
                tag: None,
            }),
            AccessRecord::AccessKey(crate::AccessKeyRecord {
                id: "KWAKABCDEFGHIJKLMNOP".into(),
                principal: "payments-api".into(),
                sealed_secret: keyward_crypto::SealedAccessSecret::from_stored(
                    [&[1u8][..], &(0..12).collect::<Vec<u8>>(), &[0x5a; 56]].concat(),
                ),
                created_ms: 1_700_000_000_000,
                tag: None,
            }),
        ]
    }

    /// Frozen: every stored access record's tag depends on this encoding.
    #[test]
    fn golden_access_tags() {
        let tags: Vec<String> =
            access_records().iter().map(|r| hex::encode(tag_access(&rk(), r).0)).collect();
        assert_eq!(tags, GOLDEN_ACCESS_TAGS);
    }

    // Computed independently with Python (hmac, hashlib, struct).
    const GOLDEN_ACCESS_TAGS: [&str; 4] = [
        "b23f38e92ab0e2ad562f281c18d643c12e3975b5a5fc2c7fb8dc7a6079ffeffd",
        "bae4bdd1101ef801f3db8986e3bb18544d3a49b6b7b08e64a866503832775ee6",
        "8ad01c29386194d8aa3dfc47a24c5a6e642dbb201f5d822b209211903cf7d041",
        "19b2dfb3d4ac37a2c36c5a7aa8d0cd3c19f800e752dbb787989685602f78ad43",
    ];

    #[test]
    fn every_access_field_is_covered() {
        use crate::directory::AccessId;
        use crate::Permission;
        let k = rk();
        type Edit = Box<dyn Fn(&mut AccessRecord)>;
        let edits: Vec<(usize, Edit)> = vec![
            (
                0,
                Box::new(|r| {
                    if let AccessRecord::Principal(p) = r {
                        p.name.push('x')
                    }
                }),
            ),
            (
                0,
                Box::new(|r| {
                    if let AccessRecord::Principal(p) = r {
                        p.roles.insert(Role::Admin);
                    }
                }),
            ),
            (
                0,
                Box::new(|r| {
                    if let AccessRecord::Principal(p) = r {
                        p.created_ms += 1
                    }
                }),
            ),
            (
                1,
                Box::new(|r| {
                    if let AccessRecord::Token(t) = r {
                        t.expires_ms += 1
                    }
                }),
            ),
            (
                1,
                Box::new(|r| {
                    if let AccessRecord::Token(t) = r {
                        t.principal = "admin".into()
                    }
                }),
            ),
            (
                1,
                Box::new(|r| {
                    if let AccessRecord::Token(t) = r {
                        t.hash[0] ^= 1
                    }
                }),
            ),
            (
                1,
                Box::new(|r| {
                    if let AccessRecord::Token(t) = r {
                        t.id = AccessId::generate()
                    }
                }),
            ),
            (
                2,
                Box::new(|r| {
                    if let AccessRecord::Grant(g) = r {
                        g.principal = "admin".into()
                    }
                }),
            ),
            (
                2,
                Box::new(|r| {
                    if let AccessRecord::Grant(g) = r {
                        g.grant.permissions.insert(Permission::GenerateDataKey);
                    }
                }),
            ),
            (
                2,
                Box::new(|r| {
                    if let AccessRecord::Grant(g) = r {
                        g.grant.keys.push(crate::KeySelector::Any)
                    }
                }),
            ),
            (
                2,
                Box::new(|r| {
                    if let AccessRecord::Grant(g) = r {
                        g.grant.constraint = ContextConstraint::None
                    }
                }),
            ),
            (
                2,
                Box::new(|r| {
                    if let AccessRecord::Grant(g) = r {
                        g.grant.constraint =
                            ContextConstraint::Equals(BTreeMap::from([("tenant".into(), "acme".into())]))
                    }
                }),
            ),
            (
                3,
                Box::new(|r| {
                    if let AccessRecord::AccessKey(k) = r {
                        k.id = "KWAKABCDEFGHIJKLMNOQ".into()
                    }
                }),
            ),
            (
                3,
                Box::new(|r| {
                    if let AccessRecord::AccessKey(k) = r {
                        k.principal = "mallory".into()
                    }
                }),
            ),
            (
                3,
                Box::new(|r| {
                    if let AccessRecord::AccessKey(k) = r {
                        k.sealed_secret = keyward_crypto::SealedAccessSecret::from_stored(vec![1; 69])
                    }
                }),
            ),
            (
                3,
                Box::new(|r| {
                    if let AccessRecord::AccessKey(k) = r {
                        k.created_ms += 1
                    }
                }),
            ),
        ];
        for (i, (which, edit)) in edits.iter().enumerate() {
            let mut r = access_records()[*which].clone();
            r.set_tag(tag_access(&k, &r));
            assert!(access_intact(&k, &r));
            edit(&mut r);
            assert!(!access_intact(&k, &r), "edit {i} not detected");
        }
    }
}
