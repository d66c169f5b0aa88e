//! Server logging: `text` or `json` lines on stderr; the filter from
//! `RUST_LOG`, else `[log] level`, else `info`. Every line logged while a
//! request runs carries its `request_id` (the span opened by
//! [`crate::observe`]): in text as `request{request_id=...}:`, in JSON in
//! the `span` and `spans` fields.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The filter the server uses.
pub fn filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber (once, at server start).
pub fn init(config: &LogConfig) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(config)).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}
