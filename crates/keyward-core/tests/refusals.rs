//! Refusals cost the service as little as possible: a non-administrator's
//! lifecycle request is refused without the lifecycle lock, and past a
//! per-peer threshold a second's refusals are counted into one record.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::{caller, open};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{
    AuditQuery, AuditRecord, Caller, ErrorKind, Grant, KeySelector, KmsError, Operation, Permission, Policy,
    Role, Store, REFUSALS_AUDITED_PER_SECOND,
};
use keyward_crypto::Plaintext;

/// A user with every crypto grant on every key, and no other role.
fn user(peer: &str) -> Caller {
    Caller {
        request_id: "req-user".into(),
        principal: "user".into(),
        peer: peer.into(),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::new(
            BTreeSet::from([Role::User]),
            vec![Grant::new(vec![KeySelector::Any], Permission::ALL)],
        )),
    }
}

fn records(store: &Arc<dyn Store>) -> Vec<AuditRecord> {
    let page = store.query_audit(&AuditQuery { limit: 1000, oldest_first: true, ..Default::default() });
    page.unwrap().records.into_iter().map(|r| r.record).collect()
}

/// Fails (instead of hanging) if `f` waits for the held lock.
async fn without_waiting<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for the lifecycle lock"))
}

#[tokio::test]
async fn a_non_admin_lifecycle_request_is_refused_and_audited_without_the_lifecycle_lock() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_000_000);
    let kms = open(&store, &clock);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    let k = key.to_string();
    kms.create_alias(&caller(), "alias/held", &k).await.unwrap();
    let before = records(&store).len();
    let u = user("10.0.0.1:4000");

    // Someone holds the lifecycle lock (as an administrator's change does
    // until its write is applied); every refusal below completes regardless.
    let held = kms.hold_lifecycle_lock().await;
    let refusals: Vec<(Operation, Result<(), KmsError>)> = vec![
        (Operation::RotateKey, without_waiting("RotateKey", kms.rotate_key(&u, &k)).await.map(drop)),
        (Operation::DisableKey, without_waiting("DisableKey", kms.disable_key(&u, &k)).await.map(drop)),
        (
            Operation::ScheduleKeyDeletion,
            without_waiting("ScheduleKeyDeletion", kms.schedule_key_deletion(&u, &k, Some(7)))
                .await
                .map(drop),
        ),
        (
            Operation::DisableKeyVersion,
            without_waiting("DisableKeyVersion", kms.disable_key_version(&u, &k, 1)).await.map(drop),
        ),
        (
            Operation::CreateKey,
            without_waiting("CreateKey", kms.create_key(&u, Default::default())).await.map(drop),
        ),
        (
            Operation::CreateAlias,
            without_waiting("CreateAlias", kms.create_alias(&u, "alias/other", &k)).await.map(drop),
        ),
        (Operation::DeleteAlias, without_waiting("DeleteAlias", kms.delete_alias(&u, "alias/held")).await),
    ];
    for (op, r) in &refusals {
        let e = r.as_ref().expect_err(op.as_str());
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{}: {e}", op.as_str());
    }
    // Each refusal is durable already, naming the key where the request did.
    let added = records(&store).split_off(before);
    let got: Vec<_> = added.iter().map(|r| (r.operation.as_str(), r.outcome.as_str())).collect();
    let want: Vec<_> = refusals.iter().map(|(op, _)| (op.as_str(), "PERMISSION_DENIED")).collect();
    assert_eq!(got, want);
    let rotate = &added[0];
    assert_eq!((rotate.key_id.as_deref(), rotate.principal.as_str()), (Some(k.as_str()), "user"));

    // Nothing changed, and an administrator's change proceeds once the lock is free.
    drop(held);
    let view = kms.rotate_key(&caller(), &k).await.unwrap();
    assert_eq!(view.meta.primary_version, 2);
    assert_eq!(view.meta.state, keyward_core::KeyState::Enabled);
    assert_eq!(view.aliases, vec!["alias/held".to_string()]);
}

#[tokio::test]
async fn past_the_threshold_a_seconds_refusals_from_one_peer_become_one_record() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(10_000_000);
    let kms = open(&store, &clock);
    let before = records(&store).len();
    let nobody = |port: u16| Caller {
        request_id: format!("req-{port}"),
        principal: "unauthenticated".into(),
        peer: format!("192.0.2.7:{port}"),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::default()),
    };
    const FLOOD: u16 = 250;
    // A flood from one address (every request from a new source port) ...
    for port in 0..FLOOD {
        let e = kms
            .refuse(&nobody(port), Operation::Encrypt, KmsError::Unauthenticated("bad token".into()))
            .await;
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    // ... and an authenticated caller refused for want of a role, from another.
    let auditor_only = Caller { policy: Arc::new(Policy::default()), ..user("198.51.100.9:1") };
    for _ in 0..30 {
        let e = kms.verify_audit(&auditor_only).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }
    // Another peer below the threshold is audited one by one.
    let quiet = user("203.0.113.1:5");
    kms.create_key(&quiet, Default::default()).await.unwrap_err();
    let t = REFUSALS_AUDITED_PER_SECOND as usize;
    assert_eq!(records(&store).len() - before, t + t + 1, "only the first {t} of each kind are written");

    // Once the second is over, one summary per kind says how many more there were.
    kms.flush_refusals(false).await;
    assert_eq!(records(&store).len() - before, 2 * t + 1, "the second is not over yet");
    clock.advance_ms(1000);
    kms.flush_refusals(false).await;
    let added = records(&store).split_off(before);
    assert_eq!(added.len(), 2 * t + 1 + 2);
    let summaries: HashMap<_, _> = added
        .iter()
        .filter(|r| r.reason.contains("(aggregated)"))
        .map(|r| ((r.peer.as_str(), r.principal.as_str(), r.operation.as_str(), r.outcome.as_str()), r))
        .collect();
    let flood = summaries[&("192.0.2.7", "unauthenticated", "Encrypt", "UNAUTHENTICATED")];
    assert_eq!(
        flood.reason,
        format!("{} refusals from this peer in this second (aggregated)", FLOOD as usize - t)
    );
    assert_eq!(flood.time_ms, 10_000_000);
    let denied = summaries[&("198.51.100.9", "user", "VerifyAuditLog", "PERMISSION_DENIED")];
    assert_eq!(denied.reason, format!("{} refusals from this peer in this second (aggregated)", 30 - t));
    assert_eq!(summaries.len(), 2);

    // A new second starts counting afresh; the chain still verifies.
    kms.refuse(&nobody(1), Operation::Encrypt, KmsError::Unauthenticated("bad token".into())).await;
    assert_eq!(records(&store).len() - before, 2 * t + 1 + 2 + 1);
    let report = kms.verify_audit(&caller()).await.unwrap();
    assert!(report.intact(), "{report:?}");
    // Successes are never counted away.
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    for _ in 0..(2 * t) {
        kms.encrypt(&caller(), &key, Plaintext::new(b"x".to_vec()), HashMap::new()).await.unwrap();
    }
    let ok = records(&store).iter().filter(|r| r.operation == "Encrypt" && r.outcome == "OK").count();
    assert_eq!(ok, 2 * t);
}
