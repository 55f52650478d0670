//! The pull completion log: the completion line of a pull worker's ack or failure report.
//!
//! Pushed jobs are logged by the cores when the worker answers; a pull worker's ack (`Op::Ack`)
//! or failure report (`Op::Nack`) is logged here instead. A line is held with its op and
//! written only once the batch holding it is committed, so the log never shows a completion
//! that a failed commit undid. The line itself is written by
//! [`Line::write`](crate::telemetry::completion_line::Line::write), as the cores' are.

use crate::{
    store::record::JobRecord,
    telemetry::completion_line::{Action, Line},
};

/// A pull worker's completion line, held until the commit: the owned fields of a [`Line`].
pub(super) struct PullLog {
    pub(super) action: Action,
    queue: String,
    category: String,
    id: u64,
    /// Time since the lease began, ms (0 for a job pulled without one).
    elapsed: u64,
    retry_count: u32,
    /// Set for a retry: the backoff before the job is due again, ms.
    pub(super) retry_delay: Option<u64>,
    /// The worker's message; `None` for an ack ("Job done.").
    message: Option<String>,
    /// The job's trace id, from its stored `traceparent`.
    trace_id: Option<String>,
}

impl PullLog {
    /// The line for the pulled job `rec` of `queue`, leased `elapsed` ms ago.
    pub(super) fn new(
        action: Action,
        queue: &str,
        rec: &JobRecord,
        elapsed: u64,
        message: Option<String>,
    ) -> PullLog {
        PullLog {
            action,
            queue: queue.to_string(),
            category: rec.category.clone(),
            id: rec.id,
            elapsed,
            retry_count: rec.attempts,
            retry_delay: None,
            message,
            trace_id: crate::http::trace::find(&rec.headers).map(|t| t.trace_id_hex()),
        }
    }

    pub(super) fn emit(self) {
        Line {
            action: self.action,
            queue: &self.queue,
            category: &self.category,
            id: self.id,
            http_status: None,
            elapsed_ms: self.elapsed,
            retry_count: self.retry_count,
            retry_delay_ms: self.retry_delay,
            payload: None,
            pulled: Some(true),
            message: self.message.as_deref().unwrap_or("Job done."),
            trace_id: self.trace_id.as_deref(),
        }
        .write();
    }
}
