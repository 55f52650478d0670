//! `Idempotency-Key` on the enqueue routes (draft-ietf-httpapi-idempotency-key-header), with a
//! real reprow process, real sockets and a real LMDB file: the same key answers the first
//! request's jobs on every route, across restarts and kill -9; another request under the key is
//! 422; bad keys are 400; and a producer that retries every enqueue whose answer it lost, while
//! reprow is killed -9 and restarted under it, ends with every job stored exactly once.

mod common;

use std::{
    collections::HashMap,
    io::{BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{durable_config, read_reply, Api, HttpReply, Reprow};
use nix::sys::signal::Signal;
use serde_json::Value;

const QUEUES: &str = "queues:\n  pq:\n    mode: pull\n  short:\n    mode: pull\n    idempotency_window: 1\nroutings:\n  cat: pq\n";

fn keyed(api: &Api, path: &str, body: &str, key: &str) -> HttpReply {
    api.call_with("POST", path, Some(body), &[("Idempotency-Key", key)])
}

/// Every payload now in pull queue `queue`, fetched (and so removed) a page at a time.
fn drain(api: &Api, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let r = api.get(&format!("/qb/{queue}?batch_size=1000"));
        if r.status != 200 {
            return out;
        }
        let page: Vec<String> = serde_json::from_slice(&r.body).unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

#[test]
fn the_same_key_answers_the_first_requests_jobs_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), QUEUES);
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());

    // fireworq, one job: the same answer, one job.
    let first = keyed(
        &api,
        "/job/cat",
        r#"{"payload":{"n":1},"timeout":5,"retry_delay":7}"#,
        "\"k-job\"",
    );
    assert_eq!(first.status, 200, "{}", first.text());
    // Its own timeout and retry delay, which a replay after the job finished rebuilds.
    assert_eq!(
        (
            first.json()["timeout"].clone(),
            first.json()["retry_delay"].clone()
        ),
        (5.into(), 7.into())
    );
    let again = keyed(
        &api,
        "/job/cat",
        r#"{"payload":{"n":1},"timeout":5,"retry_delay":7}"#,
        "\"k-job\"",
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json(), first.json(), "not the first answer");
    // A bare (unquoted) key is the same key.
    let bare = keyed(
        &api,
        "/job/cat",
        r#"{"payload":{"n":1},"timeout":5,"retry_delay":7}"#,
        "k-job",
    );
    assert_eq!(bare.json()["id"], first.json()["id"]);

    // Another body, another route, another method under the key: 422, no job.
    let other = keyed(&api, "/job/cat", r#"{"payload":{"n":2}}"#, "\"k-job\"");
    assert_eq!(other.status, 422, "{}", other.text());
    assert!(other.text().contains("Idempotency-Key"), "{}", other.text());
    assert_eq!(
        keyed(
            &api,
            "/q/pq",
            r#"{"payload":{"n":1},"timeout":5,"retry_delay":7}"#,
            "\"k-job\""
        )
        .status,
        422
    );

    // fireworq's batch: the key covers the whole list.
    let body = r#"[{"payload":"b1"},{"payload":"b2"}]"#;
    let b1 = keyed(&api, "/job/cat/batch", body, "\"k-fb\"");
    assert_eq!(b1.status, 200, "{}", b1.text());
    let b2 = keyed(&api, "/job/cat/batch", body, "\"k-fb\"");
    assert_eq!(b1.json()["jobs"], b2.json()["jobs"]);

    // presque, one job and a batch.
    let p1 = keyed(&api, "/q/pq", r#"{"p":1}"#, "\"k-q\"");
    assert_eq!(p1.status, 201, "{}", p1.text());
    let p2 = keyed(&api, "/q/pq", r#"{"p":1}"#, "\"k-q\"");
    assert_eq!((p2.status, p2.json()), (201, p1.json()));
    let qb = r#"{"jobs":[{"q":1},{"q":2}]}"#;
    let q1 = keyed(&api, "/qb/pq", qb, "\"k-qb\"");
    assert_eq!(q1.status, 201, "{}", q1.text());
    assert_eq!(keyed(&api, "/qb/pq", qb, "\"k-qb\"").json(), q1.json());
    // A `uniq` job: the key answers it rather than presque's "job already exists".
    let u1 = keyed(&api, "/q/pq?uniq=u", r#"{"u":1}"#, "\"k-u\"");
    assert_eq!(u1.status, 201, "{}", u1.text());
    assert_eq!(
        keyed(&api, "/q/pq?uniq=u", r#"{"u":1}"#, "\"k-u\"").json(),
        u1.json()
    );
    // Without a key, the same request is a new job, as before.
    assert_eq!(api.post("/q/pq", r#"{"p":1}"#).status, 201);

    // One of each, and the unkeyed one.
    let stats = api.get("/queue/pq/stats").json();
    assert_eq!(stats["outstanding_jobs"], 8, "{stats}");

    // Across a restart and a kill -9 the keys are still there.
    let (status, _) = r.stop();
    assert!(status.success());
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    assert_eq!(
        keyed(&api, "/q/pq", r#"{"p":1}"#, "\"k-q\"").json(),
        p1.json()
    );
    r.signal(Signal::SIGKILL);
    drop(r);
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    assert_eq!(keyed(&api, "/qb/pq", qb, "\"k-qb\"").json(), q1.json());

    // Once the job left the queue, the key still answers it.
    let mut got = drain(&api, "pq");
    got.sort();
    assert_eq!(got.len(), 8, "{got:?}");
    let done = keyed(
        &api,
        "/job/cat",
        r#"{"payload":{"n":1},"timeout":5,"retry_delay":7}"#,
        "\"k-job\"",
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json(), first.json());
    assert_eq!(api.get("/queue/pq/stats").json()["outstanding_jobs"], 0);

    // A queue's window: past it the key is forgotten and the request makes a new job.
    let w1 = keyed(&api, "/q/short", "1", "\"k-w\"");
    assert_eq!(keyed(&api, "/q/short", "1", "\"k-w\"").json(), w1.json());
    std::thread::sleep(Duration::from_millis(1100));
    let w2 = keyed(&api, "/q/short", "1", "\"k-w\"");
    assert_eq!(w2.status, 201);
    assert_ne!(w2.json(), w1.json(), "a key past its window still answered");
    r.stop();
}

#[test]
fn malformed_keys_are_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), QUEUES);
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    let long = format!("\"{}\"", "k".repeat(256));
    for (key, says) in [
        (long.as_str(), "at most 255 bytes"),
        ("\"\"", "must not be empty"),
        ("a b", "printable ASCII"),
        ("\"é\"", "printable ASCII"),
        ("\"open", "not closed"),
        ("\"a\\n\"", "escaped"),
    ] {
        let reply = keyed(&api, "/q/pq", "1", key);
        assert_eq!(reply.status, 400, "{key:?}: {}", reply.text());
        assert!(reply.text().contains(says), "{key:?}: {}", reply.text());
    }
    // Exactly the limit is taken.
    let max = format!("\"{}\"", "k".repeat(255));
    assert_eq!(keyed(&api, "/q/pq", "1", &max).status, 201);
    // Two keys: which one would count? Refused.
    let two = api.call_with(
        "POST",
        "/q/pq",
        Some("1"),
        &[("Idempotency-Key", "\"a\""), ("Idempotency-Key", "\"b\"")],
    );
    assert_eq!(two.status, 400, "{}", two.text());
    // Nothing but the one good request made a job.
    assert_eq!(api.get("/queue/pq/stats").json()["outstanding_jobs"], 1);
    r.stop();
}

/// A free port on 127.0.0.1 (the API must keep its port across restarts for the producers).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One enqueue attempt: the reply, or `None` when it was lost (the connection failed, was cut
/// by reprow's death, or cut by the producer right after sending, `cut`).
fn attempt(addr: SocketAddr, path: &str, body: &str, key: &str, cut: bool) -> Option<HttpReply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nIdempotency-Key: \"{key}\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    if cut {
        // The request is sent whole; its answer is never read.
        let _ = s.shutdown(std::net::Shutdown::Both);
        return None;
    }
    read_reply(&mut BufReader::new(s))
}

#[test]
fn a_producer_retrying_lost_answers_through_kill_9_stores_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = durable_config(
        dir.path(),
        &format!("api:\n  listen: 127.0.0.1:{port}\n{QUEUES}"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let reprow = Arc::new(Mutex::new(Some(Reprow::start(&cfg))));
    reprow.lock().unwrap().as_ref().unwrap().api_addr();

    const PRODUCERS: usize = 3;
    const REQUESTS: usize = 120;
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicUsize::new(0));
    let replays = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(90);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (lost, replays) = (lost.clone(), replays.clone());
            std::thread::spawn(move || {
                let mut expected = Vec::new();
                let mut rng = fastrand::Rng::with_seed(p as u64 + 7);
                for i in 0..REQUESTS {
                    let key = format!("p{p}-r{i}");
                    // Each request's payloads are unique, so counting them counts the jobs.
                    let (path, body, payloads) = match i % 3 {
                        0 => (
                            "/job/cat".to_string(),
                            format!(r#"{{"payload":"{key}"}}"#),
                            // fireworq sends a string payload's text, unquoted.
                            vec![key.clone()],
                        ),
                        1 => (
                            "/q/pq".to_string(),
                            format!(r#""{key}""#),
                            vec![format!("\"{key}\"")],
                        ),
                        _ => (
                            "/qb/pq".to_string(),
                            format!(r#"{{"jobs":["{key}-a","{key}-b"]}}"#),
                            vec![format!("\"{key}-a\""), format!("\"{key}-b\"")],
                        ),
                    };
                    expected.extend(payloads);
                    let mut first_answer: Option<Value> = None;
                    let mut tries = 0;
                    loop {
                        assert!(Instant::now() < deadline, "producer {p} did not finish");
                        tries += 1;
                        // A third of first tries lose their answer on purpose.
                        let cut = tries == 1 && rng.u8(0..3) == 0;
                        match attempt(addr, &path, &body, &key, cut) {
                            Some(r) if r.status == 200 || r.status == 201 => {
                                first_answer.get_or_insert(r.json());
                                if tries > 1 {
                                    replays.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            // 409: the first try is still committing; 503: stopping.
                            Some(r) if r.status == 409 || r.status == 503 => {
                                assert!(r.status != 409 || r.header("Retry-After") == Some("1"));
                            }
                            Some(r) => panic!("{path} {body}: {} {}", r.status, r.text()),
                            None => {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(rng.u64(5..30)));
                    }
                }
                expected
            })
        })
        .collect();

    // kill -9 and restart reprow under the producers, a few times.
    let killer = {
        let (reprow, stop, cfg) = (reprow.clone(), stop.clone(), cfg.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) && kills < 6 {
                std::thread::sleep(Duration::from_millis(250));
                let mut g = reprow.lock().unwrap();
                if let Some(r) = g.take() {
                    r.signal(Signal::SIGKILL);
                    drop(r);
                    kills += 1;
                }
                let r = Reprow::start(&cfg);
                r.api_addr();
                *g = Some(r);
            }
            kills
        })
    };
    let mut expected = Vec::new();
    for p in producers {
        expected.extend(p.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap();
    let api = Api::new(addr);
    let got = drain(&api, "pq");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .collect();
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
    assert_eq!(got.len(), expected.len());
    let (lost, replays) = (
        lost.load(Ordering::Relaxed),
        replays.load(Ordering::Relaxed),
    );
    eprintln!(
        "{} jobs, {kills} kills, {lost} answers lost, {replays} requests answered on a retry",
        got.len()
    );
    // The run did what it is for: reprow died under it, answers were lost and retried.
    assert!(kills >= 3, "{kills} kills");
    assert!(
        lost >= 20 && replays >= 20,
        "{lost} lost, {replays} retried"
    );
    let last = reprow.lock().unwrap().take();
    if let Some(r) = last {
        r.stop();
    }
}
