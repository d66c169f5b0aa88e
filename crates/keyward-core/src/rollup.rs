//! Hourly counts drawn from the audit log, for the console's plots: the
//! uses of each key version per hour (encryptions, data keys, decryptions,
//! counted as the usage totals count them) and the records of each
//! operation and outcome per hour (all keys, and per key).
//!
//! A store derives them from each commit's own records ([`Rollup::of`])
//! and adds them in the same synced write, so they count exactly the
//! records that are in the log; a store that has records from before it
//! kept counts rebuilds them once from the log ([`Rollup::add_record`]).
//! They are a summary for reading, never evidence: the chain-verified
//! records are (the audit explorer shows and exports those).

use std::collections::BTreeMap;

use crate::{AuditRecord, KeyId, SealedRecord};

/// One hour, Unix ms.
pub const HOUR_MS: i64 = 3_600_000;

/// The hour (Unix ms / [`HOUR_MS`]) a time falls in.
pub fn hour_of(time_ms: i64) -> u32 {
    u32::try_from(time_ms.div_euclid(HOUR_MS).max(0)).unwrap_or(u32::MAX)
}

/// What one count is of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RollupKey {
    /// Uses of one key version in one hour: `[encryptions, data keys, decryptions]`.
    Usage {
        /// The key.
        key: KeyId,
        /// The hour.
        hour: u32,
        /// The version.
        version: u32,
    },
    /// Records of one operation with one outcome in one hour, all keys: `[records, 0, 0]`.
    Outcome {
        /// The hour.
        hour: u32,
        /// The operation, as recorded.
        operation: String,
        /// The outcome code, as recorded.
        outcome: String,
    },
    /// The same, of one principal's records.
    PrincipalOutcome {
        /// The principal, as recorded.
        principal: String,
        /// The hour.
        hour: u32,
        /// The operation, as recorded.
        operation: String,
        /// The outcome code, as recorded.
        outcome: String,
    },
    /// The same, of the records naming one key (as key or source key).
    KeyOutcome {
        /// The key.
        key: KeyId,
        /// The hour.
        hour: u32,
        /// The operation, as recorded.
        operation: String,
        /// The outcome code, as recorded.
        outcome: String,
    },
}

/// The fields of a record the counts depend on, borrowed.
#[derive(PartialEq, Eq, Hash)]
struct Counted<'a> {
    hour: u32,
    principal: &'a str,
    operation: &'a str,
    outcome: &'a str,
    key_id: Option<&'a str>,
    key_version: Option<u32>,
    source_key_id: Option<&'a str>,
    source_key_version: Option<u32>,
}

impl<'a> Counted<'a> {
    fn of(r: &'a AuditRecord) -> Self {
        Self {
            hour: hour_of(r.time_ms),
            principal: &r.principal,
            operation: &r.operation,
            outcome: &r.outcome,
            key_id: r.key_id.as_deref(),
            key_version: r.key_version,
            source_key_id: r.source_key_id.as_deref(),
            source_key_version: r.source_key_version,
        }
    }
}

/// Counts to add, by what they count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup(pub BTreeMap<RollupKey, [u64; 3]>);

impl Rollup {
    /// The counts of a commit's records.
    pub fn of(records: &[SealedRecord]) -> Self {
        // A batch is mostly records alike in everything counted (one
        // principal using one key version): count those once each, then
        // add each distinct kind with its number, without copying strings
        // per record.
        let mut kinds: std::collections::HashMap<Counted<'_>, u64> = std::collections::HashMap::new();
        for s in records {
            *kinds.entry(Counted::of(&s.record)).or_default() += 1;
        }
        let mut r = Self::default();
        for (c, n) in kinds {
            r.add_counted(&c, n);
        }
        r
    }

    /// Adds one record's counts.
    pub fn add_record(&mut self, r: &AuditRecord) {
        self.add_counted(&Counted::of(r), 1);
    }

    fn add_counted(&mut self, c: &Counted<'_>, n: u64) {
        let hour = c.hour;
        let key = c.key_id.and_then(|k| k.parse::<KeyId>().ok());
        let source = c.source_key_id.and_then(|k| k.parse::<KeyId>().ok());
        let (operation, outcome) = (c.operation.to_string(), c.outcome.to_string());
        self.add(RollupKey::Outcome { hour, operation: operation.clone(), outcome: outcome.clone() }, 0, n);
        self.add(
            RollupKey::PrincipalOutcome {
                principal: c.principal.to_string(),
                hour,
                operation: operation.clone(),
                outcome: outcome.clone(),
            },
            0,
            n,
        );
        for k in [key, source.filter(|s| Some(*s) != key)].into_iter().flatten() {
            self.add(
                RollupKey::KeyOutcome {
                    key: k,
                    hour,
                    operation: operation.clone(),
                    outcome: outcome.clone(),
                },
                0,
                n,
            );
        }
        if c.outcome != "OK" {
            return;
        }
        let mut uses = |id: Option<KeyId>, version: Option<u32>, slot: usize| {
            if let (Some(key), Some(version)) = (id, version) {
                self.add(RollupKey::Usage { key, hour, version }, slot, n);
            }
        };
        match c.operation {
            "Encrypt" => uses(key, c.key_version, 0),
            "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => uses(key, c.key_version, 1),
            "Decrypt" => uses(key, c.key_version, 2),
            "ReEncrypt" => {
                uses(source, c.source_key_version, 2);
                uses(key, c.key_version, 0);
            }
            _ => {}
        }
    }

    fn add(&mut self, k: RollupKey, slot: usize, n: u64) {
        self.0.entry(k).or_default()[slot] += n;
    }

    /// Adds counts (what a store does with each commit's).
    pub fn merge(&mut self, other: &Rollup) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_default();
            for i in 0..3 {
                e[i] += v[i];
            }
        }
    }
}

impl Rollup {
    /// The hourly uses of `key` in hours `from..to` (what a store kept in
    /// memory answers [`crate::Store::usage_hours`] with).
    pub fn usage_hours(&self, key: KeyId, from: u32, to: u32) -> Vec<HourUsage> {
        if from >= to {
            return Vec::new();
        }
        let lo = RollupKey::Usage { key, hour: from, version: 0 };
        let hi = RollupKey::Usage { key, hour: to, version: 0 };
        self.0
            .range(lo..hi)
            .filter_map(|(k, v)| match k {
                RollupKey::Usage { hour, version, .. } => Some(HourUsage {
                    hour: *hour,
                    version: *version,
                    encryptions: v[0],
                    data_keys: v[1],
                    decryptions: v[2],
                }),
                _ => None,
            })
            .collect()
    }

    /// The hourly records by operation and outcome (see
    /// [`crate::Store::outcome_hours`]).
    pub fn outcome_hours(&self, of: &OutcomesOf, from: u32, to: u32) -> Vec<HourOutcome> {
        if from >= to {
            return Vec::new();
        }
        let at = |hour| {
            let (operation, outcome) = (String::new(), String::new());
            match of {
                OutcomesOf::All => RollupKey::Outcome { hour, operation, outcome },
                OutcomesOf::Key(key) => RollupKey::KeyOutcome { key: *key, hour, operation, outcome },
                OutcomesOf::Principal(p) => {
                    RollupKey::PrincipalOutcome { principal: p.clone(), hour, operation, outcome }
                }
            }
        };
        let (lo, hi) = (at(from), at(to));
        self.0
            .range(lo..hi)
            .filter_map(|(k, v)| match k {
                RollupKey::Outcome { hour, operation, outcome }
                | RollupKey::PrincipalOutcome { hour, operation, outcome, .. }
                | RollupKey::KeyOutcome { hour, operation, outcome, .. } => Some(HourOutcome {
                    hour: *hour,
                    operation: operation.clone(),
                    outcome: outcome.clone(),
                    records: v[0],
                }),
                _ => None,
            })
            .collect()
    }
}

/// Whose records an outcome count is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomesOf {
    /// Every record.
    All,
    /// The records naming this key.
    Key(KeyId),
    /// This principal's records.
    Principal(String),
}

/// One version's uses in one hour, as a store reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourUsage {
    /// The hour.
    pub hour: u32,
    /// The version.
    pub version: u32,
    /// Encryptions (Encrypt, and ReEncrypt into the version).
    pub encryptions: u64,
    /// Data keys.
    pub data_keys: u64,
    /// Decryptions (Decrypt, and ReEncrypt out of the version).
    pub decryptions: u64,
}

/// Records of one operation and outcome in one hour, as a store reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourOutcome {
    /// The hour.
    pub hour: u32,
    /// The operation.
    pub operation: String,
    /// The outcome code.
    pub outcome: String,
    /// How many records.
    pub records: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(op: &str, outcome: &str, key: KeyId, version: u32, time_ms: i64) -> AuditRecord {
        AuditRecord {
            seq: 1,
            time_ms,
            request_id: String::new(),
            principal: "p".into(),
            peer: String::new(),
            edge: None,
            node_id: None,
            operation: op.into(),
            key_id: Some(key.to_string()),
            key_version: Some(version),
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: Default::default(),
            outcome: outcome.into(),
            reason: String::new(),
            prev_hash: String::new(),
        }
    }

    #[test]
    fn uses_count_as_the_usage_totals_do_and_every_record_counts_by_outcome() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        let mut r = Rollup::default();
        r.add_record(&record("Encrypt", "OK", a, 1, 10));
        r.add_record(&record("Encrypt", "OK", a, 1, HOUR_MS - 1));
        r.add_record(&record("Encrypt", "PERMISSION_DENIED", a, 1, 20));
        r.add_record(&record("GenerateDataKeyWithoutPlaintext", "OK", a, 2, HOUR_MS));
        r.add_record(&record("DescribeKey", "OK", a, 2, HOUR_MS));
        let mut re = record("ReEncrypt", "OK", b, 1, HOUR_MS + 5);
        re.source_key_id = Some(a.to_string());
        re.source_key_version = Some(1);
        r.add_record(&re);
        let get = |k: RollupKey| r.0.get(&k).copied().unwrap_or_default();
        assert_eq!(get(RollupKey::Usage { key: a, hour: 0, version: 1 }), [2, 0, 0]);
        assert_eq!(get(RollupKey::Usage { key: a, hour: 1, version: 2 }), [0, 1, 0]);
        assert_eq!(get(RollupKey::Usage { key: a, hour: 1, version: 1 }), [0, 0, 1]);
        assert_eq!(get(RollupKey::Usage { key: b, hour: 1, version: 1 }), [1, 0, 0]);
        let outcome = |hour, op: &str, outcome: &str| RollupKey::Outcome {
            hour,
            operation: op.into(),
            outcome: outcome.into(),
        };
        assert_eq!(get(outcome(0, "Encrypt", "OK")), [2, 0, 0]);
        assert_eq!(get(outcome(0, "Encrypt", "PERMISSION_DENIED")), [1, 0, 0]);
        assert_eq!(get(outcome(1, "DescribeKey", "OK")), [1, 0, 0]);
        let key_outcome = |key, op: &str| RollupKey::KeyOutcome {
            key,
            hour: 1,
            operation: op.into(),
            outcome: "OK".into(),
        };
        // A ReEncrypt counts once for each key it names.
        assert_eq!(get(key_outcome(a, "ReEncrypt")), [1, 0, 0]);
        assert_eq!(get(key_outcome(b, "ReEncrypt")), [1, 0, 0]);
        let mut twice = r.clone();
        twice.merge(&r);
        assert_eq!(twice.0[&outcome(0, "Encrypt", "OK")], [4, 0, 0]);
        assert_eq!(hour_of(-5), 0);
        let hours = r.usage_hours(a, 0, 2);
        assert_eq!(hours.len(), 3, "{hours:?}");
        assert_eq!((hours[0].hour, hours[0].version, hours[0].encryptions), (0, 1, 2));
        assert!(r.usage_hours(a, 1, 1).is_empty());
        assert_eq!(r.usage_hours(b, 0, 1), vec![]);
        let all = r.outcome_hours(&OutcomesOf::All, 0, 1);
        assert_eq!(all.iter().map(|o| o.records).sum::<u64>(), 3);
        let of_p = r.outcome_hours(&OutcomesOf::Principal("p".into()), 0, 2);
        assert_eq!(of_p.iter().map(|o| o.records).sum::<u64>(), 6, "every record was p's");
        assert!(r.outcome_hours(&OutcomesOf::Principal("q".into()), 0, 2).is_empty());
        let of_b = r.outcome_hours(&OutcomesOf::Key(b), 0, 5);
        assert_eq!(of_b.len(), 1);
        assert_eq!((of_b[0].operation.as_str(), of_b[0].records), ("ReEncrypt", 1));
    }

    /// A commit's counts, grouped by kind, are the counts of its records one by one.
    #[test]
    fn a_commits_counts_are_its_records_counted_one_by_one() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        let mut records = Vec::new();
        for i in 0..50 {
            records.push(record("GenerateDataKey", "OK", a, 1 + i % 2, i64::from(i) * 100_000));
        }
        records.push(record("Decrypt", "INVALID_ARGUMENT", b, 1, 5));
        let mut re = record("ReEncrypt", "OK", b, 1, 7);
        re.source_key_id = Some(a.to_string());
        re.source_key_version = Some(2);
        re.principal = "q".into();
        records.push(re.clone());
        records.push(re);
        let sealed: Vec<SealedRecord> =
            records.iter().map(|r| SealedRecord { record: r.clone(), bytes: Vec::new() }).collect();
        let mut one_by_one = Rollup::default();
        for r in &records {
            one_by_one.add_record(r);
        }
        assert_eq!(Rollup::of(&sealed), one_by_one);
        assert_eq!(one_by_one.0[&RollupKey::Usage { key: a, hour: 0, version: 1 }], [0, 18, 0]);
    }
}
