//! `reprow bench --source sqs`: N messages are put on a fresh queue of an SQS-compatible
//! server first, then reprow drains it; with `--compare-plain`, a plain single-loop consumer
//! (receive up to 10, POST each, delete each) drains a second queue of the same size to the
//! same kind of worker, in the same run. Both short-poll (wait 0): a local server such as moto
//! holds a long poll for its whole wait even when messages are there. Credentials come from the environment as for reprow
//! (any value for a local server such as moto).

use std::time::Instant;

use aws_sdk_sqs::{types::SendMessageBatchRequestEntry, Client};

use super::{
    plain::{drain, post_once, PlainReport},
    worker::SimWorker,
    BenchError, BenchOptions, Report,
};
use crate::config::Config;

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> BenchError {
    move |e| BenchError::Run(format!("{what}: {e:?}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "tokio runtime",
            source,
        })
}

async fn client(endpoint: &str) -> Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    Client::new(&conf)
}

/// A fresh queue holding messages `{"n":0}` … `{"n":jobs-1}`.
async fn filled_queue(c: &Client, tag: &str, jobs: u64) -> Result<String, BenchError> {
    let name = format!("reprow-bench-{}-{tag}", std::process::id());
    let url = c
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(err("CreateQueue"))?
        .queue_url
        .unwrap_or_default();
    let mut n = 0;
    while n < jobs {
        let end = (n + 10).min(jobs);
        let entries: Vec<_> = (n..end)
            .filter_map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("{{\"n\":{i}}}"))
                    .build()
                    .ok()
            })
            .collect();
        c.send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(err("SendMessageBatch"))?;
        n = end;
    }
    Ok(url)
}

/// Runs the SQS bench: reprow, then (with `plain`) the plain consumer.
///
/// # Errors
/// [`BenchError`].
pub fn run(
    opts: &BenchOptions,
    endpoint: &str,
    plain: bool,
) -> Result<(Report, Option<PlainReport>), BenchError> {
    let rt = runtime()?;
    let c = rt.block_on(client(endpoint));
    let url = rt.block_on(filled_queue(&c, "reprow", opts.jobs))?;
    let worker =
        SimWorker::start(opts.jobs, opts.latency, opts.failure_rate).map_err(|source| {
            BenchError::Io {
                what: "worker",
                source,
            }
        })?;
    let text = format!(
        "queue:\n  type: sqs\n  url: {url}\n  endpoint_url: {endpoint}\n  region: us-east-1\n  wait_time: 0\n  fetchers: {}\nrunner:\n  type: http_proxy\n  url: {}\n  concurrency: {}\n  backoff_base: 10ms\n  backoff_max: 100ms\n  default_retry_after: 0\nshutdown_timeout: 5s\n",
        opts.fetchers,
        worker.url(),
        opts.concurrency
    );
    let config = Config::from_yaml(&text).map_err(|e| BenchError::Run(e.to_string()))?;
    let report = drain(config, opts, &worker)?;
    let plain = if plain {
        let url = rt.block_on(filled_queue(&c, "plain", opts.jobs))?;
        let w = SimWorker::start(opts.jobs, opts.latency, opts.failure_rate).map_err(|source| {
            BenchError::Io {
                what: "worker",
                source,
            }
        })?;
        Some(plain_consumer(&rt, &c, &url, &w, opts)?)
    } else {
        None
    };
    Ok((report, plain))
}

/// The consumer people write first: one loop, one message at a time.
fn plain_consumer(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    url: &str,
    w: &SimWorker,
    opts: &BenchOptions,
) -> Result<PlainReport, BenchError> {
    let addr = w
        .url()
        .trim_start_matches("http://")
        .trim_end_matches("/work")
        .to_string();
    let started = Instant::now();
    let deadline = started + opts.timeout;
    while w.done() < opts.jobs && Instant::now() < deadline {
        let out = rt
            .block_on(
                c.receive_message()
                    .queue_url(url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(0)
                    .message_system_attribute_names(
                        aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send(),
            )
            .map_err(err("ReceiveMessage"))?;
        for m in out.messages.unwrap_or_default() {
            let attempt = m
                .attributes
                .as_ref()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                })
                .cloned()
                .unwrap_or_else(|| "1".into());
            let body = m.body.unwrap_or_default();
            let ok = post_once(&addr, &body, &attempt).unwrap_or(false);
            if ok {
                if let Some(r) = m.receipt_handle {
                    rt.block_on(c.delete_message().queue_url(url).receipt_handle(r).send())
                        .map_err(err("DeleteMessage"))?;
                }
            }
        }
    }
    let last = w.last_done().unwrap_or_else(Instant::now);
    let r = w.report(opts.jobs, last.saturating_duration_since(started), &[]);
    Ok(PlainReport {
        how: "receive, POST, delete",
        done: r.done,
        elapsed: r.elapsed,
        lost: r.lost,
        duplicates: r.duplicates,
    })
}
