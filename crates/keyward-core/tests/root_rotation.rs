//! Root-key rotation over the in-memory store: everything the root key
//! protects is rewritten under the new one with its audit record; the old
//! key no longer opens the store, every ciphertext made before decrypts,
//! access keys and the audit chain survive, and the retired service refuses
//! changes until it is reopened.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{caller, open};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{CreateKeyInput, Kms, KmsConfig, KmsError, Store};
use keyward_crypto::{Plaintext, RootKey};

fn reopen(store: &Arc<dyn Store>, root: [u8; 32]) -> Result<Kms, String> {
    Kms::open(
        store.clone(),
        RootKey::from_bytes(&root).unwrap(),
        Arc::new(ManualClock::at(9_000)),
        KmsConfig::default(),
    )
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn rotation_rewraps_everything_and_retires_the_old_key() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = open(&store, &ManualClock::at(1_000));
    let mut made = Vec::new();
    for k in 0..3 {
        let alias = format!("alias/k{k}");
        kms.create_key(&caller(), CreateKeyInput { alias: Some(alias.clone()), ..Default::default() })
            .await
            .unwrap();
        for v in 0..2 {
            let text = format!("text {k}-{v}");
            let ct = kms
                .encrypt(&caller(), &alias, Plaintext::new(text.clone().into_bytes()), HashMap::new())
                .await
                .unwrap()
                .ciphertext;
            made.push((ct, text));
            kms.rotate_key(&caller(), &alias).await.unwrap();
        }
    }
    kms.create_principal(&caller(), "svc", &["user".to_string()]).await.unwrap();
    let ak = kms.create_access_key(&caller(), "svc").await.unwrap();

    // Not for a non-admin; not to the same key.
    let mut user = caller();
    user.policy = Arc::new(keyward_core::Policy::default());
    user.principal = "nobody".into();
    let e = kms.rotate_root_key(&user, RootKey::from_bytes(&[7; 32]).unwrap()).await.unwrap_err();
    assert!(matches!(e, KmsError::PermissionDenied(_)), "{e}");
    let e = kms.rotate_root_key(&caller(), RootKey::from_bytes(&[9; 32]).unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("current one"), "{e}");

    let done = kms.rotate_root_key(&caller(), RootKey::from_bytes(&[7; 32]).unwrap()).await.unwrap();
    assert_eq!((done.keys, done.versions, done.aliases), (3, 9, 3));
    assert!(done.access >= 2, "{done:?}");
    // Retired: crypto still answers from memory, changes are refused.
    assert!(kms.is_retired());
    assert_eq!(
        kms.decrypt(&caller(), &made[0].0, HashMap::new(), None).await.unwrap().plaintext.expose_secret(),
        made[0].1.as_bytes()
    );
    let e = kms.rotate_key(&caller(), "alias/k0").await.unwrap_err();
    assert!(matches!(e, KmsError::Sealed(_)) && e.to_string().contains("rotated"), "{e}");
    assert!(kms.create_principal(&caller(), "other", &["user".to_string()]).await.is_err());
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop(kms);

    // The old key no longer opens the store; the new one does, with everything.
    let e = reopen(&store, [9; 32]).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    let kms = reopen(&store, [7; 32]).unwrap();
    for (ct, text) in &made {
        let out = kms.decrypt(&caller(), ct, HashMap::new(), None).await.unwrap();
        assert_eq!(out.plaintext.expose_secret(), text.as_bytes());
    }
    let id = kms.identify_access_key(&ak.view.id).map_err(|_| "access key").unwrap();
    assert_eq!(id.principal, "svc");
    assert_eq!(id.secret.as_slice(), ak.secret.as_bytes());
    // New versions are wrapped under the new key.
    kms.rotate_key(&caller(), "alias/k0").await.unwrap();
    let report = kms.verify_audit(&caller()).await.unwrap();
    assert!(report.intact(), "{report:?}");
    let page = kms
        .query_audit(
            &caller(),
            keyward_core::AuditQueryInput { operation: Some("RotateRootKey".into()), ..Default::default() },
        )
        .await
        .unwrap();
    let outcomes: Vec<&str> = page.records.iter().map(|r| r.record.outcome.as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "OK").count(), 1, "{outcomes:?}");
    assert!(page.records.iter().any(|r| r
        .record
        .target
        .as_deref()
        .is_some_and(|t| t.contains("9 version secrets"))));
    kms.audit_log().stop(std::time::Duration::from_secs(5));
    drop(kms);
    reopen(&store, [7; 32]).unwrap();
}
