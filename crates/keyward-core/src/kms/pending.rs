//! A cluster node's lifecycle change and its audit record, all-or-nothing.
//!
//! The change is written to the shared store first (so the record never
//! claims a change that did not happen); the record follows into the node's
//! local log. To leave no window between the two, the same shared write
//! also puts the record itself under `pending/<node>` (one per node, each
//! change overwriting the last: a node's lifecycle changes hold its lock
//! until their record is durable). The local batch that appends the record
//! also stores its id ([`crate::CommitBatch::settled`]). A node that died
//! between the two, or whose local write failed, finds its pending record
//! unsettled when it starts again (or before its next change) and appends
//! it, with the original request's time and caller.
//!
//! Stored value: `KWP1`, the 16-byte id, the 32-byte tag (HMAC under the
//! record key over node, id and record bytes), then the record in the local
//! store's own encoding (sequence 0, no previous hash). The tag keeps
//! anyone who can write to etcd from putting records into a node's log.

use keyward_crypto::{RecordTag, RECORD_TAG_LEN};

use super::cluster::Cluster;
use super::Kms;
use crate::committer::Mutation;
use crate::{AuditEntry, AuditRecord, CommitBatch, KmsError, Outcome, PendingRecord, StoreError};

const MAGIC: &[u8; 4] = b"KWP1";
const DOMAIN: &[u8] = b"keyward pending lifecycle record v1";
const HEAD: usize = 4 + 16 + RECORD_TAG_LEN;

/// A pending record's id.
pub(super) type PendingId = [u8; 16];

fn message(node: &str, id: &PendingId, record: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + node.len() + 16 + record.len());
    m.extend_from_slice(&(node.len() as u64).to_be_bytes());
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(record);
    m
}

impl Kms {
    /// The pending record of `entry` (as it will be recorded on success),
    /// with a fresh id.
    pub(super) fn pending_record(
        &self,
        node: &str,
        entry: &AuditEntry,
    ) -> Result<(PendingId, PendingRecord), KmsError> {
        let mut id = [0u8; 16];
        keyward_crypto::random_bytes(&mut id).map_err(|e| KmsError::Internal(e.to_string()))?;
        let mut ok = entry.clone();
        ok.outcome = Outcome::ok();
        let mut record = AuditRecord::from_entry(ok, 0, String::new());
        record.node_id = Some(node.to_string());
        let bytes = self.store.encode_audit(&record);
        let tag = self.records.tag(DOMAIN, &message(node, &id, &bytes));
        let mut value = Vec::with_capacity(HEAD + bytes.len());
        value.extend_from_slice(MAGIC);
        value.extend_from_slice(&id);
        value.extend_from_slice(&tag.0);
        value.extend_from_slice(&bytes);
        Ok((id, PendingRecord { node: node.to_string(), value }))
    }

    /// Reads a pending record of `node` back: its id and entry.
    fn open_pending(&self, node: &str, value: &[u8]) -> Result<(PendingId, AuditEntry), String> {
        let subject = || format!("node {node}'s pending lifecycle record in the shared store");
        if value.len() < HEAD || &value[..4] != MAGIC {
            return Err(subject());
        }
        let id: PendingId = value[4..20].try_into().expect("16 bytes");
        let tag = RecordTag(value[20..HEAD].try_into().expect("tag length"));
        let bytes = &value[HEAD..];
        if !self.records.verify(DOMAIN, &message(node, &id, bytes), &tag) {
            return Err(subject());
        }
        // Tagged, so written by a node with the root key: what it holds parses.
        let record = self.store.decode_audit(bytes).map_err(|_| subject())?;
        let entry = AuditEntry::from_record(record).ok_or_else(subject)?;
        Ok((id, entry))
    }

    /// Appends this node's pending lifecycle record to the local log unless
    /// it is there already (its id settled). Called while this node makes no
    /// lifecycle change: at open, and under the lifecycle lock before a
    /// change when an earlier one's record may be missing. Returns whether
    /// a record was appended.
    pub(super) async fn settle_pending(&self, cluster: &Cluster) -> Result<bool, KmsError> {
        let node = cluster.config.node_id.clone();
        let value = cluster.shared.pending(&node).await.map_err(|e| {
            KmsError::Store(StoreError(format!(
                "the shared key store (reading this node's pending record): {e}"
            )))
        })?;
        let result = match value {
            None => Ok(false),
            Some(value) => {
                let (id, entry) = self.open_pending(&node, &value).map_err(KmsError::Internal)?;
                if self.store.settled_pending().map_err(KmsError::Store)? == Some(id) {
                    Ok(false)
                } else {
                    tracing::warn!(
                        operation = entry.operation.as_str(),
                        request_id = %entry.request_id,
                        "appending the audit record of a lifecycle change this node made in the shared store but had not recorded (it stopped, or its disk failed, in between)"
                    );
                    self.record_settled(entry, id).await.map(|()| true)
                }
            }
        };
        if result.is_ok() {
            cluster.set_unsettled(false);
        }
        result
    }

    /// Makes the record of a change already in the shared store durable,
    /// settling its pending record in the same local write. `hold` (the
    /// lifecycle guard) is released once it is.
    pub(super) async fn record_settled_holding(
        &self,
        mut entry: AuditEntry,
        id: PendingId,
        hold: impl FnOnce() + Send + 'static,
    ) -> Result<(), KmsError> {
        entry.outcome = Outcome::ok();
        let batch = CommitBatch { settled: Some(id), ..Default::default() };
        self.audit
            .submit(entry, Some(Mutation { batch, apply: Box::new(hold) }))
            .await
            .map(drop)
            .map_err(KmsError::AuditUnavailable)
    }

    async fn record_settled(&self, entry: AuditEntry, id: PendingId) -> Result<(), KmsError> {
        self.record_settled_holding(entry, id, || {}).await
    }
}
