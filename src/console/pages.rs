//! The console's HTML (maud: every value inserted with `(...)` is escaped;
//! the only unescaped content is the SVG the plots module drew).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use keyward_core::{
    AuditSummary, KeyState, KeyUsage, KeyVersions, KeyView, SealedRecord, VerifyReport, VersionState,
};

use super::forms::{encode, rfc3339, Form};
use super::plot;
use super::Viewer;

/// A page: header (with the viewer's name and sign-out), then `body`.
fn layout(viewer: Option<&Viewer>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keyward" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    a.brand href="/" { "Keyward" }
                    nav {
                        @if let Some(v) = viewer {
                            @if v.is_admin() || v.is_auditor() { a href="/keys" { "Keys" } }
                            @if v.is_auditor() {
                                a href="/audit" { "Audit log" }
                                a href="/audit/verify" { "Verify" }
                            }
                        }
                    }
                    @if let Some(v) = viewer {
                        span.who { "Signed in as " strong #principal { (v.caller.principal) } }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button #sign-out type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page with a title and one message.
pub(super) fn message(viewer: Option<&Viewer>, title: &str, text: &str) -> Markup {
    layout(
        viewer,
        title,
        html! {
            h1 { (title) }
            p.error #message { (text) }
            p { a href="/" { "Back to the console" } }
        },
    )
}

/// The sign-in form (a token pasted, posted; never put in a URL).
pub(super) fn sign_in(error: Option<&str>, with_certificate: bool, csrf: &str) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            div.signin {
                h1 { "Sign in to Keyward" }
                @if let Some(e) = error { p.error #message { (e) } }
                form method="post" action="/login" autocomplete="off" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="token" { "Bearer token" }
                    input #token type="password" name="token" required autocomplete="off" spellcheck="false";
                    button #sign-in type="submit" { "Sign in" }
                }
                p.muted { "A configured token, a runtime token (kwt_…) or a JWT. It is exchanged for a session cookie and kept only on the server." }
                @if with_certificate {
                    form method="post" action="/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="method" value="certificate";
                        button #sign-in-certificate type="submit" { "Sign in with your client certificate" }
                    }
                }
            }
        },
    )
}

fn state(s: &str) -> Markup {
    html! { span class=(format!("state state-{}", s.replace(' ', "_"))) { (s) } }
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "never".into()
    } else {
        rfc3339(ms)
    }
}

fn period(ms: i64) -> String {
    let d = ms / 86_400_000;
    if ms % 86_400_000 == 0 {
        format!("{d} days")
    } else {
        format!("{} hours", ms / 3_600_000)
    }
}

/// The link to the next page: the same filters, the new position.
fn next_href(path: &str, filter: &Form, name: &str, at: &str) -> String {
    let q = filter.iter().filter(|(k, _)| k.as_str() != name).map(|(k, v)| (k.as_str(), v.as_str()));
    format!("{path}?{}", encode(q.chain([(name, at)])))
}

fn key_href(id: &str) -> String {
    format!("/keys/{id}")
}

/// The inventory: filters, one row per key, the next page.
pub(super) fn inventory(viewer: &Viewer, keys: &[KeyView], filter: &Form, next: Option<&str>) -> Markup {
    let f = |k: &str| filter.get(k).map(String::as_str).unwrap_or("");
    layout(
        Some(viewer),
        "Keys",
        html! {
            h1 { "Keys" }
            form.filters method="get" action="/keys" {
                label { "State"
                    select name="state" {
                        option value="" { "any" }
                        @for s in ["enabled", "disabled", "pending_deletion", "destroyed"] {
                            option value=(s) selected[f("state") == s] { (s) }
                        }
                    }
                }
                label { "Label (name or name=value)" input name="label" value=(f("label")); }
                label { "Alias or id contains" input #filter-text name="q" value=(f("q")); }
                button #filter type="submit" { "Filter" }
            }
            table #keys {
                thead { tr {
                    th { "Key" } th { "Aliases" } th { "Description" } th { "Labels" } th { "State" }
                    th.num { "Primary" } th.num { "Versions" } th { "Rotation" } th { "Next rotation" } th { "Created" }
                } }
                tbody {
                    @for k in keys {
                        @let id = k.meta.id.to_string();
                        tr.key {
                            td { a.mono href=(key_href(&id)) { (id) } }
                            td { @for a in &k.aliases { div.alias { (a) } } }
                            td { (k.meta.description) }
                            td { @for (n, v) in &k.meta.labels { div.mono { (n) "=" (v) } } }
                            td { (state(k.meta.state.as_str())) }
                            td.num { "v" (k.meta.primary_version) }
                            td.num { (k.meta.versions.len()) }
                            td {
                                @if let Some(p) = k.meta.rotation.period_ms { "every " (period(p)) br; }
                                @if let Some(c) = k.meta.rotation.max_encryptions_per_version { "after " (c) " seals" }
                                @if k.meta.rotation.period_ms.is_none() && k.meta.rotation.max_encryptions_per_version.is_none() { span.muted { "manual" } }
                            }
                            td { @if let Some(n) = k.meta.rotation.next_rotation_ms { (rfc3339(n)) } @else { span.muted { "—" } } }
                            td { (rfc3339(k.meta.created_ms)) }
                        }
                    }
                }
            }
            @if keys.is_empty() { p.muted #no-keys { "No key matches." } }
            div.pager {
                @if let Some(n) = next {
                    a #next-page href=(next_href("/keys", filter, "after", n)) { "Next page →" }
                }
            }
        },
    )
}

/// What the key page shows.
pub(super) struct KeyPage<'a> {
    pub versions: &'a KeyVersions,
    pub key: &'a KeyView,
    pub usage: Option<&'a KeyUsage>,
    pub usage_error: Option<String>,
    pub range: &'a str,
    pub daily: bool,
    pub notice: Option<&'a str>,
    /// A range of one's own, as typed (empty: the preset range).
    pub from: &'a str,
    pub until: &'a str,
}

/// A key: its fields, versions, usage plots and (for admins) actions.
pub(super) fn key_page(viewer: &Viewer, p: &KeyPage<'_>) -> Markup {
    let meta = &p.versions.meta;
    let id = meta.id.to_string();
    let action = |what: &str| format!("/keys/{id}/{what}");
    let csrf = html! { input type="hidden" name="csrf" value=(viewer.csrf); };
    layout(
        Some(viewer),
        &id,
        html! {
            h1 { "Key " span.mono #key-id { (id) } }
            @if let Some(n) = p.notice { p.notice #notice { (n) } }
            dl.fields {
                dt { "Aliases" } dd { @for a in &p.key.aliases { span.alias.mono { (a) } " " } }
                dt { "Description" } dd #description { (meta.description) }
                dt { "Labels" } dd { @for (n, v) in &meta.labels { span.mono.label { (n) "=" (v) } " " } }
                dt { "State" } dd #key-state { (state(meta.state.as_str())) }
                dt { "Primary version" } dd { "v" (meta.primary_version) }
                dt { "Created" } dd { (rfc3339(meta.created_ms)) }
                dt { "Rotation" } dd {
                    @if let Some(per) = meta.rotation.period_ms { "every " (period(per)) }
                    @else { "manual" }
                    @if let Some(c) = meta.rotation.max_encryptions_per_version { ", or after " (c) " seals per version" }
                    @if let Some(n) = meta.rotation.next_rotation_ms { "; next " (rfc3339(n)) }
                }
                @if let Some(d) = meta.deletion_ms { dt { "Deleted at" } dd { (rfc3339(d)) } }
            }
            @if viewer.is_admin() {
                h2 { "Actions" }
                div.actions #actions {
                    form method="post" action=(action("rotate")) { (csrf) button #rotate type="submit" { "Rotate now" } }
                    @if meta.state == KeyState::Enabled {
                        form method="post" action=(action("disable")) { (csrf) button #disable.danger type="submit" { "Disable key" } }
                    }
                    @if meta.state == KeyState::Disabled {
                        form method="post" action=(action("enable")) { (csrf) button #enable type="submit" { "Enable key" } }
                    }
                    @if meta.state == KeyState::PendingDeletion {
                        form method="post" action=(action("cancel-deletion")) { (csrf) button #cancel-deletion type="submit" { "Cancel deletion" } }
                    } @else if meta.state != KeyState::Destroyed {
                        form method="post" action=(action("schedule-deletion")) {
                            (csrf)
                            label { "Days " input name="pending_days" type="number" min="7" max="30" value="30" size="3"; }
                            label { "Type the alias or id to confirm " input #confirm-deletion name="confirm" required; }
                            button #schedule-deletion.danger type="submit" { "Schedule deletion" }
                        }
                    }
                    form method="post" action=(action("rotation-policy")) {
                        (csrf)
                        label { "Rotate every " input #rotation-period name="period" placeholder="90d (empty: manual)" size="12"
                            value=(meta.rotation.period_ms.map(|p| format!("{}h", p / 3_600_000)).unwrap_or_default()); }
                        label { "or after seals " input name="max_encryptions" type="number" min="1" size="8"
                            value=(meta.rotation.max_encryptions_per_version.map(|c| c.to_string()).unwrap_or_default()); }
                        button #set-rotation type="submit" { "Set rotation" }
                    }
                }
            }
            h2 { "Versions" }
            table #versions {
                thead { tr {
                    th { "Version" } th { "State" } th { "Created" } th { "Compromised" }
                    th.num { "Encryptions" } th.num { "Data keys" } th.num { "Decryptions" } th { "Last use" }
                    @if viewer.is_admin() { th { "Actions" } }
                } }
                tbody {
                    @for v in p.versions.versions.iter().rev() {
                        @let n = v.meta.version;
                        tr.version {
                            td { "v" (n) @if v.primary { " " span.state { "primary" } } }
                            td { (state(v.meta.state.as_str())) }
                            td { (rfc3339(v.meta.created_ms)) }
                            td { @if v.meta.compromised { strong { "yes" } } @else { "no" } }
                            td.num { (v.usage.encryptions) }
                            td.num { (v.usage.data_keys) }
                            td.num { (v.usage.decryptions) }
                            td { (when(v.usage.last_use_ms)) }
                            @if viewer.is_admin() {
                                td {
                                    @let va = |what: &str| format!("/keys/{id}/versions/{n}/{what}");
                                    @match v.meta.state {
                                        VersionState::Enabled if !v.primary => {
                                            form.inline method="post" action=(va("disable")) { (csrf) button.plain type="submit" { "Disable" } }
                                            " "
                                            (destroy_form(&va("schedule-destruction"), &csrf))
                                        }
                                        VersionState::Disabled => {
                                            form.inline method="post" action=(va("enable")) { (csrf) button.plain type="submit" { "Enable" } }
                                            " "
                                            (destroy_form(&va("schedule-destruction"), &csrf))
                                        }
                                        VersionState::ScheduledForDestruction => {
                                            form.inline method="post" action=(va("restore")) { (csrf) button.plain type="submit" { "Restore" } }
                                        }
                                        _ => {}
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Usage" }
            form.filters method="get" action=(key_href(&id)) {
                label { "Range"
                    select name="range" {
                        @for (v, t) in [("24h", "last 24 hours"), ("7d", "last 7 days"), ("30d", "last 30 days"), ("90d", "last 90 days")] {
                            option value=(v) selected[p.range == v] { (t) }
                        }
                    }
                }
                label { "or from (UTC)" input #usage-from name="from" type="date" value=(p.from); }
                label { "until" input #usage-until name="until" type="date" value=(p.until); }
                label { "Points"
                    select name="bucket" {
                        option value="hour" selected[!p.daily] { "per hour" }
                        option value="day" selected[p.daily] { "per day" }
                    }
                }
                button #show-usage type="submit" { "Show" }
            }
            @if let Some(e) = &p.usage_error { p.error { (e) } }
            @if let Some(u) = p.usage {
                @let width = if p.daily { 86_400_000 } else { 3_600_000 };
                p.muted #usage-range { "From the audit log's hourly counts, " (rfc3339(u.buckets.first().copied().unwrap_or(0))) " to "
                    (rfc3339(u.buckets.last().map(|l| l + width).unwrap_or(0))) " (whole " (if p.daily { "days" } else { "hours" }) "); dashed lines mark rotations." }
                div.plots {
                    @for kind in plot::Kind::ALL {
                        figure id=(format!("plot-{}", kind.id())) data-points=(u.buckets.len()) data-versions=(u.series.len()) {
                            (PreEscaped(plot::usage(u, kind, p.daily)))
                            figcaption { (kind.title()) " per " (if p.daily { "day" } else { "hour" }) ", per version" }
                        }
                    }
                }
                details {
                    summary { "The numbers" }
                    table #usage-table {
                        thead { tr { th { "From" } th { "Version" } th.num { "Encryptions" } th.num { "Data keys" } th.num { "Decryptions" } } }
                        tbody {
                            @for (version, series) in &u.series {
                                @for (at, b) in u.buckets.iter().zip(series) {
                                    @if b.iter().any(|n| *n > 0) {
                                        tr { td { (rfc3339(*at)) } td { "v" (version) } td.num { (b[0]) } td.num { (b[1]) } td.num { (b[2]) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if viewer.is_auditor() {
                p { a #key-audit href=(format!("/audit?{}", encode([("key", id.as_str())]))) { "This key's audit records →" } }
            }
        },
    )
}

/// A version's destruction, confirmed by typing the key's alias or id.
fn destroy_form(action: &str, csrf: &Markup) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf) input name="confirm" placeholder="alias or id" size="10" required;
            button.danger type="submit" { "Destroy…" }
        }
    }
}

/// What the audit explorer shows.
pub(super) struct AuditPage<'a> {
    pub filter: &'a Form,
    pub records: &'a [SealedRecord],
    pub next: Option<&'a str>,
    pub summary: Option<&'a AuditSummary>,
    pub error: Option<String>,
    pub unreachable: &'a [String],
}

/// The audit explorer: filters, the outcome breakdown, newest first, paged.
pub(super) fn audit(viewer: &Viewer, p: &AuditPage<'_>) -> Markup {
    let f = |k: &str| p.filter.get(k).map(String::as_str).unwrap_or("");
    let filters: Vec<(&str, &str)> = p
        .filter
        .iter()
        .filter(|(k, _)| k.as_str() != "page_token")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    layout(
        Some(viewer),
        "Audit log",
        html! {
            h1 { "Audit log" }
            form.filters #audit-filters method="get" action="/audit" {
                label { "Key (id or alias)" input #filter-key name="key" value=(f("key")); }
                label { "Principal" input #filter-principal name="principal" value=(f("principal")); }
                label { "Operation" input #filter-operation name="operation" value=(f("operation")) placeholder="Encrypt"; }
                label { "Outcome"
                    select #filter-outcome name="outcome" {
                        option value="" { "any" }
                        @for o in ["OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"] {
                            option value=(o) selected[f("outcome") == o] { (o) }
                        }
                    }
                }
                label { "From (UTC)" input name="start" type="datetime-local" value=(f("start")); }
                label { "Until (UTC)" input name="end" type="datetime-local" value=(f("end")); }
                button #apply-filters type="submit" { "Filter" }
                a #export href=(format!("/audit/export?{}", encode(filters.iter().copied()))) { "Export as JSON lines" }
            }
            @if let Some(e) = &p.error { p.error #message { (e) } }
            @if !p.unreachable.is_empty() {
                p.error { "Nodes not reachable for this page: " (p.unreachable.join(", ")) }
            }
            @if let Some(s) = p.summary {
                figure #plot-outcomes data-outcomes=(s.outcomes.len()) {
                    (PreEscaped(plot::outcomes(s)))
                    figcaption {
                        @if s.from_hourly_counts {
                            "Every record from " (rfc3339(s.start_ms)) " to " (rfc3339(s.end_ms)) " (whole hours), by outcome: "
                        } @else {
                            "The newest " (s.records_read) " records of the range, by outcome" @if s.truncated { " (there are more)" } ": "
                        }
                        @for (o, n) in &s.outcomes { span.mono { (o) " " (n) } " " }
                    }
                }
            }
            table #records {
                thead { tr { th { "Time" } th { "Principal" } th { "Operation" } th { "Key" } th { "Outcome" } th { "Edge" } } }
                tbody {
                    @for r in p.records {
                        @let rec = &r.record;
                        tr.record data-seq=(rec.seq) {
                            td.mono { (rfc3339(rec.time_ms)) }
                            td { (rec.principal) }
                            td { (rec.operation) }
                            td.mono {
                                @if let Some(k) = &rec.key_id { a href=(key_href(k)) { (k) } @if let Some(v) = rec.key_version { " v" (v) } }
                                @if let Some(a) = &rec.alias { br; (a) }
                            }
                            td { (rec.outcome) }
                            td { (rec.edge.as_deref().unwrap_or("")) }
                        }
                        tr.fields {
                            td colspan="6" {
                                details {
                                    summary { "All fields of record " (rec.seq) }
                                    dl.fields {
                                        dt { "seq" } dd { (rec.seq) }
                                        dt { "time" } dd { (rfc3339(rec.time_ms)) " (" (rec.time_ms) ")" }
                                        dt { "request_id" } dd.mono { (rec.request_id) }
                                        dt { "principal" } dd { (rec.principal) }
                                        dt { "peer" } dd.mono { (rec.peer) }
                                        dt { "edge" } dd { (rec.edge.as_deref().unwrap_or("")) }
                                        @if let Some(n) = &rec.node_id { dt { "node_id" } dd { (n) } }
                                        dt { "operation" } dd { (rec.operation) }
                                        dt { "key_id" } dd.mono { (rec.key_id.as_deref().unwrap_or("")) }
                                        dt { "key_version" } dd { (rec.key_version.map(|v| v.to_string()).unwrap_or_default()) }
                                        dt { "alias" } dd { (rec.alias.as_deref().unwrap_or("")) }
                                        @if rec.source_key_id.is_some() {
                                            dt { "source_key_id" } dd.mono { (rec.source_key_id.as_deref().unwrap_or("")) }
                                            dt { "source_key_version" } dd { (rec.source_key_version.map(|v| v.to_string()).unwrap_or_default()) }
                                        }
                                        @if let Some(t) = &rec.target { dt { "target" } dd { (t) } }
                                        dt { "context" } dd.mono { @for (k, v) in &rec.context { (k) "=" (v) br; } }
                                        dt { "outcome" } dd { (rec.outcome) }
                                        dt { "reason" } dd { (rec.reason) }
                                        dt { "prev_hash" } dd.mono { (rec.prev_hash) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if p.records.is_empty() && p.error.is_none() { p.muted #no-records { "No record matches." } }
            div.pager {
                @if let Some(n) = p.next {
                    a #next-page href=(next_href("/audit", p.filter, "page_token", n)) { "Older records →" }
                }
            }
        },
    )
}

/// The evidence shown beside the verification.
pub(super) struct Evidence {
    pub node_id: String,
    pub public_key_pem: String,
    pub fingerprint: String,
    pub newest: Option<keyward_core::Checkpoint>,
}

/// The chain's verification, the newest signed checkpoint and the public key.
pub(super) fn verify(viewer: &Viewer, r: &VerifyReport, e: Option<&Evidence>) -> Markup {
    layout(
        Some(viewer),
        "Verify",
        html! {
            h1 { "Audit log verification" }
            @if r.intact() {
                p.verdict-ok #verdict { "Intact: every record chains to the one before it and every signed checkpoint verifies." }
            } @else {
                p.verdict-bad #verdict { "NOT intact" @if let Some(s) = r.first_bad_seq { " from record " (s) } ": " (r.problem.as_deref().unwrap_or("")) }
            }
            dl.fields {
                dt { "Records checked" } dd #records-checked { (r.records_checked) }
                dt { "Checkpoints checked" } dd { (r.checkpoints_checked) }
                dt { "Newest checkpoint" } dd { (r.last_checkpoint_seq.map(|s| format!("record {s}")).unwrap_or_else(|| "none yet".into())) }
            }
            @if !r.nodes.is_empty() {
                h2 { "Nodes" }
                table {
                    thead { tr { th { "Node" } th { "Reachable" } th { "Intact" } th.num { "Records" } th { "Problem" } } }
                    tbody { @for n in &r.nodes {
                        tr { td { (n.node_id) } td { (n.reachable) } td { (n.ok()) } td.num { (n.records_checked) } td { (n.problem.as_deref().unwrap_or("")) } }
                    } }
                }
            }
            @if let Some(e) = e {
                h2 { "Signing identity" }
                dl.fields {
                    dt { "Node id" } dd.mono { (e.node_id) }
                    dt { "Public key fingerprint (SHA-256)" } dd.mono #fingerprint { (e.fingerprint) }
                }
                pre.mono #public-key { (e.public_key_pem) }
                @if let Some(c) = &e.newest {
                    h2 { "Newest signed checkpoint" }
                    dl.fields {
                        dt { "Record" } dd { (c.seq) }
                        dt { "Signed" } dd { (rfc3339(c.time_ms)) }
                        dt { "Record hash" } dd.mono { (c.record_hash) }
                        dt { "Signature" } dd.mono { (hex::encode(&c.signature)) }
                    }
                }
            }
            p.muted { "Check an export offline with " code { "keyward audit verify --offline FILE --public-key node.pem" } "." }
        },
    )
}
