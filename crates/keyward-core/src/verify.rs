//! Walks the audit hash chain, its signed checkpoints and its indexes, all
//! from one consistent view of the store, and names the first broken record.

use keyward_crypto::AuditPublicKey;

use crate::audit::hash_bytes;
use crate::{index_entries, AuditHead, AuditView, Store, StoreError, GENESIS_HASH};

/// The verifier's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read.
    pub records_checked: u64,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints_checked: u64,
    /// The newest checkpoint's sequence number.
    pub last_checkpoint_seq: Option<u64>,
    /// First sequence number whose record was altered, removed or reordered.
    pub first_bad_seq: Option<u64>,
    /// What was wrong, for humans.
    pub problem: Option<String>,
    /// Cluster mode: each node's log (empty on a single node). The counts
    /// above are then their sums.
    pub nodes: Vec<crate::NodeVerification>,
}

impl VerifyReport {
    /// Whether the chain is intact (in cluster mode: every node's, each
    /// reachable and holding its published checkpoint).
    pub fn intact(&self) -> bool {
        self.first_bad_seq.is_none() && self.nodes.iter().all(|n| n.ok())
    }
}

/// The first problem found (the lowest sequence number wins).
#[derive(Default)]
struct Finding(Option<(u64, String)>);

impl Finding {
    fn note(&mut self, seq: u64, problem: String) {
        if self.0.as_ref().is_none_or(|(s, _)| seq < *s) {
            self.0 = Some((seq, problem));
        }
    }
}

/// [`verify_log`] with the public key the store holds (whoever can rewrite
/// the store can replace that too: offline verification against a pinned
/// key is the check that survives a hostile writer).
pub fn verify_chain(store: &dyn Store) -> Result<VerifyReport, StoreError> {
    verify_log(store, None)
}

/// Checks, from one snapshot of the store: for each record in order, that it
/// parses, that its sequence number is the one its position calls for and
/// matches its storage key, that its `prev_hash` is the hash of the record
/// before it, and that its key and principal index entries exist; that the
/// last record is the stored head; that every checkpoint is signed by
/// `public_key` (or, if `None`, the stored signer's key) and names the hash
/// of the record at its sequence number; and that every index entry points
/// at a record that names its key or principal.
pub fn verify_log(
    store: &dyn Store,
    public_key: Option<&AuditPublicKey>,
) -> Result<VerifyReport, StoreError> {
    let mut report = None;
    store.audit_view(&mut |view| {
        report = Some(verify_view(store, view, public_key)?);
        Ok(())
    })?;
    Ok(report.expect("audit_view calls its closure"))
}

fn verify_view(
    store: &dyn Store,
    view: &dyn AuditView,
    public_key: Option<&AuditPublicKey>,
) -> Result<VerifyReport, StoreError> {
    let head = view.head()?;
    let sealed_head = head.clone();
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut checked = 0u64;
    let mut bad = Finding::default();
    let mut lookup: Result<(), StoreError> = Ok(());
    let mut chain_ok = true;
    view.scan_records(1, &mut |stored_seq, bytes| {
        checked += 1;
        let record = match store.decode_audit(bytes) {
            Ok(r) => r,
            Err(_) => {
                bad.note(expected_seq, format!("record at {stored_seq} does not parse"));
                return false;
            }
        };
        if stored_seq != expected_seq || record.seq != stored_seq {
            let first = expected_seq.min(stored_seq);
            bad.note(
                first,
                format!("expected record {expected_seq}, found record {} stored at {stored_seq}", record.seq),
            );
            return false;
        }
        if record.prev_hash != prev_hash {
            // The record before this one was altered (or this link was).
            let culprit = stored_seq.saturating_sub(1).max(1);
            bad.note(culprit, format!("record {stored_seq} does not chain to record {culprit}"));
            return false;
        }
        for entry in index_entries(&record) {
            match view.has_index(&entry) {
                Ok(true) => {}
                Ok(false) => {
                    bad.note(stored_seq, format!("record {stored_seq} is missing its {entry}"));
                    return false;
                }
                Err(e) => {
                    lookup = Err(e);
                    return false;
                }
            }
        }
        prev_hash = hash_bytes(bytes);
        expected_seq += 1;
        true
    })?;
    lookup?;
    if bad.0.is_some() {
        chain_ok = false;
    }
    let last = expected_seq - 1;
    if chain_ok {
        match head {
            Some(AuditHead { seq, hash }) if seq == last && hash == prev_hash => {}
            Some(AuditHead { seq, .. }) if seq > last => {
                bad.note(last + 1, format!("records {} to {seq} are missing", last + 1));
            }
            Some(AuditHead { seq, .. }) if seq == last => {
                bad.note(last, format!("record {last} does not match the chain head"));
            }
            Some(AuditHead { seq, .. }) => {
                bad.note(seq + 1, format!("records after the head ({seq}) were added"));
            }
            None if last == 0 => {}
            None => bad.note(1, "the chain head is missing".to_string()),
        }
    }

    // Checkpoints: signed by the node's key, naming the hash of their record.
    let stored_key = match public_key {
        Some(k) => Some(*k),
        None => view.signer()?.and_then(|s| AuditPublicKey::from_bytes(&s.public_key).ok()),
    };
    let mut checkpoints = 0u64;
    let mut last_checkpoint = None;
    let mut problems: Vec<(u64, String)> = Vec::new();
    let mut to_check: Vec<(u64, String)> = Vec::new();
    view.scan_checkpoints(0, &mut |stored_seq, c| {
        checkpoints += 1;
        last_checkpoint = Some(stored_seq);
        match c {
            Err(_) => problems.push((stored_seq, format!("checkpoint at {stored_seq} does not parse"))),
            Ok(c) if c.seq != stored_seq => {
                problems.push((stored_seq, format!("checkpoint at {stored_seq} names record {}", c.seq)))
            }
            Ok(c) => match &stored_key {
                None => problems.push((
                    stored_seq,
                    format!("checkpoint {stored_seq} cannot be checked: no audit public key"),
                )),
                Some(k) if !c.verify(k) => {
                    problems.push((stored_seq, format!("checkpoint {stored_seq} has a bad signature")))
                }
                Some(_) => to_check.push((stored_seq, c.record_hash)),
            },
        }
        true
    })?;
    for (seq, hash) in to_check {
        match view.record(seq)? {
            None => problems.push((seq, format!("record {seq} is signed by a checkpoint but missing"))),
            Some(bytes) if hash_bytes(&bytes) != hash => {
                problems.push((seq, format!("record {seq} does not match its signed checkpoint")))
            }
            Some(_) => {}
        }
    }
    // The head's seal: signed with every batch, so a chain redone up to a
    // new head (with the checkpoints after the change deleted) shows here.
    if let (Some(h), Some(k)) = (&sealed_head, &stored_key) {
        match view.head_seal()? {
            Some(s) if s.seq == h.seq && s.record_hash == h.hash && s.verify(k) => {}
            Some(_) => {
                problems.push((h.seq, format!("the chain head ({}) does not match its signed seal", h.seq)))
            }
            None => problems.push((h.seq, format!("the chain head ({}) carries no signed seal", h.seq))),
        }
    }
    for (seq, p) in problems {
        bad.note(seq, p);
    }

    // Every index entry points at a record that names its key or principal.
    let mut lookup: Result<(), StoreError> = Ok(());
    view.scan_index(&mut |entry| {
        let seq = match &entry {
            crate::IndexEntry::Key(_, s) | crate::IndexEntry::Principal(_, s) => *s,
        };
        match view.record(seq) {
            Err(e) => {
                lookup = Err(e);
                return false;
            }
            Ok(None) => bad.note(seq, format!("{entry} points at record {seq}, which does not exist")),
            Ok(Some(bytes)) => match store.decode_audit(&bytes) {
                Ok(r) if index_entries(&r).contains(&entry) => {}
                Ok(_) => bad.note(seq, format!("{entry} points at record {seq}, which does not name it")),
                Err(_) => bad.note(seq, format!("record at {seq} does not parse")),
            },
        }
        true
    })?;
    lookup?;

    Ok(VerifyReport {
        records_checked: checked,
        checkpoints_checked: checkpoints,
        last_checkpoint_seq: last_checkpoint,
        first_bad_seq: bad.0.as_ref().map(|b| b.0),
        problem: bad.0.map(|b| b.1),
        nodes: Vec::new(),
    })
}
