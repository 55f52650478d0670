//! The store thread as the cores and the API drive it, through a real LMDB file with fsync on:
//! commands that wait while a commit runs share the next one (the group commit README
//! describes), and everything sent before [`Store::close`] is applied. Written for mutants
//! cargo-mutants missed in `src/store/engine/` with `--lib --test store_model`.

use bytes::Bytes;
use reprow::store::{
    engine::{self, Engine},
    queue::{QueueDef, QueueMode},
    Destination, NewJob, Op, Options, Query, Reply,
};

fn options(dir: &std::path::Path) -> Options {
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    Options {
        path: dir.join("data"),
        map_size: 64 << 20,
        // Real fsyncs: a commit takes long enough for commands to wait behind it.
        no_sync: false,
        queues: vec![q],
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Default::default(),
        fail_commit: None,
    }
}

fn job(n: usize) -> NewJob {
    NewJob {
        dest: Destination::Queue("q".into()),
        url: None,
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        content_type: "application/json".into(),
        run_at_ms: 0,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: None,
    }
}

#[test]
fn commands_waiting_behind_a_commit_share_the_next_one() {
    const JOBS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (out, _rx) = async_channel::unbounded();
    let (store, thread) = engine::start(options(dir.path()), out).unwrap();
    for n in 0..JOBS {
        store.send(Op::Enqueue(vec![job(n)]));
    }
    store.close();
    thread.join().unwrap();

    let commits = store.metrics.commit_ops.snapshot();
    // Each of the JOBS sends is one op; the group commit folds those that waited while the
    // previous commit's fsync ran into one transaction. Sending 300 commands takes
    // microseconds, an fsync far longer, so one commit per op means no batching at all.
    assert!(
        commits.count < JOBS as u64 / 2,
        "{} commits for {JOBS} enqueues",
        commits.count
    );

    // Every command sent before the close was applied and is on disk.
    let mut engine = Engine::open(options(dir.path()), None).unwrap();
    match engine.query(Query::Stats(Some("q".into()))) {
        Ok(Reply::Stats(s)) => assert_eq!(s[0].1.outstanding_jobs, JOBS as u64),
        r => panic!("{r:?}"),
    }
}
