//! Decoding one whole worker response, head then body, from whatever bytes have arrived so far.

use bytes::{Buf, BytesMut};

use super::{
    body::BodyDecoder,
    error::ResponseError,
    head::{parse_head, ResponseHead, Status},
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{
        body::{parse_content_length, MAX_CHUNK_LINE},
        chunk::parse_chunk_size,
    };

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
}
