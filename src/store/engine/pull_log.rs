//! The pull completion log: the completion line of a pull worker's ack or failure report.
//!
//! Pushed jobs are logged by the cores when the worker answers; a pull worker's ack (`Op::Ack`)
//! or failure report (`Op::Nack`) is logged here instead. A line is held with its op and
//! written only once the batch holding it is committed, so the log never shows a completion
//! that a failed commit undid.

use crate::store::record::JobRecord;

/// for the fields).
/// A pull worker's completion line, held until the commit (see [`crate::telemetry::completion_line`]
/// for the fields).
pub(super) struct PullLog {
    pub(super) action: &'static str,
    pub(super) status: &'static str,
    pub(super) queue: String,
    pub(super) category: String,
    pub(super) id: u64,
    pub(super) elapsed: u64,
    pub(super) retry_count: u32,
    pub(super) retry_delay: Option<u64>,
    pub(super) message: Option<String>,
}

impl PullLog {
    /// The line for the pulled job `rec` of `queue`, leased `elapsed` ms ago.
    pub(super) fn new(
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

    pub(super) fn emit(self) {
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
            tracing::warn!(target: crate::telemetry::completion_line::TARGET, action, queue, category, id, status, elapsed, retry_count, pulled = true, "{message}");
        } else {
            tracing::info!(target: crate::telemetry::completion_line::TARGET, action, queue, category, id, status, elapsed, retry_count, retry_delay, pulled = true, "{message}");
        }
    }
}
