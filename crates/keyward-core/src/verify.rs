//! Walks the audit hash chain and names the first broken record.

use crate::audit::hash_bytes;
use crate::{AuditHead, Store, StoreError, GENESIS_HASH};

/// The verifier's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read.
    pub records_checked: u64,
    /// First sequence number whose record was altered, removed or reordered.
    pub first_bad_seq: Option<u64>,
    /// What was wrong, for humans.
    pub problem: Option<String>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn intact(&self) -> bool {
        self.first_bad_seq.is_none()
    }
}

/// Checks, for each stored record in order: that it parses, that its
/// sequence number is the one its position calls for and matches its storage
/// key, that its `prev_hash` is the hash of the record before it; and at the
/// end, that the last record is the stored head (so truncation and an edit of
/// the newest record are caught too).
pub fn verify_chain(store: &dyn Store) -> Result<VerifyReport, StoreError> {
    let head = store.audit_head()?;
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut checked = 0u64;
    let mut bad: Option<(u64, String)> = None;
    store.scan_audit(1, &mut |stored_seq, bytes| {
        checked += 1;
        let record = match store.decode_audit(bytes) {
            Ok(r) => r,
            Err(_) => {
                bad = Some((expected_seq, format!("record at {stored_seq} does not parse")));
                return false;
            }
        };
        if stored_seq != expected_seq || record.seq != stored_seq {
            let first = expected_seq.min(stored_seq);
            bad = Some((
                first,
                format!("expected record {expected_seq}, found record {} stored at {stored_seq}", record.seq),
            ));
            return false;
        }
        if record.prev_hash != prev_hash {
            // The record before this one was altered (or this link was).
            let culprit = stored_seq.saturating_sub(1).max(1);
            bad = Some((culprit, format!("record {stored_seq} does not chain to record {culprit}")));
            return false;
        }
        prev_hash = hash_bytes(bytes);
        expected_seq += 1;
        true
    })?;
    if bad.is_none() {
        let last = expected_seq - 1;
        match head {
            Some(AuditHead { seq, hash }) if seq == last && hash == prev_hash => {}
            Some(AuditHead { seq, .. }) if seq > last => {
                bad = Some((last + 1, format!("records {} to {seq} are missing", last + 1)));
            }
            Some(AuditHead { seq, .. }) if seq == last => {
                bad = Some((last, format!("record {last} does not match the chain head")));
            }
            Some(AuditHead { seq, .. }) => {
                bad = Some((seq + 1, format!("records after the head ({seq}) were added")));
            }
            None if last == 0 => {}
            None => bad = Some((1, "the chain head is missing".to_string())),
        }
    }
    Ok(VerifyReport {
        records_checked: checked,
        first_bad_seq: bad.as_ref().map(|b| b.0),
        problem: bad.map(|b| b.1),
    })
}
