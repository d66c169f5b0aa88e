//! `keyward backup ...`: `create` streams a backup from a running server
//! (admin) into a file; `verify` and `restore` work on the file alone, with
//! no server.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Client, ClientArgs, ClientFlags, Connection};
use super::render::{print, Output};
use super::CliError;
use crate::pb;

/// `keyward backup ...`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Connection flags (create).
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The backup command.
    #[command(subcommand)]
    pub command: BackupCommand,
}

/// The `keyward backup` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the running server (admin), consistently, while it serves:
    /// keys (wrapped), aliases, policies, usage, the audit log and its
    /// checkpoints, in one file with a manifest and a checksum. It holds no
    /// secret in the clear: it is useless without the root key.
    Create {
        /// The file to write (refused if it exists; mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a backup file without a server: its checksum and manifest, and
    /// its audit chain end to end (restored into a temporary folder).
    #[cfg(feature = "server")]
    Verify {
        /// The backup file.
        file: PathBuf,
    },
    /// Build a new data folder from a backup file (checked whole first; the
    /// restored audit chain must verify). Start a server on it with the same
    /// root key, shares or HSM.
    #[cfg(feature = "server")]
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new data folder (must not exist, or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

impl BackupArgs {
    /// Runs the command: `verify` and `restore` here, `create` against the server.
    pub fn dispatch(self, top: &ClientArgs) -> std::process::ExitCode {
        #[cfg(feature = "server")]
        {
            let (_, output) = top.with(&self.flags);
            match self.command {
                BackupCommand::Verify { file } => return super::finish(verify(&file, output)),
                BackupCommand::Restore { file, data_dir } => {
                    return super::finish(restore(&file, &data_dir, output))
                }
                BackupCommand::Create { .. } => {}
            }
        }
        super::client(top, self)
    }
}

#[cfg(feature = "server")]
fn summary(r: &crate::backup::Restored) -> serde_json::Value {
    json!({
        "sha256": r.backup.sha256,
        "created_ms": r.backup.header.created_ms,
        "keyward_version": r.backup.header.keyward_version,
        "store_format": r.backup.header.store_format,
        "sealed_by": r.backup.header.seal.as_ref().and_then(|s| s.get("kind")).cloned(),
        "entries": r.backup.manifest.entries,
        // The entries' keys and values, as the manifest counts them.
        "payload_bytes": r.backup.manifest.bytes,
        "audit_records_checked": r.chain.records_checked,
        "checkpoints_checked": r.chain.checkpoints_checked,
        "audit_chain_intact": r.chain.intact(),
    })
}

#[cfg(feature = "server")]
fn verify(file: &std::path::Path, output: Output) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let r = crate::backup::verify_offline(file).map_err(CliError::Input)?;
    let mut json = summary(&r);
    json["file"] = json!(file.display().to_string());
    json["file_bytes"] = json!(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0));
    json["ok"] = json!(true);
    json["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    let text = format!(
        "{}: intact (sha256 {}); {} entries, {} audit records and {} checkpoints verified",
        file.display(),
        r.backup.sha256,
        r.backup.manifest.entries.values().sum::<u64>(),
        r.chain.records_checked,
        r.chain.checkpoints_checked
    );
    print(output, json, text);
    Ok(())
}

#[cfg(feature = "server")]
fn restore(file: &std::path::Path, dir: &std::path::Path, output: Output) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let r = crate::backup::restore(file, dir).map_err(CliError::Input)?;
    let mut json = summary(&r);
    json["data_dir"] = json!(dir.display().to_string());
    json["ok"] = json!(true);
    json["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    let unseal = match r.backup.header.seal.as_ref().and_then(|s| s.get("kind")).and_then(|k| k.as_str()) {
        Some("shamir") => "the same key shares (it starts sealed)",
        Some("pkcs11") => "the same HSM key",
        _ => "the same root key file",
    };
    let text = format!(
        "restored {} into {} ({} entries; audit chain of {} records verified). Start a server on it with {unseal}.",
        file.display(),
        dir.display(),
        r.backup.manifest.entries.values().sum::<u64>(),
        r.chain.records_checked
    );
    print(output, json, text);
    Ok(())
}

impl super::ClientCommand for BackupArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let BackupCommand::Create { out } = self.command else { unreachable!("dispatched offline") };
        if out.exists() {
            return Err(CliError::Input(format!("{} exists; choose a new file", out.display())));
        }
        let started = std::time::Instant::now();
        let c = Client::connect(conn).await?;
        let mut stream =
            c.operator().create_backup(pb::CreateBackupRequest {}).await.map_err(|s| c.rpc(s))?.into_inner();
        let partial = partial_path(&out);
        let mut f = open_private(&partial)?;
        let io = |e: std::io::Error| CliError::Input(format!("{}: {e}", partial.display()));
        let mut bytes = 0u64;
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.data.len() as u64;
                    if let Err(e) = f.write_all(&chunk.data) {
                        let _ = std::fs::remove_file(&partial);
                        return Err(io(e));
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(c.rpc(s));
                }
            }
        }
        if let Err(e) = f.sync_all() {
            let _ = std::fs::remove_file(&partial);
            return Err(io(e));
        }
        drop(f);
        // Checked whole before it takes its name.
        let verified = std::fs::File::open(&partial).map_err(io).and_then(|f| {
            keyward_format::backup::verify(std::io::BufReader::new(f))
                .map_err(|e| CliError::Input(e.to_string()))
        });
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        // Linked into place (never over a file that appeared meanwhile), then the folder synced.
        let placed = std::fs::hard_link(&partial, &out);
        let _ = std::fs::remove_file(&partial);
        placed.map_err(|e| CliError::Input(format!("{}: {e}", out.display())))?;
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let json = json!({
            "file": out.display().to_string(),
            "file_bytes": bytes,
            "payload_bytes": verified.manifest.bytes,
            "sha256": verified.sha256,
            "created_ms": verified.header.created_ms,
            "entries": verified.manifest.entries,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        let text = format!(
            "wrote {} ({bytes} bytes, {} entries, sha256 {}). It is useless without the root key: keep them apart.",
            out.display(),
            verified.manifest.entries.values().sum::<u64>(),
            verified.sha256
        );
        print(output, json, text);
        Ok(())
    }
}

/// `FILE.partial`: where the backup is written until it is complete and checked.
fn partial_path(out: &std::path::Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn open_private(path: &std::path::Path) -> Result<std::fs::File, CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}
