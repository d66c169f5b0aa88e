//! `keyward token create`: a new random bearer token, shown once, and the
//! `token_sha256` line for the server's `[[principals]]` entry.

use clap::Subcommand;

use super::CliError;

/// `keyward token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token once, and the line to paste into the config.
    Create {
        /// The principal it is for (only printed as a reminder).
        #[arg(long, default_value = "my-service")]
        principal: String,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), CliError> {
        match self {
            TokenCommand::Create { principal } => {
                let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
                keyward_crypto::random_bytes(&mut bytes[..])
                    .map_err(|_| CliError::Input("system random generator failed".into()))?;
                let token = zeroize::Zeroizing::new(format!("kw_{}", hex::encode(&bytes[..])));
                println!("token (shown once; give it to {principal} and keep it secret):\n  {}", *token);
                println!("add to the [[principals]] entry named {principal:?}:");
                println!("  token_sha256 = [\"{}\"]", crate::auth::token_hash_hex(&token));
                Ok(())
            }
        }
    }
}
