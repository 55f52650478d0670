//! The cores' reports, carried to the settle thread, which owns a connection of its own and
//! does what each outcome means to the stream: done → `XACK` (batched), retry → the entry into
//! the delayed set (one script), failed → the failed stream and `XACK` (one transaction),
//! unfinished → back into the stream at once. The same thread moves due retries back into the
//! stream every [`MOVE_EVERY`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Connection, ConnectionInfo};

use super::{
    client,
    config::{redacted_url, RedisConfig},
    entry::{failed_fields, retry_fields, Held},
};
use crate::{
    bridge::{Delivery, Settle},
    job::Failure,
    stats::Stats,
};

/// How often due retries are moved back into the stream: the most a retry runs late.
pub(super) const MOVE_EVERY: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the settle thread is told.
pub(super) enum Msg {
    /// The reader took entry `Held` as job `u64` (sent before the job leaves the reader, so
    /// its settlement always finds it).
    Held(u64, Held),
    /// An entry that cannot be a job: to the failed stream untried.
    Bad(u64, Failure),
    Done(u64),
    /// Run again after the delay, with this many failed deliveries counted.
    Retry(u64, Duration, u32),
    Failed(u64, u32, Failure),
    Unfinished(u64),
    /// Every report is in: finish and stop.
    Close,
}

/// The cores' handle: each report is one channel send, never a wait on Redis.
pub(super) struct RedisSettler {
    pub(super) tx: Sender<Msg>,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
}

impl Settle for RedisSettler {
    fn done(&self, d: &Delivery, _: u64) {
        let _ = self.tx.send(Msg::Done(d.job.id));
    }
    fn failed(&self, d: &Delivery, failure: &Failure, _: bool, _: u64) {
        let _ = self
            .tx
            .send(Msg::Failed(d.job.id, d.job.attempts, failure.clone()));
    }
    fn retry(&self, d: Delivery, delay: Duration, _: &Failure, _: u64) -> Option<Delivery> {
        let _ = self.tx.send(Msg::Retry(d.job.id, delay, d.job.attempts));
        None
    }
    fn release(&self, d: Delivery, delay: Duration) -> Option<Delivery> {
        // Kept in Redis rather than in memory: a job held longer than the lease would be
        // claimed by another consumer and run twice.
        let _ = self.tx.send(Msg::Retry(d.job.id, delay, d.job.attempts));
        None
    }
    fn unfinished(&self, d: Delivery) {
        let _ = self.tx.send(Msg::Unfinished(d.job.id));
    }
    fn close(&self) {
        let _ = self.tx.send(Msg::Close);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("The Redis settle thread panicked; unacknowledged entries are claimed again after queue.lease.");
            }
        }
    }
}

/// The settle thread's state.
pub(super) struct SettleLoop {
    pub(super) config: Arc<RedisConfig>,
    pub(super) info: ConnectionInfo,
    pub(super) rx: Receiver<Msg>,
    pub(super) stats: Arc<Stats>,
    /// Entries taken and not yet settled, shared with the reader (its backpressure).
    pub(super) taken: Arc<AtomicUsize>,
    pub(super) held: HashMap<u64, Held>,
    pub(super) conn: Option<Connection>,
    pub(super) backoff: Duration,
    pub(super) closing: bool,
}

impl SettleLoop {
    pub(super) fn run(mut self) {
        let mut last_move = Instant::now();
        loop {
            let first = match self.rx.recv_timeout(MOVE_EVERY) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                batch.extend(self.rx.try_iter().take(1000));
                if self.handle(batch) {
                    return;
                }
            }
            if last_move.elapsed() >= MOVE_EVERY {
                last_move = Instant::now();
                self.move_due();
            }
        }
    }

    /// Handles a batch of reports; true once `Close` was among them.
    fn handle(&mut self, batch: Vec<Msg>) -> bool {
        let mut acks = Vec::new();
        let mut close = false;
        for m in batch {
            match m {
                Msg::Held(id, h) => {
                    self.held.insert(id, h);
                }
                Msg::Done(id) => {
                    if let Some(h) = self.held.remove(&id) {
                        acks.push(h.id);
                    }
                }
                Msg::Bad(id, failure) => self.fail(id, 0, &failure),
                Msg::Failed(id, attempts, failure) => self.fail(id, attempts, &failure),
                Msg::Retry(id, delay, attempts) => self.retry(id, delay, attempts),
                Msg::Unfinished(id) => self.give_back(id),
                Msg::Close => close = true,
            }
        }
        if !acks.is_empty() {
            let n = acks.len();
            let c = self.config.clone();
            if self.with_conn("acknowledging entries", |conn| client::ack(conn, &c, &acks)) {
                self.released(n);
            }
        }
        if close {
            if !self.held.is_empty() {
                tracing::warn!(entries = self.held.len(), "Redis entries not settled at shutdown stay pending; another consumer claims them after queue.lease, or this one on restart.");
            }
            self.closing = true;
        }
        close
    }

    fn released(&self, n: usize) {
        self.taken.fetch_sub(n, Relaxed);
        self.stats.held.fetch_sub(n as i64, Relaxed);
    }

    fn retry(&mut self, id: u64, delay: Duration, attempts: u32) {
        let Some(h) = self.held.remove(&id) else {
            return;
        };
        let due = SystemTime::now() + delay;
        let due_ms = due
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fields = retry_fields(&h, attempts);
        let c = self.config.clone();
        if self.with_conn("scheduling a retry", |conn| {
            client::schedule_retry(conn, &c, &h.id, &fields, due_ms)
        }) {
            self.released(1);
        }
    }

    fn fail(&mut self, id: u64, attempts: u32, failure: &Failure) {
        let Some(h) = self.held.remove(&id) else {
            return;
        };
        let fields = failed_fields(&h, attempts, failure, SystemTime::now());
        let c = self.config.clone();
        let failed = c.failed_stream();
        if self.with_conn("recording a failed entry", |conn| {
            client::add_and_ack(conn, &c, &failed, &fields, &h.id)
        }) {
            tracing::warn!(stream = %failed, entry = %h.id, message = %failure.message, "Redis entry failed for good; moved to the failed stream.");
            self.released(1);
        }
    }

    fn give_back(&mut self, id: u64) {
        let Some(h) = self.held.remove(&id) else {
            return;
        };
        // As it was read, failed deliveries so far included: an interrupted one does not count.
        let fields = retry_fields(&h, h.attempts);
        let c = self.config.clone();
        let stream = c.stream.clone();
        if self.with_conn("returning an unfinished entry", |conn| {
            client::add_and_ack(conn, &c, &stream, &fields, &h.id)
        }) {
            self.released(1);
        }
    }

    fn move_due(&mut self) {
        let c = self.config.clone();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Only while connected: a lost server is retried by the next report, not here.
        let Some(conn) = self.conn.as_mut() else {
            self.with_conn("moving due retries", |_| Ok(()));
            return;
        };
        for _ in 0..10 {
            match client::move_due(conn, &c, now) {
                Ok(n) if n == client::MOVE_BATCH => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot move due Redis retries back into the stream; reconnecting.");
                    self.conn = None;
                    return;
                }
            }
        }
    }

    /// Runs `op`, reconnecting and retrying while the server is unreachable. False when it
    /// gave up: the server refused the command itself, or shutdown's deadline passed (the
    /// entry then stays pending, to be claimed again after the lease).
    fn with_conn(
        &mut self,
        doing: &str,
        mut op: impl FnMut(&mut Connection) -> redis::RedisResult<()>,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.conn.is_none() {
                match client::connect(&self.info, Duration::from_secs(10)) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.backoff = FIRST_BACKOFF;
                    }
                    Err(e) => {
                        tracing::warn!(server = %redacted_url(&self.config.url), error = %e, "Cannot connect to Redis while {doing}; retrying.");
                        if self.closing && Instant::now() > deadline {
                            return false;
                        }
                        std::thread::sleep(self.backoff);
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match op(conn) {
                Ok(()) => return true,
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                    tracing::warn!(error = %e, "Redis connection lost while {doing}; reconnecting.");
                    self.conn = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Redis refused a command while {doing}; the entry stays pending and is claimed again after queue.lease.");
                    return false;
                }
            }
        }
    }
}
