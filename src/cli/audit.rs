//! `keyward audit ...`: query the key-usage log, export it as JSON lines,
//! and verify its hash chain (through the server, or offline on a stopped
//! server's data folder).

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
    /// Export records as JSON lines (oldest first) to stdout or --out FILE.
    Export(AuditExportArgs),
    /// Walk the hash chain; with --data-dir, offline on a stopped server's data.
    Verify {
        /// Data folder of a stopped server (verifies without a server).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
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
}

impl AuditFilter {
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
        if let AuditCommand::Verify { data_dir: Some(dir) } = &self.command {
            return verify_offline(dir, output);
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
                });
                print(output, json, records_text(&r));
                Ok(())
            }
            AuditCommand::Export(a) => export(&c, &mut audit, a).await,
            AuditCommand::Verify { .. } => {
                let r = audit
                    .verify_audit_log(pb::VerifyAuditLogRequest {})
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                report(output, r.records_checked, (!r.intact).then_some(r.first_bad_sequence), &r.problem)
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

/// Prints a verification result; a broken chain is an error.
fn report(output: Output, checked: u64, bad: Option<u64>, problem: &str) -> Result<(), CliError> {
    let text = match bad {
        None => format!("audit log intact: {checked} records checked"),
        Some(s) => format!("audit log BROKEN at record {s}: {problem} ({checked} records checked)"),
    };
    print(
        output,
        json!({ "records_checked": checked, "intact": bad.is_none(), "first_bad_sequence": bad.unwrap_or(0), "problem": problem }),
        text,
    );
    match bad {
        None => Ok(()),
        Some(s) => Err(CliError::Input(format!("audit chain broken at record {s}"))),
    }
}

/// Verifies the chain in a stopped server's data folder, read-only.
#[cfg(feature = "server")]
fn verify_offline(dir: &Path, output: Output) -> Result<(), CliError> {
    let db = dir.join("db");
    let store = keyward_store::RocksStore::open_read_only(&db)
        .map_err(|e| CliError::Input(format!("{}: {e}", db.display())))?;
    let r = keyward_core::verify_chain(&store).map_err(|e| CliError::Input(e.to_string()))?;
    report(output, r.records_checked, r.first_bad_seq, r.problem.as_deref().unwrap_or(""))
}

/// Offline verification opens the store, which this build leaves out.
#[cfg(not(feature = "server"))]
fn verify_offline(dir: &Path, _output: Output) -> Result<(), CliError> {
    Err(CliError::Input(format!(
        "cannot verify {} offline: this keyward was built without the `server` feature",
        dir.display()
    )))
}
