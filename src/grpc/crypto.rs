//! `keyward.v1.CryptoService`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use keyward_core::{Caller, DataKeyInput, KmsError, Operation, ReEncryptInput, MAX_BATCH_ITEMS};
use keyward_crypto::Plaintext;
use tonic::{Request, Response, Status, Streaming};

use super::convert::given;
use super::{respond, to_status, Api};
use crate::checksum::{context_crc, crc};
use crate::pb::{self, crypto_service_server::CryptoService};

/// The crypto service.
#[derive(Debug, Clone)]
pub struct CryptoApi(pub Api);

#[tonic::async_trait]
impl CryptoService for CryptoApi {
    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let c = self.0.caller(&req, Operation::Encrypt).await?;
        let r = req.into_inner();
        let checks = [
            Check("plaintext_crc32c", r.plaintext_crc32c, &|| crc(&r.plaintext)),
            Check("encryption_context_crc32c", r.encryption_context_crc32c, &|| {
                context_crc(&r.encryption_context)
            }),
        ];
        if let Err(e) = verify(&self.0, &c, Operation::Encrypt, &r.key_id, &checks).await {
            return respond(&c, Err(e));
        }
        let out =
            self.0.live()?.encrypt(&c, &r.key_id, Plaintext::new(r.plaintext), r.encryption_context).await;
        respond(
            &c,
            out.map(|o| pb::EncryptResponse {
                ciphertext_crc32c: crc(&o.ciphertext),
                ciphertext: o.ciphertext,
                key_id: o.key_id.to_string(),
                key_version: o.key_version,
            }),
        )
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let c = self.0.caller(&req, Operation::Decrypt).await?;
        let r = req.into_inner();
        let checks = [
            Check("ciphertext_crc32c", r.ciphertext_crc32c, &|| crc(&r.ciphertext)),
            Check("encryption_context_crc32c", r.encryption_context_crc32c, &|| {
                context_crc(&r.encryption_context)
            }),
        ];
        if let Err(e) = verify(&self.0, &c, Operation::Decrypt, &r.key_id, &checks).await {
            return respond(&c, Err(e));
        }
        let pinned = given(r.key_id);
        let out = self.0.live()?.decrypt(&c, &r.ciphertext, r.encryption_context, pinned.as_deref()).await;
        respond(
            &c,
            out.map(|o| pb::DecryptResponse {
                plaintext_crc32c: crc(o.plaintext.expose_secret()),
                plaintext: o.plaintext.into_exposed(),
                key_id: o.key_id.to_string(),
                key_version: o.key_version,
            }),
        )
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::GenerateDataKey).await?;
        let r = req.into_inner();
        let checks = [Check("encryption_context_crc32c", r.encryption_context_crc32c, &|| {
            context_crc(&r.encryption_context)
        })];
        if let Err(e) = verify(&self.0, &c, Operation::GenerateDataKey, &r.key_id, &checks).await {
            return respond(&c, Err(e));
        }
        let out = self
            .0
            .live()?
            .generate_data_key(
                &c,
                DataKeyInput {
                    key: r.key_id,
                    number_of_bytes: r.number_of_bytes,
                    context: r.encryption_context,
                    with_plaintext: true,
                },
            )
            .await;
        respond(&c, out.map(data_key_to_pb))
    }

    async fn generate_data_key_without_plaintext(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyWithoutPlaintextResponse>, Status> {
        let c = self.0.caller(&req, Operation::GenerateDataKeyWithoutPlaintext).await?;
        let r = req.into_inner();
        let checks = [Check("encryption_context_crc32c", r.encryption_context_crc32c, &|| {
            context_crc(&r.encryption_context)
        })];
        if let Err(e) =
            verify(&self.0, &c, Operation::GenerateDataKeyWithoutPlaintext, &r.key_id, &checks).await
        {
            return respond(&c, Err(e));
        }
        let out = self
            .0
            .live()?
            .generate_data_key(
                &c,
                DataKeyInput {
                    key: r.key_id,
                    number_of_bytes: r.number_of_bytes,
                    context: r.encryption_context,
                    with_plaintext: false,
                },
            )
            .await;
        respond(
            &c,
            out.map(|o| pb::GenerateDataKeyWithoutPlaintextResponse {
                ciphertext_crc32c: crc(&o.ciphertext),
                ciphertext: o.ciphertext,
                key_id: o.key_id.to_string(),
                key_version: o.key_version,
            }),
        )
    }

    async fn re_encrypt(
        &self,
        req: Request<pb::ReEncryptRequest>,
    ) -> Result<Response<pb::ReEncryptResponse>, Status> {
        let c = self.0.caller(&req, Operation::ReEncrypt).await?;
        let out = re_encrypt_one(&self.0, &c, req.into_inner()).await;
        respond(&c, out)
    }

    async fn generate_random(
        &self,
        req: Request<pb::GenerateRandomRequest>,
    ) -> Result<Response<pb::GenerateRandomResponse>, Status> {
        let c = self.0.caller(&req, Operation::GenerateRandom).await?;
        let out = self.0.live()?.generate_random(&c, req.into_inner().number_of_bytes).await;
        respond(
            &c,
            out.map(|r| pb::GenerateRandomResponse {
                random_crc32c: crc(r.expose_secret()),
                random: r.into_exposed(),
            }),
        )
    }

    async fn generate_data_key_batch(
        &self,
        req: Request<pb::GenerateDataKeyBatchRequest>,
    ) -> Result<Response<pb::GenerateDataKeyBatchResponse>, Status> {
        let op = if req.get_ref().without_plaintext {
            Operation::GenerateDataKeyWithoutPlaintext
        } else {
            Operation::GenerateDataKey
        };
        let c = self.0.caller(&req, op).await?;
        let r = req.into_inner();
        let checks = [Check("encryption_context_crc32c", r.encryption_context_crc32c, &|| {
            context_crc(&r.encryption_context)
        })];
        if let Err(e) = verify(&self.0, &c, op, &r.key_id, &checks).await {
            return respond(&c, Err(e));
        }
        let out = self
            .0
            .live()?
            .generate_data_keys(
                &c,
                DataKeyInput {
                    key: r.key_id,
                    number_of_bytes: r.number_of_bytes,
                    context: r.encryption_context,
                    with_plaintext: !r.without_plaintext,
                },
                r.count,
            )
            .await;
        respond(
            &c,
            out.map(|keys| pb::GenerateDataKeyBatchResponse {
                data_keys: keys.into_iter().map(data_key_to_pb).collect(),
            }),
        )
    }

    async fn batch_re_encrypt(
        &self,
        req: Request<pb::BatchReEncryptRequest>,
    ) -> Result<Response<pb::BatchReEncryptResponse>, Status> {
        let c = self.0.caller(&req, Operation::ReEncrypt).await?;
        let items = req.into_inner().items;
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            let e = KmsError::invalid(
                "items",
                format!("must hold between 1 and {MAX_BATCH_ITEMS} items, got {}", items.len()),
            );
            let e = self.0.live()?.refuse(&c, Operation::ReEncrypt, e).await;
            return respond(&c, Err(e));
        }
        // Concurrently, so the items share audit commits.
        let results = futures_util::future::join_all(
            items.into_iter().enumerate().map(|(i, r)| item_result(&self.0, &c, i, r)),
        )
        .await;
        respond(&c, Ok(pb::BatchReEncryptResponse { results }))
    }

    type ReEncryptStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::ReEncryptResult, Status>> + Send + 'static>>;

    async fn re_encrypt_stream(
        &self,
        req: Request<Streaming<pb::ReEncryptRequest>>,
    ) -> Result<Response<Self::ReEncryptStreamStream>, Status> {
        let (c, cred) = self.0.caller_with_credential(&req, Operation::ReEncrypt).await?;
        let (c, cred) = (Arc::new(c), Arc::new(cred));
        let api = self.0.clone();
        let caller = c.clone();
        let results = req
            .into_inner()
            .enumerate()
            .map(move |(i, item)| {
                let (api, c, cred) = (api.clone(), c.clone(), cred.clone());
                async move {
                    match item {
                        // Each item is a request: its caller's credential and
                        // policy are checked again, as they stand now.
                        Ok(r) => Ok(match api.recheck(&c, &cred, Operation::ReEncrypt).await {
                            Ok(now) => item_result(&api, &now, i, r).await,
                            Err(e) => item_error(i, &e),
                        }),
                        // A broken or oversized item ends the stream; its
                        // status (in the trailers) carries the request id too.
                        Err(status) => {
                            let status = super::size_status(status);
                            // An oversized item is refused (and audited) like a request.
                            if status.code() == tonic::Code::InvalidArgument {
                                let e = KmsError::invalid("request", status.message().to_string());
                                if let Ok(kms) = api.kms() {
                                    kms.refuse(&c, Operation::ReEncrypt, e).await;
                                }
                            }
                            Err(with_request_id(status, &c))
                        }
                    }
                }
            })
            // Up to this many items in flight, answered in order.
            .buffered(STREAM_WINDOW);
        // The request id goes out in the initial metadata, as for every RPC.
        let stream: Self::ReEncryptStreamStream = Box::pin(results);
        respond(&caller, Ok(stream))
    }
}

/// `status` with the caller's request id in its metadata.
fn with_request_id(mut status: Status, c: &Caller) -> Status {
    if let Ok(id) = tonic::metadata::MetadataValue::try_from(c.request_id.as_str()) {
        status.metadata_mut().insert(super::REQUEST_ID, id);
    }
    status
}

/// Items of one ReEncrypt stream in flight at once.
const STREAM_WINDOW: usize = 64;

async fn re_encrypt_one(
    api: &Api,
    c: &Caller,
    r: pb::ReEncryptRequest,
) -> Result<pb::ReEncryptResponse, KmsError> {
    let checks = [
        Check("ciphertext_crc32c", r.ciphertext_crc32c, &|| crc(&r.ciphertext)),
        Check("source_encryption_context_crc32c", r.source_encryption_context_crc32c, &|| {
            context_crc(&r.source_encryption_context)
        }),
        Check("destination_encryption_context_crc32c", r.destination_encryption_context_crc32c, &|| {
            context_crc(&r.destination_encryption_context)
        }),
    ];
    verify(api, c, Operation::ReEncrypt, &r.destination_key_id, &checks).await?;
    api.kms()?
        .re_encrypt(
            c,
            ReEncryptInput {
                ciphertext: r.ciphertext,
                source_context: r.source_encryption_context,
                source_key: given(r.source_key_id),
                destination_key: r.destination_key_id,
                destination_context: r.destination_encryption_context,
            },
        )
        .await
        .map(|o| pb::ReEncryptResponse {
            ciphertext_crc32c: crc(&o.ciphertext),
            ciphertext: o.ciphertext,
            source_key_id: o.source_key_id.to_string(),
            source_key_version: o.source_key_version,
            key_id: o.key_id.to_string(),
            key_version: o.key_version,
        })
}

/// One item of a batch or stream: its own audit record, its own result.
async fn item_result(api: &Api, c: &Caller, index: usize, r: pb::ReEncryptRequest) -> pb::ReEncryptResult {
    match re_encrypt_one(api, c, r).await {
        Ok(ok) => {
            pb::ReEncryptResult { index: index as u32, result: Some(pb::re_encrypt_result::Result::Ok(ok)) }
        }
        Err(e) => item_error(index, &e),
    }
}

/// An item's refusal.
fn item_error(index: usize, e: &KmsError) -> pb::ReEncryptResult {
    let status = to_status(e);
    let error = pb::ItemError { code: status.code() as i32, message: status.message().to_string() };
    pb::ReEncryptResult { index: index as u32, result: Some(pb::re_encrypt_result::Result::Error(error)) }
}

/// A checksum the request may carry: field name, the value sent, and how to
/// compute it over what arrived.
struct Check<'a>(&'static str, Option<u32>, &'a (dyn Fn() -> u32 + Sync));

/// Verifies every checksum the request carries. A mismatch is refused
/// (and audited, naming `key`, the key the request named) before anything
/// is processed.
async fn verify(
    api: &Api,
    c: &Caller,
    op: Operation,
    key: &str,
    checks: &[Check<'_>],
) -> Result<(), KmsError> {
    for Check(field, given, actual) in checks {
        if let Some(given) = given {
            if *given != actual() {
                let e = KmsError::invalid(
                    field,
                    "checksum mismatch: the request was corrupted in transit; nothing was processed",
                );
                return Err(api.kms()?.refuse_key(c, op, key, e).await);
            }
        }
    }
    Ok(())
}

fn data_key_to_pb(o: keyward_core::DataKeyOutput) -> pb::GenerateDataKeyResponse {
    let plaintext = o.plaintext.map(|p| p.into_exposed()).unwrap_or_default();
    pb::GenerateDataKeyResponse {
        plaintext_crc32c: crc(&plaintext),
        ciphertext_crc32c: crc(&o.ciphertext),
        plaintext,
        ciphertext: o.ciphertext,
        key_id: o.key_id.to_string(),
        key_version: o.key_version,
    }
}
