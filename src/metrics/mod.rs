//! What `GET /metrics` shows: histograms recorded by the cores and the store thread, plus the
//! counters in [`Stats`](crate::stats::Stats) and the store's per-queue figures, rendered in
//! Prometheus' text format with a `reprow_` prefix.
//!
//! # Layout
//! - [`exposition`]: the text format, sans-IO.
//! - [`worker_limits`]: the families of the worker origins with limits.

pub mod exposition;
pub mod worker_limits;

use exposition::{Encoder, Kind};

use crate::{
    lifecycle::Phase,
    stats::{
        reachability::OriginView,
        timings::{QueueSnapshot, StoreMetrics},
        Snapshot,
    },
    store::QueueStats,
};

/// Everything one scrape shows.
pub struct Scrape<'a> {
    /// The process's counters and gauges, read once for the whole scrape.
    pub stats: Snapshot,
    /// Shown as `reprow_phase` (one series per phase, 1 for the current one).
    pub phase: Phase,
    /// The durable queue's per-queue figures, when it runs.
    pub queues: &'a [(String, QueueStats)],
    /// Histograms per queue, summed over the cores ([`crate::stats::Stats::histograms`]).
    pub histograms: &'a [(std::sync::Arc<str>, QueueSnapshot)],
    /// The store's histograms, when it runs.
    pub store: Option<&'a StoreMetrics>,
    /// Resident memory, when readable.
    pub rss_bytes: Option<u64>,
    /// Worker origins that refused a connection while this process ran.
    pub workers: &'a [OriginView],
    /// Worker origins with limits (`workers:`).
    pub worker_limits: &'a [crate::stats::worker_limits::WorkerLimitView],
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
    worker_limits::render(&mut e, s.worker_limits);
    queue_families(&mut e, s.queues);
    let histos = s.histograms;
    e.family(
        "reprow_queue_worker_seconds",
        Kind::Histogram,
        "Worker request time per delivery attempt, by queue.",
    );
    for (q, m) in histos {
        e.histogram(
            "reprow_queue_worker_seconds",
            &[("queue", q)],
            &m.worker_seconds,
        );
    }
    e.family(
        "reprow_queue_enqueue_to_done_seconds",
        Kind::Histogram,
        "Time from enqueue to the worker's success, retries included, by queue.",
    );
    for (q, m) in histos {
        e.histogram(
            "reprow_queue_enqueue_to_done_seconds",
            &[("queue", q)],
            &m.enqueue_to_done_seconds,
        );
    }
    if let Some(store) = s.store {
        e.family(
            "reprow_store_commit_seconds",
            Kind::Histogram,
            "Duration of one store commit's durable point: the synced write-ahead log append (or LMDB commit).",
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
        e.family(
            "reprow_store_checkpoint_seconds",
            Kind::Histogram,
            "Duration of one store checkpoint: the LMDB commit of the write-ahead log's changes.",
        );
        e.histogram(
            "reprow_store_checkpoint_seconds",
            &[],
            &store.checkpoint_seconds.snapshot(),
        );
    }
    e.finish()
}

fn process_counters(e: &mut Encoder, st: &Snapshot) {
    let counters: [(&str, &str, u64); 12] = [
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
            "reprow_records_unwritten_total",
            "Job records the failed or pending file could not take; each is in the error log.",
            st.records_unwritten,
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
}
