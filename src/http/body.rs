//! Body framing: how a body is delimited, `Content-Length` values, and the incremental decoder
//! for Content-Length, chunked (with trailers) and until-close bodies.

use bytes::{Buf, BytesMut};

use super::{
    chunk::{find_line_end, parse_chunk_size},
    error::ResponseError,
};

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
pub(super) const MAX_CHUNK_LINE: usize = 4096;
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

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
}
