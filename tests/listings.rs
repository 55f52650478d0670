//! Listings are bounded in bytes (issue 21): with 400 jobs of 1 MiB (the default payload limit)
//! waiting, grabbed or failed, four concurrent listings of each kind keep reprow's anonymous
//! memory under 100 MiB. Each payload is shown as a 256-byte preview with its length
//! (`payload_bytes`, `payload_truncated`); `?payload=full` gives whole payloads but ends the page
//! at 4 MiB with a cursor; `?payload=none` leaves them out; `GET /queue/{name}/job/{id}` gives one
//! whole payload. A presque batch pull stops at the same 4 MiB. The dashboard's poll is a fixed
//! number of requests whatever the number of failing queues: `/status` carries the newest
//! failed entries of all queues.
//!
//! Peak anonymous memory is the largest `RssAnon` of reprow's `/proc/PID/status`, sampled every
//! millisecond while the requests run (`VmHWM` would count the LMDB map's file pages too).

mod common;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// The default payload limit, and the size of each job's payload here.
const PAYLOAD: usize = 1 << 20;
const JOBS: usize = 400;
/// The bound the issue sets on reprow's anonymous memory under this load.
const MAX_ANON: u64 = 100 * MIB;
const PREVIEW: usize = 256;

/// One reprow with 400 MiB of jobs at a time: the tests take turns (2 shared cores).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Length of a payload's start before its blob: `{"n":"00042","blob":"`.
const HEAD: usize = 21;
/// Length of the blob.
const BLOB: usize = PAYLOAD - HEAD - 2;

/// Job `i`'s payload: a JSON object of exactly 1 MiB.
fn payload(i: usize) -> String {
    format!("{{\"n\":\"{i:05}\",\"blob\":\"{}\"}}", "x".repeat(BLOB))
}

/// reprow on `dir` with a pull-mode queue `big` (nothing takes its jobs unless pulled; one
/// failure report sends a job to the failed log) and room for the jobs.
fn start(dir: &Path) -> (Reprow, Api) {
    let cfg = dir.join("reprow.yaml");
    std::fs::write(
        &cfg,
        format!(
            "queue:\n  type: lmdb\n  path: {}\n  map_size: 2GiB\napi:\n  listen: 127.0.0.1:0\nshutdown_timeout: 5s\nqueues:\n  big:\n    mode: pull\n    lease: true\n    lease_timeout: 3600\n    max_retries: 0\nroutings:\n  big: big\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    eprintln!(
        "RssAnon at start {}",
        mib(rss_anon(r.pid().as_raw()).unwrap())
    );
    (r, api)
}

/// Enqueues the 400 jobs with presque's batch push, seven to a request (the body limit is
/// 8 MiB); their ids in order.
fn fill(api: &Api) -> Vec<u64> {
    let t = Instant::now();
    let mut ids = Vec::new();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(7) {
        let jobs: Vec<String> = chunk.iter().map(|i| payload(*i)).collect();
        let r = api.post("/qb/big", &format!("{{\"jobs\":[{}]}}", jobs.join(",")));
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        ids.extend(
            v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap()),
        );
    }
    assert_eq!(ids.len(), JOBS);
    eprintln!("enqueued {JOBS} jobs of 1 MiB in {:?}", t.elapsed());
    ids
}

/// reprow's `RssAnon`, or `None` once it has ended.
fn rss_anon(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
}

/// What [`peak_anon`] saw of reprow's anonymous memory.
struct Anon {
    base: u64,
    peak: u64,
    /// reprow ended while the work ran (killed for its memory, on the old code).
    ended: bool,
}

/// Runs `work` while sampling reprow's `RssAnon` every millisecond.
fn peak_anon<T>(r: &Reprow, work: impl FnOnce() -> T) -> (Anon, T) {
    let pid = r.pid().as_raw();
    let base = rss_anon(pid).expect("reprow runs");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Some(now) = rss_anon(pid) else { break };
                peak.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = work();
    // One more sample after the answers: memory not given back counts too.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let last = rss_anon(pid);
    peak.fetch_max(last.unwrap_or(0), Ordering::Relaxed);
    let anon = Anon {
        base,
        peak: peak.load(Ordering::Relaxed),
        ended: last.is_none(),
    };
    (anon, out)
}

/// GETs every path at once, one connection each: the answers in the same order (`None` for
/// a request that got no answer).
fn concurrently(api: &Api, paths: &[&str]) -> Vec<Option<HttpReply>> {
    let threads: Vec<_> = paths
        .iter()
        .map(|p| {
            let (api, p) = (api.clone(), p.to_string());
            std::thread::spawn(move || api.get(&p))
        })
        .collect();
    threads.into_iter().map(|t| t.join().ok()).collect()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// Checks the memory bound and says what was measured; the answers, each there.
fn assert_bounded(what: &str, a: &Anon, answers: Vec<Option<HttpReply>>) -> Vec<HttpReply> {
    eprintln!(
        "{what}: RssAnon {} before, peak {}",
        mib(a.base),
        mib(a.peak)
    );
    assert!(
        !a.ended && a.peak < MAX_ANON,
        "{what}: reprow's anonymous memory peaked at {} (from {}), over {}{}",
        mib(a.peak),
        mib(a.base),
        mib(MAX_ANON),
        if a.ended { ", and reprow ended" } else { "" }
    );
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| panic!("{what}: a request got no answer")))
        .collect()
}

/// A listed job or failed entry shows job `n`'s payload as a preview with its length.
fn assert_preview(j: &Value) {
    assert_eq!(j["payload_bytes"], PAYLOAD, "{j}");
    assert_eq!(j["payload_truncated"], true, "{j}");
    let shown = j["payload"].as_str().expect("a preview is a string");
    assert_eq!(shown.len(), PREVIEW, "{shown}");
    let blob = "x".repeat(PREVIEW - HEAD);
    assert_eq!(&shown[HEAD - 9..], format!(",\"blob\":\"{blob}"));
    assert!(shown.starts_with("{\"n\":\""), "{shown}");
}

#[test]
fn four_waiting_listings_of_400_jobs_of_1_mib_stay_under_100_mib() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, api) = start(dir.path());
    let ids = fill(&api);
    let path = "/queue/big/waiting?limit=1000";
    let (anon, answers) = peak_anon(&r, || concurrently(&api, &[path; 4]));
    let answers = assert_bounded("4 x waiting?limit=1000", &anon, answers);
    for a in &answers {
        assert_eq!(a.status, 200);
        assert!(a.body.len() < 2 * MIB as usize, "{} bytes", a.body.len());
        let v = a.json();
        let jobs = v["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), JOBS);
        assert_eq!(v["next_cursor"], Value::Null);
        // Newest first by default.
        for (j, id) in jobs.iter().zip(ids.iter().rev()) {
            assert_eq!(j["id"], *id);
            assert_eq!(j["queue_name"], "big");
            assert_preview(j);
        }
    }

    // Whole payloads: the page ends at 4 MiB with a cursor, and the next page goes on.
    let full = "/queue/big/waiting?limit=1000&payload=full&order=asc";
    let (anon, answers) = peak_anon(&r, || concurrently(&api, &[full; 4]));
    let answers = assert_bounded("4 x waiting?limit=1000&payload=full", &anon, answers);
    let page = answers[0].json();
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        3,
        "three jobs of 1 MiB and their fields fit in 4 MiB"
    );
    assert!(answers[0].body.len() <= 4 * MIB as usize);
    for (n, j) in jobs.iter().enumerate() {
        assert_eq!(j["payload_truncated"], false);
        assert_eq!(j["payload_bytes"], PAYLOAD);
        assert_eq!(
            j["payload"]["n"],
            format!("{n:05}"),
            "whole payloads are JSON again"
        );
        assert_eq!(j["payload"]["blob"].as_str().unwrap().len(), BLOB);
    }
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a cut page has a cursor");
    let next = api.get(&format!("{full}&cursor={cursor}")).json();
    assert_eq!(next["jobs"][0]["id"], ids[3]);
    assert_eq!(next["jobs"][0]["payload"]["n"], "00003");

    // Left out: only the length.
    let none = api.get("/queue/big/waiting?limit=2&payload=none").json();
    assert_eq!(none["jobs"][0]["payload"], Value::Null);
    assert_eq!(none["jobs"][0]["payload_bytes"], PAYLOAD);
    assert_eq!(none["jobs"][0]["payload_truncated"], true);
    assert_eq!(
        api.get("/queue/big/waiting?payload=whole").status,
        400,
        "an unknown payload mode is refused"
    );

    // One whole payload: the job itself, byte for byte.
    let one = api.get(&format!("/queue/big/job/{}", ids[7]));
    assert_eq!(one.status, 200);
    let v = one.json();
    assert_eq!(v["payload_bytes"], PAYLOAD);
    assert_eq!(v["payload_truncated"], false);
    assert_eq!(
        v["payload"],
        serde_json::from_str::<Value>(&payload(7)).unwrap()
    );
    assert!(r.stop().0.success());
}

/// Pulls every job of `big`, `batch` at a time: their ids, and the most jobs and bytes one
/// batch brought.
fn pull_all(api: &Api, batch: usize) -> (Vec<u64>, usize, usize) {
    let (mut ids, mut most, mut bytes) = (Vec::new(), 0, 0);
    for _ in 0..JOBS {
        if ids.len() == JOBS {
            break;
        }
        let r = api.get(&format!("/qb/big?batch_size={batch}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let got: Vec<u64> = r
            .header("X-Reprow-Job-Ids")
            .unwrap()
            .split(',')
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(r.json().as_array().unwrap().len(), got.len());
        (most, bytes) = (most.max(got.len()), bytes.max(r.body.len()));
        ids.extend(got);
    }
    assert_eq!(ids.len(), JOBS);
    (ids, most, bytes)
}

#[test]
fn grabbed_and_inflight_listings_of_400_jobs_of_1_mib_stay_under_100_mib() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, api) = start(dir.path());
    fill(&api);
    pull_all(&api, 4);

    let paths = [
        "/queue/big/grabbed?limit=1000",
        "/queue/big/grabbed?limit=1000",
        "/queue/big/grabbed?limit=1000",
        "/queue/big/grabbed?limit=1000",
        "/inflight?limit=1000",
        "/inflight?limit=1000",
        "/inflight?limit=1000",
        "/inflight?limit=1000",
    ];
    let (anon, answers) = peak_anon(&r, || concurrently(&api, &paths));
    let what = "4 x grabbed?limit=1000 and 4 x inflight?limit=1000";
    let answers = assert_bounded(what, &anon, answers);
    for a in &answers {
        assert_eq!(a.status, 200);
        let v = a.json();
        let jobs = v["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), JOBS);
        for j in jobs {
            assert_eq!(j["status"], "grabbed");
            assert_preview(j);
        }
    }
    let full = api.get("/inflight?limit=1000&payload=full");
    assert_eq!(full.json()["jobs"].as_array().unwrap().len(), 3);
    let none = api.get("/inflight?limit=1000&payload=none").json();
    assert_eq!(none["jobs"][0]["payload"], Value::Null);
    assert!(r.stop().0.success());
}

#[test]
fn failed_listings_and_status_of_400_failures_of_1_mib_stay_under_100_mib() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, api) = start(dir.path());
    fill(&api);
    // A worker asking for 1000 jobs of 1 MiB gets 4 MiB of them a batch.
    let (anon, (ids, most, bytes)) = peak_anon(&r, || pull_all(&api, 1000));
    assert_bounded("pulling 400 x 1 MiB with batch_size=1000", &anon, vec![]);
    assert_eq!(most, 4, "a batch holds 4 MiB of payloads");
    // 4 MiB of payloads, each written as a JSON string (presque's shape): two quotes and a
    // backslash before each of its 8 quotes, plus the list's brackets and commas.
    assert!(
        bytes <= 4 * MIB as usize + 4 * 10 + 16,
        "a batch of {bytes} bytes"
    );
    // Reported failed: with max_retries 0, each goes to the log.
    for id in ids {
        assert_eq!(api.put(&format!("/q/big?id={id}"), "").status, 204);
    }
    let failed = api.wait_json("/queue/big/stats", |v| v["failed"] == JOBS);
    assert_eq!(failed["outstanding_jobs"], 0);

    let paths = [
        "/queue/big/failed?limit=1000",
        "/queue/big/failed?limit=1000",
        "/queue/big/failed?limit=1000",
        "/queue/big/failed?limit=1000",
        "/status",
        "/status",
        "/status",
        "/status",
    ];
    let (anon, answers) = peak_anon(&r, || concurrently(&api, &paths));
    let answers = assert_bounded("4 x failed?limit=1000 and 4 x /status", &anon, answers);
    for a in &answers[..4] {
        assert_eq!(a.status, 200);
        let v = a.json();
        let entries = v["failed_jobs"].as_array().unwrap();
        assert_eq!(entries.len(), JOBS);
        for f in entries {
            assert_eq!(f["result"]["status"], "failure");
            assert_preview(f);
        }
    }
    for a in &answers[4..] {
        let v = a.json();
        let newest = v["failed_jobs"].as_array().unwrap();
        assert_eq!(newest.len(), 50, "the newest 50 entries");
        assert_eq!(v["failed_entries"], JOBS);
        let ids: Vec<u64> = newest.iter().map(|f| f["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        assert_eq!(newest[0]["queue_name"], "big");
        assert_preview(&newest[0]);
    }
    let full = api.get("/queue/big/failed?limit=1000&payload=full").json();
    assert_eq!(full["failed_jobs"].as_array().unwrap().len(), 3);
    assert!(full["next_cursor"].is_string());
    let one = api.get(&format!(
        "/queue/big/failed/{}",
        full["failed_jobs"][0]["id"]
    ));
    assert_eq!(one.json()["payload_truncated"], false);
    assert_eq!(one.json()["payload"]["blob"].as_str().unwrap().len(), BLOB);
    assert!(r.stop().0.success());
}

/// With more failing queues than `/status` shows, it gives the newest 50 entries of all of
/// them, newest first, each with its queue; the dashboard polls `/status`, `/queues/stats` and
/// `/inflight` (without payloads) and nothing per queue.
#[test]
fn status_has_the_newest_failed_entries_of_all_queues_and_the_dashboard_polls_a_fixed_few() {
    let dir = tempfile::tempdir().unwrap();
    let (r, api) = start(dir.path());
    for i in 0..60 {
        let q = format!("f{i:02}");
        let def = api.put(&format!("/queue/{q}"), r#"{"mode":"pull","max_retries":0}"#);
        assert_eq!(def.status, 200, "{}", def.text());
        assert_eq!(
            api.post(&format!("/q/{q}"), &format!("{{\"i\":{i}}}"))
                .status,
            201
        );
        let job = api.get(&format!("/q/{q}?lease=1"));
        let id = job.header("X-Reprow-Job-Id").unwrap().to_string();
        assert_eq!(api.put(&format!("/q/{q}?id={id}"), "").status, 204);
    }
    let status = api.get("/status").json();
    assert_eq!(status["failed_entries"], 60);
    let newest = status["failed_jobs"].as_array().unwrap();
    assert_eq!(newest.len(), 50);
    for (n, f) in newest.iter().enumerate() {
        let i = 59 - n;
        assert_eq!(f["queue_name"], format!("f{i:02}"), "{f}");
        assert_eq!(f["payload"], serde_json::json!({ "i": i }));
        assert_eq!(f["payload_truncated"], false);
    }
    let page = api.get("/").text();
    assert!(page.contains("api(\"GET\", \"/status\")"));
    assert!(page.contains("/inflight?limit=200&payload=none"));
    assert!(
        !page.contains("/failed?"),
        "the page must not fetch a failed list per queue"
    );
    assert!(r.stop().0.success());
}
