//! The API's request parser never panics, keeps its limits, and finds the same requests whether
//! the bytes arrive at once or split in two reads.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use reprow::http::request::{Progress, Request, RequestParser};

fn parse(chunks: &[&[u8]]) -> (Vec<Request>, bool) {
    let mut p = RequestParser::new(2048, 512);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match p.parse(&mut buf) {
                Ok(Progress::Request(r)) => {
                    assert!(r.body.len() <= 512);
                    out.push(r);
                }
                Ok(Progress::Continue) => {}
                Ok(Progress::Partial) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let (whole, whole_err) = parse(&[rest]);
    let (parts, parts_err) = parse(&[&rest[..cut], &rest[cut..]]);
    // Every request completed from the whole input is also completed from the split input.
    if !whole_err && !parts_err {
        assert_eq!(whole, parts);
    }
});
