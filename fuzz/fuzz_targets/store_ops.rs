//! The durable store driven by arbitrary ops with arbitrary times and durations (model-test
//! style, like tests/store_model.rs): enqueues with any `run_at_ms` / `timeout` /
//! `retry_delay`, pulls, acks and failure reports with right, stale and made-up lease tokens,
//! dispatches and their settles with any delay, queue definitions with any durations, clock
//! jumps (up to the end of `u64`), queries of every list, and restarts.
//!
//! Checked: nothing panics (formatting a time included); a job whose times are out of bounds
//! is refused with 400 and stores nothing; every time shown is RFC 3339 no later than year
//! 9999; each queue's waiting + deferred + grabbed lists hold exactly its outstanding jobs;
//! the leases the engine holds are the grabbed jobs; a stale lease token never acks.
#![no_main]
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use reprow::store::{
    engine::Engine,
    queue::{QueueDef, QueueMode},
    Clock, Destination, JobList, NewJob, Op, Options, PayloadMode, Query, Reply, Settlement,
    StoreError, StoreErrorKind, MAX_TIME_MS,
};

const QUEUES: [&str; 2] = ["pull", "push"];
const LATEST: &str = "9999-12-31T23:59:59.999Z";

fn dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "reprow-fuzz-store-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn open(path: &PathBuf, clock: &Arc<AtomicU64>) -> Engine {
    let mut queues = Vec::new();
    for name in QUEUES {
        let mut d = QueueDef::named(name);
        d.mode = if name == "push" {
            QueueMode::Push
        } else {
            QueueMode::Pull
        };
        d.url = (name == "push").then(|| "http://127.0.0.1:9/work".to_string());
        d.lease_timeout = 1;
        d.timeout = Some(1);
        d.max_retries = Some(2);
        queues.push(d);
    }
    let opts = Options {
        path: path.clone(),
        map_size: 8 << 20,
        no_sync: true,
        queues,
        routings: vec![],
        default_queue: "pull".into(),
        defaults: Default::default(),
        clock: Clock::Manual(clock.clone()),
        max_queues: reprow::store::config::DEFAULT_MAX_QUEUES,
        fail_commit: None,
    };
    Engine::open(opts, None).expect("open the store")
}

/// A u64 that is often near a bound.
fn any_u64(u: &mut Unstructured) -> u64 {
    match u.int_in_range(0..=5u8).unwrap_or(0) {
        0 => u.int_in_range(0..=10u64).unwrap_or(0),
        1 => u.int_in_range(0..=100_000u64).unwrap_or(0),
        2 => MAX_TIME_MS
            .wrapping_add(u.int_in_range(0..=2u64).unwrap_or(0))
            .wrapping_sub(1),
        3 => u64::MAX - u.int_in_range(0..=1000u64).unwrap_or(0),
        4 => 1_700_000_000_000 + u.int_in_range(0..=10_000_000u64).unwrap_or(0),
        _ => u.arbitrary().unwrap_or(0),
    }
}

fn one(e: &mut Engine, op: Op) -> Result<Reply, StoreError> {
    e.apply_ops(vec![op]).remove(0).1
}

fn check_time(t: &str) {
    assert_eq!(t.len(), LATEST.len(), "{t}");
    assert!(t <= LATEST, "{t}");
}

fn list(e: &mut Engine, queue: &str, which: JobList) -> Vec<u64> {
    match e.query(Query::Jobs {
        queue: queue.into(),
        list: which,
        limit: 1000,
        cursor: None,
        desc: false,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(jobs, _)) => jobs
            .iter()
            .map(|j| {
                check_time(&j.created_at);
                check_time(&j.next_try);
                if let Some(t) = &j.leased_at {
                    check_time(t);
                }
                j.id
            })
            .collect(),
        r => panic!("list {queue}: {r:?}"),
    }
}

/// Every queue's lists partition its outstanding jobs; the engine's leases are the grabbed jobs.
fn check_invariants(e: &mut Engine) {
    let mut grabbed_total = 0;
    for q in QUEUES {
        let Ok(Reply::Stats(s)) = e.query(Query::Stats(Some(q.into()))) else {
            panic!("stats of {q}")
        };
        let s = &s[0].1;
        let mut all = Vec::new();
        for which in [JobList::Waiting, JobList::Deferred, JobList::Grabbed] {
            let ids = list(e, q, which);
            if which == JobList::Grabbed {
                grabbed_total += ids.len();
                assert_eq!(ids.len() as u64, s.grabbed, "{q}: grabbed");
            }
            all.extend(ids);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "{q}: a job in two lists");
        assert_eq!(n as u64, s.outstanding_jobs, "{q}: lists vs outstanding");
        if let Ok(Reply::FailedPage(f, _)) = e.query(Query::Failed {
            queue: q.into(),
            limit: 1000,
            cursor: None,
            desc: true,
            payload: PayloadMode::Full,
        }) {
            for f in f {
                check_time(&f.failed_at);
                check_time(&f.created_at);
            }
        }
    }
    assert_eq!(e.leased(), grabbed_total, "leases vs grabbed lists");
}

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let path = dir();
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let mut e = open(&path, &clock);
    // Pull hand-outs and push dispatches seen: (queue, id, lease token).
    let mut pulled: Vec<(String, u64, u64)> = Vec::new();
    let mut pushed: Vec<(u64, u64)> = Vec::new();
    let mut ids: Vec<u64> = Vec::new();
    for _ in 0..48 {
        if u.is_empty() {
            break;
        }
        let queue = QUEUES[u.int_in_range(0..=1usize).unwrap_or(0)].to_string();
        match u.int_in_range(0..=11u8).unwrap_or(0) {
            0 | 1 => {
                let job = NewJob {
                    dest: if u.arbitrary().unwrap_or(false) {
                        Destination::Queue(queue.clone())
                    } else {
                        Destination::Category("cat".into())
                    },
                    url: None,
                    payload: Bytes::from_static(b"{}"),
                    content_type: "application/json".into(),
                    run_at_ms: any_u64(&mut u),
                    timeout: u
                        .arbitrary::<bool>()
                        .unwrap_or(false)
                        .then(|| any_u64(&mut u)),
                    max_retries: u.arbitrary().unwrap_or(None),
                    retry_delay: u
                        .arbitrary::<bool>()
                        .unwrap_or(false)
                        .then(|| any_u64(&mut u)),
                    uniq: None,
                    ordering_key: None,

                    headers: vec![],
                };
                let bad = job.check_times().is_err();
                let before = e.query(Query::Stats(None));
                let r = one(&mut e, Op::Enqueue(vec![job]));
                if bad {
                    assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::BadRequest),
                        "{r:?}"
                    );
                    let after = e.query(Query::Stats(None));
                    assert_eq!(format!("{before:?}"), format!("{after:?}"));
                } else if let Ok(Reply::Enqueued(v)) = r {
                    for v in v {
                        check_time(&v.next_try);
                        ids.push(v.id);
                    }
                }
            }
            2 => {
                let count = u.int_in_range(1..=3usize).unwrap_or(1);
                let forget = u.int_in_range(0..=5u8).unwrap_or(0) == 0;
                if let Ok(Reply::Pulled(got)) = one(
                    &mut e,
                    Op::Pull {
                        queue: queue.clone(),
                        count,
                        forget: Some(forget),
                    },
                ) {
                    for (v, _) in got {
                        assert_eq!(v.lease.is_some(), !forget);
                        if let Some(t) = v.lease {
                            pulled.retain(|p| p.1 != v.id);
                            pulled.push((queue.clone(), v.id, t));
                        }
                    }
                }
            }
            3 | 4 => {
                // Ack or failure report: the right token, a stale/made-up one, or none.
                let Some(&(ref q, id, token)) =
                    pulled.get(u.int_in_range(0..=pulled.len()).unwrap_or(0))
                else {
                    continue;
                };
                let q = q.clone();
                let lease = match u.int_in_range(0..=2u8).unwrap_or(0) {
                    0 => Some(token),
                    1 => Some(any_u64(&mut u)),
                    _ => None,
                };
                let op = if u.arbitrary().unwrap_or(false) {
                    Op::Ack {
                        queue: q.clone(),
                        id,
                        lease,
                    }
                } else {
                    Op::Nack {
                        queue: q.clone(),
                        id,
                        message: "x".into(),
                        lease,
                    }
                };
                let held = list(&mut e, &q, JobList::Grabbed).contains(&id);
                let r = one(&mut e, op);
                if lease.is_some_and(|l| l != token) && held {
                    // Not this hand-out's token: refused, the job stays leased.
                    assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::Conflict),
                        "{r:?}"
                    );
                    assert!(list(&mut e, &q, JobList::Grabbed).contains(&id));
                }
            }
            5 => {
                e.feed();
                for d in std::mem::take(&mut e.dispatched) {
                    pushed.push((d.job.id, d.lease));
                }
            }
            6 => {
                let Some(&(id, lease)) = pushed.get(u.int_in_range(0..=pushed.len()).unwrap_or(0))
                else {
                    continue;
                };
                let delay = Duration::from_millis(any_u64(&mut u));
                let failure = reprow::job::Failure {
                    status: Some(503),
                    message: "busy".into(),
                };
                let how = match u.int_in_range(0..=3u8).unwrap_or(0) {
                    0 => Settlement::Done,
                    1 => Settlement::Retry(delay, failure),
                    2 => Settlement::Fail(failure, u.arbitrary().unwrap_or(false)),
                    _ => Settlement::Release(delay),
                };
                let _ = one(
                    &mut e,
                    Op::Settle {
                        id,
                        lease,
                        how,
                        elapsed_ms: any_u64(&mut u),
                    },
                );
            }
            7 => {
                // The clock moves, sometimes very far.
                let ms = any_u64(&mut u);
                let now = clock.load(Ordering::Relaxed);
                clock.store(now.saturating_add(ms), Ordering::Relaxed);
                e.expire_leases();
            }
            8 => {
                let mut d = QueueDef::named(&queue);
                d.mode = if queue == "push" {
                    QueueMode::Push
                } else {
                    QueueMode::Pull
                };
                d.url = (queue == "push").then(|| "http://127.0.0.1:9/work".to_string());
                d.timeout = Some(any_u64(&mut u));
                d.lease_timeout = any_u64(&mut u);
                d.retry_delay = u
                    .arbitrary::<bool>()
                    .unwrap_or(false)
                    .then(|| any_u64(&mut u));
                d.polling_interval = any_u64(&mut u);
                d.require_lease_token = u.arbitrary().unwrap_or(false);
                let valid = d.validate().is_ok();
                let r = one(&mut e, Op::PutQueue(d));
                assert_eq!(r.is_ok(), valid, "{r:?}");
            }
            9 => {
                let id = ids
                    .get(u.int_in_range(0..=ids.len()).unwrap_or(0))
                    .copied()
                    .unwrap_or(0);
                if let Ok(Reply::Job(j)) = e.query(Query::Job {
                    queue: queue.clone(),
                    id,
                }) {
                    check_time(&j.next_try);
                }
                let _ = e.query(Query::InFlight {
                    limit: 100,
                    payload: PayloadMode::Full,
                });
                if u.arbitrary().unwrap_or(false) {
                    let _ = one(&mut e, Op::RetryFailed { queue, id: 1 });
                }
            }
            10 => {
                // Restart: leases are memory; every job is still there.
                drop(e);
                e = open(&path, &clock);
                pulled.clear();
                pushed.clear();
            }
            _ => {
                let id = ids
                    .get(u.int_in_range(0..=ids.len()).unwrap_or(0))
                    .copied()
                    .unwrap_or(0);
                let _ = one(&mut e, Op::DeleteJob { queue, id });
            }
        }
        check_invariants(&mut e);
    }
    drop(e);
    let _ = std::fs::remove_dir_all(&path);
}

fuzz_target!(|data: &[u8]| {
    run(data);
});
