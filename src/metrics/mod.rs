//! What `GET /metrics` shows: histograms recorded by the cores and the store thread, plus the
//! counters in [`Stats`](crate::stats::Stats) and the store's per-queue figures, rendered in
//! Prometheus' text format with a `reprow_` prefix.
//!
//! # Layout
//! - [`histogram`]: lock-free fixed-bucket histograms.
//! - [`exposition`]: the text format, sans-IO.

pub mod exposition;
pub mod histogram;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use exposition::{Encoder, Kind};
use histogram::{Histogram, BATCH_BOUNDS, END_TO_END_BOUNDS_US, MICROS};

use crate::{runtime::Phase, stats::Snapshot, store::QueueStats};

/// Per-queue histograms, created on a queue's first delivery.
#[derive(Debug, Default)]
pub struct Metrics {
    queues: RwLock<HashMap<Arc<str>, Arc<QueueMetrics>>>,
}

/// One queue's histograms.
#[derive(Debug)]
pub struct QueueMetrics {
    /// Worker request time, per attempt (connect, send, whole response).
    pub worker_seconds: Histogram,
    /// From enqueue to the successful attempt's answer, retries and delays included.
    pub enqueue_to_done_seconds: Histogram,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            worker_seconds: Histogram::latency(),
            enqueue_to_done_seconds: Histogram::new(END_TO_END_BOUNDS_US, MICROS),
        }
    }
}

/// Most queues histograms are kept for; past it, new queues share one `_other` entry so a
/// client creating queues cannot grow memory or the exposition without bound.
pub const MAX_QUEUE_SERIES: usize = 1000;

/// The shared entry for queues past [`MAX_QUEUE_SERIES`].
/// Not a valid queue name (see `store::queue::check_name`), so it cannot collide with one.
pub const OTHER_QUEUES: &str = "~other";

impl Metrics {
    /// The histograms of `queue`, created on first use.
    pub fn queue(&self, queue: &Arc<str>) -> Arc<QueueMetrics> {
        if let Some(q) = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
        {
            return q.clone();
        }
        let mut all = self.queues.write().unwrap_or_else(|e| e.into_inner());
        let key = if all.len() >= MAX_QUEUE_SERIES && !all.contains_key(queue) {
            Arc::from(OTHER_QUEUES)
        } else {
            queue.clone()
        };
        all.entry(key).or_default().clone()
    }

    /// Every queue's histograms, by name.
    pub fn queues(&self) -> Vec<(Arc<str>, Arc<QueueMetrics>)> {
        let mut v: Vec<_> = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, q)| (k.clone(), q.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The store thread's histograms.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Time of one write transaction's commit (the fsync included).
    pub commit_seconds: Histogram,
    /// Operations (enqueues, settlements, …) in one commit: the group-commit batch size.
    pub commit_ops: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::latency(),
            commit_ops: Histogram::new(BATCH_BOUNDS, 1.0),
        }
    }
}

/// Everything one scrape shows.
pub struct Scrape<'a> {
    /// Process counters.
    pub stats: Snapshot,
    /// Lifecycle phase.
    pub phase: Phase,
    /// The durable queue's per-queue figures, when it runs.
    pub queues: &'a [(String, QueueStats)],
    /// Histograms per queue.
    pub metrics: &'a Metrics,
    /// The store's histograms, when it runs.
    pub store: Option<&'a StoreMetrics>,
    /// Resident memory, when readable.
    pub rss_bytes: Option<u64>,
    /// Worker origins that refused a connection while this process ran.
    pub workers: &'a [crate::reachability::OriginView],
}

/// Renders a scrape.
pub fn render(s: &Scrape<'_>) -> String {
    let mut e = Encoder::new();
    e.family(
        "reprow_build_info",
        Kind::Gauge,
        "Always 1; the version is a label.",
    );
    e.sample("reprow_build_info", &[("version", crate::VERSION)], 1.0);
    e.family(
        "reprow_phase",
        Kind::Gauge,
        "1 for the current lifecycle phase (starting, running, draining, stopped).",
    );
    for p in [
        Phase::Starting,
        Phase::Running,
        Phase::Draining,
        Phase::Stopped,
    ] {
        let v = if s.phase == p { 1.0 } else { 0.0 };
        e.sample("reprow_phase", &[("phase", p.name())], v);
    }
    if let Some(rss) = s.rss_bytes {
        e.family(
            "reprow_process_resident_memory_bytes",
            Kind::Gauge,
            "Resident set size of the reprow process.",
        );
        e.sample("reprow_process_resident_memory_bytes", &[], rss as f64);
    }
    process_counters(&mut e, &s.stats);
    e.family(
        "reprow_worker_unreachable",
        Kind::Gauge,
        "1 while a worker origin refuses connections, 0 once it answers again.",
    );
    for w in s.workers {
        let v = if w.reachable { 0.0 } else { 1.0 };
        e.sample("reprow_worker_unreachable", &[("origin", &w.origin)], v);
    }
    queue_families(&mut e, s.queues);
    let histos = s.metrics.queues();
    e.family(
        "reprow_queue_worker_seconds",
        Kind::Histogram,
        "Worker request time per delivery attempt, by queue.",
    );
    for (q, m) in &histos {
        e.histogram(
            "reprow_queue_worker_seconds",
            &[("queue", q)],
            &m.worker_seconds.snapshot(),
        );
    }
    e.family(
        "reprow_queue_enqueue_to_done_seconds",
        Kind::Histogram,
        "Time from enqueue to the worker's success, retries included, by queue.",
    );
    for (q, m) in &histos {
        e.histogram(
            "reprow_queue_enqueue_to_done_seconds",
            &[("queue", q)],
            &m.enqueue_to_done_seconds.snapshot(),
        );
    }
    if let Some(store) = s.store {
        e.family(
            "reprow_store_commit_seconds",
            Kind::Histogram,
            "Duration of one store commit, fsync included.",
        );
        e.histogram(
            "reprow_store_commit_seconds",
            &[],
            &store.commit_seconds.snapshot(),
        );
        e.family(
            "reprow_store_commit_ops",
            Kind::Histogram,
            "Operations per store commit (group-commit batch size).",
        );
        e.histogram("reprow_store_commit_ops", &[], &store.commit_ops.snapshot());
    }
    e.finish()
}

fn process_counters(e: &mut Encoder, st: &Snapshot) {
    let counters: [(&str, &str, u64); 11] = [
        (
            "reprow_received_total",
            "Jobs read from the FIFO or Q4M source.",
            st.received,
        ),
        (
            "reprow_dispatched_total",
            "Requests sent to workers (attempts).",
            st.dispatched,
        ),
        (
            "reprow_succeeded_total",
            "Jobs workers finished.",
            st.succeeded,
        ),
        (
            "reprow_retried_total",
            "Attempts that ended in a retry.",
            st.retried,
        ),
        (
            "reprow_failed_total",
            "Jobs that failed for good.",
            st.failed,
        ),
        (
            "reprow_timeouts_total",
            "Worker requests that hit their timeout.",
            st.timeouts,
        ),
        (
            "reprow_connect_errors_total",
            "Worker connections refused or failed before a request was sent.",
            st.connect_errors,
        ),
        (
            "reprow_malformed_responses_total",
            "Worker responses refused as malformed.",
            st.malformed_responses,
        ),
        (
            "reprow_pending_saved_total",
            "FIFO jobs written to the pending file at shutdown.",
            st.pending_saved,
        ),
        (
            "reprow_sqs_empty_receives_total",
            "SQS ReceiveMessage requests that brought no message.",
            st.sqs_empty_receives,
        ),
        (
            "reprow_sqs_deleted_total",
            "SQS messages deleted (done, or failed and recorded).",
            st.sqs_deleted,
        ),
    ];
    for (name, help, v) in counters {
        e.family(name, Kind::Counter, help);
        e.sample(name, &[], v as f64);
    }
    e.family(
        "reprow_fifo_lines_rejected_total",
        Kind::Counter,
        "FIFO lines refused, by reason.",
    );
    e.sample(
        "reprow_fifo_lines_rejected_total",
        &[("reason", "oversize")],
        st.lines_oversize as f64,
    );
    e.sample(
        "reprow_fifo_lines_rejected_total",
        &[("reason", "invalid")],
        st.lines_invalid as f64,
    );
    e.sample(
        "reprow_fifo_lines_rejected_total",
        &[("reason", "blank")],
        st.lines_blank as f64,
    );
    e.family(
        "reprow_sqs_requests_total",
        Kind::Counter,
        "SQS API requests, by operation (SQS bills per request).",
    );
    for (op, v) in [
        ("receive", st.sqs_receive_requests),
        ("delete_batch", st.sqs_delete_requests),
        ("change_visibility_batch", st.sqs_visibility_requests),
        ("send", st.sqs_send_requests),
    ] {
        e.sample("reprow_sqs_requests_total", &[("op", op)], v as f64);
    }
    let gauges: [(&str, &str, i64); 3] = [
        (
            "reprow_in_flight",
            "Worker requests in flight now.",
            st.in_flight,
        ),
        (
            "reprow_held_jobs",
            "FIFO/Q4M jobs held in memory now (queued, in flight, awaiting retry).",
            st.held,
        ),
        (
            "reprow_breakers_open",
            "Cores whose circuit breaker is open now (0 = closed everywhere).",
            st.breakers_open,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, Kind::Gauge, help);
        e.sample(name, &[], v as f64);
    }
}

fn queue_families(e: &mut Encoder, queues: &[(String, QueueStats)]) {
    type Get = fn(&QueueStats) -> u64;
    let families: [(&str, Kind, &str, Get); 10] = [
        (
            "reprow_queue_enqueued_total",
            Kind::Counter,
            "Jobs accepted into the queue.",
            |q| q.total_pushes,
        ),
        (
            "reprow_queue_dispatched_total",
            Kind::Counter,
            "Jobs handed out (pushed to a worker or pulled).",
            |q| q.total_pops,
        ),
        (
            "reprow_queue_succeeded_total",
            Kind::Counter,
            "Jobs finished.",
            |q| q.total_successes,
        ),
        (
            "reprow_queue_retried_total",
            Kind::Counter,
            "Failed attempts that were scheduled again.",
            |q| q.total_retries,
        ),
        (
            "reprow_queue_failed_total",
            Kind::Counter,
            "Jobs that failed for good (permanent or retries exhausted).",
            |q| q.total_failed_jobs,
        ),
        (
            "reprow_queue_waiting",
            Kind::Gauge,
            "Jobs due now and not leased.",
            |q| q.waiting,
        ),
        (
            "reprow_queue_deferred",
            Kind::Gauge,
            "Jobs due later (delayed or waiting for a retry).",
            |q| q.deferred,
        ),
        (
            "reprow_queue_in_flight",
            Kind::Gauge,
            "Jobs leased to a worker now.",
            |q| q.grabbed,
        ),
        (
            "reprow_queue_failed_log",
            Kind::Gauge,
            "Entries in the queue's failed log.",
            |q| q.failed,
        ),
        (
            "reprow_queue_paused",
            Kind::Gauge,
            "1 when dispatch is stopped by /control.",
            |q| u64::from(q.paused),
        ),
    ];
    for (name, kind, help, get) in families {
        e.family(name, kind, help);
        for (q, s) in queues {
            e.sample(name, &[("queue", q)], get(s) as f64);
        }
    }
}

/// A FIFO's or Q4M table's figures in the durable queue's shape, from the process counters
/// (the process feeds one queue): enqueued = jobs read, dispatched = attempts, in flight now.
/// Depths a FIFO cannot know (waiting in the pipe, deferred) stay 0.
pub fn source_queue_stats(s: &Snapshot) -> QueueStats {
    QueueStats {
        total_pushes: s.received,
        total_pops: s.dispatched,
        total_successes: s.succeeded,
        total_retries: s.retried,
        total_failed_jobs: s.failed,
        grabbed: u64::try_from(s.in_flight).unwrap_or(0),
        ..QueueStats::default()
    }
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = parse_statm_resident(&text)?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())?;
    Some(pages * page)
}

/// The resident page count: the second field of `statm`.
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm() {
        assert_eq!(
            parse_statm_resident("5123 1024 300 10 0 900 0\n"),
            Some(1024)
        );
        assert_eq!(parse_statm_resident("5123"), None);
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn queue_series_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_QUEUE_SERIES + 5 {
            m.queue(&Arc::from(format!("q{i}").as_str()))
                .worker_seconds
                .observe(1);
        }
        let all = m.queues();
        assert_eq!(all.len(), MAX_QUEUE_SERIES + 1);
        let other = all.iter().find(|(k, _)| &**k == OTHER_QUEUES).unwrap();
        assert_eq!(other.1.worker_seconds.snapshot().count, 5);
    }
}
