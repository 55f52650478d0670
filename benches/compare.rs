//! reprow beside the programs a user would pick instead, in one run on this machine, each row
//! as a ratio (absolute figures on a shared machine move ±20 % from run to run; ratios of runs
//! made side by side move much less):
//!
//! - **FIFO → worker**: reprow reads N lines of 100 bytes from a FIFO and POSTs each to nginx
//!   (one worker process, `return 200`) at concurrency C; the reference is `wrk -t1 -cC`
//!   POSTing 100 bytes to the same nginx. C = 1, 16, 64, 256.
//! - **Durable**: `wrk -c64` POSTs one job per request to `/job/bench` (each answered only once
//!   its commit is fsync'd) while reprow delivers every job to the same nginx; the rate is jobs
//!   enqueued, delivered and acked per second (first request to last ack). The reference is
//!   Redis 7 with `appendfsync always`, `redis-benchmark -c64` LPUSH of 100 bytes (enqueue
//!   only). Then the same at about half that load (wrk paced by its `delay()` hook) for the
//!   p99 enqueue latency, and batches of 100 jobs per request.
//!
//! Every row prints reprow's CPU per job (user + system time of the reprow process from
//! `/proc/PID/stat`, over the jobs it delivered) next to wrk's CPU per request: the figure the
//! machine's other work does not blur. The results are written as JSON to
//! `target/compare/<unix time>.json` (and `latest.json`) for comparison across commits.
//!
//! Run: `cargo bench --bench compare`. Needs Debian's `wrk`, `nginx-light` (or `nginx`),
//! `redis-server` and `redis-tools`; it says which are missing. Settings:
//! `REPROW_COMPARE_ROWS` (default `fifo,durable`), `REPROW_COMPARE_CONCURRENCY` (default
//! `1,16,64,256`), `REPROW_COMPARE_FIFO_JOBS` (default 300000), `REPROW_COMPARE_SECONDS`
//! (each wrk run, default 10), `REPROW_COMPARE_ROUNDS` (pairs per row, default 1: the median
//! ratio is kept).

#[path = "support/refs.rs"]
mod refs;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use refs::{Running, WrkRun};
use serde_json::{json, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A reprow process started from a config, with the address it serves HTTP on.
struct Reprow {
    process: Running,
    http: SocketAddr,
}

impl Reprow {
    /// Starts `reprow -c <yaml>` (the config's `{listen}` replaced by a free port) and waits
    /// until it serves HTTP there. It logs at `warn`: no line per job, as nginx runs with
    /// `access_log off`.
    fn start(bin: &Path, dir: &Path, yaml: &str) -> Reprow {
        let http: SocketAddr = format!("127.0.0.1:{}", refs::free_port()).parse().unwrap();
        let cfg = dir.join("reprow.yaml");
        std::fs::write(&cfg, yaml.replace("{listen}", &http.to_string())).unwrap();
        let log = dir.join("reprow.log");
        let child = Command::new(bin)
            .args(["-c", cfg.to_str().unwrap(), "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut process = Running(child);
        refs::wait_listening(http, &mut process.0, "reprow");
        Reprow { process, http }
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// A sample of `/metrics`: `reprow_succeeded_total`.
    fn succeeded(&self) -> u64 {
        let text = get(self.http, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("reprow_succeeded_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Waits until `n` jobs succeeded in all; the moment it saw that.
    fn wait_succeeded(&self, n: u64, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.succeeded();
            if got >= n {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "only {got} of {n} jobs succeeded in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One `GET` on a fresh connection; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string())
}

/// The CPU reprow used between two samples, over the jobs delivered between them, in µs.
fn us_per(cpu: f64, jobs: u64) -> f64 {
    cpu * 1e6 / jobs.max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A wrk script POSTing `body` with `content_type`, paced by `delay_ms` per request when set.
fn wrk_script(
    dir: &Path,
    name: &str,
    path: &str,
    body: &str,
    delay_ms: Option<f64>,
) -> std::path::PathBuf {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.path = \"{path}\"\nwrk.body = '{body}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n"
    );
    if let Some(d) = delay_ms {
        lua += &format!("function delay()\n  return {d:.3}\nend\n");
    }
    let p = dir.join(name);
    std::fs::write(&p, lua).unwrap();
    p
}

/// One FIFO round at concurrency `c`: wrk against nginx, then each reprow binary in turn
/// proxying `jobs` lines; a row per binary.
fn fifo_round(
    dir: &Path,
    bins: &[std::path::PathBuf],
    nginx: SocketAddr,
    c: usize,
    jobs: u64,
    secs: u64,
) -> Vec<Value> {
    let body = "x".repeat(100);
    let script = wrk_script(dir, "fifo.lua", "/", &body, None);
    let w: WrkRun = refs::wrk(&format!("http://{nginx}/"), c, secs, &script);
    assert_eq!(w.errors, 0, "wrk against nginx had errors: {w:?}");
    bins.iter()
        .map(|bin| {
            let mut r = fifo_run(bin, dir, nginx, c, jobs);
            let rate = r["reprow_jobs_per_s"].as_f64().unwrap();
            r["wrk_req_per_s"] = json!(w.rate);
            r["wrk_cpu_us_per_req"] = json!(us_per(w.cpu, w.requests));
            r["ratio"] = json!(rate / w.rate);
            r["bin"] = json!(bin.display().to_string());
            r
        })
        .collect()
}

/// reprow (`bin`) proxying `jobs` lines of a FIFO to nginx at concurrency `c`.
fn fifo_run(bin: &Path, dir: &Path, nginx: SocketAddr, c: usize, jobs: u64) -> Value {
    let run = dir.join(format!("fifo-{c}"));
    std::fs::create_dir_all(&run).unwrap();
    let fifo = run.join("jobs");
    let yaml = format!(
        "queue:\n  type: fifo\n  path: {}\n  failed_path: {}\n  pending_path: {}\n\
         runner:\n  type: http_proxy\n  url: http://{nginx}/\n  concurrency: {c}\nmonitor_listen: \"{{listen}}\"\n",
        fifo.display(),
        run.join("failed.jsonl").display(),
        run.join("pending.jsonl").display()
    );
    let r = Reprow::start(bin, &run, &yaml);
    // 99 bytes and the newline; the same 100 bytes wrk sends.
    let line = format!("{}\n", "y".repeat(99));
    let chunk = line.repeat(40);
    let cpu0 = refs::process_cpu(r.pid());
    let start = Instant::now();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let mut left = jobs;
            while left > 0 {
                let n = left.min(40);
                f.write_all(&chunk.as_bytes()[..(n as usize * 100)])
                    .unwrap();
                left -= n;
            }
        })
    };
    let end = r.wait_succeeded(jobs, Duration::from_secs(600));
    let cpu = refs::process_cpu(r.pid()) - cpu0;
    writer.join().unwrap();
    let rate = jobs as f64 / (end - start).as_secs_f64();
    let rss = refs::rss_anon_kib(r.pid());
    drop(r);
    json!({
        "concurrency": c, "jobs": jobs,
        "reprow_jobs_per_s": rate, "reprow_cpu_us_per_job": us_per(cpu, jobs),
        "reprow_rss_anon_kib": rss,
    })
}

/// The durable rows: reprow's own store, nginx as every job's worker.
fn durable(bin: &Path, dir: &Path, nginx: SocketAddr, secs: u64) -> Value {
    // A fresh store per run (reprow's and Redis's): one run's leftovers must not weigh on
    // the next.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (redis, port) = refs::redis(&dir.join(format!("redis-{n}")).tap_mkdir());
    let redis_rate = refs::redis_lpush(port, 64, 200_000);
    drop(redis);
    let run = dir.join(format!("durable-{n}")).tap_mkdir();
    let yaml = format!(
        "queue:\n  type: lmdb\n  path: {}\n  map_size: 8GiB\napi:\n  listen: \"{{listen}}\"\n\
         queues:\n  bench:\n    url: http://{nginx}/\n    max_workers: 256\n\
         routings:\n  bench: bench\n",
        run.join("data").display()
    );
    let r = Reprow::start(bin, &run, &yaml);
    let url = format!("http://{}", r.http);
    let one = wrk_script(
        &run,
        "one.lua",
        "/job/bench",
        r#"{"payload":"0123456789"}"#,
        None,
    );

    // One job per request, as fast as 64 connections go; then until every job is acked.
    let (delivered0, cpu0) = (r.succeeded(), refs::process_cpu(r.pid()));
    let start = Instant::now();
    let w = refs::wrk(&url, 64, secs, &one);
    assert_eq!(w.errors, 0, "enqueue errors: {w:?}");
    let end = r.wait_succeeded(delivered0 + w.requests, Duration::from_secs(300));
    let cpu = refs::process_cpu(r.pid()) - cpu0;
    let e2e = w.requests as f64 / (end - start).as_secs_f64();

    // About half that rate: each connection waits between requests.
    let delay = (64.0 * 1e3 / (e2e / 2.0) - w.avg_ms).max(0.0);
    let paced_script = wrk_script(
        &run,
        "paced.lua",
        "/job/bench",
        r#"{"payload":"0123456789"}"#,
        Some(delay),
    );
    let before = r.succeeded();
    let paced = refs::wrk(&url, 64, secs, &paced_script);
    r.wait_succeeded(before + paced.requests, Duration::from_secs(300));

    // Batches of 100 jobs per request.
    let batch_body = format!("[{}]", vec![r#"{"payload":"0123456789"}"#; 100].join(","));
    let batch = wrk_script(&run, "batch.lua", "/job/bench/batch", &batch_body, None);
    let (before, cpu_b0) = (r.succeeded(), refs::process_cpu(r.pid()));
    let start = Instant::now();
    let b = refs::wrk(&url, 16, secs, &batch);
    assert_eq!(b.errors, 0, "batch errors: {b:?}");
    let end = r.wait_succeeded(before + b.requests * 100, Duration::from_secs(300));
    let cpu_b = refs::process_cpu(r.pid()) - cpu_b0;
    let batch_rate = (b.requests * 100) as f64 / (end - start).as_secs_f64();
    let rss = refs::rss_anon_kib(r.pid());
    drop(r);
    json!({
        "one_per_request": {
            "jobs": w.requests, "enqueue_per_s": w.rate, "end_to_end_jobs_per_s": e2e,
            "enqueue_avg_ms": w.avg_ms, "enqueue_p99_ms": w.p99_ms,
            "reprow_cpu_us_per_job": us_per(cpu, w.requests),
            "wrk_cpu_us_per_req": us_per(w.cpu, w.requests),
            "redis_lpush_per_s": redis_rate, "ratio_to_redis": e2e / redis_rate,
        },
        "half_load": { "enqueue_per_s": paced.rate, "enqueue_p99_ms": paced.p99_ms },
        "batches_of_100": {
            "jobs": b.requests * 100, "end_to_end_jobs_per_s": batch_rate,
            "reprow_cpu_us_per_job": us_per(cpu_b, b.requests * 100),
        },
        "reprow_rss_anon_kib": rss,
    })
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let missing = refs::missing_packages();
    if !missing.is_empty() {
        eprintln!(
            "cargo bench --bench compare needs {}: sudo apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
        std::process::exit(1);
    }
    let rows = env("REPROW_COMPARE_ROWS", "fifo,durable");
    let levels: Vec<usize> = env("REPROW_COMPARE_CONCURRENCY", "1,16,64,256")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let jobs: u64 = env("REPROW_COMPARE_FIFO_JOBS", "300000").parse().unwrap();
    let secs: u64 = env("REPROW_COMPARE_SECONDS", "10").parse().unwrap();
    let rounds: usize = env("REPROW_COMPARE_ROUNDS", "1").parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_process, nginx) = refs::nginx(tmp.path());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("reprow vs references, {cpus} CPUs, nginx (1 worker, return 200) at {nginx}");

    // `REPROW_COMPARE_BINS`: reprow binaries run back to back in each round (an A/B of two
    // builds); default the one cargo built.
    let bins: Vec<std::path::PathBuf> = env("REPROW_COMPARE_BINS", env!("CARGO_BIN_EXE_reprow"))
        .split(',')
        .map(|b| b.trim().into())
        .collect();
    let mut fifo_rows = Vec::new();
    if rows.contains("fifo") {
        println!(
            "FIFO → nginx, {jobs} lines of 100 B; wrk -t1 POST 100 B → the same nginx, {secs} s"
        );
        println!(
            "{:>5} {:>12} {:>12} {:>7} {:>14} {:>14}  bin",
            "c", "reprow/s", "wrk/s", "ratio", "reprow µs/job", "wrk µs/req"
        );
        for &c in &levels {
            let rounds: Vec<Vec<Value>> = (0..rounds)
                .map(|_| fifo_round(tmp.path(), &bins, nginx, c, jobs, secs))
                .collect();
            for (k, bin) in bins.iter().enumerate() {
                let runs: Vec<Value> = rounds.iter().map(|r| r[k].clone()).collect();
                let ratio = median(runs.iter().map(|r| r["ratio"].as_f64().unwrap()).collect());
                let r = runs
                    .iter()
                    .find(|r| r["ratio"].as_f64() == Some(ratio))
                    .unwrap()
                    .clone();
                println!(
                    "{:>5} {:>12.0} {:>12.0} {:>7.2} {:>14.1} {:>14.1}  {}",
                    c,
                    r["reprow_jobs_per_s"].as_f64().unwrap(),
                    r["wrk_req_per_s"].as_f64().unwrap(),
                    ratio,
                    r["reprow_cpu_us_per_job"].as_f64().unwrap(),
                    r["wrk_cpu_us_per_req"].as_f64().unwrap(),
                    bin.display()
                );
                fifo_rows.push(json!({ "median": r, "rounds": runs }));
            }
        }
    }
    let mut durable_rows = Vec::new();
    for bin in bins.iter().filter(|_| rows.contains("durable")) {
        let d = durable(bin, tmp.path(), nginx, secs);
        let o = &d["one_per_request"];
        println!("{}:", bin.display());
        println!(
            "  durable, one job per request, wrk -c64 {secs} s: {:.0} jobs/s end to end (enqueue {:.0}/s, avg {:.2} ms, p99 {:.2} ms); \
             Redis appendfsync always LPUSH -c64: {:.0}/s; ratio {:.2}; reprow {:.1} µs CPU/job, wrk {:.1} µs/req",
            o["end_to_end_jobs_per_s"].as_f64().unwrap(),
            o["enqueue_per_s"].as_f64().unwrap(),
            o["enqueue_avg_ms"].as_f64().unwrap(),
            o["enqueue_p99_ms"].as_f64().unwrap(),
            o["redis_lpush_per_s"].as_f64().unwrap(),
            o["ratio_to_redis"].as_f64().unwrap(),
            o["reprow_cpu_us_per_job"].as_f64().unwrap(),
            o["wrk_cpu_us_per_req"].as_f64().unwrap()
        );
        println!(
            "  durable at about half load: {:.0} enqueues/s, p99 {:.2} ms; batches of 100: {:.0} jobs/s end to end, {:.1} µs CPU/job",
            d["half_load"]["enqueue_per_s"].as_f64().unwrap(),
            d["half_load"]["enqueue_p99_ms"].as_f64().unwrap(),
            d["batches_of_100"]["end_to_end_jobs_per_s"].as_f64().unwrap(),
            d["batches_of_100"]["reprow_cpu_us_per_job"].as_f64().unwrap()
        );
        durable_rows.push(d);
    }
    drop(nginx_process);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = json!({ "commit": commit, "unix_time": now, "cpus": cpus, "fifo": fifo_rows, "durable": durable_rows });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&report).unwrap();
    std::fs::write(out.join(format!("{now}.json")), &text).unwrap();
    std::fs::write(out.join("latest.json"), &text).unwrap();
    println!("written: {}", out.join(format!("{now}.json")).display());
}
