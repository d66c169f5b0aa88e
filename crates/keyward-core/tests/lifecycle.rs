//! Version retirement and safe key deletion, with the clock moved by the
//! test instead of slept: every transition, its audit record, and a restart
//! that missed the moment.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{caller, open};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{AuditQuery, ErrorKind, KeyState, KeyView, Kms, Store, VersionState};
use keyward_crypto::Plaintext;

const DAY: i64 = 24 * 60 * 60 * 1000;

async fn encrypt(kms: &Kms, key: &str) -> Vec<u8> {
    kms.encrypt(&caller(), key, Plaintext::new(b"data".to_vec()), HashMap::new()).await.unwrap().ciphertext
}

async fn decrypt(kms: &Kms, ct: &[u8]) -> Result<Vec<u8>, keyward_core::KmsError> {
    kms.decrypt(&caller(), ct, HashMap::new(), None).await.map(|o| o.plaintext.expose_secret().to_vec())
}

async fn last_record(store: &Arc<dyn Store>) -> keyward_core::AuditRecord {
    store.query_audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap().records.remove(0).record
}

#[tokio::test]
async fn versions_disable_enable_destroy_restore() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_000_000);
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms.create_key(&caller(), Default::default()).await.unwrap();
    let key = meta.id.to_string();
    let v1_ct = encrypt(&kms, &key).await;
    kms.rotate_key(&caller(), &key).await.unwrap();

    // The primary version can be neither disabled nor destroyed.
    let e = kms.disable_key_version(&caller(), &key, 2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("primary"));
    let e = kms.schedule_key_version_destruction(&caller(), &key, 2, Some(1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    let e = kms.disable_key_version(&caller(), &key, 7).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // Disable v1: decrypt refused naming the version; enable: works again.
    let KeyView { meta: m, .. } = kms.disable_key_version(&caller(), &key, 1).await.unwrap();
    assert_eq!(m.version(1).unwrap().state, VersionState::Disabled);
    let r = last_record(&store).await;
    assert_eq!(
        (r.operation.as_str(), r.key_version, r.outcome.as_str()),
        ("DisableKeyVersion", Some(1), "OK")
    );
    let e = decrypt(&kms, &v1_ct).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("version 1") && e.to_string().contains("disabled"), "{e}");
    kms.enable_key_version(&caller(), &key, 1).await.unwrap();
    assert_eq!(decrypt(&kms, &v1_ct).await.unwrap(), b"data");

    // Schedule destruction (default 30 days; bad windows refused), restore inside the window.
    let e = kms.schedule_key_version_destruction(&caller(), &key, 1, Some(400)).await.unwrap_err();
    assert!(e.to_string().starts_with("pending_window_days"));
    let KeyView { meta: m, .. } =
        kms.schedule_key_version_destruction(&caller(), &key, 1, None).await.unwrap();
    let v = m.version(1).unwrap();
    assert_eq!(v.state, VersionState::ScheduledForDestruction);
    assert_eq!(v.destroy_ms, Some(1_000_000 + 30 * DAY));
    assert_eq!(decrypt(&kms, &v1_ct).await.unwrap_err().kind(), ErrorKind::FailedPrecondition);
    clock.advance_ms(29 * DAY);
    assert_eq!(kms.run_due().await.unwrap(), 0, "not yet");
    let KeyView { meta: m, .. } = kms.restore_key_version(&caller(), &key, 1).await.unwrap();
    assert_eq!(m.version(1).unwrap().state, VersionState::Disabled, "restored versions come back disabled");
    kms.enable_key_version(&caller(), &key, 1).await.unwrap();
    assert_eq!(decrypt(&kms, &v1_ct).await.unwrap(), b"data");

    // Schedule again with a 1-day window, and let it pass across a restart.
    kms.schedule_key_version_destruction(&caller(), &key, 1, Some(1)).await.unwrap();
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop(kms);
    clock.advance_ms(2 * DAY);
    let kms = open(&store, &clock);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let r = last_record(&store).await;
    assert_eq!(
        (r.operation.as_str(), r.principal.as_str(), r.key_version),
        ("DestroyKeyVersion", "system", Some(1))
    );
    let stored = store.load_keys().unwrap().remove(0);
    assert!(!stored.wrapped.contains_key(&1), "the material is erased from the store");
    assert!(stored.wrapped.contains_key(&2));
    assert_eq!(stored.meta.version(1).unwrap().state, VersionState::Destroyed, "metadata stays");
    let e = decrypt(&kms, &v1_ct).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "says destroyed, not not-found: {e}");
    let e = kms.restore_key_version(&caller(), &key, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    // The key itself still works on its primary version.
    let ct = encrypt(&kms, &key).await;
    assert_eq!(decrypt(&kms, &ct).await.unwrap(), b"data");
    assert!(keyward_core::verify_chain(&*store).unwrap().intact());
}

#[tokio::test]
async fn key_deletion_schedule_cancel_and_destroy() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(5_000_000);
    let kms = open(&store, &clock);
    let KeyView { meta, .. } = kms
        .create_key(
            &caller(),
            keyward_core::CreateKeyInput { alias: Some("alias/doomed".into()), ..Default::default() },
        )
        .await
        .unwrap();
    let key = meta.id.to_string();
    let ct = encrypt(&kms, &key).await;

    for bad in [6, 31] {
        let e = kms.schedule_key_deletion(&caller(), &key, Some(bad)).await.unwrap_err();
        assert!(e.to_string().starts_with("pending_window_days"), "{e}");
    }
    let KeyView { meta: m, .. } = kms.schedule_key_deletion(&caller(), &key, Some(7)).await.unwrap();
    assert_eq!(m.state, KeyState::PendingDeletion);
    assert_eq!(m.deletion_ms, Some(5_000_000 + 7 * DAY));
    // Unusable at once.
    assert_eq!(decrypt(&kms, &ct).await.unwrap_err().kind(), ErrorKind::FailedPrecondition);
    let e = kms
        .encrypt(&caller(), "alias/doomed", Plaintext::new(b"x".to_vec()), HashMap::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pending deletion"));
    assert_eq!(kms.enable_key(&caller(), &key).await.unwrap_err().kind(), ErrorKind::FailedPrecondition);

    // Cancel: back, disabled; enable: usable.
    let KeyView { meta: m, .. } = kms.cancel_key_deletion(&caller(), &key).await.unwrap();
    assert_eq!((m.state, m.deletion_ms), (KeyState::Disabled, None));
    kms.enable_key(&caller(), &key).await.unwrap();
    assert_eq!(decrypt(&kms, &ct).await.unwrap(), b"data");
    assert_eq!(
        kms.cancel_key_deletion(&caller(), &key).await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    // Schedule again; the window passes while the server is down.
    kms.schedule_key_deletion(&caller(), &key, None).await.unwrap();
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop(kms);
    clock.advance_ms(30 * DAY);
    let kms = open(&store, &clock);
    assert_eq!(kms.run_due().await.unwrap(), 1);
    let r = last_record(&store).await;
    assert_eq!((r.operation.as_str(), r.principal.as_str()), ("DestroyKey", "system"));
    assert_eq!(r.edge.as_deref(), Some("system"), "scheduled work names no edge of its own");
    let stored = store.load_keys().unwrap().remove(0);
    assert!(stored.wrapped.is_empty(), "every version's material is erased");
    assert_eq!(stored.meta.state, KeyState::Destroyed);
    let KeyView { meta: m, .. } = kms.describe_key(&caller(), &key).await.unwrap();
    assert_eq!(m.state, KeyState::Destroyed, "the id stays, never reused");
    let e = decrypt(&kms, &ct).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "{e}");
    assert_eq!(
        kms.cancel_key_deletion(&caller(), &key).await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(kms.run_due().await.unwrap(), 0, "nothing left to do");
    assert!(keyward_core::verify_chain(&*store).unwrap().intact());
}

#[tokio::test]
async fn generate_random_bounds() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = open(&store, &ManualClock::at(0));
    assert_eq!(kms.generate_random(&caller(), 1024).await.unwrap().len(), 1024);
    let a = kms.generate_random(&caller(), 32).await.unwrap();
    let b = kms.generate_random(&caller(), 32).await.unwrap();
    assert_ne!(a.expose_secret(), b.expose_secret());
    for bad in [0, 1025] {
        let e = kms.generate_random(&caller(), bad).await.unwrap_err();
        assert!(e.to_string().starts_with("number_of_bytes"));
    }
    let r = last_record(&store).await;
    assert_eq!((r.operation.as_str(), r.outcome.as_str()), ("GenerateRandom", "INVALID_ARGUMENT"));
}
