//! Storage adapters for Keyward: [`RocksStore`], the embedded RocksDB store
//! that implements `keyward_core::Store`, and the stored formats it writes
//! ([`format`], re-exported from `keyward-format`). The in-memory store for tests lives in `keyward_core::testing`;
//! one contract suite (`tests/contract.rs`) runs against both.
//!
//! This crate knows bytes and column families, never policy: what may change
//! and what is recorded is decided in `keyward-core`.

mod rocks;

/// The stored formats (their own crate, `keyward-format`, so that fuzzing and
/// offline tools reach the decoders without building RocksDB).
pub use keyward_format as format;

pub use rocks::RocksStore;
