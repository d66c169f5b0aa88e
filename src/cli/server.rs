//! `keyward server`: its flags are the configuration's
//! [`Overrides`](crate::config::Overrides); this loads and validates the
//! configuration, sets up logging and process hardening, then hands over to
//! the server bootstrap. Exit status 64 for a bad configuration, 69 when the
//! listen address cannot be bound, 1 for any other failure.

use std::process::ExitCode;

use crate::config::{Overrides, ServerConfig};
use crate::server::ServerError;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(overrides: &Overrides) -> ExitCode {
    let config = match ServerConfig::load(overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
    crate::logging::init(&config.log);
    crate::hardening::apply();
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", config.listen);
                return ExitCode::from(69);
            }
        };
        match crate::server::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ ServerError::Config(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(64)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
