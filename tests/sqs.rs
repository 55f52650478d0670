//! The SQS source against a real SQS-compatible server: moto's server
//! (`REPROW_TEST_SQS_ENDPOINT`, default `http://127.0.0.1:5100`; `.ci/run` installs and starts
//! it). Each test uses queues of its own.
#![cfg(feature = "sqs")]

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aws_sdk_sqs::types::QueueAttributeName;
use common::sqs::*;
use common::*;

fn start(
    dir: &std::path::Path,
    url: &str,
    worker: &Worker,
    queue_extra: &str,
    runner_extra: &str,
) -> Reprow {
    let text = format!(
        "queue:\n  type: sqs\n  url: {url}\n  endpoint_url: {ep}\n  region: us-east-1\n  wait_time: 1\n  failed_path: {failed}\n{queue_extra}runner:\n  type: http_proxy\n  url: {w}\n  backoff_base: 20ms\n  backoff_max: 100ms\n{runner_extra}shutdown_timeout: 2s\n",
        ep = endpoint(),
        failed = dir.join("failed.jsonl").display(),
        w = worker.url(),
    );
    let cfg: PathBuf = dir.join("reprow.yaml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.join("reprow.log");
    let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .envs(CREDENTIALS)
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Reprow::adopt(child, log)
}

fn bodies(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"{tag}":{i}}}"#)).collect()
}

#[test]
fn done_messages_are_deleted_in_batches() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    sqs.send(&url, &bodies(25, "n"));
    let reprow = start(dir.path(), &url, &worker, "", "  concurrency: 8\n");
    let got = worker.wait_for(25);
    sqs.wait_depth(&url, (0, 0));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *seen.entry(r.body_str()).or_default() += 1;
        assert!(r.header("X-Reprow-Sqs-Message-Id").is_some());
        assert_eq!(r.attempt(), 1);
        // reprow's own SQS mode names reprow; only sqsd mode says `aws-sqsd/1.1`.
        let ua = format!("reprow/{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(r.header("User-Agent"), Some(ua.as_str()));
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 25);
    // Batches both ways, as the server counted them back: 25 deletions in fewer requests, 25
    // messages in fewer receives that brought any.
    let n = |k: &str| stats[k].as_u64().unwrap();
    assert_eq!(n("sqs_deleted"), 25, "{stats}");
    assert!(n("sqs_delete_requests") < 25, "{stats}");
    assert!(
        n("sqs_receive_requests") - n("sqs_empty_receives") < 25,
        "{stats}"
    );
}

#[test]
fn a_retry_after_makes_the_same_message_visible_again_after_that_delay() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::Status(500, vec![("Retry-After", "2".into())], b"later".to_vec())
        } else {
            Reply::ok()
        }
    });
    sqs.send(&url, &bodies(1, "r"));
    let reprow = start(dir.path(), &url, &worker, "", "");
    let got = worker.wait_for(2);
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert_eq!(
        got[1].attempt(),
        2,
        "SQS's receive count carries the attempt"
    );
    assert_eq!(
        got[0].header("X-Reprow-Sqs-Message-Id"),
        got[1].header("X-Reprow-Sqs-Message-Id")
    );
    sqs.wait_depth(&url, (0, 0));
    assert!(reprow.stop().0.success());
}

#[test]
fn failing_messages_reach_the_dead_letter_queue_by_the_redrive_policy() {
    let sqs = Sqs::new();
    let dlq = sqs.queue(&[]);
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#,
        sqs.arn(&dlq)
    );
    let url = sqs.queue(&[(QueueAttributeName::RedrivePolicy, policy)]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::status(500));
    sqs.send(&url, &bodies(1, "poison"));
    // max_retries 1: the second delivery fails for good and is left to the redrive policy,
    // visible again when its visibility timeout (2 s here) ends, not at once.
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        "  visibility_timeout: 2\n",
        "  max_retries: 1\n",
    );
    worker.wait_for(2);
    let deadline = Instant::now() + DEADLINE;
    let moved = loop {
        let b = sqs.receive_bodies(&dlq);
        if !b.is_empty() {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "nothing in the dead-letter queue"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(moved, [r#"{"poison":0}"#]);
    assert_eq!(
        worker.received().len(),
        2,
        "moto redrives on the third receive"
    );
    assert!(reprow.stop().0.success());
}

#[test]
fn the_heartbeat_keeps_a_long_job_invisible() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Visibility 2 s, the job takes 5 s: without the heartbeat it would be received again.
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(5), Box::new(Reply::ok())));
    sqs.send(&url, &bodies(1, "long"));
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        "  visibility_timeout: 2\n",
        "  timeout: 10s\n",
    );
    worker.wait_for(1);
    sqs.wait_depth(&url, (0, 0));
    assert_eq!(worker.received().len(), 1);
    assert!(reprow.stop().0.success());
}

#[test]
fn a_config_without_heartbeat_may_not_outlive_the_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let mut reprow = start(
        dir.path(),
        "http://127.0.0.1:1/123/q",
        &worker,
        "  visibility_timeout: 5\n  heartbeat: false\n",
        "  timeout: 10s\n",
    );
    assert!(!reprow.wait().success());
    assert!(
        reprow
            .log()
            .contains("must be shorter than the visibility timeout"),
        "{}",
        reprow.log()
    );
}

#[test]
fn without_heartbeat_the_queues_own_visibility_timeout_is_checked_at_start() {
    let sqs = Sqs::new();
    // No visibility_timeout in the config: the queue's 5 s is read at start.
    let url = sqs.queue(&[(QueueAttributeName::VisibilityTimeout, "5".into())]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let mut reprow = start(
        dir.path(),
        &url,
        &worker,
        "  heartbeat: false\n",
        "  timeout: 10s\n",
    );
    assert!(!reprow.wait().success());
    assert!(
        reprow.log().contains(
            "the queue's visibility timeout (5s) is not longer than runner.timeout (10s)"
        ),
        "{}",
        reprow.log()
    );
    // Below it, the same config runs.
    let mut ok = start(
        dir.path(),
        &url,
        &worker,
        "  heartbeat: false\n",
        "  timeout: 4s\n",
    );
    sqs.send(&url, &bodies(1, "v"));
    worker.wait_for(1);
    assert!(ok.child.try_wait().unwrap().is_none());
    assert!(ok.stop().0.success());
}

#[test]
fn shutdown_makes_unstarted_messages_visible_at_once() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(30), Box::new(Reply::ok())));
    sqs.send(&url, &bodies(5, "s"));
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        "  visibility_timeout: 600\n  buffer: 4\n",
        "  concurrency: 1\n",
    );
    worker.wait_for(1);
    // One in flight, four held for the core: all received, none visible.
    sqs.wait_depth(&url, (0, 5));
    assert!(reprow.stop().0.success());
    // Back at once, not after the 600 s visibility timeout.
    sqs.wait_depth(&url, (5, 0));
}

#[test]
fn on_failure_delete_records_the_message_and_deletes_it() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::Status(422, vec![], b"never".to_vec()));
    sqs.send(&url, &bodies(1, "bad"));
    let reprow = start(dir.path(), &url, &worker, "  on_failure: delete\n", "");
    worker.wait_for(1);
    sqs.wait_depth(&url, (0, 0));
    let failed = std::fs::read_to_string(dir.path().join("failed.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(failed.lines().next().unwrap()).unwrap();
    assert_eq!(rec["payload"], r#"{"bad":0}"#);
    assert_eq!(rec["last_status"], 422);
    assert!(reprow.stop().0.success());
}

#[test]
fn sqsd_environment_mode_end_to_end() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let attr = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("red")
        .build()
        .unwrap();
    sqs.rt
        .block_on(
            sqs.client
                .send_message()
                .queue_url(&url)
                .message_body(r#"{"task":"resize"}"#)
                .message_attributes("color", attr)
                .send(),
        )
        .unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    // sqsd's own .env, read with -e; no config file. MONITORING_PORT=0: reprow binds a port
    // of its own and logs it ("Monitoring listening.").
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!(
            "INVOKER_URL={}\nQUEUE_URL={url}\nINVOKER_TIMEOUT=30s\nFETCHER_PARALLEL_COUNT=2\nINVOKER_PARALLEL_COUNT=2\nMONITORING_PORT=0\nLOG_LEVEL=info\nSQS_ENDPOINT_URL={}\nAWS_REGION=us-east-1\n",
            worker.url(),
            endpoint()
        ),
    )
    .unwrap();
    let log = dir.path().join("reprow.log");
    let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .envs(CREDENTIALS)
        .env_remove("INVOKER_URL")
        .env_remove("QUEUE_URL")
        .arg("-e")
        .arg(&env_file)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reprow = Reprow::adopt(child, log);
    let got = worker.wait_for(1);
    let r = &got[0];
    assert_eq!(r.body_str(), r#"{"task":"resize"}"#);
    assert_eq!(r.header("User-Agent"), Some("aws-sqsd/1.1"));
    assert!(r.header("X-Aws-Sqsd-Msgid").is_some_and(|v| !v.is_empty()));
    let name = url.rsplit('/').next().unwrap();
    assert_eq!(r.header("X-Aws-Sqsd-Queue"), Some(name));
    assert_eq!(r.header("X-Aws-Sqsd-Receive-Count"), Some("1"));
    assert_eq!(r.header("X-Aws-Sqsd-Attr-color"), Some("red"));
    assert!(
        r.header("X-Aws-Sqsd-Sent-At")
            .is_some_and(|v| v.ends_with('Z')),
        "{:?}",
        r.headers
    );
    assert!(r.header("X-Aws-Sqsd-Path").is_none());
    assert!(
        r.header("X-Aws-Sqsd-First-Received-At")
            .is_some_and(|v| v.ends_with('Z')),
        "{:?}",
        r.headers
    );
    sqs.wait_depth(&url, (0, 0));
    // The monitoring port serves reprow's stats.
    let api = Api::new(reprow.monitor_addr());
    let status = api.wait_json("/status", |v| v["counters"]["succeeded"] == 1);
    assert_eq!(status["phase"], "running");
    assert_eq!(api.get("/healthz").status, 200);
    // Shutdown abandons the long polls in progress (20 s in sqsd mode): reprow stops in
    // seconds.
    let mut reprow = reprow;
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = reprow.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "reprow did not exit:\n{}",
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", reprow.log());
    sqs.wait_depth(&url, (0, 0));
}

#[test]
fn reprow_bench_drains_an_sqs_queue_and_compares_a_plain_consumer() {
    let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .envs(CREDENTIALS)
        .args([
            "bench",
            "--source",
            "sqs",
            "--jobs",
            "40",
            "--compare-plain",
            "--timeout",
            "60s",
            // One ReceiveMessage in flight: moto's receive is not atomic (two concurrent
            // requests can both take a visible message), which showed as 1 duplicate in 40 in
            // about one run of four; reprow's own duplicates are what this test counts.
            "--fetchers",
            "1",
        ])
        .arg("--sqs-endpoint")
        .arg(endpoint())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("checked     40 done, 0 lost, 0 duplicates"),
        "{text}"
    );
    assert!(
        text.contains("plain single-loop consumer (receive, POST, delete):"),
        "{text}"
    );
    assert!(text.contains("40 done, 0 lost, 0 duplicates"), "{text}");
}

/// A string message attribute.
fn string_attr(v: &str) -> aws_sdk_sqs::types::MessageAttributeValue {
    aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .unwrap()
}

#[test]
fn periodic_tasks_from_cron_yaml_are_enqueued_and_posted_to_their_path() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    // Every two seconds (the optional seconds field), and one that will not come round.
    let cron = dir.path().join("cron.yaml");
    std::fs::write(
        &cron,
        "version: 1\ncron:\n - name: \"tick task\"\n   url: \"/tasks/tick?x=1\"\n   schedule: \"*/2 * * * * *\"\n - name: yearly\n   url: /yearly\n   schedule: \"0 0 1 1 *\"\n",
    )
    .unwrap();
    // An ordinary message, one routed by EB's path attribute, one with a path that could split
    // the request line.
    sqs.send(&url, &[r#"{"plain":1}"#.to_string()]);
    for (body, path) in [("routed", "/custom/route"), ("bad", "no-slash here")] {
        sqs.rt
            .block_on(
                sqs.client
                    .send_message()
                    .queue_url(&url)
                    .message_body(body)
                    .message_attributes("beanstalk.sqsd.path", string_attr(path))
                    .send(),
            )
            .unwrap();
    }
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        &format!("  on_failure: delete\n  cron: {}\n", cron.display()),
        "",
    );
    // The plain and the routed message, then at least three ticks.
    let deadline = Instant::now() + DEADLINE;
    let got = loop {
        let got = worker.received();
        if got.iter().filter(|r| r.path.starts_with("/tasks/")).count() >= 3 {
            break got;
        }
        assert!(Instant::now() < deadline, "{got:?}\n{}", reprow.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let plain = got
        .iter()
        .find(|r| r.body_str() == r#"{"plain":1}"#)
        .unwrap();
    assert_eq!(plain.path, "/work");
    assert!(plain.header("X-Aws-Sqsd-Taskname").is_none());
    let routed = got.iter().find(|r| r.body_str() == "routed").unwrap();
    assert_eq!(routed.path, "/custom/route");
    assert!(
        got.iter().all(|r| r.body_str() != "bad"),
        "a path that is not a request path is never sent"
    );
    let ticks: Vec<&Received> = got
        .iter()
        .filter(|r| r.path.starts_with("/tasks/"))
        .collect();
    let mut times = Vec::new();
    for t in &ticks {
        assert_eq!(t.path, "/tasks/tick?x=1");
        assert!(t.body.is_empty(), "a task is an empty POST");
        assert_eq!(t.header("X-Aws-Sqsd-Taskname"), Some("tick task"));
        let at = t.header("X-Aws-Sqsd-Scheduled-At").unwrap().to_string();
        // ISO 8601 UTC on an even second, as the schedule says.
        assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
        let secs: u32 = at[17..19].parse().unwrap();
        assert_eq!(secs % 2, 0, "{at}");
        times.push(at);
    }
    let mut distinct = times.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        times.len(),
        "each occurrence once: {times:?}"
    );
    assert!(!got.iter().any(|r| r.path == "/yearly"));
    // The refused message was recorded and deleted, as on_failure: delete says.
    sqs.wait_depth(&url, (0, 0));
    let failed = std::fs::read_to_string(dir.path().join("failed.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(failed.lines().next().unwrap()).unwrap();
    assert_eq!(rec["payload"], "bad");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .contains("beanstalk.sqsd.path"),
        "{rec}"
    );
    assert!(reprow.log().contains("Periodic task enqueued"));
    assert!(reprow.stop().0.success());
}

#[test]
fn on_a_fifo_queue_every_reprow_may_schedule_and_each_occurrence_runs_once() {
    let sqs = Sqs::new();
    let name = format!("reprow-{}-cron.fifo", std::process::id());
    let url = sqs
        .rt
        .block_on(
            sqs.client
                .create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send(),
        )
        .unwrap()
        .queue_url
        .unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut both = Vec::new();
    for dir in [&a, &b] {
        let cron = dir.path().join("cron.yaml");
        std::fs::write(
            &cron,
            "cron:\n - {name: every second, url: /tick, schedule: '* * * * * *'}\n",
        )
        .unwrap();
        both.push(start(
            dir.path(),
            &url,
            &worker,
            &format!("  cron: {}\n", cron.display()),
            "",
        ));
    }
    // Both reprows send every occurrence; the queue keeps one of each.
    let deadline = Instant::now() + DEADLINE;
    let mut ticks = loop {
        let ticks: Vec<String> = worker
            .received()
            .iter()
            .filter_map(|r| r.header("X-Aws-Sqsd-Scheduled-At").map(str::to_string))
            .collect();
        if ticks.len() >= 4 {
            break ticks;
        }
        assert!(Instant::now() < deadline, "{ticks:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in both {
        let log = r.log();
        assert!(log.contains("Periodic task enqueued"), "{log}");
        assert!(r.stop().0.success());
    }
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "an occurrence ran twice");
}

#[test]
fn every_reprow_routes_elastic_beanstalk_tasks_and_paces_refused_messages() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    // A task as Elastic Beanstalk's leader sends it, received by a reprow without `cron`.
    let send = |body: &str, attrs: &[(&str, &str)]| {
        let mut req = sqs.client.send_message().queue_url(&url).message_body(body);
        for (k, v) in attrs {
            req = req.message_attributes(*k, string_attr(v));
        }
        sqs.rt.block_on(req.send()).unwrap();
    };
    send(
        "elasticbeanstalk scheduled job",
        &[
            ("beanstalk.sqsd.path", "/scheduled"),
            ("beanstalk.sqsd.task_name", "nightly"),
            ("beanstalk.sqsd.scheduled_time", "2026-11-23 17:05:00 UTC"),
        ],
    );
    send("split", &[("beanstalk.sqsd.path", "/a b")]);
    // on_failure: leave (the default), visibility 3 s.
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        "  visibility_timeout: 3\n  heartbeat: false\n",
        "  timeout: 2s\n",
    );
    let got = worker.wait_for(1);
    assert_eq!(got[0].path, "/scheduled");
    assert!(got[0].body.is_empty());
    assert_eq!(got[0].header("X-Aws-Sqsd-Taskname"), Some("nightly"));
    assert_eq!(
        got[0].header("X-Aws-Sqsd-Scheduled-At"),
        Some("2026-11-23T17:05:00Z")
    );
    // The refused message is not handed straight back (it would be refused again at once,
    // without end): it waits out its visibility timeout, so its receive count climbs to a
    // redrive policy at that pace.
    let refusals = |r: &Reprow| r.log().matches("SQS message refused").count();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(refusals(&reprow), 1, "{}", reprow.log());
    assert_eq!(sqs.depth(&url), (0, 1));
    let deadline = Instant::now() + DEADLINE;
    while refusals(&reprow) < 2 {
        assert!(Instant::now() < deadline, "{}", reprow.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(worker.received().len(), 1, "never sent to the worker");
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert!(stats["failed"].as_u64().unwrap() >= 2, "{stats}");
}

#[test]
fn reprows_keys_that_reprow_does_not_use_are_named_at_start() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    sqs.send(&url, &bodies(1, "k"));
    let reprow = start(
        dir.path(),
        &url,
        &worker,
        "  access_key_id: AAAAAAAAAAAAAA\n  secret_access_key: BBBBBBBBBB\n  buffer_timeout: 2s\n  max_concurrency: 2\n",
        "",
    );
    worker.wait_for(1);
    let log = reprow.log();
    assert!(log.contains("queue.buffer_timeout is not used"), "{log}");
    assert!(
        log.contains("access_key_id / secret_access_key are ignored"),
        "{log}"
    );
    assert!(!log.contains("BBBBBBBBBB"), "the secret is never logged");
    assert!(reprow.stop().0.success());
}

/// `workers:` applies to the SQS source too: messages go at the origin's rate, each as
/// attempt 1 (a message waiting for its turn stays invisible and costs no receive count of
/// its own beyond the first).
#[test]
fn the_workers_rate_spaces_the_messages() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    sqs.send(&url, &bodies(10, "n"));
    let runner_extra = format!(
        "  concurrency: 4\nworkers:\n  \"http://{}\": {{rate: 5, burst: 1}}\n",
        worker.addr
    );
    let reprow = start(dir.path(), &url, &worker, "", &runner_extra);
    let got = worker.wait_for(10);
    sqs.wait_depth(&url, (0, 0));
    let first = got.iter().map(|r| r.at).min().unwrap();
    let last = got.iter().map(|r| r.at).max().unwrap();
    // 10 at 5/s, no burst: 9 gaps of 200 ms.
    assert!(
        last - first >= Duration::from_millis(1700),
        "10 messages in {:?} at 5/s",
        last - first
    );
    assert!(got.iter().all(|r| r.attempt() == 1));
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 10);
}

/// W3C Trace Context in message attributes: `traceparent` and `tracestate` are sent on as
/// headers, each attempt (a receive again after a 503) with the same trace id and a new parent.
#[test]
fn trace_context_attributes_reach_the_worker_with_a_new_parent_per_attempt() {
    let sqs = Sqs::new();
    let url = sqs.queue(&[]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sqs.rt
        .block_on(
            sqs.client
                .send_message()
                .queue_url(&url)
                .message_body("traced")
                .message_attributes("traceparent", string_attr(parent))
                .message_attributes("tracestate", string_attr("congo=t61rcWkgMzE"))
                .send(),
        )
        .unwrap();
    let reprow = start(dir.path(), &url, &worker, "", "");
    let got = worker.wait_for(2);
    let mut parents = vec!["00f067aa0ba902b7".to_string()];
    for g in &got {
        let tp = g.header("traceparent").expect("no traceparent");
        let f: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            (f[0], f[1], f[3]),
            ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
        );
        assert!(!parents.contains(&f[2].to_string()), "parent reused: {tp}");
        parents.push(f[2].to_string());
        assert_eq!(g.header("tracestate"), Some("congo=t61rcWkgMzE"));
    }
    assert!(reprow.stop().0.success());
}
