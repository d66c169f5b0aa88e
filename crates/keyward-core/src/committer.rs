//! Group commit for the audit log.
//!
//! One dedicated thread owns the chain head. Requests hand it their record
//! (and, for lifecycle operations, the key changes that go with it); it drains
//! whatever has queued up into one batch, chains and numbers the records,
//! writes the batch with one synced write, applies the in-memory effects of the
//! batch, and only then wakes each waiting request. Many requests share one
//! fsync; none is answered before its record is durable.
//!
//! Under load it also waits a little (at most `linger`) for requests that
//! the server is already handling but whose records have not arrived yet,
//! so one fsync serves more of them: the server counts the requests it is
//! handling (`in_flight`), and the writer lingers only while more of them
//! are out there than are in the batch. A lone request never waits.
//!
//! Fail closed: if the write fails, every request in the batch gets an error
//! and nothing is applied. If the writer is stuck past the deadline, waiting
//! requests give up with an error while the writer finishes on its own.
//! The `healthy` watch flips to false on either and back to true on the next
//! successful write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::audit::hash_bytes;
use crate::usage::UsageBook;
use crate::{AuditEntry, AuditHead, AuditRecord, CommitBatch, SealedRecord, Store, StoreError};

/// Tuning for the committer.
#[derive(Debug, Clone)]
pub struct AuditLogConfig {
    /// Most records in one synced write.
    pub max_batch: usize,
    /// How long a request waits for its record before failing UNAVAILABLE.
    pub deadline: Duration,
    /// Told about every batch (for metrics).
    pub observer: Option<Arc<dyn AuditObserver>>,
    /// Longest wait for records of requests still being handled (0: never wait).
    pub linger: Duration,
    /// How many requests the server is handling right now (kept by the edge).
    pub in_flight: Option<Arc<AtomicUsize>>,
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            deadline: Duration::from_secs(5),
            observer: None,
            linger: Duration::from_micros(500),
            in_flight: None,
        }
    }
}

/// Hears what the audit writer does, for metrics. Called on the writer
/// thread after each write, so it must be quick.
pub trait AuditObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `records` was written and synced in `elapsed`.
    fn committed(&self, records: usize, elapsed: Duration);
    /// A batch of `records` could not be written (each request refused).
    fn failed(&self, records: usize, elapsed: Duration);
}

/// Why a record could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused the write.
    #[error("audit write failed")]
    Write(#[source] Arc<StoreError>),
    /// The writer did not finish within the deadline.
    #[error("audit write did not complete within {0:?}")]
    Timeout(Duration),
    /// The writer thread is gone (shutdown).
    #[error("audit writer stopped")]
    Stopped,
}

/// Changes a lifecycle operation commits together with its record.
pub(crate) struct Mutation {
    pub batch: CommitBatch,
    /// Runs on the writer thread after the write succeeded, before any later
    /// batch is written; it updates in-memory state (and drops any guard it
    /// holds, which serialises lifecycle operations).
    pub apply: Box<dyn FnOnce() + Send>,
}

struct Job {
    entry: AuditEntry,
    mutation: Option<Mutation>,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "Stop is sent once per process; boxing every job would cost an allocation per request"
)]
enum Msg {
    Job(Job),
    /// Finish what is queued, then exit (dropping the store).
    Stop(mpsc::Sender<()>),
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    healthy: Arc<watch::Sender<bool>>,
    deadline: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("operation", &self.entry.operation).finish()
    }
}

impl AuditLog {
    /// Starts the writer thread over `store`, continuing the chain from its head.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        usage: Arc<UsageBook>,
        config: AuditLogConfig,
    ) -> Result<Self, StoreError> {
        let head = store.audit_head()?;
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(watch::Sender::new(true));
        let writer_health = healthy.clone();
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || {
                let linger = config.in_flight.map(|n| (n, config.linger)).filter(|(_, l)| !l.is_zero());
                Writer {
                    store,
                    usage,
                    head,
                    healthy: writer_health,
                    max_batch,
                    observer: config.observer,
                    linger,
                }
                .run(rx)
            })
            .map_err(|e| StoreError(format!("cannot start audit writer: {e}")))?;
        Ok(Self { tx, healthy, deadline: config.deadline })
    }

    /// Appends a record and waits until it is durable; returns its sequence number.
    pub async fn append(&self, entry: AuditEntry) -> Result<u64, AuditError> {
        self.submit(entry, None).await
    }

    pub(crate) async fn submit(
        &self,
        entry: AuditEntry,
        mutation: Option<Mutation>,
    ) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Job(Job { entry, mutation, reply })).map_err(|_| AuditError::Stopped)?;
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditError::Stopped),
            Err(_) => {
                if self.healthy.send_replace(false) {
                    tracing::error!(
                        deadline = ?self.deadline,
                        "audit writer stuck past its deadline; refusing key use until it recovers"
                    );
                }
                Err(AuditError::Timeout(self.deadline))
            }
        }
    }

    /// Writes what is queued, stops the writer thread and waits for it, so
    /// the store is released when this returns (at most `timeout`).
    pub fn stop(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Stop(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }

    /// Watches whether the last audit write succeeded (for health reporting).
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }
}

/// What the writer thread owns.
struct Writer {
    store: Arc<dyn Store>,
    usage: Arc<UsageBook>,
    head: Option<AuditHead>,
    healthy: Arc<watch::Sender<bool>>,
    max_batch: usize,
    observer: Option<Arc<dyn AuditObserver>>,
    linger: Option<(Arc<AtomicUsize>, Duration)>,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Msg>) {
        let Writer { store, usage, mut head, healthy, max_batch, observer, linger } = self;
        let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
        let mut stop: Option<mpsc::Sender<()>> = None;
        while stop.is_none() {
            match rx.recv() {
                Ok(Msg::Job(job)) => jobs.push(job),
                Ok(Msg::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
            while jobs.len() < max_batch && stop.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Job(job)) => jobs.push(job),
                    Ok(Msg::Stop(done)) => stop = Some(done),
                    Err(_) => break,
                }
            }
            // Wait (briefly) while the server handles more requests than the
            // batch holds, less one: those records are on their way.
            if let Some((in_flight, linger)) = &linger {
                let until = Instant::now() + *linger;
                while jobs.len() < max_batch
                    && stop.is_none()
                    && in_flight.load(Ordering::Relaxed) > jobs.len() + 1
                {
                    let Some(left) = until.checked_duration_since(Instant::now()) else { break };
                    match rx.recv_timeout(left) {
                        Ok(Msg::Job(job)) => jobs.push(job),
                        Ok(Msg::Stop(done)) => stop = Some(done),
                        Err(_) => break,
                    }
                }
            }
            if jobs.is_empty() {
                continue;
            }
            let (mut seq, mut prev) = match &head {
                Some(h) => (h.seq, h.hash.clone()),
                None => (0, crate::GENESIS_HASH.to_string()),
            };
            let mut batch =
                CommitBatch { usage: usage.tally(jobs.iter().map(|j| &j.entry)), ..Default::default() };
            let mut applies = Vec::new();
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs.drain(..) {
                seq += 1;
                let record = AuditRecord::from_entry(job.entry, seq, prev);
                let bytes = store.encode_audit(&record);
                prev = hash_bytes(&bytes);
                batch.audit.push(SealedRecord { record, bytes });
                if let Some(m) = job.mutation {
                    batch.keys.extend(m.batch.keys);
                    batch.aliases.extend(m.batch.aliases);
                    applies.push(m.apply);
                }
                replies.push((seq, job.reply));
            }
            let new_head = AuditHead { seq, hash: prev };
            batch.head = Some(new_head.clone());
            let started = Instant::now();
            match store.commit(&batch) {
                Ok(()) => {
                    if let Some(o) = &observer {
                        o.committed(replies.len(), started.elapsed());
                    }
                    head = Some(new_head);
                    usage.apply(&batch.usage);
                    for apply in applies {
                        apply();
                    }
                    if !healthy.send_replace(true) {
                        tracing::info!("audit log writable again; serving");
                    }
                    tracing::trace!(records = replies.len(), elapsed = ?started.elapsed(), "audit batch committed");
                    for (seq, reply) in replies {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(e) => {
                    if let Some(o) = &observer {
                        o.failed(replies.len(), started.elapsed());
                    }
                    if healthy.send_replace(false) {
                        tracing::error!(error = %e, "audit write failed; refusing key use until it succeeds");
                    }
                    let e = Arc::new(e);
                    // Dropping `applies` drops any lifecycle guard without applying.
                    drop(applies);
                    for (_, reply) in replies {
                        let _ = reply.send(Err(AuditError::Write(e.clone())));
                    }
                }
            }
        }
        drop(rx);
        drop(store);
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }
}
