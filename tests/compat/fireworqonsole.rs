//! Every reprow answer that Fireworqonsole's server side decodes, decoded with the shapes of
//! its Go types (fireworq/fireworqonsole at 03b1e94, `api.go`: `map[string]map[string]int64`
//! for `/queues/stats`, `map[string]int64` for `/queue/{name}/stats`, `map[string]string` for
//! `/settings`, `[]map[string]string` for `/routings`, `InspectedJobs{Jobs []{NextTry
//! time.Time}}` for `waiting`/`grabbed?order=asc&limit=1`, the text of `/version`), and the one
//! field mackerel-check-fireworq reads (fireworq/mackerel-check-fireworq at 7d893fb,
//! `lib/fireworq.go`: `total_permanent_failures` of `/queues/stats`, an alert when it grows).
//!
//! Go's `encoding/json` refuses a JSON boolean or a fraction for an `int64` and a number for
//! a `string`, and a failed decode makes the console drop the node's answer (`continue`), so a
//! loose shape here would hide an empty page there.

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use crate::checks::{deliveries, poll_json, Checks};
use crate::common::{start_durable, Api};
use crate::fireworq_jobs::echo_worker;

/// `InspectedJob`: `NextTry time.Time` (RFC 3339 with an offset).
#[derive(Deserialize)]
struct InspectedJob {
    next_try: String,
}

#[derive(Deserialize)]
struct InspectedJobs {
    jobs: Vec<InspectedJob>,
}

fn decode<T: serde::de::DeserializeOwned>(api: &Api, path: &str) -> Result<T, String> {
    let r = api.get(path);
    if r.status >= 300 {
        return Err(format!("{path}: status {} {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("{path}: {e}: {}", r.text()))
}

/// Go's `time.Time` takes RFC 3339: a date, `T`, a time and `Z` or an offset.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && (s.ends_with('Z') || s[19..].contains(['+', '-']))
}

#[test]
fn console_decodes_every_answer() {
    let worker = echo_worker();
    let url = worker.url();
    let (_d, _r, api) = start_durable("");
    let mut c = Checks::new("fireworqonsole api.go, mackerel-check-fireworq lib/fireworq.go");
    api.put("/queue/q1", "{}");
    api.put("/routing/mail/welcome", r#"{"queue_name":"q1"}"#);
    // A stopped queue, so every field of the stats has its other value too.
    api.post("/control/q1", r#"{"status":"stop"}"#);
    api.post(
        "/job/mail/welcome",
        &format!(r#"{{"url":"{url}","payload":{{"a":1}}}}"#),
    );

    let all: Result<HashMap<String, HashMap<String, i64>>, _> = decode(&api, "/queues/stats");
    c.check(
        "/queues/stats as map[string]map[string]int64",
        all.is_ok(),
        all.as_ref().err().cloned().unwrap_or_default(),
    );
    let one: Result<HashMap<String, i64>, _> = decode(&api, "/queue/q1/stats");
    c.check(
        "/queue/q1/stats as map[string]int64",
        one.is_ok(),
        one.as_ref().err().cloned().unwrap_or_default(),
    );
    let settings: Result<HashMap<String, String>, _> = decode(&api, "/settings");
    c.check(
        "/settings as map[string]string",
        settings.is_ok(),
        settings.as_ref().err().cloned().unwrap_or_default(),
    );
    let routings: Result<Vec<HashMap<String, String>>, _> = decode(&api, "/routings");
    c.check(
        "/routings as []map[string]string",
        routings
            .as_ref()
            .is_ok_and(|r| r.iter().any(|m| m["job_category"] == "mail/welcome")),
        routings.as_ref().err().cloned().unwrap_or_default(),
    );
    let waiting: Result<InspectedJobs, _> = decode(&api, "/queue/q1/waiting?order=asc&limit=1");
    c.check(
        "waiting?order=asc&limit=1 as InspectedJobs with an RFC 3339 next_try",
        waiting
            .as_ref()
            .is_ok_and(|w| w.jobs.len() == 1 && is_rfc3339(&w.jobs[0].next_try)),
        waiting.as_ref().err().cloned().unwrap_or_default(),
    );
    let grabbed: Result<InspectedJobs, _> = decode(&api, "/queue/q1/grabbed?order=asc&limit=1");
    c.check(
        "grabbed?order=asc&limit=1 as InspectedJobs",
        grabbed.is_ok(),
        grabbed.as_ref().err().cloned().unwrap_or_default(),
    );
    let v = api.get("/version");
    c.check(
        "/version is text",
        v.status == 200 && !v.text().trim().is_empty(),
        v.text(),
    );
    // The console deletes a queue's routings by `url.QueryEscape(category)`.
    let r = api.delete("/routing/mail%2Fwelcome");
    c.check(
        "DELETE /routing/{QueryEscape(category)}",
        r.status == 200,
        format!("{} {}", r.status, r.text()),
    );

    // mackerel-check-fireworq: total_permanent_failures grows when a job fails for good,
    // by the worker's word or by running out of retries.
    api.post("/control/q1", r#"{"status":"start"}"#);
    api.put("/routing/m", r#"{"queue_name":"q1"}"#);
    let before = poll_json(&api, "/queues/stats", Duration::from_secs(1), |_| true)["q1"]
        ["total_permanent_failures"]
        .as_i64()
        .unwrap_or(-1);
    let out = r#"{"status":"failure","message":"out of retries"}"#;
    api.post(
        "/job/m",
        &format!(r#"{{"url":"{url}","payload":{out},"max_retries":1}}"#),
    );
    deliveries(&worker, out, 2, Duration::from_secs(5));
    let v = poll_json(&api, "/queues/stats", Duration::from_secs(5), |v| {
        v["q1"]["total_permanent_failures"].as_i64() > Some(before)
    });
    c.check(
        "exhausted retries raise total_permanent_failures",
        v["q1"]["total_permanent_failures"].as_i64() == Some(before + 1),
        &v,
    );
    c.finish();
}
