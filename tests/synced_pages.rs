//! Records and jobs are on disk before reprow says so, checked by `cargo test` without strace
//! (the strace tests of `tests/fifo_sync.rs` and `tests/durable_restart.rs` run in `.ci/run`
//! only): right after the moment a file must have been synced, `cachestat(2)` must find none
//! of its pages dirty (see `common::pages`). A kernel without `cachestat` skips these tests,
//! saying so.

mod common;

use std::sync::{Arc, Mutex};

use common::{pages::*, *};

/// A request's index and the failed file's unsynced pages when it came.
type Seen = (usize, Option<u64>);

fn skip(dir: &std::path::Path) -> bool {
    if cachestat_works(dir) {
        return false;
    }
    eprintln!("skipped: this kernel does not show dirty pages (cachestat, Linux 6.5)");
    true
}

#[test]
fn a_failed_fifo_record_is_synced_before_the_next_job_is_read() {
    // max_held_jobs 1: job k is read only once job k-1's slot is released, which must be after
    // its failed record is synced. So when job k reaches the worker, the failed file is clean.
    let scene = Scene::new();
    if skip(scene.dir.path()) {
        return;
    }
    let failed = scene.path("failed.jsonl");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let worker = {
        let (failed, seen) = (failed.clone(), seen.clone());
        Worker::start(move |_, i| {
            if i > 0 {
                seen.lock().unwrap().push((i, unsynced_pages(&failed)));
            }
            Reply::status(400)
        })
    };
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "  max_held_jobs: 1\n",
        "  concurrency: 1\n  max_retries: 0\n",
        "threads: 1\n",
    ));
    write_lines(&scene.fifo(), &["f0", "f1", "f2", "f3", "f4"]);
    worker.wait_for(5);
    let (status, _) = reprow.stop();
    assert!(status.success());
    assert_eq!(scene.records("failed.jsonl").len(), 5);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (i, dirty) in seen {
        assert_eq!(
            dirty,
            Some(0),
            "when job {i} was sent, the failed record of job {} was not synced",
            i - 1
        );
    }
}

#[test]
fn pending_fifo_records_are_synced_before_exit() {
    let scene = Scene::new();
    if skip(scene.dir.path()) {
        return;
    }
    let worker = Worker::start(|_, _| {
        Reply::After(std::time::Duration::from_secs(3), Box::new(Reply::ok()))
    });
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "",
        "  concurrency: 1\n",
        "threads: 1\nshutdown_timeout: 200ms\n",
    ));
    write_lines(&scene.fifo(), &["p0", "p1", "p2", "p3"]);
    worker.wait_for(1);
    let (status, _) = reprow.stop();
    assert!(status.success());
    let pending = scene.path("pending.jsonl");
    assert_eq!(scene.records("pending.jsonl").len(), 4);
    assert_eq!(
        unsynced_pages(&pending),
        Some(0),
        "pending records not synced before exit"
    );
}

/// With the write-ahead log, an answer's durable point is the synced frame in `reprow.wal`
/// (`data.mdb` is written by checkpoints, in their own time).
#[test]
fn a_2xx_enqueue_answer_comes_after_the_log_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    if skip(dir.path()) {
        return;
    }
    // A pull-mode queue: nothing dispatches, so nothing else commits between the answers.
    let cfg = durable_config(
        dir.path(),
        "threads: 1\nqueues:\n  pl:\n    mode: pull\nroutings:\n  k: pl\n",
    );
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let wal = dir.path().join("data").join("reprow.wal");
    let mut sizes = Vec::new();
    for i in 0..8 {
        let reply = if i % 2 == 0 {
            api.post("/job/k", &format!(r#"{{"payload":{{"i":{i}}}}}"#))
        } else {
            api.post("/q/pl", &format!(r#"{{"i":{i}}}"#))
        };
        assert!((200..300).contains(&reply.status), "{}", reply.text());
        assert_eq!(
            unsynced_pages(&wal),
            Some(0),
            "answer {i} came before reprow.wal was synced"
        );
        sizes.push(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert!(
        sizes.iter().all(|&n| n > 0),
        "the jobs went through the log: {sizes:?}"
    );
    let (status, _) = reprow.stop();
    assert!(status.success());
}
