//! `keyward root-key rotate` offline: on a stopped server's data folder,
//! the same use case as the RotateRootKey RPC (`Kms::rotate_root_key`).
//!
//! Crash-safe: the store changes in one atomic write, so a SIGKILL at any
//! point leaves a store that opens with the old root key or the new one.
//! Where the new key lives is settled around that write:
//! - a key file: the new file is written (synced) before; rerunning the
//!   command with the same files after a crash finishes the job (or says
//!   it is done);
//! - Shamir: the new shares are shown (and flushed) and seal.json names
//!   both initializations before the write; after it, only the new one. A
//!   crash in between leaves a folder that unseals with either set;
//! - an HSM: seal.json names both wrapped keys before the write, only the
//!   new one after; the server keeps whichever the store holds at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_core::{Caller, Edge, Kms, Policy, RootRotation, Store, SystemClock};
use keyward_crypto::{RootCheck, RootKey};
use keyward_store::RocksStore;

use super::file::SealFile;
use super::shamir::{self, Share};
use super::ShamirInit;
use crate::config::{load_root_key, write_root_key_file, RootKeySource, ServerConfig};

/// What the new root key is.
#[derive(Debug)]
pub enum NewRoot {
    /// kind = "file": this file (written if it does not exist).
    File(PathBuf),
    /// kind = "shamir": split into N shares, K of which rebuild it.
    Shares(u32, u32),
    /// kind = "pkcs11": wrapped by the same HSM key, or by the key with
    /// this label on the same token (created first with `create`), after
    /// which the old HSM key can be destroyed.
    Hsm {
        /// The new HSM key's label (`None`: the current key).
        key_label: Option<String>,
        /// Create it (it must not exist yet).
        create: bool,
    },
}

/// Shows the new shares (and the seal file they go with) to the operator.
pub type ShowShares<'a> = dyn FnMut(&[Share], &SealFile) -> Result<(), String> + 'a;

/// The HSM keys of a rotation (kind = "pkcs11").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HsmLabels {
    /// The label of the key that wraps the new root key.
    pub new: String,
    /// The label of the key that wrapped the root key the store opened with.
    pub old: String,
}

/// How it went.
#[derive(Debug)]
pub enum Rotated {
    /// Rewritten under the new key (and, for an HSM, which keys).
    Done(RootRotation, Option<HsmLabels>),
    /// The store already opens with the new key file (an earlier run
    /// committed); its leftovers were purged.
    Already,
}

/// Rotates the root key of the stopped server `config` names. `old_shares`
/// asks the operator for shares of an initialization (Shamir); `show`
/// shows the new shares before anything changes (an error stops it there).
pub fn rotate(
    config: &ServerConfig,
    new: NewRoot,
    old_shares: &mut dyn FnMut(&ShamirInit) -> Result<Vec<Share>, String>,
    show: &mut ShowShares<'_>,
) -> Result<Rotated, String> {
    if config.cluster.is_some() {
        return Err("root-key rotation is not supported in cluster mode yet: the keys live in etcd, shared by every node".into());
    }
    let dir = &config.data_dir;
    let db = dir.join("db");
    if !db.join("CURRENT").exists() {
        return Err(format!("{} holds no Keyward store", dir.display()));
    }
    // A running server holds the store's lock: opening fails, saying so.
    let store = RocksStore::open(&db).map_err(|e| {
        format!("data folder {}: {e} (stop the server first: this runs offline)", db.display())
    })?;
    // No destroy-hsm-key while the folder moves between HSM keys.
    let _lock = super::file::SealLock::acquire(dir)?;
    let check =
        store.root_check().map_err(|e| e.to_string())?.ok_or("the store has no root-key check value")?;
    let fits = |r: &RootKey| r.matches(&RootCheck(check.clone()));
    let seal = SealFile::read(dir)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let mut labels = None;
    let (old, new_root, during, after) = match (&config.root_key, new) {
        (RootKeySource::File(_) | RootKeySource::Dev(_), NewRoot::File(path)) => {
            if path.exists() {
                let n = load_root_key(&RootKeySource::File(path.clone())).map_err(|e| e.to_string())?;
                if fits(&n) {
                    // An earlier run committed; opening purged what it left.
                    let kms = open(&store, n, config)?;
                    super::close(Arc::new(kms), std::time::Duration::from_secs(10));
                    return Ok(Rotated::Already);
                }
            }
            let old = load_root_key(&config.root_key).map_err(|e| e.to_string())?;
            if !fits(&old) {
                return Err("neither the configured root key nor the new one opens this store".into());
            }
            if !path.exists() {
                let n = RootKey::generate().map_err(|e| e.to_string())?;
                write_root_key_file(&path, &n).map_err(|e| e.to_string())?;
            }
            let n = load_root_key(&RootKeySource::File(path)).map_err(|e| e.to_string())?;
            (old, n, None, None)
        }
        (RootKeySource::Shamir, NewRoot::Shares(n, k)) => {
            let file = seal.ok_or("no seal.json: the folder is not initialized for shares")?;
            // The initialization that opens the store now (the previous one,
            // after a crashed run that never wrote the store).
            let (old, fitted) = old_root_from_shares(&file, dir, &fits, old_shares)?;
            let (n, k) = shamir::check_parameters(n, k).map_err(|e| e.to_string())?;
            let root = RootKey::generate().map_err(|e| e.to_string())?;
            let init_id = shamir::new_init_id().map_err(|e| e.to_string())?;
            let shares = shamir::split(&root, &init_id, n, k).map_err(|e| e.to_string())?;
            let settled = SealFile {
                init_id: Some(init_id),
                shares: Some(u32::from(n)),
                threshold: Some(u32::from(k)),
                share_commitments: Some(shares.iter().map(|s| hex::encode(s.commitment())).collect()),
                previous: None,
                ..fitted.clone()
            };
            // Shown before anything changes: if they cannot be, nothing does.
            show(&shares, &settled)?;
            let mut old_file = fitted;
            old_file.previous = None;
            let during = SealFile { previous: Some(Box::new(old_file)), ..settled.clone() };
            (old, root, Some(during), Some(settled))
        }
        (RootKeySource::Pkcs11(hsm), NewRoot::Hsm { key_label, create }) => {
            let file = seal.ok_or("no seal.json: the folder is not initialized for an HSM")?;
            let r = hsm_rewrap(hsm, &file, &fits, key_label.as_deref(), create).map_err(|e| e.to_string())?;
            labels = Some(r.labels);
            let (old, root, during, settled) = (r.old_root, r.root, r.during, r.settled);
            (old, root, Some(during), Some(settled))
        }
        (kind, new) => {
            return Err(format!(
                "[root_key] kind = {:?} does not rotate with {}: a key file takes --new-root-key-file, shares take --shares and --threshold, an HSM takes neither (or --new-hsm-key-label)",
                kind.kind(),
                match new {
                    NewRoot::File(_) => "--new-root-key-file",
                    NewRoot::Shares(..) => "--shares/--threshold",
                    NewRoot::Hsm { .. } => "no flag or --new-hsm-key-label",
                }
            ))
        }
    };
    let kms = open(&store, old, config)?;
    if let Some(f) = &during {
        f.write(dir)?;
    }
    let caller = Caller {
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: "operator".into(),
        peer: "keyward root-key rotate (offline)".into(),
        edge: Edge::System,
        policy: Arc::new(Policy::everything()),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    keyward_core::crash_point("rotate-before-write");
    let done = rt.block_on(kms.rotate_root_key(&caller, new_root)).map_err(|e| e.public_message());
    super::close(Arc::new(kms), std::time::Duration::from_secs(30));
    let done = done?;
    keyward_core::crash_point("rotate-before-settle");
    if let Some(f) = &after {
        f.write(dir)?;
    }
    Ok(Rotated::Done(done, labels))
}

/// An HSM folder's next root key, prepared: wrapped (and proved to unwrap)
/// by the target HSM key, with the seal files to write before the store
/// changes (`during`: the new entry, the old one as `previous`) and after
/// (`settled`). Nothing is written yet. Its Debug names the HSM keys only.
pub struct HsmRewrap {
    /// The root key that opens the store now.
    pub old_root: RootKey,
    /// Its seal.json entry.
    pub old: SealFile,
    /// The new root key.
    pub root: RootKey,
    /// A loader that unwraps the new root key.
    pub loader: super::RootLoader,
    /// The HSM keys: the one wrapping the new root key and the old one.
    pub labels: HsmLabels,
    /// seal.json while the rotation may not have finished.
    pub during: SealFile,
    /// seal.json once it has.
    pub settled: SealFile,
}

/// Prepares an HSM rotation of the folder whose seal.json is `file`:
/// `fits` picks the entry in use; `new_label`/`create` choose the HSM key
/// ([`super::pkcs11::rotation_target`]). Offline rotation and the
/// RotateRootKey RPC both start here.
pub fn hsm_rewrap(
    hsm: &crate::config::HsmConfig,
    file: &SealFile,
    fits: &dyn Fn(&RootKey) -> bool,
    new_label: Option<&str>,
    create: bool,
) -> Result<HsmRewrap, super::pkcs11::TargetError> {
    use super::pkcs11::{self, TargetError};
    let (old_root, old) = file.hsm_entry_in_use(hsm, fits).map_err(TargetError::Seal)?;
    let current = old.hsm(hsm);
    let target = pkcs11::rotation_target(&current, new_label, create)?;
    let root = RootKey::generate().map_err(|e| TargetError::Seal(e.to_string()))?;
    let wrapped = pkcs11::wrap_root_checked(&target, root.expose_secret())?;
    let settled = SealFile {
        wrapped_root: Some(hex::encode(&wrapped)),
        key_label: Some(target.key_label.clone()),
        previous: None,
        ..old.clone()
    };
    let during = SealFile { previous: Some(Box::new(old.clone())), ..settled.clone() };
    let labels = HsmLabels { new: target.key_label.clone(), old: current.key_label };
    Ok(HsmRewrap { old_root, old, root, loader: pkcs11::loader(target, wrapped), labels, during, settled })
}

/// What an operator does after an HSM rotation: with a new HSM key,
/// destroy the old one; with the same, move to a new one to make backups
/// made before unreadable. `restart` says what happens at the next start.
pub fn hsm_next_step(l: &HsmLabels, restart: &str) -> String {
    if l.new != l.old {
        format!(
            "{restart} it unwraps the new root key with HSM key {:?}. To make backups made before unreadable, destroy the old HSM key: `keyward root-key destroy-hsm-key --config <file> --key-label {:?} --yes`",
            l.new, l.old
        )
    } else {
        format!(
            "{restart} it unwraps the new root key with the same HSM key {:?}, which still unwraps the old one in backups made before; to make those unreadable, rotate with a new HSM key label (--new-hsm-key-label) and destroy the old HSM key",
            l.old
        )
    }
}

impl std::fmt::Debug for HsmRewrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmRewrap").field("labels", &self.labels).finish_non_exhaustive()
    }
}

fn open(store: &Arc<dyn Store>, root: RootKey, config: &ServerConfig) -> Result<Kms, String> {
    Kms::open(store.clone(), root, Arc::new(SystemClock), config.kms.clone()).map_err(|e| e.to_string())
}

/// The old root key from the operator's shares: of the current
/// initialization, or the previous one while a rotation may not have
/// finished; each share checked against its commitment.
fn old_root_from_shares(
    file: &SealFile,
    dir: &Path,
    fits: &dyn Fn(&RootKey) -> bool,
    ask: &mut dyn FnMut(&ShamirInit) -> Result<Vec<Share>, String>,
) -> Result<(RootKey, SealFile), String> {
    let path = SealFile::path(dir);
    let current = ShamirInit::of(file, &path)?;
    let shares = ask(&current)?;
    let (init, fitted) = match (&file.previous, shares.first()) {
        (Some(p), Some(s)) if p.init_id.as_deref() == Some(s.init_id.as_str()) => {
            (ShamirInit::of(p, &path)?, (**p).clone())
        }
        _ => (current, file.clone()),
    };
    for (i, s) in shares.iter().enumerate() {
        if shares[..i].iter().any(|o| o.index == s.index) {
            return Err(format!(
                "share {} was given twice: {} different shares of initialization {} are needed",
                s.index,
                shares.len(),
                init.init_id
            ));
        }
        s.check_init(&init.init_id).map_err(|e| e.to_string())?;
        let c = init.commitments.get(usize::from(s.index) - 1);
        if !init.commitments.is_empty() && c != Some(&s.commitment()) {
            return Err(format!(
                "share {} is not one of the shares of initialization {}",
                s.index, init.init_id
            ));
        }
    }
    let root = shamir::combine(&shares, init.threshold).map_err(|e| e.to_string())?;
    if !fits(&root) {
        return Err("the shares do not rebuild this store's root key".into());
    }
    Ok((root, fitted))
}
