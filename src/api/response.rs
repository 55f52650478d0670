//! API responses: a status, a body and its type, encoded as an HTTP/1.1 response. Errors are
//! JSON `{"error": "..."}` with the status that names the problem.

use serde::Serialize;

use crate::store::{StoreError, StoreErrorKind};

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes.
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
