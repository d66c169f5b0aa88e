//! `keyward.v1.AuditService`.

use keyward_core::{AuditQueryInput, Operation};
use tonic::{Request, Response, Status};

use super::convert::{given, millis, nonzero, record_to_pb};
use super::{respond, Api};
use crate::pb::{self, audit_service_server::AuditService};

/// The audit service.
#[derive(Debug, Clone)]
pub struct AuditApi(pub Api);

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit_log(
        &self,
        req: Request<pb::QueryAuditLogRequest>,
    ) -> Result<Response<pb::QueryAuditLogResponse>, Status> {
        let c = self.0.caller(&req, Operation::QueryAuditLog).await?;
        let r = req.into_inner();
        let input = AuditQueryInput {
            key: given(r.key_id),
            principal: given(r.principal),
            operation: given(r.operation),
            outcome: given(r.outcome),
            edge: given(r.edge),
            node_id: given(r.node_id),
            start_ms: r.start_time.as_ref().map(millis),
            end_ms: r.end_time.as_ref().map(millis),
            page_size: nonzero(r.page_size),
            page_token: given(r.page_token),
            oldest_first: r.oldest_first,
        };
        let out = self.0.live()?.query_audit(&c, input).await;
        respond(
            &c,
            out.map(|page| pb::QueryAuditLogResponse {
                records: page.records.into_iter().map(record_to_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
                unreachable_nodes: page.unreachable_nodes,
            }),
        )
    }

    async fn verify_audit_log(
        &self,
        req: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let c = self.0.caller(&req, Operation::VerifyAuditLog).await?;
        let out = self.0.live()?.verify_audit(&c).await;
        respond(
            &c,
            out.map(|rep| pb::VerifyAuditLogResponse {
                records_checked: rep.records_checked,
                intact: rep.intact(),
                nodes: rep
                    .nodes
                    .iter()
                    .map(|n| pb::NodeAuditVerification {
                        node_id: n.node_id.clone(),
                        reachable: n.reachable,
                        intact: n.ok(),
                        records_checked: n.records_checked,
                        checkpoints_checked: n.checkpoints_checked,
                        first_bad_sequence: n.first_bad_seq.unwrap_or(0),
                        published_checkpoint_sequence: n.published_checkpoint_seq,
                        behind: n.behind,
                        problem: n.problem.clone().unwrap_or_default(),
                    })
                    .collect(),
                first_bad_sequence: rep.first_bad_seq.unwrap_or(0),
                problem: rep.problem.unwrap_or_default(),
                checkpoints_checked: rep.checkpoints_checked,
                last_checkpoint_sequence: rep.last_checkpoint_seq.unwrap_or(0),
            }),
        )
    }

    async fn export_audit_log(
        &self,
        req: Request<pb::ExportAuditLogRequest>,
    ) -> Result<Response<pb::ExportAuditLogResponse>, Status> {
        let c = self.0.caller(&req, Operation::ExportAuditLog).await?;
        let r = req.into_inner();
        let out = self.0.live()?.export_audit(&c, r.after_sequence, nonzero(r.page_size)).await;
        respond(
            &c,
            out.map(|page| pb::ExportAuditLogResponse {
                records: page
                    .records
                    .into_iter()
                    .map(|(sequence, stored)| pb::StoredAuditRecord { sequence, stored })
                    .collect(),
                checkpoints: page
                    .checkpoints
                    .into_iter()
                    .map(|c| pb::AuditCheckpoint {
                        sequence: c.seq,
                        record_hash: c.record_hash,
                        time_unix_ms: c.time_ms,
                        node_id: c.node_id.to_string(),
                        signature: c.signature,
                    })
                    .collect(),
                next_after_sequence: page.next_after.unwrap_or(0),
            }),
        )
    }

    async fn get_audit_public_key(
        &self,
        req: Request<pb::GetAuditPublicKeyRequest>,
    ) -> Result<Response<pb::GetAuditPublicKeyResponse>, Status> {
        use keyward_store::format::export::{public_key_fingerprint, public_key_pem};
        let c = self.0.caller(&req, Operation::GetAuditPublicKey).await?;
        let out = self.0.live()?.audit_public_key(&c).await;
        respond(
            &c,
            out.map(|(node_id, key)| pb::GetAuditPublicKeyResponse {
                public_key_pem: public_key_pem(&key),
                node_id: node_id.to_string(),
                fingerprint_sha256: public_key_fingerprint(&key),
            }),
        )
    }
}
