//! `keyward key ...`: create, describe, list and change keys (state,
//! rotation, deletion). Per-version commands are in [`super::version`].

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Client, ClientFlags, Connection};
use super::input::{parse_pair, rfc3339};
use super::render::{key_json, key_text, keys_text, print, Output};
use super::version::VersionCommand;
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward key ...`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The key command.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `keyward key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key.
    Create {
        /// Alias to create with it (alias/<name>).
        #[arg(long)]
        alias: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Label k=v (repeatable).
        #[arg(long = "label", value_parser = parse_pair)]
        labels: Vec<(String, String)>,
        /// Rotation policy.
        #[command(flatten)]
        rotation: RotationArgs,
    },
    /// Set the rotation policy (a period, a usage cap, or both); without
    /// options it clears the policy. Manual rotation does not move the schedule.
    RotationPolicy {
        /// Key id or alias.
        key: String,
        /// The policy.
        #[command(flatten)]
        rotation: RotationArgs,
    },
    /// Show a key.
    Describe {
        /// Key id or alias.
        key: String,
    },
    /// List keys.
    List {
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Continue from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Add a new primary version.
    Rotate {
        /// Key id or alias.
        key: String,
    },
    /// Enable a key.
    Enable {
        /// Key id or alias.
        key: String,
    },
    /// Disable a key (every crypto operation is refused until enabled).
    Disable {
        /// Key id or alias.
        key: String,
    },
    /// Schedule deletion: unusable at once, material erased after the window.
    ScheduleDeletion {
        /// Key id or alias.
        key: String,
        /// Days, 7 to 30.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(7..=30))]
        days: u32,
    },
    /// Cancel a scheduled deletion (the key comes back disabled).
    CancelDeletion {
        /// Key id or alias.
        key: String,
    },
    /// Manage one version of a key.
    #[command(subcommand)]
    Version(VersionCommand),
}

/// Rotation policy options.
#[derive(Debug, Args)]
pub struct RotationArgs {
    /// Rotate every PERIOD (at least 1h), e.g. 90d, 720h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rotation_period: Option<Duration>,
    /// First scheduled rotation (RFC 3339; default: one period from now).
    #[arg(long)]
    pub next_rotation: Option<String>,
    /// Rotate before a version seals more than N (encryptions plus data keys).
    #[arg(long)]
    pub max_encryptions_per_version: Option<u64>,
}

/// The rotation fields of CreateKey and UpdateRotationPolicy.
struct Rotation {
    period: Option<prost_types::Duration>,
    next: Option<prost_types::Timestamp>,
    max_encryptions_per_version: u64,
}

impl RotationArgs {
    fn fields(&self) -> Result<Rotation, CliError> {
        let period = self.rotation_period.map(|d| prost_types::Duration {
            seconds: d.as_secs().min(i64::MAX as u64) as i64,
            nanos: d.subsec_nanos() as i32,
        });
        Ok(Rotation {
            period,
            next: rfc3339("next-rotation", &self.next_rotation)?,
            max_encryptions_per_version: self.max_encryptions_per_version.unwrap_or(0),
        })
    }
}

impl ClientCommand for KeyArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command; prints the key it returns (or the list).
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut keys = c.keys();
        let key = match self.command {
            KeyCommand::Version(v) => return v.run(&c, output).await,
            KeyCommand::List { page_size, page_token } => {
                let r = keys
                    .list_keys(pb::ListKeysRequest { page_size, page_token })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json = json!({
                    "keys": r.keys.iter().map(key_json).collect::<Vec<_>>(),
                    "next_page_token": r.next_page_token,
                });
                print(output, json, keys_text(&r));
                return Ok(());
            }
            KeyCommand::Create { alias, description, labels, rotation } => {
                let r = rotation.fields()?;
                keys.create_key(pb::CreateKeyRequest {
                    alias: alias.unwrap_or_default(),
                    description,
                    labels: labels.into_iter().collect(),
                    rotation_period: r.period,
                    next_rotation_time: r.next,
                    max_encryptions_per_version: r.max_encryptions_per_version,
                })
                .await
                .map(|r| r.into_inner().key)
            }
            KeyCommand::RotationPolicy { key, rotation } => {
                let r = rotation.fields()?;
                keys.update_rotation_policy(pb::UpdateRotationPolicyRequest {
                    key_id: key,
                    rotation_period: r.period,
                    next_rotation_time: r.next,
                    max_encryptions_per_version: r.max_encryptions_per_version,
                })
                .await
                .map(|r| r.into_inner().key)
            }
            KeyCommand::Describe { key } => {
                keys.describe_key(pb::DescribeKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
            }
            KeyCommand::Rotate { key } => {
                keys.rotate_key(pb::RotateKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
            }
            KeyCommand::Enable { key } => {
                keys.enable_key(pb::EnableKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
            }
            KeyCommand::Disable { key } => {
                keys.disable_key(pb::DisableKeyRequest { key_id: key }).await.map(|r| r.into_inner().key)
            }
            KeyCommand::ScheduleDeletion { key, days } => keys
                .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                    key_id: key,
                    pending_window_days: days,
                })
                .await
                .map(|r| r.into_inner().key),
            KeyCommand::CancelDeletion { key } => keys
                .cancel_key_deletion(pb::CancelKeyDeletionRequest { key_id: key })
                .await
                .map(|r| r.into_inner().key),
        }
        .map_err(|s| c.rpc(s))?
        .unwrap_or_default();
        print(output, key_json(&key), key_text(&key));
        Ok(())
    }
}
