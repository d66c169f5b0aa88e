//! `keyward root-key create`: writes a fresh random root key file for a
//! server's configuration (mode 0600, never overwriting).

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::config::create_root_key_file;

/// `keyward root-key ...`.
#[derive(Debug, Subcommand)]
pub enum RootKeyCommand {
    /// Write a new random root key to FILE (mode 0600; never overwrites).
    Create {
        /// Where to write it.
        file: PathBuf,
    },
}

impl RootKeyCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), CliError> {
        match self {
            RootKeyCommand::Create { file } => {
                create_root_key_file(&file).map_err(|e| CliError::Input(e.to_string()))?;
                println!(
                    "wrote a new root key to {} (mode 0600). Back it up: without it no key can be recovered.",
                    file.display()
                );
                Ok(())
            }
        }
    }
}
