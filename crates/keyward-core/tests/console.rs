//! The use cases behind the web console, over the in-memory store with the
//! clock moved by the test: GetKeyUsage (per version and bucket, from the
//! hourly counts, rotations included), SummarizeAuditLog (by outcome, from
//! the hourly counts or from the records), the filtered ListKeys, sign-in
//! and sign-out records; who may call them, and bad input named.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{caller, open};
use keyward_core::testing::{ManualClock, MemoryStore};
use keyward_core::{AuditQueryInput, Bucket, Caller, ErrorKind, KeyFilter, KeyState, Policy, Role, Store};
use keyward_crypto::Plaintext;

const HOUR: i64 = 3_600_000;

fn with_roles(roles: &[Role], name: &str) -> Caller {
    Caller {
        principal: name.into(),
        policy: Arc::new(Policy::new(roles.iter().copied().collect(), Vec::new())),
        ..caller()
    }
}

#[tokio::test]
async fn usage_is_counted_per_version_and_bucket_and_only_readers_see_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let start = 500_000 * HOUR;
    let clock = ManualClock::at(start + 10);
    let kms = open(&store, &clock);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    for _ in 0..3 {
        kms.encrypt(&caller(), &key, Plaintext::new(vec![1]), HashMap::new()).await.unwrap();
    }
    clock.advance_ms(2 * HOUR);
    kms.rotate_key(&caller(), &key).await.unwrap();
    let ct = kms.encrypt(&caller(), &key, Plaintext::new(vec![2]), HashMap::new()).await.unwrap().ciphertext;
    kms.decrypt(&caller(), &ct, HashMap::new(), None).await.unwrap();
    // A refused use is not a use.
    let stranger = with_roles(&[Role::User], "app");
    assert!(kms.encrypt(&stranger, &key, Plaintext::new(vec![3]), HashMap::new()).await.is_err());

    let u = kms.key_usage(&caller(), &key, start, start + 4 * HOUR, Bucket::Hour).await.unwrap();
    assert_eq!(u.buckets, (0..4).map(|i| start + i * HOUR).collect::<Vec<_>>());
    assert_eq!(u.series.len(), 2);
    assert_eq!(u.series[0], (1, vec![[3, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]));
    assert_eq!(u.series[1], (2, vec![[0, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0]]));
    assert_eq!(u.key.meta.versions[1].created_ms, start + 2 * HOUR + 10, "the rotation, for the plot");
    // Daily buckets cover whole UTC days around the range.
    let d = kms.key_usage(&caller(), &key, start + 1, start + 2, Bucket::Day).await.unwrap();
    assert_eq!(d.buckets.len(), 1);
    assert_eq!(d.series.iter().map(|(_, s)| s[0][0]).sum::<u64>(), 4);

    let auditor = with_roles(&[Role::Auditor], "reviewer");
    assert!(kms.key_usage(&auditor, &key, start, start + HOUR, Bucket::Hour).await.is_ok());
    let user = with_roles(&[Role::User], "app");
    let e = kms.key_usage(&user, &key, start, start + HOUR, Bucket::Hour).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    for (from, to, field) in [(start, start, "start_time"), (start, start + 3000 * HOUR, "end_time")] {
        let e = kms.key_usage(&caller(), &key, from, to, Bucket::Hour).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.public_message().contains(field), "{}", e.public_message());
    }
    let e = kms.key_usage(&caller(), "alias/none", start, start + HOUR, Bucket::Hour).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn the_audit_summary_counts_every_matching_record_by_outcome() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let start = 500_000 * HOUR;
    let clock = ManualClock::at(start);
    let kms = open(&store, &clock);
    let key = kms.create_key(&caller(), Default::default()).await.unwrap().meta.id.to_string();
    let user = with_roles(&[Role::User], "app");
    for _ in 0..4 {
        kms.encrypt(&caller(), &key, Plaintext::new(vec![1]), HashMap::new()).await.unwrap();
    }
    for _ in 0..2 {
        assert!(kms.encrypt(&user, &key, Plaintext::new(vec![1]), HashMap::new()).await.is_err());
    }
    clock.advance_ms(HOUR);
    let auditor = with_roles(&[Role::Auditor], "reviewer");
    let range = |extra: AuditQueryInput| AuditQueryInput {
        start_ms: Some(start),
        end_ms: Some(start + HOUR),
        ..extra
    };
    let enc =
        AuditQueryInput { key: Some(key.clone()), operation: Some("Encrypt".into()), ..Default::default() };
    let s = kms.summarize_audit(&auditor, range(enc)).await.unwrap();
    assert!(s.from_hourly_counts);
    assert_eq!(s.outcomes, [("OK".into(), 4), ("PERMISSION_DENIED".into(), 2)].into());
    let s = kms
        .summarize_audit(
            &auditor,
            range(AuditQueryInput { principal: Some("app".into()), ..Default::default() }),
        )
        .await
        .unwrap();
    assert!(s.from_hourly_counts);
    assert_eq!(s.outcomes, [("PERMISSION_DENIED".into(), 2)].into());
    // A key and a principal together read the records themselves.
    let both =
        AuditQueryInput { key: Some(key.clone()), principal: Some("admin".into()), ..Default::default() };
    let s = kms.summarize_audit(&auditor, range(both)).await.unwrap();
    assert!(!s.from_hourly_counts && !s.truncated);
    assert_eq!(s.outcomes.get("OK"), Some(&5), "CreateKey and four encryptions: {:?}", s.outcomes);
    assert_eq!(s.records_read, 5);
    let e = kms.summarize_audit(&user, range(Default::default())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = kms
        .summarize_audit(
            &auditor,
            AuditQueryInput { start_ms: Some(start + HOUR), end_ms: Some(start), ..Default::default() },
        )
        .await
        .unwrap_err();
    assert!(e.public_message().contains("start_time"), "{}", e.public_message());
}

#[tokio::test]
async fn the_inventory_filters_by_state_label_and_text_and_auditors_read_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_000_000);
    let kms = open(&store, &clock);
    let mut ids = Vec::new();
    for (alias, team) in [("alias/pay-a", "pay"), ("alias/pay-b", "ops"), ("alias/web", "pay")] {
        let input = keyward_core::CreateKeyInput {
            alias: Some(alias.into()),
            labels: [("team".to_string(), team.to_string())].into(),
            ..Default::default()
        };
        ids.push(kms.create_key(&caller(), input).await.unwrap().meta.id);
    }
    kms.disable_key(&caller(), &ids[2].to_string()).await.unwrap();
    let auditor = with_roles(&[Role::Auditor], "reviewer");
    let list = |f: KeyFilter| {
        let kms = &kms;
        let auditor = auditor.clone();
        async move { kms.list_keys_where(&auditor, &f, None, None).await.unwrap().keys.len() }
    };
    assert_eq!(list(KeyFilter::default()).await, 3);
    assert_eq!(list(KeyFilter { text: Some("PAY".into()), ..Default::default() }).await, 2);
    assert_eq!(
        list(KeyFilter { label: Some(("team".into(), Some("pay".into()))), ..Default::default() }).await,
        2
    );
    assert_eq!(list(KeyFilter { label: Some(("team".into(), None)), ..Default::default() }).await, 3);
    assert_eq!(list(KeyFilter { state: Some(KeyState::Disabled), ..Default::default() }).await, 1);
    let both = KeyFilter {
        state: Some(KeyState::Enabled),
        label: Some(("team".into(), Some("pay".into()))),
        text: None,
    };
    assert_eq!(list(both).await, 1);
    // Paged over the matches.
    let f = KeyFilter { text: Some("pay".into()), ..Default::default() };
    let page = kms.list_keys_where(&auditor, &f, Some(1), None).await.unwrap();
    let next = kms.list_keys_where(&auditor, &f, Some(1), page.next_page_token.as_deref()).await.unwrap();
    assert_eq!((page.keys.len(), next.keys.len(), next.next_page_token), (1, 1, None));
    let e = kms.list_keys_where(&with_roles(&[Role::User], "app"), &f, None, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(kms.describe_key(&auditor, &ids[0].to_string()).await.is_ok());
    assert!(kms.list_key_versions(&auditor, &ids[0].to_string()).await.is_ok());
}

#[tokio::test]
async fn sign_in_and_sign_out_are_recorded_without_the_credential() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at(1_000_000);
    let kms = open(&store, &clock);
    let who = Caller { edge: keyward_core::Edge::Console, ..with_roles(&[Role::Auditor], "reviewer") };
    kms.console_sign_in(&who, "token").await.unwrap();
    kms.console_sign_out(&who).await.unwrap();
    let page = store
        .query_audit(&keyward_core::AuditQuery { limit: 10, oldest_first: true, ..Default::default() })
        .unwrap();
    let ops: Vec<(&str, &str, Option<&str>)> = page
        .records
        .iter()
        .map(|r| {
            (r.record.operation.as_str(), r.record.edge.as_deref().unwrap_or(""), r.record.target.as_deref())
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("SignIn", "console", Some("console session (token)")),
            ("SignOut", "console", Some("console session"))
        ]
    );
    assert!(page.records.iter().all(|r| r.record.principal == "reviewer" && r.record.outcome == "OK"));
}
