//! A job as the dispatcher sees it, and the outcome a worker's answer maps to.

pub mod classify;
pub mod retry;
pub mod target;

pub use classify::classify;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;

/// One unit of work. Cheap to clone: the payload is reference-counted, never copied.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id, unique per source (for the FIFO: increasing across restarts).
    pub id: u64,
    /// Queue name, sent as `X-Reprow-Queue`.
    pub queue: Arc<str>,
    /// The payload bytes, sent unchanged as the request body.
    pub payload: Bytes,
    /// `Content-Type` of the payload.
    pub content_type: Arc<str>,
    /// Extra request headers, already validated (see `http::headers::is_allowed_header_name`).
    pub headers: Arc<[(String, String)]>,
    /// Deliveries so far; the next request carries `attempts + 1`.
    pub attempts: u32,
    /// When the source first saw the job.
    pub enqueued_at: SystemTime,
    /// Request target to POST to instead of the worker URL's path (Elastic Beanstalk's
    /// `beanstalk.sqsd.path`), already checked with `http::headers::is_valid_request_path`.
    /// `None` for nearly every job.
    pub path: Option<Arc<str>>,
}

/// The default payload type, per the worker contract.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered 2xx: the job is finished.
    Done,
    /// Try again later. `after` is the worker's `Retry-After`, already clamped, if it sent one.
    Retry {
        /// Worker-requested delay.
        after: Option<Duration>,
        /// Why, for logs and the failed file once retries are exhausted.
        reason: Failure,
    },
    /// Permanent failure (a 4xx other than 408/425/429): never retried.
    Fail(Failure),
}

/// The last thing that went wrong with a job, kept for the failed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status, when the worker answered.
    pub status: Option<u16>,
    /// The worker's body (truncated) or the transport error.
    pub message: String,
}

impl Failure {
    /// The failure recorded when the last allowed attempt failed with `last`.
    pub fn exhausted(attempts: u32, last: &Failure) -> Failure {
        Failure {
            status: last.status,
            message: format!(
                "retries exhausted after {attempts} attempt{}: {}",
                if attempts == 1 { "" } else { "s" },
                last.message
            ),
        }
    }

    /// The last answer inside a failure made by [`Failure::exhausted`] (any other is
    /// returned as it is). The durable queue's failed log keeps the worker's own message, as
    /// fireworq's does: its `fail_count` already says how many attempts ran.
    pub fn last_answer(&self) -> Failure {
        let message = self
            .message
            .strip_prefix("retries exhausted after ")
            .and_then(|rest| rest.split_once(" attempt"))
            .and_then(|(n, rest)| {
                let message = rest
                    .strip_prefix("s: ")
                    .or_else(|| rest.strip_prefix(": "))?;
                Some((n, message))
            })
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(self.message.as_str(), |(_, m)| m);
        Failure {
            status: self.status,
            message: message.to_string(),
        }
    }

    /// A failure from a transport error (no status).
    pub fn transport(message: impl Into<String>) -> Failure {
        Failure {
            status: None,
            message: message.into(),
        }
    }
}

/// Maps a worker's status to an outcome, per the worker contract: 2xx done; 408, 425, 429 and
/// 5xx retried; any other status (other 4xx, unfollowed 3xx) a permanent failure.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Done;
    }
    let failure = Failure {
        status: Some(status),
        message: message_from_body(body),
    };
    match status {
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            after: retry_after,
            reason: failure,
        },
        _ => Outcome::Fail(failure),
    }
}

/// Longest worker message kept for logs and the failed file.
const MAX_MESSAGE_BYTES: usize = 1024;

/// The start of a worker's body as text, for logs and the failed log.
pub(crate) fn message_from_body(body: &[u8]) -> String {
    let end = body.len().min(MAX_MESSAGE_BYTES);
    // A body's trailing newline (`"error\n"`, the usual end of a text answer) is not part of
    // its message: kept, it ended the log line's message on a line of its own.
    String::from_utf8_lossy(body[..end].trim_ascii_end()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_answer_comes_back_out_of_an_exhausted_failure() {
        let last = Failure {
            status: Some(200),
            message: "boom: 3 attempts: x".into(),
        };
        assert_eq!(Failure::exhausted(3, &last).last_answer(), last);
        assert_eq!(last.last_answer(), last);
        let once = Failure::exhausted(1, &last);
        assert_eq!(
            once.message,
            "retries exhausted after 1 attempt: boom: 3 attempts: x"
        );
        assert_eq!(once.last_answer(), last);
        assert_eq!(message_from_body(b"error\r\n \n"), "error");
        assert_eq!(message_from_body(b"  two\nlines\n"), "  two\nlines");
        let other = Failure::transport("retries exhausted after many attempts: x");
        assert_eq!(other.last_answer(), other);
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(200, None, b""), Outcome::Done);
        assert_eq!(classify_status(204, None, b""), Outcome::Done);
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert!(
                matches!(classify_status(s, None, b""), Outcome::Retry { .. }),
                "{s}"
            );
        }
        for s in [301, 400, 401, 404, 410, 422] {
            assert!(
                matches!(classify_status(s, None, b""), Outcome::Fail(_)),
                "{s}"
            );
        }
        let Outcome::Fail(f) = classify_status(400, None, b"bad payload") else {
            panic!()
        };
        assert_eq!(
            f,
            Failure {
                status: Some(400),
                message: "bad payload".into()
            }
        );
    }
}
