//! `keyward alias ...`: point aliases at keys and delete them.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Client, ClientFlags, Connection};
use super::render::{key_json, key_text, print, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward alias ...`.
#[derive(Debug, Args)]
pub struct AliasArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The alias command.
    #[command(subcommand)]
    pub command: AliasCommand,
}

/// The `keyward alias` subcommands.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point a new alias at a key.
    Create {
        /// alias/<name>.
        alias: String,
        /// Key id or alias.
        key: String,
    },
    /// Delete an alias.
    Delete {
        /// alias/<name>.
        alias: String,
    },
}

impl ClientCommand for AliasArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut keys = c.keys();
        match self.command {
            AliasCommand::Create { alias, key } => {
                let k = keys
                    .create_alias(pb::CreateAliasRequest { alias, key_id: key })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner()
                    .key
                    .unwrap_or_default();
                print(output, key_json(&k), key_text(&k));
            }
            AliasCommand::Delete { alias } => {
                keys.delete_alias(pb::DeleteAliasRequest { alias: alias.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?;
                print(output, json!({ "deleted": alias }), format!("deleted {alias}"));
            }
        }
        Ok(())
    }
}
