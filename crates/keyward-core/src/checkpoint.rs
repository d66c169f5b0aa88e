//! Signed audit checkpoints: what the node's Ed25519 key signs, so that a
//! writer of the database (who can redo the plain hash chain and its head)
//! cannot rewrite history without the signing key.
//!
//! The signed bytes (frozen by a golden vector, `tests/checkpoint.rs`):
//!
//! ```text
//! "keyward-audit-checkpoint-v1" (27 bytes) || 0x00
//! || seq (u64 BE) || record hash (32 raw bytes, SHA-256 of the stored record at seq)
//! || time (i64 BE, Unix ms) || node id (16 bytes, the UUID)
//! ```
//!
//! Every field has a fixed length, so the encoding is injective.

use keyward_crypto::{AuditPublicKey, AuditSigningKey, SealedSigningKey, PUBLIC_KEY_LEN};
pub use uuid::Uuid as NodeId;
use uuid::Uuid;

use crate::{AuditRecord, KeyId};

/// The format tag at the start of the signed bytes.
pub const CHECKPOINT_TAG: &[u8] = b"keyward-audit-checkpoint-v1";

/// A signed statement: "record `seq` of node `node_id` has hash `record_hash`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number covered (this record and every one before it).
    pub seq: u64,
    /// Hex SHA-256 of the stored bytes of record `seq`.
    pub record_hash: String,
    /// When it was signed, Unix ms.
    pub time_ms: i64,
    /// The node that signed it.
    pub node_id: Uuid,
    /// Ed25519 signature of [`checkpoint_signed_bytes`].
    pub signature: Vec<u8>,
}

/// The bytes a checkpoint's signature covers; `None` if `record_hash` is not
/// 32 bytes of hex (a corrupt checkpoint).
pub fn checkpoint_signed_bytes(seq: u64, record_hash: &str, time_ms: i64, node_id: &Uuid) -> Option<Vec<u8>> {
    let hash: [u8; 32] = hex::decode(record_hash).ok()?.try_into().ok()?;
    let mut out = Vec::with_capacity(CHECKPOINT_TAG.len() + 1 + 8 + 32 + 8 + 16);
    out.extend_from_slice(CHECKPOINT_TAG);
    out.push(0);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hash);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(node_id.as_bytes());
    Some(out)
}

impl Checkpoint {
    /// Signs a checkpoint of record `seq` with hash `record_hash`.
    pub fn sign(key: &AuditSigningKey, node_id: Uuid, seq: u64, record_hash: String, time_ms: i64) -> Self {
        let bytes = checkpoint_signed_bytes(seq, &record_hash, time_ms, &node_id)
            .expect("the writer's own hashes are 32 bytes of hex");
        Self { seq, record_hash, time_ms, node_id, signature: key.sign(&bytes).to_vec() }
    }

    /// Whether the signature is `key`'s over this checkpoint's fields.
    pub fn verify(&self, key: &AuditPublicKey) -> bool {
        checkpoint_signed_bytes(self.seq, &self.record_hash, self.time_ms, &self.node_id)
            .is_some_and(|b| key.verify(&b, &self.signature))
    }
}

/// The node's stored signing identity: its id, public key (plain, so
/// `keyward audit public-key` and offline tools read it without the root
/// key) and the seed sealed under the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSigner {
    /// The node id: a random UUID made at first start.
    pub node_id: Uuid,
    /// The Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The seed, sealed under the root key (AAD binds the node id).
    pub sealed_key: SealedSigningKey,
}

/// One entry of the audit indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexEntry {
    /// Record `seq` names key `KeyId` (as key or ReEncrypt source key).
    Key(KeyId, u64),
    /// Record `seq` is principal `String`'s.
    Principal(String, u64),
}

impl std::fmt::Display for IndexEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k, seq) => write!(f, "key index entry ({k}, {seq})"),
            Self::Principal(p, seq) => write!(f, "principal index entry ({p:?}, {seq})"),
        }
    }
}

/// The index entries a record must have: its key and ReEncrypt source key
/// (once if the same; ids that do not parse are not indexed), and its principal.
pub fn index_entries(r: &AuditRecord) -> Vec<IndexEntry> {
    let mut out = Vec::with_capacity(3);
    let mut indexed: Option<KeyId> = None;
    for k in [r.key_id.as_deref(), r.source_key_id.as_deref()].into_iter().flatten() {
        if let Ok(id) = k.parse::<KeyId>() {
            if indexed != Some(id) {
                indexed = Some(id);
                out.push(IndexEntry::Key(id, r.seq));
            }
        }
    }
    out.push(IndexEntry::Principal(r.principal.clone(), r.seq));
    out
}
