//! Storage adapters for Keyward: [`RocksStore`] (production) and
//! [`MemoryStore`] (tests), both implementing `keyward_core::Store` and both
//! run against one contract test suite (`tests/contract.rs`).
//!
//! This crate knows bytes and column families, never policy: what may change
//! and what is recorded is decided in `keyward-core`.

mod codec;
mod memory;
mod rocks;
pub mod testing;

pub use memory::MemoryStore;
pub use rocks::RocksStore;
