//! Operator actions on the server as a whole (`OperatorService`): the
//! record of unseal attempts made while no log was writable, and the
//! admin-only actions (Seal, CreateBackup) that the server carries out
//! around the `Kms` rather than inside it.

use super::{Caller, Kms};
use crate::{Edge, KmsError, Operation, Outcome, Role};

/// An unseal attempt, kept in memory while sealed and recorded once the
/// log is writable. Never holds the share.
#[derive(Debug)]
pub struct UnsealAttempt {
    /// When it was made (Unix ms).
    pub time_ms: i64,
    /// Its request id.
    pub request_id: String,
    /// The peer that made it.
    pub peer: String,
    /// The edge it came through.
    pub edge: Edge,
    /// Who it was, when a credential was checked (an admin's reset or
    /// unseal); else it is recorded as `unauthenticated`.
    pub principal: Option<String>,
    /// What was offered: `share <index> of <init id>`, or what was refused.
    pub target: String,
    /// Why it was refused, if it was.
    pub error: Option<KmsError>,
}

impl Kms {
    /// Records unseal attempts made before this `Kms` opened, in order and
    /// with their own times, under principal `unauthenticated` (a share is
    /// its own credential).
    pub async fn record_unseal_attempts(&self, attempts: Vec<UnsealAttempt>) -> Result<(), KmsError> {
        for a in attempts {
            let caller = Caller {
                request_id: a.request_id,
                principal: a.principal.unwrap_or_else(|| "unauthenticated".into()),
                peer: a.peer,
                edge: a.edge,
                policy: Default::default(),
            };
            let mut entry = self.entry(&caller, Operation::Unseal);
            entry.time_ms = a.time_ms;
            entry.target = Some(crate::bounded(&a.target, 160));
            entry.outcome = match &a.error {
                None => Outcome::ok(),
                Some(e) => Outcome::of_error(e),
            };
            self.audit.append(entry).await.map_err(KmsError::AuditUnavailable)?;
        }
        Ok(())
    }

    /// Authorizes an operator action (`op`: Seal, CreateBackup) for an
    /// admin and records it, durably, before the server carries it out;
    /// a refusal is recorded too. `target` says what it concerns.
    pub async fn operator_action(
        &self,
        caller: &Caller,
        op: Operation,
        target: &str,
    ) -> Result<(), KmsError> {
        let mut entry = self.entry(caller, op);
        entry.target = Some(crate::bounded(target, 160));
        let what = match op {
            Operation::Seal => "seal the server",
            Operation::CreateBackup => "create backups",
            Operation::RotateRootKey => "rotate the root key",
            _ => "run operator actions",
        };
        let mut result = self.require(caller, Role::Admin, what);
        if result.is_ok() && self.cluster.is_some() {
            // The keys are in etcd, not in this node's data folder (and a
            // sealed node would reopen over its folder alone).
            result = Err(KmsError::FailedPrecondition(format!(
                "a cluster node cannot {what} yet: the keys live in etcd (back them up with `etcdctl snapshot save`), this node's folder holds only its audit log"
            )));
        }
        self.finish(entry, result).await
    }
}
