//! Issue 21, the low findings about a worker's answer: an invalid status is a malformed answer
//! (retried), and a worker's words cannot forge lines in a text log. Real reprow, real worker
//! sockets.

mod common;

use std::time::{Duration, Instant};

use common::{durable_config, start_durable, Api, Reply, Reprow, Worker, DEADLINE};

/// The API address from a text log's `API listening. address=...` line.
fn text_log_address(reprow: &Reprow) -> std::net::SocketAddr {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = reprow.log();
        let found = log
            .lines()
            .filter(|l| l.contains("API listening."))
            .find_map(|l| l.split(" address=").nth(1))
            .and_then(|rest| rest.split(' ').next()?.parse().ok());
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no API address in:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn runner(url: &str) -> String {
    format!("runner:\n  type: http_proxy\n  url: {url}\n  max_retries: 3\n  backoff_base: 10ms\n  backoff_max: 20ms\n")
}

/// `HTTP/1.1 999` and `099` used to be permanent failures (read as "another 4xx"); they are
/// malformed answers now, so the job is tried again and succeeds on the next attempt.
#[test]
fn an_invalid_status_is_retried_not_failed() {
    for code in ["999", "099"] {
        let raw = format!("HTTP/1.1 {code} Odd\r\nContent-Length: 0\r\n\r\n").into_bytes();
        let worker = Worker::start(move |_, n| {
            if n == 0 {
                Reply::Raw(raw.clone(), true)
            } else {
                Reply::ok()
            }
        });
        let (_d, _r, api) = start_durable(&runner(&worker.url()));
        assert_eq!(api.post("/job/odd", r#"{"payload":{"n":1}}"#).status, 200);
        let got = worker.wait_for(2);
        assert_eq!(got[1].attempt(), 2, "{code}");
        let stats = api.wait_json("/queue/default/stats", |v| {
            v["total_completes"].as_u64() == Some(1)
        });
        assert_eq!(stats["total_permanent_failures"], 0, "{code}: {stats}");
        assert_eq!(stats["failed"].as_u64().unwrap_or(0), 0, "{code}: {stats}");
    }
}

/// With `log_format: text`, a worker's answer quoted in a log line keeps its CR and LF
/// escaped: no line of the log is one the worker wrote.
#[test]
fn a_worker_cannot_forge_text_log_lines() {
    let forged = "2026-12-07T00:00:00.000000Z ERROR reprow: FORGED store corrupted";
    let body = format!("bad\r\n{forged}\n{forged}\u{1b}[2J");
    let worker = Worker::start(move |_, _| {
        Reply::Status(
            500,
            vec![("Content-Type", "text/plain".into())],
            body.clone().into_bytes(),
        )
    });
    let extra = format!(
        "log_format: text\nrunner:\n  type: http_proxy\n  url: {}\n  max_retries: 0\n",
        worker.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&durable_config(dir.path(), &extra));
    let api = Api::new(text_log_address(&reprow));
    assert_eq!(api.post("/job/x", r#"{"payload":1}"#).status, 200);
    worker.wait_for(1);
    let deadline = Instant::now() + DEADLINE;
    let log = loop {
        let log = reprow.log();
        if log.contains("FORGED") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        log.contains("FORGED"),
        "the answer is logged at all:\n{log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-07T00:00:00"),
            "forged line: {line:?}"
        );
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line:?}");
    }
}
