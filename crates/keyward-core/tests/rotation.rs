//! Scheduled rotation, usage counting with a cap, compromised versions and
//! batch data keys, against the in-memory store, with the clock
//! moved by the test and restarts in between.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{caller, open, open_with};
use keyward_core::testing::{FaultyStore, ManualClock, MemoryStore};
use keyward_core::{
    AuditQuery, AuditRecord, Clock, CreateKeyInput, DataKeyInput, ErrorKind, KeyView, Kms, KmsConfig,
    KmsError, Limits, ReEncryptInput, RotationInput, Store, VersionUsage, MIN_ROTATION_PERIOD_MS,
};
use keyward_crypto::Plaintext;

const HOUR: i64 = MIN_ROTATION_PERIOD_MS;
const T0: i64 = 1_800_000_000_000;

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// Stops the writer and releases the store, as a server shutdown does, and
/// hands it back for the restart.
fn close(kms: Kms, store: Arc<dyn Store>) -> Arc<dyn Store> {
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop(kms);
    assert_eq!(Arc::strong_count(&store), 1, "nothing else holds the store");
    store
}

async fn encrypt(kms: &Kms, key: &str) -> Result<(Vec<u8>, u32), KmsError> {
    kms.encrypt(&caller(), key, Plaintext::new(b"data".to_vec()), HashMap::new())
        .await
        .map(|o| (o.ciphertext, o.key_version))
}

fn records(store: &Arc<dyn Store>, n: usize) -> Vec<AuditRecord> {
    store
        .query_audit(&AuditQuery { limit: n, ..Default::default() })
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.record)
        .collect()
}

async fn usage(kms: &Kms, key: &str) -> Vec<(u32, VersionUsage)> {
    let versions = kms.list_key_versions(&caller(), key).await.unwrap().versions;
    versions.into_iter().map(|v| (v.meta.version, v.usage)).collect()
}

async fn primary(kms: &Kms, key: &str) -> u32 {
    kms.describe_key(&caller(), key).await.unwrap().meta.primary_version
}

#[tokio::test]
async fn scheduled_rotation_runs_when_due_also_after_a_missed_restart() {
    let clock = ManualClock::at(T0);
    let store = memory();
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap();
    let key = meta.id.to_string();
    assert_eq!(meta.rotation, Default::default(), "no policy unless asked");

    // Bad policies are refused naming the field, and change nothing.
    for (input, field) in [
        (RotationInput { period_ms: Some(HOUR - 1), ..Default::default() }, "rotation_period"),
        (RotationInput { next_rotation_ms: Some(T0 + HOUR), ..Default::default() }, "next_rotation_time"),
        (
            RotationInput { period_ms: Some(HOUR), next_rotation_ms: Some(T0 - 1), ..Default::default() },
            "next_rotation_time",
        ),
        (
            RotationInput { max_encryptions_per_version: Some(0), ..Default::default() },
            "max_encryptions_per_version",
        ),
    ] {
        let e = kms.update_rotation_policy(&caller(), &key, input).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().starts_with(field), "{e}");
    }

    // Every 24 h; the next rotation is one period from now.
    let day = 24 * HOUR;
    let KeyView { meta: m, .. } = kms
        .update_rotation_policy(&caller(), &key, RotationInput { period_ms: Some(day), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((m.rotation.period_ms, m.rotation.next_rotation_ms), (Some(day), Some(T0 + day)));
    let r = &records(&store, 1)[0];
    assert_eq!(
        (r.operation.as_str(), r.principal.as_str(), r.outcome.as_str()),
        ("UpdateRotationPolicy", "admin", "OK")
    );

    // Not yet due: nothing happens and nothing is recorded.
    let head = store.audit_head().unwrap().unwrap().seq;
    clock.advance_ms(day - 1);
    assert_eq!(kms.run_due().await.unwrap(), 0);
    assert_eq!(store.audit_head().unwrap().unwrap().seq, head);

    // A manual rotation does not move the schedule.
    let KeyView { meta: m, .. } = kms.rotate_key(&caller(), &key).await.unwrap();
    assert_eq!((m.primary_version, m.rotation.next_rotation_ms), (2, Some(T0 + day)));

    // Due: rotated by the system, next one period later.
    clock.advance_ms(1);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let KeyView { meta: m, .. } = kms.describe_key(&caller(), &key).await.unwrap();
    assert_eq!((m.primary_version, m.rotation.next_rotation_ms), (3, Some(T0 + 2 * day)));
    let r = &records(&store, 2)[1];
    assert_eq!(
        (r.operation.as_str(), r.principal.as_str(), r.key_version, r.outcome.as_str()),
        ("RotateKey", "system", Some(3), "OK")
    );
    assert_eq!(kms.run_due().await.unwrap(), 0, "once per due time");

    // Down for three periods: one rotation at start-up, then on schedule again.
    let store = close(kms, store);
    clock.advance_ms(3 * day + 5);
    let kms = open(&store, &clock);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let now = T0 + 4 * day + 5;
    let KeyView { meta: m, .. } = kms.describe_key(&caller(), &key).await.unwrap();
    assert_eq!((m.primary_version, m.rotation.next_rotation_ms), (4, Some(now + day)));
    assert_eq!(kms.run_due().await.unwrap(), 0);

    // A disabled key is not rotated while disabled; enabled again, it catches up.
    kms.disable_key(&caller(), &key).await.unwrap();
    clock.advance_ms(day);
    assert_eq!(kms.run_due().await.unwrap(), 0);
    kms.enable_key(&caller(), &key).await.unwrap();
    assert_eq!(kms.run_due().await.unwrap(), 1);
    assert_eq!(primary(&kms, &key).await, 5);

    // An explicit first rotation time, then clearing the policy.
    let at = clock.now_ms() + 2 * HOUR;
    let KeyView { meta: m, .. } = kms
        .update_rotation_policy(
            &caller(),
            &key,
            RotationInput { period_ms: Some(day), next_rotation_ms: Some(at), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(m.rotation.next_rotation_ms, Some(at));
    let KeyView { meta: m, .. } =
        kms.update_rotation_policy(&caller(), &key, RotationInput::default()).await.unwrap();
    assert_eq!(m.rotation, Default::default());
    clock.advance_ms(100 * day);
    assert_eq!(kms.run_due().await.unwrap(), 0);
    assert_eq!(primary(&kms, &key).await, 5);

    // A key created with a policy is scheduled from its creation.
    let input = CreateKeyInput {
        rotation: RotationInput { period_ms: Some(HOUR), ..Default::default() },
        ..Default::default()
    };
    let KeyView { meta: m, .. } = kms.create_key(&caller(), input).await.unwrap();
    assert_eq!(m.rotation.next_rotation_ms, Some(clock.now_ms() + HOUR));
}

#[tokio::test]
async fn usage_is_counted_durably_and_the_cap_rotates_before_sealing_more() {
    let clock = ManualClock::at(T0);
    let store = memory();
    let kms = open(&store, &clock);
    let input = CreateKeyInput {
        rotation: RotationInput { max_encryptions_per_version: Some(3), ..Default::default() },
        ..Default::default()
    };
    let KeyView { meta, .. } = kms.create_key(&caller(), input).await.unwrap();
    let key = meta.id.to_string();
    assert_eq!(usage(&kms, &key).await, vec![(1, VersionUsage::default())]);

    // Two encryptions and one data key use up v1; a failed request counts nothing.
    let (ct, v) = encrypt(&kms, &key).await.unwrap();
    assert_eq!(v, 1);
    clock.advance_ms(10);
    encrypt(&kms, &key).await.unwrap();
    let dk = kms
        .generate_data_key(
            &caller(),
            DataKeyInput { key: key.clone(), number_of_bytes: Some(16), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(dk.key_version, 1);
    let bad = HashMap::from([(String::new(), "x".to_string())]);
    kms.encrypt(&caller(), &key, Plaintext::new(b"x".to_vec()), bad).await.unwrap_err();
    kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap();
    let v1 = VersionUsage { encryptions: 2, data_keys: 1, decryptions: 1, last_use_ms: T0 + 10 };
    assert_eq!(usage(&kms, &key).await, vec![(1, v1)]);

    // The fourth seal rotates first (recorded as the system, with the
    // request's id), then uses v2.
    let (_, v) = encrypt(&kms, &key).await.unwrap();
    assert_eq!(v, 2);
    let recs = records(&store, 2);
    assert_eq!(
        (
            recs[1].operation.as_str(),
            recs[1].principal.as_str(),
            recs[1].request_id.as_str(),
            recs[1].key_version
        ),
        ("RotateKey", "system", "req-1", Some(2))
    );
    assert_eq!((recs[0].operation.as_str(), recs[0].key_version), ("Encrypt", Some(2)));

    // Counts survive a restart exactly, and the cap still holds after it.
    let store = close(kms, store);
    let kms = open(&store, &clock);
    let after = usage(&kms, &key).await;
    assert_eq!(after[0], (1, v1));
    assert_eq!((after[1].0, after[1].1.encryptions), (2, 1));
    encrypt(&kms, &key).await.unwrap();
    encrypt(&kms, &key).await.unwrap();
    assert_eq!(encrypt(&kms, &key).await.unwrap().1, 3);

    // ReEncrypt counts a decryption of the source and an encryption of the destination.
    let re = kms
        .re_encrypt(
            &caller(),
            ReEncryptInput { ciphertext: ct.clone(), destination_key: key.clone(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((re.source_key_version, re.key_version), (1, 3));
    let u = usage(&kms, &key).await;
    assert_eq!((u[0].1.decryptions, u[2].1.encryptions), (2, 2));

    // Many at once: no version ever seals more than its cap.
    let kms = Arc::new(kms);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (kms, key) = (kms.clone(), key.clone());
            tokio::spawn(async move { encrypt(&kms, &key).await.unwrap().1 })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let u = usage(&kms, &key).await;
    let total: u64 = u.iter().map(|(_, u)| u.sealed()).sum();
    assert_eq!(total, 3 + 3 + 2 + 40, "every acknowledged seal counted once");
    for (v, x) in &u {
        assert!(x.sealed() <= 3, "version {v} sealed {} > cap", x.sealed());
    }
}

#[tokio::test]
async fn unacknowledged_uses_are_not_counted() {
    let clock = ManualClock::at(T0);
    let (faulty, faults) = FaultyStore::new(memory());
    let store: Arc<dyn Store> = Arc::new(faulty);
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap();
    let key = meta.id.to_string();
    encrypt(&kms, &key).await.unwrap();
    faults.fail_writes.store(true, Ordering::SeqCst);
    let e = encrypt(&kms, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    faults.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(usage(&kms, &key).await[0].1.encryptions, 1);
}

#[tokio::test]
async fn a_compromised_version_opens_only_for_reencrypt() {
    let clock = ManualClock::at(T0);
    let store = memory();
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap();
    let key = meta.id.to_string();
    let (ct, _) = encrypt(&kms, &key).await.unwrap();

    let e = kms.mark_key_version_compromised(&caller(), &key, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "not the primary");
    kms.rotate_key(&caller(), &key).await.unwrap();
    let KeyView { meta: m, .. } = kms.mark_key_version_compromised(&caller(), &key, 1).await.unwrap();
    assert!(m.version(1).unwrap().compromised);
    let r = &records(&store, 1)[0];
    assert_eq!(
        (r.operation.as_str(), r.key_version, r.outcome.as_str()),
        ("MarkKeyVersionCompromised", Some(1), "OK")
    );

    let e = kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("version 1") && e.to_string().contains("compromised"), "{e}");

    // Survives a restart; ReEncrypt moves the data to v2, which decrypts.
    let store = close(kms, store);
    let kms = open(&store, &clock);
    kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap_err();
    let re = kms
        .re_encrypt(
            &caller(),
            ReEncryptInput { ciphertext: ct.clone(), destination_key: key.clone(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(re.key_version, 2);
    let out = kms.decrypt(&caller(), &re.ciphertext, HashMap::new(), None).await.unwrap();
    assert_eq!(out.plaintext.expose_secret(), b"data");

    // Idempotent, one way (enabling does not clear it), and shown by ListKeyVersions.
    kms.mark_key_version_compromised(&caller(), &key, 1).await.unwrap();
    kms.disable_key_version(&caller(), &key, 1).await.unwrap();
    kms.enable_key_version(&caller(), &key, 1).await.unwrap();
    let versions = kms.list_key_versions(&caller(), &key).await.unwrap().versions;
    assert!(versions[0].meta.compromised && !versions[0].primary);
    assert!(!versions[1].meta.compromised && versions[1].primary);
}

#[tokio::test]
async fn batch_data_keys_are_independent_and_each_audited() {
    let clock = ManualClock::at(T0);
    let store = memory();
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms.create_key(&caller(), CreateKeyInput::default()).await.unwrap();
    let key = meta.id.to_string();
    let ctx = HashMap::from([("app".to_string(), "x".to_string())]);
    let keys = kms
        .generate_data_keys(
            &caller(),
            DataKeyInput {
                key: key.clone(),
                number_of_bytes: Some(32),
                context: ctx.clone(),
                with_plaintext: true,
            },
            50,
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 50);
    let mut seen = std::collections::HashSet::new();
    for k in &keys {
        let pt = k.plaintext.as_ref().unwrap().expose_secret().to_vec();
        assert!(seen.insert(pt.clone()), "distinct data keys");
        let out = kms.decrypt(&caller(), &k.ciphertext, ctx.clone(), None).await.unwrap();
        assert_eq!(out.plaintext.expose_secret(), &pt[..]);
    }
    let recs = store
        .query_audit(&AuditQuery {
            limit: 1000,
            operation: Some("GenerateDataKey".into()),
            ..Default::default()
        })
        .unwrap()
        .records;
    assert_eq!(recs.len(), 50, "one record per data key");
    assert_eq!(usage(&kms, &key).await[0].1.data_keys, 50);

    for bad in [0, 1001] {
        let e = kms
            .generate_data_keys(&caller(), DataKeyInput { key: key.clone(), ..Default::default() }, bad)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().starts_with("count"), "{e}");
    }
}

#[tokio::test]
async fn a_usage_cap_makes_at_most_so_many_versions_an_hour() {
    let clock = ManualClock::at(T0);
    let store = memory();
    let limits = Limits { max_cap_rotations_per_hour: 3, ..Default::default() };
    let kms = open_with(&store, &clock, KmsConfig { limits, ..Default::default() });
    let input = CreateKeyInput {
        rotation: RotationInput { max_encryptions_per_version: Some(1), ..Default::default() },
        ..Default::default()
    };
    let key = kms.create_key(&caller(), input).await.unwrap().meta.id.to_string();
    // v1's one seal, then three rotations by the cap, spread over the hour.
    for want in 1..=4 {
        assert_eq!(encrypt(&kms, &key).await.unwrap().1, want);
        clock.advance_ms(10 * 60_000);
    }
    // A fourth cap rotation within the hour of the first is refused, naming
    // the cap and the limit, recorded once (no system RotateKey record).
    let before = records(&store, 1000).len();
    let e = encrypt(&kms, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    let m = e.public_message();
    assert!(m.contains("max_encryptions_per_version = 1") && m.contains("max_cap_rotations_per_hour"), "{m}");
    let recs = records(&store, 1000);
    assert_eq!(recs.len(), before + 1);
    assert_eq!(
        (recs[0].operation.as_str(), recs[0].outcome.as_str(), recs[0].key_id.as_deref()),
        ("Encrypt", "RESOURCE_EXHAUSTED", Some(key.as_str()))
    );
    assert_eq!(primary(&kms, &key).await, 4, "no version was made");
    // A manual rotation is not the cap's, and is not limited by it.
    kms.rotate_key(&caller(), &key).await.unwrap();
    assert_eq!(encrypt(&kms, &key).await.unwrap().1, 5);
    // An hour after the first cap rotation, the cap may rotate again.
    clock.advance_ms(HOUR - 30 * 60_000);
    assert_eq!(encrypt(&kms, &key).await.unwrap().1, 6);
}
