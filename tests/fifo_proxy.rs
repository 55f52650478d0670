//! End-to-end behaviour of the FIFO → HTTP worker proxy: a real `reprow` process, a real FIFO
//! and a real worker socket on 127.0.0.1. Guards the worker contract (headers, outcomes,
//! retries, Retry-After, timeouts), the malformed-response handling, the FIFO framing under many
//! writers, and that nothing read is ever lost.

mod common;

use std::{
    collections::HashSet,
    io::Write,
    time::{Duration, Instant},
};

use common::*;

#[test]
fn delivers_lines_with_contract_headers() {
    for driver in ["io_uring", "epoll"] {
        let worker = Worker::start(|_, _| Reply::ok());
        let scene = Scene::new();
        let cfg = scene.config(
            &worker.url(),
            "",
            "  concurrency: 4\n",
            &format!("driver: {driver}\n"),
        );
        let reprow = Reprow::start(&cfg);
        write_lines(
            &scene.fifo(),
            &[r#"{"n":1}"#, "", "plain text", "  ", "café ☕"],
        );
        let got = worker.wait_for(3);
        let bodies: HashSet<String> = got.iter().map(Received::body_str).collect();
        assert_eq!(
            bodies,
            HashSet::from([r#"{"n":1}"#.into(), "plain text".into(), "café ☕".into()])
        );
        for r in &got {
            assert!(r.header("User-Agent").unwrap().starts_with("reprow/"));
            assert_eq!(r.header("Content-Type"), Some("application/json"));
            assert_eq!(r.header("X-Reprow-Queue"), Some("queue"));
            assert_eq!(r.attempt(), 1);
            assert!(r.header("X-Reprow-Job-Id").unwrap().parse::<u64>().is_ok());
            assert!(humantime::parse_rfc3339(r.header("X-Reprow-Enqueued-At").unwrap()).is_ok());
        }
        let (status, stats) = reprow.stop();
        assert!(status.success(), "{driver}: {status:?}");
        assert_eq!(stats["succeeded"], 3, "{driver}");
        assert_eq!(stats["received"], 3, "{driver}");
        assert!(scene.records("pending.jsonl").is_empty());
    }
}

#[test]
fn json_envelope_sets_headers_and_content_type() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "  format: json\n  name: mails\n", "", "");
    let reprow = Reprow::start(&cfg);
    write_lines(
        &scene.fifo(),
        &[
            r#"{"payload":{"to":"a@b"},"headers":{"X-Trace":"t1"}}"#,
            r#"{"payload":"raw text","content_type":"text/plain"}"#,
            r#"{"payload":1,"headers":{"X-Bad":"a\r\nHost: evil"}}"#,
            "not json at all",
        ],
    );
    let got = worker.wait_for(2);
    let (_, stats) = reprow.stop();
    let by_body = |b: &str| got.iter().find(|r| r.body_str() == b).unwrap().clone();
    let first = by_body(r#"{"to":"a@b"}"#);
    assert_eq!(first.header("X-Trace"), Some("t1"));
    assert_eq!(first.header("X-Reprow-Queue"), Some("mails"));
    assert_eq!(
        by_body("raw text").header("Content-Type"),
        Some("text/plain")
    );
    assert_eq!(
        worker.received().len(),
        2,
        "refused envelopes must not reach the worker"
    );
    assert_eq!(stats["lines_invalid"], 2);
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed.len(), 2, "refused lines are recorded, not dropped");
    assert!(failed
        .iter()
        .any(|r| r["message"].as_str().unwrap().contains("not allowed")));
}

#[test]
fn server_error_then_success_is_retried() {
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(&scene.fifo(), &["job-a", "job-b"]);
    let got = worker.wait_for(4);
    let (_, stats) = reprow.stop();
    for body in ["job-a", "job-b"] {
        let attempts: Vec<u32> = got
            .iter()
            .filter(|r| r.body_str() == body)
            .map(Received::attempt)
            .collect();
        assert_eq!(attempts, vec![1, 2], "{body}");
    }
    assert_eq!(stats["retried"], 2);
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["failed"], 0);
}

/// The gap between a job's first and second delivery.
fn retry_gap(got: &[Received], body: &str) -> Duration {
    let times: Vec<Instant> = got
        .iter()
        .filter(|r| r.body_str() == body)
        .map(|r| r.at)
        .collect();
    times[1] - times[0]
}

#[test]
fn retry_after_is_honoured_and_clamped() {
    // 503 with Retry-After: 1 → the retry comes about a second later: not after the 20 ms
    // backoff, and not after max_retry_after (10 s) either. The upper bound has seconds of
    // margin for a slow machine yet fails when every Retry-After waits the clamp.
    let worker = Worker::start(|r, _| match (r.body_str().as_str(), r.attempt()) {
        ("soon", 1) => Reply::Status(503, vec![("Retry-After", "1".into())], vec![]),
        _ => Reply::ok(),
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "",
        "  max_retry_after: 10s
",
        "",
    ));
    write_lines(&scene.fifo(), &["soon"]);
    let got = worker.wait_for(2);
    reprow.stop();
    let soon = retry_gap(&got, "soon");
    assert!(
        soon >= Duration::from_millis(900) && soon < Duration::from_secs(5),
        "Retry-After: 1 with max_retry_after 10s gave {soon:?}"
    );
}

#[test]
fn retry_after_beyond_the_maximum_is_clamped() {
    // Retry-After far in the future is clamped to max_retry_after (2 s).
    let worker = Worker::start(|r, _| match (r.body_str().as_str(), r.attempt()) {
        ("clamped", 1) => Reply::Status(429, vec![("Retry-After", "86400".into())], vec![]),
        _ => Reply::ok(),
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "",
        "  max_retry_after: 2s
",
        "",
    ));
    write_lines(&scene.fifo(), &["clamped"]);
    let got = worker.wait_for(2);
    reprow.stop();
    let clamped = retry_gap(&got, "clamped");
    assert!(
        clamped >= Duration::from_millis(1900) && clamped < Duration::from_secs(60),
        "clamped gap {clamped:?}"
    );
}

#[test]
fn slow_worker_times_out_and_job_is_redelivered() {
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::After(Duration::from_secs(3), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "  timeout: 300ms\n", ""));
    write_lines(&scene.fifo(), &["slow"]);
    let got = worker.wait_for(2);
    let (_, stats) = reprow.stop();
    assert_eq!(got[1].attempt(), 2);
    assert!(got[1].at - got[0].at >= Duration::from_millis(250));
    assert_eq!(stats["timeouts"], 1);
    assert_eq!(stats["succeeded"], 1);
}

#[test]
fn refused_connections_pause_until_the_worker_appears() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let scene = Scene::new();
    let url = format!("http://127.0.0.1:{port}/");
    let reprow = Reprow::start(&scene.config(&url, "", "  concurrency: 2\n  max_retries: 1\n", ""));
    write_lines(&scene.fifo(), &["a", "b", "c"]);
    // Let the breaker trip and probe a few times; with max_retries 1 the jobs would have
    // failed by now if refused connections counted as attempts.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        reprow.log().contains("refuses connections"),
        "{}",
        reprow.log()
    );
    refused.release();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let worker = Worker::serve(listener, |_, _| Reply::ok(), None);
    let got = worker.wait_for(3);
    let (_, stats) = reprow.stop();
    assert!(
        got.iter().all(|r| r.attempt() == 1),
        "refusals must not use attempts"
    );
    assert_eq!(stats["succeeded"], 3);
    assert_eq!(stats["failed"], 0);
    assert!(stats["connect_errors"].as_u64().unwrap() >= 1);
    assert_eq!(stats["breakers_open"], 0);
}

#[test]
fn malformed_responses_are_retried_and_counted() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() < 70 * 1024 {
        huge.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    huge.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let worker = Worker::start(move |r, _| match (r.body_str().as_str(), r.attempt()) {
        ("garbage", 1) => Reply::Raw(b"this is not http\r\n\r\n".to_vec(), true),
        ("truncated", 1) => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            true,
        ),
        ("oversized", 1) => Reply::Raw(huge.clone(), true),
        ("badchunk", 1) => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_vec(),
            true,
        ),
        _ => Reply::ok(),
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(
        &scene.fifo(),
        &["garbage", "truncated", "oversized", "badchunk"],
    );
    let got = worker.wait_for(8);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(got.iter().filter(|r| r.attempt() == 2).count(), 4);
    assert_eq!(stats["malformed_responses"], 4);
    assert_eq!(stats["succeeded"], 4);
}

#[test]
fn chunked_and_close_delimited_responses_are_understood() {
    let worker = Worker::start(|r, _| match r.body_str().as_str() {
        "chunked" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        "close" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye".to_vec(),
            true,
        ),
        _ => Reply::Raw(b"HTTP/1.0 404 Nope\r\n\r\ngone".to_vec(), true),
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(&scene.fifo(), &["chunked", "close", "missing"]);
    worker.wait_for(3);
    let (_, stats) = reprow.stop();
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["failed"], 1, "404 is permanent");
    assert_eq!(stats["malformed_responses"], 0);
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed[0]["last_status"], 404);
    assert_eq!(failed[0]["attempts"], 1);
    assert_eq!(failed[0]["payload"], "missing");
}

#[test]
fn exhausted_retries_go_to_the_failed_file() {
    let worker = Worker::start(|_, _| Reply::status(502));
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "  max_retries: 2\n", ""));
    write_lines(&scene.fifo(), &["doomed"]);
    worker.wait_for(3);
    // The third failure settles the job; wait for the failed record, bounded.
    let deadline = Instant::now() + DEADLINE;
    while scene.records("failed.jsonl").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, stats) = reprow.stop();
    assert_eq!(worker.received().len(), 3, "1 attempt + 2 retries");
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 3);
    assert_eq!(failed[0]["last_status"], 502);
    assert!(failed[0]["message"]
        .as_str()
        .unwrap()
        .contains("retries exhausted"));
    assert_eq!(stats["failed"], 1);
}

#[test]
fn oversize_line_is_refused_and_reading_resumes() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "  max_line_bytes: 100\n", "", ""));
    let long = "x".repeat(5000);
    write_lines(&scene.fifo(), &["before", &long, "after"]);
    let got = worker.wait_for(2);
    let (_, stats) = reprow.stop();
    let bodies: Vec<String> = got.iter().map(Received::body_str).collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.contains(&"before".into()) && bodies.contains(&"after".into()));
    assert_eq!(stats["lines_oversize"], 1);
    // The `Stopped.` line names the FIFO's counters, none of the SQS source's.
    let names = stats.as_object().expect("counters").keys();
    assert_eq!(
        names.filter(|k| k.starts_with("sqs_")).count(),
        0,
        "{stats}"
    );
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["message"]
        .as_str()
        .unwrap()
        .contains("max_line_bytes"));
}

#[test]
fn eight_writers_interleave_without_loss_or_corruption() {
    const WRITERS: usize = 8;
    const LINES: usize = 300;
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 32\n", ""));
    let fifo = scene.fifo();
    open_writer(&fifo); // wait for reprow to be reading
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut f = open_writer(&fifo);
                for i in 0..LINES {
                    // Up to 4095 bytes plus newline: one atomic pipe write per line.
                    let len = 20 + (w * 977 + i * 131) % 4070;
                    let fill = char::from(b'a' + ((w + i) % 26) as u8);
                    let mut line = format!("{w}:{i}:{len}:");
                    while line.len() < len {
                        line.push(fill);
                    }
                    line.push('\n');
                    f.write_all(line.as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let got = worker.wait_for(WRITERS * LINES);
    let (_, stats) = reprow.stop();
    let mut seen = HashSet::new();
    for r in &got {
        let body = r.body_str();
        let mut parts = body.splitn(4, ':');
        let (w, i, len) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let (w, i, len): (usize, usize, usize) =
            (w.parse().unwrap(), i.parse().unwrap(), len.parse().unwrap());
        assert_eq!(body.len(), len, "line {w}:{i} has the wrong length");
        let fill = char::from(b'a' + ((w + i) % 26) as u8);
        assert!(
            parts.next().unwrap().chars().all(|c| c == fill),
            "line {w}:{i} is corrupted"
        );
        assert!(seen.insert((w, i)), "line {w}:{i} delivered twice");
    }
    assert_eq!(seen.len(), WRITERS * LINES);
    assert_eq!(
        stats["succeeded"].as_u64().unwrap() as usize,
        WRITERS * LINES
    );
}

#[test]
fn writer_eof_then_new_writer_without_busy_looping() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", "threads: 1\n"));
    write_lines(&scene.fifo(), &["first"]); // the writer closes: EOF on its side
    worker.wait_for(1);
    let cpu = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let pid = reprow.child.id() as i32;
    let before = cpu(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(pid) - before;
    // A busy loop on EOF would burn ~100 ticks in that second; idle is ~0.
    assert!(used < 20, "reprow used {used} clock ticks while idle");
    write_lines(&scene.fifo(), &["second"]);
    let got = worker.wait_for(2);
    assert_eq!(got[1].body_str(), "second");
    reprow.stop();
}

#[test]
fn stale_pooled_connection_is_retried_once_on_a_fresh_one() {
    // The worker drops idle connections after 100 ms without saying so; reprow's pool keeps
    // them for 1.5 s, so the second job finds its pooled connection dead.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let worker = Worker::serve(
        listener,
        |_, _| Reply::ok(),
        Some(Duration::from_millis(100)),
    );
    let scene = Scene::new();
    let reprow =
        Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 1\n", "threads: 1\n"));
    write_lines(&scene.fifo(), &["one"]);
    worker.wait_for(1);
    std::thread::sleep(Duration::from_millis(400));
    write_lines(&scene.fifo(), &["two"]);
    let got = worker.wait_for(2);
    let (_, stats) = reprow.stop();
    assert_eq!(
        got[1].attempt(),
        1,
        "a stale connection is not a failed attempt"
    );
    assert_eq!(stats["stale_connection_retries"], 1);
    assert_eq!(stats["retried"], 0);
    assert_eq!(stats["succeeded"], 2);
}

#[test]
fn concurrency_bounds_requests_in_flight_across_cores() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    };
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let worker = Worker::start(move |_, _| {
        let now = a.fetch_add(1, SeqCst) + 1;
        p.fetch_max(now, SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        a.fetch_sub(1, SeqCst);
        Reply::ok()
    });
    let scene = Scene::new();
    let reprow =
        Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 3\n", "threads: 2\n"));
    let lines: Vec<String> = (0..30).map(|i| format!("job{i}")).collect();
    write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(30);
    reprow.stop();
    assert_eq!(
        peak.load(SeqCst),
        3,
        "at most (and, under load, exactly) 3 requests in flight"
    );
}

#[test]
fn busy_workers_stop_reading_so_writers_block() {
    use std::io::ErrorKind;
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let worker = Worker::start(move |_, i| {
        if i == 0 {
            // Hold the only slot until the test has filled the pipe.
            let _ = release_rx.lock().unwrap().recv_timeout(DEADLINE);
        }
        Reply::ok()
    });
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 1\n", ""));
    let mut w = open_writer(&scene.fifo());
    write_lines(&scene.fifo(), &["first"]);
    worker.wait_for(1);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&w);
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let line = format!("{}\n", "y".repeat(1023));
    let mut accepted = 0;
    loop {
        // A plain write on purpose: with O_NONBLOCK it reports the full pipe as WouldBlock.
        #[allow(clippy::disallowed_methods)]
        let written = w.write(line.as_bytes());
        match written {
            Ok(n) => {
                assert_eq!(n, line.len(), "a 1 KiB write to a pipe is atomic");
                accepted += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            accepted < 10_000,
            "reprow kept reading while its only slot was busy"
        );
    }
    // 64 KiB in the pipe plus at most one 64 KiB read chunk held by reprow.
    assert!(
        accepted <= 140,
        "writer accepted {accepted} KiB before blocking"
    );
    release_tx.send(()).unwrap();
    worker.wait_for(1 + accepted);
    let (_, stats) = reprow.stop();
    assert_eq!(stats["succeeded"].as_u64().unwrap() as usize, 1 + accepted);
}

#[test]
fn max_held_jobs_caps_jobs_in_memory() {
    // Every job is answered 503 with a long Retry-After, so each waits in memory. With
    // max_held_jobs 4 only 4 jobs may be read; the rest stay in the pipe until shutdown.
    let worker =
        Worker::start(|_, _| Reply::Status(503, vec![("Retry-After", "60".into())], vec![]));
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "  max_held_jobs: 4\n",
        "  concurrency: 2\n",
        "",
    );
    let reprow = Reprow::start(&cfg);
    let lines: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
    write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        worker.received().len(),
        4,
        "no job beyond max_held_jobs was dispatched"
    );
    let (_, stats) = reprow.stop();
    assert_eq!(stats["dispatched"], 4);
    // Nothing is lost: the 4 held jobs and the 16 never dispatched are all in the pending file.
    let saved: HashSet<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(saved, lines.into_iter().collect::<HashSet<_>>());
}
