//! FIFO behaviours a user relies on that only the strace tests (run by `.ci/run`, not by
//! `cargo test`) or nothing at all checked, found by cargo-mutants: job ids that increase, the
//! `max_held_jobs` back-pressure that lets reading go on as slots are released (by a done job
//! and by a failed one, once its record is written), and `max_held_jobs` equal to the
//! concurrency.

mod common;

use common::*;

/// `X-Reprow-Job-Id` of each request, in the order the worker got them.
fn ids(worker: &Worker) -> Vec<u64> {
    worker
        .received()
        .iter()
        .map(|r| r.header("X-Reprow-Job-Id").unwrap().parse().unwrap())
        .collect()
}

#[test]
fn fifo_job_ids_increase_within_a_run() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow =
        Reprow::start(&scene.config(&worker.url(), "", "  concurrency: 1\n", "threads: 1\n"));
    let lines: Vec<String> = (0..30).map(|i| format!("i{i}")).collect();
    write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(30);
    // One slot: the jobs reach the worker in the order they were read.
    let bodies: Vec<String> = worker.received().iter().map(Received::body_str).collect();
    assert_eq!(bodies, lines);
    let ids = ids(&worker);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {ids:?}"
    );
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
fn reading_goes_on_as_held_jobs_are_done_with_max_held_jobs_equal_to_concurrency() {
    // max_held_jobs 1 and concurrency 1: the FIFO is read one job at a time, the next only
    // once the previous one's slot is released. A config with the two equal must start.
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "  max_held_jobs: 1\n",
        "  concurrency: 1\n",
        "threads: 1\n",
    ));
    let lines: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
    write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(20);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 20);
    assert_eq!(stats["held"], 0);
}

#[test]
fn reading_goes_on_as_failed_jobs_are_recorded_with_max_held_jobs_one() {
    // Every job fails for good (400): its slot is released once its record is in the failed
    // file, and only then is the next job read.
    let worker = Worker::start(|_, _| Reply::status(400));
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(
        &worker.url(),
        "  max_held_jobs: 1\n",
        "  concurrency: 1\n  max_retries: 0\n",
        "threads: 1\n",
    ));
    let lines: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(6);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    let failed: Vec<String> = scene
        .records("failed.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, lines);
    assert_eq!(stats["held"], 0);
}

#[test]
fn a_fifo_already_at_the_path_is_read_as_it_is_and_again_after_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    // The common restart: the FIFO is there from the previous run (or made by the operator,
    // with the mode they chose, which reprow leaves alone).
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    nix::unistd::mkfifo(
        &scene.fifo(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let cfg = scene.config(&worker.url(), "", "", "");
    for (run, line) in ["first", "second"].into_iter().enumerate() {
        let reprow = Reprow::start(&cfg);
        write_lines(&scene.fifo(), &[line]);
        worker.wait_for(run + 1);
        let (status, _) = reprow.stop();
        assert!(status.success());
    }
    let bodies: Vec<String> = worker.received().iter().map(Received::body_str).collect();
    assert_eq!(bodies, ["first", "second"]);
    let mode = std::fs::metadata(scene.fifo())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
