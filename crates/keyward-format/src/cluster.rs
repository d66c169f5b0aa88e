//! What a cluster node publishes about itself in etcd (`nodes/<id>`, under
//! its lease): JSON, unknown fields ignored, so nodes of different versions
//! read each other's entries.

use keyward_core::{NodeInfo, StoreError};
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
struct StoredNode {
    node_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    started_ms: i64,
    #[serde(default)]
    updated_ms: i64,
    #[serde(default)]
    applied_revision: i64,
    #[serde(default)]
    current: bool,
    #[serde(default)]
    checkpoint_seq: u64,
    #[serde(default)]
    checkpoint_hash: String,
    #[serde(default)]
    checkpoint_ms: i64,
}

/// The stored bytes of a node's entry.
pub fn encode_node(n: &NodeInfo) -> Vec<u8> {
    serde_json::to_vec(&StoredNode {
        node_id: n.node_id.clone(),
        address: n.address.clone(),
        version: n.version.clone(),
        started_ms: n.started_ms,
        updated_ms: n.updated_ms,
        applied_revision: n.applied_revision,
        current: n.current,
        checkpoint_seq: n.checkpoint_seq,
        checkpoint_hash: n.checkpoint_hash.clone(),
        checkpoint_ms: n.checkpoint_ms,
    })
    .expect("node entry serialises")
}

/// Reads a node's entry.
pub fn decode_node(bytes: &[u8]) -> Result<NodeInfo, StoreError> {
    let s: StoredNode = serde_json::from_slice(bytes).map_err(|e| corrupt("cluster node entry", e))?;
    Ok(NodeInfo {
        node_id: s.node_id,
        address: s.address,
        version: s.version,
        started_ms: s.started_ms,
        updated_ms: s.updated_ms,
        applied_revision: s.applied_revision,
        current: s.current,
        checkpoint_seq: s.checkpoint_seq,
        checkpoint_hash: s.checkpoint_hash,
        checkpoint_ms: s.checkpoint_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_entry_round_trips_and_reads_with_fields_missing_or_unknown() {
        let n = NodeInfo {
            node_id: "n1".into(),
            address: "127.0.0.1:7001".into(),
            version: "0.1.0".into(),
            started_ms: 1,
            updated_ms: 2,
            applied_revision: 3,
            current: true,
            checkpoint_seq: 4,
            checkpoint_hash: "ab".into(),
            checkpoint_ms: 5,
        };
        assert_eq!(decode_node(&encode_node(&n)).unwrap(), n);
        let old = decode_node(br#"{"node_id":"n2","later":1}"#).unwrap();
        assert_eq!(old.node_id, "n2");
        assert!(!old.current);
        assert!(decode_node(b"{}").is_err());
    }
}
