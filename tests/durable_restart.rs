//! Durability of the LMDB queue across restarts and crashes, with a real reprow process killed
//! by signals, a real LMDB file, and a real worker socket.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{durable_config, Api, Reply, Reprow, Worker};
use nix::sys::signal::Signal;
use serde_json::json;

#[test]
fn ready_delayed_leased_and_failed_jobs_survive_restarts_and_kill_9() {
    let worker = Worker::start(|req, _| {
        if req.body_str().contains("bad") {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "runner:\n  type: http_proxy\n  url: {url}\nqueues:\n  held:\n    url: {url}\n  pl:\n    mode: pull\n    lease: true\n    lease_timeout: 600\nroutings:\n  held: held\n",
            url = worker.url()
        ),
    );
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    assert_eq!(
        api.post("/control/held", r#"{"status":"stop"}"#).status,
        200
    );
    for i in 0..2 {
        assert_eq!(
            api.post("/job/held", &format!(r#"{{"payload":{{"ready":{i}}}}}"#))
                .status,
            200
        );
    }
    assert_eq!(
        api.post("/job/held", r#"{"payload":{"delayed":1},"run_after":3600}"#)
            .status,
        200
    );
    api.post("/q/pl", r#"{"leased":1}"#);
    let leased = api.get("/q/pl");
    let leased_id = leased.header("X-Reprow-Job-Id").unwrap().to_string();
    api.post("/job/other", r#"{"payload":"bad"}"#);
    api.wait_json("/queue/default/failed", |v| {
        v["failed_jobs"].as_array().unwrap().len() == 1
    });

    let check = |api: &Api, pull_id: &str| {
        let held = api.get("/queue/held/stats").json();
        assert_eq!(
            (
                held["waiting"].clone(),
                held["deferred"].clone(),
                held["paused"].clone()
            ),
            (json!(2), json!(1), json!(1)), // paused: 1 (a number, for Fireworqonsole)
            "{held}"
        );
        let failed = api.get("/queue/default/failed").json();
        assert_eq!(failed["failed_jobs"][0]["payload"], "bad");
        assert_eq!(failed["failed_jobs"][0]["result"]["code"], 400);
        // The leased job was not acked: after a restart it is ready again.
        let again = api.get("/q/pl");
        assert_eq!(again.status, 200, "leased job lost");
        assert_eq!(again.header("X-Reprow-Job-Id").unwrap(), pull_id);
    };

    let (status, _) = r.stop();
    assert!(status.success());
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    check(&api, &leased_id);

    // Now crash it instead: the same state comes back (the pulled job is leased again now).
    r.signal(Signal::SIGKILL);
    drop(r);
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    check(&api, &leased_id);
    assert!(r.log().contains("Store opened."));
    // Start dispatch again: the held jobs run, the delayed one waits. A job enqueued now, due
    // at once, comes after the two ready ones and before the delayed one were it due: once it
    // has arrived, a delayed job treated as due would have arrived too.
    api.post("/control/held", r#"{"status":"start"}"#);
    assert_eq!(
        api.post("/job/held", r#"{"payload":{"marker":1}}"#).status,
        200
    );
    // The failed "bad" job, the two ready ones and the marker (and the delayed one, if broken).
    worker.wait_for(4);
    api.wait_json("/queue/held/stats", |s| {
        s["grabbed"] == 0 && s["outstanding_jobs"].as_u64().unwrap() <= 1
    });
    let got = worker.received();
    assert!(
        !got.iter().any(|g| g.body_str().contains("delayed")),
        "the job delayed by an hour ran after the restart"
    );
    assert_eq!(
        got.iter()
            .filter(|g| g.body_str().contains("ready"))
            .count(),
        2
    );
    assert!(
        got.iter().any(|g| g.body_str().contains("marker")),
        "the marker job never ran"
    );
    let held = api.get("/queue/held/stats").json();
    assert_eq!(held["deferred"], 1, "{held}");
    r.stop();
}

#[test]
fn a_second_reprow_on_the_same_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "");
    let a = Reprow::start(&cfg);
    a.api_addr();
    let mut b = Reprow::start(&cfg);
    let status = b.wait();
    assert!(!status.success());
    assert!(
        b.log().contains("already in use by another reprow"),
        "{}",
        b.log()
    );
}

#[test]
fn a_full_map_refuses_new_jobs_with_507_and_acks_still_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "queues:\n  full:\n    mode: pull\n").to_path_buf();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("map_size: 64MiB", "map_size: 1MiB");
    std::fs::write(&cfg, text).unwrap();
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4000));
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..1000 {
        let r = api.post("/q/full", &payload);
        match r.status {
            201 => accepted += 1,
            507 => {
                refused = Some(r);
                break;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let refused = refused.expect("a 1 MiB map never filled up");
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("the store is full"),
        "{}",
        refused.text()
    );
    assert!(accepted > 50, "only {accepted} jobs fit");
    // Still full for the next one and for a batch; reads keep working.
    assert_eq!(api.post("/q/full", &payload).status, 507);
    assert_eq!(
        api.post("/qb/full", &format!(r#"{{"jobs":[{payload}]}}"#))
            .status,
        507
    );
    assert_eq!(api.get("/j/full").json()["job_count"], accepted);
    // Every job can be pulled (leased, reprow's opt-in) and acked: the reserve keeps acks
    // committing.
    for _ in 0..accepted {
        let got = api.get("/q/full?lease=1");
        assert_eq!(got.status, 200, "{}", got.text());
        let id = got.header("X-Reprow-Job-Id").unwrap().to_string();
        assert_eq!(api.delete(&format!("/q/full/{id}")).status, 204);
    }
    assert_eq!(api.get("/j/full").json()["job_count"], 0);
    assert_eq!(
        api.post("/q/full", &payload).status,
        201,
        "space is usable again"
    );
    r.stop();
}

/// The crash test of the issue: a producer records every acknowledged enqueue while reprow is
/// SIGKILLed at random moments 20 times and restarted on the same data; in the end the worker
/// must have received every acknowledged job at least once.
#[test]
fn kill_9_twenty_times_under_load_loses_no_acknowledged_job() {
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let s2 = seen.clone();
    let worker = Worker::start(move |req, _| {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        *s2.lock()
            .unwrap()
            .entry(v["n"].as_u64().unwrap())
            .or_default() += 1;
        Reply::ok()
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!("runner:\n  type: http_proxy\n  url: {}\nqueues:\n  default:\n    url: {}\n    max_workers: 50\n", worker.url(), worker.url()),
    );
    let next = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..20 {
        let r = Reprow::start(&cfg);
        let api = Api::new(r.api_addr());
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let (api, next, acked, stop) =
                    (api.clone(), next.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let batch = (i + p) % 4 == 0;
                        let ns: Vec<u64> = (0..if batch { 10 } else { 1 })
                            .map(|_| next.fetch_add(1, Ordering::SeqCst))
                            .collect();
                        let body = ns
                            .iter()
                            .map(|n| format!(r#"{{"payload":{{"n":{n}}}}}"#))
                            .collect::<Vec<_>>()
                            .join(",");
                        let path = if batch { "/job/k/batch" } else { "/job/k" };
                        let body = if batch { format!("[{body}]") } else { body };
                        // A connection error means reprow is gone: this request was not acked.
                        let Some(reply) = api.try_post(path, &body) else {
                            return;
                        };
                        if reply.status == 200 {
                            acked.lock().unwrap().extend(ns);
                        }
                    }
                })
            })
            .collect();
        // Each round must see acknowledged enqueues before the kill, or it tests nothing.
        let before = acked.lock().unwrap().len();
        let deadline = Instant::now() + common::DEADLINE;
        while acked.lock().unwrap().len() == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no enqueue was acknowledged; log:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(150 + rng.u64(0..500)));
        r.signal(Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            let _ = p.join();
        }
        drop(r);
    }
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|n| !seen.contains_key(n)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged jobs never reached the worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    api.wait_json("/queue/default/stats", |s| s["outstanding_jobs"] == 0);
    let seen = seen.lock().unwrap();
    let lost = acked.iter().filter(|n| !seen.contains_key(n)).count();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    println!(
        "kill -9 x20: acknowledged {} delivered {} distinct, lost {lost}, duplicates {duplicates}",
        acked.len(),
        seen.len()
    );
    assert_eq!(lost, 0);
    assert!(
        acked.len() > 1000,
        "too little load to mean anything: {}",
        acked.len()
    );
    r.stop();
}

/// A 2xx to a producer only after the write-ahead log frame holding its job is synced: reprow
/// runs under `strace`, which records its `fdatasync`/`fsync`/`msync` calls and its socket
/// writes in one ordered trace, and every enqueue answered 2xx must have a completed sync of
/// `reprow.wal` after the previous answer and before its own (a checkpoint's sync of
/// `data.mdb` does not count: it may hold only older jobs). The enqueues are sent one after another and
/// each waits for its answer, so no commit can serve two of them.
///
/// Why the kill -9 test cannot show this: SIGKILL ends the process, not the machine. Pages an
/// unsynced commit wrote stay in the kernel's page cache and reach the file later, so a reprow
/// that never syncs loses nothing when it is killed; only a power cut or a kernel crash would
/// show it. The trace checks the order of syscalls instead.
///
/// The API runs on the epoll driver here: with io_uring its answers would be written by
/// io_uring operations, which strace does not see.
#[test]
#[ignore = "needs strace: run by .ci/run"]
fn every_2xx_enqueue_answer_comes_after_a_sync_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        "driver: epoll\nthreads: 1\nqueues:\n  pl:\n    mode: pull\nroutings:\n  k: pl\n",
    );
    let n = 12;
    let text = common::strace::traced(
        dir.path(),
        &cfg,
        "fdatasync,fsync,msync,write,writev,sendto,sendmsg",
        |tracer| {
            let api = Api::new(tracer.api_addr());
            for i in 0..n {
                let reply = if i % 2 == 0 {
                    api.post("/job/k", &format!(r#"{{"payload":{{"i":{i}}}}}"#))
                } else {
                    api.post("/q/pl", &format!(r#"{{"i":{i}}}"#))
                };
                assert!(
                    (200..300).contains(&reply.status),
                    "{}: {}",
                    reply.status,
                    reply.text()
                );
            }
        },
    );

    // Walk the trace in order: a sync counts when it has returned 0; an answer counts when
    // its write starts.
    let mut events: Vec<(usize, bool, &str)> = Vec::new();
    let calls = common::strace::calls(&text);
    for c in &calls {
        let is_sync =
            matches!(c.name.as_str(), "fdatasync" | "fsync") && c.line.contains("reprow.wal>");
        if is_sync && c.ok {
            events.push((c.end, false, &c.line));
        }
        let is_write = matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg");
        if is_write && c.line.contains("\"HTTP/1.1 2") {
            events.push((c.start, true, &c.line));
        }
    }
    events.sort_by_key(|e| e.0);
    let mut synced_since_answer = false;
    let (mut answers, mut syncs) = (0, 0);
    for (_, is_answer, line) in events {
        if !is_answer {
            synced_since_answer = true;
            syncs += 1;
            continue;
        }
        assert!(
            synced_since_answer,
            "answer {answers} (2xx) was written with no sync of reprow.wal since the previous \
             answer: {line}\ntrace:\n{text}"
        );
        synced_since_answer = false;
        answers += 1;
    }
    assert_eq!(
        answers, n,
        "the trace shows {answers} 2xx answers of {n}; did reprow write them with io_uring?\n{text}"
    );
    assert!(syncs >= n, "{syncs} syncs for {n} answers");
}
