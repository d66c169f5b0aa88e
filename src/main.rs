//! The `keyward` binary: parses the command line and runs it
//! ([`keyward::cli::Cli::run`] owns every command and its exit status).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator (see Cargo.toml), in the binary
/// only: the library leaves the choice to whoever embeds it.
#[cfg(feature = "server")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keyward::cli::Cli::parse().run()
}
