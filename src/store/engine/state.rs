//! In-memory state of each queue ([`QState`]): its definition and delivery target, counts,
//! lease count, scan cursor, throttle and the totals and rates fireworq's stats show.
//!
//! # Invariants
//! - `count` and `failed` are also on disk (`c:<qid>` in `meta`, written with each commit);
//!   the totals and rates are memory only: they carry over a reload, minus what the failed
//!   batch added.
//! - `leased` equals the number of leases of the queue.
//! - `cursor`, when set, is a due key such that no unleased job of the queue that is due now
//!   sorts before it; [`below_cursor`] clears it when a job becomes runnable before it.
//! - `wake`, when set, is the queue's one entry in `Engine::wakes` ([`arm`], [`disarm`]); only
//!   a defined, running push queue has one.
//! - `def` is `None` only for a queue deleted by a version that kept a deleted queue's jobs
//!   (loaded so re-creating it finds them); a queue deleted now leaves nothing.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use super::{throttle::Bucket, Engine};
use crate::{
    http::url::WorkerUrl,
    job::{retry::RetryPolicy, target::Target},
    store::{
        queue::{QueueDef, QueueMode},
        record::{due_key, JobRecord},
        StoreError, MAX_TIMEOUT_SECS,
    },
};

/// A counter with the count of the last whole second, for fireworq's `*_per_second`.
#[derive(Debug, Default, Clone)]
pub(super) struct Rate {
    sec: u64,
    cur: u64,
    last: u64,
}

impl Rate {
    pub(super) fn add(&mut self, now_ms: u64, n: u64) {
        self.roll(now_ms);
        self.cur += n;
    }
    fn roll(&mut self, now_ms: u64) {
        let sec = now_ms / 1000;
        if sec != self.sec {
            self.last = if sec == self.sec + 1 { self.cur } else { 0 };
            self.cur = 0;
            self.sec = sec;
        }
    }
    pub(super) fn per_second(&mut self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        self.last
    }
}

/// In-memory state of one queue.
#[derive(Debug)]
pub(super) struct QState {
    pub(super) qid: u32,
    pub(super) name: Arc<str>,
    /// `None` for a queue deleted by an older version, which kept its jobs (see the module).
    pub(super) def: Option<QueueDef>,
    pub(super) target: Option<Arc<Target>>,
    /// The target of a job pushed through fireworq's `POST /job` that set none of `timeout`,
    /// `max_retries`, `retry_delay` (stored as [`QState::fireworq_fields`]), made once per
    /// definition so those jobs share it as the others share `target`.
    pub(super) fireworq_target: Option<Arc<Target>>,
    /// `(timeout_ms, max_retries, retry_delay_ms)` of such a job's record.
    pub(super) fireworq_fields: (Option<u64>, Option<u32>, Option<u64>),
    /// Jobs in the queue (waiting, deferred and leased).
    pub(super) count: u64,
    /// Entries in the failed log.
    pub(super) failed: u64,
    pub(super) leased: u32,
    pub(super) cursor: Option<[u8; 20]>,
    /// When the scheduler must look at the queue next (ms; 0: at once), mirrored in
    /// `Engine::wakes`. `None`: nothing to hand out until an op says otherwise.
    pub(super) wake: Option<u64>,
    pub(super) bucket: Option<Bucket>,
    /// The retry bounds `runner:` sets, for the queue's delivery target.
    pub(super) retry: RetryBounds,
    /// What fireworq's stats count; memory only.
    pub(super) totals: Totals,
}

/// A queue's totals and rates since the store opened (fireworq's `total_*` and
/// `*_per_second`). Memory only: they start at zero when the store opens, carry over a reload,
/// and a batch whose commit failed counts for nothing ([`Engine::apply_ops`] puts back the
/// totals from before it).
#[derive(Debug, Default, Clone)]
pub(super) struct Totals {
    pub(super) pushes: u64,
    pub(super) pops: u64,
    pub(super) successes: u64,
    pub(super) failures: u64,
    pub(super) permanent_failures: u64,
    /// Failed attempts scheduled again.
    pub(super) retries: u64,
    /// Jobs that failed for good.
    pub(super) failed_jobs: u64,
    pub(super) completes: u64,
    pub(super) elapsed_ms: u64,
    pub(super) push_rate: Rate,
    pub(super) pop_rate: Rate,
}

/// The retry bounds `runner:` sets for every durable queue: the backoff steps (queues and jobs
/// set only a fixed delay or none) and the clamp of a worker's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBounds {
    /// First backoff step (`runner.backoff_base`).
    pub backoff_base: Duration,
    /// Longest backoff step (`runner.backoff_max`).
    pub backoff_max: Duration,
    /// Clamp for a worker's `Retry-After` (`runner.max_retry_after`).
    pub max_retry_after: Duration,
}

pub(super) fn policy_for(
    def: &QueueDef,
    rec: Option<&JobRecord>,
    bounds: RetryBounds,
) -> RetryPolicy {
    let max_retries = rec
        .and_then(|r| r.max_retries)
        .unwrap_or_else(|| def.retries());
    let fixed = rec
        .and_then(|r| r.retry_delay_ms.map(Duration::from_millis))
        .or(def.retry_delay.map(Duration::from_secs));
    RetryPolicy {
        max_retries,
        fixed,
        base: bounds.backoff_base,
        cap: bounds.backoff_max,
        max_retry_after: bounds.max_retry_after,
    }
}

pub(super) fn make_target(
    def: &QueueDef,
    rec: Option<&JobRecord>,
    bounds: RetryBounds,
) -> Option<Arc<Target>> {
    let url_text = rec
        .and_then(|r| r.url.clone())
        .or_else(|| def.url.clone())?;
    let url = WorkerUrl::parse(&url_text).ok()?;
    let timeout = rec.and_then(|r| r.timeout_ms).map_or(
        Duration::from_secs(def.timeout_secs()),
        Duration::from_millis,
    );
    // fireworq's `timeout: 0` is no timeout; reprow waits up to its longest timeout (1 day) so
    // a worker that never answers cannot hold a slot and a lease for ever.
    let timeout = if timeout.is_zero() {
        Duration::from_secs(MAX_TIMEOUT_SECS)
    } else {
        timeout
    };
    Some(Arc::new(Target {
        url,
        url_text,
        timeout,
        policy: policy_for(def, rec, bounds),
        outcome: def.outcome,
        cloudevents: def.cloudevents_target(),
    }))
}

impl QState {
    pub(super) fn new(qid: u32, name: &str, def: Option<QueueDef>, retry: RetryBounds) -> QState {
        let mut q = QState {
            qid,
            retry,
            name: Arc::from(name),
            def: None,
            target: None,
            fireworq_target: None,
            fireworq_fields: (None, None, None),
            count: 0,
            failed: 0,
            leased: 0,
            cursor: None,
            wake: None,
            bucket: None,
            totals: Totals::default(),
        };
        q.set_def(def);
        q
    }

    pub(super) fn set_def(&mut self, def: Option<QueueDef>) {
        let throttle_changed = throttle_of(self.def.as_ref()) != throttle_of(def.as_ref());
        self.target = def.as_ref().and_then(|d| make_target(d, None, self.retry));
        self.fireworq_fields = def.as_ref().map_or((None, None, None), |d| {
            // For a job that sets nothing these are 0 or unset, and 0 s is 0 ms: the record's
            // `timeout_ms` / `retry_delay_ms` hold the same values.
            d.fireworq_job_fields(None, None, None)
        });
        self.fireworq_target = self.target.as_ref().map(|t| {
            let (timeout, max_retries, retry_delay) = self.fireworq_fields;
            let mut policy = t.policy.clone();
            if let Some(r) = max_retries {
                policy.max_retries = r;
            }
            if let Some(d) = retry_delay {
                policy.fixed = Some(Duration::from_millis(d));
            }
            Arc::new(Target {
                url: t.url.clone(),
                url_text: t.url_text.clone(),
                timeout: timeout.map_or(t.timeout, |_| Duration::from_secs(MAX_TIMEOUT_SECS)),
                policy,
                outcome: t.outcome,
                cloudevents: t.cloudevents.clone(),
            })
        });
        if throttle_changed || self.bucket.is_none() {
            self.bucket = def.as_ref().and_then(Bucket::new);
        }
        self.def = def;
        self.cursor = None;
    }

    /// A defined push queue whose dispatch is not stopped: the scheduler hands out its jobs.
    pub(super) fn fed(&self) -> bool {
        self.def
            .as_ref()
            .is_some_and(|d| d.mode == QueueMode::Push && !d.paused)
    }
}

/// Has the scheduler look at queue `q` at `at` (ms; 0: at once), or earlier if it already
/// would. Only a queue the scheduler feeds ([`QState::fed`]) with a free worker is scheduled:
/// a busy queue is scheduled again when one of its leases ends.
pub(super) fn arm(wakes: &mut BTreeSet<(u64, u32)>, q: &mut QState, at: u64) {
    let busy = q.def.as_ref().is_some_and(|d| q.leased >= d.max_workers);
    if !q.fed() || busy || q.wake.is_some_and(|w| w <= at) {
        return;
    }
    disarm(wakes, q);
    q.wake = Some(at);
    wakes.insert((at, q.qid));
}

/// The scheduler need not look at queue `q` until an op schedules it again.
pub(super) fn disarm(wakes: &mut BTreeSet<(u64, u32)>, q: &mut QState) {
    if let Some(w) = q.wake.take() {
        wakes.remove(&(w, q.qid));
    }
}

/// What a queue's token bucket is made from (rate and burst): a bucket is kept while this is
/// the same.
pub(super) fn throttle_of(def: Option<&QueueDef>) -> Option<(Option<f64>, Option<u32>)> {
    def.map(|d| (d.max_dispatches_per_second, d.max_burst_size))
}

/// A job that became runnable before the queue's cursor must be found by the next scan, and
/// the scheduler must look at the queue when it is due.
pub(super) fn below_cursor(wakes: &mut BTreeSet<(u64, u32)>, q: &mut QState, rec: &JobRecord) {
    below_cursor_at(wakes, q, due_key(rec.queue, rec.due_ms, rec.id), rec.due_ms);
}

/// [`below_cursor`] for a job whose due row is `key`, due at `due_ms`.
pub(super) fn below_cursor_at(
    wakes: &mut BTreeSet<(u64, u32)>,
    q: &mut QState,
    key: [u8; 20],
    due_ms: u64,
) {
    if q.cursor.is_some_and(|c| key <= c) {
        q.cursor = None;
    }
    arm(wakes, q, due_ms);
}

impl Engine {
    /// After a definition change: a queue the scheduler feeds is looked at at once if it holds
    /// jobs, any other is not scheduled.
    pub(super) fn restart_feed(&mut self, qid: u32) {
        self.throttled.remove(&qid);
        if let Some(q) = self.queues.get_mut(&qid) {
            disarm(&mut self.wakes, q);
            if q.count > 0 {
                arm(&mut self.wakes, q, 0);
            }
        }
    }

    /// A queue named `name` may be defined: it is already, or there is room for it and for
    /// the `pending` queues this op defines before it (`queue.max_queues`).
    pub(super) fn room_for_queue(&self, name: &str, pending: usize) -> Result<(), StoreError> {
        if self.qid(name).is_ok() || self.defined + pending < self.max_queues {
            return Ok(());
        }
        Err(StoreError::limit(format!(
            "queue {name:?} cannot be created: the store holds {} queues and queue.max_queues \
             is {}; delete a queue or raise queue.max_queues",
            self.defined + pending,
            self.max_queues
        )))
    }

    pub(super) fn qid(&self, name: &str) -> Result<u32, StoreError> {
        self.by_name
            .get(name)
            .copied()
            .filter(|q| self.queues[q].def.is_some())
            .ok_or_else(|| StoreError::not_found(format!("no queue named {name:?}")))
    }

    pub(super) fn def_of(&self, qid: u32) -> Result<&QueueDef, StoreError> {
        self.queues
            .get(&qid)
            .and_then(|q| q.def.as_ref())
            .ok_or_else(|| StoreError::not_found("the queue was deleted"))
    }
}
