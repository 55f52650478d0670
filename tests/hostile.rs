//! Hostile and careless peers, on real sockets: every reader of bytes in reprow (the API
//! server's read loop, the worker client's) is fed the way a network feeds it: byte by byte, at
//! every split, with pauses, in heads up to the 64 KiB limit, a thousand pipelined requests in
//! one write, peers that never send and peers that never read. The sans-IO parsers have their
//! own fuzz targets; these tests guard the I/O loops around them.

mod common;

use std::{
    io::{BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::start_durable as durable;
use common::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Sends `pieces` with `pause` between them (each its own segment), then reads the replies
/// until the connection closes or `expect` replies arrived.
fn send_pieces(
    addr: SocketAddr,
    pieces: &[&[u8]],
    pause: Duration,
    expect: usize,
) -> Vec<HttpReply> {
    let mut s = connect(addr);
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        s.write_all(p).unwrap();
    }
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    while out.len() < expect {
        match read_reply(&mut r) {
            Some(reply) => out.push(reply),
            None => break,
        }
    }
    out
}

fn queue_size(api: &Api, queue: &str) -> u64 {
    api.get(&format!("/status/{queue}")).json()["size"]
        .as_u64()
        .unwrap()
}

/// The attack from the audit: a GET whose header value, at the 16 KiB read boundary, holds a
/// DELETE request line. reprow must run the GET it was sent, not the DELETE a buffer mix-up
/// makes of it.
#[test]
fn request_line_inside_a_header_value_at_a_read_boundary_is_not_run() {
    let (_dir, _reprow, api) = durable("");
    assert_eq!(api.post("/q/victim", r#"{"keep":"me"}"#).status, 201);
    let tail = b"DELETE /q/victim HTTP/1.1\r\nX-B: b\r\n\r\n";
    let mut head = b"GET /queues HTTP/1.1\r\nHost: localhost\r\nX-Pad: ".to_vec();
    head.resize(16 * 1024, b'a');
    // Both halves in one request: the tail starts exactly at byte 16,384.
    let whole: Vec<u8> = [head.as_slice(), tail].concat();
    for pieces in [
        vec![&whole[..]],
        vec![&whole[..16 * 1024], &whole[16 * 1024..]],
    ] {
        let replies = send_pieces(api.addr, &pieces, Duration::from_millis(100), 1);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].status, 200, "{}", replies[0].text());
        assert!(replies[0].json().is_array(), "{}", replies[0].text());
        assert_eq!(queue_size(&api, "victim"), 1, "the GET purged the queue");
    }
}

/// Requests of every framing, cut at every byte: each arrives in two reads.
#[test]
fn requests_split_at_every_byte_are_served() {
    let (_dir, _reprow, api) = durable("");
    let requests: [&[u8]; 3] = [
        b"POST /q/split HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"n\":\"split\"}",
        b"POST /q/split HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"n\":\r\n8\r\n\"chunk\"}\r\n0\r\n\r\n",
        b"GET /status/split HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ];
    let mut posted = 0;
    for req in requests {
        for cut in 1..req.len() {
            let replies = send_pieces(
                api.addr,
                &[&req[..cut], &req[cut..]],
                Duration::from_millis(2),
                1,
            );
            let cut_at = String::from_utf8_lossy(&req[..cut]);
            assert_eq!(replies.len(), 1, "cut after {cut_at:?}");
            let want = if req.starts_with(b"POST") { 201 } else { 200 };
            assert_eq!(
                replies[0].status,
                want,
                "cut after {cut_at:?}: {}",
                replies[0].text()
            );
            if want == 201 {
                posted += 1;
            }
        }
    }
    assert_eq!(queue_size(&api, "split"), posted);
    // Both bodies arrived whole: every stored payload is one of the two.
    for _ in 0..posted {
        let got = api.get("/q/split?forget=1");
        assert_eq!(got.status, 200);
        let body = got.json();
        assert!(
            body == serde_json::json!({"n":"split"}) || body == serde_json::json!({"n":"chunk"}),
            "{body}"
        );
    }
}

/// A request fed one byte per segment, then two more on the same connection.
#[test]
fn request_fed_byte_by_byte_then_keep_alive() {
    let (_dir, _reprow, api) = durable("");
    let req = b"POST /q/bytes HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\n{\"b\":42}\n";
    let pieces: Vec<&[u8]> = req.chunks(1).chain([&req[..], &req[..]]).collect();
    let replies = send_pieces(api.addr, &pieces, Duration::from_millis(1), 3);
    assert_eq!(
        replies.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, 201, 201]
    );
    assert_eq!(queue_size(&api, "bytes"), 3);
}

/// A head written in two pieces 300 ms apart (a slow link, a proxy flushing late).
#[test]
fn head_in_two_pieces_300ms_apart() {
    let (_dir, _reprow, api) = durable("");
    let replies = send_pieces(
        api.addr,
        &[b"GET /queues HTT", b"P/1.1\r\nHost: localhost\r\n\r\n"],
        Duration::from_millis(300),
        1,
    );
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 200);
}

/// Heads up to the 64 KiB limit are served, in one write or cut into many; beyond it the
/// client reads a 431 (not a reset).
#[test]
fn large_heads_up_to_the_limit() {
    let (_dir, _reprow, api) = durable("");
    for size in [16 * 1024, 16 * 1024 + 1, 40 * 1024, 63 * 1024] {
        let mut head = b"GET /queues HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
        head.resize(size - 4, b'x');
        head.extend_from_slice(b"\r\n\r\n");
        for piece in [head.len(), 1500, 4096] {
            let pieces: Vec<&[u8]> = head.chunks(piece).collect();
            let replies = send_pieces(api.addr, &pieces, Duration::from_millis(1), 1);
            assert_eq!(replies.len(), 1, "{size} bytes in pieces of {piece}");
            assert_eq!(replies[0].status, 200, "{size} bytes in pieces of {piece}");
        }
    }
    let mut head = b"GET /queues HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    head.resize(70 * 1024, b'x');
    head.extend_from_slice(b"\r\n\r\n");
    let replies = send_pieces(api.addr, &[&head], Duration::ZERO, 1);
    assert_eq!(replies.len(), 1, "no answer to an oversized head");
    assert_eq!(replies[0].status, 431);
}

/// A thousand pipelined POSTs in one write: a thousand answers, in order, a thousand jobs.
#[test]
fn thousand_pipelined_posts_in_one_write() {
    let (_dir, _reprow, api) = durable("");
    let mut all = Vec::new();
    for i in 0..1000 {
        let body = format!("{{\"i\":{i}}}");
        all.extend_from_slice(
            format!(
                "POST /q/pipe HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let replies = send_pieces(api.addr, &[&all], Duration::ZERO, 1000);
    assert_eq!(replies.len(), 1000);
    assert!(replies.iter().all(|r| r.status == 201));
    assert_eq!(queue_size(&api, "pipe"), 1000);
    // In order: the first pulled job is the first sent.
    assert_eq!(
        api.get("/q/pipe?forget=1").json(),
        serde_json::json!({"i":0})
    );
}

/// A body over the limit is answered 413, and the client reads that answer although it is
/// still sending (lingering close).
#[test]
fn oversized_body_gets_a_readable_413() {
    let (_dir, _reprow, api) =
        durable("api:\n  listen: 127.0.0.1:0\n  max_body_bytes: 4096\n  max_payload_bytes: 4096\n");
    let mut s = connect(api.addr);
    let body_len = 4 * 1024 * 1024;
    s.write_all(
        format!("POST /q/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body_len}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    // A simple client (curl, most libraries) sends the whole request before it reads, and
    // gives up with "connection reset" if sending fails: reprow must keep reading (a bounded
    // amount) after its early answer so that the send completes.
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            w.write_all(&chunk)?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(sent)
    });
    let sent = sender.join().unwrap();
    assert!(sent.is_ok(), "sending the body failed: {sent:?}");
    let reply = read_reply(&mut BufReader::new(s)).expect("an answer, not a reset");
    assert_eq!(reply.status, 413);
}

/// Connections that never send a byte neither stay open for the keep-alive timeout nor lock
/// out a real producer at the connection cap.
#[test]
fn silent_connections_neither_pin_slots_nor_lock_out_producers() {
    let (_dir, _reprow, api) = durable(
        "threads: 1\napi:\n  listen: 127.0.0.1:0\n  max_connections: 8\n  request_timeout: 1s\n  keep_alive_timeout: 60s\n",
    );
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(api.addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    // At the cap, the producer is served: an idle connection made room.
    assert_eq!(api.post("/q/p", "{}").status, 201);
    // The silent ones are closed after request_timeout, long before the keep-alive timeout.
    let started = Instant::now();
    for mut s in silent {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!("a silent connection got bytes"),
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "a silent connection was still open after {:?}",
                started.elapsed()
            ),
        }
    }
}

/// A client that pipelines requests and never reads the answers cannot hold shutdown up:
/// SIGTERM ends reprow within `shutdown_timeout`, although the client's connection is stuck
/// in a write.
#[test]
fn client_that_never_reads_does_not_block_shutdown() {
    // shutdown_timeout is 5 s (durable_config); the write deadline is made longer than the
    // test's patience so that only the shutdown bound can end the stuck connection.
    let (_dir, mut reprow, api) = durable("api:\n  listen: 127.0.0.1:0\n  request_timeout: 60s\n");
    let mut s = connect(api.addr);
    // A small receive buffer, so reprow's answers fill it soon even on a busy machine.
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4096)
        .unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Batches that each fit one 16 KiB read, a pause between them, until reprow stops reading
    // because its answers fill the socket buffers (bounded in time).
    let batch = b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(100);
    let until = Instant::now() + Duration::from_secs(15);
    let mut stuck = false;
    while Instant::now() < until {
        if let Err(e) = s.write_all(&batch) {
            // Blocked, not closed: reprow holds the connection and is stuck writing to it.
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the connection failed instead of blocking: {e}"
            );
            stuck = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        stuck,
        "reprow kept reading: the answers never filled the buffers"
    );
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    // `wait` fails the test if reprow has not exited within DEADLINE (20 s).
    let status = reprow.wait();
    assert!(status.success(), "{status:?}");
    drop(s);
}

/// A port still held for a moment (by a process just killed, here by the test) is retried
/// rather than failing the start.
#[test]
fn listener_bind_is_retried_briefly() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), &format!("api:\n  listen: {addr}\n"));
    let reprow = Reprow::start(&cfg);
    std::thread::sleep(Duration::from_millis(400));
    drop(held);
    assert_eq!(reprow.api_addr(), addr);
    assert_eq!(Api::new(addr).get("/healthz").status, 200);
}

// --- the worker side: responses that arrive in pieces ---

/// Runs `jobs` lines through a FIFO reprow to a worker answering with `reply`; returns the
/// final counters after every job reached the worker and shutdown.
fn through_worker(
    reply: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    jobs: usize,
    runner_extra: &str,
) -> (Worker, serde_json::Value, Scene) {
    let worker = Worker::start(reply);
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", runner_extra, "");
    let reprow = Reprow::start(&cfg);
    let lines: Vec<String> = (0..jobs).map(|i| format!("{{\"job\":{i}}}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_lines(&scene.fifo(), &refs);
    worker.wait_for(jobs);
    // Let a wrongly retried job come back before counting.
    std::thread::sleep(Duration::from_millis(300));
    let (status, stats) = reprow.stop();
    assert!(status.success(), "{status:?}");
    (worker, stats, scene)
}

fn assert_each_done_once(worker: &Worker, stats: &serde_json::Value, scene: &Scene, jobs: usize) {
    assert_eq!(worker.received().len(), jobs, "deliveries: {stats}");
    assert_eq!(stats["succeeded"], jobs, "{stats}");
    assert_eq!(stats["retried"], 0, "{stats}");
    assert_eq!(stats["malformed_responses"], 0, "{stats}");
    assert!(scene.records("failed.jsonl").is_empty());
}

#[test]
fn worker_writing_status_line_headers_and_body_apart() {
    let pieces = || {
        vec![
            b"HTTP/1.1 200 OK\r\n".to_vec(),
            b"Content-Type: text/plain\r\n".to_vec(),
            b"Content-Length: 2\r\n".to_vec(),
            b"\r\n".to_vec(),
            b"ok".to_vec(),
        ]
    };
    let (w, stats, scene) = through_worker(
        move |_, _| Reply::Pieces(pieces(), Duration::from_millis(20)),
        3,
        "  concurrency: 1\n  max_retries: 2\n",
    );
    assert_each_done_once(&w, &stats, &scene, 3);
}

#[test]
fn worker_response_fed_byte_by_byte() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n4\r\ndone\r\n0\r\nTrailer: x\r\n\r\n";
    let (w, stats, scene) = through_worker(
        move |_, _| {
            Reply::Pieces(
                resp.chunks(1).map(<[u8]>::to_vec).collect(),
                Duration::from_millis(1),
            )
        },
        3,
        "  concurrency: 1\n  max_retries: 2\n",
    );
    assert_each_done_once(&w, &stats, &scene, 3);
}

#[test]
fn worker_chunk_size_line_split_across_reads() {
    let (w, stats, scene) = through_worker(
        |_, _| {
            Reply::Pieces(
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec(),
                    b"0\r\n0123456789abcdef\r".to_vec(),
                    b"\n0\r".to_vec(),
                    b"\n\r\n".to_vec(),
                ],
                Duration::from_millis(20),
            )
        },
        3,
        "  concurrency: 1\n  max_retries: 2\n",
    );
    assert_each_done_once(&w, &stats, &scene, 3);
}

#[test]
fn worker_response_head_larger_than_one_read() {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: ".to_vec();
    head.resize(40 * 1024, b'y');
    head.extend_from_slice(b"\r\n\r\nok");
    let (w, stats, scene) = through_worker(
        move |_, _| Reply::Pieces(vec![head.clone()], Duration::ZERO),
        3,
        "  concurrency: 1\n  max_retries: 2\n",
    );
    assert_each_done_once(&w, &stats, &scene, 3);
}

/// A worker that writes head and body in two sends with Nagle's algorithm on (the shape of
/// Python's `http.server`): its body waits for the ACK of its head, which Linux delays ~40 ms
/// unless reprow acknowledges at once. 100 sequential jobs must not take 100 such delays.
#[test]
fn worker_with_nagle_and_split_writes_is_not_stalled_by_delayed_acks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || nagle_worker(stream));
        }
    });
    let took = hundred_sequential_jobs(&format!("http://{addr}/"));
    // 40 ms each would be 4 s; without the stall this takes a few ms per job.
    assert!(took < Duration::from_millis(2000), "100 jobs took {took:?}");
}

/// Runs a warm-up job, then 100 jobs one at a time (`concurrency: 1`, one core) through a FIFO
/// reprow to `url`; returns how long the 100 took. Every job must succeed.
fn hundred_sequential_jobs(url: &str) -> Duration {
    let scene = Scene::new();
    let cfg = scene.config(url, "", "  concurrency: 1\n", "threads: 1\n");
    let reprow = Reprow::start(&cfg);
    let mut w = open_writer(&scene.fifo());
    // The first job warms the connection up; the clock runs over the other 100.
    w.write_all(b"warm-up\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while reprow_succeeded(&reprow) < 1 {
        assert!(Instant::now() < deadline, "the warm-up job did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    let lines: String = (0..100).map(|i| format!("{i}\n")).collect();
    w.write_all(lines.as_bytes()).unwrap();
    while reprow_succeeded(&reprow) < 101 {
        assert!(Instant::now() < deadline, "jobs did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let (_, stats) = reprow.stop();
    assert_eq!(stats["succeeded"], 101);
    took
}

/// The same with Python's own `http.server` (the shape of `sample/worker.py` before it turned
/// Nagle off): head and body in two writes, Nagle on.
#[test]
fn python_http_server_worker_is_not_stalled_by_delayed_acks() {
    let scene = Scene::new();
    let script = scene.path("worker.py");
    std::fs::write(
        &script,
        r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class W(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), W)
print(s.server_address[1], flush=True)
s.serve_forever()
"#,
    )
    .unwrap();
    let python = std::env::var("REPROW_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is on the machine");
    let mut port = String::new();
    std::io::BufRead::read_line(&mut BufReader::new(child.stdout.take().unwrap()), &mut port)
        .unwrap();
    let took = hundred_sequential_jobs(&format!("http://127.0.0.1:{}/", port.trim()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(took < Duration::from_millis(2000), "100 jobs took {took:?}");
}

/// Reads `succeeded` from the process's `Job done.` lines so far.
fn reprow_succeeded(reprow: &Reprow) -> usize {
    reprow
        .log()
        .lines()
        .filter(|l| l.contains("\"action\":\"complete\""))
        .count()
}

/// One keep-alive connection of a worker that sends head and body separately, Nagle on.
fn nagle_worker(stream: TcpStream) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n")
            .is_err()
            || w.write_all(b"ok").is_err()
        {
            return;
        }
    }
}

/// A network namespace of the test's own with a loopback of MTU 1500 shaped to 20 Mbit/s
/// (`ip netns`, `tc`): removed on drop.
struct ShapedNetns {
    name: String,
}

impl ShapedNetns {
    /// `None` when this machine cannot make one (not root, no iproute2); with
    /// `REPROW_TEST_NETNS=1` (set by `.ci/run`) that fails the test instead.
    fn new() -> Option<ShapedNetns> {
        let name = format!("reprow-t-{}", std::process::id());
        let run = |args: &[&str]| {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let ns = ShapedNetns { name };
        let n = ns.name.as_str();
        let ok = run(&["ip", "netns", "add", n])
            && run(&["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"])
            && run(&[
                "ip", "netns", "exec", n, "ip", "link", "set", "lo", "mtu", "1500",
            ])
            && run(&[
                "ip", "netns", "exec", n, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate",
                "20mbit", "burst", "1600", "latency", "50ms",
            ]);
        if ok {
            return Some(ns);
        }
        assert!(
            std::env::var("REPROW_TEST_NETNS").as_deref() != Ok("1"),
            "REPROW_TEST_NETNS=1 but a shaped network namespace could not be made"
        );
        None
    }
}

impl Drop for ShapedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// On a link with a 1500-byte MTU at 20 Mbit/s a 3 KiB head always arrives in several
/// reads; before reads appended to the buffer, 100 of 100 such requests failed.
#[test]
fn heads_over_a_small_mtu_shaped_link() {
    let Some(ns) = ShapedNetns::new() else {
        eprintln!("skipped: cannot make a network namespace here (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "");
    let log = dir.path().join("reprow.log");
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_reprow"),
            "-c",
        ])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reprow = Reprow::adopt(child, log);
    let addr = reprow.api_addr();
    let netns = format!("/var/run/netns/{}", ns.name);
    // The client runs in a thread that joined the namespace (setns is per thread).
    let statuses = std::thread::spawn(move || {
        let fd = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut s = connect(addr);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let pad = "p".repeat(3 * 1024);
        (0..100)
            .map(|i| {
                let body = format!("{{\"i\":{i}}}");
                let req = format!(
                    "POST /q/mtu HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // 0: the connection was closed (after an answer to a corrupted request).
                if s.write_all(req.as_bytes()).is_err() {
                    return 0;
                }
                read_reply(&mut r).map_or(0, |reply| reply.status)
            })
            .collect::<Vec<u16>>()
    })
    .join()
    .unwrap();
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    drop(reprow);
}

/// The FIFO reader at the I/O level: lines written byte by byte with pauses (every byte its
/// own read), a CRLF cut between its CR and LF, a line of exactly `max_line_bytes`, one just
/// over it, and lines longer than one read of the pipe: each arrives whole, once, in order.
#[test]
fn fifo_lines_fed_byte_by_byte_and_across_reads() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let max = 100_000;
    let cfg = scene.config(
        &worker.url(),
        &format!("  max_line_bytes: {max}\n"),
        "  concurrency: 1\n",
        "threads: 1\n",
    );
    let reprow = Reprow::start(&cfg);
    let mut w = open_writer(&scene.fifo());
    let slow = b"{\"slow\":1}\r\n{\"slow\":2}\n";
    for b in slow {
        w.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let exact = "e".repeat(max);
    let over = "o".repeat(max + 1);
    let long = "l".repeat(70_000);
    w.write_all(format!("{exact}\r").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    w.write_all(format!("\n{over}\n{long}\nlast\n").as_bytes())
        .unwrap();
    let got = worker.wait_for(5);
    std::thread::sleep(Duration::from_millis(200));
    let (_, stats) = reprow.stop();
    let bodies: Vec<String> = worker.received().iter().map(Received::body_str).collect();
    assert_eq!(
        bodies,
        [
            r#"{"slow":1}"#,
            r#"{"slow":2}"#,
            exact.as_str(),
            long.as_str(),
            "last"
        ],
        "{} bodies",
        got.len()
    );
    assert_eq!(stats["lines_oversize"], 1, "{stats}");
}
