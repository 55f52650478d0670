//! Why a worker's response (or a request body, which shares the framing) was refused.

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
