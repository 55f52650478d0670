//! The Q4M source against a real MySQL-protocol server.
//!
//! Q4M cannot be installed on the test machines, so by default these tests run on a stock
//! MariaDB/MySQL (`REPROW_TEST_MYSQL`, default `mysql://root@127.0.0.1:3306`) into which each
//! test loads `tests/q4m/emulation.sql` in a database of its own. With `Q4M_DSN` set to a
//! server that has Q4M (`mysql://user:pass@host:port`, no database), the same tests create a
//! real `ENGINE=QUEUE` table instead and run against it.
//!
//! What the emulation reproduces, which is all the adapter relies on:
//! - `queue_wait('jobs', timeout)`: returns 1 when this connection now owns the oldest free row,
//!   0 after `timeout` seconds; entering owner mode again consumes the row owned before;
//! - owner mode: `SELECT * FROM jobs` returns only the row this connection owns (a view on
//!   `CONNECTION_ID()`), with the table's own columns;
//! - `queue_end()` deletes the owned row, `queue_abort()` gives it back;
//! - a connection that goes away (closed, killed, its process killed) gives its row back: a row
//!   whose owner is no longer in the process list counts as free.
//!
//! What it does not: only one table, `jobs`; no `queue_wait` over several tables, conditions
//! (`'jobs:col=1'`) or priorities; no `queue_rowid`, `queue_set_srcid` or `queue_compact`; rows
//! come out by primary key rather than insertion order (the tests insert in key order); a
//! waiting connection polls every 50 ms where Q4M wakes at once; and it needs READ COMMITTED
//! sessions (set through reprow's `init_sql`), where Q4M needs nothing.
#![cfg(feature = "q4m")]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use common::*;
use mysql::{prelude::Queryable, Conn, Opts};

/// A database of its own for one test, dropped at the end.
struct QueueDb {
    /// Server URL without a database.
    server: String,
    name: String,
    real_q4m: bool,
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl QueueDb {
    fn fresh() -> QueueDb {
        let (server, real_q4m) = match std::env::var("Q4M_DSN") {
            Ok(url) => (url, true),
            Err(_) => (
                std::env::var("REPROW_TEST_MYSQL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into()),
                false,
            ),
        };
        let server = server.trim_end_matches('/').to_string();
        let name = format!(
            "reprow_q4m_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = Conn::new(Opts::from_url(&server).expect("server URL"))
            .unwrap_or_else(|e| panic!("cannot reach the test server {server}: {e}"));
        admin
            .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin.query_drop(format!("CREATE DATABASE {name}")).unwrap();
        let db = QueueDb {
            server,
            name,
            real_q4m,
        };
        let mut conn = db.conn();
        if real_q4m {
            conn.query_drop(
                "CREATE TABLE jobs (id BIGINT NOT NULL, payload TEXT NOT NULL, note VARCHAR(64) NULL) ENGINE=QUEUE",
            )
            .unwrap();
            conn.query_drop(
                "CREATE TABLE failures (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(128) NOT NULL, payload LONGBLOB NOT NULL, status INT NULL, message TEXT NOT NULL, attempts INT NOT NULL, failed_at VARCHAR(40) NOT NULL) ENGINE=InnoDB",
            )
            .unwrap();
        } else {
            let sql = std::fs::read_to_string(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/q4m/emulation.sql"),
            )
            .unwrap();
            for statement in split_sql(&sql) {
                conn.query_drop(&statement)
                    .unwrap_or_else(|e| panic!("emulation.sql: {e}\n{statement}"));
            }
        }
        db
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn conn(&self) -> Conn {
        Conn::new(Opts::from_url(&self.url()).unwrap()).unwrap()
    }

    fn insert(&self, rows: &[(i64, &str, Option<&str>)]) {
        let mut c = self.conn();
        c.exec_batch(
            "INSERT INTO jobs (id, payload, note) VALUES (?, ?, ?)",
            rows.iter().map(|(i, p, n)| (*i, *p, *n)),
        )
        .unwrap();
    }

    /// Rows still in the queue, owned or not.
    fn remaining(&self) -> usize {
        let table = if self.real_q4m { "jobs" } else { "jobs_data" };
        let n: Option<usize> = self
            .conn()
            .query_first(format!("SELECT COUNT(*) FROM {table}"))
            .unwrap();
        n.unwrap_or(0)
    }

    /// Rows no live connection owns (the emulation only; Q4M does not show owners).
    fn free_rows(&self) -> Option<usize> {
        if self.real_q4m {
            return None;
        }
        self.conn()
            .query_first(
                "SELECT COUNT(*) FROM jobs_data WHERE _owner IS NULL OR _owner NOT IN (SELECT ID FROM information_schema.PROCESSLIST)",
            )
            .unwrap()
    }

    fn wait_remaining(&self, n: usize) {
        wait_until(&format!("{n} rows left in the queue"), || {
            self.remaining() == n
        });
    }

    /// Kills every other connection to this test's database (reprow's).
    fn kill_connections(&self) -> usize {
        let mut c = self.conn();
        let ids: Vec<u64> = c
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                (&self.name,),
            )
            .unwrap();
        for id in &ids {
            // A connection may end on its own meanwhile.
            let _ = c.query_drop(format!("KILL CONNECTION {id}"));
        }
        ids.len()
    }

    /// The server's address and credentials, to reach it through a proxy.
    fn server_opts(&self) -> Opts {
        Opts::from_url(&self.server).unwrap()
    }

    /// reprow's config for this database.
    fn config(&self, scene: &Scene, url: &str, queue_extra: &str, runner_extra: &str) -> PathBuf {
        let init = if self.real_q4m || queue_extra.contains("init_sql") {
            String::new()
        } else {
            "  init_sql: [\"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED\"]\n".into()
        };
        let text = format!(
            "queue:\n  type: q4m\n  dsn: {dsn}\n  table: jobs\n  failed_path: {failed}\n{init}{queue_extra}runner:\n  type: http_proxy\n  url: {url}\n  backoff_base: 20ms\n  backoff_max: 100ms\n{runner_extra}shutdown_timeout: 2s\n",
            dsn = self.url(),
            failed = scene.path("failed.jsonl").display(),
        );
        let path = scene.path("reprow.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for QueueDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Conn::new(Opts::from_url(&self.server).unwrap()) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// Splits a SQL script as the `mysql` client does, honouring `DELIMITER` lines.
fn split_sql(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut delimiter = ";".to_string();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if let Some(d) = trimmed.strip_prefix("DELIMITER ") {
            delimiter = d.trim().to_string();
            continue;
        }
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(delimiter.as_str()) {
            let end = current.trim_end().len() - delimiter.len();
            out.push(current[..end].to_string());
            current.clear();
        }
    }
    assert!(current.trim().is_empty(), "unterminated SQL: {current}");
    out
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `failures` row: queue, payload, status, message, attempts.
type FailureRow = (String, Vec<u8>, Option<u16>, String, u32);

fn body_json(r: &Received) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_str()))
}

#[test]
fn rows_are_delivered_as_json_objects_and_ended() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::ok());
    let rows: Vec<(i64, String, Option<&str>)> = (1..=40)
        .map(|i| (i, format!("job \"{i}\""), (i % 2 == 0).then_some("even")))
        .collect();
    let refs: Vec<_> = rows.iter().map(|(i, p, n)| (*i, p.as_str(), *n)).collect();
    db.insert(&refs);
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), "  connections: 4\n", ""));
    let got = worker.wait_for(40);
    db.wait_remaining(0);
    let mut ids = BTreeSet::new();
    for r in &got {
        // Keys in the table's column order, values typed by column.
        assert!(r.body_str().starts_with("{\"id\":"), "{}", r.body_str());
        let v = body_json(r);
        let id = v["id"].as_i64().expect("id is a number");
        assert_eq!(v["payload"], format!("job \"{id}\""));
        let note = if id % 2 == 0 {
            "even".into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(v["note"], note);
        assert_eq!(r.header("X-Reprow-Queue"), Some("jobs"));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.attempt(), 1);
        ids.insert(id);
    }
    assert_eq!(ids, (1..=40).collect());
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 40);
}

#[test]
fn a_payload_column_is_sent_unchanged_and_a_null_one_is_recorded() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::ok());
    db.insert(&[
        (1, "a", Some("hello")),
        (2, "b", None),
        (3, "c", Some("bye")),
    ]);
    let config = db.config(
        &scene,
        &worker.url(),
        "  payload_column: note\n  content_type: text/plain\n  connections: 1\n",
        "",
    );
    let reprow = Reprow::start(&config);
    let got = worker.wait_for(2);
    db.wait_remaining(0);
    let bodies: Vec<String> = got.iter().map(Received::body_str).collect();
    assert_eq!(bodies, ["hello", "bye"]);
    assert_eq!(got[0].header("Content-Type"), Some("text/plain"));
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let row: serde_json::Value =
        serde_json::from_str(failed[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(row["id"], 2);
    assert!(
        failed[0]["message"].as_str().unwrap().contains("NULL"),
        "{failed:?}"
    );
    assert!(reprow.stop().0.success());
    assert_eq!(worker.received().len(), 2);
}

#[test]
fn a_retry_after_holds_the_row_while_other_rows_flow() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|r, _| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["id"] == 1 && r.attempt() == 1 {
            Reply::Status(503, vec![("Retry-After", "3".into())], b"busy".to_vec())
        } else {
            Reply::ok()
        }
    });
    db.insert(&[(1, "first", None)]);
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), "  connections: 2\n", ""));
    let first = worker.wait_for(1)[0].clone();
    // Row 2 goes through while row 1 waits out its 3 s.
    db.insert(&[(2, "second", None)]);
    worker.wait_for(2);
    db.wait_remaining(1);
    // Held, not returned: row 1 is still in the table, and owned.
    if let Some(free) = db.free_rows() {
        assert_eq!(free, 0, "the held row must stay owned");
    }
    let got = worker.wait_for(3);
    let order: Vec<(i64, u32)> = got
        .iter()
        .map(|r| (body_json(r)["id"].as_i64().unwrap(), r.attempt()))
        .collect();
    assert_eq!(order, [(1, 1), (2, 1), (1, 2)]);
    let waited = got[2].at - first.at;
    assert!(
        waited >= Duration::from_millis(2950),
        "retried after {waited:?}"
    );
    db.wait_remaining(0);
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["retried"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn permanent_failures_go_to_the_failed_table() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|r, _| {
        if body_json(r)["note"] == "bad" {
            Reply::Status(422, vec![], b"cannot do this one".to_vec())
        } else {
            Reply::ok()
        }
    });
    db.insert(&[(1, "a", None), (2, "b", Some("bad")), (3, "c", None)]);
    let config = db.config(&scene, &worker.url(), "  failed_table: failures\n", "");
    let reprow = Reprow::start(&config);
    worker.wait_for(3);
    db.wait_remaining(0);
    let rows: Vec<FailureRow> = db
        .conn()
        .query("SELECT queue, payload, status, message, attempts FROM failures")
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (queue, payload, status, message, attempts) = &rows[0];
    assert_eq!(queue, "jobs");
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        (v["id"].as_i64(), status, attempts),
        (Some(2), &Some(422), &1)
    );
    assert_eq!(message, "cannot do this one");
    assert!(reprow.stop().0.success());
    assert!(scene.records("failed.jsonl").is_empty());
}

#[test]
fn exhausted_retries_go_to_the_failed_file() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::status(500));
    db.insert(&[(7, "doomed", None)]);
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), "", "  max_retries: 2\n"));
    worker.wait_for(3);
    db.wait_remaining(0);
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["attempts"], 3);
    assert_eq!(failed[0]["last_status"], 500);
    assert_eq!(failed[0]["queue"], "jobs");
    assert!(reprow.stop().0.success());
    assert_eq!(worker.received().len(), 3);
}

#[test]
fn shutdown_returns_unfinished_rows_and_a_restart_delivers_them() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let stuck = Worker::start(|_, _| Reply::After(Duration::from_secs(30), Box::new(Reply::ok())));
    db.insert(&[
        (1, "a", None),
        (2, "b", None),
        (3, "c", None),
        (4, "d", None),
        (5, "e", None),
    ]);
    // One row in flight, one queued for the core, three waiting to be queued, one connection
    // idle in queue_wait: every place a connection can be at shutdown.
    let config = db.config(
        &scene,
        &stuck.url(),
        "  connections: 6\n",
        "  concurrency: 1\n",
    );
    let reprow = Reprow::start(&config);
    stuck.wait_for(1);
    wait_until("every row owned", || db.free_rows().is_none_or(|f| f == 0));
    let started = Instant::now();
    let (status, _) = reprow.stop();
    assert!(status.success());
    // shutdown_timeout is 2 s; an idle connection's queue_wait ends within 1 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(db.remaining(), 5);
    if let Some(free) = db.free_rows() {
        assert_eq!(free, 5, "every row must be given back at shutdown");
    }
    assert_eq!(stuck.received().len(), 1);

    let worker = Worker::start(|_, _| Reply::ok());
    let config = db.config(&scene, &worker.url(), "", "");
    let reprow = Reprow::start(&config);
    let got = worker.wait_for(5);
    db.wait_remaining(0);
    let ids: BTreeSet<i64> = got
        .iter()
        .map(|r| body_json(r)["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=5).collect());
    assert!(reprow.stop().0.success());
}

#[test]
fn a_dropped_connection_gives_the_row_back_and_reprow_reconnects() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    // The first delivery is slow, so its connection can be killed while it runs.
    let worker = Worker::start(|_, i| {
        if i == 0 {
            Reply::After(Duration::from_millis(1500), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    db.insert(&[(1, "a", None)]);
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), "  connections: 2\n", ""));
    worker.wait_for(1);
    assert!(db.kill_connections() >= 1);
    // The server gave the row back; a new connection takes it and delivers it again.
    let got = worker.wait_for(2);
    assert_eq!(body_json(&got[1])["id"], 1);
    db.wait_remaining(0);
    wait_until("the lost connection in the log", || {
        reprow.log().contains("reconnecting")
    });
    // Still serving.
    db.insert(&[(2, "b", None)]);
    let got = worker.wait_for(3);
    assert_eq!(body_json(&got[2])["id"], 2);
    db.wait_remaining(0);
    assert!(reprow.stop().0.success());
}

#[test]
fn kill_9_loses_no_row() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(5), Box::new(Reply::ok())));
    let rows: Vec<(i64, String)> = (1..=300).map(|i| (i, format!("p{i}"))).collect();
    let refs: Vec<_> = rows.iter().map(|(i, p)| (*i, p.as_str(), None)).collect();
    db.insert(&refs);
    let config = db.config(
        &scene,
        &worker.url(),
        "  connections: 4\n",
        "  concurrency: 4\n",
    );
    let mut reprow = Reprow::start(&config);
    worker.wait_for(60);
    reprow.signal(nix::sys::signal::Signal::SIGKILL);
    reprow.wait();
    assert!(
        db.remaining() > 0,
        "the kill came too late to test anything"
    );
    let reprow = Reprow::start(&config);
    db.wait_remaining(0);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for r in worker.received() {
        *seen
            .entry(body_json(&r)["id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // At most the rows in flight at the kill (4 connections) run twice.
    assert!(duplicates <= 4, "{duplicates} duplicates");
    eprintln!("kill -9: 300 rows, all delivered, {duplicates} delivered twice");
    assert!(reprow.stop().0.success());
}

#[test]
fn start_refuses_what_cannot_work() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::ok());
    let refused = RefusedPort::new();
    let cases = [
        (
            format!("  dsn: root@tcp(127.0.0.1:{})/x\n", refused.port()),
            "cannot connect to",
        ),
        (
            "  payload_column: body\n".to_string(),
            "(queue.payload_column); it has id, payload, note",
        ),
        (
            "  failed_table: jobs\n".to_string(),
            "it needs queue, payload, status, message, attempts, failed_at",
        ),
    ];
    for (extra, expected) in cases {
        let mut config = db.config(&scene, &worker.url(), &extra, "");
        if extra.contains("dsn:") {
            // Duplicate keys are refused: drop the database's own dsn line.
            let text = std::fs::read_to_string(&config).unwrap();
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("  dsn: mysql://"))
                .map(|l| format!("{l}\n"))
                .collect();
            config = scene.path("reprow2.yaml");
            std::fs::write(&config, text).unwrap();
        }
        let mut reprow = Reprow::start(&config);
        let status = reprow.wait();
        assert!(!status.success(), "{extra}");
        assert!(
            reprow.log().contains(expected),
            "{expected}: {}",
            reprow.log()
        );
    }
    // A missing table.
    let text = std::fs::read_to_string(db.config(&scene, &worker.url(), "", ""))
        .unwrap()
        .replace("table: jobs", "table: nosuch");
    let config = scene.path("reprow3.yaml");
    std::fs::write(&config, text).unwrap();
    let mut reprow = Reprow::start(&config);
    assert!(!reprow.wait().success());
    assert!(reprow.log().contains("table nosuch"), "{}", reprow.log());
}

#[test]
fn keepalive_outlasts_a_short_server_wait_timeout() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    // The job takes 4 s; the server closes connections idle for 2 s.
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(4), Box::new(Reply::ok())));
    db.insert(&[(1, "slow", None)]);
    let queue = "  connections: 2\n  keepalive: 1s\n  init_sql:\n    - SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED\n    - SET SESSION wait_timeout = 2\n";
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), queue, ""));
    worker.wait_for(1);
    db.wait_remaining(0);
    // Had the connection been closed, the row would have gone to the other connection.
    assert_eq!(worker.received().len(), 1);
    assert!(
        !reprow.log().contains("Lost the Q4M connection"),
        "{}",
        reprow.log()
    );
    assert!(reprow.stop().0.success());
}

/// A TCP forwarder to the test server that can be cut (every connection closed, nothing
/// listening) and restored on the same port: a real outage, as a restart or a network cut.
struct Proxy {
    port: u16,
    target: (String, u16),
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    listening: bool,
    streams: Vec<std::net::TcpStream>,
}

impl Proxy {
    /// Listens on a port of its own (port 0); an outage closes the listener and `restore`
    /// binds the same port again, as a restarted server would.
    fn start(target: (String, u16)) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            target,
            state: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn restore(&self) {
        self.serve(std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }

    fn serve(&self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.state.lock().unwrap().listening = true;
        let (state, target) = (self.state.clone(), self.target.clone());
        std::thread::spawn(move || loop {
            if !state.lock().unwrap().listening {
                return; // drops the listener: connects are refused
            }
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let Ok(server) = std::net::TcpStream::connect((target.0.as_str(), target.1)) else {
                continue;
            };
            let mut st = state.lock().unwrap();
            st.streams.push(client.try_clone().unwrap());
            st.streams.push(server.try_clone().unwrap());
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
    }

    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.listening = false;
        for s in st.streams.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn an_outage_is_waited_out_with_backoff() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::ok());
    let opts = db.server_opts();
    let host = opts.get_ip_or_hostname().to_string();
    let proxy = Proxy::start((host, opts.get_tcp_port()));
    let user = opts.get_user().unwrap_or("root");
    let pass = opts.get_pass().map(|p| format!(":{p}")).unwrap_or_default();
    let dsn = format!("mysql://{user}{pass}@127.0.0.1:{}/{}", proxy.port, db.name);
    let text = std::fs::read_to_string(db.config(&scene, &worker.url(), "  connections: 2\n", ""))
        .unwrap()
        .replace(&format!("dsn: {}", db.url()), &format!("dsn: {dsn}"));
    let config = scene.path("proxied.yaml");
    std::fs::write(&config, text).unwrap();

    let reprow = Reprow::start(&config);
    db.insert(&[(1, "before", None)]);
    worker.wait_for(1);
    db.wait_remaining(0);

    proxy.cut();
    db.insert(&[(2, "during", None), (3, "during", None)]);
    // Connects are refused; the pause between attempts doubles (100, 200, 400, 800 ms).
    wait_until("backoff to reach 800 ms", || {
        reprow.log().contains("\"retry_in_ms\":800")
    });
    let log = reprow.log();
    for ms in [100, 200, 400] {
        assert!(log.contains(&format!("\"retry_in_ms\":{ms}")), "{log}");
    }
    assert_eq!(worker.received().len(), 1);

    proxy.restore();
    let got = worker.wait_for(3);
    db.wait_remaining(0);
    let ids: BTreeSet<i64> = got
        .iter()
        .map(|r| body_json(r)["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=3).collect());
    assert!(reprow.log().contains("Q4M connection restored"));
    assert!(reprow.stop().0.success());
}

#[test]
fn rows_waiting_for_a_free_core_are_kept_alive_too() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    // One job at a time, 2.5 s each; three connections own a row each, so the third waits
    // 5 s for the core, longer than the server keeps an idle connection (2 s).
    let worker =
        Worker::start(|_, _| Reply::After(Duration::from_millis(2500), Box::new(Reply::ok())));
    db.insert(&[(1, "a", None), (2, "b", None), (3, "c", None)]);
    let queue = "  connections: 3\n  keepalive: 1s\n  init_sql:\n    - SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED\n    - SET SESSION wait_timeout = 2\n";
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), queue, "  concurrency: 1\n"));
    worker.wait_for(3);
    db.wait_remaining(0);
    let ids: Vec<i64> = worker
        .received()
        .iter()
        .map(|r| body_json(r)["id"].as_i64().unwrap())
        .collect();
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!((ids.len(), distinct.len()), (3, 3), "delivered {ids:?}");
    assert!(
        !reprow.log().contains("Lost the Q4M connection"),
        "{}",
        reprow.log()
    );
    assert!(reprow.stop().0.success());
}

#[test]
fn a_failure_that_cannot_be_recorded_keeps_its_row() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    // A failed table whose message column is too short for the worker's message: in strict
    // mode every insert is refused until the column is widened.
    db.conn()
        .query_drop(
            "CREATE TABLE narrow_failures (queue VARCHAR(128) NOT NULL, payload LONGBLOB NOT NULL, status INT NULL, message VARCHAR(3) NOT NULL, attempts INT NOT NULL, failed_at VARCHAR(40) NOT NULL) ENGINE=InnoDB",
        )
        .unwrap();
    let worker =
        Worker::start(|_, _| Reply::Status(422, vec![], b"this message is too long".to_vec()));
    db.insert(&[(1, "a", None)]);
    let queue = "  failed_table: narrow_failures\n  init_sql:\n    - SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED\n    - SET SESSION sql_mode = 'STRICT_ALL_TABLES'\n";
    let reprow = Reprow::start(&db.config(&scene, &worker.url(), queue, ""));
    wait_until("the pause to reach 400 ms", || {
        reprow.log().contains("\"retry_in_ms\":400")
    });
    // Kept, and not in a hot loop: one delivery per pause (100, 200, 400 ms, ...).
    assert_eq!(db.remaining(), 1);
    let deliveries = worker.received().len();
    assert!((3..=5).contains(&deliveries), "{deliveries} deliveries");
    db.conn()
        .query_drop("ALTER TABLE narrow_failures MODIFY message TEXT NOT NULL")
        .unwrap();
    db.wait_remaining(0);
    let rows: Vec<(String, Option<u16>)> = db
        .conn()
        .query("SELECT message, status FROM narrow_failures")
        .unwrap();
    assert_eq!(rows, [("this message is too long".to_string(), Some(422))]);
    assert!(reprow.stop().0.success());
}

/// `workers:` applies to a Q4M source too: rows go at the origin's rate, each as attempt 1
/// (a row waiting for its turn costs nothing and stays owned by its connection).
#[test]
fn the_workers_rate_spaces_the_rows() {
    let db = QueueDb::fresh();
    let scene = Scene::new();
    let worker = Worker::start(|_, _| Reply::ok());
    let rows: Vec<(i64, String, Option<&str>)> =
        (1..=10).map(|i| (i, format!("job {i}"), None)).collect();
    let refs: Vec<_> = rows.iter().map(|(i, p, n)| (*i, p.as_str(), *n)).collect();
    db.insert(&refs);
    let cfg = db.config(&scene, &worker.url(), "  connections: 4\n", "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "workers:\n  \"http://{}\": {{rate: 5, burst: 1}}\n",
        worker.addr
    ));
    std::fs::write(&cfg, text).unwrap();
    let reprow = Reprow::start(&cfg);
    let got = worker.wait_for(10);
    db.wait_remaining(0);
    let first = got.iter().map(|r| r.at).min().unwrap();
    let last = got.iter().map(|r| r.at).max().unwrap();
    // 10 at 5/s, no burst: 9 gaps of 200 ms.
    assert!(
        last - first >= Duration::from_millis(1700),
        "10 rows in {:?} at 5/s",
        last - first
    );
    assert!(got.iter().all(|r| r.attempt() == 1));
    let (status, stats) = reprow.stop();
    assert!(status.success());
    assert_eq!(stats["succeeded"], 10);
}
