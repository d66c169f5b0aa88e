//! `keyward access-key ...`: the credentials AWS SigV4 clients sign with on
//! the AWS KMS edge (AccessService, admin role). `create` prints the secret
//! once; `revoke` takes effect for the very next request.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientFlags, Connection};
use super::render::{print, time_str, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward access-key ...`.
#[derive(Debug, Args)]
pub struct AccessKeyArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The access-key command.
    #[command(subcommand)]
    pub command: AccessKeyCommand,
}

/// The `keyward access-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Create an access key for a principal: prints the access key id and the
    /// secret access key, once (set them as AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY).
    Create {
        /// The principal (configuration file or runtime) it acts as.
        #[arg(long)]
        principal: String,
    },
    /// List access keys (never their secrets).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke an access key: the next request signed with it is refused.
    Revoke {
        /// The access key id (KWAK...).
        access_key_id: String,
    },
}

/// An access key as JSON.
fn access_key_json(k: &pb::AccessKeyInfo) -> Value {
    json!({
        "access_key_id": k.access_key_id,
        "principal": k.principal,
        "create_time": time_str(&k.create_time),
    })
}

/// `access-key list` as a table.
fn access_keys_text(ks: &[pb::AccessKeyInfo]) -> String {
    if ks.is_empty() {
        return "no access keys".to_string();
    }
    let width = ks.iter().map(|k| k.principal.len()).max().unwrap_or(0).max(9);
    let header = format!("{:<20}  {:<width$}  CREATED", "ACCESS KEY ID", "PRINCIPAL");
    let rows = ks
        .iter()
        .map(|k| format!("{:<20}  {:<width$}  {}", k.access_key_id, k.principal, time_str(&k.create_time)));
    std::iter::once(header).chain(rows).collect::<Vec<_>>().join("\n")
}

impl ClientCommand for AccessKeyArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut access = c.access();
        match self.command {
            AccessKeyCommand::Create { principal } => {
                let r = access
                    .create_access_key(pb::CreateAccessKeyRequest { principal })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let info = r.info.unwrap_or_default();
                let mut json = access_key_json(&info);
                json["secret_access_key"] = json!(r.secret_access_key);
                let text = format!(
                    "access key id:     {}\nsecret access key: {}\nprincipal:         {}\ncreated:           {}\n\
                     The secret is shown only now: store it (AWS_SECRET_ACCESS_KEY).",
                    info.access_key_id,
                    r.secret_access_key,
                    info.principal,
                    time_str(&info.create_time)
                );
                print(output, json, text);
            }
            AccessKeyCommand::List { principal } => {
                let r = access
                    .list_access_keys(pb::ListAccessKeysRequest { principal: principal.unwrap_or_default() })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json =
                    json!({ "access_keys": r.access_keys.iter().map(access_key_json).collect::<Vec<_>>() });
                print(output, json, access_keys_text(&r.access_keys));
            }
            AccessKeyCommand::Revoke { access_key_id } => {
                access
                    .revoke_access_key(pb::RevokeAccessKeyRequest { access_key_id: access_key_id.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?;
                print(
                    output,
                    json!({ "revoked": access_key_id }),
                    format!("revoked access key {access_key_id}"),
                );
            }
        }
        Ok(())
    }
}
