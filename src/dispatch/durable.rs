//! Delivery of jobs from the durable store. The store thread decides what runs (leases, per
//! queue `max_workers`, throttles), so a core does not bound concurrency itself: it takes every
//! [`Dispatch`] it receives, delivers it through a client for the job's worker URL, and reports
//! the end back to the store as a [`Settlement`].
//!
//! Unlike the FIFO path there is no circuit breaker: a refused connection releases the job back
//! to the log (no attempt counted) with a short delay, and the log holds it durably meanwhile.
//! The origin is reported to [`crate::reachability`] (one warning per origin, a gauge), and a
//! job whose worker stays unreachable for `runner.max_unreachable` fails with that reason.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::ToSocketAddrs,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use crate::{
    dispatch::transport_outcome,
    http::client::{ClientConfig, WorkerClient},
    job::target::{OutcomeMode, Target},
    job::{classify_status, Failure, Outcome},
    lifecycle::Shutdown,
    stats::Stats,
    store::{Dispatch, Op, Settlement, Store},
    telemetry::completion::{self, Completion},
};

/// Most distinct worker URLs a core keeps a connection pool for; beyond it the least recently
/// added pool is dropped (per-job URLs could otherwise grow the map without bound).
const MAX_POOLS: usize = 64;
/// How long a job waits after its worker refused the connection.
const REFUSED_DELAY: Duration = Duration::from_secs(1);

/// Limits for the clients a durable core creates.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Idle keep-alive lifetime.
    pub idle_timeout: Duration,
    /// Largest response head.
    pub max_head_bytes: usize,
    /// Largest response body.
    pub max_body_bytes: usize,
    /// Idle connections kept per worker.
    pub max_idle: usize,
    /// A job whose worker refused connections this long fails (`runner.max_unreachable`).
    pub max_unreachable: Duration,
}

/// One core's delivery loop for store jobs.
pub struct DurableCore {
    core: usize,
    store: Store,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    limits: ClientLimits,
    clients: RefCell<HashMap<String, Rc<WorkerClient>>>,
    order: RefCell<std::collections::VecDeque<String>>,
    in_flight: Cell<usize>,
    /// Origins this core found refusing connections; the first answer from one is reported
    /// to [`crate::stats::reachability::Reachability`]. Empty on the happy path.
    down: RefCell<std::collections::HashSet<String>>,
}

impl DurableCore {
    /// A delivery loop for one core.
    pub fn new(
        core: usize,
        store: Store,
        stats: Arc<Stats>,
        shutdown: Shutdown,
        limits: ClientLimits,
    ) -> Rc<DurableCore> {
        Rc::new(DurableCore {
            core,
            store,
            stats,
            shutdown,
            limits,
            clients: RefCell::new(HashMap::new()),
            order: RefCell::new(Default::default()),
            in_flight: Cell::new(0),
            down: RefCell::default(),
        })
    }

    /// Takes dispatches until shutdown, then lets in-flight deliveries finish within `grace`.
    /// Jobs still running after that stay leased only in memory: the next start runs them again.
    pub async fn run(self: Rc<Self>, rx: async_channel::Receiver<Dispatch>, grace: Duration) {
        loop {
            let d = monoio::select! {
                d = rx.recv() => match d { Ok(d) => d, Err(_) => break },
                _ = self.shutdown.wait() => break,
            };
            let this = self.clone();
            monoio::spawn(async move { this.deliver(d).await });
        }
        let deadline = Instant::now() + grace;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.in_flight.get() > 0 {
            tracing::warn!(
                core = self.core,
                jobs = self.in_flight.get(),
                "Shutdown timeout: jobs still in flight will run again at the next start."
            );
        }
    }

    fn client(&self, target: &Target) -> Result<Rc<WorkerClient>, String> {
        if let Some(c) = self.clients.borrow().get(&target.url_text) {
            return Ok(c.clone());
        }
        let url = &target.url;
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .collect();
        let client = Rc::new(WorkerClient::new(ClientConfig {
            addrs,
            authority: url.authority.clone(),
            path_and_query: url.path_and_query.clone(),
            timeout: target.timeout,
            idle_timeout: self.limits.idle_timeout,
            max_head_bytes: self.limits.max_head_bytes,
            max_body_bytes: self.limits.max_body_bytes,
            max_idle: self.limits.max_idle,
            user_agent: None,
        }));
        let mut clients = self.clients.borrow_mut();
        let mut order = self.order.borrow_mut();
        if clients.len() >= MAX_POOLS {
            if let Some(old) = order.pop_front() {
                clients.remove(&old);
            }
        }
        clients.insert(target.url_text.clone(), client.clone());
        order.push_back(target.url_text.clone());
        Ok(client)
    }

    fn settle(&self, d: &Dispatch, how: Settlement, elapsed_ms: u64) {
        self.store.send(Op::Settle {
            id: d.job.id,
            lease: d.lease,
            how,
            elapsed_ms,
        });
    }

    /// The job failed for good: counted, logged, and settled into the failed log.
    fn fail(&self, d: &Dispatch, failure: Failure, permanent: bool, elapsed_ms: u64) {
        Stats::inc(&self.stats.failed);
        let how = Completion::Failed {
            failure: &failure,
            permanent,
        };
        completion::log(&d.job, &d.category, how, elapsed_ms);
        self.settle(d, Settlement::Fail(failure, permanent), elapsed_ms);
    }

    async fn deliver(self: Rc<Self>, mut d: Dispatch) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.stats.in_flight.fetch_add(1, Relaxed);
        let outcome = self.attempt(&mut d).await;
        self.stats.in_flight.fetch_sub(1, Relaxed);
        self.in_flight.set(self.in_flight.get() - 1);
        let Some((outcome, elapsed_ms)) = outcome else {
            return;
        };
        let job = &d.job;
        match outcome {
            Outcome::Done => {
                Stats::inc(&self.stats.succeeded);
                completion::log(job, &d.category, Completion::Done, elapsed_ms);
                self.settle(&d, Settlement::Done, elapsed_ms);
            }
            Outcome::Fail(failure) => self.fail(&d, failure, true, elapsed_ms),
            Outcome::Retry { after, reason } => {
                let policy = &d.target.policy;
                if policy.may_retry(job.attempts) {
                    Stats::inc(&self.stats.retried);
                    let delay = policy.delay(job.attempts, after);
                    let how = Completion::Retry {
                        delay,
                        failure: &reason,
                    };
                    completion::log(job, &d.category, how, elapsed_ms);
                    self.settle(&d, Settlement::Retry(delay, reason), elapsed_ms);
                } else {
                    let failure = Failure::exhausted(job.attempts, &reason);
                    self.fail(&d, failure, false, elapsed_ms);
                }
            }
        }
    }

    /// One delivery. `None` when the job was released without an attempt.
    async fn attempt(&self, d: &mut Dispatch) -> Option<(Outcome, u64)> {
        let client = match self.client(&d.target) {
            Ok(c) => c,
            Err(message) => {
                return Some((
                    Outcome::Retry {
                        after: None,
                        reason: Failure::transport(message),
                    },
                    0,
                ))
            }
        };
        d.job.attempts += 1;
        Stats::inc(&self.stats.dispatched);
        let started = Instant::now();
        let result = client
            .send_within(&d.job, d.target.timeout, || {
                Stats::inc(&self.stats.stale_connection_retries)
            })
            .await;
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        let outcome = match result {
            Ok(resp) => match d.target.outcome {
                OutcomeMode::Status => {
                    let after = resp
                        .head
                        .retry_after
                        .map(|r| r.delay_from(std::time::SystemTime::now()));
                    classify_status(resp.head.status, after, &resp.body)
                }
                OutcomeMode::Fireworq => classify_fireworq(resp.head.status, &resp.body),
            },
            Err(e) if e.is_refused() => {
                // Nobody listens: the worker never saw the job, so the attempt does not count.
                Stats::inc(&self.stats.connect_errors);
                d.job.attempts -= 1;
                let origin = &d.target.url.authority;
                self.down.borrow_mut().insert(origin.clone());
                let error = e.to_string();
                let down_for = self.stats.reachability.refused(origin, &error);
                if down_for >= self.limits.max_unreachable {
                    let failure = Failure::transport(format!(
                        "worker {origin} unreachable for {}s (runner.max_unreachable): {error}",
                        down_for.as_secs()
                    ));
                    self.fail(d, failure, false, 0);
                    return None;
                }
                let delay = if self.shutdown.is_triggered() {
                    Duration::ZERO
                } else {
                    REFUSED_DELAY
                };
                self.settle(d, Settlement::Release(delay), 0);
                return None;
            }
            Err(e) => transport_outcome(&self.stats, &e),
        };
        if !self.down.borrow().is_empty() && self.down.borrow_mut().remove(&d.target.url.authority)
        {
            self.stats.reachability.answered(&d.target.url.authority);
        }
        let metrics = self.stats.metrics.queue(&d.job.queue);
        metrics.worker_seconds.observe_duration(elapsed);
        if outcome == Outcome::Done {
            metrics
                .enqueue_to_done_seconds
                .observe_duration(d.job.enqueued_at.elapsed().unwrap_or_default());
        }
        Some((outcome, elapsed_ms))
    }
}

/// fireworq's outcome: the body's JSON `status` decides, whatever the HTTP status:
/// `success` is done, `permanent-failure` fails for good, anything else (including a body that
/// is not JSON) is a failure to retry. `message` is kept for the failed log.
pub fn classify_fireworq(http_status: u16, body: &[u8]) -> Outcome {
    #[derive(serde::Deserialize)]
    struct Answer {
        status: Option<String>,
        message: Option<String>,
    }
    let parsed: Option<Answer> = serde_json::from_slice(body).ok();
    let (status, message) = match parsed {
        Some(a) => (a.status.unwrap_or_default(), a.message),
        None => (String::new(), None),
    };
    let failure = || Failure {
        status: Some(http_status),
        message: message.clone().unwrap_or_else(|| {
            let end = body.len().min(1024);
            String::from_utf8_lossy(&body[..end]).into_owned()
        }),
    };
    match status.as_str() {
        "success" => Outcome::Done,
        "permanent-failure" => Outcome::Fail(failure()),
        _ => Outcome::Retry {
            after: None,
            reason: failure(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fireworq_outcomes() {
        assert_eq!(
            classify_fireworq(200, br#"{"status":"success"}"#),
            Outcome::Done
        );
        assert_eq!(
            classify_fireworq(500, br#"{"status":"success"}"#),
            Outcome::Done
        );
        let Outcome::Fail(f) =
            classify_fireworq(200, br#"{"status":"permanent-failure","message":"bad"}"#)
        else {
            panic!("expected a permanent failure")
        };
        assert_eq!(f.message, "bad");
        assert!(matches!(
            classify_fireworq(200, br#"{"status":"failure"}"#),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_fireworq(200, b"ok"),
            Outcome::Retry { .. }
        ));
        assert!(matches!(classify_fireworq(200, b""), Outcome::Retry { .. }));
    }
}
