//! The engine's side of `Idempotency-Key`, on a real LMDB file: a key in the batch being
//! committed is 409, a key and its jobs are kept or lost together when a commit fails, and the
//! expired keys are swept a bounded number at a time.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use bytes::Bytes;

use crate::store::{
    engine::{Clock, Engine, Options},
    idempotency::{Idempotency, SWEEP_PER_KEY},
    queue::{QueueDef, QueueMode},
    Destination, NewJob, Op, Reply, StoreErrorKind,
};

fn engine(dir: &std::path::Path, t: &Arc<AtomicU64>, fail: &Arc<AtomicBool>) -> Engine {
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    q.idempotency_window = Some(10);
    let fail = fail.clone();
    Engine::open(
        Options {
            path: dir.join("data"),
            map_size: 64 << 20,
            no_sync: false,
            queues: vec![q],
            routings: vec![],
            default_queue: "default".into(),
            defaults: Default::default(),
            clock: Clock::Manual(t.clone()),
            max_queues: crate::store::config::DEFAULT_MAX_QUEUES,
            fail_commit: Some(Arc::new(move || fail.load(Ordering::SeqCst))),
        },
        None,
    )
    .unwrap()
}

fn once(key: &str, body: &str) -> Op {
    Op::EnqueueOnce(
        Idempotency::new(key.into(), "POST", "/q/q", "", body.as_bytes()),
        vec![NewJob {
            dest: Destination::Queue("q".into()),
            url: None,
            payload: Bytes::from(body.to_string()),
            content_type: "application/json".into(),
            run_at_ms: 0,
            timeout: None,
            max_retries: None,
            retry_delay: None,
            uniq: None,
            ordering_key: None,
            headers: vec![],
        }],
    )
}

fn ids(r: &Result<Reply, crate::store::StoreError>) -> Vec<u64> {
    match r {
        Ok(Reply::Enqueued(v)) => v.iter().map(|v| v.id).collect(),
        r => panic!("{r:?}"),
    }
}

/// Rows in the `idem` database (key rows and expiry entries).
fn idem_rows(e: &Engine) -> u64 {
    let rtxn = e.env.read_txn().unwrap();
    e.idem.len(&rtxn).unwrap()
}

#[test]
fn a_key_whose_first_request_is_in_the_same_batch_is_409_then_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (t, fail) = (Arc::new(AtomicU64::new(1_000_000)), Arc::default());
    let mut e = engine(dir.path(), &t, &fail);
    let r = e.apply_ops(vec![once("a", "1"), once("a", "1"), once("a", "2")]);
    let first = ids(&r[0].1);
    assert_eq!(
        r[1].1.as_ref().unwrap_err().kind(),
        StoreErrorKind::InFlight
    );
    // Another request under the key is 422 even while the first commits.
    assert_eq!(
        r[2].1.as_ref().unwrap_err().kind(),
        StoreErrorKind::KeyReused
    );
    // Once committed, the key answers the first job.
    let r = e.apply_ops(vec![once("a", "1"), once("a", "2")]);
    assert_eq!(ids(&r[0].1), first);
    assert_eq!(
        r[1].1.as_ref().unwrap_err().kind(),
        StoreErrorKind::KeyReused
    );
    // Until the window (10 s) ends: then it is a new request.
    t.fetch_add(9_999, Ordering::SeqCst);
    assert_eq!(ids(&e.apply_ops(vec![once("a", "1")])[0].1), first);
    t.fetch_add(1, Ordering::SeqCst);
    let again = ids(&e.apply_ops(vec![once("a", "1")])[0].1);
    assert_ne!(again, first);
    // The new row replaced the old one and its expiry entry: two rows, not four.
    assert_eq!(idem_rows(&e), 2);
}

#[test]
fn a_failed_commit_loses_the_key_with_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (t, fail) = (
        Arc::new(AtomicU64::new(1_000_000)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut e = engine(dir.path(), &t, &fail);
    fail.store(true, Ordering::SeqCst);
    let r = e.apply_ops(vec![once("a", "1")]);
    assert!(r[0].1.is_err());
    fail.store(false, Ordering::SeqCst);
    assert_eq!(idem_rows(&e), 0);
    // Not 409 (nothing is committing), not a replay: a new job.
    let r = e.apply_ops(vec![once("a", "1")]);
    assert_eq!(ids(&r[0].1).len(), 1);
    assert_eq!(idem_rows(&e), 2);
}

#[test]
fn expired_keys_are_swept_a_bounded_number_per_keyed_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let (t, fail) = (Arc::new(AtomicU64::new(1_000_000)), Arc::default());
    let mut e = engine(dir.path(), &t, &fail);
    let n = 2 * SWEEP_PER_KEY + 3;
    let ops = (0..n).map(|i| once(&format!("k{i}"), "1")).collect();
    assert!(e.apply_ops(ops).iter().all(|r| r.1.is_ok()));
    assert_eq!(idem_rows(&e), 2 * n as u64);
    t.fetch_add(10_001, Ordering::SeqCst);
    // Each keyed enqueue adds its key and removes at most SWEEP_PER_KEY expired ones.
    let mut left = n;
    for round in 0..3 {
        assert!(e.apply_ops(vec![once(&format!("new{round}"), "1")])[0]
            .1
            .is_ok());
        left -= left.min(SWEEP_PER_KEY);
        assert_eq!(
            idem_rows(&e),
            2 * (left + round + 1) as u64,
            "round {round}"
        );
    }
}
