//! fireworq's HTTP handlers, ported from its own test suite (fireworq/fireworq at 361c169:
//! `web/job_test.go`, `web/queue_test.go`, `web/routing_test.go`, `web/misc_test.go`) and the
//! request/answer examples of `doc/api.md`. The Go tests call the handlers with a mocked
//! service; here the same requests go to a real reprow over a socket, and the cases that only
//! a mock can produce (a failing MySQL, a driver without an inspector: 500/501) are left out.

use serde_json::{json, Value};

use crate::checks::Checks;
use crate::common::{start_durable, HttpReply, Reply, Worker};

fn is_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// `web/job_test.go` `TestPostJob` and `TestIncomingJob`, and doc/api.md's `POST /job`.
#[test]
fn post_job() {
    let worker =
        Worker::start(|_, _| Reply::Status(200, vec![], br#"{"status":"success"}"#.to_vec()));
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/job_test.go TestPostJob, TestIncomingJob");

    // TestPostJob: "/job/$category should only accept POST method".
    c.check(
        "GET /job is 405",
        api.get("/job/test_job0").status == 405,
        "",
    );
    let r = api.put("/job/test_job0", "{}");
    c.check("PUT /job is 405", r.status == 405, r.status);

    // "POST /job/$category should reject invalid input": each is 400.
    for body in [
        format!(r#"{{"url":"{url}","payload":{{}},"run_after":"foo"}}"#),
        format!(r#"{{"url":"{url}","payload":aaa}}"#),
        format!(r#"{{"url":"{url}","payload":"\u"}}"#),
        // No url, and the default queue has no worker of its own.
        r#"{"payload":{}}"#.to_string(),
    ] {
        let r = api.post("/job/test_job0", &body);
        c.check(
            &format!("{body} is 400"),
            r.status == 400,
            format!("{} {}", r.status, r.text()),
        );
    }

    // "POST /job/$category should accept a job" / "should return a pushed job".
    let r = api.post(
        "/job/test_job1",
        &format!(r#"{{"url":"{url}","payload":{{}}}}"#),
    );
    c.check(
        "a job is accepted",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    let v = json_or_null(&r);
    c.check("the answer has a numeric id", v["id"].is_u64(), &v);
    c.check("queue_name is default", v["queue_name"] == "default", &v);
    c.check("category echoed", v["category"] == "test_job1", &v);
    c.check("url echoed", v["url"] == url.as_str(), &v);
    c.check("payload echoed", v["payload"] == json!({}), &v);

    // "should accept an arbitrary payload": a string payload comes back as that string.
    let r = api.post(
        "/job/test_job2",
        &format!(r#"{{"url":"{url}","payload":"foo bar"}}"#),
    );
    c.check(
        "a string payload is accepted",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    c.check(
        "its payload is the string",
        json_or_null(&r)["payload"] == "foo bar",
        r.text(),
    );

    // "should accept an empty payload".
    let r = api.post("/job/test_job3", &format!(r#"{{"url":"{url}"}}"#));
    c.check(
        "no payload is accepted",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    let p = &json_or_null(&r)["payload"];
    c.check("the payload is empty", p.is_null() || *p == "", r.text());

    // TestIncomingJob: a job that sets nothing has no delay, no retries, no retry delay and
    // no timeout (0); doc/api.md gives the same defaults.
    let v = json_or_null(&api.post(
        "/job/test_job",
        &format!(r#"{{"url":"{url}","payload":"foo"}}"#),
    ));
    for (field, want) in [
        ("run_after", 0),
        ("max_retries", 0),
        ("retry_delay", 0),
        ("timeout", 0),
    ] {
        c.check(&format!("default {field} is {want}"), v[field] == want, &v);
    }
    let v = json_or_null(&api.post(
        "/job/test_job",
        &format!(r#"{{"url":"{url}","payload":{{}},"run_after":60,"max_retries":5,"retry_delay":120,"timeout":10}}"#),
    ));
    for (field, want) in [
        ("run_after", 60),
        ("max_retries", 5),
        ("retry_delay", 120),
        ("timeout", 10),
    ] {
        c.check(&format!("{field} {want} is kept"), v[field] == want, &v);
    }
    // doc/api.md: "`0` means no timeout", so 0 is a value a client may send.
    let r = api.post(
        "/job/test_job",
        &format!(r#"{{"url":"{url}","timeout":0}}"#),
    );
    c.check(
        "timeout 0 is accepted",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );

    // Go's decoder ignores fields it does not know: Fireworqonsole's "New Job" form sends
    // `category` in the body (client/new-job).
    let r = api.post(
        "/job/test_job",
        &format!(r#"{{"category":"test_job","url":"{url}","payload":{{"a":1}}}}"#),
    );
    c.check(
        "an unknown field is ignored",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    c.finish();
}

fn json_or_null(r: &HttpReply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// `web/queue_test.go` `TestGetQueueList`, `TestGetQueue`, `TestPutQueue`, `TestDeleteQueue`,
/// `TestGetQueueNode`, `TestGetQueueStats`, `TestGetQueueListStats`.
#[test]
fn queues() {
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/queue_test.go queue definitions, node and stats");

    let r = api.put("/queue/test_queue3", r#""foo""#);
    c.check(
        "PUT /queue/$name should reject invalid input (400)",
        r.status == 400,
        format!("{} {}", r.status, r.text()),
    );

    let r = api.put(
        "/queue/test_queue4",
        r#"{"name":"test_queue","polling_interval":500,"max_workers":50}"#,
    );
    c.check(
        "PUT /queue/$name should accept a queue definition",
        r.status == 200,
        r.status,
    );
    let v = json_or_null(&r);
    c.check(
        "... should return a defined queue",
        v["polling_interval"] == 500 && v["max_workers"] == 50,
        &v,
    );
    c.check(
        "... should ignore the queue name in the body",
        v["name"] == "test_queue4",
        &v,
    );
    let r = api.put("/queue/test_queue5", "{}");
    c.check(
        "PUT /queue/$name should accept an empty definition",
        r.status == 200,
        r.status,
    );
    let r = api.put(
        "/queue/test_queue6",
        r#"{"max_dispatches_per_second":1.25,"max_burst_size":5}"#,
    );
    let v = json_or_null(&r);
    c.check(
        "... should accept a queue definition with throttle config",
        r.status == 200 && v["max_dispatches_per_second"] == 1.25 && v["max_burst_size"] == 5,
        &v,
    );

    let r = api.get("/queues");
    let list = json_or_null(&r);
    c.check("GET /queues should succeed", r.status == 200, r.status);
    c.check(
        "GET /queues should return defined queues",
        list.as_array()
            .is_some_and(|l| l.iter().any(|q| q["name"] == "test_queue4")),
        &list,
    );

    let r = api.get("/queue/test_queue4");
    c.check("GET /queue/$name should succeed", r.status == 200, r.status);
    c.check(
        "... should return a defined queue",
        json_or_null(&r)["max_workers"] == 50,
        r.text(),
    );
    c.check(
        "GET /queue/$name should return 404 for an undefined queue",
        api.get("/queue/nothing").status == 404,
        "",
    );

    // TestGetQueueNode: the node active on the queue, `{"id": string, "host": string}`.
    let r = api.get("/queue/test_queue4/node");
    let v = json_or_null(&r);
    c.check(
        "GET /queue/$name/node should succeed",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    c.check(
        "... should return correct node info",
        v["id"].is_string() && v["host"].is_string(),
        &v,
    );
    c.check(
        "GET /queue/$name/node should return 404 for an undefined queue",
        api.get("/queue/nothing/node").status == 404,
        "",
    );

    // TestGetQueueStats and doc/api.md: the counters, every one an integer.
    let keys = [
        "total_pushes",
        "total_pops",
        "total_successes",
        "total_failures",
        "total_permanent_failures",
        "total_completes",
        "total_elapsed",
        "pushes_per_second",
        "pops_per_second",
        "total_workers",
        "idle_workers",
        "active_nodes",
    ];
    let r = api.get("/queue/test_queue4/stats");
    let v = json_or_null(&r);
    c.check(
        "GET /queue/queue1/stats should succeed",
        r.status == 200,
        r.status,
    );
    c.check(
        "... should return a stats",
        keys.iter().all(|k| is_int(&v[k])),
        &v,
    );
    c.check(
        "every value of the stats object is an integer",
        v.as_object().is_some_and(|o| o.values().all(is_int)),
        &v,
    );
    c.check(
        "GET /queue/queue1/stats should return 404 if the queue is not found",
        api.get("/queue/nothing/stats").status == 404,
        "",
    );
    let r = api.get("/queues/stats");
    let v = json_or_null(&r);
    c.check(
        "GET /queues/stats should succeed",
        r.status == 200,
        r.status,
    );
    c.check(
        "GET /queues/stats should return stats of defined queues",
        keys.iter().all(|k| is_int(&v["test_queue4"][k])),
        &v,
    );

    // TestDeleteQueue: the definition deleted comes back; then it is gone.
    let r = api.delete("/queue/test_queue4");
    c.check(
        "DELETE /queue/$name should succeed",
        r.status == 200 && json_or_null(&r)["max_workers"] == 50,
        r.text(),
    );
    c.check(
        "... and the queue is gone",
        api.get("/queue/test_queue4").status == 404,
        "",
    );
    c.check(
        "DELETE /queue/$name should return 404 for an undefined queue",
        api.delete("/queue/test_queue4").status == 404,
        "",
    );
    c.finish();
}

/// `web/routing_test.go` (`TestGetRoutingList`, `TestGetRouting`, `TestPutRouting`,
/// `TestDeleteRouting`) and the `{category:.+}` route of `web/application.go`.
#[test]
fn routings() {
    let worker =
        Worker::start(|_, _| Reply::Status(200, vec![], br#"{"status":"success"}"#.to_vec()));
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/routing_test.go and {category:.+}");
    c.check(
        "PUT /queue for the routings",
        api.put("/queue/test_queue1", "{}").status == 200,
        "",
    );

    c.check(
        "GET /routing/$category should return 404",
        api.get("/routing/test_job1").status == 404,
        "",
    );
    let r = api.put("/routing/test_job1", r#""foo""#);
    c.check(
        "PUT /routing/$name should reject invalid input (400)",
        r.status == 400,
        format!("{} {}", r.status, r.text()),
    );
    let r = api.put("/routing/test_job1", r#"{"queue_name":"undefined"}"#);
    c.check(
        "PUT /routing/$category should not accept undefined queue (404)",
        r.status == 404,
        r.status,
    );
    let r = api.put("/routing/test_job1", r#"{"queue_name":"test_queue1"}"#);
    let v = json_or_null(&r);
    c.check(
        "PUT /routing/$category should succeed",
        r.status == 200,
        r.status,
    );
    c.check(
        "PUT /routing/$name should return a defined routing",
        v == json!({"queue_name": "test_queue1", "job_category": "test_job1"}),
        &v,
    );
    let v = json_or_null(&api.get("/routings"));
    c.check(
        "GET /routings should return defined routings",
        v.as_array().is_some_and(|l| {
            l.contains(&json!({"queue_name": "test_queue1", "job_category": "test_job1"}))
        }),
        &v,
    );
    let v = json_or_null(&api.get("/routing/test_job1"));
    c.check(
        "GET /routing/$name should return a defined routing",
        v["queue_name"] == "test_queue1",
        &v,
    );
    let r = api.delete("/routing/test_job1");
    c.check(
        "DELETE /routing/$name should return a deleted routing",
        r.status == 200 && json_or_null(&r)["job_category"] == "test_job1",
        r.text(),
    );
    c.check(
        "DELETE /routing/$category should return 404",
        api.delete("/routing/test_job1").status == 404,
        "",
    );

    // `{category:.+}`: a category is anything after the prefix, `/` included. Fireworqonsole
    // escapes it with Go's url.QueryEscape (`/` as %2F, a space as `+`); curl sends it as is.
    for (path, category) in [
        ("/routing/mail%2Fwelcome", "mail/welcome"),
        ("/routing/mail/welcome", "mail/welcome"),
        ("/routing/user:42@example", "user:42@example"),
        ("/routing/caf%C3%A9%20au%20lait", "café au lait"),
    ] {
        let r = api.put(path, r#"{"queue_name":"test_queue1"}"#);
        c.check(
            &format!("PUT {path}"),
            r.status == 200 && json_or_null(&r)["job_category"] == category,
            format!("{} {}", r.status, r.text()),
        );
        let job_path = path.replacen("/routing/", "/job/", 1);
        let r = api.post(&job_path, &format!(r#"{{"url":"{}"}}"#, worker.url()));
        let v = json_or_null(&r);
        c.check(
            &format!("POST {job_path} is routed"),
            r.status == 200 && v["queue_name"] == "test_queue1" && v["category"] == category,
            format!("{} {}", r.status, r.text()),
        );
    }
    c.finish();
}

/// `web/misc_test.go` (`TestServeVersion`, `TestServeSettings`) and the `/stats` route of
/// `web/application.go`.
#[test]
fn misc() {
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("web/misc_test.go and /stats");
    let r = api.get("/version");
    c.check(
        "GET /version should return a version string",
        r.status == 200 && !r.text().trim().is_empty(),
        r.text(),
    );
    let r = api.get("/settings");
    let v = json_or_null(&r);
    c.check(
        "GET /settings should return settings",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );
    c.check(
        "settings are a map of strings",
        v.as_object()
            .is_some_and(|o| !o.is_empty() && o.values().all(Value::is_string)),
        &v,
    );
    let r = api.get("/stats");
    c.check(
        "GET /stats answers a JSON object",
        r.status == 200 && json_or_null(&r).is_object(),
        format!("{} {}", r.status, r.text()),
    );
    c.finish();
}
