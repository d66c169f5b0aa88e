//! `keyward audit ...`: query the key-usage log, export it as JSON lines,
//! and verify its hash chain (through the server, offline on a stopped
//! server's data folder, or offline on a signed export with the node's
//! public key and nothing else).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Authed, Client, ClientFlags, Connection};
use super::input::rfc3339;
use super::render::{print, record_json, records_text, Output};
use super::{CliError, ClientCommand};
use crate::pb;
use crate::pb::audit_service_client::AuditServiceClient;

/// `keyward audit ...`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The audit command.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The `keyward audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Query the key-usage log (newest first).
    Query(AuditQueryArgs),
    /// Export the signed log as JSON lines (oldest first) to stdout or --out
    /// FILE: every record with its stored bytes and the signed checkpoints,
    /// which `audit verify --offline` checks; from the server, or with
    /// --data-dir from its folder. With a filter, the matching records with
    /// readable fields instead (not verifiable: a filtered list has gaps).
    Export(AuditExportArgs),
    /// Walk the hash chain, checkpoints and indexes; with --data-dir, offline
    /// on a stopped server's data; with --offline FILE --public-key PEM, on a
    /// signed export, with no server and no root key.
    Verify(AuditVerifyArgs),
    /// Print the node's audit public key (PEM), which verifies its signed
    /// checkpoints; keep it apart from the server.
    PublicKey {
        /// Read it from a data folder instead of asking the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// `keyward audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Data folder of a stopped server (verifies without a server).
    #[arg(long, conflicts_with = "offline")]
    pub data_dir: Option<PathBuf>,
    /// A signed export (`audit export` without filters) to verify.
    #[arg(long, requires = "public_key")]
    pub offline: Option<PathBuf>,
    /// The node's audit public key, a PEM file (`audit public-key`). With
    /// --data-dir it replaces the key the folder holds.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

/// Filters shared by `audit query` and `audit export`.
#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Key id or alias.
    #[arg(long)]
    pub key: Option<String>,
    /// Principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// Operation (e.g. Encrypt).
    #[arg(long)]
    pub operation: Option<String>,
    /// Outcome (OK or a gRPC code name such as NOT_FOUND).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Edge the request came through: grpc, kms-v2, aws-kms, vault-transit, system.
    #[arg(long)]
    pub edge: Option<String>,
    /// Cluster node that wrote the record (its --node-id).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Records at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

/// `keyward audit query`.
#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Records per page.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Continue from a previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Oldest first.
    #[arg(long)]
    pub oldest_first: bool,
}

/// `keyward audit export`.
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Export every record with its stored bytes, and every signed
    /// checkpoint, from this data folder (read-only; no filters).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl AuditFilter {
    /// No filter given.
    fn is_empty(&self) -> bool {
        [
            &self.key,
            &self.principal,
            &self.operation,
            &self.outcome,
            &self.edge,
            &self.node_id,
            &self.since,
            &self.until,
        ]
        .iter()
        .all(|f| f.is_none())
    }

    fn request(
        &self,
        page_size: u32,
        page_token: String,
        oldest_first: bool,
    ) -> Result<pb::QueryAuditLogRequest, CliError> {
        Ok(pb::QueryAuditLogRequest {
            key_id: self.key.clone().unwrap_or_default(),
            principal: self.principal.clone().unwrap_or_default(),
            operation: self.operation.clone().unwrap_or_default(),
            outcome: self.outcome.clone().unwrap_or_default(),
            edge: self.edge.clone().unwrap_or_default(),
            node_id: self.node_id.clone().unwrap_or_default(),
            start_time: rfc3339("since", &self.since)?,
            end_time: rfc3339("until", &self.until)?,
            page_size,
            page_token,
            oldest_first,
        })
    }
}

impl ClientCommand for AuditArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command; a broken chain is an error (exit status 1).
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        match &self.command {
            AuditCommand::Verify(AuditVerifyArgs { offline: Some(file), public_key: Some(pem), .. }) => {
                return verify_export(file, pem, output);
            }
            AuditCommand::Verify(AuditVerifyArgs { data_dir: Some(dir), public_key, .. }) => {
                return verify_offline(dir, public_key.as_deref(), output);
            }
            AuditCommand::Export(AuditExportArgs { data_dir: Some(dir), out, .. }) => {
                return offline::export_signed(dir, out.as_deref());
            }
            AuditCommand::PublicKey { data_dir: Some(dir) } => return offline::public_key(dir, output),
            _ => {}
        }
        let c = Client::connect(conn).await?;
        let mut audit = c.audit();
        match self.command {
            AuditCommand::Query(a) => {
                let r = audit
                    .query_audit_log(a.filter.request(a.limit, a.page_token, a.oldest_first)?)
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json = json!({
                    "records": r.records.iter().map(record_json).collect::<Vec<_>>(),
                    "next_page_token": r.next_page_token,
                    "unreachable_nodes": r.unreachable_nodes,
                });
                if !r.unreachable_nodes.is_empty() {
                    eprintln!(
                        "warning: the records of node(s) {} could not be read for this page (see the server's log); the page token keeps their place",
                        r.unreachable_nodes.join(", ")
                    );
                }
                print(output, json, records_text(&r));
                Ok(())
            }
            AuditCommand::Export(a) => export(&c, &mut audit, a).await,
            AuditCommand::Verify(_) => {
                let r = audit
                    .verify_audit_log(pb::VerifyAuditLogRequest {})
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                if !r.nodes.is_empty() {
                    return cluster_report(output, &r);
                }
                let last_checkpoint = (r.last_checkpoint_sequence > 0).then_some(r.last_checkpoint_sequence);
                report(
                    output,
                    r.records_checked,
                    (r.checkpoints_checked, last_checkpoint),
                    (!r.intact).then_some(r.first_bad_sequence),
                    &r.problem,
                )
            }
            AuditCommand::PublicKey { .. } => {
                let r = audit
                    .get_audit_public_key(pb::GetAuditPublicKeyRequest {})
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                print_public_key(output, &r.public_key_pem, &r.node_id, &r.fingerprint_sha256);
                Ok(())
            }
        }
    }
}

/// Pages through the log oldest first, one JSON object per line, with a
/// progress line on stderr (the total is the newest sequence number, an upper
/// bound when filters are set).
async fn export(
    c: &Client,
    audit: &mut AuditServiceClient<Authed>,
    a: AuditExportArgs,
) -> Result<(), CliError> {
    if a.filter.is_empty() {
        return export_signed(c, audit, a.out.as_deref()).await;
    }
    eprintln!(
        "note: a filtered export lists matching records; only an export without filters carries the \
         stored bytes and signed checkpoints that `keyward audit verify --offline` checks"
    );
    let io = |e: std::io::Error| CliError::Input(format!("writing export: {e}"));
    let newest = audit
        .query_audit_log(pb::QueryAuditLogRequest { page_size: 1, ..Default::default() })
        .await
        .map_err(|s| c.rpc(s))?
        .into_inner()
        .records
        .first()
        .map(|r| r.sequence)
        .unwrap_or(0);
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut token = String::new();
    let mut written = 0u64;
    let mut last_report = std::time::Instant::now();
    loop {
        let page = audit
            .query_audit_log(a.filter.request(1000, token, true)?)
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        for r in &page.records {
            serde_json::to_writer(&mut out, &record_json(r)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
            written += 1;
        }
        if last_report.elapsed() > Duration::from_millis(250) || page.next_page_token.is_empty() {
            last_report = std::time::Instant::now();
            let line = format!("exported {written} records (log holds {newest})");
            if tty {
                eprint!("\r{line}");
            } else if page.next_page_token.is_empty() {
                eprintln!("{line}");
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if tty {
        eprintln!();
    }
    out.flush().map_err(io)
}

/// The signed export over gRPC (`ExportAuditLog`): every record with its
/// stored bytes, each checkpoint after the record it covers, the same JSON
/// lines as `audit export --data-dir` (`keyward_format::export`).
async fn export_signed(
    c: &Client,
    audit: &mut AuditServiceClient<Authed>,
    out: Option<&Path>,
) -> Result<(), CliError> {
    use keyward_format::export;
    let io = |e: std::io::Error| CliError::Input(format!("writing export: {e}"));
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let (mut after, mut records, mut checkpoints) = (0u64, 0u64, 0u64);
    loop {
        let req = pb::ExportAuditLogRequest { after_sequence: after, page_size: 1000 };
        let page = audit.export_audit_log(req).await.map_err(|s| c.rpc(s))?.into_inner();
        let page_records: Vec<(u64, Vec<u8>)> =
            page.records.into_iter().map(|r| (r.sequence, r.stored)).collect();
        let mut signed = Vec::with_capacity(page.checkpoints.len());
        for cp in page.checkpoints {
            let node_id = cp.node_id.parse().map_err(|_| {
                CliError::Input(format!("checkpoint {}: node id {:?} is not a UUID", cp.sequence, cp.node_id))
            })?;
            signed.push(keyward_core::Checkpoint {
                seq: cp.sequence,
                record_hash: cp.record_hash,
                time_ms: cp.time_unix_ms,
                node_id,
                signature: cp.signature,
            });
        }
        w.write_all(&export::page_lines(&page_records, &signed)).map_err(io)?;
        records += page_records.len() as u64;
        checkpoints += signed.len() as u64;
        if page.next_after_sequence == 0 {
            break;
        }
        after = page.next_after_sequence;
    }
    w.flush().map_err(io)?;
    eprintln!("exported {records} records and {checkpoints} signed checkpoints");
    Ok(())
}

/// Prints the audit public key: the PEM alone as text (ready for a file).
fn print_public_key(output: Output, pem: &str, node_id: &str, fingerprint: &str) {
    print(
        output,
        json!({ "public_key_pem": pem, "node_id": node_id, "fingerprint_sha256": fingerprint }),
        pem.trim_end().to_string(),
    );
}

/// Prints a verification result; a broken chain is an error.
/// `keyward audit verify` on a cluster node: one line per node.
fn cluster_report(output: Output, r: &pb::VerifyAuditLogResponse) -> Result<(), CliError> {
    let mut text = vec![format!(
        "cluster audit logs {}: {} nodes, {} records and {} signed checkpoints checked",
        if r.intact { "intact" } else { "NOT INTACT" },
        r.nodes.len(),
        r.records_checked,
        r.checkpoints_checked
    )];
    for n in &r.nodes {
        let state = match (n.reachable, n.intact) {
            (false, _) => "UNREACHABLE",
            (true, true) => "intact",
            (true, false) if n.behind => "BEHIND",
            (true, false) => "BROKEN",
        };
        let mut line = format!(
            "  {}: {state}, {} records, {} checkpoints, published checkpoint {}",
            n.node_id, n.records_checked, n.checkpoints_checked, n.published_checkpoint_sequence
        );
        if !n.problem.is_empty() {
            line.push_str(&format!(": {}", n.problem));
        }
        text.push(line);
    }
    let nodes: Vec<_> = r
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "reachable": n.reachable,
                "intact": n.intact,
                "records_checked": n.records_checked,
                "checkpoints_checked": n.checkpoints_checked,
                "first_bad_sequence": n.first_bad_sequence,
                "published_checkpoint_sequence": n.published_checkpoint_sequence,
                "behind": n.behind,
                "problem": n.problem,
            })
        })
        .collect();
    print(
        output,
        json!({
            "records_checked": r.records_checked,
            "checkpoints_checked": r.checkpoints_checked,
            "last_checkpoint_sequence": r.last_checkpoint_sequence,
            "intact": r.intact,
            "first_bad_sequence": r.first_bad_sequence,
            "problem": r.problem,
            "nodes": nodes,
        }),
        text.join("\n"),
    );
    if r.intact {
        Ok(())
    } else {
        Err(CliError::Input(format!("the cluster's audit logs are not intact: {}", r.problem)))
    }
}

fn report(
    output: Output,
    checked: u64,
    (checkpoints, last_checkpoint): (u64, Option<u64>),
    bad: Option<u64>,
    problem: &str,
) -> Result<(), CliError> {
    let signed = match last_checkpoint {
        Some(c) => format!(", {checkpoints} signed checkpoints (newest at record {c})"),
        None => ", no signed checkpoint yet".to_string(),
    };
    let text = match bad {
        None => format!("audit log intact: {checked} records checked{signed}"),
        Some(s) => format!("audit log BROKEN at record {s}: {problem} ({checked} records checked)"),
    };
    print(
        output,
        json!({
            "records_checked": checked,
            "checkpoints_checked": checkpoints,
            "last_checkpoint_sequence": last_checkpoint.unwrap_or(0),
            "intact": bad.is_none(),
            "first_bad_sequence": bad.unwrap_or(0),
            "problem": problem,
        }),
        text,
    );
    match bad {
        None => Ok(()),
        Some(s) => Err(CliError::Input(format!("audit chain broken at record {s}"))),
    }
}

/// Verifies the chain, checkpoints and indexes in a stopped server's data
/// folder, read-only, from one snapshot.
#[cfg(feature = "server")]
fn verify_offline(dir: &Path, public_key: Option<&Path>, output: Output) -> Result<(), CliError> {
    let key = public_key.map(read_public_key).transpose()?;
    let store = offline::open(dir)?;
    let r = keyward_core::verify_log(&store, key.as_ref()).map_err(|e| CliError::Input(e.to_string()))?;
    report(
        output,
        r.records_checked,
        (r.checkpoints_checked, r.last_checkpoint_seq),
        r.first_bad_seq,
        r.problem.as_deref().unwrap_or(""),
    )
}

/// Reads the node's audit public key from a PEM file.
fn read_public_key(pem: &Path) -> Result<keyward_crypto::AuditPublicKey, CliError> {
    let text =
        std::fs::read_to_string(pem).map_err(|e| CliError::Input(format!("{}: {e}", pem.display())))?;
    keyward_format::export::parse_public_key_pem(&text)
        .map_err(|e| CliError::Input(format!("{}: {e}", pem.display())))
}

/// Verifies a signed export with the node's public key: nothing else needed.
fn verify_export(file: &Path, pem: &Path, output: Output) -> Result<(), CliError> {
    use keyward_format::export;
    let key = read_public_key(pem)?;
    let bytes = std::fs::read(file).map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    let parsed = export::parse(&bytes).map_err(|e| {
        let hint = if e.reason.contains("missing field `type`") {
            " (a filtered export lists readable records and cannot be verified; export without filters)"
        } else {
            ""
        };
        CliError::Input(format!("{}: {e}{hint}", file.display()))
    })?;
    let r = export::verify(&parsed, &key);
    let tail = match r.uncovered {
        Some((a, b)) => format!(
            "records {a}..{b} ({}) are after the last checkpoint and not yet covered by a signature",
            b - a + 1
        ),
        None => "every record is covered by a signed checkpoint".to_string(),
    };
    let text = match r.first_bad_seq {
        None => format!(
            "audit export intact: {} records, {} signed checkpoints checked; {tail}",
            r.records_checked, r.checkpoints_checked
        ),
        Some(s) => format!(
            "audit export BROKEN at record {s}: {} ({} records checked)",
            r.problem.as_deref().unwrap_or(""),
            r.records_checked
        ),
    };
    let (first, last) = r.uncovered.unwrap_or((0, 0));
    print(
        output,
        json!({
            "intact": r.intact(),
            "records_checked": r.records_checked,
            "checkpoints_checked": r.checkpoints_checked,
            "last_record_sequence": r.last_record_seq,
            "last_checkpoint_sequence": r.last_checkpoint_seq.unwrap_or(0),
            "uncovered_first_sequence": first,
            "uncovered_last_sequence": last,
            "uncovered_records": if r.uncovered.is_some() { last - first + 1 } else { 0 },
            "node_id": r.node_id.clone().unwrap_or_default(),
            "first_bad_sequence": r.first_bad_seq.unwrap_or(0),
            "problem": r.problem.clone().unwrap_or_default(),
        }),
        text,
    );
    match r.first_bad_seq {
        None => Ok(()),
        Some(s) => Err(CliError::Input(format!("audit export broken at record {s}"))),
    }
}

/// The commands that read a data folder directly (read-only).
#[cfg(feature = "server")]
mod offline {
    use std::io::Write;
    use std::path::Path;

    use keyward_core::Store;
    use keyward_store::format::export;
    use keyward_store::RocksStore;

    use super::{print_public_key, CliError, Output};

    pub(super) fn open(dir: &Path) -> Result<RocksStore, CliError> {
        let db = dir.join("db");
        RocksStore::open_read_only(&db).map_err(|e| CliError::Input(format!("{}: {e}", db.display())))
    }

    /// The key the folder holds (node id and public key are stored in plain).
    pub(super) fn public_key(dir: &Path, output: Output) -> Result<(), CliError> {
        let store = open(dir)?;
        let signer = store
            .audit_signer()
            .map_err(|e| CliError::Input(e.to_string()))?
            .ok_or_else(|| CliError::Input(format!("{} holds no audit signing key yet", dir.display())))?;
        let key = keyward_crypto::AuditPublicKey::from_bytes(&signer.public_key)
            .map_err(|e| CliError::Input(e.to_string()))?;
        let pem = export::public_key_pem(&key);
        print_public_key(output, &pem, &signer.node_id.to_string(), &export::public_key_fingerprint(&key));
        Ok(())
    }

    /// Every record (stored bytes) and checkpoint, from one snapshot, each
    /// checkpoint after the record it covers.
    pub(super) fn export_signed(dir: &Path, out: Option<&Path>) -> Result<(), CliError> {
        let io = |e: std::io::Error| CliError::Input(format!("writing export: {e}"));
        let store = open(dir)?;
        let mut w: Box<dyn Write> = match out {
            Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?)),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        };
        let (mut after, mut records, mut checkpoints) = (0u64, 0u64, 0u64);
        loop {
            let page =
                keyward_core::export_audit_page(&store, after, 1000).map_err(|e| CliError::Input(e.0))?;
            w.write_all(&export::page_lines(&page.records, &page.checkpoints)).map_err(io)?;
            records += page.records.len() as u64;
            checkpoints += page.checkpoints.len() as u64;
            match page.next_after {
                Some(n) => after = n,
                None => break,
            }
        }
        w.flush().map_err(io)?;
        eprintln!("exported {records} records and {checkpoints} signed checkpoints");
        Ok(())
    }
}

/// Offline verification opens the store, which this build leaves out.
#[cfg(not(feature = "server"))]
fn verify_offline(dir: &Path, _key: Option<&Path>, _output: Output) -> Result<(), CliError> {
    Err(CliError::Input(format!(
        "cannot verify {} offline: this keyward was built without the `server` feature",
        dir.display()
    )))
}

#[cfg(not(feature = "server"))]
mod offline {
    use std::path::Path;

    use super::{CliError, Output};

    fn unavailable(dir: &Path) -> CliError {
        CliError::Input(format!(
            "cannot read {}: this keyward was built without the `server` feature",
            dir.display()
        ))
    }

    pub(super) fn public_key(dir: &Path, _output: Output) -> Result<(), CliError> {
        Err(unavailable(dir))
    }

    pub(super) fn export_signed(dir: &Path, _out: Option<&Path>) -> Result<(), CliError> {
        Err(unavailable(dir))
    }
}
