//! A new user's first run, from the command line only: `reprow serve` with its three flags
//! (`--worker`, `--listen`, `--data`), the CLI client's answers when a queue has no worker, and
//! the refusals of flags that do not fit.

mod common;

use std::process::{Command, Output, Stdio};

use common::{Reply, Reprow, Worker};

fn serve(dir: &std::path::Path, log: &str, args: &[&str]) -> Reprow {
    let log = dir.join(log);
    let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Reprow::adopt(child, log)
}

fn client(reprow: &Reprow, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(args)
        .args(["--url", &format!("http://{}", reprow.api_addr())])
        .env_remove("REPROW_URL")
        .env_remove("REPROW_TOKEN")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The path the issue found: a first `reprow serve` with no worker, jobs that would wait
/// silently, then the same directory served again with `--worker`, which the existing default
/// queue takes.
#[test]
fn a_first_run_without_a_worker_says_so_and_a_second_with_one_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("jobs");
    let data_arg = data.to_str().unwrap();
    let r = serve(
        dir.path(),
        "first.log",
        &["--listen", "127.0.0.1:0", "--data", data_arg],
    );

    let pull = client(&r, &["enqueue", "emails", "hello"]);
    assert!(pull.status.success(), "{}", text(&pull.stderr));
    assert_eq!(text(&pull.stdout).trim(), "1");
    let note = text(&pull.stderr);
    assert!(
        note.starts_with("note: queue \"emails\" has no worker")
            && note.contains("GET /q/emails")
            && note.contains("--worker"),
        "{note}"
    );

    let refused = client(&r, &["enqueue", "default", r#"{"a":1}"#]);
    assert_eq!(refused.status.code(), Some(1));
    let why = text(&refused.stderr);
    assert!(
        why.contains("queue \"default\" has no worker url") && why.contains("--worker URL"),
        "{why}"
    );
    assert!(r.stop().0.success());
    assert!(data.join("data.mdb").exists(), "--data names the directory");
    assert!(
        !dir.path().join("reprow-data").exists(),
        "nothing in ./reprow-data"
    );

    let worker = Worker::start(|_, _| Reply::ok());
    let r = serve(
        dir.path(),
        "second.log",
        &[
            "--worker",
            &worker.url(),
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_arg,
        ],
    );
    let pushed = client(&r, &["enqueue", "default", r#"{"a":1}"#]);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    assert_eq!(
        text(&pushed.stderr),
        "",
        "a queue with a worker gets no note"
    );
    let got = worker.wait_for(1);
    assert_eq!(got[0].body_str(), r#"{"a":1}"#);
    // The pull queue's job is still there for a pull worker.
    let listed = client(&r, &["jobs", "emails"]);
    assert!(
        text(&listed.stdout).contains("\"hello\""),
        "{}",
        text(&listed.stdout)
    );
    assert!(r.stop().0.success());
}

/// `--worker` wins over a config file's default queue that names no url, and over its
/// `runner.url`; `--listen` over `api.listen`.
#[test]
fn the_flags_win_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "queue:\n  type: lmdb\n  path: {}\napi:\n  listen: 127.0.0.1:1\nrunner:\n  url: http://127.0.0.1:1/nobody\nqueues:\n  default:\n    max_workers: 3\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let r = serve(
        dir.path(),
        "c.log",
        &[
            "-c",
            config.to_str().unwrap(),
            "--worker",
            &worker.url(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_ne!(r.api_addr().port(), 1);
    // The file's other settings of the default queue stand.
    let def = common::Api::new(r.api_addr()).get("/queue/default").json();
    assert_eq!(def["max_workers"], 3, "{def}");
    let out = client(&r, &["enqueue", "default", "7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(worker.wait_for(1)[0].body_str(), "7");
    assert!(r.stop().0.success());
}

/// `--worker` wins over a url the file gives the default queue; other queues keep theirs, and
/// one without a url gets none from it.
#[test]
fn the_worker_flag_names_the_default_queue_only() {
    let dir = tempfile::tempdir().unwrap();
    let (file_worker, flag_worker, own) = (
        Worker::start(|_, _| Reply::ok()),
        Worker::start(|_, _| Reply::ok()),
        Worker::start(|_, _| Reply::ok()),
    );
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "queue:\n  type: lmdb\n  path: {}\nrunner:\n  url: {file}\nqueues:\n  default:\n    url: {file}\n  mail:\n    url: {own}\n  bare:\n    max_workers: 1\n",
            dir.path().join("d").display(),
            file = file_worker.url(),
            own = own.url(),
        ),
    )
    .unwrap();
    let r = serve(
        dir.path(),
        "w.log",
        &[
            "-c",
            config.to_str().unwrap(),
            "--worker",
            &flag_worker.url(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    for (queue, payload) in [("default", "1"), ("mail", "2")] {
        let out = client(&r, &["enqueue", queue, payload]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(flag_worker.wait_for(1)[0].body_str(), "1");
    assert_eq!(own.wait_for(1)[0].body_str(), "2");
    let bare = client(&r, &["enqueue", "bare", "3"]);
    assert_eq!(bare.status.code(), Some(1), "{}", text(&bare.stdout));
    assert!(text(&bare.stderr).contains("queue \"bare\" has no worker url"));
    assert!(file_worker.received().is_empty());
    assert!(r.stop().0.success());
}

#[test]
fn flags_that_do_not_fit_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_reprow"))
            .arg("serve")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["--worker", "ftp://127.0.0.1/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: --worker: unsupported scheme \"ftp\""),
        "{}",
        text(&out.stderr)
    );
    let fifo = concat!(env!("CARGO_MANIFEST_DIR"), "/sample/fifo.yaml");
    let out = run(&["-c", fifo, "--data", "/tmp/elsewhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--data: applies to the durable queue"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--listen"),
        "{}",
        text(&out.stderr)
    );
    // Nothing was created by the refusals.
    assert!(!dir.path().join("reprow-data").exists());
}

/// Across restarts of one directory: a new `--worker` replaces the stored one while the file's
/// other settings of the default queue apply; a start without `--worker` keeps the last one.
#[test]
fn the_default_queues_worker_is_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2) = (
        Worker::start(|_, _| Reply::ok()),
        Worker::start(|_, _| Reply::ok()),
    );
    let data = dir.path().join("d");
    let config = dir.path().join("c.yaml");
    let write = |max_workers: u32| {
        let text = format!(
            "queue:\n  type: lmdb\n  path: {}\nqueues:\n  default:\n    max_workers: {max_workers}\n",
            data.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    let c = config.to_str().unwrap();
    write(3);
    let r = serve(
        dir.path(),
        "1.log",
        &["-c", c, "--worker", &w1.url(), "--listen", "127.0.0.1:0"],
    );
    assert!(client(&r, &["enqueue", "default", "1"]).status.success());
    assert_eq!(w1.wait_for(1)[0].body_str(), "1");
    assert!(r.stop().0.success());

    write(5);
    let r = serve(
        dir.path(),
        "2.log",
        &["-c", c, "--worker", &w2.url(), "--listen", "127.0.0.1:0"],
    );
    let def = common::Api::new(r.api_addr()).get("/queue/default").json();
    assert_eq!(def["max_workers"], 5, "{def}");
    assert!(client(&r, &["enqueue", "default", "2"]).status.success());
    assert_eq!(w2.wait_for(1)[0].body_str(), "2");
    assert!(r.stop().0.success());

    let r = serve(
        dir.path(),
        "3.log",
        &["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    assert!(client(&r, &["enqueue", "default", "3"]).status.success());
    let got = w2.wait_for(2);
    assert_eq!(got[1].body_str(), "3", "the last --worker is kept");
    assert_eq!(w1.received().len(), 1);
    assert!(r.stop().0.success());
}
