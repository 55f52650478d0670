//! One log line per delivery's end, with fireworq's fields (`action`, `queue`, `category`, `id`,
//! `status`, `elapsed` in ms, `retry_count`, and the worker's `message`), so a log pipeline
//! built for fireworq reads reprow's too. The payload is added only with `log_payloads: true`.

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
        /// What went wrong.
        failure: &'a Failure,
    },
    /// It failed for good: `permanent` (a 4xx) or retries exhausted.
    Failed {
        /// What went wrong.
        failure: &'a Failure,
        /// A permanent failure rather than exhausted retries.
        permanent: bool,
    },
}

/// Logs the end of one delivery of `job`.
pub fn log(job: &Job, category: &str, how: Completion<'_>, elapsed_ms: u64) {
    let payload = crate::telemetry::log_payloads().then(|| String::from_utf8_lossy(&job.payload));
    let payload = payload.as_deref();
    let retry_count = job.attempts.saturating_sub(1);
    let (queue, id) = (&*job.queue, job.id);
    match how {
        Completion::Done => tracing::info!(
            target: TARGET, action = "complete", queue, category, id, status = "completed",
            elapsed = elapsed_ms, retry_count, payload, "Job done."
        ),
        Completion::Retry { delay, failure } => tracing::info!(
            target: TARGET, action = "retry", queue, category, id, status = "failed",
            http_status = failure.status, elapsed = elapsed_ms, retry_count,
            retry_delay = delay.as_millis() as u64, payload, "{}", failure.message
        ),
        Completion::Failed { failure, permanent } => tracing::warn!(
            target: TARGET, action = "fail", queue, category, id,
            status = if permanent { "permanently_failed" } else { "failed" },
            http_status = failure.status, elapsed = elapsed_ms, retry_count, payload,
            "{}", failure.message
        ),
    }
}
