//! `keyward.v1.CryptoService`.

use keyward_core::Operation;
use keyward_crypto::Plaintext;
use tonic::{Request, Response, Status};

use super::{respond, Api};
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
        let out = self.0.kms.encrypt(&c, &r.key_id, Plaintext::new(r.plaintext), r.encryption_context).await;
        respond(
            &c,
            out.map(|o| pb::EncryptResponse {
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
        let out = self.0.kms.decrypt(&c, &r.ciphertext, r.encryption_context, &r.key_id).await;
        respond(
            &c,
            out.map(|o| pb::DecryptResponse {
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
        let out =
            self.0.kms.generate_data_key(&c, &r.key_id, r.number_of_bytes, r.encryption_context, true).await;
        respond(
            &c,
            out.map(|o| pb::GenerateDataKeyResponse {
                plaintext: o.plaintext.map(|p| p.into_exposed()).unwrap_or_default(),
                ciphertext: o.ciphertext,
                key_id: o.key_id.to_string(),
                key_version: o.key_version,
            }),
        )
    }

    async fn generate_data_key_without_plaintext(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyWithoutPlaintextResponse>, Status> {
        let c = self.0.caller(&req, Operation::GenerateDataKeyWithoutPlaintext).await?;
        let r = req.into_inner();
        let out =
            self.0.kms.generate_data_key(&c, &r.key_id, r.number_of_bytes, r.encryption_context, false).await;
        respond(
            &c,
            out.map(|o| pb::GenerateDataKeyWithoutPlaintextResponse {
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
        let r = req.into_inner();
        let out = self
            .0
            .kms
            .re_encrypt(
                &c,
                &r.ciphertext,
                r.source_encryption_context,
                &r.source_key_id,
                &r.destination_key_id,
                r.destination_encryption_context,
            )
            .await;
        respond(
            &c,
            out.map(|o| pb::ReEncryptResponse {
                ciphertext: o.ciphertext,
                source_key_id: o.source_key_id.to_string(),
                source_key_version: o.source_key_version,
                key_id: o.key_id.to_string(),
                key_version: o.key_version,
            }),
        )
    }

    async fn generate_random(
        &self,
        req: Request<pb::GenerateRandomRequest>,
    ) -> Result<Response<pb::GenerateRandomResponse>, Status> {
        let c = self.0.caller(&req, Operation::GenerateRandom).await?;
        let out = self.0.kms.generate_random(&c, req.into_inner().number_of_bytes).await;
        respond(&c, out.map(|r| pb::GenerateRandomResponse { random: r.into_exposed() }))
    }
}
