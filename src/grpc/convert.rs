//! Protobuf <-> domain conversions, all in one file. Proto3's conventions
//! end here: an empty string or a zero means "not given" on the wire, and
//! becomes `None` before it reaches a use case.

use keyward_core::{KeyState, KeyView, RotationInput, SealedRecord, VersionInfo, VersionState};
use prost_types::{Duration, Timestamp};

use crate::pb;

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A protobuf timestamp as Unix milliseconds.
pub fn millis(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// Milliseconds as a protobuf duration.
pub fn duration(ms: i64) -> Duration {
    Duration { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A protobuf duration as milliseconds.
pub fn duration_ms(d: &Duration) -> i64 {
    d.seconds.saturating_mul(1000).saturating_add(i64::from(d.nanos) / 1_000_000)
}

/// A proto3 string field: empty means not given.
pub fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A proto3 number field: zero means not given (the use case's default).
pub fn nonzero(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}

/// The rotation fields of a request (0 / absent: none).
pub fn rotation_input(
    period: Option<Duration>,
    next: Option<Timestamp>,
    max_encryptions_per_version: u64,
) -> RotationInput {
    RotationInput {
        period_ms: period.as_ref().map(duration_ms),
        next_rotation_ms: next.as_ref().map(millis),
        max_encryptions_per_version: (max_encryptions_per_version > 0).then_some(max_encryptions_per_version),
    }
}

fn version_to_pb(v: keyward_core::VersionMeta) -> pb::KeyVersionMetadata {
    pb::KeyVersionMetadata {
        version: v.version,
        state: version_state(v.state) as i32,
        create_time: Some(timestamp(v.created_ms)),
        destroy_time: v.destroy_ms.map(timestamp),
        compromised: v.compromised,
    }
}

/// A version with its usage as protobuf.
pub fn version_info_to_pb(v: VersionInfo) -> pb::KeyVersion {
    pb::KeyVersion {
        metadata: Some(version_to_pb(v.meta)),
        primary: v.primary,
        encryptions: v.usage.encryptions,
        data_keys: v.usage.data_keys,
        decryptions: v.usage.decryptions,
        last_use_time: (v.usage.last_use_ms > 0).then(|| timestamp(v.usage.last_use_ms)),
    }
}

fn key_state(s: KeyState) -> pb::KeyState {
    match s {
        KeyState::Enabled => pb::KeyState::Enabled,
        KeyState::Disabled => pb::KeyState::Disabled,
        KeyState::PendingDeletion => pb::KeyState::PendingDeletion,
        KeyState::Destroyed => pb::KeyState::Destroyed,
    }
}

fn version_state(s: VersionState) -> pb::KeyVersionState {
    match s {
        VersionState::Enabled => pb::KeyVersionState::Enabled,
        VersionState::Disabled => pb::KeyVersionState::Disabled,
        VersionState::ScheduledForDestruction => pb::KeyVersionState::ScheduledForDestruction,
        VersionState::Destroyed => pb::KeyVersionState::Destroyed,
    }
}

/// Key metadata (and its aliases) as protobuf.
pub fn key_to_pb(KeyView { meta, aliases }: KeyView) -> pb::KeyMetadata {
    pb::KeyMetadata {
        key_id: meta.id.to_string(),
        aliases,
        description: meta.description,
        labels: meta.labels.into_iter().collect(),
        state: key_state(meta.state) as i32,
        primary_version: meta.primary_version,
        versions: meta.versions.into_iter().map(version_to_pb).collect(),
        create_time: Some(timestamp(meta.created_ms)),
        deletion_time: meta.deletion_ms.map(timestamp),
        rotation_period: meta.rotation.period_ms.map(duration),
        next_rotation_time: meta.rotation.next_rotation_ms.map(timestamp),
        max_encryptions_per_version: meta.rotation.max_encryptions_per_version.unwrap_or(0),
    }
}

/// An audit record as protobuf, with the hash of its stored bytes.
pub fn record_to_pb(sealed: SealedRecord) -> pb::AuditRecord {
    let hash = sealed.hash();
    let r = sealed.record;
    pb::AuditRecord {
        sequence: r.seq,
        time: Some(timestamp(r.time_ms)),
        request_id: r.request_id,
        principal: r.principal,
        peer: r.peer,
        operation: r.operation,
        key_id: r.key_id.unwrap_or_default(),
        key_version: r.key_version.unwrap_or_default(),
        alias: r.alias.unwrap_or_default(),
        encryption_context: r.context.into_iter().collect(),
        outcome: r.outcome,
        reason: r.reason,
        source_key_id: r.source_key_id.unwrap_or_default(),
        source_key_version: r.source_key_version.unwrap_or_default(),
        previous_hash: r.prev_hash,
        hash,
        target: r.target.unwrap_or_default(),
        edge: r.edge.unwrap_or_default(),
        node_id: r.node_id.unwrap_or_default(),
    }
}
