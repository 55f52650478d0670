//! Opening the store: how to open it ([`Options`]), the directory lock, the databases, and the
//! config's queues and routings applied at start.
//!
//! # Invariants
//! - One reprow per data directory: an exclusive `flock` is held for the engine's life.
//! - Stale LMDB reader slots (of a process that died) are cleared before anything is read.
//! - The config's queues, routings and the default queue go in one commit; a queue stopped by
//!   `/control` stays stopped across a restart.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use heed::{types::Bytes as Raw, CommitOrAbort};

use super::{clock::Clock, durable::EPOCH_KEY, state::RetryBounds, Db, Engine};
use crate::store::wal::Wal;
use crate::store::{queue::QueueDef, Op, OpenError};

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
    /// What `runner:` sets: the default queue's worker and the retry bounds of every queue.
    pub defaults: Defaults,
    /// Time source.
    pub clock: Clock,
    /// Most queues with a definition (`queue.max_queues`): creating one more is refused.
    pub max_queues: usize,
    /// Test hook: when it returns true the batch's commit is abandoned as if it failed.
    pub fail_commit: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

/// What `runner:` means to the durable queue. `url`, `timeout`, `max_retries` and
/// `retry_delay` define the default queue when it is created (a queue defined under `queues:`
/// or through the API has its own); the backoff bounds and `max_retry_after` apply to every
/// queue; `concurrency` caps the pushed jobs in flight over all queues. The defaults are the
/// runner's own ([`crate::dispatch::config`]), except `timeout` and `max_retries`: without
/// `runner:` the default queue sets neither, so fireworq's jobs on it get fireworq's defaults
/// (no timeout, no retries) and other jobs the runner's (30 s, 10).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The default queue's worker URL.
    pub url: Option<String>,
    /// The default queue's request timeout; `None` (no `runner:`): the queue sets none, so
    /// fireworq's jobs get fireworq's (no timeout) and others 30 s.
    pub timeout: Option<Duration>,
    /// The default queue's retries; `None` (no `runner:`): as `timeout`.
    pub max_retries: Option<u32>,
    /// The default queue's fixed retry delay; `None`: backoff.
    pub retry_delay: Option<Duration>,
    /// Retry bounds of every queue.
    pub retry: RetryBounds,
    /// Most pushed jobs in flight over all queues; `None`: only each queue's `max_workers`.
    pub concurrency: Option<usize>,
}

impl Default for Defaults {
    fn default() -> Defaults {
        use crate::dispatch::config as runner;
        Defaults {
            url: None,
            timeout: None,
            max_retries: None,
            retry_delay: None,
            retry: RetryBounds {
                backoff_base: runner::default_backoff_base(),
                backoff_max: runner::default_backoff_max(),
                max_retry_after: runner::default_max_retry_after(),
            },
            concurrency: None,
        }
    }
}

impl Defaults {
    /// The retry bounds every queue gets.
    pub fn retry_bounds(&self) -> RetryBounds {
        self.retry
    }
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

/// A store written before the `counters` database kept its id counters and per-queue counts
/// in `meta`: they move to `counters` (once: only while `counters` is empty), so a commit does
/// not rewrite pages of the database that holds every queue's definition.
fn move_counters(wtxn: &mut heed::RwTxn, meta: Db, counters: Db) -> heed::Result<()> {
    if !counters.is_empty(wtxn)? {
        return Ok(());
    }
    let mut moved: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for k in [&b"next_id"[..], b"next_fid", b"next_qid"] {
        if let Some(v) = meta.get(wtxn, k)? {
            moved.push((k.to_vec(), v.to_vec()));
        }
    }
    for kv in meta.prefix_iter(wtxn, b"c:")? {
        let (k, v) = kv?;
        moved.push((k.to_vec(), v.to_vec()));
    }
    for (k, v) in moved {
        counters.put(wtxn, &k, &v)?;
        meta.delete(wtxn, &k)?;
    }
    Ok(())
}

impl Engine {
    /// Opens the environment, clears stale reader slots, loads definitions and counts, and
    /// applies the config's queues and routings.
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open(
        opts: Options,
        out: Option<crate::bridge::DeliverySender>,
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
        let env = crate::store::env::open(&path, opts.map_size, opts.no_sync).map_err(lmdb_err)?;
        let cleared = env.clear_stale_readers().map_err(lmdb_err)?;
        if cleared > 0 {
            tracing::info!(cleared, "Cleared stale LMDB reader slots.");
        }
        let wtxn = env.write_txn().map_err(lmdb_err)?;
        let [jobs, due, failed, uniq, meta, counters, order, idem]: [Db; 8] = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let mut db = |name| dbo.create_database::<Raw, Raw>(wtxn, Some(name));
                Ok(CommitOrAbort::<_, ()>::Commit([
                    db("jobs")?,
                    db("due")?,
                    db("failed")?,
                    db("uniq")?,
                    db("meta")?,
                    db("counters")?,
                    db("order")?,
                    db("idem")?,
                ]))
            })
            .map_err(lmdb_err)?
            .unwrap_commit();
        let mut wtxn = env.write_txn().map_err(lmdb_err)?;
        move_counters(&mut wtxn, meta, counters).map_err(lmdb_err)?;
        wtxn.commit().map_err(lmdb_err)?;
        let map_size = env.info().map_size;
        let stored = {
            let rtxn = env.read_txn().map_err(lmdb_err)?;
            counters
                .get(&rtxn, EPOCH_KEY)
                .map_err(lmdb_err)?
                .and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
                .unwrap_or(0)
        };
        let (wal, frames) =
            Wal::open(&path, stored + 1, !opts.no_sync).map_err(|source| OpenError::Dir {
                path: path.join(crate::store::wal::FILE),
                source,
            })?;
        let mut engine = Engine {
            env,
            jobs,
            due,
            failed,
            uniq,
            meta,
            counters,
            order,
            unparked: std::cell::RefCell::default(),
            idem,
            batch_keys: std::collections::HashSet::new(),
            _lock: lock,
            map_size,
            reserve: (map_size / 10).max(256 * 1024),
            clock: opts.clock.clone(),
            fail_commit: opts.fail_commit.clone(),
            retry: opts.defaults.retry_bounds(),
            push_cap: opts.defaults.concurrency.unwrap_or(usize::MAX),
            push_leased: 0,
            metrics: Arc::default(),
            op_log: None,
            batch_logs: Vec::new(),
            queues: BTreeMap::new(),
            by_name: HashMap::new(),
            defined: 0,
            max_queues: opts.max_queues,
            wakes: BTreeSet::new(),
            throttled: BTreeSet::new(),
            visits: std::cell::Cell::new(0),
            routings: BTreeMap::new(),
            default_queue: opts.default_queue.clone(),
            leases: HashMap::new(),
            expiry: BTreeSet::new(),
            lease_expiries: HashMap::new(),
            next_id: 1,
            next_fid: 1,
            next_qid: 1,
            // Lease tokens start from the clock (x1000) so a token from before a restart is
            // not handed out again after it: a stale ack stays stale.
            lease_seq: opts.clock.now_ms().saturating_mul(1000),
            granted: Vec::new(),
            released: Vec::new(),
            totals_before: Vec::new(),
            dirty: BTreeSet::new(),
            in_batch: false,
            out,
            dispatched: Vec::new(),
            outbox: Vec::new(),
            redo: std::cell::RefCell::new(crate::store::wal::record::Redo::with_limit(
                crate::store::wal::MAX_FRAME,
            )),
            wal,
        };
        let corrupt = |e: crate::store::StoreError| OpenError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        };
        engine.recover(&frames).map_err(corrupt)?;
        let env = engine.env.clone();
        let rtxn = env.read_txn().map_err(lmdb_err)?;
        engine.load(&rtxn).map_err(corrupt)?;
        drop(rtxn);
        // The config's queues and routings, and the default queue, in one commit.
        let mut ops: Vec<Op> = Vec::new();
        let mut defs = opts.queues.clone();
        let stored_default = engine
            .by_name
            .get(&opts.default_queue)
            .and_then(|q| engine.queues[q].def.as_ref());
        let in_config = defs.iter().any(|d| d.name == opts.default_queue);
        // The default queue defined under `queues:` without a url of its own takes
        // `runner.url` too: the runner names "the default queue's worker" wherever it is made.
        for d in &mut defs {
            if d.name == opts.default_queue && d.url.is_none() {
                d.url.clone_from(&opts.defaults.url);
            }
        }
        // `runner.url` (`reprow serve --worker`) names the default queue's worker at every
        // start: a directory whose first run had no worker gets the one named now. The queue's
        // other settings stay as they were made (`PUT /queue` may have changed them).
        if let Some(def) = stored_default
            .filter(|d| !in_config && opts.defaults.url.is_some() && d.url != opts.defaults.url)
        {
            let mut d = def.clone();
            d.url.clone_from(&opts.defaults.url);
            defs.push(d);
        }
        if !in_config && stored_default.is_none() {
            let mut d = QueueDef::named(&opts.default_queue);
            let defaults = &opts.defaults;
            d.url = defaults.url.clone();
            // Whole seconds, as a queue stores them; a sub-second runner.timeout rounds up.
            d.timeout = defaults
                .timeout
                .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
            d.max_retries = defaults.max_retries;
            d.retry_delay = defaults
                .retry_delay
                .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
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
                return Err(OpenError::Config {
                    what: op.to_string(),
                    source: e,
                });
            }
        }
        tracing::info!(
            path = %path.display(),
            map_size,
            queues = engine.defined,
            jobs = engine.queues.values().map(|q| q.count).sum::<u64>(),
            "Store opened."
        );
        Ok(engine)
    }
}
