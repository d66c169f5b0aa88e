//! `keyward root-key ...`: `create` writes a fresh random root key file
//! (mode 0600, never overwriting); `rotate` rewrites everything the root key
//! protects under a new one, offline on a stopped server's data folder, or
//! with `--online` on a running server (admin).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Client, ClientArgs, ClientFlags};
use super::render::{print, Output};
use super::CliError;
use crate::config::create_root_key_file;
use crate::pb;

/// `keyward root-key ...`.
#[derive(Debug, Subcommand)]
pub enum RootKeyCommand {
    /// Write a new random root key to FILE (mode 0600; never overwrites).
    Create {
        /// Where to write it.
        file: PathBuf,
    },
    /// Rotate the root key: re-wrap every version secret and the audit
    /// signing key under a new root key and write its check value, in one
    /// crash-safe write. Afterwards the old root key no longer opens the
    /// store, and every ciphertext made before still decrypts. Offline (the
    /// server stopped) by default; --online asks a running server (admin).
    Rotate(Box<RotateArgs>),
}

/// `keyward root-key rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The server's configuration file (its data_dir and [root_key]).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data folder (overrides the configuration's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// kind = "file" without --config: the current root key file.
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
    /// kind = "file": the new root key file (made if it does not exist; with
    /// --online, a path on the server's machine, made by `root-key create`).
    #[arg(long)]
    pub new_root_key_file: Option<PathBuf>,
    /// kind = "shamir": how many new shares to make (the current ones are
    /// read from a prompt or stdin, one per line).
    #[arg(long, requires = "threshold")]
    pub shares: Option<u32>,
    /// kind = "shamir": how many of the new shares rebuild the new root key.
    #[arg(long, requires = "shares")]
    pub threshold: Option<u32>,
    /// Ask the running server (RotateRootKey; admin) instead of working offline.
    #[arg(long, conflicts_with_all = ["config", "data_dir", "root_key_file", "shares", "threshold"])]
    pub online: bool,
    /// Connection flags (--online).
    #[command(flatten)]
    pub flags: ClientFlags,
}

impl RootKeyCommand {
    /// Runs the command.
    pub fn dispatch(self, top: &ClientArgs) -> std::process::ExitCode {
        match self {
            RootKeyCommand::Create { file } => super::finish(create(&file)),
            RootKeyCommand::Rotate(a) => {
                let a = *a;
                let (conn, output) = top.with(&a.flags);
                if a.online {
                    let Some(rt) = super::runtime() else { return std::process::ExitCode::FAILURE };
                    super::finish(rt.block_on(online(a, &conn, output)))
                } else {
                    super::finish(offline(a, output))
                }
            }
        }
    }
}

fn create(file: &std::path::Path) -> Result<(), CliError> {
    create_root_key_file(file).map_err(|e| CliError::Input(e.to_string()))?;
    println!(
        "wrote a new root key to {} (mode 0600). Back it up: without it no key can be recovered.",
        file.display()
    );
    Ok(())
}

fn report(kind: &str, d: &keyward_core::RootRotation, next_step: &str) -> (serde_json::Value, String) {
    let json = json!({
        "kind": kind,
        "keys": d.keys,
        "versions": d.versions,
        "aliases": d.aliases,
        "access_records": d.access,
        "next_step": next_step,
    });
    let text = format!(
        "root key rotated: {} keys ({} version secrets) re-wrapped, {} aliases and {} access records re-tagged. \
         The old root key no longer opens this store.\nNext: {next_step}",
        d.keys, d.versions, d.aliases, d.access
    );
    (json, text)
}

async fn online(a: RotateArgs, conn: &super::Connection, output: Output) -> Result<(), CliError> {
    let c = Client::connect(conn).await?;
    let req = pb::RotateRootKeyRequest {
        new_root_key_file: a.new_root_key_file.map(|p| p.display().to_string()).unwrap_or_default(),
    };
    let r = c.operator().rotate_root_key(req).await.map_err(|s| c.rpc(s))?.into_inner();
    let d = keyward_core::RootRotation {
        keys: r.keys as usize,
        versions: r.versions as usize,
        aliases: r.aliases as usize,
        access: r.access_records as usize,
    };
    let (json, text) = report(&r.kind, &d, &r.next_step);
    print(output, json, text);
    Ok(())
}

fn offline(a: RotateArgs, output: Output) -> Result<(), CliError> {
    use crate::config::{Overrides, RootKeySource, ServerConfig};
    use crate::seal::rotate::{NewRoot, Rotated};
    let input = |e: String| CliError::Input(e);
    let overrides = Overrides {
        config: a.config.clone(),
        data_dir: a.data_dir.clone(),
        root_key_file: a.root_key_file.clone(),
        ..Default::default()
    };
    let mut config = match &a.config {
        Some(_) => ServerConfig::load(&overrides),
        // No configuration: only the folder and its key matter here.
        None => ServerConfig::load(&Overrides { dev: true, ..overrides }),
    }
    .map_err(|e| input(e.to_string()))?;
    if a.config.is_none() {
        match crate::seal::SealFile::read(&config.data_dir).map_err(input)? {
            Some(f) if f.kind == "shamir" => config.root_key = RootKeySource::Shamir,
            Some(f) => {
                return Err(input(format!(
                    "{} is sealed by kind {:?}: pass --config with its [root_key] settings",
                    config.data_dir.display(),
                    f.kind
                )))
            }
            None if a.root_key_file.is_none() => {
                return Err(input(
                    "pass --config, or --data-dir with --root-key-file (the current key)".into(),
                ))
            }
            None => {}
        }
    }
    let kind = config.root_key.kind();
    let new = match (a.new_root_key_file, a.shares.zip(a.threshold)) {
        (Some(f), None) => NewRoot::File(f),
        (None, Some((n, k))) => NewRoot::Shares(n, k),
        (None, None) => NewRoot::Hsm,
        (Some(_), Some(_)) => {
            return Err(input("--new-root-key-file is for a key file, --shares for shares: not both".into()))
        }
    };
    let new_file = match &new {
        NewRoot::File(f) => Some(f.clone()),
        _ => None,
    };
    crate::hardening::apply();
    let dir = config.data_dir.display().to_string();
    let mut ask = |init: &crate::seal::ShamirInit| read_shares(init);
    let mut show = |shares: &[crate::seal::shamir::Share], seal: &crate::seal::SealFile| {
        let done = crate::seal::init::Initialized { seal: seal.clone(), shares: shares.to_vec() };
        super::operator::show_as(&done, &dir, output, "rotated the root key of")
    };
    let next_step = match (&new_file, kind) {
        (Some(f), _) => format!(
            "point root_key_file (or [root_key] file) at {} before starting the server, then destroy the old key file: backups made under it become unreadable",
            f.display()
        ),
        (None, "shamir") => "start the server and unseal it with the new shares; destroy the old shares: backups made under them become unreadable".into(),
        _ => "start the server: it unwraps the new root key with the same HSM key".into(),
    };
    match crate::seal::rotate::rotate(&config, new, &mut ask, &mut show).map_err(input)? {
        Rotated::Done(d) => {
            let (json, text) = report(kind, &d, &next_step);
            print(output, json, text);
        }
        Rotated::Already => print(
            output,
            json!({ "kind": kind, "already_rotated": true, "next_step": next_step }),
            format!("the store already opens with the new root key (an earlier run finished its write); nothing left to do.\nNext: {next_step}"),
        ),
    }
    Ok(())
}

/// The current shares: K of them from a prompt (not echoed) or stdin lines.
fn read_shares(init: &crate::seal::ShamirInit) -> Result<Vec<crate::seal::shamir::Share>, String> {
    let k = usize::from(init.threshold);
    let mut out = Vec::with_capacity(k);
    let tty = std::io::stdin().is_terminal();
    for i in 0..k {
        let line = zeroize::Zeroizing::new(if tty {
            let _ = std::io::stderr().flush();
            rpassword::prompt_password(format!("current key share {} of {k} (not echoed): ", i + 1))
                .map_err(|e| format!("cannot read a share: {e}"))?
        } else {
            let mut l = String::with_capacity(256);
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut l).map_err(|e| e.to_string())?;
            l
        });
        if line.trim().is_empty() {
            return Err(format!("{k} current shares are needed (initialization {}); got {i}", init.init_id));
        }
        out.push(crate::seal::shamir::Share::parse(&line).map_err(|e| e.to_string())?);
    }
    Ok(out)
}
