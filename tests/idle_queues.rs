//! Issue 21: the cost of a job must not grow with queues that have nothing to do, the number of
//! queues is capped (`queue.max_queues`), and a deleted queue leaves nothing behind. The rate
//! itself is compared in `benches/durable_e2e.rs` (`REPROW_BENCH_IDLE_QUEUES`); tests never
//! time things, so here the scheduler's work is counted instead.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{durable_config, Api, Reprow};
use reprow::store::{
    engine::Engine, queue::QueueDef, Destination, NewJob, Op, Options, Query, Reply, Settlement,
    StoreError, StoreErrorKind,
};

const IDLE: usize = 20_000;

fn options(dir: &Path, max_queues: usize) -> Options {
    let mut p = QueueDef::named("p");
    p.url = Some("http://127.0.0.1:9/work".into());
    p.max_workers = 4;
    Options {
        path: dir.join("data"),
        map_size: 256 << 20,
        no_sync: true,
        queues: vec![p],
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Default::default(),
        max_queues,
        fail_commit: None,
    }
}

fn job(queue: &str) -> NewJob {
    NewJob {
        dest: Destination::Queue(queue.into()),
        url: None,
        payload: Bytes::from_static(b"{}"),
        content_type: "application/json".into(),
        run_at_ms: 0,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: None,
        ordering_key: None,

        headers: vec![],
    }
}

/// Defines `n` idle push queues `idle-<i>`, each with a worker, in a few commits.
fn define_idle(e: &mut Engine, n: usize) {
    let defs: Vec<Op> = (0..n)
        .map(|i| {
            let mut d = QueueDef::named(&format!("idle-{i}"));
            d.url = Some("http://127.0.0.1:9/work".into());
            Op::PutQueue(d)
        })
        .collect();
    let mut defs = defs.into_iter().peekable();
    while defs.peek().is_some() {
        let batch: Vec<Op> = defs.by_ref().take(2_000).collect();
        for (what, r) in e.apply_ops(batch) {
            assert!(r.is_ok(), "{what}: {r:?}");
        }
    }
}

/// Enqueues one job into `p`, hands it out, settles it done: what a producer and a worker
/// cost the store. Returns the queues the scheduler looked at for it.
fn one_job(e: &mut Engine) -> u64 {
    let before = e.queues_visited();
    for (_, r) in e.apply_ops(vec![Op::Enqueue(vec![job("p")])]) {
        assert!(matches!(r, Ok(Reply::Enqueued(_))), "{r:?}");
    }
    e.feed();
    let d = e.dispatched.pop().expect("the job was handed out");
    assert!(e.dispatched.is_empty());
    e.next_wake();
    let done = Op::Settle {
        id: d.job.id,
        lease: d.lease,
        how: Settlement::Done,
        elapsed_ms: 1,
    };
    for (_, r) in e.apply_ops(vec![done]) {
        assert!(r.is_ok(), "{r:?}");
    }
    e.feed();
    e.next_wake();
    e.queues_visited() - before
}

#[test]
fn idle_queues_are_not_walked_by_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), IDLE + 10), None).unwrap();
    e.feed();
    let alone = one_job(&mut e);
    assert!(alone >= 1, "the count of queues looked at counts nothing");
    define_idle(&mut e, IDLE);
    // Empty, the new queues are not even looked at once.
    assert_eq!(e.next_wake(), None, "new idle queues woke the store loop");
    let before = e.queues_visited();
    e.feed();
    assert!(e.queues_visited() - before <= 1, "new idle queues were fed");
    let mut crowded = 0;
    for _ in 0..10 {
        crowded = crowded.max(one_job(&mut e));
    }
    assert!(
        crowded <= alone.max(2),
        "a job made the scheduler look at {crowded} queues with {IDLE} idle ones, {alone} with none"
    );
    assert_eq!(e.next_wake(), None, "idle queues woke the store loop");
    // Nor after a restart.
    drop(e);
    let mut e = Engine::open(options(dir.path(), IDLE + 10), None).unwrap();
    assert_eq!(e.next_wake(), None, "idle queues woke the reopened store");
    let before = e.queues_visited();
    e.feed();
    assert!(
        e.queues_visited() - before <= 1,
        "idle queues were fed at open"
    );
    assert!(one_job(&mut e) <= alone.max(2));

    // Deleted, they cost nothing either.
    let deletes: Vec<Op> = (0..IDLE)
        .map(|i| Op::DeleteQueue(format!("idle-{i}")))
        .collect();
    for (what, r) in e.apply_ops(deletes) {
        assert!(r.is_ok(), "{what}: {r:?}");
    }
    e.feed();
    assert!(one_job(&mut e) <= alone.max(2));
}

fn apply(e: &mut Engine, op: Op) -> Result<Reply, reprow::store::StoreError> {
    e.apply_ops(vec![op]).pop().unwrap().1
}

fn outstanding(e: &mut Engine, queue: &str) -> Option<u64> {
    match e.query(Query::Stats(Some(queue.into()))) {
        Ok(Reply::Stats(s)) => Some(s[0].1.outstanding_jobs),
        _ => None,
    }
}

#[test]
fn the_cap_counts_the_queues_one_op_makes_and_frees_with_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    // `p` and the default queue: one more fits.
    let mut e = Engine::open(options(dir.path(), 3), None).unwrap();
    let limit = |r: Result<Reply, StoreError>| {
        assert!(
            matches!(&r, Err(err) if err.kind() == StoreErrorKind::Limit
                && err.to_string().contains("queue.max_queues")),
            "{r:?}"
        );
    };
    // Two new queues in one batch of jobs: the second does not fit, so neither is made.
    limit(apply(&mut e, Op::Enqueue(vec![job("n1"), job("n2")])));
    assert_eq!(outstanding(&mut e, "n1"), None);
    let r = apply(&mut e, Op::Enqueue(vec![job("n1"), job("n1")]));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(outstanding(&mut e, "n1"), Some(2));
    limit(apply(&mut e, Op::PutQueue(QueueDef::named("n2"))));
    limit(apply(&mut e, Op::Enqueue(vec![job("n2")])));
    // Changing a queue that exists is no new queue.
    let mut p = QueueDef::named("p");
    p.url = Some("http://127.0.0.1:9/other".into());
    assert!(apply(&mut e, Op::PutQueue(p)).is_ok());
    assert!(apply(&mut e, Op::DeleteQueue("n1".into())).is_ok());
    assert!(apply(&mut e, Op::PutQueue(QueueDef::named("n2"))).is_ok());
    limit(apply(&mut e, Op::PutQueue(QueueDef::named("n3"))));
    // Reopened, the count is what is on disk.
    drop(e);
    let mut e = Engine::open(options(dir.path(), 3), None).unwrap();
    limit(apply(&mut e, Op::PutQueue(QueueDef::named("n3"))));
    assert!(apply(&mut e, Op::DeleteQueue("n2".into())).is_ok());
    assert!(apply(&mut e, Op::PutQueue(QueueDef::named("n3"))).is_ok());
}

#[test]
fn a_deleted_queue_ends_its_leases_and_keeps_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), 100), None).unwrap();
    let mut jobs: Vec<NewJob> = (0..3).map(|_| job("p")).collect();
    jobs[0].uniq = Some("k".into());
    assert!(apply(&mut e, Op::Enqueue(jobs)).is_ok());
    let other = apply(&mut e, Op::Enqueue(vec![job("other")]));
    assert!(other.is_ok(), "{other:?}");
    e.feed();
    let handed: Vec<_> = e.dispatched.drain(..).collect();
    assert_eq!(handed.len(), 3);
    let pulled = apply(
        &mut e,
        Op::Pull {
            queue: "other".into(),
            count: 1,
            forget: Some(false),
        },
    );
    assert!(pulled.is_ok(), "{pulled:?}");
    assert_eq!(e.leased(), 4);
    assert!(apply(&mut e, Op::DeleteQueue("p".into())).is_ok());
    // Its leases ended; the other queue's stays.
    assert_eq!(e.leased(), 1);
    assert_eq!(outstanding(&mut e, "p"), None);
    assert_eq!(outstanding(&mut e, "other"), Some(1));
    // A worker's answer for one of its jobs finds nothing.
    let d = &handed[0];
    let settle = Op::Settle {
        id: d.job.id,
        lease: d.lease,
        how: Settlement::Retry(
            std::time::Duration::ZERO,
            reprow::job::Failure {
                status: Some(500),
                message: "x".into(),
            },
        ),
        elapsed_ms: 1,
    };
    assert!(apply(&mut e, settle).is_ok());
    e.feed();
    assert!(e.dispatched.is_empty());
    // Only the other queue's pull lease wakes the loop.
    let wake = e.next_wake().unwrap();
    assert!(wake > std::time::Duration::from_secs(50), "{wake:?}");
    // Made again, it is empty, and its uniq key is free.
    let mut p = QueueDef::named("p");
    p.url = Some("http://127.0.0.1:9/work".into());
    assert!(apply(&mut e, Op::PutQueue(p)).is_ok());
    assert_eq!(outstanding(&mut e, "p"), Some(0));
    let mut again = job("p");
    again.uniq = Some("k".into());
    let r = apply(&mut e, Op::Enqueue(vec![again]));
    assert!(r.is_ok(), "{r:?}");
    e.feed();
    assert_eq!(e.dispatched.len(), 1);
}

/// A queue stopped or deleted with a job due later does not wake the store loop for it.
#[test]
fn a_stopped_or_deleted_queue_is_not_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), 100), None).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut later = job("p");
    later.run_at_ms = now + 600_000;
    assert!(apply(&mut e, Op::Enqueue(vec![later.clone()])).is_ok());
    e.feed();
    let wake = e.next_wake().expect("the deferred job wakes the loop");
    assert!(wake > std::time::Duration::from_secs(500), "{wake:?}");
    let stop = Op::Control {
        queue: "p".into(),
        paused: true,
    };
    assert!(apply(&mut e, stop).is_ok());
    e.feed();
    assert_eq!(e.next_wake(), None, "a stopped queue woke the loop");
    let start = Op::Control {
        queue: "p".into(),
        paused: false,
    };
    assert!(apply(&mut e, start).is_ok());
    e.feed();
    assert!(e.next_wake().is_some());
    assert!(apply(&mut e, Op::DeleteQueue("p".into())).is_ok());
    e.feed();
    assert_eq!(e.next_wake(), None, "a deleted queue woke the loop");
}

/// A durable config in `dir` with `queue.max_queues: max` and `extra`.
fn capped_config(dir: &Path, max: usize, extra: &str) -> PathBuf {
    let cfg = durable_config(dir, extra);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replacen(
        "  map_size: 64MiB\n",
        &format!("  map_size: 64MiB\n  max_queues: {max}\n"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn refused_by_the_cap(r: &common::HttpReply) {
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("queue.max_queues"), "{}", r.text());
}

#[test]
fn max_queues_caps_every_way_a_queue_is_made() {
    let dir = tempfile::tempdir().unwrap();
    // The default queue and `a` from the config: one more fits.
    let cfg = capped_config(dir.path(), 3, "queues:\n  a:\n    mode: pull\n");
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    let put = api.put("/queue/b", r#"{"mode":"pull"}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    // fireworq's PUT /queue, presque's first push, and its batch push are refused.
    refused_by_the_cap(&api.put("/queue/c", r#"{"mode":"pull"}"#));
    refused_by_the_cap(&api.post("/q/c", r#"{"n":1}"#));
    refused_by_the_cap(&api.post("/qb/c", r#"{"jobs":[{"n":1}]}"#));
    assert_eq!(api.get("/queue/c").status, 404);
    // A queue that exists is still changed and used.
    assert_eq!(
        api.put("/queue/b", r#"{"mode":"pull","max_workers":3}"#)
            .status,
        200
    );
    assert_eq!(api.post("/q/b", r#"{"n":1}"#).status, 201);
    // A deleted queue makes room.
    assert!(matches!(api.delete("/queue/b").status, 200 | 204));
    let made = api.post("/q/c", r#"{"n":1}"#);
    assert_eq!(made.status, 201, "{}", made.text());
    refused_by_the_cap(&api.post("/q/d", r#"{"n":1}"#));
    drop(r);

    // A config that defines more queues than the cap is refused at load, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let cfg = capped_config(
        dir.path(),
        2,
        "queues:\n  a:\n    mode: pull\n  b:\n    mode: pull\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(["check", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("queue.max_queues"), "{text}");
}

/// The `queues` count of the last "Store opened." log line.
fn queues_opened(r: &Reprow) -> u64 {
    r.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["message"] == "Store opened.")
        .and_then(|v| v["queues"].as_u64())
        .expect("a Store opened. line")
}

#[test]
fn a_deleted_queue_leaves_nothing_behind_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "");
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    let put = api.put("/queue/gone", r#"{"mode":"pull","max_retries":0}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(api.post("/q/gone?uniq=u1", r#"{"n":1}"#).status, 201);
    assert_eq!(api.post("/q/gone?uniq=u2", r#"{"n":2}"#).status, 201);
    // The first one (leased, reprow's opt-in) fails for good: the queue has a failed log.
    let got = api.get("/q/gone?lease=1");
    assert_eq!(got.status, 200);
    let id = got.header("X-Reprow-Job-Id").unwrap().to_string();
    assert_eq!(api.put(&format!("/q/gone?id={id}"), "").status, 204);
    let failed = api.get("/queue/gone/failed").json();
    assert_eq!(
        failed["failed_jobs"].as_array().unwrap().len(),
        1,
        "{failed}"
    );
    assert!(matches!(api.delete("/queue/gone").status, 200 | 204));
    r.stop();

    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    // Only the default queue is loaded.
    assert_eq!(queues_opened(&r), 1, "{}", r.log());
    assert_eq!(api.get("/queue/gone").status, 404);
    // Made again, it starts empty: no jobs, no failed log, no uniq keys.
    let put = api.put("/queue/gone", r#"{"mode":"pull"}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    let stats = api.get("/queue/gone/stats").json();
    assert_eq!(stats["outstanding_jobs"], 0, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    let failed = api.get("/queue/gone/failed").json();
    assert_eq!(
        failed["failed_jobs"].as_array().unwrap().len(),
        0,
        "{failed}"
    );
    assert_eq!(api.post("/q/gone?uniq=u2", r#"{"n":3}"#).status, 201);
    assert_eq!(api.get("/q/gone").json(), serde_json::json!({"n":3}));
}

/// A store written before the `counters` database (id counters and counts in `meta`) opens
/// with its counts and ids, and they move out of `meta`.
#[test]
fn counters_kept_in_meta_by_an_older_version_move_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path(), 100), None).unwrap();
    let first = match apply(&mut e, Op::Enqueue(vec![job("old"), job("old")])) {
        Ok(Reply::Enqueued(v)) => v[1].id,
        r => panic!("{r:?}"),
    };
    drop(e);
    // Put the counters back where an older version kept them.
    with_meta_and_counters(dir.path(), |wtxn, meta, counters| {
        let all: Vec<(Vec<u8>, Vec<u8>)> = counters
            .iter(wtxn)
            .unwrap()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert!(all.iter().any(|(k, _)| k == b"next_id"));
        for (k, v) in &all {
            meta.put(wtxn, k, v).unwrap();
        }
        counters.clear(wtxn).unwrap();
    });

    let mut e = Engine::open(options(dir.path(), 100), None).unwrap();
    assert_eq!(outstanding(&mut e, "old"), Some(2));
    match apply(&mut e, Op::Enqueue(vec![job("old")])) {
        Ok(Reply::Enqueued(v)) => assert!(v[0].id > first, "an id was handed out twice"),
        r => panic!("{r:?}"),
    }
    drop(e);
    with_meta_and_counters(dir.path(), |wtxn, meta, _| {
        assert!(meta.get(wtxn, b"next_id").unwrap().is_none());
        assert_eq!(meta.prefix_iter(wtxn, b"c:").unwrap().count(), 0);
    });
}

type Raw<'e> = heed::Database<'e, heed::types::Bytes, heed::types::Bytes>;

/// Runs `f` on the store's `meta` and `counters` databases in one committed write transaction.
fn with_meta_and_counters(dir: &Path, f: impl FnOnce(&mut heed::RwTxn, Raw, Raw)) {
    let env = reprow::store::env::open(&dir.join("data"), 256 << 20, true).unwrap();
    let wtxn = env.write_txn().unwrap();
    let [meta, counters] = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            let mut db = |name| {
                dbo.create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, Some(name))
            };
            Ok(heed::CommitOrAbort::<_, ()>::Commit([
                db("meta")?,
                db("counters")?,
            ]))
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    f(&mut wtxn, meta, counters);
    wtxn.commit().unwrap();
}
