//! The port between cluster nodes for the audit log. Each node keeps its own
//! durable log; `QueryAuditLog` and `VerifyAuditLog` on any node ask every
//! other node through [`AuditPeers`] (gRPC in the server) and merge what
//! they answer.
//!
//! Every peer request carries a [`PeerCredential`]: an HMAC-SHA256 tag
//! under the record key (derived from the root key, which only the
//! cluster's nodes hold), in its own domain, over the sender, the receiver,
//! the time it was made, the request id and principal it is made for, and
//! the request itself. A node accepts it only within
//! [`PEER_CREDENTIAL_WINDOW_MS`] of its own clock; the comparison is
//! constant-time. Peer requests only read the log, and the receiving node
//! records each one (principal `node:<sender>`, the original request id).

use futures_util::future::BoxFuture;

use crate::{AuditPage, AuditQuery, VerifyReport};

/// How far a peer credential's time may be from the receiver's clock.
pub const PEER_CREDENTIAL_WINDOW_MS: i64 = 30_000;

/// The HMAC domain of peer credentials; never change.
pub const PEER_DOMAIN: &[u8] = b"keyward peer audit request v1";

/// Proof that a request comes from a node holding the cluster's root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCredential {
    /// The node asking.
    pub from_node: String,
    /// The node asked: a credential for one node is refused by another.
    pub to_node: String,
    /// When it was made, Unix ms (the sender's clock).
    pub issued_ms: i64,
    /// The request id of the caller's request it serves.
    pub request_id: String,
    /// The principal the sender is asking for (recorded by the receiver).
    pub principal: String,
    /// HMAC-SHA256 over all of the above and the request.
    pub tag: [u8; 32],
}

/// What a peer is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCall {
    /// A page of its own records, filtered.
    Query(AuditQuery),
    /// Verify its own chain, and name the hash of its record at this
    /// sequence number (its published checkpoint; 0: none).
    Verify {
        /// The sequence number of its last published checkpoint.
        checkpoint_seq: u64,
    },
}

/// A peer's own verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVerifyReply {
    /// Its chain, checkpoints and indexes, as it verified them.
    pub report: VerifyReport,
    /// Its newest record's sequence number (0: an empty log).
    pub head_seq: u64,
    /// The hash of its record at the asked sequence number, if it has it.
    pub record_hash: Option<String>,
    /// Its audit public key (Ed25519, 32 bytes): its checkpoints verify under it.
    pub public_key: Vec<u8>,
}

/// A node's audit log as `VerifyAuditLog` found it, in cluster mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeVerification {
    /// The node.
    pub node_id: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Records it checked.
    pub records_checked: u64,
    /// Checkpoints it checked.
    pub checkpoints_checked: u64,
    /// Its first bad record, if its chain is broken.
    pub first_bad_seq: Option<u64>,
    /// Its last published checkpoint's sequence number (0: none).
    pub published_checkpoint_seq: u64,
    /// Its log ends before its published checkpoint, or its record there is
    /// not the one the checkpoint names (restored from an older copy, or
    /// rewritten).
    pub behind: bool,
    /// What is wrong, for humans (`None`: nothing).
    pub problem: Option<String>,
}

impl NodeVerification {
    /// Reachable, intact and not behind its published checkpoint.
    pub fn ok(&self) -> bool {
        self.reachable && self.first_bad_seq.is_none() && !self.behind && self.problem.is_none()
    }
}

/// Why a peer did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PeerError(pub String);

/// How a node reaches the others (gRPC in the server, in-process in tests).
pub trait AuditPeers: Send + Sync + std::fmt::Debug + 'static {
    /// Asks the node at `address` for a page of its own records.
    fn query(
        &self,
        address: &str,
        credential: PeerCredential,
        query: AuditQuery,
    ) -> BoxFuture<'_, Result<AuditPage, PeerError>>;
    /// Asks the node at `address` to verify its own log.
    fn verify(
        &self,
        address: &str,
        credential: PeerCredential,
        checkpoint_seq: u64,
    ) -> BoxFuture<'_, Result<PeerVerifyReply, PeerError>>;
}

/// The bytes a credential's tag covers: every field, each length-prefixed,
/// then the call.
pub fn peer_message(c: &PeerCredential, call: &PeerCall) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    let mut field = |b: &[u8]| {
        m.extend_from_slice(&(b.len() as u32).to_be_bytes());
        m.extend_from_slice(b);
    };
    field(c.from_node.as_bytes());
    field(c.to_node.as_bytes());
    field(&c.issued_ms.to_be_bytes());
    field(c.request_id.as_bytes());
    field(c.principal.as_bytes());
    match call {
        PeerCall::Query(q) => {
            field(b"query");
            let opt =
                |s: &Option<String>| s.as_deref().map(|s| [b"1", s.as_bytes()].concat()).unwrap_or_default();
            field(&q.key_id.map(|k| k.as_bytes().to_vec()).unwrap_or_default());
            field(&opt(&q.principal));
            field(&opt(&q.operation));
            field(&opt(&q.outcome));
            field(&opt(&q.edge));
            field(&opt(&q.node_id));
            field(&q.start_ms.map(|t| t.to_be_bytes().to_vec()).unwrap_or_default());
            field(&q.end_ms.map(|t| t.to_be_bytes().to_vec()).unwrap_or_default());
            field(&(q.limit as u64).to_be_bytes());
            field(&q.cursor.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default());
            field(&[u8::from(q.oldest_first)]);
        }
        PeerCall::Verify { checkpoint_seq } => {
            field(b"verify");
            field(&checkpoint_seq.to_be_bytes());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> PeerCredential {
        PeerCredential {
            from_node: "n1".into(),
            to_node: "n2".into(),
            issued_ms: 1,
            request_id: "r".into(),
            principal: "alice".into(),
            tag: [0; 32],
        }
    }

    #[test]
    fn every_field_and_filter_changes_the_message() {
        let q = AuditQuery { limit: 10, ..Default::default() };
        let base = peer_message(&cred(), &PeerCall::Query(q.clone()));
        let changed = [
            peer_message(&PeerCredential { from_node: "n3".into(), ..cred() }, &PeerCall::Query(q.clone())),
            peer_message(&PeerCredential { to_node: "n3".into(), ..cred() }, &PeerCall::Query(q.clone())),
            peer_message(&PeerCredential { issued_ms: 2, ..cred() }, &PeerCall::Query(q.clone())),
            peer_message(&PeerCredential { principal: "bob".into(), ..cred() }, &PeerCall::Query(q.clone())),
            peer_message(&cred(), &PeerCall::Query(AuditQuery { limit: 11, ..q.clone() })),
            peer_message(&cred(), &PeerCall::Query(AuditQuery { cursor: Some(0), ..q.clone() })),
            peer_message(&cred(), &PeerCall::Query(AuditQuery { oldest_first: true, ..q.clone() })),
            peer_message(
                &cred(),
                &PeerCall::Query(AuditQuery { principal: Some(String::new()), ..q.clone() }),
            ),
            peer_message(&cred(), &PeerCall::Query(AuditQuery { operation: Some("x".into()), ..q.clone() })),
            peer_message(&cred(), &PeerCall::Verify { checkpoint_seq: 0 }),
        ];
        for (i, m) in changed.iter().enumerate() {
            assert_ne!(m, &base, "change {i}");
        }
        // Fields cannot slide into each other.
        let a = peer_message(
            &PeerCredential { from_node: "n1n".into(), to_node: "2".into(), ..cred() },
            &PeerCall::Query(q.clone()),
        );
        assert_ne!(a, base);
    }
}
