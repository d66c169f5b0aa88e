//! `keyward operator ...`: the server's seal. `init` (offline, on an empty
//! data folder) makes the root key and splits it into shares or wraps it
//! with an HSM key; `unseal`, `seal` and `status` talk to a running server.

use std::io::{BufRead, IsTerminal, Read, Write};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, ClientArgs, ClientFlags, Connection};
use super::render::{print, Output};
use super::CliError;
use crate::pb;

/// `keyward operator ...`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Connection flags (unseal, seal, status).
    #[command(flatten)]
    pub flags: ClientFlags,
    /// The operator command.
    #[command(subcommand)]
    pub command: OperatorCommand,
}

/// The `keyward operator` subcommands.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Initialize an empty data folder (offline): generate its root key and
    /// split it into key shares (`[root_key] kind = "shamir"`, or
    /// --shares/--threshold alone) or wrap it with the HSM's key
    /// (`kind = "pkcs11"`). The shares are printed once and never stored.
    #[cfg(feature = "server")]
    Init(InitArgs),
    /// Offer one key share to a sealed server, read from a prompt that does
    /// not echo (or one line of stdin, e.g. `keyward operator unseal < share`;
    /// never from the command line, where other users could see it). Prints
    /// the progress. A file or HSM server sealed by an admin takes no share:
    /// this reads its root key again (admin of the configuration file).
    Unseal {
        /// Forget the shares given so far instead (admin of the configuration file).
        #[arg(long)]
        reset: bool,
    },
    /// Seal the server (admin): every key is dropped from memory until it is unsealed again.
    Seal,
    /// Whether the server is sealed, and how far unsealing has come.
    Status,
}

/// `keyward operator init`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The server's configuration file (its data_dir and [root_key]).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The data folder (overrides the configuration's).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// How many key shares to make (Shamir), 1..=255.
    #[arg(long, requires = "threshold")]
    pub shares: Option<u32>,
    /// How many shares rebuild the root key, 1..=shares (2 or more when there are several).
    #[arg(long, requires = "shares")]
    pub threshold: Option<u32>,
    /// PKCS#11: create the AES wrapping key on the token first (it never leaves the HSM).
    #[arg(long)]
    pub create_hsm_key: bool,
}

/// Shares, progress and the initialization id mean something for Shamir
/// only; a file or HSM server reports whether it is sealed and its kind.
fn status_json(s: &pb::SealStatusResponse) -> Value {
    if s.kind != "shamir" {
        return json!({ "sealed": s.sealed, "kind": s.kind });
    }
    json!({
        "sealed": s.sealed,
        "kind": s.kind,
        "progress": s.progress,
        "threshold": s.threshold,
        "shares": s.shares,
        "init_id": s.init_id,
    })
}

fn status_text(s: &pb::SealStatusResponse) -> String {
    let state = if s.sealed { "sealed" } else { "unsealed" };
    match s.kind.as_str() {
        "shamir" if s.sealed => format!(
            "{state} (shamir, init {}): {} of {} shares given ({} made)",
            s.init_id, s.progress, s.threshold, s.shares
        ),
        "shamir" => {
            format!("{state} (shamir, init {}: {} of {} shares unseal it)", s.init_id, s.threshold, s.shares)
        }
        kind => format!("{state} (root key from {kind})"),
    }
}

/// Reads a share without echoing it (or a line of stdin when it is not a
/// terminal); every copy is zeroized.
fn read_share() -> Result<zeroize::Zeroizing<String>, CliError> {
    // No core dump or ptrace of a process holding a share.
    #[cfg(feature = "server")]
    crate::hardening::apply();
    let raw = zeroize::Zeroizing::new(if std::io::stdin().is_terminal() {
        rpassword::prompt_password("key share (not echoed): ")
            .map_err(|e| CliError::Input(format!("cannot read the share: {e}")))?
    } else {
        // Reserved up front: a share is ~100 characters, so no reallocation leaves a copy.
        let mut line = String::with_capacity(256);
        std::io::stdin()
            .lock()
            .take(255)
            .read_line(&mut line)
            .map_err(|e| CliError::Input(format!("cannot read the share from stdin: {e}")))?;
        line
    });
    let share = zeroize::Zeroizing::new(raw.trim().to_string());
    if share.is_empty() {
        return Err(CliError::Input("no share given (on the prompt or stdin)".into()));
    }
    Ok(share)
}

impl OperatorArgs {
    /// Runs the command: `init` here, the others against the server.
    pub fn dispatch(self, top: &ClientArgs) -> std::process::ExitCode {
        #[cfg(feature = "server")]
        if let OperatorCommand::Init(a) = self.command {
            let (_, output) = top.with(&self.flags);
            return super::finish(init(a, output));
        }
        super::client(top, self)
    }
}

#[cfg(feature = "server")]
fn init(a: InitArgs, output: Output) -> Result<(), CliError> {
    if a.config.is_none() && a.shares.is_none() {
        return Err(CliError::Input(
            "keyward operator init needs --config (with a [root_key] table of kind \"shamir\" or \"pkcs11\") or --shares N --threshold K (and --data-dir)".into(),
        ));
    }
    let overrides = crate::config::Overrides { config: a.config, data_dir: a.data_dir, ..Default::default() };
    // Shares without a configuration: Shamir on that folder.
    let mut config = crate::config::ServerConfig::load(&overrides)
        .or_else(|e| match (&overrides.config, a.shares) {
            (None, Some(_)) => {
                let dev = crate::config::Overrides { dev: true, ..overrides.clone() };
                crate::config::ServerConfig::load(&dev)
            }
            _ => Err(e),
        })
        .map_err(|e| CliError::Input(e.to_string()))?;
    if overrides.config.is_none() && a.shares.is_some() {
        config.root_key = crate::config::RootKeySource::Shamir;
    }
    let split = a.shares.zip(a.threshold);
    // The root key and the shares are about to be in this process's memory.
    crate::hardening::apply();
    let dir = config.data_dir.display().to_string();
    // Shown before the folder is marked initialized: if they cannot be
    // shown, the init does not count.
    crate::seal::init::init(&config, split, a.create_hsm_key, &mut |done| show(done, &dir, output))
        .map_err(CliError::Input)?;
    Ok(())
}

/// Prints what init made; for shares, written once from zeroized buffers
/// and flushed, so a failure to show them fails the init.
#[cfg(feature = "server")]
pub(crate) fn show(done: &crate::seal::init::Initialized, dir: &str, output: Output) -> Result<(), String> {
    show_as(done, dir, output, "initialized", false)
}

/// As [`show`], saying what was done (`initialized`, `rotated the root key of`).
/// With `leave_open`, the JSON object of shares is left open (its last line
/// `  ],`): the caller adds the fields of what followed and closes it
/// ([`close_json`]), so `--output json` prints one document.
#[cfg(feature = "server")]
pub(crate) fn show_as(
    done: &crate::seal::init::Initialized,
    dir: &str,
    output: Output,
    what: &str,
    leave_open: bool,
) -> Result<(), String> {
    use zeroize::Zeroizing;
    if done.seal.kind != "shamir" {
        let label = done.seal.key_label.as_deref().unwrap_or("");
        let json = json!({ "data_dir": dir, "kind": done.seal.kind, "hsm_key_label": label });
        let text = format!(
            "initialized {dir}: its root key is stored wrapped by HSM key {label:?} (seal.json). \
             The server unwraps it at start (auto-unseal); without the HSM the folder cannot be opened."
        );
        print(output, json, text);
        return Ok(());
    }
    let texts: Vec<Zeroizing<String>> = done.shares.iter().map(|s| s.to_text()).collect();
    let k = done.seal.threshold.unwrap_or(0);
    let init_id = done.seal.init_id.as_deref().unwrap_or("");
    // Reserved up front: no reallocation leaves a copy of a share behind.
    let mut out = Zeroizing::new(String::with_capacity(1024 + 128 * texts.len()));
    match output {
        Output::Json => {
            let shares: Vec<String> = texts.iter().map(|t| format!("{:?}", t.as_str())).collect();
            let shares = Zeroizing::new(shares);
            out.push_str(&format!(
                "{{\n  \"data_dir\": {},\n  \"kind\": \"shamir\",\n  \"init_id\": \"{init_id}\",\n  \"threshold\": {k},\n  \"shares\": [\n",
                serde_json::Value::from(dir)
            ));
            for (i, sh) in shares.iter().enumerate() {
                out.push_str("    ");
                out.push_str(sh);
                out.push_str(if i + 1 < shares.len() { ",\n" } else { "\n" });
            }
            out.push_str(if leave_open { "  ],\n" } else { "  ]\n}\n" });
            let mut shares = shares;
            for s in shares.iter_mut() {
                zeroize::Zeroize::zeroize(s);
            }
        }
        Output::Table => {
            if texts.len() == 1 {
                out.push_str(&format!(
                    "{what} {dir} (init {init_id}): 1 key share, which unseals it.\n\
                     It is shown only once and stored nowhere: without it, every key in this folder is lost.\n"
                ));
            } else {
                out.push_str(&format!(
                    "{what} {dir} (init {init_id}): {} key shares, any {k} of which unseal it.\n\
                     Hand each share to a different person now. They are shown only once and stored nowhere:\n\
                     with fewer than {k} of them, every key in this folder is lost.\n",
                    texts.len(),
                ));
            }
            if texts.len() == 1 {
                out.push_str(
                    "With one share, the share IS the root key: keep it as you would keep the key itself.\n",
                );
            }
            for (i, t) in texts.iter().enumerate() {
                out.push_str(&format!("\nshare {}: ", i + 1));
                out.push_str(t);
            }
            out.push_str(&format!(
                "\n\nStart the server with [root_key] kind = \"shamir\"; it starts sealed. Unseal it with \
                 `keyward operator unseal`, {k} times, one share each (on the prompt or stdin).\n"
            ));
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| {
        format!(
            "the shares could not be shown ({e}); nothing was initialized: delete {dir} and run init again"
        )
    })
}

/// Ends a JSON object [`show_as`] left open: `fields` (none named as one
/// printed already), then `}`.
#[cfg(feature = "server")]
pub(crate) fn close_json(fields: &serde_json::Map<String, Value>) {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        out.push_str(&format!("  {}: {}", Value::from(k.as_str()), v));
        out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush());
}

impl super::ClientCommand for OperatorArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let mut op = c.operator();
        let status = match self.command {
            #[cfg(feature = "server")]
            OperatorCommand::Init(_) => unreachable!("dispatched offline"),
            OperatorCommand::Unseal { reset } => {
                let mut share = if reset {
                    zeroize::Zeroizing::new(String::new())
                } else {
                    // A file or HSM server (sealed by an admin) takes no share.
                    let s =
                        op.seal_status(pb::SealStatusRequest {}).await.map_err(|s| c.rpc(s))?.into_inner();
                    if s.kind == "shamir" && s.sealed {
                        read_share()?
                    } else {
                        zeroize::Zeroizing::new(String::new())
                    }
                };
                // Moved into the request, not copied (tonic's buffers are its own).
                let req = pb::UnsealRequest { share: std::mem::take(&mut *share), reset };
                op.unseal(req).await.map_err(|s| c.rpc(s))?.into_inner()
            }
            OperatorCommand::Seal => op.seal(pb::SealRequest {}).await.map_err(|s| c.rpc(s))?.into_inner(),
            OperatorCommand::Status => {
                op.seal_status(pb::SealStatusRequest {}).await.map_err(|s| c.rpc(s))?.into_inner()
            }
        };
        print(output, status_json(&status), status_text(&status));
        Ok(())
    }
}
