//! Record authentication: HMAC-SHA256 under a key derived from the root key,
//! for metadata the store keeps in the clear (key records, aliases). Someone
//! who can write the database but does not hold the root key cannot produce
//! a tag that verifies, so an edited label, state or alias target is caught
//! when the record is loaded.

use ring::hmac;

use crate::kdf::derive_key;
use crate::RootKey;

/// Length of a record tag (HMAC-SHA256).
pub const RECORD_TAG_LEN: usize = 32;

/// HKDF info of the record-MAC key; part of every stored tag, never change.
const INFO: &[u8] = b"keyward record mac v1";

/// A record's authentication tag as stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordTag(pub [u8; RECORD_TAG_LEN]);

impl std::fmt::Debug for RecordTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A tag is not secret; printing a prefix helps when comparing.
        write!(f, "RecordTag({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// The key that tags stored records, derived from the root key. Holds no
/// more than the root key does; it never leaves the process.
pub struct RecordKey(hmac::Key);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(REDACTED)")
    }
}

impl RecordKey {
    /// Derives the record key from the root key (HKDF-SHA256, fixed info).
    pub fn derive(root: &RootKey) -> Self {
        let k = derive_key(root.expose_secret(), &[], &[INFO]);
        Self(hmac::Key::new(hmac::HMAC_SHA256, &k[..]))
    }

    /// The tag of `message` in `domain` (the domain separates record kinds:
    /// a key record's tag never verifies as an alias's).
    pub fn tag(&self, domain: &[u8], message: &[u8]) -> RecordTag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&(domain.len() as u32).to_be_bytes());
        ctx.update(domain);
        ctx.update(message);
        let mut out = [0u8; RECORD_TAG_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        RecordTag(out)
    }

    /// Whether `tag` is the tag of `message` in `domain` (constant time).
    pub fn verify(&self, domain: &[u8], message: &[u8], tag: &RecordTag) -> bool {
        let mut data = Vec::with_capacity(4 + domain.len() + message.len());
        data.extend_from_slice(&(domain.len() as u32).to_be_bytes());
        data.extend_from_slice(domain);
        data.extend_from_slice(message);
        hmac::verify(&self.0, &data, &tag.0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RecordKey {
        RecordKey::derive(&RootKey::from_bytes(&[7u8; 32]).unwrap())
    }

    #[test]
    fn tags_verify_and_bind_domain_and_message() {
        let k = key();
        let t = k.tag(b"key", b"record");
        assert!(k.verify(b"key", b"record", &t));
        assert!(!k.verify(b"alias", b"record", &t));
        assert!(!k.verify(b"key", b"recore", &t));
        // Moving bytes between domain and message changes the tag.
        assert_ne!(k.tag(b"ke", b"yrecord"), t);
        let other = RecordKey::derive(&RootKey::from_bytes(&[8u8; 32]).unwrap());
        assert!(!other.verify(b"key", b"record", &t));
    }

    /// Frozen: stored tags depend on the derivation and the framing.
    #[test]
    fn known_answer() {
        let t = key().tag(b"keyward key record", b"abc");
        assert_eq!(hex(&t.0), KAT);
    }

    /// Computed independently with Python's hmac and hashlib (HKDF by hand).
    const KAT: &str = "1e227b91f4b4e9e671540727d47a9efa7bbe64b36a38db62b88a39791bc31a7b";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", key()), "RecordKey(REDACTED)");
    }
}
