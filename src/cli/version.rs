//! `keyward key version ...`: one version of a key (enable, disable,
//! destruction, compromise) and the per-version usage list.

use clap::Subcommand;

use super::client::Client;
use super::render::{key_json, key_text, print, versions_json, versions_text, Output};
use super::CliError;
use crate::pb;

/// `keyward key version ...`.
#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// Disable a version (it refuses Decrypt).
    Disable {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Enable a disabled version.
    Enable {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Schedule a version's destruction.
    ScheduleDestruction {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
        /// Days, 1 to 365.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: u32,
    },
    /// Restore a version scheduled for destruction (it comes back disabled).
    Restore {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// Mark a version compromised (one way): its ciphertexts then open only
    /// through ReEncrypt (`keyward rewrap`), never Decrypt.
    Compromise {
        /// Key id or alias.
        key: String,
        /// Version number.
        version: u32,
    },
    /// List a key's versions with their state and usage counts.
    List {
        /// Key id or alias.
        key: String,
    },
}

impl VersionCommand {
    /// Runs the command over `c`; prints the key it returns (or the list).
    pub(crate) async fn run(self, c: &Client, output: Output) -> Result<(), CliError> {
        let mut keys = c.keys();
        let key = match self {
            VersionCommand::List { key } => {
                let r = keys
                    .list_key_versions(pb::ListKeyVersionsRequest { key_id: key })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                print(output, versions_json(&r), versions_text(&r));
                return Ok(());
            }
            VersionCommand::Disable { key, version } => keys
                .disable_key_version(pb::DisableKeyVersionRequest { key_id: key, version })
                .await
                .map(|r| r.into_inner().key),
            VersionCommand::Enable { key, version } => keys
                .enable_key_version(pb::EnableKeyVersionRequest { key_id: key, version })
                .await
                .map(|r| r.into_inner().key),
            VersionCommand::ScheduleDestruction { key, version, days } => keys
                .schedule_key_version_destruction(pb::ScheduleKeyVersionDestructionRequest {
                    key_id: key,
                    version,
                    pending_window_days: days,
                })
                .await
                .map(|r| r.into_inner().key),
            VersionCommand::Restore { key, version } => keys
                .restore_key_version(pb::RestoreKeyVersionRequest { key_id: key, version })
                .await
                .map(|r| r.into_inner().key),
            VersionCommand::Compromise { key, version } => keys
                .mark_key_version_compromised(pb::MarkKeyVersionCompromisedRequest { key_id: key, version })
                .await
                .map(|r| r.into_inner().key),
        }
        .map_err(|s| c.rpc(s))?
        .unwrap_or_default();
        print(output, key_json(&key), key_text(&key));
        Ok(())
    }
}
