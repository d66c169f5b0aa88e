//! Rendering of client results: `--output table` (aligned tables for lists,
//! fields for one item) or `--output json` (one document with stable field
//! names), and the display names of states, times and durations.

use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;
use serde_json::{json, Value};

use crate::pb;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable: aligned tables for lists, fields for one item.
    #[value(alias = "text")]
    Table,
    /// One JSON document.
    Json,
}

/// Prints `json` or `text`, whichever `output` asks for.
pub(crate) fn print(output: Output, json: Value, text: String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json).expect("json")),
        Output::Table => println!("{text}"),
    }
}

/// RFC 3339 with milliseconds, or empty when absent.
pub(crate) fn time_str(t: &Option<prost_types::Timestamp>) -> String {
    match t {
        // humantime formats years up to 9999; past that, the raw seconds.
        Some(t) if (0..253_402_300_800).contains(&t.seconds) => {
            let st = UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.clamp(0, 999_999_999) as u32);
            humantime::format_rfc3339_millis(st).to_string()
        }
        Some(t) if t.seconds > 0 => format!("{}s after 1970", t.seconds),
        _ => String::new(),
    }
}

/// A duration as `30days`, `1h`, ...
pub(crate) fn duration_str(d: &prost_types::Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.seconds.max(0) as u64)).to_string()
}

/// The key state as printed.
pub(crate) fn state_name(s: i32) -> &'static str {
    match pb::KeyState::try_from(s) {
        Ok(pb::KeyState::Enabled) => "enabled",
        Ok(pb::KeyState::Disabled) => "disabled",
        Ok(pb::KeyState::PendingDeletion) => "pending-deletion",
        Ok(pb::KeyState::Destroyed) => "destroyed",
        _ => "unspecified",
    }
}

/// The version state as printed.
pub(crate) fn version_state_name(s: i32) -> &'static str {
    match pb::KeyVersionState::try_from(s) {
        Ok(pb::KeyVersionState::Enabled) => "enabled",
        Ok(pb::KeyVersionState::Disabled) => "disabled",
        Ok(pb::KeyVersionState::ScheduledForDestruction) => "scheduled-for-destruction",
        Ok(pb::KeyVersionState::Destroyed) => "destroyed",
        _ => "unspecified",
    }
}

/// "next page: ..." when there is one.
pub(crate) fn next_page(token: &str) -> Option<String> {
    (!token.is_empty()).then(|| format!("next page: --page-token {token}"))
}

/// A key as JSON.
pub(crate) fn key_json(k: &pb::KeyMetadata) -> Value {
    json!({
        "key_id": k.key_id,
        "aliases": k.aliases,
        "description": k.description,
        "labels": k.labels,
        "state": state_name(k.state),
        "primary_version": k.primary_version,
        "versions": k.versions.iter().map(version_json).collect::<Vec<_>>(),
        "deletion_time": time_str(&k.deletion_time),
        "create_time": time_str(&k.create_time),
        "rotation_period": k.rotation_period.as_ref().map(duration_str).unwrap_or_default(),
        "next_rotation_time": time_str(&k.next_rotation_time),
        "max_encryptions_per_version": k.max_encryptions_per_version,
    })
}

/// A version as JSON.
pub(crate) fn version_json(v: &pb::KeyVersionMetadata) -> Value {
    json!({
        "version": v.version,
        "state": version_state_name(v.state),
        "compromised": v.compromised,
        "create_time": time_str(&v.create_time),
        "destroy_time": time_str(&v.destroy_time),
    })
}

/// A key as aligned fields.
pub(crate) fn key_text(k: &pb::KeyMetadata) -> String {
    let versions: Vec<String> = k
        .versions
        .iter()
        .map(|v| {
            let compromised = if v.compromised { ", COMPROMISED" } else { "" };
            match &v.destroy_time {
                Some(_) => format!(
                    "{} ({}{compromised}, {}, destroyed at {})",
                    v.version,
                    version_state_name(v.state),
                    time_str(&v.create_time),
                    time_str(&v.destroy_time)
                ),
                None => format!(
                    "{} ({}{compromised}, {})",
                    v.version,
                    version_state_name(v.state),
                    time_str(&v.create_time)
                ),
            }
        })
        .collect();
    let mut rotation = Vec::new();
    if let Some(p) = &k.rotation_period {
        rotation.push(format!("every {}, next at {}", duration_str(p), time_str(&k.next_rotation_time)));
    }
    if k.max_encryptions_per_version > 0 {
        rotation.push(format!("at most {} encryptions per version", k.max_encryptions_per_version));
    }
    let rotation = if rotation.is_empty() { "manual only".to_string() } else { rotation.join("; ") };
    let deletion = match &k.deletion_time {
        Some(_) => format!("\ndeletion at:     {}", time_str(&k.deletion_time)),
        None => String::new(),
    };
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    format!(
        "key_id:          {}\naliases:         {}\ndescription:     {}\nlabels:          {}\nstate:           {}\nprimary_version: {}\nversions:        {}\nrotation:        {}\ncreated:         {}{}",
        k.key_id,
        k.aliases.join(", "),
        k.description,
        labels.join(", "),
        state_name(k.state),
        k.primary_version,
        versions.join("; "),
        rotation,
        time_str(&k.create_time),
        deletion
    )
}

/// `key list` as a table.
pub(crate) fn keys_text(r: &pb::ListKeysResponse) -> String {
    if r.keys.is_empty() {
        return "no keys".to_string();
    }
    let header = format!("{:<36}  {:<16} {:>7}  ALIASES", "KEY ID", "STATE", "PRIMARY");
    let rows = r.keys.iter().map(|k| {
        format!(
            "{:<36}  {:<16} {:>7}  {}",
            k.key_id,
            state_name(k.state),
            format!("v{}", k.primary_version),
            k.aliases.join(",")
        )
    });
    std::iter::once(header).chain(rows).chain(next_page(&r.next_page_token)).collect::<Vec<_>>().join("\n")
}

/// `key version list` as JSON.
pub(crate) fn versions_json(r: &pb::ListKeyVersionsResponse) -> Value {
    json!({
        "key_id": r.key_id,
        "versions": r.versions.iter().map(|v| {
            let mut j = v.metadata.as_ref().map(version_json).unwrap_or_default();
            j["primary"] = json!(v.primary);
            j["encryptions"] = json!(v.encryptions);
            j["data_keys"] = json!(v.data_keys);
            j["decryptions"] = json!(v.decryptions);
            j["last_use_time"] = json!(time_str(&v.last_use_time));
            j
        }).collect::<Vec<_>>(),
    })
}

/// `key version list` as a table.
pub(crate) fn versions_text(r: &pb::ListKeyVersionsResponse) -> String {
    let mut lines = vec![format!(
        "{:>7}  {:<26} {:>12} {:>12} {:>12}  {}",
        "VERSION", "STATE", "ENCRYPTIONS", "DATA KEYS", "DECRYPTIONS", "LAST USE"
    )];
    for v in &r.versions {
        let Some(m) = &v.metadata else { continue };
        let mut state = version_state_name(m.state).to_string();
        if v.primary {
            state.push_str(" primary");
        }
        if m.compromised {
            state.push_str(" COMPROMISED");
        }
        let last = time_str(&v.last_use_time);
        lines.push(format!(
            "{:>7}  {:<26} {:>12} {:>12} {:>12}  {}",
            m.version,
            state,
            v.encryptions,
            v.data_keys,
            v.decryptions,
            if last.is_empty() { "never".to_string() } else { last }
        ));
    }
    lines.join("\n")
}

/// An audit record as JSON (also the line format of `audit export`).
pub(crate) fn record_json(r: &pb::AuditRecord) -> Value {
    json!({
        "sequence": r.sequence,
        "time": time_str(&r.time),
        "request_id": r.request_id,
        "principal": r.principal,
        "peer": r.peer,
        "edge": r.edge,
        "node_id": r.node_id,
        "operation": r.operation,
        "key_id": r.key_id,
        "key_version": r.key_version,
        "alias": r.alias,
        "source_key_id": r.source_key_id,
        "source_key_version": r.source_key_version,
        "target": r.target,
        "encryption_context": r.encryption_context,
        "outcome": r.outcome,
        "reason": r.reason,
        "previous_hash": r.previous_hash,
        "hash": r.hash,
    })
}

/// `audit query` as a table.
pub(crate) fn records_text(r: &pb::QueryAuditLogResponse) -> String {
    // A cluster's records name their node: then a NODE column leads.
    let nodes = r.records.iter().any(|x| !x.node_id.is_empty());
    let node =
        |n: &str| if nodes { format!("{:<12} ", if n.is_empty() { "-" } else { n }) } else { String::new() };
    let header = format!(
        "{}{:>6}  {:<24}  {:<13} {:<32} {:<20} {}  {}",
        node("NODE"),
        "SEQ",
        "TIME",
        "EDGE",
        "OPERATION",
        "OUTCOME",
        "KEY",
        "PRINCIPAL"
    );
    let rows = r.records.iter().map(|x| {
        // The key, else what an access change concerned (principal:, token:, grant:).
        let key = match (x.key_id.is_empty(), x.target.is_empty()) {
            (false, _) => format!("{} v{}", x.key_id, x.key_version),
            (true, false) => x.target.clone(),
            (true, true) => "-".to_string(),
        };
        let reason = if x.reason.is_empty() { String::new() } else { format!(" ({})", x.reason) };
        format!(
            "{}{:>6}  {}  {:<13} {:<32} {:<20} {}  {}{}",
            node(&x.node_id),
            x.sequence,
            time_str(&x.time),
            if x.edge.is_empty() { "-" } else { &x.edge },
            x.operation,
            x.outcome,
            key,
            x.principal,
            reason
        )
    });
    std::iter::once(header).chain(rows).chain(next_page(&r.next_page_token)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_do_not_panic() {
        let t = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        assert_eq!(time_str(&t(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_str(&t(253_402_300_799)), "9999-12-31T23:59:59.000Z");
        assert_eq!(time_str(&t(253_402_300_800)), "253402300800s after 1970");
        assert_eq!(time_str(&t(-1)), "");
        assert_eq!(time_str(&None), "");
    }
}
