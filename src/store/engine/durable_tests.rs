//! The store thread's durable points, driven as `Engine::run` drives them, on a real LMDB
//! file and a real log: a batch answered is found again after a crash (the open transaction
//! abandoned, no checkpoint), and a failed durable point leaves nothing of its batch.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use bytes::Bytes;

use super::Open;
use crate::store::{
    command::Keep,
    engine::{Engine, Options},
    queue::{QueueDef, QueueMode},
    Command, Destination, NewJob, Op, Query, Reply, StoreError,
};

fn options(dir: &std::path::Path, fail: Option<Arc<AtomicBool>>) -> Options {
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    Options {
        path: dir.join("data"),
        map_size: 64 << 20,
        no_sync: false,
        queues: vec![q],
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Default::default(),
        max_queues: crate::store::config::DEFAULT_MAX_QUEUES,
        fail_commit: fail.map(|f| Arc::new(move || f.load(Ordering::SeqCst)) as _),
    }
}

fn enqueue(payload: &str) -> (Command, Keep) {
    let mut keep = Keep::default();
    let c = Op::Enqueue(vec![new_job("q", payload, None)]).command(&mut keep);
    (c, keep)
}

/// Jobs in queue `q` as the engine's memory counts them.
fn count(e: &mut Engine) -> u64 {
    match e.query(Query::Stats(Some("q".into()))) {
        Ok(Reply::Stats(s)) => s[0].1.outstanding_jobs,
        r => panic!("{r:?}"),
    }
}

/// Jobs in queue `q` as LMDB's last commit holds them.
fn committed(e: &Engine) -> u64 {
    let rtxn = e.env.read_txn().unwrap();
    e.jobs.len(&rtxn).unwrap()
}

#[test]
fn batches_answered_from_the_log_survive_a_crash_before_any_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    let env = e.env.clone();
    let mut open = Open::begin(&env);
    let mut answers = Vec::new();
    for batch in 0..3 {
        let (cmds, rxs): (Vec<_>, Vec<_>) = (0..4)
            .map(|i| enqueue(&format!("{{\"b\":{batch},\"i\":{i}}}")))
            .unzip();
        e.handle_open(&mut open, cmds);
        answers.extend(rxs);
    }
    for rx in answers {
        assert!(rx.answer().is_ok(), "every enqueue answered ok");
    }
    // Answered from the log alone: LMDB has not committed a single job.
    assert_eq!(committed(&e), 0);
    assert!(e.wal.dirty());
    // The open transaction shows them.
    match e.query_in(open.view(), Query::Stats(Some("q".into()))) {
        Ok(Reply::Stats(s)) => assert_eq!(s[0].1.outstanding_jobs, 12),
        r => panic!("{r:?}"),
    }

    // The crash: the transaction is abandoned, nothing is checkpointed.
    drop(open);
    drop(e);
    drop(env);
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    assert_eq!(count(&mut e), 12);
    assert_eq!(committed(&e), 12, "the replay was committed at open");
    assert!(!e.wal.dirty(), "the log starts empty after the replay");
    // A second start replays nothing twice.
    drop(e);
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    assert_eq!(count(&mut e), 12);
}

#[test]
fn a_failed_durable_point_refuses_its_batch_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mut e = Engine::open(options(dir.path(), Some(fail.clone())), None).unwrap();
    let env = e.env.clone();
    let mut open = Open::begin(&env);

    let (a, ra) = enqueue("\"a\"");
    e.handle_open(&mut open, vec![a]);
    assert!(ra.answer().is_ok());

    fail.store(true, Ordering::SeqCst);
    let (b, rb) = enqueue("\"b\"");
    e.handle_open(&mut open, vec![b]);
    assert!(rb.answer().is_err(), "the failed batch is refused");
    assert_eq!(count(&mut e), 1, "memory holds a, not b");
    match e.query_in(open.view(), Query::Stats(Some("q".into()))) {
        Ok(Reply::Stats(s)) => assert_eq!(s[0].1.outstanding_jobs, 1),
        r => panic!("{r:?}"),
    }
    fail.store(false, Ordering::SeqCst);

    // The next durable point is a checkpoint: c and a reach LMDB together.
    let (c, rc) = enqueue("\"c\"");
    e.handle_open(&mut open, vec![c]);
    assert!(rc.answer().is_ok());
    assert_eq!(committed(&e), 2, "a and c committed by the checkpoint");
    assert!(!e.wal.dirty());

    drop(open);
    drop(e);
    drop(env);
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    assert_eq!(count(&mut e), 2);
    let rtxn = e.env.read_txn().unwrap();
    let payloads: Vec<Vec<u8>> = e
        .jobs
        .iter(&rtxn)
        .unwrap()
        .map(|kv| kv.unwrap().1.to_vec())
        .collect();
    let has = |p: &[u8]| payloads.iter().any(|r| r.windows(p.len()).any(|w| w == p));
    assert!(has(b"\"a\"") && has(b"\"c\"") && !has(b"\"b\""));
}

#[test]
fn a_checkpoint_commits_the_log_and_starts_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    let env = e.env.clone();
    let mut open = Open::begin(&env);
    let (a, _ra) = enqueue("1");
    e.handle_open(&mut open, vec![a]);
    let epoch = e.wal.epoch();
    e.checkpoint_now(&mut open);
    assert_eq!(committed(&e), 1);
    assert_eq!(e.wal.epoch(), epoch + 1);
    assert!(!e.wal.dirty());
    // After the checkpoint the log goes on from its start; a crash now replays only that.
    let (b, _rb) = enqueue("2");
    e.handle_open(&mut open, vec![b]);
    assert_eq!(committed(&e), 1);
    drop(open);
    drop(e);
    drop(env);
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    assert_eq!(count(&mut e), 2);
}

fn op(e: &mut Engine, open: &mut Open, ops: Vec<Op>) -> Vec<Result<Reply, StoreError>> {
    let (cmds, kept): (Vec<_>, Vec<_>) = ops
        .into_iter()
        .map(|op| {
            let mut keep = Keep::default();
            (op.command(&mut keep), keep)
        })
        .unzip();
    e.handle_open(open, cmds);
    kept.into_iter().map(Keep::answer).collect()
}

fn new_job(queue: &str, payload: &str, uniq: Option<&str>) -> NewJob {
    NewJob {
        dest: Destination::Queue(queue.into()),
        url: None,
        payload: Bytes::from(payload.to_string()),
        content_type: "application/json".into(),
        run_at_ms: 0,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: uniq.map(Into::into),
        ordering_key: None,

        headers: vec![],
    }
}

/// Every row of every table, as `txn` shows it (the log's epoch row aside).
fn tables(e: &Engine, txn: &heed::RoTxn) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    use crate::store::wal::record::Table;
    let mut rows = Vec::new();
    for t in [
        Table::Jobs,
        Table::Due,
        Table::Failed,
        Table::Uniq,
        Table::Meta,
        Table::Counters,
        Table::Idem,
    ] {
        for kv in e.db(t).iter(txn).unwrap() {
            let (k, v) = kv.unwrap();
            if k != super::EPOCH_KEY {
                rows.push((t as u8, k.to_vec(), v.to_vec()));
            }
        }
    }
    rows
}

/// The log must hold every change an op makes: ops of every kind run through the store
/// thread's path, then a crash, and after the replay each table is row for row what the open
/// transaction held. A write that bypassed the log would show here as a missing or stale row.
#[test]
fn after_a_crash_every_table_is_what_the_open_transaction_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    let env = e.env.clone();
    let mut open = Open::begin(&env);
    let mut p = QueueDef::named("p");
    p.mode = QueueMode::Pull;
    p.max_retries = Some(0);
    let mut x = QueueDef::named("x");
    x.mode = QueueMode::Pull;
    x.max_retries = Some(0);
    let mut results = op(
        &mut e,
        &mut open,
        vec![
            Op::PutQueue(p),
            Op::PutQueue(x),
            Op::PutRouting {
                category: "cat".into(),
                queue: "p".into(),
            },
            // Jobs 1 to 4 in p, 5 and 6 in x.
            Op::Enqueue(vec![
                new_job("p", "1", Some("u1")),
                new_job("p", "2", None),
                new_job("p", "3", None),
                new_job("p", "4", None),
            ]),
            Op::Enqueue(vec![new_job("x", "5", None), new_job("x", "6", Some("u6"))]),
            // Job 7 in x, with its idempotency rows.
            Op::EnqueueOnce(
                crate::store::idempotency::Idempotency::new("k7".into(), "POST", "/q/x", "", b"7"),
                vec![new_job("x", "7", None)],
            ),
        ],
    );
    let pull = |count, forget| Op::Pull {
        queue: "p".into(),
        count,
        forget,
    };
    results.extend(op(
        &mut e,
        &mut open,
        vec![
            pull(3, Some(false)),
            Op::Pull {
                queue: "x".into(),
                count: 1,
                forget: Some(false),
            },
            Op::Control {
                queue: "x".into(),
                paused: true,
            },
        ],
    ));
    let nack = |id| Op::Nack {
        queue: "p".into(),
        id,
        message: "no".into(),
        lease: None,
    };
    results.extend(op(
        &mut e,
        &mut open,
        vec![
            Op::Ack {
                queue: "p".into(),
                id: 1,
                lease: None,
            },
            nack(2),
            // x's failed log gets an entry, which deleting x removes (a range delete).
            Op::Nack {
                queue: "x".into(),
                id: 5,
                message: "no".into(),
                lease: None,
            },
            Op::DeleteJob {
                queue: "p".into(),
                id: 4,
            },
        ],
    ));
    results.extend(op(
        &mut e,
        &mut open,
        vec![
            Op::RetryFailed {
                queue: "p".into(),
                id: 1,
            },
            nack(3),
        ],
    ));
    results.extend(op(
        &mut e,
        &mut open,
        vec![
            Op::DeleteFailed {
                queue: "p".into(),
                id: 3,
            },
            pull(1, Some(true)),
            Op::Purge("x".into()),
            Op::DeleteQueue("x".into()),
            Op::DeleteRouting("cat".into()),
            Op::Enqueue(vec![
                new_job("p", "7", Some("u7")),
                new_job("p", "8", Some("u8")),
            ]),
        ],
    ));
    // Job 8 (payload "7") fails for good: one entry stays in the failed log.
    results.extend(op(&mut e, &mut open, vec![pull(1, Some(false))]));
    results.extend(op(&mut e, &mut open, vec![nack(8)]));
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "op {i}: {r:?}");
    }
    let before = tables(&e, open.view());
    // Rows of every table took part (a failed log entry remains only if one was written).
    for t in 1..=7u8 {
        assert!(before.iter().any(|r| r.0 == t), "no row of table {t}");
    }
    assert_eq!(committed(&e), 0, "nothing reached LMDB but through the log");

    drop(open);
    drop(e);
    drop(env);
    let e = Engine::open(options(dir.path(), None), None).unwrap();
    let rtxn = e.env.read_txn().unwrap();
    let after = tables(&e, &rtxn);
    assert_eq!(after, before);
}

/// A checkpoint that fails keeps every answered batch (rebuilt from the log) and is tried
/// again a second later, not at every turn of the loop (a failing disk is not hammered).
#[test]
fn a_failed_checkpoint_keeps_the_log_and_waits_before_the_next_try() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mut e = Engine::open(options(dir.path(), Some(fail.clone())), None).unwrap();
    let env = e.env.clone();
    let mut open = Open::begin(&env);
    let (a, ra) = enqueue("\"a\"");
    e.handle_open(&mut open, vec![a]);
    assert!(ra.answer().is_ok());

    fail.store(true, Ordering::SeqCst);
    let before = Instant::now();
    e.checkpoint_now(&mut open);
    fail.store(false, Ordering::SeqCst);
    assert_eq!(committed(&e), 0, "nothing reached LMDB");
    assert_eq!(count(&mut e), 1, "the answered job is still there");
    assert!(!e.wal.checkpoint_due(Instant::now()), "tried again at once");
    assert!(e.wal.checkpoint_due(before + Duration::from_millis(1100)));

    // The next try succeeds and commits it.
    e.checkpoint_now(&mut open);
    assert_eq!(committed(&e), 1);
    drop(open);
    drop(e);
    drop(env);
    let mut e = Engine::open(options(dir.path(), None), None).unwrap();
    assert_eq!(count(&mut e), 1);
}
