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
            "queue:\n  type: lmdb\n  path: {}\n  map_size: 2GiB\napi:\n  listen: 127.0.0.1:0\nshutdown_timeout: 5s\nqueues:\n  big:\n    mode: pull\n    lease_timeout: 3600\n    max_retries: 0\nroutings:\n  big: big\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    eprintln!("RssAnon at start {}", mib(rss_anon(r.pid().as_raw())));
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

fn rss_anon(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status");
    kib * 1024
}

/// Runs `work` while sampling reprow's `RssAnon` every millisecond: (baseline, peak, result).
fn peak_anon<T>(r: &Reprow, work: impl FnOnce() -> T) -> (u64, u64, T) {
    let pid = r.pid().as_raw();
    let base = rss_anon(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                peak.fetch_max(rss_anon(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = work();
    // One more sample after the answers: memory not given back counts too.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(rss_anon(pid), Ordering::Relaxed);
    (base, peak.load(Ordering::Relaxed), out)
}

/// GETs every path at once, one connection each: the answers in the same order.
fn concurrently(api: &Api, paths: &[&str]) -> Vec<HttpReply> {
    let threads: Vec<_> = paths
        .iter()
        .map(|p| {
            let (api, p) = (api.clone(), p.to_string());
            std::thread::spawn(move || api.get(&p))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// Checks the memory bound and says what was measured.
fn assert_bounded(what: &str, base: u64, peak: u64) {
    eprintln!("{what}: RssAnon {} before, peak {}", mib(base), mib(peak));
    assert!(
        peak < MAX_ANON,
        "{what}: reprow's anonymous memory peaked at {} (from {}), over {}",
        mib(peak),
        mib(base),
        mib(MAX_ANON)
    );
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
    let (base, peak, answers) = peak_anon(&r, || concurrently(&api, &[path; 4]));
    assert_bounded("4 x waiting?limit=1000", base, peak);
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
    let (base, peak, answers) = peak_anon(&r, || concurrently(&api, &[full; 4]));
    assert_bounded("4 x waiting?limit=1000&payload=full", base, peak);
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

/// Pulls every job of `big`, `batch` at a time; their ids. Each batch holds at most 4 MiB of
/// payloads.
fn pull_all(api: &Api, batch: usize) -> Vec<u64> {
    let mut ids = Vec::new();
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
        assert!(
            got.len() <= 4 && r.body.len() <= 4 * MIB as usize + 16,
            "a batch of {} jobs, {} bytes",
            got.len(),
            r.body.len()
        );
        assert_eq!(r.json().as_array().unwrap().len(), got.len());
        ids.extend(got);
    }
    assert_eq!(ids.len(), JOBS);
    ids
}

#[test]
fn grabbed_and_inflight_listings_of_400_jobs_of_1_mib_stay_under_100_mib() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, api) = start(dir.path());
    fill(&api);
    // A worker asking for 1000 jobs of 1 MiB gets 4 MiB of them a batch.
    let (base, peak, _) = peak_anon(&r, || pull_all(&api, 1000));
    assert_bounded("pulling 400 x 1 MiB with batch_size=1000", base, peak);

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
    let (base, peak, answers) = peak_anon(&r, || concurrently(&api, &paths));
    assert_bounded(
        "4 x grabbed?limit=1000 and 4 x inflight?limit=1000",
        base,
        peak,
    );
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
    // Pulled four at a time and reported failed: with max_retries 0, each goes to the log.
    for id in pull_all(&api, 4) {
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
    let (base, peak, answers) = peak_anon(&r, || concurrently(&api, &paths));
    assert_bounded("4 x failed?limit=1000 and 4 x /status", base, peak);
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
