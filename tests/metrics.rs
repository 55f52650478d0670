//! `/metrics`, `/healthz` and `/readyz` of a running reprow, the exposition read by
//! prometheus_client's parser (Python; `REPROW_TEST_PYTHON` names the interpreter, default
//! `python3`; `.ci/run` installs the module).

mod common;

use std::{io::Write, process::Stdio, time::Duration};

use common::*;
use serde_json::Value;

/// `REPROW_TEST_PYTHON`, else the first of `python3`, `/usr/bin/python3` that has
/// prometheus_client (Debian's package goes to the system interpreter).
fn python_with_prometheus_client() -> String {
    let candidates: Vec<String> = match std::env::var("REPROW_TEST_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for p in &candidates {
        let ok = std::process::Command::new(p)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.clone();
        }
    }
    panic!("no Python with prometheus_client among {candidates:?}: apt install python3-prometheus-client or pip install prometheus_client (bash .ci/run does)");
}

/// The exposition parsed by the real parser: family → {type, samples}.
fn parse(text: &str) -> Value {
    let python = python_with_prometheus_client();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/parse_metrics.py"
    );
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(m: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let fam = &m[family];
    assert!(!fam.is_null(), "no family {family}");
    fam["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {fam}"))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_follow_the_jobs_and_parse_as_prometheus() {
    let worker = Worker::start(|r, _| match r.body_str().as_str() {
        r#"{"k":"bad"}"# => Reply::status(422),
        r#"{"k":"flaky"}"# if r.attempt() == 1 => Reply::status(503),
        _ => Reply::After(Duration::from_millis(20), Box::new(Reply::ok())),
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "runner:\n  type: http_proxy\n  url: {}\nqueues:\n  mq:\n    url: {}\n    retry_delay: 0\nroutings:\n  m: mq\n",
            worker.url(),
            worker.url()
        ),
    );
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    for body in [
        r#"{"k":1}"#,
        r#"{"k":2}"#,
        r#"{"k":"bad"}"#,
        r#"{"k":"flaky"}"#,
    ] {
        let r = api.post("/job/m", &format!(r#"{{"payload":{body}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    worker.wait_for(5);
    let m = api.wait_json("/queue/mq/stats", |s| s["total_completes"] == 4);
    let _ = m;

    let r = api.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse(&r.text());
    let q = [("queue", "mq")];
    assert_eq!(m["reprow_queue_enqueued"]["type"], "counter");
    assert_eq!(
        value(
            &m,
            "reprow_queue_enqueued",
            "reprow_queue_enqueued_total",
            &q
        ),
        4.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_dispatched",
            "reprow_queue_dispatched_total",
            &q
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_succeeded",
            "reprow_queue_succeeded_total",
            &q
        ),
        3.0
    );
    assert_eq!(
        value(&m, "reprow_queue_retried", "reprow_queue_retried_total", &q),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_queue_failed", "reprow_queue_failed_total", &q),
        1.0
    );
    assert_eq!(m["reprow_queue_waiting"]["type"], "gauge");
    assert_eq!(
        value(&m, "reprow_queue_waiting", "reprow_queue_waiting", &q),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_queue_in_flight", "reprow_queue_in_flight", &q),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_queue_failed_log", "reprow_queue_failed_log", &q),
        1.0
    );

    // Histograms: every attempt timed; the three successes from enqueue to done.
    assert_eq!(m["reprow_queue_worker_seconds"]["type"], "histogram");
    let h = "reprow_queue_worker_seconds";
    assert_eq!(value(&m, h, &format!("{h}_count"), &q), 5.0);
    assert_eq!(
        value(
            &m,
            h,
            &format!("{h}_bucket"),
            &[("queue", "mq"), ("le", "+Inf")]
        ),
        5.0
    );
    // The 20 ms answers are above the 10 ms bucket, the two immediate ones below it.
    let le_10ms = value(
        &m,
        h,
        &format!("{h}_bucket"),
        &[("queue", "mq"), ("le", "0.01")],
    );
    assert!((2.0..=3.0).contains(&le_10ms), "{le_10ms}");
    assert!(value(&m, h, &format!("{h}_sum"), &q) >= 0.06);
    let e = "reprow_queue_enqueue_to_done_seconds";
    assert_eq!(value(&m, e, &format!("{e}_count"), &q), 3.0);

    let c = "reprow_store_commit_ops";
    assert!(
        value(&m, c, &format!("{c}_sum"), &[]) >= 9.0,
        "4 enqueues + 5 settlements"
    );
    let s = "reprow_store_commit_seconds";
    assert!(value(&m, s, &format!("{s}_count"), &[]) >= 1.0);
    assert_eq!(
        value(&m, "reprow_succeeded", "reprow_succeeded_total", &[]),
        3.0
    );
    assert_eq!(
        value(&m, "reprow_phase", "reprow_phase", &[("phase", "running")]),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_phase", "reprow_phase", &[("phase", "draining")]),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_breakers_open", "reprow_breakers_open", &[]),
        0.0
    );
    let rss = value(
        &m,
        "reprow_process_resident_memory_bytes",
        "reprow_process_resident_memory_bytes",
        &[],
    );
    assert!(rss > 1e6, "{rss}");
    assert!(api.post("/metrics", "").status == 405);
    // Counters never go down between scrapes; histogram buckets are cumulative.
    let again = parse(&api.get("/metrics").text());
    for (family, f) in m.as_object().unwrap() {
        for s in f["samples"].as_array().unwrap() {
            let name = s[0].as_str().unwrap();
            if f["type"] == "counter" || name.ends_with("_bucket") || name.ends_with("_count") {
                let before = s[2].as_f64().unwrap();
                let after = again[family]["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t[0] == s[0] && t[1] == s[1])
                    .and_then(|t| t[2].as_f64())
                    .unwrap_or_else(|| panic!("{name} {} vanished", s[1]));
                assert!(
                    after >= before,
                    "{name} {} went from {before} to {after}",
                    s[1]
                );
            }
        }
        if f["type"] == "histogram" {
            let buckets: Vec<f64> = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s[0].as_str().unwrap().ends_with("_bucket") && s[1]["queue"] == "mq")
                .map(|s| s[2].as_f64().unwrap())
                .collect();
            assert!(
                buckets.windows(2).all(|w| w[0] <= w[1]),
                "{family}: {buckets:?}"
            );
        }
    }
    assert!(reprow.stop().0.success());
}

#[test]
fn probes_answer_without_the_token_and_metrics_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "api:\n  listen: 127.0.0.1:0\n  token: s3cret\n");
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let r = api.wait_json("/readyz", |v| v["status"] == "ok");
    assert_eq!(r["status"], "ok");
    let r = api.get("/healthz");
    assert_eq!((r.status, r.json()["status"].clone()), (200, "ok".into()));
    assert_eq!(api.post("/healthz", "").status, 405);
    assert_eq!(api.get("/metrics").status, 401);
    let r = api.call_with(
        "GET",
        "/metrics",
        None,
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    parse(&r.text());
    assert!(reprow.stop().0.success());
}

#[test]
fn a_fifo_reprow_serves_monitoring_on_monitor_listen() {
    let worker = Worker::start(|r, _| {
        if r.body_str().contains("slow") {
            Reply::After(Duration::from_millis(1500), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "  max_line_bytes: 64\n",
        "",
        "monitor_listen: 127.0.0.1:0\n",
    );
    let reprow = Reprow::start(&cfg);
    let addr = {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let found = reprow.log().lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "Monitoring listening.").then(|| {
                    v["address"]
                        .as_str()
                        .unwrap()
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                })
            });
            if let Some(a) = found {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "{}", reprow.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let api = Api::new(addr);
    api.wait_json("/readyz", |v| v["status"] == "ok");
    let long = "x".repeat(100);
    write_lines(&scene.fifo(), &[r#"{"n":1}"#, &long, r#"{"n":2}"#]);
    worker.wait_for(2);
    let m = api.wait_json("/status", |v| v["counters"]["succeeded"] == 2);
    assert_eq!(m["phase"], "running");
    let m = parse(&api.get("/metrics").text());
    assert_eq!(
        value(
            &m,
            "reprow_fifo_lines_rejected",
            "reprow_fifo_lines_rejected_total",
            &[("reason", "oversize")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_succeeded", "reprow_succeeded_total", &[]),
        2.0
    );
    let h = "reprow_queue_worker_seconds";
    assert_eq!(
        value(&m, h, &format!("{h}_count"), &[("queue", "queue")]),
        2.0
    );
    assert!(m.get("reprow_store_commit_seconds").is_none());
    let q = [("queue", "queue")];
    assert_eq!(
        value(
            &m,
            "reprow_queue_enqueued",
            "reprow_queue_enqueued_total",
            &q
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_succeeded",
            "reprow_queue_succeeded_total",
            &q
        ),
        2.0
    );
    assert_eq!(
        value(&m, "reprow_queue_in_flight", "reprow_queue_in_flight", &q),
        0.0
    );
    assert_eq!(api.get("/").status, 404, "no dashboard without the job API");
    assert_eq!(api.get("/status/").status, 200);
    let r = api.get("/queues/stats");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("only /healthz"), "{}", r.text());
    // The running jobs (sqsd's CurrentWorkings).
    write_lines(&scene.fifo(), &[r#"{"slow":1}"#]);
    let board = api.wait_json("/inflight", |v| {
        v["jobs"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(board["jobs"][0]["queue"], "queue");
    assert_eq!(board["jobs"][0]["attempt"], 1);
    assert!(board["jobs"][0]["started_at"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    api.wait_json("/inflight", |v| {
        v["jobs"].as_array().is_some_and(|a| a.is_empty())
    });
    assert!(reprow.stop().0.success());
}
