//! The TOML configuration loader (`ServerConfig::from_toml`: parse and
//! validate; it reads and writes no file): any text is either a valid
//! configuration or a `ConfigError`, never a panic.
#![no_main]

use std::path::Path;

use keyward::config::{Overrides, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = ServerConfig::from_toml(text, Path::new("fuzz.toml"), &Overrides::default()) {
        // Every refusal renders (the message names the problem).
        assert!(!e.to_string().is_empty());
    }
});
