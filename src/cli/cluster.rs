//! `keyward cluster ...`: the nodes of a cluster (mode on etcd).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientFlags, Connection};
use super::render::{print, time_str, Output};
use super::CliError;
use crate::pb;

/// `keyward cluster ...`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The cluster command.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `keyward cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The nodes (id, address, version, last checkpoint, freshness) and the
    /// sweeper leader, as the server asked names them (admin or auditor).
    Status,
    /// Move a stopped single-node server's keys, versions, aliases and
    /// usage counts into an empty cluster (offline: reads the folder, writes
    /// etcd). Its audit history stays in the folder, verifiable as before;
    /// do not start a single-node server on it again.
    Import(ImportArgs),
}

/// `keyward cluster import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The single-node server's data folder (stopped; only read).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// The cluster's etcd members, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,
    /// The root key file of the folder, which becomes (or must be) the cluster's.
    #[arg(long)]
    pub root_key_file: std::path::PathBuf,
    /// The prefix of every key Keyward writes in etcd.
    #[arg(long, default_value = "/keyward/")]
    pub etcd_prefix: String,
    /// CA of https etcd endpoints.
    #[arg(long)]
    pub etcd_ca_file: Option<std::path::PathBuf>,
    /// Client certificate for etcd, if its members ask for one.
    #[arg(long, requires = "etcd_key_file")]
    pub etcd_cert_file: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, requires = "etcd_cert_file")]
    pub etcd_key_file: Option<std::path::PathBuf>,
}

#[cfg(feature = "server")]
async fn import(a: ImportArgs, output: Output) -> Result<(), CliError> {
    use keyward_store::RocksStore;
    let root = crate::config::load_root_key(&crate::config::RootKeySource::File(a.root_key_file.clone()))
        .map_err(|e| CliError::Input(e.to_string()))?;
    let db = a.data_dir.join("db");
    let store =
        RocksStore::open_read_only(&db).map_err(|e| CliError::Input(format!("{}: {e}", db.display())))?;
    let etcd = crate::server::etcd_config(
        &a.etcd_endpoints,
        &a.etcd_prefix,
        a.etcd_ca_file.as_deref(),
        a.etcd_cert_file.as_deref().zip(a.etcd_key_file.as_deref()),
    )
    .map_err(CliError::Input)?;
    let shared = keyward_etcd::EtcdShared::connect(etcd)
        .await
        .map_err(|e| CliError::Input(format!("{e} (is etcd running at {}?)", a.etcd_endpoints.join(","))))?;
    let r = keyward_core::import_into_cluster(&store, &shared, &root)
        .await
        .map_err(|e| CliError::Input(format!("import from {}: {e}", a.data_dir.display())))?;
    let text = format!(
        "imported {} keys ({} versions), {} aliases and {} usage counts into the cluster at {} in {} transactions{}; \
         the audit history stays in {} (keyward audit verify --data-dir); do not start a single-node server on it again",
        r.keys,
        r.versions,
        r.aliases,
        r.usage,
        a.etcd_endpoints.join(","),
        r.writes,
        if r.already_there > 0 { format!(" ({} already there from an earlier run)", r.already_there) } else { String::new() },
        a.data_dir.display()
    );
    print(
        output,
        json!({
            "keys": r.keys,
            "versions": r.versions,
            "aliases": r.aliases,
            "usage_counts": r.usage,
            "already_there": r.already_there,
            "writes": r.writes,
            "data_dir": a.data_dir.display().to_string(),
        }),
        text,
    );
    Ok(())
}

#[cfg(not(feature = "server"))]
async fn import(a: ImportArgs, _output: Output) -> Result<(), CliError> {
    Err(CliError::Input(format!(
        "cannot read {}: this keyward was built without the `server` feature",
        a.data_dir.display()
    )))
}

fn node_json(n: &pb::ClusterNode) -> Value {
    json!({
        "node_id": n.node_id,
        "address": n.address,
        "version": n.version,
        "started_time": time_str(&n.started_time),
        "updated_time": time_str(&n.updated_time),
        "applied_revision": n.applied_revision,
        "current": n.current,
        "checkpoint_sequence": n.checkpoint_sequence,
        "checkpoint_hash": n.checkpoint_hash,
        "checkpoint_time": time_str(&n.checkpoint_time),
        "sweeper_leader": n.sweeper_leader,
    })
}

fn status_json(s: &pb::ClusterStatusResponse) -> Value {
    json!({
        "node_id": s.node_id,
        "sweeper_leader": s.sweeper_leader,
        "last_write_revision": s.last_write_revision,
        "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>(),
    })
}

fn status_text(s: &pb::ClusterStatusResponse) -> String {
    let mut lines = vec![format!(
        "{:<14} {:<22} {:<9} {:<8} {:>9}  {:<24} {:>10}  {}",
        "NODE", "ADDRESS", "VERSION", "CURRENT", "REVISION", "UPDATED", "CHECKPOINT", "SWEEPER"
    )];
    for n in &s.nodes {
        lines.push(format!(
            "{:<14} {:<22} {:<9} {:<8} {:>9}  {:<24} {:>10}  {}",
            n.node_id,
            n.address,
            n.version,
            if n.current { "yes" } else { "NO" },
            n.applied_revision,
            time_str(&n.updated_time),
            n.checkpoint_sequence,
            if n.sweeper_leader { "leader" } else { "" }
        ));
    }
    let leader = if s.sweeper_leader.is_empty() { "none right now" } else { &s.sweeper_leader };
    lines.push(format!(
        "answered by {}; last shared write at revision {}; sweeper leader: {leader}",
        s.node_id, s.last_write_revision
    ));
    lines.join("\n")
}

impl super::ClientCommand for ClusterArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        if let ClusterCommand::Import(a) = self.command {
            return import(a, output).await;
        }
        let c = Client::connect(conn).await?;
        let s = c
            .operator()
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        print(output, status_json(&s), status_text(&s));
        Ok(())
    }
}
