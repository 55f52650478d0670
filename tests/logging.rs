//! Logs: one JSON line per delivery end with fireworq's fields, payloads and tokens kept out
//! unless asked, and a log file reopened on SIGUSR1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The completion lines (target `reprow::job`) in a log.
fn completions(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "reprow::job")
        .collect()
}

fn wait_for_log(what: &str, read: impl Fn() -> String, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = read();
        if pred(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker() -> Worker {
    Worker::start(|r, _| match r.body_str().as_str() {
        r#"{"secret":"bad"}"# => Reply::Status(422, vec![], b"no such thing".to_vec()),
        r#"{"secret":"flaky"}"# if r.attempt() == 1 => Reply::status(503),
        _ => Reply::ok(),
    })
}

fn config(dir: &std::path::Path, worker: &Worker, extra: &str) -> std::path::PathBuf {
    durable_config(
        dir,
        &format!(
            "api:\n  listen: 127.0.0.1:0\n  token: tok-XYZZY\nqueues:\n  lq:\n    url: {}\n    retry_delay: 0\nroutings:\n  cat: lq\n{extra}",
            worker.url()
        ),
    )
}

fn enqueue_three(reprow: &Reprow) {
    let mut api = Api::new(reprow.api_addr());
    api.token = Some("tok-XYZZY".into());
    for secret in ["ok", "bad", "flaky"] {
        let r = api.post(
            "/job/cat",
            &format!(r#"{{"payload":{{"secret":"{secret}"}}}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Runs reprow with `extra` config, enqueues the three jobs, and waits for their four
/// completion lines (one job is retried once).
fn three_jobs_logged(extra: &str) -> (Worker, tempfile::TempDir, Reprow, String) {
    let worker = worker();
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&config(dir.path(), &worker, extra));
    enqueue_three(&reprow);
    worker.wait_for(4);
    let log = wait_for_log(
        "four completion lines",
        || reprow.log(),
        |l| completions(l).len() >= 4,
    );
    (worker, dir, reprow, log)
}

#[test]
fn completion_lines_carry_fireworqs_fields_and_no_payload_or_token() {
    let (_worker, _dir, reprow, log) = three_jobs_logged("");
    let lines = completions(&log);
    let by =
        |action: &str| -> Vec<&Value> { lines.iter().filter(|v| v["action"] == action).collect() };
    assert_eq!(by("complete").len(), 2, "{lines:?}");
    let fail = by("fail");
    assert_eq!(fail.len(), 1);
    assert_eq!(fail[0]["status"], "permanently_failed");
    assert_eq!(fail[0]["message"], "no such thing");
    assert_eq!(fail[0]["http_status"], 422);
    assert_eq!(fail[0]["level"], "WARN");
    let retry = by("retry");
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (
            retry[0]["status"].as_str(),
            retry[0]["retry_count"].as_u64()
        ),
        (Some("failed"), Some(0))
    );
    let flaky_done = by("complete")
        .into_iter()
        .find(|v| v["retry_count"] == 1)
        .expect("the retried job");
    assert_eq!(flaky_done["id"], retry[0]["id"]);
    for v in &lines {
        assert_eq!(
            (v["queue"].as_str(), v["category"].as_str()),
            (Some("lq"), Some("cat")),
            "{v}"
        );
        assert!(
            v["id"].as_u64().is_some() && v["elapsed"].as_u64().is_some(),
            "{v}"
        );
        assert!(v.get("payload").is_none(), "{v}");
    }
    assert!(!log.contains("secret"), "a payload reached the log:\n{log}");
    assert!(
        !log.contains("tok-XYZZY"),
        "the token reached the log:\n{log}"
    );
    assert!(reprow.stop().0.success());
}

#[test]
fn payloads_are_logged_only_when_asked() {
    let (_worker, _dir, reprow, log) = three_jobs_logged("log_payloads: true\n");
    let done = completions(&log)
        .into_iter()
        .find(|v| v["action"] == "complete" && v["retry_count"] == 0)
        .unwrap();
    assert_eq!(done["payload"], r#"{"secret":"ok"}"#);
    assert!(reprow.stop().0.success());
}

#[test]
fn sigusr1_without_a_log_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&durable_config(dir.path(), ""));
    let api = Api::new(reprow.api_addr());
    reprow.signal(nix::sys::signal::Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(api.get("/healthz").status, 200, "{}", reprow.log());
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
fn sigusr1_reopens_the_log_file() {
    let worker = worker();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let rotated = dir.path().join("app.log.1");
    let extra = format!("log_file: {}\n", file.display());
    let cfg = config(dir.path(), &worker, &extra);
    let mut reprow = Reprow::start(&cfg);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let log = wait_for_log(
        "the API address",
        || read(&file),
        |l| l.contains("API listening."),
    );
    assert!(
        reprow.log().is_empty(),
        "stderr should be empty: {}",
        reprow.log()
    );
    let addr: std::net::SocketAddr = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "API listening.")
        .and_then(|v| v["address"].as_str().map(|a| a.parse().unwrap()))
        .unwrap();
    // logrotate: move the file, then signal.
    std::fs::rename(&file, &rotated).unwrap();
    reprow.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for_log(
        "a new log file",
        || {
            if file.exists() {
                "y".into()
            } else {
                String::new()
            }
        },
        |l| !l.is_empty(),
    );
    let mut api = Api::new(addr);
    api.token = Some("tok-XYZZY".into());
    assert_eq!(
        api.post("/job/cat", r#"{"payload":{"secret":"ok"}}"#)
            .status,
        200
    );
    let new = wait_for_log(
        "the job's line in the new file",
        || read(&file),
        |l| !completions(l).is_empty(),
    );
    assert_eq!(completions(&new)[0]["action"], "complete");
    assert!(completions(&read(&rotated)).is_empty());
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(reprow.wait().success());
    // The final line is written before exit.
    assert!(read(&file).contains("\"Stopped.\""), "{}", read(&file));
}

#[test]
fn a_pull_workers_ack_and_failure_are_logged_too() {
    let worker = worker();
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&config(dir.path(), &worker, ""));
    let mut api = Api::new(reprow.api_addr());
    api.token = Some("tok-XYZZY".into());
    for _ in 0..2 {
        assert_eq!(api.post("/q/pulled", r#"{"secret":"x"}"#).status, 201);
    }
    // Leased hand-outs (reprow's opt-in): their acks and failure reports are logged.
    let first = api.get("/q/pulled?lease=1");
    let id = first.header("X-Reprow-Job-Id").unwrap().to_string();
    // The line's `elapsed` is how long the job was leased.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(api.delete(&format!("/q/pulled/{id}")).status, 204);
    let second = api.get("/q/pulled?lease=1");
    let id2 = second.header("X-Reprow-Job-Id").unwrap().to_string();
    let lease = second.header("X-Reprow-Lease").unwrap().to_string();
    let r = api.call_with(
        "PUT",
        "/q/pulled",
        Some(&format!(r#"{{"id":{id2},"message":"could not"}}"#)),
        &[("X-Reprow-Lease", &lease)],
    );
    assert!(r.status < 300, "{}", r.text());
    let log = wait_for_log(
        "two pull completion lines",
        || reprow.log(),
        |l| completions(l).len() >= 2,
    );
    let lines = completions(&log);
    let done = lines.iter().find(|v| v["action"] == "complete").unwrap();
    assert_eq!(
        (done["id"].to_string(), done["pulled"].as_bool()),
        (id, Some(true))
    );
    assert_eq!(done["queue"], "pulled");
    assert!(done["elapsed"].as_u64().is_some_and(|e| e >= 150), "{done}");
    let retry = lines.iter().find(|v| v["action"] == "retry").unwrap();
    assert_eq!(retry["message"], "could not");
    // A retry is not a failure for good: info, with its delay (failures for good are warnings).
    assert_eq!(
        (&done["level"], &retry["level"]),
        (&json!("INFO"), &json!("INFO"))
    );
    assert!(
        retry["retry_delay"].as_u64().is_some_and(|d| d > 0),
        "{retry}"
    );
    assert!(!log.contains("secret"), "{log}");
    // A fresh store has no reader slots of a dead process to clear, and says nothing of it.
    assert!(!log.contains("Cleared stale LMDB reader slots"), "{log}");
    assert!(reprow.stop().0.success());
}

/// The final `Stopped.` line carries its counters as a JSON object in JSON logs, and as
/// readable `name=value` pairs in text logs.
#[test]
fn the_stopped_line_carries_its_counters_as_an_object() {
    let (_worker, _dir, reprow, _) = three_jobs_logged("log_format: json\n");
    let log_path = reprow.stderr_path().to_path_buf();
    let (status, _) = reprow.stop();
    assert!(status.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    let stopped = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "Stopped.")
        .unwrap_or_else(|| panic!("no Stopped. line:\n{log}"));
    let stats = &stopped["stats"];
    assert!(stats.is_object(), "{stopped}");
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["failed"].as_u64()),
        (Some(2), Some(1)),
        "{stopped}"
    );
    assert_eq!(stopped["level"], "INFO");
    // Only the counters of the source that ran: the durable queue reads no FIFO lines and
    // sends no SQS requests.
    let keys: Vec<&String> = stats.as_object().unwrap().keys().collect();
    assert!(keys.iter().any(|k| *k == "received"), "{stopped}");
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("sqs_") || k.starts_with("lines_")),
        "{stopped}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut reprow = Reprow::start(&durable_config(dir.path(), "log_format: text\n"));
    wait_for_log(
        "the API address",
        || reprow.log(),
        |l| l.contains("API listening."),
    );
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(reprow.wait().success());
    let log = reprow.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("Stopped."))
        .unwrap_or_else(|| panic!("no Stopped. line:\n{log}"));
    assert!(
        last.contains("INFO") && last.contains(" succeeded=0") && last.contains(" received=0"),
        "{last}"
    );
    assert!(!last.contains('{') && !last.contains('"'), "{last}");
    assert!(!last.contains("sqs_") && !last.contains("lines_"), "{last}");
}
