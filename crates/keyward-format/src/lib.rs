//! The stored formats: how every value the store keeps is laid out as bytes.
//!
//! These types are the store's own. `keyward-core`'s domain types carry no
//! serde, so renaming a domain field cannot change what is on disk; each
//! conversion here is written by hand, and golden files
//! (`tests/vectors/*.txt`) freeze the bytes. Changing a format is a
//! deliberate act: bump [`FORMAT_VERSION`], keep a reader for the old one,
//! and add golden files for the new one (CONTRIBUTING.md).
//!
//! Format 1 (the first, and the one every data folder so far was written in):
//! - key records: JSON, see [`keys`]
//! - audit records: JSON with a fixed field order, see [`audit`] (the chain
//!   hashes exactly these bytes)
//! - the audit chain head: JSON `{"seq":N,"hash":"hex"}`
//! - usage totals: four big-endian 64-bit numbers, see [`usage`]
//! - signed audit checkpoints and the node's audit signer: JSON, see [`checkpoint`]
//!   (added without a format bump: older builds never read them)
//!
//! Not stored but frozen too: the audit export, see [`export`].

pub mod audit;
pub mod checkpoint;
pub mod export;
pub mod keys;
pub mod usage;

use keyward_core::StoreError;

/// The stored-format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("corrupt {what}: {e}"))
}
