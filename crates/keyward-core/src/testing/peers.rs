//! An in-process [`AuditPeers`]: each request goes straight to the `Kms`
//! registered at its address, through the same `peer_*` use cases the
//! server's gRPC service calls (credential checked, request recorded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::{
    AuditPage, AuditPeers, AuditQuery, Caller, Edge, Kms, PeerCredential, PeerError, PeerVerifyReply,
};

/// The caller as an edge sees a peer request before its credential is checked.
fn unauthenticated() -> Caller {
    Caller {
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: "unauthenticated".into(),
        peer: "in-process".into(),
        edge: Edge::Grpc,
        policy: Arc::new(crate::Policy::default()),
    }
}

/// Nodes of a test cluster by address; a node not registered (or dropped)
/// does not answer.
#[derive(Debug, Clone, Default)]
pub struct LocalPeers(Arc<Mutex<HashMap<String, Weak<Kms>>>>);

impl LocalPeers {
    /// Answers requests to `address` with `kms`.
    pub fn register(&self, address: &str, kms: &Arc<Kms>) {
        self.0.lock().unwrap().insert(address.to_string(), Arc::downgrade(kms));
    }

    /// Requests to `address` fail from now on (a stopped node).
    pub fn remove(&self, address: &str) {
        self.0.lock().unwrap().remove(address);
    }

    fn node(&self, address: &str) -> Result<Arc<Kms>, PeerError> {
        let g = self.0.lock().unwrap();
        g.get(address)
            .and_then(Weak::upgrade)
            .ok_or_else(|| PeerError(format!("{address}: connection refused")))
    }
}

impl AuditPeers for LocalPeers {
    fn query(
        &self,
        address: &str,
        credential: PeerCredential,
        query: AuditQuery,
    ) -> BoxFuture<'_, Result<AuditPage, PeerError>> {
        let node = self.node(address);
        async move {
            node?
                .peer_query_audit(unauthenticated(), credential, query)
                .await
                .map_err(|e| PeerError(e.public_message()))
        }
        .boxed()
    }

    fn verify(
        &self,
        address: &str,
        credential: PeerCredential,
        checkpoint_seq: u64,
    ) -> BoxFuture<'_, Result<PeerVerifyReply, PeerError>> {
        let node = self.node(address);
        async move {
            node?
                .peer_verify_audit(unauthenticated(), credential, checkpoint_seq)
                .await
                .map_err(|e| PeerError(e.public_message()))
        }
        .boxed()
    }
}
