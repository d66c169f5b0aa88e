//! Test support, behind the `test-util` feature (never in release builds):
//! an in-memory [`Store`](crate::Store), a wrapper that makes writes fail or
//! stall, and a clock that moves only when told to. With these the use cases
//! are tested without RocksDB (`cargo test -p keyward-core`), and the store
//! contract suite in `keyward-store` runs the same checks against both stores.

mod faulty;
mod memory;
mod peers;
mod shared;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use faulty::{Faults, FaultyStore};
pub use memory::MemoryStore;
pub use peers::LocalPeers;
pub use shared::{MemoryShared, SharedNode};

use crate::Clock;

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Rotates `key` `rounds` times through each of two nodes at once (cluster
/// tests) and returns the versions each made; panics if a rotation fails.
pub async fn rotate_on_both(
    a: &crate::Kms,
    b: &crate::Kms,
    caller: &crate::Caller,
    key: &str,
    rounds: u32,
) -> (Vec<u32>, Vec<u32>) {
    async fn many(kms: &crate::Kms, caller: &crate::Caller, key: &str, rounds: u32) -> Vec<u32> {
        let mut v = Vec::new();
        for _ in 0..rounds {
            v.push(kms.rotate_key(caller, key).await.expect("rotation").meta.primary_version);
        }
        v
    }
    tokio::join!(many(a, caller, key, rounds), many(b, caller, key, rounds))
}
