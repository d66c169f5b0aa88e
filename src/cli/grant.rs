//! `keyward grant ...`: give a principal operations on keys at runtime,
//! optionally under an encryption-context constraint, list and revoke
//! grants (AccessService, admin role).

use std::collections::HashMap;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientFlags, Connection};
use super::input::{context, parse_pair};
use super::render::{print, time_str, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward grant ...`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The grant command.
    #[command(subcommand)]
    pub command: GrantCommand,
}

/// The `keyward grant` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grant a principal operations on keys, effective for its next request.
    Create {
        /// The principal (runtime or from the configuration file).
        #[arg(long, required = true)]
        principal: String,
        /// Key id, alias/<name>, label:k=v or * (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// encrypt, decrypt, generate-data-key, generate-data-key-without-plaintext,
        /// re-encrypt-from, re-encrypt-to, or * for all (repeatable).
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        /// The request's encryption context must be exactly these pairs, k=v (repeatable).
        #[arg(long = "context-equals", value_parser = parse_pair, conflicts_with = "context_contains")]
        context_equals: Vec<(String, String)>,
        /// The request's encryption context must contain these pairs, k=v (repeatable).
        #[arg(long = "context-contains", value_parser = parse_pair)]
        context_contains: Vec<(String, String)>,
    },
    /// List grants, those of the configuration file (no id) included.
    List {
        /// Only this principal's grants.
        #[arg(long)]
        principal: Option<String>,
        /// Only grants that cover this key (id or alias) now.
        #[arg(long)]
        key: Option<String>,
    },
    /// Revoke a runtime grant by its id; refused from the very next request.
    Revoke {
        /// The grant id (from `grant list` or `grant create`).
        grant_id: String,
    },
}

/// A grant as JSON.
pub(crate) fn grant_json(g: &pb::Grant) -> Value {
    json!({
        "grant_id": g.grant_id,
        "principal": g.principal,
        "keys": g.keys,
        "operations": g.operations,
        "context_equals": g.context_equals,
        "context_contains": g.context_contains,
        "create_time": time_str(&g.create_time),
    })
}

/// `k=v,k2=v2`, sorted.
fn pairs(m: &HashMap<String, String>) -> String {
    let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// The grant's constraint as printed.
fn constraint(g: &pb::Grant) -> String {
    if !g.context_equals.is_empty() {
        format!("context equals {}", pairs(&g.context_equals))
    } else if !g.context_contains.is_empty() {
        format!("context contains {}", pairs(&g.context_contains))
    } else {
        "none".to_string()
    }
}

/// A grant's id as printed (configuration-file grants have none).
fn id_text(g: &pb::Grant) -> &str {
    if g.grant_id.is_empty() {
        "(configuration file)"
    } else {
        &g.grant_id
    }
}

/// A grant as aligned fields.
fn grant_text(g: &pb::Grant) -> String {
    format!(
        "grant_id:   {}\nprincipal:  {}\nkeys:       {}\noperations: {}\nconstraint: {}\ncreated:    {}",
        id_text(g),
        g.principal,
        g.keys.join(", "),
        g.operations.join(", "),
        constraint(g),
        time_str(&g.create_time)
    )
}

/// A column's width: its widest cell or its header.
fn widest(cells: impl Iterator<Item = usize>, header: &str) -> usize {
    cells.max().unwrap_or(0).max(header.len())
}

/// `grant list` as a table.
fn grants_text(gs: &[pb::Grant]) -> String {
    if gs.is_empty() {
        return "no grants".to_string();
    }
    let keys: Vec<String> = gs.iter().map(|g| g.keys.join(",")).collect();
    let ops: Vec<String> = gs.iter().map(|g| g.operations.join(",")).collect();
    let (wp, wk, wo) = (
        widest(gs.iter().map(|g| g.principal.len()), "PRINCIPAL"),
        widest(keys.iter().map(String::len), "KEYS"),
        widest(ops.iter().map(String::len), "OPERATIONS"),
    );
    let row = |id: &str, principal: &str, keys: &str, ops: &str, constraint: &str| {
        format!("{id:<36}  {principal:<wp$}  {keys:<wk$}  {ops:<wo$}  {constraint}")
    };
    let header = row("GRANT ID", "PRINCIPAL", "KEYS", "OPERATIONS", "CONSTRAINT");
    let rows =
        gs.iter().enumerate().map(|(i, g)| row(id_text(g), &g.principal, &keys[i], &ops[i], &constraint(g)));
    std::iter::once(header).chain(rows).collect::<Vec<_>>().join("\n")
}

impl ClientCommand for GrantArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut access = c.access();
        match self.command {
            GrantCommand::Create { principal, keys, operations, context_equals, context_contains } => {
                let g = access
                    .create_grant(pb::CreateGrantRequest {
                        principal,
                        keys,
                        operations,
                        context_equals: context(context_equals),
                        context_contains: context(context_contains),
                    })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner()
                    .grant
                    .unwrap_or_default();
                print(output, grant_json(&g), grant_text(&g));
            }
            GrantCommand::List { principal, key } => {
                let r = access
                    .list_grants(pb::ListGrantsRequest {
                        principal: principal.unwrap_or_default(),
                        key_id: key.unwrap_or_default(),
                    })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json = json!({ "grants": r.grants.iter().map(grant_json).collect::<Vec<_>>() });
                print(output, json, grants_text(&r.grants));
            }
            GrantCommand::Revoke { grant_id } => {
                access
                    .revoke_grant(pb::RevokeGrantRequest { grant_id: grant_id.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?;
                print(output, json!({ "revoked": grant_id }), format!("revoked grant {grant_id}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_as_a_table() {
        let runtime = pb::Grant {
            grant_id: "70d31222-6679-449f-a122-1bab3c4e8bac".into(),
            principal: "payments-api".into(),
            keys: vec!["alias/payments".into()],
            operations: vec!["encrypt".into(), "decrypt".into()],
            context_contains: [("tenant".to_string(), "acme".to_string()), ("a".into(), "b".into())].into(),
            ..Default::default()
        };
        let config = pb::Grant {
            principal: "ops".into(),
            keys: vec!["*".into()],
            operations: vec!["*".into()],
            ..Default::default()
        };
        let text = grants_text(&[runtime, config]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GRANT ID") && lines[0].ends_with("CONSTRAINT"), "{text}");
        assert!(lines[1].ends_with("context contains a=b,tenant=acme"), "{text}");
        assert!(lines[2].starts_with("(configuration file)") && lines[2].ends_with("none"), "{text}");
        let at = |l: &str| l.find("KEYS").or_else(|| l.find("alias/")).or_else(|| l.find('*')).unwrap();
        assert_eq!(at(lines[0]), at(lines[1]), "columns line up:\n{text}");
        assert_eq!(at(lines[1]), at(lines[2]), "columns line up:\n{text}");
        assert_eq!(grants_text(&[]), "no grants");
    }
}
