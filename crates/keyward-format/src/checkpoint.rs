//! Signed audit checkpoints and the node's audit signing identity, as stored
//! (JSON): checkpoint `{"seq":N,"record_hash":"hex","time_ms":T,"node_id":"uuid","signature":"hex"}`
//! under `audit_checkpoints`, signer `{"node_id":"uuid","public_key":"hex","sealed_key":"hex"}`
//! under `meta`/`audit_signer`. What the signature covers is not these bytes
//! but [`keyward_core::checkpoint_signed_bytes`].

use keyward_core::{AuditSigner, Checkpoint, NodeId, StoreError};
use keyward_crypto::SealedSigningKey;
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCheckpoint {
    pub seq: u64,
    pub record_hash: String,
    pub time_ms: i64,
    pub node_id: String,
    pub signature: String,
}

impl StoredCheckpoint {
    pub(crate) fn of(c: &Checkpoint) -> Self {
        Self {
            seq: c.seq,
            record_hash: c.record_hash.clone(),
            time_ms: c.time_ms,
            node_id: c.node_id.to_string(),
            signature: hex::encode(&c.signature),
        }
    }

    pub(crate) fn into_checkpoint(self) -> Result<Checkpoint, String> {
        Ok(Checkpoint {
            seq: self.seq,
            record_hash: self.record_hash,
            time_ms: self.time_ms,
            node_id: NodeId::parse_str(&self.node_id).map_err(|_| "node_id: not a UUID".to_string())?,
            signature: hex::decode(&self.signature).map_err(|_| "signature: not hex".to_string())?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSigner {
    node_id: String,
    public_key: String,
    sealed_key: String,
}

/// The stored bytes of a checkpoint.
pub fn encode(c: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(&StoredCheckpoint::of(c)).expect("checkpoint serialises")
}

/// Reads a stored checkpoint.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, StoreError> {
    let s: StoredCheckpoint = serde_json::from_slice(bytes).map_err(|e| corrupt("audit checkpoint", e))?;
    s.into_checkpoint().map_err(|e| corrupt("audit checkpoint", e))
}

/// The stored bytes of the node's audit signing identity.
pub fn encode_signer(s: &AuditSigner) -> Vec<u8> {
    serde_json::to_vec(&StoredSigner {
        node_id: s.node_id.to_string(),
        public_key: hex::encode(s.public_key),
        sealed_key: hex::encode(s.sealed_key.as_bytes()),
    })
    .expect("signer serialises")
}

/// Reads the node's audit signing identity.
pub fn decode_signer(bytes: &[u8]) -> Result<AuditSigner, StoreError> {
    let s: StoredSigner = serde_json::from_slice(bytes).map_err(|e| corrupt("audit signer", e))?;
    let bad = |what: &str| corrupt("audit signer", what);
    Ok(AuditSigner {
        node_id: NodeId::parse_str(&s.node_id).map_err(|_| bad("node_id"))?,
        public_key: hex::decode(&s.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("public_key"))?,
        sealed_key: SealedSigningKey::from_stored(hex::decode(&s.sealed_key).map_err(|_| bad("sealed_key"))?),
    })
}
