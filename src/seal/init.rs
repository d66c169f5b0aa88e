//! `keyward operator init`: makes a root key for an empty data folder and
//! seals it (splits it into shares, or wraps it with an HSM key), so that
//! neither the key nor the shares are ever stored.

use std::sync::Arc;

use keyward_core::{Kms, Store, SystemClock};
use keyward_crypto::RootKey;
use keyward_store::RocksStore;

use super::file::SealFile;
use super::shamir::{self, Share};
use crate::config::{HsmConfig, RootKeySource, ServerConfig};

/// What init made: the shares to hand out (Shamir), or nothing to show (HSM).
#[derive(Debug)]
pub struct Initialized {
    /// The seal file written.
    pub seal: SealFile,
    /// The shares, to print once (Shamir).
    pub shares: Vec<Share>,
}

/// Initializes `config.data_dir` for its `[root_key]` kind. `split` is
/// `--shares N --threshold K` (Shamir); `create_hsm_key` creates the HSM's
/// wrapping key first (PKCS#11). `show` is called with what was made
/// before the folder is marked initialized (seal.json written): if it fails
/// (the shares could not be shown), the folder stays uninitialized.
pub fn init(
    config: &ServerConfig,
    split: Option<(u32, u32)>,
    create_hsm_key: bool,
    show: &mut dyn FnMut(&Initialized) -> Result<(), String>,
) -> Result<Initialized, String> {
    let dir = &config.data_dir;
    match (&config.root_key, split) {
        (RootKeySource::Shamir, None) => return Err("[root_key] kind = \"shamir\" needs --shares N --threshold K".into()),
        (RootKeySource::Pkcs11(_), Some(_)) => {
            return Err("--shares and --threshold are for [root_key] kind = \"shamir\", not \"pkcs11\"".into())
        }
        (RootKeySource::File(_) | RootKeySource::Dev(_), _) => {
            return Err(
                "keyward operator init is for [root_key] kind = \"shamir\" or \"pkcs11\" (pass --config with a [root_key] table, or --shares N --threshold K); a root key file is made with `keyward root-key create FILE`"
                    .into(),
            )
        }
        _ => {}
    }
    if create_hsm_key && !matches!(config.root_key, RootKeySource::Pkcs11(_)) {
        return Err("--create-hsm-key is for [root_key] kind = \"pkcs11\"".into());
    }
    if SealFile::read(dir)?.is_some() {
        return Err(format!(
            "data folder {} is already initialized ({} exists); a second init would lock its keys away for good",
            dir.display(),
            SealFile::path(dir).display()
        ));
    }
    // The same rule as the server's: created 0700, an open one refused.
    crate::server::create_private_dir(dir).map_err(|e| e.to_string())?;
    let db = dir.join("db");
    let store = RocksStore::open(&db).map_err(|e| format!("data folder {}: {e}", db.display()))?;
    let used = !store.load_keys().map_err(|e| e.to_string())?.is_empty()
        || store.audit_head().map_err(|e| e.to_string())?.is_some();
    if !used && store.root_check().map_err(|e| e.to_string())?.is_some() {
        return Err(format!(
            "an earlier `keyward operator init` of {} did not finish (there is no seal.json): the folder holds no key; delete it and run init again",
            dir.display()
        ));
    }
    if used {
        return Err(format!(
            "data folder {} already holds a Keyward store; init works on an empty folder only",
            dir.display()
        ));
    }
    let root = RootKey::generate().map_err(|e| e.to_string())?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (seal, shares) = match (&config.root_key, split) {
        (RootKeySource::Shamir, Some((n, k))) => {
            let (n, k) = shamir::check_parameters(n, k).map_err(|e| e.to_string())?;
            let init_id = shamir::new_init_id().map_err(|e| e.to_string())?;
            let shares = shamir::split(&root, &init_id, n, k).map_err(|e| e.to_string())?;
            let seal = SealFile {
                version: 1,
                kind: "shamir".into(),
                created_ms,
                init_id: Some(init_id),
                shares: Some(u32::from(n)),
                threshold: Some(u32::from(k)),
                share_commitments: Some(shares.iter().map(|s| hex::encode(s.commitment())).collect()),
                wrapped_root: None,
                key_label: None,
                previous: None,
            };
            (seal, shares)
        }
        (RootKeySource::Pkcs11(hsm), None) => {
            (wrap_with_hsm(hsm, &root, create_hsm_key, created_ms)?, Vec::new())
        }
        _ => unreachable!("checked above"),
    };
    // The store learns its root key's check value (and makes its audit
    // signing key, sealed under it) before the seal file says it is ready.
    let store: Arc<dyn Store> = Arc::new(store);
    let kms = Kms::open(store, root, Arc::new(SystemClock), config.kms.clone()).map_err(|e| e.to_string())?;
    super::close(Arc::new(kms), std::time::Duration::from_secs(10));
    let done = Initialized { seal, shares };
    show(&done)?;
    done.seal.write(dir)?;
    Ok(done)
}

fn wrap_with_hsm(hsm: &HsmConfig, root: &RootKey, create: bool, created_ms: i64) -> Result<SealFile, String> {
    use super::pkcs11;
    if create {
        pkcs11::create_wrapping_key(hsm).map_err(|e| e.to_string())?;
    }
    // Wrapped, and proved to come back, before anything depends on it.
    let wrapped = pkcs11::wrap_root_checked(hsm, root.expose_secret()).map_err(|e| match e {
        pkcs11::HsmError::KeyNotFound { .. } => {
            format!("{e}; create it with `keyward operator init --config <file> --create-hsm-key`")
        }
        e => e.to_string(),
    })?;
    Ok(SealFile {
        version: 1,
        kind: "pkcs11".into(),
        created_ms,
        init_id: None,
        shares: None,
        threshold: None,
        share_commitments: None,
        wrapped_root: Some(hex::encode(wrapped)),
        key_label: Some(hsm.key_label.clone()),
        previous: None,
    })
}
