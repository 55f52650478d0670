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

use std::{collections::HashMap, path::Path, process::Stdio};

use common::*;
use nix::sys::signal::Signal;

/// One call of a trace taken with `strace -f -y -tt`.
struct Call {
    /// `write`, `fdatasync`, ...
    name: String,
    /// The call with its arguments (fds shown with their paths) and result.
    line: String,
    /// It returned 0 or more (not an error).
    ok: bool,
}

/// The calls of the trace in the order they started, each with its result; a call split into
/// `<unfinished ...>` and `<... resumed>` counts where it returned (what matters for a sync).
fn calls(text: &str) -> Vec<Call> {
    let mut started: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        // "PID  TIME CALL": strace pads the PID column, so split on runs of spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((_time, call)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let full = if let Some(resumed) = call.strip_prefix("<... ") {
            let Some(start) = started.remove(pid) else {
                continue;
            };
            let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{start}{tail}")
        } else if let Some(start) = call.strip_suffix("<unfinished ...>") {
            started.insert(pid.to_string(), start.to_string());
            continue;
        } else {
            call.to_string()
        };
        let name = full.split('(').next().unwrap_or("").to_string();
        let ok = full.trim_end().ends_with("= 0")
            || full
                .rsplit_once("= ")
                .is_some_and(|(_, r)| r.trim().parse::<i64>().is_ok_and(|n| n >= 0));
        out.push(Call {
            name,
            line: full,
            ok,
        });
    }
    out
}

/// Starts reprow under strace with the config, runs `drive`, stops reprow with SIGTERM and
/// returns the trace.
fn traced(scene: &Scene, cfg: &Path, drive: impl FnOnce()) -> String {
    let trace = scene.path("strace.txt");
    let log = scene.path("reprow.log");
    let child = std::process::Command::new("strace")
        .args([
            "-f",
            "-y",
            "-tt",
            "-s",
            "24",
            "-e",
            "trace=fdatasync,fsync,write,writev,sendto,sendmsg,openat",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_reprow"))
        .arg("-c")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("strace is needed (Debian: apt-get install strace)");
    let mut tracer = Reprow::adopt(child, log);
    drive();
    // SIGTERM to reprow itself (strace's child); strace exits with it and flushes the trace.
    let strace_pid = tracer.child.id();
    let deadline = std::time::Instant::now() + DEADLINE;
    let reprow_pid: i32 = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
                .unwrap();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strace started no reprow"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(reprow_pid), Signal::SIGTERM).unwrap();
    assert!(tracer.wait().success(), "{}", tracer.log());
    std::fs::read_to_string(&trace).unwrap()
}

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
    let trace = traced(&scene, &cfg, || {
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
    let trace = traced(&scene, &cfg, || {
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
