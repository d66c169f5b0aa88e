//! `keyward server`: its flags are the configuration's
//! [`Overrides`](crate::config::Overrides); this loads and validates the
//! configuration, sets up logging and process hardening, then hands over to
//! the server bootstrap. Exit status 64 for a bad configuration, 69 when the
//! listen address cannot be bound, 1 for any other failure.

use std::process::ExitCode;

use crate::config::{Overrides, ServerConfig};
use crate::server::{Server, ServerError};

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
        // Everything is validated and opened first (TLS files included), so a
        // bad setting fails here with nothing bound and nothing running.
        let prepared = match Server::build(config).await {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let addr = prepared.config().listen;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                prepared.close();
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(69);
            }
        };
        match prepared.serve(listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(e),
        }
    })
}

/// Prints why; status 64 for a configuration problem, else 1.
fn failed(e: ServerError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ServerError::Config(_) => ExitCode::from(64),
        // A data folder whose audit chain cannot be continued safely.
        ServerError::Open(keyward_core::OpenError::AuditHead(_)) => ExitCode::from(64),
        // A key record or alias changed outside Keyward (its tag fails).
        ServerError::Open(keyward_core::OpenError::Tampered(_)) => ExitCode::from(64),
        // A configuration principal clashes with a runtime one.
        ServerError::Open(keyward_core::OpenError::PrincipalClash(_)) => ExitCode::from(64),
        // An older stored format without --upgrade, or an audit key gone missing.
        ServerError::Open(keyward_core::OpenError::NeedsUpgrade | keyward_core::OpenError::AuditKey(_)) => {
            ExitCode::from(64)
        }
        _ => ExitCode::FAILURE,
    }
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
