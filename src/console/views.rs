//! The console's pages and actions: each reads its form, calls the `Kms`
//! use case of the same meaning as the signed-in principal, and renders.

use hyper::body::Bytes;
use keyward_core::{AuditQueryInput, Bucket, KeyFilter, KeyState, Kms, KmsError, Operation, RotationInput};

use super::forms::{self, Form};
use super::{pages, Console, Page, Viewer};

/// Keys per inventory page.
const KEYS_PER_PAGE: u32 = 50;
/// Records per audit page.
const RECORDS_PER_PAGE: u32 = 50;
/// Most records one export holds.
pub(super) const MAX_EXPORT_RECORDS: usize = 100_000;

fn key_filter(q: &Form) -> Result<KeyFilter, KmsError> {
    let state = match q.get("state").map(String::as_str) {
        None => None,
        Some("enabled") => Some(KeyState::Enabled),
        Some("disabled") => Some(KeyState::Disabled),
        Some("pending_deletion") => Some(KeyState::PendingDeletion),
        Some("destroyed") => Some(KeyState::Destroyed),
        Some(_) => {
            return Err(KmsError::invalid("state", "enabled, disabled, pending_deletion or destroyed"))
        }
    };
    let label = q.get("label").map(|l| match l.split_once('=') {
        Some((n, v)) => (n.trim().to_string(), Some(v.trim().to_string())),
        None => (l.trim().to_string(), None),
    });
    Ok(KeyFilter { state, label, text: q.get("q").cloned() })
}

fn audit_input(q: &Form) -> Result<AuditQueryInput, KmsError> {
    let time = |field: &'static str| q.get(field).map(|v| forms::time_ms(field, v)).transpose();
    Ok(AuditQueryInput {
        key: q.get("key").cloned(),
        principal: q.get("principal").cloned(),
        operation: q.get("operation").cloned(),
        outcome: q.get("outcome").cloned(),
        start_ms: time("start")?,
        end_ms: time("end")?,
        page_token: q.get("page_token").cloned(),
        ..Default::default()
    })
}

/// A record as one line of the export: the line format of `keyward audit
/// export` and `audit query --output json` (every field; no secret is in one).
fn record_json(sealed: &keyward_core::SealedRecord) -> serde_json::Value {
    let r = &sealed.record;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.time_ms.max(0) as u64);
    serde_json::json!({
        "sequence": r.seq,
        "time": humantime::format_rfc3339_millis(t).to_string(),
        "request_id": r.request_id,
        "principal": r.principal,
        "peer": r.peer,
        "edge": r.edge.clone().unwrap_or_default(),
        "node_id": r.node_id.clone().unwrap_or_default(),
        "operation": r.operation,
        "key_id": r.key_id.clone().unwrap_or_default(),
        "key_version": r.key_version.unwrap_or(0),
        "alias": r.alias.clone().unwrap_or_default(),
        "source_key_id": r.source_key_id.clone().unwrap_or_default(),
        "source_key_version": r.source_key_version.unwrap_or(0),
        "target": r.target.clone().unwrap_or_default(),
        "encryption_context": r.context,
        "outcome": r.outcome,
        "reason": r.reason,
        "previous_hash": r.prev_hash,
        "hash": sealed.hash(),
    })
}

impl Console {
    pub(super) async fn inventory(&self, kms: &Kms, viewer: &Viewer, q: &Form) -> Page {
        let filter = match key_filter(q) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .error_page(Some(viewer), &kms.refuse(&viewer.caller, Operation::ListKeys, e).await)
            }
        };
        match kms
            .list_keys_where(&viewer.caller, &filter, Some(KEYS_PER_PAGE), q.get("after").map(String::as_str))
            .await
        {
            Ok(page) => {
                Page::html(200, pages::inventory(viewer, &page.keys, q, page.next_page_token.as_deref()))
            }
            Err(e) => self.error_page(Some(viewer), &e),
        }
    }

    pub(super) async fn key_page(&self, kms: &Kms, viewer: &Viewer, key: &str, q: &Form) -> Page {
        let key = percent_decoded(key);
        let versions = match kms.list_key_versions(&viewer.caller, &key).await {
            Ok(v) => v,
            Err(e) => return self.error_page(Some(viewer), &e),
        };
        let view = match kms.describe_key(&viewer.caller, &key).await {
            Ok(v) => v,
            Err(e) => return self.error_page(Some(viewer), &e),
        };
        let range = q.get("range").map(String::as_str).unwrap_or("30d");
        let days = match range {
            "24h" => 1,
            "7d" => 7,
            "90d" => 90,
            _ => 30,
        };
        let range = match days {
            1 => "24h",
            7 => "7d",
            90 => "90d",
            _ => "30d",
        };
        let now = kms.now_ms();
        // A range of one's own (`from`, `until`: UTC dates or times), or the preset one.
        let custom = match (q.get("from"), q.get("until")) {
            (None, None) => Ok(None),
            (from, until) => {
                let from = from.map(|f| forms::time_ms("from", f)).transpose();
                let until = until.map(|u| forms::time_ms("until", u)).transpose();
                match (from, until) {
                    (Ok(f), Ok(u)) => Ok(Some((f.unwrap_or(now - 30 * 86_400_000), u.unwrap_or(now)))),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
        };
        let span_days = match &custom {
            Ok(Some((f, u))) => (u - f) / 86_400_000,
            _ => days,
        };
        let daily = match q.get("bucket").map(String::as_str) {
            Some("day") => true,
            Some("hour") => false,
            _ => span_days > 7,
        };
        let bucket = if daily { Bucket::Day } else { Bucket::Hour };
        let width = bucket.ms();
        let id = view.meta.id.to_string();
        let (usage, usage_error) = match custom {
            Err(e) => {
                let e = kms.refuse_key(&viewer.caller, Operation::GetKeyUsage, &id, e).await;
                (None, Some(e.public_message()))
            }
            Ok(range) => {
                let (start, end) = range.unwrap_or_else(|| {
                    // The last bucket is the current one; the range holds `days` of them before it.
                    let end = now.div_euclid(width) * width + width;
                    (end - days * 86_400_000, end)
                });
                match kms.key_usage(&viewer.caller, &id, start, end, bucket).await {
                    Ok(u) => (Some(u), None),
                    Err(e) => (None, Some(e.public_message())),
                }
            }
        };
        let notice = q.get("done").map(|d| match d.as_str() {
            "rotate" => "Rotated: a new primary version encrypts from now on.",
            "enable" => "Enabled.",
            "disable" => "Disabled: the key refuses every operation until enabled again.",
            "schedule-deletion" => {
                "Deletion scheduled: the key is unusable now and destroyed when the window ends."
            }
            "cancel-deletion" => "Deletion cancelled: the key is disabled; enable it to use it again.",
            "rotation-policy" => "Rotation policy set.",
            "version" => "Version updated.",
            _ => "Done.",
        });
        let page = pages::KeyPage {
            versions: &versions,
            key: &view,
            usage: usage.as_ref(),
            usage_error,
            range,
            daily,
            notice,
            from: q.get("from").map(String::as_str).unwrap_or(""),
            until: q.get("until").map(String::as_str).unwrap_or(""),
        };
        Page::html(200, pages::key_page(viewer, &page))
    }

    pub(super) async fn audit_page(&self, kms: &Kms, viewer: &Viewer, q: &Form) -> Page {
        let input = match audit_input(q) {
            Ok(i) => i,
            Err(e) => {
                let e = kms.refuse(&viewer.caller, Operation::QueryAuditLog, e).await;
                return audit_error(viewer, q, &e);
            }
        };
        let query = AuditQueryInput { page_size: Some(RECORDS_PER_PAGE), ..input.clone() };
        let results = match kms.query_audit(&viewer.caller, query).await {
            Ok(r) => r,
            Err(e) => return audit_error(viewer, q, &e),
        };
        // The breakdown of the whole filtered range (on the first page only).
        let summary = if input.page_token.is_none() {
            kms.summarize_audit(&viewer.caller, AuditQueryInput { page_token: None, ..input }).await.ok()
        } else {
            None
        };
        let page = pages::AuditPage {
            filter: q,
            records: &results.records,
            next: results.next_page_token.as_deref(),
            summary: summary.as_ref(),
            error: None,
            unreachable: &results.unreachable_nodes,
        };
        Page::html(200, pages::audit(viewer, &page))
    }

    pub(super) async fn export(&self, kms: &Kms, viewer: &Viewer, q: &Form) -> Page {
        let mut input = match audit_input(q) {
            Ok(i) => i,
            Err(e) => {
                return self
                    .error_page(Some(viewer), &kms.refuse(&viewer.caller, Operation::QueryAuditLog, e).await)
            }
        };
        input.page_size = Some(1000);
        input.page_token = None;
        let mut out = Vec::new();
        let mut n = 0usize;
        let mut truncated = false;
        loop {
            let page = match kms.query_audit(&viewer.caller, input.clone()).await {
                Ok(p) => p,
                Err(e) => return self.error_page(Some(viewer), &e),
            };
            for r in &page.records {
                serde_json::to_writer(&mut out, &record_json(r)).expect("JSON to memory");
                out.push(b'\n');
                n += 1;
            }
            match page.next_page_token {
                Some(t) if n < MAX_EXPORT_RECORDS => input.page_token = Some(t),
                Some(_) => {
                    truncated = true;
                    break;
                }
                None => break,
            }
        }
        Page {
            status: 200,
            content_type: "application/x-ndjson",
            body: Bytes::from(out),
            headers: vec![
                ("content-disposition", "attachment; filename=\"keyward-audit.jsonl\"".into()),
                ("x-keyward-records", n.to_string()),
                ("x-keyward-truncated", truncated.to_string()),
            ],
        }
    }

    pub(super) async fn verify_page(&self, kms: &Kms, viewer: &Viewer) -> Page {
        let report = match kms.verify_audit(&viewer.caller).await {
            Ok(r) => r,
            Err(e) => return self.error_page(Some(viewer), &e),
        };
        let evidence = kms.audit_evidence(&viewer.caller).await.ok().map(|(node, key, newest)| {
            use keyward_store::format::export::{public_key_fingerprint, public_key_pem};
            pages::Evidence {
                node_id: node.to_string(),
                public_key_pem: public_key_pem(&key),
                fingerprint: public_key_fingerprint(&key),
                newest,
            }
        });
        Page::html(200, pages::verify(viewer, &report, evidence.as_ref()))
    }

    /// An admin action: the use case of the same meaning, then back to the key.
    pub(super) async fn action(
        &self,
        kms: &Kms,
        viewer: &Viewer,
        key: &str,
        action: &[&str],
        form: &Form,
    ) -> Page {
        let key = percent_decoded(key);
        let key = key.as_str();
        let c = &viewer.caller;
        let confirmed = |op: Operation| async move {
            // The typed confirmation: the key's id or one of its aliases.
            let typed = form.get("confirm").map(String::as_str).unwrap_or("");
            let ok = match kms.describe_key(c, key).await {
                Ok(v) => v.meta.id.to_string() == typed || v.aliases.iter().any(|a| a == typed),
                Err(e) => return Err(e),
            };
            if ok {
                Ok(())
            } else {
                let e = KmsError::invalid("confirm", "type the key's alias or id exactly to confirm");
                Err(kms.refuse_key(c, op, key, e).await)
            }
        };
        let done = match action {
            ["rotate"] => kms.rotate_key(c, key).await.map(|_| "rotate"),
            ["enable"] => kms.enable_key(c, key).await.map(|_| "enable"),
            ["disable"] => kms.disable_key(c, key).await.map(|_| "disable"),
            ["cancel-deletion"] => kms.cancel_key_deletion(c, key).await.map(|_| "cancel-deletion"),
            ["schedule-deletion"] => {
                let op = Operation::ScheduleKeyDeletion;
                match form.get("pending_days").map(|d| d.parse::<u32>()) {
                    Some(Err(_)) => {
                        let e = KmsError::invalid("pending_window_days", "a number of days from 7 to 30");
                        Err(kms.refuse_key(c, op, key, e).await)
                    }
                    days => match confirmed(op).await {
                        Ok(()) => kms
                            .schedule_key_deletion(c, key, days.and_then(Result::ok))
                            .await
                            .map(|_| "schedule-deletion"),
                        Err(e) => Err(e),
                    },
                }
            }
            ["rotation-policy"] => {
                let op = Operation::UpdateRotationPolicy;
                let period = form.get("period").map(|p| forms::duration_ms("rotation_period", p)).transpose();
                let cap = form
                    .get("max_encryptions")
                    .map(|n| {
                        n.parse::<u64>()
                            .map_err(|_| KmsError::invalid("max_encryptions_per_version", "a whole number"))
                    })
                    .transpose();
                match (period, cap) {
                    (Ok(period_ms), Ok(max_encryptions_per_version)) => {
                        let input =
                            RotationInput { period_ms, next_rotation_ms: None, max_encryptions_per_version };
                        kms.update_rotation_policy(c, key, input).await.map(|_| "rotation-policy")
                    }
                    (Err(e), _) | (_, Err(e)) => Err(kms.refuse_key(c, op, key, e).await),
                }
            }
            ["versions", n, what] => {
                let op = match *what {
                    "enable" => Operation::EnableKeyVersion,
                    "disable" => Operation::DisableKeyVersion,
                    "schedule-destruction" => Operation::ScheduleKeyVersionDestruction,
                    "restore" => Operation::RestoreKeyVersion,
                    _ => {
                        return Page::html(404, pages::message(Some(viewer), "Not found", "No such action."))
                    }
                };
                match n.parse::<u32>() {
                    Err(_) => Err(kms
                        .refuse_key(c, op, key, KmsError::invalid("version", "a version number"))
                        .await),
                    Ok(v) => match *what {
                        "enable" => kms.enable_key_version(c, key, v).await.map(|_| "version"),
                        "disable" => kms.disable_key_version(c, key, v).await.map(|_| "version"),
                        "restore" => kms.restore_key_version(c, key, v).await.map(|_| "version"),
                        _ => match confirmed(op).await {
                            Ok(()) => {
                                kms.schedule_key_version_destruction(c, key, v, None).await.map(|_| "version")
                            }
                            Err(e) => Err(e),
                        },
                    },
                }
            }
            _ => return Page::html(404, pages::message(Some(viewer), "Not found", "No such action.")),
        };
        match done {
            Ok(what) => {
                let to = format!(
                    "/keys/{}?{}",
                    forms::encode([("k", key)]).trim_start_matches("k="),
                    forms::encode([("done", what)])
                );
                Page::redirect(&to)
            }
            Err(e) => self.error_page(Some(viewer), &e),
        }
    }
}

/// The audit explorer with its filters kept and the error that stopped it.
fn audit_error(viewer: &Viewer, q: &Form, e: &KmsError) -> Page {
    let page = pages::AuditPage {
        filter: q,
        records: &[],
        next: None,
        summary: None,
        error: Some(e.public_message()),
        unreachable: &[],
    };
    Page::html(super::status_of(e), pages::audit(viewer, &page))
}

/// A path segment as typed (`alias%2Fapp` is `alias/app`).
fn percent_decoded(seg: &str) -> String {
    form_urlencoded::parse(format!("k={}", seg.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
