//! Encryption context: caller-supplied `string -> string` pairs bound to a
//! ciphertext as additional authenticated data. Not secret, but never optional
//! to match: a different context fails exactly like a tampered ciphertext.

use std::collections::BTreeMap;

/// Default maximum number of pairs in a context.
pub const MAX_CONTEXT_PAIRS: usize = 64;
/// Default maximum total size of keys and values, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 8 * 1024;

/// A canonicalised encryption context (sorted by key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// Builds a context from any pairs; order does not matter.
    pub fn new<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the context has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total bytes of keys and values.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The canonical encoding bound as AAD: a big-endian u32 pair count, then
    /// for each pair in key order, u32 length + key bytes, u32 length + value
    /// bytes. Length prefixes make `{"ab": "c"}` and `{"a": "bc"}` differ.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.byte_len() + 8 * self.0.len());
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn order_does_not_matter() {
        assert_eq!(ctx(&[("a", "1"), ("b", "2")]).canonical(), ctx(&[("b", "2"), ("a", "1")]).canonical());
    }

    #[test]
    fn boundaries_are_unambiguous() {
        assert_ne!(ctx(&[("ab", "c")]).canonical(), ctx(&[("a", "bc")]).canonical());
        assert_ne!(ctx(&[]).canonical(), ctx(&[("", "")]).canonical());
    }

    #[test]
    fn known_encoding() {
        assert_eq!(hex::encode(ctx(&[("k", "vv")]).canonical()), "00000001000000016b000000027676");
        assert_eq!(ctx(&[]).canonical(), vec![0, 0, 0, 0]);
    }
}
