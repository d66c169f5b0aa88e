//! The AWS KMS JSON 1.1 API (`POST /`, `X-Amz-Target: TrentService.<Op>`)
//! for unmodified AWS clients (boto3, aws-cli, the AWS SDKs and the AWS
//! Encryption SDK, SOPS): a thin translation over the same `Kms` use cases
//! as the gRPC services, with no crypto or policy of its own.
//!
//! Per request: the operation from `X-Amz-Target`; the SigV4 signature
//! verified ([`sigv4`]) with the secret of the access key it names (an
//! AccessService object, `keyward access-key create`; in `--dev`, the
//! development access key printed at start); the principal's policy as it
//! is now; the global rate limit; then the operation ([`ops`]). Every
//! refusal before the use case runs is audited like the use case's own
//! (edge `aws-kms`), and every response carries `x-amzn-RequestId`, the id
//! of its audit record. Errors are `{"__type", "message"}` with the status
//! codes of AWS's model.

mod input;
mod ops;
pub(crate) mod sigv4;

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use keyward_core::{Caller, Edge, Kms, KmsError, Operation, Policy};
use serde_json::{json, Value};

use crate::http::{BodyError, EdgeRequest, EdgeResponse, Handler};
use crate::seal::Seal;
pub(crate) use input::Arns;

/// The JSON content type of requests and responses.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Largest request body: a 6144-byte ciphertext in base64 and two contexts.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How far a request's signing time may be from the server's.
const MAX_SKEW_SECS: i64 = sigv4::DEFAULT_MAX_SKEW_SECS;

/// The development access key (`--dev`): derived from the development
/// root key, so it is stable for one data folder. It acts as principal
/// `dev` with every role, like every gRPC caller in development mode.
pub(crate) struct DevAccessKey {
    /// Its id.
    pub id: String,
    /// Its secret.
    pub secret: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for DevAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccessKey").field("id", &self.id).field("secret", &"REDACTED").finish()
    }
}

impl DevAccessKey {
    /// The development access key of a root key.
    pub fn of(root: &keyward_crypto::RootKey) -> Self {
        let a = root.derive_dev_credential("keyward/v1/dev-aws-access-key-id").expect("a dev label");
        let b = root.derive_dev_credential("keyward/v1/dev-aws-secret").expect("a dev label");
        let bytes = zeroize::Zeroizing::new([&a[..], &b[..]].concat());
        let (id, secret) = keyward_core::access_key_from_bytes(&bytes);
        Self { id, secret }
    }
}

/// The answer to a request that ran out of time (what it did, if anything,
/// is in its audit record under this request id).
pub(crate) fn timed_out(request_id: &str) -> EdgeResponse {
    AwsError::new(503, "DependencyTimeoutException", "the request timed out; retry").response(request_id)
}

/// An AWS error: status, `__type` and message.
#[derive(Debug)]
pub(crate) struct AwsError {
    status: u16,
    kind: &'static str,
    message: String,
}

impl AwsError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }

    fn response(&self, request_id: &str) -> EdgeResponse {
        let body = json!({ "__type": self.kind, "message": self.message }).to_string();
        http::Response::builder()
            .status(self.status)
            .header("content-type", CONTENT_TYPE)
            .header("x-amzn-requestid", request_id)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response parts")
    }

    /// The AWS error for a use-case error (the message names the field
    /// as AWS spells it).
    fn of(e: &KmsError) -> Self {
        match e {
            KmsError::InvalidArgument { reason, .. } if reason == keyward_core::WRONG_KEY => Self::new(
                400,
                "IncorrectKeyException",
                "The key ID in the request does not identify the key that encrypted the ciphertext",
            ),
            KmsError::InvalidArgument { field, reason } => {
                Self::new(400, "ValidationException", format!("{}: {reason}", aws_field(field)))
            }
            KmsError::InvalidCiphertext(_) => {
                Self::new(400, "InvalidCiphertextException", e.public_message())
            }
            KmsError::NotFound(_) => Self::new(404, "NotFoundException", e.public_message()),
            KmsError::AlreadyExists(_) => Self::new(409, "AlreadyExistsException", e.public_message()),
            KmsError::FailedPrecondition(m) if m.starts_with("key ") && m.ends_with(" is disabled") => {
                Self::new(409, "DisabledException", e.public_message())
            }
            KmsError::FailedPrecondition(_) => Self::new(409, "KMSInvalidStateException", e.public_message()),
            KmsError::Unauthenticated(_) => Self::new(400, "UnrecognizedClientException", e.public_message()),
            KmsError::PermissionDenied(_) => Self::new(400, "AccessDeniedException", e.public_message()),
            KmsError::ResourceExhausted(m) if m.contains("rate limit") => {
                Self::new(400, "ThrottlingException", e.public_message())
            }
            KmsError::ResourceExhausted(_) => Self::new(400, "LimitExceededException", e.public_message()),
            KmsError::AuditUnavailable(_) => Self::new(503, "DependencyTimeoutException", e.public_message()),
            // Retryable, as the sealed state passes once an operator unseals.
            KmsError::Sealed(_) => Self::new(503, "DependencyTimeoutException", e.public_message()),
            // Retryable: a cluster node serves again once it is current.
            KmsError::Stale(_) => Self::new(503, "KMSInternalException", e.public_message()),
            KmsError::Store(_) | KmsError::Internal(_) => {
                Self::new(500, "KMSInternalException", e.public_message())
            }
        }
    }
}

/// Keyward's field names in use-case errors, as AWS spells them.
fn aws_field(field: &str) -> &str {
    match field {
        "key_id" => "KeyId",
        "plaintext" => "Plaintext",
        "ciphertext" => "CiphertextBlob",
        "encryption_context" => "EncryptionContext",
        "source_encryption_context" => "SourceEncryptionContext",
        "destination_encryption_context" => "DestinationEncryptionContext",
        "number_of_bytes" => "NumberOfBytes",
        "destination_key_id" => "DestinationKeyId",
        "source_key_id" => "SourceKeyId",
        "labels" => "Tags",
        "description" => "Description",
        "alias" => "AliasName",
        "pending_window_days" => "PendingWindowInDays",
        "rotation_period" => "RotationPeriodInDays",
        other => other,
    }
}

/// The operations served (any other is `UnsupportedOperationException`),
/// with the operation their refusals are recorded as.
fn operation(name: &str) -> Option<Operation> {
    Some(match name {
        "Encrypt" => Operation::Encrypt,
        "Decrypt" => Operation::Decrypt,
        "ReEncrypt" => Operation::ReEncrypt,
        "GenerateDataKey" => Operation::GenerateDataKey,
        "GenerateDataKeyWithoutPlaintext" => Operation::GenerateDataKeyWithoutPlaintext,
        "GenerateRandom" => Operation::GenerateRandom,
        "CreateKey" => Operation::CreateKey,
        "DescribeKey" | "GetKeyRotationStatus" => Operation::DescribeKey,
        "ListKeys" => Operation::ListKeys,
        "ListAliases" => Operation::ListAliases,
        "CreateAlias" => Operation::CreateAlias,
        "UpdateAlias" => Operation::UpdateAlias,
        "DeleteAlias" => Operation::DeleteAlias,
        "EnableKey" => Operation::EnableKey,
        "DisableKey" => Operation::DisableKey,
        "EnableKeyRotation" | "DisableKeyRotation" => Operation::UpdateRotationPolicy,
        "RotateKeyOnDemand" => Operation::RotateKey,
        "ListKeyRotations" => Operation::ListKeyVersions,
        "ScheduleKeyDeletion" => Operation::ScheduleKeyDeletion,
        "CancelKeyDeletion" => Operation::CancelKeyDeletion,
        "TagResource" | "UntagResource" => Operation::UpdateKeyLabels,
        "ListResourceTags" => Operation::DescribeKey,
        _ => return None,
    })
}

/// The AWS KMS edge.
pub(crate) struct AwsKms {
    seal: Arc<Seal>,
    arns: Arns,
    limiter: Option<Arc<crate::grpc::RateLimiter>>,
    dev: Option<DevAccessKey>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms").field("arns", &self.arns).field("dev", &self.dev).finish_non_exhaustive()
    }
}

impl AwsKms {
    /// The edge over the `Kms` behind `seal`, naming keys in `arns`.
    pub fn new(
        seal: Arc<Seal>,
        arns: Arns,
        limiter: Option<Arc<crate::grpc::RateLimiter>>,
        dev: Option<DevAccessKey>,
    ) -> Self {
        Self { seal, arns, limiter, dev }
    }

    /// The development access key, in `--dev`.
    pub fn dev_access_key(&self) -> Option<&DevAccessKey> {
        self.dev.as_ref()
    }

    /// The handler the HTTP listener runs.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req| {
            let edge = self.clone();
            Box::pin(async move { edge.handle(req).await })
        })
    }

    async fn handle(&self, req: EdgeRequest) -> EdgeResponse {
        let request_id = req.request_id.clone();
        let (status, body) = match self.answer(req).await {
            Ok(v) => (
                200,
                if v.as_object().is_some_and(|o| o.is_empty()) {
                    Vec::new()
                } else {
                    v.to_string().into_bytes()
                },
            ),
            Err(e) => (e.status, json!({ "__type": e.kind, "message": e.message }).to_string().into_bytes()),
        };
        http::Response::builder()
            .status(status)
            .header("content-type", CONTENT_TYPE)
            .header("x-amzn-requestid", &request_id)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response parts")
    }

    async fn answer(&self, req: EdgeRequest) -> Result<Value, AwsError> {
        let EdgeRequest { head, body, peer, request_id, .. } = req;
        if head.method != http::Method::POST || head.uri.path() != "/" {
            return Err(AwsError::new(
                404,
                "UnknownOperationException",
                "the AWS KMS API is served as POST / with X-Amz-Target: TrentService.<Operation>",
            ));
        }
        let name = match head.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
            Some(t) => t.strip_prefix("TrentService.").unwrap_or("").to_string(),
            None => return Err(AwsError::new(400, "UnknownOperationException", "X-Amz-Target is missing")),
        };
        let content_type = head.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        let json_type = content_type.split(';').next().map(str::trim).unwrap_or("");
        if !matches!(json_type, CONTENT_TYPE | "application/json" | "") {
            return Err(AwsError::new(
                400,
                "SerializationException",
                format!(
                    "Content-Type must be {CONTENT_TYPE}, not {:?}",
                    keyward_core::bounded(content_type, 64)
                ),
            ));
        }
        let op = operation(&name);
        let body = match body {
            Ok(b) => b,
            Err(BodyError::TooLarge(n)) => {
                return Err(AwsError::new(
                    413,
                    "ValidationException",
                    format!("request body: at most {n} bytes"),
                ))
            }
            Err(BodyError::Unreadable) => {
                return Err(AwsError::new(
                    400,
                    "SerializationException",
                    "the request body could not be read",
                ))
            }
        };
        let refused = Caller {
            request_id: request_id.clone(),
            principal: "unauthenticated".into(),
            peer: peer.to_string(),
            edge: Edge::AwsKms,
            policy: Arc::new(Policy::default()),
        };
        let kms = self.seal.kms().map_err(|e| AwsError::of(&e))?;
        let caller = match self.authenticate(&kms, &head, &body, refused.clone()) {
            Ok(c) => c,
            Err((e, akid)) => {
                let message = match e {
                    sigv4::SigError::WrongRegion => format!(
                        "{} This endpoint serves region {}: set AWS_DEFAULT_REGION and AWS_REGION to it.",
                        e.message(),
                        self.arns.region
                    ),
                    _ => e.message(),
                };
                // Recorded as the operation it asked for (an operation
                // this edge does not serve did nothing worth a record),
                // naming the access key id presented, if it had the shape of one.
                if let Some(op) = op {
                    let why = KmsError::Unauthenticated(message.clone());
                    let recorded = match akid.filter(|id| keyward_core::is_access_key_id(id)) {
                        Some(id) => {
                            kms.refuse_credential(&refused, op, why, &format!("access_key:{id}")).await
                        }
                        None => kms.refuse(&refused, op, why).await,
                    };
                    if let KmsError::AuditUnavailable(a) = recorded {
                        return Err(AwsError::of(&KmsError::AuditUnavailable(a)));
                    }
                }
                let status = if matches!(e, sigv4::SigError::MissingAuthorization | sigv4::SigError::NotSigV4)
                {
                    403
                } else {
                    400
                };
                return Err(AwsError::new(status, e.aws_error(), message));
            }
        };
        let Some(op) = op else {
            return Err(AwsError::new(
                400,
                "UnsupportedOperationException",
                format!("{} is not supported by this endpoint", keyward_core::bounded(&name, 64)),
            ));
        };
        if let Some(l) = &self.limiter {
            if !l.try_acquire() {
                let why = KmsError::ResourceExhausted("rate limit exceeded; retry with backoff".into());
                return Err(AwsError::of(&kms.refuse(&caller, op, why).await));
            }
        }
        let parsed = match input::Body::parse(&body) {
            Ok(b) => b,
            Err(e) => {
                let message = e.public_message();
                let e = kms.refuse(&caller, op, e).await;
                return Err(match e {
                    KmsError::InvalidArgument { .. } => AwsError::new(400, "SerializationException", message),
                    other => AwsError::of(&other),
                });
            }
        };
        ops::run(&kms, &self.arns, &caller, &name, op, parsed).await
    }

    /// The caller a signed request stands for, or why it is refused.
    fn authenticate(
        &self,
        kms: &Kms,
        head: &http::request::Parts,
        body: &[u8],
        refused: Caller,
    ) -> Result<Caller, (sigv4::SigError, Option<String>)> {
        let auth = sigv4::authorization_from_headers(&head.headers).map_err(|e| (e, None))?;
        let akid = Some(auth.access_key_id.clone());
        self.verify(kms, head, body, refused, &auth).map_err(|e| (e, akid))
    }

    fn verify(
        &self,
        kms: &Kms,
        head: &http::request::Parts,
        body: &[u8],
        refused: Caller,
        auth: &sigv4::Authorization,
    ) -> Result<Caller, sigv4::SigError> {
        // The operation is in a header: unsigned, a replayed request could
        // be turned into another operation. Every AWS SDK signs it.
        if !auth.signed_headers.iter().any(|h| h == "x-amz-target") {
            return Err(sigv4::SigError::HeaderNotSigned("x-amz-target"));
        }
        let (principal, policy, secret) = match &self.dev {
            Some(d) if d.id == auth.access_key_id => (
                "dev".to_string(),
                Arc::new(Policy::everything()),
                zeroize::Zeroizing::new(d.secret.as_bytes().to_vec()),
            ),
            _ => match kms.identify_access_key(&auth.access_key_id) {
                Ok(k) => (k.principal, k.policy, k.secret),
                Err(_) => return Err(sigv4::SigError::UnrecognizedClient),
            },
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        sigv4::verify(
            &head.method,
            head.uri.path(),
            head.uri.query().unwrap_or(""),
            &head.headers,
            body,
            auth,
            &secret,
            &self.arns.region,
            "kms",
            now,
            MAX_SKEW_SECS,
        )?;
        Ok(Caller { principal, policy, ..refused })
    }
}
