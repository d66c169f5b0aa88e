//! `keyward.v1.ClusterPeerService`, both ends: the service a cluster node
//! answers other nodes with ([`PeerApi`]), and the client it asks them with
//! ([`GrpcPeers`], the `AuditPeers` port of `keyward_core`). Requests are
//! authenticated by their `PeerCredential` alone (`keyward_core`'s peers
//! module), never by the caller identities of the other services.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use keyward_core::{
    AuditPage, AuditPeers, AuditQuery, KeyId, KmsError, Operation, PeerCredential, PeerError,
    PeerVerifyReply, SealedRecord, VerifyReport,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use super::{refused, request_id, respond, Api};
use crate::pb::{
    self, cluster_peer_service_client::ClusterPeerServiceClient,
    cluster_peer_service_server::ClusterPeerService,
};

/// The node-to-node service.
#[derive(Debug, Clone)]
pub struct PeerApi(pub Api);

fn credential_from_pb(c: Option<pb::PeerCredential>) -> Result<PeerCredential, KmsError> {
    let refused =
        |why: &str| KmsError::Unauthenticated(format!("a node-to-node call needs a peer credential: {why}"));
    let c = c.ok_or_else(|| refused("none was sent"))?;
    let tag: [u8; 32] = c.tag.as_slice().try_into().map_err(|_| refused("its tag is not 32 bytes"))?;
    Ok(PeerCredential {
        from_node: c.from_node,
        to_node: c.to_node,
        issued_ms: c.issued_unix_ms,
        request_id: c.request_id,
        principal: c.principal,
        tag,
    })
}

fn credential_to_pb(c: PeerCredential) -> pb::PeerCredential {
    pb::PeerCredential {
        from_node: c.from_node,
        to_node: c.to_node,
        issued_unix_ms: c.issued_ms,
        request_id: c.request_id,
        principal: c.principal,
        tag: c.tag.to_vec(),
    }
}

fn query_from_pb(r: &pb::PeerQueryAuditLogRequest) -> Result<AuditQuery, KmsError> {
    let key_id = match &r.key_id {
        None => None,
        Some(k) => Some(k.parse::<KeyId>().map_err(|_| KmsError::invalid("key_id", "not a key UUID"))?),
    };
    Ok(AuditQuery {
        key_id,
        principal: r.principal.clone(),
        operation: r.operation.clone(),
        outcome: r.outcome.clone(),
        edge: r.edge.clone(),
        node_id: r.node_id.clone(),
        start_ms: r.start_unix_ms,
        end_ms: r.end_unix_ms,
        limit: r.page_size as usize,
        cursor: r.after_sequence,
        oldest_first: r.oldest_first,
    })
}

fn query_to_pb(credential: PeerCredential, q: AuditQuery) -> pb::PeerQueryAuditLogRequest {
    pb::PeerQueryAuditLogRequest {
        credential: Some(credential_to_pb(credential)),
        key_id: q.key_id.map(|k| k.to_string()),
        principal: q.principal,
        operation: q.operation,
        outcome: q.outcome,
        edge: q.edge,
        node_id: q.node_id,
        start_unix_ms: q.start_ms,
        end_unix_ms: q.end_ms,
        page_size: u32::try_from(q.limit).unwrap_or(u32::MAX),
        after_sequence: q.cursor,
        oldest_first: q.oldest_first,
    }
}

#[tonic::async_trait]
impl ClusterPeerService for PeerApi {
    async fn peer_query_audit_log(
        &self,
        req: Request<pb::PeerQueryAuditLogRequest>,
    ) -> Result<Response<pb::PeerQueryAuditLogResponse>, Status> {
        let caller = refused(request_id(&req), req.remote_addr().map(|a| a.to_string()).unwrap_or_default());
        let kms = self.0.live()?;
        let r = req.into_inner();
        let out = match (credential_from_pb(r.credential.clone()), query_from_pb(&r)) {
            (Ok(cred), Ok(query)) => kms.peer_query_audit(caller.clone(), cred, query).await,
            (Err(e), _) => Err(kms.refuse(&caller, Operation::QueryAuditLog, e).await),
            (_, Err(e)) => Err(e),
        };
        respond(
            &caller,
            out.map(|page| pb::PeerQueryAuditLogResponse {
                records: page
                    .records
                    .into_iter()
                    .map(|s| pb::StoredAuditRecord { sequence: s.record.seq, stored: s.bytes })
                    .collect(),
                next_cursor: page.next_cursor,
            }),
        )
    }

    async fn peer_verify_audit_log(
        &self,
        req: Request<pb::PeerVerifyAuditLogRequest>,
    ) -> Result<Response<pb::PeerVerifyAuditLogResponse>, Status> {
        let caller = refused(request_id(&req), req.remote_addr().map(|a| a.to_string()).unwrap_or_default());
        let kms = self.0.live()?;
        let r = req.into_inner();
        let out = match credential_from_pb(r.credential) {
            Ok(cred) => kms.peer_verify_audit(caller.clone(), cred, r.checkpoint_sequence).await,
            Err(e) => Err(kms.refuse(&caller, Operation::VerifyAuditLog, e).await),
        };
        respond(
            &caller,
            out.map(|v| pb::PeerVerifyAuditLogResponse {
                records_checked: v.report.records_checked,
                checkpoints_checked: v.report.checkpoints_checked,
                last_checkpoint_sequence: v.report.last_checkpoint_seq,
                first_bad_sequence: v.report.first_bad_seq,
                problem: v.report.problem,
                head_sequence: v.head_seq,
                record_hash: v.record_hash,
                audit_public_key: v.public_key,
            }),
        )
    }
}

/// Longest wait for one answer from another node.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How a node asks the others, over gRPC to the addresses they publish
/// (TLS when this node serves TLS: the other nodes are trusted by the
/// client CA file, or else this node's own certificate, and this node's
/// certificate is presented when client certificates are checked).
#[derive(Debug)]
pub struct GrpcPeers {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcPeers {
    /// Plain gRPC (`tls` `None`), or TLS with this client configuration.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self { tls, channels: Mutex::new(HashMap::new()) }
    }

    /// The TLS client configuration for reaching nodes that serve `tls`.
    pub fn tls_for(tls: &crate::config::TlsConfig) -> std::io::Result<ClientTlsConfig> {
        let ca = std::fs::read(tls.client_ca_file.as_ref().unwrap_or(&tls.cert_file))?;
        let mut c = ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if tls.client_ca_file.is_some() {
            let (cert, key) = (std::fs::read(&tls.cert_file)?, std::fs::read(&tls.key_file)?);
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        Ok(c)
    }

    fn client(&self, address: &str) -> Result<ClusterPeerServiceClient<Channel>, PeerError> {
        let mut channels = self.channels.lock().expect("peer channels lock");
        if let Some(c) = channels.get(address) {
            return Ok(ClusterPeerServiceClient::new(c.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| PeerError(format!("its address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(PEER_CALL_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.clone()).map_err(|e| PeerError(format!("TLS to {address}: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        // A handful of nodes: the map stays as small as the cluster.
        channels.insert(address.to_string(), channel.clone());
        Ok(ClusterPeerServiceClient::new(channel))
    }
}

fn peer_status(address: &str, s: Status) -> PeerError {
    PeerError(format!("{address} answered {:?}: {}", s.code(), s.message()))
}

impl AuditPeers for GrpcPeers {
    fn query(
        &self,
        address: &str,
        credential: PeerCredential,
        query: AuditQuery,
    ) -> BoxFuture<'_, Result<AuditPage, PeerError>> {
        let address = address.to_string();
        async move {
            let mut client = self.client(&address)?;
            let r = client
                .peer_query_audit_log(query_to_pb(credential, query))
                .await
                .map_err(|s| peer_status(&address, s))?
                .into_inner();
            let records = r
                .records
                .into_iter()
                .map(|s| {
                    let record = keyward_format::audit::decode(&s.stored).map_err(|e| {
                        PeerError(format!("{address} sent a record that does not parse: {e}"))
                    })?;
                    if record.seq != s.sequence {
                        return Err(PeerError(format!(
                            "{address} sent record {} as {}",
                            record.seq, s.sequence
                        )));
                    }
                    Ok(SealedRecord { record, bytes: s.stored })
                })
                .collect::<Result<_, _>>()?;
            Ok(AuditPage { records, next_cursor: r.next_cursor })
        }
        .boxed()
    }

    fn verify(
        &self,
        address: &str,
        credential: PeerCredential,
        checkpoint_seq: u64,
    ) -> BoxFuture<'_, Result<PeerVerifyReply, PeerError>> {
        let address = address.to_string();
        async move {
            let mut client = self.client(&address)?;
            let r = client
                .peer_verify_audit_log(pb::PeerVerifyAuditLogRequest {
                    credential: Some(credential_to_pb(credential)),
                    checkpoint_sequence: checkpoint_seq,
                })
                .await
                .map_err(|s| peer_status(&address, s))?
                .into_inner();
            Ok(PeerVerifyReply {
                report: VerifyReport {
                    records_checked: r.records_checked,
                    checkpoints_checked: r.checkpoints_checked,
                    last_checkpoint_seq: r.last_checkpoint_sequence,
                    first_bad_seq: r.first_bad_sequence,
                    problem: r.problem,
                    nodes: Vec::new(),
                },
                head_seq: r.head_sequence,
                record_hash: r.record_hash,
                public_key: r.audit_public_key,
            })
        }
        .boxed()
    }
}
