//! The unit tests of `request.rs`: the API request parser, at every split and limit.

use super::*;

fn parse_all(input: &[u8]) -> Result<Vec<Request>, RequestError> {
    let mut p = RequestParser::new(1024, 64);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match p.parse(&mut buf)? {
            Progress::Request(r) => out.push(r),
            Progress::Continue => {}
            Progress::Partial => return Ok(out),
        }
    }
}

/// `ce-*` headers are kept (names in lower case) for a binary-mode CloudEvent enqueue; a
/// bare `ce-` or a look-alike is not one; more than [`MAX_CE_HEADERS`] is malformed.
#[test]
fn cloudevent_headers_are_kept_and_bounded() {
    let r = parse_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nCE-Id: e1\r\nce-: x\r\nace-id: y\r\nce-source: /a%20b\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        r[0].cloudevents,
        [
            ("ce-id".to_string(), "e1".to_string()),
            ("ce-source".to_string(), "/a%20b".to_string())
        ]
    );
    let mut head = b"POST / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..MAX_CE_HEADERS {
        head.extend_from_slice(format!("ce-x{i}: v\r\n").as_bytes());
    }
    let mut over = head.clone();
    head.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_all(&head).unwrap()[0].cloudevents.len(),
        MAX_CE_HEADERS
    );
    over.extend_from_slice(b"ce-last: v\r\n\r\n");
    assert!(matches!(parse_all(&over), Err(RequestError::Malformed(_))));
}

/// A head over the limit is 431 whether it arrives whole or cut, even when a byte past the
/// limit is malformed (the whole parse used to see that byte and answer 400).
#[test]
fn an_oversized_head_is_431_however_it_is_cut() {
    let mut input = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    input.resize(1100, b'a');
    input.extend_from_slice(b"\r\n\x01bad\r\n\r\n");
    for cut in [0, 500, 1024, 1025, 1100, input.len()] {
        let mut p = RequestParser::new(1024, 64);
        let mut buf = BytesMut::from(&input[..cut]);
        let first = p.parse(&mut buf);
        let got = match first {
            Ok(Progress::Partial) => {
                buf.extend_from_slice(&input[cut..]);
                p.parse(&mut buf)
            }
            r => r,
        };
        assert_eq!(got, Err(RequestError::HeadTooLarge(1024)), "cut at {cut}");
    }
}

#[test]
fn pipelined_requests_in_order() {
    let reqs = parse_all(
        b"POST /job/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}\
GET /queues HTTP/1.1\r\nHost: h\r\n\r\n\
POST /q/b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].path, "/job/a");
    assert_eq!(reqs[0].query, "x=1");
    assert_eq!(&reqs[0].body[..], b"{}");
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(reqs[1].method, "GET");
    assert!(reqs[1].keep_alive);
    assert_eq!(&reqs[2].body[..], b"abc");
    assert!(!reqs[2].keep_alive);
}

#[test]
fn byte_at_a_time_equals_whole() {
    let input =
        b"POST /q/b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    let mut p = RequestParser::new(1024, 64);
    let mut buf = BytesMut::new();
    let mut got = None;
    let mut continues = 0;
    for b in input {
        buf.extend_from_slice(&[*b]);
        loop {
            match p.parse(&mut buf).unwrap() {
                Progress::Request(r) => got = Some(r),
                Progress::Continue => {
                    continues += 1;
                    continue;
                }
                Progress::Partial => {}
            }
            break;
        }
    }
    assert_eq!(continues, 1);
    assert_eq!(&got.unwrap().body[..], b"hello");
}

#[test]
fn limits_and_bad_input() {
    let err = |i: &[u8]| parse_all(i).unwrap_err();
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n").status(),
        413
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n").status(),
        413
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n", "a".repeat(2000));
    assert_eq!(err(long.as_bytes()).status(), 431);
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n").status(),
        400
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .status(),
        400
    );
    assert_eq!(
        err(
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .status(),
        400
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n").status(),
        501
    );
    assert_eq!(err(b"GET\x01 / HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
    assert_eq!(err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
}

#[test]
fn framing_follows_rfc_9112_strictly() {
    let err = |i: &[u8]| parse_all(i).unwrap_err().status();
    // Content-Length is 1*DIGIT: what a proxy in front may read otherwise is refused.
    for v in ["+2", "-2", "0x2", "2 2", "2,2", "2, 2", "", "1e1"] {
        let req = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\nab");
        assert_eq!(err(req.as_bytes()), 400, "Content-Length: {v:?}");
    }
    let ok = parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  2 \r\n\r\nab").unwrap();
    assert_eq!(&ok[0].body[..], b"ab");
    // Duplicates that differ, and Content-Length with Transfer-Encoding (either order).
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 02x\r\n\r\n"),
        400
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"),
        400
    );
    // Chunk sizes are hex digits only; a bare LF is refused at once (no wait for a CRLF).
    for body in [
        &b" 2\r\nab\r\n0\r\n\r\n"[..],
        b"+2\r\nab\r\n0\r\n\r\n",
        b"2 \r\nab\r\n0\r\n\r\n",
        b"2\nab\r\n0\r\n\r\n",
        b"2\n",
        b"2\r\nab\r\n0\n\r\n",
    ] {
        let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        assert_eq!(err(&req), 400, "{:?}", String::from_utf8_lossy(body));
    }
    // chunk-ext per the grammar is fine.
    let ok = parse_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a=\"b\"\r\nab\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(&ok[0].body[..], b"ab");
}

#[test]
fn http10_closes_by_default() {
    let r = parse_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!r[0].keep_alive);
    let r = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(r[0].keep_alive);
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host; HTTP/1.0 may omit it.
/// Headers whose duplicates a proxy in front could read differently are refused twice.
#[test]
fn host_and_single_headers() {
    let err = |i: &[u8]| parse_all(i).unwrap_err();
    let e = err(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("Host"), "{e}");
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").status(),
        400
    );
    for name in [
        "Authorization",
        "origin",
        "Sec-Fetch-Site",
        "X-Reprow-Lease",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: x\r\n{name}: x\r\n\r\n");
        let e = err(req.as_bytes());
        assert_eq!(e.status(), 400, "{name}");
        assert!(e.to_string().contains(name), "{e}");
    }
    let r = parse_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r[0].host, None);
    let r = parse_all(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8\r\nOrigin: http://x\r\nSec-Fetch-Site: Cross-Site\r\nSec-Fetch-Mode: navigate\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r[0].host.as_deref(), Some("127.0.0.1:8"));
    assert_eq!(r[0].origin.as_deref(), Some("http://x"));
    assert_eq!(r[0].fetch_site.as_deref(), Some("cross-site"));
    assert_eq!(r[0].fetch_mode.as_deref(), Some("navigate"));
}

/// RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; the pipelined request
/// after it must never run.
#[test]
fn http10_with_transfer_encoding_is_refused() {
    let input = b"POST /q/a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nDELETE /q/victim HTTP/1.1\r\nHost: h\r\n\r\n";
    let e = parse_all(input).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("HTTP/1.0"), "{e}");
}

/// The head waiting on `100 Continue` is visible, so it can be refused before the body.
#[test]
fn pending_head_is_the_request_waiting_for_its_body() {
    let mut p = RequestParser::new(1024, 64);
    let mut buf = BytesMut::from(
        &b"POST /q/b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"[..],
    );
    assert!(p.pending_head().is_none());
    assert_eq!(p.parse(&mut buf).unwrap(), Progress::Continue);
    assert_eq!(p.pending_head().map(|r| r.path.as_str()), Some("/q/b"));
    buf.extend_from_slice(b"hello");
    assert!(matches!(p.parse(&mut buf).unwrap(), Progress::Request(_)));
    assert!(p.pending_head().is_none());
}

/// A head of exactly the limit is taken, one byte more is 431, however it is cut and
/// whether or not a body follows in the same read.
#[test]
fn a_head_of_exactly_the_limit_is_taken() {
    let head_of = |len: usize| {
        let mut h = b"POST /q/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-Pad: ".to_vec();
        h.resize(len - 4, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    for (len, ok) in [(1024, true), (1025, false)] {
        let mut input = head_of(len);
        input.extend_from_slice(b"{}");
        for cut in [0, 1, 500, len - 1, len, len + 1, input.len()] {
            let mut p = RequestParser::new(1024, 64);
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = p.parse(&mut buf);
            if got == Ok(Progress::Partial) {
                buf.extend_from_slice(&input[cut..]);
                got = p.parse(&mut buf);
            }
            match got {
                Ok(Progress::Request(r)) => assert!(ok && &r.body[..] == b"{}", "{len} {cut}"),
                Err(e) => assert!(!ok && e.status() == 431, "{len} {cut}: {e}"),
                other => panic!("{len} cut {cut}: {other:?}"),
            }
        }
    }
}

/// `100 Continue` only when the client asked for it and its body has not come yet.
#[test]
fn continue_only_when_asked_and_waiting() {
    let head = b"POST /q/b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
    let mut p = RequestParser::new(1024, 64);
    let mut buf = BytesMut::from(&head[..]);
    assert_eq!(p.parse(&mut buf), Ok(Progress::Partial));
    assert!(p.is_mid_body());
    buf.extend_from_slice(b"{}");
    assert!(matches!(p.parse(&mut buf), Ok(Progress::Request(_))));
    assert!(!p.is_mid_body());
    let asked =
        b"POST /q/b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
    let mut p = RequestParser::new(1024, 64);
    let mut buf = BytesMut::from(&asked[..]);
    assert!(matches!(p.parse(&mut buf), Ok(Progress::Request(_))));
    assert!(!p.is_mid_body());
}
