//! `keyward principal ...`: create, list and delete runtime principals
//! (AccessService, admin role). Principals of the configuration file are
//! listed as bootstrap principals and cannot be changed here.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::client::{Client, ClientFlags, Connection};
use super::render::{print, time_str, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward principal ...`.
#[derive(Debug, Args)]
pub struct PrincipalArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The principal command.
    #[command(subcommand)]
    pub command: PrincipalCommand,
}

/// A role a principal may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleName {
    /// Every operation, including access changes.
    Admin,
    /// Crypto operations on the keys its grants name.
    User,
    /// Reads the audit log.
    Auditor,
}

impl RoleName {
    fn as_str(self) -> &'static str {
        match self {
            RoleName::Admin => "admin",
            RoleName::User => "user",
            RoleName::Auditor => "auditor",
        }
    }
}

/// The `keyward principal` subcommands.
#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Create a runtime principal; give it keys with `keyward grant create`
    /// and a credential with `keyward token create --principal NAME --ttl 1h`.
    Create {
        /// 1 to 128 letters, digits and - _ . @ : /
        name: String,
        /// Role (repeatable).
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<RoleName>,
    },
    /// List every principal: the configuration file's (bootstrap) and the runtime ones.
    List,
    /// Delete a runtime principal with every token and grant it has (at once).
    #[command(visible_alias = "revoke")]
    Delete {
        /// The principal's name.
        name: String,
    },
}

/// A principal as JSON.
pub(crate) fn principal_json(p: &pb::Principal) -> Value {
    json!({
        "name": p.name,
        "roles": p.roles,
        "bootstrap": p.bootstrap,
        "create_time": time_str(&p.create_time),
        "token_count": p.token_count,
        "grant_count": p.grant_count,
    })
}

/// A principal as aligned fields.
fn principal_text(p: &pb::Principal) -> String {
    let created = if p.bootstrap { "(configuration file)".to_string() } else { time_str(&p.create_time) };
    format!(
        "name:      {}\nroles:     {}\nbootstrap: {}\ncreated:   {}\ntokens:    {}\ngrants:    {}",
        p.name,
        p.roles.join(", "),
        p.bootstrap,
        created,
        p.token_count,
        p.grant_count
    )
}

/// `principal list` as a table.
fn principals_text(ps: &[pb::Principal]) -> String {
    if ps.is_empty() {
        return "no principals".to_string();
    }
    let width = ps.iter().map(|p| p.name.len()).max().unwrap_or(0).max(4);
    let row = |name: &str, roles: &str, source: &str, tokens: &str, grants: &str, created: &str| {
        format!("{name:<width$}  {roles:<20} {source:<9} {tokens:>6} {grants:>6}  {created}")
    };
    let header = row("NAME", "ROLES", "SOURCE", "TOKENS", "GRANTS", "CREATED");
    let rows = ps.iter().map(|p| {
        row(
            &p.name,
            &p.roles.join(","),
            if p.bootstrap { "bootstrap" } else { "runtime" },
            &p.token_count.to_string(),
            &p.grant_count.to_string(),
            if p.bootstrap { "-".to_string() } else { time_str(&p.create_time) }.as_str(),
        )
    });
    std::iter::once(header).chain(rows).collect::<Vec<_>>().join("\n")
}

impl ClientCommand for PrincipalArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut access = c.access();
        match self.command {
            PrincipalCommand::Create { name, roles } => {
                let roles = roles.iter().map(|r| r.as_str().to_string()).collect();
                let p = access
                    .create_principal(pb::CreatePrincipalRequest { name, roles })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner()
                    .principal
                    .unwrap_or_default();
                print(output, principal_json(&p), principal_text(&p));
            }
            PrincipalCommand::List => {
                let r = access
                    .list_principals(pb::ListPrincipalsRequest {})
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json =
                    json!({ "principals": r.principals.iter().map(principal_json).collect::<Vec<_>>() });
                print(output, json, principals_text(&r.principals));
            }
            PrincipalCommand::Delete { name } => {
                access
                    .delete_principal(pb::DeletePrincipalRequest { name: name.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?;
                print(
                    output,
                    json!({ "deleted": name }),
                    format!("deleted principal {name} with its tokens and grants"),
                );
            }
        }
        Ok(())
    }
}
