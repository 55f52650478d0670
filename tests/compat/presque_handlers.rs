//! The behaviour presque's handlers document in their POD and code (franckcuny/presque,
//! `lib/presque/*Handler.pm`, `lib/presque/Role/*.pm`), beyond what `t/10_basic.t` covers:
//! unknown queues, a stopped queue, batch sizes, `uniq` keys, `with_desc`, the worker routes.

use serde_json::{json, Value};

use super::checks::Checks;
use crate::common::{start_durable, HttpReply};

fn json_of(r: &HttpReply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

#[test]
fn presque_handlers_documented_behaviour() {
    let (_dir, _reprow, api) = start_durable("");
    let mut c = Checks::new("presque handlers");
    let json_ct = [("Content-Type", "application/json")];

    // JobQueueHandler.pm: counts of a queue nobody used yet.
    let r = api.get("/j/fresh");
    c.eq(
        "JobQueueHandler: GET /j of a new queue is 200",
        r.status,
        200,
    );
    c.eq(
        "JobQueueHandler: zero counts",
        json_of(&r),
        json!({"queue_name": "fresh", "job_count": 0, "job_failed": 0, "job_processed": 0}),
    );
    // StatusHandler.pm: LLEN of a missing list is 0.
    let r = api.get("/status/fresh");
    c.eq(
        "StatusHandler: size of a new queue",
        (r.status, json_of(&r)),
        (200, json!({"queue": "fresh", "size": 0})),
    );
    // ControlHandler.pm: the status key of a queue never created is unset (null).
    let r = api.get("/control/fresh");
    c.eq(
        "ControlHandler: GET of a new queue",
        (r.status, json_of(&r)),
        (200, json!({"queue": "fresh", "status": null})),
    );
    // RestQueueHandler.pm: purge of anything answers 204.
    c.eq(
        "RestQueueHandler: DELETE /q of a new queue",
        api.delete("/q/fresh2").status,
        204,
    );
    let r = api.get("/q/fresh3");
    c.eq(
        "RestQueueHandler: GET of a new queue",
        (r.status, json_of(&r)),
        (404, json!({"error": "no job"})),
    );

    // A fetched job is gone: presque LPOPs it and deletes its key.
    api.call_with("POST", "/q/gone", Some(r#"{"n":1}"#), &json_ct);
    c.eq("RestQueueHandler: fetch", api.get("/q/gone").status, 200);
    c.eq(
        "RestQueueHandler: a fetched job leaves the queue",
        json_of(&api.get("/j/gone"))["job_count"].clone(),
        json!(0),
    );
    c.eq(
        "RestQueueHandler: a fetch counts as processed",
        json_of(&api.get("/j/gone"))["job_processed"].clone(),
        json!(1),
    );

    // ControlHandler.pm: bad requests.
    let r = api.post("/control/gone", r#"{"status":"pause"}"#);
    c.eq("ControlHandler: an unknown status is 400", r.status, 400);
    let r = api.post("/control/gone", "");
    c.eq(
        "ControlHandler: content is missing",
        (r.status, json_of(&r)),
        (400, json!({"error": "content is missing"})),
    );
    // Role/Error.pm: a closed queue answers 404 "queue is closed".
    api.call_with("POST", "/q/closed", Some(r#"{"n":1}"#), &json_ct);
    let r = api.post("/control/closed", r#"{"status":"stop"}"#);
    c.eq(
        "ControlHandler: POST answer",
        json_of(&r),
        json!({"queue": "closed", "response": "updated"}),
    );
    let r = api.get("/q/closed");
    c.eq(
        "RestQueueHandler: GET of a closed queue",
        (r.status, json_of(&r)),
        (404, json!({"error": "queue is closed"})),
    );
    c.eq(
        "RestQueueBatchHandler: GET of a closed queue is 404",
        api.get("/qb/closed").status,
        404,
    );
    c.eq(
        "ControlHandler: a stopped queue still takes jobs",
        api.call_with("POST", "/q/closed", Some(r#"{"n":2}"#), &json_ct)
            .status,
        201,
    );

    // RestQueueBatchHandler.pm: 10 jobs a batch by default; 201 on insert; 404 when empty.
    let jobs: Vec<Value> = (0..12).map(|i| json!({ "i": i })).collect();
    let r = api.call_with(
        "POST",
        "/qb/batch",
        Some(&json!({ "jobs": jobs }).to_string()),
        &json_ct,
    );
    c.eq("RestQueueBatchHandler: batch insert is 201", r.status, 201);
    let r = api.get("/qb/batch");
    c.eq(
        "RestQueueBatchHandler: 10 jobs by default",
        json_of(&r).as_array().map(Vec::len),
        Some(10),
    );
    c.eq(
        "RestQueueBatchHandler: ?batch_size=",
        json_of(&api.get("/qb/batch?batch_size=5"))
            .as_array()
            .map(Vec::len),
        Some(2),
    );
    let r = api.get("/qb/batch");
    c.eq(
        "RestQueueBatchHandler: empty queue",
        (r.status, json_of(&r)),
        (404, json!({"error": "no job"})),
    );
    c.eq(
        "RestQueueBatchHandler: PUT is not supported in batch mode",
        api.put("/qb/batch", r#"{"jobs":[]}"#).status,
        400,
    );

    // RestQueueHandler.pm: `uniq` keys are released when the job is fetched.
    let u = |api: &crate::common::Api| {
        api.call_with("POST", "/q/uq?uniq=k", Some(r#"{"u":1}"#), &json_ct)
            .status
    };
    c.eq("RestQueueHandler: uniq insert", u(&api), 201);
    c.eq("RestQueueHandler: uniq duplicate", u(&api), 400);
    api.get("/q/uq");
    c.eq("RestQueueHandler: uniq key released on fetch", u(&api), 201);
    let r = api.call_with("POST", "/q/uq", Some(""), &json_ct);
    c.eq(
        "WithContent.pm: job is missing",
        (r.status, json_of(&r)),
        (400, json!({"error": "job is missing"})),
    );

    // RestQueueHandler.pm `_failed_job`: PUT re-inserts the job and counts a failure.
    let r = api.call_with("PUT", "/q/fails", Some(r#"{"f":1}"#), &json_ct);
    c.eq("RestQueueHandler: PUT is 201", r.status, 201);
    let v = json_of(&api.get("/j/fails"));
    c.eq(
        "RestQueueHandler: PUT counts a failure and queues the job",
        (v["job_failed"].clone(), v["job_count"].clone()),
        (json!(1), json!(1)),
    );
    c.eq(
        "RestQueueHandler: the PUT job is fetched as sent",
        json_of(&api.get("/q/fails")),
        json!({"f": 1}),
    );

    // StatusHandler.pm: `with_desc` lists the waiting jobs' texts; `/status/` lists queues.
    api.call_with("POST", "/q/desc", Some(r#"{"d":1}"#), &json_ct);
    let v = json_of(&api.get("/status/desc?with_desc=1"));
    c.eq(
        "StatusHandler: with_desc",
        v,
        json!({"queue": "desc", "size": 1, "jobs": [r#"{"d":1}"#]}),
    );
    let v = json_of(&api.get("/status/"));
    let names: Vec<&str> = v["queues"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    c.ok(
        "StatusHandler: GET /status/ lists the queues",
        names.contains(&"desc") && v["size"] == json!(names.len()),
        &v,
    );

    // WorkerHandler.pm: register, stats by worker, the list of workers, unregister.
    let wid = [("X-presque-workerid", "w1")];
    let r = api.call_with("POST", "/w/wq", Some(""), &wid);
    c.eq("WorkerHandler: register is 201", r.status, 201);
    let r = api.call("POST", "/w/wq", Some(""));
    c.eq(
        "WorkerHandler: worker_id is missing",
        (r.status, json_of(&r)),
        (400, json!({"error": "worker_id is missing"})),
    );
    api.call_with("POST", "/q/wq", Some(r#"{"w":1}"#), &json_ct);
    api.call_with("GET", "/q/wq", None, &wid);
    let v = json_of(&api.get("/w/?worker_id=w1"));
    c.eq(
        "WorkerHandler: stats of a worker",
        (
            v["worker_id"].clone(),
            v["processed"].clone(),
            v["failed"].clone(),
        ),
        (json!("w1"), json!(1), json!(0)),
    );
    c.eq(
        "WorkerHandler: list of workers",
        json_of(&api.get("/w/")),
        json!(["w1"]),
    );
    let r = api.call_with("DELETE", "/w/wq", None, &wid);
    c.eq("WorkerHandler: unregister is 204", r.status, 204);
    c.eq(
        "WorkerHandler: list after unregister",
        json_of(&api.get("/w/")),
        json!([]),
    );

    c.finish();
}
