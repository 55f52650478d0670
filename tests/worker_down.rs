//! A worker that is down is visible: one warning per origin when it starts refusing and one
//! when it answers again, a gauge per origin on `/metrics`, the origin in `/status` and
//! `reprow stats`, the reason in the job's listing; and a job whose worker stays unreachable
//! for `runner.max_unreachable` fails with that reason. A refused connection still costs no
//! attempt.

mod common;

use std::{net::TcpListener, time::Duration};

use common::start_durable as start;
use common::*;
use serde_json::Value;

fn count(log: &str, message: &str) -> usize {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .count()
}

fn metric_line(api: &Api, origin: &str) -> Option<String> {
    api.get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with(&format!("reprow_worker_unreachable{{origin=\"{origin}\"}}")))
        .map(str::to_string)
}

#[test]
fn an_unreachable_worker_is_reported_once_and_its_recovery_too() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let origin = format!("127.0.0.1:{port}");
    let (_dir, reprow, api) = start("");
    for i in 0..3 {
        let body = format!(r#"{{"url":"http://{origin}/work","payload":{{"n":{i}}}}}"#);
        assert_eq!(api.post("/job/down", &body).status, 200);
    }
    // Visible within a second or two: status, gauge, listing.
    let status = api.wait_json("/status", |v| {
        v["workers"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["origin"] == origin.as_str() && w["reachable"] == false)
        })
    });
    let w = &status["workers"][0];
    assert!(w["unreachable_since"].is_string(), "{w}");
    assert!(w["last_error"].as_str().unwrap().contains("refused"), "{w}");
    assert_eq!(
        metric_line(&api, &origin).unwrap().rsplit(' ').next(),
        Some("1")
    );
    let listed = api.wait_json("/queue/default/deferred", |v| {
        v["jobs"].as_array().is_some_and(|j| !j.is_empty())
    });
    let job = &listed["jobs"][0];
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{job}"
    );
    assert_eq!(
        job["fail_count"], 0,
        "a refused connection costs no attempt"
    );
    // `reprow stats` shows it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(["stats", "--once", "--url", &format!("http://{}", api.addr)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNREACHABLE WORKER") && text.contains(&origin),
        "{text}"
    );

    // Let several release rounds pass: still one warning for three jobs.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count(&reprow.log(), "Worker unreachable"),
        1,
        "{}",
        reprow.log()
    );

    // The worker comes up on that port: the jobs are done and the recovery is logged once.
    refused.release();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let worker = Worker::serve(listener, |_, _| Reply::ok(), None);
    let got = worker.wait_for(3);
    assert!(
        got.iter().all(|r| r.attempt() == 1),
        "refusals counted as attempts"
    );
    api.wait_json("/status", |v| v["workers"][0]["reachable"] == true);
    assert_eq!(
        metric_line(&api, &origin).unwrap().rsplit(' ').next(),
        Some("0")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&reprow.log(), "Worker reachable again"),
        1,
        "{}",
        reprow.log()
    );
}

#[test]
fn a_job_whose_worker_stays_unreachable_fails_after_max_unreachable() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let (_dir, _reprow, api) = start(&format!(
        "runner:\n  type: http_proxy\n  url: http://127.0.0.1:{port}/\n  max_unreachable: 2s\n"
    ));
    assert_eq!(api.post("/job/gone", r#"{"payload":{"x":1}}"#).status, 200);
    let failed = api.wait_json("/queue/default/failed", |v| {
        v["failed_jobs"].as_array().is_some_and(|f| f.len() == 1)
    });
    let entry = &failed["failed_jobs"][0];
    let text = entry.to_string();
    assert!(
        text.contains("unreachable") && text.contains("max_unreachable"),
        "{entry}"
    );
}

#[test]
fn max_unreachable_is_refused_where_it_does_not_apply() {
    let scene = Scene::new();
    let cfg = scene.config("http://127.0.0.1:1/", "", "  max_unreachable: 5s\n", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runner.max_unreachable") && err.contains("durable queue"),
        "{err}"
    );
}

/// The durable path has the breaker too (before the one pipeline only the FIFO, SQS and Q4M
/// dispatchers had one, and `reprow_breakers_open` stayed 0 here): a refused worker opens its
/// origin's breaker, jobs for it are handed back to the store without a connection attempt, and
/// the breaker closes when the worker is back.
#[test]
fn a_refusing_worker_opens_its_breaker_on_the_durable_path() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let (_dir, _reprow, api) = start("");
    let body = format!(r#"{{"url":"http://127.0.0.1:{port}/w","payload":{{"n":1}}}}"#);
    assert_eq!(api.post("/job/down", &body).status, 200);
    let breakers = |api: &Api| -> f64 {
        api.get("/metrics")
            .text()
            .lines()
            .find(|l| l.starts_with("reprow_breakers_open "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(-1.0)
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while breakers(&api) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    refused.release();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let worker = Worker::serve(listener, |_, _| Reply::ok(), None);
    worker.wait_for(1);
    let deadline = std::time::Instant::now() + DEADLINE;
    while breakers(&api) != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On the FIFO path a refused job waits in memory on its core (no store to take it back), so
/// the attempt the refusal did not cost must be given back there: the worker that comes up
/// sees attempt 1, and a `max_retries: 1` job answered 500 then still gets its one retry.
#[test]
fn a_refused_fifo_job_keeps_its_attempts() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let scene = Scene::new();
    let cfg = scene.config(
        &format!("http://127.0.0.1:{port}/work"),
        "",
        "  max_retries: 1\n",
        "",
    );
    let reprow = Reprow::start(&cfg);
    write_lines(&scene.fifo(), &["{\"n\":1}"]);
    let deadline = std::time::Instant::now() + DEADLINE;
    while count(&reprow.log(), "Worker unreachable") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {}",
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    refused.release();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let worker = Worker::serve(
        listener,
        |_, i| {
            if i == 0 {
                Reply::status(500)
            } else {
                Reply::ok()
            }
        },
        None,
    );
    let got = worker.wait_for(2);
    let attempts: Vec<u32> = got.iter().map(|r| r.attempt()).collect();
    assert_eq!(attempts, [1, 2], "refusals counted as attempts");
}
