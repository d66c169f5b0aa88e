//! Cluster mode's audit log: each node keeps its own durable, hash-chained
//! log; `QueryAuditLog` and `VerifyAuditLog` on any node answer for all of
//! them.
//!
//! - **Which nodes.** Every node with a live entry (`members`), every node
//!   that ever published a checkpoint (kept after the node stops), and
//!   every node a page token names: a node that stopped is still reported
//!   (unreachable) rather than silently left out.
//! - **Merged query.** Each node is asked for a page of its own records
//!   after its cursor, with the same filters; the pages are merged by time
//!   (then node id, then sequence number), newest first unless asked
//!   otherwise. The page token holds each node's cursor (`v1:n1=12,n2=40`),
//!   so every record is returned exactly once across pages even if clocks
//!   disagree. A node that does not answer is named in `unreachable_nodes`.
//! - **Published checkpoints.** After each heartbeat a node publishes its
//!   newest signed checkpoint when it is newer than the one published. At
//!   start it compares its log with what it published before: if the log
//!   ends before it, or holds another record there, the node warns and
//!   publishes no more, and `VerifyAuditLog` reports it behind.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{Cluster, PUBLISHED_UNKNOWN};
use super::{Caller, Kms};
use crate::peers::{peer_message, PeerCall, PEER_DOMAIN};
use crate::{
    AuditPage, AuditQuery, Checkpoint, Edge, KmsError, NodeVerification, Operation, PeerCredential,
    PeerVerifyReply, Policy, SealedRecord, StoreError, VerifyReport, PEER_CREDENTIAL_WINDOW_MS,
};

/// Longest wait for one peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A `QueryAuditLog` page as the caller gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditResults {
    /// The records, in the order asked for.
    pub records: Vec<SealedRecord>,
    /// The token of the next page (`None`: this was the last).
    pub next_page_token: Option<String>,
    /// Cluster mode: nodes whose records could not be read for this page.
    pub unreachable_nodes: Vec<String>,
}

const TOKEN_PREFIX: &str = "v1:";

/// Parses a merged page token into each node's cursor.
pub(super) fn parse_token(token: &str) -> Result<BTreeMap<String, u64>, KmsError> {
    let bad = || KmsError::invalid("page_token", "not a token from QueryAuditLog");
    let body = token.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
    let mut out = BTreeMap::new();
    for part in body.split(',').filter(|p| !p.is_empty()) {
        let (node, seq) = part.split_once('=').ok_or_else(bad)?;
        let valid = !node.is_empty()
            && node.len() <= 64
            && node.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid || out.insert(node.to_string(), seq.parse::<u64>().map_err(|_| bad())?).is_some() {
            return Err(bad());
        }
    }
    // One entry per node: a token cannot make the server ask more nodes
    // than there are (its nodes are only ever asked if they are known).
    Ok(out)
}

fn encode_token(cursors: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = cursors.iter().map(|(n, s)| format!("{n}={s}")).collect();
    format!("{TOKEN_PREFIX}{}", parts.join(","))
}

fn shared_unreachable(e: StoreError) -> KmsError {
    KmsError::Stale(format!("cannot find the cluster's nodes in the shared store: {e}"))
}

impl Kms {
    /// A credential for asking node `to` on behalf of `caller`.
    fn peer_credential(&self, c: &Cluster, to: &str, caller: &Caller, call: &PeerCall) -> PeerCredential {
        let mut cred = PeerCredential {
            from_node: c.config.node_id.clone(),
            to_node: to.to_string(),
            issued_ms: self.clock.now_ms(),
            request_id: caller.request_id.clone(),
            principal: caller.principal.clone(),
            tag: [0; 32],
        };
        cred.tag = self.records.tag(PEER_DOMAIN, &peer_message(&cred, call)).0;
        cred
    }

    /// The caller a peer request is recorded under, and why its
    /// credential does not hold, if it does not. `edge` is the caller as the
    /// edge saw it (unauthenticated: its own request id, the peer address);
    /// nothing the credential claims is recorded unless it verifies.
    fn check_peer(&self, edge: Caller, cred: &PeerCredential, call: &PeerCall) -> (Caller, Option<KmsError>) {
        match self.peer_refusal(cred, call) {
            Some(e) => (edge, Some(e)),
            None => {
                let caller = Caller {
                    request_id: cred.request_id.clone(),
                    principal: format!("node:{}", cred.from_node),
                    peer: edge.peer,
                    edge: Edge::Grpc,
                    policy: Arc::new(Policy::default()),
                };
                (caller, None)
            }
        }
    }

    fn peer_refusal(&self, cred: &PeerCredential, call: &PeerCall) -> Option<KmsError> {
        let refuse = |why: String| Some(KmsError::Unauthenticated(why));
        let Some(c) = self.cluster.as_ref() else {
            return refuse("this server is not a cluster node: it takes no node-to-node calls".into());
        };
        if cred.to_node != c.config.node_id {
            return refuse(format!("the peer credential is for node {:?}, not this one", cred.to_node));
        }
        let skew = (self.clock.now_ms() - cred.issued_ms).abs();
        if skew > PEER_CREDENTIAL_WINDOW_MS {
            return refuse(format!(
                "the peer credential was made {skew} ms away from this node's clock (at most {PEER_CREDENTIAL_WINDOW_MS})"
            ));
        }
        let tag = keyward_crypto::RecordTag(cred.tag);
        if !self.records.verify(PEER_DOMAIN, &peer_message(cred, call), &tag) {
            return refuse(
                "the peer credential does not verify (is the node given another root key?)".into(),
            );
        }
        None
    }

    /// A peer's `QueryAuditLog`: a page of this node's own records.
    pub async fn peer_query_audit(
        &self,
        edge: Caller,
        cred: PeerCredential,
        query: AuditQuery,
    ) -> Result<AuditPage, KmsError> {
        let call = PeerCall::Query(query);
        let (caller, refused) = self.check_peer(edge, &cred, &call);
        if let Some(e) = refused {
            return Err(self.refuse(&caller, Operation::QueryAuditLog, e).await);
        }
        let PeerCall::Query(query) = call else { unreachable!("built above") };
        let mut entry = self.entry(&caller, Operation::QueryAuditLog);
        entry.key_id = query.key_id;
        let result = if query.limit == 0 || query.limit > super::audit::MAX_AUDIT_PAGE_SIZE as usize {
            Err(KmsError::invalid("page_size", "1 to 1000"))
        } else {
            self.store.query_audit(&query).map_err(KmsError::Store)
        };
        self.finish(entry, result).await
    }

    /// A peer's `VerifyAuditLog`: this node verifies its own log.
    pub async fn peer_verify_audit(
        &self,
        edge: Caller,
        cred: PeerCredential,
        checkpoint_seq: u64,
    ) -> Result<PeerVerifyReply, KmsError> {
        let call = PeerCall::Verify { checkpoint_seq };
        let (caller, refused) = self.check_peer(edge, &cred, &call);
        if let Some(e) = refused {
            return Err(self.refuse(&caller, Operation::VerifyAuditLog, e).await);
        }
        let entry = self.entry(&caller, Operation::VerifyAuditLog);
        let result = self.verify_own_log(checkpoint_seq).await;
        self.finish(entry, result).await
    }

    /// Verifies this node's log, and reads its head and the hash of record
    /// `checkpoint_seq`, from one view.
    async fn verify_own_log(&self, checkpoint_seq: u64) -> Result<PeerVerifyReply, KmsError> {
        let store = self.store.clone();
        let key = self.audit_identity.1;
        tokio::task::spawn_blocking(move || {
            let report = crate::verify_log(&*store, Some(&key))?;
            let (mut head_seq, mut record_hash) = (0, None);
            store.audit_view(&mut |view| {
                head_seq = view.head()?.map_or(0, |h| h.seq);
                if checkpoint_seq > 0 {
                    record_hash = view.record(checkpoint_seq)?.map(|b| crate::audit::hash_bytes(&b));
                }
                Ok(())
            })?;
            Ok::<_, StoreError>(PeerVerifyReply {
                report,
                head_seq,
                record_hash,
                public_key: key.as_bytes().to_vec(),
            })
        })
        .await
        .map_err(|e| KmsError::Internal(e.to_string()))?
        .map_err(KmsError::Store)
    }

    /// The addresses of the nodes with a live entry, and every node's last
    /// published checkpoint.
    async fn audit_nodes(
        &self,
        c: &Cluster,
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, Checkpoint>), KmsError> {
        let (members, published) =
            futures_util::future::join(c.shared.members(), c.shared.checkpoints()).await;
        let addresses =
            members.map_err(shared_unreachable)?.nodes.into_iter().map(|n| (n.node_id, n.address)).collect();
        Ok((addresses, published.map_err(shared_unreachable)?.into_iter().collect()))
    }

    /// `QueryAuditLog` in cluster mode: every node's matching records, merged.
    pub(super) async fn merged_query(
        &self,
        c: &Cluster,
        caller: &Caller,
        query: AuditQuery,
        cursors: BTreeMap<String, u64>,
    ) -> Result<AuditResults, KmsError> {
        let me = c.config.node_id.as_str();
        let (addresses, published) = self.audit_nodes(c).await?;
        let mut nodes: BTreeSet<&str> = addresses.keys().map(String::as_str).collect();
        nodes.extend(published.keys().map(String::as_str));
        nodes.extend(cursors.keys().map(String::as_str));
        nodes.insert(me);
        if let Some(only) = &query.node_id {
            nodes.retain(|n| n == only);
        }
        let asks = nodes.iter().map(|&node| {
            let q = AuditQuery { cursor: cursors.get(node).copied(), ..query.clone() };
            let address = addresses.get(node);
            async move {
                let answer = if node == me {
                    self.store.query_audit(&q).map_err(|e| e.to_string())
                } else {
                    match (address, &c.config.peers) {
                        (None, _) => Err("it has no live entry in the cluster".to_string()),
                        (Some(_), None) => Err("this node has no way to reach other nodes".to_string()),
                        (Some(addr), Some(peers)) => {
                            let cred = self.peer_credential(c, node, caller, &PeerCall::Query(q.clone()));
                            match tokio::time::timeout(PEER_TIMEOUT, peers.query(addr, cred, q)).await {
                                Ok(r) => r.map_err(|e| e.to_string()),
                                Err(_) => Err(format!("no answer within {PEER_TIMEOUT:?}")),
                            }
                        }
                    }
                };
                (node, answer)
            }
        });
        let mut streams = Vec::new();
        let mut unreachable_nodes = Vec::new();
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(page) => streams.push((node, VecDeque::from(page.records), page.next_cursor.is_some())),
                Err(why) => {
                    tracing::warn!(node, error = %why, "QueryAuditLog: a node's records could not be read");
                    unreachable_nodes.push(node.to_string());
                }
            }
        }
        let mut next = cursors.clone();
        let mut records = Vec::with_capacity(query.limit);
        while records.len() < query.limit {
            fn key<'a>(
                (node, recs, _): &(&'a str, VecDeque<SealedRecord>, bool),
            ) -> Option<(i64, &'a str, u64)> {
                recs.front().map(|r| (r.record.time_ms, *node, r.record.seq))
            }
            let pick = if query.oldest_first {
                streams.iter().enumerate().filter_map(|(i, s)| Some((key(s)?, i))).min()
            } else {
                streams.iter().enumerate().filter_map(|(i, s)| Some((key(s)?, i))).max()
            };
            let Some((_, i)) = pick else { break };
            let r = streams[i].1.pop_front().expect("picked a stream with a front");
            next.insert(streams[i].0.to_string(), r.record.seq);
            records.push(r);
        }
        let more = streams.iter().any(|(_, recs, more)| !recs.is_empty() || *more);
        Ok(AuditResults { records, next_page_token: more.then(|| encode_token(&next)), unreachable_nodes })
    }

    /// `VerifyAuditLog` in cluster mode: every node verifies its own chain;
    /// each is compared with the checkpoint it last published.
    pub(super) async fn merged_verify(&self, c: &Cluster, caller: &Caller) -> Result<VerifyReport, KmsError> {
        let me = c.config.node_id.as_str();
        let (addresses, published) = self.audit_nodes(c).await?;
        let mut nodes: BTreeSet<&str> = addresses.keys().map(String::as_str).collect();
        nodes.extend(published.keys().map(String::as_str));
        nodes.insert(me);
        let asks = nodes.iter().map(|&node| {
            let checkpoint = published.get(node);
            let seq = checkpoint.map_or(0, |c| c.seq);
            let address = addresses.get(node);
            async move {
                let reply = if node == me {
                    self.verify_own_log(seq).await.map_err(|e| e.public_message())
                } else {
                    match (address, &c.config.peers) {
                        (None, _) => Err("it has no live entry in the cluster".to_string()),
                        (Some(_), None) => Err("this node has no way to reach other nodes".to_string()),
                        (Some(addr), Some(peers)) => {
                            let call = PeerCall::Verify { checkpoint_seq: seq };
                            let cred = self.peer_credential(c, node, caller, &call);
                            match tokio::time::timeout(PEER_TIMEOUT * 6, peers.verify(addr, cred, seq)).await
                            {
                                Ok(r) => r.map_err(|e| e.to_string()),
                                Err(_) => Err(format!("no answer within {:?}", PEER_TIMEOUT * 6)),
                            }
                        }
                    }
                };
                node_verification(node, checkpoint, reply)
            }
        });
        let nodes = futures_util::future::join_all(asks).await;
        let local = nodes.iter().find(|n| n.node_id == me);
        let problems: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.problem.as_ref().map(|p| format!("node {}: {p}", n.node_id)))
            .collect();
        Ok(VerifyReport {
            records_checked: nodes.iter().map(|n| n.records_checked).sum(),
            checkpoints_checked: nodes.iter().map(|n| n.checkpoints_checked).sum(),
            last_checkpoint_seq: self.store.last_checkpoint().ok().flatten().map(|c| c.seq),
            first_bad_seq: local
                .and_then(|n| n.first_bad_seq)
                .or_else(|| nodes.iter().find_map(|n| n.first_bad_seq)),
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            nodes,
        })
    }

    /// After a heartbeat: publishes this node's newest checkpoint if it is
    /// newer than the one published. The first time, reads what was
    /// published before and checks this node's log still holds it.
    pub(super) async fn publish_checkpoint(&self, c: &Cluster) {
        let node = c.config.node_id.as_str();
        if c.published.load(Ordering::SeqCst) == PUBLISHED_UNKNOWN {
            let Ok(all) = c.shared.checkpoints().await else { return };
            let mine = all.into_iter().find(|(n, _)| n == node).map(|(_, cp)| cp);
            let seq = mine.as_ref().map_or(0, |cp| cp.seq);
            if let Some(cp) = mine {
                match self.verify_own_log(cp.seq).await {
                    Ok(r) if r.record_hash.as_deref() == Some(cp.record_hash.as_str()) => {}
                    Ok(r) => {
                        c.diverged.store(true, Ordering::SeqCst);
                        tracing::error!(
                            node,
                            published_sequence = cp.seq,
                            log_ends_at = r.head_seq,
                            "this node's audit log does not hold the checkpoint it published before (restored from an older copy, or rewritten?): VerifyAuditLog reports it, and it publishes no newer checkpoint"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(node, error = %e.public_message(), "could not compare this node's log with its published checkpoint");
                        return;
                    }
                }
            }
            c.published.store(seq, Ordering::SeqCst);
        }
        if c.diverged.load(Ordering::SeqCst) {
            return;
        }
        let Ok(Some(cp)) = self.store.last_checkpoint() else { return };
        if cp.seq <= c.published.load(Ordering::SeqCst) {
            return;
        }
        match c.shared.publish_checkpoint(node, &cp).await {
            Ok(()) => c.published.store(cp.seq, Ordering::SeqCst),
            Err(e) => tracing::debug!(error = %e, "publishing this node's audit checkpoint failed"),
        }
    }
}

/// What `VerifyAuditLog` reports of one node.
fn node_verification(
    node: &str,
    published: Option<&Checkpoint>,
    reply: Result<PeerVerifyReply, String>,
) -> NodeVerification {
    let mut v = NodeVerification {
        node_id: node.to_string(),
        published_checkpoint_seq: published.map_or(0, |c| c.seq),
        ..Default::default()
    };
    let r = match reply {
        Ok(r) => r,
        Err(why) => {
            v.problem = Some(format!("its log is unreachable: {why}"));
            return v;
        }
    };
    v.reachable = true;
    v.records_checked = r.report.records_checked;
    v.checkpoints_checked = r.report.checkpoints_checked;
    v.first_bad_seq = r.report.first_bad_seq;
    let mut problems: Vec<String> = r.report.problem.into_iter().collect();
    if let Some(cp) = published {
        let signed = keyward_crypto::AuditPublicKey::from_bytes(&r.public_key).is_ok_and(|k| cp.verify(&k));
        if !signed {
            problems.push(format!("its published checkpoint {} is not signed by its audit key", cp.seq));
        }
        if r.head_seq < cp.seq {
            v.behind = true;
            problems.push(format!(
                "its log ends at record {} but it published a checkpoint of record {} (restored from an older copy?)",
                r.head_seq, cp.seq
            ));
        } else if r.record_hash.as_deref() != Some(cp.record_hash.as_str()) {
            v.behind = true;
            problems.push(format!(
                "its record {} is not the one its published checkpoint names (the log was rewritten)",
                cp.seq
            ));
        }
    }
    v.problem = (!problems.is_empty()).then(|| problems.join("; "));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_name_the_field() {
        let m: BTreeMap<String, u64> = [("n1".to_string(), 12), ("n-2.b_c".to_string(), 0)].into();
        assert_eq!(parse_token(&encode_token(&m)).unwrap(), m);
        assert_eq!(parse_token("v1:").unwrap(), BTreeMap::new());
        for bad in ["12", "v1:n1", "v1:n1=x", "v1:n1=1,n1=2", "v1:n 1=1", "v2:n1=1", "v1:=1"] {
            match parse_token(bad) {
                Err(KmsError::InvalidArgument { field, .. }) => assert_eq!(field, "page_token", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
