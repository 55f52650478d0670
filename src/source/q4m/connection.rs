//! One Q4M connection thread. Each thread owns one blocking MySQL connection and at most one
//! row: it waits for a row, hands the job to the cores, blocks until the cores settle it, and
//! ends or returns the row on the same connection, which is the only one Q4M lets do so.
//!
//! Blocking threads rather than an async client: the cores run monoio, which no maintained
//! MySQL client supports, and a connection spends nearly all its time parked in `queue_wait`
//! or waiting for a worker, so a thread per connection costs memory only (Q4M deployments use
//! tens of connections, capped at [`MAX_Q4M_CONNECTIONS`](super::config::MAX_Q4M_CONNECTIONS)).

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mysql::{prelude::Queryable as _, Conn};

use super::{
    connection_state::{Shared, FIRST_BACKOFF, MAX_BACKOFF},
    failed::record_failure,
    fetch::{own_next_row, Fetched},
    settle::Settlement,
};
use crate::{bridge::JobSender, job::Job, lifecycle::Shutdown, stats::Stats};

/// Longest pause between attempts to queue a job for busy cores.
const MAX_HAND_OVER_PAUSE: Duration = Duration::from_millis(20);

/// One connection thread.
pub(super) struct Connection {
    index: usize,
    shared: Arc<Shared>,
    out: JobSender,
    shutdown: Shutdown,
    conn: Option<Conn>,
    backoff: Duration,
    /// Set while the server is unreachable, so recovery is logged once.
    lost: bool,
    settle_tx: Sender<Settlement>,
    settle_rx: Receiver<Settlement>,
}

impl Connection {
    pub(super) fn new(
        index: usize,
        shared: Arc<Shared>,
        out: JobSender,
        shutdown: Shutdown,
    ) -> Connection {
        // One settlement per job and one job at a time: capacity 1 never blocks a core.
        let (settle_tx, settle_rx) = crossbeam_channel::bounded(1);
        Connection {
            index,
            shared,
            out,
            shutdown,
            conn: None,
            backoff: FIRST_BACKOFF,
            lost: false,
            settle_tx,
            settle_rx,
        }
    }

    pub(super) fn run(mut self) {
        while !self.shutdown.is_triggered() {
            if !self.ensure_connected() {
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let fetched = match own_next_row(conn, &self.shared) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => {
                    self.lose_connection("waiting for a row", &e);
                    continue;
                }
            };
            Stats::inc(&self.shared.stats.received);
            self.shared.stats.held.fetch_add(1, Relaxed);
            let settlement = match fetched {
                Fetched::Bad(job, failure) => {
                    tracing::warn!(queue = %job.queue, id = job.id, message = %failure.message, "Q4M row cannot become a job; recording it as failed.");
                    Stats::inc(&self.shared.stats.failed);
                    Some(Settlement::Failed(job, failure))
                }
                Fetched::Job(_) if self.shutdown.is_triggered() => Some(Settlement::Abort),
                Fetched::Job(job) => self.dispatch(job),
            };
            match settlement {
                Some(s) => self.finish(s),
                None => {
                    // No settlement in time: closing the connection is what returns the row.
                    tracing::warn!(connection = self.index, "No settlement for a Q4M row before the shutdown deadline; closing its connection so the server returns it.");
                    self.conn = None;
                }
            }
            self.shared.stats.held.fetch_sub(1, Relaxed);
        }
    }

    /// Connects if needed; false after a failed attempt (having waited out the backoff) so the
    /// caller re-checks shutdown.
    fn ensure_connected(&mut self) -> bool {
        if self.conn.is_none() {
            match Conn::new(self.shared.opts.clone()) {
                Ok(c) => {
                    if self.lost {
                        tracing::info!(connection = self.index, server = %self.shared.dsn, "Q4M connection restored.");
                    }
                    self.lost = false;
                    self.backoff = FIRST_BACKOFF;
                    self.conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(connection = self.index, server = %self.shared.dsn, error = %e, retry_in_ms = self.backoff.as_millis() as u64, "Cannot connect to the Q4M server.");
                    self.lost = true;
                    sleep_unless_shutdown(&self.shutdown, self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return false;
                }
            }
        }
        true
    }

    fn lose_connection(&mut self, doing: &str, e: &mysql::Error) {
        tracing::warn!(connection = self.index, error = %e, "Q4M connection failed while {doing}; reconnecting.");
        self.conn = None;
        self.lost = true;
    }

    /// Hands the job to the cores and waits until they settle it. `None` when shutdown came and
    /// the settlement did not within the deadline.
    fn dispatch(&mut self, job: Job) -> Option<Settlement> {
        let id = job.id;
        // The route goes in before the job leaves, so a settlement can never miss it.
        self.shared.settler.expect(id, self.settle_tx.clone());
        if !self.hand_over(job) {
            self.shared.settler.forget(id);
            return Some(Settlement::Abort);
        }
        let mut shutdown_seen: Option<Instant> = None;
        let mut last_ping = Instant::now();
        loop {
            match self.settle_rx.recv_timeout(Duration::from_millis(250)) {
                Ok(s) => return Some(s),
                Err(RecvTimeoutError::Timeout) => {
                    if last_ping.elapsed() >= self.shared.config.keepalive {
                        last_ping = Instant::now();
                        self.keep_alive();
                    }
                    if !self.shutdown.is_triggered() {
                        continue;
                    }
                    let since = *shutdown_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shared.settle_deadline {
                        self.shared.settler.forget(id);
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Queues the job for the cores. While the queue is full the row stays owned, so the
    /// connection is pinged as in [`Self::dispatch`]; a blocking send could not do that. False
    /// when the job must not go: shutdown, the cores gone, or the connection (and so the row)
    /// lost meanwhile.
    fn hand_over(&mut self, mut job: Job) -> bool {
        let mut pause = Duration::from_millis(1);
        let mut last_ping = Instant::now();
        loop {
            match self.out.try_send(job) {
                Ok(()) => return true,
                Err(crate::bridge::SendError::Closed(_)) => return false,
                Err(crate::bridge::SendError::Full(j)) => job = j,
            }
            if self.shutdown.is_triggered() {
                return false;
            }
            if last_ping.elapsed() >= self.shared.config.keepalive {
                last_ping = Instant::now();
                self.keep_alive();
                if self.conn.is_none() {
                    return false;
                }
            }
            // Polling: the bridge offers no blocking send with a timeout. The pause is
            // short next to a job, and only taken while the cores are saturated.
            sleep_unless_shutdown(&self.shutdown, pause);
            pause = (pause * 2).min(MAX_HAND_OVER_PAUSE);
        }
    }

    /// Pings the connection of a row whose job runs or waits for its retry, so a server
    /// `wait_timeout` shorter than the job does not close it and hand the row to someone else.
    fn keep_alive(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.ping() {
            tracing::warn!(connection = self.index, error = %e, "Lost the Q4M connection of a row whose job is still running; the server has the row back and it may run twice.");
            self.conn = None;
            self.lost = true;
        }
    }

    /// Ends or returns the owned row as the settlement says.
    fn finish(&mut self, settlement: Settlement) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let (sql, doing) = match &settlement {
            Settlement::Done => ("SELECT queue_end()", "ending a finished row"),
            Settlement::Abort => ("SELECT queue_abort()", "returning an unfinished row"),
            Settlement::Failed(job, failure) => {
                match record_failure(conn, &self.shared, job, failure) {
                    Ok(()) => {
                        self.shared.record_backoff_ms.store(0, Relaxed);
                        ("SELECT queue_end()", "ending a failed row")
                    }
                    Err(e) => {
                        // The row goes back and will be taken again: pause first, so a failed
                        // file or table that keeps refusing does not become a hot loop.
                        let pause = self.shared.next_record_backoff();
                        tracing::error!(queue = %job.queue, id = job.id, error = %e, retry_in_ms = pause.as_millis() as u64, "Could not record a failed Q4M row; returning it to the queue instead.");
                        sleep_unless_shutdown(&self.shutdown, pause);
                        ("SELECT queue_abort()", "returning a failed row")
                    }
                }
            }
        };
        if let Err(e) = conn.query_drop(sql) {
            // The server gives the row back when the connection goes: it will be delivered
            // again (at least once).
            self.lose_connection(doing, &e);
        }
    }
}

/// Sleeps for `d` or until shutdown triggers.
fn sleep_unless_shutdown(shutdown: &Shutdown, d: Duration) {
    let mut fds = [nix::poll::PollFd::new(
        shutdown.poll_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}
