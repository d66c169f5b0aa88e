//! `keyward rewrap`: moves many stored ciphertexts to a key's current
//! version over one `ReEncryptStream`, without the client ever seeing a
//! plaintext.
//!
//! Input: one base64 ciphertext per line (a file or stdin). Output: one line
//! per input line, in order: the new ciphertext in base64, or an empty line
//! when that item failed (the reason goes to stderr with the line number;
//! the exit status is then 1). Blank input lines stay blank. A progress bar
//! on stderr shows when stderr is a terminal.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::client::{Client, ClientFlags, Connection};
use super::input::parse_pair;
use super::render::Output;
use super::{CliError, ClientCommand};
use crate::checksum::crc;
use crate::pb;

/// `keyward rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// Destination key id or alias (usually the same key, after a rotation).
    #[arg(long)]
    pub to: String,
    /// File of base64 ciphertexts, one per line ("-" or absent: stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Write the rewrapped ciphertexts here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Source encryption context k=v (repeatable; the same for every line).
    #[arg(long = "context", value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Destination encryption context k=v (repeatable; defaults to the source context).
    #[arg(long = "to-context", value_parser = parse_pair)]
    pub to_context: Vec<(String, String)>,
    /// Connection flags.
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// What became of one input line before it reached the server.
enum Line {
    /// Sent as the next stream item.
    Sent,
    /// Blank: copied through.
    Blank,
    /// Not base64: reported, never sent.
    Bad(String),
}

/// Requests in flight between the reader and the stream.
const QUEUE: usize = 256;

impl ClientCommand for RewrapArgs {
    fn flags(&self) -> &ClientFlags {
        &self.flags
    }

    /// Its output is the rewrapped lines, whatever `--output` says.
    async fn run(self, conn: &Connection, _output: Output) -> Result<(), CliError> {
        let client = Client::connect(conn).await?;
        rewrap(&client, self).await
    }
}

async fn rewrap(client: &Client, a: RewrapArgs) -> Result<(), CliError> {
    let addr = client.addr.as_str();
    let mut crypto = client.crypto();
    let io = |what: &str, e: std::io::Error| CliError::Input(format!("{what}: {e}"));
    let from_stdin = a.input.as_ref().is_none_or(|p| p.as_os_str() == "-");
    // Progress is measured in input bytes, so the file is read only once.
    let (reader, total): (Box<dyn BufRead + Send>, Option<u64>) = match &a.input {
        Some(p) if !from_stdin => {
            let f = std::fs::File::open(p).map_err(|e| io(&p.display().to_string(), e))?;
            let size = f.metadata().map(|m| m.len()).ok();
            (Box::new(std::io::BufReader::new(f)), size)
        }
        _ => (Box::new(std::io::BufReader::new(std::io::stdin())), None),
    };
    // Writing over the input would truncate it before it is read.
    if let (Some(i), Some(o)) = (&a.input, &a.out) {
        let same = match (std::fs::canonicalize(i), std::fs::canonicalize(o)) {
            (Ok(i), Ok(o)) => i == o,
            _ => false,
        };
        if same {
            return Err(CliError::Input(format!(
                "--out {} is the input file; write to another file and move it afterwards",
                o.display()
            )));
        }
    }
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => {
            Box::new(BufWriter::new(std::fs::File::create(p).map_err(|e| io(&p.display().to_string(), e))?))
        }
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let source_context: HashMap<String, String> = a.context.iter().cloned().collect();
    let destination_context: HashMap<String, String> =
        if a.to_context.is_empty() { source_context.clone() } else { a.to_context.into_iter().collect() };
    let (src_sum, dst_sum) = (client.context_sum(&source_context), client.context_sum(&destination_context));
    let sums = client.checksums;

    // A reader thread turns lines into stream items (bounded, so a huge
    // file is never held in memory) and tells the writer, in order, what
    // became of each line.
    let (req_tx, req_rx) = mpsc::channel::<pb::ReEncryptRequest>(QUEUE);
    // Each line's fate, with its size in bytes (for the progress bar).
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Result<(Line, u64), String>>();
    let to = a.to.clone();
    std::thread::spawn(move || {
        for (n, line) in reader.lines().enumerate() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = line_tx.send(Err(format!("reading line {}: {e}", n + 1)));
                    return;
                }
            };
            let size = line.len() as u64 + 1;
            let line = line.trim();
            if line.is_empty() {
                let _ = line_tx.send(Ok((Line::Blank, size)));
                continue;
            }
            match B64.decode(line) {
                Err(e) => {
                    let _ = line_tx.send(Ok((Line::Bad(format!("not valid base64: {e}")), size)));
                }
                Ok(ciphertext) => {
                    let _ = line_tx.send(Ok((Line::Sent, size)));
                    let req = pb::ReEncryptRequest {
                        ciphertext_crc32c: sums.then(|| crc(&ciphertext)),
                        source_encryption_context_crc32c: src_sum,
                        destination_encryption_context_crc32c: dst_sum,
                        ciphertext,
                        source_encryption_context: source_context.clone(),
                        destination_key_id: to.clone(),
                        destination_encryption_context: destination_context.clone(),
                        source_key_id: String::new(),
                    };
                    if req_tx.blocking_send(req).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let requests =
        futures_util::stream::unfold(req_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let rpc = |s: tonic::Status| CliError::Rpc {
        addr: addr.to_string(),
        code: s.code(),
        message: s.message().to_string(),
    };
    let mut results = crypto.re_encrypt_stream(requests).await.map_err(rpc)?.into_inner();

    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let (mut ok, mut failed, mut n) = (0u64, 0u64, 0u64);
    let write_err = |e: std::io::Error| CliError::Input(format!("writing output: {e}"));
    while let Some(line) = line_rx.recv().await {
        n += 1;
        let (line, size) = line.map_err(CliError::Input)?;
        match line {
            Line::Blank => writeln!(out).map_err(write_err)?,
            Line::Bad(why) => {
                failed += 1;
                bar.suspend(|| eprintln!("line {n}: {why}"));
                writeln!(out).map_err(write_err)?;
            }
            Line::Sent => {
                let r =
                    results.message().await.map_err(rpc)?.ok_or_else(|| {
                        CliError::Input(format!("the server ended the stream before line {n}"))
                    })?;
                match r.result {
                    Some(pb::re_encrypt_result::Result::Ok(r)) => {
                        client.check("ciphertext", &r.ciphertext, r.ciphertext_crc32c)?;
                        ok += 1;
                        writeln!(out, "{}", B64.encode(&r.ciphertext)).map_err(write_err)?;
                    }
                    Some(pb::re_encrypt_result::Result::Error(e)) => {
                        failed += 1;
                        let code = tonic::Code::from_i32(e.code);
                        bar.suspend(|| eprintln!("line {n}: {code:?}: {}", e.message));
                        writeln!(out).map_err(write_err)?;
                    }
                    None => return Err(CliError::Input(format!("empty result for line {n}"))),
                }
            }
        }
        bar.inc(size);
        if n % 256 == 0 {
            bar.set_message(format!("{n} lines"));
        }
    }
    out.flush().map_err(write_err)?;
    bar.finish_and_clear();
    eprintln!("rewrapped {ok} ciphertexts, {failed} failed (via {addr})");
    if failed > 0 {
        return Err(CliError::Input(format!("{failed} of {} lines could not be rewrapped", ok + failed)));
    }
    Ok(())
}
