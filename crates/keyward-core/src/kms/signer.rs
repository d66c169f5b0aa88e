//! Start-up of the audit log's trust: the node's signing key (made and
//! stored, sealed, at first start) and the refusal to continue a chain whose
//! head is missing or behind its newest record (continuing would overwrite).

use std::sync::Arc;

use keyward_crypto::{AuditPublicKey, AuditSigningKey, RootKey};

use super::OpenError;
use crate::{AuditSigner, Checkpoint, CommitBatch, NodeId, Store};

/// Loads the node's audit signing key, or makes and stores one (with a new
/// random node id) if the store holds none.
pub(super) fn load_or_create(
    store: &dyn Store,
    root: &RootKey,
    adopting: bool,
) -> Result<(NodeId, Arc<AuditSigningKey>, AuditPublicKey), OpenError> {
    let signing_failed = |e: keyward_crypto::CryptoError| OpenError::AuditKey(e.to_string());
    if let Some(s) = store.audit_signer().map_err(OpenError::Store)? {
        let key = root.unseal_signing_key(s.node_id.as_bytes(), &s.sealed_key).map_err(|_| {
            OpenError::AuditKey("the stored audit signing key does not open under this root key".into())
        })?;
        let public = key.public_key();
        if public.as_bytes() != &s.public_key {
            return Err(OpenError::AuditKey(
                "the stored audit public key does not match its signing key".into(),
            ));
        }
        log_identity(&s.node_id, &public, "audit signing key loaded");
        return Ok((s.node_id, Arc::new(key), public));
    }
    // A log without a key that signed it: only an upgrade of a folder from
    // before signing may adopt it; otherwise a new key would sign whatever
    // the log now holds.
    if let (Some(n), false) = (store.newest_audit_seq().map_err(OpenError::Store)?, adopting) {
        return Err(OpenError::AuditKey(format!(
            "the audit log holds records up to {n} but the node's audit signing key is missing; refusing to start (a new key would sign whatever the log now holds)"
        )));
    }
    let node_id = NodeId::new_v4();
    let key = AuditSigningKey::generate().map_err(signing_failed)?;
    let sealed_key = root.seal_signing_key(node_id.as_bytes(), &key).map_err(signing_failed)?;
    let public = key.public_key();
    store
        .set_audit_signer(&AuditSigner { node_id, public_key: *public.as_bytes(), sealed_key })
        .map_err(OpenError::Store)?;
    log_identity(&node_id, &public, "audit signing key created");
    Ok((node_id, Arc::new(key), public))
}

/// Logs the node id and the public key's fingerprint (both public), so an
/// operator can check the key an auditor pinned (`keyward audit public-key`).
fn log_identity(node_id: &NodeId, public: &AuditPublicKey, what: &str) {
    let fingerprint = crate::audit::hash_bytes(&public.to_spki_der());
    tracing::info!(%node_id, fingerprint_sha256 = %fingerprint, "{what}");
}

/// Refuses a log whose head is not sealed by this node's key, or whose
/// records after the last checkpoint do not chain to that sealed head: the
/// writer would otherwise continue (and sign) a history rewritten outside
/// Keyward. A folder being upgraded from before signing has its head sealed
/// (and checkpointed) now, as it is.
pub(super) fn check_seal(
    store: &dyn Store,
    (node_id, key, public): (NodeId, &AuditSigningKey, &AuditPublicKey),
    clock: &dyn crate::Clock,
    adopting: bool,
) -> Result<(), OpenError> {
    let Some(head) = store.audit_head().map_err(OpenError::Store)? else { return Ok(()) };
    let refuse =
        |why: String| Err(OpenError::AuditHead(format!("{why}: the log was changed outside Keyward")));
    match store.head_seal().map_err(OpenError::Store)? {
        Some(s)
            if s.seq == head.seq
                && s.record_hash == head.hash
                && s.node_id == node_id
                && s.verify(public) => {}
        None if adopting => {
            let seal = Checkpoint::sign(key, node_id, head.seq, head.hash.clone(), clock.now_ms());
            let batch =
                CommitBatch { head_seal: Some(seal.clone()), checkpoint: Some(seal), ..Default::default() };
            return store.commit(&batch).map_err(OpenError::Store);
        }
        Some(_) => {
            return refuse(format!("the audit chain head ({}) does not match its signed seal", head.seq))
        }
        None => return refuse(format!("the audit chain head ({}) carries no signed seal", head.seq)),
    }
    // The records after the last checkpoint (at most about a second of them)
    // must chain to the sealed head; the checkpoint itself must verify.
    let from = match store.last_checkpoint().map_err(OpenError::Store)? {
        Some(c) if c.seq <= head.seq => {
            if !c.verify(public) {
                return refuse(format!("checkpoint {} has a bad signature", c.seq));
            }
            Some(c)
        }
        Some(c) => return refuse(format!("checkpoint {} is beyond the chain head ({})", c.seq, head.seq)),
        None => None,
    };
    let start = from.as_ref().map_or(1, |c| c.seq);
    let mut expected = start;
    let mut prev: Option<String> = None;
    let mut broken: Option<String> = None;
    store
        .scan_audit(start, &mut |seq, bytes| {
            if seq > head.seq {
                return false;
            }
            let hash = crate::audit::hash_bytes(bytes);
            let linked = match (&prev, store.decode_audit(bytes)) {
                (_, Err(_)) => false,
                (None, Ok(r)) => match &from {
                    Some(c) => hash == c.record_hash,
                    None => r.prev_hash == crate::GENESIS_HASH,
                },
                (Some(p), Ok(r)) => &r.prev_hash == p,
            };
            if seq != expected || !linked {
                broken = Some(format!("record {seq} does not chain to the sealed head"));
                return false;
            }
            prev = Some(hash);
            expected += 1;
            true
        })
        .map_err(OpenError::Store)?;
    if let Some(why) = broken {
        return refuse(why);
    }
    if prev.as_deref() != Some(head.hash.as_str()) {
        return refuse(format!("the records up to {} do not hash to the sealed head", head.seq));
    }
    Ok(())
}

/// Refuses a log whose newest record is beyond the stored head (or that has
/// records but no head): the writer would continue from the head and
/// overwrite records.
pub(super) fn check_head(store: &dyn Store) -> Result<(), OpenError> {
    let newest = store.newest_audit_seq().map_err(OpenError::Store)?;
    let head = store.audit_head().map_err(OpenError::Store)?;
    match (newest, head) {
        (Some(n), None) => Err(OpenError::AuditHead(format!(
            "the audit log holds records up to {n} but its chain head is missing"
        ))),
        (Some(n), Some(h)) if h.seq < n => Err(OpenError::AuditHead(format!(
            "the audit log holds records up to {n} but its chain head is at {}",
            h.seq
        ))),
        _ => Ok(()),
    }
}
