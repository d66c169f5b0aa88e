//! Requests over `limits.max_request_bytes`. tonic refuses a message over
//! the services' decoding limit itself, before any handler runs, with
//! `OUT_OF_RANGE` and its own wording; Keyward promises `INVALID_ARGUMENT`
//! naming the limit, and an `x-request-id` on every response. Keyward never
//! answers `OUT_OF_RANGE` itself (no `ErrorKind` maps to it), so that code
//! with tonic's decode message means exactly this refusal: [`SizeLayer`]
//! rewrites it on unary responses (sent trailers-only, so the status is in
//! the headers), and [`size_status`] rewrites a stream item's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};

use keyward_core::{KmsError, Operation};

use super::{Api, REQUEST_ID};

/// tonic's message for a request message over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// `status` as Keyward reports it, if it is tonic's refusal of an oversized
/// request message; any other status unchanged.
pub fn size_status(status: Status) -> Status {
    if status.code() != Code::OutOfRange || !status.message().starts_with(TONIC_TOO_LARGE) {
        return status;
    }
    // "... found N bytes, the limit is: M bytes"
    let limit = status
        .message()
        .rsplit_once("the limit is: ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    let message = match limit {
        Some(m) => {
            format!("request exceeds the {m}-byte limit (limits.max_request_bytes); nothing was processed")
        }
        None => "request exceeds the size limit (limits.max_request_bytes); nothing was processed".into(),
    };
    let mut out = Status::invalid_argument(message);
    *out.metadata_mut() = status.metadata().clone();
    out
}

/// Adds [`Size`] to a service; with an [`Api`], the refusal is audited
/// like any other (the caller identified from the request's credentials).
#[derive(Debug, Clone, Default)]
pub struct SizeLayer {
    api: Option<Api>,
}

impl SizeLayer {
    /// Rewrites and audits oversized-request refusals over `api`.
    pub fn new(api: Api) -> Self {
        Self { api: Some(api) }
    }
}

impl<S> tower::Layer<S> for SizeLayer {
    type Service = Size<S>;
    fn layer(&self, inner: S) -> Size<S> {
        Size { inner, api: self.api.clone() }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Size<S> {
    inner: S,
    api: Option<Api>,
}

/// Audits an oversized request's refusal as its caller's: an unidentified
/// caller is audited (and aggregated) by `Api::caller` itself.
async fn audit_refusal(api: Api, parts: http::request::Parts, message: String) {
    let method = parts.uri.path().rsplit('/').next().unwrap_or_default().to_string();
    let Some(op) = Operation::from_rpc(&method) else { return };
    let req = tonic::Request::from_http(http::Request::from_parts(parts, ()));
    if let (Ok(caller), Ok(kms)) = (api.caller(&req, op).await, api.kms()) {
        kms.refuse(&caller, op, KmsError::invalid("request", message)).await;
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Size<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Set by the observe layer (outside this one) on every request.
        let request_id = req.headers().get(REQUEST_ID).cloned();
        // What identifying the caller needs (its credentials, request id,
        // peer address and certificates), kept in case the request is
        // refused for its size: two headers, not the whole map.
        let parts = self.api.as_ref().map(|_| {
            let mut b = http::Request::builder().uri(req.uri().clone());
            for name in ["authorization", REQUEST_ID] {
                if let Some(v) = req.headers().get(name) {
                    b = b.header(name, v.clone());
                }
            }
            let mut p = b.body(()).expect("a copy of a valid request").into_parts().0;
            p.extensions = req.extensions().clone();
            p
        });
        let api = self.api.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let out_of_range = resp.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
            if out_of_range {
                if let Some(status) = Status::from_header_map(resp.headers()) {
                    let rewritten = size_status(Status::new(status.code(), status.message()));
                    if rewritten.code() != Code::OutOfRange {
                        if let (Some(api), Some(parts)) = (api, parts) {
                            // Nothing was done, so the refusal need not wait
                            // for its record (the response type is not Send).
                            tokio::spawn(audit_refusal(api, parts, rewritten.message().to_string()));
                        }
                        let headers = resp.headers_mut();
                        headers.remove("grpc-message");
                        if rewritten.add_header(headers).is_ok() {
                            if let Some(id) = request_id {
                                headers.insert(REQUEST_ID, id);
                            }
                        }
                    }
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_oversize_refusal_is_rewritten() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 70000 bytes, the limit is: 65536 bytes",
        );
        let s = size_status(tonic);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "request exceeds the 65536-byte limit (limits.max_request_bytes); nothing was processed"
        );
        for other in [Status::out_of_range("something else"), Status::invalid_argument(TONIC_TOO_LARGE)] {
            let (code, message) = (other.code(), other.message().to_string());
            let s = size_status(other);
            assert_eq!((s.code(), s.message()), (code, message.as_str()));
        }
    }
}
