//! Signed deliveries (Standard Webhooks 1.0) and CloudEvents (HTTP binding 1.0.2) checked by
//! implementations of those standards that nobody here wrote: PyPI's `standardwebhooks` and
//! `svix` verify every request reprow sends (and refuse it with its body changed), and the
//! `cloudevents` package parses it into an event (tests/support/std_worker.py). Those tests need
//! the packages, so they are ignored by plain `cargo test` and run by .ci/run with
//! REPROW_TEST_STD_PYTHON pointing at a venv holding them. The tests that need nothing but
//! reprow (secrets never shown, the API refusing them) run always.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use common::{durable_config, write_lines, Api, Reprow, Scene, DEADLINE};
use serde_json::Value;

/// The Python library's test secret (standard-webhooks `libraries/python/tests`).
const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The Rust library's test secret (standard-webhooks `libraries/rust`).
const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The Python worker, killed on drop; its requests as JSON lines in `out`.
struct PyWorker {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl PyWorker {
    fn start(dir: &Path, secrets: &[&str], fail_first: &str) -> PyWorker {
        let python = std::env::var("REPROW_TEST_STD_PYTHON")
            .expect("REPROW_TEST_STD_PYTHON: a python with standardwebhooks, svix, cloudevents (.ci/run makes one)");
        let out = dir.join("worker.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/std_worker.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&out)
            .env("STD_SECRETS", serde_json::to_string(secrets).unwrap())
            .env("STD_FAIL_FIRST", fail_first)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the worker prints its port");
        PyWorker { child, port, out }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Waits for `n` requests and returns them.
    fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests: {lines:?}",
                lines.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Each request verifies with every secret, by both libraries, and fails with its body changed.
fn assert_signed(r: &Value, secrets: usize) {
    let all = |key: &str, want: bool| {
        let got = r[key].as_array().unwrap();
        assert_eq!(got.len(), secrets, "{key}: {r}");
        assert!(got.iter().all(|v| v.as_bool() == Some(want)), "{key}: {r}");
    };
    all("std", true);
    all("svix", true);
    all("std_changed_body", false);
    all("svix_changed_body", false);
    let h = &r["headers"];
    assert_eq!(h["webhook-id"], h["x-reprow-job-id"], "{r}");
    let ts: u64 = h["webhook-timestamp"].as_str().unwrap().parse().unwrap();
    assert!(ts.abs_diff(now_secs()) < 60, "{r}");
}

#[test]
#[ignore = "needs standardwebhooks, svix, cloudevents from PyPI: run by .ci/run"]
fn fifo_deliveries_verify_with_both_rotation_secrets() {
    let scene = Scene::new();
    // Secret B comes from a file (with its trailing newline), as an operator would mount it.
    std::fs::write(scene.path("key-b"), format!("{SECRET_B}\n")).unwrap();
    let worker = PyWorker::start(scene.dir.path(), &[SECRET_A, SECRET_B], "*");
    let runner = format!(
        "  signing_secrets:\n    - {SECRET_A}\n    - file:{}\n",
        scene.path("key-b").display()
    );
    let cfg = scene.config(&worker.url(), "", &runner, "");
    let reprow = Reprow::start(&cfg);
    write_lines(&scene.fifo(), &[r#"{"n":1}"#, "plain text", r#"{"n":3}"#]);
    // Every job is answered 500 once: 3 jobs, 6 requests.
    let got = worker.wait_for(6);
    for r in &got {
        assert_signed(r, 2);
        assert_eq!(
            r["headers"]["webhook-signature"]
                .as_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
    }
    // The id is the same on every attempt of a job, so a worker can use it as its
    // idempotency key; the attempts' ids differ between jobs.
    for first in got
        .iter()
        .filter(|r| r["headers"]["x-reprow-attempt"] == "1")
    {
        let id = &first["headers"]["webhook-id"];
        let again: Vec<_> = got
            .iter()
            .filter(|r| r["headers"]["webhook-id"] == *id)
            .collect();
        assert_eq!(again.len(), 2, "{id}: {got:?}");
        assert_eq!(again[1]["headers"]["x-reprow-attempt"], "2");
    }
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
#[ignore = "needs standardwebhooks, svix, cloudevents from PyPI: run by .ci/run"]
fn durable_cloudevents_in_both_modes_signed_by_queue() {
    let dir = tempfile::tempdir().unwrap();
    let worker = PyWorker::start(dir.path(), &[SECRET_B], "");
    let url = worker.url();
    let extra = format!(
        "queues:\n  structured:\n    url: {url}\n    cloudevents: structured\n    signing_secrets: [env:REPROW_TEST_SIGNING_KEY]\n  binary:\n    url: {url}\n    cloudevents: binary\n    cloudevents_source: /orders/eu west\n    cloudevents_type: com.example.order created\n    signing_secrets: [{SECRET_B}]\n  plain:\n    url: {url}\n    signing_secrets: [{SECRET_B}]\nroutings:\n  order.placed: structured\n  order.paid: binary\n"
    );
    let cfg = durable_config(dir.path(), &extra);
    let log = cfg.with_extension("log");
    let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .arg("-c")
        .arg(&cfg)
        .env("REPROW_TEST_SIGNING_KEY", SECRET_B)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reprow = Reprow::adopt(child, log);
    let api = Api::new(reprow.api_addr());
    let placed = api.post("/job/order.placed", r#"{"payload":{"order":7,"sum":1.50}}"#);
    assert_eq!(placed.status, 200, "{}", placed.text());
    let paid = api.post("/job/order.paid", r#"{"payload":{"order":8}}"#);
    assert_eq!(paid.status, 200, "{}", paid.text());
    // A producer's own structured-mode event, enqueued as it is.
    let event = r#"{"specversion":"1.0","id":"evt-9","source":"/shop","type":"com.example.refund","datacontenttype":"application/json","data":{"order":9}}"#;
    let own = api.call_with(
        "POST",
        "/q/structured",
        Some(event),
        &[("Content-Type", "application/cloudevents+json")],
    );
    assert_eq!(own.status, 201, "{}", own.text());
    // A producer's own binary-mode event: to a queue without `cloudevents` (sent as it came)
    // and to a structured one (its attributes carried into the JSON event).
    for (queue, id) in [("plain", "evt-10"), ("structured", "evt-11")] {
        let r = api.call_with(
            "POST",
            &format!("/q/{queue}"),
            Some(r#"{"order":10}"#),
            &[
                ("Content-Type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", id),
                ("ce-source", "/shop/eu%20west"),
                ("ce-type", "com.example.shipped"),
                ("ce-subject", "order-10"),
            ],
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    let got = worker.wait_for(5);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let by_type = |t: &str| {
        got.iter()
            .find(|r| r["ce"]["type"] == t)
            .unwrap_or_else(|| panic!("no event of type {t}: {got:?}"))
    };
    for r in &got {
        assert_signed(r, 1);
        assert!(r.get("ce_error").is_none(), "{r}");
        assert_eq!(r["ce"]["specversion"], "1.0");
    }
    let s = by_type("order.placed");
    assert_eq!(
        s["headers"]["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(s["ce"]["id"], s["headers"]["x-reprow-job-id"]);
    assert_eq!(
        s["ce"]["source"],
        format!("reprow://{}/structured", host.trim())
    );
    assert_eq!(s["ce"]["datacontenttype"], "application/json");
    assert_eq!(s["ce_data"], serde_json::json!({"order": 7, "sum": 1.50}));
    // `time` is the enqueue time, sent as reprow's X-Reprow-Enqueued-At is.
    let time = s["ce"]["time"].as_str().unwrap();
    let enqueued =
        humantime::parse_rfc3339(s["headers"]["x-reprow-enqueued-at"].as_str().unwrap()).unwrap();
    let parsed = humantime::parse_rfc3339(&time.replace("+00:00", "Z")).unwrap();
    assert_eq!(parsed, enqueued, "{time}");

    let b = by_type("com.example.order created");
    assert_eq!(b["headers"]["content-type"], "application/json");
    assert_eq!(b["ce"]["id"], b["headers"]["x-reprow-job-id"]);
    assert_eq!(b["ce"]["source"], "/orders/eu west");
    assert_eq!(b["ce_data"], serde_json::json!({"order": 8}));
    assert_eq!(b["body"], r#"{"order":8}"#);

    let p = by_type("com.example.refund");
    assert_eq!(p["ce"]["id"], "evt-9");
    assert_eq!(p["ce"]["source"], "/shop");
    assert_eq!(p["ce_data"], serde_json::json!({"order": 9}));
    assert_eq!(p["body"], event, "delivered as it was enqueued");

    for (id, content_type) in [
        ("evt-10", "application/json"),
        ("evt-11", "application/cloudevents+json; charset=utf-8"),
    ] {
        let e = got
            .iter()
            .find(|r| r["ce"]["id"] == id)
            .unwrap_or_else(|| panic!("no event {id}: {got:?}"));
        assert_eq!(e["headers"]["content-type"], content_type, "{e}");
        assert_eq!(e["ce"]["type"], "com.example.shipped", "{e}");
        assert_eq!(e["ce"]["source"], "/shop/eu west", "{e}");
        assert_eq!(e["ce"]["subject"], "order-10", "{e}");
        assert_eq!(e["ce_data"], serde_json::json!({"order": 10}), "{e}");
    }
    let (status, _) = reprow.stop();
    assert!(status.success());
}

/// No secret in a listing, `/status`, `/queues` or the log; the API refuses to take one.
#[test]
fn secrets_are_never_shown_nor_taken_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "runner:\n  url: http://127.0.0.1:9/\n  signing_secrets: [{SECRET_A}]\nqueues:\n  signed:\n    url: http://127.0.0.1:9/\n    signing_secrets: [{SECRET_B}]\n"
    );
    let cfg = durable_config(dir.path(), &extra);
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let hidden = |text: &str| {
        for s in [SECRET_A, SECRET_B] {
            assert!(!text.contains(&s["whsec_".len()..]), "{text}");
        }
        assert!(!text.contains("signing_secrets"), "{text}");
    };
    for path in ["/queue/signed", "/queues", "/status", "/settings"] {
        let r = api.get(path);
        assert_eq!(r.status, 200, "{path}");
        hidden(&r.text());
    }
    let put = api.put(
        "/queue/other",
        r#"{"url":"http://127.0.0.1:9/","signing_secrets":["file:/etc/hostname"]}"#,
    );
    assert_eq!(put.status, 400, "{}", put.text());
    assert!(put.text().contains("config file only"), "{}", put.text());
    assert_eq!(api.get("/queue/other").status, 404);
    // A queue of the config replaced through the API keeps being signed (the secrets are the
    // config file's), and the answer shows none.
    let replaced = api.put("/queue/signed", r#"{"url":"http://127.0.0.1:9/"}"#);
    assert_eq!(replaced.status, 200);
    hidden(&replaced.text());
    let (status, _) = reprow.stop();
    assert!(status.success());
    hidden(&std::fs::read_to_string(cfg.with_extension("log")).unwrap());
}

/// A bad secret stops the start with the key named and the value not shown.
#[test]
fn a_bad_secret_fails_the_start_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    for (secrets, want) in [
        (
            "[whsec_c2VjcmV0LXZhbHVl!!]",
            "entry 1: the secret is not whsec_ followed by standard base64",
        ),
        (
            "[env:REPROW_TEST_UNSET_SIGNING_KEY]",
            "environment variable REPROW_TEST_UNSET_SIGNING_KEY is not set",
        ),
        ("[whsec_c2VjcmV0LXZhbHVl]", "decodes to 12 bytes"),
    ] {
        let extra = format!("queues:\n  q:\n    signing_secrets: {secrets}\n");
        let cfg = durable_config(dir.path(), &extra);
        let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("queues.q.signing_secrets") && err.contains(want),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0LXZhbHVl"), "{err}");
    }
}

/// Which secret signs which job on the durable queue: a queue's own, else the runner's; a
/// queue without either sends no signature headers. (Checked here against reprow's own signer
/// for the wiring; the Python tests above check the signature itself.)
#[test]
fn the_queue_secret_wins_over_the_runner_one() {
    use reprow::dispatch::signing::SigningSecrets;
    let signer = |secret: &str| {
        let mut s = SigningSecrets::from(vec![secret.to_string()]);
        s.resolve(|_| None).unwrap();
        s.signer().unwrap()
    };
    let worker = common::Worker::start(|_, _| common::Reply::ok());
    let url = worker.url();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "runner:\n  url: {url}\n  signing_secrets: [{SECRET_A}]\nqueues:\n  own:\n    url: {url}\n    signing_secrets: [{SECRET_B}]\n  plain:\n    url: {url}\nroutings:\n  to-own: own\n"
    );
    let cfg = durable_config(dir.path(), &extra);
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    assert_eq!(
        api.post("/job/to-own", r#"{"payload":{"n":1}}"#).status,
        200
    );
    assert_eq!(api.post("/job/other", r#"{"payload":{"n":2}}"#).status, 200);
    let got = worker.wait_for(2);
    for r in &got {
        let queue = r.header("X-Reprow-Queue").unwrap();
        let secret = if queue == "own" { SECRET_B } else { SECRET_A };
        let id = r.header("webhook-id").unwrap();
        assert_eq!(Some(id), r.header("X-Reprow-Job-Id"));
        let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert_eq!(
            r.header("webhook-signature"),
            Some(signer(secret).signature(id, ts, &r.body).as_str()),
            "{queue}"
        );
    }
    drop(reprow);
    // Without secrets anywhere: no signature headers at all.
    let plain = common::Worker::start(|_, _| common::Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), &format!("runner:\n  url: {}\n", plain.url()));
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    assert_eq!(api.post("/job/x", r#"{"payload":{}}"#).status, 200);
    let r = &plain.wait_for(1)[0];
    assert!(
        r.headers.iter().all(|(k, _)| !k.starts_with("webhook-")),
        "{r:?}"
    );
}

/// `POST /q/{queue}` with `Content-Type: application/cloudevents+json` keeps the event's type,
/// so it is delivered as it came (on a `cloudevents` queue too: not wrapped twice); a plain
/// JSON push keeps `application/json`.
#[test]
fn a_structured_event_enqueued_is_delivered_as_it_came() {
    let worker = common::Worker::start(|_, _| common::Reply::ok());
    let url = worker.url();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("queues:\n  events:\n    url: {url}\n    cloudevents: structured\n  plain:\n    url: {url}\n");
    let cfg = durable_config(dir.path(), &extra);
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let event = r#"{"specversion":"1.0","id":"e1","source":"/s","type":"t"}"#;
    let ce = [(
        "Content-Type",
        "application/cloudevents+json; charset=utf-8",
    )];
    assert_eq!(
        api.call_with("POST", "/q/events", Some(event), &ce).status,
        201
    );
    let json = [("Content-Type", "application/json")];
    assert_eq!(
        api.call_with("POST", "/q/plain", Some(r#"{"a":1}"#), &json)
            .status,
        201
    );
    let got = worker.wait_for(2);
    let of = |queue: &str| {
        got.iter()
            .find(|r| r.header("X-Reprow-Queue") == Some(queue))
            .unwrap()
    };
    assert_eq!(
        of("events").header("Content-Type"),
        Some("application/cloudevents+json")
    );
    assert_eq!(of("events").body_str(), event);
    assert_eq!(of("plain").header("Content-Type"), Some("application/json"));
    assert_eq!(of("plain").body_str(), r#"{"a":1}"#);
    assert!(of("plain")
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("ce-")));
}

/// `POST /q/{queue}` with `ce-*` headers (a binary-mode CloudEvent) stores them with the job:
/// every delivery carries them as they came; 33 of them, or one not printable ASCII, are
/// refused.
#[test]
fn a_binary_event_enqueued_keeps_its_attributes() {
    let worker = common::Worker::start(|_, _| common::Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("queues:\n  plain:\n    url: {}\n", worker.url());
    let cfg = durable_config(dir.path(), &extra);
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let headers = [
        ("Content-Type", "application/json"),
        ("ce-specversion", "1.0"),
        ("CE-Id", "evt-1"),
        ("ce-source", "/shop/eu%20west"),
        ("ce-type", "com.example.shipped"),
    ];
    let r = api.call_with("POST", "/q/plain", Some(r#"{"a":1}"#), &headers);
    assert_eq!(r.status, 201, "{}", r.text());
    let got = &worker.wait_for(1)[0];
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "evt-1"),
        ("ce-source", "/shop/eu%20west"),
        ("ce-type", "com.example.shipped"),
    ] {
        assert_eq!(got.header(name), Some(value), "{got:?}");
    }
    assert_eq!(got.body_str(), r#"{"a":1}"#);
    let many: Vec<(String, String)> = (0..33).map(|i| (format!("ce-x{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = api.call_with("POST", "/q/plain", Some("{}"), &many);
    assert_eq!(r.status, 400, "{}", r.text());
    // A value that is not printable ASCII cannot be stored as a header (the binding says
    // to percent-encode it).
    let r = api.call_with("POST", "/q/plain", Some("{}"), &[("ce-subject", "café")]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ce-subject"), "{}", r.text());
}
