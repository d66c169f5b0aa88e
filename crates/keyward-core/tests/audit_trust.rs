//! The audit log's trust: signed checkpoints under load (ManualClock), the
//! frozen bytes they sign, the verifier's index and head checks, and honest
//! replies when the audit writer is slow (bounded queue, cancel or "unknown").

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{caller, open, open_with};
use keyward_core::testing::{FaultyStore, ManualClock, MemoryStore};
use keyward_core::{
    checkpoint_signed_bytes, record_hash, AuditError, AuditLogConfig, AuditQuery, Caller, IndexEntry,
    KeyState, Kms, KmsConfig, KmsError, NodeId, OpenError, Store,
};
use keyward_crypto::Plaintext;

fn caller_id(id: &str) -> Caller {
    Caller { request_id: id.into(), ..caller() }
}

async fn encrypt(kms: &Kms, key: &str, id: &str) -> Result<(), KmsError> {
    kms.encrypt(&caller_id(id), key, Plaintext::new(b"x".to_vec()), HashMap::new()).await.map(drop)
}

/// The signed bytes of a checkpoint, frozen: changing them would make every
/// stored checkpoint (and every export) fail to verify.
#[test]
fn checkpoint_signed_bytes_golden_vector() {
    let node = NodeId::parse_str("6f1c1a9e-3b7d-4c2a-9e5f-0a1b2c3d4e5f").unwrap();
    let bytes = checkpoint_signed_bytes(1041, &"ab".repeat(32), 1_764_633_600_000, &node).unwrap();
    assert_eq!(
        hex::encode(&bytes),
        "6b6579776172642d61756469742d636865636b706f696e742d7631\
         00\
         0000000000000411\
         abababababababababababababababababababababababababababababababab\
         0000019adc5be000\
         6f1c1a9e3b7d4c2a9e5f0a1b2c3d4e5f"
    );
    assert!(checkpoint_signed_bytes(1, "not hex", 0, &node).is_none());
    assert!(checkpoint_signed_bytes(1, "abab", 0, &node).is_none(), "a hash must be 32 bytes");
}

#[tokio::test]
async fn checkpoints_are_signed_each_second_under_load_and_at_stop() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_764_633_600_000);
    let kms = open(&store, &clock);
    let (_, public) = kms.audit_identity();
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    // The first batch ever is signed at once.
    assert_eq!(store.last_checkpoint().unwrap().unwrap().seq, 1);
    encrypt(&kms, &key, "r2").await.unwrap();
    clock.advance_ms(999);
    encrypt(&kms, &key, "r3").await.unwrap();
    assert_eq!(store.last_checkpoint().unwrap().unwrap().seq, 1, "less than a second since the last one");
    clock.advance_ms(1);
    encrypt(&kms, &key, "r4").await.unwrap();
    let c = store.last_checkpoint().unwrap().unwrap();
    assert_eq!((c.seq, c.time_ms), (4, 1_764_633_601_000));
    assert!(c.verify(&public));
    let page =
        store.query_audit(&AuditQuery { limit: 10, oldest_first: true, ..Default::default() }).unwrap();
    assert_eq!(c.record_hash, record_hash(&page.records[3].bytes));
    assert_eq!(c.node_id, kms.audit_identity().0);
    // Idle: nothing new, no checkpoint however far the clock moves.
    clock.advance_ms(60_000);
    assert_eq!(store.last_checkpoint().unwrap().unwrap().seq, 4);
    encrypt(&kms, &key, "r5").await.unwrap();
    encrypt(&kms, &key, "r6").await.unwrap();
    assert_eq!(store.last_checkpoint().unwrap().unwrap().seq, 5);
    // A clean stop signs the tail.
    kms.audit_log().stop(Duration::from_secs(5));
    assert_eq!(store.last_checkpoint().unwrap().unwrap().seq, 6);
    let r = keyward_core::verify_log(&*store, Some(&public)).unwrap();
    assert!(r.intact(), "{r:?}");
    assert_eq!((r.checkpoints_checked, r.last_checkpoint_seq), (4, Some(6)));
    // Another key does not verify them.
    let other = keyward_crypto::AuditSigningKey::generate().unwrap().public_key();
    let r = keyward_core::verify_log(&*store, Some(&other)).unwrap();
    assert_eq!(r.first_bad_seq, Some(1), "{r:?}");
    assert!(r.problem.unwrap().contains("bad signature"));
}

#[tokio::test]
async fn the_signing_key_survives_a_restart_and_needs_the_root_key() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(0);
    let kms = open(&store, &clock);
    let first = kms.audit_identity();
    kms.audit_log().stop(Duration::from_secs(5));
    drop(kms);
    let kms = open(&store, &clock);
    assert_eq!(kms.audit_identity(), first);
    kms.audit_log().stop(Duration::from_secs(5));
    drop(kms);
    // The root check passes for an empty store, so only the signer refuses.
    let mut signer = store.audit_signer().unwrap().unwrap();
    signer.node_id = NodeId::new_v4();
    store.set_audit_signer(&signer).unwrap();
    let err = Kms::open(
        store.clone(),
        keyward_crypto::RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(clock),
        KmsConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::AuditKey(_)), "{err}");
}

#[tokio::test]
async fn a_deleted_index_entry_is_reported() {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let kms = open(&store, &ManualClock::at(0));
    let id = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id;
    encrypt(&kms, &id.to_string(), "r2").await.unwrap();
    encrypt(&kms, &id.to_string(), "r3").await.unwrap();
    assert!(keyward_core::verify_chain(&*store).unwrap().intact());
    mem.tamper_remove_index(&IndexEntry::Key(id, 2));
    let r = keyward_core::verify_chain(&*store).unwrap();
    assert_eq!(r.first_bad_seq, Some(2), "{r:?}");
    assert!(r.problem.as_deref().unwrap().contains("key index"), "{r:?}");
    mem.tamper_remove_index(&IndexEntry::Principal("admin".into(), 3));
    assert_eq!(keyward_core::verify_chain(&*store).unwrap().first_bad_seq, Some(2));
}

#[tokio::test]
async fn a_missing_chain_head_refuses_to_open() {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let clock = ManualClock::at(0);
    let kms = open(&store, &clock);
    kms.create_key(&caller(), Default::default()).await.unwrap();
    kms.audit_log().stop(Duration::from_secs(5));
    drop(kms);
    mem.tamper_remove_head();
    let err = Kms::open(
        store.clone(),
        keyward_crypto::RootKey::from_bytes(&[9; 32]).unwrap(),
        Arc::new(clock),
        KmsConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::AuditHead(_)), "{err}");
    assert!(
        err.to_string().contains("records up to 1") && err.to_string().contains("head is missing"),
        "{err}"
    );
}

/// A writer stuck in a slow write: the request it took is answered "outcome
/// unknown" naming its request id (and is written later); a change still
/// queued when its caller gives up is cancelled (never applied); a full queue
/// refuses at once, naming its limit.
#[tokio::test]
async fn a_slow_audit_write_gets_honest_answers() {
    let (faulty, faults) = FaultyStore::new(Arc::new(MemoryStore::new()));
    let store: Arc<dyn Store> = Arc::new(faulty);
    let config = KmsConfig {
        audit: AuditLogConfig { deadline: Duration::from_millis(300), queue_limit: 2, ..Default::default() },
        ..Default::default()
    };
    let kms = open_with(&store, &ManualClock::at(0), config);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    faults.stall_ms.store(4000, std::sync::atomic::Ordering::SeqCst);

    // Taken by the writer, then stuck: outcome unknown, with the request id.
    let err = encrypt(&kms, &key, "req-taken").await.unwrap_err();
    assert!(
        matches!(&err, KmsError::AuditUnavailable(AuditError::OutcomeUnknown { request_id, .. }) if request_id == "req-taken"),
        "{err:?}"
    );
    let msg = err.public_message();
    assert!(msg.contains("outcome is unknown") && msg.contains("req-taken"), "{msg}");

    // The writer is inside that write now: two more fill the queue, a third is refused at once.
    let cancelled = caller_id("req-cancelled");
    let disable = kms.disable_key(&cancelled, &key);
    let queued = encrypt(&kms, &key, "req-queued");
    let full = encrypt(&kms, &key, "req-full");
    // join3 polls them in this order, so each reaches the queue before the next.
    let (disable, queued, full) = futures_util::future::join3(disable, queued, full).await;
    let full = full.unwrap_err();
    assert!(matches!(full, KmsError::AuditUnavailable(AuditError::QueueFull(2))), "{full:?}");
    assert!(full.public_message().contains("2 records waiting"), "{}", full.public_message());
    for e in [disable.map(drop).unwrap_err(), queued.unwrap_err()] {
        assert!(matches!(e, KmsError::AuditUnavailable(AuditError::Timeout(_))), "{e:?}");
        assert!(e.public_message().contains("cancelled and nothing was done"), "{}", e.public_message());
    }

    // Once the write finishes: the taken record is there, the cancelled change never happened.
    faults.stall_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let mut recovered = false;
    for i in 0..100 {
        if encrypt(&kms, &key, &format!("after-{i}")).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the writer came back");
    let ids: Vec<String> = store
        .query_audit(&AuditQuery { limit: 1000, oldest_first: true, ..Default::default() })
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.record.request_id)
        .collect();
    assert!(ids.contains(&"req-taken".to_string()), "{ids:?}");
    for never in ["req-cancelled", "req-queued", "req-full"] {
        assert!(!ids.contains(&never.to_string()), "{never} was written: {ids:?}");
    }
    let (_, state, _) = kms.peek_key(&key).unwrap();
    assert_eq!(state, KeyState::Enabled, "the cancelled DisableKey was not applied");
    assert!(keyward_core::verify_chain(&*store).unwrap().intact());
}

/// `ExportAuditLog` pages through every record with its stored bytes and the
/// checkpoints among them; what it returns verifies offline (the chain and
/// every signature), and only auditors may call it.
#[tokio::test]
async fn the_export_pages_through_records_and_checkpoints_for_auditors_only() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_764_633_600_000);
    let kms = open(&store, &clock);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    for i in 0..9 {
        clock.advance_ms(600);
        encrypt(&kms, &key, &format!("e{i}")).await.unwrap();
    }
    let (mut after, mut records, mut checkpoints) = (0, Vec::new(), Vec::new());
    let mut pages = 0;
    loop {
        let page = kms.export_audit(&caller(), after, Some(3)).await.unwrap();
        assert!(page.records.len() <= 3);
        let last = page.records.last().map(|r| r.0).unwrap_or(after);
        assert!(page.checkpoints.iter().all(|c| c.seq > after && c.seq <= last), "checkpoints of this page");
        records.extend(page.records);
        checkpoints.extend(page.checkpoints);
        pages += 1;
        match page.next_after {
            Some(n) => after = n,
            None => break,
        }
    }
    assert!(pages >= 4, "{pages} pages");
    // Consecutive, from 1, each chained to the one before.
    let mut prev = keyward_core::GENESIS_HASH.to_string();
    for (i, (seq, bytes)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        let r = store.decode_audit(bytes).unwrap();
        assert_eq!(r.prev_hash, prev);
        prev = record_hash(bytes);
    }
    let (_, public) = kms.audit_identity();
    assert!(checkpoints.len() >= 4, "{} checkpoints", checkpoints.len());
    for c in &checkpoints {
        assert!(c.verify(&public), "checkpoint {} verifies", c.seq);
        assert_eq!(c.record_hash, record_hash(&records[c.seq as usize - 1].1));
    }
    let e = kms.export_audit(&caller(), 0, Some(10_001)).await.unwrap_err();
    assert!(e.to_string().contains("page_size"), "{e}");
    let user =
        Caller { principal: "app".into(), policy: Arc::new(keyward_core::Policy::default()), ..caller() };
    let e = kms.export_audit(&user, 0, None).await.unwrap_err();
    assert_eq!(e.kind(), keyward_core::ErrorKind::PermissionDenied);
}

/// A writer stuck in a slow write does not stop within a short limit:
/// `stop` says so (nothing else may write the chain yet), and
/// `wait_exited` returns once the write ends and the thread is gone.
#[tokio::test]
async fn a_stuck_writer_is_reported_until_it_has_ended() {
    let (faulty, faults) = FaultyStore::new(Arc::new(MemoryStore::new()));
    let store: Arc<dyn Store> = Arc::new(faulty);
    let config = KmsConfig {
        audit: AuditLogConfig { deadline: Duration::from_millis(200), ..Default::default() },
        ..Default::default()
    };
    let kms = open_with(&store, &ManualClock::at(0), config);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    faults.stall_ms.store(1500, std::sync::atomic::Ordering::SeqCst);
    // Taken by the writer, then stuck in its write.
    assert!(encrypt(&kms, &key, "req-stuck").await.is_err());
    let log = kms.audit_log().clone();
    let stopped = tokio::task::spawn_blocking(move || log.stop(Duration::from_millis(100))).await.unwrap();
    assert!(!stopped, "the writer is still inside its write");
    assert!(!kms.audit_log().wait_exited(Some(Duration::ZERO)));
    faults.stall_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let log = kms.audit_log().clone();
    let ended =
        tokio::task::spawn_blocking(move || log.wait_exited(Some(Duration::from_secs(20)))).await.unwrap();
    assert!(ended, "the writer ends once its write returns");
    // Stopping again is immediate and says it has ended.
    assert!(kms.audit_log().stop(Duration::from_millis(10)));
}
