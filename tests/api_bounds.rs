//! Every limit of the enqueue routes at its bound and one step past it, on the real binary:
//! exactly the limit is taken, one more is refused with the status and a message that names
//! what was wrong. (Issue 21's audit: cargo-mutants found these bounds untested, so `>` could
//! become `>=` or the check vanish unnoticed.)

mod common;

use common::{start_durable, Api};

const LIMITS: &str =
    "api:\n  listen: 127.0.0.1:0\n  max_payload_bytes: 2000\n  max_batch_jobs: 3\n";

/// A JSON string of exactly `n` bytes (quotes included).
fn json_string(n: usize) -> String {
    format!("\"{}\"", "a".repeat(n - 2))
}

/// A JSON object of exactly `n` bytes.
fn json_object(n: usize) -> String {
    format!(r#"{{"a":"{}"}}"#, "a".repeat(n - 8))
}

fn error_of(r: &common::HttpReply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

fn start() -> (tempfile::TempDir, common::Reprow, Api) {
    start_durable(LIMITS)
}

#[test]
fn presque_payload_and_batch_bounds() {
    let (_d, _r, api) = start();
    assert_eq!(api.post("/q/p", &json_string(2000)).status, 201);
    let r = api.post("/q/p", &json_string(2001));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("2000"), "{}", r.text());

    let batch = |n: usize, size: usize| {
        let jobs = vec![json_string(size); n].join(",");
        api.post("/qb/p", &format!("{{\"jobs\":[{jobs}]}}"))
    };
    let r = batch(3, 2000);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["ids"].as_array().map(Vec::len), Some(3));
    let r = batch(4, 10);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("more than 3 jobs"), "{}", r.text());
    let r = batch(2, 2001);
    assert_eq!(r.status, 413, "{}", r.text());
    // Nothing of a refused batch was stored: 1 + 3 jobs.
    assert_eq!(api.get("/status/p").json()["size"], 4);
}

#[test]
fn fireworq_payload_batch_and_run_after_bounds() {
    let (_d, _r, api) = start();
    let job = |payload_len: usize, extra: &str| {
        format!(
            r#"{{"url":"http://127.0.0.1:9/","payload":{}{extra}}}"#,
            json_object(payload_len)
        )
    };
    let r = api.post("/job/f", &job(2000, ""));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.post("/job/f", &job(2001, ""));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("2000"), "{}", r.text());
    // A string payload is sent without its quotes, so the limit counts its text.
    let text = |n: usize| {
        format!(
            r#"{{"url":"http://127.0.0.1:9/","payload":{}}}"#,
            json_string(n + 2)
        )
    };
    assert_eq!(api.post("/job/f", &text(2000)).status, 200);
    let r = api.post("/job/f", &text(2001));
    assert_eq!(r.status, 413, "{}", r.text());

    // run_after: at most 365 days.
    let r = api.post("/job/f", &job(10, r#","run_after":31536000"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["run_after"], 31536000);
    let r = api.post("/job/f", &job(10, r#","run_after":31536001"#));
    // fireworq's routes answer 400 to a job they cannot take.
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_of(&r).contains("run_after"), "{}", r.text());

    let batch = |jobs: Vec<String>| api.post("/job/f/batch", &format!("[{}]", jobs.join(",")));
    let r = batch(vec![job(2000, ""); 3]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jobs"].as_array().map(Vec::len), Some(3));
    let r = batch(vec![job(10, ""); 4]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("more than 3 jobs"), "{}", r.text());
    // A batch error names the job and the reason.
    let r = batch(vec![job(10, ""), job(10, r#","timeout":"soon""#)]);
    assert_eq!(r.status, 400, "{}", r.text());
    let e = error_of(&r);
    assert!(e.starts_with("[1]") && e.contains("timeout"), "{e}");
    let r = api.post(
        "/job/f/batch",
        &format!(r#"{{"jobs":[{},[1]]}}"#, job(10, "")),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let e = error_of(&r);
    assert!(e.starts_with("jobs[1]") && e.contains("object"), "{e}");
    let r = batch(vec![job(10, ""), "{bad".into()]);
    assert_eq!(r.status, 400, "{}", r.text());
    // 1 + 1 + 1 + 3 stored; nothing of the refused ones.
    let stats = api.get("/queue/default/stats").json();
    assert_eq!(stats["total_pushes"], 6, "{stats}");
}

/// An empty `?cursor=` is the first page (as no cursor), on the job lists and the failed log.
#[test]
fn an_empty_cursor_is_the_first_page() {
    let (_d, _r, api) = start();
    for n in 0..3 {
        let r = api.post(
            "/job/c",
            &format!(r#"{{"url":"http://127.0.0.1:9/","payload":{n},"run_after":3600}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let first = api.get("/queue/default/deferred?limit=2");
    assert_eq!(first.status, 200, "{}", first.text());
    let empty = api.get("/queue/default/deferred?limit=2&cursor=");
    assert_eq!(empty.status, 200, "{}", empty.text());
    assert_eq!(first.json()["jobs"], empty.json()["jobs"]);
    assert_eq!(first.json()["jobs"].as_array().map(Vec::len), Some(2));
    let next = first.json()["next_cursor"].as_str().unwrap().to_string();
    let second = api.get(&format!("/queue/default/deferred?limit=2&cursor={next}"));
    assert_eq!(second.json()["jobs"].as_array().map(Vec::len), Some(1));
    let r = api.get("/queue/default/failed?cursor=");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["failed_jobs"], serde_json::json!([]));
    assert_eq!(api.get("/queue/default/failed?cursor=x").status, 400);
}

/// The JSON routes read a body as JSON under a JSON type or none; any other type is 415
/// naming the type (the browser-sendable ones are the point: tests/cross_site.rs).
#[test]
fn json_routes_take_json_types_only() {
    let (_d, _r, api) = start();
    let with_type = |ct: &str| {
        let headers: Vec<(&str, &str)> = if ct == "-" {
            vec![]
        } else {
            vec![("Content-Type", ct)]
        };
        api.call_with("POST", "/q/types", Some(r#"{"n":1}"#), &headers)
    };
    for ct in [
        "-",
        "",
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
        "text/json",
    ] {
        let r = with_type(ct);
        assert_eq!(r.status, 201, "{ct:?}: {}", r.text());
    }
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/xml",
        "text/jsonx",
    ] {
        let r = with_type(ct);
        assert_eq!(r.status, 415, "{ct:?}: {}", r.text());
        assert!(error_of(&r).contains("application/json"), "{}", r.text());
    }
    // A body of the wrong shape as a whole names no path (400, as fireworq answers).
    let r = api.put("/routing/x", r#""just a string""#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_of(&r).starts_with("invalid type"), "{}", r.text());
    let r = api.put("/routing/x", r#"{"queue_name":7}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        error_of(&r).starts_with("queue_name: invalid type"),
        "{}",
        r.text()
    );
}

/// A presque batch pull is one JSON list with one item per job, in the order of its ids:
/// a JSON payload as stored, a job without a payload (fireworq's `payload` is optional) as "".
#[test]
fn a_batch_pull_is_a_json_list_whatever_the_payloads() {
    let (_d, _r, api) = start();
    assert_eq!(api.post("/q/pq", r#"{"a": [1, 2]}"#).status, 201);
    assert_eq!(api.put("/routing/c", r#"{"queue_name":"pq"}"#).status, 200);
    let r = api.post("/job/c", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.get("/qb/pq?batch_size=10&order=asc");
    assert_eq!(r.status, 200, "{}", r.text());
    let ids = r.header("x-reprow-job-ids").unwrap().to_string();
    assert_eq!(ids.split(',').count(), 2, "{ids}");
    // presque's shape: each job's text as a JSON string.
    assert_eq!(r.text(), r#"["{\"a\": [1, 2]}",""]"#);
}
