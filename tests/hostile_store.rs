//! Issue 15, "Hostile input", the store's side: times and durations from input are bounded,
//! pull acks carry a lease token, bodies that are not what a route takes are refused, the
//! bearer scheme is case-insensitive, the durable path's `Retry-After` clamp is the runner's,
//! and blank FIFO lines are counted. Each test runs the real binary on a temp dir.

mod common;

use std::time::{Duration, Instant};

use common::start_durable as start;
use common::{write_lines, Reply, Reprow, Scene, Worker, DEADLINE};

fn runner(url: &str, extra: &str) -> String {
    format!("runner:\n  type: http_proxy\n  url: {url}\n{extra}")
}

/// Finding 2: one request with a far-future time or a huge duration used to kill the store
/// thread (every later call 503, `/healthz` still 200). Each is refused now, and the store
/// keeps serving.
#[test]
fn far_times_and_huge_durations_are_refused_and_the_store_keeps_working() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start(&runner(&worker.url(), ""));
    for body in [
        r#"{"payload":{},"run_after":253402300800}"#,
        r#"{"payload":{},"run_after":18446744073709551615}"#,
        r#"{"payload":{},"retry_delay":1000000000000}"#,
        r#"{"payload":{},"retry_delay":18446744073709551}"#,
        r#"{"payload":{},"timeout":1000000000000}"#,
    ] {
        let r = api.post("/job/foo", body);
        // 400 on fireworq's routes, as fireworq answers; the message says why.
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some(), "{body}");
    }
    let r = api.post(
        "/job/foo/batch",
        r#"[{"payload":1},{"run_after":999999999999}]"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    for delayed in ["1000000000000", "253402300800", "1e300"] {
        let r = api.post(&format!("/q/x?delayed={delayed}"), "{}");
        assert_eq!(r.status, 400, "delayed={delayed}: {}", r.text());
    }
    // The queue definition's durations were bounded already; polling_interval too now.
    let r = api.put("/queue/big", r#"{"polling_interval":18446744073709551615}"#);
    assert_eq!(r.status, 400, "{}", r.text());

    // The store is alive: jobs are taken, listed and delivered.
    let r = api.post("/job/foo", r#"{"payload":{"n":1}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(worker.wait_for(1)[0].body_str(), r#"{"n":1}"#);
    let r = api.post("/q/x?delayed=253402300799", "{}");
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api.get("/queue/x/deferred");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["jobs"][0]["next_try"],
        "9999-12-31T23:59:59.000Z",
        "{}",
        r.text()
    );
    assert_eq!(api.get("/healthz").status, 200);
    assert_eq!(api.get("/readyz").status, 200);
}

/// Finding 12: the durable path clamped a worker's `Retry-After` to one day, not to the
/// runner's `max_retry_after` (default 1 h) the README documents.
#[test]
fn durable_retry_after_is_clamped_to_the_runners_max_retry_after() {
    let worker = Worker::start(|_, i| {
        if i == 0 {
            Reply::Status(503, vec![("Retry-After", "7200".into())], b"busy".to_vec())
        } else {
            Reply::ok()
        }
    });
    let (_d, _r, api) = start(&runner(&worker.url(), "  max_retry_after: 1s\n"));
    let r = api.post("/job/foo", r#"{"payload":{"n":1}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // Clamped to 1 s: the second attempt comes well inside the test's deadline (7200 s before).
    let got = worker.wait_for(2);
    assert_eq!(got[1].attempt(), 2);
}

/// The durable path honours a worker's `Retry-After` (below the clamp): the second attempt
/// comes no sooner than it asks, and not at the clamp either. The store's own backoff would
/// retry after about a second, so ignoring the header fails the lower bound.
#[test]
fn durable_retry_after_is_honoured() {
    let worker = Worker::start(|_, i| {
        if i == 0 {
            Reply::Status(503, vec![("Retry-After", "4".into())], b"busy".to_vec())
        } else {
            Reply::ok()
        }
    });
    let (_d, _r, api) = start(&runner(&worker.url(), "  max_retry_after: 60s\n"));
    let r = api.post("/job/foo", r#"{"payload":{"n":1}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = worker.wait_for(2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= std::time::Duration::from_millis(3500) && gap < std::time::Duration::from_secs(15),
        "second attempt after {gap:?}, asked for 4 s"
    );
}

/// Finding 11: the auth scheme is case-insensitive (RFC 9110 §11.1).
#[test]
fn bearer_scheme_is_case_insensitive() {
    let (_d, _r, api) = start("api:\n  listen: 127.0.0.1:0\n  token: s3cret\n");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} s3cret");
        let r = api.call_with("GET", "/queues", None, &[("Authorization", &auth)]);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    let r = api.call_with("GET", "/queues", None, &[("Authorization", "Basic s3cret")]);
    assert_eq!(r.status, 401);
    let r = api.call_with("GET", "/queues", None, &[("Authorization", "bearer wrong")]);
    assert_eq!(r.status, 401);
    let r = api.call_with("GET", "/queues", None, &[("Authorization", "Bearers3cret")]);
    assert_eq!(r.status, 401);
}

/// Finding 9: invalid input is refused with a 4xx instead of taken with a 2xx.
#[test]
fn bodies_a_route_cannot_take_are_refused() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start(&runner(&worker.url(), ""));
    // presque: a body that is not UTF-8 is not JSON (and would be served as application/json).
    for (path, body) in [
        ("/q/bin", &b"{\"a\":\"\xff\xfe\"}"[..]),
        ("/qb/bin", &b"{\"jobs\":[\"\xff\"]}"[..]),
    ] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let r = api.raw(&req);
        assert_eq!(r[0].status, 400, "{path}: {}", r[0].text());
    }
    // Nothing was taken: the queue was not even created.
    // (presque's /j answers zeros for any name, so ask fireworq's route.)
    assert_eq!(api.get("/queue/bin").status, 404);
    // fireworq: a job is a JSON object, not an array read field by field.
    for body in ["[]", r#"["http://127.0.0.1:1/x", {"a":1}]"#] {
        let r = api.post("/job/foo", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains("JSON object"), "{body}: {}", r.text());
    }
    let r = api.post("/job/foo/batch", "[[]]");
    assert_eq!(r.status, 400, "{}", r.text());
    // presque's batch with no jobs answers as fireworq's batch does.
    let r = api.post("/qb/q", r#"{"jobs":[]}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        api.get("/queues/stats").json()["default"]["total_pushes"],
        0
    );
    assert!(worker.received().is_empty());
}

/// Finding 12: whitespace-only FIFO lines were dropped without a count.
#[test]
fn blank_fifo_lines_are_counted() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", "", "");
    let r = Reprow::start(&cfg);
    write_lines(&scene.fifo(), &["a", "   ", "", "\t\r", "b"]);
    worker.wait_for(2);
    let (status, stats) = r.stop();
    assert!(status.success());
    assert_eq!(stats["lines_blank"], 3, "{stats}");
    assert_eq!(stats["lines_invalid"], 0, "{stats}");
    assert_eq!(worker.received().len(), 2);
}

/// Finding 5: a pull worker whose lease expired cannot ack (or fail) the job another worker
/// holds now: every hand-out carries a lease token, and a stale one gets 409.
#[test]
fn stale_pull_lease_token_is_refused() {
    let (_d, _r, api) = start("");
    let r = api.put(
        "/queue/pq",
        r#"{"mode":"pull","lease":true,"lease_timeout":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = api.post("/q/pq", r#"{"n":1}"#).json()["id"]
        .as_u64()
        .unwrap();

    let a = api.get("/q/pq");
    assert_eq!(a.status, 200);
    let token_a = a.header("X-Reprow-Lease").expect("lease token").to_string();
    // A's lease runs out; B gets the job with a new token.
    let deadline = Instant::now() + DEADLINE;
    let b = loop {
        let b = api.get("/q/pq");
        if b.status == 200 {
            break b;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(b.header("X-Reprow-Job-Id"), Some(id.to_string().as_str()));
    let token_b = b.header("X-Reprow-Lease").expect("lease token").to_string();
    assert_ne!(token_a, token_b);

    let path = format!("/q/pq/{id}");
    let r = api.call_with("DELETE", &path, None, &[("X-Reprow-Lease", &token_a)]);
    assert_eq!(r.status, 409, "stale ack: {}", r.text());
    let r = api.call_with(
        "PUT",
        &format!("/q/pq?id={id}"),
        None,
        &[("X-Reprow-Lease", &token_a)],
    );
    assert_eq!(r.status, 409, "stale failure report: {}", r.text());
    for garbage in ["garbage", "+1", "-1", "1.0", "99999999999999999999"] {
        let r = api.call_with("DELETE", &path, None, &[("X-Reprow-Lease", garbage)]);
        assert_eq!(r.status, 400, "{garbage}: {}", r.text());
    }
    // The job is still B's, and B's ack with its token is taken.
    assert_eq!(api.get("/j/pq?detail=1").json()["job_grabbed"], 1);
    let r = api.call_with("DELETE", &path, None, &[("X-Reprow-Lease", &token_b)]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(api.get("/j/pq?detail=1").json()["job_grabbed"], 0);

    // An ack without a token is taken, as presque's clients send none.
    let id = api.post("/q/pq", r#"{"n":2}"#).json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(api.get("/q/pq").status, 200);
    assert_eq!(api.delete(&format!("/q/pq/{id}")).status, 204);

    // A queue that requires the token refuses an ack without one.
    let r = api.put(
        "/queue/strict",
        r#"{"mode":"pull","lease":true,"lease_timeout":60,"require_lease_token":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = api.post("/q/strict", "{}").json()["id"].as_u64().unwrap();
    let got = api.get("/q/strict");
    let token = got.header("X-Reprow-Lease").unwrap().to_string();
    let path = format!("/q/strict/{id}");
    assert_eq!(api.delete(&path).status, 400);
    let r = api.call_with("DELETE", &path, None, &[("X-Reprow-Lease", &token)]);
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Finding 8, end to end: framing a proxy in front could read differently is refused with 400
/// at once (a chunk line ending in a bare LF used to wait for the 10 s deadline, then 408).
#[test]
fn lenient_framing_is_refused_at_once() {
    let (_d, _r, api) = start("");
    for req in [
        &b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nContent-Length: +2\r\n\r\n{}"[..],
        b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\n{}\r\n0\r\n\r\n",
        b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
        b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ] {
        let r = api.raw(req);
        assert_eq!(r[0].status, 400, "{:?}: {}", String::from_utf8_lossy(req), r[0].text());
    }
    assert_eq!(api.get("/queue/f").status, 404, "nothing was enqueued");
    // The grammar's chunk extensions are fine.
    let r = api.raw(
        b"POST /q/f HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a=\"b\"\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(r[0].status, 201, "{}", r[0].text());
}

/// Finding 5: `/qb` hand-outs carry their lease tokens too, in the order of their ids.
#[test]
fn batch_pulls_carry_lease_tokens() {
    let (_d, _r, api) = start("");
    for n in 0..3 {
        assert_eq!(api.post("/q/bq", &format!(r#"{{"n":{n}}}"#)).status, 201);
    }
    let r = api.get("/qb/bq?batch_size=3&lease=1");
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r
        .header("X-Reprow-Job-Ids")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let leases: Vec<String> = r
        .header("X-Reprow-Leases")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(leases.len(), 3);
    // Each token acks its own job only.
    let r = api.call_with(
        "DELETE",
        &format!("/q/bq/{}", ids[0]),
        None,
        &[("X-Reprow-Lease", &leases[1])],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    for (id, lease) in ids.iter().zip(&leases) {
        let r = api.call_with(
            "DELETE",
            &format!("/q/bq/{id}"),
            None,
            &[("X-Reprow-Lease", lease)],
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert_eq!(api.get("/j/bq").json()["job_count"], 0);
    // Pop-and-forget has no lease and no token.
    assert_eq!(api.post("/q/bq", "{}").status, 201);
    let r = api.get("/qb/bq?forget=1");
    assert!(r.header("X-Reprow-Leases").is_none());
    let r2 = api.post("/q/bq", "{}");
    assert_eq!(r2.status, 201);
    assert!(api.get("/q/bq?forget=1").header("X-Reprow-Lease").is_none());
    assert_eq!(r.status, 200);
}
