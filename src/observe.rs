//! The outermost layer of every gRPC request: gives it a request id (the
//! caller's `x-request-id` if sane, else a fresh UUID, written back into the
//! request so the handler, the audit record and the response all carry the
//! same one), runs it inside a tracing span holding that id, so every log
//! line of the request names it, counts it in the metrics, and keeps the
//! count of requests in flight that the audit writer uses to batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;

use crate::grpc::REQUEST_ID;
use crate::metrics::Metrics;

/// Adds [`Observe`] to a service.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Arc<Metrics>>,
    in_flight: Arc<AtomicUsize>,
}

impl ObserveLayer {
    /// Request ids and spans always; metrics when given; `in_flight`
    /// counts the requests being handled (the audit writer reads it).
    pub fn new(metrics: Option<Arc<Metrics>>, in_flight: Arc<AtomicUsize>) -> Self {
        Self { metrics, in_flight }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.metrics.clone(), in_flight: self.in_flight.clone() }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a request as in flight until dropped (also when cancelled).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A caller-supplied request id we are willing to echo and record.
pub fn sane_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Methods that stream; every other one is unary.
fn grpc_type(method: &str) -> &'static str {
    match method {
        "ReEncryptStream" | "ServerReflectionInfo" => "bidi_stream",
        "Watch" => "server_stream",
        _ => "unary",
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let given =
            req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| sane_request_id(v));
        let id = match given {
            Some(v) => v.to_string(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                req.headers_mut().insert(REQUEST_ID, id.parse().expect("a UUID is a header value"));
                id
            }
        };
        let path = req.uri().path().trim_start_matches('/');
        // `uid`: filled in by edges whose protocol carries its own request id
        // (the KMS v2 plugin), so log lines match the audit record.
        let span = tracing::info_span!("request", request_id = %id, rpc = %path, uid = tracing::field::Empty);
        // Labels are owned only when metrics are on (the future outlives `req`).
        let labels = self.metrics.clone().map(|m| {
            let (service, method) = path.split_once('/').unwrap_or((path, ""));
            let kind = grpc_type(method);
            m.rpc_started(kind, service, method);
            (m, kind, service.to_string(), method.to_string())
        });
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let counted = InFlight::enter(&self.in_flight);
        Box::pin(
            async move {
                let resp = inner.call(req).await;
                drop(counted);
                if let Some((m, kind, service, method)) = &labels {
                    // An error is sent trailers-only, so its status is in the
                    // headers; a success puts grpc-status 0 in the trailers.
                    let code = match &resp {
                        Ok(r) => r
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map(tonic::Code::from_i32)
                            .unwrap_or(tonic::Code::Ok),
                        Err(_) => tonic::Code::Unknown,
                    };
                    m.rpc_handled(kind, service, method, code_name(code), started.elapsed());
                }
                resp
            }
            .instrument(span),
        )
    }
}
