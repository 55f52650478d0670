//! The dispatcher: on each core, a fixed number of worker tasks (the core's share of
//! `concurrency`) take jobs, deliver them through the core's [`WorkerClient`], and settle them
//! by outcome. It owns every job between the source handing it over and the source settling it.
//!
//! Invariant: a job taken from a channel is, at every moment, in exactly one of: a task's hands
//! (`in_flight`), `sleeping` (waiting for a retry), the core's `ready` queue, or settled. That is
//! what lets shutdown account for every job.

pub mod breaker;
pub mod config;
pub mod durable;

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use crate::job::retry::RetryPolicy;
use crate::telemetry::completion::{self, Completion};
use crate::{
    bridge::JobReceiver,
    http::client::{ClientError, WorkerClient},
    job::{classify_status, Failure, Job, Outcome},
    lifecycle::Shutdown,
    source::Settle,
    stats::Stats,
};
use breaker::Breaker;

/// A delivery that failed in transport (timeout, malformed answer, broken connection) is
/// counted and retried.
pub fn transport_outcome(stats: &Stats, e: &ClientError) -> Outcome {
    match e {
        ClientError::Timeout(_) => Stats::inc(&stats.timeouts),
        ClientError::Malformed(_) => Stats::inc(&stats.malformed_responses),
        ClientError::Connect { .. } => Stats::inc(&stats.connect_errors),
        ClientError::Io(_) => {}
    }
    Outcome::Retry {
        after: None,
        reason: Failure::transport(e.to_string()),
    }
}

/// Everything one core's dispatcher needs. Core-local: `Rc`/`RefCell`, no locks.
pub struct CoreDispatcher {
    /// Core index, for logs.
    pub core: usize,
    shared: JobReceiver,
    ready_tx: async_channel::Sender<Job>,
    ready_rx: async_channel::Receiver<Job>,
    settle: Arc<dyn Settle>,
    client: WorkerClient,
    policy: RetryPolicy,
    stats: Arc<Stats>,
    breaker: Rc<Breaker>,
    shutdown: Shutdown,
    in_flight: RefCell<HashMap<u64, Job>>,
    sleeping: RefCell<HashMap<u64, Job>>,
    /// This core saw the worker refuse a connection and has not had an answer since.
    worker_down: std::cell::Cell<bool>,
}

impl CoreDispatcher {
    /// A dispatcher for one core.
    pub fn new(
        core: usize,
        shared: JobReceiver,
        settle: Arc<dyn Settle>,
        client: WorkerClient,
        policy: RetryPolicy,
        stats: Arc<Stats>,
        shutdown: Shutdown,
    ) -> Rc<CoreDispatcher> {
        let (ready_tx, ready_rx) = async_channel::unbounded();
        let breaker = Breaker::new(stats.clone());
        Rc::new(CoreDispatcher {
            core,
            shared,
            ready_tx,
            ready_rx,
            settle,
            client,
            policy,
            stats,
            breaker,
            shutdown,
            in_flight: RefCell::new(HashMap::new()),
            sleeping: RefCell::new(HashMap::new()),
            worker_down: std::cell::Cell::new(false),
        })
    }

    /// Runs `slots` worker tasks until shutdown, lets in-flight requests finish within
    /// `grace`, then hands every job this core still holds back to the source as unfinished.
    pub async fn run(self: Rc<Self>, slots: usize, grace: Duration) {
        let mut tasks = Vec::with_capacity(slots);
        for _ in 0..slots {
            let this = self.clone();
            tasks.push(monoio::spawn(async move { this.worker_loop().await }));
        }
        self.shutdown.wait().await;
        let deadline = Instant::now() + grace;
        for task in tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            if monoio::time::timeout(left, task).await.is_err() {
                break;
            }
        }
        let left_in_flight = self.in_flight.borrow().len();
        if left_in_flight > 0 {
            tracing::warn!(
                core = self.core,
                jobs = left_in_flight,
                "Shutdown timeout: saving jobs still in flight; they may run twice."
            );
        }
        let mut leftovers: Vec<Job> = self
            .in_flight
            .borrow_mut()
            .drain()
            .map(|(_, j)| j)
            .collect();
        leftovers.extend(self.sleeping.borrow_mut().drain().map(|(_, j)| j));
        while let Ok(job) = self.ready_rx.try_recv() {
            leftovers.push(job);
        }
        for job in leftovers {
            self.settle.unfinished(job);
        }
    }

    async fn worker_loop(self: Rc<Self>) {
        loop {
            if self.shutdown.is_triggered() {
                return;
            }
            self.breaker.wait_closed(&self.shutdown).await;
            if self.shutdown.is_triggered() {
                return;
            }
            // Jobs already on this core (retries due, breaker requeues) go first.
            let job = match self.ready_rx.try_recv() {
                Ok(job) => job,
                Err(_) => monoio::select! {
                    j = self.ready_rx.recv() => match j { Ok(j) => j, Err(_) => return },
                    j = self.shared.recv() => match j { Ok(j) => j, Err(_) => return },
                    _ = self.shutdown.wait() => return,
                },
            };
            self.deliver(job).await;
        }
    }

    async fn deliver(self: &Rc<Self>, mut job: Job) {
        job.attempts += 1;
        self.in_flight.borrow_mut().insert(job.id, job.clone());
        self.stats.board.start(&job);
        Stats::inc(&self.stats.dispatched);
        self.stats.in_flight.fetch_add(1, Relaxed);
        let started = Instant::now();
        let result = self
            .client
            .send(&job, || Stats::inc(&self.stats.stale_connection_retries))
            .await;
        self.stats.in_flight.fetch_sub(1, Relaxed);
        self.in_flight.borrow_mut().remove(&job.id);
        self.stats.board.end(job.id);
        let outcome = match result {
            Ok(resp) => {
                let after = resp
                    .head
                    .retry_after
                    .map(|r| r.delay_from(std::time::SystemTime::now()));
                classify_status(resp.head.status, after, &resp.body)
            }
            Err(e) if e.is_refused() => {
                // Nobody listens: the worker never saw the job, so the attempt does not count.
                Stats::inc(&self.stats.connect_errors);
                job.attempts -= 1;
                self.worker_down.set(true);
                self.stats
                    .reachability
                    .refused(self.client.authority(), &e.to_string());
                self.breaker
                    .trip(self.client.addrs().to_vec(), self.shutdown.clone());
                if self.shutdown.is_triggered() {
                    self.settle.unfinished(job);
                } else if let Err(e) = self.ready_tx.try_send(job) {
                    self.settle.unfinished(e.into_inner());
                }
                return;
            }
            Err(e) => transport_outcome(&self.stats, &e),
        };
        if self.worker_down.replace(false) {
            self.stats.reachability.answered(self.client.authority());
        }
        let elapsed = started.elapsed();
        let metrics = self.stats.metrics.queue(&job.queue);
        metrics.worker_seconds.observe_duration(elapsed);
        if outcome == Outcome::Done {
            metrics
                .enqueue_to_done_seconds
                .observe_duration(job.enqueued_at.elapsed().unwrap_or_default());
        }
        let elapsed_ms = elapsed.as_millis() as u64;
        self.settle_outcome(job, outcome, elapsed_ms);
    }

    fn settle_outcome(self: &Rc<Self>, job: Job, outcome: Outcome, elapsed_ms: u64) {
        match outcome {
            Outcome::Done => {
                Stats::inc(&self.stats.succeeded);
                completion::log(&job, &job.queue, Completion::Done, elapsed_ms);
                self.settle.done(&job);
            }
            Outcome::Fail(failure) => {
                Stats::inc(&self.stats.failed);
                let how = Completion::Failed {
                    failure: &failure,
                    permanent: true,
                };
                completion::log(&job, &job.queue, how, elapsed_ms);
                self.settle.failed(&job, &failure);
            }
            Outcome::Retry { after, reason } => {
                if !self.policy.may_retry(job.attempts) {
                    Stats::inc(&self.stats.failed);
                    let failure = Failure::exhausted(job.attempts, &reason);
                    let how = Completion::Failed {
                        failure: &failure,
                        permanent: false,
                    };
                    completion::log(&job, &job.queue, how, elapsed_ms);
                    self.settle.failed(&job, &failure);
                    return;
                }
                Stats::inc(&self.stats.retried);
                let delay = self.policy.delay(job.attempts, after);
                let how = Completion::Retry {
                    delay,
                    failure: &reason,
                };
                completion::log(&job, &job.queue, how, elapsed_ms);
                if let Some(job) = self.settle.retry(job, delay) {
                    self.hold_for_retry(job, delay);
                }
            }
        }
    }

    /// Keeps a job in memory until its retry is due, then queues it on this core.
    fn hold_for_retry(self: &Rc<Self>, job: Job, delay: Duration) {
        if self.shutdown.is_triggered() {
            self.settle.unfinished(job);
            return;
        }
        let id = job.id;
        self.sleeping.borrow_mut().insert(id, job);
        let this = self.clone();
        monoio::spawn(async move {
            monoio::select! {
                _ = monoio::time::sleep(delay) => {}
                // At shutdown the core's drain takes the job from `sleeping`.
                _ = this.shutdown.wait() => return,
            }
            let job = this.sleeping.borrow_mut().remove(&id);
            if let Some(job) = job {
                if let Err(e) = this.ready_tx.try_send(job) {
                    this.settle.unfinished(e.into_inner());
                }
            }
        });
    }
}
