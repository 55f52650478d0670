//! The durable queue: an LMDB environment owned by one store thread.
//!
//! Every write (enqueue, ack, retry, fail, delete, definition change) is sent to the store
//! thread as an [`Op`]; the thread takes every op waiting at that moment, applies them all in
//! its write transaction, appends their changes to the write-ahead log ([`wal`]) and syncs it
//! once, and only then answers the callers. That is the group commit: a producer's 2xx means
//! its job is on disk, and the cost of the fsync is shared by everyone who arrived while the
//! previous one ran. The transaction is committed to LMDB now and then (a checkpoint).
//!
//! The same thread is the scheduler: it walks each queue's due index (ordered by due time, then
//! arrival), leases due jobs up to the queue's `max_workers` and throttle, and hands them to the
//! cores. Leases live in memory only: after a crash or restart every job not acked is in the
//! due index and runs again (at-least-once). Delayed jobs and lease expiries are woken by the
//! thread's receive deadline, not by polling.
//!
//! # Layout
//! - [`record`]: key and record encodings (sans-IO).
//! - [`queue`]: queue definitions and the worker-URL allow-list.
//! - [`engine`]: the store thread: transactions, scheduler, leases, queries.
//! - [`idempotency`]: `Idempotency-Key` values, fingerprints and rows (sans-IO).
//! - [`wal`]: the write-ahead log that makes each batch durable with one flush.
//! - [`env`]: opening the environment (the only `unsafe`).

mod command;
pub mod config;
pub mod engine;
pub mod env;
mod error;
pub mod idempotency;
pub mod payload;
pub mod queue;
pub mod record;
pub mod reply;
pub mod wal;

pub use command::{Command, Read, Routing, Write};
pub use error::{OpenError, StoreError, StoreErrorKind};
pub use reply::Tx;
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;

use crate::job::Failure;
pub use engine::{Clock, Options};
pub use payload::{PayloadMode, PayloadView};

/// The latest time the store takes or shows: 9999-12-31T23:59:59.999Z, in ms since the epoch
/// (RFC 3339 has four-digit years). Times stored by older versions beyond it are shown as it.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;
/// The longest delay from input (`run_after`): 365 days.
pub const MAX_DELAY_SECS: u64 = 365 * 86_400;
/// The longest fixed retry delay (a job's or a queue's `retry_delay`): 30 days.
pub const MAX_RETRY_DELAY_SECS: u64 = 30 * 86_400;
/// The longest request timeout or lease (`timeout`, `lease_timeout`): 1 day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `now_ms + delay`, saturating and never past [`MAX_TIME_MS`]: every due time and deadline the
/// store computes goes through here, so no input (or stored value) can overflow it.
pub fn due_after(now_ms: u64, delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_add(ms).min(MAX_TIME_MS)
}

/// Where a new job goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// fireworq: a job category, routed to a queue (or the default queue).
    Category(String),
    /// presque: a queue by name, created in pull mode if it does not exist.
    Queue(String),
}

/// A job to enqueue, as an API handler parsed it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// A category (fireworq: routed, or the default queue) or a queue name (presque).
    pub dest: Destination,
    /// Overrides the queue's worker URL; its host must be in the queue's `allowed_origins`.
    pub url: Option<String>,
    /// The request body the worker gets, stored as sent.
    pub payload: Bytes,
    /// The `Content-Type` the worker gets with the payload.
    pub content_type: String,
    /// Not before this time, ms since the epoch (0 = now).
    pub run_at_ms: u64,
    /// Request timeout, seconds (0: none); `None` takes the queue's.
    pub timeout: Option<u64>,
    /// Retries after the first delivery; `None` takes the queue's.
    pub max_retries: Option<u32>,
    /// Fixed wait between attempts, seconds (0: backoff); `None` takes the queue's.
    pub retry_delay: Option<u64>,
    /// presque's `uniq`: at most one job with this key in the queue at a time (409).
    pub uniq: Option<String>,
    /// Jobs of a queue with the same key run one at a time, in enqueue order.
    pub ordering_key: Option<String>,

    /// Request headers stored with the job and sent with every delivery (the enqueue's trace
    /// context); each must pass `http::headers::is_allowed_header_name` and `_value` (400).
    pub headers: Vec<(String, String)>,
}

impl NewJob {
    /// Checks the job's times against the store's bounds; the message names the field.
    ///
    /// # Errors
    /// A message when `run_at_ms` is past [`MAX_TIME_MS`], `timeout` is not 1 to
    /// [`MAX_TIMEOUT_SECS`], or `retry_delay` is over [`MAX_RETRY_DELAY_SECS`].
    pub fn check_times(&self) -> Result<(), String> {
        if self.run_at_ms > MAX_TIME_MS {
            return Err("the job's time must not be later than 9999-12-31T23:59:59Z".into());
        }
        if self.timeout.is_some_and(|t| t > MAX_TIMEOUT_SECS) {
            return Err(format!(
                "timeout must be 0 (none) to {MAX_TIMEOUT_SECS} seconds"
            ));
        }
        if self.retry_delay.is_some_and(|d| d > MAX_RETRY_DELAY_SECS) {
            return Err(format!(
                "retry_delay must be at most {MAX_RETRY_DELAY_SECS} seconds (30 days)"
            ));
        }
        Ok(())
    }
}

/// How a delivery ended, as a core reports it.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The worker finished it: delete.
    Done,
    /// Try again after the delay; `failure` is kept for the log.
    Retry(Duration, Failure),
    /// Give up; `permanent` when the worker said so, else retries ran out.
    Fail(Failure, bool),
    /// Not delivered (shutdown, worker unreachable): unlease without counting an attempt,
    /// runnable again after the delay.
    Release(Duration),
}

/// Which of a queue's job lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobList {
    /// Leased (running or about to).
    Grabbed,
    /// Due now, not leased.
    Waiting,
    /// Due later.
    Deferred,
}

/// One request to the store thread.
#[derive(Debug)]
pub enum Op {
    /// Append jobs; all or nothing, one commit.
    Enqueue(Vec<NewJob>),
    /// Append jobs once per `Idempotency-Key`: the same key and request again within the
    /// queue's `idempotency_window` answers the first request's jobs (422 for another request,
    /// 409 while the first is in the batch being committed).
    EnqueueOnce(idempotency::Idempotency, Vec<NewJob>),
    /// A core settles a dispatched job. No reply.
    Settle {
        /// The delivery's `job.id`.
        id: u64,
        /// The lease this delivery held; a settle for an expired lease is ignored (except
        /// `Done`: the worker did finish the job).
        lease: u64,
        /// What the worker's answer (or its absence) came to.
        how: Settlement,
        /// Worker time, ms (the queue's `total_elapsed`).
        elapsed_ms: u64,
    },
    /// Remove (presque's pop) or lease up to `count` due jobs of a queue for a pull worker.
    Pull {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Most jobs handed out; fewer when the listing byte cap is reached first.
        count: usize,
        /// `Some(true)`: presque's pop-and-forget, deleted on hand-out, never redelivered;
        /// `Some(false)`: leased for the queue's `lease_timeout`; `None`: as the queue's
        /// `lease` setting says (forget unless it is set).
        forget: Option<bool>,
    },
    /// A pull worker acks a leased job.
    Ack {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// The lease token the hand-out carried (`X-Reprow-Lease`), if the worker sent it: a
        /// token that is not the job's current lease is refused (409).
        lease: Option<u64>,
    },
    /// A pull worker reports a failure (presque's `PUT /q`): retried per the queue's policy.
    Nack {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// The worker's message, kept in the failed log when no attempt is left.
        message: String,
        /// The lease token, as for [`Op::Ack`].
        lease: Option<u64>,
    },
    /// Delete a job that is not finished.
    DeleteJob {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
    },
    /// Remove every job of a queue (presque `DELETE /q`).
    Purge(String),
    /// Create or replace a queue definition.
    PutQueue(queue::QueueDef),
    /// Remove a definition (jobs stay, as fireworq does).
    DeleteQueue(String),
    /// Stop or start dispatching a queue.
    Control {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// `true` stops dispatch; pulls from a stopped queue answer `queue is closed`.
        paused: bool,
    },
    /// Map a category to a queue.
    PutRouting {
        /// Any text but control characters, `.` and `..` (`queue::check_category`).
        category: String,
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
    },
    /// Remove a routing.
    DeleteRouting(String),
    /// Remove a failed-log entry.
    DeleteFailed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry's own id, not its job's).
        id: u64,
    },
    /// Enqueue a failed job again (attempts reset) and remove its log entry.
    RetryFailed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry's own id, not its job's).
        id: u64,
    },
    /// Read-only: answered at once from a read transaction.
    Query(Query),
}

/// Read-only requests.
#[derive(Debug)]
pub enum Query {
    /// Every queue definition.
    Queues,
    /// One definition.
    Queue(String),
    /// Stats of all queues, or one.
    Stats(Option<String>),
    /// A page of a job list.
    Jobs {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Grabbed, waiting or deferred: a job is in exactly one.
        list: JobList,
        /// Most entries in the page, clamped to 1 to 1,000; the byte cap may end it first.
        limit: usize,
        /// Resume after this position (the opaque `next_cursor` of the previous page).
        cursor: Option<Vec<u8>>,
        /// Newest first (by due time; by id for grabbed jobs and the failed log).
        desc: bool,
        /// Preview (the default), full or none.
        payload: PayloadMode,
    },
    /// One job.
    Job {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
    },
    /// A page of the failed log.
    Failed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Most entries in the page, clamped to 1 to 1,000; the byte cap may end it first.
        limit: usize,
        /// Resume after this failure id (the previous page's `next`).
        cursor: Option<u64>,
        /// Newest first (by due time; by id for grabbed jobs and the failed log).
        desc: bool,
        /// Preview (the default), full or none.
        payload: PayloadMode,
    },
    /// One failed-log entry.
    FailedEntry {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry's own id, not its job's).
        id: u64,
    },
    /// Leased jobs of every queue, oldest lease first (the dashboard's scoreboard).
    InFlight {
        /// Most jobs in the answer, clamped to 1 to 1,000.
        limit: usize,
        /// Preview (the default), full or none.
        payload: PayloadMode,
    },
    /// The newest failed-log entries of every queue, newest first, payloads previewed.
    RecentFailed(usize),
    /// Every routing.
    Routings,
    /// One routing.
    Routing(String),
}

/// A job as the API shows it (fireworq's fields).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    /// Store-wide and never handed out twice.
    pub id: u64,
    /// The queue it is in.
    pub queue_name: String,
    /// The fireworq category it was pushed with; its queue's name for a presque push.
    pub category: String,
    /// Worker URL (the job's, else the queue's; empty for pull jobs).
    pub url: String,
    /// `grabbed` (leased) or `claimed` (waiting/deferred), as fireworq names them.
    pub status: &'static str,
    /// When it was enqueued (a retried failure: first enqueued), RFC 3339.
    pub created_at: String,
    /// RFC 3339: when it may run next.
    pub next_try: String,
    /// Request timeout, seconds (0 = the queue's).
    pub timeout: u64,
    /// Failed deliveries so far.
    pub fail_count: u32,
    /// Retries after the first delivery (the job's, else the queue's).
    pub max_retries: u32,
    /// Fixed retry delay, seconds (0 = backoff).
    pub retry_delay: u64,
    /// The payload (JSON when it is JSON, else a string; maybe cut), its length and whether
    /// it was cut (reprow's `payload_bytes`, `payload_truncated`).
    #[serde(flatten)]
    pub payload: PayloadView,
    /// For a leased job: since when, RFC 3339 (reprow's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leased_at: Option<String>,
    /// For a leased job: taken by a pull worker rather than pushed (reprow's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled: Option<bool>,
    /// Its ordering key, if it has one (reprow's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// For a job just handed to a pull worker: its lease token (sent as `X-Reprow-Lease`, not
    /// shown in job lists).
    #[serde(skip)]
    pub lease: Option<u64>,
    /// Which handout of the job this is, counting from 1: its failed deliveries and the leases
    /// that expired unacked since reprow started (those are memory only, as leases are), plus
    /// one. Sent to pull workers as `X-Reprow-Attempt`; not shown in job lists.
    #[serde(skip)]
    pub attempt: u32,
}

/// A failed-log entry as the API shows it (fireworq's shape).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedView {
    /// The entry's own id, store-wide and increasing: later failures have larger ids.
    pub id: u64,
    /// The failed job's id, kept if the entry is retried (unless another job took it).
    pub job_id: u64,
    /// As in [`JobView`].
    pub category: String,
    /// The job's worker URL, else its queue's as defined now (empty for pull jobs).
    pub url: String,
    /// Payload, as in [`JobView`].
    #[serde(flatten)]
    pub payload: PayloadView,
    /// `{status, code, message}`.
    pub result: FailedResult,
    /// Deliveries made, the last one included.
    pub fail_count: u32,
    /// When it failed for good, RFC 3339.
    pub failed_at: String,
    /// When the job was enqueued, RFC 3339.
    pub created_at: String,
}

/// Why a job failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedResult {
    /// `failure` (retries exhausted) or `permanent-failure`.
    pub status: String,
    /// Worker's HTTP status (0 when it never answered).
    pub code: u16,
    /// Worker's message or the transport error.
    pub message: String,
}

/// fireworq's per-queue stats, plus reprow's depths.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueStats {
    /// Jobs accepted.
    pub total_pushes: u64,
    /// Jobs handed out (dispatched or pulled).
    pub total_pops: u64,
    /// Deliveries that succeeded.
    pub total_successes: u64,
    /// Deliveries that failed: each retried one and the last of a job that failed for good.
    pub total_failures: u64,
    /// Jobs that failed for good: the worker said so, or retries ran out (fireworq's count).
    pub total_permanent_failures: u64,
    /// Jobs that left the queue (done or failed).
    pub total_completes: u64,
    /// Sum of worker time, ms.
    pub total_elapsed: u64,
    /// Pushes during the last whole second.
    pub pushes_per_second: u64,
    /// Pops during the last whole second.
    pub pops_per_second: u64,
    /// Jobs in the queue (waiting, deferred and leased).
    pub outstanding_jobs: u64,
    /// The queue's `max_workers` (fireworq counts its worker goroutines).
    pub total_workers: u64,
    /// `max_workers` minus leased jobs.
    pub idle_workers: u64,
    /// Always 1: one reprow owns its store.
    pub active_nodes: u64,
    /// Jobs due now and not leased.
    pub waiting: u64,
    /// Jobs due later.
    pub deferred: u64,
    /// Jobs leased.
    pub grabbed: u64,
    /// Entries in the failed log.
    pub failed: u64,
    /// Dispatch stopped by `/control`; shown as 1 or 0, since Fireworqonsole decodes the
    /// stats as `map[string]int64` and drops the whole answer over one boolean.
    #[serde(serialize_with = "crate::units::bool_as_int")]
    pub paused: bool,
    /// Failed attempts scheduled again (for `/metrics`; not in fireworq's JSON).
    #[serde(skip_serializing)]
    pub total_retries: u64,
    /// Jobs that failed for good (for `/metrics`; not in fireworq's JSON).
    #[serde(skip_serializing)]
    pub total_failed_jobs: u64,
}

/// What an [`Op`] applied directly came to ([`engine::Engine::apply_ops`],
/// [`engine::Engine::query`]): the drivers that apply a mixed batch (tests, the fuzz target, the
/// store model) need one type for every answer. Callers of [`Store::call`] never see it: each
/// request answers its own type there.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Nothing to say (settles, deletes that return nothing).
    Unit,
    /// Enqueued jobs, in request order.
    Enqueued(Vec<JobView>),
    /// Jobs handed to a pull worker, with their payloads.
    Pulled(Vec<(JobView, Bytes)>),
    /// One job.
    Job(Box<JobView>),
    /// A page of jobs and the cursor for the next.
    Jobs(Vec<JobView>, Option<Vec<u8>>),
    /// One failed entry.
    Failed(Box<FailedView>),
    /// A page of failed entries and the next cursor.
    FailedPage(Vec<FailedView>, Option<u64>),
    /// Failed entries with their queue's name.
    RecentFailed(Vec<(String, FailedView)>),
    /// One or more queue definitions.
    Queues(Vec<queue::QueueDef>),
    /// Stats per queue name.
    Stats(Vec<(String, QueueStats)>),
    /// Routings (category, queue).
    Routings(Vec<(String, String)>),
}

/// Cloneable handle used by API handlers and cores.
#[derive(Clone)]
pub struct Store {
    tx: crossbeam_channel::Sender<Command>,
    /// Set once the store thread has opened the environment and replayed state.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Set while the store thread runs; cleared when it ends (a panic included).
    pub alive: Arc<std::sync::atomic::AtomicBool>,
    /// The store thread's histograms.
    pub metrics: Arc<crate::stats::timings::StoreMetrics>,
    /// Set by [`Store::close`]: the thread ends after the commands already sent.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Sends the request `request` builds around its reply address and waits for its answer
    /// (after the commit that holds it, for writes): the answer's type is the one of the
    /// variant's [`Tx`], e.g. `store.call(|tx| Read::Queue(name, tx))` answers a `QueueDef`.
    ///
    /// # Errors
    /// [`StoreError`] from the op, or `Unavailable` when the store thread has stopped.
    pub async fn call<T: Send + 'static, C: Into<Command>>(
        &self,
        request: impl FnOnce(Tx<T>) -> C,
    ) -> Result<T, StoreError> {
        let (tx, answer) = reply::pair();
        self.tx
            .send(request(tx).into())
            .map_err(|_| StoreError::unavailable("the store is shut down"))?;
        answer.await
    }

    /// Whether the store thread is running (false once it ended, a panic included).
    pub fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends an op without waiting and without a reply address (settles from cores).
    pub fn send(&self, op: Op) {
        let _ = self.tx.send(op.command(&mut command::Unanswered));
    }

    /// Ends the store thread once it has applied every command sent before this call, even if
    /// handles are still alive (a delivery task still running past the shutdown grace holds
    /// one, and waiting for it to drop would keep reprow from exiting). What such a task sends
    /// later is not applied: its lease was in memory only, so the job runs again at the next
    /// start.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        // A cheap command wakes the thread if it is waiting with nothing scheduled.
        let _ = self.tx.send(Command::Read(Read::Queues(Tx::none())));
    }

    /// Whether [`Store::close`] was called.
    pub(crate) fn closing(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.closing.clone()
    }
}

impl Store {
    /// A handle around a command channel (the engine makes these; tests drive it directly).
    pub(crate) fn from_sender(tx: crossbeam_channel::Sender<Command>) -> Store {
        Store {
            tx,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            alive: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            metrics: Arc::default(),
            closing: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests;
