//! The API's request parser never panics, keeps its limits, and comes to the same outcome
//! whether the bytes arrive at once, cut at several places taken from the fuzz input, or one
//! byte at a time: the same requests, the same error (or none), and the same bytes left over.
//! (`100 Continue` is left out: it is sent only when no body byte has arrived yet, which
//! depends on the reads by design.)
//!
//! Input: 1 byte for the number of cuts (0..=7), 2 bytes per cut, then the stream.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use reprow::http::request::{Progress, Request, RequestError, RequestParser};

/// Everything a connection's parser came to.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Request>,
    error: Option<RequestError>,
    /// Bytes not consumed, and whether a body was still being read (no error only).
    leftover: Option<(Vec<u8>, bool)>,
}

fn parse(chunks: &[&[u8]]) -> Outcome {
    let mut p = RequestParser::new(2048, 512);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match p.parse(&mut buf) {
                Ok(Progress::Request(r)) => {
                    assert!(r.body.len() <= 512);
                    requests.push(r);
                }
                Ok(Progress::Continue) => {}
                Ok(Progress::Partial) => break,
                Err(e) => {
                    return Outcome {
                        requests,
                        error: Some(e),
                        leftover: None,
                    }
                }
            }
        }
    }
    Outcome {
        requests,
        error: None,
        leftover: Some((buf.to_vec(), p.is_mid_body())),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let ncuts = usize::from(n % 8);
    let Some(input) = rest.get(2 * ncuts..) else {
        return;
    };
    let mut cuts: Vec<usize> = rest[..2 * ncuts]
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (input.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([input.len()].iter()) {
        chunks.push(&input[from..to]);
        from = to;
    }
    let whole = parse(&[input]);
    let cut = parse(&chunks);
    assert_eq!(whole, cut, "cut at {cuts:?}");
    if input.len() <= 512 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(whole, parse(&bytes), "one byte at a time");
    }
});
