//! End-to-end FIFO benchmark: N jobs written into a FIFO and proxied by reprow (in-process) to
//! a minimal keep-alive HTTP worker, next to the same worker driven directly by a plain
//! HTTP/1.1 load loop at the same concurrency. Prints jobs/s, p50/p99 latency (write or send to
//! worker receipt), lost/duplicate counts and the ratio. Run: `cargo bench --bench fifo_e2e`.
//! `REPROW_BENCH_JOBS` (default 100000) and `REPROW_BENCH_CONCURRENCY` (default 32) override.

mod support;

use std::{
    io::{BufRead, BufReader, BufWriter, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Receipts: (job number, nanoseconds from send to receipt).
type Log = Arc<Mutex<Vec<(u64, u64)>>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The worker; payload is `<n> <nanos since epoch0>`.
fn worker(epoch: Instant) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let addr = support::keep_alive_worker(move |body| {
        let now = epoch.elapsed().as_nanos() as u64;
        let text = String::from_utf8_lossy(body);
        let mut it = text.split(' ');
        let n: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        let t: u64 = it.next().and_then(|v| v.trim().parse().ok()).unwrap_or(now);
        l.lock().unwrap().push((n, now.saturating_sub(t)));
    });
    (addr, log)
}

fn wait_for(log: &Log, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    while log.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    Instant::now()
}

fn report(name: &str, log: &Log, n: usize, elapsed: Duration) -> f64 {
    let mut got = log.lock().unwrap().clone();
    let mut ids: Vec<u64> = got.iter().map(|g| g.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let dups = got.len() - ids.len();
    let lost = n - ids.len().min(n);
    got.sort_unstable_by_key(|g| g.1);
    let pct = |p: f64| {
        got.get(((got.len() as f64 * p) as usize).min(got.len().saturating_sub(1)))
            .map_or(0, |g| g.1)
    };
    let rate = ids.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:>8}: {rate:>10.0} jobs/s  p50 {:>8.1} µs  p99 {:>9.1} µs  lost {lost} duplicates {dups}",
        pct(0.5) as f64 / 1e3,
        pct(0.99) as f64 / 1e3
    );
    log.lock().unwrap().clear();
    rate
}

fn direct(addr: SocketAddr, epoch: Instant, n: usize, c: usize) {
    let per = n / c;
    let threads: Vec<_> = (0..c)
        .map(|k| {
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                for i in 0..per {
                    let body = format!("{} {}", k * per + i, epoch.elapsed().as_nanos());
                    let req = format!(
                        "POST /work HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    w.write_all(req.as_bytes()).unwrap();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` compiles it; only `cargo bench` runs it.
    }
    let n = env("REPROW_BENCH_JOBS", 100_000);
    let c = env("REPROW_BENCH_CONCURRENCY", 32);
    let n = n / c * c;
    let epoch = Instant::now();
    let (addr, log) = worker(epoch);
    println!("{n} jobs, concurrency {c}, worker on {addr}");

    let start = Instant::now();
    direct(addr, epoch, n, c);
    let direct_rate = report(
        "direct",
        &log,
        n,
        wait_for(&log, n, Duration::from_secs(120)) - start,
    );

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("queue");
    let yaml = format!(
        "queue:\n  type: fifo\n  path: {}\n  failed_path: {}\n  pending_path: {}\n  max_held_jobs: 100000\nrunner:\n  type: http_proxy\n  url: http://{addr}/work\n  concurrency: {c}\nlog_level: warn\n",
        fifo.display(),
        dir.path().join("failed.jsonl").display(),
        dir.path().join("pending.jsonl").display()
    );
    let config = reprow::config::Config::from_yaml(&yaml).unwrap();
    let shutdown = reprow::lifecycle::Shutdown::try_new().unwrap();
    let sd = shutdown.clone();
    let runner = std::thread::spawn(move || {
        reprow::app::run(&config, sd, Arc::new(reprow::stats::Stats::default())).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        match std::fs::OpenOptions::new().write(true).open(&fifo) {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("FIFO not ready: {e}"),
        }
    };
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(4096, file);
    for i in 0..n {
        writeln!(w, "{i} {}", epoch.elapsed().as_nanos()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let fifo_rate = report(
        "reprow",
        &log,
        n,
        wait_for(&log, n, Duration::from_secs(120)) - start,
    );
    shutdown.trigger();
    runner.join().unwrap();
    println!("   ratio: {:.2} (goal >= 0.8)", fifo_rate / direct_rate);
}
