//! Limits per worker origin (`workers:`) against real workers on real sockets: a worker that
//! takes 100 requests a second and answers 429 beyond settles reprow near 100/s with few 429s,
//! and reprow speeds up when the worker takes more; a job waiting for its origin costs no
//! attempt and holds up no other origin's jobs; `max_concurrency` holds over every core.

mod common;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{Api, Reply, Reprow, Scene, Worker};

/// The worker's own limit: a token bucket, as rate-limiting proxies and API gateways keep.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A worker that takes `rate` requests a second (burst 10) and answers the rest with
/// `429 Too Many Requests` and `Retry-After: 1`; every answer is logged with its time.
struct LimitedWorker {
    worker: Worker,
    bucket: Arc<Mutex<Bucket>>,
    answers: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl LimitedWorker {
    fn start(rate: f64) -> LimitedWorker {
        let bucket = Arc::new(Mutex::new(Bucket {
            rate,
            burst: 10.0,
            tokens: 10.0,
            last: Instant::now(),
        }));
        let answers: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
        let (b, a) = (bucket.clone(), answers.clone());
        let worker = Worker::start(move |_, _| {
            let now = Instant::now();
            let ok = b.lock().unwrap().take(now);
            let status = if ok { 200 } else { 429 };
            a.lock().unwrap().push((now, status));
            if ok {
                Reply::ok()
            } else {
                Reply::Status(
                    429,
                    vec![("Retry-After", "1".into())],
                    b"slow down".to_vec(),
                )
            }
        });
        LimitedWorker {
            worker,
            bucket,
            answers,
        }
    }

    fn set_rate(&self, rate: f64) {
        self.bucket.lock().unwrap().rate = rate;
    }

    /// 200s per second, and the share of 429s among all answers, in `[from, to)`.
    fn window(&self, from: Instant, to: Instant) -> (f64, f64) {
        let answers = self.answers.lock().unwrap();
        let inside: Vec<u16> = answers
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, s)| *s)
            .collect();
        let ok = inside.iter().filter(|s| **s == 200).count() as f64;
        let limited = inside.len() as f64 - ok;
        let secs = (to - from).as_secs_f64();
        (ok / secs, limited / inside.len().max(1) as f64)
    }
}

/// A writer that keeps the FIFO full until stopped (it blocks while reprow's inboxes are full,
/// and gives up when reprow stops reading).
fn keep_fed(fifo: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = common::open_writer(&fifo);
        let mut n = 0u64;
        while !stop.load(SeqCst) {
            let mut chunk = String::new();
            for _ in 0..50 {
                n += 1;
                chunk.push_str(&format!("{{\"n\":{n}}}\n"));
            }
            if w.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// The acceptance test of issue 25's part 2: a worker that takes 100/s and answers 429 beyond.
/// reprow's own limit is 10 times higher; it must find 100/s by itself, keep the 429s few,
/// and speed up again when the worker takes 200/s. Windows skip the first seconds of each
/// phase (finding the rate); the bounds leave room for a loaded machine. (The cut leaves
/// 3/4, so the rate saws between about 75 and 100 % of what the worker takes: 85–90/s.)
#[test]
fn settles_near_the_workers_rate_and_recovers_when_it_allows_more() {
    let w = LimitedWorker::start(100.0);
    let scene = Scene::new();
    let origin = format!("http://{}", w.worker.addr);
    let cfg = scene.config(
        &w.worker.url(),
        "",
        "  concurrency: 16\n  max_retries: 100\n",
        &format!(
            "monitor_listen: 127.0.0.1:0\nlog_level: warn,reprow::app=info\nworkers:\n  \"{origin}\": {{rate: 1000, burst: 20}}\n"
        ),
    );
    let reprow = Reprow::start(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = keep_fed(scene.fifo(), stop.clone());
    let monitor = Api::new(reprow.monitor_addr());

    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let (rate, limited) = w.window(start + Duration::from_secs(3), Instant::now());
    eprintln!("at 100/s: {rate:.1} done/s, {:.1} % 429", limited * 100.0);
    assert!(
        (65.0..=112.0).contains(&rate),
        "{rate:.1} done/s against a worker that takes 100/s"
    );
    assert!(
        limited < 0.10,
        "{:.1} % of the answers were 429",
        limited * 100.0
    );

    // The state shows in /status and /metrics.
    let status = monitor.get("/status").json();
    let limits = &status["worker_limits"][0];
    assert_eq!(limits["origin"], origin, "{status}");
    assert_eq!(limits["rate"], 1000.0);
    let current = limits["current_rate"].as_f64().unwrap();
    assert!(current < 300.0, "rate allowed now {current}: {status}");
    assert!(limits["throttled"].as_u64().unwrap() > 0, "{status}");
    assert!(limits["backoffs"].as_u64().unwrap() > 0, "{status}");
    let metrics = monitor.get("/metrics").text();
    let line = format!("reprow_worker_rate{{origin=\"{origin}\"}} ");
    assert!(metrics.contains(&line), "{metrics}");

    w.set_rate(200.0);
    let raised = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let (rate, limited) = w.window(raised + Duration::from_secs(5), Instant::now());
    eprintln!("at 200/s: {rate:.1} done/s, {:.1} % 429", limited * 100.0);
    // Each second's figures, for the record when this fails.
    let seconds: Vec<String> = (0..18)
        .map(|s| {
            let from = start + Duration::from_secs(s);
            let (r, l) = w.window(from, from + Duration::from_secs(1));
            format!("{r:.0}/s {:.0}%", l * 100.0)
        })
        .collect();
    eprintln!("per second: {}", seconds.join(", "));
    assert!(
        rate >= 140.0,
        "{rate:.1} done/s after the worker took 200/s: no recovery"
    );
    assert!(
        limited < 0.10,
        "{:.1} % of the answers were 429",
        limited * 100.0
    );

    stop.store(true, SeqCst);
    let mut reprow = reprow;
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    let status = reprow.wait();
    assert!(status.success(), "{status}");
    let _ = feeder.join();
}

/// The durable queue, two cores: jobs for an origin at its rate wait (on the core, then back
/// in the store) without an attempt counted, while another origin's jobs go at once.
#[test]
fn a_waiting_job_costs_no_attempt_and_holds_up_no_other_origin() {
    let slow = Worker::start(|_, _| Reply::ok());
    let fast = Worker::start(|_, _| Reply::ok());
    let (_dir, reprow, api) = common::start_durable(&format!(
        "threads: 2\nqueues:\n  slow:\n    url: {}\n    max_retries: 0\n  fast:\n    url: {}\nroutings:\n  slow: slow\n  fast: fast\nworkers:\n  \"http://{}\": {{rate: 5, burst: 1}}\n",
        slow.url(),
        fast.url(),
        slow.addr
    ));
    let enqueued = Instant::now();
    for i in 0..15 {
        assert_eq!(
            api.post("/job/slow", &format!("{{\"payload\":{i}}}"))
                .status,
            200
        );
    }
    for i in 0..20 {
        assert_eq!(
            api.post("/job/fast", &format!("{{\"payload\":{i}}}"))
                .status,
            200
        );
    }
    let fast_got = fast.wait_for(20);
    let slow_got = slow.wait_for(15);
    let fast_done = fast_got.iter().map(|r| r.at).max().unwrap();
    let slow_first = slow_got.iter().map(|r| r.at).min().unwrap();
    let slow_last = slow_got.iter().map(|r| r.at).max().unwrap();
    // 15 at 5/s with no burst: 14 gaps of 200 ms.
    let span = slow_last - slow_first;
    assert!(
        span >= Duration::from_millis(2600),
        "15 jobs in {span:?} at 5/s"
    );
    assert!(
        fast_done < slow_last && fast_done - enqueued < Duration::from_secs(2),
        "the other origin's jobs waited: done {:?} after enqueue",
        fast_done - enqueued
    );
    // No attempt was spent waiting: every job ran once, as attempt 1, and none failed.
    assert!(
        slow_got.iter().all(|r| r.attempt() == 1),
        "attempts {:?}",
        slow_got.iter().map(|r| r.attempt()).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slow.received().len(), 15, "a job ran twice");
    let stats = api.get("/queue/slow/stats").json();
    assert_eq!(stats["total_failures"], 0, "{stats}");
    let limits = &api.get("/status").json()["worker_limits"][0];
    assert!(limits["waits"].as_u64().unwrap() >= 10, "{limits}");
    // Past a second's wait, jobs went back to the store rather than hold their leases.
    assert!(limits["released"].as_u64().unwrap() > 0, "{limits}");
    drop(reprow);
}

/// `max_concurrency` is one count for every core: a slow worker never sees more at once.
#[test]
fn max_concurrency_holds_over_every_core() {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (i, m) = (inside.clone(), most.clone());
    let worker = Worker::start(move |_, _| {
        let n = i.fetch_add(1, SeqCst) + 1;
        m.fetch_max(n, SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        i.fetch_sub(1, SeqCst);
        Reply::ok()
    });
    let (_dir, reprow, api) = common::start_durable(&format!(
        "threads: 2\nrunner:\n  type: http_proxy\n  url: {}\nworkers:\n  \"http://{}\": {{max_concurrency: 2}}\n",
        worker.url(),
        worker.addr
    ));
    for i in 0..12 {
        assert_eq!(
            api.post("/job/any", &format!("{{\"payload\":{i}}}")).status,
            200
        );
    }
    let got = worker.wait_for(12);
    assert_eq!(most.load(SeqCst), 2, "most requests at once");
    assert!(got.iter().all(|r| r.attempt() == 1));
    let status = api.get("/status").json();
    assert_eq!(status["worker_limits"][0]["max_concurrency"], 2, "{status}");
    drop(reprow);
}

/// Jobs waiting for their origin's turn at shutdown are handed back at once (the FIFO writes
/// them to its pending file), neither sent nor lost, and the wait does not hold up the exit.
#[test]
fn jobs_waiting_at_shutdown_are_kept_for_the_next_run() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "",
        "  concurrency: 4\n",
        &format!(
            "shutdown_timeout: 10s\nworkers:\n  \"http://{}\": {{rate: 0.5, burst: 1}}\n",
            worker.addr
        ),
    );
    let mut reprow = Reprow::start(&cfg);
    let lines: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    common::write_lines(
        &scene.fifo(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    worker.wait_for(1);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(reprow.wait().success());
    // Far less than the 10 s grace, and than the 2 s the next turn was away.
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "the exit took {:?}",
        stopping.elapsed()
    );
    let sent: Vec<String> = worker.received().iter().map(|r| r.body_str()).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let mut all: Vec<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 5, "{all:?}");
    all.extend(sent);
    all.sort();
    assert_eq!(all, lines);
}
