//! The store thread: owns the LMDB environment, applies writes in group commits, schedules due
//! jobs onto the cores and answers queries.
//!
//! # Databases
//! - `jobs`: job id (u64 BE) → [`JobRecord`](super::record::JobRecord) bytes.
//! - `due`: [`due_key`](super::record::due_key) (queue, due ms, id) → empty. Every job in a
//!   queue has exactly one entry, leased or not, so after a crash every unacked job is found
//!   again.
//! - `failed`: [`failed_key`](super::record::failed_key) (queue, failure id) →
//!   [`FailedRecord`](super::record::FailedRecord).
//! - `uniq`: [`uniq_key`](super::record::uniq_key) (queue, key) → job id, presque's `?uniq=`.
//! - `idem`: [`row_key`](super::idempotency::row_key) → the jobs an `Idempotency-Key` made,
//!   and [`expiry_key`](super::idempotency::expiry_key) → empty, its expiry index.
//! - `meta`: `q:<name>` → queue definition JSON, `qid:<name>` → queue id, `r:<category>` →
//!   queue name: written by admin ops only.
//! - `counters`: `c:<qid>` → job and failed counts, `next_id`, `next_fid`, `next_qid`: written
//!   by every commit, so they live apart from the definitions (a commit rewrites a few pages
//!   whatever the number of queues). Older stores kept them in `meta`; they move at open.
//! - `order`: [`order_key`](super::record::order_key) (queue, ordering key, job id) → job id:
//!   the jobs of each ordering key in enqueue order (`order`).
//! - Deleting a queue deletes its keys in `meta` and `counters` and its rows everywhere else.
//!
//! # Invariants
//! - Memory follows disk: an op changes memory only after its nested transaction committed into
//!   the batch; if the batch's commit then fails, memory is rebuilt from disk
//!   (`Engine::reload`) and every caller in the batch gets 503 (507 when the store is full).
//! - A job is leased at most once at a time (`leases`); a lease is memory only.
//! - `QState::leased` equals the number of leases of that queue.
//! - `QState::cursor`, when set, is a due key such that no unleased job of the queue that is due
//!   now sorts before it; anything that could break that (an insert below it, an unlease, an
//!   expiry) clears it.
//!
//! # Layout
//! Each file adds one part of [`Engine`]:
//! - `open`: [`Options`], the directory lock, opening the environment; `clock`: [`Clock`].
//! - `load`: memory from disk, at open and after a failed commit.
//! - `commit`: the group commit of a batch and its replies; `durable`: the store thread's
//!   open transaction, its write-ahead log frames and checkpoints.
//! - `apply`: one op (a nested transaction), dispatched to its family: `enqueue`, `settle`,
//!   `admin`, and `schedule` for pulls; `effect`: the op's change to memory after it.
//! - `idem`: `Idempotency-Key` rows: the replay of a known key, the write of a new one, the
//!   bounded sweep of expired ones.
//! - `disk`: row reads and writes of jobs, failures and definitions.
//! - `state`: per-queue memory; `throttle`: the dispatch token bucket.
//! - `lease`: leases, their tokens and expiry.
//! - `schedule`: due jobs handed to the cores and to pull workers; when the loop wakes.
//! - `query`: read-only queries; `present`: fireworq-shaped views of jobs and failures.
//! - `order`: ordering keys: a key's first job runs, the others wait parked.
//! - `pull_log`: pull workers' completion lines, written after the commit.
//! - `error`: LMDB and lookup failures as [`StoreError`](super::StoreError)s.

mod admin;
mod apply;
mod clock;
mod commit;
mod disk;
mod durable;
mod effect;
mod enqueue;
mod error;
mod idem;
mod lease;
mod load;
mod open;
mod order;
mod present;
mod pull_log;
mod query;
mod schedule;
mod settle;
mod state;
mod throttle;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use heed::{types::Bytes as Raw, Database, Env, WithoutTls};

pub use clock::Clock;
pub use open::{Defaults, Options};
pub use state::RetryBounds;

use super::{Command, OpenError, Store};
use crate::bridge::Delivery;
use lease::Lease;
use pull_log::PullLog;
use state::QState;

type Db = Database<'static, Raw, Raw>;
/// Most commands folded into one transaction; bounds a commit's size and its callers' wait.
const MAX_BATCH: usize = 8192;

/// Opens the store and starts its thread. Jobs to deliver are sent on `out`.
///
/// # Errors
/// [`OpenError`] when the directory, the environment or a stored record cannot be used.
pub fn start(
    opts: Options,
    out: crate::bridge::DeliverySender,
) -> Result<(Store, std::thread::JoinHandle<()>), OpenError> {
    let mut engine = Engine::open(opts, Some(out))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut store = Store::from_sender(tx);
    store.metrics = engine.metrics.clone();
    store.ready.store(true, Ordering::Release);
    store.alive.store(true, Ordering::Release);
    let alive = store.alive.clone();
    let closing = store.closing();
    let handle = std::thread::Builder::new()
        .name("reprow-store".into())
        .spawn(move || supervise(&alive, move || engine.run(rx, &closing), store_died))
        .map_err(|source| OpenError::Dir {
            path: PathBuf::from("<store thread>"),
            source,
        })?;
    Ok((store, handle))
}

/// Runs the store loop `run`; if it panics, `alive` is cleared (so `/healthz` fails) and
/// `on_death` gets the panic's message. A store thread that is gone must never leave a process
/// that looks healthy and answers 503 to everything.
fn supervise(alive: &AtomicBool, run: impl FnOnce(), on_death: impl FnOnce(String)) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    alive.store(false, Ordering::Release);
    if let Err(p) = r {
        let message = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        on_death(message);
    }
}

/// The store thread panicked: nothing can be enqueued, acked or delivered any more, so the
/// process ends with an error (exit status 70, EX_SOFTWARE) for its supervisor to restart it;
/// every job not acked is on disk and runs again.
fn store_died(message: String) {
    tracing::error!(
        panic = %message,
        "The store thread died; reprow exits (status 70) so it can be restarted."
    );
    crate::telemetry::flush();
    std::process::exit(70);
}

/// The store engine. Runs on its own thread ([`start`]); tests drive it directly.
pub struct Engine {
    env: Env<WithoutTls>,
    jobs: Db,
    due: Db,
    failed: Db,
    uniq: Db,
    meta: Db,
    counters: Db,
    order: Db,
    /// Jobs the op being applied made their key's first (queue, due ms, id): the scheduler
    /// looks for them once the op committed (`order`).
    unparked: std::cell::RefCell<Vec<(u32, u64, u64)>>,

    /// Idempotency-Key rows and their expiry index (`store::idempotency`).
    idem: Db,
    /// Idempotency keys written by the batch being applied: a second request with one of them
    /// in the same batch is refused (409), its first request is not durable yet.
    batch_keys: std::collections::HashSet<String>,
    /// Holds the directory lock for the engine's life.
    _lock: nix::fcntl::Flock<std::fs::File>,
    map_size: usize,
    reserve: usize,
    clock: Clock,
    fail_commit: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// The retry bounds `runner:` sets for every queue.
    retry: RetryBounds,
    /// Most pushed jobs leased at once over all queues (`runner.concurrency`; `usize::MAX`
    /// when unset).
    push_cap: usize,
    /// Pushed (not pulled) jobs leased now.
    push_leased: usize,
    queues: BTreeMap<u32, QState>,
    by_name: HashMap<String, u32>,
    /// Queues with a definition (what `max_queues` caps).
    defined: usize,
    /// Most queues with a definition (`queue.max_queues`).
    max_queues: usize,
    /// When the scheduler must look at a queue: (ms, queue id), one entry per queue at most
    /// (`QState::wake`). A queue with nothing to hand out has none, so the scheduler's work
    /// follows the queues that have work, never the number of queues.
    wakes: BTreeSet<(u64, u32)>,
    /// Queues with due jobs waiting for their throttle's next token.
    throttled: BTreeSet<u32>,
    /// Queues the scheduler looked at ([`Engine::queues_visited`]).
    visits: std::cell::Cell<u64>,
    routings: BTreeMap<String, String>,
    default_queue: String,
    leases: HashMap<u64, Lease>,
    expiry: BTreeSet<(u64, u64)>,
    /// Jobs whose lease expired unacked, with how many times: they count as handouts in
    /// `JobView::attempt`. An entry ends when the job leaves the queue (done, failed for
    /// good, forgotten by a fetch, purged); a retry keeps it. One of a job whose queue is
    /// deleted stays until restart (few: one per expiry at most).
    lease_expiries: HashMap<u64, u32>,
    next_id: u64,
    next_fid: u64,
    next_qid: u32,
    lease_seq: u64,
    /// Leases granted by the batch being applied (dropped if its commit fails).
    granted: Vec<u64>,
    /// Leases ended by the batch being applied (restored if its commit fails).
    released: Vec<(u64, Lease)>,
    /// Each queue's totals before the batch being applied first changed them (put back if its
    /// commit fails).
    totals_before: Vec<(u32, state::Totals)>,
    dirty: BTreeSet<u32>,
    /// Inside [`Engine::apply_ops`]: lease changes are tracked for a rollback.
    in_batch: bool,
    out: Option<crate::bridge::DeliverySender>,
    /// Deliveries made by the last [`Engine::feed`] when there is no channel (tests).
    pub dispatched: Vec<Delivery>,
    /// Leased by the feed running now, sent to the cores in one batch when it ends.
    outbox: Vec<Delivery>,
    /// Commit latency and batch size, shared with the [`Store`] handle for `/metrics`.
    metrics: Arc<crate::stats::timings::StoreMetrics>,
    /// The completion line of the op being applied (pull acks and failure reports).
    op_log: Option<PullLog>,
    /// Completion lines of the ops in this batch, written once it is committed.
    batch_logs: Vec<PullLog>,
    /// The row changes of the batch being applied, for the write-ahead log (a `RefCell`: the
    /// row writers take `&self`).
    redo: std::cell::RefCell<crate::store::wal::record::Redo>,
    /// The write-ahead log.
    wal: crate::store::wal::Wal,
}

impl Engine {
    /// The store thread's loop: wait for commands or the next timer, apply every waiting
    /// command in the open transaction and make them durable (`durable`), answer, then hand
    /// out due jobs; checkpoint when the log asks for it, and once more at the end.
    fn run(&mut self, rx: crossbeam_channel::Receiver<Command>, closing: &AtomicBool) {
        let env = self.env.clone();
        let mut open = durable::Open::begin(&env);
        self.feed_in(open.view());
        loop {
            let wait = match (self.next_wake(), self.wal.checkpoint_in(Instant::now())) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wait {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.expire_leases();
            if !batch.is_empty() {
                self.handle_open(&mut open, batch);
            }
            if self.wal.checkpoint_due(Instant::now()) {
                self.checkpoint_now(&mut open);
            }
            // Closing: end once everything sent before the close is applied (a batch holds at
            // most MAX_BATCH commands, so more may be waiting).
            if closing.load(Ordering::Acquire) && rx.is_empty() {
                break;
            }
            self.feed_in(open.view());
        }
        // The next start then has nothing to replay.
        if self.wal.dirty() {
            self.checkpoint_now(&mut open);
        }
        tracing::info!("Store closed.");
    }

    /// Jobs leased now, over all queues (the fuzz target and the store model hold it against
    /// the grabbed lists).
    pub fn leased(&self) -> usize {
        self.leases.len()
    }

    /// How many times [`Engine::feed`] and [`Engine::next_wake`] looked at a queue since the
    /// store opened: tests hold it against the queues that had work, whatever the number of
    /// idle queues.
    pub fn queues_visited(&self) -> u64 {
        self.visits.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{due_after, MAX_TIME_MS};
    use std::time::Duration;

    #[test]
    fn due_times_saturate_at_the_latest_time() {
        assert_eq!(due_after(1_000, Duration::from_millis(500)), 1_500);
        assert_eq!(due_after(1_000, Duration::MAX), MAX_TIME_MS);
        assert_eq!(due_after(u64::MAX, Duration::ZERO), MAX_TIME_MS);
        assert_eq!(
            due_after(1_700_000_000_000, Duration::from_secs(1_000_000_000_000)),
            MAX_TIME_MS
        );
    }

    /// A dead store thread ends the process with status 70 (EX_SOFTWARE) for a supervisor to
    /// restart it. The call exits, so it runs in a child: this test binary again, running only
    /// this test with the variable set.
    #[test]
    fn a_dead_store_ends_the_process_with_status_70() {
        const CHILD: &str = "REPROW_TEST_STORE_DIED_CHILD";
        if std::env::var_os(CHILD).is_some() {
            store_died("boom".into());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::engine::tests::a_dead_store_ends_the_process_with_status_70",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(70),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn a_store_loop_that_panics_is_reported_and_marked_dead() {
        let alive = AtomicBool::new(true);
        let mut died = None;
        supervise(&alive, || panic!("boom at {}", 42), |m| died = Some(m));
        assert!(!alive.load(Ordering::Acquire));
        assert_eq!(died.as_deref(), Some("boom at 42"));

        // A loop that ends (shutdown) is not a death.
        let alive = AtomicBool::new(true);
        let mut died = None;
        supervise(&alive, || {}, |m| died = Some(m));
        assert!(!alive.load(Ordering::Acquire));
        assert_eq!(died, None);
    }
}
