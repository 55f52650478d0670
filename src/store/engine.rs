//! The store thread: owns the LMDB environment, applies writes in group commits, schedules due
//! jobs onto the cores and answers queries.
//!
//! # Databases
//! - `jobs`: job id (u64 BE) → [`JobRecord`] bytes.
//! - `due`: [`due_key`] (queue, due ms, id) → empty. Every job in a queue has exactly one
//!   entry, leased or not, so after a crash every unacked job is found again.
//! - `failed`: [`failed_key`] (queue, failure id) → [`FailedRecord`].
//! - `uniq`: [`uniq_key`] (queue, key) → job id, presque's `?uniq=`.
//! - `meta`: `q:<name>` → queue definition JSON, `qid:<name>` → queue id (kept when a queue is
//!   deleted, so re-creating it finds its jobs), `r:<category>` → queue name, `c:<qid>` →
//!   job and failed counts, `next_id`, `next_fid`, `next_qid`.
//!
//! # Invariants
//! - Memory follows disk: an op changes memory only after its nested transaction committed into
//!   the batch; if the batch's commit then fails, memory is rebuilt from disk
//!   ([`Engine::reload`]) and every caller in the batch gets 503.
//! - A job is leased at most once at a time (`leases`); a lease is memory only.
//! - `QState::leased` equals the number of leases of that queue.
//! - `QState::cursor`, when set, is a due key such that no unleased job of the queue that is due
//!   now sorts before it; anything that could break that (an insert below it, an unlease, an
//!   expiry) clears it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use heed::{types::Bytes as Raw, CommitOrAbort, Database, Env, RoTxn, RwTxn, WithoutTls};

use super::due_after;
use super::{
    queue::{QueueDef, QueueMode},
    record::{due_key, failed_key, parse_due_key, uniq_key, FailedRecord, JobRecord},
    Command, Destination, Dispatch, FailedResult, FailedView, JobList, JobView, NewJob, Op,
    OpenError, Query, QueueStats, Reply, ReplyTx, Settlement, Store, StoreError, MAX_TIME_MS,
};
use crate::{
    http::url::WorkerUrl,
    job::{retry::RetryPolicy, target::Target, Job},
};

type Db = Database<'static, Raw, Raw>;
/// Due jobs found by a scan (key, id), and the first future due time met.
type DueScan = (Vec<([u8; 20], u64)>, Option<u64>);
/// A forward or reverse walk over raw key/value pairs.
type KvIter<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

/// Most commands folded into one transaction; bounds a commit's size and its callers' wait.
const MAX_BATCH: usize = 8192;
/// Extra time a push lease outlives the request timeout before the job is handed out again,
/// so a worker answering at the deadline is settled rather than duplicated.
const LEASE_GRACE_MS: u64 = 5_000;
/// Per-job overhead beyond the record itself (keys, page headers), for the space check.
const JOB_OVERHEAD: usize = 96;
/// Backoff for pull-mode failures reported with `PUT /q` (no worker `Retry-After` there).
const NACK_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Where time comes from: the system clock, or a hand-set one for deterministic tests.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// Milliseconds since the epoch, advanced by the test.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Now, ms since the epoch, never past [`MAX_TIME_MS`] (a clock set past year 9999 reads
    /// as its end, so every time the store writes stays showable).
    pub fn now_ms(&self) -> u64 {
        let ms = match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        };
        ms.min(MAX_TIME_MS)
    }
}

/// How to open the store.
#[derive(Clone)]
pub struct Options {
    /// Data directory (created if missing).
    pub path: PathBuf,
    /// LMDB map size, bytes: the most the store can hold.
    pub map_size: usize,
    /// Benchmark only: commits are not fsynced.
    pub no_sync: bool,
    /// Queues from the config file, created or updated at start.
    pub queues: Vec<QueueDef>,
    /// Routings from the config file.
    pub routings: Vec<(String, String)>,
    /// Queue for categories without a routing; created at start if missing.
    pub default_queue: String,
    /// Worker URL of the default queue when it is created.
    pub default_url: Option<String>,
    /// Time source.
    pub clock: Clock,
    /// Test hook: when it returns true the batch's commit is abandoned as if it failed.
    pub fail_commit: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// The longest delay a worker's `Retry-After` may ask for (`runner.max_retry_after`).
    pub max_retry_after: Duration,
}

/// `runner.max_retry_after`'s default: 1 hour.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Opens the store and starts its thread. Jobs to deliver are sent on `out`.
///
/// # Errors
/// [`OpenError`] when the directory, the environment or a stored record cannot be used.
pub fn start(
    opts: Options,
    out: async_channel::Sender<Dispatch>,
) -> Result<(Store, std::thread::JoinHandle<()>), OpenError> {
    let mut engine = Engine::open(opts, Some(out))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut store = Store::from_sender(tx);
    store.metrics = engine.metrics.clone();
    store.ready.store(true, Ordering::Release);
    store.alive.store(true, Ordering::Release);
    let alive = store.alive.clone();
    let handle = std::thread::Builder::new()
        .name("reprow-store".into())
        .spawn(move || supervise(&alive, move || engine.run(rx), store_died))
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

/// Takes an exclusive `flock` on `<dir>/reprow.lock`, held for the life of the returned file,
/// so a second reprow on the same directory fails at start instead of corrupting the
/// environment (LMDB forbids opening one environment twice in a process, and two writers
/// would race on the lock-free parts of reprow's own state).
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, OpenError> {
    let path = dir.join("reprow.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Dir {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        OpenError::Dir {
            path,
            source: std::io::Error::other(format!(
                "already in use by another reprow ({e}); stop it or choose another queue.path"
            )),
        }
    })
}

/// A lease: a job handed out and not yet settled.
#[derive(Debug, Clone)]
struct Lease {
    qid: u32,
    deadline_ms: u64,
    token: u64,
    /// Leased by a pull worker (`GET /q`), not dispatched.
    pull: bool,
    since_ms: u64,
}

/// A counter with the count of the last whole second, for fireworq's `*_per_second`.
#[derive(Debug, Default, Clone)]
struct Rate {
    sec: u64,
    cur: u64,
    last: u64,
}

impl Rate {
    fn add(&mut self, now_ms: u64, n: u64) {
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
    fn per_second(&mut self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        self.last
    }
}

/// Token bucket for `max_dispatches_per_second` / `max_burst_size`.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(def: &QueueDef) -> Option<Bucket> {
        let rate = def.max_dispatches_per_second?;
        let burst = f64::from(def.max_burst_size.unwrap_or(1));
        Some(Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }
    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }
    /// Time until one token is there.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0))
    }
}

/// In-memory state of one queue.
#[derive(Debug)]
struct QState {
    qid: u32,
    name: Arc<str>,
    /// `None` when the definition was deleted (its jobs stay on disk, as fireworq keeps them).
    def: Option<QueueDef>,
    target: Option<Arc<Target>>,
    /// Jobs in the queue (waiting, deferred and leased).
    count: u64,
    /// Entries in the failed log.
    failed: u64,
    leased: u32,
    cursor: Option<[u8; 20]>,
    /// Earliest future due time seen by the last scan that stopped on it.
    next_due: Option<u64>,
    bucket: Option<Bucket>,
    /// `runner.max_retry_after`, for the queue's delivery target.
    max_retry_after: Duration,
    pushes: u64,
    pops: u64,
    successes: u64,
    failures: u64,
    permanent_failures: u64,
    /// Failed attempts scheduled again.
    retries: u64,
    /// Jobs that failed for good.
    failed_jobs: u64,
    completes: u64,
    elapsed_ms: u64,
    push_rate: Rate,
    pop_rate: Rate,
}

fn policy_for(def: &QueueDef, rec: Option<&JobRecord>, max_retry_after: Duration) -> RetryPolicy {
    let max_retries = rec.and_then(|r| r.max_retries).unwrap_or(def.max_retries);
    let fixed = rec
        .and_then(|r| r.retry_delay_ms.map(Duration::from_millis))
        .or(def.retry_delay.map(Duration::from_secs));
    RetryPolicy {
        max_retries,
        fixed,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
        max_retry_after,
    }
}

fn make_target(
    def: &QueueDef,
    rec: Option<&JobRecord>,
    max_retry_after: Duration,
) -> Option<Arc<Target>> {
    let url_text = rec
        .and_then(|r| r.url.clone())
        .or_else(|| def.url.clone())?;
    let url = WorkerUrl::parse(&url_text).ok()?;
    let timeout = rec
        .and_then(|r| r.timeout_ms)
        .map_or(Duration::from_secs(def.timeout), Duration::from_millis);
    Some(Arc::new(Target {
        url,
        url_text,
        timeout,
        policy: policy_for(def, rec, max_retry_after),
        outcome: def.outcome,
    }))
}

impl QState {
    fn new(qid: u32, name: &str, def: Option<QueueDef>, max_retry_after: Duration) -> QState {
        let mut q = QState {
            qid,
            max_retry_after,
            name: Arc::from(name),
            def: None,
            target: None,
            count: 0,
            failed: 0,
            leased: 0,
            cursor: None,
            next_due: None,
            bucket: None,
            pushes: 0,
            pops: 0,
            successes: 0,
            failures: 0,
            permanent_failures: 0,
            retries: 0,
            failed_jobs: 0,
            completes: 0,
            elapsed_ms: 0,
            push_rate: Rate::default(),
            pop_rate: Rate::default(),
        };
        q.set_def(def);
        q
    }

    fn set_def(&mut self, def: Option<QueueDef>) {
        let throttle_changed = self
            .def
            .as_ref()
            .map(|d| (d.max_dispatches_per_second, d.max_burst_size))
            != def
                .as_ref()
                .map(|d| (d.max_dispatches_per_second, d.max_burst_size));
        self.target = def
            .as_ref()
            .and_then(|d| make_target(d, None, self.max_retry_after));
        if throttle_changed || self.bucket.is_none() {
            self.bucket = def.as_ref().and_then(Bucket::new);
        }
        self.def = def;
        self.cursor = None;
        self.next_due = None;
    }
}

fn db_err(e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::Full(
            "the store is full (LMDB map size reached); raise queue.map_size or ack/delete jobs"
                .into(),
        ),
        // The disk (or the quota) is full: as lasting as a full map, so 507, not "retry soon".
        heed::Error::Io(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
        {
            StoreError::Full(format!(
                "the disk holding the store is full ({e}); free space or ack/delete jobs"
            ))
        }
        e => StoreError::Unavailable(format!("store error: {e}")),
    }
}

/// What every op of a batch whose commit failed gets: 507 when the store or its disk is full,
/// else 503.
fn not_committed(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full(m) => StoreError::Full(format!("the write was not committed: {m}")),
        e => StoreError::Unavailable(format!("the write was not committed: {e}")),
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("stored data unreadable: {what}"))
}

/// A stored time as RFC 3339. Never fails: a time past year 9999 (stored by an older version)
/// is shown as the last millisecond of 9999.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_TIME_MS)))
        .to_string()
}

/// The payload as a JSON value when it is JSON, else as a string (fireworq shows JSON).
fn payload_value(p: &[u8]) -> serde_json::Value {
    serde_json::from_slice(p)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
}

/// The store engine. Runs on its own thread ([`start`]); tests drive it directly.
pub struct Engine {
    env: Env<WithoutTls>,
    jobs: Db,
    due: Db,
    failed: Db,
    uniq: Db,
    meta: Db,
    /// Holds the directory lock for the engine's life.
    _lock: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
    map_size: usize,
    reserve: usize,
    clock: Clock,
    fail_commit: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    max_retry_after: Duration,
    queues: BTreeMap<u32, QState>,
    by_name: HashMap<String, u32>,
    routings: BTreeMap<String, String>,
    default_queue: String,
    leases: HashMap<u64, Lease>,
    expiry: BTreeSet<(u64, u64)>,
    next_id: u64,
    next_fid: u64,
    next_qid: u32,
    lease_seq: u64,
    /// Leases granted by the batch being applied (dropped if its commit fails).
    granted: Vec<u64>,
    /// Leases ended by the batch being applied (restored if its commit fails).
    released: Vec<(u64, Lease)>,
    dirty: BTreeSet<u32>,
    /// Inside [`Engine::apply_ops`]: lease changes are tracked for a rollback.
    in_batch: bool,
    out: Option<async_channel::Sender<Dispatch>>,
    /// Dispatches made by the last [`Engine::feed`] when there is no channel (tests).
    pub dispatched: Vec<Dispatch>,
    /// Commit latency and batch size, shared with the [`Store`] handle for `/metrics`.
    metrics: Arc<crate::stats::timings::StoreMetrics>,
    /// The completion line of the op being applied (pull acks and failure reports).
    op_log: Option<PullLog>,
    /// Completion lines of the ops in this batch, written once it is committed.
    batch_logs: Vec<PullLog>,
}

impl Engine {
    /// Opens the environment, clears stale reader slots, loads definitions and counts, and
    /// applies the config's queues and routings.
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open(
        opts: Options,
        out: Option<async_channel::Sender<Dispatch>>,
    ) -> Result<Engine, OpenError> {
        let path = opts.path.clone();
        std::fs::create_dir_all(&path).map_err(|source| OpenError::Dir {
            path: path.clone(),
            source,
        })?;
        let lock = lock_dir(&path)?;
        let lmdb_err = |source| OpenError::Lmdb {
            path: path.clone(),
            source,
        };
        let env = super::lmdb::open(&path, opts.map_size, opts.no_sync).map_err(lmdb_err)?;
        let cleared = env.clear_stale_readers().map_err(lmdb_err)?;
        if cleared > 0 {
            tracing::info!(cleared, "Cleared stale LMDB reader slots.");
        }
        let wtxn = env.write_txn().map_err(lmdb_err)?;
        let [jobs, due, failed, uniq, meta]: [Db; 5] = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let mut db = |name| dbo.create_database::<Raw, Raw>(wtxn, Some(name));
                Ok(CommitOrAbort::<_, ()>::Commit([
                    db("jobs")?,
                    db("due")?,
                    db("failed")?,
                    db("uniq")?,
                    db("meta")?,
                ]))
            })
            .map_err(lmdb_err)?
            .unwrap_commit();
        let map_size = env.info().map_size;
        let mut engine = Engine {
            env,
            jobs,
            due,
            failed,
            uniq,
            meta,
            _lock: lock,
            path: path.clone(),
            map_size,
            reserve: (map_size / 10).max(256 * 1024),
            clock: opts.clock.clone(),
            fail_commit: opts.fail_commit.clone(),
            max_retry_after: opts.max_retry_after,
            metrics: Arc::default(),
            op_log: None,
            batch_logs: Vec::new(),
            queues: BTreeMap::new(),
            by_name: HashMap::new(),
            routings: BTreeMap::new(),
            default_queue: opts.default_queue.clone(),
            leases: HashMap::new(),
            expiry: BTreeSet::new(),
            next_id: 1,
            next_fid: 1,
            next_qid: 1,
            // Lease tokens start from the clock (x1000) so a token from before a restart is
            // not handed out again after it: a stale ack stays stale.
            lease_seq: opts.clock.now_ms().saturating_mul(1000),
            granted: Vec::new(),
            released: Vec::new(),
            dirty: BTreeSet::new(),
            in_batch: false,
            out,
            dispatched: Vec::new(),
        };
        engine.load().map_err(|e| OpenError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // The config's queues and routings, and the default queue, in one commit.
        let mut ops: Vec<Op> = Vec::new();
        let mut defs = opts.queues.clone();
        let default_defined = defs.iter().any(|d| d.name == opts.default_queue)
            || engine
                .by_name
                .get(&opts.default_queue)
                .is_some_and(|q| engine.queues[q].def.is_some());
        if !default_defined {
            let mut d = QueueDef::named(&opts.default_queue);
            d.url = opts.default_url.clone();
            defs.push(d);
        }
        for mut d in defs {
            // A restart keeps a queue stopped by `/control`.
            if let Some(q) = engine
                .by_name
                .get(&d.name)
                .and_then(|q| engine.queues[q].def.as_ref())
            {
                d.paused |= q.paused;
            }
            ops.push(Op::PutQueue(d));
        }
        for (category, queue) in &opts.routings {
            ops.push(Op::PutRouting {
                category: category.clone(),
                queue: queue.clone(),
            });
        }
        for (op, r) in engine.apply_ops(ops) {
            if let Err(e) = r {
                return Err(OpenError::Config(format!("{op}: {e}")));
            }
        }
        tracing::info!(
            path = %path.display(),
            map_size,
            queues = engine.by_name.len(),
            jobs = engine.queues.values().map(|q| q.count).sum::<u64>(),
            "Store opened."
        );
        Ok(engine)
    }

    /// (Re)reads definitions, routings, counts and id counters from disk.
    fn load(&mut self) -> Result<(), StoreError> {
        let rtxn = self.env.read_txn().map_err(db_err)?;
        let get_u64 = |k: &[u8]| -> Result<Option<u64>, StoreError> {
            Ok(self
                .meta
                .get(&rtxn, k)
                .map_err(db_err)?
                .and_then(|v| v.try_into().ok().map(u64::from_le_bytes)))
        };
        self.next_id = get_u64(b"next_id")?.unwrap_or(1);
        self.next_fid = get_u64(b"next_fid")?.unwrap_or(1);
        self.next_qid = get_u64(b"next_qid")?.unwrap_or(1) as u32;
        let mut queues = BTreeMap::new();
        let mut by_name = HashMap::new();
        for item in self.meta.prefix_iter(&rtxn, b"qid:").map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let name = std::str::from_utf8(&k[4..]).map_err(corrupt)?;
            let qid = u32::from_le_bytes(v.try_into().map_err(corrupt)?);
            let def = match self
                .meta
                .get(&rtxn, format!("q:{name}").as_bytes())
                .map_err(db_err)?
            {
                Some(j) => Some(serde_json::from_slice::<QueueDef>(j).map_err(corrupt)?),
                None => None,
            };
            let mut q = QState::new(qid, name, def, self.max_retry_after);
            if let Some(c) = self.meta.get(&rtxn, &counts_key(qid)).map_err(db_err)? {
                if c.len() == 16 {
                    q.count = u64::from_le_bytes(c[..8].try_into().map_err(corrupt)?);
                    q.failed = u64::from_le_bytes(c[8..].try_into().map_err(corrupt)?);
                }
            }
            by_name.insert(name.to_string(), qid);
            queues.insert(qid, q);
        }
        let mut routings = BTreeMap::new();
        for item in self.meta.prefix_iter(&rtxn, b"r:").map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            routings.insert(
                String::from_utf8_lossy(&k[2..]).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
        drop(rtxn);
        // Leases survive a reload only for jobs still on disk and queues still known.
        let rtxn = self.env.read_txn().map_err(db_err)?;
        let mut keep = HashMap::new();
        for (id, l) in self.leases.drain() {
            if queues.contains_key(&l.qid)
                && self
                    .jobs
                    .get(&rtxn, &id.to_be_bytes())
                    .map_err(db_err)?
                    .is_some()
            {
                keep.insert(id, l);
            }
        }
        drop(rtxn);
        for l in keep.values() {
            if let Some(q) = queues.get_mut(&l.qid) {
                q.leased += 1;
            }
        }
        self.expiry = keep.iter().map(|(id, l)| (l.deadline_ms, *id)).collect();
        self.leases = keep;
        // Counters that are not on disk (totals, rates) carry over.
        for (qid, q) in queues.iter_mut() {
            if let Some(old) = self.queues.get(qid) {
                q.pushes = old.pushes;
                q.pops = old.pops;
                q.successes = old.successes;
                q.failures = old.failures;
                q.permanent_failures = old.permanent_failures;
                q.retries = old.retries;
                q.failed_jobs = old.failed_jobs;
                q.completes = old.completes;
                q.elapsed_ms = old.elapsed_ms;
            }
        }
        self.queues = queues;
        self.by_name = by_name;
        self.routings = routings;
        Ok(())
    }

    /// After a failed commit: memory back to what is on disk.
    fn reload(&mut self) {
        let granted = std::mem::take(&mut self.granted);
        for id in &granted {
            if let Some(l) = self.leases.remove(id) {
                self.expiry.remove(&(l.deadline_ms, *id));
            }
        }
        // A lease the failed batch ended (an ack, a settle) still holds: the job is on disk.
        for (id, l) in std::mem::take(&mut self.released) {
            if !granted.contains(&id) {
                self.expiry.insert((l.deadline_ms, id));
                self.leases.insert(id, l);
            }
        }
        self.dirty.clear();
        if let Err(e) = self.load() {
            tracing::error!(error = %e, "Cannot reload the store state after a failed commit.");
        }
    }

    /// The store thread's loop: wait for commands or the next timer, apply every waiting
    /// command in one commit, answer, then hand out due jobs.
    fn run(&mut self, rx: crossbeam_channel::Receiver<Command>) {
        self.feed();
        loop {
            let first = match self.next_wake() {
                Some(at) => match rx.recv_deadline(at) {
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
                self.handle(batch);
            }
            self.feed();
        }
        tracing::info!("Store closed.");
    }

    /// Applies a batch of commands (one commit), answers them, then answers the queries.
    pub fn handle(&mut self, batch: Vec<Command>) {
        let mut writes = Vec::with_capacity(batch.len());
        let mut queries = Vec::new();
        for c in batch {
            match c.op {
                Op::Query(q) => queries.push((q, c.reply)),
                op => writes.push((op, c.reply)),
            }
        }
        if !writes.is_empty() {
            let (ops, replies): (Vec<Op>, Vec<Option<ReplyTx>>) = writes.into_iter().unzip();
            let results = self.apply_ops(ops);
            for ((_, r), tx) in results.into_iter().zip(replies) {
                if let Some(tx) = tx {
                    let _ = tx.try_send(r);
                }
            }
        }
        for (q, tx) in queries {
            let r = self.query(q);
            if let Some(tx) = tx {
                let _ = tx.try_send(r);
            }
        }
    }

    /// Applies ops in one write transaction; returns each op's label and result.
    pub fn apply_ops(&mut self, ops: Vec<Op>) -> Vec<(String, Result<Reply, StoreError>)> {
        let env = self.env.clone();
        let mut wtxn = match env.write_txn() {
            Ok(t) => t,
            Err(e) => {
                let e = db_err(e);
                return ops.iter().map(|o| (label(o), Err(e.clone()))).collect();
            }
        };
        self.granted.clear();
        self.released.clear();
        self.batch_logs.clear();
        self.in_batch = true;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let l = label(&op);
            let r = self.apply(&env, &mut wtxn, op);
            results.push((l, r));
        }
        let ops_in_batch = results.len() as u64;
        let started = std::time::Instant::now();
        let committed = self.write_counters(&mut wtxn).and_then(|()| {
            if self.fail_commit.as_ref().is_some_and(|f| f()) {
                drop(wtxn);
                return Err(StoreError::Unavailable("commit failed (injected)".into()));
            }
            wtxn.commit().map_err(db_err)
        });
        self.metrics
            .commit_seconds
            .observe_duration(started.elapsed());
        self.metrics.commit_ops.observe(ops_in_batch);
        self.in_batch = false;
        match committed {
            Ok(()) => {
                self.granted.clear();
                self.released.clear();
                for log in self.batch_logs.drain(..) {
                    log.emit();
                }
                results
            }
            Err(e) => {
                tracing::error!(error = %e, "Store commit failed; the batch is refused.");
                self.reload();
                let e = not_committed(&e);
                results
                    .into_iter()
                    .map(|(l, _)| (l, Err(e.clone())))
                    .collect()
            }
        }
    }

    fn write_counters(&mut self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        self.meta
            .put(wtxn, b"next_id", &self.next_id.to_le_bytes())
            .map_err(db_err)?;
        self.meta
            .put(wtxn, b"next_fid", &self.next_fid.to_le_bytes())
            .map_err(db_err)?;
        self.meta
            .put(wtxn, b"next_qid", &u64::from(self.next_qid).to_le_bytes())
            .map_err(db_err)?;
        for qid in std::mem::take(&mut self.dirty) {
            if let Some(q) = self.queues.get(&qid) {
                let mut v = [0u8; 16];
                v[..8].copy_from_slice(&q.count.to_le_bytes());
                v[8..].copy_from_slice(&q.failed.to_le_bytes());
                self.meta.put(wtxn, &counts_key(qid), &v).map_err(db_err)?;
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        env: &Env<WithoutTls>,
        parent: &mut RwTxn,
        op: Op,
    ) -> Result<Reply, StoreError> {
        let mut txn = env.nested_write_txn(parent).map_err(db_err)?;
        let now = self.clock.now_ms();
        self.op_log = None;
        // Each arm does its disk work in `txn`, then `fx` changes memory after the nested
        // commit succeeded (see the module's invariants).
        let (reply, fx): (Reply, Effect) = match op {
            Op::Enqueue(jobs) => self.enqueue(&mut txn, jobs, now)?,
            Op::Settle {
                id,
                lease,
                how,
                elapsed_ms,
            } => self.settle(&mut txn, id, lease, how, elapsed_ms, now)?,
            Op::Pull {
                queue,
                count,
                forget,
            } => self.pull(&mut txn, &queue, count, forget, now)?,
            Op::Ack { queue, id, lease } => {
                let (qid, rec) = self.queue_job(&txn, &queue, id)?;
                self.check_pull_lease(qid, id, lease)?;
                self.remove_job(&mut txn, &rec)?;
                // A pull worker's completion (pushed jobs are logged by the cores); written once
                // the batch holding it is committed.
                self.op_log = Some(PullLog::new(
                    "complete",
                    "completed",
                    &queue,
                    &rec,
                    self.lease_age(rec.id, now),
                    None,
                ));
                (Reply::Unit, Effect::Removed { rec, done: Some(0) })
            }
            Op::Nack {
                queue,
                id,
                message,
                lease,
            } => {
                let (qid, rec) = self.queue_job(&txn, &queue, id)?;
                self.check_pull_lease(qid, id, lease)?;
                let def = self.def_of(qid)?.clone();
                let policy = policy_for(&def, Some(&rec), self.max_retry_after);
                let attempts = rec.attempts + 1;
                let failure = crate::job::Failure {
                    status: None,
                    message,
                };
                let mut log = PullLog::new(
                    "retry",
                    "failed",
                    &queue,
                    &rec,
                    self.lease_age(rec.id, now),
                    Some(failure.message.clone()),
                );
                if policy.may_retry(attempts) {
                    let mut p = policy;
                    (p.base, p.cap) = NACK_BACKOFF;
                    let delay = p.delay(attempts, None);
                    log.retry_delay = Some(delay.as_millis() as u64);
                    self.op_log = Some(log);
                    let rec = self.reschedule(&mut txn, rec, attempts, due_after(now, delay))?;
                    (Reply::Unit, Effect::Retried { rec })
                } else {
                    self.fail_job(&mut txn, rec.clone(), attempts, &failure, false, now)?;
                    log.action = "fail";
                    self.op_log = Some(log);
                    (
                        Reply::Unit,
                        Effect::Failed {
                            rec,
                            permanent: false,
                        },
                    )
                }
            }
            Op::DeleteJob { queue, id } => {
                let (_, rec) = self.queue_job(&txn, &queue, id)?;
                self.remove_job(&mut txn, &rec)?;
                (Reply::Unit, Effect::Removed { rec, done: None })
            }
            Op::Purge(queue) => {
                let qid = self.qid(&queue)?;
                let mut recs = Vec::new();
                let (lo, hi) = (due_key(qid, 0, 0), due_key(qid, u64::MAX, u64::MAX));
                let keys: Vec<u64> = self
                    .due
                    .range(&txn, &(Bound::Included(&lo[..]), Bound::Included(&hi[..])))
                    .map_err(db_err)?
                    .filter_map(|kv| {
                        kv.ok()
                            .and_then(|(k, _)| parse_due_key(k))
                            .map(|(_, _, id)| id)
                    })
                    .collect();
                for id in keys {
                    if let Some(rec) = self.read_job(&txn, id)? {
                        self.remove_job(&mut txn, &rec)?;
                        recs.push(rec);
                    }
                }
                (Reply::Unit, Effect::Purged { qid, recs })
            }
            Op::PutQueue(def) => {
                def.validate().map_err(StoreError::BadRequest)?;
                let existing = self
                    .by_name
                    .get(&def.name)
                    .and_then(|q| self.queues[q].def.as_ref());
                if existing == Some(&def) {
                    // Nothing changed: nothing is written or restarted.
                    (Reply::Queues(vec![def]), Effect::None)
                } else {
                    let qid = self.define(&mut txn, &def)?;
                    (
                        Reply::Queues(vec![def.clone()]),
                        Effect::Defined {
                            qid,
                            def: Some(def),
                        },
                    )
                }
            }
            Op::DeleteQueue(name) => {
                let qid = self.qid(&name)?;
                self.meta
                    .delete(&mut txn, format!("q:{name}").as_bytes())
                    .map_err(db_err)?;
                (Reply::Unit, Effect::Defined { qid, def: None })
            }
            Op::Control { queue, paused } => {
                let qid = self.qid(&queue)?;
                let mut def = self.def_of(qid)?.clone();
                if def.paused == paused {
                    (Reply::Queues(vec![def]), Effect::None)
                } else {
                    def.paused = paused;
                    self.define(&mut txn, &def)?;
                    (
                        Reply::Queues(vec![def.clone()]),
                        Effect::Defined {
                            qid,
                            def: Some(def),
                        },
                    )
                }
            }
            Op::PutRouting { category, queue } => {
                super::queue::check_name("category", &category).map_err(StoreError::BadRequest)?;
                self.qid(&queue)?;
                self.meta
                    .put(
                        &mut txn,
                        format!("r:{category}").as_bytes(),
                        queue.as_bytes(),
                    )
                    .map_err(db_err)?;
                (
                    Reply::Routings(vec![(category.clone(), queue.clone())]),
                    Effect::Routing(category, Some(queue)),
                )
            }
            Op::DeleteRouting(category) => {
                let queue = self.routings.get(&category).cloned().ok_or_else(|| {
                    StoreError::NotFound(format!("no routing for category {category:?}"))
                })?;
                self.meta
                    .delete(&mut txn, format!("r:{category}").as_bytes())
                    .map_err(db_err)?;
                (
                    Reply::Routings(vec![(category.clone(), queue)]),
                    Effect::Routing(category, None),
                )
            }
            Op::DeleteFailed { queue, id } => {
                let qid = self.qid(&queue)?;
                let k = failed_key(qid, id);
                if !self.failed.delete(&mut txn, &k).map_err(db_err)? {
                    return Err(no_failed(id));
                }
                (Reply::Unit, Effect::FailedRemoved { qid })
            }
            Op::RetryFailed { queue, id } => {
                let qid = self.qid(&queue)?;
                let k = failed_key(qid, id);
                let f = match self.failed.get(&txn, &k).map_err(db_err)? {
                    Some(b) => FailedRecord::decode(b).map_err(corrupt)?,
                    None => return Err(no_failed(id)),
                };
                self.failed.delete(&mut txn, &k).map_err(db_err)?;
                let mut rec = f.job;
                if self
                    .jobs
                    .get(&txn, &rec.id.to_be_bytes())
                    .map_err(db_err)?
                    .is_some()
                {
                    // The id was reused by a RetryFailed before: give the job a new one.
                    rec.id = self.next_id;
                    self.next_id += 1;
                }
                rec.attempts = 0;
                rec.due_ms = now;
                if let Some(u) = &rec.uniq {
                    if self
                        .uniq
                        .get(&txn, &uniq_key(qid, u))
                        .map_err(db_err)?
                        .is_some()
                    {
                        rec.uniq = None;
                    }
                }
                self.insert_job(&mut txn, &rec)?;
                let view = self.view(&rec, false);
                (Reply::Enqueued(vec![view]), Effect::Requeued { rec })
            }
            Op::Query(_) => return Err(StoreError::BadRequest("query sent as a write".into())),
        };
        txn.commit().map_err(db_err)?;
        self.effect(fx, now);
        if let Some(log) = self.op_log.take() {
            self.batch_logs.push(log);
        }
        Ok(reply)
    }

    /// Memory changes after an op's nested commit.
    fn effect(&mut self, fx: Effect, now: u64) {
        let mra = self.max_retry_after;
        match fx {
            Effect::None => {}
            Effect::Enqueued { recs, new_queues } => {
                for (qid, name, def) in new_queues {
                    self.by_name.insert(name.clone(), qid);
                    self.queues
                        .entry(qid)
                        .or_insert_with(|| QState::new(qid, &name, None, mra))
                        .set_def(Some(def));
                }
                for rec in recs {
                    self.dirty.insert(rec.queue);
                    if let Some(q) = self.queues.get_mut(&rec.queue) {
                        q.count += 1;
                        q.pushes += 1;
                        q.push_rate.add(now, 1);
                        below_cursor(q, &rec);
                    }
                }
            }
            Effect::Removed { rec, done } => {
                self.unlease(rec.id);
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.count = q.count.saturating_sub(1);
                    if let Some(elapsed) = done {
                        q.successes += 1;
                        q.completes += 1;
                        q.elapsed_ms = q.elapsed_ms.saturating_add(elapsed);
                    }
                }
            }
            Effect::Retried { rec } => {
                self.unlease(rec.id);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.failures += 1;
                    q.retries += 1;
                    below_cursor(q, &rec);
                }
            }
            Effect::Released { id, rec } => {
                self.unlease(id);
                if let Some(q) = rec.and_then(|r| self.queues.get_mut(&r.queue).map(|q| (q, r))) {
                    below_cursor(q.0, &q.1);
                }
            }
            Effect::Failed { rec, permanent } => {
                self.unlease(rec.id);
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.count = q.count.saturating_sub(1);
                    q.failed += 1;
                    q.failed_jobs += 1;
                    q.completes += 1;
                    if permanent {
                        q.permanent_failures += 1;
                    } else {
                        q.failures += 1;
                    }
                }
            }
            Effect::Pulled {
                qid,
                leases,
                forgotten,
            } => {
                let q = self.queues.get_mut(&qid);
                if let Some(q) = q {
                    q.pops += (leases.len() + forgotten) as u64;
                    q.pop_rate.add(now, (leases.len() + forgotten) as u64);
                    if forgotten > 0 {
                        q.count = q.count.saturating_sub(forgotten as u64);
                        q.completes += forgotten as u64;
                        self.dirty.insert(qid);
                    }
                }
                for (id, l) in leases {
                    self.grant(id, l);
                }
            }
            Effect::Purged { qid, recs } => {
                for rec in &recs {
                    self.unlease(rec.id);
                }
                self.dirty.insert(qid);
                if let Some(q) = self.queues.get_mut(&qid) {
                    q.count = q.count.saturating_sub(recs.len() as u64);
                    q.cursor = None;
                }
            }
            Effect::Defined { qid, def } => {
                if let Some(d) = &def {
                    self.by_name.insert(d.name.clone(), qid);
                }
                let name = def.as_ref().map(|d| d.name.clone());
                let q = self
                    .queues
                    .entry(qid)
                    .or_insert_with(|| QState::new(qid, name.as_deref().unwrap_or(""), None, mra));
                q.set_def(def);
            }
            Effect::Routing(category, queue) => match queue {
                Some(q) => {
                    self.routings.insert(category, q);
                }
                None => {
                    self.routings.remove(&category);
                }
            },
            Effect::FailedRemoved { qid } => {
                self.dirty.insert(qid);
                if let Some(q) = self.queues.get_mut(&qid) {
                    q.failed = q.failed.saturating_sub(1);
                }
            }
            Effect::Requeued { rec } => {
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.failed = q.failed.saturating_sub(1);
                    q.count += 1;
                    below_cursor(q, &rec);
                }
            }
        }
    }

    fn grant(&mut self, id: u64, l: Lease) {
        if let Some(q) = self.queues.get_mut(&l.qid) {
            q.leased += 1;
        }
        self.expiry.insert((l.deadline_ms, id));
        self.granted.push(id);
        self.leases.insert(id, l);
    }

    fn unlease(&mut self, id: u64) -> Option<Lease> {
        let l = self.leases.remove(&id)?;
        if self.in_batch {
            self.released.push((id, l.clone()));
        }
        self.expiry.remove(&(l.deadline_ms, id));
        // The cursor stays: a job that left the queue is not runnable, and callers that make
        // a job runnable again (retry, release, expiry) reset it through `below_cursor`.
        if let Some(q) = self.queues.get_mut(&l.qid) {
            q.leased = q.leased.saturating_sub(1);
        }
        Some(l)
    }

    fn qid(&self, name: &str) -> Result<u32, StoreError> {
        self.by_name
            .get(name)
            .copied()
            .filter(|q| self.queues[q].def.is_some())
            .ok_or_else(|| StoreError::NotFound(format!("no queue named {name:?}")))
    }

    fn def_of(&self, qid: u32) -> Result<&QueueDef, StoreError> {
        self.queues
            .get(&qid)
            .and_then(|q| q.def.as_ref())
            .ok_or_else(|| StoreError::NotFound("the queue was deleted".into()))
    }

    /// Writes a definition, giving the queue an id if it has none yet.
    fn define(&mut self, txn: &mut RwTxn, def: &QueueDef) -> Result<u32, StoreError> {
        let qid = match self.stored_qid(txn, &def.name)? {
            Some(q) => q,
            None => {
                let q = self.next_qid;
                self.next_qid += 1;
                self.meta
                    .put(
                        txn,
                        format!("qid:{}", def.name).as_bytes(),
                        &q.to_le_bytes(),
                    )
                    .map_err(db_err)?;
                q
            }
        };
        let json = serde_json::to_vec(def).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        self.meta
            .put(txn, format!("q:{}", def.name).as_bytes(), &json)
            .map_err(db_err)?;
        Ok(qid)
    }

    fn stored_qid(&self, txn: &RoTxn, name: &str) -> Result<Option<u32>, StoreError> {
        if let Some(q) = self.by_name.get(name) {
            return Ok(Some(*q));
        }
        Ok(self
            .meta
            .get(txn, format!("qid:{name}").as_bytes())
            .map_err(db_err)?
            .and_then(|v| v.try_into().ok().map(u32::from_le_bytes)))
    }

    /// A job that must exist in the named queue (404 otherwise), with the queue's id.
    fn queue_job(&self, txn: &RoTxn, queue: &str, id: u64) -> Result<(u32, JobRecord), StoreError> {
        let qid = self.qid(queue)?;
        let rec = self
            .read_job(txn, id)?
            .filter(|r| r.queue == qid)
            .ok_or_else(|| no_job(id))?;
        Ok((qid, rec))
    }

    fn read_job(&self, txn: &RoTxn, id: u64) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get(txn, &id.to_be_bytes()).map_err(db_err)? {
            Some(b) => Ok(Some(JobRecord::decode(id, b).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    fn insert_job(&self, txn: &mut RwTxn, rec: &JobRecord) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        rec.encode(&mut buf)
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        self.jobs
            .put(txn, &rec.id.to_be_bytes(), &buf)
            .map_err(db_err)?;
        self.due
            .put(txn, &due_key(rec.queue, rec.due_ms, rec.id), &[])
            .map_err(db_err)?;
        if let Some(u) = &rec.uniq {
            self.uniq
                .put(txn, &uniq_key(rec.queue, u), &rec.id.to_be_bytes())
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn remove_job(&self, txn: &mut RwTxn, rec: &JobRecord) -> Result<(), StoreError> {
        self.jobs
            .delete(txn, &rec.id.to_be_bytes())
            .map_err(db_err)?;
        self.due
            .delete(txn, &due_key(rec.queue, rec.due_ms, rec.id))
            .map_err(db_err)?;
        if let Some(u) = &rec.uniq {
            self.uniq
                .delete(txn, &uniq_key(rec.queue, u))
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn reschedule(
        &self,
        txn: &mut RwTxn,
        mut rec: JobRecord,
        attempts: u32,
        due_ms: u64,
    ) -> Result<JobRecord, StoreError> {
        self.due
            .delete(txn, &due_key(rec.queue, rec.due_ms, rec.id))
            .map_err(db_err)?;
        rec.attempts = attempts;
        rec.due_ms = due_ms;
        let mut buf = Vec::new();
        rec.encode(&mut buf)
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        self.jobs
            .put(txn, &rec.id.to_be_bytes(), &buf)
            .map_err(db_err)?;
        self.due
            .put(txn, &due_key(rec.queue, due_ms, rec.id), &[])
            .map_err(db_err)?;
        Ok(rec)
    }

    fn fail_job(
        &mut self,
        txn: &mut RwTxn,
        mut rec: JobRecord,
        attempts: u32,
        failure: &crate::job::Failure,
        permanent: bool,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.remove_job(txn, &rec)?;
        rec.attempts = attempts;
        let fid = self.next_fid;
        self.next_fid += 1;
        let f = FailedRecord {
            job: rec,
            status: if permanent {
                "permanent-failure"
            } else {
                "failure"
            }
            .into(),
            code: failure.status,
            message: failure.message.clone(),
            failed_ms: now,
        };
        let mut buf = Vec::new();
        f.encode(&mut buf)
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        self.failed
            .put(txn, &failed_key(f.job.queue, fid), &buf)
            .map_err(db_err)?;
        Ok(fid)
    }

    /// Bytes in use by the store's pages.
    fn used_bytes(&self, txn: &RoTxn) -> Result<usize, StoreError> {
        let mut used = 0;
        for db in [self.jobs, self.due, self.failed, self.uniq, self.meta] {
            used += db.stat(txn).map_err(db_err)?.non_free_page_size();
        }
        Ok(used)
    }

    fn enqueue(
        &mut self,
        txn: &mut RwTxn,
        jobs: Vec<NewJob>,
        now: u64,
    ) -> Result<(Reply, Effect), StoreError> {
        let estimate: usize = jobs
            .iter()
            .map(|j| {
                2 * (j.payload.len()
                    + j.content_type.len()
                    + j.url.as_ref().map_or(0, String::len)
                    + JOB_OVERHEAD)
            })
            .sum();
        let used = self.used_bytes(txn)?;
        if used + estimate > self.map_size.saturating_sub(self.reserve) {
            return Err(StoreError::Full(format!(
                "the store is full: {used} of {} bytes in use and the last {} are kept for acks and retries; \
                 new jobs are refused until jobs finish (or raise queue.map_size)",
                self.map_size, self.reserve
            )));
        }
        let mut new_queues: Vec<(u32, String, QueueDef)> = Vec::new();
        let mut recs = Vec::with_capacity(jobs.len());
        let mut views = Vec::with_capacity(jobs.len());
        for j in jobs {
            j.check_times().map_err(StoreError::BadRequest)?;
            let (name, category) = match j.dest {
                Destination::Category(c) => {
                    super::queue::check_name("category", &c).map_err(StoreError::BadRequest)?;
                    let q = self
                        .routings
                        .get(&c)
                        .cloned()
                        .unwrap_or_else(|| self.default_queue.clone());
                    (q, c)
                }
                Destination::Queue(q) => {
                    super::queue::check_name("queue name", &q).map_err(StoreError::BadRequest)?;
                    (q.clone(), q)
                }
            };
            let qid = match self.qid(&name) {
                Ok(q) => q,
                Err(e) => match new_queues.iter().find(|(_, n, _)| *n == name) {
                    Some((q, _, _)) => *q,
                    None if category == name => {
                        // presque creates a queue on first use; reprow makes it a pull queue.
                        let mut def = QueueDef::named(&name);
                        def.mode = QueueMode::Pull;
                        let qid = self.define(txn, &def)?;
                        new_queues.push((qid, name.clone(), def));
                        qid
                    }
                    None => {
                        return Err(StoreError::NotFound(format!("category {category:?}: {e}")))
                    }
                },
            };
            let def = match self.def_of(qid) {
                Ok(d) => d.clone(),
                Err(_) => new_queues
                    .iter()
                    .find(|(q, _, _)| *q == qid)
                    .map(|x| x.2.clone())
                    .ok_or_else(|| StoreError::NotFound(name.clone()))?,
            };
            if let Some(u) = &j.url {
                let url =
                    WorkerUrl::parse(u).map_err(|e| StoreError::BadRequest(format!("url: {e}")))?;
                if !def.allows(&url) {
                    return Err(StoreError::BadRequest(format!(
                        "url {u:?}: host {:?} is not in queue {name:?}'s allowed_origins",
                        url.host
                    )));
                }
            } else if def.mode == QueueMode::Push && def.url.is_none() {
                return Err(StoreError::BadRequest(format!(
                    "url is required: queue {name:?} has no worker url"
                )));
            }
            let id = self.next_id;
            self.next_id += 1;
            let rec = JobRecord {
                id,
                queue: qid,
                category,
                url: j.url,
                content_type: j.content_type,
                attempts: 0,
                created_ms: now,
                due_ms: j.run_at_ms.max(now),
                // Bounded by `check_times`: no overflow.
                timeout_ms: j.timeout.map(|t| t * 1000),
                max_retries: j.max_retries,
                retry_delay_ms: j.retry_delay.map(|t| t * 1000),
                uniq: j.uniq,
                payload: j.payload,
            };
            if let Some(u) = &rec.uniq {
                if u.is_empty() || u.len() > 512 {
                    return Err(StoreError::BadRequest("uniq must be 1 to 512 bytes".into()));
                }
                if self
                    .uniq
                    .get(txn, &uniq_key(qid, u))
                    .map_err(db_err)?
                    .is_some()
                {
                    return Err(StoreError::Conflict("job already exists".into()));
                }
            }
            self.insert_job(txn, &rec)?;
            views.push(self.view_with(&rec, false, Some(&def), &name));
            recs.push(rec);
        }
        Ok((
            Reply::Enqueued(views),
            Effect::Enqueued { recs, new_queues },
        ))
    }

    fn settle(
        &mut self,
        txn: &mut RwTxn,
        id: u64,
        token: u64,
        how: Settlement,
        elapsed_ms: u64,
        now: u64,
    ) -> Result<(Reply, Effect), StoreError> {
        let current = self.leases.get(&id).is_some_and(|l| l.token == token);
        let Some(rec) = self.read_job(txn, id)? else {
            return Ok((Reply::Unit, Effect::None));
        };
        match how {
            Settlement::Done => {
                self.remove_job(txn, &rec)?;
                Ok((
                    Reply::Unit,
                    Effect::Removed {
                        rec,
                        done: Some(elapsed_ms),
                    },
                ))
            }
            // A settle from an expired lease: the job is someone else's now.
            _ if !current => Ok((Reply::Unit, Effect::None)),
            Settlement::Retry(delay, _failure) => {
                let attempts = rec.attempts + 1;
                let rec = self.reschedule(txn, rec, attempts, due_after(now, delay))?;
                Ok((Reply::Unit, Effect::Retried { rec }))
            }
            Settlement::Fail(failure, permanent) => {
                let attempts = rec.attempts + 1;
                self.fail_job(txn, rec.clone(), attempts, &failure, permanent, now)?;
                Ok((Reply::Unit, Effect::Failed { rec, permanent }))
            }
            Settlement::Release(delay) => {
                if delay.is_zero() {
                    Ok((Reply::Unit, Effect::Released { id, rec: Some(rec) }))
                } else {
                    let attempts = rec.attempts;
                    let rec = self.reschedule(txn, rec, attempts, due_after(now, delay))?;
                    Ok((Reply::Unit, Effect::Released { id, rec: Some(rec) }))
                }
            }
        }
    }

    fn pull(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        count: usize,
        forget: bool,
        now: u64,
    ) -> Result<(Reply, Effect), StoreError> {
        let qid = self
            .by_name
            .get(queue)
            .copied()
            .filter(|q| self.queues[q].def.is_some());
        let Some(qid) = qid else {
            return Err(StoreError::NotFound("no job".into()));
        };
        let def = self.def_of(qid)?.clone();
        if def.paused {
            return Err(StoreError::NotFound("no job (the queue is stopped)".into()));
        }
        let found = self.scan_due(txn, qid, None, now, count)?.0;
        if found.is_empty() {
            return Err(StoreError::NotFound("no job".into()));
        }
        let mut out = Vec::with_capacity(found.len());
        let mut leases = Vec::new();
        let mut forgotten = 0;
        for (_, id) in found {
            let Some(rec) = self.read_job(txn, id)? else {
                continue;
            };
            if forget {
                self.remove_job(txn, &rec)?;
                forgotten += 1;
            } else {
                self.lease_seq += 1;
                leases.push((
                    id,
                    Lease {
                        qid,
                        deadline_ms: due_after(now, Duration::from_secs(def.lease_timeout)),
                        token: self.lease_seq,
                        pull: true,
                        since_ms: now,
                    },
                ));
            }
            let payload = rec.payload.clone();
            let mut view = self.view_with(&rec, !forget, Some(&def), queue);
            if let Some((_, l)) = leases.last().filter(|(lid, _)| *lid == id) {
                view.lease = Some(l.token);
            }
            out.push((view, payload));
        }
        Ok((
            Reply::Pulled(out),
            Effect::Pulled {
                qid,
                leases,
                forgotten,
            },
        ))
    }

    /// Up to `limit` (due key, id) of unleased jobs of a queue due at `now`, scanning from
    /// `from` (exclusive) or the start. Also returns the first future due time met, if the scan
    /// reached one.
    fn scan_due(
        &self,
        txn: &RoTxn,
        qid: u32,
        from: Option<[u8; 20]>,
        now: u64,
        limit: usize,
    ) -> Result<DueScan, StoreError> {
        let lo = from.unwrap_or_else(|| due_key(qid, 0, 0));
        let hi = due_key(qid, u64::MAX, u64::MAX);
        let lower = if from.is_some() {
            Bound::Excluded(&lo[..])
        } else {
            Bound::Included(&lo[..])
        };
        let mut out = Vec::new();
        let mut future = None;
        if limit == 0 {
            return Ok((out, None));
        }
        for kv in self
            .due
            .range(txn, &(lower, Bound::Included(&hi[..])))
            .map_err(db_err)?
        {
            let (k, _) = kv.map_err(db_err)?;
            let Some((_, due, id)) = parse_due_key(k) else {
                continue;
            };
            if due > now {
                future = Some(due);
                break;
            }
            if self.leases.contains_key(&id) {
                continue;
            }
            let mut key = [0u8; 20];
            key.copy_from_slice(k);
            out.push((key, id));
            if out.len() >= limit {
                break;
            }
        }
        Ok((out, future))
    }

    /// Hands due jobs of push queues to the cores, within each queue's `max_workers` and
    /// throttle. Reads only; leases are memory.
    pub fn feed(&mut self) {
        let now = self.clock.now_ms();
        let env = self.env.clone();
        let rtxn = match env.read_txn() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "Store read failed.");
                return;
            }
        };
        let qids: Vec<u32> = self.queues.keys().copied().collect();
        for qid in qids {
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            // Set again below only if this scan stops at a future job.
            q.next_due = None;
            let Some(def) = q.def.clone() else { continue };
            if def.mode != QueueMode::Push || def.paused || q.count == 0 {
                continue;
            }
            let mut room = def.max_workers.saturating_sub(q.leased) as usize;
            if room == 0 {
                continue;
            }
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            if let Some(b) = &mut q.bucket {
                b.refill();
                room = room.min(b.tokens.floor() as usize);
                if room == 0 {
                    continue;
                }
            }
            let cursor = q.cursor;
            let (found, future) = match self.scan_due(&rtxn, qid, cursor, now, room) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "Store read failed.");
                    return;
                }
            };
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            q.next_due = if found.len() < room { future } else { None };
            if let Some((k, _)) = found.last() {
                q.cursor = Some(*k);
            }
            for (_, id) in found {
                let rec = match self.read_job(&rtxn, id) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(id, error = %e, "Cannot read a job; skipping it.");
                        continue;
                    }
                };
                self.dispatch(rec, &def, now);
            }
        }
        self.granted.clear();
    }

    fn dispatch(&mut self, rec: JobRecord, def: &QueueDef, now: u64) {
        let q = self
            .queues
            .get_mut(&rec.queue)
            .unwrap_or_else(|| unreachable!());
        let overrides = rec.url.is_some()
            || rec.timeout_ms.is_some()
            || rec.max_retries.is_some()
            || rec.retry_delay_ms.is_some();
        let target = if overrides {
            make_target(def, Some(&rec), self.max_retry_after)
        } else {
            q.target.clone()
        };
        let Some(target) = target else {
            // Its queue lost its URL after the job was accepted: nothing to deliver to.
            tracing::warn!(queue = %q.name, id = rec.id, "Job has no worker URL (the queue's url was removed); it waits.");
            return;
        };
        if let Some(b) = &mut q.bucket {
            b.tokens -= 1.0;
        }
        q.pops += 1;
        q.pop_rate.add(now, 1);
        self.lease_seq += 1;
        let token = self.lease_seq;
        let deadline_ms = due_after(
            now,
            target
                .timeout
                .saturating_add(Duration::from_millis(LEASE_GRACE_MS)),
        );
        let job = Job {
            id: rec.id,
            queue: q.name.clone(),
            payload: rec.payload.clone(),
            content_type: Arc::from(rec.content_type.as_str()),
            headers: Arc::from(Vec::new()),
            attempts: rec.attempts,
            enqueued_at: UNIX_EPOCH + Duration::from_millis(rec.created_ms),
            path: None,
        };
        self.grant(
            rec.id,
            Lease {
                qid: rec.queue,
                deadline_ms,
                token,
                pull: false,
                since_ms: now,
            },
        );
        let d = Dispatch {
            job,
            lease: token,
            target,
            due_ms: rec.due_ms,
            category: Arc::from(rec.category.as_str()),
        };
        match &self.out {
            Some(tx) => {
                if tx.try_send(d).is_err() {
                    // The cores are gone (shutdown): the job stays in the log for the next run.
                    self.unlease(rec.id);
                }
            }
            None => self.dispatched.push(d),
        }
    }

    /// Leases past their deadline end: the job is runnable again.
    pub fn expire_leases(&mut self) {
        let now = self.clock.now_ms();
        while let Some(&(deadline, id)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            if let Some(l) = self.unlease(id) {
                // The job's due key is behind the cursor: the next scan must start over.
                if let Some(q) = self.queues.get_mut(&l.qid) {
                    q.cursor = None;
                }
                tracing::warn!(
                    id,
                    pull = l.pull,
                    "Lease expired: the job is runnable again."
                );
            }
        }
    }

    /// When the loop must wake with no command: a deferred job due, a lease to expire, a
    /// throttle refilled.
    fn next_wake(&self) -> Option<Instant> {
        let now = self.clock.now_ms();
        let mut at: Option<u64> = self.expiry.first().map(|(d, _)| *d);
        let mut soon: Option<Duration> = None;
        for q in self.queues.values() {
            let Some(def) = &q.def else { continue };
            if def.mode != QueueMode::Push || def.paused || q.leased >= def.max_workers {
                continue;
            }
            if let Some(d) = q.next_due {
                at = Some(at.map_or(d, |a| a.min(d)));
            }
            if let Some(b) = &q.bucket {
                if q.count > q.leased as u64 && b.tokens < 1.0 {
                    let w = b.wait().max(Duration::from_millis(1));
                    soon = Some(soon.map_or(w, |s| s.min(w)));
                }
            }
        }
        // At most an hour ahead: the loop looks again then, so a far due time is never turned
        // into an `Instant` it cannot hold.
        let from_ms = at
            .map(|a| Instant::now() + Duration::from_millis(a.saturating_sub(now).min(3_600_000)));
        let from_soon = soon.map(|s| Instant::now() + s);
        match (from_ms, from_soon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn view(&self, rec: &JobRecord, grabbed: bool) -> JobView {
        let q = self.queues.get(&rec.queue);
        let name = q.map(|q| q.name.to_string()).unwrap_or_default();
        self.view_with(rec, grabbed, q.and_then(|q| q.def.as_ref()), &name)
    }

    fn view_with(
        &self,
        rec: &JobRecord,
        grabbed: bool,
        def: Option<&QueueDef>,
        name: &str,
    ) -> JobView {
        let lease = if grabbed {
            self.leases.get(&rec.id)
        } else {
            None
        };
        JobView {
            id: rec.id,
            queue_name: name.to_string(),
            category: rec.category.clone(),
            url: rec
                .url
                .clone()
                .or_else(|| def.and_then(|d| d.url.clone()))
                .unwrap_or_default(),
            status: if grabbed { "grabbed" } else { "claimed" },
            created_at: rfc3339(rec.created_ms),
            next_try: rfc3339(rec.due_ms),
            timeout: rec
                .timeout_ms
                .map_or_else(|| def.map_or(0, |d| d.timeout), |t| t / 1000),
            fail_count: rec.attempts,
            max_retries: rec
                .max_retries
                .unwrap_or_else(|| def.map_or(0, |d| d.max_retries)),
            retry_delay: rec.retry_delay_ms.map_or_else(
                || def.and_then(|d| d.retry_delay).unwrap_or(0),
                |d| d / 1000,
            ),
            payload: payload_value(&rec.payload),
            leased_at: lease.map(|l| rfc3339(l.since_ms)),
            pulled: lease.map(|l| l.pull),
            lease: None,
        }
    }

    /// A pull worker's ack or failure report: a token it sends must be the job's current lease
    /// (else 409: the lease expired and the job may be someone else's now); with
    /// `require_lease_token` it must send one (400).
    fn check_pull_lease(&self, qid: u32, id: u64, token: Option<u64>) -> Result<(), StoreError> {
        match token {
            Some(t) => match self.leases.get(&id) {
                Some(l) if l.token == t => Ok(()),
                Some(_) => Err(StoreError::Conflict(format!(
                    "stale lease for job {id}: its lease expired and it was handed out again"
                ))),
                None => Err(StoreError::Conflict(format!(
                    "stale lease for job {id}: its lease expired"
                ))),
            },
            None if self
                .queues
                .get(&qid)
                .and_then(|q| q.def.as_ref())
                .is_some_and(|d| d.require_lease_token) =>
            {
                Err(StoreError::BadRequest(format!(
                    "X-Reprow-Lease is required: the queue sets require_lease_token (job {id})"
                )))
            }
            None => Ok(()),
        }
    }

    /// How long job `id` has been leased, ms (0 when it is not).
    fn lease_age(&self, id: u64, now: u64) -> u64 {
        self.leases
            .get(&id)
            .map_or(0, |l| now.saturating_sub(l.since_ms))
    }

    fn failed_view(f: &FailedRecord, fid: u64, def: Option<&QueueDef>) -> FailedView {
        FailedView {
            id: fid,
            job_id: f.job.id,
            category: f.job.category.clone(),
            url: f
                .job
                .url
                .clone()
                .or_else(|| def.and_then(|d| d.url.clone()))
                .unwrap_or_default(),
            payload: payload_value(&f.job.payload),
            result: FailedResult {
                status: f.status.clone(),
                code: f.code.unwrap_or(0),
                message: f.message.clone(),
            },
            fail_count: f.job.attempts,
            failed_at: rfc3339(f.failed_ms),
            created_at: rfc3339(f.job.created_ms),
        }
    }

    fn stats_of(&mut self, qid: u32, rtxn: &RoTxn, now: u64) -> Result<QueueStats, StoreError> {
        // Deferred jobs are counted from the index (a range walk over the future part only).
        let lo = due_key(qid, now.saturating_add(1), 0);
        let hi = due_key(qid, u64::MAX, u64::MAX);
        let mut deferred = 0u64;
        for kv in self
            .due
            .range(rtxn, &(Bound::Included(&lo[..]), Bound::Included(&hi[..])))
            .map_err(db_err)?
        {
            let (k, _) = kv.map_err(db_err)?;
            if let Some((_, _, id)) = parse_due_key(k) {
                if !self.leases.contains_key(&id) {
                    deferred += 1;
                }
            }
        }
        let q = self
            .queues
            .get_mut(&qid)
            .ok_or_else(|| StoreError::NotFound("no queue".into()))?;
        let workers = q.def.as_ref().map_or(0, |d| u64::from(d.max_workers));
        let grabbed = u64::from(q.leased);
        Ok(QueueStats {
            total_pushes: q.pushes,
            total_pops: q.pops,
            total_successes: q.successes,
            total_failures: q.failures,
            total_permanent_failures: q.permanent_failures,
            total_completes: q.completes,
            total_elapsed: q.elapsed_ms,
            pushes_per_second: q.push_rate.per_second(now),
            pops_per_second: q.pop_rate.per_second(now),
            outstanding_jobs: q.count,
            total_workers: workers,
            idle_workers: workers.saturating_sub(grabbed),
            active_nodes: 1,
            waiting: q.count.saturating_sub(deferred + grabbed),
            deferred,
            grabbed,
            failed: q.failed,
            paused: q.def.as_ref().is_some_and(|d| d.paused),
            total_retries: q.retries,
            total_failed_jobs: q.failed_jobs,
        })
    }

    /// Answers a read-only query from a fresh read transaction.
    pub fn query(&mut self, q: Query) -> Result<Reply, StoreError> {
        let env = self.env.clone();
        let rtxn = env.read_txn().map_err(db_err)?;
        let now = self.clock.now_ms();
        match q {
            Query::Queues => Ok(Reply::Queues(
                self.queues
                    .values()
                    .filter_map(|q| q.def.clone())
                    .collect::<Vec<_>>(),
            )),
            Query::Queue(name) => {
                let qid = self.qid(&name)?;
                Ok(Reply::Queues(vec![self.def_of(qid)?.clone()]))
            }
            Query::Stats(one) => {
                let qids: Vec<(u32, String)> = match one {
                    Some(name) => vec![(self.qid(&name)?, name)],
                    None => self
                        .queues
                        .values()
                        .filter(|q| q.def.is_some())
                        .map(|q| (q.qid, q.name.to_string()))
                        .collect(),
                };
                let mut out = Vec::with_capacity(qids.len());
                for (qid, name) in qids {
                    out.push((name, self.stats_of(qid, &rtxn, now)?));
                }
                Ok(Reply::Stats(out))
            }
            Query::Jobs {
                queue,
                list,
                limit,
                cursor,
                desc,
            } => {
                let qid = self.qid(&queue)?;
                let limit = limit.clamp(1, 1000);
                if list == JobList::Grabbed {
                    let mut ids: Vec<u64> = self
                        .leases
                        .iter()
                        .filter(|(_, l)| l.qid == qid)
                        .map(|(id, _)| *id)
                        .collect();
                    ids.sort_unstable();
                    if desc {
                        ids.reverse();
                    }
                    let after = cursor.and_then(|c| c.try_into().ok().map(u64::from_be_bytes));
                    let ids: Vec<u64> = ids
                        .into_iter()
                        .filter(|id| after.is_none_or(|a| if desc { *id < a } else { *id > a }))
                        .take(limit)
                        .collect();
                    let mut out = Vec::with_capacity(ids.len());
                    for id in &ids {
                        if let Some(rec) = self.read_job(&rtxn, *id)? {
                            out.push(self.view(&rec, true));
                        }
                    }
                    let next = (ids.len() == limit).then(|| ids[limit - 1].to_be_bytes().to_vec());
                    return Ok(Reply::Jobs(out, next));
                }
                let (lo, hi) = match list {
                    JobList::Waiting => (due_key(qid, 0, 0), due_key(qid, now, u64::MAX)),
                    _ => (
                        due_key(qid, now.saturating_add(1), 0),
                        due_key(qid, u64::MAX, u64::MAX),
                    ),
                };
                let cur: Option<[u8; 20]> = match cursor {
                    Some(c) => Some(
                        c.try_into()
                            .map_err(|_| StoreError::BadRequest("cursor is not valid".into()))?,
                    ),
                    None => None,
                };
                let iter = walk(
                    self.due,
                    &rtxn,
                    &lo,
                    &hi,
                    cur.as_ref().map(|c| &c[..]),
                    desc,
                )?;
                let mut out = Vec::new();
                let mut last = None;
                for kv in iter {
                    let (k, _) = kv.map_err(db_err)?;
                    let Some((_, _, id)) = parse_due_key(k) else {
                        continue;
                    };
                    last = Some(k.to_vec());
                    if self.leases.contains_key(&id) {
                        continue;
                    }
                    if let Some(rec) = self.read_job(&rtxn, id)? {
                        out.push(self.view(&rec, false));
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                let next = if out.len() >= limit { last } else { None };
                Ok(Reply::Jobs(out, next))
            }
            Query::Job { queue, id } => {
                let qid = self.qid(&queue)?;
                let rec = self
                    .read_job(&rtxn, id)?
                    .filter(|r| r.queue == qid)
                    .ok_or_else(|| no_job(id))?;
                Ok(Reply::Job(Box::new(
                    self.view(&rec, self.leases.contains_key(&id)),
                )))
            }
            Query::Failed {
                queue,
                limit,
                cursor,
                desc,
            } => {
                let qid = self.qid(&queue)?;
                let limit = limit.clamp(1, 1000);
                let (lo, hi) = (failed_key(qid, 0), failed_key(qid, u64::MAX));
                let c = cursor.map(|c| failed_key(qid, c));
                let iter = walk(
                    self.failed,
                    &rtxn,
                    &lo,
                    &hi,
                    c.as_ref().map(|c| &c[..]),
                    desc,
                )?;
                let def = self.def_of(qid)?.clone();
                let mut out = Vec::new();
                for kv in iter.take(limit) {
                    let (k, v) = kv.map_err(db_err)?;
                    let fid = u64::from_be_bytes(k[4..12].try_into().map_err(corrupt)?);
                    let f = FailedRecord::decode(v).map_err(corrupt)?;
                    out.push(Self::failed_view(&f, fid, Some(&def)));
                }
                let next = (out.len() == limit).then(|| out[limit - 1].id);
                Ok(Reply::FailedPage(out, next))
            }
            Query::FailedEntry { queue, id } => {
                let qid = self.qid(&queue)?;
                let def = self.def_of(qid)?.clone();
                match self
                    .failed
                    .get(&rtxn, &failed_key(qid, id))
                    .map_err(db_err)?
                {
                    Some(v) => {
                        let f = FailedRecord::decode(v).map_err(corrupt)?;
                        Ok(Reply::Failed(Box::new(Self::failed_view(
                            &f,
                            id,
                            Some(&def),
                        ))))
                    }
                    None => Err(no_failed(id)),
                }
            }
            Query::InFlight { limit } => {
                let mut leased: Vec<(u64, u64)> = self
                    .leases
                    .iter()
                    .map(|(id, l)| (l.since_ms, *id))
                    .collect();
                leased.sort_unstable();
                let mut out = Vec::with_capacity(leased.len().min(limit));
                for (_, id) in leased.into_iter().take(limit) {
                    if let Some(rec) = self.read_job(&rtxn, id)? {
                        out.push(self.view(&rec, true));
                    }
                }
                Ok(Reply::Jobs(out, None))
            }
            Query::Routings => Ok(Reply::Routings(
                self.routings
                    .iter()
                    .map(|(c, q)| (c.clone(), q.clone()))
                    .collect(),
            )),
            Query::Routing(c) => match self.routings.get(&c) {
                Some(q) => Ok(Reply::Routings(vec![(c, q.clone())])),
                None => Err(StoreError::NotFound(format!(
                    "no routing for category {c:?}"
                ))),
            },
        }
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Jobs leased now (tests).
    pub fn leased(&self) -> usize {
        self.leases.len()
    }
}

/// A pull worker's completion line, held until the commit (see [`crate::telemetry::completion`]
/// for the fields).
struct PullLog {
    action: &'static str,
    status: &'static str,
    queue: String,
    category: String,
    id: u64,
    elapsed: u64,
    retry_count: u32,
    retry_delay: Option<u64>,
    message: Option<String>,
}

impl PullLog {
    /// The line for the pulled job `rec` of `queue`, leased `elapsed` ms ago.
    fn new(
        action: &'static str,
        status: &'static str,
        queue: &str,
        rec: &JobRecord,
        elapsed: u64,
        message: Option<String>,
    ) -> PullLog {
        PullLog {
            action,
            status,
            queue: queue.to_string(),
            category: rec.category.clone(),
            id: rec.id,
            elapsed,
            retry_count: rec.attempts,
            retry_delay: None,
            message,
        }
    }

    fn emit(self) {
        let PullLog {
            action,
            status,
            queue,
            category,
            id,
            elapsed,
            retry_count,
            retry_delay,
            message,
        } = self;
        let message = message.as_deref().unwrap_or("Job done.");
        if action == "fail" {
            tracing::warn!(target: crate::telemetry::completion::TARGET, action, queue, category, id, status, elapsed, retry_count, pulled = true, "{message}");
        } else {
            tracing::info!(target: crate::telemetry::completion::TARGET, action, queue, category, id, status, elapsed, retry_count, retry_delay, pulled = true, "{message}");
        }
    }
}

/// A change to memory that an op's nested transaction made true on disk.
enum Effect {
    None,
    Enqueued {
        recs: Vec<JobRecord>,
        new_queues: Vec<(u32, String, QueueDef)>,
    },
    /// Left the queue; `done` carries the worker time when it succeeded.
    Removed {
        rec: JobRecord,
        done: Option<u64>,
    },
    Retried {
        rec: JobRecord,
    },
    Released {
        id: u64,
        rec: Option<JobRecord>,
    },
    Failed {
        rec: JobRecord,
        permanent: bool,
    },
    Pulled {
        qid: u32,
        leases: Vec<(u64, Lease)>,
        forgotten: usize,
    },
    Purged {
        qid: u32,
        recs: Vec<JobRecord>,
    },
    Defined {
        qid: u32,
        def: Option<QueueDef>,
    },
    Routing(String, Option<String>),
    FailedRemoved {
        qid: u32,
    },
    Requeued {
        rec: JobRecord,
    },
}

/// A job that became runnable before the queue's cursor must be found by the next scan.
fn below_cursor(q: &mut QState, rec: &JobRecord) {
    if let Some(c) = q.cursor {
        if due_key(rec.queue, rec.due_ms, rec.id) <= c {
            q.cursor = None;
        }
    }
    q.next_due = Some(q.next_due.map_or(rec.due_ms, |d| d.min(rec.due_ms)));
}

/// Walks `lo..=hi` of `db` forward, or backward when `desc`, resuming after `cursor` (which
/// the previous page ended on).
fn walk<'t>(
    db: Db,
    rtxn: &'t RoTxn,
    lo: &'t [u8],
    hi: &'t [u8],
    cursor: Option<&'t [u8]>,
    desc: bool,
) -> Result<KvIter<'t>, StoreError> {
    let (mut lower, mut upper) = (Bound::Included(lo), Bound::Included(hi));
    if let Some(c) = cursor {
        if desc {
            upper = Bound::Excluded(c);
        } else {
            lower = Bound::Excluded(c);
        }
    }
    let range = (lower, upper);
    Ok(if desc {
        Box::new(db.rev_range(rtxn, &range).map_err(db_err)?)
    } else {
        Box::new(db.range(rtxn, &range).map_err(db_err)?)
    })
}

fn counts_key(qid: u32) -> [u8; 6] {
    let mut k = [b'c', b':', 0, 0, 0, 0];
    k[2..].copy_from_slice(&qid.to_be_bytes());
    k
}

fn no_job(id: u64) -> StoreError {
    StoreError::NotFound(format!("no job {id} in this queue"))
}

fn no_failed(id: u64) -> StoreError {
    StoreError::NotFound(format!("no failed job {id} in this queue"))
}

fn label(op: &Op) -> String {
    match op {
        Op::PutQueue(d) => format!("queues.{}", d.name),
        Op::PutRouting { category, .. } => format!("routings.{category}"),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_past_year_9999_format_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(MAX_TIME_MS), "9999-12-31T23:59:59.999Z");
        // Written by an older version (`retry_delay * 1000` in the year ~33,700, or wrapped).
        assert_eq!(rfc3339(1_000_000_000_000_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_full_disk_is_507_not_503() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(errno)));
            assert!(matches!(e, StoreError::Full(_)), "{errno}: {e:?}");
            assert!(matches!(not_committed(&e), StoreError::Full(_)), "{errno}");
        }
        let e = db_err(heed::Error::Mdb(heed::MdbError::MapFull));
        assert!(matches!(not_committed(&e), StoreError::Full(_)));
        let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(
            libc::EIO,
        )));
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert!(matches!(not_committed(&e), StoreError::Unavailable(_)));
    }

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
