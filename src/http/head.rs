//! Parsing a worker's response head: status, interim responses, connection persistence, body
//! framing and `Retry-After`.

use std::time::Duration;

use super::{
    body::{parse_content_length, BodyFraming},
    error::ResponseError,
    headers::names,
};

/// Result of feeding bytes to a decoder: "need more bytes" is not an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A complete value; how many bytes of the input it used.
    Complete(T, usize),
    /// More input is needed; nothing was consumed.
    Partial,
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
    /// The final status, 200 to 599: interim 1xx heads are skipped, others refused.
    pub status: u16,
    /// Parsed `Retry-After`, if present and valid.
    pub retry_after: Option<RetryAfter>,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// How the body is framed.
    pub body: BodyFraming,
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
        if !(100..=599).contains(&status) {
            // RFC 9110 §15: a status is 100 to 599. Anything else is a malformed answer (so a
            // retry), not a 4xx-like permanent failure or a 2xx-like success.
            return Err(ResponseError::Head(format!(
                "invalid status code {status:03} (RFC 9110 §15: 100 to 599)"
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

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
    fn a_status_outside_100_to_599_is_malformed() {
        for code in ["099", "000", "600", "999"] {
            let input = format!("HTTP/1.1 {code} Odd\r\nContent-Length: 0\r\n\r\n");
            match parse_head(input.as_bytes(), LIMIT) {
                Err(ResponseError::Head(m)) => assert!(m.contains(code), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in ["100 Continue\r\n\r\nHTTP/1.1 200", "200", "599"] {
            let input = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
            assert!(
                matches!(
                    parse_head(input.as_bytes(), LIMIT),
                    Ok(Status::Complete(..))
                ),
                "{code}"
            );
        }
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
}
