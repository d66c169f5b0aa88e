//! `keyward.v1.OperatorService`: the seal. SealStatus and Unseal answer
//! while sealed (there is no `Kms` then); Seal needs an admin.

use keyward_core::{Edge, KmsError, Operation, Role};
use tonic::{Request, Response, Status};

use super::{request_id, respond, to_status, Api};
use crate::pb::{self, operator_service_server::OperatorService};
use crate::seal::{Attempt, SealState};

/// The operator service.
#[derive(Debug, Clone)]
pub struct OperatorApi(pub Api);

fn state_to_pb(s: SealState) -> pb::SealStatusResponse {
    pb::SealStatusResponse {
        sealed: s.sealed,
        kind: s.kind.to_string(),
        progress: s.progress,
        threshold: s.threshold,
        shares: s.shares,
        init_id: s.init_id,
    }
}

impl OperatorApi {
    /// Who is asking, for an unseal attempt's record.
    fn attempt<T>(req: &Request<T>) -> Attempt {
        Attempt {
            request_id: request_id(req),
            peer: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
            edge: Edge::Grpc,
        }
    }

    /// While sealed only the configuration file's identities can be
    /// checked (runtime tokens live in the sealed store): an admin among
    /// them may reset the progress or unseal a file or HSM server again.
    fn require_file_admin<T>(&self, req: &Request<T>, what: &str) -> Result<(), Status> {
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let certs = req.peer_certs();
        match self.0.authenticator().identify(authorization, certs.as_deref().map(|c| c.as_slice())) {
            Ok(p) if p.policy.has(Role::Admin) => Ok(()),
            Ok(p) => Err(to_status(&KmsError::PermissionDenied(format!("{} may not {what}", p.name)))),
            Err(e) => Err(to_status(&KmsError::Unauthenticated(format!(
                "{what} needs an admin of the configuration file: {}",
                e.0
            )))),
        }
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn seal_status(
        &self,
        _req: Request<pb::SealStatusRequest>,
    ) -> Result<Response<pb::SealStatusResponse>, Status> {
        Ok(Response::new(state_to_pb(self.0.seal.state())))
    }

    async fn unseal(
        &self,
        req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::SealStatusResponse>, Status> {
        let who = Self::attempt(&req);
        let seal = &self.0.seal;
        // Unsealed: nothing to do, whoever asks (as Vault answers).
        if !seal.is_sealed() {
            return Ok(Response::new(state_to_pb(seal.state())));
        }
        if req.get_ref().reset {
            self.require_file_admin(&req, "reset the unseal progress")?;
            return Ok(Response::new(state_to_pb(seal.reset(who).await)));
        }
        if req.get_ref().share.trim().is_empty() && seal.state().kind != "shamir" {
            self.require_file_admin(&req, "unseal the server from its root key")?;
        }
        let share = zeroize::Zeroizing::new(req.into_inner().share);
        match seal.unseal(&share, who).await {
            Ok(s) => Ok(Response::new(state_to_pb(s))),
            Err(e) => Err(to_status(&e)),
        }
    }

    async fn seal(&self, req: Request<pb::SealRequest>) -> Result<Response<pb::SealStatusResponse>, Status> {
        let seal = &self.0.seal;
        if seal.is_sealed() {
            return Ok(Response::new(state_to_pb(seal.state())));
        }
        let c = self.0.caller(&req, Operation::Seal).await?;
        let out = self.0.live()?.operator_action(&c, Operation::Seal, "server").await;
        if out.is_ok() {
            seal.seal().await;
        }
        respond(&c, out.map(|()| state_to_pb(seal.state())))
    }
}
