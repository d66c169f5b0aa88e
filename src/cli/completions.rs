//! `keyward completions SHELL`: a shell completion script for the whole
//! command line, generated from the same definitions clap parses.

use clap::{Args, CommandFactory};

use super::Cli;

/// `keyward completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// Prints the script to stdout.
    pub fn run(self) {
        let mut cmd = Cli::command();
        clap_complete::generate(self.shell, &mut cmd, "keyward", &mut std::io::stdout());
    }
}
