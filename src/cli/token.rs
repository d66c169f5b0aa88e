//! `keyward token ...`: bearer tokens.
//!
//! `token create` without `--ttl` or `--server-side` works offline, as it
//! always has: a new random `kw_...` token, shown once, and the
//! `token_sha256` line for the server's `[[principals]]` entry (this needs
//! the `config` feature, for the hash). With `--ttl` or `--server-side` it
//! asks a server (AccessService, admin role) for a runtime `kwt_...` token
//! that expires; `list`, `revoke` and `revoke-all` manage those.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientFlags, Connection};
use super::render::{print, time_str, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// The principal an offline token is printed for when none is named.
const OFFLINE_PRINCIPAL: &str = "my-service";

/// `keyward token ...`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Connection flags (unused by an offline `token create`).
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The token command.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The `keyward token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. Offline by default: print a new random `kw_...` token
    /// once, and the `token_sha256` line to paste into the configuration
    /// file. With --ttl or --server-side: create a runtime token for a
    /// principal on the server (admin role), shown once, that expires.
    Create {
        /// The principal it is for. Offline it is only printed as a reminder
        /// (default my-service); on the server it is required.
        #[arg(long)]
        principal: Option<String>,
        /// Create the token on the server, living TTL (e.g. 15m, 1h,
        /// 2h30m; at most the server's max_token_ttl). Implies --server-side.
        #[arg(long, value_parser = parse_ttl, requires = "principal")]
        ttl: Option<Duration>,
        /// Create the token on the server with the server's default time to
        /// live (1h unless configured) instead of printing a config-file token.
        #[arg(long, requires = "principal")]
        server_side: bool,
    },
    /// List runtime tokens (never the tokens themselves): id, principal,
    /// creation, expiry and last use.
    List {
        /// Only this principal's tokens.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke a runtime token by its id; refused from the very next request.
    Revoke {
        /// The token id (from `token list` or `token create`).
        token_id: String,
    },
    /// Revoke every runtime token of a principal; prints how many.
    RevokeAll {
        /// The principal.
        #[arg(long, required = true)]
        principal: String,
    },
}

/// A `--ttl` value: a humantime duration of more than zero.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 15m, 1h, 2h30m)"))?;
    if d.is_zero() {
        return Err("the time to live must be more than 0 (e.g. 15m, 1h)".into());
    }
    Ok(d)
}

/// A token's details as JSON (never the token).
pub(crate) fn token_info_json(t: &pb::TokenInfo) -> Value {
    json!({
        "token_id": t.token_id,
        "principal": t.principal,
        "create_time": time_str(&t.create_time),
        "expire_time": time_str(&t.expire_time),
        "last_used_time": time_str(&t.last_used_time),
    })
}

/// `token list` as a table.
fn tokens_text(ts: &[pb::TokenInfo]) -> String {
    if ts.is_empty() {
        return "no tokens".to_string();
    }
    let width = ts.iter().map(|t| t.principal.len()).max().unwrap_or(0).max(9);
    let header = format!(
        "{:<36}  {:<width$}  {:<24}  {:<24}  LAST USED",
        "TOKEN ID", "PRINCIPAL", "CREATED", "EXPIRES"
    );
    let rows = ts.iter().map(|t| {
        let last = time_str(&t.last_used_time);
        format!(
            "{:<36}  {:<width$}  {:<24}  {:<24}  {}",
            t.token_id,
            t.principal,
            time_str(&t.create_time),
            time_str(&t.expire_time),
            if last.is_empty() { "never" } else { &last }
        )
    });
    std::iter::once(header).chain(rows).collect::<Vec<_>>().join("\n")
}

impl ClientCommand for TokenArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Runs the command (an offline `create` without connecting).
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        if let TokenCommand::Create { principal, ttl: None, server_side: false } = &self.command {
            let principal = principal.as_deref().unwrap_or(OFFLINE_PRINCIPAL);
            return offline(principal, output);
        }
        let c = Client::connect(conn).await?;
        let mut access = c.access();
        match self.command {
            TokenCommand::Create { principal, ttl, .. } => {
                // clap requires --principal with --ttl and --server-side.
                let principal = principal.unwrap_or_default();
                let ttl = ttl.map(|d| prost_types::Duration {
                    seconds: d.as_secs().min(i64::MAX as u64) as i64,
                    nanos: d.subsec_nanos() as i32,
                });
                let r = access
                    .create_token(pb::CreateTokenRequest { principal, ttl })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let token = zeroize::Zeroizing::new(r.token);
                let info = r.info.unwrap_or_default();
                let mut json = token_info_json(&info);
                json["token"] = json!(*token);
                let text = format!(
                    "token (shown once; send it as \"authorization: Bearer <token>\", e.g. --token, and keep it secret):\n  {}\ntoken_id:  {}\nprincipal: {}\ncreated:   {}\nexpires:   {}",
                    *token,
                    info.token_id,
                    info.principal,
                    time_str(&info.create_time),
                    time_str(&info.expire_time)
                );
                print(output, json, text);
            }
            TokenCommand::List { principal } => {
                let r = access
                    .list_tokens(pb::ListTokensRequest { principal: principal.unwrap_or_default() })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let json = json!({ "tokens": r.tokens.iter().map(token_info_json).collect::<Vec<_>>() });
                print(output, json, tokens_text(&r.tokens));
            }
            TokenCommand::Revoke { token_id } => {
                access
                    .revoke_token(pb::RevokeTokenRequest { token_id: token_id.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?;
                print(output, json!({ "revoked": token_id }), format!("revoked token {token_id}"));
            }
            TokenCommand::RevokeAll { principal } => {
                let r = access
                    .revoke_all_tokens(pb::RevokeAllTokensRequest { principal: principal.clone() })
                    .await
                    .map_err(|s| c.rpc(s))?
                    .into_inner();
                let n = r.revoked;
                let text = format!("revoked {n} token{} of {principal}", if n == 1 { "" } else { "s" });
                print(output, json!({ "principal": principal, "revoked": n }), text);
            }
        }
        Ok(())
    }
}

/// An offline token for the configuration file: printed once with its hash.
#[cfg(feature = "config")]
fn offline(principal: &str, output: Output) -> Result<(), CliError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    keyward_crypto::random_bytes(&mut bytes[..])
        .map_err(|_| CliError::Input("system random generator failed".into()))?;
    let token = zeroize::Zeroizing::new(format!("kw_{}", hex::encode(&bytes[..])));
    let hash = crate::auth::token_hash_hex(&token);
    match output {
        Output::Json => {
            let json = json!({ "token": *token, "principal": principal, "token_sha256": hash });
            print(output, json, String::new());
        }
        Output::Table => {
            println!("token (shown once; give it to {principal} and keep it secret):\n  {}", *token);
            println!("add to the [[principals]] entry named {principal:?}:");
            println!("  token_sha256 = [\"{hash}\"]");
        }
    }
    Ok(())
}

/// Without the `config` feature there is no hash for the configuration file.
#[cfg(not(feature = "config"))]
fn offline(_principal: &str, _output: Output) -> Result<(), CliError> {
    Err(CliError::Input(
        "this keyward was built without the config feature, so it cannot make configuration-file tokens; \
         create a runtime token on a server with --ttl or --server-side"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_values() {
        assert_eq!(parse_ttl("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_ttl("0s").unwrap_err().contains("more than 0"));
        assert!(parse_ttl("banana").unwrap_err().contains("15m"));
    }
}
