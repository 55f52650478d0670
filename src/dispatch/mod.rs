//! The dispatcher: one per core, for every source. It takes [`Delivery`]s from the bridge,
//! delivers each to the worker its [`Target`](crate::job::target::Target) names through the
//! core's client for that URL, reads the answer as the target says, and settles the job with
//! the source: done, retry (the source stores the delay, or the dispatcher holds the job),
//! failed, or released when the worker refused the connection.
//!
//! How many jobs a core runs at once: with `slots` (FIFO, SQS, Q4M: the core's share of
//! `runner.concurrency`) that many worker tasks each take one job at a time; without (the
//! store, which bounds what it hands out by leases and per-queue `max_workers`, and must never
//! leave a leased job waiting) every delivery gets a task as it arrives.
//!
//! The core's pump task moves each batch that arrives in the core's inbox to its `ready`
//! queue; worker tasks take jobs from there, so only the pump is woken from another thread.
//!
//! Invariant: a job taken from the inbox is, at every moment, in exactly one of: a task's hands
//! (`in_flight`), `sleeping` (waiting for a retry), the core's `ready` queue, or settled. That is
//! what lets shutdown account for every job; what is still in the inbox at shutdown the
//! orchestrator hands back when it closes the bridge.
//!
//! # Layout
//! - [`pools`], clients per worker URL, breaker and reachability per origin.
//! - [`breaker`], the per-origin circuit breaker.
//! - [`client`], the worker client: one per core and worker URL, its keep-alive pool.
//! - [`config`], the `runner:` section and its defaults.
//! - [`origin_limits`], limits per worker origin (`workers:`), shared by the cores; `admit`,
//!   a job's wait for them.

//! - [`signing`], Standard Webhooks signatures; [`envelope`], what a delivery adds to the job
//!   it sends (signature headers, the CloudEvent).

mod admit;
pub mod breaker;
pub mod client;
pub mod config;
pub mod origin_limits;

pub mod envelope;
pub mod pools;
pub mod signing;

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    bridge::{CoreInbox, Delivery, Settle},
    job::{classify, Failure, Outcome},
    lifecycle::Shutdown,
    stats::{CoreStats, Stats},
    telemetry::completion_line::{self as completion, Completion},
};
use client::ClientError;
use pools::{ClientLimits, Pool, Pools};

/// How long a source that takes a refused job back (the store) waits before handing it out
/// again.
const REFUSED_DELAY: Duration = Duration::from_secs(1);

/// A delivery that failed in transport (timeout, malformed answer, broken connection) is
/// counted and retried.
pub fn transport_outcome(stats: &CoreStats, e: &ClientError) -> Outcome {
    match e {
        ClientError::Timeout(_) => stats.timeouts.inc(),
        ClientError::Malformed(_) => stats.malformed_responses.inc(),
        ClientError::Connect { .. } => stats.connect_errors.inc(),
        ClientError::Io(_) => {}
    }
    Outcome::Retry {
        after: None,
        reason: Failure::transport(e.to_string()),
    }
}

/// What a core's dispatcher is built from.
pub struct DispatchConfig {
    /// Core index, for logs.
    pub core: usize,
    /// Worker tasks on this core; `None`: a task per delivery (the store).
    pub slots: Option<usize>,
    /// Limits every client shares.
    pub limits: ClientLimits,
    /// A job whose worker has refused connections this long fails (`runner.max_unreachable`);
    /// `None`: it waits (sources that hold jobs while the breaker is open).
    pub max_unreachable: Option<Duration>,
    /// How long in-flight requests may finish after shutdown starts.
    pub grace: Duration,
    /// Which deliveries are signed, and with which keys.
    pub signing: Arc<signing::Signing>,
}

/// Everything one core's dispatcher needs. Core-local: `Rc`/`RefCell`, no locks.
pub struct CoreDispatcher {
    config: DispatchConfig,
    /// This core's end of the bridge.
    inbox: CoreInbox,
    /// Jobs on this core waiting for a task, each marked `true` when it came from the inbox
    /// (taking it makes room there): the inbox's batches, retries come due, jobs held while
    /// their worker refused.
    ready_tx: async_channel::Sender<(Delivery, bool)>,
    ready_rx: async_channel::Receiver<(Delivery, bool)>,
    settle: Arc<dyn Settle>,
    pools: Pools,
    stats: Arc<Stats>,
    /// This core's counters, histograms and board: all a delivery writes.
    core_stats: Arc<CoreStats>,
    shutdown: Shutdown,
    in_flight: RefCell<HashMap<u64, Delivery>>,
    sleeping: RefCell<HashMap<u64, Delivery>>,
}

impl CoreDispatcher {
    /// A dispatcher for one core.
    pub fn new(
        config: DispatchConfig,
        inbox: CoreInbox,
        settle: Arc<dyn Settle>,
        stats: Arc<Stats>,
        shutdown: Shutdown,
    ) -> Rc<CoreDispatcher> {
        let (ready_tx, ready_rx) = async_channel::unbounded();
        Rc::new(CoreDispatcher {
            pools: Pools::new(config.limits.clone(), stats.clone()),
            config,
            inbox,
            ready_tx,
            ready_rx,
            settle,
            core_stats: stats.register_core(),
            stats,
            shutdown,
            in_flight: RefCell::new(HashMap::new()),
            sleeping: RefCell::new(HashMap::new()),
        })
    }

    /// Delivers until shutdown, lets in-flight requests finish within the grace period, then
    /// hands every job this core still holds back to the source as unfinished.
    pub async fn run(self: Rc<Self>) {
        // Every task holds a clone of `alive`; when the last one ends, `all_done` closes. That
        // is how the drain below waits for the tasks without polling.
        let (alive, all_done) = async_channel::bounded::<()>(1);
        match self.config.slots {
            Some(slots) => {
                for _ in 0..slots {
                    let (this, alive) = (self.clone(), alive.clone());
                    monoio::spawn(async move {
                        this.worker_loop().await;
                        drop(alive);
                    });
                }
            }
            None => {
                let (this, alive) = (self.clone(), alive.clone());
                monoio::spawn(async move { this.spawn_loop(alive).await });
            }
        }
        drop(alive);
        let pump = {
            let this = self.clone();
            monoio::spawn(async move { this.pump().await })
        };
        self.shutdown.wait().await;
        pump.await;
        let _ = monoio::time::timeout(self.config.grace, all_done.recv()).await;
        let left_in_flight = self.in_flight.borrow().len();
        if left_in_flight > 0 {
            tracing::warn!(
                core = self.config.core,
                jobs = left_in_flight,
                "Shutdown timeout: handing back jobs still in flight; they may run twice."
            );
        }
        let mut leftovers: Vec<Delivery> = self
            .in_flight
            .borrow_mut()
            .drain()
            .map(|(_, d)| d)
            .collect();
        leftovers.extend(self.sleeping.borrow_mut().drain().map(|(_, d)| d));
        while let Ok((d, _)) = self.ready_rx.try_recv() {
            leftovers.push(d);
        }
        // Jobs that reached the inbox after the pump stopped stay there: the orchestrator
        // hands them back when it closes the bridge.
        for d in leftovers {
            self.settle.unfinished(d);
        }
    }

    /// Moves the inbox's jobs to the ready queue, a batch per wake-up, until shutdown. The
    /// only task of the core that waits on the bridge: one cross-thread wake-up per batch.
    async fn pump(&self) {
        loop {
            self.inbox.take_all(|d| {
                if let Err(e) = self.ready_tx.try_send((d, true)) {
                    // The ready channel is unbounded and open while `self` lives.
                    self.settle.unfinished(e.into_inner().0);
                }
            });
            if self.shutdown.is_triggered() {
                return;
            }
            // `arrived` looks at the inbox again after it starts listening: a job sent since
            // the `take_all` above ends the wait at once.
            monoio::select! {
                _ = self.inbox.arrived() => {}
                _ = self.shutdown.wait() => return,
            }
        }
    }

    /// The next job on this core, in the order it became ready. `None` at shutdown.
    async fn take(&self) -> Option<Delivery> {
        if self.shutdown.is_triggered() {
            return None;
        }
        let (d, fresh) = match self.ready_rx.try_recv() {
            Ok(r) => r,
            Err(_) => monoio::select! {
                r = self.ready_rx.recv() => r.ok()?,
                _ = self.shutdown.wait() => return None,
            },
        };
        if fresh {
            self.inbox.taken();
        }
        Some(d)
    }

    async fn worker_loop(self: Rc<Self>) {
        while let Some(d) = self.take().await {
            self.deliver(d).await;
        }
    }

    async fn spawn_loop(self: Rc<Self>, alive: async_channel::Sender<()>) {
        while let Some(d) = self.take().await {
            let (this, alive) = (self.clone(), alive.clone());
            monoio::spawn(async move {
                this.deliver(d).await;
                drop(alive);
            });
        }
    }

    async fn deliver(self: &Rc<Self>, mut d: Delivery) {
        let pool = match self.pools.get(&d.target) {
            Ok(p) => p,
            Err(unresolved) => {
                d.job.attempts += 1;
                let outcome = Outcome::Retry {
                    after: None,
                    reason: Failure::transport(unresolved.to_string()),
                };
                self.settle_outcome(d, outcome, 0);
                return;
            }
        };
        if pool.origin.breaker.is_open() {
            // Its worker refuses connections: past max_unreachable the job fails; else a
            // source that can take the job back does, and otherwise it waits here, on this
            // core, until the probe finds the worker again.
            if let Some(failure) = self.unreachable_too_long(&pool, None) {
                self.fail(&d, failure, false, 0);
                return;
            }
            let Some(back) = self.settle.release(d, REFUSED_DELAY) else {
                return;
            };
            self.in_flight
                .borrow_mut()
                .insert(back.job.id, back.clone());
            pool.origin.breaker.wait_closed(&self.shutdown).await;
            d = match self.in_flight.borrow_mut().remove(&back.job.id) {
                Some(d) => d,
                // Shutdown's drain took it.
                None => return,
            };
            if self.shutdown.is_triggered() {
                self.settle.unfinished(d);
                return;
            }
        }
        // The origin's limits (`workers:`): the job waits here, costing no attempt.
        let limit = pool.origin.limit.clone();
        let (mut d, permit) = match &limit {
            None => (d, None),
            Some(l) => match self.admit(l, d).await {
                Some((d, permit, turn)) => (d, Some((permit, turn))),
                None => return,
            },
        };
        d.job.attempts += 1;
        self.in_flight.borrow_mut().insert(d.job.id, d.clone());
        self.core_stats.board.start(&d.job);
        self.core_stats.dispatched.inc();
        self.core_stats.in_flight.add(1);
        // Signature and CloudEvent, when the queue or runner asks for them; `None` (nearly
        // always) sends the job as it is, at no cost.
        let wrapped = envelope::outgoing(
            &d,
            self.config.signing.for_queue(&d.job.queue),
            std::time::SystemTime::now,
        );
        let sent = wrapped.as_ref().unwrap_or(&d.job);
        let started = Instant::now();
        let result = pool
            .client
            .send_within(sent, d.target.timeout, || {
                self.core_stats.stale_connection_retries.inc()
            })
            .await;
        if let (Some(l), Some((permit, turn)), Ok(resp)) = (&limit, permit, &result) {
            drop(permit);
            if origin_limits::slows_down(resp.head.status, resp.head.retry_after.is_some()) {
                l.slow_down(turn, Instant::now());
            }
        }
        self.core_stats.in_flight.add(-1);
        self.core_stats.board.end(d.job.id);
        if self.in_flight.borrow_mut().remove(&d.job.id).is_none() {
            // Shutdown's drain handed the job back already.
            return;
        }
        let elapsed = started.elapsed();
        let outcome = match result {
            Ok(resp) => {
                let after = resp
                    .head
                    .retry_after
                    .map(|r| r.delay_from(std::time::SystemTime::now()));
                classify(d.target.outcome, resp.head.status, after, &resp.body)
            }
            Err(e) if e.is_refused() => {
                self.refused(d, &pool, &e.to_string());
                return;
            }
            Err(e) => transport_outcome(&self.core_stats, &e),
        };
        if pool.origin.down.load(std::sync::atomic::Ordering::Acquire) {
            self.stats.reachability.answered(pool.client.authority());
        }
        let metrics = self.core_stats.metrics.queue(&d.job.queue);
        metrics.worker_seconds.observe_duration(elapsed);
        if outcome == Outcome::Done {
            metrics
                .enqueue_to_done_seconds
                .observe_duration(d.job.enqueued_at.elapsed().unwrap_or_default());
        }
        self.settle_outcome(d, outcome, elapsed.as_millis() as u64);
    }

    /// Nobody listens: the worker never saw the job, so the attempt does not count. The
    /// origin's breaker opens; the job goes back to a source that can hold it, or waits on this
    /// core; past `max_unreachable` it fails.
    fn refused(self: &Rc<Self>, mut d: Delivery, pool: &Pool, error: &str) {
        self.core_stats.connect_errors.inc();
        d.job.attempts -= 1;
        let down_for = self
            .stats
            .reachability
            .refused(pool.client.authority(), error);
        pool.origin
            .breaker
            .trip(pool.client.addrs().to_vec(), self.shutdown.clone());
        if let Some(failure) = self.unreachable_too_long(pool, Some((down_for, error))) {
            self.fail(&d, failure, false, 0);
            return;
        }
        let delay = if self.shutdown.is_triggered() {
            Duration::ZERO
        } else {
            REFUSED_DELAY
        };
        let Some(d) = self.settle.release(d, delay) else {
            return;
        };
        if self.shutdown.is_triggered() {
            self.settle.unfinished(d);
        } else if let Err(e) = self.ready_tx.try_send((d, false)) {
            self.settle.unfinished(e.into_inner().0);
        }
    }

    /// The failure of a job whose worker origin has refused connections for longer than
    /// `max_unreachable`, if it has; `refusal` is this attempt's (how long down, the error).
    fn unreachable_too_long(
        &self,
        pool: &Pool,
        refusal: Option<(Duration, &str)>,
    ) -> Option<Failure> {
        let limit = self.config.max_unreachable?;
        let origin = pool.client.authority();
        let (down_for, error) = match refusal {
            Some((d, e)) => (d, e.to_string()),
            None => self.stats.reachability.down_for(origin)?,
        };
        (down_for >= limit).then(|| {
            Failure::transport(format!(
                "worker {origin} unreachable for {}s (runner.max_unreachable): {error}",
                down_for.as_secs()
            ))
        })
    }

    /// The job failed for good: counted, logged, and settled as failed.
    fn fail(&self, d: &Delivery, failure: Failure, permanent: bool, elapsed_ms: u64) {
        self.core_stats.failed.inc();
        let how = Completion::Failed {
            failure: &failure,
            permanent,
        };
        completion::log(&d.job, &d.category, how, elapsed_ms);
        self.settle.failed(d, &failure, permanent, elapsed_ms);
    }

    fn settle_outcome(self: &Rc<Self>, d: Delivery, outcome: Outcome, elapsed_ms: u64) {
        match outcome {
            Outcome::Done => {
                self.core_stats.succeeded.inc();
                completion::log(&d.job, &d.category, Completion::Done, elapsed_ms);
                self.settle.done(&d, elapsed_ms);
            }
            Outcome::Fail(failure) => self.fail(&d, failure, true, elapsed_ms),
            Outcome::Retry { after, reason } => {
                let policy = &d.target.policy;
                if !policy.may_retry(d.job.attempts) {
                    let failure = Failure::exhausted(d.job.attempts, &reason);
                    self.fail(&d, failure, false, elapsed_ms);
                    return;
                }
                self.core_stats.retried.inc();
                let delay = policy.delay(d.job.attempts, after);
                let how = Completion::Retry {
                    delay,
                    failure: &reason,
                };
                completion::log(&d.job, &d.category, how, elapsed_ms);
                if let Some(d) = self.settle.retry(d, delay, &reason, elapsed_ms) {
                    self.hold_for_retry(d, delay);
                }
            }
        }
    }

    /// Keeps a job in memory until its retry is due, then queues it on this core.
    fn hold_for_retry(self: &Rc<Self>, d: Delivery, delay: Duration) {
        if self.shutdown.is_triggered() {
            self.settle.unfinished(d);
            return;
        }
        let id = d.job.id;
        self.sleeping.borrow_mut().insert(id, d);
        let this = self.clone();
        monoio::spawn(async move {
            monoio::select! {
                _ = monoio::time::sleep(delay) => {}
                // At shutdown the core's drain takes the job from `sleeping`.
                _ = this.shutdown.wait() => return,
            }
            let d = this.sleeping.borrow_mut().remove(&id);
            if let Some(d) = d {
                if let Err(e) = this.ready_tx.try_send((d, false)) {
                    this.settle.unfinished(e.into_inner().0);
                }
            }
        });
    }
}
