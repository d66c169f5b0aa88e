//! Audit records and the chain head (format 1): JSON with the field order
//! below, optional fields left out when empty. The chain hashes exactly
//! these bytes, so the order and spelling are part of every stored chain.

use std::collections::BTreeMap;

use keyward_core::{AuditHead, AuditRecord, StoreError};
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    seq: u64,
    time_ms: i64,
    request_id: String,
    principal: String,
    peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_key_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    context: BTreeMap<String, String>,
    outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    prev_hash: String,
}

#[derive(Serialize, Deserialize)]
struct StoredHead {
    seq: u64,
    hash: String,
}

/// The same fields as [`StoredRecord`], in the same order, borrowed: the
/// writer encodes each record without copying its strings.
#[derive(Serialize)]
struct StoredRecordRef<'a> {
    seq: u64,
    time_ms: i64,
    request_id: &'a str,
    principal: &'a str,
    peer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<&'a str>,
    operation: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_key_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "no_context")]
    context: &'a BTreeMap<String, String>,
    outcome: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    prev_hash: &'a str,
}

fn no_context(c: &&BTreeMap<String, String>) -> bool {
    c.is_empty()
}

/// The stored bytes of an audit record (what the chain hashes).
pub fn encode(r: &AuditRecord) -> Vec<u8> {
    let stored = StoredRecordRef {
        seq: r.seq,
        time_ms: r.time_ms,
        request_id: &r.request_id,
        principal: &r.principal,
        peer: &r.peer,
        edge: r.edge.as_deref(),
        node_id: r.node_id.as_deref(),
        operation: &r.operation,
        key_id: r.key_id.as_deref(),
        key_version: r.key_version,
        alias: r.alias.as_deref(),
        source_key_id: r.source_key_id.as_deref(),
        source_key_version: r.source_key_version,
        target: r.target.as_deref(),
        context: &r.context,
        outcome: &r.outcome,
        reason: &r.reason,
        prev_hash: &r.prev_hash,
    };
    let mut out = Vec::with_capacity(384);
    serde_json::to_writer(&mut out, &stored).expect("audit record serialises");
    out
}

/// Reads stored audit record bytes.
pub fn decode(bytes: &[u8]) -> Result<AuditRecord, StoreError> {
    let s: StoredRecord = serde_json::from_slice(bytes).map_err(|e| corrupt("audit record", e))?;
    Ok(AuditRecord {
        seq: s.seq,
        time_ms: s.time_ms,
        request_id: s.request_id,
        principal: s.principal,
        peer: s.peer,
        edge: s.edge,
        node_id: s.node_id,
        operation: s.operation,
        key_id: s.key_id,
        key_version: s.key_version,
        alias: s.alias,
        source_key_id: s.source_key_id,
        source_key_version: s.source_key_version,
        target: s.target,
        context: s.context,
        outcome: s.outcome,
        reason: s.reason,
        prev_hash: s.prev_hash,
    })
}

/// The stored bytes of the chain head.
pub fn encode_head(h: &AuditHead) -> Vec<u8> {
    serde_json::to_vec(&StoredHead { seq: h.seq, hash: h.hash.clone() }).expect("head serialises")
}

/// Reads the stored chain head.
pub fn decode_head(bytes: &[u8]) -> Result<AuditHead, StoreError> {
    let s: StoredHead = serde_json::from_slice(bytes).map_err(|e| corrupt("audit head", e))?;
    Ok(AuditHead { seq: s.seq, hash: s.hash })
}
