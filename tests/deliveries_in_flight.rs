//! The durable delivery core at shutdown, through the binary: an idle core lets reprow exit at
//! once although `shutdown_timeout` is long, and a delivery in flight at SIGTERM is waited for
//! and settled; the "Shutdown timeout" warning appears exactly when a shutdown leaves jobs in
//! flight, on the FIFO path and the durable one. Written for mutants cargo-mutants missed in
//! `src/dispatch/durable.rs` and `src/dispatch/mod.rs`.

mod common;

use std::{path::Path, time::Duration};

use common::*;

/// A durable config with a long grace (60 s) and a runner URL; API on port 0.
fn config(dir: &Path, worker_url: &str) -> std::path::PathBuf {
    config_with_grace(dir, worker_url, "60s")
}

fn config_with_grace(dir: &Path, worker_url: &str, grace: &str) -> std::path::PathBuf {
    let path = dir.join("reprow.yaml");
    let text = format!(
        "queue:\n  type: lmdb\n  path: {}\n  map_size: 64MiB\napi:\n  listen: 127.0.0.1:0\nrunner:\n  type: http_proxy\n  url: {worker_url}\nshutdown_timeout: {grace}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_idle_durable_core_does_not_wait_out_the_shutdown_timeout() {
    let worker = Worker::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&config(dir.path(), &worker.url()));
    let api = Api::new(reprow.api_addr());
    assert_eq!(api.post("/job/idle", r#"{"payload":{"n":1}}"#).status, 200);
    worker.wait_for(1);
    api.wait_json("/queue/default/stats", |v| v["total_successes"] == 1);
    // Nothing is in flight: the exit must not wait for the 60 s grace. `stop` gives up (and
    // fails the test) after DEADLINE, 20 s.
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 1, "{stats}");
    assert!(
        !reprow_log(&dir).contains("Shutdown timeout"),
        "{}",
        reprow_log(&dir)
    );
}

fn reprow_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("reprow.log")).unwrap_or_default()
}

#[test]
fn a_durable_delivery_in_flight_at_sigterm_is_finished_and_counted() {
    // The worker answers after 1.5 s; SIGTERM lands while the request is in flight. The grace
    // (60 s) is far longer, so the answer must be waited for and the job settled as done.
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(1500), Box::new(Reply::ok())));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &worker.url());
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    assert_eq!(api.post("/job/slow", r#"{"payload":{"n":1}}"#).status, 200);
    worker.wait_for(1);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(
        stats["succeeded"], 1,
        "the in-flight delivery was cut off: {stats}"
    );

    // Settled for good: a restart finds nothing to deliver again.
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let s = api.get("/queue/default/stats").json();
    assert_eq!(s["outstanding_jobs"], 0, "{s}");
    assert_eq!(worker.received().len(), 1);
}

/// A durable reprow whose one delivery is still in flight when a 300 ms grace ends.
fn durable_stuck_at_shutdown() -> (Worker, tempfile::TempDir, Reprow) {
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(5), Box::new(Reply::ok())));
    let dir = tempfile::tempdir().unwrap();
    let reprow = Reprow::start(&config_with_grace(dir.path(), &worker.url(), "300ms"));
    let api = Api::new(reprow.api_addr());
    assert_eq!(api.post("/job/stuck", r#"{"payload":{"n":1}}"#).status, 200);
    worker.wait_for(1);
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    (worker, dir, reprow)
}

#[test]
fn a_durable_shutdown_that_cuts_a_delivery_short_says_so() {
    let (_worker, dir, mut reprow) = durable_stuck_at_shutdown();
    let warning = "Shutdown timeout: handing back jobs still in flight; they may run twice.";
    let deadline = std::time::Instant::now() + DEADLINE;
    while !reprow_log(&dir).contains(warning) {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning; log:\n{}",
            reprow_log(&dir)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = reprow.wait();
    assert!(status.success(), "{}", reprow_log(&dir));
}

/// Found by the mutation audit: in durable mode, when `shutdown_timeout` ended with a delivery
/// still in flight, reprow logged the warning and then never exited (no "Stopped." line) until
/// a second signal: the delivery task outlived its core's event loop with a `Store` handle, and
/// the store thread ended only when every handle was dropped. `Store::close` ends it once the
/// commands sent before are applied.
#[test]
fn a_durable_shutdown_with_a_delivery_in_flight_past_the_grace_still_exits() {
    let (_worker, dir, mut reprow) = durable_stuck_at_shutdown();
    let status = reprow.wait();
    assert!(status.success(), "{}", reprow_log(&dir));
    assert_eq!(reprow.final_stats()["succeeded"], 0);
}

#[test]
fn a_clean_fifo_shutdown_does_not_warn_of_jobs_in_flight() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(&scene.fifo(), &["a", "b"]);
    worker.wait_for(2);
    // Both answers taken in (bounded wait), so nothing is in flight at SIGTERM.
    let deadline = std::time::Instant::now() + DEADLINE;
    while reprow.log().matches("Job done.").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", reprow.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let log_path = reprow.stderr_path().to_path_buf();
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 2, "{stats}");
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("Shutdown timeout"), "{log}");
}

#[test]
fn a_fifo_shutdown_that_cuts_deliveries_short_says_so() {
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(5), Box::new(Reply::ok())));
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", "", "shutdown_timeout: 300ms\n");
    let reprow = Reprow::start(&cfg);
    write_lines(&scene.fifo(), &["slow"]);
    worker.wait_for(1);
    let log_path = reprow.stderr_path().to_path_buf();
    let (status, _) = reprow.stop();
    assert!(status.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("Shutdown timeout: handing back jobs still in flight"),
        "{log}"
    );
}

/// The monitoring API of a FIFO reprow (`monitor_listen`), from its "Monitoring listening." line.
fn monitoring(reprow: &Reprow) -> Api {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let found = reprow.log().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "Monitoring listening.")
                .then(|| v["address"].as_str().unwrap().parse().unwrap())
        });
        if let Some(addr) = found {
            return Api::new(addr);
        }
        assert!(std::time::Instant::now() < deadline, "{}", reprow.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the sample `name{labels}` in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn only_jobs_done_count_in_the_fifo_enqueue_to_done_histogram() {
    // "bad" is answered 400 (a permanent failure), the two others 200: all three are timed as
    // attempts, only the two done go into enqueue_to_done (counting the failure instead would
    // give 1).
    let worker = Worker::start(|r, _| {
        if r.body_str() == "bad" {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", "", "monitor_listen: 127.0.0.1:0\n");
    let reprow = Reprow::start(&cfg);
    let api = monitoring(&reprow);
    write_lines(&scene.fifo(), &["bad", "good", "good2"]);
    api.wait_json("/status", |v| {
        v["counters"]["succeeded"] == 2 && v["counters"]["failed"] == 1
    });
    let text = api.get("/metrics").text();
    assert_eq!(
        sample(&text, r#"reprow_queue_worker_seconds_count{queue="queue"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"reprow_queue_enqueue_to_done_seconds_count{queue="queue"}"#
        ),
        Some(2.0),
        "{text}"
    );
}

/// Requests in flight are a gauge: up while a request waits for its answer, back to zero once
/// every job is answered.
#[test]
fn the_in_flight_gauge_returns_to_zero() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", "", "monitor_listen: 127.0.0.1:0\n");
    let reprow = Reprow::start(&cfg);
    let api = monitoring(&reprow);
    write_lines(&scene.fifo(), &["a", "b", "c"]);
    api.wait_json("/status", |v| v["counters"]["succeeded"] == 3);
    let text = api.get("/metrics").text();
    assert_eq!(sample(&text, "reprow_in_flight"), Some(0.0), "{text}");
}

/// A durable queue's worker host that does not resolve (the FIFO's is checked at start, a
/// queue's when a job is handed out) is a failed attempt like any transport error: retried within its
/// `max_retries`, then failed for good with every attempt counted.
#[test]
fn an_unresolvable_worker_host_costs_attempts() {
    let (_dir, _reprow, api) = start_durable(
        "queues:\n  far:\n    url: http://reprow-test.invalid:9/w\n    max_retries: 1\n    retry_delay: 0\nroutings:\n  nowhere: far\n",
    );
    assert_eq!(api.post("/job/nowhere", r#"{"payload":{}}"#).status, 200);
    let failed = api.wait_json("/queue/far/failed", |v| {
        v["failed_jobs"].as_array().is_some_and(|f| f.len() == 1)
    });
    let entry = &failed["failed_jobs"][0];
    assert_eq!(entry["fail_count"], 2, "{entry}");
    assert!(entry.to_string().contains("cannot resolve"), "{entry}");
}

/// A keep-alive HTTP worker that answers every request 200 and counts the connections it
/// accepted.
fn counting_worker() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if w.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_durable_core_keeps_a_connection_pool_per_worker_url() {
    // Two job URLs on one worker, used A, B, A, B one job at a time on one core: each URL's
    // pool is kept (up to 64), so the worker sees two connections, one per URL, not one per
    // job.
    let (addr, accepted) = counting_worker();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reprow.yaml");
    std::fs::write(
        &path,
        format!(
            "queue:\n  type: lmdb\n  path: {}\n  map_size: 64MiB\napi:\n  listen: 127.0.0.1:0\nrunner:\n  type: http_proxy\n  url: http://{addr}/default\n  pool_idle_timeout: 60s\nthreads: 1\nshutdown_timeout: 5s\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let reprow = Reprow::start(&path);
    let api = Api::new(reprow.api_addr());
    for (i, p) in ["a", "b", "a", "b"].iter().enumerate() {
        let body = format!(r#"{{"url":"http://{addr}/{p}","payload":{{"n":{i}}}}}"#);
        assert_eq!(api.post("/job/pools", &body).status, 200);
        api.wait_json("/queue/default/stats", |v| v["total_successes"] == i + 1);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one connection per worker URL"
    );
}
