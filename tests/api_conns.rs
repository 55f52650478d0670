//! The API server's connections, on real sockets: the connection cap admits exactly
//! `max_connections` and closes an idle connection only past it, an idle keep-alive connection
//! lives for `keep_alive_timeout` (not `request_timeout`), `Connection: close` is honoured at
//! once, and `REPROW_TOKEN` is the token when the file sets none. (Written for the mutants of
//! `src/api/mod.rs` that no test noticed.)

mod common;

use std::{
    io::{BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// One keep-alive `GET` on `s`; its answer, or `None` if the connection was closed.
fn get_on(s: &TcpStream, path: &str) -> Option<HttpReply> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    (&*s).write_all(req.as_bytes()).ok()?;
    read_reply(&mut BufReader::new(s))
}

/// With `max_connections: 3`, a third connection is served while two others idle: the cap is
/// not exceeded, so neither idle one is closed to make room, and the third is not refused.
#[test]
fn the_cap_admits_exactly_max_connections_and_closes_no_idle_one_below_it() {
    let (_dir, _reprow, api) = start_durable(
        "threads: 1\napi:\n  listen: 127.0.0.1:0\n  max_connections: 3\n  keep_alive_timeout: 60s\n",
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = connect(api.addr);
            assert_eq!(get_on(&s, "/healthz").map(|r| r.status), Some(200));
            // Time to wait for its next request (idle, evictable) before the next one opens.
            std::thread::sleep(Duration::from_millis(200));
            s
        })
        .collect();
    let third = connect(api.addr);
    // Mid-request, so that it is not idle itself.
    (&third)
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    (&third).write_all(b"\r\n").unwrap();
    let answer = read_reply(&mut BufReader::new(&third)).expect("an answer");
    assert_eq!(answer.status, 200, "the third of 3 allowed connections");
    for (i, s) in idle.iter().enumerate() {
        assert_eq!(
            get_on(s, "/healthz").map(|r| r.status),
            Some(200),
            "idle connection {i} was closed although the cap was not exceeded"
        );
    }
}

/// An idle keep-alive connection stays open past `request_timeout`: only
/// `keep_alive_timeout` closes it.
#[test]
fn an_idle_keep_alive_connection_outlives_the_request_timeout() {
    let (_dir, _reprow, api) = start_durable(
        "api:\n  listen: 127.0.0.1:0\n  request_timeout: 1s\n  keep_alive_timeout: 60s\n",
    );
    let s = connect(api.addr);
    assert_eq!(get_on(&s, "/healthz").map(|r| r.status), Some(200));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        get_on(&s, "/healthz").map(|r| r.status),
        Some(200),
        "closed after request_timeout while idle"
    );
}

/// A request with `Connection: close` is answered with `Connection: close`, and the
/// connection ends right after the answer (not at the keep-alive timeout).
#[test]
fn connection_close_is_honoured_at_once() {
    let (_dir, _reprow, api) =
        start_durable("api:\n  listen: 127.0.0.1:0\n  keep_alive_timeout: 60s\n");
    let mut s = connect(api.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(&s);
    let answer = read_reply(&mut r).expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    let n = r
        .read_to_end(&mut rest)
        .expect("the connection is closed, not left open until the keep-alive timeout");
    assert_eq!(n, 0);
}

/// `REPROW_TOKEN` is the token when the config file sets none; the file's token wins over it;
/// an empty `REPROW_TOKEN` means no token.
#[test]
fn reprow_token_from_the_environment() {
    let run = |file_token: &str, env_token: &str| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = durable_config(
            dir.path(),
            &format!("api:\n  listen: 127.0.0.1:0\n{file_token}"),
        );
        let log = dir.path().join("reprow.log");
        let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
            .arg("-c")
            .arg(&cfg)
            .env("REPROW_TOKEN", env_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let reprow = Reprow::adopt(child, log);
        let mut api = Api::new(reprow.api_addr());
        let without = api.get("/queues").status;
        let mut with = |t: &str| {
            api.token = Some(t.into());
            api.get("/queues").status
        };
        let answers = (without, with("from-env"), with("from-file"));
        drop(reprow);
        answers
    };
    assert_eq!(
        run("", "from-env"),
        (401, 200, 401),
        "the environment's token"
    );
    assert_eq!(
        run("  token: from-file\n", "from-env"),
        (401, 401, 200),
        "the file's token wins"
    );
    assert_eq!(
        run("", ""),
        (200, 200, 200),
        "an empty REPROW_TOKEN is no token"
    );
}

/// With `max_connections: 2` and both connections in the middle of a request (none idle to
/// close), a third is answered 503 and closed.
#[test]
fn a_connection_past_the_cap_is_refused_when_none_is_idle() {
    let (_dir, _reprow, api) = start_durable(
        "threads: 1\napi:\n  listen: 127.0.0.1:0\n  max_connections: 2\n  request_timeout: 60s\n",
    );
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = connect(api.addr);
            (&s).write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let third = connect(api.addr);
    let answer = read_reply(&mut BufReader::new(&third)).expect("an answer");
    assert_eq!(answer.status, 503);
    // The two held ones are still served.
    for s in &held {
        (&*s).write_all(b"Host: localhost\r\n\r\n").unwrap();
        let r = read_reply(&mut BufReader::new(s)).expect("an answer");
        assert_eq!(r.status, 200);
    }
}

/// A port another process keeps listening on fails the start after the short retry, instead
/// of reprow waiting for it forever; the error names the address and the setting, and nothing
/// was created on disk (the listener is bound before the store opens).
#[test]
fn a_port_held_by_a_live_listener_fails_the_start() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), &format!("api:\n  listen: {addr}\n"));
    let data = dir.path().join("data");
    assert!(!data.exists());
    let mut reprow = Reprow::start(&cfg);
    // `wait` fails the test if reprow is still running after DEADLINE (20 s).
    let status = reprow.wait();
    assert!(!status.success());
    let log = reprow.log();
    assert!(
        log.contains(&format!("cannot listen on {addr} (api.listen)")) && log.contains("in use"),
        "{log}"
    );
    assert!(
        !data.exists(),
        "the data directory was made before the bind failed"
    );
    drop(held);
}

/// The same for a FIFO's `monitor_listen`: named, and no FIFO made.
#[test]
fn a_taken_monitor_listen_is_named_and_makes_no_fifo() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("jobs");
    let cfg = dir.path().join("reprow.yaml");
    std::fs::write(
        &cfg,
        format!(
            "queue:\n  type: fifo\n  path: {}\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:9/\nmonitor_listen: {addr}\n",
            fifo.display()
        ),
    )
    .unwrap();
    let mut reprow = Reprow::start(&cfg);
    let status = reprow.wait();
    assert!(!status.success());
    let log = reprow.log();
    assert!(
        log.contains(&format!("cannot listen on {addr} (monitor_listen)")),
        "{log}"
    );
    assert!(!fifo.exists(), "the FIFO was made before the bind failed");
    drop(held);
}

/// A client that sends a whole 14 MiB body before reading (as curl does) reads the early 413:
/// reprow reads and drops up to 16 MiB after its answer instead of resetting the connection,
/// and 14 MiB is more than the kernel's socket buffers hold on their own.
#[test]
fn a_14_mib_body_sent_whole_still_reads_its_early_413() {
    let (_dir, _reprow, api) = start_durable(
        "api:\n  listen: 127.0.0.1:0\n  max_body_bytes: 4096\n  max_payload_bytes: 4096\n",
    );
    let s = connect(api.addr);
    let body_len = 14 * 1024 * 1024;
    (&s).write_all(
        format!("POST /q/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body_len}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
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
    let reply = read_reply(&mut BufReader::new(&s)).expect("an answer, not a reset");
    assert_eq!(reply.status, 413);
}

/// A pipelined request whose second half comes later than its first half, which arrived with
/// the previous request in one write, gets `request_timeout` to complete (here 10 s, the
/// default) from then: it is answered, not refused 408 at once.
#[test]
fn the_rest_of_a_pipelined_request_may_come_later() {
    let (_dir, _reprow, api) = start_durable("api:\n  listen: 127.0.0.1:0\n");
    let s = connect(api.addr);
    (&s).write_all(
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: local",
    )
    .unwrap();
    let mut r = BufReader::new(&s);
    assert_eq!(read_reply(&mut r).map(|a| a.status), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    (&s).write_all(b"host\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut r).map(|a| a.status), Some(200));
}

/// A client that goes on sending after its early 413 is cut off once reprow has read and
/// dropped 16 MiB (plus what the socket buffers hold), not read from for as long as it sends.
#[test]
fn a_client_sending_on_after_its_413_is_cut_off() {
    let (_dir, _reprow, api) = start_durable(
        "api:\n  listen: 127.0.0.1:0\n  max_body_bytes: 4096\n  max_payload_bytes: 4096\n",
    );
    let mut s = connect(api.addr);
    let body_len: usize = 1 << 30;
    s.write_all(
        format!("POST /q/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body_len}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    let cut = loop {
        if let Err(e) = s.write_all(&chunk) {
            break e;
        }
        sent += chunk.len();
        assert!(sent < 128 << 20, "128 MiB sent and still read");
    };
    assert!(
        matches!(
            cut.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{cut} after {sent} bytes"
    );
}

/// At the cap, the connection idle for longest is the one closed to make room; one idle
/// since later stays open.
#[test]
fn at_the_cap_the_connection_idle_longest_makes_room() {
    let (_dir, _reprow, api) = start_durable(
        "threads: 1\napi:\n  listen: 127.0.0.1:0\n  max_connections: 2\n  keep_alive_timeout: 60s\n",
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = connect(api.addr);
            assert_eq!(get_on(&s, "/healthz").map(|r| r.status), Some(200));
            std::thread::sleep(Duration::from_millis(200));
            s
        })
        .collect();
    let third = connect(api.addr);
    assert_eq!(get_on(&third, "/healthz").map(|r| r.status), Some(200));
    assert_eq!(
        get_on(&idle[0], "/healthz").map(|r| r.status),
        None,
        "the oldest idle connection was closed"
    );
    assert_eq!(
        get_on(&idle[1], "/healthz").map(|r| r.status),
        Some(200),
        "the newer idle connection stays"
    );
}

/// A request in the middle of its body when SIGTERM comes is still read and answered (with
/// `Connection: close`) within `shutdown_timeout`, and then reprow exits cleanly.
#[test]
fn a_request_under_way_at_shutdown_is_answered() {
    let (_dir, mut reprow, api) = start_durable("api:\n  listen: 127.0.0.1:0\n");
    let s = connect(api.addr);
    (&s).write_all(b"POST /q/late HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n\r\n{\"a\"")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    (&s).write_all(b":1}").unwrap();
    let answer = read_reply(&mut BufReader::new(&s)).expect("an answer before the exit");
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.header("Connection"), Some("close"));
    assert!(reprow.wait().success());
}

/// A client that uploads its body in bursts with pauses, and reads only once it has sent it
/// all, still reads its early 413: reprow keeps reading (for up to 2 s) through a pause
/// instead of closing at the first moment nothing is there, which would make the client's
/// next burst draw a reset that destroys the answer.
#[test]
fn a_body_sent_in_bursts_after_an_early_413_still_reads_it() {
    let (_dir, _reprow, api) = start_durable(
        "api:\n  listen: 127.0.0.1:0\n  max_body_bytes: 4096\n  max_payload_bytes: 4096\n",
    );
    let mut s = connect(api.addr);
    let burst = vec![b'x'; 16 * 1024];
    s.write_all(b"POST /q/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: 49152\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        s.write_all(&burst).expect("reprow still reads the body");
        std::thread::sleep(Duration::from_millis(150));
    }
    let reply = read_reply(&mut BufReader::new(&s)).expect("an answer, not a reset");
    assert_eq!(reply.status, 413);
}
