//! Micro benchmarks of the sans-IO hot path: encoding a request head, decoding a worker's
//! response, and framing FIFO lines. Run with `cargo bench --bench codec`.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use reprow::{
    http::{
        encode::{RequestEncoder, RequestMeta},
        response_decoder::ResponseDecoder,
    },
    source::framing::LineFramer,
};

fn encode(c: &mut Criterion) {
    let enc = RequestEncoder::new("127.0.0.1:5000", "/work");
    let mut out = Vec::with_capacity(512);
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_head", |b| {
        b.iter(|| {
            out.clear();
            enc.encode_head(
                black_box(&RequestMeta {
                    content_type: "application/json",
                    content_length: 120,
                    job_id: 1_795_402_913_252_283,
                    queue: "default",
                    attempt: 1,
                    enqueued_at: "2026-11-23T03:01:54.340Z",
                    extra: &[],
                    span_id: 0,
                    path: None,
                }),
                &mut out,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let small: &[u8] = b"HTTP/1.1 200 OK\r\nServer: w\r\nContent-Length: 2\r\n\r\nok";
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let mut g = c.benchmark_group("response");
    for (name, input) in [("content_length", small), ("chunked", chunked)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(black_box(input));
                let mut dec = ResponseDecoder::new(64 * 1024, 1024 * 1024);
                black_box(
                    dec.decode(&mut buf, false)
                        .ok()
                        .flatten()
                        .map(|r| r.head.status),
                )
            })
        });
    }
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut input = Vec::with_capacity(64 * 1024);
    while input.len() + 100 <= 64 * 1024 {
        input.extend_from_slice(&[b'x'; 99]);
        input.push(b'\n');
    }
    let mut g = c.benchmark_group("fifo");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("frame_64k_of_100b_lines", |b| {
        b.iter(|| {
            let mut f = LineFramer::new(1024 * 1024);
            f.push(black_box(&input));
            let mut n = 0;
            while f.next_frame().is_some() {
                n += 1;
            }
            black_box(n)
        })
    });
    g.finish();
}

// criterion_group! generates an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, encode, decode, framing);
}
use group::benches;
criterion_main!(benches);
