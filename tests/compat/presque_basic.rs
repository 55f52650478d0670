//! presque's own test, `t/10_basic.t` (franckcuny/presque), run against a real reprow: the
//! same requests in the same order, the same expectations. Each check carries the message
//! the Perl test gives it.

use serde_json::{json, Value};

use super::checks::Checks;
use crate::common::{start_durable, Api, HttpReply};

const Q: &str = "presque_test";
const WORKER: &str = "worker_foo";

fn json_of(r: &HttpReply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// `create_job`: a POST with `Content-Type: application/json` and the worker id header.
fn create_job(api: &Api, body: &Value, path: &str) -> HttpReply {
    api.call_with(
        "POST",
        path,
        Some(&body.to_string()),
        &[
            ("Content-Type", "application/json"),
            ("X-presque-workerid", WORKER),
        ],
    )
}

/// `get_jobs`: a batch fetch with the worker id header.
fn get_jobs(api: &Api) -> HttpReply {
    api.call_with(
        "GET",
        &format!("/qb/{Q}"),
        None,
        &[("X-presque-workerid", WORKER)],
    )
}

/// `t/10_basic.t`, step by step.
#[test]
fn presque_t_10_basic() {
    let (_dir, _reprow, api) = start_durable("");
    let mut c = Checks::new("presque t/10_basic.t");
    let q_url = format!("/q/{Q}");

    // get queue informations
    let r = api.get(&format!("/j/{Q}"));
    c.eq(
        "good job info result",
        json_of(&r),
        json!({"job_processed": 0, "job_count": 0, "queue_name": Q, "job_failed": 0}),
    );

    // no job in queue
    let r = api.get(&q_url);
    c.ok(
        "no job for this queue",
        !(200..300).contains(&r.status),
        r.status,
    );
    c.eq(
        "error message is valid",
        json_of(&r),
        json!({"error": "no job"}),
    );

    // create a new job
    let job = json!({"foo": "bar"});
    let r = create_job(&api, &job, &q_url);
    c.ok("new job inserted", (200..300).contains(&r.status), r.status);

    // info about a queue
    let r = api.get(&format!("/j/{Q}"));
    c.eq(
        "valid jobs info",
        json_of(&r),
        json!({"job_count": 1, "job_failed": 0, "job_processed": 0, "queue_name": Q}),
    );

    // do a basic job
    let r = api.get(&q_url);
    c.ok("job fetched", (200..300).contains(&r.status), r.status);
    c.eq("job is good", json_of(&r), job.clone());

    // insert a delayed job
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    create_job(
        &api,
        &json!({"foo": "baz"}),
        &format!("{q_url}?delayed={at}"),
    );
    let r = api.get(&q_url);
    c.ok("no job", !(200..300).contains(&r.status), r.status);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = api.get(&q_url);
    c.ok("job found", (200..300).contains(&r.status), r.status);
    c.ok("delayed job", r.text().contains("baz"), r.text());

    // control queue
    let r = api.get(&format!("/control/{Q}"));
    let v = json_of(&r);
    // is_deeply compares scalars as strings: 1 and "1" both pass.
    let status_is = |v: &Value, want: &str| {
        v["status"].as_u64().map(|n| n.to_string()).as_deref() == Some(want)
            || v["status"].as_str() == Some(want)
    };
    c.ok(
        "queue is open",
        status_is(&v, "1") && v["queue"] == Q && v.as_object().is_some_and(|o| o.len() == 2),
        &v,
    );

    // close queue
    let r = api.post(&format!("/control/{Q}"), r#"{"status":"stop"}"#);
    c.ok(
        "queue status change",
        r.text().contains("updated"),
        r.text(),
    );

    // status of a closed queue
    let r = api.get(&format!("/control/{Q}"));
    c.ok("queue is closed", r.text().contains('0'), r.text());

    // can't get job on a stopped queue
    let r = api.get(&q_url);
    c.ok(
        "no job for this queue",
        !(200..300).contains(&r.status),
        r.status,
    );

    // open queue
    let r = api.post(&format!("/control/{Q}"), r#"{"status":"start"}"#);
    c.ok(
        "queue status change",
        r.text().contains("updated"),
        r.text(),
    );

    // batch inserts
    let jobs = json!([{"foo": 1}, {"foo": 2}, {"foo": 3}, {"foo": 4}]);
    api.call_with(
        "POST",
        &format!("/qb/{Q}"),
        Some(&json!({ "jobs": jobs }).to_string()),
        &[("Content-Type", "application/json")],
    );

    // batch fetch: a list of JSON texts, each decoded on its own
    let r = get_jobs(&api);
    let decoded: Option<Vec<Value>> = json_of(&r).as_array().and_then(|items| {
        items
            .iter()
            .map(|i| i.as_str().and_then(|s| serde_json::from_str(s).ok()))
            .collect()
    });
    c.eq("valid jobs", decoded, jobs.as_array().cloned());

    // insert uniq job
    let r = create_job(&api, &json!({"foo": 1}), &format!("{q_url}?uniq=a"));
    c.eq("new uniq job inserted", r.status, 201);
    let r = create_job(&api, &json!({"foo": 1}), &format!("{q_url}?uniq=a"));
    c.ok(
        "job already exists",
        r.text().contains("job already exists"),
        r.text(),
    );
    c.eq("can't insert duplicate uniq job", r.status, 400);

    // fetch job
    let r = api.get(&q_url);
    c.eq("fetch a job", json_of(&r), json!({"foo": 1}));

    // no job in queue
    let r = api.get(&q_url);
    c.eq("no more job in queue", r.status, 404);

    // job failed: the job itself is PUT back
    let r = api.call_with(
        "PUT",
        &q_url,
        Some(r#"{"foo":1}"#),
        &[("Content-Type", "application/json")],
    );
    c.eq("valid HTTP code returned", r.status, 201);

    // status
    let r = api.get(&format!("/status/{Q}"));
    c.eq("valid status", json_of(&r), json!({"queue": Q, "size": 1}));

    // worker stats for queue
    let r = api.get(&format!("/w/?queue_name={Q}"));
    c.eq(
        "valid stats for queue",
        json_of(&r),
        json!({"workers_list": [], "queue_name": Q, "processed": 7, "failed": 1}),
    );

    // full process with worker id: register
    let r = api.call_with(
        "POST",
        &format!("/w/{Q}"),
        Some(""),
        &[
            ("Content-Type", "application/json"),
            ("X-presque-workerid", WORKER),
        ],
    );
    c.eq("worker is reg.", r.status, 201);

    let r = create_job(&api, &json!({"foo": "bar"}), &q_url);
    c.eq("job created", r.status, 201);

    let r = get_jobs(&api);
    c.eq("got job", r.status, 200);

    let r = api.get(&format!("/w/?queue_name={Q}"));
    c.eq(
        "valid stats for queue",
        json_of(&r),
        json!({"workers_list": [WORKER], "queue_name": Q, "processed": 9, "failed": 1}),
    );

    // unreg.
    let r = api.call_with(
        "DELETE",
        &format!("/w/{Q}"),
        None,
        &[("X-presque-workerid", WORKER)],
    );
    c.eq("worker is unreg.", r.status, 204);

    // purge queue
    let r = api.delete(&q_url);
    c.eq("queue purge", r.status, 204);

    c.finish();
}
