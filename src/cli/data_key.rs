//! `keyward data-key` (one data key, or `--count N` in one batch call) and
//! `keyward random` (bytes from the server's CSPRNG).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use serde_json::json;

use super::client::{Client, ClientFlags, Connection};
use super::input::{context, parse_pair};
use super::render::{print, Output};
use super::{CliError, ClientCommand};
use crate::pb;

/// `keyward data-key`.
#[derive(Debug, Args)]
pub struct DataKeyArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// Length in bytes.
    #[arg(long, default_value_t = 32)]
    pub bytes: u32,
    /// Encryption context k=v (repeatable).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Only the encrypted data key.
    #[arg(long)]
    pub no_plaintext: bool,
    /// How many data keys (1 to 1000), in one call.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `keyward random`.
#[derive(Debug, Args)]
pub struct RandomArgs {
    /// How many (1 to 1024).
    #[arg(long, default_value_t = 32)]
    pub bytes: u32,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

impl ClientCommand for DataKeyArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Prints the data key(s): plaintext and ciphertext in base64.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        if self.count != 1 {
            return self.batch(&c, output).await;
        }
        let context = context(self.context);
        let req = pb::GenerateDataKeyRequest {
            key_id: self.key,
            number_of_bytes: Some(self.bytes),
            encryption_context_crc32c: c.context_sum(&context),
            encryption_context: context,
        };
        let mut crypto = c.crypto();
        if self.no_plaintext {
            let r = crypto.generate_data_key_without_plaintext(req).await.map_err(|s| c.rpc(s))?.into_inner();
            c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
            let ct = B64.encode(&r.ciphertext);
            print(
                output,
                json!({ "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
                format!("ciphertext: {ct}\nkey_id:     {}\nversion:    {}", r.key_id, r.key_version),
            );
        } else {
            let r = crypto.generate_data_key(req).await.map_err(|s| c.rpc(s))?.into_inner();
            c.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
            c.check("plaintext", &r.plaintext, r.plaintext_crc32c)?;
            let pt = zeroize::Zeroizing::new(B64.encode(&r.plaintext));
            let ct = B64.encode(&r.ciphertext);
            print(
                output,
                json!({ "plaintext": *pt, "ciphertext": ct, "key_id": r.key_id, "key_version": r.key_version }),
                format!(
                    "plaintext:  {}\nciphertext: {ct}\nkey_id:     {}\nversion:    {}",
                    *pt, r.key_id, r.key_version
                ),
            );
        }
        Ok(())
    }
}

impl DataKeyArgs {
    /// `--count N`: one GenerateDataKeyBatch call, one line per key.
    async fn batch(self, c: &Client, output: Output) -> Result<(), CliError> {
        let context = context(self.context);
        let r = c
            .crypto()
            .generate_data_key_batch(pb::GenerateDataKeyBatchRequest {
                key_id: self.key,
                number_of_bytes: Some(self.bytes),
                encryption_context_crc32c: c.context_sum(&context),
                encryption_context: context,
                count: self.count,
                without_plaintext: self.no_plaintext,
            })
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        let mut items = Vec::new();
        let mut lines = Vec::new();
        for k in &r.data_keys {
            c.check("ciphertext", &k.ciphertext, k.ciphertext_crc32c)?;
            c.check("plaintext", &k.plaintext, k.plaintext_crc32c)?;
            let ct = B64.encode(&k.ciphertext);
            let pt = zeroize::Zeroizing::new(B64.encode(&k.plaintext));
            let mut j = json!({ "ciphertext": ct, "key_id": k.key_id, "key_version": k.key_version });
            if self.no_plaintext {
                lines.push(ct);
            } else {
                j["plaintext"] = json!(*pt);
                lines.push(format!("{} {ct}", *pt));
            }
            items.push(j);
        }
        print(output, json!({ "data_keys": items }), lines.join("\n"));
        Ok(())
    }
}

impl ClientCommand for RandomArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Prints the bytes in base64.
    async fn run(self, conn: &Connection, output: Output) -> Result<(), CliError> {
        let c = Client::connect(conn).await?;
        let r = c
            .crypto()
            .generate_random(pb::GenerateRandomRequest { number_of_bytes: self.bytes })
            .await
            .map_err(|s| c.rpc(s))?
            .into_inner();
        c.check("random", &r.random, r.random_crc32c)?;
        let b = zeroize::Zeroizing::new(B64.encode(&r.random));
        print(output, json!({ "random": *b }), b.to_string());
        Ok(())
    }
}
