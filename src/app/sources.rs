//! The one place that turns `queue:` into a [`Source`]: the durable store, a FIFO, SQS or Q4M.
//! The features that compile a source in or out are looked at here and on `mod` lines only.

use std::{sync::Arc, thread::JoinHandle};

use super::RunError;
use crate::{
    bridge::JobSender,
    config::{Config, LmdbConfig, QueueConfig},
    source::{durable_queue::LmdbSource, fifo::FifoSource, Source},
    stats::Stats,
    store::Store,
};

/// An opened source, and the store when the source is the durable queue (the API serves it).
pub struct Opened {
    /// The source, to run on its own thread.
    pub source: Box<dyn Source>,
    /// The store and its thread, for the durable queue.
    pub store: Option<(Store, JoinHandle<()>)>,
}

/// Opens the source `config.queue` names; the store sends its deliveries into `tx`.
///
/// # Errors
/// [`RunError`] when the source cannot open.
pub fn open(config: &Config, tx: &JobSender, stats: &Arc<Stats>) -> Result<Opened, RunError> {
    let runner = config.runner();
    let source: Box<dyn Source> = match &config.queue {
        QueueConfig::Lmdb(l) => {
            let (store, thread) = open_store(config, l, tx)?;
            return Ok(Opened {
                source: Box::new(LmdbSource::new(store.clone())),
                store: Some((store, thread)),
            });
        }
        QueueConfig::Fifo(f) => Box::new(FifoSource::open(f, stats.clone())?),
        QueueConfig::Q4m(q) => {
            let concurrency = runner.map_or(1, |r| r.concurrency());
            q4m_source(q, concurrency, config, stats.clone())?
        }
        QueueConfig::Sqs(q) => {
            let r = runner.ok_or(RunError::NoRunner { queue: "sqs" })?;
            sqs_source(q, r, config, stats.clone())?
        }
        QueueConfig::Redis(q) => {
            let concurrency = runner.map_or(1, |r| r.concurrency());
            redis_source(q, concurrency, stats.clone())?
        }
    };
    Ok(Opened {
        source,
        store: None,
    })
}

/// Starts the store thread; its dispatches go straight into the bridge.
fn open_store(
    config: &Config,
    lmdb: &LmdbConfig,
    tx: &JobSender,
) -> Result<(Store, JoinHandle<()>), RunError> {
    if lmdb.unsafe_no_sync_benchmark_only {
        tracing::warn!("queue.unsafe_no_sync_benchmark_only is set: commits are NOT fsynced; a crash loses acknowledged jobs. Benchmarks only.");
    }
    let runner = config.runner();
    let queues = config
        .queues
        .iter()
        .map(|(name, def)| {
            let mut d = def.clone();
            d.name = name.clone();
            // Kept by the dispatchers (`app::signing`), never handed to the store.
            d.signing_secrets = None;
            d
        })
        .collect();
    let opts = crate::store::Options {
        path: lmdb.path.clone(),
        map_size: lmdb.map_size,
        no_sync: lmdb.unsafe_no_sync_benchmark_only,
        queues,
        routings: config
            .routings
            .iter()
            .map(|(c, q)| (c.clone(), q.clone()))
            .collect(),
        default_queue: config.default_queue.clone(),
        defaults: runner.map_or_else(Default::default, |r| crate::store::engine::Defaults {
            url: Some(r.url.clone()),
            timeout: Some(r.timeout),
            max_retries: Some(r.max_retries),
            retry_delay: r.default_retry_after,
            retry: crate::store::engine::RetryBounds {
                backoff_base: r.backoff_base,
                backoff_max: r.backoff_max,
                max_retry_after: r.max_retry_after,
            },
            concurrency: r.concurrency,
        }),
        clock: crate::store::Clock::System,
        max_queues: lmdb.max_queues,
        fail_commit: None,
    };
    Ok(crate::store::engine::start(opts, tx.deliveries())?)
}

#[cfg(feature = "sqs")]
fn sqs_source(
    q: &crate::config::SqsConfig,
    runner: &crate::config::RunnerConfig,
    config: &Config,
    stats: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Ok(Box::new(crate::source::sqs::SqsSource::new(
        q,
        runner.concurrency(),
        runner.timeout,
        config.shutdown_timeout,
        stats,
    )))
}

#[cfg(not(feature = "sqs"))]
fn sqs_source(
    _: &crate::config::SqsConfig,
    _: &crate::config::RunnerConfig,
    _: &Config,
    _: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Err(RunError::NotBuilt { feature: "sqs" })
}

#[cfg(feature = "q4m")]
fn q4m_source(
    q: &crate::config::Q4mConfig,
    concurrency: usize,
    config: &Config,
    stats: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    let source =
        crate::source::q4m::Q4mSource::open(q, concurrency, config.shutdown_timeout, stats)?;
    Ok(Box::new(source))
}

#[cfg(not(feature = "q4m"))]
fn q4m_source(
    _: &crate::config::Q4mConfig,
    _: usize,
    _: &Config,
    _: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Err(RunError::NotBuilt { feature: "q4m" })
}

#[cfg(feature = "redis")]
fn redis_source(
    q: &crate::source::redis::config::RedisConfig,
    concurrency: usize,
    stats: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    let source = crate::source::redis::RedisSource::open(q, concurrency, stats)?;
    Ok(Box::new(source))
}

#[cfg(not(feature = "redis"))]
fn redis_source(
    _: &crate::source::redis::config::RedisConfig,
    _: usize,
    _: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Err(RunError::NotBuilt { feature: "redis" })
}
