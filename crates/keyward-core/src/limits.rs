//! Request limits, with DESIGN.md's defaults.

use keyward_crypto::{MAX_CONTEXT_BYTES, MAX_CONTEXT_PAIRS};

/// Configurable limits on request contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `Encrypt` plaintext, bytes.
    pub max_plaintext_bytes: usize,
    /// Largest data key, bytes (the smallest is always 1).
    pub max_data_key_bytes: usize,
    /// Most pairs in an encryption context.
    pub max_context_pairs: usize,
    /// Most bytes (keys + values) in an encryption context.
    pub max_context_bytes: usize,
    /// Most versions a usage cap may create for one key in any hour; beyond
    /// it, requests that would need another are refused `RESOURCE_EXHAUSTED`.
    pub max_cap_rotations_per_hour: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_plaintext_bytes: 4096,
            max_data_key_bytes: 1024,
            max_context_pairs: MAX_CONTEXT_PAIRS,
            max_context_bytes: MAX_CONTEXT_BYTES,
            max_cap_rotations_per_hour: 60,
        }
    }
}
