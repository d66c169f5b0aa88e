//! `keyward.v1.KeyService`.

use keyward_core::CreateKeyInput;
use keyward_core::Operation;
use tonic::{Request, Response, Status};

use super::convert::key_to_pb;
use super::{respond, Api};
use crate::pb::{self, key_service_server::KeyService};

/// The key lifecycle service.
#[derive(Debug, Clone)]
pub struct KeysApi(pub Api);

#[tonic::async_trait]
impl KeyService for KeysApi {
    async fn create_key(
        &self,
        req: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateKey).await?;
        let r = req.into_inner();
        let input = CreateKeyInput {
            alias: (!r.alias.is_empty()).then_some(r.alias),
            description: r.description,
            labels: r.labels.into_iter().collect(),
        };
        let out = self.0.kms.create_key(&c, input).await;
        respond(&c, out.map(|k| pb::CreateKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn describe_key(
        &self,
        req: Request<pb::DescribeKeyRequest>,
    ) -> Result<Response<pb::DescribeKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::DescribeKey).await?;
        let out = self.0.kms.describe_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::DescribeKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListKeys).await?;
        let r = req.into_inner();
        let out = self.0.kms.list_keys(&c, r.page_size, &r.page_token).await;
        respond(
            &c,
            out.map(|(keys, next)| pb::ListKeysResponse {
                keys: keys.into_iter().map(key_to_pb).collect(),
                next_page_token: next.unwrap_or_default(),
            }),
        )
    }

    async fn rotate_key(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::RotateKey).await?;
        let out = self.0.kms.rotate_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::RotateKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn enable_key(
        &self,
        req: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::EnableKey).await?;
        let out = self.0.kms.enable_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::EnableKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn disable_key(
        &self,
        req: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::DisableKey).await?;
        let out = self.0.kms.disable_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::DisableKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn create_alias(
        &self,
        req: Request<pb::CreateAliasRequest>,
    ) -> Result<Response<pb::CreateAliasResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateAlias).await?;
        let r = req.into_inner();
        let out = self.0.kms.create_alias(&c, &r.alias, &r.key_id).await;
        respond(&c, out.map(|k| pb::CreateAliasResponse { key: Some(key_to_pb(k)) }))
    }

    async fn delete_alias(
        &self,
        req: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let c = self.0.caller(&req, Operation::DeleteAlias).await?;
        let out = self.0.kms.delete_alias(&c, &req.into_inner().alias).await;
        respond(&c, out.map(|_| pb::DeleteAliasResponse {}))
    }
}
