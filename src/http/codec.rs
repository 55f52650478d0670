//! Sans-IO HTTP/1.1 client codec: encodes the head of a job request and decodes a worker's
//! response from whatever bytes have arrived so far.
//!
//! Nothing here touches a socket, so the parser can be fuzzed and benchmarked on plain slices
//! (`fuzz/`, `benches/codec.rs`). The I/O loop that drives it lives in [`super::client`].

use std::time::Duration;

use bytes::{Buf, BytesMut};

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

/// Result of feeding bytes to a decoder: "need more bytes" is not an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A complete value; how many bytes of the input it used.
    Complete(T, usize),
    /// More input is needed; nothing was consumed.
    Partial,
}

/// Why a worker's response was refused. Every variant means "malformed": the job is retried.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// The status line or a header could not be parsed.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The head did not end within the configured limit.
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The body is larger than the configured limit.
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A `Content-Length` header that is not a number, or two that disagree.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A chunked body that does not follow RFC 9112 framing.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    /// The connection ended before the response was complete.
    #[error("connection closed before the response was complete")]
    Truncated,
    /// A status the client cannot act on (101 Switching Protocols).
    #[error("unexpected status {0}")]
    UnexpectedStatus(u16),
}

/// What the worker asked for in `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds.
    Delay(Duration),
    /// An HTTP-date, as seconds since the Unix epoch.
    At(std::time::SystemTime),
}

impl RetryAfter {
    /// Parses a `Retry-After` value: delta-seconds or an HTTP-date. `None` when it is neither,
    /// in which case the caller falls back to its retry policy.
    pub fn parse(value: &[u8]) -> Option<RetryAfter> {
        let text = std::str::from_utf8(value).ok()?.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            // Saturate absurd values; the policy clamps them to max_retry_after anyway.
            let secs = text.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(text).ok().map(RetryAfter::At)
    }

    /// The delay this asks for, measured from `now`; a date in the past means "now".
    pub fn delay_from(self, now: std::time::SystemTime) -> Duration {
        match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(t) => t.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// The parts of a response head the dispatcher acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// Parsed `Retry-After`, if present and valid.
    pub retry_after: Option<RetryAfter>,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// How the body is framed.
    pub body: BodyFraming,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes the connection.
    UntilClose,
}

/// Most headers a response may carry; more is treated as malformed.
const MAX_HEADERS: usize = 64;

/// Parses a response head from the start of `buf`, skipping interim 1xx responses.
///
/// # Errors
/// [`ResponseError`] when the head is invalid or longer than `max_head_bytes`.
pub fn parse_head(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Status<ResponseHead>, ResponseError> {
    let mut offset = 0;
    loop {
        let rest = &buf[offset..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > max_head_bytes {
                    return Err(ResponseError::HeadTooLarge(max_head_bytes));
                }
                return Ok(Status::Partial);
            }
            Err(e) => return Err(ResponseError::Head(e.to_string())),
        };
        if offset + n > max_head_bytes {
            return Err(ResponseError::HeadTooLarge(max_head_bytes));
        }
        let status = resp.code.unwrap_or(0);
        if status == 101 {
            return Err(ResponseError::UnexpectedStatus(status));
        }
        if (100..200).contains(&status) {
            // Interim response (100 Continue, 103 Early Hints): the real one follows.
            offset += n;
            continue;
        }
        let head = interpret(status, resp.version.unwrap_or(1), resp.headers)?;
        return Ok(Status::Complete(head, offset + n));
    }
}

fn interpret(
    status: u16,
    version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<ResponseHead, ResponseError> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after = None;
    // HTTP/1.1 defaults to persistent connections, HTTP/1.0 to closing.
    let mut keep_alive = version == 1;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = parse_content_length(h.value).ok_or(ResponseError::ContentLength)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(ResponseError::ContentLength);
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only "chunked" as the final coding frames the body; we never ask for others.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Err(ResponseError::Head("unsupported transfer-encoding".into()));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case(names::RETRY_AFTER) {
            retry_after = RetryAfter::parse(h.value);
        }
    }
    let body = if status == 204 || status == 304 {
        BodyFraming::Empty
    } else if chunked {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a message with both may
        // be a smuggling attempt, so the connection is not used again.
        if content_length.is_some() {
            keep_alive = false;
        }
        BodyFraming::Chunked
    } else if let Some(n) = content_length {
        BodyFraming::Length(n)
    } else {
        keep_alive = false;
        BodyFraming::UntilClose
    };
    Ok(ResponseHead {
        status,
        retry_after,
        keep_alive,
        body,
    })
}

/// Incremental body decoder: feed it bytes as they arrive; it keeps the body up to a limit.
#[derive(Debug)]
pub struct BodyDecoder {
    state: BodyState,
    body: BytesMut,
    max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Bytes of a Content-Length body still to come.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Bytes of the current chunk still to come.
    ChunkData(u64),
    /// Waiting for the CRLF that ends a chunk's data.
    ChunkDataEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Reading until the connection closes.
    UntilClose,
    Done,
}

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, keeping at most `max_body_bytes`.
    ///
    /// # Errors
    /// [`ResponseError::BodyTooLarge`] when a Content-Length already exceeds the limit.
    pub fn try_new(framing: BodyFraming, max_body_bytes: usize) -> Result<Self, ResponseError> {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyState::Done,
            BodyFraming::Length(n) if n > max_body_bytes as u64 => {
                return Err(ResponseError::BodyTooLarge(max_body_bytes))
            }
            BodyFraming::Length(n) => BodyState::Length(n),
            BodyFraming::Chunked => BodyState::ChunkSize,
            BodyFraming::UntilClose => BodyState::UntilClose,
        };
        Ok(BodyDecoder {
            state,
            body: BytesMut::new(),
            max_body_bytes,
        })
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// The body read so far.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the body out of the decoder.
    pub fn into_body(self) -> BytesMut {
        self.body
    }

    /// Consumes what it can of `buf` (advancing it) and reports whether the body is complete.
    /// `eof` says the peer closed the connection, which completes an until-close body and
    /// truncates any other.
    ///
    /// # Errors
    /// [`ResponseError`] for bad chunk framing, an oversized body, or a truncated body.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<bool, ResponseError> {
        loop {
            match self.state {
                BodyState::Done => return Ok(true),
                BodyState::Length(remaining) => {
                    let take = remaining.min(buf.len() as u64) as usize;
                    self.keep(&buf[..take])?;
                    buf.advance(take);
                    let left = remaining - take as u64;
                    if left == 0 {
                        self.state = BodyState::Done;
                    } else {
                        self.state = BodyState::Length(left);
                        return if eof {
                            Err(ResponseError::Truncated)
                        } else {
                            Ok(false)
                        };
                    }
                }
                BodyState::UntilClose => {
                    let chunk = buf.split();
                    self.keep(&chunk)?;
                    if eof {
                        self.state = BodyState::Done;
                    } else {
                        return Ok(false);
                    }
                }
                BodyState::ChunkSize => match find_line_end(buf, "bare LF in a chunk-size line")? {
                    None if buf.len() > MAX_CHUNK_LINE => {
                        return Err(ResponseError::Chunked("chunk-size line too long"))
                    }
                    None => {
                        return if eof {
                            Err(ResponseError::Truncated)
                        } else {
                            Ok(false)
                        }
                    }
                    Some(end) => {
                        let size = parse_chunk_size(&buf[..end])?;
                        buf.advance(end + 2);
                        self.state = if size == 0 {
                            BodyState::Trailers
                        } else {
                            if self.body.len() as u64 + size > self.max_body_bytes as u64 {
                                return Err(ResponseError::BodyTooLarge(self.max_body_bytes));
                            }
                            BodyState::ChunkData(size)
                        };
                    }
                },
                BodyState::ChunkData(remaining) => {
                    let take = remaining.min(buf.len() as u64) as usize;
                    self.keep(&buf[..take])?;
                    buf.advance(take);
                    let left = remaining - take as u64;
                    if left == 0 {
                        self.state = BodyState::ChunkDataEnd;
                    } else {
                        self.state = BodyState::ChunkData(left);
                        return if eof {
                            Err(ResponseError::Truncated)
                        } else {
                            Ok(false)
                        };
                    }
                }
                BodyState::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return if eof {
                            Err(ResponseError::Truncated)
                        } else {
                            Ok(false)
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ResponseError::Chunked("missing CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    match find_line_end(buf, "bare LF in the trailer section")? {
                        None if buf.len() > MAX_TRAILER_BYTES => {
                            return Err(ResponseError::Chunked("trailers too long"))
                        }
                        None => {
                            return if eof {
                                Err(ResponseError::Truncated)
                            } else {
                                Ok(false)
                            }
                        }
                        Some(0) => {
                            buf.advance(2);
                            self.state = BodyState::Done;
                        }
                        // Trailer fields carry nothing the dispatcher uses; skip them.
                        Some(end) => buf.advance(end + 2),
                    }
                }
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        if self.body.len() + bytes.len() > self.max_body_bytes {
            return Err(ResponseError::BodyTooLarge(self.max_body_bytes));
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where the line at the start of `buf` ends (the index of its CR), once its CRLF is there.
/// Lines in a chunked body end with CRLF (RFC 9112 §7.1); a bare LF is an error at once, not
/// a reason to wait for more bytes.
fn find_line_end(buf: &[u8], bare_lf: &'static str) -> Result<Option<usize>, ResponseError> {
    match buf.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ResponseError::Chunked(bare_lf)),
    }
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9110 §8.6) after the field's optional whitespace
/// is removed. No sign, no list, no overflow: anything a proxy in front could read differently
/// is refused.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): the size is hex digits only, the extensions
/// must follow the grammar and are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ResponseError::Chunked("invalid chunk size"));
    }
    let (hex, ext) = line.split_at(digits);
    let significant = &hex[hex.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 15 {
        return Err(ResponseError::Chunked("chunk size too large"));
    }
    let n = significant.iter().fold(0u64, |n, &b| {
        n * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
    });
    check_chunk_ext(ext)?;
    Ok(n)
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, with
/// `chunk-ext-val = token / quoted-string`.
fn check_chunk_ext(mut s: &[u8]) -> Result<(), ResponseError> {
    const BAD: ResponseError = ResponseError::Chunked("invalid chunk extension");
    while !s.is_empty() {
        s = skip_ows(s);
        if s.first() != Some(&b';') {
            return Err(BAD);
        }
        s = skip_ows(&s[1..]);
        let name = token_len(s);
        if name == 0 {
            return Err(BAD);
        }
        s = &s[name..];
        let rest = skip_ows(s);
        if rest.first() == Some(&b'=') {
            s = skip_ows(&rest[1..]);
            let len = if s.first() == Some(&b'"') {
                quoted_string_len(s).ok_or(BAD)?
            } else {
                token_len(s)
            };
            if len == 0 {
                return Err(BAD);
            }
            s = &s[len..];
        }
        // Whitespace must lead to another ';' (checked by the next round).
        if !s.is_empty() && skip_ows(s).is_empty() {
            return Err(BAD);
        }
    }
    Ok(())
}

fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Length of the `token` (RFC 9110 §5.6.2) at the start of `s`.
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .count()
}

/// Length of the `quoted-string` (RFC 9110 §5.6.4) at the start of `s`, quotes included.
fn quoted_string_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let c = *s.get(i + 1)?;
                if !(c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

/// A complete response: head and (bounded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The head.
    pub head: ResponseHead,
    /// The body, at most the decoder's limit.
    pub body: bytes::Bytes,
}

/// Decodes one whole response from a growing buffer; the state machine the client drives.
#[derive(Debug)]
pub struct ResponseDecoder {
    max_head_bytes: usize,
    max_body_bytes: usize,
    state: Option<(ResponseHead, BodyDecoder)>,
}

impl ResponseDecoder {
    /// A decoder with the given limits.
    pub fn new(max_head_bytes: usize, max_body_bytes: usize) -> Self {
        ResponseDecoder {
            max_head_bytes,
            max_body_bytes,
            state: None,
        }
    }

    /// Feeds the bytes in `buf` (consuming what belongs to this response). Returns the response
    /// once complete; `eof` says no more bytes will come.
    ///
    /// # Errors
    /// [`ResponseError`] when the response is malformed, too large, or cut short.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<Response>, ResponseError> {
        if self.state.is_none() {
            match parse_head(buf, self.max_head_bytes)? {
                Status::Partial if eof => return Err(ResponseError::Truncated),
                Status::Partial => return Ok(None),
                Status::Complete(head, n) => {
                    buf.advance(n);
                    let body = BodyDecoder::try_new(head.body, self.max_body_bytes)?;
                    self.state = Some((head, body));
                }
            }
        }
        let Some((_, body)) = self.state.as_mut() else {
            return Ok(None);
        };
        if !body.decode(buf, eof)? {
            return Ok(None);
        }
        let Some((head, body)) = self.state.take() else {
            return Ok(None);
        };
        Ok(Some(Response {
            head,
            body: body.into_body().freeze(),
        }))
    }
}

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
    /// Job id.
    pub job_id: u64,
    /// Queue name.
    pub queue: &'a str,
    /// 1-based attempt.
    pub attempt: u32,
    /// RFC 3339 enqueue time.
    pub enqueued_at: &'a str,
    /// Extra headers carried by the job; validated when the job was read.
    pub extra: &'a [(String, String)],
    /// A request target replacing the worker URL's, checked with [`is_valid_request_path`]
    /// when the job was read.
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

    const LIMIT: usize = 64 * 1024;

    /// Expected decode result: status, body and keep-alive, or the error.
    type Expected<'a> = Result<Option<(u16, &'a [u8], bool)>, ResponseError>;

    /// Feeds `input` to a fresh decoder cut at `cuts` (ascending), one read per piece, then
    /// EOF if asked. Returns the result and the bytes left in the buffer (the next pipelined
    /// response's, which the decoder must not touch).
    fn decode_cut(
        input: &[u8],
        cuts: &[usize],
        eof: bool,
    ) -> (Result<Option<Response>, ResponseError>, Vec<u8>, usize) {
        let mut dec = ResponseDecoder::new(LIMIT, LIMIT);
        let mut buf = BytesMut::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&input.len()]) {
            buf.extend_from_slice(&input[from..to]);
            from = to;
            match dec.decode(&mut buf, false) {
                Ok(None) => {}
                r => return (r, buf.to_vec(), from),
            }
        }
        let r = if eof {
            dec.decode(&mut buf, true)
        } else {
            Ok(None)
        };
        (r, buf.to_vec(), from)
    }

    /// [`decode_cut`] at one place, without the leftover bytes.
    fn decode_split(
        input: &[u8],
        split: usize,
        eof: bool,
    ) -> Result<Option<Response>, ResponseError> {
        decode_cut(input, &[split], eof).0
    }

    /// Every case is checked with the input cut at every byte boundary and at every pair of
    /// boundaries (three reads). A case that completes is also checked with another response
    /// pipelined behind it: those bytes must be left in the buffer exactly.
    fn check_all_splits(input: &[u8], eof: bool, expect: &Expected<'_>) {
        const NEXT: &[u8] = b"HTTP/1.1 299 Next\r\n";
        let want = expect
            .clone()
            .map(|o| o.map(|(s, b, k)| (s, b.to_vec(), k)));
        // A response framed by its length or chunks ends before the next one starts.
        let pipelined = !eof && matches!(expect, Ok(Some(_)));
        let mut with_next = input.to_vec();
        if pipelined {
            with_next.extend_from_slice(NEXT);
        }
        let n = input.len();
        let mut cut_sets: Vec<Vec<usize>> = (0..=n).map(|a| vec![a]).collect();
        for a in 0..=n {
            for b in a..=n {
                cut_sets.push(vec![a, b]);
            }
        }
        for cuts in &cut_sets {
            let (got, left, fed) = decode_cut(&with_next, cuts, eof);
            let got = got.map(|o| o.map(|r| (r.head.status, r.body.to_vec(), r.head.keep_alive)));
            assert_eq!(
                got,
                want,
                "input {:?} cut at {cuts:?}",
                String::from_utf8_lossy(input)
            );
            if pipelined {
                // What was fed of the next response, exactly, and nothing of this one.
                assert_eq!(
                    left,
                    &with_next[n..fed],
                    "input {:?} cut at {cuts:?}: bytes left",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn responses_at_every_split() {
        type Case<'a> = (
            &'a [u8],
            bool,
            Result<Option<(u16, &'a [u8], bool)>, ResponseError>,
        );
        let cases: Vec<Case<'_>> = vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, Ok(Some((200, b"ok", true)))),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, Ok(Some((204, b"", true)))),
            (
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false,
                Ok(Some((500, b"", false))),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
                false,
                Ok(Some((200, b"abcde", true))),
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", true, Ok(Some((200, b"until close", false)))),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
                false,
                Ok(Some((201, b"x", true))),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", true, Err(ResponseError::Truncated)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, Err(ResponseError::ContentLength)),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                Err(ResponseError::ContentLength),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                Err(ResponseError::Chunked("invalid chunk size")),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
                false,
                Err(ResponseError::Chunked("missing CRLF after chunk data")),
            ),
            (b"HTTP/1.1 101 Switching\r\n\r\n", false, Err(ResponseError::UnexpectedStatus(101))),
            (b"HTTP/1.1 200 OK\r\n", true, Err(ResponseError::Truncated)),
        ];
        for (input, eof, expect) in &cases {
            check_all_splits(input, *eof, expect);
        }
    }

    fn chunked(body: &[u8]) -> Vec<u8> {
        let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn chunk_lines_follow_rfc_9112() {
        let ok: [(&[u8], &[u8]); 7] = [
            (b"2\r\nab\r\n0\r\n\r\n", b"ab"),
            (b"2;name\r\nab\r\n0\r\n\r\n", b"ab"),
            // BWS around ';' and '=' (RFC 9112 §7.1.1).
            (b"2 ; name = value\r\nab\r\n0\r\n\r\n", b"ab"),
            (b"2;a=\"q \\\" s\";b=t;c\r\nab\r\n0;x;y\r\n\r\n", b"ab"),
            (b"00000000000000002\r\nab\r\n000\r\n\r\n", b"ab"),
            (b"a\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n", b"0123456789"),
            (b"fFfF\r\n", b""),
        ];
        for (body, want) in ok {
            if body == b"fFfF\r\n" {
                // A big chunk is fine: it waits for its data.
                assert_eq!(decode_split(&chunked(body), 0, false), Ok(None));
                continue;
            }
            check_all_splits(&chunked(body), false, &Ok(Some((200, want, true))));
        }
    }

    #[test]
    fn lenient_chunk_lines_are_refused_at_once() {
        for body in [
            &b" 2\r\nab\r\n0\r\n\r\n"[..],
            b"\t2\r\n",
            b"+2\r\n",
            b"-2\r\n",
            b"0x2\r\n",
            b"2 \r\n",
            b"2;\r\n",
            b"2;=v\r\n",
            b"2;a=\r\n",
            b"2;a=\"x\r\n",
            b"2;a b\r\n",
            b"2;a=b c\r\n",
            b"2;a\"\r\n",
            b"2;a;\r\n",
            b"2\r\r\n",
            b"10000000000000000\r\n",
            // A bare LF ends nothing: refused at once instead of waiting for a CRLF.
            b"2\nab\r\n0\r\n\r\n",
            b"2;x\nab",
            b"2\r\nab\r\n0\n\r\n",
            b"2\r\nab\r\n0\r\nT: v\n\r\n",
        ] {
            let input = chunked(body);
            for split in 0..=input.len() {
                let got = decode_split(&input, split, false);
                assert!(
                    matches!(got, Err(ResponseError::Chunked(_))),
                    "{:?} split {split}: {got:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn content_length_is_digits_only() {
        for v in [
            "+2",
            "-2",
            "0x2",
            "2 2",
            "2,2",
            "",
            "1e1",
            "18446744073709551616",
        ] {
            let input = format!("HTTP/1.1 200 OK\r\nContent-Length: {v}\r\n\r\nab");
            assert_eq!(
                decode_split(input.as_bytes(), input.len(), false),
                Err(ResponseError::ContentLength),
                "{v:?}"
            );
        }
        assert_eq!(parse_content_length(b"  42\t"), Some(42));
        assert_eq!(parse_content_length(b"007"), Some(7));
    }

    #[test]
    fn a_response_with_content_length_and_chunked_is_not_reused() {
        // RFC 9112 §6.3: chunked wins, and the connection must not carry another exchange.
        let input = chunked(b"");
        let mut input = input[..input.len() - 2].to_vec();
        input.extend_from_slice(b"Content-Length: 1\r\n\r\n2\r\nab\r\n0\r\n\r\n");
        check_all_splits(&input, false, &Ok(Some((200, b"ab", false))));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut dec = ResponseDecoder::new(LIMIT, LIMIT);
        let mut buf = BytesMut::from(&b"garbage that is not http\r\n\r\n"[..]);
        assert!(matches!(
            dec.decode(&mut buf, false),
            Err(ResponseError::Head(_))
        ));
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        while input.len() < 300 {
            input.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut dec = ResponseDecoder::new(256, LIMIT);
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(
            dec.decode(&mut buf, false),
            Err(ResponseError::HeadTooLarge(256))
        );
    }

    #[test]
    fn oversized_body_is_refused() {
        let mut dec = ResponseDecoder::new(LIMIT, 4);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf, false),
            Err(ResponseError::BodyTooLarge(4))
        );
        let mut dec = ResponseDecoder::new(LIMIT, 4);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n"[..],
        );
        assert_eq!(
            dec.decode(&mut buf, false),
            Err(ResponseError::BodyTooLarge(4))
        );
    }

    #[test]
    fn pipelined_bytes_after_a_response_are_left() {
        let mut dec = ResponseDecoder::new(LIMIT, LIMIT);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA"[..]);
        let r = dec.decode(&mut buf, false).unwrap().unwrap();
        assert_eq!(&r.body[..], b"x");
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            RetryAfter::parse(b" 120 "),
            Some(RetryAfter::Delay(Duration::from_secs(120)))
        );
        let at = RetryAfter::parse(b"Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let epoch = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(at, RetryAfter::At(epoch));
        assert_eq!(
            at.delay_from(epoch - Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            at.delay_from(epoch + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(RetryAfter::parse(b"soon"), None);
        assert_eq!(RetryAfter::parse(b"-3"), None);
        assert_eq!(
            RetryAfter::parse(b"99999999999999999999999"),
            Some(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
        );
    }

    #[test]
    fn retry_after_header_is_read() {
        let input = b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n";
        let Status::Complete(head, n) = parse_head(input, LIMIT).unwrap() else {
            panic!()
        };
        assert_eq!(n, input.len());
        assert_eq!(
            head.retry_after,
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
    }

    #[test]
    fn request_head_layout() {
        let enc = RequestEncoder::new("127.0.0.1:5000", "/jobs?x=1");
        let mut out = Vec::new();
        let extra = vec![("X-Trace".to_string(), "abc".to_string())];
        enc.encode_head(
            &RequestMeta {
                content_type: "application/json",
                content_length: 12,
                job_id: 42,
                queue: "q",
                attempt: 3,
                enqueued_at: "2026-01-01T00:00:00.000Z",
                extra: &extra,
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

    #[test]
    fn head_limit_is_exact_and_counts_interim_responses() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let n = head.len();
        assert_eq!(
            parse_head(head, n),
            Ok(Status::Complete(
                ResponseHead {
                    status: 200,
                    retry_after: None,
                    keep_alive: true,
                    body: BodyFraming::Length(0),
                },
                n
            ))
        );
        assert_eq!(
            parse_head(head, n - 1),
            Err(ResponseError::HeadTooLarge(n - 1))
        );
        // An unfinished head waits up to the limit, and is refused past it.
        let part = &head[..n - 2];
        assert_eq!(parse_head(part, n - 2), Ok(Status::Partial));
        assert_eq!(
            parse_head(part, n - 3),
            Err(ResponseError::HeadTooLarge(n - 3))
        );
        // Interim responses count toward the limit; the count returned covers them.
        let mut two = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        two.extend_from_slice(head);
        let t = two.len();
        assert!(
            matches!(parse_head(&two, t), Ok(Status::Complete(h, used)) if h.status == 200 && used == t)
        );
        assert_eq!(
            parse_head(&two, t - 1),
            Err(ResponseError::HeadTooLarge(t - 1))
        );
    }

    #[test]
    fn body_limit_is_exact() {
        let decode = |input: &[u8], max: usize, eof: bool| {
            let mut dec = ResponseDecoder::new(LIMIT, max);
            let mut buf = BytesMut::from(input);
            dec.decode(&mut buf, eof)
                .map(|r| r.map(|r| r.body.to_vec()))
        };
        let length = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(decode(length, 4, false), Ok(Some(b"abcd".to_vec())));
        assert_eq!(
            decode(length, 3, false),
            Err(ResponseError::BodyTooLarge(3))
        );
        let chunks = chunked(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n");
        assert_eq!(decode(&chunks, 4, false), Ok(Some(b"abcd".to_vec())));
        assert_eq!(
            decode(&chunks, 3, false),
            Err(ResponseError::BodyTooLarge(3))
        );
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcd";
        assert_eq!(decode(close, 4, true), Ok(Some(b"abcd".to_vec())));
        assert_eq!(decode(close, 3, true), Err(ResponseError::BodyTooLarge(3)));
    }

    #[test]
    fn chunk_size_line_and_trailer_limits_are_exact() {
        let line = |len: usize| {
            let mut v = b"1;".to_vec();
            v.resize(len, b'a');
            v
        };
        // A chunk-size line without its CRLF yet waits up to the limit, then is refused.
        assert_eq!(
            decode_split(&chunked(&line(MAX_CHUNK_LINE)), 0, false),
            Ok(None)
        );
        assert_eq!(
            decode_split(&chunked(&line(MAX_CHUNK_LINE + 1)), 0, false),
            Err(ResponseError::Chunked("chunk-size line too long"))
        );
        let trailers = |len: usize| {
            let mut v = b"0\r\nT: ".to_vec();
            v.resize(3 + len, b'v');
            v
        };
        // 16 KiB of trailers.
        assert_eq!(
            decode_split(&chunked(&trailers(16_384)), 0, false),
            Ok(None)
        );
        assert_eq!(
            decode_split(&chunked(&trailers(16_385)), 0, false),
            Err(ResponseError::Chunked("trailers too long"))
        );
        // Fifteen significant hex digits are a size; sixteen are refused.
        assert_eq!(
            parse_chunk_size(b"0fffffffffffffff"),
            Ok(0x0fff_ffff_ffff_ffff)
        );
        assert_eq!(
            parse_chunk_size(b"1000000000000000"),
            Err(ResponseError::Chunked("chunk size too large"))
        );
        check_all_splits(
            &chunked(b"1F\r\n0123456789abcdefghijklmnopqrstu\r\n0\r\n\r\n"),
            false,
            &Ok(Some((200, b"0123456789abcdefghijklmnopqrstu", true))),
        );
    }

    #[test]
    fn connection_and_framing_headers() {
        let head = |input: &[u8]| match parse_head(input, LIMIT) {
            Ok(Status::Complete(h, _)) => Ok(h),
            Ok(Status::Partial) => panic!("partial"),
            Err(e) => Err(e),
        };
        // HTTP/1.0 closes unless the worker asks to keep the connection.
        let h = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h =
            head(b"HTTP/1.0 200 OK\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(
            !h.keep_alive,
            "only keep-alive keeps an HTTP/1.0 connection"
        );
        let h =
            head(b"HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        assert!(!h.keep_alive, "close wins over keep-alive");
        // HTTP/1.1 keeps it unless told to close, in any list position.
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(!h.keep_alive);
        // 304 and 204 have no body whatever the headers say.
        let h = head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyFraming::Empty, true));
        // Only chunked as the final coding frames a body.
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ResponseError::Head(_))
        ));
        // The same Content-Length twice is one length.
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyFraming::Length(3));
        // A Retry-After that is neither form is ignored.
        for v in ["", " ", "1.5", "tomorrow"] {
            let input =
                format!("HTTP/1.1 503 Busy\r\nRetry-After: {v}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(head(input.as_bytes()).unwrap().retry_after, None, "{v:?}");
        }
        assert_eq!(RetryAfter::parse(b""), None);
        assert_eq!(
            RetryAfter::Delay(Duration::from_secs(3)).delay_from(std::time::UNIX_EPOCH),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn body_decoder_reports_progress() {
        let mut d = BodyDecoder::try_new(BodyFraming::Length(3), 10).unwrap();
        assert!(!d.is_done());
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert_eq!(d.decode(&mut buf, false), Ok(false));
        assert_eq!(d.body(), b"ab");
        assert!(!d.is_done());
        buf.extend_from_slice(b"cd");
        assert_eq!(d.decode(&mut buf, false), Ok(true));
        assert!(d.is_done());
        assert_eq!(d.body(), b"abc");
        assert_eq!(&buf[..], b"d");
        assert_eq!(&d.into_body()[..], b"abc");
        let d = BodyDecoder::try_new(BodyFraming::Empty, 10).unwrap();
        assert!(d.is_done());
        assert_eq!(
            BodyDecoder::try_new(BodyFraming::Length(11), 10).err(),
            Some(ResponseError::BodyTooLarge(10))
        );
        assert!(BodyDecoder::try_new(BodyFraming::Length(10), 10).is_ok());
    }

    #[test]
    fn quoted_extension_values_and_bare_lf_at_a_line_start() {
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
        for body in [
            &b"2;a=\"\\\t\"\r\nab\r\n0\r\n\r\n"[..],
            b"2;a=\"\\ \"\r\nab\r\n0\r\n\r\n",
            b"2;a=\"\\\x80\"\r\nab\r\n0\r\n\r\n",
            b"2;a=\"x\\\"y\"\r\nab\r\n0\r\n\r\n",
            b"2;a=\"\\\"\"\r\nab\r\n0\r\n\r\n",
        ] {
            check_all_splits(&chunked(body), false, &Ok(Some((200, b"ab", true))));
        }
        for body in [
            &b"2;a=\"\\\x01\"\r\nab\r\n0\r\n\r\n"[..],
            b"2;a=\"\\\x7f\"\r\nab\r\n0\r\n\r\n",
            b"2;a=\"\\\r\nab\r\n0\r\n\r\n",
            // A bare LF as the first byte of a chunk-size line or of the trailers.
            b"\n2\r\nab\r\n0\r\n\r\n",
            b"2\r\nab\r\n0\r\n\n",
        ] {
            let input = chunked(body);
            let got = decode_split(&input, input.len(), false);
            assert!(
                matches!(got, Err(ResponseError::Chunked(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

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
