//! The gRPC edge: one service struct per proto service, each a thin
//! translation between protobuf messages and `keyward_core::Kms` calls.
//!
//! Architecture invariant: this module is the only place that turns a
//! `KmsError` into a `tonic::Status` ([`to_status`]), and the only place that
//! names both protobuf types and domain types.

mod audit;
mod convert;
mod crypto;
mod keys;

use std::sync::Arc;

use keyward_core::{Caller, ErrorKind, Kms, KmsError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

pub use audit::AuditApi;
pub use convert::{record_to_pb, timestamp};
pub use crypto::CryptoApi;
pub use keys::KeysApi;

/// Metadata key carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The one mapping from domain errors to gRPC status codes. Internal causes
/// are logged here, once; callers get the sanitised message.
pub fn to_status(e: &KmsError) -> Status {
    let code = match e.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    match e.kind() {
        ErrorKind::Internal | ErrorKind::Unavailable => {
            tracing::error!(error = %e, cause = ?std::error::Error::source(e), "request failed")
        }
        _ => tracing::debug!(error = %e, "request refused"),
    }
    Status::new(code, e.public_message())
}

/// Who is calling: request id (the caller's `x-request-id` if sane, else a
/// fresh UUID), principal and peer.
pub(crate) fn caller<T>(req: &Request<T>) -> Caller {
    let request_id = req
        .metadata()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    // Until access control lands every caller is the same principal.
    Caller { request_id, principal: "anonymous".to_string(), peer }
}

/// Wraps a use-case result into a response (or status) carrying the request id.
pub(crate) fn respond<T>(caller: &Caller, result: Result<T, KmsError>) -> Result<Response<T>, Status> {
    let id = MetadataValue::try_from(caller.request_id.as_str()).ok();
    match result {
        Ok(body) => {
            let mut resp = Response::new(body);
            if let Some(id) = id {
                resp.metadata_mut().insert(REQUEST_ID, id);
            }
            Ok(resp)
        }
        Err(e) => {
            let mut status = to_status(&e);
            if let Some(id) = id {
                status.metadata_mut().insert(REQUEST_ID, id);
            }
            Err(status)
        }
    }
}

/// Shared state of every service.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) kms: Arc<Kms>,
}

impl Api {
    /// Services over one `Kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}
