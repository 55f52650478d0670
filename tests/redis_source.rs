//! The Redis Streams source against a real Redis server: each test starts its own
//! `redis-server` on a free loopback port (append-only file on, fsync always, so a restarted
//! server keeps its streams), writes entries with `XADD` as a producer would, and looks at the
//! stream, the group's pending list, the delayed set and the failed stream afterwards.
//!
//! Needs `redis-server` (Debian's package; `REPROW_TEST_REDIS_SERVER` names another binary).
//! Run with `cargo test --features redis --test redis_source`.
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use redis::Commands as _;

/// A private Redis server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server::on_port(dir, port)
    }

    fn on_port(dir: &Path, port: u16) -> Server {
        let bin =
            std::env::var("REPROW_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): apt-get install redis-server, or set REPROW_TEST_REDIS_SERVER")
            });
        let s = Server {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + DEADLINE;
        while s.try_conn().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to the test redis")
    }

    /// Stops the server (SIGTERM: the append-only file is complete) and starts it again on
    /// the same port with the same files.
    fn restart(mut self) -> Server {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let _ = self.child.wait();
        let (dir, port) = (self.dir.clone(), self.port);
        drop(self);
        Server::on_port(&dir, port)
    }

    fn add(&self, stream: &str, payload: &str) -> String {
        self.conn()
            .xadd(stream, "*", &[("payload", payload)])
            .unwrap()
    }

    /// Entries of the group not yet acknowledged.
    fn pending(&self, stream: &str) -> usize {
        // Before reprow made the group, nothing is pending.
        let Ok(reply) = redis::cmd("XPENDING")
            .arg(stream)
            .arg("reprow")
            .query::<redis::Value>(&mut self.conn())
        else {
            return 0;
        };
        match reply {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(n)) => *n as usize,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Every entry of a stream, as field → value maps.
    fn entries(&self, stream: &str) -> Vec<BTreeMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = self.conn().xrange_all(stream).unwrap();
        reply
            .ids
            .into_iter()
            .map(|id| {
                id.map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(&v).unwrap()))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// reprow's config for `stream` on `server`, posting to `url`.
fn config(
    scene: &Scene,
    server: &Server,
    url: &str,
    queue_extra: &str,
    runner_extra: &str,
) -> PathBuf {
    let text = format!(
        "queue:\n  type: redis\n  url: {}\n  stream: jobs\n  lease: 5s\n{queue_extra}runner:\n  type: http_proxy\n  url: {url}\n  timeout: 2s\n  backoff_base: 20ms\n  backoff_max: 100ms\n{runner_extra}shutdown_timeout: 5s\nlog_format: json\n",
        server.url()
    );
    let path = scene.path("reprow.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn payloads(got: &[Received]) -> Vec<String> {
    got.iter().map(Received::body_str).collect()
}

#[test]
fn every_entry_is_delivered_and_acknowledged() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..50 {
        server.add("jobs", &format!("{{\"n\":{i}}}"));
    }
    let worker = Worker::start(|_, _| Reply::ok());
    let reprow = Reprow::start(&config(
        &scene,
        &server,
        &worker.url(),
        "",
        "  concurrency: 4\n",
    ));
    let got = worker.wait_for(50);
    let mut seen = payloads(&got);
    seen.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("{{\"n\":{i}}}")).collect();
    want.sort();
    assert_eq!(seen, want);
    let r = &got[0];
    assert_eq!(r.header("X-Reprow-Queue"), Some("jobs"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.attempt(), 1);
    wait_until("every entry acknowledged", || server.pending("jobs") == 0);
    // Acknowledged, not deleted (delete_acked is off).
    assert_eq!(server.entries("jobs").len(), 50);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 50);
}

#[test]
fn delete_acked_removes_entries_from_the_stream() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..5 {
        server.add("jobs", &i.to_string());
    }
    let worker = Worker::start(|_, _| Reply::ok());
    let reprow = Reprow::start(&config(
        &scene,
        &server,
        &worker.url(),
        "  delete_acked: true\n",
        "",
    ));
    worker.wait_for(5);
    wait_until("entries deleted", || server.entries("jobs").is_empty());
    assert_eq!(server.pending("jobs"), 0);
    reprow.stop();
}

#[test]
fn a_retry_waits_for_retry_after_in_redis_and_comes_back_once() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..5 {
        server.add("jobs", &format!("job{i}"));
    }
    let worker = Worker::start(|r, _| {
        if r.attempt() == 1 {
            Reply::Status(503, vec![("Retry-After", "1".into())], b"busy".to_vec())
        } else {
            Reply::ok()
        }
    });
    let reprow = Reprow::start(&config(&scene, &server, &worker.url(), "", ""));
    worker.wait_for(5);
    // While the delay runs, each job waits in the delayed set, not in the stream's pending
    // list: no slot is held.
    wait_until("retries in the delayed set", || {
        let n: usize = server.conn().zcard("jobs:delayed").unwrap();
        n == 5 && server.pending("jobs") == 0
    });
    let got = worker.wait_for(10);
    std::thread::sleep(Duration::from_millis(500));
    let got_after = worker.received();
    assert_eq!(
        got_after.len(),
        10,
        "no more than one retry each: {:?}",
        payloads(&got_after)
    );
    for i in 0..5 {
        let p = format!("job{i}");
        let tries: Vec<&Received> = got.iter().filter(|r| r.body_str() == p).collect();
        assert_eq!(tries.len(), 2, "{p}");
        assert_eq!(tries[1].attempt(), 2);
        let gap = tries[1].at - tries[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "{p} came back after {gap:?}, before its Retry-After"
        );
    }
    wait_until("all acknowledged", || server.pending("jobs") == 0);
    let n: usize = server.conn().zcard("jobs:delayed").unwrap();
    assert_eq!(n, 0);
    reprow.stop();
}

#[test]
fn exhausted_and_unreadable_entries_go_to_the_failed_stream() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    server.add("jobs", "doomed");
    let _: String = server
        .conn()
        .xadd("jobs", "*", &[("body", "no payload field")])
        .unwrap();
    let worker = Worker::start(|_, _| Reply::Status(500, vec![], b"boom".to_vec()));
    let reprow = Reprow::start(&config(
        &scene,
        &server,
        &worker.url(),
        "",
        "  max_retries: 1\n",
    ));
    wait_until("two failed entries", || {
        server.entries("jobs:failed").len() == 2
    });
    let failed = server.entries("jobs:failed");
    let doomed = failed
        .iter()
        .find(|f| f.get("payload").map(String::as_str) == Some("doomed"))
        .unwrap();
    assert_eq!(doomed["reprow_status"], "500");
    assert_eq!(doomed["reprow_attempts"], "2");
    assert!(
        doomed["reprow_message"].contains("retries exhausted"),
        "{doomed:?}"
    );
    let bad = failed.iter().find(|f| f.contains_key("body")).unwrap();
    assert!(
        bad["reprow_message"].contains("no field \"payload\""),
        "{bad:?}"
    );
    assert_eq!(bad["reprow_attempts"], "0");
    // The doomed job was tried twice, the unreadable one never.
    assert_eq!(worker.received().len(), 2);
    wait_until("nothing pending", || server.pending("jobs") == 0);
    let (_, stats) = reprow.stop();
    assert_eq!(stats["failed"], 2);
}

#[test]
fn never_more_entries_are_taken_than_slots_and_prefetch() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..30 {
        server.add("jobs", &i.to_string());
    }
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(100), Box::new(Reply::ok())));
    let reprow = Reprow::start(&config(
        &scene,
        &server,
        &worker.url(),
        "  prefetch: 1\n",
        "  concurrency: 2\n",
    ));
    let mut most = 0;
    let deadline = Instant::now() + DEADLINE;
    while worker.received().len() < 30 {
        most = most.max(server.pending("jobs"));
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(most >= 2, "never saw the slots used: {most}");
    assert!(
        most <= 3,
        "{most} entries taken with 2 slots and prefetch 1"
    );
    reprow.stop();
}

/// Killed with -9 mid-delivery: the same consumer re-reads its unfinished entries at its next
/// start; every entry is delivered at least once and all end acknowledged.
#[test]
fn kill_9_loses_nothing_and_a_restart_finishes_the_taken_entries() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..40 {
        server.add("jobs", &format!("k{i}"));
    }
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(50), Box::new(Reply::ok())));
    let cfg = config(&scene, &server, &worker.url(), "", "  concurrency: 4\n");
    let mut reprow = Reprow::start(&cfg);
    worker.wait_for(10);
    reprow.signal(nix::sys::signal::Signal::SIGKILL);
    reprow.wait();
    assert!(
        server.pending("jobs") > 0,
        "nothing was in flight at the kill"
    );
    let reprow = Reprow::start(&cfg);
    wait_until("every entry delivered", || {
        let mut seen = payloads(&worker.received());
        seen.sort();
        seen.dedup();
        seen.len() == 40
    });
    wait_until("all acknowledged", || server.pending("jobs") == 0);
    reprow.stop();
}

/// Another consumer claims what a killed one left, once the lease has passed.
#[test]
fn another_consumer_claims_abandoned_entries_after_the_lease() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..8 {
        server.add("jobs", &format!("a{i}"));
    }
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(300), Box::new(Reply::ok())));
    let first = config(
        &scene,
        &server,
        &worker.url(),
        "  consumer: one\n",
        "  concurrency: 2\n",
    );
    let text = std::fs::read_to_string(&first)
        .unwrap()
        .replace("lease: 5s", "lease: 3s");
    std::fs::write(&first, text).unwrap();
    let mut reprow = Reprow::start(&first);
    worker.wait_for(2);
    reprow.signal(nix::sys::signal::Signal::SIGKILL);
    reprow.wait();
    let left = server.pending("jobs");
    assert!(left > 0);
    let killed_at = Instant::now();
    std::fs::write(
        scene.path("two.yaml"),
        std::fs::read_to_string(&first)
            .unwrap()
            .replace("consumer: one", "consumer: two"),
    )
    .unwrap();
    let reprow = Reprow::start(&scene.path("two.yaml"));
    wait_until("every entry delivered", || {
        let mut seen = payloads(&worker.received());
        seen.sort();
        seen.dedup();
        seen.len() == 8
    });
    wait_until("all acknowledged", || server.pending("jobs") == 0);
    // The abandoned ones came only after the lease.
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "claimed before the lease"
    );
    reprow.stop();
}

#[test]
fn a_graceful_stop_hands_unfinished_entries_back_at_once() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..3 {
        server.add("jobs", &format!("slow{i}"));
    }
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(10), Box::new(Reply::ok())));
    let cfg = config(&scene, &server, &worker.url(), "", "  concurrency: 3\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("timeout: 2s", "timeout: 20s")
        .replace("lease: 5s", "lease: 30s")
        .replace("shutdown_timeout: 5s", "shutdown_timeout: 1s");
    std::fs::write(&cfg, text).unwrap();
    let reprow = Reprow::start(&cfg);
    worker.wait_for(3);
    let (status, _) = reprow.stop();
    assert!(status.success());
    assert_eq!(server.pending("jobs"), 0, "unfinished entries left pending");
    // Re-added: a new consumer reads them at once, long before any lease.
    let reply: redis::streams::StreamReadReply = server
        .conn()
        .xread_options(
            &["jobs"],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("reprow", "other")
                .count(10),
        )
        .unwrap();
    let mut back: Vec<String> = reply.keys[0]
        .ids
        .iter()
        .map(|id| id.get::<String>("payload").unwrap())
        .collect();
    back.sort();
    assert_eq!(back, ["slow0", "slow1", "slow2"]);
}

#[test]
fn a_restarted_server_loses_nothing_and_reprow_reconnects() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    for i in 0..20 {
        server.add("jobs", &format!("r{i}"));
    }
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(40), Box::new(Reply::ok())));
    let reprow = Reprow::start(&config(
        &scene,
        &server,
        &worker.url(),
        "",
        "  concurrency: 2\n",
    ));
    worker.wait_for(5);
    let server = server.restart();
    for i in 20..40 {
        server.add("jobs", &format!("r{i}"));
    }
    wait_until("every entry delivered", || {
        let mut seen = payloads(&worker.received());
        seen.sort();
        seen.dedup();
        seen.len() == 40
    });
    wait_until("all acknowledged", || server.pending("jobs") == 0);
    assert!(
        reprow.log().contains("Redis connection restored"),
        "{}",
        reprow.log()
    );
    reprow.stop();
}

#[test]
fn an_unreachable_server_is_refused_at_start() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    let cfg = config(&scene, &server, "http://127.0.0.1:9/work", "", "");
    drop(server);
    let mut reprow = Reprow::start(&cfg);
    let status = reprow.wait();
    assert!(!status.success());
    let log = reprow.log();
    assert!(
        log.contains("Redis: cannot connect to redis://127.0.0.1:"),
        "{log}"
    );
}

/// A worker that refuses connections never saw the job: the entry waits in Redis (not in
/// reprow's memory, where a lease could pass and another consumer run it too), and its first
/// real delivery is attempt 1.
#[test]
fn a_refusing_worker_leaves_the_entry_in_redis_and_costs_no_attempt() {
    let scene = Scene::new();
    let server = Server::start(scene.dir.path());
    server.add("jobs", "patient");
    let refused = RefusedPort::new();
    let url = format!("http://127.0.0.1:{}/work", refused.port());
    let reprow = Reprow::start(&config(&scene, &server, &url, "", ""));
    // Handed back to Redis, then moved back into the stream as a new entry: the stream grows
    // and nothing stays pending for long.
    wait_until("the entry handed back to Redis", || {
        let len: usize = server.conn().xlen("jobs").unwrap();
        len >= 2
    });
    let listener = TcpListener::bind(("127.0.0.1", refused.release())).unwrap();
    let worker = Worker::serve(listener, |_, _| Reply::ok(), None);
    let got = worker.wait_for(1);
    assert_eq!(got[0].body_str(), "patient");
    assert_eq!(
        got[0].attempt(),
        1,
        "a refused connection counted as an attempt"
    );
    wait_until("acknowledged", || server.pending("jobs") == 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(worker.received().len(), 1);
    reprow.stop();
}
