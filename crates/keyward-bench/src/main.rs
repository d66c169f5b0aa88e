//! `keyward-bench`: measures Keyward against the gRPC ceiling on the same machine.
//!
//! `keyward-bench echo --listen ADDR` serves `keyward.v1.CryptoService` as a
//! no-op: it answers every RPC with a response of the size Keyward would send
//! (zero bytes; no crypto, no audit), so the same client, the same protobufs
//! and the same tonic stack measure the ceiling.
//!
//! `keyward-bench auth --keyward ADDR --grants N --tokens N` measures what
//! the authorization check costs with many access objects stored: Encrypt
//! (4 KiB) as a runtime principal with one grant, then again once N more
//! grants on that principal and N more tokens exist, side by side in one run.
//!
//! `keyward-bench edges --keyward ADDR --aws URL --vault URL [--openbao URL]`
//! drives GenerateDataKey through gRPC, the AWS KMS API and the Vault
//! Transit API of one Keyward (and OpenBao's transit, as a reference) in the
//! same run, and prints each edge's ratio to gRPC.
//!
//! `keyward-bench cluster --single ADDR --nodes A,B,C`: the cluster's
//! durable GenerateDataKey per node against a single node (src/cluster.rs).
//!
//! `keyward-bench run --keyward ADDR [--echo ADDR] [--openbao URL]
//! --concurrency N --seconds S` drives GenerateDataKey (32-byte keys),
//! Encrypt (4 KiB) and Decrypt (4 KiB), and at each concurrency the ceiling
//! (`grpc.health.v1` Check on the same server: tonic's no-op), and prints
//! throughput, p50/p99/p999 latency and the ratio to the ceiling for each
//! operation; with `--echo`, the echo service's rate too, and with
//! `--openbao`, OpenBao's transit datakey rate beside GenerateDataKey.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod cluster;
mod console;
mod edges;
use hdrhistogram::Histogram;
use keyward::pb;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::crypto_service_server::{CryptoService, CryptoServiceServer};
use keyward::pb::key_service_client::KeyServiceClient;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// Ciphertext overhead of format v1: 65-byte header + 16-byte tag.
const OVERHEAD: usize = 81;

#[derive(Debug, Parser)]
#[command(name = "keyward-bench", about = "Load generator for Keyward with a no-op gRPC ceiling")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Durable GenerateDataKey on a single node and on each node of a
    /// cluster in one run (ratios), RotateKey latency and the time a
    /// rotation takes to reach every node (scripts/bench-cluster).
    Cluster {
        /// A single-node Keyward (a --dev server).
        #[arg(long)]
        single: String,
        /// The cluster's nodes, comma-separated (--dev servers).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// HTTP/2 connections to spread the load over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Rotations to time.
        #[arg(long, default_value_t = 100)]
        rotations: usize,
    },
    /// The web console over a big audit log: a `--dev` server (started with
    /// `--dev-clock-file F --console-listen ADDR`) is filled with `--records`
    /// records spread over 30 days, then its pages are timed
    /// (scripts/bench-console).
    Console {
        /// Keyward's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// The console's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        console: String,
        /// The server's --dev-clock-file (moved to spread the records over 30 days).
        #[arg(long)]
        clock_file: std::path::PathBuf,
        /// Audit records to add.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Fetches of each page.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
    /// Serve the no-op echo CryptoService.
    Echo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
    },
    /// Drive Keyward and the echo service and compare.
    Run {
        /// Keyward address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// Also measure this no-op echo CryptoService (`keyward-bench echo`).
        #[arg(long)]
        echo: Option<String>,
        /// Also measure OpenBao's (or Vault's) transit `datakey/plaintext`
        /// here, beside GenerateDataKey (`bao server -dev`, transit enabled).
        #[arg(long)]
        openbao: Option<String>,
        /// OpenBao's token.
        #[arg(long, default_value = "root")]
        openbao_token: String,
        /// Requests in flight (comma-separated list runs each in turn).
        #[arg(long, default_value = "1,16,64,256", value_delimiter = ',')]
        concurrency: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// HTTP/2 connections to spread the load over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Measure the authorization check with many grants and tokens stored
    /// (AccessService; the server's admin is the caller of `--admin-token`,
    /// or anyone against `--dev`).
    Auth {
        /// Keyward address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// Bearer token of an administrator (not needed against --dev).
        #[arg(long, env = "KEYWARD_TOKEN")]
        admin_token: Option<String>,
        /// Grants to add to the measured principal.
        #[arg(long, default_value_t = 10_000)]
        grants: usize,
        /// Tokens to add (for the measured principal).
        #[arg(long, default_value_t = 10_000)]
        tokens: usize,
        /// Requests in flight (comma-separated list runs each in turn).
        #[arg(long, default_value = "1,64", value_delimiter = ',')]
        concurrency: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// HTTP/2 connections to spread the load over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// GenerateDataKey (32 B) through every edge of one Keyward, side by
    /// side: gRPC, the AWS KMS API (SigV4-signed), the Vault Transit API;
    /// and OpenBao's transit engine if `--openbao` is given. Against a
    /// `--dev` server: the AWS access key and Vault token it printed.
    Edges {
        /// Keyward's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// Keyward's AWS KMS endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8900")]
        aws: String,
        /// Access key id for the AWS endpoint.
        #[arg(long, env = "AWS_ACCESS_KEY_ID")]
        aws_access_key_id: String,
        /// Secret access key for the AWS endpoint.
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        aws_secret_access_key: String,
        /// Region of the AWS endpoint.
        #[arg(long, default_value = "keyward-1")]
        aws_region: String,
        /// Keyward's Vault Transit endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8200")]
        vault: String,
        /// Token for the Vault endpoint.
        #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
        vault_token: String,
        /// Keyward's Vault mount.
        #[arg(long, default_value = "transit")]
        vault_mount: String,
        /// OpenBao (or Vault) with a transit engine at `transit/`, for reference.
        #[arg(long)]
        openbao: Option<String>,
        /// OpenBao's token.
        #[arg(long, default_value = "root")]
        openbao_token: String,
        /// Requests in flight (comma-separated list runs each in turn).
        #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
        concurrency: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// HTTP/2 connections for gRPC.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Fill a server with `--keys` keys and `--records` audit records (data
    /// keys without plaintext, spread over the keys), for measuring backup,
    /// restore and root-key rotation of a big store (scripts/bench-recovery).
    Populate {
        /// Keyward address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// Bearer token of an administrator (not needed against --dev).
        #[arg(long, env = "KEYWARD_TOKEN")]
        admin_token: Option<String>,
        /// Keys to create.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Audit records to add (one per data key).
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Measure the Kubernetes KMS v2 plugin: Decrypt latency one at a time
    /// (as a polling apiserver sees it) and the time to decrypt N at once
    /// (an apiserver start-up).
    KmsV2 {
        /// The plugin's unix socket.
        #[arg(long)]
        socket: std::path::PathBuf,
        /// Sequential Decrypts to time.
        #[arg(long, default_value_t = 2000)]
        sequential: usize,
        /// Decrypts issued at once.
        #[arg(long, default_value_t = 5000)]
        burst: usize,
    },
    /// Time `QueryAuditLog` for the newest records of one key, one query
    /// at a time (a big store's index read; scripts/bench-store).
    AuditQuery {
        /// Keyward address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        keyward: String,
        /// Bearer token of an auditor or admin (not needed against --dev).
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: Option<String>,
        /// The key whose records to read (default: that of the newest record naming one).
        #[arg(long)]
        key_id: Option<String>,
        /// Records a page.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Queries to time.
        #[arg(long, default_value_t = 200)]
        repeat: usize,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct Echo;

#[tonic::async_trait]
impl CryptoService for Echo {
    async fn encrypt(&self, r: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let n = r.get_ref().plaintext.len() + OVERHEAD;
        Ok(Response::new(pb::EncryptResponse {
            ciphertext: vec![0; n],
            key_id: r.into_inner().key_id,
            key_version: 1,
            ..Default::default()
        }))
    }
    async fn decrypt(&self, r: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let n = r.get_ref().ciphertext.len().saturating_sub(OVERHEAD);
        Ok(Response::new(pb::DecryptResponse {
            plaintext: vec![0; n],
            key_id: "0".repeat(36),
            key_version: 1,
            ..Default::default()
        }))
    }
    async fn generate_data_key(
        &self,
        r: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let n = r.get_ref().number_of_bytes.unwrap_or(32) as usize;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            plaintext: vec![0; n],
            ciphertext: vec![0; n + OVERHEAD],
            key_id: r.into_inner().key_id,
            key_version: 1,
            ..Default::default()
        }))
    }
    async fn generate_data_key_without_plaintext(
        &self,
        r: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyWithoutPlaintextResponse>, Status> {
        let n = r.get_ref().number_of_bytes.unwrap_or(32) as usize;
        Ok(Response::new(pb::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext: vec![0; n + OVERHEAD],
            key_id: r.into_inner().key_id,
            key_version: 1,
            ..Default::default()
        }))
    }
    async fn generate_random(
        &self,
        r: Request<pb::GenerateRandomRequest>,
    ) -> Result<Response<pb::GenerateRandomResponse>, Status> {
        Ok(Response::new(pb::GenerateRandomResponse {
            random: vec![0; r.into_inner().number_of_bytes as usize],
            ..Default::default()
        }))
    }
    async fn re_encrypt(
        &self,
        r: Request<pb::ReEncryptRequest>,
    ) -> Result<Response<pb::ReEncryptResponse>, Status> {
        let n = r.get_ref().ciphertext.len();
        Ok(Response::new(pb::ReEncryptResponse {
            ciphertext: vec![0; n],
            source_key_version: 1,
            key_id: r.into_inner().destination_key_id,
            key_version: 1,
            ..Default::default()
        }))
    }
    // The batch and streaming forms are not benchmarked; the ceiling
    // server says so instead of pretending to answer.
    async fn generate_data_key_batch(
        &self,
        _: Request<pb::GenerateDataKeyBatchRequest>,
    ) -> Result<Response<pb::GenerateDataKeyBatchResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }
    async fn batch_re_encrypt(
        &self,
        _: Request<pb::BatchReEncryptRequest>,
    ) -> Result<Response<pb::BatchReEncryptResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }
    type ReEncryptStreamStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::ReEncryptResult, Status>> + Send + 'static>,
    >;
    async fn re_encrypt_stream(
        &self,
        _: Request<tonic::Streaming<pb::ReEncryptRequest>>,
    ) -> Result<Response<Self::ReEncryptStreamStream>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    DataKey,
    Encrypt,
    Decrypt,
    /// `grpc.health.v1.Health/Check` on the same server: tonic's no-op, the ceiling.
    Health,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::DataKey => "GenerateDataKey(32 B)",
            Op::Encrypt => "Encrypt(4 KiB)",
            Op::Decrypt => "Decrypt(4 KiB)",
            Op::Health => "health Check",
        }
    }
}

struct Result_ {
    rps: f64,
    hist: Histogram<u64>,
    errors: u64,
}

/// See [`Cmd::Populate`]. Prints what it made and how fast.
async fn populate(
    addr: &str,
    token: Option<&str>,
    keys: usize,
    records: usize,
    concurrency: usize,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let chans = channels(addr, 4).await?;
    let started = std::time::Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..keys)
        .map(|i| {
            let ch = chans[i % chans.len()].clone();
            async move {
                let r = KeyServiceClient::new(ch)
                    .create_key(with_token(pb::CreateKeyRequest::default(), token))
                    .await
                    .map_err(|e| format!("CreateKey: {e}"))?;
                Ok::<_, String>(r.into_inner().key.map(|k| k.key_id).unwrap_or_default())
            }
        })
        .buffer_unordered(concurrency.min(64))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let keys_s = started.elapsed().as_secs_f64();
    println!("created {} keys in {keys_s:.1} s ({:.0}/s)", ids.len(), ids.len() as f64 / keys_s);
    let started = std::time::Instant::now();
    let ids = std::sync::Arc::new(ids);
    let failed = futures_util::stream::iter(0..records)
        .map(|i| {
            let (ch, ids) = (chans[i % chans.len()].clone(), ids.clone());
            async move {
                let req = pb::GenerateDataKeyRequest {
                    key_id: ids[i % ids.len()].clone(),
                    number_of_bytes: Some(32),
                    ..Default::default()
                };
                CryptoServiceClient::new(ch)
                    .generate_data_key_without_plaintext(with_token(req, token))
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let s = started.elapsed().as_secs_f64();
    println!("added {records} audit records in {s:.1} s ({:.0}/s), {failed} failed", records as f64 / s);
    if failed > 0 {
        return Err(format!("{failed} requests failed"));
    }
    Ok(())
}

/// See [`Cmd::AuditQuery`]. Prints the latency percentiles of one page of
/// the key's newest records and how many records a page held.
async fn audit_query(
    addr: &str,
    token: Option<&str>,
    key_id: Option<String>,
    page_size: u32,
    repeat: usize,
) -> Result<(), String> {
    let ch = channels(addr, 1).await?.remove(0);
    let mut client = pb::audit_service_client::AuditServiceClient::new(ch);
    let key_id = match key_id {
        Some(k) => k,
        None => client
            .query_audit_log(with_token(
                pb::QueryAuditLogRequest { page_size: 100, ..Default::default() },
                token,
            ))
            .await
            .map_err(|e| format!("QueryAuditLog: {e}"))?
            .into_inner()
            .records
            .into_iter()
            .map(|r| r.key_id)
            .find(|k| !k.is_empty())
            .ok_or("none of the newest 100 audit records names a key: give --key-id")?,
    };
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut held = 0;
    for _ in 0..repeat.max(1) {
        let req = pb::QueryAuditLogRequest { key_id: key_id.clone(), page_size, ..Default::default() };
        let t = Instant::now();
        let page = client
            .query_audit_log(with_token(req, token))
            .await
            .map_err(|e| format!("QueryAuditLog: {e}"))?;
        hist.record(t.elapsed().as_micros() as u64).expect("in range");
        held = page.into_inner().records.len();
    }
    println!(
        "QueryAuditLog key {key_id}, newest {page_size}: {held} records a page; {} over {} queries",
        quantiles(&hist),
        hist.len()
    );
    Ok(())
}

async fn channels(addr: &str, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let ch = Channel::from_shared(addr.to_string())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// A request with `token` as its bearer token, if one is given.
fn with_token<T>(body: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(body);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("ascii token"));
    }
    r
}

async fn drive(
    chans: &[Channel],
    op: Op,
    key: &str,
    ciphertext: &[u8],
    concurrency: usize,
    secs: u64,
) -> Result_ {
    drive_as(chans, op, key, ciphertext, concurrency, secs, None).await
}

async fn drive_as(
    chans: &[Channel],
    op: Op,
    key: &str,
    ciphertext: &[u8],
    concurrency: usize,
    secs: u64,
    token: Option<&str>,
) -> Result_ {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = CryptoServiceClient::new(chans[i % chans.len()].clone());
        let mut health = tonic_health::pb::health_client::HealthClient::new(chans[i % chans.len()].clone());
        let key = key.to_string();
        let ct = ciphertext.to_vec();
        let token = token.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let token = token.as_deref();
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            let plaintext = vec![0x42u8; 4096];
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match op {
                    Op::DataKey => client
                        .generate_data_key(with_token(
                            pb::GenerateDataKeyRequest {
                                key_id: key.clone(),
                                number_of_bytes: Some(32),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .is_ok(),
                    Op::Encrypt => client
                        .encrypt(with_token(
                            pb::EncryptRequest {
                                key_id: key.clone(),
                                plaintext: plaintext.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .is_ok(),
                    Op::Decrypt => client
                        .decrypt(with_token(
                            pb::DecryptRequest { ciphertext: ct.clone(), ..Default::default() },
                            token,
                        ))
                        .await
                        .is_ok(),
                    Op::Health => health
                        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                        .await
                        .is_ok(),
                };
                if ok {
                    h.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (h, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("task");
        hist.add(h).expect("same bounds");
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Result_ { rps: hist.len() as f64 / elapsed, hist, errors }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// "p50 X ms, p99 Y ms, max Z ms" of a histogram of microseconds.
fn quantiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

/// `keyward-bench run`: each operation against Keyward and, in the same
/// run, the ceiling (the health check on the same server; optionally the
/// echo service), and OpenBao's transit datakey beside GenerateDataKey.
async fn run(
    keyward: &str,
    echo: Option<&str>,
    bao: Option<edges::Vault>,
    levels: &[usize],
    secs: u64,
    conns: usize,
) -> Result<(), String> {
    let kw = channels(keyward, conns).await?;
    let ec = match echo {
        Some(e) => Some(channels(e, conns).await?),
        None => None,
    };
    let key = KeyServiceClient::new(kw[0].clone())
        .create_key(pb::CreateKeyRequest { description: "keyward-bench".into(), ..Default::default() })
        .await
        .map_err(|s| format!("CreateKey on {keyward}: {s}"))?
        .into_inner()
        .key
        .ok_or("CreateKey returned no key")?
        .key_id;
    let ct = CryptoServiceClient::new(kw[0].clone())
        .encrypt(pb::EncryptRequest {
            key_id: key.clone(),
            plaintext: vec![0x42; 4096],
            ..Default::default()
        })
        .await
        .map_err(|s| format!("Encrypt: {s}"))?
        .into_inner()
        .ciphertext;
    let echo_ct = vec![0u8; ct.len()];
    let http = edges::client();
    if let Some(b) = &bao {
        edges::create_transit_key(&http, b).await?;
    }
    println!("keyward-bench: {secs}s per measurement, {conns} connections each; latency in ms");
    println!(
        "ceiling: grpc.health.v1 Check on the same server{}{}",
        if ec.is_some() { "; echo: the no-op CryptoService" } else { "" },
        if bao.is_some() { "; bao: OpenBao transit datakey/plaintext" } else { "" }
    );
    println!(
        "{:<22} {:>5} | {:>9} {:>7} {:>7} {:>7} {:>5} | {:>9} {:>7} {:>7} | {:>6} | {:>9} | {:>9}",
        "operation",
        "conc",
        "kw req/s",
        "p50",
        "p99",
        "p999",
        "errs",
        "ceil r/s",
        "p50",
        "p99",
        "ratio",
        "echo r/s",
        "bao r/s"
    );
    for &c in levels {
        let ceiling = drive(&kw, Op::Health, &key, &ct, c, secs).await;
        for op in [Op::DataKey, Op::Encrypt, Op::Decrypt] {
            let k = drive(&kw, op, &key, &ct, c, secs).await;
            let e = match &ec {
                Some(ec) => format!("{:>9.0}", drive(ec, op, &key, &echo_ct, c, secs).await.rps),
                None => format!("{:>9}", "-"),
            };
            let b = match (&bao, op) {
                (Some(b), Op::DataKey) => {
                    let b = b.clone();
                    let m =
                        edges::drive(&http, std::sync::Arc::new(move || edges::vault_request(&b)), c, secs)
                            .await;
                    format!("{:>9.0}", m.rps)
                }
                _ => format!("{:>9}", "-"),
            };
            println!(
                "{:<22} {:>5} | {:>9.0} {:>7} {:>7} {:>7} {:>5} | {:>9.0} {:>7} {:>7} | {:>6.2} | {e} | {b}",
                op.name(),
                c,
                k.rps,
                ms(k.hist.value_at_quantile(0.5)),
                ms(k.hist.value_at_quantile(0.99)),
                ms(k.hist.value_at_quantile(0.999)),
                k.errors + ceiling.errors,
                ceiling.rps,
                ms(ceiling.hist.value_at_quantile(0.5)),
                ms(ceiling.hist.value_at_quantile(0.99)),
                if ceiling.rps > 0.0 { k.rps / ceiling.rps } else { 0.0 },
            );
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Echo { listen } => {
                let listener =
                    tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("{listen}: {e}"))?;
                eprintln!("echo CryptoService on {listen}");
                Server::builder()
                    .add_service(CryptoServiceServer::new(Echo))
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            Cmd::Run { keyward, echo, openbao, openbao_token, concurrency, seconds, connections } => {
                let bao = openbao.map(|endpoint| edges::Vault {
                    endpoint,
                    token: openbao_token,
                    mount: "transit".into(),
                    key: "keyward-bench".into(),
                });
                run(&keyward, echo.as_deref(), bao, &concurrency, seconds, connections).await
            }
            Cmd::Cluster { single, nodes, concurrency, seconds, connections, rotations } => {
                cluster::run(&single, &nodes, concurrency, seconds, connections, rotations).await
            }
            Cmd::KmsV2 { socket, sequential, burst } => kms_v2(socket, sequential, burst).await,
            Cmd::AuditQuery { keyward, token, key_id, page_size, repeat } => {
                audit_query(&keyward, token.as_deref(), key_id, page_size, repeat).await
            }
            Cmd::Console { keyward, console, clock_file, records, repeat } => {
                console::run(&keyward, &console, &clock_file, records, repeat).await
            }
            Cmd::Populate { keyward, admin_token, keys, records, concurrency } => {
                populate(&keyward, admin_token.as_deref(), keys, records, concurrency).await
            }
            Cmd::Edges {
                keyward,
                aws,
                aws_access_key_id,
                aws_secret_access_key,
                aws_region,
                vault,
                vault_token,
                vault_mount,
                openbao,
                openbao_token,
                concurrency,
                seconds,
                connections,
            } => {
                let aws = edges::Aws {
                    endpoint: aws,
                    access_key_id: aws_access_key_id,
                    secret: aws_secret_access_key,
                    region: aws_region,
                    key: String::new(),
                };
                let vault = edges::Vault {
                    endpoint: vault,
                    token: vault_token,
                    mount: vault_mount,
                    key: String::new(),
                };
                let bao = openbao.map(|endpoint| edges::Vault {
                    endpoint,
                    token: openbao_token,
                    mount: "transit".into(),
                    key: "keyward-bench".into(),
                });
                edges_run(&keyward, aws, vault, bao, &concurrency, seconds, connections).await
            }
            Cmd::Auth { keyward, admin_token, grants, tokens, concurrency, seconds, connections } => {
                auth(&keyward, admin_token.as_deref(), grants, tokens, &concurrency, seconds, connections)
                    .await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn kms_v2(socket: std::path::PathBuf, sequential: usize, burst: usize) -> Result<(), String> {
    use keyward::k8s_pb as v2;
    let path = socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://kms.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut client = v2::key_management_service_client::KeyManagementServiceClient::new(channel);
    let enc = client
        .encrypt(v2::EncryptRequest { plaintext: vec![7; 32], uid: "bench-encrypt".into() })
        .await
        .map_err(|s| format!("Encrypt: {s}"))?
        .into_inner();
    let req = || v2::DecryptRequest {
        ciphertext: enc.ciphertext.clone(),
        uid: "bench".into(),
        key_id: enc.key_id.clone(),
        annotations: HashMap::new(),
    };
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let started = Instant::now();
    for _ in 0..sequential {
        let t = Instant::now();
        client.decrypt(req()).await.map_err(|s| format!("Decrypt: {s}"))?;
        h.saturating_record(t.elapsed().as_micros() as u64);
    }
    println!(
        "KMS v2 Decrypt, one at a time: {sequential} in {:.2} s; p50 {} ms, p99 {} ms, p999 {} ms, max {} ms",
        started.elapsed().as_secs_f64(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..burst)
        .map(|_| {
            let (mut c, r) = (client.clone(), req());
            tokio::spawn(async move {
                let t = Instant::now();
                c.decrypt(r).await.map(|_| t.elapsed())
            })
        })
        .collect();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        let d = t.await.map_err(|e| e.to_string())?.map_err(|s| format!("Decrypt: {s}"))?;
        h.saturating_record(d.as_micros() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "KMS v2 Decrypt, {burst} at once: all done in {secs:.2} s ({:.0}/s); p50 {} ms, p99 {} ms",
        burst as f64 / secs,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99))
    );
    Ok(())
}

/// `keyward-bench auth`: Encrypt as a runtime principal with one grant, then
/// with `grants` more grants on it and `tokens` more tokens stored.
async fn auth(
    keyward: &str,
    admin: Option<&str>,
    grants: usize,
    tokens: usize,
    levels: &[usize],
    secs: u64,
    conns: usize,
) -> Result<(), String> {
    use keyward::pb::access_service_client::AccessServiceClient;
    let kw = channels(keyward, conns).await?;
    let mut access = AccessServiceClient::new(kw[0].clone());
    let key = KeyServiceClient::new(kw[0].clone())
        .create_key(with_token(
            pb::CreateKeyRequest { description: "keyward-bench auth".into(), ..Default::default() },
            admin,
        ))
        .await
        .map_err(|s| format!("CreateKey on {keyward}: {s}"))?
        .into_inner()
        .key
        .ok_or("CreateKey returned no key")?
        .key_id;
    let name = format!("bench-{}", &key[..8]);
    access
        .create_principal(with_token(
            pb::CreatePrincipalRequest { name: name.clone(), roles: vec!["user".into()] },
            admin,
        ))
        .await
        .map_err(|s| format!("CreatePrincipal: {s}"))?;
    let grant = |key: String| pb::CreateGrantRequest {
        principal: name.clone(),
        keys: vec![key],
        operations: vec!["encrypt".into(), "decrypt".into()],
        ..Default::default()
    };
    access
        .create_grant(with_token(grant(key.clone()), admin))
        .await
        .map_err(|s| format!("CreateGrant: {s}"))?;
    let token = access
        .create_token(with_token(pb::CreateTokenRequest { principal: name.clone(), ttl: None }, admin))
        .await
        .map_err(|s| format!("CreateToken: {s}"))?
        .into_inner()
        .token;
    let measure = |label: &'static str, token: String| {
        let (kw, key) = (kw.clone(), key.clone());
        async move {
            let mut rows = Vec::new();
            for &c in levels {
                let r = drive_as(&kw, Op::Encrypt, &key, &[], c, secs, Some(&token)).await;
                println!(
                    "{:<28} {:>5} | {:>9.0} {:>7} {:>7} {:>7} {:>5}",
                    label,
                    c,
                    r.rps,
                    ms(r.hist.value_at_quantile(0.5)),
                    ms(r.hist.value_at_quantile(0.99)),
                    ms(r.hist.value_at_quantile(0.999)),
                    r.errors
                );
                rows.push(r);
            }
            rows
        }
    };
    println!(
        "keyward-bench auth: Encrypt(4 KiB) as a runtime principal; {secs}s per measurement; latency in ms"
    );
    println!(
        "{:<28} {:>5} | {:>9} {:>7} {:>7} {:>7} {:>5}",
        "stored", "conc", "req/s", "p50", "p99", "p999", "errs"
    );
    // Warm the connections and the server up before the first figure.
    drive_as(&kw, Op::Encrypt, &key, &[], levels.iter().copied().max().unwrap_or(1), 1, Some(&token)).await;
    let one = measure("1 grant, 1 token", token.clone()).await;
    // Fill: many grants on the measured principal, each naming another key
    // (made here: a grant names an existing key), and many tokens, several
    // requests at a time.
    let started = Instant::now();
    let mut keys_made = Vec::with_capacity(grants);
    while keys_made.len() < grants {
        let n = (grants - keys_made.len()).min(64);
        let made: Vec<_> = (0..n)
            .map(|_| {
                let mut k = KeyServiceClient::new(kw[keys_made.len() % kw.len()].clone());
                let admin = admin.map(str::to_string);
                tokio::spawn(async move {
                    let req = pb::CreateKeyRequest {
                        description: "keyward-bench auth".into(),
                        ..Default::default()
                    };
                    k.create_key(with_token(req, admin.as_deref()))
                        .await
                        .map_err(|s| format!("CreateKey: {s}"))?
                        .into_inner()
                        .key
                        .map(|k| k.key_id)
                        .ok_or_else(|| "CreateKey returned no key".to_string())
                })
            })
            .collect();
        for t in made {
            keys_made.push(t.await.map_err(|e| e.to_string())??);
        }
    }
    let mut next = 0usize;
    while next < grants.max(tokens) {
        let batch: Vec<_> = (next..(next + 64).min(grants.max(tokens)))
            .map(|i| {
                let mut access = access.clone();
                let (grant_req, token_req) = (
                    (i < grants).then(|| grant(keys_made[i].clone())),
                    (i < tokens).then(|| pb::CreateTokenRequest { principal: name.clone(), ttl: None }),
                );
                let admin = admin.map(str::to_string);
                tokio::spawn(async move {
                    if let Some(g) = grant_req {
                        access
                            .create_grant(with_token(g, admin.as_deref()))
                            .await
                            .map_err(|s| s.to_string())?;
                    }
                    if let Some(t) = token_req {
                        access
                            .create_token(with_token(t, admin.as_deref()))
                            .await
                            .map_err(|s| s.to_string())?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for t in batch {
            t.await.map_err(|e| e.to_string())??;
        }
        next += 64;
    }
    eprintln!("stored {grants} grants and {tokens} tokens in {:.1}s", started.elapsed().as_secs_f64());
    // A control measured after the fill too: another principal with one
    // grant, so what the fill changed besides the measured principal's
    // grants (a bigger store, RocksDB compacting) is in both figures.
    let control = format!("{name}-control");
    access
        .create_principal(with_token(
            pb::CreatePrincipalRequest { name: control.clone(), roles: vec!["user".into()] },
            admin,
        ))
        .await
        .map_err(|s| format!("CreatePrincipal: {s}"))?;
    let mut g = grant(key.clone());
    g.principal = control.clone();
    access.create_grant(with_token(g, admin)).await.map_err(|s| format!("CreateGrant: {s}"))?;
    let control_token = access
        .create_token(with_token(pb::CreateTokenRequest { principal: control, ttl: None }, admin))
        .await
        .map_err(|s| format!("CreateToken: {s}"))?
        .into_inner()
        .token;
    let label = if grants == 10_000 && tokens == 10_000 {
        "+10k grants, +10k tokens"
    } else {
        "+N grants, +N tokens"
    };
    let many = measure(label, token.clone()).await;
    let after = measure("control: 1 grant, after fill", control_token.clone()).await;
    let many2 = measure(label, token.clone()).await;
    let after2 = measure("control: 1 grant, after fill", control_token).await;
    let rate = |x: &Result_| x.rps;
    for (i, c) in levels.iter().enumerate() {
        let (a, b) = (&one[i], &many[i]);
        println!(
            "ratio at {c:>3} in flight: many / one before the fill: req/s {:.3}, p50 {:.3}, p99 {:.3}",
            if a.rps > 0.0 { b.rps / a.rps } else { 0.0 },
            b.hist.value_at_quantile(0.5) as f64 / a.hist.value_at_quantile(0.5).max(1) as f64,
            b.hist.value_at_quantile(0.99) as f64 / a.hist.value_at_quantile(0.99).max(1) as f64,
        );
        let (m, k) = (rate(&many[i]) + rate(&many2[i]), rate(&after[i]) + rate(&after2[i]));
        let p50 = |x: &Result_| x.hist.value_at_quantile(0.5) as f64;
        println!(
            "ratio at {c:>3} in flight: many / control after the fill (two rounds each): req/s {:.3}, p50 {:.3}",
            if k > 0.0 { m / k } else { 0.0 },
            (p50(&many[i]) + p50(&many2[i])) / (p50(&after[i]) + p50(&after2[i])).max(1.0),
        );
    }
    Ok(())
}

/// `keyward-bench edges`.
async fn edges_run(
    keyward: &str,
    mut aws: edges::Aws,
    mut vault: edges::Vault,
    bao: Option<edges::Vault>,
    levels: &[usize],
    secs: u64,
    conns: usize,
) -> Result<(), String> {
    let kw = channels(keyward, conns).await?;
    // One key for every edge: an alias is a Vault key name.
    let name = format!("bench-{}", std::process::id());
    let key = KeyServiceClient::new(kw[0].clone())
        .create_key(pb::CreateKeyRequest {
            description: "keyward-bench edges".into(),
            alias: format!("alias/{name}"),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("CreateKey on {keyward}: {s}"))?
        .into_inner()
        .key
        .ok_or("CreateKey returned no key")?
        .key_id;
    aws.key = key.clone();
    vault.key = name;
    let http = edges::client();
    let check = |m: &edges::Measured, what: &str| match &m.first_error {
        Some(e) if m.hist.is_empty() => Err(format!("{what}: every request failed: {e}")),
        _ => Ok(()),
    };
    if let Some(b) = &bao {
        edges::create_transit_key(&http, b).await?;
    }
    println!("keyward-bench edges: GenerateDataKey (32 B), {secs}s per measurement; latency in ms");
    println!(
        "{:<14} {:>5} | {:>9} {:>7} {:>7} {:>7} {:>6} | {:>8}",
        "edge", "conc", "req/s", "p50", "p99", "p999", "errs", "/ gRPC"
    );
    for &c in levels {
        let g = drive(&kw, Op::DataKey, &key, &[], c, secs).await;
        let row = |edge: &str, m: &edges::Measured, grpc: f64| {
            println!(
                "{:<14} {:>5} | {:>9.0} {:>7} {:>7} {:>7} {:>6} | {:>8.2}",
                edge,
                c,
                m.rps,
                ms(m.hist.value_at_quantile(0.5)),
                ms(m.hist.value_at_quantile(0.99)),
                ms(m.hist.value_at_quantile(0.999)),
                m.errors,
                if grpc > 0.0 { m.rps / grpc } else { 0.0 },
            )
        };
        let grpc = edges::Measured { rps: g.rps, hist: g.hist, errors: g.errors, first_error: None };
        row("grpc", &grpc, grpc.rps);
        let a = aws.clone();
        let m = edges::drive(&http, std::sync::Arc::new(move || edges::aws_request(&a)), c, secs).await;
        check(&m, "aws-kms")?;
        row("aws-kms", &m, grpc.rps);
        let v = vault.clone();
        let m = edges::drive(&http, std::sync::Arc::new(move || edges::vault_request(&v)), c, secs).await;
        check(&m, "vault-transit")?;
        row("vault-transit", &m, grpc.rps);
        if let Some(b) = &bao {
            let b = b.clone();
            let m = edges::drive(&http, std::sync::Arc::new(move || edges::vault_request(&b)), c, secs).await;
            check(&m, "openbao")?;
            row("openbao", &m, grpc.rps);
        }
    }
    Ok(())
}
