//! `keyward-bench edges`: GenerateDataKey (32-byte keys) through each edge of
//! one Keyward in the same run: gRPC, the AWS KMS JSON API (SigV4-signed per
//! request, as an SDK does) and the Vault Transit API (`datakey/plaintext`),
//! and optionally OpenBao's transit engine (`bao server -dev`) as the
//! reference, at each concurrency; prints throughput, latency and each
//! edge's ratio to gRPC.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::{digest, hmac};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An AWS endpoint and its credentials.
#[derive(Debug, Clone)]
pub struct Aws {
    /// `http://host:port`.
    pub endpoint: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret: String,
    /// Signing region.
    pub region: String,
    /// Key id, ARN or alias.
    pub key: String,
}

/// A Vault-API endpoint and its token.
#[derive(Debug, Clone)]
pub struct Vault {
    /// `http://host:port`.
    pub endpoint: String,
    /// `X-Vault-Token`.
    pub token: String,
    /// The mount.
    pub mount: String,
    /// The key name.
    pub key: String,
}

/// One request to send.
pub type MakeRequest = Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync>;

/// The measurement of one edge at one concurrency.
#[derive(Debug)]
pub struct Measured {
    /// Requests per second (successful ones).
    pub rps: f64,
    /// Latency, µs.
    pub hist: Histogram<u64>,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b))
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg).as_ref().to_vec()
}

/// A SigV4-signed `TrentService.GenerateDataKey`, signed now (as botocore signs:
/// content-type, host, x-amz-date, x-amz-target).
pub fn aws_request(a: &Aws) -> hyper::Request<Full<Bytes>> {
    let body = format!(r#"{{"KeyId":"{}","NumberOfBytes":32}}"#, a.key);
    let host = a.endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (date, time) = amz_date(now);
    let target = "TrentService.GenerateDataKey";
    let ctype = "application/x-amz-json-1.1";
    let canonical = format!(
        "POST\n/\n\ncontent-type:{ctype}\nhost:{host}\nx-amz-date:{time}\nx-amz-target:{target}\n\n\
         content-type;host;x-amz-date;x-amz-target\n{}",
        hex_sha256(body.as_bytes())
    );
    let scope = format!("{date}/{}/kms/aws4_request", a.region);
    let sts = format!("AWS4-HMAC-SHA256\n{time}\n{scope}\n{}", hex_sha256(canonical.as_bytes()));
    let mut k = hmac(format!("AWS4{}", a.secret).as_bytes(), date.as_bytes());
    for part in [a.region.as_str(), "kms", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    let sig = hex::encode(hmac(&k, sts.as_bytes()));
    hyper::Request::post(format!("{}/", a.endpoint.trim_end_matches('/')))
        .header("content-type", ctype)
        .header("host", host)
        .header("x-amz-date", &time)
        .header("x-amz-target", target)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={sig}",
                a.access_key_id
            ),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}

/// A Vault `datakey/plaintext/:name` request (256 bits).
pub fn vault_request(v: &Vault) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!(
        "{}/v1/{}/datakey/plaintext/{}",
        v.endpoint.trim_end_matches('/'),
        v.mount,
        v.key
    ))
    .header("x-vault-token", &v.token)
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(br#"{"bits":256}"#)))
    .expect("valid request")
}

/// `yyyymmdd` and `yyyymmddThhmmssZ` of Unix seconds.
fn amz_date(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!("{date}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60);
    (date, time)
}

/// Creates the transit key `v.key` (idempotent in Vault and OpenBao).
pub async fn create_transit_key(client: &HttpClient, v: &Vault) -> Result<(), String> {
    let req =
        hyper::Request::post(format!("{}/v1/{}/keys/{}", v.endpoint.trim_end_matches('/'), v.mount, v.key))
            .header("x-vault-token", &v.token)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{}: {e}", v.endpoint))?;
    if !resp.status().is_success() {
        return Err(format!("{}: creating transit key {} answered {}", v.endpoint, v.key, resp.status()));
    }
    Ok(())
}

/// A keep-alive HTTP/1 client (one connection per request in flight).
pub fn client() -> HttpClient {
    let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(c)
}

/// Sends `make()` from `concurrency` tasks for `secs`; a 2xx whose body was
/// read is a success.
pub async fn drive(client: &HttpClient, make: MakeRequest, concurrency: usize, secs: u64) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, make) = (client.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut errors, mut first) = (0u64, None);
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = match client.request(make()).await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(b) => {
                                Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&b.to_bytes())))
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => h.saturating_record(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (h, errors, first)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (h, e, f) = t.await.expect("task");
        hist.add(h).expect("same bounds");
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let rps = hist.len() as f64 / started.elapsed().as_secs_f64();
    Measured { rps, hist, errors, first_error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(amz_date(1_440_938_160), ("20150830".into(), "20150830T123600Z".into()));
        assert_eq!(amz_date(0), ("19700101".into(), "19700101T000000Z".into()));
        assert_eq!(amz_date(1_796_188_474).0, "20261202");
    }

    #[test]
    fn the_signature_matches_the_aws_suite_key_derivation() {
        // AWS's documented example signing key (kSigning for 20120215/us-east-1/iam).
        let mut k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        assert_eq!(hex::encode(k), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }
}
