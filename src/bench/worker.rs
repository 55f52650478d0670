//! The simulated worker: keep-alive HTTP/1.1 on 127.0.0.1, a thread per connection (reprow
//! keeps at most `concurrency` connections open). It answers after `latency`, fails a set
//! share of first attempts with 500, and counts successes per job number.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::Report;

pub(super) struct SimWorker {
    url: String,
    shared: Arc<Shared>,
}

struct Shared {
    latency: Duration,
    /// Fail a first attempt when its job's hash falls below this.
    fail_below: u64,
    /// Successes per job number.
    seen: Vec<AtomicU32>,
    /// When each job first succeeded, as µs since `epoch`.
    done_at_us: Vec<AtomicU64>,
    epoch: Instant,
    done: AtomicU64,
    injected: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl SimWorker {
    pub(super) fn start(
        jobs: u64,
        latency: Duration,
        failure_rate: f64,
    ) -> std::io::Result<SimWorker> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/work", listener.local_addr()?);
        let shared = Arc::new(Shared {
            latency,
            fail_below: (failure_rate * u64::MAX as f64) as u64,
            seen: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            done_at_us: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            done: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            last: Mutex::new(None),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("reprow-bench-worker".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("reprow-bench-conn".into())
                        .spawn(move || serve(stream, &s));
                }
            })?;
        Ok(SimWorker { url, shared })
    }

    pub(super) fn url(&self) -> String {
        self.url.clone()
    }

    /// Jobs done at least once.
    pub(super) fn done(&self) -> u64 {
        self.shared.done.load(Relaxed)
    }

    pub(super) fn last_done(&self) -> Option<Instant> {
        *self.shared.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn report(&self, jobs: u64, elapsed: Duration, sent: &[Instant]) -> Report {
        let s = &self.shared;
        let mut lost = 0;
        let mut duplicates = 0;
        let mut latencies = Vec::with_capacity(jobs as usize);
        for n in 0..jobs as usize {
            match s.seen[n].load(Relaxed) {
                0 => lost += 1,
                k => {
                    duplicates += u64::from(k - 1);
                    let done = s.epoch + Duration::from_micros(s.done_at_us[n].load(Relaxed));
                    if let Some(at) = sent.get(n) {
                        latencies.push(done.saturating_duration_since(*at));
                    }
                }
            }
        }
        latencies.sort_unstable();
        let pct = |p: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i]
        };
        Report {
            jobs,
            elapsed,
            done: jobs - lost,
            lost,
            duplicates,
            injected_failures: s.injected.load(Relaxed),
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            plain: None,
        }
    }
}

/// Reads requests off one connection; answers each.
fn serve(stream: std::net::TcpStream, s: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    loop {
        let (mut len, mut attempt) = (0usize, 1u32);
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-reprow-attempt") {
                    attempt = value.trim().parse().unwrap_or(1);
                }
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let answer: &[u8] = match job_number(&body) {
            Some(n) if attempt == 1 && hash(n) < s.fail_below => {
                s.injected.fetch_add(1, Relaxed);
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 8\r\n\r\ninjected"
            }
            Some(n) if (n as usize) < s.seen.len() => {
                if !s.latency.is_zero() {
                    std::thread::sleep(s.latency);
                }
                if s.seen[n as usize].fetch_add(1, Relaxed) == 0 {
                    let now = Instant::now();
                    let us = now.saturating_duration_since(s.epoch).as_micros() as u64;
                    s.done_at_us[n as usize].store(us, Relaxed);
                    s.done.fetch_add(1, Relaxed);
                    *s.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                }
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            }
            _ => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nnot a job\n",
        };
        if w.write_all(answer).is_err() {
            return;
        }
    }
}

/// The job number in a `{"n":123}` payload.
fn job_number(body: &[u8]) -> Option<u64> {
    let start = body.iter().position(u8::is_ascii_digit)?;
    let digits = &body[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// SplitMix64: spreads job numbers evenly, so the failure share holds for any N.
fn hash(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_lost_and_duplicate_jobs() {
        let w = SimWorker::start(3, Duration::ZERO, 0.0).unwrap();
        let t0 = Instant::now();
        w.shared.seen[1].store(1, Relaxed);
        w.shared.seen[2].store(3, Relaxed);
        let r = w.report(3, Duration::from_secs(1), &[t0, t0, t0]);
        assert_eq!((r.done, r.lost, r.duplicates), (2, 1, 2));
    }

    #[test]
    fn numbers_and_spread() {
        assert_eq!(job_number(br#"{"n":4711}"#), Some(4711));
        assert_eq!(job_number(b"{}"), None);
        let below = (0..100_000u64).filter(|n| hash(*n) < u64::MAX / 10).count();
        assert!((9_000..11_000).contains(&below), "{below}");
    }
}
