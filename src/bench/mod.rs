//! `reprow bench`: the load simulator. It runs reprow in this process with a source of the
//! user's choice, an in-process worker with a set latency and failure rate, drives N numbered
//! jobs through, and checks every job by number: one success each, none lost, none twice.
//!
//! Latency is measured per job from the moment the driver hands it to the source (written to
//! the FIFO, or its batch answered 200 by the API) to the worker's successful answer, retries
//! included.

#[cfg(any(feature = "sqs", feature = "redis"))]
mod plain;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqs")]
mod sqs;
mod worker;

use std::{
    io::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use worker::SimWorker;

use crate::{config::Config, lifecycle::Shutdown, stats::Stats};

/// Which source the jobs go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSource {
    /// A FIFO, one line per job.
    Fifo,
    /// The durable queue, fed by `POST /job/bench/batch`.
    Durable,
    /// An SQS queue on `--sqs-endpoint`, filled first, then drained (feature `sqs`).
    #[cfg(feature = "sqs")]
    Sqs,
    /// A Redis stream on `--redis-url`, filled first, then drained (feature `redis`).
    #[cfg(feature = "redis")]
    Redis,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The source.
    pub source: BenchSource,
    /// Jobs to send.
    pub jobs: u64,
    /// Requests in flight (runner concurrency / queue `max_workers`).
    pub concurrency: usize,
    /// How long the worker takes per job.
    pub latency: Duration,
    /// Share of first attempts the worker answers 500 (retried).
    pub failure_rate: f64,
    /// Durable source: concurrent producers.
    pub producers: usize,
    /// Durable source: jobs per batch request.
    pub batch: usize,
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// SQS source: the SQS-compatible server.
    pub sqs_endpoint: Option<String>,
    /// Redis source: the server (`redis://127.0.0.1:6379/0`).
    pub redis_url: Option<String>,
    /// SQS and Redis sources: also time a plain single-loop consumer on the same server.
    pub compare_plain: bool,
    /// SQS source: reprow's `queue.fetchers`.
    pub fetchers: usize,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
    /// Setting up (temp dir, FIFO, sockets) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// reprow failed to start or stopped with an error.
    #[error("reprow: {0}")]
    Run(String),
}

/// The outcome, per job checked.
#[derive(Debug, Clone)]
pub struct Report {
    /// Jobs sent.
    pub jobs: u64,
    /// From the first job sent to the last job done (or the timeout).
    pub elapsed: Duration,
    /// Jobs done once or more.
    pub done: u64,
    /// Jobs never done.
    pub lost: u64,
    /// Successful deliveries beyond the first, summed over jobs.
    pub duplicates: u64,
    /// Attempts the worker failed on purpose.
    pub injected_failures: u64,
    /// Enqueue-to-done latency percentiles: p50, p99, p99.9.
    pub p50: Duration,
    /// p99.
    pub p99: Duration,
    /// p99.9.
    pub p999: Duration,
    /// The plain consumer's line, when compared.
    pub plain: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "jobs        {}", self.jobs)?;
        writeln!(f, "elapsed     {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "throughput  {rate:.0} jobs/s")?;
        writeln!(
            f,
            "latency     p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999)
        )?;
        writeln!(
            f,
            "failures    {} injected (retried)",
            self.injected_failures
        )?;
        write!(
            f,
            "checked     {} done, {} lost, {} duplicates",
            self.done, self.lost, self.duplicates
        )?;
        if let Some(p) = &self.plain {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs one bench.
///
/// # Errors
/// [`BenchError`].
pub fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    if opts.jobs == 0 || opts.jobs > 100_000_000 {
        return Err(BenchError::Options("--jobs must be 1 to 100000000".into()));
    }
    if !(0.0..1.0).contains(&opts.failure_rate) {
        return Err(BenchError::Options(
            "--failure-rate must be at least 0 and below 1".into(),
        ));
    }
    if opts.concurrency == 0 || opts.producers == 0 || opts.batch == 0 || opts.batch > 10_000 {
        return Err(BenchError::Options(
            "--concurrency and --producers must be at least 1, --batch 1 to 10000".into(),
        ));
    }
    #[cfg(feature = "sqs")]
    if opts.source == BenchSource::Sqs {
        let endpoint = opts.sqs_endpoint.as_deref().ok_or_else(|| {
            BenchError::Options(
                "--source sqs needs --sqs-endpoint (an SQS-compatible server)".into(),
            )
        })?;
        let (mut report, plain) = sqs::run(opts, endpoint, opts.compare_plain)?;
        report.plain = plain.map(|p| p.to_string());
        return Ok(report);
    }
    #[cfg(feature = "redis")]
    if opts.source == BenchSource::Redis {
        let url = opts.redis_url.as_deref().ok_or_else(|| {
            BenchError::Options(
                "--source redis needs --redis-url (redis://127.0.0.1:6379/0)".into(),
            )
        })?;
        let (mut report, plain) = redis::run(opts, url, opts.compare_plain)?;
        report.plain = plain.map(|p| p.to_string());
        return Ok(report);
    }
    let io = |what| move |source| BenchError::Io { what, source };
    let dir = tempfile::tempdir().map_err(io("temp dir"))?;
    let worker =
        SimWorker::start(opts.jobs, opts.latency, opts.failure_rate).map_err(io("worker"))?;
    let (config, api) = config_for(opts, dir.path(), &worker.url())?;
    let shutdown = Shutdown::try_new().map_err(io("shutdown pipe"))?;
    let reprow = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("reprow-bench-run".into())
            .spawn(move || crate::app::run(&config, shutdown, Arc::new(Stats::default())))
            .map_err(io("reprow thread"))?
    };
    let sent = match opts.source {
        BenchSource::Fifo => drive_fifo(opts, &dir.path().join("queue"), &worker),
        BenchSource::Durable => drive_durable(opts, api, &worker),
        #[cfg(feature = "sqs")]
        BenchSource::Sqs => unreachable!("handled above"),
        #[cfg(feature = "redis")]
        BenchSource::Redis => unreachable!("handled above"),
    };
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            shutdown.trigger();
            let _ = reprow.join();
            return Err(e);
        }
    };
    let started = sent.first_sent;
    let finished = wait_done(opts, &worker);
    let elapsed = finished.saturating_duration_since(started);
    shutdown.trigger();
    match reprow.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(BenchError::Run(e.to_string())),
        Err(_) => return Err(BenchError::Run("the reprow thread panicked".into())),
    }
    Ok(worker.report(opts.jobs, elapsed, &sent.at))
}

/// When each job was handed over, by number.
struct Sent {
    first_sent: Instant,
    at: Vec<Instant>,
}

fn config_for(
    opts: &BenchOptions,
    dir: &std::path::Path,
    worker_url: &str,
) -> Result<(Config, Option<std::net::SocketAddr>), BenchError> {
    let c = opts.concurrency;
    let (text, api) = match opts.source {
        BenchSource::Fifo => (
            format!(
                "queue:\n  type: fifo\n  path: {q}\n  failed_path: {d}/failed.jsonl\n  pending_path: {d}/pending.jsonl\n  max_held_jobs: {held}\nrunner:\n  type: http_proxy\n  url: {worker_url}\n  concurrency: {c}\n  backoff_base: 10ms\n  backoff_max: 100ms\n  max_retries: 20\nshutdown_timeout: 5s\n",
                q = dir.join("queue").display(),
                d = dir.display(),
                held = (c * 4).max(10_000),
            ),
            None,
        ),
        BenchSource::Durable => {
            // A port for the API: bound and released; reprow binds it again at once.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|source| BenchError::Io {
                    what: "API port",
                    source,
                })?
                .port();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            (
                format!(
                    "queue:\n  type: lmdb\n  path: {d}/data\n  map_size: 8GiB\napi:\n  listen: {addr}\nqueues:\n  bench:\n    url: {worker_url}\n    max_workers: {c}\n    retry_delay: 0\n    max_retries: 20\nroutings:\n  bench: bench\nshutdown_timeout: 5s\n",
                    d = dir.display(),
                ),
                Some(addr),
            )
        }
        #[cfg(feature = "sqs")]
        BenchSource::Sqs => unreachable!("handled in run"),
        #[cfg(feature = "redis")]
        BenchSource::Redis => unreachable!("handled in run"),
    };
    let config = Config::from_yaml(&text).map_err(|e| BenchError::Run(e.to_string()))?;
    Ok((config, api))
}

fn drive_fifo(
    opts: &BenchOptions,
    fifo: &std::path::Path,
    worker: &SimWorker,
) -> Result<Sent, BenchError> {
    // reprow creates the FIFO and opens it for reading; wait for that, then write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fifo.exists() {
        if Instant::now() > deadline {
            return Err(BenchError::Run("the FIFO did not appear".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .map_err(|source| BenchError::Io {
            what: "open the FIFO",
            source,
        })?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let bar = progress(opts);
    let mut at = Vec::with_capacity(opts.jobs as usize);
    let first_sent = Instant::now();
    let mut line = Vec::with_capacity(32);
    for n in 0..opts.jobs {
        line.clear();
        let _ = writeln!(line, "{{\"n\":{n}}}");
        out.write_all(&line).map_err(|source| BenchError::Io {
            what: "write the FIFO",
            source,
        })?;
        // Buffered lines count as sent when the buffer is flushed; the error is at most one
        // buffer's worth of jobs, a few milliseconds at these rates.
        at.push(Instant::now());
        if n % 4096 == 0 {
            bar.update(worker.done());
        }
    }
    out.flush().map_err(|source| BenchError::Io {
        what: "write the FIFO",
        source,
    })?;
    Ok(Sent { first_sent, at })
}

fn drive_durable(
    opts: &BenchOptions,
    api: Option<std::net::SocketAddr>,
    worker: &SimWorker,
) -> Result<Sent, BenchError> {
    let Some(addr) = api else {
        return Err(BenchError::Run("no API address".into()));
    };
    let client = crate::client::Client::new(&format!("http://{addr}"), None)
        .map_err(|e| BenchError::Run(e.to_string()))?;
    // Wait for the API.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.call("GET", "/healthz", None).is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Run("the API did not come up".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let at: Arc<Vec<std::sync::Mutex<Option<Instant>>>> = Arc::new(
        (0..opts.jobs)
            .map(|_| std::sync::Mutex::new(None))
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first_sent = Instant::now();
    let bar = progress(opts);
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    std::thread::scope(|s| {
        for _ in 0..opts.producers {
            let (client, at, next, failed) =
                (client.clone(), at.clone(), next.clone(), failed.clone());
            let (jobs, batch) = (opts.jobs, opts.batch as u64);
            s.spawn(move || loop {
                let start = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if start >= jobs {
                    return;
                }
                let end = (start + batch).min(jobs);
                let mut body = String::from("{\"jobs\":[");
                for n in start..end {
                    if n > start {
                        body.push(',');
                    }
                    body.push_str(&format!("{{\"payload\":{{\"n\":{n}}}}}"));
                }
                body.push_str("]}");
                // Taken before sending: a job may be delivered before the batch's answer.
                let sent_at = Instant::now();
                if let Err(e) = client.call("POST", "/job/bench/batch", Some(body.as_bytes())) {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    return;
                }
                for n in start..end {
                    *at[n as usize].lock().unwrap_or_else(|e| e.into_inner()) = Some(sent_at);
                }
            });
        }
        while next.load(std::sync::atomic::Ordering::Relaxed) < opts.jobs
            && failed.lock().unwrap_or_else(|e| e.into_inner()).is_none()
        {
            bar.update(worker.done());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(BenchError::Run(format!("enqueue failed: {e}")));
    }
    let at = at
        .iter()
        .map(|m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(first_sent)
        })
        .collect();
    Ok(Sent { first_sent, at })
}

/// Waits until every job is done (or the timeout); returns when the last one was.
fn wait_done(opts: &BenchOptions, worker: &SimWorker) -> Instant {
    let bar = progress(opts);
    let deadline = Instant::now() + opts.timeout;
    loop {
        let done = worker.done();
        bar.update(done);
        if done >= opts.jobs || Instant::now() > deadline {
            bar.finish(done);
            let last = worker.last_done().unwrap_or_else(Instant::now);
            // A little longer, so a late second delivery still counts as a duplicate.
            std::thread::sleep(SETTLE);
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-line progress bar on stderr (only on a terminal, or when asked).
struct Progress {
    total: u64,
    on: bool,
    started: Instant,
}

fn progress(opts: &BenchOptions) -> Progress {
    Progress {
        total: opts.jobs,
        on: opts.progress,
        started: Instant::now(),
    }
}

impl Progress {
    fn update(&self, done: u64) {
        if !self.on {
            return;
        }
        eprint!(
            "{}",
            progress_line(done, self.total, self.started.elapsed())
        );
    }

    fn finish(&self, done: u64) {
        if self.on {
            self.update(done);
            eprintln!();
        }
    }
}

/// One redraw of the progress bar: back to the line's start, the bar, then `ESC [K` to erase
/// what a longer earlier line left after it (a rate one digit shorter left `/s` behind).
fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let width = 40;
    let filled = ((done as f64 / total.max(1) as f64) * width as f64) as usize;
    let filled = filled.min(width);
    format!(
        "\r[{}{}] {:>3}% {done}/{total} jobs {rate:.0}/s\x1b[K",
        "=".repeat(filled),
        " ".repeat(width - filled),
        done * 100 / total.max(1),
    )
}

/// How long the bench keeps counting after the last job was done.
const SETTLE: Duration = Duration::from_millis(500);

/// The default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    #[test]
    fn a_progress_redraw_erases_the_rest_of_the_line() {
        let line = super::progress_line(5, 10, std::time::Duration::from_micros(1070));
        assert_eq!(
            line,
            format!(
                "\r[{}{}]  50% 5/10 jobs 4673/s\x1b[K",
                "=".repeat(20),
                " ".repeat(20)
            )
        );
        let none = super::progress_line(0, 0, std::time::Duration::ZERO);
        assert!(none.contains("0/0 jobs 0/s"), "{none}");
    }
}
