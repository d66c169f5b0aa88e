//! What a key record's and an alias's tag cover: a canonical, length-prefixed
//! encoding of every field that drives authorization or the lifecycle
//! (labels, states, the compromised flag, windows, rotation, which versions
//! still hold material) and of an alias's name and target. The encoding is
//! the domain's, not the store's: the store keeps the tag opaque beside its
//! own bytes, and changing how the store lays a record out never changes the
//! tag. Golden tags in this module's tests freeze it.

use keyward_crypto::{RecordKey, RecordTag};

use crate::{KeyId, KeyRecord, KeyState, VersionState};

const KEY_DOMAIN: &[u8] = b"keyward key record v1";
const ALIAS_DOMAIN: &[u8] = b"keyward alias v1";

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
            wrapped: BTreeMap::from([(2, WrappedVersionSecret::from_stored(vec![1, 2, 3]))]),
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
}
