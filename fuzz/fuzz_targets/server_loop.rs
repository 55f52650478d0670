//! The API server's connection loop (the code between the socket and the request parser: the
//! read buffer, pipelining, `100 Continue`, errors, lingering close) gives the same answers
//! whatever the reads the bytes arrive in: the whole input in one read against the same input
//! cut at up to eight random places (one read per piece, or less when a piece is larger than
//! the free buffer). The model is the first run: every split must match it.
//!
//! The stream is an in-memory stand-in for the socket that returns one piece per read, so the
//! cuts are exact and a run takes microseconds; `tests/hostile.rs` covers real sockets.
#![no_main]
use std::{collections::VecDeque, future::Future, rc::Rc, sync::Arc};

use libfuzzer_sys::fuzz_target;
use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent},
    BufResult,
};
use reprow::api::{config::ApiConfig, serve_stream, Ctx};

/// Reads hand out one piece each (or what fits of it), then end of stream; writes collect.
struct Feed {
    pieces: VecDeque<Vec<u8>>,
    out: Vec<u8>,
}

impl AsyncReadRent for Feed {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        async move {
            let Some(mut piece) = self.pieces.pop_front() else {
                return (Ok(0), buf);
            };
            let mut src: &[u8] = &piece;
            let (res, buf) = src.read(buf).await;
            let n = *res.as_ref().unwrap_or(&0);
            if n < piece.len() {
                self.pieces.push_front(piece.split_off(n));
            }
            (res, buf)
        }
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        async move { (Err(std::io::ErrorKind::Unsupported.into()), buf) }
    }
}

impl AsyncWriteRent for Feed {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        // SAFETY: `read_ptr` is valid for `bytes_init` bytes while `buf` is alive.
        let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        self.out.extend_from_slice(bytes);
        let n = bytes.len();
        async move { (Ok(n), buf) }
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        async move { (Err(std::io::ErrorKind::Unsupported.into()), buf) }
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        async { Ok(()) }
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        async { Ok(()) }
    }
}

thread_local! {
    static RT: std::cell::RefCell<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> =
        std::cell::RefCell::new(
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime"),
        );
}

fn ctx() -> Rc<Ctx> {
    let config: ApiConfig = serde_json::from_str(
        r#"{"max_header_bytes": 1024, "max_body_bytes": 2048, "max_payload_bytes": 1024}"#,
    )
    .expect("config");
    Rc::new(Ctx {
        store: None,
        config: Arc::new(config),
        connections: Arc::default(),
        shutdown: reprow::lifecycle::Shutdown::try_new().expect("shutdown"),
        grace: std::time::Duration::from_secs(1),
        stats: Arc::default(),
        source_queue: Some("q".into()),
        conns: Default::default(),
        presque: Arc::default(),
    })
}

/// Status codes of the answers, and whether the last one closes the connection.
fn answers(out: &[u8]) -> (Vec<u16>, bool) {
    let mut rest = out;
    let mut codes = Vec::new();
    let mut close = false;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(rest) else {
            panic!(
                "reprow wrote a broken answer: {:?}",
                String::from_utf8_lossy(rest)
            );
        };
        let code = resp.code.expect("status");
        let len = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |h| {
                std::str::from_utf8(h.value)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            });
        close = resp
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection"));
        codes.push(code);
        rest = &rest[n + len..];
    }
    (codes, close)
}

fn run(pieces: Vec<Vec<u8>>) -> (Vec<u16>, bool) {
    let mut feed = Feed {
        pieces: pieces.into(),
        out: Vec::new(),
    };
    RT.with(|rt| rt.borrow_mut().block_on(serve_stream(&mut feed, &ctx())));
    answers(&feed.out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = (k % 9) as usize;
    if rest.len() < k {
        return;
    }
    let (cuts, input) = rest.split_at(k);
    let whole = run(vec![input.to_vec()]);
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize * input.len() / 256)
        .collect();
    at.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    // An empty read means end of stream: cuts at the same place make one cut.
    for a in at {
        if a > from {
            pieces.push(input[from..a].to_vec());
            from = a;
        }
    }
    pieces.push(input[from..].to_vec());
    let split = run(pieces);
    assert_eq!(whole, split, "cuts {cuts:?}");
});
