//! API responses: a status, a body and its type, encoded as an HTTP/1.1 response. Errors are
//! JSON `{"error": "..."}` with the status that names the problem.

use serde::Serialize;

use crate::store::{StoreError, StoreErrorKind};

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Sent with its standard reason phrase.
    pub status: u16,
    /// Sent with the body's `Content-Length` (neither for 204 and 304, which have no body).
    pub content_type: &'static str,
    /// Headers besides `Server`, `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// Sent whole (not for 204 and 304).
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                content_type: "application/json",
                headers: Vec::new(),
                body,
            },
            Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{\"error\":\"?\"}".to_vec());
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    /// No body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text body.
    pub fn text(status: u16, text: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Appends the encoded response to `out`.
    pub fn encode(&self, keep_alive: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: reprow/{}\r\n",
            self.status,
            reason(self.status),
            crate::VERSION
        );
        if self.status != 204 && self.status != 304 {
            let _ = write!(
                out,
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        for (k, v) in &self.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if self.status != 204 && self.status != 304 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The API edge: a store refusal's kind decides the status, its message is the body.
impl From<StoreError> for Response {
    fn from(e: StoreError) -> Response {
        let status = match e.kind() {
            StoreErrorKind::BadRequest => 400,
            StoreErrorKind::NotFound => 404,
            StoreErrorKind::Conflict => 409,
            StoreErrorKind::Full => 507,
            StoreErrorKind::Limit => 422,
            StoreErrorKind::Unavailable => 503,
            StoreErrorKind::InFlight => {
                return Response::error(409, &e.to_string()).with("Retry-After", "1".into())
            }
            StoreErrorKind::KeyReused => 422,
        };
        Response::error(status, &e.to_string())
    }
}

/// Reason phrases for the statuses the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// 405 for a known path, naming the methods it takes.
pub fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed").with("Allow", allow.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn encoded(r: &Response, keep_alive: bool) -> String {
        let mut out = Vec::new();
        r.encode(keep_alive, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Every status the API answers with has its RFC 9110 reason phrase on the status line.
    #[test]
    fn status_lines_carry_the_rfc_9110_reason_phrases() {
        for (status, phrase) in [
            (100, "Continue"),
            (200, "OK"),
            (201, "Created"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (409, "Conflict"),
            (413, "Content Too Large"),
            (415, "Unsupported Media Type"),
            (422, "Unprocessable Content"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (507, "Insufficient Storage"),
            (299, "Unknown"),
        ] {
            let head = encoded(&Response::error(status, "x"), true);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\nServer: reprow/")),
                "{head:?}"
            );
        }
    }

    /// 204 and 304 carry neither a body nor its headers (RFC 9110 §8.6, §15.3.5); every other
    /// answer has `Content-Type` and `Content-Length`; `Connection: close` only when closing.
    #[test]
    fn bodies_and_their_headers_only_where_allowed() {
        for status in [204, 304] {
            let mut r = Response::text(status, "never sent".into()).with("X-A", "1".into());
            r.content_type = "text/plain";
            assert_eq!(
                encoded(&r, true),
                format!(
                    "HTTP/1.1 {status} {}\r\nServer: reprow/{}\r\nX-A: 1\r\n\r\n",
                    reason(status),
                    crate::VERSION
                )
            );
        }
        let r = Response::text(200, "hello".into()).with("X-A", "1".into());
        assert_eq!(
            encoded(&r, false),
            format!(
                "HTTP/1.1 200 OK\r\nServer: reprow/{}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nX-A: 1\r\nConnection: close\r\n\r\nhello",
                crate::VERSION
            )
        );
        let e = encoded(&Response::empty(201), true);
        assert!(
            e.contains("Content-Length: 0\r\n") && !e.contains("Connection"),
            "{e:?}"
        );
    }

    #[test]
    fn bodies_are_json_and_store_refusals_map_to_their_statuses() {
        let j = Response::json(201, &serde_json::json!({"a": 1}));
        assert_eq!((j.status, j.content_type), (201, "application/json"));
        assert_eq!(j.body, br#"{"a":1}"#);
        let e = Response::error(400, "bad \"x\"");
        assert_eq!(e.body, br#"{"error":"bad \"x\""}"#);
        let n = not_allowed("GET, PUT");
        assert_eq!(n.status, 405);
        assert_eq!(n.headers, vec![("Allow", "GET, PUT".to_string())]);
        for (kind, status) in [
            (StoreErrorKind::BadRequest, 400),
            (StoreErrorKind::NotFound, 404),
            (StoreErrorKind::Conflict, 409),
            (StoreErrorKind::Full, 507),
            (StoreErrorKind::Limit, 422),
            (StoreErrorKind::Unavailable, 503),
            (StoreErrorKind::KeyReused, 422),
        ] {
            let r = Response::from(StoreError::new(kind, "why"));
            assert_eq!(r, Response::error(status, "why"));
        }
        let r = Response::from(StoreError::new(StoreErrorKind::InFlight, "why"));
        assert_eq!(
            r,
            Response::error(409, "why").with("Retry-After", "1".into())
        );
    }
}
