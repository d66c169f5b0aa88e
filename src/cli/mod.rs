//! The `keyward` command line: the `server` subcommand, operator helpers
//! (`root-key`, `token`, `completions`) and a gRPC client for every RPC, with
//! readable output and `--output json`.
//!
//! One module per command family; each family's arguments type has its own
//! `run`, and [`Cli::run`] is the one dispatch. Shared parts: [`client`]
//! (connection flags, channel, checksums), [`render`] (table and JSON
//! output), [`input`] (parsing what the user typed).
//!
//! The client commands need only the generated code and [`crate::checksum`].
//! The commands that need the server's modules (`server`, `root-key`,
//! offline `audit verify --data-dir`) are behind the `server` feature, and
//! the offline `token create` (the hash for the configuration file) behind
//! `config`; nothing on the server side imports this module.

mod access_key;
mod alias;
mod audit;
mod backup;
mod client;
mod cluster;
mod completions;
mod crypto;
mod data_key;
mod grant;
mod input;
mod key;
mod operator;
mod principal;
mod render;
mod rewrap;
#[cfg(feature = "server")]
mod root_key;
#[cfg(feature = "server")]
mod server;
mod token;
mod version;

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use access_key::{AccessKeyArgs, AccessKeyCommand};
pub use alias::{AliasArgs, AliasCommand};
pub use audit::{AuditArgs, AuditCommand, AuditExportArgs, AuditFilter, AuditQueryArgs};
pub use backup::{BackupArgs, BackupCommand};
pub use client::{Bearer, ClientArgs, ClientFlags, Connection};
pub use cluster::{ClusterArgs, ClusterCommand};
pub use completions::CompletionsArgs;
pub use crypto::{DecryptArgs, EncryptArgs, ReEncryptArgs};
pub use data_key::{DataKeyArgs, RandomArgs};
pub use grant::{GrantArgs, GrantCommand};
pub use key::{KeyArgs, KeyCommand, RotationArgs};
pub use operator::{OperatorArgs, OperatorCommand};
pub use principal::{PrincipalArgs, PrincipalCommand, RoleName};
pub use render::Output;
pub use rewrap::RewrapArgs;
#[cfg(feature = "server")]
pub use root_key::RootKeyCommand;
pub use token::{TokenArgs, TokenCommand};
pub use version::VersionCommand;

/// Keyward: a key management service over gRPC.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    /// Connection flags of client commands (also accepted after the subcommand).
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    #[cfg(feature = "server")]
    Server(crate::config::Overrides),
    /// Root keys: create a key file; rotate the root key (offline or --online).
    #[cfg(feature = "server")]
    #[command(subcommand, name = "root-key")]
    RootKey(RootKeyCommand),
    /// The server's seal: init (offline: root key into key shares or an HSM),
    /// unseal, seal, status.
    Operator(OperatorArgs),
    /// Backups: create (from a running server), verify and restore (offline).
    Backup(BackupArgs),
    /// Bearer tokens: for the configuration file (offline), or runtime
    /// tokens on the server that expire (create --ttl, list, revoke).
    Token(TokenArgs),
    /// Runtime principals on the server (create, list, delete).
    Principal(PrincipalArgs),
    /// Runtime grants of keys to principals (create, list, revoke).
    Grant(GrantArgs),
    /// Access keys for AWS SigV4 clients on the AWS KMS edge (create, list, revoke).
    AccessKey(AccessKeyArgs),
    /// Create, inspect and change keys.
    Key(KeyArgs),
    /// Create and delete aliases.
    Alias(AliasArgs),
    /// Encrypt up to 4 KiB under a key; prints the ciphertext in base64.
    Encrypt(EncryptArgs),
    /// Decrypt a base64 ciphertext; prints the plaintext.
    Decrypt(DecryptArgs),
    /// Generate a data key under a key.
    DataKey(DataKeyArgs),
    /// Random bytes from the server's CSPRNG, base64.
    Random(RandomArgs),
    /// Re-encrypt a ciphertext under another key without exposing its plaintext.
    ReEncrypt(ReEncryptArgs),
    /// Re-encrypt many ciphertexts (one base64 per line, from a file or
    /// stdin) under a key's current version, streaming; one output line per
    /// input line, failures reported on stderr (their output line is empty).
    Rewrap(RewrapArgs),
    /// Query and verify the key-usage log.
    Audit(AuditArgs),
    /// Cluster mode: the nodes and the sweeper leader (status).
    Cluster(ClusterArgs),
    /// Print a shell completion script, e.g. `keyward completions bash > /etc/bash_completion.d/keyward`.
    Completions(CompletionsArgs),
}

/// A client command failed; printed as `error: ...`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Could not connect.
    #[error("cannot reach keyward at {addr}: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// Transport error.
        source: tonic::transport::Error,
    },
    /// The server refused.
    #[error("{code:?} from {addr}: {message}")]
    Rpc {
        /// Address.
        addr: String,
        /// gRPC code.
        code: tonic::Code,
        /// Server message.
        message: String,
    },
    /// Bad local input.
    #[error("{0}")]
    Input(String),
}

impl Cli {
    /// Runs the parsed command; the exit status says how it went.
    pub fn run(self) -> ExitCode {
        let top = self.client;
        match self.command {
            #[cfg(feature = "server")]
            Command::Server(o) => server::run(&o),
            #[cfg(feature = "server")]
            Command::RootKey(c) => c.dispatch(&top),
            Command::Completions(c) => {
                c.run();
                ExitCode::SUCCESS
            }
            Command::Key(a) => client(&top, a),
            Command::Alias(a) => client(&top, a),
            Command::Encrypt(a) => client(&top, a),
            Command::Decrypt(a) => client(&top, a),
            Command::DataKey(a) => client(&top, a),
            Command::Random(a) => client(&top, a),
            Command::ReEncrypt(a) => client(&top, a),
            Command::Rewrap(a) => client(&top, a),
            Command::Audit(a) => client(&top, a),
            Command::Cluster(a) => client(&top, a),
            Command::Token(a) => client(&top, a),
            Command::Principal(a) => client(&top, a),
            Command::Grant(a) => client(&top, a),
            Command::AccessKey(a) => client(&top, a),
            Command::Operator(a) => a.dispatch(&top),
            Command::Backup(a) => a.dispatch(&top),
        }
    }
}

/// A multi-threaded runtime, or `None` after printing why there is none.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// A command that talks to a server: it carries the connection flags given
/// after it, and runs over the connection they (and the top-level flags) name.
pub(crate) trait ClientCommand: Sized {
    /// The flags given after the subcommand.
    fn flags(&self) -> &ClientFlags;
    /// Runs the command, printing its result in `output` format.
    fn run(self, conn: &Connection, output: Output) -> impl Future<Output = Result<(), CliError>>;
}

/// Runs a client command to completion.
fn client(top: &ClientArgs, command: impl ClientCommand) -> ExitCode {
    let (conn, output) = top.with(command.flags());
    match runtime() {
        Some(rt) => finish(rt.block_on(command.run(&conn, output))),
        None => ExitCode::FAILURE,
    }
}

/// Exit status 0, or 1 after printing the error.
fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_after_the_subcommand_win() {
        let cli = Cli::try_parse_from([
            "keyward",
            "--addr",
            "http://a:1",
            "--output",
            "json",
            "key",
            "list",
            "--addr",
            "http://b:2",
            "--no-crc32c",
        ])
        .unwrap();
        let Command::Key(k) = &cli.command else { panic!("parsed {:?}", cli.command) };
        let (conn, output) = cli.client.with(&k.flags);
        assert_eq!((conn.addr.as_str(), output, conn.checksums), ("http://b:2", Output::Json, false));
        let cli = Cli::try_parse_from(["keyward", "--addr", "http://a:1", "random"]).unwrap();
        let Command::Random(r) = &cli.command else { panic!("parsed {:?}", cli.command) };
        let (conn, output) = cli.client.with(&r.flags);
        assert_eq!((conn.addr.as_str(), output, conn.checksums), ("http://a:1", Output::Table, true));
    }
}
