//! The audit export (`keyward audit export --data-dir`): JSON lines, one
//! object per line, oldest first, each checkpoint after the record it covers.
//!
//! ```text
//! {"type":"record","seq":1,"stored":"{\"seq\":1,...}"}
//! {"type":"checkpoint","seq":1,"record_hash":"<hex>","time_ms":T,"node_id":"<uuid>","signature":"<hex>"}
//! ```
//!
//! A record carries its stored bytes exactly (`stored`, as a JSON string;
//! `stored_hex` if they are not UTF-8), because the chain hashes those bytes.
//! [`parse`] reads an export (a pure function of its bytes, the fuzz target's
//! entry point) and [`verify`] checks it against the node's public key: the
//! chain, every checkpoint's signature and hash, and how much of the tail no
//! checkpoint covers yet. Neither needs the server, the root key or RocksDB.

use base64::Engine;
use keyward_core::{record_hash, Checkpoint, GENESIS_HASH};
use keyward_crypto::AuditPublicKey;
use serde::{Deserialize, Serialize};

use crate::checkpoint::StoredCheckpoint;

/// One exported record: its sequence number and its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The sequence number the export names.
    pub seq: u64,
    /// Exactly the stored bytes (what the chain hashes).
    pub bytes: Vec<u8>,
}

/// A parsed export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// Records, in file order.
    pub records: Vec<ExportRecord>,
    /// Checkpoints, in file order.
    pub checkpoints: Vec<Checkpoint>,
}

/// Why an export does not parse: the line (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExportError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Record {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored_hex: Option<String>,
    },
    Checkpoint(StoredCheckpoint),
}

/// The export line of a record (with its newline).
pub fn record_line(seq: u64, bytes: &[u8]) -> Vec<u8> {
    let line = match std::str::from_utf8(bytes) {
        Ok(s) => Line::Record { seq, stored: Some(s.to_string()), stored_hex: None },
        Err(_) => Line::Record { seq, stored: None, stored_hex: Some(hex::encode(bytes)) },
    };
    let mut out = serde_json::to_vec(&line).expect("export line serialises");
    out.push(b'\n');
    out
}

/// The export line of a checkpoint (with its newline).
pub fn checkpoint_line(c: &Checkpoint) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(&Line::Checkpoint(StoredCheckpoint::of(c))).expect("export line serialises");
    out.push(b'\n');
    out
}

/// The export lines of a page: each record, and after it the checkpoints
/// that cover it (`checkpoints` in sequence order; any beyond the last
/// record come at the end).
pub fn page_lines(records: &[(u64, Vec<u8>)], checkpoints: &[Checkpoint]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut signed = checkpoints.iter().peekable();
    for (seq, bytes) in records {
        out.extend(record_line(*seq, bytes));
        while let Some(c) = signed.next_if(|c| c.seq <= *seq) {
            out.extend(checkpoint_line(c));
        }
    }
    for c in signed {
        out.extend(checkpoint_line(c));
    }
    out
}

/// Reads an export. Blank lines are skipped; anything else that is not a
/// record or checkpoint line is an error naming its line.
pub fn parse(input: &[u8]) -> Result<Export, ExportError> {
    let mut export = Export::default();
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let fail = |reason: String| ExportError { line, reason };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(raw).map_err(|e| fail(e.to_string()))? {
            Line::Record { seq, stored: Some(s), stored_hex: None } => {
                export.records.push(ExportRecord { seq, bytes: s.into_bytes() })
            }
            Line::Record { seq, stored: None, stored_hex: Some(h) } => export.records.push(ExportRecord {
                seq,
                bytes: hex::decode(h).map_err(|_| fail("stored_hex: not hex".into()))?,
            }),
            Line::Record { .. } => {
                return Err(fail("a record needs exactly one of stored, stored_hex".into()))
            }
            Line::Checkpoint(c) => export.checkpoints.push(c.into_checkpoint().map_err(fail)?),
        }
    }
    Ok(export)
}

/// What offline verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineReport {
    /// Records whose chain link was checked.
    pub records_checked: u64,
    /// Checkpoints in the export.
    pub checkpoints_checked: u64,
    /// The highest sequence number a valid checkpoint covers.
    pub last_checkpoint_seq: Option<u64>,
    /// The highest record sequence number in the export.
    pub last_record_seq: u64,
    /// Records after the last checkpoint, not yet covered by a signature
    /// (first, last), if any: their loss could not be told from a shorter log.
    pub uncovered: Option<(u64, u64)>,
    /// The node id the checkpoints name (the first one's).
    pub node_id: Option<String>,
    /// The first sequence number that fails, if any.
    pub first_bad_seq: Option<u64>,
    /// What failed, for humans.
    pub problem: Option<String>,
}

impl OfflineReport {
    /// Whether everything checked out (an uncovered tail is reported, not a failure).
    pub fn intact(&self) -> bool {
        self.first_bad_seq.is_none()
    }
}

/// Verifies an export against the node's public key: records chain from
/// record 1 without gaps (each `prev_hash` is the hash of the stored bytes
/// before it), every checkpoint is signed by `key` and names the hash of the
/// record at its sequence number, and no checkpoint covers a record the
/// export lacks.
pub fn verify(export: &Export, key: &AuditPublicKey) -> OfflineReport {
    let mut bad: Option<(u64, String)> = None;
    let mut note = |seq: u64, p: String| {
        if bad.as_ref().is_none_or(|(s, _)| seq < *s) {
            bad = Some((seq, p));
        }
    };
    let mut hashes: Vec<String> = Vec::with_capacity(export.records.len());
    let mut prev = GENESIS_HASH.to_string();
    for r in &export.records {
        let expected = hashes.len() as u64 + 1;
        let record = match crate::audit::decode(&r.bytes) {
            Ok(x) => x,
            Err(_) => {
                note(expected, format!("record {} does not parse", r.seq));
                break;
            }
        };
        if r.seq != expected || record.seq != r.seq {
            note(expected.min(r.seq), format!("expected record {expected}, found record {}", r.seq));
            break;
        }
        if record.prev_hash != prev {
            let culprit = r.seq.saturating_sub(1).max(1);
            note(culprit, format!("record {} does not chain to record {culprit}", r.seq));
            break;
        }
        prev = record_hash(&r.bytes);
        hashes.push(prev.clone());
    }
    let last_record = export.records.last().map(|r| r.seq).unwrap_or(0);
    if export.records.is_empty() {
        note(1, "the export holds no records".to_string());
    }
    let mut last_checkpoint: Option<u64> = None;
    let mut seen = std::collections::BTreeSet::new();
    for c in &export.checkpoints {
        if !seen.insert(c.seq) {
            note(c.seq, format!("checkpoint {} appears more than once", c.seq));
        }
        if let Some(first) = export.checkpoints.first() {
            if c.node_id != first.node_id {
                note(c.seq, format!("checkpoint {} names node {}, not {}", c.seq, c.node_id, first.node_id));
            }
        }
        if !c.verify(key) {
            note(
                c.seq,
                format!("checkpoint {} has a bad signature (altered, or not this node's key)", c.seq),
            );
            continue;
        }
        match c.seq.checked_sub(1).and_then(|i| hashes.get(i as usize)) {
            Some(h) if *h == c.record_hash => {}
            Some(_) => note(c.seq, format!("record {} does not match its signed checkpoint", c.seq)),
            None if c.seq > last_record => note(
                last_record + 1,
                format!("a signed checkpoint covers record {}, but the export ends at {last_record}", c.seq),
            ),
            // A record the chain walk stopped before: already reported.
            None => {}
        }
        last_checkpoint = last_checkpoint.max(Some(c.seq));
    }
    // A node signs its first batch at once: a genuine export of a log holds
    // at least one checkpoint. None at all means they were removed.
    if !export.records.is_empty() && export.checkpoints.is_empty() {
        note(1, "no signed checkpoint covers any record: nothing in this export is signed".to_string());
    }
    let covered = last_checkpoint.unwrap_or(0);
    OfflineReport {
        records_checked: hashes.len() as u64,
        checkpoints_checked: export.checkpoints.len() as u64,
        last_checkpoint_seq: last_checkpoint,
        last_record_seq: last_record,
        uncovered: (last_record > covered).then_some((covered + 1, last_record)),
        node_id: export.checkpoints.first().map(|c| c.node_id.to_string()),
        first_bad_seq: bad.as_ref().map(|b| b.0),
        problem: bad.map(|b| b.1),
    }
}

/// The public key as PEM (SubjectPublicKeyInfo, "-----BEGIN PUBLIC KEY-----").
pub fn public_key_pem(key: &AuditPublicKey) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.to_spki_der());
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// Reads a PEM "PUBLIC KEY" block holding an Ed25519 key.
pub fn parse_public_key_pem(pem: &str) -> Result<AuditPublicKey, String> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|s| s.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or("not a PEM PUBLIC KEY block")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "PEM body is not base64")?;
    AuditPublicKey::from_spki_der(&der).map_err(|_| "not an Ed25519 public key".to_string())
}

/// SHA-256 (hex) of the public key's DER: a short name to compare by eye.
pub fn public_key_fingerprint(key: &AuditPublicKey) -> String {
    record_hash(&key.to_spki_der())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keyward_core::{AuditRecord, NodeId};
    use keyward_crypto::AuditSigningKey;

    use super::*;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let r = AuditRecord {
                    seq,
                    time_ms: 1,
                    request_id: format!("r{seq}"),
                    principal: "p \"quoted\" \u{e9}".into(),
                    peer: String::new(),
                    edge: Some("grpc".into()),
                    node_id: None,
                    operation: "Encrypt".into(),
                    key_id: None,
                    key_version: None,
                    alias: None,
                    source_key_id: None,
                    source_key_version: None,
                    target: None,
                    context: BTreeMap::from([("line".into(), "a\nb".into())]),
                    outcome: "OK".into(),
                    reason: String::new(),
                    prev_hash: prev.clone(),
                };
                let bytes = crate::audit::encode(&r);
                prev = record_hash(&bytes);
                bytes
            })
            .collect()
    }

    fn export_of(records: &[Vec<u8>], key: &AuditSigningKey, at: &[u64]) -> Vec<u8> {
        let node = NodeId::parse_str("6f1c1a9e-3b7d-4c2a-9e5f-0a1b2c3d4e5f").unwrap();
        let mut out = Vec::new();
        for (i, b) in records.iter().enumerate() {
            let seq = i as u64 + 1;
            out.extend(record_line(seq, b));
            if at.contains(&seq) {
                out.extend(checkpoint_line(&Checkpoint::sign(key, node, seq, record_hash(b), 7)));
            }
        }
        out
    }

    #[test]
    fn export_round_trips_the_exact_bytes_and_reports_the_tail() {
        let key = AuditSigningKey::generate().unwrap();
        let records = chain(10);
        let parsed = parse(&export_of(&records, &key, &[4, 7])).unwrap();
        assert_eq!(parsed.records.iter().map(|r| r.bytes.clone()).collect::<Vec<_>>(), records);
        let r = verify(&parsed, &key.public_key());
        assert!(r.intact(), "{r:?}");
        assert_eq!((r.records_checked, r.checkpoints_checked), (10, 2));
        assert_eq!((r.last_checkpoint_seq, r.uncovered), (Some(7), Some((8, 10))));
        let other = AuditSigningKey::generate().unwrap().public_key();
        assert_eq!(verify(&parsed, &other).first_bad_seq, Some(4));
    }

    /// What the outside review found accepted as "intact": an export with
    /// every checkpoint removed, an empty one, a duplicated checkpoint.
    #[test]
    fn exports_without_checkpoints_or_records_or_with_duplicates_fail() {
        let key = AuditSigningKey::generate().unwrap();
        let text = String::from_utf8(export_of(&chain(6), &key, &[3, 6])).unwrap();
        let stripped: Vec<&str> = text.lines().filter(|l| !l.contains("\"checkpoint\"")).collect();
        let r = verify(&parse(stripped.join("\n").as_bytes()).unwrap(), &key.public_key());
        assert_eq!(r.first_bad_seq, Some(1), "{r:?}");
        assert!(r.problem.as_deref().unwrap().contains("no signed checkpoint"), "{r:?}");
        let r = verify(&parse(b"").unwrap(), &key.public_key());
        assert!(!r.intact() && r.problem.as_deref().unwrap().contains("no records"), "{r:?}");
        let dup = text.lines().find(|l| l.contains("\"checkpoint\"")).unwrap();
        let doubled = format!("{text}{dup}\n");
        let r = verify(&parse(doubled.as_bytes()).unwrap(), &key.public_key());
        assert!(r.problem.as_deref().unwrap().contains("more than once"), "{r:?}");
        assert!(verify(&parse(text.as_bytes()).unwrap(), &key.public_key()).intact());
    }

    #[test]
    fn a_record_dropped_under_a_checkpoint_fails() {
        let key = AuditSigningKey::generate().unwrap();
        let text = String::from_utf8(export_of(&chain(5), &key, &[5])).unwrap();
        // Drop record 5 but keep the checkpoint that covers it.
        let kept: Vec<&str> = text.lines().filter(|l| !l.contains("\"seq\":5,\"stored\"")).collect();
        let r = verify(&parse(kept.join("\n").as_bytes()).unwrap(), &key.public_key());
        assert_eq!(r.first_bad_seq, Some(5), "{r:?}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(parse(b"\n{\"type\":\"nope\"}\n").unwrap_err().line, 2);
        assert_eq!(parse(b"{\"type\":\"record\",\"seq\":1}").unwrap_err().line, 1);
        assert_eq!(parse(b"{\"type\":\"record\",\"seq\":1,\"stored_hex\":\"zz\"}").unwrap_err().line, 1);
        let bad_node =
            br#"{"type":"checkpoint","seq":1,"record_hash":"00","time_ms":0,"node_id":"x","signature":""}"#;
        assert!(parse(bad_node).unwrap_err().reason.contains("node_id"));
        assert!(parse(b"\xff\xfe").is_err());
        assert_eq!(parse(b"").unwrap(), Export::default());
    }

    /// The export lines, frozen (offline verifiers outside this repository read them).
    #[test]
    fn export_lines_golden() {
        assert_eq!(
            record_line(3, b"{\"seq\":3}"),
            b"{\"type\":\"record\",\"seq\":3,\"stored\":\"{\\\"seq\\\":3}\"}\n"
        );
        assert_eq!(record_line(4, &[0xff]), b"{\"type\":\"record\",\"seq\":4,\"stored_hex\":\"ff\"}\n");
        let c = Checkpoint {
            seq: 9,
            record_hash: "ab".repeat(32),
            time_ms: 5,
            node_id: NodeId::parse_str("6f1c1a9e-3b7d-4c2a-9e5f-0a1b2c3d4e5f").unwrap(),
            signature: vec![1, 2],
        };
        assert_eq!(
            String::from_utf8(checkpoint_line(&c)).unwrap(),
            format!(
                "{{\"type\":\"checkpoint\",\"seq\":9,\"record_hash\":\"{}\",\"time_ms\":5,\
                 \"node_id\":\"6f1c1a9e-3b7d-4c2a-9e5f-0a1b2c3d4e5f\",\"signature\":\"0102\"}}\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(crate::checkpoint::decode(&crate::checkpoint::encode(&c)).unwrap(), c);
    }

    #[test]
    fn public_key_pem_round_trips() {
        let key = AuditSigningKey::generate().unwrap().public_key();
        let pem = public_key_pem(&key);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"), "{pem}");
        assert_eq!(parse_public_key_pem(&pem).unwrap(), key);
        assert!(parse_public_key_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert!(parse_public_key_pem("garbage").is_err());
    }
}
