//! The stored formats: how every value the store keeps is laid out as bytes.
//!
//! These types are the store's own. `keyward-core`'s domain types carry no
//! serde, so renaming a domain field cannot change what is on disk; each
//! conversion here is written by hand, and golden files
//! (`tests/vectors/*.txt`) freeze the bytes. Changing a format is a
//! deliberate act: bump [`FORMAT_VERSION`], keep a reader for the old one,
//! and add golden files for the new one (CONTRIBUTING.md).
//!
//! Format 2 (current): as format 1, except
//! - key records hold metadata and a tag, no secrets; each version's wrapped
//!   secret is a value of its own (see [`keys`]), so a destruction deletes
//!   exactly it (and the store then purges it from every file)
//! - aliases carry a tag (see [`aliases`])
//!
//! Format 1 (the first; read so that `RocksStore` can upgrade it):
//! - key records: JSON with the wrapped secrets inside, see [`keys`]
//! - aliases: the key's UUID
//! - audit records: JSON with a fixed field order, see [`audit`] (the chain
//!   hashes exactly these bytes)
//! - the audit chain head: JSON `{"seq":N,"hash":"hex"}`
//! - usage totals: four big-endian 64-bit numbers, see [`usage`]
//! - signed audit checkpoints and the node's audit signer: JSON, see [`checkpoint`]
//!   (added without a format bump: older builds never read them)
//!
//! Not stored but frozen too: the audit export, see [`export`], and the
//! backup file, see [`backup`].

pub mod access;
pub mod aliases;
pub mod audit;
pub mod backup;
pub mod checkpoint;
pub mod cluster;
pub mod export;
pub mod keys;
pub mod rollup;
pub mod usage;

use keyward_core::StoreError;

/// The stored-format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest stored format this build reads (and upgrades on open).
pub const OLDEST_READABLE: u32 = 1;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("corrupt {what}: {e}"))
}
