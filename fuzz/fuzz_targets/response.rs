//! The worker-response decoder never panics on any bytes, split into any reads.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use reprow::http::response_decoder::ResponseDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let mut dec = ResponseDecoder::new(4096, 1024);
    let mut buf = BytesMut::from(&rest[..cut]);
    let done = matches!(dec.decode(&mut buf, false), Ok(Some(_)) | Err(_));
    if !done {
        buf.extend_from_slice(&rest[cut..]);
        if let Ok(Some(r)) = dec.decode(&mut buf, true) {
            assert!(r.body.len() <= 1024);
        }
    }
});
