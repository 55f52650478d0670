//! The command line: `reprow check -c FILE` validates and points at the problem, `--version`,
//! and start-up refusals (a queue path that is not a FIFO) with clear messages.

mod common;

use std::process::Command;

fn reprow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_is_printed() {
    let (code, out, _) = reprow(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("reprow {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_accepts_the_samples() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample/fifo.yaml");
    let (code, out, err) = reprow(&["check", "-c", sample]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"));
}

#[test]
fn check_reports_bad_configs_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n  concurrency: 0\n", "line 7: runner.concurrency: must be at least 1"),
        ("queue:\n  type: fifo\n  path: /tmp/x\n  bogus: 1\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n", "unknown field `bogus`"),
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: ftp://127.0.0.1:1\n", "runner.url"),
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n  timeout: forever\n", "invalid duration"),
        ("queue:\n  type: fifo\n  path: /tmp/x\n", "runner: a FIFO queue needs a runner"),
        ("queue:\n  type: lmdb\n  map_size: 10KiB\n", "queue.map_size: must be at least 1MiB"),
        ("queue:\n  type: lmdb\nqueues:\n  q1:\n    max_workers: 0\n", "q1: max_workers must be 1 to 10000"),
        ("routings:\n  cat: nowhere\n", "queue \"nowhere\" is not defined"),
        ("api:\n  max_body_bytes: 10\n", "api.max_body_bytes"),
        ("queue: [unclosed\n", "line"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = reprow(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(err.contains(want), "case {i}: expected {want:?} in {err:?}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "the message names the file"
        );
    }
    let (code, _, err) = reprow(&["check", "-c", "/nonexistent/reprow.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_regular_file_is_not_taken_for_a_fifo() {
    let scene = common::Scene::new();
    std::fs::write(scene.fifo(), "important data\n").unwrap();
    let cfg = scene.config("http://127.0.0.1:9/", "", "", "");
    let (code, _, err) = reprow(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a FIFO"), "{err}");
    assert_eq!(
        std::fs::read_to_string(scene.fifo()).unwrap(),
        "important data\n",
        "file untouched"
    );
}

#[test]
fn fifo_is_created_with_mode_0660() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let worker = common::Worker::start(|_, _| common::Reply::ok());
    let scene = common::Scene::new();
    let r = common::Reprow::start(&scene.config(&worker.url(), "", "", ""));
    common::write_lines(&scene.fifo(), &["x"]);
    worker.wait_for(1);
    let meta = std::fs::metadata(scene.fifo()).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    r.stop();
}
