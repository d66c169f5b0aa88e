//! `keyward-bench console`: how long the web console takes to render over a
//! big audit log (scripts/bench-console). A `--dev` server is filled with
//! `--records` data-key records on one key, spread over the last 30 days by
//! moving the server's clock (`--dev-clock-file`), then each page is fetched
//! `--repeat` times over HTTP with the development session.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use keyward::pb;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;

const DAY_MS: i64 = 86_400_000;
/// Slices of the 30 days the records are spread over (one clock move each).
const SLICES: i64 = 120;

type HttpClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Moves the server's clock to `offset_ms` from now and waits until it read it.
async fn set_clock(file: &std::path::Path, offset_ms: i64) -> Result<(), String> {
    std::fs::write(file, offset_ms.to_string()).map_err(|e| format!("{}: {e}", file.display()))?;
    tokio::time::sleep(Duration::from_millis(250)).await;
    Ok(())
}

async fn get(client: &HttpClient, url: &str, cookie: &str) -> Result<(u16, usize, Option<String>), String> {
    let req = hyper::Request::builder()
        .uri(url)
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let set = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(|s| s.to_string());
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body.len(), set))
}

/// Fills, then measures.
pub async fn run(
    keyward: &str,
    console: &str,
    clock_file: &std::path::Path,
    records: usize,
    repeat: usize,
) -> Result<(), String> {
    let ch = tonic::transport::Channel::from_shared(keyward.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{keyward}: {e}"))?;
    set_clock(clock_file, -30 * DAY_MS).await?;
    let key = KeyServiceClient::new(ch.clone())
        .create_key(pb::CreateKeyRequest { alias: "alias/console-bench".into(), ..Default::default() })
        .await
        .map_err(|e| format!("CreateKey: {e}"))?
        .into_inner()
        .key
        .map(|k| k.key_id)
        .unwrap_or_default();
    let started = Instant::now();
    let per_slice = records.div_ceil(SLICES as usize);
    let batch = 500usize;
    let mut written = 0usize;
    for slice in 0..SLICES {
        set_clock(clock_file, -30 * DAY_MS + slice * 30 * DAY_MS / SLICES).await?;
        let want = per_slice.min(records - written);
        let calls: Vec<usize> = (0..want.div_ceil(batch)).map(|i| batch.min(want - i * batch)).collect();
        let failed = futures_util::stream::iter(calls)
            .map(|n| {
                let (ch, key) = (ch.clone(), key.clone());
                async move {
                    CryptoServiceClient::new(ch)
                        .generate_data_key_batch(pb::GenerateDataKeyBatchRequest {
                            key_id: key,
                            count: n as u32,
                            without_plaintext: true,
                            ..Default::default()
                        })
                        .await
                        .is_err()
                }
            })
            .buffer_unordered(8)
            .filter(|f| std::future::ready(*f))
            .count()
            .await;
        if failed > 0 {
            return Err(format!("{failed} GenerateDataKeyBatch calls failed"));
        }
        written += want;
        if written == records {
            break;
        }
    }
    set_clock(clock_file, 0).await?;
    let s = started.elapsed().as_secs_f64();
    println!(
        "filled: {written} data-key records on one key over 30 days in {s:.1} s ({:.0}/s)",
        written as f64 / s
    );

    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let (_, _, set) = get(&client, &format!("{console}/login"), "").await?;
    let cookie = set
        .and_then(|s| s.split(';').next().map(str::to_string))
        .ok_or("the console did not sign in (is the server in --dev?)")?;
    let pages = [
        ("audit explorer, first page (30-day outcome breakdown + newest 50)", "/audit".to_string()),
        ("audit explorer, one key's records", format!("/audit?key={key}")),
        ("audit explorer, one principal's records", "/audit?principal=dev".to_string()),
        ("audit explorer, a key and a principal (reads records)", format!("/audit?key={key}&principal=dev")),
        ("key page, 30-day usage plot (daily, 3 plots)", format!("/keys/{key}?range=30d&bucket=day")),
        (
            "key page, 30-day usage plot (hourly, 720 points x 3)",
            format!("/keys/{key}?range=30d&bucket=hour"),
        ),
        ("key inventory", "/keys".to_string()),
    ];
    println!("{:<58} {:>8} {:>8} {:>8} {:>9}", "page", "p50 ms", "p95 ms", "max ms", "bytes");
    for (name, path) in pages {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut size = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            let (status, n, _) = get(&client, &format!("{console}{path}"), &cookie).await?;
            h.record(t.elapsed().as_micros() as u64).expect("in range");
            if status != 200 {
                return Err(format!("GET {path}: {status}"));
            }
            size = n;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!("{name:<58} {:>8.1} {:>8.1} {:>8.1} {size:>9}", ms(0.5), ms(0.95), h.max() as f64 / 1000.0);
    }
    Ok(())
}
