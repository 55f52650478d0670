//! Issue 25, ordering keys, in the store: the engine driven directly on a real LMDB file with a
//! manual clock, so every step (hand-out, retry, failure, restart) is exact. The same rules
//! against a real reprow, a real worker and kill -9 are in `tests/ordering.rs`.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use reprow::{
    bridge::Delivery,
    job::Failure,
    store::{
        engine::Engine,
        payload::PayloadMode,
        queue::{OrderingFailure, QueueDef, QueueMode},
        Clock, Destination, NewJob, Op, Options, Query, Reply, Settlement, StoreError,
        StoreErrorKind,
    },
};

const T0: u64 = 1_700_000_000_000;

fn options(dir: &Path, clock: &Arc<AtomicU64>, failure: OrderingFailure) -> Options {
    let mut p = QueueDef::named("p");
    p.url = Some("http://127.0.0.1:9/work".into());
    p.max_workers = 50;
    p.ordering_failure = failure;
    let mut pull = QueueDef::named("pl");
    pull.mode = QueueMode::Pull;
    Options {
        path: dir.join("data"),
        map_size: 64 << 20,
        no_sync: true,
        queues: vec![p, pull],
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Clock::Manual(clock.clone()),
        max_queues: 100,
        fail_commit: None,
    }
}

fn job(queue: &str, payload: &str, key: Option<&str>) -> NewJob {
    NewJob {
        dest: Destination::Queue(queue.into()),
        url: None,
        payload: Bytes::from(payload.to_string()),
        content_type: "application/json".into(),
        run_at_ms: 0,
        timeout: None,
        max_retries: Some(1),
        retry_delay: None,
        uniq: None,
        ordering_key: key.map(Into::into),
        headers: vec![],
    }
}

fn apply(e: &mut Engine, op: Op) -> Result<Reply, StoreError> {
    e.apply_ops(vec![op]).pop().unwrap().1
}

fn enqueue(e: &mut Engine, jobs: Vec<NewJob>) {
    let r = apply(e, Op::Enqueue(jobs));
    assert!(matches!(r, Ok(Reply::Enqueued(_))), "{r:?}");
}

/// What a feed hands out now: payloads, in hand-out order.
fn feed(e: &mut Engine) -> Vec<Delivery> {
    e.feed();
    e.dispatched.drain(..).collect()
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    let mut v: Vec<String> = ds
        .iter()
        .map(|d| String::from_utf8_lossy(&d.job.payload).into_owned())
        .collect();
    v.sort();
    v
}

fn settle(e: &mut Engine, d: &Delivery, how: Settlement) {
    let r = apply(
        e,
        Op::Settle {
            id: d.job.id,
            lease: d.lease,
            how,
            elapsed_ms: 1,
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

fn done(e: &mut Engine, d: &Delivery) {
    settle(e, d, Settlement::Done);
}

fn failed_ids(e: &mut Engine, queue: &str) -> Vec<u64> {
    match e.query(Query::Failed {
        queue: queue.into(),
        limit: 100,
        cursor: None,
        desc: false,
        payload: PayloadMode::None,
    }) {
        Ok(Reply::FailedPage(page, _)) => page.iter().map(|f| f.id).collect(),
        r => panic!("{r:?}"),
    }
}

struct Scene {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicU64::new(T0)),
        }
    }
    fn open(&self, failure: OrderingFailure) -> Engine {
        Engine::open(options(self.dir.path(), &self.clock, failure), None).unwrap()
    }
    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
}

#[test]
fn a_key_runs_one_job_at_a_time_in_order_and_other_keys_and_unkeyed_jobs_run_beside_it() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    enqueue(
        &mut e,
        vec![
            job("p", "a1", Some("a")),
            job("p", "a2", Some("a")),
            job("p", "b1", Some("b")),
            job("p", "n1", None),
            job("p", "a3", Some("a")),
            job("p", "b2", Some("b")),
            job("p", "n2", None),
        ],
    );
    let first = feed(&mut e);
    assert_eq!(bodies(&first), ["a1", "b1", "n1", "n2"]);
    // Nothing more while a1 and b1 are in flight, however often the scheduler looks.
    assert!(feed(&mut e).is_empty());
    s.advance(60_000);
    assert!(feed(&mut e).is_empty());
    // b1 done: b2 comes, a2 still waits for a1.
    done(&mut e, &first[1]);
    let next = feed(&mut e);
    assert_eq!(bodies(&next), ["b2"]);
    done(&mut e, &first[0]);
    let a2 = feed(&mut e);
    assert_eq!(bodies(&a2), ["a2"]);
    done(&mut e, &a2[0]);
    assert_eq!(bodies(&feed(&mut e)), ["a3"]);
    // A key whose jobs are all done is free again: a new job runs at once.
    done(&mut e, &next[0]);
    enqueue(&mut e, vec![job("p", "b3", Some("b"))]);
    assert_eq!(bodies(&feed(&mut e)), ["b3"]);
}

#[test]
fn a_job_waiting_for_its_retry_holds_back_its_key_only() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    enqueue(
        &mut e,
        vec![
            job("p", "a1", Some("a")),
            job("p", "a2", Some("a")),
            job("p", "b1", Some("b")),
            job("p", "b2", Some("b")),
        ],
    );
    let first = feed(&mut e);
    assert_eq!(bodies(&first), ["a1", "b1"]);
    settle(
        &mut e,
        &first[0],
        Settlement::Retry(Duration::from_secs(10), Failure::transport("t")),
    );
    done(&mut e, &first[1]);
    // b goes on; a2 waits behind a1's retry.
    assert_eq!(bodies(&feed(&mut e)), ["b2"]);
    s.advance(9_000);
    assert!(
        feed(&mut e).is_empty(),
        "a2 passed a1 waiting for its retry"
    );
    s.advance(1_000);
    let again = feed(&mut e);
    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(again[0].job.attempts, 1);
    done(&mut e, &again[0]);
    assert_eq!(bodies(&feed(&mut e)), ["a2"]);
}

#[test]
fn a_job_failed_for_good_holds_its_key_across_a_restart_until_it_is_retried_or_deleted() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    enqueue(
        &mut e,
        vec![
            job("p", "a1", Some("a")),
            job("p", "a2", Some("a")),
            job("p", "a3", Some("a")),
        ],
    );
    let d = feed(&mut e);
    settle(
        &mut e,
        &d[0],
        Settlement::Fail(Failure::transport("gone"), true),
    );
    assert!(feed(&mut e).is_empty(), "a2 ran after a1 failed for good");
    // Restarted (memory gone), the key is still held.
    drop(e);
    let mut e = s.open(OrderingFailure::Hold);
    s.advance(3_600_000);
    assert!(feed(&mut e).is_empty(), "a2 ran after a restart");
    // Retried by an operator, a1 runs first, then the others in order.
    let fid = failed_ids(&mut e, "p")[0];
    let r = apply(
        &mut e,
        Op::RetryFailed {
            queue: "p".into(),
            id: fid,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    let a1 = feed(&mut e);
    assert_eq!(bodies(&a1), ["a1"]);
    // It fails for good again; this time the operator deletes it: the key goes on.
    settle(
        &mut e,
        &a1[0],
        Settlement::Fail(Failure::transport("x"), true),
    );
    assert!(feed(&mut e).is_empty());
    let fid = failed_ids(&mut e, "p")[0];
    let r = apply(
        &mut e,
        Op::DeleteFailed {
            queue: "p".into(),
            id: fid,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    let a2 = feed(&mut e);
    assert_eq!(bodies(&a2), ["a2"]);
    done(&mut e, &a2[0]);
    assert_eq!(bodies(&feed(&mut e)), ["a3"]);
}

#[test]
fn with_release_a_job_failed_for_good_lets_its_key_go_on_and_a_retry_runs_last() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Release);
    enqueue(
        &mut e,
        vec![
            job("p", "a1", Some("a")),
            job("p", "a2", Some("a")),
            job("p", "a3", Some("a")),
        ],
    );
    let d = feed(&mut e);
    // Retries spent (max_retries 1: the second failed delivery is the last).
    settle(
        &mut e,
        &d[0],
        Settlement::Retry(Duration::ZERO, Failure::transport("t")),
    );
    let d = feed(&mut e);
    assert_eq!(bodies(&d), ["a1"]);
    settle(
        &mut e,
        &d[0],
        Settlement::Fail(Failure::transport("t"), false),
    );
    let a2 = feed(&mut e);
    assert_eq!(bodies(&a2), ["a2"]);
    // Retried while a2 runs: it goes behind a3, never beside a2.
    let fid = failed_ids(&mut e, "p")[0];
    let r = apply(
        &mut e,
        Op::RetryFailed {
            queue: "p".into(),
            id: fid,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    assert!(
        feed(&mut e).is_empty(),
        "a retried job ran beside its key's"
    );
    done(&mut e, &a2[0]);
    let a3 = feed(&mut e);
    assert_eq!(bodies(&a3), ["a3"]);
    done(&mut e, &a3[0]);
    assert_eq!(bodies(&feed(&mut e)), ["a1"]);
}

#[test]
fn a_restart_hands_out_each_keys_first_job_again_and_keeps_the_rest_waiting() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    let jobs = (0..5)
        .flat_map(|i| {
            [
                job("p", &format!("a{i}"), Some("a")),
                job("p", &format!("b{i}"), Some("b")),
            ]
        })
        .collect();
    enqueue(&mut e, jobs);
    let first = feed(&mut e);
    assert_eq!(bodies(&first), ["a0", "b0"]);
    done(&mut e, &first[0]);
    // A crash: leases are memory only.
    drop(e);
    let mut e = s.open(OrderingFailure::Hold);
    let mut seen = Vec::new();
    loop {
        let d = feed(&mut e);
        if d.is_empty() {
            break;
        }
        assert!(
            d.len() <= 2,
            "two jobs of one key in flight: {:?}",
            bodies(&d)
        );
        for x in &d {
            seen.push(String::from_utf8_lossy(&x.job.payload).into_owned());
            done(&mut e, x);
        }
    }
    let of =
        |k: char| -> Vec<String> { seen.iter().filter(|s| s.starts_with(k)).cloned().collect() };
    assert_eq!(of('a'), ["a1", "a2", "a3", "a4"]);
    assert_eq!(of('b'), ["b0", "b1", "b2", "b3", "b4"]);
}

#[test]
fn a_pull_worker_gets_only_each_keys_first_job() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    enqueue(
        &mut e,
        vec![
            job("pl", "a1", Some("a")),
            job("pl", "a2", Some("a")),
            job("pl", "b1", Some("b")),
        ],
    );
    let pull = |e: &mut Engine, forget| match apply(
        e,
        Op::Pull {
            queue: "pl".into(),
            count: 10,
            forget: Some(forget),
        },
    ) {
        Ok(Reply::Pulled(v)) => v
            .into_iter()
            .map(|(v, p)| (v.id, String::from_utf8_lossy(&p).into_owned()))
            .collect::<Vec<_>>(),
        Err(err) if err.kind() == StoreErrorKind::NotFound => vec![],
        r => panic!("{r:?}"),
    };
    let got = pull(&mut e, false);
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["a1", "b1"]
    );
    assert!(pull(&mut e, false).is_empty(), "a2 handed out beside a1");
    let r = apply(
        &mut e,
        Op::Ack {
            queue: "pl".into(),
            id: got[0].0,
            lease: None,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    // presque's pop (forget) takes the job out at once: the key goes on.
    let got = pull(&mut e, true);
    assert_eq!(got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(), ["a2"]);
}

#[test]
fn deleting_a_queue_or_a_waiting_job_leaves_no_key_behind() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    let mut q = QueueDef::named("tmp");
    q.url = Some("http://127.0.0.1:9/work".into());
    assert!(apply(&mut e, Op::PutQueue(q.clone())).is_ok());
    enqueue(
        &mut e,
        vec![job("tmp", "t1", Some("k")), job("tmp", "t2", Some("k"))],
    );
    let d = feed(&mut e);
    assert_eq!(bodies(&d), ["t1"]);
    settle(
        &mut e,
        &d[0],
        Settlement::Fail(Failure::transport("x"), true),
    );
    // The queue goes with its held key; made again, its keys start free.
    assert!(apply(&mut e, Op::DeleteQueue("tmp".into())).is_ok());
    assert!(apply(&mut e, Op::PutQueue(q)).is_ok());
    enqueue(&mut e, vec![job("tmp", "t3", Some("k"))]);
    assert_eq!(bodies(&feed(&mut e)), ["t3"]);

    // A job deleted while it runs lets the next one of its key go.
    enqueue(
        &mut e,
        vec![job("p", "c1", Some("c")), job("p", "c2", Some("c"))],
    );
    let d = feed(&mut e);
    assert_eq!(bodies(&d), ["c1"]);
    let r = apply(
        &mut e,
        Op::DeleteJob {
            queue: "p".into(),
            id: d[0].job.id,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(bodies(&feed(&mut e)), ["c2"]);
}

#[test]
fn an_empty_or_oversized_key_is_refused_with_its_limit() {
    let s = Scene::new();
    let mut e = s.open(OrderingFailure::Hold);
    for bad in [String::new(), "k".repeat(257)] {
        let r = apply(&mut e, Op::Enqueue(vec![job("p", "x", Some(&bad))]));
        match r {
            Err(err) => {
                assert_eq!(err.kind(), StoreErrorKind::BadRequest);
                assert!(
                    err.to_string()
                        .contains("ordering_key must be 1 to 256 bytes"),
                    "{err}"
                );
            }
            r => panic!("{r:?}"),
        }
    }
    enqueue(&mut e, vec![job("p", "x", Some(&"k".repeat(256)))]);
    assert_eq!(bodies(&feed(&mut e)), ["x"]);
}
