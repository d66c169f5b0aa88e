//! `keyward encrypt`, `keyward decrypt` and `keyward re-encrypt`: one
//! ciphertext at a time, with CRC32C checks both ways (`--no-crc32c` turns
//! them off). Many ciphertexts at once: [`super::rewrap`].

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use serde_json::json;

use super::client::{Client, ClientFlags, Connection};
use super::input::{ciphertext, context, parse_pair, read_input};
use super::render::{print, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// Plaintext as text; without it, read from --in or stdin.
    #[arg(long)]
    pub plaintext: Option<String>,
    /// File to read the plaintext from ("-" for stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `keyward decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Base64 ciphertext; without it, read from --in or stdin.
    #[arg(long)]
    pub ciphertext: Option<String>,
    /// File holding the base64 ciphertext ("-" for stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Require the ciphertext to be under this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `keyward re-encrypt`.
#[derive(Debug, Args)]
pub struct ReEncryptArgs {
    /// Base64 ciphertext.
    #[arg(long)]
    pub ciphertext: String,
    /// Destination key id or alias.
    #[arg(long)]
    pub to: String,
    /// Source encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Destination encryption context k=v (repeatable; defaults to the source context).
    #[arg(long = "to-context", value_parser = parse_pair)]
    pub to_context: Vec<(String, String)>,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

impl ClientCommand for EncryptArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Prints the ciphertext in base64.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let plaintext = match self.plaintext {
            Some(p) => p.into_bytes(),
            None => read_input(&self.input)?,
        };
        let context = context(self.context);
        let r = c
            .crypto()
            .encrypt(pb::EncryptRequest {
                key_id: self.key,
                plaintext_crc32c: c.sum(&plaintext),
                encryption_context_crc32c: c.context_sum(&context),
                plaintext,
                encryption_context: context,
            })
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
        let ct = B64.encode(&r.ciphertext);
        print(
            output,
            json!({ "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
            ct.clone(),
        );
        Ok(())
    }
}

impl ClientCommand for DecryptArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Writes the plaintext as is to stdout (base64 in JSON).
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let text = match self.ciphertext {
            Some(t) => t.into_bytes(),
            None => read_input(&self.input)?,
        };
        let text =
            String::from_utf8(text).map_err(|_| CliError::Input("ciphertext must be base64 text".into()))?;
        let ciphertext = ciphertext(&text)?;
        let context = context(self.context);
        let r = c
            .crypto()
            .decrypt(pb::DecryptRequest {
                ciphertext_crc32c: c.sum(&ciphertext),
                encryption_context_crc32c: c.context_sum(&context),
                ciphertext,
                encryption_context: context,
                key_id: self.key.unwrap_or_default(),
            })
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        let mut plaintext = zeroize::Zeroizing::new(r.plaintext);
        c.check("plaintext", &plaintext, r.plaintext_crc32c)?;
        match output {
            Output::Json => print(
                output,
                json!({ "plaintext": B64.encode(&*plaintext), "key_id": r.key_id, "key_version": r.key_version }),
                String::new(),
            ),
            Output::Table => {
                let mut out = std::io::stdout();
                out.write_all(&plaintext)
                    .and_then(|_| out.flush())
                    .map_err(|e| CliError::Input(e.to_string()))?;
                zeroize::Zeroize::zeroize(&mut *plaintext);
            }
        }
        Ok(())
    }
}

impl ClientCommand for ReEncryptArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Prints the new ciphertext in base64.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let ciphertext = ciphertext(&self.ciphertext)?;
        let to_context: HashMap<_, _> =
            if self.to_context.is_empty() { context(self.context.clone()) } else { context(self.to_context) };
        let from_context = context(self.context);
        let r = c
            .crypto()
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext_crc32c: c.sum(&ciphertext),
                source_encryption_context_crc32c: c.context_sum(&from_context),
                destination_encryption_context_crc32c: c.context_sum(&to_context),
                ciphertext,
                source_encryption_context: from_context,
                destination_key_id: self.to,
                destination_encryption_context: to_context,
                source_key_id: String::new(),
            })
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
        let ct = B64.encode(&r.ciphertext);
        print(
            output,
            json!({
                "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version,
                "source_key_id": r.source_key_id, "source_key_version": r.source_key_version,
            }),
            ct.clone(),
        );
        Ok(())
    }
}
