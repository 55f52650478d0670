//! Encoding the head of a job request toward a worker.

use super::{headers::names, trace};

/// Builds request heads. The constant part (request line, Host, User-Agent) is rendered once;
/// per job only the variable headers are appended, into a buffer the caller reuses.
#[derive(Debug, Clone)]
pub struct RequestEncoder {
    prefix: Vec<u8>,
    /// Where the request target ends in `prefix` (the space before `HTTP/1.1`), so a job that
    /// names its own path reuses everything after it.
    target_end: usize,
}

/// The per-job fields of a request head.
#[derive(Debug)]
pub struct RequestMeta<'a> {
    /// `Content-Type` of the payload.
    pub content_type: &'a str,
    /// Payload length in bytes.
    pub content_length: usize,
    /// Sent as `X-Reprow-Job-Id`.
    pub job_id: u64,
    /// Sent as `X-Reprow-Queue`.
    pub queue: &'a str,
    /// 1-based attempt.
    pub attempt: u32,
    /// RFC 3339 enqueue time.
    pub enqueued_at: &'a str,
    /// Extra headers carried by the job; validated when the job was read.
    pub extra: &'a [(String, String)],
    /// This attempt's span id (reprow's delivery span): a valid `traceparent` among `extra`
    /// is sent with it as the parent id, the trace id and flags kept (W3C Trace Context);
    /// 0 sends `extra` as it is.
    pub span_id: u64,
    /// A request target replacing the worker URL's, checked with
    /// [`is_valid_request_path`](super::headers::is_valid_request_path) when the job was read.
    pub path: Option<&'a str>,
}

impl RequestEncoder {
    /// An encoder for `POST path_and_query` to `host` (the Host header value).
    pub fn new(host: &str, path_and_query: &str) -> Self {
        Self::with_user_agent(host, path_and_query, None)
    }

    /// As [`Self::new`], sending `user_agent` (validated by the config) instead of
    /// `reprow/<version>` when given.
    pub fn with_user_agent(host: &str, path_and_query: &str, user_agent: Option<&str>) -> Self {
        let mut prefix = Vec::with_capacity(128);
        prefix.extend_from_slice(b"POST ");
        prefix.extend_from_slice(path_and_query.as_bytes());
        let target_end = prefix.len();
        prefix.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        prefix.extend_from_slice(host.as_bytes());
        prefix.extend_from_slice(b"\r\nUser-Agent: ");
        match user_agent {
            Some(ua) => prefix.extend_from_slice(ua.as_bytes()),
            None => {
                prefix.extend_from_slice(b"reprow/");
                prefix.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
            }
        }
        prefix.extend_from_slice(b"\r\n");
        RequestEncoder { prefix, target_end }
    }

    /// Appends a complete request head (ending in the blank line) to `out`. The body is not
    /// copied: the client writes it after this head in the same vectored write.
    pub fn encode_head(&self, meta: &RequestMeta<'_>, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        match meta.path {
            None => out.extend_from_slice(&self.prefix),
            Some(path) => self.routed_prefix(path, out),
        }
        push_header(out, "Content-Type", meta.content_type.as_bytes());
        push_header(
            out,
            "Content-Length",
            num.format(meta.content_length).as_bytes(),
        );
        push_header(out, names::JOB_ID, num.format(meta.job_id).as_bytes());
        push_header(out, names::QUEUE, meta.queue.as_bytes());
        push_header(out, names::ATTEMPT, num.format(meta.attempt).as_bytes());
        push_header(out, names::ENQUEUED_AT, meta.enqueued_at.as_bytes());
        for (k, v) in meta.extra {
            if meta.span_id != 0 && k.eq_ignore_ascii_case(trace::TRACEPARENT) {
                if let Some(tp) = trace::TraceParent::parse(v) {
                    out.extend_from_slice(k.as_bytes());
                    out.extend_from_slice(b": ");
                    tp.child(meta.span_id).write(out);
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
            }
            push_header(out, k, v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The constant part with `path` as the request target. Rare (Elastic Beanstalk's routed
    /// messages), so kept out of line: the common head stays one copy of `prefix`.
    #[cold]
    #[inline(never)]
    fn routed_prefix(&self, path: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&self.prefix[self.target_end..]);
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::{is_valid_request_path, MAX_REQUEST_PATH};

    #[test]
    fn request_head_layout() {
        let enc = RequestEncoder::new("127.0.0.1:5000", "/jobs?x=1");
        let mut out = Vec::new();
        let extra = vec![
            ("X-Trace".to_string(), "abc".to_string()),
            (
                "traceparent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            ),
            ("tracestate".to_string(), "congo=t61rcWkgMzE".to_string()),
            // Only `traceparent` is a trace context: another header is sent as it is.
            (
                "X-Upstream-Parent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            ),
        ];
        enc.encode_head(
            &RequestMeta {
                content_type: "application/json",
                content_length: 12,
                job_id: 42,
                queue: "q",
                attempt: 3,
                enqueued_at: "2026-01-01T00:00:00.000Z",
                extra: &extra,
                span_id: 0xabc,
                path: None,
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text
            .starts_with("POST /jobs?x=1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: reprow/"));
        assert!(text.contains("\r\nContent-Length: 12\r\n"));
        assert!(text.contains("\r\nX-Reprow-Job-Id: 42\r\n"));
        assert!(text.contains("\r\nX-Reprow-Attempt: 3\r\n"));
        assert!(text.contains("\r\nX-Trace: abc\r\n"));
        // The trace id and flags kept, this attempt's span as the parent; the state unchanged.
        assert!(text.contains(
            "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01\r\n"
        ));
        assert!(text.contains("\r\ntracestate: congo=t61rcWkgMzE\r\n"));
        assert!(text.contains(
            "\r\nX-Upstream-Parent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        ));
        assert!(text.ends_with("\r\n\r\n"));
        // The head must parse as a request.
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(text.as_bytes()).unwrap().is_complete());
    }

    #[test]
    fn a_job_path_replaces_only_the_request_target() {
        let enc = RequestEncoder::with_user_agent("h:1", "/jobs?x=1", Some("aws-sqsd/1.1"));
        let meta = |path| RequestMeta {
            content_type: "application/json",
            content_length: 0,
            job_id: 1,
            queue: "q",
            attempt: 1,
            enqueued_at: "2026-01-01T00:00:00.000Z",
            extra: &[],
            span_id: 0,
            path,
        };
        let (mut plain, mut routed) = (Vec::new(), Vec::new());
        enc.encode_head(&meta(None), &mut plain);
        enc.encode_head(&meta(Some("/tasks/backup?full=1")), &mut routed);
        let (plain, routed) = (
            String::from_utf8(plain).unwrap(),
            String::from_utf8(routed).unwrap(),
        );
        assert!(plain
            .starts_with("POST /jobs?x=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: aws-sqsd/1.1\r\n"));
        assert_eq!(
            routed,
            plain.replacen("/jobs?x=1", "/tasks/backup?full=1", 1),
            "only the target differs"
        );
        assert!(is_valid_request_path("/tasks/backup?full=1"));
        for bad in ["", "tasks", "/a b", "/a\r\nX: 1", "http://evil/", "/é"] {
            assert!(!is_valid_request_path(bad), "{bad:?}");
        }
        assert!(is_valid_request_path(&format!(
            "/{}",
            "a".repeat(MAX_REQUEST_PATH - 1)
        )));
        assert!(!is_valid_request_path(&format!(
            "/{}",
            "a".repeat(MAX_REQUEST_PATH)
        )));
    }
}
