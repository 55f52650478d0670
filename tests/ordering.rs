//! Issue 25, ordering keys, against a real reprow process, its real LMDB store and a real worker
//! socket: 200 keys × 200 jobs, a worker that fails, times out and answers `Retry-After` at
//! random, and reprow killed -9 in the middle and started again. For every key the worker must
//! see its jobs in enqueue order, never two at once, and every job must end done.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{durable_config, Api, Reply, Reprow, Worker};
use nix::sys::signal::Signal;

const KEYS: usize = 200;
const PER_KEY: usize = 200;
/// The queue's request timeout: a request the worker holds longer is abandoned by reprow.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How much earlier than the worker saw it reprow may have sent a request (see `worker`).
const HELD_SLACK: Duration = Duration::from_millis(300);

/// One request the worker got: which job, when it began and when it ended for reprow (its
/// answer, or reprow's timeout for one the worker held past it), and whether it was a 2xx.
#[derive(Debug, Clone)]
struct Seen {
    n: usize,
    start: Instant,
    end: Option<Instant>,
    ok: bool,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

type Log = Arc<Mutex<BTreeMap<usize, Vec<Seen>>>>;

/// The worker: per request, by a fixed pseudo-random draw, 8% a 500 (retried with backoff), 3%
/// a 429 with `Retry-After: 1`, 0.5% held 1.5 s (past the 1 s timeout), else a 200 after 1 ms.
fn worker(log: Log, in_flight: Arc<AtomicUsize>) -> Worker {
    Worker::start(move |req, index| {
        in_flight.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&req.body).expect("a JSON job");
        let (k, n) = (
            v["k"].as_u64().unwrap() as usize,
            v["n"].as_u64().unwrap() as usize,
        );
        let slot = {
            let mut l = log.lock().unwrap();
            let seen = l.entry(k).or_default();
            seen.push(Seen {
                n,
                start,
                end: None,
                ok: false,
            });
            seen.len() - 1
        };
        let draw = splitmix(index as u64) % 1000;
        let (reply, end, ok) = if draw < 80 {
            (Reply::status(500), Instant::now(), false)
        } else if draw < 110 {
            let r = Reply::Status(429, vec![("Retry-After", "1".into())], b"later".to_vec());
            (r, Instant::now(), false)
        } else if draw < 115 {
            std::thread::sleep(TIMEOUT + Duration::from_millis(500));
            // For reprow it ended at its timeout, counted from when it sent the request, which
            // is before `start` by the time the request took to get here (a new connection's
            // thread, on a busy machine): `HELD_SLACK` allows for that. A job of the key sent
            // beside this one would begin within milliseconds of it, far inside the window.
            (Reply::ok(), start + TIMEOUT - HELD_SLACK, false)
        } else {
            std::thread::sleep(Duration::from_millis(1));
            (Reply::ok(), Instant::now(), true)
        };
        {
            let mut l = log.lock().unwrap();
            let s = &mut l.get_mut(&k).unwrap()[slot];
            s.end = Some(end);
            s.ok = ok;
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        reply
    })
}

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

fn done_count(log: &Log) -> usize {
    let l = log.lock().unwrap();
    l.values()
        .map(|s| {
            s.iter()
                .filter(|s| s.ok)
                .map(|s| s.n)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum()
}

/// Waits, at most `limit`, until `pred` holds.
fn wait_until(limit: Duration, what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// For every key: the worker saw its jobs in order, never two at once, and each done; and the
/// worker's faults were met (retries happened).
fn check(log: &Log, keys: usize, per_key: usize) {
    let l = log.lock().unwrap();
    assert_eq!(l.len(), keys);
    let mut retried = 0;
    for (k, seen) in l.iter() {
        let mut seen = seen.clone();
        seen.sort_by_key(|s| s.start);
        for pair in seen.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                b.n >= a.n,
                "key {k}: job {} came after job {} (out of enqueue order)",
                b.n,
                a.n
            );
            assert!(
                b.start >= a.end.unwrap(),
                "key {k}: job {} began while job {} was in flight ({:?} before its end; {a:?})",
                b.n,
                a.n,
                a.end.unwrap() - b.start
            );
        }
        let done: BTreeSet<usize> = seen.iter().filter(|s| s.ok).map(|s| s.n).collect();
        assert_eq!(done.len(), per_key, "key {k}: jobs lost");
        retried += seen.len() - per_key;
    }
    // The worker's faults were met: retries happened (a 500, 429 or timeout each).
    assert!(retried > keys * per_key / 20, "only {retried} retries");
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
