//! The dashboard in a real headless Chromium: the page loads from the binary, asks for the
//! token, shows numbers that follow the jobs, lists a failed job whose Retry button makes it
//! succeed, shows a running job on the scoreboard, and pauses/resumes a queue. Driven by
//! tests/support/dashboard_check.py over the DevTools protocol. That test needs Debian's
//! `chromium` and `python3-websocket`, so it is ignored by `cargo test`; `.ci/run` installs them
//! and runs it (`cargo test --test dashboard -- --ignored`). The screenshot it takes is
//! README's (`REPROW_SCREENSHOT=docs/dashboard.png cargo test --test dashboard -- --ignored`
//! refreshes it). The page itself (served from the binary, self-contained) is checked by
//! default.

mod common;

use std::{process::Command, time::Duration};

use common::*;

/// `REPROW_TEST_PYTHON`, else the first of `python3`, `/usr/bin/python3` with websocket-client.
fn python_with_websocket() -> String {
    let candidates: Vec<String> = match std::env::var("REPROW_TEST_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    candidates
        .iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import websocket"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!("no Python with websocket-client among {candidates:?}: apt install python3-websocket chromium (bash .ci/run does)")
        })
}

/// The page is served from the binary to anyone (the token is asked for by the page), as
/// HTML, and loads nothing from elsewhere.
#[test]
fn the_dashboard_page_is_served_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        "api:\n  listen: 127.0.0.1:0\n  token: dash-token\n",
    );
    let reprow = Reprow::start(&cfg);
    let page = Api::new(reprow.api_addr()).get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("<html") && html.contains("</html>"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not load anything from elsewhere"
    );
    assert!(reprow.stop().0.success());
}

#[test]
#[ignore = "needs chromium and python3-websocket: run by .ci/run"]
fn the_dashboard_follows_jobs_and_retries_a_failed_one_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    let flag = fixed.clone();
    let worker = Worker::start(move |r, _| {
        let body = r.body_str();
        if body.contains("bad") && !flag.exists() {
            Reply::Status(422, vec![], b"the worker refused this one".to_vec())
        } else if body.contains("slow") {
            Reply::After(Duration::from_secs(4), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    let cfg = durable_config(
        dir.path(),
        &format!(
            "api:\n  listen: 127.0.0.1:0\n  token: dash-token\nqueues:\n  dash:\n    url: {}\n    max_workers: 4\nroutings:\n  dash: dash\nworkers:\n  \"http://{}\": {{max_concurrency: 4, rate: 50}}\n",
            worker.url(),
            worker.addr
        ),
    );
    let reprow = Reprow::start(&cfg);
    let base = format!("http://{}", reprow.api_addr());
    // The page itself needs no token.
    let page = Api::new(reprow.api_addr()).get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "the page must not load anything from elsewhere"
    );

    let shot = std::env::var("REPROW_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("dashboard.png"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/dashboard_check.py"
    );
    let out = Command::new(python_with_websocket())
        .args([script, &base, "dash-token"])
        .arg(&fixed)
        .arg(&shot)
        .output()
        .expect("run the dashboard driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("dashboard ok"),
        "dashboard check failed:\n{stdout}\n{}\nreprow log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        reprow.log()
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
    assert!(reprow.stop().0.success());
}
