//! Prometheus metrics: per-RPC counters and latency (the names of
//! go-grpc-prometheus), audit batch size, commit latency and failures, and
//! keys by state. Served as text exposition on a separate listener
//! (`--metrics-listen`, `GET /metrics`), off by default.
//!
//! Labels carry only service, method, gRPC code and key state: never key
//! ids, principals, context values or anything a caller sent (a path that
//! names no known RPC is labelled `unknown`, see `crate::observe`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use keyward_core::{AuditObserver, KeyState};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::seal::Seal;

/// Every metric of one server.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
    audit_batch: prometheus::Histogram,
    audit_commit: prometheus::Histogram,
    audit_failures: IntCounter,
    audit_failed_records: IntCounter,
    keys: IntGaugeVec,
    sealed: prometheus::IntGauge,
}

const RPC_LABELS: [&str; 3] = ["grpc_type", "grpc_service", "grpc_method"];

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let started = IntCounterVec::new(
            Opts::new("grpc_server_started_total", "RPCs started on the server."),
            &RPC_LABELS,
        )
        .expect("metric");
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("metric");
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Response latency (seconds) of RPCs handled by the server, until the response starts.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &RPC_LABELS,
        )
        .expect("metric");
        let audit_batch = prometheus::Histogram::with_opts(
            HistogramOpts::new("keyward_audit_batch_records", "Audit records per synced write.")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 13).expect("buckets")),
        )
        .expect("metric");
        let audit_commit = prometheus::Histogram::with_opts(
            HistogramOpts::new("keyward_audit_commit_seconds", "Time to write and sync one audit batch.")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
                ]),
        )
        .expect("metric");
        let audit_failures =
            IntCounter::new("keyward_audit_write_failures_total", "Audit batches that could not be written.")
                .expect("metric");
        let audit_failed_records = IntCounter::new(
            "keyward_audit_failed_records_total",
            "Requests refused because their audit record could not be written.",
        )
        .expect("metric");
        let keys = IntGaugeVec::new(Opts::new("keyward_keys", "Keys by state."), &["state"]).expect("metric");
        let sealed =
            prometheus::IntGauge::new("keyward_sealed", "1 while the server is sealed (no key in memory).")
                .expect("metric");
        for c in [
            Box::new(started.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sealed.clone()),
            Box::new(handled.clone()),
            Box::new(handling.clone()),
            Box::new(audit_batch.clone()),
            Box::new(audit_commit.clone()),
            Box::new(audit_failures.clone()),
            Box::new(audit_failed_records.clone()),
            Box::new(keys.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            started,
            handled,
            handling,
            audit_batch,
            audit_commit,
            audit_failures,
            audit_failed_records,
            keys,
            sealed,
        }
    }

    /// An RPC began.
    pub fn rpc_started(&self, kind: &str, service: &str, method: &str) {
        self.started.with_label_values(&[kind, service, method]).inc();
    }

    /// An RPC finished with `code` (a gRPC code name) after `elapsed`.
    pub fn rpc_handled(&self, kind: &str, service: &str, method: &str, code: &str, elapsed: Duration) {
        self.handled.with_label_values(&[kind, service, method, code]).inc();
        self.handling.with_label_values(&[kind, service, method]).observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the seal and the key counts read now
    /// (a sealed server reports no key counts).
    pub fn render(&self, seal: &Seal) -> String {
        let kms = seal.get();
        self.sealed.set(i64::from(kms.is_none()));
        // Sealed: no key counts to report.
        self.keys.reset();
        for (state, n) in kms.iter().flat_map(|k| k.key_state_counts()) {
            let name = match state {
                KeyState::Enabled => "enabled",
                KeyState::Disabled => "disabled",
                KeyState::PendingDeletion => "pending_deletion",
                KeyState::Destroyed => "destroyed",
            };
            self.keys.with_label_values(&[name]).set(n as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("utf-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditObserver for Metrics {
    fn committed(&self, records: usize, elapsed: Duration) {
        self.audit_batch.observe(records as f64);
        self.audit_commit.observe(elapsed.as_secs_f64());
    }

    fn failed(&self, records: usize, _elapsed: Duration) {
        self.audit_failures.inc();
        self.audit_failed_records.inc_by(records as u64);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires; then lets
/// each open connection finish its response and returns once all have
/// closed (so nothing here still holds the `Kms`). Accept errors back off
/// (see [`crate::server::accept`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    seal: Arc<Seal>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "metrics served at /metrics");
    let mut backoff = crate::server::accept::Backoff::new("metrics");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signalled(&mut shutdown) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(stream, metrics.clone(), seal.clone(), shutdown.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One HTTP/1 connection; closes gracefully on shutdown.
async fn connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    seal: Arc<Seal>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (metrics, seal) = (metrics.clone(), seal.clone());
        async move {
            let resp = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                hyper::Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(Full::new(Bytes::from(metrics.render(&seal))))
            } else {
                hyper::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::from_static(b"not found; try GET /metrics\n")))
            };
            Ok::<_, std::convert::Infallible>(resp.expect("static response"))
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = signalled(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "metrics connection ended");
    }
}

/// Resolves once shutdown has been signalled.
async fn signalled(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
