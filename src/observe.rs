//! The outermost layer of every gRPC request: gives it a request id (the
//! caller's `x-request-id` if sane, else a fresh UUID, written back into the
//! request so the handler, the audit record and the response all carry the
//! same one), runs it inside a tracing span holding that id, so every log
//! line of the request names it, counts it in the metrics, and keeps the
//! count of requests in flight that the audit writer uses to batch. Metric
//! labels name only the RPCs the server knows (from the generated
//! descriptors); any other path is counted under `unknown`.

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
    limiter: Option<Arc<crate::grpc::RateLimiter>>,
}

impl ObserveLayer {
    /// Request ids and spans always; metrics when given; `in_flight`
    /// counts the requests being handled (the audit writer reads it).
    pub fn new(metrics: Option<Arc<Metrics>>, in_flight: Arc<AtomicUsize>) -> Self {
        Self { metrics, in_flight, limiter: None }
    }

    /// Refunds `limiter`'s token for every response that is a
    /// PERMISSION_DENIED (see `RateLimiter::refund`).
    pub fn refunding(mut self, limiter: Option<Arc<crate::grpc::RateLimiter>>) -> Self {
        self.limiter = limiter;
        self
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            in_flight: self.in_flight.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
    in_flight: Arc<AtomicUsize>,
    limiter: Option<Arc<crate::grpc::RateLimiter>>,
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

/// The label of every path that is not a known RPC: a caller chooses the
/// path before anything is checked, so only known ones get labels of their
/// own, and the number of series stays fixed.
pub const UNKNOWN: &str = "unknown";

/// One RPC the server knows: its labels.
#[derive(Debug)]
struct Rpc {
    kind: &'static str,
    service: String,
    method: String,
}

/// Every RPC served by any listener, by path (`package.Service/Method`),
/// read from the generated descriptors: Keyward's services, health,
/// reflection v1 and v1alpha, and KMS v2.
fn known_rpcs() -> &'static std::collections::HashMap<String, Rpc> {
    use prost::Message as _;
    static KNOWN: std::sync::OnceLock<std::collections::HashMap<String, Rpc>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let sets = [
            crate::pb::FILE_DESCRIPTOR_SET,
            crate::k8s_pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut known = std::collections::HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(set).expect("generated descriptors decode");
            for file in set.file {
                let package = file.package();
                for svc in &file.service {
                    let service = if package.is_empty() {
                        svc.name().to_string()
                    } else {
                        format!("{package}.{}", svc.name())
                    };
                    for m in &svc.method {
                        let kind = match (m.client_streaming(), m.server_streaming()) {
                            (true, true) => "bidi_stream",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (false, false) => "unary",
                        };
                        let rpc = Rpc { kind, service: service.clone(), method: m.name().to_string() };
                        known.insert(format!("{service}/{}", m.name()), rpc);
                    }
                }
            }
        }
        known
    })
}

/// The metric labels of `path` (without its leading `/`): grpc_type,
/// service and method of a known RPC, else [`UNKNOWN`] for all three.
fn labels_of(path: &str) -> (&'static str, &'static str, &'static str) {
    match known_rpcs().get(path) {
        Some(r) => (r.kind, &r.service, &r.method),
        None => (UNKNOWN, UNKNOWN, UNKNOWN),
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
                let id = keyward_core::new_request_id();
                req.headers_mut().insert(REQUEST_ID, id.parse().expect("a UUID is a header value"));
                id
            }
        };
        let path = req.uri().path().trim_start_matches('/');
        // `uid`: filled in by edges whose protocol carries its own request id
        // (the KMS v2 plugin), so log lines match the audit record.
        let span = tracing::info_span!("request", request_id = %id, rpc = %path, uid = tracing::field::Empty);
        let labels = self.metrics.clone().map(|m| {
            let (kind, service, method) = labels_of(path);
            m.rpc_started(kind, service, method);
            (m, kind, service, method)
        });
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let counted = InFlight::enter(&self.in_flight);
        let limiter = self.limiter.clone();
        Box::pin(
            async move {
                let resp = inner.call(req).await;
                drop(counted);
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
                if let (tonic::Code::PermissionDenied, Some(l)) = (code, &limiter) {
                    l.refund();
                }
                if let Some((m, kind, service, method)) = &labels {
                    m.rpc_handled(kind, service, method, code_name(code), started.elapsed());
                }
                resp
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_rpc_has_its_labels_and_nothing_else_does() {
        assert_eq!(
            labels_of("keyward.v1.CryptoService/Encrypt"),
            ("unary", "keyward.v1.CryptoService", "Encrypt")
        );
        assert_eq!(
            labels_of("keyward.v1.CryptoService/ReEncryptStream"),
            ("bidi_stream", "keyward.v1.CryptoService", "ReEncryptStream")
        );
        assert_eq!(
            labels_of("grpc.health.v1.Health/Watch"),
            ("server_stream", "grpc.health.v1.Health", "Watch")
        );
        assert_eq!(labels_of("v2.KeyManagementService/Status").1, "v2.KeyManagementService");
        for svc in ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] {
            assert_eq!(
                labels_of(&format!("{svc}/ServerReflectionInfo")),
                ("bidi_stream", svc, "ServerReflectionInfo")
            );
        }
        let proto = include_str!("../proto/keyward/v1/keyward.proto");
        let rpcs = proto.lines().filter(|l| l.trim_start().starts_with("rpc ")).count();
        let keyward = known_rpcs().values().filter(|r| r.service.starts_with("keyward.v1.")).count();
        assert_eq!(keyward, rpcs, "every RPC of keyward.proto");
        for made_up in [
            "",
            "x",
            "keyward.v1.CryptoService/Nope",
            "nope.Svc/Encrypt",
            "keyward.v1.CryptoService/Encrypt/",
        ] {
            assert_eq!(labels_of(made_up), (UNKNOWN, UNKNOWN, UNKNOWN), "{made_up:?}");
        }
    }
}
