//! Header names reprow uses, and the checks that keep a job's headers and request target from
//! injecting anything into a request head.

/// Header names reprow sends or reads; one spelling, used everywhere.
pub mod names {
    /// The job's id, as the source knows it.
    pub const JOB_ID: &str = "X-Reprow-Job-Id";
    /// The queue the job came from.
    pub const QUEUE: &str = "X-Reprow-Queue";
    /// 1-based delivery attempt.
    pub const ATTEMPT: &str = "X-Reprow-Attempt";
    /// When the job entered the queue, RFC 3339 in UTC.
    pub const ENQUEUED_AT: &str = "X-Reprow-Enqueued-At";
    /// The worker's requested retry delay.
    pub const RETRY_AFTER: &str = "retry-after";
}

/// Whether `name` may be sent as a header name (an RFC 9110 token) and is not one reprow
/// sets itself. Checked when a job is read, so a job can never inject header lines.
pub fn is_allowed_header_name(name: &str) -> bool {
    const RESERVED: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "content-type",
    ];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r))
        && !name.to_ascii_lowercase().starts_with("x-reprow-")
}

/// Longest request target a job may name.
pub const MAX_REQUEST_PATH: usize = 2048;

/// Whether `path` may replace the worker URL's request target: an origin-form target (`/`
/// then visible ASCII, no spaces; a query is allowed), at most [`MAX_REQUEST_PATH`] bytes.
/// Anything else could split the request line.
pub fn is_valid_request_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_REQUEST_PATH
        && path.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// Whether `value` is a safe header value: visible ASCII, spaces and tabs; no CR or LF.
pub fn is_allowed_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_validation() {
        assert!(is_allowed_header_name("X-Trace-Id"));
        assert!(!is_allowed_header_name("Bad Name"));
        assert!(!is_allowed_header_name("Content-Length"));
        assert!(!is_allowed_header_name("x-reprow-attempt"));
        assert!(is_allowed_header_value("a b\tc"));
        assert!(!is_allowed_header_value("a\r\nInjected: 1"));
    }
}
