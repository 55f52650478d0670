//! The FIFO's failed and pending files are synced before the job they record is forgotten:
//! reprow runs under `strace`, which records its `fdatasync`/`fsync` calls, its writes to the
//! files and its requests to the worker in one ordered trace.
//!
//! Why a kill -9 test cannot show a missing sync: SIGKILL ends the process, not the machine.
//! A record written with `write(2)` and never synced sits in the kernel's page cache and
//! reaches the file later anyway, so a reprow that never syncs loses nothing when it is killed;
//! only a power cut or a kernel crash would show it. The trace checks the order of syscalls
//! instead.
//!
//! The cores run on the epoll driver here: with io_uring their requests would be written by
//! io_uring operations, which strace does not see.

mod common;

use common::strace::{calls, traced};
use common::*;

/// What the FIFO tests trace: syncs, writes to files and sockets, and opens (for the paths).
const TRACE: &str = "fdatasync,fsync,write,writev,sendto,sendmsg,openat";

/// A job failed for good is forgotten only once its record is synced: with `max_held_jobs: 1`
/// the FIFO reads the next job only after the slot of the previous one is released, so the
/// request for job k+1 must come after a completed sync of the failed file that follows the
/// record of job k. The worker answers 400 (failed for good, no retry).
#[test]
#[ignore = "needs strace: run by .ci/run"]
fn fifo_failed_record_is_synced_before_its_slot_is_released() {
    let worker = Worker::start(|_, _| Reply::status(400));
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "  max_held_jobs: 1\n",
        "  concurrency: 1\n  max_retries: 0\n",
        "driver: epoll\nthreads: 1\n",
    );
    let n = 6;
    let lines: Vec<String> = (0..n).map(|i| format!("job{i}")).collect();
    let trace = traced(scene.dir.path(), &cfg, TRACE, |_| {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        write_lines(&scene.fifo(), &refs);
        worker.wait_for(n);
        // The last record: written once its answer came.
        let deadline = std::time::Instant::now() + DEADLINE;
        while scene.records("failed.jsonl").len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "failed records missing"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    assert_eq!(scene.records("failed.jsonl").len(), n);

    let (mut written, mut synced, mut requests) = (0, 0, 0);
    for call in calls(&trace) {
        let on_failed = call.line.contains("failed.jsonl>");
        match call.name.as_str() {
            "write" | "writev" if on_failed && call.ok => written += 1,
            "fdatasync" | "fsync" if on_failed && call.ok => synced = written,
            "write" | "writev" | "sendto" | "sendmsg" if call.line.contains("\"POST ") => {
                assert!(
                    synced >= requests,
                    "request {requests} (for job{requests}) was sent while the failed record \
                     of job{} was not yet synced ({written} records written, {synced} synced): \
                     {}\ntrace:\n{trace}",
                    requests - 1,
                    call.line
                );
                requests += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        requests, n,
        "the trace shows {requests} requests of {n}; did reprow send them with io_uring?\n{trace}"
    );
    assert_eq!(written, n, "one write per record expected:\n{trace}");
    assert_eq!(synced, n, "every failed record synced:\n{trace}");
}

/// Jobs still held at shutdown go to the pending file, synced before reprow exits: every write
/// to it is followed by a completed sync of it. The worker holds each request past the
/// shutdown grace period, so the in-flight job and the queued ones are all pending.
#[test]
#[ignore = "needs strace: run by .ci/run"]
fn fifo_pending_records_are_synced_before_exit() {
    let worker = Worker::start(|_, _| {
        Reply::After(std::time::Duration::from_secs(3), Box::new(Reply::ok()))
    });
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "",
        "  concurrency: 1\n",
        "driver: epoll\nthreads: 1\nshutdown_timeout: 200ms\n",
    );
    let n = 5;
    let lines: Vec<String> = (0..n).map(|i| format!("job{i}")).collect();
    let trace = traced(scene.dir.path(), &cfg, TRACE, |_| {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        write_lines(&scene.fifo(), &refs);
        worker.wait_for(1);
    });
    assert_eq!(scene.records("pending.jsonl").len(), n, "{trace}");

    let (mut written, mut synced) = (0, 0);
    for call in calls(&trace) {
        let on_pending = call.line.contains("pending.jsonl>");
        match call.name.as_str() {
            "write" | "writev" if on_pending && call.ok => written += 1,
            "fdatasync" | "fsync" if on_pending && call.ok => synced = written,
            _ => {}
        }
    }
    assert!(written > 0, "no write to the pending file:\n{trace}");
    assert_eq!(
        synced, written,
        "pending records written after the last sync of the pending file:\n{trace}"
    );
}
