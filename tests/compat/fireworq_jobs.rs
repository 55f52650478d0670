//! fireworq's job inspection and failure log (fireworq/fireworq at 361c169: `web/queue_test.go`
//! `TestGetQueueGrabbed`/`Waiting`/`Deferred`, `TestGetQueueJob`, `TestDeleteQueueJob`,
//! `TestGetQueueFailed`, `TestGetQueueFailedJob`, `TestDeleteQueueFailedJob`; `web/queue.go`'s
//! `limit` and `order` parameters; the answer examples of `doc/api.md`), against a real reprow
//! and a real worker.

use std::time::Duration;

use serde_json::Value;

use crate::checks::{deliveries, poll_json, Checks};
use crate::common::{start_durable, HttpReply, Reply, Worker};

fn json_or_null(r: &HttpReply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// A worker that answers each job with its own payload, as fireworq's `http_test.go` worker
/// does: the payload says how the job ends.
pub fn echo_worker() -> Worker {
    Worker::start(|req, _| {
        Reply::Status(
            200,
            vec![("Content-Type", "application/json".into())],
            req.body.clone(),
        )
    })
}

#[test]
fn job_lists() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/queue_test.go job lists");
    api.put("/queue/q1", "{}");
    api.put("/routing/test", r#"{"queue_name":"q1"}"#);
    // A deferred job (run_after 300) stays in the lists.
    let r = api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":{{"tag":"test"}},"run_after":300}}"#),
    );
    let id = json_or_null(&r)["id"].as_u64().unwrap_or(0);

    for list in ["grabbed", "waiting", "deferred"] {
        let r = api.get(&format!("/queue/q1/{list}"));
        let v = json_or_null(&r);
        c.check(
            &format!("GET /queue/$name/{list} should succeed"),
            r.status == 200 && v["jobs"].is_array(),
            r.text(),
        );
        c.check(
            &format!("GET /queue/$name/{list} should return 404 for an undefined queue"),
            api.get(&format!("/queue/nothing/{list}")).status == 404,
            "",
        );
        // web/queue.go: `limit` that is not a number is the default (100); any number is
        // taken; `order` other than asc/desc is desc.
        for q in [
            "limit=foo",
            "limit=5000",
            "limit=0",
            "order=asc",
            "order=sideways",
            "limit=10&cursor=&order=desc",
        ] {
            let r = api.get(&format!("/queue/q1/{list}?{q}"));
            c.check(
                &format!("GET /queue/q1/{list}?{q} is 200"),
                r.status == 200,
                format!("{} {}", r.status, r.text()),
            );
        }
    }
    let v = json_or_null(&api.get("/queue/q1/deferred"));
    let job = &v["jobs"][0];
    for field in [
        "id",
        "category",
        "url",
        "status",
        "created_at",
        "next_try",
        "timeout",
        "fail_count",
        "max_retries",
        "retry_delay",
    ] {
        c.check(
            &format!("a listed job has {field}"),
            !job[field].is_null(),
            job,
        );
    }
    c.check(
        "a deferred job's status is claimed",
        job["status"] == "claimed",
        job,
    );

    // TestGetQueueJob / TestDeleteQueueJob.
    let r = api.get(&format!("/queue/q1/job/{id}"));
    c.check(
        "GET /queue/$name/job/$id should succeed",
        r.status == 200 && json_or_null(&r)["id"] == id,
        r.text(),
    );
    c.check(
        "GET /queue/$name/job/$id should reject invalid ID",
        api.get("/queue/q1/job/abc").status == 400,
        "",
    );
    c.check(
        "GET /queue/$name/job/$id should 404 for an unknown job",
        api.get("/queue/q1/job/999999").status == 404,
        "",
    );
    c.check(
        "GET /queue/$name/job/$id should return 404 for an undefined queue",
        api.get(&format!("/queue/nothing/job/{id}")).status == 404,
        "",
    );
    let r = api.delete(&format!("/queue/q1/job/{id}"));
    c.check(
        "DELETE /queue/$name/job/$id answers the job",
        r.status == 200 && json_or_null(&r)["id"] == id,
        r.text(),
    );
    c.check(
        "... and it is gone",
        api.get(&format!("/queue/q1/job/{id}")).status == 404,
        "",
    );
    c.finish();
}

#[test]
fn failure_log() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/queue_test.go failure log, doc/api.md failed jobs");
    api.put("/queue/q1", "{}");
    api.put("/routing/test", r#"{"queue_name":"q1"}"#);
    // Two jobs that fail (fireworq's default: no retry), the second pushed later.
    let first = r#"{"status":"failure","message":"first"}"#;
    let second = r#"{"status":"failure","message":"second"}"#;
    api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":{first}}}"#),
    );
    deliveries(&worker, first, 1, Duration::from_secs(5));
    api.post(
        "/job/test",
        &format!(r#"{{"url":"{url}","payload":{second}}}"#),
    );
    deliveries(&worker, second, 1, Duration::from_secs(5));
    let v = poll_json(&api, "/queue/q1/stats", Duration::from_secs(5), |v| {
        v["total_completes"] == 2
    });

    let r = api.get("/queue/q1/failed");
    let list = json_or_null(&r);
    c.check(
        "GET /queue/$name/failed should succeed",
        r.status == 200,
        format!("{} {v}", r.text()),
    );
    let entries = list["failed_jobs"].as_array().cloned().unwrap_or_default();
    c.check("both failed jobs are in the log", entries.len() == 2, &list);
    let e = entries.first().cloned().unwrap_or(Value::Null);
    for field in [
        "id",
        "job_id",
        "category",
        "url",
        "payload",
        "result",
        "fail_count",
        "failed_at",
        "created_at",
    ] {
        c.check(
            &format!("a failed entry has {field}"),
            !e[field].is_null(),
            &e,
        );
    }
    // doc/api.md: `order=failed` (the default) puts the most recent failure first, `created`
    // the most recently pushed job first; here both say the second job.
    c.check(
        "the most recently failed comes first",
        e["result"]["message"] == "second",
        &e,
    );
    c.check(
        "result.status is the worker's failure",
        e["result"]["status"] == "failure",
        &e,
    );
    c.check(
        "result.code is the HTTP status",
        e["result"]["code"] == 200,
        &e,
    );
    c.check(
        "result.message is the worker's message",
        e["result"]["message"] == "second",
        &e,
    );
    c.check(
        "fail_count counts the one attempt",
        e["fail_count"] == 1,
        &e,
    );
    for order in ["failed", "created"] {
        let r = api.get(&format!("/queue/q1/failed?order={order}"));
        let v = json_or_null(&r);
        c.check(
            &format!("?order={order} lists the newest first"),
            r.status == 200 && v["failed_jobs"][0]["result"]["message"] == "second",
            r.text(),
        );
    }
    let r = api.get("/queue/q1/failed?order=created&limit=1");
    let v = json_or_null(&r);
    c.check(
        "limit=1 gives one entry and a cursor",
        v["failed_jobs"].as_array().is_some_and(|l| l.len() == 1) && v["next_cursor"].is_string(),
        r.text(),
    );
    // Recorded whether or not there is a cursor, so the count of checks is the same.
    let cur = v["next_cursor"].as_str().unwrap_or_default();
    let next = json_or_null(&api.get(&format!(
        "/queue/q1/failed?order=created&limit=1&cursor={cur}"
    )));
    c.check(
        "the cursor goes on to the older job",
        !cur.is_empty() && next["failed_jobs"][0]["result"]["message"] == "first",
        &next,
    );
    for q in ["limit=foo", "limit=5000", "limit=0"] {
        let r = api.get(&format!("/queue/q1/failed?{q}"));
        c.check(
            &format!("GET /queue/q1/failed?{q} is 200"),
            r.status == 200,
            format!("{} {}", r.status, r.text()),
        );
    }
    c.check(
        "GET /queue/$name/failed should return 404 for an undefined queue",
        api.get("/queue/nothing/failed").status == 404,
        "",
    );

    let fid = e["id"].as_u64().unwrap_or(0);
    let r = api.get(&format!("/queue/q1/failed/{fid}"));
    c.check(
        "GET /queue/$name/failed/$id should succeed",
        r.status == 200 && json_or_null(&r)["id"] == fid,
        r.text(),
    );
    c.check(
        "GET /queue/$name/failed/$id should reject invalid ID",
        api.get("/queue/q1/failed/abc").status == 400,
        "",
    );
    c.check(
        "GET /queue/$name/failed/$id should return 404 for an unknown job",
        api.get("/queue/q1/failed/999999").status == 404,
        "",
    );
    c.check(
        "GET /queue/$name/failed/$id should return 404 for an undefined queue",
        api.get(&format!("/queue/nothing/failed/{fid}")).status == 404,
        "",
    );
    let r = api.delete(&format!("/queue/q1/failed/{fid}"));
    c.check(
        "DELETE /queue/$name/failed/$id answers the entry",
        r.status == 200 && json_or_null(&r)["id"] == fid,
        r.text(),
    );
    c.check(
        "... and it is gone",
        api.get(&format!("/queue/q1/failed/{fid}")).status == 404,
        "",
    );
    c.finish();
}
