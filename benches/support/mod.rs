//! Shared by the end-to-end benchmarks: a minimal keep-alive HTTP/1.1 worker.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::Arc,
};

/// A thread-per-connection keep-alive worker on 127.0.0.1 that answers `200` with no body to
/// every request, after handing the request body to `on_body`.
pub fn keep_alive_worker(on_body: impl Fn(&[u8]) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let on_body = Arc::new(on_body);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let on_body = on_body.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::with_capacity(64 * 1024, s);
                let mut line = String::new();
                loop {
                    let mut len = 0;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.len() > 16 && line[..16].eq_ignore_ascii_case("content-length: ") {
                            len = line[16..].trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    on_body(&body);
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
