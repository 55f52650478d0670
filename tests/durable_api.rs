//! The durable queue through its HTTP API, against a real reprow process, a real LMDB file and
//! real worker sockets: every fireworq and presque route, with bad input for each.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::start_durable as start;
use common::{Api, Reply, Worker};
use serde_json::{json, Value};

fn ids(list: &Value) -> Vec<u64> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn fireworq_enqueue_delivers_and_refuses_bad_jobs() {
    let worker = Worker::start(|_, _| Reply::ok());
    let other = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start(&format!(
        "runner:\n  type: http_proxy\n  url: {}\napi:\n  listen: 127.0.0.1:0\n  max_payload_bytes: 2048\n  max_body_bytes: 4096\n  max_batch_jobs: 4\n",
        worker.url()
    ));
    let r = api.post("/job/foo", r#"{"payload":{"id":12345}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["queue_name"], "default");
    assert_eq!(v["category"], "foo");
    assert_eq!(v["payload"], json!({"id": 12345}));
    assert_eq!(v["url"], worker.url());
    let got = worker.wait_for(1);
    assert_eq!(got[0].body_str(), r#"{"id":12345}"#);
    assert_eq!(got[0].header("X-Reprow-Queue"), Some("default"));

    // A per-job URL inside the allow-list (loopback by default) goes there.
    let r = api.post(
        "/job/foo",
        &format!(r#"{{"url":"{}","payload":[1,2]}}"#, other.url()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(other.wait_for(1)[0].body_str(), "[1,2]");

    // Bad input: each refused with the status that names it, nothing stored.
    let bad = [
        (
            r#"{"url":"http://10.1.2.3/work","payload":1}"#,
            400,
            "allowed_origins",
        ),
        (r#"{"url":"ftp://127.0.0.1/","payload":1}"#, 400, "url"),
        (r#"{"payload":1"#, 400, "invalid JSON"),
        // fireworq answers 400 to any job it cannot take; the message names the field.
        (r#"{"payload":1,"timeout":"soon"}"#, 400, "timeout"),
        (r#"{"payload":1,"timeout":86401}"#, 400, "timeout"),
    ];
    for (body, status, needle) in bad {
        let r = api.post("/job/foo", body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.text()
        );
    }
    // Fields fireworq does not know are ignored, as Go's decoder does; `timeout: 0` is
    // fireworq's "no timeout".
    for body in [
        r#"{"payload":1,"colour":"red"}"#,
        r#"{"payload":1,"timeout":0}"#,
    ] {
        let r = api.post("/job/foo", body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
    }
    worker.wait_for(3);
    let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(3000));
    assert_eq!(api.post("/job/foo", &big).status, 413);
    let huge = format!(r#"{{"payload":"{}"}}"#, "x".repeat(5000));
    assert_eq!(api.post("/job/foo", &huge).status, 413);
    let r = api.call_with(
        "POST",
        "/job/foo",
        Some("{}"),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(r.status, 415);
    let r = api.get("/job/foo");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
    // A category takes any characters fireworq's `{category:.+}` takes, not control ones.
    assert_eq!(api.post("/job/bad%0Aname", r#"{"payload":1}"#).status, 400);
    assert_eq!(api.get("/nowhere").status, 404);

    // Batch: one request, one commit, every job delivered.
    let r = api.post(
        "/job/foo/batch",
        r#"[{"payload":{"b":1}},{"payload":{"b":2}},{"payload":{"b":3}}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 3);
    let r = api.post("/job/foo/batch", r#"{"jobs":[{"payload":{"b":4}}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    worker.wait_for(7);
    // A batch with one bad job stores none of them.
    let r = api.post(
        "/job/foo/batch",
        r#"[{"payload":{"b":5}},{"url":"http://8.8.8.8/","payload":1}]"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(api.post("/job/foo/batch", "[]").status, 422);
    let five = [r#"{"payload":1}"#; 5].join(",");
    let r = api.post("/job/foo/batch", &format!("[{five}]"));
    assert_eq!(r.status, 413, "max_batch_jobs is 4: {}", r.text());
    assert_eq!(api.post("/job/foo/batch", r#"{"nope":1}"#).status, 422);
    // 1 + 1 (per-job URL) + 2 (unknown field, timeout 0) + 4 (batches), all in the
    // default queue.
    let stats = api.wait_json("/queue/default/stats", |s| s["total_successes"] == 8);
    assert_eq!(stats["total_pushes"], 8);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(worker.received().len(), 7, "the refused batch must not run");
    assert!(api.get("/version").text().starts_with("reprow "));
}

#[test]
fn queues_and_routings() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start("");
    let r = api.put(
        "/queue/q1",
        &format!(
            r#"{{"max_workers":3,"polling_interval":100,"url":"{}"}}"#,
            worker.url()
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["max_workers"], 3);
    let q = api.get("/queue/q1").json();
    assert_eq!(
        (q["name"].clone(), q["max_workers"].clone()),
        (json!("q1"), json!(3))
    );
    let names: Vec<String> = api
        .get("/queues")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"q1".to_string()) && names.contains(&"default".to_string()),
        "{names:?}"
    );
    // Same definition again: accepted, nothing changes.
    assert_eq!(
        api.put(
            "/queue/q1",
            &format!(
                r#"{{"max_workers":3,"polling_interval":100,"url":"{}"}}"#,
                worker.url()
            )
        )
        .status,
        200
    );

    // fireworq's routes answer 400 to a definition they cannot take, as fireworq does.
    for (body, status) in [
        (r#"{"max_workers":0}"#, 400),
        (r#"{"max_workers":"many"}"#, 400),
        (r#"{"max_burst_size":3}"#, 400),
        (r#"{"url":"gopher://x"}"#, 400),
        (r#"{"wat":1}"#, 400),
        ("{", 400),
    ] {
        assert_eq!(api.put("/queue/q2", body).status, status, "{body}");
    }
    assert_eq!(api.get("/queue/q2").status, 404);
    assert_eq!(api.put("/queue/bad%20name", "{}").status, 400);
    assert_eq!(api.call("PATCH", "/queue/q1", Some("{}")).status, 405);

    // The default queue has no URL here: a job without one is refused with a clear 400.
    let r = api.post("/job/nowhere", r#"{"payload":1}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("url is required"), "{}", r.text());

    let r = api.put("/routing/cat1", r#"{"queue_name":"q1"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"job_category":"cat1","queue_name":"q1"}));
    assert_eq!(api.get("/routing/cat1").json()["queue_name"], "q1");
    assert_eq!(
        api.get("/routings").json(),
        json!([{"job_category":"cat1","queue_name":"q1"}])
    );
    let r = api.post("/job/cat1", r#"{"payload":{"x":1}}"#);
    assert_eq!(r.json()["queue_name"], "q1");
    assert_eq!(worker.wait_for(1)[0].header("X-Reprow-Queue"), Some("q1"));
    assert_eq!(
        api.put("/routing/cat2", r#"{"queue_name":"missing"}"#)
            .status,
        404
    );
    assert_eq!(api.put("/routing/cat2", r#"{"queue":"q1"}"#).status, 400);
    assert_eq!(api.get("/routing/cat2").status, 404);
    assert_eq!(api.delete("/routing/cat1").status, 200);
    assert_eq!(api.get("/routing/cat1").status, 404);
    assert_eq!(api.delete("/routing/cat1").status, 404);

    let stats = api.get("/queues/stats").json();
    assert!(stats["q1"]["total_pushes"].as_u64().is_some(), "{stats}");
    assert_eq!(stats["q1"]["total_workers"], 3);
    assert_eq!(api.delete("/queue/q1").status, 200);
    assert_eq!(api.get("/queue/q1").status, 404);
    assert_eq!(api.get("/queue/q1/stats").status, 404);
    assert_eq!(api.delete("/queue/q1").status, 404);
}

#[test]
fn job_lists_pages_and_single_jobs() {
    // One worker slot that is held for a while: one job grabbed, the rest waiting.
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(3), Box::new(Reply::ok())));
    let (_d, _r, api) = start("");
    api.put(
        "/queue/lists",
        &format!(r#"{{"max_workers":1,"url":"{}"}}"#, worker.url()),
    );
    api.put("/routing/l", r#"{"queue_name":"lists"}"#);
    let mut made = Vec::new();
    for i in 0..4 {
        made.push(
            api.post("/job/l", &format!(r#"{{"payload":{{"n":{i}}}}}"#))
                .json()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let later = api
        .post("/job/l", r#"{"payload":{"n":9},"run_after":3600}"#)
        .json()["id"]
        .as_u64()
        .unwrap();
    worker.wait_for(1);
    let grabbed = api.wait_json("/queue/lists/grabbed", |v| {
        v["jobs"].as_array().unwrap().len() == 1
    });
    assert_eq!(ids(&grabbed), vec![made[0]]);
    assert_eq!(grabbed["jobs"][0]["status"], "grabbed");
    let waiting = api.get("/queue/lists/waiting?order=asc").json();
    assert_eq!(ids(&waiting), made[1..].to_vec());
    let desc = api.get("/queue/lists/waiting").json();
    assert_eq!(
        ids(&desc),
        made[1..].iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(ids(&api.get("/queue/lists/deferred").json()), vec![later]);

    // Pages of one, following next_cursor, visit every waiting job once.
    let mut seen = Vec::new();
    let mut path = "/queue/lists/waiting?limit=1&order=asc".to_string();
    loop {
        let page = api.get(&path).json();
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/queue/lists/waiting?limit=1&order=asc&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 4);
    }
    assert_eq!(seen, made[1..].to_vec());
    assert_eq!(api.get("/queue/lists/waiting?cursor=%%%").status, 400);
    // fireworq's reading of the other parameters: a limit that is not a number is the
    // default, 0 an empty page, an order it does not know newest first.
    assert_eq!(
        ids(&api.get("/queue/lists/waiting?limit=x").json()).len(),
        3
    );
    let empty = api.get("/queue/lists/waiting?limit=0").json();
    assert_eq!(
        (ids(&empty).len(), &empty["next_cursor"]),
        (0, &Value::Null)
    );
    assert_eq!(
        ids(&api.get("/queue/lists/waiting?order=sideways").json()),
        ids(&api.get("/queue/lists/waiting").json())
    );
    assert_eq!(api.get("/queue/nope/waiting").status, 404);

    let one = api.get(&format!("/queue/lists/job/{}", made[2])).json();
    assert_eq!(one["payload"], json!({"n": 2}));
    assert_eq!(one["category"], "l");
    assert_eq!(
        api.delete(&format!("/queue/lists/job/{}", made[2])).status,
        200
    );
    assert_eq!(
        api.get(&format!("/queue/lists/job/{}", made[2])).status,
        404
    );
    assert_eq!(
        api.delete(&format!("/queue/lists/job/{}", made[2])).status,
        404
    );
    assert_eq!(api.get("/queue/lists/job/abc").status, 400);
    assert_eq!(
        api.get("/queue/default/job/1").status,
        404,
        "a job is only found in its queue"
    );
    let s = api.get("/queue/lists/stats").json();
    assert_eq!(
        (
            s["grabbed"].clone(),
            s["waiting"].clone(),
            s["deferred"].clone(),
            s["outstanding_jobs"].clone()
        ),
        (json!(1), json!(2), json!(1), json!(4))
    );
}

#[test]
fn failures_retries_and_the_failed_log() {
    // 400 is permanent; 500 is retried; fireworq mode reads the body. The default queue
    // comes from `runner:`, so its 10 retries with backoff apply to fireworq's jobs too.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let worker = Worker::start(move |req, _| {
        c.fetch_add(1, Ordering::SeqCst);
        match req.body_str().as_str() {
            r#"{"k":"bad"}"# => Reply::status(400),
            r#"{"k":"flaky"}"# => Reply::status(500),
            r#"{"k":"fw-perm"}"# => Reply::Status(
                200,
                vec![],
                br#"{"status":"permanent-failure","message":"nope"}"#.to_vec(),
            ),
            r#"{"k":"fw-ok"}"# => Reply::Status(500, vec![], br#"{"status":"success"}"#.to_vec()),
            _ => Reply::ok(),
        }
    });
    let (_d, _r, api) = start(&format!(
        "runner:\n  type: http_proxy\n  url: {url}\nqueues:\n  fw:\n    url: {url}\n    outcome: fireworq\nroutings:\n  fw: fw\n",
        url = worker.url()
    ));
    let bad = api.post("/job/a", r#"{"payload":{"k":"bad"}}"#).json()["id"]
        .as_u64()
        .unwrap();
    api.post(
        "/job/a",
        r#"{"payload":{"k":"flaky"},"max_retries":1,"retry_delay":0}"#,
    );
    api.post("/job/fw", r#"{"payload":{"k":"fw-perm"}}"#);
    api.post("/job/fw", r#"{"payload":{"k":"fw-ok"}}"#);
    let failed = api.wait_json("/queue/default/failed", |v| {
        v["failed_jobs"].as_array().unwrap().len() == 2
    });
    let entries = failed["failed_jobs"].as_array().unwrap();
    // Newest first.
    assert_eq!(entries[0]["result"]["status"], "failure");
    assert_eq!(entries[0]["result"]["code"], 500);
    assert_eq!(entries[0]["fail_count"], 2, "first try + 1 retry");
    assert_eq!(entries[1]["result"]["status"], "permanent-failure");
    assert_eq!(entries[1]["result"]["code"], 400);
    assert_eq!(entries[1]["job_id"], bad);
    assert_eq!(entries[1]["fail_count"], 1);
    let fw = api.wait_json("/queue/fw/failed", |v| {
        v["failed_jobs"].as_array().unwrap().len() == 1
    });
    assert_eq!(fw["failed_jobs"][0]["result"]["message"], "nope");
    api.wait_json("/queue/fw/stats", |s| s["total_successes"] == 1);
    let s = api.get("/queue/default/stats").json();
    assert_eq!(
        (
            s["failed"].clone(),
            s["total_permanent_failures"].clone(),
            s["outstanding_jobs"].clone()
        ),
        // Both failed for good (the 500 out of retries), as fireworq's `Complete` counts.
        (json!(2), json!(2), json!(0))
    );

    let fid = entries[1]["id"].as_u64().unwrap();
    let one = api.get(&format!("/queue/default/failed/{fid}")).json();
    assert_eq!(one["payload"], json!({"k": "bad"}));
    assert_eq!(api.get("/queue/default/failed/99999").status, 404);
    assert_eq!(api.get("/queue/default/failed/x").status, 400);
    let page = api.get("/queue/default/failed?limit=1&order=asc").json();
    assert_eq!(page["failed_jobs"][0]["id"], fid);
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = api
        .get(&format!(
            "/queue/default/failed?limit=1&order=asc&cursor={next}"
        ))
        .json();
    assert_eq!(page2["failed_jobs"][0]["id"], entries[0]["id"]);

    // Retry: the job runs again (and fails again, permanently: back in the log).
    let before = calls.load(Ordering::SeqCst);
    let r = api.post(&format!("/queue/default/failed/{fid}/retry"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.get(&format!("/queue/default/failed/{fid}")).status, 404);
    api.wait_json("/queue/default/stats", |s| {
        s["total_permanent_failures"] == 3
    });
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        api.post(&format!("/queue/default/failed/{fid}/retry"), "")
            .status,
        404
    );
    let other = entries[0]["id"].as_u64().unwrap();
    assert_eq!(
        api.delete(&format!("/queue/default/failed/{other}")).status,
        200
    );
    assert_eq!(
        api.delete(&format!("/queue/default/failed/{other}")).status,
        404
    );
    assert_eq!(
        api.get(&format!("/queue/default/failed/{other}/retry"))
            .status,
        405
    );
}

#[test]
fn presque_rest_queue() {
    let (_d, _r, api) = start("");
    let r = api.post("/q/pq", r#"{"foo":"bar"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(api.get("/j/pq").json()["job_count"], 1);
    assert!(api.get("/status/").json()["queues"]
        .as_array()
        .unwrap()
        .contains(&json!("pq")));
    assert_eq!(api.get("/status/pq").json(), json!({"queue":"pq","size":1}));

    // Leased pull (reprow's opt-in, `?lease=1`): the job is hidden until acked.
    let got = api.get("/q/pq?lease=1");
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"foo":"bar"}));
    let id = got.header("X-Reprow-Job-Id").unwrap().to_string();
    let none = api.get("/q/pq");
    assert_eq!(none.status, 404);
    assert_eq!(none.json(), json!({"error":"no job"}));
    assert_eq!(api.delete(&format!("/q/pq/{id}")).status, 204);
    assert_eq!(api.delete(&format!("/q/pq/{id}")).status, 404);
    assert_eq!(api.delete("/q/pq/zzz").status, 400);
    assert_eq!(api.get("/j/pq").json()["job_count"], 0);

    // uniq and delayed.
    assert_eq!(api.post("/q/pq?uniq=k1", r#"{"u":1}"#).status, 201);
    let dup = api.post("/q/pq?uniq=k1", r#"{"u":2}"#);
    // presque's answer (`RestQueueHandler.pm`): 400.
    assert_eq!(dup.status, 400);
    assert_eq!(dup.json()["error"], "job already exists");
    // A key is 1 to 507 bytes (LMDB's key limit less the queue id): longer is a 400 that says
    // so, not a 503 from LMDB.
    let long = api.post(&format!("/q/pu?uniq={}", "k".repeat(508)), "{}");
    assert_eq!(long.status, 400, "{}", long.text());
    assert!(long.text().contains("507"), "{}", long.text());
    let longest = format!("/q/pu?uniq={}", "k".repeat(507));
    assert_eq!(api.post(&longest, "{}").status, 201);
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    assert_eq!(
        api.post(&format!("/q/pq?delayed={later}"), r#"{"d":1}"#)
            .status,
        201
    );
    assert_eq!(api.post("/q/pq?delayed=soon", "{}").status, 400);
    let j = api.get("/j/pq?detail=1").json();
    assert_eq!(
        (j["job_count"].clone(), j["job_delayed"].clone()),
        (json!(1), json!(1)),
        "job_count is presque's: the jobs waiting to be fetched"
    );
    // Pop-and-forget takes the due job for good; the delayed one is not due.
    let f = api.get("/q/pq?forget=1");
    assert_eq!(f.json(), json!({"u":1}));
    assert_eq!(api.get("/q/pq?forget=1").status, 404);
    assert_eq!(
        api.post("/q/pq?uniq=k1", r#"{"u":3}"#).status,
        201,
        "the key is free once the job left"
    );
    assert_eq!(api.get("/q/pq?forget=maybe").status, 400);

    // Batches.
    let r = api.post("/qb/pq", r#"{"jobs":[{"b":1},{"b":2},{"b":3}]}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["ids"].as_array().unwrap().len(), 3);
    let b = api.get("/qb/pq?batch_size=2&lease=1");
    assert_eq!(b.json(), json!([r#"{"u":3}"#, r#"{"b":1}"#]));
    let bids: Vec<String> = b
        .header("X-Reprow-Job-Ids")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(bids.len(), 2);
    assert_eq!(api.get("/qb/pq?batch_size=0").status, 400);
    assert_eq!(api.post("/qb/pq", r#"{"jobs":"x"}"#).status, 422);
    assert_eq!(api.post("/qb/pq", r#"[1,2]"#).status, 422);

    // PUT /q: the worker reports a failure; the job comes back after a backoff.
    let r = api.put(&format!("/q/pq?id={}", bids[0]), "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(api.put("/q/pq?id=123456", "").status, 404);
    // The body form of reprow's report (with the lease header) still needs an id.
    let r = api.call_with(
        "PUT",
        "/q/pq",
        Some(r#"{"nope":1}"#),
        &[("X-Reprow-Lease", "1")],
    );
    assert_eq!(r.status, 422);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api.get("/qb/pq?batch_size=10");
        if r.status == 200
            && r.header("X-Reprow-Job-Ids")
                .unwrap()
                .split(',')
                .any(|i| i == bids[0])
        {
            break;
        }
        assert!(Instant::now() < deadline, "the nacked job never came back");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Control: a stopped queue accepts jobs and hands none out.
    assert_eq!(
        api.get("/control/pq").json(),
        json!({"queue":"pq","status":1})
    );
    assert_eq!(
        api.post("/control/pq", r#"{"status":"stop"}"#).json(),
        json!({"queue":"pq","response":"updated"})
    );
    assert_eq!(api.get("/control/pq").json()["status"], 0);
    assert_eq!(api.post("/q/pq", r#"{"while":"stopped"}"#).status, 201);
    assert_eq!(api.get("/q/pq").status, 404);
    assert_eq!(api.post("/control/pq", r#"{"status":"pause"}"#).status, 400);
    assert_eq!(
        api.post("/control/nope", r#"{"status":"stop"}"#).status,
        404
    );
    assert_eq!(
        api.post("/control/pq", r#"{"status":"start"}"#).json()["response"],
        "updated"
    );
    assert_eq!(api.get("/q/pq").json(), json!({"while":"stopped"}));

    // Purge.
    assert_eq!(api.delete("/q/pq").status, 204);
    assert_eq!(api.get("/status/pq").json()["size"], 0);
    assert_eq!(api.post("/q/pq", "not json").status, 400);
    assert_eq!(api.call("PATCH", "/q/pq", None).status, 405);
    assert_eq!(api.get("/q/unknown").status, 404);
    // `with_desc` of a queue never used: no jobs, not an error.
    assert_eq!(
        api.get("/status/unknown?with_desc=1").json(),
        json!({"queue":"unknown","size":0,"jobs":[]})
    );
    assert_eq!(
        api.get("/j/unknown").json(),
        json!({"queue_name":"unknown","job_count":0,"job_failed":0,"job_processed":0})
    );
}

#[test]
fn pull_lease_expires_and_the_job_comes_back() {
    let (_d, _r, api) =
        start("queues:\n  pl:\n    mode: pull\n    lease: true\n    lease_timeout: 1\n    retry_delay: 0\n");
    api.post("/q/pl", r#"{"x":1}"#);
    let a = api.get("/q/pl");
    let id = a.header("X-Reprow-Job-Id").unwrap().to_string();
    assert_eq!(api.get("/q/pl").status, 404);
    std::thread::sleep(Duration::from_millis(1300));
    let b = api.get("/q/pl");
    assert_eq!(
        b.status, 200,
        "the lease expired: the job is handed out again"
    );
    assert_eq!(b.header("X-Reprow-Job-Id").unwrap(), id);
    // The first handout was attempt 1; one that comes back after its lease expired unacked
    // is the next attempt, as a worker deciding to give up on a poison job needs to see.
    assert_eq!(a.header("X-Reprow-Attempt"), Some("1"));
    assert_eq!(b.header("X-Reprow-Attempt"), Some("2"));
    // The first handout's lease is stale now, and the answer says why.
    let stale = api.call_with(
        "DELETE",
        &format!("/q/pl/{id}"),
        None,
        &[("X-Reprow-Lease", a.header("X-Reprow-Lease").unwrap())],
    );
    assert_eq!(stale.status, 409, "{stale:?}");
    assert!(stale
        .text()
        .contains("its lease expired and it was handed out again"));
    std::thread::sleep(Duration::from_millis(1300));
    let c = api.get("/q/pl");
    assert_eq!(c.header("X-Reprow-Attempt"), Some("3"));
    // Failed deliveries and expiries add up: a failure report makes the next one 4.
    let lease = c.header("X-Reprow-Lease").unwrap().to_string();
    let put = api.call_with(
        "PUT",
        &format!("/q/pl?id={id}"),
        None,
        &[("X-Reprow-Lease", &lease)],
    );
    assert!(put.status < 300, "{put:?}");
    let d = api.get("/q/pl");
    assert_eq!(d.header("X-Reprow-Attempt"), Some("4"), "{d:?}");
    // A token that was never this job's (its lease never expired) is a wrong one, not stale.
    let wrong = api.call_with(
        "DELETE",
        &format!("/q/pl/{id}"),
        None,
        &[("X-Reprow-Lease", "12345")],
    );
    assert_eq!(wrong.status, 409, "{wrong:?}");
    assert!(
        wrong.text().contains("expired and it was handed out again"),
        "its lease did expire twice: {}",
        wrong.text()
    );
    api.post("/q/pl", r#"{"y":1}"#);
    let y = api.get("/q/pl");
    let y_id = y.header("X-Reprow-Job-Id").unwrap();
    let wrong = api.call_with(
        "DELETE",
        &format!("/q/pl/{y_id}"),
        None,
        &[("X-Reprow-Lease", "12345")],
    );
    assert_eq!(wrong.status, 409, "{wrong:?}");
    assert!(
        wrong
            .text()
            .contains("X-Reprow-Lease 12345 is not the lease"),
        "{}",
        wrong.text()
    );
}

#[test]
fn push_timeout_redelivers_delayed_jobs_wait_and_max_workers_holds() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r2, p2) = (running.clone(), peak.clone());
    let worker = Worker::start(move |req, _| {
        if req.body_str().contains("slow") && req.attempt() == 1 {
            return Reply::After(Duration::from_secs(3), Box::new(Reply::ok()));
        }
        if req.body_str().contains("par") {
            let now = r2.fetch_add(1, Ordering::SeqCst) + 1;
            p2.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            r2.fetch_sub(1, Ordering::SeqCst);
        }
        Reply::ok()
    });
    let (_d, _r, api) = start(&format!(
        "queues:\n  par:\n    url: {url}\n    max_workers: 2\n  main:\n    url: {url}\nroutings:\n  par: par\n  main: main\n",
        url = worker.url()
    ));
    // Per-job timeout of 1 s: the first delivery times out and the job runs again.
    api.post(
        "/job/main",
        r#"{"payload":"slow","timeout":1,"max_retries":1,"retry_delay":0}"#,
    );
    // Delayed by run_after: woken by the store's timer.
    let t0 = Instant::now();
    api.post("/job/main", r#"{"payload":"later","run_after":1}"#);
    for _ in 0..6 {
        api.post("/job/par", r#"{"payload":"par"}"#);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = worker.received();
        let slow: Vec<_> = got
            .iter()
            .filter(|r| r.body_str().contains("slow"))
            .collect();
        let later: Vec<_> = got
            .iter()
            .filter(|r| r.body_str().contains("later"))
            .collect();
        let par = got.iter().filter(|r| r.body_str().contains("par")).count();
        if slow.len() >= 2 && later.len() == 1 && par == 6 {
            assert_eq!(slow[1].attempt(), 2);
            assert!(
                later[0].at.duration_since(t0) >= Duration::from_millis(900),
                "ran before its run_after"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow {} later {} par {par}",
            slow.len(),
            later.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "max_workers 2 was exceeded: {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(peak.load(Ordering::SeqCst), 2, "both slots were used");
}

#[test]
fn throttle_spaces_dispatches() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_d, _r, api) = start(&format!(
        "queues:\n  t:\n    url: {}\n    max_dispatches_per_second: 5\n    max_burst_size: 1\nroutings:\n  t: t\n",
        worker.url()
    ));
    let body = (0..6)
        .map(|i| format!(r#"{{"payload":{i}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(api.post("/job/t/batch", &format!("[{body}]")).status, 200);
    let got = worker.wait_for(6);
    let span = got[5].at.duration_since(got[0].at);
    // 5 per second with a bucket of 1: five gaps of 200 ms.
    assert!(
        span >= Duration::from_millis(800),
        "6 dispatches in {span:?}"
    );
}

#[test]
fn http_server_pipelining_limits_and_token() {
    let (_d, r, _) = start("api:\n  listen: 127.0.0.1:0\n  token: s3cret\n  request_timeout: 1s\n  keep_alive_timeout: 1s\n  max_connections: 3\n  max_header_bytes: 2048\n");
    let mut api = Api::new(r.api_addr());
    let denied = api.get("/queues");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(
        api.call_with("GET", "/queues", None, &[("Authorization", "Bearer wrong")])
            .status,
        401
    );
    api.token = Some("s3cret".into());
    assert_eq!(api.get("/queues").status, 200);

    // Three pipelined requests in one write: three answers, in order.
    let auth = "Host: localhost\r\nAuthorization: Bearer s3cret\r\n";
    let req = format!(
        "POST /q/pipe HTTP/1.1\r\n{auth}Content-Length: 7\r\n\r\n{{\"n\":1}}GET /status/pipe HTTP/1.1\r\n{auth}\r\nGET /version HTTP/1.1\r\n{auth}Connection: close\r\n\r\n"
    );
    let replies = api.raw(req.as_bytes());
    assert_eq!(
        replies.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![201, 200, 200]
    );
    assert_eq!(replies[1].json()["size"], 1);
    assert!(replies[2].text().starts_with("reprow"));

    // Expect: 100-continue is honoured (curl sends it for bodies over 1 KiB).
    let body = format!(r#"{{"pad":"{}"}}"#, "p".repeat(1500));
    let req = format!("POST /q/pipe HTTP/1.1\r\n{auth}Expect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let mut s = std::net::TcpStream::connect(api.addr).unwrap();
    use std::io::{BufRead, Read, Write};
    s.write_all(req.as_bytes()).unwrap();
    let mut rd = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    rd.read_line(&mut line).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    assert_eq!(common::read_reply(&mut rd).unwrap().status, 201);

    // A head over the limit, garbage, and a slow client.
    let big = format!(
        "GET /queues HTTP/1.1\r\n{auth}X-Pad: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(api.raw(big.as_bytes())[0].status, 431);
    assert_eq!(api.raw(b"\x16\x03\x01 not http\r\n\r\n")[0].status, 400);
    let mut slow = std::net::TcpStream::connect(api.addr).unwrap();
    slow.write_all(b"GET /queues HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(4));

    // An idle keep-alive connection is closed by reprow after keep_alive_timeout.
    let mut idle = std::net::TcpStream::connect(api.addr).unwrap();
    idle.write_all(format!("GET /version HTTP/1.1\r\n{auth}\r\n").as_bytes())
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut rd = std::io::BufReader::new(idle);
    assert_eq!(common::read_reply(&mut rd).unwrap().status, 200);
    let mut rest = Vec::new();
    let n = rd.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "closed without another byte");
    let idle_for = t.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_secs(4),
        "{idle_for:?}"
    );

    // Connection cap: with 3 open and each in the middle of a request (none idle, so none
    // can be closed to make room), the 4th is answered 503 and closed. (Idle ones make room:
    // tests/hostile.rs.)
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(api.addr).unwrap();
            s.write_all(b"GET /queues HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = std::net::TcpStream::connect(api.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = String::new();
    let _ = (&extra).read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out:?}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        api.get("/queues").status,
        200,
        "served again once connections closed"
    );
}

/// The epoll driver (what reprow falls back to where io_uring is refused) serves the API: on
/// it, a listener left blocking made every core wait in `accept` and no request was answered.
#[test]
fn the_api_answers_on_the_epoll_driver() {
    let worker = Worker::start(|_, _| Reply::ok());
    let (_dir, r, api) = start(&format!(
        "driver: epoll\nthreads: 2\nrunner:\n  type: http_proxy\n  url: {}\n",
        worker.url()
    ));
    for i in 0..4 {
        let reply = api.post("/job/e", &format!(r#"{{"payload":{{"i":{i}}}}}"#));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(worker.wait_for(4).len(), 4);
    assert_eq!(api.get("/queues").status, 200);
    let log = r.log();
    let (status, _) = r.stop();
    assert!(status.success());
    assert!(log.contains(r#""driver":"epoll""#), "{log}");
}

/// The default queue takes `runner.timeout` in whole seconds, as a queue stores them: a
/// sub-second part rounds up, a whole number of seconds stays as it is.
#[test]
fn the_default_queue_takes_the_runners_timeout_rounded_up_to_seconds() {
    for (timeout, secs) in [("1500ms", 2), ("5s", 5)] {
        let (_d, _r, api) = start(&format!(
            "runner:\n  type: http_proxy\n  url: http://127.0.0.1:9/\n  timeout: {timeout}\n"
        ));
        let q = api.get("/queue/default");
        assert_eq!(q.status, 200, "{}", q.text());
        assert_eq!(
            q.json()["timeout"],
            secs,
            "runner.timeout {timeout}: {}",
            q.text()
        );
    }
}

/// A fireworq job that sets only its `timeout`, on a queue that sets its own retries (the
/// default queue takes the runner's): the job's timeout is the one its delivery runs under,
/// not the queue's.
#[test]
fn a_jobs_own_timeout_applies_when_it_sets_nothing_else() {
    let worker = Worker::start(|req, _| {
        if req.attempt() == 1 {
            return Reply::After(Duration::from_secs(3), Box::new(Reply::ok()));
        }
        Reply::ok()
    });
    let (_d, _r, api) = start(&format!(
        "runner:\n  type: http_proxy\n  url: {}\n  timeout: 30s\n  backoff_base: 20ms\n  backoff_max: 100ms\n",
        worker.url()
    ));
    let r = api.post("/job/foo", r#"{"payload":"slow","timeout":1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // The first delivery times out after 1 s (not 30) and the job runs again.
    let got = worker.wait_for(2);
    assert_eq!(got[1].attempt(), 2);
}
