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
        let c = Client::connect(conn).await?;
        match self.command {
            ClusterCommand::Status => {
                let s = c
                    .operator()
                    .cluster_status(pb::ClusterStatusRequest {})
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                print(output, status_json(&s), status_text(&s));
            }
        }
        Ok(())
    }
}
