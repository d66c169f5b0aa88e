//! `keyward.v1.OperatorService`: the seal. SealStatus and Unseal answer
//! while sealed (there is no `Kms` then); Seal needs an admin.

use keyward_core::{Edge, KmsError, Operation, Role};
use tonic::{Request, Response, Status};

use super::{request_id, respond, to_status, Api};
use crate::pb::{self, operator_service_server::OperatorService};
use crate::seal::{Attempt, SealState};

/// The operator service.
#[derive(Debug, Clone)]
pub struct OperatorApi {
    /// The shared state of every service.
    pub api: Api,
    /// The data folder (its seal.json goes into backups).
    pub data_dir: std::path::PathBuf,
}

/// Bytes per streamed backup chunk.
const CHUNK: usize = 256 << 10;

/// Hands what a backup writes to the response stream in chunks; a client
/// that went away ends the backup (a broken pipe).
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<pb::BackupChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(pb::BackupChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

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
            principal: None,
        }
    }

    /// While sealed only the configuration file's identities can be
    /// checked (runtime tokens live in the sealed store): an admin among
    /// them may reset the progress or unseal a file or HSM server again.
    /// A refusal is kept for the record like any unseal attempt.
    fn require_file_admin<T>(&self, req: &Request<T>, who: &mut Attempt, what: &str) -> Result<(), Status> {
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let certs = req.peer_certs();
        let refusal =
            match self.api.authenticator().identify(authorization, certs.as_deref().map(|c| c.as_slice())) {
                Ok(p) if p.policy.has(Role::Admin) => {
                    who.principal = Some(p.name);
                    return Ok(());
                }
                Ok(p) => {
                    who.principal = Some(p.name.clone());
                    KmsError::PermissionDenied(format!("{} may not {what}", p.name))
                }
                Err(e) => KmsError::Unauthenticated(format!(
                    "{what} needs an admin of the configuration file: {}",
                    e.0
                )),
            };
        self.api.seal.note(who, what.to_string(), Some(&refusal));
        Err(to_status(&refusal))
    }

    /// The global rate limit applies to these unauthenticated calls too.
    fn admit(&self) -> Result<(), Status> {
        match self.api.limiter() {
            Some(l) if !l.try_acquire() => {
                Err(to_status(&KmsError::ResourceExhausted("rate limit exceeded; retry with backoff".into())))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    type CreateBackupStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    async fn create_backup(
        &self,
        req: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<Self::CreateBackupStream>, Status> {
        let c = self.api.caller(&req, Operation::CreateBackup).await?;
        // Recorded before the snapshot is taken, so the backup holds its own record.
        let out = self.api.live()?.operator_action(&c, Operation::CreateBackup, "backup").await;
        if let Err(e) = out {
            return respond(&c, Err(e));
        }
        let store = self.api.seal.store();
        let data_dir = self.data_dir.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let request_id = c.request_id.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
            let started = std::time::Instant::now();
            match crate::backup::write(store.as_ref(), &data_dir, &mut w) {
                Ok(m) => tracing::info!(
                    request_id,
                    entries = m.entries.values().sum::<u64>(),
                    bytes = m.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup written"
                ),
                Err(e) => {
                    tracing::error!(request_id, error = %e, "backup failed");
                    let _ = tx.blocking_send(Err(Status::internal(format!("backup failed: {e}"))));
                }
            }
        });
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let stream: Self::CreateBackupStream = Box::pin(stream);
        respond(&c, Ok(stream))
    }

    async fn seal_status(
        &self,
        _req: Request<pb::SealStatusRequest>,
    ) -> Result<Response<pb::SealStatusResponse>, Status> {
        self.admit()?;
        Ok(Response::new(state_to_pb(self.api.seal.state())))
    }

    async fn unseal(
        &self,
        req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::SealStatusResponse>, Status> {
        self.admit()?;
        let mut who = Self::attempt(&req);
        let seal = &self.api.seal;
        // Unsealed: nothing to do, whoever asks (as Vault answers).
        if !seal.is_sealed() {
            return Ok(Response::new(state_to_pb(seal.state())));
        }
        if req.get_ref().reset {
            self.require_file_admin(&req, &mut who, "reset the unseal progress")?;
            return Ok(Response::new(state_to_pb(seal.reset(who).await)));
        }
        if req.get_ref().share.trim().is_empty() && seal.state().kind != "shamir" {
            self.require_file_admin(&req, &mut who, "unseal the server from its root key")?;
        }
        let share = zeroize::Zeroizing::new(req.into_inner().share);
        match seal.unseal(&share, who).await {
            Ok(s) => Ok(Response::new(state_to_pb(s))),
            Err(e) => Err(to_status(&e)),
        }
    }

    async fn seal(&self, req: Request<pb::SealRequest>) -> Result<Response<pb::SealStatusResponse>, Status> {
        let seal = &self.api.seal;
        if seal.is_sealed() {
            return Ok(Response::new(state_to_pb(seal.state())));
        }
        let c = self.api.caller(&req, Operation::Seal).await?;
        let out = self.api.live()?.operator_action(&c, Operation::Seal, "server").await;
        if out.is_ok() {
            seal.seal().await;
        }
        respond(&c, out.map(|()| state_to_pb(seal.state())))
    }
}
