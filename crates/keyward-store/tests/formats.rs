//! Golden vectors for the stored formats: key records (formats 1 and 2, with
//! format 2's separate secrets and tagged aliases), a usage entry and a short
//! audit chain, byte for byte. A failure here means a
//! change would make existing data folders unreadable or break their audit
//! chains: change a format only deliberately (CONTRIBUTING.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_core::{
    AliasEntry, AuditHead, AuditRecord, CommitBatch, KeyId, KeyMeta, KeyRecord, KeyState, RotationPolicy,
    SealedRecord, Store, VersionMeta, VersionState, VersionUsage, GENESIS_HASH,
};
use keyward_crypto::{RecordTag, WrappedVersionSecret};
use keyward_store::format;
use keyward_store::RocksStore;

/// `name = value` lines grouped into blank-line separated cases.
fn cases(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !out.last().unwrap().is_empty() {
                out.push(BTreeMap::new());
            }
            continue;
        }
        let (k, v) = line.split_once(" = ").unwrap_or_else(|| panic!("bad vector line {line:?}"));
        out.last_mut().unwrap().insert(k.to_string(), v.to_string());
    }
    out.retain(|c| !c.is_empty());
    out
}

fn id(s: &str) -> KeyId {
    s.parse().unwrap()
}

/// The key records the vectors describe, by name.
fn key_record(name: &str) -> KeyRecord {
    match name {
        "every field set" => KeyRecord {
            meta: KeyMeta {
                id: id("a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1"),
                description: "payments \"primary\"".into(),
                labels: BTreeMap::from([("team".into(), "pay".into()), ("env".into(), "prod".into())]),
                state: KeyState::PendingDeletion,
                created_ms: 1_700_000_000_000,
                primary_version: 2,
                versions: vec![
                    VersionMeta {
                        version: 1,
                        state: VersionState::ScheduledForDestruction,
                        created_ms: 1_700_000_000_000,
                        destroy_ms: Some(1_700_086_400_000),
                        compromised: true,
                    },
                    VersionMeta::new(2, 1_700_000_360_000),
                ],
                deletion_ms: Some(1_700_604_800_000),
                rotation: RotationPolicy {
                    period_ms: Some(7_776_000_000),
                    next_rotation_ms: Some(1_707_776_000_000),
                    max_encryptions_per_version: Some(1_000_000),
                },
            },
            wrapped: keyward_core::VersionMap::from([
                (1, WrappedVersionSecret::from_stored(vec![0x01; 61])),
                (2, WrappedVersionSecret::from_stored(vec![0x02; 61])),
            ]),
            tag: None,
        },
        "fresh key" => KeyRecord {
            meta: KeyMeta {
                id: id("b2b2b2b2-b2b2-4b2b-8b2b-b2b2b2b2b2b2"),
                description: String::new(),
                labels: BTreeMap::new(),
                state: KeyState::Enabled,
                created_ms: 5,
                primary_version: 1,
                versions: vec![VersionMeta::new(1, 5)],
                deletion_ms: None,
                rotation: RotationPolicy::default(),
            },
            wrapped: keyward_core::VersionMap::from([(
                1,
                WrappedVersionSecret::from_stored(vec![0xab, 0xcd]),
            )]),
            tag: None,
        },
        "destroyed key" => KeyRecord {
            meta: KeyMeta {
                id: id("c3c3c3c3-c3c3-4c3c-8c3c-c3c3c3c3c3c3"),
                description: "gone".into(),
                labels: BTreeMap::new(),
                state: KeyState::Destroyed,
                created_ms: 7,
                primary_version: 1,
                versions: vec![VersionMeta { state: VersionState::Destroyed, ..VersionMeta::new(1, 7) }],
                deletion_ms: None,
                rotation: RotationPolicy::default(),
            },
            wrapped: keyward_core::VersionMap::new(),
            tag: None,
        },
        other => panic!("no key record named {other:?}"),
    }
}

#[test]
fn key_records_match_their_golden_bytes_format_1() {
    let vectors = cases(include_str!("vectors/key_record_v1.txt"));
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let record = key_record(&v["name"]);
        let bytes = v["bytes"].as_bytes();
        assert_eq!(String::from_utf8(format::keys::encode_v1(&record)).unwrap(), v["bytes"], "{}", v["name"]);
        assert_eq!(format::keys::decode_v1(bytes).unwrap(), record, "{}", v["name"]);
    }
}

#[test]
fn key_records_secrets_and_aliases_match_their_golden_bytes_format_2() {
    let vectors = cases(include_str!("vectors/key_record_v2.txt"));
    assert_eq!(vectors.len(), 4);
    let tags = [("every field set", 0x11), ("fresh key", 0x22), ("destroyed key", 0x33)];
    for (v, (name, tag)) in vectors.iter().zip(tags) {
        assert_eq!(v["name"], name);
        let record = KeyRecord { tag: Some(RecordTag([tag; 32])), ..key_record(name) };
        assert_eq!(String::from_utf8(format::keys::encode(&record).unwrap()).unwrap(), v["bytes"], "{name}");
        // The record holds no secret; each is a value of its own.
        for (version, secret) in &record.wrapped {
            let sk = format::keys::secret_key(record.meta.id, *version);
            assert_eq!(hex::encode(sk), v[&format!("secret_key_{version}")], "{name}");
            assert_eq!(hex::encode(secret.as_bytes()), v[&format!("secret_{version}")], "{name}");
            assert!(
                !v["bytes"].contains(&hex::encode(secret.as_bytes())),
                "{name}: secret inside the record"
            );
        }
        assert_eq!(v.keys().filter(|k| k.starts_with("secret_key_")).count(), record.wrapped.len());
        let decoded = format::keys::decode(v["bytes"].as_bytes(), record.wrapped.clone()).unwrap();
        assert_eq!(decoded, record, "{name}");
    }
    // A format-2 record never lacks a tag.
    assert!(format::keys::encode(&key_record("fresh key")).is_err());
    let alias = &vectors[3];
    let entry = AliasEntry {
        alias: alias["alias"].clone(),
        key: id("a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1"),
        tag: Some(RecordTag([0x44; 32])),
    };
    assert_eq!(hex::encode(format::aliases::encode(&entry).unwrap()), alias["value"]);
    let value = hex::decode(&alias["value"]).unwrap();
    assert_eq!(format::aliases::decode(alias["alias"].as_bytes(), &value).unwrap(), entry);
}

#[test]
fn shared_key_records_match_their_golden_bytes() {
    let vectors = cases(include_str!("vectors/key_record_shared_v1.txt"));
    assert_eq!(vectors.len(), 3);
    let tags = [("every field set", 0x11), ("fresh key", 0x22), ("destroyed key", 0x33)];
    for (v, (name, tag)) in vectors.iter().zip(tags) {
        assert_eq!(v["name"], name);
        let record = KeyRecord { tag: Some(RecordTag([tag; 32])), ..key_record(name) };
        let bytes = format::keys::encode_shared(&record).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), v["bytes"], "{name}");
        assert_eq!(format::keys::decode_shared(v["bytes"].as_bytes()).unwrap(), record, "{name}");
    }
    // Never without a tag; unknown fields and a short tag are refused.
    assert!(format::keys::encode_shared(&key_record("fresh key")).is_err());
    let fresh = &vectors[1]["bytes"];
    assert!(format::keys::decode_shared(
        fresh.replace("\"rotation\":{}}", "\"rotation\":{}},\"x\":1").as_bytes()
    )
    .is_err());
    assert!(format::keys::decode_shared(fresh.replace(&"22".repeat(32), "22").as_bytes()).is_err());
}

#[test]
fn usage_entries_match_their_golden_bytes() {
    let vectors = cases(include_str!("vectors/usage_v1.txt"));
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let n = |f: &str| v[f].parse::<i64>().unwrap();
        let usage = VersionUsage {
            encryptions: n("encryptions") as u64,
            data_keys: n("data_keys") as u64,
            decryptions: n("decryptions") as u64,
            last_use_ms: n("last_use_ms"),
        };
        let (key, version) = (id(&v["key_id"]), n("version") as u32);
        assert_eq!(hex::encode(format::usage::key(key, version)), v["key"], "{}", v["name"]);
        assert_eq!(hex::encode(format::usage::encode(&usage)), v["value"], "{}", v["name"]);
        assert_eq!(format::usage::decode_key(&hex::decode(&v["key"]).unwrap()), Some((key, version)));
        assert_eq!(format::usage::decode(&hex::decode(&v["value"]).unwrap()), Some(usage));
    }
}

/// The chain the vectors describe: record `seq` of three.
fn audit_record(seq: u64, prev_hash: String) -> AuditRecord {
    let base = AuditRecord {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        request_id: format!("req-{seq}"),
        principal: "alice".into(),
        peer: "127.0.0.1:40000".into(),
        edge: None,
        node_id: None,
        operation: String::new(),
        key_id: None,
        key_version: None,
        alias: None,
        source_key_id: None,
        source_key_version: None,
        target: None,
        context: BTreeMap::new(),
        outcome: "OK".into(),
        reason: String::new(),
        prev_hash,
    };
    let key = "a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1".to_string();
    match seq {
        1 => AuditRecord {
            operation: "CreateKey".into(),
            key_id: Some(key),
            key_version: Some(1),
            alias: Some("alias/pay".into()),
            ..base
        },
        2 => AuditRecord {
            operation: "ReEncrypt".into(),
            key_id: Some(key.clone()),
            key_version: Some(2),
            source_key_id: Some(key),
            source_key_version: Some(1),
            target: None,
            context: BTreeMap::from([("tenant".into(), "acme".into()), ("région".into(), "île".into())]),
            ..base
        },
        3 => AuditRecord {
            principal: "mallory".into(),
            operation: "Decrypt".into(),
            outcome: "PERMISSION_DENIED".into(),
            reason: "mallory may not decrypt with key a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1".into(),
            ..base
        },
        _ => unreachable!("three records"),
    }
}

#[test]
fn a_short_audit_chain_matches_its_golden_bytes_and_verifies() {
    let vectors = cases(include_str!("vectors/audit_chain_v1.txt"));
    assert_eq!(vectors.len(), 4, "three records and the head");
    let mut prev = GENESIS_HASH.to_string();
    let mut sealed = Vec::new();
    for v in &vectors[..3] {
        let seq: u64 = v["seq"].parse().unwrap();
        let record = audit_record(seq, prev.clone());
        let bytes = format::audit::encode(&record);
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), v["bytes"], "record {seq}");
        assert_eq!(format::audit::decode(v["bytes"].as_bytes()).unwrap(), record, "record {seq}");
        let s = SealedRecord { record, bytes };
        assert_eq!(s.hash(), v["hash"], "record {seq}");
        prev = s.hash();
        sealed.push(s);
    }
    let head = AuditHead { seq: 3, hash: prev };
    assert_eq!(String::from_utf8(format::audit::encode_head(&head)).unwrap(), vectors[3]["head"]);
    assert_eq!(format::audit::decode_head(vectors[3]["head"].as_bytes()).unwrap(), head);

    // The same bytes in a real data folder verify as an intact chain.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStore::open(dir.path()).unwrap());
    store.commit(&CommitBatch { audit: sealed, head: Some(head), ..Default::default() }).unwrap();
    let report = keyward_core::verify_chain(&*store).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records_checked, 3);
}

#[test]
fn records_with_an_edge_match_their_golden_bytes_and_chain_onto_format_1_records() {
    let v1 = cases(include_str!("vectors/audit_chain_v1.txt"));
    let vectors = cases(include_str!("vectors/audit_edge_v1.txt"));
    assert_eq!(vectors.len(), 2);
    let mut prev = GENESIS_HASH.to_string();
    let mut sealed = Vec::new();
    for seq in 1..=3 {
        let record = audit_record(seq, prev.clone());
        let bytes = format::audit::encode(&record);
        let s = SealedRecord { record, bytes };
        prev = s.hash();
        sealed.push(s);
    }
    assert_eq!(prev, v1[2]["hash"]);
    let key = "a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1".to_string();
    let edge_fields = |seq: u64, base: AuditRecord, key: String| match seq {
        4 => AuditRecord {
            principal: "svc".into(),
            peer: "127.0.0.1:40001".into(),
            edge: Some("aws-kms".into()),
            node_id: None,
            operation: "Encrypt".into(),
            key_id: Some(key.clone()),
            key_version: Some(2),
            context: BTreeMap::from([("aws-crypto-public-key".into(), "AxyZ".into())]),
            ..base
        },
        _ => AuditRecord {
            principal: "ops".into(),
            peer: String::new(),
            edge: Some("grpc".into()),
            node_id: None,
            operation: "CreateGrant".into(),
            target: Some(
                "grant:0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f principal:svc keys:* operations:Encrypt".into(),
            ),
            ..base
        },
    };
    let edge_record = |seq: u64, prev_hash: String| {
        let base = AuditRecord {
            seq,
            time_ms: 1_700_000_000_000 + seq as i64,
            request_id: format!("req-{seq}"),
            key_id: None,
            key_version: None,
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: BTreeMap::new(),
            outcome: "OK".into(),
            reason: String::new(),
            ..audit_record(3, prev_hash)
        };
        edge_fields(seq, base, key.clone())
    };
    for v in &vectors {
        let seq: u64 = v["seq"].parse().unwrap();
        let record = edge_record(seq, prev.clone());
        let bytes = format::audit::encode(&record);
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), v["bytes"], "record {seq}");
        assert_eq!(format::audit::decode(v["bytes"].as_bytes()).unwrap(), record, "record {seq}");
        let s = SealedRecord { record, bytes };
        assert_eq!(s.hash(), v["hash"], "record {seq}");
        prev = s.hash();
        sealed.push(s);
    }
    // Old and new records in one chain, in a real data folder, verify.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStore::open(dir.path()).unwrap());
    let head = AuditHead { seq: 5, hash: prev };
    store.commit(&CommitBatch { audit: sealed, head: Some(head), ..Default::default() }).unwrap();
    let report = keyward_core::verify_chain(&*store).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records_checked, 5);
}

fn access_records() -> Vec<keyward_core::AccessRecord> {
    use keyward_core::{
        AccessRecord, ContextConstraint, Grant, GrantRecord, KeySelector, Permission, PrincipalRecord, Role,
        TokenRecord,
    };
    let id: keyward_core::AccessId = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".parse().unwrap();
    let mut grant = Grant::new(
        vec![KeySelector::Alias("alias/pay".into()), KeySelector::Label("team".into(), "pay".into())],
        [Permission::Decrypt, Permission::Encrypt],
    );
    grant.constraint = ContextConstraint::Contains(BTreeMap::from([("tenant".into(), "acme".into())]));
    vec![
        AccessRecord::Principal(PrincipalRecord {
            name: "payments-api".into(),
            roles: [Role::User, Role::Auditor].into(),
            created_ms: 1_700_000_000_000,
            tag: Some(RecordTag([0x77; 32])),
        }),
        AccessRecord::Token(TokenRecord {
            id,
            principal: "payments-api".into(),
            hash: [0x5a; 32],
            created_ms: 1_700_000_000_000,
            expires_ms: 1_700_003_600_000,
            tag: Some(RecordTag([0x88; 32])),
        }),
        AccessRecord::Grant(GrantRecord {
            id,
            principal: "payments-api".into(),
            grant,
            created_ms: 1_700_000_000_000,
            tag: Some(RecordTag([0x99; 32])),
        }),
    ]
}

#[test]
fn access_records_match_their_golden_vectors() {
    let vectors = cases(include_str!("vectors/access_v2.txt"));
    assert_eq!(vectors.len(), 4);
    for (v, r) in vectors.iter().zip(access_records()) {
        assert_eq!(hex::encode(format::access::key(&r.key())), v["key"], "{}", v["name"]);
        assert_eq!(
            String::from_utf8(format::access::encode(&r).unwrap()).unwrap(),
            v["bytes"],
            "{}",
            v["name"]
        );
        assert_eq!(format::access::decode(v["bytes"].as_bytes()).unwrap(), r, "{}", v["name"]);
    }
    let last = &vectors[3];
    let id: keyward_core::AccessId = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".parse().unwrap();
    assert_eq!(hex::encode(format::access::use_key(&id)), last["key"]);
    let (got, ms) = format::access::decode_use(
        &hex::decode(&last["key"]).unwrap(),
        &hex::decode(&last["value"]).unwrap(),
    )
    .unwrap();
    assert_eq!((got, ms), (id, 1_700_000_123_456));
    // A stored record never lacks its tag.
    let mut untagged = access_records().remove(0);
    if let keyward_core::AccessRecord::Principal(p) = &mut untagged {
        p.tag = None;
    }
    assert!(format::access::encode(&untagged).is_err());
}

#[test]
fn access_keys_match_their_golden_vector() {
    let v = cases(include_str!("vectors/access_key_v1.txt")).remove(0);
    let r = keyward_core::AccessRecord::AccessKey(keyward_core::AccessKeyRecord {
        id: "KWAKABCDEFGHIJKLMNOP".into(),
        principal: "payments-api".into(),
        sealed_secret: keyward_crypto::SealedAccessSecret::from_stored(
            [&[1u8][..], &(0..12).collect::<Vec<u8>>(), &[0x5a; 56]].concat(),
        ),
        created_ms: 1_700_000_000_000,
        tag: Some(RecordTag([0xab; 32])),
    });
    assert_eq!(hex::encode(format::access::key(&r.key())), v["key"]);
    assert_eq!(String::from_utf8(format::access::encode(&r).unwrap()).unwrap(), v["bytes"]);
    assert_eq!(format::access::decode(v["bytes"].as_bytes()).unwrap(), r);
    // An id of another shape is corruption, not an access key.
    let bad = v["bytes"].replace("KWAKABCDEFGHIJKLMNOP", "kwak0000");
    assert!(format::access::decode(bad.as_bytes()).is_err());
}

#[test]
fn rocksdb_keeps_access_records_and_token_uses_across_reopen() {
    use keyward_core::{AccessChange, AccessRecordKey};
    let dir = tempfile::tempdir().unwrap();
    let records = access_records();
    let id: keyward_core::AccessId = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".parse().unwrap();
    {
        let s = RocksStore::open(dir.path()).unwrap();
        let batch = CommitBatch {
            access: records.iter().cloned().map(AccessChange::Put).collect(),
            token_uses: vec![(id, 42)],
            ..Default::default()
        };
        s.commit(&batch).unwrap();
    }
    let s = RocksStore::open(dir.path()).unwrap();
    let mut loaded = s.load_access().unwrap();
    loaded.sort_by_key(|r| r.key());
    let mut want = records.clone();
    want.sort_by_key(|r| r.key());
    assert_eq!(loaded, want);
    assert_eq!(s.load_token_uses().unwrap(), vec![(id, 42)]);
    // Deleting a token deletes its last use too.
    let batch =
        CommitBatch { access: vec![AccessChange::Delete(AccessRecordKey::Token(id))], ..Default::default() };
    s.commit(&batch).unwrap();
    assert!(s.load_token_uses().unwrap().is_empty());
    assert_eq!(s.load_access().unwrap().len(), 2);
}

#[test]
fn hourly_counts_match_their_golden_bytes() {
    use keyward_core::rollup::RollupKey;
    let vectors = cases(include_str!("vectors/rollup_v1.txt"));
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let hour: u32 = v["hour"].parse().unwrap();
        let s = |f: &str| v[f].clone();
        let k = match v["kind"].as_str() {
            "usage" => {
                RollupKey::Usage { key: id(&v["key_id"]), hour, version: v["version"].parse().unwrap() }
            }
            "outcome" => RollupKey::Outcome { hour, operation: s("operation"), outcome: s("outcome") },
            "key_outcome" => RollupKey::KeyOutcome {
                key: id(&v["key_id"]),
                hour,
                operation: s("operation"),
                outcome: s("outcome"),
            },
            "principal_outcome" => RollupKey::PrincipalOutcome {
                principal: s("principal"),
                hour,
                operation: s("operation"),
                outcome: s("outcome"),
            },
            other => panic!("kind {other}"),
        };
        let counts: Vec<u64> = v["counts"].split(',').map(|n| n.parse().unwrap()).collect();
        let counts: [u64; 3] = counts.try_into().unwrap();
        assert_eq!(hex::encode(format::rollup::key(&k)), v["key"], "{}", v["name"]);
        assert_eq!(hex::encode(format::rollup::encode(&counts)), v["value"], "{}", v["name"]);
        let (key, value) = (hex::decode(&v["key"]).unwrap(), hex::decode(&v["value"]).unwrap());
        match &k {
            RollupKey::Usage { version, .. } => {
                let u = format::rollup::decode_usage(&key, &value).unwrap();
                assert_eq!(
                    (u.hour, u.version, u.encryptions, u.data_keys, u.decryptions),
                    (hour, *version, 5, 2, 7)
                );
            }
            RollupKey::Outcome { operation, outcome, .. }
            | RollupKey::KeyOutcome { operation, outcome, .. }
            | RollupKey::PrincipalOutcome { operation, outcome, .. } => {
                let o = format::rollup::decode_outcome(&key, &value).unwrap();
                assert_eq!(
                    (o.hour, &o.operation, &o.outcome, o.records),
                    (hour, operation, outcome, counts[0])
                );
            }
        }
    }
}
