//! `reprow bench --source redis`: N entries are added to a fresh stream on `--redis-url`
//! first, then reprow drains it; with `--compare-plain`, a plain single-loop consumer
//! (`XREADGROUP` up to 10, POST each, `XACK` each) drains a second stream of the same size to
//! the same kind of worker, in the same run. The streams and their keys are deleted after.

use std::time::Instant;

use redis::Commands as _;

use super::{
    plain::{drain, post_once, PlainReport},
    worker::SimWorker,
    BenchError, BenchOptions, Report,
};
use crate::config::Config;

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> BenchError {
    move |e| BenchError::Run(format!("{what}: {e}"))
}

/// A fresh stream holding entries `{"n":0}` … `{"n":jobs-1}` in their `payload` field.
fn filled_stream(conn: &mut redis::Connection, tag: &str, jobs: u64) -> Result<String, BenchError> {
    let stream = format!("reprow-bench-{}-{tag}", std::process::id());
    let _: () = conn.del(&stream).map_err(err("DEL"))?;
    let mut n = 0;
    while n < jobs {
        let end = (n + 1000).min(jobs);
        let mut pipe = redis::pipe();
        for i in n..end {
            pipe.xadd(&stream, "*", &[("payload", format!("{{\"n\":{i}}}"))])
                .ignore();
        }
        pipe.query::<()>(conn).map_err(err("XADD"))?;
        n = end;
    }
    Ok(stream)
}

fn cleanup(conn: &mut redis::Connection, stream: &str) {
    let keys = [
        stream.to_string(),
        format!("{stream}:delayed"),
        format!("{stream}:failed"),
    ];
    let _: redis::RedisResult<()> = conn.del(&keys);
}

/// Runs the Redis bench: reprow, then (with `plain`) the plain consumer.
///
/// # Errors
/// [`BenchError`].
pub fn run(
    opts: &BenchOptions,
    url: &str,
    plain: bool,
) -> Result<(Report, Option<PlainReport>), BenchError> {
    let client = redis::Client::open(url).map_err(err("--redis-url"))?;
    let mut conn = client.get_connection().map_err(err("connect to Redis"))?;
    let stream = filled_stream(&mut conn, "reprow", opts.jobs)?;
    let io = |what| move |source| BenchError::Io { what, source };
    let worker =
        SimWorker::start(opts.jobs, opts.latency, opts.failure_rate).map_err(io("worker"))?;
    let text = format!(
        "queue:\n  type: redis\n  url: {url}\n  stream: {stream}\n  block: 100ms\nrunner:\n  type: http_proxy\n  url: {}\n  concurrency: {}\n  backoff_base: 10ms\n  backoff_max: 100ms\n  default_retry_after: 0\n  max_retries: 20\nshutdown_timeout: 5s\n",
        worker.url(),
        opts.concurrency
    );
    let config = Config::from_yaml(&text).map_err(|e| BenchError::Run(e.to_string()))?;
    let report = drain(config, opts, &worker);
    cleanup(&mut conn, &stream);
    let report = report?;
    let plain = if plain {
        let stream = filled_stream(&mut conn, "plain", opts.jobs)?;
        let w =
            SimWorker::start(opts.jobs, opts.latency, opts.failure_rate).map_err(io("worker"))?;
        let r = plain_consumer(&mut conn, &stream, &w, opts);
        cleanup(&mut conn, &stream);
        Some(r?)
    } else {
        None
    };
    Ok((report, plain))
}

/// The consumer people write first: one loop, read a few, POST each, acknowledge each.
fn plain_consumer(
    conn: &mut redis::Connection,
    stream: &str,
    w: &SimWorker,
    opts: &BenchOptions,
) -> Result<PlainReport, BenchError> {
    let addr = w
        .url()
        .trim_start_matches("http://")
        .trim_end_matches("/work")
        .to_string();
    let _: () = conn
        .xgroup_create(stream, "plain", "0")
        .map_err(err("XGROUP CREATE"))?;
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let read = redis::streams::StreamReadOptions::default()
        .group("plain", "plain")
        .count(10)
        .block(100);
    while w.done() < opts.jobs && Instant::now() < deadline {
        let reply: redis::streams::StreamReadReply = conn
            .xread_options(&[stream], &[">"], &read)
            .map_err(err("XREADGROUP"))?;
        for key in reply.keys {
            for entry in key.ids {
                let body: String = entry.get("payload").unwrap_or_default();
                if post_once(&addr, &body, "1").unwrap_or(false) {
                    let _: () = conn
                        .xack(stream, "plain", &[&entry.id])
                        .map_err(err("XACK"))?;
                }
            }
        }
    }
    let last = w.last_done().unwrap_or_else(Instant::now);
    let r = w.report(opts.jobs, last.saturating_duration_since(started), &[]);
    Ok(PlainReport {
        how: "XREADGROUP, POST, XACK",
        done: r.done,
        elapsed: r.elapsed,
        lost: r.lost,
        duplicates: r.duplicates,
    })
}
