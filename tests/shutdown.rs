//! Graceful shutdown on SIGTERM: reading stops, in-flight jobs finish, and every job still
//! held in memory (queued, or waiting for a retry) is written to the pending file. Nothing read
//! from the FIFO may be lost. Signals get their own test file.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn sigterm_drains_in_flight_and_saves_the_rest() {
    // Slow worker: jobs "r*" are answered 503 (so they wait for a retry in memory), others 200
    // after 300 ms (so some are in flight when the signal lands).
    let worker = Worker::start(|r, _| {
        if r.body_str().starts_with('r') {
            Reply::Status(503, vec![("Retry-After", "60".into())], vec![])
        } else {
            Reply::After(Duration::from_millis(300), Box::new(Reply::ok()))
        }
    });
    let scene = Scene::new();
    let reprow =
        Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 2\n", "threads: 1\n"));
    let jobs: Vec<String> = (0..3)
        .map(|i| format!("r{i}"))
        .chain((0..20).map(|i| format!("j{i}")))
        .collect();
    let refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    write_lines(&scene.fifo(), &refs);
    worker.wait_for(5);
    let (status, stats) = reprow.stop();
    assert!(status.success());

    let done: HashSet<String> = worker
        .received()
        .iter()
        .filter(|r| r.body_str().starts_with('j'))
        .map(Received::body_str)
        .collect();
    let pending: Vec<serde_json::Value> = scene.records("pending.jsonl");
    let saved: HashSet<String> = pending
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    for job in &jobs {
        assert!(
            done.contains(job) || saved.contains(job),
            "job {job} was lost"
        );
    }
    // In-flight jobs finished rather than being cut off: every delivered "j" job succeeded.
    assert_eq!(stats["succeeded"].as_u64().unwrap() as usize, done.len());
    for r in ["r0", "r1", "r2"] {
        assert!(
            saved.contains(r),
            "{r} was waiting for a retry and must be saved"
        );
    }
    assert_eq!(
        stats["pending_saved"].as_u64().unwrap() as usize,
        pending.len()
    );
    assert_eq!(stats["held"], 0, "every job is accounted for");
    // Saved records are valid envelopes for a `format: json` FIFO.
    for r in &pending {
        let line = serde_json::to_vec(r).unwrap();
        assert!(reprow::source::envelope::decode(&line).is_ok());
    }
}

#[test]
fn second_signal_exits_at_once() {
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(10), Box::new(Reply::ok())));
    let scene = Scene::new();
    let mut reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(&scene.fifo(), &["stuck"]);
    worker.wait_for(1);
    reprow.signal(Signal::SIGTERM);
    // Wait until the first signal has been seen, then send the second.
    let deadline = std::time::Instant::now() + DEADLINE;
    while !reprow.log().contains("Shutting down") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    reprow.signal(Signal::SIGINT);
    let status = reprow.wait();
    assert_eq!(status.code(), Some(130), "log:\n{}", reprow.log());
}

#[test]
fn shutdown_timeout_saves_jobs_still_in_flight() {
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(5), Box::new(Reply::ok())));
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "",
        "  concurrency: 2\n",
        "shutdown_timeout: 300ms\n",
    );
    let reprow = Reprow::start(&cfg);
    write_lines(&scene.fifo(), &["slow1", "slow2", "queued"]);
    worker.wait_for(2);
    let started = std::time::Instant::now();
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout cut the wait short"
    );
    let saved: HashSet<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        saved,
        HashSet::from(["slow1".into(), "slow2".into(), "queued".into()])
    );
    assert_eq!(stats["held"], 0);
}

#[test]
fn lines_still_in_the_pipe_are_saved_at_shutdown() {
    use std::io::Write as _;
    // The worker holds the only slot, so most lines stay in the kernel's pipe buffer; they
    // would vanish with the last descriptor if reprow did not read them out at shutdown.
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(500), Box::new(Reply::ok())));
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 1\n", ""));
    let mut w = open_writer(&scene.fifo());
    let mut all = String::new();
    for i in 0..100 {
        all.push_str(&format!("p{i}:{}\n", "z".repeat(1000)));
    }
    // 100 KiB: more than reprow reads in one chunk, less than chunk + pipe, so no blocking.
    w.write_all(all.as_bytes()).unwrap();
    drop(w);
    worker.wait_for(1);
    let (_, stats) = reprow.stop();
    let done: HashSet<String> = worker.received().iter().map(Received::body_str).collect();
    let saved: HashSet<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    for line in all.lines() {
        assert!(
            done.contains(line) || saved.contains(line),
            "line {} lost",
            &line[..4]
        );
    }
    assert_eq!(stats["received"], 100);
}

#[test]
fn jobs_requeued_on_a_core_after_refused_connections_are_saved_at_shutdown() {
    // Nothing listens on the worker's port: each job is refused, put back on its core's ready
    // queue (the attempt does not count) and the breaker pauses the core. At SIGTERM those
    // jobs sit in the ready queue, not in flight and not sleeping; every one must reach the
    // pending file.
    let scene = Scene::new();
    let refused = RefusedPort::new();
    let url = format!("http://127.0.0.1:{}/", refused.port());
    let reprow = Reprow::start(&scene.config(&url, "", "  concurrency: 3\n", "threads: 1\n"));
    let jobs = ["q0", "q1", "q2"];
    write_lines(&scene.fifo(), &jobs);
    let deadline = std::time::Instant::now() + DEADLINE;
    while !reprow.log().contains("refuses connections") {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker's refusals were never noticed; log:\n{}",
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give the other slots time to take their jobs and be refused too (it does not matter for
    // the assertion whether they did: read jobs must be saved wherever they wait).
    std::thread::sleep(Duration::from_millis(200));
    let (status, stats) = reprow.stop();
    assert!(status.success());
    let saved: HashSet<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stats["received"], 3, "{stats}");
    for job in jobs {
        assert!(
            saved.contains(job),
            "{job} was read but neither done nor saved; saved {saved:?}, stats {stats}"
        );
    }
    assert_eq!(stats["succeeded"], 0);
    assert_eq!(stats["held"], 0, "every job is accounted for");
}
