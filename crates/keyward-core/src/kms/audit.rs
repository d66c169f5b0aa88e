//! Audit queries: QueryAuditLog and VerifyAuditLog, for principals with the
//! auditor role. Both are audited themselves.

use super::AuditResults;
use super::{Caller, Kms};
use crate::{
    AuditQuery, Checkpoint, KeyId, KeyRef, KmsError, Operation, Role, Store, StoreError, VerifyReport,
};

/// Records on a `QueryAuditLog` page unless asked otherwise.
pub const DEFAULT_AUDIT_PAGE_SIZE: u32 = 100;
/// Most records on one page.
pub(super) const MAX_AUDIT_PAGE_SIZE: u32 = 1000;

/// Records on an `ExportAuditLog` page unless asked otherwise.
pub const DEFAULT_EXPORT_PAGE_SIZE: u32 = 1000;
/// Most records on one export page.
const MAX_EXPORT_PAGE_SIZE: u32 = 10_000;

/// One page of `ExportAuditLog`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPage {
    /// Records in sequence order: sequence number and exact stored bytes.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The signed checkpoints covering records of this page, in order.
    pub checkpoints: Vec<Checkpoint>,
    /// Pass as `after_seq` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

/// One page of the signed export, read from one snapshot of `store`: the
/// records after `after_seq` (at most `limit`) and the checkpoints among
/// them. What `ExportAuditLog` returns, and what `keyward audit export
/// --data-dir` pages through on a folder.
pub fn export_audit_page(store: &dyn Store, after_seq: u64, limit: usize) -> Result<ExportPage, StoreError> {
    let mut page = ExportPage::default();
    store.audit_view(&mut |view| {
        let mut more = false;
        view.scan_records(after_seq.saturating_add(1), &mut |seq, bytes| {
            if page.records.len() == limit {
                more = true;
                return false;
            }
            page.records.push((seq, bytes.to_vec()));
            true
        })?;
        let Some(&(last, _)) = page.records.last() else { return Ok(()) };
        let mut bad = None;
        view.scan_checkpoints(after_seq.saturating_add(1), &mut |seq, c| {
            if seq > last {
                return false;
            }
            match c {
                Ok(c) => page.checkpoints.push(c),
                Err(e) => {
                    bad = Some(e);
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        page.next_after = more.then_some(last);
        Ok(())
    })?;
    Ok(page)
}

/// Where a page continues: after one sequence number (single node), or
/// after each node's (cluster mode).
pub(super) enum Cursor {
    Single(Option<u64>),
    Merged(std::collections::BTreeMap<String, u64>),
}

/// Arguments of `QueryAuditLog`. `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQueryInput {
    /// Records naming this key (id or alias) as key or source key.
    pub key: Option<String>,
    /// Records of this principal.
    pub principal: Option<String>,
    /// Records of this operation.
    pub operation: Option<String>,
    /// Records with this outcome code.
    pub outcome: Option<String>,
    /// Records that came through this edge (`grpc`, `kms-v2`, `aws-kms`,
    /// `vault-transit`, `system`).
    pub edge: Option<String>,
    /// Records written by this cluster node.
    pub node_id: Option<String>,
    /// Records at or after this time, Unix ms.
    pub start_ms: Option<i64>,
    /// Records before this time, Unix ms.
    pub end_ms: Option<i64>,
    /// Records per page (default 100, at most 1000).
    pub page_size: Option<u32>,
    /// A token from a previous page.
    pub page_token: Option<String>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

impl Kms {
    /// `QueryAuditLog`. The query itself is audited. In cluster mode the
    /// records of every node, merged (`cluster_audit`).
    pub async fn query_audit(
        &self,
        caller: &Caller,
        input: AuditQueryInput,
    ) -> Result<AuditResults, KmsError> {
        let mut entry = self.entry(caller, Operation::QueryAuditLog);
        let result = match self.prepare_audit_query(caller, &mut entry, input) {
            Err(e) => Err(e),
            Ok((query, Cursor::Single(cursor))) => self
                .store
                .query_audit(&AuditQuery { cursor, ..query })
                .map(|page| AuditResults {
                    records: page.records,
                    next_page_token: page.next_cursor.map(|s| s.to_string()),
                    unreachable_nodes: Vec::new(),
                })
                .map_err(KmsError::Store),
            Ok((query, Cursor::Merged(cursors))) => {
                let c = self.cluster.as_ref().expect("merged cursors only in cluster mode");
                self.merged_query(c, caller, query, cursors).await
            }
        };
        self.finish(entry, result).await
    }

    /// Checks a query's arguments and the caller's role.
    pub(super) fn prepare_audit_query(
        &self,
        caller: &Caller,
        entry: &mut crate::AuditEntry,
        input: AuditQueryInput,
    ) -> Result<(AuditQuery, Cursor), KmsError> {
        let cursor = match (&self.cluster, input.page_token) {
            (None, None) => Cursor::Single(None),
            (Some(_), None) => Cursor::Merged(Default::default()),
            (None, Some(t)) => Cursor::Single(Some(
                t.parse::<u64>()
                    .map_err(|_| KmsError::invalid("page_token", "not a token from QueryAuditLog"))?,
            )),
            (Some(_), Some(t)) => Cursor::Merged(super::cluster_audit::parse_token(&t)?),
        };
        let key_id = match input.key {
            None => None,
            Some(key) => {
                let r = KeyRef::parse("key_id", &key)?;
                entry.alias = r.alias().map(str::to_string);
                let id: KeyId = match &r {
                    KeyRef::Id(id) => *id,
                    // An alias must exist now; an id may name a deleted key.
                    KeyRef::Alias(_) => self.state.read().expect("state lock").resolve(&r)?.meta().id,
                };
                entry.key_id = Some(id);
                Some(id)
            }
        };
        // After the key filter is resolved, so a refusal names the key.
        self.require(caller, Role::Auditor, "read the audit log")?;
        let limit = match input.page_size.unwrap_or(DEFAULT_AUDIT_PAGE_SIZE) {
            n if n > MAX_AUDIT_PAGE_SIZE => return Err(KmsError::invalid("page_size", "at most 1000")),
            0 => return Err(KmsError::invalid("page_size", "must be at least 1")),
            n => n as usize,
        };
        if let (Some(s), Some(e)) = (input.start_ms, input.end_ms) {
            if s > e {
                return Err(KmsError::invalid("start_time", "must not be after end_time"));
            }
        }
        if let Some(e) = &input.edge {
            e.parse::<crate::Edge>().map_err(|m| KmsError::invalid("edge", m))?;
        }
        let query = AuditQuery {
            key_id,
            principal: input.principal,
            operation: input.operation,
            outcome: input.outcome,
            edge: input.edge,
            node_id: input.node_id,
            start_ms: input.start_ms,
            end_ms: input.end_ms,
            limit,
            cursor: None,
            oldest_first: input.oldest_first,
        };
        Ok((query, cursor))
    }

    /// `GetAuditPublicKey`: this node's id and the public key its signed
    /// checkpoints verify under.
    pub async fn audit_public_key(
        &self,
        caller: &Caller,
    ) -> Result<(crate::NodeId, keyward_crypto::AuditPublicKey), KmsError> {
        let entry = self.entry(caller, Operation::GetAuditPublicKey);
        let result =
            self.require(caller, Role::Auditor, "read the audit public key").map(|()| self.audit_identity);
        self.finish(entry, result).await
    }

    /// `ExportAuditLog`: the records after `after_seq` (at most `page_size`,
    /// default 1000, at most 10000) with their exact stored bytes, and the
    /// signed checkpoints among them, read from one snapshot: what an
    /// offline verifier needs, with the public key alone.
    pub async fn export_audit(
        &self,
        caller: &Caller,
        after_seq: u64,
        page_size: Option<u32>,
    ) -> Result<ExportPage, KmsError> {
        let entry = self.entry(caller, Operation::ExportAuditLog);
        let result = match self.require(caller, Role::Auditor, "export the audit log") {
            Err(e) => Err(e),
            Ok(()) => {
                let limit = match page_size.unwrap_or(DEFAULT_EXPORT_PAGE_SIZE) {
                    0 => Err(KmsError::invalid("page_size", "must be at least 1")),
                    n if n > MAX_EXPORT_PAGE_SIZE => Err(KmsError::invalid("page_size", "at most 10000")),
                    n => Ok(n as usize),
                };
                match limit {
                    Err(e) => Err(e),
                    Ok(limit) => {
                        let store = self.store.clone();
                        tokio::task::spawn_blocking(move || export_audit_page(&*store, after_seq, limit))
                            .await
                            .map_err(|e| KmsError::Internal(e.to_string()))
                            .and_then(|r| r.map_err(KmsError::Store))
                    }
                }
            }
        };
        self.finish(entry, result).await
    }

    /// `VerifyAuditLog`: walks the hash chain, checkpoints and indexes.
    /// In cluster mode every node verifies its own (`cluster_audit`).
    pub async fn verify_audit(&self, caller: &Caller) -> Result<VerifyReport, KmsError> {
        let entry = self.entry(caller, Operation::VerifyAuditLog);
        let result = match self.require(caller, Role::Auditor, "verify the audit log") {
            Err(e) => Err(e),
            Ok(()) if self.cluster.is_some() => {
                self.merged_verify(self.cluster.as_ref().expect("checked"), caller).await
            }
            Ok(()) => {
                let store = self.store.clone();
                let key = self.audit_identity.1;
                tokio::task::spawn_blocking(move || crate::verify_log(&*store, Some(&key)))
                    .await
                    .map_err(|e| KmsError::Internal(e.to_string()))
                    .and_then(|r| r.map_err(KmsError::Store))
            }
        };
        self.finish(entry, result).await
    }
}
