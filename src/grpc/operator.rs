//! `keyward.v1.OperatorService`: the seal. SealStatus and Unseal answer
//! while sealed (there is no `Kms` then); Seal needs an admin.

use keyward_core::{Edge, KmsError, Operation, Role};
use tonic::{Request, Response, Status};

use super::{request_id, respond, to_status, Api};
use crate::pb::{self, operator_service_server::OperatorService};
use crate::seal::{Attempt, NewRootKey, SealState};

/// The operator service.
#[derive(Debug, Clone)]
pub struct OperatorApi {
    /// The shared state of every service.
    pub api: Api,
    /// The data folder (its seal.json goes into backups).
    pub data_dir: std::path::PathBuf,
    /// Where the root key comes from (RotateRootKey makes the new one so).
    pub root_key: crate::config::RootKeySource,
}

/// An HSM server's seal.json during a rotation: the new wrapped root key
/// with the old one as `previous`, written before the store changes, so a
/// crash leaves a folder that opens with whichever the store holds. Holds
/// the folder's seal lock from prepare to finish (no destroy-hsm-key meanwhile).
struct HsmSwap {
    old: crate::seal::SealFile,
    new: crate::seal::SealFile,
    _lock: crate::seal::SealLock,
}

impl HsmSwap {
    /// Prepares the rotation ([`crate::seal::rotate::hsm_rewrap`]) and
    /// writes the `during` seal.json, under the folder's seal lock.
    fn prepare(
        hsm: &crate::config::HsmConfig,
        data_dir: &std::path::Path,
        new_label: Option<&str>,
        create: bool,
        fits: &dyn Fn(&keyward_crypto::RootKey) -> bool,
    ) -> Result<(crate::seal::rotate::HsmRewrap, Self), KmsError> {
        use crate::seal::pkcs11::TargetError;
        let hsm_err = |e: String| KmsError::FailedPrecondition(format!("the HSM: {e}"));
        let lock = crate::seal::SealLock::acquire(data_dir).map_err(KmsError::FailedPrecondition)?;
        let file = crate::seal::SealFile::read(data_dir)
            .map_err(hsm_err)?
            .ok_or_else(|| KmsError::Internal("no seal.json".into()))?;
        let r =
            crate::seal::rotate::hsm_rewrap(hsm, &file, fits, new_label, create).map_err(|e| match e {
                TargetError::Label(m) => KmsError::invalid("new_hsm_key_label", m),
                e => hsm_err(e.to_string()),
            })?;
        r.during.write(data_dir).map_err(hsm_err)?;
        let swap = Self { old: r.old.clone(), new: r.settled.clone(), _lock: lock };
        Ok((r, swap))
    }

    fn finish(self, data_dir: &std::path::Path, rotated: bool) {
        let keep = if rotated { &self.new } else { &self.old };
        if let Err(e) = keep.write(data_dir) {
            tracing::error!(error = %e, "seal.json could not be settled after the root-key rotation; the next start settles it");
        }
    }
}

/// Bytes per streamed backup chunk.
const CHUNK: usize = 256 << 10;

/// How long a backup waits for its client to take the next chunk. A client
/// that stops reading would otherwise hold the snapshot (whose files the
/// store cannot delete meanwhile) and the one backup slot for ever.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands what a backup writes to the response stream in chunks; a client
/// that went away, or stopped reading for [`STALL`], ends the backup.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<pb::BackupChunk, Status>>,
    buf: Vec<u8>,
    rt: tokio::runtime::Handle,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        // On a blocking thread (spawn_blocking), so waiting on the runtime is allowed.
        match self.rt.block_on(tokio::time::timeout(STALL, self.tx.send(Ok(pb::BackupChunk { data })))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no data for {} s", STALL.as_secs()),
            )),
        }
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
        let guard = match self.api.seal.begin_backup() {
            Ok(g) => g,
            Err(e) => return respond(&c, Err(e)),
        };
        let seal = self.api.seal.clone();
        let store = self.api.seal.store();
        let data_dir = self.data_dir.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let request_id = c.request_id.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK), rt };
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
                    // The detail is for the server log; the caller learns where to look.
                    tracing::error!(request_id, error = %e, "backup failed");
                    // Waits at most STALL: a client that stopped reading must not hold this thread.
                    let _ = w.rt.block_on(tokio::time::timeout(
                        STALL,
                        tx.send(Err(Status::internal(format!(
                            "backup failed; the server log says why (request id {request_id})"
                        )))),
                    ));
                }
            }
            seal.end_backup(guard);
        });
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let stream: Self::CreateBackupStream = Box::pin(stream);
        respond(&c, Ok(stream))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        use super::convert::timestamp;
        let c = self.api.caller(&req, Operation::ClusterStatus).await?;
        let out = self.api.live()?.cluster_status(&c).await.map(|s| {
            let leader = s.sweeper_leader.clone().unwrap_or_default();
            let when = |ms: i64| (ms > 0).then(|| timestamp(ms));
            pb::ClusterStatusResponse {
                node_id: s.this_node,
                nodes: s
                    .nodes
                    .into_iter()
                    .map(|n| pb::ClusterNode {
                        sweeper_leader: n.node_id == leader,
                        node_id: n.node_id,
                        address: n.address,
                        version: n.version,
                        started_time: when(n.started_ms),
                        updated_time: when(n.updated_ms),
                        applied_revision: n.applied_revision,
                        current: n.current,
                        checkpoint_sequence: n.checkpoint_seq,
                        checkpoint_hash: n.checkpoint_hash,
                        checkpoint_time: when(n.checkpoint_ms),
                    })
                    .collect(),
                sweeper_leader: leader,
                last_write_revision: s.last_write.unwrap_or_default(),
            }
        });
        respond(&c, out)
    }

    async fn rotate_root_key(
        &self,
        req: Request<pb::RotateRootKeyRequest>,
    ) -> Result<Response<pb::RotateRootKeyResponse>, Status> {
        use crate::config::RootKeySource;
        let c = self.api.caller(&req, Operation::RotateRootKey).await?;
        let kms = self.api.live()?;
        let refuse = |e: KmsError| async {
            Err(respond::<()>(&c, Err(kms.refuse(&c, Operation::RotateRootKey, e).await))
                .expect_err("an error"))
        };
        // Admins only, before anything is read or made.
        if !c.policy.has(Role::Admin) {
            return refuse(KmsError::PermissionDenied(format!(
                "{} may not rotate the root key",
                c.principal
            )))
            .await;
        }
        let r = req.into_inner();
        let kind = self.root_key.kind();
        if !matches!(self.root_key, RootKeySource::Pkcs11(_))
            && (!r.new_hsm_key_label.is_empty() || r.create_hsm_key)
        {
            return refuse(KmsError::invalid(
                "new_hsm_key_label",
                format!("new_hsm_key_label and create_hsm_key are for an HSM server; this one's root key is kind {kind:?}"),
            ))
            .await;
        }
        // An HSM rotation's keys, as its preparation found them.
        let hsm_labels = std::sync::Arc::new(std::sync::Mutex::new(None::<crate::seal::rotate::HsmLabels>));
        let (prepare, next_step): (Box<dyn FnOnce() -> Result<NewRootKey, KmsError> + Send>, String) =
            match &self.root_key {
                RootKeySource::File(_) | RootKeySource::Dev(_) => {
                    if r.new_root_key_file.is_empty() {
                        return refuse(KmsError::invalid(
                            "new_root_key_file",
                            "a server with a root key file needs the new one's path (make it with `keyward root-key create FILE` on the server's machine)",
                        ))
                        .await;
                    }
                    let src = RootKeySource::File(r.new_root_key_file.clone().into());
                    let next = format!(
                        "point root_key_file (or [root_key] file) at {} before the next start, then destroy the old key file: backups made under it become unreadable",
                        r.new_root_key_file
                    );
                    let prepare = move || {
                        let root = crate::config::load_root_key(&src)
                            .map_err(|e| KmsError::invalid("new_root_key_file", e.to_string()))?;
                        let loader: crate::seal::RootLoader =
                            std::sync::Arc::new(move || crate::config::load_root_key(&src).map_err(|e| e.to_string()));
                        Ok(NewRootKey { root, loader: Some(loader), settle: None })
                    };
                    (Box::new(prepare), next)
                }
                RootKeySource::Pkcs11(hsm) if r.new_root_key_file.is_empty() => {
                    let new_label = (!r.new_hsm_key_label.is_empty()).then(|| r.new_hsm_key_label.clone());
                    let (hsm, dir, create) = (hsm.clone(), self.data_dir.clone(), r.create_hsm_key);
                    let store = self.api.seal.store();
                    let out = hsm_labels.clone();
                    let prepare = move || {
                        let check = store.root_check().map_err(|e| KmsError::Internal(e.to_string()))?;
                        let fits = |k: &keyward_crypto::RootKey| {
                            check.as_ref().is_some_and(|c| k.matches(&keyward_crypto::RootCheck(c.clone())))
                        };
                        let (r, swap) = HsmSwap::prepare(&hsm, &dir, new_label.as_deref(), create, &fits)?;
                        *out.lock().expect("labels lock") = Some(r.labels);
                        let settle: Box<dyn FnOnce(bool) + Send> = Box::new(move |done| swap.finish(&dir, done));
                        Ok(NewRootKey { root: r.root, loader: Some(r.loader), settle: Some(settle) })
                    };
                    // Written once the rotation has run (from the keys it used).
                    (Box::new(prepare), String::new())
                }
                RootKeySource::Pkcs11(_) => {
                    return refuse(KmsError::invalid(
                        "new_root_key_file",
                        "an HSM server makes its new root key itself; leave new_root_key_file empty",
                    ))
                    .await
                }
                RootKeySource::Shamir => {
                    return refuse(KmsError::FailedPrecondition(
                        "a Shamir server's root key is rotated offline, where the new shares are shown before anything changes: stop the server and run `keyward root-key rotate --config <file> --shares N --threshold K`".into(),
                    ))
                    .await
                }
            };
        drop(kms);
        let out = self.api.seal.rotate_root(&c, prepare).await;
        let labels = hsm_labels.lock().expect("labels lock").take().unwrap_or_default();
        let next_step = if matches!(self.root_key, RootKeySource::Pkcs11(_)) {
            crate::seal::rotate::hsm_next_step(&labels, "nothing to restart:")
        } else {
            next_step
        };
        respond(
            &c,
            out.map(|d| pb::RotateRootKeyResponse {
                keys: d.keys as u32,
                versions: d.versions as u32,
                aliases: d.aliases as u32,
                access_records: d.access as u32,
                kind: kind.to_string(),
                next_step,
                hsm_key_label: labels.new,
                old_hsm_key_label: labels.old,
            }),
        )
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
