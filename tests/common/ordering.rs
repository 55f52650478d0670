//! The ordering-key tests' worker and checks (`tests/ordering.rs`, `tests/sqs.rs`): a worker
//! that fails, times out and answers `Retry-After` at random while it records, per key, when
//! each job began and ended; and the check that every key saw its jobs in order, one at a time.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::{Reply, Worker};

/// The queue's request timeout: a request the worker holds longer is abandoned by reprow.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How much earlier than the worker saw it reprow may have sent a request (see `worker`).
pub const HELD_SLACK: Duration = Duration::from_millis(300);

/// One request the worker got: which job, when it began and when it ended for reprow (its
/// answer, or reprow's timeout for one the worker held past it), and whether it was a 2xx.
#[derive(Debug, Clone)]
pub struct Seen {
    pub n: usize,
    pub start: Instant,
    pub end: Option<Instant>,
    pub ok: bool,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub type Log = Arc<Mutex<BTreeMap<usize, Vec<Seen>>>>;

/// The worker: per request, by a fixed pseudo-random draw, 8% a 500 (retried with backoff), 3%
/// a 429 with `Retry-After: 1`, 0.5% held 1.5 s (past the 1 s timeout), else a 200 after 1 ms.
pub fn worker(log: Log, in_flight: Arc<AtomicUsize>) -> Worker {
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

pub fn done_count(log: &Log) -> usize {
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
pub fn wait_until(limit: Duration, what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// For every key: the worker saw its jobs in order, never two at once, and each done; and the
/// worker's faults were met (retries happened).
pub fn check(log: &Log, keys: usize, per_key: usize) {
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
