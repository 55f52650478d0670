//! One log line per delivery's end, with fireworq's fields (`action`, `queue`, `category`, `id`,
//! `status`, `elapsed` in ms, `retry_count`, and the worker's `message`), so a log pipeline
//! built for fireworq reads reprow's too; `trace_id` when the job carries a W3C `traceparent`. The payload is added only with `log_payloads: true`.
//!
//! [`Line::write`] is the only writer of these lines: the cores log pushed jobs through [`log`],
//! the store logs a pull worker's ack or failure report after its commit; both build a [`Line`].

use std::time::Duration;

use crate::job::{Failure, Job};

/// Log target of completion lines, for filtering (`log_level: warn,reprow::job=info`).
pub const TARGET: &str = "reprow::job";

/// How a delivery ended.
#[derive(Debug, Clone, Copy)]
pub enum Completion<'a> {
    /// The worker finished the job.
    Done,
    /// It runs again after `delay`.
    Retry {
        /// The wait before the next attempt.
        delay: Duration,
        /// The worker's answer or the transport error, for the line's message.
        failure: &'a Failure,
    },
    /// It failed for good: `permanent` (a 4xx) or retries exhausted.
    Failed {
        /// The worker's answer or the transport error, for the line's message.
        failure: &'a Failure,
        /// A permanent failure rather than exhausted retries.
        permanent: bool,
    },
}

/// A line's `action` (and from it, its `status` and level): fireworq's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `complete` / `completed`, at INFO.
    Complete,
    /// `retry` / `failed`, at INFO: the job runs again.
    Retry,
    /// `fail` / `failed` (`permanently_failed` when `permanent`), at WARN: the job is in the
    /// failed log.
    Fail {
        /// The worker refused the job for good (a 4xx), rather than retries running out.
        permanent: bool,
    },
}

impl Action {
    /// The `action` field.
    pub fn name(self) -> &'static str {
        match self {
            Action::Complete => "complete",
            Action::Retry => "retry",
            Action::Fail { .. } => "fail",
        }
    }

    /// The `status` field.
    pub fn status(self) -> &'static str {
        match self {
            Action::Complete => "completed",
            Action::Retry | Action::Fail { permanent: false } => "failed",
            Action::Fail { permanent: true } => "permanently_failed",
        }
    }
}

/// The fields of one completion line; absent options are left out of the line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Gives the `action` and `status` fields and the level.
    pub action: Action,
    /// The source's queue name (a FIFO's or SQS queue's configured name, or a store queue).
    pub queue: &'a str,
    /// fireworq's category (the queue's name for presque jobs).
    pub category: &'a str,
    /// The id its source gave the job (unique per source, not across sources).
    pub id: u64,
    /// The worker's HTTP status, when it answered one.
    pub http_status: Option<u16>,
    /// Worker time (pushed) or time since the lease (pulled), ms.
    pub elapsed_ms: u64,
    /// Attempts before this one.
    pub retry_count: u32,
    /// For a retry: the wait before the next attempt, ms.
    pub retry_delay_ms: Option<u64>,
    /// The payload, only with `log_payloads: true`.
    pub payload: Option<&'a str>,
    /// `Some(true)` for a pull worker's ack or failure report; `None` for pushed jobs.
    pub pulled: Option<bool>,
    /// The line's message: "Job done." or the failure's message.
    pub message: &'a str,
    /// The job's W3C trace id (32 hex digits), when it carries a `traceparent`: the line can
    /// be found from a producer's or worker's trace.
    pub trace_id: Option<&'a str>,
}

impl Line<'_> {
    /// Writes the line: WARN for a failure for good, INFO otherwise.
    pub fn write(&self) {
        let Line {
            action,
            queue,
            category,
            id,
            http_status,
            elapsed_ms: elapsed,
            retry_count,
            retry_delay_ms: retry_delay,
            payload,
            pulled,
            message,
            trace_id,
        } = *self;
        let status = action.status();
        if let Action::Fail { .. } = action {
            tracing::warn!(
                target: TARGET, action = action.name(), queue, category, id, status, http_status,
                elapsed, retry_count, retry_delay, payload, pulled, trace_id, "{message}"
            );
        } else {
            tracing::info!(
                target: TARGET, action = action.name(), queue, category, id, status, http_status,
                elapsed, retry_count, retry_delay, payload, pulled, trace_id, "{message}"
            );
        }
    }
}

/// Logs the end of one delivery of `job` (a pushed job, from its core).
pub fn log(job: &Job, category: &str, how: Completion<'_>, elapsed_ms: u64) {
    let payload = crate::telemetry::log_payloads().then(|| String::from_utf8_lossy(&job.payload));
    let trace_id = crate::http::trace::find(&job.headers).map(|t| t.trace_id_hex());
    let (action, failure, retry_delay_ms) = match how {
        Completion::Done => (Action::Complete, None, None),
        Completion::Retry { delay, failure } => {
            (Action::Retry, Some(failure), Some(delay.as_millis() as u64))
        }
        Completion::Failed { failure, permanent } => {
            (Action::Fail { permanent }, Some(failure), None)
        }
    };
    Line {
        action,
        queue: &job.queue,
        category,
        id: job.id,
        http_status: failure.and_then(|f| f.status),
        elapsed_ms,
        retry_count: job.attempts.saturating_sub(1),
        retry_delay_ms,
        payload: payload.as_deref(),
        pulled: None,
        message: failure.map_or("Job done.", |f| &f.message),
        trace_id: trace_id.as_deref(),
    }
    .write();
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn each_action_has_fireworqs_action_and_status() {
        let table = [
            (Action::Complete, "complete", "completed"),
            (Action::Retry, "retry", "failed"),
            (Action::Fail { permanent: false }, "fail", "failed"),
            (
                Action::Fail { permanent: true },
                "fail",
                "permanently_failed",
            ),
        ];
        for (a, name, status) in table {
            assert_eq!((a.name(), a.status()), (name, status), "{a:?}");
        }
    }
}
