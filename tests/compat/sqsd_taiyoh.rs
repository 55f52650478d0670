//! taiyoh/sqsd's behaviour from its README (the `.env` of `sqsd -e .env`), `invoker.go` and
//! `invoker_test.go` (a status below 500 deletes; 500 and a timeout keep the message, which
//! comes back after its visibility timeout), `cmd/sqsd/main.go` and `cmd/sqsd/main_test.go`
//! (the variables, `AWS_REGION` defaulting to ap-northeast-1, godotenv's `.env` rules), and
//! `system_test.go` (a cancelled system stops at once). reprow runs from the same `.env`.

use std::time::Duration;

use super::checks::Checks;
use super::sqsd_support::*;
use crate::common::{sqs::*, Reply, Worker};

/// Answers by the body: `s<status>` that status; `sleep` 3 s, then 200.
fn invoker_test_worker() -> Worker {
    Worker::start(|r, _| {
        let b = r.body_str();
        if b.contains("sleep") {
            return Reply::After(Duration::from_secs(3), Box::new(Reply::ok()));
        }
        let status = b
            .split('"')
            .find_map(|p| p.strip_prefix('s').and_then(|s| s.parse::<u16>().ok()))
            .unwrap_or(200);
        Reply::status(status)
    })
}

#[test]
fn taiyoh_sqsd_readme_invoker_and_main() {
    let sqs = Sqs::new();
    let mut c = Checks::new("taiyoh/sqsd");

    // invoker_test.go's cases through the README's .env (with godotenv's inline comments).
    let url = sqs.queue(&[]);
    let worker = invoker_test_worker();
    for tag in ["s200", "s400", "s500", "sleep"] {
        sqs.send(&url, &[format!(r#"{{"m":"{tag}"}}"#)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let reprow = start_env(
        dir.path(),
        &format!(
            "# sqsd settings\nINVOKER_URL={w} # the worker\nQUEUE_URL={url}\nINVOKER_TIMEOUT=1s # as invoker_test's 300ms, rounded\n# UNLOCK_INTERVAL=1m # default\nINVOKER_PARALLEL_COUNT=4 # four at once\nMONITORING_PORT=0\nSQS_ENDPOINT_URL=\"{ep}\" # moto\n",
            w = worker.url(),
            ep = endpoint()
        ),
        &[],
    );
    let got = received_until(&worker, Duration::from_secs(10), |g| g.len() >= 4);
    c.ok(
        "README: `sqsd -e .env` with inline comments starts and delivers",
        got.len() >= 4,
        reprow.log(),
    );
    std::thread::sleep(Duration::from_secs(4));
    let got = worker.received();
    c.eq(
        "invoker_test 200: delivered once",
        of(&got, "s200").len(),
        1,
    );
    c.eq(
        "invoker_test 400: delivered once",
        of(&got, "s400").len(),
        1,
    );
    c.eq(
        "invoker_test 500: not delivered again before its visibility timeout",
        of(&got, "s500").len(),
        1,
    );
    c.eq(
        "invoker_test timeout: not delivered again before its visibility timeout",
        of(&got, "sleep").len(),
        1,
    );
    c.eq(
        "invoker.go: 200 and 400 deleted, 500 and the timeout kept",
        sqs.depth(&url),
        (0, 2),
    );
    c.ok(
        "invoker.go: Content-Type application/json",
        got.iter()
            .all(|r| r.header("Content-Type") == Some("application/json")),
        got.iter()
            .map(|r| r.header("Content-Type"))
            .collect::<Vec<_>>(),
    );
    drop(reprow);

    // system_test.go: a cancelled system returns at once, long poll or not (20 s here).
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut reprow = start_env(
        dir.path(),
        &format!(
            "INVOKER_URL={}\nQUEUE_URL={url}\nMONITORING_PORT=0\nSQS_ENDPOINT_URL={}\n",
            worker.url(),
            endpoint()
        ),
        &[],
    );
    // Running and idle: its monitoring port answers, no message to fetch.
    let api = crate::common::Api::new(reprow.monitor_addr());
    api.wait_json("/status", |v| v["phase"] == "running");
    std::thread::sleep(Duration::from_millis(1500));
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = exited_within(&mut reprow, Duration::from_secs(5));
    c.ok(
        "system_test: SIGTERM stops an idle sqsd within seconds",
        exit.is_some_and(|s| s.success()),
        exit,
    );

    // gateway.go + consumer.go: a 500 is left alone and comes back after the visibility
    // timeout of the receive.
    let url = sqs.queue(&[]);
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    sqs.send(&url, &[r#"{"m":"again"}"#.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let reprow = start_config(
        dir.path(),
        &url,
        &worker,
        "  delete_on: below_500\n  visibility_timeout: 3\n",
        "",
    );
    let got = received_until(&worker, Duration::from_secs(12), |g| g.len() >= 2);
    let g = (got.len() == 2).then(|| got[1].at.duration_since(got[0].at));
    c.ok(
        "consumer.go: a 500 comes back after the visibility timeout (3 s)",
        g.is_some_and(|g| g >= Duration::from_millis(2700) && g < Duration::from_secs(9)),
        g,
    );
    drop(reprow);

    // main_test.go TestConfigWithoutRedisLocker / TestConfigWithRedisLocker: INVOKER_URL and
    // QUEUE_URL suffice; an incomplete set of REDIS_LOCKER_* variables is no error.
    let url = sqs.queue(&[]);
    let worker = Worker::start(|_, _| Reply::ok());
    sqs.send(&url, &[r#"{"m":"min"}"#.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "INVOKER_URL={}\nQUEUE_URL={url}\nSQS_ENDPOINT_URL={}\nMONITORING_PORT=0\nREDIS_LOCKER_HOST=localhost:6739\n",
        worker.url(),
        endpoint()
    );
    let reprow = start_env(dir.path(), &env, &[]);
    let got = received_until(&worker, Duration::from_secs(10), |g| !g.is_empty());
    c.eq("main_test: INVOKER_URL and QUEUE_URL suffice", got.len(), 1);
    drop(reprow);

    // main.go: typedenv.RequiredDirect("QUEUE_URL"): its absence is an error naming it.
    let dir = tempfile::tempdir().unwrap();
    let mut reprow = start_env(dir.path(), &format!("INVOKER_URL={}\n", worker.url()), &[]);
    let exit = exited_within(&mut reprow, Duration::from_secs(10));
    c.ok(
        "main.go: QUEUE_URL is required",
        exit.is_some_and(|s| !s.success()) && reprow.log().contains("QUEUE_URL"),
        reprow.log(),
    );

    // main.go: AWS_REGION defaults to ap-northeast-1.
    let tokyo = Sqs::new_in("ap-northeast-1");
    let url = tokyo.queue(&[]);
    tokyo.send(&url, &[r#"{"m":"tokyo"}"#.to_string()]);
    let worker = Worker::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "INVOKER_URL={}\nQUEUE_URL={url}\nSQS_ENDPOINT_URL={}\nMONITORING_PORT=0\n",
        worker.url(),
        endpoint()
    );
    let reprow = start_env(dir.path(), &env, &["AWS_REGION", "AWS_DEFAULT_REGION"]);
    let got = received_until(&worker, Duration::from_secs(10), |g| !g.is_empty());
    c.eq("main.go: AWS_REGION unset is ap-northeast-1", got.len(), 1);
    drop(reprow);

    // main.go loadEnvFromFile: godotenv.Load never overrides a variable already set.
    let url = sqs.queue(&[]);
    sqs.send(&url, &[r#"{"m":"env"}"#.to_string()]);
    let good = Worker::start(|_, _| Reply::ok());
    let bad = Worker::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "INVOKER_URL={}\nQUEUE_URL={url}\nSQS_ENDPOINT_URL={}\nMONITORING_PORT=0\n",
            bad.url(),
            endpoint()
        ),
    )
    .unwrap();
    let reprow = spawn(
        dir.path(),
        &["-e", ".env"],
        &[],
        &[("INVOKER_URL", &good.url())],
    );
    let got = received_until(&good, Duration::from_secs(10), |g| !g.is_empty());
    c.ok(
        "godotenv.Load: the environment wins over the .env file",
        got.len() == 1 && bad.received().is_empty(),
        (got.len(), bad.received().len()),
    );
    drop(reprow);
    c.finish();
}
