//! Issue 25, ordering keys, against a real reprow process, its real LMDB store and a real worker
//! socket: 200 keys × 200 jobs, a worker that fails, times out and answers `Retry-After` at
//! random, and reprow killed -9 in the middle and started again. For every key the worker must
//! see its jobs in enqueue order, never two at once, and every job must end done.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{
    durable_config,
    ordering::{check, done_count, wait_until, worker, Log},
    Api, Reprow,
};
use nix::sys::signal::Signal;

const KEYS: usize = 200;
const PER_KEY: usize = 200;
/// Enqueues jobs `from..to` of every key, one batch per job number (each key's jobs in order).
/// The first half goes through fireworq's batch route, the second through presque's with the
/// key in `X-Reprow-Ordering-Key`.
fn enqueue(api: &Api, from: usize, to: usize, presque: bool) {
    if presque {
        for k in 0..KEYS {
            let jobs: Vec<String> = (from..to)
                .map(|n| format!(r#"{{"k":{k},"n":{n}}}"#))
                .collect();
            let body = format!(r#"{{"jobs":[{}]}}"#, jobs.join(","));
            let key = format!("key-{k}");
            let r = api.call_with(
                "POST",
                "/qb/ord",
                Some(&body),
                &[
                    ("Content-Type", "application/json"),
                    ("X-Reprow-Ordering-Key", &key),
                ],
            );
            assert_eq!(r.status, 201, "{}", r.text());
        }
    } else {
        for n in from..to {
            let jobs: Vec<String> = (0..KEYS)
                .map(|k| format!(r#"{{"ordering_key":"key-{k}","payload":{{"k":{k},"n":{n}}}}}"#))
                .collect();
            let body = format!("[{}]", jobs.join(","));
            let r = api.call_with(
                "POST",
                "/job/ord/batch",
                Some(&body),
                &[("Content-Type", "application/json")],
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
}

#[test]
fn every_key_sees_its_jobs_in_order_one_at_a_time_through_failures_and_kill_9() {
    let log: Log = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let w = worker(log.clone(), in_flight.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "runner:\n  url: {url}\n  backoff_base: 50ms\n  backoff_max: 200ms\n\
             queues:\n  ord:\n    url: {url}\n    max_workers: {KEYS}\n    timeout: 1\n    max_retries: 1000\n\
             routings:\n  ord: ord\n",
            url = w.url()
        ),
    );
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    enqueue(&api, 0, PER_KEY / 2, false);
    let total = KEYS * PER_KEY;
    // In the middle: a fifth of the jobs done.
    wait_until(Duration::from_secs(120), "a fifth of the jobs", || {
        done_count(&log) >= total / 5
    });
    r.signal(Signal::SIGKILL);
    drop(r);
    // A request reprow sent before it died cannot be taken back: the worker finishes it. The
    // new reprow starts once the worker is idle, so "in flight" means one reprow's requests.
    wait_until(Duration::from_secs(10), "the worker to finish", || {
        in_flight.load(Ordering::SeqCst) == 0
    });
    let before = done_count(&log);
    assert!(before < total, "everything was done before the kill");
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    enqueue(&api, PER_KEY / 2, PER_KEY, true);
    wait_until(Duration::from_secs(300), "every job done", || {
        done_count(&log) == total
    });
    wait_until(Duration::from_secs(10), "the worker to finish", || {
        in_flight.load(Ordering::SeqCst) == 0
    });

    check(&log, KEYS, PER_KEY);
    let stats = api.get("/queue/ord/stats").json();
    assert_eq!(stats["outstanding_jobs"], 0, "{stats}");
    drop(r);
}

/// The FIFO: keys in the JSON envelope, the same faulty worker, a stop (SIGTERM) in the middle
/// whose pending file keeps each key's jobs in order with their keys, fed back into the FIFO of
/// the next run.
#[test]
fn fifo_keys_run_in_line_order_one_at_a_time_and_the_pending_file_keeps_them() {
    const FKEYS: usize = 40;
    const FJOBS: usize = 50;
    let log: Log = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let w = worker(log.clone(), in_flight.clone());
    let scene = common::Scene::new();
    let cfg = scene.config(
        &w.url(),
        "  format: json\n",
        "  concurrency: 32\n  timeout: 1s\n  max_retries: 1000\n",
        "",
    );
    let r = Reprow::start(&cfg);
    let mut lines = Vec::new();
    for n in 0..FJOBS {
        for k in 0..FKEYS {
            lines.push(format!(
                r#"{{"ordering_key":"key-{k}","payload":{{"k":{k},"n":{n}}}}}"#
            ));
        }
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    common::write_lines(&scene.fifo(), &refs);
    let total = FKEYS * FJOBS;
    wait_until(Duration::from_secs(60), "a third of the jobs", || {
        done_count(&log) >= total / 3
    });
    let (status, _) = r.stop();
    assert!(status.success(), "{status:?}");
    wait_until(Duration::from_secs(10), "the worker to finish", || {
        in_flight.load(Ordering::SeqCst) == 0
    });
    let pending = scene.records("pending.jsonl");
    assert!(!pending.is_empty(), "everything was done before the stop");
    // Per key, what is pending follows what was done, in order, with its key kept.
    let mut left: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for p in &pending {
        let v: serde_json::Value = serde_json::from_str(p["payload"].as_str().unwrap()).unwrap();
        let (k, n) = (
            v["k"].as_u64().unwrap() as usize,
            v["n"].as_u64().unwrap() as usize,
        );
        assert_eq!(p["ordering_key"], format!("key-{k}"), "{p}");
        left.entry(k).or_default().push(n);
    }
    {
        let l = log.lock().unwrap();
        for (k, ns) in &left {
            let done: BTreeSet<usize> = l
                .get(k)
                .map(|s| s.iter().filter(|s| s.ok).map(|s| s.n).collect())
                .unwrap_or_default();
            let expect: Vec<usize> = (0..FJOBS).filter(|n| !done.contains(n)).collect();
            assert_eq!(ns, &expect, "key {k}: pending jobs out of order or lost");
        }
    }
    std::fs::rename(scene.path("pending.jsonl"), scene.path("again.jsonl")).unwrap();
    let again = std::fs::read_to_string(scene.path("again.jsonl")).unwrap();
    let r = Reprow::start(&cfg);
    let again: Vec<&str> = again.lines().collect();
    common::write_lines(&scene.fifo(), &again);
    wait_until(Duration::from_secs(120), "every job done", || {
        done_count(&log) == total
    });
    wait_until(Duration::from_secs(10), "the worker to finish", || {
        in_flight.load(Ordering::SeqCst) == 0
    });
    drop(r);
    check(&log, FKEYS, FJOBS);
}

/// The API's refusals: a key given twice, differing, and a key out of bounds, each with a
/// message that names it; a job's key shows in its listing.
#[test]
fn the_api_refuses_bad_keys_by_name_and_lists_the_key() {
    let (_dir, _r, api) =
        common::start_durable("queues:\n  pl:\n    mode: pull\nroutings:\n  pl: pl\n");
    let json = [("Content-Type", "application/json")];
    let both = api.call_with(
        "POST",
        "/q/pl?ordering_key=a",
        Some("{}"),
        &[json[0], ("X-Reprow-Ordering-Key", "b")],
    );
    assert_eq!(both.status, 400, "{}", both.text());
    assert!(both
        .text()
        .contains("ordering_key and X-Reprow-Ordering-Key differ"));
    let same = api.call_with(
        "POST",
        "/q/pl?ordering_key=a",
        Some("{}"),
        &[json[0], ("X-Reprow-Ordering-Key", "a")],
    );
    assert_eq!(same.status, 201, "{}", same.text());
    let long = format!(r#"{{"ordering_key":"{}","payload":1}}"#, "k".repeat(257));
    let r = api.call_with("POST", "/job/pl", Some(&long), &json);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("ordering_key must be 1 to 256 bytes"),
        "{}",
        r.text()
    );
    let r = api.call_with("POST", "/q/pl?ordering_key=", Some("{}"), &json);
    assert_eq!(r.status, 400, "{}", r.text());
    let jobs = api.get("/queue/pl/waiting").json();
    assert!(jobs.to_string().contains(r#""ordering_key":"a""#), "{jobs}");
}
