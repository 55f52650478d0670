//! What a fireworq worker sees and how its answer ends the job (fireworq/fireworq at 361c169:
//! `dispatcher/worker/http_test.go` `TestWork`, `jobqueue/jobqueue.go` `Complete`, the payload
//! rules of `web/job.go` `DecodePayload` and `doc/api.md` `POST /job`), plus the
//! `{"status": "SUCCESS" | "RETRY" | "DROP"}` answers of Dapr's pub/sub subscribers
//! (docs.dapr.io, "Publish and subscribe", message status), through a real reprow to a real
//! worker.

use std::time::Duration;

use serde_json::Value;

use crate::checks::{deliveries, poll_json, Checks};
use crate::common::{start_durable, Reply, Worker};
use crate::fireworq_jobs::echo_worker;

const WAIT: Duration = Duration::from_secs(5);

fn failed_messages(api: &crate::common::Api, queue: &str) -> Vec<Value> {
    let v = poll_json(
        api,
        &format!("/queue/{queue}/failed"),
        Duration::from_millis(1),
        |_| true,
    );
    v["failed_jobs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn outcomes_by_the_answer() {
    let worker = echo_worker();
    let url = worker.url();
    // A worker that answers by HTTP status only: 500 for /fail, 404 for /gone.
    let plain = Worker::start(|req, _| {
        if req.path.ends_with("/fail") {
            Reply::Status(500, vec![], b"oops".to_vec())
        } else {
            Reply::Status(404, vec![], b"no such thing".to_vec())
        }
    });
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("dispatcher/worker/http_test.go TestWork, jobqueue.go Complete");
    api.put("/queue/q1", "{}");
    api.put("/routing/test", r#"{"queue_name":"q1"}"#);
    let push = |payload: &str, extra: &str| {
        api.post(
            "/job/test",
            &format!(r#"{{"url":"{url}","payload":{payload}{extra}}}"#),
        )
    };

    // "Worker request should succeed": the worker gets the payload, answers success.
    let ok = r#"{"status":"success","message":"foo bar"}"#;
    push(ok, "");
    c.check(
        "success is delivered once",
        deliveries(&worker, ok, 1, WAIT) == 1,
        "",
    );
    let got = worker.received();
    let req = got.iter().find(|r| r.body_str() == ok);
    c.check(
        "the payload is POSTed as application/json",
        req.is_some_and(|r| r.header("Content-Type") == Some("application/json")),
        "",
    );

    // "Worker request should fail": 200 {"status":"failure"}; no max_retries means none.
    let fail = r#"{"status":"failure","message":"boom"}"#;
    push(fail, "");
    c.check(
        "a failure with no max_retries runs once",
        deliveries(&worker, fail, 1, WAIT) == 1,
        "",
    );
    // With max_retries 2 and retry_delay 0, three deliveries.
    let fail3 = r#"{"status":"failure","message":"again"}"#;
    push(fail3, r#","max_retries":2"#);
    c.check(
        "max_retries 2 gives three deliveries",
        deliveries(&worker, fail3, 3, WAIT) == 3,
        "",
    );
    // "Worker request should permanently fail": no retry whatever max_retries says.
    let perm = r#"{"status":"permanent-failure","message":"never"}"#;
    push(perm, r#","max_retries":3"#);
    c.check(
        "a permanent failure runs once",
        deliveries(&worker, perm, 1, WAIT) == 1,
        "",
    );

    // Dapr's statuses decide the same way.
    let s = r#"{"status":"SUCCESS"}"#;
    push(s, r#","max_retries":3"#);
    c.check(
        "Dapr SUCCESS runs once",
        deliveries(&worker, s, 1, WAIT) == 1,
        "",
    );
    let retry = r#"{"status":"RETRY"}"#;
    push(retry, r#","max_retries":1"#);
    c.check(
        "Dapr RETRY is retried",
        deliveries(&worker, retry, 2, WAIT) == 2,
        "",
    );
    let drop = r#"{"status":"DROP"}"#;
    push(drop, r#","max_retries":3"#);
    c.check(
        "Dapr DROP runs once",
        deliveries(&worker, drop, 1, WAIT) == 1,
        "",
    );

    // An answer without such a status: the HTTP status decides (reprow's worker contract).
    let other = r#"{"status":"ok"}"#;
    push(other, r#","max_retries":3"#);
    c.check(
        "200 {\"status\":\"ok\"} is done",
        deliveries(&worker, other, 1, WAIT) == 1,
        "",
    );
    api.post(
        "/job/test",
        &format!(
            r#"{{"url":"http://{}/fail","payload":"x","max_retries":1}}"#,
            plain.addr
        ),
    );
    api.post(
        "/job/test",
        &format!(
            r#"{{"url":"http://{}/gone","payload":"y","max_retries":3}}"#,
            plain.addr
        ),
    );
    c.check(
        "a 500 is retried",
        deliveries(&plain, "x", 2, WAIT) == 2,
        "",
    );
    c.check("a 404 is not", deliveries(&plain, "y", 1, WAIT) == 1, "");

    // `Complete`: the failure log keeps the worker's result, the stats count every failed
    // attempt in total_failures and every job that failed for good (permanently or out of
    // retries) in total_permanent_failures. 7 jobs ended: ok, fail, fail3, perm, SUCCESS,
    // RETRY, DROP, plus other, x and y = 10.
    let stats = poll_json(&api, "/queue/q1/stats", WAIT, |v| {
        v["total_completes"] == 10
    });
    c.check(
        "every job completed",
        stats["total_completes"] == 10,
        &stats,
    );
    c.check("successes counted", stats["total_successes"] == 3, &stats);
    // failed attempts: fail 1, fail3 3, perm 1, RETRY 2, DROP 1, x 2, y 1 = 11.
    c.check(
        "total_failures counts every failed attempt",
        stats["total_failures"] == 11,
        &stats,
    );
    // failed for good: fail, fail3, perm, RETRY, DROP, x, y = 7.
    c.check(
        "total_permanent_failures counts exhausted retries too",
        stats["total_permanent_failures"] == 7,
        &stats,
    );
    let log = failed_messages(&api, "q1");
    let entry = |m: &str| {
        log.iter()
            .find(|e| e["result"]["message"] == m)
            .cloned()
            .unwrap_or(Value::Null)
    };
    c.check(
        "failure's message is the worker's",
        entry("boom")["result"]["status"] == "failure",
        Value::Array(log.clone()),
    );
    c.check(
        "exhausted retries: fail_count 3",
        entry("again")["fail_count"] == 3,
        entry("again"),
    );
    c.check(
        "permanent-failure recorded as such",
        entry("never")["result"]["status"] == "permanent-failure",
        entry("never"),
    );
    c.check(
        "a 500's body is its message",
        entry("oops")["result"]["code"] == 500,
        Value::Array(log.clone()),
    );
    c.finish();
}

#[test]
fn payloads_and_defaults() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/job.go DecodePayload, doc/api.md POST /job defaults");
    // doc/api.md: "If it is a JSON string, then the raw string value not a JSON string will be
    // a request body".
    api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":"foo bar"}}"#),
    );
    c.check(
        "a string payload is POSTed raw",
        deliveries(&worker, "foo bar", 1, WAIT) == 1,
        format!(
            "{:?}",
            worker
                .received()
                .iter()
                .map(|r| r.body_str())
                .collect::<Vec<_>>()
        ),
    );
    api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":"caf\u00e9 \"quoted\""}}"#),
    );
    c.check(
        "escapes are decoded",
        deliveries(&worker, "café \"quoted\"", 1, WAIT) == 1,
        "",
    );
    // Other JSON goes as written.
    api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":[1, 2]}}"#),
    );
    c.check(
        "an array goes as written",
        deliveries(&worker, "[1, 2]", 1, WAIT) == 1,
        "",
    );
    // `null` and no payload: an empty body.
    api.post("/job/test", &format!(r#"{{"url":"{url}","payload":null}}"#));
    api.post("/job/test", &format!(r#"{{"url":"{url}"}}"#));
    c.check(
        "null and no payload are empty bodies",
        deliveries(&worker, "", 2, WAIT) == 2,
        "",
    );

    // A job that sets no timeout has none (doc/api.md: "`0` means no timeout"): the job
    // shows 0, and a job that asks for 0 is served by a slow worker.
    let r = api.post(
        "/job/later",
        &format!(r#"{{"url":"{url}","run_after":300}}"#),
    );
    let id = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)["id"].clone();
    let job = poll_json(
        &api,
        &format!("/queue/default/job/{id}"),
        Duration::from_millis(1),
        |_| true,
    );
    c.check(
        "a job that sets no timeout shows timeout 0",
        job["timeout"] == 0 && job["max_retries"] == 0 && job["retry_delay"] == 0,
        &job,
    );
    let slow = Worker::start(|_, _| {
        Reply::After(
            Duration::from_millis(1500),
            Box::new(Reply::Status(
                200,
                vec![],
                br#"{"status":"success"}"#.to_vec(),
            )),
        )
    });
    let r = api.post(
        "/job/test",
        &format!(r#"{{"url":"{}","payload":"slow","timeout":0}}"#, slow.url()),
    );
    c.check("timeout 0 is accepted", r.status == 200, r.text());
    let v = poll_json(&api, "/queue/default/stats", Duration::from_secs(8), |v| {
        v["total_successes"] == 6
    });
    c.check(
        "... and the slow worker's answer counts",
        slow.received().len() == 1 && v["total_successes"] == 6,
        &v,
    );
    c.finish();
}

/// reprow's own behaviour stays one setting away: a queue's `outcome` pins how answers are
/// read, its `max_retries` / `retry_delay` / `timeout` apply to fireworq jobs that set none.
#[test]
fn reprow_settings_still_apply() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("reprow settings on fireworq routes");
    api.put("/queue/bystatus", r#"{"outcome":"status"}"#);
    api.put("/routing/s", r#"{"queue_name":"bystatus"}"#);
    api.put("/queue/pinned", r#"{"outcome":"fireworq"}"#);
    api.put("/routing/p", r#"{"queue_name":"pinned"}"#);
    api.put("/queue/retrying", r#"{"max_retries":2,"retry_delay":0}"#);
    api.put("/routing/r", r#"{"queue_name":"retrying"}"#);

    let f = r#"{"status":"failure","n":1}"#;
    api.post(
        "/job/s",
        &format!(r#"{{"url":"{url}","payload":{f},"max_retries":3}}"#),
    );
    c.check(
        "outcome: status reads only the HTTP status",
        deliveries(&worker, f, 1, WAIT) == 1,
        "",
    );
    let v = poll_json(&api, "/queue/bystatus/stats", WAIT, |v| {
        v["total_successes"] == 1
    });
    c.check("... so 200 is a success", v["total_successes"] == 1, &v);

    // outcome: fireworq is fireworq's own reading: a status it does not know, a body that is
    // not JSON, are failures ("should fail for illegal response" / "broken response").
    // One after the other, so the failed log's order is known.
    for (n, body) in [r#"{"status":"ok"}"#, r#""not an object""#]
        .iter()
        .enumerate()
    {
        api.post("/job/p", &format!(r#"{{"url":"{url}","payload":{body}}}"#));
        poll_json(&api, "/queue/pinned/stats", WAIT, |v| {
            v["total_completes"] == n + 1
        });
    }
    let v = poll_json(&api, "/queue/pinned/stats", WAIT, |v| {
        v["total_permanent_failures"] == 2
    });
    c.check(
        "outcome: fireworq fails an unknown status and a non-object",
        v["total_permanent_failures"] == 2,
        &v,
    );
    // reprow's `?order=asc` on the failed log: oldest failure first (fireworq's orders are
    // newest first).
    let v = poll_json(&api, "/queue/pinned/failed?order=asc", WAIT, |_| true);
    c.check(
        "?order=asc lists the oldest failure first",
        v["failed_jobs"][0]["payload"] == serde_json::json!({"status": "ok"})
            && v["failed_jobs"][1]["payload"] == "not an object",
        &v,
    );

    let g = r#"{"status":"failure","n":2}"#;
    api.post("/job/r", &format!(r#"{{"url":"{url}","payload":{g}}}"#));
    c.check(
        "a queue's max_retries applies to jobs that set none",
        deliveries(&worker, g, 3, WAIT) == 3,
        "",
    );
    c.finish();
}

/// Jobs without a `url` of their own go to their queue's worker, with the same defaults as
/// jobs that name one: fireworq's when the job and the queue set nothing, the job's own
/// fields when it sets them, the queue's when it sets them (reprow's opt-in).
#[test]
fn jobs_on_a_queues_worker_keep_their_own_fields() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("reprow settings: jobs on a queue's worker");
    api.put("/queue/plain", &format!(r#"{{"url":"{url}"}}"#));
    api.put("/routing/plain", r#"{"queue_name":"plain"}"#);
    api.put(
        "/queue/set",
        &format!(r#"{{"url":"{url}","timeout":5,"max_retries":0,"retry_delay":0}}"#),
    );
    api.put("/routing/set", r#"{"queue_name":"set"}"#);

    let a = r#"{"status":"failure","n":"a"}"#;
    api.post("/job/plain", &format!(r#"{{"payload":{a}}}"#));
    c.check(
        "fireworq's defaults: one delivery",
        deliveries(&worker, a, 1, WAIT) == 1,
        "",
    );
    let b = r#"{"status":"failure","n":"b"}"#;
    api.post(
        "/job/plain",
        &format!(r#"{{"payload":{b},"max_retries":2}}"#),
    );
    c.check(
        "the job's max_retries: three deliveries",
        deliveries(&worker, b, 3, WAIT) == 3,
        "",
    );
    // The queue sets a timeout and a retry policy of 0 retries: the job's own max_retries
    // still wins.
    let d = r#"{"status":"failure","n":"d"}"#;
    api.post("/job/set", &format!(r#"{{"payload":{d},"max_retries":2}}"#));
    c.check(
        "the job's max_retries over the queue's",
        deliveries(&worker, d, 3, WAIT) == 3,
        "",
    );
    let e = r#"{"status":"failure","n":"e"}"#;
    api.post("/job/set", &format!(r#"{{"payload":{e}}}"#));
    c.check(
        "the queue's max_retries 0",
        deliveries(&worker, e, 1, WAIT) == 1,
        "",
    );
    c.finish();
}
