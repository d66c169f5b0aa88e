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
    /// kind = "pkcs11": destroy an HSM wrapping key this folder's root key
    /// no longer uses (after `rotate --new-hsm-key-label`). Every root key
    /// it wrapped, in backups made before that rotation, can never be
    /// unwrapped again: this is what makes a destruction final. Refuses the
    /// key the folder's root key is wrapped by.
    DestroyHsmKey(DestroyHsmKeyArgs),
}

/// `keyward root-key destroy-hsm-key`.
#[derive(Debug, Args)]
pub struct DestroyHsmKeyArgs {
    /// The server's configuration file (its data_dir and [root_key] HSM settings).
    #[arg(long)]
    pub config: PathBuf,
    /// The data folder (overrides the configuration's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The label of the HSM key to destroy.
    #[arg(long)]
    pub key_label: String,
    /// Confirm: backups made under this key become unreadable, for good.
    #[arg(long)]
    pub yes: bool,
    /// Output flags.
    #[command(flatten)]
    pub flags: ClientFlags,
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
    /// kind = "pkcs11": wrap the new root key with the HSM key of this label
    /// (same token) instead of the current one; the old HSM key can then be
    /// destroyed (`root-key destroy-hsm-key`), and backups made before with it.
    #[arg(long)]
    pub new_hsm_key_label: Option<String>,
    /// With --new-hsm-key-label: create that key on the token first.
    #[arg(long, requires = "new_hsm_key_label")]
    pub create_hsm_key: bool,
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
            RootKeyCommand::DestroyHsmKey(a) => {
                let (_, output) = top.with(&a.flags);
                super::finish(destroy_hsm_key(a, output))
            }
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

/// `n thing` or `n things`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `labels`: an HSM rotation's keys (their fields are reported then only).
fn report(
    kind: &str,
    d: &keyward_core::RootRotation,
    labels: Option<&crate::seal::rotate::HsmLabels>,
    next_step: &str,
) -> (serde_json::Value, String) {
    let mut json = json!({
        "kind": kind,
        "keys": d.keys,
        "versions": d.versions,
        "aliases": d.aliases,
        "access_records": d.access,
        "next_step": next_step,
    });
    if let Some(l) = labels {
        json["hsm_key_label"] = l.new.clone().into();
        json["old_hsm_key_label"] = l.old.clone().into();
    }
    let text = format!(
        "root key rotated: {} ({}) re-wrapped, {} and {} re-tagged. \
         The old root key no longer opens this store.\nNext: {next_step}",
        count(d.keys, "key", "keys"),
        count(d.versions, "version secret", "version secrets"),
        count(d.aliases, "alias", "aliases"),
        count(d.access, "access record", "access records"),
    );
    (json, text)
}

async fn online(a: RotateArgs, conn: &super::Connection, output: Output) -> Result<(), CliError> {
    let c = Client::connect(conn).await?;
    let req = pb::RotateRootKeyRequest {
        new_root_key_file: a.new_root_key_file.map(|p| p.display().to_string()).unwrap_or_default(),
        new_hsm_key_label: a.new_hsm_key_label.unwrap_or_default(),
        create_hsm_key: a.create_hsm_key,
    };
    let r = c.operator().rotate_root_key(req).await.map_err(|s| c.rpc(s))?.into_inner();
    let d = keyward_core::RootRotation {
        keys: r.keys as usize,
        versions: r.versions as usize,
        aliases: r.aliases as usize,
        access: r.access_records as usize,
    };
    let labels = (r.kind == "pkcs11")
        .then_some(crate::seal::rotate::HsmLabels { new: r.hsm_key_label, old: r.old_hsm_key_label });
    let (json, text) = report(&r.kind, &d, labels.as_ref(), &r.next_step);
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
    let hsm_flags = a.new_hsm_key_label.is_some();
    let new = match (a.new_root_key_file, a.shares.zip(a.threshold)) {
        (Some(_), _) | (_, Some(_)) if hsm_flags => {
            return Err(input("--new-hsm-key-label is for an HSM (kind = \"pkcs11\") only".into()))
        }
        (Some(f), None) => NewRoot::File(f),
        (None, Some((n, k))) => NewRoot::Shares(n, k),
        (None, None) => NewRoot::Hsm { key_label: a.new_hsm_key_label.clone(), create: a.create_hsm_key },
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
    // JSON: the shares open one object, the outcome closes it.
    let json_open = std::cell::Cell::new(false);
    let mut show =
        |shares: &[crate::seal::shamir::Share], seal: &crate::seal::SealFile| -> Result<(), String> {
            let done = crate::seal::init::Initialized { seal: seal.clone(), shares: shares.to_vec() };
            let open = output == Output::Json;
            super::operator::show_as(&done, &dir, output, "rotated the root key of", open)?;
            json_open.set(open);
            Ok(())
        };
    let outcome = crate::seal::rotate::rotate(&config, new, &mut ask, &mut show);
    // What to do next, from what the rotation did (for an HSM, the keys it used).
    let next_step = |labels: Option<&crate::seal::rotate::HsmLabels>| {
        match (&new_file, kind, labels) {
        (Some(f), _, _) => format!(
            "point root_key_file (or [root_key] file) at {} before starting the server, then destroy the old key file: backups made under it become unreadable",
            f.display()
        ),
        (None, "shamir", _) => "start the server and unseal it with the new shares; destroy the old shares: backups made under them become unreadable".into(),
        (None, _, Some(l)) => crate::seal::rotate::hsm_next_step(l, "start the server:"),
        (None, _, None) => "start the server".into(),
    }
    };
    let (json, text) = match outcome {
        Ok(Rotated::Done(d, l)) => report(kind, &d, l.as_ref(), &next_step(l.as_ref())),
        Ok(Rotated::Already) => {
            let next_step = next_step(None);
            (
                json!({ "kind": kind, "already_rotated": true, "next_step": next_step }),
                format!("the store already opens with the new root key (an earlier run finished its write); nothing left to do.\nNext: {next_step}"),
            )
        }
        Err(e) => {
            if json_open.get() {
                let mut m = serde_json::Map::new();
                m.insert("error".into(), e.clone().into());
                super::operator::close_json(&m);
            }
            return Err(input(e));
        }
    };
    if json_open.get() {
        let mut m = json.as_object().cloned().unwrap_or_default();
        // Printed with the shares already.
        m.remove("kind");
        super::operator::close_json(&m);
    } else {
        print(output, json, text);
    }
    Ok(())
}

fn destroy_hsm_key(a: DestroyHsmKeyArgs, output: Output) -> Result<(), CliError> {
    use crate::config::{Overrides, RootKeySource, ServerConfig};
    let input = |e: String| CliError::Input(e);
    let overrides =
        Overrides { config: Some(a.config.clone()), data_dir: a.data_dir.clone(), ..Default::default() };
    let config = ServerConfig::load(&overrides).map_err(|e| input(e.to_string()))?;
    let RootKeySource::Pkcs11(hsm) = &config.root_key else {
        return Err(input(format!(
            "{}: [root_key] kind = {:?}; destroy-hsm-key is for kind = \"pkcs11\"",
            a.config.display(),
            config.root_key.kind()
        )));
    };
    crate::seal::pkcs11::check_label(&a.key_label).map_err(input)?;
    let dir = &config.data_dir;
    // No rotation may move to (or from) a key while it is being destroyed.
    let _lock = crate::seal::SealLock::acquire(dir).map_err(input)?;
    let seal =
        crate::seal::SealFile::read(dir).map_err(input)?.filter(|f| f.kind == "pkcs11").ok_or_else(|| {
            input(format!("{} is not initialized for an HSM (no seal.json of kind pkcs11)", dir.display()))
        })?;
    let current = seal.hsm(hsm);
    if current.key_label == a.key_label {
        return Err(input(format!(
            "the root key of {} is wrapped by HSM key {:?}: destroying it would lose every key in the folder. \
             Rotate to a new HSM key first (`keyward root-key rotate --new-hsm-key-label NEW --create-hsm-key`)",
            dir.display(),
            a.key_label
        )));
    }
    if let Some(p) = &seal.previous {
        if p.hsm(hsm).key_label == a.key_label {
            return Err(input(format!(
                "a root-key rotation of {} has not settled (seal.json still names the root key wrapped by {:?}): \
                 start the server once, which keeps the root key that opens the store, then run this again",
                dir.display(),
                a.key_label
            )));
        }
    }
    // The folder's own root key must come back from the HSM before any key goes.
    seal.hsm_loader(hsm).and_then(|load| load()).map_err(|e| {
        input(format!("the folder's own root key does not unwrap, so nothing is destroyed: {e}"))
    })?;
    if !a.yes {
        return Err(input(format!(
            "destroying HSM key {:?} on token {:?} makes every backup made under it unreadable, for good; \
             pass --yes to do it",
            a.key_label, hsm.token_label
        )));
    }
    let target = crate::config::HsmConfig { key_label: a.key_label.clone(), ..hsm.clone() };
    crate::hardening::apply();
    crate::seal::pkcs11::destroy_wrapping_key(&target).map_err(|e| input(e.to_string()))?;
    print(
        output,
        json!({
            "destroyed": true,
            "key_label": a.key_label,
            "token_label": hsm.token_label,
            "data_dir": dir.display().to_string(),
            "hsm_key_label": current.key_label,
        }),
        format!(
            "destroyed HSM key {:?} on token {:?}: every root key it wrapped (in backups made before the rotation away from it) can never be unwrapped again. {} stays wrapped by {:?}.",
            a.key_label,
            hsm.token_label,
            dir.display(),
            current.key_label
        ),
    );
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
