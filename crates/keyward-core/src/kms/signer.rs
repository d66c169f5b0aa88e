//! Start-up of the audit log's trust: the node's signing key (made and
//! stored, sealed, at first start) and the refusal to continue a chain whose
//! head is missing or behind its newest record (continuing would overwrite).

use std::sync::Arc;

use keyward_crypto::{AuditPublicKey, AuditSigningKey, RootKey};

use super::OpenError;
use crate::{AuditSigner, NodeId, Store};

/// Loads the node's audit signing key, or makes and stores one (with a new
/// random node id) if the store holds none.
pub(super) fn load_or_create(
    store: &dyn Store,
    root: &RootKey,
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
