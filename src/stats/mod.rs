//! Process-wide counters and gauges. The source threads count in [`Stats`] (plain relaxed
//! atomics: each is independent and only ever read for reporting); each core counts its
//! deliveries in its own [`CoreStats`], registered here when the core starts, and readers
//! ([`Stats::snapshot`], [`Stats::running`], [`Stats::histograms`]) add the cores up.

pub mod core_stats;
pub mod histogram;
pub mod reachability;
pub mod timings;
pub mod worker_limits;

use std::sync::{
    atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed},
    Arc, RwLock,
};

use serde::Serialize;

pub use core_stats::CoreStats;

/// Counters (only grow) and gauges (go up and down). The cores count deliveries (dispatched,
/// succeeded, retried, failed, in flight, transport errors) in their [`CoreStats`]; those
/// fields here hold what other threads count (a source failing a job itself), and
/// [`Stats::snapshot`] adds both.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs read from the source.
    pub received: AtomicU64,
    /// Lines refused for exceeding `max_line_bytes`.
    pub lines_oversize: AtomicU64,
    /// Lines refused as invalid JSON envelopes.
    pub lines_invalid: AtomicU64,
    /// FIFO lines of nothing but whitespace, skipped.
    pub lines_blank: AtomicU64,
    /// Requests sent to the worker (attempts).
    pub dispatched: AtomicU64,
    /// Jobs the worker finished.
    pub succeeded: AtomicU64,
    /// Attempts that ended in a retry.
    pub retried: AtomicU64,
    /// Jobs that failed for good.
    pub failed: AtomicU64,
    /// Jobs written to the pending file at shutdown.
    pub pending_saved: AtomicU64,
    /// Job records the failed or pending file could not take (each is in the error log, and
    /// only there); the run then ends with a non-zero exit status.
    pub records_unwritten: AtomicU64,
    /// Worker responses refused as malformed (garbage, truncated, oversized).
    pub malformed_responses: AtomicU64,
    /// Requests that hit their timeout.
    pub timeouts: AtomicU64,
    /// Connections refused or failed before a request was sent.
    pub connect_errors: AtomicU64,
    /// Requests re-sent on a fresh connection because a pooled one was found closed.
    pub stale_connection_retries: AtomicU64,
    /// SQS: ReceiveMessage requests (the API is billed per request).
    pub sqs_receive_requests: AtomicU64,
    /// SQS: ReceiveMessage requests that brought no message.
    pub sqs_empty_receives: AtomicU64,
    /// SQS: DeleteMessageBatch requests.
    pub sqs_delete_requests: AtomicU64,
    /// SQS: messages those requests deleted.
    pub sqs_deleted: AtomicU64,
    /// SQS: ChangeMessageVisibilityBatch requests (retries, heartbeats, giving back).
    pub sqs_visibility_requests: AtomicU64,
    /// SQS: SendMessage requests of periodic tasks.
    pub sqs_send_requests: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicI64,
    /// Jobs held in memory now (queued, in flight or waiting for a retry): a gauge for
    /// `/metrics` and `/status`, written by the FIFO and Q4M sources and read by neither (the
    /// FIFO's `max_held_jobs` flow control keeps its own count).
    pub held: AtomicI64,
    /// Cores whose circuit breaker is open now.
    pub breakers_open: AtomicI64,
    /// Lifecycle phase, see [`crate::lifecycle::Phase`].
    pub phase: AtomicU8,
    /// Which queues get a histogram series of their own, for every core.
    series: Arc<timings::Series>,
    /// Every core's figures, in start order; locked when a core starts and by readers.
    cores: RwLock<Vec<Arc<CoreStats>>>,
    /// Worker origins that refuse connections.
    pub reachability: reachability::Reachability,
    /// Worker origins with limits (`workers:`), for `/status`, `/metrics` and the dashboard.
    pub worker_limits: worker_limits::WorkerLimits,
    /// Why the source cannot take jobs as configured right now (a FIFO whose path was
    /// replaced by something else); `/readyz` answers 503 with it while set.
    source_fault: std::sync::Mutex<Option<String>>,
}

/// The jobs one core's workers are running now, for `/inflight` on the monitoring port (sqsd's
/// CurrentWorkings). One lock per delivery start and end, taken by that core and by readers
/// only; the durable queue answers from its leases instead.
#[derive(Debug, Default)]
pub struct Board {
    jobs: std::sync::Mutex<std::collections::HashMap<u64, Running>>,
}

/// What a delivery start records: no formatting or copying on the hot path; [`Board::list`]
/// turns it into [`Working`].
#[derive(Debug)]
struct Running {
    queue: std::sync::Arc<str>,
    attempt: u32,
    started: std::time::SystemTime,
    headers: std::sync::Arc<[(String, String)]>,
}

/// One running job.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Working {
    /// The id its source gave it (a FIFO's start-time counter, the store's id, ...).
    pub id: u64,
    /// The queue it came from (a FIFO's or SQS queue's configured name).
    pub queue: String,
    /// The attempt running (1 = first).
    pub attempt: u32,
    /// When this attempt started, RFC 3339.
    pub started_at: String,
    /// The SQS message id, for SQS jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Board {
    /// A delivery of `job` started (`job.attempts` already counts it).
    pub fn start(&self, job: &crate::job::Job) {
        let r = Running {
            queue: job.queue.clone(),
            attempt: job.attempts,
            started: std::time::SystemTime::now(),
            headers: job.headers.clone(),
        };
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id, r);
    }

    /// The delivery of job `id` ended.
    pub fn end(&self, id: u64) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Adds the running jobs to `out`, with their start times.
    fn collect(&self, out: &mut Vec<(std::time::SystemTime, Working)>) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(jobs.iter().map(|(id, r)| {
            let w = Working {
                id: *id,
                queue: r.queue.to_string(),
                attempt: r.attempt,
                started_at: humantime::format_rfc3339_millis(r.started).to_string(),
                message_id: r
                    .headers
                    .iter()
                    .find(|(k, _)| k == "X-Reprow-Sqs-Message-Id")
                    .map(|(_, v)| v.clone()),
            };
            (r.started, w)
        }));
    }
}

/// A point-in-time copy of [`Stats`], for logs and tests.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Snapshot {
    pub received: u64,
    pub lines_oversize: u64,
    pub lines_invalid: u64,
    pub lines_blank: u64,
    pub dispatched: u64,
    pub succeeded: u64,
    pub retried: u64,
    pub failed: u64,
    pub pending_saved: u64,
    pub records_unwritten: u64,
    pub malformed_responses: u64,
    pub timeouts: u64,
    pub connect_errors: u64,
    pub stale_connection_retries: u64,
    pub sqs_receive_requests: u64,
    pub sqs_empty_receives: u64,
    pub sqs_delete_requests: u64,
    pub sqs_deleted: u64,
    pub sqs_visibility_requests: u64,
    pub sqs_send_requests: u64,
    pub in_flight: i64,
    pub held: i64,
    pub breakers_open: i64,
}

impl Stats {
    /// Adds one to a counter.
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Registers a core's figures; the core counts its deliveries there.
    pub fn register_core(&self) -> Arc<CoreStats> {
        let core = Arc::new(CoreStats::new(self.series.clone()));
        self.cores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(core.clone());
        core
    }

    fn cores(&self) -> Vec<Arc<CoreStats>> {
        self.cores.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The jobs every core's workers are running now, oldest first, at most `limit`.
    pub fn running(&self, limit: usize) -> Vec<Working> {
        core_stats::running(&self.cores(), limit)
    }

    /// Every queue's histograms, summed over the cores, by name.
    pub fn histograms(&self) -> Vec<(Arc<str>, timings::QueueSnapshot)> {
        core_stats::histograms(&self.cores())
    }

    /// Sets (or, with `None`, clears) why the source cannot take jobs as configured.
    pub fn set_source_fault(&self, reason: Option<String>) {
        *self.source_fault.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the source cannot take jobs as configured right now, if it cannot.
    pub fn source_fault(&self) -> Option<String> {
        self.source_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Copies every value, the cores' added up.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            received: self.received.load(Relaxed),
            lines_oversize: self.lines_oversize.load(Relaxed),
            lines_invalid: self.lines_invalid.load(Relaxed),
            lines_blank: self.lines_blank.load(Relaxed),
            dispatched: self.dispatched.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            retried: self.retried.load(Relaxed),
            failed: self.failed.load(Relaxed),
            pending_saved: self.pending_saved.load(Relaxed),
            records_unwritten: self.records_unwritten.load(Relaxed),
            malformed_responses: self.malformed_responses.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            stale_connection_retries: self.stale_connection_retries.load(Relaxed),
            sqs_receive_requests: self.sqs_receive_requests.load(Relaxed),
            sqs_empty_receives: self.sqs_empty_receives.load(Relaxed),
            sqs_delete_requests: self.sqs_delete_requests.load(Relaxed),
            sqs_deleted: self.sqs_deleted.load(Relaxed),
            sqs_visibility_requests: self.sqs_visibility_requests.load(Relaxed),
            sqs_send_requests: self.sqs_send_requests.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            held: self.held.load(Relaxed),
            breakers_open: self.breakers_open.load(Relaxed),
        };
        core_stats::add_counters(&mut s, &self.cores());
        s
    }
}
