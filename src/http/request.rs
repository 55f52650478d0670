//! Sans-IO HTTP/1.1 request parsing for the API server: bytes in, requests out, no sockets, so
//! it can be fuzzed and benchmarked. The head is parsed by `httparse`; the body reuses the
//! response side's [`BodyDecoder`] (Content-Length and chunked framing are the same rules).

use bytes::{Buf, Bytes, BytesMut};

use super::body::{BodyDecoder, BodyFraming};

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// Most `ce-*` headers one request may carry: a CloudEvent has 4 required attributes, a few
/// optional ones and its extensions; each is stored with the job.
pub const MAX_CE_HEADERS: usize = 32;

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, as sent (case-sensitive per RFC 9110).
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The query string, without `?` (may be empty).
    pub query: String,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// `X-Reprow-Lease`, if sent: a pull worker's lease token.
    pub lease: Option<String>,
    /// `X-presque-workerid`, if sent: a presque worker's id, for its counts.
    pub worker_id: Option<String>,
    /// `X-Reprow-Ordering-Key`, if sent: the ordering key of the job a presque push carries
    /// (its body is the payload, so it cannot carry the key).
    pub ordering_key: Option<String>,
    /// `Host`: exactly one in HTTP/1.1 (checked here), at most one in HTTP/1.0.
    pub host: Option<String>,
    /// `Origin`, if sent (browsers send it on every cross-origin request but simple GETs).
    pub origin: Option<String>,
    /// `Sec-Fetch-Site`, if sent (`same-origin`, `same-site`, `cross-site`, `none`).
    pub fetch_site: Option<String>,
    /// `Sec-Fetch-Mode`, if sent (`navigate` for a page the user opens).
    pub fetch_mode: Option<String>,
    /// `Idempotency-Key`, if sent (at most one), as sent: the enqueue routes parse it.
    pub idempotency_key: Option<String>,
    /// `traceparent`, if sent (several are joined with `,`, which no valid one contains, so
    /// they are refused as the W3C Trace Context says).
    pub traceparent: Option<String>,
    /// `tracestate`, if sent (several are joined with `,`, as one list).
    pub tracestate: Option<String>,
    /// `ce-*` headers (a CloudEvent in the HTTP binding's binary mode), names in lower case,
    /// as sent; at most [`MAX_CE_HEADERS`] (more is malformed).
    pub cloudevents: Vec<(String, String)>,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// The body (empty when none).
    pub body: Bytes,
}

/// Why a request was refused; each maps to an HTTP status and closes the connection, since the
/// stream can no longer be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Bad syntax or framing (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head exceeds the limit (431).
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The body exceeds the limit (413).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A transfer coding other than chunked (501).
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
}

impl RequestError {
    /// The status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            RequestError::HeadTooLarge(_) => 431,
            RequestError::BodyTooLarge(_) => 413,
            RequestError::TransferEncoding => 501,
        }
    }
}

/// What one call to [`RequestParser::parse`] came to.
// The request is moved out at once by the caller; boxing it would cost an allocation per
// request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// A whole request.
    Request(Request),
    /// The client sent `Expect: 100-continue`: answer `100 Continue`, then keep parsing.
    Continue,
    /// Need more bytes.
    Partial,
}

/// Headers that must not appear twice: which of two values to believe is exactly what a proxy
/// in front and reprow could disagree on.
const SINGLE: [&str; 7] = [
    "host",
    "idempotency-key",
    "authorization",
    "origin",
    "sec-fetch-site",
    "x-reprow-lease",
    "x-reprow-ordering-key",
];

/// Appends a repeated header's value to the ones before it, as one comma-separated list.
fn join(to: &mut Option<String>, value: &str) {
    match to {
        Some(v) => {
            v.push(',');
            v.push_str(value);
        }
        None => *to = Some(value.to_string()),
    }
}

enum State {
    Head,
    Body(Box<Request>, BodyDecoder),
}

/// Incremental parser for one connection.
pub struct RequestParser {
    max_head: usize,
    max_body: usize,
    state: State,
}

impl RequestParser {
    /// A parser with limits on head and body size.
    pub fn new(max_head: usize, max_body: usize) -> RequestParser {
        RequestParser {
            max_head,
            max_body,
            state: State::Head,
        }
    }

    /// The head of the request whose body is being read: what `Expect: 100-continue` is
    /// decided on before the body is asked for.
    pub fn pending_head(&self) -> Option<&Request> {
        match &self.state {
            State::Body(req, _) => Some(req),
            State::Head => None,
        }
    }

    /// Whether a request has started but not finished (for the slow-client deadline).
    pub fn is_mid_body(&self) -> bool {
        matches!(self.state, State::Body(..))
    }

    /// Consumes from `buf` what it can.
    ///
    /// # Errors
    /// [`RequestError`]; the connection must be answered and closed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Progress, RequestError> {
        if let State::Body(_, dec) = &mut self.state {
            let done = dec.decode(buf, false).map_err(|e| match e {
                super::error::ResponseError::BodyTooLarge(n) => RequestError::BodyTooLarge(n),
                e => RequestError::Malformed(e.to_string()),
            })?;
            if !done {
                return Ok(Progress::Partial);
            }
            let State::Body(mut req, dec) = std::mem::replace(&mut self.state, State::Head) else {
                unreachable!()
            };
            req.body = dec.into_body().freeze();
            return Ok(Progress::Request(*req));
        }
        // Skip blank lines between pipelined requests (RFC 9112 §2.2 allows them).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        // Only the first `max_head` bytes are looked at (and one more, to tell a head of exactly
        // the limit from a longer one), so the answer does not depend on how the bytes were
        // cut into reads: a malformed byte past the limit must not turn a 431 into a 400 when
        // the head happens to arrive whole (found by the `server_loop` fuzz target).
        let view = &buf[..buf.len().min(self.max_head + 1)];
        let n = match parsed.parse(view) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.max_head {
                    return Err(RequestError::HeadTooLarge(self.max_head));
                }
                return Ok(Progress::Partial);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RequestError::HeadTooLarge(self.max_head))
            }
            Err(e) => return Err(RequestError::Malformed(e.to_string())),
        };
        if n > self.max_head {
            return Err(RequestError::HeadTooLarge(self.max_head));
        }
        let method = parsed.method.unwrap_or_default().to_string();
        let target = parsed.path.unwrap_or_default();
        let version = parsed.version.unwrap_or(1);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        if !path.starts_with('/') {
            return Err(RequestError::Malformed(
                "request target must be a path".into(),
            ));
        }
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut keep_alive = version == 1;
        let mut expect_continue = false;
        let mut content_type = None;
        let mut authorization = None;
        let mut lease = None;
        let mut worker_id = None;
        let mut ordering_key = None;
        let mut host = None;
        let mut origin = None;
        let mut fetch_site = None;
        let mut fetch_mode = None;
        let mut idempotency_key = None;
        let mut traceparent: Option<String> = None;
        let mut tracestate: Option<String> = None;
        let mut cloudevents = Vec::new();
        let mut seen = [false; SINGLE.len()];
        for h in parsed.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| RequestError::Malformed(format!("header {} is not UTF-8", h.name)))?
                .trim();
            if let Some(i) = SINGLE.iter().position(|n| h.name.eq_ignore_ascii_case(n)) {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(RequestError::Malformed(format!(
                        "more than one {} header",
                        h.name
                    )));
                }
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = super::body::parse_content_length(value.as_bytes()).ok_or_else(|| {
                    RequestError::Malformed(
                        "invalid Content-Length (digits only, RFC 9110 §8.6)".into(),
                    )
                })?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(RequestError::Malformed("conflicting Content-Length".into()));
                }
                content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(RequestError::TransferEncoding);
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue = value.eq_ignore_ascii_case("100-continue");
            } else if h.name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("x-reprow-lease") {
                lease = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("x-presque-workerid") {
                worker_id = Some(value.to_string()).filter(|v| !v.is_empty());
            } else if h.name.eq_ignore_ascii_case("x-reprow-ordering-key") {
                ordering_key = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("host") {
                host = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("origin") {
                origin = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("sec-fetch-site") {
                fetch_site = Some(value.to_ascii_lowercase());
            } else if h.name.eq_ignore_ascii_case("sec-fetch-mode") {
                fetch_mode = Some(value.to_ascii_lowercase());
            } else if h.name.eq_ignore_ascii_case("idempotency-key") {
                idempotency_key = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("traceparent") {
                join(&mut traceparent, value);
            } else if h.name.eq_ignore_ascii_case("tracestate") {
                join(&mut tracestate, value);
            } else if h.name.len() > 3 && h.name[..3].eq_ignore_ascii_case("ce-") {
                if cloudevents.len() == MAX_CE_HEADERS {
                    return Err(RequestError::Malformed(format!(
                        "more than {MAX_CE_HEADERS} ce- headers"
                    )));
                }
                cloudevents.push((h.name.to_ascii_lowercase(), value.to_string()));
            }
        }
        if version == 1 && host.is_none() {
            return Err(RequestError::Malformed(
                "an HTTP/1.1 request must carry one Host header (RFC 9112 §3.2)".into(),
            ));
        }
        if chunked && version == 0 {
            // RFC 9112 §6.1: HTTP/1.0 has no Transfer-Encoding; a 1.0 peer (or a proxy in
            // front) frames this body by closing, so the framing is faulty: never guess.
            return Err(RequestError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)".into(),
            ));
        }
        if chunked && content_length.is_some() {
            // RFC 9112 §6.1: a request smuggling vector; refuse rather than guess.
            return Err(RequestError::Malformed(
                "both Content-Length and Transfer-Encoding".into(),
            ));
        }
        let framing = if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::Length(content_length.unwrap_or(0))
        };
        let decoder = BodyDecoder::try_new(framing, self.max_body).map_err(|e| match e {
            super::error::ResponseError::BodyTooLarge(n) => RequestError::BodyTooLarge(n),
            e => RequestError::Malformed(e.to_string()),
        })?;
        buf.advance(n);
        let req = Request {
            method,
            path,
            query,
            content_type,
            authorization,
            lease,
            worker_id,
            ordering_key,
            host,
            origin,
            fetch_site,
            fetch_mode,
            idempotency_key,
            traceparent,
            tracestate,
            cloudevents,
            keep_alive,
            body: Bytes::new(),
        };
        if decoder.is_done() {
            return Ok(Progress::Request(req));
        }
        self.state = State::Body(Box::new(req), decoder);
        if expect_continue && buf.is_empty() {
            return Ok(Progress::Continue);
        }
        self.parse(buf)
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
