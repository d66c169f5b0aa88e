//! The seal: whether this server holds its keys in memory, and how it comes
//! to hold them.
//!
//! Every edge reaches the key service through [`Seal::kms`]. While the
//! server is sealed there is no `Kms` at all (no root key, no version
//! secret, no audit writer) and every request is refused UNAVAILABLE with
//! "sealed", except `OperatorService.SealStatus` and `Unseal`; health is
//! NOT_SERVING. Unsealing opens the `Kms` over the same store:
//! - `[root_key] kind = "shamir"`: shares are offered one by one
//!   ([`Seal::unseal`]); at the threshold they are combined and the result
//!   must open the store (its check value). Attempts are kept in memory
//!   (bounded, never the shares) and recorded once the log is writable.
//! - a key file or an HSM (`kind = "file"`, `"pkcs11"`): unsealed at start
//!   from that source, and again on an admin's empty `Unseal` after `Seal`.
//!
//! [`Seal::seal`] takes the `Kms` out of service, waits for the requests
//! still holding it, stops its audit writer and drops it: the version
//! secrets and the root key are zeroized on drop.

pub mod file;
pub mod init;
pub mod pkcs11;
pub mod rotate;
pub mod shamir;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use keyward_core::{Clock, Edge, Kms, KmsConfig, KmsError, OpenError, Store, UnsealAttempt};
use keyward_crypto::RootKey;
use tokio::sync::watch;

pub use file::{SealFile, SealLock};
use shamir::{Share, ShareError};

/// Most unseal attempts kept in memory while sealed; past it they are only
/// counted (one summary record when the log is writable).
pub const MAX_PENDING_ATTEMPTS: usize = 1024;

/// How long sealing waits for requests still holding the keys.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Where the root key comes from at unseal.
pub enum Source {
    /// Key shares, offered one by one.
    Shamir {
        /// The initialization the shares belong to.
        current: ShamirInit,
        /// The one before it, while a root-key rotation may not have
        /// finished (seal.json's `previous`): its shares are accepted too,
        /// and whichever opens the store becomes the only one.
        previous: Option<ShamirInit>,
        /// The data folder (its seal.json is settled at unseal).
        data_dir: std::path::PathBuf,
    },
    /// A file or an HSM: `kind` is what [`SealState::kind`] says, `load`
    /// reads the key (replaced when the root key is rotated).
    Auto {
        /// `file` or `pkcs11`.
        kind: &'static str,
        /// Reads the root key (errors are for the operator: they name files and labels).
        load: RwLock<RootLoader>,
    },
}

/// Reads a root key (from a file, or the HSM).
pub type RootLoader = Arc<dyn Fn() -> Result<RootKey, String> + Send + Sync>;

/// One Shamir initialization: its id, N, K and the shares' commitments.
#[derive(Debug, Clone)]
pub struct ShamirInit {
    /// The id every share names.
    pub init_id: String,
    /// How many were made.
    pub shares: u8,
    /// How many rebuild the key.
    pub threshold: u8,
    /// Each share's commitment, by index - 1 (empty: not checked one by one).
    pub commitments: Vec<[u8; 32]>,
}

impl ShamirInit {
    /// Reads one from a seal file (`path` names it in errors).
    pub fn of(f: &SealFile, path: &std::path::Path) -> Result<Self, String> {
        let bad = |what: &str| format!("{}: {what}", path.display());
        let init_id = f.init_id.clone().ok_or_else(|| bad("no init_id"))?;
        let (shares, threshold) = shamir::check_parameters(
            f.shares.ok_or_else(|| bad("no shares"))?,
            f.threshold.ok_or_else(|| bad("no threshold"))?,
        )
        .map_err(|e| bad(&e.to_string()))?;
        let commitments = f
            .share_commitments
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()))
            .collect::<Option<Vec<[u8; 32]>>>()
            .ok_or_else(|| bad("share_commitments must be 64 hex characters each"))?;
        if !commitments.is_empty() && commitments.len() != usize::from(shares) {
            return Err(bad("share_commitments must have one entry per share"));
        }
        Ok(Self { init_id, shares, threshold, commitments })
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Shamir { .. } => "shamir",
            Source::Auto { kind, .. } => kind,
        }
    }
}

/// What `SealStatus` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealState {
    /// No key in memory.
    pub sealed: bool,
    /// `shamir`, `pkcs11` or `file`.
    pub kind: &'static str,
    /// Shares given so far.
    pub progress: u32,
    /// Shares needed (1 for a file or an HSM).
    pub threshold: u32,
    /// Shares made.
    pub shares: u32,
    /// The initialization's id (Shamir).
    pub init_id: String,
}

/// Who offered a share, for the record.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The request id.
    pub request_id: String,
    /// The peer address.
    pub peer: String,
    /// The edge.
    pub edge: Edge,
    /// Who it was, when a credential was checked (an admin's reset or unseal).
    pub principal: Option<String>,
}

/// Refused attempts kept one by one while sealed; past it they are counted.
pub const MAX_PENDING_REFUSALS: usize = 128;

struct Pending {
    attempts: Vec<UnsealAttempt>,
    refusals: usize,
    uncounted: u64,
}

/// Run when the server is unsealed (the KMS v2 plugin binds its key then).
type Hook = Box<dyn Fn(&Kms) + Send + Sync>;

/// The key service, or its absence; see the module documentation.
pub struct Seal {
    cell: RwLock<Option<Arc<Kms>>>,
    store: Arc<dyn Store>,
    config: KmsConfig,
    clock: Arc<dyn Clock>,
    source: Source,
    /// Shares given so far (and the lock that makes unseal attempts one at a time).
    progress: tokio::sync::Mutex<Vec<Share>>,
    progress_count: std::sync::atomic::AtomicU32,
    pending: Mutex<Pending>,
    unsealed: watch::Sender<bool>,
    /// Set at shutdown: an unseal finishing after it closes what it opened.
    closed: std::sync::atomic::AtomicBool,
    hooks: Mutex<Vec<Hook>>,
    /// Backups read (a snapshot), rotations write: never both at once.
    maintenance: Arc<tokio::sync::RwLock<()>>,
    /// One backup at a time.
    backups: tokio::sync::Semaphore,
}

impl std::fmt::Debug for NewRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRootKey").field("root", &"REDACTED").finish_non_exhaustive()
    }
}

/// What a rotation makes before it runs (see [`Seal::rotate_root`]).
pub struct NewRootKey {
    /// The new root key.
    pub root: RootKey,
    /// Reads it from now on (a file or an HSM), if the source changes.
    pub loader: Option<RootLoader>,
    /// Settles where it is kept, told whether the store holds it now.
    pub settle: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal").field("kind", &self.source.kind()).field("sealed", &self.is_sealed()).finish()
    }
}

impl Seal {
    /// A sealed server over `store`.
    pub fn sealed(store: Arc<dyn Store>, config: KmsConfig, clock: Arc<dyn Clock>, source: Source) -> Self {
        Self {
            cell: RwLock::new(None),
            store,
            config,
            clock,
            source,
            progress: tokio::sync::Mutex::new(Vec::new()),
            progress_count: Default::default(),
            pending: Mutex::new(Pending { attempts: Vec::new(), refusals: 0, uncounted: 0 }),
            unsealed: watch::channel(false).0,
            closed: Default::default(),
            hooks: Mutex::new(Vec::new()),
            maintenance: Arc::new(tokio::sync::RwLock::new(())),
            backups: tokio::sync::Semaphore::new(1),
        }
    }

    /// An unsealed server whose `Kms` is already open.
    pub fn unsealed(
        kms: Arc<Kms>,
        store: Arc<dyn Store>,
        config: KmsConfig,
        clock: Arc<dyn Clock>,
        source: Source,
    ) -> Self {
        let seal = Self::sealed(store, config, clock, source);
        *seal.cell.write().expect("seal lock") = Some(kms);
        seal.unsealed.send_replace(true);
        seal
    }

    /// Opens the `Kms` over `store` with `root` (blocking: it loads every key).
    pub fn open_kms(
        store: Arc<dyn Store>,
        root: RootKey,
        config: KmsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Kms, OpenError> {
        Kms::open(store, root, clock, config)
    }

    /// The key service, or UNAVAILABLE "sealed".
    pub fn kms(&self) -> Result<Arc<Kms>, KmsError> {
        match &*self.cell.read().expect("seal lock") {
            Some(k) => Ok(k.clone()),
            None => Err(KmsError::Sealed(self.how_to_unseal())),
        }
    }

    /// The key service if unsealed (scheduled work skips a sealed server).
    pub fn get(&self) -> Option<Arc<Kms>> {
        self.cell.read().expect("seal lock").clone()
    }

    /// Runs `f` with the key service each time the server is unsealed
    /// (and now, if it is unsealed already).
    pub fn on_unseal(&self, f: impl Fn(&Kms) + Send + Sync + 'static) {
        if let Some(kms) = self.get() {
            f(&kms);
        }
        self.hooks.lock().expect("hooks lock").push(Box::new(f));
    }

    /// The store (open whether sealed or not: backups read it directly).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Whether no key is in memory.
    pub fn is_sealed(&self) -> bool {
        self.cell.read().expect("seal lock").is_none()
    }

    /// Follows the seal: true while unsealed.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.unsealed.subscribe()
    }

    /// Where unsealing stands.
    pub fn state(&self) -> SealState {
        let sealed = self.is_sealed();
        match &self.source {
            Source::Shamir { current: ShamirInit { init_id, shares, threshold, .. }, .. } => SealState {
                sealed,
                kind: "shamir",
                progress: if sealed {
                    self.progress_count.load(std::sync::atomic::Ordering::SeqCst)
                } else {
                    0
                },
                threshold: u32::from(*threshold),
                shares: u32::from(*shares),
                init_id: init_id.clone(),
            },
            Source::Auto { kind, .. } => {
                SealState { sealed, kind, progress: 0, threshold: 1, shares: 1, init_id: String::new() }
            }
        }
    }

    fn how_to_unseal(&self) -> String {
        let s = self.state();
        match self.source {
            Source::Shamir { .. } => format!(
                "unseal it with `keyward operator unseal` ({} of {} shares given)",
                s.progress, s.threshold
            ),
            Source::Auto { kind, .. } => {
                format!(
                    "an admin sealed it; `keyward operator unseal` opens it again from its {kind} root key"
                )
            }
        }
    }

    /// Offers one share (Shamir). Refusals name what is wrong with the
    /// share and keep the progress, except when the threshold is reached
    /// and the shares do not open the store: then every share given is
    /// forgotten. Every attempt is recorded once the log is writable.
    pub async fn unseal(&self, share: &str, who: Attempt) -> Result<SealState, KmsError> {
        let Source::Shamir { current, previous, data_dir } = &self.source else {
            if share.trim().is_empty() {
                return self.unseal_auto(who).await;
            }
            return Err(KmsError::invalid(
                "share",
                format!(
                    "this server's root key comes from its {} source, not from shares; send an empty share (admin) to unseal it again",
                    self.source.kind()
                ),
            ));
        };
        let mut progress = self.progress.lock().await;
        if !self.is_sealed() {
            return Ok(self.state());
        }
        // A share of the current initialization, or of the previous one while
        // a rotation may not have finished; all of one round from the same.
        let parsed = Share::parse(share).and_then(|s| {
            let of = |i: &ShamirInit| i.init_id == s.init_id;
            match (of(current), previous.as_ref().filter(|p| of(p))) {
                (true, _) | (false, Some(_)) => Ok(s),
                (false, None) => s.check_init(&current.init_id).map(|()| s),
            }
        });
        let s = match parsed {
            Ok(s) => s,
            Err(e) => {
                let err = share_error(&e);
                self.note(&who, "a share that was refused".into(), Some(&err));
                return Err(err);
            }
        };
        let init =
            if s.init_id == current.init_id { current } else { previous.as_ref().expect("matched above") };
        let (init_id, threshold, commitments) = (&init.init_id, &init.threshold, &init.commitments);
        if let Some(first) = progress.first().filter(|p| p.init_id != s.init_id) {
            let err = KmsError::invalid(
                "share",
                format!(
                    "this share belongs to initialization {}, the shares given so far to {}; reset the progress to switch",
                    s.init_id, first.init_id
                ),
            );
            self.note(
                &who,
                format!("share {} of {}: another initialization than the round", s.index, s.init_id),
                Some(&err),
            );
            return Err(err);
        }
        // Checked against its commitment before it counts: a forged or
        // mistyped share cannot take a real one's place.
        if !commitments.is_empty() {
            let known = commitments.get(usize::from(s.index) - 1);
            if !known.is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(&c[..], &s.commitment()[..])))
            {
                let err = KmsError::invalid(
                    "share",
                    format!(
                        "share {} is not one of the shares `keyward operator init` made for initialization {init_id} (mistyped or forged); it was not counted",
                        s.index
                    ),
                );
                self.note(&who, format!("share {} of {init_id}: not one of its shares", s.index), Some(&err));
                return Err(err);
            }
        }
        if progress.iter().any(|p| p.index == s.index) {
            let err = KmsError::invalid(
                "share",
                format!("share {} was already given; offer a different one", s.index),
            );
            self.note(&who, format!("share {} of {init_id} again", s.index), Some(&err));
            return Err(err);
        }
        let index = s.index;
        progress.push(s);
        self.set_progress(progress.len());
        if progress.len() < usize::from(*threshold) {
            self.note(&who, format!("share {index} of {init_id} ({} of {threshold})", progress.len()), None);
            return Ok(self.state());
        }
        let combined = shamir::combine(&progress, *threshold);
        let given = progress.len();
        progress.clear();
        self.set_progress(0);
        let root = match combined {
            Ok(r) => r,
            Err(e) => {
                let err = share_error(&e);
                self.note(&who, format!("{given} shares of {init_id}: refused"), Some(&err));
                return Err(err);
            }
        };
        match self.open(root, "the shares do not rebuild this data folder's root key; every share given so far is forgotten: offer the right ones again").await {
            Ok(kms) => {
                self.note(&who, format!("share {index} of {init_id}: unsealed with {given} shares"), None);
                if previous.is_some() {
                    settle_seal_file(data_dir, init_id);
                }
                self.install(kms).await;
                Ok(self.state())
            }
            Err(err) => {
                self.note(&who, format!("{given} shares of {init_id}: refused"), Some(&err));
                Err(err)
            }
        }
    }

    /// Rotates the root key of an unsealed server (see
    /// `Kms::rotate_root_key`), then replaces the retired key service with
    /// one opened under the new key. `prepare` (run off the async threads,
    /// under the rotation lock, with no backup running) makes the new key,
    /// the loader that reads it from now on and what settles its storage
    /// afterwards; the outcome given to that is read from the store (its
    /// check value), not guessed from a reply. Requests in the moment of the
    /// swap get UNAVAILABLE and may retry.
    pub async fn rotate_root(
        &self,
        caller: &keyward_core::Caller,
        prepare: Box<dyn FnOnce() -> Result<NewRootKey, KmsError> + Send>,
    ) -> Result<keyward_core::RootRotation, KmsError> {
        let _one_at_a_time = self.progress.lock().await;
        // No backup holds a snapshot meanwhile: the purge after the write
        // must be able to drop every byte the old key protected.
        let _no_backup = self.maintenance.write().await;
        let kms = self.kms()?;
        let prepared = tokio::task::spawn_blocking(prepare)
            .await
            .map_err(|e| KmsError::Internal(format!("rotation task: {e}")))
            .and_then(|p| p);
        let NewRootKey { root: new_root, loader, settle } = match prepared {
            Ok(p) => p,
            // Refused before anything changed: recorded like any refusal.
            Err(e) => return Err(kms.refuse(caller, keyward_core::Operation::RotateRootKey, e).await),
        };
        let keep = zeroize::Zeroizing::new(*new_root.expose_secret());
        let check = new_root.check_value();
        let out = kms.rotate_root_key(caller, new_root).await;
        drop(kms);
        let rotated = matches!(self.store.root_check(), Ok(Some(c)) if c == check.0);
        if let Some(settle) = settle {
            settle(rotated);
        }
        if !rotated {
            return out.and(Err(KmsError::Internal("the rotation's write is not in the store".into())));
        }
        if let (Source::Auto { load, .. }, Some(l)) = (&self.source, loader) {
            *load.write().expect("loader lock") = l;
        }
        let old = self.cell.write().expect("seal lock").take();
        if let Some(old) = old {
            let start = Instant::now();
            while Arc::strong_count(&old) > 1 && start.elapsed() < DRAIN_LIMIT {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            old.flush_refusals(true).await;
            let _ = tokio::task::spawn_blocking(move || close(old, DRAIN_LIMIT)).await;
        }
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return out;
        }
        let root = RootKey::from_bytes(&*keep).map_err(|e| KmsError::Internal(e.to_string()))?;
        match self.open(root, "the new root key does not open the store it was just rotated to").await {
            Ok(kms) => {
                *self.cell.write().expect("seal lock") = Some(kms);
                // A reply lost past the deadline: the store says it happened.
                out.map_err(|e| {
                    tracing::warn!(error = %e.public_message(), "the rotation's reply was lost, but its write is in the store");
                    KmsError::FailedPrecondition(format!(
                        "the root key WAS rotated (the store holds the new one and the server serves under it), but the reply was lost: {}",
                        e.public_message()
                    ))
                })
            }
            Err(e) => {
                self.unsealed.send_replace(false);
                tracing::error!(error = %e.public_message(), "the root key was rotated, but the key service did not reopen: restart the server with the new root key");
                Err(e)
            }
        }
    }

    /// Holds off root-key rotations while a backup reads its snapshot; at
    /// most one backup at a time (a second is refused RESOURCE_EXHAUSTED).
    pub fn begin_backup(&self) -> Result<tokio::sync::OwnedRwLockReadGuard<()>, KmsError> {
        self.maintenance
            .clone()
            .try_read_owned()
            .ok()
            .filter(|_| self.backups.try_acquire().map(|p| p.forget()).is_ok())
            .ok_or_else(|| {
                KmsError::ResourceExhausted(
                    "a backup or a root-key rotation is running; retry when it has finished".into(),
                )
            })
    }

    /// Ends what [`Seal::begin_backup`] began.
    pub fn end_backup(&self, guard: tokio::sync::OwnedRwLockReadGuard<()>) {
        drop(guard);
        self.backups.add_permits(1);
    }

    /// Forgets the shares given so far.
    pub async fn reset(&self, who: Attempt) -> SealState {
        let mut progress = self.progress.lock().await;
        let n = progress.len();
        progress.clear();
        self.set_progress(0);
        if self.is_sealed() {
            self.note(&who, format!("reset: {n} shares forgotten"), None);
        }
        self.state()
    }

    /// A file or HSM server sealed by an admin: reads its root key again.
    async fn unseal_auto(&self, who: Attempt) -> Result<SealState, KmsError> {
        let Source::Auto { kind, load } = &self.source else { unreachable!("checked by the caller") };
        let load = load.read().expect("loader lock").clone();
        let _one_at_a_time = self.progress.lock().await;
        if !self.is_sealed() {
            return Ok(self.state());
        }
        // Off the async threads: an HSM call blocks.
        let loaded = tokio::task::spawn_blocking(move || load())
            .await
            .unwrap_or_else(|e| Err(format!("the unseal task failed: {e}")));
        let root = match loaded {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "unseal: the root key could not be read");
                let err = KmsError::FailedPrecondition(format!("the {kind} root key could not be read: {e}"));
                self.note(&who, format!("unseal from the {kind} root key"), Some(&err));
                return Err(err);
            }
        };
        match self.open(root, &format!("the {kind} root key does not open this data folder")).await {
            Ok(kms) => {
                self.note(&who, format!("unsealed from the {kind} root key"), None);
                self.install(kms).await;
                Ok(self.state())
            }
            Err(err) => {
                self.note(&who, format!("unseal from the {kind} root key"), Some(&err));
                Err(err)
            }
        }
    }

    /// Opens the key service with `root`; `wrong` says what a root key that
    /// does not fit the store means here. Other failures are logged; the
    /// caller learns only that it did not open.
    async fn open(&self, root: RootKey, wrong: &str) -> Result<Arc<Kms>, KmsError> {
        let (store, config, clock) = (self.store.clone(), self.config.clone(), self.clock.clone());
        let opened = tokio::task::spawn_blocking(move || Self::open_kms(store, root, config, clock))
            .await
            .map_err(|e| KmsError::Internal(format!("unseal task: {e}")))?;
        match opened {
            Ok(k) => Ok(Arc::new(k)),
            Err(OpenError::WrongRootKey) => Err(KmsError::FailedPrecondition(wrong.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "unseal: the key service did not open");
                Err(KmsError::FailedPrecondition(
                    "the root key is right but the key service did not open; the server log says why".into(),
                ))
            }
        }
    }

    /// Records the attempts kept while sealed, then serves (unless the
    /// server stopped meanwhile: then it closes what it opened).
    async fn install(&self, kms: Arc<Kms>) {
        let (mut attempts, uncounted) = {
            let mut p = self.pending.lock().expect("pending lock");
            p.refusals = 0;
            (std::mem::take(&mut p.attempts), std::mem::replace(&mut p.uncounted, 0))
        };
        if uncounted > 0 {
            attempts.push(UnsealAttempt {
                time_ms: self.clock.now_ms(),
                request_id: uuid::Uuid::new_v4().to_string(),
                peer: String::new(),
                edge: Edge::Grpc,
                principal: None,
                target: format!("{uncounted} further refused unseal attempts while sealed (counted, not recorded one by one)"),
                error: Some(KmsError::FailedPrecondition(format!("{uncounted} unseal attempts refused"))),
            });
        }
        if let Err(e) = kms.record_unseal_attempts(attempts).await {
            tracing::error!(error = %e, "unseal: the attempts made while sealed could not be recorded");
        }
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tokio::task::spawn_blocking(move || close(kms, DRAIN_LIMIT)).await;
            return;
        }
        for hook in self.hooks.lock().expect("hooks lock").iter() {
            hook(&kms);
        }
        *self.cell.write().expect("seal lock") = Some(kms);
        self.unsealed.send_replace(true);
        tracing::info!("keyward unsealed");
    }

    /// Drops every key from memory and returns to sealed. Returns once the
    /// requests that held the keys have finished (or after 10 s) and the
    /// audit writer has stopped.
    pub async fn seal(&self) {
        let _one_at_a_time = self.progress.lock().await;
        let Some(kms) = self.cell.write().expect("seal lock").take() else { return };
        self.unsealed.send_replace(false);
        let start = Instant::now();
        while Arc::strong_count(&kms) > 1 && start.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kms.flush_refusals(true).await;
        let holders = Arc::strong_count(&kms) - 1;
        // Stopping the writer blocks: off the async threads.
        let _ = tokio::task::spawn_blocking(move || close(kms, DRAIN_LIMIT)).await;
        if holders == 0 {
            tracing::warn!("keyward sealed: every key was dropped from memory");
        } else {
            tracing::error!(
                holders,
                "keyward sealed, but {holders} requests still hold the keys after {DRAIN_LIMIT:?}: they are dropped (zeroized) when the last one ends"
            );
        }
    }

    /// Shutdown: as [`Seal::seal`] without waiting (the server has drained).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(kms) = self.cell.write().expect("seal lock").take() {
            self.unsealed.send_replace(false);
            close_for_shutdown(kms, DRAIN_LIMIT);
        }
    }

    fn set_progress(&self, n: usize) {
        self.progress_count.store(n as u32, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps an attempt for the record, and logs it (never a share).
    /// Refusals are kept one by one up to [`MAX_PENDING_REFUSALS`], then
    /// counted; accepted shares are always kept (they are bounded by the
    /// shares there are), within [`MAX_PENDING_ATTEMPTS`] in all.
    pub fn note(&self, who: &Attempt, target: String, error: Option<&KmsError>) {
        let mut p = self.pending.lock().expect("pending lock");
        let keep = match error {
            Some(_) => p.refusals < MAX_PENDING_REFUSALS,
            None => true,
        } && p.attempts.len() < MAX_PENDING_ATTEMPTS;
        if !keep {
            p.uncounted += 1;
            return;
        }
        match error {
            Some(e) => {
                p.refusals += 1;
                tracing::warn!(request_id = %who.request_id, peer = %who.peer, attempt = %target, error = %e.public_message(), "unseal attempt refused")
            }
            None => {
                tracing::info!(request_id = %who.request_id, peer = %who.peer, attempt = %target, "unseal attempt")
            }
        }
        p.attempts.push(UnsealAttempt {
            time_ms: self.clock.now_ms(),
            request_id: who.request_id.clone(),
            peer: who.peer.clone(),
            edge: who.edge,
            principal: who.principal.clone(),
            target,
            error: error.map(same_kind),
        });
    }
}

/// After an unseal with the shares of `init_id`, while seal.json still
/// names two initializations (a rotation that may not have finished):
/// keeps only the one that opened the store.
fn settle_seal_file(data_dir: &std::path::Path, init_id: &str) {
    let settled = match SealFile::read(data_dir) {
        Ok(Some(mut f)) => match f.previous.take() {
            Some(p) if p.init_id.as_deref() == Some(init_id) => Some(*p),
            Some(_) if f.init_id.as_deref() == Some(init_id) => Some(f),
            _ => None,
        },
        _ => None,
    };
    if let Some(f) = settled {
        match f.write(data_dir) {
            Ok(()) => tracing::info!(init_id, "seal.json settled on the initialization that unsealed"),
            Err(e) => tracing::error!(error = %e, "seal.json could not be settled"),
        }
    }
}

/// A copy of a refusal for the record (same code and message).
fn same_kind(e: &KmsError) -> KmsError {
    match e.kind() {
        keyward_core::ErrorKind::InvalidArgument => KmsError::invalid("share", e.public_message()),
        keyward_core::ErrorKind::FailedPrecondition => KmsError::FailedPrecondition(e.public_message()),
        keyward_core::ErrorKind::Unauthenticated => KmsError::Unauthenticated(e.public_message()),
        keyward_core::ErrorKind::PermissionDenied => KmsError::PermissionDenied(e.public_message()),
        keyward_core::ErrorKind::ResourceExhausted => KmsError::ResourceExhausted(e.public_message()),
        _ => KmsError::Internal(e.public_message()),
    }
}

fn share_error(e: &ShareError) -> KmsError {
    match e {
        ShareError::Random => KmsError::Internal(e.to_string()),
        ShareError::OtherInit { .. } => KmsError::FailedPrecondition(e.to_string()),
        _ => KmsError::invalid("share", e.to_string().trim_start_matches("share: ").to_string()),
    }
}

/// Stops the audit writer (writing what it has queued) and drops the last
/// `Kms`, which releases its keys (zeroized) and its hold on the store.
/// A writer that does not stop within `limit` (a stuck disk) is waited for,
/// however long it takes: a `Kms` opened after this returns starts a writer
/// of the same chain, and two would write the same sequence numbers.
pub fn close(kms: Arc<Kms>, limit: Duration) {
    if !kms.audit_log().stop(limit) {
        tracing::error!(
            ?limit,
            "the audit writer did not stop in time (a stuck disk?); waiting for it before anything else writes the log"
        );
        kms.audit_log().wait_exited(None);
    }
    close_kms(kms);
}

/// At shutdown: as [`close`], but a writer that does not stop within
/// `limit` is left behind (the process is ending; nothing writes after it).
pub fn close_for_shutdown(kms: Arc<Kms>, limit: Duration) {
    if !kms.audit_log().stop(limit) {
        tracing::error!(?limit, "the audit writer did not stop in time; its queued records may be lost");
    }
    close_kms(kms);
}

fn close_kms(kms: Arc<Kms>) {
    match Arc::try_unwrap(kms) {
        Ok(kms) => drop(kms),
        Err(_) => tracing::error!("the key service is still referenced after it stopped; its keys stay in memory until the last request ends"),
    }
}
