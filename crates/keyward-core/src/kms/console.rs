//! The web console's own records: a sign-in (a credential the edge checked,
//! exchanged for a session) and a sign-out. Every other console page and
//! action goes through the use case of the same meaning (ListKeys,
//! QueryAuditLog, RotateKey, ...), so it is authorized and recorded as that
//! use case is on any edge. A refused sign-in is recorded through
//! [`Kms::refuse`] (or `refuse_token`) by the edge, like any refused credential.

use super::{Caller, Kms};
use crate::{KmsError, Operation};

impl Kms {
    /// The time by this `Kms`'s clock, Unix ms (what pages count ranges from).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records a successful sign-in of `caller` (its credential was checked
    /// by the edge); `how` says what it signed in with (`token`, `dev`),
    /// never the credential. The session is handed out only once this
    /// record is durable.
    pub async fn console_sign_in(&self, caller: &Caller, how: &str) -> Result<(), KmsError> {
        let mut entry = self.entry(caller, Operation::SignIn);
        entry.target = Some(crate::bounded(&format!("console session ({how})"), 160));
        self.finish(entry, Ok(())).await
    }

    /// Records a sign-out: the session was ended on the server.
    pub async fn console_sign_out(&self, caller: &Caller) -> Result<(), KmsError> {
        let mut entry = self.entry(caller, Operation::SignOut);
        entry.target = Some("console session".into());
        self.finish(entry, Ok(())).await
    }
}

/// How wide each point of a usage plot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Bucket {
    /// Its width, Unix ms.
    pub fn ms(self) -> i64 {
        match self {
            Self::Hour => crate::rollup::HOUR_MS,
            Self::Day => 24 * crate::rollup::HOUR_MS,
        }
    }
}

/// Most points one usage plot or breakdown covers.
pub const MAX_BUCKETS: i64 = 2400;

/// A key's uses over a range, per version and bucket (`GetKeyUsage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key (with its versions' creation times: the rotations).
    pub key: super::KeyView,
    /// The start of each bucket, Unix ms, oldest first.
    pub buckets: Vec<i64>,
    /// Per version that was used in the range (ascending): per bucket,
    /// `[encryptions, data keys, decryptions]`.
    pub series: Vec<(u32, Vec<[u64; 3]>)>,
}

/// Audit records of a range counted by outcome (`SummarizeAuditLog`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSummary {
    /// Records per outcome code.
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// The range counted, Unix ms (whole hours when counted from the hourly counts).
    pub start_ms: i64,
    /// Its end (exclusive).
    pub end_ms: i64,
    /// Counted from the hourly counts (every record of the widened range);
    /// false when the filter needed the records themselves (a key and a
    /// principal, `edge`, `node_id`) and at most [`SUMMARY_SCAN_LIMIT`] were read.
    pub from_hourly_counts: bool,
    /// Records read to count them (when not from the hourly counts).
    pub records_read: u64,
    /// There were more records than were read.
    pub truncated: bool,
}

/// Most records a summary that cannot use the hourly counts reads.
pub const SUMMARY_SCAN_LIMIT: u64 = 50_000;

impl Kms {
    /// `GetKeyUsage`: `key`'s encryptions, data keys and decryptions per
    /// bucket over `start_ms..end_ms` (whole buckets, UTC), drawn from the
    /// audit log's hourly counts; for administrators and auditors.
    pub async fn key_usage(
        &self,
        caller: &Caller,
        key: &str,
        start_ms: i64,
        end_ms: i64,
        bucket: Bucket,
    ) -> Result<KeyUsage, KmsError> {
        let mut entry = self.entry(caller, Operation::GetKeyUsage);
        let result = self.resolve(&mut entry, "key_id", key).and_then(|live| {
            self.require_reader(caller, "read key usage")?;
            let width = bucket.ms();
            let start = start_ms.div_euclid(width) * width;
            let end =
                end_ms.div_euclid(width) * width + if end_ms.rem_euclid(width) == 0 { 0 } else { width };
            if start < 0 || end <= start {
                return Err(KmsError::invalid("start_time", "must be before end_time, after 1970"));
            }
            let n = (end - start) / width;
            if n > MAX_BUCKETS {
                return Err(KmsError::invalid(
                    "end_time",
                    format!("at most {MAX_BUCKETS} points: choose a shorter range or daily points"),
                ));
            }
            let id = live.meta().id;
            let hours = self
                .store
                .usage_hours(id, crate::rollup::hour_of(start), crate::rollup::hour_of(end))
                .map_err(KmsError::Store)?;
            let mut series: std::collections::BTreeMap<u32, Vec<[u64; 3]>> = Default::default();
            for h in hours {
                let at = i64::from(h.hour) * crate::rollup::HOUR_MS;
                let i = ((at - start) / width) as usize;
                let row = series.entry(h.version).or_insert_with(|| vec![[0; 3]; n as usize]);
                if let Some(b) = row.get_mut(i) {
                    b[0] += h.encryptions;
                    b[1] += h.data_keys;
                    b[2] += h.decryptions;
                }
            }
            let key = self.state.read().expect("state lock").view(live.meta());
            Ok(KeyUsage {
                key,
                buckets: (0..n).map(|i| start + i * width).collect(),
                series: series.into_iter().collect(),
            })
        });
        self.finish(entry, result).await
    }

    /// `SummarizeAuditLog`: the records `input`'s filters match, counted by
    /// outcome; for auditors. Filters of key or principal, operation,
    /// outcome and time are answered from the hourly counts (the range
    /// widened to whole hours); a key and a principal together, or an edge
    /// or node filter, read the records, newest first, at most
    /// [`SUMMARY_SCAN_LIMIT`].
    pub async fn summarize_audit(
        &self,
        caller: &Caller,
        mut input: super::AuditQueryInput,
    ) -> Result<AuditSummary, KmsError> {
        let now = self.clock.now_ms();
        let start_ms = input.start_ms.unwrap_or(now - 30 * 24 * crate::rollup::HOUR_MS);
        let end_ms = input.end_ms.unwrap_or(now + 1);
        let mut entry = self.entry(caller, Operation::SummarizeAuditLog);
        input.page_size = Some(super::audit::MAX_AUDIT_PAGE_SIZE);
        input.page_token = None;
        input.start_ms = Some(start_ms);
        input.end_ms = Some(end_ms);
        let result = self.summary(caller, &mut entry, input);
        self.finish(entry, result).await
    }

    fn summary(
        &self,
        caller: &Caller,
        entry: &mut crate::AuditEntry,
        input: super::AuditQueryInput,
    ) -> Result<AuditSummary, KmsError> {
        let hourly = (input.principal.is_none() || input.key.is_none())
            && input.edge.is_none()
            && input.node_id.is_none();
        let (query, _) = self.prepare_audit_query(caller, entry, input)?;
        let (start_ms, end_ms) = (query.start_ms.unwrap_or(0), query.end_ms.unwrap_or(i64::MAX));
        let mut s = AuditSummary { start_ms, end_ms, from_hourly_counts: hourly, ..Default::default() };
        if hourly {
            let h = crate::rollup::HOUR_MS;
            let (from, to) = (crate::rollup::hour_of(start_ms), crate::rollup::hour_of(end_ms + h - 1));
            if i64::from(to) - i64::from(from) > MAX_BUCKETS * 24 {
                return Err(KmsError::invalid("start_time", "at most 100 days at a time"));
            }
            s.start_ms = i64::from(from) * h;
            s.end_ms = i64::from(to) * h;
            let of = match (&query.key_id, &query.principal) {
                (Some(k), _) => crate::rollup::OutcomesOf::Key(*k),
                (None, Some(p)) => crate::rollup::OutcomesOf::Principal(p.clone()),
                (None, None) => crate::rollup::OutcomesOf::All,
            };
            for o in self.store.outcome_hours(&of, from, to).map_err(KmsError::Store)? {
                let op_ok = query.operation.as_ref().is_none_or(|want| *want == o.operation);
                let outcome_ok = query.outcome.as_ref().is_none_or(|want| *want == o.outcome);
                if op_ok && outcome_ok {
                    *s.outcomes.entry(o.outcome).or_default() += o.records;
                }
            }
            return Ok(s);
        }
        let mut query = query;
        loop {
            let page = self.store.query_audit(&query).map_err(KmsError::Store)?;
            for r in &page.records {
                *s.outcomes.entry(r.record.outcome.clone()).or_default() += 1;
                s.records_read += 1;
            }
            match page.next_cursor {
                Some(c) if s.records_read < SUMMARY_SCAN_LIMIT => query.cursor = Some(c),
                Some(_) => {
                    s.truncated = true;
                    break;
                }
                None => break,
            }
        }
        Ok(s)
    }
}

impl Kms {
    /// The evidence a reviewer checks the log against: this node's id, its
    /// audit public key and its newest signed checkpoint (recorded as
    /// GetAuditPublicKey; for auditors).
    pub async fn audit_evidence(
        &self,
        caller: &Caller,
    ) -> Result<(crate::NodeId, keyward_crypto::AuditPublicKey, Option<crate::Checkpoint>), KmsError> {
        let entry = self.entry(caller, Operation::GetAuditPublicKey);
        let result = self.require(caller, crate::Role::Auditor, "read the audit public key").and_then(|()| {
            let newest = self.store.last_checkpoint().map_err(KmsError::Store)?;
            Ok((self.audit_identity.0, self.audit_identity.1, newest))
        });
        self.finish(entry, result).await
    }
}
