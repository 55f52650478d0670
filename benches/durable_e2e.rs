//! End-to-end benchmark of the durable path: producer `POST /job` → group commit (fsync) →
//! dispatch → worker → ack commit, against a real `reprow serve` process on a real LMDB file.
//!
//! For each backlog depth (default 1 thousand, 1 million, 10 million waiting jobs, held in a
//! stopped queue of the same store so they stay waiting), it sends M jobs with one job per
//! request and then with batches, from several keep-alive producer connections, and prints
//! jobs/s (first send to last ack committed), enqueue-to-worker p50/p99, and reprow's RSS
//! (anonymous = reprow's own heap; file = LMDB pages mapped in).
//!
//! Run: `cargo bench --bench durable_e2e`. `REPROW_BENCH_DEPTHS` (default
//! `1000,1000000,10000000`), `REPROW_BENCH_JOBS` (default 20000), `REPROW_BENCH_BATCH`
//! (default 100), `REPROW_BENCH_PRODUCERS` (default 16), `REPROW_BENCH_DIR` (default a temp dir).
//!
//! Idle queues (issue 21: the cost of a job must not grow with queues that have nothing to do):
//! `REPROW_BENCH_IDLE_QUEUES=20000` measures instead the rate with no other queue, then with
//! that many idle push queues defined (`PUT /queue/idle-<n>`), then after deleting them, side
//! by side in one process, and prints each rate's ratio to the first. The store's
//! `max_queues` is set to fit them (`REPROW_BENCH_MAX_QUEUES`, default the count plus 100; `0`
//! leaves the key out, for a build that does not know it). The same comparison is then made on
//! the store engine alone, in this process (no fsync, no HTTP): its CPU per job, which the
//! shared machine's fsync and scheduling noise does not blur (`REPROW_BENCH_IDLE_E2E=0`: only
//! that one).
//!
//! Ordering keys (issue 25): `REPROW_BENCH_ORDERING_KEYS=1,100,100000` measures instead the
//! rate of batched jobs without keys, then with job `i` keyed `k<i mod N>` for each N, side by
//! side in one process, and prints each rate's ratio to the unkeyed one. Each run sends
//! `REPROW_BENCH_JOBS` × 5 jobs, a tenth of that with one key (its jobs run one at a time).

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

type Log = Arc<Mutex<Vec<u64>>>;

/// Backlog jobs per fill request.
const FILL_BATCH: u64 = 2_000;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The worker: records enqueue-to-receipt nanoseconds from the payload `"<t>"`.
fn worker(epoch: Instant) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let addr = support::keep_alive_worker(move |body| {
        let now = epoch.elapsed().as_nanos() as u64;
        let t: u64 = String::from_utf8_lossy(body)
            .trim_matches('"')
            .parse()
            .unwrap_or(now);
        l.lock().unwrap().push(now.saturating_sub(t));
    });
    (addr, log)
}

/// One keep-alive API connection.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }
    fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line.len() > 16 && line[..16].eq_ignore_ascii_case("content-length: ") {
                len = line[16..].trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b).unwrap();
        (status, String::from_utf8_lossy(&b).into_owned())
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn stat(api: SocketAddr, queue: &str, key: &str) -> u64 {
    let (_, body) = Conn::new(api).request("GET", &format!("/queue/{queue}/stats"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[key].as_u64().unwrap()
}

fn fill(api: SocketAddr, to: u64) {
    let have = stat(api, "backlog", "outstanding_jobs");
    if have >= to {
        return;
    }
    let t = Instant::now();
    let left = Arc::new(AtomicU64::new(to - have));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let left = left.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(api);
                loop {
                    let n = left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                            Some(l.saturating_sub(FILL_BATCH))
                        })
                        .unwrap()
                        .min(FILL_BATCH);
                    if n == 0 {
                        return;
                    }
                    let body = format!(
                        "[{}]",
                        vec![r#"{"payload":{"backlog":true}}"#; n as usize].join(",")
                    );
                    let (s, b) = c.request("POST", "/job/backlog/batch", &body);
                    assert_eq!(s, 200, "{b}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "  filled backlog to {to} in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

/// What every measurement needs.
struct Bench {
    api: SocketAddr,
    log: Log,
    epoch: Instant,
    pid: u32,
    /// Distinct ordering keys over the jobs sent (job `i` gets `k<i mod keys>`); 0: none.
    keys: u64,
}

/// Jobs/s of one run (first send to last ack committed).
fn measure(b: &Bench, jobs: u64, batch: u64, producers: u64, label: &str) -> f64 {
    let (api, log, epoch, pid, keys) = (b.api, &b.log, b.epoch, b.pid, b.keys);
    log.lock().unwrap().clear();
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(api);
                loop {
                    let first = next.fetch_add(batch, Ordering::SeqCst);
                    if first >= jobs {
                        return;
                    }
                    let n = batch.min(jobs - first);
                    let t = epoch.elapsed().as_nanos() as u64;
                    let one = |i: u64| match keys {
                        0 => format!(r#"{{"payload":"{t}"}}"#),
                        k => format!(r#"{{"payload":"{t}","ordering_key":"k{}"}}"#, i % k),
                    };
                    let (path, body) = if batch == 1 {
                        ("/job/bench".to_string(), one(first))
                    } else {
                        let all: Vec<String> = (first..first + n).map(one).collect();
                        (
                            "/job/bench/batch".to_string(),
                            format!("[{}]", all.join(",")),
                        )
                    };
                    let (s, b) = c.request("POST", &path, &body);
                    assert_eq!(s, 200, "{b}");
                }
            })
        })
        .collect();
    let mut peak = (0, 0);
    for t in threads {
        t.join().unwrap();
    }
    // Until every job was delivered and its ack committed.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = rss_kib(pid);
        peak = (peak.0.max(r.0), peak.1.max(r.1));
        if log.lock().unwrap().len() as u64 >= jobs && stat(api, "bench", "outstanding_jobs") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let mut lat = log.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e6;
    let rate = jobs as f64 / elapsed.as_secs_f64();
    println!(
        "  {label:<22} {:>9.0} jobs/s   p50 {:>7.2} ms   p99 {:>7.2} ms   RSS anon {:>6} KiB  file {:>8} KiB",
        rate,
        pct(0.50),
        pct(0.99),
        peak.0,
        peak.1
    );
    rate
}

/// Defines (`create`) or deletes `n` idle push queues `idle-<i>` from 4 connections; returns
/// the seconds it took.
fn idle_queues(api: SocketAddr, worker: SocketAddr, n: u64, create: bool) -> f64 {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(api);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let path = format!("/queue/idle-{i}");
                    let (s, b) = if create {
                        let body = format!(r#"{{"url":"http://{worker}/work"}}"#);
                        c.request("PUT", &path, &body)
                    } else {
                        c.request("DELETE", &path, "")
                    };
                    assert!(s == 200 || s == 204, "{path}: {s} {b}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// The CPU time this thread used (user and system, page writes included): unlike wall time, it
/// does not count waiting for a core the other builds hold.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The store engine alone (no fsync, no HTTP, no worker): jobs per second of the thread's CPU
/// time for enqueue, hand out and settle, one job per commit, with no other queue, with `n` idle push queues, and after
/// deleting them.
fn engine_comparison(n: u64, jobs: u64) {
    use reprow::store::{
        engine::Engine, queue::QueueDef, Destination, NewJob, Op, Options, Settlement,
    };
    let dir = tempfile::tempdir().unwrap();
    let def = |name: &str| {
        let mut d = QueueDef::named(name);
        d.url = Some("http://127.0.0.1:9/work".into());
        d
    };
    let mut e = Engine::open(
        Options {
            path: dir.path().join("data"),
            map_size: 1 << 30,
            no_sync: true,
            queues: vec![def("p")],
            routings: vec![],
            default_queue: "default".into(),
            defaults: Default::default(),
            clock: Default::default(),
            max_queues: n as usize + 10,
            fail_commit: None,
        },
        None,
    )
    .unwrap();
    let apply = |e: &mut Engine, ops: Vec<Op>| {
        for (what, r) in e.apply_ops(ops) {
            assert!(r.is_ok(), "{what}: {r:?}");
        }
    };
    // Bytes this process wrote so far (LMDB's page writes): what a commit costs, exactly.
    let written = || {
        std::fs::read_to_string("/proc/self/io")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("wchar: ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let rate = |e: &mut Engine| {
        let t = thread_cpu();
        let w = written();
        for _ in 0..jobs {
            let job = NewJob {
                dest: Destination::Queue("p".into()),
                url: None,
                payload: bytes::Bytes::from_static(b"{}"),
                content_type: "application/json".into(),
                run_at_ms: 0,
                timeout: None,
                max_retries: None,
                retry_delay: None,
                uniq: None,
                ordering_key: None,

                headers: vec![],
            };
            apply(e, vec![Op::Enqueue(vec![job])]);
            e.feed();
            let d = e.dispatched.pop().unwrap();
            e.next_wake();
            let done = Op::Settle {
                id: d.job.id,
                lease: d.lease,
                how: Settlement::Done,
                elapsed_ms: 1,
            };
            apply(e, vec![done]);
            e.feed();
            e.next_wake();
        }
        (
            jobs as f64 / (thread_cpu() - t).as_secs_f64(),
            (written() - w) / jobs,
        )
    };
    e.feed();
    rate(&mut e);
    let base = rate(&mut e);
    let names: Vec<String> = (0..n).map(|i| format!("idle-{i}")).collect();
    for chunk in names.chunks(2_000) {
        apply(&mut e, chunk.iter().map(|q| Op::PutQueue(def(q))).collect());
    }
    e.feed();
    let idle = rate(&mut e);
    for chunk in names.chunks(2_000) {
        apply(
            &mut e,
            chunk.iter().map(|q| Op::DeleteQueue(q.clone())).collect(),
        );
    }
    e.feed();
    let gone = rate(&mut e);
    println!(
        "store engine alone (no fsync), jobs per CPU second of the store and bytes written per job: \
         {:.0} and {} with no idle queue; {:.0} and {} with {n} idle ({:.2}); {:.0} and {} after deleting them ({:.2})",
        base.0,
        base.1,
        idle.0,
        idle.1,
        idle.0 / base.0,
        gone.0,
        gone.1,
        gone.0 / base.0
    );
}

/// The rate with no other queue, with `n` idle queues, and after they were deleted.
fn idle_comparison(b: &Bench, worker: SocketAddr, n: u64, jobs: u64, batch: u64, producers: u64) {
    println!("idle queues: {n}");
    let runs = |label: &str| {
        let one = measure(b, jobs, 1, producers, &format!("{label}, 1/request"));
        let many = measure(
            b,
            jobs * 5,
            batch,
            producers.min(4),
            &format!("{label}, batches of {batch}"),
        );
        (one, many)
    };
    let base = runs("no idle queue");
    let secs = idle_queues(b.api, worker, n, true);
    println!("  defined {n} idle queues in {secs:.1}s");
    let idle = runs(&format!("{n} idle"));
    let secs = idle_queues(b.api, worker, n, false);
    println!("  deleted {n} idle queues in {secs:.1}s");
    let gone = runs(&format!("{n} deleted"));
    println!(
        "  ratio to no idle queue: with {n} idle {:.2} (1/request) {:.2} (batches); after deleting them {:.2} {:.2}",
        idle.0 / base.0,
        idle.1 / base.1,
        gone.0 / base.0,
        gone.1 / base.1
    );
}

/// Batched jobs without ordering keys, then with each count of distinct keys.
fn ordering_comparison(b: &mut Bench, counts: &[u64], jobs: u64, batch: u64, producers: u64) {
    println!("ordering keys: {counts:?}");
    let producers = producers.min(4);
    b.keys = 0;
    let base = measure(b, jobs * 5, batch, producers, "no keys");
    let mut ratios = Vec::new();
    for &k in counts {
        b.keys = k;
        // One key runs one job at a time: a tenth of the jobs keeps the run short.
        let n = if k == 1 { jobs / 2 } else { jobs * 5 };
        let rate = measure(b, n, batch, producers, &format!("{k} keys"));
        ratios.push(format!("{k} keys {:.2}", rate / base));
    }
    b.keys = 0;
    let again = measure(b, jobs * 5, batch, producers, "no keys, again");
    println!(
        "  ratio to no keys: {}; no keys again {:.2}",
        ratios.join(", "),
        again / base
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let depths: Vec<u64> = env("REPROW_BENCH_DEPTHS", "1000,1000000,10000000")
        .split(',')
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let jobs: u64 = env("REPROW_BENCH_JOBS", "20000").parse().unwrap();
    let batch: u64 = env("REPROW_BENCH_BATCH", "100").parse().unwrap();
    let producers: u64 = env("REPROW_BENCH_PRODUCERS", "16").parse().unwrap();
    let idle: u64 = env("REPROW_BENCH_IDLE_QUEUES", "0").parse().unwrap();
    let ordering: Vec<u64> = env("REPROW_BENCH_ORDERING_KEYS", "")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let max_queues: u64 = env("REPROW_BENCH_MAX_QUEUES", &(idle + 100).to_string())
        .parse()
        .unwrap();
    if idle > 0 && env("REPROW_BENCH_IDLE_E2E", "1") == "0" {
        engine_comparison(idle, jobs);
        return;
    }
    let max_queues = if idle > 0 && max_queues > 0 {
        format!("  max_queues: {max_queues}\n")
    } else {
        String::new()
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("REPROW_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let epoch = Instant::now();
    let (waddr, log) = worker(epoch);
    let cfg = dir.join("bench.yaml");
    std::fs::write(
        &cfg,
        format!(
            "queue:\n  type: lmdb\n  path: {}\n  map_size: 16GiB\n{max_queues}api:\n  listen: 127.0.0.1:0\nlog_level: warn\nqueues:\n  bench:\n    url: http://{waddr}/work\n    max_workers: 64\n  backlog:\n    url: http://{waddr}/work\n    paused: true\nroutings:\n  bench: bench\n  backlog: backlog\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let log_path = dir.join("reprow.log");
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(["-c", cfg.to_str().unwrap(), "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let api = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "API listening.")
        {
            break a["address"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap();
        }
        assert!(child.try_wait().unwrap().is_none(), "reprow exited: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "durable path: {jobs} jobs per run, {producers} producer connections, batches of {batch}, {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if idle > 0 {
        let b = Bench {
            api,
            log: log.clone(),
            epoch,
            pid: child.id(),
            keys: 0,
        };
        idle_comparison(&b, waddr, idle, jobs, batch, producers);
    }
    if !ordering.is_empty() {
        let mut b = Bench {
            api,
            log: log.clone(),
            epoch,
            pid: child.id(),
            keys: 0,
        };
        ordering_comparison(&mut b, &ordering, jobs, batch, producers);
    }
    for depth in depths
        .into_iter()
        .filter(|_| idle == 0 && ordering.is_empty())
    {
        fill(api, depth);
        println!("backlog depth {depth} waiting jobs:");
        let b = Bench {
            api,
            log: log.clone(),
            epoch,
            pid: child.id(),
            keys: 0,
        };
        measure(&b, jobs, 1, producers, "one job per request");
        measure(
            &b,
            jobs * 5,
            batch,
            producers.min(4),
            &format!("batches of {batch}"),
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    if idle > 0 {
        engine_comparison(idle, jobs);
    }
}
