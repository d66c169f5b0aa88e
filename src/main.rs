//! The `keyward` binary: parses the command line and runs it
//! ([`keyward::cli::Cli::run`] owns every command and its exit status).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keyward::cli::Cli::parse().run()
}
