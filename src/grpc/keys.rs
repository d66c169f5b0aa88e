//! `keyward.v1.KeyService`.

use keyward_core::CreateKeyInput;
use keyward_core::Operation;
use tonic::{Request, Response, Status};

use super::convert::{given, key_to_pb, nonzero, rotation_input, version_info_to_pb};
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
            alias: given(r.alias),
            description: r.description,
            labels: r.labels.into_iter().collect(),
            rotation: rotation_input(r.rotation_period, r.next_rotation_time, r.max_encryptions_per_version),
        };
        let out = self.0.live()?.create_key(&c, input).await;
        respond(&c, out.map(|k| pb::CreateKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn describe_key(
        &self,
        req: Request<pb::DescribeKeyRequest>,
    ) -> Result<Response<pb::DescribeKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::DescribeKey).await?;
        let out = self.0.live()?.describe_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::DescribeKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListKeys).await?;
        let r = req.into_inner();
        let token = given(r.page_token);
        let out = self.0.live()?.list_keys(&c, nonzero(r.page_size), token.as_deref()).await;
        respond(
            &c,
            out.map(|page| pb::ListKeysResponse {
                keys: page.keys.into_iter().map(key_to_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            }),
        )
    }

    async fn rotate_key(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::RotateKey).await?;
        let out = self.0.live()?.rotate_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::RotateKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn enable_key(
        &self,
        req: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::EnableKey).await?;
        let out = self.0.live()?.enable_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::EnableKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn disable_key(
        &self,
        req: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::DisableKey).await?;
        let out = self.0.live()?.disable_key(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::DisableKeyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn create_alias(
        &self,
        req: Request<pb::CreateAliasRequest>,
    ) -> Result<Response<pb::CreateAliasResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateAlias).await?;
        let r = req.into_inner();
        let out = self.0.live()?.create_alias(&c, &r.alias, &r.key_id).await;
        respond(&c, out.map(|k| pb::CreateAliasResponse { key: Some(key_to_pb(k)) }))
    }

    async fn delete_alias(
        &self,
        req: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let c = self.0.caller(&req, Operation::DeleteAlias).await?;
        let out = self.0.live()?.delete_alias(&c, &req.into_inner().alias).await;
        respond(&c, out.map(|_| pb::DeleteAliasResponse {}))
    }

    async fn disable_key_version(
        &self,
        req: Request<pb::DisableKeyVersionRequest>,
    ) -> Result<Response<pb::DisableKeyVersionResponse>, Status> {
        let c = self.0.caller(&req, Operation::DisableKeyVersion).await?;
        let r = req.into_inner();
        let out = self.0.live()?.disable_key_version(&c, &r.key_id, r.version).await;
        respond(&c, out.map(|k| pb::DisableKeyVersionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn enable_key_version(
        &self,
        req: Request<pb::EnableKeyVersionRequest>,
    ) -> Result<Response<pb::EnableKeyVersionResponse>, Status> {
        let c = self.0.caller(&req, Operation::EnableKeyVersion).await?;
        let r = req.into_inner();
        let out = self.0.live()?.enable_key_version(&c, &r.key_id, r.version).await;
        respond(&c, out.map(|k| pb::EnableKeyVersionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn schedule_key_version_destruction(
        &self,
        req: Request<pb::ScheduleKeyVersionDestructionRequest>,
    ) -> Result<Response<pb::ScheduleKeyVersionDestructionResponse>, Status> {
        let c = self.0.caller(&req, Operation::ScheduleKeyVersionDestruction).await?;
        let r = req.into_inner();
        let out = self
            .0
            .live()?
            .schedule_key_version_destruction(&c, &r.key_id, r.version, nonzero(r.pending_window_days))
            .await;
        respond(&c, out.map(|k| pb::ScheduleKeyVersionDestructionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn restore_key_version(
        &self,
        req: Request<pb::RestoreKeyVersionRequest>,
    ) -> Result<Response<pb::RestoreKeyVersionResponse>, Status> {
        let c = self.0.caller(&req, Operation::RestoreKeyVersion).await?;
        let r = req.into_inner();
        let out = self.0.live()?.restore_key_version(&c, &r.key_id, r.version).await;
        respond(&c, out.map(|k| pb::RestoreKeyVersionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn schedule_key_deletion(
        &self,
        req: Request<pb::ScheduleKeyDeletionRequest>,
    ) -> Result<Response<pb::ScheduleKeyDeletionResponse>, Status> {
        let c = self.0.caller(&req, Operation::ScheduleKeyDeletion).await?;
        let r = req.into_inner();
        let out = self.0.live()?.schedule_key_deletion(&c, &r.key_id, nonzero(r.pending_window_days)).await;
        respond(&c, out.map(|k| pb::ScheduleKeyDeletionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn cancel_key_deletion(
        &self,
        req: Request<pb::CancelKeyDeletionRequest>,
    ) -> Result<Response<pb::CancelKeyDeletionResponse>, Status> {
        let c = self.0.caller(&req, Operation::CancelKeyDeletion).await?;
        let out = self.0.live()?.cancel_key_deletion(&c, &req.into_inner().key_id).await;
        respond(&c, out.map(|k| pb::CancelKeyDeletionResponse { key: Some(key_to_pb(k)) }))
    }

    async fn update_rotation_policy(
        &self,
        req: Request<pb::UpdateRotationPolicyRequest>,
    ) -> Result<Response<pb::UpdateRotationPolicyResponse>, Status> {
        let c = self.0.caller(&req, Operation::UpdateRotationPolicy).await?;
        let r = req.into_inner();
        let input = rotation_input(r.rotation_period, r.next_rotation_time, r.max_encryptions_per_version);
        let out = self.0.live()?.update_rotation_policy(&c, &r.key_id, input).await;
        respond(&c, out.map(|k| pb::UpdateRotationPolicyResponse { key: Some(key_to_pb(k)) }))
    }

    async fn list_key_versions(
        &self,
        req: Request<pb::ListKeyVersionsRequest>,
    ) -> Result<Response<pb::ListKeyVersionsResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListKeyVersions).await?;
        let out = self.0.live()?.list_key_versions(&c, &req.into_inner().key_id).await;
        respond(
            &c,
            out.map(|k| pb::ListKeyVersionsResponse {
                key_id: k.meta.id.to_string(),
                versions: k.versions.into_iter().map(version_info_to_pb).collect(),
            }),
        )
    }

    async fn mark_key_version_compromised(
        &self,
        req: Request<pb::MarkKeyVersionCompromisedRequest>,
    ) -> Result<Response<pb::MarkKeyVersionCompromisedResponse>, Status> {
        let c = self.0.caller(&req, Operation::MarkKeyVersionCompromised).await?;
        let r = req.into_inner();
        let out = self.0.live()?.mark_key_version_compromised(&c, &r.key_id, r.version).await;
        respond(&c, out.map(|k| pb::MarkKeyVersionCompromisedResponse { key: Some(key_to_pb(k)) }))
    }
}
