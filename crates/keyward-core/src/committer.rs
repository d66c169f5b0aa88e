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
//!
//! Honest replies: the queue is bounded (`queue_limit`; a full queue refuses
//! at once). A request that gives up at the deadline cancels its job if the
//! writer has not taken it yet (then nothing was done, and the reply says
//! so); if the writer already took it, the reply says the outcome is unknown
//! and names the request id to look up in the audit log.
//!
//! Checkpoints: when records were committed since the last checkpoint and
//! `checkpoint_every` has passed on the clock (and at a clean stop), the
//! writer signs a [`Checkpoint`] of the new head with the node's key and
//! stores it in the same synced batch as the records it covers. An idle
//! writer wakes once per `checkpoint_every` of real time to sign records
//! that are still uncovered.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::audit::hash_bytes;
use crate::usage::UsageBook;
use crate::{AuditEntry, AuditHead, AuditRecord, CommitBatch, SealedRecord, Store, StoreError};
use crate::{Checkpoint, Clock, NodeId};

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
    /// Most records waiting for the writer; more are refused at once (UNAVAILABLE).
    pub queue_limit: usize,
    /// How often, under load, the writer signs a checkpoint.
    pub checkpoint_every: Duration,
    /// The cluster node every record names (cluster mode only).
    pub node_id: Option<String>,
    /// Called on the writer thread as it starts, before its first batch
    /// (the server sets the thread's scheduling class there).
    pub writer_started: Option<fn()>,
}

/// Default [`AuditLogConfig::queue_limit`].
pub const DEFAULT_AUDIT_QUEUE_LIMIT: usize = 16_384;

impl Default for AuditLogConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            deadline: Duration::from_secs(5),
            observer: None,
            linger: Duration::from_micros(500),
            in_flight: None,
            queue_limit: DEFAULT_AUDIT_QUEUE_LIMIT,
            checkpoint_every: Duration::from_secs(1),
            node_id: None,
            writer_started: None,
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

/// Why a record could not be made durable. Each message says whether
/// anything was done.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused the write.
    #[error("audit write failed; nothing was done")]
    Write(#[source] Arc<StoreError>),
    /// The writer did not take the job within the deadline; it was cancelled.
    #[error("audit write did not start within {0:?}; the request was cancelled and nothing was done")]
    Timeout(Duration),
    /// The writer took the job but did not finish within the deadline: the
    /// record (and any change with it) may still be written.
    #[error(
        "audit write did not complete within {deadline:?}; the outcome is unknown: look up request id \
         {request_id:?} in the audit log"
    )]
    OutcomeUnknown {
        /// The deadline that passed.
        deadline: Duration,
        /// The request id the record carries.
        request_id: String,
    },
    /// The queue holds its limit of waiting records.
    #[error("audit queue full ({0} records waiting, the limit); nothing was done, retry later")]
    QueueFull(usize),
    /// The writer thread is gone (shutdown).
    #[error("audit writer stopped; nothing was done")]
    Stopped,
}

/// What signs checkpoints: the node's key, its id, and the clock.
pub(crate) struct CheckpointSigner {
    pub key: Arc<keyward_crypto::AuditSigningKey>,
    pub node_id: NodeId,
    pub clock: Arc<dyn Clock>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

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
    /// QUEUED until the writer takes it (TAKEN) or its caller gives up first (CANCELLED).
    state: Arc<AtomicU8>,
}

/// Whether (and how) the writer waits on the queue's condition variable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not waiting: it will look at the queue again by itself.
    No,
    /// Waiting for a first job: the next submit wakes it.
    Idle,
    /// Lingering for the records of requests still being handled: the
    /// submit that completes the batch wakes it, no other.
    Linger,
}

/// What requests hand the writer, under one lock.
struct Inbox {
    jobs: Vec<Job>,
    waiting: Waiting,
    /// Stop was asked for (or every handle is gone): nothing more is
    /// taken; what is queued is written, then the writer exits.
    closed: bool,
    /// Told when the writer has finished after a stop.
    stopped: Vec<mpsc::Sender<()>>,
}

/// The queue between the requests and the writer thread. Requests push
/// under a short lock and wake the writer only when it needs waking (idle,
/// or the batch it lingers for is complete), so a batch costs the writer
/// one wake-up, not one per record; the writer takes the whole queue at once.
struct Queue {
    inbox: std::sync::Mutex<Inbox>,
    cv: std::sync::Condvar,
    limit: usize,
    max_batch: usize,
    in_flight: Option<Arc<AtomicUsize>>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a lingering writer has what it waits for.
    fn batch_complete(&self, queued: usize) -> bool {
        queued >= self.max_batch
            || self.in_flight.as_ref().is_none_or(|n| n.load(Ordering::Relaxed) <= queued + 1)
    }

    /// Queues a job, waking the writer if it waits for one.
    fn push(&self, job: Job) -> Result<(), AuditError> {
        let mut g = self.lock();
        let refused = if g.closed {
            Some(AuditError::Stopped)
        } else if g.jobs.len() >= self.limit {
            Some(AuditError::QueueFull(self.limit))
        } else {
            None
        };
        if let Some(e) = refused {
            drop(g);
            // Dropped outside the lock: dropping the job drops any lifecycle
            // guard without applying.
            drop(job);
            return Err(e);
        }
        g.jobs.push(job);
        let wake = match g.waiting {
            Waiting::No => false,
            Waiting::Idle => true,
            Waiting::Linger => self.batch_complete(g.jobs.len()),
        };
        if wake {
            // One wake-up per wait, however many submit meanwhile.
            g.waiting = Waiting::No;
        }
        drop(g);
        if wake {
            self.cv.notify_one();
        }
        Ok(())
    }

    /// Takes nothing more; `done` is told when the writer has finished.
    /// Returns what is still queued if `drain` (the writer is gone).
    fn close(&self, done: Option<mpsc::Sender<()>>, drain: bool) -> Vec<Job> {
        let mut g = self.lock();
        g.closed = true;
        g.stopped.extend(done);
        let left = if drain { std::mem::take(&mut g.jobs) } else { Vec::new() };
        drop(g);
        self.cv.notify_one();
        left
    }
}

/// Closes the queue when the writer thread ends, dropping what is queued.
struct CloseOnExit(Arc<Queue>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        // Dropped outside the lock, as in `push`.
        drop(self.0.close(None, true));
    }
}

/// The submitting side of the queue: when the last handle goes, the writer
/// finishes what is queued and exits.
struct Sender(Arc<Queue>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.close(None, false);
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditQueue").field("limit", &self.0.limit).finish_non_exhaustive()
    }
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: Arc<Sender>,
    healthy: Arc<watch::Sender<bool>>,
    deadline: Duration,
    exited: Arc<Exited>,
}

/// Set when the writer thread has ended (returned or panicked), so nothing
/// else starts writing the same chain while it may still write.
#[derive(Debug, Default)]
struct Exited {
    done: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

/// Marks [`Exited`] when dropped: on the writer thread's way out, however it ends.
struct MarkExited(Arc<Exited>);

impl Drop for MarkExited {
    fn drop(&mut self) {
        *self.0.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.cv.notify_all();
    }
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
        signer: Option<CheckpointSigner>,
    ) -> Result<Self, StoreError> {
        let head = store.audit_head()?;
        let last_checkpoint = store.last_checkpoint()?.map(|c| (c.seq, c.time_ms));
        let queue_limit = config.queue_limit.max(1);
        let max_batch = config.max_batch.max(1);
        let in_flight = config.in_flight.filter(|_| !config.linger.is_zero());
        // The queue holds the in-flight count; the writer only how long it may wait.
        let linger = in_flight.is_some().then_some(config.linger);
        let queue = Arc::new(Queue {
            inbox: std::sync::Mutex::new(Inbox {
                jobs: Vec::with_capacity(max_batch.min(queue_limit)),
                waiting: Waiting::No,
                closed: false,
                stopped: Vec::new(),
            }),
            cv: std::sync::Condvar::new(),
            limit: queue_limit,
            max_batch,
            in_flight,
        });
        let rx = queue.clone();
        let checkpoint_every = config.checkpoint_every;
        let healthy = Arc::new(watch::Sender::new(true));
        let writer_health = healthy.clone();
        let exited = Arc::new(Exited::default());
        let mark = MarkExited(exited.clone());
        let started = config.writer_started;
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || {
                let _mark = mark;
                if let Some(f) = started {
                    f();
                }
                Writer {
                    store,
                    usage,
                    head,
                    healthy: writer_health,
                    max_batch,
                    observer: config.observer,
                    linger,
                    signer,
                    last_checkpoint,
                    checkpoint_every,
                    node_id: config.node_id,
                }
                .run(rx)
            })
            .map_err(|e| StoreError(format!("cannot start audit writer: {e}")))?;
        Ok(Self { tx: Arc::new(Sender(queue)), healthy, deadline: config.deadline, exited })
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
        self.submit_with(entry, mutation, false).await
    }

    /// As [`AuditLog::submit`]; with `wait_if_taken`, a job the writer has
    /// taken is waited for past the deadline (a root-key rotation's big
    /// write: its outcome must be known, not guessed).
    pub(crate) async fn submit_with(
        &self,
        entry: AuditEntry,
        mutation: Option<Mutation>,
        wait_if_taken: bool,
    ) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let request_id = entry.request_id.clone();
        self.tx.0.push(Job { entry, mutation, reply, state: state.clone() })?;
        let mut rx = rx;
        match tokio::time::timeout(self.deadline, &mut rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditError::Stopped),
            Err(_) if wait_if_taken && state.load(Ordering::Acquire) != QUEUED => {
                rx.await.unwrap_or(Err(AuditError::Stopped))
            }
            Err(_) => {
                if self.healthy.send_replace(false) {
                    tracing::error!(
                        deadline = ?self.deadline,
                        "audit writer stuck past its deadline; refusing key use until it recovers"
                    );
                }
                // Cancel if the writer has not taken the job; else say we do not know.
                match state.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => Err(AuditError::Timeout(self.deadline)),
                    Err(_) => Err(AuditError::OutcomeUnknown { deadline: self.deadline, request_id }),
                }
            }
        }
    }

    /// Writes what is queued, stops the writer thread and waits for it, so
    /// the store is released when this returns (at most `timeout`). Whether
    /// the thread has ended: if not, it may still write (a stuck disk), and
    /// nothing else may write this chain before [`AuditLog::wait_exited`].
    pub fn stop(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        self.send_stop(timeout);
        self.wait_exited(Some(until.saturating_duration_since(Instant::now())))
    }

    /// Waits until the writer thread has ended (at most `timeout`, or for
    /// ever); whether it has.
    pub fn wait_exited(&self, timeout: Option<Duration>) -> bool {
        let done = self.exited.done.lock().unwrap_or_else(|p| p.into_inner());
        let done = match timeout {
            Some(t) => {
                self.exited.cv.wait_timeout_while(done, t, |d| !*d).unwrap_or_else(|p| p.into_inner()).0
            }
            None => self.exited.cv.wait_while(done, |d| !*d).unwrap_or_else(|p| p.into_inner()),
        };
        *done
    }

    fn send_stop(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        self.tx.0.close(Some(done), false);
        let _ = wait.recv_timeout(timeout);
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
    /// The longest wait for records on their way (None: never wait).
    linger: Option<Duration>,
    signer: Option<CheckpointSigner>,
    /// Sequence number and time of the newest stored checkpoint.
    last_checkpoint: Option<(u64, i64)>,
    checkpoint_every: Duration,
    node_id: Option<String>,
}

impl Writer {
    /// The head's seal: a checkpoint of `head`, signed now (every batch).
    fn seal(&self, head: &AuditHead) -> Option<Checkpoint> {
        let s = self.signer.as_ref()?;
        Some(Checkpoint::sign(&s.key, s.node_id, head.seq, head.hash.clone(), s.clock.now_ms()))
    }

    /// A checkpoint of `head`, if one is due: records since the last one,
    /// and `checkpoint_every` passed on the clock (or `force`, at stop).
    fn checkpoint_due(&self, head: Option<&AuditHead>, force: bool) -> Option<Checkpoint> {
        let (signer, head) = (self.signer.as_ref()?, head?);
        let now = signer.clock.now_ms();
        let due = match self.last_checkpoint {
            None => true,
            Some((seq, _)) if seq >= head.seq => false,
            Some((_, at)) => force || now.saturating_sub(at) >= self.checkpoint_every.as_millis() as i64,
        };
        due.then(|| Checkpoint::sign(&signer.key, signer.node_id, head.seq, head.hash.clone(), now))
    }

    /// Whether records were committed that no checkpoint covers yet.
    fn uncovered(&self, head: Option<&AuditHead>) -> bool {
        self.signer.is_some() && head.is_some_and(|h| self.last_checkpoint.is_none_or(|(seq, _)| seq < h.seq))
    }

    /// Writes a checkpoint-only batch (idle tick or stop).
    fn write_checkpoint(&mut self, head: Option<&AuditHead>, force: bool) {
        let Some(c) = self.checkpoint_due(head, force) else { return };
        let (seq, at) = (c.seq, c.time_ms);
        match self.store.commit(&CommitBatch { checkpoint: Some(c), ..Default::default() }) {
            Ok(()) => self.last_checkpoint = Some((seq, at)),
            Err(e) => tracing::error!(error = %e, "audit checkpoint write failed"),
        }
    }

    /// Waits for jobs and takes the next batch into `jobs` (lingering,
    /// under load, for records on their way); signs a checkpoint when idle
    /// ones are due. Returns false once the queue is closed and empty.
    fn take(&mut self, queue: &Queue, head: Option<&AuditHead>, jobs: &mut Vec<Job>) -> bool {
        let mut g = queue.lock();
        while g.jobs.is_empty() {
            if g.closed {
                return false;
            }
            g.waiting = Waiting::Idle;
            if self.uncovered(head) {
                let (back, timeout) =
                    queue.cv.wait_timeout(g, self.checkpoint_every).unwrap_or_else(|p| p.into_inner());
                g = back;
                g.waiting = Waiting::No;
                if timeout.timed_out() && g.jobs.is_empty() {
                    drop(g);
                    self.write_checkpoint(head, false);
                    g = queue.lock();
                }
            } else {
                g = queue.cv.wait(g).unwrap_or_else(|p| p.into_inner());
                g.waiting = Waiting::No;
            }
        }
        // Wait (briefly) while the server handles more requests than the
        // batch holds, less one: those records are on their way. Only the
        // submit that completes the batch wakes the writer.
        if let Some(linger) = self.linger {
            let until = Instant::now() + linger;
            while !g.closed && !queue.batch_complete(g.jobs.len()) {
                let Some(left) = until.checked_duration_since(Instant::now()) else { break };
                g.waiting = Waiting::Linger;
                g = queue.cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
                g.waiting = Waiting::No;
            }
        }
        let n = g.jobs.len().min(self.max_batch);
        if n == g.jobs.len() {
            std::mem::swap(jobs, &mut g.jobs);
        } else {
            jobs.extend(g.jobs.drain(..n));
        }
        true
    }

    fn run(mut self, queue: Arc<Queue>) {
        // However the writer ends (a panic included), nothing more is
        // queued, and what is queued is dropped: its callers hear Stopped.
        let _close = CloseOnExit(queue.clone());
        let mut head = self.head.take();
        let mut jobs: Vec<Job> = Vec::with_capacity(self.max_batch);
        loop {
            if !self.take(&queue, head.as_ref(), &mut jobs) {
                break;
            }
            // Take the jobs whose callers still wait; a cancelled one is
            // dropped unwritten (with any lifecycle guard, unapplied).
            jobs.retain(|j| {
                j.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
            });
            if jobs.is_empty() {
                continue;
            }
            let Writer { store, usage, healthy, observer, node_id, .. } = &self;
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
                let mut record = AuditRecord::from_entry(job.entry, seq, prev);
                record.node_id.clone_from(node_id);
                let bytes = store.encode_audit(&record);
                prev = hash_bytes(&bytes);
                batch.audit.push(SealedRecord { record, bytes });
                if let Some(m) = job.mutation {
                    batch.keys.extend(m.batch.keys);
                    batch.aliases.extend(m.batch.aliases);
                    batch.access.extend(m.batch.access);
                    batch.token_uses.extend(m.batch.token_uses);
                    // At most one: rotations hold the lifecycle lock until applied.
                    if m.batch.rekey.is_some() {
                        batch.rekey = m.batch.rekey;
                    }
                    // At most one too: a cluster node's lifecycle changes
                    // hold the lock until their record is durable.
                    if m.batch.settled.is_some() {
                        batch.settled = m.batch.settled;
                    }
                    applies.push(m.apply);
                }
                replies.push((seq, job.reply));
            }
            let new_head = AuditHead { seq, hash: prev };
            batch.head_seal = self.seal(&new_head);
            batch.head = Some(new_head.clone());
            batch.checkpoint = self.checkpoint_due(Some(&new_head), false);
            let (store, usage, healthy, observer) =
                (store.clone(), usage.clone(), healthy.clone(), observer.clone());
            let started = Instant::now();
            match store.commit(&batch) {
                Ok(()) => {
                    if let Some(c) = &batch.checkpoint {
                        self.last_checkpoint = Some((c.seq, c.time_ms));
                    }
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
        let stopped = std::mem::take(&mut queue.lock().stopped);
        if !stopped.is_empty() {
            self.write_checkpoint(head.as_ref(), true);
        }
        drop(self);
        for done in stopped {
            let _ = done.send(());
        }
    }
}
