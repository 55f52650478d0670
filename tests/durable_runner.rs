//! `runner:` keys act on the durable queue. Before the one pipeline they were accepted,
//! validated and ignored there: `timeout`, `max_retries`, `default_retry_after`,
//! `backoff_base`/`backoff_max`, `concurrency` and `user_agent`. Each test below fails on
//! that code (the store used a 30 s timeout, 10 retries, a 1 s–5 min backoff, no cap over
//! its queues, and `reprow/<version>` as the user agent).

mod common;

use std::time::{Duration, Instant};

use common::{start_durable, Reply, Worker};

fn runner(url: &str, extra: &str) -> String {
    format!("runner:\n  type: http_proxy\n  url: {url}\n{extra}")
}

/// `runner.timeout` and `runner.max_retries` define the default queue: a worker slower than
/// the timeout fails the job after `max_retries + 1` attempts, each cut at the timeout.
#[test]
fn runner_timeout_and_max_retries_act_on_the_default_queue() {
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(4), Box::new(Reply::ok())));
    let (_d, _r, api) = start_durable(&runner(
        &worker.url(),
        "  timeout: 1s\n  max_retries: 1\n  default_retry_after: 0\n",
    ));
    assert_eq!(api.post("/job/x", r#"{"payload":{}}"#).status, 200);
    let failed = api.wait_json("/queue/default/failed", |v| {
        v["failed_jobs"].as_array().is_some_and(|a| a.len() == 1)
    });
    let entry = &failed["failed_jobs"][0];
    assert_eq!(entry["fail_count"], 2, "first try + 1 retry: {entry}");
    let message = entry["result"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer within 1s"), "{message}");
    assert_eq!(worker.received().len(), 2);
}

/// `runner.backoff_base` sets the first backoff step of every durable queue: with 200 s, the
/// first retry is at least 100 s away (equal jitter: half the step is fixed).
#[test]
fn runner_backoff_base_acts_on_durable_queues() {
    let worker = Worker::start(|_, _| Reply::status(500));
    let (_d, _r, api) = start_durable(&runner(
        &worker.url(),
        "  backoff_base: 200s\n  backoff_max: 400s\n",
    ));
    let before = std::time::SystemTime::now();
    assert_eq!(api.post("/job/x", r#"{"payload":{}}"#).status, 200);
    worker.wait_for(1);
    let deferred = api.wait_json("/queue/default/deferred", |v| {
        v["jobs"].as_array().is_some_and(|a| a.len() == 1)
    });
    let next = deferred["jobs"][0]["next_try"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(|| panic!("no next_try in {deferred}"));
    let ahead = next.duration_since(before).unwrap_or_default();
    assert!(
        ahead >= Duration::from_secs(100),
        "retry in {ahead:?}; backoff_base 200s gives at least 100s"
    );
}

/// `runner.concurrency` caps the pushed jobs in flight over all queues: two queues of 20
/// `max_workers` each and a cap of 2 never have three requests at the worker at once.
#[test]
fn runner_concurrency_caps_pushed_jobs_over_all_queues() {
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(600), Box::new(Reply::ok())));
    let url = worker.url();
    let (_d, _r, api) = start_durable(&format!(
        "{}queues:\n  a:\n    url: {url}\n  b:\n    url: {url}\nroutings:\n  a: a\n  b: b\n",
        runner(&url, "  concurrency: 2\n")
    ));
    for i in 0..6 {
        let cat = if i % 2 == 0 { "a" } else { "b" };
        assert_eq!(
            api.post(&format!("/job/{cat}"), r#"{"payload":{}}"#).status,
            200
        );
    }
    let got = worker.wait_for(6);
    // Requests arrive in waves of at most two, 600 ms apart: no three within 300 ms.
    let mut at: Vec<Instant> = got.iter().map(|r| r.at).collect();
    at.sort();
    for w in at.windows(3) {
        assert!(
            w[2].duration_since(w[0]) >= Duration::from_millis(300),
            "three requests within {:?}: the cap of 2 was not held",
            w[2].duration_since(w[0])
        );
    }
}

/// `runner.user_agent` reaches durable workers.
#[test]
fn runner_user_agent_reaches_durable_workers() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start_durable(&runner(&worker.url(), "  user_agent: my-agent/7\n"));
    assert_eq!(api.post("/job/x", r#"{"payload":{}}"#).status, 200);
    let got = worker.wait_for(1);
    assert_eq!(got[0].header("User-Agent"), Some("my-agent/7"));
}
