//! Key metadata is authenticated: a record or alias changed by someone who
//! can write the store but does not hold the root key refuses to load, with
//! an error naming it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{caller, open};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{CreateKeyInput, KeyState, Kms, KmsConfig, Store, VersionState};
use keyward_crypto::RootKey;

async fn store_with_key() -> (Arc<MemoryStore>, keyward_core::KeyId) {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let kms = open(&store, &ManualClock::at(1_000));
    let input = CreateKeyInput {
        alias: Some("alias/payments".into()),
        labels: BTreeMap::from([("team".into(), "payments".into())]),
        ..Default::default()
    };
    let view = kms.create_key(&caller(), input).await.unwrap();
    kms.rotate_key(&caller(), "alias/payments").await.unwrap();
    kms.mark_key_version_compromised(&caller(), "alias/payments", 1).await.unwrap();
    kms.disable_key(&caller(), "alias/payments").await.unwrap();
    drop(kms);
    (mem, view.meta.id)
}

fn reopen(store: &Arc<MemoryStore>) -> Result<Kms, String> {
    let store: Arc<dyn Store> = store.clone();
    Kms::open(
        store,
        RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(ManualClock::at(2_000)),
        KmsConfig::default(),
    )
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn untouched_records_load() {
    let (store, id) = store_with_key().await;
    let kms = reopen(&store).unwrap();
    let view = kms.describe_key(&caller(), &id.to_string()).await.unwrap();
    assert_eq!(view.meta.state, KeyState::Disabled);
    assert_eq!(view.aliases, ["alias/payments"]);
}

#[tokio::test]
async fn every_edit_that_drives_authorization_is_refused_naming_the_key() {
    type Edit = fn(&mut keyward_core::KeyRecord);
    let edits: [(&str, Edit); 6] = [
        ("label", |r| drop(r.meta.labels.insert("team".into(), "attacker".into()))),
        ("state", |r| r.meta.state = KeyState::Enabled),
        ("compromised flag", |r| r.meta.versions[0].compromised = false),
        ("version state", |r| r.meta.versions[1].state = VersionState::Disabled),
        ("primary version", |r| r.meta.primary_version = 1),
        ("tag removed", |r| r.tag = None),
    ];
    for (what, edit) in edits {
        let (store, id) = store_with_key().await;
        store.tamper_key(id, edit);
        let e = reopen(&store).err().unwrap_or_else(|| panic!("{what}: edited record loaded"));
        assert!(e.contains(&format!("key record {id}")) && e.contains("integrity"), "{what}: {e}");
    }
}

#[tokio::test]
async fn a_record_moved_to_another_key_is_refused() {
    let (store, id) = store_with_key().await;
    // Same bytes and tag, other id: the tag binds the id.
    store.tamper_key(id, |r| r.meta.id = keyward_core::KeyId::generate());
    assert!(reopen(&store).err().unwrap().contains("integrity"));
}

#[tokio::test]
async fn an_alias_pointed_at_another_key_is_refused_naming_it() {
    let (store, _) = store_with_key().await;
    let other = {
        let s: Arc<dyn Store> = store.clone();
        let kms = open(&s, &ManualClock::at(3_000));
        kms.create_key(&caller(), Default::default()).await.unwrap().meta.id
    };
    store.tamper_alias("alias/payments", |a| a.key = other);
    let e = reopen(&store).err().unwrap();
    assert!(e.contains("alias \"alias/payments\"") && e.contains("integrity"), "{e}");
}

#[tokio::test]
async fn a_record_tagged_under_another_root_key_is_refused() {
    let (store, id) = store_with_key().await;
    let other = keyward_crypto::RecordKey::derive(&RootKey::from_bytes(&[3; 32]).unwrap());
    // A validly shaped tag from the wrong key (what a forger without the
    // root key could produce at best).
    store.tamper_key(id, |r| r.tag = Some(other.tag(b"keyward key record v1", b"")));
    assert!(reopen(&store).err().unwrap().contains(&format!("key record {id}")));
}
