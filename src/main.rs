//! The `keyward` binary: parses the command line, then either runs the
//! server (`keyward::run`) or a client command. Exit status 64 for a bad
//! configuration, 1 for a failed client command.

use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{run_client, Cli, Command, Connection, RootKeyCommand, TokenCommand};
use keyward::config::{create_root_key_file, Overrides, ServerConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Server(a) => {
            let overrides = Overrides {
                config: a.config,
                dev: a.dev,
                listen: a.listen,
                data_dir: a.data_dir,
                root_key_file: a.root_key_file,
                kms_v2_socket: a.kms_v2_socket,
                kms_v2_key: a.kms_v2_key,
                metrics_listen: a.metrics_listen,
                health_listen: a.health_listen,
                log_format: a.log_format,
            };
            let config = match ServerConfig::load(&overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(64);
                }
            };
            keyward::logging::init(&config.log);
            keyward::hardening::apply();
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(config.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("error: cannot listen on {}: {e}", config.listen);
                        return ExitCode::from(69);
                    }
                };
                match keyward::run(config, listener, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e @ keyward::ServerError::Config(_)) => {
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
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "keyward", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::RootKey(RootKeyCommand::Create { file }) => {
            match create_root_key_file(&file) {
                Ok(()) => {
                    println!("wrote a new root key to {} (mode 0600). Back it up: without it no key can be recovered.", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(TokenCommand::Create { principal }) => {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            if keyward_crypto::random_bytes(&mut bytes[..]).is_err() {
                eprintln!("error: system random generator failed");
                return ExitCode::FAILURE;
            }
            let token = zeroize::Zeroizing::new(format!("kw_{}", hex::encode(&bytes[..])));
            println!("token (shown once; give it to {principal} and keep it secret):\n  {}", *token);
            println!("add to the [[principals]] entry named {principal:?}:");
            println!("  token_sha256 = [\"{}\"]", keyward::auth::token_hash_hex(&token));
            ExitCode::SUCCESS
        }
        command => {
            let conn = Connection {
                addr: cli.addr,
                token: cli.token,
                ca_cert: cli.ca_cert,
                client_identity: cli.client_cert.zip(cli.client_key),
                checksums: !cli.no_crc32c,
            };
            match rt.block_on(run_client(&conn, cli.output, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

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
