//! Backup and restore of a data folder (`keyward backup create|verify|restore`).
//!
//! A backup is every entry of the store as of one RocksDB snapshot (keys and
//! their wrapped secrets, aliases, principals, tokens' hashes, grants, access
//! keys, usage, the audit log with its indexes, head and signed checkpoints,
//! the root-key check value and the sealed audit signing key) plus the data
//! folder's `seal.json`, in the format of [`keyward_format::backup`]. It
//! holds nothing in the clear that opens a key: without the root key (or its
//! shares, or the HSM) it is useless.
//!
//! Restoring reads the file twice: once to check it whole (structure,
//! manifest, checksum), then to write it into a new folder; then the new
//! folder's audit chain is verified from end to end, and a folder that
//! fails is removed. Verifying without a server does the same into a
//! temporary folder.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use keyward_core::{Store, VerifyReport};
use keyward_format::backup::{self, BackupError, BackupWriter, Header, Manifest, Verified};
use keyward_store::RocksStore;

use crate::seal::SealFile;

/// Entries written per batch while restoring, and most bytes per batch.
const RESTORE_BATCH: usize = 4096;
const RESTORE_BATCH_BYTES: usize = 64 << 20;

/// Writes a backup of `store` (and `data_dir`'s seal.json) to `out`.
pub fn write(store: &dyn Store, data_dir: &Path, out: impl Write) -> Result<Manifest, String> {
    let seal = match SealFile::read(data_dir)? {
        Some(f) => Some(serde_json::to_value(f).map_err(|e| e.to_string())?),
        None => None,
    };
    let header = Header {
        format: 1,
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        keyward_version: env!("CARGO_PKG_VERSION").to_string(),
        store_format: keyward_format::FORMAT_VERSION,
        column_families: store.column_families(),
        seal,
    };
    let mut w = BackupWriter::new(out, &header).map_err(|e| e.to_string())?;
    let mut failed = None;
    store
        .snapshot_entries(&mut |cf, k, v| {
            w.entry(cf, k, v).map_err(|e| {
                let m = e.to_string();
                failed = Some(m.clone());
                keyward_core::StoreError(m)
            })
        })
        .map_err(|e| failed.take().unwrap_or_else(|| e.to_string()))?;
    w.finish().map(|(_, m)| m).map_err(|e| e.to_string())
}

/// What a restore (or an offline verification) found.
#[derive(Debug)]
pub struct Restored {
    /// The backup's header, manifest and checksum.
    pub backup: Verified,
    /// The restored folder's audit chain, verified end to end.
    pub chain: VerifyReport,
}

/// Checks `file` whole (structure, manifest, checksum).
pub fn check(file: &Path) -> Result<Verified, String> {
    let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    backup::verify(BufReader::with_capacity(1 << 20, f)).map_err(|e| format!("{}: {e}", file.display()))
}

/// Restores `file` into `data_dir` (new, or an empty folder): checks it
/// whole first, writes it, then verifies the restored audit chain; on any
/// failure the new folder is removed again.
/// The folder is built under a `.partial` name beside it and renamed into
/// place only when complete, so a crash never leaves a folder a server
/// would open.
pub fn restore(file: &Path, data_dir: &Path) -> Result<Restored, String> {
    let verified = check(file)?;
    prepare_dir(data_dir)?;
    let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    let partial = data_dir.with_file_name(name);
    let _ = std::fs::remove_dir_all(&partial);
    prepare_dir(&partial)?;
    let out = restore_into(file, &partial, verified).and_then(|r| {
        // Onto the empty folder (rename replaces an empty directory).
        std::fs::rename(&partial, data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(r)
    });
    if out.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
        let _ = std::fs::remove_dir(data_dir);
    }
    out
}

/// Verifies `file` without a server: checks it whole, restores it into a
/// temporary folder, verifies the chain there, and removes the folder.
pub fn verify_offline(file: &Path) -> Result<Restored, String> {
    let mut name = [0u8; 8];
    keyward_crypto::random_bytes(&mut name).map_err(|e| e.to_string())?;
    let tmp = std::env::temp_dir().join(format!("keyward-backup-verify-{}", hex::encode(name)));
    let out = restore(file, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

/// Creates `dir` (mode 0700) or accepts an existing empty one; says whether it created it.
fn prepare_dir(dir: &Path) -> Result<bool, String> {
    use std::os::unix::fs::DirBuilderExt;
    let shown = dir.display();
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
        if entries.next().is_some() {
            return Err(format!("{shown} is not empty: restore into a new folder"));
        }
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(true)
}

fn restore_into(file: &Path, data_dir: &Path, verified: Verified) -> Result<Restored, String> {
    let db = data_dir.join("db");
    let store = RocksStore::create_for_restore(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut batch: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::with_capacity(RESTORE_BATCH);
    let mut bytes = 0;
    let again = backup::read(BufReader::with_capacity(1 << 20, f), &mut |e| {
        bytes += e.key.len() + e.value.len();
        batch.push((e.cf, e.key, e.value));
        if batch.len() == RESTORE_BATCH || bytes >= RESTORE_BATCH_BYTES {
            store.put_restored(&batch).map_err(|e| BackupError::Invalid(e.to_string()))?;
            batch.clear();
            bytes = 0;
        }
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", file.display()))?;
    // The file changed between the two reads: refuse what was written.
    if again.sha256 != verified.sha256 {
        return Err(format!("{} changed while it was being restored", file.display()));
    }
    store.put_restored(&batch).map_err(|e| e.to_string())?;
    store.finish_restore().map_err(|e| e.to_string())?;
    let chain = keyward_core::verify_log(&store, None).map_err(|e| e.to_string())?;
    if !chain.intact() {
        return Err(format!(
            "the restored audit chain does not verify (first bad record {:?}: {})",
            chain.first_bad_seq,
            chain.problem.as_deref().unwrap_or("?")
        ));
    }
    if let Some(seal) = &verified.header.seal {
        let f: SealFile =
            serde_json::from_value(seal.clone()).map_err(|e| format!("the backup's seal.json: {e}"))?;
        f.write(data_dir)?;
    }
    Ok(Restored { backup: verified, chain })
}
