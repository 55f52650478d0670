//! `reprow enqueue / jobs / retry / stats` against a running reprow, as a user runs them.

mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use common::*;

fn reprow_cli(args: &[&str], url: &str, token: Option<&str>, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reprow"));
    cmd.args(args)
        .arg("--url")
        .arg(url)
        .env_remove("REPROW_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("REPROW_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn enqueue_list_fail_retry_and_stats() {
    // The worker refuses "bad" until told otherwise.
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fixed.clone();
    let worker = Worker::start(move |r, _| {
        if r.body_str().contains("bad") && !f.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Status(422, vec![], b"not today".to_vec())
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "api:\n  listen: 127.0.0.1:0\n  token: t0k\nqueues:\n  work:\n    url: {}\n  parked:\n    url: {}\n    paused: true\n",
            worker.url(),
            worker.url()
        ),
    );
    let reprow = Reprow::start(&cfg);
    let url = format!("http://{}", reprow.api_addr());
    let tok = Some("t0k");

    // One job, then three from stdin lines (one batch); plain text becomes a JSON string.
    let o = reprow_cli(&["enqueue", "parked", r#"{"n":1}"#], &url, tok, None);
    assert!(o.status.success(), "{o:?}");
    let first: u64 = text(&o).trim().parse().unwrap();
    let o = reprow_cli(
        &["enqueue", "parked", "-"],
        &url,
        tok,
        Some("{\"n\":2}\n\nplain words\n{\"n\":3}\n"),
    );
    assert!(o.status.success(), "{o:?}");
    let ids: Vec<u64> = text(&o).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| *i > first));

    // The paused queue holds them: `jobs` lists all four, waiting.
    let o = reprow_cli(&["jobs", "parked"], &url, tok, None);
    assert!(o.status.success(), "{o:?}");
    let listing = text(&o);
    assert!(listing.starts_with("ID"), "{listing}");
    // A queue that holds still is listed from one moment, without the note of a changing one.
    assert!(!listing.contains("changed while"), "{listing}");
    assert_eq!(listing.lines().count(), 5, "{listing}");
    assert_eq!(
        listing.lines().filter(|l| l.contains("waiting")).count(),
        4,
        "{listing}"
    );
    assert!(listing.contains("\"plain words\""), "{listing}");

    // A job the worker refuses lands in the failed log; retry it once the worker is fixed.
    let o = reprow_cli(&["enqueue", "work", r#"{"k":"bad"}"#], &url, tok, None);
    assert!(o.status.success(), "{o:?}");
    worker.wait_for(1);
    let api = {
        let mut a = Api::new(reprow.api_addr());
        a.token = Some("t0k".into());
        a
    };
    api.wait_json("/queue/work/failed", |v| {
        v["failed_jobs"].as_array().is_some_and(|a| a.len() == 1)
    });
    let o = reprow_cli(&["jobs", "work", "--failed"], &url, tok, None);
    let listing = text(&o);
    assert!(
        listing.contains("not today") && listing.contains("422"),
        "{listing}"
    );
    let failed_id: u64 = listing
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = reprow_cli(&["retry", "work", &failed_id.to_string()], &url, tok, None);
    assert!(o.status.success(), "{o:?}");
    assert!(text(&o).starts_with("requeued as job"), "{}", text(&o));
    worker.wait_for(2);
    api.wait_json("/queue/work/stats", |v| {
        v["total_successes"] == 1 && v["failed"] == 0
    });

    // `stats` without a terminal prints one table.
    let o = reprow_cli(&["stats"], &url, tok, None);
    assert!(o.status.success(), "{o:?}");
    let table = text(&o);
    let head = table.lines().next().unwrap();
    assert!(
        head.starts_with("reprow ") && head.contains(" running: "),
        "{table}"
    );
    let parked = table
        .lines()
        .find(|l| l.starts_with("parked"))
        .expect("parked row");
    let cols: Vec<&str> = parked.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols.last().copied()),
        ("4", Some("yes")),
        "{table}"
    );
    let o = reprow_cli(&["stats", "--once"], &url, tok, None);
    assert!(text(&o).contains("work"), "{}", text(&o));
    assert!(reprow.stop().0.success());
}

#[test]
fn failures_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "api:\n  listen: 127.0.0.1:0\n  token: t0k\n");
    let reprow = Reprow::start(&cfg);
    let url = format!("http://{}", reprow.api_addr());
    let o = reprow_cli(&["stats"], &url, Some("wrong"), None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401") && err.contains("bearer token"), "{err}");
    let o = reprow_cli(&["retry", "default", "999"], &url, Some("t0k"), None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"), "{o:?}");
    let o = reprow_cli(
        &["enqueue", "default", "-"],
        &url,
        Some("t0k"),
        Some("\n\n"),
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no jobs on stdin"),
        "{o:?}"
    );
    let refused = RefusedPort::new();
    let o = reprow_cli(
        &["stats"],
        &format!("http://127.0.0.1:{}", refused.port()),
        None,
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach reprow"),
        "{o:?}"
    );
    for bad in ["0", "-1", "inf", "NaN"] {
        let arg = format!("--interval={bad}");
        let o = reprow_cli(&["stats", &arg], &url, Some("t0k"), None);
        assert_eq!(o.status.code(), Some(1), "--interval {bad}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("--interval must be a positive number of seconds"),
            "{o:?}"
        );
    }
    // On a terminal (util-linux `script` makes one), `--once` prints one table and exits;
    // without it the table is redrawn until Ctrl-C.
    let once = std::process::Command::new("timeout")
        .args(["20", "script", "-qec"])
        .arg(format!(
            "REPROW_TOKEN=t0k {} stats --once --url {url}",
            env!("CARGO_BIN_EXE_reprow")
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success(), "{once:?}");
    assert!(
        shown.contains("QUEUE") && !shown.contains("\x1b[2J"),
        "{shown:?}"
    );
    let o = reprow_cli(&["stats"], "https://example.com", None, None);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only http://"),
        "{o:?}"
    );
    assert!(reprow.stop().0.success());
}
