//! `keyward-bench cluster --single ADDR --nodes A,B,C`: durable
//! GenerateDataKey (32 B) on a single-node server and on each node of a
//! cluster, one after another in the same run (each node alone, as the
//! single node is), and the ratio of each node to the single node; then
//! lifecycle-write latency (RotateKey through the first node) and the time
//! each rotation takes to reach every other node (DescribeKey polled every
//! millisecond), p50 and p99. `scripts/bench-cluster` starts what it needs.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyward::pb;
use keyward::pb::key_service_client::KeyServiceClient;

use crate::{channels, drive, quantiles, Op};

async fn create_key(addr: &str) -> Result<String, String> {
    let ch = channels(addr, 1).await?;
    let r = KeyServiceClient::new(ch[0].clone())
        .create_key(pb::CreateKeyRequest::default())
        .await
        .map_err(|e| format!("CreateKey on {addr}: {e}"))?;
    Ok(r.into_inner().key.map(|k| k.key_id).unwrap_or_default())
}

async fn primary_version(c: &mut KeyServiceClient<tonic::transport::Channel>, key: &str) -> u32 {
    c.describe_key(pb::DescribeKeyRequest { key_id: key.to_string() })
        .await
        .ok()
        .and_then(|r| r.into_inner().key)
        .map_or(0, |k| k.primary_version)
}

/// See the module documentation.
pub async fn run(
    single: &str,
    nodes: &[String],
    concurrency: usize,
    secs: u64,
    conns: usize,
    rotations: usize,
) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("--nodes: at least one cluster node".into());
    }
    let single_key = create_key(single).await?;
    let cluster_key = create_key(&nodes[0]).await?;
    let mut describers = Vec::new();
    for n in nodes {
        let mut c = KeyServiceClient::new(channels(n, 1).await?.remove(0));
        let start = Instant::now();
        while primary_version(&mut c, &cluster_key).await == 0 {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("{n} never learned the key made on {}", nodes[0]));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        describers.push(c);
    }

    println!(
        "durable GenerateDataKey (32 B), concurrency {concurrency}, {secs} s each, {conns} connections:"
    );
    let single_chans = channels(single, conns).await?;
    // The single node before and after the cluster's nodes (the base is
    // their mean, so drift of a shared machine shows and evens out); each
    // after a short warm-up, not counted.
    let measure_single = async |when: &str| {
        drive(&single_chans, Op::DataKey, &single_key, &[], concurrency, 1).await;
        let r = drive(&single_chans, Op::DataKey, &single_key, &[], concurrency, secs).await;
        println!("  single node ({when:<6}) {:>8.0}/s  {}  errors {}", r.rps, quantiles(&r.hist), r.errors);
        r
    };
    let before = measure_single("before").await;
    let mut measured = Vec::new();
    for n in nodes {
        let chans = channels(n, conns).await?;
        drive(&chans, Op::DataKey, &cluster_key, &[], concurrency, 1).await;
        measured.push((n, drive(&chans, Op::DataKey, &cluster_key, &[], concurrency, secs).await));
    }
    let after = measure_single("after").await;
    let base = (before.rps + after.rps) / 2.0;
    let mut worst = f64::INFINITY;
    for (n, r) in &measured {
        let ratio = r.rps / base;
        worst = worst.min(ratio);
        println!(
            "  cluster {n:<14} {:>8.0}/s  {}  errors {}  ratio to single node {ratio:.2}",
            r.rps,
            quantiles(&r.hist),
            r.errors
        );
    }
    println!("  lowest ratio of a cluster node to the single node ({base:.0}/s): {worst:.2} (target at least 0.90)");

    // Lifecycle writes, and how long each takes to reach every other node.
    let mut writer = describers.remove(0);
    let mut write = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut reach = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for _ in 0..rotations {
        let sent = Instant::now();
        let v = writer
            .rotate_key(pb::RotateKeyRequest { key_id: cluster_key.clone() })
            .await
            .map_err(|e| format!("RotateKey: {e}"))?
            .into_inner()
            .key
            .map_or(0, |k| k.primary_version);
        let acked = Instant::now();
        write.saturating_record((acked - sent).as_micros() as u64);
        for c in &mut describers {
            while primary_version(c, &cluster_key).await < v {
                if acked.elapsed() > Duration::from_secs(10) {
                    return Err(format!("version {v} did not reach every node within 10 s"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        reach.saturating_record(acked.elapsed().as_micros() as u64);
    }
    println!("RotateKey through {} ({rotations} in a row):", nodes[0]);
    println!("  lifecycle write (sent to acknowledged)        {}", quantiles(&write));
    println!("  acknowledged to in force on every other node {}", quantiles(&reach));
    Ok(())
}
