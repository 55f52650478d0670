//! What one core records per delivery: its counters, its queues' histograms and its in-flight
//! board, in a [`CoreStats`] only that core writes. A delivery touches no lock or cache line
//! another core writes; the registry in [`Stats`](super::Stats) is locked when a core starts
//! and when a reader (`/metrics`, `/status`, `/inflight`, the dashboard, the final counters)
//! merges the cores.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    Arc,
};

use super::{
    timings::{CoreMetrics, QueueSnapshot, Series},
    Board, Working,
};

/// A counter only its core adds to: a relaxed load and store, no locked read-modify-write.
/// Any thread may read it.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning core calls this (two writers would lose counts).
    #[inline]
    pub fn inc(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge only its core moves, read by any thread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (negative to go down). Only the owning core calls this.
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// One core's figures. Aligned to 128 bytes (two cache lines, for the adjacent-line
/// prefetcher), so no other core's data shares its lines.
#[derive(Debug)]
#[repr(align(128))]
pub struct CoreStats {
    /// Requests sent to the worker (attempts).
    pub dispatched: Counter,
    /// Jobs the worker finished.
    pub succeeded: Counter,
    /// Attempts that ended in a retry.
    pub retried: Counter,
    /// Jobs that failed for good.
    pub failed: Counter,
    /// Worker responses refused as malformed.
    pub malformed_responses: Counter,
    /// Requests that hit their timeout.
    pub timeouts: Counter,
    /// Connections refused or failed before a request was sent.
    pub connect_errors: Counter,
    /// Requests re-sent on a fresh connection because a pooled one was found closed.
    pub stale_connection_retries: Counter,
    /// Requests in flight now.
    pub in_flight: Gauge,
    /// The jobs this core's workers are running now.
    pub board: Board,
    /// This core's per-queue histograms.
    pub metrics: CoreMetrics,
}

impl CoreStats {
    /// A core's figures; `series` is the process-wide choice of which queues get a series.
    pub fn new(series: Arc<Series>) -> CoreStats {
        CoreStats {
            dispatched: Counter::default(),
            succeeded: Counter::default(),
            retried: Counter::default(),
            failed: Counter::default(),
            malformed_responses: Counter::default(),
            timeouts: Counter::default(),
            connect_errors: Counter::default(),
            stale_connection_retries: Counter::default(),
            in_flight: Gauge::default(),
            board: Board::default(),
            metrics: CoreMetrics::new(series),
        }
    }
}

/// Adds the counters of `cores` to `s`.
pub(super) fn add_counters(s: &mut super::Snapshot, cores: &[Arc<CoreStats>]) {
    for c in cores {
        s.dispatched += c.dispatched.get();
        s.succeeded += c.succeeded.get();
        s.retried += c.retried.get();
        s.failed += c.failed.get();
        s.malformed_responses += c.malformed_responses.get();
        s.timeouts += c.timeouts.get();
        s.connect_errors += c.connect_errors.get();
        s.stale_connection_retries += c.stale_connection_retries.get();
        s.in_flight += c.in_flight.get();
    }
}

/// The running jobs of every core, oldest first, at most `limit`.
pub(super) fn running(cores: &[Arc<CoreStats>], limit: usize) -> Vec<Working> {
    let mut v = Vec::new();
    for c in cores {
        c.board.collect(&mut v);
    }
    v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    v.truncate(limit);
    v.into_iter().map(|(_, w)| w).collect()
}

/// Every queue's histograms, summed over `cores`, by name.
pub(super) fn histograms(cores: &[Arc<CoreStats>]) -> Vec<(Arc<str>, QueueSnapshot)> {
    let parts: Vec<&CoreMetrics> = cores.iter().map(|c| &c.metrics).collect();
    CoreMetrics::merge(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{
        timings::{MAX_QUEUE_SERIES, OTHER_QUEUES},
        Stats,
    };

    fn job(id: u64, queue: &str) -> crate::job::Job {
        crate::job::Job {
            id,
            queue: Arc::from(queue),
            payload: bytes::Bytes::new(),
            content_type: Arc::from(crate::job::DEFAULT_CONTENT_TYPE),
            headers: Arc::from(Vec::new()),
            attempts: 1,
            enqueued_at: std::time::SystemTime::now(),
            path: None,
        }
    }

    /// Two cores record; the readers see the sum of both: counters, gauges, histogram buckets,
    /// both boards, and no more queue series than the bound.
    #[test]
    fn readers_merge_every_core() {
        let stats = Stats::default();
        let (a, b) = (stats.register_core(), stats.register_core());
        Stats::inc(&stats.failed); // a source failing a job itself
        for _ in 0..3 {
            a.dispatched.inc();
            a.succeeded.inc();
        }
        for _ in 0..2 {
            b.dispatched.inc();
            b.retried.inc();
        }
        b.failed.inc();
        b.timeouts.inc();
        a.in_flight.add(1);
        b.in_flight.add(2);
        a.board.start(&job(1, "q"));
        b.board.start(&job(2, "q"));
        b.board.start(&job(3, "r"));
        b.board.end(3);

        let s = stats.snapshot();
        assert_eq!((s.dispatched, s.succeeded, s.retried), (5, 3, 2));
        assert_eq!((s.failed, s.timeouts, s.in_flight), (2, 1, 3));
        let mut ids: Vec<u64> = stats.running(10).iter().map(|w| w.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        assert_eq!(stats.running(1).len(), 1);

        // Histograms: both cores' buckets add up, per queue.
        let q: Arc<str> = Arc::from("q");
        a.metrics.queue(&q).worker_seconds.observe(400); // ≤ 0.5 ms
        b.metrics.queue(&q).worker_seconds.observe(400);
        b.metrics.queue(&q).worker_seconds.observe(2_000); // ≤ 2.5 ms
        let h = stats.histograms();
        assert_eq!(h.len(), 1);
        let w = &h[0].1.worker_seconds;
        assert_eq!((&*h[0].0, w.count), ("q", 3));
        assert_eq!(w.buckets[0], (0.0005, 2));
        assert_eq!(w.buckets[2], (0.0025, 3));
        assert!((w.sum - 0.0028).abs() < 1e-12);

        // Series: core a meets queues 0..600, core b 400..1205; one process-wide bound.
        for i in 0..600 {
            a.metrics
                .queue(&Arc::from(format!("s{i}")))
                .worker_seconds
                .observe(1);
        }
        for i in 400..MAX_QUEUE_SERIES + 205 {
            b.metrics
                .queue(&Arc::from(format!("s{i}")))
                .worker_seconds
                .observe(1);
        }
        let h = stats.histograms();
        assert_eq!(h.len(), MAX_QUEUE_SERIES + 1);
        let other = h.iter().find(|(k, _)| &**k == OTHER_QUEUES).unwrap();
        // "q" took one series, s0..s998 the rest: s999..s1204 on core b share `_other`.
        assert_eq!(other.1.worker_seconds.count, 206);
        let own: u64 = h
            .iter()
            .filter(|(k, _)| &**k != OTHER_QUEUES && &**k != "q")
            .count() as u64;
        assert_eq!(own, MAX_QUEUE_SERIES as u64 - 1);
        let s400 = h.iter().find(|(k, _)| &**k == "s400").unwrap();
        assert_eq!(s400.1.worker_seconds.count, 2);
    }
}
